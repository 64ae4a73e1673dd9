//! The pool's batched settles keep every promise a direct settle kept: a
//! job counts as done only once its ack is durable, pending acks keep
//! their leases, shutdown settles every pending ack before it returns,
//! and the counters add up with many workers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use walq::vfs::{Fault, FaultOp, SimFs};
use walq::worker::{JobContext, JobStatus, Outcome, PoolStats, WorkerPool};
use walq::{Durability, ManualClock, Options, Queue};

mod hooked_backend;
use hooked_backend::{Hooked, Hooks};

/// Waits (up to a generous deadline, for liveness only) until `cond`.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits up to `limit` for `cond`; says whether it came.
fn wait_for(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Resumes paused syncs when dropped, so a failing assertion does not
/// leave the pool's shutdown waiting for a sync forever.
struct Unpause(SimFs);

impl Drop for Unpause {
    fn drop(&mut self) {
        self.0.pause_syncs(false);
    }
}

fn accounted(s: &PoolStats) -> u64 {
    s.done + s.retried + s.dead + s.lost + s.released + s.settle_errors
}

fn options(clock: &ManualClock) -> Options {
    Options::default()
        .segment_size(256 * 1024)
        .durability(Durability::Sync)
        .visibility_timeout(Duration::from_secs(3600))
        .max_attempts(3)
        .clock(clock.clone())
        .jitter_seed(7)
}

fn open_sim(fs: &SimFs, clock: &ManualClock) -> Queue {
    Queue::open_on(Arc::new(fs.clone()), Path::new("/q"), options(clock)).expect("open")
}

/// A queue on a new simulated file system, its clock at 1 000 000.
fn sim_queue() -> (SimFs, ManualClock, Queue) {
    let fs = SimFs::new();
    let clock = ManualClock::new(1_000_000);
    let q = open_sim(&fs, &clock);
    (fs, clock, q)
}

/// `workers` workers on `q` whose handler adds one to `ran`, then
/// returns `Done`.
fn counting_runs_in(q: &Queue, workers: usize, ran: &Arc<AtomicU64>) -> WorkerPool {
    let ran = ran.clone();
    WorkerPool::builder(q.clone())
        .workers(workers)
        .poll_interval(Duration::from_millis(5))
        .start(move |_: &JobContext, _: &[u8]| {
            ran.fetch_add(1, Ordering::SeqCst);
            Outcome::done()
        })
        .unwrap()
}

fn enqueue_n(q: &Queue, n: u64) -> Vec<u64> {
    (0..n)
        .map(|i| q.enqueue(format!("job {i}").as_bytes()).unwrap())
        .collect()
}

#[test]
fn an_ack_whose_sync_fails_is_not_counted_done_and_the_job_comes_back() {
    let (fs, clock, q) = sim_queue();
    enqueue_n(&q, 20);
    // Every sync from now on fails: no ack can become durable.
    fs.set_fault(Some(Fault {
        op: FaultOp::Sync,
        at: fs.op_count(FaultOp::Sync),
        forever: true,
        kind: std::io::ErrorKind::Other,
    }));
    let ran = Arc::new(AtomicU64::new(0));
    let pool = counting_runs_in(&q, 4, &ran);
    wait_until("an ack's sync failed", || pool.stats().settle_errors > 0);
    let report = pool.shutdown(Duration::from_secs(10));
    let s = report.stats;
    assert!(ran.load(Ordering::SeqCst) > 0);
    assert_eq!(s.done, 0, "no ack became durable, so none is done: {s:?}");
    assert_eq!(accounted(&s), s.leased, "{s:?}");
    assert_eq!(s.settle_errors, ran.load(Ordering::SeqCst), "{s:?}");
    drop(q);
    // After a power loss every job whose handler did not run is still
    // there (an ack written but never synced may or may not survive).
    let ran = ran.load(Ordering::SeqCst);
    for seed in 1..=4 {
        let q = open_sim(&fs.power_loss(seed), &clock);
        let st = q.stats();
        assert!(st.ready + ran >= 20 && st.ready <= 20, "{st:?}, ran {ran}");
    }
}

#[test]
fn jobs_count_done_only_once_their_acks_are_durable_and_shutdown_settles_the_rest() {
    let (fs, clock, q) = sim_queue();
    let n = 40;
    enqueue_n(&q, n);
    fs.pause_syncs(true);
    let ran = Arc::new(AtomicU64::new(0));
    let pool = counting_runs_in(&q, 4, &ran);
    let _unpause = Unpause(fs.clone());
    // Every handler returned while no sync could finish: none is done yet.
    wait_until("every handler ran", || ran.load(Ordering::SeqCst) == n);
    fs.wait_paused_syncs(1);
    assert_eq!(pool.stats().done, 0, "{:?}", pool.stats());
    assert_eq!(pool.stats().leased, n);
    // Shutdown waits for the pending acks; they settle once syncs resume.
    let stopping = std::thread::spawn(move || pool.shutdown(Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(20));
    fs.pause_syncs(false);
    let report = stopping.join().unwrap();
    let s = report.stats;
    assert_eq!((s.done, s.leased, accounted(&s)), (n, n, n), "{s:?}");
    assert_eq!(q.stats().acked_total, n);
    // And they are durable: a power loss now keeps them acked.
    let after = fs.power_loss(2);
    drop(q);
    let q = open_sim(&after, &clock);
    let st = q.stats();
    assert_eq!((st.ready, st.in_flight), (0, 0), "{st:?}");
}

#[test]
fn the_heartbeat_keeps_the_leases_of_acks_waiting_for_a_sync() {
    // Two workers run 30 jobs; all 30 acks wait in the settler (one in
    // the held sync, the rest queued), so each beat extends 30 leases.
    no_finished_job_runs_again(
        Case {
            jobs: 30,
            workers: 2,
            leases: 30,
        },
        Outcome::done,
        |fs, ran| {
            wait_until("every handler ran", || ran.load(Ordering::SeqCst) == 30);
            fs.wait_paused_syncs(1);
        },
    );
}

#[test]
fn counters_add_up_with_16_workers_and_batched_settles() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(
        dir.path(),
        Options::default()
            .durability(Durability::Sync)
            .max_attempts(2),
    )
    .unwrap();
    let n = 1500u64;
    let batch: Vec<Vec<u8>> = (0..n).map(|i| i.to_string().into_bytes()).collect();
    q.enqueue_batch(&batch).unwrap();
    // Of every 10 jobs: 1 fails, 1 retries once then completes, 1 retries
    // on both attempts (dead on the second), 1 panics once then completes.
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let pool = {
        let seen = seen.clone();
        WorkerPool::builder(q.clone())
            .workers(16)
            .poll_interval(Duration::from_millis(5))
            .start(move |ctx: &JobContext, p: &[u8]| {
                let i: u64 = std::str::from_utf8(p).unwrap().parse().unwrap();
                seen.lock().unwrap().insert((i, ctx.attempt()));
                match (i % 10, ctx.attempt()) {
                    (0, _) => Outcome::fail("bad"),
                    (1, 1) => Outcome::retry_after(Duration::ZERO, "flaky"),
                    (2, _) => Outcome::retry_after(Duration::ZERO, "always"),
                    (3, 1) => panic!("boom"),
                    _ => Outcome::done(),
                }
            })
            .unwrap()
    };
    let tenth = n / 10;
    let (done, dead) = (n - 2 * tenth, 2 * tenth);
    wait_until("every job settled", || {
        let s = pool.stats();
        s.done == done && s.dead == dead
    });
    let s = pool.shutdown(Duration::from_secs(30)).stats;
    assert_eq!(s.done, done, "{s:?}");
    assert_eq!(s.dead, dead, "{s:?}");
    assert_eq!(s.retried, 3 * tenth, "{s:?}");
    assert_eq!(s.panicked, tenth, "{s:?}");
    assert_eq!(s.leased, n + 3 * tenth, "{s:?}");
    assert_eq!((s.lost, s.settle_errors, s.released), (0, 0, 0), "{s:?}");
    assert_eq!(accounted(&s), s.leased, "{s:?}");
    assert_eq!(seen.lock().unwrap().len() as u64, s.leased);
    let st = q.stats();
    assert_eq!(st.acked_total, done);
    assert_eq!((st.ready, st.in_flight, st.delayed), (0, 0, 0), "{st:?}");
    assert_eq!(q.dead_letter_ids().len() as u64, dead);
}

/// The shape of one held-sync scenario.
struct Case {
    /// Jobs enqueued and run.
    jobs: u64,
    /// Workers in the pool.
    workers: usize,
    /// Leases each heartbeat extends once the case is in place.
    leases: u64,
}

/// `case.workers` workers run `case.jobs` jobs whose handler returns
/// `outcome()` while the file system holds every sync; `stuck` waits until
/// the case under test is in place. Then the held sync outlasts the
/// visibility timeout twice over, in steps of a third of it; after each
/// step, heartbeats extend every held lease (2 × the leases held: one
/// whole beat that began after the step, as a beat may take longer than a
/// step on a loaded machine). The leases held are counted at each step:
/// an ack the settler took into the held sync's batch holds none, and
/// waiting for its extension stalled the test for 10 s per step. The syncs resume, and every
/// job must be done exactly once, none run again or lost.
fn no_finished_job_runs_again(
    case: Case,
    outcome: fn() -> Outcome,
    stuck: impl FnOnce(&SimFs, &AtomicU64),
) {
    let (fs, clock, q) = sim_queue();
    let n = case.jobs;
    enqueue_n(&q, n);
    fs.pause_syncs(true);
    let runs = Arc::new(Mutex::new(std::collections::BTreeMap::<u64, u32>::new()));
    let ran = Arc::new(AtomicU64::new(0));
    let pool = {
        let (runs, ran) = (runs.clone(), ran.clone());
        WorkerPool::builder(q.clone())
            .workers(case.workers)
            .visibility(Duration::from_millis(300))
            .heartbeat(Duration::from_millis(20))
            .poll_interval(Duration::from_millis(5))
            .start(move |ctx: &JobContext, _: &[u8]| {
                *runs.lock().unwrap().entry(ctx.id()).or_default() += 1;
                ran.fetch_add(1, Ordering::SeqCst);
                outcome()
            })
            .unwrap()
    };
    let _unpause = Unpause(fs.clone());
    stuck(&fs, &ran);
    for _ in 0..6 {
        let seen = pool.stats().extended;
        // The leases the heartbeat must extend: at most `case.leases`,
        // fewer when the settler took acks into the held sync's batch
        // (their leases ended when their records were written).
        let held = q.stats().in_flight;
        assert!(held <= case.leases, "{held} leases held");
        clock.advance(Duration::from_millis(100));
        // Without extensions of the held leases this never comes, and
        // the acks are refused below (lost) once syncs resume.
        wait_for(Duration::from_secs(10), || {
            pool.stats().extended >= seen + 2 * held
        });
    }
    fs.pause_syncs(false);
    wait_until("every ack settled", || accounted(&pool.stats()) >= n);
    let s = pool.shutdown(Duration::from_secs(10)).stats;
    let runs = runs.lock().unwrap();
    let twice: Vec<_> = runs
        .iter()
        .filter(|(_, &r)| r > 1)
        .map(|(&id, _)| id)
        .collect();
    assert!(
        twice.is_empty() && s.lost == 0,
        "jobs run twice: {twice:?}; {s:?}"
    );
    assert_eq!((s.done, s.leased), (n, n), "{s:?}");
    assert_eq!(q.stats().acked_total, n);
}

/// A worker waiting for room in its window (512 acks unsettled) keeps the
/// lease of the job it just finished in its slot, where the heartbeat
/// extends it: before, the lease was in neither the slot nor the settler's
/// queue while it waited, a slow sync let it expire, the ack was refused
/// and the finished job ran again (found by review).
#[test]
fn a_worker_waiting_for_window_room_keeps_its_finished_jobs_lease() {
    // 512 acks unsettled (one batch held in its sync, the rest queued)
    // and the 513th finished job's lease in its worker's slot.
    let case = Case {
        jobs: 520,
        workers: 1,
        leases: 513,
    };
    no_finished_job_runs_again(case, Outcome::done, |_, ran| {
        wait_until("the window filled", || ran.load(Ordering::SeqCst) >= 513);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ran.load(Ordering::SeqCst), 513, "the window holds 512");
    });
}

/// An ack with a result is not appended at once when the settler takes
/// it: `ack_with_result` syncs the completion file first, then acks. The
/// leases of the batch being settled are extended too: before, they left
/// the settler's queue when taken, a slow sync let them expire, the ack
/// was refused and the job ran again (found by review).
#[test]
fn an_ack_with_a_result_keeps_its_lease_while_the_settler_syncs() {
    // All three acks are in the batch held in its sync (the first ack's
    // `done.rec` sync) or queued behind it.
    let case = Case {
        jobs: 3,
        workers: 1,
        leases: 3,
    };
    no_finished_job_runs_again(
        case,
        || Outcome::done_with(b"ok".to_vec()),
        |fs, ran| {
            wait_until("every handler ran", || ran.load(Ordering::SeqCst) == 3);
            fs.wait_paused_syncs(1);
        },
    );
}

/// A handler that succeeded with a result over the limit is failed with a
/// dead letter that says so, once: before, the ack was refused, the lease
/// left to expire and the job run again on every attempt (found by
/// review).
#[test]
fn a_done_with_an_oversized_result_is_failed_once_not_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path(), Options::default().max_attempts(3)).unwrap();
    let id = q.enqueue(b"x").unwrap();
    let ran = Arc::new(AtomicU64::new(0));
    let pool = {
        let ran = ran.clone();
        WorkerPool::builder(q.clone())
            .workers(1)
            .visibility(Duration::from_millis(100))
            .poll_interval(Duration::from_millis(5))
            .start(move |_: &JobContext, _: &[u8]| {
                ran.fetch_add(1, Ordering::SeqCst);
                Outcome::done_with(vec![0u8; walq::MAX_RESULT_LEN + 1])
            })
            .unwrap()
    };
    wait_until("the job is dead", || q.dead_letter(id).unwrap().is_some());
    let s = pool.shutdown(Duration::from_secs(5)).stats;
    let dead = q.dead_letter(id).unwrap().unwrap();
    assert!(
        dead.error.contains("over the 4096-byte limit"),
        "{}",
        dead.error
    );
    assert_eq!(dead.attempts, 1, "{s:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 1, "{s:?}");
    assert_eq!((s.dead, s.settle_errors), (1, 0), "{s:?}");
}

/// The first `panics` calls of `complete_batch` panic, as a buggy
/// backend's might: the first kills the pool's settler thread with a
/// batch of acks in hand.
struct PanicsInBatches {
    panics: AtomicU64,
}

impl PanicsInBatches {
    fn new(q: &Queue, panics: u64) -> Hooked<PanicsInBatches> {
        Hooked {
            q: q.clone(),
            hooks: PanicsInBatches {
                panics: AtomicU64::new(panics),
            },
        }
    }
}

impl Hooks for PanicsInBatches {
    fn before_complete_batch(&self) {
        let left = self.panics.load(Ordering::SeqCst);
        if left > 0 {
            self.panics.store(left - 1, Ordering::SeqCst);
            panic!("complete_batch panics ({left} more to go)");
        }
    }
}

#[test]
fn acks_held_by_a_settler_that_panicked_are_settled_not_kept_leased() {
    let (_fs, _clock, q) = sim_queue();
    let ids = enqueue_n(&q, 20);
    let backend = PanicsInBatches::new(&q, 1);
    let runs = Arc::new(Mutex::new(BTreeMap::<u64, u32>::new()));
    let pool = {
        let runs = runs.clone();
        WorkerPool::builder(backend)
            .workers(2)
            .poll_interval(Duration::from_millis(5))
            .heartbeat(Duration::from_millis(10))
            .start(move |ctx: &JobContext, _: &[u8]| {
                *runs.lock().unwrap().entry(ctx.id()).or_default() += 1;
                Outcome::done()
            })
            .unwrap()
    };
    // The clock never moves: no lease expires, so a job whose ack the
    // dead settler held is done only if that ack is settled.
    wait_until("every job is done", || {
        ids.iter()
            .all(|&id| matches!(q.status(id), Ok(JobStatus::Done { .. })))
    });
    let report = pool.shutdown(Duration::from_secs(10));
    let s = report.stats;
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), ids.len(), "every job ran");
    assert!(runs.values().all(|&n| n == 1), "no job ran twice: {runs:?}");
    assert_eq!((s.done, s.leased, accounted(&s)), (20, 20, 20), "{s:?}");
    assert_eq!(q.stats().in_flight, 0);
}

/// The backend panics again when the orphans of the dead settler are
/// settled: the panic must not escape (it would kill the heartbeat, or
/// unwind out of `shutdown`). The orphans are given up as settle errors;
/// every other job is done.
#[test]
fn a_backend_that_panics_again_on_the_orphans_gives_them_up_without_unwinding() {
    let (_fs, _clock, q) = sim_queue();
    let ids = enqueue_n(&q, 20);
    let pool = WorkerPool::builder(PanicsInBatches::new(&q, 2))
        .workers(2)
        .poll_interval(Duration::from_millis(5))
        .heartbeat(Duration::from_millis(10))
        .start(|_: &JobContext, _: &[u8]| Outcome::done())
        .unwrap();
    // Every job ran and was either acked or given up.
    wait_until("every job is settled", || {
        let s = pool.stats();
        s.done + s.settle_errors == ids.len() as u64
    });
    let report = pool.shutdown(Duration::from_secs(10));
    let s = report.stats;
    assert!(s.settle_errors >= 1, "the orphans were given up: {s:?}");
    assert_eq!((s.leased, accounted(&s)), (20, 20), "{s:?}");
    let done = ids
        .iter()
        .filter(|&&id| matches!(q.status(id), Ok(JobStatus::Done { .. })))
        .count() as u64;
    assert_eq!(done, s.done, "{s:?}");
    // The given-up jobs are still leased: they run again once their
    // leases expire.
    assert_eq!(q.stats().in_flight, s.settle_errors, "{s:?}");
}

/// One worker whose handler counts each job's runs in `runs`, then
/// returns `Done`.
fn counting_pool(q: &Queue, runs: &Arc<Mutex<BTreeMap<u64, u32>>>) -> WorkerPool {
    let runs = runs.clone();
    WorkerPool::builder(q.clone())
        .workers(1)
        .poll_interval(Duration::from_millis(5))
        .start(move |ctx: &JobContext, _: &[u8]| {
            *runs.lock().unwrap().entry(ctx.id()).or_default() += 1;
            Outcome::done()
        })
        .unwrap()
}

/// A worker whose handler returned `Done` waits for room while 512 of its
/// acks are not yet durable; a shutdown whose deadline passes meanwhile
/// must not release that job as if it were still running (a review found
/// it released, and so run again). The worker settles it itself once the
/// syncs resume, and every job ran exactly once.
#[test]
fn shutdown_does_not_release_a_job_whose_handler_returned() {
    let (fs, _clock, q) = sim_queue();
    let ids = enqueue_n(&q, 520);
    fs.pause_syncs(true);
    let unpause = Unpause(fs.clone());
    let runs: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let pool = counting_pool(&q, &runs);
    let ran = || runs.lock().unwrap().values().sum::<u32>();
    wait_until("a handler returned with 512 acks unsettled", || {
        ran() == 513
    });
    let ready = q.stats().ready;
    let stopper = std::thread::spawn(move || pool.shutdown(Duration::from_millis(50)));
    // Past the deadline: a release (a nack record) would show at once in
    // `ready`, its sync paused. (A slower machine makes this weaker, not
    // wrong.)
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(q.stats().ready, ready, "nothing was released");
    drop(unpause);
    let report = stopper.join().unwrap();
    assert!(report.released.is_empty(), "{:?}", report.released);
    assert_eq!(report.stats.done, 513, "{:?}", report.stats);
    // The rest run once each on a second pool; none of the first 513 again.
    let pool = counting_pool(&q, &runs);
    wait_until("every job ran", || ran() >= 520);
    pool.shutdown(Duration::from_secs(60));
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), ids.len());
    assert!(runs.values().all(|&n| n == 1), "a job ran twice: {runs:?}");
}
