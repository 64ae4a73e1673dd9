//! Group commit: `Durability::Sync` enqueues from 1, 4, 16 and 64 producer
//! threads. Every enqueue returns only after its record is fdatasync'ed;
//! concurrent producers share one fdatasync, so throughput should grow with
//! producers while the per-operation latency stays near one fsync.
//!
//! Criterion reports jobs/s (elem/s); after it, a latency table (mean, p50,
//! p99 per enqueue, jobs/s and jobs per fdatasync) is printed for each thread count, from a
//! fixed run of `WALQ_BENCH_GC_SECS` seconds (default 2) per row.
//!
//! The last rows spread 16 and 64 producers over 4 queues of one store
//! (`Store::queue`): they share the log and its group commit.
//!
//! `cargo bench --bench group_commit`

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use walq::{Durability, Queue};

use common::{env_u64, open, payload, percentile, tempdir, us};

const THREADS: [usize; 4] = [1, 4, 16, 64];

/// Runs `threads` producers doing `per` enqueues each; returns wall time.
fn run(q: &Queue, threads: usize, per: u64, p: &[u8]) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..per {
                    q.enqueue(p).expect("enqueue");
                }
            });
        }
        barrier.wait();
        Instant::now()
    })
    .elapsed()
}

fn group_commit(c: &mut Criterion) {
    for size in [100usize, 1024] {
        let mut g = c.benchmark_group(format!("sync_producers/{size}B"));
        g.throughput(Throughput::Elements(1));
        for threads in THREADS {
            g.bench_function(BenchmarkId::from_parameter(format!("{threads}t")), |b| {
                let p = payload(size);
                b.iter_custom(|iters| {
                    let dir = tempdir();
                    let q = open(dir.path(), Durability::Sync);
                    let per = iters.div_ceil(threads as u64);
                    let t = run(&q, threads, per, &p);
                    drop(q);
                    t.mul_f64(iters as f64 / (per * threads as u64) as f64)
                });
            });
        }
        g.finish();
    }
}

/// Per-operation latency with `threads` Sync producers for `secs`,
/// spread over `queues` queues of one store (1: the default queue only).
fn latency_row(threads: usize, size: usize, secs: u64, queues: usize) {
    let dir = tempdir();
    let q = open(dir.path(), Durability::Sync);
    let targets: Vec<Queue> = (0..queues)
        .map(|i| match i {
            0 => q.clone(),
            _ => q.store().queue(&format!("q{i}")).expect("queue"),
        })
        .collect();
    let p = payload(size);
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let (mut lat, wall) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let q = &targets[t % queues];
                let (p, barrier, stop) = (&p, &barrier, &stop);
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(1 << 16);
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        q.enqueue(p).expect("enqueue");
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        let all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("producer"))
            .collect();
        (all, start.elapsed())
    });
    lat.sort_unstable();
    let n = lat.len() as u64;
    let mean = lat.iter().sum::<u64>() / n.max(1);
    let syncs = q.stats().syncs_total.max(1);
    println!(
        "| {size:>5} B | {threads:>3} | {queues} | {:>10.0} | {:>6.1} | {:>10} | {:>10} | {:>10} |",
        n as f64 / wall.as_secs_f64(),
        n as f64 / syncs as f64,
        us(mean),
        us(percentile(&lat, 0.5)),
        us(percentile(&lat, 0.99)),
    );
}

fn main() {
    let mut c = common::criterion();
    group_commit(&mut c);
    c.final_summary();
    // The latency table runs only under `cargo bench`, not in test mode.
    if !common::bench_mode() {
        return;
    }
    let secs = env_u64("WALQ_BENCH_GC_SECS", 2);
    println!();
    println!("Durability::Sync enqueue latency ({secs} s per row)");
    println!("| payload | threads | queues | jobs/s | jobs per fdatasync | mean | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    for size in [100usize, 1024] {
        for threads in THREADS {
            latency_row(threads, size, secs, 1);
        }
    }
    // The same producers spread over 4 named queues of one store: one
    // log and one group commit, so the rate and the jobs per fdatasync
    // should match the single-queue rows.
    for threads in [16, 64] {
        latency_row(threads, 100, secs, 4);
    }
}
