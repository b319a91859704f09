//! The real kernel's facts: the kernel lab run as a subprocess, its JSON
//! report kept as evidence, and turned into tables.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// kernel-lab's `--report` JSON, as kernel-lab defines it.
pub use kernel_lab::report::ConformanceReport as LabReport;
/// kernel-lab's `importer --report` JSON, as kernel-lab defines it.
pub use kernel_lab::report::ImporterLabReport;

/// Why the lab gave no fresh report.
#[derive(Debug)]
pub enum LabError {
    /// `cargo` could not be started.
    Spawn(std::io::Error),
    /// The deadline passed; the lab was killed.
    Timeout(Duration),
    /// The lab exited non-zero (2: could not run; 1: disagreements).
    Exit {
        /// Exit code.
        code: Option<i32>,
        /// The last lines of its stderr.
        stderr_tail: String,
    },
    /// The report is missing or not the expected JSON.
    Report(String),
}

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabError::Spawn(e) => write!(f, "could not start cargo: {e}"),
            LabError::Timeout(d) => write!(f, "no report within {} s (killed)", d.as_secs()),
            LabError::Exit { code, stderr_tail } => write!(f, "kernel-lab exited with {code:?}: {stderr_tail}"),
            LabError::Report(e) => write!(f, "report: {e}"),
        }
    }
}

impl std::error::Error for LabError {}

/// Parses a conformance report.
pub fn parse(json: &str) -> Result<LabReport, LabError> {
    serde_json::from_str(json).map_err(|e| LabError::Report(e.to_string()))
}

/// Parses an importer report.
pub fn parse_importer(json: &str) -> Result<ImporterLabReport, LabError> {
    serde_json::from_str(json).map_err(|e| LabError::Report(e.to_string()))
}

/// Runs `cargo run --release -p kernel-lab -- --kernel 7.2 --cases N --seed
/// S --report PATH` from `root`, killing it at `timeout`. Its output goes to
/// `log` (stdout and stderr), so a failure can be read afterwards.
pub fn run(
    root: &Path,
    cases: u64,
    seed: u64,
    report: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<LabReport, LabError> {
    let _ = std::fs::remove_file(report);
    let out = std::fs::File::create(log).map_err(LabError::Spawn)?;
    let err = out.try_clone().map_err(LabError::Spawn)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(root)
        .args(["run", "--release", "--quiet", "-p", "kernel-lab", "--", "--kernel", "7.2"])
        .args(["--cases", &cases.to_string(), "--seed", &seed.to_string(), "--report"])
        .arg(report)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(LabError::Spawn)?;
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(LabError::Spawn)? {
            break s;
        }
        if t0.elapsed() > timeout {
            // Kills cargo (the child we started); its own child, the lab,
            // exits when QEMU's deadline (--timeout) passes.
            let _ = child.kill();
            let _ = child.wait();
            return Err(LabError::Timeout(timeout));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
        return Err(LabError::Exit { code: status.code(), stderr_tail: tail });
    }
    let json = std::fs::read_to_string(report).map_err(|e| LabError::Report(e.to_string()))?;
    parse(&json)
}

/// The facts table (markdown).
pub fn markdown(r: &LabReport, provenance: &str) -> String {
    let mut s = format!(
        "Kernel **{}** (Debian `{}`), {provenance}.\n\n\
         Conformance: {} generated requests (seed {}), **{} disagreements** between the kernel and \
         `validator::validate(.., Policy::Linux)`; {:.0} ioctls/s in the guest (TCG).\n\n",
        r.kernel, r.kernel_package, r.cases, r.seed, r.disagreements, r.cases_per_sec
    );
    s.push_str("| kernel answer | cases |\n|---|---:|\n");
    for (k, v) in &r.kernel_answers {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    if !r.scenario_facts.is_empty() {
        s.push_str(
            "\nScenario facts (measured on the running kernel):\n\n| scenario | step | result |\n|---|---|---|\n",
        );
        for f in &r.scenario_facts {
            s.push_str(&format!("| {} | {} | `{}` |\n", f.scenario, f.step, f.result.replace('|', "\\|")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_report_and_tolerates_extra_fields() {
        let j = r#"{"kernel":"7.2.13+deb14-cloud-amd64","kernel_package":"p","kernel_note":null,"seed":1,"cases":10,
            "disagreements":0,"cases_per_sec":5.0,"guest_loop_seconds":1.0,"guest_setup_seconds":1.0,
            "boot_and_run_seconds":1.0,"wall_seconds":1.0,"devices":[],"kernel_answers":{"EINVAL":10},
            "predicted_checks":{"NoRanges":10},"disagreement_classes":[],
            "scenario_facts":[{"scenario":"open-flags","step":"open_flags 0xffffffff","result":"F_GETFL=0o4003"}],"new":1}"#;
        let r = parse(j).unwrap();
        assert_eq!(r.cases, 10);
        assert_eq!(r.fact("open-flags", "open_flags 0xff"), Some("F_GETFL=0o4003"));
        assert!(markdown(&r, "fresh").contains("**0 disagreements**"));
        assert!(matches!(parse("{}"), Err(LabError::Report(_))));
    }

    /// The committed evidence reads as kernel-lab's own types, and writes
    /// back as the same JSON.
    #[test]
    fn committed_evidence_is_the_lab_schema() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("evidence");
        let text = std::fs::read_to_string(dir.join("kernel-lab-report.json")).unwrap();
        let r = parse(&text).unwrap();
        assert_eq!(serde_json::to_string_pretty(&r).unwrap() + "\n", text);
        let text = std::fs::read_to_string(dir.join("kernel-importer-7.2.json")).unwrap();
        let r = parse_importer(&text).unwrap();
        assert!(r.checks().count() > 100);
        assert_eq!(serde_json::to_string_pretty(&r).unwrap() + "\n", text);
    }
}
