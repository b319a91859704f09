//! The kernel's own answers as the oracle: every entry of the committed
//! corpora (`proptests/data/kernel-*.corpus.gz`, recorded on real Debian
//! kernels under QEMU by `kernel-lab record-corpus`) is replayed against
//! `validator::validate(.., Policy::Linux)`, and every answer must be equal:
//! the errno, or a dma-buf of the same size, or a probe without an fd.
//!
//! The corpus is read by `props::kernel_corpus`, a reader written from the
//! format's documentation (`kernel-lab/src/conformance/corpus.rs`), not the
//! lab's code: the test goes through the lab's data only.

use props::kernel_corpus::{read, Answer, Recorded, CORPORA};
use validator::Errno;

/// Replays `entries` and returns the disagreements (index, predicted, recorded).
fn disagreements(entries: &[Recorded]) -> Vec<(usize, Answer, Answer)> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let want = Answer::predict(&e.request.request(), &e.device);
            (want != e.answer).then(|| (i, want, e.answer.clone()))
        })
        .collect()
}

/// The claim: `props::claims::claim("prop_validator_linux_matches_every_recorded_kernel_answer")`.
#[test]
fn prop_validator_linux_matches_every_recorded_kernel_answer() {
    for file in CORPORA {
        let corpus = read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (header, entries) = (&corpus.header, &corpus.entries);
        let version = file.trim_start_matches("kernel-").trim_end_matches(".corpus.gz");
        let kernel = header["kernel"].as_str().unwrap_or_default();
        assert!(kernel.starts_with(&format!("{version}+")), "{file} was recorded on {kernel}");
        assert_eq!(header["disagreements_when_recorded"], 0, "{file}");
        assert!(entries.len() >= 100_000, "{file}: only {} entries", entries.len());
        let bad = disagreements(entries);
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
    let mut entries = read(CORPORA[0]).expect("the committed corpus").entries;
    let buf = entries.iter().position(|e| matches!(e.answer, Answer::DmaBuf(_))).unwrap();
    let inval = entries.iter().position(|e| e.answer == Answer::Errno(Errno::EINVAL.name().into())).unwrap();
    if let Answer::DmaBuf(size) = &mut entries[buf].answer {
        *size += 4096;
    }
    entries[inval].answer = Answer::Errno(Errno::ENODEV.name().into());
    let bad = disagreements(&entries);
    let at: Vec<usize> = bad.iter().map(|d| d.0).collect();
    let mut want = vec![buf, inval];
    want.sort();
    assert_eq!(at, want);
}
