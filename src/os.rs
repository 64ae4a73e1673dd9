//! The only `unsafe` code in walq: memory maps of segment files, the heap
//! stand-in that test file systems use in their place, `fallocate`,
//! `fstatfs`, `sync_file_range`, `lseek(SEEK_DATA/SEEK_HOLE)`,
//! `posix_fadvise`, `madvise` of mapped segments, `clock_gettime` and
//! `getrandom`;
//! and, in `fault_guard` (Linux; with its own safety argument), the
//! `SIGBUS` handler that turns a store into a map, or a read of a record in
//! one, that the kernel cannot serve into an error.
//!
//! # Safety argument
//!
//! A [`Region`] is a fixed-length byte range shared between one writer and
//! many readers. It is crate-private (not reachable from the public API,
//! even with the `testing` feature: its type is not re-exported and every
//! method is `pub(crate)`), and it enforces the rule that makes its
//! shared slices sound by itself, whatever its callers do:
//!
//! 1. **Published bytes are never written again.** The region keeps a
//!    watermark, `published`, that only grows. [`Region::bytes`] hands out
//!    slices only below it; [`Region::write`] refuses any write that starts
//!    below it. So no slice handed out can overlap a write, now or later.
//! 2. **Writes and publication are serialised.** `write`, `publish` and
//!    `append` (both in one) take the region's writer lock, so a watermark
//!    never moves over a write in progress, and two writes never run at
//!    once. The watermark is stored with `Release` and `bytes` loads it
//!    with `Acquire`, so a reader that sees the watermark sees the bytes
//!    written below it.
//! 3. **Bounds are checked** on every read and write; an out-of-range
//!    request returns `None` or an error, never touches memory.
//! 4. **The mapped file never shrinks while mapped (by walq).** Segments
//!    are preallocated to their full size when created and never truncated:
//!    a torn tail is cut by writing zeros, not by `set_len`. Segments are
//!    deleted by unlinking, which leaves existing mappings valid. The queue
//!    directory is locked (`LOCK`, `flock`), so no other walq shrinks it.
//! 5. **Dropping page-table entries changes no byte.**
//!    [`Region::release_pages`] calls `MADV_DONTNEED` on the map, which is
//!    `unsafe` in memmap2 because on a *private* or anonymous map it
//!    discards the contents. A region's map is always shared and backed by
//!    a file ([`Region::map`], `map_raw`): there the kernel drops only this
//!    process's page-table entries (moving their dirty bits to the page
//!    cache), and the next access faults the same page back in from the
//!    page cache (madvise(2), "shared file mappings"). A slice handed out
//!    reads the same bytes before and after, and a store racing the call
//!    is not lost (the kernel clears each entry atomically and keeps its
//!    dirty bit). Heap regions do nothing. The one exception, a page
//!    `fault_guard` replaced by a private copy after a fault, marks the
//!    region diverged ([`Region::diverged`]) as soon as the faulting access
//!    returns, and a diverged region releases nothing; a release that
//!    races the replacement can only zero that page, whose bytes no reader
//!    is served again (the access fails, and the region is poisoned for
//!    writes).
//!
//! What remains outside the type system, as with every mmap database
//! (LMDB, bbolt): a process outside walq that truncates a live segment
//! makes a later access of the lost pages raise `SIGBUS`. walq limits that
//! exposure: a [`crate::Job`] owns a copy of its payload (user code never
//! holds a slice of a map), recovery reads files with `pread` before
//! mapping them, a record is read only after the kernel faulted its pages
//! in without error ([`Region::populate_read`], through
//! `SegMap::readable`: a page it cannot read is an error, not a signal),
//! and appends go through `pwrite` where a store into the
//! map could fault for lack of space (copy-on-write file systems, see
//! [`map_stores_are_safe`]); a store that faults all the same (a file
//! system that shut down, an active segment cut short), and a read of a
//! record whose page was cut or evicted after its check, is caught by
//! `fault_guard` and returned as an error ([`Region::open_read`]). `docs/architecture.md` lists
//! what stays fatal.

use std::cell::UnsafeCell;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

#[cfg(target_os = "linux")]
mod fault_guard;

/// Milliseconds on the system clock `id` (`CLOCK_REALTIME` or
/// `CLOCK_MONOTONIC`), from one `clock_gettime` (a vDSO call on Linux, no
/// system call). `None` if the call fails or the reading lies before the
/// clock's origin.
///
/// [`crate::SystemClock`] reads this once per operation; through
/// `std::time` a reading cost about three times as many instructions
/// (`SystemTime::duration_since` and `Instant::elapsed` check and convert
/// a `Duration` first).
pub(crate) fn clock_ms(id: libc::clockid_t) -> Option<u64> {
    clock_ns(id).map(|ns| ns / 1_000_000)
}

/// Fills `buf` from the kernel's random source (`getrandom(2)`, which
/// blocks only until the pool is first seeded at boot).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        // SAFETY: `rest` is a live, writable buffer of `rest.len()` bytes;
        // getrandom writes at most that many and keeps no pointer.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        got += n as usize;
    }
    Ok(())
}

/// Nanoseconds on the system clock `id`, as [`clock_ms`] reads it.
pub(crate) fn clock_ns(id: libc::clockid_t) -> Option<u64> {
    let mut ts = std::mem::MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `clock_gettime` writes one `timespec` into the buffer we pass
    // (valid, writable, properly aligned) and reads nothing else.
    let rc = unsafe { libc::clock_gettime(id, ts.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: the call succeeded, so it initialised the struct.
    let ts = unsafe { ts.assume_init() };
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// A fixed-length byte region: a shared memory map of a file, or a heap
/// buffer standing in for one in test file systems.
pub struct Region {
    inner: Inner,
    len: usize,
    /// Bytes below this are readable and never written again (rule 1).
    published: AtomicUsize,
    /// Serialises writes and publication (rule 2).
    writer: Mutex<()>,
    /// A guarded read faulted ([`Region::open_read`]), or a store was
    /// refused, and a page of the map was replaced by a private one
    /// (`fault_guard`): the map no longer shows the file, so every later
    /// write is refused.
    diverged: AtomicBool,
}

enum Inner {
    Map(memmap2::MmapRaw),
    // Only the simulated file system (tests, fuzzing) builds heap regions.
    #[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
    Heap(Box<[UnsafeCell<u8>]>),
}

// SAFETY: the region is plain memory; writes happen only above the
// published watermark under the writer lock, reads only below it (rules 1
// and 2 of the module safety argument), so no access races another.
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
    pub(crate) fn map(file: &File, len: u64) -> io::Result<Region> {
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
        #[cfg(target_os = "linux")]
        fault_guard::install();
        Ok(Region::new(Inner::Map(map), len_usize))
    }

    /// A zeroed heap region of `len` bytes.
    #[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
    pub(crate) fn heap(len: usize) -> Region {
        let buf: Box<[UnsafeCell<u8>]> = (0..len).map(|_| UnsafeCell::new(0)).collect();
        Region::new(Inner::Heap(buf), len)
    }

    fn new(inner: Inner, len: usize) -> Region {
        Region {
            inner,
            len,
            published: AtomicUsize::new(0),
            writer: Mutex::new(()),
            diverged: AtomicBool::new(false),
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes `0..published()` are readable and frozen.
    pub(crate) fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Freezes `0..upto` (clamped to the region): readable from now on,
    /// never written again. The watermark never goes back.
    pub(crate) fn publish(&self, upto: usize) {
        let _writer = self.writer.lock();
        self.published
            .fetch_max(upto.min(self.len), Ordering::Release);
    }

    fn base(&self) -> *mut u8 {
        match &self.inner {
            Inner::Map(m) => m.as_mut_ptr(),
            Inner::Heap(b) => UnsafeCell::raw_get(b.as_ptr()),
        }
    }

    /// The bytes `off..off+len`, or `None` unless the whole range is
    /// below the published watermark.
    pub(crate) fn bytes(&self, off: usize, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len)?;
        if end > self.published() {
            return None;
        }
        // SAFETY: in bounds (published <= len); the memory lives as long
        // as `self`; the range is below the watermark, which never goes
        // back, and `write` refuses every write that starts below it (rule
        // 1), so nothing writes to this range while the slice lives.
        Some(unsafe { std::slice::from_raw_parts(self.base().add(off), len) })
    }

    /// Opens a read window over the region: until [`ReadGuard::close`], a
    /// page of it that faults (a file cut short, a page evicted and
    /// unreadable since its check with [`Region::populate_read`]) is
    /// replaced by a private one, zeros where the kernel cannot read it,
    /// where the fault would have raised `SIGBUS` (`fault_guard`); `close`
    /// then says so. Read only this region's slices ([`Region::bytes`])
    /// while it is open, on this thread; windows do not nest. A heap
    /// region opens none.
    #[inline(always)]
    pub(crate) fn open_read(&self) -> ReadGuard<'_> {
        #[cfg(target_os = "linux")]
        let window = match self.inner {
            // SAFETY: the whole region is one shared file map of ours; a
            // fault elsewhere while the window is open is not in its range
            // and is passed on as before.
            Inner::Map(_) => Some(unsafe { fault_guard::ReadWindow::open(self.base(), self.len) }),
            Inner::Heap(_) => None,
        };
        ReadGuard {
            region: self,
            #[cfg(target_os = "linux")]
            window,
        }
    }

    /// Whether a guarded read or a refused store replaced a page of the map
    /// ([`Region::open_read`]): the map no longer shows the file, and
    /// nothing more may be written to the file while it is mapped (a
    /// `pwrite` would not show through the private page either).
    pub(crate) fn diverged(&self) -> bool {
        self.diverged.load(Ordering::Acquire)
    }

    /// Copies `data` to `off`, which must not be below the published
    /// watermark.
    pub(crate) fn write(&self, off: usize, data: &[u8]) -> io::Result<()> {
        let _writer = self.writer.lock();
        self.refuse_diverged()?;
        self.store(off, data)
    }

    /// Copies `head` to `off` and `tail` right after it, then publishes
    /// both, under one hold of the writer lock: [`Region::write`] twice and
    /// [`Region::publish`] in one, for an append (one lock round trip, not
    /// three, and no read-modify-write of the watermark). On an error
    /// nothing is published; the bytes already copied lie above the
    /// watermark, where no slice reaches them. Does not check
    /// [`Region::diverged`] (a load on every append): the segment's map
    /// stops taking appends when a read diverges it (`SegMap::close_read`).
    #[inline]
    pub(crate) fn append(&self, off: usize, head: &[u8], tail: &[u8]) -> io::Result<()> {
        let _writer = self.writer.lock();
        self.store(off, head)?;
        // `store` checked `off + head.len()` against the length: no overflow.
        let end = off + head.len();
        if !tail.is_empty() {
            self.store(end, tail)?;
        }
        let end = end + tail.len();
        // Every move of the watermark holds the writer lock (rule 2), so a
        // load and a store cannot lose a concurrent move.
        if end > self.published.load(Ordering::Relaxed) {
            self.published.store(end, Ordering::Release);
        }
        Ok(())
    }

    /// `Err` once a guarded read diverged the map ([`Region::diverged`]):
    /// a store would reach the private page, not the file.
    #[inline(always)]
    fn refuse_diverged(&self) -> io::Result<()> {
        if self.diverged.load(Ordering::Relaxed) {
            return Err(diverged_error());
        }
        Ok(())
    }

    /// Copies `data` to `off`, which must not be below the published
    /// watermark; the caller holds the writer lock.
    #[inline(always)]
    fn store(&self, off: usize, data: &[u8]) -> io::Result<()> {
        if off < self.published.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("write at {off} is below the published watermark"),
            ));
        }
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
        // SAFETY: in bounds (checked above); `data` is a shared borrow, so
        // it is not a slice of this range (slices exist only below the
        // watermark, and `off` is at or above it); the caller holds the
        // writer lock, so no other write and no publication runs meanwhile
        // (rule 2).
        let dst = unsafe { self.base().add(off) };
        #[cfg(target_os = "linux")]
        if let Inner::Map(_) = self.inner {
            // SAFETY: as above; a store the kernel refuses is diverted
            // into a private copy of its page (`fault_guard`).
            return unsafe { fault_guard::copy(data.as_ptr(), dst, data.len()) }.map_err(|()| {
                // The page is a private copy now: the map no longer shows
                // the file there.
                self.diverged.store(true, Ordering::Release);
                store_refused(off)
            });
        }
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// Faults in the pages of `off..off+len` for writing ahead of use
    /// (`MADV_POPULATE_WRITE`), so that appends do not take one page fault
    /// (and a readahead of preallocated zeros) per page. A hint: errors
    /// (older kernels) are ignored.
    pub(crate) fn prefault(&self, off: usize, len: usize) {
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

    /// Faults `off..off+len` of the map in for reading
    /// (`MADV_POPULATE_READ`, Linux 5.14), so that a page the kernel
    /// cannot read is an error here, where it can be reported, instead of
    /// `SIGBUS` at the access: an I/O error reading it from the device, a
    /// page beyond the end of a file someone cut short, a poisoned page.
    /// `Ok` where nothing could be checked: a kernel without the advice,
    /// a failure that says nothing about the page (no memory for page
    /// tables, a signal), a heap region.
    ///
    /// Changes no byte and no state that reads observe (rule 5 holds a
    /// fortiori: entries are added, none dropped).
    pub(crate) fn populate_read(&self, off: usize, len: usize) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Inner::Map(m) = &self.inner {
            let len = len.min(self.len.saturating_sub(off));
            if len > 0 {
                return match m.advise_range(memmap2::Advice::PopulateRead, off, len) {
                    // madvise(2): EFAULT "a SIGBUS would have been
                    // generated on actual access"; EHWPOISON a poisoned page.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EFAULT | libc::EHWPOISON | libc::EIO)
                        ) =>
                    {
                        Err(e)
                    }
                    _ => Ok(()),
                };
            }
        }
        let _ = (off, len);
        Ok(())
    }

    /// Tells the kernel how the map is used from now on (a hint: errors
    /// are ignored). `appending`: stores at a moving tail into a
    /// preallocated file, which gain nothing from readahead
    /// (`MADV_RANDOM`). Without it, a store's page fault can read ahead a
    /// whole window (up to the device's `read_ahead_kb`: 8 MiB on the
    /// virtio disk of docs/benchmarks.md) and zero-fill every page of it
    /// inline, the preallocated extents reading as zeros: 20-50 ms under
    /// the queue lock, seen with `perf` on ext4. Otherwise the default
    /// (`MADV_NORMAL`: readahead for the reads of a sealed segment).
    ///
    /// Not `MADV_HUGEPAGE` (tried and rejected, docs/benchmarks.md, "The
    /// writeback's TLB shootdowns"): it ends the per-page TLB shootdowns of the
    /// writeback, but ext4's `page_mkwrite` dirties a whole 2 MiB folio, so
    /// every fdatasync in the middle of one (a dead letter, `sync()`, a
    /// `Periodic` flush) writes 2 MiB.
    pub(crate) fn advise(&self, appending: bool) {
        if let Inner::Map(m) = &self.inner {
            let advice = if appending {
                memmap2::Advice::Random
            } else {
                memmap2::Advice::Normal
            };
            let _ = m.advise(advice);
        }
    }

    /// Drops this process's page-table entries for `off..off+len` of the
    /// map (`MADV_DONTNEED`; rule 5 of the module safety argument): a
    /// hint, errors are ignored, and no byte changes.
    ///
    /// Called (through `SegMap::release_stored`) on the pages stored
    /// through the map before their writeback starts and before any
    /// `fdatasync` of the segment. Writeback write-protects every page it cleans
    /// that a process still maps writable (`folio_mkclean`), and on a
    /// multi-threaded process each one flushes the TLB of the other CPUs
    /// with an interprocessor interrupt: one per 4 KiB written, which cost
    /// half of a no-fsync enqueue loop's rate (docs/benchmarks.md, "The
    /// writeback's TLB shootdowns"). Dropped first, the whole chunk costs
    /// one ranged flush, and the writeback finds nothing mapped. A reader
    /// of the chunk faults its pages back in from the page cache.
    pub(crate) fn release_pages(&self, off: usize, len: usize) {
        // A diverged map holds private pages (`fault_guard`), where
        // `MADV_DONTNEED` would zero what they hold: rule 5 covers only
        // the file's own pages.
        #[cfg(target_os = "linux")]
        if let (Inner::Map(m), false) = (&self.inner, self.diverged()) {
            let len = len.min(self.len.saturating_sub(off));
            if len > 0 {
                // SAFETY: `m` is a shared map of a file (`Region::map`),
                // where `MADV_DONTNEED` changes no byte (rule 5); the range
                // is inside the map (clamped above).
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, off, len)
                };
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (off, len);
    }

    /// A field of this map's entry in `/proc/self/smaps` (`VmFlags`,
    /// `Rss`, ...), for tests of [`Region::advise`] and
    /// [`Region::release_pages`].
    #[cfg(all(test, target_os = "linux"))]
    fn smaps_field(&self, field: &str) -> Option<String> {
        let start = format!("{:x}-", self.base() as usize);
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        lines.next()?;
        let name = format!("{field}:");
        let line = lines
            .take_while(|l| !l.contains('-') || l.starts_with("VmFlags"))
            .find(|l| l.starts_with(&name))?;
        Some(line.trim_start_matches(&name).trim().to_string())
    }
}

/// A read window of a [`Region`] ([`Region::open_read`]), open until
/// [`ReadGuard::close`] or dropped.
pub(crate) struct ReadGuard<'a> {
    region: &'a Region,
    #[cfg(target_os = "linux")]
    window: Option<fault_guard::ReadWindow>,
}

impl ReadGuard<'_> {
    /// Closes the window: `Err` if a page faulted while it was open. The
    /// reads saw zeros there, not the file's bytes, and the faulted page
    /// is a private one from then on, so the map no longer shows the file
    /// there: the region refuses every later write ([`Region::diverged`]).
    #[inline(always)]
    pub(crate) fn close(self) -> Result<(), ()> {
        #[cfg(target_os = "linux")]
        if self.window.is_some_and(|w| w.close()) {
            self.region.diverged.store(true, Ordering::Release);
            return Err(());
        }
        Ok(())
    }
}

/// The error of a write to a region whose map a faulted access diverged
/// ([`Region::diverged`]).
#[cold]
pub(crate) fn diverged_error() -> io::Error {
    io::Error::other(
        "an earlier access to the mapped file faulted (the file was cut short, its file system shut down, or a page could not be read): the map no longer shows the file, so nothing more is written to it",
    )
}

/// The error of a store at `off` that the kernel refused (`fault_guard`).
#[cfg(target_os = "linux")]
#[cold]
fn store_refused(off: usize) -> io::Error {
    io::Error::other(format!(
        "the kernel refused a store into the mapped file at offset {off} \
         (SIGBUS caught: the file system shut down or went read-only, \
         or the file was cut short)"
    ))
}

/// Whether a store into a shared map of `file` is backed by the space that
/// [`preallocate`] reserved, so that it cannot fault for lack of space.
///
/// True only on file systems where that was measured (see
/// `docs/architecture.md`, "Appends: map stores or pwrite"): ext2/3/4, xfs
/// and tmpfs overwrite preallocated blocks in place. On copy-on-write file
/// systems (btrfs, zfs, bcachefs) an overwrite allocates new blocks, so a
/// store into the map on a full disk raises `SIGBUS`: walq appends with
/// `pwrite` there, which returns `ENOSPC`. Unknown file systems get
/// `pwrite` too.
pub(crate) fn map_stores_are_safe(file: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        const EXT4: u32 = 0xef53;
        const XFS: u32 = 0x5846_5342;
        const TMPFS: u32 = 0x0102_1994;
        let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
        // SAFETY: `fstatfs` fills the `statfs` we pass (valid, writable,
        // properly aligned) and reads nothing else; the fd is ours.
        let rc = unsafe { libc::fstatfs(file.as_raw_fd(), buf.as_mut_ptr()) };
        if rc != 0 {
            return false;
        }
        // SAFETY: `fstatfs` succeeded, so it initialised the struct (it was
        // zeroed before in any case, and every field is an integer).
        let sfs = unsafe { buf.assume_init() };
        // The magic numbers fit in 32 bits; the field's width varies.
        #[allow(clippy::cast_possible_truncation, clippy::unnecessary_cast)]
        let magic = sfs.f_type as u32;
        matches!(magic, EXT4 | XFS | TMPFS)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        false
    }
}

/// Allocates the blocks of `file`'s first `len` bytes without changing
/// its length (`FALLOC_FL_KEEP_SIZE`): appends up to `len` then need no
/// new block. `Ok` without reserving anything where the file system does
/// not support it (or off Linux).
pub(crate) fn reserve_blocks(file: &File, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let len = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length"))?;
        // SAFETY: plain syscall on a file descriptor we own; no memory is
        // passed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(err);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, len);
    Ok(())
}

/// Reserves `len` bytes of disk for `file` so that writes through a map
/// cannot fail for lack of space later. Falls back to writing zeros where
/// `fallocate` is not supported.
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
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

/// Starts writing back the dirty pages of `off..off+len` of `file`
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`) and returns without waiting
/// for the I/O: a hint that makes a later `fdatasync` cheaper (RocksDB's
/// `wal_bytes_per_sync`). A no-op where the call does not exist.
///
/// Only `SYNC_FILE_RANGE_WRITE`, never `SYNC_FILE_RANGE_WAIT_AFTER` or
/// `WAIT_BEFORE`: the waiting flags check the file's writeback-error
/// cursor (`file_check_and_advance_wb_err`), so a write error reported
/// here would be consumed and the committer's `fdatasync`, the one place
/// that may publish durability (`commit.rs`), would no longer see it
/// ("fsyncgate"). Starting writeback only submits pages: an I/O error
/// during it is recorded in the mapping's error sequence, which the next
/// `fdatasync` reports, and an error returned by this call is ignored by
/// the caller for the same reason (it changes nothing that the
/// `fdatasync` will not report itself).
pub(crate) fn start_writeback(file: &File, off: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let (Ok(off), Ok(len)) = (libc::off64_t::try_from(off), libc::off64_t::try_from(len))
        else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "range"));
        };
        // SAFETY: plain syscall on a file descriptor we own (borrowed for
        // the call); no memory is passed, and the flags only start
        // writeback of pages already in the page cache.
        let rc = unsafe {
            libc::sync_file_range(file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, off, len);
        Ok(())
    }
}

/// An offset at or below `len` past which `file` reads as zeros: the end
/// of its last data extent (`lseek` `SEEK_DATA`/`SEEK_HOLE`), or `len`.
///
/// Trusted only where that was checked: ext4, xfs and tmpfs report a
/// preallocated (unwritten) extent as a hole only while no page of it is
/// in the page cache (dirty or not), so a hole there reads as zeros even
/// after a process crash that left dirty pages behind. Elsewhere, and on
/// any error, the whole `len` is data (read, never guessed).
pub(crate) fn data_end(file: &File, len: u64) -> u64 {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        if !map_stores_are_safe(file) {
            return len;
        }
        let fd = file.as_raw_fd();
        let mut end: libc::off_t = 0;
        // A segment has a few data extents (written records, prefaulted
        // pages); past this many, read it all.
        for _ in 0..1024 {
            // SAFETY: plain syscalls on a descriptor we own; no memory is
            // passed. The file offset they move is not used (all I/O on
            // segments is positional).
            let data = unsafe { libc::lseek(fd, end, libc::SEEK_DATA) };
            if data < 0 {
                let err = io::Error::last_os_error();
                // ENXIO: no data at or after `end`.
                return if err.raw_os_error() == Some(libc::ENXIO) {
                    u64::try_from(end).map_or(len, |e| e.min(len))
                } else {
                    len
                };
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            if hole < data {
                return len;
            }
            end = hole;
            if u64::try_from(end).unwrap_or(u64::MAX) >= len {
                return len;
            }
        }
        len
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        len
    }
}

/// Drops the clean cached pages of `from..len` of `file` from the page
/// cache (`posix_fadvise(POSIX_FADV_DONTNEED)`), so that zero pages read
/// ahead there do not count as data for [`data_end`]. A hint: errors are
/// ignored. Dirty pages stay (the call only starts their writeback, which
/// does not touch the file's writeback-error cursor, as in
/// [`start_writeback`]); `data_end` already counted them.
pub(crate) fn drop_clean_pages(file: &File, from: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let page = 4096;
        let from = from.div_ceil(page) * page;
        if from >= len {
            return;
        }
        let (Ok(off), Ok(n)) = (
            libc::off_t::try_from(from),
            libc::off_t::try_from(len - from),
        ) else {
            return;
        };
        // SAFETY: plain syscall on a descriptor we own; no memory passed.
        let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), off, n, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, len);
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
        assert_eq!(r.bytes(4, 4), None, "not published yet");
        r.publish(8);
        assert_eq!(r.bytes(4, 4), Some(&b"abcd"[..]));
        assert!(r.write(7, b"x").is_err(), "below the watermark");
        r.write(8, b"x").unwrap();
        r.publish(4);
        assert_eq!(r.published(), 8, "the watermark never goes back");
        assert!(r.bytes(14, 4).is_none());
        assert!(r.bytes(usize::MAX, 2).is_none());
        assert!(r.write(14, b"abcd").is_err());
        assert!(r.write(usize::MAX, b"a").is_err());
    }

    #[test]
    fn an_append_writes_both_parts_and_publishes_them_or_nothing() {
        let r = Region::heap(16);
        r.append(2, b"ab", b"cd").unwrap();
        assert_eq!(r.published(), 6);
        assert_eq!(r.bytes(2, 4), Some(&b"abcd"[..]));
        r.append(6, b"ef", b"").unwrap();
        assert_eq!(r.bytes(6, 2), Some(&b"ef"[..]));
        assert!(r.append(7, b"x", b"").is_err(), "below the watermark");
        // The head fits, the tail does not: an error, and nothing published.
        assert!(r.append(8, b"ghij", b"klmnopq").is_err());
        assert_eq!(r.published(), 8);
        assert!(r.append(usize::MAX, b"a", b"b").is_err());
        assert_eq!(r.published(), 8);
        // The copied head lies above the watermark: a later append there
        // is allowed, and reads see only what it published.
        r.append(8, b"12345678", b"").unwrap();
        assert_eq!(r.bytes(8, 8), Some(&b"12345678"[..]));
    }

    #[test]
    fn map_refuses_a_short_file() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(10).unwrap();
        assert!(Region::map(&f, 20).is_err());
        let r = Region::map(&f, 10).unwrap();
        r.write(0, b"hello").unwrap();
        r.publish(5);
        assert_eq!(r.bytes(0, 5), Some(&b"hello"[..]));
    }

    /// A file of two pages, mapped, then cut to nothing under the map:
    /// a store into it faults (`SIGBUS`, the page lies past the file's
    /// end), the way a store into a file system that shut down does.
    #[cfg(target_os = "linux")]
    fn cut_map() -> (std::fs::File, Region) {
        let f = tempfile::tempfile().unwrap();
        f.set_len(8192).unwrap();
        let r = Region::map(&f, 8192).unwrap();
        r.write(0, b"before").unwrap();
        r.publish(6);
        f.set_len(0).unwrap();
        (f, r)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_store_the_kernel_refuses_is_an_error_not_a_signal() {
        let (_f, r) = cut_map();
        // Before `fault_guard`, this store killed the test process.
        let err = r.write(4096, b"after").expect_err("the page is gone");
        assert!(err.to_string().contains("refused a store"), "{err}");
        assert!(
            err.to_string().contains("offset 4096"),
            "names the offset: {err}"
        );
        // The page is a private copy now: the region is diverged, and
        // refuses every later store, also one into the pages the cut left.
        assert!(r.diverged());
        let again = r.write(10, &[1u8; 5000]).expect_err("diverged");
        assert!(again.to_string().contains("faulted"), "{again}");
        // The thread's window is closed again: a plain store elsewhere in
        // memory is unaffected, and a heap region still works.
        let h = Region::heap(8);
        h.write(0, b"ok").unwrap();
    }

    /// A `SIGBUS` outside a walq store still kills the process: the
    /// handler passes it on. Run in a child (this test binary again).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_fault_outside_a_store_still_kills() {
        const CHILD: &str = "WALQ_STORE_GUARD_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let (_f, r) = cut_map();
            // A read of the cut page, not through `Region::bytes` (which
            // would refuse it): not in any window.
            let p = r.base();
            // SAFETY: in bounds of the map; the page faults, which is
            // the point (the process dies here).
            let b = unsafe { std::ptr::read_volatile(p.add(4096)) };
            println!("read {b}: survived");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "os::tests::a_fault_outside_a_store_still_kills"])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGBUS),
            "the child must die of SIGBUS: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn writeback_of_a_written_range_starts() {
        let f = tempfile::tempfile().unwrap();
        preallocate(&f, 1 << 20).unwrap();
        let r = Region::map(&f, 1 << 20).unwrap();
        r.write(0, &[7u8; 1 << 16]).unwrap();
        start_writeback(&f, 0, 1 << 16).unwrap();
        // Nothing moved: the bytes are still there, and a sync still works.
        r.publish(1 << 16);
        assert_eq!(r.bytes(0, 4), Some(&[7u8; 4][..]));
        f.sync_data().unwrap();
    }

    #[test]
    fn data_ends_where_the_written_bytes_end() {
        use std::os::unix::fs::FileExt;
        let f = tempfile::tempfile().unwrap();
        preallocate(&f, 8 << 20).unwrap();
        f.write_all_at(&[1u8; 5000], 4096).unwrap();
        let end = data_end(&f, 8 << 20);
        // Never below the written bytes; where holes are reported (ext4,
        // xfs, tmpfs), well below the file's end.
        assert!(end >= 9096, "{end}");
        if map_stores_are_safe(&f) {
            assert!(end < 1 << 20, "{end}");
        }
        f.write_all_at(&[2u8; 10], (8 << 20) - 10).unwrap();
        assert_eq!(data_end(&f, 8 << 20), 8 << 20);
    }

    /// The kernel's own answer, not a model: pages past the end of a file
    /// cut short under the map are an error from `populate_read`, where
    /// touching them would raise `SIGBUS`; pages still in the file are
    /// fine. (An I/O error reading a page takes the same path in the
    /// kernel: the fault returns `VM_FAULT_SIGBUS`, which
    /// `MADV_POPULATE_READ` reports as EFAULT.)
    #[cfg(target_os = "linux")]
    #[test]
    fn populate_read_reports_pages_a_cut_took_instead_of_faulting() {
        const PAGE: usize = 4096;
        let f = tempfile::tempfile().unwrap();
        preallocate(&f, 16 * PAGE as u64).unwrap();
        let r = Region::map(&f, 16 * PAGE as u64).unwrap();
        r.write(0, &[5u8; 16 * PAGE]).unwrap();
        r.publish(16 * PAGE);
        assert!(r.populate_read(0, 16 * PAGE).is_ok());
        f.set_len(4 * PAGE as u64).unwrap();
        assert!(
            r.populate_read(0, 4 * PAGE).is_ok(),
            "pages still in the file"
        );
        assert!(r.populate_read(PAGE, 10).is_ok(), "an unaligned range");
        let past = r
            .populate_read(5 * PAGE, PAGE)
            .expect_err("a page the cut took");
        assert_eq!(past.raw_os_error(), Some(libc::EFAULT), "{past}");
        assert!(
            r.populate_read(3 * PAGE, 2 * PAGE).is_err(),
            "a range across the cut"
        );
        assert_eq!(r.bytes(0, 4), Some(&[5u8; 4][..]));
        assert!(Region::heap(16).populate_read(0, 16).is_ok());
    }

    /// A guarded read of pages a cut took finishes on zeros and says so,
    /// where the plain read raised `SIGBUS`; the region then refuses
    /// writes (the faulted page is a private one), and a read that did not
    /// fault is `Ok` with its bytes.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_guarded_read_of_a_cut_page_is_an_error_and_stops_writes() {
        const PAGE: usize = 4096;
        let f = tempfile::tempfile().unwrap();
        preallocate(&f, 16 * PAGE as u64).unwrap();
        let r = Region::map(&f, 16 * PAGE as u64).unwrap();
        r.write(0, &[5u8; 8 * PAGE]).unwrap();
        r.publish(8 * PAGE);
        assert!(r.populate_read(0, 16 * PAGE).is_ok());
        let whole = r.bytes(0, 8 * PAGE).unwrap();
        let sum = |b: &[u8]| b.iter().map(|&x| u64::from(x)).sum::<u64>();
        let guarded = |b: &[u8]| {
            let window = r.open_read();
            let total = sum(b);
            window.close().map(|()| total)
        };
        assert_eq!(guarded(whole), Ok(5 * 8 * PAGE as u64));
        f.set_len(4 * PAGE as u64).unwrap();
        assert_eq!(
            guarded(&whole[..4 * PAGE]),
            Ok(5 * 4 * PAGE as u64),
            "the pages the cut left"
        );
        assert!(!r.diverged());
        assert_eq!(guarded(whole), Err(()), "across the cut");
        assert!(r.diverged());
        // Zeros where the cut took the pages, read without a fault now.
        assert_eq!(whole[6 * PAGE], 0);
        assert_eq!(whole[PAGE], 5, "the file's pages are the file's");
        let refused = r.write(8 * PAGE, b"x").expect_err("diverged");
        assert!(refused.to_string().contains("faulted"), "{refused}");
        let heap = Region::heap(16);
        assert_eq!(heap.open_read().close(), Ok(()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_appended_map_reads_no_ahead_and_a_sealed_one_does() {
        let f = tempfile::tempfile().unwrap();
        preallocate(&f, 4 << 20).unwrap();
        let r = Region::map(&f, 4 << 20).unwrap();
        let has = |flag: &str| {
            let flags = r
                .smaps_field("VmFlags")
                .expect("the map in /proc/self/smaps");
            flags.split_whitespace().any(|x| x == flag)
        };
        r.advise(true);
        assert!(has("rr"), "an appended map reads ahead (no MADV_RANDOM)");
        assert!(!has("hg"), "2 MiB folios: see Region::advise");
        r.advise(false);
        assert!(!has("rr"), "a sealed segment does not read ahead");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn released_pages_leave_the_map_and_keep_their_bytes() {
        const MIB: usize = 1 << 20;
        let f = tempfile::tempfile().unwrap();
        preallocate(&f, 4 * MIB as u64).unwrap();
        let r = Region::map(&f, 4 * MIB as u64).unwrap();
        let data: Vec<u8> = (0..2 * MIB).map(|i| (i % 251) as u8).collect();
        r.write(0, &data).unwrap();
        r.publish(2 * MIB);
        let rss_kib = || -> usize {
            let rss = r.smaps_field("Rss").expect("the map in /proc/self/smaps");
            rss.trim_end_matches("kB").trim().parse().unwrap()
        };
        assert!(
            rss_kib() >= 2048,
            "written pages are mapped: {} KiB",
            rss_kib()
        );
        r.release_pages(0, MIB);
        assert!(
            rss_kib() <= 1024 + 64,
            "released pages stay mapped: {} KiB",
            rss_kib()
        );
        // A slice of the released chunk reads the same bytes (faulted back
        // in from the page cache), and so does the file.
        assert_eq!(r.bytes(0, 2 * MIB), Some(&data[..]));
        let mut back = vec![0u8; MIB];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut back, 0).unwrap();
        assert_eq!(back, data[..MIB]);
        // Clamped to the map, and a no-op past it.
        r.release_pages(3 * MIB, 8 * MIB);
        r.release_pages(usize::MAX, 1);
        start_writeback(&f, 0, MIB as u64).unwrap();
        f.sync_data().unwrap();
    }

    #[test]
    fn preallocate_sets_length() {
        let f = tempfile::tempfile().unwrap();
        preallocate(&f, 100_000).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 100_000);
    }
}
