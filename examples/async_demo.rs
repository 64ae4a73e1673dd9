//! The walq story on tokio: typed jobs, an async worker pool, a flaky
//! service healed by retries, poison jobs parked in the dead letters, a
//! duplicate submission skipped, and a restart in the middle that loses
//! nothing. Run it with
//! `cargo run --release --example async_demo --features tokio`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use walq::typed::Jobs;
use walq::worker::{JobContext, Outcome, RateLimit, WorkerPool};
use walq::{Backoff, Durability, EnqueueOptions, Options, Queue};

#[derive(Serialize, Deserialize)]
struct Email {
    to: String,
    /// Added in "version 2"; jobs written before it decode with `None`.
    #[serde(default)]
    template: Option<String>,
}

const JOBS: u64 = 600;
const POISON: u64 = 6;

/// Pretends to call a mail API: awaits a little I/O, and the first
/// attempt of every 7th job times out.
async fn send(ctx: &JobContext, mail: &Email) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(2)).await;
    if mail.to.starts_with("bounce") {
        return Err(format!("{} does not exist", mail.to));
    }
    if ctx.id().is_multiple_of(7) && ctx.attempt() == 1 {
        return Err("mail API timed out".into());
    }
    Ok(())
}

fn handler(
    sent: Arc<AtomicU64>,
) -> impl Fn(JobContext, Email) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>
       + Send
       + Sync
       + 'static {
    move |ctx: JobContext, mail: Email| {
        let sent = sent.clone();
        Box::pin(async move {
            match send(&ctx, &mail).await {
                Ok(()) => {
                    sent.fetch_add(1, Ordering::Relaxed);
                    Outcome::done()
                }
                Err(e) if e.contains("does not exist") => Outcome::fail(e),
                Err(e) => Outcome::retry(e),
            }
        })
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let opts = Options::default()
        .durability(Durability::Sync)
        .max_attempts(3)
        .backoff(Backoff {
            initial: Duration::from_millis(20),
            multiplier: 2.0,
            max: Duration::from_millis(200),
            jitter: 0.5,
        });
    let q = Queue::open_with(dir.path(), opts.clone())?;
    let emails = Jobs::<Email>::new(q.clone());
    let start = Instant::now();
    println!(
        "walq async demo: queue in {} (Durability::Sync)",
        dir.path().display()
    );

    // A burst of requests enqueue and answer at once; the workers catch up.
    for i in 0..JOBS {
        let to = if i.is_multiple_of(JOBS / POISON) {
            format!("bounce-{i}@example.com")
        } else {
            format!("user-{i}@example.com")
        };
        emails.enqueue(&Email { to, template: None })?;
    }
    // A client retries its submission: the idempotency key skips it.
    let key = EnqueueOptions::new().idempotency_key("signup-42");
    let mail = Email {
        to: "ada@example.com".into(),
        template: Some("welcome".into()),
    };
    let first = emails.enqueue_with(&mail, key.clone())?;
    let again = emails.enqueue_with(&mail, key)?;
    assert!(again.duplicate && again.id == first.id);
    let enqueued = JOBS + 1;
    println!(
        "enqueued {enqueued} jobs, 1 duplicate skipped, in {:.0?}",
        start.elapsed()
    );

    // First process: 16 concurrent tasks, at most 1,000 jobs a second.
    let sent = Arc::new(AtomicU64::new(0));
    let pool = WorkerPool::builder(q.clone())
        .name("mailer")
        .workers(16)
        .rate_limit(RateLimit::per_second(1_000).burst(16))
        .start_async_typed(handler(sent.clone()))?;
    while pool.stats().done < enqueued / 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = pool.stats();
        println!(
            "  {:>5} ms  done {:>4}  retried {:>3}  dead {}  backlog {}",
            start.elapsed().as_millis(),
            s.done,
            s.retried,
            s.dead,
            q.stats().ready
        );
    }
    // A deploy: stop in the middle. Running jobs finish or are released.
    let first_run = pool.shutdown(Duration::from_secs(5)).await;
    println!(
        "restart: the first pool stopped ({} running jobs finished, {} handed back unfinished)",
        first_run.finished, first_run.stats.released
    );
    drop((q, emails)); // every handle, so the directory lock is free

    // Second process: reopen and finish the work.
    let q = Queue::open_with(dir.path(), opts)?;
    let pool = WorkerPool::builder(q.clone())
        .name("mailer-v2")
        .workers(16)
        .start_async_typed(handler(sent.clone()))?;
    loop {
        let s = q.stats();
        if s.ready + s.delayed + s.in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second_run = pool.shutdown(Duration::from_secs(5)).await;

    let (a, b) = (first_run.stats, second_run.stats);
    let done = a.done + b.done;
    let dead = q.dead_letters()?.len() as u64;
    println!("summary after {:.1?}:", start.elapsed());
    println!("  enqueued   {enqueued} (+1 duplicate skipped)");
    println!("  done       {done}");
    println!(
        "  retried    {} (each healed on its next attempt)",
        a.retried + b.retried
    );
    println!("  dead       {dead} (bounced addresses)");
    println!("  released   {} at the restart, none lost", a.released);
    assert_eq!(done + dead, enqueued, "every job is done or dead");
    assert_eq!(dead, POISON);
    assert_eq!(sent.load(Ordering::Relaxed), done);
    println!("  check: done + dead = {} = enqueued", done + dead);
    Ok(())
}
