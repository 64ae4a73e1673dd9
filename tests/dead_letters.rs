//! Guarantee 7: dead letters keep payload, attempts and last error; they
//! can be listed, read, redriven and purged, and survive restarts.

mod common;

use common::{drain, open};
use walq::{ErrorKind, ManualClock};

#[test]
fn fail_list_read_redrive_purge_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let (x, y, z) = {
        let q = open(dir.path(), &clock);
        let x = q.enqueue(b"payload x").unwrap();
        let y = q.enqueue(b"payload y").unwrap();
        let z = q.enqueue(b"payload z").unwrap();
        for _ in 0..3 {
            let job = q.dequeue().unwrap().unwrap();
            let text = format!("bad input in job {}", job.id());
            q.fail(job.receipt(), &text).unwrap();
        }
        assert_eq!(q.stats().dead, 3);
        assert_eq!(q.stats().dead_lettered_total, 3);
        (x, y, z)
    };
    let q = open(dir.path(), &clock);
    assert_eq!(q.dead_letter_ids(), vec![x, y, z]);
    let all = q.dead_letters().unwrap();
    assert_eq!(all.len(), 3);
    let dx = q.dead_letter(x).unwrap().unwrap();
    assert_eq!(dx.payload, b"payload x");
    assert_eq!(dx.attempts, 1);
    assert_eq!(dx.error, format!("bad input in job {x}"));
    assert!(q.dequeue().unwrap().is_none());

    // Redrive one: back to ready with attempts reset, same id.
    q.redrive(x).unwrap();
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(
        (job.id(), job.attempt(), job.payload()),
        (x, 1, &b"payload x"[..])
    );
    q.ack(job.receipt()).unwrap();
    assert!(q.dead_letter(x).unwrap().is_none());

    // Purge one.
    q.purge(y).unwrap();
    assert_eq!(q.purge(y).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(q.redrive(y).unwrap_err().kind(), ErrorKind::NotFound);
    drop(q);

    let q = open(dir.path(), &clock);
    assert_eq!(q.dead_letter_ids(), vec![z], "x={x} y={y} z={z}");
    assert_eq!(q.redrive_all().unwrap(), 1);
    let got = drain(&q);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, z);
    drop(q);
    let q = open(dir.path(), &clock);
    assert!(q.dead_letter_ids().is_empty());
    assert!(
        q.dequeue().unwrap().is_none(),
        "redriven and acked stays gone"
    );
}

#[test]
fn purge_all_and_many_letters_compact_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = open(dir.path(), &clock);
    let payload = vec![7u8; 4000];
    for round in 0..3 {
        for _ in 0..200 {
            q.enqueue(&payload).unwrap();
        }
        while let Some(job) = q.dequeue().unwrap() {
            q.fail(job.receipt(), "nope").unwrap();
        }
        assert_eq!(q.stats().dead, 200);
        if round == 1 {
            assert_eq!(q.redrive_all().unwrap(), 200);
            while let Some(job) = q.dequeue().unwrap() {
                q.fail(job.receipt(), "still no").unwrap();
            }
        }
        assert_eq!(q.purge_all().unwrap(), 200);
    }
    let s = q.stats();
    assert_eq!(s.dead, 0);
    // Removed letters do not accumulate: the file was rewritten.
    let dead_len = std::fs::metadata(dir.path().join("dead.wal"))
        .unwrap()
        .len();
    assert!(dead_len < 2 << 20, "dead.wal is {dead_len} bytes");
    drop(q);
    let q = open(dir.path(), &clock);
    assert!(q.dead_letter_ids().is_empty());
}
