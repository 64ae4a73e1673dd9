//! Segment files: preallocated, mapped, named by id.
//!
//! Creation is crash-atomic: the file is built as `NNNNNNNNNN.wal.spare`
//! ahead of time (preallocated, its first block written and synced), and
//! at rotation its header is written and fdatasynced, then it is renamed
//! into place; the directory is synced before anything in the segment is
//! acknowledged (by the committer, see `upkeep`). A crash leaves either no
//! segment or one with a durable header, plus perhaps a `.spare` file,
//! which recovery deletes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, ErrorKind, Result};
use crate::format::frame::{self, Frame, FrameError};
use crate::format::header::{FileKind, HeaderError, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::format::record::{EnqueueRec, Record};
use crate::format::{FORMAT_VERSION, MAX_ID};
use crate::segmap::{MapBudget, SegMap};
use crate::vfs::{Vfs, VfsFile};

/// Suffix of segment file names.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of files being built; leftovers are deleted on open.
pub const TMP_SUFFIX: &str = ".tmp";
/// Suffix of the next segment prepared ahead of time ([`Spare`]); removed
/// (not counted as a leftover) on open, which prepares a fresh one.
pub const SPARE_SUFFIX: &str = ".spare";
/// The clean-close record (`format::close`).
pub const CLOSE_FILE: &str = "CLOSED";
/// Bytes of a spare written (zeros) when it is prepared: the block that
/// will hold the header.
const HEADER_BLOCK: usize = 4096;

/// How much of a spare's zeros [`Spare::top_up`] writes and syncs at a
/// time: a log `fdatasync` running beside it waits behind one chunk's
/// writes, not behind the whole 2 MiB.
const TOP_UP_CHUNK: u64 = 256 * 1024;

/// The next segment, prepared ahead of time: `NNNNNNNNNN.wal.spare`, created
/// and preallocated to its full size, not yet renamed into place. Rotation
/// only writes its header and renames it, so it needs no new disk space: a
/// full disk can still take the leases, acks and dead letters that drain it.
#[derive(Debug)]
pub struct Spare {
    /// The id the segment will have.
    pub id: u32,
    size: u64,
    /// The bytes from the file's start that [`Spare::prepare`] or
    /// [`Spare::top_up`] were asked to write (zeros). For a spare a
    /// previous run prepared, only the header block is known written: the
    /// rest may be (a `Sync` run's spare) or not, and is topped up as for
    /// a new spare (writing zeros over zeros changes no byte).
    zeros: u32,
    tmp: PathBuf,
    file: Box<dyn VfsFile>,
}

impl Spare {
    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Creates and preallocates the temporary file of segment `id`, with
    /// its first `zeros` bytes written (zeros) where the file system
    /// overwrites preallocated blocks in place (see
    /// [`VfsFile::write_zeros_ahead`]; at least the header block is always
    /// written). On failure the temporary file is removed at once.
    ///
    /// `zeros` is what `pwrite` appends keep written ahead of the tail
    /// (`Log::zero_ahead`): written here, off the write path and synced
    /// with the allocation, the first appends into the segment find them
    /// done instead of writing and syncing them inside a commit (2-3 ms on
    /// the first enqueue of a fresh `Sync` queue, docs/benchmarks.md).
    pub fn prepare(
        vfs: &dyn Vfs,
        dir: &Path,
        id: u32,
        size: u64,
        mode: u32,
        zeros: u32,
    ) -> Result<Spare> {
        let tmp = dir.join(format!("{}{SPARE_SUFFIX}", file_name(id)));
        let file = vfs
            .create(&tmp, mode)
            .map_err(|e| Error::io("creating new segment", &tmp, e))?;
        // The header block is written (zeros) and the allocation synced
        // now, off the write path: installing the spare then overwrites an
        // already written block, and its fdatasync has no metadata to
        // commit.
        let head = vec![0u8; usize::try_from(size).map_or(HEADER_BLOCK, |s| s.min(HEADER_BLOCK))];
        let prepared = file
            .allocate(size)
            .map_err(|e| ("preallocating new segment", e))
            .and_then(|()| {
                file.write_at(&head, 0)
                    .map_err(|e| ("writing new segment", e))
            })
            .and_then(|()| {
                // A hint: on failure the appends write the zeros themselves.
                let ahead = u64::from(zeros)
                    .min(size)
                    .saturating_sub(HEADER_BLOCK as u64);
                if ahead > 0 {
                    let _ = file.write_zeros_ahead(HEADER_BLOCK as u64, ahead);
                }
                file.sync_all().map_err(|e| ("syncing new segment", e))
            });
        if let Err((what, e)) = prepared {
            drop(file);
            let _ = vfs.remove(&tmp);
            return Err(Error::io(what, &tmp, e));
        }
        Ok(Spare {
            id,
            size,
            zeros,
            tmp,
            file,
        })
    }

    /// The spare's file (`NNNNNNNNNN.wal.spare`), for an error about it.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Whether [`Spare::top_up`] to `zeros` would write anything.
    pub fn lacks_zeros(&self, zeros: u32) -> bool {
        self.zeros < zeros
    }

    /// Writes the spare's first `zeros` bytes (zeros) as
    /// [`Spare::prepare`] would have, [`TOP_UP_CHUNK`] at a time, each
    /// synced before the next is written: for a spare prepared before the
    /// log knew it needs them (the ones an open prepares or a clean close
    /// kept), and for each spare prepared ahead after a rotation (its
    /// zeros in pieces beside the log's commits). Run on the `walq-upkeep`
    /// thread with the spare out of the ready ones, so no rotation writes
    /// into it meanwhile. On a
    /// failed sync the spare is not to be used (the caller discards it):
    /// a file whose sync failed is not one to trust with a segment.
    pub fn top_up(&mut self, zeros: u32) -> std::io::Result<()> {
        let end = u64::from(zeros).min(self.size);
        let mut from = HEADER_BLOCK as u64;
        while from < end {
            let len = TOP_UP_CHUNK.min(end - from);
            // A hint, as in `prepare`: on failure the appends write them.
            let _ = self.file.write_zeros_ahead(from, len);
            self.file.sync_all()?;
            from += len;
        }
        self.zeros = zeros;
        Ok(())
    }

    /// The spare a previous run prepared, if it has its full `size`: it
    /// was never written, so it is as good as a new one (and reusing it
    /// spares an open the unlink and preallocation of a whole segment).
    /// Recovery asks for spares only after a clean close: after a crash a
    /// spare's name may be one a lost rename left on a written file.
    pub fn reopen(vfs: &dyn Vfs, dir: &Path, id: u32, size: u64) -> Option<Spare> {
        let tmp = dir.join(format!("{}{SPARE_SUFFIX}", file_name(id)));
        let file = vfs.open(&tmp).ok()?;
        (file.len().ok()? == size).then_some(Spare {
            id,
            size,
            zeros: HEADER_BLOCK as u32,
            tmp,
            file,
        })
    }

    /// Writes the header and renames the file into place, then maps it.
    /// Neither the header nor the new name is durable yet: the committer's
    /// next leader syncs the directory and the segment before anything in
    /// it counts as durable (see `commit`); recovery drops a newest segment
    /// whose header never reached the disk (docs/format.md, "Torn across a
    /// rotation"). On failure nothing is left behind.
    pub fn install(
        self,
        vfs: &dyn Vfs,
        dir: &Path,
        base_lsn: u64,
        next_job_id: u64,
    ) -> Result<Segment> {
        let Spare {
            id,
            size,
            tmp,
            file,
            ..
        } = self;
        let path = dir.join(file_name(id));
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            kind: FileKind::Log,
            segment_id: id,
            base_lsn,
            next_job_id,
        };
        let built = file
            .write_at(&header.encode(), 0)
            .map_err(|e| Error::io("writing new segment header", &tmp, e))
            .and_then(|()| {
                vfs.rename(&tmp, &path)
                    .map_err(|e| Error::io("renaming new segment", &path, e))
            });
        if let Err(e) = built {
            // Give the allocated space back at once, not at the next open.
            drop(file);
            let _ = vfs.remove(&tmp);
            return Err(e);
        }
        let map = match file.map(size) {
            Ok(m) => m.0,
            Err(e) => {
                drop(file);
                let _ = vfs.remove(&path);
                return Err(Error::io("mapping new segment", &path, e));
            }
        };
        let region = SegMap::new(path.clone(), map.len());
        region.set(map);
        region.advise(true);
        if file.writes_are_map_stores() {
            region.store_appends();
        }
        region.publish(SEGMENT_HEADER_LEN);
        Ok(Segment {
            id,
            path,
            file: RwLock::new(Some(file)),
            region,
            header,
            seed: frame::seed(id),
        })
    }

    /// Removes the temporary file (the spare is not needed).
    pub fn discard(self, vfs: &dyn Vfs) {
        let Spare { tmp, file, .. } = self;
        drop(file);
        let _ = vfs.remove(&tmp);
    }
}

/// An open log segment.
#[derive(Debug)]
pub struct Segment {
    /// The segment id (file name and checksum seed).
    pub id: u32,
    /// Where the file is.
    pub path: PathBuf,
    /// The file, while open: sealed segments give their descriptor back
    /// (see [`Segment::release_fd`]) and are read through the map.
    file: RwLock<Option<Box<dyn VfsFile>>>,
    /// The file's map, made on demand for a sealed segment (see
    /// `segmap`); bytes below its watermark are published.
    pub region: SegMap,
    /// The decoded header.
    pub header: SegmentHeader,
    /// The checksum seed of this segment's frames ([`frame::seed`]), kept
    /// for the read-back verify of every dequeue (no per-thread cache).
    seed: crc32fast::Hasher,
}

/// Whether `name` is a temporary name that walq itself creates (a
/// segment being built, or `dead` being rewritten): only those are removed
/// on open, never a user's `notes.tmp`.
pub fn is_own_tmp(name: &str, dead_file: &str) -> bool {
    name.strip_suffix(TMP_SUFFIX).is_some_and(|base| {
        parse_name(base).is_some()
            || base == dead_file
            || base == CLOSE_FILE
            || base == crate::store_id::STORE_ID_FILE
            || base == crate::id_floor::ID_FLOOR_FILE
            || base == crate::pause::PAUSED_FILE
    })
}

/// Whether `name` is a spare segment walq prepared ([`Spare`]).
pub fn is_spare(name: &str) -> bool {
    name.strip_suffix(SPARE_SUFFIX)
        .is_some_and(|base| parse_name(base).is_some())
}

/// The file name of segment `id`.
pub fn file_name(id: u32) -> String {
    format!("{id:010}{SEGMENT_SUFFIX}")
}

/// The id in a segment file name, if it is one.
pub fn parse_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Maps a header decoding failure to an error naming the file.
pub fn header_error(path: &Path, err: HeaderError) -> Error {
    match err {
        HeaderError::FutureVersion(_) => {
            Error::new(ErrorKind::UnsupportedVersion, err.to_string()).with_path(path)
        }
        _ => Error::corrupt(path, 0, err.to_string()),
    }
}

impl Segment {
    /// Installs `spare` (see [`Spare::prepare`]) as a segment whose
    /// records start at `base_lsn` and job ids at `next_job_id`, durably
    /// (crash-atomically), and maps it. The directory is fsynced before
    /// this returns.
    pub fn create(
        vfs: &dyn Vfs,
        dir: &Path,
        spare: Spare,
        base_lsn: u64,
        next_job_id: u64,
    ) -> Result<Segment> {
        let seg = spare.install(vfs, dir, base_lsn, next_job_id)?;
        // Header first, then the name: a segment created here is durable
        // whole when this returns.
        if let Err(e) = seg.sync_data() {
            let _ = vfs.remove(&seg.path);
            return Err(e);
        }
        if let Err(e) = vfs.sync_dir(dir) {
            // Unknown whether the name is durable; an empty segment is
            // valid either way. Take it away so a retry starts afresh.
            let _ = vfs.remove(&seg.path);
            return Err(Error::io("syncing directory for new segment", dir, e));
        }
        Ok(seg)
    }

    /// Opens and maps an existing segment, checking its header.
    pub fn open(vfs: &dyn Vfs, path: &Path, id: u32) -> Result<Segment> {
        let file = vfs
            .open(path)
            .map_err(|e| Error::io("opening segment", path, e))?;
        let len = file
            .len()
            .map_err(|e| Error::io("reading segment length", path, e))?;
        if len > u64::from(u32::MAX) {
            return Err(Error::corrupt(
                path,
                0,
                format!("segment is {len} bytes, above the 4 GiB limit"),
            ));
        }
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let n = usize::try_from(len).map_or(SEGMENT_HEADER_LEN, |l| l.min(SEGMENT_HEADER_LEN));
        file.read_at(&mut head[..n], 0)
            .map_err(|e| Error::io("reading segment header", path, e))?;
        let header = SegmentHeader::decode(&head[..n]).map_err(|e| header_error(path, e))?;
        if header.kind != FileKind::Log {
            return Err(Error::corrupt(path, 0, "not a log segment"));
        }
        if header.base_lsn == 0 || header.base_lsn >= MAX_ID || header.next_job_id >= MAX_ID {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "header out of range (base LSN {}, next job id {})",
                    header.base_lsn, header.next_job_id
                ),
            ));
        }
        if header.segment_id != id {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "header says segment {}, file name says {id}",
                    header.segment_id
                ),
            ));
        }
        // Mapped when first read (see `segmap`): the active segment by
        // `Segment::map_now`, a sealed one on demand.
        let len = usize::try_from(len).map_err(|_| {
            Error::corrupt(path, 0, format!("segment is {len} bytes, beyond memory"))
        })?;
        let region = SegMap::new(path.to_path_buf(), len);
        Ok(Segment {
            id,
            path: path.to_path_buf(),
            file: RwLock::new(Some(file)),
            region,
            header,
            seed: frame::seed(id),
        })
    }

    /// Runs `f` on the open file; an error if the descriptor was released.
    fn with_file<T>(
        &self,
        what: &str,
        f: impl FnOnce(&dyn VfsFile) -> std::io::Result<T>,
    ) -> Result<T> {
        let guard = self.file.read();
        let file = guard.as_deref().ok_or_else(|| {
            Error::io(
                what,
                &self.path,
                std::io::Error::other("the segment is sealed and its file closed"),
            )
        })?;
        f(file).map_err(|e| Error::io(what, &self.path, e))
    }

    /// Maps the segment now through its open file (the active segment's
    /// appends store into the map where that is safe), advised for appends
    /// (no readahead, see `Region::advise`) until [`Segment::release_fd`].
    pub fn map_now(&self) -> Result<()> {
        let guard = self.file.read();
        self.region
            .region(guard.as_deref())
            .map(|map| map.advise(true))
            .map_err(|e| Error::io("mapping segment", &self.path, e))?;
        if guard.as_deref().is_some_and(|f| f.writes_are_map_stores()) {
            self.region.store_appends();
        }
        Ok(())
    }

    /// Counts this segment's map in `budget` (see `segmap`).
    pub fn attach(&self, budget: &Arc<MapBudget>) {
        self.region.attach(budget);
    }

    /// Drops the map of a segment nothing else holds (mapped again when
    /// read). Never for the active segment.
    pub fn unmap(&mut self) {
        self.region.unmap();
    }

    /// Closes the file descriptor of a sealed segment (reads go through the
    /// map, which stays valid), so a long backlog holds no descriptors.
    pub fn release_fd(&self) {
        self.file.write().take();
        // Sealed: read from now on, with readahead.
        self.region.advise(false);
    }

    /// `fdatasync` of the segment file (after releasing the pages stored
    /// through the map, see [`SegMap::release_stored`]).
    pub fn sync_data(&self) -> Result<()> {
        self.region.release_stored(usize::MAX);
        self.with_file("fdatasync of segment", |f| f.sync_data())
    }

    /// Starts the writeback of `off..off+len` (see
    /// [`VfsFile::start_writeback`]), after releasing the pages stored
    /// there through the map ([`SegMap::release_stored`]): best effort, so
    /// that the fdatasync that seals the segment has little left to write.
    /// Does nothing once the segment is sealed (its descriptor is closed,
    /// and it was synced).
    pub fn start_writeback(&self, off: u32, len: u32) {
        self.region.release_stored(off.saturating_add(len) as usize);
        let _ = self.with_file("starting writeback of segment", |f| {
            f.start_writeback(u64::from(off), u64::from(len))
        });
    }

    /// Faults in `off..off+len` of the map for the appends ahead (see
    /// [`VfsFile::prefault`]): best effort, run by the `walq-prefault`
    /// thread. Does nothing once the segment is sealed (its descriptor is
    /// closed; the release waits for a prefault under way), so a sealed
    /// segment's pages past its tail are not dirtied. Sound whatever the
    /// timing: the map lives as long as this segment, and a prefault
    /// changes no byte, so it cannot race the appender's stores.
    pub fn prefault(&self, off: u32, len: u32) {
        let _ = self.with_file("prefaulting segment", |f| {
            f.prefault(u64::from(off), u64::from(len))
        });
    }

    /// Where the file's written (or cached) data ends, as far as the file
    /// system tells ([`VfsFile::written_end`]); 0 when unknown.
    pub fn written_end(&self) -> u32 {
        self.with_file("finding where the segment's data ends", |f| {
            Ok(f.written_end())
        })
        .map_or(0, |end| u32::try_from(end).unwrap_or(u32::MAX))
    }

    /// Writes zeros over `off..off+len`, space past the tail that reads as
    /// zeros already (see [`VfsFile::write_zeros_ahead`]): best effort, an
    /// error is ignored (the appends that land there convert the extents
    /// themselves, as without it).
    pub fn write_zeros_ahead(&self, off: u32, len: u32) {
        let _ = self.with_file("writing zeros ahead of the tail", |f| {
            f.write_zeros_ahead(u64::from(off), u64::from(len))
        });
    }

    /// The file's bytes, read with `pread` (recovery reads this way, so an
    /// unreadable sector is an error naming the file, not a `SIGBUS`), and
    /// where its data ends: the image is as long as the file, but only the
    /// bytes before the data's end (as the file system reports it, see
    /// [`VfsFile::read_data`]) are read; the rest are zeros, as the file
    /// reads there. A crashed queue's active segment is read up to its
    /// tail (and the pages prefaulted or read ahead past it), not the
    /// whole preallocated segment.
    ///
    /// Only bytes from `from` on are read (a scan that starts there looks
    /// at nothing before it); the image holds zeros before `from`.
    pub fn read_image(&self, from: u32) -> Result<(Vec<u8>, usize)> {
        // Zeroed by the allocator (fresh pages): what is not read costs no
        // memory.
        let mut buf = vec![0u8; self.region.len()];
        let end = self.with_file("reading segment", |f| f.read_data(&mut buf, from as usize))?;
        let end = end.min(buf.len());
        Ok((buf, end))
    }

    /// Publishes `0..end`: from now on those bytes are readable through the
    /// map and never written again.
    pub fn publish(&self, end: u32) {
        self.region.publish(end as usize);
    }

    /// Size of the file in bytes.
    pub fn size(&self) -> u32 {
        u32::try_from(self.region.len()).unwrap_or(u32::MAX)
    }

    /// Decodes and verifies the frame at `off`.
    /// Only published bytes are read.
    pub fn frame_at(&self, off: u32) -> std::result::Result<Frame<'_>, FrameError> {
        let rest = self.region.published().saturating_sub(off as usize);
        if rest == 0 {
            return Err(FrameError::Truncated);
        }
        let buf = self
            .region
            .bytes(off as usize, rest)
            .ok_or(FrameError::Truncated)?;
        // The header's pages first, then those of the length it claims:
        // bytes the kernel cannot read are an error, not SIGBUS. The reads
        // themselves are in a read window: a page cut or evicted and
        // unreadable since its check is an error too.
        let window = self.region.open_read();
        let frame = self.check_and_decode(buf, off as usize);
        if self.region.close_read(window).is_err() {
            return Err(FrameError::Unreadable);
        }
        // A map a faulted read left zeros in reads them from then on:
        // damage found there is that fault's.
        frame.map_err(|e| match self.region.diverged() {
            true => FrameError::Unreadable,
            false => e,
        })
    }

    /// Checks that the kernel can read the frame at `off`, `buf` and the
    /// rest of the published bytes, and decodes it.
    #[inline(always)]
    fn check_and_decode<'a>(
        &self,
        buf: &'a [u8],
        off: usize,
    ) -> std::result::Result<Frame<'a>, FrameError> {
        let unreadable = |_| FrameError::Unreadable;
        let head = buf.len().min(frame::FRAME_HEADER_LEN);
        self.region.readable(off, head).map_err(unreadable)?;
        let claimed = crate::format::u32_at(buf, 4).map_or(0, |l| l as usize);
        if claimed > head {
            self.region
                .readable(off, claimed.min(buf.len()))
                .map_err(unreadable)?;
        }
        frame::decode_seeded(buf, &self.seed, self.size())
    }

    /// Decodes and verifies the enqueue record of a job at `off`.
    pub fn enqueue_at(&self, off: u32) -> Result<EnqueueRec<'_>> {
        // A map that cannot be made (the address space or
        // `vm.max_map_count` exhausted) is an I/O error, not damage.
        if !self.region.is_mapped() {
            self.region
                .region(None)
                .map_err(|e| Error::io("mapping segment", &self.path, e))?;
        }
        let frame = self
            .frame_at(off)
            .map_err(|e| Error::corrupt(&self.path, u64::from(off), format!("job record: {e}")))?;
        match Record::decode(frame.kind, frame.body) {
            Some(Record::Enqueue(e)) => Ok(e),
            _ => Err(Error::corrupt(
                &self.path,
                u64::from(off),
                "job record is not an enqueue record",
            )),
        }
    }

    /// Writes `bytes` at `off` (stores into the map where that is safe).
    pub fn write(&self, off: u32, bytes: &[u8]) -> Result<()> {
        self.write_by(off, bytes, false)
    }

    /// Whether a plain write into this segment is a `pwrite` (its file
    /// system is not one where stores into the map are safe; see
    /// `os::map_stores_are_safe`). `false` once the file is closed.
    pub fn writes_by_syscall(&self) -> bool {
        self.file
            .read()
            .as_deref()
            .is_some_and(|f| f.writes_by_syscall())
    }

    /// Appends a record's bytes, `head` at `off` and `tail` right after
    /// it, and publishes them: one store into the map and one publication
    /// where appends are map stores ([`SegMap::append`]), else
    /// [`Segment::write_by`] for each part, then [`Segment::publish`].
    /// On an error nothing is published.
    #[inline]
    pub fn append(&self, off: u32, head: &[u8], tail: &[u8], syscall: bool) -> Result<()> {
        if !syscall {
            if let Some(stored) = self.region.append(off as usize, head, tail) {
                return stored.map_err(|e| Error::io("writing record", &self.path, e));
            }
        }
        self.write_by(off, head, syscall)?;
        let end = off + head.len() as u32;
        if !tail.is_empty() {
            self.write_by(end, tail, syscall)?;
        }
        self.publish(end + tail.len() as u32);
        Ok(())
    }

    /// Writes `bytes` at `off`: stores into the map where that is safe,
    /// unless `syscall` asks for `pwrite` (see [`VfsFile::write_at_syscall`]).
    pub fn write_by(&self, off: u32, bytes: &[u8], syscall: bool) -> Result<()> {
        if self.region.diverged() {
            // Readers would not see these bytes through the map.
            let e = crate::os::diverged_error();
            return Err(Error::io("writing record", &self.path, e));
        }
        self.with_file("writing record", |f| {
            if syscall {
                f.write_at_syscall(bytes, u64::from(off))
            } else {
                f.write_at(bytes, u64::from(off))
            }
        })?;
        if !syscall {
            self.region.stored(off as usize + bytes.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::StdFs;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(42), "0000000042.wal");
        assert_eq!(parse_name("0000000042.wal"), Some(42));
        assert_eq!(parse_name("42.wal"), None);
        assert_eq!(parse_name("0000000042.wal.tmp"), None);
        assert_eq!(parse_name("dead.wal"), None);
        assert!(is_own_tmp("0000000042.wal.tmp", "dead.wal"));
        assert!(is_own_tmp("dead.wal.tmp", "dead.wal"));
        assert!(is_own_tmp("CLOSED.tmp", "dead.wal"));
        assert!(is_spare("0000000042.wal.spare"));
        assert!(!is_spare("notes.spare"));
        assert!(!is_own_tmp("notes.tmp", "dead.wal"));
        assert!(!is_own_tmp("backup.tmp", "dead.wal"));
        assert!(!is_own_tmp("0000000042.wal", "dead.wal"));
    }

    /// Segment 3 of `size` bytes in `dir` (records from LSN 10, job ids
    /// from 20).
    fn created(dir: &Path, size: u64) -> Segment {
        let spare = Spare::prepare(&StdFs, dir, 3, size, 0o600, 0).unwrap();
        Segment::create(&StdFs, dir, spare, 10, 20).unwrap()
    }

    #[test]
    fn pages_stored_through_the_map_are_released_once_before_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let s = created(dir.path(), 1 << 20);
        let released = || s.region.released();
        s.write_by(64, &[1u8; 10_000], false).unwrap();
        s.sync_data().unwrap();
        assert_eq!(released(), 8192, "the whole pages below the stores");
        // Written by `pwrite`: never mapped dirty, nothing to release.
        s.write_by(10_064, &[2u8; 20_000], true).unwrap();
        s.sync_data().unwrap();
        assert_eq!(released(), 8192);
        s.write_by(30_064, &[3u8; 10_000], false).unwrap();
        s.start_writeback(0, 16_384);
        assert_eq!(released(), 16_384, "up to the chunk written back");
        s.start_writeback(0, 4096);
        assert_eq!(released(), 16_384, "never back");
        s.sync_data().unwrap();
        assert_eq!(released(), 36_864, "not the page the tail is in");
        s.publish(40_064);
        assert_eq!(s.region.bytes(64, 3), Some(&[1u8, 1, 1][..]));
        assert_eq!(s.region.bytes(30_064, 2), Some(&[3u8, 3][..]));
    }

    #[test]
    fn create_then_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = created(dir.path(), 1 << 16);
        s.write(64, b"x").unwrap();
        drop(s);
        let s = Segment::open(&StdFs, &dir.path().join(file_name(3)), 3).unwrap();
        assert_eq!(s.header.base_lsn, 10);
        assert_eq!(s.header.next_job_id, 20);
        assert_eq!(s.size(), 1 << 16);
        let wrong = Segment::open(&StdFs, &dir.path().join(file_name(3)), 4).unwrap_err();
        assert_eq!(wrong.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn a_foreign_file_is_rejected_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(1));
        std::fs::write(
            &path,
            b"hello, this is not a segment at all, just some text here..",
        )
        .unwrap();
        let err = Segment::open(&StdFs, &path, 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("0000000001.wal"), "{err}");
        std::fs::write(&path, b"").unwrap();
        let err = Segment::open(&StdFs, &path, 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
    }
}
