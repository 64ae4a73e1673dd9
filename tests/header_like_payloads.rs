//! Payloads that look like frame headers do not change what recovery
//! decides after a torn write: the torn record is cut and every record
//! before it kept, in the log and in `dead.wal`. The search for intact
//! records after damage (`format::resync`) meets such a payload at every
//! 24 bytes; a work budget once made it refuse these honest files (found
//! by review), so these tests keep that from coming back.

use std::os::unix::fs::FileExt;
use std::path::Path;

use walq::{Options, Queue, RecoveryMode};

fn last_nonzero(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

/// A table of C structs `{ u32 hash; u32 size; u64 offset; u8 kind; u8
/// flags; u16 pad; u32 refs }`: 24 bytes each, and each one reads as a
/// plausible frame header claiming `size` bytes.
fn chunk_table(entries: usize, size: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries * 24);
    for i in 0..entries as u64 {
        out.extend_from_slice(&(0x9E37_79B9u32.wrapping_mul(i as u32 + 1)).to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&((i + 1) * u64::from(size)).to_le_bytes());
        out.extend_from_slice(&[1, 0, 0, 0]);
        out.extend_from_slice(&1u32.to_le_bytes());
    }
    out
}

/// Copies the files of an open queue: the disk as a crash leaves it.
fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() && e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Zeroes `file` from `start` to the end of its 4 KiB page (or the file):
/// the page holding a record's header never reached the disk.
fn tear_page(file: &Path, start: usize) {
    let len = std::fs::metadata(file).unwrap().len() as usize;
    let end = ((start / 4096 + 1) * 4096).min(len);
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(&vec![0u8; end - start], start as u64)
        .unwrap();
}

#[test]
fn a_torn_record_of_header_like_bytes_is_cut_and_the_rest_kept() {
    let opts = Options::default().segment_size(4 << 20);
    let live = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let q = Queue::open_with(live.path(), opts.clone()).unwrap();
    for i in 0..10u32 {
        q.enqueue(format!("job-{i}").as_bytes()).unwrap();
    }
    let seg = "0000000001.wal";
    let start = last_nonzero(&std::fs::read(live.path().join(seg)).unwrap());
    q.enqueue(&chunk_table(8192, 64 << 10)).unwrap();
    copy_dir(live.path(), crashed.path());
    drop(q);
    tear_page(&crashed.path().join(seg), start);
    for mode in [RecoveryMode::Strict, RecoveryMode::Salvage] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(crashed.path(), dir.path());
        let q = Queue::open_with(dir.path(), opts.clone().recovery(mode))
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let report = q.recovery_report();
        assert!(report.torn_bytes > 0, "{mode:?}: {report:?}");
        assert_eq!(q.stats().ready, 10, "{mode:?}: {report:?}");
    }
}

#[test]
fn a_torn_dead_letter_of_header_like_bytes_is_cut_and_the_rest_kept() {
    let live = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let q = Queue::open(live.path()).unwrap();
    let first = q.enqueue(b"first").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "boom").unwrap();
    let dead = live.path().join("dead.wal");
    let start = std::fs::metadata(&dead).unwrap().len() as usize;
    q.enqueue(&chunk_table(8192, 64 << 10)).unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "boom").unwrap();
    copy_dir(live.path(), crashed.path());
    drop(q);
    tear_page(&crashed.path().join("dead.wal"), start);
    let q = Queue::open(crashed.path()).unwrap();
    assert!(q.dead_letter(first).unwrap().is_some());
    assert!(q.dead_letter_ids().contains(&first));
}
