//! The kernel's own answers, committed: a compressed corpus of conformance
//! requests, the devices they ran on and what the real kernel answered.
//!
//! The corpus is the lab's batch written out in full, so that the property
//! suite can replay the kernel's answers without QEMU, and so that it stays
//! valid when `gen::Gen` changes: every field the kernel reads is stored,
//! never the seed alone.
//!
//! # Format (version 1)
//!
//! A gzip stream (RFC 1952) of:
//!
//! 1. One JSON line ([`CorpusHeader`]): format tag, kernel, date, seed,
//!    count, and the device table (each device once; entries refer to it
//!    by index).
//! 2. `cases` entries, little-endian, packed:
//!    - `u8` device index;
//!    - `u32` each: `vfio_device_feature.flags`, `.argsz`,
//!      `vfio_device_feature_dma_buf.region_index`, `.open_flags`, `.flags`,
//!      `.nr_ranges`;
//!    - `u64` readable: bytes of user memory readable after the feature
//!      header (`uapi::Request::readable`); past them the kernel faults;
//!    - the ranges written, run-length coded: `u32` runs, then per run
//!      `u32` repeat, `u64` offset, `u64` length;
//!    - the answer: tag `0` probe ok (no fd), `1` dma-buf + `u64` size
//!      (`lseek(SEEK_END)`), `2` errno + `u8` length + its name in ASCII
//!      (`EINVAL`), `3` dma-buf whose lseek failed + `u8` length + errno
//!      name, `4` not sent.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use uapi::{DmaRange, OwnedRequest, RequestBuilder};

use crate::conformance::gen::{Case, Gen};
use crate::proto::{DeviceInfo, KernelErrno, Observed};

/// The format tag of [`CorpusHeader::format`].
pub const FORMAT: &str = "nr-ranges-kernel-corpus/1";

/// The corpus's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusHeader {
    /// [`FORMAT`].
    pub format: String,
    /// `uname -r` in the guest.
    pub kernel: String,
    /// The Debian package it came from (ABI, version, suite).
    pub kernel_package: String,
    /// When the batch ran, UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub date: String,
    /// The generator seed (for the record only: entries are explicit).
    pub seed: u64,
    /// Entries that follow.
    pub cases: u64,
    /// Disagreements between the kernel and `validate(.., Policy::Linux)`
    /// when the corpus was recorded.
    pub disagreements_when_recorded: u64,
    /// The devices the guest bound to vfio-pci; entries index this table.
    pub devices: Vec<DeviceInfo>,
}

/// One recorded request and the kernel's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The request and its device.
    pub case: Case,
    /// What the kernel answered.
    pub answer: Observed,
}

/// Why a corpus could not be read or written.
#[derive(Debug)]
pub enum CorpusError {
    /// The file or the gzip stream failed.
    Io(std::io::Error),
    /// The header line is not a version-1 header.
    BadHeader(String),
    /// Entry `index` is cut short or malformed.
    BadEntry {
        /// 0-based entry number.
        index: u64,
    },
}

impl std::fmt::Display for CorpusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorpusError::Io(e) => write!(f, "corpus I/O: {e}"),
            CorpusError::BadHeader(e) => write!(f, "corpus header: {e}"),
            CorpusError::BadEntry { index } => write!(f, "corpus entry {index} is truncated or malformed"),
        }
    }
}

impl std::error::Error for CorpusError {}

impl From<std::io::Error> for CorpusError {
    fn from(e: std::io::Error) -> Self {
        CorpusError::Io(e)
    }
}

/// Appends `name` as `u8` length + bytes (errno names are short).
fn put_name(out: &mut Vec<u8>, name: &str) {
    let b = &name.as_bytes()[..name.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

/// Appends the request part of an entry (the header fields, the readable
/// window and the run-length coded ranges of the module doc), without device
/// and answer: `replay`'s request files and case lists use it too.
pub fn encode_request(q: &OwnedRequest, out: &mut Vec<u8>) {
    for v in [
        q.feature.flags,
        q.feature.argsz,
        q.dma_buf.region_index,
        q.dma_buf.open_flags,
        q.dma_buf.flags,
        q.dma_buf.nr_ranges,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&q.readable.to_le_bytes());
    // Run-length coding: the generator's uniform arrays (up to 262,144
    // copies of one range) would otherwise dominate the file.
    let mut runs: Vec<(u32, DmaRange)> = Vec::new();
    for &r in &q.ranges {
        match runs.last_mut() {
            Some((n, last)) if *last == r && *n < u32::MAX => *n += 1,
            _ => runs.push((1, r)),
        }
    }
    out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    for (n, r) in runs {
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&r.offset.to_le_bytes());
        out.extend_from_slice(&r.length.to_le_bytes());
    }
}

/// Decodes one [`encode_request`] from the front of `bytes`: the request and
/// the rest. `None` when it is cut short, or when it would expand to more
/// ranges than [`MAX_DECODED_RANGES`].
pub fn decode_request(bytes: &[u8]) -> Option<(OwnedRequest, &[u8])> {
    let mut cur = Cursor { bytes };
    let q = cur.request()?;
    Some((q, cur.bytes))
}

/// The most ranges [`decode_request`] expands: a window of
/// `uapi::MAX_ENCODED_WINDOW` bytes holds no more whole ranges (a few bytes
/// of run-length code must not become gigabytes).
pub const MAX_DECODED_RANGES: u64 = uapi::MAX_ENCODED_WINDOW / uapi::DMA_RANGE_SIZE as u64;

/// Appends one entry in the format of the module doc.
pub fn encode_entry(case: &Case, answer: Observed, out: &mut Vec<u8>) {
    // More than 255 devices cannot be indexed: written as 255, which the
    // reader refuses unless the table is that long.
    out.push(u8::try_from(case.device).unwrap_or(u8::MAX));
    encode_request(&case.request, out);
    match answer {
        Observed::Ok => out.push(0),
        Observed::DmaBuf(size) => {
            out.push(1);
            out.extend_from_slice(&size.to_le_bytes());
        }
        Observed::Errno(e) => {
            out.push(2);
            put_name(out, &KernelErrno(e).to_string());
        }
        Observed::LseekFailed(e) => {
            out.push(3);
            put_name(out, &KernelErrno(e).to_string());
        }
        Observed::NotSent => out.push(4),
    }
}

/// A cursor over the decompressed entries.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (a, b) = self.bytes.split_at(n);
        self.bytes = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn errno(&mut self) -> Option<i32> {
        let n = self.u8()? as usize;
        let name = std::str::from_utf8(self.take(n)?).ok()?;
        validator::Errno::from_name(name).map(|e| e.code()).or_else(|| name.strip_prefix("errno ")?.parse().ok())
    }

    fn request(&mut self) -> Option<OwnedRequest> {
        let (ff, argsz, region, open, flags, nr) =
            (self.u32()?, self.u32()?, self.u32()?, self.u32()?, self.u32()?, self.u32()?);
        let readable = self.u64()?;
        let runs = self.u32()?;
        let mut ranges = Vec::new();
        for _ in 0..runs {
            let (n, offset, length) = (self.u32()?, self.u64()?, self.u64()?);
            if ranges.len() as u64 + u64::from(n) > MAX_DECODED_RANGES {
                return None;
            }
            ranges.extend(std::iter::repeat_n(DmaRange::new(offset, length), n as usize));
        }
        RequestBuilder::new()
            .feature_flags(ff)
            .argsz(argsz)
            .region_index(region)
            .open_flags(open)
            .flags(flags)
            .nr_ranges(nr)
            .ranges(ranges)
            .readable(readable)
            .build()
            .ok()
    }

    fn entry(&mut self) -> Option<Entry> {
        let device = self.u8()? as usize;
        let request = self.request()?;
        let answer = match self.u8()? {
            0 => Observed::Ok,
            1 => Observed::DmaBuf(self.u64()?),
            2 => Observed::Errno(self.errno()?),
            3 => Observed::LseekFailed(self.errno()?),
            4 => Observed::NotSent,
            _ => return None,
        };
        Some(Entry { case: Case { device, request }, answer })
    }
}

/// Writes the corpus of a batch: regenerates the `observed.len()` cases of
/// `header.seed` on `header.devices` and stores each with its answer.
pub fn write(path: &std::path::Path, header: &CorpusHeader, observed: &[Observed]) -> Result<u64, CorpusError> {
    let line = serde_json::to_string(header).map_err(|e| CorpusError::BadHeader(e.to_string()))?;
    let file = std::fs::File::create(path)?;
    let mut gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::best());
    gz.write_all(line.as_bytes())?;
    gz.write_all(b"\n")?;
    let mut gen = Gen::new(header.seed, header.devices.iter().map(DeviceInfo::bar_lens).collect());
    let mut case = Case::default();
    let mut buf = Vec::new();
    for &answer in observed {
        gen.next_into(&mut case);
        buf.clear();
        encode_entry(&case, answer, &mut buf);
        gz.write_all(&buf)?;
    }
    gz.finish()?.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Reads a corpus: its header and every entry.
pub fn read(path: &std::path::Path) -> Result<(CorpusHeader, Vec<Entry>), CorpusError> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_end(&mut bytes)?;
    decode(&bytes)
}

/// Decodes a decompressed corpus.
pub fn decode(bytes: &[u8]) -> Result<(CorpusHeader, Vec<Entry>), CorpusError> {
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| CorpusError::BadHeader("no newline".into()))?;
    let header: CorpusHeader =
        serde_json::from_slice(&bytes[..nl]).map_err(|e| CorpusError::BadHeader(e.to_string()))?;
    if header.format != FORMAT {
        return Err(CorpusError::BadHeader(format!("format {:?}, expected {FORMAT:?}", header.format)));
    }
    let mut cur = Cursor { bytes: &bytes[nl + 1..] };
    let mut entries = Vec::with_capacity(header.cases as usize);
    for index in 0..header.cases {
        let e = cur.entry().ok_or(CorpusError::BadEntry { index })?;
        if e.case.device >= header.devices.len() {
            return Err(CorpusError::BadEntry { index });
        }
        entries.push(e);
    }
    if !cur.bytes.is_empty() {
        return Err(CorpusError::BadEntry { index: header.cases });
    }
    Ok((header, entries))
}

/// Now, UTC, as `YYYY-MM-DDTHH:MM:SSZ` (civil date from days since the
/// epoch, proleptic Gregorian).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::diff::predict;
    use crate::conformance::diff::tests::devices;

    #[test]
    fn a_written_corpus_reads_back_entry_for_entry() {
        let devices = devices();
        let model = devices[0].to_validator();
        let mut gen = Gen::new(9, vec![devices[0].bar_lens()]);
        let cases: Vec<Case> = (0..3_000).map(|_| gen.next_case()).collect();
        let mut observed: Vec<Observed> = cases.iter().map(|c| predict(c, &model).0).collect();
        observed[1] = Observed::LseekFailed(validator::Errno::EBADF.code());
        observed[2] = Observed::NotSent;
        observed[3] = Observed::Ok;
        let header = CorpusHeader {
            format: FORMAT.into(),
            kernel: "test".into(),
            kernel_package: "test".into(),
            date: utc_now(),
            seed: 9,
            cases: observed.len() as u64,
            disagreements_when_recorded: 0,
            devices,
        };
        let dir = std::env::temp_dir().join(format!("nr-ranges-corpus-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.gz");
        write(&path, &header, &observed).unwrap();
        let (h, entries) = read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(h, header);
        assert_eq!(entries.len(), cases.len());
        for ((e, c), o) in entries.iter().zip(&cases).zip(&observed) {
            assert_eq!((&e.case, e.answer), (c, *o));
        }
        assert!(h.date.len() == 20 && h.date.starts_with("20") && h.date.ends_with('Z'), "{}", h.date);
    }
}
