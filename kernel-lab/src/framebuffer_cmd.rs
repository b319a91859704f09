//! `kernel-lab framebuffer`: scattered framebuffers through one kernel, per
//! map path; JSON and markdown.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kernel_lab::debian::{self, Kernel, KernelRequest};
use kernel_lab::framebuffer::host::{self as fb_host, FbLabReport, FbTopologyResult};
use kernel_lab::framebuffer::{FbPlacement, FbReport, GuestOptions, PLACEMENTS_FILE};
use kernel_lab::host::{self, progress, LabError};
use kernel_lab::importer::host as importer_host;
use kernel_lab::importer::Topology;
use kernel_lab::{initramfs, qemu};

#[derive(clap::Args, Debug)]
pub struct FramebufferArgs {
    /// Kernel to test (as for the main command; `lab-patched`, `7.2`, ...).
    #[arg(long)]
    kernel: Option<String>,
    /// The placements (JSON, `kernel_lab::framebuffer::FbPlacement`s):
    /// written by `rfc --real-allocator` from the kernel's gpu_buddy.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../rfc/evidence/framebuffer-e2e/placements.json"))]
    placements: PathBuf,
    /// Only these placements (comma-separated names); default all.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// A topology name (rc-epyc-iova-large, rc-epyc-pt-large,
    /// switch-large), or `all`.
    #[arg(long, default_value = "all")]
    topology: String,
    /// Evenly spaced line samples per framebuffer (besides each range's start).
    #[arg(long, default_value_t = GuestOptions::default().lines)]
    lines: u32,
    /// Skip the single-range workaround.
    #[arg(long)]
    no_workaround: bool,
    /// Write the JSON report here (and markdown next to it, `.md`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Deadline per boot, seconds.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Keep the run directories.
    #[arg(long)]
    keep_run_dir: bool,
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> LabError {
    move |e| LabError::Io(format!("{what}: {e}"))
}

/// Runs the command; the number of unexplained disagreements and failed
/// topologies.
pub fn run(a: &FramebufferArgs) -> Result<u64, LabError> {
    let t0 = Instant::now();
    let text = std::fs::read_to_string(&a.placements).map_err(io(a.placements.display()))?;
    let mut placements: Vec<FbPlacement> =
        serde_json::from_str(&text).map_err(|e| LabError::Io(format!("{}: {e}", a.placements.display())))?;
    if let Some(only) = &a.only {
        let unknown: Vec<&str> =
            only.iter().filter(|n| !placements.iter().any(|p| &p.name == *n)).map(String::as_str).collect();
        if !unknown.is_empty() {
            return Err(LabError::Io(format!(
                "--only: no placement named {} in {}",
                unknown.join(", "),
                a.placements.display()
            )));
        }
        placements.retain(|p| only.contains(&p.name));
    }
    if placements.is_empty() {
        return Err(LabError::Io(format!("no placements selected from {}", a.placements.display())));
    }
    let root = host::cache_root()?;
    let run_dir = host::tempdir(&std::env::temp_dir(), "nr-ranges-framebuffer")?;
    host::ensure_host_tools(&run_dir.0)?;
    let suites = debian::kernel_suites();
    let kernel = debian::resolve_kernel(&root, &KernelRequest { wanted: a.kernel.clone(), refresh: false, suites })?;
    println!("kernel under test: {} (package {} from {})", kernel.pkg.abi, kernel.pkg.version, kernel.pkg.suite);
    let ko = importer_host::ensure_module(&root, &kernel)?;
    progress("building the static guest");
    let guest = initramfs::build_guest(&run_dir.0)?;
    let initrd = run_dir.0.join("initramfs.cpio");
    let ko_bytes = std::fs::read(&ko).map_err(io(ko.display()))?;
    let json = serde_json::to_vec(&placements).map_err(|e| LabError::Io(format!("placements: {e}")))?;
    initramfs::build_initramfs_with(
        &kernel,
        &guest,
        &[(kernel_lab::importer::MODULE_FILE.into(), ko_bytes), (PLACEMENTS_FILE.into(), json)],
        &initrd,
    )?;
    let all = fb_host::topologies();
    let chosen: Vec<Topology> =
        all.iter().filter(|t| a.topology == "all" || a.topology.split(',').any(|n| n == t.name)).cloned().collect();
    if chosen.is_empty() {
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        return Err(LabError::Io(format!("unknown topology {}; known: all, {}", a.topology, names.join(", "))));
    }
    let opt = GuestOptions { lines: a.lines, workaround: !a.no_workaround };
    let mut results = Vec::new();
    for topo in chosen {
        progress(format!("topology {}: {} framebuffers", topo.name, placements.len()));
        results.push(run_topology(a, &kernel, &initrd, &run_dir.0, topo, opt));
    }
    let failed: usize = results.iter().map(|r| r.unexplained + usize::from(r.error.is_some())).sum();
    let report = FbLabReport {
        kernel: kernel.pkg.abi.clone(),
        kernel_request: a.kernel.clone().unwrap_or_else(|| "default".into()),
        kernel_package: format!("{} {} ({})", kernel.pkg.abi, kernel.pkg.version, kernel.pkg.suite),
        placements,
        topologies: results,
        wall_seconds: t0.elapsed().as_secs_f64(),
    };
    let md = fb_host::markdown(&report);
    println!("{md}");
    if let Some(path) = &a.report {
        let json = serde_json::to_string(&report).map_err(|e| LabError::Io(format!("report: {e}")))?;
        std::fs::write(path, json + "\n").map_err(io(path.display()))?;
        let mdp = path.with_extension("md");
        std::fs::write(&mdp, md).map_err(io(mdp.display()))?;
        progress(format!("report written to {} and {}", path.display(), mdp.display()));
    }
    println!("timing: total {:.1} s", report.wall_seconds);
    Ok(failed as u64)
}

fn run_topology(
    a: &FramebufferArgs,
    kernel: &Kernel,
    initrd: &std::path::Path,
    parent: &std::path::Path,
    topo: Topology,
    opt: GuestOptions,
) -> FbTopologyResult {
    let mut r = FbTopologyResult {
        topology: topo.clone(),
        boot_seconds: 0.0,
        error: None,
        guest: None,
        checks: vec![],
        disagreements: 0,
        unexplained: 0,
    };
    let boot = qemu::boot_retrying(parent, "framebuffer", Duration::from_secs(a.timeout), a.keep_run_dir, |dir| {
        fb_host::machine(&topo, &kernel.vmlinuz(), initrd, dir, opt)
    });
    let bytes = match boot.and_then(|b| {
        r.boot_seconds = b.seconds;
        b.stream
    }) {
        Ok(b) => b,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    let rep: FbReport = match qemu::guest_report(&bytes) {
        Ok(x) => x,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    r.error.clone_from(&rep.error);
    r.checks = fb_host::compare(&rep, &topo, kernel_lab::lab_kernel::fidelity_for(kernel));
    r.disagreements = r.checks.iter().filter(|c| !c.agree).count();
    r.unexplained = r.checks.iter().filter(|c| !c.agree && c.explained.is_none()).count();
    r.guest = Some(rep);
    r
}
