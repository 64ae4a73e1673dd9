//! RAM per queued job: RSS growth while `WALQ_BENCH_MEM_JOBS` jobs
//! (default 1,000,000) are queued, for 100 B and 1 KiB payloads (and
//! 64 KiB with a twentieth of the jobs), plus `Stats::index_bytes`.
//!
//! RSS is split as Linux reports it in /proc/self/status: `RssAnon` is the
//! process's own memory (the index: what the 64 B/job target is about);
//! `RssFile` is page cache of the mapped segments that this process touched
//! (payload bytes, shared with the kernel's cache and reclaimable). The
//! brief's "payloads stay on disk" means they are not in `RssAnon`.
//!
//! A last phase leases every job (dequeue without ack) to show the extra
//! cost of an in-flight job (lease table and expiry heap).
//!
//! The last rows give every 100 B job a message group of its own (a
//! million groups by default, the worst case for the group table), then
//! drain them: a group costs memory only while it has a job. The very last
//! row puts the jobs on a named queue of the store.
//!
//! `cargo bench --bench memory`

mod common;

use walq::Durability;

use common::{env_u64, open, payload, tempdir};

/// (RssAnon, RssFile) in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("RssAnon:"), field("RssFile:"))
}

/// The same from /proc/self/statm (resident − shared), as a cross-check.
fn statm_anon() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let v: Vec<u64> = statm
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let page = 4096;
    v.get(1).zip(v.get(2)).map_or(0, |(r, s)| (r - s) * page)
}

/// Enqueues `jobs` copies of `p` on `q`, in batches of 100.
fn fill(q: &walq::Queue, p: &[u8], jobs: u64) {
    let mut left = jobs;
    while left > 0 {
        let k = left.min(100) as usize;
        q.enqueue_batch(std::iter::repeat_n(p, k))
            .expect("enqueue_batch");
        left -= k as u64;
    }
}

/// Bytes per job between two readings.
fn per_job(after: u64, before: u64, jobs: u64) -> f64 {
    after.saturating_sub(before) as f64 / jobs as f64
}

/// One table row; a column measured only by some rows is `None`.
fn print_row(
    size: usize,
    jobs: u64,
    state: &str,
    anon: f64,
    statm: Option<f64>,
    file: Option<f64>,
    st: &walq::Stats,
) {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
    println!(
        "| {size:>6} B | {jobs:>9} | {state} | {anon:>6.1} | {:>6} | {:>6.1} | {:>8} | {:>6} |",
        opt(statm),
        st.index_bytes as f64 / jobs as f64,
        opt(file),
        st.disk_bytes / (1 << 20),
    );
}

fn row(size: usize, jobs: u64) {
    let dir = tempdir();
    let q = open(dir.path(), Durability::Os);
    let (anon0, file0) = rss();
    let statm0 = statm_anon();
    fill(&q, &payload(size), jobs);
    let (anon1, file1) = rss();
    let statm1 = statm_anon();
    print_row(
        size,
        jobs,
        "queued   ",
        per_job(anon1, anon0, jobs),
        Some(per_job(statm1, statm0, jobs)),
        Some(per_job(file1, file0, jobs)),
        &q.stats(),
    );
    // Lease every job: in-flight jobs also hold a lease and an expiry.
    let mut held = Vec::new();
    while let Some(job) = q.dequeue().expect("dequeue") {
        held.push(job.receipt());
    }
    let (anon2, _) = rss();
    let statm2 = statm_anon();
    // The receipts we hold (16 B each) are ours, not the queue's.
    let ours = (held.capacity() * std::mem::size_of::<walq::Receipt>()) as u64;
    print_row(
        size,
        jobs,
        "in flight",
        per_job(anon2.saturating_sub(ours), anon0, jobs),
        Some(per_job(statm2.saturating_sub(ours), statm0, jobs)),
        None,
        &q.stats(),
    );
}

/// Every job in a group of its own (`customer-N`), then a drain: the
/// group table holds only groups with a pending job.
fn groups_row(size: usize, jobs: u64) {
    let dir = tempdir();
    let q = open(dir.path(), Durability::Os);
    let p = payload(size);
    let (anon0, _) = rss();
    for i in 0..jobs {
        let opts = walq::EnqueueOptions::new().group(format!("customer-{i}"));
        q.enqueue_with(&p, opts).expect("enqueue_with");
    }
    let (anon1, _) = rss();
    let state = "queued, a group each";
    print_row(
        size,
        jobs,
        state,
        per_job(anon1, anon0, jobs),
        None,
        None,
        &q.stats(),
    );
    while let Some(job) = q.dequeue().expect("dequeue") {
        q.ack(job.receipt()).expect("ack");
    }
    let drained = q.stats();
    assert_eq!(drained.ready + drained.delayed + drained.in_flight, 0);
    println!(
        "| {size:>6} B | {jobs:>9} | drained (index_bytes: {} in all) | | | | | |",
        drained.index_bytes,
    );
}

/// The jobs on a named queue of the store (`emails`) instead of the
/// default queue: what a job costs for the queue it belongs to.
fn named_row(size: usize, jobs: u64) {
    let dir = tempdir();
    let q = open(dir.path(), Durability::Os);
    let emails = q.store().queue("emails").expect("queue");
    let (anon0, _) = rss();
    fill(&emails, &payload(size), jobs);
    let (anon1, _) = rss();
    let state = "queued on a named queue";
    print_row(
        size,
        jobs,
        state,
        per_job(anon1, anon0, jobs),
        None,
        None,
        &emails.stats(),
    );
}

fn main() {
    // Under `cargo test --benches` (no `--bench`), a quick smoke run.
    let default = if common::bench_mode() {
        1_000_000
    } else {
        1_000
    };
    let jobs = env_u64("WALQ_BENCH_MEM_JOBS", default);
    println!("RAM per job (bytes per job; RssAnon = the process's own memory)");
    println!("| payload | jobs | state | RssAnon/job | statm (res−shared)/job | index_bytes/job | RssFile/job | disk MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    row(100, jobs);
    row(1024, jobs);
    row(64 * 1024, (jobs / 20).max(1));
    groups_row(100, jobs);
    named_row(100, jobs);
}
