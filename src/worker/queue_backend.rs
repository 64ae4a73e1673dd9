//! [`Backend`] for the embedded [`Queue`].

use std::time::Duration;

use crate::error::Result;
use crate::job::{Job, Receipt};
use crate::options::{EnqueueOptions, Retry};
use crate::queue::{Enqueued, Queue};
use crate::status::JobStatus;
use crate::worker::backend::{Backend, Delivery};

/// What a worker sees of a leased job (shared with the async pool).
pub(crate) fn delivery_of(job: Job) -> Delivery<Receipt> {
    Delivery::new(job.id(), job.payload().to_vec(), job.receipt())
        .attempts(job.attempt(), job.max_attempts())
        .idempotency_key(job.idempotency_key().map(<[u8]>::to_vec))
}

impl Backend for Queue {
    type Lease = Receipt;

    fn enqueue(&self, payload: &[u8], opts: EnqueueOptions) -> Result<Enqueued> {
        self.enqueue_with(payload, opts)
    }

    fn lease(&self, visibility: Duration, wait: Duration) -> Result<Option<Delivery<Receipt>>> {
        Ok(self.dequeue_wait(visibility, wait)?.map(delivery_of))
    }

    fn complete(&self, lease: &Receipt, result: Option<&[u8]>) -> Result<()> {
        match result {
            None => self.ack(*lease),
            Some(result) => self.ack_with_result(*lease, result),
        }
    }

    fn retry(&self, lease: &Receipt, delay: Option<Duration>, error: &str) -> Result<()> {
        let retry = delay.map_or(Retry::Backoff, Retry::After);
        self.nack(*lease, retry, error)
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
}
