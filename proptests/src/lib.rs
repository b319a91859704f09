//! Oracles and fixtures shared by the property tests (`tests/`) and the fuzz
//! targets (`../fuzz`).
//!
//! Every oracle takes concrete inputs, runs the validator and/or the
//! kmod-shim, and panics with a message naming the broken claim. Proptest
//! turns a panic into a shrunk, persisted counterexample; libFuzzer turns it
//! into a crash file. Both drive the same code, so a fuzz finding replays as
//! a property regression and vice versa.
//!
//! - [`fixtures`]: devices, importer topologies, edge values.
//! - [`well_formed`]: a well-formed [`uapi::OwnedRequest`] (the
//!   workspace's one owned request).
//! - [`oracle`]: the claims.
//! - [`lifecycle`]: a driver for random sequences of attach, map, unmap,
//!   revoke, restore, close and release, with a reference model.
//! - [`kernel_corpus`]: the committed corpora of the real kernel's answers.
//! - [`scenario`]: the structured fuzz input (manual [`arbitrary::Arbitrary`]
//!   with an exact inverse, so seeds can be written as values).
pub mod claims;
pub mod fixtures;
pub mod fuzz;
pub mod kernel_corpus;
pub mod lifecycle;
pub mod oracle;
pub mod scenario;

use uapi::{DmaRange, OwnedRequest};

/// [`OwnedRequest::well_formed`] for the fixtures and generators here, whose
/// range counts (at most a few thousand) always fit `argsz` and
/// `nr_ranges`.
pub fn well_formed(region_index: u32, open_flags: u32, ranges: &[DmaRange]) -> OwnedRequest {
    OwnedRequest::well_formed(region_index, open_flags, ranges).expect("a few thousand ranges always fit argsz")
}

/// The position of a rejection's check in kernel order (index into
/// [`validator::Reject::ALL`]; per-range checks compare by kind only).
pub fn check_order(r: &validator::Reject) -> usize {
    validator::Reject::ALL.iter().position(|x| x.name() == r.name()).expect("every Reject is in ALL")
}
