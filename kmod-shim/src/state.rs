//! The model's bookkeeping, which has no C file: object ids, the ledger of
//! live kernel allocations, counters, events, snapshots and anomalies.

use std::fmt;

use crate::iommu::IommuSnapshot;

/// A dma-buf, by index (the model's stand-in for its fd / `struct dma_buf *`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DmaBufId(pub usize);
/// An importer device, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImporterId(pub usize);
/// An attachment (`struct dma_buf_attachment *`), by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttachmentId(pub usize);
/// A mapping (`struct sg_table *` returned by `map_dma_buf`), by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MappingId(pub usize);

/// A kernel object the model allocates and frees: the names the fault
/// sites, the unwinds and [`crate::check_invariants`] share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alloc {
    /// `dma_ranges = memdup_array_user()` in `vfio_pci_core_feature_dma_buf()`:
    /// the kernel's copy of the user's range array, freed once the
    /// physical vectors are filled.
    RangeCopy,
    /// `kzalloc(sizeof(*priv))`: `struct vfio_pci_dma_buf`.
    Priv,
    /// `kcalloc(nr_ranges, sizeof(*priv->phys_vec))`: `priv->phys_vec`.
    PhysVec,
    /// `dma_buf_export()`: `struct dma_buf` and its file.
    DmaBufFile,
    /// `dma_buf_dynamic_attach()`: `kzalloc(sizeof(*attach))`.
    Attachment,
    /// `kzalloc(sizeof(*dma))` in `dma_buf_phys_vec_to_sgt()`: `struct dma_buf_dma`.
    DmaBufDma,
    /// `kzalloc(sizeof(*dma->state))`: `struct dma_iova_state`, on the
    /// host-bridge path only.
    IovaState,
    /// `sg_alloc_table()`: the scatterlist.
    SgTable,
    /// `dma_iova_try_alloc()`: an IOVA span (IOVA space, not memory; not a
    /// [`crate::FaultSite::Alloc`] site).
    IovaSpan,
    /// `iopt_alloc_pages()` in `iopt_alloc_dmabuf_pages()`: iommufd's
    /// `struct iopt_pages` for a dma-buf mapped with `IOMMU_IOAS_MAP_FILE`.
    IoptPages,
}

impl Alloc {
    /// Every allocation kind, in the order the kernel makes them.
    pub const ALL: [Alloc; 10] = [
        Alloc::RangeCopy,
        Alloc::Priv,
        Alloc::PhysVec,
        Alloc::DmaBufFile,
        Alloc::Attachment,
        Alloc::DmaBufDma,
        Alloc::IovaState,
        Alloc::SgTable,
        Alloc::IovaSpan,
        Alloc::IoptPages,
    ];

    /// The kernel expression that allocates it.
    pub const fn kernel_name(self) -> &'static str {
        match self {
            Alloc::RangeCopy => "dma_ranges",
            Alloc::Priv => "priv",
            Alloc::PhysVec => "priv->phys_vec",
            Alloc::DmaBufFile => "priv->dmabuf",
            Alloc::Attachment => "attach",
            Alloc::DmaBufDma => "dma",
            Alloc::IovaState => "dma->state",
            Alloc::SgTable => "dma->sgt",
            Alloc::IovaSpan => "dma->state->addr",
            Alloc::IoptPages => "pages",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Alloc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kernel_name())
    }
}

/// Live allocations per [`Alloc`]. Counts are signed so that the
/// kernel-faithful mode's double frees show as negative numbers instead of
/// wrapping.
///
/// # Invariants
/// Outside a kernel-faithful anomaly, each count is what the live objects
/// hold: `priv`, `phys_vec` and the file once per dma-buf, one attachment
/// each, `dma`, the sg table (and on the host-bridge path the state) once per
/// mapping, one IOVA span per IOVA-path mapping, one `iopt_pages` per
/// iommufd area, no range copy. Checked by
/// [`crate::check_invariants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ledger {
    live: [i64; Alloc::ALL.len()],
}

impl Ledger {
    /// Live allocations of `kind`.
    pub fn live(&self, kind: Alloc) -> i64 {
        self.live[kind.index()]
    }

    /// Every kind with its live count.
    pub fn entries(&self) -> impl Iterator<Item = (Alloc, i64)> + '_ {
        Alloc::ALL.into_iter().map(|a| (a, self.live(a)))
    }

    /// All live allocations together.
    pub fn total(&self) -> i64 {
        self.live.iter().sum()
    }

    pub(crate) fn alloc(&mut self, kind: Alloc) {
        self.live[kind.index()] += 1;
    }

    pub(crate) fn free(&mut self, kind: Alloc) {
        self.live[kind.index()] -= 1;
    }

    pub(crate) fn add(&mut self, kind: Alloc, n: i64) {
        self.live[kind.index()] += n;
    }
}

/// Live-object counters: what must be identical before and after a failed
/// call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Modelled kernel allocations alive, by kind.
    pub ledger: Ledger,
    /// `vfio_device_try_get_registration()` references held by dma-bufs.
    pub registrations: i64,
    /// Live dma-bufs.
    pub dmabufs: usize,
    /// Live attachments.
    pub attachments: usize,
    /// Live mappings.
    pub mappings: usize,
}

/// Event totals (not restored by a failed call; they count what happened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events {
    /// `invalidate_mappings` calls: `dma_buf_invalidate_mappings()`
    /// deliveries to attachments (the kernel lab's importer counts the
    /// same).
    pub invalidations: u64,
    /// Mappings a revocation had to wait for: `wait_for_completion()` in
    /// `vfio_pci_dma_buf_move()` returned only once the importer unmapped
    /// them after its `invalidate_mappings` returned.
    pub revoke_waits: u64,
    /// Zero-length `dma_unmap_phys()` calls of the kernel-faithful unwind.
    pub spurious_unmaps: u64,
    /// Scatterlist arrays `dma_buf_free_sgt()` did not free (defect 6, the
    /// kernel-faithful mode): one per unmapped mapping.
    pub sg_table_leaks: u64,
    /// `dma_iova_destroy()` calls with fewer bytes linked than the span
    /// holds (a link failed at range `i > 0`): where 7.2.13 hands the IOVA
    /// back with the linked size and 7.3.4 with the span's.
    pub short_iova_frees: u64,
}

/// Everything a failed call must leave as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Live-object counters.
    pub counters: Counters,
    /// Every importer's IOMMU state.
    pub iommus: Vec<Option<IommuSnapshot>>,
    /// `vdev->dmabufs`.
    pub list: Vec<usize>,
    /// Live dma-bufs: index, revoked, vdev, refs.
    pub dmabufs: Vec<(usize, bool, bool, u32)>,
    /// Every IOAS's domain.
    pub ioas: Vec<IommuSnapshot>,
    /// Live iommufd areas.
    pub iommufd: Vec<usize>,
}

/// Something the kernel-faithful mode did that the kernel must not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Anomaly {
    /// IOVA space allocated by `dma_iova_try_alloc()` was never freed.
    IovaLeak {
        /// Bytes leaked.
        bytes: u64,
    },
    /// A `vfio_device_put_registration()` without a matching get.
    RegistrationUnderflow,
    /// Memory freed twice (named by its kernel field).
    DoubleFree(&'static str),
    /// `vfio_pci_dma_buf_release()` ran on a `priv` the error path had
    /// already freed.
    UseAfterFree(&'static str),
    /// An importer detached with mappings still live (they were unmapped).
    DetachWithMappings,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::IovaLeak { bytes } => write!(f, "{bytes} bytes of IOVA space never freed"),
            Anomaly::RegistrationUnderflow => f.write_str("vfio_device_put_registration() without a get"),
            Anomaly::DoubleFree(what) => write!(f, "{what} freed twice"),
            Anomaly::UseAfterFree(what) => write!(f, "use after free: {what}"),
            Anomaly::DetachWithMappings => f.write_str("dma_buf_detach() with mappings still live"),
        }
    }
}
