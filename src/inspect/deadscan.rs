//! Scanning `dead.wal` one record at a time. Its records hold the dead
//! letters' payloads, so the file is not read whole (as the other side
//! file, `done.rec`, is): each frame is read with one `pread` and handed to
//! the visitor, so a scan holds one dead letter in memory. Only damage
//! makes it read the rest of the file at once, as the queue's own open
//! does, to tell a torn tail from corruption with the rules of
//! [`Scan::side_records`].

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::entry::{FileRole, Visitor};
use super::files::{self, HeadedFile};
use super::scan::{side_entry, side_params, Scan, SideBytes};
use crate::error::{Error, ErrorKind, Result};
use crate::format::frame::{self, FRAME_HEADER_LEN};
use crate::format::header::{FileKind, SEGMENT_HEADER_LEN};

const ROLE: FileRole = FileRole::DeadLetters;

impl Scan<'_> {
    /// Scans the dead-letter file `name`. In a live queue it is looked at
    /// again (up to three times, 20 ms apart) while it shows damage, as
    /// the newest segment is: a look racing the writer can copy a later
    /// record whole and an earlier one half written. Those looks report
    /// nothing; the last one is scanned again, reporting.
    pub(crate) fn dead_file(&mut self, name: &str) -> Result<()> {
        let path = self.dir().join(name);
        let mut file = files::open_headed(&path)?;
        if file.is_none() {
            self.deleted(name);
        }
        if self.sum.live {
            for _ in 0..3 {
                match &file {
                    Some(f) if shows_damage(self.dir(), name, f)? => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        file = files::open_headed(&path)?;
                    }
                    _ => break,
                }
            }
        }
        let Some(file) = file else {
            return Ok(());
        };
        self.dead_records_of(name, &file)?;
        crate::os::drop_clean_pages(&file.file, file.end, file.len);
        Ok(())
    }

    /// The header and records of the open dead-letter file `f`, between
    /// the visitor's `file_start` and `file_end`.
    pub(crate) fn dead_records_of(&mut self, name: &str, f: &HeadedFile) -> Result<()> {
        self.visitor().file_start(name, ROLE, f.len);
        let (_, seed, max_len) = side_params(ROLE);
        let path = self.dir().join(name);
        let head = match &f.foreign {
            Some(prefix) => prefix.clone(),
            None => read_upto(f, 0, SEGMENT_HEADER_LEN, &path)?,
        };
        self.sum.bytes += head.len() as u64;
        if let Some(h) = self.header(name, &head, FileKind::Dead)? {
            if h.segment_id != seed {
                let what = format!("file header id {:#x}, expected {seed:#x}", h.segment_id);
                self.problem(super::Problem::damage(name, 0, what));
            }
            self.stream_records(name, &path, f, (seed, max_len))?;
        }
        self.visitor().file_end(name, ROLE);
        Ok(())
    }

    /// The records, one frame read at a time, up to the first that does
    /// not verify; from there on, the rest of the file read at once.
    fn stream_records(
        &mut self,
        name: &str,
        path: &Path,
        f: &HeadedFile,
        (seed, max_len): (u32, u32),
    ) -> Result<()> {
        let mut off = SEGMENT_HEADER_LEN as u64;
        let mut buf = Vec::new();
        while off < f.end {
            read_frame(f, off, max_len, path, &mut buf)?;
            if let Ok(fr) = frame::decode(&buf, seed, max_len) {
                if let Some(entry) = side_entry(ROLE, &fr) {
                    self.sum.bytes += u64::from(fr.len);
                    self.emit(name, off as usize, &fr, entry);
                    off += u64::from(fr.len);
                    continue;
                }
            }
            let rest = read_rest(f, off, path)?;
            self.sum.bytes += rest.len() as u64;
            let data = SideBytes {
                bytes: &rest,
                base: off as usize,
                len: f.len,
            };
            self.side_records(name, ROLE, &data, seed, max_len);
            return Ok(());
        }
        self.zeros_after_records(name, ROLE, off, f.len);
        Ok(())
    }
}

/// Scans the open dead-letter file `f` of the queue in `dir` alone,
/// reporting to `visitor` (an index of the letters taken again).
pub(crate) fn scan_dead(
    dir: &Path,
    live: bool,
    f: &HeadedFile,
    visitor: &mut dyn Visitor,
) -> Result<()> {
    Scan::new(dir, live, visitor).dead_records_of(crate::dead::DEAD_FILE, f)
}

/// Whether a scan of `f` finds damage (quietly, to decide whether to
/// look again).
fn shows_damage(dir: &Path, name: &str, f: &HeadedFile) -> Result<bool> {
    struct Quiet;
    impl Visitor for Quiet {}
    let mut quiet = Quiet;
    let mut scan = Scan::new(dir, true, &mut quiet);
    scan.dead_records_of(name, f)?;
    Ok(scan.sum.damage > 0)
}

/// The frame at `off` into `buf`: the bytes it claims to span (at most
/// `max_len`, and what is left of the data), or its header alone when
/// its length is out of bounds (then it does not decode).
fn read_frame(
    f: &HeadedFile,
    off: u64,
    max_len: u32,
    path: &Path,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let left = usize::try_from(f.end - off).unwrap_or(usize::MAX);
    *buf = read_upto(f, off, left.min(FRAME_HEADER_LEN), path)?;
    let claimed = crate::format::u32_at(buf, 4).unwrap_or(0);
    if claimed as usize > buf.len() && claimed <= max_len {
        *buf = read_upto(f, off, (claimed as usize).min(left), path)?;
    }
    Ok(())
}

/// The rest of the data of `f` from `off` on.
fn read_rest(f: &HeadedFile, off: u64, path: &Path) -> Result<Vec<u8>> {
    let n = usize::try_from(f.end - off).unwrap_or(usize::MAX);
    read_upto(f, off, n, path)
}

/// Up to `n` bytes of `f` at `off` (fewer when the file ends sooner), their
/// memory reserved first: an error naming the size when it cannot be.
pub(crate) fn read_upto(f: &HeadedFile, off: u64, n: usize, path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if buf.try_reserve_exact(n).is_err() {
        let what = format!(
            "{n} bytes from offset {off}: more than this process can hold in memory to read"
        );
        return Err(Error::new(ErrorKind::Io, what).with_path(path));
    }
    buf.resize(n, 0);
    let mut got = 0;
    while got < n {
        match f.file.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading", path, e)),
        }
    }
    buf.truncate(got);
    Ok(buf)
}
