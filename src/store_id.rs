//! The store's identity (file `STORE_ID`): 16 random bytes drawn when the
//! store is first opened by a build that knows the file, kept for the
//! store's life. It scopes what must not collide across stores, the keys
//! handed to outside services ([`crate::worker::JobContext::provider_key`]):
//! job ids start at 1 in every store, so `walq-job-1` of two stores (two
//! servers sharing one payment provider account, a directory wiped and made
//! again) were one key, and the provider answered the second job with the
//! first one's cached response.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::store_id;
use crate::options::RecoveryMode;
use crate::vfs::Vfs;

/// File name of the store id.
pub const STORE_ID_FILE: &str = "STORE_ID";

/// The store id a queue opened with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loaded {
    /// The id.
    pub id: [u8; 16],
    /// A damaged file was replaced (`RecoveryMode::Salvage`).
    pub replaced: bool,
    /// Drawn but not written: the disk was full. [`save`] tries again.
    pub unsaved: bool,
}

/// The store id of the queue in `dir`: read from `STORE_ID`, or drawn and
/// written (crash-atomically, mode `mode`) when the file is missing. A
/// damaged file is `Corrupt` naming it under `RecoveryMode::Strict`
/// (a new id would change every provider key, so a side effect a job
/// already performed could be performed again); `Salvage` replaces it.
///
/// A full disk (a store of an older build, upgraded while its disk is
/// full) does not stop the open, which a drain needs: the id drawn is
/// used, `unsaved`, and written by a later [`save`] (the queue's close).
/// A crash before that draws another id at the next open, so keys change
/// only for jobs that ran in such a session and are delivered again.
pub(crate) fn load_or_create(
    vfs: &dyn Vfs,
    dir: &Path,
    mode: u32,
    recovery: RecoveryMode,
) -> Result<Loaded> {
    let path = dir.join(STORE_ID_FILE);
    let found = crate::recovery::read_small(vfs, &path)?;
    let replaced = found.is_some();
    if let Some(bytes) = found {
        if let Some(id) = store_id::decode(&bytes) {
            return Ok(Loaded {
                id,
                replaced: false,
                unsaved: false,
            });
        }
        if recovery == RecoveryMode::Strict {
            return Err(Error::corrupt(
                &path,
                0,
                "the store id is damaged: the keys jobs give outside services \
                 (provider_key) derive from it; open with RecoveryMode::Salvage to draw \
                 a new one (those keys then change)",
            ));
        }
    }
    let id = draw().map_err(|e| Error::io("drawing a random store id", &path, e))?;
    let unsaved = match save(vfs, dir, id, mode) {
        Err(e) if crate::reserve::is_enospc(&e) => true,
        other => other.map(|()| false)?,
    };
    Ok(Loaded {
        id,
        replaced,
        unsaved,
    })
}

/// Writes `STORE_ID` with `id`, crash-atomically.
pub(crate) fn save(vfs: &dyn Vfs, dir: &Path, id: [u8; 16], mode: u32) -> Result<()> {
    crate::vfs::write_atomically(vfs, dir, STORE_ID_FILE, &[&store_id::encode(id)], mode).map(drop)
}

/// 16 bytes from the kernel's random source.
fn draw() -> std::io::Result<[u8; 16]> {
    let mut id = [0u8; 16];
    crate::os::random_bytes(&mut id)?;
    Ok(id)
}

/// The id as 32 lower-case hex digits.
pub(crate) fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
