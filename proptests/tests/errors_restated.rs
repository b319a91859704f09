//! kmod-shim's refusals answer the kernel's errno: each error type's errno
//! restated here from the C (not read from the model), and iommufd's
//! `IOMMU_IOAS_MAP_FILE` argument checks in `iopt_map_file_pages()`'s order.

use kmod_shim::{
    check_invariants, AttachError, Errno, ExportError, Fidelity, IoasId, IommufdError, MapError, Policy, Reject,
};
use props::fixtures::{config as shim_config, edge_device, shim_with, APERTURE, PAGE_SIZES};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use uapi::DmaRange;

/// Cases per property, as for the other properties.
fn config() -> ProptestConfig {
    let cases = ["NR_RANGES_PROPTEST_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(16_384);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/errors_restated.txt"
        )))),
        ..ProptestConfig::default()
    }
}

/// Each refusal with the errno the kernel returns for it, and the message
/// naming that errno (the CLI and the lab print it).
#[test]
fn refusals_answer_the_kernels_errno() {
    use Errno::*;
    let attach = [
        (AttachError::NoSuchDmaBuf, EBADF),
        (AttachError::NoSuchImporter, EINVAL),
        (AttachError::NoMem, ENOMEM),
        (AttachError::NoPeer2Peer, EOPNOTSUPP),
        (AttachError::Revoked, ENODEV),
        (AttachError::NotRevocable, EOPNOTSUPP),
    ];
    let map = [
        (MapError::NoSuchAttachment, EBADF),
        (MapError::Revoked, ENODEV),
        (MapError::NoMem, ENOMEM),
        (MapError::P2pNotSupported, EINVAL),
        (MapError::SgNentsOverflow, EINVAL),
        (MapError::IovaLink { index: 3, errno: EADDRINUSE }, EADDRINUSE),
        (MapError::IovaLink { index: 0, errno: EEXIST }, EEXIST),
        (MapError::MapPhys { index: 1 }, ENOMEM),
        (MapError::IovaSync, ENOMEM),
    ];
    let iommufd = [
        (IommufdError::NoSuchIoas, ENOENT),
        (IommufdError::ZeroLength, EINVAL),
        (IommufdError::Overflow, EOVERFLOW),
        (IommufdError::BadFd, EBADF),
        (IommufdError::OutsideDmaBuf, EINVAL),
        (IommufdError::NoMem, ENOMEM),
        (IommufdError::Attach(AttachError::Revoked), ENODEV),
        (IommufdError::IommufdMap(EOPNOTSUPP), EOPNOTSUPP),
        (IommufdError::UnalignedStart, EINVAL),
        (IommufdError::UnalignedLength, EINVAL),
        (IommufdError::NoIova, ENOSPC),
        (IommufdError::DomainMap(EEXIST), EEXIST),
        (IommufdError::NoSuchArea, ENOENT),
    ];
    let export = [
        (ExportError::Rejected(Reject::BarAbsent), ENODEV),
        (ExportError::Rejected(Reject::StrictTooManyRanges), E2BIG),
        (ExportError::NotAnExport, EINVAL),
        (ExportError::DeviceNotOpen, EBADF),
        (ExportError::NoDmaBufPhys, EOPNOTSUPP),
        (ExportError::RangeCopyNoMem, ENOMEM),
        (ExportError::PrivNoMem, ENOMEM),
        (ExportError::PhysVecNoMem, ENOMEM),
        (ExportError::DmaBufExportNoMem, ENOMEM),
        (ExportError::FdInstall, EMFILE),
    ];
    let mut seen = Vec::new();
    let mut check = |got: Errno, text: String, want: Errno| {
        assert_eq!(got, want, "{text}");
        assert!(text.contains(want.name()), "{text:?} does not name {want}");
        assert!(!seen.contains(&text), "{text:?} twice");
        seen.push(text);
    };
    attach.iter().for_each(|(e, want)| check(e.errno(), e.to_string(), *want));
    map.iter().for_each(|(e, want)| check(e.errno(), e.to_string(), *want));
    iommufd.iter().for_each(|(e, want)| check(e.errno(), e.to_string(), *want));
    export.iter().for_each(|(e, want)| check(e.errno(), e.to_string(), *want));
}

/// A field of `IOMMU_IOAS_MAP_FILE` for a dma-buf of `pages` pages: page
/// multiples in and just past it, and the values that break a check.
fn field(page: u64, pages: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0..pages + 2).prop_map(move |n| n * page),
        1 => prop::sample::select(vec![1, page - 1, page + 1, u64::MAX - page + 1, u64::MAX]),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// The claim: `props::claims::claim("prop_iommufd_map_file_checks_in_the_kernels_order_and_a_refusal_changes_nothing")`.
    #[test]
    fn prop_iommufd_map_file_checks_in_the_kernels_order_and_a_refusal_changes_nothing(
        (page, pages, start, length) in prop::sample::select(PAGE_SIZES.to_vec())
            .prop_flat_map(|p| (Just(p), 1u64..32))
            .prop_flat_map(|(p, n)| (Just(p), Just(n), field(p.bytes(), n), field(p.bytes(), n))),
        known_ioas in prop::bool::weighted(0.95),
        closed in prop::bool::weighted(0.05),
        revoke_first in any::<bool>(),
    ) {
        let dev = edge_device(page);
        let p = page.bytes();
        let size = pages * p;
        let mut s = shim_with(dev, shim_config(Policy::Linux, Fidelity::Kernel), &[]);
        let req = props::well_formed(0, 0o2_000_002, &[DmaRange::new(0, size)]);
        let buf = s.export(&req.request()).expect("one range inside BAR0");
        let ioas = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.1);
        if closed {
            s.close_fd(buf).expect("the fd is open");
        }
        let target = if known_ioas { ioas } else { IoasId(ioas.0 + 1) };
        // iopt_map_file_pages(), then iopt_alloc_dmabuf_pages(), then
        // iopt_alloc_area_pages(), restated.
        let want = if !known_ioas {
            Some(IommufdError::NoSuchIoas)
        } else if length == 0 {
            Some(IommufdError::ZeroLength)
        } else if start.checked_add(length - 1).is_none() {
            Some(IommufdError::Overflow)
        } else if closed {
            Some(IommufdError::BadFd)
        } else if start % p != 0 {
            Some(IommufdError::UnalignedStart)
        } else if start + (length - 1) >= size {
            Some(IommufdError::OutsideDmaBuf)
        } else if length % p != 0 {
            Some(IommufdError::UnalignedLength)
        } else {
            None
        };
        let before = s.snapshot();
        let got = s.iommufd_map_file(target, buf, start, length);
        prop_assert_eq!(got.err(), want, "start {:#x} length {:#x} of {:#x}", start, length, size);
        match got {
            Err(_) => prop_assert_eq!(s.snapshot(), before, "a refused MAP_FILE changed the state"),
            Ok(area) => {
                let iova = s.iopt_pages(area).expect("live area").iova;
                let bar = dev.bars[0];
                prop_assert_eq!(s.iommufd_reach(ioas, iova), Some((bar.start + start, length)));
                if revoke_first {
                    // The one binding is notified (iopt_revoke_notify()), and
                    // its area stays empty after the restore.
                    s.set_memory_enabled(false);
                    prop_assert_eq!(s.iommufd_reach(ioas, iova), None, "reached with memory disabled");
                    prop_assert_eq!(s.events().invalidations, 1);
                    s.set_memory_enabled(true);
                    prop_assert_eq!(s.events().invalidations, 2);
                    prop_assert_eq!(s.iommufd_reach(ioas, iova), None, "a revoked area was refilled");
                }
                // UNMAP of a live area unmaps its IOVA (iopt_unmap_iova());
                // of a revoked one, only frees it.
                s.iommufd_unmap(area).expect("the area is live");
                prop_assert_eq!(s.iommufd_unmap(area), Err(IommufdError::NoSuchArea));
                prop_assert!(s.ioas(ioas).expect("ioas").domain.is_idle(), "UNMAP left IOVA behind");
                // iopt_release_pages() detached it: a revoke notifies nobody.
                let n = s.events().invalidations;
                s.set_memory_enabled(false);
                prop_assert_eq!(s.events().invalidations, n, "a released binding was notified");
            }
        }
        prop_assert!(check_invariants(&s).is_ok(), "{:?}", check_invariants(&s));
    }
}

/// The ledger names each allocation by its kernel variable (restated from
/// `vfio_pci_dmabuf.c`, `dma-buf.c`, `dma-buf-mapping.c` and iommufd's
/// `pages.c`), and every violation and anomaly the checker reports names
/// the object it is about, so that a failing property says what broke.
#[test]
fn reports_name_the_kernel_objects() {
    use kmod_shim::{Alloc, Anomaly, DmaBufId, ImporterId, MappingId, Violation};
    let names = [
        (Alloc::RangeCopy, "dma_ranges"),
        (Alloc::Priv, "priv"),
        (Alloc::PhysVec, "priv->phys_vec"),
        (Alloc::DmaBufFile, "priv->dmabuf"),
        (Alloc::Attachment, "attach"),
        (Alloc::DmaBufDma, "dma"),
        (Alloc::IovaState, "dma->state"),
        (Alloc::SgTable, "dma->sgt"),
        (Alloc::IovaSpan, "dma->state->addr"),
        (Alloc::IoptPages, "pages"),
    ];
    assert_eq!(names.map(|(a, _)| a), Alloc::ALL);
    for (a, name) in names {
        assert_eq!((a.kernel_name(), a.to_string()), (name, name.to_string()));
    }
    let anomalies = [
        (Anomaly::IovaLeak { bytes: 0x3000 }, "12288 bytes of IOVA"),
        (Anomaly::RegistrationUnderflow, "vfio_device_put_registration()"),
        (Anomaly::DoubleFree("priv->phys_vec"), "priv->phys_vec freed twice"),
        (Anomaly::UseAfterFree("priv"), "use after free: priv"),
        (Anomaly::DetachWithMappings, "dma_buf_detach()"),
    ];
    for (a, says) in anomalies {
        assert!(a.to_string().contains(says), "{a}");
    }
    let (m, d, i) = (MappingId(7), DmaBufId(5), ImporterId(3));
    let violations = [
        (Violation::SgEntry { mapping: m, index: 2, what: "empty" }, "mapping 7: sg entry 2 empty"),
        (Violation::SgSize { mapping: m, sum: 0x1000, size: 0x2000 }, "sum to 0x1000, dma-buf size 0x2000"),
        (Violation::Walk { mapping: m, at: 0x10, want: 0x20, got: None }, "mapping 7: at byte 0x10"),
        (Violation::RevokedButMapped { dmabuf: d }, "dma-buf 5 is revoked"),
        (Violation::IommuAccounting { importer: i, mapped: 1, allocated: 2, expected: 3 }, "importer 3"),
        (Violation::Iommu { importer: i, what: "bad".into() }, "importer 3: bad"),
        (Violation::Ledger { alloc: Alloc::Priv, expected: 1, actual: 2 }, "2 live allocations of priv"),
        (Violation::Registrations { expected: 1, actual: 0 }, "0 registrations held"),
        (Violation::Kref { dmabuf: d, expected: 2, actual: 1 }, "dma-buf 5: kref 1"),
        (Violation::Ioas { ioas: IoasId(4), what: "stale".into() }, "IOAS 4: stale"),
        (Violation::List { dmabuf: d }, "dma-buf 5 disagree"),
        (Violation::Anomaly(Anomaly::RegistrationUnderflow), "kernel-faithful anomaly: vfio_device_put"),
    ];
    for (v, says) in violations {
        assert!(v.to_string().contains(says), "{v}");
    }
}

proptest! {
    #![proptest_config(config())]

    /// The claim: `props::claims::claim("prop_pte_collision_errno_is_the_iommu_drivers")`.
    #[test]
    fn prop_pte_collision_errno_is_the_iommu_drivers(
        page in prop::sample::select(PAGE_SIZES.to_vec()),
        lengths in prop::collection::vec(1u64..4, 2..6),
        arm in any::<bool>(),
        model_first in any::<bool>(),
    ) {
        use kmod_shim::{ImporterDesc, IommuModel};
        let p = page.bytes();
        let mut off = 0;
        let ranges: Vec<DmaRange> = lengths
            .iter()
            .map(|&n| {
                let r = DmaRange::new(off, n * p);
                off += (n + 1) * p;
                r
            })
            .collect();
        // Restated: VT-d's generic page table answers a present PTE with
        // EADDRINUSE (measured, FINDINGS.md F1), io-pgtable-arm with EEXIST.
        let (model, want) = if arm { (IommuModel::ArmLpae, Errno::EEXIST) } else { (IommuModel::IntelVtd, Errno::EADDRINUSE) };
        let mut s = shim_with(edge_device(page), shim_config(Policy::Linux, Fidelity::Kernel), &[]);
        let ioas = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.1);
        if model_first {
            s.set_iommu_model(model);
        }
        let imp = s.add_importer(ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1));
        if !model_first {
            s.set_iommu_model(model);
        }
        prop_assert_eq!(s.iommu_model(), model);
        prop_assert_eq!(s.importer(imp).and_then(|i| i.iommu.as_ref()).map(|io| io.model()), Some(model));
        prop_assert_eq!(s.ioas(ioas).map(|io| io.domain.model()), Some(model));
        let buf = s.export(&props::well_formed(0, 0o2_000_002, &ranges).request()).expect("ranges inside BAR0");
        let att = s.attach(buf, imp).expect("an IOMMU peer attaches");
        let before = s.snapshot();
        prop_assert_eq!(s.map(att).err(), Some(MapError::IovaLink { index: 1, errno: want }));
        prop_assert_eq!(s.snapshot(), before, "the collision's unwind changed the state");
    }
}
