//! What idle consumers of other queues cost in a store with named queues:
//! `queues` named queues, each with `per_queue` threads waiting in
//! `Queue::dequeue_wait`; one producer enqueues `jobs` jobs in turn on each
//! queue, each only once the one before was acked, so every consumer is
//! idle at each enqueue (the case where waking all of them costs the most).
//! Prints wall and process CPU time per job (`Durability::Os`: no fsync).
//!
//! `cargo run --release --example named_herd -- 4 4 20000`

use std::sync::mpsc;
use std::time::{Duration, Instant};

use walq::{Durability, Options, Store};

#[path = "support/herd.rs"]
mod herd;
use herd::{arg, cpu_time};

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
    // Let every consumer reach its wait.
    std::thread::sleep(Duration::from_millis(200));
    let (start, cpu) = (Instant::now(), cpu_time());
    for i in 0..jobs {
        handles[(i % queues) as usize].enqueue(b"job")?;
        each_ack.recv().expect("a consumer acked the job");
    }
    let (wall, cpu) = (start.elapsed(), cpu_time() - cpu);
    println!(
        "{queues} queues x {per_queue} threads, jobs {jobs}: {:.1} us wall, {:.1} us CPU per job",
        wall.as_secs_f64() * 1e6 / jobs as f64,
        cpu.as_secs_f64() * 1e6 / jobs as f64,
    );
    // The consumers stop at the close (their dequeue fails with `Closed`).
    store.close()
}
