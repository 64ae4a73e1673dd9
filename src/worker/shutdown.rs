//! What a graceful shutdown did.

use crate::worker::counters::PoolStats;

/// The result of [`crate::worker::WorkerPool::shutdown`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Handlers running when shutdown began.
    pub running: usize,
    /// Of those, how many finished within the deadline.
    pub finished: usize,
    /// Ids of the jobs released at the deadline (ready again at once,
    /// attempt counted).
    pub released: Vec<u64>,
    /// The pool's counters when it stopped.
    pub stats: PoolStats,
    /// The pool's threads that had not stopped when shutdown returned,
    /// each described with what it is blocked in: a heartbeat thread in a
    /// [`crate::worker::Backend::extend`] that has not returned by the
    /// deadline (or one heartbeat interval after it, if it had passed) is
    /// left running detached, and exits when the call returns. Empty
    /// after a clean shutdown.
    pub stuck: Vec<String>,
}
