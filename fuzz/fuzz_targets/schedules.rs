//! cargo-fuzz target `schedules`: the body is `harness/schedules.rs`, shared with
//! the stable smoke test `tests/fuzz_smoke.rs` of the main crate.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::schedules::run(data));
