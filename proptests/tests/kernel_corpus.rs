//! The kernel's own answers as the oracle: every entry of the committed
//! corpora (`proptests/data/kernel-*.corpus.gz`, recorded on real Debian
//! kernels under QEMU by `kernel-lab record-corpus`) is replayed against
//! `validator::validate(.., Policy::Linux)`, and every answer must be equal:
//! the errno, or a dma-buf of the same size, or a probe without an fd.
//!
//! This file reads the corpus format on its own (the format is documented in
//! `kernel-lab/src/conformance/corpus.rs`): the test does not go through the
//! lab's code, only through its data.

use std::io::Read;

use uapi::{DmaRange, OwnedRequest, RequestBuilder};
use validator::{validate, Bar, Device, Errno, Outcome, PageSize, Policy};

/// The committed corpora, one per kernel.
const CORPORA: [&str; 2] = ["kernel-7.2.13.corpus.gz", "kernel-7.3.4.corpus.gz"];

/// An answer as the corpus states it and as the validator predicts it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// Success without an fd.
    Probe,
    /// A dma-buf of this many bytes.
    DmaBuf(u64),
    /// The ioctl failed with this errno (its name).
    Errno(String),
    /// Anything else the lab can record (lseek failed, not sent): never
    /// what the validator predicts, so it always counts as a disagreement.
    Other(String),
}

/// One recorded request.
struct Entry {
    device: usize,
    request: OwnedRequest,
    answer: Answer,
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        assert!(self.0.len() >= n, "corpus truncated");
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn name(&mut self) -> String {
        let n = self.u8() as usize;
        String::from_utf8(self.take(n).to_vec()).expect("errno name is ASCII")
    }
}

/// The device table of the header, as the validator models it.
fn devices(header: &serde_json::Value) -> Vec<Device> {
    let mut out = Vec::new();
    for d in header["devices"].as_array().expect("devices") {
        let page = PageSize::from_bytes(d["page_size"].as_u64().expect("page_size")).expect("a known page size");
        let mut dev = Device::new(page);
        for b in d["bars"].as_array().expect("bars") {
            let (start, len) = (b["start"].as_u64().unwrap(), b["len"].as_u64().unwrap());
            let bar = match b["kind"].as_str() {
                Some("mem") => Bar::mmio(start, len),
                Some("io") => Bar::io(start, len),
                other => panic!("unknown BAR kind {other:?}"),
            };
            dev = dev.with_bar(b["index"].as_u64().unwrap() as usize, bar);
        }
        out.push(dev);
    }
    out
}

/// Reads one corpus: its header and entries. `NR_RANGES_KERNEL_CORPUS_DIR`
/// replaces `proptests/data` (to replay another recording, or a doctored
/// copy that shows the replay failing).
fn read(file: &str) -> (serde_json::Value, Vec<Entry>) {
    let dir = std::env::var("NR_RANGES_KERNEL_CORPUS_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/data").to_string());
    let path = format!("{dir}/{file}");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .read_to_end(&mut bytes)
        .unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').expect("header line");
    let header: serde_json::Value = serde_json::from_slice(&bytes[..nl]).unwrap();
    assert_eq!(header["format"], "nr-ranges-kernel-corpus/1");
    let mut cur = Cursor(&bytes[nl + 1..]);
    let count = header["cases"].as_u64().unwrap();
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let device = cur.u8() as usize;
        let (ff, argsz, region, open, flags, nr) = (cur.u32(), cur.u32(), cur.u32(), cur.u32(), cur.u32(), cur.u32());
        let readable = cur.u64();
        let mut ranges = Vec::new();
        for _ in 0..cur.u32() {
            let (n, offset, length) = (cur.u32(), cur.u64(), cur.u64());
            ranges.extend(std::iter::repeat_n(DmaRange::new(offset, length), n as usize));
        }
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
            .expect("a recorded request builds");
        let answer = match cur.u8() {
            0 => Answer::Probe,
            1 => Answer::DmaBuf(cur.u64()),
            2 => Answer::Errno(cur.name()),
            3 => Answer::Other(format!("dma-buf, lseek failed {}", cur.name())),
            4 => Answer::Other("not sent".into()),
            t => panic!("unknown answer tag {t}"),
        };
        entries.push(Entry { device, request, answer });
    }
    assert!(cur.0.is_empty(), "bytes after the last entry");
    (header, entries)
}

/// What `validate(.., Policy::Linux)` predicts, in the corpus's terms.
fn predict(e: &Entry, dev: &Device) -> Answer {
    match validate(&e.request.request(), dev, Policy::Linux) {
        Ok(Outcome::Probe) | Ok(Outcome::OtherFeature { .. }) => Answer::Probe,
        Ok(Outcome::DmaBuf(x)) => Answer::DmaBuf(x.size),
        Err(r) => Answer::Errno(r.errno().name().to_string()),
    }
}

/// Replays `entries` and returns the disagreements (index, predicted, recorded).
fn disagreements(devices: &[Device], entries: &[Entry]) -> Vec<(usize, Answer, Answer)> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let want = predict(e, &devices[e.device]);
            (want != e.answer).then(|| (i, want, e.answer.clone()))
        })
        .collect()
}

/// The claim: `props::claims::claim("prop_validator_linux_matches_every_recorded_kernel_answer")`.
#[test]
fn prop_validator_linux_matches_every_recorded_kernel_answer() {
    for file in CORPORA {
        let (header, entries) = read(file);
        let version = file.trim_start_matches("kernel-").trim_end_matches(".corpus.gz");
        let kernel = header["kernel"].as_str().unwrap_or_default();
        assert!(kernel.starts_with(&format!("{version}+")), "{file} was recorded on {kernel}");
        assert_eq!(header["disagreements_when_recorded"], 0, "{file}");
        assert!(entries.len() >= 100_000, "{file}: only {} entries", entries.len());
        let devs = devices(&header);
        let bad = disagreements(&devs, &entries);
        assert!(bad.is_empty(), "{file} ({}): {} disagreements, first {:?}", header["kernel"], bad.len(), &bad[..1]);
        // The corpus exercises both kinds of answer and several errnos.
        let errnos: std::collections::BTreeSet<&str> = entries
            .iter()
            .filter_map(|e| match &e.answer {
                Answer::Errno(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        assert!(entries.iter().any(|e| matches!(e.answer, Answer::DmaBuf(_))), "{file}: no dma-buf");
        for name in ["EINVAL", "ENODEV", "EFAULT", "ENOMEM", "EOVERFLOW"] {
            assert!(errnos.contains(name), "{file}: no {name} in {errnos:?}");
        }
    }
}

/// The replay can fail: a recorded answer changed in memory (a dma-buf one
/// page larger, an EINVAL read as ENODEV) is reported as exactly one
/// disagreement each.
#[test]
fn replay_reports_a_flipped_answer() {
    let (header, mut entries) = read(CORPORA[0]);
    let devs = devices(&header);
    let buf = entries.iter().position(|e| matches!(e.answer, Answer::DmaBuf(_))).unwrap();
    let inval = entries.iter().position(|e| e.answer == Answer::Errno(Errno::EINVAL.name().into())).unwrap();
    if let Answer::DmaBuf(size) = &mut entries[buf].answer {
        *size += 4096;
    }
    entries[inval].answer = Answer::Errno(Errno::ENODEV.name().into());
    let bad = disagreements(&devs, &entries);
    let at: Vec<usize> = bad.iter().map(|d| d.0).collect();
    let mut want = vec![buf, inval];
    want.sort();
    assert_eq!(at, want);
}
