//! The lab's devices, opened through VFIO, and the seeded batch of
//! `VFIO_DEVICE_FEATURE(DMA_BUF)` requests.

use crate::*;

/// A device opened through VFIO, with what the generator and scenarios need.
pub(crate) struct Opened {
    pub(crate) info: DeviceInfo,
    pub(crate) group: Group,
    pub(crate) device: Option<Device>,
}

pub(crate) fn run(report: &mut GuestReport, results: &mut Vec<u8>) -> GResult<()> {
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
    if let Some(e) = probe_feature(opened.first().and_then(|o| o.device.as_ref())) {
        println!("nr-ranges-guest: VFIO_DEVICE_FEATURE_DMA_BUF is absent: the probe answered {}", errno_text(e));
        report.feature_absent = Some(e as i32);
        return Ok(());
    }

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

/// `VFIO_DEVICE_FEATURE(PROBE | GET | DMA_BUF)`: `None` when the kernel
/// offers the feature, else the errno. A kernel without it (6.12) answers
/// every request of the batch with the same errno, which says nothing about
/// the checks, so the batch is skipped.
pub(crate) fn probe_feature(device: Option<&Device>) -> Option<Errno> {
    use uapi::{FeatureHeader, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_PROBE};
    use zerocopy::IntoBytes;
    let device = device?;
    let mut header = FeatureHeader {
        argsz: std::mem::size_of::<FeatureHeader>() as u32,
        flags: VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF,
    };
    match device.feature(header.as_mut_bytes()) {
        Ok(_) => None,
        Err(uapi::ioctl::IoctlError::Kernel(e)) => Some(e),
        // 8 bytes are always enough for a probe.
        Err(uapi::ioctl::IoctlError::ArgTooShort { .. }) => Some(Errno::EINVAL),
    }
}

/// Guarded arguments by readable size, reused: each fresh one costs mmap,
/// mprotect and munmap, and under TCG every munmap flushes the whole soft
/// TLB, which made guarded cases dominate the loop.
#[derive(Default)]
pub(crate) struct GuardCache(std::collections::HashMap<usize, GuardedArg>);

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
pub(crate) fn observe(dev: &Device, case: &Case, buf: &mut Vec<u8>, guards: &mut GuardCache) -> Observed {
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
pub(crate) fn dmabuf_size(fd: &OwnedFd) -> Observed {
    match nix::unistd::lseek(fd.as_fd(), 0, Whence::SeekEnd) {
        Ok(size) => Observed::DmaBuf(size as u64),
        Err(e) => Observed::LseekFailed(e as i32),
    }
}

pub(crate) fn open_devices() -> GResult<(Container, Vec<Opened>)> {
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
