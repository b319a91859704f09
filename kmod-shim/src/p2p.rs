//! `drivers/pci/p2pdma.c`: the PCI P2P DMA provider and the path a peer's
//! DMA takes to reach a BAR.

use validator::{Bar, BarKind};

/// `enum pci_p2pdma_map_type`: how `pci_p2pdma_map_type()` says a DMA from
/// the importer's device reaches the provider's BAR. The model takes it as a
/// property of the importer (the topology), not something it computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum P2pMapType {
    /// `PCI_P2PDMA_MAP_NOT_SUPPORTED`: no P2P path (different root ports on a
    /// host bridge not on the allow list, ACS redirect, not a PCI device).
    /// `dma_buf_phys_vec_to_sgt()` answers EINVAL.
    NotSupported,
    /// `PCI_P2PDMA_MAP_BUS_ADDR`: both devices sit under one switch, so the
    /// TLPs never reach the host bridge or the IOMMU; the DMA address is the
    /// PCI bus address (`pci_p2pdma_bus_addr_map()`).
    BusAddr,
    /// `PCI_P2PDMA_MAP_THRU_HOST_BRIDGE`: the TLPs go up through the root
    /// complex and are translated by the importer's IOMMU (or not, with
    /// dma-direct).
    ThruHostBridge,
}

/// `struct p2pdma_provider`: what a BAR offers peers. Only the bus offset
/// matters to the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct P2pProvider {
    /// The BAR (0..=5) this provider stands for.
    pub bar: u32,
    /// `p2pdma_provider.bus_offset`: `pci_bus_address() -
    /// pci_resource_start()`, wrapping, as `pcim_p2pdma_provider()` records
    /// it. Zero on x86; non-zero where the host bridge translates (many
    /// arm64 and ppc64 systems).
    pub bus_offset: u64,
}

impl P2pProvider {
    /// `pcim_p2pdma_provider()`: a provider exists only for a memory BAR.
    pub fn for_bar(bar_index: u32, bar: &Bar, bus_offset: u64) -> Option<Self> {
        (bar.kind == BarKind::Mmio && !bar.is_absent()).then_some(Self { bar: bar_index, bus_offset })
    }

    /// `pci_p2pdma_bus_addr_map()`: the bus address a peer uses for physical
    /// address `paddr` of this BAR.
    pub const fn bus_addr_map(&self, paddr: u64) -> u64 {
        paddr.wrapping_add(self.bus_offset)
    }
}
