//! A full disk can be drained (guarantee 13; issue 8, finding 9): the next
//! segment is prepared (preallocated) ahead of time, so once the disk is
//! full the leases and acks that drain the queue, and so free space, can
//! still be written. Uses the simulated file system: every allocation fails
//! with ENOSPC from some point on.

mod sim_common;

use std::io;

use sim_common::*;
use walq::vfs::{Fault, FaultOp, SimFs};
use walq::{Durability, ErrorKind, ManualClock};

#[test]
fn a_full_disk_can_still_be_drained() {
    let fs = SimFs::new();
    let clock = ManualClock::new(START_MS);
    let q = open_with(&fs, &clock, Durability::Sync).unwrap();
    // Fill until the disk is full: no more allocation from here on.
    let mut ids = Vec::new();
    for i in 0..200u64 {
        ids.push(q.enqueue(&payload(i, 500)).unwrap());
    }
    fs.set_fault(Some(Fault {
        op: FaultOp::Allocate,
        at: fs.op_count(FaultOp::Allocate),
        forever: true,
        kind: io::ErrorKind::StorageFull,
    }));
    // Producers get ENOSPC (a clear error, no poison) once the active
    // segment and the spare are used up.
    let mut refused = None;
    for i in 0..1000u64 {
        if let Err(e) = q.enqueue(&payload(1000 + i, 500)) {
            refused = Some(e);
            break;
        }
        ids.push(i);
    }
    let err = refused.expect("the disk fills up");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert_eq!(
        err.io_error().map(io::Error::kind),
        Some(io::ErrorKind::StorageFull)
    );
    // Consumers drain everything that was accepted.
    let mut drained = 0;
    while let Some(job) = q
        .dequeue()
        .unwrap_or_else(|e| panic!("dequeue {drained} on a full disk: {e}"))
    {
        q.ack(job.receipt())
            .unwrap_or_else(|e| panic!("ack {drained} on a full disk: {e}"));
        drained += 1;
    }
    assert_eq!(drained, ids.len());
    assert_eq!(q.stats().ready, 0);
}

/// Producers that keep retrying on a full disk must not use the room kept
/// for draining: once a lease or an ack has rotated into the last spare,
/// new jobs are refused until a spare after it exists again. An operator
/// review found them accepted into that segment, after which every
/// dequeue failed with ENOSPC (it needed a spare that could not be made)
/// and the queue could not be drained (on ext4, a 16 MiB loop device; on
/// a 4 MiB tmpfs not even after a reopen).
#[test]
fn producers_retrying_on_a_full_disk_leave_the_drain_its_room() {
    for durability in [Durability::Sync, Durability::Os] {
        let fs = SimFs::new();
        let clock = ManualClock::new(START_MS);
        let q = open_with(&fs, &clock, durability).unwrap();
        for i in 0..200u64 {
            q.enqueue(&payload(i, 500)).unwrap();
        }
        fs.set_fault(Some(Fault {
            op: FaultOp::Allocate,
            at: fs.op_count(FaultOp::Allocate),
            forever: true,
            kind: io::ErrorKind::StorageFull,
        }));
        let mut accepted = 200u64;
        let mut drained = 0u64;
        let fill = |accepted: &mut u64| {
            while q.enqueue(&payload(*accepted, 500)).is_ok() {
                *accepted += 1;
            }
        };
        fill(&mut accepted);
        // Rounds of a partial drain, then producers retrying until refused.
        for round in 0..40 {
            for _ in 0..25 {
                let Some(job) = q
                    .dequeue()
                    .unwrap_or_else(|e| panic!("{durability:?} round {round}: dequeue: {e}"))
                else {
                    break;
                };
                q.ack(job.receipt())
                    .unwrap_or_else(|e| panic!("{durability:?} round {round}: ack: {e}"));
                drained += 1;
            }
            fill(&mut accepted);
        }
        while let Some(job) = q
            .dequeue()
            .unwrap_or_else(|e| panic!("{durability:?}: dequeue {drained} of {accepted}: {e}"))
        {
            q.ack(job.receipt()).unwrap();
            drained += 1;
        }
        assert_eq!(
            drained, accepted,
            "{durability:?}: every accepted job drained"
        );
    }
}
