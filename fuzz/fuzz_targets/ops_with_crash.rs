//! cargo-fuzz target `ops_with_crash`: the body is `harness/ops_with_crash.rs`, shared with
//! the stable smoke test `tests/fuzz_smoke.rs` of the main crate.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::ops_with_crash::run(data));
