//! `walq cancel`: take back jobs that wait to run.

use std::io::Write;

use walq::Durability;

use crate::args::CancelArgs;
use crate::fail::{CmdResult, Fail, OK};

/// Cancels each job of `a.ids` in the queue that holds it (found with a
/// read-only look first: a job of a named queue is cancelled through that
/// queue's handle). Stops at the first that cannot be cancelled; those
/// before it stay cancelled.
pub fn run(a: &CancelArgs) -> CmdResult {
    // As every writing command: another user's queue is refused before
    // it is read (exit 6, even when it cannot be read).
    super::refuse_other_owner(&a.dir)?;
    let inspector = super::inspect(&a.dir)?;
    let snap = inspector
        .snapshot_without_payloads()
        .map_err(|e| Fail::reading(&a.dir, &e))?;
    let store = super::open_store(&a.dir, true, Durability::Sync)?;
    let mut out = std::io::stdout().lock();
    for &id in &a.ids {
        // A job the look did not see as pending goes to the default
        // queue, whose refusal says what it is (dead, finished, unknown).
        let queue = snap.jobs.get(&id).map_or("", |j| j.queue.as_str());
        super::queue_of(&store, queue)
            .and_then(|q| q.cancel(id))
            .map_err(|e| Fail::operation(&a.dir, &e))?;
        writeln!(out, "cancelled job {id}")?;
    }
    super::close_store(&a.dir, store)?;
    Ok(OK)
}
