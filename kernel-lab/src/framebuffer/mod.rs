//! The framebuffer lab: a scattered framebuffer, placed in VRAM by the
//! kernel's own allocator, shared with a peer as one multi-range dma-buf
//! and read back by the peer's DMA, end to end through a real kernel.
//!
//! The flow:
//! - [`FbPlacement`]s come from the allocator lab (the RFC's pressure
//!   workload replayed on the kernel's `gpu_buddy`, drivers/gpu/buddy.c;
//!   `rfc --real-allocator` writes them): each framebuffer's blocks in the
//!   buffer's order, in an 8 GiB BAR.
//! - In the guest (`nr-ranges-guest`'s framebuffer mode), ivshmem's 8 GiB
//!   BAR2 plays VRAM. Every line of the framebuffer is written through the
//!   vfio region's `mmap()` with [`line()`]'s pattern (each 8-byte word names
//!   its framebuffer, row and byte in the row), at the BAR offsets its
//!   blocks give.
//! - The blocks, adjacent ones merged ([`ranges`]), go to
//!   `VFIO_DEVICE_FEATURE_DMA_BUF` as one dma-buf; `nrlab_importer` (on edu)
//!   attaches and maps it; edu reads the [`samples`] (the start of every
//!   range and evenly spaced lines, in framebuffer order) at the DMA
//!   addresses of the kernel's sg table, and [`classify`] says what came
//!   back.
//! - Beside it, the single-range workaround: one dma-buf, one fixture file
//!   (attachment) and one mapping per range, and what the importer ends up
//!   holding ([`Workaround`]).
//!
//! This module is shared by host and guest; [`host`] runs the machines and
//! compares with kmod-shim.

pub mod host;

use serde::{Deserialize, Serialize};

use crate::proto::DeviceInfo;

/// The placements' file name in the initramfs (`/lib/modules/`).
pub const PLACEMENTS_FILE: &str = "nrlab-fb-placements.json";

/// The BAR the lab shares: ivshmem-plain's BAR2, 8 GiB (sparse backing).
pub const VRAM_BAR: u32 = 2;
/// Its size (QEMU's `memory-backend-file,size=`).
pub const VRAM_SIZE: &str = "8G";

/// Bytes edu reads per sample (a 16-word window of a line).
pub const SAMPLE_BYTES: u32 = 128;

/// One framebuffer as the kernel's allocator placed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FbPlacement {
    /// `<run>/<resolution>`, e.g. `8GiB-4k-900-0/4K`.
    pub name: String,
    /// Resolution name (`1080p`, `1440p`, `4K`, `8K`).
    pub resolution: String,
    /// Pixels per line.
    pub width: u32,
    /// Bytes per line (the pitch, aligned as the driver aligns it).
    pub pitch: u64,
    /// Lines.
    pub height: u32,
    /// Bytes per pixel.
    pub cpp: u32,
    /// Bytes the allocator manages (the BAR).
    pub bar: u64,
    /// The allocator's `chunk_size`.
    pub chunk: u64,
    /// The pressure run's target occupancy, in permille.
    pub occupancy_permille: u32,
    /// Whether the contiguous allocation of the same size succeeded.
    pub contiguous: bool,
    /// The scattered allocation's blocks (BAR offset, bytes), in list order
    /// (the buffer's linear order).
    pub blocks: Vec<(u64, u64)>,
    /// Where the blocks came from (`gpu_buddy on <kernel>`).
    pub allocator: String,
}

impl FbPlacement {
    /// Bytes per line.
    pub fn stride(&self) -> u64 {
        self.pitch
    }

    /// The framebuffer's bytes.
    pub fn bytes(&self) -> u64 {
        self.stride() * u64::from(self.height)
    }

    /// The export's ranges ([`ranges`] of the blocks).
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        ranges(&self.blocks)
    }
}

/// The dma-buf ranges of a block list: blocks adjacent in the BAR and in
/// the list merged, the order kept (the buffer's bytes are the ranges
/// concatenated, as `vfio_pci_dma_buf` lays them out).
pub fn ranges(blocks: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in blocks {
        match out.last_mut() {
            Some(last) if last.0 + last.1 == off => last.1 += len,
            _ => out.push((off, len)),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The line pattern.

/// Marks a framebuffer word (top byte).
pub const FB_TAG: u64 = 0xfb;

/// The word at byte `col` of line `row` of framebuffer `fb` (its index in
/// the placements): tag, framebuffer, row and byte, so that bytes read back
/// say which line of which buffer they are.
pub fn word(fb: u8, row: u32, col: u32) -> u64 {
    (FB_TAG << 56) | (u64::from(fb) << 48) | (u64::from(row & 0xffff) << 32) | u64::from(col)
}

/// Line `row`'s bytes (`stride` bytes, a multiple of 8).
pub fn line(fb: u8, row: u32, stride: u64) -> Vec<u8> {
    (0..stride / 8).flat_map(|i| word(fb, row, (8 * i) as u32).to_le_bytes()).collect()
}

/// The pattern bytes at framebuffer offsets `[off, off + len)` (8-aligned).
pub fn expected(fb: u8, stride: u64, off: u64, len: usize) -> Vec<u8> {
    (0..len as u64 / 8)
        .flat_map(|i| {
            let o = off + 8 * i;
            word(fb, (o / stride) as u32, (o % stride) as u32).to_le_bytes()
        })
        .collect()
}

/// What `bytes` read at framebuffer offset `off` are: `ok`, or where they
/// came from instead.
pub fn classify(bytes: &[u8], fb: u8, stride: u64, off: u64) -> String {
    if bytes.is_empty() {
        return "nothing read".into();
    }
    if bytes == expected(fb, stride, off, bytes.len()).as_slice() {
        return "ok".into();
    }
    if bytes.iter().all(|&b| b == 0xee) {
        return "canary (the DMA wrote nothing)".into();
    }
    if bytes.iter().all(|&b| b == 0) {
        return "zeros".into();
    }
    if bytes.iter().all(|&b| b == 0xff) {
        return "all-ones".into();
    }
    let w = bytes.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    if w >> 56 == FB_TAG {
        let (f, row, col) = ((w >> 48) as u8, (w >> 32) as u16, w as u32);
        let (er, ec) = (off / stride, off % stride);
        return format!("framebuffer {f} row {row} byte {col} (expected framebuffer {fb} row {er} byte {ec})");
    }
    format!("other (first word {w:#018x})")
}

// ---------------------------------------------------------------------------
// Samples and addresses.

/// A place edu reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Framebuffer (dma-buf) offset.
    pub fb_off: u64,
    /// Bytes.
    pub len: u32,
    /// Why: `range N` (the start of range N) or `row R`.
    pub what: String,
}

/// The samples of a framebuffer, in framebuffer order: the start of every
/// range (so that each range's translation is read), `lines` evenly spaced
/// line starts, and the last line's last bytes. Windows never go past the
/// lines (the allocation may be longer, rounded up to the chunk).
pub fn samples(ranges: &[(u64, u64)], stride: u64, height: u32, lines: u32) -> Vec<Sample> {
    let total: u64 = ranges.iter().map(|r| r.1).sum::<u64>().min(stride * u64::from(height));
    let mut v = Vec::new();
    let mut at = 0u64;
    for (i, &(_, len)) in ranges.iter().enumerate() {
        v.push(Sample { fb_off: at, len: SAMPLE_BYTES.min(len as u32), what: format!("range {i}") });
        at += len;
    }
    for k in 0..lines {
        let row = if lines <= 1 { 0 } else { u64::from(k) * u64::from(height - 1) / u64::from(lines - 1) };
        v.push(Sample { fb_off: row * stride, len: SAMPLE_BYTES, what: format!("row {row}") });
    }
    if total >= u64::from(SAMPLE_BYTES) {
        v.push(Sample { fb_off: total - u64::from(SAMPLE_BYTES), len: SAMPLE_BYTES, what: "last bytes".into() });
    }
    v.retain(|s| s.fb_off + u64::from(s.len) <= total);
    v.sort_by_key(|s| s.fb_off);
    v.dedup_by_key(|s| s.fb_off);
    v
}

/// The DMA address of buffer offset `off` in a mapping's entries (DMA
/// address, length), and the bytes left in that entry.
pub fn dma_at(entries: &[(u64, u64)], off: u64) -> Option<(u64, u64)> {
    let mut base = 0u64;
    for &(a, l) in entries {
        if off < base + l {
            return Some((a + (off - base), base + l - off));
        }
        base += l;
    }
    None
}

/// Runs of DMA-contiguous entries: the IOVA (or bus address) spans an
/// importer's engine is programmed with.
pub fn spans(entries: &[(u64, u64)]) -> usize {
    let mut n = 0;
    let mut end = None;
    for &(a, l) in entries {
        if end != Some(a) {
            n += 1;
        }
        end = Some(a + l);
    }
    n
}

// ---------------------------------------------------------------------------
// What the guest reports.

/// edu's read of one sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleRead {
    /// The sample.
    pub sample: Sample,
    /// The DMA address edu was given.
    pub dma_addr: u64,
    /// Bytes read (the sample's, cut at the end of its DMA entry).
    pub len: u32,
    /// `ok`, what came back instead ([`classify`]), or the DMA's errno.
    pub result: String,
}

/// The framebuffer as one multi-range dma-buf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MultiRange {
    /// GET: the dma-buf size, or the errno name.
    pub export: String,
    /// Attach: 0 or -errno.
    pub attach_err: Option<i32>,
    /// Map: 0 or -errno.
    pub map_err: Option<i32>,
    /// `sgt->nents`.
    pub nents: u32,
    /// DMA entries.
    pub total_entries: u32,
    /// The DMA entries copied (up to the fixture's `NRLAB_MAX_ENTRIES`).
    pub entries: Vec<(u64, u64)>,
    /// DMA-contiguous runs of the entries ([`spans`]).
    pub spans: usize,
    /// Guest seconds from export to a kept mapping.
    pub setup_seconds: f64,
    /// edu's reads.
    pub reads: Vec<SampleRead>,
}

/// The single-range workaround: one dma-buf per range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Workaround {
    /// dma-bufs exported (= ranges, unless one failed).
    pub dma_bufs: usize,
    /// Attachments (fixture files) that mapped.
    pub mapped: usize,
    /// The first failure (`range N: step errno`), if any.
    pub first_error: Option<String>,
    /// DMA entries over all mappings.
    pub total_entries: usize,
    /// DMA-contiguous runs over all mappings, in framebuffer order.
    pub spans: usize,
    /// Guest seconds from the first export to the last kept mapping.
    pub setup_seconds: f64,
    /// edu's reads through the per-range mappings.
    pub reads: Vec<SampleRead>,
}

/// One framebuffer through the lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FbCase {
    /// The placement's name.
    pub name: String,
    /// Its ranges (BAR offset, length).
    pub ranges: Vec<(u64, u64)>,
    /// Guest seconds to write every line through the mmap.
    pub write_seconds: f64,
    /// Lines written (= height, unless the writing failed).
    pub lines_written: u32,
    /// Set when the pattern could not be written.
    pub write_error: Option<String>,
    /// One dma-buf for the framebuffer.
    pub multi: MultiRange,
    /// One dma-buf per range.
    pub workaround: Option<Workaround>,
}

/// The guest's report in framebuffer mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FbReport {
    /// `uname -r`.
    pub kernel: String,
    /// Topology name.
    pub topology: String,
    /// Set when the guest could not run.
    pub error: Option<String>,
    /// ivshmem as bound to vfio-pci.
    pub ivshmem: Option<DeviceInfo>,
    /// edu's BDF.
    pub edu_bdf: String,
    /// Kernel log lines about p2pdma, DMAR faults and the fixture.
    pub dmesg: Vec<String>,
    /// Sanitizer report lines at the end of the run ([`crate::sanitizer`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sanitizer: Vec<String>,
    /// Per framebuffer, in the placements' order.
    pub cases: Vec<FbCase>,
}

/// What the guest reads from the kernel command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestOptions {
    /// Evenly spaced line samples per framebuffer (`nrlab.fb_lines`).
    pub lines: u32,
    /// Run the single-range workaround too (`nrlab.fb_workaround`).
    pub workaround: bool,
}

impl Default for GuestOptions {
    fn default() -> Self {
        Self { lines: 16, workaround: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_blocks_merge_in_list_order_only() {
        // Upwards adjacent: one range. Downwards adjacent: two (the buffer's
        // order is the list's, so a block below its predecessor starts a range).
        assert_eq!(ranges(&[(0, 0x1000), (0x1000, 0x2000)]), vec![(0, 0x3000)]);
        assert_eq!(ranges(&[(0x1000, 0x1000), (0, 0x1000)]), vec![(0x1000, 0x1000), (0, 0x1000)]);
        assert_eq!(ranges(&[]), vec![]);
    }

    #[test]
    fn every_word_names_its_line() {
        let stride = 3840 * 4;
        let l = line(3, 7, stride);
        assert_eq!(l.len() as u64, stride);
        assert_eq!(expected(3, stride, 7 * stride, l.len()), l);
        assert_eq!(classify(&l[..128], 3, stride, 7 * stride), "ok");
        assert_eq!(
            classify(&l[..128], 3, stride, 8 * stride),
            "framebuffer 3 row 7 byte 0 (expected framebuffer 3 row 8 byte 0)"
        );
        assert_eq!(classify(&line(4, 7, stride)[..64], 3, stride, 7 * stride).split(' ').nth(1), Some("4"));
        assert_eq!(classify(&[0xee; 64], 0, stride, 0), "canary (the DMA wrote nothing)");
    }

    #[test]
    fn samples_cover_every_range_in_order() {
        let r = [(0x10000, 0x2000), (0x80000, 0x1000), (0x4000, 0x3000)];
        let s = samples(&r, 0x800, 12, 4);
        // 12 lines of 0x800 bytes: the last 0x200 bytes of the ranges are padding.
        let offs: Vec<u64> = s.iter().map(|x| x.fb_off).collect();
        assert!(offs.windows(2).all(|w| w[0] < w[1]), "{offs:x?}");
        for start in [0, 0x2000, 0x3000] {
            assert!(offs.contains(&start), "range start {start:#x} not sampled: {offs:x?}");
        }
        assert_eq!(offs.last(), Some(&(0x6000 - u64::from(SAMPLE_BYTES))));
        let s = samples(&[(0, 0x7000)], 0x800, 12, 2);
        assert_eq!(s.last().map(|x| x.fb_off), Some(0x6000 - u64::from(SAMPLE_BYTES)), "past the lines");
        assert!(offs.contains(&(11 * 0x800)), "last row not sampled");
    }

    #[test]
    fn addresses_walk_the_entries() {
        let e = [(0xa000, 0x1000), (0xf000, 0x2000)];
        assert_eq!(dma_at(&e, 0), Some((0xa000, 0x1000)));
        assert_eq!(dma_at(&e, 0x1800), Some((0xf800, 0x1800)));
        assert_eq!(dma_at(&e, 0x3000), None);
        assert_eq!(spans(&e), 2);
        assert_eq!(spans(&[(0x1000, 0x1000), (0x2000, 0x1000)]), 1);
    }
}
