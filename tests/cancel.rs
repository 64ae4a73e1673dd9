//! `Queue::cancel`: a job that waits to run (fresh, delayed, waiting for
//! a retry, blocked in its group, of any level and queue) is removed and
//! never delivered; its status reads `Purged`, never `Done`, across
//! reopens (from the checkpoint and by a full scan); a leased job, a dead
//! letter, a finished job, another queue's job and an unknown id are
//! refused and nothing changes; a cancel cut between its completion
//! marker and its log record leaves the job queued. The model test
//! (`tests/model.rs`) and the fault sweep (`io_faults::cancel_faults`)
//! mix cancels into every other operation.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use walq::vfs::{Fault, FaultOp, SimFs};
use walq::{EnqueueOptions, ErrorKind, JobStatus, ManualClock, Priority, Queue, Retry, Store};

fn put(q: &Queue, payload: &str, o: EnqueueOptions) -> u64 {
    q.enqueue_with(payload.as_bytes(), o).expect("enqueue").id
}

/// Ids of every job delivered from now on, acked as they come.
fn drain_ids(q: &Queue) -> Vec<u64> {
    common::drain(q).into_iter().map(|(id, _, _)| id).collect()
}

fn is_purged(q: &Queue, id: u64) -> bool {
    matches!(q.status(id).expect("status"), JobStatus::Purged { .. })
}

#[test]
fn a_cancelled_job_is_never_delivered_and_reads_purged_after_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let ids: Vec<u64> = (0..6)
        .map(|i| put(&q, &format!("job {i}"), EnqueueOptions::new()))
        .collect();
    let delayed = put(
        &q,
        "later",
        EnqueueOptions::new().delay(Duration::from_secs(60)),
    );
    let urgent = put(
        &q,
        "urgent",
        EnqueueOptions::new().priority(Priority::Urgent),
    );
    for id in [ids[1], ids[4], delayed, urgent] {
        q.cancel(id).expect("cancel");
        assert!(is_purged(&q, id), "job {id}");
    }
    q.check_invariants();
    let stats = q.stats();
    assert_eq!((stats.ready, stats.delayed), (4, 0), "{stats:?}");
    q.close().unwrap();
    for scan in [false, true] {
        if scan {
            std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
        }
        let q = common::open(dir.path(), &clock);
        q.check_invariants();
        assert_eq!(q.stats().ready, 4, "scan {scan}");
        for id in [ids[1], ids[4], delayed, urgent] {
            assert!(is_purged(&q, id), "job {id} after a reopen (scan {scan})");
        }
        q.close().unwrap();
    }
    let q = common::open(dir.path(), &clock);
    clock.advance(Duration::from_secs(120));
    assert_eq!(drain_ids(&q), vec![ids[0], ids[2], ids[3], ids[5]]);
}

#[test]
fn a_job_waiting_for_its_retry_is_cancelled_and_a_leased_one_only_once_its_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let a = put(&q, "a", EnqueueOptions::new());
    let b = put(&q, "b", EnqueueOptions::new());
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), a);
    let e = q.cancel(a).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InFlight, "{e}");
    assert!(e.to_string().contains(&format!("job {a} is leased")), "{e}");
    q.nack(
        job.receipt(),
        Retry::After(Duration::from_secs(10)),
        "later",
    )
    .unwrap();
    q.cancel(a)
        .expect("a job waiting for its retry is cancelled");
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), b);
    // The lease runs out (30 s): the job is queued again, and cancelled.
    clock.advance(Duration::from_secs(31));
    q.cancel(b).expect("a job whose lease ended is cancelled");
    let e = q.ack(job.receipt()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LeaseLost, "{e}");
    assert!(q.dequeue().unwrap().is_none());
    assert!(is_purged(&q, a) && is_purged(&q, b));
    q.check_invariants();
}

#[test]
fn a_cancelled_group_head_frees_the_next_job_and_a_blocked_one_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let g = || EnqueueOptions::new().group("customer-7");
    let (first, second, third, fourth) = (
        put(&q, "1", g()),
        put(&q, "2", g()),
        put(&q, "3", g()),
        put(&q, "4", g()),
    );
    q.cancel(third).expect("a blocked job is cancelled");
    q.cancel(first).expect("the head is cancelled");
    q.check_invariants();
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), second, "the next job holds the group now");
    assert!(
        q.dequeue().unwrap().is_none(),
        "one job of the group at a time"
    );
    q.ack(job.receipt()).unwrap();
    assert_eq!(drain_ids(&q), vec![fourth]);
}

#[test]
fn cancel_refuses_what_does_not_wait_in_its_queue_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let q = store.default_queue();
    let mail = store.queue("mail").unwrap();
    let in_mail = put(&mail, "to mail", EnqueueOptions::new());
    let dead = put(&q, "dies", EnqueueOptions::new().max_attempts(1));
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "boom").unwrap();
    let done = put(&q, "done", EnqueueOptions::new());
    let job = q.dequeue().unwrap().unwrap();
    q.ack(job.receipt()).unwrap();
    let cases = [
        (&q, in_mail, "another queue's"),
        (&q, dead, "purge it"),
        (&q, done, "finished"),
        (&q, 999, "never issued"),
        (&q, 0, "never issued"),
    ];
    for (handle, id, says) in cases {
        let e = handle.cancel(id).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "job {id}: {e}");
        assert!(e.to_string().contains(says), "job {id}: {e}");
    }
    assert!(matches!(q.status(dead).unwrap(), JobStatus::Dead { .. }));
    assert!(matches!(q.status(done).unwrap(), JobStatus::Done { .. }));
    assert_eq!(mail.stats().ready, 1);
    mail.cancel(in_mail)
        .expect("through its own queue's handle");
    assert!(mail.dequeue().unwrap().is_none());
}

#[test]
fn a_cancelled_jobs_key_stays_known_for_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let keyed = || EnqueueOptions::new().idempotency_key("invoice-12");
    let first = q.enqueue_with(b"a", keyed()).unwrap();
    q.cancel(first.id).unwrap();
    let again = q.enqueue_with(b"b", keyed()).unwrap();
    assert!(
        again.duplicate,
        "inside the window the key is the cancelled job's"
    );
    assert_eq!(again.id, first.id);
    assert!(q.dequeue().unwrap().is_none());
}

/// A cancel whose Ack record fails (a full disk) after its completion
/// marker was written: the call fails, and after a reopen the job is
/// queued as before; acked later, it reads `Done`, not `Purged`.
#[test]
fn a_cancel_cut_before_its_log_record_leaves_the_job_queued() {
    let clock = ManualClock::new(1_000_000);
    let opts = || common::opts(&clock);
    let dir = Path::new("/q");
    // The cancel's writes in turn (the completion file's, then the log's)
    // until the one that fails is its log record's.
    let (fs, id) = (0..8)
        .find_map(|k| {
            let fs = SimFs::new();
            let q = Queue::open_on(Arc::new(fs.clone()), dir, opts()).unwrap();
            let id = put(&q, "keep me", EnqueueOptions::new());
            q.sync().unwrap();
            fs.set_fault(Some(Fault {
                op: FaultOp::Write,
                at: fs.op_count(FaultOp::Write) + k,
                forever: true,
                kind: std::io::ErrorKind::StorageFull,
            }));
            let e = q.cancel(id).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Io, "{e}");
            fs.set_fault(None);
            e.to_string().contains("writing record").then_some((fs, id))
        })
        .expect("a cancel writes its log record after its marker");
    let q = Queue::open_on(Arc::new(fs.clone()), dir, opts()).unwrap();
    assert_eq!(q.status(id).unwrap(), JobStatus::Queued { attempts: 0 });
    let job = q.dequeue().unwrap().expect("the job is still queued");
    assert_eq!(job.payload(), b"keep me");
    q.ack(job.receipt()).unwrap();
    assert!(matches!(q.status(id).unwrap(), JobStatus::Done { .. }));
}

/// A cancel on a full disk that first releases an expired lease (its
/// Nack record is written, as a dequeue would) is still refused with
/// ENOSPC without poisoning the queue: the released lease is whole once
/// its record is written, so the cancel's failure after it changes
/// nothing. Before, every cancel on a full disk poisoned the queue once
/// any lease had run out.
#[test]
fn a_cancel_on_a_full_disk_after_an_expired_lease_does_not_poison() {
    // The cancel's writes in turn (the released lease's record, then the
    // completion file's growth) until the one that fails is the growth.
    let found = (0..8).find_map(|k| {
        let clock = ManualClock::new(1_000_000);
        let fs = SimFs::new();
        let q =
            Queue::open_on(Arc::new(fs.clone()), Path::new("/q"), common::opts(&clock)).unwrap();
        let waiting = put(&q, "waiting", EnqueueOptions::new());
        let leased = put(&q, "leased", EnqueueOptions::new());
        let first = q.dequeue().unwrap().expect("a job");
        assert_eq!(first.id(), waiting);
        q.nack(
            first.receipt(),
            Retry::After(Duration::from_secs(3600)),
            "later",
        )
        .unwrap();
        let job = q.dequeue().unwrap().expect("the second job");
        assert_eq!(job.id(), leased);
        q.sync().unwrap();
        clock.advance(Duration::from_secs(60));
        fs.set_fault(Some(Fault {
            op: FaultOp::Write,
            at: fs.op_count(FaultOp::Write) + k,
            forever: true,
            kind: std::io::ErrorKind::StorageFull,
        }));
        let e = q.cancel(waiting).expect_err("a write fails");
        assert_eq!(e.kind(), ErrorKind::Io, "{e}");
        e.to_string()
            .contains("growing completion file")
            .then_some((q, fs, waiting, leased))
    });
    let (q, fs, waiting, leased) =
        found.expect("a cancel grows the completion file after the lease's record");
    // Not poisoned: once there is room, the released job is served again
    // and the cancel goes through (a poisoned queue refuses both until
    // it is reopened).
    fs.set_fault(None);
    let again = q.dequeue().expect("dequeue after the refused cancel");
    assert_eq!(again.expect("the released job").id(), leased);
    q.cancel(waiting).expect("cancel once there is room");
    assert!(is_purged(&q, waiting));
}

/// A cancel whose completion marker makes the completion file due for
/// compaction (results whose window ended dominate it) on a disk too full
/// for the rewrite: the compaction is left for later, the cancel stands,
/// and the queue keeps serving. Before, the failed rewrite failed the
/// cancel after its marker was written, and that poisoned the queue.
#[test]
fn a_cancel_whose_compaction_finds_no_room_stands() {
    let clock = ManualClock::new(1_000_000);
    let fs = SimFs::new();
    let opts = common::opts(&clock).dedup_window(Duration::from_secs(60));
    let q = Queue::open_on(Arc::new(fs.clone()), Path::new("/q"), opts).unwrap();
    // 1.2 MB of results, more than the compaction's 1 MiB floor.
    for i in 0..300u32 {
        put(&q, &format!("job {i}"), EnqueueOptions::new());
        let job = q.dequeue().unwrap().expect("the job");
        q.ack_with_result(job.receipt(), &[7u8; 4000]).unwrap();
    }
    let victim = put(&q, "cancel me", EnqueueOptions::new());
    let other = put(&q, "keep me", EnqueueOptions::new());
    q.sync().unwrap();
    let (_, before) = q.completion_footprint();
    clock.advance(Duration::from_secs(120));
    // No file can be created: the rewrite's `done.rec.tmp` fails.
    fs.set_fault(Some(Fault {
        op: FaultOp::Create,
        at: fs.op_count(FaultOp::Create),
        forever: true,
        kind: std::io::ErrorKind::StorageFull,
    }));
    q.cancel(victim)
        .expect("the cancel stands without its compaction");
    assert!(is_purged(&q, victim));
    let (_, during) = q.completion_footprint();
    assert!(during >= before, "not compacted yet: {during} < {before}");
    let job = q.dequeue().expect("not poisoned").expect("the other job");
    assert_eq!(job.id(), other);
    // Room again: a compaction stopped by a full disk is tried again
    // once the file has grown a chunk (not at every record while the disk
    // stays full), and then it goes through.
    fs.set_fault(None);
    q.ack_with_result(job.receipt(), b"ok").unwrap();
    for i in 0..20u32 {
        put(&q, &format!("later {i}"), EnqueueOptions::new());
        let job = q.dequeue().unwrap().expect("the job");
        q.ack_with_result(job.receipt(), &[8u8; 4000]).unwrap();
    }
    let (_, after) = q.completion_footprint();
    assert!(after < before / 4, "compacted: {after} of {before} bytes");
    assert!(is_purged(&q, victim));
}
