//! The queue directory as a reader sees it: which files there are, whether
//! a running process holds the queue, and the bytes of a file, read with
//! `read` (never mapped: a live writer may delete a segment under us, and
//! a mapped file that shrinks would kill the reader with `SIGBUS`).

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// Who holds the queue's `LOCK`, as far as `/proc/locks` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The process id that took the lock.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), when readable.
    pub command: Option<String>,
}

/// Whether a running process holds the queue. On Linux this is read from
/// `/proc/locks` (by the `LOCK` file's inode), without taking the lock: a
/// test that took it, however briefly, could make an application that
/// opens the queue at that instant fail with `Locked`. Where
/// `/proc/locks` cannot be read, the lock is tried without waiting and
/// released at once. The `LOCK` file is opened read-only and never
/// created.
pub fn is_live(dir: &Path) -> Result<bool> {
    let path = dir.join(crate::queue::LOCK_FILE);
    if let Some(held) = held_per_proc_locks(&path) {
        return Ok(held);
    }
    let file = match open_for_reading(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("opening the lock file", &path, e)),
    };
    match file.try_lock() {
        // Dropping the file releases the lock.
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("testing the lock", &path, e)),
    }
}

/// Whether `/proc/locks` lists a lock on `lock` (`Some(false)` also when
/// the file does not exist); `None` when that cannot be told.
fn held_per_proc_locks(lock: &Path) -> Option<bool> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let file = match std::fs::metadata(lock) {
        Ok(m) => FileId::of(&m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    Some(holder_pid(&locks, file).is_some())
}

/// A file as `/proc/locks` names it: the device's major and minor number
/// and the inode. The inode alone is not enough: two file systems have
/// inodes of the same number (a lock on another tmpfs's inode 3 made an
/// idle queue look live, naming an unrelated process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    major: u64,
    minor: u64,
    inode: u64,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        // glibc's gnu_dev_major/minor: the split of a 64-bit dev_t.
        let dev = m.dev();
        FileId {
            major: ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000),
            minor: (dev & 0xff) | ((dev >> 12) & 0xffff_ff00),
            inode: m.ino(),
        }
    }

    /// Parses `/proc/locks`' `MAJ:MIN:INODE` (hex, hex, decimal).
    fn parse(field: &str) -> Option<FileId> {
        let mut parts = field.split(':');
        let major = u64::from_str_radix(parts.next()?, 16).ok()?;
        let minor = u64::from_str_radix(parts.next()?, 16).ok()?;
        let inode = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(FileId {
            major,
            minor,
            inode,
        })
    }
}

/// The pid of the `FLOCK` on `file` in the text of `/proc/locks`.
fn holder_pid(locks: &str, file: FileId) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let at = fields.iter().position(|f| f.matches(':').count() == 2)?;
        if FileId::parse(fields[at]) != Some(file) || !line.contains("FLOCK") {
            return None;
        }
        fields.get(at.checked_sub(1)?)?.parse::<u32>().ok()
    })
}

/// The process holding the queue's lock, looked up in `/proc/locks` by the
/// lock file's inode (Linux only; `None` elsewhere or when not found).
pub fn lock_holder(dir: &Path) -> Option<LockHolder> {
    let file = FileId::of(&std::fs::metadata(dir.join(crate::queue::LOCK_FILE)).ok()?);
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = holder_pid(&locks, file)?;
    let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string());
    Some(LockHolder { pid, command })
}

/// Names in the directory, sorted. Errors name the directory.
pub(crate) fn list(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::new(ErrorKind::NotFound, "no such directory").with_path(dir)
        } else {
            Error::io("listing the queue directory", dir, e)
        }
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing the queue directory", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A file as a scan reads it: its bytes up to where its data ends, and
/// the length it had when opened. Past the bytes it reads as zeros (holes,
/// preallocated extents never written, found as the log's open finds them:
/// `os::data_end`), which are not read: a file grown by zeros to many GiB
/// (`truncate -s 64G dead.wal`) costs the memory of its records only.
pub(crate) struct FileData {
    /// The bytes from offset 0 up to where the data ends.
    pub(crate) bytes: Vec<u8>,
    /// The file's length; `bytes.len()..len` reads as zeros.
    pub(crate) len: u64,
}

/// The first bytes of a small file that are read: `CLOSED` is 36 bytes
/// long, `STORE_ID` 32, `ID_FLOOR` 4,136 (its second slot at 4096),
/// `PAUSED` at most 66,645; open reads no more of them either.
const SMALL_FILE: u64 = 72 * 1024;

/// The paused queues `data` (a read of `PAUSED`) names, decoded as the
/// queue decodes them (holes read as zeros); `None` if it does not decode.
pub(crate) fn paused_names(data: FileData) -> Option<Vec<String>> {
    let mut bytes = data.bytes;
    // One byte past the longest file is enough to refuse a longer one.
    let longest = crate::format::paused::MAX_PAUSED_LEN as u64 + 1;
    bytes.resize(data.len.min(longest) as usize, 0);
    crate::format::paused::decode(&bytes)
}

/// The first [`SMALL_FILE`] bytes of a small file (`CLOSED`), or `None`
/// when it no longer exists.
pub(crate) fn read_small(path: &Path) -> Result<Option<FileData>> {
    read_with(path, Prefix::Small)
}

/// The file up to where its data ends ([`FileData`]), or `None` when it no
/// longer exists (a live writer deleted it after the directory was
/// listed). The file starts with a walq file header (a segment,
/// `dead.wal`, `done.rec`): when its first bytes are not one, only they
/// are read. A scan reads nothing past a damaged header, and a file that
/// is not ours (a sparse file of gigabytes, say) is then not read whole.
///
/// Only the length it had at the open is read: a live writer appending
/// meanwhile (to `dead.wal`, say) writes past it, and a read that followed
/// the growing end could copy a later record whole but an earlier one
/// half written, which looks like damage. Every byte below that length
/// was written before it was counted in it, so what is read is a prefix
/// the writer had finished, or ends in the part of a record being written
/// (a torn tail, not damage).
///
/// Anything but a regular file (a FIFO, a device, a socket put where a
/// queue file belongs) is refused unread, and data too large to hold in
/// memory (where the file system's holes are not trusted, a sparse file
/// of a terabyte is all data) is an error that names its size, not an
/// abort.
pub(crate) fn read_headed(path: &Path) -> Result<Option<FileData>> {
    read_with(path, Prefix::Header)
}

/// The checkpoint, read as open reads it: its head is read and checked
/// first, and the rest only when the head's counts give the file's length,
/// and only up to where its data ends. `Ok(Some(Err(why)))` when the head
/// does not give the length or the file has holes (a checkpoint is
/// written whole).
pub(crate) fn read_checkpoint(path: &Path) -> Result<Option<std::result::Result<Vec<u8>, String>>> {
    match read_with(path, Prefix::CheckpointHead) {
        Ok(Some(data)) if (data.bytes.len() as u64) < data.len => Ok(Some(Err(format!(
            "damaged: bytes never written (holes) from offset {} to its end at {}",
            data.bytes.len(),
            data.len
        )))),
        Ok(found) => Ok(found.map(|d| Ok(d.bytes))),
        Err(e) if e.kind() == ErrorKind::Corrupt => Ok(Some(Err(e.message().to_string()))),
        Err(e) => Err(e),
    }
}

/// The schedule file (`schedules.bin`) read whole, as the scheduler reads
/// it, and decoded with the scheduler's own decoder: its bytes, or `None`
/// when it does not exist. Damage is an error of kind
/// [`ErrorKind::Corrupt`] naming the file and the offset; a file written
/// by a newer walq is [`ErrorKind::UnsupportedVersion`]. The scheduler
/// replaces the file by a rename, so the one opened here is read whole as
/// it was written, also while a scheduler runs.
pub(crate) fn read_schedules(path: &Path) -> Result<Option<Vec<u8>>> {
    use crate::schedule::codec;
    let Some((file, len)) = open_regular(path)? else {
        return Ok(None);
    };
    if len > codec::MAX_FILE_LEN as u64 {
        let what = format!("{len} bytes is over the limit of {}", codec::MAX_FILE_LEN);
        return Err(Error::corrupt(path, 0, what));
    }
    let bytes = read_to(&file, len, path)?;
    codec::decode(&bytes, path)?;
    Ok(Some(bytes))
}

/// What a read checks of a file's first bytes before it reads the rest.
#[derive(Clone, Copy, PartialEq)]
enum Prefix {
    /// Nothing: only its first [`SMALL_FILE`] bytes are read.
    Small,
    /// A walq file header: when they are not one, only they are read.
    Header,
    /// A checkpoint's head, which must give the file's length.
    CheckpointHead,
}

/// Opens `path` to read, with its length: `None` when it no longer
/// exists; anything but a regular file is refused unread.
fn open_regular(path: &Path) -> Result<Option<(File, u64)>> {
    let file = match open_for_reading(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("opening", path, e)),
    };
    let len = regular_len(&file, path)?;
    Ok(Some((file, len)))
}

/// The length of `file`, a regular file (anything else is refused).
fn regular_len(file: &File, path: &Path) -> Result<u64> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io("reading the size of", path, e))?;
    if !meta.is_file() {
        let what =
            "not a regular file (a FIFO, device or socket where a queue file belongs): not read";
        return Err(Error::new(ErrorKind::Corrupt, what).with_path(path));
    }
    Ok(meta.len())
}

/// A file that starts with a walq file header, opened to be read a
/// record at a time (`dead.wal`, whose records hold payloads) rather
/// than whole ([`read_headed`]).
#[derive(Debug)]
pub(crate) struct HeadedFile {
    pub(crate) file: File,
    /// Its length when opened: nothing past it is read.
    pub(crate) len: u64,
    /// Where its data ends (`os::data_end`); zeros past it, not read.
    pub(crate) end: u64,
    /// Its first bytes when they are no walq file header: then nothing
    /// else of it is read.
    pub(crate) foreign: Option<Vec<u8>>,
}

/// `path` opened as a [`HeadedFile`], or `None` when it no longer exists.
pub(crate) fn open_headed(path: &Path) -> Result<Option<HeadedFile>> {
    match open_for_reading(path) {
        Ok(file) => headed(file, path).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("opening", path, e)),
    }
}

/// `file` (at `path`) as a [`HeadedFile`], its length taken now.
pub(crate) fn headed(file: File, path: &Path) -> Result<HeadedFile> {
    let len = regular_len(&file, path)?;
    let foreign = foreign_prefix(&file, len).map_err(|e| Error::io("reading", path, e))?;
    let end = match foreign {
        Some(_) => 0,
        None => crate::os::data_end(&file, len),
    };
    Ok(HeadedFile {
        file,
        len,
        end,
        foreign,
    })
}

fn read_with(path: &Path, prefix: Prefix) -> Result<Option<FileData>> {
    let Some((file, len)) = open_regular(path)? else {
        return Ok(None);
    };
    let end = match prefix {
        Prefix::Small => len.min(SMALL_FILE),
        Prefix::Header => {
            if let Some(bytes) =
                foreign_prefix(&file, len).map_err(|e| Error::io("reading", path, e))?
            {
                return Ok(Some(FileData { bytes, len }));
            }
            crate::os::data_end(&file, len)
        }
        Prefix::CheckpointHead => {
            checkpoint_head(&file, len, path)?;
            crate::os::data_end(&file, len)
        }
    };
    let bytes = read_to(&file, end, path)?;
    if prefix != Prefix::Small {
        // The read's readahead put clean zero pages past `end` into the
        // page cache, where they would count as data for the next look
        // (this scan's, or the open of the queue): drop them, as the log
        // does after its reads (a hint).
        crate::os::drop_clean_pages(&file, end, len);
    }
    Ok(Some(FileData { bytes, len }))
}

/// The first `end` bytes of `file`, their memory reserved first: an error
/// naming the size when it cannot be.
fn read_to(file: &File, end: u64, path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let room = usize::try_from(end)
        .map_err(|_| ())
        .and_then(|n| buf.try_reserve_exact(n).map_err(|_| ()));
    if room.is_err() {
        let what = format!("{end} bytes: more than this process can hold in memory to read");
        return Err(Error::new(ErrorKind::Io, what).with_path(path));
    }
    // From the start: `os::data_end` moved the file's offset.
    let mut file = file;
    file.seek(io::SeekFrom::Start(0))
        .and_then(|_| file.take(end).read_to_end(&mut buf))
        .map_err(|e| Error::io("reading", path, e))?;
    Ok(buf)
}

/// The first bytes of a file of `len` bytes when they are no walq file
/// header (a header of a newer format is one: the scan says so).
fn foreign_prefix(file: &File, len: u64) -> io::Result<Option<Vec<u8>>> {
    use crate::format::header::{HeaderError, SegmentHeader, SEGMENT_HEADER_LEN};
    use std::os::unix::fs::FileExt;
    if len <= SEGMENT_HEADER_LEN as u64 {
        return Ok(None);
    }
    let mut prefix = vec![0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut prefix, 0)?;
    match SegmentHeader::decode(&prefix) {
        Ok(_) | Err(HeaderError::FutureVersion(_)) => Ok(None),
        Err(_) => Ok(Some(prefix)),
    }
}

/// Checks the head of the checkpoint `file` (`len` bytes) alone: `Err`
/// (`Corrupt`, saying why) when it does not give the file's length.
fn checkpoint_head(file: &File, len: u64, path: &Path) -> Result<()> {
    use crate::format::checkpoint::{check_file_len, HEAD_LEN};
    use std::os::unix::fs::FileExt;
    let mut head = vec![0u8; HEAD_LEN.min(usize::try_from(len).unwrap_or(usize::MAX))];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| Error::io("reading", path, e))?;
    check_file_len(&head, len)
        .map_err(|e| Error::new(ErrorKind::Corrupt, e.to_string()).with_path(path))
}

/// Opens `path` to read without blocking on a FIFO (whose `open` would
/// wait for a writer forever); reads of a regular file are unaffected.
fn open_for_reading(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF\n\
                     2: POSIX  ADVISORY  READ 77 fd:01:1234 0 EOF\n";
        let file = |major, minor, inode| FileId {
            major,
            minor,
            inode,
        };
        assert_eq!(holder_pid(locks, file(0xfd, 1, 1234)), Some(4242));
        assert_eq!(holder_pid(locks, file(0xfd, 1, 99)), None);
        // The same inode on another device is another file (a review
        // found a queue reported live for a lock on another tmpfs).
        assert_eq!(holder_pid(locks, file(0, 0x2a, 1234)), None);
    }

    /// The device numbers walq reads from a file's metadata are the ones
    /// the kernel prints in `/proc/locks` (a lock of this process, read
    /// back).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_lock_of_this_process_is_found_by_device_and_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let f = std::fs::File::create(&path).unwrap();
        f.try_lock().unwrap();
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        let id = FileId::of(&std::fs::metadata(&path).unwrap());
        assert_eq!(
            holder_pid(&locks, id),
            Some(std::process::id()),
            "{id:?} in {locks}"
        );
    }

    /// The liveness test never takes the lock itself: an application that
    /// opens the queue while a monitor (`walq stats` in a loop) looks at
    /// it is never refused with `Locked`.
    #[test]
    fn looking_at_a_queue_never_keeps_it_from_opening() {
        let dir = tempfile::tempdir().unwrap();
        drop(crate::Queue::open(dir.path()).unwrap());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let looker = {
            let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    is_live(&dir).unwrap();
                }
            })
        };
        let mut held = 0;
        for _ in 0..300 {
            let q = crate::Queue::open(dir.path());
            stop.store(q.is_err(), std::sync::atomic::Ordering::Relaxed);
            let q = q.expect("open while the queue is looked at");
            held += usize::from(is_live(dir.path()).unwrap());
            drop(q);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        looker.join().unwrap();
        assert_eq!(held, 300, "a held queue is live");
        assert!(!is_live(dir.path()).unwrap());
    }

    /// A side file whose header is not ours (here a sparse gigabyte put in
    /// place of `dead.wal`) is damage at offset 0, found by reading its
    /// header alone: a review saw 5 GiB read whole, into memory, first.
    /// `verify` of the queue in `dir`: its summary and every problem.
    fn verify(dir: &Path) -> (crate::inspect::ScanSummary, Vec<crate::inspect::Problem>) {
        use crate::inspect::{Problem, Visitor};
        struct Keep(Vec<Problem>);
        impl Visitor for Keep {
            fn problem(&mut self, p: &Problem) {
                self.0.push(p.clone());
            }
        }
        let mut keep = Keep(Vec::new());
        let inspector = crate::inspect::Inspector::open(dir).unwrap();
        let summary = inspector.verify(&mut keep).unwrap();
        (summary, keep.0)
    }

    #[test]
    fn a_file_with_a_foreign_header_is_not_read_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let q = crate::Queue::open(dir.path()).unwrap();
        q.enqueue(b"job").unwrap();
        q.close().unwrap();
        let dead = dir.path().join(crate::dead::DEAD_FILE);
        let file = std::fs::File::create(&dead).unwrap();
        file.set_len(1 << 30).unwrap();
        drop(file);
        let (summary, problems) = verify(dir.path());
        // The segment (64 MiB, preallocated) is read; the gigabyte is not.
        assert!(summary.bytes < 1 << 28, "read {} bytes", summary.bytes);
        let at_dead: Vec<_> = problems
            .iter()
            .filter(|p| p.file == crate::dead::DEAD_FILE)
            .collect();
        assert_eq!(at_dead.len(), 1, "{problems:?}");
        assert_eq!(at_dead[0].offset, 0, "{problems:?}");
        assert_eq!(summary.damage, 1, "{problems:?}");
    }

    #[test]
    fn a_checkpoint_longer_than_its_head_says_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let q = crate::Queue::open(dir.path()).unwrap();
        q.enqueue(b"job").unwrap();
        q.close().unwrap();
        let path = dir.path().join(crate::state::checkpoint::CHECKPOINT_FILE);
        let good = read_checkpoint(&path).unwrap().unwrap().unwrap();
        assert_eq!(good, std::fs::read(&path).unwrap());
        // Grown to 64 GiB, sparse: the head is intact, its counts are not
        // the file's length, so the body is not read (nor memory taken
        // for it), and verify says why the checkpoint cannot be used.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(64 << 30).unwrap();
        drop(file);
        let why = read_checkpoint(&path).unwrap().unwrap().unwrap_err();
        assert!(why.contains("lengths do not add up"), "{why}");
        let (_, problems) = verify(dir.path());
        let note = problems.iter().find(|p| p.file == "CHECKPOINT");
        let note = format!("{note:?}");
        assert!(note.contains("lengths do not add up"), "{problems:?}");
    }
}
