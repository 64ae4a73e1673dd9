//! A gate a test holds a thread at (a backend call made slow or stuck)
//! until it opens, and a guard that opens it however the test ends.

use std::sync::{Arc, Condvar, Mutex};

/// Opens when set; waits for that.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    /// Lets every waiter through, now and later.
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }

    /// Waits until the gate is open.
    pub fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.changed.wait(open).unwrap();
        }
    }
}

/// Opens the gate when dropped, so a failing assertion does not leave a
/// thread (and the pool's shutdown) waiting forever.
pub struct OpenOnDrop(pub Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}
