//! Consuming: dequeue + ack (with leases) on one consumer thread, one job
//! at a time, through `dequeue_batch(100)` with one `ack` per job, and
//! through `dequeue_batch(100)` + `ack_batch` (`batch100_ack_batch`),
//! under `Durability::Os` and `Sync`; a mixed steady state of producer
//! and consumer threads; and what priority levels and message groups cost
//! against the plain queue (`features/100B`: the same dequeue + ack of
//! jobs enqueued one by one, plain, over two or four levels, in 1000
//! groups, in one group).
//!
//! `cargo bench --bench dequeue`

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use walq::{Durability, EnqueueOptions, Priority, Queue};

use common::{mode_name, open, payload, prefill, tempdir};

/// Times `drain` on a fresh queue of `mode` holding `n` jobs of payload
/// `p`; creating, filling and closing the queue are not timed.
fn timed_drain(mode: Durability, p: &[u8], n: u64, drain: impl FnOnce(&Queue)) -> Duration {
    let dir = tempdir();
    let q = open(dir.path(), mode);
    prefill(&q, n, p);
    let start = Instant::now();
    drain(&q);
    let elapsed = start.elapsed();
    drop(q);
    elapsed
}

/// Dequeues `n` jobs in batches of 100, settling each batch with `settle`.
fn drain_batches(q: &Queue, n: u64, settle: impl Fn(&Queue, &[walq::Job])) {
    let mut done = 0;
    while done < n {
        let jobs = q.dequeue_batch(100).expect("dequeue_batch");
        assert!(!jobs.is_empty());
        settle(q, &jobs);
        done += jobs.len() as u64;
    }
}

fn dequeue_ack(c: &mut Criterion) {
    for size in [100usize, 1024] {
        let mut g = c.benchmark_group(format!("dequeue_ack/{size}B"));
        g.throughput(Throughput::Elements(1));
        for mode in [Durability::Os, Durability::Sync] {
            let p = payload(size);
            g.bench_function(BenchmarkId::new("one", mode_name(mode)), |b| {
                b.iter_custom(|iters| {
                    timed_drain(mode, &p, iters, |q| {
                        for _ in 0..iters {
                            let job = q.dequeue().expect("dequeue").expect("a job");
                            q.ack(job.receipt()).expect("ack");
                        }
                    })
                });
            });
            g.bench_function(BenchmarkId::new("batch100", mode_name(mode)), |b| {
                b.iter_custom(|iters| {
                    timed_drain(mode, &p, iters, |q| {
                        drain_batches(q, iters, |q, jobs| {
                            for job in jobs {
                                q.ack(job.receipt()).expect("ack");
                            }
                        })
                    })
                });
            });
            let id = BenchmarkId::new("batch100_ack_batch", mode_name(mode));
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    timed_drain(mode, &p, iters, |q| {
                        drain_batches(q, iters, |q, jobs| {
                            let receipts: Vec<_> = jobs.iter().map(|j| j.receipt()).collect();
                            let acked = q.ack_batch(&receipts).expect("ack_batch");
                            assert!(acked.iter().all(|r| r.is_ok()));
                        })
                    })
                });
            });
        }
        g.finish();
    }
}

/// `producers` threads enqueue, `consumers` threads dequeue + ack, until
/// `total` jobs went through; returns the wall time.
fn run_mixed(q: &Queue, producers: usize, consumers: usize, total: u64, p: &[u8]) -> Duration {
    let per = total.div_ceil(producers as u64);
    let total = per * producers as u64;
    let acked = AtomicU64::new(0);
    let barrier = Barrier::new(producers + consumers + 1);
    std::thread::scope(|s| {
        for _ in 0..producers {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..per {
                    q.enqueue(p).expect("enqueue");
                }
            });
        }
        for _ in 0..consumers {
            s.spawn(|| {
                barrier.wait();
                while acked.load(Ordering::Relaxed) < total {
                    if let Some(job) = q
                        .dequeue_timeout(Duration::from_millis(5))
                        .expect("dequeue")
                    {
                        q.ack(job.receipt()).expect("ack");
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins every thread before returning.
        start
    })
    .elapsed()
}

fn mixed(c: &mut Criterion) {
    let mut g = c.benchmark_group("mixed/100B");
    g.throughput(Throughput::Elements(1));
    let cases = [
        (Durability::Os, 1, 1),
        (Durability::Os, 2, 2),
        (Durability::Os, 4, 4),
        (Durability::Sync, 4, 4),
        (Durability::Sync, 16, 16),
    ];
    for (mode, producers, consumers) in cases {
        let id = format!("{}/{producers}p{consumers}c", mode_name(mode));
        g.bench_function(BenchmarkId::from_parameter(id), |b| {
            let p = payload(100);
            b.iter_custom(|iters| {
                let dir = tempdir();
                let q = open(dir.path(), mode);
                let total = iters.max(producers as u64);
                let t = run_mixed(&q, producers, consumers, total, &p);
                drop(q);
                // Scale to the requested iteration count.
                t.mul_f64(iters as f64 / total.div_ceil(producers as u64) as f64 / producers as f64)
            });
        });
    }
    g.finish();
}

/// The options of job `i` in each `features` row.
fn feature_opts(row: &str, i: u64) -> EnqueueOptions {
    let o = EnqueueOptions::new();
    match row {
        "two_levels" => o.priority(if i.is_multiple_of(2) {
            Priority::Urgent
        } else {
            Priority::Normal
        }),
        "four_levels" => o.priority(Priority::ALL[(i % 4) as usize]),
        "groups_1000" => o.group(format!("customer-{}", i % 1000)),
        "one_group" => o.group("customer-42"),
        _ => o,
    }
}

/// Dequeue + ack (Os) of jobs enqueued one by one with each row's options.
fn features(c: &mut Criterion) {
    let mut g = c.benchmark_group("features/100B");
    g.throughput(Throughput::Elements(1));
    let rows = [
        "plain",
        "two_levels",
        "four_levels",
        "groups_1000",
        "one_group",
    ];
    for row in rows {
        g.bench_function(BenchmarkId::from_parameter(row), |b| {
            let p = payload(100);
            b.iter_custom(|iters| {
                let dir = tempdir();
                let q = open(dir.path(), Durability::Os);
                for i in 0..iters {
                    q.enqueue_with(&p, feature_opts(row, i)).expect("prefill");
                }
                let start = Instant::now();
                for _ in 0..iters {
                    let job = q.dequeue().expect("dequeue").expect("a job");
                    q.ack(job.receipt()).expect("ack");
                }
                let elapsed = start.elapsed();
                drop(q);
                elapsed
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = dequeue_ack, mixed, features
}
criterion_main!(benches);
