//! The queue directory as a reader sees it: which files there are, whether
//! a running process holds the queue, and the bytes of a file, read with
//! `read` (never mapped: a live writer may delete a segment under us, and
//! a mapped file that shrinks would kill the reader with `SIGBUS`).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// Who holds the queue's `LOCK`, as far as `/proc/locks` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The process id that took the lock.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), when readable.
    pub command: Option<String>,
}

/// Whether a running process holds the queue, found by trying its lock
/// without waiting and releasing it at once. The `LOCK` file is opened
/// read-only and never created.
pub fn is_live(dir: &Path) -> Result<bool> {
    let path = dir.join(crate::queue::LOCK_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("opening the lock file", &path, e)),
    };
    match file.try_lock() {
        // Dropping the file releases the lock.
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("testing the lock", &path, e)),
    }
}

/// The process holding the queue's lock, looked up in `/proc/locks` by the
/// lock file's inode (Linux only; `None` elsewhere or when not found).
pub fn lock_holder(dir: &Path) -> Option<LockHolder> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(dir.join(crate::queue::LOCK_FILE))
        .ok()?
        .ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dev_ino = fields.iter().position(|f| f.matches(':').count() == 2)?;
        let ino: u64 = fields[dev_ino].rsplit(':').next()?.parse().ok()?;
        if ino != inode || !line.contains("FLOCK") {
            return None;
        }
        fields.get(dev_ino.checked_sub(1)?)?.parse::<u32>().ok()
    })?;
    let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string());
    Some(LockHolder { pid, command })
}

/// Names in the directory, sorted. Errors name the directory.
pub(crate) fn list(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::new(ErrorKind::NotFound, "no such directory").with_path(dir)
        } else {
            Error::io("listing the queue directory", dir, e)
        }
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing the queue directory", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The file as long as it was when opened, or `None` when it no longer
/// exists (a live writer deleted it after the directory was listed).
///
/// Only the length it had at the open is read: a live writer appending
/// meanwhile (to `dead.wal`, say) writes past it, and a read that followed
/// the growing end could copy a later record whole but an earlier one
/// half written, which looks like damage. Every byte below that length
/// was written before it was counted in it, so what is read is a prefix
/// the writer had finished, or ends in the part of a record being written
/// (a torn tail, not damage).
pub(crate) fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("opening", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading the size of", path, e))?
        .len();
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("reading", path, e))?;
    Ok(Some(buf))
}
