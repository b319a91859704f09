//! The framebuffer end to end: framebuffers placed by the kernel's own
//! allocator (the sweep's pressure workload on an 8 GiB BAR, replayed on
//! gpu_buddy by `kernel-lab buddy`), then shared through each kernel's map
//! path by `kernel-lab framebuffer` (one multi-range dma-buf, and one
//! dma-buf per range), with edu reading sampled lines back.
//!
//! Out: `framebuffer-e2e/placements.json` (the kernel allocator's blocks,
//! which the matrix and CI replay without the allocator),
//! `framebuffer-e2e/e2e.json` (one [`FbRow`] per kernel, path and
//! framebuffer) and `e2e.md`.

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
}

/// The whole step; returns the table.
pub fn generate(g: &Generate<'_>) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let runs = real_buddy::model_runs(&config(g.seed))?;
    let traces = g.work.join("traces");
    real_buddy::write_traces(&runs, &traces)?;
    let buddy_report = g.work.join("kernel-buddy.json");
    real_buddy::run_kernel_lab(&traces, &buddy_report, g.allocator_kernel)?;
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
        reports.push(run_kernel_lab(&placements_path, k, &out)?);
    }
    let rows: Vec<FbRow> = reports.iter().flat_map(kernel_lab::framebuffer::host::rows).collect();
    std::fs::write(dir.join("e2e.json"), serde_json::to_string_pretty(&rows)? + "\n")?;
    let md = markdown(&fbs, &rows, &reports);
    std::fs::write(dir.join("e2e.md"), &md)?;
    Ok(table(&rows))
}

/// The evidence page.
pub fn markdown(fbs: &[FbPlacement], rows: &[FbRow], reports: &[FbLabReport]) -> String {
    let mut s = String::from("# A scattered framebuffer, end to end through the kernel\n\n");
    let _ = writeln!(
        s,
        "Regenerate: `cargo run --release -p rfc -- --real-allocator` (this page, the placements and e2e.json; \
         `--quick` runs the 4K at 90% case only).\n"
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
    s.push_str(&table(rows));
    s
}
