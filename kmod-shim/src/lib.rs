//! The kernel side of `VFIO_DEVICE_FEATURE_DMA_BUF` as a model of Linux
//! 7.2.13 (read from Debian's 7.2.13 source; checked against running 7.2.13
//! and 7.3.4 kernels by the kernel lab).
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
//! | [`Shim::attach`] | `dma_buf_dynamic_attach()` + `vfio_pci_dma_buf_attach()` |
//! | [`Shim::map`] | `vfio_pci_dma_buf_map()` → `dma_buf_phys_vec_to_sgt()` |
//! | [`Shim::unmap`] | `vfio_pci_dma_buf_unmap()` → `dma_buf_free_sgt()` |
//! | [`Shim::close_fd`] / [`Shim::detach`] | `dma_buf_put()` → `vfio_pci_dma_buf_release()` |
//! | [`Shim::set_memory_enabled`], [`Shim::reset`] | `vfio_pci_dma_buf_move()` → `dma_buf_invalidate_mappings()` |
//! | [`Shim::try_reset`], [`Shim::set_reset_supported`] | `vfio_pci_ioctl_reset()` (`vdev->reset_works`) |
//! | [`Shim::dma_translate`] / [`Shim::peer_reach`] | the importer's DMA path / plus the BAR's `PCI_COMMAND_MEMORY` decode |
//! | [`Shim::close_device`] | `vfio_pci_dma_buf_cleanup()` |
//! | [`Shim::iommufd_map_file`], [`Shim::iommufd_unmap`] | `IOMMU_IOAS_MAP_FILE` / `_UNMAP`: `iopt_map_file_pages()` → `iopt_alloc_dmabuf_pages()` → `vfio_pci_dma_buf_iommufd_map()` |
//! | [`IoptPages`], [`Ioas`] | `struct iopt_pages` (dma-buf type) with its area, `struct iommufd_ioas` |
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
//! `iommufd/pages.rs` (`drivers/iommu/iommufd/pages.c`),
//! `iommufd/io_pagetable.rs` (`drivers/iommu/iommufd/io_pagetable.c`),
//! `p2p.rs` (`drivers/pci/p2pdma.c`), `sg.rs` (`include/linux/scatterlist.h`);
//! and the model's own: `shim.rs` (the root object), `state.rs` (ids,
//! ledger, counters, snapshot, anomalies), `fault.rs`, `check.rs`,
//! `defect.rs`.
//!
//! # Kernel-faithful mode
//!
//! [`Fidelity::Kernel`] reproduces Linux [`Fidelity::KERNEL_VERSION`]
//! (7.2.13), its error paths and its one broken data path included;
//! Debian's 7.3.4 has byte-identical `dma-buf-mapping.c` and
//! `vfio_pci_dmabuf.c`, so it is 7.3.4 as well for everything modelled.
//! [`Fidelity::Fixed`] (the default) is what `kernel-patches/` (0001-0004, 0008)
//! make of that code, the alternative proposed for the RFC.
//! [`Fidelity::KernelPre70Rc6`] adds the one behaviour of the 6.19 to
//! 7.0-rc5 trees 7.2.13 no longer has, defect 5. The differences are
//! [`DEFECTS`], one entry each (what each mode does, the C function and its
//! lines in 7.2.13 and 7.3.4, the tests, and what the kernel lab saw on the
//! as-shipped and the patched lab kernel); each shows as one branch of an
//! error label (`err_unmap_dma()`, `err_free_state()`, the `dma_buf_fd()`
//! failure, ...). What the kernel lab measured on running kernels is in
//! `kernel-lab/FINDINGS.md`.
//!
//! Also flagged, identical in all modes: a range longer than
//! `MAX_SG_ENT_SZ` on the per-range path is mapped by one `dma_map_phys()`
//! but unmapped by `dma_buf_free_sgt()` (and by patch 0004's unwind) in
//! `MAX_SG_ENT_SZ` pieces, one `dma_unmap_phys()` per sg entry. The model's
//! allocator accepts piecewise frees; dma-iommu's `free_iova()` of the first
//! piece may release the whole IOVA node while the rest is still mapped
//! (not verified). And on the BUS_ADDR path, revocation tears nothing down
//! in any IOMMU: the peer still reaches the BAR by bus address until it
//! stops on its own, whenever the device decodes memory
//! ([`Shim::peer_reach`]; the same holds for dma-direct, `iommu=pt`). While
//! `PCI_COMMAND_MEMORY` is clear the BAR answers nothing on any path.
//!
//! # Revocation as modelled (read from 7.2.13)
//!
//! `vfio_pci_dma_buf_attach()` refuses an importer without
//! `invalidate_mappings` (`dma_buf_attach_revocable()`, EOPNOTSUPP, after
//! the peer2peer and revoked checks); 7.2.13 has no `pin` op.
//! `vfio_pci_dma_buf_move()` calls `dma_buf_invalidate_mappings()` for each
//! listed dma-buf whose state changes. Every mapping takes a `kref`
//! (`vfio_pci_dmabuf.c:68`, put at :81); a revocation drops the registered
//! reference and waits for the completion (:357-358), so it returns only
//! once every importer has unmapped: importers that unmap inside
//! `invalidate_mappings` do so at once, the others are waited for
//! ([`Events::revoke_waits`]). `vfio_pci_dma_buf_cleanup()` revokes through
//! that same path first, then takes each dma-buf off the list and drops its
//! registration. iommufd's importer ([`Shim::iommufd_map_file`]) is one more
//! attachment: its `invalidate_mappings` (`iopt_revoke_notify()`) unmaps the
//! area for good, and `vfio_pci_dma_buf_iommufd_map()` refuses a dma-buf of
//! more than one range. Release is modelled synchronously, so every listed
//! dma-buf's file is live (`get_file_active()` always succeeds).
//!
//! # Read against 7.2.13: what the model does not follow
//!
//! A reading of Debian's 7.2.13 source
//! (`kernel-lab/lab-kernel-runs/2026-12-01-kernel-track.md`, section 2)
//! listed ten differences from the 6.19-7.0 model; the model follows them
//! (each item's doc names its 7.2.13 function and lines) except:
//! `dma_resv_wait_timeout()` on revoke (the model has no fences); a BAR
//! that is present but whose region request or iomap failed
//! (`vfio_pci_core_map_bars()`: `non_mappable_bars`, EBUSY, ENOMEM) is
//! ENODEV in 7.2.13's region check, while the validator's device knows only
//! absent BARs (its `BarAbsent`); the device never unregisters, so `vfio_device_try_get_registration()`
//! (:287-290) never fails; `dma_buf_export()` failing is ENOMEM only; 7.2.13's
//! `dma_iova_destroy()` hands back IOVA with the linked size where 7.3.4
//! uses the span's, which an allocator without an rcache cannot tell apart
//! (counted in [`Events::short_iova_frees`], documented on the model's
//! `dma_iova_destroy()`); and the NULL check after
//! `dma_resv_assert_held()` in `dma_buf_phys_vec_to_sgt()` (:114-118) has no
//! model (every call has an attachment and a provider).
//!
//! # Simplifications
//!
//! The IOVA allocator is first-fit from a cursor at page granularity (no
//! power-of-two rounding, no per-CPU caches); `dma_iova_link()`/`iommu_map()`
//! are atomic per call; `dma_map_phys()` on dma-direct returns the physical
//! address unchanged; iommufd areas start on a page boundary.

mod check;
mod defect;
mod dma_buf;
mod dma_buf_mapping;
mod fault;
mod importer;
mod iommu;
mod iommufd {
    pub(crate) mod io_pagetable;
    pub(crate) mod pages;
}
mod p2p;
mod sg;
mod shim;
mod state;
mod vfio_pci_dmabuf;

pub use check::{check_invariants, Violation};
pub use defect::{Defect, DefectStatus, Injection, LabTrace, DEFECTS};
pub use dma_buf::{AttachError, Attachment, DmaBuf};
pub use dma_buf_mapping::{DmaBufDma, IovaState, MapError, MapPath};
pub use fault::{FaultPlan, FaultSite, Fidelity};
pub use importer::{DmaOps, Importer, ImporterDesc};
pub use iommu::{Extent, Iommu, IommuModel, IommuSnapshot, IommuStats};
pub use iommufd::io_pagetable::{Ioas, IoasId, IommufdError, IoptAreaId};
pub use iommufd::pages::IoptPages;
pub use p2p::{P2pMapType, P2pProvider};
pub use sg::{calc_sg_nents, max_sg_ent_sz, SgEntry, SgTable};
pub use shim::{Config, Shim};
pub use state::{Alloc, Anomaly, AttachmentId, Counters, DmaBufId, Events, ImporterId, Ledger, MappingId, Snapshot};
pub use validator::{Bar, BarKind, Device, Errno, PageSize, PhysVec, Policy, Reject};
pub use vfio_pci_dmabuf::{ExportError, VfioPciCoreDevice};
