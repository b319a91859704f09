//! Framebuffer mode (`nrlab.mode=framebuffer`): the placements of the
//! initramfs written line by line into ivshmem's BAR2 through the vfio
//! region's mmap, exported as one dma-buf each (and as one dma-buf per
//! range), mapped by the fixture and read back by edu. See
//! `kernel_lab::framebuffer`.

use std::os::fd::AsRawFd;

use crate::importer_mode::{get_ranges, setup, Fixture};
use crate::*;
use kernel_lab::framebuffer::{
    classify, dma_at, line, samples, spans, FbCase, FbPlacement, FbReport, GuestOptions, MultiRange, Sample,
    SampleRead, Workaround, PLACEMENTS_FILE, VRAM_BAR,
};
use kernel_lab::importer::abi::{GATHER_BYTES, GATHER_MAX};
use kernel_lab::proto::KernelErrno;
use uapi::ioctl::RegionMap;

/// The mode's whole life: every placement, the report on the stream, power off.
pub(crate) fn main(kernel: String) {
    let mut rep = FbReport { kernel, ..Default::default() };
    if let Err(e) = run(&mut rep) {
        println!("nr-ranges-guest: error: {e}");
        rep.error = Some(e);
    }
    rep.dmesg = crate::importer_mode::dmesg();
    rep.sanitizer = sanitizer::collect();
    send_report_and_power_off(&rep);
}

fn options(cmdline: &str) -> GResult<GuestOptions> {
    let d = GuestOptions::default();
    Ok(GuestOptions {
        lines: cmdline_u64(cmdline, "fb_lines", u64::from(d.lines))? as u32,
        workaround: cmdline_u64(cmdline, "fb_workaround", u64::from(d.workaround))? != 0,
    })
}

fn run(rep: &mut FbReport) -> GResult<()> {
    let cmdline = fs::read_to_string("/proc/cmdline").map_err(|e| format!("read /proc/cmdline: {e}"))?;
    rep.topology =
        cmdline.split_whitespace().find_map(|w| w.strip_prefix("nrlab.topology=")).unwrap_or("?").to_string();
    let opt = options(&cmdline)?;
    let path = format!("/lib/modules/{PLACEMENTS_FILE}");
    let text = fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    let placements: Vec<FbPlacement> = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let lab = setup()?;
    rep.edu_bdf = lab.edu.clone();
    rep.ivshmem = Some(lab.info.clone());
    let dev = lab.dev.as_ref().ok_or("the vfio device is closed")?;
    let len = usize::try_from(lab.bar.len).map_err(|_| "BAR2 does not fit the address space")?;
    let mut vram = RegionMap::new(dev, lab.region_off, len).map_err(|e| format!("mmap BAR2: {}", errno_text(e)))?;
    for (i, p) in placements.iter().enumerate() {
        let c = run_case(dev, &lab.fx, &mut vram, i as u8, p, opt);
        let ok = c.multi.reads.iter().filter(|r| r.result == "ok").count();
        println!(
            "nr-ranges-guest: framebuffer {}: {} ranges, write {:.1} s, export {} map {:?}, {ok}/{} reads ok",
            c.name,
            c.ranges.len(),
            c.write_seconds,
            c.multi.export,
            c.multi.map_err,
            c.multi.reads.len()
        );
        rep.cases.push(c);
    }
    Ok(())
}

/// Writes every line of framebuffer `fb` at the BAR offsets its ranges
/// give; the lines written.
fn write_lines(vram: &mut RegionMap, fb: u8, p: &FbPlacement, ranges: &[(u64, u64)]) -> Result<u32, String> {
    let stride = p.stride();
    // (buffer offset where the range starts, BAR offset, length)
    let mut starts = Vec::with_capacity(ranges.len());
    let mut at = 0;
    for &(off, len) in ranges {
        starts.push((at, off, len));
        at += len;
    }
    let mut r = 0;
    for row in 0..p.height {
        let bytes = line(fb, row, stride);
        let mut done = 0u64;
        while done < stride {
            let off = u64::from(row) * stride + done;
            while r + 1 < starts.len() && starts[r].0 + starts[r].2 <= off {
                r += 1;
            }
            let (rs, bar_off, rlen) = *starts.get(r).ok_or("the ranges are shorter than the framebuffer")?;
            let n = (rs + rlen - off).min(stride - done);
            vram.write(bar_off + (off - rs), &bytes[done as usize..(done + n) as usize])
                .map_err(|e| format!("write row {row} at BAR offset {:#x}: {}", bar_off + (off - rs), errno_text(e)))?;
            done += n;
        }
    }
    Ok(p.height)
}

/// edu reads every sample at the address `locate` gives (DMA address and
/// the bytes left in its entry), in batches of the fixture's gather.
fn read_samples(
    fx: &Fixture,
    fb: u8,
    stride: u64,
    samples: &[Sample],
    locate: impl Fn(u64) -> Option<(u64, u64)>,
) -> Vec<SampleRead> {
    let mut out: Vec<SampleRead> = Vec::new();
    let mut batch: Vec<SampleRead> = Vec::new();
    let flush = |batch: &mut Vec<SampleRead>, out: &mut Vec<SampleRead>| {
        if batch.is_empty() {
            return;
        }
        let chunks: Vec<(u64, u32)> = batch.iter().map(|r| (r.dma_addr, r.len)).collect();
        match fx.gather(&chunks) {
            Ok((0, data)) => {
                let mut at = 0usize;
                for r in batch.iter_mut() {
                    let n = r.len as usize;
                    r.result = classify(data.get(at..at + n).unwrap_or_default(), fb, stride, r.sample.fb_off);
                    at += n;
                }
            }
            Ok((err, _)) => batch.iter_mut().for_each(|r| r.result = format!("edu DMA: {}", KernelErrno(-err))),
            Err(e) => batch.iter_mut().for_each(|r| r.result.clone_from(&e)),
        }
        out.append(batch);
    };
    for s in samples {
        let Some((addr, room)) = locate(s.fb_off) else {
            out.push(SampleRead {
                sample: s.clone(),
                dma_addr: 0,
                len: 0,
                result: "no DMA entry (beyond the copied ones)".into(),
            });
            continue;
        };
        // Whole words, never across the end of the entry.
        let len = (u64::from(s.len).min(room) as u32) & !7;
        if len == 0 {
            out.push(SampleRead { sample: s.clone(), dma_addr: addr, len, result: "entry too short".into() });
            continue;
        }
        let used: usize = batch.iter().map(|r| r.len as usize).sum();
        if batch.len() == GATHER_MAX || used + len as usize > GATHER_BYTES {
            flush(&mut batch, &mut out);
        }
        batch.push(SampleRead { sample: s.clone(), dma_addr: addr, len, result: String::new() });
    }
    flush(&mut batch, &mut out);
    out
}

fn run_case(dev: &Device, fx: &Fixture, vram: &mut RegionMap, fb: u8, p: &FbPlacement, opt: GuestOptions) -> FbCase {
    let ranges = p.ranges();
    let mut c = FbCase { name: p.name.clone(), ranges: ranges.clone(), ..Default::default() };
    let t = Instant::now();
    match write_lines(vram, fb, p, &ranges) {
        Ok(n) => c.lines_written = n,
        Err(e) => {
            c.write_error = Some(e);
            return c;
        }
    }
    c.write_seconds = t.elapsed().as_secs_f64();
    let stride = p.stride();
    let plan = samples(&ranges, stride, p.height, opt.lines);
    c.multi = multi_range(dev, fx, fb, stride, &ranges, &plan);
    if opt.workaround {
        c.workaround = Some(workaround(dev, fb, stride, &ranges, &plan, fx));
    }
    c
}

/// The framebuffer as one dma-buf.
fn multi_range(dev: &Device, fx: &Fixture, fb: u8, stride: u64, ranges: &[(u64, u64)], plan: &[Sample]) -> MultiRange {
    let mut m = MultiRange::default();
    let t = Instant::now();
    let fd = match get_ranges(dev, VRAM_BAR, ranges) {
        Ok(fd) => fd,
        Err(e) => {
            m.export = e;
            return m;
        }
    };
    m.export = describe_fd(&fd);
    let a = match fx.attach(fd.as_raw_fd()) {
        Ok(a) => a,
        Err(e) => {
            m.export.push_str(&format!("; attach ioctl: {e}"));
            return m;
        }
    };
    m.attach_err = Some(a.st.err);
    if a.st.err == 0 {
        match fx.map_keep() {
            Ok((map, entries)) => {
                m.map_err = Some(map.st.err);
                m.setup_seconds = t.elapsed().as_secs_f64();
                if map.st.err == 0 {
                    m.nents = map.nents;
                    m.total_entries = map.total_entries;
                    m.spans = spans(&entries);
                    m.reads = read_samples(fx, fb, stride, plan, |off| dma_at(&entries, off));
                    m.entries = entries;
                }
            }
            Err(e) => m.export.push_str(&format!("; map ioctl: {e}")),
        }
        let _ = fx.detach();
    }
    m
}

/// One dma-buf, attachment and mapping per range, all held at once, as an
/// importer would have to hold them.
fn workaround(
    dev: &Device,
    fb: u8,
    stride: u64,
    ranges: &[(u64, u64)],
    plan: &[Sample],
    reader: &Fixture,
) -> Workaround {
    let mut w = Workaround::default();
    let t = Instant::now();
    // (dma-buf fd, fixture file, entries, buffer offset of the range)
    let mut held = Vec::with_capacity(ranges.len());
    let mut at = 0u64;
    for (i, &r) in ranges.iter().enumerate() {
        let step = (|| -> Result<_, String> {
            let fd = get_ranges(dev, VRAM_BAR, &[r]).map_err(|e| format!("export {e}"))?;
            let fx = Fixture::open()?;
            let a = fx.attach(fd.as_raw_fd())?;
            if a.st.err != 0 {
                return Err(format!("attach {}", KernelErrno(-a.st.err)));
            }
            let (m, entries) = fx.map_keep()?;
            if m.st.err != 0 {
                return Err(format!("map {}", KernelErrno(-m.st.err)));
            }
            Ok((fd, fx, entries))
        })();
        match step {
            Ok((fd, fx, entries)) => {
                w.dma_bufs += 1;
                w.mapped += 1;
                held.push((fd, fx, entries, at));
            }
            Err(e) => {
                w.first_error = Some(format!("range {i}: {e}"));
                break;
            }
        }
        at += r.1;
    }
    w.setup_seconds = t.elapsed().as_secs_f64();
    let all: Vec<(u64, u64)> = held.iter().flat_map(|h| h.2.iter().copied()).collect();
    w.total_entries = all.len();
    w.spans = spans(&all);
    if w.first_error.is_none() {
        w.reads = read_samples(reader, fb, stride, plan, |off| {
            // The range holding `off`: the last one starting at or before it.
            let h = held.iter().rev().find(|h| h.3 <= off)?;
            dma_at(&h.2, off - h.3)
        });
    }
    // Closing each fixture file detaches; then the dma-buf fds go.
    drop(held);
    w
}
