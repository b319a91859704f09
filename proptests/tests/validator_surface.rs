//! Properties of what the validator says besides which check refuses: that
//! its vectorised fast path decides exactly as the checks one by one, what
//! an export reports, and that the errno and check tables it prints (the
//! CLI's `"check"`, the RFC's semantics table, kernel-lab's diffs) are
//! self-consistent and agree with asm-generic, restated here.

use props::fixtures::{edge_device, edge_values, PAGE_SIZES};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use uapi::{DmaRange, RequestBuilder, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET};
use validator::{validate, validate_exact, Bar, BarKind, Device, Errno, Outcome, PageSize, Policy, Reject, Stage};

/// Cases per property, as for the other properties.
fn config() -> ProptestConfig {
    let cases = ["NR_RANGES_PROPTEST_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(16_384);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/validator_surface.txt"
        )))),
        ..ProptestConfig::default()
    }
}

/// asm-generic's numbers for every errno the workspace names, restated from
/// `include/uapi/asm-generic/errno-base.h` and `errno.h`.
const ASM_GENERIC: [(&str, i32); 21] = [
    ("EPERM", 1),
    ("ENOENT", 2),
    ("EIO", 5),
    ("E2BIG", 7),
    ("EBADF", 9),
    ("EAGAIN", 11),
    ("ENOMEM", 12),
    ("EACCES", 13),
    ("EFAULT", 14),
    ("EBUSY", 16),
    ("EEXIST", 17),
    ("ENODEV", 19),
    ("EINVAL", 22),
    ("EMFILE", 24),
    ("ENOTTY", 25),
    ("ENOSPC", 28),
    ("ENOSYS", 38),
    ("EOVERFLOW", 75),
    ("EOPNOTSUPP", 95),
    ("EADDRINUSE", 98),
    ("ETIMEDOUT", 110),
];

/// The per-range checks, restated: the kernel's loop checks and Strict's
/// BAR-relative bound.
const PER_RANGE: [&str; 6] = [
    "RangeZeroLength",
    "RangeUnaligned",
    "TotalLengthOverflow",
    "StrictRangeOutsideBar",
    "PhysAddrOverflow",
    "RangeBeyondBar",
];

/// A BAR for the fast path's preconditions: the edge device's; an MMIO BAR
/// of any start whose length is near 2^62, 2^63, 2^64 or anything; one of a
/// few pages whose physical end wraps past 2^64 (or does not); and I/O BARs
/// large enough for whole ranges, which the fast path must leave to the
/// exact checks.
fn bar(page: PageSize) -> impl Strategy<Value = Bar> {
    let edge: Vec<Bar> = edge_device(page).bars.to_vec();
    let p = page.bytes();
    prop_oneof![
        3 => prop::sample::select(edge),
        1 => (
            any::<u64>(),
            prop_oneof![Just(1u64 << 62), Just((1u64 << 62) - p), Just(1u64 << 63), Just(!(p - 1)), any::<u64>()],
        )
            .prop_map(|(start, len)| Bar::mmio(start, len)),
        1 => (prop_oneof![Just(0u64), Just(u64::MAX - (1 << 40)), any::<u64>()], 1u64..=(1 << 20))
            .prop_map(move |(start, pages)| Bar::mmio(start, pages * p)),
        1 => (1u64..=(1 << 10), 1u64..=(1 << 10))
            .prop_map(move |(below, pages)| Bar::mmio(0u64.wrapping_sub(below * p), pages * p)),
        1 => (any::<u64>(), 1u64..=(1 << 10)).prop_map(move |(start, pages)| Bar::io(start & !(p - 1), pages * p)),
    ]
}

/// `n` ranges inside a `bar_len`-byte BAR, page-aligned, then at most two of
/// them replaced by edge values: most requests pass every per-range check
/// (the fast path's domain), the others fail one. Sometimes instead every
/// field is made only of the bits the fast path tests (the page offset and
/// bits 62 and 63), where its proof is at its edge.
fn ranges(page: u64, bar_len: u64, n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<DmaRange>> {
    let pages = (bar_len / page).max(1);
    let inside = (0..pages, 1..=pages).prop_map(move |(o, l)| DmaRange::new(o * page, l.min(pages - o).max(1) * page));
    let edges = edge_values(page, bar_len);
    // Fields made only of the bits the fast path tests. The first kind keeps
    // each range's end inside a BAR of two pages or more, or wrapped past
    // 2^63 beyond it, so that only the bit test can refuse them.
    let tested_bits = {
        let high = [0, 1 << 62, 1 << 63, 3 << 62];
        let low = [0, 1, page - 1];
        let any_field: Vec<u64> = high.iter().flat_map(|h| low.iter().map(move |l| h | l)).collect();
        let offsets: Vec<u64> = [0, 3 << 62].iter().flat_map(|h| low.iter().map(move |l| h | l)).collect();
        prop_oneof![
            3 => (prop::sample::select(offsets), prop::sample::select(vec![1, page - 1])),
            1 => (prop::sample::select(any_field.clone()), prop::sample::select(any_field)),
        ]
        .prop_map(|(o, l)| DmaRange::new(o, l))
    };
    prop_oneof![
        6 => (
            prop::collection::vec(inside, n.clone()),
            prop::collection::vec(
                (any::<prop::sample::Index>(), prop::sample::select(edges.clone()), prop::sample::select(edges)),
                0..=2,
            ),
        )
            .prop_map(|(mut v, bad)| {
                for (i, o, l) in bad {
                    if !v.is_empty() {
                        let k = i.index(v.len());
                        v[k] = DmaRange::new(o, l);
                    }
                }
                v
            }),
        1 => prop::collection::vec(tested_bits, n),
    ]
}

/// A device with `bar` at region 0, a request of `ranges` on it, and
/// sometimes fewer ranges written than announced.
fn request() -> impl Strategy<Value = (Device, Vec<DmaRange>, u32)> {
    prop::sample::select(PAGE_SIZES.to_vec()).prop_flat_map(|page| (Just(page), bar(page))).prop_flat_map(
        |(page, bar)| {
            let len = bar.len.max(page.bytes());
            (Just(Device::new(page).with_bar(0, bar)), ranges(page.bytes(), len, 0..40), 0u32..3)
        },
    )
}

fn build(ranges: &[DmaRange], unwritten: u32) -> uapi::OwnedRequest {
    let nr = ranges.len() as u32 + unwritten;
    RequestBuilder::new()
        .feature_flags(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF)
        .argsz(8 + 16 + 16 * nr)
        .open_flags(0o2_000_002)
        .nr_ranges(nr)
        .ranges(ranges.iter().copied())
        .readable_ranges(u64::from(nr))
        .build()
        .expect("forty ranges always encode")
}

proptest! {
    #![proptest_config(config())]

    /// The claim: `props::claims::claim("prop_fast_path_gives_the_verdict_of_the_checks_one_by_one")`.
    #[test]
    fn prop_fast_path_gives_the_verdict_of_the_checks_one_by_one((dev, ranges, unwritten) in request()) {
        let owned = build(&ranges, unwritten);
        let req = owned.request();
        for policy in [Policy::Linux, Policy::Strict] {
            prop_assert_eq!(validate(&req, &dev, policy), validate_exact(&req, &dev, policy), "{:?}", policy);
        }
    }

    /// The claim: `props::claims::claim("prop_export_is_the_ranges_at_the_bar_start")`.
    #[test]
    fn prop_export_is_the_ranges_at_the_bar_start((dev, ranges, _) in request()) {
        let owned = build(&ranges, 0);
        if let Ok(Outcome::DmaBuf(e)) = validate(&owned.request(), &dev, Policy::Linux) {
            let bar = dev.bars[0];
            prop_assert_eq!(e.nr_ranges(), ranges.len());
            prop_assert_eq!(e.region_index, 0);
            prop_assert_eq!(e.open_flags, 0o2_000_002);
            prop_assert_eq!(e.size, ranges.iter().map(|r| r.length).sum::<u64>());
            let phys: Vec<_> = e.phys_vecs().map(|v| (v.paddr, v.len)).collect();
            let want: Vec<_> = ranges.iter().map(|r| (bar.start + r.offset, r.length)).collect();
            prop_assert_eq!(phys, want);
        }
    }

    /// The claim: `props::claims::claim("prop_errno_numbers_and_names_are_asm_generic")`.
    #[test]
    fn prop_errno_numbers_and_names_are_asm_generic(code in prop_oneof![0i32..128, any::<i32>()], name in "E[A-Z0-9]{1,10}") {
        prop_assert_eq!(ASM_GENERIC.len(), Errno::ALL.len());
        for (n, c) in ASM_GENERIC {
            let e = Errno::from_name(n);
            prop_assert!(e.is_some(), "{} is not named", n);
            let e = e.expect("checked");
            prop_assert_eq!((e.code(), e.name(), e.to_string()), (c, n, n.to_string()));
            prop_assert_eq!(Errno::from_code(c), Some(e));
        }
        let by_code = Errno::ALL.iter().find(|e| e.code() == code).copied();
        prop_assert_eq!(Errno::from_code(code), by_code);
        let by_name = Errno::ALL.iter().find(|e| e.name() == name).copied();
        prop_assert_eq!(Errno::from_name(&name), by_name);
    }

    /// The claim: `props::claims::claim("prop_check_prints_errno_name_range_and_function")`.
    #[test]
    fn prop_check_prints_errno_name_range_and_function(which in 0..Reject::ALL.len(), index in any::<u32>()) {
        let r = with_index(Reject::ALL[which], index);
        let per_range = PER_RANGE.contains(&r.name());
        prop_assert_eq!(r.range_index(), per_range.then_some(index));
        let want = if per_range {
            format!("{} ({}, range {}): {}", r.errno().name(), r.name(), index, r.kernel_function())
        } else {
            format!("{} ({}): {}", r.errno().name(), r.name(), r.kernel_function())
        };
        prop_assert_eq!(r.to_string(), want);
        let debug = format!("{:?}", r);
        prop_assert!(debug.starts_with(r.name()), "{}", debug);
        if r.is_strict_only() {
            prop_assert_eq!(r.kernel_function(), "nr-ranges Strict policy");
        } else {
            prop_assert!(r.kernel_function().starts_with(r.stage().function()), "{}", r.name());
        }
        prop_assert!(r.doc().contains(r.errno().name()) && !r.summary().is_empty());
    }
}

/// `r` with its range index set to `index` (unchanged for other checks).
fn with_index(r: Reject, index: u32) -> Reject {
    match r {
        Reject::RangeZeroLength { .. } => Reject::RangeZeroLength { index },
        Reject::RangeUnaligned { .. } => Reject::RangeUnaligned { index },
        Reject::TotalLengthOverflow { .. } => Reject::TotalLengthOverflow { index },
        Reject::StrictRangeOutsideBar { .. } => Reject::StrictRangeOutsideBar { index },
        Reject::PhysAddrOverflow { .. } => Reject::PhysAddrOverflow { index },
        Reject::RangeBeyondBar { .. } => Reject::RangeBeyondBar { index },
        other => other,
    }
}

/// The stages print as the README's check list has them: each its own name,
/// a title naming its kernel function (Strict's say Strict), and the two
/// notes the list carries: the copy ignores argsz, and which of two errnos a
/// bad range gets depends on the BAR's physical address.
#[test]
fn stages_name_their_kernel_functions_and_carry_the_two_notes() {
    for s in Stage::ALL {
        assert_eq!(format!("{s:?}"), s.name());
        if s == Stage::StrictHeader {
            assert!(s.title().starts_with("Strict") && s.function().contains("Strict"));
        } else {
            assert!(s.title().contains(s.function()), "{}: {}", s.name(), s.title());
        }
        match s {
            Stage::RangeCopy => assert!(s.note().contains("whatever argsz says"), "{}", s.note()),
            Stage::FillPhysVec => assert!(s.note().contains("physical address"), "{}", s.note()),
            _ => assert_eq!(s.note(), "", "{}", s.name()),
        }
    }
}

/// The device model: the three page sizes and nothing else, their default
/// `KMALLOC_MAX_SIZE` (`PAGE_SIZE << MAX_PAGE_ORDER`, 10, 11 and 13), a
/// default device of 4 KiB pages with no BAR, `with_bar` setting one BAR of
/// six and ignoring an index past them, and the kernel spike's ivshmem
/// device exporting its 16 MiB BAR2 but no page of its 256-byte BAR0.
#[test]
fn device_model_is_the_kernels() {
    for (bytes, order) in [(4096u64, 10), (16384, 11), (65536, 13)] {
        let p = PageSize::from_bytes(bytes).expect("a supported page size");
        assert_eq!((p.bytes(), p.default_kmalloc_max()), (bytes, bytes << order));
    }
    for bytes in [0, 1, 4095, 4097, 8192, 32768, 1 << 21, u64::MAX] {
        assert_eq!(PageSize::from_bytes(bytes), None, "{bytes}");
    }
    let d = Device::default();
    assert_eq!((d.page_size, d.kmalloc_max), (PageSize::K4, 4 << 20));
    assert!(d.bars.iter().all(|b| b.is_absent() && b.kind == BarKind::Absent));
    for i in 0..8 {
        let bar = Bar::io(0x1000 * i as u64, 0x100);
        let got = Device::default().with_bar(i, bar);
        for (j, b) in got.bars.iter().enumerate() {
            assert_eq!(*b == bar, i == j, "with_bar({i}) at {j}");
        }
    }
    assert!(Bar::mmio(0x1000, 0).is_absent() && !Bar::mmio(0x1000, 1).is_absent());
    let ivshmem = Device::ivshmem_example();
    let export = |region: u32, length: u64| {
        let r = build_on(region, &[DmaRange::new(0, length)]);
        validate(&r.request(), &ivshmem, Policy::Strict).map(|o| matches!(o, Outcome::DmaBuf(e) if e.size == length))
    };
    assert_eq!(export(2, 16 << 20), Ok(true));
    assert_eq!(export(0, 4096), Err(Reject::StrictRangeOutsideBar { index: 0 }));
    assert_eq!(ivshmem.bars[0], Bar::mmio(0xfe80_0000, 0x100));
    assert!([1, 3, 4, 5].iter().all(|&i| ivshmem.bars[i].is_absent()));
}

fn build_on(region: u32, ranges: &[DmaRange]) -> uapi::OwnedRequest {
    props::well_formed(region, 0o2_000_002, ranges)
}
