//! The importer lab: what happens after the dma-buf fd exists.
//!
//! The guest exports dma-bufs of ivshmem's BAR2 through vfio-pci and hands
//! them to `nrlab_importer` (C, `kernel-lab/importer/`), a fixture bound to
//! QEMU's edu device: dynamic attach with `allow_peer2peer` and
//! `invalidate_mappings`, map under the reservation lock, every DMA
//! (address, length) copied out, and edu's DMA engine reading the bytes
//! behind each address. The host predicts every step with kmod-shim
//! (`Fidelity::Kernel`, same topology and BAR table) and compares.
//!
//! This module is shared by host and guest: the request shapes, the
//! topologies and the report types; the fixture's ioctls are
//! [`crate::importer::abi`].

pub mod abi;
pub mod host;

use serde::{Deserialize, Serialize};

use crate::proto::DeviceInfo;

/// The fixture's device node.
pub const DEV_NODE: &str = "/dev/nrlab_importer";
/// The module file in the initramfs.
pub const MODULE_FILE: &str = "nrlab_importer.ko";

// ---------------------------------------------------------------------------
// The BAR pattern: every 8-byte word names its own BAR offset, so bytes read
// back say where they came from.

/// Marks a pattern word (high 16 bits).
pub const PATTERN_TAG: u64 = 0x4e52 << 48;

/// The pattern bytes for BAR offsets `[off, off + len)` (8-aligned).
pub fn pattern(off: u64, len: usize) -> Vec<u8> {
    (0..len as u64 / 8).flat_map(|i| (PATTERN_TAG | (off + 8 * i)).to_le_bytes()).collect()
}

/// What bytes read back at an address are.
pub fn classify(bytes: &[u8], expect_off: u64) -> String {
    if bytes == pattern(expect_off, bytes.len()).as_slice() {
        return "ok".into();
    }
    if bytes.iter().all(|&b| b == 0xee) {
        return "canary (the DMA wrote nothing)".into();
    }
    if bytes.iter().all(|&b| b == 0) {
        return "zeros".into();
    }
    if bytes.iter().all(|&b| b == 0xff) {
        return "all-ones".into();
    }
    let w = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if w >> 48 == PATTERN_TAG >> 48 {
        return format!("bytes of BAR offset {:#x} (expected {expect_off:#x})", w & ((1 << 48) - 1));
    }
    format!("other (first word {w:#018x})")
}

// ---------------------------------------------------------------------------
// Shapes and topologies.

/// A request shape: named ranges of ivshmem's BAR2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Name.
    pub name: String,
    /// (offset, length).
    pub ranges: Vec<(u64, u64)>,
}

const GIB: u64 = 1 << 30;

/// The shapes for a BAR of `bar_len` bytes, filtered by name (`only`).
pub fn shapes(bar_len: u64, only: Option<&[String]>) -> Vec<Shape> {
    let s = |name: &str, ranges: Vec<(u64, u64)>| Shape { name: name.into(), ranges };
    let mut v = vec![
        s("one", vec![(0x1000, 0x4000)]),
        s("two-scattered", vec![(0x10000, 0x2000), (0x200000, 0x3000)]),
        s("three-scattered", vec![(0x100000, 0x1000), (0x2000, 0x3000), (0x800000, 0x2000)]),
        s("reversed", vec![(0x400000, 0x1000), (0x300000, 0x1000), (0x200000, 0x1000)]),
        s("adjacent", vec![(0x20000, 0x1000), (0x21000, 0x1000)]),
        s("whole-bar", vec![(0, bar_len)]),
        s("many-small", (0..32u64).map(|i| (i * 0x40000 + (i % 3) * 0x1000, 0x1000)).collect()),
    ];
    if bar_len >= 8 * GIB {
        v.push(s("range-over-4g", vec![(0, 5 * GIB)]));
        v.push(s("total-over-4g", vec![(0, 3 * GIB), (4 * GIB, 2 * GIB)]));
        v.push(s("two-above-4g", vec![(5 * GIB, 0x2000), (0x1000, 0x1000)]));
    }
    v.retain(|sh| only.is_none_or(|o| o.contains(&sh.name)));
    v
}

/// How QEMU places the two devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Both integrated on pcie.0.
    RootComplex,
    /// Behind one switch: x3130-upstream + two xio3130-downstream ports.
    Switch,
    /// Functions 0 and 1 of one slot behind a root port.
    Multifunction,
}

/// The P2P path a topology is predicted to take (kmod-shim's input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// `PCI_P2PDMA_MAP_NOT_SUPPORTED`.
    NotSupported,
    /// THRU_HOST_BRIDGE through a translating IOMMU: the IOVA path.
    IovaPath,
    /// THRU_HOST_BRIDGE with dma-direct (iommu=pt): one entry per range.
    PerRangeDirect,
    /// `PCI_P2PDMA_MAP_BUS_ADDR`.
    BusAddr,
}

/// A QEMU topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Name (`--topology`).
    pub name: String,
    /// What it exercises.
    pub about: String,
    /// `-cpu`.
    pub cpu: String,
    /// Extra kernel command line.
    pub cmdline: String,
    /// Device placement.
    pub placement: Placement,
    /// ivshmem's BAR2 size (the backing file's size).
    pub ivshmem_size: String,
    /// Disable ACS on the root port (`pci=disable_acs_redir=`)?
    pub acs_off: bool,
    /// The predicted path.
    pub expect: Expect,
}

/// Every topology, in matrix order.
pub fn topologies() -> Vec<Topology> {
    let t =
        |name: &str, about: &str, cpu: &str, cmdline: &str, placement, ivshmem_size: &str, acs_off, expect| Topology {
            name: name.into(),
            about: about.into(),
            cpu: cpu.into(),
            cmdline: cmdline.into(),
            placement,
            ivshmem_size: ivshmem_size.into(),
            acs_off,
            expect,
        };
    use Expect::*;
    use Placement::*;
    vec![
        t(
            "rc-epyc-iova",
            "root complex, AMD 17h (whitelisted), intel-iommu: THRU_HOST_BRIDGE, IOVA path",
            "EPYC",
            "intel_iommu=on",
            RootComplex,
            "16M",
            false,
            IovaPath,
        ),
        t(
            "rc-max",
            "root complex, -cpu max (not whitelisted): NOT_SUPPORTED",
            "max",
            "intel_iommu=on",
            RootComplex,
            "16M",
            false,
            NotSupported,
        ),
        t(
            "rc-epyc-pt",
            "root complex, AMD 17h, iommu=pt: THRU_HOST_BRIDGE, per-range dma-direct",
            "EPYC",
            "intel_iommu=on iommu=pt",
            RootComplex,
            "16M",
            false,
            PerRangeDirect,
        ),
        t(
            "rc-epyc-iova-large",
            "as rc-epyc-iova with an 8 GiB sparse ivshmem BAR: ranges and totals over 4 GiB",
            "EPYC",
            "intel_iommu=on",
            RootComplex,
            "8G",
            false,
            IovaPath,
        ),
        t(
            "switch",
            "both behind one PCIe switch (x3130 + 2 x xio3130): BUS_ADDR",
            "EPYC",
            "intel_iommu=on",
            Switch,
            "16M",
            false,
            BusAddr,
        ),
        t(
            "mf-acs",
            "multifunction pair behind a root port, ACS as the kernel sets it",
            "EPYC",
            "intel_iommu=on",
            Multifunction,
            "16M",
            false,
            BusAddr,
        ),
        t(
            "mf-noacs",
            "multifunction pair behind a root port, pci=disable_acs_redir on the root port",
            "EPYC",
            "intel_iommu=on",
            Multifunction,
            "16M",
            true,
            BusAddr,
        ),
    ]
}

// ---------------------------------------------------------------------------
// What the guest reports.

/// edu's read of one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    /// Range index.
    pub range: usize,
    /// BAR offset the bytes should come from.
    pub bar_off: u64,
    /// DMA address edu was given.
    pub dma_addr: u64,
    /// Bytes.
    pub len: u32,
    /// `ok`, or what edu read instead ([`classify`]), or the DMA's errno.
    pub result: String,
}

/// One shape through export, attach, map and edu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ShapeResult {
    /// The shape name.
    pub name: String,
    /// Its ranges.
    pub ranges: Vec<(u64, u64)>,
    /// GET: the dma-buf size, or the errno name.
    pub export: String,
    /// Attach: 0 or -errno.
    pub attach_err: Option<i32>,
    /// Map: 0 or -errno.
    pub map_err: Option<i32>,
    /// `sgt->nents`.
    pub nents: u32,
    /// `sgt->orig_nents`.
    pub orig_nents: u32,
    /// DMA entries (all of them, even beyond the copied ones).
    pub total_entries: u32,
    /// The copied (DMA address, length) entries.
    pub entries: Vec<(u64, u64)>,
    /// edu's reads.
    pub reads: Vec<Read>,
}

/// The guest's report in importer mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImporterReport {
    /// `uname -r`.
    pub kernel: String,
    /// Topology name.
    pub topology: String,
    /// Set when the guest could not run.
    pub error: Option<String>,
    /// ivshmem as bound to vfio-pci.
    pub ivshmem: Option<DeviceInfo>,
    /// edu's BDF.
    pub edu_bdf: String,
    /// IOMMU groups: bdf -> group members.
    pub groups: Vec<(String, String)>,
    /// `pci_p2pdma_distance(ivshmem, edu)`, or the errno.
    pub distance: Option<i32>,
    /// Kernel log lines about p2pdma, DMAR faults and the fixture.
    pub dmesg: Vec<String>,
    /// Sanitizer report lines at the end of the run ([`crate::sanitizer`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sanitizer: Vec<String>,
    /// Per shape.
    pub shapes: Vec<ShapeResult>,
    /// Revocation steps.
    pub rev: Vec<RevStep>,
    /// The IOVA path by hand (defect #1): per shape and link-offset mode.
    pub iova_by_hand: Vec<IovaProbe>,
}

/// The fixture's `OP_IOVA`: `dma_iova_try_alloc` + one `dma_iova_link` per
/// range + `dma_iova_sync`, edu reading the start of every range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IovaProbe {
    /// Shape name.
    pub shape: String,
    /// `offset 0 (as the kernel links)` or `offset = bytes linked (corrected)`.
    pub mode: String,
    /// 0 or -errno (of the failing link, sync, or edu).
    pub err: i32,
    /// The range whose link failed (= number of ranges when none failed).
    pub failed_range: u32,
    /// The IOVA span.
    pub iova: u64,
    /// Bytes linked.
    pub linked: u64,
    /// What edu read at IOVA + (sum of earlier lengths) for each range.
    pub reads: Vec<String>,
}

/// One revocation step as the guest saw it (or as kmod-shim predicts it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RevStep {
    /// What was done.
    pub step: String,
    /// `invalidate_mappings` calls so far.
    pub invalidations: u32,
    /// Whether the fixture still held its mapping before remapping.
    pub mapped_before_remap: bool,
    /// Remap (keep) errno: 0 or -errno; None when not tried.
    pub remap_err: Option<i32>,
    /// What edu read at the previous mapping's first DMA address.
    pub old_read: Option<String>,
    /// Free text (a step that could not run).
    pub note: String,
}

impl RevStep {
    /// A step that only carries a note.
    pub fn note(step: &str, note: impl Into<String>) -> Self {
        Self { step: step.into(), note: note.into(), ..Default::default() }
    }
}

/// The chunks edu reads for a shape, given the map's DMA entries: the start
/// of each range (up to 1 KiB), and for ranges over a page also their last
/// 256 bytes. Returns (range, bar offset, dma address, len); chunks never
/// cross a DMA entry. Ranges beyond the copied entries are skipped.
pub fn read_plan(ranges: &[(u64, u64)], entries: &[(u64, u64)]) -> Vec<(usize, u64, u64, u32)> {
    let dma_at = |buf_off: u64| -> Option<(u64, u64)> {
        let mut base = 0u64;
        for &(a, l) in entries {
            if buf_off < base + l {
                return Some((a + (buf_off - base), base + l - buf_off));
            }
            base += l;
        }
        None
    };
    let mut plan = Vec::new();
    let mut buf_off = 0u64;
    for (i, &(off, len)) in ranges.iter().enumerate() {
        let mut chunks = vec![(0u64, len.min(1024))];
        if len > 4096 {
            chunks.push((len - 256, 256));
        }
        for (c, n) in chunks {
            if let Some((addr, room)) = dma_at(buf_off + c) {
                plan.push((i, off + c, addr, n.min(room) as u32));
            }
        }
        buf_off += len;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_names_its_offset() {
        let p = pattern(0x2000, 32);
        assert_eq!(classify(&p, 0x2000), "ok");
        assert_eq!(classify(&p, 0x10000), "bytes of BAR offset 0x2000 (expected 0x10000)");
        assert_eq!(classify(&[0xee; 16], 0), "canary (the DMA wrote nothing)");
    }

    #[test]
    fn read_plan_walks_the_entries() {
        // One IOVA span for two ranges.
        let p = read_plan(&[(0x10000, 0x2000), (0x200000, 0x3000)], &[(0xff00_0000, 0x5000)]);
        assert_eq!(
            p,
            vec![
                (0, 0x10000, 0xff00_0000, 1024),
                (0, 0x11f00, 0xff00_1f00, 256),
                (1, 0x200000, 0xff00_2000, 1024),
                (1, 0x202f00, 0xff00_4f00, 256),
            ]
        );
        // Per-range entries.
        let p = read_plan(&[(0, 0x1000), (0x5000, 0x1000)], &[(0xa000, 0x1000), (0xf000, 0x1000)]);
        assert_eq!(p, vec![(0, 0, 0xa000, 1024), (1, 0x5000, 0xf000, 1024)]);
    }
}
