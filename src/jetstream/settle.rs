//! Settling and extending a lease. Each is a compare-and-set on the job's
//! record at the revision the lease last wrote: a lease replaced by a later
//! delivery (or one that ran out) changes nothing and gets `LeaseLost`.
//!
//! A settle that returned an error may be repeated: when its write was
//! stored after all (a lost reply), the repeat finishes what the first
//! left undone and returns `Ok` (see `finish_repeat`). A settle that
//! returned `Ok` spends the lease: any settle after it is `LeaseLost`.

use std::time::Duration;

use crate::done::MAX_RESULT_LEN;
use crate::error::{Error, ErrorKind, Result};
use crate::jetstream::backend::{Held, JetStreamLease, Settle};
use crate::jetstream::headers::{random_id, JobHeaders};
use crate::jetstream::record::{ms_after, now_ms, Record, State};
use crate::jetstream::setup::{Cas, Inner};
use crate::jetstream::{lease_lost, nats_err};
use crate::options::MAX_ERROR_LEN;

/// Whether a requeue counts the attempt the lease started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// A retry: the attempt was made (on the last one, a dead letter).
    Counted,
    /// A release: the worker stopped, the job did not fail.
    GivenBack,
}

impl Inner {
    /// Writes the record `next` makes of the lease's own, at the lease's
    /// revision, and keeps it as the lease's; `LeaseLost` if the lease
    /// expired, was settled, or another delivery took the job. A write
    /// whose reply never came is kept as `unsure` (see `Held`).
    /// `settle`: the settle this write begins (kept in `Held::unfinished`
    /// until the settle returns `Ok`), `None` for an extension.
    /// `expires_ms`: the lease's new deadline by its clock (an extension),
    /// or `None` to keep it.
    async fn fenced(
        &self,
        lease: &JetStreamLease,
        held: &mut Held,
        settle: Option<Settle>,
        expires_ms: Option<u64>,
        next: impl FnOnce(&Record) -> Record,
    ) -> Result<()> {
        let id = lease.state.headers.id;
        self.resolve_unsure(id, held).await?;
        if held.rec.state != State::InFlight {
            return Err(lease_lost(id, "the lease was settled already"));
        }
        if held.expires_ms < held.clock.now_ms() {
            return Err(lease_lost(id, "the lease expired"));
        }
        let next = next(&held.rec);
        let expires_ms = expires_ms.unwrap_or(held.expires_ms);
        held.unfinished = settle;
        match self.cas(id, &next, held.rev).await {
            Ok(Cas::Written(rev)) => {
                held.rec = next;
                held.rev = rev;
                held.expires_ms = expires_ms;
                Ok(())
            }
            Ok(Cas::Stale) => Err(lease_lost(id, "another delivery holds the job")),
            Err(e) => {
                held.unsure = Some((next, expires_ms));
                Err(e)
            }
        }
    }

    /// Finds out whether the lease's `unsure` write was stored: if the
    /// record is exactly that write, the lease goes on from it. (Another
    /// delivery's lease writes other attempts and another delivery, and
    /// every later write starts from one of those.) Otherwise the write
    /// was not stored, or was overwritten, and the CAS at the lease's
    /// revision tells which.
    ///
    /// Without it, a heartbeat whose reply was lost left the lease at the
    /// revision before its own write, and every later heartbeat and
    /// settle of a job this worker still held got `LeaseLost`.
    async fn resolve_unsure(&self, id: u64, held: &mut Held) -> Result<()> {
        let Some((unsure, expires_ms)) = held.unsure.take() else {
            return Ok(());
        };
        match self.record(id).await {
            Ok(Some((rec, rev))) if rec == unsure => {
                held.rec = rec;
                held.rev = rev;
                held.expires_ms = expires_ms;
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                held.unsure = Some((unsure, expires_ms));
                Err(e)
            }
        }
    }

    /// A repeat of `kind`, the settle of this lease that returned an
    /// error: if that settle's write is stored (read back, see
    /// `resolve_unsure`), finishes the steps after it that may not have
    /// happened and returns `true`; `false` when the settle is to be
    /// made (again) as usual.
    ///
    /// Before, the repeat found its own settle stored and got `LeaseLost`
    /// ("settled already"), so a worker whose `complete` lost its reply
    /// could not learn that the job was done, and a retry or dead-letter
    /// left half done waited for AckWait to be finished by a redelivery.
    async fn finish_repeat(
        &self,
        lease: &JetStreamLease,
        held: &mut Held,
        kind: Settle,
    ) -> Result<bool> {
        let id = lease.state.headers.id;
        self.resolve_unsure(id, held).await?;
        if held.unfinished != Some(kind) || held.rec.state == State::InFlight {
            return Ok(false);
        }
        let (h, payload) = (&lease.state.headers, &lease.state.payload);
        if kind != Settle::Complete {
            // The steps after the intent end by writing the record: while
            // it is still at the intent's revision, they may not be done.
            // (Done again, they publish the same message id: no copy.)
            let current = self.record(id).await?.map(|(_, rev)| rev);
            if current == Some(held.rev) {
                match kind {
                    Settle::Retry | Settle::Release => {
                        self.finish_retry(h, payload, &held.rec, held.rev).await?;
                    }
                    _ => self.finish_dead(h, payload, &held.rec, held.rev).await?,
                }
            }
        }
        self.ack(&lease.state.reply).await;
        held.unfinished = None;
        Ok(true)
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
        if self
            .finish_repeat(lease, &mut held, Settle::Complete)
            .await?
        {
            return Ok(());
        }
        self.fenced(lease, &mut held, Some(Settle::Complete), None, |rec| {
            let mut done = rec.clone();
            done.state = State::Done;
            done.result = result;
            done.finished_ms = now_ms();
            done
        })
        .await?;
        self.ack(&lease.state.reply).await;
        held.unfinished = None;
        Ok(())
    }

    pub(crate) async fn retry(
        &self,
        lease: &JetStreamLease,
        delay: Option<Duration>,
        error: &str,
    ) -> Result<()> {
        if let Some(delay) = delay {
            crate::options::check_delay("a retry's delay", delay)?;
        }
        self.requeue(lease, delay, error, Attempt::Counted).await
    }

    /// Gives the job back ready now with the attempt its lease counted
    /// taken back (a worker that stopped): a retry due now whose record
    /// and next copy carry one attempt fewer, never a dead letter.
    pub(crate) async fn release(&self, lease: &JetStreamLease, error: &str) -> Result<()> {
        let now = Some(Duration::ZERO);
        self.requeue(lease, now, error, Attempt::GivenBack).await
    }

    /// Publishes the job's next copy, due after `delay` (the backoff's
    /// when `None`), or on a counted last attempt sends it to the dead
    /// letters.
    async fn requeue(
        &self,
        lease: &JetStreamLease,
        delay: Option<Duration>,
        error: &str,
        attempt: Attempt,
    ) -> Result<()> {
        let mut held = lease.state.held.lock().await;
        let kind = match attempt {
            Attempt::Counted => Settle::Retry,
            Attempt::GivenBack => Settle::Release,
        };
        if self.finish_repeat(lease, &mut held, kind).await? {
            return Ok(());
        }
        if attempt == Attempt::Counted && held.rec.attempts >= held.rec.max_attempts {
            drop(held);
            return self.fail(lease, error).await;
        }
        let Some(copy) = held.rec.next_copy() else {
            // No copy number left to publish a retry under: the job dies
            // with the reason, rather than wrap to a copy the stream drops.
            drop(held);
            let why = format!(
                "{error} (no retry: its copy number {} cannot grow)",
                u32::MAX
            );
            return self.fail(lease, &why).await;
        };
        let delay = delay.unwrap_or_else(|| {
            let random = (random_id() >> 11) as f64 / (1u64 << 52) as f64;
            self.cfg.backoff.delay(held.rec.attempts, random)
        });
        // Intent first: the record names the new copy before it exists, so
        // a crash before the publish is finished by the next delivery of
        // this one (`Decision::FinishRetry`).
        self.fenced(lease, &mut held, Some(kind), None, |rec| {
            let mut retrying = rec.clone();
            retrying.state = State::Retrying;
            retrying.copy = copy;
            retrying.msg_seq = 0;
            retrying.due_ms = ms_after(now_ms(), delay);
            retrying.lease_expires_ms = 0;
            retrying.error = Some(error_text(error));
            if attempt == Attempt::GivenBack {
                retrying.attempts = rec.attempts.saturating_sub(1);
            }
            retrying
        })
        .await?;
        let (h, payload) = (&lease.state.headers, &lease.state.payload);
        self.finish_retry(h, payload, &held.rec, held.rev).await?;
        self.ack(&lease.state.reply).await;
        held.unfinished = None;
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
            attempts: rec.attempts,
            ..h.clone()
        };
        self.publish_copy(&next, payload, rec.due_ms).await?;
        let mut waiting = rec.clone();
        waiting.state = if rec.due_ms > now_ms() {
            State::Delayed
        } else {
            State::Queued
        };
        // Stale: the new copy was leased already (its record is newer), or
        // the job was cancelled while it waited to be published. A
        // cancel purged the schedule before this publish, perhaps: purge
        // it here, or it could fire after the `Purged` record aged out.
        if let Cas::Stale = self.cas(h.id, &waiting, rev).await? {
            if let Some((now, _)) = self.record(h.id).await? {
                if now.state == State::Purged && now.copy == rec.copy && rec.due_ms > now_ms() {
                    self.purge_schedule(h.id, rec.copy).await?;
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn fail(&self, lease: &JetStreamLease, error: &str) -> Result<()> {
        let mut held = lease.state.held.lock().await;
        if self.finish_repeat(lease, &mut held, Settle::Fail).await? {
            return Ok(());
        }
        self.fenced(lease, &mut held, Some(Settle::Fail), None, |rec| {
            let mut dying = rec.clone();
            dying.state = State::Dying;
            dying.error = Some(error_text(error));
            dying
        })
        .await?;
        let (h, payload) = (&lease.state.headers, &lease.state.payload);
        self.finish_dead(h, payload, &held.rec, held.rev).await?;
        self.ack(&lease.state.reply).await;
        held.unfinished = None;
        Ok(())
    }

    pub(crate) async fn extend(&self, lease: &JetStreamLease, visibility: Duration) -> Result<()> {
        self.cfg.check_visibility(visibility)?;
        let mut held = lease.state.held.lock().await;
        // The record gets the wall time (`status` reads it), the lease
        // the same deadline by its own clock (see `Held::expires_ms`).
        let until = ms_after(held.clock.now_ms(), visibility);
        let wall_until = ms_after(now_ms(), visibility);
        self.fenced(lease, &mut held, None, Some(until), |rec| {
            let mut extended = rec.clone();
            extended.lease_expires_ms = wall_until;
            extended
        })
        .await?;
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
