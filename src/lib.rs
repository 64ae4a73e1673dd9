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
//! ## Soundness
//!
//! No public type gives a view into walq's memory maps: a [`Job`] owns a
//! copy of its payload, and the map type is crate-private (the file-system
//! seam and raw format modules are public only with the `testing` feature,
//! for walq's own tests, and even then the map is out of reach):
//!
//! ```compile_fail
//! // The memory-map type is not nameable from outside the crate.
//! fn peek(region: &walq::vfs::Region) {}
//! ```
//!
//! ```compile_fail
//! // Nor are its methods callable on a map obtained through the seam.
//! use walq::vfs::{SimFs, Vfs, VfsFile};
//! let fs = SimFs::new();
//! let file = fs.create(std::path::Path::new("/x"), 0o600).unwrap();
//! let region = file.map(16).unwrap();
//! let _ = region.write(0, b"two writers");
//! let _ = region.bytes(0, 16);
//! ```
//!
//! ## Layout
//!
//! The format is specified in `docs/format.md`, the design in
//! `docs/architecture.md`.

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod checkpointer;
mod clock;
mod commit;
mod cowmap;
mod dead;
mod delivery;
mod done;
mod error;
// A store with jobs in every state, for walq's own tests and the CLI's.
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fixture;
// The raw format and file-system seam are internal. The `testing` feature
// exposes them to walq's own tests and fuzz targets; a release build's API
// has neither (and neither reaches the memory-map type, see `os`).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod format;
#[cfg(not(feature = "testing"))]
mod format;
mod groups;
mod id_floor;
mod idhash;
pub mod inspect;
#[cfg(feature = "jetstream")]
pub mod jetstream;
mod job;
mod jobs;
mod keys;
mod last_errors;
mod leases;
mod levels;
mod log;
mod named;
mod options;
#[allow(unsafe_code)]
mod os;
mod pause;
mod payload;
mod priority;
mod queue;
mod queue_options;
mod recovery;
mod reserve;
mod rotation_tear;
pub mod schedule;
mod segmap;
mod segment;
mod state;
mod stats;
mod status;
mod store_id;
mod sync_latch;
pub mod typed;
mod upkeep;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod vfs;
#[cfg(not(feature = "testing"))]
mod vfs;
mod wakeups;
pub mod worker;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dead::DeadLetter;
pub use done::{MAX_PURGE_MARKERS, MAX_RESULT_LEN};
pub use error::{Error, ErrorKind, Result};
/// Longest message group key, in bytes (`EnqueueOptions::group`).
pub use format::record::MAX_GROUP_LEN;
/// Longest queue name, in bytes (`Store::queue`).
pub use format::record::MAX_QUEUE_NAME;
pub use job::{Job, Receipt};
#[doc(hidden)]
pub use keys::force_key_hash_collisions as __force_key_hash_collisions;
pub use named::{validate_name as validate_queue_name, DEFAULT_QUEUE, MAX_QUEUES};
pub use options::{
    Backoff, Durability, EnqueueOptions, Options, RecoveryMode, Retry, DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_MAX_PAYLOAD, DEFAULT_SEGMENT_SIZE, MAX_ATTEMPTS_LIMIT, MAX_DELAY, MAX_ERROR_LEN,
    MAX_KEY_LEN, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
};
pub use pause::PAUSED_FILE;
pub use priority::Priority;
pub use queue::{Enqueued, Queue, Store, LOCK_FILE};
pub use queue_options::QueueOptions;
pub use schedule::{Schedule, Scheduler};
pub use stats::{QueueStats, RecoveryReport, Stats, StoreStats};
pub use status::JobStatus;
pub use typed::Jobs;
pub use worker::{JobContext, Outcome, RateLimit, WorkerPool};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
