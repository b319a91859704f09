//! The C baseline (`c/linux_checks.c`) behind a safe interface.
//!
//! This module is the crate's only `unsafe` code: the two FFI calls into the
//! C implementation, which exists only to benchmark the Rust validator
//! against the kernel's way of writing the same checks.
#![allow(unsafe_code, reason = "the two FFI calls into the C baseline the benchmark compares against")]

use core::ffi::c_int;

use uapi::FEATURE_HEADER_SIZE;
use validator::{BarKind, Device, Errno, PhysVec};

use crate::Answer;

/// `struct lc_bar` of `linux_checks.c`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct LcBar {
    kind: u32,
    pad: u32,
    start: u64,
    len: u64,
}

/// `enum lc_bar_kind` of `linux_checks.c`.
const LC_BAR_ABSENT: u32 = 0;
const LC_BAR_IO: u32 = 1;
const LC_BAR_MMIO: u32 = 2;

/// `LC_PROBE` and `LC_OTHER_FEATURE` of `linux_checks.c`.
const LC_PROBE: c_int = 1;
const LC_OTHER_FEATURE: c_int = 2;

/// A [`Device`] as the C code takes it (`struct lc_device`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CDevice {
    page_size: u64,
    kmalloc_max: u64,
    bars: [LcBar; 6],
}

impl From<&Device> for CDevice {
    fn from(dev: &Device) -> Self {
        let bars = dev.bars.map(|b| LcBar {
            kind: match b.kind {
                BarKind::Absent => LC_BAR_ABSENT,
                BarKind::Io => LC_BAR_IO,
                BarKind::Mmio => LC_BAR_MMIO,
            },
            pad: 0,
            start: b.start,
            len: b.len,
        });
        CDevice { page_size: dev.page_size.bytes(), kmalloc_max: dev.kmalloc_max, bars }
    }
}

/// `struct lc_phys_vec` (the kernel's `struct dma_buf_phys_vec`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CPhysVec {
    /// Physical address.
    pub paddr: u64,
    /// Length in bytes.
    pub len: u64,
}

impl From<PhysVec> for CPhysVec {
    fn from(p: PhysVec) -> Self {
        CPhysVec { paddr: p.paddr, len: p.len }
    }
}

extern "C" {
    fn lc_dma_buf_check(arg: *const u8, readable: u64, dev: *const CDevice, size_out: *mut u64) -> c_int;
    fn lc_dma_buf_fill(
        arg: *const u8,
        readable: u64,
        dev: *const CDevice,
        phys: *mut CPhysVec,
        phys_cap: u64,
        size_out: *mut u64,
    ) -> c_int;
}

fn answer(ret: c_int, size: u64) -> Answer {
    match ret {
        0 => Answer::Export { size },
        LC_PROBE => Answer::Probe,
        LC_OTHER_FEATURE => Answer::OtherFeature,
        e => match e.checked_neg().and_then(Errno::from_code) {
            Some(errno) => Answer::Errno(errno),
            None => Answer::Unexpected(e),
        },
    }
}

/// The C checks on a whole ioctl argument of which every byte is readable
/// (feature header, then `arg.len() - 8` readable data bytes), as
/// [`uapi::Request::decode`] describes it. `None` when `arg` cannot hold the
/// feature header (where `decode` fails too).
#[inline]
pub fn check(arg: &[u8], dev: &CDevice) -> Option<Answer> {
    let readable = arg.len().checked_sub(FEATURE_HEADER_SIZE)? as u64;
    let mut size = 0u64;
    // SAFETY: `arg` is valid for reads of `arg.len() == 8 + readable` bytes,
    // and the C code reads nothing beyond `8 + readable` bytes, with
    // unaligned-safe `memcpy`s; `dev` and `size` are valid, aligned and live
    // for the call, and the C code keeps no pointer after it returns.
    let ret = unsafe { lc_dma_buf_check(arg.as_ptr(), readable, dev, &mut size) };
    Some(answer(ret, size))
}

/// [`check`], also storing the physical vectors in `phys[..nr_ranges]` on
/// success (the C code answers ENOMEM, as a failed kcalloc, if `phys` is
/// too short).
#[inline]
pub fn fill(arg: &[u8], dev: &CDevice, phys: &mut [CPhysVec]) -> Option<Answer> {
    let readable = arg.len().checked_sub(FEATURE_HEADER_SIZE)? as u64;
    let mut size = 0u64;
    // SAFETY: as in `check`; in addition `phys` is valid for writes of
    // `phys.len()` elements, and the C code writes at most `phys_cap ==
    // phys.len()` of them (it checks `nr_ranges <= phys_cap` before the loop).
    let ret = unsafe { lc_dma_buf_fill(arg.as_ptr(), readable, dev, phys.as_mut_ptr(), phys.len() as u64, &mut size) };
    Some(answer(ret, size))
}
