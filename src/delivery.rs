//! The delivery order of ready and waiting jobs (guarantee 6).
//!
//! *Fresh* jobs (never leased or delayed) are served by a cursor over the
//! job table in id order; this structure only counts them. *Waiting* jobs
//! (delayed, retried, expired, redriven) have a due time: they sit in
//! `future` until the queue's time reaches it, then move once to `ready`.
//! Both heaps are ordered by `(due, id)`, so serving the smaller of the
//! fresh cursor's `(enqueued, id)` and `ready`'s top keeps the order, and
//! the counts of ready and delayed jobs are known without a scan.
//!
//! Invariants (asserted by [`Delivery::check`]):
//! - `due_of` holds exactly the waiting jobs, each with its due time;
//! - every waiting job has exactly one heap entry equal to `(due_of, id)`,
//!   in `ready` if its due time is at or before `promoted_to`, else in
//!   `future`; heaps hold nothing else;
//! - `ready.len()` is the number of waiting jobs that are due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::cowmap::{Captured, CowIdMap};

type Heap = BinaryHeap<Reverse<(u64, u64)>>;

/// Fresh count and waiting jobs in `(due, id)` order.
#[derive(Debug, Default)]
pub struct Delivery {
    fresh: u64,
    future: Heap,
    ready: Heap,
    /// Copy-on-write: a checkpoint captures it by pointer.
    due_of: CowIdMap<u64>,
    promoted_to: u64,
}

impl Delivery {
    /// Fresh jobs.
    pub fn fresh(&self) -> u64 {
        self.fresh
    }

    /// Counts a new fresh job.
    pub fn add_fresh(&mut self) {
        self.fresh += 1;
    }

    /// Counts `n` fresh jobs at once (open).
    pub fn add_fresh_n(&mut self, n: u64) {
        self.fresh += n;
    }

    /// Uncounts a fresh job that was leased, finished or parked.
    pub fn take_fresh(&mut self) {
        assert!(self.fresh > 0, "taking a fresh job when none is counted");
        self.fresh -= 1;
    }

    /// Adds a waiting job. The caller guarantees it is not waiting already.
    pub fn push_waiting(&mut self, id: u64, due: u64) {
        let old = self.due_of.insert(id, due);
        assert!(old.is_none(), "job {id} is waiting twice");
        if due <= self.promoted_to {
            self.ready.push(Reverse((due, id)));
        } else {
            self.future.push(Reverse((due, id)));
        }
    }

    /// The due time of a waiting job.
    pub fn due_of(&self, id: u64) -> Option<u64> {
        self.due_of.get(&id).copied()
    }

    /// Whether `id` is waiting.
    pub fn is_waiting(&self, id: u64) -> bool {
        self.due_of.contains_key(&id)
    }

    /// Moves jobs due at or before `now` to the ready heap (each job moves
    /// once, so the cost is amortised over the jobs).
    pub fn promote(&mut self, now: u64) {
        self.promoted_to = self.promoted_to.max(now);
        while let Some(&Reverse((due, id))) = self.future.peek() {
            if due > self.promoted_to {
                break;
            }
            self.future.pop();
            self.ready.push(Reverse((due, id)));
        }
    }

    /// The first due waiting job, `(due, id)`, after promoting to `now`.
    pub fn peek_due(&mut self, now: u64) -> Option<(u64, u64)> {
        self.promote(now);
        self.ready.peek().map(|Reverse(k)| *k)
    }

    /// Takes the job [`Delivery::peek_due`] returned.
    pub fn pop_due(&mut self, id: u64) {
        let top = self.ready.pop().map(|Reverse((_, top))| top);
        assert_eq!(top, Some(id), "popping a job that is not first");
        self.due_of.remove(&id);
    }

    /// Takes waiting job `id` out wherever it is in the heaps (a cancel):
    /// O(waiting jobs), where [`Delivery::pop_due`] is O(log n). Returns
    /// whether it was waiting.
    pub fn remove_waiting(&mut self, id: u64) -> bool {
        let Some(due) = self.due_of.remove(&id) else {
            return false;
        };
        let heap = if due <= self.promoted_to {
            &mut self.ready
        } else {
            &mut self.future
        };
        let before = heap.len();
        heap.retain(|&Reverse(entry)| entry != (due, id));
        assert_eq!(heap.len() + 1, before, "job {id}'s heap entry");
        true
    }

    /// Waiting jobs that are due (after the last promotion), and not.
    pub fn waiting_counts(&self) -> (u64, u64) {
        let ready = self.ready.len() as u64;
        (ready, self.due_of.len() as u64 - ready)
    }

    /// The soonest due time of a job not yet due.
    pub fn next_due(&self) -> Option<u64> {
        self.future.peek().map(|Reverse((d, _))| *d)
    }

    /// Heap bytes held, for the memory report.
    pub fn heap_bytes(&self) -> usize {
        (self.future.capacity() + self.ready.capacity()) * 16 + self.due_of.capacity() * 17
    }

    /// Asserts the invariants in the module docs (tests only; O(n)).
    pub fn check(&self, fresh_in_table: u64) {
        assert_eq!(self.fresh, fresh_in_table, "fresh count");
        assert_eq!(
            self.future.len() + self.ready.len(),
            self.due_of.len(),
            "one heap entry per waiting job"
        );
        for Reverse((due, id)) in self.ready.iter() {
            assert!(*due <= self.promoted_to, "job {id} ready before due");
            assert_eq!(self.due_of.get(id), Some(due), "ready entry of job {id}");
        }
        for Reverse((due, id)) in self.future.iter() {
            assert!(*due > self.promoted_to, "job {id} due but not promoted");
            assert_eq!(self.due_of.get(id), Some(due), "future entry of job {id}");
        }
    }

    /// The ids of every waiting job.
    pub fn waiting_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.due_of.keys().copied()
    }

    /// The waiting jobs and their due times as they are now (for a
    /// checkpoint: O(1) in their number).
    pub fn capture_waiting(&self) -> Captured<u64, u64> {
        self.due_of.capture()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotes_in_order_and_counts() {
        let mut d = Delivery::default();
        d.push_waiting(3, 30);
        d.push_waiting(1, 10);
        d.push_waiting(2, 10);
        assert_eq!(d.waiting_counts(), (0, 3));
        assert_eq!(d.peek_due(5), None);
        assert_eq!(d.peek_due(10), Some((10, 1)));
        assert_eq!(d.waiting_counts(), (2, 1));
        d.pop_due(1);
        assert_eq!(d.peek_due(10), Some((10, 2)));
        d.pop_due(2);
        // A job pushed already due goes straight to ready.
        d.push_waiting(4, 7);
        assert_eq!(d.peek_due(10), Some((7, 4)));
        assert_eq!(d.next_due(), Some(30));
        d.check(0);
    }
}
