//! The in-memory index of live jobs: 16 bytes per job.
//!
//! Job ids grow by one per enqueue, so live jobs sit in slots indexed by
//! id, in blocks of [`BLOCK`] slots. Finished jobs leave an empty slot
//! until everything before them is finished too; a few jobs that stay
//! alive for long (a stuck lease, a far-off delay) would pin the front, so
//! when empty slots dominate, the front's live jobs move to a small side
//! map ("stragglers") and the front is released. Memory stays proportional
//! to live jobs.
//!
//! Blocks are shared by `Arc` (copy-on-write): [`JobTable::capture`] takes
//! the id-ordered part by cloning block pointers, about 440 of them for
//! 1.8 million jobs, so a periodic checkpoint holds the queue lock for
//! microseconds instead of copying every slot under it. A block still held
//! by a capture is copied (64 KiB) on its first change after it; once the
//! capture is dropped, writes go in place again.
//!
//! A whole block of fresh jobs that a checkpoint stores as one run (back
//! to back in one segment, of one length) is kept as that run
//! ([`Block::Fresh`]): its slots are computed when read and written out on
//! the block's first change. An open of a fresh backlog so writes no slot:
//! 200,000 slots written at open cost about 770 page faults of new heap
//! (0.4-1.0 ms on the reference VM) besides 3.5 M instructions.
//!
//! Invariants: `start <= base <= end <= start + blocks.len() * BLOCK`;
//! every slot outside `base..end` is empty; `base - start < BLOCK` unless
//! no block is left; `in_slots` counts the non-empty slots; every straggler
//! id is below `base`.
//!
//! Payloads are never here: a slot holds where the job's record lies.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::cowmap::{Captured, CowIdMap};
use crate::idhash::IdMap;

/// Slots per block: 64 KiB.
pub const BLOCK: usize = 4096;

/// [`BLOCK`] slots.
#[derive(Debug, Clone)]
enum Block {
    /// Written out, shared between the table and its captures.
    Written(Arc<[Slot]>),
    /// Fresh jobs in every slot, as a checkpoint's run stores them.
    Fresh(FreshRun),
}

/// [`BLOCK`] fresh jobs (never attempted) back to back in segment `seg`
/// from offset `off`, `len` bytes each. The run was checked to lie inside
/// its segment when it was read, so no offset wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FreshRun {
    seg: u32,
    off: u32,
    len: u32,
}

impl FreshRun {
    /// The slot of the run's `i`-th job.
    #[inline]
    fn slot(self, i: usize) -> Slot {
        Slot {
            seg: self.seg,
            // Below BLOCK: fits a u32.
            off: self.off.wrapping_add((i as u32).wrapping_mul(self.len)),
            len: self.len,
            attempts: 0,
            state: SlotState::Fresh,
        }
    }
}

impl Block {
    /// Slot `i` (below [`BLOCK`]).
    #[inline]
    fn slot(&self, i: usize) -> Slot {
        match self {
            Block::Written(slots) => slots[i],
            Block::Fresh(run) => run.slot(i),
        }
    }

    /// Calls `f` with slots `lo..hi`, in order.
    fn for_each(&self, lo: usize, hi: usize, f: &mut impl FnMut(&Slot)) {
        match self {
            Block::Written(slots) => slots[lo..hi].iter().for_each(f),
            Block::Fresh(run) => (lo..hi).for_each(|i| f(&run.slot(i))),
        }
    }

    /// The slots for a write: a run is written out first, and a block a
    /// capture still holds is copied.
    fn written_mut(&mut self) -> &mut [Slot] {
        if let Block::Fresh(run) = *self {
            *self = Block::Written((0..BLOCK).map(|i| run.slot(i)).collect());
        }
        match self {
            Block::Written(slots) => Arc::make_mut(slots),
            Block::Fresh(_) => unreachable!("a fresh block was just written out"),
        }
    }

    /// Whether the block's slots are in memory (for the memory report).
    fn is_written(&self) -> bool {
        matches!(self, Block::Written(_))
    }
}

/// A block of empty slots, copied to make one.
static EMPTY_BLOCK: [Slot; BLOCK] = [EMPTY; BLOCK];

/// A new block of empty slots: one allocation and a `memcpy` (collecting
/// an iterator into an `Arc<[Slot]>` goes slot by slot, and made the
/// table's build at open six times slower).
fn empty_block() -> Block {
    Block::Written(Arc::from(&EMPTY_BLOCK[..]))
}

/// A block holding `slots` (at most [`BLOCK`]), empty after them.
fn block_of(slots: &[Slot]) -> Block {
    if slots.len() == BLOCK {
        return Block::Written(Arc::from(slots));
    }
    // On the heap: 64 KiB is too much for a caller's stack.
    let mut b = EMPTY_BLOCK.to_vec();
    b[..slots.len()].copy_from_slice(slots);
    Block::Written(Arc::from(b))
}

/// Where a job is and what it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SlotState {
    /// No live job (finished, dead, or never existed).
    Empty = 0,
    /// Ready and never leased or delayed: served in id order.
    Fresh = 1,
    /// In the due heap: delayed, retried, released or redriven.
    Waiting = 2,
    /// Leased to a consumer.
    InFlight = 3,
}

/// One live job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Segment holding the job's latest full record.
    pub seg: u32,
    /// Offset of that record in the segment.
    pub off: u32,
    /// Length of that record.
    pub len: u32,
    /// Attempts made so far.
    pub attempts: u16,
    /// What the job is doing.
    pub state: SlotState,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 16);

impl Slot {
    /// No live job.
    pub const EMPTY: Slot = EMPTY;
}

const EMPTY: Slot = Slot {
    seg: 0,
    off: 0,
    len: 0,
    attempts: 0,
    state: SlotState::Empty,
};

/// Live jobs by id.
#[derive(Default)]
pub struct JobTable {
    /// Id of the first slot of the first block.
    start: u64,
    /// First id of the id-ordered part.
    base: u64,
    /// One past the last id of the id-ordered part.
    end: u64,
    blocks: VecDeque<Block>,
    /// Copy-on-write: a checkpoint captures them by pointer.
    stragglers: CowIdMap<Slot>,
    in_slots: usize,
    parked_fresh: Vec<u64>,
}

impl std::fmt::Debug for JobTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobTable")
            .field("base", &self.base)
            .field("end", &self.end)
            .field("blocks", &self.blocks.len())
            .field("in_slots", &self.in_slots)
            .field("stragglers", &self.stragglers.len())
            .finish()
    }
}

impl JobTable {
    /// Number of live jobs.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.in_slots + self.stragglers.len()
    }

    /// Whether no job is live.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Block and index of `id`, which must be in `start..start + capacity`.
    fn locate(&self, id: u64) -> (usize, usize) {
        debug_assert!(id >= self.start);
        // Below the blocks' capacity, which is in memory: fits a usize.
        let off = (id - self.start) as usize;
        (off / BLOCK, off % BLOCK)
    }

    /// The slot of `id`, in `base..end`.
    #[inline]
    fn ordered(&self, id: u64) -> Option<Slot> {
        if id < self.base || id >= self.end {
            return None;
        }
        let (b, i) = self.locate(id);
        Some(self.blocks[b].slot(i))
    }

    /// The slot of `id`, in `base..end`, for a write: the block is copied
    /// first if a capture still holds it.
    fn ordered_mut(&mut self, id: u64) -> &mut Slot {
        debug_assert!(id >= self.base && id < self.end);
        let (b, i) = self.locate(id);
        &mut self.blocks[b].written_mut()[i]
    }

    /// The job with this id, if live.
    pub fn get(&self, id: u64) -> Option<Slot> {
        let slot = if id < self.base {
            self.stragglers.get(&id).copied()
        } else {
            self.ordered(id)
        }?;
        (slot.state != SlotState::Empty).then_some(slot)
    }

    /// The slot of live job `id`, in `base..end`, for a write, with one
    /// lookup of its block (the state is read before the block is made
    /// writable: an empty slot copies no block a capture holds).
    #[inline]
    fn ordered_live_mut(&mut self, id: u64) -> Option<&mut Slot> {
        if id < self.base || id >= self.end {
            return None;
        }
        let (b, i) = self.locate(id);
        let block = &mut self.blocks[b];
        if block.slot(i).state == SlotState::Empty {
            return None;
        }
        Some(&mut block.written_mut()[i])
    }

    /// The job with this id, if live, for update.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Slot> {
        if id < self.base {
            return self.stragglers.get_mut(&id);
        }
        self.ordered_live_mut(id)
    }

    /// Inserts or replaces a live job.
    pub fn insert(&mut self, id: u64, slot: Slot) {
        assert!(slot.state != SlotState::Empty, "inserting an empty slot");
        if self.base == self.end && (self.stragglers.is_empty() || id >= self.base) {
            self.rebase(id);
        }
        if id < self.base {
            self.stragglers.insert(id, slot);
            return;
        }
        let (len, i) = (self.end - self.base, id - self.base);
        if i >= len && i - len > (1 << 20) + 4 * self.in_slots as u64 {
            // A far jump (an old job carried forward was replayed first):
            // park what we have instead of filling the gap with empty slots.
            self.park_all();
            self.rebase(id);
        }
        if id >= self.end {
            self.grow_to(id + 1);
        }
        let old = std::mem::replace(self.ordered_mut(id), slot);
        if old.state == SlotState::Empty {
            self.in_slots += 1;
        }
    }

    /// With no slot in use, moves the id-ordered part to start at `id`.
    fn rebase(&mut self, id: u64) {
        debug_assert_eq!(self.in_slots, 0);
        let capacity = self.start + (self.blocks.len() * BLOCK) as u64;
        if id < self.start || id >= capacity {
            // Every slot is empty: one block can serve from `id` on.
            self.blocks.truncate(1);
            self.start = id;
        }
        self.base = id;
        self.end = id;
    }

    /// Makes `base..new_end` the id-ordered part, adding empty blocks.
    fn grow_to(&mut self, new_end: u64) {
        while self.start + ((self.blocks.len() * BLOCK) as u64) < new_end {
            self.blocks.push_back(empty_block());
        }
        self.end = new_end;
    }

    /// Parks every live job of the id-ordered part and drops its blocks.
    fn park_all(&mut self) {
        for id in self.base..self.end {
            if let Some(s) = self.ordered(id).filter(|s| s.state != SlotState::Empty) {
                self.park(id, s);
            }
        }
        self.blocks.clear();
        self.in_slots = 0;
        self.start = self.end;
        self.base = self.end;
    }

    /// Removes a live job and returns it.
    pub fn remove(&mut self, id: u64) -> Option<Slot> {
        if id < self.base {
            return self.stragglers.remove(&id);
        }
        let old = std::mem::replace(self.ordered_live_mut(id)?, EMPTY);
        self.in_slots -= 1;
        self.trim();
        Some(old)
    }

    fn trim(&mut self) {
        self.skip_empty_front();
        // Move long-lived jobs out of the way when empty slots dominate.
        let len = |t: &JobTable| t.end - t.base;
        if len(self) > BLOCK as u64 && len(self) > 4 * self.in_slots as u64 {
            while len(self) > 2 * self.in_slots as u64 {
                let id = self.base;
                let front = std::mem::replace(self.ordered_mut(id), EMPTY);
                self.park(id, front);
                self.base += 1;
                self.in_slots -= 1;
                self.skip_empty_front();
            }
        }
        while self.base - self.start >= BLOCK as u64 && !self.blocks.is_empty() {
            self.blocks.pop_front();
            self.start += BLOCK as u64;
        }
        if self.base == self.end {
            self.blocks.truncate(1);
        }
    }

    fn skip_empty_front(&mut self) {
        while self
            .ordered(self.base)
            .is_some_and(|s| s.state == SlotState::Empty)
        {
            self.base += 1;
        }
    }

    /// Moves a job to the side map. Stragglers are never served in id
    /// order, so a fresh one becomes waiting, and the owner must put it in
    /// the due heap (see [`JobTable::take_parked_fresh`]).
    fn park(&mut self, id: u64, mut slot: Slot) {
        if slot.state == SlotState::Fresh {
            slot.state = SlotState::Waiting;
            self.parked_fresh.push(id);
        }
        self.stragglers.insert(id, slot);
    }

    /// Fresh jobs parked since the last call: now waiting, to be put in the
    /// due heap by the caller.
    pub fn take_parked_fresh(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.parked_fresh)
    }

    /// Whether fresh jobs were parked since the last
    /// [`JobTable::take_parked_fresh`] (a check for every operation).
    #[inline]
    pub fn has_parked_fresh(&self) -> bool {
        !self.parked_fresh.is_empty()
    }

    /// Whether a live job is kept in the side map (never served as fresh).
    pub fn is_straggler(&self, id: u64) -> bool {
        id < self.base && self.stragglers.contains_key(&id)
    }

    /// The slots of the id-ordered part from `from`, with their ids.
    fn slots_from(&self, from: u64) -> impl Iterator<Item = (u64, Slot)> + '_ {
        (from.max(self.base)..self.end).map(move |id| {
            let (b, i) = self.locate(id);
            (id, self.blocks[b].slot(i))
        })
    }

    /// The first id at or after `from` in id order whose state is
    /// [`SlotState::Fresh`] (stragglers are never fresh).
    pub fn next_fresh(&self, from: u64) -> Option<u64> {
        // A plain loop over blocks, not `runs_from`: called once per
        // dequeue, where the iterator chain cost ~100 instructions.
        let mut id = from.max(self.base);
        while id < self.end {
            let (b, i) = self.locate(id);
            // Below BLOCK: fits a usize.
            let hi = (BLOCK as u64).min(i as u64 + (self.end - id)) as usize;
            let slots = match &self.blocks[b] {
                Block::Written(slots) => &slots[i..hi],
                // Every slot of a fresh run is fresh.
                Block::Fresh(_) => return Some(id),
            };
            if let Some(p) = slots.iter().position(|s| s.state == SlotState::Fresh) {
                return Some(id + p as u64);
            }
            id += (hi - i) as u64;
        }
        None
    }

    /// Live jobs of the id-ordered part with ids from `from`, looking at
    /// most `n` slots, and the id to continue from (`None` at the end).
    /// Stragglers are not included (see [`JobTable::stragglers`]).
    pub fn scan(&self, from: u64, n: usize) -> (Vec<(u64, Slot)>, Option<u64>) {
        let from = from.max(self.base);
        let stop = from.saturating_add(n as u64).min(self.end);
        let found = self
            .slots_from(from)
            .take_while(|(id, _)| *id < stop)
            .filter(|(_, s)| s.state != SlotState::Empty)
            .collect();
        let next = (stop < self.end).then_some(stop);
        (found, next)
    }

    /// The live jobs kept in the side map.
    pub fn stragglers(&self) -> impl Iterator<Item = (u64, &Slot)> + '_ {
        self.stragglers.iter().map(|(id, s)| (*id, s))
    }

    /// The jobs kept aside as they are now (for a checkpoint: O(1) in
    /// their number).
    pub fn capture_stragglers(&self) -> Captured<u64, Slot> {
        self.stragglers.capture()
    }

    /// Every live job, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Slot)> + '_ {
        self.slots_from(self.base)
            .filter(|(_, s)| s.state != SlotState::Empty)
            .chain(self.stragglers().map(|(id, s)| (id, *s)))
    }

    /// Calls `f` with every slot of the id-ordered part, in id order,
    /// empty ones included (for counts at open: a plain loop per block).
    pub fn for_each_ordered(&self, mut f: impl FnMut(&Slot)) {
        let mut id = self.base;
        while id < self.end {
            let (b, i) = self.locate(id);
            // Below BLOCK: fits a usize.
            let hi = (BLOCK as u64).min(i as u64 + (self.end - id)) as usize;
            self.blocks[b].for_each(i, hi, &mut f);
            id += (hi - i) as u64;
        }
    }

    /// The id-ordered part as it is now, sharing its blocks with the
    /// table: O(blocks) pointer copies (what a checkpoint captures under
    /// the queue lock; the slots are laid out after it is released).
    pub fn capture(&self) -> CapturedSlots {
        let first = if self.base < self.end {
            self.locate(self.base).0
        } else {
            self.blocks.len()
        };
        let last = if self.base < self.end {
            self.locate(self.end - 1).0 + 1
        } else {
            first
        };
        CapturedSlots {
            base: self.base,
            end: self.end,
            first: self.start + (first * BLOCK) as u64,
            blocks: self.blocks.range(first..last).cloned().collect(),
        }
    }

    /// Heap bytes held, for the memory report.
    pub fn heap_bytes(&self) -> usize {
        let written = self.blocks.iter().filter(|b| b.is_written()).count();
        written * BLOCK * std::mem::size_of::<Slot>()
            + self.blocks.capacity() * std::mem::size_of::<Block>()
            + self.stragglers.capacity() * (std::mem::size_of::<(u64, Slot)>() + 1)
    }
}

/// Builds a table from the slots a checkpoint stored, in id order, block
/// by block: the slots are written once into a block-sized buffer and
/// copied into their block, never into a table-sized buffer first (open
/// of 200,000 jobs: 3.2 MB written once less).
#[derive(Debug, Default)]
pub struct TableBuilder {
    blocks: VecDeque<Block>,
    /// The block being filled.
    cur: Vec<Slot>,
    len: u64,
    in_slots: usize,
}

impl TableBuilder {
    /// Slots added so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Adds `n` live slots, the `k`-th of them `slot(k)` (never empty).
    ///
    /// A whole block is written where it will live, in one pass: a mapped
    /// `Range` is `TrustedLen`, so collecting it allocates the `Arc` once
    /// and fills it in place. Staged in `cur` and copied instead, the
    /// build of 200,000 slots at open took 7.5 M instructions, not 3.4 M
    /// (callgrind, docs/benchmarks.md "Reopen: the job table built in
    /// place").
    pub fn extend_live(&mut self, n: u64, slot: impl Fn(u64) -> Slot) {
        let whole = |k: u64| {
            let block: Arc<[Slot]> = (k..k + BLOCK as u64).map(&slot).collect();
            debug_assert!(block.iter().all(|s| s.state != SlotState::Empty));
            Block::Written(block)
        };
        self.extend_by(n, true, whole, &slot);
    }

    /// Adds `n` fresh jobs back to back in segment `seg` from `off`, each
    /// `len` bytes (a checkpoint's run, checked to lie inside its segment):
    /// whole blocks are kept as runs ([`Block::Fresh`]), their slots
    /// written out only when one of them changes.
    pub fn extend_fresh_run(&mut self, n: u64, seg: u32, off: u32, len: u32) {
        let at = |k: u64| FreshRun {
            seg,
            off: off.wrapping_add((k as u32).wrapping_mul(len)),
            len,
        };
        self.extend_by(n, true, |k| Block::Fresh(at(k)), &|k| at(k).slot(0));
    }

    /// Adds `n` empty slots (whole blocks as copies of the empty block).
    pub fn extend_empty(&mut self, n: u64) {
        self.extend_by(n, false, |_| empty_block(), &|_| EMPTY);
    }

    /// Adds `n` slots, the `k`-th of them `slot(k)`: a whole block that
    /// starts a block of the table is `whole(k)` (its first slot the
    /// `k`-th), the rest is staged. `live` slots count in `in_slots`.
    fn extend_by(
        &mut self,
        n: u64,
        live: bool,
        mut whole: impl FnMut(u64) -> Block,
        slot: &dyn Fn(u64) -> Slot,
    ) {
        let mut k = 0;
        while k < n {
            let take = if self.cur.is_empty() && n - k >= BLOCK as u64 {
                self.blocks.push_back(whole(k));
                BLOCK as u64
            } else {
                let take = ((BLOCK - self.cur.len()) as u64).min(n - k);
                self.stage(k..k + take, slot);
                take
            };
            if live {
                self.in_slots += take as usize;
            }
            (k, self.len) = (k + take, self.len + take);
        }
    }

    /// Appends `slot(k)` for each `k` of `ks` to the block being filled
    /// (they fit), and moves the block to the table once full.
    fn stage(&mut self, ks: std::ops::Range<u64>, slot: &dyn Fn(u64) -> Slot) {
        if self.cur.capacity() == 0 {
            self.cur.reserve_exact(BLOCK);
        }
        self.cur.extend(ks.map(slot));
        if self.cur.len() == BLOCK {
            self.blocks.push_back(block_of(&self.cur));
            self.cur.clear();
        }
    }

    /// Adds one slot.
    pub fn push(&mut self, slot: Slot) {
        if slot.state == SlotState::Empty {
            self.extend_empty(1);
        } else {
            self.extend_live(1, |_| slot);
        }
    }

    /// The table: its first slot's id is `base`; `stragglers` are the jobs
    /// kept aside (the caller checked every id is below `base`).
    pub fn finish(mut self, base: u64, aside: IdMap<Slot>) -> JobTable {
        if !self.cur.is_empty() {
            self.blocks.push_back(block_of(&self.cur));
        }
        let mut stragglers = CowIdMap::default();
        for (id, slot) in aside {
            stragglers.insert(id, slot);
        }
        JobTable {
            start: base,
            base,
            end: base + self.len,
            blocks: self.blocks,
            stragglers,
            in_slots: self.in_slots,
            parked_fresh: Vec::new(),
        }
    }
}

/// The id-ordered slots of a [`JobTable`] at one moment (see
/// [`JobTable::capture`]): later changes to the table do not show here.
#[derive(Clone)]
pub struct CapturedSlots {
    base: u64,
    end: u64,
    /// Id of the first slot of `blocks[0]`.
    first: u64,
    blocks: Vec<Block>,
}

impl std::fmt::Debug for CapturedSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturedSlots")
            .field("base", &self.base)
            .field("end", &self.end)
            .finish()
    }
}

/// Consecutive captured slots (see [`CapturedSlots::for_each_stretch`]).
#[derive(Debug, Clone, Copy)]
pub enum Stretch<'a> {
    /// Slots as the table holds them.
    Slots(&'a [Slot]),
    /// `n` fresh jobs (never attempted) back to back in segment `seg` from
    /// offset `off`, `len` bytes each.
    Fresh {
        n: usize,
        seg: u32,
        off: u32,
        len: u32,
    },
}

impl<'a> Stretch<'a> {
    /// Number of slots.
    pub fn len(&self) -> usize {
        match self {
            Stretch::Slots(s) => s.len(),
            Stretch::Fresh { n, .. } => *n,
        }
    }

    /// Calls `f` with each slot, in order.
    pub fn for_each(&self, mut f: impl FnMut(&Slot)) {
        match *self {
            Stretch::Slots(s) => s.iter().for_each(f),
            Stretch::Fresh { n, seg, off, len } => {
                let run = FreshRun { seg, off, len };
                (0..n).for_each(|i| f(&run.slot(i)));
            }
        }
    }
}

impl CapturedSlots {
    /// Id of the first slot.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Number of slots, from [`CapturedSlots::base`] on.
    pub fn len(&self) -> usize {
        (self.end - self.base) as usize
    }

    /// Calls `f` with the slots in id order from [`CapturedSlots::base`],
    /// empty ones included, a block or part of one at a time: a block of
    /// fresh jobs the table holds as a run comes as that run.
    pub fn for_each_stretch(&self, mut f: impl FnMut(Stretch<'_>)) {
        for (b, block) in self.blocks.iter().enumerate() {
            let first = self.first + (b * BLOCK) as u64;
            let lo = (self.base.max(first) - first) as usize;
            let hi = (self.end.min(first + BLOCK as u64) - first) as usize;
            if lo >= hi {
                continue;
            }
            f(match block {
                Block::Written(slots) => Stretch::Slots(&slots[lo..hi]),
                Block::Fresh(run) => Stretch::Fresh {
                    n: hi - lo,
                    seg: run.seg,
                    off: run.slot(lo).off,
                    len: run.len,
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn slot(state: SlotState) -> Slot {
        Slot {
            seg: 1,
            off: 2,
            len: 3,
            attempts: 0,
            state,
        }
    }

    #[test]
    fn next_fresh_finds_the_first_slot_of_the_next_block() {
        let mut t = JobTable::default();
        for id in 1..=2 * BLOCK as u64 {
            t.insert(id, slot(SlotState::Fresh));
        }
        let first_of_second = t.start + BLOCK as u64;
        for id in 1..first_of_second {
            t.get_mut(id).unwrap().state = SlotState::InFlight;
        }
        assert_eq!(t.next_fresh(2), Some(first_of_second));
        assert_eq!(t.next_fresh(first_of_second - 1), Some(first_of_second));
        t.get_mut(first_of_second).unwrap().state = SlotState::InFlight;
        assert_eq!(t.next_fresh(2), Some(first_of_second + 1));
        assert_eq!(t.next_fresh(t.end), None);
    }

    #[test]
    fn a_built_table_holds_every_slot_across_blocks() {
        // Runs that start mid-block, fill whole blocks in place, end
        // mid-block, and single slots: each slot where it belongs.
        let live = |id: u64| Slot {
            seg: 1,
            off: u32::try_from(id).unwrap(),
            len: 7,
            attempts: 0,
            state: SlotState::Fresh,
        };
        let base = 100;
        let runs: [(bool, u64); 7] = [
            (true, 10),
            (false, 5),
            (true, 3 * BLOCK as u64 + 17),
            (false, 2 * BLOCK as u64),
            (true, BLOCK as u64 - 1),
            (true, 1),
            (false, 1),
        ];
        let mut b = TableBuilder::default();
        let mut expect = Vec::new();
        for (is_live, n) in runs {
            let first = base + b.len();
            if is_live {
                b.extend_live(n, |k| live(first + k));
            } else {
                b.extend_empty(n);
            }
            expect.extend((first..first + n).map(|id| is_live.then(|| live(id))));
        }
        b.push(live(base + b.len()));
        expect.push(Some(live(base + expect.len() as u64)));
        b.push(EMPTY);
        expect.push(None);
        let t = b.finish(base, IdMap::default());
        let want_live = expect.iter().filter(|s| s.is_some()).count();
        assert_eq!(t.len(), want_live);
        for (i, want) in expect.iter().enumerate() {
            assert_eq!(t.get(base + i as u64), *want, "id {}", base + i as u64);
        }
    }

    #[test]
    fn insert_get_remove() {
        let mut t = JobTable::default();
        for id in 10..20 {
            t.insert(id, slot(SlotState::Fresh));
        }
        assert_eq!(t.len(), 10);
        assert!(t.get(9).is_none());
        assert!(t.get(15).is_some());
        assert_eq!(t.next_fresh(0), Some(10));
        t.get_mut(10).unwrap().state = SlotState::InFlight;
        assert_eq!(t.next_fresh(10), Some(11));
        assert!(t.remove(10).is_some());
        assert!(t.remove(10).is_none());
        assert_eq!(t.len(), 9);
        // An older id (carried forward or redriven) goes to the stragglers.
        t.insert(3, slot(SlotState::Waiting));
        assert_eq!(t.get(3).unwrap().state, SlotState::Waiting);
        assert_eq!(t.len(), 10);
        assert_eq!(t.iter().count(), 10);
        let (first, next) = t.scan(0, 5);
        assert_eq!(
            first.iter().map(|j| j.0).collect::<Vec<_>>(),
            vec![11, 12, 13, 14, 15]
        );
        let (rest, end) = t.scan(next.unwrap(), 100);
        assert_eq!(rest.len(), 4);
        assert_eq!(end, None);
        assert_eq!(t.stragglers().count(), 1);
    }

    #[test]
    fn a_far_jump_does_not_allocate_the_gap() {
        let mut t = JobTable::default();
        t.insert(5, slot(SlotState::Fresh));
        t.insert(u64::MAX / 2, slot(SlotState::Fresh));
        assert_eq!(t.len(), 2);
        assert!(t.is_straggler(5));
        assert_eq!(t.take_parked_fresh(), vec![5]);
        assert_eq!(t.get(5).unwrap().state, SlotState::Waiting);
        assert!(t.get(5).is_some());
        assert!(t.get(u64::MAX / 2).is_some());
        assert!(t.end - t.base < 10);
    }

    #[test]
    fn a_stuck_job_does_not_pin_memory() {
        let mut t = JobTable::default();
        t.insert(0, slot(SlotState::InFlight));
        for id in 1..100_000u64 {
            t.insert(id, slot(SlotState::Fresh));
            t.remove(id);
        }
        assert_eq!(t.len(), 1);
        assert!(t.end - t.base < 8192, "{} slots kept", t.end - t.base);
        assert!(t.blocks.len() <= 3, "{} blocks kept", t.blocks.len());
        assert_eq!(t.get(0).unwrap().state, SlotState::InFlight);
        assert!(t.remove(0).is_some());
        assert!(t.is_empty());
    }

    /// Every live job of `t` is the model's, read both ways.
    fn check_model(t: &JobTable, model: &BTreeMap<u64, Slot>) {
        assert_eq!(t.len(), model.len());
        let mut all: Vec<(u64, Slot)> = t.iter().collect();
        all.sort_unstable_by_key(|j| j.0);
        assert_eq!(
            all,
            model.iter().map(|(id, s)| (*id, *s)).collect::<Vec<_>>()
        );
        for (&id, &s) in model {
            assert_eq!(t.get(id), Some(s), "id {id}");
        }
        let mut ordered = Vec::new();
        t.for_each_ordered(|s| ordered.push(*s));
        let in_order = ordered
            .iter()
            .filter(|s| s.state != SlotState::Empty)
            .count();
        assert_eq!(in_order + t.stragglers().count(), model.len());
        let (scanned, _) = t.scan(0, usize::MAX);
        assert_eq!(scanned.len(), in_order);
    }

    /// The slots a capture holds, by id (empty ones left out).
    fn captured(c: &CapturedSlots) -> Vec<(u64, Slot)> {
        let mut all = Vec::new();
        c.for_each_stretch(|s| s.for_each(|s| all.push(*s)));
        assert_eq!(all.len(), c.len());
        (c.base()..)
            .zip(all)
            .filter(|(_, s)| s.state != SlotState::Empty)
            .collect()
    }

    /// The two blocks' slots are the same memory.
    fn shared(a: &Block, b: &Block) -> bool {
        matches!((a, b), (Block::Written(a), Block::Written(b)) if Arc::ptr_eq(a, b))
    }

    #[test]
    fn a_capture_does_not_see_later_changes() {
        let mut t = JobTable::default();
        for id in 0..3 * BLOCK as u64 {
            t.insert(id, slot(SlotState::Fresh));
        }
        let c = t.capture();
        let before = captured(&c);
        t.get_mut(5).unwrap().state = SlotState::InFlight;
        t.remove(BLOCK as u64 + 7);
        t.insert(3 * BLOCK as u64, slot(SlotState::Fresh));
        assert_eq!(captured(&c), before);
        assert_eq!(before.len(), 3 * BLOCK);
        assert_eq!(t.get(5).unwrap().state, SlotState::InFlight);
        assert!(t.get(BLOCK as u64 + 7).is_none());
        // Unchanged blocks are still shared; changed ones were copied.
        assert!(shared(&t.blocks[2], &c.blocks[2]));
        assert!(!shared(&t.blocks[0], &c.blocks[0]));
    }

    /// Random operations against a map of what each id holds, with
    /// captures taken along the way that must keep what they saw.
    #[test]
    fn the_table_matches_a_model_and_captures_keep_their_moment() {
        run_model(JobTable::default(), BTreeMap::new(), 0, 60_000);
    }

    /// The same, from a table opened on a checkpoint's runs of fresh
    /// jobs: a partial first block, whole blocks kept as runs, a partial
    /// last one.
    #[test]
    fn a_table_of_fresh_runs_matches_a_model_too() {
        let base = 7;
        let (n, seg, off, len) = (3 * BLOCK as u64 + 1000, 4, 64, 150);
        let mut b = TableBuilder::default();
        b.extend_empty(100);
        b.extend_fresh_run(n, seg, off, len);
        let t = b.finish(base, IdMap::default());
        assert!(
            t.blocks.iter().any(|b| !b.is_written()),
            "no block kept as a run"
        );
        let model: BTreeMap<u64, Slot> = (0..n)
            .map(|k| {
                let s = Slot {
                    seg,
                    off: off + k as u32 * len,
                    len,
                    attempts: 0,
                    state: SlotState::Fresh,
                };
                (base + 100 + k, s)
            })
            .collect();
        run_model(t, model, base + 100 + n, 30_000);
    }

    fn run_model(mut t: JobTable, mut model: BTreeMap<u64, Slot>, mut next_id: u64, steps: u64) {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut captures: Vec<(CapturedSlots, Vec<(u64, Slot)>)> = Vec::new();
        check_model(&t, &model);
        for step in 0..steps {
            let live: Vec<u64> = model.keys().copied().collect();
            // Mostly the oldest few (a FIFO drain that leaves stragglers),
            // sometimes any.
            let pick = |r: u64| {
                let n = if r.is_multiple_of(4) {
                    live.len()
                } else {
                    live.len().min(3)
                };
                live[(r / 4 % n as u64) as usize]
            };
            // Phases that fill and phases that drain (to empty, at times).
            let fill = if (step / 7_000) % 2 == 0 { 44 } else { 25 };
            match next(100) {
                r if r <= fill => {
                    let s = Slot {
                        off: step as u32,
                        ..slot(SlotState::Fresh)
                    };
                    t.insert(next_id, s);
                    model.insert(next_id, s);
                    next_id += 1 + next(3) / 2;
                }
                45..=79 if !live.is_empty() => {
                    let id = pick(next(u64::MAX));
                    assert_eq!(t.remove(id), model.remove(&id));
                }
                26..=44 if !live.is_empty() => {
                    let id = pick(next(u64::MAX));
                    assert_eq!(t.remove(id), model.remove(&id));
                }
                80..=89 if !live.is_empty() => {
                    let id = pick(next(u64::MAX));
                    t.get_mut(id).unwrap().state = SlotState::InFlight;
                    model.get_mut(&id).unwrap().state = SlotState::InFlight;
                }
                90..=94 if next_id > 0 => {
                    // An old id comes back (redriven): waiting.
                    let id = next(next_id);
                    let s = slot(SlotState::Waiting);
                    t.insert(id, s);
                    model.insert(id, s);
                }
                95..=96 => {
                    let c = t.capture();
                    let seen = (t.base..t.end)
                        .filter_map(|id| Some((id, *model.get(&id)?)))
                        .filter(|(id, _)| !t.is_straggler(*id))
                        .collect();
                    captures.push((c, seen));
                    if captures.len() > 4 {
                        captures.remove(0);
                    }
                }
                _ => {}
            }
            for id in t.take_parked_fresh() {
                model.get_mut(&id).unwrap().state = SlotState::Waiting;
            }
            assert!(t.start <= t.base && t.base <= t.end);
            assert!(t.end <= t.start + (t.blocks.len() * BLOCK) as u64);
            if step % 997 == 0 {
                check_model(&t, &model);
                let fresh = model.iter().find(|(_, s)| s.state == SlotState::Fresh);
                assert_eq!(t.next_fresh(0), fresh.map(|(id, _)| *id));
                // From any id, across block edges.
                for from in [t.base + step % 9000, t.end.saturating_sub(3), t.end] {
                    let fresh = model
                        .range(from..)
                        .find(|(_, s)| s.state == SlotState::Fresh);
                    assert_eq!(t.next_fresh(from), fresh.map(|(id, _)| *id), "from {from}");
                }
                for (c, seen) in &captures {
                    assert_eq!(&captured(c), seen, "a capture changed");
                }
            }
        }
    }
}
