//! The decision for one schedule at one moment (pure): enqueue a tick,
//! skip a missed one, or do nothing.

use super::codec::Entry;
use super::definition::Missed;

/// What a scheduler does for one schedule at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// No tick after the cursor has come yet.
    Nothing,
    /// Enqueue one job for the tick at this time (seconds), then move the
    /// cursor to it. It stands for every tick between the cursor and it.
    Enqueue(u64),
    /// Move the cursor to this tick without a job: every due tick was
    /// missed ([`Missed::Skip`]).
    Skip(u64),
}

/// Where a schedule whose cursor is `cursor` resumes at `now` (seconds
/// since the epoch): its cursor, unless that lies ahead of `now`.
///
/// A cursor ahead of the clock was taken at a wrong, later time: the
/// clock has stepped back since (a bad clock at boot corrected by NTP, or
/// a file written by a process whose clock was ahead). Kept, it would
/// hold every tick back until the clock caught up, a year if the clock
/// was a year ahead. The schedule resumes with the clock instead, from
/// the second before `now`: a tick at `now` is due, later ticks come due
/// at their times, and no tick at or before the second before `now`
/// runs. A tick in between that already ran (the clock stepped back a
/// little) is enqueued again under the same idempotency key, which the
/// queue deduplicates.
pub(crate) fn resume_from(cursor: u64, now: u64) -> u64 {
    if cursor > now {
        now.saturating_sub(1)
    } else {
        cursor
    }
}

/// The action for `entry` at `now` (seconds since the epoch), from where
/// it resumes ([`resume_from`]; the caller moves a cursor ahead of `now`
/// back to it).
///
/// Only the latest tick at or before `now` matters: under
/// [`Missed::RunOnce`] it gets the one job for all due ticks; under
/// [`Missed::Skip`] it gets a job only if it is at most the grace period
/// old (the ticks before it were missed), else the cursor skips to it.
pub(crate) fn plan(entry: &Entry, now: u64) -> Action {
    let Some(latest) = entry.schedule.spec.latest_at_or_before(now) else {
        return Action::Nothing;
    };
    if latest <= resume_from(entry.cursor, now) {
        return Action::Nothing;
    }
    match entry.schedule.missed {
        Missed::RunOnce => Action::Enqueue(latest),
        Missed::Skip if now - latest <= entry.schedule.grace_secs => Action::Enqueue(latest),
        Missed::Skip => Action::Skip(latest),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::schedule::Schedule;

    fn entry(missed: Missed, cursor: u64) -> Entry {
        let schedule = Schedule::every("s", Duration::from_secs(100))
            .unwrap()
            .missed(missed)
            .grace(Duration::from_secs(10))
            .unwrap();
        Entry { schedule, cursor }
    }

    #[test]
    fn one_due_tick_is_enqueued_once() {
        let e = entry(Missed::Skip, 1000);
        assert_eq!(plan(&e, 1099), Action::Nothing);
        assert_eq!(plan(&e, 1100), Action::Enqueue(1100));
        assert_eq!(plan(&e, 1110), Action::Enqueue(1100));
        let after = Entry { cursor: 1100, ..e };
        assert_eq!(plan(&after, 1199), Action::Nothing);
    }

    #[test]
    fn missed_ticks_follow_the_policy() {
        // Ticks 1100..=1500 came due while nothing ran; now is 1550.
        assert_eq!(
            plan(&entry(Missed::RunOnce, 1000), 1550),
            Action::Enqueue(1500)
        );
        assert_eq!(plan(&entry(Missed::Skip, 1000), 1550), Action::Skip(1500));
        // Reached within the grace period, the latest tick is on time.
        assert_eq!(
            plan(&entry(Missed::Skip, 1000), 1505),
            Action::Enqueue(1500)
        );
    }

    /// A cursor ahead of the clock (the clock stepped back) is not waited
    /// for: the schedule resumes from the second before now. Before, it
    /// fired nothing until the clock passed the cursor.
    #[test]
    fn a_clock_behind_the_cursor_resumes_from_now() {
        assert_eq!(resume_from(5000, 1000), 999);
        assert_eq!(resume_from(1000, 1000), 1000);
        assert_eq!(resume_from(999, 1000), 999);
        assert_eq!(resume_from(5, 0), 0);
        for missed in [Missed::RunOnce, Missed::Skip] {
            // A tick at now is due; none before it; the next at its time.
            assert_eq!(plan(&entry(missed, 5000), 1000), Action::Enqueue(1000));
            assert_eq!(plan(&entry(missed, 5000), 1050), Action::Nothing);
            assert_eq!(plan(&entry(missed, 5000), 1099), Action::Nothing);
            // The cursor is ahead by one second only: its tick is not run
            // again unless it is at now (the queue deduplicates its key).
            assert_eq!(plan(&entry(missed, 1100), 1099), Action::Nothing);
        }
    }
}
