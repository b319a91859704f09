//! Model memory per range and a property test over operation sequences.

mod common;
use common::*;
use kmod_shim::*;
use proptest::prelude::*;

#[test]
fn model_memory_per_range_is_at_most_64_bytes_on_every_path() {
    let n = 4096u64;
    let ranges: Vec<(u64, u64)> = (0..n).map(|i| (i * 0x2000, 0x1000)).collect();
    let io = ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1);
    for desc in [ImporterDesc::bus_peer(), io, io.without_iova_api()] {
        let mut s = shim(Config::default());
        let empty = s.model_bytes();
        let imp = s.add_importer(desc);
        let buf = export(&mut s, 0, &ranges).unwrap();
        let att = s.attach(buf, imp).unwrap();
        s.map(att).unwrap();
        ok(&s);
        let per = (s.model_bytes() - empty) as u64 / n;
        assert!(per <= 64, "{desc:?}: {per} bytes per range");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Export(Vec<(u64, u64)>),
    Attach(usize, usize),
    Map(usize),
    Unmap(usize),
    Detach(usize),
    CloseFd(usize),
    Memory(bool),
    Reset,
    Close,
    Open,
    Fault(usize, u64),
    /// `IOMMU_IOAS_MAP_FILE` of the whole dma-buf.
    MapFile(usize),
    /// `IOMMU_IOAS_UNMAP` of an area.
    UnmapFile(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0u64..64, 1u64..4).prop_map(|(o, l)| (o * 0x1000 * 1024, l * 0x1000));
    prop_oneof![
        3 => prop::collection::vec(range, 1..5).prop_map(Op::Export),
        3 => (0usize..8, 0usize..4).prop_map(|(b, i)| Op::Attach(b, i)),
        4 => (0usize..8).prop_map(Op::Map),
        2 => (0usize..16).prop_map(Op::Unmap),
        1 => (0usize..8).prop_map(Op::Detach),
        1 => (0usize..8).prop_map(Op::CloseFd),
        2 => any::<bool>().prop_map(Op::Memory),
        1 => Just(Op::Reset),
        1 => Just(Op::Close),
        1 => Just(Op::Open),
        2 => (0usize..6, 0u64..6).prop_map(|(s, k)| Op::Fault(s, k)),
        2 => (0usize..8).prop_map(Op::MapFile),
        1 => (0usize..8).prop_map(Op::UnmapFile),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_sequence_keeps_the_invariants(ops in prop::collection::vec(op(), 1..40)) {
        let mut s = shim(Config::default());
        let io = ImporterDesc::iommu_peer(APERTURE.0, APERTURE.0 + (64 << 20));
        let imps = [
            s.add_importer(ImporterDesc::bus_peer()),
            s.add_importer(io),
            s.add_importer(io.without_iova_api()),
            s.add_importer(ImporterDesc { unmap_in_invalidate_mappings: false, ..io }),
        ];
        let ioas = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.0 + (64 << 20));
        let (mut bufs, mut atts, mut maps, mut areas) = (vec![], vec![], vec![], vec![]);
        for op in ops {
            let before = s.snapshot();
            match op {
                Op::Export(r) => match export(&mut s, 0, &r) {
                    Ok(b) => bufs.push(b),
                    Err(_) => prop_assert_eq!(s.snapshot(), before),
                },
                Op::Attach(b, i) => if let Some(&b) = bufs.get(b) {
                    match s.attach(b, imps[i]) {
                        Ok(a) => atts.push(a),
                        Err(_) => prop_assert_eq!(s.snapshot(), before),
                    }
                },
                Op::Map(a) => if let Some(&a) = atts.get(a) {
                    match s.map(a) {
                        Ok(m) => maps.push(m),
                        Err(_) => prop_assert_eq!(s.snapshot(), before),
                    }
                },
                Op::Unmap(m) => if let Some(&m) = maps.get(m) { s.unmap(m) },
                Op::Detach(a) => if let Some(&a) = atts.get(a) {
                    // Well-behaved importers unmap before they detach.
                    let live: Vec<_> = maps.iter().copied()
                        .filter(|&m| s.mapping(m).is_some_and(|x| x.attachment == a)).collect();
                    for m in live { s.unmap(m) }
                    let _ = s.detach(a);
                },
                Op::CloseFd(b) => if let Some(&b) = bufs.get(b) { let _ = s.close_fd(b); },
                Op::Memory(on) => s.set_memory_enabled(on),
                Op::Reset => s.reset(),
                Op::Close => s.close_device(),
                Op::Open => s.open_device(),
                Op::Fault(site, k) => s.arm_fault(Some(FaultPlan::new(FaultSite::ALL[site], k))),
                // Modulo, so that most draws name a dma-buf.
                Op::MapFile(b) => if let Some(&b) = bufs.get(b % bufs.len().max(1)) {
                    let size = s.dma_buf(b).map_or(0, |d| d.size);
                    match s.iommufd_map_file(ioas, b, 0, size) {
                        Ok(a) => areas.push(a),
                        Err(_) => prop_assert_eq!(s.snapshot(), before),
                    }
                },
                Op::UnmapFile(a) => if let Some(&a) = areas.get(a % areas.len().max(1)) { let _ = s.iommufd_unmap(a); },
            }
            if let Err(v) = check_invariants(&s) {
                return Err(TestCaseError::fail(format!("{v:?}")));
            }
        }
    }
}
