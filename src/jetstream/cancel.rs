//! Cancelling a job that waits to run: one compare-and-set of its record
//! to `Purged`.
//!
//! The record is the job (see `lease::decide`): a delivery of a job whose
//! record is `Purged` is acknowledged and skipped, so a cancelled job's
//! messages need not be found. A ready copy stays in the work stream
//! until a consumer meets and drops it (`JetStream::stats` counts it as
//! waiting until then); a delayed copy's schedule is purged before the
//! cancel returns, so a far-off reminder does not linger for days, nor
//! fire after its `Purged` record aged out (a retry's next copy published
//! after the cancel is purged by the worker that published it:
//! `finish_retry`).
//!
//! A job delayed for longer than `retention` outlives its record (the
//! bucket's `max_age`): its status reads `Unknown` until it is leased.
//! The reminder that most wants cancelling is such a job, so a cancel
//! that finds no record looks for the job's first copy waiting for its
//! schedule and, if it is there, creates the record as `Purged` from the
//! copy's headers (a copy that fires later meets it and is skipped).
//!
//! What can be cancelled is what `status` reports as waiting: `Queued`,
//! `Delayed`, `Retrying` and an `InFlight` record whose lease ran out by
//! the wall clock. A live lease, a dead-lettering (`Dying`) and a redrive
//! (`Redriving`) are refused with `InFlight`: another party is moving the
//! job, and a cancel in the middle could strand its dead letter.

use async_nats::jetstream::stream::LastRawMessageErrorKind;

use crate::error::{Error, ErrorKind, Result};
use crate::jetstream::headers::JobHeaders;
use crate::jetstream::nats_err;
use crate::jetstream::record::{now_ms, Record, State};
use crate::jetstream::setup::{Cas, Inner};

/// Whether `rec` (of job `id`) may be cancelled at `now`; the refusal
/// if not.
pub(crate) fn check_cancellable(id: u64, rec: &Record, now: u64) -> Result<()> {
    let busy = |what: String| Err(Error::new(ErrorKind::InFlight, what));
    match rec.state {
        State::Queued | State::Delayed | State::Retrying => Ok(()),
        State::InFlight if rec.lease_expires_ms <= now => Ok(()),
        State::InFlight => busy(format!(
            "job {id} is leased (attempt {}): settle it from its worker, or cancel it once its lease ends",
            rec.attempts
        )),
        State::Dying => busy(format!(
            "job {id} is being moved to the dead letters: purge it once it is there"
        )),
        State::Redriving => busy(format!(
            "job {id} is being sent back from the dead letters: cancel it once it is queued"
        )),
        State::Dead => Err(Error::new(
            ErrorKind::NotFound,
            format!("job {id} is a dead letter, not a waiting job: purge it instead"),
        )),
        State::Done | State::Purged => Err(not_waiting(id)),
    }
}

fn not_waiting(id: u64) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no job {id} waits in this queue (never issued, finished, or aged out)"),
    )
}

impl Inner {
    /// Cancels job `id` (see the module's documentation). A record that
    /// changes meanwhile (a worker leased the job) is read and checked
    /// again.
    pub(crate) async fn cancel(&self, id: u64) -> Result<()> {
        loop {
            let Some((rec, rev)) = self.record(id).await? else {
                match self.cancel_aged_out(id).await? {
                    true => return Ok(()),
                    false => continue, // a record appeared meanwhile
                }
            };
            if rec.state == State::Purged {
                // Cancelled already, perhaps by a call that failed after
                // its write (a lost reply, a failed purge of the
                // schedule): finish what it left, then say so.
                self.drop_schedule(id, &rec).await?;
            }
            check_cancellable(id, &rec, now_ms())?;
            if let Cas::Written(_) = self.cas(id, &rec.purged(), rev).await? {
                self.drop_schedule(id, &rec).await?;
                return Ok(());
            }
        }
    }

    /// Cancels job `id`, which has no record: if its first copy waits for
    /// its schedule, a `Purged` record is created from the copy's headers
    /// and the schedule purged (`true`; `false` if a record was created
    /// meanwhile). Otherwise the job is not waiting, or not known:
    /// `NotFound`.
    async fn cancel_aged_out(&self, id: u64) -> Result<bool> {
        let subject = self.cfg.sched_subject(id, 0);
        let msg = match self.work.get_last_raw_message_by_subject(&subject).await {
            Ok(msg) => msg,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Err(not_waiting(id))
            }
            Err(e) => return Err(nats_err(&format!("read {subject}"), e)),
        };
        let h = JobHeaders::parse(Some(&msg.headers)).filter(|h| h.id == id);
        let Some(h) = h else {
            return Err(not_waiting(id));
        };
        match self.create(id, &Record::of_copy(&h).purged()).await? {
            Cas::Written(_) => {
                self.purge_schedule(id, h.copy).await?;
                Ok(true)
            }
            Cas::Stale => Ok(false),
        }
    }

    /// Purges the schedule of `rec`'s live copy, if it may wait for one: a
    /// delayed or retrying copy due later, and whatever a `Purged` record
    /// names (a record made from an aged-out copy's headers holds no due
    /// time; purging a subject with no message is a no-op).
    async fn drop_schedule(&self, id: u64, rec: &Record) -> Result<()> {
        let waits = match rec.state {
            State::Delayed | State::Retrying => rec.due_ms > now_ms(),
            State::Purged => true,
            _ => false,
        };
        if waits {
            self.purge_schedule(id, rec.copy).await?;
        }
        Ok(())
    }

    /// Purges the schedule of copy `copy` of job `id` from the stream.
    ///
    /// A cancel returns `Ok` only once this succeeded: a schedule that
    /// outlives the `Purged` record (a delay longer than `retention`)
    /// would fire after the record aged out, and its copy would run as a
    /// job whose record aged out. A failure is the cancel's error; the
    /// record says `Purged` already, and a cancel called again purges
    /// the schedule before it answers `NotFound`. A schedule that fires
    /// meanwhile delivers a copy that meets the record and is skipped.
    pub(crate) async fn purge_schedule(&self, id: u64, copy: u32) -> Result<()> {
        let subject = self.cfg.sched_subject(id, copy);
        self.work
            .purge()
            .filter(&subject)
            .await
            .map(drop)
            .map_err(|e| {
                nats_err(
                    &format!("purge the schedule {subject} of cancelled job {id}"),
                    e,
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_waiting_records_can_be_cancelled() {
        let now = 1_000_000;
        let mut rec = Record::new(3, 0, None);
        let kind = |rec: &Record| check_cancellable(7, rec, now).map_err(|e| e.kind());
        for state in [State::Queued, State::Delayed, State::Retrying] {
            rec.state = state;
            assert_eq!(kind(&rec), Ok(()), "{state:?}");
        }
        rec.state = State::InFlight;
        rec.lease_expires_ms = now + 1;
        assert_eq!(kind(&rec), Err(ErrorKind::InFlight));
        rec.lease_expires_ms = now;
        assert_eq!(kind(&rec), Ok(()), "a lease that ran out");
        for state in [State::Dying, State::Redriving] {
            rec.state = state;
            assert_eq!(kind(&rec), Err(ErrorKind::InFlight), "{state:?}");
        }
        for state in [State::Done, State::Dead, State::Purged] {
            rec.state = state;
            assert_eq!(kind(&rec), Err(ErrorKind::NotFound), "{state:?}");
        }
    }
}
