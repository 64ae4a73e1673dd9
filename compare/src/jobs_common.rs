//! What the `jobs` benchmark and its effectum child process share: the
//! timestamps of the pickup workload, percentiles, and the one-line result
//! format the child prints and the parent parses.
//!
//! Included by path from both crates (`compare/` and
//! `compare/effectum-jobs/`), so it uses std only.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Jobs produced before the pickup latencies are counted (connections,
/// statement caches and thread pools warm up on them).
pub const PICKUP_WARMUP: usize = 20;

/// Per-job timestamps of the pickup workload, in nanoseconds since `base`
/// plus one (0 means "not yet").
pub struct Stamps {
    base: Instant,
    /// Just before the producer calls enqueue.
    pub call: Vec<AtomicU64>,
    /// Just after enqueue returned (the job is committed, durable for the
    /// systems whose enqueue syncs).
    pub ret: Vec<AtomicU64>,
    /// First thing in the handler.
    pub start: Vec<AtomicU64>,
}

impl Stamps {
    pub fn new(n: usize) -> Stamps {
        let v = || (0..n).map(|_| AtomicU64::new(0)).collect();
        Stamps {
            base: Instant::now(),
            call: v(),
            ret: v(),
            start: v(),
        }
    }

    pub fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }

    pub fn mark(slot: &AtomicU64, now: u64) {
        let _ = slot.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// When job `i` should be enqueued at `rate` jobs/s.
    pub fn due(&self, i: usize, rate: f64) -> Instant {
        self.base + Duration::from_secs_f64(0.05 + i as f64 / rate)
    }

    pub fn started(&self) -> usize {
        self.start
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// Latencies after the warm-up: (from the enqueue call, from enqueue's
    /// return), each sorted, in nanoseconds. A handler that started before
    /// enqueue returned counts 0 in the second list.
    pub fn latencies(&self) -> (Vec<u64>, Vec<u64>) {
        let mut from_call = Vec::new();
        let mut from_ret = Vec::new();
        for i in PICKUP_WARMUP.min(self.call.len())..self.call.len() {
            let s = self.start[i].load(Ordering::Relaxed);
            if s == 0 {
                continue;
            }
            from_call.push(s.saturating_sub(self.call[i].load(Ordering::Relaxed)));
            from_ret.push(s.saturating_sub(self.ret[i].load(Ordering::Relaxed)));
        }
        from_call.sort_unstable();
        from_ret.sort_unstable();
        (from_call, from_ret)
    }

    /// The line a child prints for the pickup workload.
    pub fn summary_line(&self) -> String {
        let (c, r) = self.latencies();
        format!(
            "pickup n={} missing={} call_p50={} call_p99={} call_max={} ret_p50={} ret_p99={} ret_max={}",
            c.len(),
            self.call.len() - self.started(),
            pct(&c, 50.0),
            pct(&c, 99.0),
            c.last().copied().unwrap_or(0),
            pct(&r, 50.0),
            pct(&r, 99.0),
            r.last().copied().unwrap_or(0),
        )
    }
}

/// Nearest-rank percentile of a sorted list (0 if empty).
pub fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `key=value` pairs of a result line.
pub fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// The 8-byte payload carrying a job's index.
pub fn index_payload(i: usize) -> Vec<u8> {
    (i as u64).to_le_bytes().to_vec()
}

pub fn payload_index(p: &[u8]) -> usize {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[..8]);
    u64::from_le_bytes(b) as usize
}
