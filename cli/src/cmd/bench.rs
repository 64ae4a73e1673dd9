//! `walq bench`: enqueue and dequeue+ack throughput and latency for each
//! durability mode, on the user's own disk.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use walq::{Durability, Options, Queue};

use crate::args::BenchArgs;
use crate::fail::{CmdResult, Fail, FAILED, OK, USAGE};
use crate::progress;

/// At most this many jobs per measurement (bounds memory and disk).
const MAX_JOBS: usize = 2_000_000;

/// One measurement.
struct Measured {
    jobs: usize,
    secs: f64,
    /// Per-operation latencies, sorted.
    lat: Vec<Duration>,
}

impl Measured {
    fn quantile(&self, q: f64) -> Duration {
        if self.lat.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.lat.len() - 1) as f64 * q).round() as usize;
        self.lat[i.min(self.lat.len() - 1)]
    }
}

fn fail(e: &walq::Error) -> Fail {
    Fail::new(FAILED, format!("benchmark queue: {e}"))
}

/// Runs `op` on `threads` threads until `secs` pass or `budget` jobs are
/// done; `op` returns false when there is no more work.
fn measure<F>(threads: usize, secs: f64, budget: usize, op: F) -> Result<Measured, Fail>
where
    F: Fn() -> walq::Result<bool> + Sync,
{
    let per_thread = budget / threads.max(1);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let results: Vec<walq::Result<Vec<Duration>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut lat = Vec::new();
                    while lat.len() < per_thread && Instant::now() < until {
                        let t = Instant::now();
                        if !op()? {
                            break;
                        }
                        lat.push(t.elapsed());
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Ok(Vec::new())))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for r in results {
        lat.extend(r.map_err(|e| fail(&e))?);
    }
    lat.sort_unstable();
    Ok(Measured {
        jobs: lat.len(),
        secs,
        lat,
    })
}

fn modes() -> [(&'static str, Durability); 3] {
    [
        ("sync", Durability::Sync),
        ("os", Durability::Os),
        (
            "periodic(100ms)",
            Durability::Periodic(Duration::from_millis(100)),
        ),
    ]
}

/// Runs `walq bench`.
pub fn run(a: &BenchArgs) -> CmdResult {
    let valid = a.seconds.is_finite() && a.seconds > 0.0 && a.seconds <= 3600.0;
    if !valid || a.threads == 0 || a.threads > 1024 || a.payload > 1 << 20 {
        return Err(Fail::new(
            USAGE,
            "--seconds must be in (0, 3600], --threads in 1..=1024, --payload at most 1 MiB",
        ));
    }
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("walq-bench-")
        .tempdir_in(&base)
        .map_err(|e| Fail::new(FAILED, format!("{}: {e}", base.display())))?;
    let mut out = std::io::stdout().lock();
    if !a.json {
        writeln!(
            out,
            "walq bench in {}: {} thread(s), {}-byte payloads, {}s per measurement",
            base.display(),
            a.threads,
            a.payload,
            a.seconds
        )?;
        writeln!(
            out,
            "{:<16} {:<12} {:>12} {:>10} {:>10}",
            "durability", "operation", "jobs/s", "p50", "p99"
        )?;
    }
    let bar = progress::bar(6, "benchmarking", "items");
    for (i, (name, durability)) in modes().into_iter().enumerate() {
        let dir: PathBuf = tmp.path().join(format!("q{i}"));
        let opts = Options::default().durability(durability);
        let q = Queue::open_with(&dir, opts).map_err(|e| fail(&e))?;
        let payload = vec![b'x'; a.payload];
        let enq = measure(a.threads, a.seconds, MAX_JOBS, || {
            q.enqueue(&payload).map(|_| true)
        })?;
        bar.inc(1);
        let deq = measure(a.threads, a.seconds, MAX_JOBS, || match q.dequeue()? {
            Some(job) => q.ack(job.receipt()).map(|()| true),
            None => Ok(false),
        })?;
        bar.inc(1);
        q.close().map_err(|e| fail(&e))?;
        for (op, m) in [("enqueue", &enq), ("dequeue+ack", &deq)] {
            bar.suspend(|| print_row(&mut out, a.json, name, op, m))?;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    bar.finish_and_clear();
    Ok(OK)
}

fn print_row(
    out: &mut impl Write,
    json: bool,
    mode: &str,
    op: &str,
    m: &Measured,
) -> std::io::Result<()> {
    let rate = m.jobs as f64 / m.secs.max(1e-9);
    let (p50, p99) = (m.quantile(0.5), m.quantile(0.99));
    if json {
        let v = json!({
            "durability": mode,
            "operation": op,
            "jobs": m.jobs,
            "seconds": m.secs,
            "jobs_per_s": rate,
            "p50_us": p50.as_secs_f64() * 1e6,
            "p99_us": p99.as_secs_f64() * 1e6,
        });
        return writeln!(out, "{v}");
    }
    writeln!(
        out,
        "{mode:<16} {op:<12} {rate:>12.0} {:>10} {:>10}",
        micros(p50),
        micros(p99)
    )
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1}µs")
    } else {
        format!("{:.2}ms", us / 1000.0)
    }
}
