//! The one invariant checker tests, property tests and fuzzers share (no C
//! file: it states what the kernel objects must satisfy).

use std::fmt;

use crate::dma_buf_mapping::MapPath;
use crate::iommufd::io_pagetable::IoasId;
use crate::sg::max_sg_ent_sz;
use crate::state::{Alloc, Anomaly, DmaBufId, ImporterId, Ledger, MappingId};
use crate::Shim;

/// A broken invariant: which one, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An sg entry of a live mapping is empty, not page-aligned (address or
    /// length), or longer than `MAX_SG_ENT_SZ`.
    SgEntry {
        /// The mapping.
        mapping: MappingId,
        /// The entry.
        index: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The sg lengths of a mapping do not sum to the dma-buf's size.
    SgSize {
        /// The mapping.
        mapping: MappingId,
        /// Sum of the entries.
        sum: u64,
        /// The dma-buf's size.
        size: u64,
    },
    /// Translating the sg table does not walk the requested BAR bytes in
    /// request order.
    Walk {
        /// The mapping.
        mapping: MappingId,
        /// Byte offset into the dma-buf where the walk went wrong.
        at: u64,
        /// The physical address the request says.
        want: u64,
        /// What the peer reaches (`None`: nothing).
        got: Option<u64>,
    },
    /// A revoked dma-buf still has a mapping.
    RevokedButMapped {
        /// The dma-buf.
        dmabuf: DmaBufId,
    },
    /// An importer's IOMMU holds translations or IOVA space that no live
    /// mapping accounts for (a leak), or fewer than they need.
    IommuAccounting {
        /// The importer.
        importer: ImporterId,
        /// Bytes translated.
        mapped: u64,
        /// Bytes of IOVA allocated.
        allocated: u64,
        /// Bytes the live mappings account for.
        expected: u64,
    },
    /// An IOMMU's own invariants ([`crate::Iommu::check`]).
    Iommu {
        /// The importer.
        importer: ImporterId,
        /// The message.
        what: String,
    },
    /// Live allocations of one kind differ from what the live objects hold.
    Ledger {
        /// The kind.
        alloc: Alloc,
        /// Allocations the live objects account for.
        expected: i64,
        /// Allocations counted.
        actual: i64,
    },
    /// Registrations differ from the dma-bufs that still have a device.
    Registrations {
        /// Expected.
        expected: i64,
        /// Counted.
        actual: i64,
    },
    /// A dma-buf's `kref` is not one plus its live mappings.
    Kref {
        /// The dma-buf.
        dmabuf: DmaBufId,
        /// One plus the live mappings.
        expected: u32,
        /// `priv->kref`.
        actual: u32,
    },
    /// An IOAS's domain holds what its iommufd areas do not account for,
    /// translates an area wrongly, or an area of a revoked dma-buf still
    /// has its range.
    Ioas {
        /// The IOAS.
        ioas: IoasId,
        /// What is wrong.
        what: String,
    },
    /// `vdev->dmabufs` and the dma-bufs' `vdev` disagree.
    List {
        /// The dma-buf.
        dmabuf: DmaBufId,
    },
    /// The kernel-faithful mode did something the kernel must not do.
    Anomaly(Anomaly),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::SgEntry { mapping, index, what } => write!(f, "mapping {}: sg entry {index} {what}", mapping.0),
            Violation::SgSize { mapping, sum, size } => {
                write!(f, "mapping {}: sg entries sum to {sum:#x}, dma-buf size {size:#x}", mapping.0)
            }
            Violation::Walk { mapping, at, want, got } => {
                write!(f, "mapping {}: at byte {at:#x} the peer reaches {got:x?}, not {want:#x}", mapping.0)
            }
            Violation::RevokedButMapped { dmabuf } => write!(f, "dma-buf {} is revoked but mapped", dmabuf.0),
            Violation::IommuAccounting { importer, mapped, allocated, expected } => write!(
                f,
                "importer {}: IOMMU maps {mapped:#x} and allocates {allocated:#x} bytes, mappings account for {expected:#x}",
                importer.0
            ),
            Violation::Iommu { importer, what } => write!(f, "importer {}: {what}", importer.0),
            Violation::Ledger { alloc, expected, actual } => {
                write!(f, "{actual} live allocations of {alloc}, the live objects hold {expected}")
            }
            Violation::Registrations { expected, actual } => {
                write!(f, "{actual} registrations held, the listed dma-bufs hold {expected}")
            }
            Violation::Kref { dmabuf, expected, actual } => {
                write!(f, "dma-buf {}: kref {actual}, one plus its mappings is {expected}", dmabuf.0)
            }
            Violation::Ioas { ioas, what } => write!(f, "IOAS {}: {what}", ioas.0),
            Violation::List { dmabuf } => write!(f, "vdev->dmabufs and dma-buf {} disagree", dmabuf.0),
            Violation::Anomaly(a) => write!(f, "kernel-faithful anomaly: {a}"),
        }
    }
}

impl std::error::Error for Violation {}

/// Checks every invariant of the model; the first violation found.
///
/// - every sg entry of every live mapping is non-empty, page-aligned and at
///   most `MAX_SG_ENT_SZ` long, and the lengths sum to the dma-buf's size;
/// - translating each sg table (bus offset, IOMMU page table, or identity:
///   [`Shim::dma_translate`], not the decode-aware [`Shim::peer_reach`])
///   walks exactly the dma-buf's physical vectors, in request order;
/// - a revoked dma-buf has no mapping;
/// - every IOMMU satisfies its own invariants and holds exactly what the
///   live mappings account for: nothing mapped after unmap or revoke,
///   nothing leaked after a fault;
/// - every dma-buf's `kref` is one plus its live mappings (what
///   revocation waits on);
/// - every iommufd area translates its dma-buf's range unless revoked,
///   and each IOAS's domain holds exactly what its areas account for;
/// - live allocations and registrations match the live objects, and the
///   device's list holds exactly the dma-bufs that still have the device;
/// - no anomaly was recorded.
pub fn check_invariants(shim: &Shim) -> Result<(), Violation> {
    if let Some(a) = shim.anomalies().first() {
        return Err(Violation::Anomaly(*a));
    }
    let page = shim.device().dev.page_size.bytes();
    let max = max_sg_ent_sz(page);
    let mut want = Ledger::default();
    let mut regs = 0i64;
    // Per dma-buf slot: how often `vdev->dmabufs` lists it, and its live
    // mappings. One pass each instead of one scan per dma-buf: the checker
    // runs after every step of every oracle, so it must stay linear.
    // One allocation for both: (times listed, live mappings).
    let mut per_buf = vec![(0usize, 0u32); shim.dmabufs.len()];
    for d in shim.device().dmabufs() {
        if shim.dma_buf(d).is_none() {
            continue;
        }
        per_buf[d.0].0 += 1;
    }
    for (id, buf) in shim.dma_bufs() {
        want.alloc(Alloc::Priv);
        want.alloc(Alloc::PhysVec);
        want.alloc(Alloc::DmaBufFile);
        if per_buf[id.0].0 != usize::from(buf.vdev) {
            return Err(Violation::List { dmabuf: id });
        }
        regs += i64::from(buf.vdev);
    }
    for d in shim.device().dmabufs() {
        if shim.dma_buf(d).is_none() {
            return Err(Violation::List { dmabuf: d });
        }
    }
    let mut expected_iommu: Vec<u64> = shim.importers().map(|_| 0).collect();
    for (mid, m) in shim.mappings() {
        want.alloc(Alloc::DmaBufDma);
        want.alloc(Alloc::SgTable);
        if m.state.is_some() {
            want.alloc(Alloc::IovaState);
        }
        if m.path() == MapPath::IovaSpan {
            want.alloc(Alloc::IovaSpan);
        }
        let att = shim.attachment(m.attachment).expect("a mapping's attachment is live");
        let buf = shim.dma_buf(att.dmabuf).expect("an attachment's dma-buf is live");
        per_buf[att.dmabuf.0].1 += 1;
        if buf.revoked {
            return Err(Violation::RevokedButMapped { dmabuf: att.dmabuf });
        }
        if m.path() != MapPath::BusAddr && shim.importer(att.importer).is_some_and(|i| i.iommu.is_some()) {
            expected_iommu[att.importer.0] += m.size;
        }
        let mut sum = 0u64;
        for (index, e) in m.sgt.entries.iter().enumerate() {
            let len = e.dma_length as u64;
            let what = if len == 0 {
                Some("empty")
            } else if (e.dma_address | len) & (page - 1) != 0 {
                Some("not page-aligned")
            } else if len > max {
                Some("longer than MAX_SG_ENT_SZ")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(Violation::SgEntry { mapping: mid, index, what });
            }
            sum += len;
        }
        if sum != buf.size {
            return Err(Violation::SgSize { mapping: mid, sum, size: buf.size });
        }
        walk(shim, mid, att.importer, &buf.phys_vec, &m.sgt.entries)?;
    }
    for (id, buf) in shim.dma_bufs() {
        let expected = 1 + per_buf[id.0].1;
        if buf.kref() != expected {
            return Err(Violation::Kref { dmabuf: id, expected, actual: buf.kref() });
        }
    }
    check_iommufd(shim, &mut want)?;
    want.add(Alloc::Attachment, shim.counters().attachments as i64);
    for (iid, imp) in shim.importers() {
        let Some(iommu) = &imp.iommu else { continue };
        iommu.check().map_err(|what| Violation::Iommu { importer: iid, what })?;
        let (mapped, allocated) = (iommu.mapped_bytes(), iommu.allocated_bytes());
        let expected = expected_iommu[iid.0];
        if mapped != expected || allocated != expected {
            return Err(Violation::IommuAccounting { importer: iid, mapped, allocated, expected });
        }
    }
    let c = shim.counters();
    // A slice walk, not `Ledger::entries()`: the array iterator behind it
    // costs more than the comparisons in an instrumented fuzz build.
    for &alloc in &Alloc::ALL {
        let expected = want.live(alloc);
        let actual = c.ledger.live(alloc);
        if actual != expected {
            return Err(Violation::Ledger { alloc, expected, actual });
        }
    }
    if c.registrations != regs {
        return Err(Violation::Registrations { expected: regs, actual: c.registrations });
    }
    Ok(())
}

/// The iommufd side: every live area's dma-buf is live and lists it; a
/// revoked dma-buf's areas have no range and translate nothing; the others
/// translate their bytes to the dma-buf's range; each IOAS's domain maps
/// exactly the unrevoked areas and reserves exactly all of them.
fn check_iommufd(shim: &Shim, want: &mut Ledger) -> Result<(), Violation> {
    let mut mapped: Vec<u64> = shim.ioases().map(|_| 0).collect();
    let mut reserved = mapped.clone();
    for (area, p) in shim.iopt_areas() {
        want.alloc(Alloc::IoptPages);
        let bad = |what: String| Violation::Ioas { ioas: p.ioas, what };
        let buf = shim.dma_buf(p.dmabuf).ok_or_else(|| bad(format!("area {} of a released dma-buf", area.0)))?;
        if !buf.iommufd.contains(&area.0) {
            return Err(bad(format!("area {} not attached to its dma-buf", area.0)));
        }
        let io = shim.ioas(p.ioas).ok_or_else(|| bad(format!("area {} in no IOAS", area.0)))?;
        *reserved.get_mut(p.ioas.0).expect("listed IOAS") += p.length;
        if buf.revoked && !p.is_revoked() {
            return Err(bad(format!("area {} keeps the range of a revoked dma-buf", area.0)));
        }
        if p.is_revoked() {
            if io.domain.translate(p.iova).is_some() {
                return Err(bad(format!("revoked area {} still translated", area.0)));
            }
            continue;
        }
        *mapped.get_mut(p.ioas.0).expect("listed IOAS") += p.length;
        if io.domain.translate(p.iova) != Some((p.phys.paddr + p.start, p.length)) {
            return Err(bad(format!("area {} does not translate to its range", area.0)));
        }
    }
    for (id, io) in shim.ioases() {
        io.domain.check().map_err(|what| Violation::Ioas { ioas: id, what })?;
        let (m, r) = (mapped[id.0], reserved[id.0]);
        if io.domain.mapped_bytes() != m || io.domain.allocated_bytes() != r {
            let what = format!(
                "domain maps {:#x} and reserves {:#x}, the areas account for {m:#x} and {r:#x}",
                io.domain.mapped_bytes(),
                io.domain.allocated_bytes()
            );
            return Err(Violation::Ioas { ioas: id, what });
        }
    }
    Ok(())
}

/// Walks the sg table through the importer's translation
/// ([`Shim::dma_translate`]: bus offset, IOMMU page table or identity) and
/// compares it, byte run by byte run, with the physical vectors. Translation
/// only, on purpose: whether the device decodes the BAR (`PCI_COMMAND`
/// memory bit, [`Shim::peer_reach`]) is a property of the device, not of
/// the mapping, and is kept out of this check.
fn walk(
    shim: &Shim,
    mid: MappingId,
    importer: ImporterId,
    phys: &[validator::PhysVec],
    entries: &[crate::SgEntry],
) -> Result<(), Violation> {
    let mut r = 0usize;
    let mut off = 0u64;
    let mut at = 0u64;
    for e in entries {
        let mut addr = e.dma_address;
        let mut left = e.dma_length as u64;
        while left != 0 {
            // The sg lengths sum to the dma-buf's size (checked before the
            // walk), which is the sum of the non-empty phys_vec lengths: the
            // walk runs out of sg bytes exactly when it runs out of vectors.
            let pv = &phys[r];
            let want = pv.paddr + off;
            let got = shim.dma_translate(importer, addr);
            let Some((_, run)) = got.filter(|(p, _)| *p == want) else {
                return Err(Violation::Walk { mapping: mid, at, want, got: got.map(|g| g.0) });
            };
            let step = run.min(left).min(pv.len - off);
            addr += step;
            left -= step;
            off += step;
            at += step;
            if off == pv.len {
                r += 1;
                off = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bar, Config, Device, PageSize};

    /// The iommufd checks can fail: a translation left behind a revoked
    /// area, and a domain holding more than its areas.
    #[test]
    fn checker_catches_iommufd_drift() {
        let dev = Device::new(PageSize::K4).with_bar(2, Bar::mmio(0xfd00_0000, 1 << 24));
        let mut s = Shim::new(dev, Config::default());
        let ioas = s.iommufd_ioas_alloc(1 << 32, 1 << 40);
        let bytes = uapi::RequestBuilder::new().region_index(2).range(0, 0x2000).encode().expect("encodable");
        let req = uapi::Request::decode(&bytes).expect("decodable");
        let buf = s.export(&req).expect("export");
        let area = s.iommufd_map_file(ioas, buf, 0, 0x2000).expect("map");
        assert_eq!(check_invariants(&s), Ok(()));
        let mut u = s.clone();
        if let Some(b) = u.dmabufs[buf.0].as_mut() {
            b.kref = 5;
        }
        assert_eq!(check_invariants(&u), Err(Violation::Kref { dmabuf: buf, expected: 1, actual: 5 }));
        let iova = s.iopt_pages(area).expect("area").iova;
        let mut t = s.clone();
        t.ioas[ioas.0].domain.unmap(iova, 0x1000);
        assert!(matches!(check_invariants(&t), Err(Violation::Ioas { .. })));
        s.set_memory_enabled(false);
        assert_eq!(check_invariants(&s), Ok(()));
        let stale = s.iopt_pages(area).expect("area").phys;
        s.ioas[ioas.0].domain.map(iova, stale.paddr, 0x1000).expect("remap behind the model's back");
        assert!(matches!(check_invariants(&s), Err(Violation::Ioas { .. })));
    }
}
