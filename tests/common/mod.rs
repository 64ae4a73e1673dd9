//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use walq::{Durability, ManualClock, Options, Queue};

/// Options for deterministic tests: a manual clock, small segments, no
/// fsync per operation (durability is tested on the simulated file system).
pub fn opts(clock: &ManualClock) -> Options {
    Options::default()
        .clock(clock.clone())
        .segment_size(64 * 1024)
        .durability(Durability::Os)
        .visibility_timeout(Duration::from_secs(30))
        .jitter_seed(7)
}

/// Opens a queue in `dir` with [`opts`].
pub fn open(dir: &Path, clock: &ManualClock) -> Queue {
    Queue::open_with(dir, opts(clock)).expect("open queue")
}

/// Drains every ready job: returns (id, payload, attempt), acking each.
pub fn drain(q: &Queue) -> Vec<(u64, Vec<u8>, u32)> {
    let mut out = Vec::new();
    while let Some(job) = q.dequeue().expect("dequeue") {
        out.push((job.id(), job.payload().to_vec(), job.attempt()));
        q.ack(job.receipt()).expect("ack");
    }
    out
}

/// Payloads of every ready job, leasing them (not acking).
pub fn lease_all(q: &Queue) -> Vec<walq::Job> {
    let mut out = Vec::new();
    while let Some(job) = q.dequeue().expect("dequeue") {
        out.push(job);
    }
    out
}

/// The log segment files of the queue in `dir`, oldest first.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read the queue directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            let n = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            n.ends_with(".wal") && n != "dead.wal"
        })
        .collect();
    v.sort();
    v
}
