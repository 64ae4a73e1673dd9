//! Rotation syncs nothing under the queue lock (issue 8, item 6): the
//! sealed segment, the directory and the new segment's header are synced
//! by the next group-commit leader. So a power cut can leave the segment
//! before the newest with a torn tail while pages of the newest reached the
//! disk, or the newest with a name but no header. Recovery cuts such a
//! tail and drops the newest segment, none of whose records was published,
//! unless an intact frame proves through its sync lag that the lost record
//! had been durable: then it is corruption (docs/format.md, "Torn across a
//! rotation").
//!
//! The states are made by editing the files of a closed queue: the clean
//! close record and the checkpoint are removed (as after a crash), a record
//! is zeroed (a page not written back), and the sync lags of the newest
//! segment's frames are rewritten (resealed) to prove or not prove it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use walq::format::frame;
use walq::vfs::{Fault, FaultOp, SimFs, Vfs};
use walq::{Durability, ErrorKind, ManualClock, Options, Queue, RecoveryMode};

const HEADER: usize = 64;

fn opts(clock: &ManualClock) -> Options {
    Options::default()
        .clock(clock.clone())
        .segment_size(64 * 1024)
        .durability(Durability::Os)
        .checkpoint_every(0)
}

fn payload(i: usize) -> Vec<u8> {
    (0..300 + i % 7).map(|k| (i * 31 + k) as u8 | 1).collect()
}

fn segment(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.wal"))
}

/// A closed queue of two segments: returns how many jobs the first holds
/// (jobs `0..n` in order, `extra` of them in the second).
fn build(dir: &Path, clock: &ManualClock, extra: usize) -> (usize, usize) {
    let q = Queue::open_with(dir, opts(clock)).unwrap();
    let mut i = 0;
    while q.stats().segments < 2 {
        q.enqueue(&payload(i)).unwrap();
        i += 1;
    }
    let in_first = i - 1;
    for _ in 1..extra {
        q.enqueue(&payload(i)).unwrap();
        i += 1;
    }
    q.close().unwrap();
    (in_first, i)
}

/// Makes the directory look like one a crash left (no clean close, no
/// checkpoint: the whole log is scanned).
fn as_after_a_crash(dir: &Path) {
    for name in ["CLOSED", "CHECKPOINT"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// Offsets of the frames of segment `id`, in order.
fn frames(bytes: &[u8], id: u32) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = HEADER;
    while let Ok(f) = frame::decode(&bytes[off..], id, bytes.len() as u32) {
        out.push((off, f.len as usize));
        off += f.len as usize;
    }
    out
}

/// Zeroes the last record of segment 1 (a page never written back).
fn zero_last_record_of_first(dir: &Path) {
    let path = segment(dir, 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let (off, len) = *frames(&bytes, 1).last().unwrap();
    bytes[off..off + len].fill(0);
    std::fs::write(&path, &bytes).unwrap();
}

/// Rewrites the sync lag of every frame of segment 2: `proves` makes each
/// claim everything before it durable (lag 0); otherwise none claims
/// anything (lag = its LSN).
fn set_lags_of_second(dir: &Path, proves: bool) {
    let path = segment(dir, 2);
    let mut bytes = std::fs::read(&path).unwrap();
    let found = frames(&bytes, 2);
    assert!(!found.is_empty(), "segment 2 holds records");
    for (off, len) in found {
        let f = &mut bytes[off..off + len];
        let lsn = u64::from_le_bytes(f[8..16].try_into().unwrap());
        let lag = if proves {
            0
        } else {
            u32::try_from(lsn).unwrap()
        };
        f[20..24].copy_from_slice(&lag.to_le_bytes());
        let crc = frame::checksum(2, &[&f[4..]]);
        f[0..4].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&path, &bytes).unwrap();
}

fn drain(q: &Queue) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        out.push(job.payload().to_vec());
        q.ack(job.receipt()).unwrap();
    }
    out
}

#[test]
fn a_tail_torn_across_a_rotation_is_cut_and_the_newest_segment_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let (in_first, _) = build(dir.path(), &clock, 5);
    as_after_a_crash(dir.path());
    zero_last_record_of_first(dir.path());
    set_lags_of_second(dir.path(), false);

    let q = Queue::open_with(dir.path(), opts(&clock)).unwrap();
    let report = q.recovery_report();
    assert!(report.torn_bytes > 0, "{report:?}");
    assert!(
        !segment(dir.path(), 2).exists(),
        "the newest segment is dropped"
    );
    let want: Vec<Vec<u8>> = (0..in_first - 1).map(payload).collect();
    assert_eq!(drain(&q), want);
    // The log goes on from the cut, across new rotations, and reopens.
    for i in 0..400 {
        q.enqueue(&payload(i)).unwrap();
    }
    assert!(q.stats().segments >= 2);
    drop(q);
    let q = Queue::open_with(dir.path(), opts(&clock)).unwrap();
    assert_eq!(drain(&q), (0..400).map(payload).collect::<Vec<_>>());
}

#[test]
fn damage_proven_durable_by_the_newest_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let (in_first, total) = build(dir.path(), &clock, 5);
    as_after_a_crash(dir.path());
    zero_last_record_of_first(dir.path());
    set_lags_of_second(dir.path(), true);

    let err = Queue::open_with(dir.path(), opts(&clock)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("0000000002.wal"), "{err}");
    assert!(segment(dir.path(), 2).exists(), "Strict deletes nothing");

    // Salvage keeps both sides of the lost record.
    let salvage = opts(&clock).recovery(RecoveryMode::Salvage);
    let q = Queue::open_with(dir.path(), salvage).unwrap();
    assert!(q.recovery_report().records_lost >= 1);
    let want: Vec<Vec<u8>> = (0..total)
        .filter(|&i| i != in_first - 1)
        .map(payload)
        .collect();
    assert_eq!(drain(&q), want);
}

#[test]
fn a_newest_segment_whose_header_never_reached_the_disk_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let (in_first, _) = build(dir.path(), &clock, 5);
    as_after_a_crash(dir.path());
    let path = segment(dir.path(), 2);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..HEADER].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    let q = Queue::open_with(dir.path(), opts(&clock)).unwrap();
    assert!(!path.exists());
    assert!(q.recovery_report().torn_bytes > 0);
    assert_eq!(drain(&q), (0..in_first).map(payload).collect::<Vec<_>>());
}

#[test]
fn a_zeroed_header_of_an_older_segment_is_still_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    build(dir.path(), &clock, 5);
    as_after_a_crash(dir.path());
    let path = segment(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..HEADER].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let err = Queue::open_with(dir.path(), opts(&clock)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(segment(dir.path(), 2).exists());
}

#[test]
fn a_rotation_syncs_nothing_under_the_queue_lock() {
    // Every sync fails from the moment the spares are ready: the enqueue
    // that rotates still succeeds (it used to fsync the sealed segment and
    // the new header itself). The sync it left to the committer fails
    // later, on the upkeep thread, and poisons the queue as any failed
    // sync does.
    let fs = SimFs::new();
    let clock = ManualClock::new(1_000_000);
    let dir = Path::new("/q");
    fs.create_dir_all(dir, 0o700).unwrap();
    let q = Queue::open_on(Arc::new(fs.clone()), dir, opts(&clock)).unwrap();
    q.wait_upkeep();
    fs.set_fault(Some(Fault {
        op: FaultOp::Sync,
        at: fs.op_count(FaultOp::Sync),
        forever: true,
        kind: std::io::ErrorKind::Other,
    }));
    let mut i = 0;
    while q.stats().segments < 2 {
        q.enqueue(&payload(i))
            .unwrap_or_else(|e| panic!("enqueue {i}, which rotated: {e}"));
        i += 1;
    }
    q.wait_upkeep();
    let err = q.enqueue(b"after the failed seal").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Poisoned, "{err}");
}

#[test]
fn a_spare_left_written_by_a_lost_rename_is_not_reused() {
    // A power cut undid the rename of segment 2 into place while its
    // header and records reached the disk: the file is back under its spare
    // name, full of records. Reused as a fresh spare, its stale records
    // would follow the new ones with the right segment id and consecutive
    // LSNs (the log after the cut numbers its records as before) and come
    // back as jobs; after a crash no spare is trusted.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let same_size = |tag: u8, i: usize| vec![tag.wrapping_add(i as u8) | 1; 300];
    let q = Queue::open_with(dir.path(), opts(&clock)).unwrap();
    let mut first = Vec::new();
    while q.stats().segments < 2 {
        first.push(same_size(b'a', first.len()));
        q.enqueue(first.last().unwrap()).unwrap();
    }
    first.pop(); // that one went to segment 2
    for i in 0..40 {
        q.enqueue(&same_size(b'a', 1000 + i)).unwrap();
    }
    q.close().unwrap();
    drop(q);
    as_after_a_crash(dir.path());
    for name in std::fs::read_dir(dir.path()).unwrap() {
        let name = name.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".spare") {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
    }
    let spare = dir.path().join("0000000002.wal.spare");
    std::fs::rename(segment(dir.path(), 2), &spare).unwrap();

    let q = Queue::open_with(dir.path(), opts(&clock)).unwrap();
    let new: Vec<Vec<u8>> = (0..5).map(|i| same_size(b'N', i)).collect();
    for p in &new {
        q.enqueue(p).unwrap();
    }
    assert_eq!(q.stats().segments, 2, "the new jobs rotated into segment 2");
    q.close().unwrap();
    drop(q);
    as_after_a_crash(dir.path());

    let q = Queue::open_with(dir.path(), opts(&clock)).unwrap();
    let mut want = first;
    want.extend(new);
    assert_eq!(drain(&q), want);
}

/// How many of `payload(0..)` fit in segment 1 of a `Sync` queue on `fs`.
fn jobs_in_first_segment(clock: &ManualClock) -> usize {
    let fs = SimFs::new();
    let opts = opts(clock).durability(Durability::Sync);
    let q = Queue::open_on(Arc::new(fs), Path::new("/q"), opts).unwrap();
    let mut i = 0;
    while q.stats().segments < 2 {
        q.enqueue(&payload(i)).unwrap();
        i += 1;
    }
    i - 1
}

#[test]
fn a_failed_writes_residue_is_synced_with_the_seal() {
    // Under `Durability::Sync` every record of a segment is durable when
    // it is sealed, so its seal needs no sync of its own, unless a failed
    // write left bytes after the last record since: they were zeroed, but
    // in the page cache only. A power cut that keeps the torn half and
    // drops the zeros would end the sealed segment in a damaged tail, and
    // recovery would drop the newest segment with its acknowledged job
    // (or call it corruption).
    let clock = ManualClock::new(1_000_000);
    let fit = jobs_in_first_segment(&clock);
    let fs = SimFs::new();
    let dir = Path::new("/q");
    let opts = opts(&clock).durability(Durability::Sync);
    let q = Queue::open_on(Arc::new(fs.clone()), dir, opts.clone()).unwrap();
    let mut acked: Vec<Vec<u8>> = (0..fit - 1).map(payload).collect();
    for p in &acked {
        q.enqueue(p).unwrap();
    }
    q.wait_upkeep();
    fs.faults_only_on(Some(&segment(dir, 1))).unwrap();
    fs.set_fault(Some(Fault {
        op: FaultOp::Write,
        at: fs.op_count(FaultOp::Write),
        forever: false,
        kind: std::io::ErrorKind::StorageFull,
    }));
    let err = q.enqueue(&[7; 200]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let big = vec![9; 4096];
    q.enqueue(&big).unwrap();
    assert_eq!(q.stats().segments, 2, "the big job rotated");
    acked.push(big);
    for seed in 0..64 {
        let crashed = fs.power_loss(seed);
        let q = Queue::open_on(Arc::new(crashed), dir, opts.clone())
            .unwrap_or_else(|e| panic!("power cut {seed}: {e}"));
        assert_eq!(drain(&q), acked, "power cut {seed}");
    }
}

/// Options of the kill-after-rotation tests below.
fn kill_opts(d: Durability) -> Options {
    Options::default()
        .segment_size(64 * 1024)
        .durability(d)
        .checkpoint_every(0)
}

fn has_segment_2(fs: &SimFs, dir: &Path) -> bool {
    fs.list(dir).unwrap().iter().any(|n| n == "0000000002.wal")
}

/// Enqueues of 1000 bytes until segment 2 appears: how many it took.
fn enqueues_to_rotate() -> usize {
    let dir = Path::new("/q");
    let fs = SimFs::new();
    let q = Queue::open_on(Arc::new(fs.clone()), dir, kill_opts(Durability::Os)).unwrap();
    let mut n = 0;
    while !has_segment_2(&fs, dir) {
        q.enqueue(&[7u8; 1000]).unwrap();
        n += 1;
    }
    n
}

/// Run 1: `k` jobs under `Os`, the last 5 and the rotation into segment 2
/// left volatile (the file system frozen, as a killed process's page
/// cache: the upkeep thread had not synced segment 1 yet). The freeze is
/// lifted after: the next run reads those bytes, and only its own syncs
/// make them durable.
fn killed_after_rotation(fs: &SimFs, dir: &Path, k: usize) {
    let q = Queue::open_on(Arc::new(fs.clone()), dir, kill_opts(Durability::Os)).unwrap();
    for _ in 0..k - 5 {
        q.enqueue(&[7u8; 1000]).unwrap();
    }
    q.sync().unwrap();
    fs.freeze_after_syncs(Some(0));
    for _ in 0..5 {
        q.enqueue(&[7u8; 1000]).unwrap();
    }
    assert!(has_segment_2(fs, dir));
    drop(q);
    fs.freeze_after_syncs(None);
}

/// For 16 power-loss seeds: run 1 killed just after a rotation, run 2
/// opened under `d` (it sees every job of run 1), then `then(seed, fs,
/// run 2, jobs of run 1)`, which returns what went wrong, if anything.
fn after_a_kill_just_after_a_rotation(
    d: Durability,
    then: impl Fn(u64, &SimFs, Queue, usize) -> Option<String>,
) {
    let k = enqueues_to_rotate();
    let dir = Path::new("/q");
    let mut failures = Vec::new();
    for seed in 0..16u64 {
        let fs = SimFs::new();
        killed_after_rotation(&fs, dir, k);
        let q = Queue::open_on(Arc::new(fs.clone()), dir, kill_opts(d)).unwrap();
        assert_eq!(q.stats().ready, k as u64, "run 2 sees every job of run 1");
        failures.extend(then(seed, &fs, q, k));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// After a kill -9 just after a rotation, a reopen and a clean close, a
/// power cut loses nothing: the open syncs the segment the rotation
/// sealed, not only the active one (before: 12 of 16 seeds lost the
/// sealed segment's tail, whose jobs the trusted clean checkpoint then
/// dead-lettered as damaged).
#[test]
fn a_clean_close_after_a_kill_just_after_a_rotation_is_durable() {
    after_a_kill_just_after_a_rotation(Durability::Os, |seed, fs, q, k| {
        q.close().unwrap();
        drop(q);
        let crashed = fs.power_loss(seed);
        let dir = Path::new("/q");
        let q = match Queue::open_on(Arc::new(crashed), dir, kill_opts(Durability::Os)) {
            Err(e) => return Some(format!("seed {seed}: open failed: {e}")),
            Ok(q) => q,
        };
        let mut intact = 0;
        while let Some(j) = q.dequeue().unwrap() {
            intact += usize::from(j.payload() == [7u8; 1000]);
            q.ack(j.receipt()).unwrap();
        }
        let dead = q.stats().dead;
        (intact != k).then(|| format!("seed {seed}: {intact} of {k} intact, {dead} dead"))
    });
}

/// After the same kill and a reopen, a `Sync` enqueue that returned `Ok`
/// survives a power cut and the default (Strict) open succeeds (before:
/// its sync lag vouched for the sealed segment's unsynced tail, and the
/// open refused the log as corrupt).
#[test]
fn a_sync_enqueue_after_a_kill_just_after_a_rotation_survives_a_power_cut() {
    after_a_kill_just_after_a_rotation(Durability::Sync, |seed, fs, q, _| {
        q.enqueue(b"acknowledged under Sync").unwrap();
        let crashed = fs.power_loss(seed);
        drop(q);
        let dir = Path::new("/q");
        let q = match Queue::open_on(Arc::new(crashed), dir, kill_opts(Durability::Sync)) {
            Err(e) => return Some(format!("seed {seed}: open failed: {e}")),
            Ok(q) => q,
        };
        let found = std::iter::from_fn(|| q.dequeue().unwrap())
            .any(|j| j.payload() == b"acknowledged under Sync");
        (!found).then(|| format!("seed {seed}: the Sync enqueue is lost"))
    });
}
