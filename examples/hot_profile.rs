//! The no-fsync hot paths in a loop, for profilers (`valgrind
//! --tool=callgrind`, `perf stat`): no criterion, no peers, the set-up
//! (prefill) separate from the timed part.
//!
//! `cargo run --release --example hot_profile -- <workload> [jobs] [payload bytes]`
//!
//! workloads (all under `Durability::Os`):
//! - `enqueue`: `jobs` × `enqueue`;
//! - `keyed_enqueue`: `jobs` × `enqueue_with` an idempotency key each;
//! - `dequeue_ack`: prefill `jobs`, then `jobs` × (`dequeue` + `ack`);
//! - `batch_ack`: prefill `jobs`, then `dequeue_batch(100)` + `ack_batch`
//!   until drained;
//! - `levels_ack`, `groups_ack`: prefill `jobs` one by one, every other
//!   one Urgent, or in 1,000 groups; then `jobs` × (`dequeue` + `ack`)
//!   (the `features/100B` rows of the dequeue bench);
//! - `prefill`: the prefill alone (to subtract from a profile).

use std::time::Instant;

use walq::{Durability, EnqueueOptions, Options, Priority, Queue};

/// The options of job `i` of a `levels_ack` or `groups_ack` prefill.
fn feature_opts(what: &str, i: u64) -> EnqueueOptions {
    let o = EnqueueOptions::new();
    match what {
        "levels_ack" if i.is_multiple_of(2) => o.priority(Priority::Urgent),
        "groups_ack" => o.group(format!("customer-{}", i % 1000)),
        _ => o,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("enqueue", String::as_str);
    let jobs: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let size: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options::default().durability(Durability::Os);
    let q = Queue::open_with(dir.path(), opts).expect("open");
    let p: Vec<u8> = (0..size).map(|i| i as u8).collect();
    if what.ends_with("s_ack") {
        for i in 0..jobs {
            q.enqueue_with(&p, feature_opts(what, i)).expect("prefill");
        }
    } else if !what.ends_with("enqueue") {
        let mut left = jobs;
        while left > 0 {
            let k = left.min(1000) as usize;
            q.enqueue_batch(std::iter::repeat_n(&p[..], k))
                .expect("prefill");
            left -= k as u64;
        }
    }
    let t = Instant::now();
    match what {
        "enqueue" => {
            for _ in 0..jobs {
                q.enqueue(&p).expect("enqueue");
            }
        }
        "dequeue_ack" | "levels_ack" | "groups_ack" => {
            for _ in 0..jobs {
                let job = q.dequeue().expect("dequeue").expect("a job");
                q.ack(job.receipt()).expect("ack");
            }
        }
        "batch_ack" => {
            let mut done = 0;
            while done < jobs {
                let batch = q.dequeue_batch(100).expect("dequeue_batch");
                assert!(!batch.is_empty(), "drained early");
                let receipts: Vec<_> = batch.iter().map(|j| j.receipt()).collect();
                let acked = q.ack_batch(&receipts).expect("ack_batch");
                assert!(acked.iter().all(|r| r.is_ok()));
                done += batch.len() as u64;
            }
        }
        "keyed_enqueue" => {
            for i in 0..jobs {
                let o = EnqueueOptions::new().idempotency_key(format!("order-{i}"));
                q.enqueue_with(&p, o).expect("keyed enqueue");
            }
        }
        "prefill" => {}
        other => panic!("unknown workload {other}"),
    }
    let e = t.elapsed().as_secs_f64();
    println!(
        "{what} {size} B Os: {jobs} jobs in {e:.3} s = {:.2} M jobs/s",
        jobs as f64 / e / 1e6
    );
}
