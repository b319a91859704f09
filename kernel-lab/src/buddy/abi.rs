//! `kernel-lab/buddy/nrlab_buddy.h`: the allocator module's ioctl ABI.
//!
//! Each type is the header's struct of the same name, `#[repr(C)]` with the
//! same fields in the same order; the unit tests pin every size (written
//! from the header's field list). The request codes are computed with nix's
//! `request_code_readwrite!` from the types' sizes, as the header's
//! `_IOWR()` computes them from the structs'.

use std::mem::size_of;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `NRLAB_BUDDY_MAX_BATCH`: most ops per [`NRLAB_BUDDY_BATCH`].
pub const MAX_BATCH: usize = 65_536;
/// `NRLAB_BUDDY_MAX_OBJECTS`: most ids per allocator.
pub const MAX_OBJECTS: u32 = 1 << 22;
/// `NRLAB_BUDDY_ORDERS`: orders [`NrlabBuddyStats`] reports.
pub const ORDERS: usize = 64;
/// `NRLAB_BUDDY_OP_FREE`.
pub const OP_FREE: u32 = 1 << 0;
/// `NRLAB_BUDDY_OP_CONTIGUOUS`: `GPU_BUDDY_CONTIGUOUS_ALLOCATION`.
pub const OP_CONTIGUOUS: u32 = 1 << 1;

/// `struct nrlab_buddy_init`: `gpu_buddy_init(size, chunk)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabBuddyInit {
    /// Bytes managed.
    pub size: u64,
    /// `chunk_size`.
    pub chunk: u64,
    /// Ids are below this.
    pub max_objects: u32,
    /// Out: 0 or -errno of `gpu_buddy_init()`.
    pub err: i32,
}

/// `struct nrlab_buddy_op`: one trace operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabBuddyOp {
    /// The object.
    pub id: u32,
    /// [`OP_FREE`], [`OP_CONTIGUOUS`].
    pub flags: u32,
    /// Alloc: bytes.
    pub size: u64,
}

/// `struct nrlab_buddy_batch`: ops in, one result each out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabBuddyBatch {
    /// User pointer to `count` [`NrlabBuddyOp`].
    pub ops: u64,
    /// User pointer to `count` `i32` results.
    pub results: u64,
    /// Ops.
    pub count: u32,
    /// Out: ops run.
    pub done: u32,
}

/// `struct nrlab_buddy_block`: BAR offset and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabBuddyBlock {
    /// Offset.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

/// `struct nrlab_buddy_blocks`: a live object's blocks, in list order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabBuddyBlocks {
    /// In: the object.
    pub id: u32,
    /// Out: blocks it has.
    pub count: u32,
    /// In: room in `out`.
    pub max: u64,
    /// In: user pointer to `max` [`NrlabBuddyBlock`].
    pub out: u64,
}

/// `struct nrlab_buddy_stats`: free blocks per order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabBuddyStats {
    /// `mm->size`.
    pub size: u64,
    /// `mm->chunk_size`.
    pub chunk: u64,
    /// `mm->avail`.
    pub avail: u64,
    /// `mm->max_order`.
    pub max_order: u32,
    /// Live objects.
    pub live: u32,
    /// Free blocks per order, both free trees.
    pub free_blocks: [u64; ORDERS],
}

/// `_IOWR(NRLAB_BUDDY_IOC_MAGIC, nr, size)` (on x86_64 the request codes
/// fit in 32 bits).
const fn iowr(nr: u8, size: usize) -> u32 {
    nix::request_code_readwrite!(0xb5, nr, size) as u32
}

/// `NRLAB_BUDDY_INIT`.
pub const NRLAB_BUDDY_INIT: u32 = iowr(1, size_of::<NrlabBuddyInit>());
/// `NRLAB_BUDDY_BATCH`.
pub const NRLAB_BUDDY_BATCH: u32 = iowr(2, size_of::<NrlabBuddyBatch>());
/// `NRLAB_BUDDY_BLOCKS`.
pub const NRLAB_BUDDY_BLOCKS: u32 = iowr(3, size_of::<NrlabBuddyBlocks>());
/// `NRLAB_BUDDY_STATS`.
pub const NRLAB_BUDDY_STATS: u32 = iowr(4, size_of::<NrlabBuddyStats>());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_the_headers() {
        assert_eq!(size_of::<NrlabBuddyInit>(), 24);
        assert_eq!(size_of::<NrlabBuddyOp>(), 16);
        assert_eq!(size_of::<NrlabBuddyBatch>(), 24);
        assert_eq!(size_of::<NrlabBuddyBlock>(), 16);
        assert_eq!(size_of::<NrlabBuddyBlocks>(), 24);
        assert_eq!(size_of::<NrlabBuddyStats>(), 32 + 8 * 64);
        // As gcc computes them from nrlab_buddy.h: _IOWR(0xb5, nr, size) =
        // 3 << 30 | size << 16 | 0xb5 << 8 | nr.
        assert_eq!(NRLAB_BUDDY_INIT, 0xc018_b501);
        assert_eq!(NRLAB_BUDDY_BATCH, 0xc018_b502);
        assert_eq!(NRLAB_BUDDY_BLOCKS, 0xc018_b503);
        assert_eq!(NRLAB_BUDDY_STATS, 0xc220_b504);
    }
}
