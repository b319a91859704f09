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
/// [`crate::DEFECTS`], each with the kernels its faithful behaviour
/// reproduces ([`crate::Defect::faithful_models`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fidelity {
    /// The kernel as read (6.19-7.0 torvalds/linux), including its
    /// questionable paths; for defect 5, the code before its upstream fix
    /// in v7.0-rc6.
    Kernel,
    /// The alternative: every failure leaves the state as it was.
    #[default]
    Fixed,
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
