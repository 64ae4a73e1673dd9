//! Priority levels: higher levels first, FIFO within a level, the
//! starvation bound of the 15-slot cycle (docs/architecture.md, "Delivery
//! rule"), retries keep their level, and a reopen (with the checkpoint or
//! by a full scan of the log) restores every job's level. A queue that
//! uses no priority writes only kind 1 records and checkpoint version 1.

use std::path::Path;
use std::time::Duration;

mod common;

use common::open;
use walq::{EnqueueOptions, ManualClock, Priority, Queue, Retry};

/// Urgent 8, High 4, Normal 2, Low 1, in the documented order.
const CYCLE: [Priority; 15] = {
    use Priority::{High as H, Low as L, Normal as N, Urgent as U};
    [U, H, U, N, U, H, U, L, U, H, U, N, U, H, U]
};

fn put(q: &Queue, p: Priority, payload: &str) -> u64 {
    q.enqueue_with(payload.as_bytes(), EnqueueOptions::new().priority(p))
        .expect("enqueue")
        .id
}

/// Dequeues and acks everything; returns the payloads in delivery order.
fn drain(q: &Queue) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(job) = q.dequeue().expect("dequeue") {
        out.push(String::from_utf8(job.payload().to_vec()).expect("utf-8"));
        q.ack(job.receipt()).expect("ack");
    }
    out
}

#[test]
fn higher_levels_go_first_and_each_level_is_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    put(&q, Priority::Low, "low-1");
    put(&q, Priority::Normal, "normal-1");
    put(&q, Priority::Urgent, "urgent-1");
    put(&q, Priority::High, "high-1");
    put(&q, Priority::Urgent, "urgent-2");
    // The cycle from its start: U (slot 0), H (1), U (2), N (3); then
    // only Low has a ready job and is served.
    let order = drain(&q);
    assert_eq!(
        order,
        ["urgent-1", "high-1", "urgent-2", "normal-1", "low-1"],
        "cycle order among the ready levels"
    );
    q.check_invariants();
}

#[test]
fn a_low_job_behind_an_urgent_backlog_waits_at_most_fifteen_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    for i in 0..100 {
        put(&q, Priority::Urgent, &format!("u{i}"));
    }
    put(&q, Priority::Low, "low-1");
    put(&q, Priority::Low, "low-2");
    let order = drain(&q);
    let at = |name: &str| 1 + order.iter().position(|p| p == name).expect("delivered");
    // From the start of the cycle, Urgent holds slots 0, 2, 4, 6 before
    // Low's slot 7 (High and Normal have nothing ready): the first Low
    // job is the 5th delivery; the second comes one full cycle of Urgent
    // (slots 8..15 and 0..7: 8 deliveries) later.
    assert_eq!(at("low-1"), 5);
    assert_eq!(at("low-2"), 14);
    // The documented bound: position p of its level within 15·p.
    assert!(at("low-1") <= 15 && at("low-2") <= 30);
    // Urgent stays FIFO around them.
    let urgent: Vec<&String> = order.iter().filter(|p| p.starts_with('u')).collect();
    let want: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    assert_eq!(urgent, want.iter().collect::<Vec<_>>());
}

#[test]
fn with_every_level_backlogged_each_window_of_fifteen_gives_each_level_its_weight() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    // Lowest first, so that id order would give the opposite answer.
    for p in Priority::ALL {
        for i in 0..40 {
            put(&q, p, &format!("{p:?}-{i}"));
        }
    }
    let mut levels = Vec::new();
    for _ in 0..60 {
        let job = q.dequeue().unwrap().expect("backlogged");
        levels.push(job.priority());
        q.ack(job.receipt()).unwrap();
    }
    let want: Vec<Priority> = CYCLE.iter().cycle().take(60).copied().collect();
    assert_eq!(levels, want);
    for w in levels.windows(15) {
        for p in Priority::ALL {
            let n = w.iter().filter(|&&l| l == p).count() as u32;
            assert_eq!(n, p.weight(), "{p:?} in a window of 15");
        }
    }
}

#[test]
fn a_retried_job_keeps_its_level() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    for i in 0..5 {
        put(&q, Priority::Normal, &format!("n{i}"));
    }
    put(&q, Priority::Urgent, "urgent");
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.payload(), b"urgent");
    q.nack(
        job.receipt(),
        Retry::After(Duration::from_millis(500)),
        "busy",
    )
    .unwrap();
    // While it waits out its backoff, Normal jobs are served.
    let n0 = q.dequeue().unwrap().unwrap();
    assert_eq!(n0.payload(), b"n0");
    q.ack(n0.receipt()).unwrap();
    clock.advance(Duration::from_millis(500));
    // Cycle slot 2 (Urgent): the retried job.
    let again = q.dequeue().unwrap().unwrap();
    assert_eq!(again.payload(), b"urgent");
    assert_eq!(again.priority(), Priority::Urgent);
    assert_eq!(again.attempt(), 2);
    // An expired lease comes back at its level too: slot 3 is Normal's,
    // slot 4 Urgent's again.
    clock.advance(Duration::from_secs(31));
    let n1 = q.dequeue().unwrap().unwrap();
    assert_eq!(n1.payload(), b"n1");
    let back = q.dequeue().unwrap().unwrap();
    assert_eq!(back.payload(), b"urgent");
    assert_eq!(back.priority(), Priority::Urgent);
    assert_eq!(back.attempt(), 3);
    q.check_invariants();
}

/// Kinds of the records in a segment file, walking the frames.
fn record_kinds(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("segment");
    let mut kinds = Vec::new();
    let mut off = 64;
    while off + 24 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        kinds.push(bytes[off + 16]);
        off += len;
    }
    kinds
}

fn checkpoint_version(dir: &Path) -> u16 {
    let b = std::fs::read(dir.join("CHECKPOINT")).expect("checkpoint");
    u16::from_le_bytes([b[8], b[9]])
}

/// Enqueues a mix, leases one Urgent job (left in flight) and nacks a
/// High one; returns the payloads a drain delivers on a reopen.
fn mixed(q: &Queue, clock: &ManualClock) {
    put(q, Priority::Low, "low");
    put(q, Priority::Normal, "normal-1");
    put(q, Priority::High, "high");
    put(q, Priority::Urgent, "urgent-1");
    put(q, Priority::Urgent, "urgent-2");
    put(q, Priority::Normal, "normal-2");
    let u1 = q.dequeue().unwrap().unwrap();
    assert_eq!(u1.payload(), b"urgent-1");
    let h = q.dequeue().unwrap().unwrap();
    assert_eq!(h.payload(), b"high");
    q.nack(h.receipt(), Retry::After(Duration::ZERO), "again")
        .unwrap();
    clock.advance(Duration::from_millis(1));
}

#[test]
fn a_reopen_restores_every_level_from_the_checkpoint_and_from_the_log() {
    for scan in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let q = open(dir.path(), &clock);
        mixed(&q, &clock);
        q.close().unwrap();
        drop(q);
        // Version 3 whatever the levels (before it: 2 when a live job has
        // a level); the levels are in the slots stored whole. Version 5
        // here: `mixed` nacks a job with an error text, which a waiting
        // job keeps (`Queue::last_error`, the checkpoint's error section).
        assert_eq!(checkpoint_version(dir.path()), 5);
        if scan {
            std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
        }
        let q = open(dir.path(), &clock);
        assert_eq!(q.recovery_report().checkpoint_used, !scan);
        q.check_invariants();
        let order = drain(&q);
        // urgent-1 (in flight at the close) is released at the reopen
        // time, after urgent-2 (enqueued earlier): both Urgent, FIFO by
        // due time. The cycle starts again at a reopen: U, H, U, N, then
        // Low at slot 7 (slots 4..6 have nothing ready), then Normal.
        assert_eq!(
            order,
            ["urgent-2", "high", "urgent-1", "normal-1", "low", "normal-2"],
            "scan: {scan}"
        );
    }
}

#[test]
fn a_queue_without_priorities_writes_kind_1_records() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    q.enqueue(b"plain").unwrap();
    put(&q, Priority::Normal, "explicit normal");
    q.close().unwrap();
    drop(q);
    let seg = dir.path().join("0000000001.wal");
    assert_eq!(record_kinds(&seg), [1, 1]);
    // Every checkpoint is version 3 (an older build scans the log
    // instead; docs/format.md, "Versions").
    assert_eq!(checkpoint_version(dir.path()), 3);

    let q = open(dir.path(), &clock);
    put(&q, Priority::High, "high");
    q.close().unwrap();
    drop(q);
    assert_eq!(record_kinds(&seg), [1, 1, 12]);
    assert_eq!(checkpoint_version(dir.path()), 3);
    let q = open(dir.path(), &clock);
    assert_eq!(drain(&q), ["high", "plain", "explicit normal"]);
    q.close().unwrap();
    drop(q);
    assert_eq!(checkpoint_version(dir.path()), 3);
}
