//! The in-memory index of live jobs: 16 bytes per job.
//!
//! Job ids grow by one per enqueue, so live jobs sit in a deque indexed by
//! `id - base`. Finished jobs leave an empty slot until everything before
//! them is finished too; a few jobs that stay alive for long (a stuck
//! lease, a far-off delay) would pin the front, so when empty slots
//! dominate, the front's live jobs move to a small side map ("stragglers")
//! and the front is released. Memory stays proportional to live jobs.
//!
//! Payloads are never here: a slot holds where the job's record lies.

use std::collections::VecDeque;

use crate::idhash::IdMap;

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
#[derive(Debug, Default)]
pub struct JobTable {
    base: u64,
    slots: VecDeque<Slot>,
    stragglers: IdMap<Slot>,
    in_slots: usize,
    parked_fresh: Vec<u64>,
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

    /// The job with this id, if live.
    pub fn get(&self, id: u64) -> Option<&Slot> {
        let slot = match id.checked_sub(self.base) {
            Some(i) => self.slots.get(usize::try_from(i).ok()?),
            None => self.stragglers.get(&id),
        }?;
        (slot.state != SlotState::Empty).then_some(slot)
    }

    /// The job with this id, if live, for update.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Slot> {
        let slot = match id.checked_sub(self.base) {
            Some(i) => self.slots.get_mut(usize::try_from(i).ok()?),
            None => self.stragglers.get_mut(&id),
        }?;
        (slot.state != SlotState::Empty).then_some(slot)
    }

    /// Inserts or replaces a live job.
    pub fn insert(&mut self, id: u64, slot: Slot) {
        assert!(slot.state != SlotState::Empty, "inserting an empty slot");
        if self.slots.is_empty() && (self.stragglers.is_empty() || id >= self.base) {
            self.base = id;
        }
        let Some(i) = id.checked_sub(self.base) else {
            self.stragglers.insert(id, slot);
            return;
        };
        let i = usize::try_from(i).unwrap_or(usize::MAX);
        if i >= self.slots.len() && i - self.slots.len() > (1 << 20) + 4 * self.in_slots {
            // A far jump (an old job carried forward was replayed first):
            // park what we have instead of filling the gap with empty slots.
            let base = self.base;
            let slots: Vec<Slot> = self.slots.drain(..).collect();
            for (k, s) in slots.into_iter().enumerate() {
                if s.state != SlotState::Empty {
                    self.park(base + k as u64, s);
                }
            }
            self.in_slots = 0;
            self.base = id;
            self.slots.push_back(slot);
            self.in_slots = 1;
            return;
        }
        if i >= self.slots.len() {
            // The common case is the next id: nothing to fill before it.
            if i > self.slots.len() {
                self.slots.resize(i, EMPTY);
            }
            self.slots.push_back(slot);
            self.in_slots += 1;
            return;
        }
        let old = std::mem::replace(&mut self.slots[i], slot);
        if old.state == SlotState::Empty {
            self.in_slots += 1;
        }
    }

    /// Removes a live job and returns it.
    pub fn remove(&mut self, id: u64) -> Option<Slot> {
        let Some(i) = id.checked_sub(self.base) else {
            return self.stragglers.remove(&id);
        };
        let slot = self.slots.get_mut(usize::try_from(i).ok()?)?;
        if slot.state == SlotState::Empty {
            return None;
        }
        let old = std::mem::replace(slot, EMPTY);
        self.in_slots -= 1;
        self.trim();
        Some(old)
    }

    fn trim(&mut self) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.state == SlotState::Empty)
        {
            self.slots.pop_front();
            self.base += 1;
        }
        // Move long-lived jobs out of the way when empty slots dominate.
        if self.slots.len() > 4096 && self.slots.len() > 4 * self.in_slots {
            while let Some(front) = self.slots.front().copied() {
                if front.state == SlotState::Empty {
                    self.slots.pop_front();
                    self.base += 1;
                    continue;
                }
                if self.slots.len() <= 2 * self.in_slots {
                    break;
                }
                self.park(self.base, front);
                self.slots.pop_front();
                self.base += 1;
                self.in_slots -= 1;
            }
        }
        if self.slots.is_empty() {
            self.slots.shrink_to(1024);
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
    pub fn has_parked_fresh(&self) -> bool {
        !self.parked_fresh.is_empty()
    }

    /// Whether a live job is kept in the side map (never served as fresh).
    pub fn is_straggler(&self, id: u64) -> bool {
        id < self.base && self.stragglers.contains_key(&id)
    }

    /// The first id at or after `from` in id order whose state is
    /// [`SlotState::Fresh`] (stragglers are never fresh).
    pub fn next_fresh(&self, from: u64) -> Option<u64> {
        let start = from.saturating_sub(self.base);
        let start = usize::try_from(start).ok()?;
        let (a, b) = self.slots.as_slices();
        let pos = if start < a.len() {
            a[start..]
                .iter()
                .position(|s| s.state == SlotState::Fresh)
                .map(|p| p + start)
                .or_else(|| {
                    b.iter()
                        .position(|s| s.state == SlotState::Fresh)
                        .map(|p| p + a.len())
                })
        } else {
            let start_b = start - a.len();
            b.get(start_b..)?
                .iter()
                .position(|s| s.state == SlotState::Fresh)
                .map(|p| p + a.len() + start_b)
        };
        pos.map(|p| self.base + p as u64)
    }

    /// Live jobs of the id-ordered part with ids from `from`, looking at
    /// most `n` slots, and the id to continue from (`None` at the end).
    /// Stragglers are not included (see [`JobTable::stragglers`]).
    pub fn scan(&self, from: u64, n: usize) -> (Vec<(u64, Slot)>, Option<u64>) {
        let start = usize::try_from(from.saturating_sub(self.base)).unwrap_or(usize::MAX);
        let end = start.saturating_add(n).min(self.slots.len());
        let found = (start.min(end)..end)
            .filter_map(|i| {
                let s = self.slots[i];
                (s.state != SlotState::Empty).then_some((self.base + i as u64, s))
            })
            .collect();
        let next = (end < self.slots.len()).then_some(self.base + end as u64);
        (found, next)
    }

    /// The live jobs kept in the side map.
    pub fn stragglers(&self) -> impl Iterator<Item = (u64, &Slot)> + '_ {
        self.stragglers.iter().map(|(id, s)| (*id, s))
    }

    /// Every live job, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Slot)> + '_ {
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state != SlotState::Empty)
            .map(move |(i, s)| (base + i as u64, s))
            .chain(self.stragglers.iter().map(|(id, s)| (*id, s)))
    }

    /// The id of the first slot, the slots in id order from it, and the
    /// jobs kept aside (what a checkpoint stores).
    pub fn parts(&self) -> (u64, &VecDeque<Slot>, &IdMap<Slot>) {
        (self.base, &self.slots, &self.stragglers)
    }

    /// A table from the parts a checkpoint stored (see
    /// [`JobTable::parts`]); the caller checked that every kept-aside id
    /// is below `base`.
    pub fn from_parts(base: u64, slots: VecDeque<Slot>, stragglers: IdMap<Slot>) -> JobTable {
        let in_slots = slots.iter().filter(|s| s.state != SlotState::Empty).count();
        JobTable {
            base,
            slots,
            stragglers,
            in_slots,
            parked_fresh: Vec::new(),
        }
    }

    /// Heap bytes held, for the memory report.
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.stragglers.capacity() * (std::mem::size_of::<(u64, Slot)>() + 1)
    }
}

#[cfg(test)]
mod tests {
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
        assert!(t.slots.len() < 10);
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
        assert!(t.slots.len() < 8192, "{} slots kept", t.slots.len());
        assert_eq!(t.get(0).unwrap().state, SlotState::InFlight);
        assert!(t.remove(0).is_some());
        assert!(t.is_empty());
    }
}
