//! The record kept for each job in the job bucket (key: the job id).
//!
//! The record is what fences leases and what `status` reads. Every change
//! of a job goes through a compare-and-set on the record's revision, so of
//! two workers holding deliveries of the same job only the one whose lease
//! wrote the latest revision can settle or extend it.

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock};
use crate::schedule::utc::civil_text;
use crate::status::JobStatus;

/// Where a job is. `Retrying`, `Dying` and `Redriving` are intents: the
/// record says what is being done before the messages that do it are
/// published, so a crash in between is finished by whoever next meets the
/// job (see `lease::reconcile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    /// Waiting and ready.
    Queued,
    /// Waiting for `due_ms` (a delay or a retry backoff).
    Delayed,
    /// Leased until `lease_expires_ms`.
    InFlight,
    /// Copy `copy` is being published for another attempt at `due_ms`.
    Retrying,
    /// Being copied to the dead letters with `error`.
    Dying,
    /// Being sent back from the dead letters as copy `copy`.
    Redriving,
    /// Completed.
    Done,
    /// In the dead letters.
    Dead,
    /// Purged from the dead letters.
    Purged,
}

/// One job's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) state: State,
    /// Attempts started (leases taken).
    pub(crate) attempts: u32,
    pub(crate) max_attempts: u32,
    /// Which published copy of the job is the live one (0 = first).
    pub(crate) copy: u32,
    /// Stream sequence of the delivery of `copy` last leased (0: none).
    #[serde(default)]
    pub(crate) msg_seq: u64,
    #[serde(default)]
    pub(crate) due_ms: u64,
    #[serde(default)]
    pub(crate) lease_expires_ms: u64,
    #[serde(default)]
    pub(crate) enqueued_ms: u64,
    #[serde(default)]
    pub(crate) finished_ms: u64,
    #[serde(default)]
    pub(crate) key: Option<Vec<u8>>,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) result: Option<Vec<u8>>,
    /// Random, drawn by each lease (never 0 once leased; 0 in records of
    /// builds before it, which ignore it): what makes a lease's writes its
    /// own. A write whose reply was lost is taken as stored only when the
    /// record read back equals it, and without the token two leases of
    /// the same delivery (a redelivery after AckWait, on another host)
    /// whose deadlines fell on the same millisecond wrote equal records,
    /// so the lease whose write was not stored could take the other's for
    /// its own and both would run the job.
    #[serde(default)]
    pub(crate) lease_token: u64,
}

impl Record {
    /// The record of the job leased once more: in flight, its attempt
    /// counted, with a fresh `lease_token`. The count saturates: a record read from the bucket is
    /// bytes from the network, and one that says `u32::MAX` attempts must
    /// not wrap to 0 (and unlimited attempts) or panic.
    pub(crate) fn leased_again(&self) -> Record {
        let mut leased = self.clone();
        leased.state = State::InFlight;
        leased.attempts = self.attempts.saturating_add(1);
        leased.lease_token = crate::jetstream::headers::random_id();
        leased
    }

    /// A fresh job.
    pub(crate) fn new(max_attempts: u32, due_ms: u64, key: Option<Vec<u8>>) -> Record {
        let now = now_ms();
        Record {
            state: if due_ms > now {
                State::Delayed
            } else {
                State::Queued
            },
            attempts: 0,
            max_attempts,
            copy: 0,
            msg_seq: 0,
            due_ms,
            lease_expires_ms: 0,
            enqueued_ms: now,
            finished_ms: 0,
            key,
            error: None,
            result: None,
            lease_token: 0,
        }
    }

    /// The record of a job rebuilt from one of its copies' headers (its
    /// own aged out of the bucket): waiting, with the copy and the
    /// attempts the copy carries.
    pub(crate) fn of_copy(h: &crate::jetstream::headers::JobHeaders) -> Record {
        let mut rec = Record::new(h.max_attempts, 0, h.key.clone());
        rec.copy = h.copy;
        rec.attempts = h.attempts;
        rec
    }

    /// This record purged (a dead letter dropped, or a waiting job
    /// cancelled) now.
    pub(crate) fn purged(&self) -> Record {
        let mut purged = self.clone();
        purged.state = State::Purged;
        purged.finished_ms = now_ms();
        purged.lease_expires_ms = 0;
        purged
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }

    /// The status a client sees, at `now` (ms since the epoch).
    pub(crate) fn status(&self, now: u64) -> JobStatus {
        let attempts = self.attempts;
        match self.state {
            State::Queued | State::Redriving => JobStatus::Queued { attempts },
            State::Delayed | State::Retrying if self.due_ms > now => JobStatus::Delayed {
                due_ms: self.due_ms,
                attempts,
            },
            State::Delayed | State::Retrying => JobStatus::Queued { attempts },
            State::InFlight if self.lease_expires_ms > now => JobStatus::InFlight {
                attempt: attempts,
                lease_expires_ms: self.lease_expires_ms,
            },
            // An expired lease: the server hands the job out again.
            State::InFlight => JobStatus::Queued { attempts },
            State::Dying => JobStatus::InFlight {
                attempt: attempts,
                lease_expires_ms: self.lease_expires_ms,
            },
            State::Done => JobStatus::Done {
                finished_ms: Some(self.finished_ms),
                result: self.result.clone(),
            },
            State::Dead => JobStatus::Dead {
                attempts,
                dead_ms: self.finished_ms,
                error: self.error.clone().unwrap_or_default(),
            },
            State::Purged => JobStatus::Purged {
                purged_ms: self.finished_ms,
            },
        }
    }
}

/// Milliseconds since the epoch, by the system clock (in walq's own
/// tests, plus the step `step_wall_clock_for_tests` set).
pub(crate) fn now_ms() -> u64 {
    let now = SystemClock.now_ms();
    #[cfg(feature = "testing")]
    let now = now.saturating_add_signed(WALL_STEP_MS.load(std::sync::atomic::Ordering::Relaxed));
    now
}

/// How far walq's own tests stepped the wall clock (ms).
#[cfg(feature = "testing")]
pub(crate) static WALL_STEP_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// A lease's own clock: the wall time when the lease was taken, advanced
/// by the monotonic clock since. A lease's deadline is checked by it
/// (the record keeps the deadline by the wall clock, for `status`), so a step of the wall clock (NTP, a resumed VM) does not
/// expire a live lease, as the embedded queue's monotonic lease deadlines
/// do not. (A step back made the old wall-clock check accept an expired
/// lease; harmless, the record's CAS is the fence.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseClock {
    wall: u64,
    mono: std::time::Instant,
}

impl LeaseClock {
    /// A clock starting now.
    pub(crate) fn start() -> LeaseClock {
        LeaseClock {
            wall: now_ms(),
            mono: std::time::Instant::now(),
        }
    }

    /// The lease's time now (ms since the epoch, as the wall clock read
    /// when the lease was taken).
    pub(crate) fn now_ms(&self) -> u64 {
        ms_after(self.wall, self.mono.elapsed())
    }
}

/// The time `d` after `now` (ms since the epoch), saturating: a delay or a
/// lease as long as a `Duration` goes ends at the end of time, never
/// (wrapped around) in the past.
pub(crate) fn ms_after(now: u64, d: std::time::Duration) -> u64 {
    now.saturating_add(crate::clock::ms(d))
}

/// The latest time a schedule is written for: 2200-01-01T00:00:00Z. A
/// schedule at 9999-12-31T23:59:59Z fired at once (nats-server 2.15.1;
/// likely its nanoseconds since the epoch, an `i64`, end in 2262), which
/// made a delay of `Duration::MAX` no delay at all.
const LAST_SCHEDULE_SECOND: i64 = 7_258_118_400;

/// `ms` since the epoch as RFC 3339 UTC, rounded up to the second (a
/// schedule may fire late, never early); a time past 2200 (a delay of
/// "for ever") is written as 2200-01-01T00:00:00Z.
pub(crate) fn rfc3339_ceil(ms: u64) -> String {
    // `u64::MAX / 1000` rounded up is below `i64::MAX`: the fallback is
    // never taken.
    let secs = i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX);
    format!("{}Z", civil_text(secs.min(LAST_SCHEDULE_SECOND)))
}

impl Record {
    /// The copy number a retry or redrive of this job publishes, or
    /// `None` when it cannot grow: the number comes from the network (a
    /// record, a header, a letter's message id), and adding one to
    /// `u32::MAX` would panic in a debug build and, wrapped, reuse copy 0's
    /// message id, which the stream may drop as a duplicate.
    pub(crate) fn next_copy(&self) -> Option<u32> {
        self.copy.checked_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_number_from_the_network_does_not_wrap() {
        let mut rec = Record::new(3, 0, None);
        rec.copy = 7;
        assert_eq!(rec.next_copy(), Some(8));
        rec.copy = u32::MAX;
        assert_eq!(rec.next_copy(), None);
    }

    #[test]
    fn rfc3339_rounds_up_to_the_second() {
        assert_eq!(rfc3339_ceil(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ceil(1), "1970-01-01T00:00:01Z");
        // 2026-11-30T08:07:01Z
        assert_eq!(rfc3339_ceil(1_796_026_021_000), "2026-11-30T08:07:01Z");
        assert_eq!(rfc3339_ceil(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_ceil(u64::MAX), "2200-01-01T00:00:00Z");
        assert_eq!(ms_after(5, std::time::Duration::MAX), u64::MAX);
    }

    #[test]
    fn a_record_round_trips_and_reports_its_status() {
        let mut r = Record::new(3, 0, Some(b"k".to_vec()));
        assert_eq!(Record::decode(&r.encode()), Some(r.clone()));
        assert_eq!(r.status(now_ms()), JobStatus::Queued { attempts: 0 });
        r.state = State::InFlight;
        r.attempts = 1;
        r.lease_expires_ms = 10;
        assert_eq!(
            r.status(5),
            JobStatus::InFlight {
                attempt: 1,
                lease_expires_ms: 10
            }
        );
        assert_eq!(r.status(11), JobStatus::Queued { attempts: 1 });
    }

    #[test]
    fn an_attempt_count_from_the_network_does_not_wrap() {
        let mut r = Record::new(3, 0, None);
        assert_eq!(r.leased_again().attempts, 1);
        assert_eq!(r.leased_again().state, State::InFlight);
        r.attempts = u32::MAX;
        assert_eq!(r.leased_again().attempts, u32::MAX);
    }

    /// Two leases of the same record with the same deadline (the same
    /// delivery leased on two hosts in the same millisecond) write
    /// different records, so a lease whose write lost its reply does not
    /// take the other's stored write for its own (`take_lease`,
    /// `resolve_unsure` compare the record read back with their write).
    #[test]
    fn two_leases_of_one_delivery_write_different_records() {
        let r = Record::new(3, 0, None);
        let (mut a, mut b) = (r.leased_again(), r.leased_again());
        a.lease_expires_ms = 1_700_000_000_000;
        b.lease_expires_ms = 1_700_000_000_000;
        assert_ne!(a, b);
        assert_ne!(a.lease_token, 0);
        // The token is stored and read back with the record.
        assert_eq!(Record::decode(&a.encode()), Some(a.clone()));
        // A record of a build before the token reads as token 0.
        let mut old = serde_json::to_value(&a).unwrap();
        old.as_object_mut().unwrap().remove("lease_token");
        let old = Record::decode(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(old.lease_token, 0);
    }
}
