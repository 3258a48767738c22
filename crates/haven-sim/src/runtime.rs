//! The runtime the simulated nodes run on: tokio's current-thread scheduler with a paused
//! clock, openraft's seeded RNG, a watch channel with a fixed wake order, and one clock
//! per node that may run fast or slow.
//!
//! ```text
//!   openraft (every node) ── AsyncRuntime = SimRuntime
//!       spawn ────────▶ DeterministicRng<TokioRuntime>::spawn  (child RNG seed from the parent's)
//!                        + the spawning task's node clock, inherited
//!       thread_rng ───▶ seeded SmallRng (election timeouts)
//!       Instant::now ─▶ the calling node's clock: offset + rate × tokio's paused clock
//!       sleep(d) ─────▶ tokio sleep of d / rate       (a slow clock sleeps longer)
//!       Watch ────────▶ SimWatch (wake order fixed)
//!       Mpsc, Oneshot, Mutex ─▶ tokio's (FIFO, no randomness)
//! ```
//!
//! Why this is deterministic: on a current-thread runtime with no IO and no blocking
//! threads, tokio runs ready tasks in FIFO order and, with the clock paused, advances time
//! only when every task is idle, to the earliest timer. What remains random in tokio is
//! its per-runtime RNG (seeded from the OS without `--cfg tokio_unstable`), which it uses
//! for `tokio::select!` without `biased;`, for `sync::watch` and for `spawn_blocking`
//! shards. openraft 0.10 uses none of these through this runtime (its selects are the
//! runtime's biased `select2..4`, its watch is [`SimWatch`]) and the simulator avoids
//! them too, so one seed gives one run.
//!
//! Node clocks: every task a node spawns carries that node's [`NodeClock`] in a task
//! local, and every call into a node (RPC delivery, client requests) runs inside it, so
//! `Instant::now()` and every sleep or timeout openraft sets is measured on the node's
//! own, possibly drifting, clock. Instants never cross nodes (none travel in openraft's
//! messages), so per-node clocks are sound.

use std::future::Future;
use std::io;
use std::ops::Add;
use std::ops::AddAssign;
use std::ops::Sub;
use std::ops::SubAssign;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use openraft_rt::deterministic_rng::DeterministicRng;
use openraft_rt::AsyncRuntime;
use openraft_rt::OptionalSend;
use openraft_rt_tokio::TokioMpsc;
use openraft_rt_tokio::TokioMutex;
use openraft_rt_tokio::TokioOneshot;
use openraft_rt_tokio::TokioRuntime;

use crate::watch::SimWatch;

/// The clock rate of a node that does not drift, in parts per million of the real rate.
pub const RATE_PPM_EXACT: u64 = 1_000_000;

tokio::task_local! {
    /// The clock of the node whose code the current task runs.
    static NODE_CLOCK: Arc<NodeClock>;
}

/// One node's clock: `local = anchor_local + (global - anchor_global) × rate`. A rate change
/// re-anchors at the current instant, so the local clock stays continuous and monotonic.
#[derive(Debug)]
pub struct NodeClock {
    anchor: Mutex<Anchor>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    global: tokio::time::Instant,
    local: tokio::time::Instant,
    rate_ppm: u64,
}

/// `duration × numerator / denominator`, in whole nanoseconds, saturating.
fn scale(duration: Duration, numerator: u64, denominator: u64) -> Duration {
    let nanos = duration.as_nanos().saturating_mul(u128::from(numerator)) / u128::from(denominator.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

impl NodeClock {
    /// A clock that starts in step with the simulation's clock, at the real rate.
    pub fn new() -> Arc<NodeClock> {
        let now = tokio::time::Instant::now();
        Arc::new(NodeClock { anchor: Mutex::new(Anchor { global: now, local: now, rate_ppm: RATE_PPM_EXACT }) })
    }

    fn anchor(&self) -> Anchor {
        *self.anchor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on the clock runs at `rate_ppm` (1,000,000 = exact). Timers already set
    /// keep the deadline they were given in the simulation's time.
    pub fn set_rate_ppm(&self, rate_ppm: u64) {
        let now = tokio::time::Instant::now();
        let local = self.local_at(now);
        *self.anchor.lock().unwrap_or_else(|e| e.into_inner()) =
            Anchor { global: now, local, rate_ppm: rate_ppm.max(1) };
    }

    fn local_at(&self, global: tokio::time::Instant) -> tokio::time::Instant {
        let anchor = self.anchor();
        anchor.local + scale(global.saturating_duration_since(anchor.global), anchor.rate_ppm, RATE_PPM_EXACT)
    }

    fn global_at(&self, local: tokio::time::Instant) -> tokio::time::Instant {
        let anchor = self.anchor();
        anchor.global + scale(local.saturating_duration_since(anchor.local), RATE_PPM_EXACT, anchor.rate_ppm)
    }

    fn global_duration(&self, local: Duration) -> Duration {
        scale(local, RATE_PPM_EXACT, self.anchor().rate_ppm)
    }

    /// Runs `future` as code of the node that owns this clock.
    pub fn scope<F: Future>(self: &Arc<Self>, future: F) -> impl Future<Output = F::Output> {
        NODE_CLOCK.scope(self.clone(), future)
    }
}

fn current_clock() -> Option<Arc<NodeClock>> {
    NODE_CLOCK.try_with(|clock| clock.clone()).ok()
}

/// An instant on the current node's clock (the simulation's clock outside any node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SimInstant(tokio::time::Instant);

impl Add<Duration> for SimInstant {
    type Output = SimInstant;
    fn add(self, rhs: Duration) -> SimInstant {
        SimInstant(self.0 + rhs)
    }
}

impl AddAssign<Duration> for SimInstant {
    fn add_assign(&mut self, rhs: Duration) {
        self.0 += rhs;
    }
}

impl Sub<Duration> for SimInstant {
    type Output = SimInstant;
    fn sub(self, rhs: Duration) -> SimInstant {
        // Saturate like tokio does at its clock's start instead of panicking.
        SimInstant(self.0.checked_sub(rhs).unwrap_or(self.0))
    }
}

impl Sub<SimInstant> for SimInstant {
    type Output = Duration;
    fn sub(self, rhs: SimInstant) -> Duration {
        self.0.saturating_duration_since(rhs.0)
    }
}

impl SubAssign<Duration> for SimInstant {
    fn sub_assign(&mut self, rhs: Duration) {
        *self = *self - rhs;
    }
}

impl openraft_rt::Instant for SimInstant {
    fn now() -> SimInstant {
        let global = tokio::time::Instant::now();
        SimInstant(match current_clock() {
            Some(clock) => clock.local_at(global),
            None => global,
        })
    }
}

fn to_global(deadline: SimInstant) -> tokio::time::Instant {
    match current_clock() {
        Some(clock) => clock.global_at(deadline.0),
        None => deadline.0,
    }
}

fn to_global_duration(duration: Duration) -> Duration {
    match current_clock() {
        Some(clock) => clock.global_duration(duration),
        None => duration,
    }
}

/// openraft's seeded-RNG wrapper around its tokio runtime: spawns and `thread_rng` draw
/// their seeds from a task-local tree rooted at the seed the simulation sets.
type Seeded = DeterministicRng<TokioRuntime>;

/// The [`AsyncRuntime`] of every simulated node. See the module docs.
#[derive(Debug)]
pub struct SimRuntime {
    inner: Seeded,
}

impl SimRuntime {
    /// Runs `future` with openraft's RNG tree rooted at `seed`. Everything a simulation
    /// spawns must descend from such a scope (openraft's RNG panics outside one).
    pub fn seeded<F: Future>(seed: u64, future: F) -> impl Future<Output = F::Output> {
        Seeded::scope(seed, future)
    }
}

impl AsyncRuntime for SimRuntime {
    type JoinError = <Seeded as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Seeded as AsyncRuntime>::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = SimInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = <Seeded as AsyncRuntime>::ThreadLocalRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        match current_clock() {
            // A node's tasks keep running on the node's clock.
            Some(clock) => Seeded::spawn(NODE_CLOCK.scope(clock, future)),
            None => Seeded::spawn(future),
        }
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(to_global_duration(duration))
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(to_global(deadline))
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        tokio::time::timeout(to_global_duration(duration), future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(to_global(deadline), future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Seeded::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Seeded::thread_rng()
    }

    type Mpsc = TokioMpsc;
    type Watch = SimWatch;
    type Oneshot = TokioOneshot;
    type Mutex<T: OptionalSend + 'static> = TokioMutex<T>;

    fn new(threads: usize) -> Self {
        SimRuntime { inner: Seeded::new(threads) }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.inner.block_on(future)
    }

    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // Not used by openraft's core nor by the simulator; a blocking thread would make
        // the paused clock's "all idle" depend on the OS scheduler.
        Seeded::spawn_blocking(f)
    }
}

/// Spawns a simulator task: through the runtime, so it inherits the RNG tree and the
/// current node clock like openraft's own tasks.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    SimRuntime::spawn(future)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft_rt::Instant as _;

    /// openraft's conformance suite for runtimes (spawn, sleep, instants, selects, channels,
    /// watch semantics, mutexes, task locals). Not `test_all`: its seeded-RNG part wraps the
    /// runtime in `DeterministicRng` a second time, and two wrappers share one task local.
    #[test]
    fn the_runtime_passes_openraft_s_runtime_suite() {
        let mut runtime = SimRuntime::new(1);
        openraft_rt::testing::Suite::<SimRuntime>::test_all_on(&mut runtime);
    }

    #[test]
    fn a_fast_clock_runs_ahead_and_sleeps_shorter() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let clock = NodeClock::new();
            clock.set_rate_ppm(1_100_000);
            let (local_elapsed, global_elapsed) = clock
                .scope(async {
                    let start_local = SimInstant::now();
                    let start_global = tokio::time::Instant::now();
                    SimRuntime::sleep(Duration::from_millis(110)).await;
                    (SimInstant::now() - start_local, start_global.elapsed())
                })
                .await;
            assert_eq!(global_elapsed, Duration::from_millis(100), "110 local ms at 1.1x take 100 real ms");
            assert_eq!(local_elapsed, Duration::from_millis(110));
        });
    }
}
