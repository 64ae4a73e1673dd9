//! `--queue NAME` on the listing commands (peek, stats, export, dead
//! list), the per-queue rows of `stats`, and groups kept apart by queue.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{json, json_lines, opts, quiet, walq};
use serde_json::json;
use walq::{EnqueueOptions, Retry};

/// A store with jobs in three queues, closed: "plain" (default queue,
/// group "g"), "welcome ada" and "welcome bob" (mail), "resize" (video,
/// group "g"), and a dead letter "corrupt file" of video.
fn three_queues(dir: &Path) {
    quiet(|| {
        let store = walq::Store::open_with(dir, opts()).unwrap();
        let default = store.default_queue();
        let mail = store.queue("mail").unwrap();
        let video = store.queue("video").unwrap();
        video
            .enqueue_with(b"resize", EnqueueOptions::new().group("g"))
            .unwrap();
        default
            .enqueue_with(b"plain", EnqueueOptions::new().group("g"))
            .unwrap();
        mail.enqueue(b"welcome ada").unwrap();
        mail.enqueue(b"welcome bob").unwrap();
        let once = EnqueueOptions::new().max_attempts(1);
        video.enqueue_with(b"corrupt file", once).unwrap();
        let mut held = Vec::new();
        while let Some(job) = video.dequeue_timeout(Duration::ZERO).unwrap() {
            held.push(job);
        }
        for job in held {
            if job.payload() == b"corrupt file" {
                video.fail(job.receipt(), "bad codec").unwrap();
            } else {
                video
                    .nack(job.receipt(), Retry::After(Duration::ZERO), "later")
                    .unwrap();
            }
        }
        store.close().unwrap();
    });
}

fn payloads(out: &str) -> Vec<String> {
    json_lines(out)
        .iter()
        .filter_map(|v| v["payload"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn peek_shows_only_the_queue_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    three_queues(dir.path());
    let d = dir.path().to_str().unwrap();
    let mail = walq(&["peek", d, "--queue", "mail", "--json"]);
    assert_eq!(mail.code, 0, "{}", mail.stderr);
    assert_eq!(payloads(&mail.stdout), ["welcome ada", "welcome bob"]);
    let default = walq(&["peek", d, "--queue", "default", "--json"]);
    assert_eq!(payloads(&default.stdout), ["plain"]);
    let text = walq(&["peek", d, "--queue", "video"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert_eq!(text.stdout.lines().count(), 1, "{}", text.stdout);
    assert!(text.stdout.contains("\"resize\""), "{}", text.stdout);
    let all = walq(&["peek", d, "--json"]);
    assert_eq!(payloads(&all.stdout).len(), 4, "{}", all.stdout);
}

/// An unknown name is a usage error (exit 2) that names it and lists the
/// store's queues; a store without named queues says it has none.
#[test]
fn an_unknown_queue_is_a_usage_error_listing_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    three_queues(dir.path());
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["peek", d, "--queue", "mial"],
        vec!["stats", d, "--queue", "mial", "--json"],
        vec!["export", d, "--queue", "mial"],
        vec!["dead", "list", d, "--queue", "mial"],
    ] {
        let run = walq(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        assert!(
            run.stderr
                .contains("no queue \"mial\" in this store; its queues are: default, mail, video"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let plain = tempfile::tempdir().unwrap();
    common::healthy(plain.path());
    let p = plain.path().to_str().unwrap();
    let run = walq(&["peek", p, "--queue", "mail"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("it has no named queues"),
        "{}",
        run.stderr
    );
    assert_eq!(walq(&["peek", p, "--queue", "default"]).code, 0);
}

#[test]
fn stats_counts_one_queue_and_gives_a_row_per_queue() {
    let dir = tempfile::tempdir().unwrap();
    three_queues(dir.path());
    let d = dir.path().to_str().unwrap();
    let all = walq(&["stats", d, "--json"]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    let v = json(all.stdout.trim());
    assert_eq!(v["ready"], 4, "{v}");
    assert_eq!(v["dead"], 1, "{v}");
    let video = &v["queues"]["video"];
    assert_eq!(
        (
            &video["ready"],
            &video["delayed"],
            &video["leased"],
            &video["dead"]
        ),
        (&json!(1), &json!(0), &json!(0), &json!(1)),
        "{v}"
    );
    assert_eq!(v["queues"]["mail"]["ready"], 2, "{v}");
    assert_eq!(v["queues"]["default"]["ready"], 1, "{v}");
    let mail = json(
        walq(&["stats", d, "--queue", "mail", "--json"])
            .stdout
            .trim(),
    );
    assert_eq!(
        (&mail["ready"], &mail["dead"]),
        (&json!(2), &json!(0)),
        "{mail}"
    );
    assert_eq!(mail["queue"], "mail", "{mail}");
    assert_eq!(mail["queues"].as_object().unwrap().len(), 1, "{mail}");
    let text = walq(&["stats", d]);
    assert!(text.stdout.contains("by queue"), "{}", text.stdout);
    let row = text.stdout.lines().find(|l| l.contains("video")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, ["video", "1", "0", "0", "1"], "{}", text.stdout);
    let one = walq(&["stats", d, "--queue", "video"]);
    assert!(one.stdout.contains("only       video"), "{}", one.stdout);
    assert!(one.stdout.contains("ready      1"), "{}", one.stdout);
}

#[test]
fn export_and_dead_list_hold_only_the_queue_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    three_queues(dir.path());
    let d = dir.path().to_str().unwrap();
    let run = walq(&["export", d, "--queue", "video"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = json_lines(&run.stdout);
    assert_eq!(lines[0]["queue"], "video", "{}", run.stdout);
    assert_eq!(
        (&lines[0]["jobs"], &lines[0]["dead"]),
        (&json!(1), &json!(1))
    );
    let items: Vec<_> = lines[1..]
        .iter()
        .map(|l| (l["type"].as_str().unwrap(), l["payload"].as_str().unwrap()))
        .collect();
    assert_eq!(items, [("job", "resize"), ("dead", "corrupt file")]);
    let mail = json_lines(&walq(&["export", d, "--queue", "mail"]).stdout);
    assert_eq!((&mail[0]["jobs"], &mail[0]["dead"]), (&json!(2), &json!(0)));
    assert_eq!(mail.len(), 3);
    let dead = walq(&["dead", "list", d, "--queue", "video", "--json"]);
    assert_eq!(payloads(&dead.stdout), ["corrupt file"]);
    let none = walq(&["dead", "list", d, "--queue", "mail"]);
    assert_eq!(none.code, 0, "{}", none.stderr);
    assert_eq!(none.stdout.trim(), "no dead letters");
}

/// A group is a queue's: the default queue's job of group "g" is ready
/// although video has an older job of a group "g" (both read `blocked`
/// or counted delayed before, while the library delivers both).
#[test]
fn groups_of_the_same_name_in_two_queues_are_two_groups() {
    let dir = tempfile::tempdir().unwrap();
    three_queues(dir.path());
    let d = dir.path().to_str().unwrap();
    let peek = json_lines(&walq(&["peek", d, "--json"]).stdout);
    let plain = peek.iter().find(|j| j["payload"] == "plain").unwrap();
    assert_eq!(plain["status"], "ready", "{plain}");
    let id = plain["id"].to_string();
    let show = json(walq(&["show", d, &id, "--json"]).stdout.trim());
    assert_eq!(show["status"], "ready", "{show}");
    let v = json(walq(&["stats", d, "--json"]).stdout.trim());
    assert_eq!((&v["ready"], &v["delayed"]), (&json!(4), &json!(0)), "{v}");
    quiet(|| {
        let store = walq::Store::open_with(dir.path(), opts()).unwrap();
        let job = store.default_queue().dequeue_timeout(Duration::ZERO);
        assert!(job.unwrap().is_some(), "the library delivers it");
        store.close().unwrap();
    });
}
