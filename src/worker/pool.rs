//! The worker pool: threads that lease jobs and run a handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::queue::Queue;
use crate::worker::backend::{Backend, Delivery};
use crate::worker::builder::{Config, PoolBuilder};
use crate::worker::context::JobContext;
use crate::worker::counters::{Count, Counters, PoolStats};
use crate::worker::handler::Handler;
use crate::worker::heartbeat_threads::Heartbeat;
use crate::worker::rate::{RateLimit, TokenBucket};
use crate::worker::settle::Settler;
use crate::worker::shutdown::{BackendCall, ShutdownReport, StuckThread};
use crate::worker::signal::Signal;
use crate::worker::threads::{GivenUp, Left, Threads};

/// A pool of named worker threads that lease jobs from a [`Backend`] and
/// run a handler on each.
///
/// * The handler's [`crate::worker::Outcome`] completes, retries or fails
///   the job.
/// * While a handler runs, a heartbeat thread extends its lease; a
///   handler sees a lost lease with [`crate::worker::JobContext::lease_lost`].
/// * A panic in a handler is caught and counts as a failed attempt, with
///   the panic message as the job's error.
/// * [`WorkerPool::shutdown`] stops leasing, lets running handlers finish
///   within a deadline and releases the rest at once.
///
/// See the [module documentation](crate::worker) for an example.
pub struct WorkerPool<B: Backend = Queue> {
    shared: Arc<Shared<B>>,
    workers: Threads,
    heartbeat: Option<Heartbeat>,
    settler: Threads,
}

/// The job a worker is running.
pub(crate) struct Active<L> {
    pub(crate) id: u64,
    pub(crate) lease: L,
    pub(crate) lost: Arc<AtomicBool>,
    /// The heartbeat's state of the lease.
    pub(crate) beat: Arc<crate::worker::heartbeat::Beat>,
    /// The handler returned: the worker settles the job itself, and a
    /// shutdown must not release it (a finished job would run again).
    pub(crate) finished: bool,
}

struct Busy {
    running: usize,
    stopping: bool,
}

/// What a pool's threads share.
pub(crate) struct Shared<B: Backend> {
    pub(crate) backend: B,
    pub(crate) cfg: Config,
    pub(crate) handler: Box<dyn Handler>,
    pub(crate) slots: Vec<Mutex<Option<Active<B::Lease>>>>,
    pub(crate) counters: Counters,
    pub(crate) limiter: Option<TokenBucket>,
    /// Set when the pool stops leasing.
    pub(crate) stop: Signal,
    /// Set when the heartbeat stops (after running jobs finished or were
    /// released).
    pub(crate) heartbeat_stop: Signal,
    /// Completions handed over by workers, made durable in batches.
    pub(crate) settler: Settler<B::Lease>,
    busy: Mutex<Busy>,
    idle: Condvar,
}

impl<B: Backend> Shared<B> {
    /// What a pool's threads (or tasks) share, before any starts.
    pub(crate) fn new(
        backend: B,
        cfg: Config,
        handler: Box<dyn Handler>,
        rate: Option<RateLimit>,
        clock: Arc<dyn Clock>,
    ) -> Shared<B> {
        let workers = cfg.workers;
        Shared {
            slots: (0..cfg.workers).map(|_| Mutex::new(None)).collect(),
            limiter: rate.map(|r| TokenBucket::new(r, clock)),
            backend,
            cfg,
            handler,
            counters: Counters::default(),
            stop: Signal::default(),
            heartbeat_stop: Signal::default(),
            settler: Settler::new(workers),
            busy: Mutex::new(Busy {
                running: 0,
                stopping: false,
            }),
            idle: Condvar::new(),
        }
    }

    /// Records that worker `index` runs `active`; false if the pool is
    /// stopping: the job is then kept in the slot marked finished (not
    /// running, so a shutdown does not release it), for the worker to
    /// release ([`crate::worker::run::release_unstarted`]) or a shutdown
    /// that gives up on the worker to count.
    fn begin(&self, index: usize, mut active: Active<B::Lease>) -> bool {
        let mut busy = self.busy.lock();
        let running = !busy.stopping;
        if running {
            busy.running += 1;
        } else {
            active.finished = true;
        }
        *self.slots[index].lock() = Some(active);
        running
    }

    /// Counts a leased delivery and puts it in worker `index`'s slot:
    /// returns what its handler sees and its payload, or `None` when the
    /// pool began stopping while the job was being leased (the job, in the
    /// slot, is to be released).
    pub(crate) fn start(
        &self,
        index: usize,
        name: &Arc<str>,
        delivery: Delivery<B::Lease>,
    ) -> Option<(JobContext, Vec<u8>)> {
        self.counters.add(Count::Leased);
        let (info, payload, lease) = delivery.into_parts();
        let lost = Arc::new(AtomicBool::new(false));
        let beat = crate::worker::heartbeat::Beat::new(self.cfg.job_timeout);
        let active = Active {
            id: info.id,
            lease,
            lost: lost.clone(),
            beat: beat.clone(),
            finished: false,
        };
        if !self.begin(index, active) {
            return None;
        }
        let visibility_ms = crate::clock::ms(self.cfg.visibility);
        let ctx = JobContext::in_pool(info, name.clone(), lost, self.stop.flag())
            .with_beat(beat, visibility_ms);
        Some((ctx, payload))
    }

    /// Ends the run of worker `index`'s handler: whether its job ran past
    /// its job timeout (or `cancelled`: an async pool dropped its handler
    /// at the timeout), counting the timeout if so, once; false if the
    /// slot is empty (shutdown released the job while the handler ran).
    /// In the same step, under the slot's lock, the job is marked finished
    /// (see [`Active::finished`]), unless it timed out and `mark_late` is
    /// false (a thread pool refuses a late outcome and leaves the lease to
    /// run out). One step: checked and marked apart, a heartbeat between
    /// the two saw an unfinished job past its timeout and counted a
    /// timeout for an attempt its worker had found in time and settled as
    /// done (`timed_out` and `done` both counted for one attempt).
    pub(crate) fn finish_run(&self, index: usize, cancelled: bool, mark_late: bool) -> bool {
        let mut slot = self.slots[index].lock();
        let Some(active) = slot.as_mut() else {
            return false;
        };
        let late = cancelled || active.beat.past_timeout();
        if late {
            self.count_timeout(index, active.id, &active.beat);
        }
        if !late || mark_late {
            active.finished = true;
        }
        late
    }

    /// Counts (and traces) the timeout of job `id`, run by worker
    /// `index`, unless it was counted already.
    pub(crate) fn count_timeout(
        &self,
        index: usize,
        id: u64,
        beat: &crate::worker::heartbeat::Beat,
    ) {
        if beat.mark_timed_out() {
            self.counters.add(Count::TimedOut);
            let timeout = self.cfg.job_timeout.unwrap_or_default();
            crate::worker::trace::job_timed_out(&self.cfg.name, index, id, timeout);
        }
    }

    /// Marks worker `index`'s job as finished by its handler (see
    /// [`Active::finished`]); nothing if shutdown released it meanwhile.
    pub(crate) fn mark_finished(&self, index: usize) {
        if let Some(active) = self.slots[index].lock().as_mut() {
            active.finished = true;
        }
    }

    /// Worker `index`'s job and a copy of its lease, left in the slot
    /// (where the heartbeat extends it, and where a shutdown that gives
    /// up on the worker finds it) while the job is settled; `None` if
    /// shutdown released or counted the job meanwhile.
    pub(crate) fn lease_of(&self, index: usize) -> Option<(u64, B::Lease)> {
        self.slots[index]
            .lock()
            .as_ref()
            .map(|a| (a.id, a.lease.clone()))
    }

    /// Puts worker `index`'s job back in its slot (the settler would not
    /// take its ack).
    pub(crate) fn put_back(&self, index: usize, active: Active<B::Lease>) {
        *self.slots[index].lock() = Some(active);
    }

    /// Takes worker `index`'s job back to settle it; `None` if shutdown
    /// released it meanwhile.
    pub(crate) fn take(&self, index: usize) -> Option<Active<B::Lease>> {
        self.slots[index].lock().take()
    }

    /// Records that a worker finished with its job.
    pub(crate) fn end(&self) {
        let mut busy = self.busy.lock();
        busy.running = busy.running.saturating_sub(1);
        self.idle.notify_all();
    }

    pub(crate) fn begin_stop(&self) -> usize {
        let running = {
            let mut busy = self.busy.lock();
            busy.stopping = true;
            busy.running
        };
        self.stop.set();
        // Idle workers blocked in a lease see the stop now, not at the
        // end of their poll interval (before, an idle pool's shutdown
        // took up to `poll_interval`; a review found it).
        self.backend.wake_waiters();
        running
    }

    /// Waits until no handler runs but `own` (1 for a shutdown called by
    /// a handler of the pool, 0 otherwise), or `deadline`.
    pub(crate) fn wait_idle(&self, deadline: Instant, own: usize) {
        let mut busy = self.busy.lock();
        while busy.running > own {
            if self.idle.wait_until(&mut busy, deadline).timed_out() {
                return;
            }
        }
    }

    /// Hands back every job still running: ready at once, attempt given
    /// back ([`Backend::release`]).
    /// Returns the workers that were running them. A job whose handler
    /// returned is not running: its worker settles it (a `Done` may be
    /// waiting for room among the acks not yet durable), and the shutdown
    /// joins that worker like one that was idle.
    ///
    /// The `release` calls run on a thread of their own, waited for until
    /// `until` (see [`crate::worker::release`]): a job whose release was
    /// given up then, or never made, is counted as a settle error and
    /// named in [`ShutdownReport::stuck`], not in
    /// [`ShutdownReport::released`]. A job past its job timeout is not
    /// released: its lease runs out, its attempt counted.
    pub(crate) fn release_running(
        self: &Arc<Self>,
        report: &mut ShutdownReport,
        until: Instant,
    ) -> Vec<usize> {
        let mut stragglers = Vec::new();
        let mut jobs = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(active) = slot.lock().take_if(|a| !a.finished) else {
                continue;
            };
            active.lost.store(true, Ordering::Release);
            stragglers.push(index);
            // A job past its job timeout is not released: that would give
            // its attempt back, and a job that always hangs would never
            // reach the dead letters across restarts. Its lease, no longer
            // extended, runs out with the attempt counted.
            if !active.beat.past_timeout() {
                jobs.push((active.id, active.lease));
            }
        }
        crate::worker::release::release_all(self, jobs, until, report);
        stragglers
    }
}

impl<B: Backend> Shared<B> {
    /// What shutdown reports of a thread (or task) it gave up on. The
    /// jobs of the settle call it was blocked in, and for a worker the
    /// job in its slot (finished, or leased as the pool stopped), are
    /// counted as settle errors here: the thread counts nothing once
    /// given up, and the job is not done (its lease, no longer extended,
    /// runs out).
    pub(crate) fn give_up(&self, left: Left, worker: bool) -> StuckThread {
        let GivenUp {
            call,
            waited,
            mut jobs,
        } = left.given_up;
        let mut unsettled = if call.is_some_and(BackendCall::settles) {
            jobs.len()
        } else {
            0
        };
        if worker {
            // The job a worker was about to settle, or settling: counted
            // once (a settle call's job is this one).
            if let Some(active) = self.slots[left.index].lock().take() {
                if !(unsettled > 0 && jobs.contains(&active.id)) {
                    jobs.push(active.id);
                    unsettled += 1;
                }
            }
        }
        for _ in 0..unsettled {
            self.counters.add(Count::SettleErrors);
        }
        StuckThread {
            thread: left.name,
            call,
            waited,
            jobs,
        }
    }
}

impl<B: Backend> WorkerPool<B> {
    /// Configures a pool that drives `backend` (a [`Queue`], or another
    /// [`Backend`]).
    pub fn builder(backend: B) -> PoolBuilder<B> {
        PoolBuilder::new(backend)
    }

    pub(crate) fn spawn(
        backend: B,
        cfg: Config,
        handler: Box<dyn Handler>,
        rate: Option<RateLimit>,
        clock: Arc<dyn Clock>,
    ) -> Result<WorkerPool<B>> {
        let shared = Arc::new(Shared::new(backend, cfg, handler, rate, clock));
        // On a spawn failure, dropping `pool` stops what was started.
        let mut pool = WorkerPool {
            shared: shared.clone(),
            workers: Threads::default(),
            heartbeat: None,
            settler: Threads::default(),
        };
        pool.heartbeat = Some(Heartbeat::start(&shared)?);
        let s = shared.clone();
        let name = format!("{}-settler", shared.cfg.name);
        pool.settler.spawn(0, name, move |state| {
            crate::worker::settle::run(&s, state);
        })?;
        for index in 0..shared.cfg.workers {
            let name = format!("{}-{index}", shared.cfg.name);
            let s = shared.clone();
            let label: Arc<str> = Arc::from(name.as_str());
            pool.workers.spawn(index, name, move |state| {
                crate::worker::run::run(&s, index, &label, state);
            })?;
        }
        Ok(pool)
    }

    /// The counters so far.
    pub fn stats(&self) -> PoolStats {
        self.shared.counters.snapshot()
    }

    /// Stops leasing, lets running handlers finish for up to `deadline`,
    /// then releases the jobs of handlers still running: they are ready
    /// again at once, their attempt given back (a stop is not the job's
    /// failure: a job on its last attempt stays queued), and their handlers see
    /// [`crate::worker::JobContext::lease_lost`]. A handler still running
    /// keeps its thread until it returns, and its outcome is then dropped.
    ///
    /// Then it waits for the workers that finished to exit, for the
    /// settler to settle their acks, and for the heartbeat to stop, each
    /// until the deadline (or, once it has passed, one poll interval plus
    /// one heartbeat interval more): a thread still blocked in a backend
    /// call then (a `lease`, a settle, `complete_batch`, `extend`) is left
    /// detached and named in [`ShutdownReport::stuck`], so `shutdown`
    /// returns even if the backend never does. Jobs whose settle it gives
    /// up on are counted as settle errors, not done.
    ///
    /// The `release`s at the deadline, and the `complete_batch` of acks a
    /// settler that panicked left, run on threads of their own bounded
    /// the same way (`<pool>-release`, `<pool>-orphans`): a job whose
    /// release is given up, or skipped after one that is stuck, is counted
    /// as a settle error, not released; its lease runs out and it is
    /// delivered again, attempt counted.
    ///
    /// Called from inside one of this pool's own handlers (a job that
    /// stops the pool, holding it in, say, an `Arc<Mutex<Option<_>>>`),
    /// shutdown treats that handler as finishing its job: it neither waits
    /// for it nor releases its job, and does not count it in
    /// [`ShutdownReport::running`]. It stops the rest of the pool as
    /// above and returns; when the handler then returns, its worker
    /// settles its outcome itself (a `Done` is acked, not run again) and
    /// exits. That outcome is counted after the report was taken, so it is
    /// not in [`ShutdownReport::stats`], and the job's lease is no longer
    /// extended once shutdown returns: return soon after (within the
    /// pool's visibility timeout), or the lease runs out and the job runs
    /// again. Before, such a call waited its whole deadline for its own
    /// handler, then released the job, whose `Done` was dropped: the stop
    /// job ran again at the next start.
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        self.stop(deadline)
    }

    fn stop(&mut self, deadline: Duration) -> ShutdownReport {
        let until = crate::clock::deadline(deadline);
        let grace = self.shared.cfg.stop_grace();
        let stage = || until.max(crate::clock::deadline(grace));
        // Called by a handler of this pool (from its worker's thread):
        // that handler is not waited for, nor its job released; its
        // worker settles the job when the handler returns.
        let own = self.workers.current();
        let mut report = ShutdownReport {
            running: self.shared.begin_stop(),
            ..ShutdownReport::default()
        };
        if let Some(index) = own {
            report.running = report.running.saturating_sub(1);
            self.shared.mark_finished(index);
        }
        self.shared.wait_idle(until, usize::from(own.is_some()));
        let stragglers = self.shared.release_running(&mut report, stage());
        // Workers that finished have handed over their last acks once
        // they exit (a straggler's outcome is dropped, never handed over;
        // the calling worker, if any, exits after this returns).
        let wait = |i: usize| Some(i) != own && !stragglers.contains(&i);
        for left in self.workers.stop(stage(), wait) {
            report.stuck.push(self.shared.give_up(left, true));
        }
        // Every pending ack is settled (and counted) before shutdown
        // returns; the heartbeat keeps their leases alive until then.
        self.shared.settler.close();
        let settler = self.settler.stop(stage(), |_| true);
        if settler.is_empty() {
            // A settler that died left its acks to settle here (the
            // heartbeat may not have come round to them), on a thread
            // of their own that is given up if it is still blocked then.
            let orphans = crate::worker::settle::settle_left_orphans(&self.shared, stage());
            report.stuck.extend(orphans);
        }
        for left in settler {
            let mut stuck = self.shared.give_up(left, false);
            stuck
                .jobs
                .extend(crate::worker::settle::abandon(&self.shared));
            report.stuck.push(stuck);
        }
        if let Some(h) = self.heartbeat.take() {
            for left in h.stop(&self.shared, stage()) {
                report.stuck.push(self.shared.give_up(left, false));
            }
        }
        report.finished = report.running.saturating_sub(stragglers.len());
        report.stats = self.stats();
        report
    }
}

impl<B: Backend> Drop for WorkerPool<B> {
    fn drop(&mut self) {
        if !self.workers.is_empty() || self.heartbeat.is_some() || !self.settler.is_empty() {
            let timeout = self.shared.cfg.shutdown_timeout;
            self.stop(timeout);
        }
    }
}

impl<B: Backend> std::fmt::Debug for WorkerPool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("name", &self.shared.cfg.name)
            .field("workers", &self.shared.cfg.workers)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

pub(crate) fn spawn_named(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|e| Error::new(ErrorKind::Io, format!("starting thread {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::worker::{JobContext, Outcome, WorkerPool};
    use crate::Queue;

    /// A pool's shared state on a queue in `dir`, with one job leased into
    /// worker 0's slot; job timeout `timeout`.
    fn one_running(dir: &std::path::Path, timeout: Duration) -> Shared<Queue> {
        let q = Queue::open(dir).unwrap();
        q.enqueue(b"job").unwrap();
        let builder = WorkerPool::builder(q.clone()).workers(1);
        let (backend, cfg, rate, clock) = builder.job_timeout(timeout).validated().unwrap();
        let handler = Box::new(|_: &JobContext, _: &[u8]| Outcome::done());
        let shared = Shared::new(backend, cfg, handler, rate, clock);
        let delivery = Backend::lease(&q, Duration::from_secs(30), Duration::ZERO)
            .unwrap()
            .expect("a job is ready");
        assert!(shared.start(0, &Arc::from("w-0"), delivery).is_some());
        shared
    }

    fn finished(shared: &Shared<Queue>) -> bool {
        shared.slots[0].lock().as_ref().unwrap().finished
    }

    /// A run its worker finds in time is marked finished in the same step
    /// (under the slot's lock), so no heartbeat can see it unfinished past
    /// its timeout afterwards: checked and marked apart, a beat in between
    /// counted a timeout for an attempt then settled as done.
    #[test]
    fn a_run_found_in_time_is_finished_in_the_same_step() {
        let dir = tempfile::tempdir().unwrap();
        let shared = one_running(dir.path(), Duration::from_secs(3600));
        assert!(!shared.finish_run(0, false, false), "an hour is not up");
        assert!(finished(&shared), "marked finished as it was found in time");
        assert_eq!(shared.counters.snapshot().timed_out, 0);
    }

    /// A late run (here cancelled, as an async pool's at its timeout) is
    /// counted once however often it is seen, and marked finished only
    /// when its late outcome is to be settled (async), not when it is
    /// refused (threads).
    #[test]
    fn a_late_run_is_counted_once_and_finished_only_if_settled() {
        let dir = tempfile::tempdir().unwrap();
        let shared = one_running(dir.path(), Duration::from_secs(3600));
        assert!(shared.finish_run(0, true, false));
        assert!(
            !finished(&shared),
            "a refused late outcome leaves it running"
        );
        assert!(shared.finish_run(0, true, true));
        assert!(finished(&shared), "a settled late outcome finishes it");
        assert_eq!(shared.counters.snapshot().timed_out, 1);
    }
}
