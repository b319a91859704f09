//! The claims, as functions that panic with the broken claim's name.

use kmod_shim::{
    calc_sg_nents, check_invariants, max_sg_ent_sz, Anomaly, AttachError, Device, DmaBufId, DmaOps, Errno, ExportError,
    FaultPlan, FaultSite, Fidelity, ImporterDesc, ImporterId, IommufdError, MapError, MapPath, P2pMapType, Policy,
    Reject, Shim, Violation,
};
use uapi::{DeviceFeatureDmaBufSingle, DmaRange, Request};
use validator::{validate, Outcome, O_ACCMODE, O_CLOEXEC, STRICT_MAX_NR_RANGES};

use crate::fixtures::{config, shim_with, SG_CAP};
use uapi::OwnedRequest;

use crate::{check_order, well_formed};

/// Panics if the shim breaks an invariant of [`check_invariants`]. In
/// Kernel mode the documented IOVA leak of the kernel's unwind
/// (`kmod_shim::DEFECTS`, defects 2 and 3) is expected, and the checker reports
/// it before anything else, so nothing more is checked once it happened.
#[track_caller]
pub fn ok(s: &Shim, what: impl std::fmt::Display) {
    match check_invariants(s) {
        Ok(()) => {}
        Err(Violation::Anomaly(Anomaly::IovaLeak { .. })) if s.config().fidelity.is_kernel() => {}
        Err(v) => panic!("invariant violated ({what}): {v:?}"),
    }
}

/// Strict within Linux: Strict never accepts what Linux rejects, accepts
/// with the identical dma-buf what it accepts, and every Strict rejection of
/// a request Linux accepts (or rejects differently) is a `Strict*` rule whose
/// documented condition holds.
pub fn strict_within_linux(req: &Request<'_>, dev: &Device) {
    strict_within_linux_given(req, dev, &validate(req, dev, Policy::Linux));
}

/// [`strict_within_linux`], given the Linux verdict `l` on `req` (for a
/// caller that has it already).
pub fn strict_within_linux_given(req: &Request<'_>, dev: &Device, l: &Result<Outcome, Reject>) {
    let l = *l;
    let s = validate(req, dev, Policy::Strict);
    match (&l, &s) {
        (_, Ok(_)) => assert_eq!(l, s, "Strict accepted what Linux answers differently"),
        (Err(a), Err(b)) if a == b => {}
        (_, Err(r)) => {
            assert!(r.is_strict_only(), "Strict's {r:?} differs from Linux's {l:?} but is not a Strict rule");
            assert!(strict_rule_holds(req, dev, r), "Strict's {r:?}: its documented condition does not hold");
        }
    }
}

/// Whether the documented condition of a Strict-only rule holds for `req`,
/// computed from the rule's documentation, not from the validator.
pub fn strict_rule_holds(req: &Request<'_>, dev: &Device, r: &Reject) -> bool {
    let h = req.dma_buf;
    match *r {
        Reject::StrictOpenFlags => {
            h.open_flags & !(O_ACCMODE | O_CLOEXEC) != 0 || h.open_flags & O_ACCMODE == O_ACCMODE
        }
        Reject::StrictTooManyRanges => h.nr_ranges > STRICT_MAX_NR_RANGES,
        Reject::StrictArgszShort => (req.feature.argsz as u64).saturating_sub(8) < 16 + 16 * h.nr_ranges as u64,
        Reject::StrictRangeOutsideBar { index } => {
            let bar = dev.bars[h.region_index as usize];
            let rg = req.range(index as usize);
            (rg.offset as u128 + rg.length as u128) > bar.len as u128
        }
        _ => false,
    }
}

/// Validator and shim agree: the shim exports exactly what the validator
/// accepts (same size, same physical vectors, same BAR and flags) and
/// refuses everything else with the validator's rejection and errno.
pub fn shim_agrees_with_validator(req: &Request<'_>, dev: &Device, policy: Policy) {
    let v = validate(req, dev, policy);
    let mut s = shim_with(*dev, config(policy, Fidelity::Fixed), &[]);
    let before = s.snapshot();
    let r = s.export(req);
    match v {
        Ok(Outcome::DmaBuf(e)) => {
            let id = r.unwrap_or_else(|err| panic!("validator accepted, shim refused: {err:?}"));
            let b = s.dma_buf(id).expect("exported dma-buf is live");
            assert_eq!(b.size, e.size, "size");
            assert_eq!(b.phys_vec, e.phys_vecs().collect::<Vec<_>>(), "phys_vec");
            assert_eq!((b.region_index, b.open_flags), (e.region_index, e.open_flags));
        }
        Ok(_) => assert_eq!(r, Err(ExportError::NotAnExport)),
        Err(rej) => {
            assert_eq!(r, Err(ExportError::Rejected(rej)), "shim's refusal");
            assert_eq!(r.unwrap_err().errno(), rej.errno());
            assert_eq!(s.snapshot(), before, "a refused export changed the state");
        }
    }
    ok(&s, "after export");
}

/// What one map did: the path, the sg table and what each sg entry
/// translates to (physical address, length) for the importer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The path taken.
    pub path: MapPath,
    /// `(dma_address, dma_length)` per sg entry.
    pub pairs: Vec<(u64, u64)>,
    /// `(physical address reached, dma_length)` per sg entry.
    pub reached: Vec<(Option<u64>, u64)>,
}

/// The map result the model must give on a fresh importer, without faults:
/// the path, or the predicted error.
pub fn predict_map(s: &Shim, buf: DmaBufId, desc: &ImporterDesc) -> Result<MapPath, MapError> {
    let b = s.dma_buf(buf).expect("live");
    let page = s.device().dev.page_size.bytes();
    if b.revoked {
        return Err(MapError::Revoked);
    }
    let (path, use_iova) = match (desc.map_type, desc.dma) {
        (P2pMapType::NotSupported, _) => return Err(MapError::P2pNotSupported),
        (P2pMapType::BusAddr, _) => (MapPath::BusAddr, false),
        (P2pMapType::ThruHostBridge, DmaOps::Direct) => (MapPath::PerRange, false),
        (P2pMapType::ThruHostBridge, DmaOps::Iommu { aperture_start, aperture_end, iova_api }) => {
            let fits = b.size <= aperture_end - aperture_start;
            if iova_api && fits {
                (MapPath::IovaSpan, true)
            } else {
                let nents = calc_sg_nents(false, &b.phys_vec, b.size, page);
                if nents == 0 {
                    return Err(MapError::SgNentsOverflow);
                }
                if nents > SG_CAP {
                    return Err(MapError::NoMem);
                }
                if !fits {
                    // Per-range dma_map_phys() runs out of IOVA space at the
                    // first range that no longer fits.
                    let room = aperture_end - aperture_start;
                    let mut used = 0u64;
                    for (i, p) in b.phys_vec.iter().enumerate() {
                        if p.len > room - used {
                            return Err(MapError::MapPhys { index: i });
                        }
                        used += p.len;
                    }
                }
                (MapPath::PerRange, false)
            }
        }
    };
    let nents = calc_sg_nents(use_iova, &b.phys_vec, b.size, page);
    if nents == 0 {
        return Err(MapError::SgNentsOverflow);
    }
    if nents > SG_CAP {
        return Err(MapError::NoMem);
    }
    Ok(path)
}

/// Attaches `imp` to `buf` and maps once; checks the outcome against
/// [`predict_map`] (unless `predict` is false), that a failure leaves the
/// state as it was (Fixed mode), and the invariants.
pub fn attach_and_map(s: &mut Shim, buf: DmaBufId, imp: ImporterId, predict: bool) -> Result<Mapped, MapError> {
    let got = attach_and_map_unchecked(s, buf, imp, predict);
    ok(s, "after map");
    got
}

/// [`attach_and_map`] without the final [`check_invariants`], for callers
/// that map through several importers in a row and check once after the
/// last map: a map only adds state (an attachment, a mapping, its IOMMU's
/// translations, one `kref`), so whatever an earlier map broke is still
/// there for that check to see, and checking all live mappings after each
/// map made a sequence of n maps cost n² walks. A failed map is still
/// checked at once: against the snapshot before it (Fixed mode).
pub fn attach_and_map_unchecked(
    s: &mut Shim,
    buf: DmaBufId,
    imp: ImporterId,
    predict: bool,
) -> Result<Mapped, MapError> {
    let desc = s.importer(imp).expect("importer").desc;
    let revoked = s.dma_buf(buf).is_some_and(|b| b.revoked);
    let att = match s.attach(buf, imp) {
        Ok(a) => a,
        Err(e) => {
            let want = if !desc.peer2peer {
                AttachError::NoPeer2Peer
            } else if revoked {
                AttachError::Revoked
            } else {
                AttachError::NotRevocable
            };
            assert!(
                e == want && (want != AttachError::NotRevocable || !desc.invalidate_mappings),
                "attach of {desc:?}: {e:?}"
            );
            ok(s, "after a refused attach");
            return Err(MapError::NoSuchAttachment);
        }
    };
    let want = predict_map(s, buf, &desc);
    let fixed = s.config().fidelity == Fidelity::Fixed;
    // The snapshot is compared only after a failed map in Fixed mode; when
    // the map is predicted to succeed, a failure is already a panic below.
    let before = (fixed && !(predict && want.is_ok())).then(|| s.snapshot());
    let got = s.map(att);
    if predict {
        match (&got, &want) {
            (Ok(m), Ok(path)) => assert_eq!(s.mapping(*m).map(|x| x.path()), Some(*path), "path of {desc:?}"),
            (Err(e), Err(w)) if e == w => {}
            _ => panic!("map through {desc:?}: got {got:?}, predicted {want:?}"),
        }
    }
    if got.is_err() && fixed {
        let before = before.expect("taken for every map that may fail in Fixed mode");
        assert_eq!(s.snapshot(), before, "a failed map changed the state ({got:?})");
    }
    got.map(|m| {
        let dma = s.mapping(m).expect("live");
        let pairs = dma.sgt.pairs();
        let reached = pairs.iter().map(|&(a, l)| (s.peer_reach(imp, a).map(|p| p.0), l)).collect();
        Mapped { path: dma.path(), pairs, reached }
    })
}

/// The sg table on every path: exports `req` into a shim with `importers`,
/// and if it is accepted, maps it through each importer, checking the
/// predicted path or error and [`check_invariants`] after every step.
/// Returns the per-importer results (empty if the export was refused).
pub fn map_on_every_path(
    dev: &Device,
    req: &Request<'_>,
    policy: Policy,
    fidelity: Fidelity,
    importers: &[ImporterDesc],
) -> Vec<Result<Mapped, MapError>> {
    // Refusals are the business of shim_agrees_with_validator.
    if !matches!(validate(req, dev, policy), Ok(Outcome::DmaBuf(_))) {
        return Vec::new();
    }
    let mut s = shim_with(*dev, config(policy, fidelity), importers);
    let buf = s.export(req).expect("the shim exports what the validator accepts");
    ok(&s, "after export");
    let predict = fidelity == Fidelity::Fixed;
    // In Kernel mode a documented IOVA leak stops the checker (see `ok`),
    // so a check after the last map would not see the earlier ones: check
    // after each map there.
    let kernel = fidelity.is_kernel();
    let out = (0..importers.len())
        .map(|i| {
            if kernel {
                attach_and_map(&mut s, buf, ImporterId(i), predict)
            } else {
                attach_and_map_unchecked(&mut s, buf, ImporterId(i), predict)
            }
        })
        .collect();
    ok(&s, "after the maps");
    // Every mapping gone at once: the state returns to the dma-buf alone.
    s.close_device();
    ok(&s, "after close");
    assert_eq!(s.counters().mappings, 0);
    out
}

/// How a multi-range request with `nr_ranges == 1` may differ from the
/// single-range struct it is built from: fields the single form does not
/// have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perturb {
    /// `vfio_device_feature.argsz` (the single form's is always 40).
    pub argsz: u32,
    /// The dma-buf `flags` (the single form has none: 0).
    pub flags: u32,
    /// Readable bytes after the feature header (the single form's 32).
    pub readable: u64,
}

impl Perturb {
    /// No difference at all.
    pub const NONE: Perturb = Perturb { argsz: 40, flags: 0, readable: 32 };

    /// The checks the perturbation alone fails, under `policy`.
    pub fn rejections(&self, policy: Policy) -> Vec<Reject> {
        let mut v = Vec::new();
        if self.argsz < 8 {
            v.push(Reject::ArgszBelowFeatureHeader);
        }
        if self.argsz < 24 {
            v.push(Reject::ArgszBelowDmaBufHeader);
        }
        if self.readable < 16 {
            v.push(Reject::DmaBufHeaderFault);
        }
        if self.flags != 0 {
            v.push(Reject::NonZeroFlags);
        }
        if policy == Policy::Strict && self.argsz < 40 {
            v.push(Reject::StrictArgszShort);
        }
        if self.readable < 32 {
            v.push(Reject::RangeArrayFault);
        }
        v
    }
}

/// Single-range equivalence: `export_single(single)` and `export` of the
/// `nr_ranges = 1` request built from it (perturbed by `p`) are accepted or
/// rejected together; when both are accepted, the dma-bufs, the sg tables on
/// every path and the whole model state are identical. The verdicts differ
/// only when `p` makes the multi-range request fail a check of its own
/// (argsz below 8 or 24, dma-buf flags != 0, Strict's argsz < 40, an
/// unreadable header or range); then the multi-range rejection is the
/// earliest, in kernel check order, of the single form's rejection and the
/// perturbation's checks.
pub fn single_range_equivalence(dev: &Device, single: &DeviceFeatureDmaBufSingle, policy: Policy, p: Perturb) {
    let mut multi = OwnedRequest::from_single(single);
    multi.feature.argsz = p.argsz;
    multi.dma_buf.flags = p.flags;
    multi.readable = p.readable;
    let imps = crate::fixtures::path_importers();
    let mut a = shim_with(*dev, config(policy, Fidelity::Fixed), &imps);
    let mut b = shim_with(*dev, config(policy, Fidelity::Fixed), &imps);
    let ra = a.export_single(single);
    let rb = b.export(&multi.request());
    let own = p.rejections(policy);
    if own.is_empty() {
        assert_eq!(ra, rb, "verdicts differ without a perturbation");
    } else {
        let mut cands: Vec<Reject> = own;
        if let Err(ExportError::Rejected(r)) = ra {
            cands.push(r);
        }
        let first = *cands.iter().min_by_key(|r| check_order(r)).expect("non-empty");
        assert_eq!(rb, Err(ExportError::Rejected(first)), "perturbed verdict (single: {ra:?})");
        return;
    }
    assert_eq!(a.snapshot(), b.snapshot(), "states after export");
    let Ok(id) = ra else { return };
    let (da, db) = (a.dma_buf(id).expect("live"), b.dma_buf(id).expect("live"));
    assert_eq!(
        (da.size, &da.phys_vec, da.region_index, da.open_flags),
        (db.size, &db.phys_vec, db.region_index, db.open_flags)
    );
    for (i, d) in imps.iter().enumerate() {
        let ma = attach_and_map_unchecked(&mut a, id, ImporterId(i), true);
        let mb = attach_and_map_unchecked(&mut b, id, ImporterId(i), true);
        assert_eq!(ma, mb, "sg tables through {d:?}");
    }
    ok(&a, "single-range maps");
    ok(&b, "multi-range maps");
    assert_eq!(a.snapshot(), b.snapshot(), "states after mapping");
}

/// Decomposition: a multi-range request (flags 0, argsz and nr_ranges
/// exact, all readable) is accepted iff each range is accepted as a
/// single-range request with the same header and the combined limits hold:
/// the total length does not overflow 64 bits and has bit 63 clear, the range
/// array fits `KMALLOC_MAX_SIZE`, and (Strict) nr_ranges is at most
/// `STRICT_MAX_NR_RANGES`. In Fixed mode, on the BUS_ADDR and per-range paths
/// the multi-range sg table is the concatenation of the single-range ones
/// (translated, for per-range IOMMU mappings, whose IOVAs are allocated
/// anew); on the IOVA path it is one contiguous span of the total size,
/// while N single-range dma-bufs mapped by one importer give N separate
/// tables of one range each.
pub fn decomposition(dev: &Device, policy: Policy, region: u32, open_flags: u32, ranges: &[DmaRange]) {
    decomposition_given(dev, policy, region, open_flags, ranges, None);
}

/// [`decomposition`], given what [`map_on_every_path`] answered for the
/// multi-range request through [`crate::fixtures::path_importers`] in Fixed
/// mode if the caller already has it (the structured fuzz target computes
/// it for [`kernel_links_at_offset_zero_given`]; the function is
/// deterministic, so a second run would check nothing new).
pub fn decomposition_given(
    dev: &Device,
    policy: Policy,
    region: u32,
    open_flags: u32,
    ranges: &[DmaRange],
    multi_paths: Option<Vec<Result<Mapped, MapError>>>,
) {
    let multi = well_formed(region, open_flags, ranges);
    let singles: Vec<OwnedRequest> =
        ranges.iter().map(|r| well_formed(region, open_flags, std::slice::from_ref(r))).collect();
    let vm = validate(&multi.request(), dev, policy);
    let all_single = singles.iter().all(|s| validate(&s.request(), dev, policy).is_ok());
    let total = ranges.iter().try_fold(0u64, |t, r| t.checked_add(r.length));
    let n = ranges.len() as u64;
    let combined = total.is_some_and(|t| t >> 63 == 0)
        && n * 16 <= dev.kmalloc_max
        && (policy == Policy::Linux || n <= STRICT_MAX_NR_RANGES as u64);
    assert_eq!(
        vm.is_ok(),
        all_single && combined,
        "multi {vm:?}, all singles accepted {all_single}, limits {combined}"
    );
    if vm.is_err() {
        return;
    }
    let imps = crate::fixtures::path_importers();
    let got = multi_paths.unwrap_or_else(|| map_on_every_path(dev, &multi.request(), policy, Fidelity::Fixed, &imps));
    let per_single: Vec<Vec<Result<Mapped, MapError>>> =
        singles.iter().map(|s| map_on_every_path(dev, &s.request(), policy, Fidelity::Fixed, &imps)).collect();
    for (i, m) in got.iter().enumerate() {
        let Ok(m) = m else { continue };
        // A single-range mapping can fail (sg cap) where... no: each single
        // is part of the multi, so it is no larger; it maps too.
        let parts: Vec<&Mapped> = per_single
            .iter()
            .map(|v| v[i].as_ref().unwrap_or_else(|e| panic!("single failed ({e:?}) where multi mapped")))
            .collect();
        match m.path {
            MapPath::BusAddr => {
                let cat: Vec<_> = parts.iter().flat_map(|p| p.pairs.iter().copied()).collect();
                assert_eq!(m.pairs, cat, "BUS_ADDR sg table is the concatenation");
            }
            MapPath::PerRange => {
                let cat: Vec<_> = parts.iter().flat_map(|p| p.reached.iter().copied()).collect();
                assert_eq!(m.reached, cat, "per-range sg table is the concatenation (translated)");
                if imps[i].dma == DmaOps::Direct {
                    let cat: Vec<_> = parts.iter().flat_map(|p| p.pairs.iter().copied()).collect();
                    assert_eq!(m.pairs, cat, "dma-direct sg table is the concatenation");
                }
            }
            MapPath::IovaSpan => {
                let total = total.expect("accepted");
                let mut next = m.pairs[0].0;
                for &(a, l) in &m.pairs {
                    assert_eq!(a, next, "IOVA span is contiguous");
                    next = a + l;
                }
                assert_eq!(next - m.pairs[0].0, total, "IOVA span covers the dma-buf");
            }
        }
    }
    // N single-range dma-bufs through one IOMMU importer: N tables, each
    // covering only its own range.
    if ranges.len() >= 2 {
        let mut s = shim_with(*dev, config(policy, Fidelity::Fixed), &imps[1..2]);
        for (r, single) in ranges.iter().zip(&singles) {
            let id = s.export(&single.request()).expect("single accepted");
            if let Ok(m) = attach_and_map_unchecked(&mut s, id, ImporterId(0), true) {
                assert_eq!(m.pairs.iter().map(|p| p.1).sum::<u64>(), r.length);
            }
        }
        ok(&s, "N singles");
    }
}

/// The kernel links every range of an IOVA-path mapping at offset 0: with
/// `Fidelity::Kernel` (Linux 7.2.13, whose `dma-buf-mapping.c:159` still
/// passes 0), mapping an accepted dma-buf of two or more ranges
/// through an IOMMU with the IOVA API fails at range 1 with the IOMMU
/// driver's collision errno (EADDRINUSE on VT-d, EEXIST on io-pgtable-arm) and
/// leaves the state as it was; with one range, and on every other path, the
/// result is the same as in Fixed mode.
pub fn kernel_links_at_offset_zero(dev: &Device, req: &Request<'_>, policy: Policy) {
    let imps = crate::fixtures::path_importers();
    let fixed = map_on_every_path(dev, req, policy, Fidelity::Fixed, &imps);
    kernel_links_at_offset_zero_given(dev, req, policy, &fixed);
}

/// [`kernel_links_at_offset_zero`], given the Fixed-mode answer of
/// [`map_on_every_path`] for `req` through
/// [`crate::fixtures::path_importers`] (which the structured fuzz target
/// shares with [`decomposition_given`]).
pub fn kernel_links_at_offset_zero_given(
    dev: &Device,
    req: &Request<'_>,
    policy: Policy,
    fixed: &[Result<Mapped, MapError>],
) {
    let imps = crate::fixtures::path_importers();
    let kernel = map_on_every_path(dev, req, policy, Fidelity::Kernel, &imps);
    assert_eq!(fixed.len(), kernel.len());
    let nr = req.dma_buf.nr_ranges;
    for (i, (f, k)) in fixed.iter().zip(&kernel).enumerate() {
        let iova = matches!(f, Ok(m) if m.path == MapPath::IovaSpan);
        if iova && nr >= 2 {
            // The IOMMU driver's answer to a present PTE: EADDRINUSE
            // on VT-d's generic page table, measured by the kernel lab
            // (FINDINGS.md F1), or EEXIST on io-pgtable-arm.
            assert!(
                matches!(k, Err(MapError::IovaLink { index: 1, errno }) if is_collision(*errno)),
                "importer {i}: Kernel mode gave {k:?}, expected a PTE collision at range 1"
            );
        } else {
            assert_eq!(f, k, "importer {i}: Kernel and Fixed differ off the multi-range IOVA path");
        }
    }
    // State after the failed kernel map: checked inside (snapshot equality
    // is only asserted in Fixed mode), so check here that nothing leaked.
    let mut s = shim_with(*dev, config(policy, Fidelity::Kernel), &imps[1..2]);
    if let Ok(buf) = s.export(req) {
        let att = s.attach(buf, ImporterId(0)).expect("attach");
        let before = s.snapshot();
        if let Err(MapError::IovaLink { errno, .. }) = s.map(att) {
            assert!(is_collision(errno));
            assert_eq!(s.snapshot(), before, "Kernel-mode collision unwind changed the state");
        }
        ok(&s, "Kernel mode");
    }
}

/// Whether `e` is an IOMMU driver's answer to mapping over a present PTE:
/// `EEXIST` (io-pgtable-arm) or `EADDRINUSE` (VT-d generic_pt).
pub fn is_collision(e: Errno) -> bool {
    matches!(e, Errno::EEXIST | Errno::EADDRINUSE)
}

/// How a dma-buf is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    /// `PCI_COMMAND` memory bit cleared.
    MemoryDisable,
    /// `VFIO_DEVICE_RESET` with memory decoding on: revoke, then restore.
    Reset,
    /// `VFIO_DEVICE_RESET` after memory decoding was turned off.
    ResetWhileDisabled,
    /// The user closes the device.
    Close,
}

/// Revocation: after `how`, no mapping is left, no IOMMU importer can reach
/// any byte through one (BUS_ADDR and dma-direct importers still reach the
/// BAR by bus/physical address whenever it decodes memory, as documented),
/// maps and attaches of a
/// revoked dma-buf fail with ENODEV, restoring memory decoding makes maps
/// work again (walking the same bytes), and close revokes for good. The
/// claim is unchanged by the 7.2.13 model; its mechanism is now 7.2.13's:
/// a revocation drains one `kref` per mapping (lazy importers are waited
/// for), and close goes through the same revoke path
/// (`vfio_pci_dma_buf_cleanup()` → `vfio_pci_dma_buf_move(vdev, true)`)
/// instead of notifying every dma-buf itself.
pub fn revoke(dev: &Device, req: &Request<'_>, how: Revoke, maps: u8) {
    let imps = crate::fixtures::all_importers();
    let mut s = shim_with(*dev, config(Policy::Linux, Fidelity::Fixed), &imps);
    let Ok(buf) = s.export(req) else { return };
    let mut atts = Vec::new();
    let mut seen: Vec<(ImporterId, u64, u64)> = Vec::new();
    for i in 0..imps.len() {
        let Ok(att) = s.attach(buf, ImporterId(i)) else { continue };
        atts.push((ImporterId(i), att));
        for _ in 0..maps.max(1) {
            if let Ok(m) = s.map(att) {
                for (a, l) in s.sg_table(m).expect("live").pairs() {
                    seen.push((ImporterId(i), a, l));
                }
            }
        }
        ok(&s, "mapped");
    }
    let before = s.clone();
    match how {
        Revoke::MemoryDisable => s.set_memory_enabled(false),
        Revoke::Reset => s.reset(),
        Revoke::ResetWhileDisabled => {
            s.set_memory_enabled(false);
            s.reset();
        }
        Revoke::Close => s.close_device(),
    }
    ok(&s, "after revoke");
    assert_eq!(s.counters().mappings, 0, "{how:?} returned with mappings live");
    let mut bus_or_direct = Vec::new();
    for &(imp, a, _) in &seen {
        let d = s.importer(imp).expect("importer").desc;
        let reach = s.peer_reach(imp, a);
        match (d.map_type, d.dma) {
            (P2pMapType::BusAddr, _) | (P2pMapType::ThruHostBridge, DmaOps::Direct) => {
                // Documented: nothing to tear down on these paths; only a
                // BAR whose memory decoding is off answers nothing
                // (kernel lab F3).
                let decoding_off = matches!(how, Revoke::MemoryDisable | Revoke::ResetWhileDisabled);
                assert!(
                    reach == before.peer_reach(imp, a) || decoding_off && reach.is_none(),
                    "{d:?} reach of {a:#x} after {how:?}: {reach:?}"
                );
                bus_or_direct.push((imp, a, before.peer_reach(imp, a)));
            }
            _ => assert_eq!(reach, None, "{d:?} still reaches {a:#x} after {how:?}"),
        }
    }
    for (imp, _) in s.importers() {
        if let Some(io) = &s.importer(imp).expect("importer").iommu {
            assert!(io.is_idle(), "IOMMU of {imp:?} not idle after {how:?}");
        }
    }
    let revoked = how != Revoke::Reset;
    assert_eq!(s.dma_buf(buf).expect("live").revoked, revoked);
    for &(imp, att) in atts.iter().filter(|_| revoked) {
        let r = s.map(att);
        {
            assert_eq!(r, Err(MapError::Revoked), "map of a revoked dma-buf");
            assert_eq!(MapError::Revoked.errno(), Errno::ENODEV);
            let again = s.attach(buf, imp);
            if s.importer(imp).expect("importer").desc.peer2peer {
                assert_eq!(again, Err(AttachError::Revoked));
            }
        }
        ok(&s, "map after revoke");
    }
    // Restore.
    match how {
        Revoke::MemoryDisable | Revoke::ResetWhileDisabled => s.set_memory_enabled(true),
        Revoke::Reset => {}
        Revoke::Close => {
            s.open_device();
            s.set_memory_enabled(true);
            s.reset();
        }
    }
    ok(&s, "after restore");
    // With decoding back on, the surviving BUS_ADDR / dma-direct addresses
    // reach the BAR again, exactly as before (the documented fact).
    for &(imp, a, was) in &bus_or_direct {
        assert_eq!(s.peer_reach(imp, a), was, "BUS_ADDR/dma-direct reach after restore");
    }
    assert_eq!(s.dma_buf(buf).expect("live").revoked, how == Revoke::Close, "restore");
    if how != Revoke::Close {
        for &(imp, att) in &atts {
            // Revocation freed every IOVA: each first map after the restore
            // behaves as on a fresh importer.
            let want = predict_map(&s, buf, &s.importer(imp).expect("importer").desc);
            let got = s.map(att).map(|m| s.mapping(m).expect("live").path());
            assert_eq!(got, want, "map after restore through {imp:?}");
            ok(&s, "map after restore");
        }
    }
}

/// iommufd as an importer (Linux 7.2.13's `vfio_pci_dma_buf_iommufd_map()`;
/// the one-range and two-range answers were measured by the kernel lab's
/// selftest): `IOMMU_IOAS_MAP_FILE` of an accepted dma-buf's whole length
/// maps iff the dma-buf has exactly one range, and is EOPNOTSUPP otherwise,
/// leaving the state as it was; a mapped area translates its first and last
/// page to the dma-buf's bytes; memory disable cuts the translation and a
/// new MAP_FILE is ENODEV until memory is back; UNMAP leaves the IOAS idle.
pub fn iommufd_maps_one_range_only(dev: &Device, req: &Request<'_>) {
    let mut s = shim_with(*dev, config(Policy::Linux, Fidelity::Kernel), &[]);
    let Ok(buf) = s.export(req) else { return };
    let ioas = s.iommufd_ioas_alloc(crate::fixtures::APERTURE.0, crate::fixtures::APERTURE.1);
    let b = s.dma_buf(buf).expect("live").clone();
    let before = s.snapshot();
    let r = s.iommufd_map_file(ioas, buf, 0, b.size);
    if b.nr_ranges() != 1 {
        assert_eq!(r, Err(IommufdError::IommufdMap(Errno::EOPNOTSUPP)), "{} ranges", b.nr_ranges());
        assert_eq!(s.snapshot(), before, "a refused MAP_FILE changed the state");
        ok(&s, "refused MAP_FILE");
        return;
    }
    let area = r.unwrap_or_else(|e| panic!("one-range dma-buf of {:#x} bytes: {e:?}", b.size));
    let p = *s.iopt_pages(area).expect("live area");
    let page = dev.page_size.bytes();
    let io = &s.ioas(ioas).expect("ioas").domain;
    assert_eq!(io.translate(p.iova), Some((b.phys_vec[0].paddr, b.size)), "first page");
    let last = b.size - page;
    assert_eq!(io.translate(p.iova + last).map(|t| t.0), Some(b.phys_vec[0].paddr + last), "last page");
    ok(&s, "MAP_FILE");
    s.set_memory_enabled(false);
    assert_eq!(s.ioas(ioas).expect("ioas").domain.translate(p.iova), None, "revoked area still translated");
    assert_eq!(s.iommufd_map_file(ioas, buf, 0, b.size).map_err(|e| e.errno()), Err(Errno::ENODEV));
    ok(&s, "revoked");
    s.set_memory_enabled(true);
    s.iommufd_unmap(area).expect("the area is live");
    assert!(s.ioas(ioas).expect("ioas").domain.is_idle(), "UNMAP left IOVA behind");
    ok(&s, "UNMAP");
}

/// Faults: with `plan` armed (Fixed mode), exporting `req`, attaching
/// `desc` and mapping either all succeed, or the first call that fails
/// fails with the fault's errno (or the request's own rejection) and leaves
/// the state exactly as it was before that call. An `IovaAlloc` fault is
/// not an error: the map falls back to per-range.
///
/// The plan must also fire, exactly when the unfaulted run makes at least
/// `step + 1` calls at its site, and the call it fires in must fail with
/// that site's error: without this, a plan that never fires passes every
/// check above (nothing fails, so nothing needs to be unchanged).
pub fn fault_leaves_state(dev: &Device, req: &Request<'_>, policy: Policy, desc: ImporterDesc, plan: FaultPlan) {
    let mut s = shim_with(*dev, config(policy, Fidelity::Fixed), &[desc]);
    let calls = {
        let mut dry = s.clone();
        dry.arm_fault(None);
        if let Ok(att) = dry.export(req).map(|buf| dry.attach(buf, ImporterId(0))) {
            let _ = att.map(|a| dry.map(a));
        }
        dry.fault_calls(plan.site)
    };
    let must_fire = (plan.step < calls).then_some(plan);
    let verdict = validate(req, dev, policy);
    s.arm_fault(Some(plan));
    let before = s.snapshot();
    let buf = match s.export(req) {
        Ok(b) => b,
        Err(e) => {
            assert_eq!(s.snapshot(), before, "failed export ({e:?}) changed the state");
            match (s.fault_fired(), e) {
                (Some(p), ExportError::FdInstall) => assert_eq!(p.site, FaultSite::DmaBufFd),
                (Some(p), e) if e.errno() == Errno::ENOMEM => assert_eq!(p.site, FaultSite::Alloc),
                (None, ExportError::Rejected(r)) => assert_eq!(verdict, Err(r)),
                (None, ExportError::NotAnExport) => {
                    assert!(matches!(verdict, Ok(o) if !matches!(o, Outcome::DmaBuf(_))))
                }
                (f, e) => panic!("export failed with {e:?}, fault {f:?}"),
            }
            assert_eq!(s.fault_fired(), must_fire, "failed export: which fault fired");
            ok(&s, "failed export");
            return;
        }
    };
    assert!(matches!(verdict, Ok(Outcome::DmaBuf(_))), "export succeeded where the validator says {verdict:?}");
    assert_eq!(s.fault_fired(), None, "export succeeded although {:?} fired in it", s.fault_fired());
    let before = s.snapshot();
    let att = match s.attach(buf, ImporterId(0)) {
        Ok(a) => a,
        Err(e) => {
            assert_eq!(s.snapshot(), before, "failed attach ({e:?}) changed the state");
            match s.fault_fired() {
                Some(p) => assert_eq!((p.site, e), (FaultSite::Alloc, AttachError::NoMem)),
                None => assert_ne!(e, AttachError::NoMem, "attach out of memory without a fault"),
            }
            assert_eq!(s.fault_fired(), must_fire, "failed attach: which fault fired");
            ok(&s, "failed attach");
            return;
        }
    };
    assert_eq!(s.fault_fired(), None, "attach succeeded although {:?} fired in it", s.fault_fired());
    let before = s.snapshot();
    let want = predict_map(&s, buf, &desc);
    match s.map(att) {
        Ok(m) => {
            let path = s.mapping(m).expect("live").path();
            match s.fault_fired() {
                Some(p) => {
                    assert_eq!(p.site, FaultSite::IovaAlloc, "map succeeded although {p:?} fired in it");
                    assert_eq!(path, MapPath::PerRange, "IovaAlloc fault falls back to per-range");
                }
                None => assert_eq!(Ok(path), want, "unfaulted map"),
            }
        }
        Err(e) => {
            assert_eq!(s.snapshot(), before, "failed map ({e:?}) changed the state");
            match s.fault_fired().map(|p| p.site) {
                None => assert_eq!(Err(e), want, "unfaulted map failed"),
                // The error each site's call returns in dma_buf_phys_vec_to_sgt()
                // (drivers/dma-buf/dma-buf-mapping.c, 7.2): kzalloc() and
                // sg_alloc_table() ENOMEM, dma_iova_link()'s errno,
                // dma_map_phys()'s DMA_MAPPING_ERROR, dma_iova_sync()'s errno.
                Some(FaultSite::Alloc) => assert_eq!(e, MapError::NoMem),
                Some(FaultSite::IovaLink) => {
                    assert!(matches!(e, MapError::IovaLink { errno: Errno::ENOMEM, .. }), "IovaLink fault gave {e:?}")
                }
                Some(FaultSite::MapPhys) => assert!(matches!(e, MapError::MapPhys { .. }), "MapPhys fault gave {e:?}"),
                Some(FaultSite::IovaSync) => assert_eq!(e, MapError::IovaSync),
                // Not an error: dma_iova_try_alloc() said no, so the map went
                // per range and failed there on its own.
                Some(FaultSite::IovaAlloc) => {
                    assert_eq!(Err(e), predict_map(&s, buf, &desc.without_iova_api()), "per-range after IovaAlloc")
                }
                Some(site) => panic!("map failed with {e:?} after a fault at {site:?}"),
            }
        }
    }
    assert_eq!(s.fault_fired(), must_fire, "after map: which fault fired");
    ok(&s, "after map");
}

/// The page size's largest sg entry, re-exported for strategies.
pub fn max_sg(page: u64) -> u64 {
    max_sg_ent_sz(page)
}
