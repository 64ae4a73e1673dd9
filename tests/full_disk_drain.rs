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
