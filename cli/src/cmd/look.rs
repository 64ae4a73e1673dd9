//! `walq peek` and `walq show`: jobs, read-only.

use std::io::Write;

use serde_json::{json, Map, Value};
use walq::inspect::{Completion, JobState, PendingJob, Snapshot};
use walq::{DeadLetter, Priority};

use crate::args::{PeekArgs, ShowArgs};
use crate::fail::{CmdResult, Fail, NOT_FOUND, OK};
use crate::render;

/// Runs `walq peek`.
pub fn peek(a: &PeekArgs) -> CmdResult {
    let (_, mut snap) = super::snapshot(&a.dir)?;
    super::filter::only(&a.dir, &mut snap, a.queue.as_deref())?;
    let mut out = std::io::stdout().lock();
    let jobs = snap.in_delivery_order();
    if !a.json && jobs.is_empty() {
        writeln!(out, "no pending jobs")?;
    }
    for job in jobs.into_iter().take(a.n) {
        let state = shown_status(&snap, job.id);
        if a.json {
            writeln!(out, "{}", Value::Object(job_json(job, state)))?;
        } else {
            let due = render::relative(job.due_ms, snap.taken_ms);
            writeln!(
                out,
                "{:>8}  {:<8} due {:<12} attempts {}/{}  {}{}{}",
                job.id,
                state,
                due,
                job.attempts,
                job.max_attempts,
                key_text(job.key.as_deref()),
                level_text(job),
                render::payload_short(&job.payload, 60)
            )?;
        }
    }
    Ok(OK)
}

/// The queue (unless the default), level (unless Normal) and group of a
/// job, for a one-line listing.
fn level_text(job: &PendingJob) -> String {
    let mut out = String::new();
    if !job.queue.is_empty() {
        out.push_str(&format!("queue {}  ", job.queue));
    }
    if job.priority != Priority::Normal {
        out.push_str(&format!("{}  ", job.priority));
    }
    if let Some(g) = &job.group {
        out.push_str(&format!("group {}  ", render::payload(g)));
    }
    out
}

fn key_text(key: Option<&[u8]>) -> String {
    key.map(|k| format!("key {}  ", render::payload(k)))
        .unwrap_or_default()
}

/// The status word of a job state.
pub fn status_name(s: &JobState<'_>) -> &'static str {
    match s {
        JobState::Ready(_) => "ready",
        JobState::Delayed(_) => "delayed",
        // As `Queue::status` names it (`JobStatus::Blocked`): due, but
        // behind an older job of its group. It read "delayed", with a
        // due time in the past.
        JobState::Blocked(_) => "blocked",
        JobState::Leased(_) => "leased",
        JobState::Dead(_) => "dead",
        JobState::Finished(Some(Completion::Done { .. })) => "done",
        JobState::Finished(Some(Completion::Purged { .. })) => "purged",
        JobState::Finished(None) => "finished",
        JobState::Expired => "expired",
        JobState::Unknown => "unknown",
        _ => "other",
    }
}

/// The status word of job `id` as `peek` and `show` print it: as
/// [`status_name`], but `paused` for a ready job of a paused queue
/// (`Queue::pause`: it is due, and not delivered until the resume).
fn shown_status(snap: &Snapshot, id: u64) -> &'static str {
    match snap.state(id) {
        JobState::Ready(job) if snap.paused.contains(walq::inspect::job_queue(job)) => "paused",
        state => status_name(&state),
    }
}

/// A pending job as a JSON object.
pub fn job_json(job: &PendingJob, status: &str) -> Map<String, Value> {
    job_json_with(job, status, &job.payload)
}

/// [`job_json`] with `payload` as the job's payload (read back for a
/// snapshot taken without payloads).
pub fn job_json_with(job: &PendingJob, status: &str, payload: &[u8]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(job.id));
    m.insert("status".into(), json!(status));
    m.insert("attempts".into(), json!(job.attempts));
    m.insert("max_attempts".into(), json!(job.max_attempts));
    m.insert("enqueued_ms".into(), json!(job.enqueued_ms));
    m.insert("due_ms".into(), json!(job.due_ms));
    m.insert("priority".into(), json!(job.priority.name()));
    if !job.queue.is_empty() {
        m.insert("queue".into(), json!(job.queue));
    }
    if let Some(k) = &job.key {
        render::put_bytes(&mut m, "key", k);
    }
    if let Some(g) = &job.group {
        render::put_bytes(&mut m, "group", g);
    }
    render::put_bytes(&mut m, "payload", payload);
    m
}

/// A dead letter as a JSON object.
pub fn dead_json(d: &DeadLetter) -> Map<String, Value> {
    dead_json_with(d, &d.payload)
}

/// [`dead_json`] with `payload` as the letter's payload (read back for a
/// snapshot taken without payloads).
pub fn dead_json_with(d: &DeadLetter, payload: &[u8]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(d.id));
    m.insert("status".into(), json!("dead"));
    m.insert("attempts".into(), json!(d.attempts));
    m.insert("enqueued_ms".into(), json!(d.enqueued_ms));
    m.insert("dead_ms".into(), json!(d.dead_ms));
    m.insert("error".into(), json!(d.error));
    m.insert("priority".into(), json!(d.priority.name()));
    if !d.queue.is_empty() {
        m.insert("queue".into(), json!(d.queue));
    }
    if let Some(k) = &d.key {
        render::put_bytes(&mut m, "key", k);
    }
    render::put_bytes(&mut m, "payload", payload);
    m
}

/// Runs `walq show`.
pub fn show(a: &ShowArgs) -> CmdResult {
    let (_, snap) = super::snapshot(&a.dir)?;
    let state = snap.state(a.id);
    let status = shown_status(&snap, a.id);
    let mut out = std::io::stdout().lock();
    match state {
        JobState::Ready(job)
        | JobState::Delayed(job)
        | JobState::Blocked(job)
        | JobState::Leased(job) => {
            if a.json {
                let mut v = job_json(job, status);
                if let Some(e) = &job.last_error {
                    v.insert("last_error".into(), json!(e));
                }
                writeln!(out, "{}", Value::Object(v))?;
            } else {
                let leased = if job.leased && !snap.summary.live {
                    " (by a process that stopped: released on the next open)"
                } else {
                    ""
                };
                writeln!(out, "job        {}", job.id)?;
                show_queue(&mut out, &job.queue)?;
                writeln!(out, "status     {status}{leased}")?;
                writeln!(out, "attempts   {} of {}", job.attempts, job.max_attempts)?;
                writeln!(out, "enqueued   {}", render::time(job.enqueued_ms))?;
                let due = render::relative(job.due_ms, snap.taken_ms);
                writeln!(out, "due        {} ({due})", render::time(job.due_ms))?;
                show_key(&mut out, job.key.as_deref())?;
                writeln!(out, "priority   {}", job.priority)?;
                if let Some(g) = &job.group {
                    let waits = if snap.waits_for_group(job) {
                        " (waits for an older job of its group)"
                    } else {
                        ""
                    };
                    writeln!(out, "group      {}{waits}", render::payload(g))?;
                }
                if let Some(e) = &job.last_error {
                    writeln!(out, "last error {e}")?;
                }
                writeln!(out, "stored in  {} at byte {}", job.file, job.offset)?;
                writeln!(out, "payload    {}", render::payload(&job.payload))?;
            }
        }
        JobState::Dead(d) => show_dead(&mut out, d, a.json)?,
        JobState::Finished(c) => show_finished(&mut out, a, status, c)?,
        JobState::Expired => show_expired(&mut out, a, status)?,
        JobState::Unknown => {
            return Err(Fail::new(
                NOT_FOUND,
                format!(
                    "{}: no job {} (the next job id is {})",
                    a.dir.display(),
                    a.id,
                    snap.next_job_id
                ),
            ))
        }
        _ => writeln!(out, "job        {}\nstatus     {status}", a.id)?,
    }
    Ok(OK)
}

/// Prints a finished job: done with its result, purged, or plain acked.
fn show_finished(
    out: &mut impl Write,
    a: &ShowArgs,
    status: &str,
    c: Option<&Completion>,
) -> std::io::Result<()> {
    if a.json {
        let mut v = json!({"id": a.id, "status": status});
        if let Some(Completion::Done {
            finished_ms,
            result,
        }) = c
        {
            v["finished_ms"] = json!(finished_ms);
            let (k, r) = render::json_bytes("result", result);
            v[k] = r;
        }
        return writeln!(out, "{v}");
    }
    writeln!(out, "job        {}", a.id)?;
    match c {
        Some(Completion::Done {
            finished_ms,
            result,
        }) => {
            writeln!(out, "status     done at {}", render::time(*finished_ms))?;
            writeln!(out, "result     {}", render::payload(result))
        }
        Some(Completion::Purged { purged_ms }) => writeln!(
            out,
            "status     purged at {} (removed without completing: a purged dead letter or a cancelled job)",
            render::time(*purged_ms)
        ),
        None => writeln!(
            out,
            "status     finished (acked; walq keeps no record of finished jobs without a result)"
        ),
    }
}

/// Prints a finished job whose purge marker may have been dropped.
fn show_expired(out: &mut impl Write, a: &ShowArgs, status: &str) -> std::io::Result<()> {
    if a.json {
        return writeln!(out, "{}", json!({"id": a.id, "status": status}));
    }
    writeln!(out, "job        {}", a.id)?;
    writeln!(
        out,
        "status     expired (finished: acked, cancelled or purged; more than {} jobs were cancelled or purged since, and the oldest of their records were dropped)",
        walq::MAX_PURGE_MARKERS
    )
}

/// The queue line of `show`, for a job of a named queue.
fn show_queue(out: &mut impl Write, queue: &str) -> std::io::Result<()> {
    if queue.is_empty() {
        return Ok(());
    }
    writeln!(out, "queue      {queue}")
}

fn show_key(out: &mut impl Write, key: Option<&[u8]>) -> std::io::Result<()> {
    match key {
        Some(k) => writeln!(out, "key        {}", render::payload(k)),
        None => writeln!(out, "key        (none)"),
    }
}

/// Prints one dead letter, for people or as JSON.
pub fn show_dead(out: &mut impl Write, d: &DeadLetter, json: bool) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", Value::Object(dead_json(d)));
    }
    writeln!(out, "job        {}", d.id)?;
    show_queue(out, &d.queue)?;
    writeln!(out, "status     dead (in the dead letters)")?;
    if d.priority != Priority::Normal {
        writeln!(out, "priority   {}", d.priority)?;
    }
    writeln!(out, "attempts   {}", d.attempts)?;
    writeln!(out, "enqueued   {}", render::time(d.enqueued_ms))?;
    writeln!(out, "died       {}", render::time(d.dead_ms))?;
    writeln!(out, "error      {}", d.error)?;
    show_key(out, d.key.as_deref())?;
    writeln!(out, "payload    {}", render::payload(&d.payload))
}
