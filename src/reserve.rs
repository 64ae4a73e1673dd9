//! The reserve: disk space held back for the records that drain a full
//! disk, on file systems where even an overwrite needs new space.
//!
//! On ext4, xfs and tmpfs a record is stored into preallocated blocks, so
//! the spare segment (see `segment::Spare`) is all a full disk needs to take
//! leases, acks, nacks and dead letters. On a copy-on-write file system
//! (btrfs) every overwrite allocates new blocks: a full disk refuses the
//! lease record's `pwrite` with ENOSPC even inside a preallocated segment.
//! There walq keeps `RESERVE` in the queue directory, a few MiB
//! (see [`reserve_bytes`]) allocated to a file of no content. When an append of a record that
//! drains the queue (never an enqueue: producers get "disk full" first)
//! fails with ENOSPC, the log deletes the reserve and tries the append once
//! more; the drain then frees whole segments. The reserve is made again
//! (or grown back, a step at a time, to what fits), best effort, at open,
//! at close and whenever reclaim deleted a segment.
//!
//! The file holds nothing: walq may delete it at any time, and so may an
//! operator (see `docs/format.md`).

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind};
use crate::vfs::Vfs;

/// Name of the reserve file in the queue directory.
pub const RESERVE_FILE: &str = "RESERVE";
/// Steps in which the reserve is allocated, so that a full disk leaves a
/// smaller reserve rather than none.
const STEP_BYTES: u64 = 64 << 10;
/// The smallest reserve kept.
pub const MIN_BYTES: u64 = 64 << 10;

/// Bytes the reserve holds: two segments, at least 256 KiB and at most
/// 8 MiB. It has to last from a full disk until the drain has emptied the
/// oldest segment and reclaim deleted it (measured on btrfs: see
/// `docs/architecture.md`).
pub fn reserve_bytes(segment_size: u64) -> u64 {
    segment_size.saturating_mul(2).clamp(256 << 10, 8 << 20)
}

/// The reserve of one queue directory (only where overwrites need space).
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    dir: PathBuf,
    bytes: u64,
    /// Its length when held.
    len: u64,
    /// Whether the file is there, at least [`MIN_BYTES`] long (as far as
    /// we know).
    held: bool,
}

impl Reserve {
    /// The reserve of `dir` (`bytes` large), if its file system needs one;
    /// not yet made.
    pub fn for_dir(vfs: &dyn Vfs, dir: &Path, bytes: u64) -> Option<Reserve> {
        vfs.overwrites_need_space(dir).then(|| Reserve {
            path: dir.join(RESERVE_FILE),
            dir: dir.to_path_buf(),
            bytes,
            len: 0,
            held: false,
        })
    }

    /// Makes the reserve, or grows it back to its size, a step at a time
    /// (best effort: on a full disk it holds what fits, and a file smaller
    /// than [`MIN_BYTES`] is not kept).
    pub fn fill(&mut self, vfs: &dyn Vfs) {
        if self.held && self.len >= self.bytes {
            return;
        }
        let file = match vfs.open(&self.path) {
            Ok(f) => f,
            Err(_) => match vfs.create(&self.path, 0o600) {
                Ok(f) => f,
                Err(_) => return,
            },
        };
        let mut len = file.len().unwrap_or(0);
        let before = len;
        while len < self.bytes {
            let next = (len + STEP_BYTES).min(self.bytes);
            if file.allocate(next).is_err() {
                break;
            }
            len = next;
        }
        let len = file.len().unwrap_or(0);
        // Synced only when it grew (or is new): a full disk costs one
        // failed allocation per call, not a sync.
        let durable = (len == before && before > 0)
            || (file.sync_all().is_ok() && vfs.sync_dir(&self.dir).is_ok());
        drop(file);
        if len >= MIN_BYTES && durable {
            self.held = true;
            self.len = len;
        } else {
            self.held = false;
            self.len = 0;
            let _ = vfs.remove(&self.path);
        }
    }

    /// Gives the reserve's space back to the file system. Returns whether
    /// it was held (so that a retry may now succeed).
    pub fn release(&mut self, vfs: &dyn Vfs) -> bool {
        if !self.held {
            return false;
        }
        self.held = false;
        self.len = 0;
        if vfs.remove(&self.path).is_err() {
            return false;
        }
        let _ = vfs.sync_dir(&self.dir);
        true
    }
}

/// Whether `e` is a full disk (ENOSPC, or EDQUOT).
pub fn is_enospc(e: &Error) -> bool {
    e.kind() == ErrorKind::Io
        && e.io_error().is_some_and(|io| {
            io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded
        })
}

/// Deletes the reserve of `dir` if there is one (recovery on a full disk,
/// before the log and its [`Reserve`] exist). Returns whether it was there.
pub fn give_up(vfs: &dyn Vfs, dir: &Path) -> bool {
    if vfs.remove(&dir.join(RESERVE_FILE)).is_err() {
        return false;
    }
    let _ = vfs.sync_dir(dir);
    true
}
