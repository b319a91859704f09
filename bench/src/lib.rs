//! Benchmarks of the nr-ranges validator against a C implementation of the
//! same Linux checks, and the shared pieces of the differential test.
//!
//! - `c/linux_checks.c`: the Linux 7.2 checks of `VFIO_DEVICE_FEATURE(DMA_BUF)`
//!   written in C the way the kernel writes them (two loops over the ranges,
//!   `__builtin_add_overflow`), compiled at `-O2` by `build.rs`.
//! - [`c_baseline`]: the safe Rust interface to it.
//! - `benches/validator.rs`: criterion benchmarks of [`validator::validate`]
//!   under both policies, of the C code, and of a plain read of the same
//!   bytes (the memory-bandwidth floor), for 1 to 262,144 ranges.
//! - `tests/c_agrees.rs`: the C code and `validate(.., Policy::Linux)` give
//!   the same answer on every benchmark input and on thousands of generated
//!   edge-biased requests.
//!
//! Run: `cargo bench -p nr-ranges-bench` (about 1.5-3 minutes), or
//! `cargo bench -p nr-ranges-bench -- --test` to run every benchmark once.
//! Every group reports the range array's bytes as throughput. On a shared
//! machine, compare groups within one run, not across runs.
//!
//! The C code reads the ranges in place, as the Rust validator does. The
//! kernel also copies the array (`memdup_array_user()`), and that copy is
//! not measured on either side. It is compiled with the C compiler's
//! defaults at `-O2`. The kernel builds with `-mno-sse`; neither C loop can
//! be vectorised anyway, as each returns early.
//!
//! Under [`validator::Policy::Strict`], `nr_ranges` above
//! [`validator::STRICT_MAX_NR_RANGES`] (65,536) is refused with E2BIG before
//! any range is read, so `rust_strict` at 262,144 ranges measures an O(1)
//! rejection by design; `rust_strict` at 65,536 is the largest request Strict
//! accepts.
//!
//! # Unsafe code
//! The crate denies `unsafe_code`. The one exception is [`c_baseline`], which
//! holds the `extern "C"` declarations and the two FFI calls; it exists only
//! to benchmark against C. (The workspace's rule is that `unsafe` lives only
//! in `uapi`; this crate is a measuring tool, not part of the product.)

pub mod c_baseline;

use rng::SplitMix64;
use uapi::{DmaRange, RequestBuilder, DMA_BUF_HEADER_SIZE, FEATURE_HEADER_SIZE};
use validator::{Bar, Device, Errno, Outcome, PageSize, PhysVec, Policy, Verdict};

/// The numbers of ranges every benchmark group measures.
pub const BENCH_NR_RANGES: [u32; 4] = [1, 64, 4096, 262_144];

/// Physical start of the benchmark device's BAR 0 (224 GiB, a typical place
/// for a 64-bit prefetchable BAR).
pub const BENCH_BAR_START: u64 = 0x38_0000_0000;
/// Length of the benchmark device's BAR 0: 16 GiB, room for 262,144 disjoint
/// 64 KiB slots.
pub const BENCH_BAR_LEN: u64 = 16 << 30;
/// Each benchmark range lies in its own 64 KiB slot of the BAR.
pub const BENCH_SLOT: u64 = 64 << 10;
/// `open_flags` of the benchmark requests: `O_RDWR | O_CLOEXEC`, which both
/// policies accept.
pub const BENCH_OPEN_FLAGS: u32 = 0o2 | validator::O_CLOEXEC;

/// What a request gets, in a form both implementations can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// A dma-buf of `size` bytes is exported.
    Export {
        /// The dma-buf's size.
        size: u64,
    },
    /// A successful PROBE.
    Probe,
    /// Not the DMA_BUF feature: outside the model.
    OtherFeature,
    /// The ioctl fails with this errno.
    Errno(Errno),
    /// The C code returned a value that is neither success nor an errno
    /// [`Errno`] names (never expected: a test failure says so).
    Unexpected(i32),
}

/// The Rust validator's verdict as an [`Answer`].
pub fn rust_answer(v: &Verdict<'_>) -> Answer {
    match v {
        Ok(Outcome::DmaBuf(e)) => Answer::Export { size: e.size },
        Ok(Outcome::Probe) => Answer::Probe,
        Ok(Outcome::OtherFeature { .. }) => Answer::OtherFeature,
        Err(r) => Answer::Errno(r.errno()),
    }
}

/// [`validator::validate`], then, on export, the physical vectors written
/// into `out` (as the kernel fills `priv->phys_vec`): the same work the C
/// code's `lc_dma_buf_fill()` does. `out` must hold `nr_ranges` vectors;
/// extra ranges are not written.
#[inline]
pub fn validate_and_fill<'a>(
    req: &uapi::Request<'a>,
    dev: &Device,
    policy: Policy,
    out: &mut [PhysVec],
) -> Verdict<'a> {
    let v = validator::validate(req, dev, policy);
    if let Ok(Outcome::DmaBuf(e)) = &v {
        for (dst, p) in out.iter_mut().zip(e.phys_vecs()) {
            *dst = p;
        }
    }
    v
}

/// The benchmark device: 4 KiB pages, BAR 0 a 16 GiB MMIO BAR, BAR 2 an I/O
/// BAR, the rest absent.
pub fn bench_device() -> Device {
    Device::new(PageSize::K4).with_bar(0, Bar::mmio(BENCH_BAR_START, BENCH_BAR_LEN)).with_bar(2, Bar::io(0xe000, 0x100))
}

/// `nr` valid ranges scattered over BAR 0: range `i` lies in 64 KiB slot
/// `i * 0x9e37 mod 262144` (an odd multiplier, so every slot is distinct)
/// and is 4 KiB to 64 KiB long, page-aligned.
///
/// # Panics
/// If `nr` exceeds the 262,144 slots of the BAR.
pub fn scattered_ranges(nr: u32) -> Vec<DmaRange> {
    let slots = BENCH_BAR_LEN / BENCH_SLOT;
    assert!(u64::from(nr) <= slots, "{nr} ranges do not fit in {slots} slots");
    let mut rng = SplitMix64::new(u64::from(nr));
    (0..u64::from(nr))
        .map(|i| {
            let slot = i.wrapping_mul(0x9e37) % slots;
            let pages = 1 + rng.below(BENCH_SLOT / 4096);
            DmaRange::new(slot * BENCH_SLOT, pages * 4096)
        })
        .collect()
}

/// The bytes of a valid `GET | DMA_BUF` request for BAR 0 with
/// [`scattered_ranges`]`(nr)`, argsz covering every range.
pub fn bench_request_bytes(nr: u32) -> Vec<u8> {
    // Built as the benchmarks always built it. The same bytes made by
    // `OwnedRequest::well_formed(..).encode()` come in a buffer allocated
    // differently, and `rust_linux/262144` measured 10-50% slower on them
    // (same validator code, same bytes): keep the input's allocation as it
    // was, so that results stay comparable with earlier runs.
    RequestBuilder::new()
        .region_index(0)
        .open_flags(BENCH_OPEN_FLAGS)
        .ranges(scattered_ranges(nr))
        .encode()
        .expect("262,144 ranges fit in argsz")
}

/// The range array of a whole ioctl argument: what follows the feature and
/// dma-buf headers (empty if the argument is shorter).
pub fn range_array(arg: &[u8]) -> &[u8] {
    arg.get(FEATURE_HEADER_SIZE + DMA_BUF_HEADER_SIZE..).unwrap_or(&[])
}

/// A plain sequential read of `bytes`: the xor of every native-endian `u64`
/// word (a trailing partial word is ignored). The floor any validator that
/// reads every range must pay.
#[inline]
pub fn plain_read(bytes: &[u8]) -> u64 {
    bytes.chunks_exact(8).fold(0, |acc, w| acc ^ u64::from_ne_bytes(w.try_into().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scattered_ranges_are_disjoint_and_inside_the_bar() {
        let rs = scattered_ranges(262_144);
        let mut slots: Vec<u64> = rs.iter().map(|r| r.offset / BENCH_SLOT).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), rs.len());
        assert!(rs.iter().all(|r| r.length >= 4096 && r.length <= BENCH_SLOT && r.length % 4096 == 0));
        assert!(rs.iter().all(|r| r.offset + r.length <= BENCH_BAR_LEN));
    }

    #[test]
    fn plain_read_reads_every_word() {
        let words: Vec<u8> = [1u64, 2, 4].iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(plain_read(&words), 7);
        assert_eq!(plain_read(&words[..20]), 3);
    }
}
