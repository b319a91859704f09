//! The whole `VFIO_DEVICE_FEATURE(DMA_BUF)` argument as a user's memory holds
//! it: [`OwnedRequest`], the one owned request of the workspace, and
//! [`RequestBuilder`], which makes one.
//!
//! By default a request is what a well-behaved user passes: `flags` is
//! `GET | DMA_BUF`, `nr_ranges` is the number of ranges, `argsz` covers the
//! feature header, the dma-buf header and every range, and exactly those
//! bytes are readable. Each of these can be overridden so that hostile inputs
//! can be expressed too.

use zerocopy::IntoBytes;

use crate::layout::{
    DeviceFeatureDmaBuf, DeviceFeatureDmaBufSingle, DmaBufHeader, DmaRange, FeatureHeader, DMA_BUF_HEADER_SIZE,
    DMA_RANGE_SIZE, FEATURE_HEADER_SIZE, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET,
};
use crate::request::{RangeList, Request};

/// The largest readable window [`OwnedRequest::encode`] writes out: the
/// dma-buf header plus 64 MiB of ranges. The kernel reads at most the header
/// and `nr_ranges` ranges, and refuses (ENOMEM, `memdup_array_user()`) to
/// copy more than `KMALLOC_MAX_SIZE` of them (4 MiB with 4 KiB pages, 32 MiB
/// with arm64's 64 KiB pages on 7.2's `MAX_PAGE_ORDER`), so a wider window
/// reads the same as this one. Wider windows are still expressible as a
/// [`Request`].
pub const MAX_ENCODED_WINDOW: u64 = DMA_BUF_HEADER_SIZE as u64 + (64 << 20);

/// Why a request could not be encoded. Nothing is ever truncated silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The default `argsz` (header + ranges) does not fit in `__u32`.
    ArgszOverflow {
        /// How many ranges were given.
        ranges: usize,
    },
    /// The default `nr_ranges` (number of ranges) does not fit in `__u32`.
    NrRangesOverflow {
        /// How many ranges were given.
        ranges: usize,
    },
    /// The readable window is larger than [`MAX_ENCODED_WINDOW`], so its
    /// bytes are not written out.
    WindowTooLarge {
        /// The window asked for, in bytes after the feature header.
        readable: u64,
    },
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EncodeError::ArgszOverflow { ranges } => {
                write!(f, "{ranges} ranges make an argument larger than argsz (u32) can describe; set argsz explicitly")
            }
            EncodeError::NrRangesOverflow { ranges } => {
                write!(f, "{ranges} ranges do not fit in nr_ranges (u32); set nr_ranges explicitly")
            }
            EncodeError::WindowTooLarge { readable } => {
                write!(f, "a readable window of {readable} bytes is larger than {MAX_ENCODED_WINDOW} bytes and is not encoded")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// A `VFIO_DEVICE_FEATURE(DMA_BUF)` argument in user memory: `struct
/// vfio_device_feature` followed by `struct vfio_device_feature_dma_buf` and
/// its `dma_ranges[]`, and how much of that memory the kernel can read.
///
/// It is the owned form of [`Request`] (which borrows its ranges): every
/// field the kernel reads, plus the readable window, so that hostile inputs
/// (argsz or nr_ranges disagreeing with the ranges, an array that ends
/// before `nr_ranges` ranges) are as expressible as well-formed ones.
///
/// # Invariants
/// None beyond its fields' own, as for [`Request`]: readable memory past
/// the written ranges reads as zero.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedRequest {
    /// `struct vfio_device_feature` (argsz, flags).
    pub feature: FeatureHeader,
    /// `struct vfio_device_feature_dma_buf`'s fixed part.
    pub dma_buf: DmaBufHeader,
    /// The ranges written after the dma-buf header.
    pub ranges: Vec<DmaRange>,
    /// Bytes readable from the start of `vfio_device_feature.data`
    /// ([`Request::readable`]).
    pub readable: u64,
}

impl OwnedRequest {
    /// A well-formed GET: `argsz` and `nr_ranges` cover exactly `ranges`, all
    /// readable, dma-buf `flags` zero.
    pub fn well_formed(region_index: u32, open_flags: u32, ranges: &[DmaRange]) -> Result<Self, EncodeError> {
        RequestBuilder::new().region_index(region_index).open_flags(open_flags).ranges(ranges.iter().copied()).build()
    }

    /// The multi-range request that says what the single-range `single`
    /// says (`nr_ranges` 1).
    pub fn from_single(single: &DeviceFeatureDmaBufSingle) -> Self {
        let (dma_buf, range) = single.to_multi();
        let readable = (DMA_BUF_HEADER_SIZE + DMA_RANGE_SIZE) as u64;
        let argsz = (FEATURE_HEADER_SIZE + DMA_BUF_HEADER_SIZE + DMA_RANGE_SIZE) as u32;
        Self {
            feature: FeatureHeader { argsz, flags: VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF },
            dma_buf,
            ranges: vec![range],
            readable,
        }
    }

    /// How many ranges' worth of memory after the dma-buf header is readable
    /// (whole ranges; a trailing partial range does not count).
    pub fn readable_ranges(&self) -> u64 {
        self.readable.saturating_sub(DMA_BUF_HEADER_SIZE as u64) / DMA_RANGE_SIZE as u64
    }

    /// The written ranges the kernel can read: those inside the window.
    pub fn readable_written(&self) -> &[DmaRange] {
        let n = usize::try_from(self.readable_ranges()).unwrap_or(usize::MAX).min(self.ranges.len());
        self.ranges.get(..n).unwrap_or_default()
    }

    /// Whether the kernel may read past the readable window (it copies the
    /// header, then `nr_ranges` ranges), so that the argument must end at a
    /// guard page (`ioctl::GuardedArg`) for the read to fault
    /// deterministically.
    pub fn needs_guard(&self) -> bool {
        let wanted =
            (DMA_BUF_HEADER_SIZE as u64).saturating_add(u64::from(self.dma_buf.nr_ranges) * DMA_RANGE_SIZE as u64);
        wanted > self.readable
    }

    /// The request as the kernel meets it, for `validator::validate()`.
    pub fn request(&self) -> Request<'_> {
        Request {
            feature: self.feature,
            dma_buf: self.dma_buf,
            ranges: RangeList::from_ranges(self.readable_written()),
            readable: self.readable,
        }
    }

    /// Writes the readable bytes into `buf` (cleared first): the feature
    /// header, the dma-buf header and the written ranges, cut at the
    /// readable window or zero-padded up to it. `Request::decode()` of the
    /// result is [`OwnedRequest::request`], for windows of whole ranges.
    pub fn encode_into(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.readable > MAX_ENCODED_WINDOW {
            return Err(EncodeError::WindowTooLarge { readable: self.readable });
        }
        // Bounded by MAX_ENCODED_WINDOW just above.
        let window = FEATURE_HEADER_SIZE + self.readable as usize;
        buf.clear();
        buf.reserve(window);
        self.write_written(buf);
        buf.resize(window, 0);
        Ok(())
    }

    /// [`OwnedRequest::encode_into`] a new buffer.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut buf = Vec::new();
        self.encode_into(&mut buf)?;
        Ok(buf)
    }

    /// The exact bytes a user writes: feature header, dma-buf header, then
    /// every written range, whatever `nr_ranges` and the window say.
    pub fn written_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FEATURE_HEADER_SIZE + DMA_BUF_HEADER_SIZE + self.ranges.as_bytes().len());
        self.write_written(&mut out);
        out
    }

    /// Appends the headers and every written range, in C order.
    fn write_written(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.feature.as_bytes());
        out.extend_from_slice(self.dma_buf.as_bytes());
        out.extend_from_slice(self.ranges.as_bytes());
    }
}

/// Builds an [`OwnedRequest`]: defaults for a well-behaved user, each
/// overridable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBuilder {
    feature_flags: u32,
    argsz: Option<u32>,
    header: DmaBufHeader,
    nr_ranges: Option<u32>,
    ranges: Vec<DmaRange>,
    readable: Option<u64>,
}

impl Default for RequestBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestBuilder {
    /// A `GET | DMA_BUF` request for region 0 with no ranges yet.
    pub fn new() -> Self {
        Self {
            feature_flags: VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF,
            argsz: None,
            header: DmaBufHeader::default(),
            nr_ranges: None,
            ranges: Vec::new(),
            readable: None,
        }
    }

    /// `vfio_device_feature.flags` (feature index and GET/SET/PROBE).
    pub fn feature_flags(mut self, flags: u32) -> Self {
        self.feature_flags = flags;
        self
    }

    /// Overrides `vfio_device_feature.argsz`.
    pub fn argsz(mut self, argsz: u32) -> Self {
        self.argsz = Some(argsz);
        self
    }

    /// `region_index`.
    pub fn region_index(mut self, region_index: u32) -> Self {
        self.header.region_index = region_index;
        self
    }

    /// `open_flags`.
    pub fn open_flags(mut self, open_flags: u32) -> Self {
        self.header.open_flags = open_flags;
        self
    }

    /// The dma-buf `flags` field (must be 0 for the kernel to accept).
    pub fn flags(mut self, flags: u32) -> Self {
        self.header.flags = flags;
        self
    }

    /// Overrides `nr_ranges`.
    pub fn nr_ranges(mut self, nr_ranges: u32) -> Self {
        self.nr_ranges = Some(nr_ranges);
        self
    }

    /// Appends one range.
    pub fn range(mut self, offset: u64, length: u64) -> Self {
        self.ranges.push(DmaRange::new(offset, length));
        self
    }

    /// Appends ranges.
    pub fn ranges(mut self, ranges: impl IntoIterator<Item = DmaRange>) -> Self {
        self.ranges.extend(ranges);
        self
    }

    /// Overrides the readable window: `bytes` readable after the feature
    /// header (default: the dma-buf header and every written range).
    pub fn readable(mut self, bytes: u64) -> Self {
        self.readable = Some(bytes);
        self
    }

    /// Overrides the readable window in whole ranges after the dma-buf
    /// header, saturating (`u64::MAX` means everything is readable).
    pub fn readable_ranges(self, ranges: u64) -> Self {
        self.readable((DMA_BUF_HEADER_SIZE as u64).saturating_add(ranges.saturating_mul(DMA_RANGE_SIZE as u64)))
    }

    /// The ranges written so far.
    pub fn written_ranges(&self) -> &[DmaRange] {
        &self.ranges
    }

    /// The request.
    pub fn build(self) -> Result<OwnedRequest, EncodeError> {
        let (feature, dma_buf) = self.headers()?;
        let readable = self.readable.unwrap_or((DMA_BUF_HEADER_SIZE + self.ranges.as_bytes().len()) as u64);
        Ok(OwnedRequest { feature, dma_buf, ranges: self.ranges, readable })
    }

    /// The feature header and dma-buf header this builder will write.
    pub fn headers(&self) -> Result<(FeatureHeader, DmaBufHeader), EncodeError> {
        let n = self.ranges.len();
        let nr_ranges = match self.nr_ranges {
            Some(v) => v,
            None => u32::try_from(n).map_err(|_| EncodeError::NrRangesOverflow { ranges: n })?,
        };
        let argsz = match self.argsz {
            Some(v) => v,
            None => DeviceFeatureDmaBuf::size_for_ranges(n)
                .and_then(|s| s.checked_add(FEATURE_HEADER_SIZE))
                .and_then(|s| u32::try_from(s).ok())
                .ok_or(EncodeError::ArgszOverflow { ranges: n })?,
        };
        Ok((FeatureHeader { argsz, flags: self.feature_flags }, DmaBufHeader { nr_ranges, ..self.header }))
    }

    /// The exact bytes of the ioctl argument: feature header, dma-buf header,
    /// then the ranges as written (whatever `nr_ranges` and the window say).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        self.clone().build().map(|r| r.written_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_cuts_and_pads_and_decodes_back() {
        let b = RequestBuilder::new().region_index(2).range(0, 0x1000).range(0x4000, 0x2000).nr_ranges(4);
        let cut = b.clone().readable_ranges(1).build().unwrap();
        assert_eq!(cut.readable_written(), &[DmaRange::new(0, 0x1000)]);
        assert!(cut.needs_guard());
        let bytes = cut.encode().unwrap();
        assert_eq!(bytes.len(), 8 + 16 + 16);
        assert_eq!(Request::decode(&bytes).unwrap(), cut.request());
        let padded = b.readable_ranges(4).build().unwrap();
        assert!(!padded.needs_guard());
        let bytes = padded.encode().unwrap();
        assert_eq!(bytes.len(), 8 + 16 + 64);
        assert_eq!(bytes[8 + 16 + 32..], [0; 32]);
        let decoded = Request::decode(&bytes).unwrap();
        assert_eq!((decoded.readable, decoded.range(3)), (padded.readable, DmaRange::default()));
    }

    #[test]
    fn huge_window_is_a_typed_error() {
        let r = RequestBuilder::new().range(0, 0x1000).readable_ranges(u64::MAX).build().unwrap();
        assert_eq!(r.encode(), Err(EncodeError::WindowTooLarge { readable: u64::MAX }));
        assert_eq!(r.request().readable, u64::MAX);
    }

    #[test]
    fn defaults_cover_every_range() {
        let b = RequestBuilder::new().region_index(2).range(0, 0x1000).range(0x4000, 0x2000);
        let bytes = b.encode().unwrap();
        assert_eq!(bytes.len(), 8 + 16 + 32);
        let r = Request::decode(&bytes).unwrap();
        assert_eq!(r.feature.argsz, 56);
        assert_eq!(r.feature.flags, (1 << 16) | 11);
        assert_eq!(r.dma_buf.nr_ranges, 2);
        assert_eq!(r.ranges.get(1), Some(DmaRange::new(0x4000, 0x2000)));
    }

    #[test]
    fn overrides_express_hostile_inputs() {
        let bytes = RequestBuilder::new().argsz(0xffff_ffff).nr_ranges(u32::MAX).flags(1).range(1, 1).encode().unwrap();
        let r = Request::decode(&bytes).unwrap();
        assert_eq!(r.feature.argsz, u32::MAX);
        assert_eq!(r.dma_buf.nr_ranges, u32::MAX);
        assert_eq!(r.dma_buf.flags, 1);
        assert_eq!(r.ranges.len(), 1);
    }

    #[test]
    fn encoding_is_native_endian_c_order() {
        let bytes = RequestBuilder::new().region_index(2).open_flags(0x80002).range(0x1000, 0x2000).encode().unwrap();
        let mut want = vec![];
        for w in [40u32, 0x1000b, 2, 0x80002, 0, 1] {
            want.extend_from_slice(&w.to_ne_bytes());
        }
        want.extend_from_slice(&0x1000u64.to_ne_bytes());
        want.extend_from_slice(&0x2000u64.to_ne_bytes());
        assert_eq!(bytes, want);
    }
}
