//! `Durability::Sync` appends keep written blocks ahead of the log's tail.
//!
//! A segment is preallocated: its space is an unwritten extent, and an
//! append into it changes the file's extent map, which the fdatasync after
//! it must also write. walq writes zeros a MiB at a time ahead of the tail
//! of `pwrite`-appended segments, so that most syncs write data only
//! (`Log::zero_ahead`; docs/benchmarks.md, "Sync appends into written
//! blocks"). These tests check, on the real file system of the temp dir,
//! that the written space runs 1 to 2 MiB ahead of the tail, that it holds
//! zeros only, and that nothing appended is lost or changed.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use walq::{Durability, Options, Queue};

const MIB: u64 = 1 << 20;
const SEGMENT: u64 = 16 * MIB;

/// The end of the last data extent of `file` (`SEEK_DATA`/`SEEK_HOLE`),
/// or `None` where the file system does not report holes in preallocated
/// space (then every byte counts as data and there is nothing to check).
fn data_end(file: &File) -> Option<u64> {
    let fd = file.as_raw_fd();
    let mut end: libc::off_t = 0;
    loop {
        // SAFETY: plain system calls on a descriptor the caller owns.
        let data = unsafe { libc::lseek(fd, end, libc::SEEK_DATA) };
        if data < 0 {
            return Some(end as u64);
        }
        // SAFETY: as above.
        end = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if end as u64 >= file.metadata().ok()?.len() {
            return None;
        }
    }
}

/// The active segment's file (the newest `*.wal` other than `dead.wal`).
fn active_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".wal") && name.chars().next().is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

/// Where the log's bytes end in `file`, which holds data only below
/// `data_end`: one past its last nonzero byte. (Reading past `data_end`
/// would bring zero pages into the page cache, which then count as data.)
fn last_nonzero(file: &File, data_end: u64) -> u64 {
    let mut bytes = vec![0u8; data_end as usize];
    file.read_exact_at(&mut bytes, 0).unwrap();
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

fn sync_opts() -> Options {
    Options::default()
        .durability(Durability::Sync)
        .segment_size(SEGMENT)
        .checkpoint_every(0)
}

/// Whether a fresh preallocated file here reads as a hole (ext4, xfs,
/// tmpfs do; where not, the extents cannot be checked).
fn holes_reported(dir: &Path) -> bool {
    let f = File::create(dir.join("probe")).unwrap();
    // SAFETY: a plain system call on a descriptor this function owns.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 4 * MIB as libc::off_t) };
    let holes = rc == 0 && data_end(&f) == Some(0);
    std::fs::remove_file(dir.join("probe")).unwrap();
    holes
}

#[test]
fn sync_appends_keep_one_to_two_mib_written_ahead_of_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    if !holes_reported(dir.path()) {
        eprintln!("this file system reports no holes in preallocated space: nothing to check");
        return;
    }
    let q = Queue::open_with(dir.path(), sync_opts()).unwrap();
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    for round in 0..4u32 {
        // Batches of 1 KiB jobs: about 3.3 MiB of log in all.
        let batch: Vec<Vec<u8>> = (0..800u32)
            .map(|i| {
                let n = round * 800 + i;
                let mut p = n.to_le_bytes().repeat(256);
                p[0] |= 1; // never all zeros
                p
            })
            .collect();
        q.enqueue_batch(batch.iter()).unwrap();
        payloads.extend(batch);
        let file = File::open(active_segment(dir.path())).unwrap();
        let end = data_end(&file).expect("holes are reported here");
        let tail = last_nonzero(&file, end);
        assert!(
            end >= (tail + MIB).min(SEGMENT),
            "round {round}: written space ends at {end}, less than 1 MiB past the tail {tail}"
        );
        assert!(
            end <= tail + 2 * MIB + 4096,
            "round {round}: written space ends at {end}, more than 2 MiB past the tail {tail}"
        );
    }
    drop(q);
    let q = Queue::open_with(dir.path(), sync_opts()).unwrap();
    for want in &payloads {
        let job = q.dequeue().unwrap().expect("every job is still there");
        assert_eq!(job.payload(), &want[..]);
        q.ack(job.receipt()).unwrap();
    }
    assert!(q.dequeue().unwrap().is_none());
}

/// Bytes this thread has handed to write system calls so far (`wchar` of
/// `/proc/thread-self/io`), or `None` where the kernel does not say.
fn thread_wchar() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether the zeros written ahead can be seen here (holes reported) and
/// the bytes a thread writes counted; if not, says so.
fn writes_countable(dir: &Path) -> bool {
    let yes = holes_reported(dir) && thread_wchar().is_some();
    if !yes {
        eprintln!("no holes in preallocated space, or no per-thread I/O counts: nothing to check");
    }
    yes
}

#[test]
fn a_reopened_queue_does_not_write_its_zeros_ahead_again() {
    let dir = tempfile::tempdir().unwrap();
    if !writes_countable(dir.path()) {
        return;
    }
    let q = Queue::open_with(dir.path(), sync_opts()).unwrap();
    q.enqueue_batch((0..100u32).map(|i| i.to_le_bytes().repeat(25)))
        .unwrap();
    q.close().unwrap();

    let q = Queue::open_with(dir.path(), sync_opts()).unwrap();
    let before = thread_wchar().unwrap();
    q.enqueue(b"after the reopen").unwrap();
    let written = thread_wchar().unwrap() - before;
    // The record (well under a KiB); not the MiB of zeros the last run
    // already wrote past the tail, and its close synced.
    assert!(
        written < 64 * 1024,
        "the first append after the reopen wrote {written} bytes"
    );
    let file = File::open(active_segment(dir.path())).unwrap();
    let end = data_end(&file).expect("holes are reported here");
    let tail = last_nonzero(&file, end);
    assert!(
        end >= (tail + MIB).min(SEGMENT),
        "written space ends at {end}, less than 1 MiB past the tail {tail}"
    );
    for i in 0..100u32 {
        let job = q.dequeue().unwrap().expect("every job is still there");
        assert_eq!(job.payload(), &i.to_le_bytes().repeat(25)[..]);
        q.ack(job.receipt()).unwrap();
    }
    let last = q
        .dequeue()
        .unwrap()
        .expect("the job enqueued after the reopen");
    assert_eq!(last.payload(), b"after the reopen");
}

#[test]
fn the_first_enqueue_of_a_fresh_queue_finds_its_zeros_written() {
    let dir = tempfile::tempdir().unwrap();
    if !writes_countable(dir.path()) {
        return;
    }
    let q = Queue::open_with(dir.path(), sync_opts()).unwrap();
    let file = File::open(active_segment(dir.path())).unwrap();
    let end = data_end(&file).expect("holes are reported here");
    assert!(
        end >= 2 * MIB,
        "the new segment is written up to {end} only"
    );
    let before = thread_wchar().unwrap();
    q.enqueue(b"first").unwrap();
    let written = thread_wchar().unwrap() - before;
    // The record, not 2 MiB of zeros inside the first commit.
    assert!(
        written < 64 * 1024,
        "the first enqueue wrote {written} bytes"
    );
    assert_eq!(q.dequeue().unwrap().expect("the job").payload(), b"first");
}

/// Log segments in `dir` (`NNNNNNNNNN.wal`).
fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".wal")
                .is_some_and(|id| id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

/// Enqueues 200 KiB jobs into `q` (in `dir`) until it rotated five times;
/// fails unless each rotating enqueue wrote its record only, not the
/// zeros ahead of it.
fn check_rotations_write_no_zeros(q: &Queue, dir: &Path) {
    const PAYLOAD: usize = 200 << 10;
    let payload = vec![7u8; PAYLOAD];
    let mut rotations = Vec::new();
    while rotations.len() < 5 {
        // The spare is ready, and no upkeep work runs during the count
        // (appends and their zeros are written by the enqueuing thread).
        q.wait_upkeep();
        let before = (segments(dir), thread_wchar().unwrap());
        q.enqueue(&payload).unwrap();
        let after = (segments(dir), thread_wchar().unwrap());
        if after.0 > before.0 {
            rotations.push((after.0, after.1 - before.1));
        }
    }
    for &(segment, wrote) in &rotations {
        assert!(
            wrote < PAYLOAD as u64 + 64 * 1024,
            "the enqueue that rotated into segment {segment} wrote {wrote} bytes \
             for a {PAYLOAD}-byte job: {rotations:?}"
        );
    }
}

/// The enqueue that rotates into a prepared segment writes its record,
/// not the zeros ahead of it: those were written off the write path, by
/// the `walq-upkeep` thread, when the segment was prepared (segments 4
/// on) or, for the two spares the open prepared with their header block
/// only (segments 2 and 3), once the tail passed half the first segment.
#[test]
fn a_rotation_into_a_prepared_segment_writes_no_zeros_inside_the_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    if !writes_countable(dir.path()) {
        return;
    }
    let q = Queue::open_with(dir.path(), sync_opts().segment_size(4 * MIB)).unwrap();
    check_rotations_write_no_zeros(&q, dir.path());
}

/// The same after a clean close: the spares the last run left (prepared
/// by its open with their header block only, and kept by the close) are
/// reused, and get their zeros like the ones an open prepares.
#[test]
fn the_spares_a_clean_close_kept_get_their_zeros_too() {
    let dir = tempfile::tempdir().unwrap();
    if !writes_countable(dir.path()) {
        return;
    }
    let opts = || sync_opts().segment_size(4 * MIB);
    let q = Queue::open_with(dir.path(), opts()).unwrap();
    q.enqueue(b"short-lived").unwrap();
    q.wait_upkeep();
    q.close().unwrap();
    let spares = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let e = e.as_ref().unwrap();
            e.file_name().to_string_lossy().ends_with(".wal.spare")
        })
        .count();
    assert_eq!(spares, 2, "the close kept both spares");
    let q = Queue::open_with(dir.path(), opts()).unwrap();
    check_rotations_write_no_zeros(&q, dir.path());
}
