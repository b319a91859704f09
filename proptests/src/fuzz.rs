//! The fuzz targets' bodies (`../fuzz/fuzz_targets/*.rs` are one-line
//! wrappers), kept here so that a crash input replays under `cargo test`
//! (`tests/props.rs`, `fuzz_regressions_replay`) without the nightly toolchain.

use kmod_shim::{Fidelity, Policy};
use uapi::{DeviceFeatureDmaBufSingle, Request, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET};

use kmod_shim::{ExportError, ImporterId};
use validator::Outcome;

use crate::fixtures::{config, edge_device, path_importers, shim_with, PAGE_SIZES};
use crate::lifecycle::{run, Op};
use crate::oracle::{
    decomposition_given, fault_leaves_state, kernel_links_at_offset_zero_given, map_on_every_path, ok, predict_map,
    shim_agrees_with_validator, single_range_equivalence, strict_within_linux, strict_within_linux_given, Perturb,
};
use crate::scenario::Scenario;

/// Target `bytes`: decode arbitrary bytes (never panics), judge them under
/// both policies on a device with every BAR kind (Strict within Linux), check
/// the shim exports exactly what Linux accepts, map an accepted dma-buf on
/// every path (predicted path or error) with the invariant checker, revoke.
pub fn bytes(data: &[u8]) {
    let Ok(req) = Request::decode(data) else {
        assert!(data.len() < 8, "decode refused {} bytes", data.len());
        return;
    };
    #[cfg(feature = "kernel-oracle")]
    kernel::check(data, &req);
    // Page size from bits of open_flags, so the shim sees all three.
    let dev = edge_device(PAGE_SIZES[(req.dma_buf.open_flags >> 8) as usize % 3]);
    let linux = validator::validate(&req, &dev, Policy::Linux);
    let again = validator::validate(&req, &dev, Policy::Linux);
    assert_eq!(linux, again, "validate is deterministic");
    strict_within_linux_given(&req, &dev, &again);
    // Export through the shim; on acceptance attach and map through every
    // path, then run the invariant checker once over all the mappings.
    // The importers are added after the export: an export does not look at
    // them, and most fuzz inputs are refused, for which they were built in
    // vain.
    let mut s = shim_with(dev, config(Policy::Linux, Fidelity::Fixed), &[]);
    match (s.export(&req), linux) {
        (Ok(buf), Ok(Outcome::DmaBuf(e))) => {
            assert_eq!(s.dma_buf(buf).map(|b| b.size), Some(e.size), "size");
            let imps = path_importers();
            for &d in &imps {
                s.add_importer(d);
            }
            for (i, d) in imps.iter().enumerate() {
                let att = s.attach(buf, ImporterId(i)).expect("path importers attach");
                let want = predict_map(&s, buf, d);
                let got = s.map(att).map(|m| s.mapping(m).expect("live").path());
                assert_eq!(got, want, "map through {d:?}");
            }
            ok(&s, "after maps");
            s.set_memory_enabled(false);
            assert_eq!(s.counters().mappings, 0, "revoke left mappings");
            ok(&s, "after revoke");
        }
        (Err(ExportError::Rejected(r)), Err(v)) => assert_eq!(r, v),
        (Err(ExportError::NotAnExport), Ok(o)) => assert!(!matches!(o, Outcome::DmaBuf(_))),
        (got, want) => panic!("shim {got:?}, validator {want:?}"),
    }
}

/// Target `structured`: every differential oracle on one scenario.
pub fn structured(s: &Scenario) {
    let dev = s.device();
    let owned = s.request();
    let req = owned.request();
    let policy = s.policy();
    strict_within_linux(&req, &dev);
    shim_agrees_with_validator(&req, &dev, policy);
    let imps = s.importer_descs();
    let paths = path_importers();
    // The Fixed-mode maps through the path importers, shared by the
    // offset-0 and decomposition claims (one deterministic run, not two).
    let mut multi_paths = None;
    match s.fault_plan() {
        Some(plan) => {
            for &d in imps.iter().take(3) {
                fault_leaves_state(&dev, &req, policy, d, plan);
            }
        }
        None => {
            let fixed = map_on_every_path(&dev, &req, policy, Fidelity::Fixed, &paths);
            if imps[..] != paths[..] {
                map_on_every_path(&dev, &req, policy, Fidelity::Fixed, &imps);
            }
            kernel_links_at_offset_zero_given(&dev, &req, policy, &fixed);
            multi_paths = Some(fixed);
        }
    }
    let h = owned.dma_buf;
    if h.nr_ranges == 1
        && !owned.ranges.is_empty()
        && owned.feature.flags == VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF
    {
        let r = owned.ranges[0];
        let single = DeviceFeatureDmaBufSingle {
            region_index: h.region_index,
            open_flags: h.open_flags,
            offset: r.offset,
            length: r.length,
        };
        let p = Perturb { argsz: owned.feature.argsz, flags: h.flags, readable: owned.readable };
        single_range_equivalence(&dev, &single, policy, p);
    }
    // `Scenario::well_formed()` without building the request again.
    let well_formed = crate::well_formed(h.region_index, h.open_flags, &owned.ranges) == owned;
    if well_formed && !owned.ranges.is_empty() && owned.ranges.len() <= 64 {
        // A well-formed request is the decomposition's multi-range request.
        decomposition_given(&dev, policy, h.region_index, h.open_flags, &owned.ranges, multi_paths);
    }
}

/// Target `lifecycle`: three bytes per operation ([`Op::from_bytes`]), at
/// most 256 operations.
pub fn lifecycle(data: &[u8]) {
    let ops: Vec<Op> = data.chunks_exact(3).take(256).map(|c| Op::from_bytes(c[0], c[1], c[2])).collect();
    run(&ops);
}

/// The kernel's own answers as an oracle of the `bytes` target (feature
/// `kernel-oracle`): the committed corpora `data/kernel-*.corpus.gz`
/// (100,000 requests each, recorded on real kernels by the kernel lab; the
/// format is documented in `kernel-lab/src/conformance/corpus.rs`) are read
/// once, and an input whose bytes are exactly a recorded request's must get
/// the kernel's answer from `validate(.., Policy::Linux)` on the device it
/// was recorded on. `NR_RANGES_KERNEL_CORPUS_DIR` replaces `data/`.
#[cfg(feature = "kernel-oracle")]
pub mod kernel {
    use std::collections::HashMap;
    use std::io::Read;
    use std::sync::LazyLock;

    use kmod_shim::{Bar, Device, PageSize, Policy};
    use uapi::{DmaRange, OwnedRequest, Request, RequestBuilder};
    use validator::Outcome;

    /// The committed corpora, one per kernel.
    pub const CORPORA: [&str; 2] = ["kernel-7.2.13.corpus.gz", "kernel-7.3.4.corpus.gz"];

    /// The longest input the fuzz scripts give libFuzzer (`-max_len`):
    /// longer recorded requests can never be an input, so they are not kept.
    pub const MAX_LEN: usize = 4096;

    /// An answer, as the corpus records it and as the validator predicts it.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub enum Answer {
        /// Success without an fd.
        Probe,
        /// A dma-buf of this many bytes.
        DmaBuf(u64),
        /// The ioctl failed with this errno (its name).
        Errno(String),
        /// Anything else (lseek failed, not sent): never predicted.
        Other,
    }

    impl Answer {
        /// What `validate(req, dev, Policy::Linux)` predicts, in these terms.
        pub fn predict(req: &Request<'_>, dev: &Device) -> Answer {
            match validator::validate(req, dev, Policy::Linux) {
                Ok(Outcome::DmaBuf(x)) => Answer::DmaBuf(x.size),
                Ok(_) => Answer::Probe,
                Err(r) => Answer::Errno(r.errno().name().to_string()),
            }
        }
    }

    /// One recorded request with its device and the kernel's answer.
    #[derive(Debug, Clone)]
    pub struct Recorded {
        /// The device it ran on.
        pub device: Device,
        /// The request.
        pub request: OwnedRequest,
        /// What the kernel answered.
        pub answer: Answer,
    }

    /// The recorded requests of at most [`MAX_LEN`] encoded bytes, by a
    /// fingerprint of those bytes.
    pub struct Answers {
        /// Every kept entry, in corpus order (both corpora).
        pub entries: Vec<Recorded>,
        /// Each kept entry's encoded bytes (what an input must equal).
        bytes: Vec<Vec<u8>>,
        by_fingerprint: HashMap<u64, Vec<usize>>,
    }

    impl Answers {
        /// The entries recorded for exactly these input bytes.
        pub fn get<'a>(&'a self, data: &'a [u8]) -> impl Iterator<Item = &'a Recorded> + 'a {
            let hits = self.by_fingerprint.get(&fingerprint(data)).map(Vec::as_slice).unwrap_or_default();
            hits.iter().filter(move |&&i| self.bytes[i] == data).map(|&i| &self.entries[i])
        }
    }

    /// The length and the first 40 bytes (both headers and the first
    /// range), mixed: hashing a whole input of up to 4 KiB per execution
    /// cost more than the rest of the target; a hit is then compared in
    /// full.
    fn fingerprint(data: &[u8]) -> u64 {
        let mut p = [0u8; 40];
        let n = data.len().min(40);
        p[..n].copy_from_slice(&data[..n]);
        let mut h = data.len() as u64;
        for w in p.chunks_exact(8) {
            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        }
        h
    }

    /// The corpora, read on first use.
    pub static ANSWERS: LazyLock<Answers> = LazyLock::new(load);

    /// Checks `req` (decoded from `data`) against the kernel's answers, if
    /// `data` is a recorded request.
    pub fn check(data: &[u8], req: &Request<'_>) {
        check_against(req, ANSWERS.get(data));
    }

    /// Panics unless `validate` gives `req` each recorded answer on its
    /// device.
    pub fn check_against<'r>(req: &Request<'_>, recorded: impl IntoIterator<Item = &'r Recorded>) {
        for r in recorded {
            let got = Answer::predict(req, &r.device);
            assert_eq!(got, r.answer, "validate disagrees with the kernel's recorded answer on {:?}", r.device);
        }
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
            Some(String::from_utf8_lossy(a).into_owned())
        }
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
                dev = dev.with_bar(usize::try_from(b["index"].as_u64()?).ok()?, bar);
            }
            out.push(dev);
        }
        Some(out)
    }

    /// Appends the entries of one corpus file's bytes (decompressed).
    fn parse(bytes: &[u8], out: &mut Vec<Recorded>) -> Option<()> {
        let nl = bytes.iter().position(|&b| b == b'\n')?;
        let header: serde_json::Value = serde_json::from_slice(&bytes[..nl]).ok()?;
        if header["format"] != "nr-ranges-kernel-corpus/1" {
            return None;
        }
        let devs = devices(&header)?;
        let mut cur = Cursor(&bytes[nl + 1..]);
        for _ in 0..header["cases"].as_u64()? {
            let device = *devs.get(cur.u8()? as usize)?;
            let (ff, argsz, region, open, flags, nr) =
                (cur.u32()?, cur.u32()?, cur.u32()?, cur.u32()?, cur.u32()?, cur.u32()?);
            let readable = cur.u64()?;
            let mut ranges = Vec::new();
            for _ in 0..cur.u32()? {
                let (n, offset, length) = (cur.u32()?, cur.u64()?, cur.u64()?);
                ranges.extend(std::iter::repeat_n(DmaRange::new(offset, length), n as usize));
            }
            let answer = match cur.u8()? {
                0 => Answer::Probe,
                1 => Answer::DmaBuf(cur.u64()?),
                2 => Answer::Errno(cur.name()?),
                3 => {
                    cur.name()?;
                    Answer::Other
                }
                4 => Answer::Other,
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
            out.push(Recorded { device, request, answer });
        }
        cur.0.is_empty().then_some(())
    }

    fn load() -> Answers {
        let dir = std::env::var("NR_RANGES_KERNEL_CORPUS_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/data").to_string());
        let mut all = Vec::new();
        for file in CORPORA {
            let path = format!("{dir}/{file}");
            let mut bytes = Vec::new();
            let read = std::fs::File::open(&path)
                .and_then(|f| flate2::read::GzDecoder::new(f).read_to_end(&mut bytes).map(|_| ()));
            // A build without the data (OSS-Fuzz) fuzzes without this oracle,
            // but says so; a corrupt corpus is a bug.
            if let Err(e) = read {
                eprintln!("kernel-oracle: {path}: {e}; fuzzing without the kernel's answers");
                continue;
            }
            parse(&bytes, &mut all).unwrap_or_else(|| panic!("{path}: not a version-1 kernel corpus"));
        }
        let mut entries = Vec::new();
        let mut bytes = Vec::new();
        let mut by_fingerprint: HashMap<u64, Vec<usize>> = HashMap::new();
        for r in all {
            let Ok(b) = r.request.encode() else { continue };
            if b.len() > MAX_LEN {
                continue;
            }
            // The generator repeats common requests, and both corpora hold
            // the same ones: index each (bytes, device, answer) once, or a
            // hit would validate the same thing hundreds of times.
            let bucket = by_fingerprint.entry(fingerprint(&b)).or_default();
            let seen = |&i: &usize| {
                let e: &Recorded = &entries[i];
                bytes[i] == b && e.device == r.device && e.answer == r.answer
            };
            if !bucket.iter().any(seen) {
                bucket.push(entries.len());
            }
            entries.push(r);
            bytes.push(b);
        }
        Answers { entries, bytes, by_fingerprint }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Every kept entry decodes from its bytes to a request the oracle
        /// accepts, and a flipped answer (a dma-buf one page larger, an
        /// errno renamed) is refused.
        #[test]
        fn kernel_oracle_agrees_and_can_fail() {
            let a = &*ANSWERS;
            assert!(a.entries.len() >= 190_000, "{} entries", a.entries.len());
            for bytes in &a.bytes {
                let req = Request::decode(bytes).expect("a recorded request decodes");
                let hits: Vec<_> = a.get(bytes).collect();
                assert!(!hits.is_empty(), "a kept entry is found by its bytes");
                check_against(&req, hits);
            }
            for flip in [Answer::DmaBuf(0), Answer::Errno(String::new())] {
                let mut r = a
                    .entries
                    .iter()
                    .find(|r| std::mem::discriminant(&r.answer) == std::mem::discriminant(&flip))
                    .expect("the corpus has both kinds")
                    .clone();
                let bytes = r.request.encode().expect("kept entries encode");
                r.answer = match r.answer {
                    Answer::DmaBuf(n) => Answer::DmaBuf(n + 4096),
                    _ => Answer::Errno("ENOTTY".into()),
                };
                let req = Request::decode(&bytes).expect("decodes");
                let caught = std::panic::catch_unwind(|| check_against(&req, [&r]));
                assert!(caught.is_err(), "a flipped answer {:?} passed", r.answer);
            }
        }
    }
}
