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
/// Cuts the file at `path` to `len` bytes, as someone else might (the
/// truncation and external-damage tests).
pub fn cut_file(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the file to cut")
        .set_len(len)
        .expect("cut the file");
}

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

/// A copy of the files of `dir` without its checkpoint: the next open of
/// the copy is a full scan.
pub fn scanned(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "CHECKPOINT" && entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    copy
}

/// splitmix64: a small seeded generator, so that a seed replays a run.
/// One copy for every test that uses it, so that a seed means the same
/// sequence in each. `Rng(seed)` starts from `seed` itself; see
/// [`Rng::mixed`] for the kill -9 harness's seeding.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator that starts from `seed` XOR the splitmix64 increment:
    /// how the kill -9 harness has always seeded its generators (its
    /// recorded seeds replay only with this).
    pub fn mixed(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// In `lo..=hi`, both ends included (unlike `sim_common`'s `range`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
