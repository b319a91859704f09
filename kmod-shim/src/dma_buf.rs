//! `drivers/dma-buf/dma-buf.c`, the parts the vfio exporter relies on: the
//! dma-buf file and its references, `dma_buf_dynamic_attach()` /
//! `dma_buf_detach()`, `dma_buf_map_attachment()` /
//! `dma_buf_unmap_attachment()`, `dma_buf_move_notify()` and
//! `dma_buf_put()`.

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
/// good; `refs` is the open fd plus one per attachment.
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
    pub(crate) fd_open: bool,
    pub(crate) attachments: Vec<usize>,
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
    /// A static importer (no `move_notify`) makes `dma_buf_dynamic_attach()`
    /// pin the dynamic exporter; `vfio_pci_dma_buf_pin()` refuses:
    /// EOPNOTSUPP.
    PinNotSupported,
}

impl AttachError {
    /// The errno.
    pub fn errno(&self) -> Errno {
        match self {
            AttachError::NoSuchDmaBuf => Errno::EBADF,
            AttachError::NoSuchImporter => Errno::EINVAL,
            AttachError::NoMem => Errno::ENOMEM,
            AttachError::NoPeer2Peer | AttachError::PinNotSupported => Errno::EOPNOTSUPP,
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
            AttachError::PinNotSupported => write!(f, "vfio_pci_dma_buf_pin(): a static importer cannot pin ({e})"),
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

    /// `dma_buf_dynamic_attach()` with vfio's `attach` and `pin`.
    pub fn attach(&mut self, id: DmaBufId, importer: ImporterId) -> Result<AttachmentId, AttachError> {
        let Some(buf) = self.dma_buf(id) else { return Err(AttachError::NoSuchDmaBuf) };
        let revoked = buf.revoked;
        let desc = self.importer(importer).ok_or(AttachError::NoSuchImporter)?.desc;
        if !self.kmalloc(Alloc::Attachment) {
            return Err(AttachError::NoMem);
        }
        // dmabuf->ops->attach(), then (a static importer of a dynamic
        // exporter) dma_buf_pin().
        if let Err(e) = Self::vfio_pci_dma_buf_attach(revoked, &desc).and_then(|()| Self::vfio_pci_dma_buf_pin(&desc)) {
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
    fn err_attach(&mut self, err: AttachError) -> AttachError {
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

    /// `dma_buf_unmap_attachment()` → `vfio_pci_dma_buf_unmap()` →
    /// `dma_buf_free_sgt()`. Unmapping a gone mapping does nothing.
    pub fn unmap(&mut self, id: MappingId) {
        let Some(dma) = self.mappings.get_mut(id.0).and_then(Option::take) else { return };
        let imp = match self.attachments.get_mut(dma.attachment.0).and_then(Option::as_mut) {
            Some(att) => {
                att.mappings.retain(|&x| x != id.0);
                att.importer.0
            }
            None => usize::MAX,
        };
        crate::dma_buf_mapping::dma_buf_free_sgt(self, imp, &dma);
        self.counters.mappings -= 1;
    }

    /// `dma_buf_move_notify()` to every attachment, then, for a revocation,
    /// the wait for the mappings the importers did not drop at once.
    pub(crate) fn dma_buf_move_notify(&mut self, buf: usize, revoked: bool) {
        let atts = self.dmabufs.get(buf).and_then(Option::as_ref).map(|d| d.attachments.clone()).unwrap_or_default();
        for &a in &atts {
            self.events.move_notifies += 1;
            let imp = self.attachments[a].as_ref().map(|x| x.importer);
            if imp.and_then(|imp| self.importer(imp)).is_some_and(|imp| imp.desc.unmap_in_move_notify) {
                self.unmap_all(a);
            }
        }
        if revoked {
            for &a in &atts {
                let live = self.attachments[a].as_ref().map_or(0, |x| x.mappings.len());
                if live != 0 {
                    // The importer unmaps from its own context after
                    // move_notify returned; revocation completes only then.
                    self.events.revoke_waits += live as u64;
                    self.unmap_all(a);
                }
            }
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
