//! A background thread that calls [`Scheduler::tick`], with a clean
//! shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::scheduler::Scheduler;
use crate::error::{Error, ErrorKind, Result};

/// The thread started by [`Scheduler::spawn`]. Dropping it stops the
/// thread too (and waits for it).
#[derive(Debug)]
pub struct SchedulerThread {
    sched: Scheduler,
    stop: Arc<AtomicBool>,
    last_error: Arc<Mutex<Option<String>>>,
    handle: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts a thread that calls [`Scheduler::tick`] whenever a tick is
    /// due, and at least every `poll` (so a clock stepped forward or back
    /// is noticed within `poll`). A schedule registered (or removed) while it waits wakes
    /// it, so a new schedule's ticks are not held up by the poll. An
    /// error is kept for [`SchedulerThread::last_error`] and the thread
    /// goes on; the failed tick is tried again when the next tick of any
    /// schedule is due, or after `poll`.
    pub fn spawn(&self, poll: Duration) -> Result<SchedulerThread> {
        if poll.is_zero() {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                "the scheduler's poll interval must be more than zero",
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let (sched, s, errors) = (self.clone(), stop.clone(), last_error.clone());
        let handle = std::thread::Builder::new()
            .name("walq-scheduler".into())
            .spawn(move || run(&sched, &s, &errors, poll))
            .map_err(|e| Error::io("starting the scheduler thread", &self.path(), e))?;
        Ok(SchedulerThread {
            sched: self.clone(),
            stop,
            last_error,
            handle: Some(handle),
        })
    }

    /// How long to wait before the next tick: until the next tick after
    /// `ticked_at` (the second a tick was just run for) is due, at most
    /// `poll`, at least a millisecond. A tick at or before `ticked_at`
    /// still due is one whose enqueue failed: it is tried again with the
    /// next tick that comes due, or after `poll`, neither in a busy loop
    /// nor holding the other schedules to the poll.
    fn wait_hint(&self, poll: Duration, ticked_at: u64) -> Duration {
        let now = self.clock().now_ms();
        let until = self.next_due_after(ticked_at).map_or(poll, |due| {
            Duration::from_millis(due.saturating_mul(1000).saturating_sub(now))
        });
        until.min(poll).max(Duration::from_millis(1))
    }
}

fn run(sched: &Scheduler, stop: &AtomicBool, last_error: &Mutex<Option<String>>, poll: Duration) {
    let mut seen = 0;
    loop {
        // `tick` reads the clock after this: every schedule it left due
        // at this second or before failed.
        let ticked_at = sched.clock().now_ms() / 1000;
        if let Err(e) = sched.tick() {
            *last_error.lock() = Some(e.to_string());
        }
        let wait = sched.wait_hint(poll, ticked_at);
        sched.wait_for_change(&mut seen, stop, wait);
        if stop.load(Ordering::Acquire) {
            return;
        }
    }
}

impl SchedulerThread {
    /// The last error a tick returned, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Stops the thread and waits for it: a tick in progress finishes
    /// first (its jobs and the schedule file are written whole or the
    /// next run redoes them).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.sched.wake_threads(false);
        if let Some(handle) = self.handle.take() {
            // A tick never panics on input or disk errors; if the thread
            // did panic there is nothing left to stop.
            let _ = handle.join();
        }
    }
}

impl Drop for SchedulerThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
