//! The public queue handle.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::commit::Committer;
use crate::dead::DeadLetter;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{Job, Receipt};
use crate::options::{Durability, EnqueueOptions, Options, Retry};
use crate::state::QueueState;
use crate::stats::{RecoveryReport, Stats};
use crate::vfs::{StdFs, Vfs};

/// Name of the lock file in a queue directory.
pub const LOCK_FILE: &str = "LOCK";

/// The result of [`Queue::enqueue_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The job id (the existing job's id for a duplicate).
    pub id: u64,
    /// True when the idempotency key was known and no job was added.
    pub duplicate: bool,
}

struct Inner {
    dir: PathBuf,
    opts: Options,
    state: Mutex<QueueState>,
    ready: Condvar,
    commit: Arc<Committer>,
    poisoned: AtomicBool,
    closed: AtomicBool,
    report: RecoveryReport,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    _lock: Box<dyn std::any::Any + Send + Sync>,
}

/// An embedded, crash-safe job queue stored in one directory.
///
/// `Queue` is cheap to clone (all clones share one open queue) and is
/// `Send + Sync`: share it across threads. The directory is locked while
/// any clone is alive.
///
/// ```
/// use std::time::Duration;
/// use walq::{Queue, Retry};
///
/// # fn main() -> walq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let q = Queue::open(dir.path())?;
/// q.enqueue(b"send welcome mail to ada@example.com")?;
///
/// if let Some(job) = q.dequeue()? {
///     match std::str::from_utf8(job.payload()) {
///         Ok(_) => q.ack(job.receipt())?,
///         Err(_) => q.fail(job.receipt(), "payload is not UTF-8")?,
///     }
/// }
/// assert_eq!(q.stats().acked_total, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Queue {
    /// Opens the queue in `dir` with default [`Options`], creating it if
    /// needed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Queue> {
        Queue::open_with(dir, Options::default())
    }

    /// Opens the queue in `dir` with `opts`, creating it if needed.
    ///
    /// Recovery runs here: every record is verified, a torn tail is cut,
    /// and leases of the previous process are released.
    pub fn open_with(dir: impl AsRef<Path>, opts: Options) -> Result<Queue> {
        Queue::open_on(Arc::new(StdFs), dir.as_ref(), opts)
    }

    /// Opens the queue on another file system (for fault-injection tests).
    #[doc(hidden)]
    pub fn open_on(vfs: Arc<dyn Vfs>, dir: &Path, opts: Options) -> Result<Queue> {
        opts.validate()?;
        vfs.create_dir_all(dir, opts.dir_mode)
            .map_err(|e| Error::io("creating queue directory", dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = vfs.lock(&lock_path, opts.file_mode).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::new(
                    ErrorKind::Locked,
                    "another Queue (in this process or another) has this directory open",
                )
                .with_path(&lock_path)
            } else {
                Error::io("locking queue directory", &lock_path, e)
            }
        })?;
        let commit = Arc::new(Committer::new(0));
        let now = opts.clock.now_ms();
        let (state, report) = crate::recovery::recover(vfs, dir, &opts, commit.clone(), now)?;
        let periodic = match opts.durability {
            Durability::Periodic(every) => Some(every),
            _ => None,
        };
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            opts,
            state: Mutex::new(state),
            ready: Condvar::new(),
            commit,
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            report,
            flusher: Mutex::new(None),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            _lock: lock,
        });
        if let Some(every) = periodic {
            let weak = Arc::downgrade(&inner);
            let stop = inner.stop.clone();
            let handle = std::thread::Builder::new()
                .name("walq-flush".into())
                .spawn(move || flush_loop(&weak, &stop, every))
                .map_err(|e| Error::io("starting flush thread", dir, e))?;
            *inner.flusher.lock() = Some(handle);
        }
        Ok(Queue { inner })
    }

    /// The queue directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// What recovery found when this queue was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    fn lock_for_write(&self) -> Result<MutexGuard<'_, QueueState>> {
        self.check_open()?;
        let guard = self.inner.state.lock();
        self.check_open()?;
        Ok(guard)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "the queue was closed"));
        }
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Poisoned,
                "an earlier write or fsync failed; reopen the queue to recover",
            )
            .with_path(&self.inner.dir));
        }
        Ok(())
    }

    /// Runs a state operation; any I/O failure poisons the queue.
    fn write_op<T>(&self, op: impl FnOnce(&mut QueueState, u64) -> Result<T>) -> Result<T> {
        let mut st = self.lock_for_write()?;
        let now = st.now(self.inner.opts.clock.now_ms());
        let out = op(&mut st, now);
        if let Err(e) = &out {
            if matches!(e.kind(), ErrorKind::Io) {
                self.poison(e);
            }
        }
        out
    }

    fn poison(&self, e: &Error) {
        self.inner.poisoned.store(true, Ordering::Release);
        self.inner.commit.fail(e.to_string());
        self.inner.ready.notify_all();
    }

    /// Waits until `lsn` is durable if the queue runs in `Durability::Sync`.
    fn settle(&self, lsn: u64) -> Result<()> {
        if self.inner.opts.durability != Durability::Sync {
            return Ok(());
        }
        self.make_durable(lsn)
    }

    fn make_durable(&self, lsn: u64) -> Result<()> {
        let inner = &self.inner;
        let result = inner.commit.wait(lsn, || {
            let (seg, upto) = {
                let st = inner.state.lock();
                (st.log.active().clone(), st.log.next_lsn - 1)
            };
            seg.file
                .sync_data()
                .map_err(|e| Error::io("fdatasync of segment", &seg.path, e))?;
            Ok(upto)
        });
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    /// Enqueues a job and returns its id.
    ///
    /// Under [`Durability::Sync`] the job is on stable storage when this
    /// returns.
    pub fn enqueue(&self, payload: &[u8]) -> Result<u64> {
        Ok(self.enqueue_with(payload, EnqueueOptions::default())?.id)
    }

    /// Enqueues a job with a delay, an idempotency key or its own
    /// `max_attempts`.
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use walq::EnqueueOptions;
    /// let q = walq::Queue::open(dir.path())?;
    /// let first = q.enqueue_with(b"charge order 7", EnqueueOptions::new().idempotency_key("order-7"))?;
    /// let again = q.enqueue_with(b"charge order 7", EnqueueOptions::new().idempotency_key("order-7"))?;
    /// assert_eq!(first.id, again.id);
    /// assert!(again.duplicate);
    /// # Ok(()) }
    /// ```
    pub fn enqueue_with(&self, payload: &[u8], opts: EnqueueOptions) -> Result<Enqueued> {
        let out = self.write_op(|st, now| {
            st.validate_enqueue(payload, &opts)?;
            st.enqueue(payload, &opts, now, 0)
        })?;
        if !out.duplicate {
            self.inner.ready.notify_one();
        }
        self.settle(out.lsn)?;
        Ok(Enqueued {
            id: out.id,
            duplicate: out.duplicate,
        })
    }

    /// Enqueues several jobs atomically (after a crash, all or none are
    /// there) with one fsync. Returns their ids in order.
    ///
    /// The batch must fit in one segment.
    pub fn enqueue_batch<I, P>(&self, payloads: I) -> Result<Vec<u64>>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let owned: Vec<P> = payloads.into_iter().collect();
        let slices: Vec<&[u8]> = owned.iter().map(AsRef::as_ref).collect();
        if slices.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, lsn) = self.write_op(|st, now| st.enqueue_batch(&slices, now))?;
        self.inner.ready.notify_all();
        self.settle(lsn)?;
        Ok(ids)
    }

    /// Leases the next ready job, or returns `None` at once if none is.
    ///
    /// The job stays invisible to other consumers for the visibility
    /// timeout. Its attempt is counted and written to the log now.
    pub fn dequeue(&self) -> Result<Option<Job>> {
        let vt = duration_ms(self.inner.opts.visibility_timeout);
        self.write_op(|st, now| st.dequeue(now, vt))
    }

    /// Leases the next ready job, waiting up to `wait` for one. Wakes on
    /// enqueue, on a retry or delay coming due and on an expiring lease;
    /// never spins.
    pub fn dequeue_timeout(&self, wait: Duration) -> Result<Option<Job>> {
        let vt = duration_ms(self.inner.opts.visibility_timeout);
        let deadline = Instant::now() + wait;
        let mut st = self.lock_for_write()?;
        loop {
            self.check_open()?;
            let clock = self.inner.opts.clock.now_ms();
            let now = st.now(clock);
            match st.dequeue(now, vt) {
                Ok(Some(job)) => return Ok(Some(job)),
                Ok(None) => {}
                Err(e) => {
                    if e.kind() == ErrorKind::Io {
                        self.poison(&e);
                    }
                    return Err(e);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let until_due = st.next_wakeup().map_or(left, |t| {
                Duration::from_millis(t.saturating_sub(now).max(1))
            });
            self.inner.ready.wait_for(&mut st, left.min(until_due));
        }
    }

    /// Leases up to `max` ready jobs.
    pub fn dequeue_batch(&self, max: usize) -> Result<Vec<Job>> {
        let vt = duration_ms(self.inner.opts.visibility_timeout);
        self.write_op(|st, now| {
            let mut jobs = Vec::with_capacity(max.min(1024));
            while jobs.len() < max {
                match st.dequeue(now, vt)? {
                    Some(job) => jobs.push(job),
                    None => break,
                }
            }
            Ok(jobs)
        })
    }

    /// Marks a job done: it is never delivered again.
    ///
    /// Fails with [`ErrorKind::LeaseLost`] if the receipt's lease expired.
    pub fn ack(&self, receipt: Receipt) -> Result<()> {
        let lsn = self.write_op(|st, now| st.ack(receipt, now))?;
        self.settle(lsn)
    }

    /// Gives a job back for a retry after `retry`, recording `error`. If the
    /// job has used its last attempt it goes to the dead letters instead.
    pub fn nack(&self, receipt: Receipt, retry: Retry, error: &str) -> Result<()> {
        let lsn = self.write_op(|st, now| st.nack(receipt, retry, error, now))?;
        self.inner.ready.notify_one();
        self.settle(lsn)
    }

    /// Sends a job straight to the dead letters with `error`.
    pub fn fail(&self, receipt: Receipt, error: &str) -> Result<()> {
        let lsn = self.write_op(|st, now| st.fail(receipt, error, now))?;
        self.settle(lsn)
    }

    /// Extends a lease to `by` from now (a heartbeat for long jobs).
    pub fn extend(&self, receipt: Receipt, by: Duration) -> Result<()> {
        self.write_op(|st, now| st.extend(receipt, duration_ms(by), now))
    }

    /// The ids of all dead letters, oldest id first.
    pub fn dead_letter_ids(&self) -> Vec<u64> {
        self.inner
            .state
            .lock()
            .dead
            .entries()
            .keys()
            .copied()
            .collect()
    }

    /// All dead letters with their payloads and last errors.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let st = self.inner.state.lock();
        let ids: Vec<u64> = st.dead.entries().keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| st.dead_letter_get(id).transpose())
            .collect()
    }

    /// One dead letter.
    pub fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>> {
        self.inner.state.lock().dead_letter_get(id)
    }

    /// Puts a dead letter back in the queue, ready now, attempts reset.
    pub fn redrive(&self, id: u64) -> Result<()> {
        let done = self.write_op(|st, now| st.redrive(&[id], now))?;
        if done.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no dead letter with id {id}"),
            ));
        }
        self.inner.ready.notify_all();
        Ok(())
    }

    /// Puts every dead letter back in the queue; returns how many.
    pub fn redrive_all(&self) -> Result<usize> {
        let ids = self.dead_letter_ids();
        let done = self.write_op(|st, now| st.redrive(&ids, now))?;
        self.inner.ready.notify_all();
        Ok(done.len())
    }

    /// Deletes a dead letter for good.
    pub fn purge(&self, id: u64) -> Result<()> {
        let done = self.write_op(|st, now| st.purge(&[id], now))?;
        if done.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no dead letter with id {id}"),
            ));
        }
        Ok(())
    }

    /// Deletes every dead letter; returns how many.
    pub fn purge_all(&self) -> Result<usize> {
        let ids = self.dead_letter_ids();
        Ok(self.write_op(|st, now| st.purge(&ids, now))?.len())
    }

    /// Counts and sizes.
    pub fn stats(&self) -> Stats {
        let mut st = self.inner.state.lock();
        let now = st.now(self.inner.opts.clock.now_ms());
        st.stats(now)
    }

    /// Makes every write so far durable (fdatasync), whatever the
    /// durability mode.
    pub fn sync(&self) -> Result<()> {
        self.check_open()?;
        let lsn = self.inner.state.lock().log.next_lsn - 1;
        self.make_durable(lsn)?;
        let mut st = self.inner.state.lock();
        st.dead.sync().inspect_err(|e| self.poison(e))
    }

    /// Syncs and closes the queue; every clone then fails with
    /// [`ErrorKind::Closed`]. The directory lock is released when the last
    /// clone is dropped.
    pub fn close(&self) -> Result<()> {
        let result = if self.inner.poisoned.load(Ordering::Acquire) {
            Ok(())
        } else {
            self.sync()
        };
        self.inner.closed.store(true, Ordering::Release);
        self.inner.ready.notify_all();
        result
    }

    /// Asserts internal invariants (for tests; O(jobs)).
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        self.inner.state.lock().check_invariants();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(handle) = self.flusher.get_mut().take() {
            // The flush thread may itself drop the last handle.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

/// Background fdatasync for `Durability::Periodic`. Holds the queue only
/// while syncing, so dropping the last handle releases the directory at
/// once.
fn flush_loop(weak: &Weak<Inner>, stop: &(Mutex<bool>, Condvar), every: Duration) {
    loop {
        {
            let mut stopped = stop.0.lock();
            if !*stopped {
                stop.1.wait_for(&mut stopped, every);
            }
            if *stopped {
                return;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        let q = Queue { inner };
        if q.sync().is_err() {
            return;
        }
    }
}

/// Leases sized per call, for worker pools whose jobs need more (or less)
/// time than the queue-wide visibility timeout.
impl Queue {
    /// Leases the next ready job for `visibility` (instead of the queue's
    /// visibility timeout), or returns `None` at once if none is ready.
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = walq::Queue::open(dir.path())?;
    /// q.enqueue(b"transcode video 9")?;
    /// let job = q.dequeue_for(Duration::from_secs(600))?.expect("ready");
    /// q.ack(job.receipt())?;
    /// # Ok(()) }
    /// ```
    pub fn dequeue_for(&self, visibility: Duration) -> Result<Option<Job>> {
        let vt = lease_ms(visibility)?;
        self.write_op(|st, now| st.dequeue(now, vt))
    }

    /// Leases the next ready job for `visibility`, waiting up to `wait` for
    /// one. Wakes on enqueue, on a retry or delay coming due and on an
    /// expiring lease; never spins.
    pub fn dequeue_wait(&self, visibility: Duration, wait: Duration) -> Result<Option<Job>> {
        let vt = lease_ms(visibility)?;
        let deadline = Instant::now() + wait;
        let mut st = self.lock_for_write()?;
        loop {
            self.check_open()?;
            let now = st.now(self.inner.opts.clock.now_ms());
            match st.dequeue(now, vt) {
                Ok(Some(job)) => return Ok(Some(job)),
                Ok(None) => {}
                Err(e) => {
                    if e.kind() == ErrorKind::Io {
                        self.poison(&e);
                    }
                    return Err(e);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let until_due = st.next_wakeup().map_or(left, |t| {
                Duration::from_millis(t.saturating_sub(now).max(1))
            });
            self.inner.ready.wait_for(&mut st, left.min(until_due));
        }
    }
}

/// A per-call visibility timeout in milliseconds; at least 1 ms.
fn lease_ms(visibility: Duration) -> Result<u64> {
    let vt = duration_ms(visibility);
    if vt == 0 {
        return Err(Error::new(
            ErrorKind::InvalidOptions,
            format!("a lease's visibility timeout must be at least 1 ms, got {visibility:?}"),
        ));
    }
    Ok(vt)
}

/// Settling many leases at once, for worker pools that pipeline their
/// acks: one lock, one group commit for the lot.
impl Queue {
    /// Marks several jobs done: appends every ack under one lock, then
    /// (under [`Durability::Sync`]) waits for one group commit that covers
    /// them all.
    ///
    /// The outer `Err` means nothing in the batch is acknowledged (the
    /// queue is closed or poisoned, or the write or fdatasync failed);
    /// otherwise one result per receipt, in order: `Ok` once that ack is
    /// durable, or the receipt's own error ([`ErrorKind::LeaseLost`] when
    /// its lease expired or was replaced), which changes nothing.
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = walq::Queue::open(dir.path())?;
    /// q.enqueue_batch([b"a", b"b"])?;
    /// let receipts: Vec<_> = q.dequeue_batch(2)?.iter().map(|j| j.receipt()).collect();
    /// let results = q.ack_batch(&receipts)?;
    /// assert!(results.iter().all(|r| r.is_ok()));
    /// assert_eq!(q.stats().acked_total, 2);
    /// # Ok(()) }
    /// ```
    pub fn ack_batch(&self, receipts: &[Receipt]) -> Result<Vec<Result<()>>> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let (results, lsn) = self.write_op(|st, now| {
            let mut results = Vec::with_capacity(receipts.len());
            let mut last = None;
            for receipt in receipts {
                match st.ack(*receipt, now) {
                    Ok(lsn) => {
                        last = Some(lsn);
                        results.push(Ok(()));
                    }
                    // A failed write fails the batch (and poisons the queue).
                    Err(e) if e.kind() == ErrorKind::Io => return Err(e),
                    Err(e) => results.push(Err(e)),
                }
            }
            Ok((results, last))
        })?;
        if let Some(lsn) = lsn {
            self.settle(lsn)?;
        }
        Ok(results)
    }
}
