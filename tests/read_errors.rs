//! A read error from a real kernel (guarantee 13): a job whose record sits
//! on pages the device cannot read is dead-lettered, and the queue keeps
//! serving, where reading it through the segment's map raised `SIGBUS`.
//!
//! The failing device is `.ci/eio_fuse.py`, a pass-through FUSE file
//! system that fails the reads of chosen byte ranges with EIO (this VM's
//! kernel has no device-mapper, so no `dm-error`). `.ci/fs-matrix.sh`
//! mounts it and runs this test with
//! `WALQ_READ_ERRORS_DIR=<a directory on the mount>` and
//! `WALQ_READ_ERRORS_CONTROL=<its control file>`; without them the test
//! says so and checks nothing (`tests/external_damage.rs` covers the same
//! path with a file cut short, on any file system).

mod common;

use std::path::PathBuf;

use common::segment_files;
use walq::{Durability, Options, Queue, MIN_SEGMENT_SIZE};

/// Job `i`'s payload: 3,000 bytes that name it.
fn payload(i: u8) -> Vec<u8> {
    vec![i; 3_000]
}

fn opts() -> Options {
    Options::default()
        .segment_size(MIN_SEGMENT_SIZE)
        .durability(Durability::Os)
}

/// Drops the page cache (root only; a FUSE open drops the file's cached
/// pages anyway, unless the server asks to keep them).
fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
}

#[test]
fn a_record_on_unreadable_pages_is_dead_lettered_not_a_sigbus() {
    let (Some(dir), Some(control)) = (
        std::env::var_os("WALQ_READ_ERRORS_DIR"),
        std::env::var_os("WALQ_READ_ERRORS_CONTROL"),
    ) else {
        eprintln!(
            "a_record_on_unreadable_pages_is_dead_lettered_not_a_sigbus: \
             WALQ_READ_ERRORS_DIR and WALQ_READ_ERRORS_CONTROL are not set, so no read \
             fails here (`sudo bash .ci/fs-matrix.sh` runs it on a FUSE file system \
             that fails reads with EIO)"
        );
        return;
    };
    let (dir, control) = (PathBuf::from(dir), PathBuf::from(control));
    std::fs::create_dir_all(&dir).unwrap();
    let q = Queue::open_with(&dir, opts()).unwrap();
    for i in 0..60u8 {
        q.enqueue(&payload(i)).unwrap();
    }
    q.close().unwrap();
    let segs = segment_files(&dir);
    assert!(segs.len() >= 3, "two sealed segments and the active one");
    let bad = segs[0].file_name().unwrap().to_string_lossy().into_owned();
    // The second half of the first segment fails every read from now on.
    std::fs::write(&control, format!("{bad} 32768 65536\n")).unwrap();
    drop_caches();

    // A clean close: the open reads the checkpoint, not the bad pages.
    let q = Queue::open_with(&dir, opts()).unwrap();
    let mut served = Vec::new();
    while let Some(job) = q.dequeue().expect("a dequeue past the bad pages") {
        q.ack(job.receipt()).unwrap();
        served.push(job.into_payload());
    }
    let dead = q.dead_letters().unwrap();
    eprintln!(
        "read errors: {} jobs served, {} dead-lettered",
        served.len(),
        dead.len()
    );
    assert!(!dead.is_empty(), "the bad pages held records");
    assert!(
        served.len() > 30,
        "only the bad pages' jobs are lost: {}",
        served.len()
    );
    assert_eq!(served.len() + dead.len(), 60, "every job served or dead");
    for p in &served {
        assert_eq!(p.len(), 3_000);
        assert!(p.iter().all(|&b| b == p[0]), "a whole payload");
    }
    for d in &dead {
        assert!(d.error.contains("unreadable"), "{}", d.error);
        assert!(d.error.contains(&bad), "names the segment: {}", d.error);
    }
    q.enqueue(b"after").unwrap();
    let job = q.dequeue().unwrap().expect("the new job");
    assert_eq!(job.payload(), b"after");
    q.ack(job.receipt()).unwrap();
    q.close().unwrap();

    // The dead letters outlive the bad pages' repair.
    std::fs::write(&control, "").unwrap();
    let q = Queue::open_with(&dir, opts()).unwrap();
    assert_eq!(q.dead_letters().unwrap().len(), dead.len());
    assert!(q.dequeue().unwrap().is_none());
}
