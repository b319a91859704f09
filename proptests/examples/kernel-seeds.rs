//! Adds fuzz seeds derived from the kernel's recorded requests
//! (`data/kernel-*.corpus.gz`) to `fuzz/corpus/bytes/` and
//! `fuzz/corpus/structured/` as `kernel-NNN` files: one request per kind of
//! answer, device, range count and window size, a few hundred in all.
//! Deterministic. Run it after `fuzz-seeds` (which clears those
//! directories):
//!
//!     cargo run -p nr-ranges-proptests --features kernel-oracle --example kernel-seeds -- fuzz/corpus

use std::collections::HashMap;
use std::path::PathBuf;

use kmod_shim::BarKind;
use props::fixtures::PAGE_SIZES;
use props::fuzz::kernel::{Answer, Recorded, ANSWERS};
use props::scenario::{Field, Scenario, Val, BAR_LENS};

/// At most this many seeds per target.
const SEEDS: usize = 240;

/// The stratum of a recorded request: answer kind, device, range-count
/// bucket, window bucket.
fn stratum(r: &Recorded) -> (String, String, u32, usize) {
    let answer = match &r.answer {
        Answer::Probe => "probe".to_string(),
        Answer::DmaBuf(_) => "dma-buf".to_string(),
        Answer::Errno(n) => n.clone(),
        Answer::Other(_) => "other".to_string(),
    };
    let nr = match r.request.dma_buf.nr_ranges {
        n @ 0..=2 => n,
        3..=16 => 3,
        _ => 4,
    };
    let window = (r.request.readable as usize).min(4096).next_power_of_two().trailing_zeros() as usize;
    (answer, format!("{:?}", r.device), nr, window)
}

/// The structured scenario closest to a recorded request: the device's page
/// size and BARs (kind, the nearest length of [`BAR_LENS`], a length-aligned
/// start), every header field raw, the written ranges raw.
fn scenario(r: &Recorded) -> Scenario {
    let q = &r.request;
    let page = PAGE_SIZES.iter().position(|&p| p == r.device.page_size).unwrap_or(0) as u8;
    let mut bars = [(0u8, 0u8, 0u8); 6];
    for (i, b) in r.device.bars.iter().enumerate().take(6) {
        let kind = match b.kind {
            BarKind::Absent => 0,
            BarKind::Io => 1,
            BarKind::Mmio => 2,
        };
        let len = BAR_LENS.iter().position(|&l| l >= b.len).unwrap_or(BAR_LENS.len() - 1) as u8;
        bars[i] = (kind, len, 0);
    }
    Scenario {
        page,
        bars,
        importers: 0b1111,
        feature_flags: Field::raw(q.feature.flags),
        argsz: Field::raw(q.feature.argsz),
        region: u8::try_from(q.dma_buf.region_index).unwrap_or(255),
        open_flags: Field::raw(q.dma_buf.open_flags),
        flags: Field::raw(q.dma_buf.flags),
        nr_ranges: Field::raw(q.dma_buf.nr_ranges),
        readable: Field::raw(u32::try_from(q.readable).unwrap_or(u32::MAX)),
        ranges: q.ranges.iter().take(255).map(|g| (Val::Raw(g.offset), Val::Raw(g.length))).collect(),
        ..Scenario::default()
    }
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let answers = &*ANSWERS;
    assert!(!answers.entries.is_empty(), "no kernel corpus read");
    // Round-robin over the strata in first-seen order, so that every kind
    // of answer is in before any kind gets a second seed.
    let mut order: Vec<(String, String, u32, usize)> = Vec::new();
    let mut strata: HashMap<_, Vec<&Recorded>> = HashMap::new();
    for r in &answers.entries {
        let k = stratum(r);
        let v = strata.entry(k.clone()).or_default();
        if v.is_empty() {
            order.push(k);
        }
        if v.len() < 8 {
            v.push(r);
        }
    }
    let mut picked: Vec<&Recorded> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    'outer: for round in 0..8 {
        for k in &order {
            if let Some(r) = strata[k].get(round) {
                let bytes = r.request.encode().expect("kept entries encode");
                if seen.insert(bytes) {
                    picked.push(r);
                    if picked.len() == SEEDS {
                        break 'outer;
                    }
                }
            }
        }
    }
    for (i, r) in picked.iter().enumerate() {
        let bytes = r.request.encode().expect("kept entries encode");
        std::fs::write(root.join("bytes").join(format!("kernel-{i:03}")), &bytes).expect("write seed");
        let s = scenario(r);
        std::fs::write(root.join("structured").join(format!("kernel-{i:03}")), s.encode()).expect("write seed");
    }
    println!(
        "{} kernel seeds from {} strata of {} recorded requests",
        picked.len(),
        order.len(),
        answers.entries.len()
    );
}
