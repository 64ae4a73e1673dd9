//! The fuzz targets on stable Rust, without libFuzzer: every input of the
//! checked-in corpus `fuzz/corpus/<target>/` and every seed that
//! `fuzz/harness/seeds.rs` builds from live workloads goes through the
//! target's `run`, the same function that `cargo fuzz run <target>` calls.
//! A finding's input is added to the corpus, so it stays fixed.
//!
//! `WALQ_FUZZ_WRITE_SEEDS=1 cargo test --test fuzz_smoke` rewrites the
//! `seed-*` files of the corpus from the workloads. See docs/testing.md.

#[path = "../fuzz/harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// The files of `target`'s checked-in corpus, sorted, named by path.
fn corpus_inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|dir| dir.map(|e| e.expect("corpus entry").path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("reading a corpus file");
            (path.display().to_string(), bytes)
        })
        .collect()
}

/// Runs `run` on every input (the seeds, `target`'s corpus and the corpora
/// of the targets in `also`, which share its input format), naming the
/// input that fails.
fn run_inputs(target: &str, run: Target, seeds: Vec<(String, Vec<u8>)>, also: &[&str]) {
    if std::env::var_os("WALQ_FUZZ_WRITE_SEEDS").is_some() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("writing a seed");
        }
    }
    let mut inputs: Vec<(String, Vec<u8>)> = seeds
        .into_iter()
        .map(|(name, bytes)| (format!("generated seed {name}"), bytes))
        .collect();
    inputs.extend(corpus_inputs(target));
    for other in also {
        inputs.extend(corpus_inputs(other));
    }
    assert!(!inputs.is_empty(), "no inputs for {target}");
    let mut failed = Vec::new();
    for (name, bytes) in &inputs {
        let outcome = std::panic::catch_unwind(|| run(bytes));
        if outcome.is_err() {
            failed.push(name.clone());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs fail (panic messages above):\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
}

#[test]
fn decode_record_corpus() {
    run_inputs(
        "decode_record",
        harness::decode_record::run,
        harness::seeds::decode_record(),
        &[],
    );
}

#[test]
fn recover_segment_corpus() {
    run_inputs(
        "recover_segment",
        harness::recover_segment::run,
        harness::seeds::recover_segment(),
        &[],
    );
}

/// The inspector on the directories of `recover_segment` (the two targets
/// read the same input format): its seeds and corpus, then
/// `inspect_dir`'s own corpus.
#[test]
fn inspect_dir_corpus() {
    run_inputs(
        "inspect_dir",
        harness::inspect_dir::run,
        harness::seeds::recover_segment(),
        &["recover_segment"],
    );
}

#[test]
fn ops_with_crash_corpus() {
    run_inputs(
        "ops_with_crash",
        harness::ops_with_crash::run,
        harness::seeds::ops_with_crash(),
        &[],
    );
}

#[test]
fn checkpoint_corpus() {
    run_inputs(
        "checkpoint",
        harness::checkpoint::run,
        harness::seeds::checkpoint(),
        &[],
    );
}

#[test]
fn schedules_corpus() {
    run_inputs(
        "schedules",
        harness::schedules::run,
        harness::seeds::schedules(),
        &[],
    );
}
