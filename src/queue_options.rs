//! Options of one named queue (`Store::queue_with`), kept in memory.

use std::time::Duration;

use crate::clock::ms;
use crate::error::{Error, ErrorKind, Result};
use crate::options::{check_delay, Backoff, MAX_ATTEMPTS_LIMIT};

/// A queue's own visibility timeout, max attempts and retry backoff,
/// given to [`crate::Store::queue_with`]. Each one left unset is the
/// store's ([`crate::Options`]). Kept in memory only: give them again
/// after each open (what replay needs, a job's max attempts, is in its
/// enqueue record).
///
/// ```
/// use std::time::Duration;
/// use walq::{QueueOptions, Store};
/// # fn main() -> walq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path())?;
/// let reports = store.queue_with(
///     "reports",
///     QueueOptions::new()
///         .visibility_timeout(Duration::from_secs(600))
///         .max_attempts(2),
/// )?;
/// reports.enqueue(b"yearly totals")?;
/// assert_eq!(reports.dequeue()?.expect("ready").max_attempts(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueOptions {
    pub(crate) visibility_timeout: Option<Duration>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) backoff: Option<Backoff>,
}

impl QueueOptions {
    /// Every option the store's.
    pub fn new() -> QueueOptions {
        QueueOptions::default()
    }

    /// How long a dequeued job of this queue stays leased: at least 1 ms,
    /// at most [`crate::MAX_DELAY`] (365 days).
    pub fn visibility_timeout(mut self, d: Duration) -> QueueOptions {
        self.visibility_timeout = Some(d);
        self
    }

    /// Attempts a job of this queue gets unless its enqueue says
    /// otherwise (1..=65,535).
    pub fn max_attempts(mut self, n: u32) -> QueueOptions {
        self.max_attempts = Some(n);
        self
    }

    /// The retry backoff of this queue's `Retry::Backoff` nacks.
    pub fn backoff(mut self, b: Backoff) -> QueueOptions {
        self.backoff = Some(b);
        self
    }

    /// Checks the options against the same limits as [`crate::Options`].
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidOptions, msg));
        if let Some(n) = self.max_attempts {
            if n == 0 || n > MAX_ATTEMPTS_LIMIT {
                return bad(format!(
                    "a queue's max_attempts {n} is outside 1..={MAX_ATTEMPTS_LIMIT}"
                ));
            }
        }
        if let Some(d) = self.visibility_timeout {
            if ms(d) == 0 {
                return bad(format!(
                    "a queue's visibility_timeout must be at least 1 ms, got {d:?}"
                ));
            }
            check_delay("a queue's visibility_timeout", d)?;
        }
        if let Some(b) = &self.backoff {
            b.validate()?;
        }
        Ok(())
    }
}
