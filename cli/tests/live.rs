//! Read-only commands on a queue that a running process changes as they
//! read: segments created, filled and deleted under them. What they read
//! may be stale, but a file deleted or growing meanwhile is never damage.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::walq;
use walq::{Durability, EnqueueOptions, Options, Queue};

#[test]
fn reading_a_busy_live_queue_finds_no_damage() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .segment_size(64 << 10)
        .durability(Durability::Os)
        .max_attempts(1);
    let q = Queue::open_with(dir.path(), opts).unwrap();
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    // The writer runs at most this many rounds ahead of the reader's
    // finished iterations (400 rounds: 6.4 MB, about 100 segments, per
    // iteration). Unbounded, a slow machine let it fill 57 GB: its keys
    // stay in their 24 h window, and a front segment made mostly of
    // carried keys holds back reclaim, so the queue grew faster than
    // `verify` read it.
    let budget = AtomicU64::new(400);
    let d = dir.path().to_str().unwrap();
    // Stops the writer however the reader's checks end (a failed assertion
    // included), so a failure is reported instead of churning for ever.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            // Churn: 4 KiB jobs fill a 64 KiB segment every few rounds;
            // acked ones let old segments be deleted.
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if rounds.load(Ordering::Relaxed) >= budget.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                for _ in 0..4 {
                    let key = format!("k{i}");
                    let opts = EnqueueOptions::new().idempotency_key(key);
                    q.enqueue_with(&vec![(i % 251) as u8; 4000], opts).unwrap();
                    i += 1;
                }
                for n in 0..4 {
                    let Some(job) = q.dequeue().unwrap() else {
                        break;
                    };
                    if n == 0 && i.is_multiple_of(16) {
                        q.fail(job.receipt(), "to the dead letters").unwrap();
                    } else {
                        q.ack(job.receipt()).unwrap();
                    }
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Let the writer get going, then read while it runs.
        while rounds.load(Ordering::Relaxed) < 50 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..12 {
            let verify = walq(&["verify", d, "--json"]);
            assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
            assert!(
                !verify.stdout.contains("\"damage\",\""),
                "{}",
                verify.stdout
            );
            assert!(
                verify.stderr.contains("the queue is live"),
                "{}",
                verify.stderr
            );
            for cmd in [
                &["stats", d][..],
                &["export", d],
                &["dead", "list", d],
                &["peek", d],
            ] {
                let run = walq(cmd);
                assert_eq!(run.code, 0, "{cmd:?}: {}", run.stderr);
                assert!(!run.stderr.contains("damaged"), "{cmd:?}: {}", run.stderr);
            }
            budget.fetch_add(400, Ordering::Relaxed);
        }
        stop.store(true, Ordering::Relaxed);
    });
    drop(q);
    assert!(rounds.load(Ordering::Relaxed) > 50, "the writer ran");
}
