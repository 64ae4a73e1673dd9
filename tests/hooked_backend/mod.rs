//! A [`Queue`] as a worker backend with a hook before its pool-facing
//! calls, for tests that make one call slow or panic and delegate the
//! rest.
#![allow(dead_code)]

use std::time::Duration;

use walq::worker::{Backend, Delivery, JobStatus};
use walq::{EnqueueOptions, Enqueued, Queue, Receipt};

/// What runs before a call of [`Hooked`] reaches its queue; each hook
/// does nothing unless a test overrides it.
pub trait Hooks: Send + Sync + 'static {
    /// Runs before `extend` (a heartbeat's lease extension).
    fn before_extend(&self) {}
    /// Runs before `extend` of job `id`'s lease; calls `before_extend`
    /// unless a test overrides it.
    fn before_extend_of(&self, id: u64) {
        let _ = id;
        self.before_extend();
    }
    /// Runs before `complete_batch` (a settler's batch of acks).
    fn before_complete_batch(&self) {}
    /// Runs before `release` (a shutdown handing back a running job).
    fn before_release(&self) {}
    /// Runs before `lease` and `lease_until_stopped` (a worker taking its
    /// next job; not the async pool's `lease_async`).
    fn before_lease(&self) {}
    /// Runs before `complete`, `retry` and `fail` of job `id` (a worker
    /// settling its job itself).
    fn before_settle(&self, id: u64) {
        let _ = id;
    }
}

/// `q` driven as a [`Backend`], with `hooks` run before its calls.
pub struct Hooked<H> {
    pub q: Queue,
    pub hooks: H,
}

impl<H: Hooks> Backend for Hooked<H> {
    type Lease = Receipt;

    fn enqueue(&self, payload: &[u8], opts: EnqueueOptions) -> walq::Result<Enqueued> {
        Backend::enqueue(&self.q, payload, opts)
    }

    fn lease(&self, vis: Duration, wait: Duration) -> walq::Result<Option<Delivery<Receipt>>> {
        self.hooks.before_lease();
        Backend::lease(&self.q, vis, wait)
    }

    fn lease_until_stopped(
        &self,
        vis: Duration,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> walq::Result<Option<Delivery<Receipt>>> {
        self.hooks.before_lease();
        Backend::lease_until_stopped(&self.q, vis, wait, stop)
    }

    fn wake_waiters(&self) {
        Backend::wake_waiters(&self.q)
    }

    fn check_open(&self) -> walq::Result<()> {
        Backend::check_open(&self.q)
    }

    fn complete(&self, lease: &Receipt, result: Option<&[u8]>) -> walq::Result<()> {
        self.hooks.before_settle(lease.job_id());
        Backend::complete(&self.q, lease, result)
    }

    fn complete_batch(&self, items: &[(&Receipt, Option<&[u8]>)]) -> Vec<walq::Result<()>> {
        self.hooks.before_complete_batch();
        Backend::complete_batch(&self.q, items)
    }

    fn retry(&self, lease: &Receipt, delay: Option<Duration>, error: &str) -> walq::Result<()> {
        self.hooks.before_settle(lease.job_id());
        Backend::retry(&self.q, lease, delay, error)
    }

    fn release(&self, lease: &Receipt, error: &str) -> walq::Result<()> {
        self.hooks.before_release();
        Backend::release(&self.q, lease, error)
    }

    fn fail(&self, lease: &Receipt, error: &str) -> walq::Result<()> {
        self.hooks.before_settle(lease.job_id());
        Backend::fail(&self.q, lease, error)
    }

    fn extend(&self, lease: &Receipt, visibility: Duration) -> walq::Result<()> {
        self.hooks.before_extend_of(lease.job_id());
        Backend::extend(&self.q, lease, visibility)
    }

    fn status(&self, id: u64) -> walq::Result<JobStatus> {
        Backend::status(&self.q, id)
    }

    fn cancel(&self, id: u64) -> walq::Result<()> {
        Backend::cancel(&self.q, id)
    }
}

/// Leases as the queue does, for the async pool.
#[cfg(feature = "tokio")]
impl<H: Hooks> walq::worker::AsyncBackend for Hooked<H> {
    async fn lease_async(
        &self,
        vis: Duration,
        wait: Duration,
    ) -> walq::Result<Option<Delivery<Receipt>>> {
        self.hooks.before_lease();
        walq::worker::AsyncBackend::lease_async(&self.q, vis, wait).await
    }
}
