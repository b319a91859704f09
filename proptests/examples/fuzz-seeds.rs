//! Writes the fuzz seed corpora (`fuzz/corpus/<target>/`): the edge cases of
//! the properties and the kernel lab's edge-biased requests, a few hundred
//! small files in all. Deterministic: rerunning rewrites the same files.
//!
//!     cargo run -p nr-ranges-proptests --features lab-seeds --example fuzz-seeds -- fuzz/corpus

use std::path::{Path, PathBuf};

use kernel_lab::conformance::gen::{BarLens, Gen};
use props::fixtures::{edge_device, edge_values, GIB};
use props::lifecycle::Op;
use props::scenario::{Field, Scenario, Val};
use props::well_formed;
use uapi::DmaRange;
use uapi::OwnedRequest;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let dirs = ["bytes", "structured", "lifecycle"].map(|t| root.join(t));
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).expect("mkdir");
    }
    assert_eq!(props::fixtures::NR_RANGES_EDGES, kernel_lab::conformance::gen::NR_RANGES_EDGES, "mirror out of date");
    let page = 0x1000;
    let r = DmaRange::new;

    // bytes: hand-written edges over the edge device (BAR0 16 GiB, BAR1
    // 256 B, BAR2 I/O, BAR3 absent, BAR4 64 KiB, BAR5 at 2^63).
    let mut reqs: Vec<(String, OwnedRequest)> = Vec::new();
    let mut add = |n: &str, req: OwnedRequest| reqs.push((n.to_string(), req));
    add("one-page", well_formed(0, 2, &[r(0, page)]));
    add("bar-end", well_formed(0, 2, &[r(16 * GIB - page, page)]));
    add("past-bar-end", well_formed(0, 2, &[r(16 * GIB, page)]));
    add("whole-bar0", well_formed(0, 2, &[r(0, 16 * GIB)]));
    add("max-sg", well_formed(0, 2, &[r(0, 0xffff_f000)]));
    add("max-sg-plus", well_formed(0, 2, &[r(0, 0xffff_f000 + page)]));
    add("over-4g-total", well_formed(0, 2, &[r(0, 3 * GIB), r(8 * GIB, 3 * GIB)]));
    add("overlap", well_formed(0, 2, &[r(0x4000, 0x4000), r(0x2000, 0x4000)]));
    add("unordered", well_formed(0, 2, &[r(0x10_0000, page), r(0x2000, 0x3000), r(0x8000_0000, 0x2000)]));
    add("sub-page-bar", well_formed(1, 2, &[r(0, page)]));
    add("io-bar", well_formed(2, 2, &[r(0, page)]));
    add("absent-bar", well_formed(3, 2, &[r(0, page)]));
    add("bar4-whole", well_formed(4, 2, &[r(0, 0x1_0000)]));
    add("bar5-high", well_formed(5, 2, &[r(0, 1 << 40)]));
    add("offset-2p63", well_formed(0, 2, &[r(1 << 63, page)]));
    add("offset-2p64-page", well_formed(0, 2, &[r(0u64.wrapping_sub(page), page)]));
    add("total-overflow", well_formed(5, 2, &[r(0, 1 << 63), r(0, 1 << 63)]));
    add("total-bit63", well_formed(0, 2, &[r(0, 1 << 62), r(0, 1 << 62)]));
    add("zero-length", well_formed(0, 2, &[r(0, 0)]));
    add("unaligned", well_formed(0, 2, &[r(1, page)]));
    add("rom-region", well_formed(6, 2, &[r(0, page)]));
    add("open-flags-max", well_formed(0, u32::MAX, &[r(0, page)]));
    let many: Vec<DmaRange> = (0..200).map(|i| r(i * 2 * page, page)).collect();
    add("many-ranges", well_formed(0, 2, &many));
    let mut short = well_formed(0, 2, &[r(0, page), r(page, page)]);
    short.feature.argsz = 24;
    add("argsz-short", short);
    let mut nr_big = well_formed(0, 2, &[r(0, page)]);
    nr_big.dma_buf.nr_ranges = 262_145;
    add("nr-kmalloc-plus-one", nr_big);
    let mut unread = well_formed(0, 2, &[r(0, page)]);
    unread.readable = 20;
    add("range-unreadable", unread);
    for (n, q) in &reqs {
        write(&dirs[0], n, &q.encode().expect("seed windows are small"));
    }
    // The kernel lab's generator: edge-biased whole requests (small ones).
    let dev = edge_device(kmod_shim::PageSize::K4);
    let lens: BarLens = dev.bars.map(|b| b.len);
    let mut g = Gen::new(0x6e72_2d72_616e_6765, vec![lens]);
    let mut buf = Vec::new();
    let mut n = 0;
    while n < 150 {
        let c = g.next_case();
        if c.readable_bytes() > 2048 {
            continue;
        }
        c.encode_into(&mut buf);
        write(&dirs[0], &format!("lab-{n:03}"), &buf);
        n += 1;
    }

    // structured: the same edges as scenarios, across page sizes, policies,
    // topologies and fault plans.
    let edges = edge_values(page, 16 * GIB).len() as u8;
    let mut k = 0;
    let mut sc = |s: Scenario| {
        write(&dirs[1], &format!("s-{k:03}"), &s.encode());
        k += 1;
    };
    let pages = |o: u16, l: u16| (Val::Pages(o), Val::Pages(l));
    let base = Scenario { ranges: vec![pages(0, 1)], ..Scenario::default() };
    for page_sel in [0u8, 1, 2, 0x80] {
        for policy in [0u8, 1] {
            sc(Scenario { page: page_sel, policy, ..base.clone() });
            sc(Scenario {
                page: page_sel,
                policy,
                ranges: vec![pages(0x100, 1), pages(2, 3), pages(0x8000, 2)],
                ..base.clone()
            });
        }
    }
    for e in 0..edges {
        sc(Scenario { ranges: vec![(Val::Pages(0), Val::Edge(e))], ..base.clone() });
        sc(Scenario { ranges: vec![(Val::Edge(e), Val::Pages(1))], ..base.clone() });
    }
    for site in 1..=6u8 {
        for step in [0u8, 1, 2, 4] {
            sc(Scenario {
                fault: (site, step),
                importers: 0b111,
                ranges: vec![pages(0, 1), (Val::Pages(0x100), Val::Raw(8 * GIB))],
                ..base.clone()
            });
        }
    }
    for region in [1u8, 2, 3, 4, 5, 6, 255] {
        sc(Scenario { region, ..base.clone() });
    }
    sc(Scenario { importers: 0x7ff, ranges: vec![pages(0, 1), pages(4, 2), pages(1, 2)], ..base.clone() });
    sc(Scenario { flags: Field::raw(1), ..base.clone() });
    sc(Scenario { argsz: Field::raw(24), ..base.clone() });
    sc(Scenario { readable: Field::raw(20), ..base.clone() });
    sc(Scenario { nr_ranges: Field::raw(65_537), policy: 1, ..base.clone() });
    sc(Scenario { open_flags: Field::raw(u32::MAX), policy: 1, ..base.clone() });
    for s in 0..8u8 {
        sc(Scenario { bars: [(2, 8, s); 6], ranges: vec![(Val::Edge(0), Val::Raw(16 * GIB))], ..base.clone() });
    }
    let many: Vec<(Val, Val)> = (0..64).map(|i| pages(i * 3, 1 + i % 2)).collect();
    sc(Scenario { ranges: many, ..base.clone() });

    // lifecycle: op sequences (3 bytes each).
    let ops = |v: &[(u8, u8, u8)]| v.iter().flat_map(|&(a, b, c)| [a, b, c]).collect::<Vec<u8>>();
    let (exp, att, map, unmap, det, close, off, on, reset, cdev, odev, fault) =
        (0u8, 1u8, 2u8, 3u8, 4u8, 5u8, 6u8, 7u8, 8u8, 9u8, 10u8, 11u8);
    let seqs: Vec<Vec<(u8, u8, u8)>> = vec![
        vec![(exp, 0, 0), (att, 0, 0), (map, 0, 0), (off, 0, 0), (map, 0, 0), (on, 0, 0), (map, 0, 0)],
        vec![(exp, 1, 0), (att, 0, 1), (att, 0, 2), (map, 0, 0), (map, 1, 0), (reset, 0, 0), (map, 1, 0)],
        vec![
            (exp, 2, 0),
            (att, 0, 1),
            (map, 0, 0),
            (cdev, 0, 0),
            (odev, 0, 0),
            (on, 0, 0),
            (map, 0, 0),
            (close, 0, 0),
            (det, 0, 0),
        ],
        vec![(exp, 3, 0), (att, 0, 6), (map, 0, 0), (map, 0, 0), (off, 0, 0), (on, 0, 0)],
        vec![(exp, 4, 0), (att, 0, 7), (map, 0, 0), (close, 0, 0), (unmap, 0, 0), (det, 0, 0)],
        vec![(off, 0, 0), (exp, 0, 0), (att, 0, 1), (on, 0, 0), (att, 0, 1), (map, 0, 0)],
        vec![(exp, 5, 0), (exp, 0, 0), (att, 0, 3), (att, 1, 4), (att, 1, 5), (map, 0, 0)],
        vec![(exp, 1, 0), (att, 0, 9), (map, 0, 0), (map, 0, 0), (map, 0, 0), (map, 0, 0)],
    ];
    for (i, s) in seqs.iter().enumerate() {
        write(&dirs[2], &format!("seq-{i:02}"), &ops(s));
    }
    for site in 0..6u8 {
        for step in 0..4u8 {
            let s = [(fault, site, step), (exp, 1, 0), (att, 0, 1), (map, 0, 0), (att, 0, 2), (map, 1, 0)];
            write(&dirs[2], &format!("fault-{site}-{step}"), &ops(&s));
        }
    }
    // Every op kind once, so the mutator has them all.
    let all: Vec<(u8, u8, u8)> = (0..Op::KINDS).map(|k| (k, k, k)).collect();
    write(&dirs[2], "all-kinds", &ops(&all));
    let _ = (unmap, det);
}
