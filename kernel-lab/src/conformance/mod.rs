//! The conformance lab: generated requests through the real kernel's
//! `VFIO_DEVICE_FEATURE(DMA_BUF)`, every answer diffed with
//! `validator::validate(.., Policy::Linux)`.

pub mod corpus;
pub mod diff;
pub mod gen;
pub mod replay;
