//! Importers and revocation: attach rules, memory disable, reset, close,
//! release order.

mod common;
use common::*;
use kmod_shim::*;

fn iommu() -> ImporterDesc {
    ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1)
}

fn setup() -> (Shim, DmaBufId, ImporterId, ImporterId) {
    let mut s = shim(Config::default());
    let bus = s.add_importer(ImporterDesc::bus_peer());
    let io = s.add_importer(iommu());
    let buf = export(&mut s, 0, &[(0, 0x2000), (0x10_0000, 0x1000)]).unwrap();
    (s, buf, bus, io)
}

/// 7.2.13's `vfio_pci_dma_buf_attach()` (`vfio_pci_dmabuf.c:25-40`):
/// `!peer2peer` EOPNOTSUPP, then `revoked` ENODEV, then an importer without
/// `invalidate_mappings` EOPNOTSUPP; the errnos as the lab measures them.
#[test]
fn attach_requires_peer2peer_then_not_revoked_then_invalidate_mappings() {
    let (mut s, buf, _, _) = setup();
    let no_p2p = s.add_importer(ImporterDesc { peer2peer: false, ..iommu() });
    let not_revocable = s.add_importer(ImporterDesc { invalidate_mappings: false, ..iommu() });
    // A static importer (dma_buf_attach(), no ops) has no peer2peer either.
    let static_imp = s.add_importer(ImporterDesc { peer2peer: false, invalidate_mappings: false, ..iommu() });
    assert_eq!(s.attach(buf, no_p2p), Err(AttachError::NoPeer2Peer));
    assert_eq!(AttachError::NoPeer2Peer.errno(), Errno::EOPNOTSUPP);
    assert_eq!(s.attach(buf, not_revocable), Err(AttachError::NotRevocable));
    assert_eq!(AttachError::NotRevocable.errno(), Errno::EOPNOTSUPP);
    assert_eq!(s.attach(buf, static_imp), Err(AttachError::NoPeer2Peer));
    s.set_memory_enabled(false);
    // The p2p check comes first, then revoked, then revocable.
    assert_eq!(s.attach(buf, no_p2p), Err(AttachError::NoPeer2Peer));
    assert_eq!(s.attach(buf, not_revocable), Err(AttachError::Revoked));
    assert_eq!(AttachError::Revoked.errno(), Errno::ENODEV);
    assert_eq!(s.counters().attachments, 0);
    ok(&s);
}

#[test]
fn memory_disable_revokes_all_and_enable_restores() {
    let (mut s, buf, bus, io) = setup();
    let a1 = s.attach(buf, bus).unwrap();
    let a2 = s.attach(buf, io).unwrap();
    s.map(a1).unwrap();
    s.map(a2).unwrap();
    s.map(a2).unwrap();
    ok(&s);
    s.set_memory_enabled(false);
    assert!(s.dma_buf(buf).unwrap().revoked);
    assert_eq!(s.counters().mappings, 0);
    assert_eq!(s.events().invalidations, 2);
    assert!(s.importer(io).expect("importer").iommu.as_ref().unwrap().is_idle());
    assert_eq!(s.map(a2), Err(MapError::Revoked));
    assert_eq!(MapError::Revoked.errno(), Errno::ENODEV);
    ok(&s);
    // A second disable changes nothing and notifies nobody.
    s.set_memory_enabled(false);
    assert_eq!(s.events().invalidations, 2);
    s.set_memory_enabled(true);
    assert!(!s.dma_buf(buf).unwrap().revoked);
    assert_eq!(s.events().invalidations, 4);
    let m = s.map(a2).unwrap();
    assert_eq!(s.sg_table(m).unwrap().pairs(), vec![(APERTURE.0 + 0x6000, 0x3000)]);
    ok(&s);
}

#[test]
fn export_while_memory_disabled_starts_revoked() {
    let mut s = shim(Config::default());
    let io = s.add_importer(iommu());
    s.set_memory_enabled(false);
    let buf = export(&mut s, 0, &[(0, 0x1000)]).unwrap();
    assert!(s.dma_buf(buf).unwrap().revoked);
    assert_eq!(s.attach(buf, io), Err(AttachError::Revoked));
    s.set_memory_enabled(true);
    let att = s.attach(buf, io).unwrap();
    s.map(att).unwrap();
    ok(&s);
}

#[test]
fn reset_revokes_then_restores() {
    let (mut s, buf, _, io) = setup();
    let att = s.attach(buf, io).unwrap();
    s.map(att).unwrap();
    s.reset();
    assert!(!s.dma_buf(buf).unwrap().revoked);
    assert_eq!(s.counters().mappings, 0);
    assert_eq!(s.events().invalidations, 2);
    ok(&s);
    // With memory disabled, reset leaves the dma-buf revoked.
    s.set_memory_enabled(false);
    s.reset();
    assert!(s.dma_buf(buf).unwrap().revoked);
    ok(&s);
}

/// 7.2.13 `vfio_pci_dma_buf_move()`: each mapping holds a `kref` (:68,
/// put at :81); a revoke drops the registered one and waits for the
/// completion (:357-358), then re-arms it (:368).
#[test]
fn revoke_waits_for_importers_that_unmap_later() {
    let (mut s, buf, _, _) = setup();
    let lazy = s.add_importer(ImporterDesc { unmap_in_invalidate_mappings: false, ..iommu() });
    let eager = s.add_importer(iommu());
    let att = s.attach(buf, lazy).unwrap();
    let att2 = s.attach(buf, eager).unwrap();
    assert_eq!(s.dma_buf(buf).unwrap().kref(), 1);
    s.map(att).unwrap();
    s.map(att).unwrap();
    let m = s.map(att2).unwrap();
    assert_eq!(s.dma_buf(buf).unwrap().kref(), 4);
    s.unmap(m);
    assert_eq!(s.dma_buf(buf).unwrap().kref(), 3);
    s.map(att2).unwrap();
    ok(&s);
    s.set_memory_enabled(false);
    // The eager importer unmapped in its callback; the lazy one's two
    // mappings were waited for.
    assert_eq!(s.events().revoke_waits, 2);
    assert_eq!(s.dma_buf(buf).unwrap().kref(), 1, "re-armed after the drain");
    assert!(s.importer(lazy).expect("importer").iommu.as_ref().unwrap().is_idle());
    ok(&s);
    // Restored, a new mapping takes a reference on the re-armed kref.
    s.set_memory_enabled(true);
    s.map(att).unwrap();
    assert_eq!(s.dma_buf(buf).unwrap().kref(), 2);
    ok(&s);
}

/// 7.2.13 `vfio_pci_dma_buf_cleanup()` (:380-406) revokes through
/// `vfio_pci_dma_buf_move(vdev, true)`: each listed dma-buf is invalidated
/// once and drained; then each leaves the list with its registration.
#[test]
fn close_revokes_through_the_move_path() {
    let mut s = shim(Config::default());
    let io = s.add_importer(iommu());
    let lazy = s.add_importer(ImporterDesc { unmap_in_invalidate_mappings: false, ..iommu() });
    let a = export(&mut s, 0, &[(0, 0x1000)]).unwrap();
    let b = export(&mut s, 0, &[(0x1000, 0x1000)]).unwrap();
    s.attach(a, io).unwrap();
    let late = s.attach(b, lazy).unwrap();
    s.map(late).unwrap();
    s.close_device();
    // One attachment each: two invalidations; the lazy importer's mapping
    // was waited for.
    assert_eq!(s.events().invalidations, 2);
    assert_eq!(s.events().revoke_waits, 1);
    assert!(s.dma_buf(a).unwrap().revoked && s.dma_buf(b).unwrap().revoked);
    assert_eq!(s.device().dmabufs().count(), 0);
    assert_eq!(s.counters().registrations, 0);
    ok(&s);
    // A second cleanup finds nothing listed and invalidates nobody.
    s.open_device();
    s.close_device();
    assert_eq!(s.events().invalidations, 2);
    ok(&s);
}

/// The same path on a dma-buf revoked before the close: no second
/// invalidation (7.2.13's move skips a dma-buf already in that state).
#[test]
fn close_does_not_invalidate_a_dma_buf_already_revoked() {
    let (mut s, buf, _, io) = setup();
    let att = s.attach(buf, io).unwrap();
    s.map(att).unwrap();
    s.set_memory_enabled(false);
    assert_eq!(s.events().invalidations, 1);
    s.close_device();
    assert_eq!(s.events().invalidations, 1, "already revoked: cleanup's move skips it");
    assert!(!s.dma_buf(buf).unwrap().vdev);
    assert_eq!(s.counters().registrations, 0);
    ok(&s);
}

#[test]
fn close_revokes_for_good_and_the_dma_buf_outlives_the_device() {
    let (mut s, buf, _, io) = setup();
    let att = s.attach(buf, io).unwrap();
    s.map(att).unwrap();
    assert_eq!(s.counters().registrations, 1);
    s.close_device();
    let d = s.dma_buf(buf).unwrap();
    assert!(d.revoked && !d.vdev);
    assert_eq!(s.device().dmabufs().count(), 0);
    assert_eq!(s.counters().registrations, 0);
    assert!(s.importer(io).expect("importer").iommu.as_ref().unwrap().is_idle());
    ok(&s);
    // Neither memory enable nor reopen restores it.
    s.set_memory_enabled(false);
    s.set_memory_enabled(true);
    s.open_device();
    assert!(s.dma_buf(buf).unwrap().revoked);
    assert_eq!(s.map(att), Err(MapError::Revoked));
    // Export on a closed device has no fd to go through.
    s.close_device();
    assert_eq!(export(&mut s, 0, &[(0, 0x1000)]), Err(ExportError::DeviceNotOpen));
    // Release after close: no second registration put.
    s.close_fd(buf).unwrap();
    assert!(s.dma_buf(buf).is_some(), "the attachment still holds it");
    s.detach(att).unwrap();
    assert!(s.dma_buf(buf).is_none());
    assert_eq!(s.counters(), Counters::default());
    ok(&s);
}

#[test]
fn release_before_close_and_double_close_fd() {
    let (mut s, buf, _, io) = setup();
    let att = s.attach(buf, io).unwrap();
    let m = s.map(att).unwrap();
    s.close_fd(buf).unwrap();
    assert_eq!(s.close_fd(buf), Err(Errno::EBADF));
    s.unmap(m);
    s.unmap(m);
    s.detach(att).unwrap();
    assert_eq!(s.detach(att), Err(Errno::EBADF));
    assert!(s.dma_buf(buf).is_none());
    s.close_device();
    s.reset();
    assert_eq!(s.counters(), Counters::default());
    ok(&s);
}

#[test]
fn detach_with_live_mappings_is_recorded() {
    let (mut s, buf, _, io) = setup();
    let att = s.attach(buf, io).unwrap();
    s.map(att).unwrap();
    s.detach(att).unwrap();
    assert!(s.importer(io).expect("importer").iommu.as_ref().unwrap().is_idle());
    assert_eq!(check_invariants(&s), Err(Violation::Anomaly(Anomaly::DetachWithMappings)));
}

#[test]
fn bus_addr_peer_still_reaches_the_bar_after_revoke() {
    // Flagged: nothing but the importer stops DMA on the BUS_ADDR path. While
    // memory decoding is off the BAR answers nothing (kernel-lab F3); once it
    // is back, the revoked bus address reaches the BAR again.
    let (mut s, buf, bus, _) = setup();
    let att = s.attach(buf, bus).unwrap();
    s.map(att).unwrap();
    s.set_memory_enabled(false);
    assert_eq!(s.counters().mappings, 0);
    assert_eq!(s.peer_reach(bus, BAR0), None);
    assert_eq!(s.dma_translate(bus, BAR0), Some((BAR0, 16 * GIB)));
    ok(&s);
    s.set_memory_enabled(true);
    assert_eq!(s.counters().mappings, 0);
    assert_eq!(s.peer_reach(bus, BAR0), Some((BAR0, 16 * GIB)));
    ok(&s);
}

#[test]
fn checker_catches_a_stale_translation() {
    // The checker must be able to fail: map behind the model's back.
    let (mut s, buf, _, io) = setup();
    let att = s.attach(buf, io).unwrap();
    s.map(att).unwrap();
    let iommu = s.importer_mut(io).expect("importer").iommu.as_mut().unwrap();
    let extra = iommu.alloc_iova(0x1000).unwrap();
    iommu.map(extra, BAR0, 0x1000).unwrap();
    assert!(matches!(check_invariants(&s), Err(Violation::IommuAccounting { .. })));
}

#[test]
fn ledger_names_every_kernel_object_a_mapping_holds() {
    let (mut s, buf, _, io) = setup();
    let att = s.attach(buf, io).unwrap();
    let m = s.map(att).unwrap();
    assert_eq!(s.mapping(m).unwrap().path(), MapPath::IovaSpan);
    let ledger = s.counters().ledger;
    for (alloc, live) in ledger.entries() {
        // The range copy is freed before the export returns; iommufd's
        // pages belong to IOMMU_IOAS_MAP_FILE, not to a mapping.
        let want = i64::from(alloc != Alloc::RangeCopy && alloc != Alloc::IoptPages);
        assert_eq!(live, want, "{alloc}");
    }
    s.unmap(m);
    s.detach(att).unwrap();
    s.close_fd(buf).unwrap();
    assert_eq!(s.counters().ledger, Ledger::default());
}
