//! The walq demo: a sign-up service sends welcome mails through a worker
//! pool, and everything that goes wrong in real life happens once.
//!
//! 1. A burst of sign-ups arrives faster than the workers drain it; the
//!    backlog grows, then drains at the mail provider's rate limit.
//! 2. The provider is flaky: some calls time out; retries with backoff heal
//!    them. Poison jobs (a bad address, payloads an old client wrote) land
//!    in the dead letters. Clients that resubmit are deduplicated by their
//!    idempotency key.
//! 3. The process stops in the middle (graceful pool shutdown, queue
//!    dropped); a new process reopens the queue and finishes the work.
//! 4. A client polls the status of the job it submitted until it is done.
//!
//! It ends with a summary whose numbers are checked (exit code 1 if they
//! do not add up). Run it with `cargo run --release --example demo`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use walq::worker::{JobContext, Outcome, PoolStats, RateLimit, WorkerPool};
use walq::{Backoff, Durability, EnqueueOptions, JobStatus, Jobs, Options, Queue};

const REQUEST_THREADS: u64 = 8;
const SIGNUPS_PER_THREAD: u64 = 150;
/// Each request thread takes a sign-up this often: together they arrive
/// about four times faster than the rate limit lets the workers drain.
const ARRIVAL_GAP: Duration = Duration::from_millis(5);
/// Every this-many sign-ups, the client times out and submits again.
const RESUBMIT_EVERY: u64 = 25;
const BAD_ADDRESSES: u64 = 6;
const OLD_CLIENT_PAYLOADS: u64 = 2;
const WORKERS: usize = 4;
const MAILS_PER_SECOND: u32 = 250;
/// The process is stopped once this many mails went out.
const STOP_AFTER: u64 = 500;

/// A welcome mail: the typed job.
#[derive(Debug, Serialize, Deserialize)]
struct Welcome {
    user: u64,
    to: String,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let mailer = Arc::new(Mailer::default());
    println!("walq demo: welcome mails for a sign-up service");
    println!(
        "queue in {} (Durability::Sync: every enqueue and ack is fdatasync'ed before it returns)\n",
        dir.path().display()
    );

    let q = Queue::open_with(dir.path(), options())?;
    let pool = start_pool(&q, &mailer)?;
    println!("process 1: {WORKERS} workers, rate limit {MAILS_PER_SECOND} mails/s (the provider's quota)");
    let burst = std::thread::spawn({
        let q = q.clone();
        move || sign_up_burst(&q)
    });
    watch(&q, &pool, &mailer, started, None, 0, |_, _| {
        mailer.delivered() >= STOP_AFTER
    });
    let burst = burst.join().map_err(|_| "a request thread panicked")??;
    println!(
        "   the burst: {} jobs arrived in {:.2} s ({:.0} jobs/s, each durable before its request answered); {} resubmissions skipped by idempotency key",
        burst.enqueued,
        burst.elapsed.as_secs_f64(),
        burst.enqueued as f64 / burst.elapsed.as_secs_f64(),
        burst.duplicates
    );

    println!("\nprocess 1 stops in the middle (SIGTERM): the pool shuts down gracefully");
    let report = pool.shutdown(Duration::from_secs(5));
    println!(
        "   handlers running at the stop: {}; finished within the deadline: {}; released: {}",
        report.running,
        report.finished,
        report.released.len()
    );
    let first = Totals::of(&report.stats, &q);
    let backlog = q.stats().ready + q.stats().delayed;
    drop(q);
    println!("   queue closed with {backlog} jobs still waiting");

    let (q, second, client_job) = second_process(dir.path(), &mailer, started, first.retried)?;
    summary(&mailer, &burst, &first, &second, client_job, &q, started)
}

fn options() -> Options {
    Options::default()
        .durability(Durability::Sync)
        .max_attempts(5)
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            multiplier: 2.0,
            max: Duration::from_millis(400),
            jitter: 0.5,
        })
}

fn start_pool(q: &Queue, mailer: &Arc<Mailer>) -> walq::Result<WorkerPool> {
    let mailer = mailer.clone();
    WorkerPool::builder(q.clone())
        .name("mailer")
        .workers(WORKERS)
        .visibility(Duration::from_secs(10))
        .rate_limit(RateLimit::per_second(MAILS_PER_SECOND))
        .poll_interval(Duration::from_millis(20))
        .start_typed(move |ctx: &JobContext, mail: Welcome| send_welcome(&mailer, ctx, &mail))
}

/// The handler: a permanent error goes to the dead letters, a transient one
/// is retried with backoff, and the provider key (derived from the job id)
/// makes a repeated send harmless (docs/idempotency.md).
fn send_welcome(mailer: &Mailer, ctx: &JobContext, mail: &Welcome) -> Outcome {
    if !mail.to.contains('@') {
        return Outcome::fail(format!(
            "invalid address {:?} for user {}",
            mail.to, mail.user
        ));
    }
    match mailer.send(&ctx.provider_key(), &mail.to, ctx.attempt()) {
        Ok(message_id) => Outcome::done_with(message_id),
        Err(e) => Outcome::retry(e),
    }
}

/// Process 2: reopen the queue, start a new pool, let a client submit a
/// job and poll it, and drain the rest.
fn second_process(
    dir: &std::path::Path,
    mailer: &Arc<Mailer>,
    started: Instant,
    retried_before: u64,
) -> Result<(Queue, Totals, u64)> {
    let q = Queue::open_with(dir, options())?;
    let rec = q.recovery_report();
    let s = q.stats();
    println!(
        "\nprocess 2 reopens the queue: {} records replayed, {} leases released; {} ready, {} delayed, {} dead",
        rec.records, rec.leases_released, s.ready, s.delayed, s.dead
    );
    let pool = start_pool(&q, mailer)?;
    let reset = Welcome {
        user: 999_999,
        to: "grace@example.com".into(),
    };
    let client_job = Jobs::<Welcome>::new(q.clone()).enqueue(&reset)?;
    println!("   a client submits job {client_job} and polls its status");
    watch(
        &q,
        &pool,
        mailer,
        started,
        Some(client_job),
        retried_before,
        |q, _| {
            let s = q.stats();
            s.ready + s.delayed + s.in_flight == 0
        },
    );
    let report = pool.shutdown(Duration::from_secs(5));
    let totals = Totals::of(&report.stats, &q);
    Ok((q, totals, client_job))
}

/// Prints a progress line every 200 ms until `done`.
fn watch(
    q: &Queue,
    pool: &WorkerPool,
    mailer: &Mailer,
    started: Instant,
    client_job: Option<u64>,
    retried_before: u64,
    done: impl Fn(&Queue, &PoolStats) -> bool,
) {
    let mut last_status = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let (s, p) = (q.stats(), pool.stats());
        println!(
            "   [{:>5.2}s] backlog {:>5} | in flight {} | sent {:>5} | retried {:>3} | dead {:>2} | provider calls {:>5}",
            started.elapsed().as_secs_f64(),
            s.ready + s.delayed,
            s.in_flight,
            mailer.delivered(),
            retried_before + p.retried,
            s.dead,
            mailer.calls.load(Ordering::Relaxed),
        );
        if let Some(id) = client_job {
            let status = poll_status(q, id);
            if status != last_status {
                println!("            client: job {id} is {status}");
                last_status = status;
            }
        }
        if done(q, &p) {
            return;
        }
    }
}

/// What a client polling job `id` is told, from [`Queue::status`]: the
/// handler's result (the provider's message id) is kept with the done
/// status for the dedup window.
fn poll_status(q: &Queue, id: u64) -> String {
    match q.status(id) {
        Ok(JobStatus::Queued { .. } | JobStatus::Delayed { .. } | JobStatus::Blocked { .. }) => {
            let s = q.stats();
            let waiting = s.ready + s.delayed + s.in_flight;
            format!("waiting ({waiting} jobs queued or running)")
        }
        Ok(JobStatus::InFlight { attempt, .. }) => format!("running (attempt {attempt})"),
        Ok(JobStatus::Done { result, .. }) => match result {
            Some(r) => format!("done (message id {})", String::from_utf8_lossy(&r)),
            None => "done".to_string(),
        },
        Ok(JobStatus::Dead { error, .. }) => format!("dead: {error}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("unreadable: {e}"),
    }
}

/// What the burst of sign-ups did.
struct Burst {
    enqueued: u64,
    duplicates: u64,
    elapsed: Duration,
}

/// Request threads enqueue sign-ups as fast as they can; some clients
/// resubmit; some requests carry a bad address; an old client writes
/// payloads the new code cannot read.
fn sign_up_burst(q: &Queue) -> walq::Result<Burst> {
    let start = Instant::now();
    let threads: Vec<_> = (0..REQUEST_THREADS)
        .map(|t| {
            let mails = Jobs::<Welcome>::new(q.clone());
            std::thread::spawn(move || -> walq::Result<(u64, u64)> {
                let (mut enqueued, mut duplicates) = (0, 0);
                for i in 0..SIGNUPS_PER_THREAD {
                    let user = t * SIGNUPS_PER_THREAD + i;
                    let to = if user % (SIGNUPS_PER_THREAD * REQUEST_THREADS / BAD_ADDRESSES) == 7 {
                        format!("user{user}.example.com")
                    } else {
                        format!("user{user}@example.com")
                    };
                    let submissions = if user % RESUBMIT_EVERY == 3 { 2 } else { 1 };
                    for _ in 0..submissions {
                        let key = EnqueueOptions::new().idempotency_key(format!("signup/{user}"));
                        let out = mails.enqueue_with(
                            &Welcome {
                                user,
                                to: to.clone(),
                            },
                            key,
                        )?;
                        if out.duplicate {
                            duplicates += 1;
                        } else {
                            enqueued += 1;
                        }
                    }
                    std::thread::sleep(ARRIVAL_GAP);
                }
                Ok((enqueued, duplicates))
            })
        })
        .collect();
    let (mut enqueued, mut duplicates) = (0, 0);
    for t in threads {
        let (e, d) = t.join().unwrap_or(Ok((0, 0)))?;
        enqueued += e;
        duplicates += d;
    }
    for n in 0..OLD_CLIENT_PAYLOADS {
        q.enqueue(format!("welcome-mail user={n}").as_bytes())?; // not JSON
        enqueued += 1;
    }
    Ok(Burst {
        enqueued,
        duplicates,
        elapsed: start.elapsed(),
    })
}

/// One process's share of the work.
struct Totals {
    done: u64,
    retried: u64,
    dead: u64,
    panicked: u64,
    acked: u64,
}

impl Totals {
    fn of(p: &PoolStats, q: &Queue) -> Totals {
        Totals {
            done: p.done,
            retried: p.retried,
            dead: p.dead,
            panicked: p.panicked,
            acked: q.stats().acked_total,
        }
    }
}

/// Everything the summary reports, gathered once.
struct Summary {
    enqueued: u64,
    done: u64,
    retried: u64,
    dead: u64,
    left: u64,
}

fn summary(
    mailer: &Mailer,
    burst: &Burst,
    first: &Totals,
    second: &Totals,
    client_job: u64,
    q: &Queue,
    started: Instant,
) -> Result<()> {
    let dead_letters = q.dead_letters()?;
    println!("\ndead letters, kept for a person to inspect:");
    for d in &dead_letters {
        println!(
            "   job {:>4} after {} attempt(s): {}",
            d.id, d.attempts, d.error
        );
    }
    let s = q.stats();
    let sum = Summary {
        enqueued: burst.enqueued + 1, // plus the client's job
        done: first.done + second.done,
        retried: first.retried + second.retried,
        dead: dead_letters.len() as u64,
        left: s.ready + s.delayed + s.in_flight,
    };
    print_summary(&sum, mailer, burst, first, second, started);
    let checks = [
        (
            "enqueued = done + dead",
            sum.enqueued == sum.done + sum.dead,
        ),
        ("nothing left in the queue", sum.left == 0),
        (
            "dead = poison jobs",
            sum.dead == BAD_ADDRESSES + OLD_CLIENT_PAYLOADS,
        ),
        (
            "dead letters = the pools' dead count",
            sum.dead == first.dead + second.dead,
        ),
        ("one mail per done job", mailer.delivered() == sum.done),
        (
            "acks in both processes = done",
            first.acked + second.acked == sum.done,
        ),
        (
            "duplicates = resubmissions",
            burst.duplicates == REQUEST_THREADS * SIGNUPS_PER_THREAD / RESUBMIT_EVERY,
        ),
        ("no handler panicked", first.panicked + second.panicked == 0),
        (
            "the client's job is done",
            poll_status(q, client_job).starts_with("done"),
        ),
    ];
    let failed: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
    if !failed.is_empty() {
        eprintln!("\nCHECKS FAILED: {}", failed.join("; "));
        std::process::exit(1);
    }
    println!(
        "\nall {} checks passed: nothing lost, nothing done twice",
        checks.len()
    );
    Ok(())
}

fn print_summary(
    sum: &Summary,
    mailer: &Mailer,
    burst: &Burst,
    first: &Totals,
    second: &Totals,
    started: Instant,
) {
    let sign_ups = sum.enqueued - OLD_CLIENT_PAYLOADS - 1;
    println!("\nsummary");
    println!("   enqueued            {:>5}  ({sign_ups} sign-ups, {OLD_CLIENT_PAYLOADS} from an old client, 1 polled by a client)", sum.enqueued);
    println!(
        "   duplicates skipped  {:>5}  (resubmissions with a known idempotency key)",
        burst.duplicates
    );
    println!(
        "   done                {:>5}  ({} before the stop, {} after)",
        sum.done, first.done, second.done
    );
    println!(
        "   retried             {:>5}  (provider timeouts, healed by backoff)",
        sum.retried
    );
    println!("   dead                {:>5}  ({BAD_ADDRESSES} bad addresses, {OLD_CLIENT_PAYLOADS} undecodable)", sum.dead);
    println!("   left in the queue   {:>5}", sum.left);
    println!(
        "   mails at provider   {:>5}  (repeats suppressed by the job-id key: {})",
        mailer.delivered(),
        mailer.suppressed.load(Ordering::Relaxed)
    );
    println!(
        "   elapsed             {:>5.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A simulated mail provider: a little latency, timeouts on some first
/// and second attempts, and idempotency keys like a real provider's.
#[derive(Default)]
struct Mailer {
    sent: Mutex<HashMap<String, String>>,
    calls: AtomicU64,
    suppressed: AtomicU64,
}

impl Mailer {
    fn send(&self, key: &str, to: &str, attempt: u32) -> std::result::Result<String, String> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        if attempt <= 2 && hash(key, attempt) % 100 < 12 {
            return Err(format!(
                "mail server timed out sending to {to} (call {call})"
            ));
        }
        let mut sent = self.sent.lock().map_err(|_| "provider state poisoned")?;
        let next = sent.len();
        if let Some(id) = sent.get(key) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return Ok(id.clone());
        }
        let id = format!("msg-{next:05}");
        sent.insert(key.to_string(), id.clone());
        Ok(id)
    }

    fn delivered(&self) -> u64 {
        self.sent.lock().map_or(0, |s| s.len() as u64)
    }
}

/// A deterministic stand-in for "this call happens to time out".
fn hash(key: &str, attempt: u32) -> u64 {
    key.bytes()
        .chain(attempt.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}
