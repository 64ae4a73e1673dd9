//! Starting and stopping a pool's heartbeat threads, within a bounded
//! time.
//!
//! A heartbeat thread blocked in [`crate::worker::Backend::extend`]
//! cannot be interrupted (see [`crate::worker::threads`]). So a shutdown
//! waits for the heartbeat threads until its deadline (or, if that has
//! passed, one poll interval plus one heartbeat interval more) and no
//! longer: a thread still running then is left detached, and
//! [`crate::worker::ShutdownReport::stuck`] names it and the call it is
//! blocked in (which job, for how long). Such a thread exits as soon as
//! its call returns; until then it holds the pool's backend (for a
//! [`crate::Queue`], its handle on the directory). At most
//! [`MAX_HEARTBEAT_THREADS`] threads per pool can be left so.

use std::time::Instant;

use crate::error::Result;
use crate::worker::backend::Backend;
use crate::worker::heartbeat::{beat, MAX_HEARTBEAT_THREADS};
use crate::worker::pool::Shared;
use crate::worker::threads::{Left, Threads};
use std::sync::Arc;

/// A pool's running heartbeat threads.
pub(crate) struct Heartbeat {
    threads: Threads,
}

impl Heartbeat {
    /// Starts one heartbeat thread per worker, at most
    /// [`MAX_HEARTBEAT_THREADS`]: `<name>-heartbeat`, which also settles
    /// the acks a dead settler left, then `<name>-heartbeat-1`…. Only the
    /// first must start; a helper that cannot leaves its share to the
    /// others.
    pub(crate) fn start<B: Backend>(shared: &Arc<Shared<B>>) -> Result<Heartbeat> {
        let mut threads = Threads::default();
        let count = shared.cfg.workers.clamp(1, MAX_HEARTBEAT_THREADS);
        for k in 0..count {
            let name = match k {
                0 => format!("{}-heartbeat", shared.cfg.name),
                _ => format!("{}-heartbeat-{k}", shared.cfg.name),
            };
            let s = shared.clone();
            match threads.spawn(k, name, move |st| beat(&s, st, k == 0)) {
                Ok(()) => {}
                Err(e) if k == 0 => return Err(e),
                Err(_) => {}
            }
        }
        Ok(Heartbeat { threads })
    }

    /// Stops the heartbeat and waits for its threads until `until`.
    /// Joins those that exited; gives up on the others and returns them
    /// (see the module documentation), empty when all exited.
    pub(crate) fn stop<B: Backend>(mut self, shared: &Shared<B>, until: Instant) -> Vec<Left> {
        shared.heartbeat_stop.set();
        self.threads.stop(until, |_| true)
    }
}
