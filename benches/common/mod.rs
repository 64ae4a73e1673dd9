//! Helpers shared by the walq benchmarks.
//!
//! Environment variables:
//! - `WALQ_BENCH_DIR`: where queues are created (default: the system temp
//!   directory). Put it on the disk you want to measure, never on tmpfs.
//! - `WALQ_BENCH_SCALE`: multiplies the fixed job counts of the
//!   non-criterion parts (latency report, memory, recovery), default 1.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use walq::{Durability, Options, Queue};

/// A fresh directory for one queue, deleted when dropped.
pub fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("WALQ_BENCH_DIR") {
        Some(base) => {
            let base = PathBuf::from(base);
            std::fs::create_dir_all(&base).expect("creating WALQ_BENCH_DIR");
            tempfile::Builder::new()
                .prefix("walq-bench-")
                .tempdir_in(base)
                .expect("creating a bench directory")
        }
        None => tempfile::Builder::new()
            .prefix("walq-bench-")
            .tempdir()
            .expect("creating a bench directory"),
    }
}

/// Options of every bench queue: default segment size, the given durability.
pub fn options(durability: Durability) -> Options {
    Options::default().durability(durability)
}

/// Opens a queue in `dir`.
pub fn open(dir: &std::path::Path, durability: Durability) -> Queue {
    Queue::open_with(dir, options(durability)).expect("opening the bench queue")
}

/// A payload of `len` bytes (not all zero, so nothing special-cases zeros).
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// Fills `q` with `n` jobs of payload `p` through batches of 1000 (untimed
/// set-up).
pub fn prefill(q: &Queue, n: u64, p: &[u8]) {
    let mut left = n;
    while left > 0 {
        let k = left.min(1000) as usize;
        q.enqueue_batch(std::iter::repeat_n(p, k)).expect("prefill");
        left -= k as u64;
    }
}

/// `WALQ_BENCH_SCALE` (default 1.0).
pub fn scale() -> f64 {
    std::env::var("WALQ_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0)
}

/// `n` times the scale, at least 1.
pub fn scaled(n: u64) -> u64 {
    ((n as f64 * scale()) as u64).max(1)
}

/// An env var as a number, or a default.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Whether the binary runs as a benchmark (`cargo bench` passes `--bench`)
/// rather than in criterion's quick test mode (`cargo test --benches`) or
/// as a listing: the non-criterion parts run only then, at full size.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Human name of a durability mode.
pub fn mode_name(d: Durability) -> String {
    match d {
        Durability::Os => "os".into(),
        Durability::Sync => "sync".into(),
        Durability::Periodic(p) => format!("periodic{}ms", p.as_millis()),
    }
}

/// The three modes the brief measures.
pub fn modes() -> [Durability; 3] {
    [
        Durability::Os,
        Durability::Periodic(Duration::from_millis(10)),
        Durability::Sync,
    ]
}

/// A short criterion configuration: the machine is small and shared.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

/// Bytes of all files under `dir`.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(m) = e.metadata() {
                if m.is_dir() {
                    total += dir_bytes(&e.path());
                } else {
                    total += m.len();
                }
            }
        }
    }
    total
}

/// Percentile of sorted nanosecond samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Formats nanoseconds as µs with one decimal.
pub fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}
