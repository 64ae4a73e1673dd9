//! Group commit, and the one place that syncs the log.
//!
//! Every `fdatasync` of a log segment goes through [`Committer::wait`]:
//! the group commit of `enqueue`/`ack`, rotation, dead-lettering, reclaim,
//! redrive, purge, `sync()` and recovery. So at most one sync of the log is
//! in flight, and no path can consume a writeback error that another then
//! misses (Linux reports one once per open file, then clears it: two
//! syncing paths could publish a durable LSN for dropped pages).
//!
//! A caller that needs LSN `n` durable either finds it already durable,
//! waits while another caller's sync is running, or becomes the leader:
//! it syncs the sync target (the active segment and the last LSN written
//! to it, read together under the target lock, so never an LSN of a newer
//! segment) with no other lock held, publishes the new durable LSN (or the
//! failure) and wakes every waiter.
//!
//! Rotation syncs nothing under the queue lock: it hands the segment it
//! sealed to the committer as a *pending seal*. The next leader syncs, in
//! this order, the pending seal, the directory (the new segment's name),
//! then the new segment (its header and records), and publishes only after
//! all three. So a record of the new segment is never published before
//! every record of the sealed one is durable. A seal all of whose records
//! are durable already, with nothing else written to it since, is not
//! pending at all (see [`Committer::set_new_target`]). Rotation keeps at
//! most one seal pending: it leaves a segment only after a leader has
//! synced that segment as the target at least once
//! ([`Committer::synced_target`]), so at any moment every segment but the
//! newest two is durable, and the newest but one has a durable name and
//! header (the rule recovery relies on, see `recovery.rs` and
//! docs/format.md, "Torn across a rotation").
//!
//! A failed sync is never retried (after a
//! failed fsync the kernel may have dropped the dirty pages): the failure
//! is latched before anything is published, every waiter gets it, nothing
//! is published after it, and the queue is poisoned. A leader that panics
//! latches a failure too, so no waiter waits for ever.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::error::{Error, ErrorKind, Result};
use crate::segment::Segment;
use crate::vfs::Vfs;

#[derive(Debug, Default)]
struct CommitState {
    syncing: bool,
    failure: Option<String>,
    /// Callers waiting for the sync in flight, parked
    /// ([`Committer::park_until_woken`]); the leader wakes each of them
    /// when it is done, and their number, less the ones aside, is the
    /// count of callers that sync served ([`Committer::gather`]).
    parked: Vec<std::thread::Thread>,
    /// How many of `parked` wait [`Waiter::Aside`].
    parked_aside: usize,
}

/// Who waits for a sync, for the count of callers a sync served, which
/// tells the next leader how many records to wait for
/// ([`Committer::gather`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// A caller that wrote the record it waits for, and will likely write
    /// the next one soon: an enqueue, an ack, a rotation, `Queue::sync`.
    Appender,
    /// A thread of the queue's own that writes no record: the upkeep
    /// thread (a seal, a retired segment), the checkpoint writer, close.
    /// Counted as a caller, it would make the next two leaders wait, up
    /// to a millisecond each, for a record that never comes: every
    /// rotation under `Durability::Sync` did (docs/benchmarks.md,
    /// "Rotation under Sync: the two enqueues after it").
    Aside,
}

/// What the next sync covers: the active segment (the last LSN written to
/// it is `Committer::written`).
#[derive(Debug, Default)]
struct Target {
    seg: Option<Arc<Segment>>,
    /// The segment rotation sealed, not yet synced: synced by the next
    /// leader before anything else, then its descriptor is closed.
    sealed: Option<Arc<Segment>>,
    /// A directory whose new entry (the target segment's name) is not yet
    /// durable: synced by the next leader before the segment itself.
    dir: Option<(Arc<dyn Vfs>, PathBuf)>,
}

/// The group-commit coordinator.
#[derive(Debug, Default)]
pub struct Committer {
    state: Mutex<CommitState>,
    /// Counts the times parked callers were woken (a sync ended or a
    /// failure was latched): a parked caller returns from its park once it
    /// changed, and a spurious wake-up parks it again.
    woken_gen: AtomicU64,
    /// A failure is latched (`CommitState::failure` holds its message):
    /// read by woken callers without the state lock.
    failed: std::sync::atomic::AtomicBool,
    target: Mutex<Target>,
    /// The last LSN written to the target segment. Stored by the log after
    /// each append (no lock on the hot path); read by the leader with the
    /// target lock held. A record of a newer segment is appended only after
    /// `set_target` released that lock, so a leader holding it never reads
    /// an LSN that its segment does not hold.
    written: AtomicU64,
    durable: AtomicU64,
    syncs: AtomicU64,
    /// The id of the newest segment a leader synced as the target (with
    /// the seal and the directory before it).
    synced_target: AtomicU64,
    /// Callers that the last two syncs woke, the leader included (the
    /// older count in the high half): how many records the next leader
    /// waits for ([`Committer::gather`]).
    woken: AtomicU64,
    /// How long the last sync took, in nanoseconds: the most a leader
    /// waits for callers before it syncs.
    sync_nanos: AtomicU64,
    /// Test hook: the next leader panics inside its sync.
    #[cfg(test)]
    panic_next_sync: std::sync::atomic::AtomicBool,
}

/// Latches a failure if the leader unwinds out of its sync.
struct LeaderGuard<'a> {
    commit: &'a Committer,
    done: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut st = self.commit.state.lock();
            st.syncing = false;
            self.commit
                .latch(&mut st, "the group-commit leader panicked".to_string());
            let parked = self.commit.take_parked(&mut st);
            drop(st);
            wake(parked);
        }
    }
}

impl Committer {
    /// A coordinator whose durable point is `lsn`.
    pub fn new(lsn: u64) -> Committer {
        Committer {
            durable: AtomicU64::new(lsn),
            ..Committer::default()
        }
    }

    /// The highest LSN known durable.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Log fdatasyncs completed since open.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Makes `seg` the file later syncs cover, with `written` the last LSN
    /// in the log. The log calls this at open, where `seg` (the active
    /// segment), its name and everything before it are durable.
    pub fn set_target(&self, seg: Arc<Segment>, written: u64) {
        let mut t = self.target.lock();
        self.synced_target
            .fetch_max(u64::from(seg.id), Ordering::AcqRel);
        t.seg = Some(seg);
        self.written.fetch_max(written, Ordering::Release);
    }

    /// As [`Committer::set_target`] at rotation: `seg` was just renamed
    /// into `dir` (its name and header are not yet durable) and `sealed`,
    /// the previous target, may hold records not yet durable. The next
    /// leader syncs `sealed`, then the directory, then `seg`, so nothing
    /// in `seg` is published before all of them are durable.
    ///
    /// The caller keeps one seal pending at most: a leader must have
    /// synced `sealed` as the target (see [`Committer::synced_target`]),
    /// which also synced the seal before it.
    ///
    /// `sealed_untouched` says that nothing but records (LSN `written` the
    /// last) was written to `sealed` since a leader last synced it, bar
    /// zeros over bytes that read as zeros anyway. Then, if `written` is
    /// already durable, that sync covered every byte of it and the seal
    /// is not synced again: under `Durability::Sync` it saves the
    /// rotating commit a `fdatasync` of a clean file (a cache flush, about
    /// a normal commit's time, docs/benchmarks.md).
    pub fn set_new_target(
        &self,
        seg: Arc<Segment>,
        sealed: Arc<Segment>,
        written: u64,
        sealed_untouched: bool,
        vfs: Arc<dyn Vfs>,
        dir: PathBuf,
    ) {
        let mut t = self.target.lock();
        debug_assert!(
            self.synced_target() >= u64::from(sealed.id),
            "rotation away from segment {} before it was synced once",
            sealed.id
        );
        // A seal still pending here was covered by the sync of `sealed`
        // as target (which ran after it): its records are durable.
        let pending = if sealed_untouched && self.durable() >= written {
            sealed.release_fd();
            t.sealed.take()
        } else {
            t.sealed.replace(sealed)
        };
        if let Some(old) = pending {
            old.release_fd();
        }
        t.seg = Some(seg);
        t.dir = Some((vfs, dir));
        self.written.fetch_max(written, Ordering::Release);
    }

    /// The id of the newest segment a leader synced as the target, with
    /// every seal before it: rotation may leave a segment only once this
    /// reached its id.
    pub fn synced_target(&self) -> u64 {
        self.synced_target.load(Ordering::Acquire)
    }

    /// Records that LSN `lsn` was written to the target segment.
    pub fn written(&self, lsn: u64) {
        self.written.fetch_max(lsn, Ordering::Release);
    }

    /// Whether a failure is latched.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Latches a failure: every waiter and later caller gets an error, and
    /// the durable LSN never moves again.
    pub fn fail(&self, message: String) {
        let mut st = self.state.lock();
        self.latch(&mut st, message);
        let parked = self.take_parked(&mut st);
        drop(st);
        wake(parked);
    }

    /// Latches `message` as the failure unless one is latched already.
    fn latch(&self, st: &mut CommitState, message: String) {
        st.failure.get_or_insert(message);
        self.failed.store(true, Ordering::Release);
    }

    /// The parked callers, to be woken once the state lock is released
    /// ([`wake`]); they return from their park from now on.
    fn take_parked(&self, st: &mut CommitState) -> Vec<std::thread::Thread> {
        self.woken_gen.fetch_add(1, Ordering::AcqRel);
        st.parked_aside = 0;
        std::mem::take(&mut st.parked)
    }

    /// Parks the caller, registered in `st.parked`, until the leader of
    /// the sync in flight woke it (or a failure did). Returns without the
    /// state lock: a woken caller whose record the sync covered returns
    /// at once, without queueing for the lock behind the others it woke.
    fn park_until_woken(&self, mut st: MutexGuard<'_, CommitState>, who: Waiter) {
        let gen = self.woken_gen.load(Ordering::Acquire);
        st.parked.push(std::thread::current());
        st.parked_aside += usize::from(who == Waiter::Aside);
        drop(st);
        while self.woken_gen.load(Ordering::Acquire) == gen {
            std::thread::park();
        }
    }

    fn failure_error(msg: &str) -> Error {
        Error::new(
            ErrorKind::Io,
            format!(
                "group commit failed, nothing after the last durable record is acknowledged: {msg}"
            ),
        )
    }

    /// Returns once `lsn` is durable, syncing the log (as leader) or
    /// waiting for the sync in flight: for the caller that wrote it.
    pub fn wait(&self, lsn: u64) -> Result<()> {
        self.wait_as(lsn, Waiter::Appender)
    }

    /// [`Committer::wait`] for `who`.
    pub fn wait_as(&self, lsn: u64, who: Waiter) -> Result<()> {
        self.wait_until(|| self.durable() >= lsn, who)
    }

    /// Returns once segment `id` (the target) was synced by a leader, with
    /// the seal and the directory before it: rotation calls this before
    /// it leaves segment `id`, so at most one seal is ever pending.
    pub fn wait_synced(&self, id: u32, who: Waiter) -> Result<()> {
        // Never a segment past the target (no sync could reach it).
        let reachable = |id: u32| self.target.lock().seg.as_ref().map_or(0, |t| t.id.min(id));
        self.wait_until(|| self.synced_target() >= u64::from(reachable(id)), who)
    }

    /// Returns once `done()` holds, syncing the target (as leader) or
    /// waiting for the sync in flight.
    fn wait_until(&self, done: impl Fn() -> bool, who: Waiter) -> Result<()> {
        loop {
            // Also where a woken caller comes back: most find their record
            // durable and return without the state lock.
            if done() {
                return Ok(());
            }
            let mut st = self.state.lock();
            if let Some(msg) = &st.failure {
                return Err(Self::failure_error(msg));
            }
            if done() {
                return Ok(());
            }
            if st.syncing {
                self.park_until_woken(st, who);
                continue;
            }
            st.syncing = true;
            drop(st);
            let mut guard = LeaderGuard {
                commit: self,
                done: false,
            };
            self.gather(self.durable());
            let started = Instant::now();
            let result = self.sync_target();
            let mut st = self.state.lock();
            guard.done = true;
            st.syncing = false;
            match &result {
                // Published only if no failure was latched meanwhile, and
                // before any waiter is woken.
                Ok(upto) if st.failure.is_none() => {
                    let callers =
                        st.parked.len() - st.parked_aside + usize::from(who == Waiter::Appender);
                    self.note_sync(callers as u64, started.elapsed());
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                    self.durable.fetch_max(*upto, Ordering::AcqRel);
                }
                Ok(_) => {}
                Err(err) => self.latch(&mut st, err.to_string()),
            }
            let parked = self.take_parked(&mut st);
            drop(st);
            wake(parked);
            result?;
        }
    }

    /// Before a sync: lets the callers that the last sync woke append, so
    /// this one covers them too. The leader is usually the first of them
    /// back; syncing at once, it would cover itself and a few, and the
    /// next sync the rest (64 Sync producers on 2 vCPUs: about 32 jobs per
    /// fdatasync, where one could cover 64). So it yields its CPU to them
    /// while fewer records wait than the larger of the last two counts of
    /// callers woken, for at most [`GATHER_SYNCS`] times as long as the
    /// last sync took ([`MAX_GATHER`] at most; [`gather_limit`]). A lone
    /// caller (one woken: itself) never waits: its own record is the one
    /// it waits for. (Waiting for 3/4 of them, as before 7b0824e, left
    /// about a quarter of the callers to the next sync; waiting no longer
    /// than one sync, as before 2026-12-02, covered 41-44 of 64 once the
    /// syncs got shorter; docs/benchmarks.md, "The leader waits for all
    /// the callers" and "Gathering for three syncs".)
    fn gather(&self, durable: u64) {
        let pending = || self.written.load(Ordering::Acquire).saturating_sub(durable);
        let want = gather_target(self.woken.load(Ordering::Relaxed));
        if pending() >= want {
            // Nobody to wait for (a lone caller's `want` is 0). Until
            // 2026-12-02 the leader yielded once even then: a system call
            // per sync, and the rest of a time slice handed to any thread
            // runnable on its CPU (the checkpoint thread's layout, say).
            return;
        }
        let limit = gather_limit(self.sync_nanos.load(Ordering::Relaxed));
        let start = Instant::now();
        loop {
            std::thread::yield_now();
            if pending() >= want || start.elapsed() >= limit {
                break;
            }
        }
    }

    /// Records a sync that woke `callers` and took `took`.
    fn note_sync(&self, callers: u64, took: Duration) {
        let last = self.woken.load(Ordering::Relaxed) & u64::from(u32::MAX);
        let callers = callers.min(u64::from(u32::MAX));
        self.woken.store(last << 32 | callers, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sync_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Syncs the target; returns the LSN it covered.
    fn sync_target(&self) -> Result<u64> {
        #[cfg(test)]
        if self.panic_next_sync.swap(false, Ordering::SeqCst) {
            panic!("injected panic in the group-commit leader");
        }
        let (seg, upto, dir, sealed) = {
            let mut t = self.target.lock();
            let (dir, sealed) = (t.dir.take(), t.sealed.take());
            (
                t.seg.clone(),
                self.written.load(Ordering::Acquire),
                dir,
                sealed,
            )
        };
        if let Some(sealed) = sealed {
            // Rotation's sealing sync, off the queue lock. Its descriptor
            // is closed only after it (a sealed segment holds none).
            sealed.sync_data()?;
            sealed.release_fd();
        }
        if let Some((vfs, dir)) = dir {
            // A failure is latched like a failed fdatasync: the segment's
            // name may not survive a power cut, so nothing in it may be
            // published.
            vfs.sync_dir(&dir)
                .map_err(|e| Error::io("syncing the log directory after rotation", &dir, e))?;
        }
        if let Some(seg) = seg {
            seg.sync_data()?;
            self.synced_target
                .fetch_max(u64::from(seg.id), Ordering::AcqRel);
        }
        Ok(upto)
    }
}

/// Wakes callers parked by [`Committer::park_until_woken`].
fn wake(parked: Vec<std::thread::Thread>) {
    for t in parked {
        t.unpark();
    }
}

/// The longest a leader waits for callers before it syncs.
const MAX_GATHER: Duration = Duration::from_millis(1);

/// How many times the last sync's duration a leader may wait for callers.
/// Waking 64 threads on 2 vCPUs takes longer than a short `fdatasync`:
/// one sync's worth of waiting covered 41-44 of 64 Sync producers per
/// sync, three cover 57-61 at the same rate and mean latency
/// (docs/benchmarks.md, "Gathering for three syncs"). The wait ends as
/// soon as the callers are in, so it costs time only when they are slow.
const GATHER_SYNCS: u64 = 3;

/// The longest a leader waits for callers after a sync of `sync_nanos`.
fn gather_limit(sync_nanos: u64) -> Duration {
    Duration::from_nanos(sync_nanos.saturating_mul(GATHER_SYNCS)).min(MAX_GATHER)
}

/// How many pending records a leader waits for, given the callers the
/// last two syncs woke (packed as in `Committer::woken`): the larger
/// count, or none after syncs that woke only their leader.
fn gather_target(woken: u64) -> u64 {
    let larger = (woken >> 32).max(woken & u64::from(u32::MAX));
    if larger <= 1 {
        0
    } else {
        larger
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Spare;
    use crate::vfs::{Fault, FaultOp, SimFs};
    use std::path::Path;

    fn committer(fs: &SimFs) -> Arc<Committer> {
        let dir = Path::new("/q");
        fs.create_dir_all(dir, 0o700).unwrap();
        let seg = Segment::create(
            fs,
            dir,
            Spare::prepare(fs, dir, 1, 1 << 16, 0o600, 0).unwrap(),
            1,
            1,
        )
        .unwrap();
        let c = Arc::new(Committer::new(0));
        c.set_target(Arc::new(seg), 0);
        c
    }

    #[test]
    fn waiters_share_syncs() {
        let fs = SimFs::new();
        let c = committer(&fs);
        let written = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, written) = (c.clone(), written.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let lsn = {
                            let mut w = written.lock();
                            *w += 1;
                            c.written(*w);
                            *w
                        };
                        c.wait(lsn).unwrap();
                        assert!(c.durable() >= lsn);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.durable(), 800);
        assert!(c.syncs() <= 800);
        assert_eq!(fs.max_syncs_in_flight(), 1);
    }

    #[test]
    fn a_leader_waits_for_the_last_batches_and_a_few_syncs_at_most() {
        assert_eq!(gather_limit(0), Duration::ZERO, "no sync yet: no wait");
        assert_eq!(gather_limit(200_000), Duration::from_micros(600));
        assert_eq!(gather_limit(u64::MAX), MAX_GATHER, "never past the cap");
        assert_eq!(gather_target(0), 0, "no sync yet: no wait");
        assert_eq!(gather_target(1 << 32 | 1), 0, "a lone caller never waits");
        assert_eq!(gather_target(1 << 32 | 2), 2, "two callers: both");
        assert_eq!(gather_target(64 << 32 | 5), 64, "the larger batch counts");
        assert_eq!(gather_target(5 << 32 | 64), 64);
        let fs = SimFs::new();
        let c = committer(&fs);
        // The last syncs woke 64 callers and took an hour: a leader alone
        // with one record still syncs, after MAX_GATHER at most.
        c.woken.store(64 << 32 | 64, Ordering::Relaxed);
        c.sync_nanos.store(3_600_000_000_000, Ordering::Relaxed);
        c.written(1);
        c.wait(1).unwrap();
        assert_eq!(c.durable(), 1);
        assert_eq!(
            c.woken.load(Ordering::Relaxed),
            64 << 32 | 1,
            "it woke itself"
        );
    }

    /// Leads a sync of LSN 1, held by paused syncs, with a second caller
    /// waiting as `who` behind it; returns how many callers the sync
    /// counted as served.
    fn callers_counted_beside(who: Waiter) -> u64 {
        let fs = SimFs::new();
        let c = committer(&fs);
        c.written(1);
        fs.pause_syncs(true);
        let leader = {
            let c = c.clone();
            std::thread::spawn(move || c.wait(1))
        };
        while fs.paused_syncs() == 0 {
            std::thread::yield_now();
        }
        let other = {
            let c = c.clone();
            std::thread::spawn(move || c.wait_as(1, who))
        };
        while c.state.lock().parked.is_empty() {
            std::thread::yield_now();
        }
        fs.pause_syncs(false);
        leader.join().unwrap().unwrap();
        other.join().unwrap().unwrap();
        c.woken.load(Ordering::Relaxed) & u64::from(u32::MAX)
    }

    #[test]
    fn a_thread_that_writes_nothing_is_not_waited_for_by_the_next_leader() {
        let two = callers_counted_beside(Waiter::Appender);
        assert_eq!(two, 2, "an appender parked behind the leader counts");
        assert_eq!(gather_target(two), 2);
        // The upkeep thread waiting for a rotation's seal, say: counted, it
        // made the next two leaders yield for a record nobody writes.
        let one = callers_counted_beside(Waiter::Aside);
        assert_eq!(one, 1, "only the leader counts");
        assert_eq!(gather_target(one), 0, "a lone caller never waits");
    }

    #[test]
    fn a_panicking_leader_does_not_leave_waiters_waiting() {
        let fs = SimFs::new();
        let c = committer(&fs);
        c.written(1);
        c.panic_next_sync.store(true, Ordering::SeqCst);
        let leader = {
            let c = c.clone();
            std::thread::spawn(move || c.wait(1))
        };
        assert!(leader.join().is_err(), "the leader panicked");
        // Before: `syncing` stayed set and this waited for ever.
        let err = c.wait(1).unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        assert_eq!(c.durable(), 0);
    }

    /// Rotates `c` from its target into a new segment 2 of `fs`, the last
    /// record of the sealed segment being LSN `written`; returns the
    /// sealed segment's path.
    fn rotate(fs: &SimFs, c: &Committer, written: u64, untouched: bool) -> PathBuf {
        let dir = Path::new("/q");
        let sealed = c.target.lock().seg.clone().expect("a target");
        let spare = Spare::prepare(fs, dir, 2, 1 << 16, 0o600, 0).unwrap();
        let seg = Arc::new(spare.install(fs, dir, written + 1, 1).unwrap());
        let path = sealed.path.clone();
        let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
        c.set_new_target(seg, sealed, written, untouched, vfs, dir.to_path_buf());
        path
    }

    /// Makes every sync of the file at `path` fail from now on.
    fn fail_syncs_of(fs: &SimFs, path: &Path) {
        fs.faults_only_on(Some(path)).unwrap();
        fs.set_fault(Some(Fault {
            op: FaultOp::Sync,
            at: fs.op_count(FaultOp::Sync),
            forever: true,
            kind: std::io::ErrorKind::Other,
        }));
    }

    #[test]
    fn a_seal_whose_records_are_all_durable_is_not_synced_again() {
        let fs = SimFs::new();
        let c = committer(&fs);
        c.written(1);
        c.wait(1).unwrap();
        let sealed = rotate(&fs, &c, 1, true);
        fail_syncs_of(&fs, &sealed);
        let syncs = fs.syncs();
        c.written(2);
        c.wait(2).unwrap();
        assert_eq!(fs.syncs() - syncs, 2, "the directory and the new segment");
    }

    #[test]
    fn a_seal_is_synced_when_a_record_or_a_residue_is_not_durable() {
        for (written, untouched) in [(2, true), (1, false)] {
            let fs = SimFs::new();
            let c = committer(&fs);
            c.written(1);
            c.wait(1).unwrap();
            // Record 2 written to the sealed segment and not synced yet,
            // or a failed write's residue zeroed there since the sync.
            c.written(written);
            let sealed = rotate(&fs, &c, written, untouched);
            fail_syncs_of(&fs, &sealed);
            c.written(written + 1);
            let err = c.wait(written + 1).unwrap_err();
            assert!(err.to_string().contains("fault"), "{err}");
            assert_eq!(c.durable(), 1, "nothing after the seal published");
        }
    }

    #[test]
    fn a_failure_reaches_every_waiter_and_sticks() {
        let fs = SimFs::new();
        let c = committer(&fs);
        fs.kernel_sync_errors(true);
        fs.set_fault(Some(Fault {
            op: FaultOp::Sync,
            at: fs.op_count(FaultOp::Sync),
            forever: false,
            kind: std::io::ErrorKind::Other,
        }));
        c.written(1);
        let err = c.wait(1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        // The kernel cleared the error: the next fdatasync would succeed,
        // but nothing may be published after the failure.
        c.written(2);
        let later = c.wait(2).unwrap_err();
        assert_eq!(later.kind(), ErrorKind::Io);
        assert!(later.to_string().contains("fault"), "{later}");
        assert_eq!(c.durable(), 0);
    }
}
