//! The worker pool draining a backlog under `Durability::Sync`: 20,000
//! jobs of 100 B (`WALQ_BENCH_POOL_JOBS`), a no-op handler, 1, 4 and 16
//! workers. Every job counts once its ack is durable (the pool's `done`
//! counter), so jobs/s here is jobs whose completion survives power loss.
//!
//! Pickup latency (enqueue to handler start) needs percentiles, which
//! criterion does not report: `cargo run --release --example pool_latency`.
//!
//! `cargo bench --bench pool`

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use walq::worker::{Outcome, WorkerPool};
use walq::Durability;

use common::{env_u64, open, payload, prefill, tempdir};

/// Drains a fresh backlog of `jobs` with `workers`; returns the time from
/// the pool's start until every job's ack is durable.
fn drain_once(workers: usize, jobs: u64) -> Duration {
    let dir = tempdir();
    let q = open(dir.path(), Durability::Sync);
    prefill(&q, jobs, &payload(100));
    let start = Instant::now();
    let pool = WorkerPool::builder(q.clone())
        .name("bench")
        .workers(workers)
        .start(|_ctx, _payload: &[u8]| Outcome::done())
        .expect("starting the pool");
    while pool.stats().done < jobs {
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed();
    let report = pool.shutdown(Duration::from_secs(30));
    assert_eq!(report.stats.done, jobs);
    assert_eq!(q.stats().ready, 0);
    elapsed
}

fn drain(c: &mut Criterion) {
    let jobs = env_u64("WALQ_BENCH_POOL_JOBS", 20_000);
    let mut g = c.benchmark_group(format!("pool_drain/{jobs}x100B/sync"));
    g.throughput(Throughput::Elements(jobs));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(100));
    g.measurement_time(Duration::from_secs(2));
    for workers in [1usize, 4, 16] {
        g.bench_function(BenchmarkId::new("workers", workers), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| drain_once(workers, jobs)).sum());
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = drain
}
criterion_main!(benches);
