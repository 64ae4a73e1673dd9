//! Consumers that wait for several queues at once, grouped by the queues
//! they wait for.
//!
//! A pool over several queues (`MultiQueue`) blocks its threads and tasks
//! on the set of queues it serves. Each distinct set gets a condvar and a
//! waker list of its own, so a job made ready in queue `q` wakes one
//! consumer of each set that holds `q` (every consumer of those sets for a
//! batch), and none of a set without `q`. Before, all such consumers of a
//! store shared one condvar that every job of every queue notified in
//! full.
//!
//! Sets are kept for the store's life and looked up by the queues they
//! hold, whatever the order a consumer lists them in.
//! At most [`MAX_SETS`] are kept apart: consumers of further sets share
//! the store's fallback condvar and list, which every wake notifies in
//! full, as all of them did before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::named::MAX_QUEUES;
use crate::worker::async_wait::AsyncWait;

/// Most distinct sets of queues whose consumers are woken apart.
pub(crate) const MAX_SETS: usize = 64;

/// Words of a set's membership bitmap (one bit per queue id).
const WORDS: usize = MAX_QUEUES / 64 + 1;

/// The blocked consumers of one set of queues.
pub(crate) struct QueueSet {
    /// Bit `q` set for each queue `q` of the set (the lookup key).
    members: [u64; WORDS],
    /// Threads waiting for this set.
    threads: Condvar,
    /// How many threads wait on `threads` (changed under the store's lock).
    waiting: AtomicUsize,
    /// Tasks waiting for this set.
    tasks: AsyncWait,
}

/// The membership bitmap of `queues` (ids at most [`MAX_QUEUES`]).
fn members(queues: &[u16]) -> [u64; WORDS] {
    let mut members = [0_u64; WORDS];
    for &q in queues {
        if let Some(word) = members.get_mut(usize::from(q) / 64) {
            *word |= 1 << (q % 64);
        }
    }
    members
}

impl QueueSet {
    fn new(members: [u64; WORDS]) -> QueueSet {
        QueueSet {
            members,
            threads: Condvar::new(),
            waiting: AtomicUsize::new(0),
            tasks: AsyncWait::default(),
        }
    }

    fn holds(&self, queue: u16) -> bool {
        self.members
            .get(usize::from(queue) / 64)
            .is_some_and(|word| word & (1 << (queue % 64)) != 0)
    }

    /// Waits, releasing the store's lock `st`, until woken or `timeout`.
    pub(crate) fn wait<T>(&self, st: &mut MutexGuard<'_, T>, timeout: Duration) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.threads.wait_for(st, timeout);
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// The list its tasks take their epoch from and wait on.
    #[cfg(any(feature = "tokio", test))]
    pub(crate) fn tasks(&self) -> &AsyncWait {
        &self.tasks
    }

    /// Wakes one thread and one task (`all`: every one); returns how many
    /// threads it woke.
    fn wake(&self, all: bool) -> usize {
        if all {
            self.tasks.wake_all();
        } else {
            self.tasks.wake_one();
        }
        if self.waiting.load(Ordering::Acquire) == 0 {
            return 0;
        }
        if all {
            self.threads.notify_all()
        } else {
            usize::from(self.threads.notify_one())
        }
    }
}

/// The store's sets of queues (see the module documentation).
pub(crate) struct QueueSets {
    /// Boxed: about 250 bytes a set, made on first use.
    sets: Box<[OnceLock<Box<QueueSet>>]>,
    /// How many of `sets` are made (each made before this counts it).
    made: AtomicUsize,
    /// Held while a set is made, so that two consumers of one new set make
    /// it once.
    making: Mutex<()>,
}

impl Default for QueueSets {
    fn default() -> QueueSets {
        QueueSets {
            sets: (0..MAX_SETS).map(|_| OnceLock::new()).collect(),
            made: AtomicUsize::new(0),
            making: Mutex::new(()),
        }
    }
}

impl QueueSets {
    fn made(&self) -> impl Iterator<Item = &QueueSet> {
        let made = self.made.load(Ordering::Acquire).min(MAX_SETS);
        self.sets[..made]
            .iter()
            .filter_map(OnceLock::get)
            .map(|set| &**set)
    }

    /// The set for `queues`, made on first use; `None` once [`MAX_SETS`]
    /// are made, or for an id past [`MAX_QUEUES`] (the caller waits on the
    /// fallback, which every wake notifies).
    pub(crate) fn of(&self, queues: &[u16]) -> Option<&QueueSet> {
        if queues.iter().any(|&q| usize::from(q) > MAX_QUEUES) {
            // Not a queue id: wait where every wake is seen.
            return None;
        }
        let key = members(queues);
        if let Some(set) = self.made().find(|s| s.members == key) {
            return Some(set);
        }
        let _making = self.making.lock();
        if let Some(set) = self.made().find(|s| s.members == key) {
            return Some(set);
        }
        let at = self.made.load(Ordering::Acquire);
        let slot = self.sets.get(at)?;
        let set = slot.get_or_init(|| Box::new(QueueSet::new(key)));
        self.made.store(at + 1, Ordering::Release);
        Some(set)
    }

    /// A job (`all`: several jobs) became ready in `queue`: wakes one
    /// consumer (every consumer) of each set that holds it. Returns how
    /// many threads it woke.
    pub(crate) fn wake(&self, queue: u16, all: bool) -> usize {
        self.made()
            .filter(|set| set.holds(queue))
            .map(|set| set.wake(all))
            .sum()
    }

    /// Wakes every consumer of every set; returns how many threads it woke.
    pub(crate) fn wake_all(&self) -> usize {
        self.made().map(|set| set.wake(true)).sum()
    }
}
