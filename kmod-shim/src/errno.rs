//! Errno values of the shim: the validator's, plus the few the kernel's
//! dma-buf, fd and IOMMU paths answer that the validator never needs.

use validator::Errno;

/// An errno a modelled kernel path returns.
///
/// The validator's [`Errno`] is reused for every value it has; the others
/// live here rather than in `validator/` because only the shim's paths
/// (attach, pin, fd install, IOMMU link) produce them. The lead may fold them
/// into `validator::Errno` later; the numbers are Linux x86-64/arm64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShimErrno {
    /// A value the validator also answers with.
    Known(Errno),
    /// `EBADF` (9): no such fd. Used where a model handle no longer names a
    /// live object (the dma-buf was released, the device is not open).
    EBADF,
    /// `EEXIST` (17): the IOMMU already has a translation at that IOVA, as
    /// io-pgtable-arm answers it (`arm_lpae_init_pte()`); VT-d answers
    /// [`ShimErrno::EADDRINUSE`] instead (see [`crate::IommuModel`]).
    EEXIST,
    /// `EMFILE` (24): `get_unused_fd_flags()` in `dma_buf_fd()` found the fd
    /// table full.
    EMFILE,
    /// `EOPNOTSUPP` (95): `vfio_pci_dma_buf_attach()` without peer2peer, or
    /// `vfio_pci_dma_buf_pin()` for an importer that cannot be revoked.
    EOPNOTSUPP,
    /// `EADDRINUSE` (98): the IOMMU already has a translation at that IOVA,
    /// as Intel VT-d's page table answers it (generic_pt's `map_pages()`:
    /// `__map_range()` / `__map_single_page()` in
    /// `drivers/iommu/generic_pt/iommu_pt.h` meet a present entry). Measured
    /// by the kernel lab on 7.2.13 and 7.3.4 (`kernel-lab/FINDINGS.md`, F1).
    EADDRINUSE,
}

impl ShimErrno {
    /// `ENOMEM`, the answer of every failed allocation.
    pub const ENOMEM: ShimErrno = ShimErrno::Known(Errno::ENOMEM);
    /// `ENODEV`, the answer of a revoked dma-buf.
    pub const ENODEV: ShimErrno = ShimErrno::Known(Errno::ENODEV);
    /// `EINVAL`.
    pub const EINVAL: ShimErrno = ShimErrno::Known(Errno::EINVAL);

    /// The errno number.
    pub const fn code(self) -> i32 {
        match self {
            ShimErrno::Known(e) => e.code(),
            ShimErrno::EBADF => 9,
            ShimErrno::EEXIST => 17,
            ShimErrno::EMFILE => 24,
            ShimErrno::EOPNOTSUPP => 95,
            ShimErrno::EADDRINUSE => 98,
        }
    }

    /// The symbolic name, as `errno.h` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            ShimErrno::Known(e) => e.name(),
            ShimErrno::EBADF => "EBADF",
            ShimErrno::EEXIST => "EEXIST",
            ShimErrno::EMFILE => "EMFILE",
            ShimErrno::EOPNOTSUPP => "EOPNOTSUPP",
            ShimErrno::EADDRINUSE => "EADDRINUSE",
        }
    }
}

impl From<Errno> for ShimErrno {
    fn from(e: Errno) -> Self {
        ShimErrno::Known(e)
    }
}

impl core::fmt::Display for ShimErrno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
