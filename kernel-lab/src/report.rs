//! The lab's two `--report` JSON documents, as one schema: written by
//! `kernel-lab` and `kernel-lab importer`, read back as typed data by the RFC
//! generator (`rfc/src/lab.rs`) and by anyone comparing two runs.
//!
//! Field order is the JSON's order: a report regenerated from the same seed
//! and kernel is byte-identical apart from the timing fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::conformance::diff::DisagreementClass;
use crate::importer::host::Check;
use crate::importer::{ImporterReport, Topology};
use crate::proto::{DeviceInfo, Fact};

/// `kernel-lab --report`: the conformance batch and the scenarios.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConformanceReport {
    /// `uname -r` in the guest.
    pub kernel: String,
    /// The Debian package: ABI, version and suite.
    pub kernel_package: String,
    /// Why this kernel was picked when it is not the one asked for.
    pub kernel_note: Option<String>,
    /// Generator seed.
    pub seed: u64,
    /// Cases run.
    pub cases: u64,
    /// Cases where the kernel and `validator::validate(.., Policy::Linux)`
    /// disagreed.
    pub disagreements: u64,
    /// The guest's ioctl loop rate.
    pub cases_per_sec: f64,
    /// Seconds in the guest's case loop.
    pub guest_loop_seconds: f64,
    /// Seconds from kernel start to the first case.
    pub guest_setup_seconds: f64,
    /// Seconds from QEMU's start to its exit.
    pub boot_and_run_seconds: f64,
    /// Seconds of the whole run.
    pub wall_seconds: f64,
    /// The devices, in generator order.
    pub devices: Vec<DeviceInfo>,
    /// How often each kernel answer occurred.
    pub kernel_answers: BTreeMap<String, u64>,
    /// How often each validator check decided a case.
    pub predicted_checks: BTreeMap<String, u64>,
    /// Disagreements by class.
    pub disagreement_classes: Vec<DisagreementClass>,
    /// Scenario facts.
    pub scenario_facts: Vec<Fact>,
    /// Set when the kernel does not offer `VFIO_DEVICE_FEATURE_DMA_BUF`
    /// (its probe's errno, e.g. ENOTTY on 6.12): then no case ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_absent: Option<String>,
    /// The kernel's sanitizer report lines at the end of the run
    /// ([`crate::sanitizer`]); empty when clean.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sanitizer: Vec<String>,
}

impl ConformanceReport {
    /// A scenario fact's result, by scenario and step prefix.
    pub fn fact(&self, scenario: &str, step_prefix: &str) -> Option<&str> {
        self.scenario_facts
            .iter()
            .find(|f| f.scenario == scenario && f.step.starts_with(step_prefix))
            .map(|f| f.result.as_str())
    }
}

/// `kernel-lab importer --report`: the topology matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImporterLabReport {
    /// The kernel's ABI.
    pub kernel: String,
    /// The Debian package: ABI, version and suite.
    pub kernel_package: String,
    /// `importer::host::source_hash()` of the module that ran.
    pub module_hash: String,
    /// Seconds to resolve the kernel, build the module, guest and initramfs.
    pub prepare_seconds: f64,
    /// Seconds of the whole run.
    pub wall_seconds: f64,
    /// One result per topology, in matrix order.
    pub topologies: Vec<TopologyResult>,
}

impl ImporterLabReport {
    /// Every compared field of every topology.
    pub fn checks(&self) -> impl Iterator<Item = &Check> {
        self.topologies.iter().flat_map(|t| &t.checks)
    }
}

/// One topology of the importer matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyResult {
    /// The topology.
    pub topology: Topology,
    /// Booted twice because of an early oops.
    pub retried_after_oops: bool,
    /// Seconds the boot took.
    pub boot_seconds: f64,
    /// Why the topology could not run.
    pub error: Option<String>,
    /// The guest's report.
    pub guest: Option<ImporterReport>,
    /// kmod-shim's predictions against the guest's answers.
    pub checks: Vec<Check>,
    /// Checks that disagree.
    pub disagreements: usize,
    /// Disagreements not explained by FINDINGS.md (these fail the run).
    pub unexplained: usize,
}

/// `kernel-lab selftest --report`: the kselftest per kernel, and the
/// deliberate breakages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelftestReport {
    /// When the run finished (UTC).
    pub date: String,
    /// The test binary that ran on every kernel.
    pub test_binary: SelftestBinary,
    /// One entry per `--kernel`, in order.
    pub kernels: Vec<SelftestKernelRun>,
    /// One entry per breakage (`--breakages`).
    pub breakages: Vec<SelftestBreakageRun>,
    /// Kernels with a problem plus breakages not caught as declared (exit 1).
    pub failures: usize,
    /// Kernels and breakages the lab could not boot (exit 2 when nothing failed).
    pub not_run: usize,
    /// Seconds of the whole run.
    pub wall_seconds: f64,
}

/// Where the test binary came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelftestBinary {
    /// Its path in the cache.
    pub path: String,
    /// The tree it was built from.
    pub source: String,
    /// Its cache key.
    pub key: String,
    /// Built by this run.
    pub built_now: bool,
    /// Seconds the build took (0 when cached).
    pub build_seconds: f64,
}

/// One boot of the selftest guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelftestKernelRun {
    /// The `--kernel` value.
    pub asked: String,
    /// `uname -r` in the guest (else the package's ABI).
    pub kernel: String,
    /// The package or lab build: ABI, version and suite.
    pub kernel_package: String,
    /// Whether the kernel's version has the feature.
    pub feature_expected: bool,
    /// What the probe found.
    pub feature: crate::selftest::Feature,
    /// Seconds from QEMU's start to its exit.
    pub boot_seconds: f64,
    /// Why the kernel could not be prepared or booted.
    pub error: Option<String>,
    /// One entry per device run, in run order.
    pub devices: Vec<SelftestDevice>,
    /// Kernel log lines that report a problem.
    pub kernel_reports: Vec<String>,
    /// What fails this kernel's run (empty: it passed).
    pub problems: Vec<crate::selftest::Problem>,
}

/// One device's run of the test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelftestDevice {
    /// The lab's device name.
    pub device: String,
    /// Its PCI address.
    pub bdf: String,
    /// The cases announced.
    pub planned: Option<u32>,
    /// How the run ended.
    pub end: crate::selftest::tap::RunEnd,
    /// Over every case.
    pub counts: crate::selftest::tap::Counts,
    /// Per test, in TAP order.
    pub tests: Vec<SelftestTest>,
}

/// One test over the IOMMU modes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelftestTest {
    /// The `TEST_F` name.
    pub test: String,
    /// Over its modes.
    pub counts: crate::selftest::tap::Counts,
    /// One per IOMMU mode, in TAP order.
    pub modes: Vec<SelftestMode>,
}

/// One case: a test under one IOMMU mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelftestMode {
    /// The IOMMU mode.
    pub mode: String,
    /// Its result (a skip's reason, a failure's assertion).
    pub outcome: crate::selftest::tap::Outcome,
}

/// A test that failed on a device, and under which modes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelftestFailure {
    /// The device.
    pub device: String,
    /// The test.
    pub test: String,
    /// The IOMMU modes it failed under.
    pub modes: Vec<String>,
}

/// One deliberate breakage's boot and verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelftestBreakageRun {
    /// The breakage.
    pub name: String,
    /// The rule it breaks.
    pub rule: String,
    /// The tests that must fail.
    pub must_fail: Vec<String>,
    /// Seconds to build its module (0 when cached).
    pub module_seconds: f64,
    /// Every declared test failed, no other did, both runs completed.
    pub as_declared: bool,
    /// What failed.
    pub failed: Vec<SelftestFailure>,
    /// Declared tests that did not fail.
    pub missed: Vec<String>,
    /// Tests that failed without being declared.
    pub collateral: Vec<String>,
    /// The boot (its `problems` include the expected failures).
    pub run: SelftestKernelRun,
}

/// `kernel-lab fault-sweep --report`: the fault sweep of one kernel
/// against kmod-shim (`crate::fault`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSweepReport {
    /// `uname -r` in the guest.
    pub kernel: String,
    /// The package or lab build.
    pub kernel_package: String,
    /// Which lab build (decides kmod-shim's fidelity).
    pub variant: crate::fault::Variant,
    /// `Kernel` or `Fixed`.
    pub shim_fidelity: String,
    /// `fault injection unavailable: ...`, or `ran`.
    pub verdict: String,
    /// Failing rounds per point.
    pub repeats: u32,
    /// `crate::fault::source_hash()` of the override module.
    pub module_hash: String,
    /// The guest's kernel command line.
    pub cmdline: String,
    /// Seconds to resolve the kernel and build modules, guest, initramfs.
    pub prepare_seconds: f64,
    /// Seconds from QEMU's start to its exit.
    pub boot_seconds: f64,
    /// Seconds of the whole run.
    pub wall_seconds: f64,
    /// Per operation.
    pub ops: Vec<FaultOpResult>,
    /// The kprobe overrides.
    pub overrides: Vec<OverrideResult>,
    /// Defects 2, 3 and 4.
    pub defects: Vec<DefectVerdict>,
    /// Every sanitizer line of the run.
    pub sanitizer: Vec<crate::fault::SanitizerLine>,
    /// `/sys/kernel/debug/kmemleak` after the final scans.
    pub kmemleak: Vec<String>,
    /// Its objects grouped by size and backtrace, attributed.
    pub kmemleak_groups: Vec<KmemleakGroup>,
    /// What did not run, and why.
    pub notes: Vec<String>,
    /// Points, overrides and verdicts that fail the run.
    pub failures: usize,
    /// The guest's own report, for anything the summary leaves out.
    pub guest: Option<crate::fault::FaultGuestReport>,
}

/// One operation of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultOpResult {
    /// The operation.
    pub op: String,
    /// Its answer without a fault.
    pub baseline_err: String,
    /// kmod-shim's answer without a fault.
    pub shim_baseline_err: Option<String>,
    /// When the operation fails without a fault: the IOVA verdict of that
    /// failure, repeated.
    pub baseline_iova_verdict: Option<String>,
    /// The probe after each of those rounds.
    pub baseline_probes: Vec<String>,
    /// Whether kmod-shim leaks IOVA space in that failure.
    pub baseline_shim_iova_leak: Option<bool>,
    /// Kernel and kmod-shim agree on it (`None`: undecided or not run).
    pub baseline_agree: Option<bool>,
    /// For a disagreement FINDINGS.md explains: its id and gist (it then
    /// does not fail the sweep).
    #[serde(default)]
    pub baseline_explained: Option<String>,
    /// The clean probe before the sweep.
    pub baseline_iova: Option<String>,
    /// N tried.
    pub tried: usize,
    /// N that fired.
    pub fired: usize,
    /// N that fired and made the operation fail.
    pub failed: usize,
    /// Why the sweep ended early.
    pub note: Option<String>,
    /// Every N that fired.
    pub points: Vec<FaultPointResult>,
}

/// One fail-nth point: the kernel's answer and kmod-shim's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultPointResult {
    /// fail-nth's N.
    pub n: u32,
    /// It fired.
    pub fired: bool,
    /// The kernel call it failed (`crate::fault::KernelSite`).
    pub site: String,
    /// `failslab` or `fail_page_alloc`, when a stack was printed.
    pub injector: Option<String>,
    /// The fault-injection stack, innermost first.
    pub stack: Vec<String>,
    /// The kernel's answer.
    pub kernel_err: String,
    /// The IOVA verdict from the repeats (maps that failed).
    pub kernel_iova: Option<String>,
    /// The probe after each repeat.
    pub repeat_probes: Vec<String>,
    /// Sanitizer lines of the attempt.
    pub sanitizer: Vec<String>,
    /// kmod-shim's answer for the same point.
    pub shim_err: Option<String>,
    /// Whether kmod-shim leaks IOVA space there.
    pub shim_iova_leak: Option<bool>,
    /// kmod-shim's anomalies and invariant violations there.
    pub shim_violations: Vec<String>,
    /// `None` when kmod-shim has no such point.
    pub agree: Option<bool>,
    /// Why not, and anything odd.
    pub notes: Vec<String>,
}

/// One kprobe override: the kernel's rounds and kmod-shim's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverrideResult {
    /// Which (`crate::fault::OverrideKind`).
    pub kind: String,
    /// Rounds.
    pub rounds: usize,
    /// The module's `fired`.
    pub fired: u32,
    /// Each round's answer.
    pub kernel_errs: Vec<String>,
    /// The probe before the rounds.
    pub before: Option<String>,
    /// The probe after each round.
    pub probes: Vec<String>,
    /// The IOVA verdict.
    pub kernel_iova: String,
    /// Sanitizer lines of the rounds.
    pub sanitizer: Vec<String>,
    /// The first round's sanitizer and call-trace lines.
    pub trace: Vec<String>,
    /// kmod-shim's answer.
    pub shim_err: Option<String>,
    /// Whether kmod-shim leaks IOVA space.
    pub shim_iova_leak: Option<bool>,
    /// kmod-shim's zero-length unmaps.
    pub shim_spurious_unmaps: Option<u64>,
    /// Agreement (`None`: the shim could not run it).
    pub agree: Option<bool>,
    /// Why not.
    pub notes: Vec<String>,
}

/// A defect's verdict on this kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefectVerdict {
    /// Its number (kmod-shim's `DEFECTS`).
    pub defect: u8,
    /// What it is.
    pub what: String,
    /// Whether its symptom showed (`None`: not decided).
    pub observed: Option<bool>,
    /// `confirmed on lab-shipped`, `gone on lab-patched`, ...
    pub verdict: String,
    /// Present on lab-shipped, absent on lab-patched (or undecided).
    pub as_expected: bool,
    /// The evidence.
    pub trace: Vec<String>,
}

/// kmemleak's unreferenced objects of one size and backtrace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KmemleakGroup {
    /// Objects.
    pub count: usize,
    /// Bytes each.
    pub size: u64,
    /// The kernel call that allocated them (`crate::fault::KernelSite`).
    pub site: String,
    /// The backtrace's functions, innermost first (kmemleak's own dropped).
    pub backtrace: Vec<String>,
    /// The first object's hex dump.
    pub first_dump: Vec<String>,
    /// What kmod-shim's ledger says of the same object.
    pub shim: Option<String>,
}
