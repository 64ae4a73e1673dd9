//! The async worker pool: N tokio tasks that lease jobs and await an async
//! handler, with the sync pool's rules.
//!
//! What is shared with [`WorkerPool`](crate::worker::WorkerPool), not
//! copied: the builder and its checks, the slots of running jobs and the
//! shutdown steps (`Shared`), the heartbeat (threads, as in the sync
//! pool: an extension may block on a remote backend), the token bucket,
//! the counters and the settle logic (`run::settle`).
//!
//! What is async: leasing ([`AsyncBackend::lease_async`], which waits on
//! wakers and a timer, not on a thread), the handler's future, the rate
//! limiter's naps and the wait for shutdown.
//!
//! Settling goes through `tokio::task::spawn_blocking`: an ack under
//! `Durability::Sync` waits for a group-commit fdatasync, which must not
//! stall a runtime thread. `spawn_blocking` rather than `block_in_place`
//! because it works on every runtime flavour (`block_in_place` panics on
//! a current-thread runtime, the default of `#[tokio::test]`), and because
//! many settles then wait on one fsync at once from the blocking pool, so
//! they share it (group commit), instead of being capped by the number of
//! runtime threads. The hop costs microseconds; the fsync it hides costs
//! tens to hundreds.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};
use crate::queue::Queue;
use crate::worker::async_dequeue::AsyncBackend;
use crate::worker::async_handler::{async_typed, AsyncHandler};
use crate::worker::backend::Delivery;
use crate::worker::builder::PoolBuilder;
use crate::worker::context::JobContext;
use crate::worker::counters::{Count, PoolStats};
use crate::worker::handler::Handler;
use crate::worker::outcome::Outcome;
use crate::worker::pool::{spawn_named, Shared};
use crate::worker::run::{panic_text, release_unstarted, settle, within_limits};
use crate::worker::shutdown::{BackendCall, ShutdownReport};
use crate::worker::threads::ThreadState;
use crate::worker::trace::JobSpan;

/// How long one lease call waits before the worker looks again; wakes and
/// shutdown end the wait sooner, so this only bounds a backend's call.
const LEASE_WAIT: Duration = Duration::from_secs(60);

/// A pool of tokio tasks that lease jobs from an [`AsyncBackend`] and
/// await an [`AsyncHandler`] on each; from
/// [`PoolBuilder::start_async`] (feature `tokio`).
///
/// The same rules as [`crate::worker::WorkerPool`]: outcomes settle the
/// job, a heartbeat extends running leases (a handler sees a lost one in
/// [`JobContext::lease_lost`]), a panicking handler or future is a failed
/// attempt with the panic message, an optional rate limit paces starts,
/// and [`AsyncWorkerPool::shutdown`] stops leasing, lets running handlers
/// finish within a deadline and releases the rest at once. One
/// difference: at the deadline a still-running handler's future is
/// dropped (its task aborted), since a future, unlike a thread, can be.
///
/// ```
/// use std::time::Duration;
/// use walq::worker::{JobContext, Outcome, WorkerPool};
///
/// # fn main() -> walq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let q = walq::Queue::open(dir.path())?;
/// q.enqueue(b"resize photo 1")?;
/// let rt = tokio::runtime::Builder::new_multi_thread()
///     .worker_threads(2)
///     .enable_time()
///     .build()
///     .unwrap();
/// rt.block_on(async {
///     let pool = WorkerPool::builder(q.clone())
///         .name("resizer")
///         .workers(8) // concurrent tasks
///         .start_async(|ctx: JobContext, payload: Vec<u8>| async move {
///             // await an HTTP call, a database, ... here
///             let _ = (ctx.id(), payload);
///             Outcome::done()
///         })?;
///     # let deadline = std::time::Instant::now() + Duration::from_secs(30);
///     while pool.stats().done < 1 {
///         tokio::time::sleep(Duration::from_millis(5)).await;
///         # assert!(std::time::Instant::now() < deadline);
///     }
///     let report = pool.shutdown(Duration::from_secs(5)).await;
///     assert_eq!(report.stats.done, 1);
///     Ok(())
/// })
/// # }
/// ```
pub struct AsyncWorkerPool<B: AsyncBackend = Queue> {
    shared: Arc<Shared<B>>,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// What each task's blocking settle is blocked in, if anything.
    states: Vec<Arc<ThreadState>>,
    heartbeat: Option<crate::worker::heartbeat_threads::Heartbeat>,
}

/// The sync handler slot of `Shared`, never called: async workers call
/// their [`AsyncHandler`] instead.
struct NoSyncHandler;

impl Handler for NoSyncHandler {
    fn handle(&self, _ctx: &JobContext, _payload: &[u8]) -> Outcome {
        Outcome::fail("internal: an async pool ran its sync handler")
    }
}

impl<B: AsyncBackend> PoolBuilder<B> {
    /// Starts the pool's workers as tasks on the current tokio runtime,
    /// with an async closure handler: `|ctx: JobContext, payload: Vec<u8>|
    /// async move { ... }` returning anything `Into<Outcome>`.
    ///
    /// `workers(n)` is how many jobs run at once (n tasks). Fails with
    /// [`ErrorKind::InvalidOptions`] outside a tokio runtime.
    pub fn start_async<F, Fut, R>(self, handler: F) -> Result<AsyncWorkerPool<B>>
    where
        F: Fn(JobContext, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
        R: Into<Outcome>,
    {
        self.start_async_handler(handler)
    }

    /// Starts the pool with an async handler of decoded `T` jobs (JSON, as
    /// [`crate::typed::Jobs`] enqueues them); a payload that does not
    /// decode goes to the dead letters with the decode error.
    pub fn start_async_typed<T, F, Fut, R>(self, f: F) -> Result<AsyncWorkerPool<B>>
    where
        T: DeserializeOwned + 'static,
        F: Fn(JobContext, T) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
        R: Into<Outcome>,
    {
        self.start_async_handler(async_typed(f))
    }

    /// The checked settings as the state an async pool's tasks share (its
    /// sync handler is never called).
    fn async_shared(self) -> Result<Arc<Shared<B>>> {
        let (backend, cfg, rate, clock) = self.validated()?;
        let handler = Box::new(NoSyncHandler);
        Ok(Arc::new(Shared::new(backend, cfg, handler, rate, clock)))
    }

    /// Starts the pool with any [`AsyncHandler`].
    pub fn start_async_handler(self, handler: impl AsyncHandler) -> Result<AsyncWorkerPool<B>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::new(
                ErrorKind::InvalidOptions,
                format!("an async worker pool starts inside a tokio runtime: {e}"),
            )
        })?;
        crate::worker::async_dequeue::check_timers()?;
        let shared = self.async_shared()?;
        let (stop_tx, _) = watch::channel(false);
        let mut pool = AsyncWorkerPool {
            shared: shared.clone(),
            stop_tx,
            tasks: Vec::with_capacity(shared.cfg.workers),
            states: Vec::with_capacity(shared.cfg.workers),
            heartbeat: None,
        };
        pool.heartbeat = Some(crate::worker::heartbeat_threads::Heartbeat::start(&shared)?);
        let handler: Arc<dyn AsyncHandler> = Arc::new(handler);
        for index in 0..shared.cfg.workers {
            let label: Arc<str> = Arc::from(format!("{}-{index}", shared.cfg.name));
            let state = Arc::new(ThreadState::default());
            let task = work(
                shared.clone(),
                handler.clone(),
                Worker {
                    index,
                    name: label,
                    state: state.clone(),
                },
                pool.stop_tx.subscribe(),
            );
            pool.states.push(state);
            pool.tasks.push(runtime.spawn(task));
        }
        Ok(pool)
    }
}

impl<B: AsyncBackend> AsyncWorkerPool<B> {
    /// The counters so far.
    pub fn stats(&self) -> PoolStats {
        self.shared.counters.snapshot()
    }

    /// Stops leasing, lets running handlers finish for up to `deadline`,
    /// then releases the jobs of handlers still running (ready again at
    /// once, attempt given back; their contexts see `lease_lost`) and drops
    /// their futures. The other tasks, then the heartbeat threads (which
    /// extend the leases of jobs the tasks are still settling meanwhile),
    /// are waited for until the deadline (or, once it has passed, one poll interval
    /// plus one heartbeat interval more): a heartbeat thread still blocked
    /// in `Backend::extend`, or a task whose settle (run on tokio's
    /// blocking pool) is still blocked in the backend, is then left
    /// detached (the task is aborted, its blocking call left to return)
    /// and named in [`ShutdownReport::stuck`]; the job of such a settle is
    /// counted as a settle error, not done. The releases run on a thread of
    /// their own, given up the same way if a `release` blocks (see
    /// [`crate::worker::WorkerPool::shutdown`]). Such a call also keeps one of
    /// the runtime's blocking threads, which a runtime's drop waits for
    /// (`Runtime::shutdown_timeout` bounds that).
    ///
    /// Awaited inside one of this pool's own handlers (a job that stops
    /// the pool), shutdown treats that handler as finishing its job, as
    /// [`crate::worker::WorkerPool::shutdown`] does: it neither waits for
    /// it, nor releases its job, nor aborts its task; the task settles the
    /// handler's outcome when it returns (after the report was taken, so
    /// not in [`ShutdownReport::stats`]; return within the visibility
    /// timeout, the lease is no longer extended). Before, the task aborted
    /// itself mid-shutdown and its job was released, to run again.
    pub async fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let until = crate::clock::deadline(deadline);
        let grace = self.shared.cfg.stop_grace();
        let stage = move || until.max(crate::clock::deadline(grace));
        // Awaited by a handler of this pool (in its worker task): that
        // handler is not waited for, nor its job released, nor its task
        // aborted; the task settles the job when the handler returns.
        let own = self.own_task();
        let running = (self.shared.begin_stop()).saturating_sub(usize::from(own.is_some()));
        self.stop_tx.send_replace(true);
        let shared = self.shared.clone();
        // Waiting for idle and releasing (may fsync) block: off the
        // runtime's threads.
        let stopped = tokio::task::spawn_blocking(move || {
            let mut report = ShutdownReport {
                running,
                ..ShutdownReport::default()
            };
            shared.wait_idle(until, usize::from(own.is_some()));
            let stragglers = shared.release_running(&mut report, stage());
            (report, stragglers)
        })
        .await;
        // An error: the runtime is shutting down (the step may not have
        // run); end every task, and the heartbeat whatever becomes of it.
        let all = stopped.is_err();
        if all {
            self.shared.heartbeat_stop.set();
        }
        let (mut report, stragglers) = stopped.unwrap_or_default();
        let until_tasks = tokio::time::Instant::from_std(stage());
        let tasks = std::mem::take(&mut self.tasks);
        for (index, task) in tasks.into_iter().enumerate() {
            if Some(index) == own && !all {
                // The caller's own task: left to finish (its handle
                // dropped, the task detached).
                continue;
            }
            if all || stragglers.contains(&index) {
                task.abort();
            }
            let abort = task.abort_handle();
            if tokio::time::timeout_at(until_tasks, task).await.is_err() {
                abort.abort();
                report.stuck.extend(self.give_up_task(index));
            }
        }
        // The heartbeat last: it extends the leases of jobs the tasks
        // were still settling while shutdown waited for them.
        report.stuck.extend(self.stop_heartbeat(stage()).await);
        report.finished = report.running.saturating_sub(stragglers.len());
        report.stats = self.stats();
        report
    }

    /// The index of the worker task this is called from, if it is one of
    /// this pool's (a handler stopping its own pool), marked finished: it
    /// is not running as far as the shutdown goes, so its job is not
    /// released (its task settles it once the handler returns).
    fn own_task(&self) -> Option<usize> {
        let me = tokio::task::try_id()?;
        let index = self.tasks.iter().position(|t| t.id() == me)?;
        self.shared.mark_finished(index);
        Some(index)
    }

    /// Stops the heartbeat threads (joining them blocks: off the runtime's
    /// threads) by `until`; returns those given up, stuck in `extend`.
    async fn stop_heartbeat(
        &mut self,
        until: std::time::Instant,
    ) -> Vec<crate::worker::StuckThread> {
        let Some(heartbeat) = self.heartbeat.take() else {
            return Vec::new();
        };
        let shared = self.shared.clone();
        let stopped = tokio::task::spawn_blocking(move || {
            let left = heartbeat.stop(&shared, until);
            (left.into_iter())
                .map(|left| shared.give_up(left, false))
                .collect()
        })
        .await;
        // An error: the runtime is shutting down; the heartbeat stops
        // whatever becomes of the step.
        stopped.unwrap_or_else(|_| {
            self.shared.heartbeat_stop.set();
            Vec::new()
        })
    }

    /// Gives up on worker task `index`, which did not end by the deadline:
    /// reported if its blocking settle is stuck in the backend, or if its
    /// slot held a job it had not settled (the job of that call, or in
    /// the slot, is counted as a settle error by `give_up`).
    fn give_up_task(&self, index: usize) -> Option<crate::worker::StuckThread> {
        let given_up = self.states.get(index)?.give_up()?;
        let name = format!("{}-{index}", self.shared.cfg.name);
        let left = crate::worker::threads::Left {
            index,
            name,
            given_up,
        };
        // Its slot's job (finished, or leased as the pool stopped) is
        // counted too: the task counts nothing from now on.
        let stuck = self.shared.give_up(left, true);
        (stuck.call.is_some() || !stuck.jobs.is_empty()).then_some(stuck)
    }
}

impl<B: AsyncBackend> Drop for AsyncWorkerPool<B> {
    /// Dropped without [`AsyncWorkerPool::shutdown`]: stops leasing at
    /// once; a background thread then does the rest of a shutdown with
    /// the pool's `shutdown_timeout` (tasks still running then are left to
    /// end on their own, their outcomes refused).
    fn drop(&mut self) {
        let Some(heartbeat) = self.heartbeat.take() else {
            return;
        };
        // Dropped by one of its own handlers: not waited for (see
        // `shutdown`).
        let own = usize::from(self.own_task().is_some());
        self.shared.begin_stop();
        self.stop_tx.send_replace(true);
        let shared = self.shared.clone();
        let until = crate::clock::deadline(shared.cfg.shutdown_timeout);
        let name = format!("{}-stop", shared.cfg.name);
        let _ = spawn_named(name, move || {
            shared.wait_idle(until, own);
            let grace = shared.cfg.stop_grace();
            let stage = || until.max(crate::clock::deadline(grace));
            shared.release_running(&mut ShutdownReport::default(), stage());
            // Threads still blocked are left detached; no one reads a report.
            let _ = heartbeat.stop(&shared, stage());
        });
    }
}

impl<B: AsyncBackend> std::fmt::Debug for AsyncWorkerPool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncWorkerPool")
            .field("name", &self.shared.cfg.name)
            .field("workers", &self.shared.cfg.workers)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Resolves once the pool stops leasing.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the pool is gone: stopped too.
    let _ = stop.wait_for(|s| *s).await;
}

/// The loop of worker task `index`, until the pool stops leasing.
/// One worker task: its index, name and the state of its blocking
/// settles.
struct Worker {
    index: usize,
    name: Arc<str>,
    state: Arc<ThreadState>,
}

async fn work<B: AsyncBackend>(
    shared: Arc<Shared<B>>,
    handler: Arc<dyn AsyncHandler>,
    worker: Worker,
    mut stop: watch::Receiver<bool>,
) {
    while !shared.stop.is_set() {
        if !take_token(&shared, &mut stop).await {
            break;
        }
        // A backend that panics in the lease counts a lease error, as in
        // the sync pool: the task goes on.
        let lease = AssertUnwindSafe(
            shared
                .backend
                .lease_async(shared.cfg.visibility, LEASE_WAIT),
        )
        .catch_unwind();
        let leased = tokio::select! {
            r = lease => r.unwrap_or_else(|_| Err(BackendCall::Lease.panicked())),
            () = stopped(&mut stop) => {
                give_back_token(&shared);
                break;
            }
        };
        match leased {
            Ok(Some(delivery)) => run_one(&shared, &*handler, &worker, delivery).await,
            Ok(None) => give_back_token(&shared),
            Err(e) if e.kind() == ErrorKind::Closed => {
                // The backend was closed under the pool: the task ends,
                // counted (nothing once shutdown gave up on it).
                worker.state.end_with(|| {
                    shared.counters.add(Count::ClosedExits);
                    crate::worker::trace::worker_closed(&shared.cfg.name, &worker.name);
                });
                break;
            }
            Err(_) => {
                give_back_token(&shared);
                // Counted in a step shutdown waits out (nothing once it
                // gave up on this task), as every count of the task.
                if worker
                    .state
                    .end_with(|| shared.counters.add(Count::LeaseErrors))
                    .is_none()
                {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(shared.cfg.poll) => {}
                    () = stopped(&mut stop) => break,
                }
            }
        }
    }
}

/// Waits for the rate limiter, if any; false if the pool stopped first.
async fn take_token<B: AsyncBackend>(shared: &Shared<B>, stop: &mut watch::Receiver<bool>) -> bool {
    let Some(bucket) = &shared.limiter else {
        return true;
    };
    loop {
        match bucket.try_take() {
            Ok(()) => return true,
            Err(wait) => {
                let _gauge = shared.counters.throttled();
                let nap = super::rate::nap(wait, shared.cfg.poll);
                tokio::select! {
                    () = tokio::time::sleep(nap) => {}
                    () = stopped(stop) => return false,
                }
            }
        }
    }
}

fn give_back_token<B: AsyncBackend>(shared: &Shared<B>) {
    if let Some(bucket) = &shared.limiter {
        bucket.give_back();
    }
}

/// Runs one leased job and settles it.
async fn run_one<B: AsyncBackend>(
    shared: &Arc<Shared<B>>,
    handler: &dyn AsyncHandler,
    worker: &Worker,
    delivery: Delivery<B::Lease>,
) {
    let index = worker.index;
    // Counted and put in the slot in a step that shutdown waits out, as
    // the sync worker's lease ends: a task given up meanwhile (its lease
    // ended as shutdown gave up on it) counts nothing and leaves the job,
    // whose lease runs out.
    let Some(started) = worker
        .state
        .end_with(|| shared.start(index, &worker.name, delivery))
    else {
        return;
    };
    let Some((ctx, payload)) = started else {
        // The pool began stopping while this job was being leased.
        let (s, st) = (shared.clone(), worker.state.clone());
        blocking(move || release_unstarted(&s, &st, index)).await;
        return;
    };
    let _ends = Ends(shared);
    let span = JobSpan::new(&shared.cfg.name, &ctx);
    let ran = {
        let _running = shared.counters.running();
        let run = span.instrument(call_handler(handler, ctx.clone(), payload));
        match shared.cfg.job_timeout {
            // At the timeout the handler's future is dropped (cancelled).
            Some(timeout) => tokio::time::timeout(timeout, run).await.ok(),
            None => Some(run.await),
        }
    };
    // Cancelled at the timeout, or returned past it (read as the job is
    // marked finished, after which the heartbeat no longer looks): a
    // failed attempt, retried after the queue's backoff at once rather
    // than left to the lease's expiry, which would keep the job waiting
    // a visibility timeout more for nothing.
    let timed_out = shared.finish_run(index, ran.is_none(), true);
    // A handler that panicked counts in `panicked` even past its timeout
    // (its outcome is then the timeout's), as in a thread pool: the
    // counter says what the handler did, the outcome counters how the
    // attempt was settled.
    let (outcome, panicked) = match ran {
        Some(ran) if !timed_out => ran,
        _ => {
            let timeout = shared.cfg.job_timeout.unwrap_or_default();
            (
                Outcome::retry(format!("timed out after {timeout:?}")),
                ran.is_some_and(|(_, panicked)| panicked),
            )
        }
    };
    if panicked {
        shared.counters.add(Count::Panicked);
    }
    let outcome = within_limits(outcome);
    span.outcome(&ctx, &outcome, panicked);
    // The lease stays in the slot until the settle returns, so that the
    // heartbeat extends it meanwhile (an ack with a result waits for
    // `done.rec`'s sync first; a lease that ran out then would run the
    // job again).
    let (s, st) = (shared.clone(), worker.state.clone());
    let counted = blocking(move || settle(&s, &st, index, &ctx, outcome)).await;
    match counted {
        Some(Some(Count::Lost)) => span.lease_lost(),
        // Counted; or released by shutdown while the handler ran, or
        // given up by shutdown, which counted it.
        Some(_) => {}
        // The settle did not run to its end (the runtime is shutting
        // down); the job comes back when its lease expires. Counted by
        // whoever takes it from the slot: here, or a shutdown that gives
        // up on this task.
        None => {
            if shared.take(index).is_some() {
                shared.counters.add(Count::SettleErrors);
            }
        }
    }
}

/// Ends a job's run in the pool's count however [`run_one`] ends: when it
/// returns, and when its future is dropped mid-run (the pool dropped, then
/// its runtime, which drops the handler futures). Before, a dropped
/// future never ended its run: the stop thread of a dropped pool waited
/// the whole `shutdown_timeout` for it, its job leased and extended by the
/// heartbeat meanwhile, and the queue held open (a review found it). Its
/// job is still in the slot: the stop thread releases it.
struct Ends<'a, B: AsyncBackend>(&'a Shared<B>);

impl<B: AsyncBackend> Drop for Ends<'_, B> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Runs `f` (which may fsync) on tokio's blocking pool; `None` if it
/// could not run to the end (the runtime is shutting down, or it
/// panicked).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// Runs the handler to its outcome, turning a panic (in the call or in
/// the future) into a retry that carries the panic message.
async fn call_handler(
    handler: &dyn AsyncHandler,
    ctx: JobContext,
    payload: Vec<u8>,
) -> (Outcome, bool) {
    let panicked = |panic: Box<dyn std::any::Any + Send>| {
        let text = panic_text(&*panic);
        (Outcome::retry(format!("handler panicked: {text}")), true)
    };
    let fut = match catch_unwind(AssertUnwindSafe(|| handler.handle(ctx, payload))) {
        Ok(fut) => fut,
        Err(panic) => return panicked(panic),
    };
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(outcome) => (outcome, false),
        Err(panic) => panicked(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::backend::Backend;
    use crate::worker::WorkerPool;

    /// A task whose lease returns after shutdown gave up on it counts
    /// nothing and leaves the job alone (its lease runs out): shutdown
    /// read the counters when it gave up. Before, the task counted the
    /// job leased after that, a job no one then counted an outcome of.
    #[test]
    fn a_task_given_up_as_its_lease_ends_counts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        q.enqueue(b"leased as shutdown gave up").unwrap();
        let shared = WorkerPool::builder(q.clone())
            .workers(1)
            .async_shared()
            .unwrap();
        let delivery = Backend::lease(&q, Duration::from_secs(30), Duration::ZERO)
            .unwrap()
            .expect("a job is ready");
        shared.begin_stop();
        let worker = Worker {
            index: 0,
            name: Arc::from("given-up-0"),
            state: Arc::new(ThreadState::default()),
        };
        assert!(worker.state.give_up().is_some());
        let handler = |_: JobContext, _: Vec<u8>| async { Outcome::done() };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(run_one(&shared, &handler, &worker, delivery));
        let s = shared.counters.snapshot();
        assert_eq!((s.leased, s.released, s.settle_errors), (0, 0, 0), "{s:?}");
        assert!(shared.take(0).is_none(), "the job was left in the slot");
    }
}
