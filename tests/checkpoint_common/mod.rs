//! Helpers of the checkpoint tests: a workload, and what a reopened queue
//! looks like, opened from a copy of the directory with or without its
//! checkpoint.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use walq::{
    Durability, EnqueueOptions, JobStatus, ManualClock, Options, Priority, Queue, RecoveryReport,
};

/// Options of the checkpoint tests: small segments (so reclaim deletes
/// and carries), checkpoints every `every` bytes of log.
pub fn opts(clock: &ManualClock, every: u64) -> Options {
    Options::default()
        .clock(clock.clone())
        .segment_size(64 * 1024)
        .durability(Durability::Os)
        .visibility_timeout(Duration::from_secs(30))
        .max_attempts(3)
        .dedup_window(Duration::from_secs(3600))
        .jitter_seed(7)
        .checkpoint_every(every)
}

/// One step of a workload.
#[derive(Debug, Clone)]
pub enum Op {
    /// Enqueue a payload of this size, delayed by this many seconds, with
    /// key number `key` (0: none).
    Enqueue(usize, u64, u8),
    /// The same at a priority level (0..4: Low..Urgent) and in group
    /// number `group` (0: none), so checkpoints hold levels and groups.
    EnqueueIn(usize, u64, u8, u8, u8),
    /// A batch of this many jobs.
    Batch(u8),
    /// Lease a job and keep it.
    Lease,
    /// Lease a job and ack it.
    Ack,
    /// Lease a job and nack it with a retry after this many seconds, and
    /// no error text (a plain Nack record).
    Nack(u64),
    /// The same with an error text (a NackErr record: the job's last
    /// error, which makes the checkpoint version 5).
    NackErr(u64),
    /// Lease a job and fail it (dead letter).
    Fail,
    /// Redrive every dead letter.
    Redrive,
    /// Move the clock on by this many seconds.
    Advance(u64),
}

/// Applies `ops` to `q`; leased jobs are kept in `held`.
pub fn apply(q: &Queue, clock: &ManualClock, ops: &[Op], held: &mut Vec<walq::Job>) {
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Enqueue(len, delay, key) => {
                let payload = vec![(i % 251) as u8; *len];
                q.enqueue_with(&payload, enqueue_opts(*delay, *key))
                    .expect("enqueue");
            }
            Op::EnqueueIn(len, delay, key, level, group) => {
                let mut o = enqueue_opts(*delay, *key).priority(LEVELS[usize::from(*level) % 4]);
                if *group > 0 {
                    o = o.group(format!("group-{group}"));
                }
                let payload = vec![(i % 251) as u8; *len];
                q.enqueue_with(&payload, o).expect("enqueue");
            }
            Op::Batch(n) => {
                let p = format!("batch at {i}");
                q.enqueue_batch((0..*n).map(|_| p.as_bytes()))
                    .expect("batch");
            }
            Op::Lease => held.extend(q.dequeue().expect("dequeue")),
            Op::Ack => {
                if let Some(j) = q.dequeue().expect("dequeue") {
                    q.ack(j.receipt()).expect("ack");
                }
            }
            Op::Nack(s) | Op::NackErr(s) => {
                if let Some(j) = q.dequeue().expect("dequeue") {
                    let retry = walq::Retry::After(Duration::from_secs(*s));
                    // An error of its own, so that the last error of each
                    // job can be told apart.
                    let error = match op {
                        Op::NackErr(_) => format!("again after {s} s, attempt {}", j.attempt()),
                        _ => String::new(),
                    };
                    q.nack(j.receipt(), retry, &error).expect("nack");
                }
            }
            Op::Fail => {
                if let Some(j) = q.dequeue().expect("dequeue") {
                    q.fail(j.receipt(), "failed").expect("fail");
                }
            }
            Op::Redrive => {
                q.redrive_all().expect("redrive");
            }
            Op::Advance(s) => clock.advance(Duration::from_secs(*s)),
        }
    }
}

/// The levels by number.
pub const LEVELS: [Priority; 4] = [
    Priority::Low,
    Priority::Normal,
    Priority::High,
    Priority::Urgent,
];

fn enqueue_opts(delay: u64, key: u8) -> EnqueueOptions {
    let mut o = EnqueueOptions::new();
    if delay > 0 {
        o = o.delay(Duration::from_secs(delay));
    }
    if key > 0 {
        o = o.idempotency_key(format!("key-{key}"));
    }
    o
}

/// A mixed workload of `n` steps from `seed` (deterministic).
pub fn workload(seed: u64, n: usize) -> Vec<Op> {
    let mut x = seed;
    let mut next = move || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z ^ (z >> 27)
    };
    (0..n)
        .map(|_| match next() % 20 {
            0..=4 => Op::Enqueue(
                (next() % 2000) as usize,
                if next() % 4 == 0 { next() % 100 } else { 0 },
                (next() % 6) as u8,
            ),
            5..=6 => Op::EnqueueIn(
                (next() % 2000) as usize,
                if next() % 4 == 0 { next() % 100 } else { 0 },
                (next() % 6) as u8,
                (next() % 4) as u8,
                (next() % 4) as u8,
            ),
            7 => Op::Batch((next() % 5 + 1) as u8),
            8 => Op::Lease,
            9..=12 => Op::Ack,
            13 => Op::Nack(next() % 50),
            14 => Op::Fail,
            15 => Op::Redrive,
            _ => Op::Advance(next() % 20),
        })
        .collect()
}

/// A drained job: id, payload, attempt, level, group.
pub type Drained = (u64, Vec<u8>, u32, Priority, Option<Vec<u8>>);

/// Everything a reopened queue shows.
#[derive(Debug, PartialEq, Eq)]
pub struct Observed {
    pub stats: (u64, u64, u64, u64),
    /// Each id's status and last error.
    pub statuses: Vec<(u64, String)>,
    pub dead: Vec<(u64, Vec<u8>, u32)>,
    /// Id, payload, attempt, level and group of every job, in the order
    /// they are delivered.
    pub drained: Vec<Drained>,
    pub duplicates: Vec<(u8, bool)>,
}

/// Copies the queue directory `from` to `to` (a new directory).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// Opens a copy of `dir` (without its checkpoint if `scan`), at `now_ms`,
/// and returns the recovery report and what the queue shows: counts, the
/// status of every id, the dead letters, every job drained in order, and
/// which keys are still known.
pub fn observe(dir: &Path, now_ms: u64, scan: bool) -> (RecoveryReport, Observed) {
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(dir, copy.path());
    if scan {
        let _ = std::fs::remove_file(copy.path().join("CHECKPOINT"));
    }
    let clock = ManualClock::new(now_ms);
    let q = Queue::open_with(copy.path(), opts(&clock, 0)).expect("open copy");
    q.check_invariants();
    let report = q.recovery_report().clone();
    let s = q.stats();
    let stats = (s.ready, s.delayed, s.in_flight, s.dead);
    let last = q.enqueue(b"probe").expect("probe");
    let statuses = (1..last)
        .map(|id| {
            let status = status_text(q.status(id).expect("status"));
            let error = q.last_error(id).expect("last error");
            (id, format!("{status} last error {error:?}"))
        })
        .collect();
    let dead = q
        .dead_letters()
        .expect("dead letters")
        .into_iter()
        .map(|d| (d.id, d.payload, d.attempts))
        .collect();
    let duplicates = (1..6u8)
        .map(|k| {
            let o = EnqueueOptions::new().idempotency_key(format!("key-{k}"));
            (k, q.enqueue_with(b"dup?", o).expect("enqueue").duplicate)
        })
        .collect();
    clock.advance(Duration::from_secs(100_000));
    let mut drained = Vec::new();
    while let Some(job) = q.dequeue().expect("dequeue") {
        let group = job.group().map(<[u8]>::to_vec);
        drained.push((
            job.id(),
            job.payload().to_vec(),
            job.attempt(),
            job.priority(),
            group,
        ));
        q.ack(job.receipt()).expect("ack");
    }
    q.check_invariants();
    let obs = Observed {
        stats,
        statuses,
        dead,
        drained,
        duplicates,
    };
    (report, obs)
}

fn status_text(s: JobStatus) -> String {
    format!("{s:?}")
}
