//! cargo-fuzz target `recover_segment`: the body is `harness/recover_segment.rs`, shared with
//! the stable smoke test `tests/fuzz_smoke.rs` of the main crate.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::recover_segment::run(data));
