//! Blocked consumers, and how they are woken: one queue's at a time.
//!
//! A consumer with nothing to lease waits here until a job may have become
//! ready. In a store with named queues the consumers of one queue must not
//! wake for another queue's jobs: before this module, every enqueue in such
//! a store woke every blocked thread and task of the store, and all but one
//! looked in vain under the store's lock (8 queues with 8 idle threads
//! each: 65 µs of CPU per job against 3 µs, `examples/named_herd.rs`). So
//! each queue has a condvar of its own for threads and a list of its own
//! for async tasks, and a job made ready in a queue wakes one thread and
//! one task waiting for that queue, as a single queue's `notify_one` does.
//!
//! A consumer that waits for several queues at once (a pool over several
//! queues, `MultiQueue`) waits on the condvar and list of its set of
//! queues ([`sets`]): a job of queue `q` wakes one consumer of each set
//! that holds `q`. Past [`sets::MAX_SETS`] distinct sets, consumers share
//! a fallback condvar and list that every wake notifies in full.
//!
//! No wake is missed:
//! * A thread looks for a job and waits under the store's lock, which the
//!   wait releases atomically; every wake follows the state change it
//!   announces, made under that lock (a waiter either saw the change or
//!   was waiting when the wake came).
//! * A task takes its list's epoch before it looks (see `AsyncWait`); a
//!   queue's list is created (and the several-queue list marked used) by
//!   the task before its first look, under no lock but before the look
//!   takes the store's lock, so a wake that follows a change the look did
//!   not see finds the list.
//! * `waited_below` (one past the highest queue id any consumer has waited
//!   for) grows before the waiter's first look, for the same reason: a wake
//!   of every queue stops there, not at the 1,024 queues a store may have.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::{Condvar, MutexGuard};

use crate::named::{ANY_QUEUE, MAX_QUEUES};
use crate::worker::async_wait::AsyncWait;

mod sets;

use sets::QueueSets;

/// The store's blocked consumers: threads per queue, tasks per queue, and
/// those waiting for several queues.
pub(crate) struct Wakeups {
    /// Threads waiting for one queue, by queue id.
    threads: Box<[Condvar]>,
    /// Threads and tasks waiting for several queues, by set of queues.
    sets: QueueSets,
    /// Threads waiting for several queues past the sets kept apart.
    several: Condvar,
    /// How many threads wait on `several` (changed under the store's lock).
    several_waiting: AtomicUsize,
    /// Tasks waiting for one queue, by queue id (made on first use; about
    /// 100 bytes each, so not for all 1,024 ids up front).
    tasks: Box<[OnceLock<Box<AsyncWait>>]>,
    /// Tasks waiting for several queues past the sets kept apart.
    several_tasks: AsyncWait,
    /// Whether a task ever waited on `several_tasks`.
    several_tasks_used: AtomicBool,
    /// One past the highest queue id a thread or task waited for.
    waited_below: AtomicUsize,
}

impl Default for Wakeups {
    fn default() -> Wakeups {
        Wakeups {
            threads: (0..=MAX_QUEUES).map(|_| Condvar::new()).collect(),
            sets: QueueSets::default(),
            several: Condvar::new(),
            several_waiting: AtomicUsize::new(0),
            tasks: (0..=MAX_QUEUES).map(|_| OnceLock::new()).collect(),
            several_tasks: AsyncWait::default(),
            several_tasks_used: AtomicBool::new(false),
            waited_below: AtomicUsize::new(0),
        }
    }
}

impl Wakeups {
    /// Waits, releasing the store's lock `st`, until a job of one of
    /// `queues` may have become ready, or `timeout` passed.
    pub(crate) fn wait<T>(&self, st: &mut MutexGuard<'_, T>, queues: &[u16], timeout: Duration) {
        if let [one] = queues {
            if let Some(ready) = self.threads.get(usize::from(*one)) {
                self.waited_below
                    .fetch_max(usize::from(*one) + 1, Ordering::AcqRel);
                ready.wait_for(st, timeout);
                return;
            }
        }
        if let Some(set) = self.sets.of(queues) {
            set.wait(st, timeout);
            return;
        }
        self.several_waiting.fetch_add(1, Ordering::AcqRel);
        self.several.wait_for(st, timeout);
        self.several_waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// One job became ready in `queue`: wakes one thread and one task
    /// waiting for that queue, and one of each set of queues that holds
    /// it. Returns how many threads it woke.
    pub(crate) fn one(&self, queue: u16) -> usize {
        let at = usize::from(queue);
        let woke = self.threads.get(at).is_some_and(Condvar::notify_one);
        if let Some(tasks) = self.tasks.get(at).and_then(OnceLock::get) {
            tasks.wake_one();
        }
        usize::from(woke) + self.sets.wake(queue, false) + self.wake_several()
    }

    /// A job became ready, or was given a sooner due time, in `queue`
    /// outside an enqueue (a retry, a group's next job freed): wakes one
    /// consumer of `queue` as [`Wakeups::one`] does, every consumer of
    /// `queue` as [`Wakeups::every`] does if `several` jobs did, or every
    /// consumer if `queue` is [`ANY_QUEUE`]. Returns how many threads it
    /// woke.
    pub(crate) fn ready_in(&self, queue: u16, several: bool) -> usize {
        if queue == ANY_QUEUE {
            self.all()
        } else if several {
            self.every(queue)
        } else {
            self.one(queue)
        }
    }

    /// Several jobs became ready in `queue` (a batch): wakes every thread
    /// and task waiting for that queue, or for a set of queues that holds
    /// it. Returns how many threads it woke.
    pub(crate) fn every(&self, queue: u16) -> usize {
        let at = usize::from(queue);
        let woke = self.threads.get(at).map_or(0, Condvar::notify_all);
        if let Some(tasks) = self.tasks.get(at).and_then(OnceLock::get) {
            tasks.wake_all();
        }
        woke + self.sets.wake(queue, true) + self.wake_several()
    }

    /// Wakes every blocked consumer of every queue (a redrive, a close, a
    /// poisoned queue, or a job whose queue the caller does not know).
    /// Returns how many threads it woke.
    pub(crate) fn all(&self) -> usize {
        let below = self
            .waited_below
            .load(Ordering::Acquire)
            .min(MAX_QUEUES + 1);
        let woke: usize = self.threads[..below].iter().map(Condvar::notify_all).sum();
        for tasks in self.tasks[..below].iter().filter_map(OnceLock::get) {
            tasks.wake_all();
        }
        woke + self.sets.wake_all() + self.wake_several()
    }

    /// Wakes every consumer waiting for several queues past the sets kept
    /// apart; returns how many threads it woke.
    fn wake_several(&self) -> usize {
        if self.several_tasks_used.load(Ordering::Acquire) {
            self.several_tasks.wake_all();
        }
        if self.several_waiting.load(Ordering::Acquire) > 0 {
            return self.several.notify_all();
        }
        0
    }

    /// The list a task waiting for `queue` takes its epoch from and waits
    /// on (made on first use).
    #[cfg(any(feature = "tokio", test))]
    pub(crate) fn tasks_of(&self, queue: u16) -> &AsyncWait {
        let at = usize::from(queue);
        match self.tasks.get(at) {
            Some(slot) => slot.get_or_init(|| {
                self.waited_below.fetch_max(at + 1, Ordering::AcqRel);
                Box::default()
            }),
            // Queue ids are at most MAX_QUEUES; were one not, the task
            // would still be woken by every wake, as one waiting for
            // several queues is.
            None => {
                self.several_tasks_used.store(true, Ordering::Release);
                &self.several_tasks
            }
        }
    }

    /// The list a task waiting for the queues `queues` takes its epoch
    /// from and waits on (its set's, made on first use).
    #[cfg(any(feature = "tokio", test))]
    pub(crate) fn tasks_of_set(&self, queues: &[u16]) -> &AsyncWait {
        match self.sets.of(queues) {
            Some(set) => set.tasks(),
            None => {
                self.several_tasks_used.store(true, Ordering::Release);
                &self.several_tasks
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    /// Starts one thread per entry of `waits`, each waiting once (for up to
    /// ten minutes) for its queues, and returns once all of them wait.
    fn waiting_threads(
        wakeups: &Arc<Wakeups>,
        waits: &[&'static [u16]],
    ) -> Vec<std::thread::JoinHandle<()>> {
        let waiting = Arc::new(Mutex::new(0));
        let threads = waits
            .iter()
            .map(|&queues| {
                let (wakeups, waiting) = (wakeups.clone(), waiting.clone());
                std::thread::spawn(move || {
                    let mut n = waiting.lock();
                    *n += 1;
                    wakeups.wait(&mut n, queues, Duration::from_secs(600));
                })
            })
            .collect();
        // A thread counted itself and waited under the lock in one go: once
        // every thread is counted and the lock is ours, all of them wait.
        while *waiting.lock() < waits.len() {
            std::thread::yield_now();
        }
        threads
    }

    #[test]
    fn a_job_of_one_queue_wakes_one_thread_of_that_queue_only() {
        let wakeups = Arc::new(Wakeups::default());
        let threads = waiting_threads(&wakeups, &[&[1], &[1], &[2], &[1, 2]]);
        // One of queue 1's two threads, and the one waiting for several.
        assert_eq!(wakeups.one(1), 2);
        // Left: the other thread of queue 1 and queue 2's.
        assert_eq!(wakeups.all(), 2);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_job_wakes_one_thread_of_each_set_of_queues_that_holds_its_queue() {
        let wakeups = Arc::new(Wakeups::default());
        let threads = waiting_threads(
            &wakeups,
            &[&[1, 2], &[1, 2], &[1, 2], &[3, 4], &[3, 4], &[2, 3]],
        );
        // One of {1, 2}; none of {3, 4} or {2, 3}.
        assert_eq!(wakeups.one(1), 1);
        // Queue 2's batch: the two left of {1, 2}, and {2, 3}'s.
        assert_eq!(wakeups.every(2), 3);
        assert_eq!(wakeups.one(4), 1);
        assert_eq!(wakeups.all(), 1);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn consumers_of_the_same_queues_in_another_order_share_a_set() {
        let wakeups = Arc::new(Wakeups::default());
        let a = wakeups.sets.of(&[5, 9]).map(std::ptr::from_ref);
        assert_eq!(a, wakeups.sets.of(&[9, 5, 9]).map(std::ptr::from_ref));
        assert_ne!(a, wakeups.sets.of(&[5, 9, 10]).map(std::ptr::from_ref));
        let threads = waiting_threads(&wakeups, &[&[5, 9], &[9, 5]]);
        // One set: one of its two threads.
        assert_eq!(wakeups.one(9), 1);
        assert_eq!(wakeups.all(), 1);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn sets_past_the_limit_share_a_condvar_every_wake_notifies() {
        let wakeups = Arc::new(Wakeups::default());
        let sets: Vec<[u16; 2]> = (0..u16::try_from(sets::MAX_SETS).unwrap())
            .map(|i| [100 + i, 500 + i])
            .collect();
        for set in &sets {
            assert!(wakeups.sets.of(set).is_some());
        }
        let threads = waiting_threads(&wakeups, &[&[7, 8], &[7, 8], &[5, 6]]);
        // Past the limit: {7, 8} and {5, 6} wait on the fallback, which a
        // job of any queue wakes in full.
        assert_eq!(wakeups.one(100), 3);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_batch_wakes_every_thread_of_its_queue_only() {
        let wakeups = Arc::new(Wakeups::default());
        let threads = waiting_threads(&wakeups, &[&[3], &[3], &[4]]);
        assert_eq!(wakeups.every(3), 2);
        assert_eq!(wakeups.all(), 1);
        for t in threads {
            t.join().unwrap();
        }
    }
}
