//! The properties of the multi-range dma-buf UAPI model, one per claim.
//!
//! Each property's doc comment states its claim; the RFC's property list is
//! generated from these names and comments. Case counts default to 16,384
//! per property; `NR_RANGES_PROPTEST_CASES=N` (or proptest's own
//! `PROPTEST_CASES=N`) raises them for deep runs. Failures are persisted
//! under `proptests/proptest-regressions/` and replayed first on every run.

use kmod_shim::{Bar, BarKind, Device, FaultPlan, FaultSite, PageSize, Policy, Reject};
use props::fixtures::{all_importers, edge_device, edge_values, GIB, NR_RANGES_EDGES, PAGE_SIZES};
use props::lifecycle::{self, Op};
use props::oracle::{self, Perturb, Revoke};
use props::well_formed;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use uapi::OwnedRequest;
use uapi::{
    DeviceFeatureDmaBufSingle, DmaBufHeader, DmaRange, FeatureHeader, Request, RequestBuilder,
    VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET,
};
use validator::validate;

/// Cases per property: `NR_RANGES_PROPTEST_CASES`, else `PROPTEST_CASES`,
/// else 16,384 (the whole suite then takes a few seconds).
fn cases() -> u32 {
    ["NR_RANGES_PROPTEST_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(16_384)
}

/// Where failures are persisted (committed; replayed first on every run).
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/props.txt");

fn config() -> ProptestConfig {
    scaled(1)
}

/// The configuration with `cases() / div` cases (at least 1,024), for the
/// properties whose cases are thousands of ranges each.
fn scaled(div: u32) -> ProptestConfig {
    ProptestConfig {
        cases: (cases() / div).max(1024),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..ProptestConfig::default()
    }
}

// ----- strategies ---------------------------------------------------------

fn page_size() -> impl Strategy<Value = PageSize> {
    prop::sample::select(PAGE_SIZES.to_vec())
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::Linux), Just(Policy::Strict)]
}

/// A BAR index of the edge device: mostly the MMIO ones.
fn region() -> impl Strategy<Value = u32> {
    prop_oneof![6 => Just(0u32), 2 => Just(4u32), 2 => Just(5u32), 1 => 0u32..8, 1 => any::<u32>()]
}

fn open_flags() -> impl Strategy<Value = u32> {
    prop_oneof![4 => Just(0o2_000_002u32), 1 => Just(2u32), 1 => Just(0o4_002u32), 1 => Just(3u32), 1 => any::<u32>()]
}

/// One range field for a `bar_len`-byte BAR: an edge value, a page
/// multiple inside the BAR, or anything.
fn field(page: u64, bar_len: u64) -> impl Strategy<Value = u64> {
    let pages = (bar_len / page).max(1);
    prop_oneof![
        3 => prop::sample::select(edge_values(page, bar_len)),
        6 => (0..pages).prop_map(move |n| n * page),
        1 => any::<u64>(),
    ]
}

/// A range that the BAR mostly accepts: page-aligned, inside it, with the
/// BAR's edges and out-of-bounds values mixed in.
fn range(page: u64, bar_len: u64) -> impl Strategy<Value = DmaRange> {
    let pages = (bar_len / page).max(1);
    prop_oneof![
        6 => (0..pages, 1..=pages).prop_map(move |(o, l)| {
            let l = l.min(pages - o).max(1);
            DmaRange::new(o * page, l * page)
        }),
        3 => (field(page, bar_len), field(page, bar_len)).prop_map(|(o, l)| DmaRange::new(o, l)),
    ]
}

fn bar_len(dev: &Device, region: u32) -> u64 {
    dev.bars.get(region as usize).map_or(16 * GIB, |b| b.len.max(4096))
}

/// A device, a region and a range list of `n` ranges.
fn ranges_on(n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = (PageSize, u32, Vec<DmaRange>)> {
    (page_size(), region()).prop_flat_map(move |(p, r)| {
        let len = bar_len(&edge_device(p), r);
        (Just(p), Just(r), prop::collection::vec(range(p.bytes(), len), n.clone()))
    })
}

/// Any request: header fields biased to the valid values and to the edges,
/// argsz, nr_ranges and readability possibly disagreeing with the ranges.
fn any_request() -> impl Strategy<Value = (PageSize, OwnedRequest)> {
    (
        ranges_on(0..=12),
        open_flags(),
        prop_oneof![8 => Just(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF), 1 => prop::sample::select(vec![
            VFIO_DEVICE_FEATURE_DMA_BUF,
            VFIO_DEVICE_FEATURE_DMA_BUF | VFIO_DEVICE_FEATURE_PROBE,
            VFIO_DEVICE_FEATURE_DMA_BUF | VFIO_DEVICE_FEATURE_SET,
            VFIO_DEVICE_FEATURE_DMA_BUF | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET,
            VFIO_DEVICE_FEATURE_GET | 12,
            VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF | 1 << 31,
        ]), 1 => any::<u32>()],
        prop_oneof![8 => Just(None), 1 => prop::sample::select(NR_RANGES_EDGES.to_vec()).prop_map(Some), 1 => any::<u32>().prop_map(Some)],
        prop_oneof![8 => Just(None), 1 => (0u32..80).prop_map(Some), 1 => any::<u32>().prop_map(Some)],
        prop_oneof![12 => Just(0u32), 1 => any::<u32>()],
        prop_oneof![8 => Just(None), 1 => (0u64..300).prop_map(Some)],
    )
        .prop_map(|((p, region, ranges), of, ff, nr, argsz, flags, readable)| {
            let mut r = well_formed(region, of, &ranges);
            r.feature.flags = ff;
            r.dma_buf.flags = flags;
            if let Some(nr) = nr {
                r.dma_buf.nr_ranges = nr;
            }
            if let Some(a) = argsz {
                r.feature.argsz = a;
            }
            if let Some(rd) = readable {
                r.readable = rd;
            }
            (p, r)
        })
}

/// A request Linux mostly accepts: well-formed, 1 to `n` ranges.
fn accepted_biased(n: usize) -> impl Strategy<Value = (PageSize, OwnedRequest)> {
    (ranges_on(1..=n), open_flags()).prop_map(|((p, region, ranges), of)| (p, well_formed(region, of, &ranges)))
}

/// Large requests: a range of 4 GiB or more (one sg entry cannot hold it),
/// or several summing past 4 GiB, on the 16 GiB BAR0 and the 1 TiB BAR5.
fn large_request() -> impl Strategy<Value = (PageSize, OwnedRequest)> {
    (page_size(), prop_oneof![Just(0u32), Just(5u32)], prop::collection::vec((0u64..16, 1u64..=8), 1..=4)).prop_map(
        |(p, region, parts)| {
            let ranges: Vec<DmaRange> = parts
                .iter()
                .map(|&(o, l)| DmaRange::new(o * GIB, (l * GIB).min(16 * GIB - o * GIB).max(p.bytes())))
                .collect();
            (p, well_formed(region, 2, &ranges))
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(k, a, b)| Op::from_bytes(k, a, b))
}

// ----- properties ---------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// The claim: `props::claims::claim("prop_single_range_equivalence")`.
    #[test]
    fn prop_single_range_equivalence(
        page in page_size(),
        region in region(),
        of in open_flags(),
        r in (page_size()).prop_flat_map(|p| range(p.bytes(), 16 * GIB)),
        pol in policy(),
        perturb in prop_oneof![
            3 => Just(Perturb::NONE),
            1 => (prop_oneof![Just(40u32), 0u32..48, any::<u32>()], prop_oneof![Just(0u32), any::<u32>()], prop_oneof![Just(32u64), 0u64..40])
                .prop_map(|(argsz, flags, readable)| Perturb { argsz, flags, readable }),
        ],
    ) {
        let single = DeviceFeatureDmaBufSingle { region_index: region, open_flags: of, offset: r.offset, length: r.length };
        oracle::single_range_equivalence(&edge_device(page), &single, pol, perturb);
    }

    /// The claim: `props::claims::claim("prop_decomposition")`.
    #[test]
    fn prop_decomposition(
        (page, region, ranges) in ranges_on(1..=10),
        pol in policy(),
        small_kmalloc in prop::bool::weighted(0.2),
    ) {
        let mut dev = edge_device(page);
        if small_kmalloc {
            dev.kmalloc_max = 4 * 16;
        }
        oracle::decomposition(&dev, pol, region, 0o2_000_002, &ranges);
    }

    /// The claim: `props::claims::claim("prop_kernel_mode_links_every_range_at_iova_offset_zero")`.
    #[test]
    fn prop_kernel_mode_links_every_range_at_iova_offset_zero((page, req) in accepted_biased(6), pol in policy()) {
        oracle::kernel_links_at_offset_zero(&edge_device(page), &req.request(), pol);
    }

    /// The claim: `props::claims::claim("prop_encode_decode_roundtrip")`.
    #[test]
    fn prop_encode_decode_roundtrip(
        argsz in any::<u32>(), ff in any::<u32>(), region in any::<u32>(), of in any::<u32>(), flags in any::<u32>(),
        nr in any::<u32>(), ranges in prop::collection::vec((any::<u64>(), any::<u64>()), 0..40),
    ) {
        let b = RequestBuilder::new().argsz(argsz).feature_flags(ff).region_index(region).open_flags(of).flags(flags)
            .nr_ranges(nr).ranges(ranges.iter().map(|&(o, l)| DmaRange::new(o, l)));
        let bytes = b.encode().expect("explicit argsz and nr_ranges always encode");
        let r = Request::decode(&bytes).expect("decodable");
        prop_assert_eq!(r.feature, FeatureHeader { argsz, flags: ff });
        prop_assert_eq!(r.dma_buf, DmaBufHeader { region_index: region, open_flags: of, flags, nr_ranges: nr });
        prop_assert_eq!(r.ranges.iter().map(|x| (x.offset, x.length)).collect::<Vec<_>>(), ranges);
        prop_assert_eq!(r.readable, bytes.len() as u64 - 8);
        let owned = OwnedRequest { feature: r.feature, dma_buf: r.dma_buf, ranges: r.ranges.iter().collect(), readable: r.readable };
        prop_assert_eq!(owned.encode(), Ok(bytes));
    }

    /// The claim: `props::claims::claim("prop_decode_arbitrary_bytes_never_panics")`.
    #[test]
    fn prop_decode_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600), page in page_size()) {
        match Request::decode(&bytes) {
            Err(_) => prop_assert!(bytes.len() < 8),
            Ok(r) => {
                prop_assert_eq!(r.readable, bytes.len() as u64 - 8);
                prop_assert_eq!(r.ranges.len(), bytes.len().saturating_sub(24) / 16);
                let dev = edge_device(page);
                let _ = validate(&r, &dev, Policy::Linux);
                let _ = validate(&r, &dev, Policy::Strict);
                oracle::shim_agrees_with_validator(&r, &dev, Policy::Linux);
            }
        }
    }

    /// The claim: `props::claims::claim("prop_strict_within_linux")`.
    #[test]
    fn prop_strict_within_linux((page, req) in any_request(), bars in random_bars()) {
        let r = req.request();
        oracle::strict_within_linux(&r, &edge_device(page));
        let mut dev = Device::new(page);
        dev.bars = bars;
        oracle::strict_within_linux(&r, &dev);
    }

    /// The claim: `props::claims::claim("prop_shim_exports_exactly_what_the_validator_accepts")`.
    #[test]
    fn prop_shim_exports_exactly_what_the_validator_accepts((page, req) in any_request(), pol in policy()) {
        oracle::shim_agrees_with_validator(&req.request(), &edge_device(page), pol);
    }

}

proptest! {
    #![proptest_config(scaled(16))]

    /// The claim: `props::claims::claim("prop_shim_agrees_with_the_validator_for_many_ranges")`.
    #[test]
    fn prop_shim_agrees_with_the_validator_for_many_ranges(n in 1u64..2000, stride in 1u64..64, pol in policy()) {
        let ranges: Vec<DmaRange> = (0..n).map(|i| DmaRange::new((i * stride % 4096) * 4096, 4096)).collect();
        let req = well_formed(0, 2, &ranges);
        let dev = edge_device(PageSize::K4);
        oracle::shim_agrees_with_validator(&req.request(), &dev, pol);
        oracle::map_on_every_path(&dev, &req.request(), pol, kmod_shim::Fidelity::Fixed, &props::fixtures::path_importers());
    }

}

proptest! {
    #![proptest_config(config())]

    /// The claim: `props::claims::claim("prop_sg_invariants_on_every_path")`.
    #[test]
    fn prop_sg_invariants_on_every_path((page, req) in accepted_biased(8), pol in policy()) {
        oracle::map_on_every_path(&edge_device(page), &req.request(), pol, kmod_shim::Fidelity::Fixed, &all_importers());
    }

    /// The claim: `props::claims::claim("prop_sg_invariants_for_ranges_of_4gib_and_more")`.
    #[test]
    fn prop_sg_invariants_for_ranges_of_4gib_and_more((page, req) in large_request()) {
        oracle::map_on_every_path(&edge_device(page), &req.request(), Policy::Linux, kmod_shim::Fidelity::Fixed, &all_importers());
    }

    /// The claim: `props::claims::claim("prop_sg_invariants_with_a_translating_host_bridge")`.
    #[test]
    fn prop_sg_invariants_with_a_translating_host_bridge(
        (page, req) in accepted_biased(6),
        bus_pages in prop_oneof![any::<u64>(), Just(0u64), Just(u64::MAX)],
    ) {
        let dev = edge_device(page);
        let bus_offset = bus_pages & !(page.bytes() - 1);
        let cfg = kmod_shim::Config { bus_offset, ..props::fixtures::config(Policy::Linux, kmod_shim::Fidelity::Fixed) };
        let imps = props::fixtures::path_importers();
        let mut s = props::fixtures::shim_with(dev, cfg, &imps);
        if let Ok(buf) = s.export(&req.request()) {
            let phys = s.dma_buf(buf).expect("live").phys_vec.clone();
            for i in 0..imps.len() {
                let m = oracle::attach_and_map(&mut s, buf, kmod_shim::ImporterId(i), true);
                if let (0, Ok(m)) = (i, m) {
                    let first = m.pairs.first().expect("non-empty").0;
                    prop_assert_eq!(first, phys[0].paddr.wrapping_add(bus_offset));
                }
            }
            oracle::ok(&s, "translating host bridge");
        }
    }

    /// The claim: `props::claims::claim("prop_revoke_unreachable_then_restore")`.
    #[test]
    fn prop_revoke_unreachable_then_restore(
        (page, req) in accepted_biased(4),
        how in prop::sample::select(vec![Revoke::MemoryDisable, Revoke::Reset, Revoke::ResetWhileDisabled, Revoke::Close]),
        maps in 1u8..=3,
    ) {
        oracle::revoke(&edge_device(page), &req.request(), how, maps);
    }

    /// The claim: `props::claims::claim("prop_iommufd_maps_one_range_dma_bufs_only")`.
    #[test]
    fn prop_iommufd_maps_one_range_dma_bufs_only((page, req) in accepted_biased(3)) {
        oracle::iommufd_maps_one_range_only(&edge_device(page), &req.request());
    }

    /// The claim: `props::claims::claim("prop_lifecycle_interleavings_keep_counters_consistent")`.
    #[test]
    fn prop_lifecycle_interleavings_keep_counters_consistent(ops in prop::collection::vec(op(), 1..48)) {
        lifecycle::run(&ops);
    }

    /// The claim: `props::claims::claim("prop_fault_at_any_step_leaves_state_unchanged")`.
    #[test]
    fn prop_fault_at_any_step_leaves_state_unchanged(
        (page, req) in prop_oneof![3 => accepted_biased(4), 1 => large_request(), 1 => any_request()],
        pol in policy(),
        imp in prop::sample::select(all_importers()),
        site in prop::sample::select(FaultSite::ALL.to_vec()),
        step in 0u64..12,
    ) {
        oracle::fault_leaves_state(&edge_device(page), &req.request(), pol, imp, FaultPlan::new(site, step));
    }

    /// The claim: `props::claims::claim("prop_linux_oob_errno_depends_on_bar_address_strict_does_not")`.
    #[test]
    fn prop_linux_oob_errno_depends_on_bar_address_strict_does_not(
        page in page_size(),
        len_pages in 1u64..(1 << 20),
        start_pages in any::<u64>(),
        off_pages in any::<u64>(),
        extra_pages in 1u64..(1 << 20),
    ) {
        let p = page.bytes();
        let bar_len = len_pages * p;
        // Any page-aligned start at which the BAR itself does not wrap.
        let start = (start_pages % ((u64::MAX - bar_len) / p + 1)) * p;
        let offset = (off_pages % (u64::MAX / p)) * p;
        // Past the end: offset + length > bar_len.
        let length = if offset >= bar_len { extra_pages * p } else { bar_len - offset + extra_pages * p };
        let dev = Device::new(page).with_bar(0, Bar::mmio(start, bar_len));
        let req = well_formed(0, 2, &[DmaRange::new(offset, length)]);
        let linux = validate(&req.request(), &dev, Policy::Linux);
        let overflows = start.checked_add(offset).and_then(|x| x.checked_add(length)).is_none();
        let want = if overflows { Reject::PhysAddrOverflow { index: 0 } } else { Reject::RangeBeyondBar { index: 0 } };
        prop_assert_eq!(linux, Err(want));
        prop_assert_eq!(validate(&req.request(), &dev, Policy::Strict), Err(Reject::StrictRangeOutsideBar { index: 0 }));
    }

    /// The claim: `props::claims::claim("prop_linux_ignores_argsz")`.
    #[test]
    fn prop_linux_ignores_argsz((page, req) in accepted_biased(6), argsz in prop_oneof![24u32..200, any::<u32>()]) {
        let dev = edge_device(page);
        let mut other = req.clone();
        other.feature.argsz = argsz.max(24);
        prop_assert_eq!(validate(&req.request(), &dev, Policy::Linux), validate(&other.request(), &dev, Policy::Linux));
        let strict = validate(&other.request(), &dev, Policy::Strict);
        let short = (other.feature.argsz as u64 - 8) < 16 + 16 * other.dma_buf.nr_ranges as u64;
        if short && validate(&req.request(), &dev, Policy::Strict) != Err(Reject::StrictOpenFlags) {
            prop_assert_eq!(strict, Err(Reject::StrictArgszShort));
        } else {
            prop_assert_eq!(strict, validate(&req.request(), &dev, Policy::Strict));
        }
    }

    /// The claim: `props::claims::claim("prop_validator_is_deterministic_and_alignment_independent")`.
    #[test]
    fn prop_validator_is_deterministic_and_alignment_independent((page, req) in any_request(), shift in 1usize..8) {
        let bytes = req.encode().expect("readable below 300 bytes encodes");
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(&bytes);
        let (a, b) = (Request::decode(&bytes), Request::decode(&shifted[shift..]));
        let (a, b) = (a.expect("decodable"), b.expect("decodable"));
        let dev = edge_device(page);
        for pol in [Policy::Linux, Policy::Strict] {
            let v = validate(&a, &dev, pol);
            prop_assert_eq!(v, validate(&b, &dev, pol));
            prop_assert_eq!(v, validate(&a, &dev, pol));
            prop_assert_eq!(v.map_err(|e| e.errno()), validate(&req.request(), &dev, pol).map_err(|e| e.errno()));
        }
    }
}

/// Six BARs of any kind, length and start, including starts where the BAR
/// wraps past 2^64.
fn random_bars() -> impl Strategy<Value = [Bar; 6]> {
    let bar = (
        prop::sample::select(vec![BarKind::Absent, BarKind::Io, BarKind::Mmio]),
        prop::sample::select(props::scenario::BAR_LENS.to_vec()),
        prop_oneof![Just(0u64), Just(1u64 << 63), any::<u64>().prop_map(|x| x & !0xfff)],
    )
        .prop_map(|(kind, len, start)| Bar { kind, start, len });
    [bar.clone(), bar.clone(), bar.clone(), bar.clone(), bar.clone(), bar]
}

/// The validator cannot allocate: it is `no_std` and never links `alloc`
/// (a source check, since `forbid(unsafe_code)` rules out a counting global
/// allocator here).
#[test]
fn validator_is_no_std_without_alloc() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../validator/src");
    let lib = std::fs::read_to_string(format!("{dir}/lib.rs")).expect("validator/src/lib.rs");
    assert!(lib.contains("#![no_std]"));
    for e in std::fs::read_dir(dir).expect("validator/src") {
        let src = std::fs::read_to_string(e.expect("entry").path()).expect("read");
        assert!(!src.contains("extern crate alloc"), "the validator links alloc");
    }
}

/// The oracles can fail: a planted stale IOMMU translation is caught.
#[test]
#[should_panic(expected = "invariant violated")]
fn oracle_catches_a_planted_stale_translation() {
    let imps = props::fixtures::path_importers();
    let mut s = props::fixtures::shim_with(edge_device(PageSize::K4), Default::default(), &imps);
    let req = well_formed(0, 2, &[DmaRange::new(0, 0x1000)]);
    let buf = s.export(&req.request()).expect("accepted");
    let _ = oracle::attach_and_map(&mut s, buf, kmod_shim::ImporterId(1), true);
    let io = s.importer_mut(kmod_shim::ImporterId(1)).expect("importer").iommu.as_mut().expect("iommu");
    let extra = io.alloc_iova(0x1000).expect("space");
    io.map(extra, 0x40_0000_0000, 0x1000).expect("map");
    oracle::ok(&s, "planted");
}

/// Fuzz findings that were fixed, replayed (see fuzz/regressions/).
#[test]
fn fuzz_regressions_replay() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions");
    for (target, run) in [
        ("bytes", props::fuzz::bytes as fn(&[u8])),
        ("structured", |d: &[u8]| {
            let s: props::scenario::Scenario =
                arbitrary::Arbitrary::arbitrary_take_rest(arbitrary::Unstructured::new(d)).expect("total");
            props::fuzz::structured(&s)
        }),
        ("lifecycle", props::fuzz::lifecycle),
    ] {
        let Ok(dir) = std::fs::read_dir(format!("{root}/{target}")) else { continue };
        for e in dir {
            let data = std::fs::read(e.expect("entry").path()).expect("read");
            run(&data);
        }
    }
}

/// The lifecycle reference model runs on a direct sequence too (a smoke
/// check that the driver's teardown leaves nothing).
#[test]
fn lifecycle_smoke() {
    lifecycle::run(&[
        Op::Export(1),
        Op::Attach(0, 1),
        Op::Map(0),
        Op::MemoryDisable,
        Op::Map(0),
        Op::MemoryEnable,
        Op::Map(0),
    ]);
}
