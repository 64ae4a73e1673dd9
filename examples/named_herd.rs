//! What idle consumers of other queues cost in a store with named queues:
//! `queues` named queues, each with `per_queue` threads waiting in
//! `Queue::dequeue_wait`; one producer enqueues `jobs` jobs in turn on each
//! queue, each only once the one before was acked, so every consumer is
//! idle at each enqueue (the case where waking all of them costs the most).
//! Prints wall and process CPU time per job (`Durability::Os`: no fsync).
//!
//! `cargo run --release --example named_herd -- 4 4 20000`

use std::sync::mpsc;
use std::time::Duration;

use walq::{Durability, Options, Store};

#[path = "support/herd.rs"]
mod herd;
use herd::{arg, drive};

fn main() -> walq::Result<()> {
    let (queues, per_queue, jobs) = (arg(1, 4), arg(2, 4), arg(3, 20_000));
    let dir = tempfile::tempdir().expect("a temporary directory");
    // `Os`: no fsync, so what is timed is the wake and the look.
    let store = Store::open_with(dir.path(), Options::default().durability(Durability::Os))?;
    let handles = (0..queues)
        .map(|i| store.queue(&format!("q{i}")))
        .collect::<walq::Result<Vec<_>>>()?;
    let (acked, each_ack) = mpsc::channel::<()>();
    for q in &handles {
        for _ in 0..per_queue {
            let (q, acked) = (q.clone(), acked.clone());
            std::thread::spawn(move || {
                let (vis, wait) = (Duration::from_secs(30), Duration::from_secs(3600));
                while let Ok(Some(job)) = q.dequeue_wait(vis, wait) {
                    q.ack(job.receipt()).expect("ack");
                    let _ = acked.send(());
                }
            });
        }
    }
    let label = format!("{queues} queues x {per_queue} threads");
    drive(&label, jobs, &each_ack, |i| {
        handles[(i % queues) as usize].enqueue(b"job")
    })?;
    // The consumers stop at the close (their dequeue fails with `Closed`).
    store.close()
}
