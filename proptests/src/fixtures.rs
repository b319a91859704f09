//! Devices, importer topologies and edge values.

use kmod_shim::{max_sg_ent_sz, Bar, Config, Device, DmaOps, ImporterDesc, P2pMapType, PageSize, Policy, Shim};

/// 1 GiB.
pub const GIB: u64 = 1 << 30;

/// The IOMMU aperture of the default importers: 4 GiB up to 2^48.
pub const APERTURE: (u64, u64) = (1 << 32, 1 << 48);

/// A small aperture (16 MiB) where IOVA space runs out.
pub const SMALL_APERTURE: (u64, u64) = (1 << 32, (1 << 32) + (16 << 20));

/// The largest sg table the oracles' shims grant. The kernel's own limit is
/// memory; the model's default is 2^24 entries, which would make a single
/// map of a 2^62-byte dma-buf allocate 200 MB. With this cap, a map whose
/// sg table would be larger fails with ENOMEM, which the oracles predict.
pub const SG_CAP: u32 = 1 << 14;

/// Every page size the model knows.
pub const PAGE_SIZES: [PageSize; 3] = [PageSize::K4, PageSize::K16, PageSize::K64];

/// The shim configuration the oracles use.
pub fn config(policy: Policy, fidelity: kmod_shim::Fidelity) -> Config {
    Config { fidelity, policy, bus_offset: 0, sg_max_entries: SG_CAP }
}

/// A shim for `dev` under `cfg` with `importers` added in order.
pub fn shim_with(dev: Device, cfg: Config, importers: &[ImporterDesc]) -> Shim {
    let mut s = Shim::new(dev, cfg);
    for &d in importers {
        s.add_importer(d);
    }
    s
}

/// The importers every path property maps through: BUS_ADDR, an IOMMU with
/// the IOVA API (one span), the same without it (per range), and dma-direct
/// through the host bridge (per range, DMA address = physical address).
pub fn path_importers() -> [ImporterDesc; 4] {
    let iommu = ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1);
    [
        ImporterDesc::bus_peer(),
        iommu,
        iommu.without_iova_api(),
        ImporterDesc { map_type: P2pMapType::ThruHostBridge, dma: DmaOps::Direct, ..ImporterDesc::bus_peer() },
    ]
}

/// Every kind of importer, including the ones that cannot attach or map:
/// no P2P path, no peer2peer, not revocable (no `invalidate_mappings`,
/// refused by 7.2.13's `vfio_pci_dma_buf_attach()`), a lazy one that
/// unmaps only after revocation waits for it, and a small IOVA aperture.
pub fn all_importers() -> Vec<ImporterDesc> {
    let iommu = ImporterDesc::iommu_peer(APERTURE.0, APERTURE.1);
    let mut v = path_importers().to_vec();
    v.extend([
        ImporterDesc { map_type: P2pMapType::NotSupported, ..iommu },
        ImporterDesc { peer2peer: false, ..iommu },
        ImporterDesc { invalidate_mappings: false, ..iommu },
        ImporterDesc { unmap_in_invalidate_mappings: false, ..iommu },
        ImporterDesc { unmap_in_invalidate_mappings: false, ..ImporterDesc::bus_peer() },
        ImporterDesc::iommu_peer(SMALL_APERTURE.0, SMALL_APERTURE.1),
    ]);
    v
}

/// A device with every BAR kind: BAR0 16 GiB MMIO at 0x40_0000_0000, BAR1
/// 256 B MMIO (smaller than a page, like ivshmem's BAR0), BAR2 I/O ports,
/// BAR3 absent, BAR4 64 KiB MMIO just below 4 GiB, BAR5 1 TiB MMIO at 2^63
/// (physical addresses with bit 63 set).
pub fn edge_device(page: PageSize) -> Device {
    Device::new(page)
        .with_bar(0, Bar::mmio(0x40_0000_0000, 16 * GIB))
        .with_bar(1, Bar::mmio(0xfe80_0000, 0x100))
        .with_bar(2, Bar::io(0xe000, 0x100))
        .with_bar(4, Bar::mmio(0xfe00_0000, 0x1_0000))
        .with_bar(5, Bar::mmio(1 << 63, 1 << 40))
}

/// The values a range field is most likely to break at, for a device with
/// `page`-byte pages and a BAR of `bar_len` bytes: zero, one page, page
/// boundaries ± 1, the BAR's length and its neighbours, the largest sg
/// entry and its neighbours, 4 GiB, 2^63, 2^64 − page and u64::MAX.
pub fn edge_values(page: u64, bar_len: u64) -> Vec<u64> {
    let max_sg = max_sg_ent_sz(page);
    let mut v = vec![
        0,
        1,
        page - 1,
        page,
        page + 1,
        2 * page,
        max_sg - page,
        max_sg,
        max_sg + page,
        1 << 32,
        (1 << 32) + page,
        1 << 62,
        1 << 63,
        (1 << 63) - page,
        (1 << 63) + page,
        0u64.wrapping_sub(page),
        0u64.wrapping_sub(2 * page),
        u64::MAX,
    ];
    for d in [0, page, 2 * page] {
        v.push(bar_len.wrapping_sub(d));
        v.push(bar_len.wrapping_add(d));
    }
    v.push((bar_len / 2) & !(page - 1));
    v
}

/// The `nr_ranges` values the kernel lab's generator favours
/// (`kernel_lab::conformance::gen::NR_RANGES_EDGES`, mirrored here so that the tests do
/// not depend on the lab; `examples/fuzz-seeds.rs` asserts they agree): none,
/// one, two, eight, the Strict cap, the 4 KiB-page kmalloc limit, one past
/// it, and u32::MAX.
pub const NR_RANGES_EDGES: [u32; 8] = [0, 1, 2, 8, 65_536, 262_144, 262_145, u32::MAX];
