//! Raw bytes -> `Request::decode` -> `validate` (both policies) -> shim
//! export and map on every path, with the shared invariant checker.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| props::fuzz::bytes(data));
