//! Jobs/s and latency through a 3-node JetStream cluster next to the
//! embedded queue, on this machine. Starts its own cluster on 127.0.0.1
//! (nats-server from `$NATS_SERVER` or the PATH, `sync_interval: always`,
//! R3 file streams) and an embedded queue (`Durability::Sync`) in a
//! temporary directory:
//!
//! ```text
//! cargo run --release --features jetstream --example jetstream_bench -- [jobs] [workers]
//! ```
//!
//! For each backend: enqueue `jobs` one after another (latency of each
//! call), then drain them with a worker pool of `workers` (jobs/s), the
//! handler doing nothing.

#[path = "../tests/nats_cluster/mod.rs"]
mod nats_cluster;

use std::time::{Duration, Instant};

use walq::worker::{Backend, Outcome, WorkerPool};
use walq::{EnqueueOptions, Queue};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run<B: Backend + Clone>(name: &str, b: B, jobs: usize, workers: usize) {
    let mut lat = Vec::with_capacity(jobs);
    let start = Instant::now();
    for n in 0..jobs {
        let t = Instant::now();
        b.enqueue(format!("{n}").as_bytes(), EnqueueOptions::new())
            .expect("enqueue");
        lat.push(t.elapsed());
    }
    let enq = start.elapsed();
    lat.sort();
    let start = Instant::now();
    let pool = WorkerPool::builder(b.clone())
        .workers(workers)
        .visibility(Duration::from_secs(30))
        .poll_interval(Duration::from_millis(50))
        .start(|_, _| Outcome::done())
        .expect("pool");
    while pool.stats().done < jobs as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let drain = start.elapsed();
    pool.shutdown(Duration::from_secs(30));
    println!(
        "| {name} | {:.0} | {:.2} / {:.2} | {:.0} |",
        jobs as f64 / enq.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        jobs as f64 / drain.as_secs_f64(),
    );
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let jobs = args.first().copied().unwrap_or(2000);
    let workers = args.get(1).copied().unwrap_or(4);
    println!("{jobs} jobs, {workers} workers");
    println!(
        "| backend | enqueue jobs/s (1 producer) | enqueue p50 / p99 ms | pool drain jobs/s |"
    );
    println!("|---|---|---|---|");
    let dir = tempfile::tempdir().expect("temp dir");
    let q = Queue::open(dir.path()).expect("queue");
    run("embedded, Durability::Sync", q, jobs, workers);
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c.replicas(3), "bench");
    run(
        "JetStream R3, file, sync_interval: always",
        js,
        jobs,
        workers,
    );
}
