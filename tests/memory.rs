//! Memory: at most 64 bytes of RAM per queued job, whatever the payload
//! size (payloads stay on disk, read through the map). Measured two ways
//! while 1 million 1 KiB jobs are queued: the queue's own accounting of
//! its index (`Stats::index_bytes`) and the growth of the process's
//! anonymous resident memory (`RssAnon`, which excludes the file-backed
//! pages of the memory maps).

use walq::{Durability, Options, Queue};

fn rss_anon_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn at_most_64_bytes_of_ram_per_queued_job() {
    let jobs: u64 = std::env::var("WALQ_MEMORY_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(
        dir.path(),
        Options::default()
            .durability(Durability::Os)
            .segment_size(256 << 20),
    )
    .unwrap();
    let payload = vec![0x5au8; 1024];
    let before = rss_anon_bytes();
    for _ in 0..jobs {
        q.enqueue(&payload).unwrap();
    }
    let after = rss_anon_bytes();
    let stats = q.stats();
    assert_eq!(stats.ready, jobs);
    let index_per_job = stats.index_bytes as f64 / jobs as f64;
    println!(
        "{jobs} queued 1 KiB jobs: index {} bytes = {index_per_job:.1} B/job; disk {} MiB",
        stats.index_bytes,
        stats.disk_bytes >> 20
    );
    assert!(
        index_per_job <= 64.0,
        "{index_per_job:.1} bytes of index per job"
    );
    if let (Some(before), Some(after)) = (before, after) {
        let rss_per_job = after.saturating_sub(before) as f64 / jobs as f64;
        println!(
            "RssAnon growth: {} bytes = {rss_per_job:.1} B/job",
            after - before
        );
        assert!(rss_per_job <= 64.0, "{rss_per_job:.1} bytes of RSS per job");
    }
    // Draining gives the memory back to the index.
    let mut n = 0;
    while let Some(job) = q.dequeue().unwrap() {
        q.ack(job.receipt()).unwrap();
        n += 1;
    }
    assert_eq!(n, jobs);
    assert!(q.stats().index_bytes < 1 << 20, "{:?}", q.stats());
}
