//! The ioctl boundary: the only module of nr-ranges with `unsafe`.
//!
//! Every ioctl the project sends to a real kernel goes through here, via
//! nix's ioctl wrappers: `VFIO_DEVICE_FEATURE` itself, and what the kernel
//! lab needs to reach a device the classic way (container, group, type1v2
//! IOMMU, device fd, device and region info, reset). It also owns
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

use crate::layout::{
    DeviceInfo, FeatureHeader, GroupStatus, RegionInfo, FEATURE_HEADER_SIZE, VFIO_BASE, VFIO_DEVICE_FEATURE_DMA_BUF,
    VFIO_DEVICE_FEATURE_MASK, VFIO_DEVICE_FEATURE_PROBE, VFIO_TYPE,
};

/// The numeric request codes, `_IO(VFIO_TYPE, VFIO_BASE + n)`: VFIO encodes
/// neither direction nor size in its ioctl numbers.
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
}

/// The raw wrappers nix generates (`pub unsafe fn`); kept private so that
/// only the safe functions below are reachable.
mod raw {
    use super::codes;
    use crate::layout::{DeviceInfo, GroupStatus, RegionInfo};
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
