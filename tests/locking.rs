//! Guarantee 11: one process at a time (file lock); inside one process the
//! queue is `Send + Sync` and shared across threads.

use walq::{ErrorKind, Queue};

#[test]
fn a_second_open_in_this_process_is_refused_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let err = Queue::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked);
    assert!(err.to_string().contains("LOCK"), "{err}");
    let clone = q.clone();
    drop(q);
    // A clone keeps the directory open.
    assert_eq!(
        Queue::open(dir.path()).unwrap_err().kind(),
        ErrorKind::Locked
    );
    drop(clone);
    Queue::open(dir.path()).unwrap();
}

#[test]
fn another_process_is_refused() {
    if let Ok(dir) = std::env::var("WALQ_LOCK_CHILD") {
        // Child: try to open the directory the parent holds.
        match Queue::open(&dir) {
            Err(e) if e.kind() == ErrorKind::Locked => std::process::exit(0),
            other => {
                eprintln!("child open: {other:?}");
                std::process::exit(1)
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let _q = Queue::open(dir.path()).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "another_process_is_refused", "--nocapture"])
        .env("WALQ_LOCK_CHILD", dir.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the child process could open a locked queue"
    );
}

#[test]
fn the_queue_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Queue>();
    fn assert_send<T: Send>() {}
    assert_send::<walq::Job>();
}

#[test]
fn a_closed_queue_refuses_operations() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    q.enqueue(b"x").unwrap();
    let other = q.clone();
    q.close().unwrap();
    assert_eq!(other.enqueue(b"y").unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(other.dequeue().unwrap_err().kind(), ErrorKind::Closed);
    drop((q, other));
    let q = Queue::open(dir.path()).unwrap();
    assert_eq!(q.dequeue().unwrap().unwrap().payload(), b"x");
}

#[cfg(unix)]
#[test]
fn files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("q");
    let q = Queue::open(&dir).unwrap();
    q.enqueue(b"personal data").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "x").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

/// Dropping the last handle releases the directory before the drop
/// returns, even while one of the queue's own threads (here the
/// `Durability::Periodic` flush thread, stuck in an fsync that the
/// simulated file system holds) has the queue in hand. Before, that thread
/// then held the last reference, and a reopen right after the drop was
/// refused as locked.
#[test]
fn the_directory_is_released_when_the_last_handle_drop_returns() {
    use std::path::Path;
    use std::sync::{mpsc, Arc};
    use std::time::Duration;
    use walq::vfs::SimFs;
    use walq::{Durability, Options};

    let fs = SimFs::new();
    let dir = Path::new("/q");
    let opts = || Options::default().durability(Durability::Periodic(Duration::from_millis(1)));
    let q = Queue::open_on(Arc::new(fs.clone()), dir, opts()).expect("open");
    fs.pause_syncs(true);
    q.enqueue(b"left for the flush thread to sync")
        .expect("enqueue");
    fs.wait_paused_syncs(1);
    let (about_to_drop, dropping) = mpsc::channel();
    let (tx, reopened) = mpsc::channel();
    let dropper = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            about_to_drop.send(()).expect("send");
            drop(q);
            let again = Queue::open_on(Arc::new(fs), dir, opts());
            tx.send(again.map(|q| q.stats().ready)).expect("send");
        })
    };
    dropping.recv().expect("recv");
    // The drop waits for the held fsync, so nothing can arrive yet; if
    // something does (the drop returned at once), it must be a good open.
    if let Ok(early) = reopened.recv_timeout(Duration::from_millis(200)) {
        fs.pause_syncs(false);
        panic!("the drop returned while its flush thread was syncing: {early:?}");
    }
    fs.pause_syncs(false);
    let ready = reopened
        .recv()
        .expect("recv")
        .expect("reopen after the drop");
    assert_eq!(ready, 1);
    dropper.join().expect("dropper");
}
