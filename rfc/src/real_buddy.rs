//! The framebuffer workload on the kernel's own allocator
//! (drivers/gpu/buddy.c, through `kernel-lab buddy`), beside the model
//! ([`crate::buddy`]).
//!
//! Out: every pressure run of a sweep, with the model's own ops and seeds
//! ([`crate::pressure::run_observed`]), as a trace in [`crate::trace`]'s
//! format, followed by the framebuffers' contiguous and scattered
//! allocations, plus a [`kernel_lab::buddy::Manifest`]. In: the kernel's
//! [`BuddyLabReport`], compared cell by cell (BAR, chunk, occupancy,
//! framebuffer) with the model's answers: contiguous success, `nr_ranges`
//! (adjacent blocks merged in the buffer's order, [`crate::fb::merge_ranges`]'s
//! rule), largest `nr_ranges`. [`markdown`] and [`plot`] write the table
//! and the figure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use kernel_lab::buddy::{BuddyLabReport, Manifest, RealRun, RunSpec, MANIFEST_FILE};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::buddy::{Block, Buddy, BuddyError, Chunk, Placement};
use crate::experiment::SweepConfig;
use crate::fb::RESOLUTIONS;
use crate::fmt_bytes;
use crate::pressure::{self, Pressure, Step};
use crate::rng::Rng;

/// One framebuffer in one run, as the model answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelFb {
    /// Resolution name.
    pub resolution: &'static str,
    /// Bytes.
    pub bytes: u64,
    /// The contiguous allocation succeeded.
    pub contiguous: bool,
    /// The scattered allocation's blocks (offset, bytes), if it fit.
    pub scattered: Option<Vec<(u64, u64)>>,
}

/// One pressure run on the model, and its trace.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelRun {
    /// `bar-chunk-occupancy-trial`.
    pub name: String,
    /// BAR bytes.
    pub bar: u64,
    /// Chunk.
    pub chunk: Chunk,
    /// Target occupancy.
    pub target: f64,
    /// Trial.
    pub trial: u32,
    /// Op indices of the pressure allocations the model refused.
    pub failed_allocs: Vec<u32>,
    /// Free blocks per order after the pressure part.
    pub free_counts: Vec<usize>,
    /// Free bytes after the pressure part.
    pub free_bytes: u64,
    /// The framebuffers.
    pub fbs: Vec<ModelFb>,
    /// The framebuffers on the model as gpu_buddy ([`Placement::HighestFirst`]
    /// and [`Buddy::with_contig_try_harder`]), same ops.
    pub fbs_kernel_placement: Vec<ModelFb>,
    /// Whether the kernel-placement model produced the same trace (it
    /// must: the two placements are mirror images).
    pub same_trace: bool,
    /// Ops in the pressure part.
    pub snapshot_after: usize,
    /// The trace (format: [`crate::trace`]).
    #[serde(skip)]
    pub trace: String,
}

fn blocks_bytes(b: &Buddy, blocks: &[Block]) -> Vec<(u64, u64)> {
    blocks.iter().map(|x| (x.offset, b.block_bytes(x.order))).collect()
}

/// The run for (bar, chunk, occupancy, trial) with the same seed as
/// `measure_run`, recorded, on the model's first form (`Buddy::new`,
/// lowest first); and the same run with the kernel's placement and
/// fallback, which is what `measure_run` now uses (`Buddy::gpu_buddy`).
pub fn model_run(
    cfg: &SweepConfig,
    bar: u64,
    chunk: Chunk,
    occ_index: usize,
    trial: u32,
) -> Result<ModelRun, BuddyError> {
    let m = placed_run(cfg, bar, chunk, occ_index, trial, Placement::LowestFirst)?;
    let k = placed_run(cfg, bar, chunk, occ_index, trial, Placement::HighestFirst)?;
    Ok(ModelRun { same_trace: m.trace == k.trace, fbs_kernel_placement: k.fbs, ..m })
}

fn placed_run(
    cfg: &SweepConfig,
    bar: u64,
    chunk: Chunk,
    occ_index: usize,
    trial: u32,
    placement: Placement,
) -> Result<ModelRun, BuddyError> {
    let target = cfg.occupancies.get(occ_index).copied().unwrap_or(0.0);
    let permille = (target * 1000.0).round() as u64;
    let mut rng = Rng::for_cell(cfg.seed, &[bar, chunk.bytes(), permille, trial as u64]);
    let mut buddy = Buddy::with_placement(bar, chunk, placement)?;
    if placement == Placement::HighestFirst {
        // The model as gpu_buddy: its placement and its contiguous fallback.
        buddy = buddy.with_contig_try_harder();
    }
    let mut trace = String::new();
    let mut ids: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut next, mut ops) = (0u64, 0usize);
    let mut failed = Vec::new();
    pressure::run_observed(&mut buddy, &Pressure::new(target), &mut rng, &mut |s| {
        match s {
            Step::Alloc { len, blocks } => {
                let _ = writeln!(trace, "alloc o{next} {len}");
                match blocks.and_then(|b| b.first()) {
                    Some(b) => {
                        ids.insert(b.offset, next);
                    }
                    None => failed.push(ops as u32),
                }
                next += 1;
            }
            Step::Free { blocks } => {
                // A live object's first block offset names it.
                let id = blocks.first().and_then(|b| ids.remove(&b.offset)).unwrap_or(u64::MAX);
                let _ = writeln!(trace, "free o{id}");
            }
        }
        ops += 1;
    })?;
    let (free_counts, free_bytes) = (buddy.free_counts(), buddy.free_bytes());
    let mut fbs = Vec::new();
    for fb in cfg.resolutions.iter().filter(|f| RESOLUTIONS.iter().any(|r| r.name == f.name)) {
        let size = fb.size();
        let _ = writeln!(trace, "alloc fbc-{} {size} contiguous\nfree fbc-{}", fb.name, fb.name);
        let contiguous = match buddy.alloc(size, true) {
            Ok(b) => {
                buddy.free_blocks(&b)?;
                true
            }
            Err(_) => false,
        };
        let _ = writeln!(trace, "alloc fbs-{} {size}\nfree fbs-{}", fb.name, fb.name);
        let scattered = match buddy.alloc(size, false) {
            Ok(b) => {
                let v = blocks_bytes(&buddy, &b);
                buddy.free_blocks(&b)?;
                Some(v)
            }
            Err(_) => None,
        };
        fbs.push(ModelFb { resolution: fb.name, bytes: size, contiguous, scattered });
    }
    let name = format!("{}-{}k-{}-{trial}", fmt_bytes(bar).replace(' ', ""), chunk.bytes() >> 10, permille);
    Ok(ModelRun {
        name,
        bar,
        chunk,
        target,
        trial,
        failed_allocs: failed,
        free_counts,
        free_bytes,
        fbs,
        fbs_kernel_placement: vec![],
        same_trace: true,
        snapshot_after: ops,
        trace,
    })
}

/// Every run of `cfg`, in the sweep's order.
pub fn model_runs(cfg: &SweepConfig) -> Result<Vec<ModelRun>, BuddyError> {
    let mut v = Vec::new();
    for &bar in &cfg.bars {
        for &chunk in &cfg.chunks {
            for occ in 0..cfg.occupancies.len() {
                for t in 0..cfg.trials {
                    v.push(model_run(cfg, bar, chunk, occ, t)?);
                }
            }
        }
    }
    Ok(v)
}

/// The manifest for `runs` (traces named `<run>.trace`).
pub fn manifest(runs: &[ModelRun]) -> Manifest {
    Manifest {
        runs: runs
            .iter()
            .map(|r| RunSpec {
                name: r.name.clone(),
                trace: format!("{}.trace", r.name),
                bar: r.bar,
                chunk: r.chunk.bytes(),
                snapshot_after: r.snapshot_after,
                report: r
                    .fbs
                    .iter()
                    .flat_map(|f| [format!("fbc-{}", f.resolution), format!("fbs-{}", f.resolution)])
                    .collect(),
            })
            .collect(),
    }
}

/// Writes every trace and the manifest into `dir`.
pub fn write_traces(runs: &[ModelRun], dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for r in runs {
        std::fs::write(dir.join(format!("{}.trace", r.name)), &r.trace)?;
    }
    let m = serde_json::to_string_pretty(&manifest(runs)).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(MANIFEST_FILE), m + "\n")
}

/// `nr_ranges` of a block list: adjacent blocks merged in list order (the
/// buffer's linear order), as [`crate::fb::merge_ranges`] does.
pub fn nr_ranges(blocks: &[(u64, u64)]) -> usize {
    let mut n = 0;
    let mut end = None;
    for &(off, len) in blocks {
        if end != Some(off) {
            n += 1;
        }
        end = Some(off + len);
    }
    n
}

/// `nr_ranges` if the blocks were sorted by address first (not a valid
/// export of the buffer, whose pages must stay in order: it shows how much
/// of a difference is the order the allocator hands blocks out in).
pub fn nr_ranges_sorted(blocks: &[(u64, u64)]) -> usize {
    let mut v = blocks.to_vec();
    v.sort_unstable();
    nr_ranges(&v)
}

/// Whether the real allocator's free blocks per order equal the model's.
fn same_free(model: &[usize], real: &[u64]) -> bool {
    let n = model.len().max(real.len());
    (0..n).all(|i| model.get(i).copied().unwrap_or(0) as u64 == real.get(i).copied().unwrap_or(0))
}

/// One (BAR, chunk, occupancy, framebuffer), model beside real.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    /// BAR bytes.
    pub bar: u64,
    /// Chunk.
    pub chunk: Chunk,
    /// Target occupancy.
    pub occupancy: f64,
    /// Framebuffer.
    pub resolution: &'static str,
    /// Trials compared (both answered).
    pub trials: usize,
    /// Trials whose pressure part left the same state in both (the same
    /// allocations refused, the same free blocks per order).
    pub same_state: usize,
    /// Trials where the model as gpu_buddy gave exactly the kernel's
    /// answer: the same contiguous outcome, the same scattered blocks
    /// (offset and size, in order).
    pub exact: usize,
    /// Trials whose contiguous allocation only the kernel managed (the
    /// RFC's model has no `__alloc_contig_try_harder()`).
    pub contiguous_real_only: usize,
    /// Contiguous successes: model, real.
    pub contiguous: (usize, usize),
    /// Scattered allocations that did not fit: model, real.
    pub no_room: (usize, usize),
    /// `nr_ranges` per trial (scattered, when it fit): model.
    pub model_nr: Vec<usize>,
    /// The same, model with the kernel's placement.
    pub kernel_placement_nr: Vec<usize>,
    /// The same, real.
    pub real_nr: Vec<usize>,
    /// Real, blocks sorted by address before merging.
    pub real_sorted_nr: Vec<usize>,
    /// Blocks per trial: model, real.
    pub blocks: (Vec<usize>, Vec<usize>),
}

/// Why a comparison could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareError {
    /// The kernel's report has no run of this name.
    MissingRun(String),
}

impl std::fmt::Display for CompareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompareError::MissingRun(n) => write!(f, "the kernel lab's report has no run {n}"),
        }
    }
}

impl std::error::Error for CompareError {}

fn real_object<'a>(r: &'a RealRun, id: &str) -> Option<&'a kernel_lab::buddy::RealObject> {
    r.objects.iter().find(|o| o.id == id)
}

/// Compares every run of `model` with the kernel's, cell by cell. Runs the
/// kernel did not answer are an error unless `partial`, then left out.
pub fn compare(model: &[ModelRun], real: &BuddyLabReport, partial: bool) -> Result<Vec<Row>, CompareError> {
    let by_name: BTreeMap<&str, &RealRun> = real.runs.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut rows: Vec<Row> = Vec::new();
    for m in model {
        let Some(r) = by_name.get(m.name.as_str()) else {
            if partial {
                continue;
            }
            return Err(CompareError::MissingRun(m.name.clone()));
        };
        // The kernel's list also holds the framebuffers' refusals.
        let failed: Vec<u32> =
            r.guest.failed_allocs.iter().copied().filter(|&i| (i as usize) < m.snapshot_after).collect();
        let same = r.guest.error.is_none()
            && m.same_trace
            && failed == m.failed_allocs
            && r.guest
                .snapshot
                .as_ref()
                .is_some_and(|s| s.avail == m.free_bytes && same_free(&m.free_counts, &s.free_blocks));
        for (j, fb) in m.fbs.iter().enumerate() {
            let kp = m.fbs_kernel_placement.get(j);
            let i = match rows.iter().position(|x| {
                x.bar == m.bar && x.chunk == m.chunk && x.occupancy == m.target && x.resolution == fb.resolution
            }) {
                Some(i) => i,
                None => {
                    rows.push(Row {
                        bar: m.bar,
                        chunk: m.chunk,
                        occupancy: m.target,
                        resolution: fb.resolution,
                        trials: 0,
                        same_state: 0,
                        exact: 0,
                        contiguous_real_only: 0,
                        contiguous: (0, 0),
                        no_room: (0, 0),
                        model_nr: vec![],
                        kernel_placement_nr: vec![],
                        real_nr: vec![],
                        real_sorted_nr: vec![],
                        blocks: (vec![], vec![]),
                    });
                    rows.len() - 1
                }
            };
            let row = &mut rows[i];
            row.trials += 1;
            row.same_state += same as usize;
            row.contiguous.0 += fb.contiguous as usize;
            let rc = real_object(r, &format!("fbc-{}", fb.resolution)).is_some_and(|o| o.err.is_none());
            row.contiguous.1 += rc as usize;
            row.contiguous_real_only += (rc && !fb.contiguous) as usize;
            match &fb.scattered {
                Some(b) => {
                    row.model_nr.push(nr_ranges(b));
                    row.blocks.0.push(b.len());
                }
                None => row.no_room.0 += 1,
            }
            if let Some(b) = kp.and_then(|k| k.scattered.as_ref()) {
                row.kernel_placement_nr.push(nr_ranges(b));
            }
            let real_fbs = real_object(r, &format!("fbs-{}", fb.resolution)).filter(|o| o.err.is_none());
            let exact = kp
                .is_some_and(|k| k.contiguous == rc && k.scattered.as_deref() == real_fbs.map(|o| o.blocks.as_slice()));
            row.exact += exact as usize;
            match real_fbs {
                Some(o) => {
                    row.real_nr.push(nr_ranges(&o.blocks));
                    row.real_sorted_nr.push(nr_ranges_sorted(&o.blocks));
                    row.blocks.1.push(o.blocks.len());
                }
                None => row.no_room.1 += 1,
            }
        }
    }
    Ok(rows)
}

/// The median of `v` (the lower middle for an even count); 0 when empty.
pub fn median(v: &[usize]) -> usize {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

fn max(v: &[usize]) -> usize {
    v.iter().copied().max().unwrap_or(0)
}

fn pct(k: usize, n: usize) -> String {
    if n == 0 {
        "-".into()
    } else {
        format!("{:.0} %", 100.0 * k as f64 / n as f64)
    }
}

/// Totals over all rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Totals {
    /// (run, framebuffer) pairs compared.
    pub trials: usize,
    /// Of those, with the same VRAM state after the pressure part.
    pub same_state: usize,
    /// Of those, where the model as gpu_buddy gave the kernel's answer exactly.
    pub exact: usize,
    /// Of those, contiguous only on the kernel.
    pub contiguous_real_only: usize,
    /// Contiguous successes: model, real.
    pub contiguous: (usize, usize),
    /// Cells whose real median `nr_ranges` is above, below the model's.
    pub real_more: usize,
    /// See `real_more`.
    pub real_fewer: usize,
    /// Cells.
    pub cells: usize,
}

/// Totals over all rows.
pub fn totals(rows: &[Row]) -> Totals {
    Totals {
        trials: rows.iter().map(|r| r.trials).sum(),
        same_state: rows.iter().map(|r| r.same_state).sum(),
        exact: rows.iter().map(|r| r.exact).sum(),
        contiguous_real_only: rows.iter().map(|r| r.contiguous_real_only).sum(),
        contiguous: (rows.iter().map(|r| r.contiguous.0).sum(), rows.iter().map(|r| r.contiguous.1).sum()),
        real_more: rows.iter().filter(|r| median(&r.real_nr) > median(&r.model_nr)).count(),
        real_fewer: rows.iter().filter(|r| median(&r.real_nr) < median(&r.model_nr)).count(),
        cells: rows.len(),
    }
}

/// The table: one line per cell; `nr_ranges` as median / max.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| BAR | chunk | occupancy | framebuffer | trials | same VRAM state | model as gpu_buddy exact | contiguous model | contiguous real | nr_ranges model (median / max) | nr_ranges model as gpu_buddy | nr_ranges real | real, address-sorted | blocks model / real (median) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} % | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} |",
            fmt_bytes(r.bar),
            fmt_bytes(r.chunk.bytes()),
            r.occupancy * 100.0,
            r.resolution,
            r.trials,
            r.same_state,
            r.exact,
            pct(r.contiguous.0, r.trials),
            pct(r.contiguous.1, r.trials),
            median(&r.model_nr),
            max(&r.model_nr),
            median(&r.kernel_placement_nr),
            max(&r.kernel_placement_nr),
            median(&r.real_nr),
            max(&r.real_nr),
            median(&r.real_sorted_nr),
            max(&r.real_sorted_nr),
            median(&r.blocks.0),
            median(&r.blocks.1),
        );
    }
    s
}

/// The evidence page: provenance, totals, the table and `why` (the
/// explanation of the differences).
pub fn markdown(rows: &[Row], real: &BuddyLabReport, command: &str, why: &str) -> String {
    let Totals {
        trials: t,
        same_state: same,
        exact,
        contiguous_real_only: cro,
        contiguous: (cm, cr),
        real_more,
        real_fewer,
        cells,
    } = totals(rows);
    let ops: usize = real.runs.iter().map(|r| r.ops).sum();
    let replay: f64 = real.runs.iter().map(|r| r.guest.seconds).sum();
    let mut s = String::from("# The framebuffer workload on the kernel's own allocator\n\n");
    let _ = writeln!(
        s,
        "Generated by `{command}`. The model (`rfc/src/buddy.rs`) and the kernel's `gpu_buddy` \
         (drivers/gpu/buddy.c of {}, `--kernel {}`, through `kernel-lab/buddy/nrlab_buddy.c`) ran the \
         same ops: each pressure run of the sweep recorded as a trace with the model's seeds, replayed \
         on the kernel, then each framebuffer allocated contiguously (`GPU_BUDDY_CONTIGUOUS_ALLOCATION`) \
         and scattered (flags 0, `min_block_size` = chunk), as a DRM driver asks.\n",
        real.kernel, real.kernel_request
    );
    let _ = writeln!(
        s,
        "{} runs, {ops} ops replayed on the kernel in {replay:.0} s (guest), {} boot(s), {:.0} s wall \
         including the module and guest builds.{}\n",
        real.runs.len(),
        real.boots,
        real.wall_seconds,
        if real.errors.is_empty() { String::new() } else { format!(" Errors: {}.", real.errors.join("; ")) }
    );
    let _ = writeln!(
        s,
        "- Pressure part: {same} of {t} (run, framebuffer) pairs had the same VRAM state on both \
         (the same allocations refused, the same free bytes, the same free blocks per order).\n\
         - The model as gpu_buddy (`Placement::HighestFirst` + `Buddy::with_contig_try_harder`) gave \
         the kernel's answer exactly (contiguous outcome; scattered blocks, offset and size, in order) \
         in {exact} of {t}.\n\
         - Contiguous success: model {cm} of {t}, real {cr} of {t} ({cro} only on the kernel: \
         `__alloc_contig_try_harder()`).\n\
         - Cells where the real allocator's median `nr_ranges` is above the model's: {real_more} of \
         {cells}; below: {real_fewer}.\n"
    );
    s.push_str(
        "`nr_ranges` merges adjacent blocks in the buffer's order (`fb::merge_ranges`' rule); \
                \"address-sorted\" merges after sorting the real blocks by offset, which is not a valid \
                export (the framebuffer's pages must stay in order) but shows what the block order costs.\n\n",
    );
    s.push_str(&table(rows));
    s.push_str("\n## Where model and real differ, and why\n\n");
    s.push_str(why);
    s
}

type R = Result<(), Box<dyn std::error::Error>>;

/// The figure: contiguous success (top) and median `nr_ranges` (bottom,
/// log scale), model beside real, one group per cell.
pub fn plot(path: &Path, rows: &[Row]) -> R {
    // Wide enough for one rotated label per cell.
    let width = (120 + 14 * rows.len() as u32).max(1200);
    let root = SVGBackend::new(path, (width, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.draw(&Text::new(
        "Framebuffer on the model vs the kernel's gpu_buddy (same ops): contiguous success and nr_ranges",
        (20, 12),
        ("sans-serif", 19).into_font(),
    ))?;
    let (top, bottom) = body.split_vertically(360);
    let n = rows.len();
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}/{}KiB {:.0}% {}",
                fmt_bytes(r.bar).replace(' ', ""),
                r.chunk.bytes() >> 10,
                r.occupancy * 100.0,
                r.resolution
            )
        })
        .collect();
    let model_col = RGBColor(0, 114, 178);
    let real_col = RGBColor(213, 94, 0);
    let xr = -0.5f64..(n as f64 - 0.5);
    {
        let mut ch = ChartBuilder::on(&top)
            .margin(10)
            .x_label_area_size(10)
            .y_label_area_size(60)
            .build_cartesian_2d(xr.clone(), 0f64..135f64)?;
        ch.configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|v| if *v <= 100.0 { format!("{v:.0}") } else { String::new() })
            .y_desc("contiguous success (% of trials)")
            .label_style(("sans-serif", 13))
            .draw()?;
        for (k, (col, name)) in
            [(model_col, "model (rfc/src/buddy.rs)"), (real_col, "kernel gpu_buddy")].into_iter().enumerate()
        {
            let bars = rows.iter().enumerate().map(move |(i, r)| {
                let v = if k == 0 { r.contiguous.0 } else { r.contiguous.1 };
                let y = if r.trials == 0 { 0.0 } else { 100.0 * v as f64 / r.trials as f64 };
                let x0 = i as f64 - 0.4 + 0.4 * k as f64;
                Rectangle::new([(x0, 0.0), (x0 + 0.38, y)], col.filled())
            });
            ch.draw_series(bars)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.filled()));
        }
        ch.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    {
        let top_nr = rows.iter().flat_map(|r| r.model_nr.iter().chain(&r.real_nr)).copied().max().unwrap_or(1).max(2);
        let mut ch = ChartBuilder::on(&bottom)
            .margin(10)
            .x_label_area_size(150)
            .y_label_area_size(60)
            .build_cartesian_2d(xr, (1f64..(top_nr as f64 * 12.0)).log_scale())?;
        ch.configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .label_style(("sans-serif", 13))
            .y_desc("nr_ranges (median, bar; max, tick)")
            .draw()?;
        let kp_col = RGBColor(0, 158, 115);
        let series = [
            (model_col, "model (lowest block first)"),
            (kp_col, "model as gpu_buddy (highest first, try-harder)"),
            (real_col, "kernel gpu_buddy"),
        ];
        for (k, (col, name)) in series.into_iter().enumerate() {
            let pick = move |r: &Row| match k {
                0 => r.model_nr.clone(),
                1 => r.kernel_placement_nr.clone(),
                _ => r.real_nr.clone(),
            };
            ch.draw_series(rows.iter().enumerate().map(move |(i, r)| {
                let y = median(&pick(r)).max(1) as f64;
                let x0 = i as f64 - 0.4 + 0.27 * k as f64;
                Rectangle::new([(x0, 1.0), (x0 + 0.25, y)], col.filled())
            }))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.filled()));
            ch.draw_series(rows.iter().enumerate().map(move |(i, r)| {
                let y = max(&pick(r)).max(1) as f64;
                let x0 = i as f64 - 0.4 + 0.27 * k as f64;
                PathElement::new(vec![(x0, y), (x0 + 0.25, y)], BLACK.stroke_width(2))
            }))?;
        }
        ch.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
        // One label per cell, reading downwards from under its group
        // (plotters centres rotated tick labels on the tick).
        let style = ("sans-serif", 10)
            .into_font()
            .transform(FontTransform::Rotate90)
            .into_text_style(&root)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (i, l) in labels.iter().enumerate() {
            let (px, py) = ch.backend_coord(&(i as f64, 1.0));
            root.draw(&Text::new(l.clone(), (px, py + 6), style.clone()))?;
        }
    }
    root.present()?;
    Ok(())
}

/// Runs `cargo run --release -p kernel-lab -- buddy` on `traces`, writing
/// its report to `out`.
pub fn run_kernel_lab(traces: &Path, out: &Path, kernel: &str) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(crate::workspace_root())
        .args(["run", "--release", "--quiet", "-p", "kernel-lab", "--", "buddy", "--kernel", kernel, "--traces"])
        .arg(traces)
        .arg("--out")
        .arg(out)
        .status()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    // Exit 1: some runs missing; the comparison says which.
    match status.code() {
        Some(0 | 1) => Ok(()),
        _ => Err(format!("kernel-lab buddy: {status}")),
    }
}

/// What [`generate`] needs.
#[derive(Debug, Clone)]
pub struct Generate<'a> {
    /// The sweep.
    pub cfg: SweepConfig,
    /// Evidence directory (real-buddy.md, .svg, .json).
    pub out: &'a Path,
    /// Scratch: traces and the kernel's raw report.
    pub work: &'a Path,
    /// `--kernel` for kernel-lab.
    pub kernel: &'a str,
    /// Compare with this kernel report instead of running the lab.
    pub report: Option<&'a Path>,
    /// The command line, for the page.
    pub command: &'a str,
}

/// The whole real-allocator step: traces out, kernel lab, comparison in,
/// table and plot. Returns the table.
pub fn generate(g: &Generate<'_>) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let t = std::time::Instant::now();
    let runs = model_runs(&g.cfg)?;
    let traces = g.work.join("traces");
    write_traces(&runs, &traces)?;
    std::fs::write(g.work.join("model-runs.json"), serde_json::to_string(&runs)? + "\n")?;
    let ops: usize = runs.iter().map(|r| r.trace.lines().count()).sum();
    eprintln!(
        "real allocator: {} runs, {ops} ops written to {} in {:.1} s",
        runs.len(),
        traces.display(),
        t.elapsed().as_secs_f64()
    );
    let report_path = match g.report {
        Some(p) => p.to_path_buf(),
        None => {
            let p = g.work.join("kernel-buddy.json");
            run_kernel_lab(&traces, &p, g.kernel)?;
            p
        }
    };
    let text = std::fs::read_to_string(&report_path).map_err(|e| format!("{}: {e}", report_path.display()))?;
    let real: BuddyLabReport = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", report_path.display()))?;
    let rows = compare(&runs, &real, true)?;
    std::fs::create_dir_all(g.out)?;
    // The kernel's own answers (every framebuffer's blocks) beside the comparison.
    let kept = g.out.join("real-buddy-kernel.json");
    if report_path != kept {
        std::fs::write(&kept, &text)?;
    }
    let md = markdown(&rows, &real, g.command, &why(&rows));
    std::fs::write(g.out.join("real-buddy.md"), &md)?;
    let json = serde_json::json!({ "kernel": real.kernel, "kernel_request": real.kernel_request, "rows": rows });
    std::fs::write(g.out.join("real-buddy.json"), serde_json::to_string_pretty(&json)? + "\n")?;
    plot(&g.out.join("real-buddy.svg"), &rows).map_err(|e| format!("plot: {e}"))?;
    Ok(table(&rows))
}

/// The explanation of the differences, with the measured numbers.
pub fn why(rows: &[Row]) -> String {
    let t = totals(rows);
    format!(
        "{WHY}\nMeasured here: {} of {} states equal; {} of {} exact for the model as gpu_buddy; contiguous \
         model {}, real {} ({} only on the kernel, by `__alloc_contig_try_harder()`); real median \
         `nr_ranges` above the model's in {} of {} cells, below in {}.\n",
        t.same_state,
        t.trials,
        t.exact,
        t.trials,
        t.contiguous.0,
        t.contiguous.1,
        t.contiguous_real_only,
        t.real_more,
        t.cells,
        t.real_fewer
    )
}

/// What the model leaves out, checked against the kernel's source.
pub const WHY: &str = "\
1. **Which free block, which half.** `gpu_buddy`'s `alloc_from_freetree()` takes the free block of \
the highest offset in the smallest order's tree (`rbtree_last_free_block()`) and keeps the upper \
half of every split (`block->right`); the model (`Placement::LowestFirst`, what the RFC's sweep \
runs) takes the lowest and keeps the lower half. Frees merge at once in both (`__gpu_buddy_free()`; \
this workload never frees as cleared, so one free tree and no `__force_merge()`), so the free sets \
are canonical and the two allocators are mirror images of each other: every allocation succeeds or \
fails alike, the free blocks per order are equal, and each block list is the other's mirrored \
(offset -> BAR - offset - size). The model now has the kernel's placement as \
`Placement::HighestFirst` (rfc/src/buddy.rs); with it (and point 3's fallback) the model gives \
the kernel's answer block for block (the \"model as gpu_buddy exact\" column).\n\
2. **Why `nr_ranges` still differs.** A dma-buf presents the buffer's pages in order, so adjacent \
blocks merge only when each follows the previous one upwards. Mirroring turns an ascending run of \
adjacent blocks into a descending one: what the model merges, the kernel cannot, and the other way \
round. Per trial the kernel's `nr_ranges` is the model's count for its descending runs, so the \
distributions are close but not equal, in both directions. The extreme is unfragmented VRAM: the \
model hands out a fresh region's blocks upwards (one range, `fb::tests::a_fresh_vram_gives_one_range`), \
the kernel downwards (one range per block: 8 for a 4K framebuffer, one per set bit of its 8100 \
pages). The \"address-sorted\" column shows what sorting would merge; an exporter cannot sort \
without scrambling the framebuffer.\n\
3. **Contiguous allocation.** The kernel rounds the size up to a power of two, and when no \
such block is free tries `__alloc_contig_try_harder()`: for each free block of the rounded-down \
order, highest first, a window of exactly the (chunk-rounded) size starting at it, else one ending \
where the walk from it stopped; on success it trims the rounded-up tail \
(`gpu_buddy_block_trim()`). The RFC's model has neither, so its contiguous rate is a lower bound; \
the trim changes what stays allocated, not whether the allocation succeeds (the experiment frees \
the framebuffer at once). The fallback is now in the model as `Buddy::with_contig_try_harder` \
(same walk: it stops at an allocated block or at a split block wholly inside the window, as \
`__alloc_range()` does); the RFC's sweep keeps the default (no fallback), so its numbers are \
unchanged. How often it matters is in the numbers below: rarely, because a free block of the \
rounded-down order never has a wholly free buddy (they would have merged), so the window needs \
free space that crosses a buddy boundary.\n\
4. **Left out and irrelevant here**: clear/dirty trees (`GPU_BUDDY_CLEAR_ALLOCATION`), range and \
top-down allocation, offset-aligned allocation of sizes below `min_block_size` (drivers pass \
`min_block_size` = chunk for these buffers).\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment;
    use kernel_lab::buddy::{GuestRun, RealObject, Snapshot};

    fn tiny() -> SweepConfig {
        SweepConfig { bars: vec![256 << 20], occupancies: vec![0.9], trials: 1, ..SweepConfig::quick(3) }
    }

    #[test]
    fn merging_follows_list_order() {
        assert_eq!(nr_ranges(&[]), 0);
        assert_eq!(nr_ranges(&[(0, 0x1000), (0x1000, 0x2000), (0x8000, 0x1000)]), 2);
        // Top-down, as gpu_buddy hands out a fresh region: adjacent but reversed.
        let down = [(0x3000, 0x1000), (0x2000, 0x1000), (0x1000, 0x1000)];
        assert_eq!(nr_ranges(&down), 3);
        assert_eq!(nr_ranges_sorted(&down), 1);
        assert_eq!(median(&[5, 1, 9, 3]), 3);
        assert_eq!(median(&[]), 0);
    }

    #[test]
    fn fresh_vram_is_one_range_upwards_and_one_per_block_downwards() {
        // The claim of WHY, point 2: a 4K framebuffer (8100 pages, 8 set bits).
        let fb = RESOLUTIONS[2].size();
        for (placement, want) in [(Placement::LowestFirst, 1), (Placement::HighestFirst, 8)] {
            let mut b = Buddy::with_placement(1 << 30, Chunk::K4, placement).unwrap();
            let v = b.alloc(fb, false).unwrap();
            assert_eq!((v.len(), nr_ranges(&blocks_bytes(&b, &v))), (8, want), "{placement:?}");
            assert_eq!(nr_ranges_sorted(&blocks_bytes(&b, &v)), 1);
        }
    }

    #[test]
    fn the_recorded_run_is_the_experiments_run() {
        let cfg = tiny();
        let m = model_run(&cfg, 256 << 20, Chunk::K4, 0, 0).unwrap();
        let (samples, _) = experiment::measure_run(&cfg, 256 << 20, Chunk::K4, 0, 0).unwrap();
        assert_eq!(m.fbs.len(), samples.len());
        assert!(m.same_trace, "the kernel's placement must make the same workload");
        // The experiment runs the model as gpu_buddy (`Buddy::gpu_buddy`).
        for (f, s) in m.fbs_kernel_placement.iter().zip(&samples) {
            assert_eq!(f.contiguous, s.contiguous, "{}", f.resolution);
            assert_eq!(f.scattered.as_ref().map(|b| nr_ranges(b)), s.scattered.as_ref().map(|x| x.nr_ranges));
        }
        // The trace replays on the model to the same state.
        let ops = crate::trace::parse(&m.trace).unwrap();
        let mut b = Buddy::new(256 << 20, Chunk::K4).unwrap();
        crate::trace::replay(&mut b, &ops[..m.snapshot_after]).unwrap();
        assert_eq!((b.free_counts(), b.free_bytes()), (m.free_counts.clone(), m.free_bytes));
        // And kernel-lab lowers it.
        let spec = &manifest(std::slice::from_ref(&m)).runs[0];
        let p = kernel_lab::buddy::plan(spec, &m.trace).unwrap();
        assert_eq!(p.ops.len(), ops.len());
        assert_eq!(p.report.len(), 8);
    }

    #[test]
    fn compare_counts_model_and_real() {
        let fb = |c, s: Option<Vec<(u64, u64)>>| ModelFb { resolution: "4K", bytes: 1, contiguous: c, scattered: s };
        let model = ModelRun {
            name: "r0".into(),
            bar: 1 << 30,
            chunk: Chunk::K4,
            target: 0.9,
            trial: 0,
            failed_allocs: vec![7],
            free_counts: vec![1, 0, 2],
            free_bytes: 9 << 12,
            fbs: vec![fb(false, Some(vec![(0, 0x1000), (0x1000, 0x1000)]))],
            fbs_kernel_placement: vec![fb(false, Some(vec![(0x1000, 0x1000), (0, 0x1000)]))],
            same_trace: true,
            snapshot_after: 10,
            trace: String::new(),
        };
        let obj = |id: &str, err: Option<&str>, blocks: Vec<(u64, u64)>| RealObject {
            id: id.into(),
            err: err.map(String::from),
            blocks,
        };
        let run = RealRun {
            name: "r0".into(),
            bar: 1 << 30,
            chunk: 4096,
            ops: 14,
            guest: GuestRun {
                // 12 is a framebuffer's refusal, past the pressure part.
                failed_allocs: vec![7, 12],
                snapshot: Some(Snapshot { avail: 9 << 12, live: 3, free_blocks: vec![1, 0, 2, 0] }),
                ..Default::default()
            },
            objects: vec![
                obj("fbc-4K", None, vec![(0, 0x2000)]),
                obj("fbs-4K", None, vec![(0x1000, 0x1000), (0, 0x1000)]),
            ],
        };
        let rep = BuddyLabReport { runs: vec![run], ..Default::default() };
        let rows = compare(std::slice::from_ref(&model), &rep, false).unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        // The kernel-placement model refused the contiguous one: not exact.
        assert_eq!((r.trials, r.same_state, r.exact, r.contiguous, r.no_room), (1, 1, 0, (0, 1), (0, 0)));
        assert_eq!((r.model_nr.clone(), r.real_nr.clone(), r.real_sorted_nr.clone()), (vec![1], vec![2], vec![1]));
        assert_eq!(r.kernel_placement_nr, vec![2]);
        let t = totals(&rows);
        assert_eq!((t.trials, t.same_state, t.contiguous, t.real_more, t.real_fewer, t.cells), (1, 1, (0, 1), 1, 0, 1));
        assert_eq!(t.contiguous_real_only, 1);
        assert!(
            table(&rows).contains(
                "| 1 GiB | 4 KiB | 90 % | 4K | 1 | 1 | 0 | 0 % | 100 % | 1 / 1 | 2 / 2 | 2 / 2 | 1 / 1 | 2 / 2 |"
            ),
            "{}",
            table(&rows)
        );
        let other = ModelRun { name: "r1".into(), ..model };
        assert_eq!(compare(std::slice::from_ref(&other), &rep, false), Err(CompareError::MissingRun("r1".into())));
        assert!(compare(&[other], &rep, true).unwrap().is_empty());
    }
}
