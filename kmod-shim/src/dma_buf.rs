//! `drivers/dma-buf/dma-buf.c`, the parts the vfio exporter relies on (as
//! in Linux 7.2.13): the dma-buf file and its references,
//! `dma_buf_dynamic_attach()` / `dma_buf_detach()`,
//! `dma_buf_map_attachment()` / `dma_buf_unmap_attachment()`,
//! `dma_buf_invalidate_mappings()` and `dma_buf_put()`.

use std::fmt;

use validator::PhysVec;

use crate::dma_buf_mapping::MapError;
use crate::p2p::P2pProvider;
use crate::state::{Alloc, Anomaly, AttachmentId, DmaBufId, ImporterId, MappingId};
use crate::{Errno, Shim};

/// `struct vfio_pci_dma_buf` together with the `struct dma_buf` it backs.
///
/// # Invariants
/// `size` is the sum of `phys_vec` lengths; a dma-buf on the device's list
/// has `vdev` set and holds one registration; a revoked dma-buf has no
/// mappings once revocation returns; `vdev` cleared implies revoked for
/// good; `refs` is the open fd plus one per attachment (iommufd's
/// included); `kref` is one plus the live mappings
/// (checked by [`crate::check_invariants`]).
#[derive(Debug, Clone)]
pub struct DmaBuf {
    /// The BAR.
    pub region_index: u32,
    /// `open_flags` as passed to `dma_buf_fd()`.
    pub open_flags: u32,
    /// `priv->size`.
    pub size: u64,
    /// `priv->phys_vec`, in request order.
    pub phys_vec: Vec<PhysVec>,
    /// `priv->provider`.
    pub provider: P2pProvider,
    /// `priv->revoked`.
    pub revoked: bool,
    /// `priv->vdev != NULL`: cleared by `vfio_pci_dma_buf_cleanup()`.
    pub vdev: bool,
    /// File references: the user's fd plus one per attachment.
    pub(crate) refs: u32,
    /// `priv->kref`: the registered reference plus one per mapping
    /// (`kref_get()` in `vfio_pci_dma_buf_map()`, `vfio_pci_dmabuf.c:68`;
    /// `kref_put()` in `vfio_pci_dma_buf_unmap()`, :81). Revocation drops
    /// the registered one and waits for zero (:357-358).
    pub(crate) kref: u32,
    pub(crate) fd_open: bool,
    pub(crate) attachments: Vec<usize>,
    /// iommufd's attachments, by the `iopt_pages` holding each.
    pub(crate) iommufd: Vec<usize>,
}

impl DmaBuf {
    /// `priv->nr_ranges`.
    pub fn nr_ranges(&self) -> usize {
        self.phys_vec.len()
    }

    /// `kref_read(&priv->kref)`: one plus the live mappings.
    pub fn kref(&self) -> u32 {
        self.kref
    }
}

/// `struct dma_buf_attachment`.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The dma-buf.
    pub dmabuf: DmaBufId,
    /// The importer.
    pub importer: ImporterId,
    pub(crate) mappings: Vec<usize>,
}

/// Why an attach failed (`dma_buf_dynamic_attach()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// The dma-buf was released. EBADF.
    NoSuchDmaBuf,
    /// The importer id names no importer (a caller's mistake, no kernel
    /// twin: there the importer is the caller). EINVAL.
    NoSuchImporter,
    /// `kzalloc(attach)` failed. ENOMEM.
    NoMem,
    /// `vfio_pci_dma_buf_attach()`: `!attachment->peer2peer`. EOPNOTSUPP.
    NoPeer2Peer,
    /// `vfio_pci_dma_buf_attach()`: `priv->revoked`. ENODEV.
    Revoked,
    /// `vfio_pci_dma_buf_attach()`: `!dma_buf_attach_revocable()`, an
    /// importer without `invalidate_mappings` (7.2.13
    /// `vfio_pci_dmabuf.c:36-37`, `dma-buf.c:1354-1358`). EOPNOTSUPP. (The
    /// 6.19-7.0 trees refused the same importers in `vfio_pci_dma_buf_pin()`
    /// with the same errno; 7.2.13 has no `pin` op.)
    NotRevocable,
}

impl AttachError {
    /// The errno.
    pub fn errno(&self) -> Errno {
        match self {
            AttachError::NoSuchDmaBuf => Errno::EBADF,
            AttachError::NoSuchImporter => Errno::EINVAL,
            AttachError::NoMem => Errno::ENOMEM,
            AttachError::NoPeer2Peer | AttachError::NotRevocable => Errno::EOPNOTSUPP,
            AttachError::Revoked => Errno::ENODEV,
        }
    }
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.errno();
        match self {
            AttachError::NoSuchDmaBuf => write!(f, "no such dma-buf ({e})"),
            AttachError::NoSuchImporter => write!(f, "no such importer ({e})"),
            AttachError::NoMem => write!(f, "dma_buf_dynamic_attach(): allocation failed ({e})"),
            AttachError::NoPeer2Peer => write!(f, "vfio_pci_dma_buf_attach(): importer is not P2P-capable ({e})"),
            AttachError::Revoked => write!(f, "vfio_pci_dma_buf_attach(): the dma-buf is revoked ({e})"),
            AttachError::NotRevocable => {
                write!(f, "vfio_pci_dma_buf_attach(): the importer has no invalidate_mappings ({e})")
            }
        }
    }
}

impl std::error::Error for AttachError {}

impl Shim {
    /// The user closes the dma-buf fd.
    pub fn close_fd(&mut self, id: DmaBufId) -> Result<(), Errno> {
        let buf = self.dmabufs.get_mut(id.0).and_then(Option::as_mut).ok_or(Errno::EBADF)?;
        if !buf.fd_open {
            return Err(Errno::EBADF);
        }
        buf.fd_open = false;
        self.dma_buf_put(id.0);
        Ok(())
    }

    /// `dma_buf_put()`: the last reference releases the file, which runs the
    /// exporter's release (`vfio_pci_dma_buf_release()`).
    pub(crate) fn dma_buf_put(&mut self, i: usize) {
        let Some(buf) = self.dmabufs.get_mut(i).and_then(Option::as_mut) else { return };
        buf.refs -= 1;
        if buf.refs != 0 {
            return;
        }
        let Some(buf) = self.dmabufs.get_mut(i).and_then(Option::take) else { return };
        self.vfio_pci_dma_buf_release(i, &buf);
        // dma_buf_release(): the dma_buf and its file.
        self.counters.ledger.free(Alloc::DmaBufFile);
        self.counters.dmabufs -= 1;
    }

    /// `dma_buf_dynamic_attach()` (`dma-buf.c:1031-1069` in 7.2.13) with
    /// vfio's `attach` op; vfio has no `pin` op, so nothing else runs.
    pub fn attach(&mut self, id: DmaBufId, importer: ImporterId) -> Result<AttachmentId, AttachError> {
        let Some(buf) = self.dma_buf(id) else { return Err(AttachError::NoSuchDmaBuf) };
        let revoked = buf.revoked;
        let desc = self.importer(importer).ok_or(AttachError::NoSuchImporter)?.desc;
        if !self.kmalloc(Alloc::Attachment) {
            return Err(AttachError::NoMem);
        }
        if let Err(e) = Self::vfio_pci_dma_buf_attach(revoked, desc.peer2peer, desc.invalidate_mappings) {
            return Err(self.err_attach(e));
        }
        let a = self.attachments.len();
        // INVARIANT: the attachment holds one reference of the dma-buf.
        self.attachments.push(Some(Attachment { dmabuf: id, importer, mappings: Vec::new() }));
        if let Some(buf) = self.dmabufs.get_mut(id.0).and_then(Option::as_mut) {
            buf.attachments.push(a);
            buf.refs += 1;
        }
        self.counters.attachments += 1;
        Ok(AttachmentId(a))
    }

    /// `err_attach:` `kfree(attach)`.
    pub(crate) fn err_attach(&mut self, err: AttachError) -> AttachError {
        self.counters.ledger.free(Alloc::Attachment);
        err
    }

    /// `dma_buf_detach()`; remaining mappings are unmapped first (an
    /// importer bug, recorded).
    pub fn detach(&mut self, id: AttachmentId) -> Result<(), Errno> {
        let att = self.attachment(id).ok_or(Errno::EBADF)?;
        let buf = att.dmabuf.0;
        if !att.mappings.is_empty() {
            self.anomalies.push(Anomaly::DetachWithMappings);
            self.unmap_all(id.0);
        }
        self.attachments[id.0] = None;
        self.counters.attachments -= 1;
        self.counters.ledger.free(Alloc::Attachment);
        if let Some(b) = self.dmabufs.get_mut(buf).and_then(Option::as_mut) {
            b.attachments.retain(|&x| x != id.0);
        }
        self.dma_buf_put(buf);
        Ok(())
    }

    /// `dma_buf_map_attachment()` → `vfio_pci_dma_buf_map()`.
    pub fn map(&mut self, id: AttachmentId) -> Result<MappingId, MapError> {
        let att = self.attachment(id).ok_or(MapError::NoSuchAttachment)?;
        let (buf, imp) = (att.dmabuf.0, att.importer.0);
        let dma = self.vfio_pci_dma_buf_map(buf, imp, id)?;
        let m = self.mappings.len();
        self.mappings.push(Some(dma));
        self.counters.mappings += 1;
        if let Some(att) = self.attachments.get_mut(id.0).and_then(Option::as_mut) {
            att.mappings.push(m);
        }
        Ok(MappingId(m))
    }

    /// `dma_buf_unmap_attachment()` → `vfio_pci_dma_buf_unmap()`.
    /// Unmapping a gone mapping does nothing.
    pub fn unmap(&mut self, id: MappingId) {
        let Some(dma) = self.mappings.get_mut(id.0).and_then(Option::take) else { return };
        let (imp, buf) = match self.attachments.get_mut(dma.attachment.0).and_then(Option::as_mut) {
            Some(att) => {
                att.mappings.retain(|&x| x != id.0);
                (att.importer.0, Some(att.dmabuf.0))
            }
            None => (usize::MAX, None),
        };
        self.vfio_pci_dma_buf_unmap(imp, buf, &dma);
        self.counters.mappings -= 1;
    }

    /// `dma_buf_invalidate_mappings()` (`dma-buf.c:1399-1410` in 7.2.13;
    /// `dma_buf_move_notify()` before): every attachment's
    /// `invalidate_mappings`. vfio only lets revocable importers attach, so
    /// every attachment has one. A device importer that unmaps in the
    /// callback does so now; iommufd's is `iopt_revoke_notify()`.
    pub(crate) fn dma_buf_invalidate_mappings(&mut self, buf: usize) {
        let Some(d) = self.dmabufs.get(buf).and_then(Option::as_ref) else { return };
        let (atts, iommufd) = (d.attachments.clone(), d.iommufd.clone());
        for &a in &atts {
            self.events.invalidations += 1;
            let imp = self.attachments[a].as_ref().map(|x| x.importer);
            if imp.and_then(|imp| self.importer(imp)).is_some_and(|imp| imp.desc.unmap_in_invalidate_mappings) {
                self.unmap_all(a);
            }
        }
        for p in iommufd {
            self.events.invalidations += 1;
            self.iopt_revoke_notify(p);
        }
    }

    /// Every mapping of an attachment, unmapped.
    pub(crate) fn unmap_all(&mut self, att: usize) {
        let maps = self.attachments.get(att).and_then(Option::as_ref).map(|x| x.mappings.clone()).unwrap_or_default();
        for m in maps {
            self.unmap(MappingId(m));
        }
    }
}
