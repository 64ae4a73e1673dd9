//! Moves every job of an embedded walq queue into a JetStream queue, with
//! no job lost and none doubled, even if this program is killed and run
//! again:
//!
//! ```text
//! cargo run --release --features jetstream --example drain_to_jetstream -- \
//!     /var/lib/myapp/jobs nats://10.0.0.1:4222,nats://10.0.0.2:4222 mail
//! ```
//!
//! For each job: lease it from the embedded queue, enqueue it on
//! JetStream with an idempotency key (the job's own key, else
//! `walq-drain-<id>`) and the attempts it has left, and only then ack it
//! in the embedded queue. Killed between the two, the job's lease runs
//! out, it is leased again, and the second enqueue is a duplicate of the
//! first. Delayed jobs are moved when they come due. Stop the embedded
//! queue's producers and workers first; dead letters stay where they are
//! (redrive them first to move them too). Priorities and message groups
//! are not carried: JetStream has neither (an enqueue with them is
//! refused), so jobs move in delivery order, as Normal jobs of no group.

use std::time::Duration;

use walq::jetstream::{JetStream, JetStreamConfig};
use walq::worker::Backend;
use walq::{EnqueueOptions, Queue};

/// What one drain did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Jobs enqueued on JetStream by this run.
    pub moved: u64,
    /// Jobs JetStream already had (moved by an earlier, interrupted run).
    pub already_there: u64,
}

/// The idempotency key a job is moved under.
pub fn key_of(job: &walq::Job) -> Vec<u8> {
    match job.idempotency_key() {
        Some(key) => key.to_vec(),
        None => format!("walq-drain-{}", job.id()).into_bytes(),
    }
}

/// Moves every job of `q` (waiting for delayed ones) onto `js`.
pub fn drain(q: &Queue, js: &JetStream) -> walq::Result<Drained> {
    let mut out = Drained::default();
    loop {
        let Some(job) = q.dequeue_for(Duration::from_secs(60))? else {
            let s = q.stats();
            if s.ready + s.delayed + s.in_flight == 0 {
                return Ok(out);
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let left = job.max_attempts().saturating_sub(job.attempt() - 1).max(1);
        let opts = EnqueueOptions::new()
            .idempotency_key(key_of(&job))
            .max_attempts(left);
        if js.enqueue(job.payload(), opts)?.duplicate {
            out.already_there += 1;
        } else {
            out.moved += 1;
        }
        q.ack(job.receipt())?;
    }
}

fn main() -> walq::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, urls, name] = args.as_slice() else {
        eprintln!("usage: drain_to_jetstream <queue dir> <nats urls> <queue name>");
        std::process::exit(2);
    };
    let q = Queue::open(dir)?;
    let js = JetStream::connect(JetStreamConfig::new(urls.as_str(), name.as_str()))?;
    let done = drain(&q, &js)?;
    println!(
        "moved {} jobs ({} were already on JetStream)",
        done.moved, done.already_there
    );
    Ok(())
}
