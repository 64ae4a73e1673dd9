//! Adding a job straight to the dead letters (`Queue::enqueue_dead_letter`):
//! how dead letters are imported (`walq import`), or moved from another
//! system, without delivering anything.
//!
//! The job is enqueued as any other (its record, id, key, level and
//! group) but with one attempt allowed, and leased in the same hold of
//! the queue lock: its Enqueue and Lease records are one framed batch
//! (`BATCH_MORE`), so recovery keeps both or neither, as for a job
//! carried with its lease by reclaim. Then it is dead-lettered as a failed
//! job is (`QueueState::dead_letter`: the log synced, the dead letter
//! written and synced, then an Ack record). No consumer can lease it in
//! between, and no other job is touched. A crash or a failed write after
//! the batch leaves a job in flight on its last attempt, which the next
//! open moves to the dead letters; before it, nothing. Room for the dead
//! letter in `dead.wal` is allocated first, so a full disk refuses the
//! call before anything is written.

use super::dead_letters::cut_text;
use super::reclaim::LEASE_FRAME_LEN;
use super::{EnqueueOutcome, QueueState};
use crate::error::Result;
use crate::format::frame::{FLAG_BATCH_MORE, FRAME_HEADER_LEN};
use crate::format::record::{DeadRec, Record};
use crate::EnqueueOptions;

impl QueueState {
    /// Enqueues `payload` into queue `queue` with `opts` (validated by
    /// the caller) and moves it to the dead letters with `error` as its
    /// last error, at wall time `now`. A duplicate key returns the job it
    /// names and changes nothing. Returns the outcome; its LSN is the
    /// Ack record's.
    pub fn enqueue_dead(
        &mut self,
        queue: u16,
        payload: &[u8],
        opts: &EnqueueOptions,
        error: &str,
        now: u64,
    ) -> Result<EnqueueOutcome> {
        self.make_room_for_dead(queue, payload, opts, error, now)?;
        // What was allocated changes no byte: a failure below that
        // changes nothing else (the enqueue refused) is harmless.
        self.log.changes_complete();
        let opts = opts.clone().max_attempts(1);
        self.ensure_def(queue)?;
        // The batch in one segment: room for both records first.
        let rec = self.enqueue_record(self.next_id, queue, payload, &opts, now, now);
        let mut head = Vec::new();
        let tail = rec.encode_into(&mut head);
        let len = (FRAME_HEADER_LEN + head.len() + tail.len()) as u64;
        self.log.ensure_room(len + LEASE_FRAME_LEN, self.next_id)?;
        let out = self.enqueue(queue, payload, &opts, now, FLAG_BATCH_MORE)?;
        if out.duplicate {
            return Ok(out);
        }
        // From here a failure leaves memory and the log apart: the queue
        // is poisoned, and the next open reads the log.
        self.log.mark_changed();
        let lease = Record::Lease {
            id: out.id,
            attempts: 1,
        };
        self.log.append(&lease, 0, self.next_id)?;
        self.take_waiting(out.id);
        if let Some(slot) = self.jobs.get_mut(out.id) {
            slot.attempts = 1;
        }
        let lsn = self.dead_letter(out.id, error, now)?;
        Ok(EnqueueOutcome { lsn, ..out })
    }

    /// Allocates room in `dead.wal` for the dead letter [`QueueState::
    /// enqueue_dead`] will write, before anything is written: on a full
    /// disk the call fails here, and nothing changes (the dead letter's
    /// own write then goes into blocks that exist; see
    /// `DeadFile::make_room_for_letter`). Never with the reserve of a
    /// copy-on-write disk: an import adds to the queue, and the reserve is
    /// kept for the leases and acks that drain a full disk.
    fn make_room_for_dead(
        &mut self,
        queue: u16,
        payload: &[u8],
        opts: &EnqueueOptions,
        error: &str,
        now: u64,
    ) -> Result<()> {
        let name = self.letter_queue_name(queue);
        let rec = DeadRec {
            id: 0,
            enqueued_ms: now,
            dead_ms: now,
            attempts: 0,
            key: opts.key.as_deref().unwrap_or_default(),
            error: cut_text(error).as_bytes(),
            payload,
            queue: name.as_bytes(),
            priority: opts.priority.byte(),
            group: opts.group.as_deref().unwrap_or_default(),
        };
        let dead = &mut self.dead;
        self.log.write_adding(|| dead.make_room_for_letter(&rec))
    }
}
