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
    #[serde(default)]
    pub feature_absent: Option<String>,
    /// The kernel's sanitizer report lines at the end of the run
    /// ([`crate::sanitizer`]); empty when clean.
    #[serde(default)]
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
