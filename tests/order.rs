//! Guarantee 6: ready jobs oldest first; delayed and retried jobs take
//! their place by (due time, id).

mod common;

use std::time::Duration;

use common::{drain, open};
use walq::{EnqueueOptions, ManualClock, Retry};

#[test]
fn fifo_by_enqueue_order_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    // ~3 segments of 64 KiB.
    for i in 0..600u32 {
        q.enqueue(&vec![i as u8; 300]).unwrap();
        if i % 7 == 0 {
            clock.advance(Duration::from_millis(1));
        }
    }
    assert!(q.stats().segments >= 3);
    drop(q);
    let q = open(dir.path(), &clock);
    let got = drain(&q);
    let ids: Vec<u64> = got.iter().map(|(id, _, _)| *id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    assert_eq!(got.len(), 600);
    for (i, (_, p, _)) in got.iter().enumerate() {
        assert_eq!(p, &vec![i as u8; 300]);
    }
}

#[test]
fn delayed_and_retried_jobs_take_their_place_by_due_time_then_id() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let a = q.enqueue(b"a").unwrap(); // t=0
    let d = q
        .enqueue_with(b"d", EnqueueOptions::new().delay(Duration::from_secs(5)))
        .unwrap()
        .id; // due t=5
    clock.advance(Duration::from_secs(1));
    // Lease a and retry it at t=3.
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), a);
    q.nack(job.receipt(), Retry::After(Duration::from_secs(2)), "x")
        .unwrap();
    let b = q.enqueue(b"b").unwrap(); // t=1
    clock.advance(Duration::from_secs(3)); // t=4
    let c = q.enqueue(b"c").unwrap(); // t=4
    clock.advance(Duration::from_secs(2)); // t=6
    let e = q.enqueue(b"e").unwrap(); // t=6
                                      // Ready now: b(1), a(3, retried), c(4), d(5, delayed), e(6).
    let order: Vec<u64> = drain(&q).into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(order, vec![b, a, c, d, e]);
}

#[test]
fn a_clock_stepping_back_does_not_reorder() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let first = q.enqueue(b"1").unwrap();
    clock.set(500_000); // the wall clock jumps back
    let second = q.enqueue(b"2").unwrap();
    let order: Vec<u64> = drain(&q).into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(order, vec![first, second]);
}
