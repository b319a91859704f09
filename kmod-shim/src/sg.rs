//! `include/linux/scatterlist.h` (`struct sg_table`) and the sizing helpers
//! of `drivers/dma-buf/dma-buf-mapping.c`: the DMA-only scatterlist
//! `dma_buf_phys_vec_to_sgt()` builds.

use validator::PhysVec;

/// `MAX_SG_ENT_SZ` of drivers/dma-buf/dma-buf-mapping.c: the largest
/// page-aligned length an sg entry can hold, because `sg_dma_len()` is an
/// `unsigned int`. For 4 KiB pages it is `0xffff_f000`.
pub const fn max_sg_ent_sz(page_size: u64) -> u64 {
    u32::MAX as u64 & !(page_size - 1)
}

/// One `struct scatterlist` as a dma-buf importer may read it: the DMA list
/// only (`sg_dma_address()`, `sg_dma_len()`); the CPU list (page, offset,
/// length) is left empty by the exporter on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SgEntry {
    /// `sg_dma_address()`.
    pub dma_address: u64,
    /// `sg_dma_len()`: 32 bits, hence [`max_sg_ent_sz`].
    pub dma_length: u32,
}

/// `struct sg_table` as returned by `dma_buf_phys_vec_to_sgt()`: `nents`
/// entries allocated up front by `sg_alloc_table()`, `orig_nents` zero
/// because there is no CPU list.
///
/// # Invariants
/// After a successful map: every entry was filled, is page-aligned, and is no
/// longer than [`max_sg_ent_sz`]; the lengths sum to the dma-buf's size.
/// (Checked by [`crate::check_invariants`].) During a failed map, trailing
/// entries are still zero, which is what the kernel's unwind walks over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SgTable {
    /// The entries, `nents` of them.
    pub entries: Vec<SgEntry>,
    /// How many entries have been filled so far (the model's cursor; the
    /// kernel's is the `sgl` pointer).
    pub(crate) filled: usize,
}

impl SgTable {
    /// `sgt.nents`.
    pub fn nents(&self) -> usize {
        self.entries.len()
    }

    /// `sgt.orig_nents`: always 0 for a dma-buf built from physical vectors.
    pub fn orig_nents(&self) -> usize {
        0
    }

    /// The entries as `(dma_address, dma_length)` pairs, for assertions.
    pub fn pairs(&self) -> Vec<(u64, u64)> {
        self.entries.iter().map(|e| (e.dma_address, e.dma_length as u64)).collect()
    }

    /// `fill_sg_entry()`: writes `length` bytes starting at DMA address
    /// `addr` into as many entries as [`max_sg_ent_sz`] requires, each one
    /// continuing where the previous ended. The table was sized by
    /// [`calc_sg_nents`] for exactly these entries; writing past its end
    /// (the kernel's `sg_next()` off the table) panics.
    pub(crate) fn fill_sg_entry(&mut self, mut length: u64, mut addr: u64, max: u64) {
        while length != 0 {
            let len = length.min(max);
            self.entries[self.filled] = SgEntry { dma_address: addr, dma_length: len as u32 };
            length -= len;
            addr = addr.wrapping_add(len);
            self.filled += 1;
        }
    }
}

/// `calc_sg_nents()`: how many entries `sg_alloc_table()` is asked for.
/// With one IOVA span it is the span's size in [`max_sg_ent_sz`] pieces;
/// otherwise each range is split on its own. An overflow of the 32-bit count
/// yields 0, which `sg_alloc_table()` then refuses with EINVAL.
pub fn calc_sg_nents(use_iova: bool, phys_vec: &[PhysVec], size: u64, page_size: u64) -> u32 {
    let max = max_sg_ent_sz(page_size);
    if use_iova {
        // size < 2^63 (validate_dmabuf_input()), so the quotient fits 32 bits.
        return size.div_ceil(max) as u32;
    }
    let mut nents: u32 = 0;
    for p in phys_vec {
        let added = p.len.div_ceil(max) as u32;
        nents = match nents.checked_add(added) {
            Some(n) => n,
            None => return 0,
        };
    }
    nents
}
