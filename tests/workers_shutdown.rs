//! Shutdown is bounded by its deadline even when a backend call never
//! returns: a settler blocked in `complete_batch`, or a worker blocked in
//! a settle or a lease, or the thread of shutdown's own `release` or
//! orphan `complete_batch` calls, is left detached and named in
//! `ShutdownReport::stuck`, and a job whose settle never finished is not
//! counted done. Each test blocks one call at a gate, and fails (through a
//! generous watchdog, not a hang) if `shutdown` waits for it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use walq::worker::{JobContext, Outcome, PoolBuilder, ShutdownReport, WorkerPool};
use walq::Queue;

mod gate;
mod hooked_backend;
use gate::{Gate, OpenOnDrop};
use hooked_backend::{Hooked, Hooks};

/// How long a test waits for anything before it fails (liveness only).
const WATCHDOG: Duration = Duration::from_secs(30);

/// Which call blocks at the gate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blocked {
    CompleteBatch,
    Settle,
    Lease,
    Release,
}

/// Blocks every `which` call at the gate once `armed`; counts the calls
/// made once `stopped` is set; sets `dropped` when the pool lets go of
/// its backend (its last thread exited).
struct Stall {
    which: Blocked,
    armed: AtomicBool,
    entered: Arc<AtomicBool>,
    gate: Arc<Gate>,
    stopped: Arc<AtomicBool>,
    late: Arc<AtomicU32>,
    dropped: Arc<AtomicBool>,
}

impl Stall {
    fn new(which: Blocked, gate: &Arc<Gate>) -> Stall {
        Stall {
            which,
            armed: AtomicBool::new(true),
            entered: Arc::default(),
            gate: gate.clone(),
            stopped: Arc::default(),
            late: Arc::default(),
            dropped: Arc::default(),
        }
    }

    fn call(&self, which: Blocked) {
        if self.stopped.load(Ordering::SeqCst) {
            self.late.fetch_add(1, Ordering::SeqCst);
        }
        if which == self.which && self.armed.load(Ordering::SeqCst) {
            self.entered.store(true, Ordering::SeqCst);
            self.gate.wait();
        }
    }
}

impl Hooks for Stall {
    fn before_complete_batch(&self) {
        self.call(Blocked::CompleteBatch);
    }
    fn before_settle(&self, _id: u64) {
        self.call(Blocked::Settle);
    }
    fn before_lease(&self) {
        self.call(Blocked::Lease);
    }
    fn before_release(&self) {
        self.call(Blocked::Release);
    }
    fn before_extend(&self) {
        if self.stopped.load(Ordering::SeqCst) {
            self.late.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// Waits for `done`, up to the watchdog.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Shuts `pool` down on another thread; fails the test if it has not
/// returned within the watchdog.
fn shutdown_within_watchdog<B: walq::worker::Backend>(
    pool: WorkerPool<B>,
    what: &str,
) -> ShutdownReport {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(pool.shutdown(Duration::from_millis(50)));
    });
    rx.recv_timeout(WATCHDOG)
        .unwrap_or_else(|_| panic!("shutdown waited for {what}"))
}

/// The report's stuck threads, one sentence each.
fn stuck_text(report: &ShutdownReport) -> String {
    let lines: Vec<String> = report.stuck.iter().map(|s| s.to_string()).collect();
    lines.join("; ")
}

/// A builder of a pool on `backend` with `workers` workers and the short
/// lease, heartbeat and poll intervals these tests use.
fn short_intervals<B: walq::worker::Backend>(
    backend: B,
    name: &str,
    workers: usize,
) -> PoolBuilder<B> {
    WorkerPool::builder(backend)
        .name(name)
        .workers(workers)
        .visibility(Duration::from_millis(300))
        .heartbeat(Duration::from_millis(5))
        .poll_interval(Duration::from_millis(5))
}

/// A queue in a new temporary directory, a gate, and a backend on the
/// queue whose `which` calls block at that gate.
fn stalled_backend(which: Blocked) -> (TempDir, Arc<Gate>, Hooked<Stall>) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let gate = Arc::new(Gate::default());
    let hooks = Stall::new(which, &gate);
    (dir, gate, Hooked { q, hooks })
}

/// What a sync test holds: the backend of [`stalled_backend`] shared with
/// its pool, its queue, the gate (opened however the test ends), and the
/// hooks' flags, which outlive the backend.
struct Stalled {
    backend: Arc<Hooked<Stall>>,
    _open: OpenOnDrop,
    gate: Arc<Gate>,
    q: Queue,
    stopped: Arc<AtomicBool>,
    late: Arc<AtomicU32>,
    dropped: Arc<AtomicBool>,
    _dir: TempDir,
}

impl Stalled {
    fn new(which: Blocked) -> Stalled {
        let (dir, gate, hooked) = stalled_backend(which);
        let hooks = &hooked.hooks;
        Stalled {
            stopped: hooks.stopped.clone(),
            late: hooks.late.clone(),
            dropped: hooks.dropped.clone(),
            q: hooked.q.clone(),
            _open: OpenOnDrop(gate.clone()),
            gate,
            backend: Arc::new(hooked),
            _dir: dir,
        }
    }

    /// Starts a pool of `workers` named `name` on the backend.
    fn pool(
        &self,
        name: &str,
        workers: usize,
        handler: impl Fn(&JobContext, &[u8]) -> Outcome + Send + Sync + 'static,
    ) -> WorkerPool<Arc<Hooked<Stall>>> {
        short_intervals(self.backend.clone(), name, workers)
            .start(handler)
            .unwrap()
    }

    /// Whether a call has reached the gate.
    fn entered(&self) -> bool {
        self.backend.hooks.entered.load(Ordering::SeqCst)
    }
}

/// A runtime for the async pools.
#[cfg(feature = "tokio")]
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Shuts the async `pool` down on another thread; fails the test if it
/// has not returned within the watchdog.
#[cfg(feature = "tokio")]
fn async_shutdown_within_watchdog<B: walq::worker::AsyncBackend>(
    rt: &tokio::runtime::Runtime,
    pool: walq::worker::AsyncWorkerPool<B>,
    what: &str,
) -> ShutdownReport {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = rt.handle().clone();
    std::thread::spawn(move || {
        let _ = tx.send(handle.block_on(pool.shutdown(Duration::from_millis(50))));
    });
    rx.recv_timeout(WATCHDOG)
        .unwrap_or_else(|_| panic!("shutdown waited for {what}"))
}

/// A settler blocked for good in `complete_batch` does not hold up
/// `shutdown`: it returns, names the settler, the call and the job, and
/// counts the job as a settle error, not done. Before, shutdown joined
/// the settler and waited as long as the backend did.
#[test]
fn shutdown_returns_and_names_a_settler_stuck_in_complete_batch() {
    let st = Stalled::new(Blocked::CompleteBatch);
    let id = st.q.enqueue(b"ack me").unwrap();
    let pool = st.pool("batch", 1, |_, _| Outcome::done());
    wait_for("the settler in complete_batch", || st.entered());
    let report = shutdown_within_watchdog(pool, "a settler stuck in complete_batch");
    st.stopped.store(true, Ordering::SeqCst);
    let stuck = stuck_text(&report);
    assert!(
        stuck.contains("batch-settler") && stuck.contains("complete_batch"),
        "the report does not name the stuck settler and its call: {stuck:?}"
    );
    assert!(stuck.contains(&id.to_string()), "{stuck:?}");
    let s = &report.stats;
    assert_eq!((s.leased, s.done, s.settle_errors), (1, 0, 1), "{s:?}");
    st.gate.open();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(st.late.load(Ordering::SeqCst), 0, "calls after shutdown");
}

/// A worker blocked for good in a settle (here `retry`) does not hold up
/// `shutdown`: the report names the worker, the call and the job, and
/// the job is counted a settle error, not retried. Before, shutdown
/// joined the worker for ever.
#[test]
fn shutdown_returns_and_names_a_worker_stuck_in_a_settle() {
    let st = Stalled::new(Blocked::Settle);
    let id = st.q.enqueue(b"retry me").unwrap();
    let pool = st.pool("settle", 1, |_, _| Outcome::retry("again"));
    wait_for("the worker in retry", || st.entered());
    let report = shutdown_within_watchdog(pool, "a worker stuck in retry");
    let stuck = stuck_text(&report);
    assert!(
        stuck.contains("settle-0") && stuck.contains("retry"),
        "the report does not name the stuck worker and its call: {stuck:?}"
    );
    assert!(stuck.contains(&id.to_string()), "{stuck:?}");
    let s = &report.stats;
    assert_eq!((s.leased, s.retried, s.settle_errors), (1, 0, 1), "{s:?}");
}

/// A worker blocked for good in `lease` does not hold up `shutdown`, and
/// once its call returns it makes no other backend call: the job that
/// call leased is neither run nor counted nor released; its lease runs
/// out and it is delivered again. Before, shutdown joined the worker for
/// ever.
#[test]
fn shutdown_returns_and_names_a_worker_stuck_in_a_lease() {
    let st = Stalled::new(Blocked::Lease);
    let runs = Arc::new(AtomicU32::new(0));
    let pool = {
        let runs = runs.clone();
        st.pool("lease", 1, move |_, _| {
            runs.fetch_add(1, Ordering::SeqCst);
            Outcome::done()
        })
    };
    wait_for("the worker in its lease", || st.entered());
    let report = shutdown_within_watchdog(pool, "a worker stuck in lease");
    let stuck = stuck_text(&report);
    assert!(
        stuck.contains("lease-0") && stuck.contains("Backend::lease"),
        "the report does not name the stuck worker and its call: {stuck:?}"
    );
    // The blocked call now leases a job, which the detached worker must
    // leave alone.
    let id = st.q.enqueue(b"leased by a detached worker").unwrap();
    st.stopped.store(true, Ordering::SeqCst);
    st.backend.hooks.armed.store(false, Ordering::SeqCst);
    st.gate.open();
    drop(st.backend);
    wait_for("the detached worker exited", || {
        st.dropped.load(Ordering::SeqCst)
    });
    assert_eq!(st.late.load(Ordering::SeqCst), 0, "calls after shutdown");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "a detached worker ran a job"
    );
    // The job comes back once the lease the stuck call took runs out.
    let deadline = Instant::now() + WATCHDOG;
    let job = loop {
        if let Some(job) = st.q.dequeue().unwrap() {
            break job;
        }
        assert!(Instant::now() < deadline, "the job never came back");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(job.id(), id);
    assert_eq!(report.stats.leased, 0, "{:?}", report.stats);
}

/// An async pool's worker task whose settle (on tokio's blocking pool) is
/// blocked for good does not hold up `shutdown`: the task is aborted, the
/// report names it and the call, and the job is counted a settle error.
/// Before, shutdown awaited the task for ever.
#[cfg(feature = "tokio")]
#[test]
fn async_shutdown_returns_and_names_a_task_stuck_in_a_settle() {
    let (_dir, gate, backend) = stalled_backend(Blocked::Settle);
    let id = backend.q.enqueue(b"retry me").unwrap();
    let entered = backend.hooks.entered.clone();
    let rt = runtime();
    // Dropped before the runtime, whose drop waits for the blocked call.
    let _open = OpenOnDrop(gate.clone());
    let pool = rt
        .block_on(async {
            short_intervals(backend, "asy", 1)
                .start_async(|_: JobContext, _: Vec<u8>| async { Outcome::retry("again") })
        })
        .unwrap();
    wait_for("the task's settle in retry", || {
        entered.load(Ordering::SeqCst)
    });
    let report = async_shutdown_within_watchdog(&rt, pool, "a task stuck in retry");
    let stuck = stuck_text(&report);
    assert!(
        stuck.contains("asy-0") && stuck.contains("retry"),
        "the report does not name the stuck task and its call: {stuck:?}"
    );
    assert!(stuck.contains(&id.to_string()), "{stuck:?}");
    let s = &report.stats;
    assert_eq!((s.leased, s.retried, s.settle_errors), (1, 0, 1), "{s:?}");
    gate.open();
    rt.shutdown_timeout(WATCHDOG);
}

/// A worker waiting for room among its acks (a window of 512) behind a
/// settler blocked for good does not hold up `shutdown` either: both are
/// given up, and every job leased is counted a settle error, none done
/// (the acks queued behind the stuck call included). Before, shutdown
/// joined that worker for ever.
#[test]
fn shutdown_gives_up_a_worker_waiting_for_room_behind_a_stuck_settler() {
    let st = Stalled::new(Blocked::CompleteBatch);
    let ids: Vec<u64> = (0..600).map(|_| st.q.enqueue(b"ack me").unwrap()).collect();
    let pool = st.pool("room", 1, |_, _| Outcome::done());
    // 512 acks unsettled (the batch in the stuck call and those queued),
    // and one more finished job waiting for room.
    wait_for("the worker at its window", || pool.stats().leased == 513);
    std::thread::sleep(Duration::from_millis(20));
    let report = shutdown_within_watchdog(pool, "a worker waiting behind a stuck settler");
    let stuck = stuck_text(&report);
    assert!(
        stuck.contains("room-settler") && stuck.contains("room-0"),
        "the report does not name the settler and the worker: {stuck:?}"
    );
    let s = &report.stats;
    assert_eq!((s.leased, s.done, s.settle_errors), (513, 0, 513), "{s:?}");
    assert!(stuck.contains(&ids[0].to_string()), "{stuck:?}");
}

/// Waits for the `n`th job back in `q` once its lease ran out or it was
/// released: returns the ids and attempts delivered, within the watchdog.
fn delivered_again(q: &Queue, n: usize) -> Vec<(u64, u32)> {
    let deadline = Instant::now() + WATCHDOG;
    let mut back = Vec::new();
    while back.len() < n {
        if let Some(job) = q.dequeue().unwrap() {
            back.push((job.id(), job.attempt()));
        }
        assert!(Instant::now() < deadline, "jobs never came back: {back:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    back.sort_unstable();
    back
}

/// Handlers still running at the deadline, and a backend whose `release`
/// never returns: `shutdown` gives up on the thread that releases them,
/// names it, its call and both jobs, and counts both as settle errors,
/// not released; the second release is never made. Each job is
/// delivered again: the one in the stuck call once it returns, its
/// attempt given back; the other once its lease runs out, its first
/// attempt counted. Before, shutdown
/// made the releases on its own thread and waited as long as the backend.
#[test]
fn shutdown_returns_and_names_a_release_that_never_returns() {
    let st = Stalled::new(Blocked::Release);
    let mut ids: Vec<u64> = (0..2).map(|_| st.q.enqueue(b"slow").unwrap()).collect();
    ids.sort_unstable();
    let started = Arc::new(AtomicU32::new(0));
    let pool = {
        let started = started.clone();
        st.pool("rel", 2, move |ctx, _| {
            started.fetch_add(1, Ordering::SeqCst);
            while !ctx.lease_lost() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Outcome::done()
        })
    };
    wait_for("both handlers running", || {
        started.load(Ordering::SeqCst) == 2
    });
    let report = shutdown_within_watchdog(pool, "a release that never returns");
    st.stopped.store(true, Ordering::SeqCst);
    let stuck = stuck_text(&report);
    assert!(
        stuck.contains("rel-release") && stuck.contains("Backend::release"),
        "the report does not name the release thread and its call: {stuck:?}"
    );
    let mut named: Vec<u64> = report.stuck.iter().flat_map(|s| s.jobs.clone()).collect();
    named.sort_unstable();
    assert_eq!(named, ids, "{stuck:?}");
    assert!(report.released.is_empty(), "{report:?}");
    assert_eq!((report.running, report.finished), (2, 0), "{report:?}");
    let s = &report.stats;
    assert_eq!(
        (s.leased, s.released, s.done, s.settle_errors),
        (2, 0, 0, 2),
        "{s:?}"
    );
    st.gate.open();
    drop(st.backend);
    wait_for("the detached threads exited", || {
        st.dropped.load(Ordering::SeqCst)
    });
    assert_eq!(st.late.load(Ordering::SeqCst), 0, "calls after shutdown");
    let back = delivered_again(&st.q, 2);
    let (mut again, mut attempts): (Vec<u64>, Vec<u32>) = back.into_iter().unzip();
    again.sort_unstable();
    attempts.sort_unstable();
    assert_eq!((again, attempts), (ids, vec![1, 2]));
}

/// The same in an async pool, whose releases ran on a blocking-pool
/// thread that `shutdown` awaited: it returns, names the release thread,
/// its call and the job, and counts the job a settle error. Before,
/// shutdown awaited that thread for ever.
#[cfg(feature = "tokio")]
#[test]
fn async_shutdown_returns_and_names_a_release_that_never_returns() {
    let (_dir, gate, backend) = stalled_backend(Blocked::Release);
    let id = backend.q.enqueue(b"slow").unwrap();
    let entered = backend.hooks.entered.clone();
    let rt = runtime();
    // Dropped before the runtime, whose drop waits for blocking threads.
    let _open = OpenOnDrop(gate.clone());
    let started = Arc::new(AtomicBool::new(false));
    let pool = {
        let started = started.clone();
        rt.block_on(async {
            short_intervals(backend, "arel", 1).start_async(move |ctx: JobContext, _: Vec<u8>| {
                let started = started.clone();
                async move {
                    started.store(true, Ordering::SeqCst);
                    while !ctx.lease_lost() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Outcome::done()
                }
            })
        })
        .unwrap()
    };
    wait_for("the handler running", || started.load(Ordering::SeqCst));
    let report = async_shutdown_within_watchdog(&rt, pool, "a release that never returns");
    assert!(entered.load(Ordering::SeqCst));
    let stuck = stuck_text(&report);
    assert!(
        stuck.contains("arel-release") && stuck.contains("Backend::release"),
        "the report does not name the release thread and its call: {stuck:?}"
    );
    assert!(stuck.contains(&id.to_string()), "{stuck:?}");
    assert!(report.released.is_empty(), "{report:?}");
    let s = &report.stats;
    assert_eq!((s.leased, s.released, s.settle_errors), (1, 0, 1), "{s:?}");
    gate.open();
    rt.shutdown_timeout(WATCHDOG);
}

/// Panics in the first `complete_batch` (killing the settler, whose acks
/// become orphans), then blocks every later one at the gate.
struct PanicThenBlock {
    calls: AtomicU32,
    gate: Arc<Gate>,
}

impl Hooks for PanicThenBlock {
    fn before_complete_batch(&self) {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("the settler's backend panicked (on purpose)");
        }
        self.gate.wait();
    }
}

/// After the settler panicked, shutdown settles the acks it left on a
/// thread of its own: when that `complete_batch` never returns, shutdown
/// gives up on it, names it, its call and the job, and counts the job a
/// settle error, not done; no further batch is tried. (The heartbeat,
/// which also settles orphans, beats too seldom here to come first.)
/// Before, shutdown made that call on its own thread and waited for it.
#[test]
fn shutdown_returns_and_names_an_orphan_complete_batch_that_never_returns() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let id = q.enqueue(b"ack me").unwrap();
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(gate.clone());
    let backend = Arc::new(Hooked {
        q: q.clone(),
        hooks: PanicThenBlock {
            calls: AtomicU32::new(0),
            gate: gate.clone(),
        },
    });
    let pool = WorkerPool::builder(backend.clone())
        .name("orph")
        .workers(1)
        .visibility(Duration::from_secs(20))
        .heartbeat(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(5))
        .start(|_: &JobContext, _: &[u8]| Outcome::done())
        .unwrap();
    wait_for("the settler panicked", || {
        backend.hooks.calls.load(Ordering::SeqCst) == 1
    });
    std::thread::sleep(Duration::from_millis(20));
    let report = shutdown_within_watchdog(pool, "an orphan complete_batch that never returns");
    let stuck = stuck_text(&report);
    assert!(
        stuck.contains("orph-orphans") && stuck.contains("complete_batch"),
        "the report does not name the orphans' thread and its call: {stuck:?}"
    );
    assert!(stuck.contains(&id.to_string()), "{stuck:?}");
    let s = &report.stats;
    assert_eq!((s.leased, s.done, s.settle_errors), (1, 0, 1), "{s:?}");
    gate.open();
    let calls = backend.hooks.calls.load(Ordering::SeqCst);
    drop(backend);
    assert_eq!(calls, 2, "complete_batch calls");
}

/// Panics in the first settle (`complete`, `retry` or `fail`), as a buggy
/// backend might; the later ones go through.
#[derive(Default)]
struct PanicsInFirstSettle {
    calls: Arc<AtomicU32>,
}

impl Hooks for PanicsInFirstSettle {
    fn before_settle(&self, _id: u64) {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("the backend's settle panicked (on purpose)");
        }
    }
}

/// Two jobs on a queue whose backend panics in the first settle, with a
/// lease long enough that the job of that settle does not come back
/// during the test.
fn two_jobs_and_a_panicking_settle() -> (TempDir, Hooked<PanicsInFirstSettle>) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    for _ in 0..2 {
        q.enqueue(b"fail me").unwrap();
    }
    let hooks = PanicsInFirstSettle::default();
    (dir, Hooked { q, hooks })
}

/// The counters of a pool whose backend panicked in one settle of two:
/// that job is a settle error (its lease runs out), the other one is
/// dead, and every job leased is counted.
fn assert_one_settle_error_one_dead(s: &walq::worker::PoolStats) {
    let accounted = s.done + s.retried + s.dead + s.lost + s.released + s.settle_errors;
    assert_eq!((s.leased, s.dead, s.settle_errors), (2, 1, 1), "{s:?}");
    assert_eq!(accounted, s.leased, "{s:?}");
}

/// A backend that panics in a worker's own settle (here `fail`) does not
/// kill the worker: the job is counted a settle error and the worker
/// settles its next job. Before, the panic ended the worker thread: the
/// job was counted nowhere, the pool ran one worker short (here none:
/// the second job was never leased), and `shutdown` waited its whole
/// deadline for a handler that no longer ran.
#[test]
fn a_settle_that_panics_is_a_settle_error_and_the_worker_goes_on() {
    let (_dir, backend) = two_jobs_and_a_panicking_settle();
    let calls = backend.hooks.calls.clone();
    let pool = WorkerPool::builder(backend)
        .name("pan")
        .workers(1)
        .visibility(Duration::from_secs(30))
        .poll_interval(Duration::from_millis(5))
        .start(|_: &JobContext, _: &[u8]| Outcome::fail("no"))
        .unwrap();
    wait_for("the second settle", || calls.load(Ordering::SeqCst) == 2);
    wait_for("both jobs counted", || {
        let s = pool.stats();
        s.dead + s.settle_errors == 2
    });
    let report = shutdown_within_watchdog(pool, "a worker after a panicking settle");
    assert_eq!(report.running, 0, "{report:?}");
    assert_one_settle_error_one_dead(&report.stats);
}

/// The same in an async pool, whose settles run on tokio's blocking
/// pool: the task goes on settling its next jobs. Before, the panic left
/// the task's call state in `fail` for good, so that it refused every
/// later settle without making it (each counted a settle error): its
/// jobs ran, were never acked, and ran again once their leases ran out.
#[cfg(feature = "tokio")]
#[test]
fn an_async_settle_that_panics_is_a_settle_error_and_the_task_goes_on() {
    let (_dir, backend) = two_jobs_and_a_panicking_settle();
    let calls = backend.hooks.calls.clone();
    let rt = runtime();
    let pool = rt
        .block_on(async {
            WorkerPool::builder(backend)
                .name("apan")
                .workers(1)
                .visibility(Duration::from_secs(30))
                .poll_interval(Duration::from_millis(5))
                .start_async(|_: JobContext, _: Vec<u8>| async { Outcome::fail("no") })
        })
        .unwrap();
    wait_for("both jobs counted", || {
        let s = pool.stats();
        s.dead + s.settle_errors == 2
    });
    assert_eq!(calls.load(Ordering::SeqCst), 2, "settle calls made");
    let report = async_shutdown_within_watchdog(&rt, pool, "a task after a panicking settle");
    assert_one_settle_error_one_dead(&report.stats);
    rt.shutdown_timeout(WATCHDOG);
}

/// Panics in the first lease, as a buggy backend might; the later ones go
/// through.
#[derive(Default)]
struct PanicsInFirstLease {
    calls: Arc<AtomicU32>,
}

impl Hooks for PanicsInFirstLease {
    fn before_lease(&self) {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("the backend's lease panicked (on purpose)");
        }
    }
}

/// A queue with one job, behind a backend whose first lease panics.
fn a_job_and_a_panicking_lease() -> (TempDir, Hooked<PanicsInFirstLease>) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    q.enqueue(b"run me").unwrap();
    let hooks = PanicsInFirstLease::default();
    (dir, Hooked { q, hooks })
}

/// A backend that panics in a lease does not kill the worker: it counts a
/// lease error and the worker leases again. Before, the panic ended the
/// pool's only worker and the job was never run.
#[test]
fn a_lease_that_panics_is_a_lease_error_and_the_worker_goes_on() {
    let (_dir, backend) = a_job_and_a_panicking_lease();
    let pool = WorkerPool::builder(backend)
        .name("lpan")
        .workers(1)
        .poll_interval(Duration::from_millis(5))
        .start(|_: &JobContext, _: &[u8]| Outcome::done())
        .unwrap();
    wait_for("the job done", || pool.stats().done == 1);
    let report = shutdown_within_watchdog(pool, "a worker after a panicking lease");
    assert_eq!((report.stats.lease_errors, report.stats.done), (1, 1));
}

/// The same in an async pool: the task goes on. Before, the panic ended
/// the pool's only task and the job was never run.
#[cfg(feature = "tokio")]
#[test]
fn an_async_lease_that_panics_is_a_lease_error_and_the_task_goes_on() {
    let (_dir, backend) = a_job_and_a_panicking_lease();
    let rt = runtime();
    let pool = rt
        .block_on(async {
            WorkerPool::builder(backend)
                .name("alpan")
                .workers(1)
                .poll_interval(Duration::from_millis(5))
                .start_async(|_: JobContext, _: Vec<u8>| async { Outcome::done() })
        })
        .unwrap();
    wait_for("the job done", || pool.stats().done == 1);
    let report = async_shutdown_within_watchdog(&rt, pool, "a task after a panicking lease");
    assert_eq!((report.stats.lease_errors, report.stats.done), (1, 1));
    rt.shutdown_timeout(WATCHDOG);
}

/// Blocks the second `lease` call at a gate, and, if `release_stuck`,
/// every `release` for good.
#[derive(Default)]
struct SecondLease {
    leases: AtomicU32,
    entered: AtomicBool,
    lease_gate: Arc<Gate>,
    release_stuck: bool,
    release_gate: Arc<Gate>,
    released_entered: AtomicBool,
}

impl Hooks for SecondLease {
    fn before_lease(&self) {
        if self.leases.fetch_add(1, Ordering::SeqCst) == 1 {
            self.entered.store(true, Ordering::SeqCst);
            self.lease_gate.wait();
        }
    }
    fn before_release(&self) {
        self.released_entered.store(true, Ordering::SeqCst);
        if self.release_stuck {
            self.release_gate.wait();
        }
    }
}

/// Every leased job's outcome, as counted.
fn accounted_of(s: &walq::worker::PoolStats) -> u64 {
    s.done + s.retried + s.dead + s.lost + s.released + s.settle_errors
}

/// Two workers: one runs a job until shutdown begins, then lets the
/// other's lease (blocked at the gate) take a second job, leased as the
/// pool stops. Returns the shutdown's report, and the status of that
/// second job after it.
fn lease_as_the_pool_stops(release_stuck: bool) -> (ShutdownReport, walq::JobStatus) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let hooks = SecondLease {
        release_stuck,
        ..SecondLease::default()
    };
    let (lease_gate, release_gate) = (hooks.lease_gate.clone(), hooks.release_gate.clone());
    let _o1 = OpenOnDrop(lease_gate.clone());
    let _o2 = OpenOnDrop(release_gate.clone());
    let backend = Arc::new(Hooked {
        q: q.clone(),
        hooks,
    });
    q.enqueue(b"a").unwrap();
    let gate = lease_gate.clone();
    let pool = WorkerPool::builder(backend.clone())
        .name("late")
        .workers(2)
        .visibility(Duration::from_millis(300))
        .heartbeat(Duration::from_millis(5))
        .poll_interval(Duration::from_millis(5))
        .start(move |ctx: &JobContext, _: &[u8]| {
            let deadline = Instant::now() + WATCHDOG;
            while !ctx.is_shutting_down() {
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(1));
            }
            gate.open();
            Outcome::done()
        })
        .unwrap();
    wait_for("second lease blocked", || {
        backend.hooks.entered.load(Ordering::SeqCst) && pool.stats().leased == 1
    });
    let second = q.enqueue(b"b").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(pool.shutdown(Duration::from_secs(2)));
    });
    let report = rx.recv_timeout(WATCHDOG).expect("shutdown hung");
    assert!(backend.hooks.released_entered.load(Ordering::SeqCst));
    (report, q.status(second).unwrap())
}

/// A job leased as the pool stops is kept in its worker's slot and
/// released by the worker, counted once, and its attempt given back: it
/// never ran (before, the release counted it, and on a last attempt the
/// job went to the dead letters without running).
#[test]
fn a_job_leased_as_the_pool_stops_is_released() {
    let (report, second) = lease_as_the_pool_stops(false);
    let s = &report.stats;
    assert_eq!((s.leased, s.done, s.released), (2, 1, 1), "{report:?}");
    assert_eq!(accounted_of(s), s.leased, "{s:?}");
    assert!(report.stuck.is_empty(), "{report:?}");
    assert_eq!(second, walq::JobStatus::Queued { attempts: 0 });
}

/// If that release never returns, shutdown gives the worker up and
/// counts the job once, a settle error (the call's job is the slot's).
#[test]
fn a_job_leased_as_the_pool_stops_whose_release_sticks_is_counted_once() {
    let (report, _) = lease_as_the_pool_stops(true);
    let s = &report.stats;
    assert_eq!((s.leased, s.done, s.settle_errors), (2, 1, 1), "{report:?}");
    assert_eq!(accounted_of(s), s.leased, "{s:?}");
    assert_eq!(report.stuck.len(), 1, "{report:?}");
}

/// A job whose handler had not finished when the shutdown's deadline
/// passed is released on its last attempt: it is queued again, reported
/// released, not dead (before: `report.released` named it while the
/// release had sent it to the dead letters).
#[test]
fn a_job_released_at_shutdown_on_its_last_attempt_stays_queued() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path(), walq::Options::default().max_attempts(1)).unwrap();
    let id = q.enqueue(b"long job").unwrap();
    let (started_tx, started) = std::sync::mpsc::channel();
    let finish = Arc::new(Gate::default());
    let _open = OpenOnDrop(finish.clone());
    let gate = finish.clone();
    let started_tx = std::sync::Mutex::new(started_tx);
    let pool = WorkerPool::builder(q.clone())
        .workers(1)
        .start(move |_: &JobContext, _: &[u8]| {
            started_tx.lock().unwrap().send(()).unwrap();
            gate.wait();
            Outcome::done()
        })
        .unwrap();
    started.recv_timeout(WATCHDOG).expect("the handler started");
    let report = pool.shutdown(Duration::ZERO);
    finish.open();
    assert_eq!(report.released, vec![id], "{report:?}");
    assert_eq!((report.stats.released, report.stats.dead), (1, 0));
    assert_eq!(
        q.status(id).unwrap(),
        walq::JobStatus::Queued { attempts: 0 }
    );
    assert_eq!(q.stats().dead, 0);
}

/// Counts the leases the pool's workers begin.
struct CountLeases(Arc<AtomicU32>);

impl Hooks for CountLeases {
    fn before_lease(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Shutting an idle pool down wakes its workers blocked in `lease` (the
/// queue's own wait for a job): `Backend::wake_waiters` ends their
/// `lease_until_stopped` at once. Before, each waited out its poll
/// interval; with the longest one (`MAX_POLL_INTERVAL`, 60 s) shutdown
/// took up to a minute, so the watchdog (30 s, under that interval) fails
/// this test instead of it hanging: a bound for liveness, no timing claim.
#[test]
fn an_idle_pools_shutdown_wakes_its_workers_blocked_in_lease() {
    let dir = tempfile::tempdir().unwrap();
    // A queue's wait for a job looks again within its visibility timeout
    // (default 30 s): an hour, so that only the poll interval or a wake
    // ends the workers' wait.
    let opts = walq::Options::default().visibility_timeout(Duration::from_secs(3600));
    let q = Queue::open_with(dir.path(), opts).unwrap();
    let leases = Arc::new(AtomicU32::new(0));
    let backend = Hooked {
        q: q.clone(),
        hooks: CountLeases(leases.clone()),
    };
    let pool = WorkerPool::builder(backend)
        .name("idle")
        .workers(3)
        .poll_interval(walq::worker::MAX_POLL_INTERVAL)
        .start(|_: &JobContext, _: &[u8]| Outcome::done())
        .unwrap();
    // Each worker is in (or entering) its first lease; none has a job.
    wait_for("every worker leasing", || {
        leases.load(Ordering::SeqCst) == 3
    });
    let report = shutdown_within_watchdog(pool, "idle workers to end their poll wait");
    assert!(report.stuck.is_empty(), "{}", stuck_text(&report));
    assert_eq!(report.stats.leased, 0, "{:?}", report.stats);
    // The woken leases took nothing: every worker leased once.
    assert_eq!(leases.load(Ordering::SeqCst), 3);
}

/// A handler that shuts its own pool down (a "stop job"): shutdown does
/// not wait for that handler nor release its job; the handler's `Done`
/// is then settled by its worker, so the stop job is not run again.
/// Before, shutdown waited its whole deadline (an hour here: the
/// watchdog fails the test instead) for the very handler calling it,
/// then released its job and dropped its `Done`.
#[test]
fn a_handler_that_shuts_its_own_pool_down_completes_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let slot: Arc<std::sync::Mutex<Option<WorkerPool>>> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let pool = {
        let (slot, tx) = (slot.clone(), std::sync::Mutex::new(tx));
        WorkerPool::builder(q.clone())
            .name("stopper")
            .workers(2)
            .start(move |ctx: &JobContext, _: &[u8]| {
                let pool = slot.lock().unwrap().take();
                if let Some(pool) = pool {
                    let report = pool.shutdown(Duration::from_secs(3600));
                    let seen = (ctx.is_shutting_down(), ctx.lease_lost());
                    let _ = tx.lock().unwrap().send((report, seen));
                }
                Outcome::done_with(b"stopped".to_vec())
            })
            .unwrap()
    };
    *slot.lock().unwrap() = Some(pool);
    // Enqueued once the handler can find the pool.
    let id = q.enqueue(b"stop the pool").unwrap();
    let (report, (shutting_down, lost)) = rx
        .recv_timeout(WATCHDOG)
        .expect("shutdown called by a handler waited for that handler");
    assert!(shutting_down && !lost, "the caller's lease was taken away");
    assert!(report.released.is_empty(), "{report:?}");
    assert!(report.stuck.is_empty(), "{}", stuck_text(&report));
    assert_eq!((report.running, report.finished), (0, 0), "{report:?}");
    wait_for("the stop job done", || {
        matches!(q.status(id), Ok(walq::worker::JobStatus::Done { .. }))
    });
    drop(q);
    // Reopened (the pool's threads let go of the directory): the stop job
    // does not run again.
    wait_for("the directory unlocked", || Queue::open(dir.path()).is_ok());
    let q = Queue::open(dir.path()).unwrap();
    assert!(
        q.dequeue().unwrap().is_none(),
        "the stop job is queued again"
    );
}

/// The same in an async pool: a handler that awaits its own pool's
/// shutdown is neither waited for nor aborted, and its `Done` is settled.
/// Before, the task aborted itself in the middle of the shutdown and its
/// job was released, to run again.
#[cfg(feature = "tokio")]
#[test]
fn an_async_handler_that_shuts_its_own_pool_down_completes_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let slot: Arc<std::sync::Mutex<Option<walq::worker::AsyncWorkerPool>>> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let rt = runtime();
    let _guard = rt.enter();
    let pool = {
        let (slot, tx) = (slot.clone(), Arc::new(std::sync::Mutex::new(tx)));
        WorkerPool::builder(q.clone())
            .name("stopper")
            .workers(2)
            .start_async(move |ctx: JobContext, _: Vec<u8>| {
                let (slot, tx) = (slot.clone(), tx.clone());
                async move {
                    let pool = slot.lock().unwrap().take();
                    if let Some(pool) = pool {
                        let report = pool.shutdown(Duration::from_secs(3600)).await;
                        let seen = (ctx.is_shutting_down(), ctx.lease_lost());
                        let _ = tx.lock().unwrap().send((report, seen));
                    }
                    Outcome::done()
                }
            })
            .unwrap()
    };
    *slot.lock().unwrap() = Some(pool);
    // Enqueued once the handler can find the pool.
    let id = q.enqueue(b"stop the pool").unwrap();
    let (report, (shutting_down, lost)) = rx
        .recv_timeout(WATCHDOG)
        .expect("shutdown awaited by a handler waited for that handler");
    assert!(shutting_down && !lost, "the caller's lease was taken away");
    assert!(report.released.is_empty(), "{report:?}");
    assert!(report.stuck.is_empty(), "{}", stuck_text(&report));
    wait_for("the stop job done", || {
        matches!(q.status(id), Ok(walq::worker::JobStatus::Done { .. }))
    });
}
