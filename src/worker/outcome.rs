//! What a handler decides about the job it ran.

use std::fmt::Display;
use std::time::Duration;

/// The longest delay a handler's [`Outcome::Retry`] keeps: 365 days, the
/// queue's own [`crate::MAX_DELAY`]. A longer one (`Duration::MAX`, a bad
/// computation) is treated as a failed attempt retried after the queue's
/// backoff, its error saying so (a raw [`crate::Queue::nack`] with such a
/// delay is refused instead).
pub const MAX_RETRY_DELAY: Duration = crate::options::MAX_DELAY;

/// The result of one attempt, returned by a handler.
///
/// A handler may also return `Result<(), E>` with `E: Display`: `Ok(())`
/// completes the job, `Err(e)` retries it after the queue's backoff with
/// `e` as its error.
///
/// ```
/// use std::time::Duration;
/// use walq::worker::Outcome;
///
/// let done = Outcome::done();
/// let later = Outcome::retry_after(Duration::from_secs(30), "rate limited by the mail API");
/// let never = Outcome::fail("address does not exist");
/// let from_result: Outcome = Err::<(), _>("timed out").into();
/// assert_eq!(from_result, Outcome::retry("timed out"));
/// # let _ = (done, later, never);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job is finished, with an optional small result that clients
    /// polling its status can read.
    Done(Option<Vec<u8>>),
    /// Try again: after `after`, or after the queue's backoff when `None`.
    /// On the last attempt the job goes to the dead letters with `error`.
    ///
    /// A delay over [`MAX_RETRY_DELAY`] (a year; `Duration::MAX`, say) is
    /// not kept: a worker pool retries the job after the queue's backoff
    /// instead, and its error says so. Such a delay would park the job as
    /// delayed for good, neither run again nor dead-lettered.
    Retry {
        /// Why the attempt failed. It is kept only if the job goes to the
        /// dead letters (this was its last attempt): a job waiting for its
        /// next attempt does not carry it (its status reads `Delayed`).
        /// A worker pool's tracing event for the attempt shows it.
        error: String,
        /// A delay the handler names (e.g. from a `Retry-After` header),
        /// at most [`MAX_RETRY_DELAY`].
        after: Option<Duration>,
    },
    /// Give up: the job goes to the dead letters with this error now.
    Fail(String),
}

impl Outcome {
    /// The job is finished.
    pub fn done() -> Outcome {
        Outcome::Done(None)
    }

    /// The job is finished, with a small result for clients.
    pub fn done_with(result: impl Into<Vec<u8>>) -> Outcome {
        Outcome::Done(Some(result.into()))
    }

    /// Retry after the queue's backoff.
    pub fn retry(error: impl Display) -> Outcome {
        Outcome::Retry {
            error: error.to_string(),
            after: None,
        }
    }

    /// Retry after exactly `delay`; a delay over [`MAX_RETRY_DELAY`]
    /// becomes the queue's backoff (see [`Outcome::Retry`]).
    pub fn retry_after(delay: Duration, error: impl Display) -> Outcome {
        Outcome::Retry {
            error: error.to_string(),
            after: Some(delay),
        }
    }

    /// Send the job to the dead letters now.
    pub fn fail(error: impl Display) -> Outcome {
        Outcome::Fail(error.to_string())
    }
}

impl<E: Display> From<Result<(), E>> for Outcome {
    fn from(result: Result<(), E>) -> Outcome {
        match result {
            Ok(()) => Outcome::done(),
            Err(e) => Outcome::retry(e),
        }
    }
}

impl From<()> for Outcome {
    fn from((): ()) -> Outcome {
        Outcome::done()
    }
}
