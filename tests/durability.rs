//! Guarantee 1 on the simulated file system: what each durability mode
//! promises survives a power cut, and concurrent Sync callers share one
//! fdatasync (group commit).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use walq::vfs::SimFs;
use walq::{Durability, Options, Queue};

fn open(fs: &SimFs, durability: Durability) -> Queue {
    let opts = Options::default()
        .durability(durability)
        .segment_size(64 * 1024);
    Queue::open_on(Arc::new(fs.clone()), Path::new("/q"), opts).unwrap()
}

fn payloads_after_power_loss(fs: &SimFs, seed: u64) -> Vec<Vec<u8>> {
    let after = fs.power_loss(seed);
    let q = open(&after, Durability::Os);
    let mut out = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        out.push(job.payload().to_vec());
        q.ack(job.receipt()).unwrap();
    }
    out
}

#[test]
fn sync_mode_survives_a_power_cut_after_every_ok() {
    let fs = SimFs::new();
    let q = open(&fs, Durability::Sync);
    let mut acked = Vec::new();
    for i in 0..40u32 {
        let p = format!("job {i}").into_bytes();
        q.enqueue(&p).unwrap();
        acked.push(p);
        for seed in 0..3 {
            assert_eq!(
                payloads_after_power_loss(&fs, seed * 1000 + u64::from(i)),
                acked
            );
        }
    }
}

#[test]
fn os_mode_survives_a_process_crash() {
    let fs = SimFs::new();
    let q = open(&fs, Durability::Os);
    for i in 0..100u32 {
        q.enqueue(&i.to_le_bytes()).unwrap();
    }
    // A process crash keeps the page cache: same file system, no power loss.
    drop(q);
    let q = open(&fs, Durability::Os);
    assert_eq!(q.stats().ready, 100);
}

#[test]
fn sync_forces_durability_in_os_mode() {
    let fs = SimFs::new();
    let q = open(&fs, Durability::Os);
    q.enqueue(b"one").unwrap();
    q.enqueue(b"two").unwrap();
    q.sync().unwrap();
    for seed in 0..20 {
        assert_eq!(
            payloads_after_power_loss(&fs, seed),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
    }
}

#[test]
fn periodic_mode_syncs_in_the_background() {
    let fs = SimFs::new();
    let q = open(&fs, Durability::Periodic(Duration::from_millis(5)));
    q.enqueue(b"flushed by the background thread").unwrap();
    let written = q.stats().written_lsn;
    // Only the background thread syncs here: wait until it has. The
    // deadline only turns a missing flusher into a failure, not a hang.
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while q.stats().durable_lsn < written {
        assert!(
            std::time::Instant::now() < give_up,
            "no background fdatasync"
        );
        std::thread::yield_now();
    }
    for seed in 0..20 {
        assert_eq!(
            payloads_after_power_loss(&fs, seed),
            vec![b"flushed by the background thread".to_vec()]
        );
    }
}

#[test]
fn concurrent_sync_producers_share_one_fdatasync() {
    let fs = SimFs::new();
    let q = open(&fs, Durability::Sync);
    let producers = 8u64;
    let before = fs.syncs();
    fs.pause_syncs(true);
    let threads: Vec<_> = (0..producers)
        .map(|i| {
            let q = q.clone();
            std::thread::spawn(move || q.enqueue(&i.to_le_bytes()).unwrap())
        })
        .collect();
    // One producer leads and is held inside fdatasync; the rest append and
    // queue up behind it.
    fs.wait_paused_syncs(1);
    while q.stats().enqueued_total < producers {
        std::thread::yield_now();
    }
    fs.pause_syncs(false);
    for t in threads {
        t.join().unwrap();
    }
    let syncs = fs.syncs() - before;
    assert!(
        syncs <= 2,
        "{producers} concurrent Sync enqueues took {syncs} fdatasyncs"
    );
    let mut got = payloads_after_power_loss(&fs, 1);
    got.sort();
    assert_eq!(got.len() as u64, producers);
}
