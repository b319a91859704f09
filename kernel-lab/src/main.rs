//! `kernel-lab`: the real kernel as the validator's oracle.
//!
//! Fetches a Debian kernel (>= 6.19, cached), builds the static guest and an
//! initramfs, boots QEMU (TCG, q35, intel-iommu, ivshmem-plain, pci-testdev,
//! edu), runs a seeded batch of `VFIO_DEVICE_FEATURE(DMA_BUF)` requests plus
//! scenarios in the guest, and diffs every answer against
//! `validator::validate(.., Policy::Linux)`.
//!
//! Exit status: 0 when kernel and validator agree on every case, 1 when they
//! disagree, 2 when the lab could not run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use kernel_lab::conformance::corpus::{self, CorpusHeader};
use kernel_lab::conformance::diff::{diff, DiffSummary};
use kernel_lab::debian::{self, KernelRequest};
use kernel_lab::host::{self, progress, LabError};
use kernel_lab::proto::{parse_stream, GuestReport, KernelErrno};
use kernel_lab::report::ConformanceReport;
use kernel_lab::{initramfs, qemu};

#[derive(Parser, Debug)]
#[command(
    name = "kernel-lab",
    about = "Diff VFIO_DEVICE_FEATURE_DMA_BUF answers of a real kernel (QEMU) against the validator",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Sub>,
    /// Kernel to test: a version prefix (7.2, 7.2.13) or full ABI
    /// (7.2.13+deb14-cloud-amd64). Default: the newest >= 6.19 cached, or
    /// available when nothing is cached or with --refresh.
    #[arg(long)]
    kernel: Option<String>,
    /// Ask the Debian mirror for the newest kernel even when one is cached.
    #[arg(long)]
    refresh: bool,
    /// Requests to run in the guest.
    #[arg(long, default_value_t = 200_000)]
    cases: u64,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write a JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Skip the scenarios (memory disable, reset, fd close, open_flags, read).
    #[arg(long)]
    no_scenarios: bool,
    /// Deadline for the boot and batch, in seconds (default: 90 + cases /
    /// 5000; on a lab kernel 300 + cases / 1000).
    #[arg(long)]
    timeout: Option<u64>,
    /// Keep the run directory (console log, initramfs, raw guest output).
    #[arg(long)]
    keep_run_dir: bool,
    /// Print at most this many disagreement classes (all go to the report).
    #[arg(long, default_value_t = 50)]
    show: usize,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// The allocator lab: replays the RFC's pressure traces (a directory with
    /// manifest.json, written by `rfc --real-allocator`) on the kernel's own
    /// gpu_buddy through the nrlab_buddy module; writes every framebuffer's
    /// blocks as JSON. Needs a lab kernel (lab-shipped or lab-patched).
    Buddy(buddy_cmd::BuddyArgs),
    /// The importer lab: a real dma-buf importer (nrlab_importer on edu)
    /// per QEMU topology, compared with kmod-shim (Fidelity::Kernel).
    Importer(importer_cmd::ImporterArgs),
    /// The framebuffer lab: framebuffers placed by the kernel's gpu_buddy
    /// (placements from `rfc --real-allocator`) written line by line into an
    /// 8 GiB ivshmem BAR through the vfio mmap, exported as one multi-range
    /// dma-buf and as one dma-buf per range, mapped by nrlab_importer and
    /// read back by edu on each map path; compared with kmod-shim. Exit 1
    /// on an unexplained disagreement or a topology that could not run.
    Framebuffer(framebuffer_cmd::FramebufferArgs),
    /// The fault sweep on a lab kernel: fail-nth inside the export ioctl and
    /// the importer's map (1 and 2 ranges), failing points repeated with IOVA
    /// probes, kprobe overrides for defects 2 and 4, kmemleak; each point
    /// compared with kmod-shim. Exit 1 on an unexplained mismatch or a
    /// sanitizer report on lab-patched; a kernel without fault injection
    /// exits 0 with that verdict.
    FaultSweep(fault_cmd::FaultArgs),
    /// The iommufd lab: ivshmem-plain through its vfio device cdev, bound
    /// to an iommufd; dma-bufs mapped with IOMMU_IOAS_MAP_FILE (one range,
    /// several, revocation while mapped, QEMU's sparse-mmap requests), each
    /// step compared with kmod-shim's iommufd model. Exit 1 on a
    /// disagreement; a kernel without iommufd or the cdev exits 0 with
    /// "not available".
    Iommufd(iommufd_cmd::IommufdArgs),
    /// Prints the include directory of a Debian linux-libc-dev >= 6.19 (the
    /// <linux/vfio.h> uapi/tests/kernel_header.rs checks against): the newest
    /// cached, else downloaded from the Debian mirror of the machine's apt
    /// configuration with a private apt (nothing is installed). Environment:
    /// NR_RANGES_CACHE, NR_RANGES_DEBIAN_MIRROR, NR_RANGES_DEBIAN_SUITE (sid),
    /// NR_RANGES_LIBC_DEV_VERSION, NR_RANGES_REFRESH=1.
    FetchHeader {
        /// Ask the mirror for its newest version even when one is cached.
        #[arg(long)]
        refresh: bool,
    },
    /// Applies kernel-patches/ in order to Debian's linux-source-7.2
    /// 7.2.13-1 (cached, else fetched with a private apt) and runs that
    /// tree's scripts/checkpatch.pl --strict on each patch. Exit 1 if a patch
    /// does not apply or is not clean.
    CheckPatches {
        /// The series directory.
        #[arg(long, default_value = "kernel-patches")]
        dir: PathBuf,
    },
    /// The whole lab on several kernels: builds both lab kernels, runs the
    /// conformance batch, the kselftest (with its breakages on lab-shipped),
    /// the importer topologies, the fault sweep and the iommufd lab on each
    /// kernel (Debian 7.2.13, lab-shipped, lab-patched, and 6.12, which
    /// lacks the feature),
    /// and writes one report, matrix.json and matrix.md, with each part's
    /// own report and log beside them. Exit status: the worst part's.
    Matrix(matrix_cmd::MatrixArgs),
    /// Builds the lab kernels from Debian's linux-source-7.2 7.2.13-1 with
    /// kernel-lab/config/lab.config: `lab-shipped` (the source as Debian
    /// ships it) and `lab-patched` (kernel-patches/ applied). Cached under
    /// $NR_RANGES_CACHE/lab-kernels/ by a key over source, fragment,
    /// patches and compiler; every lab command takes these names as
    /// `--kernel` and builds what is missing. Prints each build's times.
    BuildKernel {
        /// `lab-shipped`, `lab-patched` or `all`.
        #[arg(long, default_value = "all")]
        variant: String,
        /// Write the build records (JSON) here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Runs a conformance batch (no scenarios) on the real kernel and writes
    /// every request, its device and the kernel's answer to a gzip corpus
    /// (format: kernel-lab/src/conformance/corpus.rs), which the property
    /// suite replays against the validator.
    RecordCorpus {
        /// Kernel to test, as for the conformance run (7.2, 7.3.4, ...).
        #[arg(long)]
        kernel: Option<String>,
        /// Ask the Debian mirror for the newest kernel even when one is cached.
        #[arg(long)]
        refresh: bool,
        /// Requests to run and record.
        #[arg(long, default_value_t = 100_000)]
        cases: u64,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Deadline for the boot and batch, in seconds (default: 90 + cases / 5000).
        #[arg(long)]
        timeout: Option<u64>,
        /// The corpus file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// The kselftest of kernel-patches/0007 (vfio_pci_dmabuf_test), built
    /// statically from the lab-patched source, run in one boot per kernel on
    /// ivshmem-plain and pci-testdev; its TAP output is reported per
    /// kernel, device and test. With --breakages, three deliberate
    /// breakages (kernel-lab/selftest/breaks/) must each be caught by the
    /// test named after the rule. Exit 1 if a test fails or a breakage is
    /// not caught, 2 if the lab could not run.
    Selftest(selftest_cmd::SelftestArgs),
    /// Replays fuzz corpora (or any directory of target inputs) through the
    /// real kernel: every file is one input (`--format bytes`: the raw ioctl
    /// argument; `requests`: written by nr-ranges-proptests's example
    /// structured-requests), run on every lab device and diffed with the
    /// validator. Lifecycle inputs are not requests. Exit 1 on a
    /// disagreement, 2 if the lab could not run.
    Replay(replay_cmd::ReplayArgs),
}

mod buddy_cmd;
mod fault_cmd;
mod framebuffer_cmd;
mod importer_cmd;
mod iommufd_cmd;
mod matrix_cmd;
mod replay_cmd;
mod selftest_cmd;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Sub::FetchHeader { refresh }) = &args.cmd {
        let req = kernel_lab::debian::HeaderRequest::from_env(*refresh);
        return match host::cache_root().and_then(|root| kernel_lab::debian::fetch_headers(&root, &req)) {
            Ok(include) => {
                println!("{}", include.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kernel-lab fetch-header: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Sub::CheckPatches { dir }) = &args.cmd {
        return match host::cache_root().and_then(|root| kernel_lab::patches::check(&root, dir)) {
            Ok(results) => {
                for r in &results {
                    println!("{}: {}; checkpatch --strict: {}", r.patch, r.apply, r.checkpatch);
                }
                let ignored: Vec<&str> = kernel_lab::patches::CHECKPATCH_IGNORE.iter().map(|(t, _)| *t).collect();
                println!(
                    "{} patches against {} {}; checkpatch types ignored (reasons in kernel-lab/src/patches.rs): {}",
                    results.len(),
                    kernel_lab::patches::SOURCE_PKG,
                    kernel_lab::patches::SOURCE_VERSION,
                    ignored.join(", ")
                );
                if results.iter().all(|r| r.apply == kernel_lab::patches::Apply::Applies && r.clean) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("kernel-lab check-patches: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Sub::BuildKernel { variant, report }) = &args.cmd {
        return match build_kernels(variant, report.as_ref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kernel-lab build-kernel: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Sub::Matrix(a)) = &args.cmd {
        return match matrix_cmd::run(a) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(1) => ExitCode::from(1),
            Ok(_) => ExitCode::from(2),
            Err(e) => {
                eprintln!("kernel-lab matrix: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Sub::Buddy(a)) = &args.cmd {
        return buddy_cmd::exit(buddy_cmd::run(a));
    }
    if let Some(Sub::Framebuffer(a)) = &args.cmd {
        return match framebuffer_cmd::run(a) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("kernel-lab framebuffer: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Sub::Importer(a)) = &args.cmd {
        return match importer_cmd::run(a) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("kernel-lab importer: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Sub::Iommufd(a)) = &args.cmd {
        return match iommufd_cmd::run(a) {
            Ok(rep) => ExitCode::from(rep.exit_code() as u8),
            Err(e) => {
                eprintln!("kernel-lab iommufd: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Sub::Replay(a)) = &args.cmd {
        return match replay_cmd::run(a) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("kernel-lab replay: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Sub::Selftest(a)) = &args.cmd {
        return match selftest_cmd::run(a) {
            Ok(rep) => ExitCode::from(selftest_cmd::exit_code(&rep)),
            Err(e) => {
                eprintln!("kernel-lab selftest: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Sub::FaultSweep(a)) = &args.cmd {
        return match fault_cmd::run(a) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("kernel-lab fault-sweep: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Sub::RecordCorpus { kernel, refresh, cases, seed, timeout, out }) = &args.cmd {
        let batch = Args {
            cmd: None,
            kernel: kernel.clone(),
            refresh: *refresh,
            cases: *cases,
            seed: *seed,
            report: None,
            no_scenarios: true,
            timeout: *timeout,
            keep_run_dir: false,
            show: args.show,
        };
        // The corpus is written either way (it records the kernel, not the
        // validator); the exit status says whether they agreed.
        return match run_with(&batch, Some(out)) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("kernel-lab record-corpus: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run(&args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("kernel-lab: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `kernel-lab build-kernel`.
fn build_kernels(variant: &str, report: Option<&PathBuf>) -> Result<(), LabError> {
    use kernel_lab::lab_kernel::{self, LabVariant};
    let variants: Vec<LabVariant> = if variant == "all" {
        LabVariant::ALL.to_vec()
    } else {
        vec![LabVariant::from_name(variant).ok_or_else(|| {
            LabError::Io(format!("unknown variant {variant}; known: all, {}", LabVariant::NAMES.join(", ")))
        })?]
    };
    let root = host::cache_root()?;
    let mut builds = lab_kernel::LabBuilds::default();
    for v in variants {
        let t = Instant::now();
        let k = lab_kernel::ensure(&root, v, &lab_kernel::series_dir())?;
        let (tr, r) = (&k.tree, &k.record);
        println!(
            "{v}: {} from {} {}; tree {} (cold: unpack {:.0} s, configure {:.0} s, make -j{} {:.0} s); variant {} {} \
             (rebuild {:.0} s); patches: {}; this call {:.1} s",
            tr.release,
            lab_kernel::SOURCE_PKG_NAME,
            tr.source_version,
            tr.key,
            tr.unpack_seconds,
            tr.configure_seconds,
            tr.jobs,
            tr.build_seconds,
            r.key,
            if k.built_now { "built now" } else { "cached" },
            r.rebuild_seconds,
            if r.patches.is_empty() { "none".to_string() } else { r.patches.join(" ") },
            t.elapsed().as_secs_f64()
        );
        println!("  image {}", k.kernel.vmlinuz().display());
        builds.push(&k);
    }
    if let Some(path) = report {
        let json = serde_json::to_string_pretty(&builds).map_err(|e| LabError::Io(format!("report: {e}")))?;
        std::fs::write(path, json + "\n").map_err(|e| LabError::Io(format!("write {}: {e}", path.display())))?;
    }
    Ok(())
}

fn run(args: &Args) -> Result<u64, LabError> {
    run_with(args, None)
}

/// The conformance run; with `corpus`, the batch is also written there.
fn run_with(args: &Args, corpus: Option<&PathBuf>) -> Result<u64, LabError> {
    let t0 = Instant::now();
    let root = host::cache_root()?;
    let run_dir = host::tempdir(&std::env::temp_dir(), "nr-ranges-lab")?;
    host::ensure_host_tools(&run_dir.0)?;

    let suites = debian::kernel_suites();
    let req = KernelRequest { wanted: args.kernel.clone(), refresh: args.refresh, suites };
    let kernel = debian::resolve_kernel(&root, &req)?;
    let t_fetch = t0.elapsed();
    println!(
        "kernel under test: {} (package {} from {}; cached in {})",
        kernel.pkg.abi,
        kernel.pkg.version,
        kernel.pkg.suite,
        kernel.dir.display()
    );

    progress("building the static guest (cargo build --release --target x86_64-unknown-linux-gnu, +crt-static)");
    let guest = initramfs::build_guest(&run_dir.0)?;
    let initramfs = run_dir.0.join("initramfs.cpio");
    initramfs::build_initramfs(&kernel, &guest, &initramfs)?;
    let t_build = t0.elapsed();

    // A lab kernel (KASAN, lockdep, kmemleak and its final scan) runs the
    // batch several times slower under TCG than Debian's.
    let default_timeout = if kernel.build.is_some() { 300 + args.cases / 1_000 } else { 90 + args.cases / 5_000 };
    let timeout = Duration::from_secs(args.timeout.unwrap_or(default_timeout));
    let spec = qemu::BootSpec {
        vmlinuz: kernel.vmlinuz(),
        initramfs,
        cases: args.cases,
        seed: args.seed,
        scenarios: !args.no_scenarios,
        timeout,
        run_dir: run_dir.0.clone(),
    };
    progress(format!(
        "booting QEMU (TCG) for {} cases, seed {}, deadline {} s",
        args.cases,
        args.seed,
        timeout.as_secs()
    ));
    let tb = Instant::now();
    let stream = qemu::boot(&spec);
    let boot_secs = tb.elapsed().as_secs_f64();
    if args.keep_run_dir || stream.is_err() {
        // Keep the evidence of a failure (console log, QEMU log).
        let kept = run_dir.0.with_extension("kept");
        if std::fs::rename(&run_dir.0, &kept).is_ok() {
            progress(format!("run directory kept: {}", kept.display()));
        }
    }
    let (guest_report, observed) = parse_stream(&stream?).map_err(LabError::Stream)?;
    if let Some(e) = &guest_report.error {
        return Err(LabError::GuestFailed(e.clone()));
    }
    if guest_report.kernel != kernel.pkg.abi {
        progress(format!("note: the guest reports kernel {}, expected {}", guest_report.kernel, kernel.pkg.abi));
    }

    let feature_absent = guest_report.feature_absent.map(|e| KernelErrno(e).to_string());
    if let Some(e) = &feature_absent {
        println!(
            "kernel {}: VFIO_DEVICE_FEATURE_DMA_BUF is absent (PROBE answers {e}); no case ran, nothing to compare",
            guest_report.kernel
        );
    }
    let summary = diff(guest_report.seed, &guest_report.devices, &observed);
    let cases_per_sec = guest_report.cases as f64 / (guest_report.loop_ns.max(1) as f64 / 1e9);
    print_summary(args, &guest_report, &summary, cases_per_sec);
    println!(
        "timing: fetch {:.1} s, build {:.1} s, boot+batch+scenarios {:.1} s (guest setup {:.2} s, loop {:.2} s), total {:.1} s",
        t_fetch.as_secs_f64(),
        (t_build - t_fetch).as_secs_f64(),
        boot_secs,
        guest_report.setup_ns as f64 / 1e9,
        guest_report.loop_ns as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );

    if let Some(path) = corpus {
        let header = CorpusHeader {
            format: corpus::FORMAT.into(),
            kernel: guest_report.kernel.clone(),
            kernel_package: format!("{} {} ({})", kernel.pkg.abi, kernel.pkg.version, kernel.pkg.suite),
            date: corpus::utc_now(),
            seed: guest_report.seed,
            cases: observed.len() as u64,
            disagreements_when_recorded: summary.disagreements,
            devices: guest_report.devices.clone(),
        };
        let bytes = corpus::write(path, &header, &observed)
            .map_err(|e| LabError::Io(format!("corpus {}: {e}", path.display())))?;
        progress(format!(
            "corpus written to {}: {} entries, {} bytes, {:.1} s wall",
            path.display(),
            header.cases,
            bytes,
            t0.elapsed().as_secs_f64()
        ));
    }
    if let Some(path) = &args.report {
        let r = ConformanceReport {
            kernel: guest_report.kernel.clone(),
            kernel_package: format!("{} {} ({})", kernel.pkg.abi, kernel.pkg.version, kernel.pkg.suite),
            kernel_note: kernel.note.clone(),
            seed: guest_report.seed,
            cases: summary.cases,
            disagreements: summary.disagreements,
            cases_per_sec,
            guest_loop_seconds: guest_report.loop_ns as f64 / 1e9,
            guest_setup_seconds: guest_report.setup_ns as f64 / 1e9,
            boot_and_run_seconds: boot_secs,
            wall_seconds: t0.elapsed().as_secs_f64(),
            devices: guest_report.devices.clone(),
            kernel_answers: summary.kernel_answers.clone(),
            predicted_checks: summary.predicted_checks.clone(),
            disagreement_classes: summary.classes.clone(),
            scenario_facts: guest_report.facts.clone(),
            feature_absent,
            sanitizer: guest_report.sanitizer.clone(),
        };
        let json = serde_json::to_string_pretty(&r).map_err(|e| LabError::Io(format!("report: {e}")))?;
        std::fs::write(path, json + "\n").map_err(|e| LabError::Io(format!("write {}: {e}", path.display())))?;
        progress(format!("report written to {}", path.display()));
    }
    Ok(summary.disagreements)
}

fn print_summary(args: &Args, g: &GuestReport, s: &DiffSummary, cps: f64) {
    println!("kernel: {}", g.kernel);
    for d in &g.devices {
        println!("device {} {} (group {}): {}", d.name, d.bdf, d.group, d.check_json());
    }
    println!("cases: {} (seed {}), {:.0} cases/s in the guest (ioctl loop only)", s.cases, g.seed, cps);
    let answers: Vec<String> = s.kernel_answers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("kernel answers: {}", answers.join(", "));
    let checks: Vec<String> = s.predicted_checks.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("validator checks that decided: {}", checks.join(", "));
    println!("disagreements: {} in {} classes", s.disagreements, s.classes.len());
    for c in s.classes.iter().take(args.show) {
        println!(
            "DISAGREE x{} on {}: validator {} ({}), kernel {}\n  request: {}\n  device:  {}",
            c.count, c.device_name, c.predicted, c.predicted_check, c.kernel, c.request, c.device
        );
    }
    println!("sanitizer report lines (KASAN, kmemleak, lockdep, DMA-API, WARN, BUG): {}", g.sanitizer.len());
    for l in &g.sanitizer {
        println!("  {l}");
    }
    if !g.facts.is_empty() {
        println!("scenario facts:");
        for f in &g.facts {
            println!("  {:<24} {:<38} {}", f.scenario, f.step, f.result);
        }
    }
}
