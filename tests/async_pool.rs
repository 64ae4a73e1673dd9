//! The async (tokio) worker pool and `Queue::dequeue_async` keep the sync
//! pool's promises: dequeue waits without blocking a runtime thread,
//! shutdown releases running jobs at once, panics are failed attempts,
//! slow handlers keep their leases, lost leases are seen, typed handlers
//! decode (or dead-letter) their jobs. No test asserts a timing: bounds
//! are generous deadlines for liveness only.
#![cfg(feature = "tokio")]

mod common;
mod hooked_backend;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use walq::typed::Jobs;
use walq::worker::{JobContext, Outcome, PoolStats, WorkerPool};
use walq::{ManualClock, Options, Queue};

/// Generous: for liveness only, never a timing claim.
const LIVENESS: Duration = Duration::from_secs(60);

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + LIVENESS;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn accounted(s: &PoolStats) -> u64 {
    s.done + s.retried + s.dead + s.lost + s.released + s.settle_errors
}

fn real_clock_queue(dir: &std::path::Path, max_attempts: u32) -> Queue {
    let opts = Options::default()
        .segment_size(64 * 1024)
        .max_attempts(max_attempts);
    Queue::open_with(dir, opts).unwrap()
}

/// On a runtime with ONE thread, a pending `dequeue_async` must leave that
/// thread free: the enqueue that wakes it runs on the same thread. A
/// dequeue that blocked its thread (a condvar wait, `block_on`) would
/// never see the enqueue and the test would time out.
#[tokio::test(flavor = "current_thread")]
async fn dequeue_async_waits_without_blocking_the_runtime_and_wakes_on_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let q = real_clock_queue(dir.path(), 3);
    let waiter = {
        let q = q.clone();
        // An hour: only a wake ends this wait early.
        tokio::spawn(async move {
            q.dequeue_async(Duration::from_secs(30), Duration::from_secs(3600))
                .await
        })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished(), "nothing is ready: the dequeue waits");
    // On this same (only) runtime thread.
    let id = q.enqueue(b"wake up").unwrap();
    let job = tokio::time::timeout(LIVENESS, waiter)
        .await
        .expect("the enqueue woke the dequeue")
        .unwrap()
        .unwrap()
        .expect("a job");
    assert_eq!((job.id(), job.attempt()), (id, 1));
    q.ack(job.receipt()).unwrap();

    // An enqueue from another thread wakes it too.
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move {
            q.dequeue_async(Duration::from_secs(30), Duration::from_secs(3600))
                .await
        })
    };
    tokio::task::yield_now().await;
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || q.enqueue(b"from a thread").unwrap())
    };
    let job = tokio::time::timeout(LIVENESS, waiter)
        .await
        .expect("woken")
        .unwrap()
        .unwrap()
        .expect("a job");
    assert_eq!(job.id(), producer.join().unwrap());

    // A short wait with nothing ready ends with None.
    let none = q
        .dequeue_async(Duration::from_secs(30), Duration::from_millis(20))
        .await
        .unwrap();
    assert!(none.is_none());
}

/// A delayed job (and a nacked one) wakes the waiter by the timer, with no
/// enqueue to wake it; closing the queue ends the wait with an error.
#[tokio::test(flavor = "current_thread")]
async fn dequeue_async_wakes_when_a_delay_comes_due_and_when_the_queue_closes() {
    let dir = tempfile::tempdir().unwrap();
    let q = real_clock_queue(dir.path(), 3);
    let id = q
        .enqueue_with(
            b"later",
            walq::EnqueueOptions::new().delay(Duration::from_millis(50)),
        )
        .unwrap()
        .id;
    let job = q
        .dequeue_async(Duration::from_secs(30), LIVENESS)
        .await
        .unwrap()
        .expect("the delay came due");
    assert_eq!(job.id(), id);
    q.ack(job.receipt()).unwrap();

    let waiter = {
        let q = q.clone();
        tokio::spawn(async move { q.dequeue_async(Duration::from_secs(30), LIVENESS).await })
    };
    tokio::task::yield_now().await;
    q.close().unwrap();
    let err = tokio::time::timeout(LIVENESS, waiter)
        .await
        .expect("close woke the waiter")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), walq::ErrorKind::Closed);
}

/// Counts handler futures dropped before they finished.
struct DropCount(Arc<AtomicU32>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_running_async_jobs_at_once_with_the_attempt_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let q = real_clock_queue(dir.path(), 5);
    let a = q.enqueue(b"stuck a").unwrap();
    let b = q.enqueue(b"stuck b").unwrap();
    let dropped = Arc::new(AtomicU32::new(0));
    let saw_lost = Arc::new(AtomicU32::new(0));
    let pool = {
        let (dropped, saw_lost) = (dropped.clone(), saw_lost.clone());
        WorkerPool::builder(q.clone())
            .workers(3)
            .visibility(Duration::from_secs(600)) // expiry cannot explain a redelivery
            .start_async(move |ctx: JobContext, _payload: Vec<u8>| {
                let guard = DropCount(dropped.clone());
                let saw_lost = saw_lost.clone();
                async move {
                    // Never finishes on its own; watches its lease.
                    while !ctx.lease_lost() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    saw_lost.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                    drop(guard);
                    Outcome::done()
                }
            })
            .unwrap()
    };
    wait_until("both handlers run", || pool.stats().running == 2).await;
    let report = pool.shutdown(Duration::from_millis(50)).await;
    assert_eq!((report.running, report.finished), (2, 0));
    let mut released = report.released.clone();
    released.sort_unstable();
    assert_eq!(released, vec![a, b]);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "the stuck futures were dropped"
    );
    let s = report.stats;
    assert_eq!((s.leased, s.released, s.done, s.running), (2, 2, 0, 0));
    assert_eq!(accounted(&s), s.leased);
    // Ready again at once (not after the 600 s lease), attempt given back.
    let mut again: Vec<(u64, u32)> = common::lease_all(&q)
        .iter()
        .map(|j| (j.id(), j.attempt()))
        .collect();
    again.sort_unstable();
    assert_eq!(again, vec![(a, 1), (b, 1)]);
    // The contexts were told (seen before the futures were dropped, or
    // not at all if the abort came first: at most 2).
    assert!(saw_lost.load(Ordering::SeqCst) <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_async_handlers_finish_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let q = real_clock_queue(dir.path(), 5);
    q.enqueue(b"finishes").unwrap();
    let gate = Arc::new(tokio::sync::Notify::new());
    let (started, saw_stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let pool = {
        let (gate, started, saw_stop) = (gate.clone(), started.clone(), saw_stop.clone());
        WorkerPool::builder(q.clone())
            .workers(2)
            .start_async(move |ctx: JobContext, _payload: Vec<u8>| {
                let (gate, started, saw_stop) = (gate.clone(), started.clone(), saw_stop.clone());
                async move {
                    started.store(true, Ordering::SeqCst);
                    while !ctx.is_shutting_down() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    saw_stop.store(true, Ordering::SeqCst);
                    gate.notified().await;
                    Outcome::done()
                }
            })
            .unwrap()
    };
    wait_until("the handler runs", || started.load(Ordering::SeqCst)).await;
    let stopping = tokio::spawn(pool.shutdown(LIVENESS));
    wait_until("the handler sees the pool stopping", || {
        saw_stop.load(Ordering::SeqCst)
    })
    .await;
    // Stopping, the pool starts nothing new (a job leased in the race is
    // handed back unstarted, counted as released).
    q.enqueue(b"not leased").unwrap();
    gate.notify_one();
    let report = stopping.await.unwrap();
    assert_eq!((report.running, report.finished), (1, 1));
    assert!(report.released.is_empty());
    let s = report.stats;
    assert_eq!((s.done, s.leased - s.released), (1, 1));
    assert_eq!(q.stats().acked_total, 1);
    let left = common::lease_all(&q);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].payload(), b"not leased");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_async_handler_is_a_failed_attempt_with_the_panic_message() {
    let dir = tempfile::tempdir().unwrap();
    let q = real_clock_queue(dir.path(), 1); // one attempt: a failure is dead
    let in_future = q.enqueue(b"panic in the future").unwrap();
    let in_call = q.enqueue(b"panic in the call").unwrap();
    let fine = q.enqueue(b"fine").unwrap();
    let pool = WorkerPool::builder(q.clone())
        .workers(2)
        .start_async(|_ctx: JobContext, payload: Vec<u8>| {
            if payload == b"panic in the call" {
                panic!("boom before the future");
            }
            async move {
                tokio::task::yield_now().await;
                if payload == b"panic in the future" {
                    panic!("boom in the future");
                }
                Outcome::done()
            }
        })
        .unwrap();
    wait_until("all three settled", || pool.stats().processed() == 3).await;
    let s = pool.shutdown(LIVENESS).await.stats;
    assert_eq!((s.done, s.dead, s.panicked), (1, 2, 2));
    assert_eq!(accounted(&s), s.leased);
    let error = |id| q.dead_letter(id).unwrap().expect("dead").error;
    assert_eq!(error(in_future), "handler panicked: boom in the future");
    assert_eq!(error(in_call), "handler panicked: boom before the future");
    assert!(q.dead_letter(fine).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_async_handler_keeps_its_lease_past_several_visibility_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    q.enqueue(b"slow").unwrap();
    let gate = Arc::new(tokio::sync::Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let pool = {
        let (gate, runs) = (gate.clone(), runs.clone());
        WorkerPool::builder(q.clone())
            .workers(2) // an idle task would take the job if its lease expired
            .visibility(Duration::from_secs(1))
            .heartbeat(Duration::from_millis(5))
            .start_async(move |_ctx: JobContext, _payload: Vec<u8>| {
                let (gate, runs) = (gate.clone(), runs.clone());
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Outcome::done()
                }
            })
            .unwrap()
    };
    wait_until("the handler started", || runs.load(Ordering::SeqCst) == 1).await;
    for _ in 0..6 {
        // Two extensions after this point: at least one read the clock
        // after the last advance, so the lease runs to now + 1 s.
        let seen = pool.stats().extended;
        wait_until("the heartbeat extended the lease", || {
            pool.stats().extended >= seen + 2
        })
        .await;
        clock.advance(Duration::from_millis(600));
    }
    // 3.6 s of queue time have passed with a 1 s lease.
    assert_eq!(q.stats().in_flight, 1);
    gate.notify_one();
    wait_until("the job is done", || pool.stats().done == 1).await;
    let s = pool.shutdown(LIVENESS).await.stats;
    assert_eq!((s.leased, s.done, s.lost), (1, 1, 0));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "never run twice");
    assert_eq!(q.stats().acked_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_handler_sees_that_its_lease_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    q.enqueue(b"job").unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let saw_lost = Arc::new(AtomicBool::new(false));
    let pool = {
        let (started, saw_lost) = (started.clone(), saw_lost.clone());
        WorkerPool::builder(q.clone())
            .workers(2)
            .visibility(Duration::from_secs(1))
            .heartbeat(Duration::from_millis(5))
            .start_async(move |ctx: JobContext, _payload: Vec<u8>| {
                let (started, saw_lost) = (started.clone(), saw_lost.clone());
                async move {
                    if ctx.attempt() == 1 {
                        started.store(true, Ordering::SeqCst);
                        let deadline = Instant::now() + LIVENESS;
                        while !ctx.lease_lost() && Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        saw_lost.store(ctx.lease_lost(), Ordering::SeqCst);
                    }
                    Outcome::done()
                }
            })
            .unwrap()
    };
    wait_until("the first attempt runs", || started.load(Ordering::SeqCst)).await;
    // Past the deadline in one step: no heartbeat can save the lease.
    clock.advance(Duration::from_secs(2));
    wait_until("both attempts settled", || {
        let s = pool.stats();
        s.done + s.lost == 2
    })
    .await;
    let s = pool.shutdown(LIVENESS).await.stats;
    assert!(saw_lost.load(Ordering::SeqCst));
    assert_eq!(
        (s.leased, s.done, s.lost),
        (2, 1, 1),
        "the stale ack was refused"
    );
    assert_eq!(q.stats().acked_total, 1);
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Resize {
    photo: u64,
    width: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_async_handler_gets_values_and_dead_letters_what_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let q = real_clock_queue(dir.path(), 3);
    let resizes = Jobs::<Resize>::new(q.clone());
    let ok = resizes
        .enqueue(&Resize {
            photo: 7,
            width: 640,
        })
        .unwrap();
    let bad = q.enqueue(b"{\"photo\": \"seven\"}").unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pool = {
        let seen = seen.clone();
        WorkerPool::builder(q.clone())
            .workers(2)
            .start_async_typed(move |ctx: JobContext, job: Resize| {
                let seen = seen.clone();
                async move {
                    tokio::task::yield_now().await;
                    seen.lock().unwrap().push((ctx.id(), job));
                    Ok::<(), String>(())
                }
            })
            .unwrap()
    };
    wait_until("both settled", || pool.stats().processed() == 2).await;
    let s = pool.shutdown(LIVENESS).await.stats;
    assert_eq!((s.done, s.dead, s.panicked), (1, 1, 0));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(
            ok,
            Resize {
                photo: 7,
                width: 640
            }
        )]
    );
    let why = q.dead_letter(bad).unwrap().expect("dead").error;
    assert!(
        why.starts_with("payload does not decode as"),
        "decode error kept: {why}"
    );
}

#[test]
fn starting_an_async_pool_outside_a_runtime_is_refused_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let q = real_clock_queue(dir.path(), 3);
    let err = WorkerPool::builder(q)
        .start_async(|_ctx: JobContext, _p: Vec<u8>| async { Outcome::done() })
        .unwrap_err();
    assert_eq!(err.kind(), walq::ErrorKind::InvalidOptions);
}

/// As in the thread pool: a poll under a millisecond with a rate limit
/// panicked every task at its first wait for a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_rate_limit_with_a_poll_under_a_millisecond_keeps_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let payloads: Vec<Vec<u8>> = (0..10u32).map(|i| i.to_be_bytes().to_vec()).collect();
    q.enqueue_batch(&payloads).unwrap();
    let workers = 2;
    let pool = WorkerPool::builder(q.clone())
        .workers(workers)
        .rate_limit(walq::RateLimit::per_second(5).burst(5))
        .clock(clock.clone())
        .poll_interval(Duration::from_micros(500))
        .start_async(|_ctx: JobContext, _p: Vec<u8>| async { Outcome::done() })
        .unwrap();
    wait_until("the tasks wait for a token, alive", || {
        let s = pool.stats();
        s.done == 5 && s.throttled == workers as u64
    })
    .await;
    clock.advance(Duration::from_secs(1));
    wait_until("the next tick's tokens are used", || {
        pool.stats().done == 10
    })
    .await;
    let s = pool.shutdown(LIVENESS).await.stats;
    assert_eq!(accounted(&s), s.leased);
}

/// The async pool takes the same token bucket before each lease: counted
/// per tick of a manual clock, not timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_rate_limit_admits_exactly_the_tokens_of_each_tick() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let payloads: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_be_bytes().to_vec()).collect();
    q.enqueue_batch(&payloads).unwrap();
    let workers = 3;
    let pool = WorkerPool::builder(q.clone())
        .workers(workers)
        .rate_limit(walq::RateLimit::per_second(5).burst(5))
        .clock(clock.clone())
        .poll_interval(Duration::from_millis(2))
        .start_async(|_ctx: JobContext, _p: Vec<u8>| async { Outcome::done() })
        .unwrap();
    let mut expected = 5; // the bucket starts full
    for tick in 0..4 {
        wait_until("every task waits for a token", || {
            let s = pool.stats();
            s.done >= expected && s.throttled == workers as u64
        })
        .await;
        assert_eq!(pool.stats().done, expected, "tick {tick}");
        assert_eq!(q.stats().ready, 40 - expected);
        clock.advance(Duration::from_secs(1));
        expected += 5;
    }
    let s = pool.shutdown(LIVENESS).await.stats;
    assert_eq!(accounted(&s), s.leased);
}

/// A `Done` with a result waits for `done.rec`'s sync before its ack; the
/// heartbeat must keep the lease meanwhile, as the thread pool's settler
/// does. The async pool took the lease out of the task's slot before the
/// settle, so a disk slow for longer than the visibility timeout let the
/// lease run out: the finished job ran again and its ack was refused (a
/// review found it: 3 runs, 2 lost). Simulated file system with its syncs
/// held, manual clock: no timing decides the outcome.
#[test]
fn an_async_result_keeps_its_lease_while_its_result_is_synced() {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use walq::vfs::SimFs;
    let fs = SimFs::new();
    let clock = ManualClock::new(1_000_000);
    let opts = Options::default()
        .segment_size(256 * 1024)
        .durability(walq::Durability::Sync)
        .max_attempts(5)
        .clock(clock.clone());
    let q = Queue::open_on(Arc::new(fs.clone()), std::path::Path::new("/q"), opts).unwrap();
    q.enqueue(b"render invoice").unwrap();
    fs.pause_syncs(true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runs: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let pool = {
        let _rt = rt.enter();
        let runs = runs.clone();
        WorkerPool::builder(q.clone())
            .workers(2)
            .visibility(Duration::from_millis(300))
            .heartbeat(Duration::from_millis(20))
            .poll_interval(Duration::from_millis(5))
            .start_async(move |ctx: JobContext, _p: Vec<u8>| {
                let runs = runs.clone();
                async move {
                    *runs.lock().unwrap().entry(ctx.id()).or_default() += 1;
                    Outcome::done_with(b"invoice.pdf".to_vec())
                }
            })
            .unwrap()
    };
    let ran = || runs.lock().unwrap().values().sum::<u32>();
    let deadline = Instant::now() + LIVENESS;
    while ran() < 1 {
        assert!(Instant::now() < deadline, "the handler never ran");
        std::thread::sleep(Duration::from_millis(2));
    }
    fs.wait_paused_syncs(1);
    // 800 ms of the manual clock, over the 300 ms visibility, each step
    // after beats of the (real-time) heartbeat.
    for _ in 0..8 {
        let beats = pool.stats().extended;
        let deadline = Instant::now() + LIVENESS;
        while pool.stats().extended < beats + 2 {
            assert!(Instant::now() < deadline, "the heartbeat stopped extending");
            std::thread::sleep(Duration::from_millis(2));
        }
        clock.advance(Duration::from_millis(100));
    }
    fs.pause_syncs(false);
    let stats = rt.block_on(pool.shutdown(LIVENESS)).stats;
    assert_eq!(*runs.lock().unwrap(), BTreeMap::from([(1, 1)]), "ran once");
    assert_eq!((stats.done, stats.lost), (1, 0), "{stats:?}");
    assert_eq!(q.stats().acked_total, 1);
}

/// Panics in the first `release`; holds `alive` for as long as the pool
/// (any of its threads) holds the backend.
struct FirstReleasePanics {
    panicked: AtomicBool,
    _alive: Arc<()>,
}

impl hooked_backend::Hooks for FirstReleasePanics {
    fn before_release(&self) {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("release failed");
        }
    }
}

/// A backend whose `release` panics during shutdown must not leave the
/// heartbeat thread running: it kept the pool (and the queue) alive and
/// went on extending the lease of the other running job, which then never
/// came back (a review found it: the panic ended the shutdown's blocking
/// step before it stopped the heartbeat). The panic is a settle error; the
/// other job is released; nothing of the pool is left once `shutdown`
/// returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_panics_in_shutdown_leaves_no_heartbeat_behind() {
    let dir = tempfile::tempdir().unwrap();
    let q = real_clock_queue(dir.path(), 5);
    let jobs = [q.enqueue(b"a").unwrap(), q.enqueue(b"b").unwrap()];
    let alive = Arc::new(());
    let hooks = FirstReleasePanics {
        panicked: AtomicBool::new(false),
        _alive: alive.clone(),
    };
    let backend = hooked_backend::Hooked {
        q: q.clone(),
        hooks,
    };
    let pool = WorkerPool::builder(backend)
        .workers(2)
        .visibility(Duration::from_secs(600)) // expiry cannot explain a redelivery
        .heartbeat(Duration::from_millis(20))
        // Each stage of the shutdown waits one poll interval past its
        // deadline for its thread to exit: the release thread's panic
        // prints a backtrace, which on a loaded machine took longer than
        // the default 100 ms (CI saw the thread still running). It exits
        // within that wait, so the wait costs only what the thread takes.
        .poll_interval(Duration::from_secs(30))
        .start_async(|_: JobContext, _: Vec<u8>| std::future::pending::<Outcome>())
        .unwrap();
    wait_until("both handlers run", || pool.stats().running == 2).await;
    let report = pool.shutdown(Duration::from_millis(50)).await;
    assert_eq!(
        Arc::strong_count(&alive),
        1,
        "a thread of the pool still holds it after shutdown"
    );
    let s = report.stats;
    assert_eq!((s.leased, s.released, s.settle_errors), (2, 1, 1), "{s:?}");
    assert_eq!(report.released.len(), 1);
    // The released job is ready again, attempt given back; the other
    // stays leased until its lease expires, no longer extended.
    let again = common::lease_all(&q);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id(), again[0].attempt()), (report.released[0], 1));
    assert!(jobs.contains(&report.released[0]));
}

/// Delays each settle (`complete`, `retry`, `fail`) of the backend, and
/// says when one began.
struct SlowSettle {
    delay: Duration,
    entered: Arc<AtomicBool>,
}

impl hooked_backend::Hooks for SlowSettle {
    fn before_settle(&self, _id: u64) {
        self.entered.store(true, Ordering::SeqCst);
        std::thread::sleep(self.delay);
    }
}

/// A task still settling its job when shutdown's deadline passes keeps the
/// lease extended while shutdown waits for it, as a sync pool's worker
/// does. Before, the async shutdown stopped the heartbeat before it waited
/// for the tasks: a settle that outlasted the lease's remaining time found
/// it expired, and the job, done, was counted lost (and ran again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_settling_past_the_deadline_keeps_its_lease_extended() {
    let dir = tempfile::tempdir().unwrap();
    let q = real_clock_queue(dir.path(), 5);
    let id = q.enqueue(b"done, slowly recorded").unwrap();
    let entered = Arc::new(AtomicBool::new(false));
    let hooks = SlowSettle {
        // Far longer than the lease's 600 ms, well within the 30 s that
        // shutdown waits for the task (its poll interval; it returns as
        // soon as the task ends).
        delay: Duration::from_millis(1500),
        entered: entered.clone(),
    };
    let backend = hooked_backend::Hooked {
        q: q.clone(),
        hooks,
    };
    let pool = WorkerPool::builder(backend)
        .workers(1)
        .visibility(Duration::from_millis(600))
        .heartbeat(Duration::from_millis(50))
        .poll_interval(Duration::from_secs(30))
        .start_async(|_: JobContext, _: Vec<u8>| async { Outcome::done() })
        .unwrap();
    wait_until("the task's settle began", || entered.load(Ordering::SeqCst)).await;
    let report = pool.shutdown(Duration::from_millis(10)).await;
    let s = report.stats;
    assert_eq!((s.leased, s.done, s.lost), (1, 1, 0), "{s:?}");
    assert!(report.stuck.is_empty(), "{:?}", report.stuck);
    assert!(
        matches!(q.status(id).unwrap(), walq::JobStatus::Done { .. }),
        "{:?}",
        q.status(id)
    );
}

/// A runtime built without its timer is refused when the pool starts
/// (before: `start_async` returned `Ok`, the first idle wait panicked,
/// the task's error path panicked again and the task died for good, and
/// `shutdown` panicked too). So is `dequeue_async` when it would wait.
#[test]
fn a_runtime_without_a_timer_is_refused_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let started = rt.block_on(async {
        WorkerPool::builder(q.clone())
            .workers(1)
            .start_async(|_: JobContext, _: Vec<u8>| async { Outcome::done() })
            .map(|_| ())
    });
    let err = started.expect_err("a runtime without a timer");
    assert_eq!(err.kind(), walq::ErrorKind::InvalidOptions, "{err}");
    assert!(err.to_string().contains("enable_time"), "{err}");
    let waited = rt.block_on(q.dequeue_async(Duration::from_secs(30), Duration::from_secs(1)));
    let err = waited.expect_err("a wait without a timer");
    assert_eq!(err.kind(), walq::ErrorKind::InvalidOptions, "{err}");
}

/// A pool dropped without `shutdown`, then its runtime dropped (which
/// drops the running handler futures): the job is released at once, not
/// held leased, and extended, for the whole `shutdown_timeout` (an hour
/// here; before, the stop thread waited for runs that had ended with
/// their futures). The 60 s bound is liveness only.
#[test]
fn a_pool_dropped_with_its_runtime_releases_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let id = q.enqueue(b"dropped with the runtime").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let (tx, started) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let pool = rt
        .block_on(async {
            WorkerPool::builder(q.clone())
                .workers(1)
                .shutdown_timeout(Duration::from_secs(3600))
                .start_async(move |_: JobContext, _: Vec<u8>| {
                    tx.lock().unwrap().send(()).unwrap();
                    std::future::pending::<Outcome>()
                })
        })
        .unwrap();
    started.recv().unwrap();
    drop(pool);
    drop(rt);
    let bound = Instant::now() + Duration::from_secs(60);
    while matches!(q.status(id).unwrap(), walq::JobStatus::InFlight { .. }) {
        assert!(
            Instant::now() < bound,
            "the job stays leased with no handler"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        q.status(id).unwrap(),
        walq::JobStatus::Queued { attempts: 0 }
    );
}

/// An async pool is not started on a closed queue (`Closed`), and tasks
/// that stop because the queue was closed under the pool are counted in
/// `closed_exits`. Before, `start_async` returned `Ok` and its tasks
/// ended at their first lease, without a count or an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_pool_refuses_a_closed_queue_and_counts_tasks_a_close_stops() {
    let dir = tempfile::tempdir().unwrap();
    let q = real_clock_queue(dir.path(), 3);
    let pool = WorkerPool::builder(q.clone())
        .workers(2)
        .start_async(|_ctx: JobContext, _payload: Vec<u8>| async { Outcome::done() })
        .unwrap();
    q.close().unwrap();
    wait_until("every task saw the close", || {
        pool.stats().closed_exits == 2
    })
    .await;
    let report = pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.stats.closed_exits, 2, "{:?}", report.stats);
    assert_eq!(report.stats.lease_errors, 0, "a close is not a lease error");

    let err = WorkerPool::builder(q.clone())
        .workers(2)
        .start_async(|_ctx: JobContext, _payload: Vec<u8>| async { Outcome::done() })
        .unwrap_err();
    assert_eq!(err.kind(), walq::ErrorKind::Closed, "{err}");
}
