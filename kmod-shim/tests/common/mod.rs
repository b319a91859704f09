//! Shared fixtures for the shim's tests.
#![allow(dead_code)]

use kmod_shim::{check_invariants, Bar, Config, Device, DmaBufId, ExportError, PageSize, Shim};
use uapi::{Request, RequestBuilder};

/// BAR0: 16 GiB of MMIO at 0x40_0000_0000.
pub const BAR0: u64 = 0x40_0000_0000;
/// IOMMU aperture of the importers.
pub const APERTURE: (u64, u64) = (0x1_0000_0000, 1 << 48);
pub const GIB: u64 = 1 << 30;
pub const MAX_SEG: u64 = 0xffff_f000;

/// BAR0 16 GiB MMIO, BAR2 I/O ports, BAR4 64 KiB MMIO.
pub fn device() -> Device {
    Device::new(PageSize::K4)
        .with_bar(0, Bar::mmio(BAR0, 16 * GIB))
        .with_bar(2, Bar::io(0xe000, 0x100))
        .with_bar(4, Bar::mmio(0xfe00_0000, 0x1_0000))
}

pub fn shim(cfg: Config) -> Shim {
    Shim::new(device(), cfg)
}

/// The encoded ioctl argument for `ranges` of `bar`.
pub fn request(bar: u32, ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut b = RequestBuilder::new().region_index(bar);
    for &(o, l) in ranges {
        b = b.range(o, l);
    }
    b.encode().expect("encodable")
}

pub fn export(s: &mut Shim, bar: u32, ranges: &[(u64, u64)]) -> Result<DmaBufId, ExportError> {
    let bytes = request(bar, ranges);
    let req = Request::decode(&bytes).expect("decodable");
    s.export(&req)
}

pub fn ok(s: &Shim) {
    if let Err(v) = check_invariants(s) {
        panic!("invariant violated: {v:?}");
    }
}
