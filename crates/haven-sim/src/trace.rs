//! The event trace: every message sent, delivered or dropped, every fault, every client
//! operation and every leader change, with its simulated time, folded into one hash.
//!
//! Two runs of one seed must give the same hash; that is what "deterministic" means here,
//! and a test checks it. The last [`TRACE_TAIL_LINES`] lines are kept in memory so a
//! failing seed can print what happened just before the failure; `--trace` prints all.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::MutexGuard;

/// Lines kept for a failure report: about the last second of a busy run.
pub const TRACE_TAIL_LINES: usize = 400;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a: stable across builds and platforms, unlike std's hasher.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_continue(FNV_OFFSET, bytes)
}

fn fnv1a_continue(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

struct TraceState {
    hash: u64,
    events: u64,
    tail: VecDeque<String>,
    print_all: bool,
}

/// The run's trace. Shared by the driver, the network and the clients.
pub struct Trace {
    state: Mutex<TraceState>,
    start: tokio::time::Instant,
}

impl Trace {
    pub fn new(print_all: bool) -> Trace {
        Trace {
            state: Mutex::new(TraceState { hash: FNV_OFFSET, events: 0, tail: VecDeque::new(), print_all }),
            start: tokio::time::Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TraceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulated time since the run started, in microseconds.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records one event, stamped with the simulated time.
    pub fn record(&self, event: std::fmt::Arguments<'_>) {
        let line = format!("{:>12} {event}", self.now_us());
        let mut state = self.lock();
        state.hash = fnv1a_continue(state.hash, line.as_bytes());
        state.hash = fnv1a_continue(state.hash, b"\n");
        state.events += 1;
        if state.print_all {
            // A closed stdout (`| head`) ends the printing, not the run.
            use std::io::Write;
            if writeln!(std::io::stdout().lock(), "{line}").is_err() {
                state.print_all = false;
            }
        }
        if state.tail.len() == TRACE_TAIL_LINES {
            state.tail.pop_front();
        }
        state.tail.push_back(line);
    }

    pub fn hash(&self) -> u64 {
        self.lock().hash
    }

    pub fn events(&self) -> u64 {
        self.lock().events
    }

    pub fn tail(&self) -> Vec<String> {
        self.lock().tail.iter().cloned().collect()
    }
}

/// `trace!(trace, "format", args...)`: records a line in the trace.
#[macro_export]
macro_rules! trace {
    ($trace:expr, $($arg:tt)*) => {
        $trace.record(format_args!($($arg)*))
    };
}
