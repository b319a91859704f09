//! Fault injection (no C file; the kernel's is `CONFIG_FAULT_INJECTION`):
//! which modelled kernel call fails, and at which step.

/// A call site that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultSite {
    /// Any modelled kernel allocation: every [`crate::Alloc`] except the
    /// IOVA span, counted in the kernel's order (`memdup_array_user()`,
    /// `kzalloc()`/`kcalloc()`, `dma_buf_export()`, the attachment of
    /// `dma_buf_dynamic_attach()`, `sg_alloc_table()`).
    Alloc,
    /// `dma_iova_try_alloc()`: the IOVA allocation fails, so
    /// `dma_buf_phys_vec_to_sgt()` falls back to per-range mapping (not an
    /// error).
    IovaAlloc,
    /// `dma_iova_link()` returns an error.
    IovaLink,
    /// `dma_map_phys()` returns `DMA_MAPPING_ERROR`.
    MapPhys,
    /// `dma_iova_sync()` returns an error.
    IovaSync,
    /// `dma_buf_fd()` fails (`get_unused_fd_flags()`: EMFILE).
    DmaBufFd,
}

impl FaultSite {
    /// Every site, for exhaustive fault sweeps.
    pub const ALL: [FaultSite; 6] = [
        FaultSite::Alloc,
        FaultSite::IovaAlloc,
        FaultSite::IovaLink,
        FaultSite::MapPhys,
        FaultSite::IovaSync,
        FaultSite::DmaBufFd,
    ];

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// Fail the `step`-th call (0-based) at `site` counted from when the plan is
/// armed ([`crate::Shim::arm_fault`]). A plan fires once, then disarms, so a
/// sweep over `step` visits every failure point of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultPlan {
    /// Where to fail.
    pub site: FaultSite,
    /// Which call at that site fails.
    pub step: u64,
}

impl FaultPlan {
    /// Fail the `step`-th call at `site`.
    pub const fn new(site: FaultSite, step: u64) -> Self {
        Self { site, step }
    }
}

/// Whether the shim reproduces the kernel's error paths as written, or the
/// corrected ones this crate proposes. The differences are the
/// [`crate::DEFECTS`], each with the mode that reproduces it
/// ([`crate::Defect::fidelity`]) and the kernels it models
/// ([`crate::Defect::faithful_models`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fidelity {
    /// Linux [`Fidelity::KERNEL_VERSION`] (Debian's 7.2.13 source, read
    /// file by file), including its questionable paths: defects 1 to 4.
    /// Debian 7.3.4's `dma-buf-mapping.c` and `vfio_pci_dmabuf.c` are
    /// byte-identical, so this is 7.3.4 too for everything the model
    /// reproduces (7.3.4's `dma_iova_destroy()` differs in how much IOVA it
    /// hands back, which the model's allocator cannot tell apart: see
    /// `dma_iova_destroy()` in `dma_buf_mapping.rs`).
    Kernel,
    /// [`Fidelity::Kernel`] plus defect 5, the `dma_buf_fd()` double
    /// release of the trees before its fix in v7.0-rc6 (e98137f0a874): the
    /// one behaviour of 6.19 to 7.0-rc5 the model keeps that 7.2.13 no
    /// longer has. Everything else is 7.2.13's.
    KernelPre70Rc6,
    /// The alternative: every failure leaves the state as it was; for
    /// defects 1 to 4 exactly what `kernel-patches/0001-0004` make the
    /// 7.2.13 code do.
    #[default]
    Fixed,
}

impl Fidelity {
    /// The Linux release [`Fidelity::Kernel`] reproduces.
    pub const KERNEL_VERSION: &'static str = "7.2.13";

    /// Whether the kernel's defects 1 to 4 are reproduced (both kernel
    /// modes).
    pub const fn is_kernel(self) -> bool {
        matches!(self, Fidelity::Kernel | Fidelity::KernelPre70Rc6)
    }
}

/// Armed plan plus per-site call counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    plan: Option<FaultPlan>,
    calls: [u64; FaultSite::ALL.len()],
    fired: Option<FaultPlan>,
}

impl Faults {
    pub(crate) fn arm(&mut self, plan: Option<FaultPlan>) {
        self.plan = plan;
        self.calls = [0; FaultSite::ALL.len()];
        self.fired = None;
    }

    /// Counts a call at `site`; true if this call must fail.
    pub(crate) fn hit(&mut self, site: FaultSite) -> bool {
        let n = self.calls[site.index()];
        self.calls[site.index()] = n + 1;
        match self.plan {
            Some(p) if p.site == site && p.step == n => {
                self.fired = self.plan.take();
                true
            }
            _ => false,
        }
    }

    pub(crate) fn fired(&self) -> Option<FaultPlan> {
        self.fired
    }

    pub(crate) fn calls(&self, site: FaultSite) -> u64 {
        self.calls[site.index()]
    }
}
