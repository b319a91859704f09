//! kmod-shim's iommufd model as the cases' backend: the prediction the
//! kernel's answers are compared with.

use kmod_shim::{Config, DmaBufId, IoasId, IommuModel, IoptAreaId, Shim};

use super::{run_cases, IommufdBackend, IommufdReport, Step};

/// The IOVA aperture the model's IOAS hands out (any: IOVAs are notes, not
/// compared).
const APERTURE: (u64, u64) = (1 << 32, 1 << 48);

/// kmod-shim with ivshmem's BAR2 as the guest saw it, one IOAS attached.
pub struct ShimBackend {
    s: Shim,
    ioas: IoasId,
    bufs: Vec<DmaBufId>,
    areas: Vec<IoptAreaId>,
}

impl ShimBackend {
    /// The model of the guest's device: BAR2 at `bar2 = (start, len)`,
    /// QEMU's intel-iommu.
    pub fn new(bar2: (u64, u64)) -> Self {
        let dev = validator::Device::new(validator::PageSize::K4).with_bar(2, validator::Bar::mmio(bar2.0, bar2.1));
        let mut s = Shim::new(dev, Config::default());
        s.set_iommu_model(IommuModel::IntelVtd);
        let ioas = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.1);
        Self { s, ioas, bufs: Vec::new(), areas: Vec::new() }
    }
}

fn code(e: validator::Errno) -> i32 {
    e.code()
}

impl IommufdBackend for ShimBackend {
    fn export(&mut self, ranges: &[(u64, u64)]) -> Result<(usize, u64), i32> {
        let ranges: Vec<uapi::DmaRange> = ranges.iter().map(|&(o, l)| uapi::DmaRange::new(o, l)).collect();
        let req = uapi::OwnedRequest::well_formed(2, crate::conformance::gen::O_RDWR_CLOEXEC, &ranges)
            .map_err(|_| code(validator::Errno::EINVAL))?;
        let bytes = req.written_bytes();
        let decoded = uapi::Request::decode(&bytes).map_err(|_| code(validator::Errno::EINVAL))?;
        let id = self.s.export(&decoded).map_err(|e| code(e.errno()))?;
        let size = self.s.dma_buf(id).map_or(0, |b| b.size);
        self.bufs.push(id);
        Ok((self.bufs.len() - 1, size))
    }

    fn map_file(&mut self, buf: usize, start: u64, length: u64) -> Result<(usize, u64), i32> {
        let id = *self.bufs.get(buf).ok_or(code(validator::Errno::EBADF))?;
        let area = self.s.iommufd_map_file(self.ioas, id, start, length).map_err(|e| code(e.errno()))?;
        let iova = self.s.iopt_pages(area).map_or(0, |p| p.iova);
        self.areas.push(area);
        Ok((self.areas.len() - 1, iova))
    }

    fn unmap(&mut self, area: usize) -> Result<(), i32> {
        let id = *self.areas.get(area).ok_or(code(validator::Errno::ENOENT))?;
        self.s.iommufd_unmap(id).map_err(|e| code(e.errno()))
    }

    fn translated(&mut self, area: usize) -> Option<bool> {
        let id = *self.areas.get(area)?;
        let iova = self.s.iopt_pages(id)?.iova;
        Some(self.s.ioas(self.ioas)?.domain.translate(iova).is_some())
    }

    fn memory(&mut self, on: bool) -> Result<(), i32> {
        self.s.set_memory_enabled(on);
        Ok(())
    }

    fn close(&mut self, buf: usize) -> Result<(), i32> {
        let id = *self.bufs.get(buf).ok_or(code(validator::Errno::EBADF))?;
        self.s.close_fd(id).map_err(code)
    }
}

/// kmod-shim's steps for the guest's plan, and whether the model's
/// invariants held at the end.
pub fn predict(rep: &IommufdReport) -> (Vec<Step>, Result<(), String>) {
    let mut b = ShimBackend::new(rep.bar2);
    let steps = run_cases(&mut b, &rep.plan);
    let inv = kmod_shim::check_invariants(&b.s).map_err(|v| format!("{v:?}"));
    (steps, inv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iommufd::Plan;

    const M: u64 = 1 << 20;

    #[test]
    fn the_model_predicts_one_range_maps_several_refused_and_qemus_areas() {
        let rep = IommufdReport {
            bar2: (0xfd00_0000, 16 * M),
            plan: Plan::new(16 * M, vec![(0, 16 * M)]),
            ..Default::default()
        };
        let (steps, inv) = predict(&rep);
        assert_eq!(inv, Ok(()));
        let answer = |case: &str, op: &str| {
            steps.iter().find(|s| s.case.starts_with(case) && s.op.starts_with(op)).map(Step::answer)
        };
        assert_eq!(answer("one range", "MAP_FILE").as_deref(), Some("ok"));
        assert_eq!(answer("one range", "translated?").as_deref(), Some("ok, translated true"));
        assert_eq!(answer("2 ranges", "MAP_FILE").as_deref(), Some("EOPNOTSUPP"));
        assert_eq!(answer("8 ranges", "MAP_FILE (first").as_deref(), Some("EOPNOTSUPP"));
        assert_eq!(answer("revoke", "MAP_FILE (revoked)").as_deref(), Some("ENODEV"));
        assert_eq!(answer("revoke", "translated? (revoked)").as_deref(), Some("ok, translated false"));
        assert_eq!(answer("QEMU, BAR2", "MAP_FILE area 0").as_deref(), Some("ok"));
        // rfc/consumers.md 2.1: area 0 EOPNOTSUPP, area 1 EINVAL (past the
        // dma-buf's end); at its real dma-buf offset area 1 is EOPNOTSUPP.
        assert_eq!(answer("QEMU, two", "MAP_FILE area 0 as QEMU").as_deref(), Some("EOPNOTSUPP"));
        assert_eq!(answer("QEMU, two", "MAP_FILE area 1 as QEMU").as_deref(), Some("EINVAL"));
        assert_eq!(answer("QEMU, two", "MAP_FILE area 1 at its").as_deref(), Some("EOPNOTSUPP"));
        assert!(steps.iter().filter(|s| s.op.starts_with("close")).all(|s| s.errno == 0));
    }
}
