//! The recurring schedules of `schedules.bin`, read-only: each one's
//! spec, job and progress, decoded as [`Scheduler::open`] decodes them.
//!
//! [`Scheduler::open`]: crate::schedule::Scheduler::open

use std::path::Path;

use super::files;
use crate::error::Result;
use crate::schedule::codec::{self, Entry};
use crate::schedule::{Missed, SCHEDULE_FILE};

/// One schedule of the schedule file, as a read-only look finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleView {
    /// The schedule's name.
    pub name: String,
    /// Its cron expression (UTC), for a cron schedule.
    pub cron: Option<String>,
    /// Its period in seconds, for an every-N-seconds schedule.
    pub every_secs: Option<u64>,
    /// The payload of the jobs it enqueues.
    pub payload: Vec<u8>,
    /// What happens to ticks missed while no scheduler ran.
    pub missed: Missed,
    /// How late a tick may be reached and still run under
    /// [`Missed::Skip`], in seconds.
    pub grace_secs: u64,
    /// The attempts its jobs are allowed (`None`: the queue's setting).
    pub max_attempts: Option<u32>,
    /// Ticks at or before this time (seconds since the Unix epoch) have
    /// been dealt with, as the file records it (the registration time of
    /// a schedule that has not ticked yet), as
    /// [`ScheduleInfo::last_tick`](crate::schedule::ScheduleInfo::last_tick).
    pub last_tick: u64,
    /// The next tick after `last_tick` (seconds since the Unix epoch),
    /// if the schedule fires again, as
    /// [`ScheduleInfo::next_tick`](crate::schedule::ScheduleInfo::next_tick):
    /// in the past when no scheduler ran since it came due.
    pub next_tick: Option<u64>,
}

impl ScheduleView {
    fn of(e: &Entry) -> ScheduleView {
        let s = &e.schedule;
        ScheduleView {
            name: s.name.clone(),
            cron: s.spec.cron_text().map(str::to_string),
            every_secs: s.spec.period().map(|p| p.as_secs()),
            payload: s.payload.clone(),
            missed: s.missed,
            grace_secs: s.grace_secs,
            max_attempts: s.max_attempts,
            last_tick: e.cursor,
            next_tick: s.spec.next_after(e.cursor),
        }
    }
}

/// The schedules of the queue in `dir`, in the file's order; `None` when
/// it has no schedule file. Fails as [`super::Inspector::schedules`] does.
pub(crate) fn read(dir: &Path) -> Result<Option<Vec<ScheduleView>>> {
    let path = dir.join(SCHEDULE_FILE);
    let Some(bytes) = files::read_schedules(&path)? else {
        return Ok(None);
    };
    let entries = codec::decode(&bytes, &path)?;
    Ok(Some(entries.iter().map(ScheduleView::of).collect()))
}
