//! The lab's guest agent: `/init` of the initramfs.
//!
//! It mounts the pseudo filesystems, loads the vfio modules, binds the lab's
//! devices to vfio-pci, opens them the classic way (container, group,
//! type1v2), runs the seeded batch of `VFIO_DEVICE_FEATURE(DMA_BUF)` requests
//! and the scenarios, streams the answers to the host over virtio-serial
//! (the serial console is far too slow for megabytes) and powers off.
//! Whatever goes wrong, it reports the error on the stream and powers off: a
//! guest that returns from `/init` would make the kernel panic.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use kernel_lab::gen::{Case, Gen, O_RDWR_CLOEXEC, PAGE};
use kernel_lab::proto::{parse_resource, BarType, DeviceInfo, Fact, GuestReport, Observed, PROTOCOL_VERSION};
use kernel_lab::{GUEST_MODULES, LAB_DEVICES, OUTPUT_PORT_NAME};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::mman::ProtFlags;
use nix::unistd::Whence;
use uapi::ioctl::{mmap_probe, Container, Device, FeatureReply, Group, GuardedArg, IoctlError};
use uapi::{VFIO_PCI_CONFIG_REGION_INDEX, VFIO_TYPE1V2_IOMMU};

/// Errors of the guest, reported to the host as text.
type GResult<T> = Result<T, String>;

fn main() {
    let mut report = GuestReport { protocol: PROTOCOL_VERSION, ..Default::default() };
    let mut results = Vec::new();
    if let Err(e) = mount_pseudo_filesystems() {
        println!("nr-ranges-guest: {e}");
    }
    report.kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == "nrlab.mode=importer") {
        let mut rep = kernel_lab::importer::ImporterReport { kernel: report.kernel.clone(), ..Default::default() };
        if let Err(e) = importer_mode::run(&mut rep) {
            println!("nr-ranges-guest: error: {e}");
            rep.error = Some(e);
        }
        rep.dmesg = importer_mode::dmesg();
        let line = serde_json::to_vec(&rep).unwrap_or_default();
        if let Err(e) = send_raw(&line) {
            println!("nr-ranges-guest: cannot send the report: {e}");
        }
        nix::unistd::sync();
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        return;
    }
    if let Err(e) = run(&mut report, &mut results) {
        println!("nr-ranges-guest: error: {e}");
        report.error = Some(e);
    }
    report.results_len = results.len() as u64;
    if let Err(e) = send(&report, &results) {
        println!("nr-ranges-guest: cannot send the report: {e}");
    }
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
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

/// A device opened through VFIO, with what the generator and scenarios need.
struct Opened {
    info: DeviceInfo,
    group: Group,
    device: Option<Device>,
}

fn run(report: &mut GuestReport, results: &mut Vec<u8>) -> GResult<()> {
    let cmdline = fs::read_to_string("/proc/cmdline").map_err(|e| format!("read /proc/cmdline: {e}"))?;
    let cases = cmdline_u64(&cmdline, "cases", 20_000)?;
    let seed = cmdline_u64(&cmdline, "seed", 1)?;
    let scenarios = cmdline_u64(&cmdline, "scenarios", 1)? != 0;

    load_modules()?;
    // The container lives to the end: the groups and devices hang off it.
    let (_container, mut opened) = open_devices()?;
    report.devices = opened.iter().map(|o| o.info.clone()).collect();
    report.seed = seed;
    report.setup_ns = uptime_ns();

    // The batch. Everything the loop needs is allocated up front.
    let devices: Vec<&Device> = opened.iter().map(|o| o.device.as_ref().expect("opened")).collect();
    let mut gen = Gen::new(seed, opened.iter().map(|o| o.info.bar_lens()).collect());
    let mut case = Case::default();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut guards = GuardCache::default();
    results.reserve(cases as usize * 3);
    let t0 = Instant::now();
    for _ in 0..cases {
        gen.next_into(&mut case);
        observe(devices[case.device], &case, &mut buf, &mut guards).encode(results);
    }
    report.loop_ns = t0.elapsed().as_nanos() as u64;
    report.cases = cases;
    println!(
        "nr-ranges-guest: {cases} cases in {:.3} s ({:.0} cases/s)",
        report.loop_ns as f64 / 1e9,
        cases as f64 / (report.loop_ns.max(1) as f64 / 1e9)
    );

    if scenarios {
        run_scenarios(&mut opened, &mut report.facts);
    }
    Ok(())
}

/// Guarded arguments by readable size, reused: each fresh one costs mmap,
/// mprotect and munmap, and under TCG every munmap flushes the whole soft
/// TLB, which made guarded cases dominate the loop.
#[derive(Default)]
struct GuardCache(std::collections::HashMap<usize, GuardedArg>);

impl GuardCache {
    /// Sizes up to this many bytes are kept (the common small windows).
    const KEEP_UP_TO: usize = 64 << 10;

    fn with<R>(&mut self, bytes: &[u8], readable: usize, f: impl FnOnce(&mut [u8]) -> R) -> Result<R, Errno> {
        if readable > Self::KEEP_UP_TO {
            let mut g = GuardedArg::new(bytes, readable)?;
            return Ok(f(g.as_mut_slice()));
        }
        let g = match self.0.entry(readable) {
            std::collections::hash_map::Entry::Occupied(o) => {
                let g = o.into_mut();
                // `bytes` is exactly the readable window (encode_into pads it).
                g.as_mut_slice().copy_from_slice(bytes);
                g
            }
            std::collections::hash_map::Entry::Vacant(v) => v.insert(GuardedArg::new(bytes, readable)?),
        };
        Ok(f(g.as_mut_slice()))
    }
}

/// One case: encode, send, and for a dma-buf measure its size and close it.
fn observe(dev: &Device, case: &Case, buf: &mut Vec<u8>, guards: &mut GuardCache) -> Observed {
    case.encode_into(buf);
    let reply = if case.needs_guard() {
        // The kernel would read past the readable window: end it at a
        // PROT_NONE page so that read faults (EFAULT) deterministically.
        match guards.with(buf, case.readable_bytes(), |arg| dev.feature(arg)) {
            Ok(r) => r,
            Err(e) => return Observed::Errno(-(e as i32)),
        }
    } else {
        dev.feature(buf)
    };
    match reply {
        Ok(FeatureReply::Done) => Observed::Ok,
        Ok(FeatureReply::DmaBuf(fd)) => dmabuf_size(&fd),
        Err(IoctlError::Kernel(e)) => Observed::Errno(e as i32),
        Err(IoctlError::ArgTooShort { .. }) => Observed::NotSent,
    }
}

/// `lseek(fd, 0, SEEK_END)`: `dma_buf_llseek()` answers the dma-buf's size.
fn dmabuf_size(fd: &OwnedFd) -> Observed {
    match nix::unistd::lseek(fd.as_fd(), 0, Whence::SeekEnd) {
        Ok(size) => Observed::DmaBuf(size as u64),
        Err(e) => Observed::LseekFailed(e as i32),
    }
}

fn load_modules() -> GResult<()> {
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

fn sysfs(path: &str) -> GResult<String> {
    fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| format!("read {path}: {e}"))
}

fn open_devices() -> GResult<(Container, Vec<Opened>)> {
    let mut found = Vec::new();
    let entries = fs::read_dir("/sys/bus/pci/devices").map_err(|e| format!("read /sys/bus/pci/devices: {e}"))?;
    let mut bdfs: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into()).collect();
    bdfs.sort();
    // Fixed device order (LAB_DEVICES), so the generator's device indices mean
    // the same on host and guest.
    for (name, vendor, device) in LAB_DEVICES {
        for bdf in &bdfs {
            let d = format!("/sys/bus/pci/devices/{bdf}");
            if sysfs(&format!("{d}/vendor"))? == *vendor && sysfs(&format!("{d}/device"))? == *device {
                found.push((name.to_string(), bdf.clone()));
            }
        }
    }
    if found.is_empty() {
        return Err("none of the lab's PCI devices (ivshmem-plain, pci-testdev, edu) is present".into());
    }
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64;
    let container = Container::open().map_err(|e| format!("open /dev/vfio/vfio: {e} (vfio module loaded?)"))?;
    let mut opened = Vec::new();
    for (name, bdf) in found {
        let d = format!("/sys/bus/pci/devices/{bdf}");
        bind_vfio_pci(&bdf)?;
        let group_link = fs::read_link(format!("{d}/iommu_group"))
            .map_err(|e| format!("{bdf} has no iommu_group ({e}): is intel_iommu=on and -device intel-iommu set?"))?;
        let group: u32 = group_link
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{bdf}: odd iommu_group link {}", group_link.display()))?;
        let bars = parse_resource(&sysfs(&format!("{d}/resource"))?).map_err(|e| format!("{bdf}: {e}"))?;
        let (g, dev) = open_vfio_device(&container, &bdf, group, opened.is_empty()).map_err(|e| e.describe(&bdf))?;
        let info = DeviceInfo { name, bdf, group, page_size, bars };
        opened.push(Opened { info, group: g, device: Some(dev) });
    }
    Ok((container, opened))
}

/// Binds `bdf` to vfio-pci: away from its driver, `driver_override`, reprobe.
fn bind_vfio_pci(bdf: &str) -> GResult<()> {
    let d = format!("/sys/bus/pci/devices/{bdf}");
    if fs::metadata(format!("{d}/driver")).is_ok() {
        let _ = fs::write(format!("{d}/driver/unbind"), bdf);
    }
    fs::write(format!("{d}/driver_override"), "vfio-pci").map_err(|e| format!("{bdf} driver_override: {e}"))?;
    fs::write("/sys/bus/pci/drivers_probe", bdf).map_err(|e| format!("{bdf} drivers_probe: {e}"))
}

/// Which step of [`open_vfio_device`] failed.
enum VfioOpenError {
    /// `open("/dev/vfio/<group>")`.
    Group(u32, std::io::Error),
    /// `VFIO_GROUP_SET_CONTAINER`: the group is not viable (a device of it
    /// is bound to another driver) or the container refuses it.
    SetContainer(Errno),
    /// `VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)`.
    SetIommu(Errno),
    /// `VFIO_GROUP_GET_DEVICE_FD`.
    DeviceFd(Errno),
}

impl VfioOpenError {
    fn describe(&self, bdf: &str) -> String {
        match self {
            VfioOpenError::Group(g, e) => format!("open /dev/vfio/{g} for {bdf}: {e}"),
            VfioOpenError::SetContainer(e) => format!("VFIO_GROUP_SET_CONTAINER for {bdf}: {e}"),
            VfioOpenError::SetIommu(e) => format!("VFIO_SET_IOMMU type1v2: {e}"),
            VfioOpenError::DeviceFd(e) => format!("VFIO_GROUP_GET_DEVICE_FD {bdf}: {e}"),
        }
    }
}

/// The classic VFIO open of a device bound to vfio-pci, for both modes: its
/// group into `container` (type1v2 is set with the `first` group), then
/// the device fd.
fn open_vfio_device(
    container: &Container,
    bdf: &str,
    group: u32,
    first: bool,
) -> Result<(Group, Device), VfioOpenError> {
    let g = Group::open(group).map_err(|e| VfioOpenError::Group(group, e))?;
    g.set_container(container).map_err(VfioOpenError::SetContainer)?;
    if first {
        container.set_iommu(VFIO_TYPE1V2_IOMMU).map_err(VfioOpenError::SetIommu)?;
    }
    let dev = g.device(bdf).map_err(VfioOpenError::DeviceFd)?;
    Ok((g, dev))
}

// ---------------------------------------------------------------------------
// Scenarios: sequences of calls whose answers are facts, not predictions.

/// PCI_COMMAND in config space, and its memory-space enable bit.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 0x2;

fn errno_text(e: Errno) -> String {
    kernel_lab::proto::KernelErrno(e as i32).to_string()
}

fn get_dmabuf(dev: &Device, region: u32, open_flags: u32, len: u64) -> Result<OwnedFd, String> {
    export(dev, region, open_flags, &[uapi::DmaRange::new(0, len)])
}

/// A well-formed GET of `ranges` of `region`: the new dma-buf, or why not.
fn export(dev: &Device, region: u32, open_flags: u32, ranges: &[uapi::DmaRange]) -> Result<OwnedFd, String> {
    let req = uapi::OwnedRequest::well_formed(region, open_flags, ranges).map_err(|e| e.to_string())?;
    let mut buf = req.encode().map_err(|e| e.to_string())?;
    match dev.feature(&mut buf) {
        Ok(FeatureReply::DmaBuf(fd)) => Ok(fd),
        Ok(FeatureReply::Done) => Err("ok without fd".into()),
        Err(IoctlError::Kernel(e)) => Err(errno_text(e)),
        Err(e) => Err(e.to_string()),
    }
}

fn describe_fd(fd: &OwnedFd) -> String {
    match dmabuf_size(fd) {
        Observed::DmaBuf(s) => format!("lseek(SEEK_END)={s}"),
        other => other.describe(),
    }
}

/// The outcome of a GET in a scenario: the new fd's size, or the errno.
fn created(fd: &Result<OwnedFd, String>) -> String {
    match fd {
        Ok(fd) => describe_fd(fd),
        Err(e) => e.clone(),
    }
}

struct Facts<'a>(&'a mut Vec<Fact>, &'static str);

impl Facts<'_> {
    fn add(&mut self, step: &str, result: impl Into<String>) {
        let result = result.into();
        println!("nr-ranges-guest: fact {}: {step}: {result}", self.1);
        self.0.push(Fact { scenario: self.1.into(), step: step.into(), result });
    }
}

fn res<T>(r: Result<T, String>, ok: impl FnOnce(&T) -> String) -> String {
    match r {
        Ok(v) => ok(&v),
        Err(e) => e,
    }
}

fn set_memory(dev: &Device, cfg_off: u64, enable: bool) -> Result<u16, String> {
    let mut cmd = [0u8; 2];
    dev.file().read_exact_at(&mut cmd, cfg_off + PCI_COMMAND).map_err(|e| format!("config read: {e}"))?;
    let mut v = u16::from_le_bytes(cmd);
    if enable {
        v |= PCI_COMMAND_MEMORY;
    } else {
        v &= !PCI_COMMAND_MEMORY;
    }
    dev.file().write_all_at(&v.to_le_bytes(), cfg_off + PCI_COMMAND).map_err(|e| format!("config write: {e}"))?;
    dev.file().read_exact_at(&mut cmd, cfg_off + PCI_COMMAND).map_err(|e| format!("config read: {e}"))?;
    Ok(u16::from_le_bytes(cmd))
}

fn run_scenarios(opened: &mut [Opened], facts: &mut Vec<Fact>) {
    // The largest memory BAR of the lab: ivshmem's BAR2.
    let Some((di, bar)) = opened
        .iter()
        .enumerate()
        .flat_map(|(i, o)| o.info.bars.iter().map(move |b| (i, *b)))
        .filter(|(_, b)| b.kind == BarType::Mem && b.len >= PAGE)
        .max_by_key(|(_, b)| b.len)
    else {
        facts.push(Fact { scenario: "setup".into(), step: "find a memory BAR".into(), result: "none".into() });
        return;
    };
    let o = &mut opened[di];
    let region = bar.index;
    let dev = o.device.as_ref().expect("opened");
    let cfg_off = dev.region_info(VFIO_PCI_CONFIG_REGION_INDEX).map(|r| r.offset).unwrap_or(0);
    let mut f = Facts(facts, "target");
    f.add("device", format!("{} {} BAR{} len={}", o.info.name, o.info.bdf, region, bar.len));

    // 1. A dma-buf created while PCI_COMMAND memory is clear.
    let mut f = Facts(facts, "memory-disabled-create");
    f.add("clear PCI_COMMAND.MEMORY", res(set_memory(dev, cfg_off, false), |v| format!("ok, command={v:#06x}")));
    let fd = get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE);
    f.add("DMA_BUF GET [0,page)", created(&fd));
    f.add("set PCI_COMMAND.MEMORY", res(set_memory(dev, cfg_off, true), |v| format!("ok, command={v:#06x}")));
    if let Ok(fd) = &fd {
        f.add("dma-buf after re-enable", describe_fd(fd));
    }
    drop(fd);

    // 2. Memory disable and re-enable with a live dma-buf.
    let mut f = Facts(facts, "memory-toggle-live");
    let fd = get_dmabuf(dev, region, O_RDWR_CLOEXEC, 2 * PAGE);
    f.add("DMA_BUF GET [0,2 pages)", created(&fd));
    if let Ok(fd) = &fd {
        f.add("clear PCI_COMMAND.MEMORY", res(set_memory(dev, cfg_off, false), |v| format!("ok, command={v:#06x}")));
        f.add("dma-buf while memory disabled", describe_fd(fd));
        f.add("new GET while memory disabled", res(get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE), describe_fd));
        f.add("set PCI_COMMAND.MEMORY", res(set_memory(dev, cfg_off, true), |v| format!("ok, command={v:#06x}")));
        f.add("dma-buf after re-enable", describe_fd(fd));
    }
    drop(fd);

    // 3. VFIO_DEVICE_RESET with a live dma-buf.
    let mut f = Facts(facts, "reset-live");
    let fd = get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE);
    f.add("DMA_BUF GET [0,page)", created(&fd));
    let flags = dev.info().map(|i| i.flags).unwrap_or(0);
    f.add("VFIO_DEVICE_INFO reset flag", format!("{}", flags & uapi::VFIO_DEVICE_FLAGS_RESET != 0));
    f.add(
        "VFIO_DEVICE_RESET",
        match dev.reset() {
            Ok(()) => "ok".into(),
            Err(e) => errno_text(e),
        },
    );
    if let Ok(fd) = &fd {
        f.add("dma-buf after reset", describe_fd(fd));
    }
    f.add("new GET after reset", res(get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE), describe_fd));
    drop(fd);

    // 4. What open_flags do to the fd.
    let mut f = Facts(facts, "open-flags");
    for (name, flags) in [
        ("0 (O_RDONLY)", 0u32),
        ("O_WRONLY", 1),
        ("O_RDWR", 2),
        ("3 (O_ACCMODE)", 3),
        ("O_RDWR|O_CLOEXEC", O_RDWR_CLOEXEC),
        ("O_RDWR|O_NONBLOCK", 2 | 0o4000),
        ("O_RDWR|O_APPEND", 2 | 0o2000),
        ("0xffffffff", u32::MAX),
    ] {
        let r = get_dmabuf(dev, region, flags, PAGE).map(|fd| {
            let fl = fcntl(&fd, FcntlArg::F_GETFL).map(|v| format!("{v:#o}")).unwrap_or_else(errno_text);
            let fd_flags = fcntl(&fd, FcntlArg::F_GETFD)
                .map(|v| format!("{}", FdFlag::from_bits_truncate(v).contains(FdFlag::FD_CLOEXEC)))
                .unwrap_or_else(errno_text);
            format!("F_GETFL={fl} FD_CLOEXEC={fd_flags}")
        });
        f.add(&format!("open_flags {name}"), res(r, Clone::clone));
    }

    // 5. read() and mmap on a dma-buf.
    let mut f = Facts(facts, "dmabuf-io");
    let fd = get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE);
    if let Ok(fd) = &fd {
        let mut b = [0u8; 64];
        f.add(
            "read(64)",
            match nix::unistd::read(fd, &mut b) {
                Ok(n) => format!("ok {n} bytes"),
                Err(e) => errno_text(e),
            },
        );
        f.add(
            "write(64)",
            match nix::unistd::write(fd, &b) {
                Ok(n) => format!("ok {n} bytes"),
                Err(e) => errno_text(e),
            },
        );
        f.add(
            "lseek(0, SEEK_SET)",
            match nix::unistd::lseek(fd, 0, Whence::SeekSet) {
                Ok(n) => format!("ok {n}"),
                Err(e) => errno_text(e),
            },
        );
        f.add(
            "lseek(1, SEEK_CUR)",
            match nix::unistd::lseek(fd, 1, Whence::SeekCur) {
                Ok(n) => format!("ok {n}"),
                Err(e) => errno_text(e),
            },
        );
        for (name, prot) in [
            ("mmap(PROT_READ)", ProtFlags::PROT_READ),
            ("mmap(PROT_READ|PROT_WRITE)", ProtFlags::PROT_READ | ProtFlags::PROT_WRITE),
        ] {
            let page = std::num::NonZeroUsize::new(PAGE as usize).expect("page size is not zero");
            f.add(
                name,
                match mmap_probe(fd.as_fd(), page, prot) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => errno_text(e),
                },
            );
        }
    }

    // 6. The device fd closed while the dma-buf lives (last: it consumes the fd).
    let mut f = Facts(facts, "device-closed-live");
    let fd = get_dmabuf(dev, region, O_RDWR_CLOEXEC, PAGE);
    f.add("DMA_BUF GET [0,page)", created(&fd));
    drop(o.device.take());
    if let Ok(fd) = &fd {
        f.add("dma-buf after device fd close", describe_fd(fd));
        let mut b = [0u8; 8];
        f.add(
            "read after device fd close",
            match nix::unistd::read(fd, &mut b) {
                Ok(n) => format!("ok {n} bytes"),
                Err(e) => errno_text(e),
            },
        );
    }
    let bdf = o.info.bdf.clone();
    match o.group.device(&bdf) {
        Ok(d) => {
            f.add("reopen device while dma-buf lives", "ok");
            f.add("GET on reopened device", res(get_dmabuf(&d, region, O_RDWR_CLOEXEC, PAGE), describe_fd));
            o.device = Some(d);
        }
        Err(e) => f.add("reopen device while dma-buf lives", errno_text(e)),
    }
    drop(fd);
    f.add("dma-buf closed", "ok");
}

fn send(report: &GuestReport, results: &[u8]) -> GResult<()> {
    let port = find_port()?;
    let mut out = fs::OpenOptions::new().write(true).open(&port).map_err(|e| format!("open {port}: {e}"))?;
    let mut line = serde_json::to_vec(report).map_err(|e| e.to_string())?;
    line.push(b'\n');
    out.write_all(&line).map_err(|e| format!("write {port}: {e}"))?;
    out.write_all(results).map_err(|e| format!("write {port}: {e}"))?;
    out.flush().map_err(|e| format!("flush {port}: {e}"))
}

fn send_raw(bytes: &[u8]) -> GResult<()> {
    let port = find_port()?;
    let mut out = fs::OpenOptions::new().write(true).open(&port).map_err(|e| format!("open {port}: {e}"))?;
    out.write_all(bytes).and_then(|()| out.write_all(b"\n")).map_err(|e| format!("write {port}: {e}"))?;
    out.flush().map_err(|e| format!("flush {port}: {e}"))
}

/// `/dev/vportNpM` whose port name is [`OUTPUT_PORT_NAME`] (no udev here to
/// make the /dev/virtio-ports/ symlinks).
fn find_port() -> GResult<String> {
    let dir = fs::read_dir("/sys/class/virtio-ports").map_err(|e| format!("no virtio-ports in sysfs: {e}"))?;
    for e in dir.flatten() {
        let name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if name.trim() == OUTPUT_PORT_NAME {
            return Ok(format!("/dev/{}", e.file_name().to_string_lossy()));
        }
    }
    Err(format!("no virtio-serial port named {OUTPUT_PORT_NAME}"))
}

// ---------------------------------------------------------------------------
// Importer mode (`nrlab.mode=importer`): ivshmem to vfio-pci, edu to the
// nrlab_importer fixture; shapes through export, attach, map and edu DMA;
// then revocation. See `kernel_lab::importer`.

mod importer_mode {
    use super::*;
    use kernel_lab::importer::{
        classify, pattern, read_plan, shapes, ImporterReport, Read, RevStep, ShapeResult, DEV_NODE, MODULE_FILE,
    };
    use kernel_lab::importer_abi::{
        NrlabAttach, NrlabDistance, NrlabDma, NrlabEntry, NrlabIova, NrlabMap, NrlabStatus, IOVA_READ, MAX_DMA,
        MAX_ENTRIES, NRLAB_IOCTL_ATTACH, NRLAB_IOCTL_DETACH, NRLAB_IOCTL_DISTANCE, NRLAB_IOCTL_DMA, NRLAB_IOCTL_IOVA,
        NRLAB_IOCTL_MAP, NRLAB_IOCTL_STATUS,
    };
    use kernel_lab::revocation::{Action, ImporterState, RevocationBackend};
    use zerocopy::{FromBytes, FromZeros, IntoBytes};

    /// The fixture's device node.
    struct Fixture(File);

    /// A map's answer and the DMA entries it copied.
    type Mapped = (Box<NrlabMap>, Vec<(u64, u64)>);

    impl Fixture {
        /// One ioctl: `arg` goes in, the fixture's answer comes back in it.
        fn call<T: IntoBytes + FromBytes>(&self, code: u32, name: &str, mut arg: Box<T>) -> GResult<Box<T>> {
            uapi::ioctl::ioctl_iowr(self.0.as_fd(), code, arg.as_mut_bytes()).map_err(|e| format!("{name}: {e}"))?;
            Ok(arg)
        }
        fn attach(&self, fd: i32) -> GResult<Box<NrlabAttach>> {
            self.call(NRLAB_IOCTL_ATTACH, "NRLAB_IOCTL_ATTACH", Box::new(NrlabAttach { fd, ..Default::default() }))
        }
        /// Maps and keeps the mapping; the copied DMA entries.
        fn map_keep(&self) -> GResult<Mapped> {
            let mut arg = Box::new(NrlabMap::new_zeroed());
            arg.keep = 1;
            let m = self.call(NRLAB_IOCTL_MAP, "NRLAB_IOCTL_MAP", arg)?;
            let n = (m.count as usize).min(MAX_ENTRIES);
            let entries = m.ent.get(..n).unwrap_or_default().iter().map(|e| (e.addr, e.len)).collect();
            Ok((m, entries))
        }
        fn status_op(&self, code: u32, name: &str) -> GResult<NrlabStatus> {
            self.call(code, name, Box::new(NrlabStatus::default())).map(|s| *s)
        }
        fn status(&self) -> GResult<NrlabStatus> {
            self.status_op(NRLAB_IOCTL_STATUS, "NRLAB_IOCTL_STATUS")
        }
        fn detach(&self) -> GResult<NrlabStatus> {
            self.status_op(NRLAB_IOCTL_DETACH, "NRLAB_IOCTL_DETACH")
        }
        /// edu's read of `len` bytes at `addr`: the status and the bytes.
        fn read(&self, addr: u64, len: u32) -> GResult<(i32, Vec<u8>)> {
            let mut arg = Box::new(NrlabDma::new_zeroed());
            arg.addr = addr;
            arg.len = len;
            let d = self.call(NRLAB_IOCTL_DMA, "NRLAB_IOCTL_DMA", arg)?;
            let n = (len as usize).min(MAX_DMA);
            Ok((d.st.err, d.data.get(..n).unwrap_or_default().to_vec()))
        }
        fn distance(&self, provider: u64) -> GResult<NrlabDistance> {
            let arg = Box::new(NrlabDistance { provider, ..Default::default() });
            self.call(NRLAB_IOCTL_DISTANCE, "NRLAB_IOCTL_DISTANCE", arg).map(|d| *d)
        }
        fn iova(&self, provider: u64, bar: u32, corrected: bool, ranges: &[(u64, u64)]) -> GResult<Box<NrlabIova>> {
            let mut arg = Box::new(NrlabIova::new_zeroed());
            arg.provider = provider;
            arg.bar = bar;
            arg.corrected = corrected as u32;
            arg.nr_ranges = ranges.len() as u32;
            for (slot, &(addr, len)) in arg.ranges.iter_mut().zip(ranges) {
                *slot = NrlabEntry { addr, len };
            }
            self.call(NRLAB_IOCTL_IOVA, "NRLAB_IOCTL_IOVA", arg)
        }
    }

    fn find(vendor: &str, device: &str) -> Option<String> {
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

    fn group_of(bdf: &str) -> Option<(u32, String)> {
        let link = fs::read_link(format!("/sys/bus/pci/devices/{bdf}/iommu_group")).ok()?;
        let g: u32 = link.file_name()?.to_str()?.parse().ok()?;
        let mut members: Vec<String> = fs::read_dir(format!("/sys/kernel/iommu_groups/{g}/devices"))
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        members.sort();
        Some((g, format!("group {g}: {}", members.join(" "))))
    }

    /// Kernel log lines worth keeping (p2pdma, DMAR faults, the fixture).
    pub fn dmesg() -> Vec<String> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(mut f) = fs::OpenOptions::new().read(true).custom_flags(0o4000).open("/dev/kmsg") else {
            return vec!["cannot open /dev/kmsg".into()];
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            let rec = String::from_utf8_lossy(&buf[..n]);
            let msg = rec.split_once(';').map(|x| x.1).unwrap_or(&rec).lines().next().unwrap_or("").to_string();
            let l = msg.to_ascii_lowercase();
            if ["p2p", "dmar", "nrlab", "acs", "edu", "dma-buf", "dmabuf", "vfio", "iommu", "warn", "bug", "oops"]
                .iter()
                .any(|k| l.contains(k))
            {
                out.push(msg);
            }
        }
        out.truncate(200);
        out
    }

    fn get_ranges(dev: &Device, region: u32, ranges: &[(u64, u64)]) -> Result<OwnedFd, String> {
        let ranges: Vec<uapi::DmaRange> = ranges.iter().map(|&(o, l)| uapi::DmaRange::new(o, l)).collect();
        super::export(dev, region, O_RDWR_CLOEXEC, &ranges)
    }

    /// Writes the pattern over every chunk edu may read, through the vfio
    /// region (pwrite on the device fd at the region offset).
    fn write_patterns(dev: &Device, region_off: u64, ranges: &[(u64, u64)]) -> GResult<()> {
        for &(off, len) in ranges {
            let mut chunks = vec![(off, len.min(1024))];
            if len > 4096 {
                chunks.push((off + len - 256, 256));
            }
            for (o, n) in chunks {
                dev.file()
                    .write_all_at(&pattern(o, n as usize), region_off + o)
                    .map_err(|e| format!("pattern write at BAR offset {o:#x}: {e}"))?;
            }
        }
        Ok(())
    }

    fn dma_result(fx: &Fixture, addr: u64, len: u32, bar_off: u64) -> String {
        match fx.read(addr, len) {
            Ok((0, data)) => classify(&data, bar_off),
            Ok((err, _)) => format!("edu DMA: {}", kernel_lab::proto::KernelErrno(-err)),
            Err(e) => e,
        }
    }

    fn run_shape(dev: &Device, region: u32, region_off: u64, fx: &Fixture, ranges: &[(u64, u64)]) -> ShapeResult {
        let mut r = ShapeResult { ranges: ranges.to_vec(), ..Default::default() };
        if let Err(e) = write_patterns(dev, region_off, ranges) {
            r.export = e;
            return r;
        }
        let fd = match get_ranges(dev, region, ranges) {
            Ok(fd) => fd,
            Err(e) => {
                r.export = e;
                return r;
            }
        };
        r.export = describe_fd(&fd);
        let a = match fx.attach(fd.as_raw_fd()) {
            Ok(a) => a,
            Err(e) => {
                r.export.push_str(&format!("; attach ioctl: {e}"));
                return r;
            }
        };
        r.attach_err = Some(a.st.err);
        if a.st.err == 0 {
            if let Ok((m, entries)) = fx.map_keep() {
                r.map_err = Some(m.st.err);
                if m.st.err == 0 {
                    r.nents = m.nents;
                    r.orig_nents = m.orig_nents;
                    r.total_entries = m.total_entries;
                    r.entries = entries;
                    for (range, bar_off, dma_addr, len) in read_plan(ranges, &r.entries) {
                        let result = dma_result(fx, dma_addr, len.min(MAX_DMA as u32), bar_off);
                        r.reads.push(Read { range, bar_off, dma_addr, len, result });
                    }
                }
            }
            let _ = fx.detach();
        }
        r
    }

    use std::os::fd::AsRawFd;

    pub fn run(rep: &mut ImporterReport) -> GResult<()> {
        let cmdline = fs::read_to_string("/proc/cmdline").map_err(|e| format!("read /proc/cmdline: {e}"))?;
        rep.topology =
            cmdline.split_whitespace().find_map(|w| w.strip_prefix("nrlab.topology=")).unwrap_or("?").to_string();
        let only: Option<Vec<String>> = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("nrlab.shapes="))
            .map(|s| s.split(',').map(String::from).collect());
        let revoke = cmdline_u64(&cmdline, "revoke", 1)? != 0;
        load_modules()?;
        let ivs = find("0x1af4", "0x1110").ok_or("no ivshmem-plain")?;
        let edu = find("0x1234", "0x11e8").ok_or("no edu")?;
        rep.edu_bdf = edu.clone();
        // ivshmem to vfio-pci; edu stays out of vfio.
        let d = format!("/sys/bus/pci/devices/{ivs}");
        bind_vfio_pci(&ivs)?;
        for b in [&ivs, &edu] {
            rep.groups.push((b.to_string(), group_of(b).map(|g| g.1).unwrap_or_else(|| "no iommu group".into())));
        }
        // The fixture binds edu at load.
        let path = format!("/lib/modules/{MODULE_FILE}");
        let f = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty())
            .map_err(|e| format!("finit_module(nrlab_importer): {e}"))?;
        let fx = Fixture(
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(DEV_NODE)
                .map_err(|e| format!("open {DEV_NODE}: {e} (did the fixture bind edu {edu}?)"))?,
        );
        // pci_p2pdma_distance(ivshmem, edu): also prints the kernel's lines.
        let id = {
            let p: Vec<&str> = ivs.split([':', '.']).collect();
            let h = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
            (h(p[0]) << 16) | (h(p[1]) << 8) | (h(p[2]) << 3) | h(p[3])
        };
        let dist = fx.distance(id)?;
        rep.distance = Some(if dist.st.err == 0 { dist.distance } else { dist.st.err });

        let (g, _) = group_of(&ivs).ok_or_else(|| format!("{ivs} has no iommu group"))?;
        let container = Container::open().map_err(|e| format!("open /dev/vfio/vfio: {e}"))?;
        let (_group, dev) = open_vfio_device(&container, &ivs, g, true).map_err(|e| match e {
            // The multifunction topologies' finding (FINDINGS F5).
            VfioOpenError::SetContainer(_) => format!("{} (group {g} not viable: edu shares it?)", e.describe(&ivs)),
            _ => e.describe(&ivs),
        })?;
        let mut dev = Some(dev);
        let bars = parse_resource(&sysfs(&format!("{d}/resource"))?).map_err(|e| format!("{ivs}: {e}"))?;
        let page_size = 4096;
        rep.ivshmem = Some(DeviceInfo { name: "ivshmem-plain".into(), bdf: ivs.clone(), group: g, page_size, bars });
        let bar = rep
            .ivshmem
            .as_ref()
            .and_then(|i| i.bars.iter().find(|b| b.index == 2).copied())
            .ok_or("ivshmem has no BAR2")?;
        let dv = dev.as_ref().expect("opened");
        let region_off = dv.region_info(2).map_err(|e| format!("region info 2: {e}"))?.offset;
        for sh in shapes(bar.len, only.as_deref()) {
            let mut r = run_shape(dv, 2, region_off, &fx, &sh.ranges);
            r.name = sh.name.clone();
            println!(
                "nr-ranges-guest: shape {}: export {} attach {:?} map {:?} entries {:x?}",
                r.name, r.export, r.attach_err, r.map_err, r.entries
            );
            rep.shapes.push(r);
        }
        // Defect #1 by hand: the kernel's IOVA linking and the corrected one.
        for sh in shapes(bar.len, only.as_deref()).iter().filter(|s| (2..=8).contains(&s.ranges.len())) {
            if sh.ranges.iter().any(|r| r.1 > 1 << 30) {
                continue;
            }
            let _ = write_patterns(dv, region_off, &sh.ranges);
            for (corrected, mode) in
                [(false, "offset 0 (as the kernel links)"), (true, "offset = bytes linked (corrected)")]
            {
                let mut p =
                    kernel_lab::importer::IovaProbe { shape: sh.name.clone(), mode: mode.into(), ..Default::default() };
                match fx.iova(id, 2, corrected, &sh.ranges) {
                    Ok(a) => {
                        p.err = a.st.err;
                        p.failed_range = a.failed_range;
                        p.iova = a.iova;
                        p.linked = a.linked;
                        if a.st.err == 0 {
                            for (i, &(off, len)) in sh.ranges.iter().enumerate() {
                                let n = (len as usize).min(IOVA_READ);
                                p.reads.push(classify(&a.data[IOVA_READ * i..IOVA_READ * i + n], off));
                            }
                        }
                    }
                    Err(e) => p.reads.push(e),
                }
                println!("nr-ranges-guest: iova by hand {} {}: {:?}", p.shape, p.mode, p);
                rep.iova_by_hand.push(p);
            }
        }
        if revoke {
            revocation(&mut dev, region_off, &fx, &mut rep.rev);
        }
        Ok(())
    }

    /// The real device and the fixture as the revocation sequence's backend.
    struct GuestRevocation<'a> {
        fx: &'a Fixture,
        dev: &'a mut Option<Device>,
        cfg_off: u64,
    }

    impl RevocationBackend for GuestRevocation<'_> {
        fn map_keep(&mut self) -> (i32, Option<u64>) {
            match self.fx.map_keep() {
                Ok((m, entries)) if m.st.err == 0 => (0, entries.first().map(|e| e.0)),
                Ok((m, _)) => (m.st.err, None),
                // The ioctl itself failed: as the kernel's EIO.
                Err(_) => (-validator::Errno::EIO.code(), None),
            }
        }

        fn state(&mut self) -> Option<ImporterState> {
            let st = self.fx.status().ok()?;
            Some(ImporterState { invalidations: st.invalidations, mapped: st.mapped != 0 })
        }

        fn peer_read(&mut self, dma_addr: u64) -> String {
            dma_result(self.fx, dma_addr, 256, 0x1000)
        }

        fn act(&mut self, action: Action) -> Option<String> {
            let dv = self.dev.as_ref()?;
            match action {
                Action::Observe => {}
                Action::MemoryOff => {
                    let _ = set_memory(dv, self.cfg_off, false);
                }
                Action::MemoryOn => {
                    let _ = set_memory(dv, self.cfg_off, true);
                }
                Action::Reset => {
                    let reset = match dv.reset() {
                        Ok(()) => "ok".to_string(),
                        Err(e) => errno_text(e),
                    };
                    let flags = dv.info().map(|i| i.flags).unwrap_or(0);
                    return Some(format!(
                        "VFIO_DEVICE_RESET: {reset} (reset flag {})",
                        flags & uapi::VFIO_DEVICE_FLAGS_RESET != 0
                    ));
                }
                Action::CloseDevice => drop(self.dev.take()),
            }
            None
        }
    }

    /// Revocation with a kept mapping: memory bit cleared, re-enabled,
    /// reset, device fd closed. After each: callback count, kept mapping,
    /// remap errno, and what edu reads at the old DMA address.
    fn revocation(dev: &mut Option<Device>, region_off: u64, fx: &Fixture, out: &mut Vec<RevStep>) {
        let ranges = [(0x1000u64, 0x4000u64)];
        let dv = dev.as_ref().expect("opened");
        let _ = write_patterns(dv, region_off, &ranges);
        let cfg_off = dv.region_info(VFIO_PCI_CONFIG_REGION_INDEX).map(|r| r.offset).unwrap_or(0);
        let fd = match get_ranges(dv, 2, &ranges) {
            Ok(fd) => fd,
            Err(e) => {
                out.push(RevStep::note("export", e));
                return;
            }
        };
        match fx.attach(fd.as_raw_fd()) {
            Ok(a) if a.st.err == 0 => {}
            Ok(a) => return out.push(RevStep::note("attach", kernel_lab::proto::KernelErrno(-a.st.err).to_string())),
            Err(e) => return out.push(RevStep::note("attach", e)),
        }
        out.extend(kernel_lab::revocation::run(&mut GuestRevocation { fx, dev, cfg_off }));
        let _ = fx.detach();
        drop(fd);
    }
}
