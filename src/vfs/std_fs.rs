//! The real file system.

use std::any::Any;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::{Region, Vfs, VfsFile};

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile {
    file: File,
    map: OnceLock<Arc<Region>>,
    /// Appends may be stores into the map (see `os::map_stores_are_safe`);
    /// otherwise they are `pwrite`s, which return ENOSPC instead of
    /// raising SIGBUS.
    stores: OnceLock<bool>,
}

impl VfsFile for StdFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, off)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if let (Some(map), Some(true)) = (self.map.get(), self.stores.get()) {
            let end = off.checked_add(buf.len() as u64);
            if end.is_some_and(|end| end <= map.len() as u64) {
                let off = usize::try_from(off).map_err(|_| io::ErrorKind::InvalidInput)?;
                return map.write(off, buf);
            }
        }
        pwrite_all(&self.file, buf, off)
    }

    fn write_at_syscall(&self, buf: &[u8], off: u64) -> io::Result<()> {
        pwrite_all(&self.file, buf, off)
    }

    fn writes_by_syscall(&self) -> bool {
        !self.writes_are_map_stores()
    }

    fn writes_are_map_stores(&self) -> bool {
        matches!((self.map.get(), self.stores.get()), (Some(_), Some(true)))
    }

    fn write_zeros_ahead(&self, off: u64, len: u64) -> io::Result<()> {
        /// Zeros per `pwrite` (in the zero-initialised data segment, so no
        /// binary size).
        static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
        if !self.overwrites_in_place() {
            return Ok(());
        }
        let end = off.saturating_add(len).min(self.len()?);
        let mut at = off;
        while at < end {
            let n = (end - at).min(ZEROS.len() as u64);
            self.file.write_all_at(&ZEROS[..n as usize], at)?;
            at += n;
        }
        Ok(())
    }

    fn written_end(&self) -> u64 {
        // Only where zeros are written ahead at all (`data_end` reports
        // the whole file as data elsewhere, which would be harmless here
        // too, but says nothing).
        if !self.overwrites_in_place() {
            return 0;
        }
        self.len()
            .map_or(0, |len| crate::os::data_end(&self.file, len))
    }

    fn zeros_from(&self) -> io::Result<u64> {
        self.len().map(|len| crate::os::data_end(&self.file, len))
    }

    fn start_writeback(&self, off: u64, len: u64) -> io::Result<()> {
        crate::os::start_writeback(&self.file, off, len)
    }

    fn prefault(&self, off: u64, len: u64) -> io::Result<()> {
        if let Some(map) = self.map.get() {
            let off = usize::try_from(off).map_err(|_| io::ErrorKind::InvalidInput)?;
            let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
            map.prefault(off, len);
        }
        Ok(())
    }

    fn read_data(&self, buf: &mut [u8], from: usize) -> io::Result<usize> {
        /// Bytes per `pread`.
        const CHUNK: usize = 4 << 20;
        let len = buf.len();
        let end = usize::try_from(crate::os::data_end(&self.file, len as u64))
            .map_or(len, |e| e.min(len));
        let from = from.min(end);
        for (i, chunk) in buf[from..end].chunks_mut(CHUNK).enumerate() {
            self.file.read_exact_at(chunk, (from + i * CHUNK) as u64)?;
        }
        // The reads' readahead put clean zero pages past `end` into the
        // page cache, where they would count as data for the next look:
        // drop them (clean pages only; a hint).
        crate::os::drop_clean_pages(&self.file, end as u64, len as u64);
        Ok(end)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.map.get().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a mapped file is never resized",
            ));
        }
        self.file.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        crate::os::preallocate(&self.file, len)
    }

    fn reserve(&self, len: u64) -> io::Result<()> {
        crate::os::reserve_blocks(&self.file, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn map(&self, len: u64) -> io::Result<super::Mapping> {
        self.map_region(len).map(super::Mapping)
    }
}

/// `pwrite`s all of `buf` at `off`, trying again a few times on EAGAIN.
///
/// A blocking `pwrite` to a regular file is not supposed to return EAGAIN,
/// but a nearly full btrfs did (`.ci/fs-matrix.sh`, full disk under `Os`:
/// "Resource temporarily unavailable" on the record's `pwrite`, which
/// poisoned the queue where a full disk must be a plain ENOSPC). It is
/// transient: the write is tried again (the bytes already written are
/// written again, in place), up to [`EAGAIN_TRIES`] times with a short
/// pause, and a last EAGAIN is returned as it is.
fn pwrite_all(file: &File, buf: &[u8], off: u64) -> io::Result<()> {
    let mut tries = 1;
    loop {
        match file.write_all_at(buf, off) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < EAGAIN_TRIES => {
                std::thread::sleep(std::time::Duration::from_millis(tries));
                tries += 1;
            }
            other => return other,
        }
    }
}

/// How many times a `pwrite` that returns EAGAIN is made in all.
const EAGAIN_TRIES: u64 = 8;

impl StdFile {
    /// Whether the file system overwrites preallocated blocks in place
    /// (`os::map_stores_are_safe`): asked once, before or after the file
    /// is mapped (a spare's zeros are written before its map exists).
    fn overwrites_in_place(&self) -> bool {
        *self
            .stores
            .get_or_init(|| crate::os::map_stores_are_safe(&self.file))
    }

    fn map_region(&self, len: u64) -> io::Result<Arc<Region>> {
        if let Some(map) = self.map.get() {
            return Ok(map.clone());
        }
        let map = Arc::new(Region::map(&self.file, len)?);
        self.overwrites_in_place();
        Ok(self.map.get_or_init(|| map).clone())
    }
}

impl Vfs for StdFs {
    fn create_dir_all(&self, dir: &Path, mode: u32) -> io::Result<()> {
        DirBuilder::new().recursive(true).mode(mode).create(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn create(&self, path: &Path, mode: u32) -> io::Result<Box<dyn VfsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        Ok(Box::new(StdFile {
            file,
            map: OnceLock::new(),
            stores: OnceLock::new(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(StdFile {
            file,
            map: OnceLock::new(),
            stores: OnceLock::new(),
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn overwrites_need_space(&self, dir: &Path) -> bool {
        // The same test that chooses `pwrite` over stores into the map.
        File::open(dir).is_ok_and(|d| !crate::os::map_stores_are_safe(&d))
    }

    fn lock(&self, path: &Path, mode: u32) -> io::Result<Box<dyn Any + Send + Sync>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(mode)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
