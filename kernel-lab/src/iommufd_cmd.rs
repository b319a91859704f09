//! `kernel-lab iommufd`: the iommufd lab's host side (boot, comparison
//! with kmod-shim, JSON and markdown). See `kernel_lab::iommufd`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kernel_lab::debian::{self, Kernel, KernelRequest};
use kernel_lab::host::{self, progress, LabError};
use kernel_lab::initramfs;
use kernel_lab::iommufd::{IommufdLabReport, IommufdReport, MODE};
use kernel_lab::qemu::{self, Qemu};

#[derive(clap::Args, Debug)]
pub struct IommufdArgs {
    /// Kernel to test: `lab-patched`, `lab-shipped`, or a Debian kernel
    /// (7.2, ...); one without iommufd or the vfio cdev says "not
    /// available" and exits 0.
    #[arg(long)]
    pub kernel: Option<String>,
    /// Write the JSON report here (and markdown next to it, `.md`).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Deadline for the boot, seconds.
    #[arg(long, default_value_t = 240)]
    pub timeout: u64,
    /// Keep the run directory (console log, guest output).
    #[arg(long)]
    pub keep_run_dir: bool,
}

/// The machine: the selftest's (ivshmem-plain behind a root port, QEMU's
/// intel-iommu), in iommufd mode, plus an e1000e on the root complex whose
/// MSI-X BAR shows the region capabilities QEMU reads.
fn machine(kernel: &Kernel, initramfs: &Path, dir: &Path) -> Qemu {
    Qemu::new(&kernel.vmlinuz(), initramfs, dir)
        .append(&format!("intel_iommu=on {MODE}"))
        .device("pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1")
        .device("ivshmem-plain,memdev=hostmem,bus=rp1")
        .device("e1000e,bus=pcie.0,addr=0x5")
}

/// Runs the lab on `a.kernel`; the report and its exit status (see
/// [`IommufdLabReport::exit_code`]).
pub fn run(a: &IommufdArgs) -> Result<IommufdLabReport, LabError> {
    let root = host::cache_root()?;
    let run_dir = host::tempdir(&std::env::temp_dir(), "nr-ranges-iommufd")?;
    host::ensure_host_tools(&run_dir.0)?;
    let suites = debian::kernel_suites();
    let kernel = debian::resolve_kernel(&root, &KernelRequest { wanted: a.kernel.clone(), refresh: false, suites })?;
    if let (Some(w), Some(note)) = (&a.kernel, &kernel.note) {
        // resolve_kernel fell back to another kernel: testing it under this
        // name would be a false record.
        return Err(LabError::Io(format!("kernel {w} not available: {note}")));
    }
    let package = format!("{} {} ({})", kernel.pkg.abi, kernel.pkg.version, kernel.pkg.suite);
    println!("kernel under test: {package}");
    progress("building the static guest");
    let guest = initramfs::build_guest(&run_dir.0)?;
    let initramfs = run_dir.0.join("initramfs.cpio");
    initramfs::build_initramfs_with(&kernel, &guest, &[], &initramfs)?;

    progress(format!("booting QEMU (TCG), deadline {} s", a.timeout));
    let boot = qemu::boot_retrying(&run_dir.0, "iommufd", Duration::from_secs(a.timeout), a.keep_run_dir, |dir| {
        machine(&kernel, &initramfs, dir)
    })?;
    let (stream, boot_seconds) = (boot.stream, boot.seconds);
    let bytes = stream?;
    let guest: IommufdReport = qemu::guest_report(&bytes).map_err(LabError::GuestFailed)?;
    let rep = IommufdLabReport::compare(kernel.pkg.abi.clone(), package, boot_seconds, guest);
    let md = rep.markdown();
    println!("{md}");
    if let Some(path) = &a.report {
        let json = serde_json::to_string_pretty(&rep).map_err(|e| LabError::Io(format!("report: {e}")))?;
        std::fs::write(path, json + "\n").map_err(|e| LabError::Io(format!("write {}: {e}", path.display())))?;
        let mdp = path.with_extension("md");
        std::fs::write(&mdp, md).map_err(|e| LabError::Io(format!("write {}: {e}", mdp.display())))?;
        progress(format!("report written to {} and {}", path.display(), mdp.display()));
    }
    println!("verdict: {}; {} disagreements", rep.verdict, rep.disagreements);
    Ok(rep)
}
