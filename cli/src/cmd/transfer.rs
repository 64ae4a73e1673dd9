//! `walq export` and `walq import`: pending jobs and dead letters as JSON
//! lines, the format described in docs/cli.md.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};
use std::collections::HashMap;
use walq::inspect::PendingJob;

use walq::{DeadLetter, Durability, EnqueueOptions, Priority, Queue, Store};

use super::limits::{Limits, Sizes};
use super::lines::{self, Lines};
use crate::args::{ExportArgs, ImportArgs};
use crate::fail::{CmdResult, Fail, FAILED, OK};
use crate::{progress, render};

/// The version of the export format this build writes and reads.
const EXPORT_VERSION: u64 = 1;

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

/// One item of an export file.
struct Item {
    dead: bool,
    /// Its queue's name (empty: the default queue).
    queue: String,
    payload: Vec<u8>,
    key: Option<Vec<u8>>,
    error: String,
    due_ms: u64,
    attempts_left: u32,
    priority: Priority,
    group: Option<Vec<u8>>,
}

impl Item {
    /// What the target's limits must admit of it: what is written.
    fn sizes(&self) -> Sizes<'_> {
        if self.dead {
            self.dead_spec().sizes()
        } else {
            self.job_spec().sizes()
        }
    }

    /// It as a dead letter to add.
    fn dead_spec(&self) -> DeadSpec<'_> {
        DeadSpec {
            queue: &self.queue,
            priority: self.priority,
            payload: &self.payload,
            key: self.key.as_deref(),
            error: &self.error,
        }
    }

    /// It as a pending job to add.
    fn job_spec(&self) -> JobSpec<'_> {
        JobSpec {
            queue: &self.queue,
            payload: &self.payload,
            key: self.key.as_deref(),
            due_ms: self.due_ms,
            attempts_left: self.attempts_left,
            priority: self.priority,
            group: self.group.as_deref(),
        }
    }
}

fn field_u64(m: &Map<String, Value>, name: &str) -> Result<u64, String> {
    m.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("\"{name}\" is missing or not a whole number"))
}

fn item(m: &Map<String, Value>) -> Result<Item, String> {
    let dead = match m.get("type").and_then(Value::as_str) {
        Some("job") => false,
        Some("dead") => true,
        _ => return Err("\"type\" must be \"job\" or \"dead\"".into()),
    };
    let payload = render::bytes_from_json(m, "payload")?.ok_or("\"payload\" is missing")?;
    let key = render::bytes_from_json(m, "key")?;
    let error = match render::bytes_from_json(m, "error")? {
        Some(e) => String::from_utf8_lossy(&e).into_owned(),
        None if dead => return Err("\"error\" is missing".into()),
        None => String::new(),
    };
    let (due_ms, attempts_left) = if dead {
        (0, 1)
    } else {
        let max = field_u64(m, "max_attempts")?;
        let made = field_u64(m, "attempts")?;
        let left = u32::try_from(max.saturating_sub(made).max(1)).unwrap_or(u32::MAX);
        (field_u64(m, "due_ms")?, left)
    };
    let priority = match m.get("priority") {
        None => Priority::Normal,
        Some(Value::String(p)) => p.parse().map_err(|e: walq::Error| e.to_string())?,
        Some(_) => return Err("\"priority\" must be low, normal, high or urgent".into()),
    };
    let group = render::bytes_from_json(m, "group")?;
    let queue = match m.get("queue") {
        None => String::new(),
        Some(Value::String(q)) => q.clone(),
        Some(_) => return Err("\"queue\" must be a queue name".into()),
    };
    Ok(Item {
        dead,
        queue,
        payload,
        key,
        error,
        due_ms,
        attempts_left,
        priority,
        group,
    })
}

/// Reads and checks the whole export before anything is written: each
/// line must parse and fit the limits no option raises. Returns the items
/// and the limits that take them all. No line longer than the longest an
/// export writes ([`lines::MAX_LINE`]) is read, but the items are held in
/// memory, their payloads with them (docs/cli.md says so).
fn read_items(input: Box<dyn BufRead>, name: &str) -> Result<(Vec<Item>, Limits), Fail> {
    let mut items = Vec::new();
    let mut limits = Limits::default();
    let mut header = false;
    let mut lines = Lines::new(input, lines::MAX_LINE);
    let mut line = Vec::new();
    loop {
        let read = lines.next_line(&mut line);
        let i = lines.number;
        let at = |what: String| Fail::new(FAILED, format!("{name}: line {i}: {what}"));
        if !read.map_err(&at)? {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_slice(&line).map_err(|e| at(e.to_string()))?;
        let Value::Object(m) = value else {
            return Err(at("not a JSON object".into()));
        };
        if !header {
            match m.get("walq_export").and_then(Value::as_u64) {
                Some(EXPORT_VERSION) => {
                    header = true;
                    continue;
                }
                Some(v) => return Err(at(format!("export format {v}; this build reads 1"))),
                None => return Err(at("not a walq export (no \"walq_export\" header)".into())),
            }
        }
        let it = item(&m).map_err(&at)?;
        limits.admit(&it.sizes()).map_err(&at)?;
        items.push(it);
    }
    if !header {
        return Err(Fail::new(
            FAILED,
            format!("{name}: empty, not a walq export"),
        ));
    }
    Ok((items, limits))
}

/// What an import added.
#[derive(Default)]
pub struct Added {
    /// Pending jobs added.
    pub jobs: u64,
    /// Dead letters added.
    pub dead: u64,
    /// Items skipped: their idempotency key was already known.
    pub duplicates: u64,
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

/// Runs `walq import`.
pub fn import(a: &ImportArgs) -> CmdResult {
    let (input, name): (Box<dyn BufRead>, String) = match &a.input {
        Some(p) => (
            Box::new(std::io::BufReader::new(std::fs::File::open(p).map_err(
                |e| Fail::new(crate::fail::UNREADABLE, format!("{}: {e}", p.display())),
            )?)),
            p.display().to_string(),
        ),
        None => (Box::new(std::io::stdin().lock()), "stdin".into()),
    };
    let (items, limits) = read_items(input, &name)?;
    let mut target = Target::open(&a.dir, &limits)?;
    let mut added = Added::default();
    let result = add_all(&mut target, &a.dir, &items, &mut added);
    // What was added before a failure is synced and counted as well.
    let closed = target.close(&a.dir);
    match (result, closed) {
        (Ok(()), Ok(())) => {}
        (Ok(()), Err(f)) => return Err(f),
        (Err(f), _) if added.jobs + added.dead == 0 => return Err(f),
        (Err(f), closed) => return Err(f.after_adding(&format!("imported {added}"), closed)),
    }
    writeln!(std::io::stdout().lock(), "imported {added}")?;
    Ok(OK)
}

impl std::fmt::Display for Added {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pending jobs and {} dead letters",
            self.jobs, self.dead
        )?;
        if self.duplicates > 0 {
            let n = self.duplicates;
            write!(f, " ({n} skipped: their key was already known)")?;
        }
        Ok(())
    }
}

/// The checks that need the target, before anything is written: every
/// item's queue can be opened (a store holds at most `MAX_QUEUES` named
/// queues, counting those it has), and the queues of dead letters have no
/// ready job.
fn check_target(t: &mut Target, dir: &Path, items: &[Item]) -> Result<(), Fail> {
    let mut busy = false;
    for it in items {
        let q = t.queue(&it.queue).map_err(|e| {
            let f = Fail::operation(dir, &e);
            Fail::new(f.code, format!("{}; nothing was imported", f.message))
        })?;
        busy |= it.dead && q.stats().ready > 0;
    }
    if busy {
        return Err(Fail::new(
            FAILED,
            format!(
                "{}: dead letters can only be imported into a queue with no ready jobs \
                 (they are made by leasing and failing a job); nothing was imported",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// A dead letter is added by enqueueing, leasing and failing a job: one
/// whose adding failed part way may be left leased (and ready again once
/// its lease ends), which its failure says.
fn leased_dead_letter(f: Fail) -> Fail {
    let message = format!(
        "{}\nthe dead letter being imported may be left as a leased job, delivered again \
         once its lease ends (`walq stats` counts it as leased)",
        f.message
    );
    Fail::new(f.code, message)
}

/// Adds every item to the target, dead letters first.
fn add_all(t: &mut Target, dir: &Path, items: &[Item], added: &mut Added) -> Result<(), Fail> {
    check_target(t, dir, items)?;
    let bar = progress::bar(items.len() as u64, "importing", "items");
    // Dead letters first, while no other job is ready.
    for it in items
        .iter()
        .filter(|i| i.dead)
        .chain(items.iter().filter(|i| !i.dead))
    {
        let result = if it.dead {
            add_dead(t, &it.dead_spec())
        } else {
            add_job(t, &it.job_spec())
        };
        let result = result.map_err(|e| match it.dead {
            true => leased_dead_letter(Fail::operation(dir, &e)),
            false => Fail::operation(dir, &e),
        });
        match result? {
            false => added.duplicates += 1,
            true if it.dead => added.dead += 1,
            true => added.jobs += 1,
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}
