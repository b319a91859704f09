//! `kernel-lab/importer/nrlab_importer.h`: the importer fixture's ioctl
//! ABI, one struct and one ioctl per operation.
//!
//! Each type is the header's struct of the same name, `#[repr(C)]` with the
//! same fields in the same order; `tests/importer_header.rs` compiles the
//! header and pins every size and offset against these types. The request
//! codes are computed with nix's `request_code_readwrite!` from the types'
//! sizes, as the header's `_IOWR()` computes them from the structs'.

use std::mem::size_of;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `NRLAB_MAX_ENTRIES`: DMA entries [`NrlabMap`] copies out.
pub const MAX_ENTRIES: usize = 512;
/// `NRLAB_MAX_DMA`: bytes per edu DMA.
pub const MAX_DMA: usize = 2048;
/// `NRLAB_GATHER_MAX`: chunks one [`NrlabGather`] reads.
pub const GATHER_MAX: usize = 16;
/// `NRLAB_GATHER_BYTES`: their total bytes.
pub const GATHER_BYTES: usize = 2048;
/// `NRLAB_MAX_IOVA_RANGES`: ranges [`NrlabIova`] links.
pub const MAX_IOVA_RANGES: usize = 8;
/// `NRLAB_IOVA_READ`: bytes edu reads at the start of each linked range.
pub const IOVA_READ: usize = 256;

/// `struct nrlab_status`: what every operation answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabStatus {
    /// 0 or -errno of the step.
    pub err: i32,
    /// `invalidate_mappings` calls so far.
    pub invalidations: u32,
    /// A mapping is kept.
    pub mapped: u32,
    /// Mappings the callback unmapped.
    pub unmapped_in_cb: u32,
}

/// `struct nrlab_entry`: a DMA entry (address, length), or a range (BAR
/// offset, length).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabEntry {
    /// DMA address, or BAR offset.
    pub addr: u64,
    /// Length.
    pub len: u64,
}

/// `struct nrlab_attach`: `dma_buf_get` + `dma_buf_dynamic_attach`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabAttach {
    /// In: the dma-buf fd.
    pub fd: i32,
    /// Padding.
    pub pad: u32,
    /// Out.
    pub st: NrlabStatus,
}

/// `struct nrlab_map`: `dma_buf_map_attachment` under the reservation lock.
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabMap {
    /// In: keep the mapping.
    pub keep: u32,
    /// Out: `sgt->nents`.
    pub nents: u32,
    /// Out: `sgt->orig_nents`.
    pub orig_nents: u32,
    /// Out: DMA entries (may exceed `count`).
    pub total_entries: u32,
    /// Out: entries copied into `ent`.
    pub count: u32,
    /// Padding.
    pub pad: u32,
    /// Out.
    pub st: NrlabStatus,
    /// Out: the DMA entries.
    pub ent: [NrlabEntry; MAX_ENTRIES],
}

/// `struct nrlab_dma`: edu reads `len` bytes at DMA address `addr`.
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabDma {
    /// In: the DMA address.
    pub addr: u64,
    /// In: bytes, at most [`MAX_DMA`].
    pub len: u32,
    /// Padding.
    pub pad: u32,
    /// Out.
    pub st: NrlabStatus,
    /// Out: what edu read.
    pub data: [u8; MAX_DMA],
}

/// `struct nrlab_gather`: edu reads `count` chunks into consecutive bytes
/// of `data`, with one canary and one copy back for all of them.
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabGather {
    /// In: 1..=[`GATHER_MAX`].
    pub count: u32,
    /// Padding.
    pub pad: u32,
    /// Out.
    pub st: NrlabStatus,
    /// In: (DMA address, bytes) per chunk, [`GATHER_BYTES`] in all at most.
    pub src: [NrlabEntry; GATHER_MAX],
    /// Out: the chunks, in order.
    pub data: [u8; GATHER_BYTES],
}

/// `struct nrlab_distance`: `pci_p2pdma_distance(provider, edu, verbose)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabDistance {
    /// In: `domain << 16 | bus << 8 | devfn`.
    pub provider: u64,
    /// Out: the distance (negative: no P2P path).
    pub distance: i32,
    /// Padding.
    pub pad: u32,
    /// Out.
    pub st: NrlabStatus,
}

/// `struct nrlab_iova`: the IOVA path of `dma_buf_phys_vec_to_sgt()` by hand.
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NrlabIova {
    /// In: `domain << 16 | bus << 8 | devfn`.
    pub provider: u64,
    /// In: the provider's BAR.
    pub bar: u32,
    /// In: 0 links every range at IOVA offset 0 (as the kernel does), 1 at
    /// the bytes linked so far.
    pub corrected: u32,
    /// In: 1..=[`MAX_IOVA_RANGES`].
    pub nr_ranges: u32,
    /// Out: the range whose link failed, else `nr_ranges`.
    pub failed_range: u32,
    /// Out: the IOVA span's start.
    pub iova: u64,
    /// Out: bytes linked.
    pub linked: u64,
    /// Out.
    pub st: NrlabStatus,
    /// In: (BAR offset, length) per range.
    pub ranges: [NrlabEntry; MAX_IOVA_RANGES],
    /// Out: [`IOVA_READ`] bytes edu read at the start of each range.
    pub data: [u8; MAX_IOVA_RANGES * IOVA_READ],
}

/// The `_IOWR('N', nr, T)` code (`ioctl_num_type` is `u64` on glibc; the
/// codes fit in 32 bits).
const fn iowr(nr: u8, size: usize) -> u32 {
    nix::request_code_readwrite!(b'N', nr, size) as u32
}

/// `NRLAB_IOCTL_ATTACH`.
pub const NRLAB_IOCTL_ATTACH: u32 = iowr(0x41, size_of::<NrlabAttach>());
/// `NRLAB_IOCTL_MAP`.
pub const NRLAB_IOCTL_MAP: u32 = iowr(0x42, size_of::<NrlabMap>());
/// `NRLAB_IOCTL_UNMAP`: unmap a kept mapping.
pub const NRLAB_IOCTL_UNMAP: u32 = iowr(0x43, size_of::<NrlabStatus>());
/// `NRLAB_IOCTL_STATUS`: the status only.
pub const NRLAB_IOCTL_STATUS: u32 = iowr(0x44, size_of::<NrlabStatus>());
/// `NRLAB_IOCTL_DETACH`: unmap if kept, `dma_buf_detach` + `dma_buf_put`.
pub const NRLAB_IOCTL_DETACH: u32 = iowr(0x45, size_of::<NrlabStatus>());
/// `NRLAB_IOCTL_DMA`.
pub const NRLAB_IOCTL_DMA: u32 = iowr(0x46, size_of::<NrlabDma>());
/// `NRLAB_IOCTL_DISTANCE`.
pub const NRLAB_IOCTL_DISTANCE: u32 = iowr(0x47, size_of::<NrlabDistance>());
/// `NRLAB_IOCTL_IOVA`.
pub const NRLAB_IOCTL_IOVA: u32 = iowr(0x48, size_of::<NrlabIova>());
/// `NRLAB_IOCTL_GATHER`.
pub const NRLAB_IOCTL_GATHER: u32 = iowr(0x49, size_of::<NrlabGather>());

/// Every ioctl: its header name and code (for the header test).
pub const IOCTLS: [(&str, u32); 9] = [
    ("NRLAB_IOCTL_ATTACH", NRLAB_IOCTL_ATTACH),
    ("NRLAB_IOCTL_MAP", NRLAB_IOCTL_MAP),
    ("NRLAB_IOCTL_UNMAP", NRLAB_IOCTL_UNMAP),
    ("NRLAB_IOCTL_STATUS", NRLAB_IOCTL_STATUS),
    ("NRLAB_IOCTL_DETACH", NRLAB_IOCTL_DETACH),
    ("NRLAB_IOCTL_DMA", NRLAB_IOCTL_DMA),
    ("NRLAB_IOCTL_DISTANCE", NRLAB_IOCTL_DISTANCE),
    ("NRLAB_IOCTL_IOVA", NRLAB_IOCTL_IOVA),
    ("NRLAB_IOCTL_GATHER", NRLAB_IOCTL_GATHER),
];
