//! iommufd mode (`nrlab.mode=iommufd`): ivshmem-plain to vfio-pci, opened
//! through its vfio device cdev, bound to an iommufd and attached to an
//! IOAS; then the cases of `kernel_lab::iommufd` on the real kernel. See
//! `kernel_lab::iommufd`.

use crate::*;
use kernel_lab::iommufd::qemu::{msix_table, qemu_mmaps, region_facts};
use kernel_lab::iommufd::{
    run_cases, BarAreas, IommufdBackend, IommufdReport, MsixDevice, Plan, Step, MAP_FLAGS, PAGE,
};
use uapi::ioctl::Iommufd;

/// The kernel as the cases' backend: the cdev-opened device and its IOAS.
struct GuestBackend<'a> {
    fd: &'a Iommufd,
    ioas: u32,
    dev: &'a Device,
    cfg_off: u64,
    bdf: String,
    bufs: Vec<Option<OwnedFd>>,
    areas: Vec<(u64, u64)>,
}

fn code(e: Errno) -> i32 {
    e as i32
}

impl IommufdBackend for GuestBackend<'_> {
    fn export(&mut self, ranges: &[(u64, u64)]) -> Result<(usize, u64), i32> {
        let ranges: Vec<uapi::DmaRange> = ranges.iter().map(|&(o, l)| uapi::DmaRange::new(o, l)).collect();
        let req = uapi::OwnedRequest::well_formed(2, O_RDWR_CLOEXEC, &ranges).map_err(|_| code(Errno::EINVAL))?;
        let mut buf = req.encode().map_err(|_| code(Errno::EINVAL))?;
        match self.dev.feature(&mut buf) {
            Ok(FeatureReply::DmaBuf(fd)) => {
                let size = match dmabuf_size(&fd) {
                    Observed::DmaBuf(s) => s,
                    _ => 0,
                };
                self.bufs.push(Some(fd));
                Ok((self.bufs.len() - 1, size))
            }
            Ok(FeatureReply::Done) => Err(code(Errno::EIO)),
            Err(IoctlError::Kernel(e)) => Err(code(e)),
            Err(_) => Err(code(Errno::EINVAL)),
        }
    }

    fn map_file(&mut self, buf: usize, start: u64, length: u64) -> Result<(usize, u64), i32> {
        let fd = self.bufs.get(buf).and_then(Option::as_ref).ok_or(code(Errno::EBADF))?;
        let iova = self.fd.ioas_map_file(self.ioas, fd.as_fd(), start, length, MAP_FLAGS, 0).map_err(code)?;
        self.areas.push((iova, length));
        Ok((self.areas.len() - 1, iova))
    }

    fn unmap(&mut self, area: usize) -> Result<(), i32> {
        let &(iova, length) = self.areas.get(area).ok_or(code(Errno::ENOENT))?;
        self.fd.ioas_unmap(self.ioas, iova, length).map(drop).map_err(code)
    }

    fn translated(&mut self, area: usize) -> Option<bool> {
        let &(iova, _) = self.areas.get(area)?;
        intel_iommu_translates(&self.bdf, iova).ok()
    }

    fn memory(&mut self, on: bool) -> Result<(), i32> {
        set_memory(self.dev, self.cfg_off, on).map(drop).map_err(|_| code(Errno::EIO))
    }

    fn close(&mut self, buf: usize) -> Result<(), i32> {
        let fd = self.bufs.get_mut(buf).and_then(Option::take).ok_or(code(Errno::EBADF))?;
        nix::unistd::close(fd).map_err(code)
    }
}

fn debugfs_path(bdf: &str) -> String {
    format!("/sys/kernel/debug/iommu/intel/{bdf}/domain_translation_struct")
}

/// Whether the Intel IOMMU debugfs lists a leaf for `iova`'s page in the
/// device's domain, as the selftest's `intel_iommu_translates()` reads it
/// (a line starting with the IOVA's page frame number in hex).
fn intel_iommu_translates(bdf: &str, iova: u64) -> Result<bool, String> {
    let path = debugfs_path(bdf);
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let pfn = iova / PAGE;
    Ok(text.lines().any(|l| {
        let Some(hex) = l.trim_start().strip_prefix("0x") else { return false };
        let end = hex.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(hex.len());
        u64::from_str_radix(&hex[..end], 16).ok() == Some(pfn)
    }))
}

fn setup_step(op: &str, r: Result<String, Errno>) -> Step {
    let (errno, note) = match r {
        Ok(n) => (0, n),
        Err(e) => (e as i32, String::new()),
    };
    Step { case: "setup".into(), op: op.into(), errno, translated: None, note }
}

/// The cdev of a device bound to vfio-pci: `/dev/vfio/devices/vfioN`, named
/// by its sysfs `vfio-dev/` entry (which exists without the cdev too), if
/// devtmpfs has the node.
fn cdev_of(bdf: &str) -> Result<String, String> {
    let sys = format!("/sys/bus/pci/devices/{bdf}/vfio-dev");
    let dir = fs::read_dir(&sys).map_err(|e| format!("{sys}: {e}"))?;
    let name = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("vfio"))
        .ok_or_else(|| format!("nothing in {sys}"))?;
    let node = format!("/dev/vfio/devices/{name}");
    match fs::metadata(&node) {
        Ok(_) => Ok(node),
        Err(e) => Err(format!("{node}: {e} (CONFIG_VFIO_DEVICE_CDEV)")),
    }
}

pub fn main(kernel: String) {
    let mut rep = IommufdReport { kernel, ..Default::default() };
    if let Err(e) = run(&mut rep) {
        println!("nr-ranges-guest: error: {e}");
        rep.error = Some(e);
    }
    rep.dmesg = crate::importer_mode::dmesg();
    rep.sanitizer = sanitizer::collect();
    send_report_and_power_off(&rep);
}

fn run(rep: &mut IommufdReport) -> GResult<()> {
    load_modules()?;
    let _ = fs::create_dir_all("/sys/kernel/debug");
    let _ = nix::mount::mount(
        Some("debugfs"),
        "/sys/kernel/debug",
        Some("debugfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    let ivs = find_pci("0x1af4", "0x1110").ok_or("no ivshmem-plain")?;
    rep.bdf = ivs.clone();
    let bars =
        parse_resource(&sysfs(&format!("/sys/bus/pci/devices/{ivs}/resource"))?).map_err(|e| format!("{ivs}: {e}"))?;
    let bar = bars.iter().find(|b| b.index == 2).copied().ok_or("ivshmem has no BAR2")?;
    rep.bar2 = (bar.start, bar.len);
    bind_vfio_pci(&ivs)?;

    // Both or nothing: the native iommufd path needs /dev/iommu and the
    // device's cdev (CONFIG_IOMMUFD, CONFIG_VFIO_DEVICE_CDEV).
    let cdev = cdev_of(&ivs);
    let mut missing = Vec::new();
    if fs::metadata("/dev/iommu").is_err() {
        let module = if fs::metadata("/sys/module/iommufd").is_ok() { "loaded" } else { "absent" };
        missing.push(format!("no /dev/iommu (CONFIG_IOMMUFD; /sys/module/iommufd {module})"));
    }
    if let Err(e) = &cdev {
        missing.push(format!("no vfio device cdev: {e}"));
    }
    let Some(cdev) = cdev.ok().filter(|_| missing.is_empty()) else {
        rep.unavailable = Some(missing.join("; "));
        return Ok(());
    };
    rep.cdev = cdev.clone();

    let fd = Iommufd::open().map_err(|e| format!("open /dev/iommu: {e}"))?;
    let dev = Device::open_cdev(std::path::Path::new(&cdev)).map_err(|e| format!("open {cdev}: {e}"))?;
    let bind = dev.bind_iommufd(&fd).map(|id| format!("devid {id}"));
    let bound = bind.is_ok();
    rep.setup.push(setup_step("VFIO_DEVICE_BIND_IOMMUFD", bind));
    if !bound {
        return Err("VFIO_DEVICE_BIND_IOMMUFD failed".into());
    }
    let ioas = fd.ioas_alloc();
    rep.setup.push(setup_step("IOMMU_IOAS_ALLOC", ioas.map(|id| format!("ioas {id}"))));
    let ioas = ioas.map_err(|e| format!("IOMMU_IOAS_ALLOC: {e}"))?;
    let att = dev.attach_iommufd_pt(ioas);
    rep.setup.push(setup_step("VFIO_DEVICE_ATTACH_IOMMUFD_PT", att.map(|pt| format!("pt {pt}"))));
    att.map_err(|e| format!("VFIO_DEVICE_ATTACH_IOMMUFD_PT: {e}"))?;

    // What QEMU would read: BAR2's region info with its capabilities, and
    // the MSI-X capability from config space.
    let (_, reply) = dev.region_info_with_caps(2).map_err(|e| format!("region info 2: {e}"))?;
    let region = region_facts(&reply).map_err(|e| format!("region info 2: {e}"))?;
    let cfg_off = dev.region_info(VFIO_PCI_CONFIG_REGION_INDEX).map_err(|e| format!("config region: {e}"))?.offset;
    let mut config = vec![0u8; 256];
    dev.file().read_exact_at(&mut config, cfg_off).map_err(|e| format!("config read: {e}"))?;
    let msix = msix_table(&config);
    rep.msix = msix;
    let mmaps = qemu_mmaps(&region, msix.filter(|t| t.bar == 2), PAGE);
    rep.region = Some(region);
    rep.plan = Plan::new(bar.len, mmaps);
    rep.debugfs = Some(match fs::metadata(debugfs_path(&ivs)) {
        Ok(_) => format!("{} readable: translations checked", debugfs_path(&ivs)),
        Err(e) => format!("{}: {e}: translations not checked", debugfs_path(&ivs)),
    });

    rep.msix_device = Some(msix_device(&fd, ioas));

    let mut b =
        GuestBackend { fd: &fd, ioas, dev: &dev, cfg_off, bdf: ivs.clone(), bufs: Vec::new(), areas: Vec::new() };
    rep.steps = run_cases(&mut b, &rep.plan);
    for s in &rep.steps {
        println!("nr-ranges-guest: iommufd {}: {}: {} {}", s.case, s.op, s.answer(), s.note);
    }
    drop(b);
    let det = dev.detach_iommufd_pt().map(|()| String::new());
    rep.setup.push(setup_step("VFIO_DEVICE_DETACH_IOMMUFD_PT", det));
    Ok(())
}

/// QEMU's e1000e (MSI-X in BAR3): bound to vfio-pci, opened through its
/// cdev and bound to the same iommufd, to read each memory BAR's region
/// info and capability chain as QEMU would; nothing is mapped.
fn msix_device(fd: &Iommufd, ioas: u32) -> MsixDevice {
    let mut d = MsixDevice { name: "e1000e".into(), ..Default::default() };
    if let Err(e) = msix_device_facts(fd, ioas, &mut d) {
        d.error = Some(e);
    }
    d
}

fn msix_device_facts(fd: &Iommufd, ioas: u32, d: &mut MsixDevice) -> GResult<()> {
    let bdf = find_pci("0x8086", "0x10d3").ok_or("no e1000e")?;
    d.bdf = bdf.clone();
    let bars =
        parse_resource(&sysfs(&format!("/sys/bus/pci/devices/{bdf}/resource"))?).map_err(|e| format!("{bdf}: {e}"))?;
    bind_vfio_pci(&bdf)?;
    let cdev = cdev_of(&bdf)?;
    let dev = Device::open_cdev(std::path::Path::new(&cdev)).map_err(|e| format!("open {cdev}: {e}"))?;
    dev.bind_iommufd(fd).map_err(|e| format!("{bdf} VFIO_DEVICE_BIND_IOMMUFD: {e}"))?;
    dev.attach_iommufd_pt(ioas).map_err(|e| format!("{bdf} VFIO_DEVICE_ATTACH_IOMMUFD_PT: {e}"))?;
    let cfg_off = dev.region_info(VFIO_PCI_CONFIG_REGION_INDEX).map_err(|e| format!("config region: {e}"))?.offset;
    let mut config = vec![0u8; 256];
    dev.file().read_exact_at(&mut config, cfg_off).map_err(|e| format!("config read: {e}"))?;
    d.msix = msix_table(&config);
    for b in bars.iter().filter(|b| b.kind == kernel_lab::proto::BarType::Mem) {
        let (_, reply) = dev.region_info_with_caps(b.index).map_err(|e| format!("region info {}: {e}", b.index))?;
        let r = region_facts(&reply).map_err(|e| format!("region info {}: {e}", b.index))?;
        let table = d.msix.filter(|t| t.bar == b.index);
        let mmaps = qemu_mmaps(&r, table, PAGE);
        let plain = kernel_lab::iommufd::qemu::RegionFacts { msix_mappable: false, ..r.clone() };
        let without = qemu_mmaps(&plain, table, PAGE);
        d.bars.push(BarAreas { index: b.index, region: r, mmaps, without_msix_mappable: without });
    }
    let _ = dev.detach_iommufd_pt();
    Ok(())
}
