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
