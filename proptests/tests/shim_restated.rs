//! The kmod-shim's own rules, restated from the kernel C it models, each
//! against a reference written here rather than against another part of the
//! model: the IOVA allocator and page table (`drivers/iommu/iova.c`,
//! `drivers/iommu/iommu.c`), the sg table's size
//! (`drivers/dma-buf/dma-buf-mapping.c`), the IOVA hand-back on a failed
//! link (`drivers/iommu/dma-iommu.c`), the `get_dmabuf_phys` gate
//! (`drivers/vfio/pci/vfio_pci_dmabuf.c`), the device's memory decode, the
//! checker's report of a translation changed behind the model's back, and
//! the model's memory accounting. Linux 7.2 throughout.

use std::collections::BTreeMap;

use kmod_shim::{
    check_invariants, AttachError, Bar, Config, Device, DmaBuf, DmaBufDma, DmaBufId, DmaOps, Errno, ExportError,
    Extent, FaultPlan, FaultSite, Fidelity, ImporterDesc, ImporterId, Iommu, IommuModel, IommuStats, IommufdError,
    MapError, MapPath, P2pMapType, PageSize, PhysVec, Policy, Reject, SgEntry, Shim, Violation,
};
use props::fixtures::{path_importers, APERTURE, GIB, PAGE_SIZES};
use props::well_formed;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use uapi::{DmaRange, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET};

/// Cases per property: `NR_RANGES_PROPTEST_CASES`, else `PROPTEST_CASES`,
/// else 16,384, divided by `div` (at least 256) for the properties whose
/// cases are sequences of operations.
fn config(div: u32) -> ProptestConfig {
    let cases: u32 = ["NR_RANGES_PROPTEST_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(16_384);
    ProptestConfig {
        cases: (cases / div).max(256),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/shim_restated.txt"
        )))),
        ..ProptestConfig::default()
    }
}

/// `MAX_SG_ENT_SZ` (drivers/dma-buf/dma-buf-mapping.c, 7.2): the largest
/// page-aligned `unsigned int`.
fn max_sg_ent_sz(page: u64) -> u64 {
    u64::from(u32::MAX) & !(page - 1)
}

/// One BAR of 16 GiB at 0x40_0000_0000, so that every range below is inside
/// it and every request is a dma-buf.
fn device(page: PageSize) -> Device {
    Device::new(page).with_bar(0, Bar::mmio(0x40_0000_0000, 16 * GIB))
}

fn page_size() -> impl Strategy<Value = PageSize> {
    prop::sample::select(PAGE_SIZES.to_vec())
}

/// 1 to `n` page-aligned ranges inside BAR0: mostly a few pages, sometimes
/// longer than one sg entry can hold.
fn ranges(n: usize) -> impl Strategy<Value = (PageSize, Vec<DmaRange>)> {
    (page_size(), prop::collection::vec((0u64..1 << 20, prop_oneof![8 => 1u64..16, 1 => 1u64..(1 << 21)]), 1..=n))
        .prop_map(|(p, v)| {
            let pg = p.bytes();
            let pages = 16 * GIB / pg;
            let ranges = v
                .into_iter()
                .map(|(o, l)| {
                    let o = o % pages;
                    DmaRange::new(o * pg, l.min(pages - o) * pg)
                })
                .collect();
            (p, ranges)
        })
}

fn shim(dev: Device, fidelity: Fidelity, importers: &[ImporterDesc]) -> Shim {
    let cfg = Config { fidelity, policy: Policy::Linux, bus_offset: 0, sg_max_entries: 1 << 20 };
    props::fixtures::shim_with(dev, cfg, importers)
}

fn export(s: &mut Shim, ranges: &[DmaRange]) -> DmaBufId {
    let req = well_formed(0, 2, ranges);
    s.export(&req.request()).expect("ranges inside an MMIO BAR are a dma-buf")
}

/// The request's physical address of byte `at` of the dma-buf: BAR0's start
/// plus the offset of the range holding it (`vfio_pci_core_fill_phys_vec()`,
/// drivers/vfio/pci/vfio_pci_dmabuf.c, 7.2).
fn phys_at(ranges: &[DmaRange], mut at: u64) -> u64 {
    for r in ranges {
        if at < r.length {
            return 0x40_0000_0000 + r.offset + at;
        }
        at -= r.length;
    }
    panic!("byte {at:#x} past the dma-buf");
}

/// The DMA address of byte `at` in an sg table's DMA list.
fn dma_at(pairs: &[(u64, u64)], mut at: u64) -> u64 {
    for &(a, l) in pairs {
        if at < l {
            return a + at;
        }
        at -= l;
    }
    panic!("byte {at:#x} past the sg table");
}

// ----- the IOVA allocator and the page table -------------------------------

/// One operation on an IOMMU domain; the numbers pick sizes and places
/// relative to the aperture and to what is allocated.
#[derive(Debug, Clone, Copy)]
enum IoOp {
    Alloc(u8, bool),
    FreeChunk(u8, u8, u8),
    FreeAnywhere(u8, u8),
    Map(u8, u8, u8, u16),
    Unmap(u8, u8),
}

fn io_op() -> impl Strategy<Value = IoOp> {
    prop_oneof![
        4 => (any::<u8>(), prop::bool::weighted(0.1)).prop_map(|(a, b)| IoOp::Alloc(a, b)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, c)| IoOp::FreeChunk(a, b, c)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| IoOp::FreeAnywhere(a, b)),
        3 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(a, b, c, d)| IoOp::Map(a, b, c, d)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| IoOp::Unmap(a, b)),
    ]
}

fn io_model() -> impl Strategy<Value = IommuModel> {
    prop_oneof![Just(IommuModel::IntelVtd), Just(IommuModel::ArmLpae)]
}

/// Pages of the test aperture: small, so that it fills and fragments.
const APERTURE_PAGES: u64 = 48;

/// The reference domain: which pages of the aperture are allocated, which
/// IOVA page translates to which physical page, and the operation totals.
#[derive(Default)]
struct RefDomain {
    allocated: Vec<bool>,
    table: BTreeMap<u64, u64>,
    stats: IommuStats,
    chunks: Vec<(u64, u64)>,
    cursor: u64,
}

impl RefDomain {
    /// Maximal runs of allocated pages: the spans the allocator reports.
    fn spans(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, &a) in self.allocated.iter().enumerate() {
            let i = i as u64;
            match out.last_mut() {
                Some(last) if a && last.1 == i => last.1 = i + 1,
                _ if a => out.push((i, i + 1)),
                _ => {}
            }
        }
        out
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// The claim: `props::claims::claim("prop_iova_allocator_and_page_table_keep_the_kernels_rules")`.
    #[test]
    fn prop_iova_allocator_and_page_table_keep_the_kernels_rules(
        page in page_size(),
        first in 1u64..1 << 20,
        ops in prop::collection::vec(io_op(), 1..40),
        models in (io_model(), io_model()),
        switch in 0usize..40,
    ) {
        let pg = page.bytes();
        let (start, end) = (first * pg, (first + APERTURE_PAGES) * pg);
        let mut io = Iommu::new(start, end, pg).with_model(models.0);
        prop_assert_eq!(io.model(), models.0);
        let mut r = RefDomain { allocated: vec![false; APERTURE_PAGES as usize], ..RefDomain::default() };
        let page_of = |iova: u64| (iova - start) / pg;
        let mut ever_mapped = false;
        prop_assert_eq!(io.aperture(), (start, end));
        for (k, op) in ops.into_iter().enumerate() {
            if k == switch {
                io.set_model(models.1);
                prop_assert_eq!(io.model(), models.1);
            }
            match op {
                IoOp::Alloc(n, unaligned) => {
                    let len = u64::from(n % 12) * pg + if unaligned { pg / 2 } else { 0 };
                    let got = io.alloc_iova(len);
                    // alloc_iova_fast() (drivers/iommu/iova.c, 7.2) hands out
                    // whole granules of free aperture space, and fails only
                    // when no hole is large enough.
                    if len == 0 || len % pg != 0 {
                        prop_assert_eq!(got, None);
                        continue;
                    }
                    // Which space: the model's simplification of iova.c
                    // (Iommu's doc), next fit from where the last allocation
                    // ended, else the lowest hole large enough.
                    let n = len / pg;
                    let free = |p: u64| p + n <= APERTURE_PAGES && (p..p + n).all(|q| !r.allocated[q as usize]);
                    let want = if free(r.cursor) { Some(r.cursor) } else { (0..APERTURE_PAGES).find(|&p| free(p)) };
                    prop_assert_eq!(got, want.map(|p| start + p * pg), "{} pages from page {}", n, r.cursor);
                    if let Some(p) = want {
                        for q in p..p + n {
                            r.allocated[q as usize] = true;
                        }
                        r.chunks.push((start + p * pg, len));
                        r.cursor = p + n;
                    }
                }
                IoOp::FreeChunk(i, from, take) => {
                    let Some(&(a, len)) = r.chunks.get(usize::from(i) % r.chunks.len().max(1)) else { continue };
                    let pages = len / pg;
                    let from = u64::from(from) % pages;
                    let n = u64::from(take) % (pages - from + 1);
                    let (iova, l) = (a + from * pg, n * pg);
                    // The DMA API unmaps before it frees (__iommu_dma_unmap(),
                    // drivers/iommu/dma-iommu.c, 7.2).
                    if (page_of(iova)..page_of(iova) + n).any(|p| r.table.contains_key(&p)) {
                        continue;
                    }
                    let want = n != 0 && (page_of(iova)..page_of(iova) + n).all(|p| r.allocated[p as usize]);
                    prop_assert_eq!(io.free_iova(iova, l), want, "free of {:#x}+{:#x}", iova, l);
                    if want {
                        for p in page_of(iova)..page_of(iova) + n {
                            r.allocated[p as usize] = false;
                        }
                    } else {
                        r.stats.bad_frees += 1;
                    }
                }
                IoOp::FreeAnywhere(p, n) => {
                    let (p, n) = (u64::from(p) % APERTURE_PAGES, u64::from(n % 8));
                    let iova = start + p * pg;
                    if (p..p + n).any(|q| r.table.contains_key(&q)) {
                        continue;
                    }
                    let want = n != 0 && p + n <= APERTURE_PAGES && (p..p + n).all(|q| r.allocated[q as usize]);
                    prop_assert_eq!(io.free_iova(iova, n * pg), want, "free of page {} +{}", p, n);
                    if want {
                        (p..p + n).for_each(|q| r.allocated[q as usize] = false);
                    } else {
                        r.stats.bad_frees += 1;
                    }
                }
                IoOp::Map(i, from, take, paddr) => {
                    // Only allocated space is mapped, as the DMA API does.
                    let spans = r.spans();
                    let Some(&(s, e)) = spans.get(usize::from(i) % spans.len().max(1)) else { continue };
                    let from = s + u64::from(from) % (e - s);
                    let n = u64::from(take) % (e - from + 1);
                    let (iova, len, paddr) = (start + from * pg, n * pg, (u64::from(paddr) + 1) * pg);
                    let got = io.map(iova, paddr, len);
                    // iommu_map() (drivers/iommu/iommu.c, 7.2): EINVAL for
                    // nothing to map; the driver's map_pages() refuses a
                    // present entry (EADDRINUSE on VT-d's generic page table).
                    if n == 0 {
                        prop_assert_eq!(got, Err(Errno::EINVAL));
                    } else if (from..from + n).any(|p| r.table.contains_key(&p)) {
                        // VT-d's generic page table says EADDRINUSE,
                        // io-pgtable-arm's arm_lpae_init_pte() EEXIST.
                        let errno = match io.model() {
                            IommuModel::IntelVtd => Errno::EADDRINUSE,
                            IommuModel::ArmLpae => Errno::EEXIST,
                        };
                        prop_assert_eq!(got, Err(errno));
                        r.stats.collisions += 1;
                    } else {
                        prop_assert_eq!(got, Ok(()));
                        for k in 0..n {
                            r.table.insert(from + k, paddr + k * pg);
                        }
                        r.stats.maps += 1;
                        ever_mapped = true;
                    }
                }
                IoOp::Unmap(p, n) => {
                    let (p, n) = (u64::from(p) % APERTURE_PAGES, u64::from(n % 10));
                    // iommu_unmap() (drivers/iommu/iommu.c, 7.2): the bytes
                    // that were translated in the range.
                    let want: u64 = (p..p + n).filter(|q| r.table.remove(q).is_some()).count() as u64 * pg;
                    prop_assert_eq!(io.unmap(start + p * pg, n * pg), want);
                    if n == 0 {
                        r.stats.spurious_unmaps += 1;
                    } else {
                        r.stats.unmaps += 1;
                    }
                }
            }
            prop_assert_eq!(io.stats(), r.stats);
            let spans: Vec<(u64, u64)> = r.spans().iter().map(|&(s, e)| (start + s * pg, start + e * pg)).collect();
            prop_assert_eq!(&io.snapshot().allocated, &spans);
            prop_assert_eq!(io.allocated_bytes(), r.allocated.iter().filter(|a| **a).count() as u64 * pg);
            prop_assert_eq!(io.mapped_bytes(), r.table.len() as u64 * pg);
            // The extents, in IOVA order, cover exactly the table.
            let mut covered = 0;
            let mut prev_end = start;
            for x in io.extents() {
                prop_assert!(x.iova >= prev_end && x.len > 0, "extent {x:x?} out of order");
                for k in 0..x.len / pg {
                    prop_assert_eq!(r.table.get(&(page_of(x.iova) + k)), Some(&(x.paddr + k * pg)));
                }
                covered += x.len;
                prev_end = x.iova + x.len;
            }
            prop_assert_eq!(covered, r.table.len() as u64 * pg);
            prop_assert_eq!(io.is_idle(), spans.is_empty() && r.table.is_empty());
            prop_assert_eq!(io.check(), Ok(()));
            for q in 0..APERTURE_PAGES {
                // A page's first, middle or last byte.
                let off = [0, pg / 2, pg - 1][(q % 3) as usize];
                let iova = start + q * pg + off;
                match (io.translate(iova), r.table.get(&q)) {
                    (None, None) => {}
                    (Some((phys, run)), Some(&want)) => {
                        prop_assert_eq!(phys, want + off);
                        // The run ends on a page boundary and stays
                        // physically contiguous in the table up to there.
                        prop_assert!(run > 0 && (iova + run) % pg == 0, "run {run:#x} from {iova:#x}");
                        for k in 0..(off + run) / pg {
                            prop_assert_eq!(r.table.get(&(q + k)), Some(&(want + k * pg)));
                        }
                    }
                    (got, want) => prop_assert!(false, "page {q}: translates to {got:x?}, the table says {want:x?}"),
                }
            }
            // Two u64 per allocator entry, B-tree leaves half full, and the
            // page table's array: the model's own estimate, exact while the
            // table was never grown.
            let extents = io.extents().count();
            let tree = spans.len() * 2 * 2 * size_of::<u64>();
            if ever_mapped {
                prop_assert!(io.model_bytes() >= tree + extents * size_of::<Extent>());
            } else {
                prop_assert_eq!(io.model_bytes(), tree);
            }
        }
        // What the API lets a caller break, check() catches: a span cut at
        // half a page (start or end), translations of unallocated space.
        let spans = io.snapshot().allocated;
        if let Some(&(s0, e0)) = spans.first() {
            for (iova, what) in [(s0, "start"), (e0 - pg / 2, "end")] {
                let mut bad = io.clone();
                prop_assert!(bad.free_iova(iova, pg / 2));
                prop_assert!(bad.check().is_err(), "a span with an unaligned {} passes", what);
            }
        }
        if let Some(q) = (0..APERTURE_PAGES).find(|&q| !r.allocated[q as usize]) {
            let mut bad = io.clone();
            prop_assert_eq!(bad.map(start + q * pg, 0, pg), Ok(()));
            prop_assert!(bad.check().is_err(), "a translation of unallocated page {} passes", q);
        }
    }
}

// ----- dma_buf_phys_vec_to_sgt() -------------------------------------------

proptest! {
    #![proptest_config(config(4))]

    /// The claim: `props::claims::claim("prop_sg_table_has_calc_sg_nents_entries_and_no_cpu_list")`.
    #[test]
    fn prop_sg_table_has_calc_sg_nents_entries_and_no_cpu_list((page, ranges) in ranges(6)) {
        let imps = path_importers();
        let mut s = shim(device(page), Fidelity::Fixed, &imps);
        let buf = export(&mut s, &ranges);
        let max = max_sg_ent_sz(page.bytes());
        let size: u64 = ranges.iter().map(|r| r.length).sum();
        for i in 0..imps.len() {
            let att = s.attach(buf, ImporterId(i)).expect("a P2P, revocable importer attaches");
            let m = s.map(att).expect("maps");
            let sgt = s.sg_table(m).expect("live");
            // calc_sg_nents() (drivers/dma-buf/dma-buf-mapping.c, 7.2): one
            // IOVA span is split in MAX_SG_ENT_SZ pieces as a whole; else
            // each range is split on its own.
            let want = if s.mapping(m).expect("live").path() == MapPath::IovaSpan {
                size.div_ceil(max)
            } else {
                ranges.iter().map(|r| r.length.div_ceil(max)).sum()
            };
            prop_assert_eq!(sgt.nents() as u64, want);
            prop_assert_eq!(sgt.entries.len() as u64, want);
            prop_assert_eq!(sgt.orig_nents(), 0);
        }
        // A peer behind the same switch takes bus addresses whatever its own
        // DMA ops (dma_buf_phys_vec_to_sgt()'s PCI_P2PDMA_MAP_BUS_ADDR case):
        // its IOMMU domain, if it has one, is left untouched.
        let switch_peer =
            ImporterDesc { map_type: P2pMapType::BusAddr, ..ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1) };
        let id = s.add_importer(switch_peer);
        let att = s.attach(buf, id).expect("attaches");
        let m = s.map(att).expect("maps");
        prop_assert_eq!(s.mapping(m).expect("live").path(), MapPath::BusAddr);
        prop_assert!(s.importer(id).and_then(|i| i.iommu.as_ref()).expect("iommu").is_idle());
        prop_assert_eq!(check_invariants(&s), Ok(()));
    }

    /// The claim: `props::claims::claim("prop_sg_table_cap_admits_exactly_its_size")`.
    #[test]
    fn prop_sg_table_cap_admits_exactly_its_size((page, ranges) in ranges(6)) {
        // Config::sg_max_entries stands for the memory sg_alloc_table()
        // needs: a table of that many entries is granted, one more is
        // ENOMEM (dma_buf_phys_vec_to_sgt()'s err_free_state path).
        let max = max_sg_ent_sz(page.bytes());
        let nents = ranges.iter().map(|r| r.length.div_ceil(max)).sum::<u64>() as u32;
        for (cap, fits) in [(nents, true), (nents - 1, false)] {
            let cfg = Config { fidelity: Fidelity::Fixed, policy: Policy::Linux, bus_offset: 0, sg_max_entries: cap };
            let mut s = props::fixtures::shim_with(device(page), cfg, &[ImporterDesc::bus_peer()]);
            let buf = export(&mut s, &ranges);
            let att = s.attach(buf, ImporterId(0)).expect("attaches");
            let got = s.map(att);
            if fits {
                prop_assert_eq!(got.map(|m| s.sg_table(m).expect("live").nents() as u32), Ok(nents));
            } else {
                prop_assert_eq!(got.map(|_| ()), Err(MapError::NoMem));
            }
        }
    }

    /// The claim: `props::claims::claim("prop_calc_sg_nents_counts_max_sg_ent_sz_pieces_or_0_past_32_bits")`.
    #[test]
    fn prop_calc_sg_nents_counts_max_sg_ent_sz_pieces_or_0_past_32_bits(
        page in page_size(),
        lens in prop::collection::vec(prop_oneof![1u64..1 << 20, 1u64..1 << 44, (1u64 << 62) - 16..1 << 62], 1..6),
    ) {
        let pg = page.bytes();
        prop_assert_eq!(kmod_shim::max_sg_ent_sz(pg), max_sg_ent_sz(pg));
        // Page counts, but at most 2^62 bytes each: three of the longest
        // overflow a 32-bit count of entries.
        let phys: Vec<PhysVec> =
            lens.iter().map(|&l| PhysVec { paddr: 0, len: l.saturating_mul(pg).min(1 << 62) }).collect();
        let size = phys.iter().try_fold(0u64, |a, p| a.checked_add(p.len)).filter(|s| *s < 1 << 63);
        let max = max_sg_ent_sz(pg);
        // calc_sg_nents() (drivers/dma-buf/dma-buf-mapping.c, 7.2): the
        // span's size in MAX_SG_ENT_SZ pieces, else each range's, summed in
        // an unsigned int; a sum past 32 bits is 0, which sg_alloc_table()
        // then refuses with EINVAL.
        if let Some(size) = size {
            prop_assert_eq!(u64::from(kmod_shim::calc_sg_nents(true, &phys, size, pg)), size.div_ceil(max));
        }
        let per_range: u64 = phys.iter().map(|p| p.len.div_ceil(max)).sum();
        let want = if per_range > u64::from(u32::MAX) { 0 } else { per_range };
        prop_assert_eq!(u64::from(kmod_shim::calc_sg_nents(false, &phys, size.unwrap_or(0), pg)), want);
    }

    /// The claim: `props::claims::claim("prop_model_bytes_count_every_live_vector_and_table")`.
    #[test]
    fn prop_model_bytes_count_every_live_vector_and_table((page, ranges) in ranges(6), maps in 0usize..4) {
        let imps = path_importers();
        let mut s = shim(device(page), Fidelity::Fixed, &imps);
        prop_assert_eq!(s.model_bytes(), 0);
        let buf = export(&mut s, &ranges);
        let one_buf = size_of::<DmaBuf>() + ranges.len() * size_of::<PhysVec>();
        prop_assert_eq!(s.model_bytes(), one_buf);
        let mut tables = 0;
        for i in 0..maps {
            let att = s.attach(buf, ImporterId(i)).expect("attaches");
            let m = s.map(att).expect("maps");
            tables += size_of::<DmaBufDma>() + s.sg_table(m).expect("live").nents() * size_of::<SgEntry>();
        }
        let iommus: usize = s.importers().filter_map(|(_, i)| i.iommu.as_ref()).map(Iommu::model_bytes).sum();
        prop_assert_eq!(s.model_bytes(), one_buf + tables + iommus);
    }

    /// The claim: `props::claims::claim("prop_failed_link_after_the_first_range_frees_a_short_iova_span")`.
    #[test]
    fn prop_failed_link_after_the_first_range_frees_a_short_iova_span(
        (page, ranges) in ranges(6),
        step in 0u64..8,
        kernel in any::<bool>(),
        model in io_model(),
    ) {
        let fidelity = if kernel { Fidelity::Kernel } else { Fidelity::Fixed };
        let mut s = shim(device(page), fidelity, &[ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1)]);
        // The driver model reaches the domains made before and after.
        s.set_iommu_model(model);
        prop_assert_eq!(s.iommu_model(), model);
        let ioas = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.1);
        prop_assert_eq!(s.ioas(ioas).expect("IOAS").domain.model(), model);
        let collision = match model {
            IommuModel::IntelVtd => Errno::EADDRINUSE,
            IommuModel::ArmLpae => Errno::EEXIST,
        };
        let buf = export(&mut s, &ranges);
        let att = s.attach(buf, ImporterId(0)).expect("attaches");
        let n = ranges.len() as u64;
        s.arm_fault(Some(FaultPlan::new(FaultSite::IovaLink, step)));
        let got = s.map(att);
        // dma_iova_destroy() (drivers/iommu/dma-iommu.c, 7.2) gives back
        // iova_align(mapped_len): fewer bytes than the span exactly when a
        // link failed after the first range. At the first one nothing was
        // linked: Fixed frees the whole span (kernel-patches/0002), the
        // kernel skips dma_iova_destroy() (`if (!i || ...)`) and leaks it.
        // The kernel also links every range at offset 0 of the span
        // (dma_buf_phys_vec_to_sgt(), drivers/dma-buf/dma-buf-mapping.c,
        // 7.2), so its second range collides with the first unless the
        // fault came first.
        let enomem = Errno::ENOMEM;
        let (fails_at, errno) = if kernel && n >= 2 && step >= 1 {
            (Some(1), if step == 1 { enomem } else { collision })
        } else {
            ((step < n).then_some(step), enomem)
        };
        match fails_at {
            Some(i) => {
                prop_assert_eq!(got.map(|_| ()), Err(MapError::IovaLink { index: i as usize, errno }));
                prop_assert_eq!(s.events().short_iova_frees, u64::from(i > 0));
                let idle = s.importer(ImporterId(0)).and_then(|x| x.iommu.as_ref()).expect("iommu").is_idle();
                prop_assert_eq!(idle, !(kernel && i == 0));
            }
            None => {
                prop_assert!(got.is_ok());
                prop_assert_eq!(s.events().short_iova_frees, 0);
            }
        }
        // dma_iova_sync() failing after every range was linked: the whole
        // span was linked, so its destroy is not short, and nothing is left.
        let mut s = shim(device(page), fidelity, &[]);
        s.set_iommu_model(model);
        s.add_importer(ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1));
        let buf = export(&mut s, &ranges);
        let att = s.attach(buf, ImporterId(0)).expect("attaches");
        s.arm_fault(Some(FaultPlan::new(FaultSite::IovaSync, 0)));
        let got = s.map(att).map(|_| ());
        if kernel && n >= 2 {
            prop_assert_eq!(got, Err(MapError::IovaLink { index: 1, errno: collision }));
        } else {
            prop_assert_eq!(got, Err(MapError::IovaSync));
            prop_assert_eq!(s.events().short_iova_frees, 0);
            prop_assert!(s.importer(ImporterId(0)).and_then(|x| x.iommu.as_ref()).expect("iommu").is_idle());
        }
    }
}

proptest! {
    #![proptest_config(config(4))]

    /// The claim: `props::claims::claim("prop_kernel_unwind_unmaps_every_entry_and_unmap_leaks_the_table")`.
    #[test]
    fn prop_kernel_unwind_unmaps_every_entry_and_unmap_leaks_the_table(
        (page, ranges) in ranges(6),
        step in 0u64..8,
        kernel in any::<bool>(),
        direct in any::<bool>(),
    ) {
        let fidelity = if kernel { Fidelity::Kernel } else { Fidelity::Fixed };
        let imp = if direct {
            ImporterDesc { map_type: P2pMapType::ThruHostBridge, dma: DmaOps::Direct, ..ImporterDesc::bus_peer() }
        } else {
            ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1).without_iova_api()
        };
        let mut s = shim(device(page), fidelity, &[imp]);
        let buf = export(&mut s, &ranges);
        let att = s.attach(buf, ImporterId(0)).expect("attaches");
        s.arm_fault(Some(FaultPlan::new(FaultSite::MapPhys, step)));
        let got = s.map(att);
        let max = max_sg_ent_sz(page.bytes());
        let entries = |rs: &[DmaRange]| rs.iter().map(|r| r.length.div_ceil(max)).sum::<u64>();
        let n = ranges.len();
        let idle = |s: &Shim| s.importer(ImporterId(0)).expect("importer").iommu.as_ref().is_none_or(Iommu::is_idle);
        if (step as usize) < n {
            prop_assert_eq!(got.map(|_| ()), Err(MapError::MapPhys { index: step as usize }));
            // err_unmap_dma (drivers/dma-buf/dma-buf-mapping.c, 7.2): with
            // `i` ranges mapped, for_each_sgtable_dma_sg() walks all nents
            // entries, so each never filled one is a zero-length
            // dma_unmap_phys() (defect 4); `!i` skips the walk.
            // kernel-patches/0004 stops at the first entry never filled.
            let spurious = if kernel && step > 0 { entries(&ranges) - entries(&ranges[..step as usize]) } else { 0 };
            prop_assert_eq!(s.events().spurious_unmaps, spurious);
            prop_assert!(idle(&s), "the unwind left IOVA space or translations");
        } else {
            let m = got.expect("maps unfaulted");
            s.unmap(m);
            // dma_buf_phys_vec_to_sgt() cleared orig_nents, so the kernel's
            // sg_free_table() in dma_buf_free_sgt() frees no entry: one
            // leaked array per unmapped mapping (defect 6).
            prop_assert_eq!(s.events().sg_table_leaks, u64::from(kernel));
            prop_assert_eq!(s.events().spurious_unmaps, 0);
            prop_assert!(idle(&s), "the unmap left IOVA space or translations");
        }
    }
}

// ----- vfio_pci_core_feature_dma_buf() without get_dmabuf_phys --------------

proptest! {
    #![proptest_config(config(2))]

    /// The claim: `props::claims::claim("prop_without_get_dmabuf_phys_every_dma_buf_feature_call_is_eopnotsupp")`.
    #[test]
    fn prop_without_get_dmabuf_phys_every_dma_buf_feature_call_is_eopnotsupp(
        index in prop_oneof![4 => Just(11u32), 1 => 0u32..0x1_0000, 1 => Just(0xfff4u32)],
        bits in prop::sample::subsequence(
            vec![VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_SET, VFIO_DEVICE_FEATURE_PROBE, 1 << 19, 1 << 31],
            0..=5,
        ),
        argsz in prop_oneof![8 => Just(None), 1 => (0u32..32).prop_map(Some)],
        has in any::<bool>(),
    ) {
        let flags = bits.iter().fold(index, |f, b| f | b);
        let mut req = well_formed(0, 2, &[DmaRange::new(0, 0x1_0000)]);
        req.feature.flags = flags;
        if let Some(a) = argsz {
            req.feature.argsz = a;
        }
        let mut s = shim(device(PageSize::K4), Fidelity::Fixed, &[]);
        s.set_get_dmabuf_phys(has);
        let got = s.export(&req.request());
        // vfio_ioctl_device_feature() (drivers/vfio/vfio_main.c, 7.2)
        // refuses a short argsz, unknown flag bits and GET with SET but no
        // PROBE for every feature; then DMA_BUF's handler,
        // vfio_pci_core_feature_dma_buf(), first needs get_dmabuf_phys.
        let known = 0xffff | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PROBE;
        let get_and_set = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET;
        let core_refuses = req.feature.argsz < 8
            || flags & !known != 0
            || (flags & VFIO_DEVICE_FEATURE_PROBE == 0 && flags & get_and_set == get_and_set);
        let is_dma_buf = flags & 0xffff == 11;
        prop_assert_eq!(
            matches!(got, Err(ExportError::NoDmaBufPhys)),
            !has && is_dma_buf && !core_refuses,
            "flags {:#x} argsz {}: {:?}", flags, req.feature.argsz, got
        );
    }
}

proptest! {
    #![proptest_config(config(16))]

    /// The claim: `props::claims::claim("prop_reset_without_a_reset_method_is_einval_and_touches_nothing")`.
    #[test]
    fn prop_reset_without_a_reset_method_is_einval_and_touches_nothing((page, ranges) in ranges(3)) {
        let mut s = shim(device(page), Fidelity::Fixed, &[ImporterDesc::bus_peer()]);
        let buf = export(&mut s, &ranges);
        let att = s.attach(buf, ImporterId(0)).expect("attaches");
        let m = s.map(att).expect("maps");
        // vfio_pci_ioctl_reset() (drivers/vfio/pci/vfio_pci_core.c, 7.2):
        // `if (!vdev->reset_works) return -EINVAL;` before any dma-buf is
        // revoked.
        s.set_reset_supported(false);
        let before = s.snapshot();
        prop_assert_eq!(s.try_reset(), Err(Errno::EINVAL));
        prop_assert_eq!(s.snapshot(), before);
        prop_assert!(s.mapping(m).is_some());
        s.set_reset_supported(true);
        prop_assert_eq!(s.try_reset(), Ok(()));
        prop_assert!(s.mapping(m).is_none(), "the reset revoked the dma-buf and its mapping");
    }
}

// ----- where a peer's DMA lands ---------------------------------------------

proptest! {
    #![proptest_config(config(4))]

    /// The claim: `props::claims::claim("prop_peer_reaches_the_bar_only_while_memory_decodes")`.
    #[test]
    fn prop_peer_reaches_the_bar_only_while_memory_decodes((page, ranges) in ranges(4)) {
        let imps = path_importers();
        let mut s = shim(device(page), Fidelity::Fixed, &imps);
        let buf = export(&mut s, &ranges);
        let size: u64 = ranges.iter().map(|r| r.length).sum();
        let pg = page.bytes();
        let mut sgs = Vec::new();
        for i in 0..imps.len() {
            let att = s.attach(buf, ImporterId(i)).expect("attaches");
            let m = s.map(att).expect("maps");
            sgs.push((s.mapping(m).expect("live").path(), s.sg_table(m).expect("live").pairs()));
        }
        let probes: Vec<u64> = (0..size / pg).step_by(((size / pg) / 7).max(1) as usize).map(|p| p * pg).collect();
        for (i, (_, pairs)) in sgs.iter().enumerate() {
            for &at in &probes {
                let got = s.peer_reach(ImporterId(i), dma_at(pairs, at)).map(|r| r.0);
                prop_assert_eq!(got, Some(phys_at(&ranges, at)), "importer {} byte {:#x}", i, at);
            }
        }
        // The BAR decodes [start, start + len): its last byte, not the one after.
        let bar_end = 0x40_0000_0000 + 16 * GIB;
        for i in [0, 3] {
            prop_assert_eq!(s.peer_reach(ImporterId(i), bar_end - 1), Some((bar_end - 1, 1)));
            prop_assert_eq!(s.peer_reach(ImporterId(i), bar_end), None);
        }
        // PCI_COMMAND_MEMORY clear: the BAR decodes nothing, whatever the
        // translation (vfio_pci_dma_buf_move() revokes first,
        // drivers/vfio/pci/vfio_pci_dmabuf.c, 7.2).
        s.set_memory_enabled(false);
        // dma_buf_invalidate_mappings() calls each attachment's
        // invalidate_mappings once per change of `revoked` (dma-buf.c, 7.2).
        prop_assert_eq!(s.events().invalidations, imps.len() as u64);
        for (i, (_, pairs)) in sgs.iter().enumerate() {
            for &at in &probes {
                prop_assert_eq!(s.peer_reach(ImporterId(i), dma_at(pairs, at)), None);
            }
        }
        // Decoding back: a bus address or a dma-direct address lands in the
        // BAR again (nothing tore it down); an IOMMU's unmapped IOVA does not.
        s.set_memory_enabled(true);
        prop_assert_eq!(s.events().invalidations, 2 * imps.len() as u64);
        for (i, (path, pairs)) in sgs.iter().enumerate() {
            let through_iommu =
                s.importer(ImporterId(i)).expect("importer").iommu.is_some() && *path != MapPath::BusAddr;
            for &at in &probes {
                let got = s.peer_reach(ImporterId(i), dma_at(pairs, at)).map(|r| r.0);
                let want = (!through_iommu).then(|| phys_at(&ranges, at));
                prop_assert_eq!(got, want, "importer {} byte {:#x} after restore", i, at);
            }
        }
    }
}

// ----- the checker, against translations changed behind the model's back ---

proptest! {
    #![proptest_config(config(4))]

    /// The claim: `props::claims::claim("prop_checker_reports_the_first_byte_a_changed_translation_misses")`.
    #[test]
    fn prop_checker_reports_the_first_byte_a_changed_translation_misses(
        (page, ranges) in ranges(5),
        iova_api in any::<bool>(),
        pick in any::<u64>(),
        how in 0u8..3,
    ) {
        let mut desc = ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1);
        if !iova_api {
            desc = desc.without_iova_api();
        }
        let mut s = shim(device(page), Fidelity::Fixed, &[desc]);
        let buf = export(&mut s, &ranges);
        let att = s.attach(buf, ImporterId(0)).expect("attaches");
        let m = s.map(att).expect("maps");
        prop_assert_eq!(check_invariants(&s), Ok(()));
        let pg = page.bytes();
        let size: u64 = ranges.iter().map(|r| r.length).sum();
        let at = pick % (size / pg) * pg;
        let addr = dma_at(&s.sg_table(m).expect("live").pairs(), at);
        let want = phys_at(&ranges, at);
        let iommu = s.importer_mut(ImporterId(0)).and_then(|i| i.iommu.as_mut()).expect("iommu");
        let expected = match how {
            // A page unmapped: the walk meets nothing at its first byte.
            0 => {
                prop_assert_eq!(iommu.unmap(addr, pg), pg);
                Violation::Walk { mapping: m, at, want, got: None }
            }
            // A page remapped elsewhere: the walk meets the wrong address.
            1 => {
                iommu.unmap(addr, pg);
                iommu.map(addr, want ^ (1 << 40), pg).expect("the page is free again");
                Violation::Walk { mapping: m, at, want, got: Some(want ^ (1 << 40)) }
            }
            // IOVA space no mapping accounts for: a leak.
            _ => {
                iommu.alloc_iova(pg).expect("room in the aperture");
                let importer = ImporterId(0);
                Violation::IommuAccounting { importer, mapped: size, allocated: size + pg, expected: size }
            }
        };
        let msg = expected.to_string();
        prop_assert_eq!(check_invariants(&s), Err(expected));
        // The message names the byte where the walk went wrong, or the
        // sizes that disagree.
        let says = if how < 2 { format!("at byte {at:#x}") } else { format!("allocates {:#x}", size + pg) };
        prop_assert!(msg.contains(&says), "{msg:?}");
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// The claim: `props::claims::claim("prop_checker_reports_dma_addresses_off_the_page_grid")`.
    #[test]
    fn prop_checker_reports_dma_addresses_off_the_page_grid(
        (page, ranges) in ranges(3),
        off in 1u64..1 << 16,
    ) {
        // pci_bus_address() - pci_resource_start() off the page grid (no
        // real host bridge does that): every bus address is, and the checker
        // must say so for the first entry, whose length is a page multiple.
        let pg = page.bytes();
        let bus_offset = off % pg;
        prop_assume!(bus_offset != 0);
        let cfg = Config { fidelity: Fidelity::Fixed, policy: Policy::Linux, bus_offset, sg_max_entries: 1 << 20 };
        let mut s = props::fixtures::shim_with(device(page), cfg, &[ImporterDesc::bus_peer()]);
        let buf = export(&mut s, &ranges);
        let att = s.attach(buf, ImporterId(0)).expect("attaches");
        let m = s.map(att).expect("maps");
        prop_assert_eq!(
            check_invariants(&s),
            Err(Violation::SgEntry { mapping: m, index: 0, what: "not page-aligned" })
        );
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// The claim: `props::claims::claim("prop_checker_reports_a_translation_running_on_past_its_range")`.
    #[test]
    fn prop_checker_reports_a_translation_running_on_past_its_range(
        page in page_size(),
        (o0, l0, gap, l1) in (0u64..1024, 2u64..16, 1u64..1024, 2u64..16),
    ) {
        // Two ranges apart in the BAR, linked into one IOVA span; then the
        // span is remapped as a page of the first range and, after it, one
        // extent that runs on through the first range's memory where the
        // second range's belongs.
        let pg = page.bytes();
        let ranges = [DmaRange::new(o0 * pg, l0 * pg), DmaRange::new((o0 + l0 + gap) * pg, l1 * pg)];
        let mut s = shim(device(page), Fidelity::Fixed, &[ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1)]);
        let buf = export(&mut s, &ranges);
        let att = s.attach(buf, ImporterId(0)).expect("attaches");
        let m = s.map(att).expect("maps");
        prop_assert_eq!(s.mapping(m).expect("live").path(), MapPath::IovaSpan);
        let span = s.sg_table(m).expect("live").pairs()[0].0;
        let (p0, len0, size) = (phys_at(&ranges, 0), l0 * pg, (l0 + l1) * pg);
        let iommu = s.importer_mut(ImporterId(0)).and_then(|i| i.iommu.as_mut()).expect("iommu");
        prop_assert_eq!(iommu.unmap(span, size), size);
        iommu.map(span, p0, pg).expect("free");
        iommu.map(span + pg, p0 + pg, size - pg).expect("free");
        prop_assert_eq!(
            check_invariants(&s),
            Err(Violation::Walk { mapping: m, at: len0, want: phys_at(&ranges, len0), got: Some(p0 + len0) })
        );
    }
}

// ----- what the errors say --------------------------------------------------

proptest! {
    #![proptest_config(config(64))]

    /// The claim: `props::claims::claim("prop_every_error_message_names_its_errno")`.
    #[test]
    fn prop_every_error_message_names_its_errno(
        errno in prop::sample::select(
            vec![Errno::EINVAL, Errno::ENOMEM, Errno::EADDRINUSE, Errno::EEXIST, Errno::ENODEV],
        ),
        index in 0usize..1 << 18,
    ) {
        // What the ioctl, map_dma_buf or IOMMU_IOAS_MAP_FILE return is what
        // a user reads first; every message carries it, in parentheses.
        let attach = [
            AttachError::NoSuchDmaBuf,
            AttachError::NoSuchImporter,
            AttachError::NoMem,
            AttachError::NoPeer2Peer,
            AttachError::Revoked,
            AttachError::NotRevocable,
        ];
        let mut errors: Vec<(String, Errno)> = Vec::new();
        errors.extend(attach.iter().map(|e| (e.to_string(), e.errno())));
        errors.extend(
            [
                ExportError::Rejected(Reject::BarNotMmio),
                ExportError::NotAnExport,
                ExportError::DeviceNotOpen,
                ExportError::NoDmaBufPhys,
                ExportError::RangeCopyNoMem,
                ExportError::PrivNoMem,
                ExportError::PhysVecNoMem,
                ExportError::DmaBufExportNoMem,
                ExportError::FdInstall,
            ]
            .iter()
            .map(|e| (e.to_string(), e.errno())),
        );
        errors.extend(
            [
                MapError::NoSuchAttachment,
                MapError::Revoked,
                MapError::NoMem,
                MapError::P2pNotSupported,
                MapError::SgNentsOverflow,
                MapError::IovaLink { index, errno },
                MapError::MapPhys { index },
                MapError::IovaSync,
            ]
            .iter()
            .map(|e| (e.to_string(), e.errno())),
        );
        let mut iommufd = vec![
            IommufdError::NoSuchIoas,
            IommufdError::NoSuchArea,
            IommufdError::ZeroLength,
            IommufdError::Overflow,
            IommufdError::BadFd,
            IommufdError::OutsideDmaBuf,
            IommufdError::NoMem,
            IommufdError::IommufdMap(errno),
            IommufdError::UnalignedStart,
            IommufdError::UnalignedLength,
            IommufdError::NoIova,
            IommufdError::DomainMap(errno),
        ];
        iommufd.extend(attach.iter().map(|&a| IommufdError::Attach(a)));
        errors.extend(iommufd.iter().map(|e| (e.to_string(), e.errno())));
        for (msg, errno) in errors {
            prop_assert!(msg.contains(&format!("({errno})")), "{msg:?} does not say {errno}");
        }
        // A range index, where there is one, is named too.
        let msg = MapError::MapPhys { index }.to_string();
        prop_assert!(msg.contains(&format!("range {index} ")), "{msg:?}");
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// The claim: `props::claims::claim("prop_checker_reports_an_ioas_domain_changed_behind_the_model")`.
    #[test]
    fn prop_checker_reports_an_ioas_domain_changed_behind_the_model(
        (page, ranges) in ranges(1),
        how in 0u8..3,
        skip in any::<u64>(),
    ) {
        let pg = page.bytes();
        let mut s = shim(device(page), Fidelity::Fixed, &[]);
        let ioas = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.1);
        let buf = export(&mut s, &ranges);
        // Any page-aligned part of the range, not only its start.
        let start = skip % (ranges[0].length / pg) * pg;
        let length = ranges[0].length - start;
        let area = s.iommufd_map_file(ioas, buf, start, length).expect("a one-range dma-buf maps");
        prop_assert_eq!(check_invariants(&s), Ok(()));
        let iova = s.iopt_pages(area).expect("live").iova;
        let paddr = phys_at(&ranges, start);
        let says = match how {
            // IOVA reserved that no area accounts for.
            0 => {
                s.ioas_mut(ioas).expect("IOAS").domain.alloc_iova(pg).expect("room in the aperture");
                format!("reserves {:#x}", length + pg)
            }
            // The area's first page no longer translated.
            1 => {
                s.ioas_mut(ioas).expect("IOAS").domain.unmap(iova, pg);
                format!("area {} does not translate to its range", area.0)
            }
            // Revoked (decoding off), yet still translated: the model's
            // iopt_revoke_dmabuf() unmapped it, the change maps it again.
            _ => {
                s.set_memory_enabled(false);
                prop_assert_eq!(check_invariants(&s), Ok(()));
                s.ioas_mut(ioas).expect("IOAS").domain.map(iova, paddr, pg).expect("unmapped at revoke");
                format!("revoked area {} still translated", area.0)
            }
        };
        match check_invariants(&s) {
            Err(Violation::Ioas { ioas: got, what }) => {
                prop_assert_eq!(got, ioas);
                prop_assert!(what.contains(&says), "{what:?}, not {says:?}");
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }
}

// ----- the allocation ledger ------------------------------------------------

/// The ledger's accessors read the counts the kernel's allocations leave,
/// restated from `vfio_pci_core_feature_dma_buf()` (drivers/vfio/pci/
/// vfio_pci_dmabuf.c, 7.2): `priv`, `priv->phys_vec` and the dma-buf file
/// once per exported dma-buf, the user's range copy freed before it returns.
/// The checker only compares two ledgers through the same accessors, so a
/// constant accessor would pass it; this counts against numbers written here.
#[test]
fn ledger_counts_each_export_once_per_kernel_allocation() {
    use kmod_shim::Alloc;
    let imps = path_importers();
    for n in 1..=3i64 {
        let mut s = shim(device(PageSize::K4), Fidelity::Fixed, &imps);
        for i in 0..n {
            export(&mut s, &[DmaRange::new(i as u64 * 0x1000, 0x1000)]);
        }
        let l = s.counters().ledger;
        for a in Alloc::ALL {
            let want = if matches!(a, Alloc::Priv | Alloc::PhysVec | Alloc::DmaBufFile) { n } else { 0 };
            assert_eq!(l.live(a), want, "{a} after {n} exports");
        }
        let entries: Vec<(Alloc, i64)> = l.entries().collect();
        assert_eq!(entries.len(), Alloc::ALL.len());
        assert!(entries.iter().all(|&(a, c)| c == l.live(a)));
        assert_eq!(l.total(), 3 * n, "after {n} exports");
    }
}

// ----- P2P providers ---------------------------------------------------------

/// `pcim_p2pdma_provider()` (drivers/pci/p2pdma.c, 7.2) gives a provider for
/// a BAR with `IORESOURCE_MEM` and a non-zero `pci_resource_len()` only. The
/// export path never asks for another (the validator refused it first), so
/// only a direct call can tell `&&` from `||`.
#[test]
fn a_p2p_provider_exists_for_a_present_memory_bar_only() {
    use kmod_shim::P2pProvider;
    let bars = [
        (Bar::mmio(0x40_0000_0000, 0x1000), true),
        (Bar::mmio(0x40_0000_0000, 0), false),
        (Bar::io(0x1000, 0x100), false),
        (Bar::io(0x1000, 0), false),
        (Bar::ABSENT, false),
        (Bar { kind: kmod_shim::BarKind::Absent, start: 0x40_0000_0000, len: 0x1000 }, false),
    ];
    for (i, (bar, provider)) in bars.into_iter().enumerate() {
        let got = P2pProvider::for_bar(2, &bar, 0x8000_0000);
        let want = provider.then_some(P2pProvider { bar: 2, bus_offset: 0x8000_0000 });
        assert_eq!(got, want, "bar {i}: {bar:?}");
    }
}

// ----- the defect list --------------------------------------------------------

/// `Fidelity::Kernel` reproduces the defects of the kernel the lab runs and
/// `KernelPre70Rc6` those fixed before it (v7.0-rc6), so whether a defect
/// is current follows from its mode. Each rendered list item (what `rfc` and
/// kernel-lab's report print) names the defect and what the lab saw, down to
/// the injection and the trace.
#[test]
fn a_defect_is_current_exactly_when_the_current_kernel_mode_reproduces_it_and_its_item_says_what_the_lab_saw() {
    use kmod_shim::{Defect, DefectStatus, Injection, LabTrace, DEFECTS};
    assert!(DEFECTS.iter().any(Defect::is_current) && !DEFECTS.iter().all(Defect::is_current));
    for d in DEFECTS {
        assert_eq!(d.is_current(), d.fidelity == Fidelity::Kernel, "defect {}", d.id);
        let item = d.to_string();
        assert!(item.starts_with(&format!("{}. **{}**", d.id, d.title)), "{item}");
        assert!(item.contains(d.c_function) && item.contains(d.c_file), "{item}");
        let mut seen: Vec<String> = Vec::new();
        match d.status {
            DefectStatus::Unconfirmed => seen.push("unconfirmed".into()),
            DefectStatus::FixedUpstream { version, commit, cve, .. } => {
                assert!(!d.is_current());
                seen.extend([format!("fixed upstream in {version}"), commit.into(), cve.into()]);
            }
            DefectStatus::Confirmed { kernels, injection, trace, patched, .. } => {
                seen.extend(kernels.iter().map(|k| k.to_string()));
                seen.push(patched.into());
                seen.push(match injection {
                    Injection::None => "no injection".into(),
                    Injection::KprobeOverride { functions } => functions.into(),
                    Injection::FailNth { function } => function.into(),
                });
                seen.push(match trace {
                    LabTrace::MapErrno(e) => format!("{e} ({})", -e.code()),
                    LabTrace::IovaDrift { pages, .. } => format!("{pages} pages"),
                    LabTrace::Kmemleak { from, .. } | LabTrace::DmaApiDebug { from, .. } => from.into(),
                });
            }
        }
        for s in seen {
            assert!(item.contains(&s), "defect {} does not say {s:?}: {item}", d.id);
        }
    }
}
