//! The simulator's random numbers: SplitMix64, written out here so that a seed means the
//! same run on every machine and with every version of the `rand` crate.
//!
//! Each part of the simulator that draws (the fault schedule, the network, each disk, each
//! client) owns its own stream, forked from the seed with [`SimRng::fork`]. A stream's
//! draws then depend only on the order of that part's own events, so adding a draw in
//! one part does not reshuffle every other part's choices.

/// SplitMix64's increment (the golden ratio's fractional bits).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A seeded pseudo-random stream. Not cryptographic; fast and well mixed.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// An independent stream named by `label`, derived from this one's next draw.
    pub fn fork(&mut self, label: u64) -> SimRng {
        let base = self.next_u64();
        SimRng::new(base ^ label.wrapping_mul(GOLDEN_GAMMA).rotate_left(17))
    }

    /// Uniform in `0..n`; 0 when `n` is 0. (The modulo bias is below 2^-40 for the small
    /// ranges drawn here, far below anything a simulation run could notice.)
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `low..=high` (`low` when the range is empty).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            low
        } else {
            low + self.below(high - low + 1)
        }
    }

    /// True with probability `parts_per_million / 1_000_000`.
    pub fn chance_ppm(&mut self, parts_per_million: u64) -> bool {
        self.below(1_000_000) < parts_per_million
    }

    /// True with probability `percent / 100`.
    pub fn chance_percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of `items`, or `None` when there is none.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len() as u64) as usize)
        }
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_stream_everywhere() {
        // SplitMix64's published first outputs for seed 0 pin the algorithm: if these
        // change, every recorded seed would reproduce a different run.
        let mut rng = SimRng::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn ranges_stay_in_bounds_and_forks_differ() {
        let mut rng = SimRng::new(7);
        for _ in 0..1000 {
            let value = rng.range(3, 9);
            assert!((3..=9).contains(&value));
        }
        assert_eq!(rng.range(5, 5), 5);
        assert_eq!(rng.below(0), 0);
        let mut a = rng.fork(1);
        let mut b = rng.fork(1);
        assert_ne!(a.next_u64(), b.next_u64(), "each fork takes a fresh draw");
    }
}
