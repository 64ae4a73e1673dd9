//! What someone else's actions on the queue's files do (guarantee 13):
//! a leased `Job` owns its payload, so truncating the files under a live
//! queue cannot make reading a payload kill the process with `SIGBUS`.

mod common;

use common::segment_files;
use walq::{Durability, Options, Queue, MIN_SEGMENT_SIZE};

#[test]
fn a_leased_payload_survives_its_segment_being_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .segment_size(MIN_SEGMENT_SIZE)
        .durability(Durability::Os);
    let q = Queue::open_with(dir.path(), opts).unwrap();
    let payload = vec![7u8; 20_000];
    q.enqueue(&payload).unwrap();
    let job = q.dequeue().unwrap().expect("a job");
    for seg in segment_files(dir.path()) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    // Before: the payload was a slice of the map; this read raised SIGBUS.
    assert_eq!(job.payload(), &payload[..]);
}

#[test]
fn a_job_kept_by_the_user_does_not_pin_a_deleted_segment() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .segment_size(MIN_SEGMENT_SIZE)
        .durability(Durability::Os);
    let q = Queue::open_with(dir.path(), opts).unwrap();
    q.enqueue(&vec![1u8; 40_000]).unwrap();
    let kept = q.dequeue().unwrap().expect("a job");
    let first = segment_files(dir.path())[0].clone();
    q.ack(kept.receipt()).unwrap();
    // Fill more segments until the first one is reclaimed.
    for _ in 0..8 {
        q.enqueue(&vec![2u8; 40_000]).unwrap();
        let j = q.dequeue().unwrap().expect("a job");
        q.ack(j.receipt()).unwrap();
    }
    assert!(!first.exists(), "the first segment is reclaimed");
    // No descriptor or map of this process still refers to the deleted file.
    let pinned = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .any(|l| l.contains(first.to_str().unwrap()));
    assert!(!pinned, "a kept Job pins the deleted segment's map");
    assert_eq!(kept.payload().len(), 40_000);
    assert_eq!(kept.into_payload(), vec![1u8; 40_000]);
}
