//! `tools/testing/selftests/kselftest_harness.h`'s TAP output, as the
//! selftest guest (`kernel-lab/selftest/stinit.c`) relays it: one
//! `STINIT: ===== run <device> <bdf>` block per device, each holding the
//! harness's plan, `#` diagnostics and `ok`/`not ok` lines, then the guest's
//! dmesg excerpts and `STINIT: done`.
//!
//! The parser keeps what decides a verdict (each case's outcome, a skip's
//! reason, a failure's assertion lines, how the run ended) and ignores
//! everything else, so a kernel message on the console cannot break it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One case's result, as the harness's `ok`/`not ok` line says it
/// (`KSFT_PASS`, `KSFT_FAIL`, `KSFT_SKIP` of `kselftest.h`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// `ok N name`.
    Pass,
    /// `not ok N name`; the `#` lines the case printed (its assertion).
    Fail {
        /// The case's diagnostics, without the leading `# `.
        diagnostics: Vec<String>,
    },
    /// `ok N name # SKIP reason`.
    Skip {
        /// The harness's reason.
        reason: String,
    },
}

impl Outcome {
    /// `P`, `F` or `s`: the markdown tables' letter.
    pub fn letter(&self) -> char {
        match self {
            Outcome::Pass => 'P',
            Outcome::Fail { .. } => 'F',
            Outcome::Skip { .. } => 's',
        }
    }
}

/// One `ok`/`not ok` line: the harness names a case
/// `<fixture>.<variant>.<test>`, and the variant is the IOMMU mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapCase {
    /// The TAP number (1-based, consecutive).
    pub number: u32,
    /// The fixture variant: the IOMMU mode.
    pub mode: String,
    /// The `TEST_F` name.
    pub test: String,
    /// Its result.
    pub outcome: Outcome,
}

/// How one device's run of the test binary ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// It exited with this status (the harness: 0 when nothing failed).
    Exited(i32),
    /// A signal killed it.
    Signalled(i32),
    /// The output stops inside the run (the guest crashed or hung).
    Unfinished,
}

/// One device's run: what `STINIT: ===== run` and `===== exit` enclose
/// (one `test_harness_run()`).
///
/// # Invariants
///
/// `cases[i].number == i + 1`: the harness numbers cases consecutively,
/// and [`parse`] refuses a line that does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRun {
    /// The lab's device name (`ivshmem-plain`, `pci-testdev`).
    pub device: String,
    /// Its PCI address.
    pub bdf: String,
    /// `1..N`: the number of cases announced.
    pub plan: Option<u32>,
    /// The cases, in TAP order.
    pub cases: Vec<TapCase>,
    /// How the run ended.
    pub end: RunEnd,
    /// The harness's `# Totals:` line.
    pub totals: Option<String>,
}

/// Pass, fail and skip counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Cases that passed.
    pub pass: u32,
    /// Cases that failed.
    pub fail: u32,
    /// Cases that skipped.
    pub skip: u32,
}

impl Counts {
    /// Counts `o`.
    pub fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Pass => self.pass += 1,
            Outcome::Fail { .. } => self.fail += 1,
            Outcome::Skip { .. } => self.skip += 1,
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pass, {} fail, {} skip", self.pass, self.fail, self.skip)
    }
}

impl DeviceRun {
    /// The counts over every case.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        self.cases.iter().for_each(|k| c.add(&k.outcome));
        c
    }

    /// Whether the run printed every planned case and exited.
    pub fn complete(&self) -> bool {
        self.plan == Some(self.cases.len() as u32) && matches!(self.end, RunEnd::Exited(_))
    }

    /// The cases grouped by test, in first-appearance order; each test's
    /// cases in TAP (mode) order.
    pub fn by_test(&self) -> Vec<(&str, Vec<&TapCase>)> {
        let mut out: Vec<(&str, Vec<&TapCase>)> = Vec::new();
        for c in &self.cases {
            match out.iter_mut().find(|(t, _)| *t == c.test) {
                Some((_, v)) => v.push(c),
                None => out.push((&c.test, vec![c])),
            }
        }
        out
    }
}

/// Everything the guest wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLog {
    /// `uname -r` in the guest.
    pub release: Option<String>,
    /// `STINIT: load` lines: module and result.
    pub loads: Vec<(String, String)>,
    /// The device runs, in order.
    pub runs: Vec<DeviceRun>,
    /// The kernel log lines the guest relayed.
    pub dmesg: Vec<String>,
    /// `STINIT: done` was seen: the guest got to the end.
    pub done: bool,
}

/// Output the parser cannot read. Each variant names the line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapError {
    /// An `ok`/`not ok` or plan line outside any `===== run` block.
    OutsideRun {
        /// The line number.
        line: usize,
    },
    /// A case name that is not `<fixture>.<variant>.<test>`.
    BadName {
        /// The line number.
        line: usize,
        /// The name.
        name: String,
    },
    /// A case number that is not the next one.
    BadNumber {
        /// The line number.
        line: usize,
        /// The number expected.
        expected: u32,
        /// What the line has.
        found: String,
    },
    /// A `STINIT: =====` line that does not name a device and a value.
    BadMarker {
        /// The line number.
        line: usize,
    },
}

impl fmt::Display for TapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TapError::OutsideRun { line } => write!(f, "line {line}: a TAP line outside any device run"),
            TapError::BadName { line, name } => {
                write!(f, "line {line}: case name {name:?} is not <fixture>.<variant>.<test>")
            }
            TapError::BadNumber { line, expected, found } => {
                write!(f, "line {line}: case number {found:?}, expected {expected}")
            }
            TapError::BadMarker { line } => write!(f, "line {line}: a malformed STINIT ===== line"),
        }
    }
}

impl std::error::Error for TapError {}

const PREFIX: &str = "STINIT: ";

/// Parses the guest's output.
pub fn parse(text: &str) -> Result<GuestLog, TapError> {
    let mut log = GuestLog::default();
    let mut cur: Option<DeviceRun> = None;
    // The `#` lines since the current case's `#  RUN` line.
    let mut diag: Vec<String> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim_end_matches('\r');
        if let Some(rest) = l.strip_prefix(PREFIX) {
            if let Some(m) = rest.strip_prefix("===== ") {
                let mut w = m.split_whitespace();
                let (Some(kind), Some(name), Some(val)) = (w.next(), w.next(), w.next()) else {
                    return Err(TapError::BadMarker { line });
                };
                match kind {
                    "run" => {
                        log.runs.extend(cur.take());
                        cur = Some(DeviceRun {
                            device: name.into(),
                            bdf: val.into(),
                            plan: None,
                            cases: Vec::new(),
                            end: RunEnd::Unfinished,
                            totals: None,
                        });
                    }
                    "exit" | "signal" => {
                        let v: i32 = val.parse().map_err(|_| TapError::BadMarker { line })?;
                        let mut r = cur.take().ok_or(TapError::BadMarker { line })?;
                        r.end = if kind == "exit" { RunEnd::Exited(v) } else { RunEnd::Signalled(v) };
                        log.runs.push(r);
                    }
                    _ => return Err(TapError::BadMarker { line }),
                }
            } else if let Some(r) = rest.strip_prefix("release ") {
                log.release = Some(r.trim().into());
            } else if let Some(r) = rest.strip_prefix("load ") {
                let (m, res) = r.split_once(": ").unwrap_or((r, ""));
                log.loads.push((m.into(), res.into()));
            } else if let Some(d) = rest.strip_prefix("dmesg: ") {
                log.dmesg.push(d.into());
            } else if rest.trim() == "done" {
                log.done = true;
            }
            continue;
        }
        if let Some(n) = l.strip_prefix("1..") {
            let r = cur.as_mut().ok_or(TapError::OutsideRun { line })?;
            r.plan = n.trim().parse().ok();
            continue;
        }
        let (passed, rest) = if let Some(r) = l.strip_prefix("ok ") {
            (true, r)
        } else if let Some(r) = l.strip_prefix("not ok ") {
            (false, r)
        } else {
            if let Some(d) = l.strip_prefix("# ") {
                if let Some(r) = cur.as_mut() {
                    if d.starts_with("Totals:") {
                        r.totals = Some(d.into());
                    } else if d.starts_with(" RUN ") {
                        diag.clear();
                    } else if !is_harness_marker(d) {
                        diag.push(d.into());
                    }
                }
            }
            continue;
        };
        let r = cur.as_mut().ok_or(TapError::OutsideRun { line })?;
        let (head, directive) = match rest.split_once(" # ") {
            Some((h, d)) => (h, Some(d)),
            None => (rest, None),
        };
        let (num, name) = head.split_once(' ').unwrap_or((head, ""));
        let expected = r.cases.len() as u32 + 1;
        if num.parse::<u32>().ok() != Some(expected) {
            return Err(TapError::BadNumber { line, expected, found: num.into() });
        }
        let parts: Vec<&str> = name.trim().split('.').collect();
        let [_, mode, test] = parts[..] else {
            return Err(TapError::BadName { line, name: name.trim().into() });
        };
        if mode.is_empty() || test.is_empty() {
            return Err(TapError::BadName { line, name: name.trim().into() });
        }
        let outcome = match directive.and_then(|d| d.strip_prefix("SKIP")) {
            Some(reason) => Outcome::Skip { reason: reason.trim().into() },
            None if passed => Outcome::Pass,
            None => Outcome::Fail { diagnostics: std::mem::take(&mut diag) },
        };
        diag.clear();
        // INVARIANT: `num` was checked to be `cases.len() + 1`.
        r.cases.push(TapCase { number: expected, mode: mode.into(), test: test.into(), outcome });
    }
    log.runs.extend(cur);
    Ok(log)
}

/// The harness's own per-case lines (`OK`, `FAIL`, `SKIP` with their
/// padding, the termination notice), which carry no diagnostic.
fn is_harness_marker(d: &str) -> bool {
    let t = d.trim_start();
    t.starts_with("OK ") || t.starts_with("FAIL ") || t.starts_with("SKIP ") || t.starts_with("Starting ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as the hand runs of 2026-12-01 printed them (the Debian
    /// 7.2.13 kernel with the flags check removed, and 6.12).
    const BROKEN: &str = "\
STINIT: release 7.2.13+deb14-cloud-amd64
STINIT: load irqbypass: ok
STINIT: load vfio: ok
STINIT: bind ivshmem-plain 0000:01:00.0: 0
STINIT: ===== run ivshmem-plain 0000:01:00.0
TAP version 13
1..3
# Starting 3 tests from 5 test cases.
#  RUN           vfio_pci_dmabuf_test.vfio_type1_iommu.nr_ranges_zero ...
#            OK  vfio_pci_dmabuf_test.vfio_type1_iommu.nr_ranges_zero
ok 1 vfio_pci_dmabuf_test.vfio_type1_iommu.nr_ranges_zero
#  RUN           vfio_pci_dmabuf_test.vfio_type1_iommu.flags_nonzero ...
# vfio_pci_dmabuf_test.c:461:flags_nonzero:Expected -EINVAL (-22) == __dmabuf_req(self->device->fd, &req) (6)
# flags_nonzero: Test terminated by assertion
#          FAIL  vfio_pci_dmabuf_test.vfio_type1_iommu.flags_nonzero
not ok 2 vfio_pci_dmabuf_test.vfio_type1_iommu.flags_nonzero
#  RUN           vfio_pci_dmabuf_test.vfio_type1_iommu.io_bar ...
#      SKIP      no I/O BAR

#            OK  vfio_pci_dmabuf_test.vfio_type1_iommu.io_bar
ok 3 vfio_pci_dmabuf_test.vfio_type1_iommu.io_bar # SKIP no I/O BAR
# FAILED: 2 / 3 tests passed.
# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0
STINIT: ===== exit ivshmem-plain 1
STINIT: ===== run pci-testdev 0000:00:02.0
TAP version 13
1..1
#  RUN           vfio_pci_dmabuf_test.iommufd.probe ...
#      SKIP      IOMMU mode iommufd not available
ok 1 vfio_pci_dmabuf_test.iommufd.probe # SKIP IOMMU mode iommufd not available
STINIT: ===== exit pci-testdev 0
STINIT: dmesg: <6>DMA-API: preallocated 65536 debug entries
STINIT: done
[   15.538950] reboot: Power down
";

    #[test]
    fn a_run_with_a_failure_is_read_case_by_case() {
        let log = parse(BROKEN).unwrap();
        assert_eq!(log.release.as_deref(), Some("7.2.13+deb14-cloud-amd64"));
        assert_eq!(log.loads, vec![("irqbypass".into(), "ok".into()), ("vfio".into(), "ok".into())]);
        assert!(log.done);
        assert_eq!(log.dmesg, vec!["<6>DMA-API: preallocated 65536 debug entries".to_string()]);
        let [iv, pt] = &log.runs[..] else { panic!("two runs expected: {:?}", log.runs) };
        assert_eq!((iv.device.as_str(), iv.bdf.as_str()), ("ivshmem-plain", "0000:01:00.0"));
        assert_eq!(iv.plan, Some(3));
        assert_eq!(iv.end, RunEnd::Exited(1));
        assert!(iv.complete());
        assert_eq!(iv.counts(), Counts { pass: 1, fail: 1, skip: 1 });
        assert_eq!(iv.cases[0].outcome, Outcome::Pass);
        assert_eq!((iv.cases[1].mode.as_str(), iv.cases[1].test.as_str()), ("vfio_type1_iommu", "flags_nonzero"));
        assert_eq!(
            iv.cases[1].outcome,
            Outcome::Fail {
                diagnostics: vec![
                    "vfio_pci_dmabuf_test.c:461:flags_nonzero:Expected -EINVAL (-22) == \
                     __dmabuf_req(self->device->fd, &req) (6)"
                        .into(),
                    "flags_nonzero: Test terminated by assertion".into()
                ]
            }
        );
        assert_eq!(iv.cases[2].outcome, Outcome::Skip { reason: "no I/O BAR".into() });
        assert_eq!(iv.totals.as_deref(), Some("Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0"));
        assert_eq!(pt.cases[0].outcome, Outcome::Skip { reason: "IOMMU mode iommufd not available".into() });
        assert_eq!(pt.end, RunEnd::Exited(0));
    }

    #[test]
    fn the_feature_absent_skip_keeps_its_reason() {
        let text = "STINIT: ===== run pci-testdev 0000:00:02.0\n1..1\n\
                    ok 1 vfio_pci_dmabuf_test.vfio_type1_iommu.probe # SKIP VFIO_DEVICE_FEATURE_DMA_BUF not \
                    supported: -25\nSTINIT: ===== exit pci-testdev 0\n";
        let log = parse(text).unwrap();
        assert_eq!(
            log.runs[0].cases[0].outcome,
            Outcome::Skip { reason: "VFIO_DEVICE_FEATURE_DMA_BUF not supported: -25".into() }
        );
        assert!(!log.done);
    }

    #[test]
    fn a_truncated_run_is_unfinished() {
        let text = "STINIT: ===== run ivshmem-plain 0000:01:00.0\n1..145\n\
                    ok 1 vfio_pci_dmabuf_test.vfio_type1_iommu.probe\n\
                    #  RUN           vfio_pci_dmabuf_test.vfio_type1_iommu.argsz_below_feature_header ...\n";
        let log = parse(text).unwrap();
        assert_eq!(log.runs.len(), 1);
        assert_eq!(log.runs[0].end, RunEnd::Unfinished);
        assert!(!log.runs[0].complete());
        let text =
            "STINIT: ===== run ivshmem-plain 0000:01:00.0\n1..2\nok 1 a.b.c\nSTINIT: ===== signal ivshmem-plain 11\n";
        let r = &parse(text).unwrap().runs[0];
        assert_eq!(r.end, RunEnd::Signalled(11));
        assert!(!r.complete(), "one of two cases");
    }

    #[test]
    fn kernel_lines_between_tap_lines_are_ignored() {
        let text = "STINIT: ===== run ivshmem-plain 0000:01:00.0\n1..1\n\
                    [   12.326501] vfio-pci 0000:01:00.0: reset done\n\
                    ok 1 vfio_pci_dmabuf_test.vfio_type1_iommu.probe\nSTINIT: ===== exit ivshmem-plain 0\n";
        assert_eq!(parse(text).unwrap().runs[0].counts(), Counts { pass: 1, fail: 0, skip: 0 });
    }

    #[test]
    fn malformed_lines_are_typed_errors() {
        assert_eq!(parse("ok 1 a.b.c\n"), Err(TapError::OutsideRun { line: 1 }));
        let run = "STINIT: ===== run d 0000:00:02.0\n";
        assert_eq!(
            parse(&format!("{run}ok 1 vfio_pci_dmabuf_test.probe\n")),
            Err(TapError::BadName { line: 2, name: "vfio_pci_dmabuf_test.probe".into() })
        );
        assert_eq!(
            parse(&format!("{run}ok 1 a.b.c\nok 3 a.b.d\n")),
            Err(TapError::BadNumber { line: 3, expected: 2, found: "3".into() })
        );
        assert_eq!(parse("STINIT: ===== run\n"), Err(TapError::BadMarker { line: 1 }));
        assert_eq!(parse("STINIT: ===== exit d x\n"), Err(TapError::BadMarker { line: 1 }));
        assert_eq!(parse("STINIT: ===== exit d 0\n"), Err(TapError::BadMarker { line: 1 }), "exit without run");
        for e in [TapError::OutsideRun { line: 1 }, TapError::BadMarker { line: 2 }] {
            assert!(e.to_string().starts_with("line "), "{e}");
        }
    }

    #[test]
    fn cases_group_by_test_in_mode_order() {
        let text = "STINIT: ===== run d b\n1..4\nok 1 f.m1.probe\nok 2 f.m1.set\nnot ok 3 f.m2.probe\n\
                    ok 4 f.m2.set # SKIP why\nSTINIT: ===== exit d 1\n";
        let log = parse(text).unwrap();
        let g = log.runs[0].by_test();
        let shape: Vec<(&str, String)> =
            g.iter().map(|(t, cs)| (*t, cs.iter().map(|c| c.outcome.letter()).collect())).collect();
        assert_eq!(shape, vec![("probe", "PF".to_string()), ("set", "Ps".to_string())]);
    }
}
