//! The walq demo: producers enqueue a burst of jobs, workers drain it,
//! some jobs fail and are retried with backoff, a few keep failing and end
//! in the dead letters, then the queue is reopened to show that nothing
//! was lost. Run it with `cargo run --release --example demo`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use walq::{Backoff, Durability, EnqueueOptions, Options, Queue, Retry};

const PRODUCERS: u64 = 4;
const JOBS_PER_PRODUCER: u64 = 2_500;
const WORKERS: u64 = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let opts = Options::default()
        .durability(Durability::Sync)
        .max_attempts(3)
        .visibility_timeout(Duration::from_secs(10))
        .backoff(Backoff {
            initial: Duration::from_millis(5),
            multiplier: 2.0,
            max: Duration::from_millis(50),
            jitter: 0.5,
        });
    let q = Queue::open_with(dir.path(), opts.clone())?;
    println!("walq demo: queue in {}", dir.path().display());
    println!(
        "durability: Sync (every enqueue/ack/nack is fdatasync'ed; concurrent callers share syncs)"
    );

    // 1. A burst: producers enqueue "send email" jobs as fast as they can.
    let start = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || -> walq::Result<()> {
                for i in 0..JOBS_PER_PRODUCER {
                    let payload = format!("send email #{i} for tenant {p}");
                    // Every 100th job carries an idempotency key and is
                    // submitted twice, as a retrying client would.
                    if i % 100 == 0 {
                        let key = format!("tenant-{p}/mail-{i}");
                        let opts = EnqueueOptions::new().idempotency_key(&key);
                        let first = q.enqueue_with(payload.as_bytes(), opts.clone())?;
                        let again = q.enqueue_with(payload.as_bytes(), opts)?;
                        assert_eq!(first.id, again.id);
                        assert!(again.duplicate);
                    } else {
                        q.enqueue(payload.as_bytes())?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer thread")?;
    }
    let burst = start.elapsed();
    let total = PRODUCERS * JOBS_PER_PRODUCER;
    println!(
        "\n1. burst: {PRODUCERS} producers enqueued {total} jobs in {:.0} ms ({:.0} jobs/s, durable)",
        burst.as_secs_f64() * 1e3,
        total as f64 / burst.as_secs_f64()
    );
    println!(
        "   {} duplicate submissions were recognised by their idempotency key",
        PRODUCERS * JOBS_PER_PRODUCER / 100
    );
    print_stats(&q);

    // 2. Workers drain the backlog. Jobs whose number ends in 7 fail
    //    transiently once; jobs ending in 13 fail every time (poison).
    let outcomes: Arc<Mutex<BTreeMap<&'static str, u64>>> = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (q, outcomes, done) = (q.clone(), outcomes.clone(), done.clone());
            std::thread::spawn(move || -> walq::Result<()> {
                while done.load(Ordering::SeqCst) < total {
                    let Some(job) = q.dequeue_timeout(Duration::from_millis(100))? else {
                        continue;
                    };
                    let text = std::str::from_utf8(job.payload()).unwrap_or("");
                    let n: u64 = text
                        .split('#')
                        .nth(1)
                        .and_then(|s| s.split(' ').next())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let outcome = if n % 100 == 13 {
                        q.nack(
                            job.receipt(),
                            Retry::Backoff,
                            "mail server rejected the address",
                        )?;
                        if job.attempt() == job.max_attempts() {
                            done.fetch_add(1, Ordering::SeqCst);
                            "dead-lettered after 3 attempts"
                        } else {
                            "failed, retry scheduled"
                        }
                    } else if n % 10 == 7 && job.attempt() == 1 {
                        q.nack(job.receipt(), Retry::Backoff, "mail server timed out")?;
                        "failed, retry scheduled"
                    } else {
                        q.ack(job.receipt())?;
                        done.fetch_add(1, Ordering::SeqCst);
                        if job.attempt() > 1 {
                            "succeeded on a retry"
                        } else {
                            "succeeded first time"
                        }
                    };
                    *outcomes
                        .lock()
                        .expect("outcomes")
                        .entry(outcome)
                        .or_default() += 1;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread")?;
    }
    let drain = start.elapsed();
    println!(
        "\n2. drain: {WORKERS} workers settled {total} jobs in {:.0} ms ({:.0} jobs/s, durable acks)",
        drain.as_secs_f64() * 1e3,
        total as f64 / drain.as_secs_f64()
    );
    for (outcome, n) in outcomes.lock().expect("outcomes").iter() {
        println!("   {n:>6}  {outcome}");
    }
    print_stats(&q);

    // 3. The dead letters: inspect, then redrive one and purge the rest.
    let dead = q.dead_letters()?;
    println!("\n3. dead letters: {}", dead.len());
    for d in dead.iter().take(3) {
        println!(
            "   job {:>5}: {:?} after {} attempts, last error: {}",
            d.id,
            String::from_utf8_lossy(&d.payload),
            d.attempts,
            d.error
        );
    }
    if dead.len() > 3 {
        println!("   ... and {} more", dead.len() - 3);
    }

    // 4. Restart: everything survives a reopen.
    drop(q);
    let q = Queue::open_with(dir.path(), opts)?;
    let report = q.recovery_report();
    println!(
        "\n4. reopened: scanned {} bytes in {} segment(s), {} records; {} dead letters still there",
        report.bytes_scanned,
        report.segments_scanned,
        report.records,
        q.dead_letter_ids().len()
    );
    if let Some(first) = q.dead_letter_ids().first().copied() {
        q.redrive(first)?;
        let job = q.dequeue()?.expect("the redriven job is ready");
        println!(
            "   redrove job {}: delivered again as attempt {} -> acked",
            job.id(),
            job.attempt()
        );
        q.ack(job.receipt())?;
    }
    let purged = q.purge_all()?;
    println!("   purged the other {purged} dead letters");
    print_stats(&q);
    println!("\nA drained queue keeps one segment on disk: disk use follows the live jobs.");
    Ok(())
}

fn print_stats(q: &Queue) {
    let s = q.stats();
    println!(
        "   stats: ready {}, delayed {}, in flight {}, dead {}; segments {}, {} KiB on disk; {} log fdatasyncs since open",
        s.ready,
        s.delayed,
        s.in_flight,
        s.dead,
        s.segments,
        s.disk_bytes / 1024,
        s.syncs_total
    );
}
