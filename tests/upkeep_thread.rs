//! The log's file work (spare segments made and synced, finished segments
//! deleted) runs on the queue's `walq-upkeep` thread: an operation only
//! wakes it, and never pays for those fsyncs itself. The same goes for
//! faulting in the pages ahead of the tail under `Durability::Os`.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::ThreadId;

use parking_lot::Mutex;
use walq::vfs::{Mapping, SimFs, Vfs, VfsFile};
use walq::{Durability, Options, Queue};

type Seen = Arc<Mutex<Vec<(String, &'static str, String, ThreadId)>>>;

/// A file system that records which thread created or removed each file,
/// and which prefaulted a range of one.
#[derive(Debug)]
struct Watched {
    inner: SimFs,
    /// (thread name, what, file name, thread).
    seen: Seen,
}

fn note(seen: &Seen, what: &'static str, name: String) {
    let thread = std::thread::current();
    let id = thread.id();
    seen.lock()
        .push((thread.name().unwrap_or("").to_string(), what, name, id));
}

impl Watched {
    fn new() -> Watched {
        Watched {
            inner: SimFs::new(),
            seen: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn note(&self, what: &'static str, path: &Path) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        note(&self.seen, what, name);
    }

    fn wrap(&self, inner: Box<dyn VfsFile>) -> Box<dyn VfsFile> {
        Box::new(WatchedFile {
            inner,
            seen: self.seen.clone(),
        })
    }
}

/// A file that records the ranges prefaulted, as "prefault" and
/// "offset+length".
#[derive(Debug)]
struct WatchedFile {
    inner: Box<dyn VfsFile>,
    seen: Seen,
}

impl VfsFile for WatchedFile {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, off)
    }
    fn write_at_syscall(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.inner.write_at_syscall(buf, off)
    }
    fn start_writeback(&self, off: u64, len: u64) -> std::io::Result<()> {
        self.inner.start_writeback(off, len)
    }
    fn prefault(&self, off: u64, len: u64) -> std::io::Result<()> {
        note(&self.seen, "prefault", format!("{off}+{len}"));
        self.inner.prefault(off, len)
    }
    fn read_data(&self, buf: &mut [u8], from: usize) -> std::io::Result<usize> {
        self.inner.read_data(buf, from)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, len: u64) -> std::io::Result<()> {
        self.inner.allocate(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
    fn map(&self, len: u64) -> std::io::Result<Mapping> {
        self.inner.map(len)
    }
}

impl Vfs for Watched {
    fn create_dir_all(&self, dir: &Path, mode: u32) -> std::io::Result<()> {
        self.inner.create_dir_all(dir, mode)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create(&self, path: &Path, mode: u32) -> std::io::Result<Box<dyn VfsFile>> {
        self.note("create", path);
        Ok(self.wrap(self.inner.create(path, mode)?))
    }
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        Ok(self.wrap(self.inner.open(path)?))
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.note("remove", path);
        self.inner.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path, mode: u32) -> std::io::Result<Box<dyn Any + Send + Sync>> {
        self.inner.lock(path, mode)
    }
}

#[test]
fn spares_and_deletions_run_on_the_upkeep_thread() {
    let fs = Arc::new(Watched::new());
    let dir = PathBuf::from("/q");
    let opts = Options::default()
        .segment_size(64 * 1024)
        .durability(Durability::Os);
    let q = Queue::open_on(fs.clone(), &dir, opts).unwrap();
    // The open makes the first segment itself; only what the operations
    // cause is looked at.
    q.wait_upkeep();
    fs.seen.lock().clear();
    // Many rotations, then a drain that empties and deletes the segments;
    // each operation waits for the upkeep it asked for before the next, so
    // every rotation finds its spares ready (none is made under the lock).
    for i in 0..2000u32 {
        q.enqueue(&[i as u8; 200]).unwrap();
        q.wait_upkeep();
    }
    while let Some(job) = q.dequeue().unwrap() {
        q.ack(job.receipt()).unwrap();
        q.wait_upkeep();
    }
    let seen = fs.seen.lock().clone();
    let spares: Vec<_> = seen
        .iter()
        .filter(|s| s.1 == "create" && s.2.ends_with(".wal.spare"))
        .collect();
    let deleted: Vec<_> = seen
        .iter()
        .filter(|s| s.1 == "remove" && s.2.ends_with(".wal"))
        .collect();
    assert!(spares.len() > 5, "spares made: {spares:?}");
    assert!(deleted.len() > 5, "segments deleted: {deleted:?}");
    for (thread, what, name, _) in spares.iter().chain(&deleted) {
        assert_eq!(thread, "walq-upkeep", "{what} {name} on thread {thread:?}");
    }
    q.close().unwrap();
}

#[test]
fn pages_ahead_of_the_tail_are_prefaulted_on_a_thread_of_their_own() {
    let fs = Arc::new(Watched::new());
    let dir = PathBuf::from("/q");
    let opts = Options::default()
        .segment_size(4 << 20)
        .durability(Durability::Os);
    let q = Queue::open_on(fs.clone(), &dir, opts).unwrap();
    q.wait_upkeep();
    fs.seen.lock().clear();
    // A little over 1 MiB of records: the tail crosses the first 1 MiB
    // boundary of the active segment.
    for i in 0..1200u32 {
        q.enqueue(&[i as u8; 1000]).unwrap();
        q.wait_upkeep();
    }
    let seen = fs.seen.lock().clone();
    let prefaults: Vec<_> = seen.iter().filter(|s| s.1 == "prefault").collect();
    let mib = format!("{}+{}", 1 << 20, 2 << 20);
    assert!(
        prefaults.iter().any(|s| s.2 == mib),
        "the 2 MiB after the 1 MiB boundary prefaulted: {prefaults:?}"
    );
    for (thread, _, range, _) in &prefaults {
        // Not `walq-upkeep`, which waits for each rotation's sealing sync.
        assert_eq!(thread, "walq-prefault", "prefault of {range} on {thread:?}");
    }
    q.close().unwrap();
}

#[test]
fn checkpoints_are_written_by_one_thread_that_lives_with_the_queue() {
    // The operation that makes a checkpoint due hands its capture over: it
    // neither writes it nor spawns a thread for it.
    let fs = Arc::new(Watched::new());
    let dir = PathBuf::from("/q");
    let opts = Options::default()
        .segment_size(64 * 1024)
        .durability(Durability::Os)
        .checkpoint_every(8 * 1024);
    let q = Queue::open_on(fs.clone(), &dir, opts).unwrap();
    for i in 0..400u32 {
        q.enqueue(&[i as u8; 200]).unwrap();
        q.wait_upkeep();
    }
    let seen = fs.seen.lock().clone();
    let written: Vec<_> = seen
        .iter()
        .filter(|s| s.1 == "create" && s.2.starts_with("CHECKPOINT"))
        .collect();
    assert!(written.len() > 5, "checkpoints written: {written:?}");
    for (thread, _, name, id) in &written {
        assert_eq!(thread, "walq-checkpoint", "{name} on thread {thread:?}");
        assert_eq!(*id, written[0].3, "{name} on another thread than the first");
    }
    q.close().unwrap();
}

#[test]
fn no_prefault_under_sync() {
    // `Durability::Sync` appends with `pwrite`: a prefault would only
    // dirty pages for the next fdatasync to write.
    let fs = Arc::new(Watched::new());
    let dir = PathBuf::from("/q");
    let opts = Options::default()
        .segment_size(4 << 20)
        .durability(Durability::Sync);
    let q = Queue::open_on(fs.clone(), &dir, opts).unwrap();
    for i in 0..1200u32 {
        q.enqueue(&[i as u8; 1000]).unwrap();
    }
    q.wait_upkeep();
    let seen = fs.seen.lock().clone();
    assert!(
        !seen.iter().any(|s| s.1 == "prefault"),
        "prefaults under Sync: {seen:?}"
    );
    q.close().unwrap();
}
