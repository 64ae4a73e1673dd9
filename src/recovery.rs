//! Opening a queue directory: verify every record, rebuild the state.
//!
//! 1. Delete leftover `*.tmp` files (an interrupted segment creation or
//!    dead-letter rewrite) and fsync the directory.
//! 2. Open the dead-letter file (torn tail cut, damage reported).
//! 3. Replay the segments in id order. Ids must be consecutive and LSNs
//!    must continue from one segment to the next, so a missing segment or
//!    a lost sealed tail is reported, not skipped.
//! 4. Classify damage. In a segment older than the newest two any bad
//!    record is corruption (it was fsynced before the newest was written).
//!    In the last segment, a bad record is a torn tail unless a later valid
//!    record proves, through its sync lag, that the bad record had been
//!    durable: then it is corruption too. A torn tail, and an unfinished
//!    batch before it, are zeroed and fsynced before the first new append.
//!    The newest but one follows the same rule, with the newest segment's
//!    records as later ones, since rotation does not sync under the queue
//!    lock: a torn tail there drops the newest segment too, none of whose
//!    records was published (see `rotation_tear`).
//! 5. Rebuild the state (`rebuild.rs`) and release the leases of the previous process (their attempt counts;
//!    a job on its last attempt goes to the dead letters).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use crate::commit::Committer;
use crate::dead::DeadFile;
use crate::error::{Error, Result};
use crate::format::checkpoint::{Checkpoint, FLAG_CLEAN};
use crate::format::close::CleanClose;
use crate::format::frame::{self, Frame, FrameError, FLAG_BATCH_MORE};
use crate::format::header::SEGMENT_HEADER_LEN;
use crate::format::resync;
use crate::log::{Log, SegInfo, PREPARED_ZEROS};
use crate::options::{Durability, Options, RecoveryMode};
use crate::rotation_tear::{self, Newest};
use crate::segment::{self, Segment, Spare};
use crate::state::checkpoint::{self, CHECKPOINT_FILE};
use crate::state::rebuild::{apply, finish, Replay};
use crate::state::QueueState;
use crate::stats::RecoveryReport;
use crate::vfs::Vfs;

/// Where a scan of one segment stopped.
struct ScanEnd {
    off: u32,
    next_lsn: u64,
    /// The newest but one was cut at a tail torn across the rotation: the
    /// newest segment is to be dropped.
    cut: bool,
}

impl ScanEnd {
    /// Offset `off` of a segment, where LSN `next_lsn` comes next (not
    /// cut).
    fn at(off: u32, next_lsn: u64) -> ScanEnd {
        ScanEnd {
            off,
            next_lsn,
            cut: false,
        }
    }
}

/// Opens (or creates) the queue in `dir`; `dir` exists and is locked.
pub fn recover(
    vfs: Arc<dyn Vfs>,
    dir: &Path,
    opts: &Options,
    clock_ms: u64,
) -> Result<(QueueState, RecoveryReport)> {
    let mut report = RecoveryReport::default();
    let listing = list_dir(&*vfs, dir, &mut report)?;
    let ids = &listing.ids[..];
    let (mut dead, dead_report) =
        DeadFile::open_unsynced(&*vfs, dir, opts.file_mode, opts.recovery)?;
    let dead_intact = dead_report.torn_bytes == 0 && dead_report.damaged_bytes == 0;
    report.torn_bytes += dead_report.torn_bytes;
    report.bytes_skipped += dead_report.damaged_bytes;

    let dead_lsns: HashMap<u64, u64> = dead.entries().iter().map(|(id, e)| (*id, e.lsn)).collect();
    let (mut replay, from) = replay_start(&*vfs, dir, ids, &dead_lsns, &mut report);
    let clean = from.as_ref().is_some_and(|ck| ck.flags & FLAG_CLEAN != 0);
    let kept = reuse_spares(&*vfs, dir, &listing.spares, ids, clean, opts.segment_size)?;
    let dedup_ms = u64::try_from(opts.dedup_window.as_millis()).unwrap_or(u64::MAX);
    let ctx = ScanCtx {
        last: false,
        newest: None,
        mode: opts.recovery,
        dead_lsns: &dead_lsns,
        dedup_ms,
        vfs: &*vfs,
    };
    let mut scanned = scan_log(dir, ids, from.as_ref(), &ctx, &mut replay, &mut report)?;
    check_clean_close(
        &*vfs,
        dir,
        &scanned.segments,
        scanned.next_lsn,
        opts.recovery,
        &mut report,
    )?;
    if scanned.segments.is_empty() {
        scanned.create_first(&*vfs, dir, opts, replay.next_id)?;
    }
    // Whatever survived the crash is on disk from here on (the two newest
    // segments synced: every older one was before), so later sync lags
    // are measured from a true durable point.
    let synced_at_close = synced_at_close(from.as_ref(), &scanned, &report);
    if !synced_at_close {
        sync_active(&*vfs, dir, &scanned.segments)?;
    }
    // The same holds for `dead.wal` when this open cut nothing from it:
    // `Queue::close` synced it before it wrote the clean checkpoint
    // (crash-atomically), and nothing was written to it since, because
    // an open clears the clean flag durably (`clear_clean` below) before
    // its first append to the log or to `dead.wal`, and the only write an
    // open makes before that (cutting a torn or damaged tail) is excluded
    // here. So its bytes on disk are the ones just read: no `fdatasync`.
    dead.opened(synced_at_close && dead_intact)?;
    let log = open_log(vfs, dir, opts, scanned, clean, kept)?;
    finish(log, dead, replay, opts, clock_ms, report)
}

/// The files of the queue directory that recovery starts from.
struct Listing {
    /// The segments' ids, ascending and consecutive.
    ids: Vec<u32>,
    /// The names of the spare segments (`*.wal.spare`).
    spares: Vec<String>,
}

/// Lists `dir`: walq's own leftover temporary files are removed (then the
/// directory is synced), the segment ids sorted, a newest segment that
/// never reached the disk dropped (`rotation_tear::drop_unborn`), and the
/// rest checked to be consecutive.
fn list_dir(vfs: &dyn Vfs, dir: &Path, report: &mut RecoveryReport) -> Result<Listing> {
    let names = vfs
        .list(dir)
        .map_err(|e| Error::io("listing queue directory", dir, e))?;
    let mut listing = Listing {
        ids: Vec::new(),
        spares: Vec::new(),
    };
    for name in names {
        if segment::is_spare(&name) {
            listing.spares.push(name);
        } else if segment::is_own_tmp(&name, crate::dead::DEAD_FILE)
            || name.strip_suffix(segment::TMP_SUFFIX) == Some(crate::done::DONE_FILE)
            || name.strip_suffix(segment::TMP_SUFFIX) == Some(CHECKPOINT_FILE)
        {
            let path = dir.join(&name);
            vfs.remove(&path)
                .map_err(|e| Error::io("removing leftover temporary file", &path, e))?;
            report.temp_files_removed += 1;
        } else if let Some(id) = segment::parse_name(&name) {
            listing.ids.push(id);
        }
    }
    if report.temp_files_removed > 0 {
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("syncing directory", dir, e))?;
    }
    listing.ids.sort_unstable();
    rotation_tear::drop_unborn(vfs, dir, &mut listing.ids, report)?;
    check_consecutive(dir, &listing.ids)?;
    Ok(listing)
}

/// Fails, naming the segment after the gap, unless the ascending `ids`
/// are consecutive: a missing segment is reported, never skipped.
fn check_consecutive(dir: &Path, ids: &[u32]) -> Result<()> {
    for pair in ids.windows(2) {
        if pair[1] != pair[0] + 1 {
            let path = dir.join(segment::file_name(pair[1]));
            return Err(Error::corrupt(
                &path,
                0,
                format!("segment {} is missing before this one", pair[0] + 1),
            ));
        }
    }
    Ok(())
}

/// Where replay starts: the checkpoint's state and the checkpoint when it
/// can be used (noted in `report`), else an empty state whose next job id
/// is past every dead letter's, for a replay of the whole log. A
/// checkpoint that cannot be used is removed (unless it is missing), and
/// why it was not used goes into `report`.
fn replay_start(
    vfs: &dyn Vfs,
    dir: &Path,
    ids: &[u32],
    dead_lsns: &HashMap<u64, u64>,
    report: &mut RecoveryReport,
) -> (Replay, Option<Checkpoint>) {
    match use_checkpoint(vfs, dir, ids, dead_lsns) {
        Ok((replay, ck)) => {
            report.checkpoint_used = true;
            report.checkpoint_lsn = ck.next_lsn - 1;
            (replay, Some(ck))
        }
        Err(why) => {
            if why != "missing" {
                // Never looked at again (best effort: a stale checkpoint
                // that came back would fail the same checks).
                let _ = vfs.remove(&dir.join(CHECKPOINT_FILE));
            }
            report.checkpoint_fallback = Some(why);
            let mut replay = Replay::new();
            for &id in dead_lsns.keys() {
                replay.next_id = replay.next_id.max(id.saturating_add(1));
            }
            (replay, None)
        }
    }
}

/// Whether the log is as a clean close left it, all of it synced by that
/// close: the checkpoint used (`ck`) is clean, nothing was written after
/// it, and this open cut no torn bytes (from the log or `dead.wal`).
fn synced_at_close(ck: Option<&Checkpoint>, scanned: &ScannedLog, report: &RecoveryReport) -> bool {
    let used_clean = ck.is_some_and(|ck| ck.flags & FLAG_CLEAN != 0);
    // After a clean close, with nothing written since, all of it was
    // synced by the close.
    let next_lsn = scanned.append_lsn();
    let untouched =
        ck.is_some_and(|ck| ck.next_lsn == next_lsn && ck.segments.len() == scanned.segments.len());
    used_clean && untouched && report.torn_bytes == 0
}

/// Syncs the active segment (the last of `segments`, which has one at
/// least) and the one before it, then the directory.
///
/// The one before: a kill -9 right after a rotation leaves the sealed
/// segment's tail in the page cache only (the next group-commit leader
/// would have synced it), and the scan just read it from there. Unsynced,
/// it would stay so while this run counts every record as durable: a
/// clean close would then write a checkpoint ahead of the disk, and a
/// later `Sync` append's sync lag would vouch for records a power cut
/// can still take. Every older segment was synced before a rotation left
/// it (docs/format.md, "Torn across a rotation").
fn sync_active(vfs: &dyn Vfs, dir: &Path, segments: &VecDeque<SegInfo>) -> Result<()> {
    let active = &segments.back().expect("at least one segment").seg;
    if let Some(sealed) = segments.len().checked_sub(2).map(|i| &segments[i].seg) {
        let path = &sealed.path;
        vfs.open(path)
            .and_then(|f| f.sync_data())
            .map_err(|e| Error::io("fdatasync of segment", path, e))?;
    }
    active.sync_data()?;
    // The active segment's name too: after a kill -9 just after a
    // rotation, the page cache held a name no sync had made durable.
    vfs.sync_dir(dir)
        .map_err(|e| Error::io("syncing directory", dir, e))
}

/// The log, opened for appends where the scan left it. After a clean
/// close (`clean`: the checkpoint used is clean) the checkpoint's clean
/// flag is cleared durably first; then the previous run's `kept` spares
/// are adopted and the next spare and the reserve prepared.
fn open_log(
    vfs: Arc<dyn Vfs>,
    dir: &Path,
    opts: &Options,
    scanned: ScannedLog,
    clean: bool,
    kept: Vec<Spare>,
) -> Result<Log> {
    let next_lsn = scanned.append_lsn();
    let commit = Arc::new(Committer::new(next_lsn - 1));
    let mut log = Log::new(
        dir.to_path_buf(),
        vfs,
        opts.file_mode,
        opts.segment_size,
        scanned.segments,
        scanned.tail,
        next_lsn,
        commit,
    );
    if clean {
        // The log grows from here without the clean checkpoint saying so:
        // the next open must not skip the rest of this segment. Durably
        // and before the first append: under `Durability::Os` appends are
        // stores the kernel may write back in any page order, and a
        // surviving later page read past a lost one at `end` would be
        // skipped by the next open, then taken for records of the open
        // after it (same segment id, consecutive LSNs; docs/format.md,
        // "Clean").
        checkpoint::clear_clean(&*log.vfs, dir)?;
    }
    for spare in kept {
        log.adopt_spare(spare);
    }
    // The spares prepared here, inside the open, have only their header
    // block written; the upkeep thread writes their zeros once the tail
    // passes half the active segment, and prepares later ones with them
    // (see `Log::append_by_syscall`, `Upkeep::want_spare_zeros`).
    log.prepare_spare();
    log.note_last_spare();
    log.append_by_syscall(opts.durability == Durability::Sync);
    log.fill_reserve();
    Ok(log)
}

/// The previous run's spare segments that are kept: only after a clean
/// close (`clean`), and only the next ones after `ids` (as many as
/// `upkeep` keeps) at their full size. Any other is removed (fresh ones are
/// prepared). After a crash none is trusted: a power cut can undo a spare's
/// rename into place while its header and records, written after it, reach
/// the disk, and a spare reused with that content would show a stale header
/// (rotation no longer syncs the header it writes) or stale frames.
fn reuse_spares(
    vfs: &dyn Vfs,
    dir: &Path,
    spares: &[String],
    ids: &[u32],
    clean: bool,
    size: u64,
) -> Result<Vec<Spare>> {
    let next_id = ids.last().map(|&id| id.saturating_add(1));
    let mut kept = Vec::new();
    for name in spares {
        let path = dir.join(name);
        let id = name
            .strip_suffix(segment::SPARE_SUFFIX)
            .and_then(segment::parse_name);
        if let (Some(id), Some(next), true) = (id, next_id, clean) {
            if id >= next && id - next < crate::upkeep::SPARES {
                if let Some(spare) = Spare::reopen(vfs, dir, id, size) {
                    kept.push(spare);
                    continue;
                }
            }
        }
        vfs.remove(&path)
            .map_err(|e| Error::io("removing spare segment", &path, e))?;
    }
    Ok(kept)
}

/// The checkpoint, if it decodes and the log matches it, as a replay
/// state; `Err` says why not (the whole log is scanned then).
fn use_checkpoint(
    vfs: &dyn Vfs,
    dir: &Path,
    ids: &[u32],
    dead_lsns: &HashMap<u64, u64>,
) -> std::result::Result<(Replay, Checkpoint), String> {
    let buf = checkpoint::read(vfs, dir)?;
    let (ck, slots) = checkpoint::decode(&buf)?;
    checkpoint::check_log(vfs, dir, &ck, ids)?;
    let replay = Replay::from_checkpoint(&ck, slots, dead_lsns)?;
    Ok((replay, ck))
}

/// The log after the scan.
struct ScannedLog {
    /// The segments, oldest first (none in a new queue).
    segments: VecDeque<SegInfo>,
    /// The LSN after the last record found (`None` before any segment).
    next_lsn: Option<u64>,
    /// Where the records of the last segment end.
    tail: u32,
}

impl ScannedLog {
    /// The LSN of the next append (1 in a new log).
    fn append_lsn(&self) -> u64 {
        self.next_lsn.unwrap_or(1)
    }

    /// Creates segment 1 of a new queue (no segment was found): its
    /// records start at LSN 1, its job ids at `next_id`.
    fn create_first(
        &mut self,
        vfs: &dyn Vfs,
        dir: &Path,
        opts: &Options,
        next_id: u64,
    ) -> Result<()> {
        // Under `Sync` appends are `pwrite`s, which keep zeros written
        // ahead of them: the first are written now (see `Spare::prepare`).
        let zeros = if opts.durability == Durability::Sync {
            PREPARED_ZEROS
        } else {
            0
        };
        let spare = Spare::prepare(vfs, dir, 1, opts.segment_size, opts.file_mode, zeros)?;
        let seg = Segment::create(vfs, dir, spare, 1, next_id)?;
        self.segments.push_back(SegInfo {
            seg: Arc::new(seg),
            live_jobs: 0,
            live_bytes: 0,
        });
        self.next_lsn = Some(1);
        Ok(())
    }
}

/// Replays the segments, all of them or (with a checkpoint) only the log
/// written after the checkpoint: covered segments are taken as they are.
fn scan_log(
    dir: &Path,
    ids: &[u32],
    ck: Option<&Checkpoint>,
    ctx: &ScanCtx<'_>,
    replay: &mut Replay,
    report: &mut RecoveryReport,
) -> Result<ScannedLog> {
    let covered = ck.map_or(0, |c| c.segments.len());
    let mut scanned = ScannedLog {
        segments: VecDeque::new(),
        next_lsn: None,
        tail: SEGMENT_HEADER_LEN as u32,
    };
    let newest_id = ids.last().copied().unwrap_or(0);
    let newest_path = dir.join(segment::file_name(newest_id));
    for (i, &id) in ids.iter().enumerate() {
        // One segment at a time: a sealed one gives its descriptor back
        // before the next is opened.
        let seg = Arc::new(Segment::open(
            ctx.vfs,
            &dir.join(segment::file_name(id)),
            id,
        )?);
        replay.next_id = replay.next_id.max(seg.header.next_job_id);
        let newest = (i + 2 == ids.len()).then_some(Newest {
            id: newest_id,
            path: &newest_path,
        });
        let ctx = &ScanCtx {
            last: i + 1 == ids.len(),
            newest,
            ..*ctx
        };
        let end = match ck {
            Some(c) if i < covered => scan_covered(&seg, c, i, ctx, replay, report)?,
            _ => {
                let expected = expected_lsn(&seg, scanned.next_lsn, ctx.mode, report)?;
                let from = ScanEnd::at(SEGMENT_HEADER_LEN as u32, expected);
                scan_segment(&seg, from, ctx, replay, report)?
            }
        };
        settle_segment(dir, &seg, &end, ctx, report)?;
        if i + 1 >= covered {
            scanned.next_lsn = Some(end.next_lsn);
            report.segments_scanned += 1;
        }
        scanned.tail = end.off;
        scanned.segments.push_back(SegInfo {
            seg,
            live_jobs: 0,
            live_bytes: 0,
        });
        if end.cut {
            break;
        }
    }
    Ok(scanned)
}

/// Scans segment `i` of the log, which checkpoint `ck` covers. One
/// covered and sealed is taken as it is: it ends where the checkpoint
/// says (nothing is read). The last covered one is replayed after the
/// checkpoint's end (`scan_after`).
fn scan_covered(
    seg: &Segment,
    ck: &Checkpoint,
    i: usize,
    ctx: &ScanCtx<'_>,
    replay: &mut Replay,
    report: &mut RecoveryReport,
) -> Result<ScanEnd> {
    let end = ck.segments[i].end;
    if i + 1 < ck.segments.len() {
        // Covered and sealed: read through its map from now on.
        return Ok(ScanEnd::at(end, 0));
    }
    let from = ScanEnd::at(end, ck.next_lsn);
    let clean = ck.flags & FLAG_CLEAN != 0;
    scan_after(seg, from, ctx.last && clean, ctx, replay, report)
}

/// Settles a segment after its scan ended at `end`: publishes what was
/// found intact, drops the newest segment if this one was cut at a tail
/// torn across the rotation, and maps the last segment (or the one cut)
/// now, while a sealed one gives its descriptor back.
fn settle_segment(
    dir: &Path,
    seg: &Segment,
    end: &ScanEnd,
    ctx: &ScanCtx<'_>,
    report: &mut RecoveryReport,
) -> Result<()> {
    // From here on the segment is read through its map, below what was
    // found intact; a sealed one gives its descriptor back.
    seg.publish(end.off);
    if let (true, Some(newest)) = (end.cut, ctx.newest) {
        // Torn across the rotation: this segment is the last now.
        rotation_tear::drop_newest(ctx.vfs, dir, newest, report)?;
    }
    if ctx.last || end.cut {
        seg.map_now()?;
    } else {
        seg.release_fd();
    }
    Ok(())
}

/// The LSN segment `seg` must start with, after one ending at `next_lsn`.
fn expected_lsn(
    seg: &Segment,
    next_lsn: Option<u64>,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<u64> {
    Ok(match next_lsn {
        None => seg.header.base_lsn,
        Some(lsn) if lsn == seg.header.base_lsn => lsn,
        Some(lsn) if mode == RecoveryMode::Salvage && seg.header.base_lsn > lsn => {
            report.records_lost += seg.header.base_lsn - lsn;
            seg.header.base_lsn
        }
        Some(lsn) => {
            return Err(Error::corrupt(
                &seg.path,
                0,
                format!(
                    "segment starts at LSN {}, but the one before ends at LSN {}",
                    seg.header.base_lsn,
                    lsn - 1
                ),
            ))
        }
    })
}

/// Replays the last covered segment after the checkpoint's end. After a
/// clean close (`clean`, and no segment after this one) nothing was
/// appended if the bytes at the end are still zeros: the rest of the
/// segment is not read (open clears the clean flag, durably, before
/// anything is appended). Otherwise the rest is scanned like any
/// segment's.
fn scan_after(
    seg: &Segment,
    from: ScanEnd,
    clean: bool,
    ctx: &ScanCtx<'_>,
    replay: &mut Replay,
    report: &mut RecoveryReport,
) -> Result<ScanEnd> {
    if clean {
        let len = (seg.size() - from.off).min(CLEAN_PROBE);
        let probe = checkpoint::read_at(ctx.vfs, &seg.path, from.off, len)
            .map_err(|e| Error::io("reading segment", &seg.path, e))?;
        if probe.iter().all(|&b| b == 0) {
            return Ok(from);
        }
    }
    scan_segment(seg, from, ctx, replay, report)
}

/// Checks the log against the last clean close (file `CLOSED`, absent in
/// directories written before it existed): a log that ends before the LSN
/// recorded there, or an active segment shorter than it was created, was
/// cut by someone else (a segment is preallocated before it is renamed
/// into place, so a short segment is never a torn write). Strict refuses
/// with an error naming the file; Salvage opens and counts the loss.
fn check_clean_close(
    vfs: &dyn Vfs,
    dir: &Path,
    segments: &VecDeque<SegInfo>,
    next_lsn: Option<u64>,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<()> {
    let path = dir.join(segment::CLOSE_FILE);
    let Some(bytes) = read_small(vfs, &path)? else {
        return Ok(());
    };
    let strict = mode == RecoveryMode::Strict;
    let Some(clean) = CleanClose::decode(&bytes) else {
        if strict {
            return Err(Error::corrupt(&path, 0, "clean-close record is damaged"));
        }
        return Ok(());
    };
    let found = next_lsn.map_or(0, |n| n - 1);
    let last = segments.back().map(|s| &s.seg);
    let where_ = last.map_or(path.as_path(), |s| s.path.as_path());
    if let Some(seg) = last.filter(|s| s.id == clean.segment_id) {
        let size = u64::from(seg.size());
        if size < clean.segment_size {
            if strict {
                return Err(Error::corrupt(
                    &seg.path,
                    size,
                    format!(
                        "segment is {size} bytes, shorter than the {} it was created with: \
                         it was truncated (open with RecoveryMode::Salvage to keep the rest)",
                        clean.segment_size
                    ),
                ));
            }
            report.bytes_skipped = report
                .bytes_skipped
                .saturating_add(clean.segment_size - size);
        }
    }
    if found < clean.last_lsn {
        if strict {
            return Err(Error::corrupt(
                where_,
                0,
                format!(
                    "the log ends at LSN {found}, but the queue was closed cleanly at LSN {}: \
                     records were cut off (open with RecoveryMode::Salvage to keep the rest)",
                    clean.last_lsn
                ),
            ));
        }
        report.records_lost = report.records_lost.saturating_add(clean.last_lsn - found);
    }
    Ok(())
}

/// The bytes of a small file, `None` if it does not exist.
pub(crate) fn read_small(vfs: &dyn Vfs, path: &Path) -> Result<Option<Vec<u8>>> {
    let file = match vfs.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("opening", path, e)),
    };
    let len = file.len().map_err(|e| Error::io("reading", path, e))?;
    let mut buf = vec![0u8; usize::try_from(len.min(4096)).unwrap_or(4096)];
    file.read_at(&mut buf, 0)
        .map_err(|e| Error::io("reading", path, e))?;
    Ok(Some(buf))
}

/// Bytes after a clean checkpoint's end that must still be zeros.
const CLEAN_PROBE: u32 = 4096;

/// What a segment scan needs to know besides the segment.
#[derive(Clone, Copy)]
struct ScanCtx<'a> {
    /// The newest segment (a torn tail is cut, not reported).
    last: bool,
    /// When scanning the newest segment but one: the newest (a tail torn
    /// across the rotation is cut too, see `rotation_tear`).
    newest: Option<Newest<'a>>,
    mode: RecoveryMode,
    dead_lsns: &'a HashMap<u64, u64>,
    dedup_ms: u64,
    /// The file system (to give up the reserve on a full disk).
    vfs: &'a dyn Vfs,
}

/// The frame at `off` of a segment image read with `pread`.
fn frame_in<'a>(
    image: &'a [u8],
    seg: &Segment,
    off: u32,
) -> std::result::Result<Frame<'a>, FrameError> {
    let buf = image.get(off as usize..).ok_or(FrameError::Truncated)?;
    frame::decode(buf, seg.id, seg.size())
}

/// A segment as read for its scan.
struct Image<'a> {
    seg: &'a Segment,
    /// The whole segment, read from the scan's start on (nothing before
    /// it is looked at).
    bytes: &'a [u8],
    /// `bytes` up to where the file's data ends (all zeros after it), the
    /// only ones searched for later records and nonzero bytes.
    written: &'a [u8],
    /// The segment's size.
    size: u32,
}

/// Where the scan of a segment is.
struct Cursor {
    /// Offset of the next frame.
    off: u32,
    /// The LSN the next frame must have.
    expected: u64,
    /// Offsets of the frames of an unfinished batch, applied when its last
    /// frame is found.
    batch: Vec<u32>,
    /// The scan stopped at a torn tail.
    torn: bool,
    /// The last frame a search after damage found proving LSNs durable.
    proof: Option<resync::Proof>,
}

/// Replays one segment, read with `pread` (an unreadable sector is an
/// error naming the file, never a `SIGBUS`); returns where it ends.
fn scan_segment(
    seg: &Segment,
    from: ScanEnd,
    ctx: &ScanCtx<'_>,
    replay: &mut Replay,
    report: &mut RecoveryReport,
) -> Result<ScanEnd> {
    let (bytes, data_end) = seg.read_image(from.off)?;
    let image = Image {
        seg,
        bytes: &bytes[..],
        written: &bytes[..data_end],
        size: seg.size(),
    };
    let mut at = Cursor {
        off: from.off,
        expected: from.next_lsn,
        batch: Vec::new(),
        torn: false,
        proof: None,
    };
    loop {
        let damage = match frame_in(image.bytes, seg, at.off) {
            Ok(f) if f.lsn == at.expected => {
                take_frame(&image, &mut at, &f, ctx, replay)?;
                continue;
            }
            Ok(f) => format!("record has LSN {}, expected {}", f.lsn, at.expected),
            Err(FrameError::Zero) if all_zero(image.written, at.off) => break,
            Err(e) => e.to_string(),
        };
        // A damaged or torn record at `at.off`.
        if !past_damage(&image, &mut at, damage, ctx, report)? {
            break;
        }
    }
    end_scan(&image, at, from.off, ctx, report)
}

/// Takes intact frame `f`, found at `at.off` with the LSN expected there,
/// and moves `at` past it. A frame with more of its batch to follow waits
/// in `at.batch`; any other applies the waiting frames of its batch (read
/// again from `image`), then itself.
#[inline]
fn take_frame(
    image: &Image<'_>,
    at: &mut Cursor,
    f: &Frame<'_>,
    ctx: &ScanCtx<'_>,
    replay: &mut Replay,
) -> Result<()> {
    let seg = image.seg;
    if f.flags & FLAG_BATCH_MORE != 0 {
        at.batch.push(at.off);
    } else {
        for b in std::mem::take(&mut at.batch) {
            let bf = frame_in(image.bytes, seg, b)
                .map_err(|e| Error::corrupt(&seg.path, u64::from(b), e.to_string()))?;
            apply(seg, b, &bf, replay, ctx.dead_lsns, ctx.dedup_ms)?;
        }
        apply(seg, at.off, f, replay, ctx.dead_lsns, ctx.dedup_ms)?;
    }
    at.expected += 1;
    at.off += f.len;
    Ok(())
}

/// Deals with a damaged or torn record at `at.off` (`damage` says what is
/// wrong with it); returns whether the scan goes on. With no later frame
/// proving it durable, in the last segment (or torn across the rotation)
/// it is a torn tail: the scan stops there (`at.torn`). Otherwise Salvage
/// skips to the next intact frame, counting what was lost, or stops if
/// there is none; Strict fails naming the file and offset.
fn past_damage(
    image: &Image<'_>,
    at: &mut Cursor,
    damage: String,
    ctx: &ScanCtx<'_>,
    report: &mut RecoveryReport,
) -> Result<bool> {
    let (seg, off) = (image.seg, at.off);
    // Only the newest segment, or the one before it, can end in a torn
    // tail; elsewhere damage is damage, and the first later frame is all
    // the scan needs.
    let may_be_torn = ctx.last || ctx.newest.is_some();
    let later = find_later(image, off + 1, at.expected, may_be_torn, &mut at.proof);
    let next = later.first;
    if !later.durable && (ctx.last || torn_across(ctx, at.expected - at.batch.len() as u64)?) {
        at.torn = true;
        return Ok(false);
    }
    match (ctx.mode, next) {
        (RecoveryMode::Salvage, Some((next_off, f))) => {
            report.records_lost += f.lsn - at.expected;
            report.bytes_skipped += (next_off - off as usize) as u64;
            report.records_lost += at.batch.len() as u64;
            at.batch.clear();
            at.expected = f.lsn;
            at.off = next_off as u32;
            Ok(true)
        }
        (RecoveryMode::Salvage, None) => {
            report.bytes_skipped += u64::from(image.size - off);
            Ok(false)
        }
        (RecoveryMode::Strict, _) => Err(Error::corrupt(
            &seg.path,
            u64::from(off),
            format!("{damage} (not a torn tail: later records are intact)"),
        )),
    }
}

/// Ends the scan of a segment that started at `start` and stopped at `at`;
/// returns where the segment ends. An unfinished batch is dropped (none
/// of it was acknowledged); the newest segment but one that ends early is
/// torn across the rotation unless the newest proves otherwise. A torn
/// tail (any tail of the last segment) is zeroed and synced; a sealed
/// segment that does not end cleanly is an error under Strict.
fn end_scan(
    image: &Image<'_>,
    mut at: Cursor,
    start: u32,
    ctx: &ScanCtx<'_>,
    report: &mut RecoveryReport,
) -> Result<ScanEnd> {
    let had_batch = !at.batch.is_empty();
    if let (false, false, Some(newest)) = (at.torn, ctx.last, ctx.newest) {
        // Ends early (inside a batch, or before the LSN the newest segment
        // starts with): torn across the rotation unless the newest segment
        // proves otherwise.
        let short = had_batch || rotation_tear::newest_base(ctx.vfs, newest)? != at.expected;
        at.torn = short && torn_across(ctx, at.expected - at.batch.len() as u64)?;
    }
    if had_batch {
        // An unfinished batch: none of it was acknowledged.
        report.incomplete_batch_records += at.batch.len() as u64;
        at.expected -= at.batch.len() as u64;
        at.off = at.batch[0];
    }
    if ctx.last || at.torn {
        cut_tail(image, at.off, ctx.vfs, report)?;
    } else if had_batch || !all_zero(image.written, at.off) {
        // Sealed segments end cleanly; anything else was reported above.
        if ctx.mode == RecoveryMode::Strict {
            return Err(Error::corrupt(
                &image.seg.path,
                u64::from(at.off),
                "sealed segment ends inside an unfinished batch",
            ));
        }
    }
    report.bytes_scanned += u64::from(at.off.saturating_sub(start));
    Ok(ScanEnd {
        off: at.off,
        next_lsn: at.expected,
        cut: at.torn && !ctx.last,
    })
}

/// Zeroes the segment's torn tail, from `off` to its last nonzero byte
/// (if there is one past `off`), and syncs it; counts it as torn bytes.
fn cut_tail(image: &Image<'_>, off: u32, vfs: &dyn Vfs, report: &mut RecoveryReport) -> Result<()> {
    let seg = image.seg;
    let end = last_nonzero(image.written, off);
    if end > off {
        report.torn_bytes += u64::from(end - off);
        // Zeroing is an overwrite: on a full copy-on-write disk it
        // needs new space, which the reserve gives (see `reserve`).
        zero(seg, off, end).or_else(|e| {
            let dir = seg.path.parent().unwrap_or(Path::new("."));
            if crate::reserve::is_enospc(&e) && crate::reserve::give_up(vfs, dir) {
                zero(seg, off, end)
            } else {
                Err(e)
            }
        })?;
        seg.sync_data()?;
    }
    Ok(())
}

/// Whether damage or an early end at LSN `lsn` in the newest segment but
/// one is a tail torn across the rotation: the newest segment starts at or
/// after `lsn` (where the lost records would end) and no intact frame of
/// it proves `lsn` durable. False for any other segment (there it is
/// corruption), and for the last (the caller's own rule applies).
fn torn_across(ctx: &ScanCtx<'_>, lsn: u64) -> Result<bool> {
    let Some(newest) = ctx.newest else {
        return Ok(false);
    };
    Ok(rotation_tear::newest_base(ctx.vfs, newest)? >= lsn
        && !rotation_tear::newest_proves(ctx.vfs, newest, lsn)?)
}

fn all_zero(image: &[u8], off: u32) -> bool {
    last_nonzero(image, off) <= off
}

/// One past the last nonzero byte at or after `off` (or `off`).
fn last_nonzero(image: &[u8], off: u32) -> u32 {
    let Some(rest) = image.get(off as usize..) else {
        return off;
    };
    match rest.iter().rposition(|&b| b != 0) {
        Some(p) => off + p as u32 + 1,
        None => off,
    }
}

fn zero(seg: &Segment, from: u32, to: u32) -> Result<()> {
    let zeros = vec![0u8; 1 << 16];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u32);
        seg.write(at, &zeros[..n as usize])?;
        at += n;
    }
    Ok(())
}

/// The first intact frame after `from` with an LSN past `expected`, and,
/// if `need_proof`, whether any intact frame after `from` proves, through
/// its sync lag, that LSN `expected` had been durable (then the damage is
/// not a torn write). Frames start before the written end (the bytes after
/// it are zeros). `proof`: see [`resync::search_log`].
fn find_later<'a>(
    image: &Image<'a>,
    from: u32,
    expected: u64,
    need_proof: bool,
    proof: &mut Option<resync::Proof>,
) -> resync::Later<'a> {
    let span = from as usize..image.written.len();
    let (id, size) = (image.seg.id, image.seg.size());
    resync::search_log(image.bytes, span, id, size, expected, need_proof, proof)
}
