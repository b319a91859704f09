//! Importer mode (`nrlab.mode=importer`): ivshmem to vfio-pci, edu to the
//! nrlab_importer fixture; shapes through export, attach, map and edu DMA;
//! then revocation. See `kernel_lab::importer`.

use crate::*;
use kernel_lab::importer::abi::{
    NrlabAttach, NrlabDistance, NrlabDma, NrlabEntry, NrlabGather, NrlabIova, NrlabMap, NrlabStatus, GATHER_BYTES,
    IOVA_READ, MAX_DMA, MAX_ENTRIES, NRLAB_IOCTL_ATTACH, NRLAB_IOCTL_DETACH, NRLAB_IOCTL_DISTANCE, NRLAB_IOCTL_DMA,
    NRLAB_IOCTL_GATHER, NRLAB_IOCTL_IOVA, NRLAB_IOCTL_MAP, NRLAB_IOCTL_STATUS,
};
use kernel_lab::importer::{
    classify, pattern, read_plan, shapes, ImporterReport, Read, RevStep, ShapeResult, DEV_NODE, MODULE_FILE,
};
use kernel_lab::revocation::{Action, ImporterState, RevocationBackend};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// An open file of the fixture's device node: one attachment.
pub(crate) struct Fixture(File);

/// A map's answer and the DMA entries it copied.
type Mapped = (Box<NrlabMap>, Vec<(u64, u64)>);

impl Fixture {
    /// Opens another file of the fixture (another attachment slot).
    pub(crate) fn open() -> GResult<Self> {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEV_NODE)
            .map(Fixture)
            .map_err(|e| format!("open {DEV_NODE}: {e}"))
    }
    /// One ioctl: `arg` goes in, the fixture's answer comes back in it.
    fn call<T: IntoBytes + FromBytes>(&self, code: u32, name: &str, mut arg: Box<T>) -> GResult<Box<T>> {
        uapi::ioctl::ioctl_iowr(self.0.as_fd(), code, arg.as_mut_bytes()).map_err(|e| format!("{name}: {e}"))?;
        Ok(arg)
    }
    pub(crate) fn attach(&self, fd: i32) -> GResult<Box<NrlabAttach>> {
        self.call(NRLAB_IOCTL_ATTACH, "NRLAB_IOCTL_ATTACH", Box::new(NrlabAttach { fd, ..Default::default() }))
    }
    /// Maps and keeps the mapping; the copied DMA entries.
    pub(crate) fn map_keep(&self) -> GResult<Mapped> {
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
    pub(crate) fn detach(&self) -> GResult<NrlabStatus> {
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
    /// edu reads each (DMA address, bytes) chunk into consecutive bytes:
    /// the status and the bytes.
    pub(crate) fn gather(&self, chunks: &[(u64, u32)]) -> GResult<(i32, Vec<u8>)> {
        let mut arg = Box::new(NrlabGather::new_zeroed());
        arg.count = chunks.len() as u32;
        for (slot, &(addr, len)) in arg.src.iter_mut().zip(chunks) {
            *slot = NrlabEntry { addr, len: u64::from(len) };
        }
        let n: usize = chunks.iter().map(|c| c.1 as usize).sum();
        let g = self.call(NRLAB_IOCTL_GATHER, "NRLAB_IOCTL_GATHER", arg)?;
        Ok((g.st.err, g.data.get(..n.min(GATHER_BYTES)).unwrap_or_default().to_vec()))
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
    let keep = ["p2p", "dmar", "nrlab", "acs", "edu", "dma-buf", "dmabuf", "vfio", "iommu", "warn", "bug", "oops"];
    let mut out: Vec<String> = crate::kmsg()
        .into_iter()
        .filter(|m| {
            let l = m.to_ascii_lowercase();
            keep.iter().any(|k| l.contains(k))
        })
        .collect();
    out.truncate(200);
    out
}

pub(crate) fn get_ranges(dev: &Device, region: u32, ranges: &[(u64, u64)]) -> Result<OwnedFd, String> {
    let ranges: Vec<uapi::DmaRange> = ranges.iter().map(|&(o, l)| uapi::DmaRange::new(o, l)).collect();
    crate::export(dev, region, O_RDWR_CLOEXEC, &ranges)
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

/// The importer lab's guest, set up: ivshmem on vfio-pci, edu on the
/// fixture, the vfio device open.
pub(crate) struct Lab {
    /// edu's BDF.
    pub edu: String,
    /// IOMMU groups: bdf -> members.
    pub groups: Vec<(String, String)>,
    /// The fixture's first file.
    pub fx: Fixture,
    /// `domain << 16 | bus << 8 | devfn` of ivshmem, the fixture's provider id.
    pub id: u64,
    /// `pci_p2pdma_distance(ivshmem, edu)`, or the errno.
    pub distance: i32,
    /// Kept open for the device's life.
    pub _container: Container,
    /// Kept open for the device's life.
    pub _group: Group,
    /// ivshmem's vfio device (None once closed by the revocation sequence).
    pub dev: Option<Device>,
    /// ivshmem as bound.
    pub info: DeviceInfo,
    /// BAR2's region offset in the device fd.
    pub region_off: u64,
    /// BAR2.
    pub bar: kernel_lab::proto::BarInfo,
}

/// Binds, loads and opens what every importer-side mode needs.
pub(crate) fn setup() -> GResult<Lab> {
    load_modules()?;
    let ivs = find_pci("0x1af4", "0x1110").ok_or("no ivshmem-plain")?;
    let edu = find_pci("0x1234", "0x11e8").ok_or("no edu")?;
    // ivshmem to vfio-pci; edu stays out of vfio.
    let d = format!("/sys/bus/pci/devices/{ivs}");
    bind_vfio_pci(&ivs)?;
    let groups = [&ivs, &edu]
        .iter()
        .map(|b| (b.to_string(), group_of(b).map(|g| g.1).unwrap_or_else(|| "no iommu group".into())))
        .collect();
    // The fixture binds edu at load.
    let path = format!("/lib/modules/{MODULE_FILE}");
    let f = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty())
        .map_err(|e| format!("finit_module(nrlab_importer): {e}"))?;
    let fx = Fixture::open().map_err(|e| format!("{e} (did the fixture bind edu {edu}?)"))?;
    // pci_p2pdma_distance(ivshmem, edu): also prints the kernel's lines.
    let id = {
        let p: Vec<&str> = ivs.split([':', '.']).collect();
        let h = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
        (h(p[0]) << 16) | (h(p[1]) << 8) | (h(p[2]) << 3) | h(p[3])
    };
    let dist = fx.distance(id)?;
    let distance = if dist.st.err == 0 { dist.distance } else { dist.st.err };

    let (g, _) = group_of(&ivs).ok_or_else(|| format!("{ivs} has no iommu group"))?;
    let container = Container::open().map_err(|e| format!("open /dev/vfio/vfio: {e}"))?;
    let (group, dev) = open_vfio_device(&container, &ivs, g, true).map_err(|e| match e {
        // The multifunction topologies' finding (FINDINGS F5).
        VfioOpenError::SetContainer(_) => format!("{} (group {g} not viable: edu shares it?)", e.describe(&ivs)),
        _ => e.describe(&ivs),
    })?;
    let bars = parse_resource(&sysfs(&format!("{d}/resource"))?).map_err(|e| format!("{ivs}: {e}"))?;
    let bar = bars.iter().find(|b| b.index == 2).copied().ok_or("ivshmem has no BAR2")?;
    let info = DeviceInfo { name: "ivshmem-plain".into(), bdf: ivs.clone(), group: g, page_size: 4096, bars };
    let region_off = dev.region_info(2).map_err(|e| format!("region info 2: {e}"))?.offset;
    Ok(Lab {
        edu,
        groups,
        fx,
        id,
        distance,
        _container: container,
        _group: group,
        dev: Some(dev),
        info,
        region_off,
        bar,
    })
}

pub fn run(rep: &mut ImporterReport) -> GResult<()> {
    let cmdline = fs::read_to_string("/proc/cmdline").map_err(|e| format!("read /proc/cmdline: {e}"))?;
    rep.topology =
        cmdline.split_whitespace().find_map(|w| w.strip_prefix("nrlab.topology=")).unwrap_or("?").to_string();
    let only: Option<Vec<String>> = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("nrlab.shapes="))
        .map(|s| s.split(',').map(String::from).collect());
    let revoke = cmdline_u64(&cmdline, "revoke", 1)? != 0;
    let mut lab = setup()?;
    rep.edu_bdf = lab.edu.clone();
    rep.groups = lab.groups.clone();
    rep.distance = Some(lab.distance);
    rep.ivshmem = Some(lab.info.clone());
    let (fx, id, region_off, bar) = (&lab.fx, lab.id, lab.region_off, lab.bar);
    let dv = lab.dev.as_ref().expect("opened");
    for sh in shapes(bar.len, only.as_deref()) {
        let mut r = run_shape(dv, 2, region_off, fx, &sh.ranges);
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
        revocation(&mut lab.dev, region_off, &lab.fx, &mut rep.rev);
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
