//! Handing back, at a shutdown's deadline, the jobs whose handlers are
//! still running.
//!
//! The `release` calls run on a thread of their own (`<pool>-release`),
//! which shutdown waits for until a stage deadline like the pool's other
//! threads (see [`crate::worker::threads`]), so that a backend whose
//! `release` never returns does not keep `shutdown` waiting. Once given
//! up, the thread makes no further call: the job of the call it is
//! blocked in and the jobs it had not come to are counted as settle
//! errors and named in [`crate::worker::ShutdownReport::stuck`]. Their
//! leases are no longer extended, so each runs out and the job is
//! delivered again, its attempt counted (unless the blocked call releases
//! its job when it returns).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::ErrorKind;
use crate::worker::backend::Backend;
use crate::worker::counters::Count;
use crate::worker::pool::Shared;
use crate::worker::shutdown::{BackendCall, ShutdownReport};
use crate::worker::threads::{ThreadState, Threads};

/// The error a released job records.
const WHY: &str = "the worker pool shut down before the handler finished";

/// The jobs to release and those released so far, shared by shutdown
/// and the release thread.
struct Pending<L> {
    /// Jobs not released yet, the next one last.
    left: Vec<(u64, L)>,
    /// Jobs released (the backend said yes before shutdown gave up).
    released: Vec<u64>,
}

/// Releases `jobs` (id and lease, in order) on a thread of their own,
/// waiting for it until `until`; records the jobs released in `report`,
/// and, if shutdown gave up on the thread, names it in
/// [`ShutdownReport::stuck`] with the jobs it did not release (counted
/// as settle errors). Without a thread (the OS refused one), releases
/// here, unbounded.
pub(crate) fn release_all<B: Backend>(
    shared: &Arc<Shared<B>>,
    mut jobs: Vec<(u64, B::Lease)>,
    until: Instant,
    report: &mut ShutdownReport,
) {
    if jobs.is_empty() {
        return;
    }
    jobs.reverse();
    let pending = Arc::new(Mutex::new(Pending {
        left: jobs,
        released: Vec::new(),
    }));
    let mut thread = Threads::default();
    let (s, p) = (shared.clone(), pending.clone());
    let name = format!("{}-release", shared.cfg.name);
    if thread
        .spawn(0, name, move |state| release_each(&s, &p, state))
        .is_err()
    {
        release_each(shared, &pending, &ThreadState::default());
    }
    for left in thread.stop(until, |_| true) {
        // Given up: the job of its call is counted by `give_up`; those it
        // did not come to are taken here, under the lock it takes each
        // job under, so it releases none of them.
        let mut stuck = shared.give_up(left, false);
        let skipped = std::mem::take(&mut pending.lock().left);
        for (id, _) in skipped.into_iter().rev() {
            shared.counters.add(Count::SettleErrors);
            stuck.jobs.push(id);
        }
        report.stuck.push(stuck);
    }
    report.released.append(&mut pending.lock().released);
}

/// The release thread: releases the pending jobs one by one until none
/// is left or shutdown gives up on it (`state`), counting each outcome.
///
/// The next job is taken, and each outcome counted, under the lock of
/// `pending`, with [`ThreadState::begin`] and [`ThreadState::end_with`]: once
/// shutdown has given up, the thread neither takes a job nor counts one,
/// and shutdown, taking that lock after giving up, sees every count the
/// thread made.
fn release_each<B: Backend>(
    shared: &Shared<B>,
    pending: &Mutex<Pending<B::Lease>>,
    state: &ThreadState,
) {
    loop {
        let (id, lease) = {
            let mut p = pending.lock();
            let Some(id) = p.left.last().map(|(id, _)| *id) else {
                return;
            };
            if !state.begin(BackendCall::Release, Some(id)) {
                return;
            }
            match p.left.pop() {
                Some(job) => job,
                None => return,
            }
        };
        // A backend that panics in `release` counts a settle error (the
        // job comes back when its lease expires, no longer extended): the
        // panic stops here, so the other jobs are released.
        let released = BackendCall::Release.guarded(|| shared.backend.release(&lease, WHY));
        let mut p = pending.lock();
        let counted = state.end_with(|| match released {
            Ok(()) => {
                shared.counters.add(Count::Released);
                p.released.push(id);
            }
            Err(e) if e.kind() == ErrorKind::LeaseLost => shared.counters.add(Count::Lost),
            Err(_) => shared.counters.add(Count::SettleErrors),
        });
        if counted.is_none() {
            // Given up during the call: shutdown counted the job.
            return;
        }
    }
}
