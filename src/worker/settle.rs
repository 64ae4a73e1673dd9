//! The settler: one thread per pool that makes completed jobs' acks
//! durable in batches, so that workers do not each wait for an fdatasync
//! per job.
//!
//! A worker whose handler returned `Done` hands the lease to the settler
//! and leases its next job at once (pipelining). The settler takes every
//! ack handed to it so far, records them with one
//! [`Backend::complete_batch`] (for [`crate::Queue`]: one lock, one group
//! commit) and only then counts them done. While it syncs, the workers'
//! next acks gather into the next batch.
//!
//! Promises kept:
//! * a job is counted done only once its ack is durable (as durable as
//!   [`Backend::complete`] makes it); an ack the backend refuses is counted
//!   lost or as a settle error, exactly as a direct settle would be;
//! * each worker has at most [`WINDOW`] acks handed over and not yet
//!   settled; a worker at its window waits, so nothing queues without
//!   bound;
//! * the heartbeat extends the leases of acks waiting here and of the
//!   batch being settled ([`Settler::pending`]; an ack with a result
//!   syncs `done.rec` before its ack record), and a worker at its window
//!   waits with its finished job's lease still in its slot, so a slow
//!   sync cannot let a finished job's lease expire and the job run again.
//!   Each ack keeps its job's [`Beat`], so any heartbeat thread extends
//!   it when due, not only one that might be blocked elsewhere;
//! * shutdown closes the settler after the workers stopped handing over,
//!   and the settler settles everything pending before it exits; if it is
//!   still blocked in `complete_batch` past the shutdown's deadline, it is
//!   given up ([`abandon`]): its batch and the acks queued behind it are
//!   counted as settle errors, not done, and it makes no further call;
//! * if the settler thread dies (a backend that panics in
//!   `complete_batch`), the acks it held become orphans: the heartbeat
//!   settles them on its next beat and shutdown settles any left (on a
//!   thread of its own, given up like the settler if its call blocks
//!   past the deadline: [`settle_left_orphans`]), so a
//!   finished job is neither kept leased forever nor run again (unless
//!   its lease expires first); workers settle their own acks from then on.
//!   Should the backend panic again on the orphans, they are given up
//!   (counted as settle errors; the jobs run again once their leases
//!   expire) and neither the heartbeat nor `shutdown` unwinds.

use std::panic::{catch_unwind, AssertUnwindSafe};

use parking_lot::{Condvar, Mutex};

use crate::error::ErrorKind;
use crate::worker::backend::Backend;
use crate::worker::counters::Count;
use crate::worker::heartbeat::{Beat, Kept};
use crate::worker::pool::{Active, Shared};
use crate::worker::shutdown::StuckThread;
use crate::worker::threads::{ThreadState, Threads};
use std::sync::Arc;
use std::time::Instant;

/// Most acks one worker may have handed over and not yet settled. Bounds
/// memory and how much work a crash can make redo; large enough that one
/// worker keeps a disk with ~1 ms fdatasyncs busy with big batches.
pub(crate) const WINDOW: usize = 512;

/// One ack handed over by a worker.
struct Handed<L> {
    worker: usize,
    id: u64,
    lease: L,
    /// The job's heartbeat state, carried over from its worker's slot.
    beat: Arc<Beat>,
    result: Option<Vec<u8>>,
}

impl<L: Clone> Handed<L> {
    fn kept(&self) -> Kept<L> {
        Kept {
            id: self.id,
            lease: self.lease.clone(),
            beat: self.beat.clone(),
        }
    }
}

struct State<L> {
    /// Acks handed over and not yet taken by the settler thread.
    queue: Vec<Handed<L>>,
    /// Per worker: acks handed over and not yet settled (queued or being
    /// settled).
    unsettled: Vec<usize>,
    /// Leases of the batch being settled (extended until settled).
    in_flight: Vec<Kept<L>>,
    /// Acks the settler thread held when it died, not settled yet.
    orphans: Vec<Handed<L>>,
    /// No more acks come; the settler exits once `queue` is empty.
    closing: bool,
    /// The settler thread exited (or never started): settle inline.
    gone: bool,
}

/// The hand-over point between workers and the settler thread.
pub(crate) struct Settler<L> {
    state: Mutex<State<L>>,
    /// Wakes the settler thread: acks were handed over, or closing.
    work: Condvar,
    /// Wakes workers waiting for room in their window.
    room: Condvar,
}

impl<L: Clone> Settler<L> {
    pub(crate) fn new(workers: usize) -> Settler<L> {
        Settler {
            state: Mutex::new(State {
                queue: Vec::new(),
                unsettled: vec![0; workers],
                in_flight: Vec::new(),
                orphans: Vec::new(),
                closing: false,
                gone: false,
            }),
            work: Condvar::new(),
            room: Condvar::new(),
        }
    }

    /// Hands worker `worker`'s ack of `active`'s job over. Never waits:
    /// the worker waited for room first ([`Settler::wait_room`]), and only
    /// it adds to its window. Gives the job and result back if the window
    /// is full or the settler thread is gone or closing (the caller then
    /// settles it itself).
    pub(crate) fn hand_over(
        &self,
        worker: usize,
        active: Active<L>,
        result: Option<Vec<u8>>,
    ) -> std::result::Result<(), (Active<L>, Option<Vec<u8>>)> {
        let mut st = self.state.lock();
        if st.gone || st.closing || st.unsettled[worker] >= WINDOW {
            return Err((active, result));
        }
        st.unsettled[worker] += 1;
        st.queue.push(Handed {
            worker,
            id: active.id,
            lease: active.lease,
            beat: active.beat,
            result,
        });
        if st.queue.len() == 1 {
            self.work.notify_one();
        }
        Ok(())
    }

    /// Waits until worker `worker` has room in its window (or the settler
    /// is gone), so that it can wait while its lease is still in its slot.
    pub(crate) fn wait_room(&self, worker: usize) {
        let mut st = self.state.lock();
        while st.unsettled[worker] >= WINDOW && !st.gone {
            self.room.wait(&mut st);
        }
    }

    /// The leases of acks handed over and not settled yet (queued, being
    /// settled, or orphaned), for the heartbeat to extend. At most
    /// [`WINDOW`] per worker.
    pub(crate) fn pending(&self) -> Vec<Kept<L>> {
        let st = self.state.lock();
        st.queue
            .iter()
            .chain(&st.orphans)
            .map(Handed::kept)
            .chain(st.in_flight.iter().cloned())
            .collect()
    }

    /// No more acks will be handed over; the settler thread settles what
    /// is pending and exits.
    pub(crate) fn close(&self) {
        let mut st = self.state.lock();
        st.closing = true;
        self.work.notify_all();
    }

    /// Marks the settler thread gone, waking any worker waiting for room;
    /// the acks still queued become orphans.
    fn gone(&self) {
        let mut st = self.state.lock();
        st.gone = true;
        let queued = std::mem::take(&mut st.queue);
        st.orphans.extend(queued);
        self.room.notify_all();
    }

    /// Keeps a batch whose settling was cut short (the settler thread
    /// panicked) for [`settle_orphans`].
    fn orphan(&self, batch: Vec<Handed<L>>) {
        let mut st = self.state.lock();
        st.in_flight.clear();
        st.orphans.extend(batch);
    }

    /// Takes the orphans to settle them: their leases are in flight (still
    /// extended by heartbeats, [`Settler::pending`]) until
    /// [`Settler::settled`] or [`Settler::orphan`] takes them out.
    fn take_orphans(&self) -> Vec<Handed<L>> {
        let mut st = self.state.lock();
        let batch = std::mem::take(&mut st.orphans);
        st.in_flight.extend(batch.iter().map(Handed::kept));
        batch
    }

    /// Waits for acks to settle; false once closing and all are settled.
    fn wait_work(&self) -> bool {
        let mut st = self.state.lock();
        while st.queue.is_empty() {
            if st.closing {
                return false;
            }
            self.work.wait(&mut st);
        }
        true
    }

    /// Takes the acks handed over so far (none if shutdown abandoned them
    /// meanwhile).
    fn take(&self) -> Vec<Handed<L>> {
        let mut st = self.state.lock();
        let batch = std::mem::take(&mut st.queue);
        st.in_flight = batch.iter().map(Handed::kept).collect();
        batch
    }

    /// Frees the window slots of a settled batch.
    fn settled(&self, batch: &[Handed<L>]) {
        let mut st = self.state.lock();
        st.in_flight.clear();
        for h in batch {
            st.unsettled[h.worker] -= 1;
        }
        self.room.notify_all();
    }
}

/// The settler thread: settles handed-over acks in batches until closed
/// and drained, or given up by shutdown.
pub(crate) fn run<B: Backend>(shared: &Shared<B>, state: &ThreadState) {
    // Whatever happens, workers must not wait for a thread that is gone.
    struct Gone<'a, L: Clone>(&'a Settler<L>);
    impl<L: Clone> Drop for Gone<'_, L> {
        fn drop(&mut self) {
            self.0.gone();
        }
    }
    let settler = &shared.settler;
    let _gone = Gone(settler);
    while settler.wait_work() {
        settle_batch(shared, Some(state), || settler.take());
        if state.given_up() {
            return;
        }
    }
}

/// Takes a batch of acks (`take`), records it with one
/// [`Backend::complete_batch`], counts each, and frees their window
/// slots. If the backend panics, the batch is kept as orphans (see
/// [`settle_orphans`]) and the panic goes on.
///
/// `state`, the calling thread's: once shutdown has given up on it,
/// nothing is taken (shutdown counts the acks left where they are), and a
/// call that returns after that counts nothing (shutdown counted it). The
/// batch is taken, and its outcome counted, in steps that shutdown waits
/// out before giving up, so the thread never holds acks shutdown does
/// not know of.
fn settle_batch<B: Backend>(
    shared: &Shared<B>,
    state: Option<&ThreadState>,
    take: impl FnOnce() -> Vec<Handed<B::Lease>>,
) {
    struct Orphaned<'a, L: Clone>(&'a Settler<L>, Option<Vec<Handed<L>>>);
    impl<L: Clone> Drop for Orphaned<'_, L> {
        fn drop(&mut self) {
            if let Some(batch) = self.1.take() {
                self.0.orphan(batch);
            }
        }
    }
    let settler = &shared.settler;
    let batch = match state {
        Some(st) => match st.begin_batch_with(take, |h| h.id) {
            Some(batch) => batch,
            None => return,
        },
        None => take(),
    };
    if batch.is_empty() {
        return;
    }
    let mut guard = Orphaned(settler, Some(batch));
    let batch = guard.1.as_ref().expect("the batch is held until settled");
    let items: Vec<(&B::Lease, Option<&[u8]>)> = batch
        .iter()
        .map(|h| (&h.lease, h.result.as_deref()))
        .collect();
    let called = catch_unwind(AssertUnwindSafe(|| shared.backend.complete_batch(&items)));
    drop(items);
    let results = match called {
        Ok(results) => results,
        Err(panic) => {
            // Kept as orphans in the step that ends the call, unless
            // shutdown gave up on this thread during it (and counted them).
            let batch = guard.1.take();
            let orphan = || {
                if let Some(batch) = batch {
                    settler.orphan(batch);
                }
            };
            match state {
                Some(st) => {
                    st.end_with(orphan);
                }
                None => orphan(),
            }
            std::panic::resume_unwind(panic)
        }
    };
    debug_assert_eq!(results.len(), batch.len());
    let batch = guard.1.take().expect("the batch is held until settled");
    let count = || {
        for i in 0..batch.len() {
            let result = match results.get(i) {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(e.kind()),
                None => Err(ErrorKind::Io),
            };
            crate::worker::run::count_settled(&shared.counters, result, Count::Done);
        }
        // Counted before the window slots are freed: once nothing is
        // unsettled, the counters are exact.
        settler.settled(&batch);
    };
    match state {
        Some(st) => {
            // `None`: given up by shutdown during the call, which counted
            // the acks.
            st.end_with(count);
        }
        None => count(),
    }
}

/// Counts acks that were never recorded as settle errors (not done: each
/// job runs again once its lease runs out) and frees their window slots.
fn give_up<L: Clone>(shared: &Shared<impl Backend<Lease = L>>, acks: &[Handed<L>]) {
    for _ in acks {
        crate::worker::run::count_settled(&shared.counters, Err(ErrorKind::Io), Count::Done);
    }
    shared.settler.settled(acks);
}

/// Settles the acks a dead settler thread left (for the heartbeat, and
/// for shutdown once the settler is joined). An ack the dead thread had
/// recorded already is refused now and counted lost.
///
/// If the backend panics again, the panic stops here: it would otherwise
/// kill the heartbeat (whose running jobs' leases would then lapse) or
/// unwind out of `shutdown`. The acks are given up, counted as settle
/// errors: their leases are no longer extended, and each job runs again
/// once its lease expires (at least once, as for any ack that fails).
pub(crate) fn settle_orphans<B: Backend>(shared: &Shared<B>, state: Option<&ThreadState>) {
    let take = || shared.settler.take_orphans();
    let settled = catch_unwind(AssertUnwindSafe(|| settle_batch(shared, state, take)));
    if settled.is_err() {
        // `settle_batch` kept the batch as orphans again when it unwound.
        give_up(shared, &shared.settler.take_orphans());
    }
}

/// Settles the acks a dead settler thread left, for shutdown: on a
/// thread of their own (`<pool>-orphans`), waited for until `until`. If
/// it is still blocked in `complete_batch` then, it is given up (see
/// [`abandon`]): its acks are counted as settle errors, not done, it makes
/// no further call, and it is returned to be named in
/// [`crate::worker::ShutdownReport::stuck`]. Without a thread (the OS
/// refused one), settles here, unbounded.
pub(crate) fn settle_left_orphans<B: Backend>(
    shared: &Arc<Shared<B>>,
    until: Instant,
) -> Vec<StuckThread> {
    if shared.settler.state.lock().orphans.is_empty() {
        return Vec::new();
    }
    let mut thread = Threads::default();
    let s = shared.clone();
    let name = format!("{}-orphans", shared.cfg.name);
    if thread
        .spawn(0, name, move |state| settle_orphans(&s, Some(state)))
        .is_err()
    {
        settle_orphans(shared, None);
    }
    let stuck = thread.stop(until, |_| true);
    stuck
        .into_iter()
        .map(|left| {
            let mut stuck = shared.give_up(left, false);
            stuck.jobs.extend(abandon(shared));
            stuck
        })
        .collect()
}

/// Shutdown gives up on a settler thread blocked in the backend: the acks
/// queued behind its call and any orphans are counted as settle errors
/// (not done), workers stop waiting for room and settle nothing more
/// through it. Returns their jobs. The acks of the blocked call are not
/// among them: shutdown counts those with the call it gave up on.
pub(crate) fn abandon<B: Backend>(shared: &Shared<B>) -> Vec<u64> {
    let acks = {
        let mut st = shared.settler.state.lock();
        st.closing = true;
        st.gone = true;
        let mut acks = std::mem::take(&mut st.queue);
        acks.append(&mut st.orphans);
        shared.settler.room.notify_all();
        shared.settler.work.notify_all();
        acks
    };
    give_up(shared, &acks);
    acks.iter().map(|h| h.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by review: orphans taken to be settled (the settler thread
    /// had died) left `pending`, so no heartbeat extended their leases
    /// while a slow `complete_batch` settled them, and they could run
    /// again.
    #[test]
    fn orphans_being_settled_stay_pending_until_settled() {
        let settler: Settler<u64> = Settler::new(1);
        {
            let mut st = settler.state.lock();
            st.unsettled[0] = 2;
            for id in [7, 8] {
                st.queue.push(Handed {
                    worker: 0,
                    id,
                    lease: id * 10,
                    beat: crate::worker::heartbeat::Beat::new(None),
                    result: None,
                });
            }
        }
        settler.gone();
        let ids = |s: &Settler<u64>| s.pending().iter().map(|k| k.id).collect::<Vec<_>>();
        assert_eq!(ids(&settler), vec![7, 8], "orphans are pending");
        let batch = settler.take_orphans();
        assert_eq!(batch.len(), 2);
        assert_eq!(ids(&settler), vec![7, 8], "and stay so while settled");
        assert!(settler.take_orphans().is_empty());
        assert_eq!(
            ids(&settler),
            vec![7, 8],
            "a second, empty take changes nothing"
        );
        settler.settled(&batch);
        assert!(ids(&settler).is_empty());
    }
}
