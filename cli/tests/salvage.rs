//! `walq salvage`: intact jobs of a damaged queue copied into a new one,
//! the damaged directory left byte for byte as it was.

mod common;

use common::{contents, healthy, image, json, large, segments, walq};
use walq::Queue;

fn payloads(dir: &str) -> Vec<String> {
    let run = walq(&["export", dir]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut v: Vec<String> = run
        .stdout
        .lines()
        .skip(1)
        .map(|l| {
            let j = json(l);
            format!(
                "{}:{}",
                j["type"].as_str().unwrap(),
                j["payload"].as_str().unwrap_or("<binary>")
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn salvage_copies_the_intact_jobs_and_leaves_the_damaged_queue_untouched() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    // Damage the first record (job 1, "alpha"): later records are intact.
    let seg = &segments(dir.path())[0];
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[64 + 24 + 40] ^= 0x40;
    std::fs::write(seg, &bytes).unwrap();
    let before = image(dir.path());
    let d = dir.path().to_str().unwrap();
    let target = tempfile::tempdir().unwrap();
    let new = target.path().join("salvaged");
    let n = new.to_str().unwrap();
    let run = walq(&["salvage", d, "--into", n]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("copied 2 pending jobs and 1 dead letters"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("0000000001.wal at byte 64"),
        "reports the loss: {}",
        run.stdout
    );
    assert_eq!(
        image(dir.path()),
        before,
        "salvage changed the damaged directory"
    );
    assert_eq!(
        payloads(n),
        [
            "dead:doomed",
            "job:<binary>",
            "job:{\"to\":\"ada@example.com\"}"
        ]
    );
    let verify = walq(&["verify", n]);
    assert_eq!(verify.code, 0, "the copy is healthy: {}", verify.stdout);
}

#[test]
fn salvage_of_a_healthy_queue_copies_everything() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let target = tempfile::tempdir().unwrap();
    let n = target.path().to_str().unwrap();
    let run = walq(&["salvage", dir.path().to_str().unwrap(), "--into", n]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("nothing lost"), "{}", run.stdout);
    assert_eq!(payloads(n), payloads(dir.path().to_str().unwrap()));
    // A second salvage into the same, now non-empty, directory is refused.
    let again = walq(&["salvage", dir.path().to_str().unwrap(), "--into", n]);
    assert_eq!(again.code, 6, "{}", again.stderr);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
}

/// A healthy queue's schedules are copied with their progress: NEW gets
/// DIR's `schedules.bin` byte for byte (mode 0600), and the scheduler
/// opened on NEW has the schedule. Before, salvage said "nothing lost"
/// and NEW had no schedule file.
#[test]
fn salvage_copies_the_schedule_file() {
    use std::os::unix::fs::PermissionsExt;
    use walq::schedule::{Scheduler, SCHEDULE_FILE};
    let dir = tempfile::tempdir().unwrap();
    let schedules = common::healthy_with_schedule(dir.path());
    let target = tempfile::tempdir().unwrap();
    let new = target.path().join("salvaged");
    let d = dir.path().to_str().unwrap();
    let run = walq(&["salvage", d, "--into", new.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("copied schedules.bin"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("nothing lost"), "{}", run.stdout);
    let copied = new.join(SCHEDULE_FILE);
    assert_eq!(std::fs::read(&copied).unwrap(), schedules);
    let mode = std::fs::metadata(&copied).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!new.join(format!("{SCHEDULE_FILE}.tmp")).exists());
    common::quiet(|| {
        let q = Queue::open(&new).unwrap();
        let s = Scheduler::open(&q).unwrap();
        let names: Vec<String> = s
            .schedules()
            .iter()
            .map(|i| i.schedule.name().to_string())
            .collect();
        assert_eq!(names, ["hourly"]);
    });
}

/// A damaged `schedules.bin` is not copied (NEW gets none, as the
/// scheduler would refuse it), the jobs are, and salvage reports the loss
/// with exit 1 instead of "nothing lost".
#[test]
fn salvage_reports_a_damaged_schedule_file_as_lost() {
    use walq::schedule::SCHEDULE_FILE;
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = common::healthy_with_schedule(dir.path());
    bytes[40] ^= 0x40;
    std::fs::write(dir.path().join(SCHEDULE_FILE), &bytes).unwrap();
    let before = image(dir.path());
    let target = tempfile::tempdir().unwrap();
    let new = target.path().join("salvaged");
    let d = dir.path().to_str().unwrap();
    let run = walq(&["salvage", d, "--into", new.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("nothing lost"), "{}", run.stdout);
    let at = format!("schedules.bin at byte {}", bytes.len() - 4);
    assert!(run.stdout.contains(&at), "{}", run.stdout);
    assert!(
        run.stdout.contains("schedules.bin was not copied"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("copied 3 pending jobs and 1 dead letters"),
        "{}",
        run.stdout
    );
    assert!(!new.join(SCHEDULE_FILE).exists());
    assert_eq!(image(dir.path()), before, "salvage changed DIR");
}

/// NEW inside DIR is refused before anything is created: salvage only
/// reads DIR (before, it created NEW there).
#[test]
fn salvage_refuses_a_target_inside_the_queue_directory() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let before = contents(dir.path());
    for inside in ["sub", "sub/deeper"] {
        let into = dir.path().join(inside);
        let d = dir.path().to_str().unwrap();
        let run = walq(&["salvage", d, "--into", into.to_str().unwrap()]);
        assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("which salvage only reads"),
            "{}",
            run.stderr
        );
        assert!(!dir.path().join("sub").exists(), "{inside}: created in DIR");
        assert!(contents(dir.path()) == before, "{inside}: DIR changed");
    }
}

/// A queue opened with a larger `max_payload` and segments is copied
/// whole: NEW is opened with limits that take its largest job (here also
/// a segment larger than the default 64 MiB). Before, NEW had the default
/// limits and salvage stopped at the first job over 16 MiB.
#[test]
fn salvage_copies_payloads_over_the_default_limit() {
    let dir = tempfile::tempdir().unwrap();
    large(dir.path(), 70 << 20, 17 << 20, &[66 << 20, 17 << 20, 5]);
    let target = tempfile::tempdir().unwrap();
    let new = target.path().join("salvaged");
    let d = dir.path().to_str().unwrap();
    let run = walq(&["salvage", d, "--into", new.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("copied 3 pending jobs and 1 dead letters"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("max_payload 69206016 and segment_size 70254592"),
        "says which limits it used: {}",
        run.stderr
    );
    assert_eq!(contents(&new), contents(dir.path()));
    let verify = walq(&["verify", new.to_str().unwrap()]);
    assert_eq!(verify.code, 0, "the copy is healthy: {}", verify.stdout);
}

/// A queue paused in the source is paused in the copy (before, the copy
/// delivered it and salvage said nothing was lost); a damaged `PAUSED` is
/// reported lost (exit 1), the copy made with nothing paused.
#[test]
fn salvage_keeps_the_pauses_or_says_they_are_lost() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    assert_eq!(walq(&["pause", d, "default"]).code, 0);
    let into = tempfile::tempdir().unwrap();
    let n = into.path().join("copy");
    let run = walq(&["salvage", d, "--into", n.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("paused again: default"),
        "{}",
        run.stdout
    );
    let stats = walq(&["stats", n.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(stats.stdout.trim()).unwrap();
    assert_eq!(v["paused"], serde_json::json!(["default"]));

    let path = dir.path().join(walq::PAUSED_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[17] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let n2 = into.path().join("copy2");
    let run = walq(&["salvage", d, "--into", n2.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("which queues were paused"),
        "{}",
        run.stdout
    );
    let stats = walq(&["stats", n2.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(stats.stdout.trim()).unwrap();
    assert_eq!(v["paused"], serde_json::json!([]));
}
