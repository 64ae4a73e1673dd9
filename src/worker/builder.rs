//! How a worker pool is configured and started.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::worker::backend::Backend;
use crate::worker::context::JobContext;
use crate::worker::handler::Handler;
use crate::worker::outcome::Outcome;
use crate::worker::pool::WorkerPool;
use crate::worker::rate::RateLimit;

/// Most workers one pool runs.
pub const MAX_WORKERS: usize = 1024;

/// The longest [`PoolBuilder::poll_interval`]: an idle worker checks for
/// shutdown this often at least, so a shutdown is never held up longer
/// (on a [`crate::Queue`] or a [`crate::worker::MultiQueue`], shutdown
/// wakes idle workers at once: see [`Backend::wake_waiters`]).
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// The longest [`PoolBuilder::job_timeout`]: a week. A longer one is
/// almost certainly a unit mistake (milliseconds given as seconds); a job
/// that may run longer needs no timeout.
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The shortest [`PoolBuilder::job_timeout`]: the heartbeat and the
/// handler's context measure it in whole milliseconds.
const MIN_JOB_TIMEOUT: Duration = Duration::from_millis(1);

/// The settings of a pool.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) name: String,
    pub(crate) visibility: Duration,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) poll: Duration,
    pub(crate) shutdown_timeout: Duration,
    /// How long a handler may run before its attempt is given up.
    pub(crate) job_timeout: Option<Duration>,
}

/// The shortest heartbeat and poll interval: shorter ones would spin a
/// thread (a nanosecond passed the old check, more than zero).
const MIN_INTERVAL: Duration = Duration::from_micros(100);

impl Config {
    /// How often running leases are extended: the set interval, or a
    /// third of the visibility timeout.
    pub(crate) fn heartbeat_every(&self) -> Duration {
        self.heartbeat.unwrap_or(self.visibility / 3)
    }

    /// How long each stage of a shutdown waits for its threads once the
    /// deadline has passed: one poll interval (a worker's lease waits
    /// that long for a job) plus one heartbeat interval.
    pub(crate) fn stop_grace(&self) -> Duration {
        self.poll.saturating_add(self.heartbeat_every())
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidOptions, msg));
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return bad(format!(
                "workers {} is outside 1..={MAX_WORKERS}",
                self.workers
            ));
        }
        if self.visibility < Duration::from_millis(3) {
            return bad(format!(
                "visibility {:?} must be at least 3 ms",
                self.visibility
            ));
        }
        crate::options::check_delay("a worker pool's visibility", self.visibility)?;
        let beat = self.heartbeat_every();
        if beat < MIN_INTERVAL || beat >= self.visibility {
            return bad(format!(
                "heartbeat {beat:?} must be at least {MIN_INTERVAL:?} and less than the \
                 visibility {:?}",
                self.visibility
            ));
        }
        if !(MIN_INTERVAL..=MAX_POLL_INTERVAL).contains(&self.poll) {
            return bad(format!(
                "poll_interval {:?} is outside [{MIN_INTERVAL:?}, {MAX_POLL_INTERVAL:?}]",
                self.poll
            ));
        }
        if let Some(timeout) = self.job_timeout {
            if !(MIN_JOB_TIMEOUT..=MAX_JOB_TIMEOUT).contains(&timeout) {
                return bad(format!(
                    "job_timeout {timeout:?} is outside [{MIN_JOB_TIMEOUT:?}, {MAX_JOB_TIMEOUT:?}]"
                ));
            }
        }
        if self.name.contains('\0') {
            // A thread name with a NUL makes std's spawn panic.
            return bad(format!("name {:?} contains a NUL byte", self.name));
        }
        Ok(())
    }
}

/// Configures a [`WorkerPool`]; from [`WorkerPool::builder`].
///
/// ```
/// use std::time::Duration;
/// use walq::worker::{Outcome, RateLimit, WorkerPool};
///
/// # fn main() -> walq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let q = walq::Queue::open(dir.path())?;
/// let pool = WorkerPool::builder(q.clone())
///     .name("thumbnails")
///     .workers(2)
///     .visibility(Duration::from_secs(60)) // each lease; extended while the handler runs
///     .rate_limit(RateLimit::per_second(500))
///     .start(|_ctx, _payload| Outcome::done())?;
/// pool.shutdown(Duration::from_secs(5));
/// # Ok(()) }
/// ```
pub struct PoolBuilder<B: Backend> {
    backend: B,
    cfg: Config,
    rate: Option<RateLimit>,
    clock: Arc<dyn Clock>,
}

impl<B: Backend> PoolBuilder<B> {
    pub(crate) fn new(backend: B) -> PoolBuilder<B> {
        PoolBuilder {
            backend,
            cfg: Config {
                workers: 4,
                name: "walq-worker".into(),
                visibility: Duration::from_secs(30),
                heartbeat: None,
                poll: Duration::from_millis(100),
                shutdown_timeout: Duration::from_secs(30),
                job_timeout: None,
            },
            rate: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// How many worker threads (default 4, at most [`MAX_WORKERS`]).
    pub fn workers(mut self, n: usize) -> Self {
        self.cfg.workers = n;
        self
    }

    /// Thread names are `<name>-<n>` (default `walq-worker`); a name
    /// with a NUL byte is refused by `start` ([`ErrorKind::InvalidOptions`]).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.cfg.name = name.into();
        self
    }

    /// The visibility timeout of each lease (default 30 s). While a handler
    /// runs, the pool extends its lease by this much every heartbeat. It
    /// sizes every lease the pool takes, whatever the queue's own
    /// `QueueOptions::visibility_timeout` says (that one sizes plain
    /// `dequeue` calls). At least 3 ms, at most [`crate::MAX_DELAY`] (365
    /// days): `start` refuses others with
    /// [`crate::ErrorKind::InvalidOptions`].
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.cfg.visibility = visibility;
        self
    }

    /// How often running leases are extended (default a third of the
    /// visibility timeout; must be less than it, and at least 100 µs). A
    /// lease is extended at
    /// a beat once half an interval old, or, with an interval over two
    /// thirds of the visibility, once half of what the visibility leaves
    /// after an interval old, so that a lease taken late in an interval
    /// does not run out before the beat after next.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.cfg.heartbeat = Some(every);
        self
    }

    /// How long an idle worker waits for a job before it checks for
    /// shutdown again (default 100 ms, at least 100 µs, at most
    /// [`MAX_POLL_INTERVAL`]). Enqueues wake it at once, and so does a
    /// shutdown on a backend that implements [`Backend::wake_waiters`]
    /// ([`crate::Queue`], [`crate::worker::MultiQueue`]); on another, a
    /// shutdown waits up to this long for an idle worker. It is also how
    /// long a worker waits after a failed lease.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.cfg.poll = every;
        self
    }

    /// Start at most this many jobs per second (default: no limit).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate = Some(limit);
        self
    }

    /// The clock the rate limiter refills by (default the system clock; a
    /// [`crate::ManualClock`] makes the limit testable by counting).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Gives up on an attempt whose handler has run longer than `timeout`
    /// (default: no timeout; at least 1 ms, at most [`MAX_JOB_TIMEOUT`],
    /// else `start` fails with [`ErrorKind::InvalidOptions`]). The time
    /// runs from the lease, on the system's monotonic clock.
    ///
    /// Once it has passed, the heartbeat stops extending the job's lease,
    /// [`JobContext::lease_lost`] reports true (a handler that checks it
    /// should stop), the attempt is counted in
    /// [`PoolStats::timed_out`](crate::worker::PoolStats::timed_out), and
    /// with the `tracing` feature a `warn` event says so. Then:
    ///
    /// * In a [`WorkerPool`] (threads), a handler cannot be stopped from
    ///   outside: its worker thread stays busy until the handler returns,
    ///   and that late outcome is refused, whatever it is, and counted in
    ///   `lost`. The job is delivered again once its lease runs out (at
    ///   most a visibility timeout later), its attempt counted at lease
    ///   time; a job that always hangs goes to the dead letters after its
    ///   last attempt, with the queue's error `lease expired during
    ///   attempt N`. Meanwhile the pool's other workers go on.
    /// * In an async pool (`start_async`, feature `tokio`),
    ///   the handler's future is dropped (cancelled) at the timeout and the
    ///   attempt fails at once, as a retry after the queue's backoff (the
    ///   dead letters on the last attempt) with the error `timed out after
    ///   <timeout>`, counted in `retried` or `dead`. A future that returns
    ///   on its own past the timeout is treated the same way: even its
    ///   `Done` does not complete the job. A future that blocks its thread
    ///   (no `.await`) cannot be dropped until it returns, and tasks it
    ///   spawned are not stopped with it: their side effects may land
    ///   after the timeout (see docs/workers.md, "Job timeouts").
    ///
    /// ```
    /// use std::time::Duration;
    /// use walq::worker::{Outcome, WorkerPool};
    ///
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = walq::Queue::open(dir.path())?;
    /// let pool = WorkerPool::builder(q.clone())
    ///     .job_timeout(Duration::from_secs(300))
    ///     .start(|ctx, _payload| {
    ///         // A long handler checks now and then whether to give up.
    ///         if ctx.lease_lost() {
    ///             return Outcome::retry("gave up");
    ///         }
    ///         Outcome::done()
    ///     })?;
    /// pool.shutdown(Duration::from_secs(5));
    /// # Ok(()) }
    /// ```
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.job_timeout = Some(timeout);
        self
    }

    /// How long dropping the pool without [`WorkerPool::shutdown`] lets
    /// running handlers finish (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.shutdown_timeout = timeout;
        self
    }

    /// Starts the workers with a closure handler.
    ///
    /// Fails with [`ErrorKind::InvalidOptions`] for a bad setting, and
    /// with the error of [`Backend::check_open`] for a backend that can
    /// lease nothing: [`ErrorKind::Closed`] for a closed [`crate::Queue`].
    pub fn start<F, R>(self, handler: F) -> Result<WorkerPool<B>>
    where
        F: Fn(&JobContext, &[u8]) -> R + Send + Sync + 'static,
        R: Into<Outcome>,
    {
        self.start_handler(handler)
    }

    /// Starts the workers with any [`Handler`]; fails as
    /// [`PoolBuilder::start`] does.
    pub fn start_handler(self, handler: impl Handler) -> Result<WorkerPool<B>> {
        let (backend, cfg, rate, clock) = self.validated()?;
        WorkerPool::spawn(backend, cfg, Box::new(handler), rate, clock)
    }

    /// The settings, checked, and the backend, open (shared with the
    /// async pool). A closed backend is refused here: before, a pool
    /// started on a closed queue returned `Ok` and its workers stopped at
    /// their first lease, without a trace (a review found it).
    #[allow(clippy::type_complexity)]
    pub(crate) fn validated(self) -> Result<(B, Config, Option<RateLimit>, Arc<dyn Clock>)> {
        self.cfg.validate()?;
        if let Some(rate) = &self.rate {
            rate.validate()?;
        }
        self.backend.check_open()?;
        Ok((self.backend, self.cfg, self.rate, self.clock))
    }
}
