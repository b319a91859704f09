//! The lab's guest agent: `/init` of the initramfs.
//!
//! It mounts the pseudo filesystems, loads the vfio modules, binds the lab's
//! devices to vfio-pci, opens them the classic way (container, group,
//! type1v2), runs the seeded batch of `VFIO_DEVICE_FEATURE(DMA_BUF)` requests
//! and the scenarios, streams the answers to the host over virtio-serial
//! (the serial console is far too slow for megabytes) and powers off.
//! Whatever goes wrong, it reports the error on the stream and powers off: a
//! guest that returns from `/init` would make the kernel panic.
//!
//! Modules: [`vfio`] (binding, the one VFIO open sequence, exports),
//! [`batch`] (the lab's devices and the seeded batch), [`scenarios`],
//! [`importer_mode`] (`nrlab.mode=importer`), [`framebuffer_mode`]
//! (`nrlab.mode=framebuffer`), [`replay_mode`] (`nrlab.mode=replay`),
//! [`stream`] (the virtio-serial report).

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use kernel_lab::conformance::gen::{Case, Gen, O_RDWR_CLOEXEC, PAGE};
use kernel_lab::proto::{parse_resource, BarType, DeviceInfo, Fact, GuestReport, Observed, PROTOCOL_VERSION};
use kernel_lab::{GUEST_MODULES, LAB_DEVICES, OUTPUT_PORT_NAME};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::mman::ProtFlags;
use nix::unistd::Whence;
use uapi::ioctl::{mmap_probe, Container, Device, FeatureReply, Group, GuardedArg, IoctlError};
use uapi::{VFIO_PCI_CONFIG_REGION_INDEX, VFIO_TYPE1V2_IOMMU};

/// Errors of the guest, reported to the host as text.
pub(crate) type GResult<T> = Result<T, String>;

mod batch;
mod buddy_mode;
mod fault_mode;
mod framebuffer_mode;
mod importer_mode;
mod iommufd_mode;
mod replay_mode;
mod sanitizer;
mod scenarios;
mod stream;
mod vfio;

use batch::*;
use scenarios::*;
use stream::*;
use vfio::*;

fn main() {
    let mut report = GuestReport { protocol: PROTOCOL_VERSION, ..Default::default() };
    let mut results = Vec::new();
    if let Err(e) = mount_pseudo_filesystems() {
        println!("nr-ranges-guest: {e}");
    }
    report.kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == "nrlab.mode=fault") {
        return fault_mode::main(report.kernel);
    }
    if cmdline.split_whitespace().any(|w| w == kernel_lab::iommufd::MODE) {
        return iommufd_mode::main(report.kernel);
    }
    if cmdline.split_whitespace().any(|w| w == "nrlab.mode=buddy") {
        return buddy_mode::main(report.kernel);
    }
    // Before importer: the framebuffer machine is the importer lab's, with
    // both words on its command line.
    if cmdline.split_whitespace().any(|w| w == "nrlab.mode=framebuffer") {
        return framebuffer_mode::main(report.kernel);
    }
    if cmdline.split_whitespace().any(|w| w == "nrlab.mode=importer") {
        let mut rep = kernel_lab::importer::ImporterReport { kernel: report.kernel.clone(), ..Default::default() };
        if let Err(e) = importer_mode::run(&mut rep) {
            println!("nr-ranges-guest: error: {e}");
            rep.error = Some(e);
        }
        rep.dmesg = importer_mode::dmesg();
        rep.sanitizer = sanitizer::collect();
        return send_report_and_power_off(&rep);
    }
    let replay = cmdline.split_whitespace().any(|w| w == kernel_lab::conformance::replay::MODE);
    let ran = if replay { replay_mode::run(&mut report, &mut results) } else { run(&mut report, &mut results) };
    if let Err(e) = ran {
        println!("nr-ranges-guest: error: {e}");
        report.error = Some(e);
    }
    report.sanitizer = sanitizer::collect();
    report.results_len = results.len() as u64;
    if let Err(e) = send(&report, &results) {
        println!("nr-ranges-guest: cannot send the report: {e}");
    }
    power_off();
}

fn mount_pseudo_filesystems() -> GResult<()> {
    use nix::mount::{mount, MsFlags};
    for (src, target, fstype) in
        [("proc", "/proc", "proc"), ("sysfs", "/sys", "sysfs"), ("devtmpfs", "/dev", "devtmpfs")]
    {
        let _ = fs::create_dir_all(target);
        mount(Some(src), target, Some(fstype), MsFlags::empty(), None::<&str>)
            .map_err(|e| format!("mount {fstype} on {target}: {e}"))?;
    }
    Ok(())
}

/// `nrlab.KEY=VALUE` from the kernel command line.
fn cmdline_u64(cmdline: &str, key: &str, default: u64) -> GResult<u64> {
    let prefix = format!("nrlab.{key}=");
    match cmdline.split_whitespace().find_map(|w| w.strip_prefix(&prefix)) {
        Some(v) => v.parse().map_err(|_| format!("bad {prefix}{v} on the kernel command line")),
        None => Ok(default),
    }
}

fn uptime_ns() -> u64 {
    let s = fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (secs * 1e9) as u64
}

pub(crate) fn load_modules() -> GResult<()> {
    for (name, params) in GUEST_MODULES {
        let path = format!("/lib/modules/{name}.ko");
        let f = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        let params = CString::new(*params).map_err(|_| format!("bad parameters for {name}"))?;
        match nix::kmod::finit_module(&f, &params, nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(format!("finit_module({name}): {e} (is the module from the same kernel?)")),
        }
    }
    Ok(())
}

/// Every kernel log message so far (`/dev/kmsg`, non-blocking), without
/// the record prefix.
pub(crate) fn kmsg() -> Vec<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open("/dev/kmsg") else {
        return vec!["cannot open /dev/kmsg".into()];
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    // Each read returns one record; EAGAIN ends the log, EPIPE (a record
    // overwritten while reading) is skipped.
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
                let msg = rec.split_once(';').map(|x| x.1).unwrap_or(&rec).lines().next().unwrap_or("").to_string();
                out.push(msg);
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    out
}

/// The lowest-addressed PCI device with this sysfs vendor and device id
/// (the importer and fault modes find ivshmem and edu this way).
pub(crate) fn find_pci(vendor: &str, device: &str) -> Option<String> {
    let mut bdfs: Vec<String> = fs::read_dir("/sys/bus/pci/devices")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    bdfs.sort();
    bdfs.into_iter().find(|b| {
        let d = format!("/sys/bus/pci/devices/{b}");
        sysfs(&format!("{d}/vendor")).ok().as_deref() == Some(vendor)
            && sysfs(&format!("{d}/device")).ok().as_deref() == Some(device)
    })
}

pub(crate) fn sysfs(path: &str) -> GResult<String> {
    fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| format!("read {path}: {e}"))
}

pub(crate) fn errno_text(e: Errno) -> String {
    kernel_lab::proto::KernelErrno(e as i32).to_string()
}
