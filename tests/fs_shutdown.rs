//! A file system that shuts down under an open queue (xfs after a metadata
//! or log I/O error, ext4 with `errors=remount-ro`, or an administrator's
//! `xfs_io -x -c shutdown`): every later call fails with an error, none
//! kills the process, and nothing acknowledged before is lost.
//!
//! Measured on the reference VM before `os::fault_guard`: under
//! `Durability::Os` on xfs, after a `sync` (anyone's: it cleans the mapped
//! pages) and a shutdown, the next enqueue stored into a clean page of the
//! map, xfs refused it (`page_mkwrite` on a shut-down file system) and the
//! kernel killed the process with `SIGBUS`.
//!
//! `.ci/fs-matrix.sh` runs this on a fresh xfs and ext4 each, under `os`
//! and `sync`, in two phases:
//!
//! 1. `WALQ_FS_SHUTDOWN_PHASE=run`: open a queue in `WALQ_FS_SHUTDOWN_DIR`,
//!    enqueue jobs and `sync` (acknowledged), `sync -f` the file system
//!    (writeback cleans every page), shut it down (`xfs_io -x -c
//!    shutdown`, which ext4 takes too), then keep enqueueing and syncing:
//!    a call must fail within a few rounds, every call after it must fail,
//!    and no signal may end the process. The acknowledged count goes to
//!    `WALQ_FS_SHUTDOWN_STATE`.
//! 2. The script unmounts and mounts the file system again (log recovery).
//! 3. `WALQ_FS_SHUTDOWN_PHASE=check`: open and drain: every acknowledged
//!    job is there, with its payload.
//!
//! Without `WALQ_FS_SHUTDOWN_DIR` the test says so and does nothing;
//! `tests/external_damage.rs` checks the same refusal of a store (a page
//! past the end of a cut file) in every `cargo test`.

use std::path::Path;
use std::process::Command;

use walq::{Durability, ErrorKind, Options, Queue};

const JOB_BYTES: usize = 1000;
/// Jobs acknowledged (enqueued and synced) before the shutdown.
const BEFORE: u64 = 200;
/// Rounds of (10 enqueues + a sync) after the shutdown in which some call
/// must fail.
const ROUNDS: u64 = 50;

fn payload(seq: u64) -> Vec<u8> {
    let mut p = vec![(seq % 251) as u8; JOB_BYTES];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    p
}

fn options() -> Options {
    let durability = match std::env::var("WALQ_FS_SHUTDOWN_DURABILITY").as_deref() {
        Ok("os") => Durability::Os,
        _ => Durability::Sync,
    };
    Options::default()
        .durability(durability)
        .segment_size(8 << 20)
}

fn run_cmd(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd} {args:?}: {e}");
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Phase 1; returns the number of acknowledged jobs.
fn run(dir: &Path, mnt: &str) -> u64 {
    let q = Queue::open_with(dir, options()).expect("open");
    for seq in 0..BEFORE {
        q.enqueue(&payload(seq))
            .expect("enqueue before the shutdown");
    }
    q.sync().expect("sync before the shutdown");
    let mut acked = BEFORE;
    run_cmd("sync", &["-f", &dir.to_string_lossy()]);
    run_cmd("xfs_io", &["-x", "-c", "shutdown", mnt]);
    let mut seq = BEFORE;
    let mut first: Option<walq::Error> = None;
    'rounds: for _ in 0..ROUNDS {
        for _ in 0..10 {
            if let Err(e) = q.enqueue(&payload(seq)) {
                first = Some(e);
                break 'rounds;
            }
            seq += 1;
        }
        match q.sync() {
            Ok(()) => acked = seq,
            Err(e) => {
                first = Some(e);
                break;
            }
        }
    }
    let first = first.expect("a call fails on a file system that shut down");
    println!("fs shutdown: first failure after {seq} enqueues: {first}");
    assert!(
        matches!(first.kind(), ErrorKind::Io | ErrorKind::Poisoned),
        "an I/O error: {first}"
    );
    for what in ["enqueue", "sync", "dequeue"] {
        let r = match what {
            "enqueue" => q.enqueue(b"after").map(|_| ()),
            "sync" => q.sync(),
            _ => q.dequeue().map(|_| ()),
        };
        let e = r.expect_err("every call after the failure fails");
        println!("fs shutdown: {what} after it: {e}");
    }
    acked
}

/// Phase 3: every acknowledged job is there.
fn check(dir: &Path, acked: u64) {
    let q = Queue::open_with(dir, options()).expect("reopen after the remount");
    let mut seen = vec![false; acked as usize];
    while let Some(job) = q.dequeue().expect("dequeue") {
        let p = job.payload();
        let seq = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
        assert_eq!(p, &payload(seq)[..], "job {seq}'s payload");
        if let Some(s) = seen.get_mut(seq as usize) {
            *s = true;
        }
        q.ack(job.receipt()).expect("ack");
    }
    let missing: Vec<usize> = (0..seen.len()).filter(|&i| !seen[i]).collect();
    assert!(missing.is_empty(), "acknowledged jobs lost: {missing:?}");
    println!("fs shutdown: all {acked} acknowledged jobs are there");
}

#[test]
fn a_file_system_that_shuts_down_is_an_error_not_a_signal() {
    let Ok(dir) = std::env::var("WALQ_FS_SHUTDOWN_DIR") else {
        println!("WALQ_FS_SHUTDOWN_DIR is not set: nothing to do (.ci/fs-matrix.sh sets it)");
        return;
    };
    let state = std::env::var("WALQ_FS_SHUTDOWN_STATE").expect("WALQ_FS_SHUTDOWN_STATE");
    let dir = Path::new(&dir);
    match std::env::var("WALQ_FS_SHUTDOWN_PHASE").as_deref() {
        Ok("run") => {
            let mnt = std::env::var("WALQ_FS_SHUTDOWN_MNT").expect("WALQ_FS_SHUTDOWN_MNT");
            let acked = run(dir, &mnt);
            std::fs::write(&state, acked.to_string()).expect("write the state file");
        }
        Ok("check") => {
            let acked: u64 = std::fs::read_to_string(&state)
                .expect("the run phase's state")
                .trim()
                .parse()
                .expect("a count");
            check(dir, acked);
        }
        other => panic!("WALQ_FS_SHUTDOWN_PHASE must be run or check, not {other:?}"),
    }
}
