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
/// never lets the monotonic reading go backwards. A wall clock that steps
/// back by up to a minute (NTP) is held at the latest reading until it
/// catches up; one that steps back further (a clock that was wrong, then
/// set right) is followed, so new delays and backoffs are measured from
/// the corrected time. Due times already stored stay as they were.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Milliseconds on a monotonic clock (any origin, same process). The
    /// default reads [`Instant`].
    fn monotonic_ms(&self) -> u64 {
        instant_ms()
    }

    /// Both readings at once, `(wall, monotonic)`: what an operation that
    /// sets or checks a lease asks for. The default reads
    /// [`Clock::now_ms`] and then [`Clock::monotonic_ms`];
    /// [`SystemClock`] reads one clock instead of two (see there).
    ///
    /// ```
    /// use walq::{Clock, ManualClock};
    ///
    /// let clock = ManualClock::new(5_000);
    /// assert_eq!(clock.both_ms(), (5_000, 5_000));
    /// ```
    fn both_ms(&self) -> (u64, u64) {
        (self.now_ms(), self.monotonic_ms())
    }
}

/// Whole milliseconds of `d`, saturating: the one conversion of a
/// duration to the milliseconds the queue works in.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The longest wait a deadline stands for: a caller's longer wait (up to
/// `Duration::MAX`, the natural "wait for ever") waits this long, about a
/// century, instead of overflowing `Instant`.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The instant `wait` from now, saturating: the one way a caller's
/// duration (a dequeue's wait, a shutdown's deadline, a timeout) becomes
/// a deadline, so that no duration a caller may pass panics with
/// "overflow when adding duration to instant".
pub(crate) fn deadline(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(FOREVER)).unwrap_or(now)
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
///
/// [`Clock::both_ms`] reads `CLOCK_MONOTONIC` alone and adds the wall
/// clock's lead over it, itself read again whenever 10 ms of monotonic time
/// have passed since the last look. A `clock_gettime` costs about 25 ns in
/// a VM, a tenth of a dequeue; a step of the wall clock (NTP, an operator's
/// `date -s`) is seen within those 10 ms, and slewing moves the wall clock
/// by at most 5 µs in them.
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

    fn both_ms(&self) -> (u64, u64) {
        let Some(mono) = crate::os::clock_ns(libc::CLOCK_MONOTONIC) else {
            return (self.now_ms(), self.monotonic_ms());
        };
        let wall = WALL_LEAD.wall_at(mono).unwrap_or_else(|| self.now_ms());
        (wall, mono / 1_000_000)
    }
}

/// How far the wall clock is ahead of the monotonic one, shared by every
/// [`SystemClock`] of the process.
static WALL_LEAD: WallLead = WallLead {
    lead_ns: AtomicU64::new(0),
    read_at_ns: AtomicU64::new(0),
};

/// Monotonic nanoseconds after which the wall clock's lead is read again.
const REREAD_LEAD_NS: u64 = 10_000_000;

/// The wall clock's lead over `CLOCK_MONOTONIC` (both in nanoseconds), and
/// the monotonic time it was read at (0: never). `read_at_ns` is stored
/// after the lead with `Release` and loaded with `Acquire`, so a reader
/// that sees a time sees that lead or a later one (a racing reread's:
/// any of them is at most one reread period old, which is all this
/// promises).
struct WallLead {
    lead_ns: AtomicU64,
    read_at_ns: AtomicU64,
}

impl WallLead {
    /// Wall milliseconds at monotonic nanosecond `mono`: derived from the
    /// lead while it is fresh, else read (`None` if the wall clock cannot
    /// be read in nanoseconds).
    fn wall_at(&self, mono: u64) -> Option<u64> {
        let at = self.read_at_ns.load(Ordering::Acquire);
        if at != 0 && mono >= at && mono - at < REREAD_LEAD_NS {
            let lead = self.lead_ns.load(Ordering::Relaxed);
            return Some(mono.wrapping_add(lead) / 1_000_000);
        }
        let wall = crate::os::clock_ns(libc::CLOCK_REALTIME)?;
        self.lead_ns
            .store(wall.wrapping_sub(mono), Ordering::Relaxed);
        self.read_at_ns.store(mono.max(1), Ordering::Release);
        Some(wall / 1_000_000)
    }
}

/// Milliseconds since this process first asked, on [`Instant`].
pub(crate) fn instant_ms() -> u64 {
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

    fn std_wall_ms() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms)
    }

    #[test]
    fn both_system_readings_agree_with_std() {
        let before = std_wall_ms();
        let mono_before = SystemClock.monotonic_ms();
        let (wall, mono) = SystemClock.both_ms();
        let after = std_wall_ms();
        // The derived wall time may round one millisecond below a reading
        // taken at a millisecond's edge.
        assert!(
            before.saturating_sub(1) <= wall && wall <= after + 1,
            "{before} <= {wall} <= {after}"
        );
        assert!(mono >= mono_before && mono <= SystemClock.monotonic_ms());
    }

    #[test]
    fn the_wall_lead_is_used_while_fresh_and_read_again_after_ten_ms() {
        let lead = WallLead {
            lead_ns: AtomicU64::new(0),
            read_at_ns: AtomicU64::new(0),
        };
        let mono = crate::os::clock_ns(libc::CLOCK_MONOTONIC).unwrap();
        // Never read: reads the wall clock.
        let first = lead.wall_at(mono).unwrap();
        assert!(first.abs_diff(std_wall_ms()) <= 1, "{first}");
        // Fresh: derived from the lead that read stored.
        let stored = lead.lead_ns.load(Ordering::Relaxed);
        let later = mono + 5_000_000;
        assert_eq!(
            lead.wall_at(later),
            Some(later.wrapping_add(stored) / 1_000_000)
        );
        assert!(later.wrapping_add(stored) / 1_000_000 >= first + 4);
        // A lead planted wrong (as a step of the wall clock would make it)
        // is believed for 10 ms, then read again.
        lead.lead_ns.store(0, Ordering::Relaxed);
        lead.read_at_ns.store(mono, Ordering::Release);
        assert_eq!(
            lead.wall_at(mono + 9_000_000),
            Some((mono + 9_000_000) / 1_000_000)
        );
        let reread = lead.wall_at(mono + REREAD_LEAD_NS).unwrap();
        assert!(reread.abs_diff(std_wall_ms()) <= 1, "{reread}");
        assert_ne!(lead.lead_ns.load(Ordering::Relaxed), 0);
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
