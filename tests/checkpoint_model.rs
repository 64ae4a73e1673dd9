//! Property: over random sessions of random operations, each ended by a
//! clean close or a crash (the queue dropped), opening from the checkpoint
//! shows exactly what opening with a full scan shows (counts, every job's
//! status and last error, dead letters, keys, every job drained in order with its
//! attempt, level and group; jobs are enqueued at every level and in a few
//! groups). `PROPTEST_CASES=N` for more cases.

mod checkpoint_common;

use checkpoint_common::*;
use proptest::prelude::*;
use walq::{Clock, ManualClock, Queue};

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..3000, prop_oneof![3 => Just(0u64), 1 => 1u64..200], 0u8..6)
            .prop_map(|(l, d, k)| Op::Enqueue(l, d, k)),
        2 => (0usize..3000, prop_oneof![3 => Just(0u64), 1 => 1u64..200], 0u8..6, 0u8..4, 0u8..4)
            .prop_map(|(l, d, k, p, g)| Op::EnqueueIn(l, d, k, p, g)),
        1 => (1u8..6).prop_map(Op::Batch),
        1 => Just(Op::Lease),
        3 => Just(Op::Ack),
        1 => (0u64..100).prop_map(Op::Nack),
        1 => (0u64..100).prop_map(Op::NackErr),
        1 => Just(Op::Fail),
        1 => Just(Op::Redrive),
        1 => (0u64..60).prop_map(Op::Advance),
    ]
}

/// A session: its operations, and whether it ends with a clean close.
fn session() -> impl Strategy<Value = (Vec<Op>, bool)> {
    (prop::collection::vec(op(), 0..250), any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn checkpoint_open_equals_scan_open(
        sessions in prop::collection::vec(session(), 1..4),
        every in prop_oneof![Just(0u64), Just(8 * 1024), Just(40 * 1024)],
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_700_000_000_000);
        for (ops, close) in &sessions {
            let q = Queue::open_with(dir.path(), opts(&clock, every)).expect("open");
            q.check_invariants();
            let mut held = Vec::new();
            apply(&q, &clock, ops, &mut held);
            if *close {
                q.close().expect("close");
            }
        }
        let now = clock.now_ms();
        let (with, seen) = observe(dir.path(), now, false);
        let (_, scanned) = observe(dir.path(), now, true);
        let last_closed = sessions.last().is_some_and(|s| s.1);
        if last_closed {
            prop_assert!(with.checkpoint_used, "{:?}", with);
        }
        prop_assert_eq!(seen, scanned);
    }
}
