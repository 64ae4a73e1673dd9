//! Many producers and consumers on threads: every job is delivered, none
//! to two holders at once, none after its ack; the counts add up.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use walq::{Durability, Options, Queue, Retry};

fn run(durability: Durability, producers: u64, per_producer: u64) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(
        dir.path(),
        Options::default()
            .durability(durability)
            .segment_size(256 * 1024)
            .visibility_timeout(Duration::from_secs(600)),
    )
    .unwrap();
    let total = producers * per_producer;
    let held: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let acked: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for p in 0..producers {
        let q = q.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..per_producer {
                let payload = format!("{p}:{i}").into_bytes();
                if i % 10 == 0 {
                    q.enqueue_batch([payload]).unwrap();
                } else {
                    q.enqueue(&payload).unwrap();
                }
            }
        }));
    }
    for c in 0..4u64 {
        let (q, held, acked, done, acks) = (
            q.clone(),
            held.clone(),
            acked.clone(),
            done.clone(),
            acks.clone(),
        );
        threads.push(std::thread::spawn(move || loop {
            let job = match q.dequeue_timeout(Duration::from_millis(20)).unwrap() {
                Some(job) => job,
                None if done.load(Ordering::SeqCst) => return,
                None => continue,
            };
            assert!(
                held.lock().unwrap().insert(job.id()),
                "job {} held twice",
                job.id()
            );
            // Every third first attempt fails once, to exercise retries.
            let retry = job.attempt() == 1 && job.id() % 3 == c % 3;
            held.lock().unwrap().remove(&job.id());
            if retry {
                q.nack(job.receipt(), Retry::After(Duration::ZERO), "once")
                    .unwrap();
            } else {
                assert!(
                    acked.lock().unwrap().insert(job.payload().to_vec()),
                    "job {} delivered after its ack",
                    job.id()
                );
                q.ack(job.receipt()).unwrap();
                if acks.fetch_add(1, Ordering::SeqCst) + 1 == total {
                    done.store(true, Ordering::SeqCst);
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(acked.lock().unwrap().len() as u64, total);
    let s = q.stats();
    assert_eq!(s.enqueued_total, total);
    assert_eq!(s.acked_total, total);
    assert_eq!((s.ready, s.delayed, s.in_flight, s.dead), (0, 0, 0, 0));
    q.check_invariants();
}

#[test]
fn many_threads_os() {
    run(Durability::Os, 4, 2000);
}

#[test]
fn many_threads_sync_group_commit() {
    run(Durability::Sync, 8, 100);
}
