//! `walq stats`, `peek` and `show` on real queue directories: healthy,
//! held by a running process, empty, and paths that hold no queue.

mod common;

use common::{contents, healthy, image, json, opts, quiet, walq};
use walq::Queue;

#[test]
fn stats_counts_a_healthy_queue_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let before = image(dir.path());
    let d = dir.path().to_str().unwrap();
    let run = walq(&["stats", d, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = json(run.stdout.trim());
    assert_eq!(v["ready"], 2, "{v}");
    assert_eq!(v["delayed"], 1, "{v}");
    assert_eq!(v["leased"], 0, "{v}");
    assert_eq!(v["dead"], 1, "{v}");
    assert_eq!(v["next_job_id"], 6, "{v}");
    assert_eq!(v["live"], false, "{v}");
    assert_eq!(v["damage"], 0, "{v}");
    let table = walq(&["stats", d]);
    assert_eq!(table.code, 0);
    assert!(table.stdout.contains("ready      2"), "{}", table.stdout);
    assert!(table.stdout.contains("dead       1"), "{}", table.stdout);
    assert!(!table.stderr.contains("live"), "{}", table.stderr);
    for args in [vec!["peek", d], vec!["show", d, "1"], vec!["show", d, "5"]] {
        assert_eq!(walq(&args).code, 0);
    }
    assert_eq!(
        image(dir.path()),
        before,
        "a read-only command changed a file"
    );
}

#[test]
fn peek_lists_jobs_in_delivery_order_with_readable_payloads() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    let run = walq(&["peek", d, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let jobs: Vec<_> = run.stdout.lines().map(json).collect();
    let ids: Vec<_> = jobs.iter().map(|j| j["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3], "ready ones first, the delayed one last");
    assert_eq!(jobs[0]["payload"], "alpha");
    assert_eq!(jobs[0]["key"], "k-alpha");
    assert_eq!(jobs[0]["attempts"], 1);
    assert_eq!(jobs[1]["payload_base64"], "/wB/");
    assert_eq!(jobs[2]["status"], "delayed");
    let text = walq(&["peek", d, "-n", "2"]);
    assert_eq!(text.stdout.lines().count(), 2, "{}", text.stdout);
    assert!(text.stdout.contains("hex:ff007f"), "{}", text.stdout);
    assert!(text.stdout.contains("\"alpha\""), "{}", text.stdout);
}

#[test]
fn show_gives_each_status() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    let json_job = walq(&["show", d, "3", "--json"]);
    assert_eq!(json_job.code, 0, "{}", json_job.stderr);
    let v = json(json_job.stdout.trim());
    assert_eq!(v["status"], "delayed");
    assert_eq!(v["payload"], r#"{"to":"ada@example.com"}"#);
    let text = walq(&["show", d, "3"]);
    assert!(
        text.stdout.contains(r#"json:{"to":"ada@example.com"}"#),
        "{}",
        text.stdout
    );
    let dead = walq(&["show", d, "5"]);
    assert!(dead.stdout.contains("status     dead"), "{}", dead.stdout);
    assert!(dead.stdout.contains("error      boom"), "{}", dead.stdout);
    assert!(dead.stdout.contains("\"k-dead\""), "{}", dead.stdout);
    let acked = walq(&["show", d, "4"]);
    assert!(acked.stdout.contains("finished"), "{}", acked.stdout);
    let unknown = walq(&["show", d, "99"]);
    assert_eq!(unknown.code, 5, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("no job 99"), "{}", unknown.stderr);
}

#[test]
fn read_only_commands_work_on_a_live_queue_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let q = Queue::open_with(dir.path(), opts()).unwrap();
    q.enqueue(b"while it runs").unwrap();
    let d = dir.path().to_str().unwrap();
    let run = walq(&["stats", d, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("the queue is live"), "{}", run.stderr);
    assert!(
        run.stderr.contains("may already be stale"),
        "{}",
        run.stderr
    );
    let v = json(run.stdout.trim());
    assert_eq!(v["live"], true);
    assert_eq!(
        v["ready"], 3,
        "the job enqueued by the live process is seen: {v}"
    );
    let show = walq(&["show", d, "6"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert!(show.stdout.contains("while it runs"), "{}", show.stdout);
    // The running process still owns the queue afterwards.
    q.enqueue(b"after").unwrap();
    drop(q);
}

#[test]
fn an_empty_queue_has_zero_jobs() {
    let dir = tempfile::tempdir().unwrap();
    quiet(|| {
        Queue::open_with(dir.path(), opts())
            .unwrap()
            .close()
            .unwrap()
    });
    let d = dir.path().to_str().unwrap();
    let run = walq(&["stats", d, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = json(run.stdout.trim());
    assert_eq!(
        (v["ready"].as_u64(), v["dead"].as_u64()),
        (Some(0), Some(0))
    );
    let peek = walq(&["peek", d]);
    assert_eq!(peek.stdout.trim(), "no pending jobs");
}

#[test]
fn paths_without_a_queue_are_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = dir.path().join("file.txt");
    std::fs::write(&file, b"hello").unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.wal.txt"), b"x").unwrap();
    let missing = dir.path().join("missing");
    for (path, says) in [
        (&empty, "not a walq queue"),
        (&other, "not a walq queue"),
        (&file, "not a directory"),
        (&missing, "no such directory"),
    ] {
        let p = path.to_str().unwrap();
        for cmd in ["stats", "peek"] {
            let run = walq(&[cmd, p]);
            assert_eq!(run.code, 3, "{cmd} {p}: {}", run.stderr);
            assert!(run.stderr.contains(says), "{cmd} {p}: {}", run.stderr);
            assert!(run.stderr.contains(p), "names the path: {}", run.stderr);
        }
    }
    assert!(
        !missing.exists(),
        "a read-only command created the directory"
    );
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

#[test]
fn usage_errors_exit_2_and_help_lists_exit_codes() {
    assert_eq!(walq(&["stats"]).code, 2);
    assert_eq!(walq(&["frobnicate"]).code, 2);
    let help = walq(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Exit codes:"), "{}", help.stdout);
    let stats_help = walq(&["stats", "--help"]);
    assert!(
        stats_help.stdout.contains("Examples:"),
        "{}",
        stats_help.stdout
    );
}

#[test]
fn show_gives_the_result_kept_in_done_rec() {
    let dir = tempfile::tempdir().unwrap();
    quiet(|| {
        let q = Queue::open_with(dir.path(), opts()).unwrap();
        let id = q.enqueue(b"render invoice").unwrap();
        let job = q.dequeue().unwrap().unwrap();
        q.ack_with_result(job.receipt(), br#"{"pages":3}"#).unwrap();
        assert_eq!(id, 1);
        q.close().unwrap();
    });
    let d = dir.path().to_str().unwrap();
    let text = walq(&["show", d, "1"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout.contains("status     done at"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(r#"result     json:{"pages":3}"#),
        "{}",
        text.stdout
    );
    let v = json(walq(&["show", d, "1", "--json"]).stdout.trim());
    assert_eq!(
        (v["status"].as_str(), v["result"].as_str()),
        (Some("done"), Some(r#"{"pages":3}"#))
    );
    let dump = walq(&["dump", d]);
    assert!(dump.stdout.contains("done.rec @64"), "{}", dump.stdout);
}

/// A finished job at or below the horizon of dropped purge markers (the
/// library's `horizon` fixture) shows as expired, not as acked, in text
/// and JSON; `dump` names the Horizon record.
#[test]
fn show_tells_an_expired_job_from_an_acked_one() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/horizon");
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let text = walq(&["show", d, "2"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout.contains("status     expired"),
        "{}",
        text.stdout
    );
    let v = json(walq(&["show", d, "1", "--json"]).stdout.trim());
    assert_eq!(v["status"].as_str(), Some("expired"));
    let v = json(walq(&["show", d, "3", "--json"]).stdout.trim());
    assert_eq!(v["status"].as_str(), Some("purged"));
    let dump = walq(&["dump", d]);
    assert!(dump.stdout.contains("horizon"), "{}", dump.stdout);
}

/// `export -o` (found by review): a symbolic link to a file not yet in
/// the queue directory is refused before anything is created there
/// (before: the open created an empty `0000000002.wal`, and the queue no
/// longer opened); an existing file is made private (0600) before the
/// payloads go in; a device is written as it is (before: `set_len` on
/// `/dev/null` failed).
#[test]
fn export_output_paths_are_checked_before_anything_is_written() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    let before = contents(dir.path());
    let out = tempfile::tempdir().unwrap();
    let link = out.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("0000000099.wal"), &link).unwrap();
    let run = walq(&["export", d, "-o", link.to_str().unwrap()]);
    assert_eq!(run.code, 6, "{}", run.stderr);
    assert!(run.stderr.contains("only reads"), "{}", run.stderr);
    assert_eq!(
        contents(dir.path()),
        before,
        "export created a file in the queue"
    );
    assert_eq!(walq(&["verify", d]).code, 0);

    let open = out.path().join("open.jsonl");
    std::fs::write(&open, "old").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = walq(&["export", d, "-o", open.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mode = std::fs::metadata(&open).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "an existing output file keeps mode {mode:o}");
    let text = std::fs::read_to_string(&open).unwrap();
    assert!(text.contains("\"walq_export\":1"), "{text}");

    let run = walq(&["export", d, "-o", "/dev/null"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// A reader that went away (found by review): the command stops quietly
/// with 141, as a process killed by SIGPIPE, never 0 (before: 0, so
/// `walq verify DIR | head -1` read as healthy whatever it found).
#[test]
fn a_closed_output_is_never_success() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    for args in [vec!["verify", d], vec!["dump", d], vec!["export", d]] {
        let mut fds = [0; 2];
        // SAFETY: `pipe` fills both descriptors, owned from here on.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fresh descriptors from `pipe`, owned once each.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(read);
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_walq"))
            .args(&args)
            .stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(141), "walq {args:?} into a closed pipe");
    }
}

/// `show` gives a retrying job's last error (a NackErr record), in text
/// and JSON, and keeps it past a lease that ran out (a plain Nack), as
/// `Queue::last_error` does.
#[test]
fn show_gives_a_retrying_jobs_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let id = quiet(|| {
        let q = walq::Queue::open_with(dir.path(), opts()).unwrap();
        let id = q.enqueue(b"charge card").unwrap();
        let job = q.dequeue().unwrap().unwrap();
        let retry = walq::Retry::After(std::time::Duration::ZERO);
        q.nack(job.receipt(), retry, "card declined: insufficient funds")
            .unwrap();
        // Leased again and given back without a text (as a lease that
        // ran out is): the error stays.
        let job = q.dequeue().unwrap().unwrap();
        q.nack(job.receipt(), retry, "").unwrap();
        assert_eq!(
            q.last_error(id).unwrap().as_deref(),
            Some("card declined: insufficient funds")
        );
        q.close().unwrap();
        id
    });
    let d = dir.path().to_str().unwrap();
    let run = walq(&["show", d, &id.to_string()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("last error card declined: insufficient funds"),
        "{}",
        run.stdout
    );
    let run = walq(&["show", d, &id.to_string(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(v["last_error"], "card declined: insufficient funds");
}
