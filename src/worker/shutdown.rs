//! What a graceful shutdown did, and what it had to leave behind.

use std::fmt;
use std::time::Duration;

use crate::worker::counters::PoolStats;

/// The result of [`crate::worker::WorkerPool::shutdown`] (and of
/// `AsyncWorkerPool::shutdown`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Handlers running when shutdown began.
    pub running: usize,
    /// Of those, how many finished within the deadline.
    pub finished: usize,
    /// Ids of the jobs released at the deadline (ready again at once,
    /// attempt given back). A job whose `release` shutdown gave up on, or
    /// never made because an earlier one was stuck, is not here: it is
    /// named in [`ShutdownReport::stuck`] and counted in `settle_errors`.
    /// Its lease runs out and it is delivered again, attempt counted.
    pub released: Vec<u64>,
    /// The pool's counters when it stopped. Exact: a job whose settle
    /// shutdown gave up on (see [`ShutdownReport::stuck`]) is counted in
    /// `settle_errors`, never as done.
    pub stats: PoolStats,
    /// The pool's threads that were blocked in the backend when shutdown
    /// gave up waiting for them, and were left running detached. Empty
    /// after a clean shutdown.
    ///
    /// A backend call cannot be interrupted, so shutdown waits for the
    /// pool's threads (workers, then the settler, then the heartbeat)
    /// until its deadline, or, for each of these three if the deadline
    /// has passed, one poll interval plus one heartbeat interval more. A
    /// thread still in a call then ([`BackendCall`]: a worker in `lease`
    /// or in a settle, the settler in `complete_batch`, a heartbeat
    /// thread in `extend`) is left detached: it exits when its call
    /// returns, starting no other backend call and counting nothing;
    /// until then it holds the backend (for a [`crate::Queue`], its handle
    /// on the directory and its lock). A worker waiting for room among
    /// acks held by a stuck settler is given up too (with no call).
    ///
    /// The calls shutdown makes itself run on threads of their own and
    /// are bounded the same way: `<pool>-release`, releasing the jobs of
    /// handlers still running at the deadline ([`BackendCall::Release`];
    /// its jobs are the one of the blocked call and those not released
    /// yet, which it then skips), and `<pool>-orphans`, settling the acks
    /// a settler that panicked left ([`BackendCall::CompleteBatch`]).
    ///
    /// A handler still running at the deadline is not listed here: its
    /// job is in [`ShutdownReport::released`] (or, if its release was
    /// given up, in the jobs of `<pool>-release`).
    pub stuck: Vec<StuckThread>,
}

/// The backend call a thread left detached by shutdown is blocked in
/// (see [`ShutdownReport::stuck`]); each names the
/// [`crate::worker::Backend`] method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendCall {
    /// `lease` (a worker waiting for or taking its next job).
    Lease,
    /// `extend` (a heartbeat thread extending a lease).
    Extend,
    /// `complete` (a worker acking its job itself).
    Complete,
    /// `complete_batch` (the settler, or the heartbeat or shutdown's
    /// `<pool>-orphans` thread settling the acks of a settler that died).
    CompleteBatch,
    /// `retry` (a worker settling a `Retry` outcome).
    Retry,
    /// `fail` (a worker settling a `Fail` outcome).
    Fail,
    /// `release` (a worker handing back a job leased as the pool stopped,
    /// or shutdown's `<pool>-release` thread handing back the jobs of
    /// handlers still running at the deadline).
    Release,
}

impl BackendCall {
    /// The method's name, as in `Backend::extend`.
    pub fn method(self) -> &'static str {
        match self {
            BackendCall::Lease => "lease",
            BackendCall::Extend => "extend",
            BackendCall::Complete => "complete",
            BackendCall::CompleteBatch => "complete_batch",
            BackendCall::Retry => "retry",
            BackendCall::Fail => "fail",
            BackendCall::Release => "release",
        }
    }

    /// Whether the call records a job's outcome (anything but `lease` and
    /// `extend`).
    pub fn settles(self) -> bool {
        !matches!(self, BackendCall::Lease | BackendCall::Extend)
    }

    /// Makes this call (`f`), turning a panic of the backend into
    /// [`BackendCall::panicked`]: a pool thread counts it as a failed
    /// call (a lease error, or a settle error) and goes on, where the
    /// panic would end the thread (a sync pool one worker short for good,
    /// its job counted nowhere; a heartbeat thread gone with a lease
    /// marked as being extended).
    pub(crate) fn guarded<T>(self, f: impl FnOnce() -> crate::Result<T>) -> crate::Result<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(self.panicked()))
    }

    /// The error a call that panicked counts as.
    pub(crate) fn panicked(self) -> crate::Error {
        crate::Error::new(
            crate::ErrorKind::Io,
            format!("the backend panicked in {}", self.method()),
        )
    }
}

/// A pool thread (or, in an async pool, a worker task's blocking settle)
/// that shutdown left detached; see [`ShutdownReport::stuck`]. Its
/// `Display` says it all in one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StuckThread {
    /// The thread's name (`<pool>-3`, `<pool>-settler`,
    /// `<pool>-heartbeat-1`, `<pool>-release`, `<pool>-orphans`; an async
    /// pool's worker task `<pool>-3`).
    pub thread: String,
    /// The backend call it is blocked in; `None` when it was between
    /// calls (a worker waiting for room among the acks of a stuck
    /// settler, or holding a job it had not begun to settle: that job is
    /// in [`StuckThread::jobs`], counted as a settle error).
    pub call: Option<BackendCall>,
    /// How long that call had been waiting when shutdown gave up on it.
    pub waited: Duration,
    /// The jobs whose leases the call is about (the lease extended, the
    /// job being settled, the acks of the batch), and, for the settler,
    /// the acks queued behind its call. A job whose settle is given up is
    /// counted in `settle_errors`, not as done; its lease is no longer
    /// extended, so unless the stuck call records it when it returns, the
    /// lease runs out and the job is delivered again (attempt counted).
    pub jobs: Vec<u64>,
}

impl fmt::Display for StuckThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "thread {} ", self.thread)?;
        match self.call {
            Some(call) => write!(
                f,
                "is blocked in Backend::{} for {} ms",
                call.method(),
                self.waited.as_millis()
            )?,
            None => f.write_str("had not stopped (between backend calls)")?,
        }
        match self.jobs.len() {
            0 => {}
            1..=8 => write!(f, " (jobs {:?}, given up)", self.jobs)?,
            n => write!(f, " ({n} jobs from {}, given up)", self.jobs[0])?,
        }
        f.write_str("; left running detached, it exits when the call returns")
    }
}
