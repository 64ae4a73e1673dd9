//! The small trait a worker pool drives a queue through.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::options::EnqueueOptions;
use crate::queue::Enqueued;
use crate::status::JobStatus;

/// A queue as a [`crate::worker::WorkerPool`] and a
/// [`crate::typed::Jobs`] handle see it: enqueue, lease, settle, extend,
/// look a job up, and cancel one that waits.
///
/// [`crate::Queue`] implements it. Another backend (a distributed one, such
/// as NATS JetStream) implements the same methods and runs the same pools
/// and handlers unchanged. The trait speaks only of job ids, payload bytes,
/// durations and error texts; what proves a lease is the backend's own
/// [`Backend::Lease`] type (a [`crate::Receipt`] here, a fenced ack
/// subject elsewhere).
///
/// Every settle (`complete`, `retry`, `release`, `fail`) and `extend` must
/// be fenced: when the lease it names has expired or been replaced, it
/// changes nothing and fails with [`crate::ErrorKind::LeaseLost`].
pub trait Backend: Send + Sync + 'static {
    /// Proof of one lease on one job, handed back to settle it.
    type Lease: Clone + Send + Sync + 'static;

    /// Adds a job; with an idempotency key already known, returns the
    /// existing job's id and `duplicate: true` instead.
    fn enqueue(&self, payload: &[u8], opts: EnqueueOptions) -> Result<Enqueued>;

    /// Leases the next ready job for `visibility`, waiting up to `wait`
    /// for one to become ready. `Ok(None)` when none did.
    fn lease(&self, visibility: Duration, wait: Duration) -> Result<Option<Delivery<Self::Lease>>>;

    /// [`Backend::lease`], whose wait for a job ends early, `Ok(None)`,
    /// once `stop()` is true: what a sync worker pool's idle workers lease
    /// through, so that a shutdown, which sets their stop flag and then
    /// calls [`Backend::wake_waiters`], does not wait out their poll
    /// interval. A backend that overrides it reads `stop` before each
    /// wait in a way [`Backend::wake_waiters`] cannot slip past (e.g.
    /// under the lock its wake takes), and overrides `wake_waiters` too.
    ///
    /// The default calls [`Backend::lease`], ignoring `stop`: a shutdown
    /// then waits up to one poll interval for each idle worker.
    fn lease_until_stopped(
        &self,
        visibility: Duration,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Delivery<Self::Lease>>> {
        let _ = stop;
        self.lease(visibility, wait)
    }

    /// Wakes the calls of [`Backend::lease_until_stopped`] waiting for a
    /// job, so that each reads its `stop` again (a worker pool calls it
    /// once, as it begins to stop, after setting its workers' stop flag).
    /// A waiter whose `stop` is still false waits on. Default: nothing.
    fn wake_waiters(&self) {}

    /// Marks the job done, with an optional small result kept for clients
    /// that poll [`Backend::status`].
    fn complete(&self, lease: &Self::Lease, result: Option<&[u8]>) -> Result<()>;

    /// Marks several jobs done, as [`Backend::complete`] does for each,
    /// for a pool that pipelines its acks. Returns one result per item, in
    /// order; each `Ok` must mean that item's completion is as durable as
    /// [`Backend::complete`] makes it.
    ///
    /// The default calls [`Backend::complete`] for each item; a backend
    /// that can record many completions with one write and one sync (as
    /// [`crate::Queue`] does) overrides it.
    fn complete_batch(&self, items: &[(&Self::Lease, Option<&[u8]>)]) -> Vec<Result<()>> {
        items
            .iter()
            .map(|(lease, result)| self.complete(lease, *result))
            .collect()
    }

    /// Gives the job back for another attempt after `delay`, or after the
    /// backend's own backoff when `None`. A job on its last attempt goes
    /// to the dead letters instead, with `error`.
    ///
    /// `error` says why the attempt failed. Whether a backend keeps it
    /// for a job that is retried is its own choice: [`crate::Queue`] keeps
    /// it only when the job is dead-lettered (its log's retry record has
    /// no error, and the job's status, `Delayed` or `Queued`, carries
    /// none); the JetStream backend keeps the last one in the job's
    /// record.
    fn retry(&self, lease: &Self::Lease, delay: Option<Duration>, error: &str) -> Result<()>;

    /// Gives the job back ready now without counting the attempt its
    /// lease started, for a worker that stops before its handler ran or
    /// finished: a stop is not the job's failure, so a job on its last
    /// attempt stays queued, never dead-lettered. `error` says why (a
    /// backend may record it). See [`crate::Queue::release`].
    fn release(&self, lease: &Self::Lease, error: &str) -> Result<()>;

    /// Sends the job straight to the dead letters with `error`.
    fn fail(&self, lease: &Self::Lease, error: &str) -> Result<()>;

    /// Keeps the lease for `visibility` from now (a heartbeat).
    fn extend(&self, lease: &Self::Lease, visibility: Duration) -> Result<()>;

    /// What became of job `id`.
    fn status(&self, id: u64) -> Result<JobStatus>;

    /// Takes back job `id` while it waits to run (ready, delayed, waiting
    /// for a retry): it is never delivered, and its status reads
    /// [`JobStatus::Purged`]. A job leased to a worker is refused with
    /// [`crate::ErrorKind::InFlight`] and nothing changes; one that does
    /// not wait (never issued, finished, dead) is
    /// [`crate::ErrorKind::NotFound`]. See [`crate::Queue::cancel`].
    fn cancel(&self, id: u64) -> Result<()>;

    /// Fails if the backend can no longer lease anything, with the error
    /// its `lease` would fail with: a worker pool's `start` calls it and
    /// refuses such a backend, rather than start workers that would stop
    /// at their first lease. A cheap check, no I/O.
    ///
    /// The default says it is open. [`crate::Queue`] fails with
    /// [`crate::ErrorKind::Closed`] once closed, and with
    /// [`crate::ErrorKind::Poisoned`] once poisoned.
    fn check_open(&self) -> Result<()> {
        Ok(())
    }
}

/// One leased job, as a [`Backend`] hands it to a worker.
#[derive(Debug, Clone)]
pub struct Delivery<L> {
    id: u64,
    attempt: u32,
    max_attempts: u32,
    idempotency_key: Option<Vec<u8>>,
    scope: Option<Arc<str>>,
    queue: Option<Arc<str>>,
    last_error: Option<Arc<str>>,
    payload: Vec<u8>,
    lease: L,
}

impl<L> Delivery<L> {
    /// A delivery of job `id` (attempt 1 of 1, no key) under `lease`.
    pub fn new(id: u64, payload: Vec<u8>, lease: L) -> Delivery<L> {
        Delivery {
            id,
            attempt: 1,
            max_attempts: 1,
            idempotency_key: None,
            scope: None,
            queue: None,
            last_error: None,
            payload,
            lease,
        }
    }

    /// Sets which attempt this is (1-based) and how many are allowed.
    pub fn attempts(mut self, attempt: u32, max_attempts: u32) -> Delivery<L> {
        self.attempt = attempt;
        self.max_attempts = max_attempts;
        self
    }

    /// Sets the idempotency key the job was enqueued with.
    pub fn idempotency_key(mut self, key: Option<Vec<u8>>) -> Delivery<L> {
        self.idempotency_key = key;
        self
    }

    /// Sets the scope of the job's id: what makes
    /// [`JobContext::provider_key`](crate::worker::JobContext::provider_key)
    /// unique beyond this backend, since job ids of two backends (two
    /// stores, two streams) repeat. It must stay the same for the
    /// backend's life, differ between backends, and be safe in an HTTP
    /// header (the embedded store uses 32 hex digits, JetStream `js` and
    /// 16). Without one the key is
    /// `walq-job-<id>`, unique only within the backend.
    pub fn provider_scope(mut self, scope: Arc<str>) -> Delivery<L> {
        self.scope = Some(scope);
        self
    }

    /// Sets the name of the queue the job came from, which the handler
    /// reads from [`JobContext::queue`](crate::worker::JobContext::queue):
    /// a named queue's name ([`crate::DEFAULT_QUEUE`] for a store's
    /// default queue), or for the JetStream backend the queue name its
    /// `JetStreamConfig` was made with. A delivery that names none is
    /// seen as coming from [`crate::DEFAULT_QUEUE`] (a backend with one
    /// queue need not name it).
    pub fn queue(mut self, name: Arc<str>) -> Delivery<L> {
        self.queue = Some(name);
        self
    }

    /// Sets the error text the job's last failed attempt gave, which the
    /// handler reads from
    /// [`JobContext::last_error`](crate::worker::JobContext::last_error).
    pub fn last_error(mut self, error: Option<Arc<str>>) -> Delivery<L> {
        self.last_error = error;
        self
    }

    /// The job id: stable across attempts, never reused.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Which attempt this is (1 for the first delivery).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Attempts allowed before the job goes to the dead letters.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The lease, to settle or extend the job with.
    pub fn lease(&self) -> &L {
        &self.lease
    }

    /// Splits the delivery into what a handler sees and the lease.
    pub(crate) fn into_parts(self) -> (JobInfo, Vec<u8>, L) {
        let info = JobInfo {
            id: self.id,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            idempotency_key: self.idempotency_key,
            scope: self.scope,
            queue: self.queue,
            last_error: self.last_error,
        };
        (info, self.payload, self.lease)
    }
}

/// The key job `id` of the backend of `scope` hands to an outside service
/// ([`JobContext::provider_key`](crate::worker::JobContext::provider_key)):
/// `walq-<scope>-<id>`, or `walq-job-<id>` without a scope. The one place
/// the format is written: `Queue::provider_key` gives consumers that
/// dequeue by hand the key a pool's handler gets, and the two must never
/// drift apart (a provider would run the side effect twice).
pub(crate) fn provider_key(scope: Option<&str>, id: u64) -> String {
    match scope {
        Some(scope) => format!("walq-{scope}-{id}"),
        None => format!("walq-job-{id}"),
    }
}

/// The identity of one attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobInfo {
    pub(crate) id: u64,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) idempotency_key: Option<Vec<u8>>,
    /// The scope of the id ([`Delivery::provider_scope`]).
    pub(crate) scope: Option<Arc<str>>,
    /// The queue the job came from ([`Delivery::queue`]); `None`: the
    /// default queue.
    pub(crate) queue: Option<Arc<str>>,
    /// The error of the job's last failed attempt ([`Delivery::last_error`]).
    pub(crate) last_error: Option<Arc<str>>,
}

/// A shared backend is a backend: one `Arc` can feed a [`crate::Jobs`]
/// producer handle and a pool.
impl<B: Backend> Backend for std::sync::Arc<B> {
    type Lease = B::Lease;

    fn enqueue(&self, payload: &[u8], opts: EnqueueOptions) -> Result<Enqueued> {
        (**self).enqueue(payload, opts)
    }

    fn lease(&self, visibility: Duration, wait: Duration) -> Result<Option<Delivery<Self::Lease>>> {
        (**self).lease(visibility, wait)
    }

    fn lease_until_stopped(
        &self,
        visibility: Duration,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Delivery<Self::Lease>>> {
        (**self).lease_until_stopped(visibility, wait, stop)
    }

    fn wake_waiters(&self) {
        (**self).wake_waiters()
    }

    fn complete(&self, lease: &Self::Lease, result: Option<&[u8]>) -> Result<()> {
        (**self).complete(lease, result)
    }

    fn complete_batch(&self, items: &[(&Self::Lease, Option<&[u8]>)]) -> Vec<Result<()>> {
        (**self).complete_batch(items)
    }

    fn retry(&self, lease: &Self::Lease, delay: Option<Duration>, error: &str) -> Result<()> {
        (**self).retry(lease, delay, error)
    }

    fn release(&self, lease: &Self::Lease, error: &str) -> Result<()> {
        (**self).release(lease, error)
    }

    fn fail(&self, lease: &Self::Lease, error: &str) -> Result<()> {
        (**self).fail(lease, error)
    }

    fn extend(&self, lease: &Self::Lease, visibility: Duration) -> Result<()> {
        (**self).extend(lease, visibility)
    }

    fn status(&self, id: u64) -> Result<JobStatus> {
        (**self).status(id)
    }

    fn cancel(&self, id: u64) -> Result<()> {
        (**self).cancel(id)
    }

    fn check_open(&self) -> Result<()> {
        (**self).check_open()
    }
}
