//! The store: a directory of named queues (docs/architecture.md, "Named
//! queues"). A child of `queue`, whose handle it hands out.

use std::path::Path;
use std::sync::Arc;

use super::{Owner, Queue};
use crate::error::Result;
use crate::options::Options;
use crate::stats::{RecoveryReport, StoreStats};
#[cfg(feature = "testing")]
use crate::vfs::Vfs;

/// A directory of named queues sharing one log, one group commit, one
/// dead-letter file and one lock (docs/architecture.md, "Named queues").
///
/// `Store` is cheap to clone and `Send + Sync`; the directory is locked
/// while any store or queue handle is alive.
///
/// ```
/// # fn main() -> walq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = walq::Store::open(dir.path())?;
/// let emails = store.queue("emails")?;
/// let reports = store.queue("reports")?;
/// emails.enqueue(b"welcome ada")?;
/// reports.enqueue(b"monthly totals")?;
/// let job = reports.dequeue()?.expect("a report");
/// assert_eq!(job.payload(), b"monthly totals");
/// reports.ack(job.receipt())?;
/// assert_eq!(emails.stats().ready, 1);
/// assert_eq!(store.stats().total.ready, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    /// The default queue's handle: the store's own operations go through
    /// it.
    pub(super) default: Queue,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.default.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store in `dir` with default [`Options`], creating it if
    /// needed. A directory written by a single-queue version is a store
    /// whose jobs are all the default queue's.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, Options::default())
    }

    /// Opens the store in `dir` with `opts` (shared by all its queues).
    pub fn open_with(dir: impl AsRef<Path>, opts: Options) -> Result<Store> {
        Ok(Store {
            default: Queue::open_with(dir, opts)?,
        })
    }

    /// Opens the store on another file system (for fault-injection tests;
    /// only with the `testing` feature).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn open_on(vfs: Arc<dyn Vfs>, dir: &Path, opts: Options) -> Result<Store> {
        Ok(Store {
            default: Queue::open_on(vfs, dir, opts)?,
        })
    }

    /// The queue named `name` (1 to 64 bytes of `A-Z a-z 0-9 _ . -`;
    /// `"default"` is the default queue). A new name gets a queue id; its
    /// definition is written to the log with its first job, and from then
    /// on the name keeps that id for good.
    ///
    /// At most [`crate::MAX_QUEUES`] named queues per store are in use: a
    /// queue is in use once a job was enqueued to it (even if all its
    /// jobs are done: its idempotency keys are scoped by its id), while it
    /// has options of its own ([`Store::queue_with`]), or while a handle
    /// of it is alive. A name only looked up, whose handles are all
    /// dropped, is not in use: it does not count towards the limit, is
    /// not listed by [`Store::stats`], and its id may go to another name
    /// (looking it up again gives it an id afresh). Past the limit a new
    /// name is refused with [`crate::ErrorKind::InvalidOptions`].
    pub fn queue(&self, name: &str) -> Result<Queue> {
        let (q, claim) = self.default.lock_for_write()?.queue_handle(name)?;
        let store = self.default._owner.as_ref().and_then(Owner::store);
        Ok(Queue {
            inner: self.default.inner.clone(),
            queue: q,
            _owner: match claim {
                Some(_claim) => Some(Arc::new(Owner::Claimed { store, _claim })),
                None => store,
            },
        })
    }

    /// The queue named `name` with its own options (see
    /// [`crate::QueueOptions`]; they replace any given before for the
    /// name, and hold for every handle of the queue).
    pub fn queue_with(&self, name: &str, opts: crate::QueueOptions) -> Result<Queue> {
        opts.validate()?;
        let queue = self.queue(name)?;
        self.default
            .lock_for_write()?
            .set_queue_options(queue.queue, opts);
        Ok(queue)
    }

    /// The default queue (the one `Queue::open` returns).
    pub fn default_queue(&self) -> Queue {
        self.default.clone()
    }

    /// The store's counts (every queue summed) and each queue's: every
    /// queue in use (see [`Store::queue`]), not the names only looked up
    /// whose handles are gone.
    pub fn stats(&self) -> StoreStats {
        let mut st = self.default.inner.state.lock();
        let now = st.now(self.default.clock());
        let mut total = st.stats(now);
        // The completion file's lock after the queue's (the lock order).
        total.disk_bytes += self.default.inner.done.lock().disk_bytes();
        let queues = st.queue_counts(now);
        StoreStats { total, queues }
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        self.default.path()
    }

    /// What recovery found when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.default.recovery_report()
    }

    /// Makes everything written so far durable (see [`Queue::sync`]).
    pub fn sync(&self) -> Result<()> {
        self.default.sync()
    }

    /// Closes the store: every queue handle fails with `Closed` from now
    /// on (see [`Queue::close`]).
    pub fn close(&self) -> Result<()> {
        self.default.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EnqueueOptions, Retry};
    use std::time::Duration;

    /// A retry and an ack that frees a group's next job name the job's
    /// queue, so the queue wakes that queue's consumers only; two such
    /// changes in different queues name "any queue".
    #[test]
    fn a_retry_or_a_freed_group_job_names_its_queue_for_the_wake() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (store.queue("a").unwrap(), store.queue("b").unwrap());
        for payload in [&b"head"[..], b"next", b"last"] {
            b.enqueue_with(payload, EnqueueOptions::new().group("g"))
                .unwrap();
        }
        a.enqueue(b"retried").unwrap();
        let (job_a, head) = (a.dequeue().unwrap().unwrap(), b.dequeue().unwrap().unwrap());
        let retry_now = Retry::After(Duration::ZERO);
        {
            let mut st = store.default.inner.state.lock();
            let now = st.now(store.default.clock());
            st.log.begin_op();
            st.nack(job_a.receipt(), retry_now, "again", now).unwrap();
            assert_eq!(st.take_ready_in(), Some((a.queue, false)));
            st.ack(head.receipt(), now).unwrap();
            assert_eq!(st.take_ready_in(), Some((b.queue, false)));
            assert_eq!(st.take_ready_in(), None);
        }
        let (job_a, next) = (a.dequeue().unwrap().unwrap(), b.dequeue().unwrap().unwrap());
        let mut st = store.default.inner.state.lock();
        let now = st.now(store.default.clock());
        st.log.begin_op();
        st.nack(job_a.receipt(), retry_now, "again", now).unwrap();
        st.ack(next.receipt(), now).unwrap();
        assert_eq!(st.take_ready_in(), Some((crate::named::ANY_QUEUE, true)));
    }
}
