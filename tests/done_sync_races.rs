//! The two fsync paths of `done.rec` and `close`: a failed fdatasync of
//! a result (`Completions::make_durable`, outside the file lock) is never
//! followed by a purge's sync that succeeds without it, and no result is
//! written to `done.rec` after `close` returned. Found by a review; each
//! test failed on the code before its fix.

mod sim_common;

use std::io;
use std::sync::Arc;

use sim_common::*;
use walq::vfs::{Fault, FaultOp, SimFs};
use walq::{Durability, JobStatus, ManualClock, Queue};

/// One try. Returns `None` if the two syncs did not line up (the purge's
/// sync reached the file first), else `Some((purge result, status of the
/// purged job after a power cut))`.
fn ack_sync_fails_then_purge_sync_succeeds(
    seed: u64,
) -> Option<(walq::Result<()>, walq::Result<()>, JobStatus)> {
    let fs = SimFs::new();
    let clock = ManualClock::new(START_MS);
    let opts = options(&clock, Durability::Sync).checkpoint_every(0);
    let q = Queue::open_on(Arc::new(fs.clone()), dir(), opts.clone()).unwrap();
    // done.rec grown past its first chunk and synced (the simulator
    // cannot drop a write that grew a file).
    q.enqueue(b"warm").unwrap();
    let w = q.dequeue().unwrap().unwrap();
    q.ack_with_result(w.receipt(), b"warm").unwrap();
    // A dead letter (no idempotency key: its purge writes nothing to the log).
    let d = q.enqueue(b"dead").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), d);
    q.fail(job.receipt(), "boom").unwrap();
    // A leased job, to be acked with a result.
    q.enqueue(b"live").unwrap();
    let live = q.dequeue().unwrap().unwrap();
    q.sync().unwrap();
    q.wait_upkeep();

    fs.kernel_sync_errors(true);
    fs.faults_only_on(Some(&dir().join("done.rec"))).unwrap();
    fs.pause_syncs(true);
    // A: appends its result R, releases the file lock, and its
    // fdatasync (outside the lock) is held.
    let a = {
        let q = q.clone();
        std::thread::spawn(move || q.ack_with_result(live.receipt(), b"R"))
    };
    fs.wait_paused_syncs(1);
    // B: appends the Purged marker M under the file lock, and its
    // fdatasync (under the lock) is held too.
    let b = {
        let q = q.clone();
        std::thread::spawn(move || q.purge(d))
    };
    // Bounded: with one sync path B waits for A's turn instead.
    for _ in 0..500 {
        if fs.paused_syncs() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // The next sync of done.rec fails, Linux-style (pending writes
    // dropped, error reported once).
    fs.set_fault(Some(Fault {
        op: FaultOp::Sync,
        at: fs.op_count(FaultOp::Sync),
        forever: false,
        kind: io::ErrorKind::Other,
    }));
    fs.pause_syncs(false);
    let (acked, purged) = (a.join().unwrap(), b.join().unwrap());
    fs.set_fault(None);
    if purged.is_err() {
        // B's sync went first and failed: not the interleaving sought.
        return None;
    }
    drop(q);
    let after = fs.power_loss(seed);
    after.kernel_sync_errors(false);
    let q2 = Queue::open_on(Arc::new(after), dir(), opts).unwrap();
    let status = q2.status(d).unwrap();
    Some((acked, purged, status))
}

/// A's `make_durable` fdatasync fails (dropping R and M): B's sync of
/// `done.rec` must not run before A latched the failure. It did, succeeded
/// (the kernel reports a failure once) and the purge returned `Ok`; after a
/// power cut the purged job read as Done (9 of 10 tries). Now a purge's
/// sync waits for the sync turn, and finds the failure latched.
#[test]
fn a_purge_is_not_ok_after_a_concurrent_failed_sync_of_done_rec() {
    let (mut lined_up, mut lost) = (0, 0);
    for seed in 0..10 {
        let Some((acked, purged, status)) = ack_sync_fails_then_purge_sync_succeeds(seed) else {
            continue;
        };
        lined_up += 1;
        eprintln!("try {seed}: ack_with_result = {acked:?}; purge = {purged:?}; status after power cut = {status:?}");
        if !matches!(status, JobStatus::Purged { .. }) {
            lost += 1;
        }
    }
    eprintln!("{lined_up} of 10 tries lined up (A's failing sync first, purge Ok)");
    assert_eq!(
        lost, 0,
        "{lost} tries: purge returned Ok, but after a power cut the purged job reads Done"
    );
}

/// `ack_with_result` checked the queue open under the state lock,
/// released it, then appended to done.rec under the file lock only: a
/// `close` in between synced done.rec, wrote its checkpoint and released
/// the directory, and the append landed after close returned (25 of 300
/// tries). Now the append holds the state lock, checked open.
/// Stress: several threads ack with results while the main thread closes.
#[test]
fn no_ack_with_result_writes_done_rec_after_close_returned() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut hits = 0;
    let tries = 300;
    for t in 0..tries {
        let fs = SimFs::new();
        let clock = ManualClock::new(START_MS);
        let opts = options(&clock, Durability::Os).checkpoint_every(0);
        let q = Queue::open_on(Arc::new(fs.clone()), dir(), opts.clone()).unwrap();
        for _ in 0..64 {
            q.enqueue(b"j").unwrap();
        }
        let go = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..6)
            .map(|_| {
                let q = q.clone();
                let go = go.clone();
                std::thread::spawn(move || {
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    let mut n = 0;
                    loop {
                        let job = match q.dequeue() {
                            Ok(Some(j)) => j,
                            Ok(None) => return n,
                            Err(_) => return n,
                        };
                        if q.ack_with_result(job.receipt(), &[7u8; 200]).is_err() {
                            return n;
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        go.store(true, Ordering::Release);
        for _ in 0..(t % 50) * 20 {
            std::hint::spin_loop();
        }
        q.close().unwrap();
        let at_close = fs.read_file(&dir().join("done.rec")).unwrap();
        for w in workers {
            w.join().unwrap();
        }
        let later = fs.read_file(&dir().join("done.rec")).unwrap();
        if later != at_close {
            hits += 1;
            eprintln!(
                "try {t}: done.rec changed after close() returned: {} -> {} bytes differ",
                at_close.len(),
                at_close.iter().zip(&later).filter(|(a, b)| a != b).count()
                    + at_close.len().abs_diff(later.len())
            );
        }
    }
    assert_eq!(
        hits, 0,
        "{hits} of {tries} tries wrote done.rec after close() returned"
    );
}

/// After a failed sync of done.rec, every later purge, cancel,
/// ack_with_result and sync fails (poisoned), in both durability modes.
#[test]
fn every_call_after_a_failed_done_rec_sync_fails() {
    use std::time::Duration;
    use walq::{EnqueueOptions, ErrorKind};
    for durability in [Durability::Sync, Durability::Os] {
        let fs = SimFs::new();
        let clock = ManualClock::new(START_MS);
        let opts = options(&clock, durability).checkpoint_every(0);
        let q = Queue::open_on(Arc::new(fs.clone()), dir(), opts).unwrap();
        q.enqueue(b"warm").unwrap();
        let w = q.dequeue().unwrap().unwrap();
        q.ack_with_result(w.receipt(), b"warm").unwrap();
        let mut dead = Vec::new();
        for _ in 0..2 {
            q.enqueue(b"d").unwrap();
            let j = q.dequeue().unwrap().unwrap();
            q.fail(j.receipt(), "x").unwrap();
            dead.push(j.id());
        }
        let later = EnqueueOptions::new().delay(Duration::from_secs(3600));
        let c1 = q.enqueue_with(b"c1", later.clone()).unwrap().id;
        let c2 = q.enqueue_with(b"c2", later).unwrap().id;
        q.enqueue(b"live").unwrap();
        let live = q.dequeue().unwrap().unwrap();
        q.sync().unwrap();
        q.wait_upkeep();
        fs.kernel_sync_errors(true);
        fs.faults_only_on(Some(&dir().join("done.rec"))).unwrap();
        fs.set_fault(Some(Fault {
            op: FaultOp::Sync,
            at: fs.op_count(FaultOp::Sync),
            forever: false,
            kind: io::ErrorKind::Other,
        }));
        let first = q.cancel(c1);
        assert!(
            first.is_err(),
            "{durability:?}: the failing cancel: {first:?}"
        );
        // The fault is spent: the kernel would let the next sync succeed.
        let results = [
            ("purge", q.purge(dead[0])),
            ("cancel", q.cancel(c2)),
            ("purge_all", q.purge_all().map(drop)),
            ("ack_with_result", q.ack_with_result(live.receipt(), b"r")),
            ("sync", q.sync()),
        ];
        for (what, r) in results {
            let e = r.expect_err(what);
            assert_eq!(e.kind(), ErrorKind::Poisoned, "{durability:?} {what}: {e}");
        }
    }
}
