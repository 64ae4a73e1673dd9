//! What idle consumers of other queue sets cost in a store with named
//! queues: `pairs` pools-to-be over two queues each (`MultiQueue`), each
//! with `per_pair` threads waiting in `Backend::lease`; one producer
//! enqueues `jobs` jobs in turn on each queue, each only once the one
//! before was acked, so every consumer is idle at each enqueue. Prints
//! wall and process CPU time per job (`Durability::Os`: no fsync).
//!
//! `cargo run --release --example multi_herd -- 4 4 20000`

use std::sync::mpsc;
use std::time::Duration;

use walq::worker::{Backend, MultiQueue};
use walq::{Durability, Options, Store};

#[path = "support/herd.rs"]
mod herd;
use herd::{arg, drive};

fn main() -> walq::Result<()> {
    let (pairs, per_pair, jobs) = (arg(1, 4), arg(2, 4), arg(3, 20_000));
    let dir = tempfile::tempdir().expect("a temporary directory");
    // `Os`: no fsync, so what is timed is the wake and the look.
    let store = Store::open_with(dir.path(), Options::default().durability(Durability::Os))?;
    let handles = (0..pairs * 2)
        .map(|i| store.queue(&format!("q{i}")))
        .collect::<walq::Result<Vec<_>>>()?;
    let (acked, each_ack) = mpsc::channel::<()>();
    for pair in 0..pairs {
        let mq = MultiQueue::new(&store)
            .queue(&format!("q{}", pair * 2), 1)?
            .queue(&format!("q{}", pair * 2 + 1), 1)?;
        let mq = std::sync::Arc::new(mq);
        for _ in 0..per_pair {
            let (mq, acked) = (mq.clone(), acked.clone());
            std::thread::spawn(move || {
                let (vis, wait) = (Duration::from_secs(30), Duration::from_secs(3600));
                while let Ok(Some(job)) = mq.lease(vis, wait) {
                    mq.complete(job.lease(), None).expect("ack");
                    let _ = acked.send(());
                }
            });
        }
    }
    let label = format!("{pairs} pairs x {per_pair} threads");
    drive(&label, jobs, &each_ack, |i| {
        handles[(i % (pairs * 2)) as usize].enqueue(b"job")
    })?;
    // The consumers stop at the close (their lease fails with `Closed`).
    store.close()
}
