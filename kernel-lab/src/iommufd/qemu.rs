//! QEMU's side of a BAR dma-buf, as `hw/vfio/region.c` and `hw/vfio/pci.c`
//! compute it: how many mmap areas (`region->nr_mmaps`) a BAR gets from
//! its region info (`vfio_region_setup()`, `vfio_setup_region_sparse_mmaps()`)
//! and the MSI-X carve-out (`vfio_pci_fixup_msix_region()`), the dma-buf
//! `vfio_region_create_dma_buf()` asks for (one range per area) and the
//! `IOMMU_IOAS_MAP_FILE` calls the memory listener then makes (one per
//! area section, `start` = the area's offset in the region, as QEMU sets
//! `fd_offset`). Pure: the guest feeds it the device's real answers.

use serde::{Deserialize, Serialize};
use zerocopy::FromBytes;

use uapi::{
    InfoCapHeader, RegionInfo, RegionInfoCapSparseMmap, SparseMmapArea, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
    VFIO_REGION_INFO_CAP_SPARSE_MMAP, VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_MMAP,
};

/// `PCI_MSIX_ENTRY_SIZE`: bytes per MSI-X table entry.
pub const PCI_MSIX_ENTRY_SIZE: u64 = 16;

/// What `VFIO_DEVICE_GET_REGION_INFO` says about a BAR, capabilities
/// decoded: all QEMU's area computation reads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegionFacts {
    /// `vfio_region_info.flags`.
    pub flags: u32,
    /// `vfio_region_info.size`.
    pub size: u64,
    /// Every capability in the chain, `(id, version)`, in chain order.
    pub caps: Vec<(u16, u16)>,
    /// The sparse-mmap capability's areas `(offset, size)`, if present.
    pub sparse: Option<Vec<(u64, u64)>>,
    /// Whether `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE` is in the chain.
    pub msix_mappable: bool,
}

/// The MSI-X table as the device's capability places it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixTable {
    /// The BAR holding the table (the BIR).
    pub bar: u32,
    /// The table's offset in that BAR.
    pub offset: u64,
    /// Table entries.
    pub entries: u64,
}

/// Why a region-info reply or config space could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The reply is shorter than `struct vfio_region_info`.
    ShortInfo(usize),
    /// A capability link points outside the reply, or back into the fixed part.
    BadLink(u32),
    /// The chain does not end within as many links as the reply has bytes.
    Loop,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::ShortInfo(n) => write!(f, "region info reply of {n} bytes"),
            DecodeError::BadLink(o) => write!(f, "capability link to offset {o} outside the reply"),
            DecodeError::Loop => write!(f, "capability chain does not end"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes a whole `VFIO_DEVICE_GET_REGION_INFO` reply (fixed part and
/// capability chain), as `vfio_get_region_info_cap()` walks it.
pub fn region_facts(reply: &[u8]) -> Result<RegionFacts, DecodeError> {
    let (info, _) = RegionInfo::read_from_prefix(reply).map_err(|_| DecodeError::ShortInfo(reply.len()))?;
    let mut facts = RegionFacts { flags: info.flags, size: info.size, ..Default::default() };
    if info.flags & VFIO_REGION_INFO_FLAG_CAPS == 0 || info.cap_offset == 0 {
        return Ok(facts);
    }
    let fixed = std::mem::size_of::<RegionInfo>();
    let mut off = info.cap_offset;
    for _ in 0..reply.len() {
        if off == 0 {
            return Ok(facts);
        }
        let at = off as usize;
        let bytes = reply.get(at..).filter(|_| at >= fixed).ok_or(DecodeError::BadLink(off))?;
        let (h, _) = InfoCapHeader::read_from_prefix(bytes).map_err(|_| DecodeError::BadLink(off))?;
        facts.caps.push((h.id, h.version));
        if h.id == VFIO_REGION_INFO_CAP_MSIX_MAPPABLE {
            facts.msix_mappable = true;
        }
        if h.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP {
            let (s, rest) = RegionInfoCapSparseMmap::read_from_prefix(bytes).map_err(|_| DecodeError::BadLink(off))?;
            let (areas, _) = <[SparseMmapArea]>::ref_from_prefix_with_elems(rest, s.nr_areas as usize)
                .map_err(|_| DecodeError::BadLink(off))?;
            facts.sparse = Some(areas.iter().map(|a| (a.offset, a.size)).collect());
        }
        off = h.next;
    }
    Err(DecodeError::Loop)
}

/// The MSI-X capability (id 0x11) in the first 256 bytes of config space,
/// as QEMU's `vfio_msix_early_setup()` reads it: BIR and offset from the
/// table dword, entries from message control.
pub fn msix_table(config: &[u8]) -> Option<MsixTable> {
    const PCI_STATUS_CAP_LIST: u8 = 0x10;
    const PCI_CAP_ID_MSIX: u8 = 0x11;
    if config.get(0x06)? & PCI_STATUS_CAP_LIST == 0 {
        return None;
    }
    let mut p = *config.get(0x34)? as usize & !3;
    // At most 48 capabilities fit in the 192 bytes after the header.
    for _ in 0..48 {
        if p < 0x40 {
            return None;
        }
        let id = *config.get(p)?;
        if id == PCI_CAP_ID_MSIX {
            let ctrl = u16::from_le_bytes([*config.get(p + 2)?, *config.get(p + 3)?]);
            let table = u32::from_le_bytes(config.get(p + 4..p + 8)?.try_into().ok()?);
            return Some(MsixTable {
                bar: table & 7,
                offset: u64::from(table & !7),
                entries: u64::from(ctrl & 0x7ff) + 1,
            });
        }
        p = *config.get(p + 1)? as usize & !3;
    }
    None
}

/// `region->mmaps` after `vfio_region_setup()` and, for the MSI-X table's
/// BAR, `vfio_pci_fixup_msix_region()`: `(offset, size)` per area, so
/// `nr_mmaps` is the length. `msix` is the device's table if it lives in
/// this BAR; `page` the host page size.
pub fn qemu_mmaps(region: &RegionFacts, msix: Option<MsixTable>, page: u64) -> Vec<(u64, u64)> {
    if region.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 || region.size == 0 {
        return Vec::new();
    }
    let mut mmaps: Vec<(u64, u64)> = match &region.sparse {
        // vfio_setup_region_sparse_mmaps() keeps the areas of non-zero size.
        Some(areas) => areas.iter().copied().filter(|a| a.1 != 0).collect(),
        None => vec![(0, region.size)],
    };
    let Some(t) = msix else { return mmaps };
    if region.msix_mappable || mmaps.len() != 1 || mmaps[0] != (0, region.size) {
        return mmaps;
    }
    let start = t.offset & !(page - 1);
    let end = (t.offset + t.entries * PCI_MSIX_ENTRY_SIZE).next_multiple_of(page);
    if start == 0 {
        if end >= region.size {
            mmaps.clear();
        } else {
            mmaps[0] = (end, region.size - end);
        }
    } else if end >= region.size {
        mmaps[0].1 = start;
    } else {
        mmaps = vec![(0, start), (end, region.size - end)];
    }
    mmaps
}

/// The `IOMMU_IOAS_MAP_FILE` QEMU makes for each whole area section of a
/// BAR whose dma-buf has one range per area: `(start, length)`, `start`
/// being the area's offset in the region (`ram_block->fd_offset`), not its
/// offset among the concatenated ranges.
pub fn qemu_map_files(mmaps: &[(u64, u64)]) -> Vec<(u64, u64)> {
    mmaps.to_vec()
}

/// Where each area's bytes really start in the dma-buf (its ranges
/// concatenated), for comparison with [`qemu_map_files`].
pub fn dma_buf_offsets(mmaps: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut at = 0;
    mmaps
        .iter()
        .map(|&(_, size)| {
            let r = (at, size);
            at += size;
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    const M: u64 = 1 << 20;
    const P: u64 = 4096;

    fn whole(size: u64) -> RegionFacts {
        RegionFacts { flags: VFIO_REGION_INFO_FLAG_MMAP, size, ..Default::default() }
    }

    fn reply(info: RegionInfo, caps: &[u8]) -> Vec<u8> {
        let mut v = info.as_bytes().to_vec();
        v.extend_from_slice(caps);
        v
    }

    #[test]
    fn one_area_without_caps_or_msix() {
        assert_eq!(qemu_mmaps(&whole(16 * M), None, P), vec![(0, 16 * M)]);
        let no_mmap = RegionFacts { flags: 0, ..whole(16 * M) };
        assert_eq!(qemu_mmaps(&no_mmap, None, P), vec![], "a region without FLAG_MMAP gets no areas");
    }

    #[test]
    fn the_msix_table_splits_the_bar_unless_it_is_mappable() {
        let t = |offset| Some(MsixTable { bar: 2, offset, entries: 16 });
        // In the middle: two areas around the page holding the table.
        assert_eq!(qemu_mmaps(&whole(16 * M), t(8 * M), P), vec![(0, 8 * M), (8 * M + P, 8 * M - P)]);
        // At the start, at the end, the whole BAR.
        assert_eq!(qemu_mmaps(&whole(16 * M), t(0), P), vec![(P, 16 * M - P)]);
        assert_eq!(qemu_mmaps(&whole(16 * M), t(16 * M - P), P), vec![(0, 16 * M - P)]);
        assert_eq!(qemu_mmaps(&whole(P), t(0x800), P), vec![]);
        // Unaligned table: start rounds down, end up.
        assert_eq!(qemu_mmaps(&whole(16 * M), t(8 * M + 0x100), P), vec![(0, 8 * M), (8 * M + P, 8 * M - P)]);
        let mappable = RegionFacts { msix_mappable: true, ..whole(16 * M) };
        assert_eq!(qemu_mmaps(&mappable, t(8 * M), P), vec![(0, 16 * M)]);
        // A sparse cap already shapes the areas: the fixup leaves them.
        let sparse = RegionFacts { sparse: Some(vec![(0, 4 * M), (0, 0), (12 * M, 4 * M)]), ..whole(16 * M) };
        assert_eq!(qemu_mmaps(&sparse, t(8 * M), P), vec![(0, 4 * M), (12 * M, 4 * M)]);
    }

    #[test]
    fn map_file_starts_are_region_offsets_not_dma_buf_offsets() {
        let areas = [(0, 8 * M), (8 * M + P, 8 * M - P)];
        assert_eq!(qemu_map_files(&areas), areas.to_vec());
        assert_eq!(dma_buf_offsets(&areas), vec![(0, 8 * M), (8 * M, 8 * M - P)]);
    }

    #[test]
    fn region_facts_walks_the_capability_chain() {
        let info = RegionInfo {
            argsz: 32 + 8 + 16 + 32,
            flags: VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS,
            index: 2,
            cap_offset: 32,
            size: 16 * M,
            offset: 0,
        };
        let mut caps =
            InfoCapHeader { id: VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, version: 1, next: 40 }.as_bytes().to_vec();
        let sparse = RegionInfoCapSparseMmap {
            header: InfoCapHeader { id: VFIO_REGION_INFO_CAP_SPARSE_MMAP, version: 1, next: 0 },
            nr_areas: 2,
            reserved: 0,
        };
        caps.extend_from_slice(sparse.as_bytes());
        caps.extend_from_slice(SparseMmapArea { offset: 0, size: 4 * M }.as_bytes());
        caps.extend_from_slice(SparseMmapArea { offset: 8 * M, size: 8 * M }.as_bytes());
        let f = region_facts(&reply(info, &caps)).unwrap();
        assert_eq!(f.caps, vec![(3, 1), (1, 1)]);
        assert!(f.msix_mappable);
        assert_eq!(f.sparse, Some(vec![(0, 4 * M), (8 * M, 8 * M)]));
        assert_eq!(qemu_mmaps(&f, None, P).len(), 2, "nr_mmaps = the sparse areas");
        // Without FLAG_CAPS the chain is not read.
        let plain = RegionInfo { flags: VFIO_REGION_INFO_FLAG_MMAP, ..info };
        assert_eq!(region_facts(&reply(plain, &caps)).unwrap().caps, vec![]);
    }

    #[test]
    fn region_facts_refuses_bad_chains_without_panicking() {
        let info = RegionInfo { flags: VFIO_REGION_INFO_FLAG_CAPS, cap_offset: 32, ..Default::default() };
        let looped = InfoCapHeader { id: 9, version: 1, next: 32 };
        assert_eq!(region_facts(&reply(info, looped.as_bytes())), Err(DecodeError::Loop));
        let out = InfoCapHeader { id: 9, version: 1, next: 4000 };
        assert_eq!(region_facts(&reply(info, out.as_bytes())), Err(DecodeError::BadLink(4000)));
        let into_fixed = RegionInfo { cap_offset: 8, ..info };
        assert_eq!(region_facts(&reply(into_fixed, &[0; 8])), Err(DecodeError::BadLink(8)));
        let sparse_short = RegionInfoCapSparseMmap {
            header: InfoCapHeader { id: VFIO_REGION_INFO_CAP_SPARSE_MMAP, version: 1, next: 0 },
            nr_areas: 5,
            reserved: 0,
        };
        assert_eq!(region_facts(&reply(info, sparse_short.as_bytes())), Err(DecodeError::BadLink(32)));
        assert_eq!(region_facts(&[0; 31]), Err(DecodeError::ShortInfo(31)));
    }

    #[test]
    fn msix_table_from_config_space() {
        let mut c = vec![0u8; 256];
        assert_eq!(msix_table(&c), None, "no capability list");
        c[0x06] = 0x10;
        c[0x34] = 0x40;
        c[0x40] = 0x05; // MSI, then MSI-X at 0x50
        c[0x41] = 0x50;
        c[0x50] = 0x11;
        c[0x52..0x54].copy_from_slice(&(15u16 | 0x8000).to_le_bytes());
        c[0x54..0x58].copy_from_slice(&(0x0080_0000u32 | 2).to_le_bytes());
        assert_eq!(msix_table(&c), Some(MsixTable { bar: 2, offset: 8 * M, entries: 16 }));
        c[0x51] = 0x40; // a loop back to MSI: ends, no panic
        c[0x50] = 0x09;
        assert_eq!(msix_table(&c), None);
        assert_eq!(msix_table(&c[..0x30]), None);
    }
}
