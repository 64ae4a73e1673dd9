//! The heartbeat never stands between a worker and its finished job: an
//! extension that waits on its backend (a remote one, over a slow network)
//! holds no lock the worker needs to settle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use walq::worker::{JobContext, JobStatus, Outcome, WorkerPool};
use walq::Queue;

mod hooked_backend;
use hooked_backend::{Hooked, Hooks};

/// Opens when set; waits for that.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.changed.wait(open).unwrap();
        }
    }
}

/// Opens the gate when dropped, so a failing assertion does not leave the
/// heartbeat (and the pool's shutdown) waiting forever.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// An `extend` that waits at a gate, as an extension of a remote backend
/// waits on a slow network.
struct SlowExtend {
    extending: AtomicBool,
    gate: Arc<Gate>,
}

impl Hooks for SlowExtend {
    fn before_extend(&self) {
        self.extending.store(true, Ordering::SeqCst);
        self.gate.wait();
    }
}

#[test]
fn a_worker_settles_its_finished_job_while_an_extension_of_its_lease_waits() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let id = q.enqueue(b"slow network").unwrap();
    let gate = Arc::new(Gate::default());
    let backend = Arc::new(Hooked {
        q: q.clone(),
        hooks: SlowExtend {
            extending: AtomicBool::new(false),
            gate: gate.clone(),
        },
    });
    let pool = {
        let backend = backend.clone();
        WorkerPool::builder(backend.clone())
            .workers(1)
            .heartbeat(Duration::from_millis(5))
            .poll_interval(Duration::from_millis(5))
            .start(move |_: &JobContext, _: &[u8]| {
                // Finish only once the heartbeat is inside an extension of
                // this job's lease.
                while !backend.hooks.extending.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Outcome::done()
            })
            .unwrap()
    };
    // Dropped before the pool, whose shutdown needs the heartbeat back.
    let _open = OpenOnDrop(gate.clone());
    // The extension still waits at the gate; the job must settle anyway
    // (before, the heartbeat held the worker's slot through it).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(q.status(id), Ok(JobStatus::Done { .. })) {
        assert!(
            Instant::now() < deadline,
            "the finished job did not settle while its extension waited: {:?}",
            pool.stats()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    gate.open();
    let s = pool.shutdown(Duration::from_secs(10)).stats;
    assert_eq!((s.leased, s.done), (1, 1), "{s:?}");
}
