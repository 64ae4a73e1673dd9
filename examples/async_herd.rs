//! What an idle async consumer costs the queue: `tasks` tokio tasks wait
//! in `Queue::dequeue_async`; one producer enqueues `jobs` jobs one at a
//! time, each only once the one before was acked, so every task is idle at
//! each enqueue (the case where waking all of them costs the most).
//! Prints wall and process CPU time per job (`Durability::Os`: no fsync).
//!
//! `cargo run --release --example async_herd --features tokio -- 64 20000`

use std::sync::mpsc;
use std::time::{Duration, Instant};

use walq::{Durability, Options, Queue};

#[path = "support/herd.rs"]
mod herd;
use herd::{arg, cpu_time};

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
    // Let every task reach its wait.
    std::thread::sleep(Duration::from_millis(200));
    let (start, cpu) = (Instant::now(), cpu_time());
    for _ in 0..jobs {
        q.enqueue(b"job")?;
        each_ack.recv().expect("a task acked the job");
    }
    let (wall, cpu) = (start.elapsed(), cpu_time() - cpu);
    println!(
        "tasks {tasks}, jobs {jobs}: {:.1} us wall, {:.1} us CPU per job",
        wall.as_secs_f64() * 1e6 / jobs as f64,
        cpu.as_secs_f64() * 1e6 / jobs as f64,
    );
    rt.shutdown_background();
    Ok(())
}
