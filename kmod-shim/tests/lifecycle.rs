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

#[test]
fn attach_requires_peer2peer_then_not_revoked_then_move_notify() {
    let (mut s, buf, _, _) = setup();
    let no_p2p = s.add_importer(ImporterDesc { peer2peer: false, ..iommu() });
    let static_imp = s.add_importer(ImporterDesc { move_notify: false, ..iommu() });
    assert_eq!(s.attach(buf, no_p2p), Err(AttachError::NoPeer2Peer));
    assert_eq!(AttachError::NoPeer2Peer.errno(), Errno::EOPNOTSUPP);
    assert_eq!(s.attach(buf, static_imp), Err(AttachError::PinNotSupported));
    s.set_memory_enabled(false);
    // The p2p check comes first, then revoked, then the pin of a static one.
    assert_eq!(s.attach(buf, no_p2p), Err(AttachError::NoPeer2Peer));
    assert_eq!(s.attach(buf, static_imp), Err(AttachError::Revoked));
    assert_eq!(AttachError::Revoked.errno(), Errno::ENODEV);
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
    assert_eq!(s.events().move_notifies, 2);
    assert!(s.importer(io).expect("importer").iommu.as_ref().unwrap().is_idle());
    assert_eq!(s.map(a2), Err(MapError::Revoked));
    assert_eq!(MapError::Revoked.errno(), Errno::ENODEV);
    ok(&s);
    // A second disable changes nothing and notifies nobody.
    s.set_memory_enabled(false);
    assert_eq!(s.events().move_notifies, 2);
    s.set_memory_enabled(true);
    assert!(!s.dma_buf(buf).unwrap().revoked);
    assert_eq!(s.events().move_notifies, 4);
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
    assert_eq!(s.events().move_notifies, 2);
    ok(&s);
    // With memory disabled, reset leaves the dma-buf revoked.
    s.set_memory_enabled(false);
    s.reset();
    assert!(s.dma_buf(buf).unwrap().revoked);
    ok(&s);
}

#[test]
fn revoke_waits_for_importers_that_unmap_later() {
    let (mut s, buf, _, _) = setup();
    let lazy = s.add_importer(ImporterDesc { unmap_in_move_notify: false, ..iommu() });
    let att = s.attach(buf, lazy).unwrap();
    s.map(att).unwrap();
    s.map(att).unwrap();
    s.set_memory_enabled(false);
    assert_eq!(s.events().revoke_waits, 2);
    assert!(s.importer(lazy).expect("importer").iommu.as_ref().unwrap().is_idle());
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
        // The range copy is freed before the export returns.
        let want = i64::from(alloc != Alloc::RangeCopy);
        assert_eq!(live, want, "{alloc}");
    }
    s.unmap(m);
    s.detach(att).unwrap();
    s.close_fd(buf).unwrap();
    assert_eq!(s.counters().ledger, Ledger::default());
}
