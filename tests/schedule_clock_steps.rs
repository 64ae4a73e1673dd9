//! Recurring jobs when the wall clock steps (docs/recurring.md, "Clock
//! steps"): a schedule whose last tick lies ahead of the clock resumes
//! with the clock instead of waiting for it, and a small step back runs
//! no tick twice.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use walq::schedule::{parse_tick_key, Missed, Registered, Rewound, Schedule, Scheduler};
use walq::{ManualClock, Queue};

/// 2023-11-14T22:13:20Z.
const T0_MS: u64 = 1_700_000_000_000;
const T0: u64 = T0_MS / 1000;
const YEAR_S: u64 = 365 * 86_400;

fn open(dir: &Path, clock: &ManualClock) -> (Queue, Scheduler) {
    let q = common::open(dir, clock);
    let s = Scheduler::open_with_clock(&q, clock.clone()).unwrap();
    (q, s)
}

fn minutely() -> Schedule {
    Schedule::every("minutely", Duration::from_secs(60)).unwrap()
}

/// Every ready job's (schedule, tick), acked.
fn take_ticks(q: &Queue) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        let key = job.idempotency_key().expect("a scheduled job has a key");
        let (name, tick) = parse_tick_key(key).expect("a tick key");
        out.push((name.to_string(), tick));
        q.ack(job.receipt()).unwrap();
    }
    out
}

/// The minute ticks after `from`, up to and including `to`.
fn minutes(from: u64, to: u64) -> Vec<u64> {
    (from / 60 + 1..=to / 60).map(|m| m * 60).collect()
}

/// The review's case: the clock jumps a year ahead (a bad RTC at boot),
/// a tick is taken there, then the clock is corrected. The schedule
/// resumes with the corrected clock: the tick that notices the step sets
/// the last tick back to the second before now (reported, recorded), and
/// from then on every minute gets its job when due, one per tick (no
/// burst for the year between). Before, nothing fired for the year it
/// took the clock to catch up, and a restart kept the stall.
#[test]
fn a_clock_corrected_after_a_forward_jump_resumes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0_MS);
    let (q, s) = open(dir.path(), &clock);
    s.register(minutely()).unwrap();
    clock.advance(Duration::from_secs(60));
    assert_eq!(s.tick().unwrap().fired.len(), 1);
    clock.set((T0 + YEAR_S) * 1000);
    let bogus = T0 + YEAR_S - (T0 + YEAR_S) % 60;
    let fired = s.tick().unwrap().fired;
    assert_eq!(fired.len(), 1, "missed ticks coalesced: {fired:?}");
    assert_eq!(fired[0].tick, bogus);
    take_ticks(&q);

    let corrected = T0 + 180;
    clock.set(corrected * 1000);
    let report = s.tick().unwrap();
    assert!(report.fired.is_empty(), "no catch-up: {report:?}");
    let rewound = Rewound {
        name: "minutely".into(),
        from: bogus,
        to: corrected - 1,
    };
    assert_eq!(report.rewound, vec![rewound]);
    let next = minutes(corrected, corrected + 60)[0];
    assert_eq!(s.get("minutely").unwrap().next_tick, Some(next));
    assert_eq!(s.next_due_ms(), Some(next * 1000));

    let mut ticks = Vec::new();
    for _ in 0..120 {
        clock.advance(Duration::from_secs(60));
        let report = s.tick().unwrap();
        assert_eq!(report.fired.len(), 1, "one job per minute: {report:?}");
        assert!(report.rewound.is_empty());
        ticks.extend(take_ticks(&q).into_iter().map(|t| t.1));
    }
    let now = corrected + 120 * 60;
    assert_eq!(ticks, minutes(corrected, now), "each minute once, when due");
    // Recorded: a restart goes on from there.
    drop((q, s));
    let (_q, s) = open(dir.path(), &clock);
    assert_eq!(s.get("minutely").unwrap().last_tick, now - now % 60);
}

/// A schedule file written by a process whose clock was ahead: the next
/// process, on a correct clock, resumes at once. `next_due_ms` counts
/// from the clock's time even before the first tick, so a program that
/// sleeps until it does not sleep for the year. Before, the schedule
/// fired nothing until the clock caught up with the file.
#[test]
fn a_file_written_under_a_clock_ahead_resumes_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let ahead = ManualClock::new((T0 + YEAR_S) * 1000);
    {
        let (q, s) = open(dir.path(), &ahead);
        s.register(minutely()).unwrap();
        ahead.advance(Duration::from_secs(120));
        assert_eq!(s.tick().unwrap().fired.len(), 1);
        take_ticks(&q);
    }
    let clock = ManualClock::new(T0_MS);
    let (q, s) = open(dir.path(), &clock);
    let first = minutes(T0, T0 + 60)[0];
    assert_eq!(s.next_due_ms(), Some(first * 1000));
    assert_eq!(s.register(minutely()).unwrap(), Registered::Unchanged);
    let mut ticks = Vec::new();
    for _ in 0..10 {
        clock.advance(Duration::from_secs(30));
        s.tick().unwrap();
        ticks.extend(take_ticks(&q).into_iter().map(|t| t.1));
    }
    assert_eq!(ticks, minutes(T0, T0 + 300));
}

/// A clock stepped back a few minutes (no forward jump before): the ticks
/// between the new time and the last tick are enqueued again when they
/// come due, under the same idempotency keys, and the queue returns the
/// jobs they already have (`duplicate`, though those jobs are done): no
/// tick gets a second job, and every tick has one. The same holds for a
/// `Skip` schedule and for a cron schedule. Before, the scheduler waited
/// for the clock to pass the last tick (the same jobs, no re-enqueue).
#[test]
fn a_small_step_back_runs_no_tick_twice() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0_MS);
    let (q, s) = open(dir.path(), &clock);
    s.register(minutely()).unwrap();
    let skip = Schedule::every("skip", Duration::from_secs(60)).unwrap();
    s.register(skip.missed(Missed::Skip)).unwrap();
    s.register(Schedule::cron("two", "*/2 * * * *").unwrap())
        .unwrap();
    let mut jobs: BTreeMap<(String, u64), usize> = BTreeMap::new();
    let mut again = Vec::new();
    let mut run = |s: &Scheduler, steps: u32| {
        for _ in 0..steps {
            clock.advance(Duration::from_secs(20));
            for f in s.tick().unwrap().fired {
                if f.duplicate {
                    again.push((f.name, f.tick));
                }
            }
            for t in take_ticks(&q) {
                *jobs.entry(t).or_default() += 1;
            }
        }
    };
    run(&s, 30); // ten minutes
    let before = T0 + 600;
    let back = before - 210; // three and a half minutes back
    clock.set(back * 1000);
    run(&s, 30);
    let end = back + 600;
    let dups: Vec<_> = jobs.iter().filter(|(_, &n)| n != 1).collect();
    assert!(dups.is_empty(), "ticks with more than one job: {dups:?}");
    let mut expected: Vec<(String, u64)> = Vec::new();
    for name in ["minutely", "skip"] {
        expected.extend(minutes(T0, end).into_iter().map(|t| (name.into(), t)));
    }
    let even = minutes(T0, end).into_iter().filter(|t| t % 120 == 0);
    expected.extend(even.map(|t| ("two".to_string(), t)));
    expected.sort();
    assert_eq!(jobs.into_keys().collect::<Vec<_>>(), expected);
    // The re-enqueued ticks are those after the first tick that saw the
    // clock behind the last tick, up to the last tick before the step.
    let seen = back + 20;
    let mut refired: Vec<(String, u64)> = Vec::new();
    for name in ["minutely", "skip"] {
        let range = minutes(seen, before);
        refired.extend(range.into_iter().map(|t| (name.into(), t)));
    }
    let even = minutes(seen, before).into_iter();
    refired.extend(even.filter(|t| t % 120 == 0).map(|t| ("two".into(), t)));
    refired.sort();
    again.sort();
    assert_eq!(again, refired);
}

/// A tick that notices the step back and then fails to enqueue records
/// the last tick set back, and the failed tick stays due: after a
/// restart that lets it through, it gets its job. Before, the failed tick
/// went unnoticed (nothing was due until the clock caught up).
#[test]
fn a_tick_refused_after_a_step_back_stays_due() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new((T0 + YEAR_S) * 1000);
    {
        let (_q, s) = open(dir.path(), &clock);
        s.register(minutely().payload(vec![0u8; 4096])).unwrap();
        clock.advance(Duration::from_secs(60));
        assert_eq!(s.tick().unwrap().fired.len(), 1);
    }
    let due = T0 - T0 % 60 + 60;
    clock.set(due * 1000);
    {
        let q = Queue::open_with(dir.path(), common::opts(&clock).max_payload(1024)).unwrap();
        let s = Scheduler::open_with_clock(&q, clock.clone()).unwrap();
        let err = s.tick().unwrap_err().to_string();
        assert!(err.contains("set back the last tick"), "{err}");
        assert!(err.contains(&format!("tick {due} of schedule")), "{err}");
        assert_eq!(s.get("minutely").unwrap().last_tick, due - 1);
    }
    clock.advance(Duration::from_secs(5));
    let (q, s) = open(dir.path(), &clock);
    let fired = s.tick().unwrap().fired;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].tick, due);
    let ticks: Vec<u64> = take_ticks(&q).into_iter().map(|t| t.1).collect();
    assert!(ticks.contains(&due), "{ticks:?}");
}

/// `register` keeps the last tick of a schedule it replaces, so a tick of
/// the new spec that fell between the last tick and now runs at once:
/// "0 3 * * *" edited to "0 9 * * *" at 10:00 runs the 09:00 tick.
/// `register_from_now` starts the edited schedule afresh: its first job
/// is the next day's 09:00 tick.
#[test]
fn an_edited_spec_runs_its_past_tick_unless_registered_from_now() {
    let day = T0 - T0 % 86_400 + 86_400; // 2023-11-15T00:00:00Z
    let at = |h: u64| day + h * 3600;
    let cron = |name: &str, expr: &str| Schedule::cron(name, expr).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0_MS);
    let (q, s) = open(dir.path(), &clock);
    s.register(cron("kept", "0 3 * * *")).unwrap();
    s.register(cron("fresh", "0 3 * * *")).unwrap();
    clock.set((at(3) + 30) * 1000);
    assert_eq!(s.tick().unwrap().fired.len(), 2);
    take_ticks(&q);

    clock.set(at(10) * 1000);
    let edit = |name| cron(name, "0 9 * * *");
    assert_eq!(s.register(edit("kept")).unwrap(), Registered::Updated);
    assert_eq!(
        s.register_from_now(edit("fresh")).unwrap(),
        Registered::Updated
    );
    assert_eq!(s.get("fresh").unwrap().last_tick, at(10));
    let fired: Vec<(String, u64)> = s
        .tick()
        .unwrap()
        .fired
        .into_iter()
        .map(|f| (f.name, f.tick))
        .collect();
    assert_eq!(fired, vec![("kept".to_string(), at(9))]);
    clock.set((at(24 + 9) + 30) * 1000);
    s.tick().unwrap();
    let mut ticks = take_ticks(&q);
    ticks.sort();
    let expected = vec![
        ("fresh".to_string(), at(24 + 9)),
        ("kept".to_string(), at(9)),
        ("kept".to_string(), at(24 + 9)),
    ];
    assert_eq!(ticks, expected);
}
