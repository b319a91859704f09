//! The fault sweep (`kernel-lab fault-sweep`, issue 14), which has no C file
//! of its own: the kernel's `CONFIG_FAULT_INJECTION` (`lib/fault-inject.c`,
//! fail-nth in `fs/proc/base.c`) driven from the guest, and
//! `kernel-lab/faultmod/nrlab_fault.c` for the calls fail-nth cannot reach.
//!
//! Shared by the guest (`nrlab.mode=fault`, which fills a
//! [`FaultGuestReport`]) and the host, which attributes every fail-nth point
//! to the kernel call that failed ([`attribute`], from the stack that
//! fault injection prints), decides IOVA leaks from the clean probe maps
//! ([`iova_leak`]), drives kmod-shim through the same operation with the
//! same failure ([`shim_outcome`]) and compares ([`compare`]).

use std::collections::BTreeMap;

use kmod_shim::{check_invariants, Anomaly, Config, FaultPlan, FaultSite, Fidelity, ImporterDesc, IommuModel, Shim};
use serde::{Deserialize, Serialize};

use crate::proto::DeviceInfo;
use crate::report::{DefectVerdict, FaultOpResult, FaultPointResult, FaultSweepReport, KmemleakGroup, OverrideResult};

/// The fixture's module file in the initramfs.
pub const MODULE_FILE: &str = "nrlab_fault.ko";
/// Its source, built into the lab so that the cache key is the source.
pub const SOURCE: &str = include_str!("../faultmod/nrlab_fault.c");
/// Its Kbuild file.
pub const KBUILD: &str = include_str!("../faultmod/Kbuild");
/// The fixture's parameters.
pub const PARAMS: &str = "/sys/module/nrlab_fault/parameters";
/// fail-nth of the calling thread (`Documentation/fault-injection`).
pub const FAIL_NTH: &str = "/proc/thread-self/fail-nth";
/// Consecutive N that must not fire before a sweep stops.
pub const STOP_AFTER_MISSES: u32 = 3;
/// The highest N a sweep tries (the hand run's map fired at 1..=8).
pub const MAX_N: u32 = 64;
/// Failing rounds per point: as the hand run, and for `--quick`.
pub const REPEATS_FULL: u32 = 12;
/// See [`REPEATS_FULL`].
pub const REPEATS_QUICK: u32 = 3;
/// The IOMMU page the probes move by.
pub const PAGE: u64 = 4096;

/// FNV-1a, 64 bits, over the fixture's source and Kbuild: its cache key.
pub fn source_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in SOURCE.bytes().chain(KBUILD.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

// ---------------------------------------------------------------------------
// The plan: which operations, on which ranges.

/// One operation the sweep fails from the inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FaultOp {
    /// `VFIO_DEVICE_FEATURE(DMA_BUF | GET)` of [`TWO_RANGES`] of ivshmem's
    /// BAR2: `vfio_pci_core_feature_dma_buf()`.
    Export,
    /// The importer's `NRLAB_IOCTL_ATTACH` of the [`ONE_RANGE`] dma-buf:
    /// `dma_buf_get()` + `dma_buf_dynamic_attach()` → `vfio_pci_dma_buf_attach()`.
    Attach,
    /// The importer's `NRLAB_IOCTL_MAP` of the [`ONE_RANGE`] dma-buf:
    /// `dma_buf_map_attachment()` → `vfio_pci_dma_buf_map()` →
    /// `dma_buf_phys_vec_to_sgt()`.
    Map1,
    /// The same for the [`TWO_RANGES`] dma-buf.
    Map2,
}

impl FaultOp {
    /// Every operation, in sweep order.
    pub const ALL: [FaultOp; 4] = [FaultOp::Export, FaultOp::Attach, FaultOp::Map1, FaultOp::Map2];

    /// The ranges (BAR offset, length) of its dma-buf.
    pub fn ranges(self) -> &'static [(u64, u64)] {
        match self {
            FaultOp::Export | FaultOp::Map2 => &TWO_RANGES,
            FaultOp::Attach | FaultOp::Map1 => &ONE_RANGE,
        }
    }

    /// The exporter function the filtered sweep requires on the stack
    /// (`require-start`/`-end`): only the allocations it makes count, so
    /// that N names the same kernel call on every attempt.
    pub fn filter_function(self) -> &'static str {
        match self {
            FaultOp::Export => "vfio_pci_core_feature_dma_buf",
            FaultOp::Attach => "dma_buf_dynamic_attach",
            FaultOp::Map1 | FaultOp::Map2 => "dma_buf_phys_vec_to_sgt",
        }
    }

    /// Whether a failure can leak IOVA space (the probes mean something).
    pub fn maps(self) -> bool {
        matches!(self, FaultOp::Map1 | FaultOp::Map2)
    }

    /// Whether it needs the importer fixture.
    pub fn needs_importer(self) -> bool {
        self != FaultOp::Export
    }

    /// The probe's dma-buf: one range as long as the operation's dma-buf,
    /// so that the probe's IOVA span has the size (and the IOVA rcache
    /// order) of the span a failure may leak, and maps on every kernel
    /// (defect 1 fails two ranges on the IOVA path as shipped).
    pub fn probe_ranges(self) -> &'static [(u64, u64)] {
        match self {
            FaultOp::Export | FaultOp::Attach => &[],
            FaultOp::Map1 => &ONE_RANGE,
            FaultOp::Map2 => &PROBE_TWO_PAGES,
        }
    }
}

impl std::fmt::Display for FaultOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FaultOp::Export => "export (2-range GET)",
            FaultOp::Attach => "attach (1-range dma-buf)",
            FaultOp::Map1 => "map (1-range dma-buf)",
            FaultOp::Map2 => "map (2-range dma-buf)",
        })
    }
}

/// The one-page dma-buf of the hand run: BAR2 [0, +4K).
pub const ONE_RANGE: [(u64, u64); 1] = [(0, 0x1000)];
/// The two-page one: BAR2 [8K, +4K) then [0, +4K), out of order on purpose.
pub const TWO_RANGES: [(u64, u64); 2] = [(0x2000, 0x1000), (0, 0x1000)];
/// The probe of [`FaultOp::Map2`]: BAR2 [0, +8K), one range.
pub const PROBE_TWO_PAGES: [(u64, u64); 1] = [(0, 0x2000)];

/// A kprobe override of `nrlab_fault.ko`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OverrideKind {
    /// `link_fail=1`: the first `dma_iova_link()` of a [`FaultOp::Map1`]
    /// fails (defect 2).
    FirstIovaLink,
    /// `try_fail=1 map_pass=1 map_fail=1`: [`FaultOp::Map2`] on the
    /// per-range path, its second `dma_map_phys()` failing (defect 4).
    PerRangeSecondMapPhys,
}

impl OverrideKind {
    /// Both, in run order.
    pub const ALL: [OverrideKind; 2] = [OverrideKind::FirstIovaLink, OverrideKind::PerRangeSecondMapPhys];

    /// The operation it fails.
    pub fn op(self) -> FaultOp {
        match self {
            OverrideKind::FirstIovaLink => FaultOp::Map1,
            OverrideKind::PerRangeSecondMapPhys => FaultOp::Map2,
        }
    }

    /// The module parameters that arm it, in write order (the countdown
    /// that gates the others last).
    pub fn params(self) -> &'static [(&'static str, &'static str)] {
        match self {
            OverrideKind::FirstIovaLink => &[("link_fail", "1")],
            OverrideKind::PerRangeSecondMapPhys => &[("try_fail", "1"), ("map_pass", "1"), ("map_fail", "1")],
        }
    }
}

impl std::fmt::Display for OverrideKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OverrideKind::FirstIovaLink => "first dma_iova_link() fails (-ENOMEM)",
            OverrideKind::PerRangeSecondMapPhys => {
                "per-range path (dma_iova_try_alloc() false), second dma_map_phys() fails"
            }
        })
    }
}

// ---------------------------------------------------------------------------
// What the guest reports.

/// One N of a fail-nth sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SweepPoint {
    /// fail-nth's N.
    pub n: u32,
    /// fail-nth read back 0: the N-th point was reached and failed.
    pub fired: bool,
    /// The operation's answer: 0 or -errno.
    pub err: i32,
    /// The errno came from the fixture's own ioctl, not from the step.
    pub ioctl_failed: bool,
    /// Every kernel log line the attempt produced.
    pub klog: Vec<String>,
    /// The clean probe map afterwards (maps only): 0 or -errno.
    pub probe_err: Option<i32>,
    /// Its first DMA address.
    pub probe_iova: Option<u64>,
}

/// One failing round of a repeat or an override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Round {
    /// The fault fired (fail-nth read back 0, or `fired` went up).
    pub fired: bool,
    /// The operation's answer.
    pub err: i32,
    /// The probe's answer.
    pub probe_err: Option<i32>,
    /// The probe's IOVA.
    pub probe_iova: Option<u64>,
    /// The function names of the fault-injection stack (repeats), so that a
    /// round that failed elsewhere shows.
    pub frames: Vec<String>,
    /// Sanitizer lines of the round.
    pub sanitizer: Vec<String>,
}

/// A failing N repeated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Repeat {
    /// fail-nth's N.
    pub n: u32,
    /// The probe right before the first round.
    pub before: Option<u64>,
    /// The rounds.
    pub rounds: Vec<Round>,
}

/// One operation's sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpSweep {
    /// The operation.
    pub op: FaultOp,
    /// The function fault injection required on the stack (the filtered
    /// sweep; kmemleak's own allocations rejected), or `None`: every
    /// allocation of the ioctl counts, as in the hand run.
    pub filter: Option<String>,
    /// Its answer without a fault.
    pub baseline_err: i32,
    /// The probe without a fault.
    pub baseline_iova: Option<u64>,
    /// When the operation fails even without a fault (the 2-range map on
    /// `lab-shipped`, defect 1): that failure repeated, a probe after each.
    pub baseline_rounds: Vec<Round>,
    /// N = 1.. until [`STOP_AFTER_MISSES`] misses.
    pub points: Vec<SweepPoint>,
    /// Every failing point of a map, repeated.
    pub repeats: Vec<Repeat>,
    /// Why the sweep ended early, if it did.
    pub note: Option<String>,
}

/// One kprobe override, repeated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideRun {
    /// Which.
    pub kind: OverrideKind,
    /// The probe before the first round.
    pub before: Option<u64>,
    /// The rounds.
    pub rounds: Vec<Round>,
    /// The module's `fired` after the last round.
    pub fired: u32,
    /// Every kernel log line of the first round (the trace).
    pub klog: Vec<String>,
}

/// The export with the fd table full: `dma_buf_fd()` fails with EMFILE
/// after `dma_buf_export()` succeeded (defect 5's path, `err_dma_buf`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FdFullRun {
    /// Descriptors opened to fill the table.
    pub filled: u32,
    /// Each round's answer.
    pub errs: Vec<i32>,
    /// Every kernel log line of the rounds and of the deferred release.
    pub klog: Vec<String>,
}

/// A sanitizer line and where in the run it appeared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SanitizerLine {
    /// The step (operation and N, override round, kmemleak scan, ...).
    pub context: String,
    /// The line.
    pub line: String,
}

/// The guest's report in fault mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FaultGuestReport {
    /// `uname -r`.
    pub kernel: String,
    /// Set when the guest could not run.
    pub error: Option<String>,
    /// Set when the kernel has no fault injection (no
    /// [`FAIL_NTH`]): why. Nothing else ran.
    pub unavailable: Option<String>,
    /// ivshmem as bound to vfio-pci (kmod-shim's device).
    pub ivshmem: Option<DeviceInfo>,
    /// Failing rounds per point.
    pub repeats: u32,
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// The sweeps, in [`FaultOp::ALL`] order (maps only with the importer).
    pub ops: Vec<OpSweep>,
    /// The overrides (only with `nrlab_fault.ko`).
    pub overrides: Vec<OverrideRun>,
    /// The export with a full fd table.
    pub fd_full: Option<FdFullRun>,
    /// Why some part did not run (no importer, no fault module, ...).
    pub notes: Vec<String>,
    /// `/sys/kernel/debug/kmemleak` after the final scans.
    pub kmemleak: Vec<String>,
    /// Every sanitizer line of the run.
    pub sanitizer: Vec<SanitizerLine>,
}

// ---------------------------------------------------------------------------
// Kernel log lines.

/// Whether a kernel log line is a sanitizer's (KASAN, kmemleak, lockdep,
/// DMA-API debug, a WARNING, a BUG, an oops).
pub fn is_sanitizer_line(line: &str) -> bool {
    const KEYS: [&str; 12] = [
        "KASAN",
        "kmemleak",
        "unreferenced object",
        "lockdep",
        "possible circular locking",
        "possible recursive locking",
        "inconsistent lock state",
        "DMA-API",
        "WARNING:",
        "BUG:",
        "Oops",
        "general protection fault",
    ];
    KEYS.iter().any(|k| line.contains(k))
}

/// One stack frame: `func+0xoff/0xlen [module]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The function.
    pub func: String,
    /// Offset into it.
    pub off: u64,
    /// The module, for a frame outside vmlinux.
    pub module: Option<String>,
}

/// The frame a call-trace line names, if it is one (`? ` frames, which the
/// unwinder only guessed, are not).
pub fn parse_frame(line: &str) -> Option<Frame> {
    // Drop a "<4>" level prefix, a "[ 12.3]" timestamp, and leading blanks.
    let mut s = line.trim_start();
    if let Some(rest) = s.strip_prefix('<').and_then(|r| r.split_once('>')) {
        s = rest.1.trim_start();
    }
    if let Some(rest) = s.strip_prefix('[').and_then(|r| r.split_once(']')) {
        s = rest.1.trim_start();
    }
    if s.starts_with("? ") {
        return None;
    }
    let mut words = s.split_whitespace();
    let sym = words.next()?;
    let (func, rest) = sym.split_once("+0x")?;
    let (off, len) = rest.split_once("/0x")?;
    let off = u64::from_str_radix(off, 16).ok()?;
    u64::from_str_radix(len, 16).ok()?;
    if func.is_empty() || !func.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return None;
    }
    let module = words.next().and_then(|w| w.strip_prefix('[')).and_then(|w| w.strip_suffix(']')).map(String::from);
    Some(Frame { func: func.to_string(), off, module })
}

/// The fault-injection stack of one attempt: the frames after its first
/// `FAULT_INJECTION: forcing a failure.` up to the end of that trace.
/// Empty when none was printed (fault injection is silent for
/// `__GFP_NOWARN` allocations).
pub fn fault_stack(klog: &[String]) -> Vec<Frame> {
    let Some(start) = klog.iter().position(|l| l.contains("FAULT_INJECTION: forcing a failure")) else {
        return Vec::new();
    };
    let mut frames = Vec::new();
    for l in &klog[start + 1..] {
        if l.contains("</TASK>") || (l.contains("FAULT_INJECTION") && !frames.is_empty()) {
            break;
        }
        frames.extend(parse_frame(l));
    }
    frames
}

/// Which fault injector fired: `failslab` or `fail_page_alloc`, from the
/// `name ...` line.
pub fn injector(klog: &[String]) -> Option<String> {
    klog.iter().find_map(|l| {
        let i = l.find("name ")?;
        let w = l[i + 5..].split([',', ' ']).next()?;
        w.starts_with("fail").then(|| w.to_string())
    })
}

/// The kernel call a fail-nth point failed, as far as the stack tells.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KernelSite {
    /// `memdup_array_user()` of the ranges (kmod-shim `Alloc::RangeCopy`).
    RangeCopy,
    /// `kzalloc(priv)` in `vfio_pci_core_feature_dma_buf()` (`Alloc::Priv`).
    Priv,
    /// `kcalloc(phys_vec)` there (`Alloc::PhysVec`).
    PhysVec,
    /// An allocation inside `dma_buf_export()` (`Alloc::DmaBufFile`).
    DmaBufExport,
    /// Inside `dma_buf_fd()` (kmod-shim's `FaultSite::DmaBufFd`).
    DmaBufFd,
    /// `kzalloc(attach)` in `dma_buf_dynamic_attach()` (`Alloc::Attachment`).
    Attachment,
    /// `kzalloc(dma)` in `dma_buf_phys_vec_to_sgt()` (`Alloc::DmaBufDma`).
    DmaBufDma,
    /// `kzalloc(dma->state)` there (`Alloc::IovaState`).
    IovaState,
    /// `sg_alloc_table()` there (`Alloc::SgTable`; defect 3).
    SgTable,
    /// Inside `dma_iova_try_alloc()`: the IOVA allocation (`IovaAlloc`).
    IovaAlloc,
    /// Inside `dma_iova_link()` (a page-table page; `IovaLink`).
    IovaLink,
    /// Inside `dma_map_phys()` (`MapPhys`).
    MapPhys,
    /// A kernel point kmod-shim has no model of: what it is.
    NotModelled(String),
    /// No stack was printed: a `__GFP_NOWARN` allocation, unknown.
    Unattributed,
}

impl KernelSite {
    /// kmod-shim's fault plan for this point in `op`: the step is the
    /// allocation's place in the kernel's order, which the shim counts the
    /// same way ([`shim_alloc_order`]).
    pub fn shim_plan(&self, op: FaultOp) -> Option<FaultPlan> {
        let alloc = |kind: kmod_shim::Alloc| {
            shim_alloc_order(op).iter().position(|&k| k == kind).map(|i| FaultPlan::new(FaultSite::Alloc, i as u64))
        };
        match self {
            KernelSite::RangeCopy => alloc(kmod_shim::Alloc::RangeCopy),
            KernelSite::Priv => alloc(kmod_shim::Alloc::Priv),
            KernelSite::PhysVec => alloc(kmod_shim::Alloc::PhysVec),
            KernelSite::DmaBufExport => alloc(kmod_shim::Alloc::DmaBufFile),
            KernelSite::Attachment => alloc(kmod_shim::Alloc::Attachment),
            KernelSite::DmaBufDma => alloc(kmod_shim::Alloc::DmaBufDma),
            KernelSite::IovaState => alloc(kmod_shim::Alloc::IovaState),
            KernelSite::SgTable => alloc(kmod_shim::Alloc::SgTable),
            KernelSite::DmaBufFd if op == FaultOp::Export => Some(FaultPlan::new(FaultSite::DmaBufFd, 0)),
            KernelSite::IovaAlloc if op.maps() => Some(FaultPlan::new(FaultSite::IovaAlloc, 0)),
            KernelSite::IovaLink if op.maps() => Some(FaultPlan::new(FaultSite::IovaLink, 0)),
            KernelSite::MapPhys if op.maps() => Some(FaultPlan::new(FaultSite::MapPhys, 0)),
            _ => None,
        }
    }
}

impl std::fmt::Display for KernelSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelSite::RangeCopy => f.write_str("memdup_array_user(dma_ranges)"),
            KernelSite::Priv => f.write_str("kzalloc(priv)"),
            KernelSite::PhysVec => f.write_str("kcalloc(priv->phys_vec)"),
            KernelSite::DmaBufExport => f.write_str("dma_buf_export()"),
            KernelSite::DmaBufFd => f.write_str("dma_buf_fd()"),
            KernelSite::Attachment => f.write_str("kzalloc(attach)"),
            KernelSite::DmaBufDma => f.write_str("kzalloc(dma)"),
            KernelSite::IovaState => f.write_str("kzalloc(dma->state)"),
            KernelSite::SgTable => f.write_str("sg_alloc_table()"),
            KernelSite::IovaAlloc => f.write_str("dma_iova_try_alloc()"),
            KernelSite::IovaLink => f.write_str("dma_iova_link()"),
            KernelSite::MapPhys => f.write_str("dma_map_phys()"),
            KernelSite::NotModelled(what) => write!(f, "not modelled: {what}"),
            KernelSite::Unattributed => f.write_str("unattributed (no stack: __GFP_NOWARN)"),
        }
    }
}

/// The allocations kmod-shim counts at `FaultSite::Alloc` during `op`, in
/// order (its crate doc: "counted in the kernel's order").
pub fn shim_alloc_order(op: FaultOp) -> &'static [kmod_shim::Alloc] {
    use kmod_shim::Alloc::*;
    match op {
        FaultOp::Export => &[RangeCopy, Priv, PhysVec, DmaBufFile],
        FaultOp::Attach => &[Attachment],
        FaultOp::Map1 | FaultOp::Map2 => &[DmaBufDma, IovaState, SgTable],
    }
}

/// Functions that are the allocator or fault injection itself: skipped when
/// looking for the caller that asked.
fn is_machinery(func: &str) -> bool {
    const PREFIXES: [&str; 22] = [
        "dump_stack",
        "should_fail",
        "__should_fail",
        "fail_dump",
        "should_failslab",
        "__kmalloc",
        "kmalloc",
        "__kvmalloc",
        "kvmalloc",
        "kmem_cache_alloc",
        "__kmem_cache_alloc",
        "slab_",
        "alloc_pages",
        "__alloc_pages",
        "alloc_frozen_pages",
        "__alloc_frozen_pages",
        "prepare_alloc_pages",
        "folio_alloc",
        "__folio_alloc",
        "kzalloc",
        "krealloc",
        "__vmalloc",
    ];
    PREFIXES.iter().any(|p| func.starts_with(p))
}

/// Attributes one stack (innermost frame first) to a [`KernelSite`]. The
/// two direct allocations of `vfio_pci_core_feature_dma_buf()` and of
/// `dma_buf_phys_vec_to_sgt()` are told apart by call-site offset: see
/// [`attribute_op`], which ranks them; here they come back as
/// `NotModelled("<func>+<off>")` placeholders.
pub fn attribute(frames: &[Frame]) -> KernelSite {
    if frames.is_empty() {
        return KernelSite::Unattributed;
    }
    let callers: Vec<&Frame> = frames.iter().filter(|f| !is_machinery(&f.func)).collect();
    for f in &callers {
        let func = f.func.as_str();
        let site = match func {
            "sg_alloc_table" | "__sg_alloc_table" | "sg_kmalloc" | "sg_alloc_table_chained" => KernelSite::SgTable,
            "memdup_array_user" | "memdup_user" | "vmemdup_user" => KernelSite::RangeCopy,
            "dma_buf_export" => KernelSite::DmaBufExport,
            "dma_buf_fd" => KernelSite::DmaBufFd,
            "dma_buf_dynamic_attach" | "dma_buf_attach" => KernelSite::Attachment,
            "dma_iova_try_alloc" | "iommu_dma_alloc_iova" | "alloc_iova_fast" | "alloc_iova" => KernelSite::IovaAlloc,
            "dma_iova_link" | "iommu_map" | "iommu_map_nosync" | "__iommu_map" => KernelSite::IovaLink,
            "dma_map_phys" => KernelSite::MapPhys,
            "dma_buf_phys_vec_to_sgt" | "vfio_pci_core_feature_dma_buf" => {
                KernelSite::NotModelled(format!("{func}+{:#x}", f.off))
            }
            _ if func.starts_with("debug_dma_")
                || func.starts_with("dma_debug_")
                || func.starts_with("add_dma_entry") =>
            {
                KernelSite::NotModelled("DMA-API debug's bookkeeping".into())
            }
            _ if func.contains("p2pdma") => KernelSite::NotModelled(format!("p2pdma: {func}")),
            _ if f.module.as_deref() == Some("nrlab_importer") => {
                KernelSite::NotModelled(format!("the importer fixture: {func}"))
            }
            _ if func.starts_with("dma_buf_") || func.starts_with("dma_resv_") => {
                KernelSite::NotModelled(format!("dma-buf core: {func}"))
            }
            _ => continue,
        };
        return site;
    }
    let chain: Vec<&str> = callers.iter().take(3).map(|f| f.func.as_str()).collect();
    KernelSite::NotModelled(format!("other: {}", chain.join(" <- ")))
}

/// Attributes every point of one operation. The direct allocations of a
/// function are numbered by call-site offset, lowest first, which is source
/// order for straight-line code: in `vfio_pci_core_feature_dma_buf()`
/// `priv` then `phys_vec`; in `dma_buf_phys_vec_to_sgt()` `dma` then
/// `state`. A third distinct offset stays not modelled.
pub fn attribute_op(stacks: &[Vec<Frame>]) -> Vec<KernelSite> {
    let raw: Vec<KernelSite> = stacks.iter().map(|s| attribute(s)).collect();
    let mut offsets: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let direct = |s: &Vec<Frame>| {
        s.iter()
            .filter(|f| !is_machinery(&f.func))
            .find(|f| f.func == "dma_buf_phys_vec_to_sgt" || f.func == "vfio_pci_core_feature_dma_buf")
            .map(|f| (f.func.clone(), f.off))
    };
    for (s, site) in stacks.iter().zip(&raw) {
        if let (KernelSite::NotModelled(_), Some((func, off))) = (site, direct(s)) {
            let v = offsets.entry(if func == "dma_buf_phys_vec_to_sgt" { "sgt" } else { "feature" }).or_default();
            if !v.contains(&off) {
                v.push(off);
            }
        }
    }
    for v in offsets.values_mut() {
        v.sort_unstable();
    }
    stacks
        .iter()
        .zip(raw)
        .map(|(s, site)| match (&site, direct(s)) {
            (KernelSite::NotModelled(_), Some((func, off))) => {
                let (key, names) = if func == "dma_buf_phys_vec_to_sgt" {
                    ("sgt", [KernelSite::DmaBufDma, KernelSite::IovaState])
                } else {
                    ("feature", [KernelSite::Priv, KernelSite::PhysVec])
                };
                let rank = offsets.get(key).and_then(|v| v.iter().position(|&o| o == off));
                match rank.and_then(|r| names.get(r)) {
                    Some(n) => n.clone(),
                    None => KernelSite::NotModelled(format!("a third allocation in {func} (+{off:#x})")),
                }
            }
            _ => site,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// IOVA leaks from the probes.

/// What the probes say about the IOVA span of failing rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IovaVerdict {
    /// After each of `fails` failures the probe got a new address: the
    /// failing operation kept the span the probe had just given back.
    /// `pages`: how far the probe moved in all, in pages (down positive).
    Leaks {
        /// Net movement of the probe, pages (positive: down).
        pages: i64,
        /// Failing rounds counted.
        fails: usize,
    },
    /// After each failure the probe got the address it had before.
    Returned {
        /// Failing rounds counted.
        fails: usize,
    },
    /// Neither: why.
    Undecided(String),
}

impl IovaVerdict {
    /// `Some(true)` for a leak, `Some(false)` for none, `None` undecided.
    pub fn leaks(&self) -> Option<bool> {
        match self {
            IovaVerdict::Leaks { .. } => Some(true),
            IovaVerdict::Returned { .. } => Some(false),
            IovaVerdict::Undecided(_) => None,
        }
    }
}

impl std::fmt::Display for IovaVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IovaVerdict::Leaks { pages, fails } => {
                write!(f, "leaks: a new probe address after each of {fails} failures ({pages:+} pages in all)")
            }
            IovaVerdict::Returned { fails } => write!(f, "returned: the same probe address after {fails} failures"),
            IovaVerdict::Undecided(why) => write!(f, "undecided: {why}"),
        }
    }
}

/// Decides from the probe before the rounds and each round's probe. In
/// strict IOMMU mode a freed span goes back to the IOVA rcache and the next
/// allocation of its size gets it again, so the failing operation takes the
/// address the probe just freed: if it gives it back, the next probe gets it
/// again; if it keeps it, the next probe gets another one (lower on a fresh
/// domain, anywhere once earlier leaks left holes). Each round counts
/// against the probe right before it, and only rounds that `counts` (the
/// fault fired where it should) are weighed: a round that failed elsewhere
/// moves the probe for its own reason.
pub fn iova_leak(before: Option<u64>, rounds: &[Round], counts: impl Fn(&Round) -> bool) -> IovaVerdict {
    let Some(mut prev) = before else { return IovaVerdict::Undecided("no probe before the rounds".into()) };
    let (mut moved, mut same, mut pages) = (0usize, 0usize, 0i64);
    for r in rounds {
        let Some(p) = r.probe_iova else { return IovaVerdict::Undecided("a probe map failed".into()) };
        if counts(r) {
            if p == prev {
                same += 1;
            } else {
                moved += 1;
                pages += (prev as i64 - p as i64) / PAGE as i64;
            }
        }
        prev = p;
    }
    match (moved, same) {
        (0, 0) => IovaVerdict::Undecided("no round failed at this point".into()),
        (0, fails) => IovaVerdict::Returned { fails },
        (fails, 0) => IovaVerdict::Leaks { pages, fails },
        (m, s) => IovaVerdict::Undecided(format!("the probe moved after {m} failures and stayed after {s}")),
    }
}

// ---------------------------------------------------------------------------
// kmod-shim through the same operation.

/// What kmod-shim does when `plan` fails inside `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimOutcome {
    /// The plan fired (the shim reached that call).
    pub fired: bool,
    /// The operation's answer: 0 or -errno.
    pub err: i32,
    /// IOVA space leaked (`Anomaly::IovaLeak`, or the IOMMU holds space no
    /// mapping accounts for).
    pub iova_leak: bool,
    /// Zero-length `dma_unmap_phys()` calls (what DMA-API debug reports).
    pub spurious_unmaps: u64,
    /// Anomalies and the invariant violation after the operation.
    pub violations: Vec<String>,
}

/// The shim as the lab's guest: ivshmem's BAR table, VT-d.
fn shim_for(dev: &DeviceInfo, fidelity: Fidelity) -> Shim {
    let mut s = Shim::new(dev.to_validator(), Config { fidelity, ..Config::default() });
    s.set_iommu_model(IommuModel::IntelVtd);
    s
}

fn export_request(ranges: &[(u64, u64)]) -> Vec<u8> {
    let ranges: Vec<uapi::DmaRange> = ranges.iter().map(|&(o, l)| uapi::DmaRange::new(o, l)).collect();
    uapi::OwnedRequest::well_formed(2, crate::conformance::gen::O_RDWR_CLOEXEC, &ranges)
        .map(|r| r.written_bytes())
        .unwrap_or_default()
}

/// Runs `op` on kmod-shim with `plan` armed for the operation only (the
/// export before a map and the attach run unfaulted). `per_range` maps
/// without the IOVA API (`dma_iova_try_alloc()` false). `None` when the shim
/// cannot even get to the operation.
pub fn shim_outcome(
    dev: &DeviceInfo,
    fidelity: Fidelity,
    op: FaultOp,
    plan: Option<FaultPlan>,
    per_range: bool,
) -> Option<ShimOutcome> {
    let mut s = shim_for(dev, fidelity);
    let mut desc = crate::importer::host::importer_desc(crate::importer::Expect::IovaPath);
    if per_range {
        desc = ImporterDesc::without_iova_api(desc);
    }
    let imp = s.add_importer(desc);
    let bytes = export_request(op.ranges());
    let req = uapi::Request::decode(&bytes).ok()?;
    let err = if op == FaultOp::Export {
        s.arm_fault(plan);
        match s.export(&req) {
            Ok(_) => 0,
            Err(e) => -e.errno().code(),
        }
    } else if op == FaultOp::Attach {
        let buf = s.export(&req).ok()?;
        s.arm_fault(plan);
        match s.attach(buf, imp) {
            Ok(att) => {
                s.arm_fault(None);
                s.detach(att).ok()?;
                0
            }
            Err(e) => -e.errno().code(),
        }
    } else {
        let buf = s.export(&req).ok()?;
        let att = s.attach(buf, imp).ok()?;
        s.arm_fault(plan);
        match s.map(att) {
            Ok(m) => {
                s.unmap(m);
                0
            }
            Err(e) => -e.errno().code(),
        }
    };
    let fired = plan.is_some() && s.fault_fired().is_some();
    s.arm_fault(None);
    let mut violations: Vec<String> = s.anomalies().iter().map(|a| a.to_string()).collect();
    let mut iova_leak = s.anomalies().iter().any(|a| matches!(a, Anomaly::IovaLeak { .. }));
    if let Err(v) = check_invariants(&s) {
        iova_leak |= matches!(v, kmod_shim::Violation::IommuAccounting { .. });
        if !matches!(v, kmod_shim::Violation::Anomaly(_)) {
            violations.push(v.to_string());
        }
    }
    Some(ShimOutcome { fired, err, iova_leak, spurious_unmaps: s.events().spurious_unmaps, violations })
}

// ---------------------------------------------------------------------------
// The comparison.

/// Which kernel and which model: `lab-shipped` is compared with
/// `Fidelity::Kernel`, `lab-patched` with `Fidelity::Fixed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Variant {
    /// Debian's source as shipped.
    Shipped,
    /// With `kernel-patches/`.
    Patched,
    /// Anything else (a Debian kernel): compared with `Fidelity::Kernel`.
    Other,
}

impl Variant {
    /// The shim's fidelity for this kernel.
    pub fn fidelity(self) -> Fidelity {
        match self {
            Variant::Patched => Fidelity::Fixed,
            Variant::Shipped | Variant::Other => Fidelity::Kernel,
        }
    }
}

fn errno_text(e: i32) -> String {
    if e == 0 {
        "0".into()
    } else {
        crate::proto::KernelErrno(-e).to_string()
    }
}

fn sanitizer_of(lines: &[String]) -> Vec<String> {
    lines.iter().filter(|l| is_sanitizer_line(l)).cloned().collect()
}

/// Whether a repeat failed at the point it repeats: fired, the same
/// answer, and the same stack (the allocation order is not the same on
/// every call: kmemleak's own allocations, the IOVA rcache).
fn same_point(r: &Round, p: &SweepPoint, names: &[String]) -> bool {
    r.fired && r.err == p.err && r.frames == names
}

/// One fail-nth point against the shim.
fn compare_point(
    dev: &DeviceInfo,
    variant: Variant,
    sweep: &OpSweep,
    p: &SweepPoint,
    site: &KernelSite,
) -> FaultPointResult {
    let frames = fault_stack(&p.klog);
    let names: Vec<String> = frames.iter().map(|f| f.func.clone()).collect();
    let repeat = sweep.repeats.iter().find(|r| r.n == p.n);
    let kernel_leak = match (sweep.op.maps(), repeat) {
        (false, _) => None,
        (true, Some(r)) => Some(iova_leak(r.before, &r.rounds, |x| same_point(x, p, &names))),
        (true, None) if p.err != sweep.baseline_err => Some(IovaVerdict::Undecided("not repeated".into())),
        (true, None) => None,
    };
    let shim =
        site.shim_plan(sweep.op).and_then(|plan| shim_outcome(dev, variant.fidelity(), sweep.op, Some(plan), false));
    let mut notes = Vec::new();
    let agree = match &shim {
        None => {
            notes.push(format!("kmod-shim has no such point ({site})"));
            None
        }
        Some(s) if !s.fired => {
            notes.push("kmod-shim never reaches this call in this operation".into());
            Some(false)
        }
        Some(s) => {
            let mut ok = s.err == p.err;
            if !ok {
                notes.push(format!("errno: kernel {}, kmod-shim {}", errno_text(p.err), errno_text(s.err)));
            }
            if let Some(k) = kernel_leak.as_ref().and_then(IovaVerdict::leaks) {
                if k != s.iova_leak {
                    ok = false;
                    notes.push(format!("IOVA leak: kernel {k}, kmod-shim {}", s.iova_leak));
                }
            }
            Some(ok)
        }
    };
    let mut probes = Vec::new();
    if let Some(r) = repeat {
        probes = r.rounds.iter().map(|x| x.probe_iova.map_or("-".to_string(), |a| format!("{a:#x}"))).collect();
        let stray = r.rounds.iter().filter(|x| !same_point(x, p, &names)).count();
        if stray > 0 {
            notes.push(format!("{stray} of {} repeats failed elsewhere (not counted)", r.rounds.len()));
        }
    }
    FaultPointResult {
        n: p.n,
        fired: p.fired,
        site: site.to_string(),
        injector: injector(&p.klog),
        stack: frames.iter().map(|f| format!("{}+{:#x}", f.func, f.off)).collect(),
        kernel_err: errno_text(p.err),
        kernel_iova: kernel_leak.as_ref().map(ToString::to_string),
        repeat_probes: probes,
        sanitizer: sanitizer_of(&p.klog),
        shim_err: shim.as_ref().map(|s| errno_text(s.err)),
        shim_iova_leak: shim.as_ref().map(|s| s.iova_leak),
        shim_violations: shim.map(|s| s.violations).unwrap_or_default(),
        agree,
        notes,
    }
}

/// An override against the shim.
fn compare_override(dev: &DeviceInfo, variant: Variant, o: &OverrideRun) -> OverrideResult {
    let (plan, per_range) = match o.kind {
        OverrideKind::FirstIovaLink => (FaultPlan::new(FaultSite::IovaLink, 0), false),
        OverrideKind::PerRangeSecondMapPhys => (FaultPlan::new(FaultSite::MapPhys, 1), true),
    };
    let shim = shim_outcome(dev, variant.fidelity(), o.kind.op(), Some(plan), per_range);
    let leak = iova_leak(o.before, &o.rounds, |r| r.fired && r.err != 0);
    let dma_api: Vec<String> = o.rounds.iter().flat_map(|r| r.sanitizer.iter().cloned()).collect();
    let errs: Vec<String> = o.rounds.iter().map(|r| errno_text(r.err)).collect();
    let mut notes = Vec::new();
    let agree = shim.as_ref().map(|s| {
        let mut ok = true;
        if let Some(e) = o.rounds.first().map(|r| r.err) {
            if e != s.err {
                ok = false;
                notes.push(format!("errno: kernel {}, kmod-shim {}", errno_text(e), errno_text(s.err)));
            }
        }
        if o.kind == OverrideKind::FirstIovaLink {
            if let Some(k) = leak.leaks() {
                if k != s.iova_leak {
                    ok = false;
                    notes.push(format!("IOVA leak: kernel {k}, kmod-shim {}", s.iova_leak));
                }
            }
        } else {
            let k = dma_api.iter().any(|l| l.contains("DMA-API"));
            if k != (s.spurious_unmaps > 0) {
                ok = false;
                notes.push(format!(
                    "(0, 0) unmap: kernel DMA-API report {k}, kmod-shim zero-length unmaps {}",
                    s.spurious_unmaps
                ));
            }
        }
        ok
    });
    OverrideResult {
        kind: o.kind.to_string(),
        rounds: o.rounds.len(),
        fired: o.fired,
        kernel_errs: errs,
        before: o.before.map(|a| format!("{a:#x}")),
        probes: o.rounds.iter().map(|x| x.probe_iova.map_or("-".to_string(), |a| format!("{a:#x}"))).collect(),
        kernel_iova: leak.to_string(),
        sanitizer: dma_api,
        trace: o.klog.iter().filter(|l| is_sanitizer_line(l) || parse_frame(l).is_some()).take(40).cloned().collect(),
        shim_err: shim.as_ref().map(|s| errno_text(s.err)),
        shim_iova_leak: shim.as_ref().map(|s| s.iova_leak),
        shim_spurious_unmaps: shim.as_ref().map(|s| s.spurious_unmaps),
        agree,
        notes,
    }
}

/// The verdict on one defect: `observed` is whether its symptom showed.
fn verdict(defect: u8, what: &str, variant: Variant, observed: Option<bool>, trace: Vec<String>) -> DefectVerdict {
    let (text, expected) = match (variant, observed) {
        (_, None) => ("not decided".to_string(), true),
        (Variant::Shipped, Some(true)) => ("confirmed on lab-shipped".into(), true),
        (Variant::Shipped, Some(false)) => ("NOT reproduced on lab-shipped".into(), false),
        (Variant::Patched, Some(false)) => ("gone on lab-patched".into(), true),
        (Variant::Patched, Some(true)) => ("STILL PRESENT on lab-patched".into(), false),
        (Variant::Other, Some(o)) => (if o { "present" } else { "absent" }.into(), true),
    };
    DefectVerdict { defect, what: what.into(), observed, verdict: text, as_expected: expected, trace }
}

/// Everything the host makes of a guest report: per operation and point,
/// the overrides, the defect verdicts and the sanitizer lines.
pub fn compare(
    rep: &FaultGuestReport,
    variant: Variant,
) -> Option<(Vec<FaultOpResult>, Vec<OverrideResult>, Vec<DefectVerdict>)> {
    let dev = rep.ivshmem.as_ref()?;
    let mut ops = Vec::new();
    let mut d3 = (None, Vec::new());
    for sweep in &rep.ops {
        let stacks: Vec<Vec<Frame>> = sweep.points.iter().map(|p| fault_stack(&p.klog)).collect();
        let mut sites = attribute_op(&stacks);
        let inferred = infer_range_copy(sweep, &mut sites);
        let baseline = shim_outcome(dev, variant.fidelity(), sweep.op, None, false);
        // A failure without a fault can leak too: its rounds against the
        // shim's unfaulted answer.
        let base_leak = (!sweep.baseline_rounds.is_empty())
            .then(|| iova_leak(sweep.baseline_iova, &sweep.baseline_rounds, |r| r.err != 0));
        let base_shim_leak = baseline.as_ref().map(|b| b.iova_leak);
        let base_agree = match (base_leak.as_ref().and_then(IovaVerdict::leaks), base_shim_leak) {
            (Some(k), Some(s)) => Some(k == s),
            _ => None,
        };
        let mut points = Vec::new();
        for (p, site) in sweep.points.iter().zip(&sites) {
            if !p.fired {
                continue;
            }
            let mut r = compare_point(dev, variant, sweep, p, site);
            if inferred.contains(&p.n) {
                r.notes.push("inferred: memdup_user() allocates with __GFP_NOWARN, so no stack is printed".into());
            }
            // Prefer the filtered sweep's point: its repeats fail where they should.
            if *site == KernelSite::SgTable && sweep.op == FaultOp::Map1 && (sweep.filter.is_some() || d3.0.is_none()) {
                let names: Vec<String> = fault_stack(&p.klog).into_iter().map(|f| f.func).collect();
                let leak = sweep
                    .repeats
                    .iter()
                    .find(|x| x.n == p.n)
                    .map(|x| iova_leak(x.before, &x.rounds, |r| same_point(r, p, &names)));
                let mut trace = r.stack.clone();
                trace.push(format!("probes after each failure: {}", r.repeat_probes.join(" ")));
                d3 = (leak.and_then(|l| l.leaks()), trace);
            }
            points.push(r);
        }
        ops.push(FaultOpResult {
            op: match &sweep.filter {
                Some(f) => format!("{}, only allocations under {f}()", sweep.op),
                None => format!("{}, every allocation of the ioctl", sweep.op),
            },
            baseline_err: errno_text(sweep.baseline_err),
            shim_baseline_err: baseline.map(|b| errno_text(b.err)),
            baseline_iova_verdict: base_leak.map(|l| l.to_string()),
            baseline_probes: sweep
                .baseline_rounds
                .iter()
                .map(|x| x.probe_iova.map_or("-".to_string(), |a| format!("{a:#x}")))
                .collect(),
            baseline_shim_iova_leak: base_shim_leak.filter(|_| !sweep.baseline_rounds.is_empty()),
            baseline_agree: base_agree,
            // FINDINGS F10: after defect 1's EADDRINUSE, 7.2.13's
            // dma_iova_destroy() gives back the linked bytes only; kmod-shim,
            // without the IOVA caches, frees the span.
            baseline_explained: (base_agree == Some(false)
                && sweep.baseline_err == -validator::Errno::EADDRINUSE.code()
                && base_shim_leak == Some(false))
            .then(|| "F10: 7.2.13's dma_iova_destroy() frees the linked bytes, not the span".to_string()),
            baseline_iova: sweep.baseline_iova.map(|a| format!("{a:#x}")),
            tried: sweep.points.len(),
            fired: sweep.points.iter().filter(|p| p.fired).count(),
            failed: sweep.points.iter().filter(|p| p.fired && p.err != 0).count(),
            note: sweep.note.clone(),
            points,
        });
    }
    let overrides: Vec<OverrideResult> = rep.overrides.iter().map(|o| compare_override(dev, variant, o)).collect();
    let mut verdicts = Vec::new();
    let d2 = rep.overrides.iter().find(|o| o.kind == OverrideKind::FirstIovaLink);
    verdicts.push(verdict(
        2,
        "err_unmap_dma does nothing when the first dma_iova_link() fails: the IOVA span leaks",
        variant,
        d2.and_then(|o| iova_leak(o.before, &o.rounds, |r| r.fired && r.err != 0).leaks()),
        overrides.iter().find(|o| o.kind == OverrideKind::FirstIovaLink.to_string()).map_or_else(Vec::new, |o| {
            vec![
                format!("errors: {}", o.kernel_errs.join(" ")),
                format!("probes: {} then {}", o.before.clone().unwrap_or_default(), o.probes.join(" ")),
            ]
        }),
    ));
    verdicts.push(verdict(
        3,
        "err_free_state frees the state but not the IOVA span when sg_alloc_table() fails",
        variant,
        d3.0,
        d3.1,
    ));
    let d4 = overrides.iter().find(|o| o.kind == OverrideKind::PerRangeSecondMapPhys.to_string());
    verdicts.push(verdict(
        4,
        "the per-range unwind unmaps every sg entry, the never-filled (0, 0) ones too",
        variant,
        d4.map(|o| o.sanitizer.iter().any(|l| l.contains("DMA-API"))),
        d4.map_or_else(Vec::new, |o| o.trace.clone()),
    ));
    let d5 = rep.fd_full.as_ref().map(|f| compare_fd_full(dev, variant, f));
    let mut v5 = verdict(
        5,
        "dma_buf_fd() failing after dma_buf_export(): err_dma_buf falls through and frees priv twice (fixed upstream in v7.0-rc6)",
        variant,
        d5.as_ref().map(|o| o.sanitizer.iter().any(|l| l.contains("KASAN") || l.contains("BUG:"))),
        d5.as_ref().map_or_else(Vec::new, |o| {
            let mut t = vec![format!("errors: {}", o.kernel_errs.join(" "))];
            t.extend(o.sanitizer.iter().cloned());
            t
        }),
    );
    // Fixed in 7.2.13's source: absent on both builds is the expectation.
    if let Some(obs) = v5.observed {
        v5.as_expected = !obs;
        v5.verdict = if obs { "PRESENT (KASAN report)".into() } else { "absent: fixed in 7.2.13".into() };
    }
    verdicts.push(v5);
    let mut overrides = overrides;
    overrides.extend(d5);
    Some((ops, overrides, verdicts))
}

/// Defect 6 from the final kmemleak scan: scatterlist arrays allocated by
/// `sg_alloc_table()` under `dma_buf_phys_vec_to_sgt()` and never freed.
pub fn sg_table_verdict(groups: &[KmemleakGroup], variant: Variant) -> DefectVerdict {
    let sg: Vec<&KmemleakGroup> = groups
        .iter()
        .filter(|g| {
            g.backtrace.iter().any(|f| f == "dma_buf_phys_vec_to_sgt") && g.site == KernelSite::SgTable.to_string()
        })
        .collect();
    let trace = sg
        .iter()
        .map(|g| format!("kmemleak: {} x {} bytes from {}", g.count, g.size, g.backtrace.join(" <- ")))
        .collect();
    verdict(
        6,
        "dma_buf_free_sgt() frees none of the sg table's entries (orig_nents cleared): every mapping leaks its scatterlist",
        variant,
        Some(!sg.is_empty()),
        trace,
    )
}

/// The full-fd-table export against kmod-shim's `FaultSite::DmaBufFd`.
fn compare_fd_full(dev: &DeviceInfo, variant: Variant, f: &FdFullRun) -> OverrideResult {
    let shim =
        shim_outcome(dev, variant.fidelity(), FaultOp::Export, Some(FaultPlan::new(FaultSite::DmaBufFd, 0)), false);
    let sanitizer = sanitizer_of(&f.klog);
    let kasan = sanitizer.iter().any(|l| l.contains("KASAN") || l.contains("BUG:"));
    let mut notes = Vec::new();
    let agree = shim.as_ref().map(|s| {
        let mut ok = true;
        if let Some(&e) = f.errs.first() {
            if e != s.err {
                ok = false;
                notes.push(format!("errno: kernel {}, kmod-shim {}", errno_text(e), errno_text(s.err)));
            }
        }
        if kasan == s.violations.is_empty() {
            ok = false;
            notes.push(format!(
                "memory safety: kernel {}, kmod-shim {}",
                if kasan { "KASAN report" } else { "no report" },
                if s.violations.is_empty() { "clean".to_string() } else { s.violations.join("; ") }
            ));
        }
        ok
    });
    OverrideResult {
        kind: format!("fd table full ({} descriptors opened): dma_buf_fd() fails", f.filled),
        rounds: f.errs.len(),
        fired: 0,
        kernel_errs: f.errs.iter().map(|&e| errno_text(e)).collect(),
        before: None,
        probes: vec![],
        kernel_iova: "-".into(),
        sanitizer,
        trace: f.klog.iter().filter(|l| is_sanitizer_line(l) || parse_frame(l).is_some()).take(40).cloned().collect(),
        shim_err: shim.as_ref().map(|s| errno_text(s.err)),
        shim_iova_leak: shim.as_ref().map(|s| s.iova_leak),
        shim_spurious_unmaps: shim.as_ref().map(|s| s.spurious_unmaps),
        agree,
        notes,
    }
}

/// The export's range copy, `memdup_array_user()`, allocates with
/// `__GFP_NOWARN` and so prints no stack: a silent point that makes the
/// export fail with ENOMEM before `kzalloc(priv)` can only be it. Returns
/// the N so attributed.
pub fn infer_range_copy(sweep: &OpSweep, sites: &mut [KernelSite]) -> Vec<u32> {
    let mut out = Vec::new();
    if sweep.op != FaultOp::Export {
        return out;
    }
    let first_priv = sweep.points.iter().zip(sites.iter()).find(|(_, s)| **s == KernelSite::Priv).map(|(p, _)| p.n);
    for (p, site) in sweep.points.iter().zip(sites.iter_mut()) {
        let before_priv = first_priv.is_none_or(|n| p.n < n);
        if *site == KernelSite::Unattributed && p.fired && p.err == -validator::Errno::ENOMEM.code() && before_priv {
            *site = KernelSite::RangeCopy;
            out.push(p.n);
        }
    }
    out
}

/// One `unreferenced object` of `/sys/kernel/debug/kmemleak`: its size and
/// its allocation backtrace (innermost first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakedObject {
    /// Bytes.
    pub size: u64,
    /// The backtrace's frames.
    pub frames: Vec<Frame>,
    /// The hex dump's lines.
    pub dump: Vec<String>,
}

/// Parses kmemleak's report.
pub fn parse_kmemleak(lines: &[String]) -> Vec<LeakedObject> {
    let mut out: Vec<LeakedObject> = Vec::new();
    let mut in_dump = false;
    for l in lines {
        if let Some(rest) = l.strip_prefix("unreferenced object ") {
            let size = rest
                .split_once("(size ")
                .and_then(|(_, x)| x.split_once(')'))
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or(0);
            out.push(LeakedObject { size, frames: vec![], dump: vec![] });
            in_dump = false;
            continue;
        }
        let Some(obj) = out.last_mut() else { continue };
        if l.contains("hex dump") {
            in_dump = true;
        } else if l.contains("backtrace") {
            in_dump = false;
        } else if in_dump {
            obj.dump.push(l.trim().to_string());
        } else if let Some(f) = parse_frame(l) {
            obj.frames.push(f);
        }
    }
    out
}

/// kmemleak's objects grouped by size and backtrace, each attributed, with
/// what kmod-shim's ledger says about the same object after the same
/// operations.
pub fn kmemleak_groups(lines: &[String], dev: Option<&DeviceInfo>, variant: Variant) -> Vec<KmemleakGroup> {
    let mut groups: Vec<KmemleakGroup> = Vec::new();
    for o in parse_kmemleak(lines) {
        let bt: Vec<String> =
            o.frames.iter().filter(|f| !f.func.starts_with("kmemleak")).map(|f| f.func.clone()).collect();
        if let Some(g) = groups.iter_mut().find(|g| g.size == o.size && g.backtrace == bt) {
            g.count += 1;
            continue;
        }
        let frames: Vec<Frame> = o.frames.iter().filter(|f| !f.func.starts_with("kmemleak")).cloned().collect();
        let site = attribute(&frames);
        let shim = dev.and_then(|d| shim_frees(d, variant, &site));
        groups.push(KmemleakGroup {
            count: 1,
            size: o.size,
            site: site.to_string(),
            backtrace: bt,
            first_dump: o.dump,
            shim,
        });
    }
    groups
}

/// What kmod-shim's ledger holds of `site`'s object after a clean map and
/// unmap of the one-range dma-buf (for map-side objects) or an export and
/// close (export-side ones): `None` when the shim has no such object.
fn shim_frees(dev: &DeviceInfo, variant: Variant, site: &KernelSite) -> Option<String> {
    use kmod_shim::Alloc;
    let kind = match site {
        KernelSite::SgTable => Alloc::SgTable,
        KernelSite::DmaBufDma => Alloc::DmaBufDma,
        KernelSite::IovaState => Alloc::IovaState,
        KernelSite::Priv => Alloc::Priv,
        KernelSite::PhysVec => Alloc::PhysVec,
        KernelSite::RangeCopy => Alloc::RangeCopy,
        KernelSite::DmaBufExport => Alloc::DmaBufFile,
        KernelSite::Attachment => Alloc::Attachment,
        _ => return None,
    };
    let mut s = shim_for(dev, variant.fidelity());
    let imp = s.add_importer(crate::importer::host::importer_desc(crate::importer::Expect::IovaPath));
    let bytes = export_request(&ONE_RANGE);
    let req = uapi::Request::decode(&bytes).ok()?;
    let buf = s.export(&req).ok()?;
    let att = s.attach(buf, imp).ok()?;
    let m = s.map(att).ok()?;
    s.unmap(m);
    s.detach(att).ok()?;
    s.close_fd(buf).ok()?;
    let live = s.counters().ledger.live(kind);
    // Defect 6: the kernel-faithful mode counts the scatterlist arrays
    // dma_buf_free_sgt() leaves allocated (the ledger drops what the model
    // can no longer reach).
    let leaked = s.events().sg_table_leaks;
    Some(if kind == Alloc::SgTable && leaked > 0 {
        format!("kmod-shim leaks {kind}: {leaked} array per map/unmap cycle (defect 6, Events::sg_table_leaks)")
    } else if live == 0 {
        format!("kmod-shim frees {kind} (ledger 0 after export, attach, map, unmap, detach, close)")
    } else {
        format!("kmod-shim keeps {live} {kind} after export, attach, map, unmap, detach, close")
    })
}

/// What fails the run (exit status 1): a point or override where kernel
/// and kmod-shim disagree, a defect verdict against expectation, a kmemleak
/// object kmod-shim frees, and on `lab-patched` any sanitizer line.
pub fn failures(r: &FaultSweepReport) -> usize {
    let points = r.ops.iter().flat_map(|o| &o.points).filter(|p| p.agree == Some(false)).count()
        + r.ops.iter().filter(|o| o.baseline_agree == Some(false) && o.baseline_explained.is_none()).count();
    let overrides = r.overrides.iter().filter(|o| o.agree == Some(false)).count();
    let verdicts = r.defects.iter().filter(|d| !d.as_expected).count();
    // kmemleak's objects count once per group; on lab-patched every group
    // and every other sanitizer line fails the run.
    let patched = r.variant == Variant::Patched;
    let shim_frees = |g: &&KmemleakGroup| g.shim.as_deref().is_some_and(|s| s.starts_with("kmod-shim frees"));
    let leaks = r.kmemleak_groups.iter().filter(|g| patched || shim_frees(g)).count();
    let kmemleak_line = |l: &SanitizerLine| l.line.contains("unreferenced object") || l.line.starts_with("kmemleak:");
    let sanitizer = if patched { r.sanitizer.iter().filter(|l| !kmemleak_line(l)).count() } else { 0 };
    points + overrides + verdicts + leaks + sanitizer
}

/// The lab's sanitizer lines, kept once per (context, line).
pub fn sanitizer_report(rep: &FaultGuestReport) -> Vec<SanitizerLine> {
    let mut out: Vec<SanitizerLine> = Vec::new();
    for l in &rep.sanitizer {
        if !out.iter().any(|o| o.line == l.line && o.context == l.context) {
            out.push(l.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests;
