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
//! - `recovery/reopen`: a queue holding `WALQ_BENCH_REOPEN` pending 100 B
//!   jobs (default 200,000) is closed cleanly, then reopened and the first
//!   job dequeued; the time of open + first dequeue is the figure, with
//!   the checkpoint written by the close (`checkpoint`) and without it
//!   (`full_scan`: the file is deleted before the open). Between two
//!   samples the job is acked and the queue closed again (not timed).
//!   `after_drop`: the same queue reopened after a drop without `close()`
//!   (as after a crash: the last checkpoint and the log after it).
//!
//! `recovery/scan` and `recovery/pending` leave the queue without
//! `close()` (as after a crash) before each open, and delete the
//! checkpoint: they measure the full scan.
//!
//! `WALQ_BENCH_PARTS` picks parts (default `scan,pending,reopen`);
//! `WALQ_BENCH_REOPEN_SCAN=0` leaves out the reopen's full-scan variant.
//!
//! `WALQ_BENCH_PENDING=10000000 cargo bench --bench recovery`
//! `WALQ_BENCH_PARTS=reopen WALQ_BENCH_REOPEN=10000000 cargo bench --bench recovery`

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
    let _ = std::fs::remove_file(dir.join("CHECKPOINT"));
    if cold {
        evict(dir);
    }
    let start = Instant::now();
    let q = Queue::open_with(dir, common::options(Durability::Os)).expect("open");
    let t = start.elapsed();
    drop(q);
    t
}

/// Opens the cleanly closed queue in `dir` (without its checkpoint if
/// `scan`) and dequeues one job: the time of both. Then acks the job and
/// closes the queue again (not timed).
fn reopen_time(dir: &Path, scan: bool) -> Duration {
    if scan {
        let _ = std::fs::remove_file(dir.join("CHECKPOINT"));
    }
    let start = Instant::now();
    let q = Queue::open_with(dir, common::options(Durability::Os)).expect("open");
    let job = q.dequeue().expect("dequeue").expect("a job");
    let t = start.elapsed();
    assert_eq!(q.recovery_report().checkpoint_used, !scan);
    q.ack(job.receipt()).expect("ack");
    q.close().expect("close");
    t
}

/// Opens the queue in `dir`, left by a drop without `close()` (as after a
/// crash: the last periodic checkpoint and the log after it are used),
/// and dequeues one job: the time of both. Then acks the job and drops
/// the queue again (not timed).
fn dropped_time(dir: &Path) -> Duration {
    let start = Instant::now();
    let q = Queue::open_with(dir, common::options(Durability::Os)).expect("open");
    let job = q.dequeue().expect("dequeue").expect("a job");
    let t = start.elapsed();
    q.ack(job.receipt()).expect("ack");
    drop(q);
    t
}

/// Open + first dequeue of a queue of `n` pending jobs, with and without
/// its checkpoint, and after a drop without `close()`.
fn reopen(c: &mut criterion::Criterion, n: u64) {
    let dir = tempdir();
    let t = Instant::now();
    build(dir.path(), n, 100);
    let q = open(dir.path(), Durability::Os);
    q.close().expect("close");
    drop(q);
    let ck = std::fs::metadata(dir.path().join("CHECKPOINT")).map_or(0, |m| m.len());
    eprintln!(
        "built {n} pending jobs of 100 B, closed (checkpoint {ck} bytes) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut g = c.benchmark_group("recovery/reopen");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(if n > 2_000_000 { 60 } else { 10 }));
    // `WALQ_BENCH_REOPEN_SCAN=0`: only the checkpoint variant (the full
    // scan of 10 million jobs takes seconds per sample).
    let scans: &[bool] = if env_u64("WALQ_BENCH_REOPEN_SCAN", 1) == 0 {
        &[false]
    } else {
        &[false, true]
    };
    for &scan in scans {
        let name = if scan { "full_scan" } else { "checkpoint" };
        g.bench_function(BenchmarkId::new(name, format!("{n}_jobs")), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| reopen_time(dir.path(), scan)).sum());
        });
    }
    // Last: each sample leaves the queue dropped, not closed.
    g.bench_function(BenchmarkId::new("after_drop", format!("{n}_jobs")), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| dropped_time(dir.path())).sum());
    });
    g.finish();
}

fn main() {
    let mut c = common::criterion();
    // Outside `cargo bench` (criterion's test mode, `--list`) build tiny
    // queues so that `cargo test --benches` stays quick.
    let listing = !common::bench_mode();
    let parts = std::env::var("WALQ_BENCH_PARTS").unwrap_or_else(|_| "scan,pending,reopen".into());
    if parts.contains("reopen") {
        let n = if listing {
            1000
        } else {
            env_u64("WALQ_BENCH_REOPEN", 200_000)
        };
        reopen(&mut c, n);
    }
    if parts.contains("scan") {
        scan(&mut c, listing);
    }
    if parts.contains("pending") {
        pending(&mut c, listing);
    }
    c.final_summary();
}

/// Full-scan speed in bytes of log.
fn scan(c: &mut criterion::Criterion, listing: bool) {
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
}

/// Full-scan open time with many pending jobs.
fn pending(c: &mut criterion::Criterion, listing: bool) {
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
}
