//! [`Backend`] for the embedded [`Queue`].

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::job::{Job, Receipt};
use crate::options::{EnqueueOptions, Retry};
use crate::queue::{Enqueued, Queue};
use crate::status::JobStatus;
use crate::worker::backend::{Backend, Delivery};

/// What a worker sees of a leased job of `queue` (shared with the async
/// pool). The job's payload moves into the delivery: no second copy per
/// job.
pub(crate) fn delivery_of(queue: &Queue, job: Job) -> Delivery<Receipt> {
    delivery_named(queue, job, name_of(queue))
}

/// What a worker sees of a leased job of `queue`'s store that came from
/// the queue called `name` (`None`: the default queue).
pub(crate) fn delivery_named(queue: &Queue, job: Job, name: Option<Arc<str>>) -> Delivery<Receipt> {
    let (id, receipt) = (job.id(), job.receipt());
    let (attempt, max_attempts) = (job.attempt(), job.max_attempts());
    let key = job.idempotency_key().map(<[u8]>::to_vec);
    let last_error = job.last_error.clone();
    let delivery = Delivery::new(id, job.into_payload(), receipt)
        .attempts(attempt, max_attempts)
        .idempotency_key(key)
        .last_error(last_error)
        .provider_scope(queue.provider_scope().clone());
    match name {
        Some(name) => delivery.queue(name),
        None => delivery,
    }
}

/// The name a handler sees for a job of `queue` (`JobContext::queue`):
/// `None` for the default queue (seen as `DEFAULT_QUEUE`, no lock taken),
/// else its name (read under the store's lock, as `Queue::name` does).
pub(crate) fn name_of(queue: &Queue) -> Option<Arc<str>> {
    (queue.queue_id() != 0).then(|| Arc::from(queue.name()))
}

impl Backend for Queue {
    type Lease = Receipt;

    fn enqueue(&self, payload: &[u8], opts: EnqueueOptions) -> Result<Enqueued> {
        self.enqueue_with(payload, opts)
    }

    fn lease(&self, visibility: Duration, wait: Duration) -> Result<Option<Delivery<Receipt>>> {
        Ok(self
            .dequeue_wait(visibility, wait)?
            .map(|job| delivery_of(self, job)))
    }

    fn lease_until_stopped(
        &self,
        visibility: Duration,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Delivery<Receipt>>> {
        Ok(self
            .dequeue_wait_unless(visibility, wait, stop)?
            .map(|job| delivery_of(self, job)))
    }

    /// Wakes the threads of this handle's queue blocked waiting for a job
    /// (and, spuriously, its async tasks and the `MultiQueue`s over it,
    /// which look again and wait on).
    fn wake_waiters(&self) {
        self.wake_stopping(&[self.queue_id()]);
    }

    fn complete(&self, lease: &Receipt, result: Option<&[u8]>) -> Result<()> {
        match result {
            None => self.ack(*lease),
            Some(result) => self.ack_with_result(*lease, result),
        }
    }

    fn complete_batch(&self, items: &[(&Receipt, Option<&[u8]>)]) -> Vec<Result<()>> {
        // Plain acks share one lock and one group commit; a job with a
        // result goes through `ack_with_result` (its record first).
        let plain: Vec<Receipt> = items
            .iter()
            .filter(|(_, result)| result.is_none())
            .map(|(lease, _)| **lease)
            .collect();
        let mut acked = match self.ack_batch(&plain) {
            Ok(results) => results.into_iter(),
            // Nothing in the batch is acknowledged: each plain ack fails alike.
            Err(e) => plain
                .iter()
                .map(|_| Err(Error::new(e.kind(), e.to_string())))
                .collect::<Vec<_>>()
                .into_iter(),
        };
        items
            .iter()
            .map(|(lease, result)| match result {
                Some(result) => self.ack_with_result(**lease, result),
                None => acked.next().unwrap_or_else(|| {
                    Err(Error::new(
                        crate::ErrorKind::Closed,
                        "ack batch ended early",
                    ))
                }),
            })
            .collect()
    }

    fn retry(&self, lease: &Receipt, delay: Option<Duration>, error: &str) -> Result<()> {
        let retry = delay.map_or(Retry::Backoff, Retry::After);
        self.nack(*lease, retry, error)
    }

    fn release(&self, lease: &Receipt, _error: &str) -> Result<()> {
        Queue::release(self, *lease)
    }

    fn fail(&self, lease: &Receipt, error: &str) -> Result<()> {
        Queue::fail(self, *lease, error)
    }

    fn extend(&self, lease: &Receipt, visibility: Duration) -> Result<()> {
        Queue::extend(self, *lease, visibility)
    }

    fn status(&self, id: u64) -> Result<JobStatus> {
        Queue::status(self, id)
    }

    fn cancel(&self, id: u64) -> Result<()> {
        Queue::cancel(self, id)
    }

    fn check_open(&self) -> Result<()> {
        Queue::check_open(self)
    }
}
