//! `Queue::release`: a leased job given back, ready now, with the attempt
//! its lease counted taken back (a consumer that stops is not the job's
//! failure). Its two records (the Lease again with one attempt fewer, and
//! a Nack due now) are one framed batch: a crash or a failed write keeps
//! both or neither, so the job is never lost and its attempts are either
//! given back or still counted, never anything else.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use walq::vfs::{Fault, FaultOp, SimFs, Vfs};
use walq::{Durability, ErrorKind, JobStatus, ManualClock, Options, Queue};

/// A job released on its last attempt stays queued (a nack would
/// dead-letter it), comes back with the same attempt number, and reads
/// so after a reopen that replays the log.
#[test]
fn a_released_last_attempt_stays_queued_through_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let opts = || common::opts(&clock).max_attempts(1).checkpoint_every(0);
    let q = Queue::open_with(dir.path(), opts()).unwrap();
    let id = q.enqueue(b"resize video 42").unwrap();
    let job = q.dequeue().unwrap().expect("the job");
    assert_eq!((job.attempt(), job.max_attempts()), (1, 1));
    q.release(job.receipt()).unwrap();
    assert_eq!(q.status(id).unwrap(), JobStatus::Queued { attempts: 0 });
    assert_eq!(q.stats().dead, 0, "a release never dead-letters");
    let err = q.release(job.receipt()).expect_err("a spent receipt");
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    drop(q);
    // A crash (no clean close): the open replays the release's records.
    let _ = std::fs::remove_file(dir.path().join("CHECKPOINT"));
    let q = Queue::open_with(dir.path(), opts()).unwrap();
    assert_eq!(q.status(id).unwrap(), JobStatus::Queued { attempts: 0 });
    let again = q.dequeue().unwrap().expect("the job again");
    assert_eq!((again.id(), again.attempt()), (id, 1));
    q.ack(again.receipt()).unwrap();
}

/// A release whose lease ran out changes nothing.
#[test]
fn an_expired_lease_is_not_released() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = Queue::open_with(dir.path(), common::opts(&clock)).unwrap();
    let id = q.enqueue(b"job").unwrap();
    let job = q.dequeue().unwrap().expect("the job");
    clock.advance(Duration::from_secs(31));
    let err = q.release(job.receipt()).expect_err("the lease ran out");
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    // The expiry counted the attempt; the release took nothing back.
    assert_eq!(q.status(id).unwrap(), JobStatus::Queued { attempts: 1 });
}

fn sim_opts(clock: &ManualClock) -> Options {
    common::opts(clock)
        .durability(Durability::Sync)
        .max_attempts(2)
        .checkpoint_every(0)
}

/// What a reopened queue says of the job: its attempts while queued.
fn attempts_after_reopen(fs: &SimFs, dir: &Path, clock: &ManualClock, id: u64) -> u32 {
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let q = Queue::open_on(vfs, dir, sim_opts(clock)).expect("reopen");
    match q.status(id).unwrap() {
        JobStatus::Queued { attempts } => attempts,
        other => panic!("job {id} after a cut release: {other:?}"),
    }
}

/// Every write and sync of a release failed in turn: a release that
/// returned `Ok` is given back for good; one that failed leaves the job
/// queued with its attempt counted (the next open releases the lease) or
/// given back, never lost, never dead, never anything in between; and
/// after a power cut the same holds.
#[test]
fn a_release_cut_at_any_write_or_sync_keeps_the_job() {
    let dir = Path::new("/q");
    let clock = ManualClock::new(1_000_000);
    let mut cut = 0;
    for op in [FaultOp::Write, FaultOp::Sync] {
        for k in 0..8 {
            let fs = SimFs::new();
            let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
            let q = Queue::open_on(vfs, dir, sim_opts(&clock)).unwrap();
            let id = q.enqueue(b"job").unwrap();
            let job = q.dequeue().unwrap().expect("the job");
            fs.set_fault(Some(Fault {
                op,
                at: fs.op_count(op) + k,
                forever: false,
                kind: std::io::ErrorKind::Other,
            }));
            let released = q.release(job.receipt());
            fs.set_fault(None);
            drop(q);
            let attempts = attempts_after_reopen(&fs, dir, &clock, id);
            let lost = attempts_after_reopen(&fs.power_loss(k), dir, &clock, id);
            match released {
                Ok(()) => assert_eq!((attempts, lost), (0, 0), "{op:?} {k}: released"),
                Err(e) => {
                    cut += 1;
                    assert!(
                        attempts <= 1 && lost <= 1,
                        "{op:?} {k}: {e}: {attempts} {lost}"
                    );
                }
            }
        }
    }
    assert!(cut > 0, "no fault hit a release");
}
