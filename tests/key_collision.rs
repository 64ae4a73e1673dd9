//! Finding 6 of issue 8: a duplicate idempotency key is decided by the
//! key's bytes, not its 128-bit hash alone. A test-only hook forces every
//! key to the same hash (this binary holds only this test: the hook is
//! process-wide).

mod common;

use walq::{EnqueueOptions, ManualClock};

#[test]
fn colliding_hashes_of_distinct_keys_are_distinct_jobs() {
    walq::__force_key_hash_collisions(true);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let key = |k: &str| EnqueueOptions::new().idempotency_key(k);
    let (a, b) = {
        let q = common::open(dir.path(), &clock);
        let a = q.enqueue_with(b"a", key("order-1")).unwrap();
        let b = q.enqueue_with(b"b", key("order-2")).unwrap();
        assert!(!a.duplicate);
        assert!(!b.duplicate, "a different key was taken for a duplicate");
        assert_ne!(a.id, b.id);
        let again = q.enqueue_with(b"a", key("order-1")).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.id, a.id);
        let again = q.enqueue_with(b"b", key("order-2")).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.id, b.id);
        q.check_invariants();
        (a.id, b.id)
    };
    let q = common::open(dir.path(), &clock);
    assert_eq!(q.enqueue_with(b"a", key("order-1")).unwrap().id, a);
    assert_eq!(q.enqueue_with(b"b", key("order-2")).unwrap().id, b);
    let c = q.enqueue_with(b"c", key("order-3")).unwrap();
    assert!(!c.duplicate);
    // Finish and dead-letter with keys known: still told apart.
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), a);
    q.ack(job.receipt()).unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "x").unwrap();
    assert_eq!(q.enqueue_with(b"a", key("order-1")).unwrap().id, a);
    assert_eq!(q.enqueue_with(b"b", key("order-2")).unwrap().id, b);
    assert_eq!(q.enqueue_with(b"c", key("order-3")).unwrap().id, c.id);
    q.check_invariants();
    walq::__force_key_hash_collisions(false);
}
