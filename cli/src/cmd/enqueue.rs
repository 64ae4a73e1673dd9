//! `walq enqueue`: jobs from arguments or stdin lines.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::time::Duration;

use walq::{Durability, EnqueueOptions, Queue};

use crate::args::EnqueueArgs;
use crate::fail::{CmdResult, Fail, FAILED, OK, USAGE};

/// Parses `500ms`, `30s`, `10m`, `2h`, `1d` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, Fail> {
    let bad = || {
        Fail::new(
            USAGE,
            format!("not a duration: {text:?} (try 500ms, 30s, 10m, 2h)"),
        )
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => return Err(bad()),
    };
    // Every number of seconds parses; only one past what a `Duration`
    // holds does not fit.
    Duration::try_from_secs_f64(secs).map_err(|_| {
        Fail::new(
            USAGE,
            format!(
                "duration too large: {text:?} (the longest is {}s)",
                Duration::MAX.as_secs()
            ),
        )
    })
}

/// Runs `walq enqueue`.
pub fn run(a: &EnqueueArgs) -> CmdResult {
    if a.key.is_some() && a.payloads.len() != 1 {
        return Err(Fail::new(USAGE, "--key needs exactly one payload argument"));
    }
    let mut opts = EnqueueOptions::new();
    if let Some(d) = &a.delay {
        opts = opts.delay(parse_duration(d)?);
    }
    if let Some(n) = a.max_attempts {
        opts = opts.max_attempts(n);
    }
    if let Some(k) = &a.key {
        opts = opts.idempotency_key(k);
    }
    if let Some(p) = &a.priority {
        let level: walq::Priority = p
            .parse()
            .map_err(|e: walq::Error| Fail::new(USAGE, e.to_string()))?;
        opts = opts.priority(level);
    }
    if let Some(g) = &a.group {
        opts = opts.group(g);
    }
    // Bad options are a usage error before anything is opened: the queue
    // is not created for a command that cannot enqueue into it.
    opts.validate()
        .map_err(|e| Fail::new(USAGE, e.to_string()))?;
    if let Some(name) = a.queue.as_deref().filter(|n| !n.is_empty()) {
        walq::validate_queue_name(name).map_err(|e| Fail::new(USAGE, e.to_string()))?;
    }
    let store = super::open_store(&a.dir, false, Durability::Os)?;
    let q = super::queue_of(&store, a.queue.as_deref().unwrap_or_default())
        .map_err(|e| Fail::new(USAGE, e.to_string()))?;
    let mut added = Added::default();
    let fed = if a.payloads.is_empty() {
        from_stdin(&a.dir, &q, &opts, &mut added)
    } else {
        a.payloads
            .iter()
            .try_for_each(|p| add(&a.dir, &q, p.as_bytes(), &opts, &mut added))
    };
    drop(q);
    // What was added before a failure is synced and counted as well: the
    // failure's message says how many jobs went in.
    let closed = super::close_store(&a.dir, store);
    match (fed, closed) {
        (Ok(()), Ok(())) => {}
        (Ok(()), Err(f)) => return Err(f),
        (Err(f), closed) => return Err(partial(f, &added, closed)),
    }
    added.report(a.payloads.is_empty())?;
    Ok(OK)
}

/// What an enqueue added so far.
#[derive(Default)]
struct Added {
    first: Option<u64>,
    last: u64,
    jobs: u64,
    duplicates: u64,
    /// Empty stdin lines, skipped.
    blank: u64,
}

impl Added {
    /// The ids added, as a phrase.
    fn phrase(&self) -> String {
        match (self.jobs, self.first) {
            (1, Some(id)) => format!("job {id}"),
            (n, Some(first)) => format!("{n} jobs (ids {first}..={})", self.last),
            _ => "no job".to_string(),
        }
    }

    fn report(&self, stdin: bool) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.blank > 0 {
            eprintln!("walq: skipped {} empty line(s)", self.blank);
        }
        if self.jobs > 0 {
            writeln!(out, "enqueued {}", self.phrase())?;
        } else if stdin && self.duplicates == 0 {
            writeln!(out, "no jobs (stdin held no line)")?;
        }
        Ok(())
    }
}

/// Enqueues one payload, saying so when its key was already known.
fn add(
    dir: &Path,
    q: &Queue,
    payload: &[u8],
    opts: &EnqueueOptions,
    added: &mut Added,
) -> Result<(), Fail> {
    let done = q
        .enqueue_with(payload, opts.clone())
        .map_err(|e| Fail::operation(dir, &e))?;
    if done.duplicate {
        added.duplicates += 1;
        let mut out = std::io::stdout().lock();
        writeln!(out, "job {} already has this key: nothing added", done.id)?;
    } else {
        added.first.get_or_insert(done.id);
        added.last = done.id;
        added.jobs += 1;
    }
    Ok(())
}

/// Enqueues each line of stdin as it arrives (empty lines are skipped),
/// reading no line past the payload limit. What was added is synced
/// before the command waits for more input, so a slow producer's jobs
/// are durable without waiting for the end of its input.
fn from_stdin(dir: &Path, q: &Queue, opts: &EnqueueOptions, added: &mut Added) -> Result<(), Fail> {
    let limit = walq::DEFAULT_MAX_PAYLOAD;
    let mut input = std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock());
    let mut line = Vec::new();
    for number in 1u64.. {
        line.clear();
        let read = (&mut input)
            .take(limit + 2)
            .read_until(b'\n', &mut line)
            .map_err(|e| Fail::new(FAILED, format!("reading stdin: {e}")))?;
        if read == 0 {
            return Ok(());
        }
        let ended = line.last() == Some(&b'\n');
        if ended {
            line.pop();
        }
        if line.len() as u64 > limit {
            let what =
                format!("stdin line {number}: longer than the payload limit of {limit} bytes");
            return Err(Fail::new(FAILED, what));
        }
        if line.is_empty() {
            added.blank += 1;
        } else {
            let at = |f: Fail| Fail::new(f.code, format!("stdin line {number}: {}", f.message));
            add(dir, q, &line, opts, added).map_err(at)?;
        }
        if input.buffer().is_empty() {
            q.sync().map_err(|e| Fail::operation(dir, &e))?;
        }
    }
    Ok(())
}

/// The failure `f` of an enqueue that added `added` first, whose close
/// (and sync) then ended with `closed`.
fn partial(f: Fail, added: &Added, closed: Result<(), Fail>) -> Fail {
    if added.jobs == 0 {
        return f;
    }
    f.after_adding(&format!("enqueued {}", added.phrase()), closed)
}
