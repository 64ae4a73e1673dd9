//! Shutdown's report adds up whatever the timing: every backend call of a
//! pool is delayed at random (now and then past shutdown's deadline, so
//! that shutdown gives up on the thread in it), handlers take random time
//! and end at random, and shutdown comes at a random moment with a random
//! deadline. In every run, each job counted leased is counted exactly once
//! in an outcome (done, retried, dead, lost, released or a settle error).
//!
//! A thread that counted after shutdown gave up on it (a count that raced
//! the give-up, a job held between two calls) breaks the sum. The seeds
//! fix the delays, not the threads' interleaving: each run explores
//! another one, and the assertion holds for all of them.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use walq::worker::{JobContext, Outcome, PoolStats, WorkerPool};
use walq::Queue;

mod common;
mod hooked_backend;
use common::Rng;
use hooked_backend::{Hooked, Hooks};

/// Delays each call by a random time: mostly none or a few ms, now and
/// then longer than any shutdown of these runs waits for a thread.
struct Jitter(Mutex<Rng>);

impl Jitter {
    fn delay(&self) {
        let ms = {
            let mut rng = self.0.lock();
            match rng.below(100) {
                0..=59 => 0,
                60..=94 => rng.range(1, 15),
                _ => rng.range(150, 250),
            }
        };
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

impl Hooks for Jitter {
    fn before_extend(&self) {
        self.delay();
    }
    fn before_complete_batch(&self) {
        self.delay();
    }
    fn before_release(&self) {
        self.delay();
    }
    fn before_lease(&self) {
        self.delay();
    }
    fn before_settle(&self, _id: u64) {
        self.delay();
    }
}

fn outcomes(s: &PoolStats) -> u64 {
    s.done + s.retried + s.dead + s.lost + s.released + s.settle_errors
}

/// One run: 40 jobs, 3 workers, shutdown after `run_ms` with `deadline_ms`.
fn run(seed: u64) -> PoolStats {
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    for i in 0..40u32 {
        q.enqueue(&i.to_le_bytes()).unwrap();
    }
    let hooks = Jitter(Mutex::new(Rng(seed ^ 0x5eed)));
    let handler_rng = Arc::new(Mutex::new(Rng(seed ^ 0xface)));
    let pool = WorkerPool::builder(Hooked { q, hooks })
        .workers(3)
        .visibility(Duration::from_secs(5))
        .heartbeat(Duration::from_millis(10))
        .poll_interval(Duration::from_millis(5))
        .start(move |_: &JobContext, _: &[u8]| {
            let (ms, end) = {
                let mut rng = handler_rng.lock();
                (rng.below(8), rng.below(10))
            };
            std::thread::sleep(Duration::from_millis(ms));
            match end {
                0..=5 => Outcome::done(),
                6 | 7 => Outcome::retry("again"),
                8 => Outcome::done_with(b"result".to_vec()),
                _ => Outcome::fail("no"),
            }
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(rng.range(0, 40)));
    let report = pool.shutdown(Duration::from_millis(rng.range(0, 20)));
    let s = report.stats;
    assert_eq!(
        s.leased,
        outcomes(&s),
        "seed {seed}: leased jobs and their outcomes differ: {s:?}; stuck: {:?}",
        report.stuck
    );
    s
}

#[test]
fn the_report_of_a_shutdown_at_any_moment_adds_up() {
    let mut leased = 0;
    for seed in 0..30 {
        leased += run(seed).leased;
    }
    assert!(leased > 0, "no run leased a job");
}
