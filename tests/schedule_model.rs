//! Model-based test of recurring jobs: random sequences of registrations,
//! removals, clock steps (forward and back), ticks (some failing between the enqueue and the
//! schedule file's update), restarts and drains, checked after every step
//! against a small model of the rule in docs/recurring.md.
//!
//! The model keeps, per schedule, its period, missed-tick policy, grace and
//! cursor (the last tick dealt with), and the set of ticks that have a job.
//! Each `tick` must set back exactly the cursors ahead of the clock (to
//! the second before now), fire exactly the ticks the model plans, flag a
//! tick that already has a job as a duplicate, and skip exactly the missed
//! ones;
//! `schedules()` must list the model's schedules with its cursors; and at
//! the end every tick with a job has exactly one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use walq::schedule::{parse_tick_key, Missed, Schedule, Scheduler, TickReport, SCHEDULE_FILE};
use walq::{Clock, ManualClock, Queue};

/// 2023-11-14T22:13:20Z.
const T0_MS: u64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Register {
        name: u8,
        period_s: u64,
        skip: bool,
        grace_s: u64,
    },
    Remove(u8),
    Advance(u64),
    /// The clock stepped back by this many milliseconds.
    StepBack(u64),
    /// A tick; `blocked` makes the file's update fail after the enqueues.
    Tick {
        blocked: bool,
    },
    Restart,
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..3, 1u64..8, any::<bool>(), 0u64..5).prop_map(|(name, period_s, skip, grace_s)| {
            Op::Register { name, period_s, skip, grace_s }
        }),
        1 => (0u8..3).prop_map(Op::Remove),
        4 => prop_oneof![0u64..2_000, 0u64..30_000].prop_map(Op::Advance),
        1 => prop_oneof![0u64..3_000, 0u64..60_000].prop_map(Op::StepBack),
        4 => (0u8..4).prop_map(|b| Op::Tick { blocked: b == 0 }),
        1 => Just(Op::Restart),
        1 => Just(Op::Drain),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct MSched {
    period_s: u64,
    skip: bool,
    grace_s: u64,
    cursor: u64,
}

#[derive(Default)]
struct Model {
    scheds: BTreeMap<String, MSched>,
    /// Every (schedule, tick) that has a job.
    jobs: BTreeSet<(String, u64)>,
}

/// What one tick does: (fired with duplicate flags, skipped, cursors set
/// back as (name, from, to)).
type Planned = (
    Vec<(String, u64, bool)>,
    Vec<(String, u64)>,
    Vec<(String, u64, u64)>,
);

impl Model {
    fn plan(&self, now_s: u64) -> Planned {
        let (mut fired, mut skipped, mut rewound) = (Vec::new(), Vec::new(), Vec::new());
        for (name, s) in &self.scheds {
            let mut cursor = s.cursor;
            if cursor > now_s {
                cursor = now_s - 1;
                rewound.push((name.clone(), s.cursor, cursor));
            }
            let latest = now_s - now_s % s.period_s;
            if latest <= cursor {
                continue;
            }
            if !s.skip || now_s - latest <= s.grace_s {
                let dup = self.jobs.contains(&(name.clone(), latest));
                fired.push((name.clone(), latest, dup));
            } else {
                skipped.push((name.clone(), latest));
            }
        }
        (fired, skipped, rewound)
    }

    fn apply(&mut self, planned: &Planned, saved: bool) {
        for (name, tick, _) in &planned.0 {
            self.jobs.insert((name.clone(), *tick));
        }
        if saved {
            for (name, _, to) in &planned.2 {
                self.scheds.get_mut(name).expect("planned").cursor = *to;
            }
            let ticks = planned.0.iter().map(|(n, t, _)| (n, t));
            for (name, tick) in ticks.chain(planned.1.iter().map(|(n, t)| (n, t))) {
                self.scheds.get_mut(name).expect("planned").cursor = *tick;
            }
        }
    }
}

fn open(dir: &Path, clock: &ManualClock) -> (Queue, Scheduler) {
    let q = common::open(dir, clock);
    let s = Scheduler::open_with_clock(&q, clock.clone()).expect("scheduler");
    (q, s)
}

fn schedule(name: &str, period_s: u64, skip: bool, grace_s: u64) -> Schedule {
    let s = Schedule::every(name, Duration::from_secs(period_s)).expect("every");
    if skip {
        s.missed(Missed::Skip)
            .grace(Duration::from_secs(grace_s))
            .expect("grace")
    } else {
        s.grace(Duration::from_secs(grace_s)).expect("grace")
    }
}

/// The report as (fired, skipped, set back), sorted by name like the
/// model's.
fn observed(r: &TickReport) -> Planned {
    let mut fired: Vec<_> = r
        .fired
        .iter()
        .map(|f| (f.name.clone(), f.tick, f.duplicate))
        .collect();
    let mut skipped: Vec<_> = r.skipped.iter().map(|s| (s.name.clone(), s.tick)).collect();
    let mut rewound: Vec<_> = r
        .rewound
        .iter()
        .map(|b| (b.name.clone(), b.from, b.to))
        .collect();
    fired.sort();
    skipped.sort();
    rewound.sort();
    (fired, skipped, rewound)
}

/// Every ready job's (schedule, tick), acked.
fn drain(q: &Queue, seen: &mut Vec<(String, u64)>) {
    while let Some(job) = q.dequeue().expect("dequeue") {
        let key = job.idempotency_key().expect("a scheduled job has a key");
        let (name, tick) = parse_tick_key(key).expect("a tick key");
        seen.push((name.to_string(), tick));
        q.ack(job.receipt()).expect("ack");
    }
}

fn tick(s: &Scheduler, m: &mut Model, dir: &Path, now_s: u64, blocked: bool) {
    let planned = m.plan(now_s);
    let tmp = dir.join(format!("{SCHEDULE_FILE}.tmp"));
    if blocked {
        std::fs::create_dir(&tmp).expect("block the save");
    }
    let result = s.tick();
    if blocked {
        std::fs::remove_dir(&tmp).expect("unblock");
    }
    let nothing = planned.0.is_empty() && planned.1.is_empty() && planned.2.is_empty();
    match result {
        Ok(report) => {
            assert!(!blocked || nothing, "a tick whose save failed returned Ok");
            assert_eq!(observed(&report), planned, "tick at {now_s}");
            m.apply(&planned, true);
        }
        Err(e) => {
            assert!(blocked && !nothing, "tick at {now_s} failed: {e}");
            m.apply(&planned, false);
        }
    }
}

fn check_listing(s: &Scheduler, m: &Model) {
    let listed: Vec<(String, u64)> = s
        .schedules()
        .into_iter()
        .map(|i| (i.schedule.name().to_string(), i.last_tick))
        .collect();
    let model: Vec<(String, u64)> = m
        .scheds
        .iter()
        .map(|(n, s)| (n.clone(), s.cursor))
        .collect();
    assert_eq!(listed, model, "schedules and their last ticks");
}

fn run(ops: &[Op]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0_MS);
    let (mut q, mut s) = open(dir.path(), &clock);
    let mut m = Model::default();
    let mut seen = Vec::new();
    for op in ops {
        let now_s = clock.now_ms() / 1000;
        match *op {
            Op::Register {
                name,
                period_s,
                skip,
                grace_s,
            } => {
                let name = format!("s{name}");
                s.register(schedule(&name, period_s, skip, grace_s))
                    .expect("register");
                let cursor = m.scheds.get(&name).map_or(now_s, |old| old.cursor);
                m.scheds.insert(
                    name,
                    MSched {
                        period_s,
                        skip,
                        grace_s,
                        cursor,
                    },
                );
            }
            Op::Remove(name) => {
                let name = format!("s{name}");
                let removed = s.remove(&name).expect("remove");
                assert_eq!(removed, m.scheds.remove(&name).is_some(), "remove {name}");
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            Op::StepBack(ms) => clock.set(clock.now_ms() - ms),
            Op::Tick { blocked } => tick(&s, &mut m, dir.path(), now_s, blocked),
            Op::Restart => {
                drop(s);
                q.close().expect("close");
                (q, s) = open(dir.path(), &clock);
            }
            Op::Drain => drain(&q, &mut seen),
        }
        check_listing(&s, &m);
    }
    drain(&q, &mut seen);
    let mut counts: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for t in seen {
        *counts.entry(t).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "ticks with more than one job: {twice:?}");
    let ticks: BTreeSet<(String, u64)> = counts.into_keys().collect();
    assert_eq!(ticks, m.jobs, "the ticks that have a job");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn scheduler_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops);
    }
}
