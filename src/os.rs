//! The only `unsafe` code in walq: memory maps of segment files, the heap
//! stand-in that test file systems use in their place, and `fallocate`.
//!
//! # Safety argument
//!
//! A [`Region`] is a fixed-length byte range shared between one writer and
//! many readers. Soundness rests on three rules that the rest of the crate
//! keeps and that this module checks where it can:
//!
//! 1. **The mapped file never shrinks while mapped.** walq maps only log
//!    segments, which are preallocated to their full size when created and
//!    never truncated: a torn tail is cut by writing zeros, not by
//!    `set_len`. Segments are deleted by unlinking, which leaves existing
//!    mappings valid (the inode lives until the last mapping is gone).
//!    Another process cannot shrink the file through walq, because the
//!    queue directory is locked (`LOCK`, `flock`). A process outside walq
//!    that truncates a segment is outside the contract: reading a mapped
//!    page past the end of a file raises `SIGBUS`, as with every mmap
//!    database (LMDB, bbolt).
//! 2. **Bytes are written once, before they are read.** The engine writes a
//!    record past the published tail while holding the queue lock, then
//!    publishes the new tail under that lock; readers take slices only below
//!    a tail they read under the lock. So no slice handed out by
//!    [`Region::bytes`] ever overlaps a concurrent [`Region::write`]. The one
//!    exception, zeroing a torn tail during recovery, happens before any
//!    reader exists.
//! 3. **Bounds are checked** on every read and write; an out-of-range
//!    request returns `None` or an error, never touches memory.
//!
//! I/O errors: a read of a mapped page that the disk cannot deliver raises
//! `SIGBUS` (there is no error return from a memory access). walq reduces
//! the exposure by mapping only files it preallocated and verified on open,
//! and by checking every record's CRC when it is read, so silent corruption
//! is reported as [`crate::ErrorKind::Corrupt`]. Write errors surface at
//! `fdatasync`, which is checked and poisons the queue.

use std::cell::UnsafeCell;
use std::fs::File;
use std::io;

/// A fixed-length byte region: a shared memory map of a file, or a heap
/// buffer standing in for one in test file systems.
pub struct Region {
    inner: Inner,
    len: usize,
}

enum Inner {
    Map(memmap2::MmapRaw),
    Heap(Box<[UnsafeCell<u8>]>),
}

// SAFETY: the region is plain memory; concurrent access follows rule 2 of
// the module safety argument (writes and reads never overlap).
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Map(_) => "mmap",
            Inner::Heap(_) => "heap",
        };
        write!(f, "Region({kind}, {} bytes)", self.len)
    }
}

impl Region {
    /// Maps the first `len` bytes of `file` shared, readable and writable.
    /// The file must already be at least `len` bytes long.
    pub fn map(file: &File, len: u64) -> io::Result<Region> {
        let file_len = file.metadata()?.len();
        if file_len < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot map {len} bytes of a {file_len}-byte file"),
            ));
        }
        let len_usize = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "map length"))?;
        let map = memmap2::MmapOptions::new().len(len_usize).map_raw(file)?;
        Ok(Region {
            inner: Inner::Map(map),
            len: len_usize,
        })
    }

    /// A zeroed heap region of `len` bytes.
    pub fn heap(len: usize) -> Region {
        let buf: Box<[UnsafeCell<u8>]> = (0..len).map(|_| UnsafeCell::new(0)).collect();
        Region {
            inner: Inner::Heap(buf),
            len,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn base(&self) -> *mut u8 {
        match &self.inner {
            Inner::Map(m) => m.as_mut_ptr(),
            Inner::Heap(b) => UnsafeCell::raw_get(b.as_ptr()),
        }
    }

    /// The bytes `off..off+len`, or `None` if out of range.
    ///
    /// Callers read only ranges that were written and published before
    /// (rule 2 of the module safety argument).
    pub fn bytes(&self, off: usize, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above); the memory lives as long as
        // `self`; by rule 2 nothing writes to this range while the slice
        // lives.
        Some(unsafe { std::slice::from_raw_parts(self.base().add(off), len) })
    }

    /// Copies `data` to `off`. Callers write only past every published
    /// range (rule 2).
    pub fn write(&self, off: usize, data: &[u8]) -> io::Result<()> {
        let end = off.checked_add(data.len());
        if end.is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write of {} bytes at {off} is past the {}-byte region",
                    data.len(),
                    self.len
                ),
            ));
        }
        // SAFETY: in bounds (checked above); `data` is a separate borrow
        // and cannot overlap a region we hold no slice of for writing; by
        // rule 2 no reader holds a slice of this range.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base().add(off), data.len());
        }
        Ok(())
    }

    /// Faults in the pages of `off..off+len` for writing ahead of use
    /// (`MADV_POPULATE_WRITE`), so that appends do not take one page fault
    /// (and a readahead of preallocated zeros) per page. A hint: errors
    /// (older kernels) are ignored.
    pub fn prefault(&self, off: usize, len: usize) {
        #[cfg(target_os = "linux")]
        if let Inner::Map(m) = &self.inner {
            let len = len.min(self.len.saturating_sub(off));
            if len > 0 {
                let _ = m.advise_range(memmap2::Advice::PopulateWrite, off, len);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (off, len);
    }
}

/// Reserves `len` bytes of disk for `file` so that writes through a map
/// cannot fail for lack of space later. Falls back to writing zeros where
/// `fallocate` is not supported.
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let off_len = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length"))?;
        // SAFETY: plain syscall on a file descriptor we own; no memory is
        // passed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, off_len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(err);
        }
    }
    write_zeros(file, len)
}

fn write_zeros(file: &File, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let chunk = vec![0u8; 1 << 20];
    let mut off = file.metadata()?.len();
    while off < len {
        let n = usize::try_from((len - off).min(chunk.len() as u64)).unwrap_or(chunk.len());
        file.write_all_at(&chunk[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_region_bounds() {
        let r = Region::heap(16);
        r.write(4, b"abcd").unwrap();
        assert_eq!(r.bytes(4, 4), Some(&b"abcd"[..]));
        assert!(r.bytes(14, 4).is_none());
        assert!(r.bytes(usize::MAX, 2).is_none());
        assert!(r.write(14, b"abcd").is_err());
        assert!(r.write(usize::MAX, b"a").is_err());
    }

    #[test]
    fn map_refuses_a_short_file() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(10).unwrap();
        assert!(Region::map(&f, 20).is_err());
        let r = Region::map(&f, 10).unwrap();
        r.write(0, b"hello").unwrap();
        assert_eq!(r.bytes(0, 5), Some(&b"hello"[..]));
    }

    #[test]
    fn preallocate_sets_length() {
        let f = tempfile::tempfile().unwrap();
        preallocate(&f, 100_000).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 100_000);
    }
}
