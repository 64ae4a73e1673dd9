//! A token bucket that paces how fast a pool starts jobs.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};

/// Thousandths of a token: refills stay exact in integers.
const MILLI: u64 = 1000;

/// At most `per_second` jobs started per second, with bursts of up to
/// `burst` jobs after a quiet spell (default 1: evenly spaced).
///
/// The bucket refills by the millisecond, on the monotonic clock (a wall
/// clock stepped back does not stop it): above 1,000 jobs a second it
/// holds at least the jobs of one millisecond (`per_second / 1000`,
/// rounded up), whatever `burst` says, so that the rate is reached.
///
/// ```
/// use walq::worker::RateLimit;
/// let steady = RateLimit::per_second(200);
/// let bursty = RateLimit::per_second(200).burst(50);
/// # let _ = (steady, bursty);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    per_second: u32,
    burst: u32,
}

impl RateLimit {
    /// `jobs` jobs per second, evenly spaced.
    pub fn per_second(jobs: u32) -> RateLimit {
        RateLimit {
            per_second: jobs,
            burst: 1,
        }
    }

    /// How many jobs may start at once after a quiet spell.
    pub fn burst(mut self, jobs: u32) -> RateLimit {
        self.burst = jobs;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.per_second == 0 || self.burst == 0 {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                format!("a rate limit needs at least 1 job per second and a burst of at least 1, got {self:?}"),
            ));
        }
        Ok(())
    }
}

/// The bucket: starts full, refills `per_second` tokens a second by the
/// given clock's monotonic reading, holds at most [`TokenBucket::cap`].
pub(crate) struct TokenBucket {
    limit: RateLimit,
    clock: Arc<dyn Clock>,
    state: Mutex<Bucket>,
}

struct Bucket {
    milli_tokens: u64,
    last_ms: u64,
}

/// How long a worker sleeps for a token it was told to wait `wait` for:
/// never under a millisecond (no spinning on a bucket that refills in
/// microseconds) and never over the pool's poll interval `poll` (how soon
/// a stopping pool is noticed), the poll winning where it is the shorter
/// (a poll interval may be under a millisecond).
pub(crate) fn nap(wait: Duration, poll: Duration) -> Duration {
    wait.max(Duration::from_millis(1)).min(poll)
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit, clock: Arc<dyn Clock>) -> TokenBucket {
        let last_ms = clock.monotonic_ms();
        let bucket = TokenBucket {
            state: Mutex::new(Bucket {
                milli_tokens: 0,
                last_ms,
            }),
            limit,
            clock,
        };
        bucket.state.lock().milli_tokens = bucket.cap();
        bucket
    }

    /// What the bucket holds at most, in thousandths of a token: `burst`
    /// tokens, and at least one millisecond's worth (refills come by the
    /// millisecond: a smaller bucket would cap the rate at its size per
    /// millisecond).
    fn cap(&self) -> u64 {
        let per_ms = u64::from(self.limit.per_second).div_ceil(1000);
        u64::from(self.limit.burst).max(per_ms) * MILLI
    }

    /// Takes a token, or says how long until the next one.
    pub(crate) fn try_take(&self) -> std::result::Result<(), Duration> {
        let mut b = self.state.lock();
        let now = self.clock.monotonic_ms();
        let elapsed = now.saturating_sub(b.last_ms);
        b.last_ms = b.last_ms.max(now);
        let cap = self.cap();
        let refill = elapsed.saturating_mul(u64::from(self.limit.per_second));
        b.milli_tokens = b.milli_tokens.saturating_add(refill).min(cap);
        if b.milli_tokens >= MILLI {
            b.milli_tokens -= MILLI;
            return Ok(());
        }
        let missing = MILLI - b.milli_tokens;
        Err(Duration::from_millis(
            missing.div_ceil(u64::from(self.limit.per_second)),
        ))
    }

    /// Returns a token that was not used (no job was ready).
    pub(crate) fn give_back(&self) {
        let cap = self.cap();
        let mut b = self.state.lock();
        b.milli_tokens = (b.milli_tokens + MILLI).min(cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn take_all(bucket: &TokenBucket) -> u32 {
        let mut n = 0;
        while bucket.try_take().is_ok() {
            n += 1;
        }
        n
    }

    #[test]
    fn each_tick_admits_exactly_its_tokens() {
        let clock = ManualClock::new(1_000);
        let bucket = TokenBucket::new(RateLimit::per_second(10).burst(10), Arc::new(clock.clone()));
        assert_eq!(take_all(&bucket), 10, "starts full");
        for _ in 0..5 {
            clock.advance(Duration::from_millis(300));
            assert_eq!(take_all(&bucket), 3);
        }
        clock.advance(Duration::from_millis(500));
        assert_eq!(take_all(&bucket), 5);
        clock.advance(Duration::from_secs(60));
        assert_eq!(take_all(&bucket), 10, "capped at the burst");
    }

    #[test]
    fn steady_by_default_and_says_how_long_to_wait() {
        let clock = ManualClock::new(0);
        let bucket = TokenBucket::new(RateLimit::per_second(4), Arc::new(clock.clone()));
        assert_eq!(take_all(&bucket), 1);
        assert_eq!(bucket.try_take(), Err(Duration::from_millis(250)));
        clock.advance(Duration::from_millis(100));
        assert_eq!(bucket.try_take(), Err(Duration::from_millis(150)));
        clock.advance(Duration::from_secs(10));
        assert_eq!(take_all(&bucket), 1);
        bucket.give_back();
        assert_eq!(take_all(&bucket), 1);
        assert!(RateLimit::per_second(0).validate().is_err());
        assert!(RateLimit::per_second(1).burst(0).validate().is_err());
    }

    /// A clock whose wall reading can be stepped apart from its monotonic
    /// one (`ManualClock` moves both together).
    struct SteppedClock {
        wall: parking_lot::Mutex<u64>,
        mono: ManualClock,
    }

    impl Clock for SteppedClock {
        fn now_ms(&self) -> u64 {
            *self.wall.lock()
        }
        fn monotonic_ms(&self) -> u64 {
            self.mono.monotonic_ms()
        }
    }

    /// Found by review: the bucket refilled by the wall clock, so a step
    /// back of an hour (NTP, a restored VM) stopped every rate-limited
    /// pool for that hour.
    #[test]
    fn a_wall_clock_stepped_back_does_not_stop_the_refill() {
        let clock = Arc::new(SteppedClock {
            wall: parking_lot::Mutex::new(10_000_000),
            mono: ManualClock::new(5_000),
        });
        let bucket = TokenBucket::new(RateLimit::per_second(10), clock.clone());
        assert_eq!(take_all(&bucket), 1);
        *clock.wall.lock() -= 3_600_000;
        clock.mono.advance(Duration::from_millis(1_000));
        assert_eq!(take_all(&bucket), 1, "refilled after a second");
    }

    /// Found by review: with the default burst of 1 the bucket held one
    /// token and refilled by the millisecond, so 5,000 a second gave
    /// 1,000.
    #[test]
    fn rates_above_a_thousand_a_second_are_reached() {
        let clock = ManualClock::new(0);
        let bucket = TokenBucket::new(RateLimit::per_second(5_000), Arc::new(clock.clone()));
        let mut taken = take_all(&bucket);
        for _ in 0..1_000 {
            clock.advance(Duration::from_millis(1));
            taken += take_all(&bucket);
        }
        assert_eq!(
            taken,
            5_000 + 5,
            "a second's worth, plus the bucket it started with"
        );
    }
}
