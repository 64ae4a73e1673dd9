//! Recurring jobs against a power cut at every sync point (simulated file
//! system): the schedule file never records a tick whose job a power cut
//! can still erase, and resuming after the cut never enqueues a tick twice.
//! Under `Durability::Os` this needs the scheduler's sync of the queue
//! before it saves the file.

mod sim_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sim_common::{open_with, START_MS};
use walq::schedule::{parse_tick_key, Schedule, Scheduler};
use walq::vfs::SimFs;
use walq::{Durability, ManualClock, Queue};

fn scheduler(fs: &SimFs, q: &Queue, clock: &ManualClock) -> Scheduler {
    Scheduler::open_on(Arc::new(fs.clone()), q, clock.clone()).expect("open scheduler")
}

fn register(s: &Scheduler) {
    s.register(Schedule::every("a", Duration::from_secs(60)).unwrap())
        .unwrap();
    s.register(Schedule::cron("b", "*/2 * * * *").unwrap())
        .unwrap();
}

/// Every ready job's (schedule, tick), acked.
fn take_ticks(q: &Queue) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        let (name, tick) = parse_tick_key(job.idempotency_key().unwrap()).unwrap();
        out.push((name.to_string(), tick));
        q.ack(job.receipt()).unwrap();
    }
    out
}

/// Registers, then ticks through ten minutes with the power cut `freeze`
/// syncs after the registration; returns what was fired.
fn workload(
    fs: &SimFs,
    clock: &ManualClock,
    durability: Durability,
    freeze: Option<u64>,
) -> Vec<(String, u64)> {
    let q = open_with(fs, clock, durability).unwrap();
    let s = scheduler(fs, &q, clock);
    register(&s);
    let start = fs.syncs();
    fs.freeze_after_syncs(freeze);
    let mut fired = Vec::new();
    for _ in 0..12 {
        clock.advance(Duration::from_secs(50));
        if let Ok(report) = s.tick() {
            fired.extend(report.fired.into_iter().map(|f| (f.name, f.tick)));
        }
    }
    assert!(fs.syncs() > start, "the workload syncs");
    fired
}

fn check_after_power_loss(durability: Durability) {
    let probe = SimFs::new();
    let before = probe.syncs();
    let all = workload(&probe, &ManualClock::new(START_MS), durability, None);
    assert_eq!(
        all.len(),
        15,
        "10 ticks of a, 5 of b in ten minutes: {all:?}"
    );
    let points = probe.syncs() - before;
    for k in 0..=points {
        let fs = SimFs::new();
        let clock = ManualClock::new(START_MS);
        let fired = workload(&fs, &clock, durability, Some(k));
        let crashed = fs.power_loss(k * 31 + 7);
        let label = format!("{durability:?}, power cut after sync {k}");

        let q = open_with(&crashed, &clock, durability).unwrap();
        let s = scheduler(&crashed, &q, &clock);
        let mut present: Vec<(String, u64)> = take_ticks(&q);
        // Every tick the file says is done still has its job.
        for info in s.schedules() {
            let name = info.schedule.name();
            for (n, t) in fired
                .iter()
                .filter(|(n, t)| n == name && *t <= info.last_tick)
            {
                assert!(
                    present.contains(&(n.clone(), *t)),
                    "{label}: {n}@{t} recorded as done but its job is gone"
                );
            }
        }
        // Resuming (the program registers again) never duplicates a tick.
        register(&s);
        for _ in 0..4 {
            clock.advance(Duration::from_secs(50));
            s.tick().unwrap();
            present.extend(take_ticks(&q));
        }
        let unique: BTreeSet<_> = present.iter().collect();
        assert_eq!(
            unique.len(),
            present.len(),
            "{label}: a tick ran twice: {present:?}"
        );
    }
}

#[test]
fn power_cut_at_every_sync_point_sync_durability() {
    check_after_power_loss(Durability::Sync);
}

#[test]
fn power_cut_at_every_sync_point_os_durability() {
    check_after_power_loss(Durability::Os);
}

/// What a tick costs in syncs (the fsyncs of the log, `dead.wal`, the
/// schedule file and the directory), with one schedule firing and with
/// ten firing together, and with nothing due.
#[test]
fn syncs_per_tick() {
    for (durability, one, ten) in [(Durability::Sync, 4, 13), (Durability::Os, 4, 4)] {
        let fs = SimFs::new();
        let clock = ManualClock::new(START_MS);
        let q = open_with(&fs, &clock, durability).unwrap();
        let s = scheduler(&fs, &q, &clock);
        s.register(Schedule::every("a", Duration::from_secs(60)).unwrap())
            .unwrap();
        clock.advance(Duration::from_secs(60));
        let before = fs.syncs();
        assert_eq!(s.tick().unwrap().fired.len(), 1);
        assert_eq!(fs.syncs() - before, one, "{durability:?}, one schedule");
        let before = fs.syncs();
        assert!(s.tick().unwrap().fired.is_empty());
        assert_eq!(fs.syncs(), before, "{durability:?}: nothing due, no I/O");
        for i in 0..9 {
            let name = format!("b{i}");
            s.register(Schedule::every(&name, Duration::from_secs(60)).unwrap())
                .unwrap();
        }
        clock.advance(Duration::from_secs(60));
        let before = fs.syncs();
        assert_eq!(s.tick().unwrap().fired.len(), 10);
        assert_eq!(fs.syncs() - before, ten, "{durability:?}, ten schedules");
    }
}
