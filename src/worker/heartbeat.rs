//! Extends the leases of running handlers, so a slow job is not handed to
//! a second worker while the first still runs it.

use std::sync::atomic::Ordering;

use crate::error::ErrorKind;
use crate::worker::backend::Backend;
use crate::worker::counters::Count;
use crate::worker::pool::Shared;

/// Every heartbeat interval, extends each running job's lease by the
/// visibility timeout, until the pool's heartbeat stops. A lease that
/// cannot be extended because it is gone is marked lost, for the handler
/// to see. Each beat also settles the acks a dead settler thread left
/// (see [`crate::worker::settle`]) and extends those still waiting.
pub(crate) fn run<B: Backend>(shared: &Shared<B>) {
    let every = shared.cfg.heartbeat_every();
    while !shared.heartbeat_stop.sleep(every) {
        for slot in &shared.slots {
            // The lease is copied out and the slot unlocked before the
            // extension, which may wait on a remote backend: the worker
            // must be able to take its finished job meanwhile. An
            // extension that lands after the job was settled is refused,
            // and the `lost` flag it sets is then read by no one.
            let (lease, lost) = {
                let guard = slot.lock();
                match guard.as_ref() {
                    Some(active) if !active.lost.load(Ordering::Acquire) => {
                        (active.lease.clone(), active.lost.clone())
                    }
                    _ => continue,
                }
            };
            match shared.backend.extend(&lease, shared.cfg.visibility) {
                Ok(()) => shared.counters.add(Count::Extended),
                Err(e) if matches!(e.kind(), ErrorKind::LeaseLost | ErrorKind::NotFound) => {
                    lost.store(true, Ordering::Release);
                }
                // A transient failure: the next beat tries again, well
                // before the lease runs out.
                Err(_) => shared.counters.add(Count::LeaseErrors),
            }
        }
        crate::worker::settle::settle_orphans(shared);
        crate::worker::settle::extend_pending(shared);
    }
}
