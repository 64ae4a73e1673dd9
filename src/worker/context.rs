//! What a handler knows about the job it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::worker::backend::JobInfo;
use crate::worker::heartbeat::Beat;

/// The job a handler runs, and the state of its lease.
///
/// It carries what makes a side effect safe to retry (see
/// `docs/idempotency.md`): the job's stable [`id`](JobContext::id), the
/// [`attempt`](JobContext::attempt) number and the
/// [`idempotency_key`](JobContext::idempotency_key) it was enqueued with.
/// It is plain data and atomics, so the same context serves threads and
/// async tasks.
///
/// ```
/// use walq::worker::JobContext;
///
/// // Handlers can be unit-tested with a context of their own.
/// let ctx = JobContext::new(42).with_attempt(2, 5).with_key(b"order-42".to_vec());
/// assert_eq!(ctx.id(), 42);
/// assert_eq!(ctx.provider_key(), "walq-job-42"); // no store: a test's context
/// assert!(!ctx.is_last_attempt());
/// assert!(!ctx.lease_lost());
/// ```
#[derive(Debug, Clone)]
pub struct JobContext {
    info: JobInfo,
    worker: Arc<str>,
    lost: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    /// In a pool: the heartbeat's state of the lease, and the visibility
    /// timeout in ms.
    beat: Option<(Arc<Beat>, u64)>,
}

impl JobContext {
    /// A context for job `id`, attempt 1 of 1, outside any pool (for tests
    /// of handlers).
    pub fn new(id: u64) -> JobContext {
        let info = JobInfo {
            id,
            attempt: 1,
            max_attempts: 1,
            idempotency_key: None,
            scope: None,
            queue: None,
            last_error: None,
        };
        JobContext::in_pool(info, Arc::from("test"), Arc::default(), Arc::default())
    }

    /// Sets the attempt number and the attempts allowed.
    pub fn with_attempt(mut self, attempt: u32, max_attempts: u32) -> JobContext {
        self.info.attempt = attempt;
        self.info.max_attempts = max_attempts;
        self
    }

    /// Sets the idempotency key.
    pub fn with_key(mut self, key: Vec<u8>) -> JobContext {
        self.info.idempotency_key = Some(key);
        self
    }

    /// Sets the name of the queue the job came from (default
    /// [`crate::DEFAULT_QUEUE`]).
    pub fn with_queue(mut self, name: &str) -> JobContext {
        self.info.queue = Some(Arc::from(name));
        self
    }

    pub(crate) fn in_pool(
        info: JobInfo,
        worker: Arc<str>,
        lost: Arc<AtomicBool>,
        stopping: Arc<AtomicBool>,
    ) -> JobContext {
        JobContext {
            info,
            worker,
            lost,
            stopping,
            beat: None,
        }
    }

    /// Lets [`JobContext::lease_lost`] see a lease that has gone
    /// `visibility_ms` without a successful extension since it was last
    /// fresh.
    pub(crate) fn with_beat(mut self, beat: Arc<Beat>, visibility_ms: u64) -> JobContext {
        self.beat = Some((beat, visibility_ms));
        self
    }

    /// The job id: unique, the same on every attempt, never reused (one
    /// exception: under `Durability::Os` or `Periodic` a power cut can lose
    /// the log records of the newest jobs, and their ids are then issued
    /// again; under `Sync`, the default, a job is delivered only once its
    /// enqueue is durable, so no delivered id is issued twice).
    pub fn id(&self) -> u64 {
        self.info.id
    }

    /// Which attempt this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }

    /// Attempts allowed before the job goes to the dead letters.
    pub fn max_attempts(&self) -> u32 {
        self.info.max_attempts
    }

    /// True on the last attempt: a retry now sends the job to the dead
    /// letters.
    pub fn is_last_attempt(&self) -> bool {
        self.info.attempt >= self.info.max_attempts
    }

    /// The idempotency key the job was enqueued with, if any.
    pub fn idempotency_key(&self) -> Option<&[u8]> {
        self.info.idempotency_key.as_deref()
    }

    /// A key to hand to an outside service (a payment or mail provider)
    /// so that it performs this job's side effect at most once, whatever
    /// the attempt: `walq-<store>-<id>`, where `<store>` is 32 hex digits
    /// that tell this store (or JetStream stream) from every other, drawn
    /// when it was created and kept for its life (file `STORE_ID`). Job
    /// ids start at 1 in every store, so without it two stores sharing one
    /// provider account (two servers, or a directory wiped and made again)
    /// would hand it the same key for two different jobs, and the provider
    /// would answer the second with the first one's cached response.
    ///
    /// Ids are never issued twice, even when a power cut under
    /// `Durability::Os` or `Periodic` loses the log records of jobs that
    /// already ran (and made their provider call): the store keeps a
    /// synced id floor (file `ID_FLOOR`), so a new job never gets a lost
    /// job's key. Such a power cut can still lose an ack, so a job runs
    /// again with its own key; jobs whose enqueue must not be lost belong
    /// in a `Sync` queue (the default).
    ///
    /// It changes when a job moves to another store (`walq export` and
    /// `import` give it a new id there), and after a salvage that had to
    /// draw a new store id: a job whose side effect must survive such a
    /// move carries a key of its own in its payload or
    /// [`idempotency_key`](JobContext::idempotency_key).
    ///
    /// A context made with [`JobContext::new`] (outside a pool) has no
    /// store: its key is `walq-job-<id>`. A job of the JetStream backend
    /// gets `walq-js<16 hex digits>-<id>`, scoped by its stream's name and
    /// creation time (its ids are random 63-bit numbers, or derived from
    /// the job's idempotency key, and repeat across streams).
    pub fn provider_key(&self) -> String {
        super::backend::provider_key(self.info.scope.as_deref(), self.info.id)
    }

    /// The name of the queue the job came from, so that a handler of a
    /// pool serving several queues (a
    /// [`MultiQueue`](crate::worker::MultiQueue)) can tell their jobs
    /// apart without looking inside the payload.
    ///
    /// * A pool on a [`crate::Queue`]: that queue's name, as
    ///   [`crate::Queue::name`] gives it: the name given to
    ///   `store.queue(name)`, or [`crate::DEFAULT_QUEUE`] (`"default"`)
    ///   for the default queue (`Queue::open`, `store.default_queue()`).
    /// * A pool on a `MultiQueue`: the name of the one of its queues the
    ///   job was leased from.
    /// * A pool on the JetStream backend: the queue name its
    ///   `JetStreamConfig::new(urls, name)` was given (`mail`, not the
    ///   stream `WALQ_mail` nor the subject `walq.mail.jobs`).
    /// * Another backend: what its [`Delivery::queue`](crate::worker::Delivery::queue)
    ///   set, else [`crate::DEFAULT_QUEUE`]; a context made with
    ///   [`JobContext::new`]: [`crate::DEFAULT_QUEUE`] unless
    ///   [`JobContext::with_queue`] set one.
    ///
    /// Never empty: queue names are 1 to 64 bytes
    /// ([`crate::validate_queue_name`]); an empty name a backend gave
    /// reads as [`crate::DEFAULT_QUEUE`].
    pub fn queue(&self) -> &str {
        match self.info.queue.as_deref() {
            Some(name) if !name.is_empty() => name,
            _ => crate::DEFAULT_QUEUE,
        }
    }

    /// The error text the job's last failed attempt gave (its handler's
    /// `Outcome::retry` text, or a raw nack's), if any: `None` on a first
    /// attempt, after attempts that failed without a text, and on the
    /// JetStream backend (which keeps no such record). For a handler that
    /// acts on why the job failed before (logs it, picks another route).
    pub fn last_error(&self) -> Option<&str> {
        self.info.last_error.as_deref()
    }

    /// The name of the worker thread running the job.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// True once the lease is gone: it expired before a heartbeat could
    /// extend it, or the pool released the job at shutdown. Another worker
    /// may now run the job; stop and don't commit side effects. The
    /// outcome of this attempt will be refused.
    ///
    /// Also true (and from then on) once a whole visibility timeout has
    /// passed since the lease was last known fresh (taken, or last
    /// extended) without a successful extension: the lease may have run
    /// out, whether its extension is blocked on the backend, failing, or
    /// waiting for a heartbeat thread (all of which may be blocked in
    /// other leases' extensions). This needs no heartbeat thread: the
    /// context reads it itself.
    ///
    /// And true once the job has run longer than the pool's
    /// [`job_timeout`](crate::worker::PoolBuilder::job_timeout): its
    /// lease is no longer extended and its outcome will be refused (in an
    /// async pool, the handler's future is dropped at the timeout).
    pub fn lease_lost(&self) -> bool {
        if self.lost.load(Ordering::Acquire) {
            return true;
        }
        let overdue = self.beat.as_ref().is_some_and(|(beat, visibility_ms)| {
            beat.overdue(*visibility_ms) || beat.past_timeout()
        });
        if overdue {
            self.lost.store(true, Ordering::Release);
        }
        overdue
    }

    /// True once the pool is shutting down; a long handler may finish
    /// early (e.g. return a retry) to hand its job back sooner.
    pub fn is_shutting_down(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}
