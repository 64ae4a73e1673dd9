//! Rewriting `dead.wal` without holding the queue lock for the copy.
//!
//! 1. [`DeadFile::start_compaction`] (under the queue lock): notes the
//!    file handle, its length and the live letters at that moment.
//! 2. [`Compaction::write`] (lock released): reads those letters from the
//!    old file and writes them to `dead.wal.tmp` with their sync lag
//!    cleared. Nothing else writes the old file's bytes below the noted
//!    length (the file only grows), and readers use their own handle.
//! 3. [`DeadFile::finish_compaction`] (under the lock again): copies the
//!    frames appended since step 1 (dead letters and removals, verbatim but
//!    for the sync lag), so removals made meanwhile hold in the new file,
//!    fsyncs it, renames it over `dead.wal`, fsyncs the directory, and
//!    switches the index to the new offsets.
//!
//! A failure before the rename leaves `dead.wal` as it was (the temporary
//! file is removed; a leftover one is removed on open): the compaction is
//! dropped and tried again later. A failed directory sync after the
//! rename poisons the queue ([`AtomicWriteError::Replaced`]): the new file
//! holds the same letters as the old one at that moment, but every dead
//! letter and removal written to it later is lost with it if a power cut
//! brings the old name back (a purge that returned `Ok` came back, a
//! failed job's letter was gone while the log said it finished; two
//! reviews found it).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DeadEntry, DeadFile, DEAD_SEGMENT_ID, MAX_DEAD_RECORD};
use crate::error::{Error, Result};
use crate::format::frame;
use crate::format::header::{FileKind, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::format::FORMAT_VERSION;
use crate::vfs::{AtomicWriteError, Vfs, VfsFile};

/// The written new file: handle, end of the copied letters, and each
/// letter's offset in it.
type Written = (Box<dyn VfsFile>, u64, HashMap<u64, u64>);

/// A compaction under way (see the module docs).
#[derive(Debug)]
pub struct Compaction {
    old: Arc<dyn VfsFile>,
    path: PathBuf,
    tmp: PathBuf,
    /// Length of the old file when the compaction started.
    snap_len: u64,
    entries: Vec<(u64, DeadEntry)>,
    /// The new file, once written, its length, and the letters' offsets.
    new: Option<Written>,
}

impl DeadFile {
    /// Starts a compaction if removed records make up enough of the file
    /// and none is under way.
    pub fn start_compaction(&mut self) -> Option<Compaction> {
        if self.compacting || !self.wants_compaction() {
            return None;
        }
        self.compacting = true;
        let name = self
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let tmp = self
            .path
            .with_file_name(format!("{name}{}", crate::segment::TMP_SUFFIX));
        Some(Compaction {
            old: self.file.clone(),
            path: self.path.clone(),
            tmp,
            snap_len: self.len,
            entries: self.entries.iter().map(|(&id, &e)| (id, e)).collect(),
            new: None,
        })
    }

    /// Installs a written compaction (see the module docs). A failure
    /// before the rename leaves `dead.wal` unchanged and drops the
    /// compaction ([`AtomicWriteError::Unchanged`]); one after it
    /// ([`AtomicWriteError::Replaced`]: the directory's sync) must poison
    /// the queue.
    pub fn finish_compaction(
        &mut self,
        mut c: Compaction,
        vfs: &dyn Vfs,
        dir: &Path,
    ) -> std::result::Result<(), AtomicWriteError> {
        self.compacting = false;
        let Some((file, body_end, moved)) = c.new.take() else {
            return Ok(());
        };
        let installed = self.install(&c, &*file, body_end, &moved, vfs);
        let (len, entries) = match installed {
            Ok(v) => v,
            Err(e) => {
                drop(file);
                let _ = vfs.remove(&c.tmp);
                return Err(AtomicWriteError::Unchanged(e));
            }
        };
        self.file = Arc::from(file);
        self.len = len;
        self.reserved = len;
        let live: u64 = entries.values().map(|e| u64::from(e.len)).sum();
        self.garbage = len - SEGMENT_HEADER_LEN as u64 - live;
        self.entries = entries;
        self.synced_len = len;
        vfs.sync_dir(dir)
            .map_err(|e| AtomicWriteError::Replaced(Error::io("syncing directory", dir, e)))
    }

    /// Copies the frames appended since the start, syncs and renames the
    /// new file; returns its length and index.
    fn install(
        &self,
        c: &Compaction,
        file: &dyn VfsFile,
        body_end: u64,
        moved: &HashMap<u64, u64>,
        vfs: &dyn Vfs,
    ) -> Result<(u64, BTreeMap<u64, DeadEntry>)> {
        let tail_len = usize::try_from(self.len - c.snap_len).unwrap_or(usize::MAX);
        let mut tail = vec![0u8; tail_len];
        self.file
            .read_at(&mut tail, c.snap_len)
            .map_err(|e| Error::io("reading dead letters", &self.path, e))?;
        let mut pos = 0;
        while pos < tail.len() {
            let f = frame::decode(&tail[pos..], DEAD_SEGMENT_ID, MAX_DEAD_RECORD)
                .map_err(|e| Error::corrupt(&self.path, c.snap_len + pos as u64, e.to_string()))?;
            let end = pos + f.len as usize;
            frame::clear_sync_lag(&mut tail[pos..end], DEAD_SEGMENT_ID);
            pos = end;
        }
        let mut entries = BTreeMap::new();
        for (&id, &e) in &self.entries {
            let off = if e.off >= c.snap_len {
                body_end + (e.off - c.snap_len)
            } else {
                *moved.get(&id).ok_or_else(|| {
                    Error::corrupt(&self.path, e.off, "dead letter missing from compaction")
                })?
            };
            entries.insert(id, DeadEntry { off, ..e });
        }
        file.write_at(&tail, body_end)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("writing", &c.tmp, e))?;
        vfs.rename(&c.tmp, &self.path)
            .map_err(|e| Error::io("renaming", &self.path, e))?;
        Ok((body_end + tail.len() as u64, entries))
    }

    /// Rewrites the file with only the live dead letters (same LSNs), all
    /// three steps at once.
    #[cfg(test)]
    pub fn compact(&mut self, vfs: &dyn Vfs, dir: &Path, mode: u32) -> Result<()> {
        if let Some(mut c) = self.start_compaction() {
            let written = c.write(vfs, mode);
            self.finish_compaction(c, vfs, dir)
                .map_err(AtomicWriteError::into_error)?;
            written?;
        }
        Ok(())
    }
}

impl Compaction {
    /// Writes the letters noted at the start to the temporary file (not
    /// yet synced). On failure the temporary file is removed.
    pub fn write(&mut self, vfs: &dyn Vfs, mode: u32) -> Result<()> {
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            kind: FileKind::Dead,
            segment_id: DEAD_SEGMENT_ID,
            base_lsn: 0,
            next_job_id: 0,
        };
        let mut body = header.encode().to_vec();
        let mut moved = HashMap::with_capacity(self.entries.len());
        for &(id, entry) in &self.entries {
            let start = body.len();
            body.resize(start + entry.len as usize, 0);
            self.old
                .read_at(&mut body[start..], entry.off)
                .map_err(|e| Error::io("reading dead letter", &self.path, e))?;
            // The new file is synced whole: clear the sync lag.
            frame::clear_sync_lag(&mut body[start..], DEAD_SEGMENT_ID);
            moved.insert(id, start as u64);
        }
        let _ = vfs.remove(&self.tmp);
        let file = vfs
            .create(&self.tmp, mode)
            .map_err(|e| Error::io("creating", &self.tmp, e))?;
        if let Err(e) = file.write_at(&body, 0) {
            drop(file);
            let _ = vfs.remove(&self.tmp);
            return Err(Error::io("writing", &self.tmp, e));
        }
        self.new = Some((file, body.len() as u64, moved));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::DeadRec;
    use crate::options::RecoveryMode;
    use crate::vfs::SimFs;

    fn rec(id: u64, payload: &[u8]) -> DeadRec<'_> {
        DeadRec {
            id,
            enqueued_ms: 1,
            dead_ms: 2,
            attempts: 3,
            key: b"",
            error: b"boom",
            queue: b"",
            priority: crate::format::record::PRIORITY_NORMAL,
            group: b"",
            payload,
        }
    }

    /// A dead-letter file in `dir` holding 40 letters of 64 KiB (the
    /// payload is returned), 30 of them removed: enough garbage to want a
    /// compaction.
    fn mostly_removed(fs: &SimFs, dir: &Path) -> (DeadFile, Vec<u8>) {
        fs.create_dir_all(dir, 0o700).unwrap();
        let (mut d, _) = DeadFile::open(fs, dir, 0o600, RecoveryMode::Strict).unwrap();
        let big = vec![7u8; 64 << 10];
        for id in 0..40 {
            d.add(&rec(id, &big), id).unwrap();
        }
        for id in 0..30 {
            d.remove(id, 100 + id).unwrap();
        }
        (d, big)
    }

    /// Letters added and removed while the copy runs (lock released) are
    /// kept and removed in the new file, and survive a reopen.
    #[test]
    fn changes_during_the_copy_are_kept() {
        let fs = SimFs::new();
        let dir = Path::new("/q");
        let (mut d, big) = mostly_removed(&fs, dir);
        d.sync().unwrap();
        let before = d.disk_bytes();
        let mut c = d.start_compaction().expect("removals dominate");
        assert!(d.start_compaction().is_none(), "one at a time");
        c.write(&fs, 0o600).unwrap();
        // Meanwhile, under the lock: a new letter, and a letter of the
        // snapshot removed.
        d.add(&rec(50, b"late"), 200).unwrap();
        d.remove(35, 201).unwrap();
        d.finish_compaction(c, &fs, dir).unwrap();
        let want: Vec<u64> = (30..40).filter(|&i| i != 35).chain([50]).collect();
        let ids = |d: &DeadFile| d.entries().keys().copied().collect::<Vec<_>>();
        assert_eq!(ids(&d), want);
        assert!(
            d.disk_bytes() < before / 2,
            "{} vs {before}",
            d.disk_bytes()
        );
        assert_eq!(d.get(50).unwrap().unwrap().payload, b"late");
        assert_eq!(d.get(39).unwrap().unwrap().payload, big);
        // Appends go to the new file.
        d.add(&rec(51, b"after"), 300).unwrap();
        d.sync().unwrap();
        drop(d);
        let (d, rep) = DeadFile::open(&fs, dir, 0o600, RecoveryMode::Strict).unwrap();
        assert_eq!(rep.torn_bytes, 0);
        let want: Vec<u64> = want.into_iter().chain([51]).collect();
        assert_eq!(ids(&d), want);
        assert_eq!(d.entries()[&50].lsn, 200);
        assert_eq!(d.get(51).unwrap().unwrap().payload, b"after");
    }

    /// A copy that fails leaves `dead.wal` as it was and no temporary file.
    #[test]
    fn a_failed_copy_changes_nothing() {
        use crate::vfs::{Fault, FaultOp};
        let fs = SimFs::new();
        let dir = Path::new("/q");
        let (mut d, _) = mostly_removed(&fs, dir);
        let len = d.disk_bytes();
        let mut c = d.start_compaction().unwrap();
        c.write(&fs, 0o600).unwrap();
        fs.set_fault(Some(Fault {
            op: FaultOp::Rename,
            at: fs.op_count(FaultOp::Rename),
            forever: false,
            kind: std::io::ErrorKind::Other,
        }));
        assert!(d.finish_compaction(c, &fs, dir).is_err());
        assert_eq!(d.disk_bytes(), len);
        assert_eq!(d.entries().len(), 10);
        assert!(!fs.list(dir).unwrap().iter().any(|n| n.ends_with(".tmp")));
        assert!(d.start_compaction().is_some(), "tried again later");
    }
}
