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
    let trusted = holes_are_trusted(dir);
    match Queue::open(dir) {
        Ok(q) => {
            assert!(
                trusted,
                "opened on a file system whose holes are not trusted"
            );
            Some(q)
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!trusted, "{text}");
            assert!(text.contains(name), "{text}");
            assert!(text.contains("more than this process can hold"), "{text}");
            None
        }
    }
}

/// Whether `dir` is on ext4, xfs or tmpfs, whose holes walq trusts
/// (`statfs`, not a `stat -f` child: a child forked while another test's
/// queue is open holds that queue's `LOCK` until it execs, and CI once
/// saw that test's reopen refused as locked).
fn holes_are_trusted(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const TMPFS: i64 = 0x0102_1994;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and a zeroed struct statfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut st) }, 0, "statfs");
    [EXT4, XFS, TMPFS].contains(&(st.f_type as i64))
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

/// A queue closed with job 1 done with a result of `n` bytes (0xAB, so
/// that its record ends with a nonzero byte); where that record ends.
fn queue_with_one_result(dir: &std::path::Path, n: usize) -> u64 {
    let q = Queue::open(dir).unwrap();
    q.enqueue(b"first").unwrap();
    let job = q.dequeue().unwrap().expect("job 1");
    q.ack_with_result(job.receipt(), &vec![0xAB; n]).unwrap();
    q.close().unwrap();
    let bytes = std::fs::read(dir.join("done.rec")).unwrap();
    bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1
}

#[test]
fn a_completion_file_whose_records_end_on_a_block_takes_results_after_them() {
    // The zeros written ahead of done.rec's records are data; when the
    // records end exactly on a block (nothing written ahead, or it was
    // cut) the data ends where they do and open reads nothing past them.
    // It then took the grown length for the end of the records and wrote
    // the next result there: into a file grown to the largest size the
    // file system allows, every result failed ('File too large').
    let probe = tempfile::tempdir().unwrap();
    let end = queue_with_one_result(probe.path(), 1000);
    let n = 1000 + (4096 - end % 4096) as usize % 4096;
    let dir = tempfile::tempdir().unwrap();
    let end = queue_with_one_result(dir.path(), n);
    assert_eq!(end % 4096, 0, "the record ends on a block");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("done.rec"))
        .unwrap();
    file.set_len(end).unwrap();
    // The largest length this file system takes (tmpfs, xfs: i64::MAX;
    // ext4 with 4 KiB blocks: 16 TiB less a block).
    let grown = [i64::MAX as u64, (1u64 << 44) - 4096, GROWN]
        .into_iter()
        .find(|&len| file.set_len(len).is_ok())
        .unwrap();
    drop(file);
    let Some(q) = open_grown(dir.path(), "done.rec") else {
        return;
    };
    match q.status(1).unwrap() {
        JobStatus::Done { result, .. } => assert_eq!(result.as_deref(), Some(&vec![0xAB; n][..])),
        other => panic!("job 1: {other:?}"),
    }
    q.enqueue(b"second").unwrap();
    let job = q.dequeue().unwrap().expect("job 2");
    q.ack_with_result(job.receipt(), b"another")
        .unwrap_or_else(|e| panic!("a result after a file grown to {grown}: {e}"));
    drop(q);
    let q = Queue::open(dir.path()).unwrap();
    match q.status(2).unwrap() {
        JobStatus::Done { result, .. } => assert_eq!(result.as_deref(), Some(&b"another"[..])),
        other => panic!("job 2: {other:?}"),
    }
}
