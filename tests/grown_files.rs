//! A queue file grown far past its end (`truncate -s`, a copy tool gone
//! wrong, a file system that extended the size of a file whose data a
//! crash lost): the zeros past the records are holes, and open reads no
//! more of them than it needs. Before, `dead.wal` and `done.rec` were read
//! whole into memory at open, and a 64 GiB file aborted the process
//! (memory allocation failed). The checkpoint's case is in
//! `tests/checkpoint.rs`.
//!
//! Holes are found with `lseek(SEEK_DATA)`, which walq trusts on ext4, xfs
//! and tmpfs; on another file system (btrfs, overlayfs) the open is an I/O
//! error naming the file and the size it could not hold, still no abort.

use walq::{JobStatus, Options, Queue, Retry};

/// 64 GiB: more than the memory of the machines the tests run on.
const GROWN: u64 = 64 << 30;

/// A queue closed with one job done with a result (job 1) and one dead
/// letter (job 2).
fn queue_with_a_result_and_a_dead_letter(dir: &std::path::Path) {
    let q = Queue::open_with(dir, Options::default().max_attempts(1)).unwrap();
    q.enqueue(b"first").unwrap();
    q.enqueue(b"second").unwrap();
    let job = q.dequeue().unwrap().expect("job 1");
    q.ack_with_result(job.receipt(), b"the result").unwrap();
    let job = q.dequeue().unwrap().expect("job 2");
    q.nack(job.receipt(), Retry::Backoff, "boom").unwrap();
    q.close().unwrap();
}

/// Grows `name` in `dir` to [`GROWN`] bytes (sparse); its length before.
fn grow(dir: &std::path::Path, name: &str) -> u64 {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(name))
        .unwrap();
    let before = file.metadata().unwrap().len();
    file.set_len(GROWN).unwrap();
    before
}

/// Opens `dir`, whose `name` was grown: the queue where walq trusts the
/// file system's holes, else `None` after checking the error names the
/// file and the size.
fn open_grown(dir: &std::path::Path, name: &str) -> Option<Queue> {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .expect("stat -f");
    let fs = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match Queue::open(dir) {
        Ok(q) => {
            assert!(["ext2/ext3", "xfs", "tmpfs"].contains(&fs.as_str()), "{fs}");
            Some(q)
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                !["ext2/ext3", "xfs", "tmpfs"].contains(&fs.as_str()),
                "{fs}: {text}"
            );
            assert!(text.contains(name), "{text}");
            assert!(text.contains("more than this process can hold"), "{text}");
            None
        }
    }
}

fn file_len(dir: &std::path::Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(name)).unwrap().len()
}

#[test]
fn a_dead_letter_file_grown_by_zeros_opens_and_is_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    queue_with_a_result_and_a_dead_letter(dir.path());
    let before = grow(dir.path(), "dead.wal");
    let Some(q) = open_grown(dir.path(), "dead.wal") else {
        return;
    };
    let dead = q.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, &dead[0].payload[..]), (2, &b"second"[..]));
    // The zeros were a torn tail: cut, as a few KiB of them always were.
    assert_eq!(q.recovery_report().torn_bytes, GROWN - before);
    assert_eq!(file_len(dir.path(), "dead.wal"), before);
}

#[test]
fn a_completion_file_grown_by_zeros_opens_with_its_results() {
    let dir = tempfile::tempdir().unwrap();
    queue_with_a_result_and_a_dead_letter(dir.path());
    grow(dir.path(), "done.rec");
    let Some(q) = open_grown(dir.path(), "done.rec") else {
        return;
    };
    match q.status(1).unwrap() {
        JobStatus::Done { result, .. } => assert_eq!(result.as_deref(), Some(&b"the result"[..])),
        other => panic!("job 1: {other:?}"),
    }
    q.enqueue(b"third").unwrap();
    let job = q.dequeue().unwrap().expect("job 3");
    q.ack_with_result(job.receipt(), b"another").unwrap();
    drop(q);
    let q = Queue::open(dir.path()).unwrap();
    match q.status(3).unwrap() {
        JobStatus::Done { result, .. } => assert_eq!(result.as_deref(), Some(&b"another"[..])),
        other => panic!("job 3: {other:?}"),
    }
}

#[test]
fn a_segment_grown_past_the_limit_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    queue_with_a_result_and_a_dead_letter(dir.path());
    grow(dir.path(), "0000000001.wal");
    let err = Queue::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("0000000001.wal"), "{err}");
    assert!(err.contains("above the 4 GiB limit"), "{err}");
}
