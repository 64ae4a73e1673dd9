//! A worker-pool [`Backend`](crate::worker::Backend) on a NATS JetStream
//! cluster (feature `jetstream`): the same [`crate::worker::WorkerPool`]s
//! and [`crate::Jobs`] handles, with producers and workers on many
//! machines.
//!
//! What it creates, for a queue called `q` (see `docs/scale-out.md`):
//!
//! * stream `WALQ_q`: work-queue retention, file storage, R3, message
//!   schedules allowed; ready jobs on `walq.q.jobs`, delayed copies on
//!   `walq.q.sched.<id>-<copy>` (one `Nats-Schedule: @at …` each);
//! * durable pull consumer `walq-q` on `walq.q.jobs`: explicit acks,
//!   AckWait = the lease, no MaxDeliver (walq counts attempts per job);
//! * stream `WALQ_q_DEAD`: the dead letters, one subject per job, with
//!   payload, attempts and error text;
//! * key-value bucket `WALQ_q_jobs`: one record per job id (state,
//!   attempts, lease, result). Every lease, settle and heartbeat is a
//!   compare-and-set on the record's revision: that is the fence.
//!
//! ```no_run
//! use std::time::Duration;
//! use walq::jetstream::{JetStream, JetStreamConfig};
//! use walq::worker::{Outcome, WorkerPool};
//!
//! # fn main() -> walq::Result<()> {
//! let backend = JetStream::connect(JetStreamConfig::new("nats://127.0.0.1:4222", "mail"))?;
//! let pool = WorkerPool::builder(backend)
//!     .workers(8)
//!     .visibility(Duration::from_secs(30))
//!     .start(|_ctx, _payload| Outcome::done())?;
//! pool.shutdown(Duration::from_secs(20));
//! # Ok(()) }
//! ```

mod async_lease;
mod backend;
mod cancel;
mod config;
mod dead_letters;
mod headers;
mod lease;
mod record;
mod settle;
mod setup;
mod stats;

use std::future::Future;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};

pub use backend::JetStreamLease;
pub use config::JetStreamConfig;
pub use stats::JetStreamStats;

/// A queue on a JetStream cluster; implements
/// [`Backend`](crate::worker::Backend). Cheap to clone; every clone shares
/// one connection and one small runtime.
///
/// Its methods block the calling thread (as [`crate::Queue`]'s do); they
/// run on the backend's own tokio runtime, so they may be called from any
/// thread, including `spawn_blocking` tasks of another runtime.
#[derive(Clone)]
pub struct JetStream {
    inner: Arc<setup::Inner>,
    rt: Arc<OwnedRuntime>,
}

/// The backend's runtime. Dropped with the last handle, it shuts down in
/// the background: a runtime dropped the ordinary way waits for its
/// threads, which panics inside an async task ("Cannot drop a runtime in
/// a context where blocking is not allowed"), where an async
/// application's last handle (an async pool's, a task's) goes.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for OwnedRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &tokio::runtime::Runtime {
        // Taken only by `drop`.
        self.0.as_ref().expect("the runtime is there until dropped")
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for JetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JetStream({})", self.inner.cfg.name)
    }
}

impl JetStream {
    /// Connects and creates (or opens) the queue's streams, consumer and
    /// bucket.
    pub fn connect(cfg: JetStreamConfig) -> Result<JetStream> {
        cfg.validate()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("walq-nats")
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, format!("JetStream runtime: {e}")))?;
        let rt = Arc::new(OwnedRuntime(Some(rt)));
        let inner = run(&rt, setup::Inner::connect(cfg))?;
        Ok(JetStream {
            inner: Arc::new(inner),
            rt,
        })
    }

    /// The settings it was made with.
    pub fn config(&self) -> &JetStreamConfig {
        &self.inner.cfg
    }

    /// Runs `f` on the backend's runtime and waits for it.
    pub(crate) fn block<T, F>(&self, f: impl FnOnce(Arc<setup::Inner>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        run(&self.rt, f(self.inner.clone()))
    }
}

/// Runs `fut` on `rt` from any thread (never `block_on`, which panics
/// inside another runtime) and waits for its result.
fn run<T, F>(rt: &tokio::runtime::Runtime, fut: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().unwrap_or_else(|_| {
        Err(Error::new(
            ErrorKind::Closed,
            "JetStream runtime stopped before the call finished",
        ))
    })
}

/// Steps the wall clock the JetStream backend reads by `by_ms` (for
/// walq's own tests of a clock step; process-wide). Not part of the
/// supported API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub fn step_wall_clock_for_tests(by_ms: i64) {
    record::WALL_STEP_MS.fetch_add(by_ms, std::sync::atomic::Ordering::Relaxed);
}

/// A NATS failure as a walq error.
pub(crate) fn nats_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Io, format!("JetStream {what}: {e}"))
}

/// The error of a fenced-off lease.
pub(crate) fn lease_lost(id: u64, why: &str) -> Error {
    Error::new(
        ErrorKind::LeaseLost,
        format!("job {id}: the lease is no longer current ({why})"),
    )
}
