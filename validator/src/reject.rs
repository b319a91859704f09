//! Why a request is refused: one variant per check, in the kernel's order.

use crate::Errno;

/// A refused request: which check refused it. Variants are listed in the
/// order the checks run; the first failing check decides.
///
/// Variants named `Strict*` exist only under [`crate::Policy::Strict`]; all
/// others are Linux 7.2's own checks and are made by both policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// `vfio_ioctl_device_feature()`: `argsz` smaller than `struct
    /// vfio_device_feature` (8 bytes). EINVAL.
    ArgszBelowFeatureHeader,
    /// `vfio_ioctl_device_feature()`: a flag bit outside `MASK | GET | SET |
    /// PROBE`. EINVAL.
    UnknownFeatureFlags,
    /// `vfio_ioctl_device_feature()`: GET and SET together without PROBE.
    /// EINVAL.
    GetAndSetWithoutProbe,
    /// `vfio_check_feature()` called by `vfio_pci_core_feature_dma_buf()`
    /// with GET as the only supported operation: SET asked for. EINVAL.
    SetNotSupported,
    /// `vfio_check_feature()`: neither GET nor SET, and no PROBE. EINVAL.
    NoGetOrSet,
    /// `vfio_check_feature()`: `argsz - 8` smaller than `struct
    /// vfio_device_feature_dma_buf` (16 bytes). EINVAL.
    ArgszBelowDmaBufHeader,
    /// `vfio_pci_core_feature_dma_buf()`: `copy_from_user()` of the 16-byte
    /// dma-buf header faulted. EFAULT.
    DmaBufHeaderFault,
    /// `vfio_pci_core_feature_dma_buf()`: `nr_ranges == 0`. EINVAL.
    NoRanges,
    /// `vfio_pci_core_feature_dma_buf()`: `flags != 0` (same `if` as
    /// [`Reject::NoRanges`], which is tested first). EINVAL.
    NonZeroFlags,
    /// Strict: `open_flags` has a bit other than an access mode and
    /// `O_CLOEXEC`, or the access mode is the invalid value 3. EINVAL.
    StrictOpenFlags,
    /// Strict: `nr_ranges` above [`crate::STRICT_MAX_NR_RANGES`]. E2BIG.
    StrictTooManyRanges,
    /// Strict: `argsz` does not cover the `nr_ranges` ranges it announces.
    /// EINVAL.
    StrictArgszShort,
    /// `vfio_pci_core_feature_dma_buf()`: `region_index >=
    /// VFIO_PCI_ROM_REGION_INDEX` (ROM, config, VGA and device-specific
    /// regions are not BARs). ENODEV.
    RegionNotBar,
    /// The BAR is not implemented (length 0). Measured on Linux 7.2.13 to
    /// answer ENODEV right after the region-index check, before the range
    /// array is copied: before ENOMEM, EFAULT and every range check.
    BarAbsent,
    /// `memdup_array_user()`: `nr_ranges * 16` exceeds `KMALLOC_MAX_SIZE`, so
    /// kmalloc fails whatever memory is free. ENOMEM. (argsz is not consulted:
    /// the array is copied as `nr_ranges` ranges whatever argsz says.)
    RangeArrayTooLarge,
    /// `memdup_array_user()`: `copy_from_user()` of the range array faulted.
    /// EFAULT.
    RangeArrayFault,
    /// `validate_dmabuf_input()`: range `index` has length 0. EINVAL.
    RangeZeroLength {
        /// The first range that failed.
        index: u32,
    },
    /// `validate_dmabuf_input()`: range `index` has an offset or length that
    /// is not `PAGE_ALIGNED()` (same `if` as [`Reject::RangeZeroLength`]).
    /// EINVAL.
    RangeUnaligned {
        /// The first range that failed.
        index: u32,
    },
    /// `validate_dmabuf_input()`: adding range `index`'s length to the running
    /// total overflowed 64 bits (`check_add_overflow()`). EINVAL.
    TotalLengthOverflow {
        /// The range whose length overflowed the total.
        index: u32,
    },
    /// `validate_dmabuf_input()`: the total length has bit 63 set
    /// (`DMA_IOVA_USE_SWIOTLB`), which `dma_iova_try_alloc()` would WARN on.
    /// EINVAL.
    TotalLengthSwiotlbBit,
    /// `vfio_pci_core_get_dmabuf_phys()`: `pcim_p2pdma_provider()` has no
    /// provider for a BAR that is not memory (an I/O BAR). EINVAL.
    BarNotMmio,
    /// Strict: range `index` does not lie inside the BAR (`offset + length >
    /// bar_len`, computed without overflow and without the BAR's physical
    /// address). EINVAL.
    StrictRangeOutsideBar {
        /// The first range that failed.
        index: u32,
    },
    /// `vfio_pci_core_fill_phys_vec()`: `bar_start + offset` or `+ length`
    /// overflowed 64 bits (`check_add_overflow()`). EOVERFLOW.
    PhysAddrOverflow {
        /// The first range that failed.
        index: u32,
    },
    /// `vfio_pci_core_fill_phys_vec()`: range `index` ends beyond
    /// `bar_start + bar_len`. EINVAL.
    RangeBeyondBar {
        /// The first range that failed.
        index: u32,
    },
}

impl Reject {
    /// Every variant, in check order, with index 0 where there is one: for
    /// tables and for exhaustive tests.
    pub const ALL: [Reject; 24] = [
        Reject::ArgszBelowFeatureHeader,
        Reject::UnknownFeatureFlags,
        Reject::GetAndSetWithoutProbe,
        Reject::SetNotSupported,
        Reject::NoGetOrSet,
        Reject::ArgszBelowDmaBufHeader,
        Reject::DmaBufHeaderFault,
        Reject::NoRanges,
        Reject::NonZeroFlags,
        Reject::StrictOpenFlags,
        Reject::StrictTooManyRanges,
        Reject::StrictArgszShort,
        Reject::RegionNotBar,
        Reject::BarAbsent,
        Reject::RangeArrayTooLarge,
        Reject::RangeArrayFault,
        Reject::RangeZeroLength { index: 0 },
        Reject::RangeUnaligned { index: 0 },
        Reject::TotalLengthOverflow { index: 0 },
        Reject::TotalLengthSwiotlbBit,
        Reject::BarNotMmio,
        Reject::StrictRangeOutsideBar { index: 0 },
        Reject::PhysAddrOverflow { index: 0 },
        Reject::RangeBeyondBar { index: 0 },
    ];

    /// The errno the ioctl returns for this check.
    pub const fn errno(&self) -> Errno {
        match self {
            Reject::DmaBufHeaderFault | Reject::RangeArrayFault => Errno::EFAULT,
            Reject::RegionNotBar | Reject::BarAbsent => Errno::ENODEV,
            Reject::RangeArrayTooLarge => Errno::ENOMEM,
            Reject::StrictTooManyRanges => Errno::E2BIG,
            Reject::PhysAddrOverflow { .. } => Errno::EOVERFLOW,
            Reject::ArgszBelowFeatureHeader
            | Reject::UnknownFeatureFlags
            | Reject::GetAndSetWithoutProbe
            | Reject::SetNotSupported
            | Reject::NoGetOrSet
            | Reject::ArgszBelowDmaBufHeader
            | Reject::NoRanges
            | Reject::NonZeroFlags
            | Reject::StrictOpenFlags
            | Reject::StrictArgszShort
            | Reject::RangeZeroLength { .. }
            | Reject::RangeUnaligned { .. }
            | Reject::TotalLengthOverflow { .. }
            | Reject::TotalLengthSwiotlbBit
            | Reject::BarNotMmio
            | Reject::StrictRangeOutsideBar { .. }
            | Reject::RangeBeyondBar { .. } => Errno::EINVAL,
        }
    }

    /// The variant's name, as the CLI prints it in `"check"`.
    pub const fn name(&self) -> &'static str {
        match self {
            Reject::ArgszBelowFeatureHeader => "ArgszBelowFeatureHeader",
            Reject::UnknownFeatureFlags => "UnknownFeatureFlags",
            Reject::GetAndSetWithoutProbe => "GetAndSetWithoutProbe",
            Reject::SetNotSupported => "SetNotSupported",
            Reject::NoGetOrSet => "NoGetOrSet",
            Reject::ArgszBelowDmaBufHeader => "ArgszBelowDmaBufHeader",
            Reject::DmaBufHeaderFault => "DmaBufHeaderFault",
            Reject::NoRanges => "NoRanges",
            Reject::NonZeroFlags => "NonZeroFlags",
            Reject::StrictOpenFlags => "StrictOpenFlags",
            Reject::StrictTooManyRanges => "StrictTooManyRanges",
            Reject::StrictArgszShort => "StrictArgszShort",
            Reject::RegionNotBar => "RegionNotBar",
            Reject::BarAbsent => "BarAbsent",
            Reject::RangeArrayTooLarge => "RangeArrayTooLarge",
            Reject::RangeArrayFault => "RangeArrayFault",
            Reject::RangeZeroLength { .. } => "RangeZeroLength",
            Reject::RangeUnaligned { .. } => "RangeUnaligned",
            Reject::TotalLengthOverflow { .. } => "TotalLengthOverflow",
            Reject::TotalLengthSwiotlbBit => "TotalLengthSwiotlbBit",
            Reject::BarNotMmio => "BarNotMmio",
            Reject::StrictRangeOutsideBar { .. } => "StrictRangeOutsideBar",
            Reject::PhysAddrOverflow { .. } => "PhysAddrOverflow",
            Reject::RangeBeyondBar { .. } => "RangeBeyondBar",
        }
    }

    /// The kernel function (or, for Strict rules, the proposal) that makes
    /// this check: for semantics tables.
    pub const fn kernel_function(&self) -> &'static str {
        match self {
            Reject::ArgszBelowFeatureHeader | Reject::UnknownFeatureFlags | Reject::GetAndSetWithoutProbe => {
                "vfio_ioctl_device_feature()"
            }
            Reject::SetNotSupported | Reject::NoGetOrSet | Reject::ArgszBelowDmaBufHeader => "vfio_check_feature()",
            Reject::DmaBufHeaderFault | Reject::NoRanges | Reject::NonZeroFlags | Reject::RegionNotBar => {
                "vfio_pci_core_feature_dma_buf()"
            }
            Reject::BarAbsent => "vfio_pci_core_feature_dma_buf() (measured on 7.2.13)",
            Reject::RangeArrayTooLarge | Reject::RangeArrayFault => "memdup_array_user()",
            Reject::RangeZeroLength { .. }
            | Reject::RangeUnaligned { .. }
            | Reject::TotalLengthOverflow { .. }
            | Reject::TotalLengthSwiotlbBit => "validate_dmabuf_input()",
            Reject::BarNotMmio => "vfio_pci_core_get_dmabuf_phys() / pcim_p2pdma_provider()",
            Reject::PhysAddrOverflow { .. } | Reject::RangeBeyondBar { .. } => "vfio_pci_core_fill_phys_vec()",
            Reject::StrictOpenFlags
            | Reject::StrictTooManyRanges
            | Reject::StrictArgszShort
            | Reject::StrictRangeOutsideBar { .. } => "nr-ranges Strict policy",
        }
    }

    /// Whether only the Strict policy makes this check.
    pub const fn is_strict_only(&self) -> bool {
        matches!(
            self,
            Reject::StrictOpenFlags
                | Reject::StrictTooManyRanges
                | Reject::StrictArgszShort
                | Reject::StrictRangeOutsideBar { .. }
        )
    }

    /// The range the check refused, for per-range checks.
    pub const fn range_index(&self) -> Option<u32> {
        match self {
            Reject::RangeZeroLength { index }
            | Reject::RangeUnaligned { index }
            | Reject::TotalLengthOverflow { index }
            | Reject::StrictRangeOutsideBar { index }
            | Reject::PhysAddrOverflow { index }
            | Reject::RangeBeyondBar { index } => Some(*index),
            _ => None,
        }
    }
}

impl core::fmt::Display for Reject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.range_index() {
            Some(i) => write!(f, "{} ({}, range {}): {}", self.errno(), self.name(), i, self.kernel_function()),
            None => write!(f, "{} ({}): {}", self.errno(), self.name(), self.kernel_function()),
        }
    }
}
