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
            let guard = slot.lock();
            let Some(active) = guard.as_ref() else {
                continue;
            };
            if active.lost.load(Ordering::Acquire) {
                continue;
            }
            match shared.backend.extend(&active.lease, shared.cfg.visibility) {
                Ok(()) => shared.counters.add(Count::Extended),
                Err(e) if matches!(e.kind(), ErrorKind::LeaseLost | ErrorKind::NotFound) => {
                    active.lost.store(true, Ordering::Release);
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
