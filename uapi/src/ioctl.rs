//! The ioctl boundary: the only module of nr-ranges with `unsafe`.
//!
//! Every ioctl the project sends to a real kernel goes through here, via
//! nix's ioctl wrappers: `VFIO_DEVICE_FEATURE` itself, and what the kernel
//! lab needs to reach a device the classic way (container, group, type1v2
//! IOMMU, device fd, device and region info, reset), and the way VMMs use
//! now: the vfio device cdev bound to an iommufd, an IOAS, and dma-bufs
//! mapped into it with `IOMMU_IOAS_MAP_FILE`. It also owns
//! [`GuardedArg`], the page-guarded buffer that lets a request end in
//! unreadable memory, so that the kernel's EFAULT paths can be exercised.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::request_code_none;
use nix::sys::mman::{MapFlags, ProtFlags};

use raw::*;
use zerocopy::FromBytes;

use crate::iommufd::{
    IommuDestroy, IommuIoasAlloc, IommuIoasMapFile, IommuIoasUnmap, IOMMUFD_CMD_DESTROY, IOMMUFD_CMD_IOAS_ALLOC,
    IOMMUFD_CMD_IOAS_MAP_FILE, IOMMUFD_CMD_IOAS_UNMAP, IOMMUFD_TYPE,
};
use crate::layout::{
    DeviceAttachIommufdPt, DeviceBindIommufd, DeviceDetachIommufdPt, DeviceInfo, FeatureHeader, GroupStatus,
    RegionInfo, FEATURE_HEADER_SIZE, VFIO_BASE, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_MASK,
    VFIO_DEVICE_FEATURE_PROBE, VFIO_TYPE,
};

/// The numeric request codes, `_IO(VFIO_TYPE, VFIO_BASE + n)` and
/// `_IO(IOMMUFD_TYPE, IOMMUFD_CMD_*)`: neither VFIO nor iommufd encodes
/// direction or size in its ioctl numbers (the argument's own argsz/size
/// says how big it is).
pub mod codes {
    use super::*;
    /// `VFIO_GET_API_VERSION`.
    pub const VFIO_GET_API_VERSION: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE) as u32;
    /// `VFIO_CHECK_EXTENSION`.
    pub const VFIO_CHECK_EXTENSION: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 1) as u32;
    /// `VFIO_SET_IOMMU`.
    pub const VFIO_SET_IOMMU: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 2) as u32;
    /// `VFIO_GROUP_GET_STATUS`.
    pub const VFIO_GROUP_GET_STATUS: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 3) as u32;
    /// `VFIO_GROUP_SET_CONTAINER`.
    pub const VFIO_GROUP_SET_CONTAINER: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 4) as u32;
    /// `VFIO_GROUP_GET_DEVICE_FD`.
    pub const VFIO_GROUP_GET_DEVICE_FD: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 6) as u32;
    /// `VFIO_DEVICE_GET_INFO`.
    pub const VFIO_DEVICE_GET_INFO: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 7) as u32;
    /// `VFIO_DEVICE_GET_REGION_INFO`.
    pub const VFIO_DEVICE_GET_REGION_INFO: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 8) as u32;
    /// `VFIO_DEVICE_RESET`.
    pub const VFIO_DEVICE_RESET: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 11) as u32;
    /// `VFIO_DEVICE_FEATURE`.
    pub const VFIO_DEVICE_FEATURE: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 17) as u32;
    /// `VFIO_DEVICE_BIND_IOMMUFD` (vfio device cdev).
    pub const VFIO_DEVICE_BIND_IOMMUFD: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 18) as u32;
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` (vfio device cdev).
    pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 19) as u32;
    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT` (vfio device cdev).
    pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: u32 = request_code_none!(VFIO_TYPE, VFIO_BASE + 20) as u32;
    /// `IOMMU_DESTROY`.
    pub const IOMMU_DESTROY: u32 = request_code_none!(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY) as u32;
    /// `IOMMU_IOAS_ALLOC`.
    pub const IOMMU_IOAS_ALLOC: u32 = request_code_none!(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC) as u32;
    /// `IOMMU_IOAS_UNMAP`.
    pub const IOMMU_IOAS_UNMAP: u32 = request_code_none!(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP) as u32;
    /// `IOMMU_IOAS_MAP_FILE`.
    pub const IOMMU_IOAS_MAP_FILE: u32 = request_code_none!(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP_FILE) as u32;
}

/// The raw wrappers nix generates (`pub unsafe fn`); kept private so that
/// only the safe functions below are reachable.
mod raw {
    use super::codes;
    use crate::iommufd::{IommuDestroy, IommuIoasAlloc, IommuIoasMapFile, IommuIoasUnmap};
    use crate::layout::{
        DeviceAttachIommufdPt, DeviceBindIommufd, DeviceDetachIommufdPt, DeviceInfo, GroupStatus, RegionInfo,
    };
    use nix::{ioctl_none_bad, ioctl_readwrite_bad, ioctl_write_int_bad, ioctl_write_ptr_bad};

    ioctl_none_bad!(vfio_get_api_version, codes::VFIO_GET_API_VERSION);
    ioctl_write_int_bad!(vfio_check_extension, codes::VFIO_CHECK_EXTENSION);
    ioctl_write_int_bad!(vfio_set_iommu, codes::VFIO_SET_IOMMU);
    ioctl_readwrite_bad!(vfio_group_get_status, codes::VFIO_GROUP_GET_STATUS, GroupStatus);
    ioctl_write_ptr_bad!(vfio_group_set_container, codes::VFIO_GROUP_SET_CONTAINER, std::ffi::c_int);
    ioctl_write_ptr_bad!(vfio_group_get_device_fd, codes::VFIO_GROUP_GET_DEVICE_FD, std::ffi::c_char);
    ioctl_readwrite_bad!(vfio_device_get_info, codes::VFIO_DEVICE_GET_INFO, DeviceInfo);
    ioctl_readwrite_bad!(vfio_device_get_region_info, codes::VFIO_DEVICE_GET_REGION_INFO, RegionInfo);
    ioctl_none_bad!(vfio_device_reset, codes::VFIO_DEVICE_RESET);
    ioctl_readwrite_bad!(vfio_device_feature, codes::VFIO_DEVICE_FEATURE, u8);
    ioctl_readwrite_bad!(vfio_device_get_region_info_buf, codes::VFIO_DEVICE_GET_REGION_INFO, u8);
    ioctl_readwrite_bad!(vfio_device_bind_iommufd, codes::VFIO_DEVICE_BIND_IOMMUFD, DeviceBindIommufd);
    ioctl_readwrite_bad!(vfio_device_attach_iommufd_pt, codes::VFIO_DEVICE_ATTACH_IOMMUFD_PT, DeviceAttachIommufdPt);
    ioctl_readwrite_bad!(vfio_device_detach_iommufd_pt, codes::VFIO_DEVICE_DETACH_IOMMUFD_PT, DeviceDetachIommufdPt);
    ioctl_readwrite_bad!(iommu_destroy, codes::IOMMU_DESTROY, IommuDestroy);
    ioctl_readwrite_bad!(iommu_ioas_alloc, codes::IOMMU_IOAS_ALLOC, IommuIoasAlloc);
    ioctl_readwrite_bad!(iommu_ioas_map_file, codes::IOMMU_IOAS_MAP_FILE, IommuIoasMapFile);
    ioctl_readwrite_bad!(iommu_ioas_unmap, codes::IOMMU_IOAS_UNMAP, IommuIoasUnmap);
}

/// What `VFIO_DEVICE_FEATURE` answered when it succeeded.
#[derive(Debug)]
pub enum FeatureReply {
    /// DMA_BUF GET: the new dma-buf's fd (`dma_buf_fd()`'s return value).
    DmaBuf(OwnedFd),
    /// PROBE, or a feature that returns 0.
    Done,
}

/// Why `VFIO_DEVICE_FEATURE` was not answered with success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoctlError {
    /// The kernel answered this errno.
    Kernel(Errno),
    /// Not sent: the argument is too short to hold the 8-byte header, or,
    /// for a feature other than DMA_BUF (whose handler may write back up to
    /// argsz bytes), shorter than its argsz.
    ArgTooShort {
        /// Bytes the ioctl could touch.
        needed: usize,
        /// Bytes provided.
        len: usize,
    },
}

impl std::fmt::Display for IoctlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoctlError::Kernel(e) => write!(f, "kernel answered {e}"),
            IoctlError::ArgTooShort { needed, len } => {
                write!(f, "argument of {len} bytes, but the ioctl may touch {needed}: not sent")
            }
        }
    }
}

impl std::error::Error for IoctlError {}

/// Sends `VFIO_DEVICE_FEATURE` with `arg` (feature header + data) to the
/// device fd `dev`, as `vfio_device_fops_unl_ioctl()` receives it.
///
/// For DMA_BUF, argsz and nr_ranges may claim more bytes than `arg` holds:
/// the kernel only reads the argument (`copy_from_user()` and
/// `memdup_array_user()` in `vfio_pci_core_feature_dma_buf()`), and a read
/// beyond the caller's mapping is the EFAULT the caller asked for.
pub fn device_feature(dev: BorrowedFd<'_>, arg: &mut [u8]) -> Result<FeatureReply, IoctlError> {
    let Ok((header, _)) = FeatureHeader::read_from_prefix(arg) else {
        return Err(IoctlError::ArgTooShort { needed: FEATURE_HEADER_SIZE, len: arg.len() });
    };
    let feature = header.flags & VFIO_DEVICE_FEATURE_MASK;
    if feature != VFIO_DEVICE_FEATURE_DMA_BUF && (header.argsz as usize) > arg.len() {
        return Err(IoctlError::ArgTooShort { needed: header.argsz as usize, len: arg.len() });
    }
    // SAFETY: `dev` is a live fd for the duration of the call and `arg` is a
    // valid, exclusively borrowed buffer of at least 8 bytes. For DMA_BUF the
    // kernel only reads through the pointer; for any other feature we checked
    // above that the buffer covers argsz, the most the kernel may write.
    let ret = unsafe { vfio_device_feature(dev.as_raw_fd(), arg.as_mut_ptr()) }.map_err(IoctlError::Kernel)?;
    if header.flags & VFIO_DEVICE_FEATURE_PROBE != 0 || feature != VFIO_DEVICE_FEATURE_DMA_BUF {
        return Ok(FeatureReply::Done);
    }
    // SAFETY: a successful DMA_BUF GET returns a new fd installed by
    // `dma_buf_fd()` that nothing else in this process owns.
    Ok(FeatureReply::DmaBuf(unsafe { OwnedFd::from_raw_fd(ret) }))
}

/// A VFIO container (`/dev/vfio/vfio`).
#[derive(Debug)]
pub struct Container {
    fd: OwnedFd,
}

impl Container {
    /// Opens `/dev/vfio/vfio`.
    pub fn open() -> std::io::Result<Self> {
        let f = OpenOptions::new().read(true).write(true).open("/dev/vfio/vfio")?;
        Ok(Self { fd: f.into() })
    }

    /// `VFIO_GET_API_VERSION`.
    pub fn api_version(&self) -> Result<i32, Errno> {
        // SAFETY: no argument; the fd is live.
        unsafe { vfio_get_api_version(self.fd.as_raw_fd()) }
    }

    /// `VFIO_CHECK_EXTENSION(ext)`: whether the container supports `ext`.
    pub fn check_extension(&self, ext: i32) -> Result<bool, Errno> {
        // SAFETY: the argument is passed by value; the fd is live.
        unsafe { vfio_check_extension(self.fd.as_raw_fd(), ext) }.map(|v| v > 0)
    }

    /// `VFIO_SET_IOMMU(model)`: needs a group attached first.
    pub fn set_iommu(&self, model: i32) -> Result<(), Errno> {
        // SAFETY: the argument is passed by value; the fd is live.
        unsafe { vfio_set_iommu(self.fd.as_raw_fd(), model) }.map(drop)
    }
}

impl AsFd for Container {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A VFIO group (`/dev/vfio/N`).
#[derive(Debug)]
pub struct Group {
    fd: OwnedFd,
}

impl Group {
    /// Opens `/dev/vfio/<group>`.
    pub fn open(group: u32) -> std::io::Result<Self> {
        let f = OpenOptions::new().read(true).write(true).open(format!("/dev/vfio/{group}"))?;
        Ok(Self { fd: f.into() })
    }

    /// `VFIO_GROUP_GET_STATUS`.
    pub fn status(&self) -> Result<GroupStatus, Errno> {
        let mut s = GroupStatus { argsz: std::mem::size_of::<GroupStatus>() as u32, flags: 0 };
        // SAFETY: `s` is a valid, exclusively borrowed vfio_group_status whose
        // argsz says exactly its size, so the kernel writes within it.
        unsafe { vfio_group_get_status(self.fd.as_raw_fd(), &mut s) }?;
        Ok(s)
    }

    /// `VFIO_GROUP_SET_CONTAINER`.
    pub fn set_container(&self, container: &Container) -> Result<(), Errno> {
        let cfd: std::ffi::c_int = container.fd.as_raw_fd();
        // SAFETY: the kernel reads one int through the pointer, which points
        // at a live local; both fds are live.
        unsafe { vfio_group_set_container(self.fd.as_raw_fd(), &cfd) }.map(drop)
    }

    /// `VFIO_GROUP_GET_DEVICE_FD(name)`, e.g. `"0000:01:00.0"`.
    pub fn device(&self, name: &str) -> Result<Device, Errno> {
        let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
        // SAFETY: the kernel reads a NUL-terminated string from a live CString.
        let fd = unsafe { vfio_group_get_device_fd(self.fd.as_raw_fd(), name.as_ptr()) }?;
        // SAFETY: on success the ioctl returns a new fd that nothing else owns.
        Ok(Device { file: unsafe { File::from_raw_fd(fd) } })
    }
}

/// A VFIO device fd. It is a `File` so that regions can be read and written
/// with positioned I/O (`FileExt`) without more unsafe code.
#[derive(Debug)]
pub struct Device {
    file: File,
}

impl Device {
    /// Opens a vfio device cdev, `/dev/vfio/devices/vfioN`. The fd can do
    /// nothing but `VFIO_DEVICE_BIND_IOMMUFD` until it is bound.
    pub fn open_cdev(path: &std::path::Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Self { file })
    }

    /// `VFIO_DEVICE_BIND_IOMMUFD`: binds this cdev fd to `iommufd`; the
    /// device's id in it (`out_devid`).
    pub fn bind_iommufd(&self, iommufd: &Iommufd) -> Result<u32, Errno> {
        let mut b = DeviceBindIommufd {
            argsz: std::mem::size_of::<DeviceBindIommufd>() as u32,
            iommufd: iommufd.fd.as_raw_fd(),
            ..Default::default()
        };
        // SAFETY: `b` is a valid vfio_device_bind_iommufd whose argsz is its
        // size; without VFIO_DEVICE_BIND_FLAG_TOKEN the kernel does not
        // follow token_uuid_ptr (0). Both fds are live.
        unsafe { vfio_device_bind_iommufd(self.file.as_raw_fd(), &mut b) }?;
        Ok(b.out_devid)
    }

    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT(pt_id)`: attaches the bound device to
    /// an IOAS (or HWPT); the id of the page table it now uses.
    pub fn attach_iommufd_pt(&self, pt_id: u32) -> Result<u32, Errno> {
        let mut a = DeviceAttachIommufdPt {
            argsz: std::mem::size_of::<DeviceAttachIommufdPt>() as u32,
            pt_id,
            ..Default::default()
        };
        // SAFETY: `a` is a valid vfio_device_attach_iommufd_pt whose argsz is
        // its size; the kernel writes pt_id back within it.
        unsafe { vfio_device_attach_iommufd_pt(self.file.as_raw_fd(), &mut a) }?;
        Ok(a.pt_id)
    }

    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    pub fn detach_iommufd_pt(&self) -> Result<(), Errno> {
        let mut d =
            DeviceDetachIommufdPt { argsz: std::mem::size_of::<DeviceDetachIommufdPt>() as u32, ..Default::default() };
        // SAFETY: `d` is a valid vfio_device_detach_iommufd_pt whose argsz is
        // its size.
        unsafe { vfio_device_detach_iommufd_pt(self.file.as_raw_fd(), &mut d) }.map(drop)
    }

    /// `VFIO_DEVICE_GET_REGION_INFO(index)` with room for the capability
    /// chain: asks once with the bare struct, and when the kernel says it
    /// needs more (`argsz` grown), again with that many bytes. Returns the
    /// fixed part and every byte of the reply (the chain's `next` offsets
    /// count from the start of these bytes).
    pub fn region_info_with_caps(&self, index: u32) -> Result<(RegionInfo, Vec<u8>), Errno> {
        let first = self.region_info(index)?;
        let base = std::mem::size_of::<RegionInfo>();
        let want = (first.argsz as usize).max(base);
        if want == base {
            return Ok((first, zerocopy::IntoBytes::as_bytes(&first).to_vec()));
        }
        let mut buf = vec![0u8; want];
        let ask = RegionInfo { argsz: want as u32, index, ..Default::default() };
        buf[..base].copy_from_slice(zerocopy::IntoBytes::as_bytes(&ask));
        // SAFETY: `buf` is a valid, exclusively borrowed buffer of `want`
        // bytes, and the argsz in it says `want`: the kernel copies back at
        // most argsz bytes (`vfio_info_add_capability()` /
        // `copy_to_user(arg, &info, minsz)` plus the chain within argsz).
        unsafe { vfio_device_get_region_info_buf(self.file.as_raw_fd(), buf.as_mut_ptr()) }?;
        let (info, _) = RegionInfo::read_from_prefix(&buf).map_err(|_| Errno::EIO)?;
        Ok((info, buf))
    }

    /// `VFIO_DEVICE_GET_INFO`.
    pub fn info(&self) -> Result<DeviceInfo, Errno> {
        let mut i = DeviceInfo { argsz: std::mem::size_of::<DeviceInfo>() as u32, ..Default::default() };
        // SAFETY: `i` is a valid vfio_device_info whose argsz is its size.
        unsafe { vfio_device_get_info(self.file.as_raw_fd(), &mut i) }?;
        Ok(i)
    }

    /// `VFIO_DEVICE_GET_REGION_INFO(index)`.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo, Errno> {
        let mut r = RegionInfo { argsz: std::mem::size_of::<RegionInfo>() as u32, index, ..Default::default() };
        // SAFETY: `r` is a valid vfio_region_info whose argsz is its size; the
        // kernel writes capabilities only past argsz when argsz allows them.
        unsafe { vfio_device_get_region_info(self.file.as_raw_fd(), &mut r) }?;
        Ok(r)
    }

    /// `VFIO_DEVICE_RESET`.
    pub fn reset(&self) -> Result<(), Errno> {
        // SAFETY: no argument; the fd is live.
        unsafe { vfio_device_reset(self.file.as_raw_fd()) }.map(drop)
    }

    /// `VFIO_DEVICE_FEATURE` on this device; see [`device_feature`].
    pub fn feature(&self, arg: &mut [u8]) -> Result<FeatureReply, IoctlError> {
        device_feature(self.file.as_fd(), arg)
    }

    /// The device fd as a file, for region reads and writes at
    /// `RegionInfo::offset`.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives up the device fd (closing it is a lab scenario).
    pub fn into_file(self) -> File {
        self.file
    }
}

/// An iommufd (`/dev/iommu`): the object space IOAS's, devices and page
/// tables live in.
#[derive(Debug)]
pub struct Iommufd {
    fd: OwnedFd,
}

impl Iommufd {
    /// Opens `/dev/iommu`.
    pub fn open() -> std::io::Result<Self> {
        let f = OpenOptions::new().read(true).write(true).open("/dev/iommu")?;
        Ok(Self { fd: f.into() })
    }

    /// `IOMMU_IOAS_ALLOC`: a new, empty IOAS; its id.
    pub fn ioas_alloc(&self) -> Result<u32, Errno> {
        let mut a = IommuIoasAlloc { size: std::mem::size_of::<IommuIoasAlloc>() as u32, ..Default::default() };
        // SAFETY: `a` is a valid iommu_ioas_alloc whose size field is its
        // size, so the kernel copies in and out exactly that struct.
        unsafe { iommu_ioas_alloc(self.fd.as_raw_fd(), &mut a) }?;
        Ok(a.out_ioas_id)
    }

    /// `IOMMU_IOAS_MAP_FILE` of `length` bytes of `file` from byte `start`
    /// into `ioas` at an IOVA the kernel picks (`flags` without
    /// `IOMMU_IOAS_MAP_FIXED_IOVA`) or at `iova` (with it); the IOVA used.
    pub fn ioas_map_file(
        &self,
        ioas: u32,
        file: BorrowedFd<'_>,
        start: u64,
        length: u64,
        flags: u32,
        iova: u64,
    ) -> Result<u64, Errno> {
        let mut m = IommuIoasMapFile {
            size: std::mem::size_of::<IommuIoasMapFile>() as u32,
            flags,
            ioas_id: ioas,
            fd: file.as_raw_fd(),
            start,
            length,
            iova,
        };
        // SAFETY: `m` is a valid iommu_ioas_map_file whose size field is its
        // size; the kernel writes iova back within it. Both fds are live.
        unsafe { iommu_ioas_map_file(self.fd.as_raw_fd(), &mut m) }?;
        Ok(m.iova)
    }

    /// `IOMMU_IOAS_UNMAP` of `[iova, iova + length)` in `ioas`; the bytes
    /// unmapped.
    pub fn ioas_unmap(&self, ioas: u32, iova: u64, length: u64) -> Result<u64, Errno> {
        let mut u = IommuIoasUnmap { size: std::mem::size_of::<IommuIoasUnmap>() as u32, ioas_id: ioas, iova, length };
        // SAFETY: `u` is a valid iommu_ioas_unmap whose size field is its
        // size; the kernel writes length back within it.
        unsafe { iommu_ioas_unmap(self.fd.as_raw_fd(), &mut u) }?;
        Ok(u.length)
    }

    /// `IOMMU_DESTROY(id)`.
    pub fn destroy(&self, id: u32) -> Result<(), Errno> {
        let mut d = IommuDestroy { size: std::mem::size_of::<IommuDestroy>() as u32, id };
        // SAFETY: `d` is a valid iommu_destroy whose size field is its size.
        unsafe { iommu_destroy(self.fd.as_raw_fd(), &mut d) }.map(drop)
    }
}

impl AsFd for Iommufd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Tries `mmap(len, prot, MAP_SHARED)` on `fd` at offset 0 and unmaps at
/// once: whether the file can be mapped, and if not, the errno. For the lab's
/// dma-buf facts (vfio's dma-buf ops have no `.mmap`, so `dma_buf_mmap()`
/// answers EINVAL).
pub fn mmap_probe(fd: BorrowedFd<'_>, len: NonZeroUsize, prot: ProtFlags) -> Result<(), Errno> {
    // SAFETY: a new shared mapping at an address the kernel chooses aliases
    // nothing; it is never dereferenced and is unmapped before returning, so
    // no pointer into it escapes.
    let map = unsafe { nix::sys::mman::mmap(None, len, prot, MapFlags::MAP_SHARED, fd, 0) }?;
    // SAFETY: unmaps exactly the mapping just created.
    unsafe { nix::sys::mman::munmap(map, len.get()) }
}

/// Sends an `_IOWR` ioctl whose argument is `buf`, for out-of-tree test
/// drivers that copy exactly the size encoded in their request code (the
/// kernel lab's importer fixture, `NRLAB_IOC`). Refused with `EINVAL`
/// without a call when `request` is not `_IOWR` or `buf` is shorter than the
/// encoded size. Returns the ioctl's non-negative return value.
pub fn ioctl_iowr(fd: BorrowedFd<'_>, request: u32, buf: &mut [u8]) -> Result<i32, Errno> {
    // _IOC: dir in bits 30-31 (3 = read|write on x86), size in bits 16-29.
    let size = ((request >> 16) & 0x3fff) as usize;
    if request >> 30 != 3 || buf.len() < size {
        return Err(Errno::EINVAL);
    }
    // SAFETY: `fd` is live for the call; `buf` is a valid, exclusively
    // borrowed buffer covering the size encoded in `request`, which is all a
    // driver that honours its request code reads or writes through the
    // pointer. No pointer into `buf` outlives the call.
    let ret = unsafe { nix::libc::ioctl(fd.as_raw_fd(), request as nix::sys::ioctl::ioctl_num_type, buf.as_mut_ptr()) };
    Errno::result(ret)
}

/// An ioctl argument placed so that exactly `8 + readable` bytes from its
/// start can be read and the next byte is in a `PROT_NONE` guard page: the
/// way to make the kernel's reads of header or ranges fault on purpose.
#[derive(Debug)]
pub struct GuardedArg {
    map: NonNull<std::ffi::c_void>,
    map_len: usize,
    start: usize,
    len: usize,
}

impl GuardedArg {
    /// Copies `bytes` into a fresh mapping where only `FEATURE_HEADER_SIZE +
    /// readable` bytes are readable; bytes beyond `bytes` but still readable
    /// are zero, bytes of `bytes` beyond the readable window are dropped.
    pub fn new(bytes: &[u8], readable: usize) -> Result<Self, Errno> {
        let page = page_size();
        let len = FEATURE_HEADER_SIZE.checked_add(readable).ok_or(Errno::EOVERFLOW)?;
        let data_pages = len.div_ceil(page).max(1);
        let map_len = (data_pages + 1).checked_mul(page).ok_or(Errno::EOVERFLOW)?;
        let nz = NonZeroUsize::new(map_len).ok_or(Errno::EINVAL)?;
        // SAFETY: a fresh anonymous private mapping at an address the kernel
        // chooses; it aliases nothing.
        let map = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }?;
        let guard = data_pages * page;
        // Owned from here on, so that a failure below unmaps on drop.
        let mut this = Self { map, map_len, start: guard - len, len };
        // SAFETY: the guard page lies inside the mapping just created.
        let guard_ptr = unsafe { NonNull::new_unchecked(map.as_ptr().cast::<u8>().add(guard).cast()) };
        // SAFETY: changes protection of one page we own inside our mapping.
        unsafe { nix::sys::mman::mprotect(guard_ptr, page, ProtFlags::PROT_NONE) }?;
        let n = bytes.len().min(len);
        this.as_mut_slice()[..n].copy_from_slice(&bytes[..n]);
        Ok(this)
    }

    /// The readable argument bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `start..start + len` lies in the readable, writable part of
        // our mapping, which lives as long as `self` and is only reached
        // through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().cast::<u8>().add(self.start), self.len) }
    }
}

impl Drop for GuardedArg {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created; no reference into
        // it outlives `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.map, self.map_len) };
    }
}

/// A shared mapping of a vfio region (`mmap()` of the device fd at the
/// region's offset, `vfio_pci_core_mmap()` in
/// drivers/vfio/pci/vfio_pci_core.c): the CPU's view of a BAR, as a VMM or
/// a GPU driver's userspace writes it.
///
/// # Invariants
///
/// `map` is a live `MAP_SHARED` read/write mapping of `len` bytes, owned by
/// this value and unmapped on drop; no reference into it escapes a method.
#[derive(Debug)]
pub struct RegionMap {
    map: NonNull<std::ffi::c_void>,
    len: usize,
}

impl RegionMap {
    /// Maps `len` bytes of `dev` from `offset` (a region's
    /// `VFIO_DEVICE_GET_REGION_INFO` offset, page-aligned). The kernel's
    /// errno when the region cannot be mapped (EINVAL without
    /// `VFIO_REGION_INFO_FLAG_MMAP`).
    pub fn new(dev: &Device, offset: u64, len: usize) -> Result<Self, Errno> {
        let nz = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        let off = i64::try_from(offset).map_err(|_| Errno::EOVERFLOW)?;
        // SAFETY: a new shared mapping at an address the kernel chooses; it
        // aliases no Rust object. Other mappings of the same BAR (another
        // process, a peer's DMA) may change the bytes at any time, which is
        // why every access below copies through raw pointers and never
        // forms a reference into the mapping.
        let map = unsafe {
            nix::sys::mman::mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                dev.file().as_fd(),
                off,
            )
        }?;
        // INVARIANT: the mapping was just created with `len` bytes.
        Ok(Self { map, len })
    }

    /// The mapping's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: `new` refuses 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn span(&self, off: u64, n: usize) -> Result<usize, Errno> {
        let start = usize::try_from(off).map_err(|_| Errno::EINVAL)?;
        match start.checked_add(n) {
            Some(end) if end <= self.len => Ok(start),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Copies `bytes` to the region at `off`; EINVAL past the mapping.
    pub fn write(&mut self, off: u64, bytes: &[u8]) -> Result<(), Errno> {
        let start = self.span(off, bytes.len())?;
        // SAFETY: `start..start + bytes.len()` lies inside the live mapping
        // (checked by `span`), which cannot overlap `bytes` (a Rust object).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.map.as_ptr().cast::<u8>().add(start), bytes.len());
        }
        Ok(())
    }

    /// Copies the region's bytes at `off` into `out`; EINVAL past the
    /// mapping.
    pub fn read(&self, off: u64, out: &mut [u8]) -> Result<(), Errno> {
        let start = self.span(off, out.len())?;
        // SAFETY: as in `write`, with the copy's direction reversed.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().cast::<u8>().add(start), out.as_mut_ptr(), out.len());
        }
        Ok(())
    }
}

impl Drop for RegionMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created (the type's
        // invariant); no reference into it exists.
        let _ = unsafe { nix::sys::mman::munmap(self.map, self.len) };
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |v| v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::RequestBuilder;

    #[test]
    fn request_codes_are_the_kernels() {
        // _IO(';', 100 + n) == 0x3b00 | (100 + n): VFIO encodes no size or direction.
        assert_eq!(codes::VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(codes::VFIO_CHECK_EXTENSION, 0x3b65);
        assert_eq!(codes::VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(codes::VFIO_GROUP_GET_STATUS, 0x3b67);
        assert_eq!(codes::VFIO_GROUP_SET_CONTAINER, 0x3b68);
        assert_eq!(codes::VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(codes::VFIO_DEVICE_GET_INFO, 0x3b6b);
        assert_eq!(codes::VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(codes::VFIO_DEVICE_RESET, 0x3b6f);
        assert_eq!(codes::VFIO_DEVICE_FEATURE, 0x3b75);
        assert_eq!(codes::VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
        assert_eq!(codes::VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
        assert_eq!(codes::VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3b78);
        // _IO(';', IOMMUFD_CMD_*), the commands from 0x80.
        assert_eq!(codes::IOMMU_DESTROY, 0x3b80);
        assert_eq!(codes::IOMMU_IOAS_ALLOC, 0x3b81);
        assert_eq!(codes::IOMMU_IOAS_UNMAP, 0x3b86);
        assert_eq!(codes::IOMMU_IOAS_MAP_FILE, 0x3b8f);
    }

    #[test]
    fn iommufd_wrappers_answer_the_kernels_enotty_on_a_non_iommufd_fd() {
        let fake = Iommufd { fd: File::open("/dev/null").unwrap().into() };
        assert_eq!(fake.ioas_alloc(), Err(Errno::ENOTTY));
        assert_eq!(fake.ioas_unmap(1, 0, 4096), Err(Errno::ENOTTY));
        assert_eq!(fake.destroy(1), Err(Errno::ENOTTY));
        let f = File::open("/dev/null").unwrap();
        assert_eq!(fake.ioas_map_file(1, f.as_fd(), 0, 4096, 0, 0), Err(Errno::ENOTTY));
        let dev = Device { file: f };
        assert_eq!(dev.bind_iommufd(&fake), Err(Errno::ENOTTY));
        assert_eq!(dev.attach_iommufd_pt(1), Err(Errno::ENOTTY));
        assert_eq!(dev.detach_iommufd_pt(), Err(Errno::ENOTTY));
        assert_eq!(dev.region_info_with_caps(2).unwrap_err(), Errno::ENOTTY);
    }

    #[test]
    fn device_feature_on_a_non_vfio_fd_is_the_kernels_enotty() {
        let f = File::open("/dev/null").unwrap();
        let mut arg = RequestBuilder::new().range(0, 4096).encode().unwrap();
        match device_feature(f.as_fd(), &mut arg) {
            Err(IoctlError::Kernel(Errno::ENOTTY)) => {}
            other => panic!("expected ENOTTY from /dev/null, got {other:?}"),
        }
    }

    #[test]
    fn device_feature_refuses_what_it_cannot_send_safely() {
        let f = File::open("/dev/null").unwrap();
        assert_eq!(
            device_feature(f.as_fd(), &mut [0u8; 7]).unwrap_err(),
            IoctlError::ArgTooShort { needed: 8, len: 7 }
        );
        // Feature 3 may write back argsz bytes: a 16-byte buffer with argsz 64 is refused.
        let mut arg = [0u8; 16];
        arg[..4].copy_from_slice(&64u32.to_ne_bytes());
        arg[4..8].copy_from_slice(&(3u32 | 1 << 16).to_ne_bytes());
        assert_eq!(device_feature(f.as_fd(), &mut arg).unwrap_err(), IoctlError::ArgTooShort { needed: 64, len: 16 });
    }

    #[test]
    fn ioctl_iowr_checks_direction_and_size_before_calling() {
        let f = File::open("/dev/null").unwrap();
        // _IOWR('N', 0x42, 16)
        let req = (3u32 << 30) | (16 << 16) | ((b'N' as u32) << 8) | 0x42;
        assert_eq!(ioctl_iowr(f.as_fd(), req, &mut [0u8; 15]), Err(Errno::EINVAL), "shorter than the size");
        assert_eq!(ioctl_iowr(f.as_fd(), req & !(1 << 31), &mut [0u8; 16]), Err(Errno::EINVAL), "not _IOWR");
        assert_eq!(ioctl_iowr(f.as_fd(), req, &mut [0u8; 16]), Err(Errno::ENOTTY), "the kernel's answer");
    }

    #[test]
    fn mmap_probe_maps_a_file_and_reports_errno_otherwise() {
        let f = File::open("/proc/self/exe").unwrap();
        let one = NonZeroUsize::new(4096).unwrap();
        assert_eq!(mmap_probe(f.as_fd(), one, ProtFlags::PROT_READ), Ok(()));
        // Shared writable mapping of a read-only fd: the kernel's EACCES.
        assert_eq!(mmap_probe(f.as_fd(), one, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE), Err(Errno::EACCES));
    }

    #[test]
    fn guarded_arg_ends_at_the_guard_page() {
        let bytes = RequestBuilder::new().range(0, 4096).encode().unwrap();
        let mut g = GuardedArg::new(&bytes, 16 + 8).unwrap();
        let s = g.as_mut_slice();
        assert_eq!(s.len(), 8 + 16 + 8);
        assert_eq!(&s[..], &bytes[..32], "the half range beyond the window is dropped");
        let end = s.as_ptr() as usize + s.len();
        assert_eq!(end % page_size(), 0, "the next byte starts the PROT_NONE page");
        let mut g = GuardedArg::new(&bytes[..8], 40).unwrap();
        assert!(g.as_mut_slice()[8..].iter().all(|&b| b == 0), "readable but unwritten bytes are zero");
    }
}
