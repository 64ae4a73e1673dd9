//! Worker pool speed under `Durability::Sync`, as plain numbers.
//!
//! Pickup latency: a paced producer enqueues jobs (100 B, the enqueue
//! instant in the payload) at a steady rate; the handler records how long
//! after the enqueue call began it started. Prints p50, p99 and max.
//!
//! ```sh
//! cargo run --release --example pool_latency -- latency [workers] [jobs/s] [jobs]
//! #   defaults: 4 workers, 500 jobs/s, 3000 jobs
//! cargo run --release --example pool_latency -- drain [workers] [jobs]
//! #   drains a backlog (default 20,000 jobs) with a no-op handler; jobs/s
//! #   counted until every ack is durable
//! ```
//!
//! `WALQ_BENCH_DIR` puts the queue elsewhere (never on tmpfs).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use walq::worker::{JobContext, Outcome, WorkerPool};
use walq::{Durability, Options, Queue};

fn tempdir() -> tempfile::TempDir {
    let b = tempfile::Builder::new().prefix("walq-pool-").to_owned();
    match std::env::var_os("WALQ_BENCH_DIR") {
        Some(base) => b.tempdir_in(base),
        None => b.tempdir(),
    }
    .expect("creating a queue directory")
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn open(dir: &std::path::Path) -> Queue {
    Queue::open_with(dir, Options::default().durability(Durability::Sync)).expect("open")
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("drain") => drain(arg(2, 4) as usize, arg(3, 20_000)),
        _ => latency(arg(2, 4) as usize, arg(3, 500), arg(4, 3000)),
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn latency(workers: usize, rate: u64, jobs: u64) {
    let dir = tempdir();
    let q = open(dir.path());
    let base = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::with_capacity(jobs as usize)));
    let pool = {
        let samples = samples.clone();
        WorkerPool::builder(q.clone())
            .name("latency")
            .workers(workers)
            .start(move |_ctx: &JobContext, payload: &[u8]| {
                let started = base.elapsed().as_nanos() as u64;
                let sent = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                samples.lock().unwrap().push(started.saturating_sub(sent));
                Outcome::done()
            })
            .expect("start")
    };
    // Let the workers reach their wait before the first job.
    std::thread::sleep(Duration::from_millis(200));
    let every = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = Instant::now();
    let mut payload = vec![7u8; 100];
    for i in 0..jobs {
        let due = start + every * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = base.elapsed().as_nanos() as u64;
        payload[..8].copy_from_slice(&now.to_le_bytes());
        q.enqueue(&payload).expect("enqueue");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.stats().done < jobs && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = pool.shutdown(Duration::from_secs(10));
    let mut s = samples.lock().unwrap().clone();
    s.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "pickup latency, {workers} workers, {rate} jobs/s, {} jobs (Sync): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; done {}",
        s.len(),
        us(percentile(&s, 0.5)),
        us(percentile(&s, 0.99)),
        us(*s.last().unwrap_or(&0)),
        report.stats.done,
    );
}

fn drain(workers: usize, jobs: u64) {
    let dir = tempdir();
    let q = open(dir.path());
    let p = [9u8; 100];
    let mut left = jobs;
    while left > 0 {
        let k = left.min(1000) as usize;
        q.enqueue_batch(std::iter::repeat_n(&p[..], k))
            .expect("prefill");
        left -= k as u64;
    }
    let syncs_before = q.stats();
    let start = Instant::now();
    let pool = WorkerPool::builder(q.clone())
        .name("drain")
        .workers(workers)
        .start(|_ctx: &JobContext, _p: &[u8]| Outcome::done())
        .expect("start");
    while pool.stats().done < jobs {
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed();
    let report = pool.shutdown(Duration::from_secs(30));
    let after = q.stats();
    println!(
        "drain {jobs} x 100 B, {workers} workers (Sync): {:.3} s, {:.0} jobs/s; log fdatasyncs {}; done {}",
        elapsed.as_secs_f64(),
        jobs as f64 / elapsed.as_secs_f64(),
        after.syncs_total - syncs_before.syncs_total,
        report.stats.done,
    );
}
