//! The scheduler: owns a queue directory's schedules and enqueues their
//! due ticks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::codec::{self, Entry, MAX_SCHEDULES};
use super::definition::Schedule;
use super::failure::{self, FailedTick};
use super::key::tick_key;
use super::plan::{plan, resume_from, Action};
use super::store::Store;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::options::EnqueueOptions;
use crate::queue::Queue;
use crate::vfs::{StdFs, Vfs};

/// Runs the schedules registered in a queue directory: each due tick
/// becomes exactly one job (see `docs/recurring.md`).
///
/// A scheduler holds a clone of its [`Queue`] (and so the directory lock)
/// and the lock of the schedule file: one scheduler per directory at a
/// time; processes take turns like they do with the queue. Call
/// [`Scheduler::tick`] yourself, or let [`Scheduler::spawn`] run a thread
/// that does. Cheap to clone; clones share one scheduler. Closing its
/// queue (`Queue::close`) releases the schedules with the directory: the
/// next owner opens them at once, and this scheduler's `register`,
/// `remove` and `tick` return [`ErrorKind::Closed`] from then on.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Queue,
    clock: Arc<dyn Clock>,
    store: Store,
    /// The file's content, sorted by name; changed only after a save.
    entries: Mutex<Vec<Entry>>,
    /// Changes of the schedules so far, and the condition the threads of
    /// [`Scheduler::spawn`] wait on: a registration or removal, or a
    /// thread told to stop, wakes them.
    changes: Mutex<u64>,
    changed: Condvar,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("queue", &self.inner.queue)
            .finish_non_exhaustive()
    }
}

/// What [`Scheduler::register`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new schedule; its first tick is the first one after now.
    Added,
    /// A schedule of that name was replaced; its progress (the last tick
    /// dealt with) is kept by [`Scheduler::register`], so no tick runs
    /// twice, and set to now by [`Scheduler::register_from_now`].
    Updated,
    /// The same schedule was already registered; nothing was written.
    Unchanged,
}

/// One job enqueued by [`Scheduler::tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The schedule's name.
    pub name: String,
    /// The tick the job stands for (seconds since the Unix epoch); under
    /// [`super::Missed::RunOnce`] also for every missed tick before it.
    pub tick: u64,
    /// The job's id.
    pub job_id: u64,
    /// True when the queue already had this tick's job (a tick enqueued
    /// before a crash, deduplicated by its idempotency key).
    pub duplicate: bool,
}

/// Ticks passed over by [`Scheduler::tick`] under [`super::Missed::Skip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The schedule's name.
    pub name: String,
    /// The latest tick skipped; the schedule resumes after it.
    pub tick: u64,
}

/// A schedule whose last tick [`Scheduler::tick`] found ahead of the
/// clock and set back: the clock stepped back since that tick was taken
/// (see docs/recurring.md, "Clock steps").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewound {
    /// The schedule's name.
    pub name: String,
    /// The last tick found ahead of the clock (seconds since the Unix
    /// epoch).
    pub from: u64,
    /// The last tick it was set to: the second before the clock's time,
    /// so a tick at that time is due and later ones come due as usual.
    pub to: u64,
}

/// What one [`Scheduler::tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TickReport {
    /// The jobs enqueued, one per schedule with a due tick.
    pub fired: Vec<Fired>,
    /// The schedules whose due ticks were all missed.
    pub skipped: Vec<Skipped>,
    /// The schedules whose last tick was ahead of the clock, set back
    /// before their due tick (if any) was dealt with.
    pub rewound: Vec<Rewound>,
}

/// A registered schedule and its progress, from [`Scheduler::schedules`].
#[derive(Debug, Clone)]
pub struct ScheduleInfo {
    /// The schedule as registered.
    pub schedule: Schedule,
    /// Ticks at or before this time (seconds since the Unix epoch) have
    /// been dealt with (the registration time for a schedule that has not
    /// ticked yet), as the schedule file records it. One ahead of the
    /// clock (the clock stepped back) is set back by the next
    /// [`Scheduler::tick`].
    pub last_tick: u64,
    /// The next tick after `last_tick`, if the schedule fires again.
    pub next_tick: Option<u64>,
}

impl Scheduler {
    /// The scheduler of `queue`'s directory, on the system clock.
    ///
    /// Its schedules enqueue into `queue`. The directory has one schedule
    /// file, which does not record the queue: in a store with named
    /// queues, open the scheduler on the same queue on every run (see
    /// docs/recurring.md, "Named queues").
    pub fn open(queue: &Queue) -> Result<Scheduler> {
        Scheduler::open_with_clock(queue, SystemClock)
    }

    /// The scheduler of `queue`'s directory, reading time from `clock`
    /// (give it the queue's clock).
    ///
    /// Fails with [`ErrorKind::Locked`] while another scheduler owns the
    /// directory's schedules, and with [`ErrorKind::Corrupt`] naming
    /// `schedules.bin` when that file is damaged (the queue is not
    /// affected).
    pub fn open_with_clock(queue: &Queue, clock: impl Clock) -> Result<Scheduler> {
        Scheduler::open_vfs(Arc::new(StdFs), queue, Arc::new(clock))
    }

    /// Opens the schedule file through another file system (tests only).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn open_on(vfs: Arc<dyn Vfs>, queue: &Queue, clock: impl Clock) -> Result<Scheduler> {
        Scheduler::open_vfs(vfs, queue, Arc::new(clock))
    }

    fn open_vfs(vfs: Arc<dyn Vfs>, queue: &Queue, clock: Arc<dyn Clock>) -> Result<Scheduler> {
        queue.check_open()?;
        let store = Store::open(vfs, queue.path())?;
        // Released with the directory's lock when the queue is closed, so
        // that a store handed over takes its schedules along; checked
        // again in case the close came in between.
        queue.release_with_directory(store.lock());
        queue.check_open()?;
        let mut entries = store.load()?;
        entries.sort_by(|a, b| a.schedule.name.cmp(&b.schedule.name));
        Ok(Scheduler {
            inner: Arc::new(Inner {
                queue: queue.clone(),
                clock,
                store,
                entries: Mutex::new(entries),
                changes: Mutex::new(0),
                changed: Condvar::new(),
            }),
        })
    }

    /// The schedule file's path.
    pub fn path(&self) -> PathBuf {
        self.inner.store.path()
    }

    fn now_s(&self) -> u64 {
        self.inner.clock.now_ms() / 1000
    }

    /// Registers `schedule`, or replaces the one with its name (keeping
    /// how far it has run). Durable when it returns. Registering the same
    /// schedule at every start of a program is cheap and changes nothing.
    ///
    /// A replaced schedule keeps its last tick, so a tick of the new spec
    /// between that last tick and now is due at once: "0 3 * * *" edited
    /// to "0 9 * * *" at 10:00 runs the 09:00 tick now (under
    /// [`super::Missed::RunOnce`]). [`Scheduler::register_from_now`]
    /// starts it afresh instead.
    pub fn register(&self, schedule: Schedule) -> Result<Registered> {
        self.register_with(schedule, false)
    }

    /// Registers `schedule`, or replaces the one with its name, starting
    /// it afresh: its last tick becomes now, as for a new schedule, so
    /// only its ticks after now run. Durable when it returns.
    ///
    /// For changing a schedule's timetable without running a tick of the
    /// new one that is already past ("0 3 * * *" edited to "0 9 * * *"
    /// at 10:00: the first job is tomorrow's 09:00 tick). It drops the
    /// ticks that came due since the last tick and were not run yet (a
    /// program that was down over a tick): do not call it at every start
    /// in place of [`Scheduler::register`]. Unlike removing and
    /// registering again, it is one durable change, so a crash cannot
    /// leave the schedule removed.
    pub fn register_from_now(&self, schedule: Schedule) -> Result<Registered> {
        self.register_with(schedule, true)
    }

    /// `register` (`fresh`: `register_from_now`).
    fn register_with(&self, schedule: Schedule, fresh: bool) -> Result<Registered> {
        self.inner.queue.check_open()?;
        schedule.validate()?;
        // A payload over the queue's limit would fail at every tick.
        let opts = crate::EnqueueOptions::new();
        self.inner
            .queue
            .check_enqueue(schedule.payload_bytes(), &opts)
            .map_err(|e| {
                let what = format!("schedule {:?}: {}", schedule.name, e.message());
                Error::new(e.kind(), what)
            })?;
        let now = self.now_s();
        let mut entries = self.inner.entries.lock();
        let found = entries.binary_search_by(|e| e.schedule.name.as_str().cmp(&schedule.name));
        let cursor = match found {
            Ok(i) if !fresh => entries[i].cursor,
            Err(_) if entries.len() >= MAX_SCHEDULES => {
                return Err(Error::new(
                    ErrorKind::InvalidOptions,
                    format!("a queue holds at most {MAX_SCHEDULES} schedules"),
                ));
            }
            _ => now,
        };
        let entry = Entry { schedule, cursor };
        if found.is_ok_and(|i| same(&entries[i], &entry)) {
            return Ok(Registered::Unchanged);
        }
        // A registered schedule keeps its progress: a tick after its
        // cursor that is due already (not run yet) still counts. A cursor
        // ahead of the clock is not waited for (`tick` sets it back).
        let from = resume_from(cursor, now);
        if entry.schedule.spec.next_after(from).is_none() {
            return Err(never_fires(&entry, found.is_ok() && !fresh));
        }
        let mut next = entries.clone();
        let outcome = match found {
            Ok(i) => {
                next[i] = entry;
                Registered::Updated
            }
            Err(i) => {
                next.insert(i, entry);
                Registered::Added
            }
        };
        self.inner.store.save(&next)?;
        *entries = next;
        drop(entries);
        self.wake_threads(true);
        Ok(outcome)
    }

    /// Removes the schedule `name`; false if there was none. Jobs it
    /// already enqueued stay in the queue.
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.inner.queue.check_open()?;
        let mut entries = self.inner.entries.lock();
        let Some(i) = entries.iter().position(|e| e.schedule.name == name) else {
            return Ok(false);
        };
        let mut next = entries.clone();
        next.remove(i);
        self.inner.store.save(&next)?;
        *entries = next;
        drop(entries);
        self.wake_threads(true);
        Ok(true)
    }

    /// The registered schedules, by name.
    pub fn schedules(&self) -> Vec<ScheduleInfo> {
        self.inner.entries.lock().iter().map(info).collect()
    }

    /// The schedule `name`, if registered.
    pub fn get(&self, name: &str) -> Option<ScheduleInfo> {
        let entries = self.inner.entries.lock();
        entries.iter().find(|e| e.schedule.name == name).map(info)
    }

    /// When the next tick of any schedule is due (ms since the epoch).
    ///
    /// A schedule whose last tick is ahead of the clock (the clock stepped
    /// back) counts from the clock's time, as the next
    /// [`Scheduler::tick`] resumes it.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.next_due_after(0).map(|s| s.saturating_mul(1000))
    }

    /// The soonest next tick of any schedule that is after `after`
    /// (seconds since the epoch), leaving out ticks at or before it (those
    /// a failed [`Scheduler::tick`] at `after` left due).
    pub(crate) fn next_due_after(&self, after: u64) -> Option<u64> {
        let now = self.now_s();
        let entries = self.inner.entries.lock();
        let next = entries
            .iter()
            .filter_map(|e| e.schedule.spec.next_after(resume_from(e.cursor, now)))
            .filter(|&t| t > after);
        next.min()
    }

    /// Enqueues one job for each schedule with a due tick, skips missed
    /// ticks per policy, then records the progress in the schedule file.
    ///
    /// Each job is enqueued with the idempotency key
    /// [`super::tick_key`]`(name, tick)` and made durable **before** the
    /// file records the tick, so a crash in between enqueues the same key
    /// again on the next run, which the queue deduplicates. If enqueueing
    /// one schedule fails, the others still run and their progress is
    /// saved; the failed tick is tried again on the next call.
    ///
    /// A tick that failed part way returns one error that names what it
    /// did before: each job it enqueued (schedule, tick and job id), each
    /// tick it skipped, whether the schedule file recorded them, and every
    /// schedule whose enqueue failed. Its kind and file are those of the
    /// sync or file write when that failed (then nothing was recorded,
    /// and the next call enqueues the same ticks again under the same
    /// keys, getting the same jobs back), else of the first failed
    /// enqueue. [`Scheduler::schedules`] tells a program which ticks the
    /// file recorded.
    ///
    /// A schedule whose last tick is ahead of the clock (the clock stepped
    /// back since that tick) resumes with the clock: its last tick is set
    /// back to the second before now ([`TickReport::rewound`]) and
    /// recorded with the rest (docs/recurring.md, "Clock steps").
    pub fn tick(&self) -> Result<TickReport> {
        self.inner.queue.check_open()?;
        let now = self.now_s();
        let mut entries = self.inner.entries.lock();
        let plans: Vec<(usize, Action)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, plan(e, now)))
            .filter(|(_, a)| *a != Action::Nothing)
            .collect();
        if plans.is_empty() && entries.iter().all(|e| e.cursor <= now) {
            return Ok(TickReport::default());
        }
        let mut next = entries.clone();
        // Before the plans: a failed enqueue leaves its tick due from the
        // cursor set back, not from one the clock may never reach.
        let mut report = TickReport {
            rewound: rewind(&mut next, now),
            ..TickReport::default()
        };
        let failed = self.run_plans(&mut next, &plans, &mut report);
        let recorded = self.record(&next, &report);
        if recorded.is_ok() {
            *entries = next;
        }
        failure::outcome(report, failed, recorded)
    }

    /// Makes what `report` enqueued durable, then saves `next` (unless
    /// the tick changed nothing).
    fn record(&self, next: &[Entry], report: &TickReport) -> Result<()> {
        if !report.fired.is_empty() {
            // Under Durability::Os or Periodic the enqueue is not durable
            // yet: it must be before the file says the tick is done.
            self.inner
                .queue
                .sync()
                .map_err(|e| e.prefixed("syncing the queue before recording the tick: "))?;
        }
        if !report.fired.is_empty() || !report.skipped.is_empty() || !report.rewound.is_empty() {
            self.inner
                .store
                .save(next)
                .map_err(|e| e.prefixed("writing the schedule file: "))?;
        }
        Ok(())
    }

    /// Carries out `plans` on `next` (cursors advanced for what happened),
    /// adding it to `report`; the ticks that failed.
    fn run_plans(
        &self,
        next: &mut [Entry],
        plans: &[(usize, Action)],
        report: &mut TickReport,
    ) -> Vec<FailedTick> {
        let mut failed = Vec::new();
        for &(i, action) in plans {
            let e = &mut next[i];
            let name = e.schedule.name.clone();
            match action {
                Action::Nothing => {}
                Action::Skip(tick) => {
                    e.cursor = tick;
                    report.skipped.push(Skipped { name, tick });
                }
                Action::Enqueue(tick) => match self.enqueue(&e.schedule, tick) {
                    Ok(out) => {
                        e.cursor = tick;
                        report.fired.push(Fired {
                            name,
                            tick,
                            job_id: out.id,
                            duplicate: out.duplicate,
                        });
                    }
                    Err(error) => failed.push(FailedTick { name, tick, error }),
                },
            }
        }
        failed
    }

    fn enqueue(&self, s: &Schedule, tick: u64) -> Result<crate::queue::Enqueued> {
        let mut opts = EnqueueOptions::new().idempotency_key(tick_key(&s.name, tick));
        if let Some(n) = s.max_attempts {
            opts = opts.max_attempts(n);
        }
        self.inner
            .queue
            .enqueue_with(&s.payload, opts)
            .map_err(|e| {
                let msg = format!("enqueueing tick {tick} of schedule {:?}: {e}", s.name);
                let err = Error::new(e.kind(), msg);
                match e.path() {
                    Some(p) => err.with_path(p),
                    None => err,
                }
            })
    }

    /// The queue this scheduler enqueues into.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Wakes the threads waiting in [`Scheduler::wait_for_change`]:
    /// `changed` when the schedules changed (their next tick may be
    /// sooner than the one they wait for), else to look at their stop
    /// flags.
    pub(crate) fn wake_threads(&self, changed: bool) {
        let mut changes = self.inner.changes.lock();
        if changed {
            *changes += 1;
        }
        self.inner.changed.notify_all();
    }

    /// Waits up to `wait` unless `stop` is set or the schedules changed
    /// since `seen` (the count of changes this thread has seen, updated).
    /// Both are checked under the lock `wake_threads` takes, so a wakeup
    /// between the check and the wait is not lost.
    pub(crate) fn wait_for_change(&self, seen: &mut u64, stop: &AtomicBool, wait: Duration) {
        let mut changes = self.inner.changes.lock();
        if !stop.load(Ordering::Acquire) && *changes == *seen {
            self.inner.changed.wait_for(&mut changes, wait);
        }
        *seen = *changes;
    }
}

/// Sets back every cursor of `entries` that is ahead of `now` to where
/// its schedule resumes ([`resume_from`]).
fn rewind(entries: &mut [Entry], now: u64) -> Vec<Rewound> {
    let mut rewound = Vec::new();
    for e in entries.iter_mut().filter(|e| e.cursor > now) {
        let to = resume_from(e.cursor, now);
        rewound.push(Rewound {
            name: e.schedule.name.clone(),
            from: e.cursor,
            to,
        });
        e.cursor = to;
    }
    rewound
}

/// The error for `entry`, which has no tick after its last tick
/// (`kept`: a registered schedule's, else now).
fn never_fires(entry: &Entry, kept: bool) -> Error {
    Error::new(
        ErrorKind::InvalidOptions,
        format!(
            "schedule {:?}{} never fires after {}",
            entry.schedule.name,
            entry
                .schedule
                .spec
                .cron_text()
                .map(|t| format!(" (cron expression {t:?})"))
                .unwrap_or_default(),
            if kept { "its last tick" } else { "now" }
        ),
    )
}

/// Whether two entries would be written the same.
fn same(a: &Entry, b: &Entry) -> bool {
    codec::encode(std::slice::from_ref(a)) == codec::encode(std::slice::from_ref(b))
}

fn info(e: &Entry) -> ScheduleInfo {
    ScheduleInfo {
        schedule: e.schedule.clone(),
        last_tick: e.cursor,
        next_tick: e.schedule.spec.next_after(e.cursor),
    }
}
