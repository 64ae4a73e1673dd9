//! `PoolBuilder::job_timeout`: a handler that runs past it has its attempt
//! given up. A thread pool stops extending the lease (the job comes back
//! when it runs out, and dies after its last attempt) and refuses the late
//! outcome; an async pool drops the handler's future and fails the attempt
//! at once. Other workers go on serving, and fast handlers are unaffected.
//!
//! No test asserts a timing: the queue's time is a `ManualClock`, advanced
//! where a lease or a backoff must run out, and the bounded waits are
//! watchdogs for liveness only (the job timeout itself is 50 ms of real
//! time, which the waits outlast by far).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use walq::worker::{JobContext, Outcome, PoolBuilder, PoolStats, WorkerPool, MAX_JOB_TIMEOUT};
use walq::{ErrorKind, ManualClock, Queue};

/// Generous: for liveness only, never a timing claim.
const LIVENESS: Duration = Duration::from_secs(60);

const TIMEOUT: Duration = Duration::from_millis(50);

/// Waits (up to a generous deadline, for liveness only) until `cond`.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIVENESS;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn accounted(s: &PoolStats) -> u64 {
    s.done + s.retried + s.dead + s.lost + s.released + s.settle_errors
}

/// A pool of `workers` on `q` that beats and polls every 5 ms, leases for
/// a second of queue time, and gives up on a handler after `timeout`.
fn fast_pool(q: &Queue, workers: usize, timeout: Duration) -> PoolBuilder<Queue> {
    WorkerPool::builder(q.clone())
        .workers(workers)
        .visibility(Duration::from_secs(1))
        .heartbeat(Duration::from_millis(5))
        .poll_interval(Duration::from_millis(5))
        .job_timeout(timeout)
}

/// Two workers whose leases last an hour of queue time, so only the job
/// timeout (`TIMEOUT`) ends an attempt (the async tests).
#[cfg(feature = "tokio")]
fn hour_lease_pool(q: &Queue) -> PoolBuilder<Queue> {
    WorkerPool::builder(q.clone())
        .workers(2)
        .visibility(Duration::from_secs(3600))
        .poll_interval(Duration::from_millis(5))
        .job_timeout(TIMEOUT)
}

/// Blocks the handler's thread (no `.await`) until its timeout has
/// passed (`lease_lost`), or a generous bound that only a missed timeout
/// reaches.
fn block_until_lease_lost(ctx: &JobContext) {
    let deadline = Instant::now() + LIVENESS * 3;
    while !ctx.lease_lost() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Blocks the handler's thread until its timeout has passed, then
/// panics.
fn panic_past_timeout(ctx: &JobContext) -> Outcome {
    block_until_lease_lost(ctx);
    panic!("late panic of job {}", ctx.id());
}

fn open(dir: &std::path::Path, clock: &ManualClock) -> Queue {
    Queue::open_with(dir, common::opts(clock).max_attempts(2)).unwrap()
}

/// A handler that never returns on its own (blocked on a channel only the
/// end of the test releases) times out on each attempt: its lease is no
/// longer extended, so the job comes back once the queue's clock passes
/// it, and after its second attempt it is in the dead letters with the
/// queue's expiry error. Meanwhile the third worker serves fast jobs on
/// their first attempt, and the late outcomes are refused.
#[test]
fn a_hung_handler_times_out_and_its_job_dies_while_other_workers_serve() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let hung = q.enqueue(b"hang").unwrap();
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let hangs = Arc::new(AtomicU32::new(0));
    let saw_lost = Arc::new(AtomicU32::new(0));
    let fast_attempts = Arc::new(Mutex::new(Vec::new()));
    let pool = {
        let (hangs, saw_lost) = (hangs.clone(), saw_lost.clone());
        let fast_attempts = fast_attempts.clone();
        fast_pool(&q, 3, TIMEOUT)
            .start(move |ctx: &JobContext, payload: &[u8]| {
                if payload == b"hang" {
                    hangs.fetch_add(1, Ordering::SeqCst);
                    // Both hung attempts wait here (the second on the
                    // lock) until the test drops the sender (or well after
                    // the watchdogs failed it).
                    let _ = released.lock().unwrap().recv_timeout(LIVENESS * 3);
                    if ctx.lease_lost() {
                        saw_lost.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    fast_attempts.lock().unwrap().push(ctx.attempt());
                }
                Outcome::done()
            })
            .unwrap()
    };
    wait_until("the first attempt hangs", || {
        hangs.load(Ordering::SeqCst) == 1
    });
    // Without the timeout the heartbeat extends the lease for ever and
    // nothing is counted: this wait is where the test fails.
    wait_until("the first attempt timed out", || {
        pool.stats().timed_out == 1
    });
    // Past the lease's end in queue time: no longer extended, it runs out
    // and a second worker takes the job. (Advanced until then: an
    // extension sent just before the timeout may land after an advance.)
    wait_until("the second attempt hangs", || {
        clock.advance(Duration::from_secs(2));
        hangs.load(Ordering::SeqCst) == 2
    });
    wait_until("the second attempt timed out", || {
        pool.stats().timed_out == 2
    });
    wait_until("the job is in the dead letters", || {
        clock.advance(Duration::from_secs(2));
        q.dead_letter(hung).unwrap().is_some()
    });
    let dead = q.dead_letter(hung).unwrap().unwrap();
    assert_eq!(dead.error, "lease expired during attempt 2");
    assert_eq!(dead.attempts, 2);

    // Two workers are still stuck in their handlers; the third serves.
    assert_eq!(pool.stats().running, 2);
    for _ in 0..5 {
        q.enqueue(b"fast").unwrap();
    }
    wait_until("the fast jobs are done", || pool.stats().done == 5);
    assert_eq!(*fast_attempts.lock().unwrap(), vec![1; 5]);

    // Released at last: both late outcomes are refused.
    drop(release);
    wait_until("the late outcomes are counted", || pool.stats().lost == 2);
    let s = pool.shutdown(LIVENESS).stats;
    assert_eq!(saw_lost.load(Ordering::SeqCst), 2, "lease_lost() said so");
    assert_eq!(
        (s.leased, s.done, s.lost, s.timed_out, s.dead, s.retried),
        (7, 5, 2, 2, 0, 0),
        "{s:?}"
    );
    assert_eq!(accounted(&s), s.leased);
    let qs = q.stats();
    assert_eq!((qs.acked_total, qs.dead), (5, 1));
    assert_eq!(qs.ready + qs.delayed + qs.in_flight, 0);
}

/// A cooperative handler sees `lease_lost` once past its timeout and
/// returns `Done` while its lease is still valid in the queue (the queue's
/// clock stands still): that late outcome is refused all the same, counted
/// lost, and the job runs again once the lease has run out.
#[test]
fn a_late_outcome_is_refused_even_while_the_lease_is_still_valid() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let id = q.enqueue(b"late").unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let pool = {
        let attempts = attempts.clone();
        fast_pool(&q, 2, TIMEOUT)
            .start(move |ctx: &JobContext, _: &[u8]| {
                if ctx.attempt() == 1 {
                    block_until_lease_lost(ctx);
                }
                attempts.lock().unwrap().push(ctx.attempt());
                Outcome::done()
            })
            .unwrap()
    };
    wait_until("the late outcome is refused", || pool.stats().lost == 1);
    assert_eq!(
        q.stats().acked_total,
        0,
        "the first attempt's Done was refused"
    );
    // Queue time moves on only until the second attempt is leased, in
    // steps well under its one-second lease: advancing on (2 s a step, as
    // before) could run that lease out before its ack, and the job went to
    // the dead letters instead of done (seen once in CI, under load).
    wait_until("the job runs again", || {
        if pool.stats().leased < 2 {
            clock.advance(Duration::from_millis(100));
        }
        pool.stats().done == 1
    });
    let s = pool.shutdown(LIVENESS).stats;
    assert_eq!(
        (s.leased, s.done, s.lost, s.timed_out),
        (2, 1, 1, 1),
        "{s:?}"
    );
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2]);
    assert!(matches!(
        q.status(id).unwrap(),
        walq::JobStatus::Done { .. }
    ));
}

/// A handler that panics past its timeout: the attempt counts once in
/// `timed_out`, once in `panicked` (the handler did panic) and once in
/// `lost` (the late outcome is refused), as the async pool counts the
/// same panic in `timed_out`, `panicked` and `retried`
/// (`a_late_panic_of_a_future_that_blocks_past_its_timeout_is_counted`).
#[test]
fn a_panic_past_the_timeout_counts_as_panicked_and_lost() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    q.enqueue(b"late panic").unwrap();
    let pool = fast_pool(&q, 2, TIMEOUT)
        .start(|ctx: &JobContext, _: &[u8]| panic_past_timeout(ctx))
        .unwrap();
    wait_until("the late outcome is refused", || pool.stats().lost == 1);
    let s = pool.shutdown(LIVENESS).stats;
    assert_eq!(
        (s.leased, s.lost, s.panicked, s.timed_out, s.retried, s.dead),
        (1, 1, 1, 1, 0, 0),
        "{s:?}"
    );
    assert_eq!(accounted(&s), s.leased);
}

/// A handler that finishes within the timeout is not touched by it: its
/// lease is extended past several visibility timeouts of queue time, it
/// never sees `lease_lost`, and its outcome settles the job. (A guard
/// against a timeout that fires early, e.g. one counted in queue time or
/// from the last extension; it passes without the feature too.)
#[test]
fn a_handler_within_its_timeout_is_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let id = q.enqueue(b"slow but in time").unwrap();
    let (go, gone) = mpsc::channel::<()>();
    let gone = Mutex::new(gone);
    let lost = Arc::new(AtomicU32::new(0));
    let pool = {
        let lost = lost.clone();
        fast_pool(&q, 2, LIVENESS * 10)
            .start(move |ctx: &JobContext, _: &[u8]| {
                let _ = gone.lock().unwrap().recv_timeout(LIVENESS);
                if ctx.lease_lost() {
                    lost.fetch_add(1, Ordering::SeqCst);
                }
                Outcome::done()
            })
            .unwrap()
    };
    for _ in 0..4 {
        let seen = pool.stats().extended;
        wait_until("the heartbeat extended the lease", || {
            pool.stats().extended >= seen + 2
        });
        clock.advance(Duration::from_millis(600));
    }
    go.send(()).unwrap();
    wait_until("the job is done", || pool.stats().done == 1);
    let s = pool.shutdown(LIVENESS).stats;
    assert_eq!((s.leased, s.done, s.lost, s.timed_out), (1, 1, 0, 0));
    assert_eq!(lost.load(Ordering::SeqCst), 0);
    assert!(
        matches!(q.status(id).unwrap(), walq::JobStatus::Done { .. }),
        "the handler's outcome settled the job"
    );
}

#[test]
fn a_zero_or_huge_job_timeout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    for timeout in [
        Duration::ZERO,
        Duration::from_micros(999),
        MAX_JOB_TIMEOUT + Duration::from_secs(1),
        Duration::MAX,
    ] {
        let err = WorkerPool::builder(q.clone())
            .job_timeout(timeout)
            .start(|_: &JobContext, _: &[u8]| Outcome::done())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{timeout:?}: {err}");
    }
    let pool = WorkerPool::builder(q.clone())
        .job_timeout(MAX_JOB_TIMEOUT)
        .start(|_: &JobContext, _: &[u8]| Outcome::done())
        .unwrap();
    pool.shutdown(LIVENESS);
}

#[cfg(feature = "tokio")]
mod async_pool {
    use super::*;

    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + LIVENESS;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Counts its drop: the handler's future was dropped (cancelled).
    struct Dropped(Arc<AtomicU32>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A handler that awaits for ever is cancelled at the timeout, and the
    /// attempt fails at once: retried after the queue's backoff, then
    /// dead-lettered with "timed out after 50ms". The other task serves a
    /// fast job on its first attempt.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_that_awaits_for_ever_is_cancelled_and_its_job_dies() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let q = open(dir.path(), &clock);
        let hung = q.enqueue(b"hang").unwrap();
        let started = Arc::new(AtomicU32::new(0));
        let dropped = Arc::new(AtomicU32::new(0));
        let pool = {
            let (started, dropped) = (started.clone(), dropped.clone());
            hour_lease_pool(&q)
                .start_async(move |ctx: JobContext, payload: Vec<u8>| {
                    let (started, dropped) = (started.clone(), dropped.clone());
                    async move {
                        if payload == b"hang" {
                            started.fetch_add(1, Ordering::SeqCst);
                            let _guard = Dropped(dropped);
                            std::future::pending::<()>().await;
                        }
                        assert_eq!(ctx.attempt(), 1, "a fast job runs once");
                        Outcome::done()
                    }
                })
                .unwrap()
        };
        // Without the timeout the future is never dropped: the test fails
        // here.
        wait_until("the first attempt was cancelled", || {
            dropped.load(Ordering::SeqCst) == 1
        })
        .await;
        wait_until("the first attempt was retried", || {
            pool.stats().retried == 1
        })
        .await;
        // Past the backoff (at most an hour) in queue time; no lease is
        // held meanwhile (the job waits for its retry).
        clock.advance(Duration::from_secs(2 * 3600));
        wait_until("the job is in the dead letters", || {
            q.dead_letter(hung).unwrap().is_some()
        })
        .await;
        let dead = q.dead_letter(hung).unwrap().unwrap();
        assert_eq!(dead.error, "timed out after 50ms");
        assert_eq!(dead.attempts, 2);
        assert_eq!(
            (
                started.load(Ordering::SeqCst),
                dropped.load(Ordering::SeqCst)
            ),
            (2, 2)
        );

        q.enqueue(b"fast").unwrap();
        wait_until("the fast job is done", || pool.stats().done == 1).await;
        let s = pool.shutdown(LIVENESS).await.stats;
        assert_eq!(
            (s.leased, s.done, s.retried, s.dead, s.lost, s.timed_out),
            (3, 1, 1, 1, 0, 2),
            "{s:?}"
        );
        assert_eq!(accounted(&s), s.leased);
    }

    /// A job's status while it waits for its retry: not done, one attempt
    /// counted.
    fn waits_for_retry_after_one_attempt(q: &Queue, id: u64) {
        let status = q.status(id).unwrap();
        assert!(
            matches!(
                status,
                walq::JobStatus::Delayed { attempts: 1, .. }
                    | walq::JobStatus::Queued { attempts: 1 }
            ),
            "{status:?}"
        );
    }

    /// A future that is not cancellation-friendly: it blocks its thread
    /// (no `.await`) until its context says the timeout has passed, lands
    /// its side effect, and returns `Done`. The pool cannot drop it
    /// meanwhile (a future is dropped only between polls), so it returns
    /// on its own just past the timeout: that late `Done` must not
    /// complete the job. The attempt fails as a timeout (retried, counted
    /// once in `timed_out`), the side effect has landed all the same (the
    /// documented limitation: `provider_key` is what makes it safe to
    /// repeat), and the second attempt completes the job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_done_of_a_future_that_blocks_past_its_timeout_is_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let q = open(dir.path(), &clock);
        let id = q.enqueue(b"late").unwrap();
        let landed = Arc::new(Mutex::new(Vec::new()));
        let pool = {
            let landed = landed.clone();
            hour_lease_pool(&q)
                .start_async(move |ctx: JobContext, _: Vec<u8>| {
                    let landed = landed.clone();
                    async move {
                        if ctx.attempt() == 1 {
                            block_until_lease_lost(&ctx);
                        }
                        landed.lock().unwrap().push(ctx.attempt());
                        Outcome::done()
                    }
                })
                .unwrap()
        };
        wait_until("the late attempt is settled", || {
            let s = pool.stats();
            s.retried + s.done + s.lost + s.dead > 0
        })
        .await;
        let s = pool.stats();
        assert_eq!(
            (s.done, s.retried, s.timed_out, s.lost),
            (0, 1, 1, 0),
            "the late Done was not a retry: {s:?}"
        );
        assert_eq!(q.stats().acked_total, 0, "the late Done completed the job");
        waits_for_retry_after_one_attempt(&q, id);
        assert_eq!(*landed.lock().unwrap(), vec![1], "its side effect landed");
        // Past the backoff in queue time: the second attempt runs in time.
        clock.advance(Duration::from_secs(2 * 3600));
        wait_until("the job is done", || pool.stats().done == 1).await;
        let s = pool.shutdown(LIVENESS).await.stats;
        assert_eq!(
            (s.leased, s.done, s.retried, s.dead, s.lost, s.timed_out),
            (2, 1, 1, 0, 0, 1),
            "{s:?}"
        );
        assert_eq!(accounted(&s), s.leased);
        assert_eq!(*landed.lock().unwrap(), vec![1, 2]);
        assert!(matches!(
            q.status(id).unwrap(),
            walq::JobStatus::Done { .. }
        ));
    }

    /// A cooperative future that would complete just after its timeout: it
    /// awaits (so it can be dropped) until its context says the timeout
    /// has passed, then lands its side effect and returns `Done`. Whether
    /// the pool's timer drops it first or it returns first, the attempt is
    /// a timeout, never a completion: retried, then, on the last attempt,
    /// dead-lettered with `timed out after 50ms`, each attempt counted
    /// once. Its side effect lands at most once per attempt.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_future_completing_just_after_its_timeout_never_completes_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let q = open(dir.path(), &clock);
        let id = q.enqueue(b"just late").unwrap();
        let landed = Arc::new(AtomicU32::new(0));
        let pool = {
            let landed = landed.clone();
            hour_lease_pool(&q)
                .start_async(move |ctx: JobContext, _: Vec<u8>| {
                    let landed = landed.clone();
                    async move {
                        let deadline = Instant::now() + LIVENESS * 3;
                        while !ctx.lease_lost() && Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        landed.fetch_add(1, Ordering::SeqCst);
                        Outcome::done()
                    }
                })
                .unwrap()
        };
        wait_until("the first attempt is retried", || pool.stats().retried == 1).await;
        waits_for_retry_after_one_attempt(&q, id);
        clock.advance(Duration::from_secs(2 * 3600));
        wait_until("the job is in the dead letters", || {
            q.dead_letter(id).unwrap().is_some()
        })
        .await;
        let dead = q.dead_letter(id).unwrap().unwrap();
        assert_eq!(dead.error, "timed out after 50ms");
        assert_eq!(dead.attempts, 2);
        let s = pool.shutdown(LIVENESS).await.stats;
        assert_eq!(
            (s.leased, s.done, s.retried, s.dead, s.lost, s.timed_out),
            (2, 0, 1, 1, 0, 2),
            "{s:?}"
        );
        assert_eq!(accounted(&s), s.leased);
        assert_eq!(q.stats().acked_total, 0);
        assert!(landed.load(Ordering::SeqCst) <= 2);
    }

    /// What dropping a handler's future does not stop: a task it spawned.
    /// The handler spawns its side effect, which waits until the handler's
    /// future was dropped at the timeout and then lands. The attempt fails
    /// as a timeout all the same (retried, not done, counted once), while
    /// the side effect lands after it: the documented limitation (the
    /// handler owns what it spawns; `provider_key` makes a repeat safe).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_side_effect_spawned_by_a_cancelled_future_lands_after_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let q = open(dir.path(), &clock);
        let id = q.enqueue(b"spawns").unwrap();
        let dropped = Arc::new(AtomicU32::new(0));
        let landed = Arc::new(Mutex::new(Vec::new()));
        let pool = {
            let (dropped, landed) = (dropped.clone(), landed.clone());
            hour_lease_pool(&q)
                .start_async(move |ctx: JobContext, _: Vec<u8>| {
                    let (dropped, landed) = (dropped.clone(), landed.clone());
                    async move {
                        let _guard = Dropped(dropped.clone());
                        let effect = tokio::spawn(async move {
                            wait_until("the handler is dropped", || {
                                dropped.load(Ordering::SeqCst) == 1
                            })
                            .await;
                            landed.lock().unwrap().push(ctx.provider_key());
                        });
                        let _ = effect.await;
                        Outcome::done()
                    }
                })
                .unwrap()
        };
        wait_until("the side effect landed", || {
            landed.lock().unwrap().len() == 1
        })
        .await;
        wait_until("the attempt is settled", || {
            let s = pool.stats();
            s.retried + s.done + s.lost + s.dead > 0
        })
        .await;
        let s = pool.shutdown(LIVENESS).await.stats;
        assert_eq!(
            (s.leased, s.done, s.retried, s.lost, s.timed_out),
            (1, 0, 1, 0, 1),
            "{s:?}"
        );
        assert_eq!(accounted(&s), s.leased);
        waits_for_retry_after_one_attempt(&q, id);
        assert_eq!(*landed.lock().unwrap(), vec![q.provider_key(id)]);
    }
    /// A future that blocks its thread past its timeout and then panics:
    /// the attempt is the timeout's retry, and the panic still counts in
    /// `panicked`, once, as a thread pool counts a late panic
    /// (`a_panic_past_the_timeout_counts_as_panicked_and_lost`). Before,
    /// the async pool dropped it from `panicked`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_panic_of_a_future_that_blocks_past_its_timeout_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let q = open(dir.path(), &clock);
        let id = q.enqueue(b"late panic").unwrap();
        let pool = hour_lease_pool(&q)
            .start_async(|ctx: JobContext, _: Vec<u8>| async move { panic_past_timeout(&ctx) })
            .unwrap();
        wait_until("the late attempt is settled", || {
            let s = pool.stats();
            s.retried + s.done + s.lost + s.dead > 0
        })
        .await;
        let s = pool.shutdown(LIVENESS).await.stats;
        assert_eq!(
            (s.leased, s.retried, s.panicked, s.timed_out, s.lost, s.dead),
            (1, 1, 1, 1, 0, 0),
            "{s:?}"
        );
        assert_eq!(accounted(&s), s.leased);
        waits_for_retry_after_one_attempt(&q, id);
    }
}

/// At shutdown a job still running past its timeout is not released:
/// released, its attempt was given back, so a job that always hangs,
/// stopped by every deploy, never reached the dead letters. Its lease,
/// no longer extended, runs out with the attempt counted.
#[test]
fn shutdown_does_not_give_back_the_attempt_of_a_timed_out_job() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let id = q.enqueue(b"hang").unwrap();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let pool = fast_pool(&q, 1, TIMEOUT)
        .start(move |_: &JobContext, _: &[u8]| {
            let _ = released.lock().unwrap().recv_timeout(LIVENESS * 3);
            Outcome::done()
        })
        .unwrap();
    wait_until("the attempt timed out", || pool.stats().timed_out == 1);
    let report = pool.shutdown(Duration::from_millis(20));
    assert!(report.released.is_empty(), "{report:?}");
    assert!(
        matches!(
            q.status(id).unwrap(),
            walq::JobStatus::InFlight { attempt: 1, .. }
        ),
        "the lease is left to run out: {:?}",
        q.status(id).unwrap()
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        q.status(id).unwrap(),
        walq::JobStatus::Queued { attempts: 1 },
        "the attempt counted"
    );
    drop(release);
}
