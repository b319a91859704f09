//! The iommufd lab (`kernel-lab iommufd`, guest `nrlab.mode=iommufd`):
//! iommufd as VMMs use it, on a real kernel. ivshmem-plain is opened
//! through its vfio device cdev, bound to an iommufd and attached to an
//! IOAS; dma-bufs of BAR2 are mapped into the IOAS with
//! `IOMMU_IOAS_MAP_FILE`: one range, several ranges, revocation while
//! mapped, and the requests QEMU builds from the BAR's region info.
//!
//! The cases are defined once ([`run_cases`] over an [`IommufdBackend`]):
//! the guest runs them on the kernel, the host on kmod-shim's iommufd
//! model ([`shim::ShimBackend`]), and [`compare`] lines the two up step by
//! step.
//!
//! - [`qemu`]: QEMU's area computation and its MAP_FILE offsets (pure).
//! - [`shim`]: kmod-shim as the backend, the prediction.

use serde::{Deserialize, Serialize};

use crate::proto::KernelErrno;

pub mod qemu;
pub mod shim;

/// The kernel command-line word selecting the mode.
pub const MODE: &str = "nrlab.mode=iommufd";
/// The page size the lab's guests run with.
pub const PAGE: u64 = 4096;
/// `IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE`, IOVA chosen by
/// the IOAS: the flags QEMU and the selftest map with.
pub const MAP_FLAGS: u32 = uapi::iommufd::IOMMU_IOAS_MAP_READABLE | uapi::iommufd::IOMMU_IOAS_MAP_WRITEABLE;

/// What the guest reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IommufdReport {
    /// `uname -r` of the guest.
    pub kernel: String,
    /// The guest failed before or during the cases.
    pub error: Option<String>,
    /// Why the kernel cannot run the cases (no `/dev/iommu`, no vfio
    /// cdev): "not available", not a failure.
    pub unavailable: Option<String>,
    /// ivshmem-plain's address.
    pub bdf: String,
    /// BAR2's start and length from sysfs.
    pub bar2: (u64, u64),
    /// The cdev path used.
    pub cdev: String,
    /// BAR2's region info, capabilities decoded.
    pub region: Option<qemu::RegionFacts>,
    /// The device's MSI-X table, if it has one.
    pub msix: Option<qemu::MsixTable>,
    /// The plan both sides run.
    pub plan: Plan,
    /// A device with an MSI-X table (QEMU's e1000e), its regions as vfio
    /// reports them and QEMU's areas for each: informational, not compared.
    #[serde(default)]
    pub msix_device: Option<MsixDevice>,
    /// Whether the Intel IOMMU debugfs (`domain_translation_struct` of the
    /// device) could be read: translations were checked.
    pub debugfs: Option<String>,
    /// The setup ioctls (open, bind, IOAS alloc, attach) and their answers.
    pub setup: Vec<Step>,
    /// Every case step.
    pub steps: Vec<Step>,
    /// Kernel log lines worth keeping.
    pub dmesg: Vec<String>,
    /// Sanitizer reports in the kernel log.
    pub sanitizer: Vec<String>,
}

/// A second vfio device, with MSI-X, opened through its cdev only to read
/// what QEMU reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MsixDevice {
    /// QEMU's device model.
    pub name: String,
    /// Its address.
    pub bdf: String,
    /// Its MSI-X table, from config space.
    pub msix: Option<qemu::MsixTable>,
    /// Per memory BAR.
    pub bars: Vec<BarAreas>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// One BAR's region info and QEMU's areas for it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BarAreas {
    /// The BAR (region index).
    pub index: u32,
    /// Its region info.
    pub region: qemu::RegionFacts,
    /// QEMU's areas (`region->mmaps`).
    pub mmaps: Vec<(u64, u64)>,
    /// QEMU's areas were `MSIX_MAPPABLE` absent.
    pub without_msix_mappable: Vec<(u64, u64)>,
}

/// The inputs of the cases, fixed by the guest from the real device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// BAR2's length.
    pub bar_len: u64,
    /// QEMU's areas for the real BAR2 (`region->mmaps`).
    pub qemu_bar2: Vec<(u64, u64)>,
    /// QEMU's areas for a BAR2 with an MSI-X table in its middle and no
    /// `MSIX_MAPPABLE`: the sparse-mmap shape of two areas.
    pub qemu_two_areas: Vec<(u64, u64)>,
}

impl Plan {
    /// The plan for a BAR2 of `bar_len` bytes whose real areas (from its
    /// region info and MSI-X table) are `qemu_bar2`.
    pub fn new(bar_len: u64, qemu_bar2: Vec<(u64, u64)>) -> Self {
        let region = qemu::RegionFacts { flags: uapi::VFIO_REGION_INFO_FLAG_MMAP, size: bar_len, ..Default::default() };
        let table = qemu::MsixTable { bar: 2, offset: bar_len / 2, entries: 16 };
        Self { bar_len, qemu_bar2, qemu_two_areas: qemu::qemu_mmaps(&region, Some(table), PAGE) }
    }
}

/// One ioctl (or action) of a case and its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The case.
    pub case: String,
    /// What was done, e.g. `MAP_FILE start 0x0 length 0x1000000`.
    pub op: String,
    /// 0, or the errno (positive).
    pub errno: i32,
    /// For a translation check: whether the IOVA is translated (`None`:
    /// not checked).
    pub translated: Option<bool>,
    /// Informational (IOVA, dma-buf size), not compared.
    pub note: String,
}

impl Step {
    /// The answer as text: `ok`, an errno name, or the translation.
    pub fn answer(&self) -> String {
        let base = if self.errno == 0 { "ok".to_string() } else { KernelErrno(self.errno).to_string() };
        match self.translated {
            Some(t) => format!("{base}, translated {t}"),
            None => base,
        }
    }
}

/// Where the cases run: the kernel (guest) or kmod-shim (host). Buffers
/// and areas are the backend's indices; errors are positive errnos.
pub trait IommufdBackend {
    /// `VFIO_DEVICE_FEATURE(DMA_BUF)` GET of `ranges` of BAR2: a buffer
    /// index and its size.
    fn export(&mut self, ranges: &[(u64, u64)]) -> Result<(usize, u64), i32>;
    /// `IOMMU_IOAS_MAP_FILE` of buffer `buf`: an area index and its IOVA.
    fn map_file(&mut self, buf: usize, start: u64, length: u64) -> Result<(usize, u64), i32>;
    /// `IOMMU_IOAS_UNMAP` of the whole area.
    fn unmap(&mut self, area: usize) -> Result<(), i32>;
    /// Whether the area's first IOVA is translated by the device's domain;
    /// `None` when the backend cannot see it.
    fn translated(&mut self, area: usize) -> Option<bool>;
    /// `PCI_COMMAND_MEMORY` on or off through config space.
    fn memory(&mut self, on: bool) -> Result<(), i32>;
    /// `close()` of the buffer's fd.
    fn close(&mut self, buf: usize) -> Result<(), i32>;
}

struct Recorder<'a> {
    b: &'a mut dyn IommufdBackend,
    steps: Vec<Step>,
    case: String,
}

impl Recorder<'_> {
    fn push(&mut self, op: String, errno: i32, translated: Option<bool>, note: String) {
        self.steps.push(Step { case: self.case.clone(), op, errno, translated, note });
    }
    fn export(&mut self, ranges: &[(u64, u64)]) -> Option<usize> {
        let op = format!("DMA_BUF GET nr_ranges {} {}", ranges.len(), ranges_text(ranges));
        match self.b.export(ranges) {
            Ok((buf, size)) => {
                self.push(op, 0, None, format!("size {size:#x}"));
                Some(buf)
            }
            Err(e) => {
                self.push(op, e, None, String::new());
                None
            }
        }
    }
    fn map(&mut self, what: &str, buf: usize, start: u64, length: u64) -> Option<usize> {
        let op = format!("MAP_FILE{what} start {start:#x} length {length:#x}");
        match self.b.map_file(buf, start, length) {
            Ok((area, iova)) => {
                self.push(op, 0, None, format!("iova {iova:#x}"));
                Some(area)
            }
            Err(e) => {
                self.push(op, e, None, String::new());
                None
            }
        }
    }
    fn translated(&mut self, what: &str, area: usize) {
        let t = self.b.translated(area);
        self.push(format!("translated? ({what})"), 0, t, String::new());
    }
    fn unmap(&mut self, what: &str, area: usize) {
        let e = self.b.unmap(area).err().unwrap_or(0);
        self.push(format!("UNMAP{what}"), e, None, String::new());
    }
    fn memory(&mut self, on: bool) {
        let e = self.b.memory(on).err().unwrap_or(0);
        self.push(format!("PCI_COMMAND_MEMORY {}", if on { "on" } else { "off" }), e, None, String::new());
    }
    fn close(&mut self, buf: usize) {
        let e = self.b.close(buf).err().unwrap_or(0);
        self.push("close(dma-buf)".into(), e, None, String::new());
    }
}

fn ranges_text(r: &[(u64, u64)]) -> String {
    r.iter().map(|(o, l)| format!("[{o:#x}+{l:#x}]")).collect::<Vec<_>>().join("")
}

/// `n` one-page ranges of BAR2, every other page: a dma-buf of `n` ranges
/// whose bytes are `n` pages.
pub fn scattered(n: u64) -> Vec<(u64, u64)> {
    (0..n).map(|i| (2 * i * PAGE, PAGE)).collect()
}

/// The cases, in order, on `b`: every step's answer.
pub fn run_cases(b: &mut dyn IommufdBackend, plan: &Plan) -> Vec<Step> {
    let mut r = Recorder { b, steps: Vec::new(), case: String::new() };
    let len = plan.bar_len;

    // One range, the whole BAR: maps, and the domain translates it.
    r.case = "one range".into();
    if let Some(buf) = r.export(&[(0, len)]) {
        if let Some(area) = r.map("", buf, 0, len) {
            r.translated("the area", area);
            r.unmap("", area);
        }
        // A sub-range at an offset maps too.
        if let Some(area) = r.map("", buf, PAGE, 2 * PAGE) {
            r.unmap("", area);
        }
        r.close(buf);
    }

    // Several ranges: vfio_pci_dma_buf_iommufd_map() refuses nr_ranges != 1,
    // whatever span of the dma-buf is asked for.
    for n in [2, 3, 8] {
        r.case = format!("{n} ranges");
        if let Some(buf) = r.export(&scattered(n)) {
            if let Some(area) = r.map("", buf, 0, n * PAGE) {
                r.unmap("", area);
            }
            if let Some(area) = r.map(" (first range only)", buf, 0, PAGE) {
                r.unmap("", area);
            }
            r.close(buf);
        }
    }

    // Revocation while mapped, then re-enabled.
    r.case = "revoke while mapped".into();
    if let Some(buf) = r.export(&[(0, len)]) {
        if let Some(area) = r.map("", buf, 0, len) {
            r.translated("mapped", area);
            r.memory(false);
            r.translated("revoked", area);
            if let Some(a2) = r.map(" (revoked)", buf, 0, len) {
                r.unmap("", a2);
            }
            r.memory(true);
            r.translated("re-enabled, old area", area);
            if let Some(a2) = r.map(" (re-enabled, old area kept)", buf, 0, len) {
                r.translated("new area", a2);
                r.unmap(" (new area)", a2);
            }
            r.unmap(" (old area)", area);
            if let Some(a3) = r.map(" (after unmap)", buf, 0, len) {
                r.translated("mapped again", a3);
                r.unmap("", a3);
            }
        }
        r.close(buf);
    }

    // QEMU: one dma-buf of nr_mmaps ranges, then one MAP_FILE per area at
    // the area's region offset; for the two-area shape also at the offset
    // the area really has in the dma-buf.
    for (name, areas) in [("QEMU, BAR2 as it is", &plan.qemu_bar2), ("QEMU, two sparse areas", &plan.qemu_two_areas)] {
        r.case = format!("{name} (nr_mmaps {})", areas.len());
        if areas.is_empty() {
            continue;
        }
        if let Some(buf) = r.export(areas) {
            for (i, &(start, length)) in qemu::qemu_map_files(areas).iter().enumerate() {
                if let Some(a) = r.map(&format!(" area {i} as QEMU"), buf, start, length) {
                    r.unmap("", a);
                }
            }
            if areas.len() > 1 {
                for (i, &(start, length)) in qemu::dma_buf_offsets(areas).iter().enumerate().skip(1) {
                    if let Some(a) = r.map(&format!(" area {i} at its dma-buf offset"), buf, start, length) {
                        r.unmap("", a);
                    }
                }
            }
            r.close(buf);
        }
    }
    r.steps
}

/// One step of the kernel beside kmod-shim's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// The case.
    pub case: String,
    /// The step.
    pub op: String,
    /// The kernel's answer.
    pub kernel: String,
    /// kmod-shim's answer.
    pub shim: String,
    /// Whether they agree (a translation the kernel could not check
    /// agrees with anything).
    pub agree: bool,
}

/// The kernel's steps beside the model's, by position (both ran the same
/// plan, so a missing or extra step is itself a disagreement).
pub fn compare(kernel: &[Step], shim: &[Step]) -> Vec<Check> {
    let n = kernel.len().max(shim.len());
    (0..n)
        .map(|i| match (kernel.get(i), shim.get(i)) {
            (Some(k), Some(s)) => {
                let same_op = k.case == s.case && k.op == s.op;
                let translated_ok = k.translated.is_none() || k.translated == s.translated;
                Check {
                    case: k.case.clone(),
                    op: if same_op { k.op.clone() } else { format!("{} / shim: {}", k.op, s.op) },
                    kernel: k.answer(),
                    shim: s.answer(),
                    agree: same_op && k.errno == s.errno && translated_ok,
                }
            }
            (Some(k), None) => Check {
                case: k.case.clone(),
                op: k.op.clone(),
                kernel: k.answer(),
                shim: "(no such step)".into(),
                agree: false,
            },
            (None, Some(s)) => Check {
                case: s.case.clone(),
                op: s.op.clone(),
                kernel: "(no such step)".into(),
                shim: s.answer(),
                agree: false,
            },
            (None, None) => unreachable!("i < max(len)"),
        })
        .collect()
}

/// `kernel-lab iommufd --report`: one kernel's run beside kmod-shim.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IommufdLabReport {
    /// The kernel's ABI name.
    pub kernel: String,
    /// Package, version and suite (or lab build).
    pub kernel_package: String,
    /// `ran`, `not available: ...` or `error: ...`.
    pub verdict: String,
    /// Seconds for the boot.
    pub boot_seconds: f64,
    /// What the guest sent.
    pub guest: IommufdReport,
    /// Every step, kernel beside kmod-shim.
    pub checks: Vec<Check>,
    /// Steps on which they disagree.
    pub disagreements: usize,
    /// kmod-shim's invariants after the cases (`ok` or the violation).
    pub shim_invariants: String,
}

impl IommufdLabReport {
    /// The exit status: 1 on a disagreement, a guest error or a broken
    /// model invariant; 0 otherwise (also when the kernel has no iommufd).
    pub fn exit_code(&self) -> u64 {
        u64::from(self.disagreements > 0 || self.guest.error.is_some() || self.shim_invariants != "ok")
    }

    /// The guest's report compared with kmod-shim's prediction.
    pub fn compare(kernel: String, kernel_package: String, boot_seconds: f64, guest: IommufdReport) -> Self {
        let (shim_steps, inv) = shim::predict(&guest);
        let checks = if guest.unavailable.is_some() { Vec::new() } else { compare(&guest.steps, &shim_steps) };
        let disagreements = checks.iter().filter(|c| !c.agree).count();
        let verdict = match (&guest.error, &guest.unavailable) {
            (Some(e), _) => format!("error: {e}"),
            (None, Some(u)) => format!("not available: {u}"),
            (None, None) => "ran".into(),
        };
        Self {
            kernel,
            kernel_package,
            verdict,
            boot_seconds,
            guest,
            checks,
            disagreements,
            shim_invariants: inv.err().unwrap_or_else(|| "ok".into()),
        }
    }

    /// The report as markdown: facts, setup, then every step.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let g = &self.guest;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# iommufd lab: {}
",
            self.kernel_package
        );
        let _ = writeln!(
            s,
            "verdict: {}; boot {:.0} s; {} steps, {} disagreements with kmod-shim; model invariants {}\n",
            self.verdict,
            self.boot_seconds,
            self.checks.len(),
            self.disagreements,
            self.shim_invariants
        );
        let _ = writeln!(s, "- ivshmem-plain {} BAR2 {:#x}+{:#x}, cdev {}", g.bdf, g.bar2.0, g.bar2.1, g.cdev);
        if let Some(r) = &g.region {
            let _ = writeln!(
                s,
                "- BAR2 region info: flags {:#x}, size {:#x}, caps {:?}, sparse areas {:?}, MSIX_MAPPABLE {}",
                r.flags, r.size, r.caps, r.sparse, r.msix_mappable
            );
        }
        let _ = writeln!(s, "- MSI-X table: {:?}", g.msix);
        let _ = writeln!(
            s,
            "- QEMU's areas for BAR2: {:?} (nr_mmaps {}); the two-area shape: {:?}",
            g.plan.qemu_bar2,
            g.plan.qemu_bar2.len(),
            g.plan.qemu_two_areas
        );
        if let Some(d) = &g.debugfs {
            let _ = writeln!(s, "- Intel IOMMU debugfs: {d}");
        }
        if let Some(d) = &g.msix_device {
            let err = d.error.as_deref().map(|e| format!("; {e}")).unwrap_or_default();
            let _ = writeln!(s, "- {} {}: MSI-X table {:?}{err}", d.name, d.bdf, d.msix);
            for BarAreas { index: i, region: r, mmaps, without_msix_mappable: without } in &d.bars {
                let _ = writeln!(
                    s,
                    "  - BAR{i}: flags {:#x}, size {:#x}, caps {:?}, MSIX_MAPPABLE {}: QEMU's areas {:?} (nr_mmaps {}); \
                     without MSIX_MAPPABLE {:?}",
                    r.flags,
                    r.size,
                    r.caps,
                    r.msix_mappable,
                    mmaps,
                    mmaps.len(),
                    without
                );
            }
        }
        for st in &g.setup {
            let _ = writeln!(s, "- setup {}: {} {}", st.op, st.answer(), st.note);
        }
        for l in &g.sanitizer {
            let _ = writeln!(s, "- sanitizer: `{l}`");
        }
        if self.checks.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "\n| case | step | kernel | kmod-shim | agree | note (kernel) |\n| --- | --- | --- | --- | --- | --- |"
        );
        for (i, c) in self.checks.iter().enumerate() {
            let note = g.steps.get(i).map(|x| x.note.as_str()).unwrap_or("");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                c.case,
                c.op,
                c.kernel,
                c.shim,
                if c.agree { "yes" } else { "**NO**" },
                note
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(op: &str, errno: i32, t: Option<bool>) -> Step {
        Step { case: "c".into(), op: op.into(), errno, translated: t, note: "iova 0x1".into() }
    }

    #[test]
    fn compare_lines_up_errno_and_translation() {
        let k = [step("MAP_FILE", 0, None), step("translated?", 0, None), step("MAP_FILE", 95, None)];
        let s = [step("MAP_FILE", 0, None), step("translated?", 0, Some(true)), step("MAP_FILE", 19, None)];
        let c = compare(&k, &s);
        assert_eq!(c.iter().map(|c| c.agree).collect::<Vec<_>>(), [true, true, false]);
        assert_eq!(c[2].kernel, "EOPNOTSUPP");
        assert_eq!(c[2].shim, "ENODEV");
        let k = [step("translated?", 0, Some(false))];
        assert!(!compare(&k, &[step("translated?", 0, Some(true))])[0].agree, "a checked translation counts");
        let c = compare(&k, &[]);
        assert!(!c[0].agree && c[0].shim == "(no such step)", "a missing step disagrees");
        assert!(!compare(&[step("UNMAP", 0, None)], &[step("MAP_FILE", 0, None)])[0].agree, "another op disagrees");
    }

    #[test]
    fn the_two_area_plan_is_qemus_split_around_the_msix_page() {
        let p = Plan::new(16 << 20, vec![(0, 16 << 20)]);
        assert_eq!(p.qemu_two_areas, vec![(0, 8 << 20), ((8 << 20) + PAGE, (8 << 20) - PAGE)]);
        assert_eq!(scattered(3), vec![(0, PAGE), (2 * PAGE, PAGE), (4 * PAGE, PAGE)]);
    }
}
