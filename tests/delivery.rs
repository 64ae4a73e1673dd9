//! Guarantees 2–5: at-least-once delivery with one holder at a time, ack
//! is final, receipts fence stale leases, attempts are persisted.

mod common;

use std::time::Duration;

use common::{drain, open, opts};
use walq::{EnqueueOptions, ErrorKind, ManualClock, Queue, Retry};

#[test]
fn a_leased_job_is_invisible_until_its_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let id = q.enqueue(b"job").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), id);
    // Invisible while leased, even just before the deadline.
    assert!(q.dequeue().unwrap().is_none());
    clock.advance(Duration::from_millis(29_999));
    assert!(q.dequeue().unwrap().is_none());
    assert_eq!(q.stats().in_flight, 1);
    // Expired: ready again, same id, next attempt.
    clock.advance(Duration::from_millis(1));
    let again = q.dequeue().unwrap().unwrap();
    assert_eq!(again.id(), id);
    assert_eq!(again.attempt(), 2);
    assert_eq!(again.payload(), b"job");
}

#[test]
fn extend_keeps_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    q.enqueue(b"long job").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    clock.advance(Duration::from_secs(20));
    q.extend(job.receipt(), Duration::from_secs(60)).unwrap();
    clock.advance(Duration::from_secs(50));
    assert!(q.dequeue().unwrap().is_none(), "extended lease still holds");
    q.ack(job.receipt()).unwrap();
    clock.advance(Duration::from_secs(3600));
    assert!(q.dequeue().unwrap().is_none());
}

#[test]
fn leases_do_not_outlive_the_process_and_the_attempt_counts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    {
        let q = open(dir.path(), &clock);
        q.enqueue(b"a").unwrap();
        q.enqueue(b"b").unwrap();
        let a = q.dequeue().unwrap().unwrap();
        assert_eq!(a.payload(), b"a");
        // The process stops with `a` in flight (no ack, no close).
    }
    let q = open(dir.path(), &clock);
    assert_eq!(q.recovery_report().leases_released, 1);
    // Right after open, without any time passing, `a` is ready again.
    let got = drain(&q);
    let a = got
        .iter()
        .find(|(_, p, _)| p == b"a")
        .expect("a redelivered");
    assert_eq!(a.2, 2, "the interrupted attempt counted");
    assert_eq!(got.len(), 2);
}

#[test]
fn an_acked_job_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let ids: Vec<u64> = (0..50u32)
        .map(|i| q.enqueue(&i.to_le_bytes()).unwrap())
        .collect();
    let acked: Vec<u64> = drain(&q).into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(acked, ids);
    clock.advance(Duration::from_secs(24 * 3600));
    assert!(q.dequeue().unwrap().is_none());
    drop(q);
    let q = open(dir.path(), &clock);
    assert!(
        q.dequeue().unwrap().is_none(),
        "acked jobs came back after reopen"
    );
    assert_eq!(q.stats().ready, 0);
}

#[test]
fn a_stale_receipt_is_refused_and_never_acts_on_the_new_lease() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    q.enqueue(b"x").unwrap();
    let first = q.dequeue().unwrap().unwrap();
    clock.advance(Duration::from_secs(31));
    // Expired but not yet leased again: still lease lost.
    let err = q
        .extend(first.receipt(), Duration::from_secs(10))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    let second = q.dequeue().unwrap().unwrap();
    assert_eq!(second.id(), first.id());
    for err in [
        q.ack(first.receipt()).unwrap_err(),
        q.nack(first.receipt(), Retry::Backoff, "late").unwrap_err(),
        q.fail(first.receipt(), "late").unwrap_err(),
        q.extend(first.receipt(), Duration::from_secs(1))
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    }
    // The newer lease is untouched and still works.
    assert_eq!(q.stats().in_flight, 1);
    q.ack(second.receipt()).unwrap();
    // A receipt for a settled job is lost too.
    let err = q.ack(second.receipt()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
}

#[test]
fn attempts_persist_so_a_job_that_kills_the_process_reaches_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let max = 3;
    let id = {
        let q = Queue::open_with(dir.path(), opts(&clock).max_attempts(max)).unwrap();
        q.enqueue(b"poison pill").unwrap()
    };
    for attempt in 1..=max {
        let q = Queue::open_with(dir.path(), opts(&clock).max_attempts(max)).unwrap();
        let job = q.dequeue().unwrap().expect("redelivered after crash");
        assert_eq!(job.id(), id);
        assert_eq!(job.attempt(), attempt);
        // "Crash" while processing: drop without settling.
    }
    let q = Queue::open_with(dir.path(), opts(&clock).max_attempts(max)).unwrap();
    assert_eq!(q.recovery_report().dead_lettered_on_open, 1);
    assert!(q.dequeue().unwrap().is_none());
    let dead = q.dead_letter(id).unwrap().expect("dead-lettered");
    assert_eq!(dead.attempts, max);
    assert_eq!(dead.payload, b"poison pill");
    assert!(dead.error.contains("stopped"), "{}", dead.error);
}

#[test]
fn nack_retries_after_the_delay_then_dead_letters_at_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = Queue::open_with(dir.path(), opts(&clock)).unwrap();
    let id = q
        .enqueue_with(b"flaky", EnqueueOptions::new().max_attempts(2))
        .unwrap()
        .id;
    let job = q.dequeue().unwrap().unwrap();
    q.nack(
        job.receipt(),
        Retry::After(Duration::from_secs(10)),
        "timeout",
    )
    .unwrap();
    assert!(q.dequeue().unwrap().is_none(), "not before its delay");
    assert_eq!(q.stats().delayed, 1);
    clock.advance(Duration::from_secs(10));
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!((job.id(), job.attempt()), (id, 2));
    q.nack(job.receipt(), Retry::Backoff, "timeout again")
        .unwrap();
    let dead = q.dead_letter(id).unwrap().expect("out of attempts");
    assert_eq!(dead.error, "timeout again");
    assert_eq!(dead.attempts, 2);
    assert_eq!(q.stats().dead, 1);
}

#[test]
fn backoff_delay_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    {
        let q = open(dir.path(), &clock);
        q.enqueue(b"retry me").unwrap();
        let job = q.dequeue().unwrap().unwrap();
        q.nack(
            job.receipt(),
            Retry::After(Duration::from_secs(600)),
            "later",
        )
        .unwrap();
    }
    let q = open(dir.path(), &clock);
    assert!(
        q.dequeue().unwrap().is_none(),
        "retry delay lost on restart"
    );
    clock.advance(Duration::from_secs(600));
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.attempt(), 2);
}

#[test]
fn blocking_dequeue_wakes_on_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(
        dir.path(),
        walq::Options::default().durability(walq::Durability::Os),
    )
    .unwrap();
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || q.dequeue_timeout(Duration::from_secs(60)).unwrap())
    };
    q.enqueue(b"wake up").unwrap();
    let job = consumer.join().unwrap().expect("woken by the enqueue");
    assert_eq!(job.payload(), b"wake up");
}

#[test]
fn blocking_dequeue_wakes_when_a_delayed_job_comes_due() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(
        dir.path(),
        walq::Options::default().durability(walq::Durability::Os),
    )
    .unwrap();
    q.enqueue_with(
        b"soon",
        EnqueueOptions::new().delay(Duration::from_millis(50)),
    )
    .unwrap();
    assert!(q.dequeue().unwrap().is_none());
    let job = q
        .dequeue_timeout(Duration::from_secs(60))
        .unwrap()
        .expect("delayed job delivered once due");
    assert_eq!(job.payload(), b"soon");
}

#[test]
fn blocking_dequeue_times_out_with_none() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    assert!(q
        .dequeue_timeout(Duration::from_millis(5))
        .unwrap()
        .is_none());
}

#[test]
fn dequeue_batch_leases_up_to_n_distinct_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    for i in 0..10u8 {
        q.enqueue(&[i]).unwrap();
    }
    let batch = q.dequeue_batch(4).unwrap();
    let payloads: Vec<u8> = batch.iter().map(|j| j.payload()[0]).collect();
    assert_eq!(payloads, vec![0, 1, 2, 3]);
    let rest = q.dequeue_batch(100).unwrap();
    assert_eq!(rest.len(), 6);
    assert!(q.dequeue_batch(5).unwrap().is_empty());
    q.check_invariants();
}

/// The system clock, counting reads: each look of a blocked dequeue reads
/// it once under the queue lock, so a test knows when its consumers wait.
#[derive(Clone)]
struct CountingClock(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl walq::Clock for CountingClock {
    fn now_ms(&self) -> u64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        walq::SystemClock.now_ms()
    }
    fn monotonic_ms(&self) -> u64 {
        walq::SystemClock.monotonic_ms()
    }
}

/// A job leased by one blocked consumer and never settled reaches the
/// queue's other blocked consumer once the lease runs out, though that
/// consumer began its wait before the lease existed: a waiter looks again
/// within a visibility timeout (2 s here). Before, it slept its whole
/// wait (ten minutes), and the test's one-minute bound failed.
#[test]
fn an_expired_lease_reaches_a_consumer_that_waited_before_it() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let reads = std::sync::Arc::new(AtomicU64::new(0));
    let options = walq::Options::default()
        .clock(CountingClock(reads.clone()))
        .visibility_timeout(Duration::from_secs(2));
    let q = Queue::open_with(dir.path(), options).unwrap();
    let before = reads.load(Ordering::SeqCst);
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..2 {
        let (q, tx) = (q.clone(), tx.clone());
        std::thread::spawn(move || {
            let got = q.dequeue_wait(Duration::from_secs(1), Duration::from_secs(600));
            let _ = tx.send(got.unwrap().map(|j| j.id()));
        });
    }
    // Each consumer looked once (and found nothing): both wait.
    while reads.load(Ordering::SeqCst) < before + 2 {
        std::thread::yield_now();
    }
    let id = q.enqueue(b"job").unwrap();
    let first = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(first, Some(id));
    // Never settled: its lease of one second runs out.
    let second = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the other consumer got the job once its lease ran out");
    assert_eq!(second, Some(id));
}
