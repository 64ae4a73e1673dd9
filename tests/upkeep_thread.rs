//! The log's file work (spare segments made and synced, finished segments
//! deleted) runs on the queue's `walq-upkeep` thread: an operation only
//! wakes it, and never pays for those fsyncs itself.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use walq::vfs::{SimFs, Vfs, VfsFile};
use walq::{Durability, Options, Queue};

/// A file system that records which thread created or removed each file.
#[derive(Debug)]
struct Watched {
    inner: SimFs,
    /// (thread name, what, file name).
    seen: Mutex<Vec<(String, &'static str, String)>>,
}

impl Watched {
    fn note(&self, what: &'static str, path: &Path) {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        self.seen.lock().push((thread, what, name));
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
        self.inner.create(path, mode)
    }
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        self.inner.open(path)
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
    let fs = Arc::new(Watched {
        inner: SimFs::new(),
        seen: Mutex::new(Vec::new()),
    });
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
        .filter(|s| s.2.ends_with(".wal.spare"))
        .collect();
    let deleted: Vec<_> = seen
        .iter()
        .filter(|s| s.1 == "remove" && s.2.ends_with(".wal"))
        .collect();
    assert!(spares.len() > 5, "spares made: {spares:?}");
    assert!(deleted.len() > 5, "segments deleted: {deleted:?}");
    for (thread, what, name) in spares.iter().chain(&deleted) {
        assert_eq!(thread, "walq-upkeep", "{what} {name} on thread {thread:?}");
    }
    q.close().unwrap();
}
