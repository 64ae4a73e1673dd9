//! Guarantee 8: idempotency keys dedup within the window, across
//! restarts; job ids are unique and never reused.

mod common;

use std::time::Duration;

use common::{drain, open, opts};
use walq::{EnqueueOptions, ManualClock, Queue};

fn keyed(k: &str) -> EnqueueOptions {
    EnqueueOptions::new().idempotency_key(k)
}

#[test]
fn a_known_key_returns_the_existing_job_in_every_state_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let first = q.enqueue_with(b"charge 1", keyed("order-1")).unwrap();
    assert!(!first.duplicate);
    // Pending.
    let dup = q.enqueue_with(b"charge 1 again", keyed("order-1")).unwrap();
    assert_eq!((dup.id, dup.duplicate), (first.id, true));
    // In flight.
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.idempotency_key(), Some(&b"order-1"[..]));
    assert!(q.enqueue_with(b"x", keyed("order-1")).unwrap().duplicate);
    // Completed.
    q.ack(job.receipt()).unwrap();
    assert!(q.enqueue_with(b"x", keyed("order-1")).unwrap().duplicate);
    assert_eq!(q.stats().enqueued_total, 1);
    drop(q);
    // Across a restart.
    let q = open(dir.path(), &clock);
    let again = q.enqueue_with(b"x", keyed("order-1")).unwrap();
    assert_eq!((again.id, again.duplicate), (first.id, true));
    assert!(q.dequeue().unwrap().is_none());
    // After the window the key is free again.
    clock.advance(Duration::from_secs(24 * 3600 + 1));
    let fresh = q
        .enqueue_with(b"charge 1 next day", keyed("order-1"))
        .unwrap();
    assert!(!fresh.duplicate);
    assert_ne!(fresh.id, first.id);
}

#[test]
fn a_dead_jobs_key_stays_known() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let first = q.enqueue_with(b"p", keyed("k")).unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "boom").unwrap();
    clock.advance(Duration::from_secs(48 * 3600));
    let dup = q.enqueue_with(b"p", keyed("k")).unwrap();
    assert_eq!((dup.id, dup.duplicate), (first.id, true));
    drop(q);
    let q = open(dir.path(), &clock);
    assert!(q.enqueue_with(b"p", keyed("k")).unwrap().duplicate);
}

#[test]
fn keys_survive_their_segments_being_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let first = q.enqueue_with(b"keyed", keyed("survivor")).unwrap();
    drain(&q);
    // Push enough traffic through that the key's segment is deleted.
    for _ in 0..5 {
        for _ in 0..100 {
            q.enqueue(&[0u8; 1000]).unwrap();
        }
        drain(&q);
    }
    assert!(q.stats().segments <= 2);
    drop(q);
    let q = open(dir.path(), &clock);
    let dup = q.enqueue_with(b"keyed", keyed("survivor")).unwrap();
    assert_eq!((dup.id, dup.duplicate), (first.id, true));
}

#[test]
fn ids_are_never_reused_even_after_the_queue_drains() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let q = Queue::open_with(dir.path(), opts(&clock)).unwrap();
        for _ in 0..150 {
            let id = q.enqueue(&[1u8; 900]).unwrap();
            assert!(seen.insert(id), "id {id} reused");
        }
        drain(&q);
        assert!(q.stats().segments <= 1 + 1);
    }
}
