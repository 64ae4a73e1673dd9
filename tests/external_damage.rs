//! What someone else's actions on the queue's files do (guarantee 13):
//! a leased `Job` owns its payload, so truncating the files under a live
//! queue cannot make reading a payload kill the process with `SIGBUS`.

mod common;

use common::{cut_file, segment_files};
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
        cut_file(&seg, 0);
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

/// Dequeues until the queue is empty: the payloads served (acked) and the
/// ids of the jobs that went to the dead letters instead.
fn drain(q: &Queue) -> Vec<Vec<u8>> {
    let mut served = Vec::new();
    while let Some(job) = q.dequeue().expect("a dequeue after the cut") {
        q.ack(job.receipt()).unwrap();
        served.push(job.into_payload());
    }
    served
}

/// Job `i`'s payload: 3,000 bytes that name it.
fn payload(i: u8) -> Vec<u8> {
    vec![i; 3_000]
}

/// The jobs whose records a cut took are dead-lettered, with the file and
/// offset in their error, and the queue keeps serving: reading those
/// records through the map raised `SIGBUS` before (the dequeue checks
/// that the kernel can read a record's pages first).
#[test]
fn jobs_a_cut_of_a_sealed_segment_took_are_dead_lettered_not_a_sigbus() {
    cut_a_sealed_segment_and_drain(false);
}

/// The same cut, after a dequeue read the segment's first job and so had
/// its pages checked (the whole 64 KiB window): the records past the cut
/// are not checked again, and reading them faulted with `SIGBUS`, which
/// killed the test process, until reads were guarded
/// (`os/fault_guard.rs`). They are dead-lettered as the unchecked case's.
#[test]
fn a_cut_inside_the_window_a_reader_checked_is_dead_lettered_not_a_sigbus() {
    cut_a_sealed_segment_and_drain(true);
}

/// Enqueues 60 jobs of 3,000 bytes over several 64 KiB segments, reads the
/// first one if `read_first`, cuts the first segment to 32 KiB, drains,
/// and checks what a cut of a sealed segment may do.
fn cut_a_sealed_segment_and_drain(read_first: bool) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .segment_size(MIN_SEGMENT_SIZE)
        .durability(Durability::Os);
    let q = Queue::open_with(dir.path(), opts).unwrap();
    for i in 0..60u8 {
        q.enqueue(&payload(i)).unwrap();
    }
    let mut served = Vec::new();
    if read_first {
        let job = q.dequeue().unwrap().expect("the first job");
        q.ack(job.receipt()).unwrap();
        served.push(job.into_payload());
    }
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 3, "two sealed segments and the active one");
    cut_file(&segs[0], 32 << 10);
    served.extend(drain(&q));
    let dead = q.dead_letters().unwrap();
    assert!(!dead.is_empty(), "the cut took records");
    assert!(
        served.len() > 30,
        "only the cut's records are lost: {}",
        served.len()
    );
    assert_eq!(served.len() + dead.len(), 60, "every job served or dead");
    for (i, p) in served.iter().enumerate() {
        assert_eq!(p.len(), 3_000, "job {i}: a whole payload");
        assert!(p.iter().all(|&b| b == p[0]), "job {i}: its own bytes");
    }
    let seg = segs[0].file_name().unwrap().to_string_lossy().into_owned();
    for d in &dead {
        assert!(d.error.contains("unreadable"), "{}", d.error);
        assert!(d.error.contains(&seg), "names the segment: {}", d.error);
        assert!(d.payload.is_empty());
    }
    // The queue still works: new jobs go to the intact active segment.
    q.enqueue(b"after").unwrap();
    let job = q.dequeue().unwrap().expect("the new job");
    assert_eq!(job.payload(), b"after");
    q.ack(job.receipt()).unwrap();
}

/// Someone cuts the **active** segment inside the window a reader checked,
/// through a record that is still to be read: the read faults (`SIGBUS`
/// before reads were guarded), the job is never served with the zeros
/// read in place of its bytes, and the page now lies in a private copy,
/// so the next append (the job's dead-letter record), which lands in that
/// very page, is an error that poisons the queue: it would have gone into
/// the private page, reached no file, and returned `Ok`. A reopen serves
/// what the cut left.
#[test]
fn a_read_of_a_cut_active_segment_refuses_the_appends_after_it() {
    read_a_cut_active_segment_then_append(Durability::Os);
}

/// The same under `Sync`, whose appends are `pwrite`s: one would reach
/// the file, but readers would read the private page's zeros in its place
/// and dead-letter the job as damaged.
#[test]
fn a_read_of_a_cut_active_segment_refuses_the_pwrites_after_it() {
    read_a_cut_active_segment_then_append(Durability::Sync);
}

fn read_a_cut_active_segment_then_append(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .segment_size(MIN_SEGMENT_SIZE)
        .durability(durability);
    let q = Queue::open_with(dir.path(), opts.clone()).unwrap();
    q.enqueue(b"first").unwrap();
    // Starts in the first page, ends in the second.
    q.enqueue(&vec![5u8; 5_000]).unwrap();
    q.sync().unwrap();
    let job = q.dequeue().unwrap().expect("the first job");
    q.ack(job.receipt()).unwrap();
    let active = segment_files(dir.path()).pop().expect("the active segment");
    cut_file(&active, 4096);
    // The job's read faults; its dead letter's record is the next append,
    // into the page the fault replaced.
    let err = match q.dequeue() {
        Ok(Some(job)) => panic!("served a job of {} bytes", job.payload().len()),
        Ok(None) => panic!("the append after the faulted read went through"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), walq::ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("faulted"), "{err}");
    assert!(
        err.to_string().contains(&*active.to_string_lossy()),
        "{err}"
    );
    let after = q.enqueue(b"more").expect_err("poisoned");
    assert_eq!(after.kind(), walq::ErrorKind::Poisoned, "{after}");
    drop(q);
    let q = Queue::open_with(dir.path(), opts.recovery(walq::RecoveryMode::Salvage)).unwrap();
    q.enqueue(b"new").unwrap();
    // The cut took the second job's record and the first one's ack.
    assert_eq!(drain(&q), vec![b"first".to_vec(), b"new".to_vec()]);
}

/// Someone cuts the **active** segment of an open queue: the next append
/// stores into a page past the file's end, which the kernel refuses with
/// `SIGBUS`. That is an I/O error now (the store is diverted, see
/// `os::fault_guard`), the queue is poisoned (its map no longer shows the
/// file), and a reopen recovers what the file still holds. Before, the
/// enqueue killed the process. (The same fault is what a store into an
/// xfs that shut down raises; `tests/fs_shutdown.rs` checks that on a
/// real one.)
#[test]
fn an_append_into_a_cut_active_segment_is_an_error_not_a_sigbus() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .segment_size(MIN_SEGMENT_SIZE)
        .durability(Durability::Os);
    let q = Queue::open_with(dir.path(), opts.clone()).unwrap();
    q.enqueue(b"kept").unwrap();
    q.sync().unwrap();
    let active = segment_files(dir.path()).pop().expect("the active segment");
    // The first page (the header and the kept job) stays.
    cut_file(&active, 4096);
    let err = q
        .enqueue(&vec![3u8; 10_000])
        .expect_err("the append's pages are gone");
    assert_eq!(err.kind(), walq::ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("refused a store"), "{err}");
    let after = q.enqueue(b"more").expect_err("poisoned");
    assert_eq!(after.kind(), walq::ErrorKind::Poisoned, "{after}");
    drop(q);
    // The kept job is in the first page, which the cut left: a salvage
    // open serves it, and new work goes on.
    let q = Queue::open_with(dir.path(), opts.recovery(walq::RecoveryMode::Salvage)).unwrap();
    q.enqueue(b"new").unwrap();
    assert_eq!(drain(&q), vec![b"kept".to_vec(), b"new".to_vec()]);
}

/// A sealed segment cut short while it is not mapped (after a reopen)
/// cannot be mapped again: the read is an I/O error naming the file, and
/// the queue is poisoned rather than dead-lettering the readable jobs
/// below the cut without their payloads. The reopen finds the short
/// segment: Strict refuses it naming the file, Salvage serves every job
/// below the cut.
#[test]
fn a_cut_of_an_unmapped_sealed_segment_poisons_and_the_reopen_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        Options::default()
            .segment_size(MIN_SEGMENT_SIZE)
            .durability(Durability::Os)
    };
    let q = Queue::open_with(dir.path(), opts()).unwrap();
    for i in 0..60u8 {
        q.enqueue(&vec![i; 3_000]).unwrap();
    }
    q.close().unwrap();
    drop(q);
    let q = Queue::open_with(dir.path(), opts()).unwrap();
    let first = segment_files(dir.path())[0].clone();
    cut_file(&first, 32 << 10);
    let err = q.dequeue().expect_err("the cut segment cannot be mapped");
    assert!(err.to_string().contains(&*first.to_string_lossy()), "{err}");
    let again = q.dequeue().expect_err("poisoned");
    assert_eq!(again.kind(), walq::ErrorKind::Poisoned, "{again}");
    drop(q);
    let strict = Queue::open_with(dir.path(), opts()).expect_err("a short segment");
    assert_eq!(strict.kind(), walq::ErrorKind::Corrupt, "{strict}");
    let salvage = opts().recovery(walq::RecoveryMode::Salvage);
    let q = Queue::open_with(dir.path(), salvage).unwrap();
    let mut served = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        served.push(job.payload()[0]);
        q.ack(job.receipt()).unwrap();
    }
    // The jobs below the cut and every later segment's, in order; only
    // the cut's stretch is missing.
    let missing: Vec<u8> = (0..60).filter(|i| !served.contains(i)).collect();
    assert!(served.windows(2).all(|w| w[0] < w[1]), "{served:?}");
    assert_eq!(
        (served[0], served.last().copied()),
        (0, Some(59)),
        "{served:?}"
    );
    let (lo, hi) = (missing[0], *missing.last().unwrap());
    assert_eq!(
        missing,
        (lo..=hi).collect::<Vec<_>>(),
        "one stretch: {served:?}"
    );
}
