//! Extends the leases of running handlers, so a slow job is not handed to
//! a second worker while the first still runs it.
//!
//! One extension can block for as long as its backend takes (a stalled
//! disk sync, a slow network), and the backend bounds that, not the pool.
//! So that one such call does not hold up the others' leases, a pool runs
//! a small fixed number of heartbeat threads ([`MAX_HEARTBEAT_THREADS`],
//! at most one per worker) over the same slots: each lease is claimed by
//! one thread at a time (one extension in flight per lease, no queue),
//! the threads take the leases extended longest ago (nearest to expiry)
//! first. A lease whose extension has been in flight for a whole
//! visibility timeout since it was last known fresh may have run out: its
//! handler sees it lost in [`crate::worker::JobContext::lease_lost`] (which
//! reads that itself, so it does not need a heartbeat thread that is not
//! blocked), and the other threads mark it lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::clock::{instant_ms, ms};
use crate::error::ErrorKind;
use crate::worker::backend::Backend;
use crate::worker::counters::Count;
use crate::worker::pool::Shared;

/// Most heartbeat threads a pool runs (fewer with fewer workers): as
/// many extensions can block at once before the other leases wait.
pub(crate) const MAX_HEARTBEAT_THREADS: usize = 4;

/// The heartbeat state of one running job's lease.
#[derive(Debug)]
pub(crate) struct Beat {
    /// A heartbeat thread is extending the lease.
    extending: AtomicBool,
    /// When (`instant_ms`) the lease was last known fresh: when it was
    /// taken, or when its last successful extension was sent. It lasts a
    /// visibility timeout from then at least.
    fresh_ms: AtomicU64,
}

impl Beat {
    /// A lease taken now.
    pub(crate) fn new() -> Arc<Beat> {
        Arc::new(Beat {
            extending: AtomicBool::new(false),
            fresh_ms: AtomicU64::new(instant_ms()),
        })
    }

    /// Whether an extension is in flight and `visibility_ms` have passed
    /// since the lease was last fresh: it may have run out meanwhile.
    pub(crate) fn stalled(&self, visibility_ms: u64) -> bool {
        let fresh_ms = self.fresh_ms.load(Ordering::Acquire);
        self.extending.load(Ordering::Acquire)
            && instant_ms().saturating_sub(fresh_ms) >= visibility_ms
    }
}

/// A lease due for an extension, copied out of its slot.
struct Due<L> {
    fresh_ms: u64,
    lease: L,
    lost: Arc<AtomicBool>,
    beat: Arc<Beat>,
}

/// Runs the pool's heartbeat threads until the heartbeat stops: this one,
/// which also settles the acks a dead settler thread left (see
/// [`crate::worker::settle`]) and extends those still waiting, and up to
/// [`MAX_HEARTBEAT_THREADS`]` - 1` helpers, joined before it returns.
pub(crate) fn run<B: Backend>(shared: &Shared<B>) {
    let threads = shared.cfg.workers.clamp(1, MAX_HEARTBEAT_THREADS);
    std::thread::scope(|scope| {
        for k in 1..threads {
            let name = format!("{}-heartbeat-{k}", shared.cfg.name);
            // A helper that cannot start leaves its share to the others.
            let _ = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, || beat(shared, false));
        }
        beat(shared, true);
    });
}

/// Every heartbeat interval, extends the running leases due, until the
/// pool's heartbeat stops; `first` also looks after the settler's acks.
fn beat<B: Backend>(shared: &Shared<B>, first: bool) {
    let every = shared.cfg.heartbeat_every();
    while !shared.heartbeat_stop.sleep(every) {
        for due in due_leases(shared) {
            extend(shared, due);
        }
        if first {
            crate::worker::settle::settle_orphans(shared);
            crate::worker::settle::extend_pending(shared);
        }
    }
}

/// Whether a lease last fresh at `fresh_ms` is due at `now`: half a
/// heartbeat interval old, so each beat extends it once whichever thread
/// comes first.
fn is_due<B: Backend>(shared: &Shared<B>, fresh_ms: u64, now: u64) -> bool {
    now.saturating_sub(fresh_ms) >= ms(shared.cfg.heartbeat_every()) / 2
}

/// The running leases due for an extension, nearest to expiry first. A
/// lease whose extension is in flight in another thread is left to it,
/// and marked lost once a visibility timeout has passed since it was last
/// fresh: it may have run out, and another worker may run the job.
fn due_leases<B: Backend>(shared: &Shared<B>) -> Vec<Due<B::Lease>> {
    let now = instant_ms();
    let visibility = ms(shared.cfg.visibility);
    let mut due = Vec::new();
    for slot in &shared.slots {
        // The lease is copied out and the slot unlocked before the
        // extension, which may wait on a remote backend: the worker must
        // be able to take its finished job meanwhile. An extension that
        // lands after the job was settled is refused, and the `lost` flag
        // it sets is then read by no one.
        let guard = slot.lock();
        let Some(active) = guard.as_ref() else {
            continue;
        };
        if active.lost.load(Ordering::Acquire) {
            continue;
        }
        if active.beat.stalled(visibility) {
            active.lost.store(true, Ordering::Release);
            continue;
        }
        let fresh_ms = active.beat.fresh_ms.load(Ordering::Acquire);
        if !active.beat.extending.load(Ordering::Acquire) && is_due(shared, fresh_ms, now) {
            due.push(Due {
                fresh_ms,
                lease: active.lease.clone(),
                lost: active.lost.clone(),
                beat: active.beat.clone(),
            });
        }
    }
    due.sort_by_key(|d| d.fresh_ms);
    due
}

/// Extends `due`'s lease, unless another thread is extending it or just
/// did.
fn extend<B: Backend>(shared: &Shared<B>, due: Due<B::Lease>) {
    if due.beat.extending.swap(true, Ordering::AcqRel) {
        return;
    }
    let sent = instant_ms();
    if is_due(shared, due.beat.fresh_ms.load(Ordering::Acquire), sent) {
        match shared.backend.extend(&due.lease, shared.cfg.visibility) {
            Ok(()) => {
                due.beat.fresh_ms.fetch_max(sent, Ordering::AcqRel);
                shared.counters.add(Count::Extended);
            }
            Err(e) if matches!(e.kind(), ErrorKind::LeaseLost | ErrorKind::NotFound) => {
                due.lost.store(true, Ordering::Release);
            }
            // A transient failure: the next beat tries again, well before
            // the lease runs out.
            Err(_) => shared.counters.add(Count::LeaseErrors),
        }
    }
    due.beat.extending.store(false, Ordering::Release);
}
