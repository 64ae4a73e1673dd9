//! Recurring jobs: schedules (a cron expression, or every N seconds)
//! registered durably in the queue directory, each due tick enqueued as
//! exactly one job, across restarts and processes taking turns on the
//! directory.
//!
//! ```
//! use std::time::Duration;
//! use walq::schedule::{Missed, Schedule, Scheduler};
//! use walq::{ManualClock, Options, Queue};
//!
//! # fn main() -> walq::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! // 2023-11-14T22:13:20Z; a real program uses the system clock
//! // (`Scheduler::open`).
//! let clock = ManualClock::new(1_700_000_000_000);
//! let q = Queue::open_with(dir.path(), Options::default().clock(clock.clone()))?;
//! let scheduler = Scheduler::open_with_clock(&q, clock.clone())?;
//!
//! // Registering at every start is fine: an unchanged schedule is kept
//! // as it is, with its progress.
//! scheduler.register(
//!     Schedule::cron("nightly-report", "0 3 * * *")? // 03:00 UTC
//!         .payload(b"build the report".to_vec())
//!         .missed(Missed::RunOnce),
//! )?;
//! scheduler.register(Schedule::every("heartbeat", Duration::from_secs(60))?)?;
//!
//! // A program calls `tick` (or `scheduler.spawn(poll)` runs a thread).
//! clock.advance(Duration::from_secs(60));
//! let report = scheduler.tick()?;
//! assert_eq!(report.fired.len(), 1); // the heartbeat at 22:14:00
//! assert!(scheduler.tick()?.fired.is_empty()); // once per tick
//!
//! let job = q.dequeue()?.expect("the heartbeat's job");
//! let key = job.idempotency_key().expect("every tick has a key");
//! assert_eq!(walq::schedule::parse_tick_key(key), Some(("heartbeat", 1_700_000_040)));
//! # Ok(()) }
//! ```
//!
//! How exactly-once per tick works, the missed-tick policies and the
//! condition on the dedup window: `docs/recurring.md`. The schedule file
//! `schedules.bin`: `docs/format.md`.

pub(crate) mod codec;
mod definition;
mod failure;
mod key;
mod plan;
mod scheduler;
mod spec;
pub(crate) mod store;
mod thread;
pub(crate) mod utc;

pub use codec::MAX_SCHEDULES;
pub use definition::{
    Missed, Schedule, DEFAULT_GRACE, MAX_GRACE_SECS, MAX_NAME_LEN, MAX_SCHEDULE_PAYLOAD,
};
pub use key::{parse_tick_key, tick_key, KEY_PREFIX};
pub use scheduler::{Fired, Registered, Rewound, ScheduleInfo, Scheduler, Skipped, TickReport};
pub use spec::{Spec, MAX_CRON_LEN};
pub use store::{SCHEDULE_FILE, SCHEDULE_LOCK_FILE};
pub use thread::SchedulerThread;

/// The examples of `docs/recurring.md`, compiled and run as doc tests.
#[doc = include_str!("../../docs/recurring.md")]
#[cfg(doctest)]
pub struct RecurringDoctests;
