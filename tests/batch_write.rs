//! Under `Durability::Sync` appends are `pwrite`s (and under `Os` too on
//! file systems where stores into the map are not safe); a batch of jobs is
//! written with one of them, not one per job, and stays all-or-nothing
//! across a power cut.

use std::path::Path;
use std::sync::Arc;

use walq::vfs::{Fault, FaultOp, SimFs};
use walq::{Durability, ErrorKind, Options, Queue};

fn open(fs: &SimFs) -> Queue {
    open_with(fs, Durability::Sync)
}

#[test]
fn a_batch_is_one_write_and_survives_a_power_cut() {
    let fs = SimFs::new();
    let q = open(&fs);
    q.enqueue(b"before").unwrap();
    let payloads: Vec<Vec<u8>> = (0..100).map(|i| format!("job {i}").into_bytes()).collect();
    let writes = fs.op_count(FaultOp::Write);
    let ids = q.enqueue_batch(payloads.iter()).unwrap();
    let batch_writes = fs.op_count(FaultOp::Write) - writes;
    assert_eq!(ids.len(), 100);
    assert_eq!(batch_writes, 1, "writes for one batch of 100 jobs");

    let after = fs.power_loss(7);
    drop(q);
    let q = open(&after);
    let got = drain(&q);
    let mut want = vec![b"before".to_vec()];
    want.extend(payloads);
    assert_eq!(got, want, "every job of the acknowledged batch, in order");
}

#[test]
fn a_failed_batch_write_adds_no_job() {
    let fs = SimFs::new();
    let q = open(&fs);
    q.enqueue(b"before").unwrap();
    let at = fs.op_count(FaultOp::Write);
    fs.set_fault(Some(Fault {
        op: FaultOp::Write,
        at,
        forever: false,
        kind: std::io::ErrorKind::Other,
    }));
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| format!("job {i}").into_bytes()).collect();
    let err = q.enqueue_batch(payloads.iter()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    fs.set_fault(None);
    drop(q);
    let q = open(&fs);
    let got = drain(&q);
    assert_eq!(got, vec![b"before".to_vec()], "no job of the failed batch");
    q.enqueue(b"after").unwrap();
}

/// Under `Durability::Os` on a file system where stores into the map are
/// not safe (btrfs, overlayfs: every append is a `pwrite` there), a batch
/// is staged for one write too, not written one job at a time.
#[test]
fn an_os_batch_is_one_write_where_appends_are_pwrites() {
    let fs = SimFs::new();
    fs.writes_by_syscall(true);
    let q = open_with(&fs, Durability::Os);
    q.enqueue(b"before").unwrap();
    let payloads: Vec<Vec<u8>> = (0..100).map(|i| format!("job {i}").into_bytes()).collect();
    let writes = fs.op_count(FaultOp::Write);
    q.enqueue_batch(payloads.iter()).unwrap();
    assert_eq!(
        fs.op_count(FaultOp::Write) - writes,
        1,
        "writes for one batch of 100 jobs"
    );
    drop(q);
    let q = open_with(&fs, Durability::Os);
    let mut want = vec![b"before".to_vec()];
    want.extend(payloads);
    assert_eq!(drain(&q), want, "every job of the batch, in order");
}

/// A staged batch whose one write fails on a full disk makes no job live
/// and leaves the queue serving, as a single enqueue that fails there
/// does (it is not poisoned); the same failure with EIO poisons it.
#[test]
fn a_staged_batch_on_a_full_disk_fails_harmlessly() {
    for (durability, by_syscall) in [(Durability::Sync, false), (Durability::Os, true)] {
        for kind in [std::io::ErrorKind::StorageFull, std::io::ErrorKind::Other] {
            let fs = SimFs::new();
            fs.writes_by_syscall(by_syscall);
            let q = open_with(&fs, durability);
            q.enqueue(b"before").unwrap();
            fs.set_fault(Some(Fault {
                op: FaultOp::Write,
                at: fs.op_count(FaultOp::Write),
                forever: false,
                kind,
            }));
            let batch = [b"x".as_slice(), b"y", b"z"];
            let err = q.enqueue_batch(batch).unwrap_err();
            fs.set_fault(None);
            let case = format!("{durability:?}, {kind:?}");
            assert_eq!(err.kind(), ErrorKind::Io, "{case}: {err}");
            assert_eq!(q.stats().ready, 1, "{case}: no job of the batch");
            let after = q.enqueue(b"after");
            if kind == std::io::ErrorKind::StorageFull {
                after.unwrap_or_else(|e| panic!("{case}: the queue still serves: {e}"));
                assert_eq!(
                    drain(&q),
                    vec![b"before".to_vec(), b"after".to_vec()],
                    "{case}"
                );
            } else {
                let e = after.expect_err(&case);
                assert_eq!(e.kind(), ErrorKind::Poisoned, "{case}: {e}");
            }
            drop(q);
            let q = open_with(&fs, durability);
            assert!(
                !drain(&q).iter().any(|p| batch.contains(&p.as_slice())),
                "{case}: a job of the failed batch came back"
            );
        }
    }
}

/// A lease batch whose write fails on a full disk gives its jobs back as
/// they were: served again, in order, as their first attempt.
#[test]
fn a_failed_lease_batch_counts_no_attempt() {
    let fs = SimFs::new();
    fs.writes_by_syscall(true);
    let q = open_with(&fs, Durability::Os);
    q.enqueue_batch([b"a".as_slice(), b"b", b"c"]).unwrap();
    fs.set_fault(Some(Fault {
        op: FaultOp::Write,
        at: fs.op_count(FaultOp::Write),
        forever: true,
        kind: std::io::ErrorKind::StorageFull,
    }));
    let err = q.dequeue_batch(3).unwrap_err();
    fs.set_fault(None);
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let jobs = q.dequeue_batch(3).expect("the queue still serves");
    let got: Vec<_> = jobs.iter().map(|j| (j.payload(), j.attempt())).collect();
    assert_eq!(got, [(&b"a"[..], 1), (&b"b"[..], 1), (&b"c"[..], 1)]);
}

fn open_with(fs: &SimFs, durability: Durability) -> Queue {
    let opts = Options::default()
        .durability(durability)
        .segment_size(1 << 20);
    Queue::open_on(Arc::new(fs.clone()), Path::new("/q"), opts).expect("open")
}

/// Every payload still queued, in delivery order, each acked.
fn drain(q: &Queue) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        got.push(job.payload().to_vec());
        q.ack(job.receipt()).unwrap();
    }
    got
}
