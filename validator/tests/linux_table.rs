//! Every check of the Linux policy with its errno, the precedence between
//! them, and the Strict rules, as one table.
//!
//! The errno column comes from measurements of Linux 7.2.13 (the kernel
//! spike's errno table, re-measured by the kernel lab) where one exists; it
//! is written separately from the expected check so that the mapping from
//! check to errno is tested too, not just restated.

use uapi::{Request, RequestBuilder, VFIO_DEVICE_FEATURE_GET as GET, VFIO_DEVICE_FEATURE_PROBE as PROBE};
use uapi::{VFIO_DEVICE_FEATURE_DMA_BUF as DMA_BUF, VFIO_DEVICE_FEATURE_SET as SET};
use validator::{validate, Bar, Device, Errno, Outcome, PageSize, PhysVec, Policy, Reject};
use validator::{O_CLOEXEC, O_NONBLOCK, STRICT_MAX_NR_RANGES};

const P: u64 = 4096;
/// BAR2 of the spike's ivshmem device: 16 MiB.
const BSZ: u64 = 16 << 20;
const BAR2: u64 = 0xfd00_0000;
const M64: u64 = u64::MAX;
const O_RDWR: u32 = 2;

/// The spike's ivshmem device plus an I/O BAR (as pci-testdev has), a BAR
/// ending exactly at 2^64, and a BAR at 4 GiB.
fn device() -> Device {
    Device::ivshmem_example()
        .with_bar(3, Bar::mmio(1 << 32, BSZ))
        .with_bar(4, Bar::io(0xc000, 0x1000))
        .with_bar(5, Bar::mmio(0u64.wrapping_sub(BSZ), BSZ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Fd(u64),
    Probe,
    Other(u16),
    Err(Errno, Reject),
}
use Expect::*;

struct Case {
    name: &'static str,
    req: RequestBuilder,
    /// Readable ranges after the header; `None`: exactly the written ones.
    readable_ranges: Option<u64>,
    /// Readable bytes after the feature header, overriding the above.
    readable_bytes: Option<u64>,
    dev: Device,
    linux: Expect,
    /// Strict's verdict where it differs from Linux's.
    strict: Option<Expect>,
}

fn base() -> RequestBuilder {
    RequestBuilder::new().region_index(2).open_flags(O_RDWR | O_CLOEXEC)
}

fn case(name: &'static str, req: RequestBuilder, linux: Expect) -> Case {
    Case { name, req, readable_ranges: None, readable_bytes: None, dev: device(), linux, strict: None }
}

impl Case {
    fn strict(mut self, e: Expect) -> Self {
        self.strict = Some(e);
        self
    }
    fn readable_ranges(mut self, n: u64) -> Self {
        self.readable_ranges = Some(n);
        self
    }
    fn readable_bytes(mut self, n: u64) -> Self {
        self.readable_bytes = Some(n);
        self
    }
    fn on(mut self, dev: Device) -> Self {
        self.dev = dev;
        self
    }
}

fn e(r: Reject) -> Expect {
    Err(r.errno(), r)
}
const EINVAL: Errno = Errno::EINVAL;
const ENODEV: Errno = Errno::ENODEV;
const ENOMEM: Errno = Errno::ENOMEM;
const EFAULT: Errno = Errno::EFAULT;
const EOVERFLOW: Errno = Errno::EOVERFLOW;

fn table() -> Vec<Case> {
    use Reject::*;
    let many = |n: usize| base().ranges((0..n).map(|_| uapi::DmaRange::new(0, P)));
    vec![
        // vfio_ioctl_device_feature(): common checks.
        case("argsz 0", base().argsz(0).range(0, P), Err(EINVAL, ArgszBelowFeatureHeader)),
        case("argsz 7", base().argsz(7).range(0, P), Err(EINVAL, ArgszBelowFeatureHeader)),
        case(
            "unknown feature flag bit 19",
            base().feature_flags(GET | DMA_BUF | 1 << 19).range(0, P),
            Err(EINVAL, UnknownFeatureFlags),
        ),
        case("GET|SET", base().feature_flags(GET | SET | DMA_BUF).range(0, P), Err(EINVAL, GetAndSetWithoutProbe)),
        case(
            "argsz 7 beats unknown flag",
            base().argsz(7).feature_flags(1 << 31 | DMA_BUF),
            Err(EINVAL, ArgszBelowFeatureHeader),
        ),
        case(
            "unknown flag beats other feature",
            base().feature_flags(1 << 20 | GET | 10),
            Err(EINVAL, UnknownFeatureFlags),
        ),
        case("GET|SET on another feature", base().feature_flags(GET | SET | 10), Err(EINVAL, GetAndSetWithoutProbe)),
        case("other feature is dispatched elsewhere", base().feature_flags(GET | 10).range(1, 1), Other(10)),
        // vfio_check_feature().
        case("PROBE|GET", base().feature_flags(PROBE | GET | DMA_BUF), Probe),
        case("PROBE only", base().feature_flags(PROBE | DMA_BUF), Probe),
        case("PROBE|GET with argsz 8 needs no data", base().argsz(8).feature_flags(PROBE | GET | DMA_BUF), Probe),
        case("PROBE|GET|SET", base().feature_flags(PROBE | GET | SET | DMA_BUF), Err(EINVAL, SetNotSupported)),
        case("PROBE|SET", base().feature_flags(PROBE | SET | DMA_BUF), Err(EINVAL, SetNotSupported)),
        case("SET", base().feature_flags(SET | DMA_BUF).range(0, P), Err(EINVAL, SetNotSupported)),
        case("neither GET nor SET", base().feature_flags(DMA_BUF).range(0, P), Err(EINVAL, NoGetOrSet)),
        case("argsz 8: no dma_buf struct", base().argsz(8).range(0, P), Err(EINVAL, ArgszBelowDmaBufHeader)),
        case("argsz 23", base().argsz(23).range(0, P), Err(EINVAL, ArgszBelowDmaBufHeader)),
        case("argsz 24, one range: argsz is not checked against nr_ranges", base().argsz(24).range(0, P), Fd(P))
            .strict(e(StrictArgszShort)),
        case("argsz 8+16+16-1", base().argsz(39).range(0, P), Fd(P)).strict(e(StrictArgszShort)),
        case("argsz covers 2 ranges, 1 declared", base().argsz(56).range(0, P), Fd(P)),
        case("argsz 0xffffffff", base().argsz(u32::MAX).range(0, P), Fd(P)),
        // The dma-buf header.
        case("header unreadable", base().range(0, P), Err(EFAULT, DmaBufHeaderFault)).readable_bytes(15),
        case("argsz beats unreadable header", base().argsz(23).range(0, P), Err(EINVAL, ArgszBelowDmaBufHeader))
            .readable_bytes(0),
        case("nr_ranges 0", base().nr_ranges(0), Err(EINVAL, NoRanges)),
        case("flags 1", base().flags(1).range(0, P), Err(EINVAL, NonZeroFlags)),
        case("flags 0x80000000", base().flags(1 << 31).range(0, P), Err(EINVAL, NonZeroFlags)),
        case("nr_ranges 0 beats flags", base().flags(1).nr_ranges(0), Err(EINVAL, NoRanges)),
        case("region 6 (ROM)", base().region_index(6).range(0, P), Err(ENODEV, RegionNotBar)),
        case("region 7 (config)", base().region_index(7).range(0, P), Err(ENODEV, RegionNotBar)),
        case("region 0xffffffff", base().region_index(u32::MAX).range(0, P), Err(ENODEV, RegionNotBar)),
        case("absent BAR 1", base().region_index(1).range(0, P), Err(ENODEV, BarAbsent)),
        case("ORDER nr_ranges 0 + region 6", base().region_index(6).nr_ranges(0), Err(EINVAL, NoRanges)),
        case("ORDER flags 1 + region 6", base().region_index(6).flags(1).range(0, P), Err(EINVAL, NonZeroFlags)),
        case(
            "ORDER region 6 + nr_ranges 1<<30",
            base().region_index(6).nr_ranges(1 << 30).range(0, P),
            Err(ENODEV, RegionNotBar),
        )
        .strict(e(StrictTooManyRanges)),
        case("ORDER region 6 + unaligned range", base().region_index(6).range(1, 1), Err(ENODEV, RegionNotBar)),
        case(
            "ORDER region 6 + ranges unreadable",
            base().region_index(6).argsz(32).nr_ranges(1 << 20),
            Err(ENODEV, RegionNotBar),
        )
        .strict(e(StrictTooManyRanges)),
        case("ORDER absent BAR + unaligned range", base().region_index(1).range(1, 1), Err(ENODEV, BarAbsent)),
        case(
            "ORDER absent BAR + nr_ranges 1<<30",
            base().region_index(1).nr_ranges(1 << 30).range(0, P),
            Err(ENODEV, BarAbsent),
        )
        .strict(e(StrictTooManyRanges)),
        case("ORDER absent BAR + flags 1", base().region_index(1).flags(1).range(0, P), Err(EINVAL, NonZeroFlags)),
        // memdup_array_user().
        case("nr_ranges 262145", base().nr_ranges(262_145).range(0, P), Err(ENOMEM, RangeArrayTooLarge))
            .strict(e(StrictTooManyRanges)),
        case("nr_ranges 1<<30", base().nr_ranges(1 << 30).range(0, P), Err(ENOMEM, RangeArrayTooLarge))
            .strict(e(StrictTooManyRanges)),
        case("nr_ranges 0xffffffff", base().nr_ranges(u32::MAX).range(0, P), Err(ENOMEM, RangeArrayTooLarge))
            .strict(e(StrictTooManyRanges)),
        case(
            "nr_ranges 262145 readable: allocation fails before the copy",
            many(262_145).argsz(u32::MAX),
            Err(ENOMEM, RangeArrayTooLarge),
        )
        .strict(e(StrictTooManyRanges)),
        case("nr_ranges 262144 all valid", many(262_144), Fd(262_144 * P)).strict(e(StrictTooManyRanges)),
        case("ranges unreadable", base().nr_ranges(2).range(0, P), Err(EFAULT, RangeArrayFault))
            .strict(e(StrictArgszShort)),
        case("ranges unreadable, exact argsz", base().argsz(56).nr_ranges(2).range(0, P), Err(EFAULT, RangeArrayFault)),
        case("half a range readable", base().range(0, P), Err(EFAULT, RangeArrayFault)).readable_bytes(16 + 8),
        case(
            "readable past the written ranges reads zero",
            base().nr_ranges(2).argsz(56).range(0, P),
            Err(EINVAL, RangeZeroLength { index: 1 }),
        )
        .readable_ranges(2),
        case("nr_ranges 262145 unreadable: ENOMEM first", base().nr_ranges(262_145), Err(ENOMEM, RangeArrayTooLarge))
            .strict(e(StrictTooManyRanges)),
        // validate_dmabuf_input().
        case("zero length", base().range(0, 0), Err(EINVAL, RangeZeroLength { index: 0 })),
        case("zero length in 2nd range", base().range(0, P).range(P, 0), Err(EINVAL, RangeZeroLength { index: 1 })),
        case("unaligned offset 1", base().range(1, P), Err(EINVAL, RangeUnaligned { index: 0 })),
        case("unaligned length P+1", base().range(0, P + 1), Err(EINVAL, RangeUnaligned { index: 0 })),
        case("length 2^63", base().range(0, 1 << 63), Err(EINVAL, TotalLengthSwiotlbBit)),
        case(
            "offset P, length 2^64-P: bit 63 of the total",
            base().range(P, M64 - P + 1),
            Err(EINVAL, TotalLengthSwiotlbBit),
        ),
        case(
            "total overflows: 2 x 2^63",
            base().range(0, 1 << 63).range(0, 1 << 63),
            Err(EINVAL, TotalLengthOverflow { index: 1 }),
        ),
        case(
            "total overflows at the 4th 2^62",
            base().ranges([uapi::DmaRange::new(0, 1 << 62); 4]),
            Err(EINVAL, TotalLengthOverflow { index: 3 }),
        ),
        case(
            "ORDER unaligned 2nd + past-end 1st",
            base().range(BSZ, P).range(1, P),
            Err(EINVAL, RangeUnaligned { index: 1 }),
        ),
        case(
            "ORDER unaligned + overflowing offset, same range",
            base().range(M64 - P + 2, P),
            Err(EINVAL, RangeUnaligned { index: 0 }),
        ),
        case(
            "ORDER zero-len 2nd + overflow 1st",
            base().range(M64 - P + 1, P).range(0, 0),
            Err(EINVAL, RangeZeroLength { index: 1 }),
        ),
        case(
            "ORDER sum 2^63 + past-end",
            base().range(BSZ, 1 << 62).range(BSZ, 1 << 62),
            Err(EINVAL, TotalLengthSwiotlbBit),
        ),
        // pcim_p2pdma_provider(): I/O BAR.
        case("I/O BAR", base().region_index(4).range(0, P), Err(EINVAL, BarNotMmio)),
        case(
            "ORDER I/O BAR + unaligned: the loop comes first",
            base().region_index(4).range(1, P),
            Err(EINVAL, RangeUnaligned { index: 0 }),
        ),
        case(
            "ORDER I/O BAR + overflowing offset",
            base().region_index(4).range(M64 - P + 1, P),
            Err(EINVAL, BarNotMmio),
        ),
        case(
            "ORDER I/O BAR + nr_ranges 1<<30",
            base().region_index(4).nr_ranges(1 << 30).range(0, P),
            Err(ENOMEM, RangeArrayTooLarge),
        )
        .strict(e(StrictTooManyRanges)),
        // vfio_pci_core_fill_phys_vec().
        case("past BAR end", base().range(BSZ, P), Err(EINVAL, RangeBeyondBar { index: 0 }))
            .strict(e(StrictRangeOutsideBar { index: 0 })),
        case("straddling BAR end", base().range(BSZ - P, 2 * P), Err(EINVAL, RangeBeyondBar { index: 0 }))
            .strict(e(StrictRangeOutsideBar { index: 0 })),
        case("length BAR + P", base().range(0, BSZ + P), Err(EINVAL, RangeBeyondBar { index: 0 }))
            .strict(e(StrictRangeOutsideBar { index: 0 })),
        case(
            "BAR0 is 256 bytes: a page does not fit",
            base().region_index(0).range(0, P),
            Err(EINVAL, RangeBeyondBar { index: 0 }),
        )
        .strict(e(StrictRangeOutsideBar { index: 0 })),
        case("offset 2^64-P overflows", base().range(M64 - P + 1, P), Err(EOVERFLOW, PhysAddrOverflow { index: 0 }))
            .strict(e(StrictRangeOutsideBar { index: 0 })),
        case(
            "offset 2^64-P, length 2P overflows",
            base().range(M64 - P + 1, 2 * P),
            Err(EOVERFLOW, PhysAddrOverflow { index: 0 }),
        )
        .strict(e(StrictRangeOutsideBar { index: 0 })),
        case("offset 2^63", base().range(1 << 63, P), Err(EINVAL, RangeBeyondBar { index: 0 }))
            .strict(e(StrictRangeOutsideBar { index: 0 })),
        case(
            "ORDER past-end 1st + overflow 2nd",
            base().range(BSZ, P).range(M64 - P + 1, P),
            Err(EINVAL, RangeBeyondBar { index: 0 }),
        )
        .strict(e(StrictRangeOutsideBar { index: 0 })),
        case(
            "ORDER overflow 1st + past-end 2nd",
            base().range(M64 - P + 1, P).range(BSZ, P),
            Err(EOVERFLOW, PhysAddrOverflow { index: 0 }),
        )
        .strict(e(StrictRangeOutsideBar { index: 0 })),
        case(
            "the errno reveals the BAR address: below 4 GiB, EINVAL",
            base().range(M64 - (1 << 32) + 1, P),
            Err(EINVAL, RangeBeyondBar { index: 0 }),
        )
        .strict(e(StrictRangeOutsideBar { index: 0 })),
        case(
            "the errno reveals the BAR address: at 4 GiB, EOVERFLOW",
            base().region_index(3).range(M64 - (1 << 32) + 1, P),
            Err(EOVERFLOW, PhysAddrOverflow { index: 0 }),
        )
        .strict(e(StrictRangeOutsideBar { index: 0 })),
        case(
            "a BAR ending at 2^64: the kernel's end wraps to 0",
            base().region_index(5).range(0, P),
            Err(EINVAL, RangeBeyondBar { index: 0 }),
        ),
        case(
            "a BAR ending at 2^64: its last page overflows",
            base().region_index(5).range(BSZ - P, P),
            Err(EOVERFLOW, PhysAddrOverflow { index: 0 }),
        ),
        // Success.
        case("one range [0,P)", base().range(0, P), Fd(P)),
        case("whole BAR", base().range(0, BSZ), Fd(BSZ)),
        case("last page", base().range(BSZ - P, P), Fd(P)),
        case("two ranges, reversed", base().range(2 * P, P).range(0, P), Fd(2 * P)),
        case("two identical overlapping ranges", base().range(0, P).range(0, P), Fd(2 * P)),
        case("open_flags O_RDONLY", base().open_flags(0).range(0, P), Fd(P)),
        case("open_flags 0xffffffff are not validated", base().open_flags(u32::MAX).range(0, P), Fd(P))
            .strict(e(StrictOpenFlags)),
        case("open_flags O_WRONLY|O_NONBLOCK", base().open_flags(1 | O_NONBLOCK).range(0, P), Fd(P))
            .strict(e(StrictOpenFlags)),
        case("open_flags access mode 3", base().open_flags(3).range(0, P), Fd(P)).strict(e(StrictOpenFlags)),
        case(
            "ORDER nr_ranges 0 beats Strict open_flags",
            base().open_flags(u32::MAX).nr_ranges(0),
            Err(EINVAL, NoRanges),
        ),
        case(
            "ORDER Strict open_flags before region",
            base().open_flags(u32::MAX).region_index(6).range(0, P),
            Err(ENODEV, RegionNotBar),
        )
        .strict(e(StrictOpenFlags)),
        case("Strict cap: 65536 ranges pass", many(65_536), Fd(65_536 * P)),
        case("Strict cap: 65537 ranges", many(65_537), Fd(65_537 * P)).strict(e(StrictTooManyRanges)),
        // Page sizes.
        case("16 KiB pages: a 4 KiB range is unaligned", base().range(0, P), Err(EINVAL, RangeUnaligned { index: 0 }))
            .on(Device { page_size: PageSize::K16, kmalloc_max: PageSize::K16.default_kmalloc_max(), ..device() }),
        case("16 KiB pages: a 16 KiB range", base().range(16384, 16384), Fd(16384)).on(Device {
            page_size: PageSize::K16,
            kmalloc_max: PageSize::K16.default_kmalloc_max(),
            ..device()
        }),
        case(
            "64 KiB pages: a 4 KiB offset is unaligned",
            base().range(P, 65536),
            Err(EINVAL, RangeUnaligned { index: 0 }),
        )
        .on(Device { page_size: PageSize::K64, kmalloc_max: PageSize::K64.default_kmalloc_max(), ..device() }),
        case(
            "64 KiB pages: 262145 ranges fit kmalloc, the zero-filled one fails",
            base().nr_ranges(262_145).argsz(u32::MAX).range(0, 65536),
            Err(EINVAL, RangeZeroLength { index: 1 }),
        )
        .readable_ranges(262_145)
        .on(Device { page_size: PageSize::K64, kmalloc_max: PageSize::K64.default_kmalloc_max(), ..device() })
        .strict(e(StrictTooManyRanges)),
    ]
}

fn verdict(c: &Case, policy: Policy) -> Expect {
    let bytes = c.req.encode().unwrap();
    let mut req = Request::decode(&bytes).unwrap();
    if let Some(n) = c.readable_ranges {
        req.readable = 16 + 16 * n;
    }
    if let Some(n) = c.readable_bytes {
        req.readable = n;
        req.ranges = req.ranges.prefix((n.saturating_sub(16) / 16) as usize);
    }
    match validate(&req, &c.dev, policy) {
        Ok(Outcome::DmaBuf(x)) => {
            assert_eq!(x.phys_vecs().map(|v| v.len).sum::<u64>(), x.size, "{}: size is the sum of the ranges", c.name);
            Fd(x.size)
        }
        Ok(Outcome::Probe) => Probe,
        Ok(Outcome::OtherFeature { feature }) => Other(feature),
        Result::Err(r) => Err(r.errno(), r),
    }
}

#[test]
fn linux_policy_matches_the_table() {
    let mut bad = vec![];
    for c in table() {
        let got = verdict(&c, Policy::Linux);
        if got != c.linux {
            bad.push(format!("{}: expected {:?}, got {:?}", c.name, c.linux, got));
        }
    }
    assert!(bad.is_empty(), "Linux policy disagrees with the table:\n{}", bad.join("\n"));
}

#[test]
fn strict_policy_matches_the_table() {
    let mut bad = vec![];
    for c in table() {
        let want = c.strict.unwrap_or(c.linux);
        let got = verdict(&c, Policy::Strict);
        if got != want {
            bad.push(format!("{}: expected {:?}, got {:?}", c.name, want, got));
        }
    }
    assert!(bad.is_empty(), "Strict policy disagrees with the table:\n{}", bad.join("\n"));
}

#[test]
fn strict_never_accepts_what_linux_rejects_and_differs_only_by_its_own_rules() {
    for c in table() {
        let (l, s) = (verdict(&c, Policy::Linux), verdict(&c, Policy::Strict));
        if let Err(..) = l {
            assert!(matches!(s, Err(..)), "{}: Linux rejects ({l:?}) but Strict answers {s:?}", c.name);
        }
        if l != s {
            // Where the verdicts differ, Strict's is one of its own rules.
            assert!(matches!(s, Err(_, r) if r.is_strict_only()), "{}: Linux {l:?}, Strict {s:?}", c.name);
        }
    }
}

#[test]
fn every_check_is_exercised_by_the_table() {
    let mut seen: Vec<&str> = vec![];
    for c in table() {
        for p in [Policy::Linux, Policy::Strict] {
            if let Err(_, r) = verdict(&c, p) {
                seen.push(r.name());
            }
        }
    }
    let missing: Vec<_> = Reject::ALL.iter().map(|r| r.name()).filter(|n| !seen.contains(n)).collect();
    assert!(missing.is_empty(), "checks no table row reaches: {missing:?}");
}

#[test]
fn errno_of_each_check_is_the_kernels() {
    // The measured errno for each check (spike table, Linux 7.2.13), and E2BIG
    // for the Strict cap; a change to Reject::errno() must show up here.
    for r in Reject::ALL {
        let want = match r {
            Reject::DmaBufHeaderFault | Reject::RangeArrayFault => EFAULT,
            Reject::RegionNotBar | Reject::BarAbsent => ENODEV,
            Reject::RangeArrayTooLarge => ENOMEM,
            Reject::PhysAddrOverflow { .. } => EOVERFLOW,
            Reject::StrictTooManyRanges => Errno::E2BIG,
            _ => EINVAL,
        };
        assert_eq!(r.errno(), want, "{}", r.name());
    }
}

#[test]
fn accepted_export_carries_physical_ranges_in_request_order() {
    let bytes = base().range(2 * P, P).range(0, 3 * P).encode().unwrap();
    let req = Request::decode(&bytes).unwrap();
    let Ok(Outcome::DmaBuf(x)) = validate(&req, &device(), Policy::Linux) else { panic!("rejected") };
    assert_eq!(x.size, 4 * P);
    assert_eq!(x.nr_ranges(), 2);
    assert_eq!(x.region_index, 2);
    assert_eq!(
        x.phys_vecs().collect::<Vec<_>>(),
        vec![PhysVec { paddr: BAR2 + 2 * P, len: P }, PhysVec { paddr: BAR2, len: 3 * P }]
    );
}

#[test]
fn strict_cap_and_kmalloc_limit_are_what_the_docs_say() {
    assert_eq!(STRICT_MAX_NR_RANGES, 65_536);
    assert_eq!(PageSize::K4.default_kmalloc_max(), 4 << 20);
    assert_eq!(PageSize::K4.default_kmalloc_max() / 16, 262_144);
}
