//! The checkpoint: the in-memory index written to the file `CHECKPOINT`,
//! so that opening a queue costs O(live jobs), not O(log bytes).
//!
//! (A child of `state`: it reads the parts of `QueueState`.)
//!
//! Written on a clean close (flagged clean) and every
//! `Options::checkpoint_every` bytes of log, crash-atomically (temporary
//! file, fsync, rename, fsync of the directory), and only once the log is
//! durable up to the LSN it covers. Never trusted blindly: `recovery` uses
//! it only if it decodes (magic, version, CRC), was written by a build with
//! the same key hash, and the log still matches it: the same first segment,
//! every covered segment with the base LSN and size it names, and the
//! last covered bytes (a CRC of up to 4 KiB before its end) unchanged.
//! Otherwise the full scan runs and the recovery report says why. The
//! byte layout is in `docs/format.md` and `format::checkpoint`.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::QueueState;
use crate::cowmap::Captured;
use crate::error::{Error, Result};
use crate::format::checkpoint::{
    check_file_len, Checkpoint, CkKey, CkQueue, CkSegment, CkSlot, SlotPiece, SlotSource, Slots,
    FLAG_CLEAN, HEAD_LEN,
};
use crate::format::header::SEGMENT_HEADER_LEN;
use crate::groups::CapturedGroups;
use crate::jobs::{CapturedSlots, Slot, SlotState, Stretch, BLOCK};
use crate::keys::{key_check, key_hash, CapturedKeys, IN_DEAD_LETTERS};
use crate::last_errors::CapturedErrors;
use crate::levels::CapturedLevels;
use crate::named::CapturedNamed;
use crate::segment::Segment;
use crate::vfs::Vfs;

/// The checkpoint's file name.
pub const CHECKPOINT_FILE: &str = "CHECKPOINT";
/// Bytes before the end of the covered log that the digest covers.
const DIGEST_SPAN: u32 = 4096;

/// A number that changes when the key hash changes (across builds, or the
/// collision test hook): stored hashes are then useless.
pub fn hash_probe() -> u64 {
    key_hash(b"walq checkpoint probe") as u64 ^ key_check(b"walq checkpoint probe")
}

/// CRC-32 of `bytes`, seeded with the segment id.
fn digest(seg_id: u32, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seg_id.to_le_bytes());
    h.update(bytes);
    h.finalize()
}

fn ck_slot(s: &crate::jobs::Slot, priority: u8) -> CkSlot {
    CkSlot {
        seg: s.seg,
        off: s.off,
        len: s.len,
        attempts: s.attempts,
        state: s.state as u8,
        priority,
    }
}

impl QueueState {
    /// Where the log ends, as a byte count that only grows (segment id
    /// times segment size plus the tail): the periodic checkpoint's clock.
    pub(crate) fn log_position(&self) -> u64 {
        self.log.position()
    }

    /// The delivery order and groups of every queue, the default first,
    /// as they are now.
    fn capture_lanes(&self) -> Vec<(CapturedLevels, CapturedGroups)> {
        let named = self.named.lanes().map(|(_, l)| (&l.order, &l.groups));
        std::iter::once((&self.delivery, &self.groups))
            .chain(named)
            .map(|(order, groups)| (order.capture(), groups.capture()))
            .collect()
    }

    /// The index as a checkpoint covering every record written so far.
    /// The caller makes the log durable up to `log.next_lsn - 1` before
    /// the checkpoint is written.
    pub(crate) fn capture_checkpoint(&self, clean: bool, generation: u64) -> Capture {
        let last = self.log.segments.len() - 1;
        let segments = self
            .log
            .segments
            .iter()
            .enumerate()
            .map(|(i, info)| CkSegment {
                base_lsn: info.seg.header.base_lsn,
                size: info.seg.size(),
                end: if i == last {
                    self.log.tail
                } else {
                    u32::try_from(info.seg.region.published()).unwrap_or(u32::MAX)
                },
            })
            .collect();
        let active = self.log.active();
        let tail = self.log.tail;
        let from = tail
            .saturating_sub(DIGEST_SPAN)
            .max(SEGMENT_HEADER_LEN as u32);
        // Bytes the kernel cannot read digest as none: the next open then
        // finds the digest wrong and scans.
        let (at, len) = (from as usize, (tail - from) as usize);
        let bytes = active
            .region
            .bytes(at, len)
            .filter(|_| active.region.readable(at, len).is_ok())
            .unwrap_or_default();
        let slots = self.jobs.capture();
        let ck = Checkpoint {
            flags: if clean { FLAG_CLEAN } else { 0 },
            generation,
            next_lsn: self.log.next_lsn,
            next_id: self.next_id,
            hash_probe: hash_probe(),
            first_seg: self.log.segments[0].seg.id,
            digest_from: from,
            digest: active
                .region
                .guard_read(|| digest(active.id, bytes))
                .unwrap_or_else(|()| digest(active.id, &[])),
            segments,
            slot_base: slots.base(),
            slots: Vec::new(),
            aside: Vec::new(),
            waiting: Vec::new(),
            groups: Vec::new(),
            keys: Vec::new(),
            queues: Vec::new(),
            queue_jobs: Vec::new(),
            errors: Vec::new(),
        };
        Capture {
            ck,
            slots,
            aside: self.jobs.capture_stragglers(),
            lanes: self.capture_lanes(),
            named: self.named.capture(),
            keys: self.keys.capture(),
            errors: self.errors.capture(),
        }
    }
}

/// A checkpoint captured under the queue lock whose big parts are still
/// shared with the index: the job table's blocks
/// ([`crate::jobs::JobTable::capture`]), the key index's shards
/// ([`crate::keys::KeyIndex::capture`]), and the shards of the maps of
/// waiting, leveled, grouped and named queues' jobs and of the jobs kept
/// aside ([`crate::cowmap`]). [`Writing::finish`] encodes them once the
/// lock is released. Only the queue definitions (at most
/// [`crate::named::MAX_QUEUES`]) and the segment list are copied under the
/// lock.
#[derive(Debug)]
pub struct Capture {
    /// Complete but for what the fields below hold.
    ck: Checkpoint,
    slots: CapturedSlots,
    /// The jobs kept aside (ids below the table's base).
    aside: Captured<u64, Slot>,
    /// Each queue's delivery order and groups, the default queue first.
    lanes: Vec<(CapturedLevels, CapturedGroups)>,
    named: CapturedNamed,
    keys: CapturedKeys,
    /// The live jobs' last errors.
    errors: CapturedErrors,
}

impl Capture {
    /// The first LSN the checkpoint does not cover.
    pub fn next_lsn(&self) -> u64 {
        self.ck.next_lsn
    }

    /// The checkpoint's bytes. The capture is released once they are
    /// encoded: until then the job table's blocks it holds are shared, and
    /// the first change to one of them copies it (64 KiB).
    fn finish(self) -> Encoded {
        let Capture {
            mut ck,
            slots,
            aside,
            lanes,
            named,
            keys,
            errors,
        } = self;
        ck.errors = crate::last_errors::sorted(&errors);
        ck.keys = keys
            .iter()
            .filter(|(_, e)| e.seg != IN_DEAD_LETTERS)
            .map(|(hash, e)| CkKey {
                hash,
                check: e.check,
                id: e.id,
                expires_ms: e.expires_ms,
                seg: e.seg,
                off: e.off,
            })
            .collect();
        ck.waiting = lanes
            .iter()
            .flat_map(|(order, groups)| order.waiting().chain(groups.blocked()))
            .collect();
        ck.groups = lanes.iter().flat_map(|(_, g)| g.members()).collect();
        let normal = crate::format::record::PRIORITY_NORMAL;
        ck.aside = aside
            .iter()
            .map(|(id, s)| (*id, ck_slot(s, normal)))
            .collect();
        ck.aside.sort_unstable_by_key(|&(id, _)| id);
        let mut levels: Vec<(u64, u8)> = lanes
            .iter()
            .flat_map(|(order, _)| order.other_levels())
            .collect();
        levels.sort_unstable_by_key(|&(id, _)| id);
        let in_table = levels.partition_point(|&(id, _)| id < slots.base());
        for &(id, level) in &levels[..in_table] {
            if let Ok(i) = ck.aside.binary_search_by_key(&id, |&(id, _)| id) {
                ck.aside[i].1.priority = level;
            }
        }
        levels.drain(..in_table);
        ck.queue_jobs = named.jobs_by_id();
        ck.queues = named
            .defs_of(&ck.queue_jobs)
            .into_iter()
            .map(|(id, d)| CkQueue {
                id,
                def: d.written,
                name: d.name,
            })
            .collect();
        Encoded {
            next_lsn: ck.next_lsn,
            bytes: ck.encode_from(&TableSlots { slots, levels }),
        }
    }
}

/// A checkpoint file's bytes, ready to be written (`None`: none can be,
/// see [`Checkpoint::encode_from`]).
#[derive(Debug)]
pub struct Encoded {
    next_lsn: u64,
    bytes: Option<Vec<u8>>,
}

impl Encoded {
    /// The first LSN the checkpoint does not cover.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }
}

/// The captured job table as the checkpoint's encoder reads it: a written
/// block converted into one reused buffer of at most [`BLOCK`] slots with
/// the levels patched in, a block of fresh jobs the table holds as a run
/// passed as the run. No copy of the table is made (one was, 16 bytes a
/// job, and kept from one checkpoint to the next: about 14 of the 30
/// bytes of memory a queued job took, `benches/memory.rs`).
#[derive(Debug)]
struct TableSlots {
    slots: CapturedSlots,
    /// The table's jobs of another level than Normal, by id.
    levels: Vec<(u64, u8)>,
}

impl SlotSource for TableSlots {
    fn count(&self) -> usize {
        self.slots.len()
    }

    fn for_each_piece(&self, f: &mut dyn FnMut(SlotPiece<'_>)) {
        let normal = crate::format::record::PRIORITY_NORMAL;
        let mut buf = Vec::with_capacity(BLOCK);
        let mut levels = self.levels.iter().peekable();
        let mut id = self.slots.base();
        self.slots.for_each_stretch(|s| {
            let end = id + s.len() as u64;
            let plain = levels.peek().is_none_or(|&&(l, _)| l >= end);
            match s {
                Stretch::Fresh { n, seg, off, len } if plain => {
                    f(SlotPiece::Fresh { n, seg, off, len })
                }
                _ => {
                    buf.clear();
                    s.for_each(|slot| buf.push(ck_slot(slot, normal)));
                    while let Some(&(l, level)) = levels.next_if(|&&(l, _)| l < end) {
                        let at = l.checked_sub(id).and_then(|i| usize::try_from(i).ok());
                        if let Some(slot) = at.and_then(|i| buf.get_mut(i)) {
                            slot.priority = level;
                        }
                    }
                    f(SlotPiece::Laid(&buf));
                }
            }
            id = end;
        });
    }
}

/// Writes `ck` crash-atomically (`CHECKPOINT.tmp`, fsync, rename, fsync of
/// the directory). An encoding that could not be made (an error section
/// over its limit) writes nothing: the checkpoint on disk, if any, stays
/// valid (an older one, which the next open replays the log after).
pub fn write(vfs: &dyn Vfs, dir: &Path, ck: &Encoded, mode: u32) -> Result<()> {
    let Some(bytes) = &ck.bytes else {
        return Ok(());
    };
    crate::vfs::write_atomically(vfs, dir, CHECKPOINT_FILE, &[bytes], mode).map(drop)
}

/// Clears the clean flag of the checkpoint in place (its 128-byte head
/// rewritten, `fdatasync`): the log grows past it from now on without it
/// saying so, and it stays usable as a checkpoint of an unclean stop.
/// Where the overwrite fails (a full copy-on-write disk needs space even
/// for it) the checkpoint is removed instead and the directory synced.
pub fn clear_clean(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let path = dir.join(CHECKPOINT_FILE);
    if rewrite_head(vfs, &path).is_ok() {
        return Ok(());
    }
    vfs.remove(&path)
        .map_err(|e| Error::io("removing the used clean checkpoint", &path, e))?;
    vfs.sync_dir(dir)
        .map_err(|e| Error::io("syncing directory", dir, e))
}

fn rewrite_head(vfs: &dyn Vfs, path: &Path) -> std::io::Result<()> {
    let file = vfs.open(path)?;
    let mut head = [0u8; HEAD_LEN];
    file.read_at(&mut head, 0)?;
    let head = crate::format::checkpoint::head_without_clean(&head)
        .ok_or_else(|| std::io::Error::other("checkpoint head"))?;
    file.write_at(&head, 0)?;
    file.sync_data()
}

/// Reads the checkpoint file; `Err` says why there is none to use.
pub fn read(vfs: &dyn Vfs, dir: &Path) -> std::result::Result<Vec<u8>, String> {
    let path = dir.join(CHECKPOINT_FILE);
    let file = match vfs.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("missing".into()),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let len = file.len().map_err(|e| format!("unreadable: {e}"))?;
    // The head first: the body is read (and its memory taken) only when
    // the head's counts give the file's length.
    let mut head = vec![0u8; HEAD_LEN.min(usize::try_from(len).unwrap_or(usize::MAX))];
    file.read_at(&mut head, 0)
        .map_err(|e| format!("unreadable: {e}"))?;
    check_file_len(&head, len).map_err(|e| e.to_string())?;
    // The head's word is a CRC's: the body is read only up to where the
    // file's data ends (a checkpoint is written whole, so holes past it
    // mean a file grown by zeros), its memory reserved first.
    let buf =
        crate::vfs::read_span(&*file, &path, 0, len).map_err(|e| format!("unreadable: {e}"))?;
    if (buf.len() as u64) < len {
        return Err(format!(
            "damaged: bytes never written (holes) from offset {} to its end at {len}",
            buf.len()
        ));
    }
    Ok(buf)
}

/// Decodes checkpoint bytes (all but the slots, whose bytes are returned
/// as they are); `Err` says why they cannot be used.
pub fn decode(buf: &[u8]) -> std::result::Result<(Checkpoint, Slots<'_>), String> {
    let (ck, slots) = Checkpoint::decode_lazy(buf).map_err(|e| e.to_string())?;
    if ck.hash_probe != hash_probe() {
        return Err("written with another key hash".into());
    }
    Ok((ck, slots))
}

/// Whether the log on disk (segments `ids`, oldest first) is the log `ck`
/// was taken of; `Err` names the first difference. Each covered segment
/// is opened for its header and closed again.
pub fn check_log(
    vfs: &dyn Vfs,
    dir: &Path,
    ck: &Checkpoint,
    ids: &[u32],
) -> std::result::Result<(), String> {
    let stale = |why: String| Err(format!("stale: {why}"));
    let Some(&first) = ids.first() else {
        return stale("the log has no segments".into());
    };
    if first != ck.first_seg {
        return stale(format!(
            "it starts at segment {}, the log at segment {first}",
            ck.first_seg
        ));
    }
    if ck.segments.len() > ids.len() {
        return stale(format!(
            "it covers {} segments, the log has {}",
            ck.segments.len(),
            ids.len()
        ));
    }
    let mut seg = None;
    for (c, &id) in ck.segments.iter().zip(ids) {
        let path = dir.join(crate::segment::file_name(id));
        let s = Segment::open(vfs, &path, id).map_err(|e| format!("stale: {e}"))?;
        if c.base_lsn != s.header.base_lsn || c.size != s.size() {
            return stale(format!(
                "segment {} has base LSN {} and {} bytes, the checkpoint says {} and {}",
                s.id,
                s.header.base_lsn,
                s.size(),
                c.base_lsn,
                c.size
            ));
        }
        if c.end < SEGMENT_HEADER_LEN as u32 || c.end > c.size {
            return Err(format!("damaged: segment {} ends outside it", s.id));
        }
        seg = Some(s);
    }
    let last = &ck.segments[ck.segments.len() - 1];
    let Some(seg) = seg else {
        return Err("damaged: no segment".into());
    };
    if ck.next_lsn < last.base_lsn
        || ck.next_lsn >= crate::format::MAX_ID
        || ck.next_id >= crate::format::MAX_ID
    {
        return Err("damaged: LSN or job id out of range".into());
    }
    if ck.digest_from > last.end || last.end - ck.digest_from > DIGEST_SPAN {
        return Err("damaged: digest range".into());
    }
    let bytes = read_at(vfs, &seg.path, ck.digest_from, last.end - ck.digest_from)
        .map_err(|e| format!("unreadable segment {}: {e}", seg.id))?;
    if digest(seg.id, &bytes) != ck.digest {
        return stale(format!(
            "segment {} differs before offset {} from what it covers",
            seg.id, last.end
        ));
    }
    Ok(())
}

/// `len` bytes of the file at `path` from `off`, read with `pread`.
pub fn read_at(vfs: &dyn Vfs, path: &Path, off: u32, len: u32) -> std::io::Result<Vec<u8>> {
    let file = vfs.open(path)?;
    let mut buf = vec![0u8; len as usize];
    file.read_at(&mut buf, u64::from(off))?;
    Ok(buf)
}

/// Whether a slot state byte is a live state.
pub fn live_state(b: u8) -> Option<SlotState> {
    match b {
        1 => Some(SlotState::Fresh),
        2 => Some(SlotState::Waiting),
        3 => Some(SlotState::InFlight),
        _ => None,
    }
}

/// When the next periodic checkpoint is due, and the one writer at a time.
///
/// One is due every `every` bytes of log, and as soon as reclaim has
/// retired the first segment the last one covered: a checkpoint names the
/// log's first segment, and one whose first segment is gone is stale (the
/// next open would scan the whole log), so a queue that drains through
/// its segments would otherwise be without a usable checkpoint for most
/// of its life.
#[derive(Debug)]
pub struct Schedule {
    every: u64,
    /// Log position (see `QueueState::log_position`) of the next one.
    next_at: std::sync::atomic::AtomicU64,
    /// The log's first segment when the last one was captured.
    first_seg: std::sync::atomic::AtomicU32,
    /// One fell due while another was being written.
    missed: std::sync::atomic::AtomicBool,
    /// The generation of the last checkpoint captured.
    generation: std::sync::atomic::AtomicU64,
    /// Whether a checkpoint is being captured or written.
    gate: std::sync::Arc<Gate>,
}

/// One writer at a time; a close waits for a periodic write in flight.
#[derive(Debug, Default)]
struct Gate {
    busy: parking_lot::Mutex<bool>,
    idle: parking_lot::Condvar,
}

impl Schedule {
    /// Every `every` bytes of log from `state`'s position (0: never).
    pub fn new(every: u64, state: &QueueState) -> Schedule {
        Schedule {
            every,
            next_at: state.log_position().saturating_add(every).into(),
            first_seg: first_segment(state).into(),
            missed: false.into(),
            generation: 0.into(),
            gate: std::sync::Arc::default(),
        }
    }

    /// If a periodic checkpoint is due (and no other is being written), a
    /// capture of `state` and the right to write it, which may move to
    /// another thread. Cheap when none is due. One that is due while
    /// another is being written is remembered ([`Schedule::missed`]).
    #[inline]
    pub fn due(&self, state: &QueueState) -> Option<(Capture, Writing)> {
        if !self.is_due(state) {
            return None;
        }
        self.start(state)
    }

    /// [`Schedule::due`] once one is due: the right to write it, unless
    /// another is being written.
    #[inline(never)]
    fn start(&self, state: &QueueState) -> Option<(Capture, Writing)> {
        let Some(mut busy) = self.gate.busy.try_lock() else {
            self.missed.store(true, Ordering::Relaxed);
            return None;
        };
        if *busy {
            self.missed.store(true, Ordering::Relaxed);
            return None;
        }
        *busy = true;
        drop(busy);
        let writing = Writing(self.gate.clone());
        Some((self.capture(state), writing))
    }

    /// For the writer of the last one, which still holds the right to
    /// write: a capture of `state` if one fell due meanwhile.
    pub fn missed(&self, state: &QueueState) -> Option<Capture> {
        (self.missed.swap(false, Ordering::Relaxed) && self.is_due(state))
            .then(|| self.capture(state))
    }

    #[inline]
    fn is_due(&self, state: &QueueState) -> bool {
        let retired = first_segment(state) > self.first_seg.load(Ordering::Relaxed);
        self.every != 0 && (retired || state.log_position() >= self.next_at.load(Ordering::Relaxed))
    }

    fn capture(&self, state: &QueueState) -> Capture {
        self.next_at.store(
            state.log_position().saturating_add(self.every),
            Ordering::Relaxed,
        );
        self.first_seg
            .store(first_segment(state), Ordering::Relaxed);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        state.capture_checkpoint(false, generation)
    }

    /// Returns once no checkpoint is being written.
    pub fn wait_idle(&self) {
        let mut busy = self.gate.busy.lock();
        while *busy {
            self.gate.idle.wait(&mut busy);
        }
    }

    /// Captures the clean checkpoint of a close, after any periodic one
    /// still being written (so that one cannot replace it).
    pub fn clean(&self, state: &QueueState) -> (Capture, Writing) {
        let mut busy = self.gate.busy.lock();
        while *busy {
            self.gate.idle.wait(&mut busy);
        }
        *busy = true;
        drop(busy);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        (
            state.capture_checkpoint(true, generation),
            Writing(self.gate.clone()),
        )
    }
}

/// The id of the log's first segment.
fn first_segment(state: &QueueState) -> u32 {
    state.log.first_id()
}

/// The right to write one checkpoint (see [`Schedule`]); dropping it lets
/// the next writer in.
#[derive(Debug)]
pub struct Writing(std::sync::Arc<Gate>);

impl Writing {
    /// The checkpoint `capture` holds, encoded (O(live jobs) but for runs
    /// of fresh jobs: call it with the queue lock released).
    pub fn finish(&self, capture: Capture) -> Encoded {
        capture.finish()
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        *self.0.busy.lock() = false;
        self.0.idle.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::checkpoint::SlotPiece;
    use crate::jobs::{JobTable, TableBuilder};
    use proptest::prelude::*;

    fn laid(src: &dyn SlotSource) -> Vec<CkSlot> {
        let mut all = Vec::new();
        src.for_each_piece(&mut |p| match p {
            SlotPiece::Laid(l) => all.extend_from_slice(l),
            SlotPiece::Fresh { n, seg, off, len } => {
                all.extend((0..n).map(|i| crate::format::checkpoint::fresh_slot(seg, off, len, i)))
            }
        });
        all
    }

    fn table(steps: &[(u8, u16)]) -> JobTable {
        let mut b = TableBuilder::default();
        let (seg, mut off) = (3u32, 64u32);
        for &(kind, n) in steps {
            let n = u64::from(n);
            match kind {
                0 => b.extend_empty(n),
                1 => {
                    b.extend_fresh_run(n, seg, off, 20);
                    off += 20 * n as u32;
                }
                _ => {
                    b.push(Slot {
                        seg,
                        off,
                        len: 30,
                        attempts: 1,
                        state: SlotState::Waiting,
                    });
                    off += 30;
                }
            }
        }
        b.finish(1000, Default::default())
    }

    proptest! {
        /// The queue's own slot source (written blocks through the reused
        /// buffer, fresh blocks as runs, levels patched in, a fresh block
        /// holding a level laid out) hands out the captured table's slots
        /// with their levels, and encodes as they do laid out.
        #[test]
        fn table_slots_match_the_table_laid_out(
            steps in proptest::collection::vec((0u8..3, 1u16..9000), 1..8),
            edits in proptest::collection::vec((any::<u32>(), 0u8..3), 0..6),
            lv in proptest::collection::vec((any::<u32>(), 0u8..4), 0..6),
        ) {
            let mut t = table(&steps);
            let ids: Vec<u64> = t.iter().map(|(id, _)| id).collect();
            prop_assume!(!ids.is_empty());
            for (k, e) in edits {
                let id = ids[k as usize % ids.len()];
                match e {
                    0 => { t.remove(id); }
                    1 => { if let Some(s) = t.get_mut(id) { s.attempts += 1; } }
                    _ => {}
                }
            }
            let cap = t.capture();
            let mut model: Vec<CkSlot> = Vec::new();
            cap.for_each_stretch(|s| s.for_each(|s| model.push(ck_slot(s, 1))));
            let mut levels: Vec<(u64, u8)> = lv.iter()
                .map(|&(k, l)| (ids[k as usize % ids.len()], l))
                .filter(|&(id, _)| id >= cap.base())
                .collect();
            levels.sort_unstable_by_key(|&(id, _)| id);
            levels.dedup_by_key(|l| l.0);
            for &(id, l) in &levels {
                model[(id - cap.base()) as usize].priority = l;
            }
            let src = TableSlots { slots: cap, levels };
            prop_assert_eq!(src.count(), model.len());
            let got = laid(&src);
            prop_assert!(got == model);
            let ck = Checkpoint { segments: vec![CkSegment { base_lsn: 1, size: 1 << 30, end: 1 << 29 }], ..Checkpoint::default() };
            prop_assert!(ck.encode_from(&src) == ck.encode_from(&model));
        }
    }
}
