//! The Linux VFIO PCI dma-buf export UAPI, `VFIO_DEVICE_FEATURE_DMA_BUF`, as
//! Rust types whose bytes are exactly the kernel's.
//!
//! - [`layout`]: the structs of `include/uapi/linux/vfio.h` as zerocopy types,
//!   layout pinned by `static_assertions` and by a test against the real header.
//! - [`iommufd`]: the structs of `include/uapi/linux/iommufd.h` the lab
//!   needs to map a dma-buf into an IOAS, pinned the same way.
//! - [`request`]: a decoded request as the kernel meets it (no_std, no alloc).
//! - `builder` (feature `std`): a safe encoder for whole ioctl arguments,
//!   hostile ones included.
//! - `ioctl` (feature `std`): the ioctl boundary via nix, the crate's only
//!   `unsafe` code.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod iommufd;
pub mod layout;
pub mod request;

#[cfg(feature = "std")]
pub mod builder;
#[cfg(feature = "std")]
#[allow(
    unsafe_code,
    reason = "the ioctl boundary: the only module of the workspace with unsafe, each block with a SAFETY comment"
)]
pub mod ioctl;

pub use layout::*;
pub use request::{DecodeError, RangeList, Request};

#[cfg(feature = "std")]
pub use builder::{EncodeError, OwnedRequest, RequestBuilder, MAX_ENCODED_WINDOW};
