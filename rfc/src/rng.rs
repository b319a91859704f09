//! A small seeded generator, so that every result is a function of the seed
//! alone (no dependence on a crate's algorithm choice across versions).

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state, full period,
/// good enough statistical quality for workload generation.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator derived from a seed and a list of coordinates: each
    /// (seed, cell) gets its own independent stream, so a cell's result does
    /// not depend on which other cells a sweep runs (the quick sweep's cells
    /// equal the full sweep's).
    pub fn for_cell(seed: u64, coords: &[u64]) -> Self {
        let mut r = Rng::new(seed ^ 0x6e72_2d72_616e_6765);
        for &c in coords {
            let x = r.next_u64();
            r = Rng::new(x ^ c.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)`; `n` must be non-zero. Lemire's multiply-shift
    /// (the bias for the small `n` used here is below 2^-40).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_cells_differ() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::for_cell(1, &[2, 3]);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::for_cell(1, &[2, 3]);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::for_cell(1, &[2, 3]).next_u64(), Rng::for_cell(1, &[3, 2]).next_u64());
        let mut r = Rng::new(7);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }
}
