//! Walking every file of a queue directory, read-only: each record's
//! checksum and the invariants between records and files. The decoding is
//! `crate::format`'s; this module only classifies what it finds, with the
//! rules recovery applies (`docs/format.md`, "Sync lag").

use std::path::Path;

use super::entry::{Entry, FileRole, Problem, RecordView, Visitor};
use super::files::{self, FileData};
use crate::error::{Error, ErrorKind, Result};
use crate::format::close::CleanClose;
use crate::format::done::DoneRecord;
use crate::format::frame::{self, Frame, FrameError, FLAG_BATCH_MORE};
use crate::format::header::{FileKind, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::format::record::Record;
use crate::format::MAX_ID;
use crate::segment;

/// Largest dead-letter frame accepted (as the dead-letter file reads).
const MAX_DEAD_RECORD: u32 = 1 << 30;
/// Largest completion frame: header, id, time and a full result.
const MAX_DONE_RECORD: u32 = (frame::FRAME_HEADER_LEN + 16 + crate::done::MAX_RESULT_LEN) as u32;

/// Totals of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// A running process held the queue when the scan started.
    pub live: bool,
    /// Log segments read.
    pub segments: u64,
    /// Verified records in all files.
    pub records: u64,
    /// Problems of severity damage.
    pub damage: u64,
    /// Problems of severity note.
    pub notes: u64,
    /// Bytes read.
    pub bytes: u64,
    /// LSN of the last intact log record (0 when the log is empty).
    pub last_lsn: u64,
    /// The largest "next job id" of any segment header.
    pub next_job_id: u64,
    /// Log records lost to damage, counted from LSN gaps.
    pub records_lost: u64,
}

/// The state of a scan: the visitor, the totals, the directory.
pub(crate) struct Scan<'a> {
    dir: &'a Path,
    visitor: &'a mut dyn Visitor,
    pub(crate) sum: ScanSummary,
}

/// The files of a queue directory by role.
struct Layout {
    segments: Vec<u32>,
    others: Vec<String>,
    dead: bool,
    done: bool,
    close: bool,
}

fn layout(names: Vec<String>) -> Layout {
    let mut l = Layout {
        segments: Vec::new(),
        others: Vec::new(),
        dead: false,
        done: false,
        close: false,
    };
    for name in names {
        match name.as_str() {
            crate::dead::DEAD_FILE => l.dead = true,
            crate::done::DONE_FILE => l.done = true,
            segment::CLOSE_FILE => l.close = true,
            _ => match segment::parse_name(&name) {
                Some(id) => l.segments.push(id),
                None => l.others.push(name),
            },
        }
    }
    l.segments.sort_unstable();
    l
}

/// The files of the queue in `dir`: fails when the directory cannot be
/// listed or holds no queue (no log segment and no `dead.wal`).
fn queue_layout(dir: &Path) -> Result<Layout> {
    let l = layout(files::list(dir)?);
    if l.segments.is_empty() && !l.dead {
        return Err(Error::new(
            ErrorKind::NotFound,
            "not a walq queue: no log segment (NNNNNNNNNN.wal) and no dead.wal",
        )
        .with_path(dir));
    }
    Ok(l)
}

/// Fails as [`scan`] does when `dir` cannot be listed or holds no queue.
pub(crate) fn require_queue(dir: &Path) -> Result<()> {
    queue_layout(dir).map(drop)
}

/// Scans every file of the queue in `dir`: the segments in log order,
/// `dead.wal`, `done.rec`, `CLOSED`, then the others (the checkpoint and
/// `schedules.bin` checked). Fails only when the directory cannot be
/// listed or holds no queue; damage goes to the visitor.
pub fn scan(dir: &Path, live: bool, visitor: &mut dyn Visitor) -> Result<ScanSummary> {
    let l = queue_layout(dir)?;
    let mut s = Scan::new(dir, live, visitor);
    s.segments(&l.segments)?;
    if l.dead {
        s.dead_file(crate::dead::DEAD_FILE)?;
    }
    if l.done {
        s.side_file(crate::done::DONE_FILE, FileRole::Completions)?;
    }
    if l.close {
        s.check_close(l.segments.last().copied())?;
    }
    for name in &l.others {
        s.other_file(name)?;
    }
    Ok(s.sum)
}

impl<'a> Scan<'a> {
    /// A scan of the queue in `dir` reporting to `visitor`.
    pub(crate) fn new(dir: &'a Path, live: bool, visitor: &'a mut dyn Visitor) -> Scan<'a> {
        Scan {
            dir,
            visitor,
            sum: ScanSummary {
                live,
                ..ScanSummary::default()
            },
        }
    }

    /// The directory scanned.
    pub(crate) fn dir(&self) -> &'a Path {
        self.dir
    }

    /// The visitor the scan reports to.
    pub(crate) fn visitor(&mut self) -> &mut dyn Visitor {
        &mut *self.visitor
    }
}

impl Scan<'_> {
    pub(crate) fn problem(&mut self, p: Problem) {
        match p.severity {
            super::Severity::Damage => self.sum.damage += 1,
            super::Severity::Note => self.sum.notes += 1,
        }
        self.visitor.problem(&p);
    }

    /// The first bytes of a small file (`CLOSED`).
    fn read_small(&mut self, name: &str) -> Result<Option<FileData>> {
        self.read_file(name, files::read_small)
    }

    /// A file that starts with a walq file header, up to where its data
    /// ends ([`files::read_headed`]).
    fn read_headed(&mut self, name: &str) -> Result<Option<FileData>> {
        self.read_file(name, files::read_headed)
    }

    fn read_file(
        &mut self,
        name: &str,
        read: fn(&Path) -> Result<Option<FileData>>,
    ) -> Result<Option<FileData>> {
        let data = read(&self.dir.join(name))?;
        match &data {
            Some(d) => self.sum.bytes += d.bytes.len() as u64,
            None => self.deleted(name),
        }
        Ok(data)
    }

    /// File `name` was listed but is gone (a note).
    pub(crate) fn deleted(&mut self, name: &str) {
        let what = if self.sum.live {
            "deleted by the running process while this scan ran (not damage)"
        } else {
            "deleted while this scan ran"
        };
        self.problem(Problem::note(name, 0, what));
    }

    pub(crate) fn emit(&mut self, name: &str, off: usize, f: &Frame<'_>, entry: Entry<'_>) {
        self.sum.records += 1;
        let view = RecordView {
            file: name,
            offset: off as u64,
            len: f.len,
            lsn: f.lsn,
            batch_more: f.flags & FLAG_BATCH_MORE != 0,
            sync_lag: f.sync_lag,
            entry,
        };
        self.visitor.record(&view);
    }

    /// Decodes and checks a file header; a problem is reported and `None`
    /// returned when it is not the header this file must have.
    pub(crate) fn header(
        &mut self,
        name: &str,
        bytes: &[u8],
        kind: FileKind,
    ) -> Result<Option<SegmentHeader>> {
        let header = match SegmentHeader::decode(bytes) {
            Ok(h) => h,
            Err(e @ crate::format::header::HeaderError::FutureVersion(_)) => {
                // Not damage: a newer walq wrote it, and this build cannot
                // judge it. The whole queue is unreadable here.
                return Err(Error::new(ErrorKind::UnsupportedVersion, e.to_string())
                    .with_path(&self.dir.join(name)));
            }
            Err(e) => {
                self.problem(Problem::damage(name, 0, e.to_string()));
                return Ok(None);
            }
        };
        if header.kind != kind {
            let what = format!("file header says {:?}, expected {:?}", header.kind, kind);
            self.problem(Problem::damage(name, 0, what));
            return Ok(None);
        }
        Ok(Some(header))
    }

    fn segments(&mut self, ids: &[u32]) -> Result<()> {
        for pair in ids.windows(2) {
            if pair[1] != pair[0] + 1 {
                let name = segment::file_name(pair[1]);
                let missing = pair[0] + 1;
                // A directory listing taken while the running process
                // renames a spare into place can miss the segment it
                // renames (a process cannot open a queue with a gap).
                let p = if self.sum.live {
                    let what = format!("segment {missing} was not in the directory listing, taken while the running process rotated (not damage)");
                    Problem::note(&name, 0, what)
                } else {
                    let what = format!("segment {missing} is missing before this one");
                    Problem::damage(&name, 0, what)
                };
                self.problem(p);
            }
        }
        let mut expected = None;
        let mut prev: Option<(String, u64)> = None;
        for (i, &id) in ids.iter().enumerate() {
            let name = segment::file_name(id);
            let last = i + 1 == ids.len();
            if i > 0 && ids[i - 1] + 1 != id {
                // A gap in the listing (a note above for a live queue):
                // this segment's LSNs cannot be checked against the one
                // listed before it, which is not its predecessor.
                expected = None;
                prev = None;
            }
            let Some(data) = self.read_segment(&name, id, last)? else {
                // Deleted by reclaim since the listing: the LSNs of the next
                // segment cannot be checked against the one before.
                expected = None;
                prev = None;
                continue;
            };
            self.visitor
                .file_start(&name, FileRole::Segment(id), data.len);
            let seg = SegScan {
                name: &name,
                id,
                bytes: &data.bytes,
                len: data.len,
                last,
            };
            if let Some(end) = self.segment(&seg, expected, prev.take())? {
                expected = Some(end.next_lsn);
                prev = Some((name.clone(), end.max_fresh_id));
            }
            self.sum.segments += 1;
            self.visitor.file_end(&name, FileRole::Segment(id));
        }
        if let Some(next) = expected {
            self.sum.last_lsn = next.saturating_sub(1);
        }
        Ok(())
    }

    /// A segment's bytes. The newest segment of a live queue is read
    /// again (up to three times) while it shows damage: `read` copies page
    /// by page while the writer appends, so a copy can hold a later record
    /// but miss an earlier one that a second read finds intact.
    fn read_segment(&mut self, name: &str, id: u32, last: bool) -> Result<Option<FileData>> {
        // Offsets in a segment are 32-bit: a larger file (a sparse one, a
        // file that is not ours) is damage, reported without reading it.
        if let Ok(meta) = std::fs::metadata(self.dir.join(name)) {
            if meta.len() > u64::from(u32::MAX) {
                let what = format!("segment is {} bytes, above the 4 GiB limit", meta.len());
                self.problem(Problem::damage(name, 0, what));
                return Ok(None);
            }
        }
        let bytes = self.read_headed(name)?;
        if !(self.sum.live && last) {
            return Ok(bytes);
        }
        let dir = self.dir;
        reread_while(dir, name, bytes, |d| shows_damage(dir, name, id, d))
    }

    fn side_file(&mut self, name: &str, role: FileRole) -> Result<()> {
        let Some(data) = self.read_side_file(name, role)? else {
            return Ok(());
        };
        self.visitor.file_start(name, role, data.len);
        let (kind, seed, max_len) = side_params(role);
        if let Some(h) = self.header(name, &data.bytes, kind)? {
            if h.segment_id != seed {
                let what = format!("file header id {:#x}, expected {seed:#x}", h.segment_id);
                self.problem(Problem::damage(name, 0, what));
            }
            self.side_records(name, role, &SideBytes::of(&data), seed, max_len);
        }
        self.visitor.file_end(name, role);
        Ok(())
    }

    /// A side file's bytes. In a live queue it is read again (up to three
    /// times, 20 ms apart) while it shows damage, as the newest segment is:
    /// the writer fills a zeroed region ahead of its tail with `pwrite`, and
    /// `read` copies page by page, so one copy can hold a later record but
    /// miss an earlier one that was being written.
    fn read_side_file(&mut self, name: &str, role: FileRole) -> Result<Option<FileData>> {
        let bytes = self.read_headed(name)?;
        if !self.sum.live {
            return Ok(bytes);
        }
        let dir = self.dir;
        reread_while(dir, name, bytes, |d| side_shows_damage(dir, name, role, d))
    }

    /// The records of a side file from `data.base` on. Past `data.bytes`
    /// it reads as zeros: what a scan of the whole file would make of them
    /// is reported from the length alone ([`Scan::zeros_after_records`]).
    pub(crate) fn side_records(
        &mut self,
        name: &str,
        role: FileRole,
        data: &SideBytes<'_>,
        seed: u32,
        max_len: u32,
    ) {
        let (bytes, base) = (data.bytes, data.base);
        let mut off = 0;
        // Where a search after damage proved the bytes before synced.
        let mut synced = 0;
        while off < bytes.len() {
            let damage = match frame::decode(&bytes[off..], seed, max_len) {
                Ok(f) => match side_entry(role, &f) {
                    Some(entry) => {
                        self.emit(name, base + off, &f, entry);
                        off += f.len as usize;
                        continue;
                    }
                    None => format!("record of kind {} does not belong in {name}", f.kind),
                },
                Err(FrameError::Zero)
                    if role == FileRole::Completions && all_zero(&bytes[off..]) =>
                {
                    break
                }
                Err(e) => e.to_string(),
            };
            let (next, durable) =
                crate::dead::later_side_frames(bytes, off, seed, max_len, &mut synced);
            let at = (base + off) as u64;
            if !durable {
                return self.torn_side_tail(name, at, data.len, &damage);
            }
            let what = format!("{damage} (not a torn tail: later records were synced)");
            self.problem(Problem::damage(name, at, what));
            match next {
                Some(n) => off = n,
                None => return,
            }
        }
        self.zeros_after_records(name, role, (base + off) as u64, data.len);
    }

    /// The records of side file `name` end at `off`, where its data ends,
    /// before its end at `len`: the zeros between (holes, not read) are
    /// what a scan of them would find, the clean end of `done.rec` (its
    /// zeros written ahead) or a torn tail of `dead.wal`, as its open
    /// finds them.
    pub(crate) fn zeros_after_records(&mut self, name: &str, role: FileRole, off: u64, len: u64) {
        if off >= len || role == FileRole::Completions {
            return;
        }
        self.torn_side_tail(name, off, len, &FrameError::Zero.to_string());
    }

    /// A torn tail of side file `name` from `off` to its end at `len`.
    fn torn_side_tail(&mut self, name: &str, off: u64, len: u64, damage: &str) {
        let what = format!(
            "torn tail of {} bytes ({damage}): a write cut short, cut on the next open",
            len.saturating_sub(off)
        );
        self.problem(Problem::note(name, off, what));
    }

    fn check_close(&mut self, last_segment: Option<u32>) -> Result<()> {
        let name = segment::CLOSE_FILE;
        let Some(data) = self.read_small(name)? else {
            return Ok(());
        };
        let Some(clean) = CleanClose::decode(&data.bytes) else {
            self.problem(Problem::damage(name, 0, "clean-close record is damaged"));
            return Ok(());
        };
        if last_segment == Some(clean.segment_id) {
            let seg = segment::file_name(clean.segment_id);
            if let Ok(meta) = std::fs::metadata(self.dir.join(&seg)) {
                if meta.len() < clean.segment_size {
                    let what = format!(
                        "segment is {} bytes, shorter than the {} it was created with (truncated)",
                        meta.len(),
                        clean.segment_size
                    );
                    self.problem(Problem::damage(&seg, meta.len(), what));
                }
            }
        }
        if self.sum.last_lsn < clean.last_lsn {
            let what = format!(
                "the log ends at LSN {}, but the queue was closed cleanly at LSN {}: records were cut off",
                self.sum.last_lsn, clean.last_lsn
            );
            self.problem(Problem::damage(name, 24, what));
        }
        Ok(())
    }

    fn other_file(&mut self, name: &str) -> Result<()> {
        use crate::schedule::store::{SCHEDULE_FILE, SCHEDULE_LOCK_FILE};
        use crate::state::checkpoint::CHECKPOINT_FILE;
        // The lock, the disk reserve and the spare segment prepared ahead
        // of time hold no queue data.
        let known = [crate::queue::LOCK_FILE, "RESERVE", SCHEDULE_LOCK_FILE];
        let what = if known.contains(&name) || segment::is_spare(name) {
            return Ok(());
        } else if name == CHECKPOINT_FILE {
            self.check_checkpoint(name);
            return Ok(());
        } else if name == SCHEDULE_FILE {
            return self.check_schedules(name);
        } else if name == crate::store_id::STORE_ID_FILE {
            return self.check_store_id(name);
        } else if name == crate::id_floor::ID_FLOOR_FILE {
            return self.check_id_floor(name);
        } else if name == crate::pause::PAUSED_FILE {
            return self.check_paused(name);
        } else if name.ends_with(segment::TMP_SUFFIX) {
            "a leftover temporary file (deleted on the next open)"
        } else {
            "not a walq file (ignored)"
        };
        self.problem(Problem::note(name, 0, what));
        Ok(())
    }

    /// The store id: one the queue would refuse is damage (its jobs'
    /// provider keys derive from it).
    fn check_store_id(&mut self, name: &str) -> Result<()> {
        let Some(data) = self.read_small(name)? else {
            return Ok(());
        };
        if crate::format::store_id::decode(&data.bytes).is_none() {
            let what = "the store id is damaged (the queue refuses to open with it: \
                        its jobs' provider keys derive from it)";
            self.problem(Problem::damage(name, 0, what));
        }
        Ok(())
    }

    /// The id floor: one with no valid slot is damage (the queue refuses
    /// to open with it); one damaged slot is a torn write, which the open
    /// reads past.
    fn check_id_floor(&mut self, name: &str) -> Result<()> {
        let Some(data) = self.read_small(name)? else {
            return Ok(());
        };
        if crate::format::id_floor::read(&data.bytes).is_none() {
            let what = "the id floor is damaged (the queue refuses to open with it: \
                        ids of jobs a power cut lost could be issued again)";
            self.problem(Problem::damage(name, 0, what));
        }
        Ok(())
    }

    /// The list of paused queues: one that does not decode is damage (the
    /// queue refuses to open with it).
    fn check_paused(&mut self, name: &str) -> Result<()> {
        let Some(data) = self.read_small(name)? else {
            return Ok(());
        };
        if files::paused_names(data).is_none() {
            let what = "the list of paused queues is damaged (the queue refuses to open \
                        with it: a paused queue would deliver)";
            self.problem(Problem::damage(name, 0, what));
        }
        Ok(())
    }

    /// The schedule file, decoded as `Scheduler::open` decodes it: what
    /// would make the scheduler refuse it is damage at its offset.
    fn check_schedules(&mut self, name: &str) -> Result<()> {
        match files::read_schedules(&self.dir.join(name)) {
            Ok(Some(bytes)) => self.sum.bytes += bytes.len() as u64,
            Ok(None) => self.deleted(name),
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                let what = format!("{} (the scheduler refuses this file)", e.message());
                self.problem(Problem::damage(name, e.offset().unwrap_or(0), what));
            }
            Err(e) if e.kind() == ErrorKind::UnsupportedVersion => {
                // Not damage: a newer walq wrote it.
                let what = format!("{}: not checked", e.message());
                self.problem(Problem::note(name, 0, what));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

impl Scan<'_> {
    /// The checkpoint is an index, not data: one that cannot be used costs
    /// the next open a full scan of the log, nothing else (a note).
    fn check_checkpoint(&mut self, name: &str) {
        let why = match files::read_checkpoint(&self.dir.join(name)) {
            Ok(Some(Ok(bytes))) => match crate::state::checkpoint::decode(&bytes) {
                Ok(_) => return,
                Err(why) => why,
            },
            Ok(Some(Err(why))) => why,
            Ok(None) => return,
            Err(e) => format!("unreadable: {e}"),
        };
        let what =
            format!("the checkpoint cannot be used ({why}): the next open scans the whole log");
        self.problem(Problem::note(name, 0, what));
    }
}

/// The entry of a side-file frame when its kind belongs in that file.
pub(crate) fn side_entry<'a>(role: FileRole, f: &Frame<'a>) -> Option<Entry<'a>> {
    match role {
        FileRole::DeadLetters => match Record::decode(f.kind, f.body)? {
            r @ (Record::Dead(_) | Record::Removed { .. }) => {
                Some(Entry::Record(r)).filter(|e| e.id() < MAX_ID)
            }
            _ => None,
        },
        _ => DoneRecord::decode(f.kind, f.body).map(Entry::Done),
    }
}

/// Reads file `name` again (up to three times, 20 ms apart) while its
/// bytes show damage that a writer still filling it may explain.
fn reread_while(
    dir: &Path,
    name: &str,
    mut bytes: Option<FileData>,
    shows: impl Fn(&FileData) -> bool,
) -> Result<Option<FileData>> {
    for _ in 0..3 {
        match &bytes {
            Some(b) if shows(b) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                bytes = files::read_headed(&dir.join(name))?;
            }
            _ => break,
        }
    }
    Ok(bytes)
}

/// Whether a scan of the newest segment's `bytes` finds damage.
fn shows_damage(dir: &Path, name: &str, id: u32, data: &FileData) -> bool {
    struct Quiet;
    impl Visitor for Quiet {}
    let mut quiet = Quiet;
    let mut scan = Scan {
        dir,
        visitor: &mut quiet,
        sum: ScanSummary {
            live: true,
            ..ScanSummary::default()
        },
    };
    let seg = SegScan {
        name,
        id,
        bytes: &data.bytes,
        len: data.len,
        last: true,
    };
    // An unreadable header is damage too (or a newer format: an error).
    !matches!(scan.segment(&seg, None, None), Ok(Some(_))) || scan.sum.damage > 0
}

/// The file kind, checksum seed and record limit of a side file.
pub(crate) fn side_params(role: FileRole) -> (FileKind, u32, u32) {
    match role {
        FileRole::DeadLetters => (
            FileKind::Dead,
            crate::dead::DEAD_SEGMENT_ID,
            MAX_DEAD_RECORD,
        ),
        _ => (
            FileKind::Done,
            crate::done::DONE_SEGMENT_ID,
            MAX_DONE_RECORD,
        ),
    }
}

/// Whether the records of side file `name` show damage (quietly, to
/// decide whether to read it again).
fn side_shows_damage(dir: &Path, name: &str, role: FileRole, data: &FileData) -> bool {
    struct Quiet;
    impl Visitor for Quiet {}
    let mut quiet = Quiet;
    let mut scan = Scan {
        dir,
        visitor: &mut quiet,
        sum: ScanSummary {
            live: true,
            ..ScanSummary::default()
        },
    };
    let (_, seed, max_len) = side_params(role);
    scan.side_records(name, role, &SideBytes::of(data), seed, max_len);
    scan.sum.damage > 0
}

/// Bytes of a side file from its records on: `bytes[0]` is at offset
/// `base` of a file `len` bytes long (zeros past the bytes, not read).
pub(crate) struct SideBytes<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) base: usize,
    pub(crate) len: u64,
}

impl<'a> SideBytes<'a> {
    /// The records of a whole side file read into `data`.
    fn of(data: &'a FileData) -> SideBytes<'a> {
        SideBytes {
            bytes: data.bytes.get(SEGMENT_HEADER_LEN..).unwrap_or(&[]),
            base: SEGMENT_HEADER_LEN,
            len: data.len,
        }
    }
}

/// Whether every byte is zero.
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// One segment being scanned.
pub(crate) struct SegScan<'a> {
    pub(crate) name: &'a str,
    pub(crate) id: u32,
    /// Its bytes up to where its data ends (zeros past them, not read).
    pub(crate) bytes: &'a [u8],
    /// Its length.
    pub(crate) len: u64,
    pub(crate) last: bool,
}

/// Where a segment's scan ended.
pub(crate) struct SegEnd {
    pub(crate) next_lsn: u64,
    /// The largest job id enqueued in the segment.
    pub(crate) max_fresh_id: u64,
}
