//! `walq stats`: counts, files and disk use; `--watch` adds rates.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use walq::inspect::{Completion, Inspector, QueueCounts, Snapshot};

use crate::args::StatsArgs;
use crate::fail::{CmdResult, Fail, OK, USAGE};
use crate::render;

/// The numbers `stats` shows.
struct Numbers {
    ready: u64,
    delayed: u64,
    leased: u64,
    dead: u64,
    next_job_id: u64,
    last_lsn: u64,
    segments: u64,
    disk_bytes: u64,
    files: usize,
    damage: u64,
    /// The dead letters' ids (to tell which left between two refreshes).
    dead_ids: BTreeSet<u64>,
    /// Ids the completion file says were purged (dead letters purged and
    /// jobs cancelled, for the dedup window).
    purged_ids: BTreeSet<u64>,
    /// The counts of each queue of the store (with `--queue`, of that one).
    queues: BTreeMap<String, QueueCounts>,
    /// The paused queues (with `--queue`, that one if it is).
    paused: Vec<String>,
}

impl Numbers {
    fn of(snap: &Snapshot) -> Numbers {
        let (ready, delayed, leased) = snap.counts();
        Numbers {
            ready,
            delayed,
            leased,
            dead: snap.dead.len() as u64,
            next_job_id: snap.next_job_id,
            last_lsn: snap.summary.last_lsn,
            segments: snap.summary.segments,
            disk_bytes: snap.files.iter().map(|(_, len)| len).sum(),
            files: snap.files.len(),
            damage: snap.summary.damage,
            dead_ids: snap.dead.keys().copied().collect(),
            purged_ids: snap
                .completions
                .iter()
                .filter(|(_, c)| matches!(c, Completion::Purged { .. }))
                .map(|(id, _)| *id)
                .collect(),
            queues: snap.counts_by_queue(),
            paused: Vec::new(),
        }
    }

    fn backlog(&self) -> u64 {
        self.ready + self.delayed + self.leased
    }
}

/// Rates between two refreshes.
struct Rates {
    enqueued: f64,
    acked: f64,
    backlog: f64,
}

impl Rates {
    /// Enqueued/s from the job ids handed out; finished/s from what left
    /// the backlog without reaching the dead letters. Dead letters that
    /// left the dead letters were redriven (back in the backlog) or purged
    /// (gone without passing through it): the purged ones, which the
    /// completion file names, are not counted as finished.
    fn between(a: &Numbers, b: &Numbers, secs: f64) -> Rates {
        let enq = b.next_job_id.saturating_sub(a.next_job_id) as f64;
        let backlog = b.backlog() as f64 - a.backlog() as f64;
        let dead = b.dead as f64 - a.dead as f64;
        let purged = a
            .dead_ids
            .difference(&b.dead_ids)
            .filter(|id| b.purged_ids.contains(id))
            .count() as f64;
        Rates {
            enqueued: enq / secs,
            acked: ((enq - backlog - dead - purged) / secs).max(0.0),
            backlog: backlog / secs,
        }
    }
}

/// Runs `walq stats`.
pub fn run(a: &StatsArgs) -> CmdResult {
    let interval = Duration::try_from_secs_f64(a.interval)
        .ok()
        .filter(|d| !d.is_zero() && d.as_secs() <= 86_400)
        .ok_or_else(|| {
            Fail::new(
                USAGE,
                "--interval must be more than 0 and at most 86400 seconds",
            )
        })?;
    // Opened again at each refresh: whether a process holds the queue
    // (which a snapshot of a live queue needs to know) may change. The
    // note that it is live is printed once, not at every refresh.
    let mut noted = false;
    let mut read = || {
        let inspector = match noted {
            false => super::inspect(&a.dir)?,
            true => Inspector::open(&a.dir).map_err(|e| Fail::reading(&a.dir, &e))?,
        };
        noted |= inspector.live();
        let mut snap = inspector
            .snapshot()
            .map_err(|e| Fail::reading(&a.dir, &e))?;
        super::filter::only(&a.dir, &mut snap, a.queue.as_deref())?;
        if !a.watch {
            super::warn_damage(&snap);
        }
        let mut numbers = Numbers::of(&snap);
        numbers.paused = paused(&inspector, !a.watch);
        if let Some(q) = &a.queue {
            numbers.queues.retain(|name, _| name == q);
            numbers.paused.retain(|name| name == q);
        }
        Ok::<_, Fail>((inspector.live(), numbers))
    };
    if !a.watch {
        let (live, numbers) = read()?;
        print(a, live, &numbers, None)?;
        return Ok(OK);
    }
    let clear = std::io::stdout().is_terminal() && !a.json;
    let mut prev: Option<(Instant, Numbers)> = None;
    let mut shown = 0;
    loop {
        let now = Instant::now();
        let (live, numbers) = read()?;
        let rates = prev
            .as_ref()
            .map(|(t, p)| Rates::between(p, &numbers, now.duration_since(*t).as_secs_f64()));
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        print(a, live, &numbers, rates.as_ref())?;
        shown += 1;
        if a.count.is_some_and(|c| shown >= c) {
            return Ok(OK);
        }
        prev = Some((now, numbers));
        std::thread::sleep(interval);
    }
}

fn print(a: &StatsArgs, live: bool, n: &Numbers, rates: Option<&Rates>) -> Result<(), Fail> {
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", as_json(a, live, n, rates))?;
        return Ok(());
    }
    let c = render::colour();
    let state = if live {
        render::yellow("live (held by a running process; a snapshot)", c)
    } else {
        "not open".to_string()
    };
    writeln!(out, "queue      {}", a.dir.display())?;
    writeln!(out, "state      {state}")?;
    if let Some(q) = &a.queue {
        writeln!(
            out,
            "only       {q} (ids, LSN, segments and disk are the store's)"
        )?;
    }
    writeln!(out, "ready      {}", n.ready)?;
    writeln!(out, "delayed    {}", n.delayed)?;
    writeln!(out, "leased     {}", n.leased)?;
    let dead = n.dead.to_string();
    let dead = if n.dead > 0 {
        render::red(&dead, c)
    } else {
        dead
    };
    writeln!(out, "dead       {dead}")?;
    writeln!(out, "next id    {}", n.next_job_id)?;
    writeln!(out, "last LSN   {}", n.last_lsn)?;
    writeln!(out, "segments   {}", n.segments)?;
    writeln!(
        out,
        "disk       {} in {} files",
        render::bytes(n.disk_bytes),
        n.files
    )?;
    if n.damage > 0 {
        let d = format!("{} (run `walq verify`)", n.damage);
        writeln!(out, "damage     {}", render::red(&d, c))?;
    }
    if !n.paused.is_empty() {
        let names = n.paused.join(", ");
        writeln!(out, "paused     {}", render::yellow(&names, c))?;
    }
    print_queues(&mut out, n)?;
    if let Some(r) = rates {
        let trend = match r.backlog {
            b if b > 0.0 => "growing",
            b if b < 0.0 => "shrinking",
            _ => "steady",
        };
        writeln!(out, "enqueued/s {:.1}", r.enqueued)?;
        writeln!(out, "acked/s    {:.1}", r.acked)?;
        writeln!(out, "backlog    {:+.1}/s ({trend})", r.backlog)?;
    }
    Ok(())
}

/// The paused queues; none, with a warning on stderr (once: `warn`), when
/// `PAUSED` cannot be read (stats goes on; `walq verify` names the damage).
fn paused(inspector: &Inspector, warn: bool) -> Vec<String> {
    inspector.paused().unwrap_or_else(|e| {
        if warn {
            eprintln!("walq: warning: which queues are paused is unknown: {e}");
        }
        Vec::new()
    })
}

/// The one JSON object of a refresh.
fn as_json(a: &StatsArgs, live: bool, n: &Numbers, rates: Option<&Rates>) -> serde_json::Value {
    let queues: serde_json::Map<String, serde_json::Value> = n
        .queues
        .iter()
        .map(|(name, c)| {
            let v =
                json!({"ready": c.ready, "delayed": c.delayed, "leased": c.leased, "dead": c.dead});
            (name.clone(), v)
        })
        .collect();
    let mut v = json!({
        "dir": a.dir.display().to_string(),
        "live": live,
        "ready": n.ready,
        "delayed": n.delayed,
        "leased": n.leased,
        "dead": n.dead,
        "next_job_id": n.next_job_id,
        "last_lsn": n.last_lsn,
        "segments": n.segments,
        "files": n.files,
        "disk_bytes": n.disk_bytes,
        "damage": n.damage,
        "queues": queues,
        "paused": n.paused,
    });
    if let Some(q) = &a.queue {
        v["queue"] = json!(q);
    }
    if let Some(r) = rates {
        v["enqueued_per_s"] = json!(r.enqueued);
        v["acked_per_s"] = json!(r.acked);
        v["backlog_per_s"] = json!(r.backlog);
    }
    v
}

/// One row per queue, when the store has named queues (and no `--queue`
/// narrowed it to one).
fn print_queues(out: &mut impl Write, n: &Numbers) -> std::io::Result<()> {
    if n.queues.len() < 2 {
        return Ok(());
    }
    let width = n.queues.keys().map(String::len).max().unwrap_or(0).max(5);
    writeln!(
        out,
        "by queue   {:<width$}  {:>8}  {:>8}  {:>8}  {:>8}",
        "name", "ready", "delayed", "leased", "dead"
    )?;
    for (name, c) in &n.queues {
        writeln!(
            out,
            "           {name:<width$}  {:>8}  {:>8}  {:>8}  {:>8}",
            c.ready, c.delayed, c.leased, c.dead
        )?;
    }
    Ok(())
}
