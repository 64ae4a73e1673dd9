//! The queue's state rebuilt from a read-only scan, with the replay rules
//! of `docs/format.md`: records in LSN order, a dead letter wins over a
//! job's log records with smaller LSNs, an unfinished batch counts for
//! nothing.

use std::collections::BTreeMap;

use super::deadread::DeadPlace;
use super::entry::{Entry, FileRole, Problem, RecordView, Visitor};
use super::scan::ScanSummary;
use crate::dead::DeadLetter;
use crate::format::done::DoneRecord;
use crate::format::record::{DeadRec, Record};
use crate::priority::Priority;

/// A job that is not finished: ready, delayed or leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJob {
    /// Job id.
    pub id: u64,
    /// When it was first enqueued (ms since the epoch).
    pub enqueued_ms: u64,
    /// When it is (or was) due (ms since the epoch).
    pub due_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts allowed before the dead letters.
    pub max_attempts: u32,
    /// The idempotency key, if any.
    pub key: Option<Vec<u8>>,
    /// The priority level.
    pub priority: Priority,
    /// The message group, if any.
    pub group: Option<Vec<u8>>,
    /// The name of its queue (empty: the default queue, as in
    /// [`DeadLetter::queue`]; `queue-N` if the log names no queue N).
    pub queue: String,
    /// The payload; empty in a snapshot taken without payloads
    /// ([`Inspector::snapshot_without_payloads`](super::Inspector::snapshot_without_payloads)),
    /// where [`PayloadReader::read`](super::PayloadReader::read) reads it.
    pub payload: Vec<u8>,
    /// The payload's length in bytes (also when the payload was left out).
    pub payload_len: u64,
    /// Leased when the snapshot was taken (by the running process, or by
    /// one that stopped: then the lease is released on the next open).
    pub leased: bool,
    /// The segment holding the job's newest full record.
    pub file: String,
    /// Its byte offset.
    pub offset: u64,
    /// The error text of its last failed attempt, if that attempt's nack
    /// gave one (NackErr records; [`crate::Queue::last_error`]).
    pub last_error: Option<String>,
}

/// What `done.rec` says about a finished job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Completed with a result.
    Done {
        /// When (ms since the epoch).
        finished_ms: u64,
        /// The result bytes.
        result: Vec<u8>,
    },
    /// A dead letter that was purged.
    Purged {
        /// When (ms since the epoch).
        purged_ms: u64,
    },
}

/// Where a job stands in a [`Snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobState<'a> {
    /// Ready to be dequeued.
    Ready(&'a PendingJob),
    /// Waiting for its due time.
    Delayed(&'a PendingJob),
    /// Due, but waiting behind an older unfinished job of its message
    /// group: what [`crate::Queue::status`] reads as
    /// [`crate::JobStatus::Blocked`] (one that also waits for a due time
    /// of its own is [`JobState::Delayed`] until then, as there).
    /// [`Snapshot::counts`] counts it as delayed, as [`crate::Stats`] does.
    Blocked(&'a PendingJob),
    /// Leased.
    Leased(&'a PendingJob),
    /// In the dead letters.
    Dead(&'a DeadLetter),
    /// Finished, with what `done.rec` keeps about it, if anything (a
    /// plain ack keeps nothing).
    Finished(Option<&'a Completion>),
    /// Finished, without a record, at or below [`Snapshot::horizon`]:
    /// completed, cancelled or purged, no longer known which.
    Expired,
    /// No job with this id was ever enqueued.
    Unknown,
}

/// The queue as a read-only scan found it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When the snapshot was taken (ms since the epoch).
    pub taken_ms: u64,
    /// Unfinished jobs by id.
    pub jobs: BTreeMap<u64, PendingJob>,
    /// Dead letters by id. In a snapshot taken without payloads
    /// ([`Inspector::snapshot_without_payloads`](super::Inspector::snapshot_without_payloads))
    /// each [`DeadLetter::payload`] is empty, and
    /// [`DeadPayloadReader::read`](super::DeadPayloadReader::read) reads
    /// it from the place [`Snapshot::dead_places`] names.
    pub dead: BTreeMap<u64, DeadLetter>,
    /// Where each dead letter's record is in `dead.wal`, and how long its
    /// payload is, by id (the same ids as [`Snapshot::dead`]).
    pub dead_places: BTreeMap<u64, DeadPlace>,
    /// Results and purge markers of finished jobs, by id.
    pub completions: BTreeMap<u64, Completion>,
    /// The highest job id whose purge marker was dropped (the last
    /// Horizon record of `done.rec`; 0: none). The queue itself also
    /// drops markers past [`crate::MAX_PURGE_MARKERS`] on open, which a
    /// read-only snapshot does not: it shows every marker the file holds.
    pub horizon: u64,
    /// The id the next enqueued job would get (at least).
    pub next_job_id: u64,
    /// Every file's name and length as read.
    pub files: Vec<(String, u64)>,
    /// The names of the named queues the log defines (its QueueDef
    /// records; the latest wins), by queue id. The default queue (id 0)
    /// is not listed: [`Snapshot::queue_names`] adds it.
    pub queues: BTreeMap<u16, String>,
    /// The queues paused when the snapshot was taken (file `PAUSED`,
    /// [`crate::Queue::pause`]), `"default"` for the default queue: their
    /// ready jobs are not delivered. Empty when none is, or when the file
    /// is damaged (`walq verify` reports it).
    pub paused: std::collections::BTreeSet<String>,
    /// Damage and notes, in the order found.
    pub problems: Vec<Problem>,
    /// Totals of the scan.
    pub summary: ScanSummary,
}

impl Snapshot {
    /// Where job `id` stands.
    pub fn state(&self, id: u64) -> JobState<'_> {
        if let Some(job) = self.jobs.get(&id) {
            if job.leased {
                JobState::Leased(job)
            } else if job.due_ms > self.taken_ms {
                JobState::Delayed(job)
            } else if self.waits_for_group(job) {
                JobState::Blocked(job)
            } else {
                JobState::Ready(job)
            }
        } else if let Some(letter) = self.dead.get(&id) {
            JobState::Dead(letter)
        } else if id != 0 && id < self.next_job_id {
            match self.completions.get(&id) {
                None if id <= self.horizon => JobState::Expired,
                c => JobState::Finished(c),
            }
        } else {
            JobState::Unknown
        }
    }

    /// Counts of unfinished jobs: (ready, delayed, leased). A job waiting
    /// for an older job of its group counts as delayed, as in the queue's
    /// own `Stats`.
    pub fn counts(&self) -> (u64, u64, u64) {
        let heads = self.group_heads();
        let (mut ready, mut delayed, mut leased) = (0, 0, 0);
        for job in self.jobs.values() {
            if job.leased {
                leased += 1;
            } else if job.due_ms > self.taken_ms || !is_head(&heads, job) {
                delayed += 1;
            } else {
                ready += 1;
            }
        }
        (ready, delayed, leased)
    }

    /// Whether `job` waits for an older job of its group (only a group's
    /// oldest unfinished job can be delivered). Groups are per queue: a
    /// group of the same name in another queue is another group.
    pub fn waits_for_group(&self, job: &PendingJob) -> bool {
        job.group.as_ref().is_some_and(|g| {
            self.jobs
                .range(..job.id)
                .any(|(_, other)| other.group.as_ref() == Some(g) && other.queue == job.queue)
        })
    }

    /// The oldest unfinished job of each group, by queue and group.
    pub(super) fn group_heads(&self) -> BTreeMap<(&str, &[u8]), u64> {
        let mut heads = BTreeMap::new();
        for job in self.jobs.values() {
            if let Some(g) = &job.group {
                heads
                    .entry((job.queue.as_str(), g.as_slice()))
                    .or_insert(job.id);
            }
        }
        heads
    }

    /// Unfinished jobs roughly in delivery order: ready jobs by level
    /// (highest first; the queue interleaves the levels 8:4:2:1 while
    /// several have ready jobs), then by due time and id; then jobs
    /// waiting for their due time or their group, by due time and id;
    /// then leased jobs.
    pub fn in_delivery_order(&self) -> Vec<&PendingJob> {
        let heads = self.group_heads();
        let mut jobs: Vec<&PendingJob> = self.jobs.values().collect();
        jobs.sort_by_key(|j| {
            let due = j.due_ms.max(j.enqueued_ms);
            let waiting = due > self.taken_ms || !is_head(&heads, j);
            let level = if waiting { 0 } else { 3 - j.priority as u8 };
            (j.leased, waiting, level, due, j.id)
        });
        jobs
    }
}

/// Whether `job` is the oldest unfinished job of its group (or has none).
pub(super) fn is_head(heads: &BTreeMap<(&str, &[u8]), u64>, job: &PendingJob) -> bool {
    job.group
        .as_deref()
        .is_none_or(|g| heads.get(&(job.queue.as_str(), g)) == Some(&job.id))
}

/// A log record held until its batch completes.
enum Op {
    /// The job, its record's LSN, its queue id.
    Enqueue(PendingJob, u64, u16),
    Lease(u64, u32),
    Ack(u64),
    /// The job, its due time, and the error its nack gave, if any.
    Nack(u64, u64, Option<String>),
}

/// The visitor that rebuilds a [`Snapshot`], forwarding every event to
/// an observer (a progress display, say).
pub(crate) struct Replay<'a> {
    pub(crate) snap: Snapshot,
    /// The LSN of each job's newest enqueue record (kept after its ack: a
    /// redriven and finished job's old dead letter must stay superseded).
    enqueue_lsns: BTreeMap<u64, u64>,
    /// The queue id of each pending job of a named queue, and the names
    /// QueueDef records give (the latest wins): names are filled in by
    /// [`Replay::into_snapshot`], as a definition may follow a job's record.
    queue_ids: BTreeMap<u64, u16>,
    queue_names: BTreeMap<u16, String>,
    batch: Vec<Op>,
    /// Whether pending jobs and dead letters keep their payloads.
    payloads: bool,
    observer: &'a mut dyn Visitor,
}

impl<'a> Replay<'a> {
    pub(crate) fn new(taken_ms: u64, payloads: bool, observer: &'a mut dyn Visitor) -> Replay<'a> {
        Replay {
            snap: Snapshot {
                taken_ms,
                next_job_id: 1,
                ..Snapshot::default()
            },
            enqueue_lsns: BTreeMap::new(),
            queue_ids: BTreeMap::new(),
            queue_names: BTreeMap::new(),
            batch: Vec::new(),
            payloads,
            observer,
        }
    }

    /// The snapshot, each job with its queue's name.
    pub(crate) fn into_snapshot(mut self) -> Snapshot {
        for (id, q) in &self.queue_ids {
            if let Some(job) = self.snap.jobs.get_mut(id) {
                job.queue = match self.queue_names.get(q) {
                    Some(name) => name.clone(),
                    None => format!("queue-{q}"),
                };
            }
        }
        self.snap.queues = self.queue_names;
        self.snap
    }

    fn see_id(&mut self, id: u64) {
        self.snap.next_job_id = self.snap.next_job_id.max(id.saturating_add(1));
    }

    fn apply(&mut self, op: Op) {
        let jobs = &mut self.snap.jobs;
        match op {
            Op::Enqueue(job, lsn, queue) => {
                self.enqueue_lsns.insert(job.id, lsn);
                if queue == 0 {
                    self.queue_ids.remove(&job.id);
                } else {
                    self.queue_ids.insert(job.id, queue);
                }
                jobs.insert(job.id, job);
            }
            Op::Lease(id, attempts) => {
                if let Some(j) = jobs.get_mut(&id) {
                    j.attempts = attempts;
                    j.leased = true;
                }
            }
            Op::Ack(id) => {
                jobs.remove(&id);
            }
            Op::Nack(id, due, error) => {
                if let Some(j) = jobs.get_mut(&id) {
                    j.due_ms = due;
                    j.leased = false;
                    // A plain nack (a lease ran out) keeps the last error.
                    if error.is_some() {
                        j.last_error = error;
                    }
                }
            }
        }
    }

    fn log_record(&mut self, r: &RecordView<'_>) {
        let Entry::Record(rec) = r.entry else {
            return;
        };
        // Every log kind is named: a new one must say how it replays.
        let op = match rec {
            Record::Enqueue(e) => Op::Enqueue(
                PendingJob {
                    id: e.id,
                    enqueued_ms: e.enqueued_ms,
                    due_ms: e.due_ms,
                    attempts: e.attempts,
                    max_attempts: u32::from(e.max_attempts),
                    key: (!e.key.is_empty()).then(|| e.key.to_vec()),
                    priority: Priority::from_byte(e.priority),
                    group: (!e.group.is_empty()).then(|| e.group.to_vec()),
                    queue: String::new(),
                    payload: if self.payloads {
                        e.payload.to_vec()
                    } else {
                        Vec::new()
                    },
                    payload_len: e.payload.len() as u64,
                    leased: false,
                    file: r.file.to_string(),
                    offset: r.offset,
                    last_error: None,
                },
                r.lsn,
                e.queue,
            ),
            Record::Lease { id, attempts } => Op::Lease(id, attempts),
            Record::Ack { id } => Op::Ack(id),
            Record::Nack { id, due_ms } => Op::Nack(id, due_ms, None),
            Record::NackErr { id, due_ms, error } => Op::Nack(id, due_ms, Some(error.to_string())),
            Record::AckMany(entries) => return self.log_many(entries.ids().map(Op::Ack), r),
            Record::LeaseMany(entries) => {
                let ops = entries.leases().map(|(id, n)| Op::Lease(id, n));
                return self.log_many(ops, r);
            }
            Record::QueueDef { queue, name } => {
                let name = String::from_utf8_lossy(name).into_owned();
                self.queue_names.insert(queue, name);
                return;
            }
            Record::Key { .. } | Record::Dead(_) | Record::Removed { .. } => return,
        };
        self.see_id(r.entry.id());
        self.batch.push(op);
        self.end_of_record(r);
    }

    /// A batch record: each entry as the single record would be.
    fn log_many(&mut self, ops: impl Iterator<Item = Op>, r: &RecordView<'_>) {
        for op in ops {
            let id = match op {
                Op::Ack(id) | Op::Lease(id, _) => id,
                _ => continue,
            };
            self.see_id(id);
            self.batch.push(op);
        }
        self.end_of_record(r);
    }

    /// Applies the held records once the batch's last one is seen.
    fn end_of_record(&mut self, r: &RecordView<'_>) {
        if !r.batch_more {
            for op in std::mem::take(&mut self.batch) {
                self.apply(op);
            }
        }
    }

    fn side_record(&mut self, r: &RecordView<'_>) {
        match r.entry {
            Entry::Record(Record::Dead(d)) => {
                let id = d.id;
                self.see_id(id);
                // `dead.wal` is read after the log. A dead letter wins over
                // the job's log records with smaller LSNs; an enqueue with
                // an LSN at least as large (a redrive) wins over it.
                match self.enqueue_lsns.get(&id) {
                    Some(&lsn) if lsn >= r.lsn => return,
                    Some(_) => {
                        self.snap.jobs.remove(&id);
                    }
                    None => {}
                }
                let place = DeadPlace {
                    id,
                    offset: r.offset,
                    len: r.len,
                    payload_len: d.payload.len() as u64,
                };
                let kept = if self.payloads { d.payload } else { &[] };
                let letter = DeadLetter::from_rec(&DeadRec { payload: kept, ..d });
                self.snap.dead.insert(id, letter);
                self.snap.dead_places.insert(id, place);
            }
            Entry::Record(Record::Removed { id }) => {
                self.snap.dead.remove(&id);
                self.snap.dead_places.remove(&id);
            }
            Entry::Done(DoneRecord::Done {
                id,
                finished_ms,
                result,
            }) => {
                let c = Completion::Done {
                    finished_ms,
                    result: result.to_vec(),
                };
                self.snap.completions.insert(id, c);
            }
            Entry::Done(DoneRecord::Purged { id, purged_ms }) => {
                let c = Completion::Purged { purged_ms };
                self.snap.completions.insert(id, c);
            }
            Entry::Done(DoneRecord::Cleared { id }) => {
                self.snap.completions.remove(&id);
            }
            Entry::Done(DoneRecord::Horizon { id }) => self.snap.horizon = id,
            _ => {}
        }
    }
}

impl Visitor for Replay<'_> {
    fn file_start(&mut self, name: &str, role: FileRole, len: u64) {
        self.snap.files.push((name.to_string(), len));
        self.observer.file_start(name, role, len);
    }

    fn record(&mut self, r: &RecordView<'_>) {
        if crate::segment::parse_name(r.file).is_some() {
            self.log_record(r);
        } else {
            self.side_record(r);
        }
        self.observer.record(r);
    }

    fn problem(&mut self, p: &Problem) {
        // Records of a batch cut by damage were never acknowledged.
        self.batch.clear();
        self.snap.problems.push(p.clone());
        self.observer.problem(p);
    }

    fn file_end(&mut self, name: &str, role: FileRole) {
        // A batch never spans segments: one still open here is unfinished.
        self.batch.clear();
        self.observer.file_end(name, role);
    }
}
