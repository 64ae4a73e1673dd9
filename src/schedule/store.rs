//! The schedule file on disk: read whole, written whole and
//! crash-atomically (`schedules.bin.tmp`, fsync, rename, directory fsync),
//! guarded by `schedules.lock` so that one scheduler at a time owns it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec::{self, Entry};
use crate::error::{Error, ErrorKind, Result};
use crate::queue::SideLock;
use crate::vfs::{write_atomically, Vfs};

/// The schedule file's name in the queue directory.
pub const SCHEDULE_FILE: &str = "schedules.bin";
/// The file locked while a scheduler owns the schedule file.
pub const SCHEDULE_LOCK_FILE: &str = "schedules.lock";
/// Mode of the files the scheduler creates.
const FILE_MODE: u32 = 0o600;

/// The schedule file of one queue directory, locked for this scheduler.
pub(crate) struct Store {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    /// The lock of `schedules.lock`; `None` once the queue was closed
    /// (`Queue::close` releases it with the directory's).
    lock: Arc<SideLock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Locks the schedule file of `dir`: refused with
    /// [`ErrorKind::Locked`] while another scheduler (in this process or
    /// another) has it.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path) -> Result<Store> {
        let lock_path = dir.join(SCHEDULE_LOCK_FILE);
        let lock = vfs.lock(&lock_path, FILE_MODE).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                Error::new(
                    ErrorKind::Locked,
                    "another Scheduler (in this process or another) owns this queue's schedules",
                )
                .with_path(&lock_path)
            } else {
                Error::io("locking the schedule file", &lock_path, e)
            }
        })?;
        Ok(Store {
            vfs,
            dir: dir.to_path_buf(),
            lock: Arc::new(parking_lot::Mutex::new(Some(lock))),
        })
    }

    /// The lock, for the queue to release with its directory's.
    pub fn lock(&self) -> &Arc<SideLock> {
        &self.lock
    }

    /// The path of the schedule file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(SCHEDULE_FILE)
    }

    /// The schedules on disk; none if the file does not exist yet.
    pub fn load(&self) -> Result<Vec<Entry>> {
        let path = self.path();
        let file = match self.vfs.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("opening the schedule file", &path, e)),
        };
        let len = file
            .len()
            .map_err(|e| Error::io("reading the schedule file", &path, e))?;
        if len > codec::MAX_FILE_LEN as u64 {
            return Err(Error::corrupt(
                &path,
                0,
                format!("{len} bytes is over the limit of {}", codec::MAX_FILE_LEN),
            ));
        }
        let mut bytes = vec![0u8; len as usize];
        file.read_at(&mut bytes, 0)
            .map_err(|e| Error::io("reading the schedule file", &path, e))?;
        codec::decode(&bytes, &path)
    }

    /// Replaces the file with `entries`, crash-atomically: after a crash
    /// the file holds either the old or the new list.
    pub fn save(&self, entries: &[Entry]) -> Result<()> {
        // Held through the write: a close releases the lock only after it,
        // and no write follows the release (another scheduler may own the
        // file from then on).
        let held = self.lock.lock();
        if held.is_none() {
            return Err(Error::new(
                ErrorKind::Closed,
                "the queue was closed: this Scheduler no longer owns its schedules",
            ));
        }
        let bytes = codec::encode(entries);
        write_atomically(&*self.vfs, &self.dir, SCHEDULE_FILE, &[&bytes], FILE_MODE).map(drop)
    }
}
