//! Bounded file descriptors (guarantee 14): sealed segments hold none, so
//! a long backlog of small segments is written, reopened and drained under
//! a low descriptor limit. Bounded memory maps too: sealed segments are
//! mapped on demand and unmapped least recently used first, so the number
//! of segment maps stays below walq's bound (256) whatever the backlog
//! (each map is an entry of `vm.max_map_count`).
//!
//! The limit is set with `setrlimit(RLIMIT_NOFILE)` in a child process (this
//! test binary re-run with `WALQ_FD_CHILD` set), so no other test is
//! affected.

use std::path::Path;
use std::process::Command;

use walq::{Durability, Options, Queue, MIN_SEGMENT_SIZE};

const CHILD_ENV: &str = "WALQ_FD_CHILD";
const SEGMENTS: usize = 10_000;
const LIMIT: u64 = 256;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Maps of segment files of the queue in `dir` (lines of
/// `/proc/self/maps` that name one).
fn segment_maps(dir: &Path) -> usize {
    let dir = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/maps").map_or(0, |maps| {
        maps.lines()
            // A deleted segment still mapped counts too.
            .map(|l| l.trim_end_matches(" (deleted)"))
            .filter(|l| l.contains(&*dir) && l.ends_with(".wal") && !l.ends_with("dead.wal"))
            .count()
    })
}

/// The bound on maps the test checks: walq's 256 and a few in use by the
/// current operation.
const MAX_MAPS: usize = 256 + 8;

fn options() -> Options {
    Options::default()
        .segment_size(MIN_SEGMENT_SIZE)
        .durability(Durability::Os)
}

/// One job fills a 64 KiB segment: every enqueue starts a new one.
fn payload(i: usize) -> Vec<u8> {
    let mut p = vec![(i % 251) as u8; 40 << 10];
    p[..8].copy_from_slice(&(i as u64).to_le_bytes());
    p
}

fn child(dir: &Path) {
    let lim = libc::rlimit {
        rlim_cur: LIMIT,
        rlim_max: LIMIT,
    };
    // SAFETY: plain syscall with a valid struct.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    let mut max_fds = 0;
    let mut max_maps = 0;
    {
        let q = Queue::open_with(dir, options()).unwrap();
        for i in 0..SEGMENTS {
            q.enqueue(&payload(i))
                .unwrap_or_else(|e| panic!("enqueue {i} under a {LIMIT}-descriptor limit: {e}"));
            max_fds = max_fds.max(open_fds());
            if i % 97 == 0 {
                max_maps = max_maps.max(segment_maps(dir));
            }
        }
        q.close().unwrap();
    }
    let segments = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.ends_with(".wal") && name != "dead.wal"
        })
        .count();
    assert!(segments >= SEGMENTS, "{segments} segments");
    let q = Queue::open_with(dir, options())
        .unwrap_or_else(|e| panic!("reopening {segments} segments: {e}"));
    max_fds = max_fds.max(open_fds());
    let mut drained_maps = segment_maps(dir);
    let mut held = Vec::new();
    for i in 0..SEGMENTS {
        let job = q.dequeue().unwrap().expect("a job per segment");
        assert_eq!(job.payload(), &payload(i)[..]);
        q.ack(job.receipt()).unwrap();
        max_fds = max_fds.max(open_fds());
        if i % 97 == 0 {
            drained_maps = drained_maps.max(segment_maps(dir));
            // A job kept by the user pins no map: its payload is its own.
            held.push(job);
        }
    }
    assert!(q.dequeue().unwrap().is_none());
    for (n, job) in held.iter().enumerate() {
        assert_eq!(job.payload(), &payload(n * 97)[..]);
    }
    max_maps = max_maps.max(drained_maps);
    println!(
        "WALQ_FD_RESULT segments={segments} max_open_fds={max_fds} max_segment_maps={max_maps}"
    );
    assert!(max_fds < 64, "{max_fds} descriptors open at most");
    assert!(max_maps <= MAX_MAPS, "{max_maps} segment maps at most");
}

#[test]
fn a_backlog_of_10000_segments_opens_and_drains_under_256_descriptors() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    // tmpfs where there is one: the test is about descriptors, not about
    // 30,000 fsyncs of a real disk.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_backlog_of_10000_segments_opens_and_drains_under_256_descriptors",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let result = stdout
        .lines()
        .find_map(|l| l.find("WALQ_FD_RESULT").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no result line:\n{stdout}\n{stderr}"));
    println!("{result}");
}
