//! The lease table: who holds which job, until when.
//!
//! Deadlines are on the monotonic clock ([`crate::Clock::monotonic_ms`]):
//! leases do not outlive the process, so they never need wall time, and a
//! wall clock stepped forward does not expire them.
//!
//! Invariants: `expiries` holds an entry `(deadline, id, token)` for every
//! held lease (plus stale entries of settled or extended leases, which are
//! skipped and dropped in bulk once they outnumber the live ones).

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::BinaryHeap;

use crate::idhash::IdMap;

/// A lease held by a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Matches the receipt's token.
    pub token: u64,
    /// When the lease expires (monotonic ms).
    pub deadline: u64,
}

/// Held leases and their deadlines.
#[derive(Debug, Default)]
pub struct Leases {
    held: IdMap<Lease>,
    expiries: BinaryHeap<Reverse<(u64, u64, u64)>>,
}

impl Leases {
    /// Records a new lease.
    pub fn insert(&mut self, id: u64, lease: Lease) {
        let old = self.held.insert(id, lease);
        assert!(old.is_none(), "job {id} leased twice");
        self.expiries
            .push(Reverse((lease.deadline, id, lease.token)));
    }

    /// The lease on `id`, if held.
    pub fn get(&self, id: u64) -> Option<Lease> {
        self.held.get(&id).copied()
    }

    /// Whether `id` is leased.
    pub fn contains(&self, id: u64) -> bool {
        self.held.contains_key(&id)
    }

    /// Held leases.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Moves a held lease's deadline. The entry of the old deadline goes
    /// stale; stale entries are dropped in bulk as in [`Leases::take`], so
    /// a lease extended for ever (a heartbeat with no ack or dequeue in
    /// between) holds memory for its live entries, not for every beat.
    pub fn extend(&mut self, id: u64, deadline: u64) {
        if let Some(lease) = self.held.get_mut(&id) {
            lease.deadline = deadline;
            self.expiries.push(Reverse((deadline, id, lease.token)));
            self.drop_stale();
        }
    }

    /// The first held lease whose deadline is at or before `now`, without
    /// ending it.
    pub fn first_expired(&mut self, now: u64) -> Option<(u64, Lease)> {
        while let Some(&Reverse((deadline, id, token))) = self.expiries.peek() {
            if deadline > now {
                return None;
            }
            if self.held.get(&id) == Some(&Lease { token, deadline }) {
                return Some((id, Lease { token, deadline }));
            }
            self.expiries.pop();
        }
        None
    }

    /// Ends the lease on `id`. Stale expiry entries are dropped in bulk
    /// once they outnumber the held leases, so memory follows the leases
    /// held, not the dequeue rate.
    pub fn remove(&mut self, id: u64) {
        self.take(id);
    }

    /// Ends the lease on `id` and returns it if it is held with `token`
    /// and its deadline is after `now` (a receipt's valid lease);
    /// otherwise changes nothing (see [`Leases::take`]).
    ///
    /// One lookup of `id` for the check and the removal (an ack batch
    /// calls this once per receipt).
    pub fn take_valid(&mut self, id: u64, token: u64, now: u64) -> Option<Lease> {
        let Entry::Occupied(held) = self.held.entry(id) else {
            return None;
        };
        if held.get().token != token || held.get().deadline <= now {
            return None;
        }
        let lease = held.remove();
        self.taken();
        Some(lease)
    }

    /// Ends the lease on `id` and returns it, if held (see
    /// [`Leases::remove`]).
    #[inline]
    pub fn take(&mut self, id: u64) -> Option<Lease> {
        let lease = self.held.remove(&id);
        self.taken();
        lease
    }

    /// After a lease was taken out of `held`: its expiry entries go once
    /// no lease is held, or in bulk once stale ones dominate. The test is
    /// inline, the work (rare) out of line.
    #[inline]
    fn taken(&mut self) {
        if self.held.is_empty() || self.stale_dominate() {
            self.tidy();
        }
    }

    /// Whether the expiry entries outnumber the held leases twice over,
    /// plus 1,024 (see [`Leases::drop_stale`]).
    fn stale_dominate(&self) -> bool {
        self.expiries.len() > 2 * self.held.len() + 1024
    }

    /// [`Leases::taken`]'s work.
    #[inline(never)]
    fn tidy(&mut self) {
        if self.held.is_empty() {
            // No lease held: every expiry entry is stale (no scan needed).
            self.expiries.clear();
            if self.expiries.capacity() > 1024 {
                self.expiries.shrink_to(1024);
            }
            if self.held.capacity() > 1024 {
                self.held.shrink_to(1024);
            }
            return;
        }
        self.drop_stale();
    }

    /// Drops the stale expiry entries once they outnumber the held leases
    /// (twice over, plus 1,024: amortised O(1) per entry pushed).
    fn drop_stale(&mut self) {
        if self.stale_dominate() {
            let held = &self.held;
            self.expiries.retain(|Reverse((deadline, id, token))| {
                held.get(id)
                    == Some(&Lease {
                        token: *token,
                        deadline: *deadline,
                    })
            });
            if self.held.capacity() > 4 * self.held.len() + 1024 {
                self.held.shrink_to_fit();
            }
            if self.expiries.capacity() > 4 * self.expiries.len() + 1024 {
                self.expiries.shrink_to_fit();
            }
        }
    }

    /// The soonest deadline (possibly of a stale entry: waking early is
    /// harmless).
    #[inline]
    pub fn next_deadline(&self) -> Option<u64> {
        self.expiries.peek().map(|Reverse((d, _, _))| *d)
    }

    /// The ids of held leases.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.held.keys().copied()
    }

    /// Heap bytes held, for the memory report.
    pub fn heap_bytes(&self) -> usize {
        self.held.capacity() * 33 + self.expiries.capacity() * 24
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_valid_takes_only_a_held_unexpired_lease_of_the_token() {
        let mut leases = Leases::default();
        leases.insert(
            7,
            Lease {
                token: 1,
                deadline: 100,
            },
        );
        assert_eq!(leases.take_valid(7, 2, 50), None, "another token");
        assert_eq!(leases.take_valid(7, 1, 100), None, "expired");
        assert_eq!(leases.take_valid(8, 1, 50), None, "not held");
        assert!(leases.contains(7), "a refused take changes nothing");
        let lease = leases.take_valid(7, 1, 99);
        assert_eq!(lease.map(|l| l.token), Some(1));
        assert!(!leases.contains(7));
    }

    /// A review found a heartbeat's extensions growing the expiry heap
    /// by an entry a beat while nothing took a lease (6 M extends: 200 MB).
    #[test]
    fn extending_a_lease_for_ever_holds_bounded_memory() {
        let mut leases = Leases::default();
        for id in 0..3 {
            leases.insert(
                id,
                Lease {
                    token: id,
                    deadline: 100,
                },
            );
        }
        for beat in 0..100_000u64 {
            leases.extend(beat % 3, 200 + beat);
        }
        assert!(
            leases.expiries.len() <= 2 * 3 + 1024 + 1,
            "{}",
            leases.expiries.len()
        );
        assert!(leases.heap_bytes() < 200_000, "{}", leases.heap_bytes());
        // The live deadlines are still the ones that count.
        assert_eq!(leases.first_expired(200 + 99_996), None);
        let (id, lease) = leases.first_expired(200 + 99_997).expect("the oldest beat");
        assert_eq!((id, lease.deadline), (99_997 % 3, 200 + 99_997));
    }
}
