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

/// Two consumers blocked in `dequeue_timeout`; a job enqueued with a
/// delay (or retried after one) reaches the one still waiting when it
/// comes due, though the other, whose own wait ends first, is gone by
/// then. Before, one consumer alone was woken: the one about to leave,
/// and the job waited for the other's timeout (up to a visibility
/// timeout; a review found it). The sleeps only order the threads; the
/// 60 s bound is liveness, against the waiter's own 120 s.
fn a_job_due_later_reaches_the_consumer_still_waiting(d: Durability, via_nack: bool) {
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .durability(d)
        .visibility_timeout(Duration::from_secs(600));
    let q = Queue::open_with(dir.path(), opts).unwrap();
    let mut receipt = None;
    if via_nack {
        q.enqueue(b"x").unwrap();
        receipt = Some(q.dequeue().unwrap().unwrap().receipt());
    }
    let leaving = {
        let q = q.clone();
        std::thread::spawn(move || q.dequeue_timeout(Duration::from_millis(800)).unwrap())
    };
    std::thread::sleep(Duration::from_millis(200)); // ordering only
    let (tx, rx) = std::sync::mpsc::channel();
    let staying = {
        let q = q.clone();
        std::thread::spawn(move || {
            let got = q.dequeue_timeout(Duration::from_secs(120)).unwrap();
            tx.send(Instant::now()).unwrap();
            got
        })
    };
    std::thread::sleep(Duration::from_millis(200)); // ordering only
    let later = Duration::from_millis(1500);
    match receipt {
        Some(r) => q.nack(r, Retry::After(later), "later").unwrap(),
        None => {
            let opts = walq::EnqueueOptions::new().delay(later);
            q.enqueue_with(b"later", opts).unwrap();
        }
    }
    assert!(
        leaving.join().unwrap().is_none(),
        "left before the job was due"
    );
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the consumer still waiting slept past the due time");
    assert!(staying.join().unwrap().is_some());
}

#[test]
fn a_delayed_job_reaches_the_consumer_still_waiting() {
    a_job_due_later_reaches_the_consumer_still_waiting(Durability::Os, false);
    a_job_due_later_reaches_the_consumer_still_waiting(Durability::Sync, false);
}

#[test]
fn a_retry_after_a_delay_reaches_the_consumer_still_waiting() {
    a_job_due_later_reaches_the_consumer_still_waiting(Durability::Os, true);
}
