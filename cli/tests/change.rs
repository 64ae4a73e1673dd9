//! Commands that change a queue: dead redrive/purge, enqueue, import; the
//! lock of a running process; the export → import round trip.

mod common;

use std::collections::BTreeSet;

use common::{contents, healthy, image, json, large, opts, segments, walq, walq_stdin};
use walq::Queue;

/// A new temporary directory, and the path of a queue `q` in it (not
/// created yet) as a command-line argument.
fn new_queue_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("q").to_str().unwrap().to_owned();
    (dir, d)
}

fn stats(d: &str) -> serde_json::Value {
    let run = walq(&["stats", d, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    json(run.stdout.trim())
}

#[test]
fn dead_letters_are_listed_shown_redriven_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    let list = walq(&["dead", "list", d, "--json"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let letters: Vec<_> = list.stdout.lines().map(json).collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["id"], 5);
    assert_eq!(letters[0]["error"], "boom");
    let show = walq(&["dead", "show", d, "5"]);
    assert!(
        show.stdout.contains("payload    \"doomed\""),
        "{}",
        show.stdout
    );
    assert_eq!(walq(&["dead", "show", d, "1"]).code, 5);
    let redrive = walq(&["dead", "redrive", d, "5"]);
    assert_eq!(redrive.code, 0, "{}", redrive.stderr);
    assert_eq!(redrive.stdout.trim(), "redriven 1 dead letter");
    let s = stats(d);
    assert_eq!(
        (s["dead"].as_u64(), s["ready"].as_u64()),
        (Some(0), Some(3)),
        "{s}"
    );
    assert_eq!(walq(&["dead", "redrive", d, "5"]).code, 5, "no longer dead");
    // Kill the ready ones, then purge everything.
    common::quiet(|| {
        let q = Queue::open_with(dir.path(), opts()).unwrap();
        while let Some(job) = q.dequeue_timeout(std::time::Duration::ZERO).unwrap() {
            q.fail(job.receipt(), "again").unwrap();
        }
        q.close().unwrap();
    });
    assert_eq!(stats(d)["dead"], 3, "the delayed job is not ready");
    let purge = walq(&["dead", "purge", d, "--all"]);
    assert_eq!(purge.code, 0, "{}", purge.stderr);
    assert_eq!(purge.stdout.trim(), "purged 3 dead letters");
    assert_eq!(stats(d)["dead"], 0);
    assert_eq!(
        walq(&["dead", "purge", d]).code,
        2,
        "an id or --all is required"
    );
}

#[test]
fn writing_commands_report_the_running_process_that_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let q = Queue::open_with(dir.path(), opts()).unwrap();
    let d = dir.path().to_str().unwrap();
    let pid = format!("process {}", std::process::id());
    for (args, stdin) in [
        (vec!["dead", "redrive", d, "--all"], None),
        (vec!["dead", "purge", d, "5"], None),
        (vec!["enqueue", d, "x"], None),
        (vec!["import", d], Some("{\"walq_export\":1}\n")),
    ] {
        let run = walq_stdin(&args, stdin);
        assert_eq!(run.code, 4, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("LOCK is locked by"), "{}", run.stderr);
        assert!(
            run.stderr.contains(&pid),
            "names the holder: {}",
            run.stderr
        );
    }
    // Nothing changed under the running process.
    assert_eq!(q.stats().dead, 1);
    assert_eq!(q.dead_letters().unwrap().len(), 1);
    drop(q);
}

#[test]
fn enqueue_from_arguments_and_stdin() {
    let (_dir, d) = new_queue_dir();
    let d = d.as_str();
    let one = walq(&["enqueue", d, "hello", "--key", "k1", "--max-attempts", "2"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert_eq!(one.stdout.trim(), "enqueued job 1");
    let dup = walq(&["enqueue", d, "hello again", "--key", "k1"]);
    assert!(
        dup.stdout.contains("job 1 already has this key"),
        "{}",
        dup.stdout
    );
    let later = walq(&["enqueue", d, "later", "--delay", "10m"]);
    assert_eq!(later.stdout.trim(), "enqueued job 2");
    let lines = walq_stdin(&["enqueue", d], Some("a\nb\nc\n"));
    assert_eq!(
        lines.stdout.trim(),
        "enqueued 3 jobs (ids 3..=5)",
        "{}",
        lines.stderr
    );
    let s = stats(d);
    assert_eq!(
        (s["ready"].as_u64(), s["delayed"].as_u64()),
        (Some(4), Some(1)),
        "{s}"
    );
    let show = walq(&["show", d, "1", "--json"]);
    let v = json(show.stdout.trim());
    assert_eq!(
        (v["key"].as_str(), v["max_attempts"].as_u64()),
        (Some("k1"), Some(2))
    );
    assert_eq!(walq(&["enqueue", d, "x", "--delay", "soon"]).code, 2);
    assert_eq!(walq(&["enqueue", d, "a", "b", "--key", "k"]).code, 2);
}

/// Empty stdin lines are skipped, not enqueued as empty jobs.
#[test]
fn enqueue_skips_empty_lines() {
    let (_dir, d) = new_queue_dir();
    let d = d.as_str();
    let run = walq_stdin(&["enqueue", d], Some("a\n\nb\n\n"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "enqueued 2 jobs (ids 1..=2)");
    assert!(
        run.stderr.contains("skipped 2 empty line(s)"),
        "{}",
        run.stderr
    );
    assert_eq!(stats(d)["ready"], 2);
}

/// A line over the payload limit stops `enqueue` at that line, without
/// reading it whole; the jobs before it are kept, synced and counted.
#[test]
fn a_failed_enqueue_says_what_it_added_before_the_failure() {
    let (_dir, d) = new_queue_dir();
    let d = d.as_str();
    let long = "x".repeat(walq::DEFAULT_MAX_PAYLOAD as usize + 1);
    let input = format!("a\nb\n{long}\nc\n");
    let run = walq_stdin(&["enqueue", d], Some(&input));
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("stdin line 3"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("enqueued 2 jobs (ids 1..=2) before this (they are durable)"),
        "{}",
        run.stderr
    );
    assert_eq!(stats(d)["ready"], 2);
}

/// Lines are enqueued as they arrive: a producer that keeps stdin open
/// sees its first job in the queue before it sends the next.
#[test]
fn enqueue_takes_stdin_lines_as_they_arrive() {
    use std::io::Write;
    let (_dir, d) = new_queue_dir();
    let d = d.as_str();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_walq"))
        .args(["enqueue", d])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"first\n").unwrap();
    input.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = false;
    while !seen && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let peek = walq(&["peek", d, "--json"]);
        seen = peek.code == 0 && peek.stdout.contains("first");
    }
    input.write_all(b"second\n").unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        seen,
        "the first line was not enqueued while stdin stayed open"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "enqueued 2 jobs (ids 1..=2)"
    );
}

/// An import that fails part way (here the kernel refuses to grow
/// `dead.wal` past the process's file size limit with `EFBIG`) counts
/// what it added before the failure and says whether that is durable.
/// The target holds 40 MiB of dead letters first, so that the import's
/// 40 MiB more push `dead.wal` over the limit while its spill file (the
/// checked items, written in full before the first write) stays under it.
#[test]
fn a_failed_import_says_what_it_added_before_the_failure() {
    use std::io::Write;
    const DEAD: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let export = dir.path().join("export.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&export).unwrap());
    writeln!(out, r#"{{"walq_export":1}}"#).unwrap();
    let payload = "x".repeat(1 << 20);
    for _ in 0..DEAD {
        writeln!(
            out,
            r#"{{"type":"dead","payload":"{payload}","error":"e"}}"#
        )
        .unwrap();
    }
    drop(out);
    let (p, e) = (path.to_str().unwrap(), export.to_str().unwrap());
    let first = walq(&["import", p, "-i", e]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    // Segments (64 MiB) and the spill file (40 MiB) fit under the limit;
    // `dead.wal` (80 MiB) does not.
    let limit = walq::DEFAULT_SEGMENT_SIZE + (4 << 20);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_walq"));
    cmd.args([
        "import",
        path.to_str().unwrap(),
        "-i",
        export.to_str().unwrap(),
    ]);
    let run = with_file_size_limit(&mut cmd, limit).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(6), "{stderr}");
    let said = stderr
        .split("\nimported ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    // The failed write stopped the store (no write is trusted after one),
    // so the final sync is refused as well, and the message says so.
    let state = "dead letters before this (syncing them failed too, so they may be lost: ";
    assert!(stderr.contains(state), "{stderr}");
    let d = path.to_str().unwrap();
    let list = walq(&["dead", "list", d, "--json"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let kept = list.stdout.lines().count() as u64 - DEAD;
    // The dead letter being added when the write failed is left in flight
    // on its last attempt (its Enqueue and Lease records are one batch),
    // the message says so, and the next open moves it to the dead letters.
    assert_eq!(stats(d)["leased"], 1);
    assert!(stderr.contains("moved to the dead letters"), "{stderr}");
    assert!(kept > 0 && kept < DEAD, "{kept} dead letters kept");
    assert_eq!(said, Some(0), "jobs counted: {stderr}");
    assert!(
        stderr.contains(&format!("and {kept} dead letters before")),
        "{stderr}"
    );
    let q = walq::Queue::open(&path).unwrap();
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight, s.dead), (0, 0, DEAD + kept + 1));
}

#[test]
fn writing_commands_refuse_damaged_queues_and_foreign_paths() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let seg = &segments(dir.path())[0];
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[64 + 24 + 40] ^= 0x40;
    std::fs::write(seg, &bytes).unwrap();
    let run = walq(&["enqueue", dir.path().to_str().unwrap(), "x"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("0000000001.wal"),
        "names the file: {}",
        run.stderr
    );
    assert!(run.stderr.contains("walq salvage"), "{}", run.stderr);
    let empty = tempfile::tempdir().unwrap();
    let e = empty.path().to_str().unwrap();
    let redrive = walq(&["dead", "redrive", e, "--all"]);
    assert_eq!(redrive.code, 3, "{}", redrive.stderr);
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "no queue created"
    );
    // A directory of other files is not made a queue by enqueue/import.
    std::fs::write(empty.path().join("notes.txt"), b"mine").unwrap();
    for args in [vec!["enqueue", e, "x"], vec!["import", e]] {
        let run = walq_stdin(&args, Some("{\"walq_export\":1}\n"));
        assert_eq!(run.code, 3, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("holds files but no walq queue"),
            "{}",
            run.stderr
        );
        let names: Vec<_> = std::fs::read_dir(empty.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{args:?} created files: {names:?}");
    }
}

/// What an export says about each item, without ids and times.
fn items(export: &str) -> BTreeSet<String> {
    export
        .lines()
        .skip(1)
        .map(|l| {
            let mut v = json(l);
            let o = v.as_object_mut().unwrap();
            for k in ["id", "enqueued_ms", "due_ms", "dead_ms"] {
                o.remove(k);
            }
            // Attempts restart in the new queue; what is left is kept.
            if o["type"] == "job" {
                let left = o["max_attempts"].as_u64().unwrap() - o["attempts"].as_u64().unwrap();
                o.insert("left".into(), left.into());
            }
            o.remove("attempts");
            o.remove("max_attempts");
            v.to_string()
        })
        .collect()
}

#[test]
fn export_then_import_keeps_every_job_key_and_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    let before = image(dir.path());
    let out = walq(&["export", d]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(image(dir.path()), before, "export changed a file");
    let header = json(out.stdout.lines().next().unwrap());
    assert_eq!(header["walq_export"], 1);
    assert_eq!(out.stdout.lines().count(), 1 + 3 + 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("\"payload_base64\":\"/wB/\""),
        "{}",
        out.stdout
    );

    let target = tempfile::tempdir().unwrap();
    let t = target.path().join("copy");
    let t = t.to_str().unwrap();
    let import = walq_stdin(&["import", t], Some(&out.stdout));
    assert_eq!(import.code, 0, "{}", import.stderr);
    assert_eq!(
        import.stdout.trim(),
        "imported 3 pending jobs and 1 dead letters"
    );
    let again = walq(&["export", t]);
    assert_eq!(items(&again.stdout), items(&out.stdout));
    let s = stats(t);
    assert_eq!(
        (
            s["ready"].as_u64(),
            s["delayed"].as_u64(),
            s["dead"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    // The keys are live in the new queue: resubmitting is a duplicate.
    let dup = walq(&["enqueue", t, "alpha", "--key", "k-alpha"]);
    assert!(
        dup.stdout.contains("already has this key"),
        "{}",
        dup.stdout
    );
    // A file that is not an export is refused before anything is written.
    let bad = walq_stdin(
        &["import", t],
        Some("{\"walq_export\":1}\n{\"type\":\"job\"}\n"),
    );
    assert_eq!(bad.code, 6, "{}", bad.stderr);
    assert!(bad.stderr.contains("line 2"), "{}", bad.stderr);
}

#[test]
fn levels_and_groups_are_shown_and_survive_export_import() {
    let (_dir, d) = new_queue_dir();
    let d = d.as_str();
    for (payload, extra) in [
        ("plain", vec![]),
        ("first of c42", vec!["--group", "c42"]),
        ("second of c42", vec!["--group", "c42"]),
        ("reset password", vec!["--priority", "urgent"]),
        ("report", vec!["--priority", "low", "--group", "nightly"]),
    ] {
        let mut args = vec!["enqueue", d, payload];
        args.extend(extra);
        let run = walq(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let bad = walq(&["enqueue", d, "x", "--priority", "soon"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("unknown priority"), "{}", bad.stderr);

    // The second job of c42 waits for the first: blocked (counted as
    // delayed), listed after the ready jobs; the urgent job is listed
    // first.
    let s = stats(d);
    assert_eq!(
        (s["ready"].as_u64(), s["delayed"].as_u64()),
        (Some(4), Some(1))
    );
    let peek = walq(&["peek", d, "--json"]);
    let order: Vec<String> = common::json_lines(&peek.stdout)
        .iter()
        .map(|j| j["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order[0], "reset password", "{order:?}");
    assert_eq!(order[4], "second of c42", "{order:?}");
    let text = walq(&["peek", d]);
    assert!(text.stdout.contains("urgent  "), "{}", text.stdout);
    assert!(text.stdout.contains("group \"c42\""), "{}", text.stdout);
    let show = walq(&["show", d, "3"]);
    assert!(
        show.stdout
            .contains("group      \"c42\" (waits for an older job of its group)"),
        "{}",
        show.stdout
    );
    let dump = walq(&["dump", d, "--json"]);
    let urgent = common::json_lines(&dump.stdout)
        .into_iter()
        .find(|r| r["payload"] == "reset password")
        .expect("the urgent job's record");
    assert_eq!(urgent["priority"], "urgent");

    // Export → import keeps every level and group, and the group's order.
    let out = walq(&["export", d]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = tempfile::tempdir().unwrap();
    let t = target.path().join("copy");
    let t = t.to_str().unwrap();
    let import = walq_stdin(&["import", t], Some(&out.stdout));
    assert_eq!(import.code, 0, "{}", import.stderr);
    assert_eq!(items(&walq(&["export", t]).stdout), items(&out.stdout));
    let q = Queue::open_with(target.path().join("copy"), opts()).unwrap();
    let first = q.dequeue().unwrap().unwrap();
    assert_eq!(first.payload(), b"reset password");
    let mut c42 = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        if job.group() == Some(&b"c42"[..]) {
            c42.push(job.payload().to_vec());
        }
        q.ack(job.receipt()).unwrap();
    }
    assert_eq!(
        c42,
        vec![b"first of c42".to_vec(), b"second of c42".to_vec()]
    );
    a_blocked_job_is_named_as_the_library_names_it(d);
}

/// The jobs of a store, queue by queue (the default queue first), as
/// `queue:payload` in delivery order, leased and not settled; and the dead
/// letters as `queue:level:payload`.
fn by_queue(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let store = walq::Store::open_with(dir, opts()).unwrap();
    let mut jobs = Vec::new();
    for name in ["", "mail", "video"] {
        let q = if name.is_empty() {
            store.default_queue()
        } else {
            store.queue(name).unwrap()
        };
        while let Some(job) = q.dequeue_timeout(std::time::Duration::ZERO).unwrap() {
            jobs.push(format!("{name}:{}", String::from_utf8_lossy(job.payload())));
        }
    }
    let dead = store
        .default_queue()
        .dead_letters()
        .unwrap()
        .iter()
        .map(|d| {
            let payload = String::from_utf8_lossy(&d.payload);
            format!("{}:{}:{payload}", d.queue, d.priority)
        })
        .collect();
    (jobs, dead)
}

/// Named queues through the command line: `enqueue --queue`, `peek` and
/// `show` name each job's queue, and export → import and salvage put every
/// job and dead letter back in its own queue (before, all of them landed
/// in the default queue, where that queue's workers never look).
#[test]
fn named_queues_are_shown_and_kept_by_export_import_and_salvage() {
    let (dir, d) = new_queue_dir();
    let d = d.as_str();
    for (payload, extra) in [
        ("plain", vec![]),
        ("welcome ada", vec!["--queue", "mail"]),
        ("welcome bob", vec!["--queue", "mail", "--priority", "high"]),
        ("resize 1", vec!["--queue", "video"]),
    ] {
        let mut args = vec!["enqueue", d, payload];
        args.extend(extra);
        let run = walq(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let bad = walq(&["enqueue", d, "x", "--queue", "no spaces"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    // A dead letter of a named queue, at its level.
    {
        let store = walq::Store::open_with(dir.path().join("q"), opts()).unwrap();
        let video = store.queue("video").unwrap();
        let once = walq::EnqueueOptions::new()
            .max_attempts(1)
            .priority(walq::Priority::Urgent);
        video.enqueue_with(b"corrupt file", once).unwrap();
        let mut held = Vec::new();
        while let Some(job) = video.dequeue_timeout(std::time::Duration::ZERO).unwrap() {
            held.push(job);
        }
        for job in held {
            if job.payload() == b"corrupt file" {
                video.fail(job.receipt(), "bad codec").unwrap();
            } else {
                video
                    .nack(
                        job.receipt(),
                        walq::Retry::After(Default::default()),
                        "later",
                    )
                    .unwrap();
            }
        }
        store.close().unwrap();
    }
    let peek = walq(&["peek", d]);
    assert!(peek.stdout.contains("queue mail  "), "{}", peek.stdout);
    let json = common::json_lines(&walq(&["peek", d, "--json"]).stdout);
    let ada = json.iter().find(|j| j["payload"] == "welcome ada").unwrap();
    assert_eq!(ada["queue"], "mail", "{ada}");
    let plain = json.iter().find(|j| j["payload"] == "plain").unwrap();
    assert!(plain.get("queue").is_none(), "{plain}");
    let show = walq(&["show", d, &ada["id"].to_string()]);
    assert!(show.stdout.contains("queue      mail"), "{}", show.stdout);

    let want = (
        vec![
            ":plain".to_string(),
            "mail:welcome bob".into(),
            "mail:welcome ada".into(),
            "video:resize 1".into(),
        ],
        vec!["video:urgent:corrupt file".to_string()],
    );
    let out = walq(&["export", d]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = tempfile::tempdir().unwrap();
    let t = target.path().join("copy");
    let import = walq_stdin(&["import", t.to_str().unwrap()], Some(&out.stdout));
    assert_eq!(import.code, 0, "{}", import.stderr);
    assert_eq!(by_queue(&t), want, "after export and import");
    let s = target.path().join("salvaged");
    let run = walq(&["salvage", d, "--into", s.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(by_queue(&s), want, "after salvage");
}

/// `export -o` into the queue's own directory is refused before anything
/// is written: `-o DIR/0000000001.wal` replaced a segment with the export.
#[test]
fn export_refuses_to_write_into_the_queue_directory() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let before = image(dir.path());
    let seg = segments(dir.path())[0].clone();
    let d = dir.path().to_str().unwrap();
    let run = walq(&["export", d, "-o", seg.to_str().unwrap()]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("queue directory"), "{}", run.stderr);
    assert_eq!(image(dir.path()), before, "export changed the queue");
    let run = walq(&["verify", d]);
    assert_eq!(run.code, 0, "{}", run.stdout);
}

/// An export of a queue opened with a larger `max_payload` imports:
/// before, import opened its target with the default limits and stopped
/// at the first item over 16 MiB, after writing the items before it.
#[test]
fn an_export_with_payloads_over_the_default_limit_imports() {
    let dir = tempfile::tempdir().unwrap();
    large(dir.path(), 20 << 20, 17 << 20, &[17 << 20, 10]);
    let d = dir.path().to_str().unwrap();
    let out = walq(&["export", d]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = tempfile::tempdir().unwrap();
    let t = target.path().join("copy");
    let import = walq_stdin(&["import", t.to_str().unwrap()], Some(&out.stdout));
    assert_eq!(import.code, 0, "{}", import.stderr);
    assert_eq!(
        import.stdout.trim(),
        "imported 2 pending jobs and 1 dead letters"
    );
    assert!(
        import.stderr.contains("max_payload 17825792"),
        "says which limits it used: {}",
        import.stderr
    );
    assert_eq!(contents(&t), contents(dir.path()));
    let verify = walq(&["verify", t.to_str().unwrap()]);
    assert_eq!(verify.code, 0, "{}", verify.stdout);
}

/// An export whose line 3 is refused, with the reason.
fn refused_third_line(bad: &str) -> String {
    let good = r#"{"type":"job","payload":"fine","due_ms":0,"attempts":0,"max_attempts":5}"#;
    format!("{{\"walq_export\":1}}\n{good}\n{bad}\n{good}\n")
}

/// A pending job of `queue` with `extra` fields, as an export line.
fn job_line(queue: &str, extra: &str) -> String {
    format!(
        r#"{{"type":"job","queue":"{queue}","payload":"p","due_ms":0,"attempts":0,"max_attempts":5{extra}}}"#
    )
}

/// An import with a line that no queue takes fails naming the line and
/// the limit (exit 6) and leaves an existing queue as it was, byte for
/// byte: every item is checked before the first write. Before, a key,
/// group or queue name refused by the queue stopped the import after the
/// lines before it were written.
#[test]
fn an_import_with_a_refused_line_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    let (before, jobs) = (image(dir.path()), contents(dir.path()));
    let key = format!(r#","key":"{}""#, "k".repeat(2000));
    let group = format!(r#","group":"{}""#, "g".repeat(300));
    let many: String = (0..=walq::MAX_QUEUES)
        .map(|i| job_line(&format!("q{i}"), "") + "\n")
        .collect();
    let cases = [
        (
            refused_third_line(&job_line("default", &key)),
            "line 3: idempotency key of 2000 bytes is over the limit of 1024 bytes",
        ),
        (
            refused_third_line(&job_line("default", r#","key":"""#)),
            "line 3: an empty idempotency key",
        ),
        (
            refused_third_line(&job_line("mail", &group)),
            "line 3: group key of 300 bytes is over the limit of 256 bytes",
        ),
        (
            refused_third_line(&job_line("no spaces", "")),
            "line 3: invalid options: queue name \"no spaces\" is invalid",
        ),
        (refused_third_line("{not json"), "line 3: "),
        (
            format!("{{\"walq_export\":1}}\n{many}"),
            "line 1026: queue \"q1024\" would be named queue 1025",
        ),
    ];
    for (input, says) in cases {
        let run = walq_stdin(&["import", d], Some(&input));
        assert_eq!(run.code, 6, "{says}: {}{}", run.stdout, run.stderr);
        assert_eq!(contents(dir.path()), jobs, "{says}: jobs were added");
        assert_eq!(image(dir.path()), before, "{says}: a file changed");
        assert!(run.stderr.contains(says), "{says}: {}", run.stderr);
    }
    // The store's own named queues count too: refused once the target is
    // open, still before anything is written.
    let run = walq_stdin(
        &["import", d],
        Some(&format!(
            "{{\"walq_export\":1}}\n{}\n",
            job_line("mail", "")
        )),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let jobs = contents(dir.path());
    let new: String = (1..walq::MAX_QUEUES)
        .chain([walq::MAX_QUEUES + 1])
        .map(|i| job_line(&format!("q{i}"), "") + "\n")
        .collect();
    let run = walq_stdin(
        &["import", d],
        Some(&format!("{{\"walq_export\":1}}\n{new}")),
    );
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
    assert_eq!(contents(dir.path()), jobs, "jobs were added");
}

/// Job 3 of `d` (the second of group c42) is due and waits for job 2:
/// `Queue::status` says `Blocked`, and `show` and `peek` (text and JSON)
/// say `blocked` (they said `delayed`, with a due time in the past); a
/// job with a delay of its own reads `delayed` in both.
fn a_blocked_job_is_named_as_the_library_names_it(d: &str) {
    let show = walq(&["show", d, "3"]);
    assert!(
        show.stdout.contains("status     blocked\n"),
        "{}",
        show.stdout
    );
    let json = walq(&["show", d, "3", "--json"]);
    assert_eq!(common::json_lines(&json.stdout)[0]["status"], "blocked");
    let peek = walq(&["peek", d, "--json"]);
    let status = |id: u64| {
        common::json_lines(&peek.stdout)
            .into_iter()
            .find(|j| j["id"] == id)
            .map(|j| j["status"].clone())
    };
    assert_eq!(status(3), Some("blocked".into()), "{}", peek.stdout);
    assert_eq!(status(2), Some("ready".into()), "{}", peek.stdout);
    let text = walq(&["peek", d]);
    let line = text.stdout.lines().find(|l| l.contains("second of c42"));
    assert!(
        line.is_some_and(|l| l.contains(" blocked ")),
        "{}",
        text.stdout
    );
    let later = walq(&[
        "enqueue",
        d,
        "later of c42",
        "--group",
        "c42",
        "--delay",
        "1h",
    ]);
    assert_eq!(later.code, 0, "{}", later.stderr);
    let show = walq(&["show", d, "6", "--json"]);
    assert_eq!(common::json_lines(&show.stdout)[0]["status"], "delayed");
    let q = Queue::open_with(d, opts()).unwrap();
    assert_eq!(
        q.status(3).unwrap(),
        walq::JobStatus::Blocked { attempts: 0 }
    );
    assert!(matches!(
        q.status(6).unwrap(),
        walq::JobStatus::Delayed { .. }
    ));
}

/// Output that cannot be written is a failure with exit 6, never a panic
/// (exit 101): `enqueue` printed its ids with `println!`, which panics
/// when stdout is a full device (a review found it). The job itself is
/// in the queue: only the report was lost.
#[test]
fn an_unwritable_stdout_is_a_failure_not_a_panic() {
    let (_dir, q) = new_queue_dir();
    let q = q.as_str();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = common::quiet(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_walq"))
            .args(["enqueue", q, "payload"])
            .stdout(full)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run walq")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("writing output"), "{stderr}");
    assert_eq!(stats(q)["ready"], 1, "the job was enqueued");
}

/// `export -o` through a symbolic or hard link to one of the queue's own
/// files is refused before a byte is cut (a review overwrote a segment
/// with a symbolic link beside the queue), and the export file it writes
/// is private to its owner (0600: it holds every payload).
#[test]
fn export_never_writes_over_the_queues_files_and_keeps_its_output_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    healthy(&dir);
    let d = dir.to_str().unwrap();
    let seg = segments(&dir)[0].clone();
    let before = std::fs::read(&seg).unwrap();
    let sym = tmp.path().join("backup.jsonl");
    std::os::unix::fs::symlink(&seg, &sym).unwrap();
    let hard = tmp.path().join("hard.jsonl");
    std::fs::hard_link(&seg, &hard).unwrap();
    for out in [&sym, &hard] {
        let run = walq(&["export", d, "-o", out.to_str().unwrap()]);
        assert_eq!(run.code, 6, "{}", run.stderr);
        // The symbolic link by where it leads, the hard link by its inode.
        assert!(
            run.stderr.contains("which export only reads"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        before,
        "the segment is untouched"
    );
    assert_eq!(walq(&["verify", d]).code, 0);
    let good = tmp.path().join("good.jsonl");
    let run = walq(&["export", d, "-o", good.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mode = std::fs::metadata(&good).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    assert_eq!(
        items(&std::fs::read_to_string(&good).unwrap()),
        items(&walq(&["export", d]).stdout)
    );
}

/// A queue that cannot be created for lack of space is "failed" (exit 6,
/// docs/cli.md), not "unreadable" (exit 3, which a review got: every I/O
/// error of an open was taken for an unreachable queue). Needs a small
/// tmpfs, so root; elsewhere it says so and checks nothing.
#[test]
fn a_full_disk_at_creation_is_a_failure_not_unreadable() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1M", "walq-cli-test"])
        .arg(&mnt)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!(
            "a_full_disk_at_creation_is_a_failure_not_unreadable: no tmpfs mount here (not root?)"
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let q = mnt.join("q");
    let run = walq(&["enqueue", q.to_str().unwrap(), "x"]);
    assert_eq!(run.code, 6, "{}", run.stderr);
    assert!(run.stderr.contains("No space left"), "{}", run.stderr);
}

/// Options an enqueue would refuse are a usage error (exit 2) before the
/// queue is opened: no directory is created for a command that cannot
/// enqueue (a review found each of these leaving a new queue behind, with
/// exit 6).
#[test]
fn bad_enqueue_options_are_usage_errors_that_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("nd");
    let d = q.to_str().unwrap();
    for args in [
        vec!["enqueue", d, "--max-attempts", "0", "x"],
        vec!["enqueue", d, "--key=", "x"],
        vec!["enqueue", d, "--group=", "x"],
        vec!["enqueue", d, "--queue=bad!", "x"],
    ] {
        let run = walq(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(!q.exists(), "{args:?} created the queue");
    }
}

/// Every segment file (`NNNNNNNNNN.wal` and spares) of `dir` with its length.
fn segment_lengths(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e))
        .filter(|(n, _)| n.len() >= 14 && n[..10].bytes().all(|b| b.is_ascii_digit()))
        .map(|(n, e)| (n, e.metadata().unwrap().len()))
        .collect();
    v.sort();
    v
}

/// The writing commands open an existing queue with the segment size its
/// segments have (64 KiB here), so the segments and spares they create
/// are that size too. Before, they opened it with the default 64 MiB, and
/// a queue of a few hundred KiB grew to over 100 MB.
#[test]
fn writing_commands_keep_the_queues_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path()); // segments of 64 KiB
    let d = dir.path().to_str().unwrap();
    let small = |what: &str| {
        let lengths = segment_lengths(dir.path());
        assert!(!lengths.is_empty());
        for (name, len) in lengths {
            assert_eq!(len, 64 << 10, "after {what}: {name}");
        }
    };
    small("the fixture");
    let run = walq(&["enqueue", d, "one", "two"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    small("enqueue");
    // Enough to fill several segments: new ones are made at that size.
    let lines: String = (0..3000).map(|i| format!("job number {i:06}\n")).collect();
    let run = walq_stdin(&["enqueue", d], Some(&lines));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(segment_lengths(dir.path()).len() > 3);
    small("enqueue of many");
    let run = walq(&["cancel", d, "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    small("cancel");
    let run = walq(&["dead", "redrive", d, "5"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    small("dead redrive");
    let export = tempfile::NamedTempFile::new().unwrap();
    let e = export.path().to_str().unwrap();
    assert_eq!(walq(&["export", d, "-o", e]).code, 0);
    let run = walq(&["import", d, "-i", e]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    small("import");
    assert_eq!(stats(d)["damage"], 0);
}

/// A newest segment whose length is no segment size (cut by hand, say)
/// does not tell the queue's segment size: a writing command refuses it,
/// naming the file, and changes nothing.
#[test]
fn a_segment_of_no_segment_size_is_refused_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let seg = segments(dir.path()).pop().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let before = image(dir.path());
    let d = dir.path().to_str().unwrap();
    let run = walq(&["enqueue", d, "x"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        run.stderr.contains(&name) && run.stderr.contains("1000 bytes, which is no segment size"),
        "{}",
        run.stderr
    );
    assert_eq!(image(dir.path()), before, "changed the queue");
}

/// A usage error says what is wrong: the range `--interval` takes (0 is
/// refused, so the message must not offer it), and a delay that is a
/// duration but too large for one, with the limit (not "not a duration").
#[test]
fn usage_errors_state_the_true_limits() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    let run = walq(&["stats", d, "--watch", "--interval", "0"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("--interval must be more than 0 and at most 86400 seconds"),
        "{}",
        run.stderr
    );
    let (_tmp, q) = new_queue_dir();
    let run = walq(&["enqueue", &q, "x", "--delay", "18446744073709551615s"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("duration too large")
            && run.stderr.contains("the longest is 18446744073709551615s"),
        "{}",
        run.stderr
    );
    assert!(!std::path::Path::new(&q).exists(), "created the queue");
    let run = walq(&["enqueue", &q, "x", "--delay", "ten"]);
    assert!(run.stderr.contains("not a duration"), "{}", run.stderr);
}

/// A `--delay` over `walq::MAX_DELAY` (365 days) is a usage error naming
/// the limit and the value, before the queue is created: the library
/// took it and parked the job for good. An import of a job due further
/// ahead than that (an export of a queue written before the limit, due
/// at `u64::MAX` ms) brings it over due in `MAX_DELAY`, not refused.
#[test]
fn a_delay_over_the_longest_is_refused_and_an_import_keeps_such_a_job() {
    let (_tmp, q) = new_queue_dir();
    let run = walq(&["enqueue", &q, "x", "--delay", "400d"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("MAX_DELAY = 31536000s") && run.stderr.contains("34560000s"),
        "{}",
        run.stderr
    );
    assert!(!std::path::Path::new(&q).exists(), "created the queue");
    let run = walq(&["enqueue", &q, "x", "--delay", "365d"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = job_line("default", "").replace(r#""due_ms":0"#, r#""due_ms":18446744073709551615"#);
    let run = walq_stdin(
        &["import", &q],
        Some(&format!("{{\"walq_export\":1}}\n{line}\n")),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let s = stats(&q);
    assert_eq!(
        (s["ready"].as_u64(), s["delayed"].as_u64()),
        (Some(0), Some(2)),
        "{s}"
    );
}

/// `--max-attempts` defaults to 5, whatever the application that made
/// the queue set (its `Options::max_attempts` is not on disk), and the
/// help says so.
#[test]
fn enqueue_max_attempts_default_is_five_and_the_help_says_so() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path()); // opened with max_attempts 3
    let d = dir.path().to_str().unwrap();
    let run = walq(&["enqueue", d, "fresh"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = walq(&["peek", d, "--json", "-n", "100"]);
    let job = common::json_lines(&run.stdout)
        .into_iter()
        .find(|j| j["payload"] == "fresh")
        .expect("the new job");
    assert_eq!(job["max_attempts"], 5, "{job}");
    let help = walq(&["enqueue", "--help"]);
    assert!(help.stdout.contains("default 5"), "{}", help.stdout);
    assert!(!help.stdout.contains("the queue's, 5"), "{}", help.stdout);
}

/// A command that changes an existing queue refuses it when its
/// read-only scan finds damage (exit 1, docs/cli.md), also where the open
/// alone would not see it: from a clean close's checkpoint the open does
/// not read the records the checkpoint covers (a review purged dead
/// letters of such a queue with exit 0).
#[test]
fn dead_purge_refuses_a_queue_whose_damage_the_checkpoint_hides() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    common::quiet(|| {
        let q = Queue::open_with(dir.path(), opts()).unwrap();
        q.enqueue(b"kept alive").unwrap();
        q.enqueue(b"dies").unwrap();
        let first = q.dequeue().unwrap().unwrap();
        q.nack(
            first.receipt(),
            walq::Retry::After(std::time::Duration::from_secs(3600)),
            "later",
        )
        .unwrap();
        let second = q.dequeue().unwrap().unwrap();
        q.fail(second.receipt(), "broken").unwrap();
        // More than the checkpoint's digest span (the last 4 KiB before
        // the tail) after the damaged record.
        for _ in 0..20 {
            q.enqueue(&[7u8; 500]).unwrap();
        }
        q.close().unwrap();
    });
    // A bit of the first job's record (the segment's first frame).
    let seg = &segments(dir.path())[0];
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[64 + 24 + 40] ^= 0x40;
    std::fs::write(seg, &bytes).unwrap();
    let run = walq(&["dead", "purge", d, "--all"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("walq verify"), "{}", run.stderr);
    assert_eq!(stats(d)["dead"], 1, "the dead letter is still there");
}

#[test]
fn cancel_takes_back_waiting_jobs_of_any_queue_and_stops_at_the_first_refusal() {
    let (_tmp, d) = new_queue_dir();
    let (a, b, mailed, leased) = common::quiet(|| {
        let store = walq::Store::open_with(std::path::Path::new(&d), opts()).unwrap();
        let q = store.default_queue();
        let mail = store.queue("mail").unwrap();
        let a = q.enqueue(b"a").unwrap();
        let b = q.enqueue(b"b").unwrap();
        let mailed = mail.enqueue(b"to mail").unwrap();
        let leased = q.enqueue(b"leased").unwrap();
        // A job leased when its process went away: the CLI's open
        // releases the lease, so the job waits again and is cancelled.
        let job = q.dequeue().unwrap().unwrap();
        assert_eq!(job.id(), a);
        std::mem::forget(job);
        drop(mail);
        q.close().unwrap();
        (a, b, mailed, leased)
    });
    let run = walq(&["cancel", &d, &a.to_string(), &mailed.to_string()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!("cancelled job {a}\ncancelled job {mailed}\n")
    );
    for (id, status) in [(a, "purged"), (mailed, "purged"), (b, "ready")] {
        let show = walq(&["show", &d, &id.to_string(), "--json"]);
        assert_eq!(show.code, 0, "{}", show.stderr);
        assert_eq!(json(show.stdout.trim())["status"], status, "job {id}");
    }
    let again = walq(&[
        "cancel",
        &d,
        &b.to_string(),
        &a.to_string(),
        &leased.to_string(),
    ]);
    assert_eq!(again.code, 5, "{}", again.stderr);
    assert_eq!(again.stdout, format!("cancelled job {b}\n"));
    assert!(
        again.stderr.contains(&format!("no job {a} waits")),
        "{}",
        again.stderr
    );
    let s = stats(&d);
    assert_eq!(s["ready"].as_u64(), Some(1), "{s}");
    assert_eq!(walq(&["cancel", &d]).code, 2, "an id is required");
}

/// Dead letters import into a queue that has jobs, and no job of it is
/// touched: before, import refused a queue with a ready job, and a job
/// that fell due during the import (a delay, a retry) was leased and
/// nacked once per dead letter, its attempts used up until it died.
#[test]
fn importing_dead_letters_leaves_the_queues_jobs_alone() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let out = walq(&["export", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let dead: String = out
        .stdout
        .lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || l.contains("\"type\":\"dead\""))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    assert_eq!(dead.lines().count(), 2, "{dead}");

    let target = tempfile::tempdir().unwrap();
    let t = target.path().join("busy");
    let t = t.to_str().unwrap();
    let victim = walq(&["enqueue", t, "victim", "--max-attempts", "2"]);
    assert_eq!(victim.code, 0, "{}", victim.stderr);
    for _ in 0..3 {
        let import = walq_stdin(&["import", t, "--partial"], Some(&dead));
        assert_eq!(import.code, 0, "{}", import.stderr);
    }
    let s = stats(t);
    assert_eq!(
        (s["ready"].as_u64(), s["dead"].as_u64()),
        (Some(1), Some(1)),
        "the victim waits; the letter's key made the second and third imports duplicates"
    );
    let show = walq(&["show", t, "1", "--json"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    let job = json(show.stdout.trim());
    assert_eq!(job["status"], "ready", "{}", show.stdout);
    assert_eq!(job["attempts"], 0, "{}", show.stdout);
}

/// A writing command refuses a queue directory owned by another user than
/// the one running it, and changes nothing: run as root, `walq enqueue`
/// left root-owned 0600 files (a spare, `CHECKPOINT`, `CLOSED`) in a
/// service user's queue, which the service could then no longer open (an
/// operator review). Needs root to give the directory away; as another
/// user it says so and checks nothing.
#[test]
fn a_queue_of_another_user_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    healthy(&q);
    if let Err(e) = std::os::unix::fs::chown(&q, Some(65534), Some(65534)) {
        eprintln!("not checked: giving the directory to uid 65534 needs root ({e})");
        return;
    }
    let before = image(&q);
    let d = q.to_str().unwrap();
    for args in [
        vec!["enqueue", d, "x"],
        vec!["cancel", d, "1"],
        vec!["dead", "purge", d, "--all"],
    ] {
        let run = walq(&args);
        assert_eq!(run.code, 6, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("belongs to user id 65534"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(image(&q) == before, "{args:?}: the queue changed");
    }
    // Read-only commands still work.
    assert_eq!(walq(&["stats", d]).code, 0);
}

/// `enqueue` on a path that is a file, or a symbolic link to nothing, says
/// it is not a directory (exit 3, as `stats` says of the same path): it
/// said "creating queue directory: File exists" and exited 6 (an operator
/// review).
#[test]
fn enqueue_onto_a_file_or_a_dangling_link_says_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, b"not a queue").unwrap();
    let link = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
    for path in [&file, &link] {
        let p = path.to_str().unwrap();
        let run = walq(&["enqueue", p, "x"]);
        assert_eq!(run.code, 3, "{p}: {}{}", run.stdout, run.stderr);
        let said = run.stderr.to_lowercase();
        assert!(said.contains("not a directory"), "{p}: {}", run.stderr);
        assert!(!run.stderr.contains("File exists"), "{p}: {}", run.stderr);
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a queue");
    assert!(!dir.path().join("nowhere").exists(), "nothing created");
}

/// An export that cannot be written whole (here the file size limit,
/// EFBIG; a full disk alike) names its output file, exits 6, and removes
/// what it wrote: before, the message named no file and the cut file
/// stayed, which an import then took for a whole export (an operator
/// review). A device given as `-o` is named too.
#[test]
fn a_failed_export_names_its_file_and_leaves_no_cut_export() {
    let dir = tempfile::tempdir().unwrap();
    large(dir.path(), 4096, 10, &[2000; 64]);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("e.jsonl");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_walq"));
    cmd.args(["export", dir.path().to_str().unwrap(), "-o"])
        .arg(&file);
    let run = with_file_size_limit(&mut cmd, 16 << 10).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("incomplete file was removed"), "{stderr}");
    assert!(!file.exists(), "the cut export is gone");
    let full = walq(&["export", dir.path().to_str().unwrap(), "-o", "/dev/full"]);
    assert_eq!(full.code, 6, "{}", full.stderr);
    assert!(full.stderr.contains("/dev/full"), "{}", full.stderr);
}

/// An export cut short (its header counts more items than it holds) is
/// refused before anything is written: it imported what it held and
/// exited 0 (an operator review).
#[test]
fn an_export_cut_short_is_not_imported() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let out = walq(&["export", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() > 2, "{}", out.stdout);
    let cut = lines[..lines.len() - 1].join("\n") + "\n";
    let target = tempfile::tempdir().unwrap();
    let t = target.path().join("copy");
    let run = walq_stdin(&["import", t.to_str().unwrap()], Some(&cut));
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("cut short"), "{}", run.stderr);
    assert!(!t.exists(), "nothing was imported");
    // Filtered on purpose, it imports with `--partial`; the whole export
    // imports as it is.
    let other = target.path().join("filtered");
    let o = other.to_str().unwrap();
    let filtered = walq_stdin(&["import", o, "--partial"], Some(&cut));
    assert_eq!(filtered.code, 0, "{}", filtered.stderr);
    let whole = walq_stdin(&["import", t.to_str().unwrap()], Some(&out.stdout));
    assert_eq!(whole.code, 0, "{}", whole.stderr);
}

/// `cmd` with its files limited to `limit` bytes (`RLIMIT_FSIZE`), and
/// `SIGXFSZ` ignored so that a write past it fails with EFBIG.
fn with_file_size_limit(cmd: &mut std::process::Command, limit: u64) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec, only async-signal-safe calls
    // (setrlimit, signal) are made.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            match libc::setrlimit(libc::RLIMIT_FSIZE, &lim) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })
    }
}
