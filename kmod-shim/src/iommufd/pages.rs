//! `drivers/iommu/iommufd/pages.c`, its dma-buf half as in Linux 7.2.13:
//! `iopt_alloc_dmabuf_pages()` and `iopt_map_dmabuf()` (how iommufd
//! attaches to a dma-buf and gets its physical range from vfio),
//! `iopt_revoke_notify()` (its `invalidate_mappings`) and the dma-buf part
//! of `iopt_release_pages()`.

use validator::PhysVec;

use crate::iommufd::io_pagetable::{IoasId, IommufdError};
use crate::state::{Alloc, DmaBufId};
use crate::Shim;

/// `struct iopt_pages` of type `IOPT_ADDRESS_DMABUF`, together with the one
/// `struct iopt_area` `IOMMU_IOAS_MAP_FILE` inserts for it in an IOAS.
///
/// # Invariants
/// While the dma-buf is not revoked, `phys` is its one physical range and
/// the IOAS's domain translates `length` bytes at `iova` to
/// `phys.paddr + start`; once revoked, `phys.len` is 0 and nothing is
/// translated, while the area's IOVA stays reserved until it is unmapped.
/// The pages hold one attachment (and so one reference) of the dma-buf.
/// Checked by [`crate::check_invariants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoptPages {
    /// The IOAS whose area maps it.
    pub ioas: IoasId,
    /// The dma-buf (`pages->dmabuf.attach->dmabuf`).
    pub dmabuf: DmaBufId,
    /// `pages->dmabuf.phys`, filled by `vfio_pci_dma_buf_iommufd_map()`;
    /// its length is set to 0 by a revocation.
    pub phys: PhysVec,
    /// `pages->dmabuf.start`: the byte offset into the dma-buf.
    pub start: u64,
    /// Bytes mapped.
    pub length: u64,
    /// The area's first IOVA.
    pub iova: u64,
}

impl IoptPages {
    /// `iopt_dmabuf_revoked()` (`io_pagetable.h:258-264`): `phys.len == 0`.
    pub const fn is_revoked(&self) -> bool {
        self.phys.len == 0
    }
}

impl Shim {
    /// `iopt_alloc_dmabuf_pages()` (`pages.c:1527-1568`) and the
    /// `iopt_map_dmabuf()` it calls (:1484-1525): the range must lie inside
    /// the dma-buf (EINVAL, :1540-1542), then the pages are allocated,
    /// `dma_buf_dynamic_attach()` with iommufd's revoke ops
    /// (`allow_peer2peer` and `invalidate_mappings`, :1453-1456) runs vfio's
    /// attach checks, `dma_buf_pin()` is a no-op (vfio has no `pin` op) and
    /// `vfio_pci_dma_buf_iommufd_map()` hands over the physical range. Any
    /// failure detaches and frees what was made. Returns the pages' index,
    /// with `iova` still to be set by the caller.
    pub(crate) fn iopt_alloc_dmabuf_pages(
        &mut self,
        ioas: IoasId,
        buf: DmaBufId,
        start: u64,
        length: u64,
    ) -> Result<usize, IommufdError> {
        let Some(b) = self.dma_buf(buf) else { return Err(IommufdError::BadFd) };
        // dmabuf->size <= start + length - 1 (the caller checked that the
        // sum does not wrap and that length != 0).
        if b.size <= start + (length - 1) {
            return Err(IommufdError::OutsideDmaBuf);
        }
        let revoked = b.revoked;
        if !self.kmalloc(Alloc::IoptPages) {
            return Err(IommufdError::NoMem);
        }
        // iopt_map_dmabuf(): dma_buf_dynamic_attach().
        if !self.kmalloc(Alloc::Attachment) {
            self.counters.ledger.free(Alloc::IoptPages);
            return Err(IommufdError::NoMem);
        }
        if let Err(e) = Self::vfio_pci_dma_buf_attach(revoked, true, true) {
            let e = self.err_attach(e);
            self.counters.ledger.free(Alloc::IoptPages);
            return Err(IommufdError::Attach(e));
        }
        let phys = match self.vfio_pci_dma_buf_iommufd_map(buf.0) {
            Ok(p) => p,
            Err(errno) => {
                // err_unpin: (nothing pinned), err_detach: dma_buf_detach(),
                // then iopt_put_pages().
                self.counters.ledger.free(Alloc::Attachment);
                self.counters.ledger.free(Alloc::IoptPages);
                return Err(IommufdError::IommufdMap(errno));
            }
        };
        let p = self.iopt_pages.len();
        // INVARIANT: the pages hold the attachment and its reference; the
        // caller maps them before anything can revoke.
        self.iopt_pages.push(Some(IoptPages { ioas, dmabuf: buf, phys, start, length, iova: 0 }));
        if let Some(b) = self.dmabufs.get_mut(buf.0).and_then(Option::as_mut) {
            b.iommufd.push(p);
            b.refs += 1;
        }
        self.counters.attachments += 1;
        Ok(p)
    }

    /// `iopt_revoke_notify()` (`pages.c:1434-1451`), iommufd's
    /// `invalidate_mappings`: unless already revoked, every domain's range
    /// of the area is unmapped and `phys.len` set to 0. Nothing restores
    /// it: a later un-revoke calls it again and it returns at once, so the
    /// area stays empty until it is unmapped and mapped anew.
    pub(crate) fn iopt_revoke_notify(&mut self, p: usize) {
        let Some(pages) = self.iopt_pages.get_mut(p).and_then(Option::as_mut) else { return };
        if pages.is_revoked() {
            return;
        }
        let (ioas, iova, length) = (pages.ioas, pages.iova, pages.length);
        pages.phys.len = 0;
        if let Some(io) = self.ioas.get_mut(ioas.0) {
            io.domain.unmap(iova, length);
        }
    }

    /// `iopt_release_pages()` for a dma-buf (`pages.c:1651-1670`):
    /// `dma_buf_unpin()` (nothing), `dma_buf_detach()` and `dma_buf_put()`,
    /// then the pages are freed.
    pub(crate) fn iopt_release_pages(&mut self, p: usize) {
        let Some(pages) = self.iopt_pages.get_mut(p).and_then(Option::take) else { return };
        if let Some(b) = self.dmabufs.get_mut(pages.dmabuf.0).and_then(Option::as_mut) {
            b.iommufd.retain(|&x| x != p);
        }
        self.counters.attachments -= 1;
        self.counters.ledger.free(Alloc::Attachment);
        self.counters.ledger.free(Alloc::IoptPages);
        self.dma_buf_put(pages.dmabuf.0);
    }
}
