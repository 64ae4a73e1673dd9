//! A segment's memory map, made on demand, and the bound on how many maps
//! a log keeps.
//!
//! Every map is one entry of the process's `vm.max_map_count` (65,530 by
//! default) and pins address space (64 MiB per default segment), so a
//! backlog of sealed segments must not keep one each. A sealed segment is
//! mapped when a record in it is read and unmapped again, least recently
//! used first, once the log holds more than [`MAX_MAPS`] of them (see
//! `Log::trim_maps`). The active segment keeps its map (appends store into
//! it).
//!
//! Soundness: [`SegMap::bytes`] hands out slices that borrow the
//! `SegMap`; the map lives in a `OnceLock` that is only ever emptied
//! through `&mut SegMap` ([`SegMap::unmap`]), so the borrow checker proves
//! that no slice of a map outlives it. The log unmaps a segment only
//! through `Arc::get_mut`, that is, when nothing else holds the segment.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::vfs::{Region, Vfs, VfsFile};

/// Maps of segments one log keeps at most between operations (the active
/// segment's included): 256 maps of the default 64 MiB segments are 16 GiB
/// of address space and 256 of the 65,530 entries of `vm.max_map_count`.
/// One operation may map a few more; the next one unmaps them again.
pub const MAX_MAPS: usize = 256;

/// Bytes [`SegMap::readable`] checks past the ones asked for, so that a
/// reader moving through a segment makes one check per this much.
pub const READ_WINDOW: usize = 64 << 10;

/// The unit [`SegMap::readable`] counts in (the smallest page size).
const PAGE: usize = 4096;

/// What the segments of one log share: the file system to map a sealed
/// segment again, the count of maps, and a clock for least-recent use.
#[derive(Debug)]
pub struct MapBudget {
    vfs: Arc<dyn Vfs>,
    limit: usize,
    mapped: AtomicUsize,
    clock: AtomicU64,
}

impl MapBudget {
    /// A budget of `limit` maps (at least 2: the active segment and the
    /// one being read) for segments on `vfs`.
    pub fn new(vfs: Arc<dyn Vfs>, limit: usize) -> MapBudget {
        MapBudget {
            vfs,
            limit: limit.max(2),
            mapped: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
        }
    }

    /// Maps that exist now.
    pub fn mapped(&self) -> usize {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Whether more maps exist than the limit allows.
    #[inline]
    pub fn over(&self) -> bool {
        self.mapped() > self.limit
    }

    /// How many maps to keep after a trim: a quarter below the limit, so a
    /// drain through many segments trims once per many segments, not once
    /// per segment.
    pub fn trim_to(&self) -> usize {
        self.limit - self.limit / 4
    }
}

/// A segment's map (see the module docs).
#[derive(Debug)]
pub struct SegMap {
    path: PathBuf,
    len: usize,
    map: OnceLock<Arc<Region>>,
    /// Bytes below this are published: the watermark while the segment is
    /// unmapped. While mapped, the map's own watermark is the one that
    /// counts (appends move only that one, see [`SegMap::append`]); it is
    /// never below this.
    published: AtomicUsize,
    /// The budget's clock at the last read (least recently used first).
    used: AtomicU64,
    /// End of the bytes stored through the map (not by `pwrite`): pages
    /// below it may be mapped dirty (see [`SegMap::release_stored`]).
    stored: AtomicUsize,
    /// Whole pages below this were released already.
    released: AtomicUsize,
    /// Appends store into the map itself (see [`SegMap::append`]).
    stores: AtomicBool,
    /// The pages a read last checked ([`SegMap::readable`]): first and
    /// end page, packed `first << 32 | end`; empty after an unmap.
    checked: AtomicU64,
    budget: OnceLock<Arc<MapBudget>>,
}

impl SegMap {
    /// The map of the file at `path`, `len` bytes long, not mapped yet.
    pub fn new(path: PathBuf, len: usize) -> SegMap {
        SegMap {
            path,
            len,
            map: OnceLock::new(),
            published: AtomicUsize::new(0),
            used: AtomicU64::new(0),
            stored: AtomicUsize::new(0),
            released: AtomicUsize::new(0),
            stores: AtomicBool::new(false),
            checked: AtomicU64::new(0),
            budget: OnceLock::new(),
        }
    }

    /// Bytes up to `end` were stored through the map.
    pub fn stored(&self, end: usize) {
        self.stored.fetch_max(end, Ordering::AcqRel);
    }

    /// Where the released pages end (for tests).
    #[cfg(test)]
    pub fn released(&self) -> usize {
        self.released.load(Ordering::Acquire)
    }

    /// Drops this process's page-table entries for the whole pages below
    /// `upto` that were stored through the map and not released yet
    /// (`Region::release_pages`: no byte changes), before their writeback
    /// or sync: a page that writeback cleans while it is mapped writable
    /// costs an interprocessor interrupt to every other CPU running the
    /// process. Each page is released once; pages written by `pwrite`
    /// only (the appends under `Durability::Sync`) are never mapped dirty
    /// and not released.
    pub fn release_stored(&self, upto: usize) {
        const PAGE: usize = 4096;
        let upto = upto.min(self.stored.load(Ordering::Acquire)) / PAGE * PAGE;
        let from = self.released.fetch_max(upto, Ordering::AcqRel);
        if from < upto {
            if let Some(map) = self.map.get() {
                map.release_pages(from, upto - from);
            }
        }
    }

    /// Counts this segment's maps in `budget` from now on, and maps it
    /// again through the budget's file system once unmapped. The first
    /// budget attached stays.
    pub fn attach(&self, budget: &Arc<MapBudget>) {
        if self.budget.set(budget.clone()).is_ok() && self.map.get().is_some() {
            budget.mapped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes `0..published()` are readable and frozen.
    pub fn published(&self) -> usize {
        match self.map.get() {
            Some(map) => map.published(),
            None => self.published.load(Ordering::Acquire),
        }
    }

    /// From now on [`SegMap::append`] stores into the map: the segment's
    /// file writes by nothing but stores into a map of it
    /// (`VfsFile::writes_are_map_stores`), so a store into this map, a
    /// shared map of the same file, is the same write.
    /// Not while a read has diverged the map ([`SegMap::close_read`]).
    pub fn store_appends(&self) {
        if !self.diverged() {
            self.stores.store(true, Ordering::Relaxed);
        }
    }

    /// Stores `head` at `off` and `tail` right after it into the map and
    /// publishes both (`Region::append`), where appends are map stores
    /// ([`SegMap::store_appends`]) and the segment is mapped; `None`
    /// otherwise, and then nothing was written.
    #[inline]
    pub fn append(&self, off: usize, head: &[u8], tail: &[u8]) -> Option<std::io::Result<()>> {
        if !self.stores.load(Ordering::Relaxed) {
            return None;
        }
        let map = self.map.get()?;
        Some(map.append(off, head, tail).map(|()| {
            // One appender moves `stored` (under the queue lock), and it
            // only says which pages to release, a hint (`release_stored`):
            // a load and a store, not a read-modify-write.
            let end = off + head.len() + tail.len();
            if end > self.stored.load(Ordering::Relaxed) {
                self.stored.store(end, Ordering::Release);
            }
        }))
    }

    /// Freezes `0..upto` (see `Region::publish`).
    pub fn publish(&self, upto: usize) {
        self.published
            .fetch_max(upto.min(self.len), Ordering::AcqRel);
        if let Some(map) = self.map.get() {
            map.publish(upto);
        }
    }

    /// Installs `region` as the map (the active segment's, made from its
    /// open file), unless one exists.
    pub fn set(&self, region: Arc<Region>) {
        region.publish(self.published());
        if self.map.set(region).is_ok() {
            if let Some(b) = self.budget.get() {
                b.mapped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Advises the map, if there is one (see [`Region::advise`]).
    pub fn advise(&self, appending: bool) {
        if let Some(map) = self.map.get() {
            map.advise(appending);
        }
    }

    /// Whether the segment is mapped now.
    pub fn is_mapped(&self) -> bool {
        self.map.get().is_some()
    }

    /// When the map was last read (the budget's clock).
    pub fn last_used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The map, made now (from `file` while the segment has its
    /// descriptor, else by opening the file again) if there is none.
    pub fn region(&self, file: Option<&dyn VfsFile>) -> std::io::Result<&Arc<Region>> {
        if let Some(b) = self.budget.get() {
            let now = b.clock.fetch_add(1, Ordering::Relaxed);
            self.used.store(now, Ordering::Relaxed);
        }
        if let Some(map) = self.map.get() {
            return Ok(map);
        }
        let len = self.len as u64;
        let made = match (file, self.budget.get()) {
            (Some(f), _) => f.map(len)?,
            (None, Some(b)) => b.vfs.open(&self.path)?.map(len)?,
            (None, None) => {
                return Err(std::io::Error::other(
                    "the segment is sealed and not attached to a log",
                ))
            }
        };
        self.set(made.0);
        Ok(self.map.get().expect("set above"))
    }

    /// The published bytes `off..off+len` (mapping the segment if needed),
    /// or `None` if they are not published or the map cannot be made.
    pub fn bytes_with(&self, file: Option<&dyn VfsFile>, off: usize, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len)?;
        if end > self.published() {
            return None;
        }
        self.region(file).ok()?.bytes(off, len)
    }

    /// The published bytes `off..off+len` of a segment mapped already or
    /// sealed (see [`SegMap::bytes_with`]).
    pub fn bytes(&self, off: usize, len: usize) -> Option<&[u8]> {
        self.bytes_with(None, off, len)
    }

    /// Checks that the kernel can read `off..off+len` of the map, mapped
    /// already ([`Region::populate_read`]): a page it cannot read (an I/O
    /// error, or a file cut short by someone else) is an error here, not
    /// `SIGBUS` when the bytes are touched. The check covers up to
    /// [`READ_WINDOW`] bytes past the range, and a range inside the pages
    /// last checked is not checked again, so a reader moving forward makes
    /// one `madvise` per window. Only the range's own pages decide: when
    /// the window fails, they are checked alone. `Ok` when there is no map.
    ///
    /// Not a guarantee: a page the kernel drops after its check (memory
    /// pressure) and then fails to read again still raises `SIGBUS`
    /// (docs/architecture.md, "I/O errors and external actions").
    ///
    /// The window test (nearly every call: each job's read-back checks
    /// its header, then its length) is inline; the `madvise` out of line.
    #[inline]
    pub fn readable(&self, off: usize, len: usize) -> std::io::Result<()> {
        let end = off.saturating_add(len).min(self.len);
        let checked = self.checked.load(Ordering::Relaxed);
        let (first, last) = ((checked >> 32) as usize, (checked & 0xffff_ffff) as usize);
        if first * PAGE <= off && end <= last * PAGE {
            return Ok(());
        }
        self.check_readable(off, end)
    }

    /// [`SegMap::readable`] for `off..end` outside the pages last checked.
    #[inline(never)]
    fn check_readable(&self, off: usize, end: usize) -> std::io::Result<()> {
        let Some(map) = self.map.get() else {
            return Ok(());
        };
        if off >= end {
            // Nothing of the map asked for (`bytes` refuses such a range).
            return Ok(());
        }
        let first = off / PAGE;
        let last = end
            .max(off.saturating_add(READ_WINDOW))
            .min(self.len)
            .div_ceil(PAGE);
        if map
            .populate_read(first * PAGE, (last - first) * PAGE)
            .is_err()
        {
            // Something in the window is unreadable; the record's own
            // pages decide (a bad page after it is another record's).
            return map.populate_read(off, end.saturating_sub(off));
        }
        // A segment is at most 1 GiB: page numbers fit in 32 bits.
        self.checked
            .store(((first as u64) << 32) | last as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Opens a read window over the map, if there is one
    /// (`Region::open_read`): until [`SegMap::close_read`], a page that
    /// faults is an error from it, not `SIGBUS`.
    #[inline(always)]
    pub fn open_read(&self) -> Option<crate::os::ReadGuard<'_>> {
        self.map.get().map(|m| m.open_read())
    }

    /// Closes a read window of [`SegMap::open_read`]: `Err` if a page
    /// faulted while it was open. The map then no longer shows the file
    /// (`Region::diverged`), so appends stop storing into it: they take
    /// the path of [`Segment::write_by`](crate::segment::Segment::write_by),
    /// which refuses them.
    #[inline(always)]
    pub fn close_read(&self, window: Option<crate::os::ReadGuard<'_>>) -> Result<(), ()> {
        match window.map(|w| w.close()) {
            Some(Err(())) => {
                self.stores.store(false, Ordering::Relaxed);
                Err(())
            }
            _ => Ok(()),
        }
    }

    /// Runs `read`, which reads only slices of this map
    /// ([`SegMap::bytes`]), in a read window ([`SegMap::open_read`]):
    /// `Err` if a page faulted (the read saw zeros there).
    #[inline(always)]
    pub fn guard_read<R>(&self, read: impl FnOnce() -> R) -> Result<R, ()> {
        let window = self.open_read();
        let out = read();
        self.close_read(window).map(|()| out)
    }

    /// Whether a faulted read or a refused store diverged this map
    /// (`Region::diverged`): it no longer shows the file, so nothing more
    /// may be written to the segment while it is mapped.
    #[inline]
    pub fn diverged(&self) -> bool {
        self.map.get().is_some_and(|m| m.diverged())
    }

    /// Drops the map (mapped again on the next read). `&mut`: no slice of
    /// it can be alive.
    pub fn unmap(&mut self) {
        // A check of the old map's pages says nothing of the next map's.
        *self.checked.get_mut() = 0;
        if let Some(map) = self.map.take() {
            // The map's watermark outlives it here.
            self.published.fetch_max(map.published(), Ordering::AcqRel);
            if let Some(b) = self.budget.get() {
                b.mapped.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for SegMap {
    fn drop(&mut self) {
        self.unmap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::SimFs;
    use std::path::Path;

    /// On a real file cut short under its map: a record below the cut is
    /// readable though its window reaches past the cut, one past the cut
    /// is not, and a failed window is not remembered as checked.
    #[cfg(target_os = "linux")]
    #[test]
    fn only_a_records_own_pages_decide_whether_it_is_readable() {
        use crate::vfs::{StdFs, Vfs};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let file = StdFs.create(&path, 0o600).unwrap();
        file.allocate(256 << 10).unwrap();
        file.write_at(&[9u8; 256 << 10], 0).unwrap();
        let m = SegMap::new(path.clone(), 256 << 10);
        m.set(file.map(256 << 10).unwrap().0);
        m.publish(256 << 10);
        assert!(m.readable(200 << 10, 100).is_ok(), "nothing cut yet");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(8 << 10)
            .unwrap();
        assert!(m.readable(70 << 10, 100).is_err(), "past the cut");
        assert!(
            m.readable(4096, 100).is_ok(),
            "below the cut, its window past it"
        );
        assert!(
            m.readable(4200, 100).is_ok(),
            "the failed window was not kept"
        );
        assert!(m.readable(8 << 10, 1).is_err(), "the first page cut");
        assert!(
            m.readable(6 << 10, 4 << 10).is_err(),
            "a record across the cut"
        );
        assert!(m.bytes(0, 4).is_some_and(|b| b == [9u8; 4]));
        assert!(
            m.readable(300 << 10, 10).is_ok(),
            "past the map: nothing to check"
        );
    }

    #[test]
    fn a_sealed_map_is_made_again_on_demand_and_counted() {
        let fs = SimFs::new();
        let dir = Path::new("/q");
        fs.create_dir_all(dir, 0o700).unwrap();
        let path = dir.join("f");
        let file = fs.create(&path, 0o600).unwrap();
        file.allocate(4096).unwrap();
        file.write_at(b"hello", 0).unwrap();
        let budget = Arc::new(MapBudget::new(Arc::new(fs.clone()), 2));
        let mut m = SegMap::new(path, 4096);
        m.attach(&budget);
        m.publish(5);
        assert_eq!(budget.mapped(), 0, "nothing mapped before a read");
        drop(file);
        assert_eq!(m.bytes(0, 5), Some(&b"hello"[..]));
        assert_eq!(budget.mapped(), 1);
        assert!(m.bytes(0, 6).is_none(), "not published");
        m.unmap();
        assert_eq!(budget.mapped(), 0);
        assert!(!m.is_mapped());
        assert_eq!(m.bytes(1, 4), Some(&b"ello"[..]), "mapped again");
        assert_eq!(budget.mapped(), 1);
        drop(m);
        assert_eq!(budget.mapped(), 0);
    }
}
