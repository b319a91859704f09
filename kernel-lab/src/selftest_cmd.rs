//! `kernel-lab selftest`: the kselftest of `kernel-patches/0007` per kernel
//! and the deliberate breakages, with its JSON and markdown.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kernel_lab::debian::{self, KernelRequest};
use kernel_lab::host::{self, progress, LabError};
use kernel_lab::lab_kernel::{self, LabVariant};
use kernel_lab::report::{SelftestBinary, SelftestKernelRun, SelftestReport};
use kernel_lab::selftest::{self, tap, Breakage, BREAKAGES, DEVICES};

#[derive(clap::Args, Debug)]
pub struct SelftestArgs {
    /// Kernels, comma-separated: Debian versions (7.2.13, 7.3.4, 6.12), lab
    /// builds (lab-shipped, lab-patched); `all` for
    /// 7.2.13,7.3.4,lab-shipped,lab-patched,6.12; `none` with --breakages
    /// for the breakages alone.
    #[arg(long, default_value = "lab-patched")]
    kernel: String,
    /// Also boot the deliberate breakages (kernel-lab/selftest/breaks/,
    /// plus an unchanged rebuild as the control): vfio-pci-core.ko rebuilt
    /// against --breakage-kernel with one check removed; each must fail the
    /// tests it declares and no other.
    #[arg(long)]
    breakages: bool,
    /// The lab build the breakage modules are built against and booted on.
    #[arg(long, default_value = "lab-shipped")]
    breakage_kernel: String,
    /// A static vfio_pci_dmabuf_test built elsewhere (from a tree with
    /// 0005-0007), instead of building it from the lab-patched tree.
    #[arg(long)]
    test_binary: Option<PathBuf>,
    /// Write the JSON report here (and the markdown next to it, `.md`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Deadline per boot, seconds.
    #[arg(long, default_value_t = 240)]
    timeout: u64,
    /// Keep the run directories (console log, guest output, initramfs).
    #[arg(long)]
    keep_run_dir: bool,
}

/// The exit status: 1 when a kernel failed or a breakage was not caught as
/// declared, else 2 when something could not run, else 0.
pub fn exit_code(rep: &SelftestReport) -> u8 {
    if rep.failures > 0 {
        1
    } else if rep.not_run > 0 {
        2
    } else {
        0
    }
}

pub fn run(a: &SelftestArgs) -> Result<SelftestReport, LabError> {
    let t0 = Instant::now();
    let root = host::cache_root()?;
    let work = host::tempdir(&std::env::temp_dir(), "nr-ranges-selftest")?;
    host::ensure_host_tools(&work.0)?;
    host::ensure_tools(
        &[("gcc", "gcc"), ("make", "make"), ("/usr/lib/x86_64-linux-gnu/libc.a", "libc6-dev")],
        &work.0,
    )?;
    let names: Vec<String> = match a.kernel.as_str() {
        "all" => selftest::ALL_KERNELS.iter().map(|s| s.to_string()).collect(),
        "none" => Vec::new(),
        k => k.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
    };

    // One binary for every kernel: the test is userspace, built from the
    // tree that carries 0005-0007.
    let tb = Instant::now();
    let (bin, test_binary) = match &a.test_binary {
        Some(p) => {
            let bin =
                selftest::TestBinary { path: p.clone(), key: "given".into(), built_now: false, build_seconds: 0.0 };
            let info = SelftestBinary {
                path: p.display().to_string(),
                source: "--test-binary".into(),
                key: bin.key.clone(),
                built_now: false,
                build_seconds: 0.0,
            };
            (bin, info)
        }
        None => {
            let bin = selftest::ensure_test_binary(&root, &lab_kernel::series_dir())?;
            let info = SelftestBinary {
                path: bin.path.display().to_string(),
                source: format!(
                    "{} {} with kernel-patches/ applied (the lab-patched source)",
                    kernel_lab::patches::SOURCE_PKG,
                    kernel_lab::patches::SOURCE_VERSION
                ),
                key: bin.key.clone(),
                built_now: bin.built_now,
                build_seconds: bin.build_seconds,
            };
            (bin, info)
        }
    };
    let init = selftest::build_init(&work.0)?;
    progress(format!(
        "test binary {} ({}; {:.1} s)",
        bin.path.display(),
        if bin.built_now { "built now" } else { "cached" },
        tb.elapsed().as_secs_f64()
    ));

    let suites = debian::kernel_suites();
    let mut kernels = Vec::new();
    for name in &names {
        let tk = Instant::now();
        progress(format!("kernel {name}"));
        let r = match debian::resolve_kernel(
            &root,
            &KernelRequest { wanted: Some(name.clone()), refresh: false, suites: suites.clone() },
        ) {
            Err(e) => selftest::kernel_run(name, None, None, 0.0, Some(e.to_string())),
            // resolve_kernel falls back to the newest kernel; testing that
            // one under this name would be a false record.
            Ok(k) if k.note.is_some() => selftest::kernel_run(
                name,
                None,
                None,
                0.0,
                Some(format!("not available: {}", k.note.unwrap_or_default())),
            ),
            Ok(k) => boot_one(a, name, &k, &init, &bin.path, None, &work.0),
        };
        print_kernel(&r, tk.elapsed().as_secs_f64(), true);
        kernels.push(r);
    }

    let mut breakages = Vec::new();
    if a.breakages {
        let variant = LabVariant::from_name(&a.breakage_kernel).ok_or_else(|| {
            LabError::Io(format!(
                "--breakage-kernel {} is not a lab build ({}): the modules are built against its tree",
                a.breakage_kernel,
                LabVariant::NAMES.join(", ")
            ))
        })?;
        let lab = lab_kernel::ensure(&root, variant, &lab_kernel::series_dir())?;
        let btree = lab.kernel.build.clone().ok_or_else(|| LabError::Io(format!("{variant} has no build tree")))?;
        for b in BREAKAGES {
            let tk = Instant::now();
            progress(format!("breakage {} on {variant}: {}", b.name, b.rule));
            let r = breakage(a, b, &root, &lab, &btree, &init, &bin.path, &work.0);
            print_kernel(&r.run, tk.elapsed().as_secs_f64(), false);
            println!(
                "  breakage {}: {}; failed: {}",
                r.name,
                if r.as_declared { "as declared" } else { "NOT AS DECLARED" },
                r.failed
                    .iter()
                    .map(|f| format!("{}: {} x{}", f.device, f.test, f.modes.len()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            breakages.push(r);
        }
    }

    let failed_kernels = kernels.iter().filter(|k| !k.problems.is_empty()).count();
    let failed_breaks = breakages.iter().filter(|b| !selftest::not_run(&b.run) && !b.as_declared).count();
    let not_run = kernels.iter().filter(|k| selftest::not_run(k)).count()
        + breakages.iter().filter(|b| selftest::not_run(&b.run)).count();
    let rep = SelftestReport {
        date: kernel_lab::conformance::corpus::utc_now(),
        test_binary,
        kernels,
        breakages,
        failures: failed_kernels + failed_breaks,
        not_run,
        wall_seconds: t0.elapsed().as_secs_f64(),
    };
    let md = selftest::markdown(&rep);
    println!("{md}");
    if let Some(path) = &a.report {
        let json = serde_json::to_string_pretty(&rep).map_err(|e| LabError::Io(format!("report: {e}")))?;
        std::fs::write(path, json + "\n").map_err(|e| LabError::Io(format!("write {}: {e}", path.display())))?;
        let mdp = path.with_extension("md");
        std::fs::write(&mdp, &md).map_err(|e| LabError::Io(format!("write {}: {e}", mdp.display())))?;
        progress(format!("report written to {} and {}", path.display(), mdp.display()));
    }
    println!("timing: total {:.1} s; {} failing, {} not run", rep.wall_seconds, rep.failures, rep.not_run);
    Ok(rep)
}

#[allow(clippy::too_many_arguments)]
fn breakage(
    a: &SelftestArgs,
    b: &Breakage,
    root: &Path,
    lab: &lab_kernel::LabKernel,
    tree: &lab_kernel::BuildTree,
    init: &Path,
    test: &Path,
    work: &Path,
) -> kernel_lab::report::SelftestBreakageRun {
    let asked = format!("{}+{}", lab.record.variant, b.name);
    match selftest::ensure_breakage_module(root, tree, &lab.record.key, b) {
        Err(e) => selftest::breakage_run(
            b,
            selftest::kernel_run(&asked, Some(&lab.kernel), None, 0.0, Some(e.to_string())),
            None,
            0.0,
        ),
        Ok((ko, secs)) => {
            let (run, log) = boot_logged(a, &asked, &lab.kernel, init, test, Some(&ko), work);
            selftest::breakage_run(b, run, log.as_ref(), secs)
        }
    }
}

fn boot_one(
    a: &SelftestArgs,
    asked: &str,
    k: &debian::Kernel,
    init: &Path,
    test: &Path,
    core: Option<&Path>,
    work: &Path,
) -> SelftestKernelRun {
    boot_logged(a, asked, k, init, test, core, work).0
}

/// Builds the initramfs, boots, parses: the run record and the parsed log.
fn boot_logged(
    a: &SelftestArgs,
    asked: &str,
    k: &debian::Kernel,
    init: &Path,
    test: &Path,
    core: Option<&Path>,
    work: &Path,
) -> (SelftestKernelRun, Option<tap::GuestLog>) {
    let dir = match host::tempdir(work, &asked.replace(['/', '+'], "_")) {
        Ok(d) => d,
        Err(e) => return (selftest::kernel_run(asked, Some(k), None, 0.0, Some(e.to_string())), None),
    };
    let initramfs = dir.0.join("initramfs.cpio");
    if let Err(e) = selftest::build_initramfs(k, init, test, core, &initramfs) {
        return (selftest::kernel_run(asked, Some(k), None, 0.0, Some(e.to_string())), None);
    }
    let machine = selftest::machine(&k.vmlinuz(), &initramfs, &dir.0);
    let (out, err, secs) = selftest::boot(&machine, Duration::from_secs(a.timeout));
    if a.keep_run_dir || err.is_some() {
        let kept = dir.0.with_extension("kept");
        if std::fs::rename(&dir.0, &kept).is_ok() {
            progress(format!("run directory kept: {}", kept.display()));
        }
    }
    let error = err.map(|e| e.to_string());
    match tap::parse(&out) {
        Ok(log) if !log.runs.is_empty() || log.release.is_some() => {
            (selftest::kernel_run(asked, Some(k), Some(&log), secs, error), Some(log))
        }
        Ok(_) => {
            (selftest::kernel_run(asked, Some(k), None, secs, error.or(Some("the guest wrote nothing".into()))), None)
        }
        Err(e) => (
            selftest::kernel_run(asked, Some(k), None, secs, Some(format!("cannot read the guest's output: {e}"))),
            None,
        ),
    }
}

/// One line per boot; a kernel's problems below it (a breakage's
/// failures are its expected outcome, judged by its own line).
fn print_kernel(r: &SelftestKernelRun, wall: f64, judged: bool) {
    let devs: Vec<String> = DEVICES
        .iter()
        .map(|d| match r.devices.iter().find(|x| x.device == *d) {
            Some(x) => format!("{d} {}", x.counts),
            None => format!("{d} -"),
        })
        .collect();
    println!(
        "{} ({}): feature {}; {}; boot {:.1} s, this kernel {:.1} s: {}",
        r.asked,
        r.kernel,
        r.feature,
        devs.join("; "),
        r.boot_seconds,
        wall,
        if judged { selftest::verdict(r) } else { format!("{} problems", r.problems.len()) }
    );
    for p in r.problems.iter().take(if judged { 20 } else { 0 }) {
        println!("  problem: {p}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(failures: usize, not_run: usize) -> SelftestReport {
        SelftestReport {
            date: String::new(),
            test_binary: SelftestBinary {
                path: String::new(),
                source: String::new(),
                key: String::new(),
                built_now: false,
                build_seconds: 0.0,
            },
            kernels: vec![],
            breakages: vec![],
            failures,
            not_run,
            wall_seconds: 0.0,
        }
    }

    #[test]
    fn a_failure_outranks_a_kernel_that_could_not_run() {
        assert_eq!(exit_code(&report(0, 0)), 0);
        assert_eq!(exit_code(&report(0, 1)), 2);
        assert_eq!(exit_code(&report(1, 0)), 1);
        assert_eq!(exit_code(&report(2, 3)), 1);
    }
}
