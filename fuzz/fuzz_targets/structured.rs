//! A structured request + device + topology + fault plan -> shim, with the
//! differential oracles: single vs multi-range, validator vs shim, Linux vs
//! Strict, decomposition, Kernel vs Fixed fidelity, fault unwinds.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use props::scenario::Scenario;

fuzz_target!(|s: Scenario| props::fuzz::structured(&s));
