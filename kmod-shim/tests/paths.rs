//! The three P2P paths and the sg tables they produce.

mod common;
use common::*;
use kmod_shim::*;

fn map_one(cfg: Config, desc: ImporterDesc, ranges: &[(u64, u64)]) -> (Shim, ImporterId, Result<MappingId, MapError>) {
    let mut s = shim(cfg);
    let imp = s.add_importer(desc);
    let buf = export(&mut s, 0, ranges).expect("export");
    let att = s.attach(buf, imp).expect("attach");
    let m = s.map(att);
    (s, imp, m)
}

fn iommu() -> ImporterDesc {
    ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1)
}

const SCATTERED: [(u64, u64); 3] = [(0x10_0000, 0x1000), (0x2000, 0x3000), (0x8000_0000, 0x2000)];

#[test]
fn one_range_bus_addr() {
    let (s, _, m) = map_one(Config::default(), ImporterDesc::bus_peer(), &[(0x1000, 0x4000)]);
    let m = m.unwrap();
    assert_eq!(s.sg_table(m).unwrap().pairs(), vec![(BAR0 + 0x1000, 0x4000)]);
    assert_eq!(s.mapping(m).unwrap().path(), MapPath::BusAddr);
    assert_eq!(s.sg_table(m).unwrap().orig_nents(), 0);
    ok(&s);
}

#[test]
fn bus_addr_applies_the_bus_offset() {
    // Host bridge translating CPU 0x40_0000_0000 to bus 0x8000_0000.
    let off = 0x8000_0000u64.wrapping_sub(BAR0);
    let cfg = Config { bus_offset: off, ..Config::default() };
    let (s, imp, m) = map_one(cfg, ImporterDesc::bus_peer(), &SCATTERED);
    let m = m.unwrap();
    assert_eq!(
        s.sg_table(m).unwrap().pairs(),
        vec![(0x8010_0000, 0x1000), (0x8000_2000, 0x3000), (0x1_0000_0000, 0x2000)]
    );
    assert_eq!(s.peer_reach(imp, 0x8000_2000), Some((BAR0 + 0x2000, 16 * GIB - 0x2000)));
    ok(&s);
}

#[test]
fn three_scattered_ranges_iova_span() {
    let (s, imp, m) = map_one(Config::default(), iommu(), &SCATTERED);
    let m = m.unwrap();
    assert_eq!(s.mapping(m).unwrap().path(), MapPath::IovaSpan);
    assert_eq!(s.sg_table(m).unwrap().pairs(), vec![(APERTURE.0, 0x6000)]);
    let io = s.importer(imp).expect("importer").iommu.as_ref().unwrap();
    let ext: Vec<_> = io.extents().map(|e| (e.iova, e.len, e.paddr)).collect();
    assert_eq!(
        ext,
        vec![
            (APERTURE.0, 0x1000, BAR0 + 0x10_0000),
            (APERTURE.0 + 0x1000, 0x3000, BAR0 + 0x2000),
            (APERTURE.0 + 0x4000, 0x2000, BAR0 + 0x8000_0000),
        ]
    );
    assert_eq!(s.peer_reach(imp, APERTURE.0 + 0x1800), Some((BAR0 + 0x2800, 0x2800)));
    assert_eq!(s.peer_reach(imp, APERTURE.0 + 0x6000), None);
    ok(&s);
}

#[test]
fn three_scattered_ranges_per_range_when_iova_api_unavailable() {
    let (s, _, m) = map_one(Config::default(), iommu().without_iova_api(), &SCATTERED);
    let m = m.unwrap();
    assert_eq!(s.mapping(m).unwrap().path(), MapPath::PerRange);
    assert_eq!(
        s.sg_table(m).unwrap().pairs(),
        vec![(APERTURE.0, 0x1000), (APERTURE.0 + 0x1000, 0x3000), (APERTURE.0 + 0x4000, 0x2000)]
    );
    ok(&s);
}

#[test]
fn iova_allocation_failure_falls_back_to_per_range() {
    // An aperture of 0x4000 bytes cannot hold the 0x6000-byte span, but
    // holds... not all ranges either: the per-range map of the third fails.
    let small = ImporterDesc::iommu_peer(APERTURE.0, APERTURE.0 + 0x8000);
    let (s, imp, m) = map_one(Config::default(), small, &[(0, 0x4000), (0x10000, 0x4000), (0x20000, 0x4000)]);
    assert_eq!(m, Err(MapError::MapPhys { index: 2 }));
    assert!(s.importer(imp).expect("importer").iommu.as_ref().unwrap().is_idle());
    ok(&s);
    // With room for each range but an injected IOVA failure: per-range.
    let mut s = shim(Config::default());
    let imp = s.add_importer(iommu());
    let buf = export(&mut s, 0, &SCATTERED).unwrap();
    let att = s.attach(buf, imp).unwrap();
    s.arm_fault(Some(FaultPlan::new(FaultSite::IovaAlloc, 0)));
    let m = s.map(att).unwrap();
    assert_eq!(s.mapping(m).unwrap().path(), MapPath::PerRange);
    assert_eq!(s.sg_table(m).unwrap().nents(), 3);
    ok(&s);
}

#[test]
fn direct_dma_uses_physical_addresses() {
    let desc = ImporterDesc { dma: DmaOps::Direct, ..iommu() };
    let (s, _, m) = map_one(Config::default(), desc, &SCATTERED);
    let m = m.unwrap();
    assert_eq!(s.mapping(m).unwrap().path(), MapPath::PerRange);
    assert_eq!(
        s.sg_table(m).unwrap().pairs(),
        vec![(BAR0 + 0x10_0000, 0x1000), (BAR0 + 0x2000, 0x3000), (BAR0 + 0x8000_0000, 0x2000)]
    );
    ok(&s);
}

#[test]
fn eight_gib_range_splits_into_page_aligned_continuous_entries() {
    let want = vec![(BAR0, MAX_SEG), (BAR0 + MAX_SEG, MAX_SEG), (BAR0 + 2 * MAX_SEG, 0x2000)];
    let (s, _, m) = map_one(Config::default(), ImporterDesc::bus_peer(), &[(0, 8 * GIB)]);
    assert_eq!(s.sg_table(m.unwrap()).unwrap().pairs(), want);
    ok(&s);
    for desc in [iommu(), iommu().without_iova_api()] {
        let (s, imp, m) = map_one(Config::default(), desc, &[(0, 8 * GIB)]);
        let a = APERTURE.0;
        assert_eq!(
            s.sg_table(m.unwrap()).unwrap().pairs(),
            vec![(a, MAX_SEG), (a + MAX_SEG, MAX_SEG), (a + 2 * MAX_SEG, 0x2000)]
        );
        // One extent, not two million PTEs.
        assert_eq!(s.importer(imp).expect("importer").iommu.as_ref().unwrap().extents().count(), 1);
        ok(&s);
    }
}

#[test]
fn over_four_gib_through_the_iova_path() {
    let (s, _, m) = map_one(Config::default(), iommu(), &[(0, 3 * GIB), (8 * GIB, 2 * GIB)]);
    let m = m.unwrap();
    assert_eq!(s.mapping(m).unwrap().path(), MapPath::IovaSpan);
    let a = APERTURE.0;
    assert_eq!(s.sg_table(m).unwrap().pairs(), vec![(a, MAX_SEG), (a + MAX_SEG, 5 * GIB - MAX_SEG)]);
    ok(&s);
}

#[test]
fn kernel_links_every_range_at_offset_zero() {
    // Linux 7.2: range 1 is linked on top of range 0 and the map fails, with
    // VT-d's EADDRINUSE (the default IOMMU model; kernel-lab F1).
    let cfg = Config { fidelity: Fidelity::Kernel, ..Config::default() };
    let (s, imp, m) = map_one(cfg, iommu(), &[(0, 3 * GIB), (8 * GIB, 2 * GIB)]);
    assert_eq!(m, Err(MapError::IovaLink { index: 1, errno: Errno::EADDRINUSE }));
    assert_eq!(m.unwrap_err().errno(), Errno::EADDRINUSE);
    assert_eq!(s.importer(imp).expect("importer").iommu.as_ref().unwrap().stats().collisions, 1);
    assert!(s.importer(imp).expect("importer").iommu.as_ref().unwrap().is_idle());
    ok(&s);
    // One range is unaffected, over 4 GiB included.
    let (s, _, m) = map_one(cfg, iommu(), &[(0, 5 * GIB)]);
    let a = APERTURE.0;
    assert_eq!(s.sg_table(m.unwrap()).unwrap().pairs(), vec![(a, MAX_SEG), (a + MAX_SEG, 5 * GIB - MAX_SEG)]);
    ok(&s);
}

#[test]
fn not_supported_topology_is_einval() {
    let desc = ImporterDesc { map_type: P2pMapType::NotSupported, ..iommu() };
    let (s, _, m) = map_one(Config::default(), desc, &SCATTERED);
    assert_eq!(m, Err(MapError::P2pNotSupported));
    assert_eq!(m.unwrap_err().errno(), Errno::EINVAL);
    ok(&s);
}

#[test]
fn calc_sg_nents_counts_like_the_kernel_and_overflows_to_zero() {
    let pv = |len| PhysVec { paddr: 0, len };
    assert_eq!(calc_sg_nents(false, &[pv(0x1000), pv(8 * GIB)], 0, 4096), 4);
    assert_eq!(calc_sg_nents(true, &[pv(0x1000), pv(8 * GIB)], 8 * GIB + 0x1000, 4096), 3);
    let huge = vec![pv(1 << 62); 4];
    assert_eq!(calc_sg_nents(false, &huge[..3], 0, 4096), 3 * 0x4000_0401);
    assert_eq!(calc_sg_nents(false, &huge, 0, 4096), 0);
    assert_eq!(max_sg_ent_sz(4096), 0xffff_f000);
    assert_eq!(max_sg_ent_sz(65536), 0xffff_0000);
}

#[test]
fn export_builds_phys_vecs_and_rejects_like_the_validator() {
    let mut s = shim(Config::default());
    let buf = export(&mut s, 0, &SCATTERED).unwrap();
    let d = s.dma_buf(buf).unwrap();
    assert_eq!(d.size, 0x6000);
    assert_eq!(d.phys_vec[2], PhysVec { paddr: BAR0 + 0x8000_0000, len: 0x2000 });
    assert!(!d.revoked);
    let e = export(&mut s, 2, &[(0, 0x1000)]).unwrap_err();
    assert_eq!(e, ExportError::Rejected(Reject::BarNotMmio));
    assert_eq!(e.errno(), Errno::EINVAL);
    let e = export(&mut s, 0, &[(0, 0x1001)]).unwrap_err();
    assert_eq!(e, ExportError::Rejected(Reject::RangeUnaligned { index: 0 }));
    let e = export(&mut s, 1, &[(0, 0x1000)]).unwrap_err();
    assert_eq!(e.errno(), Errno::ENODEV);
    ok(&s);
    // Strict: out-of-BAR ranges are EINVAL without the BAR's address.
    let mut s = shim(Config { policy: Policy::Strict, ..Config::default() });
    let e = export(&mut s, 4, &[(0x1_0000, 0x1000)]).unwrap_err();
    assert_eq!(e, ExportError::Rejected(Reject::StrictRangeOutsideBar { index: 0 }));
    ok(&s);
}

#[test]
fn single_range_variant_runs_through_the_same_core() {
    let mut s = shim(Config::default());
    let imp = s.add_importer(iommu());
    let single = uapi::DeviceFeatureDmaBufSingle { region_index: 0, open_flags: 2, offset: 0x2000, length: 0x3000 };
    let a = s.export_single(&single).unwrap();
    let b = export(&mut s, 0, &[(0x2000, 0x3000)]).unwrap();
    assert_eq!(s.dma_buf(a).unwrap().phys_vec, s.dma_buf(b).unwrap().phys_vec);
    let att = s.attach(a, imp).unwrap();
    let m = s.map(att).unwrap();
    assert_eq!(s.sg_table(m).unwrap().pairs(), vec![(APERTURE.0, 0x3000)]);
    let bad = uapi::DeviceFeatureDmaBufSingle { length: 0, ..single };
    assert_eq!(s.export_single(&bad), Err(ExportError::Rejected(Reject::RangeZeroLength { index: 0 })));
    ok(&s);
}

#[test]
fn unmap_leaves_nothing_mapped_on_any_path() {
    for desc in [ImporterDesc::bus_peer(), iommu(), iommu().without_iova_api()] {
        let (mut s, imp, m) = map_one(Config::default(), desc, &[(0, 8 * GIB), (9 * GIB, 0x1000)]);
        s.unmap(m.unwrap());
        if let Some(io) = &s.importer(imp).expect("importer").iommu {
            assert!(io.is_idle(), "{desc:?}");
        }
        assert_eq!(s.counters().mappings, 0);
        ok(&s);
    }
}

/// 7.2.13 `vfio_pci_core_feature_dma_buf()` (:232-233): a driver without
/// `get_dmabuf_phys` answers EOPNOTSUPP before `vfio_check_feature()`, so
/// a PROBE gets it too; the vfio core's own checks still come first.
#[test]
fn driver_without_get_dmabuf_phys_is_eopnotsupp_even_for_a_probe() {
    let mut s = shim(Config::default());
    s.set_get_dmabuf_phys(false);
    let bytes = request(0, &[(0, 0x1000)]);
    let req = uapi::Request::decode(&bytes).expect("decodable");
    assert_eq!(s.export(&req), Err(ExportError::NoDmaBufPhys));
    assert_eq!(ExportError::NoDmaBufPhys.errno(), Errno::EOPNOTSUPP);
    let mut probe = uapi::OwnedRequest::from_single(&uapi::DeviceFeatureDmaBufSingle {
        region_index: 0,
        open_flags: 2,
        offset: 0,
        length: 0x1000,
    });
    probe.feature.flags = uapi::VFIO_DEVICE_FEATURE_DMA_BUF | uapi::VFIO_DEVICE_FEATURE_PROBE;
    assert_eq!(s.export(&probe.request()), Err(ExportError::NoDmaBufPhys));
    // A bad argsz is the vfio core's EINVAL, before the driver is asked.
    probe.feature.argsz = 4;
    assert_eq!(s.export(&probe.request()), Err(ExportError::Rejected(Reject::ArgszBelowFeatureHeader)));
    assert_eq!(s.counters(), Counters::default());
    // With it (vfio-pci), the probe is a valid non-export as before.
    s.set_get_dmabuf_phys(true);
    probe.feature.argsz = 40;
    assert_eq!(s.export(&probe.request()), Err(ExportError::NotAnExport));
    ok(&s);
}
