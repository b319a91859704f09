//! The vfio-pci core device, its dma-bufs, the importers and their
//! attachments and mappings: `drivers/vfio/pci/vfio_pci_dmabuf.c`,
//! `drivers/dma-buf/dma-buf-mapping.c` and the parts of
//! `drivers/dma-buf/dma-buf.c` they rely on.

use uapi::{DeviceFeatureDmaBufSingle, Request};
use validator::{Device, Outcome, PhysVec, Policy, Reject};

use crate::fault::{FaultPlan, FaultSite, Faults, Fidelity};
use crate::iommu::{Iommu, IommuModel, IommuSnapshot};
use crate::p2p::{P2pMapType, P2pProvider};
use crate::sg::{calc_sg_nents, max_sg_ent_sz, SgEntry, SgTable};
use crate::Errno;

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
    /// `dma_buf_attach_ops.allow_peer2peer`.
    pub peer2peer: bool,
    /// Whether the importer is dynamic, i.e. has
    /// `dma_buf_attach_ops.move_notify` (the revocation callback). A static
    /// importer needs `pin`, which vfio refuses.
    pub move_notify: bool,
    /// Whether its `move_notify` unmaps at once. If not, the importer unmaps
    /// later and revocation waits for it (counted in
    /// [`Events::revoke_waits`]).
    pub unmap_in_move_notify: bool,
    /// `pci_p2pdma_map_type(provider, dev)` for this importer.
    pub map_type: P2pMapType,
    /// The device's DMA ops.
    pub dma: DmaOps,
}

impl ImporterDesc {
    /// A dynamic, P2P-capable importer behind the same switch (BUS_ADDR).
    pub const fn bus_peer() -> Self {
        Self {
            peer2peer: true,
            move_notify: true,
            unmap_in_move_notify: true,
            map_type: P2pMapType::BusAddr,
            dma: DmaOps::Direct,
        }
    }

    /// A dynamic, P2P-capable importer through the host bridge behind an
    /// IOMMU whose aperture is `[start, end)`.
    pub const fn iommu_peer(start: u64, end: u64) -> Self {
        Self {
            peer2peer: true,
            move_notify: true,
            unmap_in_move_notify: true,
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
    dmabufs: Vec<usize>,
}

impl VfioPciCoreDevice {
    /// The dma-bufs on `vdev->dmabufs`.
    pub fn dmabufs(&self) -> impl Iterator<Item = DmaBufId> + '_ {
        self.dmabufs.iter().map(|&i| DmaBufId(i))
    }
}

/// `struct vfio_pci_dma_buf` together with the `struct dma_buf` it backs.
///
/// # Invariants
/// `size` is the sum of `phys_vec` lengths; a dma-buf on the device's list
/// has `vdev` set and holds one registration; a revoked dma-buf has no
/// mappings once revocation returns; `vdev` cleared implies revoked for
/// good.
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
    refs: u32,
    fd_open: bool,
    attachments: Vec<usize>,
}

/// `struct dma_buf_attachment`.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The dma-buf.
    pub dmabuf: DmaBufId,
    /// The importer.
    pub importer: ImporterId,
    mappings: Vec<usize>,
}

/// `struct dma_iova_state`: `size == 0` means `dma_use_iova()` is false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IovaState {
    /// Start of the IOVA span.
    pub addr: u64,
    /// Its size; 0 if the IOVA API is not in use.
    pub size: u64,
}

/// `struct dma_buf_dma`: one mapping, what `dma_buf_free_sgt()` undoes.
#[derive(Debug, Clone)]
pub struct DmaBufDma {
    /// The attachment it was made for.
    pub attachment: AttachmentId,
    /// `sgt`.
    pub sgt: SgTable,
    /// `state`: `None` on the BUS_ADDR path.
    pub state: Option<IovaState>,
    /// `size`.
    pub size: u64,
}

impl DmaBufDma {
    /// Which path the mapping took.
    pub fn path(&self) -> MapPath {
        match self.state {
            None => MapPath::BusAddr,
            Some(s) if s.size != 0 => MapPath::IovaSpan,
            Some(_) => MapPath::PerRange,
        }
    }
}

/// The path `dma_buf_phys_vec_to_sgt()` took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapPath {
    /// `PCI_P2PDMA_MAP_BUS_ADDR`: bus addresses, no IOMMU.
    BusAddr,
    /// Through the host bridge, one IOVA span (`dma_iova_link()`).
    IovaSpan,
    /// Through the host bridge, one `dma_map_phys()` per range.
    PerRange,
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

/// Live-object counters: what must be identical before and after a failed
/// call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Modelled kernel allocations alive.
    pub kmalloc_live: i64,
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
    /// `dma_buf_move_notify()` deliveries to attachments.
    pub move_notifies: u64,
    /// Mappings revocation had to wait for (the importer unmapped after its
    /// `move_notify` returned).
    pub revoke_waits: u64,
    /// Zero-length `dma_unmap_phys()` calls of the kernel-faithful unwind.
    pub spurious_unmaps: u64,
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

/// Why an attach failed (`dma_buf_dynamic_attach()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// The dma-buf was released. EBADF.
    NoSuchDmaBuf,
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
            AttachError::NoMem => Errno::ENOMEM,
            AttachError::NoPeer2Peer | AttachError::PinNotSupported => Errno::EOPNOTSUPP,
            AttachError::Revoked => Errno::ENODEV,
        }
    }
}

/// Why a map failed (`vfio_pci_dma_buf_map()` /
/// `dma_buf_phys_vec_to_sgt()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// The attachment is gone. EBADF.
    NoSuchAttachment,
    /// `vfio_pci_dma_buf_map()`: `priv->revoked`. ENODEV.
    Revoked,
    /// A `kzalloc()` (`dma`, `state`) or `sg_alloc_table()` failed. ENOMEM.
    NoMem,
    /// `pci_p2pdma_map_type()` said `PCI_P2PDMA_MAP_NOT_SUPPORTED`. EINVAL.
    P2pNotSupported,
    /// `calc_sg_nents()` overflowed to 0 and `sg_alloc_table()` refused.
    /// EINVAL.
    SgNentsOverflow,
    /// `dma_iova_link()` failed for range `index`.
    IovaLink {
        /// The range.
        index: usize,
        /// What it returned.
        errno: Errno,
    },
    /// `dma_map_phys()` returned `DMA_MAPPING_ERROR` for range `index`
    /// (`dma_mapping_error()`: ENOMEM).
    MapPhys {
        /// The range.
        index: usize,
    },
    /// `dma_iova_sync()` failed. ENOMEM in the model.
    IovaSync,
}

impl MapError {
    /// The errno `map_dma_buf` returns (as an `ERR_PTR`).
    pub fn errno(&self) -> Errno {
        match self {
            MapError::NoSuchAttachment => Errno::EBADF,
            MapError::Revoked => Errno::ENODEV,
            MapError::NoMem | MapError::MapPhys { .. } | MapError::IovaSync => Errno::ENOMEM,
            MapError::P2pNotSupported | MapError::SgNentsOverflow => Errno::EINVAL,
            MapError::IovaLink { errno, .. } => *errno,
        }
    }
}

/// How the shim behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Kernel error paths as written, or the corrected ones.
    pub fidelity: Fidelity,
    /// Validator policy for exports.
    pub policy: Policy,
    /// `pci_bus_address() - pci_resource_start()`, wrapping.
    pub bus_offset: u64,
    /// Largest `sg_alloc_table()` the model grants (the kernel would fail
    /// with ENOMEM long before 2^31 entries).
    pub sg_max_entries: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { fidelity: Fidelity::Fixed, policy: Policy::Linux, bus_offset: 0, sg_max_entries: 1 << 24 }
    }
}

/// The kernel side of one vfio-pci device: the device, its dma-bufs, the
/// importers, their attachments and mappings, and a fault plan.
#[derive(Debug, Clone)]
pub struct Shim {
    cfg: Config,
    iommu_model: IommuModel,
    vdev: VfioPciCoreDevice,
    dmabufs: Vec<Option<DmaBuf>>,
    importers: Vec<Importer>,
    attachments: Vec<Option<Attachment>>,
    mappings: Vec<Option<DmaBufDma>>,
    faults: Faults,
    counters: Counters,
    events: Events,
    anomalies: Vec<Anomaly>,
}

/// What `dma_buf_phys_vec_to_sgt()` needs besides the importer.
struct MapCtx<'a> {
    faults: &'a mut Faults,
    counters: &'a mut Counters,
    events: &'a mut Events,
    anomalies: &'a mut Vec<Anomaly>,
    cfg: Config,
    page: u64,
}

impl MapCtx<'_> {
    fn kmalloc(&mut self) -> bool {
        if self.faults.hit(FaultSite::Alloc) {
            return false;
        }
        self.counters.kmalloc_live += 1;
        true
    }

    fn kfree(&mut self) {
        self.counters.kmalloc_live -= 1;
    }
}

impl Shim {
    /// An open device with memory decoding on and no dma-bufs.
    pub fn new(dev: Device, cfg: Config) -> Self {
        Self {
            cfg,
            iommu_model: IommuModel::default(),
            vdev: VfioPciCoreDevice {
                dev,
                memory_enabled: true,
                open: true,
                reset_works: true,
                bus_offset: cfg.bus_offset,
                dmabufs: Vec::new(),
            },
            dmabufs: Vec::new(),
            importers: Vec::new(),
            attachments: Vec::new(),
            mappings: Vec::new(),
            faults: Faults::default(),
            counters: Counters::default(),
            events: Events::default(),
            anomalies: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        self.cfg
    }

    /// The device.
    pub fn device(&self) -> &VfioPciCoreDevice {
        &self.vdev
    }

    /// Which IOMMU driver the importers' domains model (default
    /// [`IommuModel::IntelVtd`], the one the kernel lab measured). Applies to
    /// the importers already added and to those added later.
    pub fn set_iommu_model(&mut self, model: IommuModel) {
        self.iommu_model = model;
        for imp in &mut self.importers {
            if let Some(io) = imp.iommu.as_mut() {
                io.set_model(model);
            }
        }
    }

    /// The IOMMU driver model.
    pub fn iommu_model(&self) -> IommuModel {
        self.iommu_model
    }

    /// Whether the device has a reset method (`vdev->reset_works`); without
    /// one, [`Shim::try_reset`] is EINVAL and touches nothing. True by
    /// default.
    pub fn set_reset_supported(&mut self, works: bool) {
        self.vdev.reset_works = works;
    }

    /// Arms a fault plan (or clears it with `None`); call counters restart.
    pub fn arm_fault(&mut self, plan: Option<FaultPlan>) {
        self.faults.arm(plan);
    }

    /// The plan that fired since the last [`Shim::arm_fault`], if any.
    pub fn fault_fired(&self) -> Option<FaultPlan> {
        self.faults.fired()
    }

    /// Calls made at `site` since the last [`Shim::arm_fault`]: a sweep runs
    /// an operation once unfaulted to learn how many steps to try.
    pub fn fault_calls(&self, site: FaultSite) -> u64 {
        self.faults.calls(site)
    }

    /// Live-object counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Event totals.
    pub fn events(&self) -> Events {
        self.events
    }

    /// What the kernel-faithful mode did wrong so far.
    pub fn anomalies(&self) -> &[Anomaly] {
        &self.anomalies
    }

    /// Everything a failed call must leave as it was.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counters: self.counters,
            iommus: self.importers.iter().map(|i| i.iommu.as_ref().map(Iommu::snapshot)).collect(),
            list: self.vdev.dmabufs.clone(),
            dmabufs: self.dma_bufs().map(|(i, d)| (i.0, d.revoked, d.vdev, d.refs)).collect(),
        }
    }

    /// Adds an importer device; each gets its own IOMMU domain.
    pub fn add_importer(&mut self, desc: ImporterDesc) -> ImporterId {
        let page = self.vdev.dev.page_size.bytes();
        let iommu = match desc.dma {
            DmaOps::Direct => None,
            DmaOps::Iommu { aperture_start, aperture_end, .. } => {
                Some(Iommu::new(aperture_start, aperture_end, page).with_model(self.iommu_model))
            }
        };
        self.importers.push(Importer { desc, iommu });
        ImporterId(self.importers.len() - 1)
    }

    /// An importer.
    pub fn importer(&self, id: ImporterId) -> &Importer {
        &self.importers[id.0]
    }

    /// An importer, mutably (to turn IOMMU logging on).
    pub fn importer_mut(&mut self, id: ImporterId) -> &mut Importer {
        &mut self.importers[id.0]
    }

    /// A live dma-buf.
    pub fn dma_buf(&self, id: DmaBufId) -> Option<&DmaBuf> {
        self.dmabufs.get(id.0)?.as_ref()
    }

    /// A live attachment.
    pub fn attachment(&self, id: AttachmentId) -> Option<&Attachment> {
        self.attachments.get(id.0)?.as_ref()
    }

    /// A live mapping.
    pub fn mapping(&self, id: MappingId) -> Option<&DmaBufDma> {
        self.mappings.get(id.0)?.as_ref()
    }

    /// The sg table of a live mapping.
    pub fn sg_table(&self, id: MappingId) -> Option<&SgTable> {
        self.mapping(id).map(|m| &m.sgt)
    }

    /// Live mappings, for checkers.
    pub fn mappings(&self) -> impl Iterator<Item = (MappingId, &DmaBufDma)> {
        self.mappings.iter().enumerate().filter_map(|(i, m)| m.as_ref().map(|m| (MappingId(i), m)))
    }

    /// Live dma-bufs, for checkers.
    pub fn dma_bufs(&self) -> impl Iterator<Item = (DmaBufId, &DmaBuf)> {
        self.dmabufs.iter().enumerate().filter_map(|(i, d)| d.as_ref().map(|d| (DmaBufId(i), d)))
    }

    /// Importers, for checkers.
    pub fn importers(&self) -> impl Iterator<Item = (ImporterId, &Importer)> {
        self.importers.iter().enumerate().map(|(i, m)| (ImporterId(i), m))
    }

    /// Model memory: phys_vecs, sg tables and IOMMU state, in bytes.
    pub fn model_bytes(&self) -> usize {
        let bufs: usize = self.dma_bufs().map(|(_, d)| size_of::<DmaBuf>() + d.phys_vec.capacity() * 16).sum();
        let maps: usize = self
            .mappings()
            .map(|(_, m)| size_of::<DmaBufDma>() + m.sgt.entries.capacity() * size_of::<SgEntry>())
            .sum();
        let iommus: usize = self.importers.iter().filter_map(|i| i.iommu.as_ref()).map(Iommu::model_bytes).sum();
        bufs + maps + iommus
    }

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
        let imp = &self.importers[importer.0];
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
    fn in_bar(&self, phys: u64) -> Option<(u64, u64)> {
        self.vdev.dev.bars.iter().find_map(|b| {
            let end = b.start.checked_add(b.len)?;
            (!b.is_absent() && phys >= b.start && phys < end).then(|| (phys, end - phys))
        })
    }

    // ----- device -------------------------------------------------------

    /// Opens the device (`vfio_pci_core_enable()`).
    pub fn open_device(&mut self) {
        self.vdev.open = true;
    }

    /// `vfio_pci_core_close_device()` → `vfio_pci_dma_buf_cleanup()`: every
    /// dma-buf leaves the list, loses its device and is revoked for good;
    /// the dma-bufs themselves live on until their last reference goes.
    pub fn close_device(&mut self) {
        let list = std::mem::take(&mut self.vdev.dmabufs);
        for i in list {
            let Some(buf) = self.dmabufs[i].as_mut() else { continue };
            buf.vdev = false;
            buf.revoked = true;
            self.move_notify(i, true);
            self.put_registration();
        }
        self.vdev.open = false;
    }

    /// A write of `PCI_COMMAND` that changes the memory bit:
    /// `vfio_pci_dma_buf_move(vdev, !enabled)` under the memory lock.
    pub fn set_memory_enabled(&mut self, enabled: bool) {
        self.vdev.memory_enabled = enabled;
        self.dma_buf_move(!enabled);
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
        self.dma_buf_move(true);
        if self.vdev.memory_enabled {
            self.dma_buf_move(false);
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
    fn dma_buf_move(&mut self, revoked: bool) {
        for i in self.vdev.dmabufs.clone() {
            let Some(buf) = self.dmabufs[i].as_mut() else { continue };
            if buf.revoked != revoked {
                buf.revoked = revoked;
                self.move_notify(i, revoked);
            }
        }
    }

    /// `dma_buf_move_notify()` to every attachment, then, for a revocation,
    /// the wait for the mappings the importers did not drop at once.
    fn move_notify(&mut self, buf: usize, revoked: bool) {
        let atts = self.dmabufs[buf].as_ref().map(|d| d.attachments.clone()).unwrap_or_default();
        for &a in &atts {
            self.events.move_notifies += 1;
            let imp = self.attachments[a].as_ref().map(|x| x.importer.0);
            if imp.is_some_and(|imp| self.importers[imp].desc.unmap_in_move_notify) {
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

    fn unmap_all(&mut self, att: usize) {
        let maps = self.attachments[att].as_ref().map(|x| x.mappings.clone()).unwrap_or_default();
        for m in maps {
            self.unmap(MappingId(m));
        }
    }

    fn put_registration(&mut self) {
        self.counters.registrations -= 1;
        if self.counters.registrations < 0 {
            self.anomalies.push(Anomaly::RegistrationUnderflow);
        }
    }

    // ----- export -------------------------------------------------------

    fn kmalloc(&mut self) -> bool {
        if self.faults.hit(FaultSite::Alloc) {
            return false;
        }
        self.counters.kmalloc_live += 1;
        true
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
        let stage = |r: &Reject| match r {
            Reject::RangeZeroLength { .. }
            | Reject::RangeUnaligned { .. }
            | Reject::TotalLengthOverflow { .. }
            | Reject::TotalLengthSwiotlbBit => 1,
            Reject::BarNotMmio
            | Reject::StrictRangeOutsideBar { .. }
            | Reject::PhysAddrOverflow { .. }
            | Reject::RangeBeyondBar { .. } => 2,
            _ => 0,
        };
        // Checks made before memdup_array_user() allocates.
        if let Err(r) = verdict {
            if stage(&r) == 0 {
                return Err(ExportError::Rejected(r));
            }
        }
        let export = match verdict {
            Ok(Outcome::DmaBuf(e)) => Some(e),
            Ok(_) => return Err(ExportError::NotAnExport),
            Err(_) => None,
        };
        // memdup_array_user().
        if !self.kmalloc() {
            return Err(ExportError::RangeCopyNoMem);
        }
        // validate_dmabuf_input().
        if let Err(r) = verdict {
            if stage(&r) == 1 {
                self.counters.kmalloc_live -= 1;
                return Err(ExportError::Rejected(r));
            }
        }
        if !self.kmalloc() {
            self.counters.kmalloc_live -= 1;
            return Err(ExportError::PrivNoMem);
        }
        if !self.kmalloc() {
            self.counters.kmalloc_live -= 2;
            return Err(ExportError::PhysVecNoMem);
        }
        // get_dmabuf_phys(): pcim_p2pdma_provider() and
        // vfio_pci_core_fill_phys_vec().
        let Some(e) = export else {
            self.counters.kmalloc_live -= 3;
            return Err(ExportError::Rejected(verdict.err().unwrap_or(Reject::BarNotMmio)));
        };
        let bar = self.vdev.dev.bars[e.region_index as usize];
        let Some(provider) = P2pProvider::for_bar(e.region_index, &bar, self.vdev.bus_offset) else {
            self.counters.kmalloc_live -= 3;
            return Err(ExportError::Rejected(Reject::BarNotMmio));
        };
        let phys_vec: Vec<PhysVec> = e.phys_vecs().collect();
        // kfree(dma_ranges).
        self.counters.kmalloc_live -= 1;
        // vfio_device_try_get_registration(): the model's device stays
        // registered, so this always succeeds.
        self.counters.registrations += 1;
        // dma_buf_export().
        if !self.kmalloc() {
            self.counters.registrations -= 1;
            self.counters.kmalloc_live -= 2;
            return Err(ExportError::DmaBufExportNoMem);
        }
        let id = self.dmabufs.len();
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
        // dma_buf_fd().
        if self.faults.hit(FaultSite::DmaBufFd) {
            // dma_buf_put() drops the only reference: the release runs
            // (deferred, at return to user space, in the kernel).
            self.dmabufs[id].as_mut().expect("just exported").fd_open = false;
            self.dma_buf_put(id);
            if self.cfg.fidelity == Fidelity::Kernel {
                // ...but the error path falls through err_dev_put and
                // err_free_phys: a second put of the registration and second
                // frees of phys_vec and priv, and the deferred release reads
                // the freed priv.
                self.put_registration();
                self.counters.kmalloc_live -= 2;
                self.anomalies.push(Anomaly::DoubleFree("priv->phys_vec"));
                self.anomalies.push(Anomaly::DoubleFree("priv"));
                self.anomalies.push(Anomaly::UseAfterFree("priv in vfio_pci_dma_buf_release()"));
            }
            return Err(ExportError::FdInstall);
        }
        Ok(DmaBufId(id))
    }

    /// The original patch's single-range argument, through the same core:
    /// it is exactly a one-range request.
    pub fn export_single(&mut self, single: &DeviceFeatureDmaBufSingle) -> Result<DmaBufId, ExportError> {
        let (hdr, range) = single.to_multi();
        let ranges = [range];
        let argsz = (uapi::FEATURE_HEADER_SIZE + uapi::DMA_BUF_HEADER_SIZE + uapi::DMA_RANGE_SIZE) as u32;
        let feature =
            uapi::FeatureHeader { argsz, flags: uapi::VFIO_DEVICE_FEATURE_GET | uapi::VFIO_DEVICE_FEATURE_DMA_BUF };
        let req = Request::new(feature, hdr, uapi::RangeList::from_ranges(&ranges));
        self.export(&req)
    }

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

    /// `dma_buf_put()`: the last reference runs `vfio_pci_dma_buf_release()`.
    fn dma_buf_put(&mut self, i: usize) {
        let buf = self.dmabufs[i].as_mut().expect("put of a live dma-buf");
        buf.refs -= 1;
        if buf.refs != 0 {
            return;
        }
        let buf = self.dmabufs[i].take().expect("live");
        if buf.vdev {
            self.vdev.dmabufs.retain(|&x| x != i);
            self.put_registration();
        }
        // phys_vec, priv, and the dma_buf/file of dma_buf_export().
        self.counters.kmalloc_live -= 3;
        self.counters.dmabufs -= 1;
    }

    // ----- importers ----------------------------------------------------

    /// `dma_buf_dynamic_attach()` with vfio's `attach` and `pin`.
    pub fn attach(&mut self, id: DmaBufId, importer: ImporterId) -> Result<AttachmentId, AttachError> {
        let desc = self.importers[importer.0].desc;
        if self.dma_buf(id).is_none() {
            return Err(AttachError::NoSuchDmaBuf);
        }
        if !self.kmalloc() {
            return Err(AttachError::NoMem);
        }
        let buf = self.dmabufs[id.0].as_ref().expect("checked");
        let err = if !desc.peer2peer {
            Some(AttachError::NoPeer2Peer)
        } else if buf.revoked {
            Some(AttachError::Revoked)
        } else if !desc.move_notify {
            // An exporter with pin and an importer without move_notify: the
            // core pins at attach time, and vfio_pci_dma_buf_pin() refuses.
            Some(AttachError::PinNotSupported)
        } else {
            None
        };
        if let Some(e) = err {
            self.counters.kmalloc_live -= 1;
            return Err(e);
        }
        let a = self.attachments.len();
        self.attachments.push(Some(Attachment { dmabuf: id, importer, mappings: Vec::new() }));
        let buf = self.dmabufs[id.0].as_mut().expect("checked");
        buf.attachments.push(a);
        buf.refs += 1;
        self.counters.attachments += 1;
        Ok(AttachmentId(a))
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
        self.counters.kmalloc_live -= 1;
        if let Some(b) = self.dmabufs[buf].as_mut() {
            b.attachments.retain(|&x| x != id.0);
        }
        self.dma_buf_put(buf);
        Ok(())
    }

    /// `dma_buf_map_attachment()` → `vfio_pci_dma_buf_map()`.
    pub fn map(&mut self, id: AttachmentId) -> Result<MappingId, MapError> {
        let att = self.attachment(id).ok_or(MapError::NoSuchAttachment)?;
        let (buf_i, imp_i) = (att.dmabuf.0, att.importer.0);
        let Shim { dmabufs, importers, faults, counters, events, anomalies, cfg, vdev, .. } = self;
        let buf = dmabufs[buf_i].as_ref().expect("attached dma-buf is live");
        if buf.revoked {
            return Err(MapError::Revoked);
        }
        let mut ctx = MapCtx { faults, counters, events, anomalies, cfg: *cfg, page: vdev.dev.page_size.bytes() };
        let dma = phys_vec_to_sgt(&mut ctx, buf, &mut importers[imp_i], id)?;
        let m = self.mappings.len();
        self.mappings.push(Some(dma));
        self.counters.mappings += 1;
        self.attachments[id.0].as_mut().expect("live").mappings.push(m);
        Ok(MappingId(m))
    }

    /// `dma_buf_unmap_attachment()` → `vfio_pci_dma_buf_unmap()` →
    /// `dma_buf_free_sgt()`. Unmapping a gone mapping does nothing.
    pub fn unmap(&mut self, id: MappingId) {
        let Some(dma) = self.mappings.get_mut(id.0).and_then(Option::take) else { return };
        let att = self.attachments[dma.attachment.0].as_mut().expect("mapping's attachment is live");
        att.mappings.retain(|&x| x != id.0);
        let imp = &mut self.importers[att.importer.0];
        match dma.state {
            None => {}
            Some(st) if st.size != 0 => {
                let iommu = imp.iommu.as_mut().expect("IOVA path has an IOMMU");
                iommu.unmap(st.addr, dma.size);
                iommu.free_iova(st.addr, st.size);
            }
            Some(_) => {
                for e in &dma.sgt.entries {
                    dma_unmap_phys(imp, &mut self.events, e.dma_address, e.dma_length as u64);
                }
            }
        }
        // sg_free_table(), kfree(state), kfree(dma).
        self.counters.kmalloc_live -= 2 + dma.state.is_some() as i64;
        self.counters.mappings -= 1;
    }
}

/// `dma_map_phys()` with `DMA_ATTR_MMIO`: dma-direct returns the physical
/// address; dma-iommu allocates IOVA space and maps it.
fn dma_map_phys(imp: &mut Importer, faults: &mut Faults, paddr: u64, len: u64) -> Option<u64> {
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
fn dma_unmap_phys(imp: &mut Importer, events: &mut Events, addr: u64, len: u64) {
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

/// `dma_buf_phys_vec_to_sgt()`, step by step, with both unwinds.
fn phys_vec_to_sgt(
    ctx: &mut MapCtx<'_>,
    buf: &DmaBuf,
    imp: &mut Importer,
    att: AttachmentId,
) -> Result<DmaBufDma, MapError> {
    let faithful = ctx.cfg.fidelity == Fidelity::Kernel;
    let max = max_sg_ent_sz(ctx.page);
    // kzalloc(dma)
    if !ctx.kmalloc() {
        return Err(MapError::NoMem);
    }
    let mut state = None;
    match imp.desc.map_type {
        P2pMapType::BusAddr => {}
        P2pMapType::ThruHostBridge => {
            if !ctx.kmalloc() {
                ctx.kfree();
                return Err(MapError::NoMem);
            }
            let mut st = IovaState::default();
            // dma_iova_try_alloc(): a failure only means "map per range".
            if let (DmaOps::Iommu { iova_api: true, .. }, Some(iommu)) = (imp.desc.dma, imp.iommu.as_mut()) {
                if !ctx.faults.hit(FaultSite::IovaAlloc) {
                    if let Some(addr) = iommu.alloc_iova(buf.size) {
                        st = IovaState { addr, size: buf.size };
                    }
                }
            }
            state = Some(st);
        }
        P2pMapType::NotSupported => {
            ctx.kfree();
            return Err(MapError::P2pNotSupported);
        }
    }
    let use_iova = state.is_some_and(|s| s.size != 0);
    // Unwinds the IOVA allocation, state and dma when no range was touched.
    let free_state = |ctx: &mut MapCtx<'_>, imp: &mut Importer| {
        if let Some(st) = state.filter(|s| s.size != 0) {
            if faithful {
                // err_free_state only kfree()s the state: the IOVA space
                // dma_iova_try_alloc() reserved is never given back.
                ctx.anomalies.push(crate::Anomaly::IovaLeak { bytes: st.size });
            } else {
                imp.iommu.as_mut().expect("IOVA path").free_iova(st.addr, st.size);
            }
        }
        if state.is_some() {
            ctx.kfree();
        }
        ctx.kfree();
    };
    let nents = calc_sg_nents(use_iova, &buf.phys_vec, buf.size, ctx.page);
    if nents == 0 {
        free_state(ctx, imp);
        return Err(MapError::SgNentsOverflow);
    }
    if nents > ctx.cfg.sg_max_entries || !ctx.kmalloc() {
        free_state(ctx, imp);
        return Err(MapError::NoMem);
    }
    let mut sgt = SgTable { entries: vec![SgEntry::default(); nents as usize], filled: 0 };
    let mut mapped_len: u64 = 0;
    let mut failure = None;
    for (i, pv) in buf.phys_vec.iter().enumerate() {
        let addr = match state {
            None => buf.provider.bus_addr_map(pv.paddr),
            Some(st) if use_iova => {
                // The kernel links every range at offset 0 of the span.
                let offset = if faithful { 0 } else { mapped_len };
                let r = if ctx.faults.hit(FaultSite::IovaLink) {
                    Err(Errno::ENOMEM)
                } else {
                    imp.iommu.as_mut().expect("IOVA path").map(st.addr + offset, pv.paddr, pv.len)
                };
                if let Err(errno) = r {
                    failure = Some((i, MapError::IovaLink { index: i, errno }));
                    break;
                }
                mapped_len += pv.len;
                continue;
            }
            Some(_) => match dma_map_phys(imp, ctx.faults, pv.paddr, pv.len) {
                Some(a) => a,
                None => {
                    failure = Some((i, MapError::MapPhys { index: i }));
                    break;
                }
            },
        };
        sgt.fill_sg_entry(pv.len, addr, max);
    }
    if failure.is_none() {
        if let Some(st) = state.filter(|_| use_iova) {
            if ctx.faults.hit(FaultSite::IovaSync) {
                failure = Some((buf.phys_vec.len(), MapError::IovaSync));
            } else {
                sgt.fill_sg_entry(mapped_len, st.addr, max);
            }
        }
    }
    let Some((i, err)) = failure else {
        debug_assert!(sgt.is_complete());
        return Ok(DmaBufDma { attachment: att, sgt, state, size: buf.size });
    };
    // err_unmap_dma.
    match state {
        None => {}
        Some(st) if use_iova => {
            let iommu = imp.iommu.as_mut().expect("IOVA path");
            if i == 0 {
                if faithful {
                    // `if (!i || ...)` skips dma_iova_destroy(): the span
                    // stays allocated.
                    ctx.anomalies.push(crate::Anomaly::IovaLeak { bytes: st.size });
                } else {
                    iommu.free_iova(st.addr, st.size);
                }
            } else {
                // dma_iova_destroy(mapped_len): unlink what was linked, free
                // the whole span.
                iommu.unmap(st.addr, mapped_len);
                iommu.free_iova(st.addr, st.size);
            }
        }
        Some(_) => {
            if faithful {
                if i != 0 {
                    // for_each_sgtable_dma_sg() walks all nents entries,
                    // the never-filled (zeroed) ones included.
                    for e in &sgt.entries {
                        dma_unmap_phys(imp, ctx.events, e.dma_address, e.dma_length as u64);
                    }
                }
            } else {
                // Undo exactly the i ranges mapped, one unmap per map.
                let mut k = 0;
                for pv in &buf.phys_vec[..i] {
                    dma_unmap_phys(imp, ctx.events, sgt.entries[k].dma_address, pv.len);
                    k += pv.len.div_ceil(max) as usize;
                }
            }
        }
    }
    // sg_free_table(), kfree(state), kfree(dma).
    ctx.kfree();
    if state.is_some() {
        ctx.kfree();
    }
    ctx.kfree();
    Err(err)
}
