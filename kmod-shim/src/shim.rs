//! The model's root, which has no C file of its own: one vfio-pci device
//! (`drivers/vfio/pci/vfio_pci_core.c`'s `struct vfio_pci_core_device`), its
//! dma-bufs, the importers, their attachments and mappings, and a fault
//! plan. The kernel functions live in the files named after theirs.

use validator::{Device, Policy};

use crate::dma_buf::{Attachment, DmaBuf};
use crate::dma_buf_mapping::DmaBufDma;
use crate::fault::{FaultPlan, FaultSite, Faults, Fidelity};
use crate::importer::{DmaOps, Importer, ImporterDesc};
use crate::iommu::{Iommu, IommuModel};
use crate::iommufd::io_pagetable::Ioas;
use crate::iommufd::pages::IoptPages;
use crate::sg::{SgEntry, SgTable};
use crate::state::{Alloc, Anomaly, AttachmentId, Counters, DmaBufId, Events, ImporterId, MappingId, Snapshot};
use crate::vfio_pci_dmabuf::VfioPciCoreDevice;

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
///
/// Lookups by id are all `Option`s: an id that names nothing (never
/// issued, or released) is `None` or a typed error, never a panic.
///
/// # Invariants
/// Ids index their vectors and are never reused (a released object leaves
/// `None`); the [`Counters`] and the [`crate::Ledger`] match the live
/// objects, and every IOMMU holds exactly what the live mappings map, unless
/// an [`Anomaly`] was recorded ([`crate::check_invariants`]).
#[derive(Debug, Clone)]
pub struct Shim {
    pub(crate) cfg: Config,
    pub(crate) iommu_model: IommuModel,
    pub(crate) vdev: VfioPciCoreDevice,
    pub(crate) dmabufs: Vec<Option<DmaBuf>>,
    pub(crate) importers: Vec<Importer>,
    pub(crate) attachments: Vec<Option<Attachment>>,
    pub(crate) mappings: Vec<Option<DmaBufDma>>,
    pub(crate) ioas: Vec<Ioas>,
    pub(crate) iopt_pages: Vec<Option<IoptPages>>,
    pub(crate) faults: Faults,
    pub(crate) counters: Counters,
    pub(crate) events: Events,
    pub(crate) anomalies: Vec<Anomaly>,
}

impl Shim {
    /// An open device with memory decoding on and no dma-bufs.
    pub fn new(dev: Device, cfg: Config) -> Self {
        Self {
            cfg,
            iommu_model: IommuModel::default(),
            vdev: VfioPciCoreDevice::new(dev, cfg.bus_offset),
            dmabufs: Vec::new(),
            importers: Vec::new(),
            attachments: Vec::new(),
            mappings: Vec::new(),
            ioas: Vec::new(),
            iopt_pages: Vec::new(),
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

    /// Which IOMMU driver the importers' and IOASes' domains model (default
    /// [`IommuModel::IntelVtd`], the one the kernel lab measured). Applies to
    /// the domains already made and to those made later.
    pub fn set_iommu_model(&mut self, model: IommuModel) {
        self.iommu_model = model;
        for imp in &mut self.importers {
            if let Some(io) = imp.iommu.as_mut() {
                io.set_model(model);
            }
        }
        for io in &mut self.ioas {
            io.domain.set_model(model);
        }
    }

    /// The IOMMU driver model.
    pub fn iommu_model(&self) -> IommuModel {
        self.iommu_model
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

    /// A modelled kernel allocation of `kind` (a [`FaultSite::Alloc`] site).
    pub(crate) fn kmalloc(&mut self, kind: Alloc) -> bool {
        if self.faults.hit(FaultSite::Alloc) {
            return false;
        }
        self.counters.ledger.alloc(kind);
        true
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
            ioas: self.ioas.iter().map(|x| x.domain.snapshot()).collect(),
            iommufd: self.iopt_areas().map(|(a, _)| a.0).collect(),
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
    pub fn importer(&self, id: ImporterId) -> Option<&Importer> {
        self.importers.get(id.0)
    }

    /// An importer, mutably (tests use it to change an IOMMU behind the
    /// model's back and see the checker catch it).
    pub fn importer_mut(&mut self, id: ImporterId) -> Option<&mut Importer> {
        self.importers.get_mut(id.0)
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
}
