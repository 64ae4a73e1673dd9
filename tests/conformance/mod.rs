//! The behaviour of the worker pool and typed jobs, written once and run
//! against every backend: `tests/conformance_embedded.rs` (the embedded
//! `Queue`) and `tests/conformance_jetstream.rs` (a 3-node JetStream
//! cluster). A harness makes a fresh, empty backend per test; each test
//! body only speaks `walq::worker::Backend`, the pool and `Jobs`.
//!
//! Where a backend cannot match, the test body says so at the point of
//! difference and `docs/scale-out.md` explains it.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use walq::worker::{Backend, JobContext, JobStatus, Outcome, WorkerPool};
use walq::{DeadLetter, EnqueueOptions, ErrorKind, Jobs};

/// What a test asks of a fresh backend.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Attempts of a job enqueued without its own.
    pub max_attempts: u32,
    /// The lease (the embedded queue's per-lease visibility; JetStream's
    /// AckWait).
    pub visibility: Duration,
    /// The first backoff delay (no jitter, multiplier 1).
    pub backoff: Duration,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            max_attempts: 3,
            visibility: Duration::from_secs(5),
            backoff: Duration::from_millis(300),
        }
    }
}

/// Makes fresh backends of one kind.
pub trait Harness {
    /// The backend under test.
    type B: Backend + Clone;
    /// A fresh, empty backend.
    fn fresh(&self, setup: Setup) -> Self::B;
    /// Its dead letters.
    fn dead_letters(&self, b: &Self::B) -> Vec<DeadLetter>;
    /// Sends dead job `id` back.
    fn redrive(&self, b: &Self::B, id: u64);
    /// Drops dead job `id`.
    fn purge(&self, b: &Self::B, id: u64);
}

/// Writes one `#[test]` per conformance body, each with a fresh harness.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            a_done_job_is_done_with_its_result,
            a_retry_waits_its_backoff_then_the_job_is_done,
            a_failed_job_goes_to_the_dead_letters_with_its_error_and_can_be_redriven,
            a_purged_dead_letter_reports_purged,
            a_job_that_keeps_failing_dies_after_its_own_max_attempts,
            an_idempotency_key_enqueues_once,
            a_delayed_job_is_not_delivered_early,
            status_follows_a_job_from_queued_to_done,
            an_expired_lease_is_delivered_again_with_the_attempt_counted,
            a_stale_lease_cannot_settle_or_extend,
            a_job_whose_leases_keep_expiring_dies_after_max_attempts,
            typed_jobs_round_trip_and_undecodable_ones_die,
            shutdown_releases_running_work_with_the_attempt_given_back,
            a_cancelled_job_is_never_delivered,
            only_a_waiting_job_can_be_cancelled);
    };
    (@each $harness:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                conformance::$name(&$harness);
            }
        )*
    };
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const LONG: Duration = Duration::from_secs(60);

/// Both backends count due times in whole milliseconds of the wall
/// clock, so "not before" is checked to that grain.
const GRAIN: Duration = Duration::from_millis(2);

fn pool<B: Backend + Clone>(
    b: &B,
    f: impl Fn(&JobContext, &[u8]) -> Outcome + Send + Sync + 'static,
) -> WorkerPool<B> {
    WorkerPool::builder(b.clone())
        .workers(2)
        .visibility(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(50))
        .start(f)
        .expect("pool starts")
}

pub fn a_done_job_is_done_with_its_result<H: Harness>(h: &H) {
    let b = h.fresh(Setup::default());
    let id = b.enqueue(b"21", EnqueueOptions::new()).unwrap().id;
    let p = pool(&b, |_, payload| {
        let n: u32 = std::str::from_utf8(payload).unwrap().parse().unwrap();
        Outcome::done_with((n * 2).to_string())
    });
    wait_until("done", LONG, || p.stats().done == 1);
    let s = p.shutdown(LONG).stats;
    assert_eq!((s.leased, s.done, s.retried, s.dead), (1, 1, 0, 0));
    assert!(matches!(b.status(id).unwrap(),
        JobStatus::Done { result: Some(ref r), .. } if r == b"42"));
}

pub fn a_retry_waits_its_backoff_then_the_job_is_done<H: Harness>(h: &H) {
    let setup = Setup::default();
    let b = h.fresh(setup);
    let id = b.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let p = pool(&b, move |ctx, _| {
        log.lock().unwrap().push((ctx.attempt(), Instant::now()));
        if ctx.attempt() == 1 {
            Outcome::retry("flaky")
        } else {
            Outcome::done()
        }
    });
    wait_until("done after a retry", LONG, || p.stats().done == 1);
    let s = p.shutdown(LONG).stats;
    assert_eq!((s.leased, s.done, s.retried), (2, 1, 1));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.iter().map(|(a, _)| *a).collect::<Vec<_>>(), vec![1, 2]);
    // The second attempt waited the backoff. (JetStream schedules fire on
    // whole seconds, rounded up: later, never earlier.)
    assert!(
        seen[1].1 - seen[0].1 + GRAIN >= setup.backoff,
        "{:?}",
        seen[1].1 - seen[0].1
    );
    assert!(matches!(b.status(id).unwrap(), JobStatus::Done { .. }));
}

pub fn a_failed_job_goes_to_the_dead_letters_with_its_error_and_can_be_redriven<H: Harness>(h: &H) {
    let b = h.fresh(Setup::default());
    let id = b.enqueue(b"poison", EnqueueOptions::new()).unwrap().id;
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let p = pool(&b, move |_, _| {
        if r.fetch_add(1, Ordering::SeqCst) == 0 {
            Outcome::fail("bad input: no such user")
        } else {
            Outcome::done()
        }
    });
    wait_until("dead", LONG, || p.stats().dead == 1);
    assert!(matches!(b.status(id).unwrap(),
        JobStatus::Dead { attempts: 1, ref error, .. } if error == "bad input: no such user"));
    let dead = h.dead_letters(&b);
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].attempts), (id, 1));
    assert_eq!(dead[0].payload, b"poison");
    assert_eq!(dead[0].error, "bad input: no such user");
    h.redrive(&b, id);
    wait_until("redriven job done", LONG, || p.stats().done == 1);
    p.shutdown(LONG);
    assert!(matches!(b.status(id).unwrap(), JobStatus::Done { .. }));
    assert!(h.dead_letters(&b).is_empty());
}

pub fn a_purged_dead_letter_reports_purged<H: Harness>(h: &H) {
    let b = h.fresh(Setup::default());
    let id = b.enqueue(b"poison", EnqueueOptions::new()).unwrap().id;
    let d = b
        .lease(Duration::from_secs(5), LONG)
        .unwrap()
        .expect("a job");
    b.fail(d.lease(), "bad").unwrap();
    h.purge(&b, id);
    assert!(h.dead_letters(&b).is_empty());
    assert!(matches!(b.status(id).unwrap(), JobStatus::Purged { .. }));
}

pub fn a_job_that_keeps_failing_dies_after_its_own_max_attempts<H: Harness>(h: &H) {
    let b = h.fresh(Setup::default());
    let id = b
        .enqueue(b"x", EnqueueOptions::new().max_attempts(2))
        .unwrap()
        .id;
    let p = pool(&b, |ctx, _| {
        assert_eq!(ctx.max_attempts(), 2);
        Outcome::retry_after(Duration::ZERO, format!("failed attempt {}", ctx.attempt()))
    });
    wait_until("dead", LONG, || p.stats().dead == 1);
    let s = p.shutdown(LONG).stats;
    assert_eq!((s.leased, s.retried, s.dead), (2, 1, 1));
    assert!(matches!(b.status(id).unwrap(),
        JobStatus::Dead { attempts: 2, ref error, .. } if error == "failed attempt 2"));
}

pub fn an_idempotency_key_enqueues_once<H: Harness>(h: &H) {
    let b = h.fresh(Setup::default());
    let key = EnqueueOptions::new().idempotency_key("order-7");
    let first = b.enqueue(b"charge", key.clone()).unwrap();
    let second = b.enqueue(b"charge", key.clone()).unwrap();
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(first.id, second.id);
    let other = b
        .enqueue(b"charge", EnqueueOptions::new().idempotency_key("order-8"))
        .unwrap();
    assert_ne!(other.id, first.id);
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let p = pool(&b, move |ctx, _| {
        assert!(ctx.idempotency_key().is_some());
        r.fetch_add(1, Ordering::SeqCst);
        Outcome::done()
    });
    wait_until("both done", LONG, || p.stats().done == 2);
    // Still a duplicate once the job is done (within the retention).
    assert!(b.enqueue(b"charge", key).unwrap().duplicate);
    std::thread::sleep(Duration::from_millis(500));
    p.shutdown(LONG);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

pub fn a_delayed_job_is_not_delivered_early<H: Harness>(h: &H) {
    let b = h.fresh(Setup::default());
    let delay = Duration::from_secs(2);
    let start = Instant::now();
    let id = b
        .enqueue(b"later", EnqueueOptions::new().delay(delay))
        .unwrap()
        .id;
    assert!(matches!(
        b.status(id).unwrap(),
        JobStatus::Delayed { attempts: 0, .. }
    ));
    assert!(b
        .lease(Duration::from_secs(5), Duration::from_millis(500))
        .unwrap()
        .is_none());
    let d = b
        .lease(Duration::from_secs(5), LONG)
        .unwrap()
        .expect("due job");
    assert!(
        start.elapsed() + GRAIN >= delay,
        "delivered after {:?}",
        start.elapsed()
    );
    assert_eq!((d.id(), d.attempt()), (id, 1));
    b.complete(d.lease(), None).unwrap();
}

pub fn status_follows_a_job_from_queued_to_done<H: Harness>(h: &H) {
    let setup = Setup::default();
    let b = h.fresh(setup);
    let id = b.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
    assert_eq!(b.status(id).unwrap(), JobStatus::Queued { attempts: 0 });
    let d = b.lease(setup.visibility, LONG).unwrap().expect("a job");
    assert!(matches!(
        b.status(id).unwrap(),
        JobStatus::InFlight { attempt: 1, .. }
    ));
    b.complete(d.lease(), Some(b"ok")).unwrap();
    assert!(matches!(b.status(id).unwrap(),
        JobStatus::Done { result: Some(ref r), .. } if r == b"ok"));
    // An id never issued. (Embedded ids are sequential; JetStream ids are
    // random 63-bit numbers, so 0 is never issued on either.)
    assert_eq!(b.status(0).unwrap(), JobStatus::Unknown);
}

pub fn an_expired_lease_is_delivered_again_with_the_attempt_counted<H: Harness>(h: &H) {
    let setup = Setup {
        visibility: Duration::from_secs(1),
        ..Setup::default()
    };
    let b = h.fresh(setup);
    let id = b.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
    let first = b.lease(setup.visibility, LONG).unwrap().expect("a job");
    let second = b
        .lease(setup.visibility, LONG)
        .unwrap()
        .expect("redelivered");
    assert_eq!((first.id(), first.attempt()), (id, 1));
    assert_eq!((second.id(), second.attempt()), (id, 2));
    b.complete(second.lease(), None).unwrap();
}

pub fn a_stale_lease_cannot_settle_or_extend<H: Harness>(h: &H) {
    let setup = Setup {
        visibility: Duration::from_secs(1),
        ..Setup::default()
    };
    let b = h.fresh(setup);
    let id = b.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
    let stale = b.lease(setup.visibility, LONG).unwrap().expect("a job");
    let live = b
        .lease(setup.visibility, LONG)
        .unwrap()
        .expect("redelivered");
    assert_eq!(live.id(), id);
    let lost = |r: walq::Result<()>| assert_eq!(r.unwrap_err().kind(), ErrorKind::LeaseLost);
    lost(b.complete(stale.lease(), None));
    lost(b.extend(stale.lease(), setup.visibility));
    lost(b.retry(stale.lease(), None, "stale"));
    lost(b.fail(stale.lease(), "stale"));
    assert!(matches!(
        b.status(id).unwrap(),
        JobStatus::InFlight { attempt: 2, .. }
    ));
    b.extend(live.lease(), setup.visibility).unwrap();
    b.complete(live.lease(), None).unwrap();
    assert!(matches!(b.status(id).unwrap(), JobStatus::Done { .. }));
    // Settled, the live lease is spent too.
    lost(b.complete(live.lease(), None));
}

pub fn a_job_whose_leases_keep_expiring_dies_after_max_attempts<H: Harness>(h: &H) {
    let setup = Setup {
        visibility: Duration::from_secs(1),
        ..Setup::default()
    };
    let b = h.fresh(setup);
    let id = b
        .enqueue(b"x", EnqueueOptions::new().max_attempts(2))
        .unwrap()
        .id;
    // Two workers lease the job and vanish without settling it.
    for attempt in 1..=2 {
        let d = b
            .lease(setup.visibility, LONG)
            .unwrap()
            .expect("a delivery");
        assert_eq!((d.id(), d.attempt()), (id, attempt));
    }
    // The expiry of the last attempt's lease sends it to the dead letters.
    wait_until("dead", LONG, || {
        assert!(b
            .lease(setup.visibility, Duration::from_millis(200))
            .unwrap()
            .is_none());
        matches!(b.status(id).unwrap(), JobStatus::Dead { .. })
    });
    assert!(matches!(b.status(id).unwrap(),
        JobStatus::Dead { attempts: 2, ref error, .. } if error == "lease expired during attempt 2"));
    let dead = h.dead_letters(&b);
    assert_eq!((dead.len(), dead[0].id, dead[0].attempts), (1, id, 2));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Resize {
    photo: u64,
    width: u32,
}

pub fn typed_jobs_round_trip_and_undecodable_ones_die<H: Harness>(h: &H) {
    let b = h.fresh(Setup::default());
    let jobs = Jobs::<Resize, H::B>::new(b.clone());
    let sent: Vec<Resize> = (0..5)
        .map(|i| Resize {
            photo: i,
            width: 640,
        })
        .collect();
    for r in &sent {
        jobs.enqueue(r).unwrap();
    }
    let bad = b
        .enqueue(b"{\"photo\":1}", EnqueueOptions::new())
        .unwrap()
        .id;
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let p = WorkerPool::builder(b.clone())
        .workers(2)
        .visibility(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(50))
        .start_typed(move |_: &JobContext, r: Resize| {
            g.lock().unwrap().push(r);
            Outcome::done()
        })
        .unwrap();
    wait_until("all settled", LONG, || p.stats().processed() == 6);
    p.shutdown(LONG);
    let mut got = got.lock().unwrap().clone();
    got.sort_by_key(|r| r.photo);
    assert_eq!(got, sent);
    assert!(matches!(b.status(bad).unwrap(),
        JobStatus::Dead { ref error, .. } if error.contains("missing field `width`")));
}

/// A stop is not the job's failure: a job released on its last attempt
/// is queued again, its attempt given back, not dead-lettered.
pub fn shutdown_releases_running_work_with_the_attempt_given_back<H: Harness>(h: &H) {
    let b = h.fresh(Setup::default());
    let last = EnqueueOptions::new().max_attempts(1);
    let id = b.enqueue(b"slow", last).unwrap().id;
    let p = pool(&b, |ctx, _| {
        while !ctx.lease_lost() {
            std::thread::sleep(Duration::from_millis(10));
        }
        Outcome::done()
    });
    wait_until("running", LONG, || p.stats().running == 1);
    let report = p.shutdown(Duration::from_millis(200));
    assert_eq!(report.released, vec![id]);
    assert_eq!(report.stats.released, 1);
    assert_eq!(b.status(id).unwrap(), JobStatus::Queued { attempts: 0 });
    let d = b
        .lease(Duration::from_secs(5), LONG)
        .unwrap()
        .expect("released job");
    assert_eq!((d.id(), d.attempt(), d.max_attempts()), (id, 1, 1));
    b.complete(d.lease(), None).unwrap();
}

fn purged<B: Backend>(b: &B, id: u64) -> bool {
    matches!(b.status(id).unwrap(), JobStatus::Purged { .. })
}

fn refused<B: Backend>(b: &B, id: u64) -> ErrorKind {
    b.cancel(id).expect_err("the cancel is refused").kind()
}

pub fn a_cancelled_job_is_never_delivered<H: Harness>(h: &H) {
    let setup = Setup::default();
    let b = h.fresh(setup);
    let key = EnqueueOptions::new().idempotency_key("reminder-5");
    let delay = EnqueueOptions::new().delay(Duration::from_secs(1));
    let ready = b.enqueue(b"ready", EnqueueOptions::new()).unwrap().id;
    let later = b.enqueue(b"later", delay).unwrap().id;
    let keyed = b.enqueue(b"keyed", key.clone()).unwrap().id;
    let kept = b.enqueue(b"kept", EnqueueOptions::new()).unwrap().id;
    for id in [ready, later, keyed] {
        b.cancel(id).unwrap();
        assert!(purged(&b, id), "job {id}: {:?}", b.status(id));
    }
    assert_eq!(refused(&b, ready), ErrorKind::NotFound, "cancelled twice");
    // The key stays known for its window, as a finished job's does.
    let again = b.enqueue(b"keyed", key).unwrap();
    assert!(again.duplicate && again.id == keyed, "{again:?}");
    // Only the job left is delivered.
    let d = b.lease(setup.visibility, LONG).unwrap().expect("a job");
    assert_eq!(d.id(), kept);
    // A job waiting for its retry's backoff can be cancelled too.
    b.retry(d.lease(), Some(Duration::from_secs(1)), "later")
        .unwrap();
    b.cancel(kept).unwrap();
    assert!(purged(&b, kept));
    // Past the delay and the backoff (JetStream's schedules fire on
    // whole seconds): nothing is delivered.
    let none = b.lease(setup.visibility, Duration::from_millis(2500));
    assert!(none.unwrap().is_none(), "a cancelled job was delivered");
    for id in [ready, later, keyed, kept] {
        assert!(purged(&b, id), "job {id}: {:?}", b.status(id));
    }
}

pub fn only_a_waiting_job_can_be_cancelled<H: Harness>(h: &H) {
    let setup = Setup::default();
    let b = h.fresh(setup);
    let id = b.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
    let d = b.lease(setup.visibility, LONG).unwrap().expect("a job");
    // Leased: refused, and the worker still holds it.
    assert_eq!(refused(&b, id), ErrorKind::InFlight);
    b.extend(d.lease(), setup.visibility).unwrap();
    b.fail(d.lease(), "bad").unwrap();
    // A dead letter is purged, not cancelled.
    assert_eq!(refused(&b, id), ErrorKind::NotFound);
    assert!(matches!(b.status(id).unwrap(), JobStatus::Dead { .. }));
    let done = b.enqueue(b"y", EnqueueOptions::new()).unwrap().id;
    let d = b.lease(setup.visibility, LONG).unwrap().expect("a job");
    b.complete(d.lease(), None).unwrap();
    assert_eq!(refused(&b, done), ErrorKind::NotFound);
    assert!(matches!(b.status(done).unwrap(), JobStatus::Done { .. }));
    assert_eq!(refused(&b, 0), ErrorKind::NotFound, "never issued");
}
