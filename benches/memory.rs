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

fn row(size: usize, jobs: u64) {
    let dir = tempdir();
    let q = open(dir.path(), Durability::Os);
    let p = payload(size);
    let (anon0, file0) = rss();
    let statm0 = statm_anon();
    let mut left = jobs;
    while left > 0 {
        let k = left.min(100) as usize;
        q.enqueue_batch(std::iter::repeat_n(&p[..], k))
            .expect("enqueue_batch");
        left -= k as u64;
    }
    let (anon1, file1) = rss();
    let statm1 = statm_anon();
    let st = q.stats();
    let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / jobs as f64;
    println!(
        "| {size:>6} B | {jobs:>9} | queued    | {:>6.1} | {:>6.1} | {:>6.1} | {:>8.0} | {:>6} |",
        per(anon1, anon0),
        per(statm1, statm0),
        st.index_bytes as f64 / jobs as f64,
        per(file1, file0),
        st.disk_bytes / (1 << 20),
    );
    // Lease every job: in-flight jobs also hold a lease and an expiry.
    let mut held = Vec::new();
    while let Some(job) = q.dequeue().expect("dequeue") {
        held.push(job.receipt());
    }
    let (anon2, _) = rss();
    let statm2 = statm_anon();
    let st = q.stats();
    // The receipts we hold (16 B each) are ours, not the queue's.
    let ours = (held.capacity() * std::mem::size_of::<walq::Receipt>()) as u64;
    println!(
        "| {size:>6} B | {jobs:>9} | in flight | {:>6.1} | {:>6.1} | {:>6.1} | {:>8} | {:>6} |",
        per(anon2.saturating_sub(ours), anon0),
        per(statm2.saturating_sub(ours), statm0),
        st.index_bytes as f64 / jobs as f64,
        "",
        st.disk_bytes / (1 << 20),
    );
    drop(q);
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
    let queued = q.stats();
    let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / jobs as f64;
    println!(
        "| {size:>6} B | {jobs:>9} | queued, a group each | {:>6.1} | {:>6} | {:>6.1} | {:>8} | {:>6} |",
        per(anon1, anon0),
        "",
        queued.index_bytes as f64 / jobs as f64,
        "",
        queued.disk_bytes / (1 << 20),
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
    let p = payload(size);
    let (anon0, _) = rss();
    let mut left = jobs;
    while left > 0 {
        let k = left.min(100) as usize;
        emails
            .enqueue_batch(std::iter::repeat_n(&p[..], k))
            .expect("enqueue_batch");
        left -= k as u64;
    }
    let (anon1, _) = rss();
    let st = emails.stats();
    let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / jobs as f64;
    println!(
        "| {size:>6} B | {jobs:>9} | queued on a named queue | {:>6.1} | {:>6} | {:>6.1} | {:>8} | {:>6} |",
        per(anon1, anon0),
        "",
        st.index_bytes as f64 / jobs as f64,
        "",
        st.disk_bytes / (1 << 20),
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
