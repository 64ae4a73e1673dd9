//! Small walq reproductions to profile (under `valgrind --tool=callgrind`
//! or `perf`), printing jobs/s and the user/system CPU split.
//!
//! `walq_profile <workload> [jobs] [payload bytes] [os|sync|periodic]`
//! workloads: enqueue, dequeue_ack, batch, open, producersN (N threads,
//! e.g. producers64), and
//! fail10 (dequeue + ack, every 10th job `fail`ed instead, so
//! dead-lettered: a log fdatasync each, even under `Os`), and reopen
//! (`jobs` queued and closed, then 9 × open + first dequeue + close
//! without the ack, as the comparison's reopen row does: the time of the
//! open and of the dequeue after it, each run), and fresh (9 × a new
//! queue in a new directory, opened, then `jobs` enqueues, each timed, as
//! the comparison's one-fsync-per-job rows do: the open, the first
//! enqueue, the median, p99.9 and slowest of the others, and the three
//! slowest enqueues by index (a `Sync` queue writes its next MiB of zeros
//! every ~6,500 jobs of 100 B), and each rotating enqueue's index with
//! its time and the two after it, each run). `WALQ_CHECKPOINT_EVERY=<bytes>`
//! sets `Options::checkpoint_every` (0: only at close).

use std::time::{Duration, Instant};

use walq::{Durability, Options, Queue};

fn cpu() -> (f64, f64) {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_utime), t(ru.ru_stime))
}

fn faults() -> (i64, i64) {
    // SAFETY: as above.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (ru.ru_minflt, ru.ru_majflt)
}

/// Nine reopens of the closed queue in `dir`, each timed to the end of
/// its open and to the end of its first dequeue, then closed with the job
/// still leased (so the next open releases it).
fn reopen_phases(dir: &std::path::Path, opts: &dyn Fn() -> Options) {
    for run in 1..=9 {
        let (f0, _) = faults();
        let t = Instant::now();
        let q = Queue::open_with(dir, opts()).expect("reopen");
        let open = t.elapsed();
        let (f1, _) = faults();
        let job = q.dequeue().expect("dequeue").expect("a job");
        let first = t.elapsed() - open;
        std::hint::black_box(job.payload());
        let t = Instant::now();
        q.close().expect("close");
        let close = t.elapsed();
        println!(
            "reopen {run}: open {:.3} ms ({} minor faults), first dequeue {:.3} ms, close {:.3} ms, checkpoint used {}, leases released {}",
            open.as_secs_f64() * 1e3,
            f1 - f0,
            first.as_secs_f64() * 1e3,
            close.as_secs_f64() * 1e3,
            q.recovery_report().checkpoint_used,
            q.recovery_report().leases_released
        );
    }
}

/// Nine new queues, each in a new directory under `base`: the open, then
/// `jobs` enqueues of `p`, each timed.
fn fresh_queues(base: &std::path::Path, jobs: usize, p: &[u8], opts: &dyn Fn() -> Options) {
    for run in 1..=9 {
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        let t = Instant::now();
        let q = Queue::open_with(dir.path(), opts()).expect("open");
        let open = t.elapsed();
        let mut rotations = Vec::new();
        let mut lat: Vec<Duration> = (0..jobs.max(2))
            .map(|i| {
                let segments = q.stats().segments;
                let t = Instant::now();
                q.enqueue(p).expect("enqueue");
                let took = t.elapsed();
                if q.stats().segments > segments {
                    rotations.push(i);
                }
                took
            })
            .collect();
        // The rotating enqueue and the two after it, each rotation.
        let around: Vec<String> = rotations
            .iter()
            .map(|&r| {
                let us: Vec<String> = (r..(r + 3).min(lat.len()))
                    .map(|i| format!("{:.0}", lat[i].as_secs_f64() * 1e6))
                    .collect();
                format!("#{r} {} µs", us.join("/"))
            })
            .collect();
        let mut slowest: Vec<(Duration, usize)> = lat.iter().copied().zip(0..).collect();
        slowest.sort_by(|a, b| b.cmp(a));
        let slowest: Vec<String> = slowest[..3.min(slowest.len())]
            .iter()
            .map(|(d, i)| format!("#{i} {:.0} µs", d.as_secs_f64() * 1e6))
            .collect();
        let first = lat.remove(0);
        let total = first + lat.iter().sum::<Duration>();
        lat.sort();
        let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        println!(
            "fresh {run}: open {:.3} ms, first enqueue {:.0} µs, others median {:.0} µs p99.9 {:.0} µs max {:.0} µs, {:.0} enqueues/s; slowest {}; rotations {}",
            open.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e6,
            at(0.5).as_secs_f64() * 1e6,
            at(0.999).as_secs_f64() * 1e6,
            lat[lat.len() - 1].as_secs_f64() * 1e6,
            (lat.len() + 1) as f64 / total.as_secs_f64(),
            slowest.join(", "),
            if around.is_empty() {
                "none".to_string()
            } else {
                around.join(", ")
            }
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("enqueue", String::as_str);
    let jobs: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let size: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let mode = match args.get(4).map_or("os", String::as_str) {
        "sync" => Durability::Sync,
        "periodic" => Durability::Periodic(Duration::from_millis(10)),
        _ => Durability::Os,
    };
    let dir = match std::env::var_os("COMPARE_DIR") {
        Some(b) => tempfile::tempdir_in(b).expect("tempdir"),
        None => tempfile::tempdir().expect("tempdir"),
    };
    // WALQ_CHECKPOINT_EVERY=<bytes> overrides `Options::checkpoint_every`
    // (0 = only at close), to tell the checkpoint's syncs from the log's.
    let every = std::env::var("WALQ_CHECKPOINT_EVERY")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let opts = || {
        let o = Options::default().durability(mode);
        match every {
            Some(bytes) => o.checkpoint_every(bytes),
            None => o,
        }
    };
    let p: Vec<u8> = (0..size).map(|i| i as u8).collect();
    if what == "fresh" {
        fresh_queues(dir.path(), jobs as usize, &p, &opts);
        return;
    }
    let q = Queue::open_with(dir.path(), opts()).expect("open");
    let fill = |q: &Queue| {
        let mut left = jobs;
        while left > 0 {
            let k = left.min(1000) as usize;
            q.enqueue_batch(std::iter::repeat_n(&p[..], k))
                .expect("fill");
            left -= k as u64;
        }
    };
    if what == "reopen" {
        fill(&q);
        q.close().expect("close");
        drop(q);
        reopen_phases(dir.path(), &opts);
        return;
    }
    let q = match what {
        "dequeue_ack" | "fail10" | "open" => {
            fill(&q);
            q.sync().expect("sync");
            if what == "open" {
                drop(q);
                let (u0, s0) = cpu();
                let t = Instant::now();
                let q = Queue::open_with(dir.path(), opts()).expect("reopen");
                let e = t.elapsed().as_secs_f64();
                let (u1, s1) = cpu();
                let r = q.recovery_report();
                println!(
                    "open: {jobs} jobs, {} bytes scanned in {e:.3} s = {:.0} MB/s, user {:.2} s sys {:.2} s",
                    r.bytes_scanned,
                    r.bytes_scanned as f64 / e / 1e6,
                    u1 - u0,
                    s1 - s0
                );
                return;
            }
            q
        }
        _ => q,
    };
    let (u0, s0) = cpu();
    let (f0, _) = faults();
    let t = Instant::now();
    match what {
        "enqueue" => {
            for _ in 0..jobs {
                q.enqueue(&p).expect("enqueue");
            }
        }
        "batch" => {
            for _ in 0..jobs / 100 {
                q.enqueue_batch(std::iter::repeat_n(&p[..], 100))
                    .expect("batch");
            }
        }
        "dequeue_ack" => {
            for _ in 0..jobs {
                let j = q.dequeue().expect("dequeue").expect("job");
                q.ack(j.receipt()).expect("ack");
            }
        }
        "fail10" => {
            for i in 0..jobs {
                let j = q.dequeue().expect("dequeue").expect("job");
                if i % 10 == 0 {
                    q.fail(j.receipt(), "boom").expect("fail");
                } else {
                    q.ack(j.receipt()).expect("ack");
                }
            }
        }
        producers if producers.starts_with("producers") => {
            let n: u64 = producers["producers".len()..]
                .parse()
                .expect("producersN: N threads");
            std::thread::scope(|s| {
                for _ in 0..n {
                    s.spawn(|| {
                        for _ in 0..jobs / n {
                            q.enqueue(&p).expect("enqueue");
                        }
                    });
                }
            });
        }
        other => panic!("unknown workload {other}"),
    }
    let e = t.elapsed().as_secs_f64();
    let (u1, s1) = cpu();
    let (f1, _) = faults();
    let syncs = q.stats().syncs_total;
    println!(
        "{what} {size} B {mode:?}: {jobs} jobs in {e:.3} s = {:.0} jobs/s; user {:.2} s, sys {:.2} s, minor faults {}, log fdatasyncs {syncs}",
        jobs as f64 / e,
        u1 - u0,
        s1 - s0,
        f1 - f0
    );
}
