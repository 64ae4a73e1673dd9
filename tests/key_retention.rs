//! Idempotency keys are kept for their whole window on every path: each
//! test builds the situation, reopens the store (by a full scan, with the
//! checkpoint removed, and from the checkpoint), and asks for the key
//! again: it must be a duplicate of the original job.
//!
//! Covered here: a key of a job dead-lettered by the open after a crash
//! (named queue, level, group), read back after a scan and after a second
//! reopen (`a_job_dead_lettered_at_open_keeps_its_key`); a purge of a letter whose key was rebuilt from `dead.wal`
//! at a checkpoint open (`a_purge_after_a_checkpoint_open_keeps_the_key`); a purge's Key2 record carried by reclaim
//! (`a_purged_letters_key_is_carried_by_reclaim`); a purge cut short before its removal reached `dead.wal`, then
//! purged again (`a_purge_cut_short_then_repeated_keeps_the_key`); and a model run whose clock jumps across the dedup
//! window, with reopens of every kind (clean, dropped, checkpoint removed)
//! between operations
//! (`random_operations_keep_each_key_for_exactly_its_window`; the power-loss sweeps use a one-year window).
//! `KEY_REVIEW_SEEDS` sets its seeds (default 12; 300 were run when
//! it was written, on 2026-12-01).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{scanned, Rng};
use walq::{Clock, EnqueueOptions, ManualClock, Priority, Queue, Store};

fn open(dir: &Path, clock: &ManualClock) -> Store {
    Store::open_with(dir, common::opts(clock)).expect("open store")
}

fn keyed(k: &str) -> EnqueueOptions {
    EnqueueOptions::new().idempotency_key(k)
}

/// Enqueues `payload` on `q` under `key`, allowed one attempt, and fails
/// that attempt: the job is a dead letter. Returns its id.
fn dead_letter_keyed(q: &Queue, payload: &[u8], key: &str) -> u64 {
    let id = q
        .enqueue_with(payload, keyed(key).max_attempts(1))
        .unwrap()
        .id;
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "boom").unwrap();
    id
}

/// Asks for `key` on queue `queue` of the store: it must be a duplicate of
/// job `id`.
fn assert_dup(store: &Store, queue: &str, key: &str, id: u64, when: &str) {
    let q = store.queue(queue).unwrap();
    let out = q.enqueue_with(b"again", keyed(key)).unwrap();
    assert!(
        out.duplicate && out.id == id,
        "{when}: key {key:?} of queue {queue:?} was forgotten: got id {} (duplicate: {}), want job {id}",
        out.id,
        out.duplicate
    );
}

/// Checks `(queue, key, id)` triples after a full scan and from the
/// checkpoint, and once more after each of those closes and reopens.
fn check_both(dir: &Path, clock: &ManualClock, want: &[(&str, &str, u64)]) {
    let copy = scanned(dir);
    let has_checkpoint = dir.join("CHECKPOINT").exists();
    for (d, from_checkpoint) in [(copy.path(), false), (dir, has_checkpoint)] {
        let label = if from_checkpoint {
            "checkpoint"
        } else {
            "scan"
        };
        {
            let store = open(d, clock);
            assert_eq!(
                store.recovery_report().checkpoint_used,
                from_checkpoint,
                "{label}"
            );
            for &(q, k, id) in want {
                assert_dup(&store, q, k, id, &format!("{label} open"));
            }
            store.close().unwrap();
        }
        let store = open(d, clock);
        for &(q, k, id) in want {
            assert_dup(&store, q, k, id, &format!("{label} open, then reopen"));
        }
        store.close().unwrap();
    }
}

/// Fills the default queue and drains it until the first segment is gone.
fn reclaim_first_segment(store: &Store, dir: &Path) {
    let first = common::segment_files(dir)[0].clone();
    let filler = vec![1u8; 2048];
    let default = store.default_queue();
    for _ in 0..400 {
        default.enqueue(&filler).unwrap();
        while let Some(j) = default.dequeue().unwrap() {
            default.ack(j.receipt()).unwrap();
        }
        default.wait_upkeep();
        if !first.exists() {
            break;
        }
    }
    assert!(!first.exists(), "the first segment was reclaimed");
}

/// A job on its last attempt when the process stopped is dead-lettered by
/// the next open; its key stays known (named queue, level, group).
#[test]
fn a_job_dead_lettered_at_open_keeps_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let id = {
        let store = open(dir.path(), &clock);
        let a = store.queue("a").unwrap();
        let o = keyed("k1")
            .max_attempts(1)
            .priority(Priority::High)
            .group("g");
        let id = a.enqueue_with(b"x", o).unwrap().id;
        let job = a.dequeue().unwrap().unwrap();
        assert_eq!(job.id(), id);
        // Stop without settling (no close: no clean checkpoint).
        std::mem::forget(job);
        drop(a);
        drop(store);
        id
    };
    check_both(dir.path(), &clock, &[("a", "k1", id)]);
}

/// Dead, reopened from the checkpoint, purged (its key kept by a record).
#[test]
fn a_purge_after_a_checkpoint_open_keeps_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let (id, id0) = {
        let store = open(dir.path(), &clock);
        let a = store.queue("a").unwrap();
        let id = dead_letter_keyed(&a, b"x", "k1");
        let d = store.default_queue();
        let id0 = dead_letter_keyed(&d, b"y", "k1");
        store.close().unwrap();
        (id, id0)
    };
    {
        let store = open(dir.path(), &clock);
        let a = store.queue("a").unwrap();
        a.purge(id).unwrap();
        store.default_queue().purge(id0).unwrap();
        assert_dup(&store, "a", "k1", id, "in process");
        assert_dup(&store, "default", "k1", id0, "in process");
        store.close().unwrap();
    }
    check_both(
        dir.path(),
        &clock,
        &[("a", "k1", id), ("default", "k1", id0)],
    );
}

/// Purged, then the segment holding the purge's key record is reclaimed.
#[test]
fn a_purged_letters_key_is_carried_by_reclaim() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let store = open(dir.path(), &clock);
    let a = store.queue("a").unwrap();
    let id = dead_letter_keyed(&a, b"x", "k1");
    a.purge_all().unwrap();
    reclaim_first_segment(&store, dir.path());
    reclaim_first_segment(&store, dir.path());
    assert_dup(&store, "a", "k1", id, "in process");
    store.close().unwrap();
    drop((a, store));
    check_both(dir.path(), &clock, &[("a", "k1", id)]);
}

// ---------------------------------------------------------------------
// A randomized model run: keyed enqueues on three queues, leases, acks,
// fails, nacks, lease expiry, redrive, purge, reclaim, clock jumps across
// the dedup window, and reopens of every kind. A key must stay known while
// its job is not finished (acked or purged) and, after that, until its
// window ends.
// ---------------------------------------------------------------------

const QUEUES: [&str; 3] = ["default", "a", "b"];
const WINDOW_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone)]
struct KeyedJob {
    id: u64,
    enqueued_ms: u64,
    finished: bool,
}

/// Marks job `id`'s key finished (acked or purged), if the key still names
/// that job.
fn finish(
    keys: &mut std::collections::BTreeMap<(usize, u64), KeyedJob>,
    by_id: &std::collections::BTreeMap<u64, (usize, u64)>,
    id: u64,
) {
    if let Some(kk) = by_id.get(&id) {
        if let Some(kj) = keys.get_mut(kk) {
            if kj.id == id {
                kj.finished = true;
            }
        }
    }
}

fn model_run(seed: u64, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000_000);
    let mut rng = Rng(seed);
    let mut store = open(dir.path(), &clock);
    let mut keys: std::collections::BTreeMap<(usize, u64), KeyedJob> = Default::default();
    let mut by_id: std::collections::BTreeMap<u64, (usize, u64)> = Default::default();
    let mut held: Vec<walq::Job> = Vec::new();
    let mut log: Vec<String> = Vec::new();
    let filler = vec![3u8; 1500];
    for step in 0..steps {
        let now = clock.now_ms();
        let r = rng.below(100);
        if r < 25 {
            let qi = rng.below(3) as usize;
            let k = rng.below(10);
            let key = format!("key-{k}");
            let q = store.queue(QUEUES[qi]).unwrap();
            let mut o = keyed(&key).max_attempts(1 + rng.below(2) as u32);
            if rng.below(4) == 0 {
                o = o.priority(Priority::High);
            }
            if rng.below(5) == 0 {
                o = o.group(format!("g{}", rng.below(2)));
            }
            let out = q.enqueue_with(format!("{qi}/{key}").as_bytes(), o).unwrap();
            log.push(format!(
                "{step}: enqueue {}:{key} -> {} dup {}",
                QUEUES[qi], out.id, out.duplicate
            ));
            match keys.get(&(qi, k)) {
                Some(kj) if out.duplicate => assert_eq!(
                    out.id,
                    kj.id,
                    "seed {seed} step {step}: key {key} of {} names another job\n{}",
                    QUEUES[qi],
                    log.join("\n")
                ),
                Some(kj) => {
                    let must = !kj.finished || now + 1000 < kj.enqueued_ms + WINDOW_MS;
                    assert!(
                        !must,
                        "seed {seed} step {step}: key {key} of queue {} forgotten: job {:?}, now {now}; new job {}\n{}",
                        QUEUES[qi],
                        kj,
                        out.id,
                        log[log.len().saturating_sub(60)..].join("\n")
                    );
                }
                None => assert!(
                    !out.duplicate,
                    "seed {seed} step {step}: unknown key a duplicate"
                ),
            }
            if !out.duplicate {
                keys.insert(
                    (qi, k),
                    KeyedJob {
                        id: out.id,
                        enqueued_ms: now,
                        finished: false,
                    },
                );
                by_id.insert(out.id, (qi, k));
            }
        } else if r < 35 {
            let qi = rng.below(3) as usize;
            store.queue(QUEUES[qi]).unwrap().enqueue(&filler).unwrap();
        } else if r < 55 {
            let qi = rng.below(3) as usize;
            if let Some(job) = store.queue(QUEUES[qi]).unwrap().dequeue().unwrap() {
                log.push(format!(
                    "{step}: lease {} attempt {}/{}",
                    job.id(),
                    job.attempt(),
                    job.max_attempts()
                ));
                if job.idempotency_key().is_none() {
                    // A filler: ack at once.
                    store.queue(QUEUES[qi]).unwrap().ack(job.receipt()).unwrap();
                } else {
                    held.push(job);
                }
            }
        } else if r < 72 {
            if held.is_empty() {
                continue;
            }
            let i = rng.below(held.len() as u64) as usize;
            let job = held.swap_remove(i);
            let q = store.default_queue();
            let what = rng.below(4);
            let res = match what {
                0 | 1 => q.ack(job.receipt()),
                2 => q.fail(job.receipt(), "boom"),
                _ => q.nack(job.receipt(), walq::Retry::After(Duration::ZERO), "again"),
            };
            log.push(format!(
                "{step}: settle {} how {what} -> {:?}",
                job.id(),
                res.as_ref().err().map(|e| e.kind())
            ));
            if res.is_ok() && what <= 1 {
                finish(&mut keys, &by_id, job.id());
            }
        } else if r < 76 {
            if held.len() >= 2 {
                let q = store.default_queue();
                let receipts: Vec<_> = held.iter().map(|j| j.receipt()).collect();
                let res = q.ack_batch(&receipts).unwrap();
                for (j, r) in held.iter().zip(&res) {
                    log.push(format!("{step}: batch ack {} -> {}", j.id(), r.is_ok()));
                    if r.is_ok() {
                        finish(&mut keys, &by_id, j.id());
                    }
                }
                held.clear();
            }
        } else if r < 82 {
            let q = store.queue(QUEUES[rng.below(3) as usize]).unwrap();
            let dead = q.dead_letter_ids();
            if dead.is_empty() {
                continue;
            }
            let id = dead[rng.below(dead.len() as u64) as usize];
            match rng.below(5) {
                0 => {
                    let n = q.purge_all().unwrap();
                    log.push(format!("{step}: purge_all {dead:?} ({n})"));
                    for id in dead {
                        finish(&mut keys, &by_id, id);
                    }
                }
                1 | 2 => {
                    q.purge(id).unwrap();
                    log.push(format!("{step}: purge {id}"));
                    finish(&mut keys, &by_id, id);
                }
                3 => {
                    q.redrive_all().unwrap();
                    log.push(format!("{step}: redrive_all {dead:?}"));
                }
                _ => {
                    q.redrive(id).unwrap();
                    log.push(format!("{step}: redrive {id}"));
                }
            }
        } else if r < 90 {
            // Drain the fillers of the default queue (reclaim).
            let q = store.default_queue();
            for _ in 0..20 {
                match q.dequeue().unwrap() {
                    Some(j) if j.idempotency_key().is_none() => q.ack(j.receipt()).unwrap(),
                    Some(j) => held.push(j),
                    None => break,
                }
            }
        } else if r < 95 {
            let by = match rng.below(4) {
                0 | 1 => Duration::from_secs(40),
                2 => Duration::from_secs(3600 * (1 + rng.below(6))),
                _ => Duration::from_secs(3600 * (10 + rng.below(10))),
            };
            clock.advance(by);
            log.push(format!("{step}: clock +{}s", by.as_secs()));
        } else {
            held.clear();
            let how = rng.below(3);
            log.push(format!("{step}: reopen {how}"));
            match how {
                0 => {
                    store.close().unwrap();
                    drop(store);
                }
                1 => drop(store),
                _ => {
                    store.close().unwrap();
                    drop(store);
                    let _ = std::fs::remove_file(dir.path().join("CHECKPOINT"));
                }
            }
            store = open(dir.path(), &clock);
            log.push(format!(
                "   report: ck {} dead at open {}",
                store.recovery_report().checkpoint_used,
                store.recovery_report().dead_lettered_on_open
            ));
        }
    }
}

#[test]
fn random_operations_keep_each_key_for_exactly_its_window() {
    let seeds: u64 = std::env::var("KEY_REVIEW_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for seed in 1..=seeds {
        model_run(seed, 1500);
    }
}

/// A purge cut short by a crash after its key record is durable but before
/// the dead letter's removal reached `dead.wal`: the letter is still there;
/// purging it again (after a reopen from the checkpoint or a scan) keeps
/// the key.
#[test]
fn a_purge_cut_short_then_repeated_keeps_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let id = {
        let store = open(dir.path(), &clock);
        let a = store.queue("a").unwrap();
        let id = dead_letter_keyed(&a, b"x", "k1");
        store.close().unwrap();
        id
    };
    let dead_wal = dir.path().join("dead.wal");
    let before = std::fs::read(&dead_wal).unwrap();
    {
        let store = open(dir.path(), &clock);
        store.queue("a").unwrap().purge(id).unwrap();
        store.close().unwrap();
    }
    std::fs::write(&dead_wal, &before).unwrap();
    let copy = scanned(dir.path());
    for d in [dir.path(), copy.path()] {
        let store = open(d, &clock);
        assert_eq!(store.default_queue().dead_letter_ids(), vec![id]);
        assert_dup(&store, "a", "k1", id, "after the cut purge");
        store.queue("a").unwrap().purge(id).unwrap();
        assert_dup(&store, "a", "k1", id, "purged again");
        store.close().unwrap();
        drop(store);
        check_both(d, &clock, &[("a", "k1", id)]);
    }
}
