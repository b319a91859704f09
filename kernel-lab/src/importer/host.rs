//! The importer lab's host side: the build chroot and the fixture module
//! (cached per kernel), QEMU per topology, kmod-shim's prediction, and the
//! comparison.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kmod_shim::{Config, DmaOps, Fidelity, ImporterDesc, IommuModel, P2pMapType, Shim};
use serde::{Deserialize, Serialize};

use crate::debian::{debian_mirror, Kernel};
use crate::host::{progress, run_bounded, LabError};
use crate::importer::{read_plan, Expect, ImporterReport, Placement, RevStep, Topology, MODULE_FILE};
use crate::qemu::Qemu;
use crate::revocation::{self, Action, ImporterState, RevocationBackend};

/// The fixture's source, built into the lab so that the cache key is the
/// source itself.
pub const SOURCE: &str = include_str!("../../importer/nrlab_importer.c");
/// Its ABI header (mirrored by `crate::importer::abi`).
pub const HEADER: &str = include_str!("../../importer/nrlab_importer.h");
/// Its Kbuild file.
pub const KBUILD: &str = include_str!("../../importer/Kbuild");
const CHROOT_MARKER: &str = ".nr-ranges-chroot";

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> LabError {
    move |e| LabError::Io(format!("{what}: {e}"))
}

/// FNV-1a, 64 bits: the module cache key (source + Kbuild, then the
/// header).
pub fn source_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in SOURCE.bytes().chain(KBUILD.bytes()).chain(HEADER.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `/proc` mounted in the chroot (objtool and apt need it), unmounted on
/// drop.
struct ProcMount(PathBuf);

impl ProcMount {
    fn new(chroot: &Path) -> Result<Self, LabError> {
        let p = chroot.join("proc");
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
        fs::create_dir_all(&p).map_err(io_err("create chroot /proc"))?;
        nix::mount::mount(Some("proc"), &p, Some("proc"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|e| LabError::Io(format!("mount proc on {}: {e} (the importer build needs root)", p.display())))?;
        Ok(Self(p))
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The debootstrap suite and the extra apt source for a kernel's suite.
fn chroot_suites(kernel_suite: &str) -> (String, Option<String>) {
    match kernel_suite.strip_suffix("-backports") {
        Some(base) => (base.to_string(), Some(kernel_suite.to_string())),
        None => (kernel_suite.to_string(), None),
    }
}

fn ensure_debootstrap(work: &Path) -> Result<(), LabError> {
    if Path::new("/usr/sbin/debootstrap").exists() {
        return Ok(());
    }
    progress("installing debootstrap with apt (host tool of the importer build)");
    let mut c = Command::new("apt-get");
    c.args(["-q", "-y", "install", "--no-install-recommends", "debootstrap"]).env("DEBIAN_FRONTEND", "noninteractive");
    run_bounded(c, "apt-get install debootstrap", 600, &work.join("apt-debootstrap.log"))
        .map_err(|e| LabError::ToolMissing { tool: "debootstrap", package: "debootstrap", why: e.to_string() })
}

/// The build chroot for `kernel`: `$CACHE/importer/<abi>/chroot`, a
/// `debootstrap --variant=minbase` of the kernel's suite with make and
/// `linux-headers-<abi>=<version>` (which pulls the kernel's gcc).
pub fn ensure_chroot(root: &Path, kernel: &Kernel) -> Result<PathBuf, LabError> {
    let base = root.join("importer").join(&kernel.pkg.abi);
    let dir = base.join("chroot");
    let headers = format!("linux-headers-{}={}", kernel.pkg.abi, kernel.pkg.version);
    // gcc-N-for-host does not pull `as` everywhere (trixie): binutils too.
    let marker = format!("{headers} binutils");
    if fs::read_to_string(dir.join(CHROOT_MARKER)).is_ok_and(|m| m.trim() == marker) {
        return Ok(dir);
    }
    fs::create_dir_all(&base).map_err(io_err(format!("create {}", base.display())))?;
    ensure_debootstrap(&base)?;
    let stage = base.join(format!(".staging.chroot.{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    let mirror = debian_mirror()?;
    let (suite, extra) = chroot_suites(&kernel.pkg.suite);
    progress(format!("debootstrap --variant=minbase {suite} (build chroot for {}; about a minute)", kernel.pkg.abi));
    let mut c = Command::new("debootstrap");
    c.args(["--variant=minbase", "--include=make", &suite]).arg(&stage).arg(&mirror);
    run_bounded(c, "debootstrap", 1200, &base.join("debootstrap.log"))?;
    let mut sources = format!("deb {mirror} {suite} main\n");
    if let Some(x) = &extra {
        sources.push_str(&format!("deb {mirror} {x} main\n"));
    }
    fs::write(stage.join("etc/apt/sources.list"), sources).map_err(io_err("write chroot sources.list"))?;
    // The unstable suite's Release may be past its Valid-Until.
    fs::write(stage.join("etc/apt/apt.conf.d/99nr-ranges"), "Acquire::Check-Valid-Until \"false\";\n")
        .map_err(io_err("write chroot apt.conf"))?;
    {
        let _proc = ProcMount::new(&stage)?;
        let mut c = Command::new("chroot");
        c.arg(&stage).args(["apt-get", "-q", "-y", "update"]).env("LC_ALL", "C");
        run_bounded(c, "apt-get update (chroot)", 600, &base.join("chroot-apt.log"))?;
        progress(format!("installing {headers} in the chroot"));
        let mut c = Command::new("chroot");
        c.arg(&stage)
            .args(["apt-get", "-q", "-y", "install", "--no-install-recommends", &headers, "binutils"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C");
        run_bounded(c, "apt-get install linux-headers (chroot)", 1200, &base.join("chroot-headers.log"))?;
        let mut c = Command::new("chroot");
        c.arg(&stage).args(["apt-get", "clean"]);
        let _ = run_bounded(c, "apt-get clean", 60, &base.join("chroot-clean.log"));
    }
    fs::write(stage.join(CHROOT_MARKER), format!("{marker}\n")).map_err(io_err("write chroot marker"))?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&stage, &dir).map_err(io_err(format!("publish {}", dir.display())))?;
    Ok(dir)
}

/// The fixture built against `kernel` in its chroot, cached by source hash:
/// `$CACHE/importer/<abi>/module-<hash>/nrlab_importer.ko`.
pub fn ensure_module(root: &Path, kernel: &Kernel) -> Result<PathBuf, LabError> {
    let hash = source_hash();
    if let Some(tree) = &kernel.build {
        return ensure_module_lab(root, kernel, tree, &hash);
    }
    let base = root.join("importer").join(&kernel.pkg.abi);
    let ko = base.join(format!("module-{hash}")).join(MODULE_FILE);
    if ko.is_file() {
        return Ok(ko);
    }
    let chroot = ensure_chroot(root, kernel)?;
    let build = chroot.join(format!("build-{hash}"));
    let _ = fs::remove_dir_all(&build);
    fs::create_dir_all(&build).map_err(io_err("create the module build directory"))?;
    fs::write(build.join("nrlab_importer.c"), SOURCE).map_err(io_err("write the module source"))?;
    fs::write(build.join("Kbuild"), KBUILD).map_err(io_err("write Kbuild"))?;
    fs::write(build.join("nrlab_importer.h"), HEADER).map_err(io_err("write the module header"))?;
    progress(format!("building {MODULE_FILE} for {} in the chroot", kernel.pkg.abi));
    {
        let _proc = ProcMount::new(&chroot)?;
        let mut c = Command::new("chroot");
        c.arg(&chroot)
            .arg("make")
            .arg("-C")
            .arg(format!("/usr/src/linux-headers-{}", kernel.pkg.abi))
            .arg(format!("M=/build-{hash}"))
            .arg("modules")
            .env("LC_ALL", "C");
        run_bounded(c, "make (nrlab_importer.ko)", 300, &base.join("module-build.log"))?;
    }
    let out = ko.parent().expect("has a parent");
    let stage = base.join(format!(".staging.module.{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage).map_err(io_err("create module staging"))?;
    fs::copy(build.join(MODULE_FILE), stage.join(MODULE_FILE)).map_err(io_err("copy the built module"))?;
    let _ = fs::remove_dir_all(out);
    fs::rename(&stage, out).map_err(io_err("publish the module"))?;
    let _ = fs::remove_dir_all(&build);
    Ok(ko)
}

/// The fixture built against a lab kernel's own build tree with the host's
/// make and gcc (the compiler that built that kernel), cached in the lab
/// kernel's entry: `<entry>/importer/module-<hash>/nrlab_importer.ko`.
fn ensure_module_lab(
    root: &Path,
    kernel: &Kernel,
    tree: &crate::lab_kernel::BuildTree,
    hash: &str,
) -> Result<PathBuf, LabError> {
    let files = [("nrlab_importer.c", SOURCE), ("Kbuild", KBUILD), ("nrlab_importer.h", HEADER)];
    let m = crate::lab_kernel::ExternalModule { cache: "importer", hash, files: &files, ko: MODULE_FILE };
    crate::lab_kernel::ensure_external_module(root, kernel, tree, &m)
}

/// The root port address used by the switch and multifunction placements.
pub const ROOT_PORT_BDF: &str = "0000:00:03.0";

/// The lab machine for `topo`: its CPU, kernel command line, ivshmem size
/// and the two devices placed as the topology says.
pub fn machine(topo: &Topology, vmlinuz: &Path, initramfs: &Path, run_dir: &Path, shapes: Option<&[String]>) -> Qemu {
    let mut q = Qemu::new(vmlinuz, initramfs, run_dir)
        .cpu(&topo.cpu)
        .append(&format!("{} nrlab.mode=importer nrlab.topology={}", topo.cmdline, topo.name))
        .ivshmem_size(&topo.ivshmem_size);
    if topo.acs_off {
        q = q.append(&format!("pci=disable_acs_redir={ROOT_PORT_BDF}"));
    }
    if let Some(s) = shapes {
        q = q.append(&format!("nrlab.shapes={}", s.join(",")));
    }
    let ivs = "ivshmem-plain,memdev=hostmem";
    let edu = "edu,dma_mask=0xffffffffffffffff";
    let rp = "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x3";
    let devs: Vec<String> = match topo.placement {
        Placement::RootComplex => vec![format!("{ivs},bus=pcie.0,addr=0x4"), format!("{edu},bus=pcie.0,addr=0x5")],
        Placement::Switch => vec![
            rp.into(),
            "x3130-upstream,id=up1,bus=rp1".into(),
            "xio3130-downstream,id=dn1,bus=up1,chassis=2,slot=1".into(),
            "xio3130-downstream,id=dn2,bus=up1,chassis=3,slot=2".into(),
            format!("{ivs},bus=dn1"),
            format!("{edu},bus=dn2"),
        ],
        Placement::Multifunction => {
            vec![rp.into(), format!("{ivs},bus=rp1,addr=0.0,multifunction=on"), format!("{edu},bus=rp1,addr=0.1")]
        }
    };
    devs.into_iter().fold(q, Qemu::device)
}

// ---------------------------------------------------------------------------
// kmod-shim's prediction and the comparison.

/// One compared field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Shape or revocation step.
    pub what: String,
    /// Field.
    pub field: String,
    /// The kernel's answer.
    pub kernel: String,
    /// kmod-shim's prediction.
    pub shim: String,
    /// Equal?
    pub agree: bool,
    /// For a disagreement already settled in FINDINGS.md: its id and gist.
    pub explained: Option<String>,
}

/// The FINDINGS.md entry that explains a disagreement, if any. Only the
/// environment facts are left: F1 (VT-d's EADDRINUSE), F2 (reset without a
/// reset method) and F3 (no decode while the memory bit is clear) are
/// modelled by kmod-shim now and agree; F5 (shared IOMMU group) is a
/// topology error, not a check.
fn explain(topo: &Topology, c: &Check) -> Option<&'static str> {
    match () {
        _ if topo.expect == Expect::BusAddr && (c.field == "edu reads" || c.field == "old address") => {
            Some("F4: QEMU sends all DMA through the vIOMMU; no switch-local P2P")
        }
        _ => None,
    }
}

fn errno_str(e: Option<i32>) -> String {
    match e {
        None => "-".into(),
        Some(0) => "0".into(),
        Some(e) => crate::proto::KernelErrno(-e).to_string(),
    }
}

/// The importer kmod-shim models for a topology (aperture: any; the IOVA
/// path's addresses are compared relative to the first entry).
pub fn importer_desc(expect: Expect) -> ImporterDesc {
    let iommu = ImporterDesc::iommu_peer(0x1_0000_0000, 1 << 39);
    match expect {
        Expect::NotSupported => ImporterDesc { map_type: P2pMapType::NotSupported, ..iommu },
        Expect::IovaPath => iommu,
        Expect::PerRangeDirect => ImporterDesc { dma: DmaOps::Direct, ..iommu },
        Expect::BusAddr => ImporterDesc::bus_peer(),
    }
}

/// What kmod-shim predicts for one shape.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShimShape {
    /// Export: size or errno.
    pub export: String,
    /// Attach errno.
    pub attach_err: Option<i32>,
    /// Map errno.
    pub map_err: Option<i32>,
    /// Entries.
    pub entries: Vec<(u64, u64)>,
    /// Map path.
    pub path: String,
    /// For each planned read: whether the peer reaches the right BAR byte.
    pub reads_ok: Vec<bool>,
}

/// Whether the exporting device has a reset method, as the guest saw it:
/// the `VFIO_DEVICE_RESET` step's note carries `VFIO_DEVICE_INFO`'s
/// `VFIO_DEVICE_FLAGS_RESET` and the ioctl's answer. Without that step
/// (`--no-revoke`), assume one (kmod-shim's default).
pub fn reset_works(rep: &ImporterReport) -> bool {
    let Some(step) = rep.rev.iter().find(|r| r.step == "VFIO_DEVICE_RESET") else { return true };
    !(step.note.contains("reset flag false") || step.note.contains("VFIO_DEVICE_RESET: EINVAL"))
}

/// kmod-shim configured as the lab's guest: `fidelity` (the kernel's code,
/// or the fixed code of the patched lab kernel), the exporter's BAR table,
/// QEMU's `-device intel-iommu` (VT-d), and the device's reset capability
/// as reported.
fn shim_for(rep: &ImporterReport, fidelity: Fidelity) -> Option<Shim> {
    let dev = rep.ivshmem.as_ref()?.to_validator();
    let mut s = Shim::new(dev, Config { fidelity, ..Config::default() });
    s.set_iommu_model(IommuModel::IntelVtd);
    s.set_reset_supported(reset_works(rep));
    Some(s)
}

fn export_req(ranges: &[(u64, u64)]) -> Vec<u8> {
    let ranges: Vec<uapi::DmaRange> = ranges.iter().map(|&(o, l)| uapi::DmaRange::new(o, l)).collect();
    uapi::OwnedRequest::well_formed(2, crate::conformance::gen::O_RDWR_CLOEXEC, &ranges)
        .map(|r| r.written_bytes())
        .unwrap_or_default()
}

/// kmod-shim's prediction for `ranges` on this topology.
pub fn predict_shape(rep: &ImporterReport, expect: Expect, ranges: &[(u64, u64)], fidelity: Fidelity) -> ShimShape {
    let mut p = ShimShape::default();
    let Some(mut s) = shim_for(rep, fidelity) else { return p };
    let bar_start = rep.ivshmem.as_ref().and_then(|i| i.bars.iter().find(|b| b.index == 2)).map_or(0, |b| b.start);
    let imp = s.add_importer(importer_desc(expect));
    let bytes = export_req(ranges);
    let Ok(req) = uapi::Request::decode(&bytes) else { return p };
    let buf = match s.export(&req) {
        Ok(b) => b,
        Err(e) => {
            p.export = e.errno().to_string();
            return p;
        }
    };
    p.export = format!("lseek(SEEK_END)={}", s.dma_buf(buf).map_or(0, |d| d.size));
    let att = match s.attach(buf, imp) {
        Ok(a) => a,
        Err(e) => {
            p.attach_err = Some(-e.errno().code());
            return p;
        }
    };
    p.attach_err = Some(0);
    match s.map(att) {
        Err(e) => p.map_err = Some(-e.errno().code()),
        Ok(m) => {
            p.map_err = Some(0);
            p.entries = s.sg_table(m).map(|t| t.pairs()).unwrap_or_default();
            p.path = format!("{:?}", s.mapping(m).map(|x| x.path()));
            for (_, bar_off, addr, _) in read_plan(ranges, &p.entries) {
                p.reads_ok.push(s.peer_reach(imp, addr).is_some_and(|(pa, _)| pa == bar_start + bar_off));
            }
        }
    }
    p
}

/// Addresses relative to the first entry (the IOVA path: the kernel's and
/// the model's allocators place the span differently).
fn relative(e: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let base = e.first().map_or(0, |x| x.0);
    e.iter().map(|&(a, l)| (a.wrapping_sub(base), l)).collect()
}

/// Compares every shape and the revocation steps with kmod-shim in
/// `fidelity` (the mode that models the kernel under test); returns the
/// checks.
pub fn compare(rep: &ImporterReport, topo: &Topology, fidelity: Fidelity) -> Vec<Check> {
    let mut out = Vec::new();
    let mut add = |what: &str, field: &str, kernel: String, shim: String| {
        let agree = kernel == shim;
        out.push(Check { what: what.into(), field: field.into(), kernel, shim, agree, explained: None });
    };
    for r in &rep.shapes {
        let p = predict_shape(rep, topo.expect, &r.ranges, fidelity);
        add(&r.name, "export", r.export.clone(), p.export.clone());
        add(&r.name, "attach", errno_str(r.attach_err), errno_str(p.attach_err));
        add(&r.name, "map", errno_str(r.map_err), errno_str(p.map_err));
        if r.map_err == Some(0) || p.map_err == Some(0) {
            add(&r.name, "entries", r.total_entries.to_string(), p.entries.len().to_string());
            let (k, s) = if topo.expect == Expect::IovaPath {
                (relative(&r.entries), relative(&p.entries))
            } else {
                (r.entries.clone(), p.entries.iter().copied().take(crate::importer::abi::MAX_ENTRIES).collect())
            };
            let fmt = |v: &[(u64, u64)]| v.iter().map(|(a, l)| format!("{a:#x}+{l:#x}")).collect::<Vec<_>>().join(" ");
            let field = if topo.expect == Expect::IovaPath { "(addr-first, len)" } else { "(addr, len)" };
            add(&r.name, field, fmt(&k), fmt(&s));
            let kr: Vec<String> = r.reads.iter().map(|x| x.result.clone()).collect();
            let sr: Vec<String> =
                p.reads_ok.iter().map(|&ok| if ok { "ok".to_string() } else { "not the BAR byte".into() }).collect();
            add(&r.name, "edu reads", kr.join(", "), sr.join(", "));
        }
    }
    // The revocation steps are values: compared field by field, rendered
    // only for the report.
    let reads_bar = |r: &Option<String>| r.as_deref().map(|r| r == "ok");
    let render_read = |r: Option<bool>| format!("{:?}", r.map(|ok| if ok { "reads the BAR" } else { "does not" }));
    for (k, s) in rep.rev.iter().zip(predict_revocation(rep, topo.expect, fidelity)) {
        let what = format!("revocation: {}", k.step);
        let mut add_eq = |field: &str, agree: bool, kernel: String, shim: String| {
            out.push(Check { what: what.clone(), field: field.into(), kernel, shim, agree, explained: None });
        };
        add_eq(
            "invalidations",
            k.invalidations == s.invalidations,
            k.invalidations.to_string(),
            s.invalidations.to_string(),
        );
        add_eq("remap", k.remap_err == s.remap_err, errno_str(k.remap_err), errno_str(s.remap_err));
        add_eq(
            "mapping kept",
            k.mapped_before_remap == s.mapped_before_remap,
            k.mapped_before_remap.to_string(),
            s.mapped_before_remap.to_string(),
        );
        let (kr, sr) = (reads_bar(&k.old_read), reads_bar(&s.old_read));
        add_eq("old address", kr == sr, render_read(kr), render_read(sr));
    }
    for c in out.iter_mut().filter(|c| !c.agree) {
        c.explained = explain(topo, c).map(str::to_string);
    }
    out
}

/// kmod-shim as the revocation sequence's backend: the exporter's device,
/// one attachment and its kept mapping.
struct ShimRevocation {
    s: Shim,
    imp: kmod_shim::ImporterId,
    att: kmod_shim::AttachmentId,
    cur: Option<kmod_shim::MappingId>,
    bar_start: u64,
}

impl RevocationBackend for ShimRevocation {
    fn map_keep(&mut self) -> (i32, Option<u64>) {
        match self.s.map(self.att) {
            Ok(m) => {
                self.cur = Some(m);
                (0, self.s.sg_table(m).and_then(|t| t.pairs().first().map(|e| e.0)))
            }
            Err(e) => (-e.errno().code(), None),
        }
    }

    fn state(&mut self) -> Option<ImporterState> {
        Some(ImporterState {
            invalidations: self.s.events().invalidations as u32,
            mapped: self.cur.is_some_and(|m| self.s.mapping(m).is_some()),
        })
    }

    // peer_reach: translation and the BAR's decode (nothing while the
    // memory bit is clear).
    fn peer_read(&mut self, dma_addr: u64) -> String {
        if self.s.peer_reach(self.imp, dma_addr).is_some_and(|(pa, _)| pa == self.bar_start + 0x1000) {
            "ok".to_string()
        } else {
            "not the BAR byte".into()
        }
    }

    fn act(&mut self, action: Action) -> Option<String> {
        match action {
            Action::Observe => {}
            Action::MemoryOff => self.s.set_memory_enabled(false),
            Action::MemoryOn => self.s.set_memory_enabled(true),
            // EINVAL (no reset method) leaves everything as it was.
            Action::Reset => {
                let _ = self.s.try_reset();
            }
            Action::CloseDevice => self.s.close_device(),
        }
        None
    }
}

/// The guest's revocation sequence on kmod-shim.
pub fn predict_revocation(rep: &ImporterReport, expect: Expect, fidelity: Fidelity) -> Vec<RevStep> {
    let Some(mut s) = shim_for(rep, fidelity) else { return Vec::new() };
    let bar_start = rep.ivshmem.as_ref().and_then(|i| i.bars.iter().find(|b| b.index == 2)).map_or(0, |b| b.start);
    let imp = s.add_importer(importer_desc(expect));
    let bytes = export_req(&[(0x1000, 0x4000)]);
    let Ok(req) = uapi::Request::decode(&bytes) else { return Vec::new() };
    let Ok(buf) = s.export(&req) else { return Vec::new() };
    let Ok(att) = s.attach(buf, imp) else { return Vec::new() };
    revocation::run(&mut ShimRevocation { s, imp, att, cur: None, bar_start })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::importer::{shapes, topologies};

    #[test]
    fn topologies_have_unique_names_and_commands() {
        let t = topologies();
        let mut names: Vec<_> = t.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), t.len());
        let sw = t.iter().find(|t| t.placement == Placement::Switch).unwrap();
        let args: Vec<String> = machine(sw, Path::new("/k"), Path::new("/i"), Path::new("/r"), None)
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        for want in ["x3130-upstream", "xio3130-downstream", "edu,dma_mask", "-cpu EPYC", "nrlab.mode=importer"] {
            assert!(line.contains(want), "{want} missing from {line}");
        }
    }

    #[test]
    fn shim_predicts_the_iova_span_for_two_ranges_in_fixed_mode_only() {
        let rep = ivshmem_report();
        let sh = shapes(16 << 20, None);
        let p = predict_shape(&rep, Expect::IovaPath, &sh[0].ranges, Fidelity::Kernel);
        assert_eq!(p.map_err, Some(0));
        assert_eq!(p.entries.len(), 1);
        // Fidelity::Kernel: the second range collides with the first, and
        // VT-d (QEMU's intel-iommu) answers EADDRINUSE (FINDINGS F1).
        let p = predict_shape(&rep, Expect::IovaPath, &sh[1].ranges, Fidelity::Kernel);
        assert_eq!(p.map_err, Some(-validator::Errno::EADDRINUSE.code()));
        let p = predict_shape(&rep, Expect::BusAddr, &sh[1].ranges, Fidelity::Kernel);
        assert_eq!(p.entries, vec![(0x80_0001_0000, 0x2000), (0x80_0020_0000, 0x3000)]);
        assert!(p.reads_ok.iter().all(|&x| x));
        let rev = predict_revocation(&rep, Expect::IovaPath, Fidelity::Kernel);
        assert_eq!(rev.len(), 6);
    }

    /// A guest report with ivshmem's 16 MiB BAR2 and nothing else.
    fn ivshmem_report() -> ImporterReport {
        use crate::proto::{BarInfo, BarType, DeviceInfo};
        ImporterReport {
            ivshmem: Some(DeviceInfo {
                name: "ivshmem-plain".into(),
                bdf: "0000:00:04.0".into(),
                group: 1,
                page_size: 4096,
                bars: vec![BarInfo { index: 2, kind: BarType::Mem, start: 0x80_0000_0000, len: 16 << 20 }],
            }),
            ..Default::default()
        }
    }

    fn rc_report(reset_note: &str) -> ImporterReport {
        ImporterReport { rev: vec![RevStep::note("VFIO_DEVICE_RESET", reset_note)], ..ivshmem_report() }
    }

    /// FINDINGS F2: the guest's reset answer configures the shim.
    #[test]
    fn reset_without_a_reset_method_keeps_the_mapping() {
        let rep = rc_report("VFIO_DEVICE_RESET: EINVAL (reset flag false)");
        assert!(!reset_works(&rep));
        let rev = predict_revocation(&rep, Expect::IovaPath, Fidelity::Kernel);
        let reset = rev.iter().find(|r| r.step == "VFIO_DEVICE_RESET").unwrap();
        // Clear + set: two invalidations; the failed reset adds none.
        assert_eq!((reset.invalidations, reset.mapped_before_remap), (2, true));
        assert_eq!(reset.old_read.as_deref(), Some("ok"));
        let rep = rc_report("VFIO_DEVICE_RESET: ok (reset flag true)");
        assert!(reset_works(&rep));
        let rev = predict_revocation(&rep, Expect::IovaPath, Fidelity::Kernel);
        let reset = rev.iter().find(|r| r.step == "VFIO_DEVICE_RESET").unwrap();
        assert_eq!((reset.invalidations, reset.mapped_before_remap), (4, false));
    }

    /// FINDINGS F3: with the memory bit clear nothing is read, even on
    /// dma-direct where the old address reads the BAR again once it is set.
    #[test]
    fn memory_disabled_bar_reads_nothing_on_dma_direct() {
        let rep = rc_report("VFIO_DEVICE_RESET: EINVAL (reset flag false)");
        let rev = predict_revocation(&rep, Expect::PerRangeDirect, Fidelity::Kernel);
        let read = |name: &str| rev.iter().find(|r| r.step == name).and_then(|r| r.old_read.clone());
        assert_eq!(read("memory bit cleared").as_deref(), Some("not the BAR byte"));
        assert_eq!(read("memory bit set again").as_deref(), Some("ok"));
    }
}
