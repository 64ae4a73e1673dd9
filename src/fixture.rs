//! A store with jobs in every state, for walq's own tests (the library's
//! and the CLI's): behind the `testing` feature, not part of the API.

use std::path::Path;
use std::time::Duration;

use crate::{EnqueueOptions, Options, Priority, Queue, Retry, Store};

/// The levels, in the order the fixture's jobs take them.
const LEVELS: [Priority; 4] = [
    Priority::Low,
    Priority::Normal,
    Priority::High,
    Priority::Urgent,
];

/// Fills `dir` with a closed store over several 64 KiB segments with
/// jobs in every state: keys, groups, every level, delays, a named queue
/// (`mail`), leased, nacked, acked, dead, purged and redriven jobs, binary
/// and UTF-8 payloads of many sizes. Panics on any error (a fixture).
///
/// Pending job `i` of 60 (in enqueue order) has a payload of `100 + 97 i`
/// bytes of `b'a' + i % 26`, its first byte `0xff` when `i` is even.
pub fn filled_store(dir: &Path) {
    let store = Store::open_with(dir, Options::default().segment_size(64 << 10)).expect("open");
    let q = store.default_queue();
    let named = store.queue("mail").expect("named queue");
    many_dead(&q, &named);
    for i in 0..60u32 {
        let mut payload = vec![b'a' + (i % 26) as u8; 100 + 97 * i as usize];
        if i.is_multiple_of(2) {
            payload[0] = 0xff;
        }
        let target = if i % 4 == 1 { &named } else { &q };
        target.enqueue_with(&payload, options(i)).expect("enqueue");
    }
    for (n, target) in [&q, &named].into_iter().enumerate() {
        settle_six(target, n == 0);
    }
    let dead = q.dead_letter_ids();
    assert!(dead.len() >= 2, "{dead:?}");
    q.redrive(dead[0]).expect("redrive");
    drop(named);
    q.close().expect("close");
}

/// The options of pending job `i`.
fn options(i: u32) -> EnqueueOptions {
    let mut o = EnqueueOptions::new().priority(LEVELS[i as usize % 4]);
    if i.is_multiple_of(3) {
        o = o.idempotency_key(format!("k{i}"));
    }
    if i.is_multiple_of(5) {
        o = o.group(format!("g{}", i % 2));
    }
    if i.is_multiple_of(7) {
        o = o.delay(Duration::from_secs(3600));
    }
    if i.is_multiple_of(11) {
        o = o.max_attempts(1);
    }
    o
}

/// Leases up to six jobs of `target` and acks, fails and (in the default
/// queue) keeps leased or (in the other) nacks them in turn.
fn settle_six(target: &Queue, keep_leased: bool) {
    let mut held = Vec::new();
    while let Some(job) = target.dequeue_timeout(Duration::ZERO).expect("dequeue") {
        held.push(job);
        if held.len() == 6 {
            break;
        }
    }
    for (k, job) in held.into_iter().enumerate() {
        match k % 3 {
            0 => target.ack(job.receipt()).expect("ack"),
            1 => target.fail(job.receipt(), "boom").expect("fail"),
            _ if keep_leased => std::mem::forget(job),
            _ => target
                .nack(job.receipt(), Retry::After(Duration::ZERO), "x")
                .expect("nack"),
        }
    }
}

/// Many dead letters in both queues (every level, keys, binary and
/// UTF-8 payloads of many sizes, errors of many lengths), a few of them
/// purged again, made while the queues hold no other job.
fn many_dead(q: &Queue, named: &Queue) {
    for i in 0..120u32 {
        let mut payload = vec![b'A' + (i % 26) as u8; 1 + 331 * i as usize];
        if i.is_multiple_of(3) {
            payload[0] = 0xfe;
        }
        let mut o = EnqueueOptions::new()
            .max_attempts(1)
            .priority(LEVELS[i as usize % 4]);
        if i.is_multiple_of(4) {
            o = o.idempotency_key(format!("dead-k{i}"));
        }
        let target = if i % 5 == 2 { named } else { q };
        let id = target.enqueue_with(&payload, o).expect("enqueue").id;
        let job = target
            .dequeue_timeout(Duration::ZERO)
            .expect("dequeue")
            .expect("the job just enqueued");
        assert_eq!(job.id(), id);
        let error = format!("error {i}: {}", "x".repeat(i as usize));
        target.fail(job.receipt(), &error).expect("fail");
        if i % 17 == 5 {
            target.purge(id).expect("purge");
        }
    }
}
