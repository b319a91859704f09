//! Each check restated independently: for every `Reject` variant, one
//! property that builds requests where exactly that check fails and every
//! check before it passes, and asserts the variant and its errno.
//!
//! The order is written out here from the kernel (README "What Linux 7.2
//! checks, in order", measured on 7.2.13 and 7.3.4), not read from the
//! validator's check table:
//!
//! 1. `vfio_ioctl_device_feature()`: argsz < 8; unknown flag bits; GET and
//!    SET without PROBE.
//! 2. `vfio_check_feature()`: SET; (PROBE succeeds); neither GET nor SET;
//!    argsz < 8 + 16.
//! 3. the dma-buf header: its copy faults; `nr_ranges == 0`; `flags != 0`;
//!    then Strict's open_flags, nr_ranges cap, argsz covering the ranges.
//! 4. the region: `region_index >= 6`; an absent BAR.
//! 5. `memdup_array_user()`: above `KMALLOC_MAX_SIZE`; an unreadable array.
//! 6. `validate_dmabuf_input()`, per range in order: zero length; unaligned;
//!    running total overflows; then the total has bit 63.
//! 7. `vfio_pci_core_get_dmabuf_phys()`: a BAR that is not MMIO.
//! 8. `vfio_pci_core_fill_phys_vec()`, per range in order: (Strict: outside
//!    the BAR); `bar_start + offset + length` overflows; beyond the BAR end.
//!
//! Fields that a check ignores are left arbitrary where every earlier check
//! still passes, so that each property also shows what does *not* decide.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use uapi::{
    DmaRange, OwnedRequest, RequestBuilder, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET,
    VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET,
};
use validator::{validate, Bar, Device, Errno, Outcome, PageSize, Policy, Reject};

const GET: u32 = VFIO_DEVICE_FEATURE_GET;
const SET: u32 = VFIO_DEVICE_FEATURE_SET;
const PROBE: u32 = VFIO_DEVICE_FEATURE_PROBE;
const DMA_BUF: u32 = VFIO_DEVICE_FEATURE_DMA_BUF;
/// `O_RDWR | O_CLOEXEC`: open flags every policy accepts.
const O_RDWR_CLOEXEC: u32 = 0o2_000_002;
/// Bytes of `struct vfio_device_feature`, of the dma-buf header, of a range.
const FEATURE: u32 = 8;
const HEADER: u64 = 16;
const RANGE: u64 = 16;
/// Strict's cap on `nr_ranges`.
const STRICT_CAP: u32 = 65_536;
/// Lengths stay below this, so that no total of at most 16 ranges reaches
/// bit 63 unless a property wants it to.
const SMALL: u64 = 1 << 40;

/// Cases per property: `NR_RANGES_PROPTEST_CASES`, else `PROPTEST_CASES`,
/// else 16,384, as for the other properties.
fn config() -> ProptestConfig {
    let cases = ["NR_RANGES_PROPTEST_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(16_384);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/checks_restated.txt"
        )))),
        ..ProptestConfig::default()
    }
}

/// A request's fields, mutable before it is built.
#[derive(Debug, Clone)]
struct Req {
    flags: u32,
    argsz: u32,
    region: u32,
    open_flags: u32,
    hdr_flags: u32,
    nr: u32,
    ranges: Vec<DmaRange>,
    readable: u64,
}

impl Req {
    /// A well-formed GET of `ranges` on `region`, that Strict accepts too.
    fn get(region: u32, ranges: Vec<DmaRange>) -> Self {
        let nr = ranges.len() as u32;
        Req {
            flags: GET | DMA_BUF,
            argsz: FEATURE + (HEADER + RANGE * u64::from(nr)) as u32,
            region,
            open_flags: O_RDWR_CLOEXEC,
            hdr_flags: 0,
            nr,
            ranges,
            readable: HEADER + RANGE * u64::from(nr),
        }
    }

    fn build(&self) -> OwnedRequest {
        RequestBuilder::new()
            .feature_flags(self.flags)
            .argsz(self.argsz)
            .region_index(self.region)
            .open_flags(self.open_flags)
            .flags(self.hdr_flags)
            .nr_ranges(self.nr)
            .ranges(self.ranges.iter().copied())
            .readable(self.readable)
            .build()
            .expect("the properties build small requests")
    }
}

/// Asserts that `policy` refuses `req` on `dev` with `want` and its errno.
fn refuses(req: &Req, dev: &Device, policy: Policy, want: Reject, errno: Errno) -> Result<(), TestCaseError> {
    let got = validate(&req.build().request(), dev, policy).map(|_| ());
    prop_assert_eq!(got, Err(want), "{:?} on {:?}", req, dev);
    prop_assert_eq!(want.errno(), errno);
    Ok(())
}

fn page_size() -> impl Strategy<Value = PageSize> {
    prop::sample::select(vec![PageSize::K4, PageSize::K16, PageSize::K64])
}

/// Any BAR: absent, MMIO or I/O, page-aligned start below 2^48.
fn any_bar(page: u64) -> impl Strategy<Value = Bar> {
    prop_oneof![
        Just(Bar::ABSENT),
        (0u64..1 << 36, 1u64..4096).prop_map(move |(s, n)| Bar::mmio(s * page, n * page)),
        (0u64..1 << 16, 1u64..256).prop_map(|(s, n)| Bar::io(s, n)),
    ]
}

/// A device of `page` with arbitrary BARs, and one index among them set to
/// an MMIO BAR of at least `min_pages` pages (start below 2^48).
fn device_with_mmio(min_pages: u64) -> impl Strategy<Value = (Device, u32)> {
    page_size().prop_flat_map(move |ps| {
        let page = ps.bytes();
        (prop::collection::vec(any_bar(page), 6), 0u32..6, 0u64..1 << 36, min_pages..min_pages + 4096).prop_map(
            move |(bars, region, start, pages)| {
                let mut dev = Device::new(ps);
                for (i, b) in bars.into_iter().enumerate() {
                    dev = dev.with_bar(i, b);
                }
                (dev.with_bar(region as usize, Bar::mmio(start * page, pages * page)), region)
            },
        )
    })
}

/// A device with the BAR at the chosen index (every index) replaced by
/// `bar(page)`.
fn device_with(bar: fn(u64, u64, u64) -> Bar) -> impl Strategy<Value = (Device, u32)> {
    (device_with_mmio(1), 0u64..1 << 16, 1u64..4096).prop_map(move |((dev, region), s, n)| {
        let page = dev.page_size.bytes();
        (dev.with_bar(region as usize, bar(page, s, n)), region)
    })
}

/// A range inside a `bar_len`-byte BAR (page-aligned, non-empty), from
/// two numbers.
fn inside(page: u64, bar_len: u64, a: u64, b: u64) -> DmaRange {
    let pages = bar_len / page;
    let off = a % pages;
    let len = 1 + b % (pages - off);
    DmaRange::new(off * page, len * page)
}

/// A range that passes `validate_dmabuf_input()` (non-empty, aligned,
/// shorter than [`SMALL`]) and may lie anywhere, from two numbers.
fn loop1_ok(page: u64, a: u64, b: u64) -> DmaRange {
    DmaRange::new(a & !(page - 1), (1 + b % (SMALL / page - 1)) * page)
}

fn pairs(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((any::<u64>(), any::<u64>()), n)
}

/// Header-stage fields: any argsz from 24, any region, any open flags.
fn header_rest() -> impl Strategy<Value = (u32, u32, u32)> {
    (24u32.., any::<u32>(), any::<u32>())
}

proptest! {
    #![proptest_config(config())]

    /// The claim: `props::claims::claim("prop_well_formed_request_inside_an_mmio_bar_is_a_dmabuf_of_the_sum")`.
    #[test]
    fn prop_well_formed_request_inside_an_mmio_bar_is_a_dmabuf_of_the_sum(
        (dev, region) in device_with_mmio(1), rs in pairs(1..17),
    ) {
        let page = dev.page_size.bytes();
        let len = dev.bars[region as usize].len;
        let ranges: Vec<DmaRange> = rs.iter().map(|&(a, b)| inside(page, len, a, b)).collect();
        let total: u64 = ranges.iter().map(|r| r.length).sum();
        let req = Req::get(region, ranges);
        for policy in [Policy::Linux, Policy::Strict] {
            match validate(&req.build().request(), &dev, policy) {
                Ok(Outcome::DmaBuf(e)) => prop_assert_eq!(e.size, total),
                other => prop_assert!(false, "{:?}: {:?}", policy, other),
            }
        }
    }

    /// The claim: `props::claims::claim("prop_argsz_below_8_is_einval_first")`.
    #[test]
    fn prop_argsz_below_8_is_einval_first(
        argsz in 0u32..FEATURE, flags in any::<u32>(), region in any::<u32>(), nr in any::<u32>(),
        readable in 0u64..64, dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(region, vec![]);
        (req.argsz, req.flags, req.nr, req.readable) = (argsz, flags, nr, readable);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev.0, policy, Reject::ArgszBelowFeatureHeader, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_unknown_feature_flag_is_einval_after_argsz")`.
    #[test]
    fn prop_unknown_feature_flag_is_einval_after_argsz(
        argsz in FEATURE.., low in 0u32..1 << 19, high in 1u32..1 << 13, nr in any::<u32>(), dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(0, vec![]);
        (req.argsz, req.flags, req.nr) = (argsz, low | high << 19, nr);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev.0, policy, Reject::UnknownFeatureFlags, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_get_and_set_without_probe_is_einval_for_any_feature")`.
    #[test]
    fn prop_get_and_set_without_probe_is_einval_for_any_feature(
        argsz in FEATURE.., feature in 0u32..=0xffff, nr in any::<u32>(), dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(0, vec![]);
        (req.argsz, req.flags, req.nr) = (argsz, feature | GET | SET, nr);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev.0, policy, Reject::GetAndSetWithoutProbe, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_set_on_dma_buf_is_einval_even_with_probe")`.
    #[test]
    fn prop_set_on_dma_buf_is_einval_even_with_probe(
        argsz in FEATURE.., ops in prop::sample::select(vec![SET, SET | PROBE, SET | PROBE | GET]),
        nr in any::<u32>(), dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(0, vec![]);
        (req.argsz, req.flags, req.nr) = (argsz, DMA_BUF | ops, nr);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev.0, policy, Reject::SetNotSupported, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_dma_buf_without_get_is_einval")`.
    #[test]
    fn prop_dma_buf_without_get_is_einval(argsz in FEATURE.., nr in any::<u32>(), dev in device_with_mmio(1)) {
        let mut req = Req::get(0, vec![]);
        (req.argsz, req.flags, req.nr) = (argsz, DMA_BUF, nr);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev.0, policy, Reject::NoGetOrSet, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_argsz_below_24_is_einval_after_the_feature_checks")`.
    #[test]
    fn prop_argsz_below_24_is_einval_after_the_feature_checks(
        argsz in FEATURE..FEATURE + HEADER as u32, nr in any::<u32>(), readable in 0u64..64, dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(0, vec![]);
        (req.argsz, req.nr, req.readable) = (argsz, nr, readable);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev.0, policy, Reject::ArgszBelowDmaBufHeader, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_unreadable_header_is_efault_after_the_feature_checks")`.
    #[test]
    fn prop_unreadable_header_is_efault_after_the_feature_checks(
        (argsz, region, open) in header_rest(), readable in 0u64..HEADER, dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(region, vec![]);
        (req.argsz, req.open_flags, req.readable, req.nr) = (argsz, open, readable, 0);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev.0, policy, Reject::DmaBufHeaderFault, Errno::EFAULT)?;
        }
    }

    /// The claim: `props::claims::claim("prop_nr_ranges_zero_is_einval_after_header_checks")`.
    #[test]
    fn prop_nr_ranges_zero_is_einval_after_header_checks(
        (argsz, region, open) in header_rest(), hdr_flags in any::<u32>(), dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(region, vec![]);
        (req.argsz, req.open_flags, req.hdr_flags, req.nr) = (argsz, open, hdr_flags, 0);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev.0, policy, Reject::NoRanges, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_nonzero_header_flags_are_einval_before_the_region")`.
    #[test]
    fn prop_nonzero_header_flags_are_einval_before_the_region(
        (argsz, region, open) in header_rest(), hdr_flags in 1u32.., nr in 1u32.., dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(region, vec![]);
        (req.argsz, req.open_flags, req.hdr_flags, req.nr) = (argsz, open, hdr_flags, nr);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev.0, policy, Reject::NonZeroFlags, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_strict_bad_open_flags_are_einval_before_the_region")`.
    #[test]
    fn prop_strict_bad_open_flags_are_einval_before_the_region(
        extra in 1u32.., region in any::<u32>(), nr in 1u32.., argsz in 24u32.., mode3 in any::<bool>(),
        dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(region, vec![]);
        let open = if mode3 { 3 | (extra & 0o2_000_000) } else { extra & !0o2_000_003 | 0o4_000 };
        (req.open_flags, req.nr, req.argsz) = (open, nr, argsz);
        refuses(&req, &dev.0, Policy::Strict, Reject::StrictOpenFlags, Errno::EINVAL)?;
        let linux = validate(&req.build().request(), &dev.0, Policy::Linux).map(|_| ());
        req.open_flags = O_RDWR_CLOEXEC;
        prop_assert_eq!(linux, validate(&req.build().request(), &dev.0, Policy::Linux).map(|_| ()));
    }

    /// The claim: `props::claims::claim("prop_strict_nr_ranges_above_cap_is_e2big_before_the_region")`.
    #[test]
    fn prop_strict_nr_ranges_above_cap_is_e2big_before_the_region(
        nr in STRICT_CAP + 1.., region in any::<u32>(), argsz in 24u32.., open in prop::sample::select(vec![0u32, 1, 2, O_RDWR_CLOEXEC]),
        dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(region, vec![]);
        (req.nr, req.argsz, req.open_flags) = (nr, argsz, open);
        refuses(&req, &dev.0, Policy::Strict, Reject::StrictTooManyRanges, Errno::E2BIG)?;
    }

    /// The claim: `props::claims::claim("prop_strict_argsz_short_of_the_ranges_is_einval_before_the_region")`.
    #[test]
    fn prop_strict_argsz_short_of_the_ranges_is_einval_before_the_region(
        nr in 1u32..=STRICT_CAP, short in 1u64.., region in any::<u32>(), dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(region, vec![]);
        let exact = u64::from(FEATURE) + HEADER + RANGE * u64::from(nr);
        req.nr = nr;
        req.argsz = (exact - 1 - short % (exact - u64::from(FEATURE) - HEADER)) as u32;
        prop_assert!(req.argsz >= FEATURE + HEADER as u32);
        refuses(&req, &dev.0, Policy::Strict, Reject::StrictArgszShort, Errno::EINVAL)?;
    }

    /// The claim: `props::claims::claim("prop_region_past_the_bars_is_enodev_after_the_header")`.
    #[test]
    fn prop_region_past_the_bars_is_enodev_after_the_header(
        region in 6u32.., (argsz, _, open) in header_rest(), nr in 1u32.., dev in device_with_mmio(1),
    ) {
        let mut req = Req::get(region, vec![DmaRange::new(0, 4096)]);
        refuses(&req, &dev.0, Policy::Strict, Reject::RegionNotBar, Errno::ENODEV)?;
        (req.argsz, req.open_flags, req.nr) = (argsz, open, nr);
        refuses(&req, &dev.0, Policy::Linux, Reject::RegionNotBar, Errno::ENODEV)?;
    }

    /// The claim: `props::claims::claim("prop_absent_bar_is_enodev_at_every_index")`.
    #[test]
    fn prop_absent_bar_is_enodev_at_every_index(
        (dev, region) in device_with(|_, _, _| Bar::ABSENT), nr in 1u32.., readable in HEADER..HEADER + 64,
    ) {
        let mut req = Req::get(region, vec![DmaRange::new(0, dev.page_size.bytes())]);
        refuses(&req, &dev, Policy::Strict, Reject::BarAbsent, Errno::ENODEV)?;
        (req.nr, req.readable, req.argsz) = (nr, readable, 24);
        refuses(&req, &dev, Policy::Linux, Reject::BarAbsent, Errno::ENODEV)?;
    }

    /// The claim: `props::claims::claim("prop_range_array_above_kmalloc_max_is_enomem_before_the_copy")`.
    #[test]
    fn prop_range_array_above_kmalloc_max_is_enomem_before_the_copy(
        (dev, region) in device_with_mmio(1), io in any::<bool>(), above in 1u64..1 << 20, readable in HEADER..HEADER + 64,
    ) {
        let dev = if io { dev.with_bar(region as usize, Bar::io(0xc000, 0x100)) } else { dev };
        let max_ranges = dev.page_size.default_kmalloc_max() / RANGE;
        let Ok(nr) = u32::try_from(max_ranges + above) else { return Ok(()) };
        let mut req = Req::get(region, vec![]);
        (req.nr, req.readable, req.argsz) = (nr, readable, 24);
        refuses(&req, &dev, Policy::Linux, Reject::RangeArrayTooLarge, Errno::ENOMEM)?;
    }

    /// The claim: `props::claims::claim("prop_unreadable_range_array_is_efault_before_any_range")`.
    #[test]
    fn prop_unreadable_range_array_is_efault_before_any_range(
        (dev, region) in device_with_mmio(1), io in any::<bool>(), nr in 1u32..=STRICT_CAP, missing in 1u64..,
        rs in pairs(0..4),
    ) {
        let dev = if io { dev.with_bar(region as usize, Bar::io(0xc000, 0x100)) } else { dev };
        let ranges: Vec<DmaRange> = rs.iter().map(|&(a, b)| DmaRange::new(a, b)).collect();
        let mut req = Req::get(region, ranges);
        req.nr = nr;
        req.argsz = FEATURE + (HEADER + RANGE * u64::from(nr)) as u32;
        req.readable = HEADER + RANGE * u64::from(nr) - 1 - missing % (RANGE * u64::from(nr));
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev, policy, Reject::RangeArrayFault, Errno::EFAULT)?;
        }
    }
}

/// Ranges `0..i` passing `validate_dmabuf_input()`, range `i` from `bad`,
/// then ranges passing it again; the BAR is MMIO or I/O (the first loop
/// comes before the BAR kind).
fn first_loop_case(
    dev: Device,
    region: u32,
    io: bool,
    before: &[(u64, u64)],
    bad: DmaRange,
    after: &[(u64, u64)],
) -> (Device, Req, u32) {
    let page = dev.page_size.bytes();
    let dev = if io { dev.with_bar(region as usize, Bar::io(0xc000, 0x100)) } else { dev };
    let mut ranges: Vec<DmaRange> = before.iter().map(|&(a, b)| loop1_ok(page, a, b)).collect();
    ranges.push(bad);
    ranges.extend(after.iter().map(|&(a, b)| loop1_ok(page, a, b)));
    (dev, Req::get(region, ranges), before.len() as u32)
}

proptest! {
    #![proptest_config(config())]

    /// The claim: `props::claims::claim("prop_first_zero_length_range_is_einval_in_range_order")`.
    #[test]
    fn prop_first_zero_length_range_is_einval_in_range_order(
        (dev, region) in device_with_mmio(1), io in any::<bool>(), before in pairs(0..8), off in any::<u64>(),
        after in pairs(0..8), unwritten in any::<bool>(),
    ) {
        let (dev, mut req, i) = first_loop_case(dev, region, io, &before, DmaRange::new(off, 0), &after);
        if unwritten {
            // Announced and readable, not written: zeros in user memory.
            req.ranges.truncate(i as usize);
        }
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev, policy, Reject::RangeZeroLength { index: i }, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_first_unaligned_range_is_einval_in_range_order")`.
    #[test]
    fn prop_first_unaligned_range_is_einval_in_range_order(
        (dev, region) in device_with_mmio(1), io in any::<bool>(), before in pairs(0..8), (off, len) in (any::<u64>(), 1u64..),
        which in 0u8..3, after in pairs(0..8),
    ) {
        let page = dev.page_size.bytes();
        let mask = page - 1;
        let bump = |v: u64| if v & mask == 0 { v | 1 } else { v };
        let (off, len) = match which {
            0 => (bump(off), len),
            1 => (off & !mask, bump(len)),
            _ => (bump(off), bump(len)),
        };
        let (dev, req, i) = first_loop_case(dev, region, io, &before, DmaRange::new(off, len), &after);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev, policy, Reject::RangeUnaligned { index: i }, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_running_total_overflow_is_einval_at_the_range_that_wraps")`.
    #[test]
    fn prop_running_total_overflow_is_einval_at_the_range_that_wraps(
        (dev, region) in device_with_mmio(1), io in any::<bool>(), big in 0u64..1 << 62, before in pairs(0..6),
        wrap in 0u64..1 << 62, off in any::<u64>(), after in pairs(0..6),
    ) {
        let page = dev.page_size.bytes();
        let mask = page - 1;
        // One range of 2^63 or more first, so that the next big one wraps.
        let first = ((1u64 << 63) + big) & !mask;
        let mut pre = vec![(0u64, 0u64)];
        pre.extend_from_slice(&before);
        let bad = DmaRange::new(off & !mask, ((1u64 << 63) + wrap) & !mask);
        let (dev, mut req, i) = first_loop_case(dev, region, io, &pre, bad, &after);
        req.ranges[0] = DmaRange::new(req.ranges[0].offset, first);
        let before_total: u128 = req.ranges[..i as usize].iter().map(|r| u128::from(r.length)).sum();
        prop_assert!(before_total <= u128::from(u64::MAX) && before_total + u128::from(bad.length) > u128::from(u64::MAX));
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev, policy, Reject::TotalLengthOverflow { index: i }, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_total_with_bit_63_is_einval_after_the_first_loop")`.
    #[test]
    fn prop_total_with_bit_63_is_einval_after_the_first_loop(
        (dev, region) in device_with_mmio(1), io in any::<bool>(), total in 1u64 << 63.., cuts in prop::collection::vec(any::<u64>(), 0..8),
        offs in prop::collection::vec(any::<u64>(), 9),
    ) {
        let page = dev.page_size.bytes();
        let pages = (total & !(page - 1)) / page;
        // Split `pages` into non-empty parts at sorted cut points.
        let mut points: Vec<u64> = cuts.iter().map(|c| 1 + c % (pages - 1)).collect();
        points.sort();
        points.dedup();
        let mut ranges = Vec::new();
        let mut prev = 0;
        for (k, p) in points.iter().copied().chain([pages]).enumerate() {
            ranges.push(DmaRange::new(offs[k] & !(page - 1), (p - prev) * page));
            prev = p;
        }
        let dev = if io { dev.with_bar(region as usize, Bar::io(0xc000, 0x100)) } else { dev };
        let sum: u64 = ranges.iter().map(|r| r.length).sum();
        prop_assert!(sum >> 63 == 1);
        let req = Req::get(region, ranges);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev, policy, Reject::TotalLengthSwiotlbBit, Errno::EINVAL)?;
        }
    }

    /// The claim: `props::claims::claim("prop_io_bar_is_einval_at_every_index_after_the_first_loop")`.
    #[test]
    fn prop_io_bar_is_einval_at_every_index_after_the_first_loop(
        (dev, region) in device_with(|_, s, n| Bar::io(s, n)), rs in pairs(1..17), inside_bar in any::<bool>(),
    ) {
        let page = dev.page_size.bytes();
        let ranges = rs
            .iter()
            .map(|&(a, b)| if inside_bar { DmaRange::new(0, page) } else { loop1_ok(page, a, b) })
            .collect();
        let req = Req::get(region, ranges);
        for policy in [Policy::Linux, Policy::Strict] {
            refuses(&req, &dev, policy, Reject::BarNotMmio, Errno::EINVAL)?;
        }
    }
}

/// Ranges `0..i` inside the MMIO BAR, range `i` = `bad`, then ranges that
/// pass the first loop and lie anywhere (a later bad range must not win).
fn second_loop_case(
    dev: &Device,
    region: u32,
    before: &[(u64, u64)],
    bad: DmaRange,
    after: &[(u64, u64)],
) -> (Req, u32) {
    let page = dev.page_size.bytes();
    let len = dev.bars[region as usize].len;
    let mut ranges: Vec<DmaRange> = before.iter().map(|&(a, b)| inside(page, len, a, b)).collect();
    ranges.push(bad);
    ranges.extend(after.iter().map(|&(a, b)| loop1_ok(page, a, b)));
    (Req::get(region, ranges), before.len() as u32)
}

proptest! {
    #![proptest_config(config())]

    /// The claim: `props::claims::claim("prop_strict_first_range_outside_the_bar_is_einval")`.
    #[test]
    fn prop_strict_first_range_outside_the_bar_is_einval(
        (dev, region) in device_with_mmio(1), before in pairs(0..8), (a, b) in (any::<u64>(), any::<u64>()), after in pairs(0..8),
    ) {
        let page = dev.page_size.bytes();
        let len = dev.bars[region as usize].len;
        // Offset anywhere, length past the BAR's end from it.
        let off = a & !(page - 1) & (SMALL - 1);
        let room = len.saturating_sub(off);
        let length = room + (1 + b % (SMALL / page)) * page;
        let (req, i) = second_loop_case(&dev, region, &before, DmaRange::new(off, length), &after);
        refuses(&req, &dev, Policy::Strict, Reject::StrictRangeOutsideBar { index: i }, Errno::EINVAL)?;
    }

    /// The claim: `props::claims::claim("prop_linux_first_range_past_2_pow_64_is_eoverflow")`.
    #[test]
    fn prop_linux_first_range_past_2_pow_64_is_eoverflow(
        (dev, region) in device_with_mmio(1), before in pairs(0..8), k in 1u64..1 << 20, m in 1u64..1 << 21, after in pairs(0..8),
    ) {
        let page = dev.page_size.bytes();
        let start = dev.bars[region as usize].start;
        let off = 0u64.wrapping_sub(k * page);
        let mut length = m * page;
        if u128::from(start) + u128::from(off) + u128::from(length) <= u128::from(u64::MAX) {
            length = k * page;
        }
        let (req, i) = second_loop_case(&dev, region, &before, DmaRange::new(off, length), &after);
        refuses(&req, &dev, Policy::Linux, Reject::PhysAddrOverflow { index: i }, Errno::EOVERFLOW)?;
    }

    /// The claim: `props::claims::claim("prop_linux_first_range_beyond_the_bar_end_is_einval")`.
    #[test]
    fn prop_linux_first_range_beyond_the_bar_end_is_einval(
        (dev, region) in device_with_mmio(1), before in pairs(0..8), (a, b) in (any::<u64>(), any::<u64>()), after in pairs(0..8),
    ) {
        let page = dev.page_size.bytes();
        let len = dev.bars[region as usize].len;
        let off = a & !(page - 1) & (SMALL - 1);
        let length = len.saturating_sub(off) + (1 + b % (SMALL / page)) * page;
        let (req, i) = second_loop_case(&dev, region, &before, DmaRange::new(off, length), &after);
        refuses(&req, &dev, Policy::Linux, Reject::RangeBeyondBar { index: i }, Errno::EINVAL)?;
    }
}

/// Every `Reject` variant has its restated property above: a new check
/// without one fails here (names from `Reject::ALL`, the properties' list
/// written out).
#[test]
fn every_reject_variant_is_restated() {
    let restated = [
        "ArgszBelowFeatureHeader",
        "UnknownFeatureFlags",
        "GetAndSetWithoutProbe",
        "SetNotSupported",
        "NoGetOrSet",
        "ArgszBelowDmaBufHeader",
        "DmaBufHeaderFault",
        "NoRanges",
        "NonZeroFlags",
        "StrictOpenFlags",
        "StrictTooManyRanges",
        "StrictArgszShort",
        "RegionNotBar",
        "BarAbsent",
        "RangeArrayTooLarge",
        "RangeArrayFault",
        "RangeZeroLength",
        "RangeUnaligned",
        "TotalLengthOverflow",
        "TotalLengthSwiotlbBit",
        "BarNotMmio",
        "StrictRangeOutsideBar",
        "PhysAddrOverflow",
        "RangeBeyondBar",
    ];
    let all: Vec<&str> = Reject::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(all, restated, "the kernel's order as restated here");
}
