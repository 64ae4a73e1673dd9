//! Cancelling a job that waits to run: one compare-and-set of its record
//! to `Purged`.
//!
//! The record is the job (see `lease::decide`): a delivery of a job whose
//! record is `Purged` is acknowledged and skipped, so a cancelled job's
//! messages need not be found. A ready copy stays in the work stream
//! until a consumer meets and drops it (`JetStream::stats` counts it as
//! waiting until then); a delayed copy's schedule is purged at once, so a
//! far-off reminder does not linger for days.
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
            check_cancellable(id, &rec, now_ms())?;
            if let Cas::Written(_) = self.cas(id, &rec.purged(), rev).await? {
                self.drop_schedule(id, &rec).await;
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
                self.purge_schedule(id, h.copy).await;
                Ok(true)
            }
            Cas::Stale => Ok(false),
        }
    }

    /// Purges the schedule of `rec`'s live copy, if it waits for one.
    async fn drop_schedule(&self, id: u64, rec: &Record) {
        if matches!(rec.state, State::Delayed | State::Retrying) && rec.due_ms > now_ms() {
            self.purge_schedule(id, rec.copy).await;
        }
    }

    /// Purges the schedule of copy `copy` of job `id` from the stream. Best
    /// effort: the cancel is done once the record says `Purged`, and a
    /// schedule that fires all the same (the purge failed, or it fired
    /// meanwhile) delivers a copy that is skipped; until then `stats`
    /// counts it as delayed.
    async fn purge_schedule(&self, id: u64, copy: u32) {
        let subject = self.cfg.sched_subject(id, copy);
        let _ = self.work.purge().filter(subject).await;
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
