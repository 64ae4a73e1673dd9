//! Message groups: jobs of one group are delivered one at a time, in
//! enqueue (id) order.
//!
//! A group's *head*, its live job with the smallest id, is the only one in
//! the delivery order; it holds the group while it is ready, leased, or
//! waiting out a retry, until it is finished (acked or dead-lettered).
//! The other live jobs of the group are *blocked*: kept here with their
//! due time, in no delivery structure, until they become the head.
//! A group lives in memory only while it has a live job, so memory
//! follows the live grouped jobs, not the groups ever seen; a group of one
//! job costs one map entry and no allocation of its own.
//!
//! Invariants (asserted by [`Groups::check`]): every grouped job is in
//! exactly one group, as its head or among its blocked jobs, in id order;
//! `blocked` counts the blocked jobs.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;

use crate::cowmap::{Captured, CowIdMap, CowMap};

/// One group's live jobs.
#[derive(Debug, Clone)]
struct Group {
    head: u64,
    /// Blocked jobs after the head, in id order, with their due times.
    rest: VecDeque<(u64, u64)>,
}

/// Live jobs by group.
#[derive(Debug, Default)]
pub struct Groups {
    /// Live grouped jobs: their group's hash.
    group_of: CowIdMap<u128>,
    groups: CowMap<u128, Group, RandomState>,
    blocked: u64,
}

/// A [`Groups`] at one moment (see [`Groups::capture`]).
#[derive(Debug)]
pub struct CapturedGroups {
    members: Captured<u64, u128>,
    groups: Captured<u128, Group, RandomState>,
}

impl CapturedGroups {
    /// Every live grouped job and its group hash.
    pub fn members(&self) -> impl Iterator<Item = (u64, u128)> + '_ {
        self.members.iter().map(|(id, g)| (*id, *g))
    }

    /// Blocked jobs and their due times.
    pub fn blocked(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.groups.iter().flat_map(|(_, g)| g.rest.iter().copied())
    }
}

impl Groups {
    /// Adds a live job (ids of one group come in increasing order) due at
    /// `due`; returns whether it is its group's head (free to be served),
    /// else it is blocked behind the head.
    pub fn add(&mut self, id: u64, group: u128, due: u64) -> bool {
        self.group_of.insert(id, group);
        match self.groups.get_mut(&group) {
            None => {
                self.groups.insert(
                    group,
                    Group {
                        head: id,
                        rest: VecDeque::new(),
                    },
                );
                true
            }
            Some(g) => {
                g.rest.push_back((id, due));
                self.blocked += 1;
                false
            }
        }
    }

    /// Whether `id` is blocked behind its group's head.
    pub fn is_blocked(&self, id: u64) -> bool {
        if self.group_of.is_empty() {
            return false;
        }
        self.group_of
            .get(&id)
            .and_then(|g| self.groups.get(g))
            .is_some_and(|g| g.head != id)
    }

    /// Sets the due time a blocked job will have once it is the head.
    pub fn set_due(&mut self, id: u64, due: u64) {
        let Some(g) = self.group_of.get(&id).and_then(|g| self.groups.get_mut(g)) else {
            return;
        };
        if let Some(entry) = g.rest.iter_mut().find(|(j, _)| *j == id) {
            entry.1 = due;
        }
    }

    /// The due time of a blocked job.
    pub fn blocked_due(&self, id: u64) -> Option<u64> {
        let g = self.groups.get(self.group_of.get(&id)?)?;
        g.rest.iter().find(|(j, _)| *j == id).map(|&(_, due)| due)
    }

    /// A live job is finished (acked or dead): it leaves its group. If it
    /// was the head, the next job, `(id, due)`, is the head now and must
    /// enter the delivery order.
    pub fn finish(&mut self, id: u64) -> Option<(u64, u64)> {
        if self.group_of.is_empty() {
            return None;
        }
        let group = self.group_of.remove(&id)?;
        let g = self.groups.get_mut(&group)?;
        if g.head != id {
            let at = g.rest.iter().position(|(j, _)| *j == id)?;
            g.rest.remove(at);
            self.blocked -= 1;
            return None;
        }
        match g.rest.pop_front() {
            Some((next, due)) => {
                g.head = next;
                self.blocked -= 1;
                if g.rest.is_empty() {
                    g.rest = VecDeque::new();
                }
                Some((next, due))
            }
            None => {
                self.groups.remove(&group);
                self.shrink();
                None
            }
        }
    }

    /// Gives memory back once the maps are mostly empty (a quarter full,
    /// past a small floor), halving to twice what they hold: a burst of
    /// a million groups does not leave a million groups' worth of table
    /// behind it. Amortised O(1): a shrink follows at least as many
    /// removals as the entries it moves.
    fn shrink(&mut self) {
        const FLOOR: usize = 1024;
        if self.group_of.capacity() > FLOOR && self.group_of.len() * 4 < self.group_of.capacity() {
            self.group_of.shrink_to(self.group_of.len() * 2);
        }
        if self.groups.capacity() > FLOOR && self.groups.len() * 4 < self.groups.capacity() {
            self.groups.shrink_to(self.groups.len() * 2);
        }
    }

    /// The grouped jobs as they are now (for a checkpoint: O(1) in their
    /// number).
    pub fn capture(&self) -> CapturedGroups {
        CapturedGroups {
            members: self.group_of.capture(),
            groups: self.groups.capture(),
        }
    }

    /// Blocked jobs and their due times.
    pub fn blocked(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.groups.values().flat_map(|g| g.rest.iter().copied())
    }

    /// Jobs blocked behind their group's head.
    pub fn blocked_count(&self) -> u64 {
        self.blocked
    }

    /// Heap bytes held, for the memory report.
    pub fn heap_bytes(&self) -> usize {
        self.group_of.capacity() * 25
            + self.groups.capacity() * (16 + std::mem::size_of::<Group>() + 1)
            + self.blocked as usize * 16
    }

    /// Asserts the invariants in the module docs (tests only; O(n)).
    pub fn check(&self) {
        let mut n = 0u64;
        let mut members = 0usize;
        for (hash, g) in self.groups.iter() {
            assert_eq!(self.group_of.get(&g.head), Some(hash), "head of a group");
            let mut last = g.head;
            for &(id, _) in &g.rest {
                assert!(id > last, "group members out of id order");
                assert_eq!(self.group_of.get(&id), Some(hash), "member of a group");
                last = id;
            }
            n += g.rest.len() as u64;
            members += 1 + g.rest.len();
        }
        assert_eq!(n, self.blocked, "blocked count");
        assert_eq!(members, self.group_of.len(), "grouped jobs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_serves_one_job_at_a_time_in_id_order() {
        let mut g = Groups::default();
        assert!(g.add(1, 7, 100));
        assert!(!g.add(2, 7, 200));
        assert!(g.add(3, 8, 300));
        assert!(!g.add(4, 7, 400));
        assert!(g.is_blocked(2) && g.is_blocked(4) && !g.is_blocked(1));
        assert_eq!(g.blocked_count(), 2);
        g.set_due(4, 450);
        assert_eq!(g.blocked_due(4), Some(450));
        g.check();
        assert_eq!(g.finish(1), Some((2, 200)));
        assert_eq!(g.finish(3), None);
        assert_eq!(g.finish(2), Some((4, 450)));
        assert_eq!(g.finish(4), None);
        assert_eq!(g.blocked_count(), 0);
        assert!(g.groups.is_empty() && g.group_of.is_empty());
        g.check();
    }
}
