//! Invariants between files that a record-by-record scan cannot check
//! alone: every job id in `dead.wal` and `done.rec` was handed out by the
//! log (it is below the next job id the log knows). While a process holds
//! the queue, the side files are read after the log, so a side record
//! may name a job the process enqueued since: there that is a note.

use super::entry::{Entry, FileRole, Problem, RecordView, Visitor};
use crate::format::done::DoneRecord;
use crate::format::record::Record;

/// Wraps a visitor, remembering the ids each file names.
pub(crate) struct Invariants<'a> {
    inner: &'a mut dyn Visitor,
    /// One past the largest job id enqueued in the log.
    log_next_id: u64,
    /// Ids named by side files: (file, offset, id).
    side_ids: Vec<(String, u64, u64)>,
}

impl<'a> Invariants<'a> {
    pub(crate) fn new(inner: &'a mut dyn Visitor) -> Invariants<'a> {
        Invariants {
            inner,
            log_next_id: 1,
            side_ids: Vec::new(),
        }
    }

    /// The problems found once the scan is over, given the largest next
    /// job id of any segment header and whether a process held the queue.
    pub(crate) fn finish(self, header_next_id: u64, segments: u64, live: bool) -> Vec<Problem> {
        if segments == 0 {
            return Vec::new(); // no log to compare with (reported already)
        }
        let next = self.log_next_id.max(header_next_id);
        self.side_ids
            .into_iter()
            .filter(|&(_, _, id)| id >= next)
            .map(|(file, off, id)| {
                if live {
                    let what = format!(
                        "names job {id}, enqueued after the log was read (ids up to {} then)",
                        next - 1
                    );
                    return Problem::note(&file, off, what);
                }
                let what = format!(
                    "names job {id}, but the log never handed out ids past {}",
                    next - 1
                );
                Problem::damage(&file, off, what)
            })
            .collect()
    }
}

impl Visitor for Invariants<'_> {
    fn file_start(&mut self, name: &str, role: FileRole, len: u64) {
        self.inner.file_start(name, role, len);
    }

    fn record(&mut self, r: &RecordView<'_>) {
        if let Some(id) = r.entry.enqueued_id() {
            self.log_next_id = self.log_next_id.max(id.saturating_add(1));
        }
        if let Entry::Record(Record::Dead(_))
        | Entry::Done(DoneRecord::Done { .. } | DoneRecord::Purged { .. }) = r.entry
        {
            self.side_ids
                .push((r.file.to_string(), r.offset, r.entry.id()));
        }
        self.inner.record(r);
    }

    fn problem(&mut self, p: &Problem) {
        self.inner.problem(p);
    }

    fn file_end(&mut self, name: &str, role: FileRole) {
        self.inner.file_end(name, role);
    }
}
