//! The kernel side of `VFIO_DEVICE_FEATURE_DMA_BUF` as a model (the 6.19-7.0
//! sources, checked against running 7.2 and 7.3 kernels by the kernel lab).
//!
//! The validator says whether the kernel accepts a request; this crate says
//! what the kernel then builds and how it behaves over time: which DMA
//! addresses a peer device sees and through which path, what reset, close
//! and memory-disable do, and what a failure halfway through a mapping
//! leaves behind.
//!
//! | Rust | C |
//! | --- | --- |
//! | [`Shim::export`] | `vfio_pci_core_feature_dma_buf()` |
//! | [`Shim::attach`] | `dma_buf_dynamic_attach()` + `vfio_pci_dma_buf_attach()` / `_pin()` |
//! | [`Shim::map`] | `vfio_pci_dma_buf_map()` → `dma_buf_phys_vec_to_sgt()` |
//! | [`Shim::unmap`] | `vfio_pci_dma_buf_unmap()` → `dma_buf_free_sgt()` |
//! | [`Shim::close_fd`] / [`Shim::detach`] | `dma_buf_put()` → `vfio_pci_dma_buf_release()` |
//! | [`Shim::set_memory_enabled`], [`Shim::reset`] | `vfio_pci_dma_buf_move()` |
//! | [`Shim::try_reset`], [`Shim::set_reset_supported`] | `vfio_pci_ioctl_reset()` (`vdev->reset_works`) |
//! | [`Shim::dma_translate`] / [`Shim::peer_reach`] | the importer's DMA path / plus the BAR's `PCI_COMMAND_MEMORY` decode |
//! | [`Shim::close_device`] | `vfio_pci_dma_buf_cleanup()` |
//! | [`P2pMapType`], [`P2pProvider`] | `enum pci_p2pdma_map_type`, `struct p2pdma_provider` |
//! | [`Iommu`] | `struct iova_domain` + `struct iommu_domain` (dma-iommu) |
//! | [`IommuModel`] | the driver's page-table `map_pages()` (generic_pt VT-d, io-pgtable-arm) |
//! | [`SgTable`], [`calc_sg_nents`], [`max_sg_ent_sz`] | `struct sg_table`, `calc_sg_nents()`, `MAX_SG_ENT_SZ` |
//! | [`DmaBufDma`], [`IovaState`] | `struct dma_buf_dma`, `struct dma_iova_state` |
//! | [`Alloc`], [`Ledger`] | the kernel objects allocated on the way (`dma_ranges`, `priv`, `phys_vec`, ...) |
//!
//! [`check_invariants`] is the one checker every test and fuzzer calls.
//!
//! Files, one per C file: `vfio_pci_dmabuf.rs` (`drivers/vfio/pci/vfio_pci_dmabuf.c`),
//! `dma_buf.rs` (`drivers/dma-buf/dma-buf.c`), `dma_buf_mapping.rs`
//! (`drivers/dma-buf/dma-buf-mapping.c`), `importer.rs` (the importer's
//! `struct device`, `kernel/dma/mapping.c`), `iommu.rs` (`drivers/iommu/`),
//! `p2p.rs` (`drivers/pci/p2pdma.c`), `sg.rs` (`include/linux/scatterlist.h`);
//! and the model's own: `shim.rs` (the root object), `state.rs` (ids,
//! ledger, counters, snapshot, anomalies), `fault.rs`, `check.rs`,
//! `defect.rs`.
//!
//! # Kernel-faithful mode
//!
//! [`Fidelity::Kernel`] reproduces the error paths and one data path as
//! written in the torvalds/linux trees read for this model (6.19 through
//! 7.0); [`Fidelity::Fixed`] (the default) is the alternative proposed for
//! the RFC. The differences are [`DEFECTS`], one entry each (what each mode
//! does, the C function, the tests, and whether real kernels still have
//! it); each shows as one branch of an error label (`err_unmap_dma()`,
//! `err_free_state()`, `err_dma_buf()`, ...). What the kernel lab measured
//! on running kernels is in `kernel-lab/FINDINGS.md`.
//!
//! Also flagged, identical in both modes: a range longer than
//! `MAX_SG_ENT_SZ` on the per-range path is mapped by one `dma_map_phys()`
//! but unmapped by `dma_buf_free_sgt()` in `MAX_SG_ENT_SZ` pieces, one
//! `dma_unmap_phys()` per sg entry. The model's allocator accepts piecewise
//! frees; dma-iommu's `free_iova()` of the first piece may release the whole
//! IOVA node while the rest is still mapped (not verified). And on the
//! BUS_ADDR path, revocation tears nothing down in any IOMMU: the peer still
//! reaches the BAR by bus address until it stops on its own, whenever the
//! device decodes memory ([`Shim::peer_reach`]; the same holds for
//! dma-direct, `iommu=pt`). While `PCI_COMMAND_MEMORY` is clear the BAR
//! answers nothing on any path.
//!
//! # Revocation as modelled
//!
//! `vfio_pci_dma_buf_move()` and `vfio_pci_dma_buf_cleanup()` call
//! `dma_buf_move_notify()` for each listed dma-buf; importers must be dynamic
//! (`vfio_pci_dma_buf_pin()` returns EOPNOTSUPP, so a static importer cannot
//! attach). As 7.2.13's `vfio_pci_dma_buf_move()` does it (a `kref` taken
//! per mapping, then `wait_for_completion()`), a revocation returns only
//! once every importer has unmapped: importers that unmap inside
//! `move_notify` do so at once, the others are waited for
//! ([`Events::revoke_waits`]). Release is modelled synchronously, so every
//! listed dma-buf's file is live (`get_file_active()` always succeeds).
//!
//! # Read against 7.2.13
//!
//! The model was read from 6.19-7.0; a reading of Debian's 7.2.13 source
//! (`kernel-lab/lab-kernel-runs/2026-12-01-kernel-track.md`, section 2, with
//! file:line) found these differences, which the model does not follow yet:
//! 7.2.13 has no `pin` op, and `vfio_pci_dma_buf_attach()` itself refuses an
//! importer without `invalidate_mappings` (EOPNOTSUPP, after the peer2peer
//! and revoked checks); the importer callback is `invalidate_mappings`, not
//! `move_notify`; `vfio_pci_dma_buf_cleanup()` revokes through
//! `vfio_pci_dma_buf_move()` first; 7.2.13's `dma_iova_destroy()` frees the
//! IOVA with the size linked rather than the span's (fixed in 7.3.4), which
//! can make IOVA addresses look leaked; and `vfio_pci_dma_buf_iommufd_map()`
//! refuses `nr_ranges != 1` with EOPNOTSUPP (the model has no iommufd
//! importer). Defect 5 is fixed there ([`DEFECTS`]). [`Fidelity::Fixed`]'s
//! unwind for defect 4 unmaps once per range, `kernel-patches/0004` once per
//! filled sg entry: the same for ranges up to `MAX_SG_ENT_SZ`.
//!
//! # Simplifications
//!
//! The IOVA allocator is first-fit from a cursor at page granularity (no
//! power-of-two rounding, no per-CPU caches); `dma_iova_link()`/`iommu_map()`
//! are atomic per call; `dma_map_phys()` on dma-direct returns the physical
//! address unchanged; the device never unregisters, so
//! `vfio_device_try_get_registration()` always succeeds.

mod check;
mod defect;
mod dma_buf;
mod dma_buf_mapping;
mod fault;
mod importer;
mod iommu;
mod p2p;
mod sg;
mod shim;
mod state;
mod vfio_pci_dmabuf;

pub use check::{check_invariants, Violation};
pub use defect::{Defect, DefectStatus, DEFECTS};
pub use dma_buf::{AttachError, Attachment, DmaBuf};
pub use dma_buf_mapping::{DmaBufDma, IovaState, MapError, MapPath};
pub use fault::{FaultPlan, FaultSite, Fidelity};
pub use importer::{DmaOps, Importer, ImporterDesc};
pub use iommu::{Extent, Iommu, IommuModel, IommuSnapshot, IommuStats};
pub use p2p::{P2pMapType, P2pProvider};
pub use sg::{calc_sg_nents, max_sg_ent_sz, SgEntry, SgTable};
pub use shim::{Config, Shim};
pub use state::{Alloc, Anomaly, AttachmentId, Counters, DmaBufId, Events, ImporterId, Ledger, MappingId, Snapshot};
pub use validator::{Bar, BarKind, Device, Errno, PageSize, PhysVec, Policy, Reject};
pub use vfio_pci_dmabuf::{ExportError, VfioPciCoreDevice};
