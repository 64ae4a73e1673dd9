//! The cost of keeping a result: `ack_with_result` (a completion record in
//! `done.rec`, fsync'ed, then the ack) against a plain `ack` under
//! `Durability::Sync`, one consumer thread, and four threads sharing the
//! queue. The timed loop is dequeue + ack; jobs are enqueued untimed.
//!
//! `cargo bench --bench status`

mod common;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use walq::{Durability, Queue};

use common::{open, payload, tempdir};

#[derive(Clone, Copy)]
enum Ack {
    Plain,
    Result(usize),
}

impl Ack {
    fn name(self) -> String {
        match self {
            Ack::Plain => "ack".into(),
            Ack::Result(n) => format!("ack_with_result_{n}B"),
        }
    }

    fn run(self, q: &Queue, result: &[u8]) {
        let job = q.dequeue().expect("dequeue").expect("a job");
        match self {
            Ack::Plain => q.ack(job.receipt()).expect("ack"),
            Ack::Result(_) => q
                .ack_with_result(job.receipt(), result)
                .expect("ack_with_result"),
        }
    }
}

/// Fills `q` with `n` jobs of 100 bytes (untimed set-up).
fn prefill(q: &Queue, n: u64) {
    common::prefill(q, n, &payload(100));
}

fn acks(c: &mut Criterion) {
    let kinds = [Ack::Plain, Ack::Result(64), Ack::Result(4096)];
    let mut g = c.benchmark_group("status/sync");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(10);
    for kind in kinds {
        let result = payload(match kind {
            Ack::Plain => 0,
            Ack::Result(n) => n,
        });
        g.bench_function(BenchmarkId::new("one_thread", kind.name()), |b| {
            b.iter_custom(|iters| {
                let dir = tempdir();
                let q = open(dir.path(), Durability::Sync);
                prefill(&q, iters);
                let start = Instant::now();
                for _ in 0..iters {
                    kind.run(&q, &result);
                }
                start.elapsed()
            });
        });
        g.bench_function(BenchmarkId::new("four_threads", kind.name()), |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(4);
                let dir = tempdir();
                let q = open(dir.path(), Durability::Sync);
                prefill(&q, per * 4);
                let barrier = Barrier::new(5);
                std::thread::scope(|s| {
                    for _ in 0..4 {
                        let (q, result, barrier) = (&q, &result, &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            for _ in 0..per {
                                kind.run(q, result);
                            }
                        });
                    }
                    barrier.wait();
                    let start = Instant::now();
                    // The scope joins every worker before returning.
                    start
                })
                .elapsed()
            });
        });
    }
    g.finish();
}

/// Plain ack and ack_with_result alternated op by op on one queue, so that
/// both see the same disk at the same moment (on a shared machine the
/// criterion groups above drift by several times between runs). Prints the
/// median and 90th percentile of each, then the same for four threads in
/// alternating phases (jobs/s per phase, median of the phases).
fn paired_report() {
    let rounds = common::scaled(400) as usize;
    let dir = tempdir();
    let q = open(dir.path(), Durability::Sync);
    prefill(&q, 2 * rounds as u64);
    let result = payload(64);
    let (mut plain, mut with) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        Ack::Plain.run(&q, &result);
        plain.push(t.elapsed());
        let t = Instant::now();
        Ack::Result(64).run(&q, &result);
        with.push(t.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: usize| {
        v.sort();
        v[(v.len() * p / 100).min(v.len() - 1)]
    };
    let (pm, p9) = (pct(&mut plain, 50), pct(&mut plain, 90));
    let (wm, w9) = (pct(&mut with, 50), pct(&mut with, 90));
    println!(
        "paired, one thread, Sync, {rounds} rounds: ack median {pm:?} p90 {p9:?}; \
         ack_with_result(64 B) median {wm:?} p90 {w9:?}; ratio of medians {:.2}",
        wm.as_secs_f64() / pm.as_secs_f64()
    );
    drop(q);

    let per_phase = common::scaled(100);
    let phases = 6;
    let dir = tempdir();
    let q = open(dir.path(), Durability::Sync);
    prefill(&q, per_phase * 4 * phases * 2);
    let (mut plain, mut with) = (Vec::new(), Vec::new());
    for _ in 0..phases {
        for kind in [Ack::Plain, Ack::Result(64)] {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..4 {
                    let (q, result) = (&q, &result);
                    s.spawn(move || {
                        for _ in 0..per_phase {
                            kind.run(q, result);
                        }
                    });
                }
            });
            let rate = (per_phase * 4) as f64 / start.elapsed().as_secs_f64();
            match kind {
                Ack::Plain => plain.push(rate),
                Ack::Result(_) => with.push(rate),
            }
        }
    }
    plain.sort_by(f64::total_cmp);
    with.sort_by(f64::total_cmp);
    let (pm, wm) = (plain[plain.len() / 2], with[with.len() / 2]);
    println!(
        "paired, four threads, Sync, {phases} phases of {} jobs each: ack {pm:.0} jobs/s; \
         ack_with_result(64 B) {wm:.0} jobs/s; ratio {:.2}",
        per_phase * 4,
        pm / wm
    );
}

criterion_group!(benches, acks);

fn main() {
    paired_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
