//! Guarantee 12: bad input gets a clear error, never a panic, and nothing
//! stored is damaged by it.

use std::time::Duration;

use walq::{Durability, EnqueueOptions, ErrorKind, Options, Queue, Receipt, MAX_KEY_LEN};

fn os() -> Options {
    Options::default().durability(Durability::Os)
}

#[test]
fn oversize_payload_key_and_batch_are_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path(), os().segment_size(1 << 20).max_payload(1000)).unwrap();
    q.enqueue(b"keep me").unwrap();
    let err = q.enqueue(&[0u8; 1001]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    assert!(
        err.to_string().contains("1001") && err.to_string().contains("1000"),
        "{err}"
    );
    let err = q
        .enqueue_with(
            b"x",
            EnqueueOptions::new().idempotency_key(vec![b'k'; MAX_KEY_LEN + 1]),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    let err = q
        .enqueue_with(b"x", EnqueueOptions::new().idempotency_key(""))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
    let err = q
        .enqueue_with(b"x", EnqueueOptions::new().max_attempts(0))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
    // A batch with one oversize member writes nothing.
    let err = q.enqueue_batch([&b"ok"[..], &[0u8; 1001][..]]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    // A batch larger than a segment is refused whole.
    let big: Vec<Vec<u8>> = (0..2000).map(|_| vec![1u8; 900]).collect();
    let err = q.enqueue_batch(&big).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    drop(q);
    let q = Queue::open_with(dir.path(), os().segment_size(1 << 20).max_payload(1000)).unwrap();
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.payload(), b"keep me");
    q.ack(job.receipt()).unwrap();
    assert!(
        q.dequeue().unwrap().is_none(),
        "a refused write left something behind"
    );
}

#[test]
fn invalid_options_are_refused_before_touching_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never-created");
    for opts in [
        Options::default().segment_size(10),
        Options::default().max_attempts(0),
        Options::default().visibility_timeout(Duration::ZERO),
        Options::default()
            .segment_size(1 << 16)
            .max_payload(1 << 20),
    ] {
        let err = Queue::open_with(&path, opts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
    }
    assert!(!path.exists());
}

#[test]
fn unknown_receipts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path(), os()).unwrap();
    q.enqueue(b"x").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    // A receipt forged from serde for a job that never existed.
    let forged: Receipt = serde_json::from_str(r#"{"id":999999,"token":1}"#).unwrap();
    assert_eq!(q.ack(forged).unwrap_err().kind(), ErrorKind::NotFound);
    // Right id, wrong token.
    let mut json = serde_json::to_value(job.receipt()).unwrap();
    json["token"] = serde_json::json!(12345);
    let wrong: Receipt = serde_json::from_value(json).unwrap();
    assert_eq!(q.ack(wrong).unwrap_err().kind(), ErrorKind::LeaseLost);
    q.ack(job.receipt()).unwrap();
}

#[test]
fn a_file_that_is_not_a_walq_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("0000000001.wal"),
        b"#!/bin/sh\necho hello\n",
    )
    .unwrap();
    let err = Queue::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("not a walq file"), "{err}");
    std::fs::write(dir.path().join("0000000001.wal"), b"").unwrap();
    assert_eq!(
        Queue::open(dir.path()).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
}

#[test]
fn a_format_version_from_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Queue::open_with(dir.path(), os().segment_size(1 << 16)).unwrap());
    let path = dir.path().join("0000000001.wal");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 2; // version 2, little-endian u16 at offset 8
    std::fs::write(&path, &bytes).unwrap();
    let err = Queue::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedVersion, "{err}");
    assert!(err.to_string().contains("version 2"), "{err}");
}

#[test]
fn arbitrary_segment_bytes_never_panic() {
    // A cheap cousin of the fuzz target: many random files, no panic.
    let mut seed = 0x1234_5678_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let dir = tempfile::tempdir().unwrap();
    drop(Queue::open_with(dir.path(), os().segment_size(1 << 16)).unwrap());
    let path = dir.path().join("0000000001.wal");
    let good = std::fs::read(&path).unwrap();
    for round in 0..200 {
        let mut bytes = good.clone();
        let len = (next() % 4096) as usize + 64;
        for b in bytes[64..64 + len].iter_mut() {
            *b = next() as u8;
        }
        if round % 3 == 0 {
            bytes.truncate((next() % 200) as usize);
        }
        std::fs::write(&path, &bytes).unwrap();
        let result = std::panic::catch_unwind(|| Queue::open_with(dir.path(), os()).map(drop));
        assert!(result.is_ok(), "panic on round {round}");
    }
}

/// `Duration::MAX` is the natural "wait for ever": every call that turns a
/// caller's duration into a deadline takes it (it used to panic with
/// "overflow when adding duration to instant").
#[test]
fn the_longest_waits_and_deadlines_are_taken_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path(), os()).unwrap();
    let a = q.enqueue(b"a").unwrap();
    let b = q.enqueue(b"b").unwrap();
    let job = q
        .dequeue_timeout(Duration::MAX)
        .unwrap()
        .expect("a job is ready");
    assert_eq!(job.id(), a);
    q.ack(job.receipt()).unwrap();
    let job = q
        .dequeue_wait(Duration::from_secs(30), Duration::MAX)
        .unwrap()
        .expect("a job is ready");
    assert_eq!(job.id(), b);
    q.ack(job.receipt()).unwrap();

    // A pool may not poll "for ever" (a shutdown waits for the poll); it
    // may take the longest deadlines, runs jobs with them, and stops.
    let err = walq::worker::WorkerPool::builder(q.clone())
        .poll_interval(Duration::MAX)
        .start(|_, _| walq::worker::Outcome::done())
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
    let (tx, rx) = std::sync::mpsc::channel();
    let pool = walq::worker::WorkerPool::builder(q.clone())
        .workers(2)
        .shutdown_timeout(Duration::MAX)
        .start(move |ctx, _payload| {
            let _ = tx.send(ctx.id());
            walq::worker::Outcome::done()
        })
        .unwrap();
    let c = q.enqueue(b"c").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(c));
    let report = pool.shutdown(Duration::MAX);
    // The handler may still have been returning when the stop began: it
    // finished within the deadline, nothing was released.
    assert_eq!(report.running, report.finished, "{report:?}");
    assert!(report.released.is_empty(), "{report:?}");
    assert_eq!(report.stats.done, 1, "{report:?}");
}

#[test]
fn a_worker_pool_name_with_a_nul_byte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path(), os()).unwrap();
    let err = walq::worker::WorkerPool::builder(q)
        .name("bad\0name")
        .start(|_, _| walq::worker::Outcome::done())
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
    assert!(err.to_string().contains("NUL"), "{err}");
}

/// `checkpoint_every(u64::MAX)` means "only at close": reclaim making a
/// checkpoint due must not overflow the next position (a panic in a debug
/// build, a checkpoint after every operation in a release build).
#[test]
fn the_largest_checkpoint_interval_only_checkpoints_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let opts = os().segment_size(64 << 10).checkpoint_every(u64::MAX);
    let q = Queue::open_with(dir.path(), opts).unwrap();
    for _ in 0..3000 {
        q.enqueue(&[7u8; 100]).unwrap();
    }
    while let Some(job) = q.dequeue().unwrap() {
        q.ack(job.receipt()).unwrap();
    }
    q.wait_upkeep();
    let path = dir.path().join("CHECKPOINT");
    let stamp = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path)
            .ok()
            .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
    };
    let before = stamp();
    for _ in 0..20 {
        q.enqueue(b"y").unwrap();
        let job = q.dequeue().unwrap().expect("just enqueued");
        q.ack(job.receipt()).unwrap();
        q.wait_upkeep();
    }
    assert_eq!(
        stamp(),
        before,
        "CHECKPOINT rewritten by operations that made none due"
    );
}

/// Asserts that `err` refuses a delay or lease over `MAX_DELAY`, naming
/// the limit and the value given (`Duration::MAX`).
fn refuses_max(err: walq::Error) {
    assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("MAX_DELAY") && text.contains("31536000s"),
        "the limit: {text}"
    );
    assert!(
        text.contains(&format!("{:?}", Duration::MAX)),
        "the value: {text}"
    );
}

/// An enqueue delay over `MAX_DELAY` (365 days) parked the job for good
/// (due at `u64::MAX` ms: never run, never dead-lettered). Every enqueue
/// path refuses it, and writes nothing; `MAX_DELAY` itself is taken.
#[test]
fn enqueue_delays_over_max_delay_are_refused_on_every_path() {
    use walq::worker::{Backend, MultiQueue};
    let dir = tempfile::tempdir().unwrap();
    let store = walq::Store::open_with(dir.path(), os()).unwrap();
    let q = store.default_queue();
    let mail = store.queue("mail").unwrap();
    let written = || store.stats().total.written_lsn;
    let lsn = written();
    let never = || EnqueueOptions::new().delay(Duration::MAX);
    refuses_max(never().validate().unwrap_err());
    refuses_max(q.enqueue_with(b"x", never()).unwrap_err());
    let just_over = walq::MAX_DELAY + Duration::from_millis(1);
    let err = q
        .enqueue_with(b"x", EnqueueOptions::new().delay(just_over))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
    refuses_max(mail.enqueue_with(b"x", never()).unwrap_err());
    refuses_max(
        walq::Jobs::<String>::new(q.clone())
            .enqueue_with(&"x".to_string(), never())
            .unwrap_err(),
    );
    let multi = MultiQueue::new(&store).queue("mail", 1).unwrap();
    refuses_max(Backend::enqueue(&multi, b"x", never()).unwrap_err());
    refuses_max(
        q.enqueue_dead_letter(b"x", never(), "imported")
            .unwrap_err(),
    );
    // With a key, a group or max_attempts (the full check) as well.
    let keyed = never().idempotency_key("k").group("g").max_attempts(2);
    refuses_max(mail.enqueue_with(b"x", keyed).unwrap_err());
    assert_eq!(written(), lsn, "a refused enqueue wrote a record");
    let longest = EnqueueOptions::new().delay(walq::MAX_DELAY);
    let id = q.enqueue_with(b"a year", longest).unwrap().id;
    drop((q, mail, multi));
    store.close().unwrap();
    let store = walq::Store::open_with(dir.path(), os()).unwrap();
    let q = store.default_queue();
    assert!(
        matches!(q.status(id).unwrap(), walq::JobStatus::Delayed { .. }),
        "{:?}",
        q.status(id)
    );
    let s = store.stats().total;
    assert_eq!(
        (s.ready, s.delayed, s.in_flight, s.dead),
        (0, 1, 0, 0),
        "{s:?}"
    );
}

/// A job leased, to be settled with bad durations: its queue (on a
/// manual clock), the clock and the job.
fn leased() -> (tempfile::TempDir, Queue, walq::ManualClock, walq::Job) {
    let dir = tempfile::tempdir().unwrap();
    let clock = walq::ManualClock::new(1_000_000);
    let opts = os().clock(clock.clone());
    let q = Queue::open_with(dir.path(), opts).unwrap();
    q.enqueue(b"x").unwrap();
    let job = q.dequeue_for(Duration::from_secs(60)).unwrap().unwrap();
    (dir, q, clock, job)
}

/// `nack(Retry::After(Duration::MAX))` parked the job as delayed until
/// `u64::MAX` ms, never run nor dead-lettered; the `Backend::retry` of a
/// `Queue` and of a `MultiQueue` took it too. Refused now, the job left
/// leased as it was; `MAX_DELAY` itself is taken.
#[test]
fn nack_delays_over_max_delay_are_refused_and_the_lease_kept() {
    use walq::worker::{Backend, MultiQueue};
    let (dir, q, _clock, job) = leased();
    let lsn = q.stats().written_lsn;
    let never = walq::Retry::After(Duration::MAX);
    refuses_max(q.nack(job.receipt(), never, "later").unwrap_err());
    refuses_max(Backend::retry(&q, &job.receipt(), Some(Duration::MAX), "x").unwrap_err());
    let multi = MultiQueue::new(&q.store()).queue("default", 1).unwrap();
    refuses_max(
        multi
            .retry(&job.receipt(), Some(Duration::MAX), "x")
            .unwrap_err(),
    );
    assert_eq!(q.stats().written_lsn, lsn, "a refused nack wrote a record");
    assert!(
        matches!(
            q.status(job.id()).unwrap(),
            walq::JobStatus::InFlight { .. }
        ),
        "{:?}",
        q.status(job.id())
    );
    let longest = walq::Retry::After(walq::MAX_DELAY);
    q.nack(job.receipt(), longest, "a year").unwrap();
    let s = q.stats();
    assert_eq!(
        (s.delayed, s.in_flight, s.retried_total),
        (1, 0, 1),
        "{s:?}"
    );
    drop((q, multi, dir));
}

/// `extend(receipt, Duration::MAX)` set a lease expiring at `u64::MAX`
/// ms: a worker that then died held the job for good. Refused now, the
/// lease left as it was (it still runs out after its 60 s).
#[test]
fn lease_extensions_over_max_delay_are_refused_and_the_lease_kept() {
    use walq::worker::Backend;
    let (_dir, q, clock, job) = leased();
    refuses_max(q.extend(job.receipt(), Duration::MAX).unwrap_err());
    refuses_max(Backend::extend(&q, &job.receipt(), Duration::MAX).unwrap_err());
    clock.advance(Duration::from_secs(61));
    let again = q.dequeue().unwrap().expect("the lease ran out");
    assert_eq!((again.id(), again.attempt()), (job.id(), 2));
    q.extend(again.receipt(), walq::MAX_DELAY).unwrap();
    clock.advance(walq::MAX_DELAY - Duration::from_secs(1));
    assert!(q.dequeue().unwrap().is_none(), "extended by MAX_DELAY");
}

/// A lease longer than `MAX_DELAY` is refused wherever one is sized:
/// the queue's options, a named queue's, a per-call lease (`dequeue_for`,
/// `dequeue_wait`, a `MultiQueue`'s) and a worker pool's `visibility`.
/// Nothing is leased by a refused call. A wait may be anything.
#[test]
fn visibility_timeouts_over_max_delay_are_refused() {
    use walq::worker::{MultiQueue, WorkerPool};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never-created");
    let err = Queue::open_with(&path, os().visibility_timeout(Duration::MAX)).unwrap_err();
    refuses_max(err);
    assert!(!path.exists());
    let store = walq::Store::open_with(dir.path(), os()).unwrap();
    let long = walq::QueueOptions::new().visibility_timeout(Duration::MAX);
    refuses_max(store.queue_with("long", long).unwrap_err());
    let q = store.default_queue();
    q.enqueue(b"x").unwrap();
    refuses_max(q.dequeue_for(Duration::MAX).unwrap_err());
    refuses_max(q.dequeue_wait(Duration::MAX, Duration::MAX).unwrap_err());
    let multi = MultiQueue::new(&store).queue("default", 1).unwrap();
    refuses_max(multi.lease_from(Duration::MAX, Duration::ZERO).unwrap_err());
    let err = WorkerPool::builder(q.clone())
        .visibility(Duration::MAX)
        .heartbeat(Duration::from_secs(1))
        .start(|_, _| walq::worker::Outcome::done())
        .map(|_| ())
        .unwrap_err();
    refuses_max(err);
    let s = q.stats();
    assert_eq!(
        (s.ready, s.in_flight),
        (1, 0),
        "a refused call leased: {s:?}"
    );
    let job = q.dequeue_for(walq::MAX_DELAY).unwrap().expect("ready");
    q.ack(job.receipt()).unwrap();
}
