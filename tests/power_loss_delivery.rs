//! Issue 8, finding 10: under `Durability::Sync` no job delivered before a
//! power cut is missing after it (read-committed delivery).
//!
//! Each round of the workload holds every sync (`SimFs::pause_syncs`),
//! starts one or two producer threads (a single enqueue or a batch each:
//! the first becomes the group-commit leader and waits in its fsync, the
//! second appends its record behind it), and while their enqueues are not
//! yet durable the consumer (this thread) dequeues and keeps the leases.
//! Then the syncs are released, the producers return, the consumer acks
//! some of the jobs it holds, enqueues one itself now and then and
//! dequeues once more. The thread schedule is fixed by the held syncs, so
//! the run is deterministic (seeded) and has the same sync points every
//! time.
//!
//! A power cut is injected at every sync point (`freeze_after_syncs`), and
//! for a few power-loss seeds the queue is reopened on the disk the cut
//! leaves. Every id a dequeue returned before the cut must be known there:
//! queued, delayed or dead, or done if an ack was issued for it; never
//! `JobStatus::Unknown`. Without the read-committed rule a job is handed
//! out while its enqueue's fsync is still held, and a cut at that fsync
//! loses it.

mod sim_common;

use std::collections::BTreeSet;
use std::time::Instant;

use sim_common::*;
use walq::vfs::SimFs;
use walq::{Job, JobStatus, ManualClock};

/// Rounds of the workload (the log stays within one 64 KiB segment).
const ROUNDS: usize = 24;
/// Power-loss seeds per sync point.
const SEEDS: u64 = 4;

/// What the workload did.
#[derive(Default)]
struct Seen {
    /// Ids returned by a dequeue before the power cut, in order.
    delivered: Vec<u64>,
    /// Ids an ack was issued for (before or after the cut).
    acked: BTreeSet<u64>,
    /// Deliveries made while a producer's enqueue sync was held.
    during_held_sync: u64,
    /// Enqueues made from another thread.
    from_threads: u64,
}

/// The consumer takes up to `n` jobs (by `dequeue` or `dequeue_batch`).
fn consume(
    q: &walq::Queue,
    fs: &SimFs,
    rng: &mut Rng,
    held: &mut Vec<Job>,
    seen: &mut Seen,
) -> u64 {
    let jobs: Vec<Job> = if rng.below(3) == 0 {
        q.dequeue_batch(rng.range(2, 4) as usize)
            .expect("dequeue_batch")
    } else {
        q.dequeue().expect("dequeue").into_iter().collect()
    };
    // A delivery counts as made before the cut only if the cut had not
    // happened when the call returned (the power goes when the frozen sync
    // is issued).
    let before_cut = !fs.frozen();
    let n = jobs.len() as u64;
    for j in jobs {
        if before_cut {
            seen.delivered.push(j.id());
        }
        held.push(j);
    }
    n
}

/// Runs the workload on `fs` (frozen or not) and returns what it did.
fn workload(fs: &SimFs, clock: &ManualClock, seed: u64) -> Seen {
    let q = open(fs, clock).expect("open");
    let mut rng = Rng(seed);
    let mut held: Vec<Job> = Vec::new();
    let mut seen = Seen::default();
    let mut tag = 0u64;
    let mut next_payload = |rng: &mut Rng| {
        tag += 1;
        payload(tag, rng.range(40, 240) as usize)
    };
    for _ in 0..ROUNDS {
        fs.pause_syncs(true);
        let mut producers = Vec::new();
        let mut expected = q.stats().enqueued_total;
        for p in 0..rng.range(1, 3) {
            let n = rng.range(1, 4) as usize;
            let ps: Vec<Vec<u8>> = (0..n).map(|_| next_payload(&mut rng)).collect();
            expected += n as u64;
            seen.from_threads += n as u64;
            let producer = q.clone();
            producers.push(std::thread::spawn(move || {
                if ps.len() == 1 {
                    vec![producer.enqueue(&ps[0]).expect("enqueue")]
                } else {
                    producer.enqueue_batch(&ps).expect("enqueue_batch")
                }
            }));
            if p == 0 {
                // The leader is in its fsync.
                fs.wait_paused_syncs(1);
            }
            // Its record is appended (a follower waits for the leader).
            while q.stats().enqueued_total < expected {
                // No enqueue can return while the syncs are held: one that
                // did has failed.
                assert!(
                    !producers.iter().any(|p| p.is_finished()),
                    "a producer failed"
                );
                std::thread::yield_now();
            }
        }
        for _ in 0..rng.range(1, 4) {
            seen.during_held_sync += consume(&q, fs, &mut rng, &mut held, &mut seen);
        }
        fs.pause_syncs(false);
        for p in producers {
            p.join().expect("producer");
        }
        if rng.below(3) == 0 {
            let p = next_payload(&mut rng);
            q.enqueue(&p).expect("enqueue");
        }
        while !held.is_empty() && rng.below(3) != 0 {
            let j = held.swap_remove(rng.below(held.len() as u64) as usize);
            seen.acked.insert(j.id());
            q.ack(j.receipt()).expect("ack");
        }
        consume(&q, fs, &mut rng, &mut held, &mut seen);
    }
    assert_eq!(
        segment_ids(fs),
        vec![1],
        "the log rotated (sync under the lock)"
    );
    // The process dies holding its leases.
    drop(held);
    drop(q);
    seen
}

/// Reopens the queue on the disk a power cut left and checks that every
/// job delivered before the cut is there.
fn check_delivered(seen: &Seen, after: &SimFs, now_ms: u64, label: &str) {
    let clock = ManualClock::new(now_ms);
    let q = open(after, &clock).unwrap_or_else(|e| panic!("{label}: reopen failed: {e}"));
    q.check_invariants();
    for &id in &seen.delivered {
        let status = q
            .status(id)
            .unwrap_or_else(|e| panic!("{label}: status of job {id}: {e}"));
        let ok = match &status {
            JobStatus::Queued { .. } | JobStatus::Delayed { .. } | JobStatus::Dead { .. } => true,
            JobStatus::Done { .. } => seen.acked.contains(&id),
            _ => false,
        };
        assert!(
            ok,
            "{label}: job {id} was delivered before the power cut but is {status:?} after it \
             (acked: {})",
            seen.acked.contains(&id)
        );
    }
}

#[test]
fn no_job_delivered_before_a_power_cut_is_missing_after_it() {
    let started = Instant::now();
    let seed = 31;
    let base_fs = SimFs::new();
    let base = workload(&base_fs, &ManualClock::new(START_MS), seed);
    let n = base_fs.syncs();
    eprintln!(
        "delivery: {} deliveries ({} while an enqueue's sync was held), {} acks, {} enqueues from \
         producer threads, {n} syncs",
        base.delivered.len(),
        base.during_held_sync,
        base.acked.len(),
        base.from_threads
    );
    assert!(
        base.during_held_sync > 10,
        "the consumer overlapped the group commits"
    );
    assert!(base.from_threads > 2 * ROUNDS as u64);
    assert!(!base.acked.is_empty() && base.acked.len() < base.delivered.len());
    let mut checks = 0;
    let mut checked_ids = 0;
    for k in 0..=n {
        let fs = SimFs::new();
        fs.freeze_after_syncs(Some(k));
        let seen = workload(&fs, &ManualClock::new(START_MS), seed);
        for s in 0..SEEDS {
            let ps = k * 1000 + s;
            let label = format!("frozen after sync {k}, power-loss seed {ps}");
            check_delivered(&seen, &fs.power_loss(ps), START_MS, &label);
            checks += 1;
            checked_ids += seen.delivered.len();
        }
    }
    eprintln!(
        "delivery: {} sync points, {checks} crashes checked ({checked_ids} delivered ids), in {:?}",
        n + 1,
        started.elapsed()
    );
}
