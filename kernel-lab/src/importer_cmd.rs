//! `kernel-lab importer`: the topology matrix, its JSON and markdown.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kernel_lab::debian::{self, Kernel, KernelRequest};
use kernel_lab::host::{self, progress, LabError};
use kernel_lab::importer::host as importer_host;
use kernel_lab::importer::{topologies, ImporterReport, Topology};
use kernel_lab::report::{ImporterLabReport, TopologyResult};
use kernel_lab::{initramfs, qemu};

#[derive(clap::Args, Debug)]
pub struct ImporterArgs {
    /// Kernel to test (as for the main command).
    #[arg(long)]
    kernel: Option<String>,
    /// A topology name, or `all`.
    #[arg(long, default_value = "rc-epyc-iova")]
    topology: String,
    /// Only these shapes (comma-separated names); default all.
    #[arg(long, value_delimiter = ',')]
    shapes: Option<Vec<String>>,
    /// Skip the revocation sequence.
    #[arg(long)]
    no_revoke: bool,
    /// Write the JSON report here (and markdown next to it, `.md`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Deadline per boot, seconds.
    #[arg(long, default_value_t = 240)]
    timeout: u64,
    /// Keep the run directories.
    #[arg(long)]
    keep_run_dir: bool,
}

pub fn run(a: &ImporterArgs) -> Result<u64, LabError> {
    let t0 = Instant::now();
    let root = host::cache_root()?;
    let run_dir = host::tempdir(&std::env::temp_dir(), "nr-ranges-importer")?;
    host::ensure_host_tools(&run_dir.0)?;
    let suites = debian::kernel_suites();
    let kernel = debian::resolve_kernel(&root, &KernelRequest { wanted: a.kernel.clone(), refresh: false, suites })?;
    println!("kernel under test: {} (package {} from {})", kernel.pkg.abi, kernel.pkg.version, kernel.pkg.suite);
    let tm = Instant::now();
    let ko = importer_host::ensure_module(&root, &kernel)?;
    println!("fixture: {} ({:.1} s)", ko.display(), tm.elapsed().as_secs_f64());
    progress("building the static guest");
    let guest = initramfs::build_guest(&run_dir.0)?;
    let initramfs = run_dir.0.join("initramfs.cpio");
    let ko_bytes = std::fs::read(&ko).map_err(|e| LabError::Io(format!("read {}: {e}", ko.display())))?;
    initramfs::build_initramfs_with(
        &kernel,
        &guest,
        &[(kernel_lab::importer::MODULE_FILE.into(), ko_bytes)],
        &initramfs,
    )?;
    let prepare = t0.elapsed().as_secs_f64();

    let all = topologies();
    let chosen: Vec<Topology> = if a.topology == "all" {
        all
    } else {
        let t: Vec<Topology> = all.iter().filter(|t| a.topology.split(',').any(|n| n == t.name)).cloned().collect();
        if t.is_empty() {
            let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
            return Err(LabError::Io(format!("unknown topology {}; known: all, {}", a.topology, names.join(", "))));
        }
        t
    };
    let mut results = Vec::new();
    for topo in chosen {
        progress(format!("topology {}: {}", topo.name, topo.about));
        results.push(run_topology(a, &kernel, &initramfs, &run_dir.0, topo));
    }
    // Fails on unexplained disagreements and on topologies that could not
    // run, except the multifunction ones whose shared IOMMU group is itself
    // the finding (FINDINGS F5).
    let total: usize = results
        .iter()
        .map(|r| {
            let known_error = r.topology.placement == kernel_lab::importer::Placement::Multifunction
                && r.error.as_deref().is_some_and(|e| e.contains("not viable"));
            r.unexplained + (r.error.is_some() && !known_error) as usize
        })
        .sum();
    let report = ImporterLabReport {
        kernel: kernel.pkg.abi.clone(),
        kernel_package: format!("{} {} ({})", kernel.pkg.abi, kernel.pkg.version, kernel.pkg.suite),
        module_hash: importer_host::source_hash(),
        prepare_seconds: prepare,
        wall_seconds: t0.elapsed().as_secs_f64(),
        topologies: results,
    };
    let md = markdown(&report);
    println!("{md}");
    if let Some(path) = &a.report {
        let json = serde_json::to_string_pretty(&report).map_err(|e| LabError::Io(format!("report: {e}")))?;
        std::fs::write(path, json + "\n").map_err(|e| LabError::Io(format!("write {}: {e}", path.display())))?;
        let mdp = path.with_extension("md");
        std::fs::write(&mdp, md).map_err(|e| LabError::Io(format!("write {}: {e}", mdp.display())))?;
        progress(format!("report written to {} and {}", path.display(), mdp.display()));
    }
    println!("timing: prepare {:.1} s, total {:.1} s", report.prepare_seconds, report.wall_seconds);
    Ok(total as u64)
}

fn run_topology(
    a: &ImporterArgs,
    kernel: &Kernel,
    initramfs: &std::path::Path,
    parent: &std::path::Path,
    topo: Topology,
) -> TopologyResult {
    let mut r = TopologyResult {
        topology: topo.clone(),
        retried_after_oops: false,
        boot_seconds: 0.0,
        error: None,
        guest: None,
        checks: vec![],
        disagreements: 0,
        unexplained: 0,
    };
    let boot = qemu::boot_retrying(parent, &topo.name, Duration::from_secs(a.timeout), a.keep_run_dir, |dir| {
        let machine = importer_host::machine(&topo, &kernel.vmlinuz(), initramfs, dir, a.shapes.as_deref());
        // The guest reads nrlab.revoke from the kernel command line.
        if a.no_revoke {
            machine.append("nrlab.revoke=0")
        } else {
            machine
        }
    });
    let bytes = match boot.and_then(|b| {
        r.boot_seconds = b.seconds;
        r.retried_after_oops = b.retried_after_oops;
        b.stream
    }) {
        Ok(b) => b,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    let rep: ImporterReport = match qemu::guest_report(&bytes) {
        Ok(x) => x,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    r.error.clone_from(&rep.error);
    r.checks = importer_host::compare(&rep, &topo, kernel_lab::lab_kernel::fidelity_for(kernel));
    r.disagreements = r.checks.iter().filter(|c| !c.agree).count();
    r.unexplained = r.checks.iter().filter(|c| !c.agree && c.explained.is_none()).count();
    r.guest = Some(rep);
    r
}

fn markdown(rep: &ImporterLabReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Importer lab: {}\n", rep.kernel_package);
    let _ = writeln!(s, "fixture source hash {}; prepare {:.1} s\n", rep.module_hash, rep.prepare_seconds);
    for t in &rep.topologies {
        let _ = writeln!(
            s,
            "## {} (-cpu {}, {})\n\n{}\n",
            t.topology.name, t.topology.cpu, t.topology.cmdline, t.topology.about
        );
        let _ = writeln!(
            s,
            "predicted path: {:?}; boot {:.0} s{}; disagreements: {} ({} unexplained)\n",
            t.topology.expect,
            t.boot_seconds,
            if t.retried_after_oops { " (retried once after an early oops)" } else { "" },
            t.disagreements,
            t.unexplained
        );
        if let Some(e) = &t.error {
            let _ = writeln!(s, "**error**: {e}\n");
        }
        if let Some(g) = &t.guest {
            for (bdf, grp) in &g.groups {
                let _ = writeln!(s, "- {bdf}: {grp}");
            }
            let _ = writeln!(s, "- pci_p2pdma_distance(ivshmem, edu) = {:?}", g.distance);
            if let Some(i) = &g.ivshmem {
                let _ = writeln!(s, "- ivshmem {}: {}", i.bdf, i.check_json());
            }
            for l in &g.sanitizer {
                let _ = writeln!(s, "- sanitizer: `{l}`");
            }
            for l in g.dmesg.iter().filter(|l| l.contains("p2p") || l.contains("DMAR") || l.contains("ACS")).take(12) {
                let _ = writeln!(s, "- dmesg: `{l}`");
            }
            for p in &g.iova_by_hand {
                let _ = writeln!(
                    s,
                    "- IOVA by hand, {} with {}: {} (failed range {}, IOVA {:#x}, linked {:#x}); edu reads: {}",
                    p.shape,
                    p.mode,
                    if p.err == 0 { "ok".to_string() } else { kernel_lab::proto::KernelErrno(-p.err).to_string() },
                    p.failed_range,
                    p.iova,
                    p.linked,
                    p.reads.join(", ")
                );
            }
            for r in g.rev.iter().filter(|r| !r.note.is_empty()) {
                let _ = writeln!(s, "- revocation {}: {}", r.step, r.note);
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "| what | field | kernel | kmod-shim | agree |\n| --- | --- | --- | --- | --- |");
        for c in &t.checks {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                c.what,
                c.field,
                c.kernel.replace('|', "/"),
                c.shim.replace('|', "/"),
                match (c.agree, &c.explained) {
                    (true, _) => "yes".to_string(),
                    (false, Some(x)) => format!("no, {x}"),
                    (false, None) => "**NO**".to_string(),
                }
            );
        }
        let _ = writeln!(s);
    }
    s
}
