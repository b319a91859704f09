//! `kernel-lab fault-sweep`: the fault sweep's host side (modules, boot,
//! comparison with kmod-shim, JSON and markdown). See `kernel_lab::fault`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kernel_lab::debian::{self, Kernel, KernelRequest};
use kernel_lab::fault::{self, FaultGuestReport, Variant};
use kernel_lab::host::{self, progress, LabError};
use kernel_lab::importer::host as importer_host;
use kernel_lab::lab_kernel::LabVariant;
use kernel_lab::report::FaultSweepReport;
use kernel_lab::{initramfs, qemu};

#[derive(clap::Args, Debug)]
pub struct FaultArgs {
    /// Kernel to test: `lab-shipped`, `lab-patched`, or a Debian kernel
    /// (which has no fault injection: the run says so and exits 0).
    #[arg(long)]
    kernel: Option<String>,
    /// Write the JSON report here (and markdown next to it, `.md`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// CI-sized: 3 failing rounds per point instead of 12.
    #[arg(long)]
    quick: bool,
    /// Deadline for the boot, seconds (default 600, 300 with --quick).
    #[arg(long)]
    timeout: Option<u64>,
    /// Keep the run directory (console log, guest output).
    #[arg(long)]
    keep_run_dir: bool,
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> LabError {
    move |e| LabError::Io(format!("{what}: {e}"))
}

/// `nrlab_fault.ko` built against a lab kernel, cached in its entry by
/// source hash: `<entry>/faultmod/module-<hash>/nrlab_fault.ko`.
fn ensure_fault_module(
    root: &Path,
    kernel: &Kernel,
    tree: &kernel_lab::lab_kernel::BuildTree,
) -> Result<PathBuf, LabError> {
    let hash = fault::source_hash();
    let files = [("nrlab_fault.c", fault::SOURCE), ("Kbuild", fault::KBUILD)];
    let m = kernel_lab::lab_kernel::ExternalModule {
        cache: "faultmod",
        hash: &hash,
        files: &files,
        ko: fault::MODULE_FILE,
    };
    kernel_lab::lab_kernel::ensure_external_module(root, kernel, tree, &m)
}

pub fn run(a: &FaultArgs) -> Result<u64, LabError> {
    let t0 = Instant::now();
    let root = host::cache_root()?;
    let run_dir = host::tempdir(&std::env::temp_dir(), "nr-ranges-fault")?;
    host::ensure_host_tools(&run_dir.0)?;
    let suites = debian::kernel_suites();
    let kernel = debian::resolve_kernel(&root, &KernelRequest { wanted: a.kernel.clone(), refresh: false, suites })?;
    println!("kernel under test: {} (package {} from {})", kernel.pkg.abi, kernel.pkg.version, kernel.pkg.suite);
    let variant = match kernel.build.as_ref().map(|b| b.variant) {
        Some(LabVariant::Shipped) => Variant::Shipped,
        Some(LabVariant::Patched) => Variant::Patched,
        None => Variant::Other,
    };
    // Only lab kernels have fault injection; a Debian kernel boots without
    // the fixtures and the guest says what is missing.
    let mut extra = Vec::new();
    if let Some(tree) = &kernel.build {
        let tm = Instant::now();
        let imp = importer_host::ensure_module(&root, &kernel)?;
        let flt = ensure_fault_module(&root, &kernel, tree)?;
        println!("fixtures: {}, {} ({:.1} s)", imp.display(), flt.display(), tm.elapsed().as_secs_f64());
        for (name, p) in [(kernel_lab::importer::MODULE_FILE, &imp), (fault::MODULE_FILE, &flt)] {
            extra.push((name.to_string(), fs::read(p).map_err(io_err(format!("read {}", p.display())))?));
        }
    }
    progress("building the static guest");
    let guest = initramfs::build_guest(&run_dir.0)?;
    let initramfs = run_dir.0.join("initramfs.cpio");
    initramfs::build_initramfs_with(&kernel, &guest, &extra, &initramfs)?;
    let prepare = t0.elapsed().as_secs_f64();

    let repeats = if a.quick { fault::REPEATS_QUICK } else { fault::REPEATS_FULL };
    let topo = kernel_lab::importer::topologies()
        .into_iter()
        .find(|t| t.name == "rc-epyc-iova")
        .ok_or_else(|| LabError::Io("no rc-epyc-iova topology".into()))?;
    let timeout = Duration::from_secs(a.timeout.unwrap_or(if a.quick { 300 } else { 600 }));
    progress(format!(
        "booting QEMU (TCG), topology {}, {repeats} rounds per point, deadline {} s",
        topo.name,
        timeout.as_secs()
    ));
    // The importer lab's machine; strict IOMMU mode so that a returned IOVA
    // span is handed out again at once and a leaked one shows.
    let boot = qemu::boot_retrying(&run_dir.0, "fault", timeout, a.keep_run_dir, |dir| {
        importer_host::machine(&topo, &kernel.vmlinuz(), &initramfs, dir, None)
            .append(&format!("nrlab.mode=fault iommu.strict=1 nrlab.repeats={repeats}"))
    })?;
    let (stream, retried_after_oops, boot_seconds) = (boot.stream, boot.retried_after_oops, boot.seconds);
    let bytes = stream?;
    let guest: FaultGuestReport = qemu::guest_report(&bytes).map_err(LabError::GuestFailed)?;
    if let Some(e) = &guest.error {
        return Err(LabError::GuestFailed(e.clone()));
    }
    let mut report = FaultSweepReport {
        kernel: guest.kernel.clone(),
        kernel_package: format!("{} {} ({})", kernel.pkg.abi, kernel.pkg.version, kernel.pkg.suite),
        variant,
        shim_fidelity: format!("{:?}", variant.fidelity()),
        verdict: "ran".into(),
        repeats,
        module_hash: fault::source_hash(),
        cmdline: guest.cmdline.clone(),
        prepare_seconds: prepare,
        boot_seconds,
        wall_seconds: 0.0,
        ops: vec![],
        overrides: vec![],
        defects: vec![],
        sanitizer: fault::sanitizer_report(&guest),
        kmemleak: guest.kmemleak.clone(),
        kmemleak_groups: fault::kmemleak_groups(&guest.kmemleak, guest.ivshmem.as_ref(), variant),
        notes: guest.notes.clone(),
        failures: 0,
        guest: None,
    };
    if retried_after_oops {
        report.notes.push("booted twice: the first boot oopsed before the guest agent ran".into());
    }
    if let Some(why) = &guest.unavailable {
        report.verdict = format!("fault injection unavailable: {why}");
    } else {
        let (ops, overrides, defects) =
            fault::compare(&guest, variant).ok_or_else(|| LabError::GuestFailed("no ivshmem in the report".into()))?;
        report.ops = ops;
        report.overrides = overrides;
        report.defects = defects;
        report.defects.push(fault::sg_table_verdict(&report.kmemleak_groups, variant));
        report.failures = fault::failures(&report);
    }
    report.guest = Some(guest);
    report.wall_seconds = t0.elapsed().as_secs_f64();
    let md = markdown(&report);
    println!("{md}");
    if let Some(path) = &a.report {
        let json = serde_json::to_string_pretty(&report).map_err(|e| LabError::Io(format!("report: {e}")))?;
        fs::write(path, json + "\n").map_err(io_err(format!("write {}", path.display())))?;
        let mdp = path.with_extension("md");
        fs::write(&mdp, &md).map_err(io_err(format!("write {}", mdp.display())))?;
        progress(format!("report written to {} and {}", path.display(), mdp.display()));
    }
    println!(
        "timing: prepare {:.1} s, boot and sweep {:.1} s, total {:.1} s",
        report.prepare_seconds, report.boot_seconds, report.wall_seconds
    );
    Ok(report.failures as u64)
}

fn cell(s: &str) -> String {
    s.replace('|', "/")
}

fn markdown(r: &FaultSweepReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Fault sweep: {}\n", r.kernel_package);
    let _ = writeln!(
        s,
        "verdict: **{}**; kmod-shim `Fidelity::{}`; {} failing rounds per point; fixture hash {}; failures: {}\n",
        r.verdict, r.shim_fidelity, r.repeats, r.module_hash, r.failures
    );
    let _ = writeln!(s, "kernel command line: `{}`\n", r.cmdline);
    let _ = writeln!(
        s,
        "timing: prepare {:.1} s, boot and sweep {:.1} s, total {:.1} s\n",
        r.prepare_seconds, r.boot_seconds, r.wall_seconds
    );
    for n in &r.notes {
        let _ = writeln!(s, "- note: {n}");
    }
    if !r.defects.is_empty() {
        let _ = writeln!(s, "\n## Defects\n");
        for d in &r.defects {
            let _ = writeln!(
                s,
                "- **defect {}: {}** ({}){}",
                d.defect,
                d.verdict,
                d.what,
                if d.as_expected { "" } else { " **unexpected**" }
            );
            for t in &d.trace {
                let _ = writeln!(s, "  - `{t}`");
            }
        }
    }
    for o in &r.ops {
        let _ = writeln!(s, "\n## {}\n", o.op);
        let _ = writeln!(
            s,
            "baseline: kernel {}, kmod-shim {}; probe IOVA {}; N tried {}, fired {}, failed the operation {}{}\n",
            o.baseline_err,
            o.shim_baseline_err.as_deref().unwrap_or("-"),
            o.baseline_iova.as_deref().unwrap_or("-"),
            o.tried,
            o.fired,
            o.failed,
            o.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
        if let Some(v) = &o.baseline_iova_verdict {
            let _ = writeln!(
                s,
                "the unfaulted failure, repeated: kernel {v} (probes {}); kmod-shim IOVA leak {:?}; agree: {}\n",
                o.baseline_probes.join(" "),
                o.baseline_shim_iova_leak,
                match (o.baseline_agree, &o.baseline_explained) {
                    (None, _) => "undecided".to_string(),
                    (Some(true), _) => "yes".to_string(),
                    (Some(false), Some(why)) => format!("no, explained ({why})"),
                    (Some(false), None) => "**NO**".to_string(),
                }
            );
        }
        let _ = writeln!(
            s,
            "| N | site | injector | kernel | kmod-shim | kernel IOVA | shim IOVA leak | agree | notes |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for p in &o.points {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.n,
                cell(&p.site),
                p.injector.as_deref().unwrap_or("-"),
                p.kernel_err,
                p.shim_err.as_deref().unwrap_or("-"),
                cell(p.kernel_iova.as_deref().unwrap_or("-")),
                p.shim_iova_leak.map_or("-".to_string(), |b| b.to_string()),
                match p.agree {
                    None => "not modelled",
                    Some(true) => "yes",
                    Some(false) => "**NO**",
                },
                cell(&p.notes.join("; "))
            );
        }
        for p in o.points.iter().filter(|p| !p.stack.is_empty() || !p.repeat_probes.is_empty()) {
            let _ = writeln!(s, "\n- N={} stack: `{}`", p.n, p.stack.join(" <- "));
            if !p.repeat_probes.is_empty() {
                let _ = writeln!(s, "  - probe after each repeat: {}", p.repeat_probes.join(" "));
            }
            for l in &p.sanitizer {
                let _ = writeln!(s, "  - sanitizer: `{l}`");
            }
        }
    }
    if !r.overrides.is_empty() {
        let _ = writeln!(s, "\n## Kprobe overrides\n");
    }
    for o in &r.overrides {
        let _ = writeln!(
            s,
            "- **{}**: {} rounds, fired {}; kernel {}; kmod-shim {} (IOVA leak {:?}, zero-length unmaps {:?}); agree: {}{}",
            o.kind,
            o.rounds,
            o.fired,
            o.kernel_errs.join(" "),
            o.shim_err.as_deref().unwrap_or("-"),
            o.shim_iova_leak,
            o.shim_spurious_unmaps,
            match o.agree {
                None => "not modelled",
                Some(true) => "yes",
                Some(false) => "**NO**",
            },
            if o.notes.is_empty() { String::new() } else { format!(" ({})", o.notes.join("; ")) }
        );
        let _ = writeln!(
            s,
            "  - IOVA: {}; probes from {}: {}",
            o.kernel_iova,
            o.before.as_deref().unwrap_or("-"),
            o.probes.join(" ")
        );
        for l in &o.trace {
            let _ = writeln!(s, "  - `{l}`");
        }
    }
    let _ = writeln!(s, "\n## Sanitizer lines ({})\n", r.sanitizer.len());
    for l in &r.sanitizer {
        let _ = writeln!(s, "- {}: `{}`", l.context, l.line);
    }
    let leaks = r.kmemleak.iter().filter(|l| l.contains("unreferenced object")).count();
    let _ = writeln!(s, "\n## kmemleak\n\n{leaks} unreferenced objects after the final scans\n");
    for g in &r.kmemleak_groups {
        let _ = writeln!(
            s,
            "- **{} x {} bytes**, {}: `{}`; first dump `{}`; {}",
            g.count,
            g.size,
            g.site,
            g.backtrace.join(" <- "),
            g.first_dump.join(" / "),
            g.shim.as_deref().unwrap_or("kmod-shim has no such object")
        );
    }
    s
}
