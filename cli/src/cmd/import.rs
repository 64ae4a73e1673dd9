//! `walq import`: adds the jobs and dead letters of an export (docs/cli.md)
//! to a queue. Every line is read and checked before the target is
//! opened, so a bad line anywhere leaves the target as it was.

use std::io::{BufRead, Write};
use std::path::Path;

use serde_json::{Map, Value};
use walq::Priority;

use super::limits::{Limits, Sizes};
use super::lines::{self, Lines};
use super::transfer::{add_dead, add_job, DeadSpec, JobSpec, Target, EXPORT_VERSION};
use crate::args::ImportArgs;
use crate::fail::{CmdResult, Fail, FAILED, OK};
use crate::{progress, render};

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
