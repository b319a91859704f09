//! What Linux answers to `VFIO_DEVICE_FEATURE(DMA_BUF)`, as a pure function.
//!
//! [`validate`] takes a decoded request ([`uapi::Request`]) and a device
//! description ([`Device`]) and returns the kernel's verdict: the dma-buf it
//! would create, a probe success, or the first check that refuses the request
//! ([`Reject`], carrying the kernel's errno). It is `no_std`, allocates
//! nothing, and never panics.
//!
//! Each check is defined once, as a row of the table in `src/reject.rs`
//! (variant, errno, policy, [`Stage`], kernel function, summary, doc), from
//! which [`Reject`] and its accessors are generated; [`validate`] decides
//! which check fails. Changing a check's errno or wording is one row there
//! (plus the independent expectation in `tests/linux_table.rs`); the README's
//! check list and `docs/cli-formats.md` are regenerated from it.
//!
//! Two policies:
//! - [`Policy::Linux`] is Linux 7.2 exactly: the same checks, the same errno,
//!   the same precedence. The check sequence follows
//!   `vfio_ioctl_device_feature()` (drivers/vfio/vfio_main.c),
//!   `vfio_check_feature()` (include/linux/vfio.h),
//!   `vfio_pci_core_feature_dma_buf()`, `validate_dmabuf_input()` and
//!   `vfio_pci_core_fill_phys_vec()` (drivers/vfio/pci/vfio_pci_dmabuf.c), and
//!   where the source and a measurement of the real kernel disagree, the
//!   measurement wins (the absent-BAR check).
//! - [`Policy::Strict`] is what nr-ranges proposes the UAPI should check in
//!   addition. It makes every Linux check, so it never accepts what Linux
//!   rejects; its own rules are the `Strict*` variants of [`Reject`], each
//!   documented with its rationale on [`Policy::Strict`].
#![no_std]
// "Never panics" is the validator's promise (the kernel lab and the fuzzers
// feed it hostile input by the million): the compiler holds it to that.
// Unit tests may panic, as tests do.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used,
        clippy::panic,
        reason = "the validator promises never to panic, whatever the request and the device"
    )
)]

mod device;
mod errno;
mod reject;

pub use device::{Bar, BarKind, Device, PageSize};
pub use errno::Errno;
pub use reject::{Reject, Stage};

use uapi::{
    DmaRange, RangeList, Request, DMA_BUF_HEADER_SIZE, DMA_RANGE_SIZE, FEATURE_HEADER_SIZE,
    VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_KNOWN_FLAGS, VFIO_DEVICE_FEATURE_MASK,
    VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET, VFIO_PCI_ROM_REGION_INDEX,
};

/// `DMA_IOVA_USE_SWIOTLB`: bit 63 of a dma-iova size is a flag, so a total
/// length with it set is refused by `validate_dmabuf_input()`.
pub const DMA_IOVA_USE_SWIOTLB: u64 = 1 << 63;

/// The Strict policy's cap on `nr_ranges`.
///
/// 65,536 ranges (a 1 MiB range array) cover the worst case that motivates
/// multi-range export with room to spare: an 8K (7680x4320, 32 bpp)
/// framebuffer of 132.7 MB scattered over 4 KiB VRAM chunks needs 32,400
/// ranges. A fixed, documented cap answers E2BIG the same way on every
/// kernel configuration, where Linux's limit is whatever `KMALLOC_MAX_SIZE`
/// happens to be (4 MiB with 4 KiB pages, 512 MiB with arm64's 64 KiB pages:
/// 33.5 million ranges and a 512 MiB kernel allocation on user request).
pub const STRICT_MAX_NR_RANGES: u32 = 65_536;

/// Linux `O_ACCMODE`.
pub const O_ACCMODE: u32 = 0o3;
/// Linux `O_CLOEXEC` (x86-64 and asm-generic).
pub const O_CLOEXEC: u32 = 0o2_000_000;
/// Linux `O_NONBLOCK` (x86-64 and asm-generic).
pub const O_NONBLOCK: u32 = 0o4_000;

/// One rule the Strict policy adds to Linux's checks, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrictRule {
    /// The check that makes it.
    pub check: Reject,
    /// What it requires, in a few words.
    pub title: &'static str,
    /// Its rationale (rustdoc markdown).
    pub why: &'static str,
}

/// The Strict rules defined once: [`STRICT_RULES`] and [`Policy::Strict`]'s
/// documentation are generated from the same rows, so the RFC (which reads
/// the table) and the docs cannot drift.
macro_rules! strict_rules {
    ($( $n:literal $title:literal $why:literal => $check:expr ;)+) => {
        /// The Strict policy's rules in order, each with its rationale.
        pub const STRICT_RULES: [StrictRule; 0 $(+ strict_rules!(@one $n))+] = [
            $( StrictRule { check: $check, title: $title, why: $why }, )+
        ];

        /// Which rules to apply.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum Policy {
            /// Linux 7.2 as it is.
            #[default]
            Linux,
            /// Linux plus the checks nr-ranges proposes. Each rule, and why:
            ///
            $( #[doc = concat!($n, ". **", $title, "** ", $why)] )+
            Strict,
        }
    };
    (@one $n:literal) => { 1 };
}

strict_rules! {
    1 "argsz covers the ranges"
        "([`Reject::StrictArgszShort`]): Linux copies `nr_ranges` ranges whatever `argsz` says, so `argsz`, \
         the one field VFIO defines for telling the kernel how large the argument is, is dead for this feature; \
         a user who under-allocates gets whatever lies past their buffer read as ranges. Every other VFIO ioctl \
         with a trailing array honours argsz."
        => Reject::StrictArgszShort;
    2 "open_flags are an access mode plus `O_CLOEXEC`"
        "([`Reject::StrictOpenFlags`]): Linux passes any 32-bit value to `dma_buf_fd()`/`dma_buf_export()` and \
         silently drops what it does not understand (`0xffffffff` is accepted, measured), which freezes every bit \
         against later use. `O_NONBLOCK` is refused too: a dma-buf has no read or write to block in, and fences \
         are waited for with poll, which ignores it. The access mode 3 is not a mode."
        => Reject::StrictOpenFlags;
    3 "an explicit cap on nr_ranges"
        "([`Reject::StrictTooManyRanges`], E2BIG above [`STRICT_MAX_NR_RANGES`]): Linux's limit is an allocator \
         accident (ENOMEM above `KMALLOC_MAX_SIZE`), different per page size and indistinguishable from real \
         memory pressure."
        => Reject::StrictTooManyRanges;
    4 "bounds relative to the BAR"
        "([`Reject::StrictRangeOutsideBar`]): Linux adds the offset to the BAR's physical address and answers \
         EOVERFLOW or EINVAL depending on that address, so the errno of a bad range depends on, and reveals, \
         where the BAR sits in physical memory. Checking `offset + length <= bar_len` (without overflow) gives \
         EINVAL for every out-of-bounds range on every machine."
        => Reject::StrictRangeOutsideBar { index: 0 };
}

/// `struct dma_buf_phys_vec { phys_addr_t paddr; size_t len; }`: one
/// physical range of the exported dma-buf, as `vfio_pci_core_fill_phys_vec()`
/// fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PhysVec {
    /// Physical (CPU) address: BAR start + range offset.
    pub paddr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// What an accepted DMA_BUF GET creates: the `struct vfio_pci_dma_buf` the
/// kernel fills in before `dma_buf_export()`.
///
/// # Invariants
/// `size` is the sum of the ranges' lengths and has bit 63 clear; every
/// range is non-empty, page-aligned and lies within the BAR; `ranges` holds
/// exactly `nr_ranges` ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export<'a> {
    /// The BAR the dma-buf exports from.
    pub region_index: u32,
    /// `open_flags` as the user passed them (Linux does not check them).
    pub open_flags: u32,
    /// The dma-buf's size (`vfio_pci_dma_buf.size`, what `lseek(fd, 0,
    /// SEEK_END)` answers).
    pub size: u64,
    /// The BAR's physical start, to turn ranges into [`PhysVec`]s.
    pub bar_start: u64,
    /// The requested ranges, in request order.
    pub ranges: RangeList<'a>,
}

impl<'a> Export<'a> {
    /// The physical vectors the kernel stores (`priv->phys_vec`), in request
    /// order.
    pub fn phys_vecs(&self) -> impl ExactSizeIterator<Item = PhysVec> + 'a {
        let start = self.bar_start;
        self.ranges.iter().map(move |r| PhysVec { paddr: start.wrapping_add(r.offset), len: r.length })
    }

    /// How many ranges the dma-buf has (`priv->nr_ranges`).
    pub fn nr_ranges(&self) -> usize {
        self.ranges.len()
    }
}

/// The kernel's answer to a request the checks let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// `VFIO_DEVICE_FEATURE_PROBE`: the feature is supported; the ioctl
    /// returns 0 and creates nothing.
    Probe,
    /// A dma-buf fd is returned.
    DmaBuf(Export<'a>),
    /// The feature index is not DMA_BUF: `vfio_ioctl_device_feature()`
    /// dispatches it elsewhere, outside this model. Only the vfio core's
    /// common checks were made.
    OtherFeature {
        /// The feature index (`flags & VFIO_DEVICE_FEATURE_MASK`).
        feature: u16,
    },
}

/// The verdict: what the ioctl returns for a request on a device.
pub type Verdict<'a> = Result<Outcome<'a>, Reject>;

/// Decides `VFIO_DEVICE_FEATURE` for `req` on `dev` under `policy`.
///
/// Runs in one pass over the ranges (two when a range fails), allocation-free,
/// and never panics.
pub fn validate<'a>(req: &Request<'a>, dev: &Device, policy: Policy) -> Verdict<'a> {
    validate_impl(req, dev, policy, true)
}

/// [`validate`] without its branch-free fast path: the checks one by one, as
/// the kernel makes them. Always gives the same verdict as [`validate`]; it
/// exists so that tests can prove that.
#[doc(hidden)]
pub fn validate_exact<'a>(req: &Request<'a>, dev: &Device, policy: Policy) -> Verdict<'a> {
    validate_impl(req, dev, policy, false)
}

#[inline(always)]
fn validate_impl<'a>(req: &Request<'a>, dev: &Device, policy: Policy, fast_path: bool) -> Verdict<'a> {
    let strict = policy == Policy::Strict;
    let flags = req.feature.flags;

    // vfio_ioctl_device_feature(): checks common to every feature.
    if (req.feature.argsz as usize) < FEATURE_HEADER_SIZE {
        return Err(Reject::ArgszBelowFeatureHeader);
    }
    if flags & !VFIO_DEVICE_FEATURE_KNOWN_FLAGS != 0 {
        return Err(Reject::UnknownFeatureFlags);
    }
    let get = flags & VFIO_DEVICE_FEATURE_GET != 0;
    let set = flags & VFIO_DEVICE_FEATURE_SET != 0;
    let probe = flags & VFIO_DEVICE_FEATURE_PROBE != 0;
    if !probe && get && set {
        return Err(Reject::GetAndSetWithoutProbe);
    }
    let feature = flags & VFIO_DEVICE_FEATURE_MASK;
    if feature != VFIO_DEVICE_FEATURE_DMA_BUF {
        return Ok(Outcome::OtherFeature { feature: feature as u16 });
    }

    // vfio_check_feature(flags, argsz - 8, VFIO_DEVICE_FEATURE_GET, 16).
    if set {
        return Err(Reject::SetNotSupported);
    }
    if probe {
        return Ok(Outcome::Probe);
    }
    if !get {
        return Err(Reject::NoGetOrSet);
    }
    // argsz >= 8 was checked first: the subtraction cannot wrap.
    let data_argsz = u64::from(req.feature.argsz).wrapping_sub(FEATURE_HEADER_SIZE as u64);
    if data_argsz < DMA_BUF_HEADER_SIZE as u64 {
        return Err(Reject::ArgszBelowDmaBufHeader);
    }

    // vfio_pci_core_feature_dma_buf(): the header.
    if req.readable < DMA_BUF_HEADER_SIZE as u64 {
        return Err(Reject::DmaBufHeaderFault);
    }
    let hdr = req.dma_buf;
    if hdr.nr_ranges == 0 {
        return Err(Reject::NoRanges);
    }
    if hdr.flags != 0 {
        return Err(Reject::NonZeroFlags);
    }
    // The range array's size, and with the header before it: nr_ranges <
    // 2^32, so both are below 2^37 and cannot wrap.
    let array_bytes = u64::from(hdr.nr_ranges).wrapping_mul(DMA_RANGE_SIZE as u64);
    let header_and_array = (DMA_BUF_HEADER_SIZE as u64).wrapping_add(array_bytes);
    if strict {
        let accmode = hdr.open_flags & O_ACCMODE;
        if hdr.open_flags & !(O_ACCMODE | O_CLOEXEC) != 0 || accmode == O_ACCMODE {
            return Err(Reject::StrictOpenFlags);
        }
        if hdr.nr_ranges > STRICT_MAX_NR_RANGES {
            return Err(Reject::StrictTooManyRanges);
        }
        if data_argsz < header_and_array {
            return Err(Reject::StrictArgszShort);
        }
    }
    if hdr.region_index >= VFIO_PCI_ROM_REGION_INDEX {
        return Err(Reject::RegionNotBar);
    }
    // Regions 0..=5 are the six BARs, so the lookup cannot miss.
    let Some(&bar) = dev.bars.get(hdr.region_index as usize) else {
        return Err(Reject::RegionNotBar);
    };
    if bar.is_absent() {
        return Err(Reject::BarAbsent);
    }

    // memdup_array_user(): allocate, then copy.
    if array_bytes > dev.kmalloc_max {
        return Err(Reject::RangeArrayTooLarge);
    }
    if req.readable < header_and_array {
        return Err(Reject::RangeArrayFault);
    }

    // validate_dmabuf_input() and vfio_pci_core_fill_phys_vec() are two loops
    // in the kernel; the first failure of the first loop wins, then the BAR
    // kind, then the first failure of the second loop. One pass computes the
    // same answer: return at the first failure of the first loop's checks,
    // and only remember the first failure of the second loop's.
    let nr = hdr.nr_ranges as usize;
    let written = req.ranges.prefix(nr);
    // Page sizes are 4 KiB or more: no wrap.
    let page_mask = dev.page_size.bytes().wrapping_sub(1);
    // Most requests pass every per-range check: one branch-free pass that the
    // compiler vectorises proves that, and only when it cannot do the exact
    // checks below run, to find which check fails first. (It also declines
    // what it cannot prove, such as BARs of 2^62 bytes or more.)
    if fast_path && nr >= FAST_PATH_MIN_RANGES && written.len() == nr && bar.kind == BarKind::Mmio {
        if let Some(total) = all_ranges_pass(written, page_mask, &bar) {
            return Ok(Outcome::DmaBuf(Export {
                region_index: hdr.region_index,
                open_flags: hdr.open_flags,
                size: total,
                bar_start: bar.start,
                ranges: written,
            }));
        }
    }
    // The kernel computes the BAR's end without an overflow check.
    let max_addr = bar.start.wrapping_add(bar.len);
    let mut total: u64 = 0;
    let mut bound: Option<Reject> = None;
    for (i, r) in written.iter().enumerate() {
        let index = i as u32;
        if r.length == 0 {
            return Err(Reject::RangeZeroLength { index });
        }
        if (r.offset | r.length) & page_mask != 0 {
            return Err(Reject::RangeUnaligned { index });
        }
        total = match total.checked_add(r.length) {
            Some(t) => t,
            None => return Err(Reject::TotalLengthOverflow { index }),
        };
        if bound.is_none() {
            bound = bound_check(&r, index, &bar, max_addr, strict);
        }
    }
    if written.len() < nr {
        // Readable (checked above) but never written: reads as zero.
        return Err(Reject::RangeZeroLength { index: written.len() as u32 });
    }
    if total & DMA_IOVA_USE_SWIOTLB != 0 {
        return Err(Reject::TotalLengthSwiotlbBit);
    }
    if bar.kind != BarKind::Mmio {
        return Err(Reject::BarNotMmio);
    }
    if let Some(e) = bound {
        return Err(e);
    }
    Ok(Outcome::DmaBuf(Export {
        region_index: hdr.region_index,
        open_flags: hdr.open_flags,
        size: total,
        bar_start: bar.start,
        ranges: written,
    }))
}

/// Below this many ranges the exact checks alone are as fast as the fast
/// path's set-up.
const FAST_PATH_MIN_RANGES: usize = 8;

/// Whether every range passes every per-range check of both policies and the
/// total has bit 63 clear: if so, the total length. `None` when a check
/// fails, and also outside the preconditions of the proof (a BAR of 2^62
/// bytes or more, one whose physical end overflows, or `nr_ranges * bar.len
/// >= 2^64`); the caller then runs the exact checks.
///
/// Branch-free, so that the compiler vectorises it. Why it is exact:
/// - `bits` has no bit of `page_mask | 3 << 62` set iff every offset and
///   length is page-aligned and below 2^62; then `end = offset + length`
///   cannot wrap and is below 2^63.
/// - bit 63 of `length - 1` is set iff `length == 0` (lengths are < 2^62);
///   bit 63 of `bar.len - end` is set iff `end > bar.len` (both < 2^63).
/// - `end <= bar.len` is the Strict check and, as `bar.start + bar.len`
///   does not overflow, gives `bar.start + offset + length <= max_addr`
///   without overflow: no `PhysAddrOverflow`, no `RangeBeyondBar`.
/// - Every length is at most `bar.len`, so the true total is at most
///   `nr_ranges * bar.len < 2^64`: the wrapping sum is exact, the running
///   total never overflowed, and bit 63 (`DMA_IOVA_USE_SWIOTLB`) is tested
///   on the true total.
#[inline]
fn all_ranges_pass(ranges: RangeList<'_>, page_mask: u64, bar: &Bar) -> Option<u64> {
    const HIGH_BITS: u64 = 3 << 62;
    // Two factors below 2^64 multiply to below 2^128: no wrap.
    let total_fits = (ranges.len() as u128).wrapping_mul(u128::from(bar.len)) <= u128::from(u64::MAX);
    if bar.len & HIGH_BITS != 0 || bar.start.checked_add(bar.len).is_none() || !total_fits {
        return None;
    }
    let (mut bits, mut neg, mut total) = (0u64, 0u64, 0u64);
    // Wrapping on purpose, and branch-free: a wrapped `end`, `length - 1` or
    // `bar.len - end` only happens for a range that fails, and `bits` or
    // `neg` then says so (see the proof above); `total` is exact by the
    // `total_fits` precondition.
    for r in ranges.iter() {
        let end = r.offset.wrapping_add(r.length);
        bits |= r.offset | r.length;
        neg |= r.length.wrapping_sub(1) | bar.len.wrapping_sub(end);
        total = total.wrapping_add(r.length);
    }
    if bits & (page_mask | HIGH_BITS) != 0 || (neg | total) & DMA_IOVA_USE_SWIOTLB != 0 {
        return None;
    }
    Some(total)
}

/// The per-range bounds checks of `vfio_pci_core_fill_phys_vec()`, preceded
/// under Strict by the BAR-relative check.
#[inline(always)]
fn bound_check(r: &DmaRange, index: u32, bar: &Bar, max_addr: u64, strict: bool) -> Option<Reject> {
    // `offset <= bar.len` is tested first: the subtraction cannot wrap.
    if strict && (r.offset > bar.len || r.length > bar.len.wrapping_sub(r.offset)) {
        return Some(Reject::StrictRangeOutsideBar { index });
    }
    let end = bar.start.checked_add(r.offset).and_then(|p| p.checked_add(r.length));
    match end {
        None => Some(Reject::PhysAddrOverflow { index }),
        Some(end) if end > max_addr => Some(Reject::RangeBeyondBar { index }),
        Some(_) => None,
    }
}
