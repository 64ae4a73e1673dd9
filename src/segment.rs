//! Segment files: preallocated, mapped, named by id.
//!
//! Creation is crash-atomic: the file is built as `NNNNNNNNNN.wal.tmp`
//! (preallocated, header written, fsynced), renamed into place, and the
//! directory fsynced. A crash leaves either no segment or a complete one
//! plus perhaps a `.tmp` file, which recovery deletes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::format::frame::{self, Frame, FrameError};
use crate::format::header::{FileKind, HeaderError, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::format::record::{EnqueueRec, Record};
use crate::format::{FORMAT_VERSION, MAX_ID};
use crate::vfs::{Region, Vfs, VfsFile};

/// Suffix of segment file names.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of files being built; leftovers are deleted on open.
pub const TMP_SUFFIX: &str = ".tmp";

/// An open log segment.
#[derive(Debug)]
pub struct Segment {
    /// The segment id (file name and checksum seed).
    pub id: u32,
    /// Where the file is.
    pub path: PathBuf,
    /// The file.
    pub file: Box<dyn VfsFile>,
    /// The whole file, mapped.
    pub region: Arc<Region>,
    /// The decoded header.
    pub header: SegmentHeader,
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
    /// Creates segment `id` of `size` bytes in `dir` (crash-atomically) and
    /// maps it. The directory is fsynced before this returns.
    pub fn create(
        vfs: &dyn Vfs,
        dir: &Path,
        id: u32,
        size: u64,
        base_lsn: u64,
        next_job_id: u64,
        mode: u32,
    ) -> Result<Segment> {
        let path = dir.join(file_name(id));
        let tmp = dir.join(format!("{}{TMP_SUFFIX}", file_name(id)));
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            kind: FileKind::Log,
            segment_id: id,
            base_lsn,
            next_job_id,
        };
        let file = vfs
            .create(&tmp, mode)
            .map_err(|e| Error::io("creating segment", &tmp, e))?;
        file.allocate(size)
            .map_err(|e| Error::io("preallocating segment", &tmp, e))?;
        file.write_at(&header.encode(), 0)
            .map_err(|e| Error::io("writing segment header", &tmp, e))?;
        file.sync_all()
            .map_err(|e| Error::io("syncing new segment", &tmp, e))?;
        vfs.rename(&tmp, &path)
            .map_err(|e| Error::io("renaming new segment", &path, e))?;
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("syncing directory", dir, e))?;
        let region = file
            .map(size)
            .map_err(|e| Error::io("mapping segment", &path, e))?;
        Ok(Segment {
            id,
            path,
            file,
            region,
            header,
        })
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
        let region = file
            .map(len)
            .map_err(|e| Error::io("mapping segment", path, e))?;
        Ok(Segment {
            id,
            path: path.to_path_buf(),
            file,
            region,
            header,
        })
    }

    /// Size of the file in bytes.
    pub fn size(&self) -> u32 {
        u32::try_from(self.region.len()).unwrap_or(u32::MAX)
    }

    /// Decodes and verifies the frame at `off`.
    pub fn frame_at(&self, off: u32) -> std::result::Result<Frame<'_>, FrameError> {
        let rest = self.region.len().saturating_sub(off as usize);
        let buf = self
            .region
            .bytes(off as usize, rest)
            .ok_or(FrameError::Truncated)?;
        frame::decode(buf, self.id, self.size())
    }

    /// Decodes and verifies the enqueue record of a job at `off`.
    pub fn enqueue_at(&self, off: u32) -> Result<EnqueueRec<'_>> {
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

    /// Writes `bytes` at `off`.
    pub fn write(&self, off: u32, bytes: &[u8]) -> Result<()> {
        self.file
            .write_at(bytes, u64::from(off))
            .map_err(|e| Error::io("writing record", &self.path, e))
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
    }

    #[test]
    fn create_then_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segment::create(&StdFs, dir.path(), 3, 1 << 16, 10, 20, 0o600).unwrap();
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
