//! Giving a leased job back without counting its attempt
//! (`Queue::release`): for a worker that stops before its handler ran, or
//! before it finished. A stop is not the job's failure, so it must not
//! use up an attempt, or send a job on its last attempt to the dead
//! letters.
//!
//! The job's Lease record is written again with one attempt fewer, then a
//! Nack due now; the two are one framed batch (`BATCH_MORE`), so recovery
//! keeps both or neither. No new record kind: a Lease record sets the
//! attempts it names (see "Replay rules" in `docs/format.md`), and older
//! builds read the batch the same way. A crash before the batch leaves
//! the job leased, to be released by the next open with the attempt
//! counted, as any lease of a process that stopped.

use super::reclaim::LEASE_FRAME_LEN;
use super::{Now, QueueState};
use crate::error::{Error, ErrorKind, Result};
use crate::format::frame::{FLAG_BATCH_MORE, FRAME_HEADER_LEN};
use crate::format::record::Record;
use crate::job::Receipt;

/// Bytes of a Nack record's frame.
const NACK_FRAME_LEN: u64 = FRAME_HEADER_LEN as u64 + 16;

impl QueueState {
    /// Gives the job of lease `r` back, ready at `now`, with the attempt
    /// the lease counted taken back. Returns the Nack record's LSN.
    pub fn release(&mut self, r: Receipt, now: Now) -> Result<u64> {
        self.check_receipt(r, now)?;
        let Some(slot) = self.jobs.get(r.id) else {
            return Err(Error::new(ErrorKind::LeaseLost, "job is gone"));
        };
        let attempts = slot.attempts.saturating_sub(1);
        // The batch in one segment: room for both records first.
        self.log
            .ensure_room_draining(LEASE_FRAME_LEN + NACK_FRAME_LEN, self.next_id)?;
        let lease = Record::Lease {
            id: r.id,
            attempts: u32::from(attempts),
        };
        self.log.append(&lease, FLAG_BATCH_MORE, self.next_id)?;
        // From here a failure leaves the batch open in the log: the queue
        // is poisoned (the Lease counted as a change), and the next open
        // drops the batch whole.
        let due_ms = now.wall;
        let nack = Record::Nack { id: r.id, due_ms };
        let a = self.log.append(&nack, 0, self.next_id)?;
        if let Some(slot) = self.jobs.get_mut(r.id) {
            slot.attempts = attempts;
        }
        self.leases.remove(r.id);
        self.make_waiting(r.id, due_ms);
        self.note_ready_in(r.id);
        Ok(a.lsn)
    }
}
