//! The branch-free fast path of `validate` answers exactly what the
//! check-by-check path (`validate_exact`) answers, for both policies, on
//! requests aimed at the fast path's own boundaries: BARs around 2^62 and
//! 2^63 and ones whose end overflows, totals near 2^63 and 2^64, nr_ranges
//! around the fast path's threshold and the kernel's copy limit.

use rng::SplitMix64;
use uapi::{DmaRange, RequestBuilder};
use validator::{validate, validate_exact, Bar, Device, Outcome, PageSize, Policy, Verdict};

/// One of `xs` (never empty here), drawn as the cases always were.
fn pick<T: Copy>(rng: &mut SplitMix64, xs: &[T]) -> T {
    rng.pick(xs).expect("a non-empty list")
}

/// A verdict reduced to what both paths must agree on, including which
/// bytes the export borrows.
fn key(v: Verdict<'_>) -> (String, Option<u32>, u64, usize, usize) {
    match v {
        Ok(Outcome::DmaBuf(e)) => {
            ("export".into(), Some(e.region_index), e.size, e.ranges.len(), e.ranges.as_bytes().as_ptr() as usize)
        }
        Ok(o) => (format!("{o:?}"), None, 0, 0, 0),
        Err(r) => (r.name().into(), r.range_index(), 0, 0, 0),
    }
}

const P62: u64 = 1 << 62;
const P63: u64 = 1 << 63;

fn gen(rng: &mut SplitMix64) -> (Device, Vec<u8>) {
    let page = pick(rng, &[4096u64, 4096, 16384, 65536]);
    let len = pick(
        rng,
        &[
            16 << 20,
            16 << 30,
            (1 << 46) - 65536,
            1 << 46,
            P62 - 65536,
            P62,
            P62 + 65536,
            P63 - 65536,
            P63,
            u64::MAX - 65535,
        ],
    );
    let start = match rng.below(6) {
        0 => 0,
        1 => 0x38_0000_0000,
        2 => P63,
        3 => (u64::MAX - len).wrapping_add(1) & !0xffff, // end exactly at 2^64 (wraps) or close
        4 => (u64::MAX - len) & !0xffff,                 // fits
        _ => rng.next_u64() & !0xffff,
    };
    let kind = if rng.chance(1, 10) { 0 } else { 1 };
    // The kernel's copy limit (2^18 ranges) is costly to build: kept rare so
    // that the many small cases that reach the proof's boundaries fit.
    let n: usize = match rng.below(400) {
        0 => 1 << 18,
        1 => (1 << 18) - 1,
        2..=69 => pick(rng, &[7, 8, 9]),
        70..=79 => 4096,
        80..=159 => 2 + rng.below(6) as usize,
        _ => 1 + rng.below(64) as usize,
    };
    let edge_every = pick(rng, &[1u64, 8, 64, 1 << 30]);
    let mut ranges = Vec::with_capacity(n);
    for _ in 0..n {
        let pages = (len / page).max(1);
        let off = rng.below(pages.min(1 << 40)) * page;
        let room = len.saturating_sub(off);
        let mut r = DmaRange::new(off, (1 + rng.below((room / page).clamp(1, 16))) * page);
        if rng.chance(1, edge_every) {
            match rng.below(15) {
                12 => r = DmaRange::new(P63 - page, P63 - page),
                13 => r = DmaRange::new(P62, P62),
                14 => r = DmaRange::new(P62 - page, P62 + page),
                0 => r.length = 0,
                1 => r.offset += 1,
                2 => r.length = room,
                3 => r.length = room + page,
                4 => r = DmaRange::new(len, page),
                5 => r = DmaRange::new(0, len),
                6 => r = DmaRange::new(0, P62 - page),
                7 => r = DmaRange::new(P62 - page, page),
                8 => r = DmaRange::new(0, P62),
                9 => r = DmaRange::new(P63, page),
                10 => r = DmaRange::new(u64::MAX - page + 1, page),
                _ => r.length = u64::MAX - page + 1,
            }
        }
        ranges.push(r);
    }
    // Sometimes many maximal ranges: totals around 2^63 and 2^64.
    if rng.chance(1, 8) {
        let k = pick(rng, &[1usize, 2, 3, 4, 5]).min(n);
        for r in ranges.iter_mut().take(k) {
            *r = DmaRange::new(0, len & !(page - 1));
        }
    }
    let open_flags = pick(rng, &[0u32, 2 | 0o2000000, 0o4000]);
    let bytes = RequestBuilder::new().open_flags(open_flags).ranges(ranges).encode().unwrap();
    let bar = if kind == 0 { Bar::io(start, len) } else { Bar::mmio(start, len) };
    (Device::new(PageSize::from_bytes(page).expect("a supported page size")).with_bar(0, bar), bytes)
}

#[test]
fn fast_path_gives_the_exact_verdict() {
    let mut rng = SplitMix64::new(42);
    let (mut exports, mut rejects) = (0, 0);
    for case in 0..100_000 {
        let (dev, bytes) = gen(&mut rng);
        let req = uapi::Request::decode(&bytes).unwrap();
        for policy in [Policy::Linux, Policy::Strict] {
            let fast = key(validate(&req, &dev, policy));
            let exact = key(validate_exact(&req, &dev, policy));
            assert_eq!(fast, exact, "case {case}, {policy:?}, nr_ranges {}, {dev:?}", req.dma_buf.nr_ranges);
            if fast.0 == "export" {
                exports += 1;
            } else {
                rejects += 1;
            }
        }
    }
    // Both outcomes must be common, or the comparison proves little.
    assert!(exports > 10_000 && rejects > 10_000, "exports {exports}, rejects {rejects}");
}
