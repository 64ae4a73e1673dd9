//! `walq schedules`: the recurring schedules of `schedules.bin`,
//! read-only.

use std::io::Write;

use serde_json::{json, Map, Value};
use walq::inspect::ScheduleView;
use walq::schedule::Missed;

use crate::args::SchedulesArgs;
use crate::fail::{CmdResult, Fail, OK};
use crate::render;

/// Runs `walq schedules`.
pub fn run(a: &SchedulesArgs) -> CmdResult {
    let inspector = super::inspect(&a.dir)?;
    let list = inspector
        .schedule_list()
        .map_err(|e| Fail::reading(&a.dir, &e))?;
    let mut out = std::io::stdout().lock();
    let now = render::now_ms();
    let list = list.unwrap_or_default();
    if list.is_empty() && !a.json {
        writeln!(out, "no schedules")?;
    }
    let width = list.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &list {
        if a.json {
            writeln!(out, "{}", Value::Object(as_json(s, now)))?;
        } else {
            writeln!(out, "{:<width$}  {}", s.name, as_text(s, now))?;
        }
    }
    Ok(OK)
}

/// `cron "0 3 * * *"` or `every 60s`.
fn spec_text(s: &ScheduleView) -> String {
    match (&s.cron, s.every_secs) {
        (Some(cron), _) => format!("cron {cron:?}"),
        (None, Some(secs)) => format!("every {secs}s"),
        (None, None) => "(no spec)".to_string(),
    }
}

/// The policy for missed ticks, as the JSON names it.
fn missed_name(m: Missed) -> &'static str {
    match m {
        Missed::Skip => "skip",
        Missed::RunOnce => "run_once",
    }
}

/// When the next tick is, relative to `now` (ms): due ones say so.
fn next_text(s: &ScheduleView, now: u64) -> String {
    let Some(next) = s.next_tick else {
        return "never (fires no more)".to_string();
    };
    let ms = next.saturating_mul(1000);
    let when = render::relative(ms, now);
    let due = if ms <= now {
        ", due: the next scheduler tick runs it"
    } else {
        ""
    };
    format!("{} ({when}{due})", render::time(ms))
}

/// One line of the text listing, after the name.
fn as_text(s: &ScheduleView, now: u64) -> String {
    let mut policy = missed_name(s.missed).replace('_', "-");
    if s.missed == Missed::Skip {
        policy.push_str(&format!(" (grace {}s)", s.grace_secs));
    }
    if let Some(n) = s.max_attempts {
        policy.push_str(&format!("  attempts {n}"));
    }
    format!(
        "{}  missed {policy}  last {}  next {}  payload {} B {}",
        spec_text(s),
        render::time(s.last_tick.saturating_mul(1000)),
        next_text(s, now),
        s.payload.len(),
        render::payload_short(&s.payload, 40)
    )
}

/// One schedule as a JSON object (times in ms since the epoch).
fn as_json(s: &ScheduleView, now: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(s.name));
    if let Some(cron) = &s.cron {
        m.insert("cron".into(), json!(cron));
    }
    if let Some(secs) = s.every_secs {
        m.insert("every_secs".into(), json!(secs));
    }
    m.insert("missed".into(), json!(missed_name(s.missed)));
    m.insert("grace_secs".into(), json!(s.grace_secs));
    if let Some(n) = s.max_attempts {
        m.insert("max_attempts".into(), json!(n));
    }
    m.insert(
        "last_tick_ms".into(),
        json!(s.last_tick.saturating_mul(1000)),
    );
    let next = s.next_tick.map(|t| t.saturating_mul(1000));
    m.insert("next_tick_ms".into(), json!(next));
    m.insert("due".into(), json!(next.is_some_and(|t| t <= now)));
    m.insert("payload_len".into(), json!(s.payload.len()));
    render::put_bytes(&mut m, "payload", &s.payload);
    m
}
