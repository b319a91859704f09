//! SVG plots (plotters' SVG backend: text is emitted as `<text>` elements,
//! so no font file is needed to produce them).

use std::path::Path;

use plotters::prelude::*;

use crate::buddy::Chunk;
use crate::experiment::{Sample, Timing, RLIMIT_NOFILE_SOFT};
use crate::fmt_bytes;
use crate::report::Cell;

/// A plot that could not be drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotError {
    /// The file.
    pub file: String,
    /// plotters' message.
    pub message: String,
}

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plot {}: {}", self.file, self.message)
    }
}

impl std::error::Error for PlotError {}

type R = Result<(), Box<dyn std::error::Error>>;

const FONT: &str = "sans-serif";

/// The legend's sample of a line series: a short stroke in its colour.
fn legend_line(col: RGBColor, width: u32) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(width))
}

/// Every plot's legend box: white, translucent, framed, at `pos`.
fn draw_legend<'a, CT: CoordTranslate>(
    ch: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    pos: SeriesLabelPosition,
    font_size: u32,
) -> R {
    ch.configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, font_size))
        .draw()?;
    Ok(())
}

fn color(i: usize) -> RGBColor {
    // Colour-blind-safe (Okabe-Ito) first, so lines stay distinguishable.
    const C: [RGBColor; 6] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(230, 159, 0),
    ];
    C[i % C.len()]
}

fn largest_bar(cells: &[Cell]) -> u64 {
    // The 16 GiB BAR when swept (the common resizable-BAR size), else the largest.
    let bars: Vec<u64> = cells.iter().map(|c| c.bar).collect();
    if bars.contains(&(16 << 30)) {
        16 << 30
    } else {
        bars.into_iter().max().unwrap_or(0)
    }
}

fn bars(cells: &[Cell]) -> Vec<u64> {
    let mut b: Vec<u64> = cells.iter().map(|c| c.bar).collect();
    b.sort_unstable();
    b.dedup();
    b
}

fn occ_range(cells: &[Cell]) -> std::ops::Range<f64> {
    let lo = cells.iter().map(|c| c.occupancy).fold(1.0, f64::min) * 100.0;
    let hi = cells.iter().map(|c| c.occupancy).fold(0.0, f64::max) * 100.0;
    (lo - 3.0)..(hi + 3.0)
}

/// Contiguous allocation success vs occupancy, one panel per resolution.
fn contiguous(path: &Path, cells: &[Cell]) -> R {
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.draw(&Text::new(
        "Contiguous framebuffer allocation (one power-of-two drm_buddy block), 4 KiB chunks",
        (20, 12),
        (FONT, 20).into_font(),
    ))?;
    let res: Vec<&str> = crate::fb::RESOLUTIONS.iter().map(|f| f.name).collect();
    for (area, name) in body.split_evenly((2, 2)).iter().zip(res) {
        let mut ch = ChartBuilder::on(area)
            .caption(name, (FONT, 17))
            .margin(8)
            .x_label_area_size(38)
            .y_label_area_size(50)
            .build_cartesian_2d(occ_range(cells), -5f64..105f64)?;
        ch.configure_mesh()
            .x_desc("VRAM occupancy (%)")
            .y_desc("success (% of trials)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (i, bar) in bars(cells).into_iter().enumerate() {
            let pts: Vec<(f64, f64)> = cells
                .iter()
                .filter(|c| c.bar == bar && c.chunk == Chunk::K4 && c.resolution == name)
                .map(|c| (c.occupancy * 100.0, 100.0 * c.contiguous_ok as f64 / c.trials as f64))
                .collect();
            let col = color(i);
            ch.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))?
                .label(format!("BAR {}", fmt_bytes(bar)))
                .legend(legend_line(col, 2));
            ch.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled())))?;
        }
        draw_legend(&mut ch, SeriesLabelPosition::LowerLeft, 12)?;
    }
    root.present()?;
    Ok(())
}

/// nr_ranges vs occupancy, one panel per chunk, at the 16 GiB BAR.
fn nr_ranges(path: &Path, cells: &[Cell]) -> R {
    let root = SVGBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let bar = largest_bar(cells);
    let (title, body) = root.split_vertically(40);
    title.draw(&Text::new(
        format!("nr_ranges of a scattered framebuffer, BAR {} (median: line, max: triangles)", fmt_bytes(bar)),
        (20, 12),
        (FONT, 20).into_font(),
    ))?;
    let mut chunks: Vec<Chunk> = cells.iter().map(|c| c.chunk).collect();
    chunks.sort();
    chunks.dedup();
    let panels = body.split_evenly((1, chunks.len().max(1)));
    for (area, chunk) in panels.iter().zip(chunks) {
        let xr = occ_range(cells);
        let mut ch = ChartBuilder::on(area)
            .caption(format!("minimum chunk {}", fmt_bytes(chunk.bytes())), (FONT, 17))
            .margin(8)
            .x_label_area_size(38)
            .y_label_area_size(60)
            .build_cartesian_2d(xr.clone(), (0.8f64..200_000f64).log_scale())?;
        ch.configure_mesh()
            .x_desc("VRAM occupancy (%)")
            .y_desc("nr_ranges (log)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (i, fb) in crate::fb::RESOLUTIONS.iter().enumerate() {
            let sel: Vec<&Cell> = cells
                .iter()
                .filter(|c| c.bar == bar && c.chunk == chunk && c.resolution == fb.name && c.scattered_ok > 0)
                .collect();
            let col = color(i);
            ch.draw_series(LineSeries::new(
                sel.iter().map(|c| (c.occupancy * 100.0, c.nr_ranges.p50 as f64)),
                col.stroke_width(2),
            ))?
            .label(fb.name)
            .legend(legend_line(col, 2));
            ch.draw_series(
                sel.iter().map(|c| TriangleMarker::new((c.occupancy * 100.0, c.nr_ranges.max as f64), 5, col.filled())),
            )?;
        }
        for (v, label, col) in [
            (RLIMIT_NOFILE_SOFT as f64, "1,024: RLIMIT_NOFILE soft, udmabuf list_limit", RGBColor(60, 60, 60)),
            (65_536.0, "65,536: Strict cap (E2BIG)", RGBColor(200, 0, 0)),
        ] {
            ch.draw_series(LineSeries::new(vec![(xr.start, v), (xr.end, v)], col.stroke_width(3)))?
                .label(label)
                .legend(legend_line(col, 3));
        }
        draw_legend(&mut ch, SeriesLabelPosition::UpperLeft, 12)?;
    }
    root.present()?;
    Ok(())
}

/// sg entries the importer sees vs nr_ranges, per path.
fn sg_entries(path: &Path, samples: &[Sample]) -> R {
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let sc: Vec<_> = samples.iter().filter_map(|s| s.scattered.as_ref()).collect();
    let maxn = sc.iter().map(|x| x.nr_ranges).max().unwrap_or(1).max(10) as f64 * 2.0;
    let mut ch = ChartBuilder::on(&root)
        .caption("sg entries the importer sees, per P2P path (all samples)", (FONT, 20))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d((0.8f64..maxn).log_scale(), (0.8f64..maxn).log_scale())?;
    ch.configure_mesh()
        .x_desc("nr_ranges of the framebuffer (log)")
        .y_desc("sg entries per importer (log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    type Get = fn(&crate::experiment::Scattered) -> usize;
    let series: [(&str, Get, usize); 4] = [
        ("multi-range, BUS_ADDR (one entry per range)", |x| x.multi.bus_addr, 0),
        ("multi-range, per-range dma_map_phys()", |x| x.multi.per_range, 1),
        ("multi-range, one IOVA span", |x| x.multi.iova, 2),
        ("workaround, IOVA: entries summed over nr_ranges sg tables", |x| x.workaround.sg_entries.iova, 3),
    ];
    for (label, get, i) in series {
        let col = color(i);
        let size = 7 - i as i32;
        let pts: Vec<(f64, f64)> = sc.iter().map(|x| (x.nr_ranges as f64, get(x) as f64)).collect();
        match i {
            2 => ch.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, col.filled())))?,
            3 => ch.draw_series(pts.into_iter().map(|p| Cross::new(p, 5, col.stroke_width(1))))?,
            _ => ch.draw_series(pts.into_iter().map(|p| Circle::new(p, size, col.stroke_width(2))))?,
        }
        .label(label)
        .legend(move |(x, y)| Circle::new((x + 8, y), 4, col.filled()));
    }
    draw_legend(&mut ch, SeriesLabelPosition::UpperLeft, 13)?;
    root.present()?;
    Ok(())
}

/// The single-range workaround's dma-bufs (= fds = export ioctls).
fn workaround(path: &Path, cells: &[Cell]) -> R {
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let bar = largest_bar(cells);
    let xr = occ_range(cells);
    let mut ch = ChartBuilder::on(&root)
        .caption(format!("Single-range workaround: dma-bufs = fds = export ioctls per framebuffer (max over trials, BAR {}, 4 KiB chunks)", fmt_bytes(bar)), (FONT, 16))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(xr.clone(), (0.8f64..200_000f64).log_scale())?;
    ch.configure_mesh()
        .x_desc("VRAM occupancy (%)")
        .y_desc("dma-bufs / fds / ioctls (log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, fb) in crate::fb::RESOLUTIONS.iter().enumerate() {
        let col = color(i);
        let pts: Vec<(f64, f64)> = cells
            .iter()
            .filter(|c| c.bar == bar && c.chunk == Chunk::K4 && c.resolution == fb.name && c.scattered_ok > 0)
            .map(|c| (c.occupancy * 100.0, c.nr_ranges.max as f64))
            .collect();
        ch.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))?
            .label(format!("{} workaround", fb.name))
            .legend(legend_line(col, 2));
        ch.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled())))?;
    }
    let grey = RGBColor(60, 60, 60);
    ch.draw_series(LineSeries::new(vec![(xr.start, 1024.0), (xr.end, 1024.0)], grey.stroke_width(3)))?
        .label("1,024: default RLIMIT_NOFILE soft limit")
        .legend(legend_line(grey, 3));
    let black = RGBColor(0, 0, 0);
    ch.draw_series(LineSeries::new(vec![(xr.start, 1.0), (xr.end, 1.0)], black.stroke_width(3)))?
        .label("multi-range: 1 dma-buf, 1 fd, 1 ioctl")
        .legend(legend_line(black, 3));
    draw_legend(&mut ch, SeriesLabelPosition::UpperLeft, 13)?;
    root.present()?;
    Ok(())
}

/// Export + map time (model, wall clock) vs nr_ranges.
fn timing(path: &Path, t: &[Timing]) -> R {
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let us = |v: &[u64; 4]| v.iter().sum::<u64>() as f64 / 1e3;
    let maxn = t.iter().map(|x| x.nr_ranges).max().unwrap_or(1).max(10) as f64 * 2.0;
    let maxt = t.iter().map(|x| us(&x.workaround_ns).max(us(&x.multi_ns))).fold(10.0, f64::max) * 2.0;
    let mint = t.iter().map(|x| us(&x.multi_ns)).fold(f64::MAX, f64::min).max(0.01) / 2.0;
    let mut ch = ChartBuilder::on(&root)
        .caption("Export + attach + map on the 3 paths, kmod-shim model, wall clock (not kernel time)", (FONT, 17))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d((0.8f64..maxn).log_scale(), (mint..maxt).log_scale())?;
    ch.configure_mesh()
        .x_desc("nr_ranges (log)")
        .y_desc("time (µs, log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    let (a, b) = (color(0), color(1));
    ch.draw_series(t.iter().map(|x| Circle::new((x.nr_ranges as f64, us(&x.multi_ns)), 3, a.filled())))?
        .label("one multi-range dma-buf")
        .legend(move |(x, y)| Circle::new((x + 8, y), 4, a.filled()));
    ch.draw_series(t.iter().map(|x| Cross::new((x.nr_ranges as f64, us(&x.workaround_ns)), 4, b.stroke_width(1))))?
        .label("one dma-buf per range (workaround)")
        .legend(move |(x, y)| Cross::new((x + 8, y), 4, b.stroke_width(1)));
    draw_legend(&mut ch, SeriesLabelPosition::UpperLeft, 13)?;
    root.present()?;
    Ok(())
}

/// Draws every plot into `dir`; returns the file names.
pub fn draw_all(dir: &Path, samples: &[Sample], cells: &[Cell], timings: &[Timing]) -> Result<Vec<String>, PlotError> {
    let mut out = Vec::new();
    type Job<'a> = Box<dyn Fn(&Path) -> R + 'a>;
    let jobs: [(&str, Job<'_>); 5] = [
        ("contiguous-success.svg", Box::new(|p| contiguous(p, cells))),
        ("nr-ranges.svg", Box::new(|p| nr_ranges(p, cells))),
        ("sg-entries.svg", Box::new(|p| sg_entries(p, samples))),
        ("workaround.svg", Box::new(|p| workaround(p, cells))),
        ("export-map-time.svg", Box::new(|p| timing(p, timings))),
    ];
    for (name, f) in jobs {
        f(&dir.join(name)).map_err(|e| PlotError { file: name.into(), message: e.to_string() })?;
        out.push(name.to_string());
    }
    Ok(out)
}
