//! Extends the leases of running handlers, and of finished jobs whose
//! acks wait in the settler, so a job is not handed to a second worker
//! while the first still runs or settles it.
//!
//! One extension can block for as long as its backend takes (a stalled
//! disk sync, a slow network), and the backend bounds that, not the pool:
//! a blocking call cannot be cancelled. So that one such call does not
//! hold up the others' leases, a pool runs a small fixed number of
//! heartbeat threads ([`MAX_HEARTBEAT_THREADS`], at most one per worker;
//! see [`crate::worker::heartbeat_threads`]) over the same leases: each
//! lease is claimed by one thread at a time (one extension in flight per
//! lease, no queue), and every thread takes the leases extended longest
//! ago (nearest to expiry) first, running ones and pending acks alike.
//!
//! The number of threads is not raised when they all block: a backend
//! whose extensions all stall would only block more threads, without
//! bound. Instead, the pool says what it can no longer vouch for. A lease
//! lasts a visibility timeout from when it was last known fresh (taken,
//! or its last successful extension sent); once that much time has
//! passed without a successful extension, whether its extension is
//! blocked, failing, or not even started because every heartbeat thread
//! is blocked elsewhere, the lease may have run out and another worker
//! may run the job. Its handler sees that in
//! [`crate::worker::JobContext::lease_lost`], which reads it itself and
//! needs no heartbeat thread that is not blocked, and the heartbeat
//! threads mark it lost and stop extending it. A pending ack's lease that
//! runs out has no handler to tell: it is still extended while it waits
//! (the extension is fenced, so it only succeeds if the lease is still
//! this worker's), and its ack is counted lost if refused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::clock::{instant_ms, ms};
use crate::error::ErrorKind;
use crate::worker::backend::Backend;
use crate::worker::counters::Count;
use crate::worker::pool::Shared;
use crate::worker::shutdown::BackendCall;
use crate::worker::threads::ThreadState;

/// Most heartbeat threads a pool runs (fewer with fewer workers): as
/// many extensions can block at once before the other leases wait.
pub(crate) const MAX_HEARTBEAT_THREADS: usize = 4;

/// The heartbeat state of one job's lease, from its lease to its settle.
#[derive(Debug)]
pub(crate) struct Beat {
    /// A heartbeat thread is extending the lease.
    extending: AtomicBool,
    /// When (`instant_ms`) the lease was last known fresh: when it was
    /// taken, or when its last successful extension was sent. It lasts a
    /// visibility timeout from then at least.
    fresh_ms: AtomicU64,
    /// When (`instant_ms`) the job was leased: its job timeout runs from
    /// then.
    started_ms: u64,
    /// The pool's job timeout in ms, if any.
    timeout_ms: Option<u64>,
    /// The attempt's timeout was counted (once, by whoever saw it first).
    timed_out: AtomicBool,
}

impl Beat {
    /// A lease taken now, of a job that may run for `timeout` (`None`: no
    /// limit).
    pub(crate) fn new(timeout: Option<std::time::Duration>) -> Arc<Beat> {
        let now = instant_ms();
        Arc::new(Beat {
            extending: AtomicBool::new(false),
            fresh_ms: AtomicU64::new(now),
            started_ms: now,
            // At least 1 ms (the builder refuses less), so a job is never
            // timed out at its start.
            timeout_ms: timeout.map(|t| ms(t).max(1)),
            timed_out: AtomicBool::new(false),
        })
    }

    /// Whether the job has run for its job timeout since it was leased.
    pub(crate) fn past_timeout(&self) -> bool {
        self.timeout_ms
            .is_some_and(|t| instant_ms().saturating_sub(self.started_ms) >= t)
    }

    /// Marks the attempt timed out: true the first time only, so that it
    /// is counted once whoever sees it (the heartbeat, the worker).
    pub(crate) fn mark_timed_out(&self) -> bool {
        !self.timed_out.swap(true, Ordering::AcqRel)
    }

    /// Whether `visibility_ms` have passed since the lease was last known
    /// fresh: it may have run out, whatever held up its extension.
    pub(crate) fn overdue(&self, visibility_ms: u64) -> bool {
        let fresh_ms = self.fresh_ms.load(Ordering::Acquire);
        instant_ms().saturating_sub(fresh_ms) >= visibility_ms
    }
}

/// A lease the heartbeat keeps: a running job's (in its worker's slot) or
/// a finished job's whose ack waits in the settler.
#[derive(Clone)]
pub(crate) struct Kept<L> {
    /// The job, named in a report of a thread stuck extending it.
    pub(crate) id: u64,
    pub(crate) lease: L,
    pub(crate) beat: Arc<Beat>,
}

/// A lease due for an extension, copied out of its slot or the settler.
struct Due<L> {
    fresh_ms: u64,
    kept: Kept<L>,
    /// The running handler's flag; `None` for a pending ack.
    lost: Option<Arc<AtomicBool>>,
}

/// Every heartbeat interval, extends the leases due, until the pool's
/// heartbeat stops; `first` also settles the acks a dead settler thread
/// left (see [`crate::worker::settle`]).
pub(crate) fn beat<B: Backend>(shared: &Shared<B>, state: &ThreadState, first: bool) {
    let every = shared.cfg.heartbeat_every();
    while !shared.heartbeat_stop.sleep(every) {
        for due in due_leases(shared) {
            // Stopped (perhaps while this thread was blocked in an
            // extension, and left detached by shutdown): no more calls,
            // each of which could block it again.
            if shared.heartbeat_stop.is_set() {
                return;
            }
            extend(shared, state, due);
        }
        if first && !shared.heartbeat_stop.is_set() {
            crate::worker::settle::settle_orphans(shared, Some(state));
        }
    }
}

/// Whether a lease last fresh at `fresh_ms` is due at `now`: half a
/// heartbeat interval old, so each beat extends it once whichever thread
/// comes first; or, with an interval near the visibility, half of what
/// the visibility leaves after one interval. A lease skipped at a beat
/// is at most one interval older at the next, and must not have run out
/// by then. Before, a lease taken late in an interval of more than two
/// thirds of the visibility was skipped at the next beat (less than half
/// an interval old) and had run out by the one after.
fn is_due<B: Backend>(shared: &Shared<B>, fresh_ms: u64, now: u64) -> bool {
    let every = ms(shared.cfg.heartbeat_every());
    let left = ms(shared.cfg.visibility).saturating_sub(every);
    now.saturating_sub(fresh_ms) >= (every / 2).min(left / 2)
}

/// The leases due for an extension, nearest to expiry first: the running
/// ones not marked lost, and those of pending acks. A lease whose
/// extension is in flight in another thread is left to it. A running
/// lease a visibility timeout past its last fresh moment is marked lost
/// instead: it may have run out, and another worker may run the job. So
/// is a running job past its job timeout: its lease is left to run out
/// (and the timeout counted, once).
fn due_leases<B: Backend>(shared: &Shared<B>) -> Vec<Due<B::Lease>> {
    let now = instant_ms();
    let visibility = ms(shared.cfg.visibility);
    let mut due = Vec::new();
    let mut push = |kept: Kept<B::Lease>, lost: Option<Arc<AtomicBool>>| {
        let fresh_ms = kept.beat.fresh_ms.load(Ordering::Acquire);
        if !kept.beat.extending.load(Ordering::Acquire) && is_due(shared, fresh_ms, now) {
            due.push(Due {
                fresh_ms,
                kept,
                lost,
            });
        }
    };
    for (index, slot) in shared.slots.iter().enumerate() {
        // The lease is copied out and the slot unlocked before the
        // extension, which may wait on a remote backend: the worker must
        // be able to take its finished job meanwhile. An extension that
        // lands after the job was settled is refused, and the `lost` flag
        // it sets is then read by no one.
        let guard = slot.lock();
        let Some(active) = guard.as_ref() else {
            continue;
        };
        // Before the `lost` check: the handler's context may have marked
        // it lost on seeing the timeout itself, and it is counted here.
        // A finished job is not: its outcome is being settled (by an
        // async pool, the failed attempt of a handler it cancelled).
        if !active.finished && active.beat.past_timeout() {
            active.lost.store(true, Ordering::Release);
            shared.count_timeout(index, active.id, &active.beat);
            continue;
        }
        if active.lost.load(Ordering::Acquire) {
            continue;
        }
        if active.beat.overdue(visibility) {
            active.lost.store(true, Ordering::Release);
            continue;
        }
        let kept = Kept {
            id: active.id,
            lease: active.lease.clone(),
            beat: active.beat.clone(),
        };
        push(kept, Some(active.lost.clone()));
    }
    for kept in shared.settler.pending() {
        push(kept, None);
    }
    due.sort_by_key(|d| d.fresh_ms);
    due
}

/// Extends `due`'s lease, unless another thread is extending it or just
/// did. An extension refused because a pending ack landed meanwhile is
/// expected and not counted.
fn extend<B: Backend>(shared: &Shared<B>, state: &ThreadState, due: Due<B::Lease>) {
    let beat = &due.kept.beat;
    if beat.extending.swap(true, Ordering::AcqRel) {
        return;
    }
    let sent = instant_ms();
    if is_due(shared, beat.fresh_ms.load(Ordering::Acquire), sent) {
        // A thread shutdown gave up on makes no call, and does not act
        // on one that returns after that.
        if !state.begin(BackendCall::Extend, Some(due.kept.id)) {
            beat.extending.store(false, Ordering::Release);
            return;
        }
        // A backend that panics counts a lease error, as a failed
        // extension.
        let extended = BackendCall::Extend.guarded(|| {
            shared
                .backend
                .extend(&due.kept.lease, shared.cfg.visibility)
        });
        // `None`: given up by shutdown meanwhile; nothing is counted.
        state.end_with(|| match extended {
            Ok(()) => {
                beat.fresh_ms.fetch_max(sent, Ordering::AcqRel);
                shared.counters.add(Count::Extended);
            }
            Err(e) if matches!(e.kind(), ErrorKind::LeaseLost | ErrorKind::NotFound) => {
                if let Some(lost) = &due.lost {
                    lost.store(true, Ordering::Release);
                }
            }
            // A transient failure: the next beat tries again, well before
            // the lease runs out (or it is marked lost when it may have).
            Err(_) => shared.counters.add(Count::LeaseErrors),
        });
    }
    beat.extending.store(false, Ordering::Release);
}
