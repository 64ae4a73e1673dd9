//! # walq: an embedded, crash-safe job queue
//!
//! walq keeps a job queue in one directory on disk, linked into your
//! program: no server to run. Producers [`Queue::enqueue`] jobs (bytes);
//! workers [`Queue::dequeue`] them under a lease (visibility timeout) and
//! [`Queue::ack`] them when done, [`Queue::nack`] them for a retry with
//! backoff, or [`Queue::fail`] them to the dead letters. A job that keeps
//! failing reaches the dead letters after `max_attempts`.
//!
//! ```
//! use std::time::Duration;
//! use walq::{Options, Queue, Retry};
//!
//! # fn main() -> walq::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let q = Queue::open_with(dir.path(), Options::default().max_attempts(3))?;
//! q.enqueue(b"resize photo 1")?;
//! q.enqueue(b"resize photo 2")?;
//!
//! while let Some(job) = q.dequeue()? {
//!     if job.payload().ends_with(b"2") {
//!         // A transient failure: try again after the backoff delay.
//!         q.nack(job.receipt(), Retry::Backoff, "image service timed out")?;
//!     } else {
//!         q.ack(job.receipt())?;
//!     }
//! }
//! let stats = q.stats();
//! assert_eq!(stats.acked_total, 1);
//! assert_eq!(stats.delayed, 1);
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//!
//! Under [`Durability::Sync`] (the default) `enqueue`, `ack`, `nack` and
//! `fail` return only after their record is fdatasync'ed; concurrent
//! callers share one fdatasync. Delivery is at least once, one holder at a
//! time; an acked job never comes back; a stale receipt is refused; every
//! record is checksummed and damage is reported, never skipped silently.
//! See the README for the full list and the tests that prove each one.
//!
//! ## Layout
//!
//! The format is specified in `docs/format.md`, the design in
//! `docs/architecture.md`.

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod clock;
mod commit;
mod dead;
mod delivery;
mod error;
#[doc(hidden)]
pub mod format;
mod idhash;
mod job;
mod jobs;
mod keys;
mod leases;
mod log;
mod options;
#[allow(unsafe_code)]
mod os;
mod queue;
mod recovery;
mod segment;
mod state;
mod stats;
#[doc(hidden)]
pub mod vfs;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dead::DeadLetter;
pub use error::{Error, ErrorKind, Result};
pub use job::{Job, Receipt};
#[doc(hidden)]
pub use keys::force_key_hash_collisions as __force_key_hash_collisions;
pub use options::{
    Backoff, Durability, EnqueueOptions, Options, RecoveryMode, Retry, MAX_ATTEMPTS_LIMIT,
    MAX_ERROR_LEN, MAX_KEY_LEN, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
};
pub use queue::{Enqueued, Queue, LOCK_FILE};
pub use stats::{RecoveryReport, Stats};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
