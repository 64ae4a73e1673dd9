//! The checkpoint of the index (issue 9): a reopen after a clean close
//! loads it instead of scanning the log and shows exactly what a full scan
//! shows; a damaged, stale, foreign or missing checkpoint falls back to the
//! full scan and the recovery report says why; after a crash only the log
//! written since the last checkpoint is replayed.

mod checkpoint_common;

use std::path::Path;

use checkpoint_common::*;
use walq::{ManualClock, Queue};

const START: u64 = 1_700_000_000_000;

/// Runs the workload of `seed` in `dir`; closes cleanly if `close`, else
/// drops the queue (a crash: `Durability::Os` keeps what was written).
fn build(dir: &Path, seed: u64, steps: usize, every: u64, close: bool) -> u64 {
    let clock = ManualClock::new(START);
    let q = Queue::open_with(dir, opts(&clock, every)).expect("open");
    let mut held = Vec::new();
    apply(&q, &clock, &workload(seed, steps), &mut held);
    q.check_invariants();
    if close {
        q.close().expect("close");
    }
    drop(q);
    walq::Clock::now_ms(&clock)
}

fn checkpoint_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("CHECKPOINT")).expect("a checkpoint was written")
}

#[test]
fn reopen_after_a_clean_close_uses_the_checkpoint_and_matches_a_full_scan() {
    let mut dead = 0;
    for seed in 1..=4 {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = build(dir.path(), seed, 600, 0, true);
        let (with, seen) = observe(dir.path(), now, false);
        let (without, scanned) = observe(dir.path(), now, true);
        assert!(with.checkpoint_used, "seed {seed}: {with:?}");
        assert_eq!(with.checkpoint_fallback, None);
        assert_eq!(with.records, 0, "seed {seed}: nothing after a clean close");
        assert!(!without.checkpoint_used);
        assert_eq!(without.checkpoint_fallback.as_deref(), Some("missing"));
        assert!(without.records > 0);
        assert_eq!(seen, scanned, "seed {seed}");
        assert!(!seen.drained.is_empty(), "seed {seed}");
        dead += seen.dead.len();
    }
    assert!(dead > 0, "the workloads leave dead letters");
}

/// A clean close writes version 3 (fresh jobs back to back stored as
/// runs: a few bytes for thousands of jobs); the same checkpoint written
/// as version 2 or 1, as older builds wrote it, is still read and shows
/// the same queue; a damaged byte in the runs falls back to the scan.
#[test]
fn version_3_stores_runs_and_older_versions_still_open() {
    use walq::format::checkpoint::Checkpoint;
    let dir = tempfile::tempdir().expect("tempdir");
    let now = build(dir.path(), 11, 300, 0, true);
    let clock = ManualClock::new(now);
    let q = Queue::open_with(dir.path(), opts(&clock, 0)).expect("reopen");
    for i in 0..5000u32 {
        q.enqueue(&vec![5u8; 40 + (i % 3) as usize])
            .expect("enqueue");
    }
    q.close().expect("close");
    drop(q);
    let v3 = checkpoint_bytes(dir.path());
    assert_eq!(u16::from_le_bytes([v3[8], v3[9]]), 3, "version written");
    let ck = Checkpoint::decode(&v3).expect("decodes");
    assert!(ck.slots.len() > 5000);
    assert!(
        v3.len() < 5000 * 3,
        "{} bytes for {} slots",
        v3.len(),
        ck.slots.len()
    );
    let (_, scanned) = observe(dir.path(), now, true);
    let plain = ck.groups.is_empty() && ck.slots.iter().all(|s| s.priority == 1);
    let versions: &[u16] = if plain { &[3, 2, 1] } else { &[3, 2] };
    for &version in versions {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(dir.path(), copy.path());
        let bytes = ck.encode_as(version);
        std::fs::write(copy.path().join("CHECKPOINT"), &bytes).expect("write");
        let (report, seen) = observe(copy.path(), now, false);
        assert!(report.checkpoint_used, "version {version}: {report:?}");
        assert_eq!(report.records, 0, "version {version}");
        assert_eq!(seen, scanned, "version {version}");
    }
    // Damage inside the runs (after the head and the segments).
    let runs_len = u64::from_le_bytes(v3[120..128].try_into().expect("8 bytes")) as usize;
    let runs_at = 128 + 16 * ck.segments.len();
    for at in [runs_at, runs_at + runs_len / 2, runs_at + runs_len - 1] {
        let mut b = v3.clone();
        b[at] ^= 0x01;
        falls_back(dir.path(), now, &b, "damaged", &format!("run byte {at}"));
    }
}

#[test]
fn the_checkpoint_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), 1, 50, 0, true);
    let mode = std::fs::metadata(dir.path().join("CHECKPOINT"))
        .expect("checkpoint")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_clean_checkpoint_is_cleared_before_the_log_grows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = build(dir.path(), 2, 300, 0, true);
    assert_eq!(checkpoint_bytes(dir.path())[10], 1, "flagged clean");
    let clock = ManualClock::new(now);
    let q = Queue::open_with(dir.path(), opts(&clock, 0)).expect("open");
    assert!(q.recovery_report().checkpoint_used);
    assert_eq!(checkpoint_bytes(dir.path())[10], 0, "flag cleared in place");
    let id = q.enqueue(b"after the checkpoint").expect("enqueue");
    drop(q);
    // A crash: the unclean checkpoint is used and what came after it read.
    let (with, seen) = observe(dir.path(), now, false);
    let (_, scanned) = observe(dir.path(), now, true);
    assert!(with.checkpoint_used, "{with:?}");
    assert!(with.records > 0, "{with:?}");
    assert_eq!(seen, scanned);
    assert!(seen.drained.iter().any(|d| d.0 == id));
}

/// Opens `dir` with its checkpoint replaced by `bytes`: the full scan runs,
/// the report's reason contains `why`, and the queue shows exactly what a
/// scan without any checkpoint shows.
fn falls_back(dir: &Path, now: u64, bytes: &[u8], why: &str, label: &str) {
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(dir, copy.path());
    std::fs::write(copy.path().join("CHECKPOINT"), bytes).expect("write");
    let (report, seen) = observe(copy.path(), now, false);
    let (_, scanned) = observe(dir, now, true);
    assert!(!report.checkpoint_used, "{label}");
    let reason = report.checkpoint_fallback.unwrap_or_default();
    assert!(reason.contains(why), "{label}: {reason}");
    assert_eq!(seen, scanned, "{label}");
}

#[test]
fn a_damaged_checkpoint_falls_back_to_the_full_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = build(dir.path(), 3, 400, 0, true);
    let good = checkpoint_bytes(dir.path());
    for at in [
        0,
        9,
        20,
        70,
        130,
        good.len() / 2,
        good.len() - 5,
        good.len() - 1,
    ] {
        let mut b = good.clone();
        b[at] ^= 0x10;
        let why = if at == 0 { "damaged" } else { "" };
        falls_back(dir.path(), now, &b, why, &format!("bit flip at {at}"));
    }
    for cut in [0, 10, 127, good.len() / 2, good.len() - 1] {
        falls_back(
            dir.path(),
            now,
            &good[..cut],
            "damaged",
            &format!("cut at {cut}"),
        );
    }
    // Versions 1 to 5 are read; the next one is not.
    let mut v6 = good.clone();
    v6[8] = 6;
    falls_back(dir.path(), now, &v6, "version 6", "version 6");
}

#[test]
fn a_stale_or_foreign_checkpoint_falls_back_to_the_full_scan() {
    // An old checkpoint of the same queue, after reclaim deleted the
    // segments it starts with.
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(START);
    let q = Queue::open_with(dir.path(), opts(&clock, 0)).expect("open");
    for i in 0..200u32 {
        q.enqueue(&vec![7u8; 900 + i as usize]).expect("enqueue");
    }
    q.close().expect("close");
    let old = checkpoint_bytes(dir.path());
    let q = Queue::open_with(dir.path(), opts(&clock, 0)).expect("reopen");
    while let Some(j) = q.dequeue().expect("dequeue") {
        q.ack(j.receipt()).expect("ack");
    }
    for _ in 0..150 {
        q.enqueue(&[1u8; 1000]).expect("enqueue");
    }
    q.close().expect("close");
    let now = walq::Clock::now_ms(&clock);
    falls_back(
        dir.path(),
        now,
        &old,
        "stale",
        "older checkpoint, segments gone",
    );

    // The checkpoint of another queue with the same segment layout.
    let other = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(START);
    let q = Queue::open_with(other.path(), opts(&clock, 0)).expect("open");
    for _ in 0..150 {
        q.enqueue(&[2u8; 1000]).expect("enqueue");
    }
    q.close().expect("close");
    let foreign = checkpoint_bytes(other.path());
    falls_back(
        dir.path(),
        now,
        &foreign,
        "stale",
        "another queue's checkpoint",
    );
}

#[test]
fn a_checkpoint_ahead_of_the_log_falls_back() {
    // The log lost its last records (cut while closed) but the checkpoint
    // names them: it no longer matches.
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(START);
    let q = Queue::open_with(dir.path(), opts(&clock, 0)).expect("open");
    for _ in 0..20 {
        q.enqueue(&[3u8; 500]).expect("enqueue");
    }
    q.close().expect("close");
    let seg = dir.path().join("0000000001.wal");
    let mut bytes = std::fs::read(&seg).expect("segment");
    let end = bytes.iter().rposition(|&b| b != 0).expect("records");
    for b in &mut bytes[end - 300..=end] {
        *b = 0;
    }
    std::fs::write(&seg, &bytes).expect("write");
    let _ = std::fs::remove_file(dir.path().join("CLOSED"));
    let opts = opts(&clock, 0).recovery(walq::RecoveryMode::Salvage);
    let q = Queue::open_with(dir.path(), opts).expect("open");
    let report = q.recovery_report();
    assert!(!report.checkpoint_used);
    let reason = report.checkpoint_fallback.clone().unwrap_or_default();
    assert!(reason.contains("stale"), "{reason}");
    assert_eq!(q.stats().ready, 19, "the cut record is gone, the rest kept");
    assert!(
        !dir.path().join("CHECKPOINT").exists(),
        "a checkpoint that was not used is deleted"
    );
}

/// Opens `dir` itself (its checkpoint too large to copy): the full scan
/// runs, the report's reason contains one of `whys`, the counts are the
/// scan's, and the unused checkpoint is deleted.
fn falls_back_in_place(dir: &Path, now: u64, scanned: &Observed, whys: &[&str]) {
    let (report, seen) = {
        let clock = ManualClock::new(now);
        let q = Queue::open_with(dir, opts(&clock, 0)).expect("open");
        (q.recovery_report().clone(), q.stats())
    };
    assert!(!report.checkpoint_used);
    let reason = report.checkpoint_fallback.unwrap_or_default();
    assert!(whys.iter().any(|w| reason.contains(w)), "{reason}");
    let stats = (seen.ready, seen.delayed, seen.in_flight, seen.dead);
    assert_eq!(stats, scanned.stats, "the scan shows what a scan shows");
    assert!(
        !dir.join("CHECKPOINT").exists(),
        "the checkpoint that was not used is deleted"
    );
}

#[test]
fn a_checkpoint_file_longer_than_its_head_says_is_not_read_into_memory() {
    // A checkpoint grown to 64 GiB (sparse: its head intact, zeros after
    // its end), more than this machine's memory: open reads the head, sees
    // that its counts do not give the file's length, and scans instead of
    // allocating 64 GiB for the file (which aborted the process).
    let dir = tempfile::tempdir().expect("tempdir");
    let now = build(dir.path(), 7, 300, 0, true);
    let (_, scanned) = observe(dir.path(), now, true);
    let path = dir.path().join("CHECKPOINT");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("checkpoint");
    file.set_len(64 << 30).expect("grow the checkpoint");
    drop(file);
    falls_back_in_place(dir.path(), now, &scanned, &["lengths do not add up"]);
}

#[test]
fn a_checkpoint_whose_head_vouches_for_64_gib_of_holes_is_not_read_into_memory() {
    // The head's counts are checked against the file's length before the
    // body is read, but a head that says 64 GiB (its checksum is only a
    // CRC: damage, or a tool, can make one that matches) for a file grown
    // to 64 GiB passed, and open allocated all of it: the process aborted
    // (memory allocation failed). The body past the head is holes (never
    // written): damaged, and the log is scanned.
    const GROWN: u64 = 64 << 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let now = build(dir.path(), 7, 300, 0, true);
    let (_, scanned) = observe(dir.path(), now, true);
    let path = dir.path().join("CHECKPOINT");
    let mut head = checkpoint_bytes(dir.path())[..128].to_vec();
    let len = std::fs::metadata(&path).expect("checkpoint").len();
    let version = u16::from_le_bytes([head[8], head[9]]);
    // Version 3 and up: the slot runs' bytes; before, 16 bytes a slot.
    let (at, add) = if version >= 3 {
        (120, GROWN)
    } else {
        (80, GROWN / 16)
    };
    let count = u64::from_le_bytes(head[at..at + 8].try_into().unwrap());
    head[at..at + 8].copy_from_slice(&(count + add).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&head[..60]);
    h.update(&head[64..128]);
    head[60..64].copy_from_slice(&h.finalize().to_le_bytes());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("checkpoint");
    std::os::unix::fs::FileExt::write_all_at(&file, &head, 0).expect("head");
    file.set_len(len + GROWN).expect("grow the checkpoint");
    drop(file);
    let whys = ["never written", "more than this process can hold"];
    falls_back_in_place(dir.path(), now, &scanned, &whys);
}

#[test]
fn after_a_crash_only_the_log_after_the_checkpoint_is_replayed() {
    for seed in 5..=8 {
        let dir = tempfile::tempdir().expect("tempdir");
        // A checkpoint every 16 KiB of log, then a crash (no close).
        let now = build(dir.path(), seed, 700, 16 * 1024, false);
        let (with, seen) = observe(dir.path(), now, false);
        let (without, scanned) = observe(dir.path(), now, true);
        assert!(with.checkpoint_used, "seed {seed}: {with:?}");
        assert!(
            with.records < without.records,
            "seed {seed}: replayed {} of {} records",
            with.records,
            without.records
        );
        assert!(with.checkpoint_lsn > 0);
        assert_eq!(seen, scanned, "seed {seed}");
    }
}

#[test]
fn a_clean_checkpoint_after_more_writes_replays_them() {
    // A clean checkpoint put back after the queue ran on (an operator's
    // restore): the bytes after its end are not zeros, so they are read.
    let dir = tempfile::tempdir().expect("tempdir");
    let now = build(dir.path(), 9, 100, 0, true);
    let clean = checkpoint_bytes(dir.path());
    let clock = ManualClock::new(now);
    let q = Queue::open_with(dir.path(), opts(&clock, 0)).expect("open");
    let id = q
        .enqueue(b"written after the clean close")
        .expect("enqueue");
    drop(q);
    std::fs::write(dir.path().join("CHECKPOINT"), &clean).expect("restore");
    let (with, seen) = observe(dir.path(), now, false);
    let (_, scanned) = observe(dir.path(), now, true);
    assert!(with.checkpoint_used);
    assert!(with.records > 0);
    assert_eq!(seen, scanned);
    assert!(seen.drained.iter().any(|d| d.0 == id));
}

/// A periodic checkpoint is written by a thread of its own: the operation
/// that made it due returns without waiting for its fsyncs (here held by
/// the simulated file system), and a close waits for it.
#[test]
fn a_periodic_checkpoint_does_not_hold_up_the_operation_that_made_it_due() {
    use std::sync::Arc;
    use std::time::Duration;
    use walq::vfs::SimFs;
    use walq::{Durability, Options};

    let fs = SimFs::new();
    let opts = || {
        Options::default()
            .durability(Durability::Os)
            .segment_size(1 << 20)
            .checkpoint_every(4096)
    };
    let dir = Path::new("/q");
    let q = Queue::open_on(Arc::new(fs.clone()), dir, opts()).expect("open");
    fs.pause_syncs(true);
    let (tx, rx) = std::sync::mpsc::channel();
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for i in 0..100 {
                q.enqueue(format!("job {i} {}", "x".repeat(80)).as_bytes())
                    .expect("enqueue");
            }
            tx.send(()).expect("send");
        })
    };
    // A liveness check, not a timing one: before, the enqueue that made
    // the checkpoint due waited for its fsync, held here for ever.
    let returned = rx.recv_timeout(Duration::from_secs(120));
    // The checkpoint's write started, and waits for its fsync.
    for _ in 0..12_000 {
        if fs.paused_syncs() > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = fs.paused_syncs() > 0;
    fs.pause_syncs(false);
    assert!(started, "no periodic checkpoint was started");
    assert!(
        returned.is_ok(),
        "an enqueue waited for the periodic checkpoint's fsync"
    );
    producer.join().expect("producer");
    q.close().expect("close");
    drop(q);
    let q = Queue::open_on(Arc::new(fs.clone()), dir, opts()).expect("reopen");
    assert!(
        q.recovery_report().checkpoint_used,
        "{:?}",
        q.recovery_report()
    );
    assert_eq!(q.stats().ready, 100);
}

/// A checkpoint names the log's first segment: once reclaim deletes it,
/// that checkpoint is stale. A new one is written as soon as reclaim has
/// retired the first segment, however little log was written since, so a
/// crash after a drain still opens from a checkpoint. (Here the periodic
/// schedule alone would never write one.)
#[test]
fn a_checkpoint_follows_reclaim_of_the_first_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000);
    let q = Queue::open_with(dir.path(), opts(&clock, 1 << 40)).expect("open");
    let payload = vec![7u8; 1000];
    for _ in 0..300 {
        q.enqueue(&payload).expect("enqueue");
    }
    for _ in 0..250 {
        let job = q.dequeue().expect("dequeue").expect("a job");
        q.ack(job.receipt()).expect("ack");
    }
    // Segments are deleted on the upkeep thread, after the seal's sync.
    q.wait_upkeep();
    assert!(
        !dir.path().join("0000000001.wal").exists(),
        "reclaim deleted the first segment"
    );
    drop(q);
    let now = walq::Clock::now_ms(&clock);
    let (with, seen) = observe(dir.path(), now, false);
    let (_, scanned) = observe(dir.path(), now, true);
    assert!(with.checkpoint_used, "{with:?}");
    // The 50 left, and the probe and five keyed jobs `observe` enqueues.
    assert_eq!(seen.drained.len(), 56);
    assert_eq!(seen, scanned);
}

/// Long-lived jobs that would pin the job table's front are kept aside
/// (out of the id-ordered table); the checkpoint stores them with their
/// level, captured by pointer like the table, and a reopen from it shows
/// what a full scan shows.
#[test]
fn jobs_kept_aside_keep_their_level_in_the_checkpoint() {
    use std::time::Duration;
    use walq::{EnqueueOptions, Priority};
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(START);
    let q = Queue::open_with(dir.path(), opts(&clock, 0)).expect("open");
    let later = EnqueueOptions::new().delay(Duration::from_secs(3600));
    for p in [
        Priority::Low,
        Priority::Urgent,
        Priority::Normal,
        Priority::High,
    ] {
        q.enqueue_with(format!("{p:?}").as_bytes(), later.clone().priority(p))
            .expect("enqueue");
    }
    // Thousands of jobs through the queue: the table's front moves past
    // the four, which are kept aside.
    for i in 0..20_000u32 {
        q.enqueue(&i.to_le_bytes()).expect("enqueue");
        let job = q.dequeue().expect("dequeue").expect("a job");
        q.ack(job.receipt()).expect("ack");
    }
    q.check_invariants();
    q.close().expect("close");
    let now = START + 2 * 3600 * 1000;
    let (with, seen) = observe(dir.path(), now, false);
    let (_, scanned) = observe(dir.path(), now, true);
    assert!(with.checkpoint_used, "{with:?}");
    // (Not assert_eq: the statuses of 20,000 jobs would flood the log.)
    assert!(
        seen == scanned,
        "reopened from the checkpoint: {:?}; scanned: {:?}",
        seen.drained,
        scanned.drained
    );
    let first: Vec<u64> = seen.drained.iter().take(4).map(|d| d.0).collect();
    assert_eq!(first, vec![2, 4, 3, 1], "the four, by level");
}

/// A backlog reopened from its checkpoint holds its whole blocks of fresh
/// jobs as the checkpoint's runs; a close then writes those runs without
/// laying them out. The slots it writes are the ones the first close
/// wrote, and after a change in one block (an ack) and jobs of another
/// level among the runs, every job is still served, in order.
#[test]
fn a_backlog_reopened_from_runs_is_checkpointed_as_it_was() {
    use walq::format::checkpoint::Checkpoint;
    use walq::{Durability, EnqueueOptions, Options, Priority};
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(START);
    let options = || {
        Options::default()
            .clock(clock.clone())
            .durability(Durability::Os)
            .checkpoint_every(0)
    };
    let q = Queue::open_with(dir.path(), options()).expect("open");
    let mut ids = Vec::new();
    for i in 0..5 * 4096 + 500u32 {
        let opts = match i {
            8200 => EnqueueOptions::new().priority(Priority::High),
            16400 => EnqueueOptions::new().priority(Priority::Low),
            _ => EnqueueOptions::new(),
        };
        let e = q.enqueue_with(&i.to_le_bytes(), opts).expect("enqueue");
        ids.push((e.id, i));
    }
    q.close().expect("close");
    drop(q);
    let first = Checkpoint::decode(&checkpoint_bytes(dir.path())).expect("decodes");
    // Open and close with no change: the runs go back as runs.
    let q = Queue::open_with(dir.path(), options()).expect("reopen");
    assert!(q.recovery_report().checkpoint_used);
    q.close().expect("close");
    drop(q);
    let second = Checkpoint::decode(&checkpoint_bytes(dir.path())).expect("decodes");
    assert_eq!(second.slot_base, first.slot_base);
    assert!(second.slots == first.slots, "the same slots written again");
    // A change: the first job served (the High one) and acked.
    let q = Queue::open_with(dir.path(), options()).expect("reopen");
    let job = q.dequeue().expect("dequeue").expect("a job");
    assert_eq!(job.payload(), 8200u32.to_le_bytes());
    q.ack(job.receipt()).expect("ack");
    q.close().expect("close");
    drop(q);
    let scan = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), scan.path());
    std::fs::remove_file(scan.path().join("CHECKPOINT")).expect("remove");
    let drain = |dir: &Path| {
        let q = Queue::open_with(dir, options()).expect("reopen");
        q.check_invariants();
        let mut served = Vec::new();
        while let Some(job) = q.dequeue().expect("dequeue") {
            served.push((job.id(), job.payload().to_vec()));
            q.ack(job.receipt()).expect("ack");
        }
        (q.recovery_report().checkpoint_used, served)
    };
    let (used, served) = drain(dir.path());
    let (scanned, expected) = drain(scan.path());
    assert!(used && !scanned);
    let differ = served.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        differ,
        None,
        "{:?}",
        differ.map(|i| (&served[i], &expected[i]))
    );
    assert_eq!(served.len(), expected.len());
    ids.remove(8200);
    let mut got: Vec<(u64, u32)> = served
        .iter()
        .map(|(id, p)| (*id, u32::from_le_bytes(p[..].try_into().expect("4 bytes"))))
        .collect();
    got.sort_unstable();
    assert!(got == ids, "every job but the acked one, once");
}

/// A checkpoint whose job table reaches past the next job id (a damaged
/// base, with checksums that match) is not used: from it, the jobs
/// enqueued next would sit below the table and never be delivered, and a
/// base near `u64::MAX` overflowed.
#[test]
fn a_checkpoint_whose_slots_reach_past_the_next_id_falls_back() {
    use walq::format::checkpoint::{Checkpoint, CkSlot};
    let dir = tempfile::tempdir().expect("tempdir");
    let now = build(dir.path(), 5, 300, 0, true);
    let good = Checkpoint::decode(&checkpoint_bytes(dir.path())).expect("decodes");
    for base in [good.next_id, (1 << 62) - 100, u64::MAX - 1] {
        let mut ck = good.clone();
        ck.slot_base = base;
        ck.slots = vec![CkSlot::default(); 3];
        let label = format!("slot base {base}");
        falls_back(dir.path(), now, &ck.encode_as(3), "next job id", &label);
    }
}
