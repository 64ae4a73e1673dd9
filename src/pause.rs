//! Paused queues (file `PAUSED`): a queue paused with
//! [`crate::Queue::pause`] delivers nothing until
//! [`crate::Queue::resume`], across restarts, while it still takes
//! enqueues.
//!
//! The file names the paused queues (names, not ids: the id of a queue
//! whose definition was never written is not kept across opens). It is
//! rewritten whole, crash-atomically, by each pause or resume that changes
//! it, before the change takes effect in memory: a pause that returned is
//! in force after any crash, and a failed write changes nothing. A store
//! without the file (a new one, or an older build's) has no paused queue;
//! an older build ignores the file (its queues deliver).

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::paused::{self, MAX_PAUSED_LEN};
use crate::options::RecoveryMode;
use crate::vfs::Vfs;

/// File name of the paused queues.
pub const PAUSED_FILE: &str = "PAUSED";

/// The paused queues a store opened with.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Names of the paused queues.
    pub names: Vec<String>,
    /// Bytes of a damaged file ignored (`RecoveryMode::Salvage`).
    pub skipped: u64,
}

/// The paused queues of the store in `dir`: none if `PAUSED` is missing.
/// A damaged file is `Corrupt` naming it under `RecoveryMode::Strict` (a
/// queue paused so that its jobs do not run would run); `Salvage` opens
/// with no queue paused and counts the file's bytes as skipped.
pub(crate) fn load(vfs: &dyn Vfs, dir: &Path, recovery: RecoveryMode) -> Result<Loaded> {
    let path = dir.join(PAUSED_FILE);
    let file = match vfs.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(Error::io("opening", &path, e)),
    };
    let len = file.len().map_err(|e| Error::io("reading", &path, e))?;
    // One byte past the longest file, so a longer one does not decode.
    let mut buf = vec![0u8; len.min(MAX_PAUSED_LEN as u64 + 1) as usize];
    file.read_at(&mut buf, 0)
        .map_err(|e| Error::io("reading", &path, e))?;
    if let Some(names) = paused::decode(&buf) {
        return Ok(Loaded { names, skipped: 0 });
    }
    if recovery == RecoveryMode::Strict {
        return Err(Error::corrupt(
            &path,
            0,
            "the list of paused queues is damaged; open with RecoveryMode::Salvage to \
             open with every queue resumed (then pause again those that must wait)",
        ));
    }
    Ok(Loaded {
        names: Vec::new(),
        skipped: len,
    })
}

/// Writes `PAUSED` naming `names` (sorted, no repeats, valid names),
/// crash-atomically, mode `mode`.
pub(crate) fn save(vfs: &dyn Vfs, dir: &Path, names: &[&str], mode: u32) -> Result<()> {
    let bytes = paused::encode(names).ok_or_else(|| {
        Error::new(
            crate::ErrorKind::InvalidOptions,
            format!(
                "{} paused queues is more than the {} a store can hold",
                names.len(),
                paused::MAX_PAUSED
            ),
        )
    })?;
    crate::vfs::write_atomically(vfs, dir, PAUSED_FILE, &[&bytes], mode).map(drop)
}
