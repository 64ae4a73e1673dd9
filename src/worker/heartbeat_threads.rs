//! Starting and stopping a pool's heartbeat threads, within a bounded
//! time.
//!
//! A heartbeat thread blocked in [`crate::worker::Backend::extend`]
//! cannot be interrupted: Rust threads cannot be cancelled, and the call
//! returns when the backend does, possibly never. So a shutdown waits for
//! the heartbeat threads until its deadline (or, if that has passed, one
//! heartbeat interval more) and no longer: a thread still running then is
//! left detached, and [`crate::worker::ShutdownReport::stuck`] names it
//! and the call it is blocked in (which job, for how long). Such a thread
//! exits as soon as its call returns; until then it holds the pool's
//! backend (for a [`crate::Queue`], its handle on the directory). At most
//! [`MAX_HEARTBEAT_THREADS`] threads per pool can be left so.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::clock::instant_ms;
use crate::error::Result;
use crate::worker::backend::Backend;
use crate::worker::heartbeat::{beat, MAX_HEARTBEAT_THREADS};
use crate::worker::pool::{spawn_named, Shared};

/// What one heartbeat thread is doing, for a report that it is stuck.
#[derive(Debug, Default)]
pub(crate) struct ThreadState {
    /// The job whose lease it is extending, plus one; 0 when none.
    job: AtomicU64,
    /// When (`instant_ms`) that extension was sent.
    since_ms: AtomicU64,
    /// The thread is done (its join returns at once).
    exited: AtomicBool,
}

impl ThreadState {
    /// The thread sends an extension of job `id`'s lease at `sent`.
    pub(crate) fn extending(&self, id: u64, sent: u64) {
        self.since_ms.store(sent, Ordering::Release);
        self.job.store(id.saturating_add(1), Ordering::Release);
    }

    /// The extension returned.
    pub(crate) fn extended(&self) {
        self.job.store(0, Ordering::Release);
    }

    /// What the thread `name` is blocked in, for the shutdown report.
    fn describe(&self, name: &str) -> String {
        let job = self.job.load(Ordering::Acquire);
        let since = self.since_ms.load(Ordering::Acquire);
        let what = match job.checked_sub(1) {
            Some(id) => format!(
                "blocked in Backend::extend of job {id}'s lease for {} ms",
                instant_ms().saturating_sub(since)
            ),
            // The first thread may be settling acks a dead settler left.
            None => "not stopped yet (not in an extension)".to_string(),
        };
        format!("heartbeat thread {name} is {what}; left running detached, it exits when the call returns")
    }
}

/// How many heartbeat threads have not exited yet.
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

/// A pool's running heartbeat threads.
pub(crate) struct Heartbeat {
    threads: Vec<(String, JoinHandle<()>, Arc<ThreadState>)>,
    running: Arc<Running>,
}

impl Heartbeat {
    /// Starts one heartbeat thread per worker, at most
    /// [`MAX_HEARTBEAT_THREADS`]: `<name>-heartbeat`, which also settles
    /// the acks a dead settler left, then `<name>-heartbeat-1`…. Only the
    /// first must start; a helper that cannot leaves its share to the
    /// others.
    pub(crate) fn start<B: Backend>(shared: &Arc<Shared<B>>) -> Result<Heartbeat> {
        let mut heartbeat = Heartbeat {
            threads: Vec::new(),
            running: Arc::default(),
        };
        let count = shared.cfg.workers.clamp(1, MAX_HEARTBEAT_THREADS);
        for k in 0..count {
            let name = match k {
                0 => format!("{}-heartbeat", shared.cfg.name),
                _ => format!("{}-heartbeat-{k}", shared.cfg.name),
            };
            let state = Arc::new(ThreadState::default());
            let (s, st, running) = (shared.clone(), state.clone(), heartbeat.running.clone());
            *running.left.lock() += 1;
            let exit = Exit(running, state.clone());
            match spawn_named(name.clone(), move || {
                let _exit = exit;
                beat(&s, &st, k == 0);
            }) {
                Ok(handle) => heartbeat.threads.push((name, handle, state)),
                // The closure, and with it `exit`, was dropped.
                Err(e) if k == 0 => return Err(e),
                Err(_) => {}
            }
        }
        Ok(heartbeat)
    }

    /// Stops the heartbeat and waits for its threads until `until`, or
    /// one heartbeat interval from now if that is later. Joins those that
    /// exited; returns a description of each that did not (see the module
    /// documentation), empty when all exited.
    pub(crate) fn stop<B: Backend>(self, shared: &Shared<B>, until: Instant) -> Vec<String> {
        shared.heartbeat_stop.set();
        let until = until.max(crate::clock::deadline(shared.cfg.heartbeat_every()));
        {
            let mut left = self.running.left.lock();
            while *left > 0 {
                if self.running.exited.wait_until(&mut left, until).timed_out() {
                    break;
                }
            }
        }
        let mut stuck = Vec::new();
        for (name, handle, state) in self.threads {
            if state.exited.load(Ordering::Acquire) {
                let _ = handle.join();
            } else {
                // Dropping the handle detaches the thread.
                stuck.push(state.describe(&name));
            }
        }
        stuck
    }
}
