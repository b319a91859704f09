//! The framebuffer end to end: framebuffers placed by the kernel's own
//! allocator (the sweep's pressure workload on an 8 GiB BAR, replayed on
//! gpu_buddy by `kernel-lab buddy`), then shared through each kernel's map
//! path by `kernel-lab framebuffer` (one multi-range dma-buf, and one
//! dma-buf per range), with edu reading sampled lines back.
//!
//! Out: `framebuffer-e2e/placements.json` (the kernel allocator's blocks,
//! which the matrix and CI replay without the allocator),
//! `framebuffer-e2e/e2e.json` (one [`FbRow`] per kernel, path and
//! framebuffer), `e2e.md`, [`plot`]'s `e2e.svg` (the acceptance case), and
//! each kernel's full report (`kernel-<kernel>.json`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kernel_lab::buddy::BuddyLabReport;
use kernel_lab::framebuffer::host::{table, FbLabReport, FbRow};
use kernel_lab::framebuffer::FbPlacement;

use crate::buddy::Chunk;
use crate::experiment::SweepConfig;
use crate::fb::RESOLUTIONS;
use crate::real_buddy::{self, ModelRun};

/// The BAR: ivshmem's 8 GiB BAR2 in the lab.
pub const BAR: u64 = 8 << 30;

/// The kernels, in table order: Debian's, the lab build as shipped, and
/// the lab build with the fix series.
pub const KERNELS: [&str; 3] = ["7.2", "lab-shipped", "lab-patched"];

/// The acceptance case: a 4K framebuffer at 90% occupancy.
pub const ACCEPTANCE: &str = "8GiB-4k-900-0/4K";

/// The pressure cells: the sweep's occupancies on the 8 GiB BAR, 4 KiB
/// chunks (the smallest, so the most ranges), one trial each.
pub fn config(seed: u64) -> SweepConfig {
    SweepConfig {
        bars: vec![BAR],
        occupancies: vec![0.50, 0.75, 0.90, 0.95],
        chunks: vec![Chunk::K4],
        resolutions: RESOLUTIONS.to_vec(),
        trials: 1,
        seed,
    }
}

/// The scattered framebuffers of the kernel's runs, in run order; a
/// framebuffer that did not fit is left out.
pub fn placements(runs: &[ModelRun], real: &BuddyLabReport) -> Vec<FbPlacement> {
    let mut v = Vec::new();
    for m in runs {
        let Some(r) = real.runs.iter().find(|r| r.name == m.name) else { continue };
        for fb in &RESOLUTIONS {
            let obj = |id: String| r.objects.iter().find(|o| o.id == id);
            let Some(s) = obj(format!("fbs-{}", fb.name)).filter(|o| o.err.is_none()) else { continue };
            v.push(FbPlacement {
                name: format!("{}/{}", m.name, fb.name),
                resolution: fb.name.into(),
                width: fb.width as u32,
                pitch: fb.pitch(),
                height: fb.height as u32,
                cpp: (fb.bpp / 8) as u32,
                bar: r.bar,
                chunk: r.chunk,
                occupancy_permille: (m.target * 1000.0).round() as u32,
                contiguous: obj(format!("fbc-{}", fb.name)).is_some_and(|o| o.err.is_none()),
                blocks: s.blocks.clone(),
                allocator: format!("gpu_buddy on {}", real.kernel),
            });
        }
    }
    v
}

/// Runs `kernel-lab framebuffer` on one kernel; its report. Exit 1 (an
/// unexplained disagreement) still has a report, which says which.
pub fn run_kernel_lab(placements: &Path, kernel: &str, out: &Path) -> Result<FbLabReport, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(crate::workspace_root())
        .args(["run", "--release", "--quiet", "-p", "kernel-lab", "--", "framebuffer", "--kernel", kernel])
        .arg("--placements")
        .arg(placements)
        .arg("--report")
        .arg(out)
        .status()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    if !matches!(status.code(), Some(0 | 1)) {
        return Err(format!("kernel-lab framebuffer --kernel {kernel}: {status}"));
    }
    let text = std::fs::read_to_string(out).map_err(|e| format!("{}: {e}", out.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", out.display()))
}

/// What [`generate`] needs.
#[derive(Debug, Clone)]
pub struct Generate<'a> {
    /// Seed of the pressure workloads.
    pub seed: u64,
    /// Evidence directory (`framebuffer-e2e/` goes in it).
    pub out: &'a Path,
    /// Scratch.
    pub work: &'a Path,
    /// Lab kernel whose gpu_buddy places the framebuffers.
    pub allocator_kernel: &'a str,
    /// Kernels to run end to end.
    pub kernels: &'a [String],
    /// Run only the placements named here (`--quick`: the acceptance case).
    pub only: Option<&'a str>,
    /// Read the allocator's and each kernel's reports from `work` (an
    /// earlier run's) instead of running the labs.
    pub reuse: bool,
}

/// The whole step; returns the table.
pub fn generate(g: &Generate<'_>) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let runs = real_buddy::model_runs(&config(g.seed))?;
    let traces = g.work.join("traces");
    real_buddy::write_traces(&runs, &traces)?;
    let buddy_report = g.work.join("kernel-buddy.json");
    if !g.reuse {
        real_buddy::run_kernel_lab(&traces, &buddy_report, g.allocator_kernel)?;
    }
    let text = std::fs::read_to_string(&buddy_report).map_err(|e| format!("{}: {e}", buddy_report.display()))?;
    let real: BuddyLabReport = serde_json::from_str(&text)?;
    let mut fbs = placements(&runs, &real);
    if let Some(only) = g.only {
        fbs.retain(|p| p.name == only);
    }
    let dir = g.out.join("framebuffer-e2e");
    std::fs::create_dir_all(&dir)?;
    let placements_path = dir.join("placements.json");
    std::fs::write(&placements_path, serde_json::to_string_pretty(&fbs)? + "\n")?;
    let mut reports = Vec::new();
    for k in g.kernels {
        eprintln!("framebuffer end to end: {} framebuffers on {k}", fbs.len());
        let out: PathBuf = g.work.join(format!("fb-{k}.json"));
        if g.reuse {
            let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            reports.push(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", out.display()))?);
        } else {
            reports.push(run_kernel_lab(&placements_path, k, &out)?);
        }
        // The kernel's own answers (every entry and read) beside the summary.
        std::fs::copy(&out, dir.join(format!("kernel-{k}.json")))?;
    }
    let rows: Vec<FbRow> = reports.iter().flat_map(kernel_lab::framebuffer::host::rows).collect();
    std::fs::write(dir.join("e2e.json"), serde_json::to_string_pretty(&rows)? + "\n")?;
    let md = markdown(&fbs, &rows, &reports);
    std::fs::write(dir.join("e2e.md"), &md)?;
    if let Some(p) = fbs.iter().find(|p| p.name == ACCEPTANCE) {
        plot(&dir.join("e2e.svg"), p, &rows)?;
    }
    Ok(table(&rows))
}

/// The evidence page.
pub fn markdown(fbs: &[FbPlacement], rows: &[FbRow], reports: &[FbLabReport]) -> String {
    let mut s = String::from("# A scattered framebuffer, end to end through the kernel\n\n");
    let _ = writeln!(
        s,
        "Regenerate: `cargo run --release -p rfc -- --real-allocator --real-trials 2` (the allocator sweep, then \
         this page, the placements and e2e.json; `--e2e-only` skips the sweep, `--quick` runs the 4K at 90 % case \
         only).\n"
    );
    if let Some(p) = fbs.first() {
        let _ = writeln!(
            s,
            "Placements: {} framebuffers from the sweep's pressure workload on a {} GiB BAR with {} KiB chunks, \
             placed by {} (placements.json: every block, in the buffer's order).\n",
            fbs.len(),
            p.bar >> 30,
            p.chunk >> 10,
            p.allocator
        );
    }
    for r in reports {
        let _ = writeln!(s, "- `--kernel {}`: {} ({:.0} s)", r.kernel_request, r.kernel_package, r.wall_seconds);
    }
    let _ = writeln!(
        s,
        "\nEach framebuffer's every line is written through the vfio region's mmap with a pattern naming its \
         framebuffer, row and byte; edu reads the start of every range plus 16 evenly spaced lines and the last \
         bytes, at the DMA addresses of the kernel's own sg table, in framebuffer order. \"Spans\" are runs of \
         DMA-contiguous entries: what the importer's engine must be programmed with.\n"
    );
    s.push_str("![the 4K framebuffer at 90 %, end to end](e2e.svg)\n\n");
    s.push_str(&table(rows));
    s
}

fn path_label(p: kernel_lab::importer::Expect) -> &'static str {
    use kernel_lab::importer::Expect;
    match p {
        Expect::IovaPath => "IOVA (intel-iommu)",
        Expect::PerRangeDirect => "dma-direct (iommu=pt)",
        Expect::BusAddr => "BUS_ADDR (switch)",
        Expect::NotSupported => "none",
    }
}

/// RFC.md's section: per kernel and path, how many framebuffers reached
/// edu intact as one dma-buf and as one dma-buf per range, the acceptance
/// case, and what the importer holds.
pub fn rfc_section(rows: &[FbRow]) -> String {
    let mut s = String::new();
    let n = rows.iter().map(|r| r.name.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    let kernels: Vec<&str> = KERNELS.iter().copied().filter(|k| rows.iter().any(|r| r.kernel == *k)).collect();
    let _ = writeln!(
        s,
        "{n} framebuffers (1080p to 8K, 32 bpp, 50-95 % occupancy of an 8 GiB BAR, 4 KiB chunks) placed by the \
         kernel's gpu_buddy, written line by line through the vfio mmap, exported, mapped by the lab's importer \
         on edu and read back by edu's DMA at the kernel's own sg table addresses \
         ([evidence/framebuffer-e2e/e2e.md](evidence/framebuffer-e2e/e2e.md), \
         `cargo run --release -p rfc -- --real-allocator`).\n"
    );
    s.push_str(
        "| kernel | path | one multi-range dma-buf: intact | map errors | 4K at 90 % | one dma-buf per range: intact | \
         DMA spans the importer holds (one / per range, max) | 4K at 90 %: export to mapping, ms (one / per range) | \
         kmod-shim |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for k in &kernels {
        for p in [
            kernel_lab::importer::Expect::IovaPath,
            kernel_lab::importer::Expect::PerRangeDirect,
            kernel_lab::importer::Expect::BusAddr,
        ] {
            let v: Vec<&FbRow> = rows.iter().filter(|r| r.kernel == *k && r.path == p).collect();
            if v.is_empty() {
                continue;
            }
            let intact = |r: &FbRow| r.map == "0" && r.reads > 0 && r.reads_ok == r.reads;
            let errors: std::collections::BTreeSet<&str> =
                v.iter().filter(|r| r.map != "0").map(|r| r.map.as_str()).collect();
            let acc = v.iter().find(|r| r.name == ACCEPTANCE).map_or("not run".to_string(), |r| {
                format!(
                    "{} ranges: {}",
                    r.nr_ranges,
                    if intact(r) {
                        format!("intact ({} of {} reads)", r.reads_ok, r.reads)
                    } else if r.map != "0" {
                        format!("**{}**", r.map)
                    } else {
                        format!("{} of {} reads intact", r.reads_ok, r.reads)
                    }
                )
            });
            let w = v.iter().filter(|r| r.workaround_reads > 0 && r.workaround_reads_ok == r.workaround_reads).count();
            let max_one = v.iter().filter(|r| r.map == "0").map(|r| r.spans).max();
            let max_per = v.iter().map(|r| r.workaround_spans).max().unwrap_or(0);
            let unexplained: usize = v.iter().map(|r| r.unexplained).sum();
            let ms = v.iter().find(|r| r.name == ACCEPTANCE).map_or("-".to_string(), |r| {
                let one = if r.map == "0" { format!("{:.1}", r.setup_seconds * 1e3) } else { "fails".into() };
                format!("{one} / {:.1}", r.workaround_setup_seconds * 1e3)
            });
            let _ = writeln!(
                s,
                "| {k} | {} | {} of {} | {} | {acc} | {w} of {} | {} / {max_per} | {ms} | {} |",
                path_label(p),
                v.iter().filter(|r| intact(r)).count(),
                v.len(),
                if errors.is_empty() { "none".to_string() } else { errors.into_iter().collect::<Vec<_>>().join(", ") },
                v.len(),
                max_one.map_or("-".to_string(), |m| m.to_string()),
                if unexplained == 0 { "agrees".to_string() } else { format!("**{unexplained} unexplained**") }
            );
        }
    }
    s.push_str(
        "\nBUS_ADDR: the kernel maps (one entry per range) but QEMU sends every DMA through the vIOMMU, so edu \
         cannot reach the BAR by bus address (kernel-lab FINDINGS F4); kmod-shim predicts the map and the entries, \
         and the reads' difference is that finding. Times are the guest's clock under QEMU TCG (the lab builds \
         carry KASAN and lockdep), for comparing the two designs on one kernel, not across kernels.\n\n\
         ![the 4K framebuffer at 90 %, end to end](evidence/framebuffer-e2e/e2e.svg)\n",
    );
    s
}

/// The figure: the acceptance case's blocks in the BAR and in the buffer's
/// order, and what each kernel's peer read, per path, as one dma-buf and
/// as one dma-buf per range.
pub fn plot(path: &Path, p: &FbPlacement, rows: &[FbRow]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let (w, h) = (1200i32, 760i32);
    let root = SVGBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let font = |size: i32| ("sans-serif", size).into_font();
    let centred = |size: i32| font(size).into_text_style(&root).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(
        format!(
            "{} framebuffer ({} MiB) at {} % occupancy of an {} GiB BAR, placed by {}: {} ranges",
            p.resolution,
            p.bytes() >> 20,
            p.occupancy_permille / 10,
            p.bar >> 30,
            p.allocator,
            p.ranges().len()
        ),
        (20, 14),
        font(18),
    ))?;
    let ranges = p.ranges();
    let colour = |i: usize| Palette99::pick(i).to_rgba();
    // The BAR, to scale: where each range lies.
    let (x0, x1) = (60i32, w - 40);
    let bar_y = 90;
    root.draw(&Text::new("BAR offset (GiB), to scale", (x0, bar_y - 34), font(14)))?;
    root.draw(&Rectangle::new([(x0, bar_y), (x1, bar_y + 24)], BLACK.stroke_width(1)))?;
    let at = |off: u64| x0 + ((x1 - x0) as f64 * off as f64 / p.bar as f64) as i32;
    for g in 0..=(p.bar >> 30) {
        let x = at(g << 30);
        root.draw(&PathElement::new(vec![(x, bar_y + 24), (x, bar_y + 30)], BLACK))?;
        root.draw(&Text::new(g.to_string(), (x, bar_y + 40), centred(12)))?;
    }
    // The buffer, range by range, in the order the dma-buf concatenates them.
    let buf_y = 230;
    root.draw(&Text::new(
        "the dma-buf's bytes: the ranges concatenated in the buffer's order (width = length)",
        (x0, buf_y - 34),
        font(14),
    ))?;
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let mut bx = x0;
    for (i, &(off, len)) in ranges.iter().enumerate() {
        let c = colour(i);
        let xb = at(off);
        root.draw(&Rectangle::new([(xb - 2, bar_y + 1), (xb + 2, bar_y + 23)], c.filled()))?;
        let wdt = (((x1 - x0) as f64) * len as f64 / total as f64).round() as i32;
        let end = if i + 1 == ranges.len() { x1 } else { bx + wdt };
        root.draw(&Rectangle::new([(bx, buf_y), (end, buf_y + 40)], c.mix(0.8).filled()))?;
        root.draw(&Rectangle::new([(bx, buf_y), (end, buf_y + 40)], BLACK.stroke_width(1)))?;
        root.draw(&PathElement::new(vec![(xb, bar_y + 24), ((bx + end) / 2, buf_y)], c.stroke_width(1)))?;
        // Labels only where they fit; the smallest ranges are a sliver.
        if end - bx >= 14 {
            root.draw(&Text::new(format!("{i}"), ((bx + end) / 2, buf_y + 12), centred(13)))?;
        }
        if end - bx >= 50 {
            let size = if len >= 1 << 20 { format!("{} MiB", len >> 20) } else { format!("{} KiB", len >> 10) };
            root.draw(&Text::new(size, ((bx + end) / 2, buf_y + 29), centred(11)))?;
        }
        bx = end;
    }
    // What the peer read: one row per kernel and path.
    let grid_y = 330;
    let (c0, c1, c2) = (x0, x0 + 330, x0 + 730);
    root.draw(&Text::new(
        "edu's DMA of the samples (each range's start, 16 lines, the end) at the kernel's sg table addresses",
        (x0, grid_y - 20),
        font(14),
    ))?;
    for (x, t) in
        [(c0, "kernel, map path"), (c1, "one multi-range dma-buf"), (c2, "one dma-buf per range (workaround)")]
    {
        root.draw(&Text::new(t, (x + 6, grid_y + 10), font(14)))?;
    }
    let verdict = |mapped: bool, ok: usize, n: usize, err: &str, path| -> (RGBColor, String) {
        if !mapped {
            (RGBColor(230, 120, 110), format!("map fails: {err}"))
        } else if n > 0 && ok == n {
            (RGBColor(120, 200, 120), format!("intact: {ok} of {n} reads"))
        } else if path == kernel_lab::importer::Expect::BusAddr {
            (RGBColor(200, 200, 200), format!("mapped; edu cannot reach bus addresses in QEMU (F4), {ok} of {n}"))
        } else {
            (RGBColor(240, 190, 90), format!("mapped, {ok} of {n} reads intact"))
        }
    };
    let mut y = grid_y + 24;
    for r in rows.iter().filter(|r| r.name == p.name) {
        let row_h = 40;
        let label = format!("{}, {}", r.kernel, path_label(r.path));
        root.draw(&Text::new(label, (c0 + 6, y + row_h / 2 - 7), font(14)))?;
        let cells = [
            (c1, c2, verdict(r.map == "0", r.reads_ok, r.reads, &r.map, r.path)),
            (
                c2,
                x1,
                verdict(
                    r.workaround_mapped == r.nr_ranges,
                    r.workaround_reads_ok,
                    r.workaround_reads,
                    "a range failed",
                    r.path,
                ),
            ),
        ];
        for (a, b, (fill, text)) in cells {
            root.draw(&Rectangle::new([(a, y + 3), (b - 6, y + row_h - 3)], fill.filled()))?;
            root.draw(&Text::new(text, (a + 8, y + row_h / 2 - 7), font(13)))?;
        }
        y += row_h;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_lab::importer::Expect;

    fn row(kernel: &str, path: Expect, map: &str, ok: usize) -> FbRow {
        FbRow {
            kernel: kernel.into(),
            topology: String::new(),
            path,
            name: ACCEPTANCE.into(),
            resolution: "4K".into(),
            occupancy_permille: 900,
            chunk: 4096,
            bytes: 33_177_600,
            contiguous: true,
            nr_ranges: 8,
            map: map.into(),
            entries: 1,
            spans: 1,
            reads_ok: ok,
            reads: 24,
            workaround_mapped: 8,
            workaround_spans: 8,
            workaround_reads_ok: 24,
            workaround_reads: 24,
            setup_seconds: 0.0,
            workaround_setup_seconds: 0.0,
            unexplained: 0,
        }
    }

    #[test]
    fn the_section_says_which_kernel_fails_the_acceptance_case() {
        let s = rfc_section(&[
            row("lab-shipped", Expect::IovaPath, "EADDRINUSE", 0),
            row("lab-patched", Expect::IovaPath, "0", 24),
        ]);
        assert!(
            s.contains("| lab-shipped | IOVA (intel-iommu) | 0 of 1 | EADDRINUSE | 8 ranges: **EADDRINUSE** |"),
            "{s}"
        );
        assert!(
            s.contains("| lab-patched | IOVA (intel-iommu) | 1 of 1 | none | 8 ranges: intact (24 of 24 reads) |"),
            "{s}"
        );
    }

    #[test]
    fn the_placement_cells_are_the_sweeps_on_an_8_gib_bar() {
        let c = config(1);
        assert_eq!(c.bars, vec![BAR]);
        assert_eq!(c.occupancies, SweepConfig::full(1).occupancies);
        assert!(ACCEPTANCE.starts_with("8GiB-4k-900-0/"), "the acceptance case is one of the runs");
    }
}
