//! The id floor (`ID_FLOOR`) as a user meets it: damage, full disks.
//! Power cuts: `tests/status.rs::ids_lost_to_a_power_cut_are_not_issued_again`.

mod common;

use std::path::Path;
use std::sync::Arc;

use walq::vfs::{Fault, FaultOp, SimFs, Vfs};
use walq::{ErrorKind, ManualClock, Queue, RecoveryMode};

const FLOOR: &str = "ID_FLOOR";

/// Both slots damaged (not a torn write, which damages one): `Strict`
/// refuses the open naming the file and leaves it; `Salvage` opens, counts
/// the bytes, and issues ids a step past the log's, never one it may have
/// issued.
#[test]
fn a_damaged_floor_is_refused_and_salvage_starts_past_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let q = common::open(dir.path(), &clock);
    let ids: Vec<u64> = (0..3).map(|_| q.enqueue(b"job").unwrap()).collect();
    let last = ids[2];
    q.close().unwrap();
    drop(q);
    let path = dir.path().join(FLOOR);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x40;
    bytes[4096 + 20] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = Queue::open_with(dir.path(), common::opts(&clock)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(FLOOR), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
    let salvage = common::opts(&clock).recovery(RecoveryMode::Salvage);
    let q = Queue::open_with(dir.path(), salvage).unwrap();
    assert!(q.recovery_report().bytes_skipped >= bytes.len() as u64);
    assert_eq!(common::drain(&q).len(), 3, "the jobs are kept");
    let next = q.enqueue(b"after").unwrap();
    assert!(next > last + 1, "a step past the log: {next}");
    q.close().unwrap();
    drop(q);
    let q = common::open(dir.path(), &clock);
    assert_eq!(q.recovery_report().bytes_skipped, 0, "written whole again");
    assert_eq!(q.enqueue(b"then").unwrap(), next + 1);
}

/// The file is made by the open; on a full disk the open goes on without
/// it (a drain needs the open), and the first enqueue makes it or is
/// refused with the disk's error (the queue is not poisoned); the same
/// call succeeds once there is room.
#[test]
fn a_full_disk_refuses_the_enqueue_that_needs_the_floor_and_nothing_else() {
    let fs = SimFs::new();
    let clock = ManualClock::new(1_000_000);
    let open = |fs: &SimFs| {
        Queue::open_on(Arc::new(fs.clone()), Path::new("/q"), common::opts(&clock)).unwrap()
    };
    drop(open(&fs));
    fs.remove(Path::new("/q/ID_FLOOR")).unwrap();
    fs.set_fault(Some(Fault {
        op: FaultOp::Create,
        at: fs.op_count(FaultOp::Create),
        forever: true,
        kind: std::io::ErrorKind::StorageFull,
    }));
    let q = open(&fs);
    assert!(fs.read_file(Path::new("/q/ID_FLOOR")).is_none());
    let err = q.enqueue(b"job").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains(FLOOR), "{err}");
    assert_eq!(q.stats().enqueued_total, 0);
    fs.set_fault(None::<Fault>);
    let id = q.enqueue(b"job").unwrap();
    assert_eq!(id, 1);
    assert_eq!(q.dequeue().unwrap().unwrap().id(), id);
}
