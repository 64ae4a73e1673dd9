//! The dead-letter file: jobs that failed for good, kept for inspection.
//!
//! One append-only file, `dead.wal`, with the same header and framing as
//! log segments (file kind 2, checksum seed 0). A [`Record::Dead`] adds a
//! dead letter with its payload, attempts and last error; a
//! [`Record::Removed`] drops one (redriven or purged). The file is not
//! mapped: it is read with `pread`, cut with `set_len` when its tail is
//! torn, and rewritten (`dead.wal.tmp`, fsync, rename, fsync directory)
//! when removed records make up most of it.
//!
//! Each record's LSN is the main log's next LSN when it was written, so a
//! dead letter and a later redrive (an enqueue record in the main log with
//! an LSN at least as large) are ordered across the two files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::frame::{self, FRAME_HEADER_LEN};
use crate::format::header::{FileKind, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::format::record::{DeadRec, Record};
use crate::format::resync;
use crate::format::FORMAT_VERSION;
use crate::options::RecoveryMode;
use crate::sync_latch::SyncLatch;
use crate::vfs::{Vfs, VfsFile};

mod compact;

/// File name of the dead-letter file.
pub const DEAD_FILE: &str = "dead.wal";
/// Checksum seed ("segment id") of the dead-letter file.
pub const DEAD_SEGMENT_ID: u32 = 0;
/// Largest dead-letter record accepted when reading.
const MAX_DEAD_RECORD: u32 = 1 << 30;

/// A job in the dead letters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The job id.
    pub id: u64,
    /// Attempts made.
    pub attempts: u32,
    /// When the job was first enqueued (ms since the epoch).
    pub enqueued_ms: u64,
    /// When it was dead-lettered (ms since the epoch).
    pub dead_ms: u64,
    /// The last error text.
    pub error: String,
    /// The idempotency key, if the job had one.
    pub key: Option<Vec<u8>>,
    /// The payload (empty in an inspector's snapshot taken without
    /// payloads, `inspect::Inspector::snapshot_without_payloads`).
    pub payload: Vec<u8>,
    /// The name of the queue the job belonged to (`"default"` for the
    /// default queue); a redrive returns it there.
    #[serde(default = "default_queue_name")]
    pub queue: String,
    /// The job's priority level; a redrive keeps it.
    #[serde(skip)]
    pub priority: crate::Priority,
    /// The job's message group, if it had one (for inspection): a redrive
    /// brings the job back without its group (see `docs/design-queues.md`).
    #[serde(default)]
    pub group: Option<Vec<u8>>,
}

fn default_queue_name() -> String {
    crate::named::DEFAULT_QUEUE.to_string()
}

impl DeadLetter {
    /// The dead letter a decoded record holds (its error text read as
    /// UTF-8, invalid bytes replaced).
    pub(crate) fn from_rec(d: &DeadRec<'_>) -> DeadLetter {
        DeadLetter {
            id: d.id,
            attempts: d.attempts,
            enqueued_ms: d.enqueued_ms,
            dead_ms: d.dead_ms,
            error: String::from_utf8_lossy(d.error).into_owned(),
            key: (!d.key.is_empty()).then(|| d.key.to_vec()),
            payload: d.payload.to_vec(),
            queue: if d.queue.is_empty() {
                default_queue_name()
            } else {
                String::from_utf8_lossy(d.queue).into_owned()
            },
            priority: crate::Priority::from_byte(d.priority),
            group: (!d.group.is_empty()).then(|| d.group.to_vec()),
        }
    }
}

/// Where a dead letter's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadEntry {
    /// Offset of the record.
    pub off: u64,
    /// Length of the record.
    pub len: u32,
    /// The record's LSN (main-log position when written).
    pub lsn: u64,
}

/// What opening the dead-letter file found.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeadRecovery {
    /// Bytes of torn tail cut off.
    pub torn_bytes: u64,
    /// Bytes skipped as damaged (salvage mode).
    pub damaged_bytes: u64,
}

/// The bytes of a removal's frame (its record is a job id).
pub const REMOVED_FRAME_LEN: u64 = FRAME_HEADER_LEN as u64 + 8;

/// [`DeadFile::make_room_for_removals`] allocates in steps of this many
/// bytes (a block).
const RESERVE_STEP: u64 = 4096;

/// The open dead-letter file.
#[derive(Debug)]
pub struct DeadFile {
    path: PathBuf,
    file: Arc<dyn VfsFile>,
    len: u64,
    entries: BTreeMap<u64, DeadEntry>,
    garbage: u64,
    /// Bytes known durable; a frame's sync lag is its offset minus this.
    synced_len: u64,
    /// A failed fdatasync of the file, latched (see `sync_latch`).
    latch: SyncLatch,
    buf: Vec<u8>,
    /// A compaction is under way (see `compact`).
    compacting: bool,
    /// The file's blocks are allocated up to here (at least `len`), by
    /// [`DeadFile::make_room_for_removals`].
    reserved: u64,
}

impl DeadFile {
    /// Opens `dir/dead.wal`, creating it if missing, and verifies it.
    #[cfg(test)]
    pub fn open(
        vfs: &dyn Vfs,
        dir: &Path,
        mode: u32,
        recovery: RecoveryMode,
    ) -> Result<(DeadFile, DeadRecovery)> {
        let (mut dead, report) = DeadFile::open_unsynced(vfs, dir, mode, recovery)?;
        dead.opened(false)?;
        Ok((dead, report))
    }

    /// [`DeadFile::open`] without its `fdatasync`: the caller calls
    /// [`DeadFile::opened`] before anything is appended.
    pub fn open_unsynced(
        vfs: &dyn Vfs,
        dir: &Path,
        mode: u32,
        recovery: RecoveryMode,
    ) -> Result<(DeadFile, DeadRecovery)> {
        let path = dir.join(DEAD_FILE);
        let file = match vfs.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((
                    Self::create(vfs, dir, &path, mode)?,
                    DeadRecovery::default(),
                ))
            }
            Err(e) => return Err(Error::io("opening dead letters", &path, e)),
        };
        let len = file
            .len()
            .map_err(|e| Error::io("reading dead-letter length", &path, e))?;
        let head_len =
            usize::try_from(len).map_or(SEGMENT_HEADER_LEN, |l| l.min(SEGMENT_HEADER_LEN));
        let mut head = vec![0u8; head_len];
        file.read_at(&mut head, 0)
            .map_err(|e| Error::io("reading dead letters", &path, e))?;
        let header =
            SegmentHeader::decode(&head).map_err(|e| crate::segment::header_error(&path, e))?;
        if header.kind != FileKind::Dead {
            return Err(Error::corrupt(&path, 0, "not a dead-letter file"));
        }
        let mut dead = DeadFile {
            path,
            file: Arc::from(file),
            len,
            entries: BTreeMap::new(),
            garbage: 0,
            synced_len: 0,
            latch: SyncLatch::default(),
            buf: Vec::new(),
            compacting: false,
            reserved: 0,
        };
        let report = dead.replay(recovery)?;
        Ok((dead, report))
    }

    /// Ends an open: what survived is durable from here on, so that sync
    /// lags written from now on are measured from a true durable point.
    /// `durable` says the caller knows the file on disk is already what
    /// was read (synced by a clean close, untouched since): no
    /// `fdatasync` then. A file just created was synced by its creation.
    pub fn opened(&mut self, durable: bool) -> Result<()> {
        if durable {
            self.synced_len = self.len;
            return Ok(());
        }
        // `open_unsynced` leaves `synced_len` at 0 for a file it read.
        self.sync_if_dirty()
    }

    fn create(vfs: &dyn Vfs, dir: &Path, path: &Path, mode: u32) -> Result<DeadFile> {
        let file = write_fresh(vfs, dir, path, mode, &[])?;
        Ok(DeadFile {
            path: path.to_path_buf(),
            file: Arc::from(file),
            len: SEGMENT_HEADER_LEN as u64,
            entries: BTreeMap::new(),
            garbage: 0,
            synced_len: SEGMENT_HEADER_LEN as u64,
            latch: SyncLatch::default(),
            buf: Vec::new(),
            compacting: false,
            reserved: 0,
        })
    }

    /// Reads the frame at `off` into `buf`: the bytes it claims to span
    /// (or what is left of the file), one `pread` or two.
    fn read_frame(&self, off: u64, buf: &mut Vec<u8>) -> Result<()> {
        let left = usize::try_from(self.len - off).unwrap_or(usize::MAX);
        buf.resize(left.min(FRAME_HEADER_LEN), 0);
        self.read_into(buf, off)?;
        let claimed = crate::format::u32_at(buf, 4).unwrap_or(0) as usize;
        if claimed > buf.len() && claimed <= MAX_DEAD_RECORD as usize {
            buf.resize(claimed.min(left), 0);
            self.read_into(buf, off)?;
        }
        Ok(())
    }

    fn read_into(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.file
            .read_at(buf, off)
            .map_err(|e| Error::io("reading dead letters", &self.path, e))
    }

    /// Indexes the records one at a time; only damage makes it read the
    /// rest of the file at once (to tell a torn tail from corruption).
    fn replay(&mut self, recovery: RecoveryMode) -> Result<DeadRecovery> {
        let mut report = DeadRecovery::default();
        let mut off = SEGMENT_HEADER_LEN as u64;
        let mut buf = Vec::new();
        let mut past = Past {
            tail: None,
            synced: 0,
            recovery,
        };
        while off < self.len {
            self.read_frame(off, &mut buf)?;
            match frame::decode(&buf, DEAD_SEGMENT_ID, MAX_DEAD_RECORD) {
                Ok(f) => {
                    let (kind, len, lsn) = (f.kind, f.len, f.lsn);
                    self.index_record(Record::decode(kind, f.body), off, len, lsn)?;
                    off += u64::from(len);
                }
                Err(err) => match self.past_damage(off, &err, &mut past, &mut report)? {
                    Some(next) => off = next,
                    None => break,
                },
            }
        }
        Ok(report)
    }

    /// Deals with damage (`err`) at `off`: returns where the records go on
    /// (Salvage), or `None` after cutting a torn tail. The rest of the file
    /// is read once, at the first damage, not again at each.
    fn past_damage(
        &mut self,
        off: u64,
        err: &frame::FrameError,
        past: &mut Past,
        report: &mut DeadRecovery,
    ) -> Result<Option<u64>> {
        if past.tail.is_none() {
            // Up to where the data ends: a file grown by zeros (holes) past
            // its records is not read into memory (they hold no frame).
            let rest = crate::vfs::read_span(&*self.file, &self.path, off, self.len)?;
            past.tail = Some((off, rest));
        }
        let Some((base, rest)) = past.tail.as_ref() else {
            return Ok(None);
        };
        let damaged = (off - base) as usize;
        let (next, durable) = later_frames(rest, damaged, &mut past.synced);
        match (next, past.recovery) {
            (_, _) if !durable => {
                // A torn tail: the last append did not complete.
                report.torn_bytes = self.len - off;
                self.cut(off)?;
                Ok(None)
            }
            (Some(next), RecoveryMode::Salvage) => {
                let next = base + next as u64;
                report.damaged_bytes += next - off;
                Ok(Some(next))
            }
            (_, RecoveryMode::Strict) | (None, _) => Err(Error::corrupt(
                &self.path,
                off,
                format!("{err} in the middle of the dead letters"),
            )),
        }
    }

    fn index_record(
        &mut self,
        rec: Option<Record<'_>>,
        off: u64,
        len: u32,
        lsn: u64,
    ) -> Result<()> {
        match rec {
            Some(Record::Dead(d)) if d.id >= crate::format::MAX_ID => Err(Error::corrupt(
                &self.path,
                off,
                format!("dead letter with job id {} out of range", d.id),
            )),
            Some(Record::Dead(d)) => {
                if let Some(old) = self.entries.insert(d.id, DeadEntry { off, len, lsn }) {
                    self.garbage += u64::from(old.len);
                }
                Ok(())
            }
            Some(Record::Removed { id }) => {
                if let Some(old) = self.entries.remove(&id) {
                    self.garbage += u64::from(old.len);
                }
                self.garbage += u64::from(len);
                Ok(())
            }
            Some(other) => Err(Error::corrupt(
                &self.path,
                off,
                format!(
                    "record kind {} does not belong in dead letters",
                    other.kind()
                ),
            )),
            None => Err(Error::corrupt(
                &self.path,
                off,
                "dead-letter record does not decode",
            )),
        }
    }

    fn cut(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io("cutting torn dead-letter tail", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("syncing dead letters", &self.path, e))?;
        self.len = len;
        self.reserved = len;
        Ok(())
    }

    /// The dead letters by id.
    pub fn entries(&self) -> &BTreeMap<u64, DeadEntry> {
        &self.entries
    }

    /// Appends a dead letter. Not durable until [`DeadFile::sync`].
    pub fn add(&mut self, rec: &DeadRec<'_>, lsn: u64) -> Result<()> {
        let off = self.append(&Record::Dead(*rec), lsn)?;
        let len = u32::try_from(self.len - off).unwrap_or(u32::MAX);
        if let Some(old) = self.entries.insert(rec.id, DeadEntry { off, len, lsn }) {
            self.garbage += u64::from(old.len);
        }
        Ok(())
    }

    /// Makes room for `n` removals ([`DeadFile::remove`]): the blocks
    /// they will be written to are allocated first (without changing the
    /// file's length), so that on a full disk this fails, before anything
    /// is written, rather than a removal halfway through a purge.
    pub fn make_room_for_removals(&mut self, n: usize) -> Result<()> {
        self.make_room(REMOVED_FRAME_LEN * n as u64)
    }

    /// Makes room for a dead letter like `rec` ([`DeadFile::add`]; its
    /// fields are fixed-width, so only the lengths of its texts and
    /// payload count): its blocks are allocated first, as for
    /// [`DeadFile::make_room_for_removals`].
    pub fn make_room_for_letter(&mut self, rec: &DeadRec<'_>) -> Result<()> {
        self.buf.clear();
        self.buf.resize(FRAME_HEADER_LEN, 0);
        let tail = Record::Dead(*rec).encode_into(&mut self.buf);
        let len = (self.buf.len() + tail.len()) as u64;
        self.make_room(len)
    }

    /// Allocates the blocks of the next `bytes` past the end, in steps of
    /// [`RESERVE_STEP`], where they are not allocated yet.
    fn make_room(&mut self, bytes: u64) -> Result<()> {
        let end = self.len + bytes;
        if end > self.reserved.max(self.len) {
            let upto = end.div_ceil(RESERVE_STEP) * RESERVE_STEP;
            self.file
                .reserve(upto)
                .map_err(|e| Error::io("making room in the dead letters", &self.path, e))?;
            self.reserved = upto;
        }
        Ok(())
    }

    /// Appends a removal of dead letter `id`. Not durable until synced.
    pub fn remove(&mut self, id: u64, lsn: u64) -> Result<bool> {
        let Some(old) = self.entries.remove(&id) else {
            return Ok(false);
        };
        let off = self.append(&Record::Removed { id }, lsn)?;
        self.garbage += u64::from(old.len) + (self.len - off);
        Ok(true)
    }

    fn append(&mut self, rec: &Record<'_>, lsn: u64) -> Result<u64> {
        self.buf.clear();
        self.buf.resize(FRAME_HEADER_LEN, 0);
        let tail = rec.encode_into(&mut self.buf);
        let off = self.len;
        let frame = SideFrame {
            segment_id: DEAD_SEGMENT_ID,
            seq: lsn,
            kind: rec.kind(),
            off,
            synced_len: self.synced_len,
        };
        let len = frame
            .write(&*self.file, &mut self.buf, tail)
            .map_err(|e| Error::io("appending dead letter", &self.path, e))?;
        self.len = off + u64::from(len);
        Ok(off)
    }

    /// Makes every append durable.
    pub fn sync(&mut self) -> Result<()> {
        let file = &self.file;
        self.latch
            .run("syncing dead letters", &self.path, || file.sync_data())?;
        self.synced_len = self.len;
        Ok(())
    }

    /// Makes every append durable, if anything was appended since the
    /// last sync.
    pub fn sync_if_dirty(&mut self) -> Result<()> {
        if self.synced_len == self.len {
            return Ok(());
        }
        self.sync()
    }

    /// Reads and verifies dead letter `id`.
    pub fn get(&self, id: u64) -> Result<Option<DeadLetter>> {
        let Some(entry) = self.entries.get(&id).copied() else {
            return Ok(None);
        };
        read_letter(&*self.file, &self.path, id, entry).map(Some)
    }

    /// The open file, for reading letters without the queue lock.
    pub fn file_handle(&self) -> Arc<dyn VfsFile> {
        self.file.clone()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.len
    }

    /// Whether removed records make up enough of the file to rewrite it.
    pub fn wants_compaction(&self) -> bool {
        self.garbage > 1 << 20 && self.garbage * 2 > self.len
    }
}

/// Reads and verifies the dead letter `id` at `entry` of `file`.
pub fn read_letter(
    file: &dyn VfsFile,
    path: &Path,
    id: u64,
    entry: DeadEntry,
) -> Result<DeadLetter> {
    let mut bytes = vec![0u8; entry.len as usize];
    file.read_at(&mut bytes, entry.off)
        .map_err(|e| Error::io("reading dead letter", path, e))?;
    let bad = |what: &str| Error::corrupt(path, entry.off, what.to_string());
    let f =
        frame::decode(&bytes, DEAD_SEGMENT_ID, MAX_DEAD_RECORD).map_err(|e| bad(&e.to_string()))?;
    let Some(Record::Dead(d)) = Record::decode(f.kind, f.body) else {
        return Err(bad("dead-letter record does not decode"));
    };
    if d.id != id {
        return Err(bad("dead-letter record has another id"));
    }
    Ok(DeadLetter::from_rec(&d))
}

/// Writes a dead-letter file with `body` after its header crash-atomically
/// (temporary file, fsync, rename, fsync of the directory).
fn write_fresh(
    vfs: &dyn Vfs,
    dir: &Path,
    path: &Path,
    mode: u32,
    body: &[u8],
) -> Result<Box<dyn VfsFile>> {
    write_side_file(vfs, dir, path, FileKind::Dead, DEAD_SEGMENT_ID, mode, body)
        .map_err(crate::vfs::AtomicWriteError::into_error)
}

/// Where and how a record is appended to a side file (dead letters,
/// completions): one place seals and writes their frames.
pub(crate) struct SideFrame {
    /// The file's checksum seed.
    pub segment_id: u32,
    /// The frame's LSN (dead letters) or sequence number (completions).
    pub seq: u64,
    /// Record kind.
    pub kind: u8,
    /// Where the frame goes (the file's end).
    pub off: u64,
    /// Bytes known durable: the sync lag is `off` minus this.
    pub synced_len: u64,
}

impl SideFrame {
    /// Seals the frame whose header space and inline body are in `buf`
    /// (encoded there by the record) and whose `tail` follows, and writes
    /// it at `off`. Returns its length.
    pub(crate) fn write(
        &self,
        file: &dyn VfsFile,
        buf: &mut [u8],
        tail: &[u8],
    ) -> std::io::Result<u32> {
        let lag = u32::try_from(self.off.saturating_sub(self.synced_len)).unwrap_or(u32::MAX);
        frame::seal(buf, self.segment_id, self.seq, self.kind, 0, lag, tail);
        file.write_at(buf, self.off)?;
        file.write_at(tail, self.off + buf.len() as u64)?;
        u32::try_from(buf.len() + tail.len())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame over 4 GiB"))
    }
}

/// Writes a side file (dead letters, completions) with `body` after its
/// header crash-atomically (`vfs::try_write_atomically`: `<name>.tmp`,
/// fsync, rename over `path`, fsync of the directory), saying whether a
/// failure came before the rename.
pub(crate) fn write_side_file(
    vfs: &dyn Vfs,
    dir: &Path,
    path: &Path,
    kind: FileKind,
    segment_id: u32,
    mode: u32,
    body: &[u8],
) -> std::result::Result<Box<dyn VfsFile>, crate::vfs::AtomicWriteError> {
    let header = SegmentHeader {
        version: FORMAT_VERSION,
        kind,
        segment_id,
        base_lsn: 0,
        next_job_id: 0,
    };
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    debug_assert_eq!(path, dir.join(&name));
    crate::vfs::try_write_atomically(vfs, dir, &name, &[&header.encode(), body], mode)
}

/// What the replay of the dead letters keeps once it met damage.
struct Past {
    /// The rest of the file from the first damage on, and its offset.
    tail: Option<(u64, Vec<u8>)>,
    /// Where in the tail an earlier search proved the bytes before
    /// synced ([`later_side_frames`]).
    synced: usize,
    recovery: RecoveryMode,
}

/// The first intact frame after a damaged one at `damaged`, and whether
/// any later intact frame proves, through its sync lag (bytes written since
/// the last sync), that the damaged bytes had been synced: then the damage
/// is not a torn write.
fn later_frames(bytes: &[u8], damaged: usize, synced: &mut usize) -> (Option<usize>, bool) {
    later_side_frames(bytes, damaged, DEAD_SEGMENT_ID, MAX_DEAD_RECORD, synced)
}

/// [`later_frames`] for any side file, with its checksum seed and record
/// size limit (see `format::resync`).
///
/// `synced` carries, from one damage to the next in the same `bytes`, the
/// offset before which an earlier search proved the bytes synced (0 at
/// first): damage before it needs no proof, and its search stops at the
/// first intact frame. The frame that proved it lies after this damage
/// too, so the answer is the same; without it each damage searched the
/// rest of the file again, work the square of its size in Salvage.
pub(crate) fn later_side_frames(
    bytes: &[u8],
    damaged: usize,
    segment_id: u32,
    max_len: u32,
    synced: &mut usize,
) -> (Option<usize>, bool) {
    let known = damaged < *synced;
    let proven = std::cell::Cell::new(0);
    let goal = resync::Goal {
        // Any LSN: the side files' sequence numbers are not dense.
        wanted: |_: usize, _: &[u8]| true,
        proves: |off: usize, f: &frame::Frame<'_>| {
            let through = off.saturating_sub(f.sync_lag as usize);
            proven.set(through);
            through > damaged
        },
        need_proof: !known,
    };
    let later = resync::search(bytes, damaged + 1..bytes.len(), segment_id, max_len, goal);
    if later.durable {
        *synced = (*synced).max(proven.get());
    }
    (later.first.map(|(off, _)| off), known || later.durable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::StdFs;

    fn rec(id: u64) -> DeadRec<'static> {
        DeadRec {
            id,
            enqueued_ms: 1,
            dead_ms: 2,
            attempts: 3,
            key: b"",
            error: b"boom",
            queue: b"",
            priority: crate::format::record::PRIORITY_NORMAL,
            group: b"",
            payload: b"payload",
        }
    }

    #[test]
    fn add_remove_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _) = DeadFile::open(&StdFs, dir.path(), 0o600, RecoveryMode::Strict).unwrap();
        d.add(&rec(1), 10).unwrap();
        d.add(&rec(2), 11).unwrap();
        assert!(d.remove(1, 12).unwrap());
        assert!(!d.remove(1, 12).unwrap());
        d.sync().unwrap();
        drop(d);
        let (d, _) = DeadFile::open(&StdFs, dir.path(), 0o600, RecoveryMode::Strict).unwrap();
        assert_eq!(d.entries().keys().copied().collect::<Vec<_>>(), vec![2]);
        let got = d.get(2).unwrap().unwrap();
        assert_eq!(got.error, "boom");
        assert_eq!(got.payload, b"payload");
        assert_eq!(d.entries()[&2].lsn, 11);
    }

    #[test]
    fn torn_tail_is_cut_and_middle_damage_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _) = DeadFile::open(&StdFs, dir.path(), 0o600, RecoveryMode::Strict).unwrap();
        d.add(&rec(1), 10).unwrap();
        d.sync().unwrap();
        d.add(&rec(2), 11).unwrap();
        let full = d.disk_bytes();
        drop(d);
        let path = dir.path().join(DEAD_FILE);
        let bytes = std::fs::read(&path).unwrap();
        // Cut inside the second record: the first survives.
        std::fs::write(&path, &bytes[..full as usize - 5]).unwrap();
        let (d, rep) = DeadFile::open(&StdFs, dir.path(), 0o600, RecoveryMode::Strict).unwrap();
        assert_eq!(d.entries().len(), 1);
        assert!(rep.torn_bytes > 0);
        drop(d);
        // Damage the first of two records: strict mode refuses.
        std::fs::write(&path, &bytes).unwrap();
        let mut bad = bytes.clone();
        bad[SEGMENT_HEADER_LEN + 30] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        let err = DeadFile::open(&StdFs, dir.path(), 0o600, RecoveryMode::Strict).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        assert_eq!(err.offset(), Some(SEGMENT_HEADER_LEN as u64));
        let (d, rep) = DeadFile::open(&StdFs, dir.path(), 0o600, RecoveryMode::Salvage).unwrap();
        assert_eq!(d.entries().keys().copied().collect::<Vec<_>>(), vec![2]);
        assert!(rep.damaged_bytes > 0);
    }

    /// Salvage past damage in every other letter, with the one frame
    /// that proves them synced at the end: each damage searched the rest
    /// of the file again for that proof, work the square of the file's
    /// size (minutes for a few MiB); a proof found once now serves every
    /// damage before the point it proves synced.
    #[test]
    fn salvage_past_many_damaged_letters_does_not_search_the_rest_each_time() {
        let n = 100_000;
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _) = DeadFile::open(&StdFs, dir.path(), 0o600, RecoveryMode::Strict).unwrap();
        // Appended unsynced: each frame's sync lag reaches back to the
        // header, proving nothing; the last one, after a sync, proves all.
        for id in 1..=n {
            d.add(&rec(id), id).unwrap();
        }
        d.sync().unwrap();
        d.add(&rec(n + 1), n + 1).unwrap();
        d.sync().unwrap();
        let offs: Vec<u64> = d.entries().values().map(|e| e.off).collect();
        drop(d);
        let path = dir.path().join(DEAD_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        for &off in offs[..n as usize].iter().step_by(2) {
            bytes[off as usize + 30] ^= 0xff;
        }
        std::fs::write(&path, &bytes).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let at = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let r = DeadFile::open(&StdFs, &at, 0o600, RecoveryMode::Salvage)
                .map(|(d, rep)| (d.entries().len(), rep.damaged_bytes > 0));
            let _ = tx.send(r);
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("salvage ends within a minute");
        assert_eq!(got.unwrap(), (n as usize / 2 + 1, true));
    }

    #[test]
    fn compaction_keeps_live_letters() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _) = DeadFile::open(&StdFs, dir.path(), 0o600, RecoveryMode::Strict).unwrap();
        for id in 0..10 {
            d.add(&rec(id), id).unwrap();
        }
        for id in 0..9 {
            d.remove(id, 100).unwrap();
        }
        d.compact(&StdFs, dir.path(), 0o600).unwrap();
        assert_eq!(d.get(9).unwrap().unwrap().payload, b"payload");
        drop(d);
        let (d, _) = DeadFile::open(&StdFs, dir.path(), 0o600, RecoveryMode::Strict).unwrap();
        assert_eq!(d.entries().len(), 1);
        assert_eq!(d.entries()[&9].lsn, 9);
    }
}
