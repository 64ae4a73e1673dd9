//! [`Backend`] for the embedded [`Queue`].

use std::time::Duration;

use crate::error::{Error, Result};
use crate::job::Receipt;
use crate::options::{EnqueueOptions, Retry};
use crate::queue::{Enqueued, Queue};
use crate::worker::backend::{Backend, Delivery};
use crate::worker::status::JobStatus;

impl Backend for Queue {
    type Lease = Receipt;

    fn enqueue(&self, payload: &[u8], opts: EnqueueOptions) -> Result<Enqueued> {
        self.enqueue_with(payload, opts)
    }

    fn lease(&self, visibility: Duration, wait: Duration) -> Result<Option<Delivery<Receipt>>> {
        let Some(job) = self.dequeue_wait(visibility, wait)? else {
            return Ok(None);
        };
        let delivery = Delivery::new(job.id(), job.payload().to_vec(), job.receipt())
            .attempts(job.attempt(), job.max_attempts())
            .idempotency_key(job.idempotency_key().map(<[u8]>::to_vec));
        Ok(Some(delivery))
    }

    fn complete(&self, lease: &Receipt, result: Option<&[u8]>) -> Result<()> {
        // Wired to `Queue::ack_with_result` when the job-status branch
        // merges; until then a result is not kept.
        let _ = result;
        self.ack(*lease)
    }

    fn complete_batch(&self, items: &[(&Receipt, Option<&[u8]>)]) -> Vec<Result<()>> {
        // Results are not kept yet (see `complete`).
        let receipts: Vec<Receipt> = items.iter().map(|(lease, _)| **lease).collect();
        match self.ack_batch(&receipts) {
            Ok(results) => results,
            // Nothing in the batch is acknowledged: each item fails alike.
            Err(e) => items
                .iter()
                .map(|_| Err(Error::new(e.kind(), e.to_string())))
                .collect(),
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
        // Wired to `Queue::status` when the job-status branch merges; until
        // then only the dead letters can be told apart.
        Ok(match self.dead_letter(id)? {
            Some(_) => JobStatus::Dead,
            None => JobStatus::Unknown,
        })
    }
}
