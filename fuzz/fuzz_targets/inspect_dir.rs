//! cargo-fuzz target `inspect_dir`: the body is `harness/inspect_dir.rs`, shared with
//! the stable smoke test `tests/fuzz_smoke.rs` of the main crate.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::inspect_dir::run(data));
