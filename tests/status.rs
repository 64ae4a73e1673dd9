//! `Queue::status` and `Queue::ack_with_result`: every status a job can
//! read as, across restarts, the window that forgets results, the bounds on
//! memory and disk, and damage to the completion file (`done.rec`).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{open, opts};
use walq::format::frame;
use walq::format::header::SEGMENT_HEADER_LEN;
use walq::vfs::SimFs;
use walq::{
    Durability, EnqueueOptions, ErrorKind, JobStatus, ManualClock, Queue, RecoveryMode, Retry,
    MAX_RESULT_LEN,
};

const T0: u64 = 1_700_000_000_000;
const DONE_FILE: &str = "done.rec";

fn done_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(DONE_FILE)).unwrap().len()
}

fn done_with(result: &[u8], finished_ms: u64) -> JobStatus {
    JobStatus::Done {
        finished_ms: Some(finished_ms),
        result: Some(result.to_vec()),
    }
}

const PLAIN_DONE: JobStatus = JobStatus::Done {
    finished_ms: None,
    result: None,
};

/// Leaves a dead letter: a job with one attempt, failed.
fn dead_job(q: &Queue, payload: &[u8]) -> u64 {
    let id = q
        .enqueue_with(payload, EnqueueOptions::new().max_attempts(1))
        .unwrap()
        .id;
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), id);
    q.fail(job.receipt(), "card declined").unwrap();
    id
}

#[test]
fn every_transition_reads_as_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock);

    // Unknown: never issued (ids start at 1).
    assert_eq!(q.status(0).unwrap(), JobStatus::Unknown);
    assert_eq!(q.status(1).unwrap(), JobStatus::Unknown);

    let a = q.enqueue(b"a").unwrap();
    let b = q
        .enqueue_with(b"b", EnqueueOptions::new().delay(Duration::from_secs(60)))
        .unwrap()
        .id;
    assert_eq!(q.status(a).unwrap(), JobStatus::Queued { attempts: 0 });
    assert_eq!(
        q.status(b).unwrap(),
        JobStatus::Delayed {
            due_ms: T0 + 60_000,
            attempts: 0
        }
    );
    assert_eq!(q.status(b + 1).unwrap(), JobStatus::Unknown);

    // In flight, attempt 1; a retry makes it delayed, then queued, then in
    // flight with attempt 2.
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), a);
    assert_eq!(
        q.status(a).unwrap(),
        JobStatus::InFlight {
            attempt: 1,
            lease_expires_ms: T0 + 30_000
        }
    );
    q.nack(job.receipt(), Retry::After(Duration::from_secs(5)), "busy")
        .unwrap();
    assert_eq!(
        q.status(a).unwrap(),
        JobStatus::Delayed {
            due_ms: T0 + 5_000,
            attempts: 1
        }
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(q.status(a).unwrap(), JobStatus::Queued { attempts: 1 });
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(
        q.status(a).unwrap(),
        JobStatus::InFlight {
            attempt: 2,
            lease_expires_ms: T0 + 35_000
        }
    );

    // Done without a result: a plain ack writes nothing to done.rec.
    let before = done_len(dir.path());
    q.ack(job.receipt()).unwrap();
    assert_eq!(q.status(a).unwrap(), PLAIN_DONE);
    assert_eq!(done_len(dir.path()), before);

    // Done with a result.
    clock.advance(Duration::from_secs(60));
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), b);
    q.ack_with_result(job.receipt(), b"receipt #77").unwrap();
    assert_eq!(q.status(b).unwrap(), done_with(b"receipt #77", T0 + 65_000));
    assert!(done_len(dir.path()) > before);

    // Dead, then purged: a purged job never reads as done.
    let c = dead_job(&q, b"c");
    assert_eq!(
        q.status(c).unwrap(),
        JobStatus::Dead {
            attempts: 1,
            dead_ms: T0 + 65_000,
            error: "card declined".into()
        }
    );
    q.purge(c).unwrap();
    assert_eq!(
        q.status(c).unwrap(),
        JobStatus::Purged {
            purged_ms: T0 + 65_000
        }
    );

    // Redriven jobs read live again; purge_all marks every one it purges.
    let d = dead_job(&q, b"d");
    let e = dead_job(&q, b"e");
    q.redrive(d).unwrap();
    assert_eq!(q.status(d).unwrap(), JobStatus::Queued { attempts: 0 });
    assert_eq!(q.purge_all().unwrap(), 1);
    assert!(matches!(q.status(e).unwrap(), JobStatus::Purged { .. }));
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), d);
    q.ack(job.receipt()).unwrap();
    assert_eq!(q.status(d).unwrap(), PLAIN_DONE);
    q.check_invariants();
}

#[test]
fn an_expired_lease_reads_as_queued_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock);
    let id = q.enqueue(b"x").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    clock.advance(Duration::from_secs(31));
    assert_eq!(q.status(id).unwrap(), JobStatus::Queued { attempts: 1 });
    // The stale receipt writes no result.
    let before = done_len(dir.path());
    let err = q.ack_with_result(job.receipt(), b"late").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    assert_eq!(done_len(dir.path()), before);
}

#[test]
fn status_and_results_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock);
    let with = q.enqueue(b"with").unwrap();
    let plain = q.enqueue(b"plain").unwrap();
    let flying = q.enqueue(b"flying").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.ack_with_result(job.receipt(), b"{\"ok\":true}").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.ack(job.receipt()).unwrap();
    let _leased = q.dequeue().unwrap().unwrap();
    let dead = dead_job(&q, b"dead");
    let purged = dead_job(&q, b"purged");
    q.purge(purged).unwrap();
    q.close().unwrap();
    drop(q);

    clock.advance(Duration::from_secs(1));
    let q = open(dir.path(), &clock);
    assert_eq!(q.status(with).unwrap(), done_with(b"{\"ok\":true}", T0));
    assert_eq!(q.status(plain).unwrap(), PLAIN_DONE);
    // A lease of the stopped process is released on open.
    assert_eq!(q.status(flying).unwrap(), JobStatus::Queued { attempts: 1 });
    assert!(matches!(q.status(dead).unwrap(), JobStatus::Dead { .. }));
    assert_eq!(
        q.status(purged).unwrap(),
        JobStatus::Purged { purged_ms: T0 }
    );
    assert_eq!(q.status(purged + 1).unwrap(), JobStatus::Unknown);
}

#[test]
fn a_result_is_forgotten_when_its_window_ends() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = || opts(&clock).dedup_window(Duration::from_secs(60));
    let q = Queue::open_with(dir.path(), o()).unwrap();
    let id = q.enqueue(b"x").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.ack_with_result(job.receipt(), b"42").unwrap();
    clock.advance(Duration::from_secs(59));
    assert_eq!(q.status(id).unwrap(), done_with(b"42", T0));
    drop(q);
    let q = Queue::open_with(dir.path(), o()).unwrap();
    assert_eq!(q.status(id).unwrap(), done_with(b"42", T0));
    clock.advance(Duration::from_secs(1));
    // Still done, without the result; also after a restart.
    assert_eq!(q.status(id).unwrap(), PLAIN_DONE);
    drop(q);
    let q = Queue::open_with(dir.path(), o()).unwrap();
    assert_eq!(q.status(id).unwrap(), PLAIN_DONE);
    assert_eq!(q.completion_footprint().0, 0);
}

#[test]
fn memory_and_disk_stay_bounded_over_many_windows() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let window = Duration::from_secs(10);
    let q = Queue::open_with(dir.path(), opts(&clock).dedup_window(window)).unwrap();
    let per_window = 400u64;
    let result = [5u8; 2048];
    let mut written = 0u64;
    let mut last = 0;
    for _ in 0..8 {
        for _ in 0..per_window {
            q.enqueue(b"job").unwrap();
            let job = q.dequeue().unwrap().unwrap();
            q.ack_with_result(job.receipt(), &result).unwrap();
            written += result.len() as u64;
            last = job.id();
            clock.advance(window / per_window as u32);
        }
        let (index, disk) = q.completion_footprint();
        assert!(index as u64 <= per_window + 1, "index holds {index}");
        assert!(disk < 3 << 20, "done.rec is {disk} bytes");
        assert_eq!(disk, done_len(dir.path()));
    }
    assert!(written > 6 << 20);
    // The newest result is still there.
    assert!(matches!(
        q.status(last).unwrap(),
        JobStatus::Done { result: Some(r), .. } if r == result
    ));
    drop(q);
    let q = Queue::open_with(dir.path(), opts(&clock).dedup_window(window)).unwrap();
    assert!(q.completion_footprint().0 as u64 <= per_window + 1);
}

#[test]
fn an_oversize_result_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock);
    let id = q.enqueue(b"x").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    let before = done_len(dir.path());
    let err = q
        .ack_with_result(job.receipt(), &vec![0u8; MAX_RESULT_LEN + 1])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    assert!(err.to_string().contains("4096"), "{err}");
    assert_eq!(done_len(dir.path()), before);
    // The job is untouched: still in flight, and the limit itself is fine.
    assert!(matches!(
        q.status(id).unwrap(),
        JobStatus::InFlight { attempt: 1, .. }
    ));
    q.ack_with_result(job.receipt(), &vec![1u8; MAX_RESULT_LEN])
        .unwrap();
    assert!(matches!(
        q.status(id).unwrap(),
        JobStatus::Done { result: Some(r), .. } if r.len() == MAX_RESULT_LEN
    ));
}

/// Writes two results (the first synced before the second), returns the
/// job ids and the file's bytes.
fn two_results(dir: &Path, clock: &ManualClock) -> (u64, u64, Vec<u8>) {
    let q = Queue::open_with(dir, opts(clock).durability(Durability::Sync)).unwrap();
    let mut ids = Vec::new();
    for r in [&b"first"[..], b"second"] {
        ids.push(q.enqueue(r).unwrap());
        let job = q.dequeue().unwrap().unwrap();
        q.ack_with_result(job.receipt(), r).unwrap();
    }
    drop(q);
    (ids[0], ids[1], std::fs::read(dir.join(DONE_FILE)).unwrap())
}

/// `(offset, length)` of each record of a `done.rec`, up to the zeros
/// written ahead of them.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let seed = u32::from_le_bytes(*b"DONE");
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    while let Ok(f) = frame::decode(&bytes[off..], seed, 1 << 20) {
        out.push((off, f.len as usize));
        off += f.len as usize;
    }
    out
}

#[test]
fn a_torn_tail_of_done_rec_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (first, second, mut bytes) = two_results(dir.path(), &clock);
    let recs = records(&bytes);
    assert_eq!(recs.len(), 2);
    // The last sector of the second record never landed.
    let (off, len) = recs[1];
    bytes[off + len - 4..off + len].fill(0);
    std::fs::write(dir.path().join(DONE_FILE), &bytes).unwrap();
    let q = open(dir.path(), &clock);
    assert!(q.recovery_report().torn_bytes > 0);
    assert_eq!(q.status(first).unwrap(), done_with(b"first", T0));
    // The torn record is lost; its job still reads as done.
    assert_eq!(q.status(second).unwrap(), PLAIN_DONE);
    assert_eq!(
        done_len(dir.path()),
        off as u64,
        "cut where the torn record began"
    );
    // A clean reopen reports nothing torn.
    drop(q);
    let q = open(dir.path(), &clock);
    assert_eq!(q.recovery_report().torn_bytes, 0);
}

#[test]
fn damage_in_the_middle_of_done_rec_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (first, second, mut bytes) = two_results(dir.path(), &clock);
    let path = dir.path().join(DONE_FILE);
    bytes[SEGMENT_HEADER_LEN + 30] ^= 0x01; // inside the first record
    std::fs::write(&path, &bytes).unwrap();
    let err = Queue::open_with(dir.path(), opts(&clock)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(err.path(), Some(path.as_path()));
    assert_eq!(err.offset(), Some(SEGMENT_HEADER_LEN as u64));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "strict open changed it"
    );
    let q = Queue::open_with(dir.path(), opts(&clock).recovery(RecoveryMode::Salvage)).unwrap();
    assert!(q.recovery_report().bytes_skipped > 0);
    assert_eq!(q.status(first).unwrap(), PLAIN_DONE);
    assert_eq!(q.status(second).unwrap(), done_with(b"second", T0));
}

#[test]
fn an_old_directory_gains_done_rec_with_private_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock);
    let id = q.enqueue(b"x").unwrap();
    drop(q);
    // A directory written before completion records existed.
    std::fs::remove_file(dir.path().join(DONE_FILE)).unwrap();
    let q = open(dir.path(), &clock);
    assert_eq!(q.status(id).unwrap(), JobStatus::Queued { attempts: 0 });
    let mode = std::fs::metadata(dir.path().join(DONE_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn status_serializes_tagged() {
    let s = serde_json::to_string(&JobStatus::InFlight {
        attempt: 2,
        lease_expires_ms: 9,
    })
    .unwrap();
    assert_eq!(
        s,
        r#"{"status":"in_flight","attempt":2,"lease_expires_ms":9}"#
    );
    let back: JobStatus = serde_json::from_str(&s).unwrap();
    assert_eq!(
        back,
        JobStatus::InFlight {
            attempt: 2,
            lease_expires_ms: 9
        }
    );
    let unknown = serde_json::to_string(&JobStatus::Unknown).unwrap();
    assert_eq!(unknown, r#"{"status":"unknown"}"#);
}

/// A queue on a simulated file system whose syncs stop making anything
/// durable after `syncs` more of them (a power loss at that point).
fn sim_queue(fs: &SimFs, clock: &ManualClock) -> Queue {
    let o = opts(clock).durability(Durability::Sync);
    Queue::open_on(Arc::new(fs.clone()), Path::new("/q"), o).unwrap()
}

#[test]
fn a_crash_between_the_result_and_the_ack_leaves_the_job_live() {
    // Power is lost right after done.rec's fsync, before the ack's log
    // record is durable; each seed keeps or drops the unsynced ack.
    let mut live_after_crash = 0;
    for seed in 0..16 {
        let fs = SimFs::new();
        let clock = ManualClock::new(T0);
        let q = sim_queue(&fs, &clock);
        let id = q.enqueue(b"x").unwrap();
        let job = q.dequeue().unwrap().unwrap();
        fs.freeze_after_syncs(Some(1));
        q.ack_with_result(job.receipt(), b"first").unwrap();
        drop(q);
        let fs = fs.power_loss(seed);
        let q = sim_queue(&fs, &clock);
        match q.status(id).unwrap() {
            // The ack survived: done with the result.
            JobStatus::Done { result, .. } => assert_eq!(result.as_deref(), Some(&b"first"[..])),
            // The ack was lost: the live state wins over the result, the
            // job is delivered again and a later completion supersedes.
            JobStatus::Queued { .. } => {
                live_after_crash += 1;
                let job = q.dequeue().unwrap().unwrap();
                assert_eq!(job.id(), id);
                q.ack_with_result(job.receipt(), b"second").unwrap();
                assert_eq!(q.status(id).unwrap(), done_with(b"second", T0));
                drop(q);
                let q = sim_queue(&fs, &clock);
                assert_eq!(q.status(id).unwrap(), done_with(b"second", T0));
            }
            other => panic!("seed {seed}: {other:?}"),
        }
    }
    assert!(live_after_crash > 0, "no seed dropped the ack");
}

#[test]
fn a_purge_marker_whose_purge_was_lost_is_dropped_on_open() {
    let fs = SimFs::new();
    let clock = ManualClock::new(T0);
    let q = sim_queue(&fs, &clock);
    let id = dead_job(&q, b"x");
    // Power is lost right after the marker's fsync: the purge never lands.
    fs.freeze_after_syncs(Some(1));
    q.purge(id).unwrap();
    drop(q);
    let fs = fs.power_loss(2);
    let q = sim_queue(&fs, &clock);
    assert!(matches!(q.status(id).unwrap(), JobStatus::Dead { .. }));
    // Redriven and acked, it reads as done, not purged.
    q.redrive(id).unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.ack(job.receipt()).unwrap();
    assert_eq!(q.status(id).unwrap(), PLAIN_DONE);
    drop(q);
    let q = sim_queue(&fs, &clock);
    assert_eq!(q.status(id).unwrap(), PLAIN_DONE);
}

#[test]
fn concurrent_results_share_fsyncs_and_all_survive() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = || opts(&clock).durability(Durability::Sync);
    let q = Queue::open_with(dir.path(), o()).unwrap();
    let ids: Vec<u64> = (0..200u32)
        .map(|i| q.enqueue(&i.to_le_bytes()).unwrap())
        .collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let q = &q;
            s.spawn(move || {
                while let Some(job) = q.dequeue().unwrap() {
                    let result = format!("result of {}", job.id());
                    q.ack_with_result(job.receipt(), result.as_bytes()).unwrap();
                }
            });
        }
    });
    drop(q);
    let q = Queue::open_with(dir.path(), o()).unwrap();
    for id in ids {
        let want = format!("result of {id}");
        assert_eq!(q.status(id).unwrap(), done_with(want.as_bytes(), T0));
    }
}

/// A job of a message group enqueued with a delay, behind the group's
/// head, reads as `Delayed` with its due time, as `stats` counts it (a
/// review found it read as `Queued`: its due time is kept with the group
/// while it is blocked, not in the delivery order).
#[test]
fn a_delayed_job_blocked_behind_its_group_reads_as_delayed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock);
    let g = || EnqueueOptions::new().group("customer-42");
    let a = q.enqueue_with(b"charge", g()).unwrap().id;
    let b = q
        .enqueue_with(b"refund in an hour", g().delay(Duration::from_secs(3600)))
        .unwrap()
        .id;
    let due_ms = T0 + 3_600_000;
    assert_eq!(q.stats().delayed, 1);
    assert_eq!(q.status(a).unwrap(), JobStatus::Queued { attempts: 0 });
    let expect = JobStatus::Delayed {
        due_ms,
        attempts: 0,
    };
    assert_eq!(q.status(b).unwrap(), expect, "blocked behind a");
    let head = q.dequeue().unwrap().expect("a");
    assert_eq!(q.status(b).unwrap(), expect, "behind a leased");
    q.ack(head.receipt()).unwrap();
    assert_eq!(q.status(b).unwrap(), expect, "the head now");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(q.status(b).unwrap(), JobStatus::Queued { attempts: 0 });
}

/// A job of a message group that is due but behind its group's head reads
/// as `Blocked`, not `Queued` ("the next dequeue may deliver it", which
/// none does): a review found it `Queued` while `stats` counted it
/// delayed and the CLI showed it waiting for its group. It reads `Queued`
/// once the head finishes.
#[test]
fn a_due_job_blocked_behind_its_group_reads_as_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = open(dir.path(), &clock);
    let g = || EnqueueOptions::new().group("customer-7");
    let a = q.enqueue_with(b"first", g()).unwrap().id;
    let b = q.enqueue_with(b"second", g()).unwrap().id;
    let blocked = JobStatus::Blocked { attempts: 0 };
    assert_eq!(q.status(a).unwrap(), JobStatus::Queued { attempts: 0 });
    assert_eq!(q.status(b).unwrap(), blocked, "behind a, which waits");
    let head = q.dequeue().unwrap().expect("a");
    assert_eq!(q.status(b).unwrap(), blocked, "behind a leased");
    q.nack(
        head.receipt(),
        Retry::After(Duration::from_secs(60)),
        "busy",
    )
    .unwrap();
    assert!(q.dequeue().unwrap().is_none(), "b waits for a's retry");
    assert_eq!(q.status(b).unwrap(), blocked, "behind a's backoff");
    assert_eq!(q.stats().delayed, 2, "a's backoff and b");
    clock.advance(Duration::from_secs(60));
    let head = q.dequeue().unwrap().expect("a again");
    q.ack(head.receipt()).unwrap();
    assert_eq!(q.status(b).unwrap(), JobStatus::Queued { attempts: 0 });
}

/// An ack whose lease is lost while its result is being made durable is
/// refused (`LeaseLost`), and its result must go with it: the run that
/// does settle the job decides the result, none for a plain ack (a review
/// found the refused run's result shown for a job another run finished).
/// Syncs held on the simulated file system, manual clock: no timing
/// decides the outcome.
#[test]
fn a_result_whose_ack_was_refused_is_taken_back() {
    let fs = SimFs::new();
    let clock = ManualClock::new(T0);
    let q = sim_queue(&fs, &clock);
    let id = q.enqueue(b"x").unwrap();
    let first = q.dequeue().unwrap().unwrap();
    let written = || {
        let bytes = fs.read_file(Path::new("/q").join(DONE_FILE).as_path());
        bytes.is_some_and(|b| b.windows(7).any(|w| w == b"refused"))
    };
    fs.pause_syncs(true);
    let refused = std::thread::scope(|s| {
        let acking = s.spawn(|| q.ack_with_result(first.receipt(), b"refused"));
        // The result is written (after the lease was checked) and its
        // sync is held; meanwhile the 30 s lease runs out.
        while !written() {
            std::thread::yield_now();
        }
        clock.advance(Duration::from_secs(31));
        fs.pause_syncs(false);
        acking.join().unwrap()
    });
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::LeaseLost);
    let second = q.dequeue().unwrap().unwrap();
    assert_eq!((second.id(), second.attempt()), (id, 2));
    q.ack(second.receipt()).unwrap();
    assert_eq!(q.status(id).unwrap(), PLAIN_DONE);
    drop(q);
    let q = sim_queue(&fs, &clock);
    assert_eq!(q.status(id).unwrap(), PLAIN_DONE, "after a restart");
}

/// A pool's handler that returns `Outcome::done_with` leaves its result
/// where `status` finds it (through the settler's `complete_batch`).
#[test]
fn a_pool_handlers_result_is_read_back_by_status() {
    use walq::worker::{JobContext, Outcome, WorkerPool};
    let dir = tempfile::tempdir().unwrap();
    let q = Arc::new(Queue::open(dir.path()).unwrap());
    let ids: Vec<u64> = (0..3)
        .map(|i| q.enqueue(format!("invoice {i}").as_bytes()).unwrap())
        .collect();
    let pool = WorkerPool::builder(q.clone())
        .workers(2)
        .start(|_: &JobContext, payload: &[u8]| {
            let mut pdf = payload.to_vec();
            pdf.extend_from_slice(b".pdf");
            Outcome::done_with(pdf)
        })
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pool.stats().done < 3 {
        assert!(std::time::Instant::now() < deadline, "jobs not done");
        std::thread::sleep(Duration::from_millis(2));
    }
    let report = pool.shutdown(Duration::from_secs(10));
    assert_eq!(report.stats.done, 3);
    for (i, id) in ids.into_iter().enumerate() {
        match q.status(id).unwrap() {
            JobStatus::Done { result, .. } => {
                assert_eq!(result, Some(format!("invoice {i}.pdf").into_bytes()));
            }
            other => panic!("job {id}: {other:?}"),
        }
    }
}

/// A queue on a simulated disk under `Os`, for the power-cut tests below.
fn os_queue(fs: &SimFs, clock: &ManualClock) -> Queue {
    let o = opts(clock).durability(Durability::Os);
    Queue::open_on(Arc::new(fs.clone()), Path::new("/q"), o).unwrap()
}

/// A power cut that keeps `done.rec` (synced on every write) and loses the
/// log pages of the job its entry names, in a store without an id floor
/// (one an older build wrote, or whose `ID_FLOOR` is gone): the id is then
/// issued again. `leave` writes the entry (a cancel's marker, a result);
/// the new job with the same id, plain-acked, must read `Done` without a
/// result. Found by review: it read the lost job's `Purged`, or its result.
fn reissued_id_after_a_power_cut(leave: impl Fn(&Queue, u64)) {
    use walq::vfs::Vfs;
    let mut reissued = 0;
    for seed in 0..32 {
        let fs = SimFs::new();
        let clock = ManualClock::new(T0);
        let q = os_queue(&fs, &clock);
        let id = q.enqueue(b"lost job").unwrap();
        leave(&q, id);
        drop(q);
        let fs = fs.power_loss(seed);
        fs.remove(Path::new("/q/ID_FLOOR")).unwrap();
        fs.sync_dir(Path::new("/q")).unwrap();
        let q = os_queue(&fs, &clock);
        let new = q.enqueue(b"new job").unwrap();
        if new != id {
            continue;
        }
        reissued += 1;
        let job = q.dequeue().unwrap().unwrap();
        assert_eq!(job.payload(), b"new job");
        q.ack(job.receipt()).unwrap();
        let st = q.status(new).unwrap();
        assert_eq!(
            st,
            JobStatus::Done {
                finished_ms: None,
                result: None
            },
            "seed {seed}: the new job {new} reads what the lost one left"
        );
    }
    assert!(reissued > 0, "no seed lost the job and issued its id again");
}

/// A power cut under `Os` that loses the log records of a job that was
/// handed out, and even ran: its id (and so its provider key) is never
/// issued again, since the id floor was synced before the id was issued.
/// Without the floor a reopen took the lost job's id for the next job.
#[test]
fn ids_lost_to_a_power_cut_are_not_issued_again() {
    let mut lost = 0;
    for seed in 0..32 {
        let fs = SimFs::new();
        let clock = ManualClock::new(T0);
        let q = os_queue(&fs, &clock);
        let first = q.enqueue(b"kept job").unwrap();
        q.sync().unwrap();
        let id = q.enqueue(b"lost job").unwrap();
        let job = q.dequeue().unwrap().unwrap();
        assert_eq!(job.id(), first);
        drop(q);
        let q = os_queue(&fs.power_loss(seed), &clock);
        let s = q.stats();
        if s.ready + s.delayed + s.in_flight < 2 {
            lost += 1;
        }
        let new = q.enqueue(b"new job").unwrap();
        assert!(
            new > id,
            "seed {seed}: id {new} issued again (last was {id})"
        );
    }
    assert!(lost > 0, "no seed lost the second job");
}

/// A clean close lowers the floor: a reopen issues the next id, with no gap.
#[test]
fn a_clean_close_leaves_no_gap_in_ids() {
    let fs = SimFs::new();
    let clock = ManualClock::new(T0);
    let q = os_queue(&fs, &clock);
    let ids: Vec<u64> = (0..3).map(|_| q.enqueue(b"x").unwrap()).collect();
    q.close().unwrap();
    drop(q);
    let q = os_queue(&fs, &clock);
    assert_eq!(q.enqueue(b"y").unwrap(), ids[2] + 1);
}

#[test]
fn a_reissued_id_does_not_inherit_a_lost_cancel() {
    reissued_id_after_a_power_cut(|q, id| q.cancel(id).unwrap());
}

#[test]
fn a_reissued_id_does_not_inherit_a_lost_result() {
    reissued_id_after_a_power_cut(|q, id| {
        let job = q.dequeue().unwrap().unwrap();
        assert_eq!(job.id(), id);
        q.ack_with_result(job.receipt(), b"lost job's result")
            .unwrap();
    });
}

/// Found by review: a result recorded while the wall clock was far ahead
/// (a VM booted with a wrong clock that NTP then fixed) pinned the time of
/// every later result to it, across reopens, and kept results past their
/// window. A recorded time past the open's counts as the open's.
#[test]
fn a_clock_that_was_ahead_does_not_pin_later_results() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 10 * 365 * 24 * 3600 * 1000);
    let o = || opts(&clock).dedup_window(Duration::from_secs(60));
    {
        let q = Queue::open_with(dir.path(), o()).unwrap();
        q.enqueue(b"x").unwrap();
        let job = q.dequeue().unwrap().unwrap();
        q.ack_with_result(job.receipt(), b"while ahead").unwrap();
        q.close().unwrap();
    }
    clock.set(T0);
    let q = Queue::open_with(dir.path(), o()).unwrap();
    let id = q.enqueue(b"y").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.ack_with_result(job.receipt(), b"normal").unwrap();
    assert_eq!(
        q.status(id).unwrap(),
        JobStatus::Done {
            finished_ms: Some(T0),
            result: Some(b"normal".to_vec())
        }
    );
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        q.status(id).unwrap(),
        JobStatus::Done {
            finished_ms: None,
            result: None
        },
        "the result left its 60 s window"
    );
}

/// A directory on a tmpfs where there is one (each dead letter is synced).
fn shm() -> tempfile::TempDir {
    tempfile::Builder::new()
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

/// Enqueues `n` jobs and settles each with `settle`, 500 at a time.
fn settle_all(q: &Queue, n: usize, settle: impl Fn(&Queue, walq::Job)) {
    let mut left = n;
    while left > 0 {
        q.enqueue_batch((0..left.min(500)).map(|_| b"x")).unwrap();
        for job in q.dequeue_batch(left.min(500)).unwrap() {
            settle(q, job);
            left -= 1;
        }
    }
}

/// Leaves `n` dead letters (the queue allows one attempt).
fn fail_all(q: &Queue, n: usize) {
    settle_all(q, n, |q, job| q.fail(job.receipt(), "bad").unwrap());
}

/// Purge markers were kept for good: a queue that purged or cancelled
/// many jobs grew `done.rec` and its in-memory index by one entry each,
/// without bound. Past `MAX_PURGE_MARKERS` the oldest are dropped; their
/// jobs read `Expired` (never `Done`: they did not complete), before and
/// after a reopen, and a job acked since still reads done.
#[test]
fn purge_markers_past_the_cap_are_dropped_and_their_jobs_read_expired() {
    let dir = shm();
    let clock = ManualClock::new(T0);
    let o = || opts(&clock).max_attempts(1).durability(Durability::Os);
    let q = Queue::open_with(dir.path(), o()).unwrap();
    let n = walq::MAX_PURGE_MARKERS + 2;
    fail_all(&q, n);
    assert_eq!(q.purge_all().unwrap(), n);
    let acked = q.enqueue(b"acked later").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.ack(job.receipt()).unwrap();
    let check = |q: &Queue| {
        assert_eq!(q.status(1).unwrap(), JobStatus::Expired);
        assert_eq!(q.status(2).unwrap(), JobStatus::Expired);
        assert_eq!(q.status(3).unwrap(), JobStatus::Purged { purged_ms: T0 });
        assert_eq!(
            q.status(n as u64).unwrap(),
            JobStatus::Purged { purged_ms: T0 }
        );
        assert_eq!(q.status(acked).unwrap(), PLAIN_DONE);
        assert!(q.completion_footprint().0 <= walq::MAX_PURGE_MARKERS);
    };
    check(&q);
    q.close().unwrap();
    drop(q);
    check(&Queue::open_with(dir.path(), o()).unwrap());
}

/// Acks the next ten jobs; returns their ids.
fn ten_acked(q: &Queue) -> Vec<u64> {
    let ids: Vec<u64> = (0..10).map(|_| q.enqueue(b"new").unwrap()).collect();
    for _ in 0..10 {
        let job = q.dequeue().unwrap().unwrap();
        q.ack(job.receipt()).unwrap();
    }
    ids
}

/// Ten jobs acked from id `first` on read plain done, now and after a
/// reopen.
fn read_done_across_a_reopen(q: Queue, first: u64, dir: &Path, o: impl Fn() -> walq::Options) {
    let ids = ten_acked(&q);
    assert_eq!(ids[0], first, "the ids are issued again");
    for &id in &ids {
        assert_eq!(q.status(id).unwrap(), PLAIN_DONE, "job {id} in session");
    }
    q.close().unwrap();
    drop(q);
    let q = Queue::open_with(dir, o()).unwrap();
    for &id in &ids {
        assert_eq!(
            q.status(id).unwrap(),
            PLAIN_DONE,
            "job {id} after the reopen"
        );
    }
}

/// Found by review: a power cut under `Os` that loses the log keeps
/// `done.rec` (synced at every purge), and the ids are issued again. The
/// markers the cap had dropped were still in the file and, never cleared,
/// came back at the next open: a reissued job, plainly acked, read
/// `Purged`. The power cut is a copy of `done.rec` into a store whose log
/// never issued those ids.
#[test]
fn dropped_markers_of_ids_a_power_cut_lost_do_not_come_back() {
    let (a, b) = (shm(), shm());
    let clock = ManualClock::new(T0);
    let o = || opts(&clock).max_attempts(1).durability(Durability::Os);
    let q = Queue::open_with(a.path(), o()).unwrap();
    let n = walq::MAX_PURGE_MARKERS + 50_000;
    fail_all(&q, n);
    assert_eq!(q.purge_all().unwrap(), n);
    assert_eq!(q.status(1).unwrap(), JobStatus::Expired);
    q.close().unwrap();
    drop(q);
    std::fs::copy(a.path().join(DONE_FILE), b.path().join(DONE_FILE)).unwrap();
    let q = Queue::open_with(b.path(), o()).unwrap();
    read_done_across_a_reopen(q, 1, b.path(), o);
}

/// Found by review: the same with part of the log kept (ids up to
/// 110,000), the markers dropped being those of the lost ids: the
/// horizon, lowered at the first open, rose again over the reissued ids
/// at the next, which then read `Expired`.
#[test]
fn a_lowered_horizon_does_not_rise_again_over_reissued_ids() {
    let (a, b) = (shm(), shm());
    let clock = ManualClock::new(T0);
    let o = || opts(&clock).max_attempts(1).durability(Durability::Os);
    let q = Queue::open_with(a.path(), o()).unwrap();
    let n = walq::MAX_PURGE_MARKERS as u64 + 20_000;
    fail_all(&q, n as usize);
    for id in (1..=n).rev() {
        q.purge(id).unwrap();
    }
    assert_eq!(q.status(n).unwrap(), JobStatus::Expired);
    q.close().unwrap();
    drop(q);
    let q = Queue::open_with(b.path(), o()).unwrap();
    settle_all(&q, 110_000, |q, job| q.ack(job.receipt()).unwrap());
    q.close().unwrap();
    drop(q);
    std::fs::copy(a.path().join(DONE_FILE), b.path().join(DONE_FILE)).unwrap();
    let q = Queue::open_with(b.path(), o()).unwrap();
    read_done_across_a_reopen(q, 110_001, b.path(), o);
}
