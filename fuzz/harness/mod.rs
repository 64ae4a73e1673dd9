//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*` (run by
//! libFuzzer through `cargo fuzz`) and by the main crate's
//! `tests/fuzz_smoke.rs` (runs the checked-in corpus on stable Rust).
//!
//! Each target module has `pub fn run(data: &[u8])`, which panics on a
//! finding and returns normally otherwise. Inputs are decoded with the small
//! [`input::Input`] reader (not the `arbitrary` crate) so that the harness
//! needs nothing beyond `walq` and `crc32fast`, and the checked-in corpus
//! keeps its meaning whatever version of `arbitrary` is around.
#![allow(dead_code)]

pub mod checkpoint;
pub mod decode_record;
pub mod input;
pub mod inspect_dir;
pub mod model;
pub mod ops_with_crash;
pub mod recover_segment;
pub mod schedules;
pub mod seeds;
