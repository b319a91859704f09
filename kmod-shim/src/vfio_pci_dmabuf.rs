//! `drivers/vfio/pci/vfio_pci_dmabuf.c`: the export
//! (`vfio_pci_core_feature_dma_buf()`, its error labels one function each),
//! the exporter ops (attach, pin, map, unmap, release), revocation
//! (`vfio_pci_dma_buf_move()`) and `vfio_pci_dma_buf_cleanup()`; plus the
//! device state they read (`struct vfio_pci_core_device`) and the reset
//! entry of `vfio_pci_core.c` that revokes.

use std::fmt;

use uapi::{DeviceFeatureDmaBufSingle, OwnedRequest, Request};
use validator::{Device, Outcome, PhysVec, Reject, Stage};

use crate::dma_buf::{AttachError, DmaBuf};
use crate::dma_buf_mapping::{dma_buf_phys_vec_to_sgt, DmaBufDma, MapCtx, MapError};
use crate::fault::{FaultSite, Fidelity};
use crate::importer::ImporterDesc;
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
    /// `vdev->dmabufs`, in insertion order.
    pub(crate) dmabufs: Vec<usize>,
}

impl VfioPciCoreDevice {
    /// An open device, memory decoding on, with a reset method and no
    /// dma-bufs.
    pub(crate) fn new(dev: Device, bus_offset: u64) -> Self {
        Self { dev, memory_enabled: true, open: true, reset_works: true, bus_offset, dmabufs: Vec::new() }
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

    /// Whether the device has a reset method (`vdev->reset_works`); without
    /// one, [`Shim::try_reset`] is EINVAL and touches nothing. True by
    /// default.
    pub fn set_reset_supported(&mut self, works: bool) {
        self.vdev.reset_works = works;
    }

    /// `VFIO_DEVICE_FEATURE(DMA_BUF | GET)`: `vfio_pci_core_feature_dma_buf()`.
    /// The validator decides acceptance; the shim adds the allocations, the
    /// registration, `dma_buf_export()` and `dma_buf_fd()`, in the kernel's
    /// order, so that a fault lands where it would in the kernel.
    pub fn export(&mut self, req: &Request<'_>) -> Result<DmaBufId, ExportError> {
        if !self.vdev.open {
            return Err(ExportError::DeviceNotOpen);
        }
        let verdict = validator::validate(req, &self.vdev.dev, self.cfg.policy);
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
            fd_open: true,
            attachments: Vec::new(),
        }));
        self.vdev.dmabufs.push(id);
        self.counters.dmabufs += 1;
        if self.faults.hit(FaultSite::DmaBufFd) {
            return Err(self.err_dma_buf(unwind, id, ExportError::FdInstall));
        }
        Ok(DmaBufId(id))
    }

    /// `err_dma_buf:` `dma_buf_put()` drops the only reference, so the
    /// release runs (deferred, at return to user space, in the kernel).
    /// Defect 5 ([`crate::DEFECTS`]), fixed upstream in v7.0-rc6: before
    /// the fix the code fell through to [`Self::err_dev_put`]; the fix
    /// returns here.
    fn err_dma_buf(&mut self, mut unwind: ExportUnwind, id: usize, err: ExportError) -> ExportError {
        if let Some(buf) = self.dmabufs.get_mut(id).and_then(Option::as_mut) {
            buf.fd_open = false;
        }
        self.dma_buf_put(id);
        match self.cfg.fidelity {
            Fidelity::Fixed => err,
            Fidelity::Kernel => {
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

    /// `vfio_pci_dma_buf_attach()`: P2P importers only, and not while
    /// revoked.
    pub(crate) fn vfio_pci_dma_buf_attach(revoked: bool, desc: &ImporterDesc) -> Result<(), AttachError> {
        if !desc.peer2peer {
            Err(AttachError::NoPeer2Peer)
        } else if revoked {
            Err(AttachError::Revoked)
        } else {
            Ok(())
        }
    }

    /// `vfio_pci_dma_buf_pin()`: the core pins at attach time for an
    /// importer without `move_notify`, and vfio refuses.
    pub(crate) fn vfio_pci_dma_buf_pin(desc: &ImporterDesc) -> Result<(), AttachError> {
        if desc.move_notify {
            Ok(())
        } else {
            Err(AttachError::PinNotSupported)
        }
    }

    /// `vfio_pci_dma_buf_map()`: refuses a revoked dma-buf, then
    /// `dma_buf_phys_vec_to_sgt()`.
    pub(crate) fn vfio_pci_dma_buf_map(
        &mut self,
        buf: usize,
        imp: usize,
        att: AttachmentId,
    ) -> Result<DmaBufDma, MapError> {
        let Shim { dmabufs, importers, faults, counters, events, anomalies, cfg, vdev, .. } = self;
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
        dma_buf_phys_vec_to_sgt(&mut ctx, buf, imp, att)
    }

    /// `vfio_pci_core_close_device()` → `vfio_pci_dma_buf_cleanup()`: every
    /// dma-buf leaves the list, loses its device and is revoked for good;
    /// the dma-bufs themselves live on until their last reference goes.
    pub fn close_device(&mut self) {
        let list = std::mem::take(&mut self.vdev.dmabufs);
        for i in list {
            let Some(buf) = self.dmabufs.get_mut(i).and_then(Option::as_mut) else { continue };
            buf.vdev = false;
            buf.revoked = true;
            self.dma_buf_move_notify(i, true);
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

    /// `vfio_pci_dma_buf_move()`: flips `revoked` on every listed dma-buf
    /// whose state differs and notifies its importers. A revocation returns
    /// only when every mapping is gone.
    fn vfio_pci_dma_buf_move(&mut self, revoked: bool) {
        for i in self.vdev.dmabufs.clone() {
            let Some(buf) = self.dmabufs.get_mut(i).and_then(Option::as_mut) else { continue };
            if buf.revoked != revoked {
                buf.revoked = revoked;
                self.dma_buf_move_notify(i, revoked);
            }
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
