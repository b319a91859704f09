//! A safe encoder for the whole `VFIO_DEVICE_FEATURE(DMA_BUF)` argument.
//!
//! By default the bytes are what a well-behaved user passes: `flags` is
//! `GET | DMA_BUF`, `nr_ranges` is the number of ranges, and `argsz` covers
//! the feature header, the dma-buf header and every range. Each of these can
//! be overridden so that hostile inputs can be expressed too.

use zerocopy::IntoBytes;

use crate::layout::{
    DeviceFeatureDmaBuf, DmaBufHeader, DmaRange, FeatureHeader, FEATURE_HEADER_SIZE, VFIO_DEVICE_FEATURE_DMA_BUF,
    VFIO_DEVICE_FEATURE_GET,
};

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
        }
    }
}

impl std::error::Error for EncodeError {}

/// Builds the bytes of a `VFIO_DEVICE_FEATURE` argument for DMA_BUF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBuilder {
    feature_flags: u32,
    argsz: Option<u32>,
    header: DmaBufHeader,
    nr_ranges: Option<u32>,
    ranges: Vec<DmaRange>,
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

    /// The ranges written so far.
    pub fn written_ranges(&self) -> &[DmaRange] {
        &self.ranges
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
    /// then the ranges as written (whatever `nr_ranges` says).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let (feature, header) = self.headers()?;
        let mut out = Vec::with_capacity(
            FEATURE_HEADER_SIZE + DeviceFeatureDmaBuf::size_for_ranges(self.ranges.len()).unwrap_or(0),
        );
        out.extend_from_slice(feature.as_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(self.ranges.as_bytes());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;

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
