//! What a scan reports: decoded records, the files they sit in, problems.

use crate::format::done::DoneRecord;
use crate::format::record::Record;

/// A decoded record, borrowing its variable parts from the file buffer.
///
/// It is the body as `format` decodes it: [`Record`] for the log and
/// `dead.wal` (kinds 1–7, 14, 15), [`DoneRecord`] for `done.rec` (kinds
/// 8–10), so a record kind is defined once (see `docs/format.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A record of a log segment or of `dead.wal`.
    Record(Record<'a>),
    /// A record of `done.rec`.
    Done(DoneRecord<'a>),
}

impl<'a> Entry<'a> {
    /// A short lower-case name of the record kind (`enqueue`, `lease`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Entry::Record(r) => match r {
                Record::Enqueue(_) => "enqueue",
                Record::Lease { .. } => "lease",
                Record::Ack { .. } => "ack",
                Record::Nack { .. } => "nack",
                Record::NackErr { .. } => "nack-error",
                Record::Key { .. } => "key",
                Record::Dead(_) => "dead",
                Record::Removed { .. } => "removed",
                Record::AckMany(_) => "ack-many",
                Record::LeaseMany(_) => "lease-many",
                Record::QueueDef { .. } => "queue-def",
            },
            Entry::Done(d) => match d {
                DoneRecord::Done { .. } => "done",
                DoneRecord::Purged { .. } => "purged",
                DoneRecord::Cleared { .. } => "cleared",
                DoneRecord::Horizon { .. } => "horizon",
            },
        }
    }

    /// The job id the record is about (of a batch record: its first
    /// entry's; every id is in its [`Entries`](super::Entries)).
    pub fn id(&self) -> u64 {
        match *self {
            Entry::Record(r) => match r {
                Record::AckMany(entries) => entries.ids().next().unwrap_or(0),
                Record::LeaseMany(entries) => entries.leases().next().map_or(0, |(id, _)| id),
                Record::Enqueue(e) => e.id,
                Record::Dead(d) => d.id,
                Record::Lease { id, .. }
                | Record::Ack { id }
                | Record::Nack { id, .. }
                | Record::NackErr { id, .. }
                | Record::Key { id, .. }
                | Record::Removed { id } => id,
                Record::QueueDef { .. } => 0,
            },
            Entry::Done(d) => d.id(),
        }
    }

    /// The id of the job an enqueue record (new, carried forward or
    /// redriven) writes; `None` for every other kind. Every kind is named
    /// so that a new kind that enqueues cannot be missed.
    pub(crate) fn enqueued_id(&self) -> Option<u64> {
        match *self {
            Entry::Record(Record::Enqueue(e)) => Some(e.id),
            Entry::Record(
                Record::Lease { .. }
                | Record::Ack { .. }
                | Record::Nack { .. }
                | Record::NackErr { .. }
                | Record::Key { .. }
                | Record::Dead(_)
                | Record::Removed { .. }
                | Record::AckMany(_)
                | Record::LeaseMany(_)
                | Record::QueueDef { .. },
            )
            | Entry::Done(_) => None,
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
    /// A file is about to be scanned (`len` bytes long; a scan reads it
    /// only up to where its data ends, zeros past that are not read).
    fn file_start(&mut self, _name: &str, _role: FileRole, _len: u64) {}
    /// A verified record.
    fn record(&mut self, _rec: &RecordView<'_>) {}
    /// Damage or a note.
    fn problem(&mut self, _problem: &Problem) {}
    /// The file's scan is over.
    fn file_end(&mut self, _name: &str, _role: FileRole) {}
}
