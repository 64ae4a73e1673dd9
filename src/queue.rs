//! The public queue handle.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::checkpointer::{Checkpointer, Handoff};
use crate::clock::{ms as duration_ms, Now};
use crate::commit::{Committer, Waiter};
use crate::dead::DeadLetter;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{Job, Receipt};
use crate::options::{check_delay, Durability, EnqueueOptions, Options, Retry};
use crate::state::checkpoint::{self, Schedule};
use crate::state::QueueState;
use crate::stats::{RecoveryReport, Stats};
use crate::vfs::{StdFs, Vfs};
use crate::wakeups::Wakeups;

#[path = "store.rs"]
mod store;
pub use store::Store;

/// Name of the lock file in a queue directory.
pub const LOCK_FILE: &str = "LOCK";

/// Dead letters handled per lock hold when listing, redriving or purging
/// them all.
const DEAD_PAGE: usize = 256;

/// The result of [`Queue::enqueue_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The job id (the existing job's id for a duplicate).
    pub id: u64,
    /// True when the idempotency key was known and no job was added.
    pub duplicate: bool,
}

/// A lock of a file beside the queue's own, held until the queue is
/// closed or its holder lets go (see `Queue::release_with_directory`).
pub(crate) type SideLock = Mutex<Option<Box<dyn std::any::Any + Send + Sync>>>;

struct Inner {
    dir: PathBuf,
    opts: Options,
    state: Mutex<QueueState>,
    done: crate::done::Completions,
    /// Blocked consumers, threads and async tasks, by queue.
    wakeups: Wakeups,
    commit: Arc<Committer>,
    /// The log's file work done outside the queue lock (see `upkeep`).
    upkeep: Arc<crate::upkeep::Upkeep>,
    /// Rings the `walq-upkeep` thread, which runs `upkeep`.
    upkeeper: Arc<crate::upkeep::Mailbox>,
    upkeep_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Rings the `walq-prefault` thread (see `Upkeep::prefault`).
    prefaulter: Arc<crate::upkeep::Mailbox>,
    prefault_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    poisoned: AtomicBool,
    /// What poisoned the queue, for the `Poisoned` errors that follow.
    poison_cause: Mutex<Option<String>>,
    closed: AtomicBool,
    report: RecoveryReport,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// The directory lock, released by `close` or the last drop.
    lock: Mutex<Option<Box<dyn std::any::Any + Send + Sync>>>,
    /// Locks of files beside the queue's own that go with the directory:
    /// `close` releases them too (a `Scheduler`'s `schedules.lock`).
    side_locks: Mutex<Vec<std::sync::Weak<SideLock>>>,
    /// When the next checkpoint of the index is written.
    checkpoints: Schedule,
    /// The thread that writes them.
    checkpointer: Checkpointer,
    /// The store id as 32 hex digits (file `STORE_ID`, `store_id`).
    provider_scope: Arc<str>,
    /// The store id, and whether a full disk kept it from being written
    /// at open (`close` tries again).
    store_id: Mutex<crate::store_id::Loaded>,
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
///
/// A `Queue` is one queue of a [`crate::Store`]: `Queue::open(dir)` is the
/// store's default queue, `store.queue(name)` a named one. Enqueues and
/// dequeues are the queue's own; a receipt, a job id and the dead letters
/// are the store's (job ids are unique in the store).
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
    /// The queue id in the store (0: the default queue).
    queue: u16,
    /// Shared by the user's handles, never by the queue's own threads (the
    /// flush and checkpoint threads hold `None`): the last one's drop
    /// releases the directory then and there, even while such a thread
    /// still holds `inner` for a moment.
    _owner: Option<Arc<Owner>>,
}

/// See `Queue::_owner`.
enum Owner {
    /// The store's: its drop is the drop of the last user handle.
    Store(Arc<Inner>),
    /// A named queue's handles whose QueueDef was not written yet when
    /// `Store::queue` made them: the store's owner, and the claim that
    /// keeps the queue's definition (its name for its id) while they live
    /// (see `named::Claim`). Other handles hold the store's owner itself,
    /// so a clone of theirs costs what it did.
    Claimed {
        store: Option<Arc<Owner>>,
        /// Held, never read.
        _claim: Arc<crate::named::Claim>,
    },
}

impl Owner {
    /// The store's owner behind `owner`.
    fn store(owner: &Arc<Owner>) -> Option<Arc<Owner>> {
        match &**owner {
            Owner::Store(_) => Some(owner.clone()),
            Owner::Claimed { store, .. } => store.clone(),
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Owner::Store(inner) = self {
            inner.shut_down();
        }
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("dir", &self.inner.dir)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
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
        Queue::open_vfs(Arc::new(StdFs), dir.as_ref(), opts)
    }

    /// Opens the queue on another file system (for fault-injection tests;
    /// only with the `testing` feature).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn open_on(vfs: Arc<dyn Vfs>, dir: &Path, opts: Options) -> Result<Queue> {
        Queue::open_vfs(vfs, dir, opts)
    }

    fn open_vfs(vfs: Arc<dyn Vfs>, dir: &Path, opts: Options) -> Result<Queue> {
        opts.validate()?;
        vfs.create_dir_all(dir, opts.dir_mode).map_err(|e| {
            // "File exists" said nothing of what was wrong.
            let e = match e.kind() {
                std::io::ErrorKind::AlreadyExists => std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "the path exists and is not a directory (a file, or a symbolic link to nothing)",
                ),
                _ => e,
            };
            Error::io("creating queue directory", dir, e)
        })?;
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
        let now = opts.clock.now_ms();
        let (mut state, mut report) = crate::recovery::recover(vfs.clone(), dir, &opts, now)?;
        let floor = crate::id_floor::load(
            vfs.clone(),
            dir,
            opts.file_mode,
            opts.recovery,
            state.next_job_id(),
        )?;
        report.bytes_skipped = report.bytes_skipped.saturating_add(floor.skipped);
        state.install_id_floor(floor.floor, floor.start);
        // Made now where it is missing (a new store, or an older build's),
        // so the first enqueue does not pay for a new file; best effort:
        // on a full disk (or a read-only one) the first enqueue makes it,
        // or is refused with the reason.
        let _ = state.prepare_id_floor();
        // The log's committer: the one path that syncs the log.
        let commit = state.log.commit.clone();
        let upkeep = state.log.upkeep().clone();
        let done = Queue::open_done(vfs.clone(), dir, &opts, &state, now, &mut report)?;
        let store_id = crate::store_id::load_or_create(&*vfs, dir, opts.file_mode, opts.recovery)?;
        if store_id.replaced {
            let len = crate::format::store_id::STORE_ID_LEN as u64;
            report.bytes_skipped = report.bytes_skipped.saturating_add(len);
        }
        let paused = crate::pause::load(&*vfs, dir, opts.recovery)?;
        report.bytes_skipped = report.bytes_skipped.saturating_add(paused.skipped);
        state.install_paused(&paused.names).map_err(|e| {
            // Only a file naming more queues than the store can hold.
            let path = dir.join(crate::pause::PAUSED_FILE);
            Error::corrupt(&path, 0, format!("cannot pause its queues: {e}"))
        })?;
        let checkpoints = Schedule::new(opts.checkpoint_every, &state);
        let periodic = match opts.durability {
            Durability::Periodic(every) => Some(every),
            _ => None,
        };
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            opts,
            state: Mutex::new(state),
            done: crate::done::Completions::new(done),
            wakeups: Wakeups::default(),
            commit,
            upkeep,
            upkeeper: Arc::default(),
            upkeep_thread: Mutex::new(None),
            prefaulter: Arc::default(),
            prefault_thread: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(None),
            closed: AtomicBool::new(false),
            report,
            flusher: Mutex::new(None),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            lock: Mutex::new(Some(lock)),
            side_locks: Mutex::new(Vec::new()),
            checkpoints,
            checkpointer: Checkpointer::default(),
            provider_scope: Arc::from(crate::store_id::hex(&store_id.id)),
            store_id: Mutex::new(store_id),
        });
        // Made first: if a thread cannot be started, its drop stops the
        // ones that were, and releases the directory.
        let owner = Arc::new(Owner::Store(inner.clone()));
        Queue::start_threads(&inner, &vfs, periodic)?;
        // The spares of the active segment are prepared at once.
        inner.upkeeper.ring();
        Ok(Queue {
            inner,
            queue: 0,
            _owner: Some(owner),
        })
    }

    /// Starts the queue's threads: `walq-flush` (under
    /// `Durability::Periodic`), `walq-upkeep`, `walq-prefault`, and
    /// `walq-checkpoint` (unless periodic checkpoints are off).
    fn start_threads(
        inner: &Arc<Inner>,
        vfs: &Arc<dyn Vfs>,
        periodic: Option<Duration>,
    ) -> Result<()> {
        let dir = &inner.dir;
        if let Some(every) = periodic {
            let weak = Arc::downgrade(inner);
            let stop = inner.stop.clone();
            let handle = std::thread::Builder::new()
                .name("walq-flush".into())
                .spawn(move || flush_loop(&weak, &stop, every))
                .map_err(|e| Error::io("starting flush thread", dir, e))?;
            *inner.flusher.lock() = Some(handle);
        }
        let (weak, mailbox) = (Arc::downgrade(inner), inner.upkeeper.clone());
        let handle = std::thread::Builder::new()
            .name("walq-upkeep".into())
            .spawn(move || upkeep_loop(&weak, &mailbox))
            .map_err(|e| Error::io("starting upkeep thread", dir, e))?;
        *inner.upkeep_thread.lock() = Some(handle);
        let (upkeep, mailbox) = (inner.upkeep.clone(), inner.prefaulter.clone());
        let handle = std::thread::Builder::new()
            .name("walq-prefault".into())
            .spawn(move || {
                while mailbox.next() {
                    upkeep.run_prefault();
                    mailbox.done();
                }
            })
            .map_err(|e| Error::io("starting prefault thread", dir, e))?;
        *inner.prefault_thread.lock() = Some(handle);
        if inner.opts.checkpoint_every != 0 {
            let (weak, to) = (Arc::downgrade(inner), dir.clone());
            let (vfs, mode) = (vfs.clone(), inner.opts.file_mode);
            let write = move |h| write_checkpoints(&weak, &to, &*vfs, mode, h);
            inner
                .checkpointer
                .start(write)
                .map_err(|e| Error::io("starting checkpoint thread", dir, e))?;
        }
        Ok(())
    }

    /// Checks a payload and options against this queue's limits, as an
    /// enqueue would, writing nothing (for a schedule's payload, checked
    /// when it is registered rather than at each tick).
    pub(crate) fn check_enqueue(&self, payload: &[u8], opts: &EnqueueOptions) -> Result<()> {
        self.inner.state.lock().validate_enqueue(payload, opts)
    }

    /// This queue's id in its store (for a pool over several queues).
    pub(crate) fn queue_id(&self) -> u16 {
        self.queue
    }

    /// The name of this queue in its store (`"default"` for the queue
    /// `Queue::open` returns).
    pub fn name(&self) -> String {
        self.inner.state.lock().queue_name(self.queue)
    }

    /// The store this queue belongs to.
    pub fn store(&self) -> Store {
        Store {
            default: Queue {
                inner: self.inner.clone(),
                queue: 0,
                _owner: self._owner.as_ref().and_then(Owner::store),
            },
        }
    }

    /// The queue directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The store id as 32 hex digits: the scope of the keys jobs hand to
    /// outside services (`JobContext::provider_key`).
    pub(crate) fn provider_scope(&self) -> &Arc<str> {
        &self.inner.provider_scope
    }

    /// The key to hand an outside service (a payment or mail provider) so
    /// that it performs job `id`'s side effect at most once, whatever the
    /// attempt: `walq-<store>-<id>`, the same key a worker pool's handler
    /// gets from `JobContext::provider_key` (see there, and
    /// `docs/idempotency.md`), for consumers that dequeue by hand. The
    /// store part (32 hex digits, file `STORE_ID`) tells this store from
    /// every other, so two stores never hand out the same key.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = walq::Queue::open(dir.path())?;
    /// q.enqueue(b"charge order 42")?;
    /// let job = q.dequeue()?.unwrap();
    /// let key = q.provider_key(job.id());
    /// assert!(key.starts_with("walq-") && key.ends_with("-1"));
    /// # Ok::<(), walq::Error>(())
    /// ```
    pub fn provider_key(&self, id: u64) -> String {
        crate::worker::provider_key(Some(&self.inner.provider_scope), id)
    }

    /// What recovery found when this queue was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    fn lock_for_write(&self) -> Result<MutexGuard<'_, QueueState>> {
        // Checked under the lock only: a close or a poisoning happens under
        // it too (a check before it would cost a second pair of loads on
        // every operation and decide nothing).
        let guard = self.inner.state.lock();
        self.check_open()?;
        Ok(guard)
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "the queue was closed"));
        }
        if self.inner.poisoned.load(Ordering::Acquire) {
            let cause = self.inner.poison_cause.lock().clone().unwrap_or_default();
            return Err(Error::new(
                ErrorKind::Poisoned,
                format!("an earlier operation failed ({cause}); reopen the queue to recover"),
            )
            .with_path(&self.inner.dir));
        }
        Ok(())
    }

    fn clock(&self) -> Now {
        let (wall, mono) = self.inner.opts.clock.both_ms();
        Now { wall, mono }
    }

    /// The wall clock alone, for operations that set no lease deadline
    /// (enqueues): `QueueState::now` keeps the last monotonic reading.
    fn wall_clock(&self) -> Now {
        Now {
            wall: self.inner.opts.clock.now_ms(),
            mono: 0,
        }
    }

    /// Runs a state operation that needs no durability wait; any I/O
    /// failure poisons the queue.
    fn write_op<T>(&self, op: impl FnOnce(&mut QueueState, Now) -> Result<T>) -> Result<T> {
        self.write_op_at(op, |_| 0)
    }

    /// Runs an enqueue: no maintenance after it (an enqueue frees
    /// nothing), so producers never pay for reclaim.
    fn enqueue_op<T>(&self, op: impl FnOnce(&mut QueueState, Now) -> Result<T>) -> Result<T> {
        let out = {
            let mut st = self.lock_for_write()?;
            let now = st.now(self.wall_clock());
            st.log.begin_op();
            let out = op(&mut st, now).inspect_err(|e| {
                if e.kind() == ErrorKind::Io && !st.log.take_harmless_failure() {
                    self.poison(e);
                }
            });
            if out.is_ok() {
                self.checkpoint_if_due(st);
            }
            out
        };
        self.upkeep();
        out
    }

    /// Hands the log's file work queued under the lock (spares to prepare,
    /// retired segments to delete) to the `walq-upkeep` thread, now that
    /// the lock is released: the caller does not wait for it.
    #[inline]
    fn upkeep(&self) {
        // Two plain loads on the hot path: nearly every call has no work.
        if self.inner.upkeep.has_work() {
            self.inner.upkeeper.ring();
        }
        if self.inner.upkeep.has_prefault() {
            self.inner.prefaulter.ring();
        }
    }

    /// Waits until the `walq-upkeep` and `walq-prefault` threads have done
    /// the file work queued by the operations that returned so far (spares
    /// made, finished segments deleted, pages prefaulted): for tests that
    /// look at the directory.
    #[doc(hidden)]
    pub fn wait_upkeep(&self) {
        self.inner.upkeeper.wait_idle();
        self.inner.prefaulter.wait_idle();
        self.inner.checkpoints.wait_idle();
    }

    /// The `walq-upkeep` thread's work: runs the log's upkeep. A failed
    /// log sync poisons the queue; once a segment is deleted, the reserve
    /// a drain used is made again.
    fn run_upkeep(&self) {
        match self.inner.upkeep.run(&self.inner.commit) {
            Ok(false) => {}
            Ok(true) => self.inner.state.lock().log.fill_reserve(),
            Err(e) => self.poison_unlocked(&e),
        }
        if self.inner.upkeep.dead_compaction_wanted() {
            if let Err(e) = QueueState::compact_dead_letters(&self.inner.state) {
                self.poison_unlocked(&e);
            }
        }
    }

    /// Writes a periodic checkpoint if one is due: captured under the
    /// queue lock, written after it is released by a thread of its own
    /// (its fsyncs take milliseconds: the operation that made it due does
    /// not wait for them), once the log is durable up to the LSN it covers
    /// (a failed log sync poisons the queue, as any; a checkpoint that
    /// cannot be written is only left out). A close waits for it.
    fn checkpoint_if_due(&self, mut st: MutexGuard<'_, QueueState>) {
        let Some(handoff) = self.inner.checkpoints.due(&st) else {
            return;
        };
        st.note_checkpoint(handoff.0.next_lsn());
        drop(st);
        self.inner.checkpointer.hand(handoff);
    }

    /// Runs a state operation; any I/O failure poisons the queue. After an
    /// operation that happened, maintenance (reclaim) runs as a separate
    /// step, and its failure is not the operation's: the queue is poisoned
    /// (so later calls fail), but this call succeeds, unless it promised
    /// `Durability::Sync` and its record (LSN `lsn_of(out)`) was not yet
    /// durable when the log failed: that promise can no longer be kept,
    /// exactly as when its own group commit fails.
    fn write_op_at<T>(
        &self,
        op: impl FnOnce(&mut QueueState, Now) -> Result<T>,
        lsn_of: impl Fn(&T) -> u64,
    ) -> Result<T> {
        let out = self.locked_op(op, lsn_of);
        self.upkeep();
        out
    }

    /// [`Queue::write_op_at`] under the lock.
    fn locked_op<T>(
        &self,
        op: impl FnOnce(&mut QueueState, Now) -> Result<T>,
        lsn_of: impl Fn(&T) -> u64,
    ) -> Result<T> {
        let mut st = self.lock_for_write()?;
        let now = st.now(self.clock());
        st.log.begin_op();
        let out = op(&mut st, now).inspect_err(|e| {
            if e.kind() == ErrorKind::Io && !st.log.take_harmless_failure() {
                self.poison(e);
            }
        })?;
        self.wake_for_ready_in(&mut st);
        if let Some(e) = st.maintain(now.wall) {
            self.poison(&e);
            let sync = self.inner.opts.durability == Durability::Sync;
            if sync && self.inner.commit.durable() < lsn_of(&out) {
                return Err(e);
            }
            return Ok(out);
        }
        self.checkpoint_if_due(st);
        Ok(out)
    }

    /// Wakes the consumers of the queue in which the operation just run
    /// made a job ready outside an enqueue (a retry, or an ack, a dead
    /// letter or an expired last lease that freed the next job of a
    /// group): the job may be ready now, or sooner than a waiting
    /// consumer of its queue would look again.
    fn wake_for_ready_in(&self, st: &mut QueueState) {
        if let Some((queue, several)) = st.take_ready_in() {
            self.inner.wakeups.ready_in(queue, several);
        }
    }

    /// Poisons the queue after a failed write or sync (every later
    /// operation fails until a reopen) and wakes every blocked consumer.
    /// The caller holds the state lock; see [`Queue::poison_unlocked`].
    fn poison(&self, e: &Error) {
        self.mark_poisoned(e);
        self.notify_all_consumers();
    }

    /// [`Queue::poison`] from a thread that does not hold the state lock.
    /// A consumer checks the flag under that lock and then waits on a
    /// condvar, which releases it: between the two, a wake-up is lost. So
    /// the lock is taken once after the flag is set and before the wake:
    /// a consumer then either saw the flag or is waiting. The lock is only
    /// tried while the queue is open: a close holds it while it waits for
    /// the checkpoint thread (which may be this one), and wakes every
    /// consumer itself.
    fn poison_unlocked(&self, e: &Error) {
        self.mark_poisoned(e);
        loop {
            if self
                .inner
                .state
                .try_lock_for(Duration::from_millis(1))
                .is_some()
            {
                break;
            }
            if self.inner.closed.load(Ordering::Acquire) {
                break;
            }
        }
        self.notify_all_consumers();
    }

    /// Sets the poison flag (the first cause kept) and fails the
    /// committer's waiters.
    fn mark_poisoned(&self, e: &Error) {
        self.inner
            .poison_cause
            .lock()
            .get_or_insert_with(|| e.to_string());
        self.inner.poisoned.store(true, Ordering::Release);
        self.inner.commit.fail(e.to_string());
    }

    /// Wakes blocked consumers after an enqueue (`every` of them for a
    /// batch or a delayed job, else one). Under `Durability::Sync`
    /// this runs once the enqueue is durable (only durable jobs are
    /// delivered); the lock is taken and dropped first so that a consumer
    /// between its check and its wait cannot miss the wakeup.
    fn wake_consumers(&self, every: bool) {
        if self.inner.opts.durability == Durability::Sync {
            drop(self.inner.state.lock());
        }
        // The jobs are in this handle's queue.
        if every {
            self.inner.wakeups.every(self.queue);
        } else {
            self.inner.wakeups.one(self.queue);
        }
    }

    /// Wakes every blocked consumer of every queue, threads and tasks.
    fn notify_all_consumers(&self) {
        self.inner.wakeups.all();
    }

    /// Waits until `lsn` is durable if the queue runs in `Durability::Sync`.
    fn settle(&self, lsn: u64) -> Result<()> {
        if self.inner.opts.durability != Durability::Sync {
            return Ok(());
        }
        self.make_durable(lsn)
    }

    /// Waits until `lsn` is durable through the committer, the one path
    /// that syncs the log; a failure poisons the queue.
    fn make_durable(&self, lsn: u64) -> Result<()> {
        let result = self.inner.commit.wait(lsn);
        if let Err(e) = &result {
            self.poison_unlocked(e);
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
        let out = self.enqueue_op(|st, now| {
            st.validate_enqueue(payload, &opts)?;
            st.enqueue(self.queue, payload, &opts, now.wall, 0)
        })?;
        self.settle(out.lsn)?;
        if !out.duplicate {
            // A delayed job wakes every consumer: each then sleeps until
            // its due time at most. Woken alone, one whose own wait ends
            // before the job is due would leave with the news, and the
            // others would sleep on to their own timeouts (a review found
            // the job waiting up to a visibility timeout past its due).
            self.wake_consumers(!opts.delay.is_zero());
        }
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
        let (ids, lsn) =
            self.enqueue_op(|st, now| st.enqueue_batch(self.queue, &slices, now.wall))?;
        self.settle(lsn)?;
        self.wake_consumers(true);
        Ok(ids)
    }

    /// Leases the next ready job, or returns `None` at once if none is.
    ///
    /// The job stays invisible to other consumers for the visibility
    /// timeout. Its attempt is counted and written to the log now.
    pub fn dequeue(&self) -> Result<Option<Job>> {
        self.write_op(|st, now| {
            let vt = st.lease_ms(self.queue, None);
            st.dequeue(self.queue, now, vt)
        })
    }

    /// Leases the next ready job, waiting up to `wait` for one. Wakes on
    /// enqueue, on a retry or delay coming due and on an expiring lease
    /// (one taken by another consumer after this wait began is noticed
    /// within the queue's visibility timeout); never spins.
    pub fn dequeue_timeout(&self, wait: Duration) -> Result<Option<Job>> {
        self.dequeue_waiting(None, wait)
    }

    /// The blocking dequeue of [`Queue::dequeue_timeout`] and
    /// [`Queue::dequeue_wait`], leasing for `vt` milliseconds.
    /// `vt` is the lease length, `None` for the queue's visibility timeout.
    fn dequeue_waiting(&self, vt: Option<u64>, wait: Duration) -> Result<Option<Job>> {
        let queue = self.queue;
        let mut pick = |st: &mut QueueState, now: Now| {
            let vt = st.lease_ms(queue, vt);
            st.dequeue(queue, now, vt)
        };
        self.dequeue_picking(&mut pick, wait, &[queue], &|| false)
    }

    /// A blocking dequeue of the job `pick` leases (for a worker pool over
    /// several queues of the store, `worker::MultiQueue`), waiting up to
    /// `wait` for one: `pick` runs under the store's lock, each time a job
    /// may have become ready in one of `queues` (ids of the store's
    /// queues). The wait ends early, `Ok(None)`, once `stop` is true
    /// (see [`Queue::wake_stopping`]).
    pub(crate) fn dequeue_picking(
        &self,
        pick: &mut dyn FnMut(&mut QueueState, Now) -> Result<Option<Job>>,
        wait: Duration,
        queues: &[u16],
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Job>> {
        let out = self.dequeue_locked(pick, wait, queues, stop);
        self.upkeep();
        out
    }

    /// [`Queue::dequeue_wait`] for a worker pool's lease: the wait ends
    /// early, `Ok(None)`, once `stop` is true and
    /// [`Queue::wake_stopping`] has been called since.
    pub(crate) fn dequeue_wait_unless(
        &self,
        visibility: Duration,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Job>> {
        let vt = Some(lease_ms(visibility)?);
        let queue = self.queue;
        let mut pick = |st: &mut QueueState, now: Now| {
            let vt = st.lease_ms(queue, vt);
            st.dequeue(queue, now, vt)
        };
        self.dequeue_picking(&mut pick, wait, &[queue], stop)
    }

    /// Wakes every consumer blocked waiting for a job of `queues`, so
    /// that a [`Queue::dequeue_picking`] whose `stop` has become true
    /// returns (the others look again and wait on). `stop` is read under
    /// the store's lock before each wait, and that lock is taken and
    /// dropped here before the wake: a consumer between its read and its
    /// wait cannot miss it. The caller sets what `stop` reads first.
    pub(crate) fn wake_stopping(&self, queues: &[u16]) {
        drop(self.inner.state.lock());
        for queue in queues {
            self.inner.wakeups.every(*queue);
        }
    }

    /// [`Queue::dequeue_picking`] under the lock.
    fn dequeue_locked(
        &self,
        pick: &mut dyn FnMut(&mut QueueState, Now) -> Result<Option<Job>>,
        wait: Duration,
        queues: &[u16],
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Job>> {
        let deadline = crate::clock::deadline(wait);
        let mut st = self.lock_for_write()?;
        loop {
            self.check_open()?;
            let now = st.now(self.clock());
            st.log.begin_op();
            let got = pick(&mut st, now);
            // The look may have expired a group head's last lease (its
            // next job freed, maybe in another queue).
            self.wake_for_ready_in(&mut st);
            if got.is_ok() {
                if let Some(e) = st.maintain(now.wall) {
                    self.poison(&e);
                }
            }
            match got {
                Ok(Some(job)) => return Ok(Some(job)),
                Ok(None) => {}
                Err(e) => {
                    if e.kind() == ErrorKind::Io && !st.log.take_harmless_failure() {
                        self.poison(&e);
                    }
                    return Err(e);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // Read under the lock, before the wait: see `wake_stopping`.
            if left.is_zero() || stop() {
                return Ok(None);
            }
            let until_due = st
                .wakeup_in(now, queues)
                .map_or(left, |t| Duration::from_millis(t.max(1)));
            self.inner
                .wakeups
                .wait(&mut st, queues, left.min(until_due));
        }
    }

    /// Leases up to `max` ready jobs, with one log record for the lot (a
    /// LeaseMany record of up to 4096 entries; more are split into several
    /// records written as one batch).
    pub fn dequeue_batch(&self, max: usize) -> Result<Vec<Job>> {
        self.write_op(|st, now| {
            let vt = st.lease_ms(self.queue, None);
            st.dequeue_many(self.queue, max, now, vt)
        })
    }

    /// Marks a job done: it is never delivered again.
    ///
    /// Fails with [`ErrorKind::LeaseLost`] if the receipt's lease expired.
    pub fn ack(&self, receipt: Receipt) -> Result<()> {
        let lsn = self.write_op_at(|st, now| st.ack(receipt, now), |&l| l)?;
        self.settle(lsn)
    }

    /// Gives a job back for a retry after `retry`. If the job has used its
    /// last attempt it goes to the dead letters instead, with `error` (or,
    /// when `error` is empty, the last error an earlier attempt gave).
    ///
    /// A non-empty `error` (cut to [`crate::MAX_ERROR_LEN`] bytes at a
    /// char boundary) is kept durably as the job's last error until it
    /// finishes: [`Queue::last_error`] reads it while the job waits for
    /// its retry or runs again, and it survives a reopen. An empty one
    /// leaves the job's previous error, if any, as it was.
    ///
    /// A `Retry::After` delay over [`crate::MAX_DELAY`] (365 days) is
    /// refused with [`ErrorKind::InvalidOptions`], nothing written: the job
    /// stays leased.
    pub fn nack(&self, receipt: Receipt, retry: Retry, error: &str) -> Result<()> {
        if let Retry::After(delay) = retry {
            check_delay("a nack's Retry::After delay", delay)?;
        }
        let lsn = self.write_op_at(|st, now| st.nack(receipt, retry, error, now), |&l| l)?;
        self.settle(lsn)
    }

    /// Gives a leased job back, ready now, without counting the attempt
    /// its lease started: for a consumer that stops before it ran the job,
    /// or before it finished (a stop is not the job's failure). Unlike
    /// [`Queue::nack`], a job on its last attempt stays queued. The worker
    /// pools release this way at shutdown.
    ///
    /// A lease that ran out or was settled is refused with
    /// [`ErrorKind::LeaseLost`](crate::ErrorKind::LeaseLost), and nothing
    /// changes. A crash before the release is written leaves the job
    /// leased: the next open releases it with the attempt counted, as it
    /// does every lease of a process that stopped.
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = walq::Queue::open(dir.path())?;
    /// q.enqueue(b"resize video 42")?;
    /// let job = q.dequeue()?.expect("a job");
    /// assert_eq!(job.attempt(), 1);
    /// // Shutting down before the job ran: give it back.
    /// q.release(job.receipt())?;
    /// let again = q.dequeue()?.expect("the same job");
    /// assert_eq!((again.id(), again.attempt()), (job.id(), 1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn release(&self, receipt: Receipt) -> Result<()> {
        let lsn = self.write_op_at(|st, now| st.release(receipt, now), |&l| l)?;
        self.settle(lsn)
    }

    /// Sends a job straight to the dead letters with `error`.
    pub fn fail(&self, receipt: Receipt, error: &str) -> Result<()> {
        let lsn = self.write_op_at(|st, now| st.fail(receipt, error, now), |&l| l)?;
        self.settle(lsn)
    }

    /// Extends a lease to `by` from now (a heartbeat for long jobs).
    ///
    /// `by` over [`crate::MAX_DELAY`] (365 days) is refused with
    /// [`ErrorKind::InvalidOptions`] and the lease left as it was.
    pub fn extend(&self, receipt: Receipt, by: Duration) -> Result<()> {
        check_delay("a lease extension", by)?;
        self.write_op(|st, now| st.extend(receipt, duration_ms(by), now))
    }

    /// The ids of all dead letters, oldest id first. Only the in-memory
    /// index is read; the lock is taken once per page of ids.
    pub fn dead_letter_ids(&self) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = self.inner.state.lock().dead_ids_page(after, DEAD_PAGE);
            ids.extend_from_slice(&page);
            match page.last() {
                Some(&last) if page.len() == DEAD_PAGE => after = Some(last),
                _ => return ids,
            }
        }
    }

    /// Up to `limit` dead letters with ids after `after` (from the first
    /// with `None`), oldest id first, with their payloads and last errors.
    /// The payloads are read after the queue lock is released, from the
    /// file as it was when the page was taken: a letter redriven or purged
    /// meanwhile may still appear in this page.
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let q = walq::Queue::open(dir.path())?;
    /// let mut after = None;
    /// while let Some(last) = q.dead_letters_page(after, 100)?.last() {
    ///     after = Some(last.id);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn dead_letters_page(&self, after: Option<u64>, limit: usize) -> Result<Vec<DeadLetter>> {
        let page = self.inner.state.lock().dead_page(after, limit);
        page.read()
    }

    /// All dead letters with their payloads and last errors, read a page at
    /// a time (never the whole list under the lock). Prefer
    /// [`Queue::dead_letters_page`] when there may be many.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.dead_letters_page(after, DEAD_PAGE)?;
            let full = page.len() == DEAD_PAGE;
            after = page.last().map(|d| d.id);
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// One dead letter.
    pub fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>> {
        self.inner.state.lock().dead_letter_get(id)
    }

    /// Puts a dead letter back in the queue, ready now, attempts reset.
    pub fn redrive(&self, id: u64) -> Result<()> {
        let done = self.write_op(|st, now| st.redrive(&[id], now.wall))?;
        if done.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no dead letter with id {id}"),
            ));
        }
        self.notify_all_consumers();
        Ok(())
    }

    /// Puts every dead letter back in the queue; returns how many. Each
    /// page of letters is redriven all or nothing; on an error, the pages
    /// before it stay redriven.
    pub fn redrive_all(&self) -> Result<usize> {
        self.each_dead_page(|st, ids, now| st.redrive(ids, now))
    }

    /// Deletes a dead letter for good.
    pub fn purge(&self, id: u64) -> Result<()> {
        let done = self.write_op(|st, now| {
            self.mark_purged(st, &[id], now.wall)?;
            st.log.mark_changed();
            st.purge(&[id], now.wall)
        })?;
        if done.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no dead letter with id {id}"),
            ));
        }
        Ok(())
    }

    /// Deletes every dead letter; returns how many (a page at a time, as
    /// [`Queue::redrive_all`]).
    pub fn purge_all(&self) -> Result<usize> {
        self.each_dead_page(|st, ids, now| {
            self.mark_purged(st, ids, now)?;
            st.log.mark_changed();
            st.purge(ids, now)
        })
    }

    /// Runs `op` on the dead letters a page of ids at a time, each page
    /// under the lock once, so memory and lock hold stay bounded.
    fn each_dead_page(
        &self,
        op: impl Fn(&mut QueueState, &[u64], u64) -> Result<Vec<u64>>,
    ) -> Result<usize> {
        let mut total = 0;
        let mut after = None;
        loop {
            let (done, last, full) = self.write_op(|st, now| {
                let ids = st.dead_ids_page(after, DEAD_PAGE);
                let done = op(st, &ids, now.wall)?;
                Ok((done.len(), ids.last().copied(), ids.len() == DEAD_PAGE))
            })?;
            total += done;
            self.notify_all_consumers();
            match last {
                Some(last) if full => after = Some(last),
                _ => return Ok(total),
            }
        }
    }

    /// Counts and sizes. For a named queue of a store, `ready`, `delayed`
    /// and `in_flight` are this queue's; the other fields (dead letters,
    /// totals, disk) are the store's ([`Store::stats`] lists every queue's
    /// counts).
    pub fn stats(&self) -> Stats {
        let mut st = self.inner.state.lock();
        let now = st.now(self.clock());
        let mut stats = st.queue_stats(self.queue, now);
        // The completion file's lock after the queue's (the lock order).
        stats.disk_bytes += self.inner.done.lock().disk_bytes();
        stats
    }

    /// Pauses this queue: no dequeue (nor worker pool, nor
    /// [`crate::worker::MultiQueue`]) is given its jobs until
    /// [`Queue::resume`], in this process or after a restart. Enqueues,
    /// acks, nacks, cancels and the jobs already leased go on as before; a
    /// lease that runs out puts its job back to wait. The pause is
    /// written (file `PAUSED`, crash-atomically, under the queue's lock:
    /// about one `fsync` and one directory `fsync`) before it takes
    /// effect, so once this returns it holds after any crash. Pausing a
    /// paused queue does nothing.
    ///
    /// A failure (a full disk, say) is an [`ErrorKind::Io`] naming
    /// `PAUSED`, and the queue goes on as before it; if the failure came
    /// after the new file was in place (its directory's sync), the pause
    /// may hold from the next open.
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = walq::Store::open(dir.path())?;
    /// let emails = store.queue("emails")?;
    /// emails.enqueue(b"to: ada")?;
    /// emails.pause()?; // the mail provider is down
    /// assert!(emails.dequeue()?.is_none());
    /// assert!(emails.stats().paused);
    /// emails.resume()?;
    /// assert!(emails.dequeue()?.is_some());
    /// # Ok(()) }
    /// ```
    pub fn pause(&self) -> Result<()> {
        self.set_paused(true)
    }

    /// Resumes a paused queue ([`Queue::pause`]): its ready jobs are
    /// delivered again, and consumers waiting for one are woken. Resuming
    /// a queue that is not paused does nothing.
    pub fn resume(&self) -> Result<()> {
        self.set_paused(false)
    }

    /// Whether this queue is paused ([`Queue::pause`]).
    pub fn is_paused(&self) -> bool {
        self.inner.state.lock().is_paused(self.queue)
    }

    /// Pauses (`on`) or resumes this queue: `PAUSED` first, then memory.
    fn set_paused(&self, on: bool) -> Result<()> {
        {
            let mut st = self.lock_for_write()?;
            if st.is_paused(self.queue) == on {
                return Ok(());
            }
            let names = st.paused_names_with(self.queue, on);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            crate::pause::save(&*st.log.vfs, &self.inner.dir, &names, st.log.mode)?;
            st.set_paused(self.queue, on);
        }
        if !on {
            self.inner.wakeups.every(self.queue);
        }
        Ok(())
    }

    /// Makes every write so far durable (fdatasync), whatever the
    /// durability mode.
    pub fn sync(&self) -> Result<()> {
        self.check_open()?;
        let lsn = self.inner.state.lock().log.next_lsn - 1;
        self.make_durable(lsn)?;
        let mut st = self.inner.state.lock();
        // Again under the lock: an operation that failed meanwhile (its
        // side file's sync, reported once by the kernel) poisoned the
        // queue, and a sync of that file now would succeed without having
        // written what the failure dropped.
        self.check_open()?;
        st.dead.sync().inspect_err(|e| self.poison(e))?;
        self.inner
            .done
            .lock_for_sync()
            .sync()
            .inspect_err(|e| self.poison(e))
    }

    /// Syncs and closes the queue; every clone then fails with
    /// [`ErrorKind::Closed`]. The directory lock is released at once, so
    /// the queue can be reopened (in this process or another) while clones
    /// of this handle are still alive. A clean close records where the log
    /// ends (file `CLOSED`), so that a later open detects a log cut short.
    pub fn close(&self) -> Result<()> {
        // The upkeep thread is stopped first (it takes the state lock):
        // what it left is run below, and nothing of this queue touches the
        // directory once it is released.
        self.inner.stop_upkeep();
        // Under the state lock: no operation is half done, none starts.
        let mut st = self.inner.state.lock();
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::new(ErrorKind::Closed, "the queue was closed"));
        }
        self.notify_all_consumers();
        let result = if self.inner.poisoned.load(Ordering::Acquire) {
            Ok(())
        } else {
            self.inner
                .commit
                .wait_as(st.log.next_lsn - 1, Waiter::Aside)
                .and_then(|()| self.inner.upkeep.run(&self.inner.commit).map(drop))
                .and_then(|()| st.dead.sync())
                .and_then(|()| self.inner.done.lock_for_sync().sync())
                .inspect_err(|e| self.poison(e))
        };
        if result.is_ok() && !self.inner.poisoned.load(Ordering::Acquire) {
            // Best effort: without a checkpoint the next open scans the
            // whole log. Everything it covers was synced just above.
            let (capture, writing) = self.inner.checkpoints.clean(&st);
            let ck = writing.finish(capture);
            let _ = checkpoint::write(&*st.log.vfs, &self.inner.dir, &ck, st.log.mode);
            // Best effort: without the record (a full disk, say) the next
            // open just has one check fewer; an older record stays valid
            // (the log only grows).
            let _ = st.log.record_clean_close();
            // Best effort: a floor left high only skips ids at the next open.
            let _ = st.settle_id_floor();
            self.save_store_id(&st);
            // Best effort: the reserve a drain used is made again while
            // there is room, for the next open on a disk that fills up.
            st.log.fill_reserve();
        }
        drop(st);
        self.inner.lock.lock().take();
        for side in self.inner.side_locks.lock().drain(..) {
            if let Some(held) = side.upgrade() {
                held.lock().take();
            }
        }
        result
    }

    /// Writes the store id that a full disk kept from being written at
    /// open (best effort: another try at the next close).
    fn save_store_id(&self, st: &QueueState) {
        let mut id = self.inner.store_id.lock();
        if id.unsaved
            && crate::store_id::save(&*st.log.vfs, &self.inner.dir, id.id, st.log.mode).is_ok()
        {
            id.unsaved = false;
        }
    }

    /// Releases `lock` with the directory's when this queue is closed (the
    /// `Scheduler`'s lock of `schedules.lock`: a closed store hands its
    /// schedules over with its directory).
    pub(crate) fn release_with_directory(&self, lock: &Arc<SideLock>) {
        let mut sides = self.inner.side_locks.lock();
        sides.retain(|w| w.strong_count() > 0);
        sides.push(Arc::downgrade(lock));
    }

    /// Asserts internal invariants (for tests; O(jobs)).
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        self.inner.state.lock().check_invariants();
    }
}

impl Inner {
    /// Run when the last user handle is dropped: a periodic checkpoint
    /// being written finishes, the flush thread stops, and the directory
    /// is released, so that it can be reopened as soon as the drop
    /// returns.
    fn shut_down(&self) {
        self.checkpoints.wait_idle();
        self.stop_upkeep();
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(handle) = self.flusher.lock().take() {
            // The flush thread holds no user handle; checked all the same.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        self.lock.lock().take();
    }
}

impl Inner {
    /// Stops the `walq-upkeep` thread once it did the work rung so far,
    /// and waits for it.
    fn stop_upkeep(&self) {
        self.upkeeper.wait_idle();
        self.upkeeper.stop();
        self.prefaulter.stop();
        self.checkpointer.stop();
        for thread in [&self.upkeep_thread, &self.prefault_thread] {
            if let Some(handle) = thread.lock().take() {
                // The threads hold no user handle; checked all the same.
                if handle.thread().id() != std::thread::current().id() {
                    let _ = handle.join();
                }
            }
        }
    }
}

/// The `walq-upkeep` thread: runs the log's upkeep each time an operation
/// rings, until the queue is closed or its last user handle dropped. It
/// holds the queue only while it runs (and never a user handle).
fn upkeep_loop(weak: &Weak<Inner>, mailbox: &crate::upkeep::Mailbox) {
    while mailbox.next() {
        if let Some(inner) = weak.upgrade() {
            let q = Queue {
                inner,
                queue: 0,
                _owner: None,
            };
            q.run_upkeep();
        }
        mailbox.done();
    }
}

/// The `walq-checkpoint` thread's work for one capture: encodes it,
/// waits until the log is durable up to the LSN it covers, writes it, and
/// then any that fell due meanwhile. Holds the queue only to poison it:
/// dropping the last user handle meanwhile waits for this write
/// (`Inner::shut_down`), then releases the directory.
fn write_checkpoints(weak: &Weak<Inner>, to: &Path, vfs: &dyn Vfs, mode: u32, handoff: Handoff) {
    let (capture, writing) = handoff;
    let Some(commit) = weak.upgrade().map(|inner| inner.commit.clone()) else {
        return;
    };
    let mut ck = writing.finish(capture);
    let failed = loop {
        if let Err(e) = commit.wait_as(ck.next_lsn() - 1, Waiter::Aside) {
            break weak.upgrade().map(|inner| {
                let queue = Queue {
                    inner,
                    queue: 0,
                    _owner: None,
                };
                queue.poison_unlocked(&e);
                queue
            });
        }
        let _ = checkpoint::write(vfs, to, &ck, mode);
        match missed_checkpoint(weak) {
            Some(next) => ck = writing.finish(next),
            None => break None,
        }
    };
    // In this order: if `failed` holds the last handle, its drop waits for
    // `writing` to be gone.
    drop(writing);
    drop(failed);
}

/// A checkpoint that fell due while the last one was being written (the
/// caller still holds the right to write), captured now, unless the queue
/// is gone, closed or poisoned. The lock is only tried: a close holds it
/// while it waits for this writer, and sets `closed` first. Both flags are
/// read again under the lock: an operation that fails half done poisons
/// the queue before it releases the lock, and its half-applied state must
/// never be captured (its records may be durable already, so the
/// checkpoint's log sync would not fail).
fn missed_checkpoint(weak: &Weak<Inner>) -> Option<checkpoint::Capture> {
    let inner = weak.upgrade()?;
    let stopped = || inner.closed.load(Ordering::Acquire) || inner.poisoned.load(Ordering::Acquire);
    loop {
        if stopped() {
            return None;
        }
        if let Some(mut st) = inner.state.try_lock_for(Duration::from_millis(1)) {
            if stopped() {
                return None;
            }
            let capture = inner.checkpoints.missed(&st)?;
            st.note_checkpoint(capture.next_lsn());
            return Some(capture);
        }
    }
}

/// Background fdatasync for `Durability::Periodic`. Holds the queue only
/// while syncing, and never as a user handle: dropping the last one stops
/// this thread (waiting for a sync under way) and releases the directory.
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
        let q = Queue {
            inner,
            queue: 0,
            _owner: None,
        };
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
    /// `visibility` is at least 1 ms and at most [`crate::MAX_DELAY`]
    /// (365 days); outside that, the call is refused with
    /// [`ErrorKind::InvalidOptions`] and nothing is leased.
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
        self.write_op(|st, now| st.dequeue(self.queue, now, vt))
    }

    /// Leases the next ready job for `visibility`, waiting up to `wait` for
    /// one. Wakes on enqueue, on a retry or delay coming due and on an
    /// expiring lease (one taken by another consumer after this wait began
    /// is noticed within the queue's visibility timeout); never spins.
    /// `visibility` is bounded as [`Queue::dequeue_for`]'s is; `wait` may
    /// be anything (`Duration::MAX` waits for ever).
    pub fn dequeue_wait(&self, visibility: Duration, wait: Duration) -> Result<Option<Job>> {
        self.dequeue_waiting(Some(lease_ms(visibility)?), wait)
    }
}

/// A per-call visibility timeout in milliseconds; at least 1 ms, at most
/// [`crate::MAX_DELAY`].
fn lease_ms(visibility: Duration) -> Result<u64> {
    check_delay("a lease's visibility timeout", visibility)?;
    let vt = duration_ms(visibility);
    if vt == 0 {
        return Err(Error::new(
            ErrorKind::InvalidOptions,
            format!("a lease's visibility timeout must be at least 1 ms, got {visibility:?}"),
        ));
    }
    Ok(vt)
}

/// Job status and completion records (`docs/architecture.md`, "Job status
/// and completion records").
impl Queue {
    /// What became of job `id`: queued, delayed, in flight (with its
    /// attempt), done (with the result given to [`Queue::ack_with_result`],
    /// kept for the dedup window), dead, purged, or unknown (never issued).
    ///
    /// The live state wins over the dead letters, and both over the
    /// completion file. A lease whose deadline has passed is expired first,
    /// as a dequeue would, so a job whose worker vanished reads as queued
    /// again (or dead, if that was its last attempt).
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use walq::{JobStatus, Queue};
    /// let q = Queue::open(dir.path())?;
    /// let id = q.enqueue(b"render invoice 12")?;
    /// assert_eq!(q.status(id)?, JobStatus::Queued { attempts: 0 });
    /// let job = q.dequeue()?.unwrap();
    /// q.ack_with_result(job.receipt(), b"invoice-12.pdf")?;
    /// match q.status(id)? {
    ///     JobStatus::Done { result, .. } => assert_eq!(result.as_deref(), Some(&b"invoice-12.pdf"[..])),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn status(&self, id: u64) -> Result<crate::status::JobStatus> {
        use crate::done::Completion;
        use crate::status::{JobStatus, LiveStatus};
        self.write_op(|st, now| {
            st.expire_leases(now)?;
            Ok(match st.live_status(id, now) {
                LiveStatus::Ready { attempts } => JobStatus::Queued { attempts },
                LiveStatus::Blocked { attempts } => JobStatus::Blocked { attempts },
                LiveStatus::Delayed { due_ms, attempts } => JobStatus::Delayed { due_ms, attempts },
                LiveStatus::InFlight {
                    attempt,
                    lease_expires_ms,
                    ..
                } => JobStatus::InFlight {
                    attempt,
                    lease_expires_ms,
                },
                LiveStatus::Dead => {
                    let d = st.dead_letter_get(id)?.ok_or_else(|| {
                        Error::new(ErrorKind::NotFound, format!("dead letter {id} vanished"))
                    })?;
                    JobStatus::Dead {
                        attempts: d.attempts,
                        dead_ms: d.dead_ms,
                        error: d.error,
                    }
                }
                LiveStatus::Finished => match self.inner.done.lock().get(id, now.wall)? {
                    Some(Completion::Result {
                        finished_ms,
                        result,
                    }) => JobStatus::Done {
                        finished_ms: Some(finished_ms),
                        result: Some(result),
                    },
                    Some(Completion::Purged { purged_ms }) => JobStatus::Purged { purged_ms },
                    Some(Completion::Expired) => JobStatus::Expired,
                    None => JobStatus::Done {
                        finished_ms: None,
                        result: None,
                    },
                },
                LiveStatus::NeverIssued => JobStatus::Unknown,
            })
        })
    }

    /// The last error of job `id`: the text given to the last
    /// [`Queue::nack`] with a non-empty error (cut to
    /// [`crate::MAX_ERROR_LEN`] bytes), while the job is live (waiting for
    /// its retry, or leased again). `None` for a job that never failed with
    /// an error, and for one that finished: acked, cancelled, or
    /// dead-lettered (its [`JobStatus::Dead`](crate::JobStatus::Dead)
    /// carries the error it died with). Kept durably: it reads the same
    /// after a reopen, from the checkpoint or from a full scan of the log.
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// use walq::{Queue, Retry};
    /// let q = Queue::open(dir.path())?;
    /// let id = q.enqueue(b"charge card 7")?;
    /// let job = q.dequeue()?.unwrap();
    /// q.nack(job.receipt(), Retry::After(Duration::from_secs(60)), "gateway timeout")?;
    /// assert_eq!(q.last_error(id)?.as_deref(), Some("gateway timeout"));
    /// # Ok(()) }
    /// ```
    pub fn last_error(&self, id: u64) -> Result<Option<String>> {
        self.check_open()?;
        Ok(self.inner.state.lock().last_error(id).map(str::to_owned))
    }

    /// Cancels a job that waits to run (queued, delayed, waiting for a
    /// retry, or blocked behind its group's head): it is removed and is
    /// never delivered. Its status then reads [`JobStatus::Purged`]
    /// (removed without completing), never `Done`. Under
    /// [`Durability::Sync`] the cancel is on stable storage when this
    /// returns.
    ///
    /// A leased job is not taken from its worker: [`ErrorKind::InFlight`]
    /// (settle it from the worker, or cancel it once its lease ends; a
    /// lease whose deadline passed is released first, as a dequeue would).
    /// [`ErrorKind::NotFound`] if no job with that id waits in this queue
    /// (never issued, finished, a dead letter, or another queue's). The
    /// job's idempotency key stays known for its window, as an acked
    /// job's does: an enqueue with the same key inside it is a duplicate.
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// use walq::{EnqueueOptions, JobStatus, Queue};
    /// let q = Queue::open(dir.path())?;
    /// let reminder = q.enqueue_with(
    ///     b"remind user 5",
    ///     EnqueueOptions::new().delay(Duration::from_secs(24 * 3600)),
    /// )?;
    /// q.cancel(reminder.id)?; // user 5 acted before the day passed
    /// assert!(matches!(q.status(reminder.id)?, JobStatus::Purged { .. }));
    /// assert!(q.dequeue()?.is_none());
    /// # Ok(()) }
    /// ```
    ///
    /// [`JobStatus::Purged`]: crate::JobStatus::Purged
    pub fn cancel(&self, id: u64) -> Result<()> {
        let lsn = self.locked_op(
            |st, now| {
                st.check_cancellable(self.queue, id, now)?;
                // First the marker, as a purge's. A crash before the Ack
                // record leaves the job live, and the next open clears it.
                self.write_purge_markers(st, &[id], now.wall)?;
                st.log.mark_changed();
                st.cancel(id)
            },
            |&lsn| lsn,
        )?;
        self.settle(lsn)
    }

    /// Adds a job straight to this queue's dead letters, never delivered:
    /// for moving dead letters from another queue or another system
    /// (`walq import` uses it). The job gets a new id and keeps `opts`'
    /// key, level and group (a delay is ignored: it is dead from the
    /// start); `error` (cut to [`crate::MAX_ERROR_LEN`] bytes) is its last
    /// error, and its attempts read 1. A redrive returns it to the queue
    /// like any dead letter, with the queue's `max_attempts`. A key
    /// already known returns that job with `duplicate` set and adds
    /// nothing. No other job is touched.
    ///
    /// The payload and options are checked as [`Queue::enqueue_with`]
    /// checks them. Room for the dead letter is allocated first, so a full
    /// disk refuses the call before anything is written; a crash or a
    /// failed write after the job's record leaves it in flight on its last
    /// attempt, moved to the dead letters at the next open. Under
    /// [`Durability::Sync`] the dead letter is on stable storage when this
    /// returns (dead letters are synced whatever the durability).
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = walq::Queue::open(dir.path())?;
    /// q.enqueue(b"resize photo 1")?;
    /// let moved = q.enqueue_dead_letter(b"resize photo 2", Default::default(), "timed out upstream")?;
    /// assert_eq!(q.dead_letter_ids(), vec![moved.id]);
    /// let job = q.dequeue()?.expect("the waiting job");
    /// assert_eq!(job.payload(), b"resize photo 1"); // untouched, first attempt
    /// assert_eq!(job.attempt(), 1);
    /// # Ok(()) }
    /// ```
    pub fn enqueue_dead_letter(
        &self,
        payload: &[u8],
        opts: EnqueueOptions,
        error: &str,
    ) -> Result<Enqueued> {
        let out = self.write_op_at(
            |st, now| {
                st.validate_enqueue(payload, &opts)?;
                st.enqueue_dead(self.queue, payload, &opts, error, now.wall)
            },
            |o| o.lsn,
        )?;
        self.settle(out.lsn)?;
        Ok(Enqueued {
            id: out.id,
            duplicate: out.duplicate,
        })
    }

    /// Acks a job and keeps `result` (at most [`crate::MAX_RESULT_LEN`]
    /// bytes) with its done status for the dedup window, for
    /// [`Queue::status`].
    ///
    /// The result is written to the completion file (`done.rec`) and, under
    /// [`Durability::Sync`], made durable before the ack; a crash between the
    /// two leaves a result for a job that is still live (its live state
    /// wins; the job is delivered again, and a later result supersedes this
    /// one). A result over the limit is refused with
    /// [`ErrorKind::PayloadTooLarge`] and nothing is written; a stale
    /// receipt is refused with [`ErrorKind::LeaseLost`] before anything is
    /// written, and a lease lost while the result was written refuses the
    /// ack with [`ErrorKind::LeaseLost`] and takes the result back (unless
    /// the queue is closed or poisoned in between: the call then fails as
    /// closed or poisoned, and the result stays as after a crash).
    pub fn ack_with_result(&self, receipt: Receipt, result: &[u8]) -> Result<()> {
        use crate::status::LiveStatus;
        if result.len() > crate::done::MAX_RESULT_LEN {
            return Err(crate::done::result_too_large(result.len()));
        }
        let now = {
            let mut st = self.lock_for_write()?;
            let now = st.now(self.clock());
            match st.live_status(receipt.id, now) {
                LiveStatus::InFlight {
                    lease_expires_ms,
                    token,
                    ..
                } if token == receipt.token && lease_expires_ms > now.wall => {}
                LiveStatus::NeverIssued => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("no job {} was ever enqueued", receipt.id),
                    ))
                }
                _ => {
                    return Err(Error::new(
                        ErrorKind::LeaseLost,
                        format!(
                            "the receipt's lease on job {} is no longer held (expired, or the job was settled or leased again)",
                            receipt.id
                        ),
                    ))
                }
            }
            now.wall
        };
        let recorded = self.write_done(|done| done.record_result(receipt.id, result, now))?;
        match self.ack(receipt) {
            // The lease was lost while the result was written: the result
            // goes with the refused ack, so that the run that does settle
            // the job decides its result (none, for a plain ack).
            Err(e) if e.kind() == ErrorKind::LeaseLost => {
                self.write_done(|done| done.retract(recorded))?;
                Err(e)
            }
            Ok(()) => {
                self.inner.done.lock().confirm(&recorded);
                Ok(())
            }
            failed => failed,
        }
    }

    /// Runs `f` on the completion file and, under [`Durability::Sync`],
    /// makes what it appended durable; an I/O error poisons the queue.
    fn write_done<R>(&self, f: impl FnOnce(&mut crate::done::DoneFile) -> Result<R>) -> Result<R> {
        let written = {
            // Under the state lock (lock order: state, then done), checked
            // open: a `close` either ran before (nothing is written) or
            // runs after, and its sync of `done.rec` covers the append.
            // Before, the append could land after `close` returned and
            // released the directory.
            let _st = self.lock_for_write()?;
            let mut done = self.inner.done.lock();
            f(&mut done).map(|r| (r, done.sync_target()))
        };
        let durable = written.and_then(|(r, target)| {
            if self.inner.opts.durability == Durability::Sync {
                self.inner.done.make_durable(target).map(|()| r)
            } else {
                Ok(r)
            }
        });
        if let Err(e) = &durable {
            if e.kind() == ErrorKind::Io {
                self.poison_unlocked(e);
            }
        }
        durable
    }

    /// Opens the completion file and drops purge markers whose purge did
    /// not happen (a crash after the marker, before the purge): their job
    /// is still dead, or was redriven; and every entry of an id the log
    /// never issued (below).
    fn open_done(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        opts: &Options,
        state: &QueueState,
        now: u64,
        report: &mut RecoveryReport,
    ) -> Result<crate::done::DoneFile> {
        let window = duration_ms(opts.dedup_window);
        let (mut done, found) =
            crate::done::DoneFile::open(vfs, dir, opts.file_mode, opts.recovery, window, now)?;
        report.torn_bytes += found.torn_bytes;
        report.bytes_skipped += found.damaged_bytes;
        let mut stale = false;
        for id in done.purged_ids() {
            if !state.is_settled_or_unknown(id) {
                done.clear(id)?;
                stale = true;
            }
        }
        // An entry of an id the log never issued: its job's records were
        // lost (a power cut under `Os` or `Periodic` keeps `done.rec`,
        // synced on every write, and loses log pages), and the next
        // enqueue takes that id again; it must not inherit the lost job's
        // result or purge marker.
        for id in done.ids_from(state.next_job_id()) {
            done.clear(id)?;
            stale = true;
        }
        stale |= done.finish_open(state.next_job_id())?;
        if stale {
            done.sync()?;
        }
        Ok(done)
    }

    /// Writes durable purge markers for those of `ids` that are dead
    /// letters, before they are purged, so a purged job never reads as
    /// done. Called under the state lock (lock order: state, then done).
    fn mark_purged(&self, st: &mut QueueState, ids: &[u64], now: u64) -> Result<()> {
        let dead: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| st.is_dead_letter(id))
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        // The removals the purge writes to `dead.wal` after the markers
        // need blocks too: allocated first, so a full disk refuses the
        // purge here, with nothing written.
        st.make_room_for_removals(dead.len(), true)?;
        self.write_purge_markers(st, &dead, now)
    }

    /// Writes a Purged marker for each of `ids` to `done.rec` and syncs it
    /// (every mode): before a purge or a cancel, so that the job never
    /// reads as done.
    ///
    /// Room for the markers is made first, as the log's draining writes
    /// are made ([`crate::log::Log::write_draining`]): on a full disk that
    /// fails before any marker is written, so the operation is refused
    /// with ENOSPC and the queue is not poisoned (before, a cancel or a
    /// purge on a full disk poisoned it, and every worker's drain with
    /// it); on a copy-on-write file system the reserve is given up for
    /// it. A failure after that (a marker, the sync) poisons, as before.
    fn write_purge_markers(&self, st: &mut QueueState, ids: &[u64], now: u64) -> Result<()> {
        // One hold of the completion file: no result written meanwhile
        // can use the room up in between. The sync turn first: no
        // `make_durable` fdatasync of the file is in flight while this
        // one's runs (`Completions::lock_for_sync`).
        let mut done = self.inner.done.lock_for_sync();
        st.log
            .write_draining(|| done.make_room_for_purged(ids.len()))?;
        done.record_purged(ids, now)?;
        done.sync()
    }

    /// Entries the completion index holds in memory, and the completion
    /// file's size in bytes (for tests of the bounds).
    #[doc(hidden)]
    pub fn completion_footprint(&self) -> (usize, u64) {
        let done = self.inner.done.lock();
        (done.index_len(), done.disk_bytes())
    }
}

/// Hooks for async dequeues (`src/worker/async_*.rs`).
impl Queue {
    /// The wakers of tasks waiting for this handle's queue.
    #[cfg(any(feature = "tokio", test))]
    pub(crate) fn async_wait(&self) -> &crate::worker::async_wait::AsyncWait {
        self.inner.wakeups.tasks_of(self.queue)
    }

    /// The wakers of tasks waiting for the store's queues `queues` (ids).
    #[cfg(any(feature = "tokio", test))]
    pub(crate) fn async_wait_for(&self, queues: &[u16]) -> &crate::worker::async_wait::AsyncWait {
        self.inner.wakeups.tasks_of_set(queues)
    }

    /// How long until a delayed job of one of `queues` or a lease comes
    /// due, if any will.
    #[cfg(feature = "tokio")]
    pub(crate) fn next_due_in(&self, queues: &[u16]) -> Option<Duration> {
        let mut st = self.inner.state.lock();
        let now = st.now(self.clock());
        st.wakeup_in(now, queues).map(Duration::from_millis)
    }
}

/// Settling many leases at once, for worker pools that pipeline their
/// acks: one lock, one group commit for the lot.
impl Queue {
    /// Marks several jobs done: validates every receipt under one lock,
    /// writes one AckMany record for the valid ones (up to 4096 entries;
    /// more are split into several records written as one batch), then
    /// (under [`Durability::Sync`]) waits for one group commit that covers
    /// them all.
    ///
    /// The outer `Err` means no ack of the batch is confirmed (the queue
    /// is closed or poisoned, or the write or fdatasync failed). As with a
    /// failed [`Queue::ack`], what reached the disk may still count after
    /// a reopen: a batch that fits in a segment is one framed batch, all
    /// of it applied or none; a larger one (over 8 million receipts with
    /// the default 64 MiB segments) is several, each applied or not.
    /// Otherwise one result per receipt, in order: `Ok` once that ack is
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
        let (results, lsn) = self.write_op_at(
            |st, now| st.ack_many(receipts, now),
            |(_, last)| last.unwrap_or(0),
        )?;
        if let Some(lsn) = lsn {
            self.settle(lsn)?;
        }
        Ok(results)
    }
}
