//! The completion file: job results and purge markers, for
//! [`crate::Queue::status`].
//!
//! One append-only side file, `done.rec`, with the same header and framing
//! as the dead-letter file (file kind 3, checksum seed
//! [`DONE_SEGMENT_ID`]). It is deliberately not named `*.wal`: every
//! `*.wal` but `dead.wal` is a log segment to tools and tests. Records
//! (see `format::done`):
//!
//! - `Done`: job `id` completed at `finished_ms` with a result of at most
//!   [`MAX_RESULT_LEN`] bytes (written by `Queue::ack_with_result`; a plain
//!   ack writes nothing here);
//! - `Purged`: dead letter `id` was purged, so the job did not complete;
//! - `Cleared`: forget the earlier records of `id` (a purge marker whose
//!   purge did not happen before a crash);
//! - `Horizon`: purge markers of ids up to `id` were dropped (below).
//!
//! Memory holds only what is still needed: results inside the window (the
//! queue's dedup window) as `id → (offset, length, finish time)`, and the
//! purge markers. Results are read back from disk on demand. A result
//! leaves memory when its window ends, or earlier when more than
//! [`MAX_DONE_RESULTS`] results or [`MAX_DONE_RESULT_BYTES`] bytes of them
//! are held (oldest first). Purge markers are kept until more than
//! [`MAX_PURGE_MARKERS`] are held; then the oldest are dropped and the
//! *horizon* rises to the highest id dropped: a finished job at or below
//! it without a record may have been cancelled or purged, so it reads
//! [`crate::JobStatus::Expired`], never `Done`. The horizon is written
//! (a Horizon record) at the head of every rewrite, which is the only
//! moment dropped markers leave the file; until then the next open drops
//! them again. The file is rewritten with only the records
//! still needed (`done.rec.tmp`, fsync, rename, fsync of the directory)
//! once the rest is more than 1 MiB and more than half of it.
//!
//! A torn tail is cut on open; damage in the middle is an error naming the
//! file and offset (`RecoveryMode::Salvage` skips it).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dead::{later_side_frames, write_side_file};
use crate::error::{Error, ErrorKind, Result};
use crate::format::done::{DoneRecord, DONE_FIXED_LEN};
use crate::format::frame::{self, FrameError, FRAME_HEADER_LEN};
use crate::format::header::{FileKind, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::options::RecoveryMode;
use crate::sync_latch::SyncLatch;
use crate::vfs::{AtomicWriteError, Vfs, VfsFile};

/// File name of the completion file.
pub const DONE_FILE: &str = "done.rec";
/// Checksum seed ("segment id") of the completion file: "DONE" read as a
/// little-endian `u32`.
pub const DONE_SEGMENT_ID: u32 = u32::from_le_bytes(*b"DONE");
/// Largest result [`crate::Queue::ack_with_result`] accepts, in bytes.
pub const MAX_RESULT_LEN: usize = 4096;
/// Most results held at once; beyond it the oldest are forgotten before
/// their window ends (their jobs then read as done without a result).
pub const MAX_DONE_RESULTS: usize = 100_000;
/// Most bytes of result records held at once (same rule as
/// [`MAX_DONE_RESULTS`]).
pub const MAX_DONE_RESULT_BYTES: u64 = 64 << 20;
/// Most purge markers (cancelled or purged jobs) held at once; beyond it
/// the oldest are dropped and their jobs read
/// [`crate::JobStatus::Expired`] (see the module docs).
pub const MAX_PURGE_MARKERS: usize = 100_000;
/// The bytes of one Purged marker in the file (a frame without a result).
const PURGED_FRAME_LEN: u64 = (FRAME_HEADER_LEN + DONE_FIXED_LEN) as u64;
/// Largest record accepted when reading.
const MAX_DONE_RECORD: u32 = (FRAME_HEADER_LEN + DONE_FIXED_LEN + MAX_RESULT_LEN) as u32;
/// The file grows by zeros written ahead in steps of this many bytes.
const GROW_CHUNK: u64 = 64 << 10;
/// Unneeded bytes tolerated before a rewrite.
const COMPACT_MIN_GARBAGE: u64 = 1 << 20;

/// What the completion file knows about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Completed with a result, inside the window.
    Result {
        /// When it completed.
        finished_ms: u64,
        /// The result.
        result: Vec<u8>,
    },
    /// Purged from the dead letters.
    Purged {
        /// When it was purged.
        purged_ms: u64,
    },
    /// No record, and at or below the horizon: finished, but whether it
    /// completed or was cancelled or purged is no longer known.
    Expired,
}

/// What opening the completion file found.
#[derive(Debug, Default, Clone, Copy)]
pub struct DoneRecovery {
    /// Bytes of torn tail cut off.
    pub torn_bytes: u64,
    /// Bytes skipped as damaged (salvage mode).
    pub damaged_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    off: u64,
    len: u32,
    /// Finish time of a result, purge time of a marker.
    at_ms: u64,
    purged: bool,
    /// Sequence number of the record (tells a record from a later one of
    /// the same job, wherever a rewrite moved it).
    seq: u64,
}

/// A result [`DoneFile::record_result`] wrote: what
/// [`DoneFile::retract`] and [`DoneFile::confirm`] need to find it.
#[derive(Debug)]
pub struct Recorded {
    id: u64,
    seq: u64,
}

/// A result written and whose ack is not settled yet, and the result of
/// the job's last settled run (`(finished_ms, result)`), which a refused
/// ack puts back.
#[derive(Debug)]
struct Pending {
    seq: u64,
    settled: Option<(u64, Vec<u8>)>,
}

/// The open completion file and its in-memory index.
#[derive(Debug)]
pub struct DoneFile {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    path: PathBuf,
    mode: u32,
    file: Arc<dyn VfsFile>,
    /// End of the last record (the logical length).
    len: u64,
    /// Length of the file: records, then zeros written ahead of them.
    alloc: u64,
    synced_len: u64,
    /// A failed fdatasync of the file, latched (see `sync_latch`).
    latch: SyncLatch,
    /// Bumped by every rewrite (a new file, synced whole).
    generation: u64,
    /// After a compaction that a full disk stopped: the length the file
    /// must reach before the next try (0: none waits).
    compact_retry_len: u64,
    buf: Vec<u8>,
    /// In-window results and purge markers, by job id.
    entries: HashMap<u64, Entry>,
    /// `(finished_ms, id, offset)` of results, oldest first; entries
    /// superseded since are skipped when popped.
    order: VecDeque<(u64, u64, u64)>,
    results: usize,
    result_bytes: u64,
    /// `(seq, id)` of purge markers, oldest first; entries superseded
    /// since are skipped when popped.
    markers: VecDeque<(u64, u64)>,
    /// Purge markers in `entries`.
    purged: usize,
    max_markers: usize,
    /// The highest id whose purge marker was dropped (0: none).
    horizon: u64,
    /// From the open until [`DoneFile::finish_open`]: no marker is
    /// dropped, so the queue's clearing sees every marker the file holds.
    markers_held: bool,
    /// Bytes of the records in `entries`; the rest of the file is garbage.
    kept_bytes: u64,
    window_ms: u64,
    max_results: usize,
    next_seq: u64,
    last_ms: u64,
    /// Per job, the result written whose ack is not settled yet (at most
    /// one: a later run's result means the earlier run's lease was lost).
    /// In memory only; entries leave at [`DoneFile::confirm`] or
    /// [`DoneFile::retract`] (one whose ack failed otherwise, an I/O error
    /// that poisoned the queue, stays until the handle is dropped).
    pending: HashMap<u64, Pending>,
}

/// Opens the completion file `path` in `dir`, or creates it if it does
/// not exist (a header and no records, file mode `mode`, written
/// crash-atomically by `write_side_file`); says whether it was created.
fn open_or_create(
    vfs: &dyn Vfs,
    dir: &Path,
    path: &Path,
    mode: u32,
) -> Result<(Arc<dyn VfsFile>, bool)> {
    match vfs.open(path) {
        Ok(f) => Ok((Arc::from(f), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((
            Arc::from(
                write_side_file(vfs, dir, path, FileKind::Done, DONE_SEGMENT_ID, mode, &[])
                    .map_err(AtomicWriteError::into_error)?,
            ),
            true,
        )),
        Err(e) => Err(Error::io("opening completion file", path, e)),
    }
}

impl DoneFile {
    /// Opens `dir/done.rec`, creating it if missing (a directory written
    /// before completion records existed gains one), and verifies it.
    /// Results older than `window_ms` at `now` are not loaded.
    pub fn open(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        mode: u32,
        recovery: RecoveryMode,
        window_ms: u64,
        now: u64,
    ) -> Result<(DoneFile, DoneRecovery)> {
        let path = dir.join(DONE_FILE);
        let (file, fresh) = open_or_create(&*vfs, dir, &path, mode)?;
        let mut done = DoneFile {
            vfs,
            dir: dir.to_path_buf(),
            path,
            mode,
            file,
            len: SEGMENT_HEADER_LEN as u64,
            alloc: SEGMENT_HEADER_LEN as u64,
            synced_len: SEGMENT_HEADER_LEN as u64,
            latch: SyncLatch::default(),
            generation: 0,
            compact_retry_len: 0,
            buf: Vec::new(),
            entries: HashMap::new(),
            order: VecDeque::new(),
            results: 0,
            result_bytes: 0,
            markers: VecDeque::new(),
            purged: 0,
            max_markers: MAX_PURGE_MARKERS,
            horizon: 0,
            markers_held: true,
            kept_bytes: 0,
            window_ms,
            max_results: MAX_DONE_RESULTS,
            next_seq: 1,
            last_ms: 0,
            pending: HashMap::new(),
        };
        if fresh {
            return Ok((done, DoneRecovery::default()));
        }
        let len = done
            .file
            .len()
            .map_err(|e| Error::io("reading completion file length", &done.path, e))?;
        // Up to where the data ends: zeros (holes) past the records, as in
        // a file grown by mistake to many GiB, are not read into memory.
        let bytes = crate::vfs::read_span(&*done.file, &done.path, 0, len)?;
        let header = SegmentHeader::decode(&bytes)
            .map_err(|e| crate::segment::header_error(&done.path, e))?;
        if header.kind != FileKind::Done {
            return Err(Error::corrupt(&done.path, 0, "not a completion file"));
        }
        done.len = len;
        done.alloc = len;
        let report = done.replay(&bytes, recovery, now)?;
        done.sweep(now);
        // What survived is durable from here on.
        done.sync()?;
        Ok((done, report))
    }

    fn replay(&mut self, bytes: &[u8], recovery: RecoveryMode, now: u64) -> Result<DoneRecovery> {
        let mut report = DoneRecovery::default();
        let mut off = SEGMENT_HEADER_LEN;
        // Where a search after damage proved the bytes before synced.
        let mut synced = 0;
        while off < bytes.len() {
            match frame::decode(&bytes[off..], DONE_SEGMENT_ID, MAX_DONE_RECORD) {
                Ok(f) => {
                    let rec = self.checked(&f, off)?;
                    self.next_seq = self.next_seq.max(f.lsn.saturating_add(1));
                    self.apply(rec, off as u64, f.len, f.lsn, now);
                    off += f.len as usize;
                }
                Err(FrameError::Zero) if bytes[off..].iter().all(|&b| b == 0) => {
                    // The clean end: zeros written ahead of the records.
                    self.len = off as u64;
                    break;
                }
                Err(err) => {
                    let (next, durable) = later_side_frames(
                        bytes,
                        off,
                        DONE_SEGMENT_ID,
                        MAX_DONE_RECORD,
                        &mut synced,
                    );
                    match (next, recovery) {
                        (_, _) if !durable => {
                            // A torn tail: the last append did not complete
                            // (it runs to the file's end, past the zeros
                            // left unread).
                            report.torn_bytes = self.len - off as u64;
                            self.cut(off as u64)?;
                            break;
                        }
                        (Some(next), RecoveryMode::Salvage) => {
                            report.damaged_bytes += (next - off) as u64;
                            off = next;
                        }
                        (_, RecoveryMode::Strict) | (None, _) => {
                            return Err(Error::corrupt(
                                &self.path,
                                off as u64,
                                format!("{err} in the middle of the completion file"),
                            ));
                        }
                    }
                }
            }
        }
        if off == bytes.len() {
            // The records run to where the bytes read end: past them the
            // file holds zeros only (holes left unread, [`read_span`]).
            //
            // [`read_span`]: crate::vfs::read_span
            self.len = off as u64;
        }
        Ok(report)
    }

    /// The completion record framed by `f` at `off`, if it belongs in
    /// this file and its job id and sequence number are in range.
    fn checked<'b>(&self, f: &frame::Frame<'b>, off: usize) -> Result<DoneRecord<'b>> {
        let corrupt = |what: String| Error::corrupt(&self.path, off as u64, what);
        let Some(rec) = DoneRecord::decode(f.kind, f.body) else {
            return Err(corrupt(format!(
                "record kind {} does not belong in the completion file",
                f.kind
            )));
        };
        if rec.id() >= crate::format::MAX_ID {
            return Err(corrupt(format!(
                "completion record with job id {} out of range",
                rec.id()
            )));
        }
        if f.lsn >= crate::format::MAX_ID {
            return Err(corrupt(format!(
                "completion record with sequence number {} out of range",
                f.lsn
            )));
        }
        Ok(rec)
    }

    /// Applies one record to the index; a later record of a job supersedes
    /// the earlier ones.
    fn apply(&mut self, rec: DoneRecord<'_>, off: u64, len: u32, seq: u64, now: u64) {
        let id = rec.id();
        if !matches!(rec, DoneRecord::Horizon { .. }) {
            self.forget(id);
        }
        match rec {
            DoneRecord::Done { finished_ms, .. } => {
                // A time past the open's (written while the wall clock
                // was ahead) counts as the open's: it must not pin every
                // later record's time, nor keep results past their window.
                let finished_ms = finished_ms.min(now);
                self.last_ms = self.last_ms.max(finished_ms);
                if finished_ms.saturating_add(self.window_ms) > now {
                    self.insert(
                        id,
                        Entry {
                            off,
                            len,
                            at_ms: finished_ms,
                            purged: false,
                            seq,
                        },
                    );
                }
            }
            DoneRecord::Purged { purged_ms, .. } => {
                let purged_ms = purged_ms.min(now);
                self.last_ms = self.last_ms.max(purged_ms);
                self.insert(
                    id,
                    Entry {
                        off,
                        len,
                        at_ms: purged_ms,
                        purged: true,
                        seq,
                    },
                );
            }
            DoneRecord::Cleared { .. } => {}
            DoneRecord::Horizon { .. } => self.horizon = id,
        }
    }

    fn insert(&mut self, id: u64, e: Entry) {
        self.kept_bytes += u64::from(e.len);
        if e.purged {
            self.purged += 1;
            self.markers.push_back((e.seq, id));
        } else {
            self.results += 1;
            self.result_bytes += u64::from(e.len);
            self.order.push_back((e.at_ms, id, e.off));
        }
        self.entries.insert(id, e);
    }

    fn forget(&mut self, id: u64) {
        if let Some(old) = self.entries.remove(&id) {
            self.kept_bytes -= u64::from(old.len);
            if old.purged {
                self.purged -= 1;
            } else {
                self.results -= 1;
                self.result_bytes -= u64::from(old.len);
            }
        }
    }

    /// Drops the oldest purge markers while more than the cap are held,
    /// raising the horizon over their ids.
    fn sweep_markers(&mut self) {
        while self.purged > self.max_markers {
            let Some((seq, id)) = self.markers.pop_front() else {
                break;
            };
            if matches!(self.entries.get(&id), Some(e) if e.purged && e.seq == seq) {
                self.forget(id);
                self.horizon = self.horizon.max(id);
            }
        }
        if self.markers.len() > 2 * self.purged + 1024 {
            let entries = &self.entries;
            self.markers
                .retain(|&(seq, id)| entries.get(&id).is_some_and(|e| e.purged && e.seq == seq));
        }
    }

    /// Drops results whose window has ended, and the oldest results while
    /// more than the caps are held.
    fn sweep(&mut self, now: u64) {
        while let Some(&(at, id, off)) = self.order.front() {
            let expired = at.saturating_add(self.window_ms) <= now;
            let over = self.results > self.max_results || self.result_bytes > MAX_DONE_RESULT_BYTES;
            let current = matches!(self.entries.get(&id), Some(e) if !e.purged && e.off == off);
            if current && !expired && !over {
                break;
            }
            self.order.pop_front();
            if current {
                self.forget(id);
            }
        }
        if !self.markers_held {
            self.sweep_markers();
        }
        if self.order.capacity() > 4 * self.order.len() + 1024 {
            self.order.shrink_to_fit();
        }
        if self.entries.capacity() > 4 * self.entries.len() + 1024 {
            self.entries.shrink_to_fit();
        }
    }

    fn cut(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io("cutting torn completion-file tail", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("syncing completion file", &self.path, e))?;
        self.len = len;
        self.alloc = len;
        Ok(())
    }

    /// Appends `rec`: returns its offset, length and sequence number.
    fn append(&mut self, rec: &DoneRecord<'_>) -> Result<(u64, u32, u64)> {
        self.buf.clear();
        self.buf.resize(FRAME_HEADER_LEN, 0);
        let tail = rec.encode_into(&mut self.buf);
        let off = self.len;
        let end = off + (self.buf.len() + tail.len()) as u64;
        if end > self.alloc {
            self.grow(end)?;
        }
        let seq = self.next_seq;
        let frame = crate::dead::SideFrame {
            segment_id: DONE_SEGMENT_ID,
            seq,
            kind: rec.kind(),
            off,
            synced_len: self.synced_len,
        };
        let len = frame
            .write(&*self.file, &mut self.buf, tail)
            .map_err(|e| Error::io("appending to completion file", &self.path, e))?;
        self.len = off + u64::from(len);
        self.next_seq += 1;
        Ok((off, len, seq))
    }

    /// Writes zeros ahead of the records up to a multiple of
    /// [`GROW_CHUNK`] past `end`: appends then overwrite blocks that exist,
    /// so their fdatasync need not also commit a new file size and block
    /// allocation each time.
    fn grow(&mut self, end: u64) -> Result<()> {
        let new = end.div_ceil(GROW_CHUNK) * GROW_CHUNK;
        let zeros = vec![0u8; (new - self.alloc) as usize];
        self.file
            .write_at(&zeros, self.alloc)
            .map_err(|e| Error::io("growing completion file", &self.path, e))?;
        self.alloc = new;
        Ok(())
    }

    /// Records that job `id` completed with `result` at `now`. Not durable
    /// until [`DoneFile::sync`].
    pub fn record_result(&mut self, id: u64, result: &[u8], now: u64) -> Result<Recorded> {
        if result.len() > MAX_RESULT_LEN {
            return Err(result_too_large(result.len()));
        }
        // The result of the job's last settled run, to put back should
        // this one be taken back: the current result, unless it is itself
        // unsettled (its run's lease was lost, since this run holds one),
        // then the one that result would have put back. One that cannot be
        // read is not kept (a status would fail to read it too).
        let settled = match self.pending.remove(&id) {
            Some(p) if self.entries.get(&id).is_some_and(|e| e.seq == p.seq) => p.settled,
            _ => match self.get(id, now) {
                Ok(Some(Completion::Result {
                    finished_ms,
                    result,
                })) => Some((finished_ms, result)),
                _ => None,
            },
        };
        let at = now.max(self.last_ms);
        self.last_ms = at;
        let (off, len, seq) = self.append(&DoneRecord::Done {
            id,
            finished_ms: at,
            result,
        })?;
        self.apply_appended(id, off, len, seq, at, false);
        self.pending.insert(id, Pending { seq, settled });
        self.sweep(now);
        self.maybe_compact()?;
        Ok(Recorded { id, seq })
    }

    /// The ack of `recorded`'s run succeeded: its result is the job's
    /// settled one.
    pub fn confirm(&mut self, recorded: &Recorded) {
        if self
            .pending
            .get(&recorded.id)
            .is_some_and(|p| p.seq == recorded.seq)
        {
            self.pending.remove(&recorded.id);
        }
    }

    /// Takes back a result whose ack was refused (the lease was lost while
    /// the result was written): unless a later record of the job
    /// superseded it, the result of the job's last settled run (one whose
    /// ack succeeded, [`DoneFile::confirm`]), or none, is current again;
    /// never another refused run's. Not durable until [`DoneFile::sync`].
    pub fn retract(&mut self, recorded: Recorded) -> Result<()> {
        let Recorded { id, seq } = recorded;
        let pending = match self.pending.get(&id) {
            Some(p) if p.seq == seq => self.pending.remove(&id),
            _ => None,
        };
        if !matches!(self.entries.get(&id), Some(e) if e.seq == seq) {
            return Ok(());
        }
        match pending.and_then(|p| p.settled) {
            Some((finished_ms, result)) => {
                let (off, len, seq) = self.append(&DoneRecord::Done {
                    id,
                    finished_ms,
                    result: &result,
                })?;
                self.apply_appended(id, off, len, seq, finished_ms, false);
                Ok(())
            }
            None => self.clear(id),
        }
    }

    /// Makes room in the file's allocated space for `n` Purged markers, so
    /// that [`DoneFile::record_purged`] of `n` ids writes into blocks that
    /// exist: on a full disk this fails before any marker is written, and
    /// nothing changes (the file keeps its length; a partly written
    /// stretch of zeros past it is what a preallocation leaves anyway).
    pub fn make_room_for_purged(&mut self, n: usize) -> Result<()> {
        let end = self.len + PURGED_FRAME_LEN * n as u64;
        if end > self.alloc {
            self.grow(end)?;
        }
        Ok(())
    }

    /// Records that dead letters `ids` are being purged. Not durable until
    /// [`DoneFile::sync`].
    pub fn record_purged(&mut self, ids: &[u64], now: u64) -> Result<()> {
        let at = now.max(self.last_ms);
        self.last_ms = at;
        for &id in ids {
            let (off, len, seq) = self.append(&DoneRecord::Purged { id, purged_ms: at })?;
            self.apply_appended(id, off, len, seq, at, true);
        }
        self.sweep(now);
        self.maybe_compact()
    }

    /// Forgets what the file says about `id` (durable after a sync).
    pub fn clear(&mut self, id: u64) -> Result<()> {
        if self.entries.contains_key(&id) {
            self.append(&DoneRecord::Cleared { id })?;
            self.forget(id);
        }
        Ok(())
    }

    fn apply_appended(&mut self, id: u64, off: u64, len: u32, seq: u64, at_ms: u64, purged: bool) {
        self.forget(id);
        self.insert(
            id,
            Entry {
                off,
                len,
                at_ms,
                purged,
                seq,
            },
        );
    }

    /// The ids at or above `first` that have an entry (a result or a
    /// marker).
    pub fn ids_from(&self, first: u64) -> Vec<u64> {
        self.entries
            .keys()
            .copied()
            .filter(|&id| id >= first)
            .collect()
    }

    /// The ids with a purge marker.
    pub fn purged_ids(&self) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.purged)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Makes every append durable.
    pub fn sync(&mut self) -> Result<()> {
        if self.synced_len == self.len {
            return Ok(());
        }
        let file = &self.file;
        self.latch
            .run("syncing completion file", &self.path, || file.sync_data())?;
        self.synced_len = self.len;
        Ok(())
    }

    /// What the file knows about finished job `id` at `now`: a result
    /// still inside its window (read and verified from disk), a purge
    /// marker, or, without either, [`Completion::Expired`] at or below the
    /// horizon. Expired results are dropped from memory first.
    pub fn get(&mut self, id: u64, now: u64) -> Result<Option<Completion>> {
        self.sweep(now);
        let Some(e) = self.entries.get(&id).copied() else {
            return Ok(self.without_record(id));
        };
        if e.purged {
            return Ok(Some(Completion::Purged { purged_ms: e.at_ms }));
        }
        if e.at_ms.saturating_add(self.window_ms) <= now {
            return Ok(self.without_record(id));
        }
        let mut bytes = vec![0u8; e.len as usize];
        self.file
            .read_at(&mut bytes, e.off)
            .map_err(|err| Error::io("reading completion record", &self.path, err))?;
        let bad = |what: &str| Error::corrupt(&self.path, e.off, what.to_string());
        let f = frame::decode(&bytes, DONE_SEGMENT_ID, MAX_DONE_RECORD)
            .map_err(|err| bad(&err.to_string()))?;
        let Some(DoneRecord::Done {
            id: got,
            finished_ms,
            result,
        }) = DoneRecord::decode(f.kind, f.body)
        else {
            return Err(bad("completion record does not decode"));
        };
        if got != id {
            return Err(bad("completion record has another id"));
        }
        Ok(Some(Completion::Result {
            finished_ms,
            result: result.to_vec(),
        }))
    }

    /// What a finished job without a record of its own reads as.
    fn without_record(&self, id: u64) -> Option<Completion> {
        (id != 0 && id <= self.horizon).then_some(Completion::Expired)
    }

    /// Ends the open, once the queue cleared the entries it must (the
    /// markers of ids at or above `next_id`, the log's next job id, and of
    /// purges that did not happen, [`DoneFile::clear`]): only then are the
    /// oldest markers past the cap dropped, so that no stale marker is
    /// dropped uncleared and read again by a later open, and the horizon
    /// is lowered below `next_id`. Says whether it wrote. Not durable
    /// until [`DoneFile::sync`].
    pub fn finish_open(&mut self, next_id: u64) -> Result<bool> {
        self.markers_held = false;
        self.sweep_markers();
        self.lower_horizon_below(next_id)
    }

    /// Lowers the horizon below `next_id` (the log's next job id), writing
    /// the lowered one: a power cut under `Os` or `Periodic` can lose log
    /// records whose markers `done.rec` kept and dropped, and the ids from
    /// `next_id` on are issued again. Says whether it wrote.
    fn lower_horizon_below(&mut self, next_id: u64) -> Result<bool> {
        if self.horizon < next_id {
            return Ok(false);
        }
        let id = next_id.saturating_sub(1);
        self.append(&DoneRecord::Horizon { id })?;
        self.horizon = id;
        Ok(true)
    }

    /// The point to make durable for everything appended so far.
    pub fn sync_target(&self) -> SyncTarget {
        SyncTarget {
            generation: self.generation,
            len: self.len,
        }
    }

    /// Whether everything up to `t` is durable (a rewrite since syncs the
    /// new file whole).
    pub fn is_synced(&self, t: SyncTarget) -> bool {
        self.generation > t.generation || self.synced_len >= t.len
    }

    /// Records that the file was fdatasync'ed after `t` was taken.
    fn mark_synced(&mut self, t: SyncTarget) {
        if self.generation == t.generation {
            self.synced_len = self.synced_len.max(t.len);
        }
    }

    /// Bytes on disk (records and the zeros written ahead of them).
    pub fn disk_bytes(&self) -> u64 {
        self.alloc
    }

    /// End of the last record.
    #[cfg(test)]
    fn end(&self) -> u64 {
        self.len
    }

    /// Entries held in memory (results in their window and purge markers).
    pub fn index_len(&self) -> usize {
        self.entries.len()
    }

    /// Compacts when garbage dominates. A compaction that a full disk
    /// stops before its rename changed nothing (file and index as they
    /// were): it is tried again at a later record, and the record that
    /// asked for it stands. Before, it failed the record's operation (a
    /// cancel or a purge on a full disk then poisoned the queue).
    fn maybe_compact(&mut self) -> Result<()> {
        let garbage = self.len - SEGMENT_HEADER_LEN as u64 - self.kept_bytes;
        if garbage > COMPACT_MIN_GARBAGE
            && garbage * 2 > self.len
            && self.len >= self.compact_retry_len
        {
            match self.try_compact() {
                // Not again at every record while the disk stays full (each
                // try reads every kept record): once the file grew a chunk.
                Err(AtomicWriteError::Unchanged(e)) if crate::reserve::is_enospc(&e) => {
                    self.compact_retry_len = self.len + GROW_CHUNK;
                }
                other => {
                    other.map_err(AtomicWriteError::into_error)?;
                    self.compact_retry_len = 0;
                }
            }
        }
        Ok(())
    }

    /// Rewrites the file with only the records still needed:
    /// `done.rec.tmp`, fsync, rename over `done.rec`, fsync the directory.
    /// The index moves to the new offsets only once the new file is in
    /// place: a rewrite that fails before its rename (a full disk) leaves
    /// file and index as they were, and says so
    /// ([`AtomicWriteError::Unchanged`]).
    fn try_compact(&mut self) -> std::result::Result<(), AtomicWriteError> {
        let mut live: Vec<(u64, Entry)> = self.entries.iter().map(|(&id, &e)| (id, e)).collect();
        live.sort_unstable_by_key(|(_, e)| e.off);
        let mut body = Vec::with_capacity(self.kept_bytes as usize + FRAME_HEADER_LEN + 8);
        // The markers dropped leave the file here: the horizon over them
        // goes first (a later Horizon record, appended after, supersedes).
        let horizon_seq = self.next_seq;
        if self.horizon != 0 {
            let rec = DoneRecord::Horizon { id: self.horizon };
            let mut head = vec![0u8; FRAME_HEADER_LEN];
            let tail = rec.encode_into(&mut head);
            frame::seal(
                &mut head,
                DONE_SEGMENT_ID,
                horizon_seq,
                rec.kind(),
                0,
                0,
                tail,
            );
            body.extend_from_slice(&head);
        }
        let mut moved = HashMap::with_capacity(live.len());
        for (_, e) in &mut live {
            let mut bytes = vec![0u8; e.len as usize];
            self.file.read_at(&mut bytes, e.off).map_err(|err| {
                AtomicWriteError::Unchanged(Error::io("reading completion record", &self.path, err))
            })?;
            // The rewritten file is synced whole: clear the sync lag.
            frame::clear_sync_lag(&mut bytes, DONE_SEGMENT_ID);
            let off = (SEGMENT_HEADER_LEN + body.len()) as u64;
            moved.insert(e.off, off);
            e.off = off;
            body.extend_from_slice(&bytes);
        }
        let file = write_side_file(
            &*self.vfs,
            &self.dir,
            &self.path,
            FileKind::Done,
            DONE_SEGMENT_ID,
            self.mode,
            &body,
        )?;
        self.entries.extend(live);
        if self.horizon != 0 {
            self.next_seq = horizon_seq + 1;
        }
        self.file = Arc::from(file);
        self.len = (SEGMENT_HEADER_LEN + body.len()) as u64;
        self.alloc = self.len;
        self.synced_len = self.len;
        self.generation += 1;
        let order = std::mem::take(&mut self.order);
        self.order = order
            .into_iter()
            .filter_map(|(at, id, off)| moved.get(&off).map(|&n| (at, id, n)))
            .filter(|&(_, id, off)| self.entries.get(&id).is_some_and(|e| e.off == off))
            .collect();
        Ok(())
    }
}

/// A point in the completion file to make durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncTarget {
    generation: u64,
    len: u64,
}

/// The completion file with group commit: appends take the file's lock
/// briefly; [`Completions::make_durable`] fdatasyncs outside it, one caller
/// at a time, and one fdatasync covers every append made before it began.
#[derive(Debug)]
pub struct Completions {
    file: parking_lot::Mutex<DoneFile>,
    syncing: parking_lot::Mutex<()>,
}

impl Completions {
    /// Wraps an open completion file.
    pub fn new(file: DoneFile) -> Completions {
        Completions {
            file: parking_lot::Mutex::new(file),
            syncing: parking_lot::Mutex::new(()),
        }
    }

    /// Locks the file (lock order: the queue's state first, then this).
    pub fn lock(&self) -> parking_lot::MutexGuard<'_, DoneFile> {
        self.file.lock()
    }

    /// Locks the file for work that ends in [`DoneFile::sync`] under the
    /// lock (a purge's or a cancel's markers, `Queue::sync`, `close`):
    /// takes the sync turn first, so that no such sync runs while a
    /// [`Completions::make_durable`] fdatasync is in flight, whose failure
    /// (reported once by the kernel) must be latched before the file is
    /// synced again. Lock order: the queue's state, the turn, the file.
    pub fn lock_for_sync(&self) -> SyncGuard<'_> {
        let turn = self.syncing.lock();
        SyncGuard {
            file: self.file.lock(),
            _turn: turn,
        }
    }

    /// Makes everything up to `target` durable, sharing the fdatasync with
    /// concurrent callers.
    pub fn make_durable(&self, target: SyncTarget) -> Result<()> {
        let _turn = self.syncing.lock();
        let what = "syncing completion file";
        let (upto, file, path) = {
            let done = self.file.lock();
            if done.is_synced(target) {
                return Ok(());
            }
            done.latch.check(what, &done.path)?;
            (done.sync_target(), done.file.clone(), done.path.clone())
        };
        let synced = file.sync_data().map_err(|e| Error::io(what, &path, e));
        let mut done = self.file.lock();
        if let Err(e) = &synced {
            done.latch.note(e);
        }
        synced?;
        done.mark_synced(upto);
        Ok(())
    }
}

/// The completion file locked with the sync turn held
/// ([`Completions::lock_for_sync`]).
pub struct SyncGuard<'a> {
    file: parking_lot::MutexGuard<'a, DoneFile>,
    _turn: parking_lot::MutexGuard<'a, ()>,
}

impl std::ops::Deref for SyncGuard<'_> {
    type Target = DoneFile;
    fn deref(&self) -> &DoneFile {
        &self.file
    }
}

impl std::ops::DerefMut for SyncGuard<'_> {
    fn deref_mut(&mut self) -> &mut DoneFile {
        &mut self.file
    }
}

/// The error for a result over [`MAX_RESULT_LEN`].
pub fn result_too_large(len: usize) -> Error {
    Error::new(
        ErrorKind::PayloadTooLarge,
        format!("result of {len} bytes is over the limit of {MAX_RESULT_LEN} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::StdFs;

    fn open(dir: &Path, window: u64, now: u64, mode: RecoveryMode) -> Result<DoneFile> {
        let (mut d, _) = DoneFile::open(Arc::new(StdFs), dir, 0o600, mode, window, now)?;
        d.finish_open(crate::format::MAX_ID)?;
        Ok(d)
    }

    /// Found by review: two runs whose acks were both refused (each lease
    /// ran out while its result was synced) left the first run's result,
    /// which no settled run produced: the second run's retract put back
    /// the result it had superseded.
    #[test]
    fn a_refused_run_never_brings_back_another_refused_runs_result() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(dir.path(), 1000, 10, RecoveryMode::Strict).unwrap();
        let settled = d.record_result(1, b"settled", 10).unwrap();
        d.confirm(&settled);
        let a = d.record_result(1, b"A, refused", 11).unwrap();
        let b = d.record_result(1, b"B, refused", 12).unwrap();
        d.retract(a).unwrap();
        d.retract(b).unwrap();
        let now = d.get(1, 13).unwrap();
        assert!(
            matches!(&now, Some(Completion::Result { result, .. }) if result == b"settled"),
            "{now:?}"
        );
        // With no settled run before them: no result at all.
        let a = d.record_result(2, b"A, refused", 14).unwrap();
        let b = d.record_result(2, b"B, refused", 15).unwrap();
        d.retract(a).unwrap();
        d.retract(b).unwrap();
        assert!(d.get(2, 16).unwrap().is_none());
        assert!(d.pending.is_empty(), "nothing left pending");
    }

    #[test]
    fn purged_markers_fill_exactly_the_room_made_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(dir.path(), 1000, 10, RecoveryMode::Strict).unwrap();
        // Up to the allocation's edge, so one more byte would grow it.
        let n = ((GROW_CHUNK - d.len) / PURGED_FRAME_LEN) as usize;
        d.make_room_for_purged(n).unwrap();
        let alloc = d.alloc;
        let ids: Vec<u64> = (1..=n as u64).collect();
        let before = d.len;
        d.record_purged(&ids, 20).unwrap();
        assert_eq!(d.len - before, PURGED_FRAME_LEN * n as u64);
        assert_eq!(d.alloc, alloc, "the markers grew the file");
    }

    #[test]
    fn results_and_markers_survive_reopen_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(dir.path(), 1000, 10, RecoveryMode::Strict).unwrap();
        d.record_result(1, b"one", 10).unwrap();
        d.record_result(2, b"two", 20).unwrap();
        d.record_purged(&[3], 30).unwrap();
        d.record_result(2, b"two again", 40).unwrap();
        d.sync().unwrap();
        drop(d);
        let mut d = open(dir.path(), 1000, 500, RecoveryMode::Strict).unwrap();
        let r = |result: &[u8], finished_ms| {
            Some(Completion::Result {
                finished_ms,
                result: result.to_vec(),
            })
        };
        assert_eq!(d.get(1, 500).unwrap(), r(b"one", 10));
        assert_eq!(d.get(2, 500).unwrap(), r(b"two again", 40));
        assert_eq!(
            d.get(3, 500).unwrap(),
            Some(Completion::Purged { purged_ms: 30 })
        );
        // Past the window results are gone, markers stay.
        assert_eq!(d.get(1, 1010).unwrap(), None);
        drop(d);
        let d = open(dir.path(), 1000, 1041, RecoveryMode::Strict).unwrap();
        assert_eq!(d.index_len(), 1);
        assert_eq!(d.purged_ids(), vec![3]);
    }

    #[test]
    fn the_cap_forgets_the_oldest_results() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(dir.path(), u64::MAX / 4, 1, RecoveryMode::Strict).unwrap();
        d.max_results = 10;
        for id in 1..=100 {
            d.record_result(id, &[7u8; 100], id).unwrap();
        }
        assert_eq!(d.index_len(), 10);
        assert_eq!(d.get(90, 100).unwrap(), None);
        assert!(d.get(91, 100).unwrap().is_some());
        assert!(d.order.len() <= 10);
    }

    /// Purge markers were kept for good: an application that cancels
    /// most of its jobs grew `done.rec` and its index without bound. Past
    /// the cap the oldest are dropped, and their jobs read `Expired`,
    /// never `Done`; the horizon survives a rewrite and a reopen.
    #[test]
    fn markers_over_the_cap_are_dropped_oldest_first_and_read_expired() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(dir.path(), u64::MAX / 4, 1, RecoveryMode::Strict).unwrap();
        d.max_markers = 3;
        d.record_result(2, b"kept", 1).unwrap();
        d.record_purged(&[1, 3, 4], 1).unwrap();
        d.record_purged(&[5, 6], 2).unwrap();
        assert_eq!(d.index_len(), 4, "the result and three markers");
        assert_eq!(d.get(1, 2).unwrap(), Some(Completion::Expired));
        assert_eq!(d.get(3, 2).unwrap(), Some(Completion::Expired));
        assert_eq!(
            d.get(4, 2).unwrap(),
            Some(Completion::Purged { purged_ms: 1 })
        );
        assert_eq!(
            d.get(6, 2).unwrap(),
            Some(Completion::Purged { purged_ms: 2 })
        );
        assert!(matches!(
            d.get(2, 2).unwrap(),
            Some(Completion::Result { .. })
        ));
        assert_eq!(d.get(7, 2).unwrap(), None, "above the horizon: plain done");
        // The rewrite drops the markers' records and writes the horizon.
        d.try_compact()
            .map_err(AtomicWriteError::into_error)
            .unwrap();
        d.sync().unwrap();
        drop(d);
        let mut d = open(dir.path(), u64::MAX / 4, 3, RecoveryMode::Strict).unwrap();
        assert_eq!(d.index_len(), 4);
        assert_eq!(d.get(1, 3).unwrap(), Some(Completion::Expired));
        assert_eq!(d.get(3, 3).unwrap(), Some(Completion::Expired));
        assert_eq!(
            d.get(5, 3).unwrap(),
            Some(Completion::Purged { purged_ms: 2 })
        );
        assert_eq!(d.get(7, 3).unwrap(), None);
        // Later records after the rewrite: the sequence goes on.
        d.record_purged(&[7], 3).unwrap();
        d.sync().unwrap();
        drop(d);
        let mut d = open(dir.path(), u64::MAX / 4, 4, RecoveryMode::Strict).unwrap();
        assert_eq!(
            d.get(7, 4).unwrap(),
            Some(Completion::Purged { purged_ms: 3 })
        );
        assert_eq!(d.get(3, 4).unwrap(), Some(Completion::Expired));
    }

    /// Without a rewrite the dropped markers are still in the file: the
    /// next open, under the same cap, drops them again.
    #[test]
    fn dropped_markers_not_yet_rewritten_are_dropped_again_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(dir.path(), u64::MAX / 4, 1, RecoveryMode::Strict).unwrap();
        d.max_markers = 2;
        d.record_purged(&[1, 2, 3, 4], 1).unwrap();
        d.sync().unwrap();
        drop(d);
        let path = dir.path();
        let (mut d, _) = DoneFile::open(
            Arc::new(StdFs),
            path,
            0o600,
            RecoveryMode::Strict,
            u64::MAX / 4,
            2,
        )
        .unwrap();
        // Every marker is held until the open finishes; then the test's
        // cap drops two.
        assert_eq!(d.index_len(), 4);
        d.max_markers = 2;
        d.finish_open(crate::format::MAX_ID).unwrap();
        assert_eq!(d.index_len(), 2);
        assert_eq!(d.get(2, 2).unwrap(), Some(Completion::Expired));
        assert_eq!(
            d.get(3, 2).unwrap(),
            Some(Completion::Purged { purged_ms: 1 })
        );
    }

    /// A power cut under `Os` can lose log records of jobs whose markers
    /// were dropped; their ids are issued again, and must not read
    /// `Expired` once finished.
    #[test]
    fn the_horizon_is_lowered_below_the_next_id_and_stays_lowered() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(dir.path(), u64::MAX / 4, 1, RecoveryMode::Strict).unwrap();
        d.max_markers = 1;
        d.record_purged(&[10, 20], 1).unwrap();
        assert_eq!(d.get(10, 1).unwrap(), Some(Completion::Expired));
        assert!(!d.lower_horizon_below(11).unwrap(), "10 is below 11");
        assert!(d.lower_horizon_below(8).unwrap());
        assert_eq!(d.get(8, 1).unwrap(), None);
        assert_eq!(d.get(7, 1).unwrap(), Some(Completion::Expired));
        d.sync().unwrap();
        drop(d);
        let mut d = open(dir.path(), u64::MAX / 4, 2, RecoveryMode::Strict).unwrap();
        assert_eq!(d.get(8, 2).unwrap(), None, "the lowered horizon holds");
        assert_eq!(d.get(7, 2).unwrap(), Some(Completion::Expired));
    }

    #[test]
    fn compaction_keeps_what_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(dir.path(), 1000, 0, RecoveryMode::Strict).unwrap();
        for id in 1..=1000u64 {
            d.record_result(id, &[1u8; 4000], id * 10).unwrap();
        }
        d.record_purged(&[5000], 10_000).unwrap();
        // Every result but the last hundred has expired by now.
        for id in 1001..=1100u64 {
            d.record_result(id, &[2u8; 4000], 10_000 + id).unwrap();
        }
        assert!(d.disk_bytes() < 3 << 20, "{} bytes", d.disk_bytes());
        d.sync().unwrap();
        drop(d);
        let mut d = open(dir.path(), 1000, 11_100, RecoveryMode::Strict).unwrap();
        assert!(matches!(
            d.get(1100, 11_100).unwrap(),
            Some(Completion::Result { ref result, .. }) if result == &[2u8; 4000]
        ));
        assert_eq!(
            d.get(5000, 11_100).unwrap(),
            Some(Completion::Purged { purged_ms: 10_000 })
        );
    }

    #[test]
    fn a_compaction_that_fails_leaves_file_and_index_as_they_were() {
        use crate::vfs::{Fault, FaultOp, SimFs};
        let fs = SimFs::new();
        let dir = Path::new("/q");
        fs.create_dir_all(dir, 0o700).unwrap();
        let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
        let (mut d, _) = DoneFile::open(vfs, dir, 0o600, RecoveryMode::Strict, 1000, 0).unwrap();
        // 50 results that expire, then 150 that stay: a quarter garbage,
        // too little for a compaction of its own.
        for id in 1..=200u64 {
            let at = if id <= 50 { 10 } else { 1_500 };
            d.record_result(id, &[id as u8; 4000], at).unwrap();
        }
        d.sync().unwrap();
        let kept = |d: &mut DoneFile, id: u64| match d.get(id, 2_000) {
            Ok(Some(Completion::Result { result, .. })) => result == [id as u8; 4000],
            other => panic!("job {id}: {other:?}"),
        };
        assert!(d.get(1, 2_000).unwrap().is_none(), "expired");
        // The rewrite's file cannot be made.
        fs.set_fault(Some(Fault {
            op: FaultOp::Create,
            at: fs.op_count(FaultOp::Create),
            forever: true,
            kind: std::io::ErrorKind::StorageFull,
        }));
        assert!(matches!(
            d.try_compact(),
            Err(AtomicWriteError::Unchanged(_))
        ));
        fs.set_fault(None);
        // Before, the index already pointed where the new file would have
        // put the records: in the old one, the expired results lie there.
        assert!((51..=200).all(|id| kept(&mut d, id)));
        d.try_compact().unwrap();
        assert!((51..=200).all(|id| kept(&mut d, id)));
    }

    #[test]
    fn torn_tail_is_cut_and_middle_damage_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(dir.path(), 1000, 0, RecoveryMode::Strict).unwrap();
        d.record_result(1, b"first", 1).unwrap();
        d.sync().unwrap();
        d.record_result(2, b"second", 2).unwrap();
        let full = d.end() as usize;
        drop(d);
        let path = dir.path().join(DONE_FILE);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..full - 3]).unwrap();
        let (d, rep) = DoneFile::open(
            Arc::new(StdFs),
            dir.path(),
            0o600,
            RecoveryMode::Strict,
            1000,
            3,
        )
        .unwrap();
        assert!(rep.torn_bytes > 0);
        assert_eq!(d.index_len(), 1);
        drop(d);
        let mut bad = bytes.clone();
        bad[SEGMENT_HEADER_LEN + 26] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let err = open(dir.path(), 1000, 3, RecoveryMode::Strict).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert_eq!(err.offset(), Some(SEGMENT_HEADER_LEN as u64));
        assert_eq!(err.path(), Some(path.as_path()));
        let mut d = open(dir.path(), 1000, 3, RecoveryMode::Salvage).unwrap();
        assert_eq!(d.get(1, 3).unwrap(), None);
        assert!(d.get(2, 3).unwrap().is_some());
    }

    /// A retracted result leaves the job's earlier settled result (or
    /// none), on reopen too; a result superseded since is not retracted.
    #[test]
    fn a_retracted_result_gives_way_to_the_one_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(dir.path(), 1000, 0, RecoveryMode::Strict).unwrap();
        let result = |r: &[u8], at| {
            Some(Completion::Result {
                finished_ms: at,
                result: r.to_vec(),
            })
        };
        let earlier = d.record_result(1, b"earlier", 1).unwrap();
        d.confirm(&earlier); // its ack succeeded
        let refused = d.record_result(1, b"refused", 2).unwrap();
        d.retract(refused).unwrap();
        assert_eq!(d.get(1, 3).unwrap(), result(b"earlier", 1));
        let refused = d.record_result(2, b"refused", 2).unwrap();
        d.retract(refused).unwrap();
        assert_eq!(d.get(2, 3).unwrap(), None);
        let superseded = d.record_result(3, b"refused", 2).unwrap();
        d.record_result(3, b"accepted", 3).unwrap();
        d.retract(superseded).unwrap();
        assert_eq!(d.get(3, 3).unwrap(), result(b"accepted", 3));
        d.sync().unwrap();
        drop(d);
        let mut d = open(dir.path(), 1000, 4, RecoveryMode::Strict).unwrap();
        assert_eq!(d.get(1, 4).unwrap(), result(b"earlier", 1));
        assert_eq!(d.get(2, 4).unwrap(), None);
        assert_eq!(d.get(3, 4).unwrap(), result(b"accepted", 3));
    }
}
