//! Dequeue without blocking a runtime thread: `Queue::dequeue_async`, and
//! the [`AsyncBackend`] trait an async worker pool leases through.
//!
//! How it waits. Leasing a ready job is quick and never fsyncs (the lease
//! record is written, not synced), so it runs inline on the runtime
//! thread. When no job is ready, the task registers its waker with the
//! queue's [`AsyncWait`](crate::worker::async_wait) list, which the queue
//! wakes wherever it notifies its condvar (enqueue, nack, redrive, close),
//! and sleeps on a tokio timer until the next delayed job or lease comes
//! due. No thread is parked per waiter and nothing polls.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::job::{Job, Receipt};
use crate::queue::Queue;
use crate::worker::backend::{Backend, Delivery};

/// A [`Backend`] that can wait for a job without blocking the async
/// runtime's thread: what an [`AsyncWorkerPool`](crate::worker::AsyncWorkerPool)
/// leases through. [`Queue`] implements it.
///
/// Settles and extensions stay synchronous (they may fsync); the async
/// pool runs them with `tokio::task::spawn_blocking`.
pub trait AsyncBackend: Backend {
    /// Leases the next ready job for `visibility`, waiting up to `wait`
    /// for one without blocking the thread. `Ok(None)` when none became
    /// ready. Dropping the future before it completes leases nothing.
    fn lease_async(
        &self,
        visibility: Duration,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<Delivery<Self::Lease>>>> + Send;
}

impl Queue {
    /// Leases the next ready job for `visibility`, waiting up to `wait`
    /// for one without blocking the runtime thread (a tokio timer and the
    /// queue's wakers; no `spawn_blocking`). Wakes on enqueue, on a retry
    /// or delay coming due and on an expiring lease.
    ///
    /// Cancel safe: dropping the future before it completes leases nothing.
    /// Needs a tokio runtime with its timer (the `time` driver) enabled.
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = walq::Queue::open(dir.path())?;
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// rt.block_on(async {
    ///     let producer = q.clone();
    ///     std::thread::spawn(move || producer.enqueue(b"hello"));
    ///     let job = q
    ///         .dequeue_async(Duration::from_secs(30), Duration::from_secs(60))
    ///         .await?
    ///         .expect("woken by the enqueue");
    ///     q.ack(job.receipt())
    /// })?;
    /// # Ok(()) }
    /// ```
    pub async fn dequeue_async(&self, visibility: Duration, wait: Duration) -> Result<Option<Job>> {
        let deadline = tokio::time::Instant::from_std(crate::clock::deadline(wait));
        loop {
            // The epoch is taken before the look, so an enqueue between
            // the look and the wait wakes the wait.
            let since = self.async_wait().epoch();
            if let Some(job) = self.dequeue_for(visibility)? {
                return Ok(Some(job));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Sleep until the next job or lease comes due (at least 1 ms,
            // as the blocking wait does), the deadline, or a wake.
            let until = match self.next_due_in(&[self.queue_id()]) {
                // A job due centuries ahead (a delay of `Duration::MAX`)
                // waits for the deadline.
                Some(due) => now
                    .checked_add(due.max(Duration::from_millis(1)))
                    .map_or(deadline, |at| deadline.min(at)),
                None => deadline,
            };
            let sleep = timer(|| tokio::time::sleep_until(until))?;
            tokio::select! {
                () = self.async_wait().changed(since) => {}
                () = sleep => {}
            }
        }
    }
}

/// Refuses a runtime without its timer (`enable_time`): tokio panics at
/// the first sleep there, which in a worker pool killed a task silently
/// (its error path sleeps too) and then `shutdown` itself (a review found
/// it). Creating a sleep is what panics, so the check creates one, and
/// the panic (printed by the panic hook) becomes an error.
pub(crate) fn check_timers() -> Result<()> {
    timer(|| tokio::time::sleep(Duration::ZERO)).map(drop)
}

/// The sleep `make` creates, or [`check_timers`]'s error where the
/// runtime has no timer (a wait makes its own sleep this way, not a
/// second one to check first).
fn timer(make: impl FnOnce() -> tokio::time::Sleep) -> Result<tokio::time::Sleep> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(make)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOptions,
            "the tokio runtime has no timer: build it with `enable_time()` (or `enable_all()`)",
        )
    })
}

impl AsyncBackend for Queue {
    async fn lease_async(
        &self,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Option<Delivery<Receipt>>> {
        let job = self.dequeue_async(visibility, wait).await?;
        Ok(job.map(|job| crate::worker::queue_backend::delivery_of(self, job)))
    }
}
