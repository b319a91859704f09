//! The kernel against the validator: regenerate each case, predict it with
//! `validator::validate(.., Policy::Linux)` on the device table the guest
//! reported, and compare errno and, on success, the dma-buf size.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use validator::{validate, Outcome, Policy};

use crate::conformance::gen::Gen;
use crate::proto::{DeviceInfo, Observed};

/// What the validator predicts for a case, in the terms the guest observes.
pub fn predict(case: &crate::conformance::gen::Case, dev: &validator::Device) -> (Observed, &'static str) {
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

/// Replays the seeded batch on `devices` and compares it with `observed`.
pub fn diff(seed: u64, devices: &[DeviceInfo], observed: &[Observed]) -> DiffSummary {
    let mut gen = Gen::new(seed, devices.iter().map(DeviceInfo::bar_lens).collect());
    let models: Vec<validator::Device> = devices.iter().map(DeviceInfo::to_validator).collect();
    let mut sum = DiffSummary { cases: observed.len() as u64, ..Default::default() };
    let mut classes: BTreeMap<(String, String, usize), DisagreementClass> = BTreeMap::new();
    let mut case = crate::conformance::gen::Case::default();
    for (i, &got) in observed.iter().enumerate() {
        gen.next_into(&mut case);
        *sum.kernel_answers.entry(kind(got)).or_default() += 1;
        let (want, check) = predict(&case, &models[case.device]);
        *sum.predicted_checks.entry(check.to_string()).or_default() += 1;
        if want == got {
            continue;
        }
        sum.disagreements += 1;
        let key = (check.to_string(), kind(got), case.device);
        classes
            .entry(key)
            .or_insert_with(|| DisagreementClass {
                count: 0,
                predicted_check: check.into(),
                predicted: want.describe(),
                kernel: got.describe(),
                first_case: i as u64,
                device_name: format!("{} {}", devices[case.device].name, devices[case.device].bdf),
                request: case.to_json(),
                device: devices[case.device].check_json(),
            })
            .count += 1;
    }
    sum.classes = classes.into_values().collect();
    sum.classes.sort_by_key(|c| std::cmp::Reverse(c.count));
    sum
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
    }
}
