//! `kernel-lab replay`: fuzz corpora (or any directory of target inputs)
//! through the real kernel, each input on every lab device, every answer
//! diffed with the validator. See `kernel_lab::conformance::replay`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kernel_lab::conformance::corpus::utc_now;
use kernel_lab::conformance::replay::{self, InputFormat, ReplayReport, CASES_FILE, MODE};
use kernel_lab::debian::{self, KernelRequest};
use kernel_lab::host::{self, progress, LabError};
use kernel_lab::initramfs::{self, CpioEntry};
use kernel_lab::proto::{parse_stream, KernelErrno};
use kernel_lab::qemu;

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Kernel to test, as for the conformance run (7.2, 7.3.4,
    /// lab-patched, ...).
    #[arg(long)]
    pub kernel: Option<String>,
    /// How the files under the paths become requests: `bytes` (the bytes
    /// fuzz target's input, the raw ioctl argument) or `requests` (files
    /// written by `nr-ranges-proptests`'s example `structured-requests`).
    /// Once for all paths, or once per path in order. Default: bytes.
    #[arg(long, value_parser = parse_format)]
    pub format: Vec<InputFormat>,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Deadline for the boot and the replay, in seconds (default: 120 +
    /// cases / 1000; on a lab kernel 300 + cases / 200).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Keep the run directory (console log, initramfs, raw guest output).
    #[arg(long)]
    pub keep_run_dir: bool,
    /// Print at most this many disagreement classes (all go to the report).
    #[arg(long, default_value_t = 50)]
    pub show: usize,
    /// Files or directories (read recursively, sorted); every file is one input.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

fn parse_format(s: &str) -> Result<InputFormat, String> {
    InputFormat::parse(s).map_err(|e| e.to_string())
}

/// Runs the replay; the number of disagreements.
pub fn run(a: &ReplayArgs) -> Result<u64, LabError> {
    let t0 = Instant::now();
    let pairs = replay::pair_formats(&a.paths, &a.format).map_err(|e| LabError::Io(e.to_string()))?;
    let inputs = replay::collect(&pairs).map_err(|e| LabError::Io(e.to_string()))?;
    for s in &inputs.sources {
        println!("input {} ({}): {} files", s.path, s.format.name(), s.files);
    }
    let unsent: u64 = inputs.unsendable.values().map(|v| v.len() as u64).sum();
    println!("inputs: {} files, {} sent, {} cannot be sent", inputs.files(), inputs.sendable.len(), unsent);
    for (why, files) in &inputs.unsendable {
        println!("  not sent, {why}: {}", files.len());
        for f in files {
            println!("    {f}");
        }
    }

    let root = host::cache_root()?;
    let run_dir = host::tempdir(&std::env::temp_dir(), "nr-ranges-replay")?;
    host::ensure_host_tools(&run_dir.0)?;
    let suites = debian::kernel_suites();
    let kernel = debian::resolve_kernel(&root, &KernelRequest { wanted: a.kernel.clone(), refresh: false, suites })?;
    let package = format!("{} {} ({})", kernel.pkg.abi, kernel.pkg.version, kernel.pkg.suite);
    println!("kernel under test: {package}");
    if let Some(note) = &kernel.note {
        println!("note: {note}");
    }

    progress("building the static guest");
    let guest = initramfs::build_guest(&run_dir.0)?;
    let initramfs = run_dir.0.join("initramfs.cpio");
    let requests: Vec<_> = inputs.sendable.iter().map(|i| &i.request).collect();
    let cases = replay::encode_cases(&requests).map_err(|e| LabError::Io(e.to_string()))?;
    let mut entries = initramfs::base_entries(&kernel, &guest, None)?;
    entries.push(CpioEntry::File(CASES_FILE.into(), 0o644, cases));
    initramfs::write_initramfs(&entries, &initramfs)?;

    let n_cases = requests.len() as u64 * kernel_lab::LAB_DEVICES.len() as u64;
    let default_timeout = if kernel.build.is_some() { 300 + n_cases / 200 } else { 120 + n_cases / 1_000 };
    let timeout = Duration::from_secs(a.timeout.unwrap_or(default_timeout));
    progress(format!(
        "booting QEMU (TCG) for {} inputs on every device, deadline {} s",
        requests.len(),
        timeout.as_secs()
    ));
    let boot = qemu::boot_retrying(&run_dir.0, "replay", timeout, a.keep_run_dir, |dir| {
        let spec = qemu::BootSpec {
            vmlinuz: kernel.vmlinuz(),
            initramfs: initramfs.clone(),
            cases: 0,
            seed: 0,
            scenarios: false,
            timeout,
            run_dir: dir.to_path_buf(),
        };
        qemu::conformance_machine(&spec).append(MODE)
    })?;
    let boot_secs = boot.seconds;
    let (g, observed) = parse_stream(&boot.stream?).map_err(LabError::Stream)?;
    if let Some(e) = &g.error {
        return Err(LabError::GuestFailed(e.clone()));
    }
    let feature_absent = g.feature_absent.map(|e| KernelErrno(e).to_string());
    let sent = if feature_absent.is_some() { &[][..] } else { &inputs.sendable[..] };
    let summary = replay::diff_inputs(&g.devices, sent, &observed).ok_or_else(|| {
        LabError::GuestFailed(format!(
            "{} answers for {} inputs on {} devices",
            observed.len(),
            sent.len(),
            g.devices.len()
        ))
    })?;

    println!("kernel: {}", g.kernel);
    for d in &g.devices {
        println!("device {} {} (group {}): {}", d.name, d.bdf, d.group, d.check_json());
    }
    if let Some(e) = &feature_absent {
        println!("kernel {}: VFIO_DEVICE_FEATURE_DMA_BUF is absent (PROBE answers {e}); no case ran", g.kernel);
    }
    println!("cases: {} ({} inputs x {} devices)", summary.cases, sent.len(), g.devices.len());
    let answers: Vec<String> = summary.kernel_answers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("kernel answers: {}", answers.join(", "));
    let checks: Vec<String> = summary.predicted_checks.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("validator checks that decided: {}", checks.join(", "));
    println!("disagreements: {} in {} classes", summary.disagreements, summary.classes.len());
    for c in summary.classes.iter().take(a.show) {
        println!(
            "DISAGREE x{} on {}: validator {} ({}), kernel {}\n  first: {}\n  request: {}\n  device:  {}",
            c.count,
            c.device_name,
            c.predicted,
            c.predicted_check,
            c.kernel,
            c.first_input.as_deref().unwrap_or("-"),
            c.request,
            c.device
        );
    }
    println!("sanitizer report lines (KASAN, kmemleak, lockdep, DMA-API, WARN, BUG): {}", g.sanitizer.len());
    for l in &g.sanitizer {
        println!("  {l}");
    }
    println!(
        "timing: boot+replay {:.1} s (guest setup {:.2} s, loop {:.2} s), total {:.1} s",
        boot_secs,
        g.setup_ns as f64 / 1e9,
        g.loop_ns as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );

    if let Some(path) = &a.report {
        let r = ReplayReport {
            kernel: g.kernel.clone(),
            kernel_package: package,
            kernel_note: kernel.note.clone(),
            date: utc_now(),
            sources: inputs.sources.clone(),
            inputs: inputs.files(),
            sent: sent.len() as u64,
            unsendable: inputs.unsendable.clone(),
            devices: g.devices.clone(),
            cases: summary.cases,
            disagreements: summary.disagreements,
            kernel_answers: summary.kernel_answers.clone(),
            predicted_checks: summary.predicted_checks.clone(),
            disagreement_classes: summary.classes.clone(),
            guest_loop_seconds: g.loop_ns as f64 / 1e9,
            boot_and_run_seconds: boot_secs,
            wall_seconds: t0.elapsed().as_secs_f64(),
            feature_absent,
            sanitizer: g.sanitizer.clone(),
        };
        let json = serde_json::to_string_pretty(&r).map_err(|e| LabError::Io(format!("report: {e}")))?;
        std::fs::write(path, json + "\n").map_err(|e| LabError::Io(format!("write {}: {e}", path.display())))?;
        progress(format!("report written to {}", path.display()));
    }
    Ok(summary.disagreements)
}
