//! Cancelling a job that waits to run (`Queue::cancel`): it leaves the
//! delivery order and the log records it finished, so it never runs.
//!
//! A waiting job is in one of three places: *fresh* (counted by its
//! level and served by the job table's cursor, which skips an emptied
//! slot), *waiting* (in its level's heaps with a due time) or *blocked*
//! behind its group's head (kept by its group only). The job is taken
//! out of the one it is in and then finished as an acked job is: its
//! slot, level, queue and group let go of it (a cancelled group head
//! frees the next job), its segment counts one live job fewer.
//!
//! On disk a cancel is the Ack record of a job that was never leased:
//! replay removes the job whatever its state (docs/format.md, "Replay
//! rules"), so the format does not change. The caller marks the job in
//! the completion file first (`Queue::cancel`), so that it never reads as
//! done.

use super::QueueState;
use crate::clock::Now;
use crate::error::{Error, ErrorKind, Result};
use crate::format::record::Record;
use crate::jobs::SlotState;

impl QueueState {
    /// Checks that job `id` of queue `queue` waits to run and can be
    /// cancelled: `NotFound` if it is not a live job of that queue (never
    /// issued, finished, a dead letter, another queue's), `InFlight` if it
    /// is leased. Expired leases are released first, as a dequeue would.
    pub fn check_cancellable(&mut self, queue: u16, id: u64, now: Now) -> Result<()> {
        self.expire_leases(now)?;
        let slot = match self.jobs.get(id) {
            Some(slot) if self.named.queue_of(id) == queue => slot,
            _ if self.is_dead_letter(id) => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("job {id} is a dead letter, not a waiting job: purge it instead"),
                ))
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                    "no job {id} waits in this queue (never issued, finished, or another queue's)"
                ),
                ))
            }
        };
        if slot.state == SlotState::InFlight {
            return Err(Error::new(
                ErrorKind::InFlight,
                format!(
                    "job {id} is leased (attempt {}): settle it from its worker, or cancel it once its lease ends",
                    slot.attempts
                ),
            ));
        }
        Ok(())
    }

    /// Cancels job `id`, which [`QueueState::check_cancellable`] passed:
    /// writes its Ack record, then takes it out of the delivery order and
    /// finishes it. Returns the record's LSN. If the record cannot be
    /// written nothing changes.
    pub fn cancel(&mut self, id: u64) -> Result<u64> {
        let state = self.jobs.get(id).map(|s| s.state);
        assert!(
            matches!(state, Some(SlotState::Fresh | SlotState::Waiting)),
            "cancelling job {id}, which does not wait ({state:?})"
        );
        let a = self.log.append(&Record::Ack { id }, 0, self.next_id)?;
        self.take_waiting(id);
        self.finish(id);
        Ok(a.lsn)
    }

    /// Takes waiting job `id` (fresh, waiting or blocked behind its
    /// group's head) out of the delivery order, as a lease would: in
    /// flight from now on, for [`QueueState::finish`] (which takes such a
    /// job, asserting so, and lets go of its level, queue and group).
    pub(super) fn take_waiting(&mut self, id: u64) {
        let state = self.jobs.get(id).map(|s| s.state);
        if state == Some(SlotState::Fresh) {
            self.order_mut(id).take_fresh();
        } else if !self.groups_mut(id).is_blocked(id) {
            self.order_mut(id).remove_waiting(id);
        }
        if let Some(slot) = self.jobs.get_mut(id) {
            slot.state = SlotState::InFlight;
        }
    }
}
