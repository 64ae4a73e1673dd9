//! One module per command.

mod bench;
mod cancel;
mod dead;
mod dump;
mod enqueue;
mod import;
mod limits;
mod lines;
mod look;
mod salvage;
mod spill;
mod stats;
mod transfer;
mod verify;

use std::path::Path;

use walq::inspect::{Inspector, Snapshot};
use walq::{Durability, Options, Queue, Store};

use crate::args::Cmd;
use crate::fail::{CmdResult, Fail};

/// Runs a command; its exit code or failure.
pub fn run(cmd: Cmd) -> CmdResult {
    match cmd {
        Cmd::Stats(a) => stats::run(&a),
        Cmd::Peek(a) => look::peek(&a),
        Cmd::Show(a) => look::show(&a),
        Cmd::Verify(a) => verify::run(&a),
        Cmd::Dump(a) => dump::run(&a),
        Cmd::Dead(c) => dead::run(c),
        Cmd::Export(a) => transfer::export(&a),
        Cmd::Import(a) => import::import(&a),
        Cmd::Enqueue(a) => enqueue::run(&a),
        Cmd::Salvage(a) => salvage::run(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Cancel(a) => cancel::run(&a),
    }
}

/// Opens `dir` read-only and says on stderr when a running process holds
/// it (what is shown is then a snapshot that may already be stale).
pub fn inspect(dir: &Path) -> Result<Inspector, Fail> {
    let inspector = Inspector::open(dir).map_err(|e| Fail::reading(dir, &e))?;
    if inspector.live() {
        let who = match walq::inspect::lock_holder(dir) {
            Some(h) => format!(" (pid {})", h.pid),
            None => String::new(),
        };
        eprintln!(
            "walq: note: the queue is live: a running process{who} holds it. What follows \
             was read while it runs, without its lock: a snapshot that may already be stale."
        );
    }
    Ok(inspector)
}

/// A snapshot of `dir`, read-only.
pub fn snapshot(dir: &Path) -> Result<(Inspector, Snapshot), Fail> {
    let inspector = inspect(dir)?;
    let snap = inspector.snapshot().map_err(|e| Fail::reading(dir, &e))?;
    warn_damage(&snap);
    Ok((inspector, snap))
}

/// Warns on stderr when the scan found damage (what is shown skips it).
pub fn warn_damage(snap: &Snapshot) {
    if snap.summary.damage > 0 {
        eprintln!(
            "walq: warning: {} damaged place(s) found and skipped; `walq verify` lists them",
            snap.summary.damage
        );
    }
}

/// Opens the store in `dir` for writing, taking its lock. `existing`:
/// refuse a directory that holds no queue yet (instead of creating one).
/// `Durability::Os` for bulk writes, which sync once at the end.
pub fn open_store(dir: &Path, existing: bool, durability: Durability) -> Result<Store, Fail> {
    open_store_with(dir, existing, Options::default().durability(durability))
}

/// [`open_store`] with `opts` instead of the defaults.
pub fn open_store_with(dir: &Path, existing: bool, opts: Options) -> Result<Store, Fail> {
    if existing {
        // Read-only look first: a typo must not create a queue, and a
        // damaged queue is not changed (the open alone, from a
        // checkpoint, does not read the records it covers).
        let summary = Inspector::open(dir)
            .and_then(|i| i.scan(&mut NoVisit))
            .map_err(|e| Fail::reading(dir, &e))?;
        if summary.damage > 0 {
            return Err(Fail::new(
                crate::fail::DAMAGED,
                format!(
                    "{}: {} damaged place(s) found, so nothing was changed: `walq verify {}` \
                     lists them, `walq salvage {} --into NEW` copies what is intact",
                    dir.display(),
                    summary.damage,
                    dir.display(),
                    dir.display()
                ),
            ));
        }
    }
    if !existing {
        refuse_foreign(dir)?;
    }
    Store::open_with(dir, opts).map_err(|e| Fail::opening(dir, &e))
}

/// Refuses a directory that holds files but none of a queue (no `LOCK`,
/// which a queue's first open creates, and no `.wal` file, which a copy
/// of a queue without its `LOCK` still has): `walq enqueue ~ job` must not
/// scatter a queue's files among a home directory's. A new or empty
/// directory is made a queue.
fn refuse_foreign(dir: &Path) -> Result<(), Fail> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // missing (created by the open) or reported by it
    };
    let mut any = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == walq::LOCK_FILE || name.ends_with(".wal") {
            return Ok(());
        }
        any = true;
    }
    if !any {
        return Ok(());
    }
    Err(Fail::new(
        crate::fail::UNREADABLE,
        format!(
            "{}: holds files but no walq queue (no {} or .wal file); a queue is only \
             created in a new or empty directory",
            dir.display(),
            walq::LOCK_FILE
        ),
    ))
}

/// Syncs and closes a store opened by [`open_store`].
pub fn close_store(dir: &Path, store: Store) -> Result<(), Fail> {
    store
        .sync()
        .and_then(|()| store.close())
        .map_err(|e| Fail::operation(dir, &e))
}

/// The queue `name` of `store`: the default queue for an empty name (as a
/// dead letter names it) or "default".
pub fn queue_of(store: &Store, name: &str) -> walq::Result<Queue> {
    if name.is_empty() {
        Ok(store.default_queue())
    } else {
        store.queue(name)
    }
}

struct NoVisit;
impl walq::inspect::Visitor for NoVisit {}
