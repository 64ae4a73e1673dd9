//! `walq pause` and `walq resume`: stop and restart a queue's deliveries.

use std::io::Write;

use walq::Durability;

use crate::args::PauseArgs;
use crate::fail::{CmdResult, Fail, OK, USAGE};

/// Pauses (`on`) or resumes queue `a.queue` of the store in `a.dir`
/// (`Queue::pause`, written to `PAUSED` before it returns).
pub fn run(a: &PauseArgs, on: bool) -> CmdResult {
    walq::validate_queue_name(&a.queue).map_err(|e| Fail::new(USAGE, e.to_string()))?;
    let store = super::open_store(&a.dir, true, Durability::Sync)?;
    let queue = super::queue_of(&store, &a.queue).map_err(|e| Fail::operation(&a.dir, &e))?;
    let was = queue.is_paused();
    let done = if on { queue.pause() } else { queue.resume() };
    done.map_err(|e| Fail::operation(&a.dir, &e))?;
    super::close_store(&a.dir, store)?;
    let what = match (on, was == on) {
        (true, false) => "paused",
        (true, true) => "was already paused",
        (false, false) => "resumed",
        (false, true) => "was not paused",
    };
    writeln!(std::io::stdout().lock(), "queue {} {what}", a.queue)?;
    Ok(OK)
}
