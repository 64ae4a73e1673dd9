//! A runtime-agnostic list of wakers, woken wherever the queue wakes its
//! condvar: the async counterpart of `Queue`'s `ready` condvar.
//!
//! It has no runtime in it (only `std::task`), so the queue carries one in
//! every build; with no async waiter registered, a wake costs one atomic
//! load. Async dequeues (behind the `tokio` feature) take an [`Epoch`]
//! before they look for a ready job and then wait for [`AsyncWait::changed`]
//! since that epoch: a wake between the look and the wait is never missed.

// Without the `tokio` feature only `wake_all` is called (by the queue).
#![cfg_attr(not(feature = "tokio"), allow(dead_code))]

use std::collections::HashMap;
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
    by_key: HashMap<u64, Waker>,
}

impl AsyncWait {
    /// The current epoch: take it before looking for a ready job.
    pub(crate) fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::SeqCst))
    }

    /// Wakes every waiting task (the queue changed: a job may be ready).
    ///
    /// All of them, not one: a woken task may have been dropped (a
    /// cancelled dequeue), and a spare wake costs only a failed look.
    pub(crate) fn wake_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let woken: Vec<Waker> = {
            let mut w = self.wakers.lock();
            self.waiting.store(0, Ordering::SeqCst);
            w.by_key.drain().map(|(_, waker)| waker).collect()
        };
        for waker in woken {
            waker.wake();
        }
    }

    /// A future that completes once a wake happens after `since`.
    pub(crate) fn changed(&self, since: Epoch) -> Changed<'_> {
        Changed {
            wait: self,
            since,
            key: None,
        }
    }

    /// How many wakes there have been (for tests of wake-ups).
    #[cfg(test)]
    pub(crate) fn wakes(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

/// Completes once the queue changed after an [`Epoch`]; see
/// [`AsyncWait::changed`].
pub(crate) struct Changed<'a> {
    wait: &'a AsyncWait,
    since: Epoch,
    key: Option<u64>,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let wait = self.wait;
        if wait.epoch() != self.since {
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
        // SeqCst: either this read sees `wake_all`'s bump, or `wake_all`
        // sees the count, takes the lock after us and wakes our waker.
        if w.by_key.insert(key, cx.waker().clone()).is_none() {
            wait.waiting.fetch_add(1, Ordering::SeqCst);
        }
        self.key = Some(key);
        if wait.epoch() != self.since {
            if w.by_key.remove(&key).is_some() {
                wait.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut w = self.wait.wakers.lock();
            if w.by_key.remove(&key).is_some() {
                self.wait.waiting.fetch_sub(1, Ordering::SeqCst);
            }
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
}
