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
//! ([`ThreadState::end`] says so): shutdown counted its jobs itself. The
//! two claims are one compare-and-swap each on the same word, so exactly
//! one side counts a call's outcome.

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

    /// About to call `complete_batch` on `jobs`; as [`ThreadState::begin`].
    pub(crate) fn begin_batch(&self, jobs: Vec<u64>) -> bool {
        *self.batch.lock() = jobs;
        self.begin(BackendCall::CompleteBatch, None)
    }

    /// The call returned: true if this thread counts its outcome, false
    /// if shutdown gave up on it meanwhile (and counted it).
    pub(crate) fn end(&self) -> bool {
        let word = self.word.load(Ordering::Acquire);
        word != GIVEN_UP
            && self
                .word
                .compare_exchange(word, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
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
