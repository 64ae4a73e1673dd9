//! A schedule: a name, when it ticks, the job it enqueues, and what
//! happens to ticks missed while no scheduler ran.

use std::time::Duration;

use super::spec::Spec;
use crate::error::{Error, ErrorKind, Result};
use crate::options::MAX_ATTEMPTS_LIMIT;

/// Longest schedule name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Largest payload a schedule carries, in bytes (the schedule file holds
/// it and is rewritten whole, so it is kept small).
pub const MAX_SCHEDULE_PAYLOAD: usize = 16 * 1024;
/// Longest grace period, in seconds (one year).
pub const MAX_GRACE_SECS: u64 = 366 * 86_400;
/// The grace period when none is given: one minute.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// What a scheduler does with ticks that came due while no scheduler ran
/// (or while it was late by more than the schedule's grace period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missed {
    /// Enqueue one job for all the ticks missed (the latest of them), then
    /// carry on. The default: a report that should run daily runs once
    /// after a weekend of downtime, not three times.
    #[default]
    RunOnce,
    /// Enqueue nothing for missed ticks and resume at the next one. A
    /// tick the scheduler reaches within the grace period is not missed.
    Skip,
}

/// A recurring job, registered with [`super::Scheduler::register`].
///
/// ```
/// use std::time::Duration;
/// use walq::schedule::{Missed, Schedule};
///
/// # fn main() -> walq::Result<()> {
/// let nightly = Schedule::cron("nightly-report", "0 3 * * *")?
///     .payload(b"build the report".to_vec())
///     .missed(Missed::RunOnce)
///     .max_attempts(3)?;
/// let heartbeat = Schedule::every("heartbeat", Duration::from_secs(30))?
///     .missed(Missed::Skip);
/// assert_eq!(nightly.name(), "nightly-report");
/// assert!(Schedule::cron("bad", "every day at 3").is_err());
/// # let _ = heartbeat;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    pub(crate) name: String,
    pub(crate) spec: Spec,
    pub(crate) payload: Vec<u8>,
    pub(crate) missed: Missed,
    pub(crate) grace_secs: u64,
    pub(crate) max_attempts: Option<u32>,
}

impl Schedule {
    /// A schedule that ticks on a cron expression (UTC, see [`Spec::cron`]).
    pub fn cron(name: &str, expr: &str) -> Result<Schedule> {
        Schedule::new(name, Spec::cron(expr)?)
    }

    /// A schedule that ticks every `period` (see [`Spec::every`]).
    pub fn every(name: &str, period: Duration) -> Result<Schedule> {
        Schedule::new(name, Spec::every(period)?)
    }

    /// A schedule with an already built [`Spec`], an empty payload,
    /// [`Missed::RunOnce`] and the queue's `max_attempts`.
    pub fn new(name: &str, spec: Spec) -> Result<Schedule> {
        validate_name(name)?;
        Ok(Schedule {
            name: name.to_string(),
            spec,
            payload: Vec::new(),
            missed: Missed::RunOnce,
            grace_secs: DEFAULT_GRACE.as_secs(),
            max_attempts: None,
        })
    }

    /// The payload of every job this schedule enqueues (at most
    /// [`MAX_SCHEDULE_PAYLOAD`] bytes; checked by `register`).
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Schedule {
        self.payload = payload.into();
        self
    }

    /// What to do with missed ticks (default [`Missed::RunOnce`]).
    pub fn missed(mut self, policy: Missed) -> Schedule {
        self.missed = policy;
        self
    }

    /// How late a tick may be reached and still count as on time under
    /// [`Missed::Skip`] (default one minute; whole seconds, at most
    /// [`MAX_GRACE_SECS`]).
    pub fn grace(mut self, grace: Duration) -> Result<Schedule> {
        if grace.as_secs() > MAX_GRACE_SECS || grace.subsec_nanos() != 0 {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                format!("grace {grace:?} must be whole seconds, at most {MAX_GRACE_SECS} s"),
            ));
        }
        self.grace_secs = grace.as_secs();
        Ok(self)
    }

    /// Attempts before a job of this schedule goes to the dead letters
    /// (default: the queue's).
    pub fn max_attempts(mut self, attempts: u32) -> Result<Schedule> {
        if attempts == 0 || attempts > MAX_ATTEMPTS_LIMIT {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                format!("max_attempts {attempts} is outside 1..={MAX_ATTEMPTS_LIMIT}"),
            ));
        }
        self.max_attempts = Some(attempts);
        Ok(self)
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it ticks.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The payload of its jobs.
    pub fn payload_bytes(&self) -> &[u8] {
        &self.payload
    }

    /// Its missed-tick policy.
    pub fn missed_policy(&self) -> Missed {
        self.missed
    }

    /// Checks what the builder methods could not: the payload size.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.payload.len() > MAX_SCHEDULE_PAYLOAD {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "schedule {:?}: payload of {} bytes is over the limit of {MAX_SCHEDULE_PAYLOAD}",
                    self.name,
                    self.payload.len()
                ),
            ));
        }
        Ok(())
    }
}

/// A name is 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits, `.`,
/// `_`, `-` and `:` (no `/`: it separates the parts of the idempotency
/// key).
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(ok_char) {
        return Err(Error::new(
            ErrorKind::InvalidOptions,
            format!(
                "schedule name {name:?} must be 1 to {MAX_NAME_LEN} bytes of ASCII letters, digits, '.', '_', '-' or ':'"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for bad in ["", "a/b", "with space", "é", &"x".repeat(MAX_NAME_LEN + 1)] {
            let err = Schedule::every(bad, Duration::from_secs(1)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{bad:?}");
        }
        Schedule::every(&"x".repeat(MAX_NAME_LEN), Duration::from_secs(1)).unwrap();
        Schedule::every("billing:daily_v2.eu-west", Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn limits_are_checked() {
        let s = Schedule::every("a", Duration::from_secs(1)).unwrap();
        assert!(s.clone().max_attempts(0).is_err());
        assert!(s.clone().max_attempts(MAX_ATTEMPTS_LIMIT + 1).is_err());
        assert!(s.clone().grace(Duration::from_millis(10)).is_err());
        let big = s.payload(vec![0u8; MAX_SCHEDULE_PAYLOAD + 1]);
        assert_eq!(
            big.validate().unwrap_err().kind(),
            ErrorKind::PayloadTooLarge
        );
    }
}
