//! What the validator needs to know of the device: page size, allocator
//! limit, and each BAR's kind, physical start and length.

use uapi::PCI_STD_NUM_BARS;

/// The kernel's `PAGE_SIZE`, against which `PAGE_ALIGNED()` checks offsets
/// and lengths in `validate_dmabuf_input()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PageSize {
    /// 4 KiB: x86-64 and most arm64 configurations.
    #[default]
    K4,
    /// 16 KiB (arm64 `ARM64_16K_PAGES`).
    K16,
    /// 64 KiB (arm64 `ARM64_64K_PAGES`, ppc64).
    K64,
}

impl PageSize {
    /// The page size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::K4 => 4096,
            PageSize::K16 => 16384,
            PageSize::K64 => 65536,
        }
    }

    /// The page size for `bytes`, if it is one the model supports.
    pub const fn from_bytes(bytes: u64) -> Option<Self> {
        match bytes {
            4096 => Some(PageSize::K4),
            16384 => Some(PageSize::K16),
            65536 => Some(PageSize::K64),
            _ => None,
        }
    }

    /// `KMALLOC_MAX_SIZE` for this page size in a default configuration:
    /// `PAGE_SIZE << MAX_PAGE_ORDER`, where `MAX_PAGE_ORDER` is 10 for 4 KiB
    /// pages and, on arm64 (`ARCH_FORCE_MAX_ORDER`), 11 for 16 KiB and 13 for
    /// 64 KiB pages. `memdup_array_user()` cannot copy a range array larger
    /// than this (kmalloc fails, ENOMEM). Measured: 4 MiB on Linux 7.2.13
    /// x86-64 (262,144 ranges pass, 262,145 give ENOMEM).
    pub const fn default_kmalloc_max(self) -> u64 {
        match self {
            PageSize::K4 => 4096 << 10,
            PageSize::K16 => 16384 << 11,
            PageSize::K64 => 65536 << 13,
        }
    }
}

/// What a PCI BAR decodes, as `pci_resource_flags()` would say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BarKind {
    /// Not implemented by the device (`pci_resource_len() == 0`).
    #[default]
    Absent,
    /// An I/O-port BAR (`IORESOURCE_IO`): no P2P provider can exist for it.
    Io,
    /// A memory BAR (`IORESOURCE_MEM`).
    Mmio,
}

/// One BAR: `pci_resource_start()`, `pci_resource_len()` and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Bar {
    /// What the BAR decodes.
    pub kind: BarKind,
    /// Physical (CPU) start address, `pci_resource_start()`.
    pub start: u64,
    /// Length in bytes, `pci_resource_len()`.
    pub len: u64,
}

impl Bar {
    /// A BAR the device does not implement.
    pub const ABSENT: Bar = Bar { kind: BarKind::Absent, start: 0, len: 0 };

    /// A memory BAR.
    pub const fn mmio(start: u64, len: u64) -> Self {
        Bar { kind: BarKind::Mmio, start, len }
    }

    /// An I/O-port BAR.
    pub const fn io(start: u64, len: u64) -> Self {
        Bar { kind: BarKind::Io, start, len }
    }

    /// Whether the kernel sees no BAR here: declared absent, or of length 0.
    pub const fn is_absent(&self) -> bool {
        matches!(self.kind, BarKind::Absent) || self.len == 0
    }
}

/// The device as `vfio_pci_core_feature_dma_buf()` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device {
    /// The kernel's page size.
    pub page_size: PageSize,
    /// `KMALLOC_MAX_SIZE`: the largest range array `memdup_array_user()` can
    /// copy. Defaults to [`PageSize::default_kmalloc_max`].
    pub kmalloc_max: u64,
    /// BARs 0..=5 (regions 0..=5 of vfio-pci).
    pub bars: [Bar; PCI_STD_NUM_BARS],
}

impl Default for Device {
    fn default() -> Self {
        Self::new(PageSize::K4)
    }
}

impl Device {
    /// A device with no BARs, for a kernel with `page_size` pages.
    pub const fn new(page_size: PageSize) -> Self {
        Self { page_size, kmalloc_max: page_size.default_kmalloc_max(), bars: [Bar::ABSENT; PCI_STD_NUM_BARS] }
    }

    /// The same device with BAR `index` set; an index of 6 or more is
    /// ignored (there is no such BAR).
    pub const fn with_bar(mut self, index: usize, bar: Bar) -> Self {
        // `get_mut` is not const: split at `index` and take the first BAR
        // after it (none when `index >= 6`).
        if let Some((_, rest)) = self.bars.split_at_mut_checked(index) {
            if let Some(slot) = rest.first_mut() {
                *slot = bar;
            }
        }
        self
    }

    /// The ivshmem-plain device of the kernel spike: BAR0 256 B MMIO at
    /// 0xfe800000, BAR2 16 MiB MMIO at 0xfd000000, the rest absent.
    pub const fn ivshmem_example() -> Self {
        Self::new(PageSize::K4).with_bar(0, Bar::mmio(0xfe80_0000, 0x100)).with_bar(2, Bar::mmio(0xfd00_0000, 16 << 20))
    }
}
