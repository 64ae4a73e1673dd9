//! Settling and leasing many jobs with one record: `ack_batch` writes
//! AckMany records, `dequeue_batch` LeaseMany records (record kinds 14 and
//! 15 in `docs/format.md`), at most [`MAX_MANY`] entries each.
//!
//! Like every operation, these validate first, then write, then change
//! memory. A batch split into several records is written as one framed
//! batch (every record but the last flagged `BATCH_MORE`) when it fits in
//! a segment, so recovery keeps all of it or none. A batch of one writes
//! the plain Ack or Lease record.

use super::QueueState;
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
use crate::payload::{Arena, Payload};

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
    /// Where the jobs a lease batch took came from.
    places: Vec<Place>,
}

/// Where a job a lease batch took came from, to put it back there if the
/// batch's lease record fails to be written.
#[derive(Debug, Clone, Copy)]
struct Place {
    from_waiting: bool,
    /// Its due time, if it was waiting.
    due: Option<u64>,
    /// Its attempts before this lease.
    attempts: u16,
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

    /// Hands the places buffer, empty, to a lease batch.
    fn take_places(&mut self) -> Vec<Place> {
        let mut places = std::mem::take(&mut self.places);
        places.clear();
        places
    }

    /// Keeps `places` for the next call, unless a large batch grew it.
    fn keep_places(&mut self, places: Vec<Place>) {
        if places.capacity() <= MAX_MANY {
            self.places = places;
        }
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
    ///
    /// Each job is built where it is returned, in the returned vector: its
    /// receipt's token is filled in once the lease is written; `places`
    /// (scratch) holds what a failed write needs to put the jobs back.
    pub fn dequeue_many(
        &mut self,
        queue: u16,
        max: usize,
        now: Now,
        visibility_ms: u64,
    ) -> Result<Vec<Job>> {
        self.expire_leases(now)?;
        let turn = self.lane_parts(queue).0.turn();
        let mut jobs = Vec::with_capacity(max.min(1024));
        let mut places = self.scratch.take_places();
        let mut arena = Arena::for_batch(max);
        let mut parts = Vec::with_capacity(max.min(1024));
        let leased = self
            .pick_many(queue, max, now, &mut jobs, &mut places, &mut |p| {
                parts.push(arena.keep(p));
            })
            .and_then(|()| self.write_leases(&jobs));
        if let Err(e) = leased {
            self.give_back(queue, jobs, &places, turn);
            self.scratch.keep_places(places);
            return Err(e);
        }
        self.scratch.keep_places(places);
        if jobs.len() < jobs.capacity() {
            // Fewer jobs than asked for (none, for a poll of an empty
            // queue): the caller keeps no room it did not get jobs for.
            jobs.shrink_to_fit();
        }
        debug_assert_eq!(parts.len(), jobs.len(), "one payload kept per job");
        for (job, payload) in jobs.iter_mut().zip(arena.finish(parts.into_iter())) {
            let token = self.grant_lease(job.id, now, visibility_ms);
            job.receipt.token = token;
            job.payload = payload;
        }
        Ok(jobs)
    }

    /// Takes up to `max` ready jobs into `jobs` (receipts without a
    /// token yet, payloads empty), where each came from into `places`, and
    /// hands each one's payload, in order, to `keep`.
    fn pick_many(
        &mut self,
        queue: u16,
        max: usize,
        now: Now,
        jobs: &mut Vec<Job>,
        places: &mut Vec<Place>,
        keep: &mut impl FnMut(&[u8]),
    ) -> Result<()> {
        while jobs.len() < max {
            let Some(r) = self.next_ready(queue, now, keep)? else {
                break;
            };
            let due = r
                .from_waiting
                .then(|| self.order_mut(r.id).due_of(r.id))
                .flatten();
            self.take_leased(&r);
            places.push(Place {
                from_waiting: r.from_waiting,
                due,
                attempts: r.slot.attempts,
            });
            jobs.push(Job {
                id: r.id,
                attempt: u32::from(r.slot.attempts.saturating_add(1)),
                max_attempts: r.rec.max_attempts,
                enqueued_ms: r.rec.enqueued_ms,
                receipt: Receipt { id: r.id, token: 0 },
                key: r.rec.key,
                payload: Payload::Own(Vec::new()),
                priority: r.rec.priority,
                group: r.rec.group,
                last_error: self.errors.shared(r.id),
            });
        }
        Ok(())
    }

    /// Writes the lease records of `jobs` (taken, attempts counted): a
    /// Lease record for one, LeaseMany records for more.
    fn write_leases(&mut self, jobs: &[Job]) -> Result<()> {
        match jobs {
            [] => Ok(()),
            [job] => {
                let lease = Record::Lease {
                    id: job.id,
                    attempts: job.attempt,
                };
                self.log.append(&lease, 0, self.next_id).map(|_| ())
            }
            _ => {
                let mut raw = self.scratch.take_entries();
                raw.reserve(jobs.len() * LEASE_MANY_ENTRY);
                for job in jobs {
                    push_lease_entry(&mut raw, job.id, job.attempt);
                }
                let written = self.append_many(&raw, true).map(|_| ());
                self.scratch.keep_entries(raw);
                written
            }
        }
    }

    /// Puts taken jobs whose lease was not written back where they were:
    /// fresh, or waiting with their due time, with the attempts they had
    /// (`take_leased` counted one); and `queue`'s priority cycle where it
    /// stood before the batch.
    fn give_back(&mut self, queue: u16, jobs: Vec<Job>, places: &[Place], turn: Turn) {
        self.lane_parts(queue).0.rewind(turn);
        for (job, place) in jobs.iter().zip(places).rev() {
            let id = job.id;
            let Some(slot) = self.jobs.get_mut(id) else {
                continue;
            };
            slot.attempts = place.attempts;
            match place.due {
                Some(due) if place.from_waiting => {
                    slot.state = SlotState::Waiting;
                    self.order_mut(id).push_waiting(id, due);
                }
                _ => {
                    slot.state = SlotState::Fresh;
                    self.delivery.add_fresh();
                    self.fresh_cursor = self.fresh_cursor.min(id);
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
