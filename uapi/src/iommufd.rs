//! The bytes of `include/uapi/linux/iommufd.h` that the kernel lab uses to
//! map a vfio dma-buf into an IOAS (`IOMMU_IOAS_ALLOC`,
//! `IOMMU_IOAS_MAP_FILE`, `IOMMU_IOAS_UNMAP`, `IOMMU_DESTROY`), as zerocopy
//! types. Every argument starts with `size`, which the kernel checks
//! against the struct size it knows (`iommufd_fops_ioctl()`).
//!
//! Pinned by the `static_assertions` below and by the `kernel_header` test
//! against the real header.

use core::mem::{align_of, offset_of, size_of};

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `IOMMUFD_TYPE`: iommufd's ioctl magic, `';'` like VFIO's.
pub const IOMMUFD_TYPE: u8 = b';';
/// `IOMMUFD_CMD_DESTROY` (= `IOMMUFD_CMD_BASE`).
pub const IOMMUFD_CMD_DESTROY: u8 = 0x80;
/// `IOMMUFD_CMD_IOAS_ALLOC`.
pub const IOMMUFD_CMD_IOAS_ALLOC: u8 = 0x81;
/// `IOMMUFD_CMD_IOAS_UNMAP`.
pub const IOMMUFD_CMD_IOAS_UNMAP: u8 = 0x86;
/// `IOMMUFD_CMD_IOAS_MAP_FILE`.
pub const IOMMUFD_CMD_IOAS_MAP_FILE: u8 = 0x8f;

/// `IOMMU_IOAS_MAP_FIXED_IOVA`: map at `iova` instead of letting the IOAS
/// choose.
pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
/// `IOMMU_IOAS_MAP_WRITEABLE`: DMA may write.
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
/// `IOMMU_IOAS_MAP_READABLE`: DMA may read.
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;

/// `struct iommu_destroy { __u32 size; __u32 id; }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IommuDestroy {
    /// `size`.
    pub size: u32,
    /// `id`: any destroyable object.
    pub id: u32,
}

/// `struct iommu_ioas_alloc { __u32 size; __u32 flags; __u32 out_ioas_id; }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IommuIoasAlloc {
    /// `size`.
    pub size: u32,
    /// `flags`: must be 0.
    pub flags: u32,
    /// `out_ioas_id`.
    pub out_ioas_id: u32,
}

/// `struct iommu_ioas_map_file`: map `length` bytes of the file `fd` from
/// byte `start` (for a dma-buf: from its byte `start`, ranges
/// concatenated) into an IOAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IommuIoasMapFile {
    /// `size`.
    pub size: u32,
    /// `flags` (`IOMMU_IOAS_MAP_*`).
    pub flags: u32,
    /// `ioas_id`.
    pub ioas_id: u32,
    /// `fd`: a memfd or a dma-buf.
    pub fd: i32,
    /// `start`: byte offset into the file.
    pub start: u64,
    /// `length` in bytes.
    pub length: u64,
    /// `iova`: in with `IOMMU_IOAS_MAP_FIXED_IOVA`, else out.
    pub iova: u64,
}

/// `struct iommu_ioas_unmap { __u32 size; __u32 ioas_id; __aligned_u64
/// iova; __aligned_u64 length; }`; the kernel writes back the bytes
/// unmapped in `length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IommuIoasUnmap {
    /// `size`.
    pub size: u32,
    /// `ioas_id`.
    pub ioas_id: u32,
    /// `iova`.
    pub iova: u64,
    /// `length`: in the span, out the bytes unmapped.
    pub length: u64,
}

const_assert_eq!(size_of::<IommuDestroy>(), 8);
const_assert_eq!(offset_of!(IommuDestroy, id), 4);
const_assert_eq!(size_of::<IommuIoasAlloc>(), 12);
const_assert_eq!(offset_of!(IommuIoasAlloc, flags), 4);
const_assert_eq!(offset_of!(IommuIoasAlloc, out_ioas_id), 8);
const_assert_eq!(size_of::<IommuIoasMapFile>(), 40);
const_assert_eq!(align_of::<IommuIoasMapFile>(), 8);
const_assert_eq!(offset_of!(IommuIoasMapFile, ioas_id), 8);
const_assert_eq!(offset_of!(IommuIoasMapFile, fd), 12);
const_assert_eq!(offset_of!(IommuIoasMapFile, start), 16);
const_assert_eq!(offset_of!(IommuIoasMapFile, length), 24);
const_assert_eq!(offset_of!(IommuIoasMapFile, iova), 32);
const_assert_eq!(size_of::<IommuIoasUnmap>(), 24);
const_assert_eq!(align_of::<IommuIoasUnmap>(), 8);
const_assert_eq!(offset_of!(IommuIoasUnmap, ioas_id), 4);
const_assert_eq!(offset_of!(IommuIoasUnmap, iova), 8);
const_assert_eq!(offset_of!(IommuIoasUnmap, length), 16);
