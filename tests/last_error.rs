//! A job's last error (`Queue::last_error`): kept from a nack with an
//! error until the job finishes, durably: the same after a clean close
//! (the checkpoint), after a crash (a full scan of the log), and after
//! reclaim deleted the segment that held the nack's record.

mod common;

use std::path::Path;
use std::time::Duration;

use walq::{JobStatus, ManualClock, Options, Queue, Retry, MAX_ERROR_LEN};

const LATER: Retry = Retry::After(Duration::from_secs(3600));

fn opts(clock: &ManualClock) -> Options {
    common::opts(clock).max_attempts(5)
}

fn open(dir: &Path, clock: &ManualClock) -> Queue {
    Queue::open_with(dir, opts(clock)).expect("open")
}

/// Leases the ready job `id` (failing if another one comes first).
fn lease(q: &Queue, id: u64) -> walq::Receipt {
    let job = q.dequeue().expect("dequeue").expect("a ready job");
    assert_eq!(job.id(), id);
    job.receipt()
}

#[test]
fn the_last_error_reads_until_the_job_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let q = open(dir.path(), &clock);
    let id = q.enqueue(b"charge").unwrap();
    assert_eq!(q.last_error(id).unwrap(), None);
    q.nack(
        lease(&q, id),
        Retry::After(Duration::ZERO),
        "gateway timeout",
    )
    .unwrap();
    assert_eq!(
        q.last_error(id).unwrap().as_deref(),
        Some("gateway timeout")
    );
    assert_eq!(q.status(id).unwrap(), JobStatus::Queued { attempts: 1 });
    // Leased again, it keeps it; a nack without an error leaves it.
    let r = lease(&q, id);
    assert_eq!(
        q.last_error(id).unwrap().as_deref(),
        Some("gateway timeout")
    );
    q.nack(r, Retry::After(Duration::ZERO), "").unwrap();
    assert_eq!(
        q.last_error(id).unwrap().as_deref(),
        Some("gateway timeout")
    );
    // Acked: forgotten. Never-issued and unknown ids read none.
    q.ack(lease(&q, id)).unwrap();
    assert_eq!(q.last_error(id).unwrap(), None);
    assert_eq!(q.last_error(999).unwrap(), None);

    // Dead-lettered: the dead letter has it, the live map no longer.
    let dead = q
        .enqueue_with(b"dies", walq::EnqueueOptions::new().max_attempts(3))
        .unwrap()
        .id;
    for error in ["first", "second"] {
        q.nack(lease(&q, dead), Retry::After(Duration::ZERO), error)
            .unwrap();
        assert_eq!(q.last_error(dead).unwrap().as_deref(), Some(error));
    }
    q.nack(lease(&q, dead), Retry::After(Duration::ZERO), "third")
        .unwrap();
    assert_eq!(q.last_error(dead).unwrap(), None);
    match q.status(dead).unwrap() {
        JobStatus::Dead { error, .. } => assert_eq!(error, "third"),
        other => panic!("{other:?}"),
    }

    // Cancelled while waiting for its retry: forgotten.
    let cancelled = q.enqueue(b"cancel me").unwrap();
    q.nack(lease(&q, cancelled), LATER, "flaky").unwrap();
    assert!(matches!(
        q.status(cancelled).unwrap(),
        JobStatus::Delayed { attempts: 1, .. }
    ));
    assert_eq!(q.last_error(cancelled).unwrap().as_deref(), Some("flaky"));
    q.cancel(cancelled).unwrap();
    assert_eq!(q.last_error(cancelled).unwrap(), None);
    q.close().unwrap();

    // None of them comes back after a reopen.
    let q = open(dir.path(), &clock);
    for id in [id, dead, cancelled] {
        assert_eq!(q.last_error(id).unwrap(), None, "job {id}");
    }
}

#[test]
fn a_long_error_is_cut_at_a_char_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let q = open(dir.path(), &clock);
    let id = q.enqueue(b"x").unwrap();
    // 'é' is 2 bytes: an odd cap would fall inside one.
    let long = format!("a{}", "é".repeat(MAX_ERROR_LEN));
    q.nack(lease(&q, id), LATER, &long).unwrap();
    let kept = q.last_error(id).unwrap().expect("an error");
    assert_eq!(kept.len(), MAX_ERROR_LEN - 1);
    assert!(long.starts_with(&kept));
    drop(q);
    // The same from the log (no checkpoint: the queue was not closed).
    let q = open(dir.path(), &clock);
    assert!(!q.recovery_report().checkpoint_used);
    assert_eq!(q.last_error(id).unwrap(), Some(kept));
}

/// A queue with jobs in every state a last error can be in: `waiting`
/// (delayed, with an error), `leased` (failed, then leased again), `plain`
/// (nacked without an error), `acked` (failed, then acked). Returns their
/// ids in that order.
fn failing_jobs(q: &Queue) -> [u64; 4] {
    let ids: Vec<u64> = (0..4)
        .map(|i| q.enqueue(format!("job {i}").as_bytes()).unwrap())
        .collect();
    let [waiting, leased, plain, acked] = [ids[0], ids[1], ids[2], ids[3]];
    let receipts: Vec<walq::Receipt> = ids.iter().map(|&id| lease(q, id)).collect();
    q.nack(receipts[0], LATER, "disk full").unwrap();
    q.nack(receipts[1], Retry::After(Duration::ZERO), "boom: é")
        .unwrap();
    q.nack(receipts[2], LATER, "").unwrap();
    q.nack(receipts[3], Retry::After(Duration::ZERO), "once")
        .unwrap();
    // Leased again after its failure: `leased` first (lower id), then `acked`.
    let _held = lease(q, leased);
    q.ack(lease(q, acked)).unwrap();
    [waiting, leased, plain, acked]
}

fn assert_errors(q: &Queue, [waiting, leased, plain, acked]: [u64; 4]) {
    assert_eq!(q.last_error(waiting).unwrap().as_deref(), Some("disk full"));
    assert_eq!(q.last_error(leased).unwrap().as_deref(), Some("boom: é"));
    assert_eq!(q.last_error(plain).unwrap(), None);
    assert_eq!(q.last_error(acked).unwrap(), None);
}

#[test]
fn errors_survive_a_clean_close_through_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let q = open(dir.path(), &clock);
    let ids = failing_jobs(&q);
    assert_errors(&q, ids);
    q.close().unwrap();
    let q = open(dir.path(), &clock);
    assert!(
        q.recovery_report().checkpoint_used,
        "{:?}",
        q.recovery_report()
    );
    // The lease held at close was released by the open, error kept.
    assert_errors(&q, ids);
    assert_eq!(q.status(ids[1]).unwrap(), JobStatus::Queued { attempts: 2 });
    q.close().unwrap();
    // The same from a full scan of the same log.
    let copy = common::scanned(dir.path());
    let q = open(copy.path(), &clock);
    assert!(!q.recovery_report().checkpoint_used);
    assert_errors(&q, ids);
}

#[test]
fn errors_survive_a_crash_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let q = open(dir.path(), &clock);
    let ids = failing_jobs(&q);
    drop(q); // no close: no checkpoint, no clean record
    let q = open(dir.path(), &clock);
    assert!(!q.recovery_report().checkpoint_used);
    assert_errors(&q, ids);
    // A checkpoint (its clean flag cleared by the next open) and records
    // after it: they are replayed on top of its errors.
    q.close().unwrap();
    let q = open(dir.path(), &clock);
    let r = lease(&q, ids[1]);
    q.nack(r, LATER, "second failure").unwrap();
    drop(q);
    let q = open(dir.path(), &clock);
    assert!(q.recovery_report().checkpoint_used);
    assert_eq!(
        q.last_error(ids[1]).unwrap().as_deref(),
        Some("second failure")
    );
    assert_eq!(q.last_error(ids[0]).unwrap().as_deref(), Some("disk full"));
}

#[test]
fn errors_survive_reclaim_of_the_segment_that_held_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let q = open(dir.path(), &clock);
    let ids = failing_jobs(&q);
    let first = common::segment_files(dir.path())[0].clone();
    // Enough finished jobs to fill several 64 KiB segments: the first
    // one (holding the jobs and their NackErr records) is reclaimed, its
    // live jobs carried forward.
    let payload = vec![7u8; 900];
    for _ in 0..400 {
        q.enqueue(&payload).unwrap();
        let job = q.dequeue().unwrap().unwrap();
        q.ack(job.receipt()).unwrap();
    }
    assert!(!first.exists(), "the first segment was not reclaimed");
    assert!(q.stats().carried_total >= 2, "{:?}", q.stats());
    assert_errors(&q, ids);
    drop(q);
    // After a crash, from a full scan: the carried records alone say it.
    let copy = common::scanned(dir.path());
    let q = open(copy.path(), &clock);
    assert!(!q.recovery_report().checkpoint_used);
    assert_errors(&q, ids);
    drop(q);
    // From the periodic checkpoint that the reclaim brought on, if any.
    let q = open(dir.path(), &clock);
    assert_errors(&q, ids);
    q.close().unwrap();
    let q = open(dir.path(), &clock);
    assert!(q.recovery_report().checkpoint_used);
    assert_errors(&q, ids);
}

#[test]
fn a_damaged_error_section_falls_back_to_the_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let q = open(dir.path(), &clock);
    let ids = failing_jobs(&q);
    q.close().unwrap();
    let good = std::fs::read(dir.path().join("CHECKPOINT")).unwrap();
    assert_eq!(u16::from_le_bytes([good[8], good[9]]), 5, "version");
    // The error section (its length at offset 12) comes before the queue
    // section (16 bytes: no named queue) and the CRC: two entries, jobs
    // `waiting` ("disk full") and `leased`.
    let n = good.len() - 4;
    let len = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
    let at = n - 16 - len;
    assert_eq!(len, 2 * 10 + "disk full".len() + "boom: é".len());
    assert_eq!(&good[at..at + 8], &ids[0].to_le_bytes());
    let second = at + 10 + "disk full".len();
    let forged = |edit: &dyn Fn(&mut Vec<u8>), reseal: bool| {
        let mut b = good.clone();
        edit(&mut b);
        if reseal {
            let crc = crc32fast::hash(&b[128..n]);
            b[n..].copy_from_slice(&crc.to_le_bytes());
        }
        b
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (forged(&|b| b[at + 10] ^= 0x01, false), "checksum"),
        (forged(&|b| b[at + 10] = 0xff, true), "not UTF-8"),
        (forged(&|b| b[second] = 99, true), "not live"),
        (forged(&|b| b[second] = 0, true), "not increasing"),
        (forged(&|b| b[at + 8] = 0, true), "out of range"),
    ];
    for (bytes, why) in cases {
        let copy = common::scanned(dir.path());
        std::fs::write(copy.path().join("CHECKPOINT"), &bytes).unwrap();
        let q = open(copy.path(), &clock);
        let report = q.recovery_report();
        assert!(!report.checkpoint_used, "{why}");
        let reason = report.checkpoint_fallback.clone().unwrap_or_default();
        assert!(reason.contains(why), "{why}: {reason}");
        // The scan finds every error all the same.
        assert_errors(&q, ids);
    }
}

/// A job whose final attempt fails without a text (an empty nack, a lease
/// that runs out) is dead-lettered with the last error an earlier attempt
/// gave, not an empty one (a review found `""` and `lease expired during
/// attempt 2` alone, the earlier "gateway timeout" lost).
#[test]
fn a_dead_letter_keeps_the_last_error_when_the_final_attempt_gives_none() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let q = Queue::open_with(dir.path(), common::opts(&clock).max_attempts(2)).unwrap();
    let now = Retry::After(Duration::ZERO);
    let (a, b) = (q.enqueue(b"a").unwrap(), q.enqueue(b"b").unwrap());
    let (ra, rb) = (lease(&q, a), lease(&q, b));
    q.nack(ra, now, "gateway timeout").unwrap();
    q.nack(rb, now, "gateway timeout").unwrap();
    q.nack(lease(&q, a), now, "").unwrap();
    let _held = lease(&q, b);
    clock.advance(Duration::from_secs(31));
    assert!(q.dequeue().unwrap().is_none(), "b's lease ran out: dead");
    let error = |id| q.dead_letter(id).unwrap().expect("dead").error;
    assert_eq!(error(a), "gateway timeout");
    assert_eq!(
        error(b),
        "lease expired during attempt 2 (last error: gateway timeout)"
    );
    assert_eq!(q.last_error(a).unwrap(), None, "forgotten with the job");
}

/// A leased job carries its last error (`Job::last_error`, single and
/// batch dequeues), and a pool's handler reads it from its context on the
/// next attempt (`JobContext::last_error`).
#[test]
fn a_leased_job_and_a_handler_see_the_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let q = open(dir.path(), &clock);
    let id = q.enqueue(b"charge").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.last_error(), None, "a first attempt");
    q.nack(job.receipt(), Retry::After(Duration::ZERO), "card declined")
        .unwrap();
    let job = q.dequeue_batch(10).unwrap().pop().unwrap();
    assert_eq!((job.id(), job.last_error()), (id, Some("card declined")));
    q.nack(job.receipt(), Retry::After(Duration::ZERO), "")
        .unwrap();

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let pool = walq::WorkerPool::builder(q.clone())
        .workers(1)
        .poll_interval(Duration::from_millis(10))
        .start(move |ctx: &walq::JobContext, _: &[u8]| {
            s.lock().unwrap().push(ctx.last_error().map(str::to_string));
            if ctx.attempt() < 4 {
                walq::Outcome::retry_after(Duration::ZERO, "gateway timeout")
            } else {
                walq::Outcome::done()
            }
        })
        .unwrap();
    // A guard against a hang, not a timing assertion.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pool.stats().done < 1 {
        assert!(std::time::Instant::now() < deadline, "{:?}", pool.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.shutdown(Duration::from_secs(5));
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        [
            Some("card declined".to_string()),
            Some("gateway timeout".to_string())
        ]
    );
}
