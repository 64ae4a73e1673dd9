//! What a scan reports: decoded records, the files they sit in, problems.

use crate::format::done::DoneRecord;
use crate::format::record::{Entries, Record};

/// A decoded record, borrowing its variable parts from the file buffer.
///
/// One variant per record kind of `docs/format.md` (kinds 1–10, 14, 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// Kind 1 (log): a job with its full state.
    Enqueue {
        /// Job id.
        id: u64,
        /// When the job was first enqueued (ms since the epoch).
        enqueued_ms: u64,
        /// When it becomes ready (ms since the epoch).
        due_ms: u64,
        /// Attempts made so far.
        attempts: u32,
        /// Attempts allowed before the dead letters.
        max_attempts: u16,
        /// Idempotency key, empty when none.
        key: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// Kind 2 (log): the job was leased.
    Lease {
        /// Job id.
        id: u64,
        /// Attempts, including the one that started.
        attempts: u32,
    },
    /// Kind 3 (log): the job finished.
    Ack {
        /// Job id.
        id: u64,
    },
    /// Kind 4 (log): the job waits until `due_ms`.
    Nack {
        /// Job id.
        id: u64,
        /// When it becomes ready again.
        due_ms: u64,
    },
    /// Kind 5 (log): an idempotency key outliving its job.
    Key {
        /// The job the key maps to.
        id: u64,
        /// When the key is forgotten (ms since the epoch).
        expires_ms: u64,
        /// The key.
        key: &'a [u8],
    },
    /// Kind 14 (log): several jobs finished, each as by an `Ack`.
    AckMany {
        /// The job ids ([`Entries::ids`]).
        entries: Entries<'a>,
    },
    /// Kind 15 (log): several jobs were leased, each as by a `Lease`.
    LeaseMany {
        /// The job ids and attempts ([`Entries::leases`]).
        entries: Entries<'a>,
    },
    /// Kind 6 (`dead.wal`): a dead letter.
    Dead {
        /// Job id.
        id: u64,
        /// When the job was first enqueued.
        enqueued_ms: u64,
        /// When it was dead-lettered.
        dead_ms: u64,
        /// Attempts made.
        attempts: u32,
        /// Idempotency key, empty when none.
        key: &'a [u8],
        /// The last error text (UTF-8 as written).
        error: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// Kind 7 (`dead.wal`): a dead letter was redriven or purged.
    Removed {
        /// Job id.
        id: u64,
    },
    /// Kind 8 (`done.rec`): the job completed with a result.
    Done {
        /// Job id.
        id: u64,
        /// When it completed.
        finished_ms: u64,
        /// The result.
        result: &'a [u8],
    },
    /// Kind 9 (`done.rec`): a dead letter was purged.
    Purged {
        /// Job id.
        id: u64,
        /// When.
        purged_ms: u64,
    },
    /// Kind 10 (`done.rec`): earlier completion records of the job are void.
    Cleared {
        /// Job id.
        id: u64,
    },
}

impl<'a> Entry<'a> {
    /// A short lower-case name of the record kind (`enqueue`, `lease`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Entry::Enqueue { .. } => "enqueue",
            Entry::Lease { .. } => "lease",
            Entry::Ack { .. } => "ack",
            Entry::Nack { .. } => "nack",
            Entry::Key { .. } => "key",
            Entry::Dead { .. } => "dead",
            Entry::Removed { .. } => "removed",
            Entry::Done { .. } => "done",
            Entry::Purged { .. } => "purged",
            Entry::Cleared { .. } => "cleared",
            Entry::AckMany { .. } => "ack-many",
            Entry::LeaseMany { .. } => "lease-many",
        }
    }

    /// The job id the record is about (of a batch record: its first
    /// entry's; every id is in its `entries`).
    pub fn id(&self) -> u64 {
        match *self {
            Entry::AckMany { entries } => entries.ids().next().unwrap_or(0),
            Entry::LeaseMany { entries } => entries.leases().next().map_or(0, |(id, _)| id),
            Entry::Enqueue { id, .. }
            | Entry::Lease { id, .. }
            | Entry::Ack { id }
            | Entry::Nack { id, .. }
            | Entry::Key { id, .. }
            | Entry::Dead { id, .. }
            | Entry::Removed { id }
            | Entry::Done { id, .. }
            | Entry::Purged { id, .. }
            | Entry::Cleared { id } => id,
        }
    }

    pub(crate) fn from_record(rec: Record<'a>) -> Entry<'a> {
        match rec {
            Record::Enqueue(e) => Entry::Enqueue {
                id: e.id,
                enqueued_ms: e.enqueued_ms,
                due_ms: e.due_ms,
                attempts: e.attempts,
                max_attempts: e.max_attempts,
                key: e.key,
                payload: e.payload,
            },
            Record::Lease { id, attempts } => Entry::Lease { id, attempts },
            Record::Ack { id } => Entry::Ack { id },
            Record::Nack { id, due_ms } => Entry::Nack { id, due_ms },
            Record::Key {
                id,
                expires_ms,
                key,
            } => Entry::Key {
                id,
                expires_ms,
                key,
            },
            Record::Dead(d) => Entry::Dead {
                id: d.id,
                enqueued_ms: d.enqueued_ms,
                dead_ms: d.dead_ms,
                attempts: d.attempts,
                key: d.key,
                error: d.error,
                payload: d.payload,
            },
            Record::Removed { id } => Entry::Removed { id },
            Record::AckMany(entries) => Entry::AckMany { entries },
            Record::LeaseMany(entries) => Entry::LeaseMany { entries },
        }
    }

    pub(crate) fn from_done(rec: DoneRecord<'a>) -> Entry<'a> {
        match rec {
            DoneRecord::Done {
                id,
                finished_ms,
                result,
            } => Entry::Done {
                id,
                finished_ms,
                result,
            },
            DoneRecord::Purged { id, purged_ms } => Entry::Purged { id, purged_ms },
            DoneRecord::Cleared { id } => Entry::Cleared { id },
        }
    }
}

/// What a file of the queue directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// A log segment with its id.
    Segment(u32),
    /// `dead.wal`.
    DeadLetters,
    /// `done.rec`.
    Completions,
}

/// One verified record where it was found.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// File name inside the queue directory.
    pub file: &'a str,
    /// Byte offset of the frame in the file.
    pub offset: u64,
    /// Total frame length in bytes.
    pub len: u32,
    /// The frame's LSN (log), log position (`dead.wal`) or sequence
    /// number (`done.rec`).
    pub lsn: u64,
    /// More records of the same atomic batch follow.
    pub batch_more: bool,
    /// The frame's sync lag (see `docs/format.md`).
    pub sync_lag: u32,
    /// The decoded body.
    pub entry: Entry<'a>,
}

/// How serious a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Damage: bytes that fail verification, or a broken cross-file
    /// invariant. Opening the queue in `RecoveryMode::Strict` fails.
    Damage,
    /// Worth knowing, not damage: a torn tail that opening cuts, a file a
    /// live writer deleted while it was read, a leftover temporary file.
    Note,
}

/// Something a scan found, with the file and byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Damage or note.
    pub severity: Severity,
    /// File name inside the queue directory.
    pub file: String,
    /// Byte offset in the file.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

impl Problem {
    pub(crate) fn damage(file: &str, offset: u64, what: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Damage,
            file: file.to_string(),
            offset,
            what: what.into(),
        }
    }

    pub(crate) fn note(file: &str, offset: u64, what: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Note,
            file: file.to_string(),
            offset,
            what: what.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}: {}", self.file, self.offset, self.what)
    }
}

/// Receives what a scan finds, in order: each file's records, then the
/// file's end; problems as they are found.
pub trait Visitor {
    /// A file is about to be scanned (`len` bytes as read).
    fn file_start(&mut self, _name: &str, _role: FileRole, _len: u64) {}
    /// A verified record.
    fn record(&mut self, _rec: &RecordView<'_>) {}
    /// Damage or a note.
    fn problem(&mut self, _problem: &Problem) {}
    /// The file's scan is over.
    fn file_end(&mut self, _name: &str, _role: FileRole) {}
}
