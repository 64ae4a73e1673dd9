//! `JobContext::provider_key` and the store id behind it (file
//! `STORE_ID`): unique across stores, stable across reopens, and a damaged
//! store id refused rather than silently replaced.

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use walq::worker::{JobContext, Outcome, WorkerPool};
use walq::{ErrorKind, ManualClock, Queue, RecoveryMode};

const STORE_ID: &str = "STORE_ID";

/// Runs the next job of `q` through a pool; returns its provider key.
fn key_of_next_job(q: &Queue) -> (u64, String) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let pool = WorkerPool::builder(q.clone())
        .workers(1)
        .poll_interval(Duration::from_millis(5))
        .start(move |ctx: &JobContext, _: &[u8]| {
            tx.lock()
                .unwrap()
                .send((ctx.id(), ctx.provider_key()))
                .unwrap();
            Outcome::done()
        })
        .unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("no job ran ({e}): {:?}", pool.stats()));
    pool.shutdown(Duration::from_secs(10));
    got
}

fn open(dir: &Path) -> Queue {
    common::open(dir, &ManualClock::new(1_000_000))
}

/// Found by review: job ids start at 1 in every store, and the key was
/// `walq-job-<id>`, so two servers each with their own queue and one
/// payment provider account handed it one key for two jobs, and the
/// provider answered the second with the first one's cached response.
#[test]
fn two_stores_give_their_first_jobs_different_keys() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (qa, qb) = (open(a.path()), open(b.path()));
    qa.enqueue(b"charge order 7").unwrap();
    qb.enqueue(b"charge order 9").unwrap();
    let (ida, ka) = key_of_next_job(&qa);
    let (idb, kb) = key_of_next_job(&qb);
    assert_eq!((ida, idb), (1, 1));
    assert_ne!(ka, kb, "the same key for two different jobs");
    // A consumer that dequeues by hand gets the pool's key.
    assert_eq!(qa.provider_key(ida), ka);
    assert_eq!(qb.provider_key(idb), kb);
    for k in [&ka, &kb] {
        let scope = k.strip_prefix("walq-").unwrap().strip_suffix("-1").unwrap();
        assert_eq!(scope.len(), 32, "{k}");
        assert!(scope.bytes().all(|c| c.is_ascii_hexdigit()), "{k}");
    }
}

/// The key of a job is the same on every attempt, across reopens: a job
/// delivered again after a crash hands the provider the same key.
#[test]
fn a_job_keeps_its_key_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.enqueue(b"first").unwrap();
    let (id, first) = key_of_next_job(&q);
    assert_eq!(id, 1);
    q.enqueue(b"second").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), 2);
    q.close().unwrap();
    drop((job, q));
    let q = open(dir.path());
    let (id, second) = key_of_next_job(&q);
    assert_eq!(id, 2, "the job leased before the reopen, delivered again");
    assert_eq!(
        first.strip_suffix("-1").unwrap(),
        second.strip_suffix("-2").unwrap(),
        "the store's scope changed across the reopen"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join(STORE_ID))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// A damaged store id would, replaced silently, change every job's key,
/// so a side effect already performed could be performed again: `Strict`
/// refuses it naming the file; `Salvage` draws a new one and says so.
#[test]
fn a_damaged_store_id_is_refused_and_salvage_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.enqueue(b"job").unwrap();
    q.close().unwrap();
    drop(q);
    let path = dir.path().join(STORE_ID);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let clock = ManualClock::new(1_000_000);
    let err = Queue::open_with(dir.path(), common::opts(&clock)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(STORE_ID), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
    let salvage = common::opts(&clock).recovery(RecoveryMode::Salvage);
    let q = Queue::open_with(dir.path(), salvage).unwrap();
    assert!(q.recovery_report().bytes_skipped >= 32);
    assert_ne!(std::fs::read(&path).unwrap(), bytes, "a new store id");
    assert_eq!(key_of_next_job(&q).0, 1, "the job is kept");
    drop(q);
    // The new one is read back as it is.
    let q = open(dir.path());
    assert_eq!(q.recovery_report().bytes_skipped, 0);
}

/// A store of an older build (no `STORE_ID`) opened on a full disk: the
/// open must not fail for want of 32 bytes (a drain needs it); the id
/// drawn is used and written by the close, so the keys of the jobs run
/// in that session stay the same afterwards.
#[test]
fn a_full_disk_does_not_stop_an_upgraded_store_from_opening() {
    use walq::vfs::{Fault, FaultOp, SimFs, Vfs};
    let fs = SimFs::new();
    let clock = ManualClock::new(1_000_000);
    let open_sim = |fs: &SimFs| {
        Queue::open_on(
            std::sync::Arc::new(fs.clone()),
            Path::new("/q"),
            common::opts(&clock),
        )
    };
    let q = open_sim(&fs).unwrap();
    q.enqueue(b"one").unwrap();
    q.close().unwrap();
    drop(q);
    fs.remove(&Path::new("/q").join(STORE_ID)).unwrap();
    fs.set_fault(Some(walq::vfs::Fault {
        op: FaultOp::Create,
        at: fs.op_count(FaultOp::Create),
        forever: true,
        kind: std::io::ErrorKind::StorageFull,
    }));
    let q = open_sim(&fs).expect("opens on a full disk");
    let (id, during) = key_of_next_job(&q);
    assert_eq!(id, 1);
    assert!(fs.read_file(&Path::new("/q").join(STORE_ID)).is_none());
    fs.set_fault(None::<Fault>);
    // Enqueued once the pool is gone: it would have run it too.
    q.enqueue(b"two").unwrap();
    q.close().unwrap();
    drop(q);
    assert!(fs.read_file(&Path::new("/q").join(STORE_ID)).is_some());
    let q = open_sim(&fs).unwrap();
    let (id, after) = key_of_next_job(&q);
    assert_eq!(id, 2);
    assert_eq!(
        during.strip_suffix("-1").unwrap(),
        after.strip_suffix("-2").unwrap(),
        "the id used on the full disk is the one written"
    );
}
