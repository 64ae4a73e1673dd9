//! walq side by side with embedded queue peers, in one run on one machine.
//!
//! `cargo run --release --manifest-path compare/Cargo.toml`
//!
//! Prints one Markdown table: workload × system → jobs/s, walq's ratio to
//! the system, jobs per CPU-second, the p99 latency per job where it is
//! recorded (the producer rows), and the disk bytes the system held at the
//! end of the workload; then the reopen row's table (time, median). Every workload states its durability class, and every row in
//! it belongs to that class: rows that fsync per operation are never in the
//! same group as rows that do not.
//!
//! Environment:
//! - `COMPARE_SCALE` (default 1): multiplies every job count.
//! - `COMPARE_DIR`: where the queues are created (default: the system temp
//!   directory; it must be on the disk you mean to measure, not tmpfs).
//! - `COMPARE_ONLY`: run only workloads whose name contains this text.
//!
//! `--charts DIR` (default `docs/img`) also draws the results as SVG charts
//! into DIR: throughput by workload, the producers sweep, the reopen row.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

mod charts;
mod fj;
mod reopen;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

// ---------------------------------------------------------------- helpers

fn scale() -> f64 {
    std::env::var("COMPARE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0)
}

fn n(base: u64) -> u64 {
    ((base as f64 * scale()) as u64).max(1)
}

fn tempdir() -> tempfile::TempDir {
    let b = tempfile::Builder::new().prefix("walq-compare-").to_owned();
    match std::env::var_os("COMPARE_DIR") {
        Some(base) => {
            std::fs::create_dir_all(&base).expect("COMPARE_DIR");
            b.tempdir_in(base).expect("tempdir")
        }
        None => b.tempdir().expect("tempdir"),
    }
}

/// Allocated bytes (blocks × 512) of everything under `dir`, like `du`.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(m) = e.metadata() {
                total += if m.is_dir() {
                    disk_bytes(&e.path())
                } else {
                    m.blocks() * 512
                };
            }
        }
    }
    total
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// What one system did on one workload.
struct Measure {
    jobs: u64,
    elapsed: Duration,
    /// CPU seconds (user + system, all threads of this process) spent in
    /// the timed part.
    cpu: f64,
    disk: u64,
    /// Latency of each operation, where the workload records it.
    lat: Vec<Duration>,
}

impl Measure {
    fn rate(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_rate(&self) -> f64 {
        self.jobs as f64 / self.cpu.max(1e-9)
    }

    /// The 99th percentile of the recorded operation latencies.
    fn p99(&self) -> Option<Duration> {
        let mut l = self.lat.clone();
        if l.is_empty() {
            return None;
        }
        l.sort_unstable();
        Some(l[(l.len() * 99 / 100).min(l.len() - 1)])
    }
}

/// What a timed section reports: jobs, wall time, CPU seconds, and the
/// latency of each operation where the workload records it.
struct Timed {
    jobs: u64,
    elapsed: Duration,
    cpu: f64,
    lat: Vec<Duration>,
}

impl Timed {
    /// `jobs` done in `(wall time, CPU seconds)`, latencies not recorded.
    fn new(jobs: u64, (elapsed, cpu): (Duration, f64)) -> Timed {
        Timed {
            jobs,
            elapsed,
            cpu,
            lat: Vec::new(),
        }
    }
}

/// User + system CPU seconds of this process so far.
fn cpu_now() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Runs `body` on a fresh directory `repeats` times, timing only what it
/// times itself; keeps the fastest run (the machine is shared: slower runs
/// measure the neighbours).
fn measure(repeats: u32, body: impl Fn(&Path) -> Res<Timed>) -> Res<Measure> {
    let mut best: Option<Measure> = None;
    for _ in 0..repeats.max(1) {
        let dir = tempdir();
        let t = body(dir.path())?;
        let disk = disk_bytes(dir.path());
        let m = Measure {
            jobs: t.jobs,
            elapsed: t.elapsed,
            cpu: t.cpu,
            disk,
            lat: t.lat,
        };
        if best.as_ref().is_none_or(|b| m.rate() > b.rate()) {
            best = Some(m);
        }
    }
    Ok(best.expect("at least one run"))
}

fn timed(jobs: u64, f: impl FnOnce() -> Res<()>) -> Res<Timed> {
    let cpu = cpu_now();
    let start = Instant::now();
    f()?;
    Ok(Timed::new(jobs, (start.elapsed(), cpu_now() - cpu)))
}

/// Runs `threads` workers, each calling `f(thread_index)` after a common
/// start; returns the wall time from the start to the last finish.
fn parallel(threads: usize, f: impl Fn(usize) -> Res<()> + Sync) -> Res<(Duration, f64)> {
    let cpu = cpu_now();
    let barrier = Barrier::new(threads + 1);
    let (start, results) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<Res<()>> = handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect();
        (start, results)
    });
    let elapsed = start.elapsed();
    for r in results {
        r?;
    }
    Ok((elapsed, cpu_now() - cpu))
}

/// Runs `threads` workers that each call `op(thread_index)` `per` times
/// after a common start, timing every call; returns all `threads × per`
/// jobs with their latencies.
fn parallel_lat(threads: usize, per: u64, op: impl Fn(usize) -> Res<()> + Sync) -> Res<Timed> {
    let sink = Mutex::new(Vec::with_capacity(threads * per as usize));
    let t = parallel(threads, |i| {
        let mut lat = Vec::with_capacity(per as usize);
        for _ in 0..per {
            let start = Instant::now();
            op(i)?;
            lat.push(start.elapsed());
        }
        sink.lock().expect("latencies").extend(lat);
        Ok(())
    })?;
    let mut timed = Timed::new(per * threads as u64, t);
    timed.lat = sink.into_inner().expect("latencies");
    Ok(timed)
}

// ------------------------------------------------------------------- walq

mod wq {
    use super::*;
    use walq::{Durability, Options, Queue};

    fn open(dir: &Path, d: Durability) -> Res<Queue> {
        Ok(Queue::open_with(dir, Options::default().durability(d))?)
    }

    pub fn enqueue(dir: &Path, d: Durability, jobs: u64, p: &[u8]) -> Res<Timed> {
        let q = open(dir, d)?;
        timed(jobs, || {
            for _ in 0..jobs {
                q.enqueue(p)?;
            }
            Ok(())
        })
    }

    pub fn batches(dir: &Path, d: Durability, batches: u64, p: &[u8]) -> Res<Timed> {
        let q = open(dir, d)?;
        timed(batches * 100, || {
            for _ in 0..batches {
                q.enqueue_batch(std::iter::repeat_n(p, 100))?;
            }
            Ok(())
        })
    }

    pub fn dequeue_ack(dir: &Path, d: Durability, jobs: u64, p: &[u8]) -> Res<Timed> {
        let q = open(dir, d)?;
        let mut left = jobs;
        while left > 0 {
            let k = left.min(1000) as usize;
            q.enqueue_batch(std::iter::repeat_n(p, k))?;
            left -= k as u64;
        }
        q.sync()?;
        timed(jobs, || {
            for _ in 0..jobs {
                let job = q.dequeue()?.ok_or("walq: queue ran dry")?;
                std::hint::black_box(job.payload());
                q.ack(job.receipt())?;
            }
            Ok(())
        })
    }

    pub fn producers(dir: &Path, threads: usize, per: u64, p: &[u8]) -> Res<Timed> {
        let q = open(dir, Durability::Sync)?;
        parallel_lat(threads, per, |_| {
            q.enqueue(p)?;
            Ok(())
        })
    }
}

// ----------------------------------------------------------------- SQLite

mod sq {
    use super::*;
    use rusqlite::{params, Connection};

    /// A job table in WAL mode with the given `synchronous` level.
    pub fn open(dir: &Path, sync: &str) -> Res<Connection> {
        let c = Connection::open(dir.join("jobs.db"))?;
        c.busy_timeout(Duration::from_secs(60))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", sync)?;
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs(
                 id INTEGER PRIMARY KEY,
                 payload BLOB NOT NULL,
                 lease_until INTEGER NOT NULL DEFAULT 0,
                 attempts INTEGER NOT NULL DEFAULT 0)",
        )?;
        Ok(c)
    }

    pub const INSERT: &str = "INSERT INTO jobs(payload) VALUES (?1)";

    pub fn enqueue(dir: &Path, sync: &str, jobs: u64, p: &[u8]) -> Res<Timed> {
        let c = open(dir, sync)?;
        let mut st = c.prepare_cached(INSERT)?;
        timed(jobs, || {
            for _ in 0..jobs {
                st.execute(params![p])?;
            }
            Ok(())
        })
    }

    pub fn batches(dir: &Path, sync: &str, batches: u64, p: &[u8]) -> Res<Timed> {
        let mut c = open(dir, sync)?;
        timed(batches * 100, || {
            for _ in 0..batches {
                let tx = c.transaction()?;
                {
                    let mut st = tx.prepare_cached(INSERT)?;
                    for _ in 0..100 {
                        st.execute(params![p])?;
                    }
                }
                tx.commit()?;
            }
            Ok(())
        })
    }

    fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// Leases the oldest free job for 30 s: `?1` = lease end, `?2` = now (ms).
    pub const CLAIM: &str = "UPDATE jobs SET lease_until = ?1, attempts = attempts + 1
             WHERE id = (SELECT id FROM jobs WHERE lease_until <= ?2 ORDER BY id LIMIT 1)
             RETURNING id, payload";

    /// Claims one job (the dequeue half of [`dequeue_ack`]).
    pub fn claim(c: &Connection) -> Res<(i64, Vec<u8>)> {
        let now = now_ms();
        Ok(c.prepare_cached(CLAIM)?
            .query_row(params![now + 30_000, now], |r| Ok((r.get(0)?, r.get(1)?)))?)
    }

    /// Claim with a lease (UPDATE … RETURNING), then DELETE as the ack.
    pub fn dequeue_ack(dir: &Path, sync: &str, jobs: u64, p: &[u8]) -> Res<Timed> {
        let mut c = open(dir, sync)?;
        {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(INSERT)?;
                for _ in 0..jobs {
                    st.execute(params![p])?;
                }
            }
            tx.commit()?;
        }
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        let mut claim = c.prepare_cached(CLAIM)?;
        let mut delete = c.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
        timed(jobs, || {
            for _ in 0..jobs {
                let now = now_ms();
                let (id, payload): (i64, Vec<u8>) =
                    claim.query_row(params![now + 30_000, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
                std::hint::black_box(&payload);
                delete.execute(params![id])?;
            }
            Ok(())
        })
    }

    /// One connection shared by every thread (what most applications do).
    pub fn producers_shared(dir: &Path, threads: usize, per: u64, p: &[u8]) -> Res<Timed> {
        let c = Mutex::new(open(dir, "FULL")?);
        parallel_lat(threads, per, |_| {
            let c = c.lock().expect("connection");
            c.prepare_cached(INSERT)?.execute(params![p])?;
            Ok(())
        })
    }

    /// A connection per thread: writers contend on SQLite's write lock and
    /// back off in its busy handler.
    pub fn producers(dir: &Path, threads: usize, per: u64, p: &[u8]) -> Res<Timed> {
        drop(open(dir, "FULL")?);
        let conns: Vec<Mutex<rusqlite::Connection>> = (0..threads)
            .map(|_| open(dir, "FULL").map(Mutex::new))
            .collect::<Res<_>>()?;
        parallel_lat(threads, per, |i| {
            let c = conns[i].lock().expect("connection");
            c.prepare_cached(INSERT)?.execute(params![p])?;
            Ok(())
        })
    }
}

// ------------------------------------------------------------------ yaque

mod yq {
    use super::*;

    /// yaque writes with `write` + flush and never fsyncs.
    pub fn enqueue(dir: &Path, jobs: u64, p: &[u8]) -> Res<Timed> {
        let mut tx = yaque::Sender::open(dir)?;
        timed(jobs, || {
            for _ in 0..jobs {
                tx.try_send(p).map_err(|e| format!("yaque send: {e:?}"))?;
            }
            Ok(())
        })
    }

    /// `recv` + `commit` (no leases: a received element is gone once
    /// committed; the read position is saved every 250 elements / 350 ms).
    pub fn dequeue_ack(dir: &Path, jobs: u64, p: &[u8]) -> Res<Timed> {
        let (mut tx, mut rx) = yaque::channel(dir)?;
        let chunk = jobs.clamp(1, 100);
        for _ in 0..jobs / chunk {
            tx.try_send_batch(std::iter::repeat_n(p, chunk as usize))
                .map_err(|e| format!("yaque send: {e:?}"))?;
        }
        let jobs = jobs / chunk * chunk;
        timed(jobs, || {
            for _ in 0..jobs {
                let guard = futures::executor::block_on(rx.recv())?;
                std::hint::black_box(&*guard);
                guard.commit()?;
            }
            Ok(())
        })
    }
}

// ------------------------------------------------------------- queue-file

mod qf {
    use super::*;
    use queue_file::QueueFile;

    fn open(dir: &Path, sync: bool) -> Res<QueueFile> {
        let mut q = QueueFile::open(dir.join("queue"))?;
        q.set_sync_writes(sync);
        Ok(q)
    }

    pub fn enqueue(dir: &Path, sync: bool, jobs: u64, p: &[u8]) -> Res<Timed> {
        let mut q = open(dir, sync)?;
        timed(jobs, || {
            for _ in 0..jobs {
                q.add(p)?;
            }
            Ok(())
        })
    }

    pub fn batches(dir: &Path, batches: u64, p: &[u8]) -> Res<Timed> {
        let mut q = open(dir, true)?;
        timed(batches * 100, || {
            for _ in 0..batches {
                q.add_n(std::iter::repeat_n(p, 100))?;
            }
            Ok(())
        })
    }

    pub fn dequeue_ack(dir: &Path, sync: bool, jobs: u64, p: &[u8]) -> Res<Timed> {
        let mut q = open(dir, false)?;
        let chunk = jobs.clamp(1, 100);
        for _ in 0..jobs / chunk {
            q.add_n(std::iter::repeat_n(p, chunk as usize))?;
        }
        q.sync_all()?;
        q.set_sync_writes(sync);
        let jobs = jobs / chunk * chunk;
        timed(jobs, || {
            for _ in 0..jobs {
                let item = q.peek()?.ok_or("queue-file ran dry")?;
                std::hint::black_box(&item);
                q.remove()?;
            }
            Ok(())
        })
    }

    pub fn producers(dir: &Path, threads: usize, per: u64, p: &[u8]) -> Res<Timed> {
        let q = Mutex::new(open(dir, true)?);
        parallel_lat(threads, per, |_| {
            q.lock().expect("queue-file").add(p)?;
            Ok(())
        })
    }
}

// ------------------------------------------------------------------- redb

mod rd {
    use super::*;
    use redb::{Database, Durability, ReadableTableMetadata, TableDefinition};

    const Q: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");

    fn open(dir: &Path) -> Res<Database> {
        let db = Database::create(dir.join("queue.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(Q)?;
        tx.commit()?;
        Ok(db)
    }

    fn push(db: &Database, d: Durability, id: &mut u64, items: &[&[u8]]) -> Res<()> {
        let mut tx = db.begin_write()?;
        tx.set_durability(d);
        {
            let mut t = tx.open_table(Q)?;
            for p in items {
                t.insert(*id, *p)?;
                *id += 1;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn enqueue(dir: &Path, d: Durability, jobs: u64, p: &[u8]) -> Res<Timed> {
        let db = open(dir)?;
        let mut id = 0;
        timed(jobs, || {
            for _ in 0..jobs {
                push(&db, d, &mut id, &[p])?;
            }
            Ok(())
        })
    }

    pub fn batches(dir: &Path, batches: u64, p: &[u8]) -> Res<Timed> {
        let db = open(dir)?;
        let mut id = 0;
        let items = vec![p; 100];
        timed(batches * 100, || {
            for _ in 0..batches {
                push(&db, Durability::Immediate, &mut id, &items)?;
            }
            Ok(())
        })
    }

    /// `pop_first` in its own transaction: taking the job is the ack (no
    /// lease).
    pub fn dequeue_ack(dir: &Path, d: Durability, jobs: u64, p: &[u8]) -> Res<Timed> {
        let db = open(dir)?;
        let mut id = 0;
        let chunk = jobs.clamp(1, 1000);
        let items = vec![p; chunk as usize];
        for _ in 0..jobs / chunk {
            push(&db, Durability::Immediate, &mut id, &items)?;
        }
        let jobs = jobs / chunk * chunk;
        timed(jobs, || {
            for _ in 0..jobs {
                let mut tx = db.begin_write()?;
                tx.set_durability(d);
                {
                    let mut t = tx.open_table(Q)?;
                    let (_, v) = t.pop_first()?.ok_or("redb ran dry")?;
                    std::hint::black_box(v.value());
                }
                tx.commit()?;
            }
            Ok(())
        })
        .inspect(|_| {
            let len = db
                .begin_read()
                .ok()
                .and_then(|r| r.open_table(Q).ok())
                .and_then(|t| t.len().ok());
            debug_assert_eq!(len, Some(0));
        })
    }

    pub fn producers(dir: &Path, threads: usize, per: u64, p: &[u8]) -> Res<Timed> {
        let db = Arc::new(open(dir)?);
        let next = Mutex::new(0u64);
        parallel_lat(threads, per, |_| {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::Immediate);
            {
                let mut t = tx.open_table(Q)?;
                let mut id = next.lock().expect("id");
                t.insert(*id, p)?;
                *id += 1;
            }
            tx.commit()?;
            Ok(())
        })
    }
}

// ------------------------------------------------------------------- disk

/// The physics without a queue: `pwrite` + `fdatasync` on a zero-filled
/// (fully written, so no metadata changes) file.
mod raw {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// How the file's space is prepared before the timed loop.
    #[derive(Clone, Copy, PartialEq)]
    pub enum Prep {
        /// Written with zeros and synced: blocks are allocated and
        /// initialised, so an overwrite changes data only.
        Zeroed,
        /// `fallocate`d (as walq's segments are): ext4 marks the extents
        /// unwritten, so the first write-back of each block also converts
        /// its extent, and that fdatasync commits the journal too.
        Fallocated,
    }

    /// `ops` rounds of writing `per_op` records of `rec` bytes then one
    /// fdatasync; counts `jobs_per_op` jobs per round.
    pub fn fsync(
        dir: &Path,
        prep: Prep,
        ops: u64,
        rec: usize,
        per_op: usize,
        jobs_per_op: u64,
    ) -> Res<Timed> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("raw"))?;
        let size = (ops * (rec * per_op) as u64 + (1 << 20)).next_multiple_of(1 << 20);
        match prep {
            Prep::Zeroed => {
                let zeros = vec![0u8; 1 << 20];
                let mut off = 0;
                while off < size {
                    f.write_all_at(&zeros, off)?;
                    off += zeros.len() as u64;
                }
            }
            Prep::Fallocated => {
                use std::os::fd::AsRawFd;
                // SAFETY: plain syscall on a descriptor we own.
                let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, size as libc::off_t) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error().into());
                }
            }
        }
        f.sync_all()?;
        let buf = vec![0x5au8; rec * per_op];
        let mut off = 0u64;
        timed(ops * jobs_per_op, || {
            for _ in 0..ops {
                f.write_all_at(&buf, off)?;
                f.sync_data()?;
                off += buf.len() as u64;
            }
            Ok(())
        })
    }
}

// ------------------------------------------------------------------ table

struct Row {
    system: &'static str,
    mode: String,
    result: Res<Measure>,
}

#[derive(Default)]
struct Group {
    workload: String,
    durability: &'static str,
    rows: Vec<Row>,
    /// Producer threads, for the rows of the producers sweep.
    producers: Option<usize>,
    /// The rows measure the time of one operation (reopen), not jobs/s.
    time: bool,
}

/// Repeats of the rows that do not fsync per operation (`COMPARE_REPEATS`,
/// default 3; the best is kept). Rows that fsync are interleaved instead.
fn repeats() -> u32 {
    std::env::var("COMPARE_REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

fn row(system: &'static str, mode: &str, body: impl Fn(&Path) -> Res<Timed>) -> Row {
    row_n(system, mode, repeats(), body)
}

fn row_n(
    system: &'static str,
    mode: &str,
    repeats: u32,
    body: impl Fn(&Path) -> Res<Timed>,
) -> Row {
    let result = measure(repeats, body);
    match &result {
        Ok(m) => eprintln!(
            "  {system:<10} {mode:<40} {:>10.0} jobs/s ({} jobs in {:.2} s, {:.2} CPU-s)",
            m.rate(),
            m.jobs,
            m.elapsed.as_secs_f64(),
            m.cpu
        ),
        Err(e) => eprintln!("  {system:<10} {mode:<34} failed: {e}"),
    }
    Row {
        system,
        mode: mode.to_string(),
        result,
    }
}

/// What an interleaved row runs on a fresh directory.
type Body<'a> = Box<dyn Fn(&Path) -> Res<Timed> + 'a>;

/// A row of an interleaved group.
struct Spec<'a> {
    system: &'static str,
    mode: String,
    body: Option<Body<'a>>,
    why: String,
}

fn spec<'a>(system: &'static str, mode: &str, body: impl Fn(&Path) -> Res<Timed> + 'a) -> Spec<'a> {
    Spec {
        system,
        mode: mode.to_string(),
        body: Some(Box::new(body)),
        why: String::new(),
    }
}

fn spec_na(system: &'static str, why: &str) -> Spec<'static> {
    Spec {
        system,
        mode: String::new(),
        body: None,
        why: why.to_string(),
    }
}

/// Runs the rows of a group round-robin, `rounds` times each, and adds up
/// jobs and times: fsync rates on a shared disk drift by several times
/// within a minute, and interleaving exposes every row to the same drift.
fn interleaved(rounds: u32, specs: Vec<Spec<'_>>) -> Vec<Row> {
    let mut acc: Vec<Result<Measure, String>> = specs
        .iter()
        .map(|s| {
            if s.body.is_some() {
                Ok(Measure {
                    jobs: 0,
                    elapsed: Duration::ZERO,
                    cpu: 0.0,
                    disk: 0,
                    lat: Vec::new(),
                })
            } else {
                Err(s.why.clone())
            }
        })
        .collect();
    for _ in 0..rounds {
        for (s, a) in specs.iter().zip(acc.iter_mut()) {
            let (Some(body), Ok(total)) = (&s.body, a.as_mut()) else {
                continue;
            };
            match measure(1, body) {
                Ok(m) => {
                    total.jobs += m.jobs;
                    total.elapsed += m.elapsed;
                    total.cpu += m.cpu;
                    total.disk = total.disk.max(m.disk);
                    total.lat.extend(m.lat);
                }
                Err(e) => *a = Err(e.to_string()),
            }
        }
    }
    specs
        .into_iter()
        .zip(acc)
        .map(|(s, a)| {
            match &a {
                Ok(m) => eprintln!(
                    "  {:<10} {:<40} {:>10.0} jobs/s ({} jobs in {:.2} s, {:.2} CPU-s)",
                    s.system,
                    s.mode,
                    m.rate(),
                    m.jobs,
                    m.elapsed.as_secs_f64(),
                    m.cpu
                ),
                Err(e) if s.body.is_some() => {
                    eprintln!("  {:<10} {:<40} failed: {e}", s.system, s.mode)
                }
                Err(_) => {}
            }
            Row {
                system: s.system,
                mode: s.mode,
                result: a.map_err(Into::into),
            }
        })
        .collect()
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} K", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// A ratio with one decimal, or two significant digits below 1.
fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "—".to_string()
    } else if r >= 1.0 || r == 0.0 {
        format!("{r:.1}×")
    } else {
        let decimals = (1.0 - r.log10().floor()) as usize;
        format!("{r:.decimals$}×")
    }
}

/// 200000 → "200,000".
fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.0} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

fn print(groups: &[Group]) {
    println!("| workload | durability of every row | system (mode) | jobs/s | walq ÷ system | jobs per CPU-s | p99 per job | disk at end |");
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for g in groups.iter().filter(|g| !g.time) {
        let walq = g
            .rows
            .iter()
            .find(|r| r.system == "walq")
            .and_then(|r| r.result.as_ref().ok())
            .map(Measure::rate);
        for (i, r) in g.rows.iter().enumerate() {
            let (workload, dur) = if i == 0 {
                (g.workload.as_str(), g.durability)
            } else {
                ("", "")
            };
            let who = if r.mode.is_empty() {
                r.system.to_string()
            } else {
                format!("{} ({})", r.system, r.mode)
            };
            match &r.result {
                Ok(m) => {
                    let ratio = match walq {
                        Some(w) if r.system != "walq" => fmt_ratio(w / m.rate()),
                        _ => "—".to_string(),
                    };
                    let p99 = m.p99().map_or("—".to_string(), reopen::fmt_time);
                    println!(
                        "| {workload} | {dur} | {who} | {} | {ratio} | {} | {p99} | {} |",
                        fmt_rate(m.rate()),
                        fmt_rate(m.cpu_rate()),
                        fmt_bytes(m.disk)
                    );
                }
                Err(e) => println!("| {workload} | {dur} | {who} | n/a: {e} | — | — | — | — |"),
            }
        }
    }
}

// ------------------------------------------------------------------- main

/// Rounds of the interleaved (fsync) groups.
const ROUNDS: u32 = 6;

fn main() {
    let only = std::env::var("COMPARE_ONLY").unwrap_or_default();
    let wants = |name: &str| only.is_empty() || name.contains(&only);
    let mut groups = Vec::new();
    let started = Instant::now();
    eprintln!(
        "walq compare: scale {} (COMPARE_SCALE), dir {}",
        scale(),
        std::env::var("COMPARE_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string())
    );

    for size in [100usize, 1024] {
        let p = payload(size);
        let p = &p[..];

        let name = format!("enqueue {size} B, 1 thread");
        if wants(&name) {
            eprintln!("{name} (no fsync per op)");
            let fast = n(300_000);
            let slow = n(60_000);
            let redb_n = n(15_000);
            groups.push(Group {
                workload: name,
                producers: None,
                time: false,
                durability: "no fsync per op (survives a process crash, not power loss)",
                rows: vec![
                    row("walq", "Durability::Os", |d| {
                        wq::enqueue(d, walq::Durability::Os, fast, p)
                    }),
                    row("SQLite", "WAL, synchronous=NORMAL", |d| {
                        sq::enqueue(d, "NORMAL", slow, p)
                    }),
                    row("fjall", "PersistMode::Buffer (its default)", |d| {
                        fj::enqueue(d, None, fast, p)
                    }),
                    row("yaque", "write+flush, never fsyncs", |d| {
                        yq::enqueue(d, fast, p)
                    }),
                    row("queue-file", "sync_writes=false", |d| {
                        qf::enqueue(d, false, fast, p)
                    }),
                    row("redb", "Durability::None", |d| {
                        rd::enqueue(d, redb::Durability::None, redb_n, p)
                    }),
                ],
            });
        }

        let name = format!("enqueue {size} B, 1 thread, fsync");
        if wants(&name) {
            eprintln!("{name} (fsync per op, rows interleaved)");
            let k = n(800) / ROUNDS as u64;
            groups.push(Group {
                workload: name,
                producers: None,
                time: false,
                durability: "fsync before each Ok (survives power loss)",
                rows: interleaved(
                    ROUNDS,
                    vec![
                        spec("walq", "Durability::Sync", |d| {
                            wq::enqueue(d, walq::Durability::Sync, k, p)
                        }),
                        spec("SQLite", "WAL, synchronous=FULL", |d| {
                            sq::enqueue(d, "FULL", k, p)
                        }),
                        spec("fjall", "PersistMode::SyncData per op", |d| {
                            fj::enqueue(d, Some(fjall::PersistMode::SyncData), k, p)
                        }),
                        spec_na("yaque", "has no fsync mode"),
                        spec("queue-file", "sync_writes=true", |d| {
                            qf::enqueue(d, true, k, p)
                        }),
                        spec("redb", "Durability::Immediate", |d| {
                            rd::enqueue(d, redb::Durability::Immediate, k, p)
                        }),
                        spec("disk", "bound: pwrite + fdatasync, zero-filled file", |d| {
                            raw::fsync(d, raw::Prep::Zeroed, k, size + 56, 1, 1)
                        }),
                        spec("disk", "pwrite + fdatasync, fallocate'd file", |d| {
                            raw::fsync(d, raw::Prep::Fallocated, k, size + 56, 1, 1)
                        }),
                    ],
                ),
            });
        }
    }

    let p = payload(100);
    let p = &p[..];

    let name = "enqueue batches of 100 × 100 B, fsync per batch".to_string();
    if wants(&name) {
        eprintln!("{name} (rows interleaved)");
        let b = n(400) / ROUNDS as u64;
        groups.push(Group {
            workload: name,
            producers: None,
            time: false,
            durability: "fsync before each Ok (survives power loss)",
            rows: interleaved(
                ROUNDS,
                vec![
                    spec("walq", "enqueue_batch, Durability::Sync", |d| {
                        wq::batches(d, walq::Durability::Sync, b, p)
                    }),
                    spec("SQLite", "one transaction per batch, FULL", |d| {
                        sq::batches(d, "FULL", b, p)
                    }),
                    spec("fjall", "write batch, SyncData", |d| fj::batches(d, b, p)),
                    spec_na("yaque", "has no fsync mode"),
                    spec("queue-file", "add_n, sync_writes=true", |d| {
                        qf::batches(d, b, p)
                    }),
                    spec("redb", "one transaction per batch, Immediate", |d| {
                        rd::batches(d, b, p)
                    }),
                    spec("disk", "bound: pwrite 100 records + fdatasync", |d| {
                        raw::fsync(d, raw::Prep::Zeroed, b, 156, 100, 100)
                    }),
                ],
            ),
        });
    }

    let name = "dequeue + ack 100 B, 1 thread".to_string();
    if wants(&name) {
        eprintln!("{name} (no fsync per op)");
        let fast = n(300_000);
        let slow = n(50_000);
        let redb_n = n(15_000);
        let fjall_n = n(FJALL_POPS);
        groups.push(Group {
            workload: name,
            producers: None,
            time: false,
            durability: "no fsync per op (survives a process crash, not power loss)",
            rows: vec![
                row("walq", "dequeue+ack with leases, Os", |d| {
                    wq::dequeue_ack(d, walq::Durability::Os, fast, p)
                }),
                row("SQLite", "UPDATE…RETURNING claim + DELETE, NORMAL", |d| {
                    sq::dequeue_ack(d, "NORMAL", slow, p)
                }),
                row(
                    "fjall",
                    "range from last key+remove, no leases, Buffer",
                    |d| fj::dequeue_ack_cursor(d, fast, p),
                ),
                row("fjall", "first_key_value+remove, no leases, Buffer", |d| {
                    fj::dequeue_ack(d, None, fjall_n, p)
                }),
                row("yaque", "recv+commit, no leases", |d| {
                    yq::dequeue_ack(d, fast, p)
                }),
                row("queue-file", "peek+remove, no leases, sync off", |d| {
                    qf::dequeue_ack(d, false, fast, p)
                }),
                row("redb", "pop_first txn, no leases, None", |d| {
                    rd::dequeue_ack(d, redb::Durability::None, redb_n, p)
                }),
            ],
        });
    }

    let name = "dequeue + ack 100 B, 1 thread, fsync".to_string();
    if wants(&name) {
        eprintln!("{name} (fsync per ack, rows interleaved)");
        let k = n(500) / ROUNDS as u64;
        groups.push(Group {
            workload: name,
            producers: None,
            time: false,
            durability: "fsync before each ack's Ok (survives power loss)",
            rows: interleaved(
                ROUNDS,
                vec![
                    spec("walq", "dequeue+ack with leases, Sync", |d| {
                        wq::dequeue_ack(d, walq::Durability::Sync, k, p)
                    }),
                    spec("SQLite", "claim + DELETE, FULL (2 commits/job)", |d| {
                        sq::dequeue_ack(d, "FULL", k, p)
                    }),
                    spec("fjall", "first_key_value+remove, SyncData", |d| {
                        fj::dequeue_ack(d, Some(fjall::PersistMode::SyncData), k, p)
                    }),
                    spec_na("yaque", "has no fsync mode"),
                    spec("queue-file", "peek+remove, sync_writes=true", |d| {
                        qf::dequeue_ack(d, true, k, p)
                    }),
                    spec("redb", "pop_first txn, Immediate", |d| {
                        rd::dequeue_ack(d, redb::Durability::Immediate, k, p)
                    }),
                    spec("disk", "bound: pwrite + fdatasync, zero-filled file", |d| {
                        raw::fsync(d, raw::Prep::Zeroed, k, 32, 1, 1)
                    }),
                ],
            ),
        });
    }

    for threads in SWEEP {
        let plural = if threads == 1 { "" } else { "s" };
        let name = format!("enqueue 100 B, {threads} producer thread{plural}, fsync");
        if wants(&name) {
            eprintln!("{name} (rows interleaved)");
            groups.push(sweep_group(name, threads, p));
        }
    }

    let name = "enqueue 100 B, 64 producer threads, fsync".to_string();
    if wants(&name) {
        eprintln!("{name} (rows interleaved)");
        let threads = 64;
        let fast = n(1_000) / ROUNDS as u64;
        let slow = (n(20) / ROUNDS as u64).max(1);
        groups.push(Group {
            workload: name,
            producers: Some(threads),
            time: false,
            durability: "fsync before each Ok (survives power loss)",
            rows: interleaved(
                ROUNDS,
                vec![
                    spec("walq", "Sync, group commit", |d| {
                        wq::producers(d, threads, fast, p)
                    }),
                    spec("SQLite", "FULL, one connection behind a Mutex", |d| {
                        sq::producers_shared(d, threads, slow, p)
                    }),
                    spec("SQLite", "FULL, a connection per thread", |d| {
                        sq::producers(d, threads, (slow / 4).max(1), p)
                    }),
                    spec("fjall", "SyncData per job, one shared database", |d| {
                        fj::producers(d, threads, slow, p)
                    }),
                    spec_na("yaque", "has no fsync mode (and one sender)"),
                    spec("queue-file", "sync_writes=true, behind a Mutex", |d| {
                        qf::producers(d, threads, slow, p)
                    }),
                    spec("redb", "Immediate, a transaction per job", |d| {
                        rd::producers(d, threads, slow, p)
                    }),
                    spec(
                        "disk",
                        "bound: 64 jobs per pwrite + fdatasync (one per producer)",
                        |d| raw::fsync(d, raw::Prep::Zeroed, fast, 156, 64, 64),
                    ),
                ],
            ),
        });
    }

    let queued = n(200_000);
    let name = format!(
        "reopen + first dequeue, {} × 100 B queued",
        thousands(queued)
    );
    if wants(&name) {
        eprintln!("{name} (median of {REOPENS} reopens)");
        groups.push(Group {
            workload: name,
            durability: "closed cleanly, page cache warm",
            rows: reopen::rows(queued, p, REOPENS),
            producers: None,
            time: true,
        });
    }

    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    print(&groups);
    print_times(&groups);
    if let Some(dir) = charts_dir() {
        if let Err(e) = draw_charts(&dir, &groups) {
            eprintln!("charts: {e}");
            std::process::exit(1);
        }
    }
}

/// Producer counts of the sweep below the 64-producer workload.
const SWEEP: [usize; 3] = [1, 4, 16];

/// Reopens per system in the reopen row (the median is kept).
const REOPENS: usize = 3;

/// Pops in fjall's `first_key_value` dequeue row without fsync: every pop
/// steps over the tombstones of the pops before it (10,000 pops took 26 s
/// on the 2-vCPU VM), so the row is kept short; its rate falls as it grows.
const FJALL_POPS: u64 = 5_000;

/// walq, SQLite (FULL, one shared connection) and fjall (SyncData) with
/// `threads` producers, each job acknowledged only once durable.
fn sweep_group(workload: String, threads: usize, p: &[u8]) -> Group {
    let fast = (n(600) / ROUNDS as u64).max(1);
    let slow = (n(1_200) / ROUNDS as u64 / threads as u64).max(1);
    Group {
        workload,
        durability: "fsync before each Ok (survives power loss)",
        rows: interleaved(
            ROUNDS,
            vec![
                spec("walq", "Sync, group commit", |d| {
                    wq::producers(d, threads, fast, p)
                }),
                spec("SQLite", "FULL, one connection behind a Mutex", |d| {
                    sq::producers_shared(d, threads, slow, p)
                }),
                spec("fjall", "SyncData per job, one shared database", |d| {
                    fj::producers(d, threads, slow, p)
                }),
            ],
        ),
        producers: Some(threads),
        time: false,
    }
}

/// `--charts DIR`: where to write the SVG charts.
fn charts_dir() -> Option<std::path::PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == "--charts")?;
    Some(args.get(i + 1).map_or("docs/img".into(), Into::into))
}

/// The workload's name as a chart label.
fn short(workload: &str) -> String {
    workload
        .replace("enqueue batches of", "batches of")
        .replace(", fsync per batch", ", fsync")
        .replace(" producer threads", " producers")
        .replace(" producer thread", " producer")
        .replace(", 1 thread", "")
}

/// The first row of each system (its main mode), without the `disk` rows.
fn rates(g: &Group) -> Vec<(&'static str, f64)> {
    let mut out: Vec<(&'static str, f64)> = Vec::new();
    for r in &g.rows {
        if let (Ok(m), false) = (&r.result, r.system == "disk") {
            if !out.iter().any(|(s, _)| *s == r.system) {
                out.push((r.system, m.rate()));
            }
        }
    }
    out
}

fn draw_charts(dir: &Path, groups: &[Group]) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let workloads: Vec<charts::Category> = groups
        .iter()
        .filter(|g| !g.time && g.producers.is_none_or(|t| !SWEEP.contains(&t)))
        .map(|g| (short(&g.workload), rates(g)))
        .collect();
    if !workloads.is_empty() {
        charts::bars(
            &dir.join("throughput.svg"),
            "walq and its peers: jobs/s by workload (log scale; higher is better)",
            "jobs/s",
            &workloads,
            fmt_rate,
        )?;
    }
    let mut points = Vec::new();
    for g in groups.iter().filter(|g| g.producers.is_some()) {
        for (system, _) in rates(g) {
            let Some(Ok(m)) = g
                .rows
                .iter()
                .find(|r| r.system == system)
                .map(|r| &r.result)
            else {
                continue;
            };
            points.push(charts::Point {
                system,
                producers: g.producers.unwrap_or(1),
                rate: m.rate(),
                p99_ms: m.p99().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            });
        }
    }
    points.retain(|p| ["walq", "SQLite", "fjall"].contains(&p.system));
    if !points.is_empty() {
        charts::producers(
            &dir.join("producers.svg"),
            "Producers, 100 B jobs, fsync before each Ok",
            &points,
        )?;
    }
    for g in groups.iter().filter(|g| g.time) {
        let times: Vec<(&'static str, f64)> = g
            .rows
            .iter()
            .filter_map(|r| {
                Some((
                    r.system,
                    r.result.as_ref().ok()?.elapsed.as_secs_f64() * 1e3,
                ))
            })
            .collect();
        charts::bars(
            &dir.join("reopen.svg"),
            &format!("{} (median of {REOPENS}; lower is better)", g.workload),
            "milliseconds (log scale)",
            &[("reopen + first dequeue".to_string(), times)],
            |ms| reopen::fmt_time(Duration::from_secs_f64(ms / 1e3)),
        )?;
    }
    eprintln!("charts written to {}", dir.display());
    Ok(())
}

/// The rows that measure one operation's time (the reopen row).
fn print_times(groups: &[Group]) {
    for g in groups.iter().filter(|g| g.time) {
        println!();
        println!(
            "| {} ({}) | system (how) | time, median | walq ÷ system (speed) | disk |",
            g.workload, g.durability
        );
        println!("|---|---|---:|---:|---:|");
        let walq = g
            .rows
            .iter()
            .find(|r| r.system == "walq")
            .and_then(|r| r.result.as_ref().ok())
            .map(|m| m.elapsed.as_secs_f64());
        for r in &g.rows {
            match &r.result {
                Ok(m) => {
                    let ratio = match walq {
                        Some(w) if r.system != "walq" => fmt_ratio(m.elapsed.as_secs_f64() / w),
                        _ => "—".to_string(),
                    };
                    println!(
                        "| | {} ({}) | {} | {ratio} | {} |",
                        r.system,
                        r.mode,
                        reopen::fmt_time(m.elapsed),
                        fmt_bytes(m.disk)
                    );
                }
                Err(e) => println!("| | {} ({}) | n/a: {e} | — | — |", r.system, r.mode),
            }
        }
    }
}
