//! `--queue NAME`: a listing narrowed to one queue of the store.

use std::path::Path;

use walq::inspect::Snapshot;

use crate::fail::{Fail, USAGE};

/// Keeps only the jobs and dead letters of queue `name` in `snap` (no
/// name: every queue). A name the store does not know is a usage error
/// that names it and lists the queues it knows.
pub fn only(dir: &Path, snap: &mut Snapshot, name: Option<&str>) -> Result<(), Fail> {
    let Some(name) = name else {
        return Ok(());
    };
    let known = snap.queue_names();
    if !known.contains(name) {
        return Err(Fail::new(USAGE, unknown(dir, name, &known)));
    }
    snap.retain_queue(name);
    Ok(())
}

/// The message for a queue name the store does not know.
fn unknown(dir: &Path, name: &str, known: &std::collections::BTreeSet<String>) -> String {
    let named: Vec<&str> = known
        .iter()
        .map(String::as_str)
        .filter(|n| *n != walq::DEFAULT_QUEUE)
        .collect();
    let which = if named.is_empty() {
        "it has no named queues, only the default queue (`--queue default`)".to_string()
    } else {
        format!(
            "its queues are: {}, {}",
            walq::DEFAULT_QUEUE,
            named.join(", ")
        )
    };
    format!(
        "{}: no queue {name:?} in this store; {which}",
        dir.display()
    )
}
