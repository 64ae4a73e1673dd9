//! Target `checkpoint`: arbitrary bytes as the `CHECKPOINT` file next to a
//! valid log.
//!
//! Input: a flags byte, then the bytes. The harness builds a store on
//! `SimFs` with a workload chosen by the flags' upper bits (jobs enqueued,
//! some keyed, delayed, leased, acked, failed, nacked with an error (so
//! that the checkpoint has an error section); for odd workloads a third of
//! them on a named queue, so that the checkpoint has a queue section;
//! periodic checkpoints; a clean close or a crash), then replaces its `CHECKPOINT` with the input
//! bytes: as they are, or XORed onto the real checkpoint (`XOR`, so that
//! mutations start from a valid file), with both CRCs (head and body)
//! recomputed (`FIX_CRC`, so that mutated fields get past the checksums
//! and reach the checks of the loader).
//!
//! `Queue::open` must return `Ok` or a clean `Err`, never panic. When it
//! opens: `check_invariants` holds; every job it serves, and every dead
//! letter, is one that was enqueued (the same id with the same payload):
//! whatever the checkpoint says, nothing that is not in the log is
//! served. Without `FIX_CRC`, damage must be detected: the open falls back
//! to the full scan and serves exactly what it serves without a checkpoint.
//! The real checkpoint, untouched, must be used and serve exactly that too.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use walq::vfs::{SimFs, Vfs};
use walq::{Durability, EnqueueOptions, ManualClock, Options, Store};

/// Flag: recompute the checkpoint's CRCs (head and body).
pub const FIX_CRC: u8 = 0x01;
/// Flag: XOR the input onto the real checkpoint instead of replacing it.
pub const XOR: u8 = 0x02;
/// Flag: end the workload with a clean close (else a crash).
pub const CLOSE: u8 = 0x04;

const START_MS: u64 = 1_700_000_000_000;
const MAX_DEQUEUES: usize = 2_000;

fn dir() -> &'static Path {
    Path::new("/q")
}

fn options(clock: &ManualClock) -> Options {
    Options::default()
        .segment_size(64 * 1024)
        .durability(Durability::Os)
        .visibility_timeout(Duration::from_secs(3600))
        .max_attempts(3)
        .dedup_window(Duration::from_secs(3600))
        .clock(clock.clone())
        .jitter_seed(7)
        .checkpoint_every(4 * 1024)
}

/// Builds the queue of workload `seed`; returns every job enqueued (id →
/// payload).
fn build(fs: &SimFs, seed: u8, close: bool) -> BTreeMap<u64, Vec<u8>> {
    let clock = ManualClock::new(START_MS);
    let store = Store::open_on(Arc::new(fs.clone()), dir(), options(&clock)).expect("open");
    let (default, named) = (store.default_queue(), store.queue(NAMED).expect("queue"));
    let mut jobs = BTreeMap::new();
    let mut held = Vec::new();
    let n = 20 + usize::from(seed) * 7;
    for i in 0..n {
        let payload = format!("job {i} of workload {seed} {}", "x".repeat(i * 37 % 700));
        let mut o = EnqueueOptions::new();
        if i % 5 == 0 {
            o = o.idempotency_key(format!("key-{}", i % 15));
        }
        if i % 7 == 0 {
            o = o.delay(Duration::from_secs(60));
        }
        let q = if seed % 2 == 1 && i % 3 == 0 {
            &named
        } else {
            &default
        };
        let e = q.enqueue_with(payload.as_bytes(), o).expect("enqueue");
        if !e.duplicate {
            jobs.insert(e.id, payload.into_bytes());
        }
        match i % 6 {
            1 => {
                if let Some(j) = q.dequeue().expect("dequeue") {
                    q.ack(j.receipt()).expect("ack");
                }
            }
            3 => {
                if let Some(j) = q.dequeue().expect("dequeue") {
                    q.fail(j.receipt(), "no").expect("fail");
                }
            }
            4 => {
                // Leased when the queue stops.
                held.extend(q.dequeue().expect("dequeue"));
            }
            5 => {
                // Waits for its retry with a last error (the checkpoint's
                // error section, version 5).
                if let Some(j) = q.dequeue().expect("dequeue") {
                    let retry = walq::Retry::After(Duration::from_secs(60));
                    q.nack(j.receipt(), retry, &format!("error {i}"))
                        .expect("nack");
                }
            }
            _ => {}
        }
    }
    if close {
        store.close().expect("close");
    }
    jobs
}

/// The named queue of odd workloads.
const NAMED: &str = "named";

/// Jobs as (id, payload).
type Jobs = Vec<(u64, Vec<u8>)>;

/// What a queue serves: dead letters, then every job drained (id,
/// payload), ten years on; and whether it opened from the checkpoint.
fn served(fs: &SimFs) -> Option<(Jobs, Jobs, bool)> {
    let clock = ManualClock::new(START_MS);
    let store = Store::open_on(Arc::new(fs.clone()), dir(), options(&clock)).ok()?;
    let q = store.default_queue();
    q.check_invariants();
    let used = q.recovery_report().checkpoint_used;
    let dead = q
        .dead_letters()
        .expect("dead letters")
        .into_iter()
        .map(|d| (d.id, d.payload))
        .collect();
    clock.set(START_MS + 10 * 365 * 24 * 3600 * 1000);
    let mut jobs = Vec::new();
    // Each queue drained in turn: a job in the wrong queue changes the
    // order.
    for q in [q.clone(), store.queue(NAMED).ok()?] {
        for _ in 0..MAX_DEQUEUES {
            match q.dequeue() {
                Ok(Some(j)) => {
                    jobs.push((j.id(), j.payload().to_vec()));
                    let _ = q.ack(j.receipt());
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    q.check_invariants();
    Some((dead, jobs, used))
}

/// Runs one input (see the module docs).
pub fn run(data: &[u8]) {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let fs = SimFs::new();
    let enqueued = build(&fs, flags >> 3, flags & CLOSE != 0);
    let path = dir().join("CHECKPOINT");
    let real = fs.read_file(&path).unwrap_or_default();
    let mut ck = if flags & XOR != 0 {
        let mut b = real.clone();
        for (i, x) in bytes.iter().enumerate() {
            if let Some(r) = b.get_mut(i) {
                *r ^= x;
            }
        }
        b
    } else {
        bytes.to_vec()
    };
    if flags & FIX_CRC != 0 && ck.len() >= 128 + 4 {
        let n = ck.len() - 4;
        let crc = crc32fast::hash(&ck[128..n]);
        ck[n..].copy_from_slice(&crc.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&ck[..60]);
        h.update(&ck[64..128]);
        let crc = h.finalize();
        ck[60..64].copy_from_slice(&crc.to_le_bytes());
    }
    // The same workload again (it is deterministic), opened without its
    // checkpoint: what a full scan serves.
    let scan = SimFs::new();
    build(&scan, flags >> 3, flags & CLOSE != 0);
    let _ = scan.remove(&path);
    let truth = served(&scan).expect("the log opens without a checkpoint");
    let _ = fs.remove(&path);
    let file = fs.create(&path, 0o600).expect("create");
    file.write_at(&ck, 0).expect("write");
    drop(file);
    let Some((dead, jobs, used)) = served(&fs) else {
        return;
    };
    for (id, payload) in dead.iter().chain(&jobs) {
        // A damaged job is dead-lettered with an empty payload.
        let known = enqueued.get(id).is_some_and(|p| p == payload) || payload.is_empty();
        assert!(known, "job {id} served with a payload never enqueued");
    }
    if ck == real && !real.is_empty() {
        // The real checkpoint: used, and the same as a scan.
        assert!(used, "the intact checkpoint was not used");
        assert_eq!(
            (dead, jobs),
            (truth.0, truth.1),
            "checkpoint differs from a scan"
        );
        return;
    }
    if !used || (flags & FIX_CRC == 0 && ck != real) {
        assert!(!used, "a checkpoint that fails its checksum was used");
        assert_eq!(
            (dead, jobs),
            (truth.0, truth.1),
            "fallback differs from a scan"
        );
    }
}
