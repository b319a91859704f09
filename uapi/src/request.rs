//! A `VFIO_DEVICE_FEATURE` argument as the kernel sees it: the feature
//! header, the dma-buf header, the ranges written after it, and how much of
//! the user's memory after the feature header can be read at all.
//!
//! Decoding never panics and never allocates: every view borrows the input
//! bytes, and the ranges are read with zerocopy one at a time, so the input
//! need not be aligned.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the decoder promises never to panic, whatever the bytes"
)]

use zerocopy::FromBytes;

use crate::layout::{DmaBufHeader, DmaRange, FeatureHeader, DMA_BUF_HEADER_SIZE, DMA_RANGE_SIZE, FEATURE_HEADER_SIZE};

/// The ranges written in user memory after the dma-buf header: a borrowed run
/// of `struct vfio_region_dma_range`, possibly unaligned.
///
/// # Invariants
/// `bytes.len()` is a multiple of 16: a trailing partial range is not part of
/// the list (the kernel would fault reading it, which [`Request::readable`]
/// expresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeList<'a> {
    bytes: &'a [u8],
}

impl<'a> RangeList<'a> {
    /// The whole ranges contained in `bytes`; a trailing partial range is
    /// dropped.
    #[inline]
    pub fn from_bytes(bytes: &'a [u8]) -> Self {
        // The remainder is at most `bytes.len()`: no wrap, and the prefix
        // exists (`get` only keeps the path panic-free).
        let whole = bytes.len().wrapping_sub(bytes.len() % DMA_RANGE_SIZE);
        // INVARIANT: `whole` is the largest multiple of 16 not above the length.
        Self { bytes: bytes.get(..whole).unwrap_or_default() }
    }

    /// A list that borrows typed ranges.
    #[inline]
    pub fn from_ranges(ranges: &'a [DmaRange]) -> Self {
        Self { bytes: zerocopy::IntoBytes::as_bytes(ranges) }
    }

    /// How many ranges the list holds.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len() / DMA_RANGE_SIZE
    }

    /// Whether the list holds no range.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Range `i`, if written.
    #[inline]
    pub fn get(&self, i: usize) -> Option<DmaRange> {
        let start = i.checked_mul(DMA_RANGE_SIZE)?;
        let chunk = self.bytes.get(start..start.checked_add(DMA_RANGE_SIZE)?)?;
        DmaRange::read_from_bytes(chunk).ok()
    }

    /// The ranges, in order.
    #[inline]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = DmaRange> + 'a {
        // `chunks_exact` yields exactly 16-byte chunks, so the read cannot fail;
        // `unwrap_or_default` keeps the path panic-free all the same.
        self.bytes.chunks_exact(DMA_RANGE_SIZE).map(|c| DmaRange::read_from_bytes(c).unwrap_or_default())
    }

    /// The first `n` ranges (all of them if fewer are written).
    #[inline]
    pub fn prefix(&self, n: usize) -> RangeList<'a> {
        let end = n.saturating_mul(DMA_RANGE_SIZE).min(self.bytes.len());
        // INVARIANT: `end` is a multiple of 16 (`n * 16`, or the list's own
        // length), and at most the length, so `get` always succeeds.
        RangeList { bytes: self.bytes.get(..end).unwrap_or(self.bytes) }
    }

    /// The raw bytes of the list.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// A `VFIO_DEVICE_FEATURE(DMA_BUF)` argument, decoded.
///
/// It describes user memory as the kernel meets it: `readable` bytes starting
/// at `vfio_device_feature.data` can be copied; any read beyond faults
/// (EFAULT). Of those, the first 16 are the dma-buf header, then come the
/// `ranges` that were written; readable memory past the written ranges reads
/// as zero.
///
/// # Invariants
/// None beyond its fields' own: a `Request` may describe any input, hostile
/// ones included (argsz disagreeing with nr_ranges, nr_ranges beyond the
/// written ranges, a header that cannot be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// `struct vfio_device_feature` (argsz, flags).
    pub feature: FeatureHeader,
    /// The dma-buf header; meaningless where `readable < 16`.
    pub dma_buf: DmaBufHeader,
    /// The ranges written after the dma-buf header.
    pub ranges: RangeList<'a>,
    /// Bytes readable from the start of `vfio_device_feature.data`.
    pub readable: u64,
}

/// Why bytes could not be decoded as a request at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer than 8 bytes: there is no `struct vfio_device_feature` header.
    /// The kernel's `copy_from_user()` of the header in
    /// `vfio_ioctl_device_feature()` would fault (EFAULT).
    NoFeatureHeader {
        /// How many bytes there were.
        len: usize,
    },
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::NoFeatureHeader { len } => {
                write!(f, "{len} bytes cannot hold the 8-byte vfio_device_feature header")
            }
        }
    }
}

impl<'a> Request<'a> {
    /// Decodes an ioctl argument in which exactly `bytes` are readable: the
    /// feature header, then `data`. Whatever follows the 16-byte dma-buf
    /// header is taken as written ranges (a trailing partial range is
    /// readable but not a whole range).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let (feature, data) =
            FeatureHeader::read_from_prefix(bytes).map_err(|_| DecodeError::NoFeatureHeader { len: bytes.len() })?;
        let (dma_buf, ranges) = match DmaBufHeader::read_from_prefix(data) {
            Ok((h, rest)) => (h, RangeList::from_bytes(rest)),
            Err(_) => (DmaBufHeader::default(), RangeList::default()),
        };
        Ok(Self { feature, dma_buf, ranges, readable: data.len() as u64 })
    }

    /// A request whose header and written ranges are all readable and
    /// nothing beyond them.
    pub fn new(feature: FeatureHeader, dma_buf: DmaBufHeader, ranges: RangeList<'a>) -> Self {
        // A slice is at most isize::MAX bytes long: the sum cannot saturate.
        let readable = (DMA_BUF_HEADER_SIZE as u64).saturating_add(ranges.as_bytes().len() as u64);
        Self { feature, dma_buf, ranges, readable }
    }

    /// The range the kernel reads at index `i`: the written one, or zero
    /// where memory is readable but nothing was written. Callers check
    /// readability first.
    pub fn range(&self, i: usize) -> DmaRange {
        self.ranges.get(i).unwrap_or_default()
    }

    /// The `argsz` the kernel hands the feature handler:
    /// `feature.argsz - sizeof(struct vfio_device_feature)`. `None` when
    /// argsz is below the header size (the kernel rejects that first).
    pub fn data_argsz(&self) -> Option<u32> {
        self.feature.argsz.checked_sub(FEATURE_HEADER_SIZE as u32)
    }
}

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
    use crate::layout::DmaRange;

    #[test]
    fn decode_short_input_is_a_typed_error() {
        for n in 0..8 {
            assert_eq!(Request::decode(&[0u8; 8][..n]), Err(DecodeError::NoFeatureHeader { len: n }));
        }
    }

    #[test]
    fn decode_reads_headers_and_whole_ranges_only() {
        let mut b = vec![];
        b.extend_from_slice(&56u32.to_ne_bytes());
        b.extend_from_slice(&(1u32 << 16 | 11).to_ne_bytes());
        for w in [2u32, 0x80002, 0, 2] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        for w in [0x1000u64, 0x2000, 0x5000] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        let r = Request::decode(&b).unwrap();
        assert_eq!(r.feature, FeatureHeader { argsz: 56, flags: 1 << 16 | 11 });
        assert_eq!(r.dma_buf, DmaBufHeader { region_index: 2, open_flags: 0x80002, flags: 0, nr_ranges: 2 });
        assert_eq!(r.ranges.len(), 1, "the second range is cut short");
        assert_eq!(r.range(0), DmaRange::new(0x1000, 0x2000));
        assert_eq!(r.range(1), DmaRange::default());
        assert_eq!(r.readable, 16 + 24);
    }

    #[test]
    fn decode_unaligned_bytes() {
        let mut b = vec![0u8; 1];
        b.extend_from_slice(&[0u8; 8 + 16]);
        b.extend_from_slice(&7u64.to_ne_bytes());
        b.extend_from_slice(&9u64.to_ne_bytes());
        let r = Request::decode(&b[1..]).unwrap();
        assert_eq!(r.ranges.iter().collect::<Vec<_>>(), vec![DmaRange::new(7, 9)]);
    }

    #[test]
    fn range_list_prefix_and_get_never_panic() {
        let rs = [DmaRange::new(1, 2), DmaRange::new(3, 4)];
        let l = RangeList::from_ranges(&rs);
        assert_eq!(l.prefix(1).len(), 1);
        assert_eq!(l.prefix(usize::MAX).len(), 2);
        assert_eq!(l.get(usize::MAX), None);
        assert_eq!(l.get(1), Some(DmaRange::new(3, 4)));
    }
}
