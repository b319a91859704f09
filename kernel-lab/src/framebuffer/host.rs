//! The framebuffer lab's host side: the machines (the importer lab's
//! topologies with an 8 GiB VRAM BAR), kmod-shim's prediction of every
//! framebuffer, the comparison, and the summary rows the RFC and the matrix
//! print.

use std::fmt::Write as _;
use std::path::Path;

use kmod_shim::Fidelity;
use serde::{Deserialize, Serialize};

use super::{spans, FbPlacement, FbReport, GuestOptions, VRAM_SIZE};
use crate::importer::host::{self as importer_host, predict_shape, Check};
use crate::importer::{topologies as importer_topologies, Expect, ImporterReport, Topology};
use crate::proto::KernelErrno;
use crate::qemu::Qemu;

/// The topologies, one per map path, each with ivshmem's BAR2 at
/// [`VRAM_SIZE`]: the IOVA path (intel-iommu translating), per-range
/// dma-direct (`iommu=pt`) and BUS_ADDR (behind one switch).
pub fn topologies() -> Vec<Topology> {
    let by_name = |n: &str| importer_topologies().into_iter().find(|t| t.name == n);
    [("rc-epyc-iova-large", "rc-epyc-iova-large"), ("rc-epyc-pt", "rc-epyc-pt-large"), ("switch", "switch-large")]
        .into_iter()
        .filter_map(|(base, name)| {
            let t = by_name(base)?;
            Some(Topology { name: name.into(), ivshmem_size: VRAM_SIZE.into(), ..t })
        })
        .collect()
}

/// The machine: the importer lab's for `topo`, in framebuffer mode.
pub fn machine(topo: &Topology, vmlinuz: &Path, initramfs: &Path, run_dir: &Path, opt: GuestOptions) -> Qemu {
    importer_host::machine(topo, vmlinuz, initramfs, run_dir, None).append(&format!(
        "nrlab.mode=framebuffer nrlab.fb_lines={} nrlab.fb_workaround={}",
        opt.lines,
        u8::from(opt.workaround)
    ))
}

fn errno_str(e: Option<i32>) -> String {
    match e {
        None => "-".into(),
        Some(0) => "0".into(),
        Some(e) => KernelErrno(-e).to_string(),
    }
}

/// Whether every read came back intact, and the text: `all N ok` or `K of
/// N not ok`.
fn reads_verdict(oks: impl Iterator<Item = bool>) -> (bool, String) {
    let (mut n, mut bad) = (0, 0);
    for ok in oks {
        n += 1;
        bad += usize::from(!ok);
    }
    if bad == 0 {
        (true, format!("all {n} ok"))
    } else {
        (false, format!("{bad} of {n} not ok"))
    }
}

/// Compares every framebuffer with kmod-shim in `fidelity`: export, attach
/// and map errno, the number of DMA entries and spans, and whether every
/// read reaches the framebuffer's bytes; for the workaround, how many
/// ranges mapped and their entries. The shim's reads are its own read plan
/// (each range's start and end), the kernel's are the samples; both say
/// whether the peer reaches the right bytes.
pub fn compare(rep: &FbReport, topo: &Topology, fidelity: Fidelity) -> Vec<Check> {
    let ctx = ImporterReport { ivshmem: rep.ivshmem.clone(), ..Default::default() };
    let mut out = Vec::new();
    let mut push = |what: &str, field: &str, agree: bool, kernel: String, shim: String| {
        let explained = (!agree && topo.expect == Expect::BusAddr && field.contains("reads"))
            .then(|| "F4: QEMU sends all DMA through the vIOMMU; no switch-local P2P".to_string());
        out.push(Check { what: what.into(), field: field.into(), kernel, shim, agree, explained });
    };
    let eq = |k: String, s: String| (k == s, k, s);
    // The reads: the same verdict (every one intact, or not), whatever the
    // number of reads on each side.
    let reads = |k: (bool, String), s: (bool, String)| (k.0 == s.0, k.1, s.1);
    for c in &rep.cases {
        let mut add = |field: &str, (agree, k, s): (bool, String, String)| push(&c.name, field, agree, k, s);
        if let Some(e) = &c.write_error {
            add("pattern written", eq(e.clone(), "every line".into()));
            continue;
        }
        let p = predict_shape(&ctx, topo.expect, &c.ranges, fidelity);
        let m = &c.multi;
        add("export", eq(m.export.clone(), p.export.clone()));
        add("attach", eq(errno_str(m.attach_err), errno_str(p.attach_err)));
        add("map", eq(errno_str(m.map_err), errno_str(p.map_err)));
        if m.map_err == Some(0) || p.map_err == Some(0) {
            add("entries", eq(m.total_entries.to_string(), p.entries.len().to_string()));
            add("spans", eq(m.spans.to_string(), spans(&p.entries).to_string()));
            add(
                "edu reads",
                reads(
                    reads_verdict(m.reads.iter().map(|r| r.result == "ok")),
                    reads_verdict(p.reads_ok.iter().copied()),
                ),
            );
        }
        if let Some(w) = &c.workaround {
            let per: Vec<_> = c.ranges.iter().map(|&r| predict_shape(&ctx, topo.expect, &[r], fidelity)).collect();
            let mapped = per.iter().take_while(|x| x.map_err == Some(0)).count();
            add("workaround: mapped", eq(w.mapped.to_string(), mapped.to_string()));
            if w.first_error.is_none() {
                let entries: usize = per.iter().map(|x| x.entries.len()).sum();
                add("workaround: entries", eq(w.total_entries.to_string(), entries.to_string()));
                add(
                    "workaround: edu reads",
                    reads(
                        reads_verdict(w.reads.iter().map(|r| r.result == "ok")),
                        reads_verdict(per.iter().flat_map(|x| x.reads_ok.iter().copied())),
                    ),
                );
            }
        }
    }
    out
}

/// One topology of a framebuffer run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FbTopologyResult {
    /// The topology.
    pub topology: Topology,
    /// Seconds the boot took.
    pub boot_seconds: f64,
    /// Why the topology could not run.
    pub error: Option<String>,
    /// The guest's report.
    pub guest: Option<FbReport>,
    /// kmod-shim's predictions against the guest's answers.
    pub checks: Vec<Check>,
    /// Checks that disagree.
    pub disagreements: usize,
    /// Disagreements not explained by FINDINGS.md (these fail the run).
    pub unexplained: usize,
}

/// `kernel-lab framebuffer --report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FbLabReport {
    /// `uname -r` of the kernel's package.
    pub kernel: String,
    /// The `--kernel` asked for (`7.2`, `lab-shipped`, ...).
    pub kernel_request: String,
    /// Package, version, suite.
    pub kernel_package: String,
    /// The placements, in order.
    pub placements: Vec<FbPlacement>,
    /// Per topology.
    pub topologies: Vec<FbTopologyResult>,
    /// Seconds for the whole command.
    pub wall_seconds: f64,
}

/// One framebuffer on one topology: the summary the RFC's table and the
/// matrix print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FbRow {
    /// `--kernel`.
    pub kernel: String,
    /// Topology.
    pub topology: String,
    /// The predicted path.
    pub path: Expect,
    /// Placement name.
    pub name: String,
    /// Resolution.
    pub resolution: String,
    /// Occupancy, permille.
    pub occupancy_permille: u32,
    /// Chunk.
    pub chunk: u64,
    /// Bytes.
    pub bytes: u64,
    /// Whether a contiguous allocation would have worked.
    pub contiguous: bool,
    /// `nr_ranges` of the one dma-buf.
    pub nr_ranges: usize,
    /// Map: `0` or the errno (or where it stopped before).
    pub map: String,
    /// DMA entries and spans of the one mapping.
    pub entries: u32,
    /// Spans of the one mapping.
    pub spans: usize,
    /// Samples read intact / read.
    pub reads_ok: usize,
    /// Samples.
    pub reads: usize,
    /// Workaround: dma-bufs mapped / ranges.
    pub workaround_mapped: usize,
    /// Workaround: spans the importer holds.
    pub workaround_spans: usize,
    /// Workaround: samples intact.
    pub workaround_reads_ok: usize,
    /// Workaround: samples read.
    pub workaround_reads: usize,
    /// Guest seconds, export to mapping: one dma-buf.
    pub setup_seconds: f64,
    /// The same for the workaround.
    pub workaround_setup_seconds: f64,
    /// Checks against kmod-shim that disagree without explanation.
    pub unexplained: usize,
}

/// The summary rows of a report.
pub fn rows(rep: &FbLabReport) -> Vec<FbRow> {
    let mut v = Vec::new();
    for t in &rep.topologies {
        let Some(g) = &t.guest else { continue };
        for (c, p) in g.cases.iter().zip(&rep.placements) {
            let m = &c.multi;
            let w = c.workaround.clone().unwrap_or_default();
            let map = if c.write_error.is_some() {
                "pattern not written".into()
            } else if m.attach_err.is_some_and(|e| e != 0) {
                format!("attach {}", errno_str(m.attach_err))
            } else if m.map_err.is_none() {
                format!("export {}", m.export)
            } else {
                errno_str(m.map_err)
            };
            let unexplained = t.checks.iter().filter(|k| k.what == c.name && !k.agree && k.explained.is_none()).count();
            v.push(FbRow {
                kernel: rep.kernel_request.clone(),
                topology: t.topology.name.clone(),
                path: t.topology.expect,
                name: c.name.clone(),
                resolution: p.resolution.clone(),
                occupancy_permille: p.occupancy_permille,
                chunk: p.chunk,
                bytes: p.bytes(),
                contiguous: p.contiguous,
                nr_ranges: c.ranges.len(),
                map,
                entries: m.total_entries,
                spans: m.spans,
                reads_ok: m.reads.iter().filter(|r| r.result == "ok").count(),
                reads: m.reads.len(),
                workaround_mapped: w.mapped,
                workaround_spans: w.spans,
                workaround_reads_ok: w.reads.iter().filter(|r| r.result == "ok").count(),
                workaround_reads: w.reads.len(),
                setup_seconds: m.setup_seconds,
                workaround_setup_seconds: w.setup_seconds,
                unexplained,
            });
        }
    }
    v
}

fn path_name(p: Expect) -> &'static str {
    match p {
        Expect::IovaPath => "IOVA",
        Expect::PerRangeDirect => "dma-direct",
        Expect::BusAddr => "BUS_ADDR",
        Expect::NotSupported => "none",
    }
}

/// The rows as a markdown table.
pub fn table(rows: &[FbRow]) -> String {
    let mut s = String::from(
        "| kernel | path | framebuffer | occupancy | nr_ranges | one dma-buf: map | entries / spans | edu reads intact \
         | one dma-buf per range: mapped | spans held | reads intact | kmod-shim |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} ({}) | {:.0}% | {} | {} | {} / {} | {} / {} | {} / {} | {} | {} / {} | {} |",
            r.kernel,
            path_name(r.path),
            r.resolution,
            if r.contiguous { "contiguous possible" } else { "contiguous failed" },
            f64::from(r.occupancy_permille) / 10.0,
            r.nr_ranges,
            if r.map == "0" { "ok".to_string() } else { format!("**{}**", r.map) },
            r.entries,
            r.spans,
            r.reads_ok,
            r.reads,
            r.workaround_mapped,
            r.nr_ranges,
            r.workaround_spans,
            r.workaround_reads_ok,
            r.workaround_reads,
            if r.unexplained == 0 { "agrees".to_string() } else { format!("**{} unexplained**", r.unexplained) },
        );
    }
    s
}

/// The whole report as markdown: the table, then per topology the
/// disagreements and the first failing reads.
pub fn markdown(rep: &FbLabReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Framebuffer lab: {} (`--kernel {}`)\n", rep.kernel_package, rep.kernel_request);
    let _ = writeln!(s, "{}", table(&rows(rep)));
    for t in &rep.topologies {
        let _ = writeln!(
            s,
            "## {} ({:?}; ivshmem BAR2 {})\n\nboot {:.0} s; disagreements with kmod-shim: {} ({} unexplained)\n",
            t.topology.name, t.topology.expect, t.topology.ivshmem_size, t.boot_seconds, t.disagreements, t.unexplained
        );
        if let Some(e) = &t.error {
            let _ = writeln!(s, "**error**: {e}\n");
        }
        if let Some(g) = &t.guest {
            // kmemleak's objects counted, the other report lines as they are.
            let leaks = g.sanitizer.iter().filter(|l| l.contains("unreferenced object")).count();
            if leaks > 0 {
                let _ = writeln!(s, "- sanitizer: kmemleak reports {leaks} unreferenced objects");
            }
            for l in g.sanitizer.iter().filter(|l| !l.contains("unreferenced object")).take(20) {
                let _ = writeln!(s, "- sanitizer: `{l}`");
            }
            for c in &g.cases {
                if let Some(r) = c.multi.reads.iter().find(|r| r.result != "ok") {
                    let _ = writeln!(
                        s,
                        "- {}: first bad read at buffer offset {:#x} ({}), DMA address {:#x}: {}",
                        c.name, r.sample.fb_off, r.sample.what, r.dma_addr, r.result
                    );
                }
            }
        }
        for c in t.checks.iter().filter(|c| !c.agree) {
            let _ = writeln!(
                s,
                "- {} {}: kernel `{}`, kmod-shim `{}`{}",
                c.what,
                c.field,
                c.kernel,
                c.shim,
                c.explained.as_deref().map(|x| format!(" ({x})")).unwrap_or_default()
            );
        }
        let _ = writeln!(s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framebuffer::{FbCase, MultiRange, Sample, SampleRead};
    use crate::proto::{BarInfo, BarType, DeviceInfo};

    fn report(map_err: i32, reads_ok: bool) -> FbReport {
        let ranges = vec![(0x10_0000, 0x20_0000), (0x1000_0000, 0x10_0000)];
        let read = |fb_off| SampleRead {
            sample: Sample { fb_off, len: 128, what: String::new() },
            dma_addr: 0,
            len: 128,
            result: if reads_ok { "ok".into() } else { "zeros".into() },
        };
        FbReport {
            ivshmem: Some(DeviceInfo {
                name: "ivshmem-plain".into(),
                bdf: "0000:00:04.0".into(),
                group: 1,
                page_size: 4096,
                bars: vec![BarInfo { index: 2, kind: BarType::Mem, start: 0x8_0000_0000, len: 8 << 30 }],
            }),
            cases: vec![FbCase {
                name: "fb".into(),
                ranges,
                lines_written: 1,
                multi: MultiRange {
                    export: "lseek(SEEK_END)=3145728".into(),
                    attach_err: Some(0),
                    map_err: Some(map_err),
                    total_entries: 1,
                    spans: 1,
                    reads: vec![read(0), read(0x20_0000)],
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn topo(name: &str) -> Topology {
        topologies().into_iter().find(|t| t.name == name).expect("topology")
    }

    #[test]
    fn every_path_has_a_topology_with_an_8_gib_bar() {
        let t = topologies();
        let paths: Vec<Expect> = t.iter().map(|t| t.expect).collect();
        assert_eq!(paths, vec![Expect::IovaPath, Expect::PerRangeDirect, Expect::BusAddr]);
        assert!(t.iter().all(|t| t.ivshmem_size == VRAM_SIZE));
    }

    #[test]
    fn the_kernels_offset_0_defect_is_what_the_shim_predicts_on_the_iova_path() {
        // As shipped: EADDRINUSE from VT-d on the second range's link.
        let eaddrinuse = -(validator::Errno::EADDRINUSE.code());
        let c = compare(&report(eaddrinuse, false), &topo("rc-epyc-iova-large"), Fidelity::Kernel);
        assert!(c.iter().all(|c| c.agree), "{c:#?}");
        // Patched: one span, every read intact.
        let c = compare(&report(0, true), &topo("rc-epyc-iova-large"), Fidelity::Fixed);
        assert!(c.iter().all(|c| c.agree), "{c:#?}");
        // A kernel that mapped but returned wrong bytes disagrees.
        let c = compare(&report(0, false), &topo("rc-epyc-iova-large"), Fidelity::Fixed);
        assert!(c.iter().any(|c| c.field == "edu reads" && !c.agree && c.explained.is_none()), "{c:#?}");
    }
}
