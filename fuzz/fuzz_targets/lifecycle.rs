//! Random sequences of export, attach, map, unmap, detach, revoke, restore,
//! close, release and fault arming, against the lifecycle reference model.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| props::fuzz::lifecycle(data));
