//! A workload that fills VRAM to a target occupancy and fragments it: what
//! a GPU driver's VRAM looks like after a while (textures, render targets,
//! shaders, page tables allocated and freed in no particular order).

use crate::buddy::{Block, Buddy, BuddyError};
use crate::rng::Rng;

/// One class of objects: sizes log-uniform in `[min, max]` bytes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SizeClass {
    /// What it stands for.
    pub name: &'static str,
    /// Probability weight (by object count).
    pub weight: f64,
    /// Smallest object, bytes.
    pub min: u64,
    /// Largest object, bytes.
    pub max: u64,
}

/// The object mix: many small objects (page tables, shader code, constant
/// buffers), fewer textures, few render targets. Objects are allocated
/// non-contiguously, as amdgpu, xe and nouveau do for ordinary buffer objects.
pub const MIX: [SizeClass; 3] = [
    SizeClass { name: "small (page tables, shaders, constants)", weight: 0.85, min: 4 << 10, max: 1 << 20 },
    SizeClass { name: "medium (textures)", weight: 0.13, min: 1 << 20, max: 8 << 20 },
    SizeClass { name: "large (render targets, video frames)", weight: 0.02, min: 8 << 20, max: 64 << 20 },
];

/// The workload's parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Pressure {
    /// Occupancy to reach, in `[0, 1)`.
    pub target: f64,
    /// Churn rounds after the first fill: each frees `churn_fraction` of the
    /// live objects at random and refills to `target` with new ones.
    pub churn_rounds: u32,
    /// Fraction of live objects each churn round frees.
    pub churn_fraction: f64,
}

impl Pressure {
    /// The default churn: ten rounds of 30 %.
    pub const fn new(target: f64) -> Self {
        Self { target, churn_rounds: 10, churn_fraction: 0.30 }
    }
}

/// What the workload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PressureStats {
    /// Objects allocated (all rounds).
    pub allocs: u64,
    /// Objects freed.
    pub frees: u64,
    /// Allocations refused for lack of space (ENOSPC), retried smaller.
    pub enospc: u64,
    /// Objects live at the end.
    pub live: u64,
}

/// The live objects the workload leaves in VRAM.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Each object's blocks.
    pub live: Vec<Vec<Block>>,
}

fn object_size(rng: &mut Rng, cap: u64) -> u64 {
    let total: f64 = MIX.iter().map(|c| c.weight).sum();
    let mut pick = rng.unit() * total;
    let class = MIX.iter().find(|c| {
        pick -= c.weight;
        pick < 0.0
    });
    let c = class.unwrap_or(&MIX[MIX.len() - 1]);
    let (lo, hi) = ((c.min as f64).ln(), (c.max.min(cap).max(c.min) as f64).ln());
    (lo + rng.unit() * (hi - lo)).exp() as u64
}

/// One step of the workload, as [`run_observed`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// A non-contiguous allocation of `len` bytes: its blocks, or `None`
    /// when it was refused (ENOSPC).
    Alloc {
        /// Bytes asked for.
        len: u64,
        /// The blocks, if it succeeded.
        blocks: Option<&'a [Block]>,
    },
    /// A free of a live object (its blocks).
    Free {
        /// The object's blocks.
        blocks: &'a [Block],
    },
}

/// Fills `buddy` to `p.target`, then churns. Deterministic for the state
/// of `rng`. Objects never exceed 1/8 of VRAM (a 256 MiB BAR does not hold
/// 64 MiB render targets in a realistic mix).
pub fn run(buddy: &mut Buddy, p: &Pressure, rng: &mut Rng) -> Result<(Objects, PressureStats), BuddyError> {
    run_observed(buddy, p, rng, &mut |_| {})
}

/// [`run`], reporting every allocation and free to `obs` in order (so the
/// same workload can be replayed on another allocator: `real_buddy`).
pub fn run_observed(
    buddy: &mut Buddy,
    p: &Pressure,
    rng: &mut Rng,
    obs: &mut dyn FnMut(Step<'_>),
) -> Result<(Objects, PressureStats), BuddyError> {
    let mut objs = Objects::default();
    let mut st = PressureStats::default();
    let cap = buddy.size() / 8;
    fill(buddy, p.target, cap, rng, &mut objs, &mut st, obs);
    for _ in 0..p.churn_rounds {
        let n = (objs.live.len() as f64 * p.churn_fraction) as usize;
        for _ in 0..n {
            let i = rng.below(objs.live.len() as u64) as usize;
            let o = objs.live.swap_remove(i);
            buddy.free_blocks(&o)?;
            obs(Step::Free { blocks: &o });
            st.frees += 1;
        }
        fill(buddy, p.target, cap, rng, &mut objs, &mut st, obs);
    }
    st.live = objs.live.len() as u64;
    Ok((objs, st))
}

fn fill(
    buddy: &mut Buddy,
    target: f64,
    cap: u64,
    rng: &mut Rng,
    objs: &mut Objects,
    st: &mut PressureStats,
    obs: &mut dyn FnMut(Step<'_>),
) {
    let goal = (buddy.size() as f64 * target) as u64;
    let mut misses = 0;
    while buddy.size() - buddy.free_bytes() < goal && misses < 64 {
        // Never overshoot the target by more than one small object.
        let room = goal - (buddy.size() - buddy.free_bytes());
        let len = object_size(rng, cap).min(room.max(buddy.chunk().bytes()));
        match buddy.alloc(len, false) {
            Ok(b) => {
                obs(Step::Alloc { len, blocks: Some(&b) });
                objs.live.push(b);
                st.allocs += 1;
            }
            Err(_) => {
                obs(Step::Alloc { len, blocks: None });
                st.enospc += 1;
                misses += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buddy::Chunk;

    fn state(seed: u64) -> (Vec<usize>, PressureStats) {
        let mut b = Buddy::new(1 << 30, Chunk::K4).unwrap();
        let (_, st) = run(&mut b, &Pressure::new(0.9), &mut Rng::new(seed)).unwrap();
        b.check().unwrap();
        (b.free_counts(), st)
    }

    #[test]
    fn deterministic_for_a_seed() {
        assert_eq!(state(5), state(5));
        assert_ne!(state(5), state(6));
    }

    #[test]
    fn reaches_target_and_fragments() {
        let mut b = Buddy::new(1 << 30, Chunk::K4).unwrap();
        let (objs, st) = run(&mut b, &Pressure::new(0.9), &mut Rng::new(1)).unwrap();
        let occ = b.occupancy();
        assert!((0.89..0.92).contains(&occ), "occupancy {occ}");
        assert!(st.frees > 0 && st.live == objs.live.len() as u64);
        // Fragmented: the 10 % free is spread over several blocks, and there is
        // no free block of 64 MiB although about 100 MiB are free.
        assert!(b.free_counts().iter().sum::<usize>() > 8, "{:?}", b.free_counts());
        assert!(b.largest_free_order().unwrap() < 14);
        for o in &objs.live {
            b.free_blocks(o).unwrap();
        }
        assert_eq!(b.free_bytes(), 1 << 30);
    }
}
