//! A side file's failed `fdatasync`, latched.
//!
//! Linux reports a writeback error to the one `fdatasync` that finds it
//! and then forgets it: the dirty pages are dropped, and the next
//! `fdatasync` of the file succeeds without having written them. So once
//! a sync of `dead.wal` or `done.rec` failed, every later sync of that
//! file fails too, until the queue is reopened and reads what is on disk
//! (a review reproduced the alternative: a cancel's failed sync of
//! `done.rec`, then a concurrent `Queue::sync` that returned `Ok` while an
//! earlier result was gone after a power cut). The log's committer latches
//! its own failures the same way (`commit.rs`).

use std::path::Path;

use crate::error::{Error, Result};

/// The first failed sync of one file, if any.
#[derive(Debug, Default)]
pub struct SyncLatch(Option<String>);

impl SyncLatch {
    /// Runs `sync` (an `fdatasync` of the file at `path`) unless one
    /// failed before; a failure is latched.
    pub fn run(
        &mut self,
        what: &str,
        path: &Path,
        sync: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<()> {
        self.check(what, path)?;
        sync().map_err(|e| {
            let err = Error::io(what, path, e);
            self.0 = Some(err.to_string());
            err
        })
    }

    /// An error if a sync of this file failed before.
    pub fn check(&self, what: &str, path: &Path) -> Result<()> {
        match &self.0 {
            None => Ok(()),
            Some(first) => Err(Error::io(
                what,
                path,
                std::io::Error::other(format!(
                    "an earlier fdatasync of this file failed ({first}), and its unsynced \
                     writes may be gone; reopen the queue"
                )),
            )),
        }
    }

    /// Latches a failure found elsewhere (a sync made without the file's
    /// lock held).
    pub fn note(&mut self, err: &Error) {
        self.0.get_or_insert_with(|| err.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_after_a_failed_one_fails_without_syncing() {
        let mut latch = SyncLatch::default();
        let path = Path::new("/q/done.rec");
        assert!(latch.run("syncing", path, || Ok(())).is_ok());
        let failed = latch.run("syncing", path, || Err(std::io::Error::other("EIO")));
        assert!(failed.is_err());
        let mut ran = false;
        let again = latch.run("syncing", path, || {
            ran = true;
            Ok(())
        });
        let text = again.expect_err("latched").to_string();
        assert!(!ran, "the sync after a failed one ran");
        assert!(text.contains("EIO") && text.contains("done.rec"), "{text}");
    }
}
