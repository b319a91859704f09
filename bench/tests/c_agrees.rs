//! Differential test: the C baseline (`c/linux_checks.c`) and
//! `validator::validate(.., Policy::Linux)` give the same answer (errno, or
//! dma-buf size and physical vectors) on every benchmark input and on
//! thousands of generated requests biased to the edges.
//!
//! The generated corpus must also reach every Linux check of
//! [`validator::Reject`], PROBE, other features and exports, and a
//! hand-written table pins the expected errno of each check, so that a change
//! to either side, or to both alike, fails here.

use std::collections::BTreeMap;

use nr_ranges_bench::c_baseline::{self, CDevice, CPhysVec};
use nr_ranges_bench::{bench_device, bench_request_bytes, rust_answer, validate_and_fill, Answer, BENCH_NR_RANGES};
use rng::SplitMix64;
use uapi::{
    DmaRange, Request, RequestBuilder, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_PROBE,
    VFIO_DEVICE_FEATURE_SET,
};
use validator::{Bar, Device, Errno, Outcome, PageSize, PhysVec, Policy, Reject};

const GET: u32 = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
const EINVAL: Errno = Errno::EINVAL;
const ENODEV: Errno = Errno::ENODEV;
const ENOMEM: Errno = Errno::ENOMEM;
const EFAULT: Errno = Errno::EFAULT;
const EOVERFLOW: Errno = Errno::EOVERFLOW;

/// One of `items` (never empty here), drawn as the cases always were.
fn pick<T: Copy>(rng: &mut SplitMix64, items: &[T]) -> T {
    rng.pick(items).expect("a non-empty list")
}

/// A request for failure messages: headers, sizes and the first ranges
/// (a `{:?}` of the request would print every byte of a 4 MiB array).
fn describe(req: &Request<'_>) -> String {
    let head: Vec<DmaRange> = req.ranges.iter().take(4).collect();
    format!(
        "{:?} {:?} readable {} with {} ranges written, first {:x?}",
        req.feature,
        req.dma_buf,
        req.readable,
        req.ranges.len(),
        head
    )
}

/// Runs both implementations (validate only, and validate + phys_vec fill)
/// on `bytes` and panics on any disagreement; returns the name of the Rust
/// verdict ("Export", "Probe", "OtherFeature" or the [`Reject`] variant).
fn compare(bytes: &[u8], dev: &Device, what: &str) -> &'static str {
    let req = Request::decode(bytes).expect("every generated input has a feature header");
    let rust = validator::validate(&req, dev, Policy::Linux);
    let name = match &rust {
        Ok(Outcome::DmaBuf(_)) => "Export",
        Ok(Outcome::Probe) => "Probe",
        Ok(Outcome::OtherFeature { .. }) => "OtherFeature",
        Err(r) => r.name(),
    };
    let cdev = CDevice::from(dev);
    let c = c_baseline::check(bytes, &cdev).expect("feature header");
    let want = rust_answer(&rust);
    assert_eq!(c, want, "C and Rust disagree ({what}): {} on {dev:x?}, Rust says {name}", describe(&req));

    // The filling variants: same answer, and the same vectors on export.
    let cap = (bytes.len().saturating_sub(24) / 16).max(1);
    let mut cphys = vec![CPhysVec { paddr: 0xdead, len: 0xbeef }; cap];
    let cfill = c_baseline::fill(bytes, &cdev, &mut cphys).expect("feature header");
    assert_eq!(cfill, want, "C fill and Rust disagree ({what}): {} on {dev:x?}", describe(&req));
    let mut rphys = vec![PhysVec::default(); cap];
    let rfill = validate_and_fill(&req, dev, Policy::Linux, &mut rphys);
    assert_eq!(rust_answer(&rfill), want);
    if let Ok(Outcome::DmaBuf(e)) = &rust {
        let n = e.nr_ranges();
        assert_eq!(n, req.dma_buf.nr_ranges as usize);
        let rvecs: Vec<CPhysVec> = rphys[..n].iter().copied().map(CPhysVec::from).collect();
        assert!(cphys[..n] == rvecs[..], "phys vecs differ ({what}): {}", describe(&req));
        let lazily: Vec<CPhysVec> = e.phys_vecs().map(CPhysVec::from).collect();
        assert!(rvecs == lazily, "materialised phys vecs differ from Export::phys_vecs() ({what})");
    }
    name
}

#[test]
fn agrees_on_every_benchmark_input() {
    let dev = bench_device();
    let mut nrs = BENCH_NR_RANGES.to_vec();
    nrs.push(validator::STRICT_MAX_NR_RANGES);
    for nr in nrs {
        let bytes = bench_request_bytes(nr);
        assert_eq!(compare(&bytes, &dev, "benchmark input"), "Export", "benchmark input {nr} must be exported");
    }
}

// ---------------------------------------------------------------------------
// Hand-written cases: one per check, with the errno Linux answers.

fn ivshmem() -> Device {
    Device::ivshmem_example().with_bar(4, Bar::io(0xc000, 0x1000))
}

fn encode(b: RequestBuilder) -> Vec<u8> {
    b.encode().expect("small requests encode")
}

#[test]
fn pinned_answers() {
    let dev = ivshmem();
    let base = || RequestBuilder::new().region_index(2);
    let high = Device::new(PageSize::K4).with_bar(0, Bar::mmio(u64::MAX - 0xfff, 0x1000));
    #[rustfmt::skip]
    let cases: Vec<(&str, Device, Vec<u8>, Answer)> = vec![
        ("argsz 7", dev, encode(base().argsz(7).range(0, 0x1000)), Answer::Errno(EINVAL)),
        ("unknown flag", dev, encode(base().feature_flags(GET | 1 << 19).range(0, 0x1000)), Answer::Errno(EINVAL)),
        ("get+set", dev, encode(base().feature_flags(GET | VFIO_DEVICE_FEATURE_SET).range(0, 0x1000)), Answer::Errno(EINVAL)),
        ("other feature", dev, encode(base().feature_flags(VFIO_DEVICE_FEATURE_GET | 3)), Answer::OtherFeature),
        ("set", dev, encode(base().feature_flags(VFIO_DEVICE_FEATURE_SET | 11).range(0, 0x1000)), Answer::Errno(EINVAL)),
        ("probe", dev, encode(base().feature_flags(VFIO_DEVICE_FEATURE_PROBE | GET).argsz(8)), Answer::Probe),
        ("no get", dev, encode(base().feature_flags(11).range(0, 0x1000)), Answer::Errno(EINVAL)),
        ("argsz 23", dev, encode(base().argsz(23).range(0, 0x1000)), Answer::Errno(EINVAL)),
        ("header fault", dev, encode(base().range(0, 0x1000))[..20].to_vec(), Answer::Errno(EFAULT)),
        ("nr_ranges 0", dev, encode(base().nr_ranges(0).flags(1)), Answer::Errno(EINVAL)),
        ("flags", dev, encode(base().flags(1).range(0, 0x1000)), Answer::Errno(EINVAL)),
        ("region 6", dev, encode(base().region_index(6).range(0, 0x1000)), Answer::Errno(ENODEV)),
        ("absent BAR", dev, encode(base().region_index(1).nr_ranges(262_145)), Answer::Errno(ENODEV)),
        ("kmalloc limit", dev, encode(base().nr_ranges(262_145)), Answer::Errno(ENOMEM)),
        ("array fault", dev, encode(base().nr_ranges(2).range(0, 0x1000)), Answer::Errno(EFAULT)),
        ("zero length", dev, encode(base().range(0x1000, 0)), Answer::Errno(EINVAL)),
        ("unaligned", dev, encode(base().range(0x800, 0x1000)), Answer::Errno(EINVAL)),
        ("total overflow", dev, encode(base().range(0, 1 << 63).range(0, 1 << 63)), Answer::Errno(EINVAL)),
        ("total bit 63", dev, encode(base().range(0, 1 << 63)), Answer::Errno(EINVAL)),
        ("io BAR", dev, encode(base().region_index(4).range(0, 0x10_0000)), Answer::Errno(EINVAL)),
        ("phys overflow", high, encode(RequestBuilder::new().range(0x1000, 0x1000)), Answer::Errno(EOVERFLOW)),
        ("beyond BAR", dev, encode(base().range(0xfff000, 0x2000)), Answer::Errno(EINVAL)),
        ("loop 1 beats loop 2", high, encode(RequestBuilder::new().range(0x1000, 0x1000).range(0, 0)), Answer::Errno(EINVAL)),
        ("first loop-2 failure wins", high, encode(RequestBuilder::new().range(0x1000, 0x1000).range(0x2000, 0x1000)), Answer::Errno(EOVERFLOW)),
        ("whole BAR", dev, encode(base().range(0, 16 << 20)), Answer::Export { size: 16 << 20 }),
        ("two ranges", dev, encode(base().range(0x3000, 0x1000).range(0, 0x2000)), Answer::Export { size: 0x3000 }),
    ];
    for (what, dev, bytes, want) in cases {
        let req = Request::decode(&bytes).unwrap();
        assert_eq!(rust_answer(&validator::validate(&req, &dev, Policy::Linux)), want, "Rust: {what}");
        assert_eq!(c_baseline::check(&bytes, &CDevice::from(&dev)), Some(want), "C: {what}");
        compare(&bytes, &dev, what);
    }
}

// ---------------------------------------------------------------------------
// Generated cases.

const PAGE_EDGES: [u64; 4] = [4096, 16384, 65536, 1 << 21];

/// A 64-bit value biased to the edges that matter to the checks.
fn edge_u64(rng: &mut SplitMix64, bar: &Bar) -> u64 {
    let page = pick(rng, &PAGE_EDGES);
    match rng.below(18) {
        16 => 1 << 62,
        17 => (1 << 62) - page,
        0 => 0,
        1 => page,
        2 => page - 1,
        3 => 1 << 63,
        4 => (1 << 63) - page,
        5 => u64::MAX - page + 1, // 2^64 - page
        6 => u64::MAX,
        7 => bar.len,
        8 => bar.len.wrapping_sub(page),
        9 => bar.len.wrapping_add(page),
        10 => u64::MAX - bar.start,
        11 => (u64::MAX - bar.start) & !(page - 1),
        12 => rng.next_u64(),
        13 => rng.next_u64() & !(page - 1),
        _ => rng.below(64) * page,
    }
}

fn gen_bar(rng: &mut SplitMix64) -> Bar {
    let start = pick(rng, &[0, 0xfd00_0000, 0x38_0000_0000, 1 << 63, u64::MAX - (1 << 20) + 1, u64::MAX - 0xfff]);
    let len =
        pick(rng, &[0, 0x100, 0x1000, 0x10000, 16 << 20, 16 << 30, (1 << 62) - 0x1000, 1 << 62, u64::MAX - 0xfff]);
    match rng.below(8) {
        0 => Bar::ABSENT,
        1 => Bar::io(start, len),
        2 => Bar { kind: validator::BarKind::Absent, start, len },
        _ => Bar::mmio(start, len),
    }
}

fn gen_device(rng: &mut SplitMix64) -> Device {
    let page = pick(rng, &[PageSize::K4, PageSize::K4, PageSize::K16, PageSize::K64]);
    let mut dev = Device::new(page);
    if rng.chance(1, 8) {
        dev.kmalloc_max = pick(rng, &[0, 16, 4096, 65536]);
    }
    for i in 0..6 {
        dev.bars[i] = gen_bar(rng);
    }
    dev
}

/// One range: valid for a large enough `bar`, or, with probability
/// `1 / edge_every`, an edge value in either field.
fn gen_range(rng: &mut SplitMix64, bar: &Bar, page: u64, edge_every: u64) -> DmaRange {
    let valid_len = (bar.len / page).max(1);
    let mut offset = rng.below(valid_len.min(1 << 20)) * page;
    let mut length = (1 + rng.below(16)) * page;
    if rng.chance(1, edge_every) {
        offset = edge_u64(rng, bar);
    }
    if rng.chance(1, edge_every) {
        length = edge_u64(rng, bar);
    }
    DmaRange::new(offset, length)
}

fn gen_request(rng: &mut SplitMix64, dev: &Device) -> Vec<u8> {
    let page = dev.page_size.bytes();
    let region = if rng.chance(7, 8) { rng.below(6) as u32 } else { pick(rng, &[6, 7, 9, u32::MAX]) };
    let bar = dev.bars.get(region as usize).copied().unwrap_or(Bar::ABSENT);
    let written = match rng.below(16) {
        0 => 0,
        1 => 262_144,
        2 => 262_145,
        3..=8 => 1 + rng.below(3) as usize,
        _ => 1 + rng.below(64) as usize,
    };
    // Some requests are all edges, many have an edge here and there.
    let edge_every = pick(rng, &[4, 64, 1 << 20]);
    let mut ranges: Vec<DmaRange> = Vec::with_capacity(written);
    if written > 4096 {
        // Big arrays: valid ranges, with a few edge values at random places.
        ranges.extend((0..written).map(|i| DmaRange::new((i as u64 % 1024) * page, page)));
        for _ in 0..rng.below(3) {
            let i = rng.below(written as u64) as usize;
            ranges[i] = gen_range(rng, &bar, page, 4);
        }
    } else {
        ranges.extend((0..written).map(|_| gen_range(rng, &bar, page, edge_every)));
    }
    let mut b = RequestBuilder::new().region_index(region).open_flags(rng.next_u64() as u32).ranges(ranges);
    if rng.chance(1, 10) {
        let n = written as u32;
        b = b.nr_ranges(pick(rng, &[0, 1, 2, n.wrapping_sub(1), n + 1, 262_144, 262_145, u32::MAX]));
    }
    if rng.chance(1, 10) {
        b = b.flags(pick(rng, &[1, 0x8000_0000, u32::MAX]));
    }
    if rng.chance(1, 10) {
        b = b.argsz(pick(rng, &[0, 7, 8, 23, 24, 40, u32::MAX]));
    }
    if rng.chance(1, 10) {
        let f = pick(
            rng,
            &[
                VFIO_DEVICE_FEATURE_PROBE | GET,
                VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | GET,
                VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | 11,
                VFIO_DEVICE_FEATURE_PROBE | 11,
                VFIO_DEVICE_FEATURE_SET | 11,
                VFIO_DEVICE_FEATURE_SET | GET,
                11,
                GET | 1 << 19,
                GET | 0x8000_0000,
                VFIO_DEVICE_FEATURE_GET | 10,
                VFIO_DEVICE_FEATURE_GET | 0xffff,
            ],
        );
        b = b.feature_flags(f);
    }
    let mut bytes = b.encode().expect("generated requests encode");
    if rng.chance(1, 8) {
        // Unreadable memory: cut the argument anywhere after the feature header.
        let cut = 8 + rng.below(bytes.len() as u64 - 7) as usize;
        bytes.truncate(cut);
    } else if rng.chance(1, 16) {
        // Readable memory beyond what was written: a partial trailing range.
        bytes.extend_from_slice(&[0xff; 12]);
    }
    bytes
}

#[test]
fn agrees_on_generated_requests() {
    const CASES: usize = 10_000;
    let mut rng = SplitMix64::new(0x6e72_2d72_616e_6765);
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    for case in 0..CASES {
        let dev = gen_device(&mut rng);
        let bytes = gen_request(&mut rng, &dev);
        let name = compare(&bytes, &dev, &format!("generated case {case}"));
        *seen.entry(name).or_default() += 1;
    }
    // Every Linux check, and every success, must have been reached.
    let mut missing: Vec<&str> = Reject::ALL
        .iter()
        .filter(|r| !r.is_strict_only())
        .map(|r| r.name())
        .filter(|n| !seen.contains_key(n))
        .collect();
    missing.extend(["Export", "Probe", "OtherFeature"].into_iter().filter(|n| !seen.contains_key(n)));
    assert!(missing.is_empty(), "the corpus never reached {missing:?}; reached {seen:?}");
}
