//! How a [`super::Scheduler::tick`] that failed part way says what it did
//! before the failure: the jobs it enqueued (with their ids), the ticks it
//! skipped, whether the schedule file recorded them, and every schedule
//! whose enqueue failed.

use std::fmt::Write as _;

use super::scheduler::TickReport;
use crate::error::{Error, Result};

/// A schedule whose tick could not be enqueued; the tick stays due.
pub(crate) struct FailedTick {
    pub(crate) name: String,
    pub(crate) tick: u64,
    pub(crate) error: Error,
}

/// The result of a tick: `report` when every step succeeded, else one
/// error that names everything the tick did and everything that failed.
///
/// `failed` are the schedules whose enqueue failed; `recorded` is how
/// making the rest durable ended (the queue's sync, then the schedule
/// file's write). The error's kind and file are those of the failure that
/// matters most: the recording's (nothing was recorded), else the first
/// enqueue's.
pub(crate) fn outcome(
    report: TickReport,
    failed: Vec<FailedTick>,
    recorded: Result<()>,
) -> Result<TickReport> {
    match recorded {
        Ok(()) if failed.is_empty() => Ok(report),
        Ok(()) => Err(recorded_but_failed(&report, failed)),
        Err(err) => Err(not_recorded(&report, &failed, err)),
    }
}

/// The first failed enqueue, preceded by what the tick did and recorded
/// and by the other schedules that failed.
fn recorded_but_failed(report: &TickReport, mut failed: Vec<FailedTick>) -> Error {
    let first = failed.remove(0);
    let mut context = String::new();
    let done = done(report);
    if !done.is_empty() {
        let _ = write!(context, "this tick {done}, recorded in the schedule file; ");
    }
    if !failed.is_empty() {
        let _ = write!(
            context,
            "these schedules failed too and stay due: {}; ",
            names(&failed)
        );
    }
    first.error.prefixed(&context)
}

/// The sync's or file write's `err`, preceded by what the tick did (and
/// did not record) and by every schedule that failed.
fn not_recorded(report: &TickReport, failed: &[FailedTick], err: Error) -> Error {
    let mut context = String::new();
    let done = done(report);
    if !done.is_empty() {
        let _ = write!(
            context,
            "this tick {done}, but did not record that in the schedule file: the next \
             tick does it again under the same idempotency keys, and the queue returns \
             the jobs already enqueued; "
        );
    }
    for f in failed {
        let _ = write!(
            context,
            "schedule {:?} tick {} was not enqueued and stays due ({}); ",
            f.name, f.tick, f.error
        );
    }
    err.prefixed(&context)
}

/// "set back the last tick of "a" from ... to ..., enqueued "a" tick
/// 1700000060 as job 3, ... and skipped ...", or empty.
fn done(report: &TickReport) -> String {
    let mut parts = Vec::new();
    if !report.rewound.is_empty() {
        let back: Vec<String> = report
            .rewound
            .iter()
            .map(|r| format!("of {:?} from {} to {}", r.name, r.from, r.to))
            .collect();
        parts.push(format!(
            "set back the last tick (ahead of the clock) {}",
            back.join(", ")
        ));
    }
    if !report.fired.is_empty() {
        let jobs: Vec<String> = report
            .fired
            .iter()
            .map(|f| {
                let again = if f.duplicate { ", already queued" } else { "" };
                format!("{:?} tick {} as job {}{again}", f.name, f.tick, f.job_id)
            })
            .collect();
        parts.push(format!("enqueued {}", jobs.join(", ")));
    }
    if !report.skipped.is_empty() {
        let ticks: Vec<String> = report
            .skipped
            .iter()
            .map(|s| format!("{:?} tick {}", s.name, s.tick))
            .collect();
        parts.push(format!("skipped {}", ticks.join(", ")));
    }
    parts.join(" and ")
}

fn names(failed: &[FailedTick]) -> String {
    let names: Vec<String> = failed
        .iter()
        .map(|f| format!("{:?} tick {}", f.name, f.tick))
        .collect();
    names.join(", ")
}
