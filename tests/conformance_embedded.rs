//! The conformance suite (`tests/conformance/`) on the embedded `Queue`.

mod conformance;

use std::sync::Mutex;

use conformance::{Harness, Setup};
use walq::{Backoff, DeadLetter, Options, Queue};

/// Fresh queues in temporary directories, kept until the test ends.
#[derive(Default)]
struct Embedded(Mutex<Vec<tempfile::TempDir>>);

impl Harness for Embedded {
    type B = Queue;

    fn fresh(&self, setup: Setup) -> Queue {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default()
            .max_attempts(setup.max_attempts)
            .visibility_timeout(setup.visibility)
            .backoff(Backoff {
                initial: setup.backoff,
                multiplier: 1.0,
                max: setup.backoff,
                jitter: 0.0,
            });
        let q = Queue::open_with(dir.path(), opts).unwrap();
        self.0.lock().unwrap().push(dir);
        q
    }

    fn dead_letters(&self, q: &Queue) -> Vec<DeadLetter> {
        q.dead_letters().unwrap()
    }

    fn redrive(&self, q: &Queue, id: u64) {
        q.redrive(id).unwrap()
    }

    fn purge(&self, q: &Queue, id: u64) {
        q.purge(id).unwrap()
    }
}

conformance_tests!(Embedded::default());
