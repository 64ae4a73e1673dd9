//! Checked-in queue directories (`tests/fixtures/`) and what opening each
//! one must do. They pin the on-disk format: a change that breaks reading
//! files written by an earlier build fails here. See `docs/fixtures.md`.
//!
//! Regenerate (after a deliberate format change only) with
//! `WALQ_REGEN_FIXTURES=1 cargo test --test fixtures regenerate_fixtures`.
//! Generation is deterministic (manual clock, fixed jitter seed), so an
//! unchanged format regenerates identical bytes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use walq::format::frame;
use walq::format::header::{SegmentHeader, SEGMENT_HEADER_LEN};
use walq::{
    Durability, EnqueueOptions, ErrorKind, JobStatus, ManualClock, Options, Priority, Queue,
    RecoveryMode, Retry, LOCK_FILE,
};

/// The clock of every fixture: 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000_000;
const SEGMENT_SIZE: u64 = 64 * 1024;
const SEGMENT_1: &str = "0000000001.wal";
const HOUR: Duration = Duration::from_secs(3600);
const DONE_FILE: &str = "done.rec";
const RESULT_1: &[u8] = br#"{"invoice":"INV-1"}"#;

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn opts(clock: &ManualClock) -> Options {
    Options::default()
        .clock(clock.clone())
        .segment_size(SEGMENT_SIZE)
        .durability(Durability::Sync)
        .visibility_timeout(Duration::from_secs(30))
        .jitter_seed(7)
}

/// Copies fixture `name` into a fresh temporary directory (opening a
/// queue writes to it); returns the tempdir guard and the queue directory.
fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let src = fixtures_root().join(name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dst = tmp.path().join(name);
    std::fs::create_dir(&dst).expect("create copy");
    let entries = std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("fixture {} is missing: {e}", src.display()));
    for entry in entries {
        let entry = entry.expect("fixture entry");
        std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy fixture file");
    }
    (tmp, dst)
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `(offset, length)` of every frame of a segment file, up to the first
/// that does not decode.
fn frames(bytes: &[u8], segment_id: u32) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    while let Ok(f) = frame::decode(&bytes[off..], segment_id, bytes.len() as u32) {
        out.push((off, f.len as usize));
        off += f.len as usize;
    }
    out
}

/// Leases every ready job: `(id, payload, attempt)`, in delivery order.
fn lease_all(q: &Queue) -> Vec<(u64, Vec<u8>, u32)> {
    let mut out = Vec::new();
    while let Some(job) = q.dequeue().expect("dequeue") {
        out.push((job.id(), job.payload().to_vec(), job.attempt()));
    }
    out
}

fn payloads(jobs: &[(u64, Vec<u8>, u32)]) -> Vec<(u64, String)> {
    jobs.iter()
        .map(|(id, p, _)| (*id, String::from_utf8_lossy(p).into_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// The generator.

fn fresh_dir(name: &str) -> PathBuf {
    let dir = fixtures_root().join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove old fixture");
    }
    std::fs::create_dir_all(&dir).expect("create fixture dir");
    dir
}

fn finish(dir: &Path) {
    let lock = dir.join(LOCK_FILE);
    if lock.exists() {
        std::fs::remove_file(lock).expect("remove LOCK");
    }
    // Random bytes: removed so that generation stays deterministic (every
    // fixture is then also a store of a build before `STORE_ID`, which an
    // open gives one).
    let id = dir.join("STORE_ID");
    if id.exists() {
        std::fs::remove_file(id).expect("remove STORE_ID");
    }
}

/// Ends a fixture closed cleanly with its checkpoint: removes the LOCK,
/// and `done.rec` and the spare segments, which every open recreates.
fn finish_with_checkpoint(dir: &Path) {
    finish(dir);
    for name in [DONE_FILE.to_string()].into_iter().chain(
        file_names(dir)
            .into_iter()
            .filter(|n| n.ends_with(".spare")),
    ) {
        std::fs::remove_file(dir.join(name)).expect("remove a file the open recreates");
    }
}

/// The fixtures that predate `done.rec` stay directories without one, so
/// that they keep pinning the upgrade path (an old directory gains it).
fn finish_without_done_rec(dir: &Path) {
    finish(dir);
    for name in [DONE_FILE, "CHECKPOINT"] {
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_file(path).expect("remove a file newer than the fixture");
        }
    }
}

fn gen_clean() {
    let dir = fresh_dir("clean");
    gen_clean_jobs(&dir);
    finish_without_done_rec(&dir);
}

/// `clean/`'s jobs, closed cleanly with a checkpoint of format 1 (the
/// kept file, written by a build before version 3: regenerating it now
/// writes version 3, and the fixture no longer pins version 1).
fn gen_checkpoint() {
    let dir = fresh_dir("checkpoint");
    gen_clean_jobs(&dir);
    finish(&dir);
    // The spare segment is prepared afresh by every open.
    std::fs::remove_file(dir.join("0000000002.wal.spare")).expect("remove spare");
    assert!(dir.join("CHECKPOINT").exists());
}

fn gen_clean_jobs(dir: &Path) {
    let clock = ManualClock::new(T0);
    let q = Queue::open_with(dir, opts(&clock)).expect("open");
    // 1: acked, never seen again.
    assert_eq!(q.enqueue(b"acked").unwrap(), 1);
    let job = q.dequeue().unwrap().unwrap();
    q.ack(job.receipt()).unwrap();
    // 2: failed for good.
    assert_eq!(q.enqueue(b"failed").unwrap(), 2);
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "payment declined").unwrap();
    // 3: nacked on its only attempt.
    let e = q
        .enqueue_with(b"exhausted", EnqueueOptions::new().max_attempts(1))
        .unwrap();
    assert_eq!(e.id, 3);
    let job = q.dequeue().unwrap().unwrap();
    q.nack(job.receipt(), Retry::Backoff, "upstream timeout")
        .unwrap();
    // 4: leased when the queue closes.
    assert_eq!(q.enqueue(b"in-flight").unwrap(), 4);
    let leased = q.dequeue().unwrap().unwrap();
    assert_eq!(leased.id(), 4);
    // 5..8: ready, ready with a key, delayed an hour, ready.
    assert_eq!(q.enqueue(b"ready-1").unwrap(), 5);
    let e = q
        .enqueue_with(
            b"ready-keyed",
            EnqueueOptions::new().idempotency_key("order-42"),
        )
        .unwrap();
    assert_eq!(e.id, 6);
    let e = q
        .enqueue_with(b"delayed-1h", EnqueueOptions::new().delay(HOUR))
        .unwrap();
    assert_eq!(e.id, 7);
    assert_eq!(q.enqueue(b"ready-2").unwrap(), 8);
    q.close().unwrap();
    drop(leased);
    drop(q);
}

/// Enqueues `payloads` one by one (each fsynced) into a new queue.
fn gen_jobs(dir: &Path, payloads: &[&[u8]]) {
    let clock = ManualClock::new(T0);
    let q = Queue::open_with(dir, opts(&clock)).expect("open");
    for p in payloads {
        q.enqueue(p).unwrap();
    }
    q.close().unwrap();
    drop(q);
    finish_without_done_rec(dir);
}

fn gen_torn_tail() {
    let dir = fresh_dir("torn_tail");
    gen_jobs(
        &dir,
        &[b"torn-1", b"torn-2", b"torn-3", b"torn-4", b"torn-5"],
    );
    let path = dir.join(SEGMENT_1);
    let mut bytes = std::fs::read(&path).unwrap();
    let all = frames(&bytes, 1);
    assert_eq!(all.len(), 5, "one record per job");
    // A crash mid-write: the second half of the last record never landed.
    let (off, len) = all[4];
    bytes[off + len / 2..off + len].fill(0);
    std::fs::write(&path, bytes).unwrap();
}

fn gen_corrupt_middle() {
    let dir = fresh_dir("corrupt_middle");
    gen_jobs(
        &dir,
        &[
            b"intact-1",
            b"damaged-2",
            b"intact-3",
            b"intact-4",
            b"intact-5",
            b"intact-6",
        ],
    );
    let path = dir.join(SEGMENT_1);
    let mut bytes = std::fs::read(&path).unwrap();
    let all = frames(&bytes, 1);
    assert_eq!(all.len(), 6, "one record per job");
    // Bit rot in the second record's payload; four fsynced records follow.
    let (off, len) = all[1];
    bytes[off + len - 1] ^= 0x04;
    std::fs::write(&path, bytes).unwrap();
}

fn gen_leftover_tmp() {
    let dir = fresh_dir("leftover_tmp");
    gen_jobs(&dir, &[b"kept-1", b"kept-2"]);
    // An interrupted segment creation: header written, never renamed.
    let header = SegmentHeader::decode(&std::fs::read(dir.join(SEGMENT_1)).unwrap())
        .expect("segment 1 header");
    let next = SegmentHeader {
        segment_id: 9,
        base_lsn: 3,
        ..header
    };
    let mut tmp = next.encode().to_vec();
    tmp.resize(4096, 0);
    std::fs::write(dir.join("0000000009.wal.tmp"), tmp).unwrap();
    // An interrupted dead-letter rewrite.
    std::fs::write(dir.join("dead.wal.tmp"), b"half-written dead letters").unwrap();
}

fn gen_future_version() {
    let dir = fresh_dir("future_version");
    gen_jobs(&dir, &[b"from the future"]);
    let path = dir.join(SEGMENT_1);
    let mut bytes = std::fs::read(&path).unwrap();
    let header = SegmentHeader::decode(&bytes).expect("segment 1 header");
    let future = SegmentHeader {
        version: walq::format::FORMAT_VERSION + 1,
        ..header
    };
    // encode() computes a valid header CRC for the new version.
    bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&future.encode());
    std::fs::write(&path, bytes).unwrap();
}

fn gen_not_walq() {
    let dir = fresh_dir("not_walq");
    let text = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n\
        This file was named like a walq segment but holds something else.\n";
    std::fs::write(dir.join(SEGMENT_1), &text[..]).unwrap();
}

fn gen_completions() {
    let dir = fresh_dir("completions");
    let clock = ManualClock::new(T0);
    let q = Queue::open_with(&dir, opts(&clock)).expect("open");
    // 1: acked with a result.
    assert_eq!(q.enqueue(b"with-result").unwrap(), 1);
    let job = q.dequeue().unwrap().unwrap();
    q.ack_with_result(job.receipt(), RESULT_1).unwrap();
    // 2: acked without one.
    assert_eq!(q.enqueue(b"plain").unwrap(), 2);
    let job = q.dequeue().unwrap().unwrap();
    q.ack(job.receipt()).unwrap();
    // 3: failed, then purged.
    assert_eq!(q.enqueue(b"purged").unwrap(), 3);
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "bad address").unwrap();
    q.purge(3).unwrap();
    // 4: failed and kept; 5: ready.
    assert_eq!(q.enqueue(b"dead").unwrap(), 4);
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "card declined").unwrap();
    assert_eq!(q.enqueue(b"ready").unwrap(), 5);
    q.close().unwrap();
    drop(q);
    finish(&dir);
}

/// A `done.rec` as a rewrite leaves it after purge markers were dropped
/// past the cap: a Horizon record (kind 17) naming job 2, then the marker
/// kept (job 3). Jobs 1 and 3 were cancelled, 2 acked, 4 is queued. The
/// cap is 100,000 markers, so the file is made by hand from the one the
/// queue wrote: its header, the Horizon record, job 3's marker.
fn gen_horizon() {
    use walq::format::done::DoneRecord;
    let dir = fresh_dir("horizon");
    let clock = ManualClock::new(T0);
    let q = Queue::open_with(&dir, opts(&clock)).expect("open");
    let ids = q.enqueue_batch(["one", "two", "three", "four"]).unwrap();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    q.cancel(1).unwrap();
    q.cancel(3).unwrap();
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), 2);
    q.ack(job.receipt()).unwrap();
    q.close().unwrap();
    drop(q);
    let old = std::fs::read(dir.join(DONE_FILE)).unwrap();
    let seed = u32::from_le_bytes(*b"DONE");
    let mut out = old[..SEGMENT_HEADER_LEN].to_vec();
    let mut off = SEGMENT_HEADER_LEN;
    let mut kept = Vec::new();
    while let Ok(f) = frame::decode(&old[off..], seed, 1 << 16) {
        let rec = DoneRecord::decode(f.kind, f.body).expect("a completion record");
        if rec.id() == 3 {
            kept = old[off..off + f.len as usize].to_vec();
        }
        off += f.len as usize;
    }
    assert!(!kept.is_empty(), "job 3's marker");
    let rec = DoneRecord::Horizon { id: 2 };
    let mut head = vec![0u8; frame::FRAME_HEADER_LEN];
    let tail = rec.encode_into(&mut head);
    frame::seal(&mut head, seed, 3, rec.kind(), 0, 0, tail);
    out.extend_from_slice(&head);
    frame::clear_sync_lag(&mut kept, seed);
    out.extend_from_slice(&kept);
    std::fs::write(dir.join(DONE_FILE), out).unwrap();
    finish(&dir);
    for name in file_names(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".spare"))
    {
        std::fs::remove_file(dir.join(name)).expect("remove a spare the open recreates");
    }
}

/// Three queued jobs and an `ID_FLOOR` whose slot in force (made by hand,
/// as a crash after a raise leaves it) is above the log's next id: slot 0
/// holds a clean close's floor 4 (sequence 2), slot 1 floor 1000
/// (sequence 3).
fn gen_id_floor() {
    use walq::format::id_floor::{encode, Slot, FILE_LEN};
    let dir = fresh_dir("id_floor");
    let clock = ManualClock::new(T0);
    let q = Queue::open_with(&dir, opts(&clock)).expect("open");
    assert_eq!(q.enqueue_batch(["one", "two", "three"]).unwrap(), [1, 2, 3]);
    q.close().unwrap();
    drop(q);
    let mut file = vec![0u8; FILE_LEN as usize];
    for slot in [
        Slot { seq: 2, floor: 4 },
        Slot {
            seq: 3,
            floor: 1000,
        },
    ] {
        let at = slot.offset() as usize;
        file[at..at + 40].copy_from_slice(&encode(slot));
    }
    std::fs::write(dir.join("ID_FLOOR"), file).unwrap();
    finish(&dir);
    for name in file_names(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".spare"))
    {
        std::fs::remove_file(dir.join(name)).expect("remove a spare the open recreates");
    }
}

/// Jobs leased with `dequeue_batch` and settled with `ack_batch` (record
/// kinds 15 LeaseMany and 14 AckMany), without a checkpoint, so opening it
/// replays them.
fn gen_batches() {
    let dir = fresh_dir("batches");
    let clock = ManualClock::new(T0);
    let q = Queue::open_with(&dir, opts(&clock)).expect("open");
    let ids = q
        .enqueue_batch((1..=6).map(|i| format!("batch-{i}")))
        .unwrap();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    let jobs = q.dequeue_batch(5).unwrap();
    let pick: Vec<_> = [0, 1, 3].iter().map(|&i| jobs[i].receipt()).collect();
    assert!(q.ack_batch(&pick).unwrap().iter().all(|r| r.is_ok()));
    q.close().unwrap();
    drop(jobs);
    drop(q);
    finish_without_done_rec(&dir);
    // Spare segments hold no data (an open prepares them again).
    for name in file_names(&dir) {
        if name.ends_with(".spare") {
            std::fs::remove_file(dir.join(name)).expect("remove a spare");
        }
    }
}

/// Jobs of every priority level (Enqueue2 records, kind 12, except the
/// Normal one) and two of one message group (kind 12), one leased when
/// the queue closed cleanly, with its checkpoint (version 2: live jobs
/// have levels and a group; the kept file, written by a build before
/// version 3: regenerating it now writes version 3, which the test of
/// this fixture refuses).
fn gen_priorities() {
    let dir = fresh_dir("priorities");
    let clock = ManualClock::new(T0);
    let q = Queue::open_with(&dir, opts(&clock)).expect("open");
    for (payload, p) in [
        ("low", Priority::Low),
        ("normal", Priority::Normal),
        ("urgent-1", Priority::Urgent),
        ("high", Priority::High),
        ("urgent-2", Priority::Urgent),
    ] {
        q.enqueue_with(payload.as_bytes(), EnqueueOptions::new().priority(p))
            .unwrap();
    }
    for payload in ["group-1", "group-2"] {
        q.enqueue_with(
            payload.as_bytes(),
            EnqueueOptions::new().group("customer-42"),
        )
        .unwrap();
    }
    let job = q.dequeue().unwrap().expect("a job");
    assert_eq!(job.payload(), b"urgent-1");
    q.close().unwrap();
    drop(q);
    finish_with_checkpoint(&dir);
}

/// A clean close with a checkpoint of version 3 (slot runs): 40 jobs of
/// one size and 30 of sizes that vary, back to back (two runs), then a
/// delayed job, one of level High and one leased when the queue closed
/// (stored whole), and an acked one (an empty slot).
fn gen_runs() {
    let dir = fresh_dir("checkpoint_runs");
    let clock = ManualClock::new(T0);
    let q = Queue::open_with(&dir, opts(&clock)).expect("open");
    for i in 0..40 {
        q.enqueue(format!("same-{i:02}").as_bytes()).unwrap();
    }
    for i in 0..30 {
        q.enqueue(format!("varied-{}", "x".repeat(i)).as_bytes())
            .unwrap();
    }
    q.enqueue_with(b"delayed", EnqueueOptions::new().delay(HOUR))
        .unwrap();
    q.enqueue_with(b"high", EnqueueOptions::new().priority(Priority::High))
        .unwrap();
    let high = q.dequeue().unwrap().expect("the High job first");
    assert_eq!(high.payload(), b"high");
    let first = q.dequeue().unwrap().expect("job 1");
    q.ack(first.receipt()).unwrap();
    q.close().unwrap();
    drop(q);
    finish_with_checkpoint(&dir);
}

/// The error of job 4 of `last_errors/`: 5,000 bytes, cut to 4,096 when
/// kept ('é' is 2 bytes, after an odd 1: the cut falls at 4,095).
fn long_error() -> String {
    format!("x{}", "é".repeat(2_500))
}

fn gen_last_errors() {
    let dir = fresh_dir("last_errors");
    let clock = ManualClock::new(T0);
    let q = Queue::open_with(&dir, opts(&clock)).expect("open");
    for name in ["retry-later", "retry-now", "plain", "long", "acked"] {
        q.enqueue(name.as_bytes()).unwrap();
    }
    let held: Vec<walq::Receipt> = (0..5)
        .map(|_| q.dequeue().unwrap().expect("a job").receipt())
        .collect();
    let now = Retry::After(Duration::ZERO);
    q.nack(held[0], Retry::After(HOUR), "gateway timeout")
        .unwrap();
    q.nack(held[1], now, "é boom").unwrap();
    q.nack(held[2], Retry::After(HOUR), "").unwrap();
    q.nack(held[3], Retry::After(HOUR), &long_error()).unwrap();
    q.nack(held[4], now, "once").unwrap();
    let again = q.dequeue().unwrap().expect("job 2");
    assert_eq!(again.id(), 2);
    let acked = q.dequeue().unwrap().expect("job 5");
    q.ack(acked.receipt()).unwrap();
    q.close().unwrap();
    drop(q);
    finish_with_checkpoint(&dir);
    // As in every fixture but `id_floor/`: the open makes it.
    std::fs::remove_file(dir.join("ID_FLOOR")).expect("remove ID_FLOOR");
}

/// Writes every fixture; runs only with `WALQ_REGEN_FIXTURES=1`
/// (`WALQ_REGEN_FIXTURES=checkpoint` or `=batches`: only that one).
#[test]
fn regenerate_fixtures() {
    let which = std::env::var("WALQ_REGEN_FIXTURES");
    if which.as_deref() == Ok("checkpoint") {
        gen_checkpoint();
        return;
    }
    if which.as_deref() == Ok("batches") {
        gen_batches();
        return;
    }
    if which.as_deref() == Ok("priorities") {
        gen_priorities();
        return;
    }
    if which.as_deref() == Ok("horizon") {
        gen_horizon();
        return;
    }
    if which.as_deref() == Ok("id_floor") {
        gen_id_floor();
        return;
    }
    if which.as_deref() == Ok("checkpoint_runs") {
        gen_runs();
        return;
    }
    if which.as_deref() == Ok("last_errors") {
        gen_last_errors();
        return;
    }
    if which.as_deref() != Ok("1") {
        return;
    }
    gen_checkpoint();
    gen_clean();
    gen_torn_tail();
    gen_corrupt_middle();
    gen_leftover_tmp();
    gen_future_version();
    gen_not_walq();
    gen_completions();
    gen_batches();
    gen_priorities();
    gen_runs();
    gen_last_errors();
    gen_horizon();
    gen_id_floor();
    eprintln!("fixtures written to {}", fixtures_root().display());
}

// ---------------------------------------------------------------------------
// The documented outcomes.

#[test]
fn clean_opens_with_exactly_its_jobs() {
    let r = clean_outcome("clean");
    assert!(!r.checkpoint_used, "{r:?}");
    assert_eq!(r.checkpoint_fallback.as_deref(), Some("missing"));
}

#[test]
fn checkpoint_opens_from_its_checkpoint_with_the_jobs_of_clean() {
    let r = clean_outcome("checkpoint");
    assert!(r.checkpoint_used, "{r:?}");
    assert_eq!(r.checkpoint_fallback, None);
    assert_eq!(r.checkpoint_lsn, 15, "{r:?}");
    assert_eq!(r.records, 0, "nothing replayed: {r:?}");
}

/// Opens a copy of fixture `name` (`clean/`'s jobs), checks the outcome
/// documented for `clean/`, returns the recovery report.
fn clean_outcome(name: &str) -> walq::RecoveryReport {
    let (_tmp, dir) = copy_fixture(name);
    // A minute after the fixture was written: the delayed job is not due.
    let clock = ManualClock::new(T0 + 60_000);
    let q = Queue::open_with(&dir, opts(&clock)).expect("clean fixture opens");
    q.check_invariants();
    let r = q.recovery_report().clone();
    assert_eq!(r.segments_scanned, 1, "{r:?}");
    assert_eq!(r.leases_released, 1, "{r:?}");
    assert_eq!(r.dead_lettered_on_open, 0, "{r:?}");
    assert_eq!(r.torn_bytes, 0, "{r:?}");
    assert_eq!(r.records_lost, 0, "{r:?}");
    assert_eq!(r.temp_files_removed, 0, "{r:?}");
    let s = q.stats();
    assert_eq!(
        (s.ready, s.delayed, s.in_flight, s.dead, s.segments),
        (4, 1, 0, 2, 1),
        "{s:?}"
    );

    // Dead letters, with their payload, attempts and last error.
    let dead = q.dead_letters().unwrap();
    let summary: Vec<_> = dead
        .iter()
        .map(|d| {
            (
                d.id,
                String::from_utf8_lossy(&d.payload).into_owned(),
                d.attempts,
                d.error.clone(),
                d.enqueued_ms,
                d.key.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (2, "failed".into(), 1, "payment declined".into(), T0, None),
            (
                3,
                "exhausted".into(),
                1,
                "upstream timeout".into(),
                T0,
                None
            ),
        ]
    );

    // The key is still known (within its window): no new job.
    let again = q
        .enqueue_with(
            b"ready-keyed again",
            EnqueueOptions::new().idempotency_key("order-42"),
        )
        .unwrap();
    assert_eq!((again.id, again.duplicate), (6, true));

    // Ready jobs oldest first; the lease held at close comes back due at
    // the open, with its interrupted attempt counted.
    let mut jobs = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        jobs.push((job.id(), job.payload().to_vec(), job.attempt()));
        q.ack(job.receipt()).unwrap();
    }
    assert_eq!(
        payloads(&jobs),
        vec![
            (5, "ready-1".to_string()),
            (6, "ready-keyed".to_string()),
            (8, "ready-2".to_string()),
            (4, "in-flight".to_string()),
        ]
    );
    let attempts: Vec<u32> = jobs.iter().map(|j| j.2).collect();
    assert_eq!(attempts, vec![1, 1, 1, 2]);

    // The delayed job comes due an hour after it was enqueued (the jobs
    // above were acked, so no expiring lease comes back meanwhile).
    clock.set(T0 + HOUR.as_secs() * 1000 - 1);
    assert!(q.dequeue().unwrap().is_none());
    clock.set(T0 + HOUR.as_secs() * 1000);
    let job = q.dequeue().unwrap().expect("delayed job due");
    assert_eq!((job.id(), job.payload()), (7, &b"delayed-1h"[..]));
    assert_eq!(job.enqueued_ms(), T0);

    // Ids are never reused: the next job is 9, the acked job 1 is gone.
    assert_eq!(q.enqueue(b"new").unwrap(), 9);
    assert!(q.dead_letter(1).unwrap().is_none());
    q.check_invariants();
    r
}

#[test]
fn torn_tail_opens_with_the_intact_prefix() {
    let (_tmp, dir) = copy_fixture("torn_tail");
    let clock = ManualClock::new(T0 + 60_000);
    let q = Queue::open_with(&dir, opts(&clock)).expect("a torn tail is cut, not an error");
    let r = q.recovery_report().clone();
    assert!(r.torn_bytes > 0, "{r:?}");
    assert_eq!(r.records, 4, "{r:?}");
    assert_eq!(r.records_lost, 0, "{r:?}");
    let jobs = lease_all(&q);
    assert_eq!(
        payloads(&jobs),
        vec![
            (1, "torn-1".to_string()),
            (2, "torn-2".to_string()),
            (3, "torn-3".to_string()),
            (4, "torn-4".to_string()),
        ]
    );
    // The cut record's id was never acknowledged; appends continue cleanly.
    let id = q.enqueue(b"after the cut").unwrap();
    assert!(id >= 5, "{id}");
    drop(jobs);
    drop(q);
    let q = Queue::open_with(&dir, opts(&clock)).expect("reopen after the cut");
    assert_eq!(q.recovery_report().torn_bytes, 0);
    let last = lease_all(&q)
        .into_iter()
        .find(|j| j.0 == id)
        .expect("the job enqueued after the cut");
    assert_eq!(last.1, b"after the cut");
}

#[test]
fn corrupt_middle_is_an_error_naming_file_and_offset() {
    let (_tmp, dir) = copy_fixture("corrupt_middle");
    // Where the damaged (second) record starts, found independently: the
    // first record is the last one that still decodes.
    let seg = std::fs::read(dir.join(SEGMENT_1)).unwrap();
    let good = frames(&seg, 1);
    assert_eq!(
        good.len(),
        1,
        "only the first record decodes before the damage"
    );
    let bad_offset = (good[0].0 + good[0].1) as u64;

    let clock = ManualClock::new(T0 + 60_000);
    let err = Queue::open_with(&dir, opts(&clock)).expect_err("damage before intact records");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_names_segment_1(&err);
    assert_eq!(err.offset(), Some(bad_offset), "{err}");
    let text = err.to_string();
    assert!(text.contains(SEGMENT_1), "{text}");
    assert!(text.contains(&format!("offset {bad_offset}")), "{text}");

    // Strict open changed nothing; salvage skips the damaged record.
    assert_eq!(std::fs::read(dir.join(SEGMENT_1)).unwrap(), seg);
    let q = Queue::open_with(&dir, opts(&clock).recovery(RecoveryMode::Salvage))
        .expect("salvage opens");
    let r = q.recovery_report().clone();
    assert_eq!(r.records_lost, 1, "{r:?}");
    assert!(r.bytes_skipped > 0, "{r:?}");
    let jobs = lease_all(&q);
    assert_eq!(
        payloads(&jobs),
        vec![
            (1, "intact-1".to_string()),
            (3, "intact-3".to_string()),
            (4, "intact-4".to_string()),
            (5, "intact-5".to_string()),
            (6, "intact-6".to_string()),
        ]
    );
}

#[test]
fn leftover_tmp_files_are_removed() {
    let (_tmp, dir) = copy_fixture("leftover_tmp");
    assert!(dir.join("0000000009.wal.tmp").exists());
    assert!(dir.join("dead.wal.tmp").exists());
    let clock = ManualClock::new(T0 + 60_000);
    let q = Queue::open_with(&dir, opts(&clock)).expect("leftover tmp files are no error");
    assert_eq!(q.recovery_report().temp_files_removed, 2);
    let names = file_names(&dir);
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp")),
        "tmp files left: {names:?}"
    );
    assert_eq!(
        payloads(&lease_all(&q)),
        vec![(1, "kept-1".to_string()), (2, "kept-2".to_string())]
    );
    assert_eq!(q.stats().segments, 1);
}

/// Asserts that `err` names the file of segment 1.
fn assert_names_segment_1(err: &walq::Error) {
    assert_eq!(
        err.path().and_then(Path::file_name),
        Some(std::ffi::OsStr::new(SEGMENT_1)),
        "{err}"
    );
}

/// Opens a copy of fixture `name`, which must be refused (`why`) with an
/// error of `kind` naming segment 1, and leave that file as it was (so a
/// newer build can still read it).
fn assert_refused_unchanged(name: &str, why: &str, kind: ErrorKind) {
    let (_tmp, dir) = copy_fixture(name);
    let before = std::fs::read(dir.join(SEGMENT_1)).unwrap();
    let clock = ManualClock::new(T0 + 60_000);
    let err = Queue::open_with(&dir, opts(&clock)).expect_err(why);
    assert_eq!(err.kind(), kind, "{err}");
    assert_names_segment_1(&err);
    assert_eq!(std::fs::read(dir.join(SEGMENT_1)).unwrap(), before);
}

#[test]
fn future_version_is_refused() {
    assert_refused_unchanged(
        "future_version",
        "a newer format is refused",
        ErrorKind::UnsupportedVersion,
    );
}

#[test]
fn not_walq_is_refused() {
    assert_refused_unchanged("not_walq", "a foreign file is refused", ErrorKind::Corrupt);
}

#[test]
fn fixtures_hold_no_lock_file() {
    for name in [
        "clean",
        "torn_tail",
        "corrupt_middle",
        "leftover_tmp",
        "future_version",
        "not_walq",
        "completions",
        "batches",
        "priorities",
        "horizon",
        "id_floor",
    ] {
        let names = file_names(&fixtures_root().join(name));
        assert!(!names.iter().any(|n| n == LOCK_FILE), "{name}: {names:?}");
    }
}

/// An open issues ids from the floor in force (a crash may have lost jobs
/// below it), leaves the file as it was until an enqueue needs more, and
/// keeps the jobs.
#[test]
fn id_floor_fixture_issues_ids_from_its_floor() {
    let (_tmp, dir) = copy_fixture("id_floor");
    let before = std::fs::read(dir.join("ID_FLOOR")).unwrap();
    let clock = ManualClock::new(T0 + 60_000);
    let q = Queue::open_with(&dir, opts(&clock)).expect("opens");
    assert_eq!(std::fs::read(dir.join("ID_FLOOR")).unwrap(), before);
    assert_eq!(q.recovery_report().bytes_skipped, 0);
    assert_eq!(q.enqueue(b"four").unwrap(), 1000);
    let mut ids = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        ids.push(job.id());
        q.ack(job.receipt()).unwrap();
    }
    assert_eq!(ids, [1, 2, 3, 1000]);
}

/// A store of a build before `ID_FLOOR` (every other fixture) issues the
/// log's next id, with no gap, and gets the file at its open.
#[test]
fn a_store_without_an_id_floor_issues_the_logs_next_id() {
    let (_tmp, dir) = copy_fixture("batches");
    assert!(!dir.join("ID_FLOOR").exists(), "batches predates ID_FLOOR");
    let clock = ManualClock::new(T0 + 60_000);
    let q = Queue::open_with(&dir, opts(&clock)).expect("opens");
    assert_eq!(q.enqueue(b"next").unwrap(), 7);
    assert!(dir.join("ID_FLOOR").exists());
}

#[test]
fn batches_replays_its_batch_records() {
    let (_tmp, dir) = copy_fixture("batches");
    let bytes = std::fs::read(dir.join(SEGMENT_1)).unwrap();
    let kinds: Vec<u8> = frames(&bytes, 1)
        .iter()
        .map(|&(off, _)| bytes[off + 16])
        .collect();
    // Six enqueues (one framed batch), one LeaseMany, one AckMany.
    assert_eq!(kinds, vec![1, 1, 1, 1, 1, 1, 15, 14], "{kinds:?}");
    let clock = ManualClock::new(T0 + 60_000);
    let q = Queue::open_with(&dir, opts(&clock)).expect("batches fixture opens");
    q.check_invariants();
    let r = q.recovery_report().clone();
    assert!(!r.checkpoint_used, "{r:?}");
    assert_eq!(r.records, 8, "{r:?}");
    assert_eq!(r.leases_released, 2, "jobs 3 and 5: {r:?}");
    let plain = JobStatus::Done {
        finished_ms: None,
        result: None,
    };
    for id in [1, 2, 4] {
        assert_eq!(q.status(id).unwrap(), plain, "job {id}");
    }
    assert_eq!(q.status(3).unwrap(), JobStatus::Queued { attempts: 1 });
    assert_eq!(q.status(6).unwrap(), JobStatus::Queued { attempts: 0 });
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight, s.dead), (3, 0, 0));
    let jobs = lease_all(&q);
    assert_eq!(
        payloads(&jobs),
        vec![
            (6, "batch-6".to_string()),
            (3, "batch-3".to_string()),
            (5, "batch-5".to_string())
        ]
    );
    let attempts: Vec<u32> = jobs.iter().map(|j| j.2).collect();
    assert_eq!(attempts, vec![1, 2, 2]);
    assert_eq!(q.enqueue(b"next").unwrap(), 7);
}

/// Opens a copy of fixture `name`, whose checkpoint has version `version`,
/// after `check` looked at its files: from the checkpoint, or with it
/// removed when `scan`. The open must use the checkpoint exactly when it is
/// kept, and release the fixture's one lease.
fn open_fixture(
    name: &str,
    version: u16,
    scan: bool,
    check: impl FnOnce(&Path),
) -> (tempfile::TempDir, Queue) {
    let (tmp, dir) = copy_fixture(name);
    check(&dir);
    let ck = std::fs::read(dir.join("CHECKPOINT")).unwrap();
    assert_eq!(
        u16::from_le_bytes([ck[8], ck[9]]),
        version,
        "checkpoint version"
    );
    if scan {
        std::fs::remove_file(dir.join("CHECKPOINT")).unwrap();
    }
    let clock = ManualClock::new(T0 + 60_000);
    let q = Queue::open_with(&dir, opts(&clock)).unwrap_or_else(|e| panic!("{name} opens: {e}"));
    q.check_invariants();
    let r = q.recovery_report().clone();
    assert_eq!(r.checkpoint_used, !scan, "{r:?}");
    assert_eq!(r.leases_released, 1, "{r:?}");
    (tmp, q)
}

#[test]
fn priorities_opens_with_every_level_from_the_checkpoint_and_from_the_log() {
    for scan in [false, true] {
        let (_tmp, q) = open_fixture("priorities", 2, scan, |dir| {
            let bytes = std::fs::read(dir.join(SEGMENT_1)).unwrap();
            let kinds: Vec<u8> = frames(&bytes, 1)
                .iter()
                .map(|&(off, _)| bytes[off + 16])
                .collect();
            // Enqueue2 for every level but Normal and for the grouped
            // jobs, then the lease of job 3.
            assert_eq!(kinds, vec![12, 1, 12, 12, 12, 12, 12, 2], "{kinds:?}");
        });
        let s = q.stats();
        assert_eq!((s.ready, s.delayed), (6, 1), "job 7 waits for job 6");
        let mut order = Vec::new();
        let mut held = Vec::new();
        while let Some(job) = q.dequeue().unwrap() {
            order.push((job.id(), job.priority(), job.attempt()));
            held.push(job);
        }
        // The cycle: Urgent, High, Urgent (job 3, released at the open,
        // after job 5), Normal, Low, then Normal alone (job 6, the
        // group's head; job 7 waits for it).
        assert_eq!(
            order,
            vec![
                (5, Priority::Urgent, 1),
                (4, Priority::High, 1),
                (3, Priority::Urgent, 2),
                (2, Priority::Normal, 1),
                (1, Priority::Low, 1),
                (6, Priority::Normal, 1),
            ],
            "scan: {scan}"
        );
        assert_eq!(held[5].group(), Some(&b"customer-42"[..]));
        q.ack(held[5].receipt()).unwrap();
        let g2 = q.dequeue().unwrap().expect("job 7, its group free");
        assert_eq!((g2.id(), g2.payload()), (7, &b"group-2"[..]));
        assert_eq!(q.enqueue(b"next").unwrap(), 8);
    }
}

#[test]
fn checkpoint_runs_opens_from_its_version_3_checkpoint_as_from_the_log() {
    let mut seen = Vec::new();
    for scan in [false, true] {
        let (_tmp, q) = open_fixture("checkpoint_runs", 3, scan, |dir| {
            let ck = std::fs::read(dir.join("CHECKPOINT")).unwrap();
            // 73 slots in far fewer than 16 bytes each.
            assert!(ck.len() < 128 + 16 + 73 * 4, "{} bytes", ck.len());
        });
        let s = q.stats();
        assert_eq!((s.ready, s.delayed, s.in_flight), (70, 1, 0), "{s:?}");
        let jobs = lease_all(&q);
        assert_eq!(jobs.len(), 70);
        // The High job, released at the open, first; then ids 2..=70.
        assert_eq!(
            (jobs[0].0, jobs[0].1.as_slice(), jobs[0].2),
            (72, &b"high"[..], 2)
        );
        let ids: Vec<u64> = jobs[1..].iter().map(|j| j.0).collect();
        assert_eq!(ids, (2..=70).collect::<Vec<u64>>());
        assert_eq!(jobs[1].1, b"same-01");
        assert_eq!(
            jobs[69].1,
            format!("varied-{}", "x".repeat(29)).into_bytes()
        );
        seen.push(jobs);
    }
    assert_eq!(seen[0], seen[1], "checkpoint and scan serve the same");
}

#[test]
fn last_errors_opens_with_each_jobs_error_from_the_checkpoint_and_from_the_log() {
    for scan in [false, true] {
        let (_tmp, q) = open_fixture("last_errors", 5, scan, |dir| {
            let bytes = std::fs::read(dir.join(SEGMENT_1)).unwrap();
            let kinds: Vec<u8> = frames(&bytes, 1)
                .iter()
                .map(|&(off, _)| bytes[off + 16])
                .collect();
            // Five enqueues, five leases, four NackErr records (kind
            // 18) and one plain Nack (kind 4: the empty error), two
            // leases and an ack.
            assert_eq!(
                kinds,
                [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 18, 18, 4, 18, 18, 2, 2, 3],
                "scan: {scan}"
            );
        });
        let kept: String = long_error().chars().take(2_048).collect();
        assert_eq!(kept.len(), 4_095);
        let errors: Vec<Option<String>> = (1..=6).map(|id| q.last_error(id).unwrap()).collect();
        assert_eq!(
            errors,
            [
                Some("gateway timeout".to_string()),
                Some("é boom".to_string()),
                None,
                Some(kept),
                None,
                None
            ],
            "scan: {scan}"
        );
        let s = q.stats();
        assert_eq!((s.ready, s.delayed, s.in_flight), (1, 3, 0), "{s:?}");
        // Job 2, released at the open (attempt 3), keeps its error until
        // it is acked.
        let job = q.dequeue().unwrap().expect("job 2");
        assert_eq!((job.id(), job.attempt()), (2, 3));
        assert_eq!(q.last_error(2).unwrap().as_deref(), Some("é boom"));
        q.ack(job.receipt()).unwrap();
        assert_eq!(q.last_error(2).unwrap(), None);
        assert_eq!(q.enqueue(b"next").unwrap(), 6);
    }
}

#[test]
fn a_directory_without_done_rec_gains_one() {
    let (_tmp, dir) = copy_fixture("clean");
    assert!(!dir.join(DONE_FILE).exists(), "clean predates done.rec");
    let clock = ManualClock::new(T0 + 60_000);
    let q = Queue::open_with(&dir, opts(&clock)).expect("opens");
    let done = std::fs::read(dir.join(DONE_FILE)).expect("done.rec created");
    assert_eq!(done.len(), SEGMENT_HEADER_LEN, "header only");
    let plain = JobStatus::Done {
        finished_ms: None,
        result: None,
    };
    assert_eq!(q.status(1).unwrap(), plain);
    assert!(matches!(q.status(2).unwrap(), JobStatus::Dead { .. }));
    assert_eq!(q.status(4).unwrap(), JobStatus::Queued { attempts: 1 });
    assert_eq!(q.status(9).unwrap(), JobStatus::Unknown);
}

#[test]
fn horizon_fixture_reads_dropped_markers_as_expired() {
    let (_tmp, dir) = copy_fixture("horizon");
    let before = std::fs::read(dir.join(DONE_FILE)).unwrap();
    let clock = ManualClock::new(T0 + 60_000);
    let q = Queue::open_with(&dir, opts(&clock)).expect("opens");
    assert_eq!(
        q.status(1).unwrap(),
        JobStatus::Expired,
        "cancelled, marker dropped"
    );
    assert_eq!(
        q.status(2).unwrap(),
        JobStatus::Expired,
        "acked, below the horizon"
    );
    assert_eq!(q.status(3).unwrap(), JobStatus::Purged { purged_ms: T0 });
    assert_eq!(q.status(4).unwrap(), JobStatus::Queued { attempts: 0 });
    assert_eq!(q.status(5).unwrap(), JobStatus::Unknown);
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!((job.id(), job.payload()), (4, &b"four"[..]));
    q.ack(job.receipt()).unwrap();
    assert_eq!(
        q.status(4).unwrap(),
        JobStatus::Done {
            finished_ms: None,
            result: None
        },
        "above the horizon"
    );
    drop(q);
    assert_eq!(std::fs::read(dir.join(DONE_FILE)).unwrap(), before);
}

#[test]
fn completions_fixture_reads_every_status() {
    let (_tmp, dir) = copy_fixture("completions");
    let before = std::fs::read(dir.join(DONE_FILE)).unwrap();
    let clock = ManualClock::new(T0 + 60_000);
    let q = Queue::open_with(&dir, opts(&clock)).expect("opens");
    let plain = JobStatus::Done {
        finished_ms: None,
        result: None,
    };
    assert_eq!(
        q.status(1).unwrap(),
        JobStatus::Done {
            finished_ms: Some(T0),
            result: Some(RESULT_1.to_vec())
        }
    );
    assert_eq!(q.status(2).unwrap(), plain);
    assert_eq!(q.status(3).unwrap(), JobStatus::Purged { purged_ms: T0 });
    assert_eq!(
        q.status(4).unwrap(),
        JobStatus::Dead {
            attempts: 1,
            dead_ms: T0,
            error: "card declined".into()
        }
    );
    assert_eq!(q.status(5).unwrap(), JobStatus::Queued { attempts: 0 });
    assert_eq!(q.status(6).unwrap(), JobStatus::Unknown);
    drop(q);
    assert_eq!(std::fs::read(dir.join(DONE_FILE)).unwrap(), before);
    // After the 24 h window the result is forgotten; the marker is not.
    let clock = ManualClock::new(T0 + 25 * HOUR.as_millis() as u64);
    let q = Queue::open_with(&dir, opts(&clock)).expect("opens");
    assert_eq!(q.status(1).unwrap(), plain);
    assert_eq!(q.status(3).unwrap(), JobStatus::Purged { purged_ms: T0 });
}
