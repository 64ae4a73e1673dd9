//! What an idle async consumer costs the queue: `tasks` tokio tasks wait
//! in `Queue::dequeue_async`; one producer enqueues `jobs` jobs one at a
//! time, each only once the one before was acked, so every task is idle at
//! each enqueue (the case where waking all of them costs the most).
//! Prints wall and process CPU time per job (`Durability::Os`: no fsync).
//!
//! `cargo run --release --example async_herd --features tokio -- 64 20000`

use std::sync::mpsc;
use std::time::Duration;

use walq::{Durability, Options, Queue};

#[path = "support/herd.rs"]
mod herd;
use herd::{arg, drive};

fn main() -> walq::Result<()> {
    let (tasks, jobs) = (arg(1, 64), arg(2, 20_000));
    let dir = tempfile::tempdir().expect("a temporary directory");
    // `Os`: no fsync, so what is timed is the wake and the look.
    let q = Queue::open_with(dir.path(), Options::default().durability(Durability::Os))?;
    let (acked, each_ack) = mpsc::channel::<()>();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a tokio runtime");
    for _ in 0..tasks {
        let (q, acked) = (q.clone(), acked.clone());
        rt.spawn(async move {
            let (vis, wait) = (Duration::from_secs(30), Duration::from_secs(3600));
            while let Ok(Some(job)) = q.dequeue_async(vis, wait).await {
                q.ack(job.receipt()).expect("ack");
                let _ = acked.send(());
            }
        });
    }
    drive(&format!("tasks {tasks}"), jobs, &each_ack, |_| {
        q.enqueue(b"job")
    })?;
    rt.shutdown_background();
    Ok(())
}
