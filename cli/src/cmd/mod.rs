//! One module per command.

mod dump;
mod look;
mod stats;
mod verify;

use std::path::Path;

use walq::inspect::{Inspector, Snapshot};

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
    }
}

/// Opens `dir` read-only and says on stderr when a running process holds
/// it (what is shown is then a snapshot that may already be stale).
pub fn inspect(dir: &Path) -> Result<Inspector, Fail> {
    let inspector = Inspector::open(dir).map_err(|e| Fail::reading(dir, &e))?;
    if inspector.live() {
        let who = match walq::inspect::lock_holder(dir) {
            Some(h) => format!(" (process {})", h.pid),
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
