//! Request generators biased to the edges of `vfio_pci_core_feature_dma_buf()`.
//!
//! A [`Case`] describes one `VFIO_DEVICE_FEATURE(DMA_BUF)` call completely:
//! the target device and the [`uapi::OwnedRequest`] sent to it (every header
//! field, the ranges written and how much memory after the dma-buf header is
//! readable). It renders three ways that must agree: the bytes the guest
//! sends ([`Case::encode_into`]), the [`uapi::Request`] the validator judges
//! ([`Case::request`]), and the JSON line `nr-ranges check` replays
//! ([`Case::to_json`]).
//!
//! [`Gen`] is deterministic ([`rng::SplitMix64`]): the same seed and device
//! table give the same cases on the host and in the guest, so the guest never
//! has to send the requests back, only the answers.

use rng::SplitMix64;
use uapi::{
    DmaRange, OwnedRequest, Request, DMA_BUF_HEADER_SIZE, DMA_RANGE_SIZE, FEATURE_HEADER_SIZE,
    VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET,
};

/// The guest kernel's page size (x86-64).
pub const PAGE: u64 = 4096;

/// `KMALLOC_MAX_SIZE / 16` on x86-64: the largest range array
/// `memdup_array_user()` can allocate.
pub const MAX_COPYABLE_RANGES: u32 = 262_144;

/// The `nr_ranges` values the generator favours: none, the common small
/// counts, the Strict cap, the kmalloc limit and one past it, and the largest.
pub const NR_RANGES_EDGES: [u32; 8] = [0, 1, 2, 8, 65_536, MAX_COPYABLE_RANGES, MAX_COPYABLE_RANGES + 1, u32::MAX];

/// Linux `O_RDWR | O_CLOEXEC`: what a well-behaved user passes.
pub const O_RDWR_CLOEXEC: u32 = 0o2 | 0o2_000_000;

/// One request and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Case {
    /// Index into the device table the generator was given.
    pub device: usize,
    /// The argument in the user's memory. [`Gen`] makes readable windows
    /// of whole ranges, at most `MAX_COPYABLE_RANGES + 1` of them.
    pub request: OwnedRequest,
}

impl Case {
    /// Bytes readable after the feature header (`Request::readable`).
    pub fn readable_bytes(&self) -> usize {
        usize::try_from(self.request.readable).unwrap_or(usize::MAX)
    }

    /// Whether the kernel may read past the readable window, so that the
    /// argument must end at a guard page (`uapi::ioctl::GuardedArg`).
    pub fn needs_guard(&self) -> bool {
        self.request.needs_guard()
    }

    /// Writes the argument's readable bytes into `buf` (cleared first):
    /// feature header, dma-buf header, the readable written ranges, zeros up
    /// to the readable window. A window too large to encode (never made by
    /// [`Gen`]) leaves `buf` empty, which `uapi::ioctl` refuses to send.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        if self.request.encode_into(buf).is_err() {
            buf.clear();
        }
    }

    /// The request as the kernel meets it, for `validator::validate()`.
    pub fn request(&self) -> Request<'_> {
        self.request.request()
    }

    /// The `nr-ranges check` JSON line.
    pub fn to_json(&self) -> String {
        use std::fmt::Write;
        let (f, h) = (&self.request.feature, &self.request.dma_buf);
        let mut s = format!(
            "{{\"feature_flags\":{},\"argsz\":{},\"region_index\":{},\"open_flags\":{},\"flags\":{},\"nr_ranges\":{},\"ranges\":[",
            f.flags, f.argsz, h.region_index, h.open_flags, h.flags, h.nr_ranges
        );
        for (i, r) in self.request.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}[{},{}]", r.offset, r.length);
        }
        let _ = write!(s, "],\"readable_ranges\":{}}}", self.request.readable_ranges());
        s
    }
}

/// One element of a non-empty literal table (an empty one gives the default).
fn pick<T: Copy + Default>(r: &mut SplitMix64, xs: &[T]) -> T {
    r.pick(xs).unwrap_or_default()
}

/// What the generator knows of a device: each BAR's length (0 = absent).
pub type BarLens = [u64; 6];

/// The edge-biased case generator.
#[derive(Debug, Clone)]
pub struct Gen {
    rng: SplitMix64,
    devices: Vec<BarLens>,
}

impl Gen {
    /// A generator for `seed` over `devices` (must be non-empty).
    pub fn new(seed: u64, devices: Vec<BarLens>) -> Self {
        assert!(!devices.is_empty(), "the generator needs at least one device");
        Self { rng: SplitMix64::new(seed), devices }
    }

    /// Fills `case` with the next request (reusing its range vector, so
    /// the guest's loop does not allocate).
    pub fn next_into(&mut self, case: &mut Case) {
        let r = &mut self.rng;
        case.device = r.below(self.devices.len() as u64) as usize;
        let bars = self.devices[case.device];

        case.request.feature.flags = if r.chance(920, 1000) {
            VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF
        } else {
            // Only DMA_BUF's own index: other features would act on the device.
            let dmabuf = VFIO_DEVICE_FEATURE_DMA_BUF;
            let (g, s, p) = (VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_SET, VFIO_DEVICE_FEATURE_PROBE);
            pick(
                r,
                &[
                    dmabuf,
                    dmabuf | p,
                    dmabuf | p | g,
                    dmabuf | p | s,
                    dmabuf | s,
                    dmabuf | g | s,
                    dmabuf | g | 1 << 19,
                    dmabuf | g | 1 << 31,
                    dmabuf | p | g | s,
                ],
            )
        };

        // Region: mostly a BAR the device has, sometimes any BAR (absent
        // ones give ENODEV), sometimes no BAR at all.
        let present: Vec<u32> = (0..6u32).filter(|&i| bars[i as usize] != 0).collect();
        case.request.dma_buf.region_index = match r.below(100) {
            0..=79 if !present.is_empty() => pick(r, &present),
            0..=91 => r.below(6) as u32,
            92..=96 => pick(r, &[6, 7, 8, 9, u32::MAX, 1 << 31]),
            _ => r.next_u64() as u32,
        };
        let bar_len = bars.get(case.request.dma_buf.region_index as usize).copied().unwrap_or(0);
        // A plausible length for range arithmetic, even where no BAR exists.
        let len = if bar_len == 0 { 16 * PAGE } else { bar_len };

        case.request.dma_buf.open_flags = if r.chance(850, 1000) {
            O_RDWR_CLOEXEC
        } else {
            let any = r.next_u64() as u32;
            pick(r, &[0, 1, 2, 3, 0o4_000, 0o2_000_000, 0o4_000 | 2, u32::MAX, any])
        };
        case.request.dma_buf.flags = if r.chance(970, 1000) { 0 } else { pick(r, &[1, 2, 1 << 31, u32::MAX]) };

        // nr_ranges: small counts dominate; the big edges are rare (1 in
        // 4000) because each one fills and copies up to 4 MiB, which under
        // TCG costs as much as thousands of small cases.
        let big = r.below(4000) == 0;
        case.request.dma_buf.nr_ranges = if big {
            pick(r, &NR_RANGES_EDGES[4..])
        } else {
            match r.below(100) {
                0..=2 => 0,
                3..=49 => 1,
                50..=69 => 2,
                70..=89 => 3 + r.below(6) as u32,
                90..=94 => 8,
                95..=97 => 9 + r.below(56) as u32,
                _ => r.next_u64() as u32,
            }
        };
        let nr = case.request.dma_buf.nr_ranges;

        // Ranges written: as many as announced when that is cheap; for the
        // big counts usually a few (the rest read as zero, which the kernel
        // refuses as a zero-length range), sometimes every one.
        let written =
            if nr <= 64 || (nr <= MAX_COPYABLE_RANGES && r.chance(250, 1000)) { nr } else { r.below(4) as u32 };
        case.request.ranges.clear();
        let uniform = r.chance(300, 1000);
        for _ in 0..written {
            let range =
                if uniform && !case.request.ranges.is_empty() { case.request.ranges[0] } else { edge_range(r, len) };
            case.request.ranges.push(range);
        }
        // Rarely, write more ranges than announced: the kernel must ignore them.
        if nr < 64 && r.chance(30, 1000) {
            for _ in 0..1 + r.below(3) {
                case.request.ranges.push(edge_range(r, len));
            }
        }

        // Readable memory: usually exactly the announced ranges (a
        // well-formed argument); sometimes one range short, nothing after
        // the header, or more than announced.
        let nr_cap = nr.min(MAX_COPYABLE_RANGES + 1);
        let mut readable_ranges = match r.below(100) {
            0..=87 => nr_cap,
            88..=93 => nr_cap.saturating_sub(1),
            94..=96 => 0,
            _ => nr_cap.saturating_add(1 + r.below(4) as u32).min(MAX_COPYABLE_RANGES + 1),
        };
        if nr > MAX_COPYABLE_RANGES + 1 {
            // The kernel refuses the size before copying; a small readable
            // window keeps the guard mapping small.
            readable_ranges = readable_ranges.min(written + r.below(3) as u32);
        }

        // INVARIANT: a window of whole ranges, at most MAX_COPYABLE_RANGES + 1.
        case.request.readable = (DMA_BUF_HEADER_SIZE + readable_ranges as usize * DMA_RANGE_SIZE) as u64;

        let exact = (FEATURE_HEADER_SIZE + DMA_BUF_HEADER_SIZE) as u64 + DMA_RANGE_SIZE as u64 * nr as u64;
        let exact = u32::try_from(exact).unwrap_or(u32::MAX);
        case.request.feature.argsz = match r.below(100) {
            0..=74 => exact,
            75..=77 => pick(r, &[0, 1, 7]),
            78..=80 => pick(r, &[8, 16, 23]),
            81..=83 => 24,
            84..=87 => exact.saturating_sub(1),
            88..=91 => exact.saturating_add(pick(r, &[1, 16, 4096])),
            92..=95 => u32::MAX,
            _ => r.next_u64() as u32,
        };
    }

    /// The next request, freshly allocated.
    pub fn next_case(&mut self) -> Case {
        let mut c = Case::default();
        self.next_into(&mut c);
        c
    }
}

/// An (offset, length) pair at the edges: page and BAR boundaries, 2^63,
/// 2^64 - page, zero, and unaligned neighbours of each.
fn edge_range(r: &mut SplitMix64, bar_len: u64) -> DmaRange {
    let pages = (bar_len / PAGE).max(1);
    let aligned_inside = r.below(pages) * PAGE;
    if r.chance(450, 1000) {
        // A valid range inside the BAR (when the BAR is page-sized at least).
        let off = aligned_inside;
        let room = (bar_len.saturating_sub(off) / PAGE).max(1);
        return DmaRange::new(off, (1 + r.below(room)) * PAGE);
    }
    let offsets = [
        0,
        PAGE,
        bar_len.wrapping_sub(PAGE),
        bar_len,
        bar_len.wrapping_add(PAGE),
        aligned_inside,
        1,
        PAGE - 1,
        1 << 32,
        1 << 63,
        (1 << 63) - PAGE,
        0u64.wrapping_sub(PAGE),
        u64::MAX,
        r.next_u64() & !(PAGE - 1),
        r.next_u64(),
    ];
    let lengths = [
        0,
        PAGE,
        2 * PAGE,
        bar_len,
        bar_len.wrapping_add(PAGE),
        bar_len.wrapping_sub(PAGE),
        1,
        PAGE + 1,
        1 << 63,
        (1 << 63) - PAGE,
        0u64.wrapping_sub(PAGE),
        u64::MAX,
        r.next_u64() & !(PAGE - 1),
        r.next_u64(),
    ];
    let off = pick(r, &offsets);
    let length = if r.chance(150, 1000) { bar_len.wrapping_sub(off) } else { pick(r, &lengths) };
    DmaRange::new(off, length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uapi::RequestBuilder;

    fn devices() -> Vec<BarLens> {
        vec![[0x100, 0, 16 << 20, 0, 0, 0], [0x800, 0x100, 0, 0, 0, 0], [1 << 20, 0, 0, 0, 0, 0]]
    }

    #[test]
    fn same_seed_same_cases() {
        let mut a = Gen::new(7, devices());
        let mut b = Gen::new(7, devices());
        for _ in 0..20_000 {
            assert_eq!(a.next_case(), b.next_case());
        }
        let mut c = Gen::new(8, devices());
        let differs = (0..100).any(|_| a.next_case() != c.next_case());
        assert!(differs, "another seed gives other cases");
    }

    #[test]
    fn next_into_equals_next_case() {
        let mut a = Gen::new(3, devices());
        let mut b = Gen::new(3, devices());
        let mut reused = Case::default();
        for _ in 0..5_000 {
            a.next_into(&mut reused);
            assert_eq!(reused, b.next_case());
        }
    }

    #[test]
    fn edges_are_covered() {
        let mut g = Gen::new(1, devices());
        let mut nr_seen = std::collections::BTreeSet::new();
        let (mut guarded, mut short_argsz, mut huge_argsz, mut bit63, mut top_page, mut bar_end, mut zero_len) =
            (0, 0, 0, 0, 0, 0, 0);
        let mut devices_seen = [false; 3];
        let mut regions_seen = [false; 8];
        for _ in 0..200_000 {
            let c = g.next_case();
            nr_seen.insert(c.request.dma_buf.nr_ranges);
            devices_seen[c.device] = true;
            if let Some(s) = regions_seen.get_mut(c.request.dma_buf.region_index as usize) {
                *s = true;
            }
            guarded += c.needs_guard() as u32;
            short_argsz += (c.request.feature.argsz < 24) as u32;
            huge_argsz += (c.request.feature.argsz == u32::MAX) as u32;
            for r in &c.request.ranges {
                bit63 += (r.offset == 1 << 63 || r.length == 1 << 63) as u32;
                top_page += (r.offset == 0u64.wrapping_sub(PAGE) || r.length == 0u64.wrapping_sub(PAGE)) as u32;
                bar_end += (r.offset == 16 << 20 || r.offset == (16 << 20) - PAGE) as u32;
                zero_len += (r.length == 0) as u32;
            }
        }
        for n in NR_RANGES_EDGES {
            assert!(nr_seen.contains(&n), "nr_ranges {n} never generated");
        }
        assert!(devices_seen.iter().all(|&s| s));
        assert!(regions_seen.iter().all(|&s| s), "every BAR index, ROM and config: {regions_seen:?}");
        for (what, n) in [
            ("unreadable ranges", guarded),
            ("short argsz", short_argsz),
            ("argsz u32::MAX", huge_argsz),
            ("2^63", bit63),
            ("2^64 - page", top_page),
            ("BAR end", bar_end),
            ("zero length", zero_len),
        ] {
            assert!(n > 100, "{what}: only {n} cases");
        }
    }

    #[test]
    fn encodings_agree() {
        let mut g = Gen::new(11, devices());
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            let c = g.next_case();
            if c.request.ranges.len() > 1000 {
                continue;
            }
            c.encode_into(&mut buf);
            assert_eq!(buf.len(), FEATURE_HEADER_SIZE + c.readable_bytes());
            let q = &c.request;
            let via_builder = RequestBuilder::new()
                .feature_flags(q.feature.flags)
                .argsz(q.feature.argsz)
                .region_index(q.dma_buf.region_index)
                .open_flags(q.dma_buf.open_flags)
                .flags(q.dma_buf.flags)
                .nr_ranges(q.dma_buf.nr_ranges)
                .ranges(q.ranges.iter().copied())
                .readable(q.readable)
                .build()
                .unwrap();
            assert_eq!(&via_builder, q);
            let decoded = Request::decode(&buf).unwrap();
            let ours = c.request();
            assert_eq!(
                (decoded.feature, decoded.dma_buf, decoded.readable),
                (ours.feature, ours.dma_buf, ours.readable)
            );
            // Decoding sees the zero padding as ranges; they read the same.
            for i in 0..c.request.readable_ranges() as usize + 1 {
                assert_eq!(decoded.range(i), ours.range(i), "range {i} of {}", c.to_json());
            }
            let dev = validator::Device::ivshmem_example();
            let policy = validator::Policy::Linux;
            assert_eq!(validator::validate(&decoded, &dev, policy), validator::validate(&ours, &dev, policy));
        }
    }

    #[test]
    fn json_line_is_the_check_format() {
        let request = RequestBuilder::new()
            .region_index(2)
            .open_flags(O_RDWR_CLOEXEC)
            .nr_ranges(1)
            .argsz(40)
            .range(0, 4096)
            .range(u64::MAX, 1)
            .readable_ranges(1)
            .build()
            .unwrap();
        let c = Case { device: 0, request };
        assert_eq!(
            c.to_json(),
            r#"{"feature_flags":65547,"argsz":40,"region_index":2,"open_flags":524290,"flags":0,"nr_ranges":1,"ranges":[[0,4096],[18446744073709551615,1]],"readable_ranges":1}"#
        );
        let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["ranges"][1][0].as_u64(), Some(u64::MAX));
        let mut empty = c;
        empty.request.ranges.clear();
        assert!(empty.to_json().contains(r#""ranges":[],"#));
    }
}

#[cfg(test)]
mod stream_pin {
    use super::*;

    /// FNV-1a over the device index and `nr-ranges check` line of the first
    /// `n` cases of `seed`: the case stream, byte for byte.
    fn stream_digest(seed: u64, n: usize) -> u64 {
        let devices = vec![[0x100, 0, 16 << 20, 0, 0, 0], [0x800, 0x100, 0, 0, 0, 0], [1 << 20, 0, 0, 0, 0, 0]];
        let mut g = Gen::new(seed, devices);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..n {
            let c = g.next_case();
            for b in format!("{} {}\n", c.device, c.to_json()).bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    /// The stream of seed 1 as the generator made it before it moved onto
    /// `uapi::OwnedRequest` and `rng::SplitMix64` (computed with the old
    /// `gen::Case` and `gen::Rng`): the lab's committed batches depend on it.
    #[test]
    fn seed_1_stream_is_unchanged() {
        assert_eq!(stream_digest(1, 20_000), 0xa35e_7e6e_e2b6_78d5);
    }
}
