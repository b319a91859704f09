//! The importer: its `struct device` and DMA ops (`kernel/dma/mapping.c`'s
//! `dma_map_phys()` / `dma_unmap_phys()` on dma-direct or dma-iommu), and
//! where a peer's DMA lands.

use crate::fault::{FaultSite, Faults};
use crate::iommu::Iommu;
use crate::p2p::P2pMapType;
use crate::state::{Events, ImporterId};
use crate::Shim;

/// How the importer's device does DMA: the DMA ops of `struct device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmaOps {
    /// dma-direct: no IOMMU, DMA address = physical address;
    /// `dma_iova_try_alloc()` always says no.
    Direct,
    /// dma-iommu with a translating domain.
    Iommu {
        /// IOVA aperture start (page-aligned).
        aperture_start: u64,
        /// IOVA aperture end, exclusive (page-aligned).
        aperture_end: u64,
        /// Whether `dma_iova_try_alloc()` may be used at all (false models
        /// a device that needs swiotlb bouncing, where it returns false).
        iova_api: bool,
    },
}

/// An importer: the `struct device` that attaches, and what its importer
/// ops (`struct dma_buf_attach_ops`) can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImporterDesc {
    /// `dma_buf_attach_ops.allow_peer2peer`. A static importer
    /// (`dma_buf_attach()`, no ops at all) has it false.
    pub peer2peer: bool,
    /// Whether the importer has `dma_buf_attach_ops.invalidate_mappings`,
    /// the revocation callback: `dma_buf_attach_revocable()`
    /// (`drivers/dma-buf/dma-buf.c:1354-1358` in 7.2.13). Without it
    /// `vfio_pci_dma_buf_attach()` refuses the attach (EOPNOTSUPP,
    /// `vfio_pci_dmabuf.c:36-37`).
    pub invalidate_mappings: bool,
    /// Whether its `invalidate_mappings` unmaps at once. If not, the
    /// importer unmaps later and revocation waits for it (counted in
    /// [`Events::revoke_waits`]).
    pub unmap_in_invalidate_mappings: bool,
    /// `pci_p2pdma_map_type(provider, dev)` for this importer.
    pub map_type: P2pMapType,
    /// The device's DMA ops.
    pub dma: DmaOps,
}

impl ImporterDesc {
    /// A revocable, P2P-capable importer behind the same switch (BUS_ADDR).
    pub const fn bus_peer() -> Self {
        Self {
            peer2peer: true,
            invalidate_mappings: true,
            unmap_in_invalidate_mappings: true,
            map_type: P2pMapType::BusAddr,
            dma: DmaOps::Direct,
        }
    }

    /// A revocable, P2P-capable importer through the host bridge behind an
    /// IOMMU whose aperture is `[start, end)`.
    pub const fn iommu_peer(start: u64, end: u64) -> Self {
        Self {
            peer2peer: true,
            invalidate_mappings: true,
            unmap_in_invalidate_mappings: true,
            map_type: P2pMapType::ThruHostBridge,
            dma: DmaOps::Iommu { aperture_start: start, aperture_end: end, iova_api: true },
        }
    }

    /// The same importer, with the IOVA API unavailable (per-range mapping).
    pub const fn without_iova_api(mut self) -> Self {
        if let DmaOps::Iommu { aperture_start, aperture_end, .. } = self.dma {
            self.dma = DmaOps::Iommu { aperture_start, aperture_end, iova_api: false };
        }
        self
    }
}

/// An importer and its IOMMU domain.
#[derive(Debug, Clone)]
pub struct Importer {
    /// What it is.
    pub desc: ImporterDesc,
    /// Its IOMMU domain, for [`DmaOps::Iommu`].
    pub iommu: Option<Iommu>,
}

/// `dma_map_phys()` with `DMA_ATTR_MMIO`: dma-direct returns the physical
/// address; dma-iommu allocates IOVA space and maps it.
pub(crate) fn dma_map_phys(imp: &mut Importer, faults: &mut Faults, paddr: u64, len: u64) -> Option<u64> {
    if faults.hit(FaultSite::MapPhys) {
        return None;
    }
    let Some(iommu) = imp.iommu.as_mut() else { return Some(paddr) };
    let iova = iommu.alloc_iova(len)?;
    if iommu.map(iova, paddr, len).is_err() {
        iommu.free_iova(iova, len);
        return None;
    }
    Some(iova)
}

/// `dma_unmap_phys()`: the inverse, for `len` bytes at `addr` (possibly a
/// piece of what one `dma_map_phys()` mapped, or nothing at all).
pub(crate) fn dma_unmap_phys(imp: &mut Importer, events: &mut Events, addr: u64, len: u64) {
    if len == 0 {
        events.spurious_unmaps += 1;
    }
    if let Some(iommu) = imp.iommu.as_mut() {
        iommu.unmap(addr, len);
        if len != 0 {
            iommu.free_iova(addr, len);
        }
    }
}

impl Shim {
    /// Where a DMA from `importer` to `dma_addr` lands, given the path its
    /// mappings take: the physical address and how many bytes stay
    /// contiguous from there. Translation only: whether the target answers
    /// is [`Shim::peer_reach`]'s question. On the BUS_ADDR path
    /// (`pci_p2pdma_bus_addr_map()` inverted) and with dma-direct a bus
    /// address lands in a BAR whether or not anything is mapped; through an
    /// IOMMU only what its page table translates lands anywhere
    /// (`iommu_iova_to_phys()`).
    ///
    /// This is what [`crate::check_invariants`] walks the sg tables through:
    /// it checks that the mapping's translation is right, which is
    /// independent of `PCI_COMMAND` (and a live mapping never coexists with
    /// memory decoding off: `vfio_pci_dma_buf_move()` revokes first).
    pub fn dma_translate(&self, importer: ImporterId, dma_addr: u64) -> Option<(u64, u64)> {
        let imp = self.importers.get(importer.0)?;
        match imp.desc.map_type {
            P2pMapType::NotSupported => None,
            P2pMapType::BusAddr => self.in_bar(dma_addr.wrapping_sub(self.vdev.bus_offset)),
            P2pMapType::ThruHostBridge => match &imp.iommu {
                Some(iommu) => iommu.translate(dma_addr),
                None => self.in_bar(dma_addr),
            },
        }
    }

    /// What a DMA from `importer` to `dma_addr` reaches: [`Shim::dma_translate`],
    /// then the device's address decode. While `PCI_COMMAND_MEMORY` is clear
    /// (`__vfio_pci_memory_enabled()` false) the BARs do not decode, so a DMA
    /// landing in one of them reaches nothing (the kernel lab's edu reads
    /// zeros there, `kernel-lab/FINDINGS.md` F3), whatever the mapping
    /// state. Once decoding is back, an address whose translation survived
    /// revocation reaches the BAR again: the BUS_ADDR path and dma-direct
    /// (`iommu=pt`), where `dma_buf_free_sgt()` tears nothing down (a
    /// documented kernel fact; nothing but the importer stops such DMA).
    pub fn peer_reach(&self, importer: ImporterId, dma_addr: u64) -> Option<(u64, u64)> {
        let (phys, run) = self.dma_translate(importer, dma_addr)?;
        if !self.vdev.memory_enabled && self.in_bar(phys).is_some() {
            return None;
        }
        Some((phys, run))
    }

    /// The present BAR holding `phys`, as (phys, bytes to the BAR's end).
    pub(crate) fn in_bar(&self, phys: u64) -> Option<(u64, u64)> {
        self.vdev.dev.bars.iter().find_map(|b| {
            let end = b.start.checked_add(b.len)?;
            (!b.is_absent() && phys >= b.start && phys < end).then(|| (phys, end - phys))
        })
    }
}
