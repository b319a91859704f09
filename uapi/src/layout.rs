//! The bytes of the UAPI: the structs of `include/uapi/linux/vfio.h` that
//! `VFIO_DEVICE_FEATURE_DMA_BUF` passes, as zerocopy types.
//!
//! All fields are native-endian, exactly as the C header declares them
//! (`__u32`, `__u64`): the ioctl argument is never byte-swapped by the kernel.
//! The layout is pinned twice: by the `static_assertions` below, and by the
//! `kernel_header` integration test, which compiles C against the real header
//! of a Linux >= 6.19 and compares sizes, offsets and encoded bytes.
//!
//! The views decoding uses ([`DeviceFeatureDmaBuf::header`],
//! [`DeviceFeatureDmaBuf::size_for_ranges`], the zerocopy reads) never panic,
//! which the lints below hold them to.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the decoder's views of the layout promise never to panic, whatever the bytes"
)]

use core::mem::{align_of, offset_of, size_of};

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `VFIO_TYPE`: the ioctl "magic" of every VFIO ioctl, `';'`.
pub const VFIO_TYPE: u8 = b';';
/// `VFIO_BASE`: the first VFIO ioctl number.
pub const VFIO_BASE: u8 = 100;

/// `VFIO_DEVICE_FEATURE_MASK`: the low 16 bits of `vfio_device_feature.flags`
/// select the feature.
pub const VFIO_DEVICE_FEATURE_MASK: u32 = 0xffff;
/// `VFIO_DEVICE_FEATURE_GET`.
pub const VFIO_DEVICE_FEATURE_GET: u32 = 1 << 16;
/// `VFIO_DEVICE_FEATURE_SET`.
pub const VFIO_DEVICE_FEATURE_SET: u32 = 1 << 17;
/// `VFIO_DEVICE_FEATURE_PROBE`.
pub const VFIO_DEVICE_FEATURE_PROBE: u32 = 1 << 18;
/// Every flag bit `vfio_ioctl_device_feature()` knows; any other bit is EINVAL.
pub const VFIO_DEVICE_FEATURE_KNOWN_FLAGS: u32 =
    VFIO_DEVICE_FEATURE_MASK | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PROBE;
/// `VFIO_DEVICE_FEATURE_DMA_BUF`: feature 11, export a BAR (or parts of it)
/// as a dma-buf. Merged in Linux 6.19.
pub const VFIO_DEVICE_FEATURE_DMA_BUF: u32 = 11;

/// `VFIO_PCI_ROM_REGION_INDEX`: region indices below it are BARs 0..=5.
pub const VFIO_PCI_ROM_REGION_INDEX: u32 = 6;
/// The number of PCI BARs a vfio-pci device exposes as regions 0..=5.
pub const PCI_STD_NUM_BARS: usize = 6;

/// The fixed part of `struct vfio_device_feature`, the argument of
/// `VFIO_DEVICE_FEATURE`: `{ __u32 argsz; __u32 flags; __u8 data[]; }`.
///
/// `argsz` counts the whole argument including this header; the kernel hands
/// the feature handler `argsz - 8` as the size of `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FeatureHeader {
    /// `vfio_device_feature.argsz`.
    pub argsz: u32,
    /// `vfio_device_feature.flags`: feature index in the low 16 bits, plus
    /// GET/SET/PROBE.
    pub flags: u32,
}

/// `struct vfio_device_feature`: the header followed by the feature's data,
/// as a slice DST so that a whole argument can be viewed in place. (Not
/// `IntoBytes`: like the C struct, it has tail padding when `data` is not a
/// multiple of 4 bytes.)
#[derive(Debug, PartialEq, Eq, FromBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DeviceFeature {
    /// `vfio_device_feature.argsz`.
    pub argsz: u32,
    /// `vfio_device_feature.flags`.
    pub flags: u32,
    /// `vfio_device_feature.data[]`.
    pub data: [u8],
}

/// `struct vfio_region_dma_range { __u64 offset; __u64 length; }`: one
/// range of the region, relative to the start of the BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DmaRange {
    /// `vfio_region_dma_range.offset`: bytes from the start of the BAR.
    pub offset: u64,
    /// `vfio_region_dma_range.length`: bytes.
    pub length: u64,
}

impl DmaRange {
    /// A range of `length` bytes at `offset`.
    pub const fn new(offset: u64, length: u64) -> Self {
        Self { offset, length }
    }
}

/// The fixed part of `struct vfio_device_feature_dma_buf`, which the kernel
/// copies first (`copy_from_user(&get_dma_buf, arg, sizeof(get_dma_buf))` in
/// `vfio_pci_core_feature_dma_buf()`), before it looks at the ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DmaBufHeader {
    /// `vfio_device_feature_dma_buf.region_index`: the BAR, 0..=5.
    pub region_index: u32,
    /// `vfio_device_feature_dma_buf.open_flags`: passed to `dma_buf_fd()` as
    /// the new fd's flags (and to `dma_buf_export()` as the file's flags).
    pub open_flags: u32,
    /// `vfio_device_feature_dma_buf.flags`: must be zero.
    pub flags: u32,
    /// `vfio_device_feature_dma_buf.nr_ranges`: how many `dma_ranges` follow.
    pub nr_ranges: u32,
}

/// `struct vfio_device_feature_dma_buf { __u32 region_index; __u32
/// open_flags; __u32 flags; __u32 nr_ranges; struct vfio_region_dma_range
/// dma_ranges[]; }`, the data of `VFIO_DEVICE_FEATURE_DMA_BUF`, as a slice
/// DST whose trailing slice is `dma_ranges`.
#[derive(Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DeviceFeatureDmaBuf {
    /// `region_index`.
    pub region_index: u32,
    /// `open_flags`.
    pub open_flags: u32,
    /// `flags`.
    pub flags: u32,
    /// `nr_ranges`.
    pub nr_ranges: u32,
    /// `dma_ranges[]`.
    pub dma_ranges: [DmaRange],
}

impl DeviceFeatureDmaBuf {
    /// The fixed fields, by value.
    pub fn header(&self) -> DmaBufHeader {
        DmaBufHeader {
            region_index: self.region_index,
            open_flags: self.open_flags,
            flags: self.flags,
            nr_ranges: self.nr_ranges,
        }
    }

    /// Size in bytes of this struct with `nr` trailing ranges, as zerocopy
    /// computes it from the layout; `None` if it does not fit in `usize`.
    pub fn size_for_ranges(nr: usize) -> Option<usize> {
        <Self as KnownLayout>::size_for_metadata(nr)
    }
}

/// The single-range argument the first version of the dma-buf patch series
/// proposed: `{ __u32 region_index; __u32 open_flags; __u64 offset; __u64
/// length; }`. It never reached a kernel header; nr-ranges keeps it to show
/// that `nr_ranges == 1` is equivalent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DeviceFeatureDmaBufSingle {
    /// `region_index`.
    pub region_index: u32,
    /// `open_flags`.
    pub open_flags: u32,
    /// `offset` into the BAR.
    pub offset: u64,
    /// `length` in bytes.
    pub length: u64,
}

impl DeviceFeatureDmaBufSingle {
    /// The multi-range header and the one range that say the same thing.
    pub fn to_multi(self) -> (DmaBufHeader, DmaRange) {
        (
            DmaBufHeader { region_index: self.region_index, open_flags: self.open_flags, flags: 0, nr_ranges: 1 },
            DmaRange::new(self.offset, self.length),
        )
    }
}

/// `VFIO_API_VERSION`, answered by `VFIO_GET_API_VERSION`.
pub const VFIO_API_VERSION: i32 = 0;
/// `VFIO_TYPE1v2_IOMMU`: the container IOMMU model the lab uses.
pub const VFIO_TYPE1V2_IOMMU: i32 = 3;
/// `VFIO_GROUP_FLAGS_VIABLE`: every device of the group is bound to vfio.
pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;
/// `VFIO_DEVICE_FLAGS_RESET`: the device supports `VFIO_DEVICE_RESET`.
pub const VFIO_DEVICE_FLAGS_RESET: u32 = 1 << 0;
/// `VFIO_REGION_INFO_FLAG_MMAP`: the region can be mmapped.
pub const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
/// `VFIO_PCI_CONFIG_REGION_INDEX`: the config-space region.
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;

/// `struct vfio_group_status { __u32 argsz; __u32 flags; }`, filled by
/// `VFIO_GROUP_GET_STATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GroupStatus {
    /// `argsz`.
    pub argsz: u32,
    /// `flags` (`VFIO_GROUP_FLAGS_*`).
    pub flags: u32,
}

/// `struct vfio_device_info`, filled by `VFIO_DEVICE_GET_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DeviceInfo {
    /// `argsz`.
    pub argsz: u32,
    /// `flags` (`VFIO_DEVICE_FLAGS_*`).
    pub flags: u32,
    /// `num_regions`.
    pub num_regions: u32,
    /// `num_irqs`.
    pub num_irqs: u32,
    /// `cap_offset`.
    pub cap_offset: u32,
    /// `pad`.
    pub pad: u32,
}

/// `struct vfio_region_info`, filled by `VFIO_DEVICE_GET_REGION_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RegionInfo {
    /// `argsz`.
    pub argsz: u32,
    /// `flags` (`VFIO_REGION_INFO_FLAG_*`).
    pub flags: u32,
    /// `index`: the region asked for.
    pub index: u32,
    /// `cap_offset`.
    pub cap_offset: u32,
    /// `size` in bytes (0 for an absent BAR).
    pub size: u64,
    /// `offset` of the region within the device fd, for pread/pwrite/mmap.
    pub offset: u64,
}

/// `VFIO_REGION_INFO_FLAG_CAPS`: the reply has a capability chain at
/// `cap_offset` (when `argsz` left room for it).
pub const VFIO_REGION_INFO_FLAG_CAPS: u32 = 1 << 3;
/// `VFIO_REGION_INFO_CAP_SPARSE_MMAP`: only the listed areas of the region
/// can be mmapped.
pub const VFIO_REGION_INFO_CAP_SPARSE_MMAP: u16 = 1;
/// `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`: the MSI-X table of this BAR may be
/// mmapped with the rest (QEMU then maps the whole BAR).
pub const VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: u16 = 3;
/// `VFIO_DEVICE_BIND_FLAG_TOKEN`: `token_uuid_ptr` is valid.
pub const VFIO_DEVICE_BIND_FLAG_TOKEN: u32 = 1 << 0;

/// `struct vfio_info_cap_header { __u16 id; __u16 version; __u32 next; }`:
/// one link of an INFO ioctl's capability chain; `next` is the offset of
/// the next link from the start of the INFO struct, 0 at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InfoCapHeader {
    /// `id` (`VFIO_REGION_INFO_CAP_*`).
    pub id: u16,
    /// `version`.
    pub version: u16,
    /// `next`.
    pub next: u32,
}

/// `struct vfio_region_sparse_mmap_area { __aligned_u64 offset; __aligned_u64
/// size; }`: one mmappable area, relative to the start of the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SparseMmapArea {
    /// `offset`.
    pub offset: u64,
    /// `size`.
    pub size: u64,
}

/// The fixed part of `struct vfio_region_info_cap_sparse_mmap { struct
/// vfio_info_cap_header header; __u32 nr_areas; __u32 reserved; struct
/// vfio_region_sparse_mmap_area areas[]; }`; `nr_areas` areas follow it.
/// Aligned to 8 like the C struct, whose flexible array of `__aligned_u64`
/// pairs sets its alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct RegionInfoCapSparseMmap {
    /// `header`.
    pub header: InfoCapHeader,
    /// `nr_areas`.
    pub nr_areas: u32,
    /// `reserved`.
    pub reserved: u32,
}

/// `struct vfio_device_bind_iommufd`, the argument of
/// `VFIO_DEVICE_BIND_IOMMUFD` on a vfio device cdev: binds the device to an
/// iommufd and returns its device id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DeviceBindIommufd {
    /// `argsz`.
    pub argsz: u32,
    /// `flags` (`VFIO_DEVICE_BIND_FLAG_*`).
    pub flags: u32,
    /// `iommufd`: the fd of `/dev/iommu`.
    pub iommufd: i32,
    /// `out_devid`: the device's object id in that iommufd.
    pub out_devid: u32,
    /// `token_uuid_ptr` (with `VFIO_DEVICE_BIND_FLAG_TOKEN`; the lab never
    /// sets it).
    pub token_uuid_ptr: u64,
}

/// `struct vfio_device_attach_iommufd_pt`, the argument of
/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attaches the bound device to an IOAS or
/// HWPT; the kernel writes back the id of the page table actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DeviceAttachIommufdPt {
    /// `argsz`.
    pub argsz: u32,
    /// `flags` (`VFIO_DEVICE_ATTACH_PASID`).
    pub flags: u32,
    /// `pt_id`: in the IOAS or HWPT id, out the HWPT id.
    pub pt_id: u32,
    /// `pasid` (with `VFIO_DEVICE_ATTACH_PASID`).
    pub pasid: u32,
}

/// `struct vfio_device_detach_iommufd_pt`, the argument of
/// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DeviceDetachIommufdPt {
    /// `argsz`.
    pub argsz: u32,
    /// `flags` (`VFIO_DEVICE_DETACH_PASID`).
    pub flags: u32,
    /// `pasid`.
    pub pasid: u32,
}

/// Size of [`FeatureHeader`]: the `minsz` of `vfio_ioctl_device_feature()`.
pub const FEATURE_HEADER_SIZE: usize = size_of::<FeatureHeader>();
/// Size of [`DmaBufHeader`]: the `minsz` the kernel passes to
/// `vfio_check_feature()` for DMA_BUF.
pub const DMA_BUF_HEADER_SIZE: usize = size_of::<DmaBufHeader>();
/// Size of one [`DmaRange`].
pub const DMA_RANGE_SIZE: usize = size_of::<DmaRange>();

// The kernel's layout, pinned. The C-header test checks the same numbers
// against the real header; these make a layout change fail to compile.
// `offset_of!` and `align_of` cannot name a slice DST's trailing field, so
// the unit tests below ask zerocopy for those.
const_assert_eq!(size_of::<FeatureHeader>(), 8);
const_assert_eq!(align_of::<FeatureHeader>(), 4);
const_assert_eq!(offset_of!(FeatureHeader, argsz), 0);
const_assert_eq!(offset_of!(FeatureHeader, flags), 4);
const_assert_eq!(offset_of!(DeviceFeature, argsz), 0);
const_assert_eq!(offset_of!(DeviceFeature, flags), 4);

const_assert_eq!(size_of::<DmaRange>(), 16);
const_assert_eq!(align_of::<DmaRange>(), 8);
const_assert_eq!(offset_of!(DmaRange, offset), 0);
const_assert_eq!(offset_of!(DmaRange, length), 8);

const_assert_eq!(size_of::<DmaBufHeader>(), 16);
const_assert_eq!(align_of::<DmaBufHeader>(), 4);
const_assert_eq!(offset_of!(DmaBufHeader, region_index), 0);
const_assert_eq!(offset_of!(DmaBufHeader, open_flags), 4);
const_assert_eq!(offset_of!(DmaBufHeader, flags), 8);
const_assert_eq!(offset_of!(DmaBufHeader, nr_ranges), 12);

const_assert_eq!(offset_of!(DeviceFeatureDmaBuf, region_index), 0);
const_assert_eq!(offset_of!(DeviceFeatureDmaBuf, open_flags), 4);
const_assert_eq!(offset_of!(DeviceFeatureDmaBuf, flags), 8);
const_assert_eq!(offset_of!(DeviceFeatureDmaBuf, nr_ranges), 12);

const_assert_eq!(size_of::<DeviceFeatureDmaBufSingle>(), 24);
const_assert_eq!(align_of::<DeviceFeatureDmaBufSingle>(), 8);
const_assert_eq!(offset_of!(DeviceFeatureDmaBufSingle, region_index), 0);
const_assert_eq!(offset_of!(DeviceFeatureDmaBufSingle, open_flags), 4);
const_assert_eq!(offset_of!(DeviceFeatureDmaBufSingle, offset), 8);
const_assert_eq!(offset_of!(DeviceFeatureDmaBufSingle, length), 16);

const_assert_eq!(size_of::<GroupStatus>(), 8);
const_assert_eq!(size_of::<DeviceInfo>(), 24);
const_assert_eq!(offset_of!(DeviceInfo, num_regions), 8);
const_assert_eq!(offset_of!(DeviceInfo, cap_offset), 16);
const_assert_eq!(size_of::<RegionInfo>(), 32);
const_assert_eq!(offset_of!(RegionInfo, index), 8);
const_assert_eq!(offset_of!(RegionInfo, size), 16);
const_assert_eq!(offset_of!(RegionInfo, offset), 24);

const_assert_eq!(size_of::<InfoCapHeader>(), 8);
const_assert_eq!(offset_of!(InfoCapHeader, version), 2);
const_assert_eq!(offset_of!(InfoCapHeader, next), 4);
const_assert_eq!(size_of::<SparseMmapArea>(), 16);
const_assert_eq!(align_of::<SparseMmapArea>(), 8);
const_assert_eq!(offset_of!(SparseMmapArea, size), 8);
const_assert_eq!(size_of::<RegionInfoCapSparseMmap>(), 16);
const_assert_eq!(align_of::<RegionInfoCapSparseMmap>(), 8);
const_assert_eq!(offset_of!(RegionInfoCapSparseMmap, nr_areas), 8);
const_assert_eq!(offset_of!(RegionInfoCapSparseMmap, reserved), 12);
const_assert_eq!(size_of::<DeviceBindIommufd>(), 24);
const_assert_eq!(align_of::<DeviceBindIommufd>(), 8);
const_assert_eq!(offset_of!(DeviceBindIommufd, iommufd), 8);
const_assert_eq!(offset_of!(DeviceBindIommufd, out_devid), 12);
const_assert_eq!(offset_of!(DeviceBindIommufd, token_uuid_ptr), 16);
const_assert_eq!(size_of::<DeviceAttachIommufdPt>(), 16);
const_assert_eq!(offset_of!(DeviceAttachIommufdPt, pt_id), 8);
const_assert_eq!(offset_of!(DeviceAttachIommufdPt, pasid), 12);
const_assert_eq!(size_of::<DeviceDetachIommufdPt>(), 12);
const_assert_eq!(offset_of!(DeviceDetachIommufdPt, pasid), 8);

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests panic to fail"
)]
mod tests {
    use super::*;

    #[test]
    fn zerocopy_sizes_of_the_dst_match_the_c_flexible_array() {
        // sizeof(struct vfio_device_feature_dma_buf) is 16 in C; each range adds 16.
        assert_eq!(DeviceFeatureDmaBuf::size_for_ranges(0), Some(16));
        assert_eq!(DeviceFeatureDmaBuf::size_for_ranges(1), Some(32));
        assert_eq!(DeviceFeatureDmaBuf::size_for_ranges(262_144), Some(16 + 4 * 1024 * 1024));
        assert_eq!(<DeviceFeature as KnownLayout>::size_for_metadata(0), Some(8));
        assert_eq!(DeviceFeatureDmaBuf::size_for_ranges(usize::MAX / 8), None);
    }

    #[test]
    fn dst_trailing_fields_sit_where_c_puts_them() {
        let words = [0u64; 6];
        let v = DeviceFeatureDmaBuf::ref_from_bytes(words.as_bytes()).unwrap();
        assert_eq!(v.dma_ranges.len(), 2);
        assert_eq!(v.dma_ranges.as_ptr() as usize - v as *const _ as *const u8 as usize, 16);
        assert_eq!(core::mem::align_of_val(v), 8);
        let f = DeviceFeature::ref_from_bytes(&words.as_bytes()[..12]).unwrap();
        assert_eq!(f.data.as_ptr() as usize - f as *const _ as *const u8 as usize, 8);
        assert_eq!(core::mem::align_of_val(f), 4);
        assert!(DeviceFeatureDmaBuf::ref_from_bytes(&words.as_bytes()[..20]).is_err(), "no partial range");
    }

    #[test]
    fn dst_view_reads_fields_in_c_order() {
        let words: [u64; 4] = [
            u64::from_ne_bytes([2, 0, 0, 0, 0x42, 0, 0, 0]),
            u64::from_ne_bytes([0, 0, 0, 0, 1, 0, 0, 0]),
            0x1000,
            0x2000,
        ];
        let v = DeviceFeatureDmaBuf::ref_from_bytes(words.as_bytes()).unwrap();
        assert_eq!(v.header(), DmaBufHeader { region_index: 2, open_flags: 0x42, flags: 0, nr_ranges: 1 });
        assert_eq!(v.dma_ranges, [DmaRange::new(0x1000, 0x2000)]);
    }

    #[test]
    fn single_range_maps_to_one_multi_range() {
        let s = DeviceFeatureDmaBufSingle { region_index: 4, open_flags: 2, offset: 0x3000, length: 0x1000 };
        let (h, r) = s.to_multi();
        assert_eq!(h, DmaBufHeader { region_index: 4, open_flags: 2, flags: 0, nr_ranges: 1 });
        assert_eq!(r, DmaRange::new(0x3000, 0x1000));
    }
}
