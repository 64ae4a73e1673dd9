//! Simulated power loss at every sync point (issue 3, items 2 and 4).
//!
//! A deterministic workload runs on a [`SimFs`] under `Durability::Sync`.
//! For every sync point `k` it runs again with the file system frozen
//! after `k` syncs (the power goes out when sync `k + 1` is issued: every
//! later write is lost, earlier unsynced writes are kept, dropped or torn),
//! then for a few seeds builds the disk a power loss would leave, reopens
//! the queue on it and checks the Sync contract (see `sim_common`): every
//! call that returned `Ok` with at most `k` syncs done is reflected, no
//! acked job comes back, no job appears twice or from nowhere, payloads are
//! intact, batches are all or nothing, attempts never go back, idempotency
//! keys stay known, and no `*.tmp` file is left.
//!
//! The workloads rotate segments, delete them, carry live jobs forward,
//! dead-letter, redrive, purge and compact the dead-letter file, so every
//! multi-file protocol is cut at each of its sync points.
//!
//! `WALQ_POWER_LOSS_SCALE=N` runs N times as many power-loss seeds per sync
//! point, and N times as many workload seeds under `Durability::Os` (whose
//! sync points also depend on the upkeep thread's timing): a deeper sweep,
//! best in a release build (`cargo test --release --test power_loss`).

mod sim_common;

use std::time::Instant;

use sim_common::*;
use walq::vfs::{Fault, FaultOp, SimFs, Vfs};
use walq::Durability;

/// How one sweep runs.
struct Sweep {
    name: &'static str,
    /// Seed of the workload's choices.
    seed: u64,
    durability: Durability,
    workload: fn(&mut Run),
    /// Power-loss seeds per sync point.
    seeds: u64,
    /// Every how many sync points to also crash during the recovery, at
    /// each of the recovery's own sync points (0: never).
    double_every: u64,
    /// Files answer `writes_by_syscall` (`SimFs::writes_by_syscall`): the
    /// log appends as on btrfs or overlayfs, where even `Os` appends are
    /// `pwrite`s and a batch is staged for one.
    pwrite_appends: bool,
}

/// A fresh file system for a run of `sw`.
fn fresh_fs(sw: &Sweep) -> SimFs {
    let fs = SimFs::new();
    fs.writes_by_syscall(sw.pwrite_appends);
    fs
}

/// How many times the default number of seeds to run (see the module
/// docs).
fn scale() -> u64 {
    std::env::var("WALQ_POWER_LOSS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// Runs the workload once per sync point and checks every crash. Returns
/// (sync points, crashes checked).
fn sweep(sw: &Sweep) -> (u64, u64) {
    let started = Instant::now();
    let mut base = Run::start_with(fresh_fs(sw), sw.seed, None, sw.durability);
    (sw.workload)(&mut base);
    assert!(base.failed.is_none(), "{}: {:?}", sw.name, base.failed);
    let n = base.fs.syncs();
    let (mut checks, mut doubles) = (0, 0);
    let seeds = sw.seeds * scale();
    // k = n: the power goes at the end of the whole run.
    for k in 0..=n {
        let mut run = Run::start_with(fresh_fs(sw), sw.seed, Some(k), sw.durability);
        (sw.workload)(&mut run);
        assert!(run.failed.is_none(), "{}: {:?}", sw.name, run.failed);
        for s in 0..seeds {
            let seed = k * 1000 + s;
            let label = format!("{}: frozen after sync {k}, power-loss seed {seed}", sw.name);
            check(&run.m, &run.fs.power_loss(seed), k, run.clock_ms(), &label);
            checks += 1;
        }
        if sw.double_every > 0 && k % sw.double_every == 0 {
            doubles += crash_during_recovery(sw, &run, k);
        }
    }
    eprintln!(
        "{}: {n} sync points, {checks} crashes checked, {doubles} crashes during recovery, in {:?}",
        sw.name,
        started.elapsed()
    );
    (n, checks)
}

/// Crashes the recovery of `run`'s crash at each of its sync points, then
/// recovers again and checks.
fn crash_during_recovery(sw: &Sweep, run: &Run, k: u64) -> u64 {
    let crashed = run.fs.power_loss(k * 7919 + 1);
    // A power loss of a fresh power-loss image changes nothing: copies.
    let probe = crashed.power_loss(0);
    drop(open(&probe, &run.clock).expect("recovery"));
    let mut checks = 0;
    for j in 0..probe.syncs() {
        let fs = crashed.power_loss(0);
        fs.freeze_after_syncs(Some(j));
        drop(open(&fs, &run.clock).expect("recovery with a frozen disk"));
        let label = format!(
            "{}: frozen after sync {k}, then during recovery after its sync {j}",
            sw.name
        );
        check(&run.m, &fs.power_loss(j), k, run.clock_ms(), &label);
        checks += 1;
    }
    checks
}

fn mixed(run: &mut Run) {
    mixed_workload(run, 450, false);
}

fn mixed_big(run: &mut Run) {
    mixed_workload(run, 300, true);
}

#[test]
fn mixed_workload_survives_power_loss_at_every_sync_point() {
    // The workload does what item 4 needs cut at each sync point.
    let mut base = Run::start(SimFs::new(), 11, None);
    mixed(&mut base);
    assert!(base.failed.is_none(), "{:?}", base.failed);
    let (carried, acked, dead) = base.totals();
    let segs = segment_ids(&base.fs);
    eprintln!(
        "mixed: {} ops, {} jobs, carried {carried}, acked {acked}, dead-lettered {dead}, segments now {segs:?}, {} syncs",
        base.m.ops.len(),
        base.m.jobs.len(),
        base.fs.syncs()
    );
    assert!(carried > 0, "no job was carried forward");
    assert!(acked > 50 && dead > 0);
    assert!(*segs.last().unwrap() >= 4, "segments rotated: {segs:?}");
    assert!(segs[0] > 1, "old segments deleted: {segs:?}");
    assert!(!base.m.batches.is_empty());
    sweep(&Sweep {
        name: "mixed",
        seed: 11,
        durability: Durability::Sync,
        workload: mixed,
        seeds: 4,
        double_every: 4,
        pwrite_appends: false,
    });
}

fn levels(run: &mut Run) {
    levels_workload(run, 160);
}

#[test]
fn priority_levels_and_a_group_survive_power_loss_at_every_sync_point() {
    let mut base = Run::start(SimFs::new(), 23, None);
    levels(&mut base);
    assert!(base.failed.is_none(), "{:?}", base.failed);
    let urgent = base
        .m
        .jobs
        .values()
        .filter(|j| j.priority == walq::Priority::Urgent)
        .count();
    assert!(urgent > 5 && urgent < base.m.jobs.len(), "two levels used");
    let grouped = base.m.jobs.values().filter(|j| j.group.is_some()).count();
    assert!(grouped > 5, "one group used: {grouped} jobs");
    let (n, checks) = sweep(&Sweep {
        name: "levels",
        seed: 23,
        durability: Durability::Sync,
        workload: levels,
        seeds: 2,
        double_every: 0,
        pwrite_appends: false,
    });
    assert!(n > 50 && checks > 100, "{n} sync points, {checks} checks");
}

#[test]
fn mixed_workload_with_big_jobs_survives_power_loss_at_every_sync_point() {
    sweep(&Sweep {
        name: "mixed, big jobs",
        seed: 12,
        durability: Durability::Sync,
        workload: mixed_big,
        seeds: 4,
        double_every: 0,
        pwrite_appends: false,
    });
}

#[test]
fn dead_letter_compaction_survives_power_loss_at_every_sync_point() {
    let mut base = Run::start(SimFs::new(), 5, None);
    let dead_path = dir().join("dead.wal");
    let largest = std::rc::Rc::new(std::cell::Cell::new(0));
    let watch = largest.clone();
    let path = dead_path.clone();
    base.on_op = Some(Box::new(move |fs: &SimFs| {
        let len = fs.read_file(&path).map_or(0, |d| d.len());
        watch.set(watch.get().max(len));
    }));
    dead_letter_workload(&mut base);
    let largest = largest.get();
    assert!(base.failed.is_none(), "{:?}", base.failed);
    let end_len = base.fs.read_file(&dead_path).unwrap().len();
    eprintln!(
        "dead letters: file peaked at {largest} bytes, {end_len} at the end, {} syncs",
        base.fs.syncs()
    );
    assert!(largest > 1 << 20 && end_len < largest / 2, "compacted");
    let segs = segment_ids(&base.fs);
    assert!(*segs.last().unwrap() > 20 && segs.len() <= 3, "{segs:?}");
    sweep(&Sweep {
        name: "dead letters",
        seed: 5,
        durability: Durability::Sync,
        workload: dead_letter_workload,
        seeds: 3,
        double_every: 25,
        pwrite_appends: false,
    });
}

#[test]
fn leftover_temporary_files_are_removed_on_open() {
    // A crash can leave a durable `*.tmp` (a rewrite whose directory entry
    // reached the disk before its rename did): open deletes it.
    let fs = SimFs::new();
    let base = Run::start(fs.clone(), 1, None);
    drop(base);
    for name in ["0000000002.wal.tmp", "dead.wal.tmp"] {
        let f = fs.create(&dir().join(name), 0o600).unwrap();
        f.write_at(b"half-built", 0).unwrap();
        f.sync_all().unwrap();
    }
    fs.sync_dir(dir()).unwrap();
    let after = fs.power_loss(9);
    assert!(after
        .list(dir())
        .unwrap()
        .iter()
        .any(|n| n.ends_with(".tmp")));
    let run = Run::start(after.clone(), 1, None);
    assert!(run.failed.is_none(), "{:?}", run.failed);
    let report = run.q.as_ref().unwrap().recovery_report().clone();
    assert_eq!(report.temp_files_removed, 2);
    drop(run);
    // The removal is durable.
    let again = after.power_loss(10);
    assert!(!again
        .list(dir())
        .unwrap()
        .iter()
        .any(|n| n.ends_with(".tmp")));
}

/// The same under `Os` where appends are `pwrite`s (btrfs, overlayfs):
/// batches are staged for one write there, and made live after it.
#[test]
fn os_pwrite_appends_power_loss_loses_only_unsynced_work() {
    for seed in 41..41 + 2 * scale() {
        sweep(&Sweep {
            name: "os, pwrite appends",
            seed,
            durability: Durability::Os,
            workload: mixed,
            seeds: 8,
            double_every: 3,
            pwrite_appends: true,
        });
    }
}

#[test]
fn os_durability_power_loss_loses_only_unsynced_work() {
    // Under `Durability::Os` a power loss may lose what was not synced, but
    // the queue must still open and be consistent, and everything before a
    // `sync()` (or a redrive, which syncs) must be there.
    for seed in 23..23 + 3 * scale() {
        sweep(&Sweep {
            name: "os",
            seed,
            durability: Durability::Os,
            workload: mixed,
            seeds: 8,
            double_every: 3,
            pwrite_appends: false,
        });
    }
}

/// Minimal reproduction of a lost job (see the sweep above): under
/// `Durability::Os`, `fail` writes the dead letter to `dead.wal` and an
/// ack record to the log, syncing neither. When the log's page reaches the
/// disk and `dead.wal`'s does not (here a segment rotation syncs the log),
/// a power loss leaves the job acked in the log and absent from the dead
/// letters: gone, though nobody acked it.
#[test]
fn os_failed_job_is_not_lost_by_power_loss() {
    let clock = walq::ManualClock::new(START_MS);
    let fs = SimFs::new();
    let q = open_with(&fs, &clock, Durability::Os).unwrap();
    let id = q.enqueue(b"precious").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "boom").unwrap();
    // Fill the segment so that it rotates: the rotation syncs the log only.
    let filler = vec![7u8; 8 * 1024];
    while segment_ids(&fs).len() < 2 {
        q.enqueue(&filler).unwrap();
    }
    drop(q);
    for seed in 0..16 {
        let after = fs.power_loss(seed);
        let q = open(&after, &clock).unwrap();
        let dead = q.dead_letter_ids().contains(&id);
        let mut live = false;
        while let Some(j) = q.dequeue().unwrap() {
            live |= j.id() == id;
        }
        assert!(
            dead || live,
            "seed {seed}: job {id} was failed (never acked) and is neither dead nor queued after a power loss"
        );
    }
}

/// `redrive_all` (and `purge_all`) append one removal record per dead
/// letter to `dead.wal` and then sync it once. A power loss during that
/// sync can leave a later removal on disk without an earlier one (they sit
/// in different sectors): open must treat that as a torn tail, not as
/// corruption in the middle of the dead letters.
#[test]
fn many_dead_letter_removals_cut_by_power_loss() {
    for purge in [false, true] {
        let clock = walq::ManualClock::new(START_MS);
        let fs = SimFs::new();
        let q = open(&fs, &clock).unwrap();
        let mut ids = Vec::new();
        for i in 0..40u64 {
            ids.push(q.enqueue(&payload(i, 100)).unwrap());
            let job = q.dequeue().unwrap().unwrap();
            q.fail(job.receipt(), "boom").unwrap();
        }
        // redrive_all: the log sync is real, the dead-letter sync is where
        // the power goes. purge_all: its only sync is the dead-letter one.
        fs.freeze_after_syncs(Some(if purge { 0 } else { 1 }));
        if purge {
            assert_eq!(q.purge_all().unwrap(), 40);
        } else {
            assert_eq!(q.redrive_all().unwrap(), 40);
        }
        drop(q);
        for seed in 0..24 {
            let after = fs.power_loss(seed);
            let q = open(&after, &clock).unwrap_or_else(|e| {
                panic!("purge {purge}, seed {seed}: open after power loss: {e}")
            });
            let dead: Vec<u64> = q.dead_letter_ids();
            let mut live = Vec::new();
            while let Some(j) = q.dequeue().unwrap() {
                live.push(j.id());
            }
            for id in &ids {
                if purge {
                    assert!(!live.contains(id), "purged job {id} came back to life");
                } else {
                    assert!(
                        live.contains(id) && !dead.contains(id),
                        "seed {seed}: redriven job {id} (log synced) is not queued"
                    );
                }
            }
        }
    }
}

/// Minimal reproduction: a job leased on its last attempt is carried
/// forward (its segment is reclaimed while the lease is held). The carry
/// writes two records, the job's enqueue record and then its lease record;
/// a crash between the two (here the lease record's write fails, as a
/// power cut would leave it) leaves a carried record that says the job is
/// not in flight and replaces the older lease. After the restart the job
/// is queued again instead of going to the dead letters, and is delivered
/// a second time with `max_attempts` 1 (guarantee 5).
#[test]
fn carried_job_on_its_last_attempt_is_dead_lettered_after_a_crash() {
    let clock = walq::ManualClock::new(START_MS);
    let fs = SimFs::new();
    // No periodic checkpoint: the fault below is aimed at the third write
    // of one ack, and a checkpoint written meanwhile by its own thread (one
    // falls due when reclaim retires the first segment) would take it.
    let opts = options(&clock, Durability::Sync).checkpoint_every(0);
    let open = |fs: &SimFs, _: &walq::ManualClock| {
        walq::Queue::open_on(std::sync::Arc::new(fs.clone()), dir(), opts.clone())
    };
    let q = open(&fs, &clock).unwrap();
    let id = q
        .enqueue_with(b"last try", walq::EnqueueOptions::new().max_attempts(1))
        .unwrap()
        .id;
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!((job.id(), job.attempt(), job.max_attempts()), (id, 1, 1));
    // Fill and drain the first segment so that it is reclaimed: the one
    // live job in it, in flight, is carried forward.
    let filler = vec![1u8; 8 * 1024];
    while segment_ids(&fs).len() < 2 {
        q.enqueue(&filler).unwrap();
    }
    let mut failed = None;
    while let Some(j) = q.dequeue().unwrap() {
        // The fault is counted in writes: no write of a background thread
        // (the spare the rotation asked for) may be pending when it is set.
        q.wait_upkeep();
        // An ack writes one record and the next dequeue one; the carry of
        // the job, in the maintenance after one of them, writes its enqueue
        // record and then its lease record: fail those (the call succeeds,
        // the queue is poisoned, the next ack fails).
        fs.set_fault(Some(Fault {
            op: FaultOp::Write,
            at: fs.op_count(FaultOp::Write) + 3,
            forever: false,
            kind: std::io::ErrorKind::Other,
        }));
        if let Err(e) = q.ack(j.receipt()) {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("the carry failed");
    assert!(e.to_string().contains("simulated"), "{e}");
    fs.set_fault(None);
    // The process dies holding the lease.
    drop(job);
    drop(q);
    let q = open(&fs, &clock).unwrap();
    while let Some(j) = q.dequeue().unwrap() {
        // The filler whose ack failed may come back; the carried job not.
        assert_ne!(
            j.id(),
            id,
            "job delivered again, attempt {} of {} (recovery: {:?})",
            j.attempt(),
            j.max_attempts(),
            q.recovery_report()
        );
    }
    assert_eq!(q.dead_letter_ids(), vec![id]);
}

/// A reopen after a clean close makes one fsync: the clean flag's clear.
/// The log and `dead.wal` were synced by the close and nothing was
/// written since, so neither is synced again; a power loss right after
/// that reopen, or after its first write, still keeps every dead letter
/// and job. After a drop without `close()` the open syncs them.
#[test]
fn a_clean_reopen_syncs_only_the_clean_flag_and_loses_nothing() {
    let fs = SimFs::new();
    let clock = walq::ManualClock::new(START_MS);
    let q = open_with(&fs, &clock, Durability::Os).unwrap();
    for i in 0..5u8 {
        q.enqueue(&[i; 300]).unwrap();
    }
    let job = q.dequeue().unwrap().expect("a job");
    q.fail(job.receipt(), "no").unwrap();
    q.close().unwrap();
    drop(q);
    let before = fs.syncs();
    let q = open_with(&fs, &clock, Durability::Os).unwrap();
    assert!(q.recovery_report().checkpoint_used);
    assert_eq!(fs.syncs() - before, 1, "syncs of a clean reopen");
    let check = |fs: &SimFs, dead: usize, ready: u64| {
        for seed in 0..8 {
            let lost = fs.power_loss(seed);
            let q = open_with(&lost, &clock, Durability::Os).unwrap();
            assert_eq!(q.dead_letters().unwrap().len(), dead, "seed {seed}");
            assert!(q.stats().ready >= ready, "seed {seed}");
        }
    };
    check(&fs, 1, 4);
    let job = q.dequeue().unwrap().expect("a job");
    q.fail(job.receipt(), "no").unwrap();
    q.sync().unwrap();
    check(&fs, 2, 3);
    drop(q);
    let before = fs.syncs();
    let q = open_with(&fs, &clock, Durability::Os).unwrap();
    assert!(fs.syncs() - before > 1, "an open after a drop syncs");
    assert_eq!(q.dead_letters().unwrap().len(), 2);
}

/// A close that leaves a lease held: the next open releases it with a
/// record it does not sync on its own (one fdatasync fewer). A power cut
/// before anything syncs it loses only the release, which the open after
/// releases again: the job is there, on its next attempt, counted once.
#[test]
fn a_release_lost_to_a_power_cut_is_released_again() {
    let fs = SimFs::new();
    let clock = walq::ManualClock::new(START_MS);
    let q = open_with(&fs, &clock, Durability::Sync).unwrap();
    q.enqueue(b"held at close").unwrap();
    let job = q.dequeue().unwrap().expect("a job");
    assert_eq!(job.attempt(), 1);
    q.close().unwrap();
    drop(q);

    let before = fs.syncs();
    let q = open_with(&fs, &clock, Durability::Sync).unwrap();
    assert_eq!(q.recovery_report().leases_released, 1);
    assert_eq!(
        fs.syncs() - before,
        1,
        "syncs of a clean reopen that releases a lease (the clean flag's only)"
    );
    // The power goes out now, before anything syncs the release.
    let mut released_again = 0;
    for seed in 0..16 {
        let lost = fs.power_loss(seed);
        let q = open_with(&lost, &clock, Durability::Sync).unwrap();
        let report = q.recovery_report();
        assert!(report.leases_released <= 1, "seed {seed}: {report:?}");
        released_again += report.leases_released;
        let job = q.dequeue().unwrap().expect("the job is still there");
        assert_eq!(job.payload(), b"held at close", "seed {seed}");
        assert_eq!(job.attempt(), 2, "seed {seed}: the attempt counted once");
        assert!(q.dequeue().unwrap().is_none(), "seed {seed}");
    }
    assert!(
        released_again > 0,
        "no seed lost the unsynced release record: the case is not exercised"
    );
    drop(q);
}
