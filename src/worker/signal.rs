//! A stop flag that sleeping threads wake up for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// A one-way flag: once set, every [`Signal::sleep`] returns at once.
#[derive(Default)]
pub(crate) struct Signal {
    flag: Arc<AtomicBool>,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Signal {
    /// Sets the flag and wakes every sleeper.
    pub(crate) fn set(&self) {
        let _guard = self.lock.lock();
        self.flag.store(true, Ordering::Release);
        self.wake.notify_all();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// The flag itself, for contexts that only read it.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// Sleeps up to `d` or until the flag is set; returns the flag.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let mut guard = self.lock.lock();
        if !self.is_set() {
            self.wake.wait_for(&mut guard, d);
        }
        self.is_set()
    }
}
