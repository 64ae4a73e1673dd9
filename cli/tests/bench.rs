//! `walq bench` and `walq stats --watch`: they run, print every row, and
//! leave nothing behind. (No timing is asserted: numbers are for people.)

mod common;

use common::{healthy, json_lines, walq};

#[test]
fn bench_measures_each_durability_mode_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = walq(&["bench", d, "--seconds", "0.05", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = json_lines(&run.stdout);
    let names: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["durability"].as_str().unwrap(),
                r["operation"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "sync enqueue",
            "sync dequeue+ack",
            "os enqueue",
            "os dequeue+ack",
            "periodic(100ms) enqueue",
            "periodic(100ms) dequeue+ack"
        ]
    );
    for r in &rows {
        assert!(r["jobs"].as_u64().unwrap() > 0, "{r}");
        assert!(
            r["p99_us"].as_f64().unwrap() >= r["p50_us"].as_f64().unwrap(),
            "{r}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temp queue left behind"
    );
    let table = walq(&["bench", d, "--seconds", "0.02", "--threads", "2"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("jobs/s"), "{}", table.stdout);
    assert!(
        table.stderr.is_empty(),
        "no progress bar when stderr is not a terminal: {:?}",
        table.stderr
    );
    assert_eq!(walq(&["bench", d, "--seconds", "0"]).code, 2);
}

#[test]
fn stats_watch_refreshes_with_rates() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    let run = walq(&[
        "stats",
        d,
        "--watch",
        "--count",
        "2",
        "--interval",
        "0.05",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = json_lines(&run.stdout);
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].get("enqueued_per_s").is_none(),
        "no rate before two samples"
    );
    assert_eq!(
        lines[1]["enqueued_per_s"], 0.0,
        "nothing was enqueued meanwhile"
    );
    assert_eq!(lines[1]["ready"], 2);
    let table = walq(&["stats", d, "--watch", "--count", "2", "--interval", "0.05"]);
    assert!(table.stdout.contains("acked/s    0.0"), "{}", table.stdout);
    assert!(table.stdout.contains("(steady)"), "{}", table.stdout);
    assert!(
        !table.stdout.contains('\x1b'),
        "no colour or screen clearing off a terminal"
    );
}

#[test]
fn stats_watch_sees_a_running_producer() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let q = walq::Queue::open_with(dir.path(), common::opts().durability(walq::Durability::Os))
        .unwrap();
    let stop = AtomicBool::new(false);
    let d = dir.path().to_str().unwrap();
    let run = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                q.enqueue(b"tick").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let run = walq(&[
            "stats",
            d,
            "--watch",
            "--count",
            "2",
            "--interval",
            "0.3",
            "--json",
        ]);
        stop.store(true, Ordering::Relaxed);
        run
    });
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = json_lines(&run.stdout);
    assert_eq!(lines[1]["live"], true);
    assert!(
        lines[1]["enqueued_per_s"].as_f64().unwrap() > 0.0,
        "{}",
        lines[1]
    );
    assert!(
        lines[1]["backlog_per_s"].as_f64().unwrap() > 0.0,
        "nothing consumes: {}",
        lines[1]
    );
    assert!(
        lines[1]["ready"].as_u64().unwrap() > lines[0]["ready"].as_u64().unwrap(),
        "{lines:?}"
    );
}

/// `stats --watch` (found by review): each refresh says whether a process
/// holds the queue now (before: what the first said, for ever), and dead
/// letters purged between two refreshes are not counted as acked (before:
/// every purged letter counted as one ack).
#[test]
fn stats_watch_follows_the_lock_and_tells_a_purge_from_an_ack() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    {
        let q = walq::Queue::open_with(dir.path(), common::opts()).unwrap();
        for _ in 0..20 {
            q.enqueue(b"doomed").unwrap();
        }
        while let Some(job) = q.dequeue().unwrap() {
            q.fail(job.receipt(), "no").unwrap();
        }
        q.close().unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_walq"))
        .args([
            "stats",
            d,
            "--watch",
            "--count",
            "3",
            "--interval",
            "2",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = common::json(&lines.next().unwrap().unwrap());
    assert_eq!(
        (first["live"].as_bool(), first["dead"].as_u64()),
        (Some(false), Some(20))
    );
    // Opened (and held) while the watch sleeps: the second refresh sees it.
    let q = walq::Queue::open_with(dir.path(), common::opts()).unwrap();
    assert_eq!(q.purge_all().unwrap(), 20);
    let second = common::json(&lines.next().unwrap().unwrap());
    let third = common::json(&lines.next().unwrap().unwrap());
    assert_eq!(third["live"], true, "{third}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    drop(q);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Said once, when it became live; not at every refresh after.
    assert_eq!(stderr.matches("the queue is live").count(), 1, "{stderr}");
    assert_eq!(second["live"], true, "{second}");
    assert_eq!(second["dead"], 0, "{second}");
    assert_eq!(
        second["acked_per_s"], 0.0,
        "a purge is not an ack: {second}"
    );
}
