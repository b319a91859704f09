//! The lab matrix (`kernel-lab matrix`): every lab part on every kernel of
//! the matrix, one JSON report and its markdown. Each part runs as its own
//! `kernel-lab` process with `--report`, so a part that fails or hangs
//! costs its own row, never the others'; the matrix reads the parts' typed
//! reports ([`crate::report`]) back and keeps a summary of each beside the
//! file name of the full report.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::report::{ConformanceReport, FaultSweepReport, ImporterLabReport, SelftestReport};

/// One part of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// The conformance batch and the scenarios (`kernel-lab`).
    Conformance,
    /// The importer topologies (`kernel-lab importer`).
    Importer,
    /// The kselftest of `kernel-patches/0007` (`kernel-lab selftest`).
    Selftest,
    /// The fault sweep against kmod-shim (`kernel-lab fault-sweep`).
    Fault,
    /// Scattered framebuffers end to end (`kernel-lab framebuffer`).
    Framebuffer,
    /// iommufd's MAP_FILE of dma-bufs against kmod-shim (`kernel-lab iommufd`).
    Iommufd,
}

impl Part {
    /// Every part, in report order.
    pub const ALL: [Part; 6] =
        [Part::Conformance, Part::Importer, Part::Selftest, Part::Fault, Part::Framebuffer, Part::Iommufd];

    /// The part's name in file names and tables.
    pub const fn name(self) -> &'static str {
        match self {
            Part::Conformance => "conformance",
            Part::Importer => "importer",
            Part::Selftest => "selftest",
            Part::Fault => "fault",
            Part::Framebuffer => "framebuffer",
            Part::Iommufd => "iommufd",
        }
    }
}

/// What one part on one kernel gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartRun {
    /// The `--kernel` value.
    pub kernel: String,
    /// The part.
    pub part: Part,
    /// The command line after `kernel-lab`.
    pub args: Vec<String>,
    /// The process's exit status: 0 agreed, 1 disagreed, 2 could not run.
    pub exit_code: i32,
    /// Wall seconds.
    pub seconds: f64,
    /// The full report, relative to the matrix report's directory.
    pub report_file: String,
    /// The summary read from that report.
    pub summary: Option<Summary>,
}

impl PartRun {
    /// The sanitizer lines of this run.
    pub fn sanitizer(&self) -> Vec<String> {
        match &self.summary {
            Some(Summary::Conformance(c)) => c.sanitizer.clone(),
            Some(Summary::Importer(i)) => i.sanitizer.iter().map(|(t, l)| format!("{t}: {l}")).collect(),
            Some(Summary::Selftest(t)) => t.kernel_reports.clone(),
            Some(Summary::Fault(f)) => f
                .kmemleak
                .iter()
                .map(|(n, site)| format!("kmemleak: {n} objects from {site}"))
                .chain(f.sanitizer.iter().cloned())
                .collect(),
            Some(Summary::Framebuffer(f)) => f.sanitizer.iter().map(|(t, l)| format!("{t}: {l}")).collect(),
            Some(Summary::Iommufd(i)) => i.sanitizer.clone(),
            None => Vec::new(),
        }
    }
}

/// A part's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Summary {
    /// The conformance batch.
    Conformance(ConformanceSummary),
    /// The importer topologies.
    Importer(ImporterSummary),
    /// The kselftest.
    Selftest(SelftestSummary),
    /// The fault sweep.
    Fault(FaultSummary),
    /// The framebuffers.
    Framebuffer(FramebufferSummary),
    /// The iommufd lab.
    Iommufd(IommufdSummary),
}

/// The framebuffer lab on one kernel, in short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FramebufferSummary {
    /// One row per (topology, framebuffer).
    pub rows: Vec<crate::framebuffer::host::FbRow>,
    /// Topologies that could not run: (topology, error).
    pub errors: Vec<(String, String)>,
    /// Sanitizer report lines: (topology, line).
    pub sanitizer: Vec<(String, String)>,
    /// Unexplained disagreements with kmod-shim.
    pub unexplained: usize,
}

impl FramebufferSummary {
    /// One line: per path, the framebuffers read intact as one dma-buf
    /// and as one dma-buf per range.
    pub fn line(&self) -> String {
        use crate::importer::Expect;
        let per_path: Vec<String> =
            [(Expect::IovaPath, "IOVA"), (Expect::PerRangeDirect, "dma-direct"), (Expect::BusAddr, "BUS_ADDR")]
                .iter()
                .filter_map(|&(p, name)| {
                    let rows: Vec<_> = self.rows.iter().filter(|r| r.path == p).collect();
                    if rows.is_empty() {
                        return None;
                    }
                    let intact = rows.iter().filter(|r| r.map == "0" && r.reads > 0 && r.reads_ok == r.reads).count();
                    let w = rows
                        .iter()
                        .filter(|r| r.workaround_reads > 0 && r.workaround_reads_ok == r.workaround_reads)
                        .count();
                    let errs: std::collections::BTreeSet<&str> =
                        rows.iter().filter(|r| r.map != "0").map(|r| r.map.as_str()).collect();
                    let errs = if errs.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", errs.into_iter().collect::<Vec<_>>().join("/"))
                    };
                    Some(format!(
                        "{name}: {intact} of {} framebuffers intact as one dma-buf{errs}, {w} as one per range",
                        rows.len()
                    ))
                })
                .collect();
        format!("{}; {} unexplained; {} topology errors", per_path.join("; "), self.unexplained, self.errors.len())
    }

    /// The summary of a framebuffer report.
    pub fn of(r: &crate::framebuffer::host::FbLabReport) -> Self {
        let mut errors = Vec::new();
        let mut sanitizer = Vec::new();
        for t in &r.topologies {
            if let Some(e) = &t.error {
                errors.push((t.topology.name.clone(), e.clone()));
            }
            for l in t.guest.iter().flat_map(|g| &g.sanitizer).filter(|l| crate::sanitizer::is_report(l)) {
                sanitizer.push((t.topology.name.clone(), l.clone()));
            }
        }
        Self {
            rows: crate::framebuffer::host::rows(r),
            errors,
            sanitizer,
            unexplained: r.topologies.iter().map(|t| t.unexplained).sum(),
        }
    }
}

/// The iommufd lab on one kernel, in short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommufdSummary {
    /// `ran`, `not available: ...` or `error: ...`.
    pub verdict: String,
    /// Steps compared.
    pub steps: usize,
    /// Steps on which kernel and kmod-shim disagree.
    pub disagreements: usize,
    /// The first MAP_FILE answer of each case, as the kernel gave it.
    pub outcomes: Vec<(String, String)>,
    /// Sanitizer lines.
    pub sanitizer: Vec<String>,
}

impl IommufdSummary {
    /// One line: the verdict, the comparison and each case's first MAP_FILE.
    pub fn line(&self) -> String {
        let outcomes: Vec<String> = self.outcomes.iter().map(|(c, a)| format!("{c}: {a}")).collect();
        format!(
            "{}; {} steps, {} disagreements with kmod-shim; first MAP_FILE per case: {}",
            self.verdict,
            self.steps,
            self.disagreements,
            if outcomes.is_empty() { "-".to_string() } else { outcomes.join("; ") }
        )
    }

    /// The summary of an iommufd report.
    pub fn of(r: &crate::iommufd::IommufdLabReport) -> Self {
        let mut outcomes: Vec<(String, String)> = Vec::new();
        for c in r.checks.iter().filter(|c| c.op.starts_with("MAP_FILE")) {
            if !outcomes.iter().any(|(case, _)| *case == c.case) {
                outcomes.push((c.case.clone(), c.kernel.clone()));
            }
        }
        Self {
            verdict: r.verdict.clone(),
            steps: r.checks.len(),
            disagreements: r.disagreements,
            outcomes,
            sanitizer: r.guest.sanitizer.clone(),
        }
    }
}

/// The fault sweep on one kernel, in short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSummary {
    /// The sweep's verdict (or why fault injection is unavailable).
    pub verdict: String,
    /// The kmod-shim mode it was compared with.
    pub shim_fidelity: String,
    /// Failure points that fired, over every operation.
    pub points: usize,
    /// Per defect: (id, verdict, as expected).
    pub defects: Vec<(u8, String, bool)>,
    /// kmemleak: (objects, what allocated them).
    pub kmemleak: Vec<(usize, String)>,
    /// Sanitizer lines other than kmemleak's.
    pub sanitizer: Vec<String>,
    /// Mismatches that fail the sweep.
    pub failures: usize,
}

impl FaultSummary {
    /// The summary of a fault-sweep report.
    pub fn of(r: &FaultSweepReport) -> Self {
        let kmemleak_line = |l: &str| l.contains("unreferenced object") || l.starts_with("kmemleak:");
        Self {
            verdict: r.verdict.clone(),
            shim_fidelity: r.shim_fidelity.clone(),
            points: r.ops.iter().map(|o| o.points.len()).sum(),
            defects: r.defects.iter().map(|d| (d.defect, d.verdict.clone(), d.as_expected)).collect(),
            kmemleak: r.kmemleak_groups.iter().map(|g| (g.count, g.site.clone())).collect(),
            sanitizer: r.sanitizer.iter().map(|l| l.line.clone()).filter(|l| !kmemleak_line(l)).collect(),
            failures: r.failures,
        }
    }
}

/// The kselftest on one kernel, in short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelftestSummary {
    /// Whether the probe found the feature: `present`, `absent`, `unknown`.
    pub feature: String,
    /// Per device: (device, pass, fail, skip) over every test and IOMMU mode.
    pub devices: Vec<(String, u32, u32, u32)>,
    /// Tests that failed where they should pass, plus breakages not caught
    /// as declared.
    pub failures: usize,
    /// The breakages run: (name, caught exactly by the tests it declares).
    pub breakages: Vec<(String, bool)>,
    /// Kernel log problems the selftest run relayed.
    pub kernel_reports: Vec<String>,
}

impl SelftestSummary {
    /// The summary of a selftest report.
    pub fn of(r: &SelftestReport) -> Self {
        let runs = r.kernels.iter();
        Self {
            feature: r.kernels.first().map_or_else(|| "not run".to_string(), |k| k.feature.to_string()),
            devices: runs
                .clone()
                .flat_map(|k| &k.devices)
                .map(|d| (d.device.clone(), d.counts.pass, d.counts.fail, d.counts.skip))
                .collect(),
            failures: r.failures,
            breakages: r.breakages.iter().map(|b| (b.name.clone(), b.as_declared)).collect(),
            kernel_reports: runs.flat_map(|k| k.kernel_reports.iter().cloned()).collect(),
        }
    }
}

/// The conformance batch, in short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConformanceSummary {
    /// `uname -r`.
    pub release: String,
    /// Cases run.
    pub cases: u64,
    /// Cases where kernel and validator disagreed.
    pub disagreements: u64,
    /// Set when the kernel lacks the feature (its probe's errno).
    pub feature_absent: Option<String>,
    /// Scenario facts: (scenario, step, result).
    pub facts: Vec<(String, String, String)>,
    /// Sanitizer report lines.
    #[serde(default)]
    pub sanitizer: Vec<String>,
}

/// One shape of one topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeSummary {
    /// Topology name.
    pub topology: String,
    /// Shape name.
    pub shape: String,
    /// `nr_ranges`.
    pub nr_ranges: usize,
    /// The export's answer.
    pub export: String,
    /// The map's errno name, or `0`.
    pub map: String,
    /// DMA entries of the mapping.
    pub entries: u32,
    /// edu's reads that returned the right bytes, of all reads.
    pub reads_ok: usize,
    /// edu's reads.
    pub reads: usize,
}

/// The importer topologies, in short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImporterSummary {
    /// Every shape of every topology that ran.
    pub shapes: Vec<ShapeSummary>,
    /// Compared fields where kernel and kmod-shim disagree without a
    /// FINDINGS entry.
    pub unexplained: usize,
    /// Topologies that could not run: (name, error).
    pub errors: Vec<(String, String)>,
    /// Sanitizer report lines: (topology, line).
    #[serde(default)]
    pub sanitizer: Vec<(String, String)>,
}

impl ConformanceSummary {
    /// The summary of a conformance report.
    pub fn of(r: &ConformanceReport) -> Self {
        Self {
            release: r.kernel.clone(),
            cases: r.cases,
            disagreements: r.disagreements,
            feature_absent: r.feature_absent.clone(),
            facts: r.scenario_facts.iter().map(|f| (f.scenario.clone(), f.step.clone(), f.result.clone())).collect(),
            sanitizer: r.sanitizer.iter().filter(|l| crate::sanitizer::is_report(l)).cloned().collect(),
        }
    }
}

fn errno_name(e: Option<i32>) -> String {
    match e {
        None => "-".into(),
        Some(0) => "0".into(),
        Some(e) => crate::proto::KernelErrno(e.saturating_neg()).to_string(),
    }
}

impl ImporterSummary {
    /// The summary of an importer report.
    pub fn of(r: &ImporterLabReport) -> Self {
        let mut shapes = Vec::new();
        let mut errors = Vec::new();
        let mut sanitizer = Vec::new();
        for t in &r.topologies {
            for l in t.guest.iter().flat_map(|g| &g.sanitizer).filter(|l| crate::sanitizer::is_report(l)) {
                sanitizer.push((t.topology.name.clone(), l.clone()));
            }
            if let Some(e) = &t.error {
                errors.push((t.topology.name.clone(), e.clone()));
            }
            for s in t.guest.iter().flat_map(|g| &g.shapes) {
                shapes.push(ShapeSummary {
                    topology: t.topology.name.clone(),
                    shape: s.name.clone(),
                    nr_ranges: s.ranges.len(),
                    export: s.export.clone(),
                    map: errno_name(s.map_err),
                    entries: s.total_entries,
                    reads_ok: s.reads.iter().filter(|x| x.result == "ok").count(),
                    reads: s.reads.len(),
                });
            }
        }
        let unexplained = r.topologies.iter().map(|t| t.unexplained).sum();
        Self { shapes, unexplained, errors, sanitizer }
    }
}

/// `kernel-lab matrix --report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixReport {
    /// When it ran (UTC).
    pub date: String,
    /// The `--kernel` values, in column order.
    pub kernels: Vec<String>,
    /// The lab builds' records (times, keys, patches).
    pub lab_builds: crate::lab_kernel::LabBuilds,
    /// Every part on every kernel.
    pub runs: Vec<PartRun>,
    /// Wall seconds of the whole matrix.
    pub wall_seconds: f64,
}

impl MatrixReport {
    /// The run of `part` on `kernel`.
    pub fn run(&self, kernel: &str, part: Part) -> Option<&PartRun> {
        self.runs.iter().find(|r| r.kernel == kernel && r.part == part)
    }

    /// The worst exit status of all runs (0 when everything agreed); a
    /// sanitizer report on the patched lab kernel counts as a disagreement
    /// (the series must leave it clean), on other kernels it is listed.
    pub fn exit_code(&self) -> i32 {
        let worst = self.runs.iter().map(|r| r.exit_code).max().unwrap_or(0);
        let dirty = self
            .runs
            .iter()
            .any(|r| r.kernel == crate::lab_kernel::LabVariant::Patched.name() && !r.sanitizer().is_empty());
        if dirty {
            worst.max(1)
        } else {
            worst
        }
    }

    /// The markdown page: the lab builds, one row per part and kernel, and
    /// the importer's shapes side by side per kernel.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Lab matrix ({})\n", self.date);
        if let Some(t) = &self.lab_builds.tree {
            let _ = writeln!(
                md,
                "## Lab kernels\n\nOne tree: {} {} built cold as shipped (key `{}`, {}; unpack {:.0} s, configure {:.0} \
                 s, make -j{} {:.0} s); each variant applies its patches to it and rebuilds incrementally.\n\n\
                 | variant | key | patches | rebuild |\n| --- | --- | --- | --- |",
                crate::lab_kernel::SOURCE_PKG_NAME,
                t.source_version,
                t.key,
                t.gcc,
                t.unpack_seconds,
                t.configure_seconds,
                t.jobs,
                t.build_seconds
            );
            for v in &self.lab_builds.variants {
                let patches =
                    if v.patches.is_empty() { "none (as Debian ships it)".to_string() } else { v.patches.join(", ") };
                let _ = writeln!(md, "| {} | `{}` | {patches} | {:.0} s |", v.variant, v.key, v.rebuild_seconds);
            }
            md.push('\n');
        }
        md.push_str(
            "## Parts\n\n| part | kernel | exit | seconds | result | sanitizer lines |\n| --- | --- | --- | --- | --- | --- |\n",
        );
        for r in &self.runs {
            let result = match &r.summary {
                None => "no report".to_string(),
                Some(Summary::Conformance(c)) => match &c.feature_absent {
                    Some(e) => format!("{}: feature absent (probe: {e})", c.release),
                    None => format!("{}: {} cases, {} disagreements", c.release, c.cases, c.disagreements),
                },
                Some(Summary::Fault(f)) => {
                    let defects: Vec<String> = f
                        .defects
                        .iter()
                        .map(|(id, v, ok)| format!("{id}: {v}{}", if *ok { "" } else { " (UNEXPECTED)" }))
                        .collect();
                    format!(
                        "{}; {} points; defects {}; {} mismatches (shim {})",
                        f.verdict,
                        f.points,
                        if defects.is_empty() { "-".to_string() } else { defects.join("; ") },
                        f.failures,
                        f.shim_fidelity
                    )
                }
                Some(Summary::Iommufd(i)) => i.line(),
                Some(Summary::Selftest(t)) => {
                    let devices: Vec<String> =
                        t.devices.iter().map(|(d, p, f, s)| format!("{d} {p} pass / {f} fail / {s} skip")).collect();
                    let breakages: Vec<String> = t
                        .breakages
                        .iter()
                        .map(|(n, ok)| format!("{n} {}", if *ok { "caught" } else { "NOT caught as declared" }))
                        .collect();
                    format!(
                        "feature {}; {}{}",
                        t.feature,
                        devices.join("; "),
                        if breakages.is_empty() {
                            String::new()
                        } else {
                            format!("; breakages: {}", breakages.join(", "))
                        }
                    )
                }
                Some(Summary::Framebuffer(f)) => f.line(),
                Some(Summary::Importer(i)) => {
                    let mapped = i.shapes.iter().filter(|s| s.map == "0").count();
                    let intact = i.shapes.iter().filter(|s| s.map == "0" && s.reads_ok == s.reads).count();
                    format!(
                        "{} shapes: {mapped} mapped, {intact} read intact by edu; {} unexplained; {} topology errors",
                        i.shapes.len(),
                        i.unexplained,
                        i.errors.len()
                    )
                }
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.0} | {} | {} |",
                r.part.name(),
                r.kernel,
                r.exit_code,
                r.seconds,
                result,
                r.sanitizer().len()
            );
        }
        let dirty: Vec<&PartRun> = self.runs.iter().filter(|r| !r.sanitizer().is_empty()).collect();
        if !dirty.is_empty() {
            md.push_str("\n## Sanitizer reports\n\n");
            for r in dirty {
                for l in r.sanitizer() {
                    let _ = writeln!(md, "- {} on {}: `{l}`", r.part.name(), r.kernel);
                }
            }
        }
        md.push_str(&self.shapes_table());
        let fb: Vec<crate::framebuffer::host::FbRow> = self
            .runs
            .iter()
            .filter_map(|r| match &r.summary {
                Some(Summary::Framebuffer(f)) => Some(f.rows.iter().map(|x| {
                    let mut x = x.clone();
                    x.kernel.clone_from(&r.kernel);
                    x
                })),
                _ => None,
            })
            .flatten()
            .collect();
        if !fb.is_empty() {
            md.push_str("\n## Framebuffers\n\n");
            md.push_str(&crate::framebuffer::host::table(&fb));
        }
        let _ = writeln!(md, "\nWall time: {:.0} s.", self.wall_seconds);
        md
    }

    /// The importer's shapes, one row per (topology, shape), one column per
    /// kernel: the map's answer and edu's reads.
    fn shapes_table(&self) -> String {
        let per_kernel: Vec<(&str, &ImporterSummary)> = self
            .kernels
            .iter()
            .filter_map(|k| match self.run(k, Part::Importer).and_then(|r| r.summary.as_ref()) {
                Some(Summary::Importer(i)) => Some((k.as_str(), i)),
                _ => None,
            })
            .collect();
        let Some((_, first)) = per_kernel.first() else { return String::new() };
        let mut md = String::from("\n## Importer shapes, kernel by kernel\n\n| topology | shape | nr_ranges |");
        for (k, _) in &per_kernel {
            let _ = write!(md, " {k} |");
        }
        md.push_str("\n| --- | --- | --- |");
        for _ in &per_kernel {
            md.push_str(" --- |");
        }
        md.push('\n');
        for s in &first.shapes {
            let _ = write!(md, "| {} | {} | {} |", s.topology, s.shape, s.nr_ranges);
            for (_, i) in &per_kernel {
                let cell = i.shapes.iter().find(|x| x.topology == s.topology && x.shape == s.shape).map_or_else(
                    || "not run".to_string(),
                    |x| {
                        if x.map == "0" {
                            format!("mapped, {} entries, edu {}/{}", x.entries, x.reads_ok, x.reads)
                        } else if x.map == "-" {
                            format!("export {}", x.export)
                        } else {
                            format!("map {}", x.map)
                        }
                    },
                );
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(topology: &str, map: &str, ok: usize) -> ShapeSummary {
        ShapeSummary {
            topology: topology.into(),
            shape: "two-pages".into(),
            nr_ranges: 2,
            export: "lseek(SEEK_END)=8192".into(),
            map: map.into(),
            entries: 1,
            reads_ok: ok,
            reads: 2,
        }
    }

    #[test]
    fn the_shapes_table_puts_kernels_side_by_side() {
        let run = |kernel: &str, s: ShapeSummary, code| PartRun {
            kernel: kernel.into(),
            part: Part::Importer,
            args: vec![],
            exit_code: code,
            seconds: 1.0,
            report_file: format!("{kernel}-importer.json"),
            summary: Some(Summary::Importer(ImporterSummary {
                shapes: vec![s],
                unexplained: 0,
                errors: vec![],
                sanitizer: vec![],
            })),
        };
        let m = MatrixReport {
            date: "2026-12-01".into(),
            kernels: vec!["lab-shipped".into(), "lab-patched".into()],
            lab_builds: Default::default(),
            runs: vec![
                run("lab-shipped", shape("rc-epyc-iova", "EADDRINUSE", 0), 0),
                run("lab-patched", shape("rc-epyc-iova", "0", 2), 1),
            ],
            wall_seconds: 2.0,
        };
        let md = m.markdown();
        assert!(md.contains("| rc-epyc-iova | two-pages | 2 | map EADDRINUSE | mapped, 1 entries, edu 2/2 |"), "{md}");
        assert_eq!(m.exit_code(), 1);
    }

    #[test]
    fn errno_names_from_negative_codes() {
        assert_eq!(errno_name(Some(-98)), "EADDRINUSE");
        assert_eq!(errno_name(Some(0)), "0");
        assert_eq!(errno_name(None), "-");
    }
}
