//! Under `Durability::Sync` appends are `pwrite`s; a batch of jobs is
//! written with one of them, not one per job, and stays all-or-nothing
//! across a power cut.

use std::path::Path;
use std::sync::Arc;

use walq::vfs::{Fault, FaultOp, SimFs};
use walq::{Durability, ErrorKind, Options, Queue};

fn open(fs: &SimFs) -> Queue {
    let opts = Options::default()
        .durability(Durability::Sync)
        .segment_size(1 << 20);
    Queue::open_on(Arc::new(fs.clone()), Path::new("/q"), opts).expect("open")
}

#[test]
fn a_batch_is_one_write_and_survives_a_power_cut() {
    let fs = SimFs::new();
    let q = open(&fs);
    q.enqueue(b"before").unwrap();
    let payloads: Vec<Vec<u8>> = (0..100).map(|i| format!("job {i}").into_bytes()).collect();
    let writes = fs.op_count(FaultOp::Write);
    let ids = q.enqueue_batch(payloads.iter()).unwrap();
    let batch_writes = fs.op_count(FaultOp::Write) - writes;
    assert_eq!(ids.len(), 100);
    assert_eq!(batch_writes, 1, "writes for one batch of 100 jobs");

    let after = fs.power_loss(7);
    drop(q);
    let q = open(&after);
    let mut got = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        got.push(job.payload().to_vec());
        q.ack(job.receipt()).unwrap();
    }
    let mut want = vec![b"before".to_vec()];
    want.extend(payloads);
    assert_eq!(got, want, "every job of the acknowledged batch, in order");
}

#[test]
fn a_failed_batch_write_adds_no_job() {
    let fs = SimFs::new();
    let q = open(&fs);
    q.enqueue(b"before").unwrap();
    let at = fs.op_count(FaultOp::Write);
    fs.set_fault(Some(Fault {
        op: FaultOp::Write,
        at,
        forever: false,
        kind: std::io::ErrorKind::Other,
    }));
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| format!("job {i}").into_bytes()).collect();
    let err = q.enqueue_batch(payloads.iter()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    fs.set_fault(None);
    drop(q);
    let q = open(&fs);
    let mut got = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        got.push(job.payload().to_vec());
        q.ack(job.receipt()).unwrap();
    }
    assert_eq!(got, vec![b"before".to_vec()], "no job of the failed batch");
    q.enqueue(b"after").unwrap();
}
