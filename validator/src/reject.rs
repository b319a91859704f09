//! Why a request is refused: one variant per check, in the kernel's order,
//! all defined by one table (the `checks!` rows below).
//!
//! The table below is the only place a check is described: its variant and
//! fields, errno, policy, [`Stage`], kernel function, README summary and doc
//! are one row, and the `Reject` enum, [`Reject::ALL`] and every accessor are
//! generated from it. The validate functions in `lib.rs` decide which check
//! fails; the README's check list and `docs/cli-formats.md` are generated
//! from this table (`cargo run -p nr-ranges --example check-names-table --
//! --write`) and tests fail when they are stale.

use crate::{Errno, Policy};

macro_rules! stages {
    ($( $(#[doc = $doc:literal])* $name:ident => { function: $func:literal, title: $title:literal, note: $note:literal $(,)? }, )+) => {
        /// Where in the kernel's sequence a check is made: the kernel function
        /// or step, in the order the kernel runs them (`Ord` follows it).
        /// kmod-shim's fault sites use it to place a refusal before or after
        /// an allocation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Stage {
            $( $(#[doc = $doc])* $name, )+
        }

        impl Stage {
            /// Every stage, in the kernel's order.
            pub const ALL: [Stage; 0 $(+ stages!(@one $name))+] = [$( Stage::$name, )+];

            /// The stage's name.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Stage::$name => stringify!($name), )+
                }
            }

            /// The kernel function of the stage (or, for Strict rules, the
            /// proposal).
            pub const fn function(self) -> &'static str {
                match self {
                    $( Stage::$name => $func, )+
                }
            }

            /// The stage as the README's check list titles it.
            pub const fn title(self) -> &'static str {
                match self {
                    $( Stage::$name => $title, )+
                }
            }

            /// What the README's check list adds after the stage's checks
            /// (empty if nothing).
            pub const fn note(self) -> &'static str {
                match self {
                    $( Stage::$name => $note, )+
                }
            }
        }
    };
    (@one $name:ident) => { 1 };
}

stages! {
    /// `vfio_ioctl_device_feature()`: the vfio core's checks, common to
    /// every feature.
    VfioCore => {
        function: "vfio_ioctl_device_feature()",
        title: "vfio core (`vfio_ioctl_device_feature()`)",
        note: "",
    },
    /// `vfio_check_feature()`, called with GET as the only supported
    /// operation and the 16-byte dma-buf header as the minimum size.
    CheckFeature => {
        function: "vfio_check_feature()",
        title: "`vfio_check_feature()`",
        note: "",
    },
    /// `vfio_pci_core_feature_dma_buf()`: the copy of the dma-buf header and
    /// the checks of its fields.
    Header => {
        function: "vfio_pci_core_feature_dma_buf()",
        title: "`vfio_pci_core_feature_dma_buf()`, the header",
        note: "",
    },
    /// The Strict policy's header rules, made after the kernel's header
    /// checks and before the region is looked up.
    StrictHeader => {
        function: "nr-ranges Strict policy",
        title: "Strict: the header",
        note: "",
    },
    /// `vfio_pci_core_feature_dma_buf()`: the region index and the BAR
    /// behind it.
    Region => {
        function: "vfio_pci_core_feature_dma_buf()",
        title: "`vfio_pci_core_feature_dma_buf()`, the region",
        note: "",
    },
    /// `memdup_array_user()`: the range array is allocated, then copied.
    RangeCopy => {
        function: "memdup_array_user()",
        title: "`memdup_array_user()`",
        note: "The range array is copied as `nr_ranges * 16` bytes *whatever argsz says*.",
    },
    /// `validate_dmabuf_input()`: the first loop over the ranges, then the
    /// total length.
    ValidateInput => {
        function: "validate_dmabuf_input()",
        title: "`validate_dmabuf_input()`, per range in order, then the total",
        note: "",
    },
    /// `vfio_pci_core_get_dmabuf_phys()`: the BAR's P2P provider.
    Provider => {
        function: "vfio_pci_core_get_dmabuf_phys()",
        title: "`vfio_pci_core_get_dmabuf_phys()`",
        note: "",
    },
    /// `vfio_pci_core_fill_phys_vec()`: the second loop over the ranges,
    /// which turns them into physical addresses.
    FillPhysVec => {
        function: "vfio_pci_core_fill_phys_vec()",
        title: "`vfio_pci_core_fill_phys_vec()`, per range in order",
        note: "Which of the two a bad range gets depends on the BAR's physical address.",
    },
}

/// Defines [`Reject`] and its accessors from one table. Each row:
///
/// ```text
/// /// doc (what the check refuses; names its kernel function and errno)
/// Variant { /// field doc
///     index: u32 }     // only for per-range checks
///     => { errno: EINVAL, policy: Linux, stage: ValidateInput,
///          function: "validate_dmabuf_input()", summary: "zero length" },
/// ```
///
/// `policy` is `Linux` for Linux's own checks (which both policies make) and
/// `Strict` for the Strict rules; rows are in the order the checks run.
macro_rules! checks {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $({ $(#[$fmeta:meta])* $index:ident: u32 $(,)? })? => {
            errno: $errno:ident,
            policy: $policy:ident,
            stage: $stage:ident,
            function: $func:literal,
            summary: $summary:literal $(,)?
        },
    )+) => {
        /// A refused request: which check refused it. Variants are listed in
        /// the order the checks run; the first failing check decides.
        ///
        /// Variants named `Strict*` exist only under [`crate::Policy::Strict`];
        /// all others are Linux 7.2's own checks and are made by both policies.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reject {
            $(
                $(#[doc = $doc])*
                $name $({ $(#[$fmeta])* $index: u32 })?,
            )+
        }

        impl Reject {
            /// Every variant, in check order, with index 0 where there is one:
            /// for tables and for exhaustive tests.
            pub const ALL: [Reject; 0 $(+ checks!(@one $name))+] = [$( Reject::$name $({ $index: 0 })?, )+];

            /// The errno the ioctl returns for this check.
            pub const fn errno(&self) -> Errno {
                match self {
                    $( Reject::$name { .. } => Errno::$errno, )+
                }
            }

            /// The variant's name, as the CLI prints it in `"check"`.
            pub const fn name(&self) -> &'static str {
                match self {
                    $( Reject::$name { .. } => stringify!($name), )+
                }
            }

            /// The kernel function (or, for Strict rules, the proposal) that
            /// makes this check: for semantics tables.
            pub const fn kernel_function(&self) -> &'static str {
                match self {
                    $( Reject::$name { .. } => $func, )+
                }
            }

            /// Where in the kernel's sequence the check is made.
            pub const fn stage(&self) -> Stage {
                match self {
                    $( Reject::$name { .. } => Stage::$stage, )+
                }
            }

            /// Whose rule this is: [`Policy::Linux`] for Linux's own checks
            /// (made by both policies), [`Policy::Strict`] for the rules only
            /// the Strict policy makes.
            pub const fn policy(&self) -> Policy {
                match self {
                    $( Reject::$name { .. } => Policy::$policy, )+
                }
            }

            /// Whether only the Strict policy makes this check.
            pub const fn is_strict_only(&self) -> bool {
                matches!(self.policy(), Policy::Strict)
            }

            /// The range the check refused, for per-range checks.
            pub const fn range_index(&self) -> Option<u32> {
                match self {
                    $( Reject::$name { $($index,)? .. } => checks!(@index $($index)?), )+
                }
            }

            /// What the check refuses, in a few words, as the README's check
            /// list says it.
            pub const fn summary(&self) -> &'static str {
                match self {
                    $( Reject::$name { .. } => $summary, )+
                }
            }

            /// The variant's documentation as one line (its doc comment's
            /// lines joined by spaces), for generated tables.
            pub const fn doc(&self) -> &'static str {
                match self {
                    $( Reject::$name { .. } => concat!($($doc),*).trim_ascii_start(), )+
                }
            }
        }
    };
    (@one $name:ident) => { 1 };
    (@index) => { None };
    (@index $index:ident) => { Some(*$index) };
}

checks! {
    /// `vfio_ioctl_device_feature()`: `argsz` smaller than `struct
    /// vfio_device_feature` (8 bytes). EINVAL.
    ArgszBelowFeatureHeader => {
        errno: EINVAL, policy: Linux, stage: VfioCore,
        function: "vfio_ioctl_device_feature()", summary: "argsz < 8",
    },
    /// `vfio_ioctl_device_feature()`: a flag bit outside `MASK | GET | SET |
    /// PROBE`. EINVAL.
    UnknownFeatureFlags => {
        errno: EINVAL, policy: Linux, stage: VfioCore,
        function: "vfio_ioctl_device_feature()", summary: "unknown flag bits",
    },
    /// `vfio_ioctl_device_feature()`: GET and SET together without PROBE.
    /// EINVAL.
    GetAndSetWithoutProbe => {
        errno: EINVAL, policy: Linux, stage: VfioCore,
        function: "vfio_ioctl_device_feature()", summary: "GET and SET without PROBE",
    },
    /// `vfio_check_feature()` called by `vfio_pci_core_feature_dma_buf()`
    /// with GET as the only supported operation: SET asked for. EINVAL.
    SetNotSupported => {
        errno: EINVAL, policy: Linux, stage: CheckFeature,
        function: "vfio_check_feature()", summary: "SET",
    },
    /// `vfio_check_feature()`: neither GET nor SET, and no PROBE. EINVAL.
    NoGetOrSet => {
        errno: EINVAL, policy: Linux, stage: CheckFeature,
        function: "vfio_check_feature()",
        summary: "then PROBE succeeds (no fd); neither GET nor SET",
    },
    /// `vfio_check_feature()`: `argsz - 8` smaller than `struct
    /// vfio_device_feature_dma_buf` (16 bytes). EINVAL.
    ArgszBelowDmaBufHeader => {
        errno: EINVAL, policy: Linux, stage: CheckFeature,
        function: "vfio_check_feature()", summary: "argsz < 8 + 16",
    },
    /// `vfio_pci_core_feature_dma_buf()`: `copy_from_user()` of the 16-byte
    /// dma-buf header faulted. EFAULT.
    DmaBufHeaderFault => {
        errno: EFAULT, policy: Linux, stage: Header,
        function: "vfio_pci_core_feature_dma_buf()", summary: "the header copy faults",
    },
    /// `vfio_pci_core_feature_dma_buf()`: `nr_ranges == 0`. EINVAL.
    NoRanges => {
        errno: EINVAL, policy: Linux, stage: Header,
        function: "vfio_pci_core_feature_dma_buf()", summary: "`nr_ranges == 0`",
    },
    /// `vfio_pci_core_feature_dma_buf()`: `flags != 0` (same `if` as
    /// [`Reject::NoRanges`], which is tested first). EINVAL.
    NonZeroFlags => {
        errno: EINVAL, policy: Linux, stage: Header,
        function: "vfio_pci_core_feature_dma_buf()", summary: "`flags != 0`",
    },
    /// Strict: `open_flags` has a bit other than an access mode and
    /// `O_CLOEXEC`, or the access mode is the invalid value 3. EINVAL.
    StrictOpenFlags => {
        errno: EINVAL, policy: Strict, stage: StrictHeader,
        function: "nr-ranges Strict policy",
        summary: "`open_flags` other than an access mode and `O_CLOEXEC`",
    },
    /// Strict: `nr_ranges` above [`crate::STRICT_MAX_NR_RANGES`]. E2BIG.
    StrictTooManyRanges => {
        errno: E2BIG, policy: Strict, stage: StrictHeader,
        function: "nr-ranges Strict policy", summary: "`nr_ranges` above 65,536",
    },
    /// Strict: `argsz` does not cover the `nr_ranges` ranges it announces.
    /// EINVAL.
    StrictArgszShort => {
        errno: EINVAL, policy: Strict, stage: StrictHeader,
        function: "nr-ranges Strict policy", summary: "argsz does not cover the ranges",
    },
    /// `vfio_pci_core_feature_dma_buf()`: `region_index >=
    /// VFIO_PCI_ROM_REGION_INDEX` (ROM, config, VGA and device-specific
    /// regions are not BARs). ENODEV.
    RegionNotBar => {
        errno: ENODEV, policy: Linux, stage: Region,
        function: "vfio_pci_core_feature_dma_buf()", summary: "`region_index >= 6`",
    },
    /// The BAR is not implemented (length 0). Measured on Linux 7.2.13 to
    /// answer ENODEV right after the region-index check, before the range
    /// array is copied: before ENOMEM, EFAULT and every range check.
    BarAbsent => {
        errno: ENODEV, policy: Linux, stage: Region,
        function: "vfio_pci_core_feature_dma_buf() (measured on 7.2.13)", summary: "an absent BAR",
    },
    /// `memdup_array_user()`: `nr_ranges * 16` exceeds `KMALLOC_MAX_SIZE`, so
    /// kmalloc fails whatever memory is free. ENOMEM. (argsz is not consulted:
    /// the array is copied as `nr_ranges` ranges whatever argsz says.)
    RangeArrayTooLarge => {
        errno: ENOMEM, policy: Linux, stage: RangeCopy,
        function: "memdup_array_user()", summary: "above 4 MiB (262,144 ranges)",
    },
    /// `memdup_array_user()`: `copy_from_user()` of the range array faulted.
    /// EFAULT.
    RangeArrayFault => {
        errno: EFAULT, policy: Linux, stage: RangeCopy,
        function: "memdup_array_user()", summary: "an unreadable array",
    },
    /// `validate_dmabuf_input()`: range `index` has length 0. EINVAL.
    RangeZeroLength {
        /// The first range that failed.
        index: u32,
    } => {
        errno: EINVAL, policy: Linux, stage: ValidateInput,
        function: "validate_dmabuf_input()", summary: "zero length",
    },
    /// `validate_dmabuf_input()`: range `index` has an offset or length that
    /// is not `PAGE_ALIGNED()` (same `if` as [`Reject::RangeZeroLength`]).
    /// EINVAL.
    RangeUnaligned {
        /// The first range that failed.
        index: u32,
    } => {
        errno: EINVAL, policy: Linux, stage: ValidateInput,
        function: "validate_dmabuf_input()", summary: "unaligned offset or length",
    },
    /// `validate_dmabuf_input()`: adding range `index`'s length to the running
    /// total overflowed 64 bits (`check_add_overflow()`). EINVAL.
    TotalLengthOverflow {
        /// The range whose length overflowed the total.
        index: u32,
    } => {
        errno: EINVAL, policy: Linux, stage: ValidateInput,
        function: "validate_dmabuf_input()", summary: "the running total overflows",
    },
    /// `validate_dmabuf_input()`: the total length has bit 63 set
    /// (`DMA_IOVA_USE_SWIOTLB`), which `dma_iova_try_alloc()` would WARN on.
    /// EINVAL.
    TotalLengthSwiotlbBit => {
        errno: EINVAL, policy: Linux, stage: ValidateInput,
        function: "validate_dmabuf_input()", summary: "then a total with bit 63 set",
    },
    /// `vfio_pci_core_get_dmabuf_phys()`: `pcim_p2pdma_provider()` has no
    /// provider for a BAR that is not memory (an I/O BAR). EINVAL.
    BarNotMmio => {
        errno: EINVAL, policy: Linux, stage: Provider,
        function: "vfio_pci_core_get_dmabuf_phys() / pcim_p2pdma_provider()",
        summary: "an I/O BAR (no P2P provider)",
    },
    /// Strict: range `index` does not lie inside the BAR (`offset + length >
    /// bar_len`, computed without overflow and without the BAR's physical
    /// address). EINVAL.
    StrictRangeOutsideBar {
        /// The first range that failed.
        index: u32,
    } => {
        errno: EINVAL, policy: Strict, stage: FillPhysVec,
        function: "nr-ranges Strict policy", summary: "a range outside the BAR (`offset + length > bar_len`)",
    },
    /// `vfio_pci_core_fill_phys_vec()`: `bar_start + offset` or `+ length`
    /// overflowed 64 bits (`check_add_overflow()`). EOVERFLOW.
    PhysAddrOverflow {
        /// The first range that failed.
        index: u32,
    } => {
        errno: EOVERFLOW, policy: Linux, stage: FillPhysVec,
        function: "vfio_pci_core_fill_phys_vec()", summary: "`bar_start + offset` or `+ length` overflows",
    },
    /// `vfio_pci_core_fill_phys_vec()`: range `index` ends beyond
    /// `bar_start + bar_len`. EINVAL.
    RangeBeyondBar {
        /// The first range that failed.
        index: u32,
    } => {
        errno: EINVAL, policy: Linux, stage: FillPhysVec,
        function: "vfio_pci_core_fill_phys_vec()", summary: "the end lies beyond the BAR",
    },
}

impl core::fmt::Display for Reject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.range_index() {
            Some(i) => write!(f, "{} ({}, range {}): {}", self.errno(), self.name(), i, self.kernel_function()),
            None => write!(f, "{} ({}): {}", self.errno(), self.name(), self.kernel_function()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Reject, Stage};
    use crate::Policy;

    /// The table's rows are in the kernel's order: stages never go back.
    #[test]
    fn checks_run_stage_by_stage() {
        for pair in Reject::ALL.windows(2) {
            assert!(pair[0].stage() <= pair[1].stage(), "{} before {}", pair[0].name(), pair[1].name());
        }
        for stage in Stage::ALL {
            assert!(Reject::ALL.iter().any(|r| r.stage() == stage), "{} has no check", stage.name());
        }
    }

    /// Each doc names its errno, so that an errno changed in the table and not
    /// in the doc (which the RFC prints) fails here.
    #[test]
    fn docs_name_their_errno_and_names_are_distinct() {
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert!(r.doc().contains(r.errno().name()), "{}'s doc does not say {}", r.name(), r.errno());
            assert!(!r.summary().is_empty() && !r.doc().is_empty());
            assert!(Reject::ALL[..i].iter().all(|x| x.name() != r.name()), "{} twice", r.name());
            assert_eq!(r.is_strict_only(), r.policy() == Policy::Strict);
            assert_eq!(r.is_strict_only(), r.name().starts_with("Strict"), "{}", r.name());
        }
    }

    #[test]
    fn range_index_is_the_field() {
        assert_eq!(Reject::RangeBeyondBar { index: 7 }.range_index(), Some(7));
        assert_eq!(Reject::TotalLengthOverflow { index: u32::MAX }.range_index(), Some(u32::MAX));
        assert_eq!(Reject::TotalLengthSwiotlbBit.range_index(), None);
        assert_eq!(Reject::ALL.iter().filter(|r| r.range_index().is_some()).count(), 6);
    }
}
