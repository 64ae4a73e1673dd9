//! Options of a queue and of one enqueue, with their limits.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::format::frame::FRAME_HEADER_LEN;
use crate::format::header::SEGMENT_HEADER_LEN;
use crate::format::record::ENQUEUE_FIXED_LEN;
use crate::priority::Priority;

/// Smallest segment size accepted (64 KiB).
pub const MIN_SEGMENT_SIZE: u64 = 64 * 1024;
/// Largest segment size accepted (1 GiB): offsets inside a segment are `u32`.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;
/// Longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest error text kept with a dead letter, in bytes (longer text is cut).
pub const MAX_ERROR_LEN: usize = 4096;
/// Default payload limit (16 MiB).
pub const DEFAULT_MAX_PAYLOAD: u64 = 16 << 20;
/// Default segment size (64 MiB).
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Largest `max_attempts`.
pub const MAX_ATTEMPTS_LIMIT: u32 = u16::MAX as u32;

/// The longest delay or lease walq takes: 365 days.
///
/// Refused over it, with [`ErrorKind::InvalidOptions`] and nothing
/// written: an enqueue's [`EnqueueOptions::delay`], a nack's
/// [`Retry::After`], a visibility timeout ([`Options::visibility_timeout`],
/// [`crate::QueueOptions::visibility_timeout`], [`crate::Queue::dequeue_for`]
/// and [`crate::Queue::dequeue_wait`], a worker pool's `visibility`) and a
/// lease extension ([`crate::Queue::extend`]). A [`Backoff`] delay is
/// capped at it. A longer one (`Duration::MAX`, a bad computation) would
/// park a job for good: delayed, or leased, until the end of time, never
/// run again and never dead-lettered. A worker pool's handler may name a
/// longer retry delay: [`crate::worker::MAX_RETRY_DELAY`] (this same limit)
/// says what becomes of it.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Refuses a delay or lease `d` over [`MAX_DELAY`], naming `what` it is,
/// the limit and the value given.
pub(crate) fn check_delay(what: &str, d: Duration) -> Result<()> {
    if d <= MAX_DELAY {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidOptions,
        format!(
            "{what} of {d:?} is over the longest walq takes, MAX_DELAY = {MAX_DELAY:?} (365 days)"
        ),
    ))
}

/// When an acknowledged write is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `enqueue`, `ack`, `nack` and `fail` return only after their record is
    /// fdatasync'ed. Concurrent callers share one fdatasync (group commit).
    /// Survives power loss.
    #[default]
    Sync,
    /// Records reach the kernel (the shared page cache) before the call
    /// returns. Survives a process crash (`kill -9`), not a power loss.
    Os,
    /// Like [`Durability::Os`], plus a background fdatasync every interval.
    /// A power loss loses at most about one interval.
    Periodic(Duration),
}

/// What to do with damaged records found on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Cut a torn tail (a crash mid-write) and fail with
    /// [`ErrorKind::Corrupt`] on any other damage. The default.
    #[default]
    Strict,
    /// Skip damaged records, open anyway, and report what was lost in
    /// [`crate::RecoveryReport`]. For disaster recovery only.
    Salvage,
}

/// Retry delay policy: exponential, capped, with jitter.
///
/// The delay before retry `n` (1-based count of attempts made so far) is
/// `min(max, initial * multiplier^(n-1))`, then reduced by a random fraction
/// up to `jitter` (0.0 = none, 1.0 = "full jitter").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub initial: Duration,
    /// Growth factor per attempt (at least 1.0).
    pub multiplier: f64,
    /// Longest delay. A `max` over [`MAX_DELAY`] (365 days; `Duration::MAX`
    /// for "no cap") is [`MAX_DELAY`]: no retry waits longer.
    pub max: Duration,
    /// Fraction of the delay that is randomised away, in `0.0..=1.0`.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before the next attempt after `attempts` attempts, with
    /// `random` a uniform value in `0.0..1.0`; at most [`MAX_DELAY`].
    pub fn delay(&self, attempts: u32, random: f64) -> Duration {
        let exp = i32::try_from(attempts.saturating_sub(1).min(64)).unwrap_or(64);
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        // An uncapped backoff's delay would soon park the job for good
        // (`Duration::MAX`: delayed until `u64::MAX` ms).
        let max = self.max.min(MAX_DELAY);
        let capped = base.min(max.as_secs_f64());
        let jittered = capped * (1.0 - self.jitter * random.clamp(0.0, 1.0));
        Duration::try_from_secs_f64(jittered.max(0.0)).unwrap_or(max)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let ok = self.multiplier.is_finite()
            && self.multiplier >= 1.0
            && (0.0..=1.0).contains(&self.jitter)
            && self.initial <= self.max;
        if ok {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidOptions,
                format!(
                    "backoff needs multiplier >= 1, jitter in 0..=1 and initial <= max, got {self:?}"
                ),
            ))
        }
    }
}

/// Default of [`Options::checkpoint_every`]: 64 MiB of log.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 64 << 20;

/// Options of a queue, given to [`crate::Queue::open_with`].
///
/// ```
/// use std::time::Duration;
/// use walq::{Durability, Options};
///
/// let opts = Options::default()
///     .durability(Durability::Os)
///     .segment_size(8 << 20)
///     .visibility_timeout(Duration::from_secs(60))
///     .max_attempts(5);
/// # let dir = tempfile::tempdir().unwrap();
/// let q = walq::Queue::open_with(dir.path(), opts).unwrap();
/// ```
#[derive(Clone)]
pub struct Options {
    pub(crate) segment_size: u64,
    pub(crate) durability: Durability,
    pub(crate) visibility_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) dedup_window: Duration,
    pub(crate) max_payload: Option<u32>,
    pub(crate) recovery: RecoveryMode,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) file_mode: u32,
    pub(crate) dir_mode: u32,
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) checkpoint_every: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_size: DEFAULT_SEGMENT_SIZE,
            durability: Durability::Sync,
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 5,
            backoff: Backoff::default(),
            dedup_window: Duration::from_secs(24 * 3600),
            max_payload: None,
            recovery: RecoveryMode::Strict,
            clock: Arc::new(SystemClock),
            file_mode: 0o600,
            dir_mode: 0o700,
            jitter_seed: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("segment_size", &self.segment_size)
            .field("durability", &self.durability)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("dedup_window", &self.dedup_window)
            .field("max_payload", &self.max_payload)
            .field("recovery", &self.recovery)
            .field("checkpoint_every", &self.checkpoint_every)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Size of each segment file, preallocated on creation (default 64 MiB,
    /// between [`MIN_SEGMENT_SIZE`] and [`MAX_SEGMENT_SIZE`]).
    pub fn segment_size(mut self, bytes: u64) -> Options {
        self.segment_size = bytes;
        self
    }

    /// When writes are durable (default [`Durability::Sync`]).
    pub fn durability(mut self, durability: Durability) -> Options {
        self.durability = durability;
        self
    }

    /// How long a dequeued job stays invisible to other consumers unless
    /// acked, nacked or extended (default 30 s).
    pub fn visibility_timeout(mut self, timeout: Duration) -> Options {
        self.visibility_timeout = timeout;
        self
    }

    /// Attempts before a job goes to the dead letters (default 5).
    pub fn max_attempts(mut self, attempts: u32) -> Options {
        self.max_attempts = attempts;
        self
    }

    /// Retry delay policy for [`crate::Retry::Backoff`].
    pub fn backoff(mut self, backoff: Backoff) -> Options {
        self.backoff = backoff;
        self
    }

    /// How long an idempotency key is remembered after its job was enqueued
    /// (default 24 h). A key is also remembered while its job is queued, in
    /// flight or dead.
    pub fn dedup_window(mut self, window: Duration) -> Options {
        self.dedup_window = window;
        self
    }

    /// Bytes of log after which the in-memory index is checkpointed again
    /// (default [`DEFAULT_CHECKPOINT_EVERY`], 64 MiB; 0: only at a clean
    /// close). After a crash, open reads the checkpoint and replays only
    /// the log written since, so this bounds the replay; each checkpoint
    /// costs a write of the index (about 16 bytes per live job) and two
    /// fsyncs, outside the queue lock.
    pub fn checkpoint_every(mut self, bytes: u64) -> Options {
        self.checkpoint_every = bytes;
        self
    }

    /// Largest payload accepted, in bytes (default: 16 MiB, or what fits
    /// in one segment with its record header if that is less).
    pub fn max_payload(mut self, bytes: u32) -> Options {
        self.max_payload = Some(bytes);
        self
    }

    /// Room for a payload in one segment.
    fn payload_room(&self) -> u64 {
        self.segment_size.saturating_sub(
            (SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + ENQUEUE_FIXED_LEN + MAX_KEY_LEN) as u64,
        )
    }

    /// The payload limit in force.
    pub(crate) fn effective_max_payload(&self) -> u32 {
        self.max_payload.unwrap_or_else(|| {
            u32::try_from(self.payload_room().min(DEFAULT_MAX_PAYLOAD)).unwrap_or(u32::MAX)
        })
    }

    /// What to do with damaged records on open (default [`RecoveryMode::Strict`]).
    pub fn recovery(mut self, mode: RecoveryMode) -> Options {
        self.recovery = mode;
        self
    }

    /// The clock deadlines are read from (default the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Options {
        self.clock = Arc::new(clock);
        self
    }

    /// Permission bits of the files walq creates (default `0o600`).
    pub fn file_mode(mut self, mode: u32) -> Options {
        self.file_mode = mode;
        self
    }

    /// Permission bits of the directory if walq creates it (default `0o700`).
    pub fn dir_mode(mut self, mode: u32) -> Options {
        self.dir_mode = mode;
        self
    }

    /// Seed of the backoff jitter, for reproducible tests.
    pub fn jitter_seed(mut self, seed: u64) -> Options {
        self.jitter_seed = Some(seed);
        self
    }

    /// Checks every option against its limit.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidOptions, msg));
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return bad(format!(
                "segment_size {} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                self.segment_size
            ));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return bad(format!(
                "max_attempts {} is outside 1..={MAX_ATTEMPTS_LIMIT}",
                self.max_attempts
            ));
        }
        if self.visibility_timeout.is_zero() {
            return bad("visibility_timeout must be more than zero".into());
        }
        check_delay("visibility_timeout", self.visibility_timeout)?;
        if let Durability::Periodic(every) = self.durability {
            if every.is_zero() {
                return bad("Durability::Periodic interval must be more than zero".into());
            }
        }
        let room = self.payload_room();
        let max_payload = self.effective_max_payload();
        if max_payload == 0 || u64::from(max_payload) > room {
            return bad(format!(
                "max_payload {max_payload} must be between 1 and {room} (what fits in a segment of {} bytes)",
                self.segment_size
            ));
        }
        self.backoff.validate()
    }
}

/// Options of one enqueue, for [`crate::Queue::enqueue_with`].
///
/// ```
/// use std::time::Duration;
/// use walq::EnqueueOptions;
///
/// let opts = EnqueueOptions::new()
///     .delay(Duration::from_secs(10))
///     .idempotency_key("order-42/receipt-mail")
///     .max_attempts(3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    pub(crate) delay: Duration,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) priority: Priority,
    pub(crate) group: Option<Vec<u8>>,
}

impl EnqueueOptions {
    /// No delay, no key, the queue's `max_attempts`.
    pub fn new() -> EnqueueOptions {
        EnqueueOptions::default()
    }

    /// Checks the options on their own, before any queue is involved (an
    /// empty or oversized idempotency or group key, `max_attempts` outside
    /// `1..=`[`MAX_ATTEMPTS_LIMIT`](crate::MAX_ATTEMPTS_LIMIT)): what an
    /// enqueue with them would refuse with
    /// [`ErrorKind::InvalidOptions`](crate::ErrorKind::InvalidOptions) or
    /// [`ErrorKind::PayloadTooLarge`](crate::ErrorKind::PayloadTooLarge), whatever the
    /// payload. Every enqueue runs the same checks.
    ///
    /// ```
    /// use walq::EnqueueOptions;
    /// assert!(EnqueueOptions::new().max_attempts(3).validate().is_ok());
    /// assert!(EnqueueOptions::new().max_attempts(0).validate().is_err());
    /// assert!(EnqueueOptions::new().idempotency_key("").validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if let Some(key) = &self.key {
            if key.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidOptions,
                    "an idempotency key must not be empty",
                ));
            }
            if key.len() > MAX_KEY_LEN {
                return Err(crate::state::too_large(
                    "idempotency key",
                    key.len(),
                    MAX_KEY_LEN,
                ));
            }
        }
        if let Some(group) = &self.group {
            if group.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidOptions,
                    "a group key must not be empty",
                ));
            }
            if group.len() > crate::format::record::MAX_GROUP_LEN {
                return Err(crate::state::too_large(
                    "group key",
                    group.len(),
                    crate::format::record::MAX_GROUP_LEN,
                ));
            }
        }
        if let Some(n) = self.max_attempts {
            if n == 0 || n > MAX_ATTEMPTS_LIMIT {
                return Err(Error::new(
                    ErrorKind::InvalidOptions,
                    format!("max_attempts {n} is outside 1..={MAX_ATTEMPTS_LIMIT}"),
                ));
            }
        }
        check_delay("an enqueue's delay", self.delay)
    }

    /// The job becomes visible only after `delay`, at most [`MAX_DELAY`]
    /// (365 days): an enqueue with a longer one is refused with
    /// [`ErrorKind::InvalidOptions`](crate::ErrorKind::InvalidOptions).
    pub fn delay(mut self, delay: Duration) -> EnqueueOptions {
        self.delay = delay;
        self
    }

    /// An idempotency key: while it is known, enqueueing with the same key
    /// returns the existing job instead of adding one.
    pub fn idempotency_key(mut self, key: impl AsRef<[u8]>) -> EnqueueOptions {
        self.key = Some(key.as_ref().to_vec());
        self
    }

    /// Attempts before this job goes to the dead letters.
    pub fn max_attempts(mut self, attempts: u32) -> EnqueueOptions {
        self.max_attempts = Some(attempts);
        self
    }

    /// The job's priority level ([`Priority::Normal`] by default). Higher
    /// levels are delivered first, FIFO within a level; a lower level is
    /// never starved: while jobs of several levels are ready, each level
    /// gets its weight (Urgent 8, High 4, Normal 2, Low 1) in every 15
    /// deliveries. A retried job keeps its level.
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use walq::{EnqueueOptions, Priority};
    /// let q = walq::Queue::open(dir.path())?;
    /// q.enqueue_with(b"nightly export", EnqueueOptions::new().priority(Priority::Low))?;
    /// q.enqueue_with(b"send invoice", EnqueueOptions::new().priority(Priority::High))?;
    /// assert_eq!(q.dequeue()?.unwrap().payload(), b"send invoice");
    /// assert_eq!(q.dequeue()?.unwrap().payload(), b"nightly export");
    /// # Ok(()) }
    /// ```
    pub fn priority(mut self, priority: Priority) -> EnqueueOptions {
        self.priority = priority;
        self
    }

    /// A message group (1 to 256 bytes): jobs of one group are delivered
    /// one at a time, in enqueue order. The next one is delivered only
    /// after the one before it is acked or dead-lettered; while it is
    /// leased, or waits out a retry, it holds its group. Other groups (and
    /// jobs without a group) proceed in parallel. A group costs memory
    /// only while it has a job in the queue.
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use walq::EnqueueOptions;
    /// let q = walq::Queue::open(dir.path())?;
    /// q.enqueue_with(b"charge", EnqueueOptions::new().group("customer-42"))?;
    /// q.enqueue_with(b"receipt", EnqueueOptions::new().group("customer-42"))?;
    /// q.enqueue_with(b"other", EnqueueOptions::new().group("customer-7"))?;
    /// let charge = q.dequeue()?.unwrap();
    /// // "receipt" waits for "charge": the next job is the other group's.
    /// assert_eq!(q.dequeue()?.unwrap().payload(), b"other");
    /// assert!(q.dequeue()?.is_none());
    /// q.ack(charge.receipt())?;
    /// assert_eq!(q.dequeue()?.unwrap().payload(), b"receipt");
    /// # Ok(()) }
    /// ```
    pub fn group(mut self, group: impl AsRef<[u8]>) -> EnqueueOptions {
        self.group = Some(group.as_ref().to_vec());
        self
    }
}

/// When a nacked job is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// After the queue's [`Backoff`] delay for the attempts made so far.
    Backoff,
    /// After exactly this delay, at most [`MAX_DELAY`] (365 days): a nack
    /// with a longer one is refused with
    /// [`ErrorKind::InvalidOptions`](crate::ErrorKind::InvalidOptions) and
    /// the job stays leased.
    After(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Options::default().validate().unwrap();
    }

    #[test]
    fn rejects_out_of_range() {
        let cases = [
            Options::default().segment_size(1),
            Options::default().segment_size(MAX_SEGMENT_SIZE + 1),
            Options::default().max_attempts(0),
            Options::default().visibility_timeout(Duration::ZERO),
            Options::default().durability(Durability::Periodic(Duration::ZERO)),
            Options::default().max_payload(0),
            Options::default()
                .segment_size(MIN_SEGMENT_SIZE)
                .max_payload(u32::MAX),
            Options::default().backoff(Backoff {
                multiplier: 0.5,
                ..Backoff::default()
            }),
            Options::default().backoff(Backoff {
                jitter: f64::NAN,
                ..Backoff::default()
            }),
        ];
        for opts in cases {
            let err = opts.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{opts:?}");
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_millis(1000),
            jitter: 0.0,
        };
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(4, 0.5), Duration::from_millis(800));
        assert_eq!(b.delay(5, 0.5), Duration::from_millis(1000));
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_millis(1000));
        let j = Backoff { jitter: 0.5, ..b };
        assert_eq!(j.delay(1, 1.0), Duration::from_millis(50));
    }

    /// "No cap" (`max: Duration::MAX`) is a valid policy; a delay that
    /// outgrows what a `Duration` holds is not a panic, and no delay is
    /// over `MAX_DELAY` (a longer one parked the job for good).
    #[test]
    fn an_uncapped_backoff_saturates() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::MAX,
            jitter: 0.0,
        };
        assert!(b.validate().is_ok());
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(4));
        assert_eq!(b.delay(65, 0.0), MAX_DELAY);
        assert_eq!(b.delay(25, 0.0), Duration::from_secs(1 << 24));
        assert_eq!(b.delay(26, 0.0), MAX_DELAY);
        let huge = Backoff {
            initial: Duration::MAX,
            multiplier: 1.0,
            ..b
        };
        assert_eq!(huge.delay(1, 0.0), MAX_DELAY);
    }
}
