//! A pool's threads, each with the backend call it is in, waited for
//! within a bounded time.
//!
//! A thread blocked in a [`crate::worker::Backend`] call cannot be
//! interrupted: Rust threads cannot be cancelled, and the call returns
//! when the backend does, possibly never. So a shutdown waits for a group
//! of threads until a deadline and no longer; then it gives up on those
//! still running ([`ThreadState::give_up`]) and leaves them detached. A
//! thread given up starts no other backend call ([`ThreadState::begin`]
//! refuses) and counts nothing for a call that returns after that
//! ([`ThreadState::end_with`] says so): shutdown counted its jobs itself.
//! The two claims are one compare-and-swap each on the same word, so
//! exactly one side counts a call's outcome.
//!
//! A thread counts a call's outcome, and takes the jobs of its next call,
//! in a short section that shutdown waits out before it gives up
//! ([`ThreadState::end_with`], [`ThreadState::begin_batch_with`]): once
//! `give_up` returns, the thread has counted all it ever will and holds
//! no job shutdown does not know of, so the counters shutdown reads
//! after that are exact. A job a worker is about to settle stays in its
//! slot until the call's outcome is counted; shutdown, giving up on an
//! idle worker, takes it from there and counts it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::clock::instant_ms;
use crate::error::Result;
use crate::worker::pool::spawn_named;
use crate::worker::shutdown::BackendCall;

/// Between calls.
const IDLE: u8 = 0;
/// Counting a call's outcome, or taking the jobs of the next call: a
/// short section without a backend call, which `give_up` waits out.
const BUSY: u8 = u8::MAX - 1;
/// Given up by shutdown: no more calls, nothing counted.
const GIVEN_UP: u8 = u8::MAX;

const CALLS: [BackendCall; 7] = [
    BackendCall::Lease,
    BackendCall::Extend,
    BackendCall::Complete,
    BackendCall::CompleteBatch,
    BackendCall::Retry,
    BackendCall::Fail,
    BackendCall::Release,
];

fn code(call: BackendCall) -> u8 {
    let at = CALLS.iter().position(|c| *c == call).unwrap_or(0);
    u8::try_from(at + 1).unwrap_or(1)
}

/// The call one thread (or task) is in, for shutdown to give up on it.
#[derive(Debug, Default)]
pub(crate) struct ThreadState {
    /// [`IDLE`], [`GIVEN_UP`], or the call in progress (index in
    /// [`CALLS`] plus one).
    word: AtomicU8,
    /// The job the call is about, plus one; 0 for none or a batch.
    job: AtomicU64,
    /// The jobs of a batch call (`complete_batch` only).
    batch: Mutex<Vec<u64>>,
    /// When (`instant_ms`) the call began.
    since_ms: AtomicU64,
    /// The thread is done (its join returns at once).
    exited: AtomicBool,
}

/// What shutdown gave up on: the call a thread was in, if any.
#[derive(Debug)]
pub(crate) struct GivenUp {
    pub(crate) call: Option<BackendCall>,
    pub(crate) waited: Duration,
    pub(crate) jobs: Vec<u64>,
}

impl ThreadState {
    /// About to call the backend (`call`, about `job`): false if shutdown
    /// gave up on this thread, which then makes no call.
    pub(crate) fn begin(&self, call: BackendCall, job: Option<u64>) -> bool {
        self.job
            .store(job.map_or(0, |id| id.saturating_add(1)), Ordering::Relaxed);
        self.since_ms.store(instant_ms(), Ordering::Relaxed);
        self.word
            .compare_exchange(IDLE, code(call), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// About to call `complete_batch` on the jobs `take` returns, taken
    /// only if shutdown has not given up on this thread (`None` then):
    /// from its return on, shutdown counts them if it gives up. An empty
    /// batch makes no call (`Some` of it, the thread idle again).
    pub(crate) fn begin_batch_with<T>(
        &self,
        take: impl FnOnce() -> Vec<T>,
        id: impl Fn(&T) -> u64,
    ) -> Option<Vec<T>> {
        self.word
            .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let batch = take();
        if batch.is_empty() {
            self.word.store(IDLE, Ordering::Release);
            return Some(batch);
        }
        *self.batch.lock() = batch.iter().map(id).collect();
        self.job.store(0, Ordering::Relaxed);
        self.since_ms.store(instant_ms(), Ordering::Relaxed);
        self.word
            .store(code(BackendCall::CompleteBatch), Ordering::Release);
        Some(batch)
    }

    /// The call returned: runs `count` (its outcome's counters) and
    /// returns what it returns, unless shutdown gave up on the call
    /// meanwhile (and counted it): `None`, and `count` is not run. A
    /// shutdown that gives up on this thread while `count` runs waits for
    /// it, so a count is either in the report or never made.
    pub(crate) fn end_with<T>(&self, count: impl FnOnce() -> T) -> Option<T> {
        let word = self.word.load(Ordering::Acquire);
        if word == GIVEN_UP || word == BUSY {
            return None;
        }
        self.word
            .compare_exchange(word, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        // The word goes back to idle however `count` ends.
        struct Idle<'a>(&'a AtomicU8);
        impl Drop for Idle<'_> {
            fn drop(&mut self) {
                self.0.store(IDLE, Ordering::Release);
            }
        }
        let _idle = Idle(&self.word);
        Some(count())
    }

    /// Whether shutdown gave up on this thread.
    pub(crate) fn given_up(&self) -> bool {
        self.word.load(Ordering::Acquire) == GIVEN_UP
    }

    /// Gives up on the thread: it makes no more calls, and the outcome of
    /// the call it is in (returned) is shutdown's to count. `None` if it
    /// had exited or was given up already.
    pub(crate) fn give_up(&self) -> Option<GivenUp> {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if word == GIVEN_UP || self.exited.load(Ordering::Acquire) {
                return None;
            }
            if word == BUSY {
                // Counting or taking jobs: no backend call, a few steps.
                std::thread::yield_now();
                word = self.word.load(Ordering::Acquire);
                continue;
            }
            match self
                .word
                .compare_exchange(word, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => word = now,
            }
        }
        let call = usize::from(word)
            .checked_sub(1)
            .and_then(|i| CALLS.get(i).copied());
        let jobs = match call {
            None => Vec::new(),
            Some(BackendCall::CompleteBatch) => self.batch.lock().clone(),
            Some(_) => (self.job.load(Ordering::Relaxed).checked_sub(1))
                .into_iter()
                .collect(),
        };
        let since = self.since_ms.load(Ordering::Relaxed);
        let waited = match call {
            Some(_) => Duration::from_millis(instant_ms().saturating_sub(since)),
            None => Duration::ZERO,
        };
        Some(GivenUp { call, waited, jobs })
    }
}

/// How many threads of a group have not exited yet.
#[derive(Default)]
struct Running {
    left: Mutex<usize>,
    exited: Condvar,
}

/// Counts its thread exited when dropped, however the thread ends.
struct Exit(Arc<Running>, Arc<ThreadState>);

impl Drop for Exit {
    fn drop(&mut self) {
        self.1.exited.store(true, Ordering::Release);
        *self.0.left.lock() -= 1;
        self.0.exited.notify_all();
    }
}

/// A thread of a group that did not exit by the deadline, given up.
pub(crate) struct Left {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) given_up: GivenUp,
}

/// A group of threads shutdown waits for together (a pool's workers, its
/// settler, its heartbeat threads).
#[derive(Default)]
pub(crate) struct Threads {
    threads: Vec<(usize, String, JoinHandle<()>, Arc<ThreadState>)>,
    running: Arc<Running>,
}

impl Threads {
    /// Starts thread `name`, number `index` of the group, running `f`
    /// with its state.
    pub(crate) fn spawn(
        &mut self,
        index: usize,
        name: String,
        f: impl FnOnce(&ThreadState) + Send + 'static,
    ) -> Result<()> {
        let state = Arc::new(ThreadState::default());
        *self.running.left.lock() += 1;
        let exit = Exit(self.running.clone(), state.clone());
        let st = state.clone();
        let handle = spawn_named(name.clone(), move || {
            let _exit = exit;
            f(&st);
        })?;
        self.threads.push((index, name, handle, state));
        Ok(())
    }

    /// Whether the group has no thread left to wait for.
    pub(crate) fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// The index of the group's thread this is called from, if any (a
    /// handler that shuts its own pool down).
    pub(crate) fn current(&self) -> Option<usize> {
        let me = std::thread::current().id();
        (self.threads.iter())
            .find(|t| t.2.thread().id() == me)
            .map(|t| t.0)
    }

    /// Waits for the threads for which `wait` is true until `until`;
    /// joins those that exited, gives up on the others and returns them.
    /// Threads `wait` excludes are left detached without a word (a
    /// worker whose handler still runs).
    pub(crate) fn stop(&mut self, until: Instant, wait: impl Fn(usize) -> bool) -> Vec<Left> {
        {
            let mut left = self.running.left.lock();
            let waited = |threads: &[(usize, String, JoinHandle<()>, Arc<ThreadState>)]| {
                threads
                    .iter()
                    .any(|t| wait(t.0) && !t.3.exited.load(Ordering::Acquire))
            };
            while *left > 0 && waited(&self.threads) {
                if self.running.exited.wait_until(&mut left, until).timed_out() {
                    break;
                }
            }
        }
        let mut stuck = Vec::new();
        for (index, name, handle, state) in self.threads.drain(..) {
            if state.exited.load(Ordering::Acquire) {
                let _ = handle.join();
            } else if wait(index) {
                // Dropping the handle detaches the thread.
                if let Some(given_up) = state.give_up() {
                    stuck.push(Left {
                        index,
                        name,
                        given_up,
                    });
                }
            }
        }
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    /// A thread counting a call's outcome when shutdown gives up on it:
    /// `give_up` returns only after the count, so shutdown's read of the
    /// counters after it includes it.
    #[test]
    fn give_up_waits_for_a_count_in_progress() {
        let state = Arc::new(ThreadState::default());
        let counted = Arc::new(AtomicUsize::new(0));
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        assert!(state.begin(BackendCall::Complete, Some(7)));
        let (st, c) = (state.clone(), counted.clone());
        let worker = std::thread::spawn(move || {
            st.end_with(|| {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                c.fetch_add(1, Ordering::SeqCst);
            })
        });
        entered.recv().unwrap();
        let (st, c) = (state.clone(), counted.clone());
        let (done_tx, done) = mpsc::channel();
        let shutdown = std::thread::spawn(move || {
            let given_up = st.give_up();
            let seen = c.load(Ordering::SeqCst);
            done_tx.send(()).unwrap();
            (given_up, seen)
        });
        // Give `give_up` every chance to return early (a bound, not a
        // timing: it must not return while the count is in progress).
        let _ = done.recv_timeout(Duration::from_millis(500));
        release.send(()).unwrap();
        assert_eq!(worker.join().unwrap(), Some(()));
        let (given_up, seen) = shutdown.join().unwrap();
        assert_eq!(seen, 1, "give_up returned before the count it raced with");
        let given_up = given_up.expect("the thread had not exited");
        assert_eq!(given_up.call, None, "the call had ended and been counted");
        assert!(given_up.jobs.is_empty());
        assert!(
            !state.begin(BackendCall::Lease, None),
            "given up: no more calls"
        );
    }

    /// Once given up, a thread takes no batch (shutdown counts the acks
    /// where they are), and a batch it took is shutdown's to count.
    #[test]
    fn a_batch_is_taken_by_the_thread_or_left_for_shutdown() {
        let state = ThreadState::default();
        let batch = state.begin_batch_with(|| vec![3_u64, 4, 5], |id| *id);
        assert_eq!(batch, Some(vec![3, 4, 5]));
        let given_up = state.give_up().expect("blocked in its call");
        assert_eq!(given_up.call, Some(BackendCall::CompleteBatch));
        assert_eq!(given_up.jobs, vec![3, 4, 5]);
        assert_eq!(state.end_with(|| ()), None, "shutdown counted the call");

        let state = ThreadState::default();
        assert!(state.give_up().is_some());
        let mut taken = false;
        let batch = state.begin_batch_with(
            || {
                taken = true;
                vec![1_u64]
            },
            |id| *id,
        );
        assert_eq!(batch, None);
        assert!(!taken, "a thread given up took acks shutdown counted");
    }

    /// An empty batch makes no call: the thread is idle again.
    #[test]
    fn an_empty_batch_leaves_the_thread_idle() {
        let state = ThreadState::default();
        assert_eq!(
            state.begin_batch_with(Vec::<u64>::new, |id| *id),
            Some(vec![])
        );
        assert!(state.begin(BackendCall::Lease, None));
        assert_eq!(state.end_with(|| 1), Some(1));
    }
}
