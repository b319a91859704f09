//! The structured fuzz input: a device, a topology, a fault plan and a
//! request, decoded from bytes by a manual [`Arbitrary`] implementation
//! whose exact inverse is [`Scenario::encode`], so that seed files can be
//! written as values (see `examples/fuzz-seeds.rs`).
//!
//! Byte layout (little-endian; missing bytes read as zero):
//! `page:u8 bars:6×(kind:u8 len:u8 start:u8) importers:u16 fault:(site:u8
//! step:u8) policy:u8 feature_flags:(mode:u8 raw:u32) argsz:(mode:u8
//! raw:u32) region:u8 open_flags:(mode:u8 raw:u32) flags:(mode:u8 raw:u32)
//! nr_ranges:(mode:u8 raw:u32) readable:(mode:u8 raw:u32) count:u8
//! count×(offset:Val length:Val)`, where a `Val` is `tag:u8` then `u16`
//! pages (tag < 128), nothing (an edge value, tag < 224), or a raw `u64`.

use arbitrary::{Arbitrary, Unstructured};
use kmod_shim::{Bar, BarKind, Device, FaultPlan, FaultSite, ImporterDesc, PageSize, Policy};
use uapi::{DmaBufHeader, DmaRange, FeatureHeader, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET};

use crate::fixtures::{all_importers, edge_values, GIB, PAGE_SIZES};
use uapi::OwnedRequest;

use crate::well_formed;

/// BAR lengths a scenario picks from.
pub const BAR_LENS: [u64; 12] =
    [0, 0x100, 0x1000, 0x4000, 0x1_0000, 16 << 20, 256 << 20, 4 * GIB, 16 * GIB, 1 << 40, 1 << 62, 1 << 63];

/// One range field: pages, an edge value, or anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val {
    /// `n` pages.
    Pages(u16),
    /// `edge_values(page, bar_len)[i % len]`.
    Edge(u8),
    /// A raw value.
    Raw(u64),
}

/// A mode byte plus a raw word: the mode says whether the raw word is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Below the field's threshold: the well-formed value.
    pub mode: u8,
    /// The value used otherwise.
    pub raw: u32,
}

impl Field {
    /// The well-formed value.
    pub const WELL_FORMED: Field = Field { mode: 0, raw: 0 };

    /// The raw value `raw`.
    pub const fn raw(raw: u32) -> Field {
        Field { mode: 255, raw }
    }

    fn get(&self, threshold: u8, well_formed: u32) -> u32 {
        if self.mode < threshold {
            well_formed
        } else {
            self.raw
        }
    }
}

/// A whole structured fuzz case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Page size index (mod 3).
    pub page: u8,
    /// Per BAR: kind (mod 3: absent, I/O, MMIO), length index into
    /// [`BAR_LENS`], start selector.
    pub bars: [(u8, u8, u8); 6],
    /// Bit i: add importer i of [`all_importers`].
    pub importers: u16,
    /// Fault site (0: none; 1..=6: `FaultSite::ALL[site - 1]`) and step.
    pub fault: (u8, u8),
    /// Odd: Strict.
    pub policy: u8,
    /// `vfio_device_feature.flags`.
    pub feature_flags: Field,
    /// `argsz`.
    pub argsz: Field,
    /// `region_index` (255: u32::MAX).
    pub region: u8,
    /// `open_flags`.
    pub open_flags: Field,
    /// dma-buf `flags`.
    pub flags: Field,
    /// `nr_ranges`.
    pub nr_ranges: Field,
    /// Readable bytes after the feature header.
    pub readable: Field,
    /// The ranges written.
    pub ranges: Vec<(Val, Val)>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            page: 0,
            bars: [(2, 8, 0), (2, 1, 1), (1, 1, 2), (0, 0, 0), (2, 4, 3), (2, 9, 4)],
            importers: 0b1111,
            fault: (0, 0),
            policy: 0,
            feature_flags: Field::WELL_FORMED,
            argsz: Field::WELL_FORMED,
            region: 0,
            open_flags: Field::WELL_FORMED,
            flags: Field::WELL_FORMED,
            nr_ranges: Field::WELL_FORMED,
            readable: Field::WELL_FORMED,
            ranges: Vec::new(),
        }
    }
}

struct Rd<'a, 'b>(&'a mut Unstructured<'b>);

impl Rd<'_, '_> {
    fn n<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        // Pads with zeros when the input runs out; never fails.
        let _ = self.0.fill_buffer(&mut b);
        b
    }
    fn u8(&mut self) -> u8 {
        self.n::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.n())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.n())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.n())
    }
    fn field(&mut self) -> Field {
        Field { mode: self.u8(), raw: self.u32() }
    }
    fn val(&mut self) -> Val {
        match self.u8() {
            t if t < 128 => Val::Pages(self.u16()),
            t if t < 224 => Val::Edge(t - 128),
            _ => Val::Raw(self.u64()),
        }
    }
}

impl<'a> Arbitrary<'a> for Scenario {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut r = Rd(u);
        let page = r.u8();
        let mut bars = [(0, 0, 0); 6];
        for b in &mut bars {
            *b = (r.u8(), r.u8(), r.u8());
        }
        let importers = r.u16();
        let fault = (r.u8(), r.u8());
        let policy = r.u8();
        let feature_flags = r.field();
        let argsz = r.field();
        let region = r.u8();
        let open_flags = r.field();
        let flags = r.field();
        let nr_ranges = r.field();
        let readable = r.field();
        let count = r.u8();
        let mut ranges = Vec::new();
        for _ in 0..count {
            if r.0.is_empty() {
                break;
            }
            ranges.push((r.val(), r.val()));
        }
        Ok(Self {
            page,
            bars,
            importers,
            fault,
            policy,
            feature_flags,
            argsz,
            region,
            open_flags,
            flags,
            nr_ranges,
            readable,
            ranges,
        })
    }
}

impl Scenario {
    /// The bytes [`Arbitrary::arbitrary`] decodes back to `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = vec![self.page];
        for &(k, l, s) in &self.bars {
            o.extend([k, l, s]);
        }
        o.extend(self.importers.to_le_bytes());
        o.extend([self.fault.0, self.fault.1, self.policy]);
        let field = |o: &mut Vec<u8>, f: Field| {
            o.push(f.mode);
            o.extend(f.raw.to_le_bytes());
        };
        field(&mut o, self.feature_flags);
        field(&mut o, self.argsz);
        o.push(self.region);
        field(&mut o, self.open_flags);
        field(&mut o, self.flags);
        field(&mut o, self.nr_ranges);
        field(&mut o, self.readable);
        o.push(self.ranges.len() as u8);
        let val = |o: &mut Vec<u8>, v: Val| match v {
            Val::Pages(n) => {
                o.push(0);
                o.extend(n.to_le_bytes());
            }
            Val::Edge(i) => o.push(128 + i % 96),
            Val::Raw(x) => {
                o.push(255);
                o.extend(x.to_le_bytes());
            }
        };
        for &(a, b) in &self.ranges {
            val(&mut o, a);
            val(&mut o, b);
        }
        o
    }

    /// The page size.
    pub fn page_size(&self) -> PageSize {
        PAGE_SIZES[self.page as usize % 3]
    }

    /// The device: BAR kinds and lengths as selected; starts at a
    /// length-aligned address, 0, just below 4 GiB, 2^63, ending exactly at
    /// 2^64, or wrapping past it. Bit 7 of `page` shrinks `KMALLOC_MAX_SIZE`
    /// to 64 ranges.
    pub fn device(&self) -> Device {
        let page = self.page_size();
        let mut d = Device::new(page);
        if self.page & 0x80 != 0 {
            d.kmalloc_max = 64 * 16;
        }
        for (i, &(k, l, s)) in self.bars.iter().enumerate() {
            let len = BAR_LENS[l as usize % BAR_LENS.len()];
            let kind = [BarKind::Absent, BarKind::Io, BarKind::Mmio][k as usize % 3];
            let aligned = len.max(page.bytes()).checked_next_power_of_two().unwrap_or(1 << 63);
            let start = match s % 8 {
                0 => 0x40_0000_0000u64.next_multiple_of(aligned),
                1 => 0xfe80_0000,
                2 => 0,
                3 => (1u64 << 32) - len.min(1 << 31).next_multiple_of(page.bytes()),
                4 => 1 << 63,
                5 => 0u64.wrapping_sub(len),
                6 => 0u64.wrapping_sub(len).wrapping_add(page.bytes()),
                _ => (s as u64) << 40,
            };
            d = d.with_bar(i, Bar { kind, start, len });
        }
        d
    }

    /// The importers selected (at least one: the BUS_ADDR peer).
    pub fn importer_descs(&self) -> Vec<ImporterDesc> {
        let all = all_importers();
        let v: Vec<_> = all.iter().enumerate().filter(|(i, _)| self.importers >> i & 1 == 1).map(|(_, d)| *d).collect();
        if v.is_empty() {
            vec![all[0]]
        } else {
            v
        }
    }

    /// The fault plan, if any.
    pub fn fault_plan(&self) -> Option<FaultPlan> {
        let site = self.fault.0 % 7;
        (site != 0).then(|| FaultPlan::new(FaultSite::ALL[site as usize - 1], self.fault.1 as u64 % 16))
    }

    /// The validator policy.
    pub fn policy(&self) -> Policy {
        if self.policy & 1 == 1 {
            Policy::Strict
        } else {
            Policy::Linux
        }
    }

    /// The request.
    pub fn request(&self) -> OwnedRequest {
        let dev = self.device();
        let page = dev.page_size.bytes();
        let region = if self.region == 255 { u32::MAX } else { self.region as u32 % 8 };
        let bar_len = dev.bars.get(region as usize).map_or(0, |b| b.len);
        let edges = edge_values(page, bar_len);
        let v = |x: Val| match x {
            Val::Pages(n) => n as u64 * page,
            Val::Edge(i) => edges[i as usize % edges.len()],
            Val::Raw(x) => x,
        };
        let ranges: Vec<DmaRange> = self.ranges.iter().map(|&(o, l)| DmaRange::new(v(o), v(l))).collect();
        let wf = well_formed(region, 0o2_000_002, &ranges);
        OwnedRequest {
            feature: FeatureHeader {
                argsz: self.argsz.get(200, wf.feature.argsz),
                flags: self.feature_flags.get(224, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF),
            },
            dma_buf: DmaBufHeader {
                region_index: region,
                open_flags: self.open_flags.get(128, wf.dma_buf.open_flags),
                flags: self.flags.get(240, 0),
                nr_ranges: self.nr_ranges.get(224, wf.dma_buf.nr_ranges),
            },
            ranges,
            readable: self.readable.get(224, wf.readable as u32) as u64,
        }
    }

    /// Whether the request is exactly well-formed (what a correct user
    /// passes): the decomposition claim applies.
    pub fn well_formed(&self) -> bool {
        let r = self.request();
        let wf = well_formed(r.dma_buf.region_index, r.dma_buf.open_flags, &r.ranges);
        r == wf
    }
}
