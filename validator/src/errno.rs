//! `include/uapi/asm-generic/errno-base.h` and `errno.h`: the errno values
//! the workspace meets, as one type.
//!
//! The validator answers with a few of them; kmod-shim's attach, fd and IOMMU
//! paths, the kernel lab's measurements and the CLI use the rest. Every
//! errno the project names is a variant here, so no crate writes an errno
//! as a number (the numbers are the asm-generic ones, which x86-64 and
//! arm64 share).

macro_rules! errnos {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, )+) => {
        /// An errno value (Linux asm-generic numbering, shared by x86-64 and
        /// arm64).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(i32)]
        pub enum Errno {
            $( $(#[$doc])* $name = $code, )+
        }

        impl Errno {
            /// Every variant, in numeric order.
            pub const ALL: &'static [Errno] = &[$( Errno::$name, )+];

            /// The symbolic name, as `errno.h` spells it.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Errno::$name => stringify!($name), )+
                }
            }

            /// The errno for a number, if it is one this type names.
            pub const fn from_code(code: i32) -> Option<Self> {
                match code {
                    $( $code => Some(Errno::$name), )+
                    _ => None,
                }
            }

            /// The errno for a symbolic name (`"EINVAL"`), if this type names it.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( stringify!($name) => Some(Errno::$name), )+
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    /// Operation not permitted: vfio refuses a device whose IOMMU group is
    /// not viable (another device of the group is bound elsewhere).
    EPERM = 1,
    /// No such file or directory.
    ENOENT = 2,
    /// I/O error.
    EIO = 5,
    /// Argument list too long: the Strict policy's `nr_ranges` cap.
    E2BIG = 7,
    /// Bad file descriptor: no such fd, or the model handle no longer names
    /// a live object.
    EBADF = 9,
    /// Try again.
    EAGAIN = 11,
    /// Out of memory: a kernel allocation failed (the range array past
    /// `KMALLOC_MAX_SIZE`, or an injected failure).
    ENOMEM = 12,
    /// Permission denied.
    EACCES = 13,
    /// Bad address: user memory could not be read.
    EFAULT = 14,
    /// Device or resource busy.
    EBUSY = 16,
    /// File exists: io-pgtable-arm's answer to a present PTE
    /// (`arm_lpae_init_pte()`).
    EEXIST = 17,
    /// No such device: the region is not a BAR, the BAR is absent, or the
    /// dma-buf was revoked.
    ENODEV = 19,
    /// Invalid argument.
    EINVAL = 22,
    /// Too many open files: `get_unused_fd_flags()` in `dma_buf_fd()` found
    /// the fd table full.
    EMFILE = 24,
    /// Not a typewriter: the ioctl or feature is unknown.
    ENOTTY = 25,
    /// No space left on device: an IOVA or page-table space is exhausted.
    ENOSPC = 28,
    /// Function not implemented.
    ENOSYS = 38,
    /// Value too large: a physical address computation wrapped.
    EOVERFLOW = 75,
    /// Operation not supported: `vfio_pci_dma_buf_attach()` for an importer
    /// without peer2peer or without `invalidate_mappings` (7.2.13), or
    /// `vfio_pci_dma_buf_iommufd_map()` for a dma-buf of more than one range.
    EOPNOTSUPP = 95,
    /// Address already in use: Intel VT-d's generic page table meets a
    /// present entry (`__map_range()` / `__map_single_page()` in
    /// `drivers/iommu/generic_pt/iommu_pt.h`, Linux 7.2). Measured by the
    /// kernel lab on 7.2.13 and 7.3.4 (`kernel-lab/FINDINGS.md`, F1).
    EADDRINUSE = 98,
    /// Connection timed out.
    ETIMEDOUT = 110,
}

impl Errno {
    /// The errno number.
    pub const fn code(self) -> i32 {
        self as i32
    }
}

impl core::fmt::Display for Errno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Errno;

    /// The numbers are asm-generic's (restated here, not read from the
    /// table): a typo in the table would otherwise go unnoticed.
    #[test]
    fn numbers_are_asm_generic() {
        let want = [
            ("EPERM", 1),
            ("EBADF", 9),
            ("ENOMEM", 12),
            ("EFAULT", 14),
            ("EEXIST", 17),
            ("ENODEV", 19),
            ("EINVAL", 22),
            ("EMFILE", 24),
            ("ENOTTY", 25),
            ("E2BIG", 7),
            ("EOVERFLOW", 75),
            ("EOPNOTSUPP", 95),
            ("EADDRINUSE", 98),
        ];
        for (name, code) in want {
            let e = Errno::from_name(name).unwrap();
            assert_eq!((e.code(), e.name()), (code, name));
            assert_eq!(Errno::from_code(code), Some(e));
        }
        for e in Errno::ALL {
            assert_eq!(Errno::from_code(e.code()), Some(*e));
        }
    }
}
