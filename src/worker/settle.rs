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
//!   batch being settled ([`Settler::pending_leases`]; an ack with a
//!   result syncs `done.rec` before its ack record), and a worker at its
//!   window waits with its finished job's lease still in its slot, so a
//!   slow sync cannot let a finished job's lease expire and the job run
//!   again;
//! * shutdown closes the settler after the workers stopped handing over,
//!   and the settler settles everything pending before it exits.

use parking_lot::{Condvar, Mutex};

use crate::worker::backend::Backend;
use crate::worker::counters::Count;
use crate::worker::pool::Shared;

/// Most acks one worker may have handed over and not yet settled. Bounds
/// memory and how much work a crash can make redo; large enough that one
/// worker keeps a disk with ~1 ms fdatasyncs busy with big batches.
pub(crate) const WINDOW: usize = 512;

/// One ack handed over by a worker.
struct Handed<L> {
    worker: usize,
    lease: L,
    result: Option<Vec<u8>>,
}

struct State<L> {
    /// Acks handed over and not yet taken by the settler thread.
    queue: Vec<Handed<L>>,
    /// Per worker: acks handed over and not yet settled (queued or being
    /// settled).
    unsettled: Vec<usize>,
    /// Leases of the batch being settled (extended until settled).
    in_flight: Vec<L>,
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
                closing: false,
                gone: false,
            }),
            work: Condvar::new(),
            room: Condvar::new(),
        }
    }

    /// Hands worker `worker`'s ack over, waiting while the worker has
    /// [`WINDOW`] acks unsettled. Gives the ack back if the settler
    /// thread is gone (the caller then settles it itself).
    pub(crate) fn hand_over(
        &self,
        worker: usize,
        lease: L,
        result: Option<Vec<u8>>,
    ) -> std::result::Result<(), (L, Option<Vec<u8>>)> {
        let mut st = self.state.lock();
        while st.unsettled[worker] >= WINDOW && !st.gone {
            self.room.wait(&mut st);
        }
        if st.gone || st.closing {
            return Err((lease, result));
        }
        st.unsettled[worker] += 1;
        st.queue.push(Handed {
            worker,
            lease,
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

    /// The leases of acks handed over and not yet taken for settling, for
    /// the heartbeat to extend.
    pub(crate) fn pending_leases(&self) -> Vec<L> {
        let st = self.state.lock();
        st.queue
            .iter()
            .map(|h| h.lease.clone())
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

    /// Marks the settler thread gone, waking any worker waiting for room.
    fn gone(&self) {
        let mut st = self.state.lock();
        st.gone = true;
        self.room.notify_all();
    }

    /// Waits for acks to settle; `None` once closing and all are settled.
    fn take(&self) -> Option<Vec<Handed<L>>> {
        let mut st = self.state.lock();
        while st.queue.is_empty() {
            if st.closing {
                return None;
            }
            self.work.wait(&mut st);
        }
        let batch = std::mem::take(&mut st.queue);
        st.in_flight = batch.iter().map(|h| h.lease.clone()).collect();
        Some(batch)
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
/// and drained.
pub(crate) fn run<B: Backend>(shared: &Shared<B>) {
    // Whatever happens, workers must not wait for a thread that is gone.
    struct Gone<'a, L: Clone>(&'a Settler<L>);
    impl<L: Clone> Drop for Gone<'_, L> {
        fn drop(&mut self) {
            self.0.gone();
        }
    }
    let settler = &shared.settler;
    let _gone = Gone(settler);
    while let Some(batch) = settler.take() {
        let items: Vec<(&B::Lease, Option<&[u8]>)> = batch
            .iter()
            .map(|h| (&h.lease, h.result.as_deref()))
            .collect();
        let results = shared.backend.complete_batch(&items);
        debug_assert_eq!(results.len(), batch.len());
        for i in 0..batch.len() {
            let result = match results.get(i) {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(e.kind()),
                None => Err(crate::error::ErrorKind::Io),
            };
            crate::worker::run::count_settled(&shared.counters, result, Count::Done);
        }
        // Counted before the window slots are freed: once nothing is
        // unsettled, the counters are exact.
        settler.settled(&batch);
    }
}

/// For the heartbeat: extends the leases of jobs whose handler finished
/// and whose ack waits in the settler, or a slow sync could let their
/// leases expire and the jobs run again. An extension refused because the
/// ack landed meanwhile is expected and not counted.
pub(crate) fn extend_pending<B: Backend>(shared: &Shared<B>) {
    for lease in shared.settler.pending_leases() {
        if shared.backend.extend(&lease, shared.cfg.visibility).is_ok() {
            shared.counters.add(Count::Extended);
        }
    }
}
