//! Random interleavings of export, attach, map, unmap, detach, revoke,
//! restore, close and release, checked against a reference model after
//! every step.

use kmod_shim::{
    AttachError, AttachmentId, Device, DmaBufId, ExportError, FaultPlan, FaultSite, Fidelity, ImporterId, MapError,
    MappingId, P2pMapType, Policy, Shim,
};
use std::sync::LazyLock;

use uapi::DmaRange;

use crate::fixtures::{all_importers, config, edge_device, shim_with, GIB};
use crate::oracle::{ok, predict_map};
use uapi::OwnedRequest;

use crate::well_formed;

/// One step. Indices pick among the objects created so far (modulo their
/// number), so every sequence of steps is meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Export preset request `n` ([`presets`]).
    Export(u8),
    /// Attach importer `imp` to dma-buf `buf`.
    Attach(u8, u8),
    /// Map attachment `att`.
    Map(u8),
    /// Unmap mapping `m`.
    Unmap(u8),
    /// Unmap everything of attachment `att`, then detach it (a well-behaved
    /// importer).
    Detach(u8),
    /// Close the dma-buf fd `buf` (release once the attachments are gone).
    CloseFd(u8),
    /// Clear `PCI_COMMAND_MEMORY` (revoke).
    MemoryDisable,
    /// Set `PCI_COMMAND_MEMORY` (restore).
    MemoryEnable,
    /// `VFIO_DEVICE_RESET`.
    Reset,
    /// Close the device (revoke for good).
    CloseDevice,
    /// Open the device again.
    OpenDevice,
    /// Arm a fault: site `ALL[site % 6]`, call `step`.
    Fault(u8, u8),
}

impl Op {
    /// Number of variants, for decoders.
    pub const KINDS: u8 = 12;

    /// The op for a kind byte and two argument bytes.
    pub fn from_bytes(kind: u8, a: u8, b: u8) -> Op {
        match kind % Self::KINDS {
            0 => Op::Export(a),
            1 => Op::Attach(a, b),
            2 => Op::Map(a),
            3 => Op::Unmap(a),
            4 => Op::Detach(a),
            5 => Op::CloseFd(a),
            6 => Op::MemoryDisable,
            7 => Op::MemoryEnable,
            8 => Op::Reset,
            9 => Op::CloseDevice,
            10 => Op::OpenDevice,
            _ => Op::Fault(a, b),
        }
    }
}

/// The requests [`Op::Export`] chooses from: one page, three scattered and
/// unordered ranges, a range of 8 GiB (split over three sg entries), two
/// overlapping ranges, the 64 KiB BAR whole, and a request Linux refuses.
pub fn presets() -> Vec<OwnedRequest> {
    let r = |o, l| DmaRange::new(o, l);
    vec![
        well_formed(0, 2, &[r(0, 0x1000)]),
        well_formed(0, 2, &[r(0x10_0000, 0x1000), r(0x2000, 0x3000), r(0x8000_0000, 0x2000)]),
        well_formed(0, 2, &[r(0, 8 * GIB), r(15 * GIB, 0x1000)]),
        well_formed(0, 2, &[r(0x4000, 0x4000), r(0x2000, 0x4000)]),
        well_formed(4, 2, &[r(0, 0x1_0000)]),
        well_formed(0, 2, &[r(0, 0x1000), r(16 * GIB, 0x1000)]),
    ]
}

/// [`presets`], built once.
static PRESETS: LazyLock<Vec<OwnedRequest>> = LazyLock::new(presets);

/// The reference model's view of one dma-buf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BufModel {
    fd_open: bool,
    /// Still on the device's list (not cleaned up by close).
    listed: bool,
}

/// The driver: a shim, the handles created so far and the reference model.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// The shim under test (Fixed mode).
    pub shim: Shim,
    reqs: &'static [OwnedRequest],
    bufs: Vec<(DmaBufId, BufModel)>,
    atts: Vec<(AttachmentId, DmaBufId, ImporterId, bool)>,
    maps: Vec<(MappingId, AttachmentId, bool)>,
    memory: bool,
    open: bool,
    importers: usize,
    /// A fault was armed by a [`Op::Fault`] step (it may have fired since).
    fault_armed: bool,
}

impl Default for Lifecycle {
    /// A clone of one driver built on first use: the importers and the
    /// presets are the same for every run, and a fuzz campaign runs
    /// millions.
    fn default() -> Self {
        static FRESH: LazyLock<Lifecycle> = LazyLock::new(|| Lifecycle::new(edge_device(kmod_shim::PageSize::K4)));
        FRESH.clone()
    }
}

impl Lifecycle {
    /// A driver over `dev` with every kind of importer.
    pub fn new(dev: Device) -> Self {
        let imps = all_importers();
        Self {
            shim: shim_with(dev, config(Policy::Linux, Fidelity::Fixed), &imps),
            reqs: &PRESETS,
            bufs: Vec::new(),
            atts: Vec::new(),
            maps: Vec::new(),
            memory: true,
            open: true,
            importers: imps.len(),
            fault_armed: false,
        }
    }

    fn revoked(&self, m: BufModel) -> bool {
        !m.listed || !self.memory
    }

    fn buf_model(&self, id: DmaBufId) -> Option<BufModel> {
        self.bufs.iter().find(|b| b.0 == id).map(|b| b.1)
    }

    fn live_atts(&self, buf: DmaBufId) -> usize {
        self.atts.iter().filter(|a| a.1 == buf && a.3).count()
    }

    /// Mappings the model considers live.
    fn drop_maps_of_revoked(&mut self) {
        let revoked: Vec<DmaBufId> =
            self.bufs.iter().filter(|b| self.shim.dma_buf(b.0).is_some() && self.revoked(b.1)).map(|b| b.0).collect();
        if revoked.is_empty() {
            return;
        }
        for m in &mut self.maps {
            let buf = self.atts.iter().find(|a| a.0 == m.1).map(|a| a.1);
            if buf.is_some_and(|b| revoked.contains(&b)) {
                m.2 = false;
            }
        }
    }

    /// Applies one step and checks the model and the invariants; panics on a
    /// violation.
    pub fn apply(&mut self, op: Op) {
        // The state before the step, compared after a step that failed
        // (`failed`). Taken only where a failure does not already panic:
        // export and attach fail only through a fault that fires now, so
        // only while one is pending; a map also where the model allows the
        // failure (predicted error, small aperture, no P2P path). A snapshot
        // costs as much as the step itself.
        let mut before = None;
        let armed = self.shim.fault_fired();
        let pending = self.fault_armed && armed.is_none();
        let pick = |n: usize, i: u8| (n != 0).then(|| i as usize % n);
        let mut failed = false;
        match op {
            Op::Export(i) => {
                let req = &self.reqs[i as usize % self.reqs.len()];
                let v = validator::validate(&req.request(), &self.shim.device().dev, Policy::Linux);
                if pending {
                    before = Some(self.shim.snapshot());
                }
                match self.shim.export(&req.request()) {
                    Ok(id) => {
                        assert!(self.open && v.is_ok(), "export succeeded: open {} verdict {v:?}", self.open);
                        self.bufs.push((id, BufModel { fd_open: true, listed: true }));
                        assert_eq!(
                            self.shim.dma_buf(id).expect("live").revoked,
                            !self.memory,
                            "starts revoked iff disabled"
                        );
                    }
                    Err(ExportError::DeviceNotOpen) => assert!(!self.open),
                    Err(ExportError::Rejected(r)) => assert_eq!(v, Err(r)),
                    Err(e) => {
                        assert!(self.fault_fired_now(armed), "export failed without a fault: {e:?}");
                        failed = true;
                    }
                }
            }
            Op::Attach(b, imp) => {
                let Some(bi) = pick(self.bufs.len(), b) else { return };
                let (id, m) = self.bufs[bi];
                let imp = ImporterId(imp as usize % self.importers);
                let desc = self.shim.importer(imp).expect("importer").desc;
                let live = self.shim.dma_buf(id).is_some();
                if pending {
                    before = Some(self.shim.snapshot());
                }
                match self.shim.attach(id, imp) {
                    Ok(a) => {
                        assert!(
                            live && desc.peer2peer && desc.invalidate_mappings && !self.revoked(m),
                            "attach succeeded"
                        );
                        self.atts.push((a, id, imp, true));
                    }
                    Err(AttachError::NoSuchDmaBuf) => assert!(!live),
                    Err(AttachError::NoSuchImporter) => panic!("{imp:?} is one of the lifecycle's importers"),
                    Err(AttachError::NoPeer2Peer) => assert!(!desc.peer2peer),
                    Err(AttachError::Revoked) => assert!(self.revoked(m)),
                    Err(AttachError::NotRevocable) => assert!(!desc.invalidate_mappings),
                    Err(AttachError::NoMem) => {
                        assert!(self.fault_fired_now(armed));
                        failed = true;
                    }
                }
            }
            Op::Map(a) => {
                let Some(ai) = pick(self.atts.len(), a) else { return };
                let (att, buf, imp, live) = self.atts[ai];
                let want = if live {
                    Some(predict_map(&self.shim, buf, &self.shim.importer(imp).expect("importer").desc))
                } else {
                    None
                };
                // Predicted (sg cap, no P2P path, small aperture exhausted by
                // earlier maps) or a fault.
                let small = self.shim.importer(imp).expect("importer").iommu.as_ref().is_some_and(|io| {
                    let (s, e) = io.aperture();
                    e - s < crate::fixtures::APERTURE.1 - crate::fixtures::APERTURE.0
                });
                let p2p_none = self.shim.importer(imp).expect("importer").desc.map_type == P2pMapType::NotSupported;
                if pending || small || p2p_none || matches!(want, Some(Err(_))) {
                    before = Some(self.shim.snapshot());
                }
                match self.shim.map(att) {
                    Ok(m) => {
                        assert!(live, "map of a detached attachment");
                        assert!(!self.revoked(self.buf_model(buf).expect("known")), "map of a revoked dma-buf");
                        self.maps.push((m, att, true));
                    }
                    Err(MapError::NoSuchAttachment) => assert!(!live),
                    Err(MapError::Revoked) => {
                        assert!(self.revoked(self.buf_model(buf).expect("known")));
                        assert_eq!(MapError::Revoked.errno(), kmod_shim::Errno::ENODEV);
                    }
                    Err(e) => {
                        assert!(
                            self.fault_fired_now(armed) || want == Some(Err(e)) || small || p2p_none,
                            "map failed: {e:?}, predicted {want:?}"
                        );
                        failed = true;
                    }
                }
            }
            Op::Unmap(m) => {
                let Some(mi) = pick(self.maps.len(), m) else { return };
                let (id, _, live) = self.maps[mi];
                assert_eq!(self.shim.mapping(id).is_some(), live, "mapping liveness");
                self.shim.unmap(id);
                self.maps[mi].2 = false;
            }
            Op::Detach(a) => {
                let Some(ai) = pick(self.atts.len(), a) else { return };
                let (att, buf, _, live) = self.atts[ai];
                for m in self.maps.iter_mut().filter(|m| m.1 == att && m.2) {
                    self.shim.unmap(m.0);
                    m.2 = false;
                }
                let r = self.shim.detach(att);
                assert_eq!(r.is_ok(), live, "detach: {r:?}");
                self.atts[ai].3 = false;
                self.release_if_unreferenced(buf);
            }
            Op::CloseFd(b) => {
                let Some(bi) = pick(self.bufs.len(), b) else { return };
                let (id, m) = self.bufs[bi];
                let r = self.shim.close_fd(id);
                assert_eq!(r.is_ok(), m.fd_open, "close_fd: {r:?}");
                self.bufs[bi].1.fd_open = false;
                self.release_if_unreferenced(id);
            }
            Op::MemoryDisable => {
                self.memory = false;
                self.shim.set_memory_enabled(false);
            }
            Op::MemoryEnable => {
                self.memory = true;
                self.shim.set_memory_enabled(true);
            }
            Op::Reset => {
                // Revoke, then restore if memory is on: every mapping of a
                // listed dma-buf is gone either way.
                let listed: Vec<DmaBufId> = self.bufs.iter().filter(|b| b.1.listed).map(|b| b.0).collect();
                self.shim.reset();
                for m in &mut self.maps {
                    let buf = self.atts.iter().find(|a| a.0 == m.1).map(|a| a.1);
                    if buf.is_some_and(|b| listed.contains(&b)) {
                        m.2 = false;
                    }
                }
            }
            Op::CloseDevice => {
                self.shim.close_device();
                self.open = false;
                for b in &mut self.bufs {
                    b.1.listed = false;
                }
            }
            Op::OpenDevice => {
                self.shim.open_device();
                self.open = true;
            }
            Op::Fault(site, step) => {
                self.shim.arm_fault(Some(FaultPlan::new(FaultSite::ALL[site as usize % 6], step as u64 % 8)));
                self.fault_armed = true;
            }
        }
        self.drop_maps_of_revoked();
        if failed {
            let before = before.expect("a step that may fail took a snapshot");
            assert_eq!(self.shim.snapshot(), before, "a failed {op:?} changed the state");
        }
        self.check(op);
    }

    fn fault_fired_now(&self, armed_before: Option<FaultPlan>) -> bool {
        self.shim.fault_fired().is_some() && armed_before.is_none()
    }

    fn release_if_unreferenced(&mut self, buf: DmaBufId) {
        let fd = self.buf_model(buf).is_some_and(|m| m.fd_open);
        let gone = !fd && self.live_atts(buf) == 0;
        assert_eq!(self.shim.dma_buf(buf).is_none(), gone, "release when the last reference goes");
    }

    /// The reference model against the shim, and the invariants.
    fn check(&self, op: Op) {
        ok(&self.shim, format_args!("after {op:?}"));
        let c = self.shim.counters();
        let live_bufs: Vec<_> =
            self.bufs.iter().filter(|b| b.1.fd_open || self.live_atts(b.0) != 0).map(|b| b.0).collect();
        assert_eq!(c.dmabufs, live_bufs.len(), "live dma-bufs after {op:?}");
        assert_eq!(c.attachments, self.atts.iter().filter(|a| a.3).count(), "attachments after {op:?}");
        assert_eq!(c.mappings, self.maps.iter().filter(|m| m.2).count(), "mappings after {op:?}");
        for &(id, m) in &self.bufs {
            let Some(b) = self.shim.dma_buf(id) else {
                assert!(!live_bufs.contains(&id));
                continue;
            };
            assert_eq!(b.revoked, self.revoked(m), "revoked state of {id:?} after {op:?}");
            assert_eq!(b.vdev, m.listed, "device link of {id:?}");
        }
        // No IOMMU translation leads to a revoked dma-buf's bytes.
        for (imp, i) in self.shim.importers() {
            let Some(io) = &i.iommu else { continue };
            for e in io.extents() {
                let owner = self.shim.mappings().find(|(_, m)| {
                    let att = self.shim.attachment(m.attachment).expect("live");
                    att.importer == imp
                        && self.shim.dma_buf(att.dmabuf).is_some_and(|b| {
                            !b.revoked && b.phys_vec.iter().any(|p| e.paddr >= p.paddr && e.paddr - p.paddr < p.len)
                        })
                });
                assert!(owner.is_some(), "{imp:?} translates {e:?} for no live, unrevoked mapping");
            }
        }
        assert_eq!(self.shim.config().fidelity, Fidelity::Fixed);
    }
}

/// Runs `ops` on a fresh driver, then closes everything and checks that
/// nothing is left.
pub fn run(ops: &[Op]) {
    let mut l = Lifecycle::default();
    for &op in ops {
        l.apply(op);
    }
    l.shim.arm_fault(None);
    // Tear down: every mapping, attachment and fd, then the device.
    for i in 0..l.atts.len() {
        l.apply(Op::Detach(i as u8));
    }
    for i in 0..l.bufs.len() {
        let (id, m) = l.bufs[i];
        if m.fd_open {
            l.shim.close_fd(id).expect("fd open");
            l.bufs[i].1.fd_open = false;
        }
    }
    l.shim.close_device();
    ok(&l.shim, "teardown");
    assert_eq!(l.shim.counters(), kmod_shim::Counters::default(), "teardown leaves nothing");
}
