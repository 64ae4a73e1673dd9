//! Reclaiming segments while many idempotency keys are remembered.
//!
//! A finished job's key is remembered for the dedup window (24 h by
//! default), so its key record is carried forward whenever the segment
//! holding it is deleted. Once those key records fill more than a segment,
//! carrying them must still terminate and disk use must still follow the
//! live data (guarantee 9), not grow or churn forever.

use std::sync::mpsc;
use std::time::Duration;

use walq::{Durability, EnqueueOptions, Options, Queue};

/// Highest segment id in `dir`.
fn last_segment_id(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".wal")?.parse::<u64>().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn many_remembered_keys_do_not_livelock_reclaim() {
    const JOBS: u32 = 3000;
    // 3000 small jobs fill a handful of 64 KiB segments; a segment id far
    // past that means the log is rotating without end.
    const RUNAWAY: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (tx, rx) = mpsc::channel();
    // The work runs on its own thread so that a livelock (which never
    // returns) is seen from outside, by the segment ids running away.
    std::thread::spawn(move || {
        let q = Queue::open_with(
            &path,
            Options::default()
                .segment_size(64 * 1024)
                .durability(Durability::Os),
        )
        .unwrap();
        for i in 0..JOBS {
            let key = format!("order-{i:06}");
            q.enqueue_with(b"x", EnqueueOptions::new().idempotency_key(&key))
                .unwrap();
            let job = q.dequeue().unwrap().unwrap();
            q.ack(job.receipt()).unwrap();
        }
        // Every key is still remembered.
        let again = q
            .enqueue_with(b"x", EnqueueOptions::new().idempotency_key("order-000000"))
            .unwrap();
        assert!(again.duplicate);
        let _ = tx.send(q.stats());
    });
    let stats = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(stats) => break stats,
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the worker thread panicked"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let last = last_segment_id(dir.path());
                assert!(
                    last < RUNAWAY,
                    "reclaim livelock: segment ids run away (now {last}) while carrying \
                     remembered idempotency keys forward"
                );
            }
        }
    };
    // Disk follows what is remembered: 3000 key records, a few segments.
    assert!(stats.segments <= 8, "{stats:?}");
    assert!(last_segment_id(dir.path()) < RUNAWAY, "{stats:?}");
}
