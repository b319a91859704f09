//! `kernel-lab buddy`: the RFC's pressure traces on the kernel's own GPU
//! buddy allocator (see `kernel_lab::buddy`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kernel_lab::buddy::host as buddy_host;
use kernel_lab::buddy::{plan, BuddyLabReport, GuestReport, Manifest, Plan, MANIFEST_FILE, MODULE_FILE, PLANS_FILE};
use kernel_lab::debian::{self, KernelRequest};
use kernel_lab::host::{self, progress, LabError};
use kernel_lab::{initramfs, qemu};

#[derive(clap::Args, Debug)]
pub struct BuddyArgs {
    /// Lab kernel: `lab-patched` or `lab-shipped` (the allocator is the same
    /// in both; the patches touch dma-buf and vfio only).
    #[arg(long, default_value = "lab-patched")]
    kernel: String,
    /// The traces directory (with manifest.json).
    #[arg(long)]
    traces: PathBuf,
    /// Write the JSON report here.
    #[arg(long)]
    out: PathBuf,
    /// Deadline per boot, seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// Most packed plan bytes per boot (larger sweeps take several boots).
    #[arg(long, default_value_t = buddy_host::BOOT_PLAN_BYTES)]
    boot_bytes: usize,
    /// Keep the run directories.
    #[arg(long)]
    keep_run_dir: bool,
}

/// The exit status: 0 when every run came back, 1 when some did not, 2 on
/// an error before the runs.
pub fn exit(r: Result<bool, LabError>) -> ExitCode {
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("kernel-lab buddy: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn read(p: &Path) -> Result<String, LabError> {
    std::fs::read_to_string(p).map_err(|e| LabError::Io(format!("read {}: {e}", p.display())))
}

/// Reads the manifest and lowers every trace.
pub fn plans(dir: &Path) -> Result<Vec<(String, Plan)>, LabError> {
    let m: Manifest = serde_json::from_str(&read(&dir.join(MANIFEST_FILE))?)
        .map_err(|e| LabError::Io(format!("{}: {e}", dir.join(MANIFEST_FILE).display())))?;
    m.runs
        .iter()
        .map(|r| {
            let p = dir.join(&r.trace);
            let pl = plan(r, &read(&p)?).map_err(|e| LabError::Io(format!("{}: {e}", p.display())))?;
            Ok((r.name.clone(), pl))
        })
        .collect()
}

pub fn run(a: &BuddyArgs) -> Result<bool, LabError> {
    let t0 = Instant::now();
    let plans = plans(&a.traces)?;
    let root = host::cache_root()?;
    let run_dir = host::tempdir(&std::env::temp_dir(), "nr-ranges-buddy")?;
    host::ensure_host_tools(&run_dir.0)?;
    let req = KernelRequest { wanted: Some(a.kernel.clone()), refresh: false, suites: debian::kernel_suites() };
    let kernel = debian::resolve_kernel(&root, &req)?;
    let ko = buddy_host::ensure_module(&root, &kernel)?;
    let ko_bytes = std::fs::read(&ko).map_err(|e| LabError::Io(format!("read {}: {e}", ko.display())))?;
    progress("building the static guest");
    let guest = initramfs::build_guest(&run_dir.0)?;
    let only: Vec<Plan> = plans.iter().map(|(_, p)| p.clone()).collect();
    let boots = buddy_host::boots(&only, a.boot_bytes);
    let ops: usize = only.iter().map(|p| p.ops.len()).sum();
    println!("{} runs, {ops} ops, {} boot(s) on {}", plans.len(), boots.len(), kernel.pkg.abi);
    let mut rep = BuddyLabReport {
        kernel_request: a.kernel.clone(),
        module_hash: buddy_host::source_hash(),
        boots: boots.len(),
        ..Default::default()
    };
    for (b, range) in boots.iter().enumerate() {
        let tb = Instant::now();
        let dir = host::tempdir(&run_dir.0, &format!("boot{b}"))?;
        let initrd = dir.0.join("initramfs.cpio");
        let extra = [
            (MODULE_FILE.to_string(), ko_bytes.clone()),
            (PLANS_FILE.to_string(), buddy_host::boot_file(&only[range.clone()])),
        ];
        initramfs::build_initramfs_with(&kernel, &guest, &extra, &initrd)?;
        progress(format!("boot {}/{}: runs {}..{}", b + 1, boots.len(), range.start, range.end));
        let stream =
            qemu::boot_with(&buddy_host::machine(&kernel.vmlinuz(), &initrd, &dir.0), Duration::from_secs(a.timeout));
        if a.keep_run_dir || stream.is_err() {
            // Out of the run directory, which goes when the command ends.
            let kept = std::env::temp_dir().join(format!("nr-ranges-buddy-boot{b}.{}.kept", std::process::id()));
            if std::fs::rename(&dir.0, &kept).is_ok() {
                progress(format!("run directory kept: {}", kept.display()));
            }
        }
        rep.boot_seconds += tb.elapsed().as_secs_f64();
        let bytes = match stream {
            Ok(x) => x,
            Err(e) => {
                rep.errors.push(format!("boot {b}: {e}"));
                continue;
            }
        };
        let g: GuestReport = match qemu::guest_report(&bytes) {
            Ok(g) => g,
            Err(e) => {
                rep.errors.push(format!("boot {b}: {e}"));
                continue;
            }
        };
        if let Some(e) = &g.error {
            rep.errors.push(format!("boot {b}: guest: {e}"));
        }
        rep.kernel.clone_from(&g.kernel);
        let named: Vec<(String, &Plan)> = plans[range.clone()].iter().map(|(n, p)| (n.clone(), p)).collect();
        let runs = buddy_host::name_runs(&named, &g);
        for r in &runs {
            if let Some(e) = &r.guest.error {
                rep.errors.push(format!("run {}: {e}", r.name));
            }
        }
        let guest_secs: f64 = runs.iter().map(|r| r.guest.seconds).sum();
        progress(format!(
            "boot {}: {} runs in {:.0} s ({guest_secs:.0} s replaying)",
            b + 1,
            runs.len(),
            tb.elapsed().as_secs_f64()
        ));
        rep.runs.extend(runs);
    }
    rep.wall_seconds = t0.elapsed().as_secs_f64();
    let ok = rep.errors.is_empty() && rep.runs.len() == plans.len();
    let json = serde_json::to_string(&rep).map_err(|e| LabError::Io(format!("report: {e}")))?;
    std::fs::write(&a.out, json + "\n").map_err(|e| LabError::Io(format!("write {}: {e}", a.out.display())))?;
    println!(
        "{} of {} runs on {} in {:.0} s ({} boot(s), {:.0} s booted); report: {}",
        rep.runs.len(),
        plans.len(),
        rep.kernel,
        rep.wall_seconds,
        rep.boots,
        rep.boot_seconds,
        a.out.display()
    );
    for e in &rep.errors {
        eprintln!("  error: {e}");
    }
    Ok(ok)
}
