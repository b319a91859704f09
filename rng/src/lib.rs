//! SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
//! generators", OOPSLA 2014): the one seeded generator of the workspace.
//!
//! Every generated case, workload and sweep is a function of its seed
//! alone, on the host and in the kernel lab's guest alike: this crate has
//! no dependency whose algorithm could change under us between two builds,
//! and its streams are pinned by a test.
#![no_std]

/// The SplitMix64 generator: one 64-bit state, full period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(u64);

/// The golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A generator derived from a seed and a list of coordinates: each
    /// (seed, cell) gets its own stream, so a cell's result does not depend
    /// on which other cells a sweep runs (the RFC's quick sweep's cells equal
    /// the full sweep's).
    pub fn for_cell(seed: u64, coords: &[u64]) -> Self {
        let mut r = SplitMix64::new(seed ^ 0x6e72_2d72_616e_6765);
        for &c in coords {
            let x = r.next_u64();
            r = SplitMix64::new(x ^ c.wrapping_mul(GAMMA));
        }
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` by modulo (`n == 0` is taken as 1). The bias is
    /// below 2^-40 for the small `n` the generators use; the kernel lab's
    /// committed cases depend on this exact mapping.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A value in `0..n` by Lemire's multiply-shift (`n == 0` gives 0): the
    /// mapping the RFC's sweeps were generated with.
    pub fn below_mul_shift(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One element of `items`, or `None` for an empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let i = self.below(items.len() as u64);
        items.get(usize::try_from(i).ok()?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    /// The reference stream for seed 0 (Vigna's `splitmix64.c`): pins the
    /// algorithm, so a change here cannot silently regenerate every corpus.
    #[test]
    fn stream_matches_the_reference() {
        let mut r = SplitMix64::new(0);
        let want = [0xe220_a839_7b1d_cdaf, 0x6e78_9e6a_a1b9_65f4, 0x06c4_5d18_8009_454f];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
    }

    #[test]
    fn cells_are_independent_and_ranges_hold() {
        let a = SplitMix64::for_cell(1, &[2, 3]);
        assert_eq!(a.clone().next_u64(), SplitMix64::for_cell(1, &[2, 3]).next_u64());
        assert_ne!(a.clone().next_u64(), SplitMix64::for_cell(1, &[3, 2]).next_u64());
        let mut r = SplitMix64::new(7);
        assert!((0..1000).all(|_| r.below(10) < 10 && r.below_mul_shift(10) < 10));
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.unit())));
        assert_eq!(r.pick::<u8>(&[]), None);
        assert_eq!(r.pick(&[5]), Some(5));
    }
}
