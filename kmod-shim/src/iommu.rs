//! `drivers/iommu/iova.c` and `drivers/iommu/dma-iommu.c` (plus the
//! driver's page table, `drivers/iommu/generic_pt/` or `io-pgtable-arm.c`):
//! an importer's IOMMU domain, an IOVA allocator over an aperture and a page
//! table from IOVA to physical address, both kept as interval maps so that an
//! 8 GiB mapping costs one record, not two million PTEs.

use std::collections::{BTreeMap, VecDeque};

/// Which IOMMU driver's page-table code the domain models: it decides what
/// `iommu_map()` answers when part of the range is already translated (the
/// kernel-faithful IOVA-offset-0 collision, defect 1 of [`crate::DEFECTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IommuModel {
    /// Intel VT-d on the generic page table (`CONFIG_IOMMU_PT_VTDSS`):
    /// `map_pages()` → `__map_range()` / `__map_single_page()` /
    /// `__map_range_leaf()` in `drivers/iommu/generic_pt/iommu_pt.h` refuse a
    /// present entry with `-EADDRINUSE`. The default: the one the kernel lab
    /// measured (7.2.13 and 7.3.4 under QEMU `-device intel-iommu`,
    /// `kernel-lab/FINDINGS.md` F1).
    #[default]
    IntelVtd,
    /// io-pgtable-arm (SMMUv2/v3 LPAE formats): `arm_lpae_init_pte()`
    /// refuses an existing PTE with `-EEXIST` (read from the source, not
    /// measured by the lab).
    ArmLpae,
}

impl IommuModel {
    /// The errno `iommu_map()` returns for a range that is already (partly)
    /// translated.
    pub const fn collision_errno(self) -> crate::Errno {
        match self {
            IommuModel::IntelVtd => crate::Errno::EADDRINUSE,
            IommuModel::ArmLpae => crate::Errno::EEXIST,
        }
    }
}

/// One mapped extent of the page table: `len` bytes at `iova` translate to
/// `paddr..paddr + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// First IOVA of the extent.
    pub iova: u64,
    /// Length in bytes (page multiple, non-zero).
    pub len: u64,
    /// Physical address `iova` translates to.
    pub paddr: u64,
}

impl Extent {
    fn end(&self) -> u64 {
        self.iova + self.len
    }
}

/// Totals of operations, for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IommuStats {
    /// Calls of [`Iommu::map`] that installed a translation.
    pub maps: u64,
    /// Calls of [`Iommu::unmap`] with a non-zero length.
    pub unmaps: u64,
    /// Zero-length unmaps (the kernel-faithful unwind unmapping a never
    /// filled sg entry; defect 4 of [`crate::DEFECTS`]).
    pub spurious_unmaps: u64,
    /// Maps refused because the IOVA was already translated
    /// ([`IommuModel::collision_errno`]).
    pub collisions: u64,
    /// Frees of IOVA space that was not allocated.
    pub bad_frees: u64,
}

/// The state that must be identical before and after a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuSnapshot {
    /// Allocated IOVA spans (merged), start to end.
    pub allocated: Vec<(u64, u64)>,
    /// The page table.
    pub extents: Vec<Extent>,
}

/// An IOMMU domain with the DMA-API's IOVA allocator (`struct iova_domain`)
/// and its page table (`struct iommu_domain`).
///
/// Simplifications against `drivers/iommu/iova.c`: allocation is first-fit
/// bottom-up from a cursor, at page granularity, without the power-of-two
/// rounding and size alignment `iommu_dma_alloc_iova()` applies to small
/// sizes, and without the per-CPU caches.
///
/// # Invariants
/// `allocated` spans are disjoint, non-adjacent (merged), page-aligned and
/// inside the aperture; `extents` are sorted by IOVA, disjoint, non-empty;
/// every mapped extent lies inside allocated IOVA space. Checked by
/// [`Iommu::check`], which [`crate::check_invariants`] calls, except the
/// aperture, which holds by construction: only [`Iommu::alloc_iova`] adds
/// spans, always inside it, and [`Iommu::free_iova`] only shrinks them.
#[derive(Debug, Clone)]
pub struct Iommu {
    aperture_start: u64,
    aperture_end: u64,
    page: u64,
    model: IommuModel,
    cursor: u64,
    /// start -> end (exclusive). Adjacent allocations merge, so a run of
    /// per-range `dma_map_phys()` calls costs one record.
    allocated: BTreeMap<u64, u64>,
    /// Sorted by `iova`. A deque because the common patterns are "map at
    /// the end" and "unmap from the front", both O(1) here.
    extents: VecDeque<Extent>,
    stats: IommuStats,
}

impl Iommu {
    /// A domain whose IOVA aperture is `[start, end)`, both page-aligned,
    /// with the default driver model ([`IommuModel::IntelVtd`]).
    pub fn new(aperture_start: u64, aperture_end: u64, page: u64) -> Self {
        Self {
            aperture_start,
            aperture_end,
            page,
            model: IommuModel::default(),
            cursor: aperture_start,
            allocated: BTreeMap::new(),
            extents: VecDeque::new(),
            stats: IommuStats::default(),
        }
    }

    /// The same domain with another driver model.
    pub fn with_model(mut self, model: IommuModel) -> Self {
        self.model = model;
        self
    }

    /// The driver model.
    pub fn model(&self) -> IommuModel {
        self.model
    }

    /// Changes the driver model (the page table is kept).
    pub fn set_model(&mut self, model: IommuModel) {
        self.model = model;
    }

    /// Operation totals.
    pub fn stats(&self) -> IommuStats {
        self.stats
    }

    /// The aperture `[start, end)`.
    pub fn aperture(&self) -> (u64, u64) {
        (self.aperture_start, self.aperture_end)
    }

    /// The mapped extents, in IOVA order.
    pub fn extents(&self) -> impl Iterator<Item = &Extent> {
        self.extents.iter()
    }

    /// Whether nothing is mapped and no IOVA space is allocated.
    pub fn is_idle(&self) -> bool {
        self.extents.is_empty() && self.allocated.is_empty()
    }

    /// Bytes currently translated.
    pub fn mapped_bytes(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }

    /// Bytes of IOVA space currently allocated.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.iter().map(|(s, e)| e - s).sum()
    }

    /// The state a failed call must leave untouched.
    pub fn snapshot(&self) -> IommuSnapshot {
        IommuSnapshot {
            allocated: self.allocated.iter().map(|(s, e)| (*s, *e)).collect(),
            extents: self.extents.iter().copied().collect(),
        }
    }

    /// Model memory held by the domain: the deque's capacity plus an
    /// estimate of the allocator map (B-tree leaves are about half full, so
    /// twice the payload).
    pub fn model_bytes(&self) -> usize {
        self.extents.capacity() * size_of::<Extent>() + self.allocated.len() * 2 * 2 * size_of::<u64>()
    }

    fn is_free(&self, start: u64, end: u64) -> bool {
        if let Some((_, &e)) = self.allocated.range(..=start).next_back() {
            if e > start {
                return false;
            }
        }
        self.allocated.range(start..end).next().is_none()
    }

    fn insert_span(&mut self, mut start: u64, mut end: u64) {
        if let Some((&s, &e)) = self.allocated.range(..=start).next_back() {
            if e == start {
                self.allocated.remove(&s);
                start = s;
            }
        }
        if let Some(&e2) = self.allocated.get(&end) {
            self.allocated.remove(&end);
            end = e2;
        }
        self.allocated.insert(start, end);
    }

    /// `alloc_iova_fast()`: `len` bytes (page multiple, non-zero) of IOVA
    /// space, or `None` when the aperture has no hole that large.
    pub fn alloc_iova(&mut self, len: u64) -> Option<u64> {
        if len == 0 || len % self.page != 0 {
            return None;
        }
        let fits = |s: u64| s.checked_add(len).is_some_and(|e| e <= self.aperture_end);
        let start = if fits(self.cursor) && self.is_free(self.cursor, self.cursor + len) {
            self.cursor
        } else {
            // First fit over the holes between allocated spans.
            let mut candidate = self.aperture_start;
            let mut found = None;
            for (&s, &e) in &self.allocated {
                if candidate.checked_add(len).is_some_and(|end| end <= s) {
                    found = Some(candidate);
                    break;
                }
                candidate = candidate.max(e);
            }
            match found {
                Some(s) => s,
                None if fits(candidate) => candidate,
                None => return None,
            }
        };
        self.insert_span(start, start + len);
        self.cursor = start + len;
        Some(start)
    }

    /// `free_iova_fast()`: releases `[iova, iova + len)`, which must lie
    /// inside one allocated span (a piece of one is fine: the kernel's
    /// piecewise unmap of a split sg entry frees pieces). Returns false, and
    /// counts a bad free, otherwise.
    pub fn free_iova(&mut self, iova: u64, len: u64) -> bool {
        let end = match iova.checked_add(len) {
            Some(e) if len != 0 => e,
            _ => {
                self.stats.bad_frees += 1;
                return false;
            }
        };
        let Some((&s, &e)) = self.allocated.range(..=iova).next_back() else {
            self.stats.bad_frees += 1;
            return false;
        };
        if e < end {
            self.stats.bad_frees += 1;
            return false;
        }
        self.allocated.remove(&s);
        if s < iova {
            self.allocated.insert(s, iova);
        }
        if end < e {
            self.allocated.insert(end, e);
        }
        true
    }

    /// Index of the first extent that ends after `iova`.
    fn first_after(&self, iova: u64) -> usize {
        self.extents.partition_point(|x| x.end() <= iova)
    }

    /// `iommu_map()`: installs `len` bytes at `iova` to `paddr`. Refuses if
    /// any of it is already translated, with the model's errno
    /// ([`IommuModel::collision_errno`]: EADDRINUSE on VT-d, EEXIST on
    /// io-pgtable-arm), and then changes nothing (`iommu_map()` unmaps
    /// whatever it installed before the refusal, so the model's atomic
    /// refusal is the net effect).
    pub fn map(&mut self, iova: u64, paddr: u64, len: u64) -> Result<(), crate::Errno> {
        let end = iova.checked_add(len).ok_or(crate::Errno::EINVAL)?;
        if len == 0 {
            return Err(crate::Errno::EINVAL);
        }
        let i = self.first_after(iova);
        if self.extents.get(i).is_some_and(|x| x.iova < end) {
            self.stats.collisions += 1;
            return Err(self.model.collision_errno());
        }
        let ext = Extent { iova, len, paddr };
        if i == self.extents.len() {
            self.extents.push_back(ext);
        } else {
            self.extents.insert(i, ext);
        }
        self.stats.maps += 1;
        Ok(())
    }

    /// `iommu_unmap()`: removes every translation in `[iova, iova + len)`,
    /// splitting extents that straddle the edges. Returns the bytes that
    /// were translated. A zero length is counted as spurious and does
    /// nothing.
    pub fn unmap(&mut self, iova: u64, len: u64) -> u64 {
        if len == 0 {
            self.stats.spurious_unmaps += 1;
            return 0;
        }
        let end = iova.saturating_add(len);
        let mut i = self.first_after(iova);
        let mut removed = 0;
        while let Some(&x) = self.extents.get(i) {
            if x.iova >= end {
                break;
            }
            let lo = x.iova.max(iova);
            let hi = x.end().min(end);
            removed += hi - lo;
            let head = (x.iova < lo).then(|| Extent { iova: x.iova, len: lo - x.iova, paddr: x.paddr });
            let tail = (hi < x.end()).then(|| Extent { iova: hi, len: x.end() - hi, paddr: x.paddr + (hi - x.iova) });
            match (head, tail) {
                (None, None) => {
                    if i == 0 {
                        self.extents.pop_front();
                    } else {
                        self.extents.remove(i);
                    }
                }
                (Some(h), None) => {
                    self.extents[i] = h;
                    i += 1;
                }
                (None, Some(t)) => {
                    self.extents[i] = t;
                    break; // The tail starts at `end`: no extent after it is in the range.
                }
                (Some(h), Some(t)) => {
                    self.extents[i] = h;
                    self.extents.insert(i + 1, t);
                    break; // As above.
                }
            }
        }
        self.stats.unmaps += 1;
        removed
    }

    /// What a DMA to `iova` reaches: the physical address and how many bytes
    /// from there on stay physically contiguous within the same extent.
    pub fn translate(&self, iova: u64) -> Option<(u64, u64)> {
        let i = self.first_after(iova);
        let x = self.extents.get(i)?;
        (x.iova <= iova).then(|| (x.paddr + (iova - x.iova), x.end() - iova))
    }

    /// Checks the type's invariants; the first violation, if any.
    pub fn check(&self) -> Result<(), String> {
        // An idle domain (most importers, most of the time) holds nothing to
        // check; skipping the empty walks matters in instrumented builds.
        if self.is_idle() {
            return Ok(());
        }
        let mut prev_end = None;
        for (&s, &e) in &self.allocated {
            if s >= e || s % self.page != 0 || e % self.page != 0 {
                return Err(format!("bad IOVA span {s:#x}..{e:#x}"));
            }
            if prev_end.is_some_and(|p| p >= s) {
                return Err(format!("IOVA spans overlap or touch at {s:#x}"));
            }
            prev_end = Some(e);
        }
        // Both lists are sorted and the extents strictly increase (the
        // overlap test comes first), so one pass over each finds the span
        // that starts last at or below each extent: O(extents + spans), not
        // a tree lookup per extent, because the checker runs after every
        // step of every oracle.
        let mut spans = self.allocated.iter().peekable();
        let mut span = None;
        let mut prev: Option<Extent> = None;
        for x in &self.extents {
            if x.len == 0 {
                return Err(format!("empty extent at {:#x}", x.iova));
            }
            if prev.is_some_and(|p| p.end() > x.iova) {
                return Err(format!("extents overlap at {:#x}", x.iova));
            }
            while let Some((&s, &e)) = spans.next_if(|(&s, _)| s <= x.iova) {
                span = Some((s, e));
            }
            match span {
                Some((_, e)) if e >= x.end() => {}
                _ => return Err(format!("extent at {:#x} maps unallocated IOVA space", x.iova)),
            }
            prev = Some(*x);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 0x1000;
    const PAGES: u64 = 6;

    /// The rule restated: an extent is fine when one run of allocated pages
    /// holds all of it (`allocated` is a page bitmap here, not the model's
    /// span map).
    fn inside_one_run(allocated: u32, iova: u64, len: u64) -> bool {
        (iova / PAGE..(iova + len) / PAGE).all(|p| allocated & (1 << p) != 0)
    }

    /// A domain over six pages with exactly the pages of `allocated`:
    /// allocate all, free the others (so spans are split as the kernel's
    /// piecewise frees split them).
    fn domain(allocated: u32) -> Iommu {
        let mut io = Iommu::new(0, PAGES * PAGE, PAGE);
        assert_eq!(io.alloc_iova(PAGES * PAGE), Some(0));
        for p in (0..PAGES).filter(|p| allocated & (1 << p) == 0) {
            assert!(io.free_iova(p * PAGE, PAGE));
        }
        io
    }

    /// Every page pattern, every one and every pair of disjoint extents:
    /// `check` refuses exactly the layouts where an extent is not inside one
    /// allocated run, whichever of several extents it is and however many
    /// spans lie before it.
    #[test]
    fn check_refuses_exactly_the_extents_outside_the_allocated_spans() {
        let extents: Vec<(u64, u64)> =
            (0..PAGES).flat_map(|s| (1..=PAGES - s).map(move |n| (s * PAGE, n * PAGE))).collect();
        for allocated in 0..1u32 << PAGES {
            for &(a, alen) in &extents {
                let mut io = domain(allocated);
                io.map(a, 0x10_0000 + a, alen).expect("an empty domain takes any extent");
                assert_eq!(io.check().is_ok(), inside_one_run(allocated, a, alen), "{allocated:#b}: {a:#x}+{alen:#x}");
                for &(b, blen) in extents.iter().filter(|&&(b, _)| b >= a + alen) {
                    let mut io = io.clone();
                    io.map(b, 0x20_0000 + b, blen).expect("disjoint");
                    let want = inside_one_run(allocated, a, alen) && inside_one_run(allocated, b, blen);
                    assert_eq!(io.check().is_ok(), want, "{allocated:#b}: {a:#x}+{alen:#x}, {b:#x}+{blen:#x}");
                }
            }
        }
    }
}
