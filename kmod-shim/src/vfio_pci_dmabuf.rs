//! `drivers/vfio/pci/vfio_pci_dmabuf.c` as in Linux 7.2.13 (Debian 7.3.4's
//! file is byte-identical): the export (`vfio_pci_core_feature_dma_buf()`,
//! its error labels one function each), the exporter ops (attach, map,
//! unmap, release; there is no `pin` op), iommufd's
//! `vfio_pci_dma_buf_iommufd_map()`, revocation (`vfio_pci_dma_buf_move()`)
//! and `vfio_pci_dma_buf_cleanup()`; plus the device state they read
//! (`struct vfio_pci_core_device`) and the reset entry of `vfio_pci_core.c`
//! that revokes.

use std::fmt;

use uapi::{DeviceFeatureDmaBufSingle, OwnedRequest, Request, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_MASK};
use validator::{Device, Outcome, PhysVec, Reject, Stage};

use crate::dma_buf::{AttachError, DmaBuf};
use crate::dma_buf_mapping::{dma_buf_free_sgt, dma_buf_phys_vec_to_sgt, DmaBufDma, MapCtx, MapError};
use crate::fault::{FaultSite, Fidelity};
use crate::p2p::P2pProvider;
use crate::state::{Alloc, Anomaly, AttachmentId, DmaBufId};
use crate::{Errno, Shim};

/// `struct vfio_pci_core_device`, reduced to what the dma-bufs touch.
#[derive(Debug, Clone)]
pub struct VfioPciCoreDevice {
    /// BARs and page size (shared with the validator).
    pub dev: Device,
    /// `PCI_COMMAND_MEMORY`, as `__vfio_pci_memory_enabled()` reads it.
    pub memory_enabled: bool,
    /// Whether a user has the device open.
    pub open: bool,
    /// `vdev->reset_works`: whether the device has a reset method (FLR, PM,
    /// slot or bus reset), as `vfio_pci_core_enable()` probes it and
    /// `VFIO_DEVICE_INFO` reports it (`VFIO_DEVICE_FLAGS_RESET`). Set with
    /// [`Shim::set_reset_supported`]; true by default.
    pub reset_works: bool,
    /// `pci_bus_address() - pci_resource_start()` for every BAR, wrapping.
    pub bus_offset: u64,
    /// `vdev->pci_ops->get_dmabuf_phys` is set: vfio-pci and nvgrace-gpu
    /// set it, the other variant drivers (mlx5, virtio, xe, ...) do not, and
    /// then every `DMA_BUF` feature call is EOPNOTSUPP. Set with
    /// [`Shim::set_get_dmabuf_phys`]; true by default.
    pub get_dmabuf_phys: bool,
    /// `vdev->dmabufs`, in insertion order.
    pub(crate) dmabufs: Vec<usize>,
}

impl VfioPciCoreDevice {
    /// An open device, memory decoding on, with a reset method and no
    /// dma-bufs.
    pub(crate) fn new(dev: Device, bus_offset: u64) -> Self {
        Self {
            dev,
            memory_enabled: true,
            open: true,
            reset_works: true,
            bus_offset,
            get_dmabuf_phys: true,
            dmabufs: Vec::new(),
        }
    }

    /// The dma-bufs on `vdev->dmabufs`.
    pub fn dmabufs(&self) -> impl Iterator<Item = DmaBufId> + '_ {
        self.dmabufs.iter().map(|&i| DmaBufId(i))
    }
}

/// Why an export failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportError {
    /// The validator's verdict (`vfio_pci_core_feature_dma_buf()` and the
    /// functions it calls).
    Rejected(Reject),
    /// A valid request that is not a dma-buf GET (probe, other feature):
    /// nothing is created. EINVAL in the model.
    NotAnExport,
    /// The device is not open, so there is no fd to issue the ioctl on.
    /// EBADF.
    DeviceNotOpen,
    /// `!vdev->pci_ops || !vdev->pci_ops->get_dmabuf_phys`
    /// (`vfio_pci_dmabuf.c:232-233` in 7.2.13): the variant driver cannot
    /// export. Checked before `vfio_check_feature()`, so a PROBE answers
    /// it too. EOPNOTSUPP.
    NoDmaBufPhys,
    /// `memdup_array_user()`'s allocation failed. ENOMEM.
    RangeCopyNoMem,
    /// `kzalloc(priv)` failed. ENOMEM.
    PrivNoMem,
    /// `kcalloc(phys_vec)` failed. ENOMEM.
    PhysVecNoMem,
    /// `dma_buf_export()` failed to allocate. ENOMEM.
    DmaBufExportNoMem,
    /// `dma_buf_fd()` failed. EMFILE.
    FdInstall,
}

impl ExportError {
    /// The errno the ioctl returns.
    pub fn errno(&self) -> Errno {
        match self {
            ExportError::Rejected(r) => r.errno(),
            ExportError::NotAnExport => Errno::EINVAL,
            ExportError::DeviceNotOpen => Errno::EBADF,
            ExportError::NoDmaBufPhys => Errno::EOPNOTSUPP,
            ExportError::RangeCopyNoMem
            | ExportError::PrivNoMem
            | ExportError::PhysVecNoMem
            | ExportError::DmaBufExportNoMem => Errno::ENOMEM,
            ExportError::FdInstall => Errno::EMFILE,
        }
    }
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.errno();
        match self {
            ExportError::Rejected(r) => write!(f, "rejected: {} ({e})", r.name()),
            ExportError::NotAnExport => write!(f, "not a dma-buf GET ({e})"),
            ExportError::DeviceNotOpen => write!(f, "the device is not open ({e})"),
            ExportError::NoDmaBufPhys => write!(f, "the driver has no get_dmabuf_phys ({e})"),
            ExportError::RangeCopyNoMem => write!(f, "memdup_array_user() failed ({e})"),
            ExportError::PrivNoMem => write!(f, "kzalloc(priv) failed ({e})"),
            ExportError::PhysVecNoMem => write!(f, "kcalloc(phys_vec) failed ({e})"),
            ExportError::DmaBufExportNoMem => write!(f, "dma_buf_export() failed ({e})"),
            ExportError::FdInstall => write!(f, "dma_buf_fd() failed ({e})"),
        }
    }
}

impl std::error::Error for ExportError {}

/// What an export's error labels find: the C's locals that decide what
/// each label frees.
#[derive(Debug, Clone, Copy)]
struct ExportUnwind {
    /// `dma_ranges` is still allocated (the C sets it to NULL after
    /// `kfree()`ing it, so the last label's `kfree()` is a no-op).
    dma_ranges: bool,
    /// `dma_buf_put()` already released `priv`, `phys_vec` and the
    /// registration: the labels below it act on freed memory.
    released: bool,
}

impl Shim {
    /// Opens the device (`vfio_pci_core_enable()`).
    pub fn open_device(&mut self) {
        self.vdev.open = true;
    }

    /// Whether the driver has `pci_ops->get_dmabuf_phys` (vfio-pci does);
    /// without it every `DMA_BUF` feature call, PROBE included, is
    /// EOPNOTSUPP ([`ExportError::NoDmaBufPhys`]). True by default.
    pub fn set_get_dmabuf_phys(&mut self, has: bool) {
        self.vdev.get_dmabuf_phys = has;
    }

    /// Whether the device has a reset method (`vdev->reset_works`); without
    /// one, [`Shim::try_reset`] is EINVAL and touches nothing. True by
    /// default.
    pub fn set_reset_supported(&mut self, works: bool) {
        self.vdev.reset_works = works;
    }

    /// `VFIO_DEVICE_FEATURE(DMA_BUF | GET)`: `vfio_pci_core_feature_dma_buf()`
    /// (7.2.13 `vfio_pci_dmabuf.c:221-334`). The validator decides
    /// acceptance, in 7.2.13's order (difference 7 of the 7.2.13 reading:
    /// `vfio_check_feature()`, the header copy, `!nr_ranges || flags`, the
    /// region check with `IS_ERR(vfio_pci_core_get_iomap())` at :250-252,
    /// which is the validator's `BarAbsent`, then the range copy,
    /// `validate_dmabuf_input()` and `get_dmabuf_phys`); the shim adds what
    /// comes before it (`get_dmabuf_phys` present, :232) and the
    /// allocations, the registration, `dma_buf_export()` and `dma_buf_fd()`,
    /// in the kernel's order, so that a fault lands where it would in the
    /// kernel.
    pub fn export(&mut self, req: &Request<'_>) -> Result<DmaBufId, ExportError> {
        if !self.vdev.open {
            return Err(ExportError::DeviceNotOpen);
        }
        let verdict = validator::validate(req, &self.vdev.dev, self.cfg.policy);
        // vfio_ioctl_device_feature() checks every feature call first, then
        // vfio_pci_core_ioctl_feature() dispatches DMA_BUF to the function
        // whose first check is the driver's get_dmabuf_phys.
        let core_refused = matches!(verdict, Err(r) if r.stage() == Stage::VfioCore);
        let dma_buf = req.feature.flags & VFIO_DEVICE_FEATURE_MASK == VFIO_DEVICE_FEATURE_DMA_BUF;
        if !self.vdev.get_dmabuf_phys && dma_buf && !core_refused {
            return Err(ExportError::NoDmaBufPhys);
        }
        // Where the refusing check sits decides what is allocated when it
        // refuses: the validator's stages are the kernel's order.
        let failed_at = |at: fn(Stage) -> bool| verdict.as_ref().err().filter(|r| at(r.stage())).copied();
        let mut unwind = ExportUnwind { dma_ranges: false, released: false };
        if let Some(r) = failed_at(|s| s <= Stage::RangeCopy) {
            return Err(ExportError::Rejected(r));
        }
        let export = match verdict {
            Ok(Outcome::DmaBuf(e)) => Some(e),
            Ok(_) => return Err(ExportError::NotAnExport),
            Err(_) => None,
        };
        // memdup_array_user().
        if !self.kmalloc(Alloc::RangeCopy) {
            return Err(ExportError::RangeCopyNoMem);
        }
        unwind.dma_ranges = true;
        // validate_dmabuf_input().
        if let Some(r) = failed_at(|s| s == Stage::ValidateInput) {
            return Err(self.err_free_ranges(unwind, ExportError::Rejected(r)));
        }
        if !self.kmalloc(Alloc::Priv) {
            return Err(self.err_free_ranges(unwind, ExportError::PrivNoMem));
        }
        if !self.kmalloc(Alloc::PhysVec) {
            return Err(self.err_free_priv(unwind, ExportError::PhysVecNoMem));
        }
        // get_dmabuf_phys(): pcim_p2pdma_provider() and
        // vfio_pci_core_fill_phys_vec().
        let Some(e) = export else {
            let r = failed_at(|s| s >= Stage::Provider).unwrap_or(Reject::BarNotMmio);
            return Err(self.err_free_phys(unwind, ExportError::Rejected(r)));
        };
        let provider = self
            .vdev
            .dev
            .bars
            .get(e.region_index as usize)
            .and_then(|bar| P2pProvider::for_bar(e.region_index, bar, self.vdev.bus_offset));
        let Some(provider) = provider else {
            return Err(self.err_free_phys(unwind, ExportError::Rejected(Reject::BarNotMmio)));
        };
        let phys_vec: Vec<PhysVec> = e.phys_vecs().collect();
        // kfree(dma_ranges); dma_ranges = NULL.
        self.counters.ledger.free(Alloc::RangeCopy);
        unwind.dma_ranges = false;
        // vfio_device_try_get_registration(): the model's device stays
        // registered, so this always succeeds.
        self.counters.registrations += 1;
        if !self.kmalloc(Alloc::DmaBufFile) {
            return Err(self.err_dev_put(unwind, ExportError::DmaBufExportNoMem));
        }
        let id = self.dmabufs.len();
        // INVARIANT: size is the sum of phys_vec (the validator's Export);
        // listed with vdev set and one registration; one reference, the fd.
        self.dmabufs.push(Some(DmaBuf {
            region_index: e.region_index,
            open_flags: e.open_flags,
            size: e.size,
            phys_vec,
            provider,
            revoked: !self.vdev.memory_enabled,
            vdev: true,
            refs: 1,
            // kref_init() (:303).
            kref: 1,
            fd_open: true,
            attachments: Vec::new(),
            iommufd: Vec::new(),
        }));
        self.vdev.dmabufs.push(id);
        self.counters.dmabufs += 1;
        if self.faults.hit(FaultSite::DmaBufFd) {
            return Err(self.err_dma_buf(unwind, id, ExportError::FdInstall));
        }
        Ok(DmaBufId(id))
    }

    /// `dma_buf_fd()` failed: `dma_buf_put()` drops the only reference, so
    /// the release runs (deferred, at return to user space, in the kernel)
    /// and the export returns (7.2.13 `vfio_pci_dmabuf.c:319-323`). Defect 5
    /// ([`crate::DEFECTS`]), fixed upstream in v7.0-rc6: before the fix the
    /// `err_dma_buf` label fell through to [`Self::err_dev_put`], which only
    /// [`Fidelity::KernelPre70Rc6`] reproduces.
    fn err_dma_buf(&mut self, mut unwind: ExportUnwind, id: usize, err: ExportError) -> ExportError {
        if let Some(buf) = self.dmabufs.get_mut(id).and_then(Option::as_mut) {
            buf.fd_open = false;
        }
        self.dma_buf_put(id);
        match self.cfg.fidelity {
            Fidelity::Fixed | Fidelity::Kernel => err,
            Fidelity::KernelPre70Rc6 => {
                unwind.released = true;
                let err = self.err_dev_put(unwind, err);
                // The deferred release then reads the priv just freed.
                self.anomalies.push(Anomaly::UseAfterFree("priv in vfio_pci_dma_buf_release()"));
                err
            }
        }
    }

    /// `err_dev_put:` `vfio_device_put_registration()`, then
    /// [`Self::err_free_phys`].
    fn err_dev_put(&mut self, unwind: ExportUnwind, err: ExportError) -> ExportError {
        self.put_registration();
        self.err_free_phys(unwind, err)
    }

    /// `err_free_phys:` `kfree(priv->phys_vec)`, then [`Self::err_free_priv`].
    fn err_free_phys(&mut self, unwind: ExportUnwind, err: ExportError) -> ExportError {
        self.counters.ledger.free(Alloc::PhysVec);
        if unwind.released {
            self.anomalies.push(Anomaly::DoubleFree("priv->phys_vec"));
        }
        self.err_free_priv(unwind, err)
    }

    /// `err_free_priv:` `kfree(priv)`, then [`Self::err_free_ranges`].
    fn err_free_priv(&mut self, unwind: ExportUnwind, err: ExportError) -> ExportError {
        self.counters.ledger.free(Alloc::Priv);
        if unwind.released {
            self.anomalies.push(Anomaly::DoubleFree("priv"));
        }
        self.err_free_ranges(unwind, err)
    }

    /// `err_free_ranges:` `kfree(dma_ranges)` (NULL once the physical
    /// vectors were filled) and return the error.
    fn err_free_ranges(&mut self, unwind: ExportUnwind, err: ExportError) -> ExportError {
        if unwind.dma_ranges {
            self.counters.ledger.free(Alloc::RangeCopy);
        }
        err
    }

    /// The original patch's single-range argument, through the same core:
    /// it is exactly a one-range request.
    pub fn export_single(&mut self, single: &DeviceFeatureDmaBufSingle) -> Result<DmaBufId, ExportError> {
        let owned = OwnedRequest::from_single(single);
        self.export(&owned.request())
    }

    /// `vfio_pci_dma_buf_release()`: off the device's list and its
    /// registration put (if the device still has it), then `kfree()` of
    /// `phys_vec` and `priv`.
    pub(crate) fn vfio_pci_dma_buf_release(&mut self, i: usize, buf: &DmaBuf) {
        if buf.vdev {
            self.vdev.dmabufs.retain(|&x| x != i);
            self.put_registration();
        }
        self.counters.ledger.free(Alloc::PhysVec);
        self.counters.ledger.free(Alloc::Priv);
    }

    /// `vfio_pci_dma_buf_attach()` (7.2.13 `vfio_pci_dmabuf.c:25-40`), in its
    /// order: `!attachment->peer2peer` EOPNOTSUPP (:30), `priv->revoked`
    /// ENODEV (:33), `!dma_buf_attach_revocable()` (no
    /// `invalidate_mappings`) EOPNOTSUPP (:36).
    pub(crate) fn vfio_pci_dma_buf_attach(revoked: bool, peer2peer: bool, revocable: bool) -> Result<(), AttachError> {
        if !peer2peer {
            Err(AttachError::NoPeer2Peer)
        } else if revoked {
            Err(AttachError::Revoked)
        } else if !revocable {
            Err(AttachError::NotRevocable)
        } else {
            Ok(())
        }
    }

    /// `vfio_pci_dma_buf_map()` (7.2.13 `vfio_pci_dmabuf.c:50-70`): refuses
    /// a revoked dma-buf (ENODEV), then `dma_buf_phys_vec_to_sgt()`, and a
    /// mapping takes a `kref` (:68).
    pub(crate) fn vfio_pci_dma_buf_map(
        &mut self,
        buf: usize,
        imp: usize,
        att: AttachmentId,
    ) -> Result<DmaBufDma, MapError> {
        let Shim { dmabufs, importers, faults, counters, events, anomalies, cfg, vdev, .. } = self;
        let buf_index = buf;
        let buf = dmabufs.get(buf).and_then(Option::as_ref).ok_or(MapError::NoSuchAttachment)?;
        if buf.revoked {
            return Err(MapError::Revoked);
        }
        let imp = importers.get_mut(imp).ok_or(MapError::NoSuchAttachment)?;
        let mut ctx = MapCtx {
            faults,
            counters,
            events,
            anomalies,
            fidelity: cfg.fidelity,
            sg_max_entries: cfg.sg_max_entries,
            page: vdev.dev.page_size.bytes(),
        };
        let dma = dma_buf_phys_vec_to_sgt(&mut ctx, buf, imp, att)?;
        if let Some(b) = dmabufs.get_mut(buf_index).and_then(Option::as_mut) {
            b.kref += 1;
        }
        Ok(dma)
    }

    /// `vfio_pci_dma_buf_unmap()` (7.2.13 `vfio_pci_dmabuf.c:72-82`):
    /// `dma_buf_free_sgt()`, then `kref_put()`; the last put completes a
    /// waiting revocation (`vfio_pci_dma_buf_done()`, :42-48).
    pub(crate) fn vfio_pci_dma_buf_unmap(&mut self, imp: usize, buf: Option<usize>, dma: &DmaBufDma) {
        dma_buf_free_sgt(self, imp, dma);
        if let Some(b) = buf.and_then(|b| self.dmabufs.get_mut(b)).and_then(Option::as_mut) {
            b.kref = b.kref.saturating_sub(1);
        }
    }

    /// `vfio_pci_dma_buf_iommufd_map()` (7.2.13 `vfio_pci_dmabuf.c:120-140`),
    /// iommufd's private interconnect: the dma-buf's one physical range, or
    /// ENODEV while revoked (:131-132), or EOPNOTSUPP for any number of
    /// ranges but one (:134-136: "more than one range to iommufd will
    /// require proper DMABUF support").
    pub(crate) fn vfio_pci_dma_buf_iommufd_map(&self, buf: usize) -> Result<PhysVec, Errno> {
        let b = self.dmabufs.get(buf).and_then(Option::as_ref).ok_or(Errno::EBADF)?;
        if b.revoked {
            return Err(Errno::ENODEV);
        }
        match b.phys_vec.as_slice() {
            [one] => Ok(*one),
            _ => Err(Errno::EOPNOTSUPP),
        }
    }

    /// `vfio_pci_core_close_device()` → `vfio_pci_dma_buf_cleanup()`
    /// (7.2.13 `vfio_pci_dmabuf.c:380-406`): first the revoke path,
    /// `vfio_pci_dma_buf_move(vdev, true)` (:394), which invalidates and
    /// drains every dma-buf not yet revoked and skips those already revoked;
    /// then every listed dma-buf leaves the list, loses its device and its
    /// registration (:396-404). Off the list nothing un-revokes it, so it is
    /// revoked for good; the dma-bufs themselves live on until their last
    /// reference goes.
    pub fn close_device(&mut self) {
        self.vfio_pci_dma_buf_move(true);
        let list = std::mem::take(&mut self.vdev.dmabufs);
        for i in list {
            let Some(buf) = self.dmabufs.get_mut(i).and_then(Option::as_mut) else { continue };
            buf.vdev = false;
            self.put_registration();
        }
        self.vdev.open = false;
    }

    /// A write of `PCI_COMMAND` that changes the memory bit:
    /// `vfio_pci_dma_buf_move(vdev, !enabled)` under the memory lock.
    pub fn set_memory_enabled(&mut self, enabled: bool) {
        self.vdev.memory_enabled = enabled;
        self.vfio_pci_dma_buf_move(!enabled);
    }

    /// `VFIO_DEVICE_RESET` (`vfio_pci_ioctl_reset()`): without a reset
    /// method (`!vdev->reset_works`, [`Shim::set_reset_supported`]) EINVAL
    /// before any dma-buf is touched: no `move_notify`, mappings survive.
    /// Otherwise revoke, reset, and restore if memory decoding is (still)
    /// enabled; the config space restore after the function reset keeps the
    /// memory bit.
    pub fn try_reset(&mut self) -> Result<(), Errno> {
        if !self.vdev.reset_works {
            return Err(Errno::EINVAL);
        }
        self.vfio_pci_dma_buf_move(true);
        if self.vdev.memory_enabled {
            self.vfio_pci_dma_buf_move(false);
        }
        Ok(())
    }

    /// [`Shim::try_reset`] with the errno dropped (kept for callers that
    /// only drive the state; a device without a reset method stays as it
    /// was).
    pub fn reset(&mut self) {
        let _ = self.try_reset();
    }

    /// `vfio_pci_dma_buf_move()` (7.2.13 `vfio_pci_dmabuf.c:336-378`): for
    /// every listed dma-buf whose state differs, `revoked` set (on revoke),
    /// `dma_buf_invalidate_mappings()` (:351) and, on revoke, the drain:
    /// `kref_put()` of the registered reference and `wait_for_completion()`
    /// until every mapping is unmapped (:357-358), then `kref_init()` and
    /// `reinit_completion()` (:368-369). On restore `revoked` is cleared
    /// after the invalidation (:371-373). Not modelled: the
    /// `dma_resv_wait_timeout()` for fences (:352-354; the model has none)
    /// and `get_file_active()` (:344; releases are synchronous here, so every
    /// listed file is live).
    fn vfio_pci_dma_buf_move(&mut self, revoked: bool) {
        for i in self.vdev.dmabufs.clone() {
            let Some(buf) = self.dmabufs.get_mut(i).and_then(Option::as_mut) else { continue };
            if buf.revoked == revoked {
                continue;
            }
            if revoked {
                buf.revoked = true;
            }
            self.dma_buf_invalidate_mappings(i);
            if revoked {
                self.vfio_pci_dma_buf_drain(i);
            } else if let Some(buf) = self.dmabufs.get_mut(i).and_then(Option::as_mut) {
                buf.revoked = false;
            }
        }
    }

    /// The revoke's `kref_put()` + `wait_for_completion()`: importers that
    /// did not unmap inside `invalidate_mappings` unmap from their own
    /// context, and the revocation returns only when the last mapping's
    /// `kref_put()` completes it ([`crate::Events::revoke_waits`] counts the
    /// mappings waited for). Then `kref_init()` re-arms it.
    fn vfio_pci_dma_buf_drain(&mut self, i: usize) {
        let Some(buf) = self.dmabufs.get_mut(i).and_then(Option::as_mut) else { return };
        buf.kref = buf.kref.saturating_sub(1);
        let waiting = buf.kref;
        if waiting != 0 {
            self.events.revoke_waits += u64::from(waiting);
            for a in buf.attachments.clone() {
                self.unmap_all(a);
            }
        }
        if let Some(buf) = self.dmabufs.get_mut(i).and_then(Option::as_mut) {
            // INVARIANT: no mapping is left, so the re-armed kref is one
            // plus the (zero) live mappings.
            buf.kref = 1;
        }
    }

    /// `vfio_device_put_registration()`.
    pub(crate) fn put_registration(&mut self) {
        self.counters.registrations -= 1;
        if self.counters.registrations < 0 {
            self.anomalies.push(Anomaly::RegistrationUnderflow);
        }
    }
}
