//! Scanning one log segment: header, records in LSN order, and the
//! classification of damage (torn tail or corruption) recovery applies.

use super::entry::{Entry, Problem};
use super::scan::{all_zero, Scan, SegEnd, SegScan};
use crate::error::Result;
use crate::format::frame::{self, FrameError, FLAG_BATCH_MORE};
use crate::format::header::{FileKind, SEGMENT_HEADER_LEN};
use crate::format::record::Record;
use crate::format::resync;
use crate::format::MAX_ID;

impl Scan<'_> {
    /// Scans a segment; `expected` is the LSN the previous one ends
    /// before, `prev` its name and largest enqueued job id. `None` when
    /// the header is unusable (reported).
    pub(crate) fn segment(
        &mut self,
        seg: &SegScan<'_>,
        expected: Option<u64>,
        prev: Option<(String, u64)>,
    ) -> Result<Option<SegEnd>> {
        let name = seg.name;
        let Some(h) = self.header(name, seg.bytes, FileKind::Log)? else {
            return Ok(None);
        };
        if h.segment_id != seg.id || h.base_lsn == 0 || h.base_lsn >= MAX_ID {
            let what = format!(
                "header names segment {} with base LSN {}; the file name says segment {}",
                h.segment_id, h.base_lsn, seg.id
            );
            self.problem(Problem::damage(name, 0, what));
            return Ok(None);
        }
        self.sum.next_job_id = self.sum.next_job_id.max(h.next_job_id);
        if let Some((prev_name, max_id)) = prev {
            if max_id != 0 && max_id >= h.next_job_id {
                let what = format!(
                    "job {max_id} is enqueued here, yet the next segment was created when the \
                     next job id was {}",
                    h.next_job_id
                );
                self.problem(Problem::damage(&prev_name, 0, what));
            }
        }
        let exp = match expected {
            Some(e) if e != h.base_lsn => {
                let what = format!(
                    "segment starts at LSN {}, but the one before ends at LSN {}",
                    h.base_lsn,
                    e.saturating_sub(1)
                );
                self.problem(Problem::damage(name, 16, what));
                self.sum.records_lost += h.base_lsn.saturating_sub(e);
                h.base_lsn
            }
            _ => h.base_lsn,
        };
        let Ok(max_len) = u32::try_from(seg.len) else {
            let what = format!("segment is {} bytes, above the 4 GiB limit", seg.len);
            self.problem(Problem::damage(name, 0, what));
            return Ok(None);
        };
        Ok(Some(self.segment_records(seg, exp, max_len)))
    }

    fn segment_records(&mut self, seg: &SegScan<'_>, mut exp: u64, max_len: u32) -> SegEnd {
        let (name, bytes) = (seg.name, seg.bytes);
        let mut off = SEGMENT_HEADER_LEN;
        let mut batch: Option<(usize, u64)> = None;
        let mut max_fresh_id = 0;
        // The last proof a search after damage found (`resync::search_log`).
        let mut proof = None;
        while off < bytes.len() {
            let damage = match frame::decode(&bytes[off..], seg.id, max_len) {
                Ok(f) if f.lsn == exp => match log_entry(f.kind, f.body, f.lsn) {
                    Ok(entry) => {
                        if let Some(id) = entry.enqueued_id() {
                            max_fresh_id = max_fresh_id.max(id);
                        }
                        self.emit(name, off, &f, entry);
                        if f.flags & FLAG_BATCH_MORE != 0 {
                            let start = batch.get_or_insert((off, 0));
                            start.1 += 1;
                        } else {
                            batch = None;
                        }
                        exp += 1;
                        off += f.len as usize;
                        continue;
                    }
                    Err(what) => what,
                },
                Ok(f) => format!("record has LSN {}, expected {exp}", f.lsn),
                Err(FrameError::Zero) if all_zero(&bytes[off..]) => break,
                Err(e) => e.to_string(),
            };
            let later = find_later(bytes, seg, max_len, off + 1, exp, &mut proof);
            let (next, durable) = (later.first.map(|(o, f)| (o, f.lsn)), later.durable);
            if seg.last && !durable {
                self.torn_tail(name, bytes, off, &damage);
                break;
            }
            let what = format!("{damage} (not a torn tail: later records were synced)");
            self.problem(Problem::damage(name, off as u64, what));
            batch = None;
            let Some((next_off, lsn)) = next else { break };
            self.sum.records_lost += lsn - exp;
            exp = lsn;
            off = next_off;
        }
        if let Some((start, n)) = batch {
            if seg.last {
                let what = format!(
                    "an unfinished batch of {n} records ends the log: none of it was \
                     acknowledged, and opening the queue drops it"
                );
                self.problem(Problem::note(name, start as u64, what));
            } else {
                let what = "sealed segment ends inside an unfinished batch";
                self.problem(Problem::damage(name, start as u64, what));
            }
        }
        SegEnd {
            next_lsn: exp,
            max_fresh_id,
        }
    }

    fn torn_tail(&mut self, name: &str, bytes: &[u8], off: usize, damage: &str) {
        let end = bytes
            .iter()
            .rposition(|&b| b != 0)
            .map_or(off, |p| p + 1)
            .max(off);
        let what = if self.sum.live {
            format!(
                "{} bytes after the last intact record ({damage}): the running process's \
                 tail, a write in progress or cut short (not damage)",
                end - off
            )
        } else {
            format!(
                "torn tail of {} bytes ({damage}): a write cut short by a crash, zeroed on the \
                 next open (not damage)",
                end - off
            )
        };
        self.problem(Problem::note(name, off as u64, what));
    }
}

/// The entry of a verified log frame, or why it does not belong in a log.
fn log_entry<'a>(kind: u8, body: &'a [u8], lsn: u64) -> std::result::Result<Entry<'a>, String> {
    let Some(r) = Record::decode(kind, body) else {
        return Err(format!("record of kind {kind} does not decode"));
    };
    if let Record::Dead(_) | Record::Removed { .. } = r {
        let kind = r.kind();
        return Err(format!(
            "a dead-letter record (kind {kind}) inside a log segment"
        ));
    }
    let entry = Entry::Record(r);
    match entry.enqueued_id() {
        Some(id) if id >= MAX_ID || lsn >= MAX_ID => {
            Err(format!("job id {id} or LSN {lsn} out of range"))
        }
        _ => Ok(entry),
    }
}

/// The first intact frame after `from` with an LSN past `expected`, and,
/// in the last segment (where damage may be a torn tail), whether an
/// intact frame after `from` proves, through its sync lag, that LSN
/// `expected` had been durable. See `format::resync` (and
/// [`resync::search_log`] for `proof`).
fn find_later<'a>(
    bytes: &'a [u8],
    seg: &SegScan<'_>,
    max_len: u32,
    from: usize,
    expected: u64,
    proof: &mut Option<resync::Proof>,
) -> resync::Later<'a> {
    let span = from..bytes.len();
    resync::search_log(bytes, span, seg.id, max_len, expected, seg.last, proof)
}
