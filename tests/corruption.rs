//! Guarantee 10: a torn tail is cut on open; damage anywhere else is
//! reported with the file and offset; salvage skips it and says how much
//! was lost. Cuts at every byte offset of the last records, bit flips.

mod common;

use std::path::{Path, PathBuf};

use walq::{Durability, ErrorKind, ManualClock, Options, Queue, RecoveryMode};

fn opts(clock: &ManualClock, durability: Durability) -> Options {
    Options::default()
        .clock(clock.clone())
        .segment_size(64 * 1024)
        .durability(durability)
}

fn payload(i: usize) -> Vec<u8> {
    // Nonzero bytes, so every record ends with a nonzero byte.
    (0..40 + i % 13).map(|k| (i * 31 + k) as u8 | 1).collect()
}

fn first_segment(dir: &Path) -> PathBuf {
    dir.join("0000000001.wal")
}

fn last_nonzero(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

/// Enqueues `n` jobs; returns the end offset of the log after each one.
fn build(dir: &Path, clock: &ManualClock, n: usize, durability: Durability) -> Vec<usize> {
    let q = Queue::open_with(dir, opts(clock, durability)).unwrap();
    let mut ends = Vec::new();
    for i in 0..n {
        q.enqueue(&payload(i)).unwrap();
        let bytes = std::fs::read(first_segment(dir)).unwrap();
        ends.push(last_nonzero(&bytes));
    }
    ends
}

fn drain_payloads(q: &Queue) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        out.push(job.payload().to_vec());
        q.ack(job.receipt()).unwrap();
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn cut_at_every_byte_of_the_last_records_keeps_exactly_the_intact_prefix() {
    let src = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let n = 12;
    let ends = build(src.path(), &clock, n, Durability::Os);
    let original = std::fs::read(first_segment(src.path())).unwrap();
    let from = ends[n - 4];
    for cut in from..=ends[n - 1] {
        for truncate in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(src.path(), dir.path());
            let mut bytes = original.clone();
            if truncate {
                bytes.truncate(cut);
            } else {
                bytes[cut..].fill(0);
            }
            std::fs::write(first_segment(dir.path()), &bytes).unwrap();
            let intact = ends.iter().filter(|&&e| e <= cut).count();
            let q = Queue::open_with(dir.path(), opts(&clock, Durability::Os))
                .unwrap_or_else(|e| panic!("cut at {cut} (truncate {truncate}): {e}"));
            let torn = !ends.contains(&cut);
            assert_eq!(
                q.recovery_report().torn_bytes > 0,
                torn,
                "cut {cut} ends {ends:?} {:?}",
                q.recovery_report()
            );
            let want: Vec<Vec<u8>> = (0..intact).map(payload).collect();
            // Appending after the cut works and survives a reopen.
            q.enqueue(b"after the cut").unwrap();
            drop(q);
            let q = Queue::open_with(dir.path(), opts(&clock, Durability::Os)).unwrap();
            let mut got = drain_payloads(&q);
            assert_eq!(
                got.pop().as_deref(),
                Some(&b"after the cut"[..]),
                "cut {cut}"
            );
            assert_eq!(got, want, "cut at {cut} (truncate {truncate})");
            q.check_invariants();
        }
    }
}

#[test]
fn a_bit_flip_in_a_durable_record_is_reported_with_file_and_offset() {
    let src = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let n = 10;
    // Sync: every record is known durable when the next one is written.
    let ends = build(src.path(), &clock, n, Durability::Sync);
    let original = std::fs::read(first_segment(src.path())).unwrap();
    let record_start = ends[3];
    for at in record_start..ends[4] {
        for bit in [0u8, 5] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(src.path(), dir.path());
            let mut bytes = original.clone();
            bytes[at] ^= 1 << bit;
            std::fs::write(first_segment(dir.path()), &bytes).unwrap();
            let err = Queue::open_with(dir.path(), opts(&clock, Durability::Sync)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "flip at {at}: {err}");
            assert_eq!(err.path(), Some(first_segment(dir.path()).as_path()));
            assert_eq!(err.offset(), Some(record_start as u64), "flip at {at}");
            // Salvage opens, skips the damaged record and says so.
            let q = Queue::open_with(
                dir.path(),
                opts(&clock, Durability::Sync).recovery(RecoveryMode::Salvage),
            )
            .unwrap();
            assert_eq!(q.recovery_report().records_lost, 1, "flip at {at}");
            let got = drain_payloads(&q);
            let want: Vec<Vec<u8>> = (0..n).filter(|&i| i != 4).map(payload).collect();
            assert_eq!(got, want);
        }
    }
}

#[test]
fn a_bit_flip_in_the_last_record_is_a_torn_tail() {
    let src = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let n = 5;
    let ends = build(src.path(), &clock, n, Durability::Sync);
    let original = std::fs::read(first_segment(src.path())).unwrap();
    for at in ends[n - 2]..ends[n - 1] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(src.path(), dir.path());
        let mut bytes = original.clone();
        bytes[at] ^= 0x10;
        std::fs::write(first_segment(dir.path()), &bytes).unwrap();
        let q = Queue::open_with(dir.path(), opts(&clock, Durability::Sync)).unwrap();
        let got = drain_payloads(&q);
        let want: Vec<Vec<u8>> = (0..n - 1).map(payload).collect();
        assert_eq!(got, want, "flip at {at}");
    }
}

#[test]
fn damage_in_a_sealed_segment_is_corruption_even_in_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = Queue::open_with(dir.path(), opts(&clock, Durability::Os)).unwrap();
    let mut i = 0;
    while q.stats().segments < 3 {
        q.enqueue(&payload(i)).unwrap();
        i += 1;
    }
    drop(q);
    let path = first_segment(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let end = last_nonzero(&bytes);
    bytes[end - 1] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = Queue::open_with(dir.path(), opts(&clock, Durability::Os)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(err.path(), Some(path.as_path()));
    assert!(err.to_string().contains("0000000001.wal"), "{err}");
}

#[test]
fn a_missing_middle_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = Queue::open_with(dir.path(), opts(&clock, Durability::Os)).unwrap();
    let mut i = 0;
    while q.stats().segments < 4 {
        q.enqueue(&payload(i)).unwrap();
        i += 1;
    }
    drop(q);
    std::fs::remove_file(dir.path().join("0000000002.wal")).unwrap();
    let err = Queue::open_with(dir.path(), opts(&clock, Durability::Os)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn zeroed_bytes_and_garbage_after_the_log_are_handled() {
    let src = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let ends = build(src.path(), &clock, 6, Durability::Os);
    let original = std::fs::read(first_segment(src.path())).unwrap();
    // Garbage after the last record (a torn write of random bytes).
    let dir = tempfile::tempdir().unwrap();
    copy_dir(src.path(), dir.path());
    let mut bytes = original.clone();
    for (k, b) in bytes[ends[5]..ends[5] + 300].iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(37) | 0x80;
    }
    std::fs::write(first_segment(dir.path()), &bytes).unwrap();
    let q = Queue::open_with(dir.path(), opts(&clock, Durability::Os)).unwrap();
    assert_eq!(q.recovery_report().torn_bytes, 300);
    assert_eq!(drain_payloads(&q).len(), 6);
    drop(q);
    // The garbage was zeroed on disk, not just skipped.
    let after = std::fs::read(first_segment(dir.path())).unwrap();
    assert!(after[ends[5]..].iter().take(300).all(|&b| b == 0) || after.len() >= ends[5]);
}

/// A `done.rec` record whose checksum matches but whose sequence number is
/// past the bound every counter of walq keeps (2^62) is damage, named with
/// its file and offset: counting on from it overflowed.
#[test]
fn a_completion_record_with_an_impossible_sequence_number_is_refused() {
    use walq::format::frame;
    let dir = tempfile::tempdir().unwrap();
    {
        let q = Queue::open(dir.path()).unwrap();
        q.enqueue(b"a").unwrap();
        let job = q.dequeue().unwrap().unwrap();
        q.ack_with_result(job.receipt(), b"r").unwrap();
        q.close().unwrap();
    }
    let path = dir.path().join("done.rec");
    let mut bytes = std::fs::read(&path).unwrap();
    // The first record (a Done of job 1 with result "r"), sealed again
    // with sequence number u64::MAX.
    let first_len = u32::from_le_bytes(bytes[68..72].try_into().unwrap()) as usize;
    let kind = bytes[64 + 16];
    let body = bytes[64 + frame::FRAME_HEADER_LEN..64 + first_len].to_vec();
    let mut out = Vec::new();
    frame::encode(
        &mut out,
        u32::from_le_bytes(*b"DONE"),
        u64::MAX,
        kind,
        0,
        0,
        &body,
        &[],
    );
    assert_eq!(out.len(), first_len);
    bytes[64..64 + first_len].copy_from_slice(&out);
    std::fs::write(&path, &bytes).unwrap();
    let err = Queue::open(dir.path()).map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("done.rec") && text.contains("sequence number"),
        "{text}"
    );
}

#[test]
fn salvage_past_damage_in_every_other_record_does_not_search_the_rest_each_time() {
    // Unsynced records (their sync lag proves nothing), then one written
    // after a sync, at the end, that proves them all durable; damage in
    // every other record. Each damage searched the rest of the segment
    // again for that proof: work the square of the log's size (over a
    // minute for 9 MiB). A proof found once now serves every later damage
    // it covers.
    let n = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let opts = |mode| {
        Options::default()
            .clock(clock.clone())
            .segment_size(32 << 20)
            .durability(Durability::Os)
            .recovery(mode)
    };
    {
        let q = Queue::open_with(dir.path(), opts(RecoveryMode::Strict)).unwrap();
        for i in 0..n {
            q.enqueue(&payload(i)).unwrap();
        }
        q.sync().unwrap();
        q.enqueue(&payload(n)).unwrap();
        q.sync().unwrap();
        // A crash: no clean close, no checkpoint; the whole log is scanned.
    }
    let _ = std::fs::remove_file(dir.path().join("CHECKPOINT"));
    let mut bytes = std::fs::read(first_segment(dir.path())).unwrap();
    let mut frames = Vec::new();
    let mut off = 64;
    while off + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        frames.push((off, len));
        off += len;
    }
    assert_eq!(frames.len(), n + 1);
    for &(off, len) in frames[..n].iter().step_by(2) {
        bytes[off + len - 1] ^= 0x80;
    }
    std::fs::write(first_segment(dir.path()), &bytes).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let at = dir.path().to_path_buf();
    let salvage = opts(RecoveryMode::Salvage);
    std::thread::spawn(move || {
        let got = Queue::open_with(&at, salvage)
            .map(|q| (q.recovery_report().records_lost, q.stats().ready));
        let _ = tx.send(got);
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("salvage ends within a minute");
    assert_eq!(got.unwrap(), (n as u64 / 2, n as u64 / 2 + 1));
}
