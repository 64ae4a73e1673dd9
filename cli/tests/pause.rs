//! `walq pause` and `walq resume`, and `walq stats` naming paused queues.

mod common;

use common::{healthy, opts, quiet, walq};
use walq::Store;

/// A queue paused from the shell is paused for the program that opens
/// the store next (and `stats` says so, in text and JSON); resumed, it
/// delivers again. Pausing twice says so and changes nothing.
#[test]
fn a_queue_paused_from_the_shell_is_paused_for_the_program() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    quiet(|| {
        let store = Store::open_with(dir.path(), opts()).unwrap();
        store.queue("emails").unwrap().enqueue(b"to: ada").unwrap();
        store.close().unwrap();
    });
    let d = dir.path().to_str().unwrap();
    let run = walq(&["pause", d, "emails"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout.trim(), "queue emails paused");
    let run = walq(&["pause", d, "emails"]);
    assert_eq!(run.stdout.trim(), "queue emails was already paused");
    let stats = walq(&["stats", d]);
    assert!(
        stats.stdout.contains("paused     emails"),
        "{}",
        stats.stdout
    );
    let json = walq(&["stats", d, "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(v["paused"], serde_json::json!(["emails"]));
    quiet(|| {
        let store = Store::open_with(dir.path(), opts()).unwrap();
        let emails = store.queue("emails").unwrap();
        assert!(emails.is_paused());
        assert!(emails.dequeue().unwrap().is_none());
        assert!(!store.default_queue().is_paused());
        store.close().unwrap();
    });
    let run = walq(&["resume", d, "emails"]);
    assert_eq!(run.stdout.trim(), "queue emails resumed");
    let json = walq(&["stats", d, "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(v["paused"], serde_json::json!([]));
    quiet(|| {
        let store = Store::open_with(dir.path(), opts()).unwrap();
        let job = store.queue("emails").unwrap().dequeue().unwrap();
        assert_eq!(job.expect("delivered again").payload(), b"to: ada");
        store.close().unwrap();
    });
}

/// A bad name is a usage error (2), a missing queue unreadable (3), a
/// queue a program holds locked (4); none writes anything.
#[test]
fn pause_refuses_a_bad_name_a_missing_queue_and_a_held_one() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    let run = walq(&["pause", d, "no spaces"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let missing = dir.path().join("missing");
    let run = walq(&["pause", missing.to_str().unwrap(), "emails"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(!missing.exists(), "a typo creates no queue");
    let held = quiet(|| Store::open_with(dir.path(), opts()).unwrap());
    let run = walq(&["pause", d, "emails"]);
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    quiet(|| held.close().unwrap());
    drop(held);
    assert!(!dir.path().join(walq::PAUSED_FILE).exists());
}

/// The read-only views agree with the pause: a queue paused before its
/// first job is a known queue (`--queue`, the per-queue counts), and a
/// due job of a paused queue reads `paused`, not `ready`, in `peek` and
/// `show` (a review found `--queue emails` refused as unknown while
/// `stats` listed it paused, and paused jobs listed as ready).
#[test]
fn the_views_agree_with_the_pause() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = dir.path().to_str().unwrap();
    assert_eq!(walq(&["pause", d, "emails"]).code, 0);
    let run = walq(&["stats", d, "--queue", "emails", "--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(v["paused"], serde_json::json!(["emails"]));
    assert_eq!(v["queues"]["emails"]["ready"], 0);
    assert_eq!(walq(&["peek", d, "--queue", "emails"]).code, 0);

    let peek = walq(&["peek", d, "--json"]);
    let ready: Vec<u64> = peek
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["status"] == "ready")
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    let id = *ready.first().expect("the healthy queue has a ready job");
    assert_eq!(walq(&["pause", d, "default"]).code, 0);
    let peek = walq(&["peek", d, "--json"]);
    assert!(
        !peek.stdout.contains("\"status\":\"ready\""),
        "{}",
        peek.stdout
    );
    assert!(
        peek.stdout.contains("\"status\":\"paused\""),
        "{}",
        peek.stdout
    );
    let show = walq(&["show", d, &id.to_string()]);
    assert!(show.stdout.contains("status     paused"), "{}", show.stdout);
}
