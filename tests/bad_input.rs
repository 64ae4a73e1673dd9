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
