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

/// The store id of the queue in `dir`: read from `STORE_ID`, or drawn and
/// written (crash-atomically, mode `mode`) when the file is missing. A
/// damaged file is `Corrupt` naming it under `RecoveryMode::Strict`
/// (a new id would change every provider key, so a side effect a job
/// already performed could be performed again); `Salvage` replaces it and
/// says so by returning `true`.
pub(crate) fn load_or_create(
    vfs: &dyn Vfs,
    dir: &Path,
    mode: u32,
    recovery: RecoveryMode,
) -> Result<([u8; 16], bool)> {
    let path = dir.join(STORE_ID_FILE);
    let found = crate::recovery::read_small(vfs, &path)?;
    let replaced = found.is_some();
    if let Some(bytes) = found {
        if let Some(id) = store_id::decode(&bytes) {
            return Ok((id, false));
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
    crate::vfs::write_atomically(vfs, dir, STORE_ID_FILE, &[&store_id::encode(id)], mode)?;
    Ok((id, replaced))
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
