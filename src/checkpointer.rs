//! The `walq-checkpoint` thread: writes the periodic checkpoints that
//! operations capture under the queue lock.
//!
//! One thread lives as long as the queue, started at open, so that the
//! operation which makes a checkpoint due only hands its capture over: it
//! never spawns a thread (a `clone3` of tens of microseconds, and a new
//! thread competing for the CPU the caller runs on), and a process at its
//! thread limit still gets its checkpoints.
//!
//! The hand-off is a channel of one: [`crate::state::checkpoint::Schedule`]
//! gives out at most one right to write ([`Writing`]) at a time, so a
//! second capture can never wait behind the first. Stopping drops the
//! sender; the thread still writes a capture already handed over, then
//! ends, and [`Checkpointer::stop`] joins it.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::state::checkpoint::{Capture, Writing};

/// A capture and the right to write it.
pub(crate) type Handoff = (Capture, Writing);

/// The checkpoint thread of one queue (none when periodic checkpoints are
/// off).
#[derive(Debug, Default)]
pub(crate) struct Checkpointer {
    /// `None` once stopped, or when no thread was started.
    tx: Mutex<Option<SyncSender<Handoff>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts the thread; it runs `write` for each capture handed over.
    pub fn start(&self, write: impl FnMut(Handoff) + Send + 'static) -> std::io::Result<()> {
        let (tx, rx) = sync_channel::<Handoff>(1);
        let thread = std::thread::Builder::new()
            .name("walq-checkpoint".into())
            .spawn(move || rx.into_iter().for_each(write))?;
        *self.tx.lock() = Some(tx);
        *self.thread.lock() = Some(thread);
        Ok(())
    }

    /// Hands a capture to the thread. Once stopped (a close is under way)
    /// the capture is dropped, and with it the right to write: the
    /// checkpoint is left out, as any that cannot be written.
    pub fn hand(&self, handoff: Handoff) {
        if let Some(tx) = self.tx.lock().as_ref() {
            // Full cannot happen (one `Writing` at a time); either error
            // drops the hand-off, which releases the right to write.
            let _ = tx.try_send(handoff);
        }
    }

    /// Stops the thread once it wrote what it was handed, and waits for it
    /// (unless called on that thread).
    pub fn stop(&self) {
        drop(self.tx.lock().take());
        if let Some(handle) = self.thread.lock().take() {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}
