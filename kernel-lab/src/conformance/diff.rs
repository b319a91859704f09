//! The kernel against the validator: each case (regenerated from the seed,
//! or an explicit one such as a replayed fuzz input) is predicted with
//! `validator::validate(.., Policy::Linux)` on the device table the guest
//! reported, and errno and, on success, the dma-buf size are compared.
//! [`Diff`] is the one comparison; [`diff`] feeds it the seeded batch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use validator::{validate, Outcome, Policy};

use crate::conformance::gen::{Case, Gen};
use crate::proto::{DeviceInfo, Observed};

/// What the validator predicts for a case, in the terms the guest observes.
pub fn predict(case: &Case, dev: &validator::Device) -> (Observed, &'static str) {
    match validate(&case.request(), dev, Policy::Linux) {
        Ok(Outcome::Probe) | Ok(Outcome::OtherFeature { .. }) => (Observed::Ok, "Probe"),
        Ok(Outcome::DmaBuf(e)) => (Observed::DmaBuf(e.size), "DmaBuf"),
        Err(r) => (Observed::Errno(r.errno().code()), r.name()),
    }
}

/// One class of disagreement: the same prediction (check) against the same
/// kind of kernel answer on the same device; the first example is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DisagreementClass {
    /// How many cases fell in this class.
    pub count: u64,
    /// The validator's check (a `Reject` name, `DmaBuf` or `Probe`).
    pub predicted_check: String,
    /// The validator's answer for the first example.
    pub predicted: String,
    /// The kernel's answer for the first example.
    pub kernel: String,
    /// Index of the first example in the batch.
    pub first_case: u64,
    /// Where the first example came from when the cases are explicit (the
    /// input file of `kernel-lab replay`); absent for the seeded batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_input: Option<String>,
    /// The device the example ran on (model name and PCI address).
    pub device_name: String,
    /// `nr-ranges check` request line of the first example.
    pub request: String,
    /// `nr-ranges check --device` JSON of the device.
    pub device: String,
}

/// The outcome of a diff.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffSummary {
    /// Cases compared.
    pub cases: u64,
    /// Cases where kernel and validator disagree.
    pub disagreements: u64,
    /// Disagreements grouped by class.
    pub classes: Vec<DisagreementClass>,
    /// How often each kernel answer occurred (`EINVAL`, `ok dma-buf`, ...).
    pub kernel_answers: BTreeMap<String, u64>,
    /// How often each validator check decided a case (`BarNotMmio`,
    /// `DmaBuf`, ...): shows which checks the batch exercised.
    pub predicted_checks: BTreeMap<String, u64>,
}

/// A short name for an answer's kind (sizes dropped), for classes and counts.
fn kind(o: Observed) -> String {
    match o {
        Observed::DmaBuf(_) => "ok dma-buf".into(),
        other => other.describe(),
    }
}

/// The comparison in progress: cases are added one by one with the
/// kernel's answer, in any order and from any source.
pub struct Diff<'d> {
    devices: &'d [DeviceInfo],
    models: Vec<validator::Device>,
    sum: DiffSummary,
    classes: BTreeMap<(String, String, usize), DisagreementClass>,
}

impl<'d> Diff<'d> {
    /// An empty comparison on the device table the guest reported.
    pub fn new(devices: &'d [DeviceInfo]) -> Self {
        let models = devices.iter().map(DeviceInfo::to_validator).collect();
        Self { devices, models, sum: DiffSummary::default(), classes: BTreeMap::new() }
    }

    /// Compares case number `index` with the kernel's answer `got`;
    /// `input` names where the case came from, asked for only when it
    /// starts a new disagreement class. A case on a device the table does
    /// not have cannot be predicted and is counted as a disagreement of
    /// check `NoSuchDevice`.
    pub fn add(&mut self, index: u64, case: &Case, got: Observed, input: impl FnOnce() -> Option<String>) {
        self.sum.cases += 1;
        *self.sum.kernel_answers.entry(kind(got)).or_default() += 1;
        let predicted = self.models.get(case.device).map(|m| predict(case, m));
        let check = predicted.map_or("NoSuchDevice", |(_, c)| c);
        *self.sum.predicted_checks.entry(check.to_string()).or_default() += 1;
        if predicted.is_some_and(|(want, _)| want == got) {
            return;
        }
        self.sum.disagreements += 1;
        let dev = self.devices.get(case.device);
        let key = (check.to_string(), kind(got), case.device);
        self.classes
            .entry(key)
            .or_insert_with(|| DisagreementClass {
                count: 0,
                predicted_check: check.into(),
                predicted: predicted.map_or_else(|| "no prediction".into(), |(want, _)| want.describe()),
                kernel: got.describe(),
                first_case: index,
                first_input: input(),
                device_name: dev
                    .map(|d| format!("{} {}", d.name, d.bdf))
                    .unwrap_or_else(|| format!("device {}", case.device)),
                request: case.to_json(),
                device: dev.map(DeviceInfo::check_json).unwrap_or_default(),
            })
            .count += 1;
    }

    /// The summary: classes largest first.
    pub fn finish(mut self) -> DiffSummary {
        self.sum.classes = self.classes.into_values().collect();
        self.sum.classes.sort_by_key(|c| std::cmp::Reverse(c.count));
        self.sum
    }
}

/// Replays the seeded batch on `devices` and compares it with `observed`.
pub fn diff(seed: u64, devices: &[DeviceInfo], observed: &[Observed]) -> DiffSummary {
    let mut gen = Gen::new(seed, devices.iter().map(DeviceInfo::bar_lens).collect());
    let mut d = Diff::new(devices);
    let mut case = Case::default();
    for (i, &got) in observed.iter().enumerate() {
        gen.next_into(&mut case);
        d.add(i as u64, &case, got, || None);
    }
    d.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::{BarInfo, BarType};

    /// The ivshmem-plain the lab's guest reports (BAR0 256 bytes, BAR2
    /// 16 MiB): the device of the conformance tests.
    pub(crate) fn devices() -> Vec<DeviceInfo> {
        vec![DeviceInfo {
            name: "ivshmem-plain".into(),
            bdf: "0000:01:00.0".into(),
            group: 8,
            page_size: 4096,
            bars: vec![
                BarInfo { index: 0, kind: BarType::Mem, start: 0xfe80_0000, len: 0x100 },
                BarInfo { index: 2, kind: BarType::Mem, start: 0xf_d000_0000, len: 16 << 20 },
            ],
        }]
    }

    #[test]
    fn a_kernel_that_agrees_has_no_disagreements_and_one_that_lies_is_classified() {
        let devs = devices();
        let model = devs[0].to_validator();
        let mut gen = Gen::new(5, vec![devs[0].bar_lens()]);
        let mut answers: Vec<Observed> = (0..2_000).map(|_| predict(&gen.next_case(), &model).0).collect();
        let s = diff(5, &devs, &answers);
        assert_eq!((s.cases, s.disagreements), (2_000, 0));
        assert!(s.kernel_answers.contains_key("ok dma-buf") && s.kernel_answers.contains_key("EINVAL"));

        // A kernel that answers ENOTTY to everything that succeeded.
        for a in answers.iter_mut() {
            if matches!(a, Observed::DmaBuf(_)) {
                *a = Observed::Errno(25);
            }
        }
        let s = diff(5, &devs, &answers);
        assert!(s.disagreements > 0);
        assert_eq!(s.classes.len(), 1);
        let c = &s.classes[0];
        assert_eq!((c.count, c.predicted_check.as_str(), c.kernel.as_str()), (s.disagreements, "DmaBuf", "ENOTTY"));
        let mut g = Gen::new(5, vec![devs[0].bar_lens()]);
        let first = (0..=c.first_case).map(|_| g.next_case()).last().unwrap();
        assert_eq!(c.request, first.to_json());
        assert!(c.device.starts_with(r#"{"page_size":4096,"bars":["#));

        // A case on a device the guest did not report is a disagreement
        // whatever the answer, never a panic.
        let mut d = Diff::new(&devs);
        let stray = Case { device: 7, ..first };
        d.add(0, &stray, Observed::NotSent, || Some("stray".into()));
        let s = d.finish();
        assert_eq!((s.disagreements, s.classes[0].predicted_check.as_str()), (1, "NoSuchDevice"));
        assert_eq!(
            (s.classes[0].first_input.as_deref(), s.classes[0].device_name.as_str()),
            (Some("stray"), "device 7")
        );
    }
}
