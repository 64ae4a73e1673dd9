//! Scratch files for the probes (`fsync_probe`, `sync_probe`,
//! `write_probe`): a directory, and fresh files whose space is written,
//! preallocated or not there yet. Each probe includes this file as a
//! module of its own (`#[path]`), so not every probe uses every item.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What a fresh file's space is before a probe writes into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// None: every write grows the file.
    Growing,
    /// Written with zeros (initialised extents), then synced.
    Zeroed,
    /// `fallocate`d (unwritten extents on ext4 and xfs), then synced.
    Fallocated,
}

/// A scratch directory: under `COMPARE_DIR` if set, else the temp dir.
pub fn dir() -> tempfile::TempDir {
    match std::env::var_os("COMPARE_DIR") {
        Some(b) => tempfile::tempdir_in(b).expect("tempdir"),
        None => tempfile::tempdir().expect("tempdir"),
    }
}

/// Creates (or truncates) `path` with `len` bytes of `space`.
pub fn new_file(path: &Path, space: Space, len: u64) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("open");
    match space {
        Space::Growing => {}
        Space::Zeroed => {
            let chunk = vec![0u8; 1 << 20];
            let mut off = 0;
            while off < len {
                let n = (len - off).min(chunk.len() as u64) as usize;
                f.write_all_at(&chunk[..n], off).expect("zero fill");
                off += n as u64;
            }
        }
        Space::Fallocated => {
            // SAFETY: a plain system call on a descriptor this function owns.
            let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
            assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
        }
    }
    f.sync_all().expect("sync");
    f
}
