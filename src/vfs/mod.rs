//! The file-system seam.
//!
//! The engine touches files only through [`Vfs`] and [`VfsFile`]. The real
//! implementation is [`StdFs`]; tests plug in file systems that simulate
//! power loss or inject I/O faults (see `tests/`), so every crash and fault
//! scenario runs against the same engine code that users run.

#[cfg(any(test, feature = "testing"))]
mod sim;
mod std_fs;

use std::any::Any;
use std::io;
use std::path::Path;

// Not re-exported: the map type never leaves the crate, even with the
// `testing` feature (its methods are crate-private too).
pub(crate) use crate::os::Region;

/// A file's memory map as the seam hands it over: opaque outside walq
/// (nothing outside the crate can read or write through it), so a file
/// system written outside the crate, such as a test's wrapper around
/// [`SimFs`], can pass a map along but never touch its bytes.
#[derive(Clone)]
pub struct Mapping(pub(crate) std::sync::Arc<Region>);
#[cfg(any(test, feature = "testing"))]
pub use sim::{Fault, FaultOp, SimFs};
pub use std_fs::StdFs;

/// A file opened through a [`Vfs`].
#[allow(clippy::len_without_is_empty)]
pub trait VfsFile: Send + Sync + std::fmt::Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `off`.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// Writes all of `buf` at `off`. Within a mapped range the bytes become
    /// visible through the [`Mapping`] returned by [`VfsFile::map`].
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Writes all of `buf` at `off` with a write system call (`pwrite`),
    /// never as stores into the map (the log's appends under
    /// `Durability::Sync`: see `docs/architecture.md`). By default the same
    /// as [`VfsFile::write_at`].
    fn write_at_syscall(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.write_at(buf, off)
    }
    /// Whether [`VfsFile::write_at`] is a system call (`pwrite`), not a
    /// store into a map: then the log stages the records of a batch for
    /// one write, as it does for [`VfsFile::write_at_syscall`] appends. By
    /// default `false` (the simulated file system stores into memory).
    fn writes_by_syscall(&self) -> bool {
        false
    }
    /// Whether [`VfsFile::write_at`] is nothing but a store into this
    /// file's shared map, so that the log may store an append into the
    /// segment's map itself, write and publication under one lock
    /// (`Region::append`). By default `false`: every write goes through
    /// `write_at` (the simulated file system records each one for its
    /// crash model).
    fn writes_are_map_stores(&self) -> bool {
        false
    }
    /// Starts writing back `off..off+len` without waiting for it and
    /// without reading the file's writeback-error state (see
    /// `os::start_writeback`): a hint that makes a later
    /// [`VfsFile::sync_data`] cheaper. A no-op by default.
    fn start_writeback(&self, off: u64, len: u64) -> io::Result<()> {
        let _ = (off, len);
        Ok(())
    }
    /// Writes zeros over `off..off+len`, preallocated space past the
    /// log's tail that reads as zeros already, where the file system
    /// overwrites preallocated blocks in place (ext4, xfs, tmpfs): their
    /// extents become written, so the fdatasyncs of the appends that later
    /// land there write data only, with no extent conversion to commit
    /// (`Log::zero_ahead`). A hint: it changes no byte the file reads, and
    /// elsewhere, or by default, it does nothing.
    fn write_zeros_ahead(&self, off: u64, len: u64) -> io::Result<()> {
        let _ = (off, len);
        Ok(())
    }
    /// An offset past which the file's blocks may still be preallocated
    /// and never written (where [`VfsFile::write_zeros_ahead`] would have
    /// work to do); everything before it is data the file system has
    /// written or holds in its page cache. A hint for the log's zeros
    /// ahead after an open: too high costs the appends there an extent
    /// conversion at their sync, never a byte. By default 0 (nothing
    /// known written).
    fn written_end(&self) -> u64 {
        0
    }
    /// Faults in `off..off+len` of the file's map for writing ahead of
    /// the appends that will store there (`MADV_POPULATE_WRITE`, see
    /// `os::Region::prefault`), so that they do not each take a page fault
    /// that zero-fills a page. A hint: it changes no byte of the file, and
    /// without a map it does nothing. A no-op by default.
    fn prefault(&self, off: u64, len: u64) -> io::Result<()> {
        let _ = (off, len);
        Ok(())
    }
    /// Reads the file from offset `from` into `buf[from..]` (`buf` is as
    /// long as the file) up to where its data ends and returns that end:
    /// past it the file is known to read as zeros (holes, preallocated
    /// extents never written), and the rest of `buf` is left as it is
    /// (zeros, from the caller). By default all of `buf[from..]` is read.
    fn read_data(&self, buf: &mut [u8], from: usize) -> io::Result<usize> {
        let from = from.min(buf.len());
        self.read_at(&mut buf[from..], from as u64)?;
        Ok(buf.len())
    }
    /// An offset at or below the file's length past which it is known to
    /// read as zeros (holes, preallocated extents never written). By
    /// default its length: all of it may be data.
    fn zeros_from(&self) -> io::Result<u64> {
        self.len()
    }
    /// Sets the length (used only on files that are never mapped).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves disk space so that the file is at least `len` bytes long.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Allocates the blocks of the file's first `len` bytes without
    /// changing its length (`fallocate` with `FALLOC_FL_KEEP_SIZE`), so
    /// that appends up to `len` write into blocks that exist: on a full
    /// disk this fails, and such an append after it does not. Where the
    /// file system cannot, nothing is reserved (the default: `Ok`).
    fn reserve(&self, len: u64) -> io::Result<()> {
        let _ = len;
        Ok(())
    }
    /// `fdatasync`: data and the metadata needed to read it are durable.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: data and all metadata are durable.
    fn sync_all(&self) -> io::Result<()>;
    /// Maps the first `len` bytes (the file is at least that long and never
    /// shrinks afterwards). Writes through [`VfsFile::write_at`] to the
    /// range show in the region.
    fn map(&self, len: u64) -> io::Result<Mapping>;
}

/// The bytes of `file` (at `path`) from `from` to `to`, read only up to
/// where its data ends ([`VfsFile::zeros_from`]; the zeros past it are
/// left out, so the result may be shorter). Their memory is reserved
/// first: a span too large to hold (a sparse file of many GiB where the
/// file system does not report its holes) is an error naming the file,
/// the offset and the size, not an abort.
pub(crate) fn read_span(
    file: &dyn VfsFile,
    path: &Path,
    from: u64,
    to: u64,
) -> crate::error::Result<Vec<u8>> {
    use crate::error::{Error, ErrorKind};
    let data_end = file
        .zeros_from()
        .map_err(|e| Error::io("looking for the data of", path, e))?;
    let end = data_end.min(to).max(from);
    let mut buf = Vec::new();
    let room = usize::try_from(end - from)
        .map_err(|_| ())
        .and_then(|n| buf.try_reserve_exact(n).map(|()| n).map_err(|_| ()));
    let Ok(n) = room else {
        let what = format!(
            "{} bytes from offset {from}: more than this process can hold in memory to read",
            end - from
        );
        return Err(Error::new(ErrorKind::Io, what).with_path(path));
    };
    buf.resize(n, 0);
    file.read_at(&mut buf, from)
        .map_err(|e| Error::io("reading", path, e))?;
    Ok(buf)
}

/// A file system.
pub trait Vfs: Send + Sync + std::fmt::Debug {
    /// Creates `dir` and its parents, with `mode` for the ones created.
    fn create_dir_all(&self, dir: &Path, mode: u32) -> io::Result<()>;
    /// The names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new file (failing if it exists) with permission `mode`.
    fn create(&self, path: &Path, mode: u32) -> io::Result<Box<dyn VfsFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created with `mode` if missing),
    /// held until the returned guard is dropped. Fails with
    /// [`io::ErrorKind::WouldBlock`] if anyone else holds it.
    fn lock(&self, path: &Path, mode: u32) -> io::Result<Box<dyn Any + Send + Sync>>;
    /// Whether overwriting bytes of a preallocated file in `dir` can fail
    /// for lack of space (a copy-on-write file system such as btrfs): walq
    /// then keeps a reserve file there that it gives up to let leases and
    /// acks through on a full disk (see `reserve`). False unless a file
    /// system says so.
    fn overwrites_need_space(&self, dir: &Path) -> bool {
        let _ = dir;
        false
    }
}

/// How a [`try_write_atomically`] failed.
#[derive(Debug)]
pub(crate) enum AtomicWriteError {
    /// Before the rename: the file is as it was (the `.tmp` removed).
    Unchanged(crate::Error),
    /// After the rename: the new file is in place, its name not known
    /// durable (the directory's sync failed).
    Replaced(crate::Error),
}

impl AtomicWriteError {
    /// The error, whichever step failed.
    pub(crate) fn into_error(self) -> crate::Error {
        match self {
            AtomicWriteError::Unchanged(e) | AtomicWriteError::Replaced(e) => e,
        }
    }
}

/// Writes `dir/name` crash-atomically with `parts` one after another: a
/// temporary file `name.tmp` is written and fsynced, renamed over `name`,
/// and the directory fsynced. After a crash the file is either the old one
/// or the new one; a failure removes the temporary file at once. The one
/// implementation of the protocol for small files (`dead.wal`, `CLOSED`).
pub(crate) fn write_atomically(
    vfs: &dyn Vfs,
    dir: &Path,
    name: &str,
    parts: &[&[u8]],
    mode: u32,
) -> crate::Result<Box<dyn VfsFile>> {
    try_write_atomically(vfs, dir, name, parts, mode).map_err(AtomicWriteError::into_error)
}

/// [`write_atomically`], saying whether a failure came before the rename
/// (nothing changed) or after it.
pub(crate) fn try_write_atomically(
    vfs: &dyn Vfs,
    dir: &Path,
    name: &str,
    parts: &[&[u8]],
    mode: u32,
) -> Result<Box<dyn VfsFile>, AtomicWriteError> {
    use crate::error::Error;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{}", crate::segment::TMP_SUFFIX));
    let _ = vfs.remove(&tmp);
    let file = vfs
        .create(&tmp, mode)
        .map_err(|e| AtomicWriteError::Unchanged(Error::io("creating", &tmp, e)))?;
    let mut off = 0u64;
    let written = parts
        .iter()
        .try_for_each(|part| {
            file.write_at(part, off)?;
            off += part.len() as u64;
            Ok(())
        })
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))
        .and_then(|()| {
            vfs.rename(&tmp, &path)
                .map_err(|e| Error::io("renaming", &path, e))
        });
    if let Err(e) = written {
        drop(file);
        let _ = vfs.remove(&tmp);
        return Err(AtomicWriteError::Unchanged(e));
    }
    vfs.sync_dir(dir)
        .map_err(|e| AtomicWriteError::Replaced(Error::io("syncing directory", dir, e)))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes, all data as far as it knows, whose bytes
    /// are `byte` (nothing is stored).
    #[derive(Debug)]
    struct Endless {
        len: u64,
        byte: u8,
    }

    impl VfsFile for Endless {
        fn len(&self) -> io::Result<u64> {
            Ok(self.len)
        }
        fn read_at(&self, buf: &mut [u8], _off: u64) -> io::Result<()> {
            buf.fill(self.byte);
            Ok(())
        }
        fn write_at(&self, _buf: &[u8], _off: u64) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn set_len(&self, _len: u64) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn allocate(&self, _len: u64) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
        fn sync_all(&self) -> io::Result<()> {
            Ok(())
        }
        fn map(&self, _len: u64) -> io::Result<Mapping> {
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    #[test]
    fn a_span_too_large_to_hold_is_an_error_that_names_it() {
        let file = Endless {
            len: u64::MAX / 2,
            byte: 7,
        };
        let path = Path::new("/queue/dead.wal");
        let err = read_span(&file, path, 64, file.len).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("dead.wal"), "{text}");
        assert!(text.contains("from offset 64"), "{text}");
        assert!(text.contains(&format!("{} bytes", file.len - 64)), "{text}");
        // A span that fits is read.
        assert_eq!(read_span(&file, path, 64, 80).unwrap(), vec![7u8; 16]);
    }
}
