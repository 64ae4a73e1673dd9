//! A runtime-agnostic list of wakers, woken wherever the queue wakes its
//! condvar: the async counterpart of `Queue`'s `ready` condvar.
//!
//! It has no runtime in it (only `std::task`), so the queue carries one in
//! every build; with no async waiter registered, a wake costs one atomic
//! load. Async dequeues (behind the `tokio` feature) take an [`Epoch`]
//! before they look for a ready job and then wait for [`AsyncWait::changed`]
//! since that epoch: a wake between the look and the wait is never missed.
//!
//! One job made ready wakes one waiter ([`AsyncWait::wake_one`], the
//! longest waiting), as the condvar's `notify_one` wakes one thread; before,
//! every idle task of an async pool woke for each enqueue and all but one
//! looked in vain. Unlike a thread, a woken task can be dropped before it
//! looks (a cancelled dequeue): its [`Changed`] then passes the wake on to
//! the next waiter, so a ready job is never left with every waiter asleep.
//!
//! Invariants (under the lock): `waiting == by_key.len()`; a key is in at
//! most one of `by_key` (waiting) and `woken` (woken by `wake_one`, its
//! wake not yet seen); keys only grow, so `by_key` is in waiting order.

// Without the `tokio` feature only the wakes are called (by the queue).
#![cfg_attr(not(feature = "tokio"), allow(dead_code))]

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// How many wakes had happened when a waiter looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch(u64);

/// The wakers of tasks waiting for the queue to change.
#[derive(Default)]
pub(crate) struct AsyncWait {
    epoch: AtomicU64,
    /// Registered wakers; read without the lock to skip it when zero.
    waiting: AtomicUsize,
    wakers: Mutex<Wakers>,
}

#[derive(Default)]
struct Wakers {
    next_key: u64,
    /// Waiting tasks, in the order they first waited.
    by_key: BTreeMap<u64, Waker>,
    /// Tasks woken one at a time whose future has not completed yet.
    woken: HashSet<u64>,
}

impl AsyncWait {
    /// The current epoch: take it before looking for a ready job.
    pub(crate) fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::SeqCst))
    }

    /// Wakes every waiting task: the queue changed in a way more than one
    /// of them may need to see (a batch, a close, a poisoned queue, or a
    /// store with named queues, whose tasks wait for different queues).
    pub(crate) fn wake_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let woken: Vec<Waker> = {
            let mut w = self.wakers.lock();
            self.waiting.store(0, Ordering::SeqCst);
            std::mem::take(&mut w.by_key).into_values().collect()
        };
        for waker in woken {
            waker.wake();
        }
    }

    /// Wakes the task that has waited longest: one job became ready. A
    /// task in between its look and its wait sees the epoch move and looks
    /// again as well.
    pub(crate) fn wake_one(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waker = {
            let mut w = self.wakers.lock();
            let Some((key, waker)) = w.by_key.pop_first() else {
                return;
            };
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            w.woken.insert(key);
            waker
        };
        waker.wake();
    }

    /// A future that completes once a wake happens after `since`.
    pub(crate) fn changed(&self, since: Epoch) -> Changed<'_> {
        Changed {
            wait: self,
            since,
            key: None,
            seen: false,
        }
    }

    /// How many wakes there have been (for tests of wake-ups).
    #[cfg(test)]
    pub(crate) fn wakes(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// How many tasks are registered as waiting (for tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Completes once the queue changed after an [`Epoch`]; see
/// [`AsyncWait::changed`].
pub(crate) struct Changed<'a> {
    wait: &'a AsyncWait,
    since: Epoch,
    key: Option<u64>,
    /// Completed: a wake this task was chosen for has been seen.
    seen: bool,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let wait = self.wait;
        if wait.epoch() != self.since {
            self.seen = true;
            return Poll::Ready(());
        }
        let mut w = wait.wakers.lock();
        let key = match self.key {
            Some(key) => key,
            None => {
                w.next_key += 1;
                w.next_key
            }
        };
        // Registered (and counted) before the epoch is read again, all
        // SeqCst: either this read sees a wake's bump, or the wake sees the
        // count, takes the lock after us and finds our waker.
        if w.by_key.insert(key, cx.waker().clone()).is_none() {
            wait.waiting.fetch_add(1, Ordering::SeqCst);
        }
        self.key = Some(key);
        if wait.epoch() != self.since {
            if w.by_key.remove(&key).is_some() {
                wait.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            drop(w);
            self.seen = true;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Changed<'_> {
    /// Unregisters the task; a task chosen by [`AsyncWait::wake_one`] that
    /// is dropped before it saw the wake passes the wake on.
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let pass_on = {
            let mut w = self.wait.wakers.lock();
            if w.by_key.remove(&key).is_some() {
                self.wait.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            w.woken.remove(&key) && !self.seen
        };
        if pass_on {
            self.wait.wake_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once(fut: Pin<&mut Changed<'_>>, counter: &Arc<CountWakes>) -> Poll<()> {
        let waker = Waker::from(counter.clone());
        fut.poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_wake_after_the_epoch_completes_the_wait_and_none_is_missed() {
        let wait = AsyncWait::default();
        let counter = Arc::new(CountWakes(AtomicUsize::new(0)));
        let since = wait.epoch();
        let mut fut = std::pin::pin!(wait.changed(since));
        assert_eq!(poll_once(fut.as_mut(), &counter), Poll::Pending);
        assert_eq!(poll_once(fut.as_mut(), &counter), Poll::Pending);
        assert_eq!(wait.waiting.load(Ordering::SeqCst), 1, "registered once");
        wait.wake_all();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the waker was woken");
        assert_eq!(poll_once(fut.as_mut(), &counter), Poll::Ready(()));

        // A wake between taking the epoch and the first poll is not lost.
        let since = wait.epoch();
        wait.wake_all();
        let mut late = std::pin::pin!(wait.changed(since));
        assert_eq!(poll_once(late.as_mut(), &counter), Poll::Ready(()));
        assert_eq!(wait.wakes(), 2);
    }

    #[test]
    fn a_dropped_waiter_leaves_no_waker_behind() {
        let wait = AsyncWait::default();
        let counter = Arc::new(CountWakes(AtomicUsize::new(0)));
        {
            let mut fut = Box::pin(wait.changed(wait.epoch()));
            assert_eq!(poll_once(fut.as_mut(), &counter), Poll::Pending);
        }
        assert_eq!(wait.waiting.load(Ordering::SeqCst), 0);
        wait.wake_all();
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    }

    /// Polls `n` waiters once each (all pending), one counter each.
    fn register<'a>(
        wait: &'a AsyncWait,
        n: usize,
    ) -> (Vec<Pin<Box<Changed<'a>>>>, Vec<Arc<CountWakes>>) {
        let since = wait.epoch();
        let mut futs = Vec::new();
        let mut counters = Vec::new();
        for _ in 0..n {
            let counter = Arc::new(CountWakes(AtomicUsize::new(0)));
            let mut fut = Box::pin(wait.changed(since));
            assert_eq!(poll_once(fut.as_mut(), &counter), Poll::Pending);
            futs.push(fut);
            counters.push(counter);
        }
        (futs, counters)
    }

    fn wakes_of(counters: &[Arc<CountWakes>]) -> Vec<usize> {
        counters
            .iter()
            .map(|c| c.0.load(Ordering::SeqCst))
            .collect()
    }

    #[test]
    fn wake_one_wakes_the_longest_waiting_task_only() {
        let wait = AsyncWait::default();
        let (_futs, counters) = register(&wait, 4);
        wait.wake_one();
        assert_eq!(wakes_of(&counters), [1, 0, 0, 0]);
        assert_eq!(wait.waiting(), 3);
        wait.wake_one();
        assert_eq!(wakes_of(&counters), [1, 1, 0, 0]);
        wait.wake_all();
        assert_eq!(wakes_of(&counters), [1, 1, 1, 1]);
        assert_eq!(wait.waiting(), 0);
    }

    #[test]
    fn a_woken_task_dropped_before_it_looked_passes_the_wake_on() {
        let wait = AsyncWait::default();
        let (mut futs, counters) = register(&wait, 3);
        wait.wake_one();
        assert_eq!(wakes_of(&counters), [1, 0, 0]);
        // The first task is cancelled before it polls again: its wake
        // goes to the next in line.
        drop(futs.remove(0));
        assert_eq!(wakes_of(&counters), [1, 1, 0]);
        // The second one sees its wake; dropping it then wakes no one.
        assert_eq!(poll_once(futs[0].as_mut(), &counters[1]), Poll::Ready(()));
        drop(futs.remove(0));
        assert_eq!(wakes_of(&counters), [1, 1, 0]);
        assert_eq!(wait.waiting(), 1);
        assert!(wait.wakers.lock().woken.is_empty(), "no woken key left");
    }

    #[test]
    fn an_enqueue_wakes_one_async_consumer_of_its_own_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let q = store.queue("default").unwrap();
        let (futs, counters) = register(q.async_wait(), 5);
        q.enqueue(b"one job").unwrap();
        assert_eq!(wakes_of(&counters).iter().sum::<usize>(), 1);
        drop(futs);
        // With named queues, each queue's tasks are woken for its jobs
        // alone; tasks waiting for several queues, one per set of queues
        // that holds the job's queue.
        let emails = store.queue("emails").unwrap();
        let other = store.queue("other").unwrap();
        let (_defaults, defaults) = register(q.async_wait(), 3);
        let (_mails, mails) = register(emails.async_wait(), 3);
        let both_ids = [q.queue_id(), emails.queue_id()];
        let (_both, both) = register(q.async_wait_for(&both_ids), 2);
        let apart_ids = [q.queue_id(), other.queue_id()];
        let (_apart, apart) = register(q.async_wait_for(&apart_ids), 2);
        emails.enqueue(b"mail").unwrap();
        assert_eq!(wakes_of(&mails), [1, 0, 0]);
        assert_eq!(wakes_of(&defaults), [0, 0, 0]);
        assert_eq!(wakes_of(&both), [1, 0]);
        assert_eq!(wakes_of(&apart), [0, 0], "a set without the job's queue");
        // A batch wakes every task of its queue, and of its sets.
        emails.enqueue_batch([b"a", b"b"]).unwrap();
        assert_eq!(wakes_of(&mails), [1, 1, 1]);
        assert_eq!(wakes_of(&defaults), [0, 0, 0]);
        assert_eq!(wakes_of(&both), [1, 1]);
        assert_eq!(wakes_of(&apart), [0, 0]);
    }
}
