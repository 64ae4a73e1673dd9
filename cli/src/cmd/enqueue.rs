//! `walq enqueue`: jobs from arguments or stdin lines.

use std::io::BufRead;
use std::io::Write;
use std::time::Duration;

use walq::{Durability, EnqueueOptions};

use crate::args::EnqueueArgs;
use crate::fail::{CmdResult, Fail, OK, USAGE};

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
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
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
    let payloads: Vec<String> = if a.payloads.is_empty() {
        let lines: Result<Vec<String>, _> = std::io::stdin().lock().lines().collect();
        lines.map_err(|e| Fail::new(crate::fail::FAILED, format!("reading stdin: {e}")))?
    } else {
        a.payloads.clone()
    };
    // One sync at the end for many jobs; each job synced when only one.
    let durability = if payloads.len() > 1 {
        Durability::Os
    } else {
        Durability::Sync
    };
    let store = super::open_store(&a.dir, false, durability)?;
    let q = super::queue_of(&store, a.queue.as_deref().unwrap_or_default())
        .map_err(|e| Fail::new(USAGE, e.to_string()))?;
    let mut ids = Vec::with_capacity(payloads.len());
    for p in &payloads {
        let done = q
            .enqueue_with(p.as_bytes(), opts.clone())
            .map_err(|e| Fail::operation(&a.dir, &e))?;
        if done.duplicate {
            writeln!(
                std::io::stdout().lock(),
                "job {} already has this key: nothing added",
                done.id
            )?;
        } else {
            ids.push(done.id);
        }
    }
    drop(q);
    super::close_store(&a.dir, store)?;
    match ids.as_slice() {
        [] if payloads.is_empty() => {
            writeln!(std::io::stdout().lock(), "no jobs (stdin was empty)")?
        }
        [] => {}
        [one] => writeln!(std::io::stdout().lock(), "enqueued job {one}")?,
        [first, .., last] => writeln!(
            std::io::stdout().lock(),
            "enqueued {} jobs (ids {first}..={last})",
            ids.len()
        )?,
    }
    Ok(OK)
}
