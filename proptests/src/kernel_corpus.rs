//! The committed corpora of the real kernel's answers
//! (`data/kernel-*.corpus.gz`, written by `kernel-lab record-corpus`), read
//! here once for everything in this crate that replays them: the property
//! `prop_validator_linux_matches_every_recorded_kernel_answer`
//! (`tests/kernel_corpus.rs`), the `bytes` fuzz target's kernel oracle
//! (`fuzz::kernel`, feature `kernel-oracle`) and its seeds (`examples/kernel-seeds.rs`).
//!
//! The format (version 1) is documented by its writer,
//! `kernel-lab/src/conformance/corpus.rs`; this reader is written from that
//! text and does not use the lab's code (this crate depends on the lab only
//! for seeds), so a replay checks the data, not the writer against itself.

use std::io::Read;

use uapi::Request;
use uapi::{DmaRange, OwnedRequest, RequestBuilder};
use validator::{Bar, Device, Outcome, PageSize, Policy};

/// The committed corpora, one per kernel.
pub const CORPORA: [&str; 2] = ["kernel-7.2.13.corpus.gz", "kernel-7.3.4.corpus.gz"];

/// The format tag of a version-1 header.
pub const FORMAT: &str = "nr-ranges-kernel-corpus/1";

/// An answer, as the corpus records it and as the validator predicts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Answer {
    /// Success without an fd.
    Probe,
    /// A dma-buf of this many bytes.
    DmaBuf(u64),
    /// The ioctl failed with this errno (its name).
    Errno(String),
    /// Anything else the lab can record (a dma-buf whose lseek failed, a
    /// request not sent): never predicted, so always a disagreement.
    Other(String),
}

impl Answer {
    /// What `validate(req, dev, Policy::Linux)` predicts, in these terms.
    pub fn predict(req: &Request<'_>, dev: &Device) -> Answer {
        match validator::validate(req, dev, Policy::Linux) {
            Ok(Outcome::DmaBuf(x)) => Answer::DmaBuf(x.size),
            Ok(Outcome::Probe | Outcome::OtherFeature { .. }) => Answer::Probe,
            Err(r) => Answer::Errno(r.errno().name().to_string()),
        }
    }
}

/// One recorded request with its device and the kernel's answer.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Index into [`Corpus::devices`].
    pub device_index: usize,
    /// The device it ran on.
    pub device: Device,
    /// The request.
    pub request: OwnedRequest,
    /// What the kernel answered.
    pub answer: Answer,
}

/// One corpus file.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The header line.
    pub header: serde_json::Value,
    /// The header's device table, as the validator models it.
    pub devices: Vec<Device>,
    /// Every entry, in file order.
    pub entries: Vec<Recorded>,
}

/// Why a corpus could not be read.
#[derive(Debug)]
pub enum CorpusError {
    /// The file or its gzip stream.
    Io(std::io::Error),
    /// The header line is missing, not JSON, or not version 1.
    BadHeader(String),
    /// Entry `index` is cut short or malformed (or, at `index == cases`,
    /// bytes follow the last entry).
    BadEntry {
        /// 0-based entry number.
        index: u64,
    },
}

impl std::fmt::Display for CorpusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorpusError::Io(e) => write!(f, "{e}"),
            CorpusError::BadHeader(e) => write!(f, "not a version-1 kernel corpus: {e}"),
            CorpusError::BadEntry { index } => write!(f, "entry {index} is truncated or malformed"),
        }
    }
}

impl std::error::Error for CorpusError {}

/// The directory of the corpora: `NR_RANGES_KERNEL_CORPUS_DIR`, else this
/// crate's `data/` (another recording, or a doctored copy that shows a
/// replay failing).
pub fn dir() -> String {
    std::env::var("NR_RANGES_KERNEL_CORPUS_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/data").to_string())
}

/// Reads `file` (one of [`CORPORA`]) from [`dir`].
pub fn read(file: &str) -> Result<Corpus, CorpusError> {
    let path = format!("{}/{file}", dir());
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| flate2::read::GzDecoder::new(f).read_to_end(&mut bytes))
        .map_err(|e| CorpusError::Io(std::io::Error::new(e.kind(), format!("{path}: {e}"))))?;
    parse(&bytes)
}

/// Parses a decompressed corpus.
pub fn parse(bytes: &[u8]) -> Result<Corpus, CorpusError> {
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| CorpusError::BadHeader("no header line".into()))?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[..nl]).map_err(|e| CorpusError::BadHeader(e.to_string()))?;
    if header["format"] != FORMAT {
        return Err(CorpusError::BadHeader(format!("format {}", header["format"])));
    }
    let devices = devices(&header).ok_or_else(|| CorpusError::BadHeader("bad device table".into()))?;
    let cases = header["cases"].as_u64().ok_or_else(|| CorpusError::BadHeader("no case count".into()))?;
    let mut cur = Cursor(&bytes[nl + 1..]);
    // The count is the file's word: reserve no more than its bytes can hold.
    let mut entries = Vec::with_capacity(usize::try_from(cases).unwrap_or(0).min(bytes.len() / 41));
    for index in 0..cases {
        let e = cur.entry(&devices).ok_or(CorpusError::BadEntry { index })?;
        entries.push(e);
    }
    if !cur.0.is_empty() {
        return Err(CorpusError::BadEntry { index: cases });
    }
    Ok(Corpus { header, devices, entries })
}

fn devices(header: &serde_json::Value) -> Option<Vec<Device>> {
    let mut out = Vec::new();
    for d in header["devices"].as_array()? {
        let mut dev = Device::new(PageSize::from_bytes(d["page_size"].as_u64()?)?);
        for b in d["bars"].as_array()? {
            let (start, len) = (b["start"].as_u64()?, b["len"].as_u64()?);
            let bar = match b["kind"].as_str()? {
                "mem" => Bar::mmio(start, len),
                "io" => Bar::io(start, len),
                _ => return None,
            };
            let index = usize::try_from(b["index"].as_u64()?).ok()?;
            if index >= 6 {
                return None;
            }
            dev = dev.with_bar(index, bar);
        }
        out.push(dev);
    }
    Some(out)
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (a, b) = self.0.split_first_chunk::<N>()?;
        self.0 = b;
        Some(*a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn name(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        String::from_utf8(a.to_vec()).ok()
    }

    fn entry(&mut self, devices: &[Device]) -> Option<Recorded> {
        let device_index = self.u8()? as usize;
        let device = *devices.get(device_index)?;
        let (ff, argsz, region, open, flags, nr) =
            (self.u32()?, self.u32()?, self.u32()?, self.u32()?, self.u32()?, self.u32()?);
        let readable = self.u64()?;
        let mut ranges = Vec::new();
        for _ in 0..self.u32()? {
            let (n, offset, length) = (self.u32()?, self.u64()?, self.u64()?);
            // A run longer than any array the kernel could copy is corrupt.
            if ranges.len() + n as usize > 1 << 20 {
                return None;
            }
            ranges.extend(std::iter::repeat_n(DmaRange::new(offset, length), n as usize));
        }
        let answer = match self.u8()? {
            0 => Answer::Probe,
            1 => Answer::DmaBuf(self.u64()?),
            2 => Answer::Errno(self.name()?),
            3 => Answer::Other(format!("dma-buf, lseek failed {}", self.name()?)),
            4 => Answer::Other("not sent".into()),
            _ => return None,
        };
        let request = RequestBuilder::new()
            .feature_flags(ff)
            .argsz(argsz)
            .region_index(region)
            .open_flags(open)
            .flags(flags)
            .nr_ranges(nr)
            .ranges(ranges)
            .readable(readable)
            .build()
            .ok()?;
        Some(Recorded { device_index, device, request, answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cut corpus, bytes after the last entry, a wrong tag and a bad
    /// answer tag are typed errors, not panics.
    #[test]
    fn a_damaged_corpus_is_an_error() {
        let header = br#"{"format":"nr-ranges-kernel-corpus/1","cases":1,"devices":[{"page_size":4096,"bars":[{"index":2,"kind":"mem","start":0,"len":4096}]}]}"#;
        let mut entry = vec![0u8];
        for v in [0x2_0003u32, 32, 2, 0o2, 0, 1] {
            entry.extend_from_slice(&v.to_le_bytes());
        }
        entry.extend_from_slice(&24u64.to_le_bytes());
        entry.extend_from_slice(&1u32.to_le_bytes());
        entry.extend_from_slice(&1u32.to_le_bytes());
        entry.extend_from_slice(&0u64.to_le_bytes());
        entry.extend_from_slice(&4096u64.to_le_bytes());
        entry.extend_from_slice(&[1]);
        entry.extend_from_slice(&4096u64.to_le_bytes());
        let file = |e: &[u8]| [&header[..], b"\n", e].concat();
        let c = parse(&file(&entry)).expect("a good corpus");
        assert_eq!((c.entries.len(), &c.entries[0].answer), (1, &Answer::DmaBuf(4096)));
        assert!(matches!(parse(&file(&entry[..entry.len() - 1])), Err(CorpusError::BadEntry { index: 0 })));
        assert!(matches!(parse(&file(&[&entry[..], &[0]].concat())), Err(CorpusError::BadEntry { index: 1 })));
        let mut bad_tag = entry.clone();
        let at = bad_tag.len() - 9;
        bad_tag[at] = 9;
        assert!(matches!(parse(&file(&bad_tag)), Err(CorpusError::BadEntry { index: 0 })));
        let other = [&br#"{"format":"x"}"#[..], b"\n"].concat();
        assert!(matches!(parse(&other), Err(CorpusError::BadHeader(_))));
        assert!(matches!(parse(b"no newline"), Err(CorpusError::BadHeader(_))));
    }
}
