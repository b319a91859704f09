//! Aggregates, markdown tables, and the generated sections of `RFC.md`.

use std::collections::BTreeMap;

use crate::buddy::Chunk;
use crate::experiment::{Sample, RLIMIT_NOFILE_SOFT, UDMABUF_LIST_LIMIT};
use crate::fmt_bytes;

/// A distribution's summary (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Dist {
    /// Samples.
    pub n: usize,
    /// Minimum.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// Maximum.
    pub max: u64,
    /// Mean, rounded to 0.01.
    pub mean: f64,
}

impl Dist {
    /// The summary of `v` (empty: all zero).
    pub fn of(mut v: Vec<u64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
        Self {
            n: v.len(),
            min: v[0],
            p50: rank(0.5),
            p95: rank(0.95),
            max: v[v.len() - 1],
            mean: (mean * 100.0).round() / 100.0,
        }
    }
}

/// One (BAR, chunk, occupancy, resolution) cell over its trials.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cell {
    /// BAR bytes.
    pub bar: u64,
    /// Chunk.
    pub chunk: Chunk,
    /// Target occupancy.
    pub occupancy: f64,
    /// Framebuffer.
    pub resolution: &'static str,
    /// Framebuffer bytes.
    pub fb_bytes: u64,
    /// Trials.
    pub trials: usize,
    /// Trials where the contiguous allocation succeeded.
    pub contiguous_ok: usize,
    /// Trials where the scattered allocation succeeded.
    pub scattered_ok: usize,
    /// `nr_ranges` over the scattered successes.
    pub nr_ranges: Dist,
    /// sg entries, BUS_ADDR path.
    pub sg_bus_addr: Dist,
    /// sg entries, IOVA path.
    pub sg_iova: Dist,
    /// sg entries, per-range path.
    pub sg_per_range: Dist,
    /// Trials whose workaround needs more fds than `RLIMIT_NOFILE`'s default.
    pub over_fd_limit: usize,
    /// Trials where kmod-shim's kernel-faithful IOVA map failed.
    pub kernel_iova_failures: usize,
}

/// Groups samples into cells, in sweep order.
pub fn cells(samples: &[Sample]) -> Vec<Cell> {
    let mut groups: BTreeMap<(u64, Chunk, u64, usize), Vec<&Sample>> = BTreeMap::new();
    let order: BTreeMap<&str, usize> = crate::fb::RESOLUTIONS.iter().enumerate().map(|(i, f)| (f.name, i)).collect();
    for s in samples {
        let key = (
            s.bar,
            s.chunk,
            (s.occupancy_target * 1000.0).round() as u64,
            order.get(s.resolution).copied().unwrap_or(99),
        );
        groups.entry(key).or_default().push(s);
    }
    groups
        .into_values()
        .map(|g| {
            let sc: Vec<_> = g.iter().filter_map(|s| s.scattered.as_ref()).collect();
            let d =
                |f: &dyn Fn(&crate::experiment::Scattered) -> usize| Dist::of(sc.iter().map(|x| f(x) as u64).collect());
            Cell {
                bar: g[0].bar,
                chunk: g[0].chunk,
                occupancy: g[0].occupancy_target,
                resolution: g[0].resolution,
                fb_bytes: g[0].fb_bytes,
                trials: g.len(),
                contiguous_ok: g.iter().filter(|s| s.contiguous).count(),
                scattered_ok: sc.len(),
                nr_ranges: d(&|x| x.nr_ranges),
                sg_bus_addr: d(&|x| x.multi.bus_addr),
                sg_iova: d(&|x| x.multi.iova),
                sg_per_range: d(&|x| x.multi.per_range),
                over_fd_limit: sc.iter().filter(|x| x.workaround.fds > RLIMIT_NOFILE_SOFT).count(),
                kernel_iova_failures: sc.iter().filter(|x| x.kernel_faithful_iova_map != "ok").count(),
            }
        })
        .collect()
}

/// Headline numbers for the summary and the RFC.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Findings {
    /// Samples (framebuffer allocations attempted).
    pub samples: usize,
    /// Of which the scattered allocation succeeded.
    pub scattered_ok: usize,
    /// Contiguous successes.
    pub contiguous_ok: usize,
    /// Scattered successes that needed more than one range.
    pub multi_range_needed: usize,
    /// Largest `nr_ranges` seen, per chunk (bytes -> count).
    pub max_nr_ranges: BTreeMap<u64, usize>,
    /// Largest range array, bytes.
    pub max_array_bytes: usize,
    /// Scattered successes whose workaround exceeds 1024 fds.
    pub over_fd_limit: usize,
    /// Scattered successes beyond udmabuf's default `list_limit`.
    pub over_udmabuf_limit: usize,
    /// Kernel-faithful IOVA maps that failed / were attempted with nr_ranges >= 2.
    pub kernel_iova_failures: usize,
    /// Largest IOVA-path sg table, multi-range.
    pub max_sg_iova: usize,
    /// Contiguous success rate at the largest BAR, 90 % occupancy, 4 KiB chunks, per resolution.
    pub contiguous_at_90: BTreeMap<String, String>,
}

/// The headline numbers.
pub fn findings(samples: &[Sample]) -> Findings {
    let sc: Vec<_> = samples.iter().filter_map(|s| s.scattered.as_ref().map(|x| (s, x))).collect();
    let mut max_nr = BTreeMap::new();
    for (s, x) in &sc {
        let e = max_nr.entry(s.chunk.bytes()).or_insert(0);
        *e = (*e).max(x.nr_ranges);
    }
    let big = samples.iter().map(|s| s.bar).max().unwrap_or(0);
    let mut c90 = BTreeMap::new();
    for fb in crate::fb::RESOLUTIONS {
        let g: Vec<_> = samples
            .iter()
            .filter(|s| {
                s.bar == big
                    && s.chunk == Chunk::K4
                    && s.resolution == fb.name
                    && (s.occupancy_target - 0.9).abs() < 1e-9
            })
            .collect();
        if !g.is_empty() {
            let ok = g.iter().filter(|s| s.contiguous).count();
            c90.insert(fb.name.to_string(), format!("{ok}/{}", g.len()));
        }
    }
    Findings {
        samples: samples.len(),
        scattered_ok: sc.len(),
        contiguous_ok: samples.iter().filter(|s| s.contiguous).count(),
        multi_range_needed: sc.iter().filter(|(_, x)| x.nr_ranges > 1).count(),
        max_nr_ranges: max_nr,
        max_array_bytes: sc.iter().map(|(_, x)| x.array_bytes).max().unwrap_or(0),
        over_fd_limit: sc.iter().filter(|(_, x)| x.workaround.fds > RLIMIT_NOFILE_SOFT).count(),
        over_udmabuf_limit: sc.iter().filter(|(_, x)| x.nr_ranges > UDMABUF_LIST_LIMIT).count(),
        kernel_iova_failures: sc.iter().filter(|(_, x)| x.kernel_faithful_iova_map != "ok").count(),
        max_sg_iova: sc.iter().map(|(_, x)| x.multi.iova).max().unwrap_or(0),
        contiguous_at_90: c90,
    }
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "n/a".into()
    } else {
        format!("{:.0} %", 100.0 * a as f64 / b as f64)
    }
}

/// The framebuffer tables: one per chunk.
pub fn framebuffer_md(cells: &[Cell]) -> String {
    let mut s = String::new();
    let chunks: std::collections::BTreeSet<Chunk> = cells.iter().map(|c| c.chunk).collect();
    for chunk in chunks {
        s.push_str(&format!(
            "\n### Minimum chunk {}\n\n| BAR | occupancy | framebuffer | contiguous ok | scattered ok | nr_ranges p50 / p95 / max | sg BUS_ADDR p50 | sg IOVA max | sg per-range p50 | workaround dma-bufs = fds = export ioctls, p50 / max | > {} fds | kernel-faithful IOVA map fails |\n|---|---:|---|---:|---:|---|---:|---:|---:|---|---:|---:|\n",
            fmt_bytes(chunk.bytes()),
            RLIMIT_NOFILE_SOFT
        ));
        for c in cells.iter().filter(|c| c.chunk == chunk) {
            let nr = if c.scattered_ok == 0 {
                "no room".to_string()
            } else {
                format!("{} / {} / {}", c.nr_ranges.p50, c.nr_ranges.p95, c.nr_ranges.max)
            };
            let w = if c.scattered_ok == 0 {
                "-".to_string()
            } else {
                format!("{} / {}", c.nr_ranges.p50, c.nr_ranges.max)
            };
            s.push_str(&format!(
                "| {} | {:.0} % | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                fmt_bytes(c.bar),
                c.occupancy * 100.0,
                c.resolution,
                fmt_bytes(c.fb_bytes),
                pct(c.contiguous_ok, c.trials),
                pct(c.scattered_ok, c.trials),
                nr,
                c.sg_bus_addr.p50,
                c.sg_iova.max,
                c.sg_per_range.p50,
                w,
                c.over_fd_limit,
                c.kernel_iova_failures
            ));
        }
    }
    s
}

/// Why a generated section could not be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerError {
    /// No `<!-- BEGIN generated:NAME -->`.
    MissingBegin(String),
    /// No `<!-- END generated:NAME -->` after it.
    MissingEnd(String),
}

impl std::fmt::Display for MarkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MarkerError::MissingBegin(n) => write!(f, "no <!-- BEGIN generated:{n} --> marker"),
            MarkerError::MissingEnd(n) => write!(f, "no <!-- END generated:{n} --> marker after its BEGIN"),
        }
    }
}

impl std::error::Error for MarkerError {}

/// Replaces what lies between `<!-- BEGIN generated:NAME -->` and
/// `<!-- END generated:NAME -->` with `body`; the markers stay.
pub fn replace_section(doc: &str, name: &str, body: &str) -> Result<String, MarkerError> {
    let begin = format!("<!-- BEGIN generated:{name} -->");
    let end = format!("<!-- END generated:{name} -->");
    let b = doc.find(&begin).ok_or_else(|| MarkerError::MissingBegin(name.into()))? + begin.len();
    let e = doc[b..].find(&end).ok_or_else(|| MarkerError::MissingEnd(name.into()))? + b;
    let body = body.trim_end_matches('\n');
    Ok(format!("{}\n{body}\n{}", &doc[..b], &doc[e..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_nearest_rank() {
        let d = Dist::of((1..=20).collect());
        assert_eq!((d.min, d.p50, d.p95, d.max, d.mean), (1, 10, 19, 20, 10.5));
        assert_eq!(Dist::of(vec![]).n, 0);
    }

    #[test]
    fn sections_are_replaced_between_markers_only() {
        let doc = "a\n<!-- BEGIN generated:x -->\nold\n<!-- END generated:x -->\nb\n";
        let new = replace_section(doc, "x", "new\n").unwrap();
        assert_eq!(new, "a\n<!-- BEGIN generated:x -->\nnew\n<!-- END generated:x -->\nb\n");
        assert_eq!(replace_section(&new, "x", "new").unwrap(), new);
        assert_eq!(replace_section(doc, "y", ""), Err(MarkerError::MissingBegin("y".into())));
        assert_eq!(replace_section("<!-- BEGIN generated:x -->", "x", ""), Err(MarkerError::MissingEnd("x".into())));
    }
}
