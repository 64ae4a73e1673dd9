//! `walq import`: adds the jobs and dead letters of an export (docs/cli.md)
//! to a queue, in two passes. The first reads and checks every line and
//! spills each checked item to a file ([`super::spill`]); only when the
//! whole export passed is the target opened, and the second pass reads
//! the items back and writes them. A bad line anywhere leaves the target
//! as it was, and memory holds one line and one item at a time, whatever
//! the export's size.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;

use serde_json::{Map, Value};
use walq::Priority;

use super::limits::{Limits, Sizes};
use super::lines::{self, Lines};
use super::spill::{Replay, Spill};
use super::transfer::{add_dead, add_job, DeadSpec, JobSpec, Target, EXPORT_VERSION};
use crate::args::ImportArgs;
use crate::fail::{CmdResult, Fail, FAILED, OK};
use crate::{progress, render};

/// One item of an export file.
#[derive(Debug, PartialEq)]
pub struct Item {
    /// A dead letter (else a pending job).
    pub dead: bool,
    /// Its queue's name (empty: the default queue).
    pub queue: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The idempotency key, if any.
    pub key: Option<Vec<u8>>,
    /// A dead letter's last error (empty for a job).
    pub error: String,
    /// When a job is due (ms since the epoch).
    pub due_ms: u64,
    /// Attempts a job has left.
    pub attempts_left: u32,
    /// Its priority level.
    pub priority: Priority,
    /// A job's message group, if any.
    pub group: Option<Vec<u8>>,
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

/// What the check of an export found: its items, spilled to disk in two
/// files (dead letters, which are written first, and jobs), and what the
/// target must take.
struct Checked {
    dead: Spill,
    jobs: Spill,
    limits: Limits,
    /// The queues the items go to, in the order first named.
    queues: Vec<String>,
    /// The same, to tell a queue already named.
    named: HashSet<String>,
}

impl Checked {
    /// Nothing checked yet; the spill files made.
    fn new() -> Result<Checked, Fail> {
        let spill = |what| Spill::create(what).map_err(|e| Fail::new(FAILED, e));
        Ok(Checked {
            dead: spill("dead")?,
            jobs: spill("jobs")?,
            limits: Limits::default(),
            queues: Vec::new(),
            named: HashSet::new(),
        })
    }

    /// Checks `it` against the limits no option raises and notes its
    /// queue. `Err` says why no queue takes it.
    fn admit(&mut self, it: &Item) -> Result<(), String> {
        self.limits.admit(&it.sizes())?;
        if !self.named.contains(&it.queue) {
            self.named.insert(it.queue.clone());
            self.queues.push(it.queue.clone());
        }
        Ok(())
    }

    /// Spills `it`, which was admitted.
    fn spill(&mut self, it: &Item) -> Result<(), Fail> {
        let spill = match it.dead {
            true => &mut self.dead,
            false => &mut self.jobs,
        };
        spill.push(it).map_err(|e| Fail::new(FAILED, e))
    }
}

/// Checks an export's header line: `Err` says why it is none.
fn header(m: &Map<String, Value>) -> Result<(), String> {
    match m.get("walq_export").and_then(Value::as_u64) {
        Some(EXPORT_VERSION) => Ok(()),
        Some(v) => Err(format!(
            "export format {v}; this build reads {EXPORT_VERSION}"
        )),
        None => Err("not a walq export (no \"walq_export\" header)".into()),
    }
}

/// Reads and checks the whole export before anything is written: each
/// line must parse and fit the limits no option raises. Each item is
/// spilled once checked, so memory holds one line (at most
/// [`lines::MAX_LINE`] bytes) and one item at a time.
fn check_export(input: Box<dyn BufRead>, name: &str, partial: bool) -> Result<Checked, Fail> {
    let mut checked: Option<Checked> = None;
    // The counts the header gives (an export written by `walq export`
    // has them): a file cut short holds fewer items.
    let mut said: Option<(u64, u64)> = None;
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
        let Some(c) = checked.as_mut() else {
            header(&m).map_err(&at)?;
            let count = |k: &str| m.get(k).and_then(Value::as_u64);
            said = count("jobs").zip(count("dead"));
            checked = Some(Checked::new()?);
            continue;
        };
        let it = item(&m).map_err(&at)?;
        drop(m);
        c.admit(&it).map_err(&at)?;
        c.spill(&it)?;
    }
    let checked =
        checked.ok_or_else(|| Fail::new(FAILED, format!("{name}: empty, not a walq export")))?;
    let held = (checked.jobs.count(), checked.dead.count());
    match said {
        Some((jobs, dead)) if (jobs, dead) != held && !partial => Err(Fail::new(
            FAILED,
            format!(
                "{name}: its header says {jobs} pending jobs and {dead} dead letters, but it holds \
                 {} and {}: it was cut short (or edited); nothing was imported (`--partial` imports an \
                 export filtered on purpose)",
                held.0, held.1
            ),
        )),
        _ => Ok(checked),
    }
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
    let checked = check_export(input, &name, a.partial)?;
    let count = checked.dead.count() + checked.jobs.count();
    // Every byte spilled reaches the file (a full disk is found) before
    // the target is opened.
    let replay = |s: Spill| s.replay().map_err(|e| Fail::new(FAILED, e));
    let spilled = [replay(checked.dead)?, replay(checked.jobs)?];
    let mut target = Target::open(&a.dir, &checked.limits)?;
    let mut added = Added::default();
    let result = check_target(&mut target, &a.dir, &checked.queues)
        .and_then(|()| add_all(&mut target, &a.dir, spilled, count, &mut added));
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

/// The check that needs the target, before anything is written: every
/// queue named can be opened (a store holds at most `MAX_QUEUES` named
/// queues, counting those it has).
fn check_target(t: &mut Target, dir: &Path, queues: &[String]) -> Result<(), Fail> {
    for name in queues {
        t.queue(name).map_err(|e| {
            let f = Fail::operation(dir, &e);
            Fail::new(f.code, format!("{}; nothing was imported", f.message))
        })?;
    }
    Ok(())
}

/// A dead letter whose adding failed after its job's records were written
/// is left in flight on its last attempt, and the next open moves it to
/// the dead letters (`Queue::enqueue_dead_letter`), which its failure says.
fn unfinished_dead_letter(f: Fail) -> Fail {
    let message = format!(
        "{}\nthe dead letter being imported may be left as a job in flight on its last \
         attempt; it is moved to the dead letters when the queue is next opened",
        f.message
    );
    Fail::new(f.code, message)
}

/// Adds the `count` items read back from `spilled` to the target, in
/// order (dead letters first).
fn add_all(
    t: &mut Target,
    dir: &Path,
    spilled: [Replay; 2],
    count: u64,
    added: &mut Added,
) -> Result<(), Fail> {
    let bar = progress::bar(count, "importing", "items");
    for mut items in spilled {
        while let Some(it) = items.next_item().map_err(|e| Fail::new(FAILED, e))? {
            add_one(t, dir, &it, added)?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Adds one item to the target, and counts it.
fn add_one(t: &mut Target, dir: &Path, it: &Item, added: &mut Added) -> Result<(), Fail> {
    let result = if it.dead {
        add_dead(t, &it.dead_spec())
    } else {
        add_job(t, &it.job_spec())
    };
    let result = result.map_err(|e| match it.dead {
        true => unfinished_dead_letter(Fail::operation(dir, &e)),
        false => Fail::operation(dir, &e),
    });
    match result? {
        false => added.duplicates += 1,
        true if it.dead => added.dead += 1,
        true => added.jobs += 1,
    }
    Ok(())
}
