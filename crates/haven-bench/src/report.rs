//! The results table and `docs/benchmarks.md`.
//!
//! One Markdown table holds everything: per workload ops/s, p50 and p99 for etcd and
//! Haven with the Haven/etcd ratio and the issue's target; failover gaps against etcd at
//! its defaults and at Haven's timings; leader changes in the stability run. The document
//! adds date, machine, versions, the exact command and the method. Text after
//! [`NOTES_MARKER`] in an existing document is kept, so hand-written notes survive a rerun.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::failover::Fault;
use crate::failover::Gaps;
use crate::failover::FAILOVER_REQUEST_TIMEOUT;
use crate::failover::RETRY_PAUSE;
use crate::failover::WRITERS;
use crate::load::LoadResult;
use crate::load::Op;
use crate::load::WARMUP;
use crate::stability::Stability;

/// Everything below this line of `docs/benchmarks.md` is kept when the file is rewritten.
pub const NOTES_MARKER: &str = "<!-- haven-bench: text below this line is written by hand and kept across runs -->";

/// The issue's failover ceiling for Haven.
pub const GAP_CEILING: Duration = Duration::from_secs(1);

/// Results of one system's load phases, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct LoadResults(pub Vec<LoadResult>);

impl LoadResults {
    fn find(&self, op: Op, concurrency: usize) -> Option<&LoadResult> {
        self.0.iter().find(|r| r.op == op && r.concurrency == concurrency)
    }
}

/// Everything one run measured plus the facts the document states about it.
#[derive(Debug, Default)]
pub struct Report {
    pub date: String,
    pub machine: Vec<(String, String)>,
    /// `/proc/loadavg` when the run started and when it ended: other work on the machine
    /// competes for the same CPUs.
    pub load_before: String,
    pub load_after: String,
    pub etcd_version: Option<String>,
    pub haven_version: String,
    /// How the Haven nodes were started (flags, token), from the cluster.
    pub haven_setup: Option<String>,
    /// Flags given to every Haven node beyond the benchmark's own (`--haven-arg`).
    pub haven_extra_args: Vec<String>,
    pub command: String,
    pub seconds: u64,
    pub kills: usize,
    pub etcd_api: Option<String>,
    pub haven_api: Option<String>,
    pub etcd_load: LoadResults,
    pub haven_load: LoadResults,
    pub etcd_failover: Vec<Gaps>,
    pub etcd_fast_failover: Vec<Gaps>,
    pub haven_failover: Vec<Gaps>,
    pub stability: Option<Stability>,
    /// Load phases, as `(op, concurrency)`.
    pub phases: Vec<(Op, usize)>,
}

/// A target from the issue, for one row.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Haven/etcd ratio at least this.
    RatioAtLeast(f64),
    /// Haven/etcd ratio at most this.
    RatioAtMost(f64),
    /// Haven's own value at most this many milliseconds.
    HavenAtMostMs(f64),
    /// Haven's own count exactly zero.
    HavenZero,
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::RatioAtLeast(r) => format!("≥ {r}x"),
            Target::RatioAtMost(r) => format!("≤ {r}x"),
            Target::HavenAtMostMs(ms) => format!("Haven ≤ {ms:.0} ms"),
            Target::HavenZero => "0".into(),
        }
    }

    fn met(self, etcd: Option<f64>, haven: Option<f64>) -> Option<bool> {
        let haven = haven?;
        match self {
            Target::RatioAtLeast(r) => Some(haven / etcd? >= r),
            Target::RatioAtMost(r) => Some(haven / etcd? <= r),
            Target::HavenAtMostMs(ms) => Some(haven <= ms),
            Target::HavenZero => Some(haven == 0.0),
        }
    }
}

struct Row {
    workload: String,
    metric: &'static str,
    etcd: Option<f64>,
    haven: Option<f64>,
    format: fn(f64) -> String,
    target: Option<Target>,
}

/// Whole numbers with thousands separators.
fn count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Milliseconds with two decimals below 10, one above.
fn millis(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.1}")
    }
}

fn ms_of(duration: Option<Duration>) -> Option<f64> {
    duration.map(|d| d.as_secs_f64() * 1000.0)
}

fn gaps_of(results: &[Gaps], fault: Fault) -> Option<&Gaps> {
    results.iter().find(|g| g.fault == fault)
}

impl Report {
    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (op, concurrency) in &self.phases {
            let etcd = self.etcd_load.find(*op, *concurrency);
            let haven = self.haven_load.find(*op, *concurrency);
            let workload = format!("{}, concurrency {concurrency}", op.label());
            let writes_at = |c: usize| *op == Op::Put && *concurrency == c;
            rows.push(Row {
                workload: workload.clone(),
                metric: "ops/s",
                etcd: etcd.map(LoadResult::ops_per_second),
                haven: haven.map(LoadResult::ops_per_second),
                format: count,
                target: writes_at(64).then_some(Target::RatioAtLeast(2.0)),
            });
            rows.push(Row {
                workload: workload.clone(),
                metric: "p50 ms",
                etcd: etcd.and_then(LoadResult::p50_ms),
                haven: haven.and_then(LoadResult::p50_ms),
                format: millis,
                target: writes_at(1).then_some(Target::RatioAtMost(0.6)),
            });
            rows.push(Row {
                workload,
                metric: "p99 ms",
                etcd: etcd.and_then(LoadResult::p99_ms),
                haven: haven.and_then(LoadResult::p99_ms),
                format: millis,
                target: writes_at(64).then_some(Target::RatioAtMost(1.0)),
            });
        }
        for fault in [Fault::Kill, Fault::Stop] {
            let haven = gaps_of(&self.haven_failover, fault);
            for (etcd_label, etcd_results, targets) in [
                ("etcd defaults", &self.etcd_failover, true),
                ("etcd at Haven's timings", &self.etcd_fast_failover, false),
            ] {
                let etcd = gaps_of(etcd_results, fault);
                // Without etcd results the Haven gaps are shown once, against the defaults' targets.
                let haven_only = self.etcd_failover.is_empty() && self.etcd_fast_failover.is_empty();
                if (etcd.is_none() && haven.is_none()) || (haven_only && !targets) {
                    continue;
                }
                let workload = if haven_only {
                    format!("failover gap, {} x{}", fault.label(), self.kills)
                } else {
                    format!("failover gap, {} x{} ({etcd_label})", fault.label(), self.kills)
                };
                rows.push(Row {
                    workload: workload.clone(),
                    metric: "median ms",
                    etcd: ms_of(etcd.and_then(Gaps::median)),
                    haven: ms_of(haven.and_then(Gaps::median)),
                    format: count,
                    target: targets.then_some(Target::RatioAtMost(0.5)),
                });
                rows.push(Row {
                    workload,
                    metric: "max ms",
                    etcd: ms_of(etcd.and_then(Gaps::max)),
                    haven: ms_of(haven.and_then(Gaps::max)),
                    format: count,
                    target: targets.then_some(Target::HavenAtMostMs(GAP_CEILING.as_secs_f64() * 1000.0)),
                });
            }
        }
        if let Some(stability) = &self.stability {
            rows.push(Row {
                workload: format!(
                    "stability: put, concurrency {}, {} min, Haven defaults ({} ops/s)",
                    stability.load.concurrency,
                    stability.minutes,
                    count(stability.load.ops_per_second())
                ),
                metric: "leader changes",
                etcd: None,
                haven: Some(stability.term_changes.max(stability.leader_changes) as f64),
                format: count,
                target: Some(Target::HavenZero),
            });
        }
        rows
    }

    /// The results table in Markdown.
    pub fn table(&self) -> String {
        let etcd = self.etcd_version.as_deref().map(|v| format!("etcd {v}")).unwrap_or_else(|| "etcd".into());
        let mut out = format!("| workload | metric | {etcd} | Haven | Haven/etcd | target | met |\n");
        out.push_str("|---|---|---:|---:|---:|---|---|\n");
        for row in self.rows() {
            let cell = |value: Option<f64>| value.map(row.format).unwrap_or_else(|| "—".into());
            let ratio = match (row.etcd, row.haven) {
                (Some(e), Some(h)) if e > 0.0 => format!("{:.2}x", h / e),
                _ => "—".into(),
            };
            let (target, met) = match row.target {
                Some(target) => (
                    target.describe(),
                    match target.met(row.etcd, row.haven) {
                        Some(true) => "yes".to_string(),
                        Some(false) => "**no**".to_string(),
                        None => "—".to_string(),
                    },
                ),
                None => ("—".into(), "—".into()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {ratio} | {target} | {met} |",
                row.workload,
                row.metric,
                cell(row.etcd),
                cell(row.haven)
            );
        }
        out
    }

    /// Targets the run missed, one line each.
    pub fn misses(&self) -> Vec<String> {
        self.rows()
            .into_iter()
            .filter(|row| row.target.and_then(|t| t.met(row.etcd, row.haven)) == Some(false))
            .map(|row| {
                let target = row.target.map(Target::describe).unwrap_or_default();
                let values = match (row.etcd, row.haven) {
                    (Some(e), Some(h)) => format!("etcd {}, Haven {}", (row.format)(e), (row.format)(h)),
                    (_, Some(h)) => format!("Haven {}", (row.format)(h)),
                    _ => String::new(),
                };
                format!("{} {}: {values} (target {target})", row.workload, row.metric)
            })
            .collect()
    }

    /// Errors and per-fault gaps, for the details section.
    fn details(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Failed requests per load phase (counted, not in the latencies):\n");
        for (name, results) in [("etcd", &self.etcd_load), ("Haven", &self.haven_load)] {
            if results.0.is_empty() {
                continue;
            }
            let errors: Vec<String> = results
                .0
                .iter()
                .map(|r| format!("{} c={}: {} of {}", r.op.label(), r.concurrency, r.errors, r.ops + r.errors))
                .collect();
            let _ = writeln!(out, "- {name}: {}", errors.join("; "));
        }
        let _ = writeln!(out, "\nEvery failover gap in ms, in order:\n");
        for (name, results) in [
            ("etcd defaults", &self.etcd_failover),
            ("etcd at Haven's timings", &self.etcd_fast_failover),
            ("Haven", &self.haven_failover),
        ] {
            for gaps in results {
                let list: Vec<String> = gaps
                    .gaps
                    .iter()
                    .map(|g| g.map(|g| g.as_millis().to_string()).unwrap_or_else(|| "none".into()))
                    .collect();
                let unrecovered = match gaps.unrecovered() {
                    0 => String::new(),
                    n => format!(" ({n} without a write acknowledged within 30 s, counted as 30 s)"),
                };
                let _ = writeln!(out, "- {name}, {}: {}{unrecovered}", gaps.fault.label(), list.join(", "));
            }
        }
        if let Some(s) = &self.stability {
            let _ = writeln!(
                out,
                "\nStability run: term {} → {}, {} term changes, {} leader changes, {} unanswered status polls, \
                 {} failed writes of {}; p50 {} ms, p99 {} ms.",
                s.first_term.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
                s.last_term.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
                s.term_changes,
                s.leader_changes,
                s.unanswered_polls,
                s.load.errors,
                s.load.ops + s.load.errors,
                s.load.p50_ms().map(millis).unwrap_or_else(|| "—".into()),
                s.load.p99_ms().map(millis).unwrap_or_else(|| "—".into()),
            );
        }
        out
    }

    /// The whole document; `kept` is the hand-written tail of the previous one.
    pub fn document(&self, kept: Option<&str>) -> String {
        let mut out = String::new();
        out.push_str("# Benchmarks: Haven and etcd on one machine\n\n");
        out.push_str(
            "Written by `haven-bench` (crate `crates/haven-bench`). Reproduce with:\n\n\
             ```sh\n\
             cargo build --release -p haven-bench -p haven\n\
             # load and failover, about 7 minutes (installs etcd-server with apt-get if etcd is missing):\n\
             cargo run --release -p haven-bench --\n\
             # the same plus the 10-minute stability run:\n\
             cargo run --release -p haven-bench -- --stability-minutes 10\n\
             ```\n\n\
             Options: `--seconds N` per load phase, `--kills N` faults of each kind, `--only haven|etcd`,\n\
             `--haven-bin PATH`, `--out PATH`; for experiments `--haven-arg FLAG` (repeatable, passed to every\n\
             `haven serve`) and `--keep-files` (keeps the members' data dirs and logs).\n\n",
        );
        out.push_str("## Latest run\n\n");
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(out, "- Command: `{}`", self.command);
        for (name, value) in &self.machine {
            let _ = writeln!(out, "- {name}: {value}");
        }
        let _ =
            writeln!(out, "- Load average (1, 5, 15 min) at start: {}; at end: {}", self.load_before, self.load_after);
        if let Some(version) = &self.etcd_version {
            let _ = writeln!(out, "- etcd: {version} (Debian package `etcd-server`)");
        }
        let _ = writeln!(out, "- Haven: {}", self.haven_version);
        if !self.haven_extra_args.is_empty() {
            let _ = writeln!(
                out,
                "- **Haven ran with non-default flags**: `{}` (the targets are about the defaults)",
                self.haven_extra_args.join(" ")
            );
        }
        if let Some(api) = &self.etcd_api {
            let _ = writeln!(out, "- etcd driven through its {api}");
        }
        if let Some(api) = &self.haven_api {
            let _ = writeln!(out, "- Haven driven through its {api}");
        }
        if let Some(setup) = &self.haven_setup {
            let _ = writeln!(out, "- Haven nodes: {setup}");
        }
        out.push('\n');
        out.push_str(&self.table());
        out.push('\n');
        let misses = self.misses();
        if misses.is_empty() {
            out.push_str("Every target with both sides measured was met in this run.\n\n");
        } else {
            out.push_str("Targets missed in this run:\n\n");
            for miss in misses {
                let _ = writeln!(out, "- {miss}");
            }
            out.push('\n');
        }
        out.push_str("### Details\n\n");
        out.push_str(&self.details());
        out.push('\n');
        out.push_str(&self.method());
        out.push('\n');
        out.push_str(NOTES_MARKER);
        out.push('\n');
        match kept {
            Some(text) => out.push_str(text),
            None => out.push_str("\n## Notes\n\n(none yet)\n"),
        }
        out
    }

    fn method(&self) -> String {
        format!(
            "## Method\n\n\
             - Both systems run as three members on 127.0.0.1, one system after the other, with their data\n  \
             directories in one temporary directory (same disk). Both fsync before acknowledging a write:\n  \
             etcd fsyncs its WAL by default, Haven's `serve` always fsyncs its log.\n\
             - etcd runs twice: at its defaults (heartbeat 100 ms, election timeout 1000 ms, pre-vote off)\n  \
             and at Haven's timings (`--heartbeat-interval {hb} --election-timeout {el}`: Haven's ping\n  \
             interval and its shortest election timeout). The load phases run against etcd at its\n  \
             defaults; both etcd clusters get the failover measurement. Haven runs at its defaults.\n\
             - One load generator for both (tokio, reqwest, HTTP/1.1 keep-alive, a connection pool as large\n  \
             as the concurrency, no Nagle). Workers run closed loops; worker i talks to member\n  \
             (leader + i) mod 3 for the whole phase: at concurrency 1 both systems are driven through\n  \
             their leader; at 16 and 64 load is spread over all members and writes reaching followers\n  \
             are forwarded to the leader by either system. Keys are 24 bytes, picked uniformly from 10,000;\n  \
             values are 256 bytes. Each phase runs {warmup} s of warm-up (not measured) and then {seconds} s\n  \
             measured. ops/s counts successful requests sent in the window; p50 and p99 are nearest-rank\n  \
             percentiles of their latencies. Before the load phases all 10,000 keys are written once. Reads are\n  \
             linearizable on both (Haven: ReadIndex by default; etcd: `range` without `serializable`).\n\
             - The load generator shares the machine's CPUs with the cluster under test, the same for both.\n\
             - Failover: {writers} writers write continuously; each stays on its member while writes succeed\n  \
             and on any error or timeout ({timeout} ms per request) waits {pause} ms and moves to the next\n  \
             member round-robin. For each fault the leader (found through each system's status API) is\n  \
             signalled; the gap is the first acknowledgement of a write sent after the signal minus the\n  \
             last acknowledgement before it. A killed leader is restarted on its data dir and ports; a\n  \
             stopped one gets SIGCONT once the others name a new leader. Before each fault the cluster must\n  \
             be healthy (all members up, agreeing on a leader) and settled for 1 s. The client's request\n  \
             timeout bounds how late it notices the new leader: by up to {timeout} ms for one writer,\n  \
             less with {writers} writers.\n\
             - Stability: the put load at concurrency 64 against a fresh Haven cluster at its default\n  \
             timings, with `/v1/status` polled every 100 ms; any change of term or leader counts.\n",
            warmup = WARMUP.as_secs(),
            seconds = self.seconds,
            hb = crate::cluster::HAVEN_TIMINGS.heartbeat_ms,
            el = crate::cluster::HAVEN_TIMINGS.election_ms,
            writers = WRITERS,
            timeout = FAILOVER_REQUEST_TIMEOUT.as_millis(),
            pause = RETRY_PAUSE.as_millis(),
        )
    }

    /// Writes the document to `path`, keeping the hand-written tail of an existing one.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let previous = std::fs::read_to_string(path).ok();
        let kept = previous.as_deref().and_then(|text| text.split_once(NOTES_MARKER)).map(|(_, tail)| tail);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, self.document(kept))?;
        Ok(())
    }
}

/// Facts about this machine for the report: CPUs, memory, kernel, and the disk under `dir`.
pub fn machine(dir: &Path) -> Vec<(String, String)> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown")
        .to_string();
    let cpus = std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_else(|_| "?".into());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let os = read("/etc/os-release")
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|name| name.trim_matches('"').to_string())
        .unwrap_or_default();
    vec![
        ("Machine".into(), format!("{cpus} CPUs ({model}), {memory} memory")),
        ("OS".into(), format!("{os}, Linux kernel {kernel}")),
        ("Disk".into(), disk(dir)),
        ("Disk sync latency at start".into(), fsync_probe(dir)),
    ]
}

/// The device, file system and kind (rotational or not) of the mount holding `dir`.
fn disk(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let best = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .filter(|(_, mount, _)| dir.starts_with(mount))
        .max_by_key(|(_, mount, _)| mount.len());
    let Some((device, mount, fs)) = best else { return "unknown".into() };
    let name = device.rsplit('/').next().unwrap_or(device);
    let base: String = name.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
    let rotational = [name, base.as_str()]
        .iter()
        .find_map(|n| std::fs::read_to_string(format!("/sys/block/{n}/queue/rotational")).ok())
        .map(|r| if r.trim() == "1" { "reported rotational" } else { "reported non-rotational" })
        .unwrap_or("kind unknown");
    format!("{device} ({fs}, {rotational}) mounted at {mount}, holding {}", dir.display())
}

/// Appends and `fdatasync`s this many small records in the probe.
const FSYNC_PROBE_WRITES: usize = 200;

/// Median and p99 of append + `fdatasync` of 256 bytes in a fresh file under `dir`: the
/// floor under every acknowledged write of both systems, measured when the run starts.
pub fn fsync_probe(dir: &Path) -> String {
    use std::io::Write as _;
    let probe = || -> std::io::Result<String> {
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        let record = [b'x'; 256];
        let mut micros: Vec<u128> = Vec::with_capacity(FSYNC_PROBE_WRITES);
        for _ in 0..FSYNC_PROBE_WRITES {
            let start = std::time::Instant::now();
            file.write_all(&record)?;
            file.as_file().sync_data()?;
            micros.push(start.elapsed().as_micros());
        }
        micros.sort_unstable();
        let at = |q: f64| micros[((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len()) - 1];
        Ok(format!(
            "append + fdatasync of 256 bytes: p50 {:.2} ms, p99 {:.2} ms ({FSYNC_PROBE_WRITES} writes)",
            at(0.5) as f64 / 1000.0,
            at(0.99) as f64 / 1000.0
        ))
    };
    probe().unwrap_or_else(|error| format!("fsync probe failed: {error}"))
}

/// `haven --version`, when the binary was built, and the repository's revision when the run
/// started. The binary is what was measured: when it is older than HEAD's commit it may not
/// contain it, and the report says so.
pub fn haven_version(binary: &Path) -> String {
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|text| text.trim().to_string())
    };
    let binary_text = binary.to_string_lossy();
    let mut out = run(&binary_text, &["--version"]).unwrap_or_else(|| "haven (version unknown)".into());
    let built = std::fs::metadata(binary)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_secs());
    if let Some(when) = built.and_then(|secs| run("date", &["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d %H:%M:%S UTC"]))
    {
        let _ = write!(out, ", binary built {when}");
    }
    if let Some(rev) = run("git", &["rev-parse", "--short", "HEAD"]) {
        let dirty = run("git", &["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
        let _ = write!(
            out,
            "; repository at git {rev}{} when the run started",
            if dirty { " with uncommitted changes" } else { "" }
        );
        let head_time = run("git", &["log", "-1", "--format=%ct"]).and_then(|t| t.parse::<u64>().ok());
        if let (Some(built), Some(head_time)) = (built, head_time) {
            if built < head_time {
                out.push_str(" (the binary is older than that commit, so it may not contain it)");
            }
        }
    }
    out
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.len() == 3 {
        fields.join(" ")
    } else {
        "unknown".into()
    }
}

/// `date -u`'s answer.
pub fn date() -> String {
    Command::new("date")
        .arg("-u")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_separators() {
        assert_eq!(count(976.0), "976");
        assert_eq!(count(5883.4), "5,883");
        assert_eq!(count(1234567.0), "1,234,567");
    }

    #[test]
    fn targets_judge_ratios_and_absolutes() {
        assert_eq!(Target::RatioAtLeast(2.0).met(Some(100.0), Some(250.0)), Some(true));
        assert_eq!(Target::RatioAtMost(0.6).met(Some(1.0), Some(0.7)), Some(false));
        assert_eq!(Target::RatioAtMost(0.6).met(None, Some(0.7)), None);
        assert_eq!(Target::HavenAtMostMs(1000.0).met(None, Some(900.0)), Some(true));
        assert_eq!(Target::HavenZero.met(None, Some(1.0)), Some(false));
    }

    #[test]
    fn hand_written_notes_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.md");
        let report = Report::default();
        report.write(&path).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        let edited = format!("{first}\nThe disk is a virtual one.\n");
        std::fs::write(&path, edited).unwrap();
        report.write(&path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("The disk is a virtual one."));
    }
}
