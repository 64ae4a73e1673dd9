//! `walq dead list|show|redrive|purge`.

use std::io::Write;

use serde_json::Value;
use walq::Durability;

use crate::args::{DeadCmd, DeadTarget};
use crate::fail::{CmdResult, Fail, NOT_FOUND, OK};
use crate::render;

/// Runs a `walq dead` command.
pub fn run(cmd: DeadCmd) -> CmdResult {
    match cmd {
        DeadCmd::List { dir, json, queue } => list(&dir, json, queue.as_deref()),
        DeadCmd::Show { dir, id, json } => show(&dir, id, json),
        DeadCmd::Redrive(t) => change(&t, "redriven", |q, id| q.redrive(id), |q| q.redrive_all()),
        DeadCmd::Purge(t) => change(&t, "purged", |q, id| q.purge(id), |q| q.purge_all()),
    }
}

fn list(dir: &std::path::Path, json: bool, queue: Option<&str>) -> CmdResult {
    let (_, mut snap) = super::snapshot(dir)?;
    super::filter::only(dir, &mut snap, queue)?;
    let mut out = std::io::stdout().lock();
    if !json && snap.dead.is_empty() {
        writeln!(out, "no dead letters")?;
    }
    for d in snap.dead.values() {
        if json {
            writeln!(out, "{}", Value::Object(super::look::dead_json(d)))?;
        } else {
            writeln!(
                out,
                "{:>8}  died {}  attempts {}  error {:?}  {}",
                d.id,
                render::time(d.dead_ms),
                d.attempts,
                d.error,
                render::payload_short(&d.payload, 50)
            )?;
        }
    }
    Ok(OK)
}

fn show(dir: &std::path::Path, id: u64, json: bool) -> CmdResult {
    let (_, snap) = super::snapshot(dir)?;
    let Some(d) = snap.dead.get(&id) else {
        return Err(Fail::new(
            NOT_FOUND,
            format!("{}: no dead letter {id}", dir.display()),
        ));
    };
    super::look::show_dead(&mut std::io::stdout().lock(), d, json)?;
    Ok(OK)
}

type One = fn(&walq::Queue, u64) -> walq::Result<()>;
type All = fn(&walq::Queue) -> walq::Result<usize>;

fn change(t: &DeadTarget, done: &str, one: One, all: All) -> CmdResult {
    // Dead letters are the store's: any queue's handle reaches them all.
    let store = super::open_store(&t.dir, true, Durability::Sync)?;
    let q = store.default_queue();
    let result = match t.id {
        Some(id) if !t.all => one(&q, id).map(|()| 1),
        _ => all(&q),
    };
    let n = result.map_err(|e| Fail::operation(&t.dir, &e))?;
    drop(q);
    super::close_store(&t.dir, store)?;
    let what = if n == 1 {
        "dead letter"
    } else {
        "dead letters"
    };
    writeln!(std::io::stdout().lock(), "{done} {n} {what}")?;
    Ok(OK)
}
