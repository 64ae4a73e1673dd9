//! Opening a queue: recovery scan speed per GB of log, and the time to open
//! a queue holding many pending jobs.
//!
//! - `recovery/scan`: a queue holding `WALQ_BENCH_RECOVERY_MB` MiB
//!   (default 512) of 1 KiB jobs, all pending, is reopened; throughput is
//!   in bytes of log scanned (criterion's MiB/s or GiB/s). The `cold`
//!   variant first drops the segment files from the page cache
//!   (`posix_fadvise(DONTNEED)`), so it reads from the disk.
//! - `recovery/pending`: a queue holding `WALQ_BENCH_PENDING` pending
//!   100 B jobs (default 1,000,000; the brief's figure is 10,000,000) is
//!   reopened; the time per open is the figure.
//!
//! The queue is left without `close()` (as after a crash) before each open.
//!
//! `WALQ_BENCH_PENDING=10000000 cargo bench --bench recovery`

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Throughput};
use walq::{Durability, Queue};

use common::{env_u64, open, payload, tempdir};

/// Builds a queue with `jobs` pending jobs of `size` bytes; returns the
/// bytes of log it holds.
fn build(dir: &Path, jobs: u64, size: usize) -> u64 {
    let q = open(dir, Durability::Os);
    let p = payload(size);
    let mut left = jobs;
    while left > 0 {
        let k = left.min(1000) as usize;
        q.enqueue_batch(std::iter::repeat_n(&p[..], k))
            .expect("enqueue_batch");
        left -= k as u64;
    }
    q.sync().expect("sync");
    drop(q);
    let q = open(dir, Durability::Os);
    let scanned = q.recovery_report().bytes_scanned;
    drop(q);
    scanned
}

/// Drops the queue's files from the page cache.
fn evict(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        if let Ok(f) = std::fs::File::open(e.path()) {
            // SAFETY: plain syscall on an open descriptor.
            unsafe {
                libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
        }
    }
}

fn open_time(dir: &Path, cold: bool) -> Duration {
    if cold {
        evict(dir);
    }
    let start = Instant::now();
    let q = Queue::open_with(dir, common::options(Durability::Os)).expect("open");
    let t = start.elapsed();
    drop(q);
    t
}

fn main() {
    let mut c = common::criterion();
    // Outside `cargo bench` (criterion's test mode, `--list`) build tiny
    // queues so that `cargo test --benches` stays quick.
    let listing = !common::bench_mode();

    // Scan speed.
    let mb = env_u64("WALQ_BENCH_RECOVERY_MB", 512);
    let dir = tempdir();
    let jobs = if listing {
        1
    } else {
        mb * 1024 * 1024 / (1024 + 56)
    };
    let t = Instant::now();
    let bytes = build(dir.path(), jobs, 1024);
    eprintln!(
        "built {jobs} jobs of 1 KiB, {bytes} bytes of log scanned on open, in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    {
        let mut g = c.benchmark_group("recovery/scan");
        g.throughput(Throughput::Bytes(bytes));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(5));
        for cold in [false, true] {
            let name = if cold { "cold" } else { "warm" };
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| open_time(dir.path(), cold)).sum());
            });
        }
        g.finish();
    }
    drop(dir);

    // Open time with many pending jobs.
    let pending = env_u64("WALQ_BENCH_PENDING", 1_000_000);
    let dir = tempdir();
    let n = if listing { 1000 } else { pending };
    let t = Instant::now();
    let bytes = build(dir.path(), n, 100);
    eprintln!(
        "built {n} pending jobs of 100 B ({bytes} bytes of log) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    {
        let mut g = c.benchmark_group("recovery/pending");
        g.throughput(Throughput::Elements(n));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(if n > 2_000_000 { 30 } else { 10 }));
        g.bench_function(BenchmarkId::from_parameter(format!("{n}_jobs")), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| open_time(dir.path(), false)).sum());
        });
        g.finish();
    }
    drop(dir);
    c.final_summary();
}
