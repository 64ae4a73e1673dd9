//! The segmented log: appends records to the active segment and rotates.
//!
//! Segment ids are consecutive from the oldest to the active (newest)
//! segment; only the oldest is ever deleted (see `reclaim`). LSNs are
//! consecutive across segments: a new segment's header carries the LSN of
//! its first record.
//!
//! Rotation order (each step durable before the next):
//! 1. fdatasync the old active segment through the committer (the one sync
//!    path, see `commit`), so nothing in the new segment is acknowledged
//!    while an older record could still be lost (cheap: the writeback of
//!    every completed 1 MiB chunk was started as the tail passed it, see
//!    [`Upkeep::write_back`], so at most the last chunk is left to write);
//! 2. install the spare prepared ahead (see `segment` and `upkeep`): its
//!    header written and fdatasynced, renamed into place; make it the
//!    committer's target, whose next leader syncs the directory before the
//!    new segment (the next spare is prepared by the `walq-upkeep` thread,
//!    outside the queue lock; a rotation that finds none makes it itself,
//!    see [`Upkeep::take_spare`]);
//! 3. close the old segment's descriptor: sealed segments are read through
//!    their map and hold no file descriptor.
//!
//! Under `Durability::Os` appends are stores into the active segment's map.
//! Each append that carries the tail over a 1 MiB boundary (and the first
//! into a new segment) queues the prefault of the next 2 MiB for the
//! `walq-prefault` thread ([`Upkeep::prefault`]), so the kernel's zero-fill
//! of those pages is not paid under the queue lock; a late prefault only
//! means the stores fault the pages in themselves, one page per fault (the
//! active segment's map is advised against readahead, see
//! `Region::advise`).
//!
//! A failed creation (ENOSPC, say) writes nothing and changes nothing: the
//! append fails, the queue is not poisoned ([`Log::take_harmless_failure`])
//! and the next append tries again.
//!
//! A failed write of a record (ENOSPC from `pwrite` on a copy-on-write file
//! system) is rolled back the same way: the tail does not move, nothing is
//! published, and the bytes it may have written past the tail (the
//! "residue") are zeroed before the next record is written or the segment
//! is sealed, so a sealed segment ends cleanly. Such a failure is harmless
//! only if it is the operation's first change: an operation that already
//! appended a record or changed memory ([`Log::mark_changed`]) poisons the
//! queue, as before. Records that drain the queue may, on ENOSPC, give up
//! the reserve (see `reserve`) and try once more.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use crate::commit::{Committer, Waiter};
use crate::error::{Error, ErrorKind, Result};
use crate::format::close::CleanClose;
use crate::format::frame::{self, FRAME_HEADER_LEN};
use crate::format::header::SEGMENT_HEADER_LEN;
use crate::format::record::Record;
use crate::reserve::{is_enospc, Reserve};
use crate::segmap::{MapBudget, MAX_MAPS};
use crate::segment::{Segment, Spare};
use crate::upkeep::Upkeep;
use crate::vfs::Vfs;

/// How far ahead of the tail pages are faulted in (by the `walq-upkeep`
/// thread, see [`Upkeep::prefault`]).
const PREFAULT_BYTES: u32 = 2 << 20;
/// `pwrite` appends keep at least this many bytes past the tail written
/// (as zeros) ahead of them, in steps of this size (see [`Log::zero_ahead`]).
const ZERO_AHEAD: u32 = 1 << 20;
/// Bytes of a segment written (zeros) when it is prepared, for logs whose
/// appends are `pwrite`s: the first [`Log::zero_ahead`] of the segment,
/// done off the write path (see [`Spare::prepare`]).
pub const PREPARED_ZEROS: u32 = 2 * ZERO_AHEAD;
/// The chunk of the active segment whose writeback is started once the
/// tail has passed it (the 1 MiB boundaries where the prefault runs).
const WRITEBACK_CHUNK: u32 = 1 << 20;
/// Payloads up to this many bytes are copied next to their record's head
/// and written with it: one checksum pass and one write, not two.
const INLINE_TAIL: usize = 2048;

/// A segment and what still lives in it.
#[derive(Debug)]
pub struct SegInfo {
    /// The segment.
    pub seg: Arc<Segment>,
    /// Live jobs whose latest full record is in this segment.
    pub live_jobs: u64,
    /// Bytes of those records.
    pub live_bytes: u64,
}

/// Where an appended record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Segment id.
    pub seg: u32,
    /// Offset in the segment.
    pub off: u32,
    /// Frame length.
    pub len: u32,
    /// LSN given to the record.
    pub lsn: u64,
}

/// The log writer.
#[derive(Debug)]
pub struct Log {
    /// The queue directory.
    pub dir: PathBuf,
    /// The file system.
    pub vfs: Arc<dyn Vfs>,
    /// Permission bits of new files.
    pub mode: u32,
    /// Size of new segments.
    pub seg_size: u64,
    /// Segments, oldest first; the last is the active one.
    pub segments: VecDeque<SegInfo>,
    /// Where the next record goes in the active segment.
    pub tail: u32,
    /// LSN of the next record.
    pub next_lsn: u64,
    /// Group-commit coordinator (holds the durable LSN).
    pub commit: Arc<Committer>,
    buf: Vec<u8>,
    /// The checksum seed of the segment last appended to: its id and a
    /// hasher fed with it ([`frame::seed`]), cloned for each record.
    crc_seed: Option<(u32, crc32fast::Hasher)>,
    /// The last append failed before writing anything (see rotation).
    harmless_failure: bool,
    /// The spares prepared ahead, and segments to delete: file work done
    /// after the queue lock is released.
    upkeep: Arc<Upkeep>,
    /// Records appended or memory changed by the current operation (see
    /// [`Log::begin_op`]): a failure after the first change is not harmless.
    op_changes: u32,
    /// End of bytes past `tail` in the active segment that a failed write
    /// may have left (0: none); zeroed before the next write or rotation.
    residue: u32,
    /// A failed write left a residue in the active segment (zeroed since
    /// or not): bytes other than records were written there, so rotation
    /// has its seal synced even when every record in it is durable.
    had_residue: bool,
    /// Space held for draining records where overwrites need space.
    reserve: Option<Reserve>,
    /// Whether the file system was asked if it needs the reserve.
    reserve_checked: bool,
    /// The last failed append failed writing (not creating a segment).
    write_failed: bool,
    /// The active segment is the last spare, which a draining record
    /// rotated into: new jobs go into it only once the spare after it
    /// exists again ([`Log::ensure_room_for`]).
    last_spare: bool,
    /// Appends are `pwrite`s, never stores into the map (set under
    /// `Durability::Sync`, see [`Log::append_by_syscall`]).
    syscall_appends: bool,
    /// Records of a batch held for one `pwrite` (see [`Log::stage_begin`]).
    staged: Option<Staged>,
    /// How far past the tail `pwrite` appends have had zeros written
    /// ahead of them: (segment id, end offset); see [`Log::zero_ahead`].
    zeroed: (u32, u32),
    /// The bound on the segments' maps (see `segmap`).
    maps: Arc<MapBudget>,
    /// The ids of the first and the active segment, kept with `segments`
    /// (by [`Log::note_ends`]) for the checks every operation makes.
    ends: (u32, u32),
}

/// Records appended but not yet written: a batch's frames, written with
/// one `pwrite` by [`Log::stage_flush`].
#[derive(Debug)]
struct Staged {
    bytes: Vec<u8>,
    first_lsn: u64,
    last_lsn: u64,
    /// The operation's changes before the batch: staged records are not
    /// changes until they are written.
    changes_before: u32,
}

impl Staged {
    /// Adds a sealed record (`head`, then `tail`) after the bytes staged
    /// so far; `at` is where it would go unstaged, at the log's tail. Where
    /// it will go, after the records staged before it.
    fn add(&mut self, head: &[u8], tail: &[u8], at: Appended) -> Appended {
        let off = at.off + self.bytes.len() as u32;
        self.bytes.extend_from_slice(head);
        self.bytes.extend_from_slice(tail);
        self.last_lsn = at.lsn;
        Appended { off, ..at }
    }
}

/// After a record of `len` bytes was stored into `seg`'s map at `off`:
/// when it crossed a 1 MiB boundary (or was the first append into a new
/// segment), has the next 2 MiB faulted in by the prefault thread once the
/// queue lock is released, not here (faulting a page in zero-fills it: a
/// third of an append's cost when done inline; should the thread be late,
/// the stores fault the pages in themselves), and starts the writeback of
/// the chunk before the boundary, so that the fdatasync that seals this
/// segment (the committer's, after rotation) has at most the last chunk
/// left to write (see `upkeep`). Not for `pwrite` appends: it would dirty
/// pages for the next fdatasync to write, and under `Sync` the group
/// commits write everything as it comes.
#[inline]
fn schedule_page_work(upkeep: &Upkeep, seg: &Arc<Segment>, off: u32, len: u32) {
    let crossing = (off >> 20) != ((off + len) >> 20) || off == SEGMENT_HEADER_LEN as u32;
    if crossing {
        let next = ((off + len) >> 20) << 20;
        upkeep.prefault(seg, next, PREFAULT_BYTES);
        if next >= WRITEBACK_CHUNK {
            upkeep.write_back(seg, next - WRITEBACK_CHUNK, next);
        }
    }
}

impl Log {
    /// A log over recovered `segments` (at least one), appending at `tail`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        vfs: Arc<dyn Vfs>,
        mode: u32,
        seg_size: u64,
        segments: VecDeque<SegInfo>,
        tail: u32,
        next_lsn: u64,
        commit: Arc<Committer>,
    ) -> Log {
        assert!(!segments.is_empty(), "a log has an active segment");
        let active = segments.back().map_or(0, |a| a.seg.id);
        if let Some(active) = segments.back() {
            commit.set_target(active.seg.clone(), next_lsn - 1);
        }
        let maps = Arc::new(MapBudget::new(vfs.clone(), MAX_MAPS));
        for info in &segments {
            info.seg.attach(&maps);
        }
        let upkeep = Arc::new(Upkeep::new(
            vfs.clone(),
            dir.clone(),
            seg_size,
            mode,
            active,
        ));
        let mut log = Log {
            dir,
            vfs,
            mode,
            seg_size,
            segments,
            tail,
            next_lsn,
            commit,
            buf: Vec::with_capacity(256),
            crc_seed: None,
            harmless_failure: false,
            upkeep,
            op_changes: 0,
            residue: 0,
            had_residue: false,
            reserve: None,
            reserve_checked: false,
            write_failed: false,
            last_spare: false,
            syscall_appends: false,
            staged: None,
            zeroed: (0, 0),
            maps,
            ends: (0, 0),
        };
        log.note_ends();
        log
    }

    /// Notes the ids of the first and the active segment, after
    /// `segments` changed at either end.
    fn note_ends(&mut self) {
        let id = |info: Option<&SegInfo>| info.map_or(0, |i| i.seg.id);
        self.ends = (id(self.segments.front()), id(self.segments.back()));
    }

    /// The id of the oldest segment.
    #[inline]
    pub fn first_id(&self) -> u32 {
        debug_assert_eq!(self.ends.0, self.segments.front().map_or(0, |i| i.seg.id));
        self.ends.0
    }

    /// Where the next record goes, as one number across segments (the
    /// active segment's id times the segment size, plus the tail): what
    /// the checkpoint schedule measures the log's growth by.
    #[inline]
    pub fn position(&self) -> u64 {
        debug_assert_eq!(self.ends.1, self.active().id);
        u64::from(self.ends.1) * self.seg_size + u64::from(self.tail)
    }

    /// Unmaps sealed segments, least recently read first, while the log
    /// holds more maps than [`MAX_MAPS`] (down to a quarter below it). A
    /// segment something else still holds (the committer, a segment
    /// waiting for deletion, a reader) is skipped: `Arc::get_mut` proves
    /// that no slice of its map is alive.
    fn trim_maps(&mut self) {
        let keep = self.maps.trim_to();
        let sealed = self.segments.len().saturating_sub(1);
        let mut lru: Vec<(u64, usize)> = self
            .segments
            .iter()
            .take(sealed)
            .enumerate()
            .filter(|(_, i)| i.seg.region.is_mapped())
            .map(|(at, i)| (i.seg.region.last_used(), at))
            .collect();
        lru.sort_unstable();
        for (_, at) in lru {
            if self.maps.mapped() <= keep {
                break;
            }
            if let Some(seg) = self
                .segments
                .get_mut(at)
                .and_then(|i| Arc::get_mut(&mut i.seg))
            {
                seg.unmap();
            }
        }
    }

    /// Makes appends `pwrite`s instead of stores into the map. Under
    /// `Durability::Sync` every record is followed by an fdatasync, which
    /// write-protects the pages it cleans, so the next store into the
    /// same page faults again (`page_mkwrite`); a `pwrite` takes no fault
    /// (measured in `docs/benchmarks.md`). Reads still go through the map.
    ///
    /// Turned on at open, it has the spares prepared from then on (by the
    /// `walq-upkeep` thread, off the write path) written over their first
    /// [`PREPARED_ZEROS`], and notes how far past the tail the active
    /// segment's blocks are already written (see
    /// [`Log::note_written_ahead`]).
    pub fn append_by_syscall(&mut self, on: bool) {
        self.syscall_appends = on;
        self.upkeep
            .set_spare_zeros(if on { PREPARED_ZEROS } else { 0 });
        if on {
            self.note_written_ahead();
        }
    }

    /// Notes how far past the tail the active segment's blocks are
    /// already written (the zeros written when it was prepared, or those
    /// a previous run wrote ahead, or its prefaulted pages, synced at its
    /// close), so that its first appends do not write [`ZERO_AHEAD`] of
    /// zeros again: 2-3 ms of the first operation after an open or a
    /// rotation, inside its commit.
    fn note_written_ahead(&mut self) {
        let seg = self.active();
        let written = seg.written_end().min(seg.size());
        if written > self.tail {
            self.zeroed = (seg.id, written);
        }
    }

    /// Starts a state operation: its first failed change, if it wrote
    /// nothing, is harmless ([`Log::take_harmless_failure`]).
    #[inline]
    pub fn begin_op(&mut self) {
        self.harmless_failure = false;
        self.op_changes = 0;
        if self.maps.over() {
            self.trim_maps();
        }
    }

    /// Whether the current operation has changed nothing yet.
    pub fn op_unchanged(&self) -> bool {
        self.op_changes == 0
    }

    /// The changes the current operation made so far are complete: memory
    /// and log agree on them whatever follows (expired leases, each
    /// released by its own record), so a failure after this point that
    /// changes nothing else is harmless again. Only for changes made since
    /// [`Log::op_unchanged`] was true.
    pub fn changes_complete(&mut self) {
        self.op_changes = 0;
    }

    /// The current operation changed memory (or another file) before its
    /// next append: a failure of that append is no longer harmless.
    pub fn mark_changed(&mut self) {
        self.op_changes = self.op_changes.saturating_add(1);
    }

    /// Sets up the reserve where the file system needs one (at open, and
    /// again once reclaim gave space back): best effort.
    pub fn fill_reserve(&mut self) {
        if !self.reserve_checked {
            self.reserve_checked = true;
            let bytes = crate::reserve::reserve_bytes(self.seg_size);
            self.reserve = Reserve::for_dir(&*self.vfs, &self.dir, bytes);
        }
        if let Some(r) = &mut self.reserve {
            r.fill(&*self.vfs);
        }
    }

    /// Takes the last append off the operation's changes: a record that
    /// replay and memory agree on whatever follows (a QueueDef), so that
    /// a full disk on the record after it still fails harmlessly.
    pub fn uncount_last_change(&mut self) {
        self.op_changes = self.op_changes.saturating_sub(1);
    }

    /// Whether a failure at this point would be harmless: nothing changed
    /// yet in this operation and the log has not failed.
    fn failure_is_harmless(&self) -> bool {
        self.op_changes == 0 && !self.commit.failed()
    }

    /// Remembers that a failed write may have left bytes up to `end` past
    /// the tail, and zeroes them if it can (else before the next write).
    fn note_residue(&mut self, end: u32) {
        self.residue = self.residue.max(end);
        self.had_residue = true;
        let _ = self.clear_residue();
    }

    /// Zeroes what a failed write may have left past the tail. On failure
    /// nothing changed (the residue is still remembered).
    fn clear_residue(&mut self) -> Result<()> {
        if self.residue <= self.tail {
            self.residue = 0;
            return Ok(());
        }
        let seg = self.active().clone();
        let zeros = vec![0u8; (self.residue - self.tail) as usize];
        seg.write_by(self.tail, &zeros, self.syscall_appends)
            .inspect_err(|_| self.write_failed = true)?;
        self.residue = 0;
        Ok(())
    }

    /// The active segment.
    pub fn active(&self) -> &Arc<Segment> {
        &self
            .segments
            .back()
            .expect("a log has an active segment")
            .seg
    }

    /// The segment with this id, if it still exists.
    pub fn info(&self, id: u32) -> Option<&SegInfo> {
        let front = self.segments.front()?.seg.id;
        self.segments.get(id.checked_sub(front)? as usize)
    }

    /// The segment with this id, for update.
    pub fn info_mut(&mut self, id: u32) -> Option<&mut SegInfo> {
        let front = self.segments.front()?.seg.id;
        self.segments.get_mut(id.checked_sub(front)? as usize)
    }

    /// Largest frame that fits in an empty segment.
    pub fn max_frame(&self) -> u64 {
        self.seg_size - SEGMENT_HEADER_LEN as u64
    }

    /// Bytes of all segment files, and of the spare segments prepared
    /// ahead.
    pub fn disk_bytes(&self) -> u64 {
        let segments: u64 = self.segments.iter().map(|s| u64::from(s.seg.size())).sum();
        segments + self.upkeep.spare_bytes()
    }

    /// Rotates first if `bytes` more of new jobs would not fit in the
    /// active segment (see [`Log::ensure_room_for`]).
    pub fn ensure_room(&mut self, bytes: u64, next_job_id: u64) -> Result<()> {
        self.write_failed = false;
        self.ensure_room_for(bytes, next_job_id, false)
            .inspect_err(|e| self.note_failure(e))
    }

    /// Rotates first if `bytes` more of records that drain the queue
    /// (leases, acks, nacks, dead letters, carried records) would not fit.
    pub fn ensure_room_draining(&mut self, bytes: u64, next_job_id: u64) -> Result<()> {
        self.write_failed = false;
        self.ensure_room_for(bytes, next_job_id, true)
            .inspect_err(|e| self.note_failure(e))
    }

    /// Rotates first if `bytes` more would not fit in the active segment.
    /// Only `draining` records may use the last spare segment: new jobs are
    /// refused (ENOSPC, not poisoned) unless the segment after it can be
    /// prepared too, so a full disk keeps room to drain the queue.
    fn ensure_room_for(&mut self, bytes: u64, next_job_id: u64, draining: bool) -> Result<()> {
        if bytes > self.max_frame() {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "{bytes} bytes of records do not fit in a segment of {} bytes",
                    self.seg_size
                ),
            ));
        }
        if self.last_spare && !draining {
            self.leave_last_spare()?;
        }
        let staged = self.staged.as_ref().map_or(0, |st| st.bytes.len() as u64);
        let end = u64::from(self.tail) + staged + bytes;
        if end > u64::from(self.active().size()) {
            if staged > 0 {
                // `stage_begin`'s caller made room for the whole batch.
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "a staged batch outgrew its room: {end} bytes past the segment's start"
                    ),
                ));
            }
            self.rotate(next_job_id, draining)?;
        }
        Ok(())
    }

    /// For a new job while the active segment is the last spare: the
    /// spare after it, ready or prepared now, lets new jobs in again; if
    /// it cannot be made (ENOSPC), the job is refused as a rotation would
    /// refuse it, and the segment's room stays the drain's. Before, new
    /// jobs filled it, and the next lease or ack needed a segment that
    /// could not be made: the queue could not be drained.
    #[cold]
    fn leave_last_spare(&mut self) -> Result<()> {
        let next = self.active().id.saturating_add(1);
        self.upkeep.ensure_spare(next, &self.commit)?;
        self.last_spare = false;
        Ok(())
    }

    /// Whether the active segment is the last spare (see
    /// [`Log::leave_last_spare`]): no spare after it is ready. Checked at
    /// open, once the spares were prepared, and after each rotation.
    pub fn note_last_spare(&mut self) {
        let next = self.active().id.saturating_add(1);
        self.last_spare = !self.upkeep.has_spare(next);
    }

    /// Holds the records appended from now on, under `pwrite` appends (the
    /// appends of `Durability::Sync`, and every append on a file system
    /// where stores into the map are not safe: btrfs, overlayfs, any not
    /// known), for one write at [`Log::stage_flush`]: a batch of 100 jobs
    /// costs one system call, not 100. The caller has made room for every record
    /// ([`Log::ensure_room`]), so the batch never rotates, and must call
    /// `stage_flush` (or `stage_abort`) before the operation ends. Nothing
    /// staged is published or counted as written until the flush. A no-op
    /// with map stores, which cost no system call.
    pub fn stage_begin(&mut self) {
        if self.syscall_appends || self.active().writes_by_syscall() {
            self.staged = Some(Staged {
                bytes: Vec::new(),
                first_lsn: self.next_lsn,
                last_lsn: 0,
                changes_before: self.op_changes,
            });
        }
    }

    /// Writes the staged records with one `pwrite`, then publishes them.
    /// On failure nothing is published, the LSNs are given back and the
    /// bytes the write may have left past the tail are zeroed, as after a
    /// failed append: the caller made nothing live for the staged records
    /// yet (`QueueState::enqueue_batch`), so they are not counted as
    /// changes, and a full disk is harmless if nothing else changed
    /// ([`Log::take_harmless_failure`]; EIO still poisons the queue).
    pub fn stage_flush(&mut self) -> Result<()> {
        let Some(st) = self.staged.take() else {
            return Ok(());
        };
        if st.bytes.is_empty() {
            return Ok(());
        }
        let seg = self.active().clone();
        let len = u32::try_from(st.bytes.len()).expect("checked against the segment size");
        if let Err(e) = seg.write_by(self.tail, &st.bytes, true) {
            self.write_failed = true;
            self.note_residue(self.tail + len);
            self.next_lsn = st.first_lsn;
            self.op_changes = st.changes_before;
            self.note_failure(&e);
            return Err(e);
        }
        self.tail += len;
        seg.publish(self.tail);
        self.commit.written(st.last_lsn);
        self.zero_ahead();
        Ok(())
    }

    /// After a `pwrite` append: if fewer than [`ZERO_AHEAD`] bytes past the
    /// tail have been written, writes zeros up to the next
    /// [`ZERO_AHEAD`]-aligned offset at least that far past it (1 to 2 MiB
    /// ahead), on file systems that overwrite preallocated blocks in place
    /// (see [`VfsFile::write_zeros_ahead`]); elsewhere, and with map
    /// stores, nothing.
    ///
    /// Why: a segment is preallocated, and an append into preallocated
    /// space (an unwritten extent) changes the file's extent map, so the
    /// fdatasync that follows must also write that metadata (a second
    /// synchronous write on ext4 without a journal, a journal commit with
    /// one, a log force on xfs). Appends of a few records touch a new
    /// block at almost every sync, and the disk syncs 10,000 B at 0.2-0.7
    /// times the rate over fallocated blocks that it reaches over written
    /// ones (docs/benchmarks.md, "Sync appends into written blocks"). Written
    /// a MiB at a time, the zeros convert the extents once per MiB, and
    /// their data and metadata go out with one group commit's fdatasync.
    ///
    /// Safe for the log's bytes: the zeros go only past the tail, under
    /// the log's lock (no append runs meanwhile), onto space that reads as
    /// zeros already, whether they reach the disk or not; a failed write
    /// of them is ignored.
    ///
    /// Past half the segment it also asks the `walq-upkeep` thread for the
    /// zeros of the spares an open prepared without them
    /// ([`Upkeep::want_spare_zeros`]).
    fn zero_ahead(&mut self) {
        let Some(seg) = self.segments.back().map(|a| &a.seg) else {
            return;
        };
        let done = if self.zeroed.0 == seg.id {
            self.zeroed.1
        } else {
            0
        };
        let size = seg.size();
        if self.tail > size / 2 {
            // The next rotation nears: the spares an open prepared without
            // their zeros get them now, off the write path.
            self.upkeep.want_spare_zeros();
        }
        let ahead = self.tail.saturating_add(ZERO_AHEAD);
        if done >= ahead.min(size) {
            return;
        }
        let round_up = |x: u32, to: u32| x.checked_next_multiple_of(to).unwrap_or(u32::MAX);
        let from = done.max(round_up(self.tail, 4096)).min(size);
        let to = round_up(ahead, ZERO_AHEAD).min(size);
        if from < to {
            seg.write_zeros_ahead(from, to - from);
        }
        self.zeroed = (seg.id, to);
    }

    /// Drops the staged records unwritten and gives their LSNs back.
    pub fn stage_abort(&mut self) {
        if let Some(st) = self.staged.take() {
            self.next_lsn = st.first_lsn;
            self.op_changes = st.changes_before;
        }
    }

    /// Appends one record and returns where it went. On failure nothing
    /// was published and the tail did not move; the failure is harmless if
    /// it was the operation's first change ([`Log::take_harmless_failure`]).
    /// A record that drains the queue (not an enqueue) that fails with
    /// ENOSPC gives up the reserve, if one is held, and is tried once more.
    pub fn append(&mut self, rec: &Record<'_>, flags: u8, next_job_id: u64) -> Result<Appended> {
        let draining = !matches!(rec, Record::Enqueue(_));
        match self.try_append(rec, flags, next_job_id, draining) {
            Ok(a) => {
                self.op_changes = self.op_changes.saturating_add(1);
                Ok(a)
            }
            Err(e) => self.append_failed(e, rec, flags, next_job_id, draining),
        }
    }

    /// [`Log::append`] after a failed first try (off the hot path: the
    /// success path moves no error-sized result around).
    #[cold]
    fn append_failed(
        &mut self,
        e: Error,
        rec: &Record<'_>,
        flags: u8,
        next_job_id: u64,
        draining: bool,
    ) -> Result<Appended> {
        let out = if draining && is_enospc(&e) && !self.commit.failed() && self.release_reserve() {
            self.try_append(rec, flags, next_job_id, draining)
        } else {
            Err(e)
        };
        match &out {
            Ok(_) => self.op_changes = self.op_changes.saturating_add(1),
            Err(e) => self.note_failure(e),
        }
        out
    }

    /// Runs a write of a record that drains the queue into another file
    /// (a dead letter into `dead.wal`) as [`Log::append`] runs its own: on
    /// ENOSPC it gives up the reserve, if one is held, and is tried once
    /// more; a failure that was the operation's first change, on a full
    /// disk, is harmless ([`Log::take_harmless_failure`]), and a success
    /// counts as a change of the operation.
    pub fn write_draining<T>(&mut self, mut write: impl FnMut() -> Result<T>) -> Result<T> {
        let out = match write() {
            Err(e) if is_enospc(&e) && !self.commit.failed() && self.release_reserve() => write(),
            other => other,
        };
        self.side_write_done(out)
    }

    /// Runs a write into another file that adds to what the queue holds
    /// (room for an imported dead letter) as [`Log::write_draining`] runs
    /// its own, but never with the reserve: that is kept for what drains a
    /// full disk, as enqueues never get it.
    pub fn write_adding<T>(&mut self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        let out = write();
        self.side_write_done(out)
    }

    /// Counts a side write's success as a change of the operation, or
    /// classifies its failure ([`Log::take_harmless_failure`]).
    fn side_write_done<T>(&mut self, out: Result<T>) -> Result<T> {
        match &out {
            Ok(_) => self.op_changes = self.op_changes.saturating_add(1),
            Err(e) => {
                self.write_failed = true;
                self.note_failure(e);
            }
        }
        out
    }

    /// Classifies a failed append or rotation for
    /// [`Log::take_harmless_failure`]. A failed write is rolled back, but
    /// only a full disk is taken as harmless: EIO (a failing device) still
    /// poisons the queue.
    fn note_failure(&mut self, e: &Error) {
        self.harmless_failure = self.failure_is_harmless() && (!self.write_failed || is_enospc(e));
    }

    /// A write outside the log (the id floor) failed before the operation
    /// changed anything, and changed nothing itself: harmless, whatever
    /// the error, as long as the operation had changed nothing before.
    pub fn note_outside_failure(&mut self) {
        self.harmless_failure = self.failure_is_harmless();
    }

    /// Gives the reserve up (see [`Log::append`]); whether there was one.
    fn release_reserve(&mut self) -> bool {
        let vfs = self.vfs.clone();
        self.reserve.as_mut().is_some_and(|r| r.release(&*vfs))
    }

    fn try_append(
        &mut self,
        rec: &Record<'_>,
        flags: u8,
        next_job_id: u64,
        draining: bool,
    ) -> Result<Appended> {
        self.write_failed = false;
        let tail = self.frame_head(rec);
        let len = (self.buf.len() + tail.len()) as u64;
        // The common case, a record that fits in the active segment with
        // nothing staged, needs no rotation and is below the frame limit
        // (and the segment is not the last spare, kept for the drain).
        let fits = self.staged.is_none()
            && !self.last_spare
            && len <= self.max_frame()
            && self
                .segments
                .back()
                .is_some_and(|a| u64::from(self.tail) + len <= u64::from(a.seg.size()));
        if !fits {
            self.ensure_room_for(len, next_job_id, draining)?;
        }
        if self.residue != 0 {
            self.clear_residue()?;
        }
        let lsn = self.next_lsn;
        let lag = u32::try_from(lsn.saturating_sub(self.commit.durable())).unwrap_or(u32::MAX);
        // Borrowed, not cloned: no reference count to move per record.
        let seg = &self
            .segments
            .back()
            .expect("a log has an active segment")
            .seg;
        let seed = seed_for(&mut self.crc_seed, seg.id);
        frame::seal_seeded(&mut self.buf, seed, lsn, rec.kind(), flags, lag, tail);
        let len = u32::try_from(len).expect("checked against the segment size");
        let at = Appended {
            seg: seg.id,
            off: self.tail,
            len,
            lsn,
        };
        if let Some(st) = self.staged.as_mut() {
            let at = st.add(&self.buf, tail, at);
            self.next_lsn += 1;
            return Ok(at);
        }
        // A failed write (ENOSPC from `pwrite` on a copy-on-write file
        // system, say) is rolled back: nothing is published, the tail and
        // the LSN stay, and whatever it wrote past the tail is the residue,
        // zeroed before the next write (right away, if that works).
        let syscall = self.syscall_appends;
        if let Err(e) = seg.append(at.off, &self.buf, tail, syscall) {
            self.write_failed = true;
            self.note_residue(at.off + len);
            return Err(e);
        }
        if !syscall {
            schedule_page_work(&self.upkeep, seg, at.off, len);
        }
        self.tail += len;
        self.commit.written(lsn);
        self.next_lsn += 1;
        if syscall {
            self.zero_ahead();
        }
        Ok(at)
    }

    /// Encodes `rec` into the frame buffer after room for the frame header
    /// and returns the part of it left to write after the buffer: the
    /// payload of a large record, nothing otherwise. A payload of up to
    /// [`INLINE_TAIL`] bytes (and every payload of a `pwrite` append) is
    /// copied into the buffer, so the record takes one checksum pass and
    /// one write, not two (a `pwrite` append always copies: one system
    /// call, not two).
    #[inline]
    fn frame_head<'r>(&mut self, rec: &Record<'r>) -> &'r [u8] {
        self.buf.clear();
        self.buf.resize(FRAME_HEADER_LEN, 0);
        let tail = rec.encode_into(&mut self.buf);
        if self.syscall_appends || tail.len() <= INLINE_TAIL {
            self.buf.extend_from_slice(tail);
            return &[];
        }
        tail
    }

    /// Makes everything written so far durable, through the committer (the
    /// one sync path of the log).
    pub fn sync_now(&self) -> Result<()> {
        self.commit.wait(self.next_lsn - 1)
    }

    /// Takes a spare a previous run prepared (see [`Spare::reopen`]).
    pub fn adopt_spare(&mut self, spare: Spare) {
        self.upkeep.adopt(spare);
    }

    /// Prepares the spare segments now (at open; afterwards
    /// [`Upkeep::run`] does, outside the queue lock). Best effort: without
    /// a spare, rotation creates the segment itself. Keeping spares means a
    /// full disk can still rotate once, so that leases, acks and dead
    /// letters, which drain the queue and free space, can be written.
    pub fn prepare_spare(&mut self) {
        self.upkeep.fill_spares();
    }

    /// The deferred file work of this log (see `upkeep`).
    pub fn upkeep(&self) -> &Arc<Upkeep> {
        &self.upkeep
    }

    /// Takes the emptied oldest segment out of the log; it is deleted once
    /// everything written so far is durable (see `upkeep`).
    pub fn retire_front(&mut self) -> Option<Arc<Segment>> {
        if self.segments.len() <= 1 {
            return None;
        }
        let info = self.segments.pop_front()?;
        self.note_ends();
        self.upkeep.retire(info.seg.clone(), self.next_lsn - 1);
        Some(info.seg)
    }

    /// Records where the log ends (`CLOSED`, crash-atomically), after
    /// everything is synced at a clean close: a later open that finds the
    /// log ending earlier, or the active segment shorter, reports damage.
    pub fn record_clean_close(&self) -> Result<()> {
        let active = self.active();
        let rec = CleanClose {
            segment_id: active.id,
            segment_size: u64::from(active.size()),
            last_lsn: self.next_lsn - 1,
        };
        crate::vfs::write_atomically(
            &*self.vfs,
            &self.dir,
            crate::segment::CLOSE_FILE,
            &[&rec.encode()],
            self.mode,
        )
        .map(drop)
    }

    /// Whether the last failed append wrote nothing that was published and
    /// was the first change of its operation (a segment could not be
    /// created, or a record's write failed and was rolled back): such a
    /// failure does not poison the queue. Resets the flag.
    pub fn take_harmless_failure(&mut self) -> bool {
        std::mem::take(&mut self.harmless_failure)
    }

    fn rotate(&mut self, next_job_id: u64, draining: bool) -> Result<()> {
        // The sealed segment ends cleanly: no residue of a failed write.
        self.clear_residue()?;
        // At most one seal pending (see `commit`): leave this segment only
        // once a leader synced it. Rare: under `Durability::Os` the upkeep
        // thread syncs each seal soon after its rotation.
        self.commit
            .wait_synced(self.active().id, Waiter::Appender)?;
        let id = self.active().id.checked_add(1).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOptions,
                "segment ids exhausted (2^32 segments)",
            )
        })?;
        // Only the spare's header is written and synced here; the next
        // spare is prepared and the directory synced after the queue lock
        // is released (see `upkeep`).
        let spare = self.upkeep.take_spare(id, draining, &self.commit)?;
        let seg = Arc::new(spare.install(&*self.vfs, &self.dir, self.next_lsn, next_job_id)?);
        seg.attach(&self.maps);
        // The sealing sync and the new header's are the committer's next
        // leader's (under `Durability::Os`, the upkeep thread's, which
        // `rotated` asks for): nothing is synced under the queue lock.
        self.commit.set_new_target(
            seg.clone(),
            self.active().clone(),
            self.next_lsn - 1,
            !std::mem::take(&mut self.had_residue),
            self.vfs.clone(),
            self.dir.clone(),
        );
        self.upkeep.rotated(id);
        // A new job's rotation made sure of the spare after this one.
        self.last_spare = draining && !self.upkeep.has_spare(id.saturating_add(1));
        self.segments.push_back(SegInfo {
            seg,
            live_jobs: 0,
            live_bytes: 0,
        });
        self.note_ends();
        self.tail = SEGMENT_HEADER_LEN as u32;
        if self.syscall_appends {
            self.note_written_ahead();
        }
        Ok(())
    }
}

/// A clone of the checksum seed of segment `id` ([`frame::seed`]), from
/// `cache` when it holds that segment's, else made and kept there.
#[inline]
fn seed_for(cache: &mut Option<(u32, crc32fast::Hasher)>, id: u32) -> crc32fast::Hasher {
    match cache {
        Some((cached, h)) if *cached == id => h.clone(),
        _ => cache.insert((id, frame::seed(id))).1.clone(),
    }
}
