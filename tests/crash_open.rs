//! Opening a queue dropped without `close()` (as after a crash) reads the
//! active segment only up to where its data ends, as the file system
//! reports it: bytes written far past the tail are still found, so a
//! torn tail is still zeroed whole and damage is still told from a torn
//! write. Real files (the simulated file system reports no holes).

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use walq::{Durability, Options, Queue, RecoveryMode};

const SEGMENT: u64 = 16 << 20;

fn options() -> Options {
    Options::default()
        .segment_size(SEGMENT)
        .durability(Durability::Os)
}

fn active_segment(dir: &Path) -> PathBuf {
    common::segment_files(dir).pop().expect("a segment")
}

/// A queue of `jobs` jobs, dropped without `close()`, and its active
/// segment.
fn crashed(dir: &Path, jobs: u64) -> PathBuf {
    let q = Queue::open_with(dir, options()).unwrap();
    for i in 0..jobs {
        q.enqueue(format!("job {i}").as_bytes()).unwrap();
    }
    drop(q);
    active_segment(dir)
}

fn drain(q: &Queue) -> u64 {
    let mut n = 0;
    while let Some(job) = q.dequeue().unwrap() {
        q.ack(job.receipt()).unwrap();
        n += 1;
    }
    n
}

#[test]
fn garbage_far_past_the_tail_is_found_and_zeroed() {
    let dir = tempfile::tempdir().unwrap();
    let seg = crashed(dir.path(), 100);
    // Far past the tail and the pages prefaulted after it: bytes a torn
    // write could have left (never acknowledged).
    let far = SEGMENT - (3 << 20) + 123;
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0xa5u8; 1000], far).unwrap();
    drop(f);
    let q = Queue::open_with(dir.path(), options()).unwrap();
    let r = q.recovery_report();
    assert!(r.torn_bytes >= 1000, "torn bytes {}", r.torn_bytes);
    assert_eq!(drain(&q), 100);
    drop(q);
    let mut back = vec![1u8; 1000];
    std::fs::File::open(&seg)
        .unwrap()
        .read_exact_at(&mut back, far)
        .unwrap();
    assert!(back.iter().all(|&b| b == 0), "the torn bytes were zeroed");
}

#[test]
fn damage_before_synced_records_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Under `Sync` every record was durable before the next was written:
    // their sync lags prove that a damaged earlier record is not a torn
    // write.
    let q = Queue::open_with(dir.path(), options().durability(Durability::Sync)).unwrap();
    for i in 0..100 {
        q.enqueue(format!("job {i}").as_bytes()).unwrap();
    }
    drop(q);
    let seg = active_segment(dir.path());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    // A byte of an early record (past the 64-byte header).
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 200).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], 200).unwrap();
    drop(f);
    let err = Queue::open_with(dir.path(), options()).unwrap_err();
    assert!(err.to_string().contains("not a torn tail"), "{err}");
    let q = Queue::open_with(dir.path(), options().recovery(RecoveryMode::Salvage)).unwrap();
    assert!(q.recovery_report().records_lost >= 1);
    assert!(drain(&q) >= 98);
}
