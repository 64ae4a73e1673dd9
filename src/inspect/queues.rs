//! A snapshot's jobs and dead letters queue by queue: the names a store
//! knows, one queue's share of a snapshot, and counts per queue.

use std::collections::{BTreeMap, BTreeSet};

use super::snapshot::{is_head, PendingJob, Snapshot};
use crate::dead::DeadLetter;
use crate::named::DEFAULT_QUEUE;

/// How many jobs of one queue stand where, in a [`Snapshot`] (as
/// [`Snapshot::counts`] counts them, and the dead letters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueCounts {
    /// Ready to be dequeued.
    pub ready: u64,
    /// Waiting for their due time or for an older job of their group.
    pub delayed: u64,
    /// Leased (in flight).
    pub leased: u64,
    /// In the dead letters.
    pub dead: u64,
}

/// The name of the queue `job` belongs to (`"default"` for the default
/// queue, whose jobs carry an empty [`PendingJob::queue`]).
pub fn job_queue(job: &PendingJob) -> &str {
    name_or_default(&job.queue)
}

/// The name of the queue `letter` came from (`"default"` for the
/// default queue).
pub fn dead_queue(letter: &DeadLetter) -> &str {
    name_or_default(&letter.queue)
}

fn name_or_default(name: &str) -> &str {
    if name.is_empty() {
        DEFAULT_QUEUE
    } else {
        name
    }
}

impl Snapshot {
    /// Every queue name the snapshot knows: `"default"`, the queues the
    /// log defines ([`Snapshot::queues`]), and those its jobs and dead
    /// letters name (a job whose queue id no record names is `queue-N`).
    pub fn queue_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.queues.values().cloned().collect();
        names.insert(DEFAULT_QUEUE.to_string());
        names.extend(self.jobs.values().map(|j| job_queue(j).to_string()));
        names.extend(self.dead.values().map(|d| dead_queue(d).to_string()));
        // A queue may be paused before its first job.
        names.extend(self.paused.iter().cloned());
        names
    }

    /// Keeps only the jobs and dead letters of queue `name` (`"default"`:
    /// the default queue). What the files say about the whole store
    /// (`files`, `summary`, `next_job_id`, completions) is kept as it is.
    pub fn retain_queue(&mut self, name: &str) {
        self.jobs.retain(|_, j| job_queue(j) == name);
        self.dead.retain(|_, d| dead_queue(d) == name);
        let dead = &self.dead;
        self.dead_places.retain(|id, _| dead.contains_key(id));
    }

    /// [`QueueCounts`] of every queue of [`Snapshot::queue_names`].
    pub fn counts_by_queue(&self) -> BTreeMap<String, QueueCounts> {
        let mut out: BTreeMap<String, QueueCounts> = self
            .queue_names()
            .into_iter()
            .map(|n| (n, QueueCounts::default()))
            .collect();
        let heads = self.group_heads();
        for job in self.jobs.values() {
            let c = out.entry(job_queue(job).to_string()).or_default();
            if job.leased {
                c.leased += 1;
            } else if job.due_ms > self.taken_ms || !is_head(&heads, job) {
                c.delayed += 1;
            } else {
                c.ready += 1;
            }
        }
        for letter in self.dead.values() {
            out.entry(dead_queue(letter).to_string()).or_default().dead += 1;
        }
        out
    }
}
