//! Guarantee 7: dead letters keep payload, attempts and last error; they
//! can be listed, read, redriven and purged, and survive restarts.

mod common;

use common::{drain, open};
use walq::{ErrorKind, ManualClock};

#[test]
fn fail_list_read_redrive_purge_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let (x, y, z) = {
        let q = open(dir.path(), &clock);
        let x = q.enqueue(b"payload x").unwrap();
        let y = q.enqueue(b"payload y").unwrap();
        let z = q.enqueue(b"payload z").unwrap();
        for _ in 0..3 {
            let job = q.dequeue().unwrap().unwrap();
            let text = format!("bad input in job {}", job.id());
            q.fail(job.receipt(), &text).unwrap();
        }
        assert_eq!(q.stats().dead, 3);
        assert_eq!(q.stats().dead_lettered_total, 3);
        (x, y, z)
    };
    let q = open(dir.path(), &clock);
    assert_eq!(q.dead_letter_ids(), vec![x, y, z]);
    let all = q.dead_letters().unwrap();
    assert_eq!(all.len(), 3);
    let dx = q.dead_letter(x).unwrap().unwrap();
    assert_eq!(dx.payload, b"payload x");
    assert_eq!(dx.attempts, 1);
    assert_eq!(dx.error, format!("bad input in job {x}"));
    assert!(q.dequeue().unwrap().is_none());

    // Redrive one: back to ready with attempts reset, same id.
    q.redrive(x).unwrap();
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(
        (job.id(), job.attempt(), job.payload()),
        (x, 1, &b"payload x"[..])
    );
    q.ack(job.receipt()).unwrap();
    assert!(q.dead_letter(x).unwrap().is_none());

    // Purge one.
    q.purge(y).unwrap();
    assert_eq!(q.purge(y).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(q.redrive(y).unwrap_err().kind(), ErrorKind::NotFound);
    drop(q);

    let q = open(dir.path(), &clock);
    assert_eq!(q.dead_letter_ids(), vec![z], "x={x} y={y} z={z}");
    assert_eq!(q.redrive_all().unwrap(), 1);
    let got = drain(&q);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, z);
    drop(q);
    let q = open(dir.path(), &clock);
    assert!(q.dead_letter_ids().is_empty());
    assert!(
        q.dequeue().unwrap().is_none(),
        "redriven and acked stays gone"
    );
}

#[test]
fn purge_all_and_many_letters_compact_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let payload = vec![7u8; 4000];
    for round in 0..3 {
        for _ in 0..200 {
            q.enqueue(&payload).unwrap();
        }
        while let Some(job) = q.dequeue().unwrap() {
            q.fail(job.receipt(), "nope").unwrap();
        }
        assert_eq!(q.stats().dead, 200);
        if round == 1 {
            assert_eq!(q.redrive_all().unwrap(), 200);
            while let Some(job) = q.dequeue().unwrap() {
                q.fail(job.receipt(), "still no").unwrap();
            }
        }
        assert_eq!(q.purge_all().unwrap(), 200);
    }
    let s = q.stats();
    assert_eq!(s.dead, 0);
    // Removed letters do not accumulate: the file was rewritten.
    let dead_len = std::fs::metadata(dir.path().join("dead.wal"))
        .unwrap()
        .len();
    assert!(dead_len < 2 << 20, "dead.wal is {dead_len} bytes");
    drop(q);
    let q = open(dir.path(), &clock);
    assert!(q.dead_letter_ids().is_empty());
}

/// A crash in a redrive after its enqueue record is durable but before the
/// dead letter's removal: the next open finds the job both redriven (in
/// the log) and dead (in `dead.wal`), keeps it live and drops the stale
/// dead letter. Its idempotency key must stay homed at the enqueue record:
/// it was homed in the dead letter being dropped, so it was forgotten, and
/// the job's retry was enqueued again (found by the kill -9 harness).
fn a_redrive_cut_short_keeps_the_jobs_key(from_checkpoint: bool) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let key = || walq::EnqueueOptions::new().idempotency_key("once");
    let dead_wal = dir.path().join("dead.wal");
    let id = {
        let q = open(dir.path(), &clock);
        let id = q.enqueue_with(b"job", key().max_attempts(1)).unwrap().id;
        let job = q.dequeue().unwrap().unwrap();
        q.fail(job.receipt(), "boom").unwrap();
        q.close().unwrap();
        id
    };
    let dead_before = std::fs::read(&dead_wal).unwrap();
    {
        let q = open(dir.path(), &clock);
        q.redrive(id).unwrap();
        q.close().unwrap();
    }
    // The redrive's removal of the dead letter did not reach the disk.
    std::fs::write(&dead_wal, &dead_before).unwrap();
    if !from_checkpoint {
        std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    }
    let q = open(dir.path(), &clock);
    assert_eq!(q.recovery_report().checkpoint_used, from_checkpoint);
    assert!(q.dead_letter_ids().is_empty(), "the redrive held");
    let dup = q.enqueue_with(b"retry", key()).unwrap();
    assert!(dup.duplicate && dup.id == id, "the key is known while live");
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), id);
    q.ack(job.receipt()).unwrap();
    let dup = q.enqueue_with(b"retry", key()).unwrap();
    assert!(dup.duplicate && dup.id == id, "the key outlives the job");
    q.close().unwrap();
    drop(q);
    let q = open(dir.path(), &clock);
    assert!(q.recovery_report().checkpoint_used);
    let dup = q.enqueue_with(b"retry", key()).unwrap();
    assert!(dup.duplicate && dup.id == id, "and the reopen after it");
}

#[test]
fn a_redrive_cut_short_keeps_the_jobs_key_after_a_scan() {
    a_redrive_cut_short_keeps_the_jobs_key(false);
}

#[test]
fn a_redrive_cut_short_keeps_the_jobs_key_from_the_checkpoint() {
    a_redrive_cut_short_keeps_the_jobs_key(true);
}

/// `enqueue_dead_letter` adds a dead letter without delivering anything:
/// jobs already in the queue (ready, delayed and falling due, waiting for
/// a retry) keep their attempts and places, however many letters come in.
/// (`walq import` made dead letters by leasing and failing jobs; a job of
/// the queue leased on the way was nacked, an attempt used per letter,
/// until it died.)
#[test]
fn importing_dead_letters_touches_no_other_job() {
    use std::time::Duration;
    use walq::{EnqueueOptions, Retry};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let ready = q.enqueue(b"ready").unwrap();
    let delayed = q
        .enqueue_with(
            b"delayed",
            EnqueueOptions::new()
                .delay(Duration::from_millis(5))
                .max_attempts(3),
        )
        .unwrap()
        .id;
    let retried = q.enqueue(b"retried").unwrap();
    let mut imported = Vec::new();
    for i in 0..50u64 {
        if i == 10 {
            // One job waits for its retry; the delayed one falls due.
            let first = q.dequeue().unwrap().unwrap();
            let second = q.dequeue().unwrap().unwrap();
            assert_eq!((first.id(), second.id()), (ready, retried));
            for job in [first, second] {
                q.nack(job.receipt(), Retry::After(Duration::ZERO), "again")
                    .unwrap();
            }
            clock.advance(Duration::from_millis(10));
        }
        let payload = format!("letter {i}");
        let added = q
            .enqueue_dead_letter(
                payload.as_bytes(),
                EnqueueOptions::new(),
                "failed elsewhere",
            )
            .unwrap();
        assert!(!added.duplicate);
        imported.push(added.id);
    }
    assert_eq!(q.dead_letter_ids(), imported);
    let mut got = drain(&q);
    got.sort();
    assert_eq!(
        got,
        vec![
            (ready, b"ready".to_vec(), 2),
            (delayed, b"delayed".to_vec(), 1),
            (retried, b"retried".to_vec(), 2),
        ],
        "each job delivered with the attempts it had, none dead"
    );
    assert_eq!(q.dead_letter_ids(), imported);
}

/// What an imported dead letter keeps (payload, error, key, level, its
/// queue), that a key already known adds nothing, that it survives a
/// reopen and that a redrive delivers it.
#[test]
fn an_imported_dead_letter_keeps_what_it_was_given() {
    use walq::{EnqueueOptions, Priority, Store};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let opts = EnqueueOptions::new()
        .idempotency_key("invoice-9")
        .priority(Priority::Urgent);
    let id = {
        let store = Store::open_with(dir.path(), common::opts(&clock)).unwrap();
        let q = store.queue("billing").unwrap();
        let first = q
            .enqueue_dead_letter(b"send invoice 9", opts.clone(), "smtp refused")
            .unwrap();
        let again = q
            .enqueue_dead_letter(b"send invoice 9", opts.clone(), "smtp refused")
            .unwrap();
        assert!(again.duplicate && again.id == first.id);
        let dup = q.enqueue_with(b"send invoice 9", opts.clone()).unwrap();
        assert!(dup.duplicate && dup.id == first.id, "the key is known");
        assert!(q.dequeue().unwrap().is_none(), "nothing to deliver");
        store.close().unwrap();
        first.id
    };
    let store = Store::open_with(dir.path(), common::opts(&clock)).unwrap();
    let q = store.queue("billing").unwrap();
    let d = q.dead_letter(id).unwrap().expect("the dead letter");
    assert_eq!(d.payload, b"send invoice 9");
    assert_eq!(d.error, "smtp refused");
    assert_eq!(d.key.as_deref(), Some(&b"invoice-9"[..]));
    assert_eq!(d.queue, "billing");
    assert_eq!(d.priority, Priority::Urgent);
    assert_eq!(d.attempts, 1, "counted as one attempt, as a failed job");
    q.redrive(id).unwrap();
    let job = q.dequeue().unwrap().expect("redriven");
    assert_eq!(
        (job.id(), job.attempt(), job.payload()),
        (id, 1, &b"send invoice 9"[..])
    );
}

/// A `dead.wal` compaction whose directory sync fails after the rename
/// poisons the queue: the dead letters and removals written to the new
/// file after it would be lost with it if a power cut brought the old
/// name back (two reviews found it: a purge that returned `Ok` came back
/// and a failed job's letter was gone, the log saying it finished). So
/// once the fault hits, nothing more returns `Ok`, and after a power cut
/// the dead letters are what they were when it hit.
#[test]
fn a_compaction_whose_directory_sync_fails_poisons_the_queue() {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;
    use walq::vfs::{Fault, FaultOp, SimFs, Vfs};
    use walq::{Durability, Options};
    let opts = |clock: &ManualClock| {
        Options::default()
            .segment_size(64 << 20)
            .durability(Durability::Sync)
            .max_attempts(1)
            .checkpoint_every(0)
            .visibility_timeout(Duration::from_secs(3600))
            .clock(clock.clone())
    };
    let dir = Path::new("/q");
    for k in 0..8u64 {
        let fs = SimFs::new();
        fs.create_dir_all(dir, 0o700).unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let q = walq::Queue::open_on(Arc::new(fs.clone()), dir, opts(&clock)).unwrap();
        let big = vec![7u8; 64 << 10];
        let ids: Vec<u64> = (0..40).map(|_| q.enqueue(&big).unwrap()).collect();
        for _ in 0..40 {
            let j = q.dequeue().unwrap().unwrap();
            q.fail(j.receipt(), "boom").unwrap();
        }
        let late = q.enqueue(b"late job").unwrap();
        let mut hit = false;
        for &id in ids.iter().take(35) {
            q.wait_upkeep();
            let at = fs.op_count(FaultOp::Sync) + k;
            let kind = std::io::ErrorKind::Other;
            fs.set_fault(Some(Fault {
                op: FaultOp::Sync,
                at,
                forever: false,
                kind,
            }));
            let purged = q.purge(id);
            q.wait_upkeep();
            fs.set_fault(None);
            if purged.is_err() {
                break;
            }
            let noted = q.stats().maintenance_error.unwrap_or_default();
            if noted.contains("compacting dead letters") {
                continue;
            }
            if q.enqueue(b"probe").is_err() {
                hit = true;
                break;
            }
        }
        if !hit {
            continue;
        }
        let err = q.dequeue().expect_err("poisoned");
        assert_eq!(err.kind(), ErrorKind::Poisoned, "{err}");
        assert!(err.to_string().contains("syncing directory"), "{err}");
        let before = q.dead_letter_ids();
        let crashed = fs.power_loss(1);
        drop(q);
        let q = walq::Queue::open_on(Arc::new(crashed), dir, opts(&clock)).unwrap();
        // The letters at the fault (old or new file: the same letters),
        // and the late job still waiting, never finished.
        assert_eq!(q.dead_letter_ids(), before);
        assert!(matches!(
            q.status(late).unwrap(),
            walq::JobStatus::Queued { .. }
        ));
        return;
    }
    panic!("no fault hit the compaction's directory sync");
}
