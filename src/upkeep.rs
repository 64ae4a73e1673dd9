//! Work on the log's files that is done outside the queue lock, by the
//! queue's `walq-upkeep` thread: preparing the spare segments, deleting
//! sealed ones, starting the writeback of the active segment a chunk at a
//! time behind the tail, and faulting in its pages ahead of the tail.
//!
//! Under the queue lock, rotation only installs a spare that is already
//! created, preallocated and synced (`segment::Spare`): it writes the
//! header and renames the file into place, and syncs nothing. The sealed
//! segment, the directory and the new header are synced by the
//! committer's next leader, in that order, before anything in the new
//! segment is published (see `commit`); under `Durability::Os`, where no
//! caller waits for a sync, this thread asks for that sync right after
//! the rotation, so the next rotation finds it done. Reclaim, under
//! the lock, only takes an emptied oldest segment out of the queue's view
//! and hands it here.
//!
//! [`Upkeep::run`] runs on the queue's one `walq-upkeep` thread: the
//! operation that queued the work only rings its [`Mailbox`] once it
//! released the queue lock, so no caller waits for the file work (`close`
//! stops the thread, then runs what is left itself). Invariants:
//! * spares are prepared for the two ids after the active segment; a new
//!   job may rotate into the first only if the second exists (or can be
//!   made), so a full disk always keeps a whole spare for the records that
//!   drain the queue (leases, acks, nacks, dead letters, carried records);
//! * spare files are made without the spare lock held: a rotation whose
//!   spares are ready takes one at once; only one whose spare is missing
//!   waits for a preparation under way, then makes what is still missing;
//! * a retired segment is deleted only once every record that supersedes
//!   it is durable (the committer has synced up to the LSN recorded when it
//!   was retired), and retired segments are deleted oldest first, stopping
//!   at the first failure, so a remaining segment can still rely on every
//!   newer one;
//! * the prefault of the pages ahead of the tail is a hint that changes no
//!   byte: at most one range is queued (a newer one replaces it), a late
//!   one only means the appender's stores fault the pages in themselves,
//!   and a sealed segment is not prefaulted (see [`Segment::prefault`]);
//! * a retired segment whose deletion failed stays queued and is tried again
//!   on the next run (should the process stop first, the next open replays
//!   it and finds every record in it superseded, as after a crash).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::commit::{Committer, Waiter};
use crate::error::{Error, Result};
use crate::segment::{Segment, Spare};
use crate::vfs::Vfs;

/// The handoff between the operations that queue upkeep work and the one
/// thread that does it: a flag, not a queue, so it is bounded whatever the
/// rate of operations (work rung while a run is under way is picked up by
/// the next run, which does all that is queued by then).
#[derive(Debug, Default)]
pub struct Mailbox {
    /// Rung and not yet taken by the thread (read without the lock on the
    /// hot path).
    rung: AtomicBool,
    flags: Mutex<Flags>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Flags {
    /// The thread is running the work it took.
    busy: bool,
    /// The thread is to stop (the queue is closing).
    stop: bool,
}

impl Mailbox {
    /// Asks the thread to run: cheap when it was already asked.
    pub fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            // Under the lock, so a thread between its check and its wait
            // cannot miss this.
            let _flags = self.flags.lock();
            self.changed.notify_all();
        }
    }

    /// For the thread: waits until it is rung (true: run once, then call
    /// [`Mailbox::done`]) or stopped (false).
    pub fn next(&self) -> bool {
        let mut f = self.flags.lock();
        loop {
            if f.stop {
                return false;
            }
            if self.rung.swap(false, Ordering::AcqRel) {
                f.busy = true;
                return true;
            }
            self.changed.wait(&mut f);
        }
    }

    /// For the thread: the run that [`Mailbox::next`] started is over.
    pub fn done(&self) {
        self.flags.lock().busy = false;
        self.changed.notify_all();
    }

    /// Waits until the thread has run everything rung so far (or was
    /// stopped).
    pub fn wait_idle(&self) {
        let mut f = self.flags.lock();
        while !f.stop && (f.busy || self.rung.load(Ordering::Acquire)) {
            self.changed.wait(&mut f);
        }
    }

    /// Tells the thread to stop after its current run.
    pub fn stop(&self) {
        self.flags.lock().stop = true;
        self.changed.notify_all();
    }
}

/// Spares kept ready: the next segment and the one after it.
pub(crate) const SPARES: u32 = 2;

/// Prepared spares, and which segment is active.
#[derive(Debug, Default)]
struct Spares {
    active: u32,
    ready: VecDeque<Spare>,
}

/// A segment taken out of the log, to delete once `lsn` is durable.
#[derive(Debug)]
struct Retired {
    seg: Arc<Segment>,
    lsn: u64,
}

/// The log's deferred file work (see the module docs).
#[derive(Debug)]
pub struct Upkeep {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    seg_size: u64,
    mode: u32,
    /// Bytes of each spare written (zeros) when it is prepared (see
    /// [`Spare::prepare`], [`Upkeep::set_spare_zeros`]).
    spare_zeros: AtomicU32,
    /// The spares prepared without their zeros are to get them
    /// ([`Upkeep::want_spare_zeros`]), and whether they did.
    top_up: AtomicBool,
    topped_up: AtomicBool,
    /// Work was queued since the last run.
    pending: AtomicBool,
    /// A prefault is queued (for the `walq-prefault` thread).
    prefault_pending: AtomicBool,
    /// A rotation deleted retired segments itself (`take_spare`).
    freed: AtomicBool,
    /// A compaction of `dead.wal` was asked for (`dead::compact`).
    dead_compaction: AtomicBool,
    spares: Mutex<Spares>,
    /// Held while spare files are being made (taken before `spares`).
    preparing: Mutex<()>,
    retired: Mutex<VecDeque<Retired>>,
    /// The last failure of a deletion or of a spare's preparation, for
    /// `Stats::maintenance_error`.
    error: Mutex<Option<String>>,
    /// A completed range of the active segment whose writeback is to be
    /// started (see [`Upkeep::write_back`]).
    writeback: Mutex<Option<Writeback>>,
    /// A range of the active segment to fault in ahead of the tail (see
    /// [`Upkeep::prefault`]).
    prefault: Mutex<Option<Writeback>>,
    /// A rotation left its sealing sync to the committer (see
    /// [`Upkeep::rotated`]).
    seal: AtomicBool,
}

/// A range of a segment to write back ahead of its sealing fdatasync, or
/// to fault in ahead of the tail.
#[derive(Debug)]
struct Writeback {
    seg: Arc<Segment>,
    off: u32,
    end: u32,
}

impl Upkeep {
    /// Upkeep of the log in `dir`, whose active segment is `active`.
    pub fn new(vfs: Arc<dyn Vfs>, dir: PathBuf, seg_size: u64, mode: u32, active: u32) -> Upkeep {
        Upkeep {
            vfs,
            dir,
            seg_size,
            mode,
            spare_zeros: AtomicU32::new(0),
            top_up: AtomicBool::new(false),
            topped_up: AtomicBool::new(false),
            pending: AtomicBool::new(true),
            prefault_pending: AtomicBool::new(false),
            freed: AtomicBool::new(false),
            dead_compaction: AtomicBool::new(false),
            spares: Mutex::new(Spares {
                active,
                ready: VecDeque::new(),
            }),
            preparing: Mutex::new(()),
            retired: Mutex::new(VecDeque::new()),
            error: Mutex::new(None),
            writeback: Mutex::new(None),
            prefault: Mutex::new(None),
            seal: AtomicBool::new(false),
        }
    }

    /// The last failed deletion, compaction or spare preparation, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }

    /// Records a failure of deferred work.
    pub fn note_error(&self, e: String) {
        *self.error.lock() = Some(e);
    }

    /// Asks for `dead.wal` to be compacted after the lock is released.
    pub fn want_dead_compaction(&self) {
        self.dead_compaction.store(true, Ordering::Release);
    }

    /// Whether a compaction of `dead.wal` was asked for (and clears it).
    pub fn take_dead_compaction(&self) -> bool {
        self.dead_compaction.swap(false, Ordering::AcqRel)
    }

    /// Whether a compaction of `dead.wal` is waiting (no lock taken).
    pub fn dead_compaction_wanted(&self) -> bool {
        self.dead_compaction.load(Ordering::Acquire)
    }

    /// Has the spares prepared from now on written (zeros) over their
    /// first `bytes`, for logs whose appends are `pwrite`s (see
    /// `Log::append_by_syscall`). 0 (the default): the header block only.
    pub fn set_spare_zeros(&self, bytes: u32) {
        self.spare_zeros.store(bytes, Ordering::Relaxed);
    }

    /// Asks for the zeros of the spares prepared without them (see
    /// [`Upkeep::top_up_spares`]), once per open: the log calls it when
    /// its tail passes half the active segment, so that a short-lived
    /// queue (or a benchmark's fresh one) is not given 2 × 2 MiB of disk
    /// writes beside its first appends.
    #[inline]
    pub fn want_spare_zeros(&self) {
        // Plain loads once asked: a call per append past half a segment.
        if self.top_up.load(Ordering::Relaxed) || self.topped_up.load(Ordering::Relaxed) {
            return;
        }
        if !self.top_up.swap(true, Ordering::AcqRel) {
            self.pending.store(true, Ordering::Release);
        }
    }

    /// Prepares the spare for segment `id` with its zeros written in one
    /// piece: for a rotation that found no spare ready and waits for it.
    fn prepare(&self, id: u32) -> Result<Spare> {
        let zeros = self.spare_zeros.load(Ordering::Relaxed);
        Spare::prepare(&*self.vfs, &self.dir, id, self.seg_size, self.mode, zeros)
    }

    /// Prepares the spare for segment `id` ahead of time, its zeros
    /// written as [`Spare::top_up`] writes them: a piece at a time, each
    /// synced, so that the log's `fdatasync`s beside it (the commits right
    /// after the rotation that asked for this spare) wait behind one piece
    /// and not behind 2 MiB. A spare whose top-up fails is discarded, as
    /// in [`Upkeep::top_up_spares`].
    fn prepare_ahead(&self, id: u32) -> Result<Spare> {
        let zeros = self.spare_zeros.load(Ordering::Relaxed);
        let mut spare = Spare::prepare(&*self.vfs, &self.dir, id, self.seg_size, self.mode, 0)?;
        if let Err(e) = spare.top_up(zeros) {
            let err = Error::io("syncing the zeros of a new segment", spare.path(), e);
            spare.discard(&*self.vfs);
            return Err(err);
        }
        Ok(spare)
    }

    /// Bytes of the spares prepared and ready now (for `Stats::disk_bytes`).
    pub fn spare_bytes(&self) -> u64 {
        self.spares.lock().ready.iter().map(Spare::size).sum()
    }

    /// Prepares the missing spares (best effort: without one, rotation
    /// creates the segment itself). The file work runs without the spare
    /// lock, so a rotation whose spare is ready never waits for it.
    pub fn fill_spares(&self) {
        let _preparing = self.preparing.lock();
        let missing: Vec<u32> = {
            let mut sp = self.spares.lock();
            let active = sp.active;
            self.discard_below(&mut sp, active.saturating_add(1));
            (1..=SPARES)
                .filter_map(|k| active.checked_add(k))
                .filter(|id| !sp.ready.iter().any(|s| s.id == *id))
                .collect()
        };
        for id in missing {
            if self.spares.lock().active >= id {
                continue; // taken by a rotation meanwhile
            }
            match self.prepare_ahead(id) {
                Ok(s) => Self::insert(&mut self.spares.lock(), s),
                Err(e) => {
                    // Not an operation's failure: a rotation without a
                    // spare makes one itself. Shown in `Stats`.
                    self.note_error(e.to_string());
                    return;
                }
            }
        }
        if self.top_up.load(Ordering::Acquire) && !self.topped_up.load(Ordering::Relaxed) {
            self.top_up_spares();
            self.topped_up.store(true, Ordering::Relaxed);
        }
    }

    /// Writes the zeros of the ready spares prepared without them (the
    /// ones an open prepares before the log says it wants them, see
    /// [`Upkeep::set_spare_zeros`]), so that the first rotations after an
    /// open find them written too (asked for by
    /// [`Upkeep::want_spare_zeros`]). Each spare is out of the ready ones
    /// while its zeros are written; the caller holds `preparing`, so a
    /// rotation that wants it waits for it (`take_spare`'s slow path)
    /// instead of writing into it. A spare whose sync fails is discarded
    /// (a rotation prepares a new one).
    fn top_up_spares(&self) {
        let zeros = self.spare_zeros.load(Ordering::Relaxed);
        loop {
            let spare = {
                let mut sp = self.spares.lock();
                let at = sp.ready.iter().position(|s| s.lacks_zeros(zeros));
                at.and_then(|at| sp.ready.remove(at))
            };
            let Some(mut spare) = spare else { return };
            match spare.top_up(zeros) {
                Ok(()) => Self::insert(&mut self.spares.lock(), spare),
                Err(_) => spare.discard(&*self.vfs),
            }
        }
    }

    /// Takes a spare a previous run prepared, if it is one of the ids kept
    /// ahead of the active segment and none is ready for it; otherwise its
    /// file is removed.
    pub fn adopt(&self, spare: Spare) {
        let mut sp = self.spares.lock();
        let ahead = spare.id > sp.active && spare.id - sp.active <= SPARES;
        if ahead && !sp.ready.iter().any(|s| s.id == spare.id) {
            Self::insert(&mut sp, spare);
        } else {
            drop(sp);
            spare.discard(&*self.vfs);
        }
    }

    /// Removes the spares for ids below `id` (already used).
    fn discard_below(&self, sp: &mut Spares, id: u32) {
        while sp.ready.front().is_some_and(|s| s.id < id) {
            if let Some(s) = sp.ready.pop_front() {
                s.discard(&*self.vfs);
            }
        }
    }

    /// Adds a spare, keeping them ordered by id.
    fn insert(sp: &mut Spares, spare: Spare) {
        let at = sp.ready.partition_point(|s| s.id < spare.id);
        sp.ready.insert(at, spare);
    }

    /// Whether the spares a rotation into `id` needs are ready.
    fn has(sp: &Spares, id: u32, draining: bool) -> bool {
        let ready = |id: u32| sp.ready.iter().any(|s| s.id == id);
        ready(id) && (draining || id.checked_add(1).is_none_or(ready))
    }

    /// The spare for segment `id`, prepared now if none is ready. Unless
    /// the rotation is `draining`, the spare after it must exist too (or is
    /// prepared now): a new job never takes the last spare. Should a spare
    /// not fit, the retired segments the upkeep thread has not deleted yet
    /// are deleted first (their records made durable through `commit`),
    /// and it is tried again. On failure nothing changed (a spare prepared
    /// here is kept).
    pub fn take_spare(&self, id: u32, draining: bool, commit: &Committer) -> Result<Spare> {
        let mut sp = self.spares.lock();
        if !Self::has(&sp, id, draining) {
            // Slow path: wait for a preparation under way, then make what
            // is still missing.
            drop(sp);
            let _preparing = self.preparing.lock();
            sp = self.spares.lock();
            for want in [Some(id), id.checked_add(1).filter(|_| !draining)] {
                let Some(want) = want else { continue };
                if !sp.ready.iter().any(|s| s.id == want) {
                    Self::insert(&mut sp, self.prepare_now(want, commit)?);
                }
            }
        }
        self.discard_below(&mut sp, id);
        let spare = sp.ready.pop_front().expect("a spare for this id is ready");
        // Taken: no longer one to prepare. Until `rotated`, its file is
        // still a spare's, and a preparation of its id would fail on it.
        sp.active = sp.active.max(id);
        self.pending.store(true, Ordering::Release);
        Ok(spare)
    }

    /// Whether the spare for segment `id` is ready.
    pub fn has_spare(&self, id: u32) -> bool {
        self.spares.lock().ready.iter().any(|s| s.id == id)
    }

    /// The spare for segment `id` (the one after the active segment),
    /// prepared now if none is ready, as [`Upkeep::take_spare`] prepares
    /// one (the retired segments deleted first should it not fit); the
    /// preparation's error (ENOSPC on a full disk) if it cannot be made.
    /// Nothing is taken.
    pub fn ensure_spare(&self, id: u32, commit: &Committer) -> Result<()> {
        if self.has_spare(id) {
            return Ok(());
        }
        let _preparing = self.preparing.lock();
        let mut sp = self.spares.lock();
        if !sp.ready.iter().any(|s| s.id == id) {
            Self::insert(&mut sp, self.prepare_now(id, commit)?);
        }
        Ok(())
    }

    /// The spare for segment `id`, prepared now by the caller: should it
    /// not fit, the retired segments not deleted yet are deleted first
    /// (see [`Upkeep::free_retired`]) and it is tried once more.
    fn prepare_now(&self, id: u32, commit: &Committer) -> Result<Spare> {
        self.prepare(id).or_else(|_| {
            self.free_retired(commit)?;
            self.prepare(id)
        })
    }

    /// Deletes the retired segments now, for a rotation whose spare did
    /// not fit, which then tries once more whatever this deleted: the
    /// upkeep thread may have deleted them meanwhile (its run holds
    /// `retired` until its directory sync, after which the file system
    /// hands their blocks out again), and a drain on a full disk must not
    /// fail for having asked a moment too early.
    fn free_retired(&self, commit: &Committer) -> Result<()> {
        if self.delete_retired(commit)? {
            // Space came back: the reserve is made again too.
            self.freed.store(true, Ordering::Release);
            self.pending.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Segment `id` is now the active one: spares are kept for the ids
    /// after it, and the next run has the committer sync the segment
    /// sealed before it, the directory and segment `id` (so that the
    /// rotation away from `id` will not have to wait for that sync).
    pub fn rotated(&self, id: u32) {
        self.spares.lock().active = id;
        self.seal.store(true, Ordering::Release);
        self.pending.store(true, Ordering::Release);
    }

    /// The sync a rotation left to the committer, if one did.
    fn sync_seal(&self, commit: &Committer) -> Result<()> {
        if self.seal.swap(false, Ordering::AcqRel) {
            let active = self.spares.lock().active;
            commit.wait_synced(active, Waiter::Aside)?;
        }
        Ok(())
    }

    /// Queues `seg` (already out of the log) for deletion once `lsn` is
    /// durable.
    pub fn retire(&self, seg: Arc<Segment>, lsn: u64) {
        self.retired.lock().push_back(Retired { seg, lsn });
        self.pending.store(true, Ordering::Release);
    }

    /// Queues the writeback of `off..end` of `seg` (bytes the log will not
    /// write again), started once the queue lock is released: under
    /// `Durability::Os` the fdatasync that seals a segment would otherwise
    /// write up to a whole segment of dirty pages at once. Ranges of one
    /// segment are merged; a range of an older segment not started yet is
    /// dropped (the seal's sync writes it).
    pub fn write_back(&self, seg: &Arc<Segment>, off: u32, end: u32) {
        let mut wb = self.writeback.lock();
        match wb.as_mut() {
            Some(w) if w.seg.id == seg.id => {
                w.off = w.off.min(off);
                w.end = w.end.max(end);
            }
            _ => {
                *wb = Some(Writeback {
                    seg: seg.clone(),
                    off,
                    end,
                });
            }
        }
        self.pending.store(true, Ordering::Release);
    }

    /// Starts the writeback queued by [`Upkeep::write_back`], if any.
    fn start_writeback(&self) {
        let Some(w) = self.writeback.lock().take() else {
            return;
        };
        w.seg.start_writeback(w.off, w.end - w.off);
    }

    /// Queues the prefault of `off..off+len` of `seg` (the pages the
    /// appends will store into next, when they store into the map), done
    /// on the `walq-prefault` thread: faulting them in zero-fills each
    /// page, and under the queue lock that cost was the appender's. A
    /// thread of its own, not `walq-upkeep`'s: that one waits hundreds of
    /// milliseconds for a sealing fdatasync after each rotation, and
    /// meanwhile the appender faulted every page in itself. One range is
    /// kept: a newer one replaces it (the tail has moved past the older
    /// one, whose pages the appends faulted in themselves meanwhile).
    pub fn prefault(&self, seg: &Arc<Segment>, off: u32, len: u32) {
        *self.prefault.lock() = Some(Writeback {
            seg: seg.clone(),
            off,
            end: off.saturating_add(len),
        });
        self.prefault_pending.store(true, Ordering::Release);
    }

    /// Whether a prefault is queued (one load: checked after every
    /// operation).
    #[inline]
    pub fn has_prefault(&self) -> bool {
        self.prefault_pending.load(Ordering::Acquire)
    }

    /// Runs the prefault queued by [`Upkeep::prefault`] (the
    /// `walq-prefault` thread's work), unless its segment is no longer the
    /// active one (sealed meanwhile).
    pub fn run_prefault(&self) {
        if !self.prefault_pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let Some(p) = self.prefault.lock().take() else {
            return;
        };
        if p.seg.id >= self.spares.lock().active {
            p.seg.prefault(p.off, p.end - p.off);
        }
    }

    /// Whether any work is queued (no lock, no atomic write).
    #[inline]
    pub fn has_work(&self) -> bool {
        self.pending.load(Ordering::Acquire) || self.dead_compaction.load(Ordering::Acquire)
    }

    /// Does the queued work: prepares spares, deletes retired segments.
    /// Returns whether a segment was deleted (space came back), or the
    /// error of a failed log sync, which must poison the queue.
    pub fn run(&self, commit: &Committer) -> Result<bool> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        self.sync_seal(commit)?;
        self.start_writeback();
        self.fill_spares();
        let deleted = self.delete_retired(commit)?;
        Ok(deleted | self.freed.swap(false, Ordering::AcqRel))
    }

    /// Deletes the retired segments, oldest first (see the module docs).
    fn delete_retired(&self, commit: &Committer) -> Result<bool> {
        let mut retired = self.retired.lock();
        let mut deleted = false;
        while let Some(r) = retired.front() {
            commit.wait_as(r.lsn, Waiter::Aside)?;
            if let Err(e) = self.vfs.remove(&r.seg.path) {
                let e = Error::io("deleting finished segment", &r.seg.path, e);
                *self.error.lock() = Some(e.to_string());
                // Tried again on the next run.
                self.pending.store(true, Ordering::Release);
                break;
            }
            retired.pop_front();
            deleted = true;
        }
        if deleted {
            if let Err(e) = self.vfs.sync_dir(&self.dir) {
                // Should the unlink not survive a power cut, replay reads
                // the segment again and finds every job in it superseded.
                let e = Error::io("syncing directory", &self.dir, e);
                *self.error.lock() = Some(e.to_string());
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::{Fault, FaultOp, Mapping, SimFs, VfsFile};
    use std::any::Any;
    use std::io;
    use std::path::Path;

    const SIZE: u64 = 1 << 16;

    /// Segment `id` of `SIZE` bytes, created in `dir`.
    fn segment(fs: &dyn Vfs, dir: &Path, id: u32) -> Arc<Segment> {
        let spare = Spare::prepare(fs, dir, id, SIZE, 0o600, 0).unwrap();
        Arc::new(Segment::create(fs, dir, spare, 1, 1).unwrap())
    }

    fn setup() -> (SimFs, Upkeep) {
        let fs = SimFs::new();
        let dir = Path::new("/q");
        fs.create_dir_all(dir, 0o700).unwrap();
        let up = Upkeep::new(Arc::new(fs.clone()), dir.to_path_buf(), SIZE, 0o600, 1);
        (fs, up)
    }

    fn names(fs: &SimFs) -> Vec<String> {
        let mut n = fs.list(Path::new("/q")).unwrap();
        n.sort();
        n
    }

    fn full_disk(fs: &SimFs) {
        fs.set_fault(Some(Fault {
            op: FaultOp::Allocate,
            at: fs.op_count(FaultOp::Allocate),
            forever: true,
            kind: std::io::ErrorKind::StorageFull,
        }));
    }

    /// Between a rotation taking its spare and installing it, the spare's
    /// file is still there under its spare name: a preparation of the
    /// spares meanwhile (the upkeep thread's) must not take that id for a
    /// missing one (its file creation failed, and was noted as a
    /// maintenance error).
    #[test]
    fn a_spare_taken_by_a_rotation_is_not_prepared_again() {
        let (fs, up) = setup();
        let commit = Committer::new(0);
        up.fill_spares();
        let two = up.take_spare(2, false, &commit).unwrap();
        up.fill_spares(); // before `rotated(2)`
        assert_eq!(up.error(), None);
        assert!(names(&fs).contains(&"0000000004.wal.spare".to_string()));
        up.rotated(2);
        two.discard(&fs);
    }

    /// A rotation whose spare does not fit tries again once, even when
    /// it has no retired segment to delete itself: the space may have
    /// come back meanwhile (the upkeep thread deleted them). The full-disk
    /// drain of `.ci/fs-matrix.sh` on ext4 failed so, once in nine runs.
    #[test]
    fn a_rotation_tries_again_after_space_came_back() {
        let (fs, up) = setup();
        let commit = Committer::new(0);
        // The next allocation fails, the one after it finds room.
        fs.set_fault(Some(Fault {
            op: FaultOp::Allocate,
            at: fs.op_count(FaultOp::Allocate),
            forever: false,
            kind: std::io::ErrorKind::StorageFull,
        }));
        let spare = up
            .take_spare(2, true, &commit)
            .expect("the second try fits");
        assert_eq!(spare.id, 2);
        spare.discard(&fs);
    }

    #[test]
    fn a_new_job_never_takes_the_last_spare() {
        let (fs, up) = setup();
        let commit = Committer::new(0);
        up.fill_spares();
        assert_eq!(
            names(&fs),
            ["0000000002.wal.spare", "0000000003.wal.spare"],
            "two spares ahead of the active segment"
        );
        full_disk(&fs);
        // A producer's rotation takes segment 2 and leaves 3 for the drain.
        let two = up.take_spare(2, false, &commit).unwrap();
        assert_eq!(two.id, 2);
        up.rotated(2);
        up.fill_spares(); // cannot make segment 4 on the full disk
        let noted = up.error().unwrap_or_default();
        assert!(noted.contains("0000000004.wal.spare"), "{noted:?}");
        let err = up.take_spare(3, false, &commit).unwrap_err();
        assert!(err.to_string().contains("0000000004"), "{err}");
        // The spare is still there for records that drain the queue.
        assert_eq!(up.take_spare(3, true, &commit).unwrap().id, 3);
        // And with none left, a draining rotation creates one (or fails
        // cleanly, leaving nothing behind).
        let err = up.take_spare(4, true, &commit).unwrap_err();
        assert!(err.to_string().contains("0000000004"), "{err}");
        assert!(!names(&fs).iter().any(|n| n.starts_with("0000000004")));
        two.discard(&fs);
    }

    /// The spares an open prepared get their zeros later, each out of the
    /// ready ones meanwhile: a rotation that wants one waits for it (it
    /// neither takes it half written nor prepares a second file for its
    /// id), and gets it with its zeros.
    #[test]
    fn a_rotation_waits_for_the_spare_whose_zeros_are_being_written() {
        const ZEROS: u32 = 32 * 1024;
        let (fs, up) = setup();
        let up = Arc::new(up);
        up.fill_spares(); // as the open does: no zeros asked for yet
        up.set_spare_zeros(ZEROS);
        up.want_spare_zeros();
        fs.pause_syncs(true);
        let topping = {
            let up = up.clone();
            std::thread::spawn(move || up.fill_spares())
        };
        fs.wait_paused_syncs(1); // spare 2's zeros, in their sync
        let taker = {
            let up = up.clone();
            std::thread::spawn(move || up.take_spare(2, true, &Committer::new(0)))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!taker.is_finished(), "the rotation took spare 2 mid-way");
        fs.pause_syncs(false);
        topping.join().unwrap();
        let two = taker.join().unwrap().unwrap();
        assert_eq!(two.id, 2);
        assert!(!two.lacks_zeros(ZEROS), "spare 2 came without its zeros");
        let ready: Vec<(u32, bool)> = up
            .spares
            .lock()
            .ready
            .iter()
            .map(|s| (s.id, s.lacks_zeros(ZEROS)))
            .collect();
        assert_eq!(ready, [(3, false)], "one spare 3, with its zeros");
        assert_eq!(
            names(&fs),
            ["0000000002.wal.spare", "0000000003.wal.spare"],
            "no second file for either id"
        );
    }

    #[test]
    fn a_rotation_on_a_full_disk_deletes_retired_segments_first() {
        // A rotation whose spare is missing on a full disk: the retired
        // segment the upkeep thread has not deleted yet is deleted first,
        // and the spare is made in the space it gave back.
        let (fs, up) = setup();
        let dir = Path::new("/q");
        let seg = |id| segment(&fs, dir, id);
        let (s1, s2) = (seg(1), seg(2));
        let commit = Committer::new(0);
        commit.set_target(s2, 0);
        commit.written(3);
        up.retire(s1, 3);
        fs.set_fault(Some(Fault {
            op: FaultOp::Allocate,
            at: fs.op_count(FaultOp::Allocate),
            forever: false,
            kind: std::io::ErrorKind::StorageFull,
        }));
        let spare = up.take_spare(3, true, &commit).unwrap();
        assert_eq!(spare.id, 3);
        assert!(!names(&fs).contains(&"0000000001.wal".to_string()));
        assert_eq!(
            commit.durable(),
            3,
            "deleted once its successors were durable"
        );
        // The upkeep thread then makes the reserve again.
        assert!(up.run(&commit).unwrap());
        spare.discard(&fs);
    }

    #[test]
    fn retired_segments_go_once_durable_and_oldest_first() {
        let (fs, up) = setup();
        let dir = Path::new("/q");
        let seg = |id| segment(&fs, dir, id);
        let (s1, s2, s3) = (seg(1), seg(2), seg(3));
        let commit = Committer::new(0);
        commit.set_target(s3.clone(), 0);
        commit.written(7);
        up.retire(s1, 5);
        up.retire(s2, 7);
        // The oldest cannot be unlinked: the newer one stays too.
        fs.set_fault(Some(Fault {
            op: FaultOp::Remove,
            at: fs.op_count(FaultOp::Remove),
            forever: false,
            kind: std::io::ErrorKind::Other,
        }));
        assert!(!up.run(&commit).unwrap());
        assert!(up.error().is_some_and(|e| e.contains("0000000001.wal")));
        assert!(names(&fs).contains(&"0000000002.wal".to_string()));
        // Their superseding records were made durable first.
        assert!(commit.durable() >= 5);
        // Retried on the next run.
        assert!(up.run(&commit).unwrap());
        assert_eq!(commit.durable(), 7);
        let left: Vec<_> = names(&fs)
            .into_iter()
            .filter(|n| n.ends_with(".wal"))
            .collect();
        assert_eq!(left, ["0000000003.wal"]);
    }

    type Ranges = Arc<Mutex<Vec<(u64, u64)>>>;

    /// A file system whose files record the ranges prefaulted.
    #[derive(Debug)]
    struct Recording {
        inner: SimFs,
        seen: Ranges,
    }

    #[derive(Debug)]
    struct RecFile {
        inner: Box<dyn VfsFile>,
        seen: Ranges,
    }

    impl VfsFile for RecFile {
        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }
        fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
            self.inner.read_at(buf, off)
        }
        fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
            self.inner.write_at(buf, off)
        }
        fn prefault(&self, off: u64, len: u64) -> io::Result<()> {
            self.seen.lock().push((off, len));
            Ok(())
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }
        fn allocate(&self, len: u64) -> io::Result<()> {
            self.inner.allocate(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.inner.sync_data()
        }
        fn sync_all(&self) -> io::Result<()> {
            self.inner.sync_all()
        }
        fn map(&self, len: u64) -> io::Result<Mapping> {
            self.inner.map(len)
        }
    }

    impl Recording {
        fn wrap(&self, inner: Box<dyn VfsFile>) -> Box<dyn VfsFile> {
            Box::new(RecFile {
                inner,
                seen: self.seen.clone(),
            })
        }
    }

    impl Vfs for Recording {
        fn create_dir_all(&self, dir: &Path, mode: u32) -> io::Result<()> {
            self.inner.create_dir_all(dir, mode)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            self.inner.list(dir)
        }
        fn create(&self, path: &Path, mode: u32) -> io::Result<Box<dyn VfsFile>> {
            Ok(self.wrap(self.inner.create(path, mode)?))
        }
        fn open(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
            Ok(self.wrap(self.inner.open(path)?))
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            self.inner.remove(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.inner.rename(from, to)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.inner.sync_dir(dir)
        }
        fn lock(&self, path: &Path, mode: u32) -> io::Result<Box<dyn Any + Send + Sync>> {
            self.inner.lock(path, mode)
        }
    }

    #[test]
    fn one_prefault_is_kept_and_none_reaches_a_sealed_segment() {
        let seen: Ranges = Arc::default();
        let fs = Arc::new(Recording {
            inner: SimFs::new(),
            seen: seen.clone(),
        });
        let dir = Path::new("/q");
        fs.create_dir_all(dir, 0o700).unwrap();
        let up = Upkeep::new(fs.clone(), dir.to_path_buf(), SIZE, 0o600, 1);
        let seg = |id| segment(&*fs, dir, id);
        let (s1, s2) = (seg(1), seg(2));
        // A newer range replaces the one not run yet.
        up.prefault(&s1, 0, 100);
        up.prefault(&s1, 1000, 100);
        up.run_prefault();
        assert_eq!(*seen.lock(), [(1000, 100)]);
        // Queued for segment 1, which a rotation sealed before the run.
        up.prefault(&s1, 2000, 100);
        up.rotated(2);
        up.run_prefault();
        assert_eq!(
            *seen.lock(),
            [(1000, 100)],
            "no prefault of a sealed segment"
        );
        // The active segment is prefaulted while its file is open, not
        // once its descriptor is released.
        up.prefault(&s2, 0, 100);
        up.run_prefault();
        up.prefault(&s2, 100, 100);
        s2.release_fd();
        up.run_prefault();
        assert_eq!(*seen.lock(), [(1000, 100), (0, 100)]);
    }
}
