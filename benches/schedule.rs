//! The cost of a recurring job: a `Scheduler::tick` that fires (one job
//! per schedule enqueued with its tick key, `Queue::sync`, the schedule
//! file rewritten crash-atomically) against the plain queue doing the same
//! enqueues with idempotency keys, under `Durability::Sync`. The two are
//! alternated round by round on one queue, so both see the same disk at
//! the same moment. Prints the median and 90th percentile of each.
//!
//! `cargo bench --bench schedule` (`WALQ_BENCH_DIR` to pick the disk,
//! `WALQ_BENCH_SCALE` to change the number of rounds)

mod common;

use std::time::{Duration, Instant};

use walq::schedule::{Schedule, Scheduler};
use walq::{Durability, EnqueueOptions, ManualClock, Queue};

use common::{options, payload, tempdir};

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// `rounds` of: `schedules` keyed enqueues, timed; then one tick firing
/// `schedules` schedules, timed.
fn paired(schedules: usize, rounds: usize) {
    let dir = tempdir();
    let clock = ManualClock::new(1_700_000_000_000);
    let opts = options(Durability::Sync).clock(clock.clone());
    let q = Queue::open_with(dir.path(), opts).expect("opening the bench queue");
    let s = Scheduler::open_with_clock(&q, clock.clone()).expect("opening the scheduler");
    let body = payload(100);
    for i in 0..schedules {
        let every = Schedule::every(&format!("s{i}"), Duration::from_secs(1))
            .expect("a schedule")
            .payload(body.clone());
        s.register(every).expect("register");
    }
    let (mut plain, mut ticks) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = Instant::now();
        for i in 0..schedules {
            let key = format!("plain/{i}/{round}");
            q.enqueue_with(&body, EnqueueOptions::new().idempotency_key(key))
                .expect("enqueue");
        }
        plain.push(t.elapsed());
        clock.advance(Duration::from_secs(1));
        let t = Instant::now();
        let fired = s.tick().expect("tick").fired.len();
        ticks.push(t.elapsed());
        assert_eq!(fired, schedules);
    }
    let (pm, p9) = (pct(&mut plain, 50), pct(&mut plain, 90));
    let (tm, t9) = (pct(&mut ticks, 50), pct(&mut ticks, 90));
    println!(
        "Sync, {schedules} schedule(s) firing per tick, {rounds} rounds: \
         {schedules} keyed enqueue(s) median {pm:?} p90 {p9:?}; \
         tick median {tm:?} p90 {t9:?}; ratio of medians {:.2}",
        tm.as_secs_f64() / pm.as_secs_f64()
    );
}

fn main() {
    let rounds = common::scaled(200) as usize;
    paired(1, rounds);
    paired(10, rounds);
}
