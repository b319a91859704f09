//! `kernel-lab matrix`: builds both lab kernels, runs every part on every
//! kernel as its own `kernel-lab` process, and writes one report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kernel_lab::framebuffer::host::FbLabReport;
use kernel_lab::host::{self, progress, LabError};
use kernel_lab::lab_kernel::{self, LabVariant};
use kernel_lab::matrix::{
    ConformanceSummary, FaultSummary, FramebufferSummary, ImporterSummary, IommufdSummary, MatrixReport, Part, PartRun,
    SelftestSummary, Summary,
};
use kernel_lab::report::{ConformanceReport, FaultSweepReport, ImporterLabReport, SelftestReport};

#[derive(clap::Args, Debug)]
pub struct MatrixArgs {
    /// The kernels, comma-separated: Debian versions (7.2.13, 6.12, ...)
    /// and the lab builds (lab-shipped, lab-patched).
    #[arg(long, value_delimiter = ',', default_value = "7.2.13,lab-shipped,lab-patched,6.12")]
    kernels: Vec<String>,
    /// CI size: 2,000 conformance cases, the one IOVA topology, no
    /// selftest breakages, the fault sweep's quick set, one framebuffer
    /// (4K at 90%) on the IOVA path.
    #[arg(long)]
    quick: bool,
    /// Conformance cases per kernel (default 20,000; 2,000 with --quick).
    #[arg(long)]
    cases: Option<u64>,
    /// Importer topologies (default: all; rc-epyc-iova with --quick).
    #[arg(long)]
    topology: Option<String>,
    /// Only these parts (comma-separated: conformance, selftest, importer,
    /// fault, framebuffer, iommufd; `none` re-renders the report from the kept runs);
    /// the other parts' runs are kept from an existing matrix.json in
    /// --out, so one part can be re-run or added.
    #[arg(long, value_delimiter = ',')]
    parts: Option<Vec<String>>,
    /// The directory for the reports: matrix.json, matrix.md and each
    /// part's own report and log.
    #[arg(long, default_value = "lab-matrix")]
    out: PathBuf,
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Runs `kernel-lab ARGS --report out/FILE` with its output in
/// `out/FILE.log`.
fn part_run(out: &Path, kernel: &str, part: Part, args: Vec<String>) -> Result<PartRun, LabError> {
    let file = format!("{kernel}-{}.json", part.name());
    let report = out.join(&file);
    let log = out.join(format!("{kernel}-{}.log", part.name()));
    let exe = std::env::current_exe().map_err(|e| LabError::Io(format!("current_exe: {e}")))?;
    // A rebuild while the matrix runs replaces the binary, and Linux then
    // names the running one "<path> (deleted)": run the new one.
    let exe = exe.to_str().and_then(|p| p.strip_suffix(" (deleted)")).map_or(exe.clone(), std::path::PathBuf::from);
    progress(format!("matrix: {} on {kernel} (log: {})", part.name(), log.display()));
    let f = std::fs::File::create(&log).map_err(|e| LabError::Io(format!("create {}: {e}", log.display())))?;
    let f2 = f.try_clone().map_err(|e| LabError::Io(format!("log: {e}")))?;
    let t = Instant::now();
    let _ = std::fs::remove_file(&report);
    let status = Command::new(exe)
        .args(&args)
        .arg("--report")
        .arg(&report)
        .stdout(f)
        .stderr(f2)
        .status()
        .map_err(|e| LabError::Command { what: format!("kernel-lab {}", args.join(" ")), detail: e.to_string() })?;
    let summary = summarize(part, &report);
    Ok(PartRun {
        kernel: kernel.to_string(),
        part,
        args,
        exit_code: status.code().unwrap_or(2),
        seconds: t.elapsed().as_secs_f64(),
        report_file: file,
        summary,
    })
}

/// A part's summary, read from its report.
fn summarize(part: Part, report: &Path) -> Option<Summary> {
    match part {
        Part::Conformance => {
            read::<ConformanceReport>(report).map(|r| Summary::Conformance(ConformanceSummary::of(&r)))
        }
        Part::Importer => read::<ImporterLabReport>(report).map(|r| Summary::Importer(ImporterSummary::of(&r))),
        Part::Selftest => read::<SelftestReport>(report).map(|r| Summary::Selftest(SelftestSummary::of(&r))),
        Part::Fault => read::<FaultSweepReport>(report).map(|r| Summary::Fault(FaultSummary::of(&r))),
        Part::Framebuffer => read::<FbLabReport>(report).map(|r| Summary::Framebuffer(FramebufferSummary::of(&r))),
        Part::Iommufd => {
            read::<kernel_lab::iommufd::IommufdLabReport>(report).map(|r| Summary::Iommufd(IommufdSummary::of(&r)))
        }
    }
}

pub fn run(a: &MatrixArgs) -> Result<i32, LabError> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&a.out).map_err(|e| LabError::Io(format!("create {}: {e}", a.out.display())))?;
    let root = host::cache_root()?;
    let mut lab_builds = lab_kernel::LabBuilds::default();
    for k in &a.kernels {
        if let Some(v) = LabVariant::from_name(k) {
            lab_builds.push(&lab_kernel::ensure(&root, v, &lab_kernel::series_dir())?);
        }
    }
    let cases = a.cases.unwrap_or(if a.quick { 2_000 } else { 20_000 });
    let topology = a.topology.clone().unwrap_or_else(|| if a.quick { "rc-epyc-iova".into() } else { "all".into() });
    let wanted: Vec<Part> = match &a.parts {
        None => Part::ALL.to_vec(),
        Some(names) if names.iter().all(|n| n == "none") => Vec::new(),
        Some(names) => names
            .iter()
            .map(|n| {
                Part::ALL.into_iter().find(|p| p.name() == n).ok_or_else(|| {
                    let known: Vec<&str> = Part::ALL.iter().map(|p| p.name()).collect();
                    LabError::Io(format!("unknown part {n}; known: {}", known.join(", ")))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let previous: Option<MatrixReport> = a.parts.as_ref().and_then(|_| read(&a.out.join("matrix.json")));
    let mut runs = Vec::new();
    for k in &a.kernels {
        let run_part = |part: Part, args: Vec<String>| -> Result<Option<PartRun>, LabError> {
            if wanted.contains(&part) {
                return part_run(&a.out, k, part, args).map(Some);
            }
            // Kept from the last matrix, its summary read again from its
            // report (so summary code changes apply to old runs too).
            Ok(previous.as_ref().and_then(|m| m.run(k, part)).cloned().map(|mut r| {
                if let Some(s) = summarize(part, &a.out.join(&r.report_file)) {
                    r.summary = Some(s);
                }
                r
            }))
        };
        let conf =
            run_part(Part::Conformance, vec!["--kernel".into(), k.clone(), "--cases".into(), cases.to_string()])?;
        let absent = matches!(conf.as_ref().and_then(|c| c.summary.as_ref()), Some(Summary::Conformance(c)) if c.feature_absent.is_some());
        runs.extend(conf);
        // The selftest runs on a kernel without the feature too: it must
        // skip cleanly there.
        let mut st = vec!["selftest".into(), "--kernel".into(), k.clone()];
        if !a.quick && k.as_str() == LabVariant::Shipped.name() {
            st.push("--breakages".into());
        }
        runs.extend(run_part(Part::Selftest, st)?);
        if absent {
            progress(format!("matrix: {k} lacks the feature; its other parts are skipped"));
            continue;
        }
        runs.extend(run_part(
            Part::Importer,
            vec!["importer".into(), "--kernel".into(), k.clone(), "--topology".into(), topology.clone()],
        )?);
        let mut fault = vec!["fault-sweep".into(), "--kernel".into(), k.clone()];
        if a.quick {
            fault.push("--quick".into());
        }
        runs.extend(run_part(Part::Fault, fault)?);
        let mut fb = vec!["framebuffer".into(), "--kernel".into(), k.clone()];
        if a.quick {
            // The acceptance case on the IOVA path.
            fb.extend(["--only", "8GiB-4k-900-0/4K", "--topology", "rc-epyc-iova-large"].map(String::from));
        }
        runs.extend(run_part(Part::Framebuffer, fb)?);
        runs.extend(run_part(Part::Iommufd, vec!["iommufd".into(), "--kernel".into(), k.clone()])?);
    }
    let mut kernels = a.kernels.clone();
    if let Some(prev) = &previous {
        for r in &prev.runs {
            if !a.kernels.contains(&r.kernel) {
                runs.push(r.clone());
            }
        }
        kernels = prev.kernels.clone();
        for k in &a.kernels {
            if !kernels.contains(k) {
                kernels.push(k.clone());
            }
        }
        runs.sort_by_key(|r| {
            (kernels.iter().position(|k| *k == r.kernel), Part::ALL.iter().position(|p| *p == r.part))
        });
    }
    let report = MatrixReport {
        date: kernel_lab::conformance::corpus::utc_now(),
        kernels,
        // Runs kept from the last matrix keep their lab builds' records.
        lab_builds: match &previous {
            Some(prev) if lab_builds.variants.len() < prev.lab_builds.variants.len() => prev.lab_builds.clone(),
            _ => lab_builds,
        },
        runs,
        wall_seconds: t0.elapsed().as_secs_f64() + previous.as_ref().map_or(0.0, |p| p.wall_seconds),
    };
    let md = report.markdown();
    println!("{md}");
    let json = serde_json::to_string_pretty(&report).map_err(|e| LabError::Io(format!("report: {e}")))?;
    let jp = a.out.join("matrix.json");
    std::fs::write(&jp, json + "\n").map_err(|e| LabError::Io(format!("write {}: {e}", jp.display())))?;
    std::fs::write(a.out.join("matrix.md"), md).map_err(|e| LabError::Io(format!("write matrix.md: {e}")))?;
    progress(format!("matrix report: {} and matrix.md", jp.display()));
    Ok(report.exit_code())
}
