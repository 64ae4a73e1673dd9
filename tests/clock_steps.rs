//! Wall-clock steps: delays are measured from the time the clock says,
//! held through a small step back, followed through a large one.

mod common;

use std::time::Duration;

use walq::{EnqueueOptions, JobStatus, ManualClock};

const T0: u64 = 1_700_000_000_000;
const YEAR_MS: u64 = 365 * 86_400_000;

fn delayed(secs: u64) -> EnqueueOptions {
    EnqueueOptions::new().delay(Duration::from_secs(secs))
}

/// Found by review: a clock a year ahead (a bad clock at boot), then set
/// right. Held at the year-ahead reading, a 10 s delay enqueued after the
/// correction was due a year later.
#[test]
fn a_clock_set_right_after_running_far_ahead_measures_new_delays_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = common::open(dir.path(), &clock);
    clock.set(T0 + YEAR_MS);
    q.enqueue(b"during the jump").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.ack(job.receipt()).unwrap();
    clock.set(T0);
    let id = q.enqueue_with(b"delay 10 s", delayed(10)).unwrap().id;
    assert_eq!(
        q.status(id).unwrap(),
        JobStatus::Delayed {
            due_ms: T0 + 10_000,
            attempts: 0
        }
    );
    clock.advance(Duration::from_secs(11));
    assert_eq!(q.dequeue().unwrap().unwrap().id(), id);
}

/// A step back of less than a minute (NTP) holds the time at the latest
/// reading: a delay is measured from it, never from before it.
#[test]
fn a_small_step_back_is_held_at_the_latest_reading() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 30_000);
    let q = common::open(dir.path(), &clock);
    q.enqueue(b"now").unwrap();
    clock.set(T0);
    let id = q.enqueue_with(b"delay 10 s", delayed(10)).unwrap().id;
    assert_eq!(
        q.status(id).unwrap(),
        JobStatus::Delayed {
            due_ms: T0 + 40_000,
            attempts: 0
        }
    );
}

/// A job delayed before a large step back keeps its due time: the step
/// does not make it due early.
#[test]
fn a_large_step_back_does_not_make_a_stored_due_time_early() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 3_600_000);
    let q = common::open(dir.path(), &clock);
    let id = q.enqueue_with(b"delay 10 s", delayed(10)).unwrap().id;
    clock.set(T0);
    assert!(q.dequeue().unwrap().is_none());
    clock.set(T0 + 3_600_000 + 10_000);
    assert_eq!(q.dequeue().unwrap().unwrap().id(), id);
}
