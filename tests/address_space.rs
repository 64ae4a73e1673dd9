//! A process whose address space is bounded (`ulimit -v`, `RLIMIT_AS`):
//! a segment walq cannot map is an error naming it, never a panic or an
//! abort, and the queue goes on serving what it holds. The limit is the
//! kernel's own (`mmap` fails with ENOMEM), set in a child process, since
//! it cannot be lifted once lowered.
//!
//! The child is this test binary run again with `WALQ_AS_CHILD=<dir>`: it
//! opens a queue, lowers its limit to what it uses plus less than one
//! segment, and works until the next segment cannot be mapped. The parent
//! then reopens the directory without the limit and checks every job the
//! child was told was enqueued.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use walq::{Durability, ErrorKind, Options, Queue};

const CHILD_DIR_ENV: &str = "WALQ_AS_CHILD";
const CHILD_CASE_ENV: &str = "WALQ_AS_CHILD_CASE";
const CHILD_TEST: &str = "address_space_child";
const SEGMENT: u64 = 64 * 1024 * 1024;
const PAYLOAD: usize = 64 * 1024;

fn opts(segment: u64) -> Options {
    Options::default()
        .segment_size(segment)
        .durability(Durability::Os)
        .visibility_timeout(Duration::from_secs(30))
}

/// This process's address space in bytes (`VmSize`).
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmSize:"))
        .expect("VmSize");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmSize in kB");
    kb * 1024
}

/// Lowers this process's address-space limit to what it uses plus `room`.
fn limit_address_space(room: u64) {
    let cap = vm_size() + room;
    let lim = libc::rlimit {
        rlim_cur: cap as libc::rlim_t,
        rlim_max: cap as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we pass; no memory is shared.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// Lets the queue's threads (started by the open) start running before
/// the limit is lowered: a thread that starts under it cannot map its
/// signal stack, and the standard library aborts the process then (not
/// walq's to change; a program under `ulimit -v` starts walq's threads at
/// its open, before it runs short). Not a timing assertion: a slow start
/// would fail the child loudly, not pass it.
fn settle_threads() {
    std::thread::sleep(Duration::from_millis(300));
}

/// Case "rotate": the open maps its first segment, then the limit leaves
/// room for less than a second one; enqueues run until the rotation's map
/// fails. Prints `ENQUEUED <n>`.
fn child_rotate(dir: &Path) {
    let q = Queue::open_with(dir, opts(SEGMENT)).expect("open before the limit");
    settle_threads();
    limit_address_space(SEGMENT / 2);
    let payload = vec![7u8; PAYLOAD];
    let mut enqueued = 0u64;
    let err = loop {
        match q.enqueue(&payload) {
            Ok(_) => enqueued += 1,
            Err(e) => break e,
        }
        assert!(
            enqueued < 4 * SEGMENT / PAYLOAD as u64,
            "the map never failed"
        );
    };
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let text = err.to_string();
    assert!(text.contains("0000000002.wal"), "names the segment: {text}");
    assert!(text.contains("Cannot allocate memory"), "{text}");
    // The queue still serves and settles what it holds.
    let job = q
        .dequeue()
        .expect("dequeue after the failure")
        .expect("a job");
    assert_eq!(job.payload().len(), PAYLOAD);
    q.ack(job.receipt()).expect("ack after the failure");
    q.close().expect("close after the failure");
    println!("ENQUEUED {enqueued}");
}

/// Case "open": the limit leaves no room for the first segment's map: the
/// open is an error naming it.
fn child_open(dir: &Path) {
    limit_address_space(SEGMENT / 2);
    let err = Queue::open_with(dir, opts(1 << 30)).expect_err("the map cannot fit");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("0000000001.wal"), "{err}");
    println!("REFUSED");
}

/// The child's body; does nothing unless the parent started this process.
#[test]
fn address_space_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    match std::env::var(CHILD_CASE_ENV).as_deref() {
        Ok("rotate") => child_rotate(Path::new(&dir)),
        Ok("open") => child_open(Path::new(&dir)),
        other => panic!("unknown case {other:?}"),
    }
}

/// Runs the child case `case` on `dir`; its stdout, asserting it passed.
fn run_child(dir: &Path, case: &str) -> String {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args([
            CHILD_TEST,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_CASE_ENV, case)
        // One malloc arena: a thread's first allocation does not reserve
        // 64 MiB of address space of its own.
        .env("MALLOC_ARENA_MAX", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child {case}: {stdout}{stderr}");
    stdout
}

#[test]
fn a_segment_that_cannot_be_mapped_fails_the_enqueue_and_loses_nothing() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = run_child(tmp.path(), "rotate");
    let enqueued: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("ENQUEUED "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count: {out}"));
    assert!(enqueued > 0, "{out}");
    let q = Queue::open_with(tmp.path(), opts(SEGMENT)).unwrap();
    let mut held = 0u64;
    while let Some(job) = q.dequeue().unwrap() {
        assert_eq!(job.payload(), &[7u8; PAYLOAD][..]);
        q.ack(job.receipt()).unwrap();
        held += 1;
    }
    assert_eq!(held, enqueued - 1, "every job but the one acked");
    // Without the limit the log rotates again.
    for _ in 0..(SEGMENT as usize / PAYLOAD + 8) {
        q.enqueue(&[1u8; PAYLOAD]).unwrap();
    }
    assert!(q.stats().segments >= 2);
}

#[test]
fn an_open_whose_first_segment_cannot_be_mapped_is_an_error_naming_it() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = run_child(tmp.path(), "open");
    assert!(out.contains("REFUSED"), "{out}");
    let q = Queue::open_with(tmp.path(), opts(1 << 30)).expect("opens without the limit");
    q.enqueue(b"after").unwrap();
    assert_eq!(q.dequeue().unwrap().unwrap().payload(), b"after");
}
