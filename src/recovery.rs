//! Opening a queue directory: verify every record, rebuild the state.
//!
//! 1. Delete leftover `*.tmp` files (an interrupted segment creation or
//!    dead-letter rewrite) and fsync the directory.
//! 2. Open the dead-letter file (torn tail cut, damage reported).
//! 3. Replay the segments in id order. Ids must be consecutive and LSNs
//!    must continue from one segment to the next, so a missing segment or
//!    a lost sealed tail is reported, not skipped.
//! 4. Classify damage. In a sealed segment any bad record is corruption
//!    (sealed segments were fsynced before the next one was written). In
//!    the last segment, a bad record is a torn tail unless a later valid
//!    record proves, through its sync lag, that the bad record had been
//!    durable: then it is corruption too. A torn tail, and an unfinished
//!    batch before it, are zeroed and fsynced before the first new append.
//! 5. Rebuild the state (`rebuild.rs`) and release the leases of the previous process (their attempt counts;
//!    a job on its last attempt goes to the dead letters).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use crate::commit::Committer;
use crate::dead::DeadFile;
use crate::error::{Error, Result};
use crate::format::frame::{self, Frame, FrameError, FLAG_BATCH_MORE};
use crate::format::header::SEGMENT_HEADER_LEN;
use crate::log::{Log, SegInfo};
use crate::options::{Options, RecoveryMode};
use crate::segment::{self, Segment, TMP_SUFFIX};
use crate::state::rebuild::{apply, finish, Replay};
use crate::state::QueueState;
use crate::stats::RecoveryReport;
use crate::vfs::Vfs;

/// Where a scan of one segment stopped.
struct ScanEnd {
    off: u32,
    next_lsn: u64,
}

/// Opens (or creates) the queue in `dir`; `dir` exists and is locked.
pub fn recover(
    vfs: Arc<dyn Vfs>,
    dir: &Path,
    opts: &Options,
    commit: Arc<Committer>,
    clock_ms: u64,
) -> Result<(QueueState, RecoveryReport)> {
    let mut report = RecoveryReport::default();
    let names = vfs
        .list(dir)
        .map_err(|e| Error::io("listing queue directory", dir, e))?;
    let mut ids = Vec::new();
    for name in &names {
        if name.ends_with(TMP_SUFFIX) {
            let path = dir.join(name);
            vfs.remove(&path)
                .map_err(|e| Error::io("removing leftover temporary file", &path, e))?;
            report.temp_files_removed += 1;
        } else if let Some(id) = segment::parse_name(name) {
            ids.push(id);
        }
    }
    if report.temp_files_removed > 0 {
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("syncing directory", dir, e))?;
    }
    ids.sort_unstable();
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

    let (dead, dead_report) = DeadFile::open(&*vfs, dir, opts.file_mode, opts.recovery)?;
    report.torn_bytes += dead_report.torn_bytes;
    report.bytes_skipped += dead_report.damaged_bytes;

    let mut replay = Replay::new();
    for (&id, _) in dead.entries().iter() {
        replay.next_id = replay.next_id.max(id.saturating_add(1));
    }
    let dead_lsns: HashMap<u64, u64> = dead.entries().iter().map(|(id, e)| (*id, e.lsn)).collect();

    let mut segments = VecDeque::new();
    let mut next_lsn = None;
    let mut tail = SEGMENT_HEADER_LEN as u32;
    let dedup_ms = u64::try_from(opts.dedup_window.as_millis()).unwrap_or(u64::MAX);
    for (i, &id) in ids.iter().enumerate() {
        let path = dir.join(segment::file_name(id));
        let seg = Arc::new(Segment::open(&*vfs, &path, id)?);
        replay.next_id = replay.next_id.max(seg.header.next_job_id);
        let expected = match next_lsn {
            None => seg.header.base_lsn,
            Some(lsn) if lsn == seg.header.base_lsn => lsn,
            Some(lsn) if opts.recovery == RecoveryMode::Salvage && seg.header.base_lsn > lsn => {
                report.records_lost += seg.header.base_lsn - lsn;
                seg.header.base_lsn
            }
            Some(lsn) => {
                return Err(Error::corrupt(
                    &path,
                    0,
                    format!(
                        "segment starts at LSN {}, but the one before ends at LSN {}",
                        seg.header.base_lsn,
                        lsn - 1
                    ),
                ))
            }
        };
        let last = i + 1 == ids.len();
        let end = scan_segment(
            &seg,
            expected,
            last,
            opts.recovery,
            &mut replay,
            &dead_lsns,
            dedup_ms,
            &mut report,
        )?;
        report.segments_scanned += 1;
        report.bytes_scanned += u64::from(end.off);
        next_lsn = Some(end.next_lsn);
        tail = end.off;
        segments.push_back(SegInfo {
            seg,
            live_jobs: 0,
            live_bytes: 0,
        });
    }

    if segments.is_empty() {
        let seg = Segment::create(
            &*vfs,
            dir,
            1,
            opts.segment_size,
            1,
            replay.next_id,
            opts.file_mode,
        )?;
        segments.push_back(SegInfo {
            seg: Arc::new(seg),
            live_jobs: 0,
            live_bytes: 0,
        });
        next_lsn = Some(1);
    }
    let next_lsn = next_lsn.unwrap_or(1);
    // Whatever survived the crash is on disk from here on, so later sync
    // lags are measured from a true durable point.
    let active = &segments.back().expect("at least one segment").seg;
    active
        .file
        .sync_data()
        .map_err(|e| Error::io("syncing segment", &active.path, e))?;
    commit.mark_durable(next_lsn - 1);

    let log = Log::new(
        dir.to_path_buf(),
        vfs,
        opts.file_mode,
        opts.segment_size,
        segments,
        tail,
        next_lsn,
        commit,
    );
    finish(log, dead, replay, opts, clock_ms, report)
}

/// Replays one segment; returns where it ends.
#[allow(clippy::too_many_arguments)]
fn scan_segment(
    seg: &Segment,
    mut expected: u64,
    last: bool,
    mode: RecoveryMode,
    replay: &mut Replay,
    dead_lsns: &HashMap<u64, u64>,
    dedup_ms: u64,
    report: &mut RecoveryReport,
) -> Result<ScanEnd> {
    let size = seg.size();
    let mut off = SEGMENT_HEADER_LEN as u32;
    let mut batch: Vec<u32> = Vec::new();
    loop {
        let damage = match seg.frame_at(off) {
            Ok(f) if f.lsn == expected => {
                if f.flags & FLAG_BATCH_MORE != 0 {
                    batch.push(off);
                } else {
                    for b in std::mem::take(&mut batch) {
                        let bf = seg
                            .frame_at(b)
                            .map_err(|e| Error::corrupt(&seg.path, u64::from(b), e.to_string()))?;
                        apply(seg, b, &bf, replay, dead_lsns, dedup_ms)?;
                    }
                    apply(seg, off, &f, replay, dead_lsns, dedup_ms)?;
                }
                expected += 1;
                off += f.len;
                continue;
            }
            Ok(f) => format!("record has LSN {}, expected {expected}", f.lsn),
            Err(FrameError::Zero) if all_zero(seg, off) => break,
            Err(e) => e.to_string(),
        };
        // A damaged or torn record at `off`.
        let (next, durable_later) = find_later(seg, off + 1, expected);
        if last && !durable_later {
            break;
        }
        match (mode, next) {
            (RecoveryMode::Salvage, Some((next_off, f))) => {
                report.records_lost += f.lsn - expected;
                report.bytes_skipped += u64::from(next_off - off);
                report.records_lost += batch.len() as u64;
                batch.clear();
                expected = f.lsn;
                off = next_off;
            }
            (RecoveryMode::Salvage, None) => {
                report.bytes_skipped += u64::from(size - off);
                break;
            }
            (RecoveryMode::Strict, _) => {
                return Err(Error::corrupt(
                    &seg.path,
                    u64::from(off),
                    format!("{damage} (not a torn tail: later records are intact)"),
                ));
            }
        }
    }
    if !batch.is_empty() {
        // An unfinished batch: none of it was acknowledged.
        report.incomplete_batch_records += batch.len() as u64;
        expected -= batch.len() as u64;
        off = batch[0];
    }
    if last {
        let end = last_nonzero(seg, off);
        if end > off {
            report.torn_bytes += u64::from(end - off);
            zero(seg, off, end)?;
            seg.file
                .sync_data()
                .map_err(|e| Error::io("syncing cut tail", &seg.path, e))?;
        }
    } else if !batch.is_empty() || !all_zero(seg, off) {
        // Sealed segments end cleanly; anything else was reported above.
        if mode == RecoveryMode::Strict {
            return Err(Error::corrupt(
                &seg.path,
                u64::from(off),
                "sealed segment ends inside an unfinished batch",
            ));
        }
    }
    Ok(ScanEnd {
        off,
        next_lsn: expected,
    })
}

fn all_zero(seg: &Segment, off: u32) -> bool {
    last_nonzero(seg, off) <= off
}

/// One past the last nonzero byte at or after `off` (or `off`).
fn last_nonzero(seg: &Segment, off: u32) -> u32 {
    let size = seg.size();
    let Some(rest) = seg.region.bytes(off as usize, (size - off) as usize) else {
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

/// The first intact frame after `from` with an LSN past `expected`, and
/// whether any intact frame after `from` proves, through its sync lag, that
/// LSN `expected` had been durable (then the damage is not a torn write).
fn find_later(seg: &Segment, from: u32, expected: u64) -> (Option<(u32, Frame<'_>)>, bool) {
    let size = seg.size() as usize;
    let Some(bytes) = seg.region.bytes(0, size) else {
        return (None, false);
    };
    let mut first = None;
    let mut off = from as usize;
    while off + frame::FRAME_HEADER_LEN <= size {
        let lsn = crate::format::u64_at(bytes, off + 8).unwrap_or(0);
        if lsn > expected && lsn - expected < (1 << 40) {
            if let Ok(f) = frame::decode(&bytes[off..], seg.id, seg.size()) {
                if first.is_none() {
                    first = Some((off as u32, f));
                }
                if f.lsn.saturating_sub(u64::from(f.sync_lag)) >= expected {
                    return (first, true);
                }
            }
        }
        // Byte by byte, not frame by frame: a frame found inside damaged
        // bytes may be bogus and its length would skip real ones.
        off += 1;
    }
    (first, false)
}
