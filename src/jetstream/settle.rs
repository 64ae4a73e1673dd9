//! Settling and extending a lease. Each is a compare-and-set on the job's
//! record at the revision the lease last wrote: a lease replaced by a later
//! delivery (or one that ran out) changes nothing and gets `LeaseLost`.

use std::time::Duration;

use crate::done::MAX_RESULT_LEN;
use crate::error::{Error, ErrorKind, Result};
use crate::jetstream::backend::JetStreamLease;
use crate::jetstream::headers::{random_id, JobHeaders};
use crate::jetstream::record::{ms_after, now_ms, Record, State};
use crate::jetstream::setup::{Cas, Inner};
use crate::jetstream::{lease_lost, nats_err};
use crate::options::MAX_ERROR_LEN;

impl Inner {
    /// Writes `next` over the lease's record; the new revision, or
    /// `LeaseLost` if the lease expired or another delivery took the job.
    async fn fenced(
        &self,
        lease: &JetStreamLease,
        held: &(Record, u64),
        next: &Record,
    ) -> Result<u64> {
        let id = lease.state.headers.id;
        if held.0.state != State::InFlight {
            return Err(lease_lost(id, "the lease was settled already"));
        }
        if held.0.lease_expires_ms < now_ms() {
            return Err(lease_lost(id, "the lease expired"));
        }
        match self.cas(id, next, held.1).await? {
            Cas::Written(rev) => Ok(rev),
            Cas::Stale => Err(lease_lost(id, "another delivery holds the job")),
        }
    }

    pub(crate) async fn complete(
        &self,
        lease: &JetStreamLease,
        result: Option<Vec<u8>>,
    ) -> Result<()> {
        if result.as_ref().is_some_and(|r| r.len() > MAX_RESULT_LEN) {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!("a job result is at most {MAX_RESULT_LEN} bytes"),
            ));
        }
        let mut held = lease.state.held.lock().await;
        let mut done = held.0.clone();
        done.state = State::Done;
        done.result = result;
        done.finished_ms = now_ms();
        held.1 = self.fenced(lease, &held, &done).await?;
        held.0 = done;
        self.ack(&lease.state.reply).await;
        Ok(())
    }

    pub(crate) async fn retry(
        &self,
        lease: &JetStreamLease,
        delay: Option<Duration>,
        error: &str,
    ) -> Result<()> {
        let mut held = lease.state.held.lock().await;
        if held.0.attempts >= held.0.max_attempts {
            drop(held);
            return self.fail(lease, error).await;
        }
        let delay = delay.unwrap_or_else(|| {
            let random = (random_id() >> 11) as f64 / (1u64 << 52) as f64;
            self.cfg.backoff.delay(held.0.attempts, random)
        });
        // Intent first: the record names the new copy before it exists, so
        // a crash before the publish is finished by the next delivery of
        // this one (`Decision::FinishRetry`).
        let mut retrying = held.0.clone();
        retrying.state = State::Retrying;
        retrying.copy += 1;
        retrying.msg_seq = 0;
        retrying.due_ms = ms_after(now_ms(), delay);
        retrying.lease_expires_ms = 0;
        retrying.error = Some(error_text(error));
        let rev = self.fenced(lease, &held, &retrying).await?;
        held.1 = rev;
        held.0 = retrying.clone();
        self.finish_retry(&lease.state.headers, &lease.state.payload, &retrying, rev)
            .await?;
        self.ack(&lease.state.reply).await;
        Ok(())
    }

    /// Publishes the copy a `Retrying` record names, then marks it waiting.
    pub(crate) async fn finish_retry(
        &self,
        h: &JobHeaders,
        payload: &[u8],
        rec: &Record,
        rev: u64,
    ) -> Result<()> {
        let next = JobHeaders {
            copy: rec.copy,
            max_attempts: rec.max_attempts,
            key: rec.key.clone(),
            ..h.clone()
        };
        self.publish_copy(&next, payload, rec.due_ms).await?;
        let mut waiting = rec.clone();
        waiting.state = if rec.due_ms > now_ms() {
            State::Delayed
        } else {
            State::Queued
        };
        // Stale: the new copy was leased already; its record is newer.
        self.cas(h.id, &waiting, rev).await?;
        Ok(())
    }

    pub(crate) async fn fail(&self, lease: &JetStreamLease, error: &str) -> Result<()> {
        let mut held = lease.state.held.lock().await;
        let mut dying = held.0.clone();
        dying.state = State::Dying;
        dying.error = Some(error_text(error));
        let rev = self.fenced(lease, &held, &dying).await?;
        held.1 = rev;
        held.0 = dying.clone();
        self.finish_dead(&lease.state.headers, &lease.state.payload, &dying, rev)
            .await?;
        self.ack(&lease.state.reply).await;
        Ok(())
    }

    pub(crate) async fn extend(&self, lease: &JetStreamLease, visibility: Duration) -> Result<()> {
        self.cfg.check_visibility(visibility)?;
        let mut held = lease.state.held.lock().await;
        let mut extended = held.0.clone();
        extended.lease_expires_ms = ms_after(now_ms(), visibility);
        held.1 = self.fenced(lease, &held, &extended).await?;
        held.0 = extended;
        // Restarts the server's AckWait for this delivery.
        self.client
            .publish(lease.state.reply.clone(), "+WPI".into())
            .await
            .map_err(|e| {
                nats_err(
                    &format!("in-progress ack of job {}", lease.state.headers.id),
                    e,
                )
            })
    }
}

/// An error text as kept: at most `MAX_ERROR_LEN` bytes.
fn error_text(error: &str) -> String {
    let mut s = error.to_string();
    while s.len() > MAX_ERROR_LEN {
        s.pop();
    }
    s
}
