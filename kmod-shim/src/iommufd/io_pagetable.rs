//! `drivers/iommu/iommufd/io_pagetable.c`, the path of
//! `IOMMU_IOAS_MAP_FILE` for a dma-buf fd and of `IOMMU_IOAS_UNMAP` as in
//! Linux 7.2.13: `iopt_map_file_pages()`, the parts of `iopt_map_common()` /
//! `iopt_alloc_area_pages()` it reaches, and `iopt_unmap_iova()`; plus the
//! IOAS (`struct iommufd_ioas`, `struct io_pagetable`) with the one domain
//! of the device attached to it.

use std::fmt;

use crate::dma_buf::AttachError;
use crate::iommu::Iommu;
use crate::iommufd::pages::IoptPages;
use crate::state::DmaBufId;
use crate::{Errno, Shim};

/// An IOAS, by index (`IOMMU_IOAS_ALLOC`'s `out_ioas_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IoasId(pub usize);

/// An area mapped by `IOMMU_IOAS_MAP_FILE`, by index (the model's handle
/// for the IOVA range `IOMMU_IOAS_UNMAP` takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IoptAreaId(pub usize);

/// `struct iommufd_ioas`: an IOVA space and the domain of the device
/// attached to it (the kernel lab's selftest attaches the vfio device itself
/// through its cdev, so the domain is the exporter's own).
///
/// The model's IOVA allocator is [`Iommu`]'s first fit, not
/// `iopt_alloc_iova()`'s alignment-keeping search: the addresses differ, the
/// translations do not.
#[derive(Debug, Clone)]
pub struct Ioas {
    /// The attached device's domain: the area's IOVA allocations and what
    /// they translate to.
    pub domain: Iommu,
}

/// Why `IOMMU_IOAS_MAP_FILE` or `IOMMU_IOAS_UNMAP` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IommufdError {
    /// `iommufd_get_ioas()`: no such IOAS. ENOENT.
    NoSuchIoas,
    /// `iopt_map_file_pages()`: `!length` (`io_pagetable.c:492-493`).
    /// EINVAL.
    ZeroLength,
    /// `iopt_map_file_pages()`: `start + length - 1` wraps (:494-495).
    /// EOVERFLOW.
    Overflow,
    /// The fd is not an open dma-buf (`dma_buf_get()`, then `fget()`
    /// fails). EBADF.
    BadFd,
    /// `iopt_alloc_dmabuf_pages()`: the range ends past the dma-buf
    /// (`pages.c:1540-1542`). EINVAL.
    OutsideDmaBuf,
    /// `iopt_alloc_pages()` or the attachment's allocation failed. ENOMEM.
    NoMem,
    /// `dma_buf_dynamic_attach()` → `vfio_pci_dma_buf_attach()` refused:
    /// ENODEV while the dma-buf is revoked (iommufd's attach ops are P2P
    /// and revocable, so that is the only refusal it meets).
    Attach(AttachError),
    /// `vfio_pci_dma_buf_iommufd_map()` refused: EOPNOTSUPP for a dma-buf
    /// of more than one range (`vfio_pci_dmabuf.c:134-136`), ENODEV if it
    /// was revoked in between (:131-132).
    IommufdMap(Errno),
    /// A start not page-aligned: the kernel maps it (with a sub-page IOVA
    /// offset), the model does not. EINVAL (the model's limit).
    UnalignedStart,
    /// `iopt_alloc_area_pages()`: a length not a multiple of the IOVA
    /// alignment (:272-275). EINVAL.
    UnalignedLength,
    /// `iopt_alloc_iova()`: no hole large enough (:180). ENOSPC.
    NoIova,
    /// The domain's `iommu_map()` refused.
    DomainMap(Errno),
    /// `iopt_unmap_iova()`: the area is gone (`iopt_unmap_iova_range()`
    /// finds nothing). ENOENT.
    NoSuchArea,
}

impl IommufdError {
    /// The errno the ioctl returns.
    pub fn errno(&self) -> Errno {
        match self {
            IommufdError::NoSuchIoas | IommufdError::NoSuchArea => Errno::ENOENT,
            IommufdError::ZeroLength
            | IommufdError::OutsideDmaBuf
            | IommufdError::UnalignedStart
            | IommufdError::UnalignedLength => Errno::EINVAL,
            IommufdError::Overflow => Errno::EOVERFLOW,
            IommufdError::BadFd => Errno::EBADF,
            IommufdError::NoMem => Errno::ENOMEM,
            IommufdError::Attach(e) => e.errno(),
            IommufdError::IommufdMap(e) | IommufdError::DomainMap(e) => *e,
            IommufdError::NoIova => Errno::ENOSPC,
        }
    }
}

impl fmt::Display for IommufdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.errno();
        match self {
            IommufdError::NoSuchIoas => write!(f, "no such IOAS ({e})"),
            IommufdError::ZeroLength => write!(f, "iopt_map_file_pages(): length 0 ({e})"),
            IommufdError::Overflow => write!(f, "iopt_map_file_pages(): start + length wraps ({e})"),
            IommufdError::BadFd => write!(f, "not an open dma-buf ({e})"),
            IommufdError::OutsideDmaBuf => write!(f, "iopt_alloc_dmabuf_pages(): past the dma-buf's end ({e})"),
            IommufdError::NoMem => write!(f, "iopt_alloc_dmabuf_pages(): allocation failed ({e})"),
            IommufdError::Attach(a) => write!(f, "iopt_map_dmabuf(): {a}"),
            IommufdError::IommufdMap(_) => write!(f, "vfio_pci_dma_buf_iommufd_map() refused ({e})"),
            IommufdError::UnalignedStart => write!(f, "start not page-aligned (the model's limit) ({e})"),
            IommufdError::UnalignedLength => write!(f, "iopt_alloc_area_pages(): length not aligned ({e})"),
            IommufdError::NoIova => write!(f, "iopt_alloc_iova(): no IOVA hole ({e})"),
            IommufdError::DomainMap(_) => write!(f, "iommu_map() of the area failed ({e})"),
            IommufdError::NoSuchArea => write!(f, "iopt_unmap_iova(): no such area ({e})"),
        }
    }
}

impl std::error::Error for IommufdError {}

impl Shim {
    /// `IOMMU_IOAS_ALLOC` plus attaching a device whose domain's IOVA
    /// aperture is `[start, end)`, both page-aligned.
    pub fn iommufd_ioas_alloc(&mut self, aperture_start: u64, aperture_end: u64) -> IoasId {
        let page = self.vdev.dev.page_size.bytes();
        let domain = Iommu::new(aperture_start, aperture_end, page).with_model(self.iommu_model);
        self.ioas.push(Ioas { domain });
        IoasId(self.ioas.len() - 1)
    }

    /// An IOAS.
    pub fn ioas(&self, id: IoasId) -> Option<&Ioas> {
        self.ioas.get(id.0)
    }

    /// An IOAS, mutably (tests use it to change a domain behind the model's
    /// back and see the checker catch it, as [`Shim::importer_mut`] does for
    /// an importer's IOMMU).
    pub fn ioas_mut(&mut self, id: IoasId) -> Option<&mut Ioas> {
        self.ioas.get_mut(id.0)
    }

    /// A live iommufd area and the dma-buf pages behind it.
    pub fn iopt_pages(&self, id: IoptAreaId) -> Option<&IoptPages> {
        self.iopt_pages.get(id.0)?.as_ref()
    }

    /// Live iommufd areas, for checkers.
    pub fn iopt_areas(&self) -> impl Iterator<Item = (IoptAreaId, &IoptPages)> {
        self.iopt_pages.iter().enumerate().filter_map(|(i, p)| p.as_ref().map(|p| (IoptAreaId(i), p)))
    }

    /// IOAS's, for checkers.
    pub fn ioases(&self) -> impl Iterator<Item = (IoasId, &Ioas)> {
        self.ioas.iter().enumerate().map(|(i, x)| (IoasId(i), x))
    }

    /// `IOMMU_IOAS_MAP_FILE` of `length` bytes of dma-buf `buf` from byte
    /// `start`, at an IOVA the IOAS picks (`IOPT_ALLOC_IOVA`):
    /// `iopt_map_file_pages()` (`io_pagetable.c:482-527`) in its order, the
    /// dma-buf pages (`iopt_alloc_dmabuf_pages()`, `pages.c`), then
    /// `iopt_map_common()` (:408) reserves the IOVA and fills the domain.
    /// Any failure puts the pages, which detaches from the dma-buf.
    pub fn iommufd_map_file(
        &mut self,
        ioas: IoasId,
        buf: DmaBufId,
        start: u64,
        length: u64,
    ) -> Result<IoptAreaId, IommufdError> {
        if self.ioas.get(ioas.0).is_none() {
            return Err(IommufdError::NoSuchIoas);
        }
        if length == 0 {
            return Err(IommufdError::ZeroLength);
        }
        if start.checked_add(length - 1).is_none() {
            return Err(IommufdError::Overflow);
        }
        // dma_buf_get(fd): the user passes the dma-buf's fd.
        if !self.dma_buf(buf).is_some_and(|b| b.fd_open) {
            return Err(IommufdError::BadFd);
        }
        let page = self.vdev.dev.page_size.bytes();
        if start % page != 0 {
            return Err(IommufdError::UnalignedStart);
        }
        let p = self.iopt_alloc_dmabuf_pages(ioas, buf, start, length)?;
        let Some(pages) = self.iopt_pages.get(p).and_then(Option::as_ref).copied() else {
            return Err(IommufdError::NoMem);
        };
        let Some(io) = self.ioas.get_mut(ioas.0) else { return Err(IommufdError::NoSuchIoas) };
        // iopt_alloc_area_pages().
        if length % page != 0 {
            self.iopt_release_pages(p);
            return Err(IommufdError::UnalignedLength);
        }
        let Some(iova) = io.domain.alloc_iova(length) else {
            self.iopt_release_pages(p);
            return Err(IommufdError::NoIova);
        };
        // iopt_area_fill_domains(): a revoked dma-buf maps nothing
        // (:1926), but the pages were just made under the reservation lock.
        if let Err(errno) = io.domain.map(iova, pages.phys.paddr + start, length) {
            io.domain.free_iova(iova, length);
            self.iopt_release_pages(p);
            return Err(IommufdError::DomainMap(errno));
        }
        if let Some(pages) = self.iopt_pages.get_mut(p).and_then(Option::as_mut) {
            pages.iova = iova;
        }
        Ok(IoptAreaId(p))
    }

    /// `IOMMU_IOAS_UNMAP` of the whole area: `iopt_unmap_iova()`
    /// (`io_pagetable.c:848-860`); the domain is unfilled unless revocation
    /// already did it (`iopt_area_unfill_domain()`, `pages.c:1832-1839`),
    /// the IOVA is released and the pages put.
    pub fn iommufd_unmap(&mut self, area: IoptAreaId) -> Result<(), IommufdError> {
        let pages = *self.iopt_pages(area).ok_or(IommufdError::NoSuchArea)?;
        if let Some(io) = self.ioas.get_mut(pages.ioas.0) {
            if !pages.is_revoked() {
                io.domain.unmap(pages.iova, pages.length);
            }
            io.domain.free_iova(pages.iova, pages.length);
        }
        self.iopt_release_pages(area.0);
        Ok(())
    }

    /// Where a DMA of the IOAS's device to `iova` lands: the domain's
    /// translation, then the BAR's decode (nothing while
    /// `PCI_COMMAND_MEMORY` is clear), as [`Shim::peer_reach`].
    pub fn iommufd_reach(&self, ioas: IoasId, iova: u64) -> Option<(u64, u64)> {
        let (phys, run) = self.ioas.get(ioas.0)?.domain.translate(iova)?;
        if !self.vdev.memory_enabled && self.in_bar(phys).is_some() {
            return None;
        }
        Some((phys, run))
    }
}
