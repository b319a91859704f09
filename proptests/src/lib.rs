//! Oracles and fixtures shared by the property tests (`tests/`) and the fuzz
//! targets (`../fuzz`).
//!
//! Every oracle takes concrete inputs, runs the validator and/or the
//! kmod-shim, and panics with a message naming the broken claim. Proptest
//! turns a panic into a shrunk, persisted counterexample; libFuzzer turns it
//! into a crash file. Both drive the same code, so a fuzz finding replays as
//! a property regression and vice versa.
//!
//! - [`fixtures`]: devices, importer topologies, edge values.
//! - [`OwnedRequest`]: a request with owned ranges, convertible to
//!   [`uapi::Request`].
//! - [`oracle`]: the claims.
//! - [`lifecycle`]: a driver for random sequences of attach, map, unmap,
//!   revoke, restore, close and release, with a reference model.
//! - [`scenario`]: the structured fuzz input (manual [`arbitrary::Arbitrary`]
//!   with an exact inverse, so seeds can be written as values).
#![forbid(unsafe_code)]

pub mod fixtures;
pub mod fuzz;
pub mod lifecycle;
pub mod oracle;
pub mod scenario;

use uapi::{
    DeviceFeatureDmaBufSingle, DmaBufHeader, DmaRange, FeatureHeader, RangeList, Request, DMA_BUF_HEADER_SIZE,
    DMA_RANGE_SIZE, FEATURE_HEADER_SIZE, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET,
};

/// A `VFIO_DEVICE_FEATURE(DMA_BUF)` argument with owned ranges: every field
/// the kernel reads, and how many bytes after the feature header are
/// readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRequest {
    /// `vfio_device_feature` header.
    pub feature: FeatureHeader,
    /// The dma-buf header.
    pub hdr: DmaBufHeader,
    /// The ranges written.
    pub ranges: Vec<DmaRange>,
    /// Bytes readable after the feature header.
    pub readable: u64,
}

impl OwnedRequest {
    /// A well-formed GET: argsz and nr_ranges cover exactly `ranges`, all
    /// readable, dma-buf flags zero.
    pub fn well_formed(region_index: u32, open_flags: u32, ranges: &[DmaRange]) -> Self {
        let n = ranges.len();
        let argsz = (FEATURE_HEADER_SIZE + DMA_BUF_HEADER_SIZE + n * DMA_RANGE_SIZE) as u32;
        Self {
            feature: FeatureHeader { argsz, flags: VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF },
            hdr: DmaBufHeader { region_index, open_flags, flags: 0, nr_ranges: n as u32 },
            ranges: ranges.to_vec(),
            readable: (DMA_BUF_HEADER_SIZE + n * DMA_RANGE_SIZE) as u64,
        }
    }

    /// The multi-range request that says what `single` says (`nr_ranges` 1).
    pub fn from_single(single: &DeviceFeatureDmaBufSingle) -> Self {
        let (hdr, r) = single.to_multi();
        Self::well_formed(hdr.region_index, hdr.open_flags, &[r])
    }

    /// The request as the kernel meets it.
    pub fn request(&self) -> Request<'_> {
        Request {
            feature: self.feature,
            dma_buf: self.hdr,
            ranges: RangeList::from_ranges(&self.ranges),
            readable: self.readable,
        }
    }

    /// The bytes a user would pass: headers, the ranges, zeros up to the
    /// readable window (cut there if the window is shorter).
    pub fn encode(&self) -> Vec<u8> {
        use zerocopy_free::as_bytes;
        let mut out = Vec::with_capacity(FEATURE_HEADER_SIZE + self.readable as usize);
        out.extend_from_slice(&as_bytes::feature(&self.feature));
        out.extend_from_slice(&as_bytes::header(&self.hdr));
        for r in &self.ranges {
            out.extend_from_slice(&r.offset.to_ne_bytes());
            out.extend_from_slice(&r.length.to_ne_bytes());
        }
        out.resize(FEATURE_HEADER_SIZE + self.readable as usize, 0);
        out
    }
}

/// Native-endian field-by-field encoding, so this crate needs no zerocopy
/// dependency of its own.
mod zerocopy_free {
    pub mod as_bytes {
        use uapi::{DmaBufHeader, FeatureHeader};

        pub fn feature(f: &FeatureHeader) -> Vec<u8> {
            [f.argsz.to_ne_bytes(), f.flags.to_ne_bytes()].concat()
        }

        pub fn header(h: &DmaBufHeader) -> Vec<u8> {
            [h.region_index.to_ne_bytes(), h.open_flags.to_ne_bytes(), h.flags.to_ne_bytes(), h.nr_ranges.to_ne_bytes()]
                .concat()
        }
    }
}

/// The position of a rejection's check in kernel order (index into
/// [`validator::Reject::ALL`]; per-range checks compare by kind only).
pub fn check_order(r: &validator::Reject) -> usize {
    validator::Reject::ALL.iter().position(|x| x.name() == r.name()).expect("every Reject is in ALL")
}
