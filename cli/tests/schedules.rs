//! `walq schedules`: the recurring schedules of `schedules.bin`, read
//! without a lock; none, several, a damaged file, no queue.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{image, json_lines, opts, quiet, walq};
use walq::schedule::{Missed, Schedule, Scheduler};

/// [`common::healthy_with_schedule`] ("hourly", every hour, payload
/// "tick"), plus "nightly" (cron "0 3 * * *", skip missed ticks, grace
/// 30 s, 2 attempts, no payload).
fn two_schedules(dir: &Path) -> Vec<u8> {
    common::healthy_with_schedule(dir);
    quiet(|| {
        let q = walq::Queue::open_with(dir, opts()).unwrap();
        let s = Scheduler::open(&q).unwrap();
        let nightly = Schedule::cron("nightly", "0 3 * * *").unwrap();
        let nightly = nightly.missed(Missed::Skip).grace(Duration::from_secs(30));
        s.register(nightly.unwrap().max_attempts(2).unwrap())
            .unwrap();
        drop(s);
        q.close().unwrap();
    });
    std::fs::read(dir.join(walq::schedule::SCHEDULE_FILE)).unwrap()
}

#[test]
fn schedules_are_listed_with_their_spec_and_next_tick() {
    let dir = tempfile::tempdir().unwrap();
    two_schedules(dir.path());
    let before = image(dir.path());
    let d = dir.path().to_str().unwrap();
    let run = walq(&["schedules", d, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = json_lines(&run.stdout);
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    let hourly = rows.iter().find(|r| r["name"] == "hourly").unwrap();
    assert_eq!(hourly["every_secs"], 3600, "{hourly}");
    assert_eq!(hourly["payload"], "tick", "{hourly}");
    assert_eq!(hourly["payload_len"], 4, "{hourly}");
    assert_eq!(hourly["missed"], "run_once", "{hourly}");
    let last = hourly["last_tick_ms"].as_u64().unwrap();
    let next = hourly["next_tick_ms"].as_u64().unwrap();
    assert_eq!(next, (last / 3_600_000 + 1) * 3_600_000, "{hourly}");
    let nightly = rows.iter().find(|r| r["name"] == "nightly").unwrap();
    assert_eq!(nightly["cron"], "0 3 * * *", "{nightly}");
    assert_eq!(nightly["missed"], "skip", "{nightly}");
    assert_eq!(nightly["grace_secs"], 30, "{nightly}");
    assert_eq!(nightly["max_attempts"], 2, "{nightly}");
    let next = nightly["next_tick_ms"].as_u64().unwrap();
    assert_eq!(next % 86_400_000, 3 * 3_600_000, "03:00 UTC: {nightly}");
    assert!(next > nightly["last_tick_ms"].as_u64().unwrap());
    let text = walq(&["schedules", d]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("nightly"))
        .unwrap();
    assert!(line.contains("cron \"0 3 * * *\""), "{line}");
    assert!(line.contains("missed skip (grace 30s)"), "{line}");
    assert!(line.contains("T03:00:00.000Z"), "{line}");
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("hourly"))
        .unwrap();
    assert!(line.contains("every 3600s"), "{line}");
    assert!(line.contains("payload 4 B \"tick\""), "{line}");
    assert_eq!(image(dir.path()), before, "schedules changed a file");
}

/// Read like the other read-only commands: without the queue's lock and
/// without `schedules.lock`, while a program holds both.
#[test]
fn schedules_are_read_while_a_scheduler_runs() {
    let dir = tempfile::tempdir().unwrap();
    two_schedules(dir.path());
    let d = dir.path().to_str().unwrap();
    let q = quiet(|| walq::Queue::open_with(dir.path(), opts()).unwrap());
    let scheduler = Scheduler::open(&q).unwrap();
    let run = walq(&["schedules", d, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(json_lines(&run.stdout).len(), 2, "{}", run.stdout);
    assert!(run.stderr.contains("the queue is live"), "{}", run.stderr);
    drop(scheduler);
    quiet(|| q.close().unwrap());
}

#[test]
fn a_queue_without_schedules_has_none() {
    let dir = tempfile::tempdir().unwrap();
    common::healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    let run = walq(&["schedules", d]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "no schedules");
    let json = walq(&["schedules", d, "--json"]);
    assert_eq!(
        (json.code, json.stdout.as_str()),
        (0, ""),
        "{}",
        json.stderr
    );
    let empty = tempfile::tempdir().unwrap();
    let run = walq(&["schedules", empty.path().to_str().unwrap()]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("not a walq queue"), "{}", run.stderr);
}

/// A damaged file is damage (exit 1) naming the file and the offset the
/// scheduler's decoder names, and nothing is written.
#[test]
fn a_damaged_schedule_file_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let good = two_schedules(dir.path());
    let path = dir.path().join(walq::schedule::SCHEDULE_FILE);
    let mut bytes = good.clone();
    bytes[40] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let before = image(dir.path());
    let d = dir.path().to_str().unwrap();
    for json in [false, true] {
        let mut args = vec!["schedules", d];
        if json {
            args.push("--json");
        }
        let run = walq(&args);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        let expected = format!("(file {}, offset {})", path.display(), good.len() - 4);
        assert!(run.stderr.contains(&expected), "{}", run.stderr);
        assert!(run.stderr.contains("checksum mismatch"), "{}", run.stderr);
    }
    assert_eq!(image(dir.path()), before, "schedules changed a file");
}
