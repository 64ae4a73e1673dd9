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

mod sim_common;

use std::time::Instant;

use sim_common::*;
use walq::vfs::{SimFs, Vfs};

const SEEDS_PER_POINT: u64 = 3;

/// Runs `workload` once per sync point and checks every crash.
fn sweep(name: &str, seed: u64, workload: fn(&mut Run)) -> (u64, u64) {
    let started = Instant::now();
    let mut base = Run::start(SimFs::new(), seed, None);
    workload(&mut base);
    assert!(base.failed.is_none(), "{name}: {:?}", base.failed);
    let n = base.fs.syncs();
    // The whole run, power lost at the end.
    for s in 0..SEEDS_PER_POINT {
        let label = format!("{name}: end, seed {s}");
        check(&base.m, &base.fs.power_loss(s), n, base.clock_ms(), &label);
    }
    let mut checks = 0;
    for k in 0..n {
        let mut run = Run::start(SimFs::new(), seed, Some(k));
        workload(&mut run);
        assert!(run.failed.is_none(), "{name}: {:?}", run.failed);
        for s in 0..SEEDS_PER_POINT {
            let seed = k * 1000 + s;
            let label = format!("{name}: frozen after sync {k}, power-loss seed {seed}");
            check(&run.m, &run.fs.power_loss(seed), k, run.clock_ms(), &label);
            checks += 1;
        }
    }
    eprintln!(
        "{name}: {n} sync points, {checks} crashes checked in {:?}",
        started.elapsed()
    );
    (n, checks)
}

fn mixed(run: &mut Run) {
    mixed_workload(run, 450, false);
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
    sweep("mixed", 11, mixed);
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
    sweep("dead letters", 5, dead_letter_workload);
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
