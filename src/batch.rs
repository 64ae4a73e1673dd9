//! Settling and leasing many jobs with one record: `ack_batch` writes
//! AckMany records, `dequeue_batch` LeaseMany records (record kinds 14 and
//! 15 in `docs/format.md`), at most [`MAX_MANY`] entries each.
//!
//! Like every operation, these validate first, then write, then change
//! memory. A batch split into several records is written as one framed
//! batch (every record but the last flagged `BATCH_MORE`) when it fits in
//! a segment, so recovery keeps all of it or none. A batch of one writes
//! the plain Ack or Lease record.

use super::{QueueState, Ready};
use crate::clock::Now;
use crate::error::{Error, ErrorKind, Result};
use crate::format::frame::{FLAG_BATCH_MORE, FRAME_HEADER_LEN};
use crate::format::record::{
    push_ack_entry, push_lease_entry, Entries, Record, ACK_MANY_ENTRY, LEASE_MANY_ENTRY, MAX_MANY,
};
use crate::job::{Job, Receipt};
use crate::jobs::SlotState;
use crate::leases::Lease;
use crate::levels::Turn;

/// One result per receipt of an ack batch, and the LSN to wait for (none
/// when nothing was written).
pub(crate) type AckResults = (Vec<Result<()>>, Option<u64>);

/// Buffers kept from one batch call to the next, so that a batch makes no
/// allocation of its own beyond what it returns (each allocation of a
/// kilobyte or more also makes glibc merge its freed small chunks: about
/// 40 instructions per job at batches of 100, callgrind).
#[derive(Debug, Default)]
pub(crate) struct BatchScratch {
    /// The AckMany or LeaseMany entries of the batch being written.
    entries: Vec<u8>,
    /// The leases an ack batch took (put back if its write fails).
    taken: Vec<(u64, Lease)>,
}

/// Entry bytes a scratch buffer keeps between calls: one full record of
/// the wider entries; a buffer grown past it by a larger batch is freed.
const KEEP_ENTRY_BYTES: usize = MAX_MANY * LEASE_MANY_ENTRY;

impl BatchScratch {
    /// Hands the entry buffer, empty, to a batch call.
    fn take_entries(&mut self) -> Vec<u8> {
        let mut raw = std::mem::take(&mut self.entries);
        raw.clear();
        raw
    }

    /// Keeps `raw` for the next call, unless a large batch grew it.
    fn keep_entries(&mut self, raw: Vec<u8>) {
        if raw.capacity() <= KEEP_ENTRY_BYTES {
            self.entries = raw;
        }
    }

    /// Hands the taken-leases buffer, empty, to an ack batch.
    fn take_taken(&mut self) -> Vec<(u64, Lease)> {
        let mut taken = std::mem::take(&mut self.taken);
        taken.clear();
        taken
    }

    /// Keeps `taken` for the next call, unless a large batch grew it.
    fn keep_taken(&mut self, taken: Vec<(u64, Lease)>) {
        if taken.capacity() <= MAX_MANY {
            self.taken = taken;
        }
    }
}

impl QueueState {
    /// Acks every receipt whose lease is held, with AckMany records; the
    /// others get their own error ([`ErrorKind::LeaseLost`], a receipt
    /// given twice included: its lease is taken by the first) and nothing
    /// is written for them. An I/O error fails the whole batch, and the
    /// leases taken are put back.
    pub fn ack_many(&mut self, receipts: &[Receipt], now: Now) -> Result<AckResults> {
        let mut taken = self.scratch.take_taken();
        let done = self.ack_taking(receipts, now, &mut taken);
        taken.clear();
        self.scratch.keep_taken(taken);
        done
    }

    /// [`QueueState::ack_many`] with `taken`, empty, to hold the leases
    /// it takes.
    fn ack_taking(
        &mut self,
        receipts: &[Receipt],
        now: Now,
        taken: &mut Vec<(u64, Lease)>,
    ) -> Result<AckResults> {
        let mut results = Vec::with_capacity(receipts.len());
        // Each valid receipt's lease is taken out at once: a second receipt
        // of the same job finds none, so no set of ids is needed.
        taken.reserve(receipts.len());
        for &r in receipts {
            // A valid receipt's lease is checked and taken at once; the others
            // are told apart by `check_receipt`.
            if let Some(lease) = self.leases.take_valid(r.id, r.token, now.mono) {
                taken.push((r.id, lease));
                results.push(Ok(()));
                continue;
            }
            match self.check_receipt(r, now) {
                Ok(()) => {
                    if let Some(lease) = self.leases.take(r.id) {
                        taken.push((r.id, lease));
                    }
                    results.push(Ok(()));
                }
                Err(e) if e.kind() == ErrorKind::Io => {
                    self.put_back(taken);
                    return Err(e);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let written = match taken.as_slice() {
            [] => return Ok((results, None)),
            &[(id, _)] => self
                .log
                .append(&Record::Ack { id }, 0, self.next_id)
                .map(|a| a.lsn),
            _ => {
                let mut raw = self.scratch.take_entries();
                raw.reserve(taken.len() * ACK_MANY_ENTRY);
                taken
                    .iter()
                    .for_each(|&(id, _)| push_ack_entry(&mut raw, id));
                let lsn = self.append_many(&raw, false);
                self.scratch.keep_entries(raw);
                lsn
            }
        };
        let lsn = match written {
            Ok(lsn) => lsn,
            Err(e) => {
                self.put_back(taken);
                return Err(e);
            }
        };
        for &(id, _) in taken.iter() {
            self.finish(id);
            self.counters.acked += 1;
        }
        Ok((results, Some(lsn)))
    }

    /// Puts back leases an ack batch took before its write failed.
    fn put_back(&mut self, taken: &mut Vec<(u64, Lease)>) {
        for (id, lease) in taken.drain(..) {
            self.leases.insert(id, lease);
        }
    }

    /// Leases up to `max` ready jobs with LeaseMany records. If the write
    /// fails, the jobs go back to their places in the delivery order.
    pub fn dequeue_many(
        &mut self,
        queue: u16,
        max: usize,
        now: Now,
        visibility_ms: u64,
    ) -> Result<Vec<Job>> {
        self.expire_leases(now)?;
        let turn = self.lane_parts(queue).0.turn();
        let mut picked: Vec<(Ready, Option<u64>)> = Vec::with_capacity(max.min(1024));
        while picked.len() < max {
            let r = match self.next_ready(queue, now) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    self.give_back(queue, picked, turn);
                    return Err(e);
                }
            };
            let due = r
                .from_waiting
                .then(|| self.order_mut(r.id).due_of(r.id))
                .flatten();
            self.take_leased(&r);
            picked.push((r, due));
        }
        let written = match picked.as_slice() {
            [] => return Ok(Vec::new()),
            [(r, _)] => {
                let attempts = u32::from(r.slot.attempts.saturating_add(1));
                let lease = Record::Lease { id: r.id, attempts };
                self.log.append(&lease, 0, self.next_id).map(|_| ())
            }
            _ => {
                let mut raw = self.scratch.take_entries();
                raw.reserve(picked.len() * LEASE_MANY_ENTRY);
                for (r, _) in &picked {
                    let attempts = u32::from(r.slot.attempts.saturating_add(1));
                    push_lease_entry(&mut raw, r.id, attempts);
                }
                let written = self.append_many(&raw, true).map(|_| ());
                self.scratch.keep_entries(raw);
                written
            }
        };
        if let Err(e) = written {
            self.give_back(queue, picked, turn);
            return Err(e);
        }
        let jobs = picked
            .into_iter()
            .map(|(r, _)| self.grant(r, now, visibility_ms))
            .collect();
        Ok(jobs)
    }

    /// Puts taken jobs whose lease was not written back where they were:
    /// fresh, or waiting with their due time, with the attempts they had
    /// (`take_leased` counted one); and `queue`'s priority cycle where it
    /// stood before the batch.
    fn give_back(&mut self, queue: u16, picked: Vec<(Ready, Option<u64>)>, turn: Turn) {
        self.lane_parts(queue).0.rewind(turn);
        for (r, due) in picked.into_iter().rev() {
            let Some(slot) = self.jobs.get_mut(r.id) else {
                continue;
            };
            slot.attempts = r.slot.attempts;
            match due {
                Some(due) if r.from_waiting => {
                    slot.state = SlotState::Waiting;
                    self.order_mut(r.id).push_waiting(r.id, due);
                }
                _ => {
                    slot.state = SlotState::Fresh;
                    self.delivery.add_fresh();
                    self.fresh_cursor = self.fresh_cursor.min(r.id);
                }
            }
        }
    }

    /// Appends the AckMany (or, if `lease`, LeaseMany) entries in `raw`
    /// as records of at most [`MAX_MANY`] entries, written as one framed
    /// batch when they fit in a segment (else each on its own); returns
    /// the last LSN.
    fn append_many(&mut self, raw: &[u8], lease: bool) -> Result<u64> {
        let width = if lease {
            LEASE_MANY_ENTRY
        } else {
            ACK_MANY_ENTRY
        };
        // The chunks are walked twice (sizes, then writes) rather than
        // collected: no allocation per batch.
        let chunks = || raw.chunks(MAX_MANY * width);
        let last = chunks().count().saturating_sub(1);
        let total: u64 = chunks()
            .map(|c| (FRAME_HEADER_LEN + 4 + c.len()) as u64)
            .sum();
        let atomic = total <= self.log.max_frame();
        if atomic {
            self.log.ensure_room_draining(total, self.next_id)?;
        }
        let mut lsn = 0;
        for (i, chunk) in chunks().enumerate() {
            let entries = Entries::new(chunk, width).ok_or_else(|| {
                Error::new(
                    ErrorKind::Io,
                    "a batch record of no entries (internal error)",
                )
            })?;
            let more = atomic && i < last;
            let flags = if more { FLAG_BATCH_MORE } else { 0 };
            let rec = if lease {
                Record::LeaseMany(entries)
            } else {
                Record::AckMany(entries)
            };
            lsn = self.log.append(&rec, flags, self.next_id)?.lsn;
        }
        Ok(lsn)
    }
}
