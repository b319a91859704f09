//! The kernel side of `VFIO_DEVICE_FEATURE_DMA_BUF` as a model (Linux 7.2).
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
//!
//! [`check_invariants`] is the one checker every test and fuzzer calls.
//!
//! # Kernel-faithful mode
//!
//! [`Fidelity::Kernel`] reproduces the error paths and one data path as
//! written in `drivers/dma-buf/dma-buf-mapping.c`,
//! `drivers/vfio/pci/vfio_pci_dmabuf.c` and `drivers/iommu/dma-iommu.c` of
//! the torvalds/linux trees read for this model (6.19 through 7.0; no 7.2
//! source was at hand; the kernel lab's importer, issue 7, checks them on
//! the real 7.2 and 7.3 kernels and has confirmed point 1);
//! [`Fidelity::Fixed`] (the default) is the alternative proposed for the
//! RFC. The differences, each covered by a test in `tests/faults.rs` or
//! `tests/paths.rs`:
//!
//! 1. **IOVA link offset** (`dma_buf_phys_vec_to_sgt()`): every range is
//!    linked with `dma_iova_link(dev, state, paddr, 0, len, ...)`, offset 0,
//!    and `dma_iova_link()` maps at `state->addr + offset`. So with more
//!    than one range on the IOVA path, range 1 lands on the IOVA of range 0
//!    and `iommu_map()` meets a present PTE. What it answers depends on the
//!    IOMMU driver ([`IommuModel`], [`Shim::set_iommu_model`]): Intel VT-d's
//!    generic page table refuses with `EADDRINUSE` (the default model),
//!    io-pgtable-arm with `EEXIST`; either way the map fails and is unwound.
//!    (A driver that overwrote or kept the old PTE instead would return an
//!    sg entry covering `size` bytes of which only the first range's length
//!    is translated, to the wrong range.) Fixed: offset = `mapped_len`.
//!    **CONFIRMED on the running kernel** (`kernel-lab/FINDINGS.md`, F1):
//!    on 7.2.13 and 7.3.4 under QEMU `intel-iommu` (translating domain),
//!    `dma_buf_map_attachment()` of any dma-buf with two or more ranges
//!    fails with `EADDRINUSE` (98), every one-range dma-buf maps (8 GiB
//!    included), and the fix (offset = bytes already linked) was
//!    demonstrated by the lab fixture linking the same ranges by hand: every
//!    range links and the peer reads the right BAR bytes through it.
//! 2. **IOVA leak on the first link failure**: `err_unmap_dma` does nothing
//!    when `i == 0`, so if `dma_iova_link()` fails for range 0 the span from
//!    `dma_iova_try_alloc()` is never freed. Fixed: `dma_iova_free()`.
//! 3. **IOVA leak when `sg_alloc_table()` fails** after a successful
//!    `dma_iova_try_alloc()`: `err_free_state` only `kfree()`s the state.
//!    Fixed: `dma_iova_free()` first.
//! 4. **Unmapping unfilled entries**: on a per-range `dma_map_phys()` failure
//!    at range `i > 0`, the unwind walks all `nents` entries with
//!    `for_each_sgtable_dma_sg()`, including the zeroed ones never filled,
//!    calling `dma_unmap_phys(dev, 0, 0, ...)` for each. The model records
//!    these ([`Events::spurious_unmaps`]) and otherwise ignores them; what a
//!    real dma-iommu does with (0, 0) was not verified. Fixed: unmap exactly
//!    the `i` ranges mapped, one `dma_unmap_phys()` per `dma_map_phys()`.
//! 5. **`dma_buf_fd()` failure** in `vfio_pci_core_feature_dma_buf()`:
//!    `err_dma_buf` calls `dma_buf_put()`, which drops the last reference and
//!    (deferred) runs `vfio_pci_dma_buf_release()`: list removal,
//!    registration put, `kfree(phys_vec)`, `kfree(priv)`. The error path
//!    then falls through `err_dev_put` and `err_free_phys`, putting the
//!    registration and freeing `phys_vec` and `priv` a second time; the
//!    deferred release then reads the freed `priv`. Reachable from user
//!    space with a full fd table (EMFILE). The model records the double
//!    put, the double frees and the use-after-free ([`Anomaly`]). Fixed:
//!    return right after `dma_buf_put()`.
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
//! answers nothing on any path (measured: `kernel-lab/FINDINGS.md`, F3).
//!
//! # Kernel-lab corrections
//!
//! Three predictions the kernel lab's importer (`kernel-lab/FINDINGS.md`)
//! measured as wrong on 7.2.13 and 7.3.4, now modelled, each with a
//! regression test in `tests/lab_findings.rs`: the collision errno is the
//! IOMMU driver's ([`IommuModel`], F1); `VFIO_DEVICE_RESET` without a reset
//! method is EINVAL and revokes nothing ([`Shim::try_reset`], F2); a BAR
//! with memory decoding off is unreachable ([`Shim::peer_reach`], F3).
//!
//! # Revocation as modelled
//!
//! `vfio_pci_dma_buf_move()` and `vfio_pci_dma_buf_cleanup()` call
//! `dma_buf_move_notify()` for each listed dma-buf; importers must be dynamic
//! (`vfio_pci_dma_buf_pin()` returns EOPNOTSUPP, so a static importer cannot
//! attach). Per the 7.2 revoke semantics the model assumes (from the
//! dma-buf revoke series; not read from a 7.2 tree), a revocation returns
//! only once every importer has unmapped: importers that unmap inside
//! `move_notify` do so at once, the others are waited for
//! ([`Events::revoke_waits`]). Release is modelled synchronously, so every
//! listed dma-buf's file is live (`get_file_active()` always succeeds).
//!
//! # Simplifications
//!
//! The IOVA allocator is first-fit from a cursor at page granularity (no
//! power-of-two rounding, no per-CPU caches); `dma_iova_link()`/`iommu_map()`
//! are atomic per call; `dma_map_phys()` on dma-direct returns the physical
//! address unchanged; the device never unregisters, so
//! `vfio_device_try_get_registration()` always succeeds.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod check;
mod fault;
mod iommu;
mod p2p;
mod sg;
mod shim;

pub use check::{check_invariants, Violation};
pub use fault::{FaultPlan, FaultSite, Fidelity};
pub use iommu::{Extent, Iommu, IommuModel, IommuOp, IommuSnapshot, IommuStats};
pub use p2p::{P2pMapType, P2pProvider};
pub use sg::{calc_sg_nents, max_sg_ent_sz, SgEntry, SgTable};
pub use shim::{
    Anomaly, AttachError, Attachment, AttachmentId, Config, Counters, DmaBuf, DmaBufDma, DmaBufId, DmaOps, Events,
    ExportError, Importer, ImporterDesc, ImporterId, IovaState, MapError, MapPath, MappingId, Shim, Snapshot,
    VfioPciCoreDevice,
};
pub use validator::{Bar, BarKind, Device, Errno, PageSize, PhysVec, Policy, Reject};
