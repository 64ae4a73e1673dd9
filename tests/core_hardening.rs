//! Issue 8, queue core: an operation either happens or fails, never both;
//! multi-item operations are atomic; a damaged job does not wedge the
//! queue; under `Durability::Sync` only durable jobs are delivered; leases
//! follow a monotonic clock.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use walq::vfs::{Fault, FaultOp, SimFs};
use walq::{Clock, Durability, ErrorKind, ManualClock, Options, Queue};

fn sim_opts(clock: &ManualClock, durability: Durability) -> Options {
    Options::default()
        .segment_size(64 * 1024)
        .durability(durability)
        .visibility_timeout(Duration::from_secs(30))
        .clock(clock.clone())
        .jitter_seed(7)
}

fn flip_byte(path: &Path, off: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
    f.sync_all().unwrap();
}

/// Finding 1: a failure of reclaim (here: unlinking a finished segment)
/// must not fail the ack that triggered it, nor every later ack.
#[test]
fn a_failed_segment_deletion_does_not_fail_the_ack() {
    let fs = SimFs::new();
    let clock = ManualClock::new(1_000_000);
    let q = Queue::open_on(
        Arc::new(fs.clone()),
        Path::new("/q"),
        sim_opts(&clock, Durability::Os),
    )
    .unwrap();
    let payload = vec![7u8; 1000];
    for _ in 0..200 {
        q.enqueue(&payload).unwrap();
    }
    assert!(q.stats().segments >= 3);
    fs.set_fault(Some(Fault {
        op: FaultOp::Remove,
        at: fs.op_count(FaultOp::Remove),
        forever: false,
        kind: std::io::ErrorKind::PermissionDenied,
    }));
    let mut acked = 0;
    while let Some(job) = q.dequeue().unwrap() {
        q.ack(job.receipt())
            .unwrap_or_else(|e| panic!("ack {acked} failed after it happened: {e}"));
        acked += 1;
    }
    assert_eq!(acked, 200);
    q.check_invariants();
    // The deletion was retried later: a drained queue keeps one segment.
    q.enqueue(b"one more").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.ack(job.receipt()).unwrap();
    assert_eq!(q.stats().segments, 1, "the failed deletion was retried");
}

/// Finding 1: a job whose record fails its checksum after open is moved to
/// the dead letters with a reason; the queue keeps serving the rest.
#[test]
fn a_damaged_job_at_the_head_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let a = q.enqueue(b"first job payload").unwrap();
    let b = q.enqueue(b"second job payload").unwrap();
    // The first record starts right after the 64-byte header; flip a byte
    // of its payload through another handle (the map is shared).
    flip_byte(&dir.path().join("0000000001.wal"), 64 + 60);
    let job = q.dequeue().unwrap().expect("the second job is served");
    assert_eq!(job.id(), b);
    q.ack(job.receipt()).unwrap();
    assert!(q.dequeue().unwrap().is_none());
    let dead = q
        .dead_letter(a)
        .unwrap()
        .expect("damaged job dead-lettered");
    assert!(dead.error.contains("damaged"), "{}", dead.error);
    let stats = q.stats();
    assert_eq!(stats.dead, 1);
    assert_eq!(stats.damaged_total, 1);
    q.check_invariants();
}

/// Finding 2: a redrive that fails part-way changes nothing; a job is
/// never both live and dead, and never leased twice.
#[test]
fn a_partial_redrive_leaves_no_job_live_and_dead() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let x = q.enqueue(b"payload x").unwrap();
    let y = q.enqueue(b"payload y").unwrap();
    for _ in 0..2 {
        let job = q.dequeue().unwrap().unwrap();
        q.fail(job.receipt(), "bad").unwrap();
    }
    // Damage y's dead letter (the second record of dead.wal).
    let bytes = std::fs::read(dir.path().join("dead.wal")).unwrap();
    let first_len = u32::from_le_bytes(bytes[64 + 4..64 + 8].try_into().unwrap()) as u64;
    flip_byte(&dir.path().join("dead.wal"), 64 + first_len + 40);
    let err = q.redrive_all().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    q.check_invariants();
    assert_eq!(q.stats().ready, 0, "nothing was redriven");
    assert_eq!(q.dead_letter_ids(), vec![x, y]);
    // Redriving x alone works, once; a second redrive finds nothing.
    q.redrive(x).unwrap();
    assert_eq!(q.redrive(x).unwrap_err().kind(), ErrorKind::NotFound);
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), x);
    assert!(q.dequeue().unwrap().is_none(), "x leased twice");
    q.check_invariants();
}

/// Finding 5: under Sync, a job is not delivered before its enqueue record
/// is durable.
#[test]
fn sync_delivers_only_durable_jobs() {
    let fs = SimFs::new();
    let clock = ManualClock::new(1_000_000);
    let q = Queue::open_on(
        Arc::new(fs.clone()),
        Path::new("/q"),
        sim_opts(&clock, Durability::Sync),
    )
    .unwrap();
    fs.pause_syncs(true);
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || q.enqueue(b"not yet durable").unwrap())
    };
    fs.wait_paused_syncs(1);
    assert!(
        q.dequeue().unwrap().is_none(),
        "a job was delivered before its enqueue was durable"
    );
    assert!(q.dequeue_batch(4).unwrap().is_empty());
    // A blocking consumer wakes once the enqueue is durable.
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || q.dequeue_timeout(Duration::from_secs(60)).unwrap())
    };
    fs.pause_syncs(false);
    let id = producer.join().unwrap();
    let job = consumer.join().unwrap().expect("woken when durable");
    assert_eq!(job.id(), id);
    assert!(q.stats().durable_lsn >= 1);
}

/// A clock whose wall time and monotonic time can move apart.
#[derive(Clone)]
struct SteppingClock {
    wall: Arc<AtomicU64>,
    mono: Arc<AtomicU64>,
}

impl Clock for SteppingClock {
    fn now_ms(&self) -> u64 {
        self.wall.load(Ordering::SeqCst)
    }
    fn monotonic_ms(&self) -> u64 {
        self.mono.load(Ordering::SeqCst)
    }
}

/// Finding 6: leases follow a monotonic clock; a wall clock stepping
/// forward does not expire them.
#[test]
fn a_wall_clock_step_does_not_expire_leases() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SteppingClock {
        wall: Arc::new(AtomicU64::new(1_000_000)),
        mono: Arc::new(AtomicU64::new(5)),
    };
    let q = Queue::open_with(
        dir.path(),
        Options::default()
            .clock(clock.clone())
            .durability(Durability::Os)
            .visibility_timeout(Duration::from_secs(30)),
    )
    .unwrap();
    q.enqueue(b"a").unwrap();
    q.enqueue(b"b").unwrap();
    let a = q.dequeue().unwrap().unwrap();
    // NTP steps the wall clock an hour ahead; no time passed.
    clock.wall.fetch_add(3_600_000, Ordering::SeqCst);
    assert_eq!(q.dequeue().unwrap().unwrap().attempt(), 1);
    assert!(q.dequeue().unwrap().is_none(), "lease expired by a step");
    q.ack(a.receipt()).unwrap();
    // Monotonic time passing does expire them.
    clock.mono.fetch_add(31_000, Ordering::SeqCst);
    let again = q.dequeue().unwrap().expect("expired lease is ready again");
    assert_eq!(again.attempt(), 2);
}

/// Finding 3: dead letters are listed a page at a time.
#[test]
fn dead_letters_are_paginated() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let mut ids = Vec::new();
    for i in 0..25u32 {
        ids.push(q.enqueue(format!("job {i}").as_bytes()).unwrap());
    }
    while let Some(job) = q.dequeue().unwrap() {
        q.fail(job.receipt(), "no").unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = q.dead_letters_page(after, 10).unwrap();
        assert!(page.len() <= 10);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.iter().map(|d| d.id));
    }
    assert_eq!(seen, ids);
    assert_eq!(q.dead_letters().unwrap().len(), 25);
}

/// `SimFs` whose `open` (mapping a sealed segment again) fails with
/// EMFILE while `fail_open` is set: a transient I/O error, not damage.
#[derive(Debug)]
struct NoDescriptors {
    inner: SimFs,
    fail_open: Arc<std::sync::atomic::AtomicBool>,
}

impl walq::vfs::Vfs for NoDescriptors {
    fn create_dir_all(&self, dir: &Path, mode: u32) -> std::io::Result<()> {
        self.inner.create_dir_all(dir, mode)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create(&self, path: &Path, mode: u32) -> std::io::Result<Box<dyn walq::vfs::VfsFile>> {
        self.inner.create(path, mode)
    }
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn walq::vfs::VfsFile>> {
        if self.fail_open.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc_emfile()));
        }
        self.inner.open(path)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(
        &self,
        path: &Path,
        mode: u32,
    ) -> std::io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.inner.lock(path, mode)
    }
}

/// EMFILE on Linux.
fn libc_emfile() -> i32 {
    24
}

/// A job leased from a sealed segment that is no longer mapped (over
/// 300 segments were read after it), and the one attempt it was allowed
/// is over, by a nack, a `fail` or its lease running out. The job's record must
/// be read to dead-letter it; when mapping its segment again fails with
/// EMFILE, the call fails and the job keeps its payload: it is not a
/// "damaged" dead letter with the payload dropped (the bug this caught:
/// any failure to read the record counted as damage).
#[test]
fn a_segment_that_cannot_be_mapped_again_is_not_damage() {
    for how in ["nack", "lease expiry", "fail"] {
        let sim = SimFs::new();
        let fail_open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let vfs: Arc<dyn walq::vfs::Vfs> = Arc::new(NoDescriptors {
            inner: sim.clone(),
            fail_open: fail_open.clone(),
        });
        let clock = ManualClock::new(1_000_000);
        let opts = sim_opts(&clock, Durability::Os).max_attempts(1);
        let q = Queue::open_on(vfs, Path::new("/q"), opts.clone()).unwrap();
        let a = q.enqueue(b"precious payload").unwrap();
        let filler = vec![7u8; 20 * 1024];
        for _ in 0..1000 {
            q.enqueue(&filler).unwrap();
        }
        let job = q.dequeue().unwrap().unwrap();
        assert_eq!(job.id(), a);
        // Reading every filler maps its sealed segment: the maps kept are
        // bounded, so the job's segment is unmapped.
        assert_eq!(q.dequeue_batch(2000).unwrap().len(), 1000);
        fail_open.store(true, Ordering::SeqCst);
        let failed = match how {
            "nack" => q.nack(job.receipt(), walq::Retry::Backoff, "retry me"),
            "fail" => q.fail(job.receipt(), "gave up"),
            _ => {
                clock.advance(Duration::from_secs(31));
                q.dequeue().map(|_| ())
            }
        };
        fail_open.store(false, Ordering::SeqCst);
        let e = failed.expect_err(how);
        assert!(
            matches!(e.kind(), ErrorKind::Io | ErrorKind::Poisoned),
            "{how}: {e}"
        );
        assert_eq!(
            q.stats().damaged_total,
            0,
            "{how}: EMFILE counted as damage"
        );
        drop(q);
        let q = Queue::open_on(Arc::new(sim), Path::new("/q"), opts).unwrap();
        // Its one attempt is over, so the reopen dead-letters it (as any
        // job whose last lease a stopped process held), payload and all.
        let dead = q.dead_letter(a).unwrap().expect("a dead letter");
        assert_eq!(dead.payload, b"precious payload", "{how}: {}", dead.error);
        assert_eq!(q.stats().damaged_total, 0, "{how}");
    }
}
