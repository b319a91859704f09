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
    use std::sync::LazyLock;

    use uapi::Request;

    pub use crate::kernel_corpus::{Answer, Recorded, CORPORA};

    /// The longest input the fuzz scripts give libFuzzer (`-max_len`):
    /// longer recorded requests can never be an input, so they are not kept.
    pub const MAX_LEN: usize = 4096;

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

    fn load() -> Answers {
        let mut all = Vec::new();
        for file in CORPORA {
            match crate::kernel_corpus::read(file) {
                Ok(c) => all.extend(c.entries),
                // A build without the data (OSS-Fuzz) fuzzes without this
                // oracle, but says so; a corrupt corpus is a bug.
                Err(crate::kernel_corpus::CorpusError::Io(e)) => {
                    eprintln!("kernel-oracle: {e}; fuzzing without the kernel's answers");
                }
                Err(e) => panic!("{file}: {e}"),
            }
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
