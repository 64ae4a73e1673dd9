//! `walq dump`: every record in log order, for people or as JSON lines.

use std::io::Write;

use serde_json::{json, Map, Value};
use walq::inspect::{DoneRecord, Entry, Problem, Record, RecordView, Visitor};

use crate::args::DumpArgs;
use crate::fail::{CmdResult, Fail, DAMAGED, OK};
use crate::progress::Scanning;
use crate::render;

struct Dump<W: Write> {
    out: W,
    json: bool,
    broken: Option<std::io::Error>,
}

impl<W: Write> Dump<W> {
    fn line(&mut self, text: &str) {
        if self.broken.is_none() {
            if let Err(e) = writeln!(self.out, "{text}") {
                self.broken = Some(e);
            }
        }
    }
}

/// The fields of a record body as JSON. Every kind is named: a new one
/// must say what it shows.
fn fields(e: &Entry<'_>, m: &mut Map<String, Value>) {
    m.insert("id".into(), json!(e.id()));
    match *e {
        Entry::Record(r) => record_fields(r, m),
        Entry::Done(DoneRecord::Done {
            finished_ms,
            result,
            ..
        }) => {
            m.insert("finished_ms".into(), json!(finished_ms));
            render::put_bytes(m, "result", result);
        }
        Entry::Done(DoneRecord::Purged { purged_ms, .. }) => {
            m.insert("purged_ms".into(), json!(purged_ms));
        }
        Entry::Done(DoneRecord::Cleared { .. } | DoneRecord::Horizon { .. }) => {}
    }
}

/// The fields of a log or `dead.wal` record, besides its id.
fn record_fields(r: Record<'_>, m: &mut Map<String, Value>) {
    match r {
        Record::Enqueue(e) => {
            m.insert("enqueued_ms".into(), json!(e.enqueued_ms));
            m.insert("due_ms".into(), json!(e.due_ms));
            m.insert("attempts".into(), json!(e.attempts));
            m.insert("max_attempts".into(), json!(e.max_attempts));
            if !e.key.is_empty() {
                render::put_bytes(m, "key", e.key);
            }
            if e.is_extended() {
                m.insert("queue".into(), json!(e.queue));
                let level = walq::Priority::ALL.get(usize::from(e.priority));
                m.insert("priority".into(), json!(level.map_or("?", |p| p.name())));
            }
            if !e.group.is_empty() {
                render::put_bytes(m, "group", e.group);
            }
            render::put_bytes(m, "payload", e.payload);
        }
        Record::Lease { attempts, .. } => {
            m.insert("attempts".into(), json!(attempts));
        }
        Record::Nack { due_ms, .. } => {
            m.insert("due_ms".into(), json!(due_ms));
        }
        Record::NackErr { due_ms, error, .. } => {
            m.insert("due_ms".into(), json!(due_ms));
            m.insert("error".into(), json!(error));
        }
        Record::Key {
            queue,
            expires_ms,
            key,
            ..
        } => {
            m.insert("expires_ms".into(), json!(expires_ms));
            render::put_bytes(m, "key", key);
            if queue != 0 {
                m.insert("queue".into(), json!(queue));
            }
        }
        Record::Dead(d) => {
            m.insert("enqueued_ms".into(), json!(d.enqueued_ms));
            m.insert("dead_ms".into(), json!(d.dead_ms));
            m.insert("attempts".into(), json!(d.attempts));
            if !d.key.is_empty() {
                render::put_bytes(m, "key", d.key);
            }
            render::put_bytes(m, "error", d.error);
            if d.is_extended() {
                render::put_bytes(m, "queue", d.queue);
                let level = walq::Priority::ALL.get(usize::from(d.priority));
                m.insert("priority".into(), json!(level.map_or("?", |p| p.name())));
            }
            if !d.group.is_empty() {
                render::put_bytes(m, "group", d.group);
            }
            render::put_bytes(m, "payload", d.payload);
        }
        Record::AckMany(entries) => {
            m.insert("count".into(), json!(entries.len()));
            m.insert("ids".into(), json!(entries.ids().collect::<Vec<_>>()));
        }
        Record::LeaseMany(entries) => {
            m.insert("count".into(), json!(entries.len()));
            let leases: Vec<Value> = entries
                .leases()
                .map(|(id, attempts)| json!({"id": id, "attempts": attempts}))
                .collect();
            m.insert("leases".into(), Value::Array(leases));
        }
        Record::QueueDef { queue, name } => {
            m.insert("queue".into(), json!(queue));
            render::put_bytes(m, "name", name);
        }
        Record::Ack { .. } | Record::Removed { .. } => {}
    }
}

/// A record body for people: `id=… key=value …`.
fn text(e: &Entry<'_>) -> String {
    let mut m = Map::new();
    fields(e, &mut m);
    let mut parts = vec![format!("id={}", e.id())];
    for (k, v) in m.iter().filter(|(k, _)| *k != "id") {
        let shown = match (k.as_str(), v) {
            (k, Value::Number(n)) if k.ends_with("_ms") => render::time(n.as_u64().unwrap_or(0)),
            (_, Value::String(s)) if !k.ends_with("_base64") => {
                render::payload_short(s.as_bytes(), 60)
            }
            _ => v.to_string(),
        };
        parts.push(format!("{k}={shown}"));
    }
    parts.join(" ")
}

impl<W: Write> Visitor for Dump<W> {
    fn record(&mut self, r: &RecordView<'_>) {
        let line = if self.json {
            let mut m = Map::new();
            m.insert("file".into(), json!(r.file));
            m.insert("offset".into(), json!(r.offset));
            m.insert("len".into(), json!(r.len));
            m.insert("lsn".into(), json!(r.lsn));
            m.insert("kind".into(), json!(r.entry.name()));
            if r.batch_more {
                m.insert("batch_more".into(), json!(true));
            }
            fields(&r.entry, &mut m);
            Value::Object(m).to_string()
        } else {
            let batch = if r.batch_more { " +batch" } else { "" };
            format!(
                "{} @{:<8} lsn {:<8} {:<8}{batch} {}",
                r.file,
                r.offset,
                r.lsn,
                r.entry.name(),
                text(&r.entry)
            )
        };
        self.line(&line);
    }

    fn problem(&mut self, p: &Problem) {
        let line = if self.json {
            json!({
                "problem": super::verify::severity(p.severity),
                "file": p.file,
                "offset": p.offset,
                "what": p.what,
            })
            .to_string()
        } else {
            format!("!! {}: {p}", super::verify::severity(p.severity))
        };
        self.line(&line);
    }
}

/// Runs `walq dump`.
pub fn run(a: &DumpArgs) -> CmdResult {
    let inspector = super::inspect(&a.dir)?;
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut dump = Dump {
        out,
        json: a.json,
        broken: None,
    };
    let mut scanning = Scanning::new(&a.dir, "dumping", &mut dump);
    let result = inspector.verify(&mut scanning);
    scanning.bar.finish_and_clear();
    let summary = result.map_err(|e| Fail::reading(&a.dir, &e))?;
    dump.out.flush()?;
    if let Some(e) = dump.broken {
        return Err(e.into());
    }
    Ok(if summary.damage == 0 { OK } else { DAMAGED })
}
