//! iommufd as an importer (`IOMMU_IOAS_MAP_FILE` of a vfio dma-buf). The
//! expected values of the first two tests are what the kernel lab's
//! selftest measured on the 7.2.13 lab kernel under native iommufd
//! (`kernel-lab/selftest/README.md`: `iommufd_map_one_range` and
//! `iommufd_map_many_ranges`, ivshmem-plain's 16 MiB BAR2); the revoke
//! sequence and QEMU's two-area request are what `kernel-lab iommufd`
//! measured on the lab kernels through the vfio cdev (`kernel-lab/README.md`,
//! "iommufd as VMMs use it"), which runs the same steps on this model and
//! compares each; the rest is read from 7.2.13's `pages.c` and
//! `vfio_pci_dmabuf.c` and not measured.

mod common;
use common::*;
use kmod_shim::*;

/// ivshmem-plain as the selftest saw it: BAR2, 16 MiB of MMIO.
const BAR2: u64 = 0xfd00_0000;
const BAR2_LEN: u64 = 16 << 20;
const PAGE: u64 = 0x1000;

fn ivshmem() -> Shim {
    Shim::new(Device::new(PageSize::K4).with_bar(2, Bar::mmio(BAR2, BAR2_LEN)), Config::default())
}

/// `iommufd_map_one_range`, step by step: MAP_FILE of the whole one-range
/// dma-buf answers 0 and the IOVA is translated; memory disabled, it is no
/// longer translated and a new MAP_FILE answers ENODEV; memory enabled,
/// UNMAP 0, MAP_FILE 0, UNMAP 0, close 0.
#[test]
fn one_range_maps_revocation_cuts_it_and_a_new_map_is_enodev() {
    let mut s = ivshmem();
    let ioas = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.1);
    let buf = export(&mut s, 2, &[(0, BAR2_LEN)]).unwrap();
    let area = s.iommufd_map_file(ioas, buf, 0, BAR2_LEN).unwrap();
    let iova = s.iopt_pages(area).unwrap().iova;
    assert_eq!(s.iommufd_reach(ioas, iova), Some((BAR2, BAR2_LEN)));
    assert_eq!(s.iommufd_reach(ioas, iova + BAR2_LEN - PAGE).map(|r| r.0), Some(BAR2 + BAR2_LEN - PAGE));
    ok(&s);
    s.set_memory_enabled(false);
    assert_eq!(s.ioas(ioas).unwrap().domain.translate(iova), None, "no longer translated");
    let again = s.iommufd_map_file(ioas, buf, 0, BAR2_LEN);
    assert_eq!(again.map_err(|e| e.errno()), Err(Errno::ENODEV));
    assert_eq!(again, Err(IommufdError::Attach(AttachError::Revoked)), "vfio_pci_dma_buf_attach() refuses");
    ok(&s);
    s.set_memory_enabled(true);
    assert_eq!(s.iommufd_unmap(area), Ok(()));
    let area = s.iommufd_map_file(ioas, buf, 0, BAR2_LEN).unwrap();
    assert_eq!(s.iommufd_reach(ioas, s.iopt_pages(area).unwrap().iova).map(|r| r.0), Some(BAR2));
    assert_eq!(s.iommufd_unmap(area), Ok(()));
    assert_eq!(s.close_fd(buf), Ok(()));
    assert!(s.dma_buf(buf).is_none());
    assert!(s.ioas(ioas).unwrap().domain.is_idle());
    assert_eq!(s.counters(), Counters::default());
    ok(&s);
}

/// `iommufd_map_many_ranges`: a dma-buf of two one-page ranges, MAP_FILE of
/// its two pages answers EOPNOTSUPP (`vfio_pci_dma_buf_iommufd_map()`,
/// `nr_ranges != 1`), and nothing is left behind.
#[test]
fn more_than_one_range_is_eopnotsupp() {
    let mut s = ivshmem();
    let ioas = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.1);
    let buf = export(&mut s, 2, &[(0, PAGE), (PAGE, PAGE)]).unwrap();
    let before = s.snapshot();
    let r = s.iommufd_map_file(ioas, buf, 0, 2 * PAGE);
    assert_eq!(r.map_err(|e| e.errno()), Err(Errno::EOPNOTSUPP));
    assert_eq!(r, Err(IommufdError::IommufdMap(Errno::EOPNOTSUPP)));
    assert_eq!(s.snapshot(), before);
    assert_eq!(s.close_fd(buf), Ok(()));
    assert_eq!(s.counters(), Counters::default());
    ok(&s);
}

/// Measured by `kernel-lab iommufd` (re-enabled: the old area is not
/// translated, a new MAP_FILE maps): the area of a revoked dma-buf stays
/// empty after memory is enabled again (`iopt_revoke_notify()` returns at
/// once on an already revoked area, so the un-revoke's invalidation does
/// nothing), while its IOVA stays reserved until UNMAP; the area holds the
/// dma-buf past the fd's close; device close revokes the same way.
#[test]
fn revocation_is_for_good_for_the_area_and_it_holds_the_dma_buf() {
    let mut s = ivshmem();
    let ioas = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.1);
    let buf = export(&mut s, 2, &[(0x10_0000, 4 * PAGE)]).unwrap();
    let area = s.iommufd_map_file(ioas, buf, PAGE, 2 * PAGE).unwrap();
    let iova = s.iopt_pages(area).unwrap().iova;
    assert_eq!(s.iommufd_reach(ioas, iova), Some((BAR2 + 0x10_0000 + PAGE, 2 * PAGE)));
    assert_eq!(s.events().invalidations, 0);
    s.set_memory_enabled(false);
    s.set_memory_enabled(true);
    assert_eq!(s.events().invalidations, 2);
    assert!(s.iopt_pages(area).unwrap().is_revoked());
    assert_eq!(s.iommufd_reach(ioas, iova), None);
    assert_eq!(s.ioas(ioas).unwrap().domain.allocated_bytes(), 2 * PAGE);
    ok(&s);
    // A second area maps again; the fd closes, the areas keep the dma-buf.
    let area2 = s.iommufd_map_file(ioas, buf, 0, 4 * PAGE).unwrap();
    s.close_fd(buf).unwrap();
    assert!(s.dma_buf(buf).is_some());
    ok(&s);
    // Device close: vfio_pci_dma_buf_cleanup() revokes through the move.
    s.close_device();
    assert!(s.iopt_pages(area2).unwrap().is_revoked());
    assert_eq!(s.ioas(ioas).unwrap().domain.mapped_bytes(), 0);
    ok(&s);
    s.iommufd_unmap(area).unwrap();
    s.iommufd_unmap(area2).unwrap();
    assert_eq!(s.iommufd_unmap(area2), Err(IommufdError::NoSuchArea));
    assert!(s.dma_buf(buf).is_none(), "the last area's put released it");
    assert_eq!(s.counters(), Counters::default());
    ok(&s);
}

/// `iopt_map_file_pages()` and `iopt_alloc_dmabuf_pages()` in order:
/// length 0 EINVAL, a wrapping end EOVERFLOW, a closed fd EBADF, past the
/// dma-buf's end EINVAL, an allocation failure ENOMEM; each leaves the
/// state as it was.
#[test]
fn map_file_checks_in_kernel_order() {
    let mut s = ivshmem();
    let ioas = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.1);
    let buf = export(&mut s, 2, &[(0, 4 * PAGE)]).unwrap();
    let before = s.snapshot();
    let cases = [
        (0, 0, IommufdError::ZeroLength, Errno::EINVAL),
        (u64::MAX, 2, IommufdError::Overflow, Errno::EOVERFLOW),
        (0, 5 * PAGE, IommufdError::OutsideDmaBuf, Errno::EINVAL),
        (PAGE, 4 * PAGE, IommufdError::OutsideDmaBuf, Errno::EINVAL),
    ];
    for (start, len, want, errno) in cases {
        let r = s.iommufd_map_file(ioas, buf, start, len);
        assert_eq!(r, Err(want), "start {start:#x} length {len:#x}");
        assert_eq!(want.errno(), errno);
        assert_eq!(s.snapshot(), before);
    }
    assert_eq!(s.iommufd_map_file(IoasId(7), buf, 0, PAGE), Err(IommufdError::NoSuchIoas));
    for step in 0..2 {
        s.arm_fault(Some(FaultPlan::new(FaultSite::Alloc, step)));
        assert_eq!(s.iommufd_map_file(ioas, buf, 0, PAGE), Err(IommufdError::NoMem));
        assert_eq!(s.snapshot(), before);
    }
    s.arm_fault(None);
    ok(&s);
    // An IOAS too small for the area: ENOSPC, nothing kept.
    let tiny = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.0 + PAGE);
    let before = s.snapshot();
    assert_eq!(s.iommufd_map_file(tiny, buf, 0, 2 * PAGE).map_err(|e| e.errno()), Err(Errno::ENOSPC));
    assert_eq!(s.snapshot(), before);
    s.close_fd(buf).unwrap();
    assert_eq!(s.iommufd_map_file(ioas, buf, 0, PAGE), Err(IommufdError::BadFd));
    ok(&s);
}

/// QEMU's request for a BAR with two mmap areas around an MSI-X page
/// (`rfc/consumers.md` 2.1, measured by `kernel-lab iommufd`): one dma-buf
/// of both areas, then MAP_FILE per area at the area's region offset. Area
/// 0 is refused by vfio (EOPNOTSUPP, two ranges); area 1 ends past the
/// dma-buf, whose size is the areas' sum, and is refused before vfio is
/// asked (EINVAL); even at its real offset in the dma-buf it is EOPNOTSUPP.
#[test]
fn qemus_two_area_request_maps_nothing() {
    const HALF: u64 = BAR2_LEN / 2;
    let mut s = ivshmem();
    let ioas = s.iommufd_ioas_alloc(APERTURE.0, APERTURE.1);
    let areas = [(0, HALF), (HALF + PAGE, HALF - PAGE)];
    let buf = export(&mut s, 2, &areas).unwrap();
    assert_eq!(s.dma_buf(buf).unwrap().size, BAR2_LEN - PAGE);
    let before = s.snapshot();
    let r = s.iommufd_map_file(ioas, buf, areas[0].0, areas[0].1);
    assert_eq!(r, Err(IommufdError::IommufdMap(Errno::EOPNOTSUPP)));
    let r = s.iommufd_map_file(ioas, buf, areas[1].0, areas[1].1);
    assert_eq!(r, Err(IommufdError::OutsideDmaBuf));
    assert_eq!(r.map_err(|e| e.errno()), Err(Errno::EINVAL));
    let r = s.iommufd_map_file(ioas, buf, HALF, areas[1].1);
    assert_eq!(r.map_err(|e| e.errno()), Err(Errno::EOPNOTSUPP));
    assert_eq!(s.snapshot(), before, "nothing kept");
    assert_eq!(s.close_fd(buf), Ok(()));
    assert_eq!(s.counters(), Counters::default());
    ok(&s);
}
