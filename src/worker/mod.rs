//! Worker pools: threads that lease jobs, run your handler, and keep the
//! queue's promises while they do.
//!
//! A [`WorkerPool`] runs N named threads. Each leases a job (for the
//! pool's visibility timeout), runs the handler, and settles the job by
//! the handler's [`Outcome`]: done, retry (after the queue's backoff or a
//! delay the handler names) or fail (to the dead letters, with the error
//! text). Meanwhile:
//!
//! * a heartbeat extends the lease of every running handler, every third
//!   of the visibility timeout, so a slow job is not handed to a second
//!   worker; if a lease is lost anyway, [`JobContext::lease_lost`] says so;
//! * a handler that panics is caught: the attempt counts as failed, with
//!   the panic message as the job's error;
//! * an optional [`RateLimit`] (a token bucket) starts jobs at a steady
//!   pace, so a backlog drains without overwhelming what the handler calls;
//! * [`WorkerPool::shutdown`] stops leasing, lets running handlers finish
//!   within a deadline and releases the rest at once (ready again, attempt
//!   given back) instead of leaving them until their lease expires;
//! * an optional job timeout ([`PoolBuilder::job_timeout`]) gives up on a
//!   handler that runs too long: its lease is no longer extended (and an
//!   async pool drops its future), so a hung job is retried and
//!   eventually dead-lettered instead of holding its worker for good;
//! * [`WorkerPool::stats`] counts leased, done, retried, dead, panicked,
//!   released, lost and timed-out attempts.
//!
//! The pool drives the queue through the small [`Backend`] trait, which
//! [`crate::Queue`] implements; another backend runs the same pools and
//! handlers unchanged. For handlers that take a typed value instead of
//! bytes, see [`crate::typed`].
//!
//! With the `tokio` feature, the same builder starts an async pool
//! (`start_async`, `start_async_typed`: N tasks awaiting async handlers,
//! same rules) and `Queue::dequeue_async` waits for a job without
//! blocking a runtime thread. With the `tracing` feature, each job runs
//! in a `walq.job` span. See `docs/workers.md`.
//!
//! ```
//! use std::time::Duration;
//! use walq::worker::{JobContext, Outcome, WorkerPool};
//! use walq::{Options, Queue};
//!
//! # fn main() -> walq::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let q = Queue::open_with(dir.path(), Options::default().max_attempts(3))?;
//! q.enqueue(b"resize photo 1")?;
//! q.enqueue(b"resize photo 2")?;
//! q.enqueue(b"unreadable")?;
//!
//! let pool = WorkerPool::builder(q.clone())
//!     .name("resizer")
//!     .workers(2)
//!     .start(|ctx: &JobContext, payload: &[u8]| {
//!         if payload == b"unreadable" {
//!             return Outcome::fail("not a resize request");
//!         }
//!         // ctx.id() and ctx.attempt() make side effects safe to retry:
//!         // see docs/idempotency.md.
//!         let _ = ctx.provider_key();
//!         Outcome::done()
//!     })?;
//!
//! # let deadline = std::time::Instant::now() + Duration::from_secs(30);
//! while pool.stats().processed() < 3 {
//!     std::thread::sleep(Duration::from_millis(5));
//! #   assert!(std::time::Instant::now() < deadline);
//! }
//! let report = pool.shutdown(Duration::from_secs(5));
//! assert_eq!((report.stats.done, report.stats.dead), (2, 1));
//! assert_eq!(q.dead_letters()?[0].error, "not a resize request");
//! # Ok(()) }
//! ```

#[cfg(feature = "tokio")]
mod async_dequeue;
#[cfg(feature = "tokio")]
mod async_handler;
#[cfg(feature = "tokio")]
mod async_pool;
pub(crate) mod async_wait;
mod backend;
mod builder;
mod context;
mod counters;
mod handler;
mod heartbeat;
mod heartbeat_threads;
mod multi_queue;
mod outcome;
mod pool;
mod queue_backend;
mod rate;
mod release;
mod run;
mod settle;
mod shutdown;
mod signal;
mod threads;
mod trace;

#[cfg(feature = "tokio")]
pub use async_dequeue::AsyncBackend;
#[cfg(feature = "tokio")]
pub use async_handler::{async_typed, AsyncHandler, AsyncTyped};
#[cfg(feature = "tokio")]
pub use async_pool::AsyncWorkerPool;

pub use crate::status::JobStatus;
pub(crate) use backend::provider_key;
pub use backend::{Backend, Delivery};
pub use builder::{PoolBuilder, MAX_JOB_TIMEOUT, MAX_POLL_INTERVAL, MAX_WORKERS};
pub use context::JobContext;
pub use counters::PoolStats;
pub use handler::Handler;
pub use multi_queue::{MultiQueue, MAX_QUEUE_WEIGHT};
pub use outcome::{Outcome, MAX_RETRY_DELAY};
pub use pool::WorkerPool;
pub use rate::RateLimit;
pub use shutdown::{BackendCall, ShutdownReport, StuckThread};
