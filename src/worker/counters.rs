//! What a worker pool has done, counted.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a pool's counters, from
/// [`crate::worker::WorkerPool::stats`].
///
/// Once the pool has stopped and its handlers have returned, every leased
/// job is accounted for exactly once:
/// `leased == done + retried + dead + lost + released + settle_errors`.
///
/// `panicked` and `timed_out` say what happened during an attempt, not
/// how it was settled: each counts an attempt at most once, on top of
/// its one outcome above. An attempt can count in both (a handler that
/// panics past its timeout), and both pools count alike: a panic counts
/// in `panicked` whenever it happens, in time or past the job timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Jobs leased by the workers (each attempt counts once).
    pub leased: u64,
    /// Attempts that completed their job.
    pub done: u64,
    /// Attempts that failed and scheduled another attempt.
    pub retried: u64,
    /// Attempts that sent their job to the dead letters: a failure, a retry
    /// on the last attempt, a panic on the last attempt, or a payload that
    /// does not decode.
    pub dead: u64,
    /// Attempts whose handler panicked, whether before its job timeout or
    /// after it, in both pools. Also counted in `retried` or `dead`; or,
    /// for a panic past the timeout, in `timed_out` too and in `lost` (a
    /// thread pool, which refuses the late outcome) or `retried`/`dead`
    /// (an async pool, which fails the attempt as timed out).
    pub panicked: u64,
    /// Jobs handed back at shutdown, ready at once, attempt given back.
    pub released: u64,
    /// Attempts whose outcome was refused because the lease was lost.
    pub lost: u64,
    /// Attempts whose outcome could not be recorded for another reason
    /// (the job comes back when its lease expires).
    pub settle_errors: u64,
    /// Lease calls that failed (the worker waits a poll interval and tries
    /// again).
    pub lease_errors: u64,
    /// Lease extensions made by the heartbeat.
    pub extended: u64,
    /// Handlers running now.
    pub running: u64,
    /// Workers waiting for the rate limiter now.
    pub throttled: u64,
    /// Workers (an async pool's tasks) that stopped for good because the
    /// backend was closed under the pool: their lease failed with
    /// [`crate::ErrorKind::Closed`]. Once it equals the pool's `workers`,
    /// the pool leases nothing more; shut it down. (A pool is not started
    /// on a closed backend: `start` fails with `Closed`.)
    pub closed_exits: u64,
    /// Attempts given up because their handler ran longer than
    /// [`crate::worker::PoolBuilder::job_timeout`] (also counted in
    /// `lost` for a thread pool, whose late outcome is refused, or in
    /// `retried` or `dead` for an async pool, which fails the attempt).
    pub timed_out: u64,
}

impl PoolStats {
    /// Attempts that ran and were settled: `done + retried + dead`.
    pub fn processed(&self) -> u64 {
        self.done + self.retried + self.dead
    }
}

/// One counter of [`Counters`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Leased,
    Done,
    Retried,
    Dead,
    Panicked,
    Released,
    Lost,
    SettleErrors,
    LeaseErrors,
    Extended,
    ClosedExits,
    TimedOut,
}

/// The live counters, shared by a pool's threads.
#[derive(Default)]
pub(crate) struct Counters {
    totals: [AtomicU64; 12],
    running: AtomicU64,
    throttled: AtomicU64,
}

impl Counters {
    pub(crate) fn add(&self, which: Count) {
        self.totals[which as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a running handler until the guard drops.
    pub(crate) fn running(&self) -> Gauge<'_> {
        Gauge::new(&self.running)
    }

    /// Counts a worker waiting for a token until the guard drops.
    pub(crate) fn throttled(&self) -> Gauge<'_> {
        Gauge::new(&self.throttled)
    }

    pub(crate) fn snapshot(&self) -> PoolStats {
        let get = |which: Count| self.totals[which as usize].load(Ordering::Relaxed);
        PoolStats {
            leased: get(Count::Leased),
            done: get(Count::Done),
            retried: get(Count::Retried),
            dead: get(Count::Dead),
            panicked: get(Count::Panicked),
            released: get(Count::Released),
            lost: get(Count::Lost),
            settle_errors: get(Count::SettleErrors),
            lease_errors: get(Count::LeaseErrors),
            extended: get(Count::Extended),
            running: self.running.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            closed_exits: get(Count::ClosedExits),
            timed_out: get(Count::TimedOut),
        }
    }
}

/// Adds one to a gauge while alive.
pub(crate) struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn new(gauge: &'a AtomicU64) -> Gauge<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Gauge(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
