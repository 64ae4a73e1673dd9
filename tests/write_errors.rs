//! Real write errors: the block device under the file system fails its
//! writes, and the kernel reports it the way it does (an `fdatasync` that
//! returns EIO, or ENOSPC, once, the file system's journal aborted, the
//! file system read-only). Nothing walq acknowledged may be lost, and no
//! failure may be a signal or a panic.
//!
//! `.ci/fs-matrix.sh` builds the failing device: a loop image of 200 MiB
//! on a tmpfs of 40 MiB, so writeback fails once the tmpfs is full. It
//! runs this test twice per file system (ext4, btrfs) and durability:
//!
//! 1. `WALQ_WRITE_ERRORS_PHASE=fill`: enqueue 4 KiB jobs into
//!    `WALQ_WRITE_ERRORS_DIR` until a call fails. Under `sync` each
//!    enqueue is acknowledged durable; under `os` a `sync()` every 100
//!    jobs acknowledges the ones before it. The failure must be an I/O
//!    error (not a panic, not SIGBUS) and every later call must fail
//!    (`Poisoned`): a sync error is reported once by the kernel, so
//!    nothing may be acknowledged after it. If the first failure is the
//!    sync of a new segment's file (before anything is written into it),
//!    the queue is not poisoned: the next enqueue must fail all the same
//!    (the device is dead), with `Io` or `Poisoned`. The last acknowledged job's
//!    number goes to `WALQ_WRITE_ERRORS_STATE`.
//! 2. The script unmounts the file system, gives the tmpfs room, repairs
//!    the file system (`e2fsck`; btrfs needs none) and mounts it again.
//! 3. `WALQ_WRITE_ERRORS_PHASE=check`: open the queue and drain it: every
//!    acknowledged job is there, with its payload.
//!
//! Without `WALQ_WRITE_ERRORS_DIR` the test says so and does nothing:
//! `tests/fsync_path.rs` and `tests/io_faults.rs` cover the same protocol
//! on the simulated file system in every `cargo test`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use walq::{Durability, ErrorKind, Options, Queue};

const DIR_ENV: &str = "WALQ_WRITE_ERRORS_DIR";
const STATE_ENV: &str = "WALQ_WRITE_ERRORS_STATE";
const PHASE_ENV: &str = "WALQ_WRITE_ERRORS_PHASE";
const DURABILITY_ENV: &str = "WALQ_WRITE_ERRORS_DURABILITY";
/// 4 KiB a job: about 10,000 jobs fill the 40 MiB under the image.
const JOB_BYTES: usize = 4096;
/// 2 GiB of jobs without a failure means the device never failed.
const MAX_JOBS: u64 = 500_000;
/// Under `os`, jobs acknowledged by one `sync()`.
const OS_SYNC_EVERY: u64 = 100;

fn payload(seq: u64) -> Vec<u8> {
    let mut p = vec![(seq % 251) as u8; JOB_BYTES];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    p
}

fn durability() -> Durability {
    match std::env::var(DURABILITY_ENV).as_deref() {
        Ok("os") => Durability::Os,
        _ => Durability::Sync,
    }
}

/// Enqueues until a call fails; returns the last acknowledged job.
fn fill(dir: &Path) -> u64 {
    let dur = durability();
    let opts = Options::default().durability(dur).segment_size(1 << 20);
    let q = Queue::open_with(dir, opts).expect("open on the healthy device");
    let mut acked = 0;
    for seq in 1..=MAX_JOBS {
        let step = q.enqueue(&payload(seq)).map(|_| ());
        let step = match step {
            Ok(()) if dur == Durability::Os && seq % OS_SYNC_EVERY == 0 => q.sync(),
            other => other,
        };
        match step {
            Ok(()) if dur == Durability::Sync || seq % OS_SYNC_EVERY == 0 => acked = seq,
            Ok(()) => {}
            Err(e) => {
                eprintln!("write errors: job {seq} failed: {e}");
                assert_eq!(e.kind(), ErrorKind::Io, "the first failure: {e}");
                let again = q.enqueue(&payload(seq)).expect_err("an enqueue after it");
                if creation_failed(&e) {
                    // A new segment that could not be made (its sync
                    // failed): nothing of the log failed, so the queue is
                    // not poisoned; on the dead device the next call fails
                    // too, either way.
                    let kind = again.kind();
                    assert!(
                        matches!(kind, ErrorKind::Io | ErrorKind::Poisoned),
                        "{again}"
                    );
                    return acked;
                }
                assert_eq!(again.kind(), ErrorKind::Poisoned, "{again}");
                let sync = q.sync().expect_err("a sync after it");
                assert_eq!(sync.kind(), ErrorKind::Poisoned, "{sync}");
                return acked;
            }
        }
    }
    panic!("{MAX_JOBS} jobs written and the device never failed a write");
}

/// Whether `e` is the failure to make a new segment (its file created,
/// preallocated and synced before anything is written into it): an
/// operation's error that does not poison the queue, since no record of
/// the log was lost (docs/architecture.md, "The fsync order").
fn creation_failed(e: &walq::Error) -> bool {
    e.to_string().contains("new segment")
}

/// Drains the queue; every job up to `acked` must be there.
fn check(dir: &Path, acked: u64) {
    let q = Queue::open(dir).expect("open after the repair");
    let mut seen = HashSet::new();
    while let Some(job) = q.dequeue().expect("dequeue") {
        let p = job.payload();
        let seq = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
        assert_eq!(p, &payload(seq)[..], "job {seq}'s payload");
        seen.insert(seq);
        q.ack(job.receipt()).expect("ack");
    }
    let lost: Vec<u64> = (1..=acked).filter(|s| !seen.contains(s)).collect();
    eprintln!(
        "write errors: {} jobs back, {acked} acknowledged, {} lost",
        seen.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged jobs lost: {lost:?}");
}

#[test]
fn write_errors_lose_nothing_acknowledged() {
    let Some(dir) = std::env::var_os(DIR_ENV).map(PathBuf::from) else {
        eprintln!(
            "write_errors_lose_nothing_acknowledged: {DIR_ENV} is not set, so no device fails \
             here (`sudo bash .ci/fs-matrix.sh` makes one that does, on ext4 and btrfs)"
        );
        return;
    };
    let state = PathBuf::from(std::env::var_os(STATE_ENV).expect(STATE_ENV));
    match std::env::var(PHASE_ENV).as_deref() {
        Ok("fill") => {
            let acked = fill(&dir);
            std::fs::write(&state, acked.to_string()).expect("write the state file");
            eprintln!("write errors: {acked} jobs acknowledged before the failure");
        }
        Ok("check") => {
            let acked: u64 = std::fs::read_to_string(&state)
                .expect("the fill phase's state file")
                .trim()
                .parse()
                .expect("a number");
            assert!(acked > 0, "nothing was acknowledged before the failure");
            check(&dir, acked);
        }
        other => panic!("{PHASE_ENV} must be fill or check, not {other:?}"),
    }
}
