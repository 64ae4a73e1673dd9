//! Real processes taking turns on one directory, killed with SIGKILL at
//! random moments while their scheduler ticks: no tick is ever enqueued
//! twice and none is lost.
//!
//! The test binary re-executes itself (`schedule_kill9_child --exact`)
//! with `WALQ_SCHED_CHILD=<dir>`. The child opens the queue
//! (`Durability::Sync`) and a scheduler on a manual clock starting at
//! `WALQ_SCHED_CHILD_START` (the second after the last tick the file
//! records), registers two schedules (as a program does at every start),
//! then ticks, prints a line, and advances the clock one second, until it
//! is killed (or after 10 000 ticks). The parent kills it after a random
//! number of lines (0: at once, in exec or open), opens the directory
//! itself, takes every job, and checks that each schedule's jobs are
//! exactly its ticks from registration to the last tick the file records:
//! no tick twice (a kill between the enqueue and the file update is
//! deduplicated by the tick's key on the next run), none missing.
//!
//! `WALQ_SCHED_CYCLES` (default 12) and `WALQ_SCHED_SEED` tune a run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use walq::schedule::{parse_tick_key, Schedule, Scheduler};
use walq::{Durability, ManualClock, Options, Queue};

const CHILD_TEST: &str = "schedule_kill9_child";
const CHILD_DIR_ENV: &str = "WALQ_SCHED_CHILD";
const CHILD_START_ENV: &str = "WALQ_SCHED_CHILD_START";
/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000;

fn open(dir: &Path, clock: &ManualClock) -> (Queue, Scheduler) {
    let opts = Options::default()
        .clock(clock.clone())
        .segment_size(256 * 1024)
        .durability(Durability::Sync);
    let q = Queue::open_with(dir, opts).expect("open queue");
    let s = Scheduler::open_with_clock(&q, clock.clone()).expect("open scheduler");
    s.register(Schedule::every("every-second", Duration::from_secs(1)).unwrap())
        .unwrap();
    s.register(Schedule::cron("every-3s", "*/3 * * * * *").unwrap())
        .unwrap();
    (q, s)
}

/// The child's body; does nothing unless the parent started this process.
#[test]
fn schedule_kill9_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let start: u64 = std::env::var(CHILD_START_ENV).unwrap().parse().unwrap();
    let clock = ManualClock::new(start * 1000);
    let (_q, s) = open(Path::new(&dir), &clock);
    for _ in 0..10_000 {
        let report = s.tick().expect("tick");
        let dups = report.fired.iter().filter(|f| f.duplicate).count();
        println!("@T {} {dups}", report.fired.len());
        clock.advance(Duration::from_secs(1));
    }
}

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Runs one child and kills it after `lines` lines; returns the
/// duplicates it reported (ticks enqueued before an earlier kill).
fn run_child(exe: &Path, dir: &Path, start: u64, lines: u64) -> u64 {
    let mut child = Command::new(exe)
        .args([
            CHILD_TEST,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_START_ENV, start.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let out = child.stdout.take().expect("stdout");
    let mut dups = 0;
    let mut seen = 0;
    for line in BufReader::new(out).lines() {
        if seen >= lines {
            break;
        }
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("@T ") {
            seen += 1;
            dups += rest
                .split(' ')
                .nth(1)
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
        }
    }
    child.kill().expect("kill child"); // SIGKILL
    child.wait().expect("reap child");
    dups
}

/// Takes (and acks) every ready job, counting them per (schedule, tick).
fn collect(q: &Queue, jobs: &mut BTreeMap<(String, u64), u32>) {
    while let Some(job) = q.dequeue().unwrap() {
        let (name, tick) = parse_tick_key(job.idempotency_key().unwrap()).unwrap();
        *jobs.entry((name.to_string(), tick)).or_default() += 1;
        q.ack(job.receipt()).unwrap();
    }
}

#[test]
fn killed_schedulers_taking_turns_never_duplicate_nor_lose_a_tick() {
    let cycles: u64 = std::env::var("WALQ_SCHED_CYCLES").map_or(12, |v| v.parse().unwrap());
    let seed: u64 = std::env::var("WALQ_SCHED_SEED").map_or(11, |v| v.parse().unwrap());
    let mut next = rng(seed);
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut jobs: BTreeMap<(String, u64), u32> = BTreeMap::new();
    let mut start = T0;
    let mut dups = 0;
    for _ in 0..cycles {
        dups += run_child(&exe, dir.path(), start, next() % 25);
        let clock = ManualClock::new(start * 1000);
        let (q, s) = open(dir.path(), &clock);
        collect(&q, &mut jobs);
        let last = s.schedules().iter().map(|i| i.last_tick).max().unwrap();
        start = last + 1;
    }
    // The last kill may have come between an enqueue and the file update:
    // one more tick, as the next program would make, records that tick
    // (deduplicated) before the ticks are compared with the file.
    let clock = ManualClock::new(start * 1000);
    let (q, s) = open(dir.path(), &clock);
    s.tick().unwrap();
    collect(&q, &mut jobs);
    let twice: Vec<_> = jobs.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "ticks enqueued twice: {twice:?}");
    for (name, period) in [("every-second", 1), ("every-3s", 3)] {
        let last = s.get(name).unwrap().last_tick;
        let got: Vec<u64> = jobs.keys().filter(|k| k.0 == name).map(|k| k.1).collect();
        let want: Vec<u64> = (T0 / period + 1..=last / period)
            .map(|t| t * period)
            .collect();
        assert_eq!(
            got, want,
            "{name}: each tick from registration to {last} once"
        );
    }
    println!("{cycles} kills; {dups} ticks enqueued before a kill were deduplicated");
}
