//! walq's worker story side by side with the embedded job runtimes a user
//! would pick instead: effectum, apalis on SQLite, and a hand-rolled SQLite
//! job table.
//!
//! `cargo run --release --manifest-path compare/Cargo.toml --bin jobs`
//!
//! Two workloads, every row with its durability stated:
//! 1. **drain**: a backlog of 20,000 no-op jobs is enqueued (untimed), then
//!    1, 4 and 16 workers run it; jobs/s from the workers' start until the
//!    last completion is committed.
//! 2. **pickup**: one producer enqueues at a steady rate (200 and 50
//!    jobs/s, 5 s each) while 4 workers wait; latency from enqueue to handler start,
//!    p50/p99/max, measured from the enqueue call and from its return.
//!
//! Each measurement runs on a fresh directory `COMPARE_REPEATS` times
//! (default 3), the systems taking turns in each round so that they share
//! the machine's drift; the table shows the median run (for pickup: the
//! run with the median p50).
//!
//! Environment:
//! - `COMPARE_SCALE` (default 1): multiplies the backlog (20,000).
//! - `COMPARE_DIR`: where the queues are created (default: the system temp
//!   directory; it must be on the disk you mean to measure, not tmpfs).
//! - `COMPARE_REPEATS` (default 3).
//! - `COMPARE_WORKERS` (default `1,4,16`): worker counts of the drain rows.
//! - `COMPARE_SYSTEMS` (default all): comma-separated subset of
//!   `walq,sqlite,apalis,effectum`.
//! - `COMPARE_ONLY`: `drain` or `pickup` to run one workload.
//! - `COMPARE_PICKUP_RATE` (default `200,50` jobs/s: one table per rate;
//!   at 200/s a system that fsyncs per claim can fall behind on a slow
//!   disk, and then its latency is queueing, so 50/s is measured too),
//!   `COMPARE_PICKUP_SECS` (default 5), `COMPARE_PICKUP_WORKERS` (default 4).
//! - `COMPARE_WALQ_DURABILITY=os`: walq rows under `Durability::Os` (a
//!   diagnostic: what the fsync costs; not durable, so never published
//!   next to the durable peers).
//! - `COMPARE_EFFECTUM_BIN`: the effectum child (default:
//!   `compare/effectum-jobs/target/release/effectum-jobs`, built with cargo
//!   on first use). effectum links an older SQLite binding than sqlx, so
//!   it cannot live in this binary: see `compare/effectum-jobs/`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[path = "../jobs_common.rs"]
mod jobs_common;
use jobs_common::{field, index_payload, payload_index, Stamps};
use walq::worker::{JobContext, Outcome, WorkerPool};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

// ---------------------------------------------------------------- settings

fn env_f64(key: &str, default: f64) -> f64 {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|v: &f64| *v > 0.0)
        .unwrap_or(default)
}

fn backlog() -> usize {
    ((20_000.0 * env_f64("COMPARE_SCALE", 1.0)) as usize).max(1)
}

fn workers_list() -> Vec<usize> {
    std::env::var("COMPARE_WORKERS")
        .unwrap_or_else(|_| "1,4,16".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&w| w > 0)
        .collect()
}

fn systems() -> Vec<System> {
    let want = std::env::var("COMPARE_SYSTEMS").unwrap_or_default();
    System::ALL
        .into_iter()
        .filter(|s| want.is_empty() || want.split(',').any(|w| w.trim() == s.key()))
        .collect()
}

fn tempdir() -> tempfile::TempDir {
    let b = tempfile::Builder::new().prefix("walq-jobs-").to_owned();
    match std::env::var_os("COMPARE_DIR") {
        Some(base) => {
            std::fs::create_dir_all(&base).expect("COMPARE_DIR");
            b.tempdir_in(base).expect("tempdir")
        }
        None => b.tempdir().expect("tempdir"),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum System {
    Walq,
    Sqlite,
    Apalis,
    Effectum,
}

impl System {
    const ALL: [System; 4] = [
        System::Walq,
        System::Sqlite,
        System::Apalis,
        System::Effectum,
    ];

    fn key(self) -> &'static str {
        match self {
            System::Walq => "walq",
            System::Sqlite => "sqlite",
            System::Apalis => "apalis",
            System::Effectum => "effectum",
        }
    }

    fn name(self) -> &'static str {
        match self {
            System::Walq if walq_os() => "walq, Durability::Os (NOT durable: diagnostic)",
            System::Walq => "walq pool (Sync)",
            System::Sqlite => "plain SQLite job table (rusqlite 0.32)",
            System::Apalis => "apalis 1.0 + apalis-sqlite 1.0",
            System::Effectum => "effectum 0.7.0",
        }
    }

    fn durability(self) -> &'static str {
        match self {
            System::Walq if walq_os() => {
                "Durability::Os: no fsync; survives a process crash, not a power loss"
            }
            System::Walq => {
                "Durability::Sync: enqueue returns after fdatasync; the pool's settler \
                 group-commits acks in batches, a job counted done once its ack is durable"
            }
            System::Sqlite => {
                "WAL, synchronous=FULL: the claim and the ack are each a committed, \
                 fsynced transaction"
            }
            System::Apalis => {
                "WAL, synchronous=FULL (set by us: its setup() sets OFF on one pooled \
                 connection); acks are written after the handler returns, batched, \
                 durable at their commit"
            }
            System::Effectum => {
                "rollback journal (its `journal=wal` pragma is misspelt and ignored), \
                 synchronous=NORMAL: fsync at every commit; one writer thread commits \
                 up to 50 operations per transaction"
            }
        }
    }

    fn drain(self, workers: usize, jobs: usize, dir: &Path) -> Res<f64> {
        match self {
            System::Walq => walq_drain(dir, workers, jobs),
            System::Sqlite => sqlite_drain(dir, workers, jobs),
            System::Apalis => runtime()?.block_on(apalis_drain(dir, workers, jobs)),
            System::Effectum => {
                let line = effectum_child(&[
                    "drain".into(),
                    workers.to_string(),
                    jobs.to_string(),
                    dir.display().to_string(),
                ])?;
                field(&line, "secs").ok_or_else(|| format!("effectum: {line}").into())
            }
        }
    }

    fn pickup(self, workers: usize, jobs: usize, rate: f64, dir: &Path) -> Res<Pickup> {
        match self {
            System::Walq => Ok(Pickup::of(&walq_pickup(dir, workers, jobs, rate)?)),
            System::Sqlite => Ok(Pickup::of(&sqlite_pickup(dir, workers, jobs, rate)?)),
            System::Apalis => {
                let line = runtime()?.block_on(apalis_pickup(dir, workers, jobs, rate))?;
                Pickup::parse(&line).ok_or_else(|| format!("apalis: {line}").into())
            }
            System::Effectum => {
                let line = effectum_child(&[
                    "pickup".into(),
                    workers.to_string(),
                    jobs.to_string(),
                    rate.to_string(),
                    dir.display().to_string(),
                ])?;
                Pickup::parse(&line).ok_or_else(|| format!("effectum: {line}").into())
            }
        }
    }
}

/// Pickup latencies of one run, in microseconds.
#[derive(Clone, Copy, Default)]
struct Pickup {
    n: f64,
    missing: f64,
    call: [f64; 3],
    ret: [f64; 3],
}

impl Pickup {
    fn of(st: &Stamps) -> Pickup {
        Pickup::parse(&st.summary_line()).expect("own summary")
    }

    fn parse(line: &str) -> Option<Pickup> {
        let us = |k: &str| field(line, k).map(|ns| ns / 1000.0);
        Some(Pickup {
            n: field(line, "n")?,
            missing: field(line, "missing")?,
            call: [us("call_p50")?, us("call_p99")?, us("call_max")?],
            ret: [us("ret_p50")?, us("ret_p99")?, us("ret_max")?],
        })
    }
}

fn runtime() -> Res<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

// ---------------------------------------------------------------- walq
//
// The walq side is the library's worker pool (`walq::worker::WorkerPool`):
// N threads leasing jobs and running the handler, their acks pipelined
// through the pool's settler thread (one group commit per batch of acks).
// A job counts as done only once its ack is durable.

/// `COMPARE_WALQ_DURABILITY=os` runs the walq rows under `Durability::Os`
/// (no fsync; survives a process crash, not power loss) to tell what the
/// fsync costs; the default and every published row is `Sync`.
fn walq_os() -> bool {
    std::env::var("COMPARE_WALQ_DURABILITY").is_ok_and(|v| v.eq_ignore_ascii_case("os"))
}

fn walq_open(dir: &Path) -> Res<walq::Queue> {
    let durability = if walq_os() {
        walq::Durability::Os
    } else {
        walq::Durability::Sync
    };
    let opts = walq::Options::default().durability(durability);
    Ok(walq::Queue::open_with(dir.join("walq"), opts)?)
}

/// Drains a `jobs`-job backlog with a `workers`-thread pool; returns the
/// seconds from the pool's start until its `done` count (durable acks only)
/// reaches `jobs`.
fn walq_drain(dir: &Path, workers: usize, jobs: usize) -> Res<f64> {
    let q = walq_open(dir)?;
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(1000) {
        q.enqueue_batch(chunk.iter().map(|&i| index_payload(i)))?;
    }
    let start = Instant::now();
    let pool = WorkerPool::builder(q.clone())
        .name("compare-drain")
        .workers(workers)
        .start(|_ctx: &JobContext, payload: &[u8]| {
            std::hint::black_box(payload_index(payload)); // the no-op handler
            Outcome::done()
        })?;
    let deadline = start + Duration::from_secs(300);
    while pool.stats().done < jobs as u64 {
        if Instant::now() > deadline {
            let stats = pool.shutdown(Duration::from_secs(10)).stats;
            return Err(format!("walq drain: {} of {jobs} done after 300 s", stats.done).into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = start.elapsed().as_secs_f64();
    pool.shutdown(Duration::from_secs(30));
    q.close()?;
    Ok(secs)
}

/// One producer enqueues `jobs` jobs at `rate`/s while a `workers`-thread
/// pool runs them.
fn walq_pickup(dir: &Path, workers: usize, jobs: usize, rate: f64) -> Res<Stamps> {
    let q = walq_open(dir)?;
    let st = Arc::new(Stamps::new(jobs));
    let pool = {
        let st = st.clone();
        WorkerPool::builder(q.clone())
            .name("compare-pickup")
            .workers(workers)
            .start(move |_ctx: &JobContext, payload: &[u8]| {
                Stamps::mark(&st.start[payload_index(payload)], st.now());
                Outcome::done()
            })?
    };
    let produced = (|| -> Res<()> {
        for i in 0..jobs {
            sleep_until(st.due(i, rate));
            Stamps::mark(&st.call[i], st.now());
            q.enqueue(&index_payload(i))?;
            Stamps::mark(&st.ret[i], st.now());
        }
        wait_for(|| pool.stats().done >= jobs as u64);
        Ok(())
    })();
    pool.shutdown(Duration::from_secs(30));
    produced?;
    q.close()?;
    Arc::try_unwrap(st).map_err(|_| "walq pickup: the pool still holds the stamps".into())
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Waits up to 30 s for `f`.
fn wait_for(f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------- plain SQLite
//
// The way people hand-roll it: a jobs table in WAL mode, synchronous=FULL;
// each worker has its own connection, claims the oldest ready job with
// UPDATE … RETURNING in a write transaction, runs the handler and deletes
// the row (its ack). An idle worker waits on an in-process condition
// variable that the producer signals after each enqueue (the best a single
// process can do; across processes it would poll).

fn sqlite_open(path: &Path) -> Res<rusqlite::Connection> {
    let c = rusqlite::Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(30))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if mode != "wal" || sync != 2 {
        return Err(format!("SQLite opened as {mode}/synchronous={sync}").into());
    }
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS jobs (
             id INTEGER PRIMARY KEY,
             payload BLOB NOT NULL,
             state INTEGER NOT NULL DEFAULT 0,      -- 0 ready, 1 leased
             lease_until INTEGER NOT NULL DEFAULT 0,
             attempts INTEGER NOT NULL DEFAULT 0
         );
         CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(state, id);",
    )?;
    Ok(c)
}

/// Claims the oldest ready job (its own committed transaction); None if
/// none is ready.
fn sqlite_claim(c: &mut rusqlite::Connection) -> Res<Option<(i64, Vec<u8>)>> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let job = {
        let mut stmt = tx.prepare_cached(
            "UPDATE jobs SET state = 1, lease_until = unixepoch() + 30, attempts = attempts + 1
             WHERE id = (SELECT id FROM jobs WHERE state = 0 ORDER BY id LIMIT 1)
             RETURNING id, payload",
        )?;
        let mut rows = stmt.query([])?;
        match rows.next()? {
            Some(r) => Some((r.get(0)?, r.get(1)?)),
            None => None,
        }
    };
    tx.commit()?;
    Ok(job)
}

fn sqlite_ack(c: &rusqlite::Connection, id: i64) -> Res<()> {
    c.prepare_cached("DELETE FROM jobs WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// The producer's signal to idle workers.
#[derive(Default)]
struct Bell {
    seq: Mutex<u64>,
    cv: Condvar,
}

impl Bell {
    fn ring(&self) {
        *self.seq.lock().unwrap() += 1;
        self.cv.notify_all();
    }

    /// Waits until the bell rang after `seen` (or 20 ms passed).
    fn wait(&self, seen: u64) -> u64 {
        let g = self.seq.lock().unwrap();
        let (g, _) = self
            .cv
            .wait_timeout_while(g, Duration::from_millis(20), |s| *s == seen)
            .unwrap();
        *g
    }

    fn seen(&self) -> u64 {
        *self.seq.lock().unwrap()
    }
}

fn sqlite_drain(dir: &Path, workers: usize, jobs: usize) -> Res<f64> {
    let path = dir.join("jobs.sqlite");
    let mut c = sqlite_open(&path)?;
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(1000) {
        let tx = c.transaction()?;
        {
            let mut stmt = tx.prepare_cached("INSERT INTO jobs (payload) VALUES (?1)")?;
            for &i in chunk {
                stmt.execute([index_payload(i)])?;
            }
        }
        tx.commit()?;
    }
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    let end = Mutex::new(start);
    std::thread::scope(|s| -> Res<()> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Res<()> {
                    let mut c = sqlite_open(&path)?;
                    while done.load(Ordering::Relaxed) < jobs {
                        let Some((id, payload)) = sqlite_claim(&mut c)? else {
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        };
                        std::hint::black_box(payload_index(&payload));
                        sqlite_ack(&c, id)?;
                        if done.fetch_add(1, Ordering::Relaxed) + 1 == jobs {
                            *end.lock().unwrap() = Instant::now();
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("sqlite worker panicked")?;
        }
        Ok(())
    })?;
    let secs = end.lock().unwrap().duration_since(start).as_secs_f64();
    Ok(secs)
}

fn sqlite_pickup(dir: &Path, workers: usize, jobs: usize, rate: f64) -> Res<Stamps> {
    let path = dir.join("jobs.sqlite");
    let producer = sqlite_open(&path)?;
    let st = Stamps::new(jobs);
    let bell = Bell::default();
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| -> Res<()> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Res<()> {
                    let mut c = sqlite_open(&path)?;
                    while !stop.load(Ordering::Relaxed) {
                        let seen = bell.seen();
                        let Some((id, payload)) = sqlite_claim(&mut c)? else {
                            bell.wait(seen);
                            continue;
                        };
                        Stamps::mark(&st.start[payload_index(&payload)], st.now());
                        sqlite_ack(&c, id)?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        let produced = (|| -> Res<()> {
            let mut insert = producer.prepare("INSERT INTO jobs (payload) VALUES (?1)")?;
            for i in 0..jobs {
                sleep_until(st.due(i, rate));
                Stamps::mark(&st.call[i], st.now());
                insert.execute([index_payload(i)])?;
                Stamps::mark(&st.ret[i], st.now());
                bell.ring();
            }
            wait_for(|| done.load(Ordering::Relaxed) >= jobs);
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        bell.ring();
        for h in handles {
            h.join().expect("sqlite worker panicked")?;
        }
        produced
    })?;
    Ok(st)
}

// ---------------------------------------------------------------- apalis
//
// apalis 1.0 with apalis-sqlite 1.0 (sqlx 0.9), the event-driven set-up
// of its README: an SQLite update hook wakes the worker on every insert
// into Jobs (`poll_with_stream`, what `SqliteStorage::with_callback` does).
// `SqliteStorage::setup` sets `PRAGMA synchronous = OFF` on whichever
// pooled connection runs it; we run it on a pool of its own and open the
// workers' pool with synchronous=FULL, so that every commit is durable.
// One apalis worker with `.concurrency(workers)` runs the handlers.

mod ap {
    use super::*;
    use apalis::prelude::*;
    use apalis_sqlite::SqliteStorage;
    use futures::channel::mpsc;
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqliteOperation, SqlitePoolOptions,
        SqliteSynchronous,
    };
    use std::str::FromStr;

    pub struct St {
        pub done: AtomicUsize,
        pub stamps: Option<Stamps>,
    }

    async fn noop(i: u64, st: Data<Arc<St>>) -> Result<(), BoxDynError> {
        if let Some(s) = &st.stamps {
            Stamps::mark(&s.start[i as usize], s.now());
        }
        st.done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub struct Setup {
        pub pool: sqlx::SqlitePool,
        pub storage: SqliteStorage<u64>,
        pub wake: mpsc::UnboundedReceiver<()>,
        pub queue: String,
    }

    pub async fn open(dir: &Path) -> Res<Setup> {
        let url = format!("sqlite://{}?mode=rwc", dir.join("apalis.sqlite").display());
        let setup = SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await?;
        SqliteStorage::setup(&setup).await?;
        setup.close().await;

        let opts = SqliteConnectOptions::from_str(&url)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let (tx, wake) = mpsc::unbounded::<()>();
        let pool = SqlitePoolOptions::new()
            .after_connect(move |conn, _| {
                let tx = tx.clone();
                Box::pin(async move {
                    let mut h = conn.lock_handle().await?;
                    h.set_update_hook(move |ev| {
                        if ev.operation == SqliteOperation::Insert && ev.table == "Jobs" {
                            let _ = tx.unbounded_send(());
                        }
                    });
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&pool)
            .await?;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await?;
        if sync != 2 || mode != "wal" {
            return Err(format!("apalis pool opened as {mode}/synchronous={sync}").into());
        }
        let storage = SqliteStorage::<u64>::new(&pool);
        // `SqliteStorage::new` names the queue after the job type.
        let queue = std::any::type_name::<u64>().to_string();
        Ok(Setup {
            pool,
            storage,
            wake,
            queue,
        })
    }

    pub async fn push(pool: &sqlx::SqlitePool, queue: &str, ids: &[u64]) -> Res<()> {
        let tasks: Vec<_> = ids
            .iter()
            .map(|i| TaskBuilder::new(serde_json::to_vec(i).expect("json")).build())
            .collect();
        let mut tx = pool.begin().await?;
        apalis_sqlite::queries::push_tasks(&mut *tx, queue, &tasks).await?;
        tx.commit().await?;
        Ok(())
    }

    pub fn spawn_worker(
        s: Setup,
        st: Arc<St>,
        workers: usize,
    ) -> (tokio::task::JoinHandle<()>, sqlx::SqlitePool) {
        let pool = s.pool.clone();
        let backend = s.storage.poll_with_stream(s.wake);
        let worker = WorkerBuilder::new("bench")
            .backend(backend)
            .data(st)
            .concurrency(workers)
            .build(noop);
        let h = tokio::spawn(async move {
            if let Err(e) = worker.run().await {
                eprintln!("apalis worker: {e}");
            }
        });
        (h, pool)
    }

    pub async fn not_done(pool: &sqlx::SqlitePool) -> Res<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE done_at IS NULL")
                .fetch_one(pool)
                .await?,
        )
    }
}

async fn apalis_drain(dir: &Path, workers: usize, jobs: usize) -> Res<f64> {
    let s = ap::open(dir).await?;
    let ids: Vec<u64> = (0..jobs as u64).collect();
    for chunk in ids.chunks(1000) {
        ap::push(&s.pool, &s.queue, chunk).await?;
    }
    let st = Arc::new(ap::St {
        done: AtomicUsize::new(0),
        stamps: None,
    });
    let start = Instant::now();
    let (h, pool) = ap::spawn_worker(s, st.clone(), workers);
    let deadline = start + Duration::from_secs(600);
    while st.done.load(Ordering::Relaxed) < jobs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Every handler has returned; wait for their acks to be committed.
    while ap::not_done(&pool).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    h.abort();
    let left = ap::not_done(&pool).await?;
    pool.close().await;
    if left > 0 {
        return Err(format!("apalis: {left} jobs not done after 600 s").into());
    }
    Ok(secs)
}

async fn apalis_pickup(dir: &Path, workers: usize, jobs: usize, rate: f64) -> Res<String> {
    let s = ap::open(dir).await?;
    let queue = s.queue.clone();
    let st = Arc::new(ap::St {
        done: AtomicUsize::new(0),
        stamps: Some(Stamps::new(jobs)),
    });
    let (h, pool) = ap::spawn_worker(s, st.clone(), workers);
    let stamps = st.stamps.as_ref().expect("stamps");
    for i in 0..jobs {
        tokio::time::sleep_until(stamps.due(i, rate).into()).await;
        Stamps::mark(&stamps.call[i], stamps.now());
        ap::push(&pool, &queue, &[i as u64]).await?;
        Stamps::mark(&stamps.ret[i], stamps.now());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while st.done.load(Ordering::Relaxed) < jobs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let line = stamps.summary_line();
    h.abort();
    pool.close().await;
    Ok(line)
}

// ---------------------------------------------------------------- effectum

fn effectum_bin() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("COMPARE_EFFECTUM_BIN") {
        return Ok(p.into());
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("effectum-jobs");
    let bin = crate_dir.join("target/release/effectum-jobs");
    if !bin.exists() {
        eprintln!("building {} …", crate_dir.display());
        let ok = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["build", "--release", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .status()?
            .success();
        if !ok {
            return Err("could not build compare/effectum-jobs".into());
        }
    }
    Ok(bin)
}

fn effectum_child(args: &[String]) -> Res<String> {
    let out = std::process::Command::new(effectum_bin()?)
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "effectum-jobs {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// ---------------------------------------------------------------- report

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.1} K", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn median<T: Copy>(mut v: Vec<T>, key: impl Fn(&T) -> f64) -> Option<T> {
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v.get(v.len() / 2).copied()
}

fn main() -> Res<()> {
    let repeats = env_f64("COMPARE_REPEATS", 3.0) as usize;
    let only = std::env::var("COMPARE_ONLY").unwrap_or_default();
    let systems = systems();
    let jobs = backlog();
    let rates: Vec<f64> = std::env::var("COMPARE_PICKUP_RATE")
        .unwrap_or_else(|_| "200,50".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&r: &f64| r > 0.0)
        .collect();
    let pickup_secs = env_f64("COMPARE_PICKUP_SECS", 5.0);
    let pickup_workers = env_f64("COMPARE_PICKUP_WORKERS", 4.0) as usize;
    let started = Instant::now();

    println!("## Durability of each row\n");
    for s in &systems {
        println!("- **{}**: {}", s.name(), s.durability());
    }

    if only.is_empty() || only == "drain" {
        println!(
            "\n## Drain a backlog of {jobs} no-op jobs (jobs/s, median of {repeats}; all runs in brackets)\n"
        );
        println!("| system | workers | jobs/s | runs (jobs/s) | walq ÷ system |");
        println!("|---|---:|---:|---|---:|");
        for &w in &workers_list() {
            let mut runs: Vec<Vec<Result<f64, String>>> = vec![Vec::new(); systems.len()];
            for _ in 0..repeats {
                for (k, s) in systems.iter().enumerate() {
                    let dir = tempdir();
                    let r = s.drain(w, jobs, dir.path()).map(|secs| jobs as f64 / secs);
                    match &r {
                        Ok(v) => eprintln!("{} drain {w} workers: {v:.0} jobs/s", s.key()),
                        Err(e) => eprintln!("{} drain {w}: {e}", s.key()),
                    }
                    runs[k].push(r.map_err(|e| e.to_string()));
                }
            }
            let meds: Vec<Option<f64>> = runs
                .iter()
                .map(|r| {
                    median(
                        r.iter().filter_map(|x| x.as_ref().ok().copied()).collect(),
                        |x| *x,
                    )
                })
                .collect();
            let walq = systems
                .iter()
                .position(|s| *s == System::Walq)
                .and_then(|k| meds[k]);
            for (k, s) in systems.iter().enumerate() {
                let all = runs[k]
                    .iter()
                    .map(|r| match r {
                        Ok(v) => fmt_rate(*v),
                        Err(e) => format!("failed: {e}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let ratio = match (walq, meds[k]) {
                    (Some(a), Some(b)) if *s != System::Walq => format!("{:.1}×", a / b),
                    _ => "—".into(),
                };
                println!(
                    "| {} | {w} | {} | {all} | {ratio} |",
                    s.name(),
                    meds[k].map_or("n/a".into(), fmt_rate)
                );
            }
        }
    }

    for &rate in &rates {
        if !(only.is_empty() || only == "pickup") {
            break;
        }
        let pickup_jobs = (rate * pickup_secs) as usize;
        println!(
            "\n## Pickup latency: {pickup_jobs} jobs at {rate} jobs/s, {pickup_workers} workers \
             (the run with the median p50 of {repeats}; first {} jobs are warm-up)\n",
            jobs_common::PICKUP_WARMUP
        );
        println!(
            "| system | p50 | p99 | max | p50 from enqueue's return | p99 from return | jobs measured | not run |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        let mut runs: Vec<Vec<Pickup>> = vec![Vec::new(); systems.len()];
        for _ in 0..repeats {
            for (k, s) in systems.iter().enumerate() {
                let dir = tempdir();
                match s.pickup(pickup_workers, pickup_jobs, rate, dir.path()) {
                    Ok(p) => {
                        eprintln!(
                            "{} pickup {rate}/s: p50 {:.0} µs, p99 {:.0} µs",
                            s.key(),
                            p.call[0],
                            p.call[1]
                        );
                        runs[k].push(p)
                    }
                    Err(e) => eprintln!("{} pickup: {e}", s.key()),
                }
            }
        }
        for (k, s) in systems.iter().enumerate() {
            let all = runs[k]
                .iter()
                .map(|p| fmt_us(p.call[0]))
                .collect::<Vec<_>>()
                .join(", ");
            match median(runs[k].clone(), |p| p.call[0]) {
                Some(p) => println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    s.name(),
                    fmt_us(p.call[0]),
                    fmt_us(p.call[1]),
                    fmt_us(p.call[2]),
                    fmt_us(p.ret[0]),
                    fmt_us(p.ret[1]),
                    p.n,
                    p.missing
                ),
                None => println!("| {} | n/a: failed | | | | | | |", s.name()),
            }
            eprintln!("{} pickup p50 of every run: {all}", s.key());
        }
    }
    println!(
        "\nLatency is from the producer's enqueue call to the handler's first line \
         (the second pair of columns: from enqueue's return). Whole run: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
