//! `walq export` of a queue whose payloads are far more than the process
//! may hold: it completes, each pending job's payload read back from its
//! segment when its line is written. Before, export read the queue through
//! a snapshot holding every payload in memory, and died (the allocator's
//! abort) once they passed the limit. Dead letters likewise: each payload
//! is read back from `dead.wal` when its letter is written (before, the
//! dead-letter file was read whole, every payload held).

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};

use walq::{Durability, EnqueueOptions, Options, Queue};

/// The data limit of the export (KiB, for `ulimit -d`: heap and other
/// private memory; `ulimit -v` would also count mapped files).
const DATA_KIB: u64 = 256 << 10;

/// Payloads: 1 MiB each, starting with their number.
const PAYLOAD: usize = 1 << 20;

/// Jobs: 1 GiB of payloads, four times the limit.
const JOBS: usize = 1024;

/// The payload of job `i`.
fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("{i:06}:").into_bytes();
    p.resize(PAYLOAD, b'a' + (i % 26) as u8);
    p
}

/// A closed queue in `dir` with [`JOBS`] jobs (every tenth with a key),
/// written without syncs.
fn fill(dir: &std::path::Path) {
    let q = Queue::open_with(dir, Options::default().durability(Durability::Os)).unwrap();
    for i in 0..JOBS {
        let mut opts = EnqueueOptions::new();
        if i % 10 == 0 {
            opts = opts.idempotency_key(format!("k{i}"));
        }
        q.enqueue_with(&payload(i), opts).unwrap();
    }
    q.close().unwrap();
}

/// Runs `walq export` of `dir` under the data limit and hands each line
/// (its number, its JSON) to `check` as it is written (so the export is
/// never held whole here either); returns how many lines there were and
/// what the export wrote to stderr, once it exited with 0.
fn export_under_the_limit(
    dir: &std::path::Path,
    mut check: impl FnMut(usize, &serde_json::Value),
) -> (usize, String) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -d {DATA_KIB} && exec \"$0\" export \"$1\""))
        .args([env!("CARGO_BIN_EXE_walq"), dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = common::quiet(|| cmd.spawn().expect("spawn sh"));
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = 0;
    for (n, line) in stdout.lines().enumerate() {
        let line = line.expect("a line of UTF-8");
        lines += 1;
        check(n, &common::json(&line));
    }
    let out = child.wait_with_output().expect("wait sh");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (lines, stderr)
}

/// Runs `walq salvage` of `dir` into `into` under the data limit; it must
/// exit with 0.
fn salvage_under_limit(dir: &std::path::Path, into: &std::path::Path) -> common::Run {
    let script = format!("ulimit -d {DATA_KIB} && exec \"$0\" salvage \"$1\" --into \"$2\"");
    let args = [
        env!("CARGO_BIN_EXE_walq"),
        dir.to_str().unwrap(),
        into.to_str().unwrap(),
    ];
    let run = common::sh(&script, &args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    run
}

#[test]
fn a_queue_larger_than_the_memory_limit_exports_completely() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    common::quiet(|| fill(&dir));
    let (lines, stderr) = export_under_the_limit(&dir, |n, v| {
        if n == 0 {
            assert_eq!(v["jobs"], JOBS as u64, "{v}");
            return;
        }
        let i = n - 1;
        assert_eq!(v["type"], "job");
        let text = v["payload"].as_str().expect("a text payload");
        assert!(text.as_bytes() == payload(i), "job {i}: another payload");
        if i % 10 == 0 {
            assert_eq!(v["key"], format!("k{i}"));
        }
    });
    assert_eq!(lines, 1 + JOBS, "{stderr}");
    let done = format!("exported {JOBS} pending jobs and 0 dead letters");
    assert!(stderr.contains(&done), "{stderr}");
}

/// `walq salvage` reads the queue the same way: it copies every job of a
/// queue larger than the limit, each with its payload.
#[test]
fn a_queue_larger_than_the_memory_limit_is_salvaged_completely() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, into) = (tmp.path().join("q"), tmp.path().join("new"));
    common::quiet(|| fill(&dir));
    let run = salvage_under_limit(&dir, &into);
    let copied = format!("copied {JOBS} pending jobs and 0 dead letters");
    assert!(run.stdout.contains(&copied), "{}", run.stdout);
    common::quiet(|| {
        let q = Queue::open(&into).unwrap();
        assert_eq!(q.stats().ready, JOBS as u64);
        for i in 0..JOBS {
            let job = q.dequeue_timeout(std::time::Duration::ZERO).unwrap();
            let job = job.unwrap_or_else(|| panic!("job {i} is missing"));
            assert!(job.payload() == payload(i), "job {i}: another payload");
        }
    });
}

/// A closed queue in `dir` with [`JOBS`] dead letters (every tenth with a
/// key), each enqueued, leased and failed with one attempt allowed,
/// written without syncs: `dead.wal` holds 1 GiB of payloads.
fn fill_dead(dir: &std::path::Path) {
    let q = Queue::open_with(dir, Options::default().durability(Durability::Os)).unwrap();
    for i in 0..JOBS {
        let mut opts = EnqueueOptions::new().max_attempts(1);
        if i % 10 == 0 {
            opts = opts.idempotency_key(format!("k{i}"));
        }
        q.enqueue_with(&payload(i), opts).unwrap();
        let job = q.dequeue_timeout(std::time::Duration::ZERO).unwrap();
        q.fail(job.unwrap().receipt(), &format!("failed {i}"))
            .unwrap();
    }
    assert_eq!(q.dead_letter_ids().len(), JOBS);
    q.close().unwrap();
}

/// Dead letters are read back one at a time too: 1 GiB of them exports
/// under the limit. Before, the snapshot read `dead.wal` whole and held
/// every dead letter's payload, and the export died.
#[test]
fn dead_letters_larger_than_the_memory_limit_export_completely() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    common::quiet(|| fill_dead(&dir));
    let (lines, stderr) = export_under_the_limit(&dir, |n, v| {
        if n == 0 {
            assert_eq!((&v["jobs"], &v["dead"]), (&0.into(), &JOBS.into()), "{v}");
            return;
        }
        let i = n - 1;
        assert_eq!(v["type"], "dead");
        assert_eq!(v["error"], format!("failed {i}"));
        let text = v["payload"].as_str().expect("a text payload");
        assert!(
            text.as_bytes() == payload(i),
            "dead letter {i}: another payload"
        );
        if i % 10 == 0 {
            assert_eq!(v["key"], format!("k{i}"));
        }
    });
    assert_eq!(lines, 1 + JOBS, "{stderr}");
    let done = format!("exported 0 pending jobs and {JOBS} dead letters");
    assert!(stderr.contains(&done), "{stderr}");
}

/// `walq salvage` of the same queue copies every dead letter, each with
/// its payload, key and error.
#[test]
fn dead_letters_larger_than_the_memory_limit_are_salvaged_completely() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, into) = (tmp.path().join("q"), tmp.path().join("new"));
    common::quiet(|| fill_dead(&dir));
    let run = salvage_under_limit(&dir, &into);
    let copied = format!("copied 0 pending jobs and {JOBS} dead letters");
    assert!(run.stdout.contains(&copied), "{}", run.stdout);
    common::quiet(|| {
        let q = Queue::open(&into).unwrap();
        let ids = q.dead_letter_ids();
        assert_eq!(ids.len(), JOBS);
        for (i, id) in ids.into_iter().enumerate() {
            let d = q.dead_letter(id).unwrap().expect("listed");
            assert!(d.payload == payload(i), "dead letter {i}: another payload");
            assert_eq!(d.error, format!("failed {i}"));
            let key = (i % 10 == 0).then(|| format!("k{i}").into_bytes());
            assert_eq!(d.key, key, "dead letter {i}");
        }
    });
}
