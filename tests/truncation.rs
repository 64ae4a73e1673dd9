//! Damage done to a closed queue's files by someone else is reported, never
//! opened silently with jobs missing (guarantee 13; issue 8, finding 8),
//! and open touches only the files walq itself creates.

mod common;

use std::path::{Path, PathBuf};

use common::cut_file;
use walq::format::frame;
use walq::format::header::SEGMENT_HEADER_LEN;
use walq::{Durability, ErrorKind, Options, Queue, RecoveryMode, MIN_SEGMENT_SIZE};

const JOBS: usize = 230;

fn opts(mode: RecoveryMode) -> Options {
    Options::default()
        .segment_size(4 * MIN_SEGMENT_SIZE)
        .durability(Durability::Os)
        .recovery(mode)
}

/// A queue of `JOBS` jobs, closed cleanly; returns its one segment.
fn closed_queue(dir: &Path) -> PathBuf {
    let q = Queue::open_with(dir, opts(RecoveryMode::Strict)).unwrap();
    for i in 0..JOBS {
        q.enqueue(format!("job {i:04} {}", "x".repeat(400)).as_bytes())
            .unwrap();
    }
    q.close().unwrap();
    drop(q);
    dir.join("0000000001.wal")
}

/// Offsets of the frames in a segment.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offs = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    while let Ok(f) = frame::decode(&bytes[off..], 1, bytes.len() as u32) {
        offs.push(off);
        off += f.len as usize;
    }
    offs
}

fn count_jobs(q: &Queue) -> usize {
    let mut n = 0;
    while q.dequeue().unwrap().is_some() {
        n += 1;
    }
    n
}

fn assert_refused_then_salvaged(dir: &Path, seg: &Path) {
    let err = Queue::open_with(dir, opts(RecoveryMode::Strict)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(err.path(), Some(seg), "the error names the file: {err}");
    let q = Queue::open_with(dir, opts(RecoveryMode::Salvage)).unwrap();
    let lost = q.recovery_report().records_lost;
    let left = count_jobs(&q);
    assert!(left < JOBS);
    assert!(lost > 0, "Salvage reports the loss");
}

#[test]
fn a_segment_truncated_to_half_is_refused_in_strict_mode() {
    let dir = tempfile::tempdir().unwrap();
    let seg = closed_queue(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    let used = frame_offsets(&std::fs::read(&seg).unwrap());
    assert_eq!(used.len(), JOBS);
    cut_file(&seg, (used[JOBS - 1] as u64) / 2);
    assert!(std::fs::metadata(&seg).unwrap().len() < len);
    assert_refused_then_salvaged(dir.path(), &seg);
}

#[test]
fn a_segment_truncated_on_a_record_boundary_is_refused_in_strict_mode() {
    let dir = tempfile::tempdir().unwrap();
    let seg = closed_queue(dir.path());
    let offs = frame_offsets(&std::fs::read(&seg).unwrap());
    cut_file(&seg, offs[JOBS / 2] as u64);
    assert_refused_then_salvaged(dir.path(), &seg);
}

#[test]
fn records_zeroed_from_a_boundary_to_the_end_are_refused_in_strict_mode() {
    // Same length, the tail cut to zeros exactly on a record boundary: only
    // the clean-close LSN tells.
    let dir = tempfile::tempdir().unwrap();
    let seg = closed_queue(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let offs = frame_offsets(&bytes);
    bytes[offs[JOBS / 2]..].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    assert_refused_then_salvaged(dir.path(), &seg);
}

#[test]
fn an_intact_closed_queue_reopens_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    closed_queue(dir.path());
    let q = Queue::open_with(dir.path(), opts(RecoveryMode::Strict)).unwrap();
    assert_eq!(count_jobs(&q), JOBS);
    assert_eq!(q.recovery_report().records_lost, 0);
}

#[test]
fn open_leaves_a_users_tmp_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    Queue::open(dir.path()).unwrap().close().unwrap();
    std::fs::write(dir.path().join("notes.tmp"), b"mine").unwrap();
    std::fs::create_dir(dir.path().join("backup.tmp")).unwrap();
    std::fs::write(dir.path().join("0000000007.wal.tmp"), b"walq's").unwrap();
    let q = Queue::open(dir.path()).unwrap();
    assert_eq!(q.recovery_report().temp_files_removed, 1);
    assert!(dir.path().join("notes.tmp").exists());
    assert!(dir.path().join("backup.tmp").is_dir());
    assert!(!dir.path().join("0000000007.wal.tmp").exists());
}

#[test]
fn close_then_reopen_works_while_a_clone_is_alive() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let clone = q.clone();
    q.enqueue(b"survives").unwrap();
    q.close().unwrap();
    let again = Queue::open(dir.path()).expect("reopen after close, clone alive");
    assert_eq!(
        clone.enqueue(b"late").unwrap_err().kind(),
        ErrorKind::Closed
    );
    let job = again.dequeue().unwrap().expect("the job");
    assert_eq!(job.payload(), b"survives");
    assert!(again.dequeue().unwrap().is_none());
}
