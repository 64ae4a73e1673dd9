//! The worker pool keeps the queue's promises: leases sized per call and
//! extended while handlers run, lost leases seen, panics caught, graceful
//! shutdown, rate limits, and counters that add up.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use walq::worker::{JobContext, Outcome, PoolStats, RateLimit, WorkerPool};
use walq::{Backoff, EnqueueOptions, ErrorKind, ManualClock, Options, Queue};

/// Waits (up to a generous deadline, for liveness only) until `cond`.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A gate handlers block on until the test opens it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    fn wait(&self) {
        let (lock, cv) = &*self.0;
        let mut open = lock.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !*open && Instant::now() < deadline {
            open = cv.wait_timeout(open, Duration::from_millis(50)).unwrap().0;
        }
    }
}

fn accounted(s: &PoolStats) -> u64 {
    s.done + s.retried + s.dead + s.lost + s.released + s.settle_errors
}

#[test]
fn dequeue_for_sizes_the_lease_of_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock); // queue-wide timeout: 30 s
    let id = q.enqueue(b"transcode").unwrap();
    let job = q.dequeue_for(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!((job.id(), job.attempt()), (id, 1));
    clock.advance(Duration::from_millis(4_999));
    assert!(q.dequeue().unwrap().is_none(), "still leased");
    clock.advance(Duration::from_millis(1));
    let again = q.dequeue_for(Duration::from_secs(60)).unwrap().unwrap();
    assert_eq!(
        (again.id(), again.attempt()),
        (id, 2),
        "expired after 5 s, not 30 s"
    );
    assert_eq!(
        q.ack(job.receipt()).unwrap_err().kind(),
        ErrorKind::LeaseLost
    );
    q.ack(again.receipt()).unwrap();
    let err = q.dequeue_for(Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
    let err = q.dequeue_wait(Duration::ZERO, Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
}

#[test]
fn dequeue_wait_wakes_on_enqueue_and_leases_for_its_visibility() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let q = q.clone();
        std::thread::spawn(move || {
            tx.send(()).unwrap();
            q.dequeue_wait(Duration::from_secs(2), Duration::from_secs(60))
        })
    };
    rx.recv().unwrap();
    let id = q.enqueue(b"wake up").unwrap();
    let job = waiter
        .join()
        .unwrap()
        .unwrap()
        .expect("woken by the enqueue");
    assert_eq!(job.id(), id);
    clock.advance(Duration::from_secs(2));
    let again = q
        .dequeue_wait(Duration::from_secs(2), Duration::ZERO)
        .unwrap();
    assert_eq!(again.map(|j| j.attempt()), Some(2));
    assert!(q
        .dequeue_wait(Duration::from_secs(1), Duration::from_millis(1))
        .unwrap()
        .is_none());
}

#[test]
fn shutdown_releases_running_jobs_at_once_with_the_attempt_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let ids = [q.enqueue(b"a").unwrap(), q.enqueue(b"b").unwrap()];
    let gate = Gate::default();
    let (started, started_rx) = mpsc::channel();
    let saw_lost = Arc::new(AtomicU32::new(0));
    let pool = {
        let (gate, saw_lost) = (gate.clone(), saw_lost.clone());
        let started = Mutex::new(started);
        WorkerPool::builder(q.clone())
            .workers(2)
            .poll_interval(Duration::from_millis(5))
            .start(move |ctx: &JobContext, _: &[u8]| {
                started.lock().unwrap().send(ctx.id()).unwrap();
                gate.wait();
                if ctx.lease_lost() && ctx.is_shutting_down() {
                    saw_lost.fetch_add(1, Ordering::SeqCst);
                }
                Outcome::done()
            })
            .unwrap()
    };
    for _ in 0..2 {
        started_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    }
    // The handlers ignore the deadline; the clock has not moved, so no
    // lease could have expired: the jobs come back only by release.
    let report = pool.shutdown(Duration::from_millis(20));
    assert_eq!(report.running, 2);
    assert_eq!(report.finished, 0);
    let mut released = report.released.clone();
    released.sort_unstable();
    assert_eq!(released, ids);
    assert_eq!(report.stats.released, 2);
    let stats = q.stats();
    assert_eq!((stats.ready, stats.in_flight), (2, 0), "ready at once");
    let again = common::lease_all(&q);
    assert_eq!(
        again.iter().map(|j| j.attempt()).collect::<Vec<_>>(),
        [1, 1],
        "a stop is not the job's failure: the attempt is given back"
    );

    // The stragglers finish; their outcome is dropped, not applied.
    gate.open();
    wait_until("both handlers saw their lease lost", || {
        saw_lost.load(Ordering::SeqCst) == 2
    });
    for job in again {
        q.ack(job.receipt()).unwrap();
    }
    assert_eq!(q.stats().acked_total, 2);
}

#[test]
fn shutdown_lets_running_handlers_finish_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    q.enqueue(b"finish me").unwrap();
    q.enqueue(b"never started").unwrap();
    let (started, started_rx) = mpsc::channel();
    let pool = {
        let started = Mutex::new(started);
        WorkerPool::builder(q.clone())
            .workers(1)
            .start(move |ctx: &JobContext, _: &[u8]| {
                started.lock().unwrap().send(()).unwrap();
                // Finish only once the pool is stopping, so that a second
                // job could start only if shutdown failed to stop leasing.
                wait_until("the pool is stopping", || ctx.is_shutting_down());
                Outcome::done()
            })
            .unwrap()
    };
    started_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let report = pool.shutdown(Duration::from_secs(60));
    assert_eq!((report.running, report.finished), (1, 1));
    assert!(report.released.is_empty());
    assert_eq!((report.stats.leased, report.stats.done), (1, 1));
    let stats = q.stats();
    assert_eq!((stats.acked_total, stats.ready, stats.in_flight), (1, 1, 0));
}

#[test]
fn a_panicking_handler_is_a_failed_attempt_with_the_panic_message() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = Queue::open_with(dir.path(), common::opts(&clock).max_attempts(2)).unwrap();
    let bad = q.enqueue(b"panic").unwrap();
    let pool = WorkerPool::builder(q.clone())
        .workers(1) // the same thread must survive the panics
        .poll_interval(Duration::from_millis(5))
        .start(|ctx: &JobContext, payload: &[u8]| {
            if payload == b"panic" {
                panic!("boom on attempt {}", ctx.attempt());
            }
            Outcome::done()
        })
        .unwrap();
    wait_until("the first attempt failed", || pool.stats().retried == 1);
    assert_eq!(q.stats().delayed, 1, "retried after the backoff");
    clock.advance(Duration::from_secs(3600));
    wait_until("the second attempt failed", || pool.stats().dead == 1);
    q.enqueue(b"fine").unwrap();
    wait_until("the worker still runs jobs", || pool.stats().done == 1);
    let s = pool.shutdown(Duration::from_secs(60)).stats;
    assert_eq!((s.panicked, s.retried, s.dead, s.done), (2, 1, 1, 1));
    let dead = q.dead_letter(bad).unwrap().expect("dead letter");
    assert_eq!(dead.error, "handler panicked: boom on attempt 2");
    assert_eq!(dead.attempts, 2);
}

#[test]
fn a_slow_handler_keeps_its_lease_past_several_visibility_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let id = q.enqueue(b"slow").unwrap();
    let gate = Gate::default();
    let runs = Arc::new(AtomicU32::new(0));
    let pool = {
        let (gate, runs) = (gate.clone(), runs.clone());
        WorkerPool::builder(q.clone())
            .workers(2) // an idle worker would take the job if its lease expired
            .visibility(Duration::from_secs(1))
            .heartbeat(Duration::from_millis(5))
            .poll_interval(Duration::from_millis(5))
            .start(move |_: &JobContext, _: &[u8]| {
                runs.fetch_add(1, Ordering::SeqCst);
                gate.wait();
                Outcome::done()
            })
            .unwrap()
    };
    wait_until("the handler started", || runs.load(Ordering::SeqCst) == 1);
    for _ in 0..6 {
        // Two extensions after this point: at least one read the clock
        // after the last advance, so the lease runs to now + 1 s.
        let seen = pool.stats().extended;
        wait_until("the heartbeat extended the lease", || {
            pool.stats().extended >= seen + 2
        });
        clock.advance(Duration::from_millis(600));
    }
    // 3.6 s of queue time have passed with a 1 s lease.
    assert_eq!(q.stats().in_flight, 1);
    gate.open();
    wait_until("the job is done", || pool.stats().done == 1);
    let s = pool.shutdown(Duration::from_secs(60)).stats;
    assert_eq!((s.leased, s.done, s.lost), (1, 1, 0));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "never handed to a second worker"
    );
    let stats = q.stats();
    assert_eq!((stats.acked_total, stats.retried_total), (1, 0));
    assert!(q.dead_letter(id).unwrap().is_none());
}

#[test]
fn a_handler_sees_that_its_lease_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    q.enqueue(b"job").unwrap();
    let (started, started_rx) = mpsc::channel();
    let saw_lost = Arc::new(AtomicBool::new(false));
    let pool = {
        let saw_lost = saw_lost.clone();
        let started = Mutex::new(started);
        WorkerPool::builder(q.clone())
            .workers(2)
            .visibility(Duration::from_secs(1))
            .heartbeat(Duration::from_millis(5))
            .poll_interval(Duration::from_millis(5))
            .start(move |ctx: &JobContext, _: &[u8]| {
                if ctx.attempt() == 1 {
                    started.lock().unwrap().send(()).unwrap();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !ctx.lease_lost() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    saw_lost.store(ctx.lease_lost(), Ordering::SeqCst);
                }
                Outcome::done()
            })
            .unwrap()
    };
    started_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    // Past the deadline in one step: no heartbeat can save the lease.
    clock.advance(Duration::from_secs(2));
    wait_until("both attempts settled", || {
        let s = pool.stats();
        s.done + s.lost == 2
    });
    let s = pool.shutdown(Duration::from_secs(60)).stats;
    assert!(saw_lost.load(Ordering::SeqCst));
    assert_eq!(
        (s.leased, s.done, s.lost),
        (2, 1, 1),
        "the stale ack was refused"
    );
    assert_eq!(q.stats().acked_total, 1);
}

#[test]
fn a_rate_limit_admits_exactly_the_tokens_of_each_tick() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let payloads: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_be_bytes().to_vec()).collect();
    q.enqueue_batch(&payloads).unwrap();
    let workers = 3;
    let pool = WorkerPool::builder(q.clone())
        .workers(workers)
        .rate_limit(RateLimit::per_second(5).burst(5))
        .clock(clock.clone())
        .poll_interval(Duration::from_millis(2))
        .start(|_: &JobContext, _: &[u8]| Outcome::done())
        .unwrap();
    let mut expected = 5; // the bucket starts full
    for tick in 0..4 {
        wait_until("every worker waits for a token", || {
            let s = pool.stats();
            s.done >= expected && s.throttled == workers as u64
        });
        assert_eq!(pool.stats().done, expected, "tick {tick}");
        assert_eq!(q.stats().ready, 40 - expected);
        clock.advance(Duration::from_secs(1));
        expected += 5;
    }
    pool.shutdown(Duration::from_secs(60));
}

/// A poll interval under a millisecond is accepted, and a rate limit
/// with it must not kill the workers: the nap for a token was
/// `wait.clamp(1 ms, poll)`, which panics when the poll is the smaller.
#[test]
fn a_rate_limit_with_a_poll_under_a_millisecond_keeps_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let payloads: Vec<Vec<u8>> = (0..10u32).map(|i| i.to_be_bytes().to_vec()).collect();
    q.enqueue_batch(&payloads).unwrap();
    let workers = 2;
    let pool = WorkerPool::builder(q.clone())
        .workers(workers)
        .rate_limit(RateLimit::per_second(5).burst(5))
        .clock(clock.clone())
        .poll_interval(Duration::from_micros(500))
        .start(|_: &JobContext, _: &[u8]| Outcome::done())
        .unwrap();
    wait_until("the workers wait for a token, alive", || {
        let s = pool.stats();
        s.done == 5 && s.throttled == workers as u64
    });
    clock.advance(Duration::from_secs(1));
    wait_until("the next tick's tokens are used", || {
        pool.stats().done == 10
    });
    pool.shutdown(Duration::from_secs(60));
    assert_eq!(q.stats().ready, 0);
}

#[test]
fn a_handler_retry_waits_the_delay_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    q.enqueue(b"call the API").unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let pool = {
        let attempts = attempts.clone();
        WorkerPool::builder(q.clone())
            .workers(1)
            .poll_interval(Duration::from_millis(5))
            .start(move |ctx: &JobContext, _: &[u8]| {
                attempts.lock().unwrap().push(ctx.attempt());
                if ctx.attempt() == 1 {
                    Outcome::retry_after(Duration::from_secs(10), "429: retry after 10 s")
                } else {
                    Outcome::done()
                }
            })
            .unwrap()
    };
    wait_until("the first attempt asked for a retry", || {
        pool.stats().retried == 1
    });
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(q.stats().delayed, 1, "not due before 10 s");
    clock.advance(Duration::from_millis(1));
    wait_until("the retry ran", || pool.stats().done == 1);
    pool.shutdown(Duration::from_secs(60));
    assert_eq!(*attempts.lock().unwrap(), [1, 2]);
}

/// A retry delay over `MAX_RETRY_DELAY` (here `Duration::MAX`) is not
/// kept: the job is retried after the queue's backoff (1 s, no jitter),
/// its error saying so; a delay of exactly the limit is kept. Before,
/// `retry_after(Duration::MAX)` parked the job as delayed until
/// `u64::MAX` ms, never run again nor dead-lettered.
#[test]
fn a_retry_delay_over_the_limit_is_the_queues_backoff() {
    use walq::worker::{JobStatus, MAX_RETRY_DELAY};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let backoff = Backoff {
        initial: Duration::from_secs(1),
        jitter: 0.0,
        ..Backoff::default()
    };
    let opts = common::opts(&clock).max_attempts(2).backoff(backoff);
    let q = Queue::open_with(dir.path(), opts).unwrap();
    let forever = q.enqueue(b"forever").unwrap();
    let a_year = q.enqueue(b"a year").unwrap();
    let pool = WorkerPool::builder(q.clone())
        .workers(1)
        .poll_interval(Duration::from_millis(5))
        .start(
            |ctx: &JobContext, payload: &[u8]| match (payload, ctx.attempt()) {
                (b"forever", 1) => Outcome::retry_after(Duration::MAX, "later, much later"),
                (b"a year", 1) => Outcome::retry_after(MAX_RETRY_DELAY, "next year"),
                _ => Outcome::done(),
            },
        )
        .unwrap();
    wait_until("both jobs asked for a retry", || pool.stats().retried == 2);
    let due = |id| match q.status(id).unwrap() {
        JobStatus::Delayed { due_ms, .. } => due_ms,
        other => panic!("job {id} is not delayed: {other:?}"),
    };
    assert_eq!(due(forever), 1_000_000 + 1_000, "not the queue's backoff");
    let year_ms = u64::try_from(MAX_RETRY_DELAY.as_millis()).unwrap();
    assert_eq!(due(a_year), 1_000_000 + year_ms, "the limit itself is kept");
    clock.advance(Duration::from_secs(1));
    wait_until("the backed-off retry ran", || pool.stats().done == 1);
    pool.shutdown(Duration::from_secs(60));
    assert!(matches!(q.status(forever), Ok(JobStatus::Done { .. })));
}

#[test]
fn a_failed_job_goes_to_the_dead_letters_with_its_error_text() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let declined = q.enqueue(b"charge").unwrap();
    let last_try = q
        .enqueue_with(b"flaky", EnqueueOptions::new().max_attempts(1))
        .unwrap()
        .id;
    let pool = WorkerPool::builder(q.clone())
        .workers(2)
        .start(|_: &JobContext, payload: &[u8]| {
            if payload == b"charge" {
                Outcome::fail("card declined: insufficient funds")
            } else {
                Outcome::retry("gateway timeout")
            }
        })
        .unwrap();
    wait_until("both jobs are dead", || pool.stats().dead == 2);
    let s = pool.shutdown(Duration::from_secs(60)).stats;
    assert_eq!(
        (s.dead, s.retried, s.done),
        (2, 0, 0),
        "a retry on the last attempt is dead"
    );
    let dead = q.dead_letter(declined).unwrap().unwrap();
    assert_eq!(dead.error, "card declined: insufficient funds");
    assert_eq!(dead.attempts, 1);
    assert_eq!(
        q.dead_letter(last_try).unwrap().unwrap().error,
        "gateway timeout"
    );
}

#[test]
fn the_counters_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .durability(walq::Durability::Os)
        .segment_size(1 << 20)
        .max_attempts(2)
        .backoff(Backoff {
            initial: Duration::from_millis(1),
            multiplier: 1.0,
            max: Duration::from_millis(1),
            jitter: 0.0,
        });
    let q = Queue::open_with(dir.path(), opts).unwrap();
    let payloads: Vec<Vec<u8>> = (0..60u32).map(|i| i.to_string().into_bytes()).collect();
    q.enqueue_batch(&payloads).unwrap();
    let pool = WorkerPool::builder(q.clone())
        .workers(3)
        .poll_interval(Duration::from_millis(5))
        .start(|ctx: &JobContext, payload: &[u8]| {
            let n: u32 = std::str::from_utf8(payload).unwrap().parse().unwrap();
            match n % 5 {
                0 => panic!("job {n} panics"),
                1 => Outcome::fail("poison"),
                2 if ctx.attempt() == 1 => Outcome::retry_after(Duration::ZERO, "flaky"),
                _ => Outcome::done(),
            }
        })
        .unwrap();
    // 12 panic twice (retried, then dead), 12 fail, 12 retry once, 24 done.
    wait_until("every attempt is settled", || {
        pool.stats().processed() == 84
    });
    let s = pool.shutdown(Duration::from_secs(60)).stats;
    assert_eq!(s.leased, 84);
    assert_eq!((s.done, s.retried, s.dead, s.panicked), (36, 24, 24, 24));
    assert_eq!((s.lost, s.released, s.settle_errors), (0, 0, 0));
    assert_eq!(s.leased, accounted(&s));
    let stats = q.stats();
    assert_eq!(
        (stats.acked_total, stats.dead, stats.retried_total),
        (36, 24, 24)
    );
    assert_eq!(stats.ready + stats.delayed + stats.in_flight, 0);
}

#[test]
fn bad_pool_settings_are_refused_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let handler = |_: &JobContext, _: &[u8]| Outcome::done();
    let builders = [
        WorkerPool::builder(q.clone()).workers(0),
        WorkerPool::builder(q.clone()).workers(walq::worker::MAX_WORKERS + 1),
        WorkerPool::builder(q.clone()).visibility(Duration::ZERO),
        WorkerPool::builder(q.clone())
            .visibility(Duration::from_secs(1))
            .heartbeat(Duration::from_secs(1)),
        WorkerPool::builder(q.clone()).poll_interval(Duration::ZERO),
        // Intervals that would spin a thread.
        WorkerPool::builder(q.clone()).heartbeat(Duration::from_nanos(1)),
        WorkerPool::builder(q.clone()).poll_interval(Duration::from_nanos(1)),
        WorkerPool::builder(q.clone()).rate_limit(RateLimit::per_second(0)),
    ];
    for builder in builders {
        let err = builder.start(handler).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
    }
}

#[test]
fn a_stopped_pool_lets_go_of_the_queue_so_it_can_be_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    q.enqueue(b"one").unwrap();
    let pool = WorkerPool::builder(q.clone())
        .workers(3)
        .start(|_: &JobContext, _: &[u8]| Outcome::done())
        .unwrap();
    wait_until("the job is done", || pool.stats().done == 1);
    drop(pool); // no explicit shutdown: dropping stops and joins the threads
    drop(q);
    let q = common::open(dir.path(), &clock); // Locked if a thread still held it
    assert_eq!(q.stats().ready + q.stats().in_flight, 0);
}

/// A pool is not started on a closed queue: `start` fails with `Closed`.
/// Before, it returned `Ok` and its workers stopped at their first lease,
/// leaving a pool that did nothing, without a trace.
#[test]
fn a_pool_is_not_started_on_a_closed_queue() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    q.enqueue(b"never run").unwrap();
    q.close().unwrap();
    let err = WorkerPool::builder(q.clone())
        .workers(2)
        .start(|_: &JobContext, _: &[u8]| Outcome::done())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
}

/// Workers that stop because their queue was closed under the pool are
/// counted in `closed_exits` (live, and in the shutdown report). Before,
/// each worker left its loop without a count or an event.
#[test]
fn workers_stopped_by_a_closed_queue_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let pool = WorkerPool::builder(q.clone())
        .workers(3)
        .poll_interval(Duration::from_millis(5))
        .start(|_: &JobContext, _: &[u8]| Outcome::done())
        .unwrap();
    assert_eq!(pool.stats().closed_exits, 0);
    q.close().unwrap();
    wait_until("every worker saw the close", || {
        pool.stats().closed_exits == 3
    });
    let report = pool.shutdown(Duration::from_secs(5));
    assert_eq!(report.stats.closed_exits, 3, "{:?}", report.stats);
    assert_eq!(report.stats.lease_errors, 0, "a close is not a lease error");
    assert!(report.stuck.is_empty(), "{:?}", report.stuck);
}
