//! `haven-bench auth-timing`: whether a refused token's answer time tells an unknown token
//! id from a known id with a wrong secret (issue 12 measured unknown ids answered about
//! 300 µs sooner; a node now hashes both). On a three-node Haven cluster it sends both kinds
//! to the leader, alternating, one at a time on one keep-alive connection, and prints each
//! kind's median answer time and their ratio. A measurement to read, not a pass/fail test.

use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use haven_core::auth::new_token;
use haven_core::auth::Credential;

use crate::cluster::Cluster;
use crate::cluster::FORM_TIMEOUT;

/// Requests of each kind sent first and not measured: the connection, the node's caches
/// and the CPU's frequency settle over the first ones.
const WARMUP_ROUNDS: u64 = 100;

#[derive(clap::Args, Debug)]
pub struct AuthTimingArgs {
    /// The haven binary to run (build it with `cargo build --release -p haven`).
    #[arg(long, default_value = "target/release/haven")]
    haven_bin: PathBuf,
    /// Requests of each kind measured (after WARMUP_ROUNDS of each).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    requests: u64,
}

pub async fn run(args: AuthTimingArgs) -> anyhow::Result<()> {
    let mut cluster = Cluster::start_haven(&std::path::absolute(&args.haven_bin)?, &[]).await?;
    let leader = cluster.wait_healthy(FORM_TIMEOUT).await?;
    let url = format!("{}/v1/status", cluster.client_urls[leader]);
    let admin = Credential::new(cluster.haven_token.clone().ok_or_else(|| anyhow::anyhow!("no admin token"))?);
    let known_id = admin.presented().map_err(|error| anyhow::anyhow!("the admin token: {error:?}"))?.id.to_string();
    let random_token = || new_token(rand::random(), rand::random());
    let wrong_secret = {
        let other = random_token();
        other.token.replacen(&other.id, &known_id, 1)
    };
    let cases = [("unknown id", random_token().token), ("known id, wrong secret", wrong_secret)];
    let client = reqwest::Client::builder().http1_only().no_proxy().pool_max_idle_per_host(1).build()?;
    let mut times: [Vec<Duration>; 2] = Default::default();
    for round in 0..args.requests + WARMUP_ROUNDS {
        // Alternate which kind goes first, so neither always follows the other.
        for index in [round as usize % 2, 1 - round as usize % 2] {
            let started = Instant::now();
            let status = client.get(&url).bearer_auth(&cases[index].1).send().await?.status();
            let elapsed = started.elapsed();
            anyhow::ensure!(status == 401, "{}: got {status}, not 401", cases[index].0);
            if round >= WARMUP_ROUNDS {
                times[index].push(elapsed);
            }
        }
    }
    let median = |times: &mut Vec<Duration>| {
        let middle = times.len() / 2;
        *times.select_nth_unstable(middle).1
    };
    let medians = [median(&mut times[0]), median(&mut times[1])];
    for ((name, _), median) in cases.iter().zip(medians) {
        println!("{name}: median {:.1} µs over {} requests", median.as_secs_f64() * 1e6, args.requests);
    }
    println!(
        "ratio unknown / known-wrong-secret: {:.3} ({})",
        medians[0].as_secs_f64() / medians[1].as_secs_f64(),
        crate::command_line()
    );
    Ok(())
}
