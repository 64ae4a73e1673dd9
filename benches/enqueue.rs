//! Enqueue throughput: one producer, 100 B / 1 KiB / 64 KiB payloads under
//! `Durability::Os`, `Periodic(10ms)` and `Sync`, and `enqueue_batch` of 100.
//!
//! Each criterion sample runs on a fresh queue (so disk use stays bounded
//! and every sample pays its share of segment rotation). Throughput is in
//! jobs (criterion's "elem/s").
//!
//! `cargo bench --bench enqueue`

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use walq::Durability;

use common::{mode_name, modes, open, payload, tempdir};

fn enqueue(c: &mut Criterion) {
    for size in [100usize, 1024, 64 * 1024] {
        let mut g = c.benchmark_group(format!("enqueue/{size}B"));
        g.throughput(Throughput::Elements(1));
        for mode in modes() {
            if mode == Durability::Sync || size == 64 * 1024 {
                g.measurement_time(Duration::from_secs(4));
            }
            g.bench_function(BenchmarkId::from_parameter(mode_name(mode)), |b| {
                let p = payload(size);
                b.iter_custom(|iters| {
                    let dir = tempdir();
                    let q = open(dir.path(), mode);
                    let start = Instant::now();
                    for _ in 0..iters {
                        q.enqueue(&p).expect("enqueue");
                    }
                    let elapsed = start.elapsed();
                    drop(q);
                    elapsed
                });
            });
        }
        g.finish();
    }
}

fn enqueue_batch(c: &mut Criterion) {
    const BATCH: usize = 100;
    for size in [100usize, 1024] {
        let mut g = c.benchmark_group(format!("enqueue_batch100/{size}B"));
        g.throughput(Throughput::Elements(BATCH as u64));
        for mode in modes() {
            g.bench_function(BenchmarkId::from_parameter(mode_name(mode)), |b| {
                let p = payload(size);
                let batch: Vec<&[u8]> = vec![&p[..]; BATCH];
                b.iter_custom(|iters| {
                    let dir = tempdir();
                    let q = open(dir.path(), mode);
                    let start = Instant::now();
                    for _ in 0..iters {
                        q.enqueue_batch(batch.iter().copied())
                            .expect("enqueue_batch");
                    }
                    let elapsed = start.elapsed();
                    drop(q);
                    elapsed
                });
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = enqueue, enqueue_batch
}
criterion_main!(benches);
