//! The framebuffer experiment behind the nr-ranges RFC, and the generator of
//! the RFC's evidence.
//!
//! The question kernel reviewers asked of `VFIO_DEVICE_FEATURE_DMA_BUF` was
//! whether `nr_ranges > 1` is needed. This crate answers it with a
//! measurement: a GPU's VRAM is modelled with a buddy allocator in the style
//! of `drm_buddy` ([`buddy`]), filled and fragmented by a seeded workload
//! ([`pressure`]) or by a recorded trace ([`trace`]), and a framebuffer
//! ([`fb`]) is allocated in it, contiguously and scattered. The scattered
//! one is exported through `kmod-shim` as one multi-range dma-buf and, for
//! comparison, as one dma-buf per range (the single-range workaround), and
//! mapped by a peer on each P2P path ([`experiment`]).
//!
//! The rest generates the RFC's evidence: the semantics table from the
//! validator's [`validator::Reject::ALL`] ([`semantics`]), the property list
//! from the `proptests/` sources ([`props`]), the real kernel's facts from
//! the kernel lab's report ([`lab`]), tables and plots ([`report`],
//! [`plots`]).

pub mod buddy;
pub mod experiment;
pub mod fb;
pub mod fb_e2e;
pub mod lab;
pub mod plots;
pub mod pressure;
pub mod props;
pub mod real_buddy;
pub mod report;
pub mod rng;
pub mod semantics;
pub mod trace;

/// The workspace root, where `proptests/`, `kernel-lab/` and `rfc/` live.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(|p| p.to_path_buf()).unwrap_or_default()
}

/// Formats a byte count with a binary unit (`256 MiB`, `16 GiB`, `4 KiB`).
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, unit) in UNITS {
        if b >= unit && b % unit == 0 {
            return format!("{} {name}", b / unit);
        }
    }
    for (name, unit) in UNITS {
        if b >= unit {
            return format!("{:.2} {name}", b as f64 / unit as f64);
        }
    }
    format!("{b} B")
}
