//! Time, as the queue sees it.
//!
//! Every deadline in walq (visibility timeouts, delays, backoff, the dedup
//! window) is read from a [`Clock`], so tests drive time with a
//! [`ManualClock`] instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch, and
/// of a monotonic reading for deadlines that live only in this process.
///
/// Wall time is what gets persisted (enqueue times, due times). Lease
/// deadlines use [`Clock::monotonic_ms`], so a wall clock stepped forward
/// (NTP, a suspended VM) does not expire every lease at once. The queue
/// never lets either reading go backwards: it keeps the largest value it
/// has seen, so a clock step back cannot reorder jobs.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Milliseconds on a monotonic clock (any origin, same process). The
    /// default reads [`Instant`].
    fn monotonic_ms(&self) -> u64 {
        instant_ms()
    }
}

/// Whole milliseconds of `d`, saturating: the one conversion of a
/// duration to the milliseconds the queue works in.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One reading of both clocks, taken when an operation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    /// Wall time (ms since the epoch), for what is persisted.
    pub wall: u64,
    /// Monotonic time (ms), for lease deadlines.
    pub mono: u64,
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::os::clock_ms(libc::CLOCK_REALTIME)
            .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms))
    }

    /// `CLOCK_MONOTONIC`, read directly: the clock [`Instant`] reads, for
    /// a third of the instructions.
    fn monotonic_ms(&self) -> u64 {
        crate::os::clock_ms(libc::CLOCK_MONOTONIC).unwrap_or_else(instant_ms)
    }
}

/// Milliseconds since this process first asked, on [`Instant`].
fn instant_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ms(ORIGIN.get_or_init(Instant::now).elapsed())
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use walq::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_ms(), 3_000);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock that reads `start_ms`.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        self.now_ms.fetch_add(ms(by), Ordering::SeqCst);
    }

    /// Sets the time to `ms` (it may go backwards, to test that the queue copes).
    pub fn set(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::SeqCst);
    }
}

/// Both readings are the manual time, so tests drive lease expiry too.
impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn monotonic_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_wall_clock_reads_what_std_reads() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms);
        let ours = SystemClock.now_ms();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms);
        assert!(
            before <= ours && ours <= after,
            "{before} <= {ours} <= {after}"
        );
    }

    #[test]
    fn the_system_monotonic_clock_moves_with_instant() {
        let start = Instant::now();
        let first = SystemClock.monotonic_ms();
        std::thread::sleep(Duration::from_millis(20));
        let second = SystemClock.monotonic_ms();
        let slept = ms(start.elapsed());
        // The sleep lasts at least 20 ms; our clock saw at most what
        // `Instant` saw (plus the rounding of two whole-ms readings).
        assert!(second >= first + 19, "{first} then {second}");
        assert!(
            second - first <= slept + 1,
            "{first} then {second}, slept {slept}"
        );
    }
}
