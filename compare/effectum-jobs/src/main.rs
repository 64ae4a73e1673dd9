//! The effectum rows of `compare`'s `jobs` benchmark, in a process of their
//! own (see Cargo.toml for why). The parent runs:
//!
//! - `effectum-jobs drain <workers> <jobs> <dir>`: prefills `jobs` no-op
//!   jobs, then times `workers` concurrent runners until every job's
//!   completion is committed; prints `drain jobs=… secs=… journal=…`.
//! - `effectum-jobs pickup <workers> <jobs> <rate> <dir>`: one producer
//!   adds `jobs` jobs at `rate`/s while the worker runs them; prints the
//!   pickup line of `jobs_common::Stamps::summary_line`.
//!
//! Durability as effectum ships it (0.7.0, `Queue::with_options`): it sets
//! `PRAGMA journal = wal`, which is not a SQLite pragma (the name is
//! `journal_mode`) and is ignored, so the database stays in the default
//! rollback-journal mode (`journal=` in the output reads it back), with
//! `synchronous = NORMAL`. In rollback mode NORMAL still fsyncs the
//! database file at every commit, so an enqueue and a completion are
//! durable when their write transaction commits. One writer thread commits
//! up to 50 queued operations per transaction (its group commit).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use effectum::{Job, JobRunner, Queue, RunningJob, Worker};

#[path = "../../src/jobs_common.rs"]
mod jobs_common;
use jobs_common::{index_payload, payload_index, Stamps};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug)]
struct Ctx {
    done: AtomicUsize,
    stamps: Option<Stamps>,
}

async fn noop(job: RunningJob, ctx: Arc<Ctx>) -> Result<(), String> {
    if let Some(st) = &ctx.stamps {
        Stamps::mark(&st.start[payload_index(&job.payload)], st.now());
    }
    ctx.done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

impl std::fmt::Debug for Stamps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stamps")
    }
}

fn journal_mode(db: &Path) -> Res<String> {
    let c = rusqlite::Connection::open(db)?;
    Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?)
}

/// Rows of jobs not yet completed (a completion deletes the job's row from
/// `active_jobs` in the same transaction that marks it done).
fn active(db: &Path) -> Res<i64> {
    let c = rusqlite::Connection::open(db)?;
    c.busy_timeout(Duration::from_secs(5))?;
    Ok(c.query_row("SELECT COUNT(*) FROM active_jobs", [], |r| r.get(0))?)
}

async fn worker(queue: &Queue, ctx: Arc<Ctx>, workers: u16) -> Res<Worker> {
    let runner = JobRunner::builder("noop", noop).build();
    Ok(Worker::builder(queue, ctx)
        .max_concurrency(workers)
        .jobs([runner])
        .build()
        .await?)
}

async fn drain(workers: u16, jobs: usize, dir: &Path) -> Res<String> {
    let db = dir.join("effectum.db");
    let queue = Queue::new(&db).await?;
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk
            .iter()
            .map(|&i| Job::builder("noop").payload(index_payload(i)).build())
            .collect();
        queue.add_jobs(batch).await?;
    }
    let journal = journal_mode(&db)?;
    let ctx = Arc::new(Ctx {
        done: AtomicUsize::new(0),
        stamps: None,
    });
    let start = Instant::now();
    let w = worker(&queue, ctx.clone(), workers).await?;
    while ctx.done.load(Ordering::Relaxed) < jobs {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Every handler has returned; wait for the completions to be committed.
    let db2 = db.clone();
    while tokio::task::spawn_blocking({
        let db = db2.clone();
        move || active(&db)
    })
    .await??
        > 0
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    w.unregister(Some(Duration::from_secs(5))).await?;
    queue.close(Duration::from_secs(5)).await?;
    Ok(format!("drain jobs={jobs} secs={secs} journal={journal}"))
}

async fn pickup(workers: u16, jobs: usize, rate: f64, dir: &Path) -> Res<String> {
    let db = dir.join("effectum.db");
    let queue = Queue::new(&db).await?;
    let ctx = Arc::new(Ctx {
        done: AtomicUsize::new(0),
        stamps: Some(Stamps::new(jobs)),
    });
    let w = worker(&queue, ctx.clone(), workers).await?;
    let st = ctx.stamps.as_ref().expect("stamps");
    for i in 0..jobs {
        tokio::time::sleep_until(st.due(i, rate).into()).await;
        Stamps::mark(&st.call[i], st.now());
        Job::builder("noop")
            .payload(index_payload(i))
            .add_to(&queue)
            .await?;
        Stamps::mark(&st.ret[i], st.now());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctx.done.load(Ordering::Relaxed) < jobs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let line = st.summary_line();
    w.unregister(Some(Duration::from_secs(5))).await?;
    queue.close(Duration::from_secs(5)).await?;
    Ok(line)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> Res<f64> {
        Ok(args
            .get(i)
            .ok_or("missing argument")?
            .parse::<f64>()
            .map_err(|e| format!("argument {i}: {e}"))?)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let line = match args.first().map(String::as_str) {
        Some("drain") => rt.block_on(drain(
            num(1)? as u16,
            num(2)? as usize,
            Path::new(args.get(3).ok_or("dir")?),
        ))?,
        Some("pickup") => rt.block_on(pickup(
            num(1)? as u16,
            num(2)? as usize,
            num(3)?,
            Path::new(args.get(4).ok_or("dir")?),
        ))?,
        _ => return Err("usage: effectum-jobs drain W N DIR | pickup W N RATE DIR".into()),
    };
    println!("{line}");
    Ok(())
}
