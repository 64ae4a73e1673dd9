//! The delivery order over priority levels: one [`Delivery`] per level.
//!
//! Jobs of the default level (`Normal`) are kept exactly as a queue
//! without priorities keeps them: fresh ones served by the job table's
//! cursor, waiting ones in the `Normal` heaps. A job of another level is
//! never fresh: it waits in its level's heaps from its enqueue (due at
//! its enqueue time), so FIFO within a level is the `(due, id)` order of
//! today. Only jobs of another level are in `level_of`, so a queue that
//! uses no priority pays one empty map, and `peek` is today's code.
//!
//! Which level is served when several have ready jobs is
//! [`crate::priority::choose`]; the cycle position moves only when the
//! chosen job is taken ([`Levels::taken`]).
//!
//! Invariants (asserted by [`Levels::check`]): each level's heaps hold
//! the invariants of [`Delivery`]; a waiting job is in the heaps of the
//! level `level_of` gives it (Normal when absent), and only there.

use crate::cowmap::{Captured, CowIdMap};
use crate::delivery::Delivery;
use crate::format::record::PRIORITY_NORMAL;
use crate::priority::{choose, CYCLE_LEN};

const NORMAL: usize = PRIORITY_NORMAL as usize;

/// Waiting jobs of every level and the fresh count of `Normal`.
#[derive(Debug, Default)]
pub struct Levels {
    lanes: [Delivery; 4],
    /// Live jobs whose level is not Normal: their priority byte.
    /// Copy-on-write: a checkpoint captures it by pointer.
    level_of: CowIdMap<u8>,
    /// Position in the cycle.
    turn: usize,
    /// The job the last choice picked, and the position after it.
    picked: Option<(u64, usize)>,
}

/// The position of a [`Levels`]' cycle ([`Levels::turn`]).
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    turn: usize,
    picked: Option<(u64, usize)>,
}

/// A [`Levels`] at one moment (see [`Levels::capture`]).
#[derive(Debug)]
pub struct CapturedLevels {
    waiting: Vec<Captured<u64, u64>>,
    levels: Captured<u64, u8>,
}

impl CapturedLevels {
    /// Every waiting job with its due time.
    pub fn waiting(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let lanes = self.waiting.iter();
        lanes.flat_map(|c| c.iter().map(|(id, due)| (*id, *due)))
    }

    /// The live jobs of a level other than Normal, with their priority
    /// byte (every other live job is Normal).
    pub fn other_levels(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.levels.iter().map(|(id, level)| (*id, *level))
    }
}

impl Levels {
    /// Fresh jobs (all of level Normal).
    pub fn fresh(&self) -> u64 {
        self.lanes[NORMAL].fresh()
    }

    /// Counts a new fresh job.
    pub fn add_fresh(&mut self) {
        self.lanes[NORMAL].add_fresh();
    }

    /// Counts `n` fresh jobs at once (open).
    pub fn add_fresh_n(&mut self, n: u64) {
        self.lanes[NORMAL].add_fresh_n(n);
    }

    /// Uncounts a fresh job that was leased, finished or parked.
    pub fn take_fresh(&mut self) {
        self.lanes[NORMAL].take_fresh();
    }

    /// Sets the level of a live job (before it is made waiting).
    #[inline]
    pub fn set_level(&mut self, id: u64, level: u8) {
        let normal = usize::from(level) == NORMAL || level > 3;
        // A queue without levels has an empty map: no hash per enqueue.
        if normal && self.level_of.is_empty() {
            return;
        }
        self.set_level_mapped(id, level, normal);
    }

    /// [`Levels::set_level`] when the map is used: `normal` (the level is
    /// Normal) takes `id` out of it.
    fn set_level_mapped(&mut self, id: u64, level: u8, normal: bool) {
        if normal {
            self.level_of.remove(&id);
        } else {
            self.level_of.insert(id, level);
        }
    }

    /// Forgets the level of a job that is no longer live.
    pub fn forget(&mut self, id: u64) {
        if !self.level_of.is_empty() {
            self.level_of.remove(&id);
        }
    }

    /// The waiting jobs of every level and the levels other than Normal
    /// as they are now (for a checkpoint: O(1) in their number).
    pub fn capture(&self) -> CapturedLevels {
        CapturedLevels {
            waiting: self.lanes.iter().map(Delivery::capture_waiting).collect(),
            levels: self.level_of.capture(),
        }
    }

    /// The priority byte of a live job.
    pub fn level(&self, id: u64) -> u8 {
        if self.level_of.is_empty() {
            return PRIORITY_NORMAL;
        }
        self.level_of.get(&id).copied().unwrap_or(PRIORITY_NORMAL)
    }

    fn lane(&self, id: u64) -> usize {
        usize::from(self.level(id))
    }

    /// Adds a waiting job to its level. The caller guarantees it is not
    /// waiting already.
    pub fn push_waiting(&mut self, id: u64, due: u64) {
        let lane = self.lane(id);
        self.lanes[lane].push_waiting(id, due);
    }

    /// The due time of a waiting job.
    pub fn due_of(&self, id: u64) -> Option<u64> {
        self.lanes[self.lane(id)].due_of(id)
    }

    /// Whether `id` is waiting.
    pub fn is_waiting(&self, id: u64) -> bool {
        self.lanes[self.lane(id)].is_waiting(id)
    }

    /// Moves jobs due at or before `now` to the ready heaps.
    pub fn promote(&mut self, now: u64) {
        for lane in &mut self.lanes {
            lane.promote(now);
        }
    }

    /// Whether a level other than Normal has waiting jobs.
    pub fn uses_levels(&self) -> bool {
        !self.level_of.is_empty()
            && (0..4).any(|l| l != NORMAL && self.lanes[l].waiting_counts() != (0, 0))
    }

    /// The first due waiting job of level Normal, `(due, id)`.
    pub fn peek_normal(&mut self, now: u64) -> Option<(u64, u64)> {
        self.lanes[NORMAL].peek_due(now)
    }

    /// The job to serve among `normal` (the Normal level's candidate,
    /// `(id, from_waiting)`) and the first due job of each other level
    /// with an id below `limit`; the choice is remembered so that
    /// [`Levels::taken`] moves the cycle.
    pub fn pick(
        &mut self,
        now: u64,
        limit: u64,
        normal: Option<(u64, bool)>,
    ) -> Option<(u64, bool)> {
        let mut heads = [None; 4];
        heads[NORMAL] = normal;
        for (level, head) in heads.iter_mut().enumerate() {
            if level != NORMAL {
                *head = self.lanes[level]
                    .peek_due(now)
                    .filter(|&(_, id)| id < limit)
                    .map(|(_, id)| (id, true));
            }
        }
        let ready = heads.map(|h| h.is_some());
        let (level, next) = choose(self.turn, ready)?;
        let head = heads[usize::from(level)]?;
        self.picked = Some((head.0, next));
        Some(head)
    }

    /// Takes the waiting job `id` (the first due of its level).
    pub fn pop_due(&mut self, id: u64) {
        let lane = self.lane(id);
        self.lanes[lane].pop_due(id);
    }

    /// Takes waiting job `id` out of its level's heaps, wherever it is
    /// in them (a cancel). Returns whether it was waiting.
    pub fn remove_waiting(&mut self, id: u64) -> bool {
        let lane = self.lane(id);
        self.lanes[lane].remove_waiting(id)
    }

    /// Where the cycle stands, for a batch that takes jobs before it
    /// writes their lease and may give them back ([`Levels::rewind`]).
    pub fn turn(&self) -> Turn {
        Turn {
            turn: self.turn,
            picked: self.picked,
        }
    }

    /// Puts the cycle back where [`Levels::turn`] saw it.
    pub fn rewind(&mut self, t: Turn) {
        self.turn = t.turn;
        self.picked = t.picked;
    }

    /// Job `id` was taken to be served: if [`Levels::pick`] chose it, the
    /// cycle moves on.
    pub fn taken(&mut self, id: u64) {
        if let Some((picked, next)) = self.picked.take() {
            if picked == id {
                self.turn = next % CYCLE_LEN;
            }
        }
    }

    /// Waiting jobs that are due (after the last promotion), and not.
    pub fn waiting_counts(&self) -> (u64, u64) {
        self.lanes.iter().fold((0, 0), |(r, d), lane| {
            let (lr, ld) = lane.waiting_counts();
            (r + lr, d + ld)
        })
    }

    /// The soonest due time of a job not yet due.
    pub fn next_due(&self) -> Option<u64> {
        self.lanes.iter().filter_map(Delivery::next_due).min()
    }

    /// Heap bytes held, for the memory report.
    pub fn heap_bytes(&self) -> usize {
        self.lanes.iter().map(Delivery::heap_bytes).sum::<usize>() + self.level_of.capacity() * 10
    }

    /// Asserts the invariants in the module docs (tests only; O(n)).
    pub fn check(&self, fresh_in_table: u64) {
        for (level, lane) in self.lanes.iter().enumerate() {
            lane.check(if level == NORMAL { fresh_in_table } else { 0 });
            for id in lane.waiting_ids() {
                assert_eq!(self.lane(id), level, "job {id} waits in the wrong level");
            }
        }
    }

    /// The ids of every waiting job.
    pub fn waiting_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.lanes.iter().flat_map(Delivery::waiting_ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_served_by_the_cycle_and_fifo_within() {
        let mut l = Levels::default();
        for id in 1..=20 {
            l.set_level(id, 3);
            l.push_waiting(id, 0);
        }
        l.set_level(21, 0);
        l.push_waiting(21, 0);
        assert!(l.uses_levels());
        let mut order = Vec::new();
        while let Some((id, from_waiting)) = l.pick(0, u64::MAX, None) {
            assert!(from_waiting);
            l.pop_due(id);
            l.taken(id);
            order.push(id);
        }
        // Urgent, Urgent (slot 2), Urgent (4), Urgent (6), then Low (7).
        assert_eq!(&order[..6], &[1, 2, 3, 4, 21, 5]);
        assert_eq!(order.len(), 21);
        l.check(0);
    }
}
