//! Pausing a queue (`Queue::pause`, file `PAUSED`): nothing delivered until
//! it is resumed, across restarts and power cuts; enqueues and settling
//! go on; a damaged file and a full disk are errors that name the file.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use walq::vfs::{Fault, FaultOp, SimFs};
use walq::worker::MultiQueue;
use walq::{ErrorKind, ManualClock, Queue, RecoveryMode, Retry, Store, PAUSED_FILE};

const T0: u64 = 1_750_000_000_000;

fn store_on(fs: &SimFs, clock: &ManualClock) -> Store {
    Store::open_on(Arc::new(fs.clone()), Path::new("/q"), common::opts(clock)).unwrap()
}

fn payloads(q: &Queue) -> Vec<Vec<u8>> {
    common::drain(q).into_iter().map(|(_, p, _)| p).collect()
}

/// A paused queue takes enqueues and settles the jobs already leased,
/// but no dequeue of any kind gets a job; resumed, it delivers them in
/// their order.
#[test]
fn a_paused_queue_delivers_nothing_and_takes_enqueues() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = common::open(dir.path(), &clock);
    q.enqueue(b"leased").unwrap();
    let leased = q.dequeue().unwrap().unwrap();
    q.enqueue(b"one").unwrap();
    q.pause().unwrap();
    assert!(q.is_paused());
    q.pause().unwrap();
    q.enqueue(b"two").unwrap();
    assert!(q.dequeue().unwrap().is_none());
    assert!(q.dequeue_batch(10).unwrap().is_empty());
    assert!(q
        .dequeue_timeout(Duration::from_millis(1))
        .unwrap()
        .is_none());
    let stats = q.stats();
    assert!(stats.paused);
    assert_eq!((stats.ready, stats.in_flight), (2, 1));
    q.nack(leased.receipt(), Retry::After(Duration::ZERO), "")
        .unwrap();
    assert!(q.dequeue().unwrap().is_none(), "a retry waits too");
    q.resume().unwrap();
    assert!(!q.is_paused() && !q.stats().paused);
    assert_eq!(payloads(&q), [&b"leased"[..], b"one", b"two"]);
}

/// A lease that runs out in a paused queue puts its job back to wait: it
/// is not delivered again until the queue is resumed.
#[test]
fn an_expired_lease_of_a_paused_queue_waits_for_the_resume() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = common::open(dir.path(), &clock);
    q.enqueue(b"job").unwrap();
    let first = q.dequeue().unwrap().unwrap();
    q.pause().unwrap();
    clock.advance(Duration::from_secs(31));
    assert!(q.dequeue().unwrap().is_none());
    assert_eq!(q.stats().in_flight, 0, "the lease ended");
    assert_eq!(
        q.ack(first.receipt()).unwrap_err().kind(),
        ErrorKind::LeaseLost
    );
    q.resume().unwrap();
    let again = q.dequeue().unwrap().unwrap();
    assert_eq!((again.id(), again.attempt()), (first.id(), 2));
}

/// The pause is written before it takes effect: it holds after a clean
/// close, and after a power cut right after `pause` returned; a resume
/// likewise.
#[test]
fn a_pause_holds_across_a_restart_and_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = common::open(dir.path(), &clock);
    q.enqueue(b"job").unwrap();
    q.pause().unwrap();
    q.close().unwrap();
    drop(q);
    let q = common::open(dir.path(), &clock);
    assert!(q.is_paused());
    assert!(q.dequeue().unwrap().is_none());
    drop(q);

    let fs = SimFs::new();
    let store = store_on(&fs, &clock);
    let q = store.default_queue();
    q.enqueue(b"job").unwrap();
    q.sync().unwrap();
    q.pause().unwrap();
    let cut = fs.power_loss(1);
    drop((q, store));
    let store = store_on(&cut, &clock);
    let q = store.default_queue();
    assert!(q.is_paused(), "paused after the cut");
    assert!(q.dequeue().unwrap().is_none());
    q.resume().unwrap();
    let cut = cut.power_loss(2);
    drop((q, store));
    let store = store_on(&cut, &clock);
    assert!(!store.default_queue().is_paused(), "resumed after the cut");
    assert_eq!(payloads(&store.default_queue()), [b"job"]);
}

/// Pausing one queue leaves the others of the store delivering, a
/// `MultiQueue` serves only its queues that are not paused, and the
/// store's stats say which queues are paused.
#[test]
fn pausing_one_queue_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = Store::open_with(dir.path(), common::opts(&clock)).unwrap();
    let (emails, reports) = (
        store.queue("emails").unwrap(),
        store.queue("reports").unwrap(),
    );
    for q in [&emails, &reports, &store.default_queue()] {
        q.enqueue(b"a").unwrap();
        q.enqueue(b"b").unwrap();
    }
    emails.pause().unwrap();
    assert!(!reports.is_paused() && !store.default_queue().is_paused());
    let paused: Vec<(String, bool)> = store
        .stats()
        .queues
        .into_iter()
        .map(|q| (q.name, q.paused))
        .collect();
    let want = [("default", false), ("emails", true), ("reports", false)];
    let want: Vec<(String, bool)> = want.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    assert_eq!(paused, want);
    let multi = MultiQueue::new(&store)
        .queue("emails", 5)
        .unwrap()
        .queue("reports", 1)
        .unwrap();
    let mut from = Vec::new();
    while let Some((name, job)) = multi
        .lease_from(Duration::from_secs(30), Duration::ZERO)
        .unwrap()
    {
        from.push(name);
        store
            .queue(&from[from.len() - 1])
            .unwrap()
            .ack(job.receipt())
            .unwrap();
    }
    assert_eq!(from, ["reports", "reports"]);
    assert_eq!(payloads(&store.default_queue()).len(), 2);
    emails.resume().unwrap();
    assert_eq!(payloads(&emails), [b"a", b"b"]);
}

/// A consumer waiting for a job of a paused queue is woken by the resume
/// (its wait is an hour, its queue's visibility timeout an hour: without
/// the wake it would sleep the hour).
#[test]
fn a_waiting_consumer_is_woken_by_the_resume() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let opts = common::opts(&clock).visibility_timeout(Duration::from_secs(3600));
    let q = Queue::open_with(dir.path(), opts).unwrap();
    q.enqueue(b"job").unwrap();
    q.pause().unwrap();
    let waiter = {
        let q = q.clone();
        std::thread::spawn(move || q.dequeue_timeout(Duration::from_secs(3600)))
    };
    // Give the consumer time to start waiting (it finds the queue paused
    // either way: the resume wakes it, or it finds the job at once).
    std::thread::sleep(Duration::from_millis(50));
    q.resume().unwrap();
    // A guard against a hang (the hour), not a timing assertion.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !waiter.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the resume woke no one"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let job = waiter.join().unwrap().unwrap().expect("woken with the job");
    assert_eq!(job.payload(), b"job");
}

/// A queue paused by a handle that is gone, and never given a job, keeps
/// its pause (the name's definition is not freed while it is paused), in
/// this process and the next.
#[test]
fn a_paused_queue_without_jobs_or_handles_stays_paused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = Store::open_with(dir.path(), common::opts(&clock)).unwrap();
    store.queue("idle").unwrap().pause().unwrap();
    // Listing the queues frees definitions nothing refers to.
    assert!(store
        .stats()
        .queues
        .iter()
        .any(|q| q.name == "idle" && q.paused));
    assert!(store.queue("idle").unwrap().is_paused());
    store.close().unwrap();
    drop(store);
    let store = Store::open_with(dir.path(), common::opts(&clock)).unwrap();
    let idle = store.queue("idle").unwrap();
    assert!(idle.is_paused());
    idle.enqueue(b"job").unwrap();
    assert!(idle.dequeue().unwrap().is_none());
}

/// A damaged `PAUSED` is refused naming it under `Strict` (a queue paused
/// so that its jobs would not run would run), and left as it was;
/// `Salvage` opens with every queue resumed and counts the bytes.
#[test]
fn a_damaged_pause_file_is_refused_and_salvage_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = common::open(dir.path(), &clock);
    q.enqueue(b"job").unwrap();
    q.pause().unwrap();
    q.close().unwrap();
    drop(q);
    let path = dir.path().join(PAUSED_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[18] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let err = Queue::open_with(dir.path(), common::opts(&clock)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(PAUSED_FILE), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
    let salvage = common::opts(&clock).recovery(RecoveryMode::Salvage);
    let q = Queue::open_with(dir.path(), salvage).unwrap();
    assert_eq!(q.recovery_report().bytes_skipped, bytes.len() as u64);
    assert!(!q.is_paused());
    assert_eq!(payloads(&q), [b"job"]);
}

/// A pause the disk cannot take (no room for the new file) is refused
/// naming `PAUSED`, changes nothing and poisons nothing; the same call
/// succeeds once there is room.
#[test]
fn a_full_disk_refuses_the_pause_and_changes_nothing() {
    let fs = SimFs::new();
    let clock = ManualClock::new(T0);
    let store = store_on(&fs, &clock);
    let q = store.default_queue();
    q.enqueue(b"one").unwrap();
    fs.set_fault(Some(Fault {
        op: FaultOp::Create,
        at: fs.op_count(FaultOp::Create),
        forever: true,
        kind: std::io::ErrorKind::StorageFull,
    }));
    let err = q.pause().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains(PAUSED_FILE), "{err}");
    assert!(!q.is_paused());
    assert!(fs.read_file(Path::new("/q/PAUSED")).is_none());
    fs.set_fault(None::<Fault>);
    q.enqueue(b"two").unwrap();
    assert_eq!(q.dequeue().unwrap().unwrap().payload(), b"one");
    q.pause().unwrap();
    assert!(q.dequeue().unwrap().is_none());
    assert!(fs.read_file(Path::new("/q/PAUSED")).is_some());
}

/// The file walq writes is private to its owner.
#[cfg(unix)]
#[test]
fn the_pause_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let q = common::open(dir.path(), &clock);
    q.pause().unwrap();
    let mode = std::fs::metadata(dir.path().join(PAUSED_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Writes the `paused` fixture's store into `dir`: jobs in the default
/// queue and in `emails`, `emails` and `idle` (never given a job) paused.
fn gen_paused(dir: &Path) {
    let clock = ManualClock::new(T0);
    let store = Store::open_with(dir, common::opts(&clock)).unwrap();
    let emails = store.queue("emails").unwrap();
    emails.enqueue(b"e-1").unwrap();
    emails.enqueue(b"e-2").unwrap();
    store.default_queue().enqueue(b"d-1").unwrap();
    emails.pause().unwrap();
    store.queue("idle").unwrap().pause().unwrap();
    store.close().unwrap();
    drop((emails, store));
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let random = name == "STORE_ID";
        if random || name == walq::LOCK_FILE || name.ends_with(".spare") || name == "done.rec" {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
    }
}

/// The `PAUSED` of version 1, as this build wrote it: opened by this
/// build, `emails` and `idle` are paused, the default queue is not.
#[test]
fn the_paused_fixture_opens_with_its_queues_paused() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/paused");
    let regen = std::env::var("WALQ_REGEN_FIXTURES");
    if matches!(regen.as_deref(), Ok("1") | Ok("paused")) {
        if fixture.exists() {
            std::fs::remove_dir_all(&fixture).unwrap();
        }
        std::fs::create_dir_all(&fixture).unwrap();
        gen_paused(&fixture);
    }
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let clock = ManualClock::new(T0 + 60_000);
    let store = Store::open_with(tmp.path(), common::opts(&clock)).unwrap();
    assert_eq!(store.recovery_report().bytes_skipped, 0);
    let (emails, idle) = (store.queue("emails").unwrap(), store.queue("idle").unwrap());
    assert!(emails.is_paused() && idle.is_paused());
    assert!(emails.dequeue().unwrap().is_none());
    assert_eq!(payloads(&store.default_queue()), [b"d-1"]);
    emails.resume().unwrap();
    assert_eq!(payloads(&emails), [b"e-1", b"e-2"]);
    let file = std::fs::read(fixture.join(PAUSED_FILE)).unwrap();
    assert_eq!(&file[..8], b"walqpau\0");
}

/// A `PAUSED` naming more queues than the store can then hold (1,024
/// names besides a queue the log defines) is refused naming the file, not
/// with the limit's error alone.
#[test]
fn a_pause_file_naming_too_many_queues_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = Store::open_with(dir.path(), common::opts(&clock)).unwrap();
    store.queue("a").unwrap().enqueue(b"job").unwrap();
    store.close().unwrap();
    drop(store);
    let names: Vec<String> = (0..1024).map(|i| format!("q{i:04}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let bytes = walq::format::paused::encode(&names).unwrap();
    std::fs::write(dir.path().join(PAUSED_FILE), bytes).unwrap();
    let err = Store::open_with(dir.path(), common::opts(&clock)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(PAUSED_FILE), "{err}");
    assert!(err.to_string().contains("1024"), "{err}");
}
