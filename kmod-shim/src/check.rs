//! The one invariant checker tests, property tests and fuzzers share (no C
//! file: it states what the kernel objects must satisfy).

use std::fmt;

use crate::dma_buf_mapping::MapPath;
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
    for (id, buf) in shim.dma_bufs() {
        want.alloc(Alloc::Priv);
        want.alloc(Alloc::PhysVec);
        want.alloc(Alloc::DmaBufFile);
        let listed = shim.device().dmabufs().filter(|&d| d == id).count();
        if listed != usize::from(buf.vdev) {
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
    for (alloc, expected) in want.entries() {
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
            let Some(pv) = phys.get(r) else {
                return Err(Violation::Walk { mapping: mid, at, want: 0, got: Some(addr) });
            };
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
    if r != phys.len() {
        let want = phys.get(r).map_or(0, |p| p.paddr + off);
        return Err(Violation::Walk { mapping: mid, at, want, got: None });
    }
    Ok(())
}
