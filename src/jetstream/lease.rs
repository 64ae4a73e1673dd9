//! Leasing: pull one delivery, reconcile it with the job's record, and
//! take the lease with a compare-and-set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::Message;
use futures_util::StreamExt;

use crate::error::Result;
use crate::jetstream::backend::JetStreamLease;
use crate::jetstream::headers::JobHeaders;
use crate::jetstream::nats_err;
use crate::jetstream::record::{ms_after, now_ms, LeaseClock, Record, State};
use crate::jetstream::setup::{Cas, Inner};
use crate::worker::Delivery;

/// What to do with a delivery, given the job's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Lease it to the caller.
    Lease,
    /// Settled already, or an older or duplicate copy: acknowledge it.
    Skip,
    /// A retry whose new copy may not have been published: publish it,
    /// then acknowledge this one.
    FinishRetry,
    /// A dead-lettering that may not have reached the dead letters:
    /// finish it, then acknowledge this one.
    FinishDead,
    /// Redelivered after the lease of its last attempt expired: dead.
    Exhausted,
}

/// What the delivery of copy `h.copy` at stream sequence `seq` means for
/// a job whose record is `rec`.
pub(crate) fn decide(rec: &Record, h: &JobHeaders, seq: u64) -> Decision {
    if matches!(rec.state, State::Done | State::Dead | State::Purged) {
        return Decision::Skip;
    }
    if h.copy < rec.copy {
        return if rec.state == State::Retrying {
            Decision::FinishRetry
        } else {
            Decision::Skip
        };
    }
    if h.copy == rec.copy {
        if rec.state == State::Dying {
            return Decision::FinishDead;
        }
        // Another message of the copy already leased: a duplicate publish.
        if rec.msg_seq != 0 && rec.msg_seq != seq {
            return Decision::Skip;
        }
        if rec.state == State::InFlight && rec.attempts >= rec.max_attempts {
            return Decision::Exhausted;
        }
    }
    Decision::Lease
}

/// What became of a lease's first write (see `Inner::take_lease`).
enum Taken {
    /// Written, at this revision: the lease is handed out.
    Rev(u64),
    /// The record changed meanwhile: reconcile the delivery again.
    Stale,
    /// Written, but the lease ran out before that was known: not handed
    /// out, its delivery left to come back after AckWait.
    Spent,
}

/// What leasing reads of a delivery: its stream sequence, its reply
/// subject, its job headers (a message without them is job `seq`, copy
/// 0, with the configured max attempts) and its payload.
struct Incoming {
    seq: u64,
    reply: String,
    h: JobHeaders,
    payload: Vec<u8>,
}

impl Inner {
    /// Leases the next job, waiting up to `wait` for one.
    pub(crate) async fn lease(
        self: Arc<Self>,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Option<Delivery<JetStreamLease>>> {
        self.cfg.check_visibility(visibility)?;
        let deadline = crate::clock::deadline(wait);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(msg) = self.next_message(left).await? else {
                return Ok(None);
            };
            if let Some(delivery) = self.take(msg, visibility).await? {
                return Ok(Some(delivery));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    async fn next_message(&self, wait: Duration) -> Result<Option<Message>> {
        let mut batch = self
            .consumer
            .batch()
            .max_messages(1)
            .expires(wait.max(Duration::from_millis(10)))
            .messages()
            .await
            .map_err(|e| {
                nats_err(
                    &format!("pull request to consumer {}", self.cfg.consumer()),
                    e,
                )
            })?;
        match batch.next().await {
            Some(Ok(msg)) => Ok(Some(msg)),
            Some(Err(e)) => Err(nats_err(
                &format!("pull from consumer {}", self.cfg.consumer()),
                e,
            )),
            None => Ok(None),
        }
    }

    /// Reads delivery `msg` (see `Incoming`).
    fn incoming(&self, msg: &Message) -> Result<Incoming> {
        let seq = msg
            .info()
            .map_err(|e| {
                nats_err(
                    &format!(
                        "ack subject of a delivery from consumer {}",
                        self.cfg.consumer()
                    ),
                    e,
                )
            })?
            .stream_sequence;
        let reply = msg
            .reply
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default();
        let h = JobHeaders::parse(msg.headers.as_ref()).unwrap_or(JobHeaders {
            id: seq,
            copy: 0,
            max_attempts: self.cfg.max_attempts,
            key: None,
            attempts: 0,
        });
        let payload = msg.payload.to_vec();
        Ok(Incoming {
            seq,
            reply,
            h,
            payload,
        })
    }

    /// Writes `leased`, the record of a new lease (attempt counted), at
    /// `rev`: its revision, `Stale` when the record changed meanwhile, or
    /// `Spent` when the write was confirmed only once the lease (ending
    /// at `expires_ms` by `clock`) had run out.
    ///
    /// A write whose reply never came (a request timeout, a connection
    /// lost) may have been stored: the record is read back and, when it
    /// is exactly this write, the lease goes on from it. (Another
    /// delivery's lease writes another deadline; nothing else writes an
    /// in-flight record of this delivery.) Before, the error went to the
    /// caller with the attempt counted, the delivery came back after
    /// AckWait, and its lease counted a second attempt: a job with max
    /// attempts N died after N - 1 runs. When the write is found not
    /// stored, or the read fails too, the error goes to the caller: the
    /// delivery comes back after AckWait (in the second case with the
    /// attempt perhaps counted).
    ///
    /// A lease is not handed out once it has run out (a write or read
    /// back that took its whole visibility, as one whose reply was lost
    /// does when the request timeout is longer): its AckWait has passed
    /// too, another worker may lease the job, and a pool would think it
    /// fresh for a whole visibility. Its delivery comes back after
    /// AckWait, with this attempt counted.
    async fn take_lease(
        &self,
        id: u64,
        leased: &Record,
        rev: u64,
        (clock, expires_ms): (LeaseClock, u64),
    ) -> Result<Taken> {
        let rev = match self.cas(id, leased, rev).await {
            Ok(Cas::Written(rev)) => rev,
            Ok(Cas::Stale) => return Ok(Taken::Stale),
            Err(e) => match self.record(id).await {
                Ok(Some((rec, rev))) if rec == *leased => rev,
                _ => return Err(e),
            },
        };
        if clock.now_ms() >= expires_ms {
            return Ok(Taken::Spent);
        }
        Ok(Taken::Rev(rev))
    }

    /// Reconciles one delivery with its record; leases it, or settles
    /// what an earlier crash left half done and returns `None` (also
    /// `None`, the delivery not acked, for a lease that ran out before
    /// its write was confirmed: see `take_lease`).
    async fn take(
        &self,
        msg: Message,
        visibility: Duration,
    ) -> Result<Option<Delivery<JetStreamLease>>> {
        let Incoming {
            seq,
            reply,
            h,
            payload,
        } = self.incoming(&msg)?;
        loop {
            let (rec, rev) = match self.record(h.id).await? {
                Some(found) => found,
                // The record aged out of the bucket (or was never written):
                // the message is the job, with the attempts it carries.
                None => {
                    let rec = Record::of_copy(&h);
                    match self.create(h.id, &rec).await? {
                        Cas::Written(rev) => (rec, rev),
                        Cas::Stale => continue,
                    }
                }
            };
            match decide(&rec, &h, seq) {
                Decision::Skip => {}
                Decision::FinishRetry => self.finish_retry(&h, &payload, &rec, rev).await?,
                Decision::FinishDead => self.finish_dead(&h, &payload, &rec, rev).await?,
                Decision::Exhausted => {
                    let why = format!("lease expired during attempt {}", rec.attempts);
                    let mut dying = rec.clone();
                    dying.state = State::Dying;
                    dying.error = Some(why);
                    match self.cas(h.id, &dying, rev).await? {
                        Cas::Written(rev) => self.finish_dead(&h, &payload, &dying, rev).await?,
                        Cas::Stale => continue,
                    }
                }
                Decision::Lease => {
                    let mut leased = rec.leased_again();
                    leased.copy = h.copy;
                    leased.msg_seq = seq;
                    let clock = LeaseClock::start();
                    // The record's deadline is a wall time (`status`
                    // reads it); the lease checks its own by `clock`.
                    leased.lease_expires_ms = ms_after(now_ms(), visibility);
                    let expires_ms = ms_after(clock.now_ms(), visibility);
                    let deadline = (clock, expires_ms);
                    let rev = match self.take_lease(h.id, &leased, rev, deadline).await? {
                        Taken::Rev(rev) => rev,
                        Taken::Stale => continue,
                        Taken::Spent => return Ok(None),
                    };
                    let lease = JetStreamLease::new(
                        h.clone(),
                        reply,
                        payload.clone(),
                        leased.clone(),
                        rev,
                        clock,
                        expires_ms,
                    );
                    let delivery = Delivery::new(h.id, payload, lease)
                        .attempts(leased.attempts, leased.max_attempts)
                        .idempotency_key(leased.key.clone())
                        .queue(self.queue_name.clone())
                        .provider_scope(self.provider_scope.clone());
                    return Ok(Some(delivery));
                }
            }
            self.ack(&reply).await;
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(copy: u32) -> JobHeaders {
        JobHeaders {
            id: 1,
            copy,
            max_attempts: 3,
            key: None,
            attempts: 0,
        }
    }

    #[test]
    fn deliveries_are_reconciled_with_the_record() {
        let mut rec = Record::new(3, 0, None);
        assert_eq!(decide(&rec, &h(0), 10), Decision::Lease);
        rec.state = State::InFlight;
        rec.attempts = 1;
        rec.msg_seq = 10;
        // A redelivery of the same message after its lease expired.
        assert_eq!(decide(&rec, &h(0), 10), Decision::Lease);
        // A second message of the same copy.
        assert_eq!(decide(&rec, &h(0), 11), Decision::Skip);
        rec.attempts = 3;
        assert_eq!(decide(&rec, &h(0), 10), Decision::Exhausted);
        rec.state = State::Retrying;
        rec.copy = 1;
        rec.msg_seq = 0;
        assert_eq!(decide(&rec, &h(0), 10), Decision::FinishRetry);
        assert_eq!(decide(&rec, &h(1), 12), Decision::Lease);
        rec.state = State::Dying;
        assert_eq!(decide(&rec, &h(1), 12), Decision::FinishDead);
        rec.state = State::Done;
        assert_eq!(decide(&rec, &h(1), 12), Decision::Skip);
    }
}
