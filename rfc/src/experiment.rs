//! The framebuffer experiment: VRAM under pressure, a framebuffer allocated
//! in it, exported through `kmod-shim` as one multi-range dma-buf and as one
//! dma-buf per range, and mapped by a peer on each P2P path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use kmod_shim::{
    AttachError, Config, DmaBufId, ExportError, Fidelity, ImporterDesc, ImporterId, MapError, PageSize, Shim,
};
use uapi::{DmaRange, Request, RequestBuilder};
use validator::{Bar, Device};

use crate::buddy::{Buddy, BuddyError, Chunk};
use crate::fb::{merge_ranges, Framebuffer, RESOLUTIONS};
use crate::pressure::{self, Pressure};
use crate::rng::Rng;

/// Where the model's BAR sits: 64-bit prefetchable BARs above 4 GiB,
/// naturally aligned for every size swept (up to 4 TiB).
pub const BAR_START: u64 = 1 << 42;
/// The IOVA aperture of the importer behind the IOMMU.
pub const IOVA_APERTURE: (u64, u64) = (1 << 32, 1 << 48);
/// `RLIMIT_NOFILE`'s default soft limit (the one a process gets unless it
/// raises it): one fd per dma-buf makes the single-range workaround hit it.
pub const RLIMIT_NOFILE_SOFT: usize = 1024;
/// udmabuf's `list_limit` module parameter default (drivers/dma-buf/udmabuf.c):
/// the most items `UDMABUF_CREATE_LIST` accepts.
pub const UDMABUF_LIST_LIMIT: usize = 1024;
/// `open_flags` of every export: `O_RDWR | O_CLOEXEC`.
pub const OPEN_FLAGS: u32 = 0o2 | validator::O_CLOEXEC;

/// The P2P paths a peer maps through (`dma_buf_phys_vec_to_sgt()`).
pub const PATHS: [(&str, &str); 3] = [
    ("bus_addr", "PCI_P2PDMA_MAP_BUS_ADDR (same switch)"),
    ("iova", "THRU_HOST_BRIDGE, one IOVA span (dma_iova_link())"),
    ("per_range", "THRU_HOST_BRIDGE, dma_map_phys() per range"),
];

/// What a sweep covers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SweepConfig {
    /// BAR sizes, bytes (each a power of two: the VRAM the BAR exposes).
    pub bars: Vec<u64>,
    /// Target occupancies.
    pub occupancies: Vec<f64>,
    /// Minimum chunks.
    pub chunks: Vec<Chunk>,
    /// Framebuffers.
    pub resolutions: Vec<Framebuffer>,
    /// Pressure runs per (BAR, chunk, occupancy).
    pub trials: u32,
    /// The seed.
    pub seed: u64,
}

impl SweepConfig {
    /// The full sweep: 256 MiB (small BAR) to 32 GiB (resizable BAR).
    pub fn full(seed: u64) -> Self {
        Self {
            bars: vec![256 << 20, 1 << 30, 4 << 30, 16 << 30, 32 << 30],
            occupancies: vec![0.50, 0.75, 0.90, 0.95],
            chunks: vec![Chunk::K4, Chunk::K64],
            resolutions: RESOLUTIONS.to_vec(),
            trials: 20,
            seed,
        }
    }

    /// The CI sweep: a subset of the full sweep's cells (same per-cell
    /// seeds, so its numbers equal the full sweep's for those cells).
    pub fn quick(seed: u64) -> Self {
        Self {
            bars: vec![256 << 20, 4 << 30],
            occupancies: vec![0.50, 0.90],
            chunks: vec![Chunk::K4],
            resolutions: RESOLUTIONS.to_vec(),
            trials: 2,
            seed,
        }
    }

    fn runs(&self) -> Vec<(u64, Chunk, usize, u32)> {
        let mut v = Vec::new();
        for &bar in &self.bars {
            for &chunk in &self.chunks {
                for occ in 0..self.occupancies.len() {
                    for t in 0..self.trials {
                        v.push((bar, chunk, occ, t));
                    }
                }
            }
        }
        v
    }
}

/// sg entries (`sgt->nents`) the importer sees, per path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PathSg {
    /// BUS_ADDR.
    pub bus_addr: usize,
    /// One IOVA span.
    pub iova: usize,
    /// Per-range `dma_map_phys()`.
    pub per_range: usize,
}

/// What the single-range workaround costs for one framebuffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Workaround {
    /// dma-bufs exported (one per range).
    pub dmabufs: usize,
    /// fds the exporter holds (one per dma-buf) and passes to the importer.
    pub fds: usize,
    /// `VFIO_DEVICE_FEATURE` ioctls to export them.
    pub export_ioctls: usize,
    /// Imports the peer's driver makes (one per fd: a PRIME import, an
    /// `ibv_reg_dmabuf_mr()`), per importer.
    pub imports_per_importer: usize,
    /// sg tables per importer (one per dma-buf).
    pub sg_tables_per_importer: usize,
    /// sg entries in all those tables, per path.
    pub sg_entries: PathSg,
    /// Separate IOVA spans the IOMMU importer gets (the framebuffer is no
    /// longer contiguous in its address space).
    pub iova_spans: usize,
}

/// The scattered framebuffer, exported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Scattered {
    /// Buddy blocks.
    pub blocks: usize,
    /// Ranges after merging adjacent blocks: `nr_ranges`.
    pub nr_ranges: usize,
    /// The range array's bytes (`nr_ranges * 16`).
    pub array_bytes: usize,
    /// sg entries per path, multi-range.
    pub multi: PathSg,
    /// The IOVA-path map in kmod-shim's kernel-faithful mode: `ok`, or the
    /// errno (defect 1: every range linked at IOVA offset 0).
    pub kernel_faithful_iova_map: String,
    /// The single-range workaround.
    pub workaround: Workaround,
}

/// One (BAR, chunk, occupancy, trial, resolution) measurement.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sample {
    /// BAR bytes.
    pub bar: u64,
    /// Minimum chunk.
    pub chunk: Chunk,
    /// Target occupancy.
    pub occupancy_target: f64,
    /// Occupancy reached (rounded to 1e-4).
    pub occupancy: f64,
    /// Trial.
    pub trial: u32,
    /// Framebuffer name.
    pub resolution: &'static str,
    /// Framebuffer bytes.
    pub fb_bytes: u64,
    /// Whether the contiguous allocation (one power-of-two block) succeeded.
    pub contiguous: bool,
    /// The largest free block before the framebuffer, bytes.
    pub largest_free: u64,
    /// The scattered allocation, exported; `None` if VRAM had no room.
    pub scattered: Option<Scattered>,
}

/// Wall-clock times of one sample (not deterministic: kept apart from the
/// results).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Timing {
    /// BAR bytes.
    pub bar: u64,
    /// Chunk.
    pub chunk: Chunk,
    /// Framebuffer.
    pub resolution: &'static str,
    /// `nr_ranges`.
    pub nr_ranges: usize,
    /// Multi-range: export, then attach + map on each path, nanoseconds.
    pub multi_ns: [u64; 4],
    /// Workaround: every export, then every attach + map on each path.
    pub workaround_ns: [u64; 4],
}

/// Why an export or map in the experiment failed (none should: the
/// experiment exports only valid ranges through the fixed shim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExperimentError {
    /// The allocator.
    Buddy(BuddyError),
    /// `vfio_pci_core_feature_dma_buf()`.
    Export(ExportError),
    /// `dma_buf_dynamic_attach()`.
    Attach(AttachError),
    /// `vfio_pci_dma_buf_map()`.
    Map(MapError),
    /// The ranges could not be encoded.
    Encode,
}

impl std::fmt::Display for ExperimentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExperimentError::Buddy(e) => write!(f, "allocator: {e}"),
            ExperimentError::Export(e) => write!(f, "export: {e:?} ({})", e.errno().name()),
            ExperimentError::Attach(e) => write!(f, "attach: {e:?} ({})", e.errno().name()),
            ExperimentError::Map(e) => write!(f, "map: {e:?} ({})", e.errno().name()),
            ExperimentError::Encode => f.write_str("request encoding failed"),
        }
    }
}

impl std::error::Error for ExperimentError {}

impl From<BuddyError> for ExperimentError {
    fn from(e: BuddyError) -> Self {
        ExperimentError::Buddy(e)
    }
}

/// The device: BAR0 is the VRAM BAR (64-bit prefetchable memory).
pub fn device(bar: u64) -> Device {
    Device::new(PageSize::K4).with_bar(0, Bar::mmio(BAR_START, bar))
}

fn shim(bar: u64, fidelity: Fidelity) -> (Shim, [ImporterId; 3]) {
    let mut s = Shim::new(device(bar), Config { fidelity, ..Config::default() });
    let (lo, hi) = IOVA_APERTURE;
    let imps = [
        s.add_importer(ImporterDesc::bus_peer()),
        s.add_importer(ImporterDesc::iommu_peer(lo, hi)),
        s.add_importer(ImporterDesc::iommu_peer(lo, hi).without_iova_api()),
    ];
    (s, imps)
}

/// `VFIO_DEVICE_FEATURE(DMA_BUF | GET)` on BAR0 with `ranges`, through the
/// same bytes user space would pass.
fn export(s: &mut Shim, ranges: &[DmaRange]) -> Result<DmaBufId, ExperimentError> {
    let bytes = RequestBuilder::new()
        .region_index(0)
        .open_flags(OPEN_FLAGS)
        .ranges(ranges.iter().copied())
        .encode()
        .map_err(|_| ExperimentError::Encode)?;
    let req = Request::decode(&bytes).map_err(|_| ExperimentError::Encode)?;
    s.export(&req).map_err(ExperimentError::Export)
}

fn attach_map(s: &mut Shim, buf: DmaBufId, imp: ImporterId) -> Result<usize, ExperimentError> {
    let a = s.attach(buf, imp).map_err(ExperimentError::Attach)?;
    let m = s.map(a).map_err(ExperimentError::Map)?;
    Ok(s.sg_table(m).map_or(0, |t| t.nents()))
}

fn ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

/// Exports `ranges` as one dma-buf and as one dma-buf per range, maps both
/// on every path, and checks kmod-shim's invariants afterwards.
pub fn export_and_map(bar: u64, ranges: &[DmaRange]) -> Result<(Scattered, [u64; 4], [u64; 4]), ExperimentError> {
    let (mut s, imps) = shim(bar, Fidelity::Fixed);
    let mut multi_ns = [0; 4];
    let t = Instant::now();
    let buf = export(&mut s, ranges)?;
    multi_ns[0] = ns(t);
    let mut sg = [0usize; 3];
    for (k, &imp) in imps.iter().enumerate() {
        let t = Instant::now();
        sg[k] = attach_map(&mut s, buf, imp)?;
        multi_ns[k + 1] = ns(t);
    }

    let (mut w, wimps) = shim(bar, Fidelity::Fixed);
    let mut work_ns = [0; 4];
    let t = Instant::now();
    let bufs: Vec<DmaBufId> =
        ranges.iter().map(|r| export(&mut w, std::slice::from_ref(r))).collect::<Result<_, _>>()?;
    work_ns[0] = ns(t);
    let mut wsg = [0usize; 3];
    for (k, &imp) in wimps.iter().enumerate() {
        let t = Instant::now();
        for &b in &bufs {
            wsg[k] += attach_map(&mut w, b, imp)?;
        }
        work_ns[k + 1] = ns(t);
    }
    debug_assert!(kmod_shim::check_invariants(&s).is_ok() && kmod_shim::check_invariants(&w).is_ok());

    // The same multi-range map on the IOVA path as the kernel writes it.
    let (mut k, kimps) = shim(bar, Fidelity::Kernel);
    let kbuf = export(&mut k, ranges)?;
    let kernel = match attach_map(&mut k, kbuf, kimps[1]) {
        Ok(_) => "ok".to_string(),
        Err(ExperimentError::Map(e)) => e.errno().name().to_string(),
        Err(e) => return Err(e),
    };

    let n = ranges.len();
    let scattered = Scattered {
        blocks: 0,
        nr_ranges: n,
        array_bytes: n * uapi::DMA_RANGE_SIZE,
        multi: PathSg { bus_addr: sg[0], iova: sg[1], per_range: sg[2] },
        kernel_faithful_iova_map: kernel,
        workaround: Workaround {
            dmabufs: n,
            fds: n,
            export_ioctls: n,
            imports_per_importer: n,
            sg_tables_per_importer: n,
            sg_entries: PathSg { bus_addr: wsg[0], iova: wsg[1], per_range: wsg[2] },
            iova_spans: n,
        },
    };
    Ok((scattered, multi_ns, work_ns))
}

/// Runs one pressure run and measures every resolution in it.
pub fn measure_run(
    cfg: &SweepConfig,
    bar: u64,
    chunk: Chunk,
    occ_index: usize,
    trial: u32,
) -> Result<(Vec<Sample>, Vec<Timing>), ExperimentError> {
    let target = cfg.occupancies[occ_index];
    let permille = (target * 1000.0).round() as u64;
    let mut rng = Rng::for_cell(cfg.seed, &[bar, chunk.bytes(), permille, trial as u64]);
    let mut buddy = Buddy::gpu_buddy(bar, chunk)?;
    pressure::run(&mut buddy, &Pressure::new(target), &mut rng)?;
    measure_framebuffers(cfg, &mut buddy, target, trial)
}

/// Measures every framebuffer of `cfg` in the VRAM state `buddy` holds
/// (each allocation is freed again, which restores the state exactly: the
/// free sets are canonical).
pub fn measure_framebuffers(
    cfg: &SweepConfig,
    buddy: &mut Buddy,
    target: f64,
    trial: u32,
) -> Result<(Vec<Sample>, Vec<Timing>), ExperimentError> {
    let (bar, chunk) = (buddy.size(), buddy.chunk());
    let occupancy = (buddy.occupancy() * 1e4).round() / 1e4;
    let largest_free = buddy.largest_free_order().map_or(0, |o| buddy.block_bytes(o));
    let mut samples = Vec::new();
    let mut timings = Vec::new();
    for fb in &cfg.resolutions {
        let contiguous = match buddy.alloc(fb.size(), true) {
            Ok(b) => {
                buddy.free_blocks(&b)?;
                true
            }
            Err(_) => false,
        };
        let scattered = match buddy.alloc(fb.size(), false) {
            Ok(blocks) => {
                let ranges = merge_ranges(buddy, &blocks);
                let (mut sc, m_ns, w_ns) = export_and_map(bar, &ranges)?;
                sc.blocks = blocks.len();
                buddy.free_blocks(&blocks)?;
                timings.push(Timing {
                    bar,
                    chunk,
                    resolution: fb.name,
                    nr_ranges: sc.nr_ranges,
                    multi_ns: m_ns,
                    workaround_ns: w_ns,
                });
                Some(sc)
            }
            Err(_) => None,
        };
        samples.push(Sample {
            bar,
            chunk,
            occupancy_target: target,
            occupancy,
            trial,
            resolution: fb.name,
            fb_bytes: fb.size(),
            contiguous,
            largest_free,
            scattered,
        });
    }
    Ok((samples, timings))
}

/// Runs the sweep on `jobs` threads. The result does not depend on `jobs`:
/// every run has its own seed and its slot in the output. `tick` is called
/// after each pressure run (progress bar).
pub fn sweep(
    cfg: &SweepConfig,
    jobs: usize,
    tick: &(dyn Fn() + Sync),
) -> Result<(Vec<Sample>, Vec<Timing>), ExperimentError> {
    let runs = cfg.runs();
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<RunResult>>> = Mutex::new(vec![None; runs.len()]);
    std::thread::scope(|sc| {
        for _ in 0..jobs.max(1) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(bar, chunk, occ, t)) = runs.get(i) else { break };
                let r = measure_run(cfg, bar, chunk, occ, t);
                slots.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                tick();
            });
        }
    });
    let mut samples = Vec::new();
    let mut timings = Vec::new();
    for r in slots.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().flatten() {
        let (s, t) = r?;
        samples.extend(s);
        timings.extend(t);
    }
    Ok((samples, timings))
}

/// One pressure run's measurements.
type RunResult = Result<(Vec<Sample>, Vec<Timing>), ExperimentError>;

/// The number of pressure runs a sweep makes (for the progress bar).
pub fn run_count(cfg: &SweepConfig) -> usize {
    cfg.runs().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_range_is_one_dma_buf_and_one_iova_entry() {
        let ranges = [DmaRange::new(0, 0x4000), DmaRange::new(0x10000, 0x2000), DmaRange::new(0x8000, 0x1000)];
        let (sc, _, _) = export_and_map(1 << 30, &ranges).unwrap();
        assert_eq!(sc.multi, PathSg { bus_addr: 3, iova: 1, per_range: 3 });
        assert_eq!(sc.workaround.sg_entries, PathSg { bus_addr: 3, iova: 3, per_range: 3 });
        assert_eq!(sc.workaround.dmabufs, 3);
        // kmod-shim defect 1: in kernel-faithful mode range 1 is linked on
        // top of range 0 and the IOMMU refuses the existing PTE.
        // Intel VT-d, the IOMMU the kernel lab measured, refuses the second link so.
        assert_eq!(sc.kernel_faithful_iova_map, "EADDRINUSE");
        let (one, _, _) = export_and_map(1 << 30, &ranges[..1]).unwrap();
        assert_eq!(one.kernel_faithful_iova_map, "ok");
    }

    #[test]
    fn a_run_is_deterministic_and_jobs_do_not_matter() {
        let cfg = SweepConfig { trials: 1, ..SweepConfig::quick(9) };
        let (a, _) = sweep(&cfg, 1, &|| {}).unwrap();
        let (b, _) = sweep(&cfg, 2, &|| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 2 * 2 * 4);
    }
}
