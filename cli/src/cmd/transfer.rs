//! `walq export`: pending jobs and dead letters as JSON lines, the format
//! described in docs/cli.md; and the writing of jobs and dead letters into
//! a target queue that `walq import` and `walq salvage` share.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use std::collections::HashMap;
use walq::inspect::PendingJob;

use walq::{DeadLetter, Durability, EnqueueOptions, Priority, Queue, Store};

use super::limits::{Limits, Sizes};
use crate::args::ExportArgs;
use crate::fail::{CmdResult, Fail, FAILED, OK};
use crate::{progress, render};

/// The version of the export format this build writes and reads.
pub const EXPORT_VERSION: u64 = 1;

/// Refuses an output file in the queue's own directory: export only
/// reads the queue, and `-o DIR/0000000001.wal` would overwrite a segment.
fn refuse_inside(output: &Path, dir: &Path) -> Result<(), Fail> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let same = match (parent.canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        let what = format!(
            "{}: the output would be written into the queue directory {}, which export only reads",
            output.display(),
            dir.display()
        );
        return Err(Fail::new(FAILED, what));
    }
    Ok(())
}

/// Opens export's output file: private to its owner (0600, it holds
/// every payload), and never one of the queue's own files by another name
/// (a symbolic or hard link): checked before anything is cut, so a
/// refused output changes no byte.
fn create_output(path: &Path, dir: &Path) -> Result<std::fs::File, Fail> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // A symbolic link is followed, then caught by the inode below when it
    // leads to a file of the queue.
    let fail = |e: std::io::Error| Fail::new(FAILED, format!("{}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        // Cut only once it is known not to be a file of the queue.
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| Fail::new(FAILED, format!("{}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        if let Ok(m) = entry.metadata() {
            if (m.dev(), m.ino()) == (meta.dev(), meta.ino()) {
                return Err(Fail::new(
                    FAILED,
                    format!(
                        "{}: the output is the queue's file {} by another name, which export only reads",
                        path.display(),
                        entry.path().display()
                    ),
                ));
            }
        }
    }
    file.set_len(0).map_err(fail)?;
    Ok(file)
}

/// Runs `walq export`.
pub fn export(a: &ExportArgs) -> CmdResult {
    if let Some(path) = &a.output {
        refuse_inside(path, &a.dir)?;
    }
    let (inspector, snap) = super::snapshot(&a.dir)?;
    let file = match &a.output {
        Some(path) => Some(create_output(path, &a.dir)?),
        None => None,
    };
    let mut out: Box<dyn Write> = match &file {
        Some(f) => Box::new(std::io::BufWriter::new(f)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let header = json!({
        "walq_export": EXPORT_VERSION,
        "source": a.dir.display().to_string(),
        "exported_ms": snap.taken_ms,
        "live": inspector.live(),
        "jobs": snap.jobs.len(),
        "dead": snap.dead.len(),
    });
    writeln!(out, "{header}")?;
    let bar = progress::bar(
        (snap.jobs.len() + snap.dead.len()) as u64,
        "exporting",
        "items",
    );
    // In enqueue order, so that a group's jobs keep theirs on import.
    for job in snap.jobs.values() {
        let mut m = super::look::job_json(job, "pending");
        m.remove("status");
        m.insert("type".into(), json!("job"));
        writeln!(out, "{}", Value::Object(m))?;
        bar.inc(1);
    }
    for d in snap.dead.values() {
        let mut m = super::look::dead_json(d);
        m.remove("status");
        m.insert("type".into(), json!("dead"));
        writeln!(out, "{}", Value::Object(m))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.flush()?;
    drop(out);
    if let (Some(f), Some(path)) = (&file, &a.output) {
        // Durable before it is reported written.
        f.sync_all()
            .map_err(|e| Fail::new(FAILED, format!("{}: {e}", path.display())))?;
    }
    eprintln!(
        "walq: exported {} pending jobs and {} dead letters",
        snap.jobs.len(),
        snap.dead.len()
    );
    Ok(OK)
}

/// The queues of a store written to, by name (empty: the default queue),
/// each opened once.
pub struct Target {
    store: Store,
    queues: HashMap<String, Queue>,
}

impl Target {
    /// Opens the store in `dir` for bulk writes, with `limits` (and says
    /// so on stderr when they are not the defaults).
    pub fn open(dir: &Path, limits: &Limits) -> Result<Target, Fail> {
        let opts = limits.options().durability(Durability::Os);
        let store = super::open_store_with(dir, false, opts)?;
        if limits.raised() {
            eprintln!(
                "walq: note: an item is over the default limits: {} was opened with \
                 max_payload {} and segment_size {}; open it with at least these \
                 (Options::max_payload, Options::segment_size)",
                dir.display(),
                limits.max_payload(),
                limits.segment_size()
            );
        }
        Ok(Target {
            store,
            queues: HashMap::new(),
        })
    }

    /// The queue `name`.
    pub fn queue(&mut self, name: &str) -> walq::Result<&Queue> {
        if !self.queues.contains_key(name) {
            let q = super::queue_of(&self.store, name)?;
            self.queues.insert(name.to_string(), q);
        }
        Ok(&self.queues[name])
    }

    /// Syncs and closes the store.
    pub fn close(self, dir: &Path) -> Result<(), Fail> {
        drop(self.queues);
        super::close_store(dir, self.store)
    }
}

/// A dead letter to add: its queue, level, payload, key and error.
pub struct DeadSpec<'a> {
    /// Its queue's name (empty: the default queue).
    pub queue: &'a str,
    /// Its priority level (a redrive returns it at this level).
    pub priority: Priority,
    /// The payload.
    pub payload: &'a [u8],
    /// The idempotency key, if any.
    pub key: Option<&'a [u8]>,
    /// The last error.
    pub error: &'a str,
}

impl<'a> DeadSpec<'a> {
    /// The spec of a dead letter found in a snapshot (its group is not
    /// kept: a dead letter is rebuilt without one).
    pub fn of(d: &'a DeadLetter) -> DeadSpec<'a> {
        DeadSpec {
            queue: &d.queue,
            priority: d.priority,
            payload: &d.payload,
            key: d.key.as_deref(),
            error: &d.error,
        }
    }

    /// What the target's limits must admit of it.
    pub fn sizes(&self) -> Sizes<'a> {
        Sizes {
            queue: self.queue,
            payload: self.payload.len() as u64,
            key: self.key.map(<[u8]>::len),
            group: None,
        }
    }
}

/// Adds a dead letter: enqueued with one attempt, leased and failed with
/// its error. Its queue must have no other ready job (checked by callers).
pub fn add_dead(t: &mut Target, d: &DeadSpec<'_>) -> walq::Result<bool> {
    let q = t.queue(d.queue)?;
    let (payload, error) = (d.payload, d.error);
    let mut opts = EnqueueOptions::new().max_attempts(1).priority(d.priority);
    let key = d.key;
    if let Some(k) = key {
        opts = opts.idempotency_key(k);
    }
    let added = q.enqueue_with(payload, opts)?;
    if added.duplicate {
        return Ok(false);
    }
    let mut others = Vec::new();
    while let Some(job) = q.dequeue_timeout(Duration::ZERO)? {
        if job.id() == added.id {
            q.fail(job.receipt(), error)?;
            break;
        }
        others.push(job); // not ours: callers make sure there is none
    }
    for job in others {
        q.nack(
            job.receipt(),
            walq::Retry::After(Duration::ZERO),
            "released by walq import",
        )?;
    }
    Ok(true)
}

/// A pending job to add: its queue, what is left of its delay and
/// attempts, and its key, level and group.
pub struct JobSpec<'a> {
    /// Its queue's name (empty: the default queue).
    pub queue: &'a str,
    /// The payload.
    pub payload: &'a [u8],
    /// The idempotency key, if any.
    pub key: Option<&'a [u8]>,
    /// When it is due (ms since the epoch).
    pub due_ms: u64,
    /// Attempts it has left.
    pub attempts_left: u32,
    /// Its priority level.
    pub priority: Priority,
    /// Its message group, if any.
    pub group: Option<&'a [u8]>,
}

impl<'a> JobSpec<'a> {
    /// The spec of a job found in a snapshot.
    pub fn of(j: &'a PendingJob) -> JobSpec<'a> {
        JobSpec {
            queue: &j.queue,
            payload: &j.payload,
            key: j.key.as_deref(),
            due_ms: j.due_ms,
            attempts_left: j.max_attempts.saturating_sub(j.attempts).max(1),
            priority: j.priority,
            group: j.group.as_deref(),
        }
    }

    /// What the target's limits must admit of it.
    pub fn sizes(&self) -> Sizes<'a> {
        Sizes {
            queue: self.queue,
            payload: self.payload.len() as u64,
            key: self.key.map(<[u8]>::len),
            group: self.group.map(<[u8]>::len),
        }
    }
}

/// Adds a pending job to its queue; false if its key was already known.
pub fn add_job(t: &mut Target, job: &JobSpec<'_>) -> walq::Result<bool> {
    let q = t.queue(job.queue)?;
    let delay = Duration::from_millis(job.due_ms.saturating_sub(render::now_ms()));
    let mut opts = EnqueueOptions::new()
        .delay(delay)
        .max_attempts(job.attempts_left.min(walq::MAX_ATTEMPTS_LIMIT))
        .priority(job.priority);
    if let Some(k) = job.key {
        opts = opts.idempotency_key(k);
    }
    if let Some(g) = job.group {
        opts = opts.group(g);
    }
    Ok(!q.enqueue_with(job.payload, opts)?.duplicate)
}
