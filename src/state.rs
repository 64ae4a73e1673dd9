//! The queue's state and its operations, all run under the queue lock.
//!
//! `QueueState` owns its parts and every change to them: the job table
//! (`jobs`), the delivery order (`delivery`), the lease table (`leases`),
//! the key index (`keys`) and the counters. Their fields are private to
//! this module and its children (`batch`, `dead_letters`, `reclaim`,
//! `rebuild`), so no other module can change one part without the others.
//!
//! Each operation validates first, then appends its records, then changes
//! memory, so a refused operation changes nothing and a failed write
//! leaves memory as it was. Each returns the LSN the caller must see
//! durable before acknowledging (group commit happens outside the lock, in
//! `queue`). Maintenance (reclaim) runs after an operation, never as part
//! of it: its failure is not the operation's (see `reclaim`).
//!
//! Invariants (checked by `check_invariants` in tests):
//! - every live job is in exactly one of: fresh (served in id order),
//!   waiting in the delivery order, the lease table;
//! - a segment's `live_jobs`/`live_bytes` count exactly the live jobs whose
//!   latest full record it holds;
//! - no live job is also a dead letter;
//! - under read-committed delivery, `unconfirmed` lists, in id order, the
//!   enqueues not yet known durable.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::clock::{ms, Now};
use crate::dead::DeadFile;
use crate::error::{Error, ErrorKind, Result};
use crate::format::frame::{FLAG_BATCH_MORE, FRAME_HEADER_LEN};
use crate::format::record::{EnqueueRec, Record, ENQUEUE_FIXED_LEN};
use crate::groups::Groups;
use crate::id_floor::IdFloor;
use crate::job::{Job, Receipt};
use crate::jobs::{JobTable, Slot, SlotState};
use crate::keys::{key_check, KeyEntry, KeyIndex, IN_DEAD_LETTERS};
use crate::last_errors::LastErrors;
use crate::leases::{Lease, Leases};
use crate::levels::Levels;
use crate::log::{Appended, Log};
use crate::named::{scoped_hash, Named, ANY_QUEUE};
use crate::options::{Backoff, EnqueueOptions, Retry};
use crate::payload::Payload;
use crate::priority::Priority;
use crate::segment::Segment;
use crate::stats::Stats;

#[path = "batch.rs"]
mod batch;
#[path = "bury.rs"]
mod bury;
#[path = "cancel.rs"]
mod cancel;
#[path = "checkpoint.rs"]
pub(crate) mod checkpoint;
#[path = "dead_letters.rs"]
mod dead_letters;
#[path = "lanes.rs"]
mod lanes;
#[path = "rebuild.rs"]
pub(crate) mod rebuild;
#[path = "reclaim.rs"]
mod reclaim;
#[path = "release.rs"]
mod release;

/// The options the state machine needs, in milliseconds.
#[derive(Debug, Clone)]
pub struct Config {
    /// Default max attempts.
    pub max_attempts: u32,
    /// Default visibility timeout (ms).
    pub visibility_ms: u64,
    /// Retry policy.
    pub backoff: Backoff,
    /// Dedup window.
    pub dedup_ms: u64,
    /// Largest payload.
    pub max_payload: u32,
    /// Deliver only jobs whose enqueue record is durable (`Durability::Sync`).
    pub read_committed: bool,
}

/// Totals since open. Changed only by `QueueState`'s operations.
#[derive(Debug, Default, Clone)]
struct Counters {
    enqueued: u64,
    acked: u64,
    retried: u64,
    dead_lettered: u64,
    damaged: u64,
    carried: u64,
}

/// The whole in-memory state of an open queue.
#[derive(Debug)]
pub struct QueueState {
    /// The log writer (appends, rotation, syncs: the storage layer).
    pub(crate) log: Log,
    /// The dead-letter file and its index.
    pub(crate) dead: DeadFile,
    jobs: JobTable,
    /// The default queue's delivery order (with the fresh cursor).
    delivery: Levels,
    /// The default queue's message groups.
    groups: Groups,
    /// The named queues: names, jobs' queues, their delivery orders.
    named: Named,
    /// QueueDef records before this LSN are not read by the next open
    /// (a checkpoint covers them).
    def_floor: u64,
    /// The queue in which an operation made a job wait or become ready
    /// outside an enqueue: a group's next job freed, a retry. Consumers
    /// waiting for that queue must look again (see
    /// [`QueueState::take_ready_in`]); [`ANY_QUEUE`] when several. With
    /// whether it did so for more than one job (then every consumer of
    /// the queue must look: one woken takes one job).
    ready_in: Option<(u16, bool)>,
    leases: Leases,
    keys: KeyIndex,
    /// The last error of each live job that failed with one.
    errors: LastErrors,
    next_id: u64,
    /// The durable bound ids are issued below (`None` for a state no
    /// `Queue` opened: nothing enqueues there).
    id_floor: Option<IdFloor>,
    fresh_cursor: u64,
    last: Now,
    next_token: u64,
    rng: u64,
    counters: Counters,
    cfg: Config,
    /// `(id, lsn)` of enqueues not yet known durable, in id order (only
    /// under read-committed delivery).
    unconfirmed: VecDeque<(u64, u64)>,
    maintenance: reclaim::Maintenance,
    /// Buffers the batch calls reuse.
    scratch: batch::BatchScratch,
}

/// The outcome of an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueueOutcome {
    /// The job id (the existing one for a duplicate key).
    pub id: u64,
    /// Whether the idempotency key matched an existing job.
    pub duplicate: bool,
    /// LSN to wait for.
    pub lsn: u64,
}

/// A job chosen to be served, with its verified record.
struct Ready<P = Vec<u8>> {
    id: u64,
    from_waiting: bool,
    slot: Slot,
    rec: JobRecord<P>,
}

/// A job's enqueue record, copied out of its segment (the payload kept as
/// the reader chose: see [`QueueState::next_ready`]).
struct JobRecord<P> {
    key: Vec<u8>,
    payload: P,
    enqueued_ms: u64,
    max_attempts: u32,
    priority: Priority,
    group: Vec<u8>,
}

/// How far the wall clock may step back and be held at the latest reading
/// rather than followed ([`QueueState::now`]): one minute.
pub const WALL_STEP_BACK_MS: u64 = 60_000;

/// `Err` once job ids are exhausted.
fn check_new_id(id: u64) -> Result<()> {
    if id >= crate::format::MAX_ID {
        return Err(Error::new(
            ErrorKind::InvalidOptions,
            "job ids are exhausted (2^62 jobs enqueued)",
        ));
    }
    Ok(())
}

pub(crate) fn too_large(what: &str, len: usize, limit: usize) -> Error {
    Error::new(
        ErrorKind::PayloadTooLarge,
        format!("{what} of {len} bytes is over the limit of {limit} bytes"),
    )
}

/// The bytes of the key an entry points to, if they can be read.
/// Whether a key stays known: its window is open, or its job is live or
/// dead.
fn key_is_kept(e: &KeyEntry, now: u64, jobs: &JobTable, dead: &DeadFile) -> bool {
    e.expires_ms > now || jobs.get(e.id).is_some() || dead.entries().contains_key(&e.id)
}

fn stored_key(log: &Log, dead: &DeadFile, e: &KeyEntry) -> Option<Vec<u8>> {
    if e.seg == IN_DEAD_LETTERS {
        return dead.get(e.id).ok()??.key;
    }
    let f = log.info(e.seg)?.seg.frame_at(e.off).ok()?;
    match Record::decode(f.kind, f.body)? {
        Record::Enqueue(r) => Some(r.key.to_vec()),
        Record::Key { key, .. } => Some(key.to_vec()),
        _ => None,
    }
}

impl QueueState {
    /// The time an operation uses: the monotonic reading never behind one
    /// already used; the wall reading held at the latest one through a
    /// step back of up to [`WALL_STEP_BACK_MS`], followed past it.
    pub fn now(&mut self, clock: Now) -> Now {
        // A small step back (NTP) is absorbed: now holds still until the
        // clock catches up. A large one (a clock that was wrong, then set
        // right) is followed: held, every delay, backoff and window would
        // be measured from the wrong time until real time caught up (found
        // by review: a year, after a bad clock at boot).
        let back = self.last.wall.saturating_sub(clock.wall);
        if back == 0 || back > WALL_STEP_BACK_MS {
            self.last.wall = clock.wall;
        }
        self.last.mono = self.last.mono.max(clock.mono);
        self.last
    }

    fn random(&mut self) -> f64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Checks a payload and options against the limits. A payload within
    /// the limit with no key, group or `max_attempts` and a delay within
    /// [`crate::MAX_DELAY`] (every plain enqueue) passes inline.
    #[inline]
    pub fn validate_enqueue(&self, payload: &[u8], opts: &EnqueueOptions) -> Result<()> {
        let plain = opts.key.is_none()
            && opts.group.is_none()
            && opts.max_attempts.is_none()
            && opts.delay <= crate::options::MAX_DELAY;
        if plain && payload.len() <= self.cfg.max_payload as usize {
            return Ok(());
        }
        self.validate_fully(payload, opts)
    }

    /// [`QueueState::validate_enqueue`] for a job with options or a
    /// payload over the limit.
    fn validate_fully(&self, payload: &[u8], opts: &EnqueueOptions) -> Result<()> {
        if payload.len() > self.cfg.max_payload as usize {
            return Err(too_large(
                "payload",
                payload.len(),
                self.cfg.max_payload as usize,
            ));
        }
        opts.validate()
    }

    /// Size of the frame an enqueue of this payload and key writes.
    pub fn enqueue_frame_len(payload: &[u8], key_len: usize) -> u64 {
        (FRAME_HEADER_LEN + ENQUEUE_FIXED_LEN + key_len + payload.len()) as u64
    }

    /// The queue in which an operation since the last call made a job
    /// wait or become ready outside an enqueue (a group's next job freed
    /// by an ack or a dead letter of its head, a retry), if any;
    /// [`ANY_QUEUE`] when in several queues; with whether it did so for
    /// more than one job (an `ack_batch` that freed two groups' next jobs).
    pub(crate) fn take_ready_in(&mut self) -> Option<(u16, bool)> {
        self.ready_in.take()
    }

    /// Notes that live job `id` comes due later: every consumer of its
    /// queue is woken to sleep until then at most (one woken alone may
    /// leave before, and the others would sleep past it).
    fn note_due_later_in(&mut self, id: u64) {
        let queue = self.named.queue_of(id);
        self.ready_in = Some(match self.ready_in {
            Some((before, _)) if before != queue => (ANY_QUEUE, true),
            _ => (queue, true),
        });
    }

    /// Notes that live job `id` waits or is ready now (see `ready_in`).
    fn note_ready_in(&mut self, id: u64) {
        let queue = self.named.queue_of(id);
        self.ready_in = Some(match self.ready_in {
            None => (queue, false),
            Some((before, _)) if before == queue => (queue, true),
            Some(_) => (ANY_QUEUE, true),
        });
    }

    /// The job `key` belongs to, if the key is still known. The stored key
    /// bytes decide, not the hash alone.
    fn known_key(&mut self, hash: u128, key: &[u8], now: u64) -> Option<u64> {
        let (log, dead) = (&self.log, &self.dead);
        let entry = self.keys.find(hash, key, |e| stored_key(log, dead, e))?;
        let alive = self.jobs.get(entry.id).is_some()
            || self.dead.entries().contains_key(&entry.id)
            || entry.expires_ms > now;
        if alive {
            Some(entry.id)
        } else {
            self.keys.remove(hash, entry.id);
            None
        }
    }

    /// Enqueues one job on queue `queue`. `flags` marks batch members.
    pub fn enqueue(
        &mut self,
        queue: u16,
        payload: &[u8],
        opts: &EnqueueOptions,
        now: u64,
        flags: u8,
    ) -> Result<EnqueueOutcome> {
        let key = opts.key.as_deref().unwrap_or_default();
        let hash = (!key.is_empty()).then(|| scoped_hash(queue, key));
        if let Some(hash) = hash {
            if let Some(id) = self.known_key(hash, key, now) {
                return Ok(EnqueueOutcome {
                    id,
                    duplicate: true,
                    lsn: self.log.next_lsn - 1,
                });
            }
        }
        let id = self.next_id;
        check_new_id(id)?;
        self.cover_ids(id + 1)?;
        self.ensure_def(queue)?;
        let due_ms = now.saturating_add(ms(opts.delay));
        let rec = self.enqueue_record(id, queue, payload, opts, now, due_ms);
        let a = self.log.append(&rec, flags, self.next_id + 1)?;
        self.add_enqueued(id, queue, opts, (now, due_ms), a);
        if let Some(hash) = hash {
            let entry = KeyEntry {
                id,
                expires_ms: now.saturating_add(self.cfg.dedup_ms),
                seg: a.seg,
                off: a.off,
                check: key_check(key),
            };
            self.keys.set(hash, None, entry);
            if self.keys.wants_sweep() {
                self.sweep_keys_step(now);
            }
        }
        Ok(EnqueueOutcome {
            id,
            duplicate: false,
            lsn: a.lsn,
        })
    }

    /// The record of new job `id` (not written yet), due at `due_ms`.
    #[inline]
    fn enqueue_record<'a>(
        &self,
        id: u64,
        queue: u16,
        payload: &'a [u8],
        opts: &'a EnqueueOptions,
        now: u64,
        due_ms: u64,
    ) -> Record<'a> {
        let max_attempts = opts
            .max_attempts
            .or_else(|| self.named.options(queue).and_then(|o| o.max_attempts))
            .unwrap_or(self.cfg.max_attempts);
        Record::Enqueue(EnqueueRec {
            id,
            enqueued_ms: now,
            due_ms,
            attempts: 0,
            max_attempts: u16::try_from(max_attempts).unwrap_or(u16::MAX),
            key: opts.key.as_deref().unwrap_or_default(),
            payload,
            queue,
            priority: opts.priority.byte(),
            group: opts.group.as_deref().unwrap_or_default(),
        })
    }

    /// Makes new job `id`, whose record `a` was written, live (all but its
    /// idempotency key), enqueued at `now`, due at `due_ms`.
    #[inline(always)]
    fn add_enqueued(
        &mut self,
        id: u64,
        queue: u16,
        opts: &EnqueueOptions,
        (now, due_ms): (u64, u64),
        a: Appended,
    ) {
        debug_assert_eq!(id, self.next_id, "jobs are made live in id order");
        self.next_id += 1;
        if self.cfg.read_committed {
            self.unconfirmed.push_back((id, a.lsn));
        }
        let state = self.place_new(id, queue, opts, due_ms, now);
        self.add_job(id, a, 0, state, due_ms);
        self.counters.enqueued += 1;
    }

    /// The level and group of a new job, and whether it starts fresh or
    /// waiting. Only Normal jobs are served by the fresh cursor; a job of
    /// another level waits in its level from the start, and a job of a
    /// group waits (blocked, outside the delivery order) for the jobs of
    /// its group before it. A job of a named queue always waits (in its
    /// queue's order).
    fn place_new(
        &mut self,
        id: u64,
        queue: u16,
        opts: &EnqueueOptions,
        due_ms: u64,
        now: u64,
    ) -> SlotState {
        self.named.assign(id, queue);
        let (order, groups) = self.lane_parts(queue);
        let blocked = match &opts.group {
            Some(g) => !groups.add(id, scoped_hash(queue, g), due_ms),
            None => false,
        };
        order.set_level(id, opts.priority.byte());
        if due_ms > now || opts.priority != Priority::Normal || blocked || queue != 0 {
            SlotState::Waiting
        } else {
            SlotState::Fresh
        }
    }

    /// Enqueues a batch atomically: all records go in one segment, every
    /// record but the last flagged, so recovery keeps all or none.
    pub fn enqueue_batch(
        &mut self,
        queue: u16,
        payloads: &[&[u8]],
        now: u64,
    ) -> Result<(Vec<u64>, u64)> {
        let opts = EnqueueOptions::default();
        let mut total = 0u64;
        for p in payloads {
            self.validate_enqueue(p, &opts)?;
            // A named queue's records are kind 12: six bytes more.
            total += Self::enqueue_frame_len(p, 0) + if queue == 0 { 0 } else { 6 };
        }
        self.cover_ids(self.next_id.saturating_add(payloads.len() as u64))?;
        self.ensure_def(queue)?;
        self.log.ensure_room(total, self.next_id)?;
        // One write for the whole batch (under `pwrite` appends), and no
        // job made live before it succeeded: a batch that fails on a full
        // disk changes nothing (`Log::stage_flush`).
        let due_ms = now.saturating_add(ms(opts.delay));
        let mut written = Vec::with_capacity(payloads.len());
        self.log.stage_begin();
        for (i, p) in payloads.iter().enumerate() {
            let flags = if i + 1 < payloads.len() {
                FLAG_BATCH_MORE
            } else {
                0
            };
            let id = self.next_id + i as u64;
            let a = check_new_id(id)
                .and_then(|()| {
                    let rec = self.enqueue_record(id, queue, p, &opts, now, due_ms);
                    self.log.append(&rec, flags, id + 1)
                })
                .inspect_err(|_| self.log.stage_abort())?;
            written.push((id, a));
        }
        self.log.stage_flush()?;
        let lsn = written
            .last()
            .map_or(self.log.next_lsn.saturating_sub(1), |w| w.1.lsn);
        let ids = written.iter().map(|w| w.0).collect();
        for (id, a) in written {
            self.add_enqueued(id, queue, &opts, (now, due_ms), a);
        }
        Ok((ids, lsn))
    }

    /// Makes a job live: its slot, its segment's counts, and its place in
    /// the delivery order (`due_ms` for a waiting job).
    fn add_job(&mut self, id: u64, a: Appended, attempts: u16, state: SlotState, due_ms: u64) {
        assert!(
            self.jobs.get(id).is_none(),
            "job {id} is made live while live"
        );
        self.jobs.insert(
            id,
            Slot {
                seg: a.seg,
                off: a.off,
                len: a.len,
                attempts,
                state,
            },
        );
        match state {
            SlotState::Fresh => self.delivery.add_fresh(),
            SlotState::Waiting if !self.groups_mut(id).is_blocked(id) => {
                self.order_mut(id).push_waiting(id, due_ms)
            }
            _ => {}
        }
        self.count_in_segment(a.seg, a.len, true);
        self.unpark();
    }

    /// Adds (or removes) one record of `len` bytes to a segment's counts.
    fn count_in_segment(&mut self, seg: u32, len: u32, add: bool) {
        let Some(info) = self.log.info_mut(seg) else {
            return;
        };
        if add {
            info.live_jobs += 1;
            info.live_bytes += u64::from(len);
        } else {
            info.live_jobs -= 1;
            info.live_bytes -= u64::from(len);
        }
    }

    /// Fresh jobs the job table moved aside wait in the delivery order
    /// instead, at their enqueue time, so they keep their place.
    #[inline]
    fn unpark(&mut self) {
        if self.jobs.has_parked_fresh() {
            self.unpark_parked();
        }
    }

    /// [`QueueState::unpark`] once fresh jobs were parked.
    fn unpark_parked(&mut self) {
        for id in self.jobs.take_parked_fresh() {
            let enqueued_ms = self.enqueued_ms_of(id).min(self.last.wall);
            self.delivery.take_fresh();
            self.delivery.push_waiting(id, enqueued_ms);
        }
    }

    /// Removes a finished job (taken out of the delivery order already)
    /// from memory and from its segment's count.
    fn finish(&mut self, id: u64) {
        let Some(slot) = self.jobs.remove(id) else {
            return;
        };
        assert!(
            slot.state == SlotState::InFlight,
            "only a taken job is finished"
        );
        self.order_mut(id).forget(id);
        self.errors.forget(id);
        self.count_in_segment(slot.seg, slot.len, false);
        let freed = self.groups_mut(id).finish(id);
        self.named.forget(id);
        if let Some((next, due)) = freed {
            // The group's next job is free: it enters the delivery order
            // at its own due time, so it keeps its place.
            self.make_waiting(next, due);
            self.note_ready_in(next);
        }
        self.unpark();
    }

    fn segment_of(&self, slot: &Slot) -> Result<Arc<Segment>> {
        self.log
            .info(slot.seg)
            .map(|i| i.seg.clone())
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("segment {} is gone", slot.seg)))
    }

    /// Reads and verifies the full record of a live job.
    /// A job's enqueue time and max attempts, from its verified record,
    /// without copying its payload.
    fn job_meta(&self, slot: &Slot) -> Result<(u64, u32)> {
        let seg = self.segment_of(slot)?;
        let e = seg.enqueue_at(slot.off)?;
        Ok((e.enqueued_ms, u32::from(e.max_attempts)))
    }

    /// A job's max attempts, 0 if its record is damaged (so that it goes
    /// to the dead letters). Any other failure to read it (a sealed
    /// segment that cannot be mapped again: EMFILE, address space) is not
    /// damage and is returned: the job must keep its payload.
    fn max_attempts_of(&self, slot: &Slot) -> Result<u32> {
        match self.job_meta(slot) {
            Ok((_, max)) => Ok(max),
            Err(e) if e.kind() == ErrorKind::Corrupt => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn read_job<P>(
        &self,
        id: u64,
        slot: &Slot,
        keep: &mut impl FnMut(&[u8]) -> P,
    ) -> Result<JobRecord<P>> {
        // Owned copies: a `Job` pins no segment and a payload read later
        // cannot fault on a file truncated meanwhile (docs/architecture.md).
        // The segment is borrowed, not cloned: no reference count to move.
        let seg = &self
            .log
            .info(slot.seg)
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("segment {} is gone", slot.seg)))?
            .seg;
        let e = seg.enqueue_at(slot.off)?;
        if e.id != id {
            // Only a damaged checkpoint could point a job at another's
            // record: it is damage, never served as this job.
            return Err(Error::corrupt(
                &seg.path,
                u64::from(slot.off),
                format!("the record of job {id} is job {}'s", e.id),
            ));
        }
        Ok(JobRecord {
            key: e.key.to_vec(),
            payload: keep(e.payload),
            enqueued_ms: e.enqueued_ms,
            max_attempts: u32::from(e.max_attempts),
            priority: Priority::from_byte(e.priority),
            group: e.group.to_vec(),
        })
    }

    fn enqueued_ms_of(&self, id: u64) -> u64 {
        let Some(slot) = self.jobs.get(id) else {
            return 0;
        };
        self.log
            .info(slot.seg)
            .and_then(|i| {
                let at = slot.off as usize + FRAME_HEADER_LEN + 8;
                let bytes = i.seg.region.bytes(at, 8)?;
                i.seg.region.readable(at, 8).ok()?;
                i.seg
                    .region
                    .guard_read(|| crate::format::u64_at(bytes, 0))
                    .ok()?
            })
            .unwrap_or(0)
    }

    /// The smallest id whose enqueue is not known durable (`u64::MAX` when
    /// all are, or when delivery does not wait for durability). Ids are
    /// given in LSN order, so every smaller id is durable.
    fn first_unconfirmed(&mut self) -> u64 {
        if self.unconfirmed.is_empty() {
            return u64::MAX;
        }
        let durable = self.log.commit.durable();
        while self
            .unconfirmed
            .front()
            .is_some_and(|&(_, lsn)| lsn <= durable)
        {
            self.unconfirmed.pop_front();
        }
        self.unconfirmed.front().map_or(u64::MAX, |&(id, _)| id)
    }

    /// The next job of queue `queue` to serve, without taking it:
    /// `(id, from_waiting)`. None while the queue is paused.
    fn peek_next(&mut self, queue: u16, now: u64) -> Option<(u64, bool)> {
        if self.named.is_paused(queue) {
            return None;
        }
        let limit = self.first_unconfirmed();
        if queue != 0 {
            let order = self.lane_parts(queue).0;
            let normal = order
                .peek_normal(now)
                .filter(|&(_, id)| id < limit)
                .map(|(_, id)| (id, true));
            if !order.uses_levels() {
                return normal;
            }
            return order.pick(now, limit, normal);
        }
        let normal = self.peek_normal(now, limit);
        if !self.delivery.uses_levels() {
            return normal;
        }
        self.delivery.pick(now, limit, normal)
    }

    /// The next job of level Normal (fresh or waiting), ids below `limit`.
    fn peek_normal(&mut self, now: u64, limit: u64) -> Option<(u64, bool)> {
        let waiting = self.delivery.peek_normal(now).filter(|&(_, id)| id < limit);
        let fresh = if self.delivery.fresh() > 0 {
            let f = self.jobs.next_fresh(self.fresh_cursor);
            if let Some(f) = f {
                self.fresh_cursor = f;
            }
            f.filter(|&f| f < limit)
        } else {
            None
        };
        match (waiting, fresh) {
            (None, None) => None,
            (Some((_, id)), None) => Some((id, true)),
            (None, Some(f)) => Some((f, false)),
            (Some((due, id)), Some(f)) => {
                if (due, id) < (self.enqueued_ms_of(f), f) {
                    Some((id, true))
                } else {
                    Some((f, false))
                }
            }
        }
    }

    /// Takes a job out of the delivery order: it is in flight from now on.
    fn take(&mut self, id: u64, from_waiting: bool) {
        self.take_from_order(id, from_waiting);
        if let Some(slot) = self.jobs.get_mut(id) {
            slot.state = SlotState::InFlight;
        }
    }

    /// [`QueueState::take`] for a lease: the job's slot also counts the
    /// attempt, in the same lookup ([`QueueState::grant`] does not look
    /// the slot up again). A lease whose record then fails to be written
    /// is given back with its attempts as they were (`give_back`).
    fn take_leased<P>(&mut self, r: &Ready<P>) {
        self.take_from_order(r.id, r.from_waiting);
        if let Some(slot) = self.jobs.get_mut(r.id) {
            slot.state = SlotState::InFlight;
            slot.attempts = r.slot.attempts.saturating_add(1);
        }
    }

    /// The delivery order's side of [`QueueState::take`].
    fn take_from_order(&mut self, id: u64, from_waiting: bool) {
        let order = self.order_mut(id);
        if from_waiting {
            order.pop_due(id);
        } else {
            order.take_fresh();
        }
        order.taken(id);
    }

    /// Leases the next ready job, if any. A job whose record fails its
    /// checksum is moved to the dead letters and the next one is served.
    pub fn dequeue(&mut self, queue: u16, now: Now, visibility_ms: u64) -> Result<Option<Job>> {
        self.expire_leases(now)?;
        let Some(r) = self.next_ready(queue, now, &mut <[u8]>::to_vec)? else {
            return Ok(None);
        };
        let lease = Record::Lease {
            id: r.id,
            attempts: u32::from(r.slot.attempts.saturating_add(1)),
        };
        self.log.append(&lease, 0, self.next_id)?;
        self.take_leased(&r);
        Ok(Some(self.grant(r, now, visibility_ms)))
    }

    /// The next job to serve and its verified record, not taken yet, its
    /// payload kept by `keep` (called once, for the record returned). A
    /// job whose record fails its checksum is moved to the dead letters
    /// and the next one is looked at.
    fn next_ready<P>(
        &mut self,
        queue: u16,
        now: Now,
        keep: &mut impl FnMut(&[u8]) -> P,
    ) -> Result<Option<Ready<P>>> {
        loop {
            let Some((id, from_waiting)) = self.peek_next(queue, now.wall) else {
                return Ok(None);
            };
            let expected = if from_waiting {
                SlotState::Waiting
            } else {
                SlotState::Fresh
            };
            let slot = match self.jobs.get(id) {
                Some(s) if s.state == expected => s,
                _ => {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!("job {id} is next to serve but not ready (internal error)"),
                    ))
                }
            };
            match self.read_job(id, &slot, keep) {
                Ok(rec) => {
                    return Ok(Some(Ready {
                        id,
                        from_waiting,
                        slot,
                        rec,
                    }))
                }
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    self.log.mark_changed();
                    self.take(id, from_waiting);
                    self.dead_letter(id, "", now.wall)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The memory side of a lease whose record is written and whose job
    /// is taken ([`QueueState::take_leased`], which counted the attempt):
    /// its lease held.
    fn grant(&mut self, r: Ready, now: Now, visibility_ms: u64) -> Job {
        let attempts = r.slot.attempts.saturating_add(1);
        let token = self.grant_lease(r.id, now, visibility_ms);
        Job {
            id: r.id,
            attempt: u32::from(attempts),
            max_attempts: r.rec.max_attempts,
            enqueued_ms: r.rec.enqueued_ms,
            receipt: Receipt { id: r.id, token },
            key: r.rec.key,
            payload: Payload::Own(r.rec.payload),
            priority: r.rec.priority,
            group: r.rec.group,
            last_error: self.errors.shared(r.id),
        }
    }

    /// The lease of a job taken and whose lease record is written: held
    /// from now for `visibility_ms`, under a new token (returned).
    fn grant_lease(&mut self, id: u64, now: Now, visibility_ms: u64) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        let deadline = now.mono.saturating_add(visibility_ms);
        self.leases.insert(id, Lease { token, deadline });
        token
    }

    /// Ends leases whose deadline passed: the job is ready again, or dead
    /// if that was its last attempt (or its record is damaged).
    ///
    /// The check (the soonest deadline, nearly always ahead) is inline;
    /// the expiry is out of line.
    #[inline]
    pub fn expire_leases(&mut self, now: Now) -> Result<()> {
        if self.leases.next_deadline().is_none_or(|d| d > now.mono) {
            return Ok(());
        }
        self.expire_due_leases(now)
    }

    /// [`QueueState::expire_leases`] once a deadline (perhaps of a stale
    /// entry) is due.
    #[inline(never)]
    fn expire_due_leases(&mut self, now: Now) -> Result<()> {
        // Each expiry is whole once its record is written, so an operation
        // that starts by expiring leases (a dequeue, a cancel) may still
        // fail harmlessly after them, on a full disk say.
        let unchanged = self.log.op_unchanged();
        while let Some((id, lease)) = self.leases.first_expired(now.mono) {
            let Some(slot) = self.jobs.get(id) else {
                self.leases.remove(id);
                continue;
            };
            let max_attempts = self.max_attempts_of(&slot)?;
            if u32::from(slot.attempts) >= max_attempts {
                let mut text = format!("lease expired during attempt {}", slot.attempts);
                if let Some(last) = self.errors.get(id) {
                    // Cut to MAX_ERROR_LEN by `dead_letter`, as every
                    // dead letter's error is.
                    text = format!("{text} (last error: {last})");
                }
                self.dead_letter(id, &text, now.wall)?;
                self.leases.remove(id);
                continue;
            }
            // Record the expiry, so that after a restart the job keeps its
            // place (due when the lease ended, in wall time) instead of
            // counting as a lease of the stopped process.
            let due_ms = now
                .wall
                .saturating_sub(now.mono.saturating_sub(lease.deadline));
            self.log
                .append(&Record::Nack { id, due_ms }, 0, self.next_id)?;
            self.leases.remove(id);
            self.make_waiting(id, due_ms);
            self.counters.retried += 1;
        }
        if unchanged {
            self.log.changes_complete();
        }
        Ok(())
    }

    fn make_waiting(&mut self, id: u64, due_ms: u64) {
        if let Some(slot) = self.jobs.get_mut(id) {
            slot.state = SlotState::Waiting;
            self.order_mut(id).push_waiting(id, due_ms);
        }
    }

    /// Milliseconds until something may become ready for a consumer of
    /// `queues` (a due job of one of them, or an expiring lease), for
    /// blocking waits. Only those queues' jobs count: a job ready in
    /// another queue, which no one consumes, would otherwise wake this
    /// waiter every millisecond (a review measured one waiting 3 s burn
    /// 70 ms of CPU).
    ///
    /// At most the shortest default visibility timeout of `queues`: a
    /// lease another consumer takes while this one waits is not known
    /// when the wait begins, and no one is woken for it (that would wake
    /// an idle consumer for every lease), so a waiter looks again at least
    /// that often and a lease that runs out unsettled is noticed within
    /// one visibility timeout.
    pub fn wakeup_in(&self, now: Now, queues: &[u16]) -> Option<u64> {
        let due = queues
            .iter()
            .filter(|&&q| !self.named.is_paused(q))
            .filter_map(|&q| self.lane_ref(q))
            .filter_map(|(order, _)| order.next_due())
            .min()
            .map(|d| d.saturating_sub(now.wall));
        let exp = self
            .leases
            .next_deadline()
            .map(|d| d.saturating_sub(now.mono));
        let look_again = queues.iter().map(|&q| self.lease_ms(q, None)).min();
        [due, exp, look_again].into_iter().flatten().min()
    }

    /// Whether the receipt's lease is held and unexpired: that check
    /// inline, the error (rare) out of line.
    #[inline]
    fn check_receipt(&mut self, r: Receipt, now: Now) -> Result<()> {
        match self.leases.get(r.id) {
            Some(l) if l.token == r.token && l.deadline > now.mono => Ok(()),
            _ => self.receipt_refused(r, now),
        }
    }

    /// Why [`QueueState::check_receipt`] refused `r` (an expired lease is
    /// ended first).
    #[cold]
    #[inline(never)]
    fn receipt_refused(&mut self, r: Receipt, now: Now) -> Result<()> {
        match self.leases.get(r.id) {
            Some(l) if l.token == r.token && l.deadline > now.mono => Ok(()),
            Some(l) if l.token == r.token => {
                self.expire_leases(now)?;
                Err(Error::new(
                    ErrorKind::LeaseLost,
                    format!("the lease on job {} expired", r.id),
                ))
            }
            _ if r.id >= self.next_id => Err(Error::new(
                ErrorKind::NotFound,
                format!("no job {} was ever enqueued", r.id),
            )),
            _ => Err(Error::new(
                ErrorKind::LeaseLost,
                format!(
                    "the receipt's lease on job {} is no longer held (expired, or the job was settled or leased again)",
                    r.id
                ),
            )),
        }
    }

    /// Acks a job: it is finished and never delivered again.
    ///
    /// A valid receipt's lease is checked and taken in one lookup, and put
    /// back if the Ack record fails to be written (as in `ack_batch`);
    /// any other receipt is refused by [`QueueState::check_receipt`].
    pub fn ack(&mut self, r: Receipt, now: Now) -> Result<u64> {
        let lease = match self.leases.take_valid(r.id, r.token, now.mono) {
            Some(lease) => Some(lease),
            None => {
                self.check_receipt(r, now)?;
                self.leases.take(r.id)
            }
        };
        let a = match self.log.append(&Record::Ack { id: r.id }, 0, self.next_id) {
            Ok(a) => a,
            Err(e) => {
                if let Some(lease) = lease {
                    self.leases.insert(r.id, lease);
                }
                return Err(e);
            }
        };
        self.finish(r.id);
        self.counters.acked += 1;
        Ok(a.lsn)
    }

    /// Nacks a job: retried after a delay, or dead if out of attempts.
    pub fn nack(&mut self, r: Receipt, retry: Retry, error: &str, now: Now) -> Result<u64> {
        self.check_receipt(r, now)?;
        let Some(slot) = self.jobs.get(r.id) else {
            return Err(Error::new(ErrorKind::LeaseLost, "job is gone"));
        };
        let max_attempts = self.max_attempts_of(&slot)?;
        if u32::from(slot.attempts) >= max_attempts {
            let lsn = self.dead_letter(r.id, error, now.wall)?;
            self.leases.remove(r.id);
            return Ok(lsn);
        }
        let delay = match retry {
            Retry::Backoff => {
                let random = self.random();
                let queue = self.named.queue_of(r.id);
                let backoff = self.named.options(queue).and_then(|o| o.backoff);
                let backoff = backoff.unwrap_or(self.cfg.backoff);
                ms(backoff.delay(u32::from(slot.attempts), random))
            }
            Retry::After(d) => ms(d),
        };
        let due_ms = now.wall.saturating_add(delay);
        // With an error, a NackErr (kind 18) that keeps it; without, the
        // plain Nack, byte for byte as before.
        let error = dead_letters::cut_text(error);
        let rec = match error {
            "" => Record::Nack { id: r.id, due_ms },
            error => Record::NackErr {
                id: r.id,
                due_ms,
                error,
            },
        };
        let a = self.log.append(&rec, 0, self.next_id)?;
        self.errors.set(r.id, error);
        self.leases.remove(r.id);
        self.make_waiting(r.id, due_ms);
        if delay > 0 {
            // Every consumer recomputes its wait (see `Queue::enqueue_with`).
            self.note_due_later_in(r.id);
        } else {
            self.note_ready_in(r.id);
        }
        self.counters.retried += 1;
        Ok(a.lsn)
    }

    /// Sends a leased job straight to the dead letters.
    pub fn fail(&mut self, r: Receipt, error: &str, now: Now) -> Result<u64> {
        self.check_receipt(r, now)?;
        let lsn = self.dead_letter(r.id, error, now.wall)?;
        self.leases.remove(r.id);
        Ok(lsn)
    }

    /// Extends a lease to `now + by`.
    pub fn extend(&mut self, r: Receipt, by_ms: u64, now: Now) -> Result<()> {
        self.check_receipt(r, now)?;
        self.leases.extend(r.id, now.mono.saturating_add(by_ms));
        Ok(())
    }

    /// Forgets keys whose job is finished and whose window has passed.
    pub fn sweep_keys(&mut self, now: u64) {
        let (jobs, dead) = (&self.jobs, &self.dead);
        self.keys.retain(|e| key_is_kept(e, now, jobs, dead));
    }

    /// [`QueueState::sweep_keys`] about 64 Ki keys at a time (a keyed
    /// enqueue does one step while a sweep is due or under way, so none
    /// pays for a sweep of every key).
    fn sweep_keys_step(&mut self, now: u64) {
        const KEYS_PER_STEP: usize = 64 * 1024;
        let (jobs, dead) = (&self.jobs, &self.dead);
        self.keys
            .sweep_step(KEYS_PER_STEP, |e| key_is_kept(e, now, jobs, dead));
    }

    /// A snapshot of the counts: running counts, no scan.
    pub fn stats(&mut self, now: Now) -> Stats {
        self.delivery.promote(now.wall);
        let (mut due_now, delayed) = self.delivery.waiting_counts();
        // Jobs blocked behind their group's head count as delayed.
        let mut delayed = delayed + self.groups.blocked_count();
        let mut named_bytes = self.named.heap_bytes();
        for lane in self.named.lanes_mut() {
            lane.order.promote(now.wall);
            let (r, d) = lane.order.waiting_counts();
            due_now += r;
            delayed += d + lane.groups.blocked_count();
            named_bytes += lane.order.heap_bytes() + lane.groups.heap_bytes();
        }
        let index_bytes = self.jobs.heap_bytes()
            + named_bytes
            + self.delivery.heap_bytes()
            + self.groups.heap_bytes()
            + self.leases.heap_bytes()
            + self.keys.heap_bytes();
        Stats {
            ready: self.delivery.fresh() + due_now,
            delayed,
            in_flight: self.leases.len() as u64,
            dead: self.dead.entries().len() as u64,
            enqueued_total: self.counters.enqueued,
            acked_total: self.counters.acked,
            retried_total: self.counters.retried,
            dead_lettered_total: self.counters.dead_lettered,
            damaged_total: self.counters.damaged,
            carried_total: self.counters.carried,
            syncs_total: self.log.commit.syncs(),
            written_lsn: self.log.next_lsn - 1,
            durable_lsn: self.log.commit.durable(),
            segments: self.log.segments.len() as u64,
            disk_bytes: self.log.disk_bytes() + self.dead.disk_bytes(),
            index_bytes: index_bytes as u64,
            maintenance_error: self.maintenance_error(),
            paused: false,
        }
    }

    /// Asserts the invariants listed in the module docs (tests only; O(n)).
    pub fn check_invariants(&self) {
        let (fresh, per_seg) = self.check_slots();
        self.delivery.check(fresh);
        self.named.check();
        self.check_lanes();
        for id in self.leases.ids() {
            assert_eq!(
                self.jobs.get(id).map(|s| s.state),
                Some(SlotState::InFlight)
            );
        }
        // Only live jobs keep a last error, never an empty one.
        for (id, text) in self.errors.iter() {
            assert!(self.jobs.get(id).is_some(), "job {id} keeps an error");
            assert!(!text.is_empty() && text.len() <= crate::MAX_ERROR_LEN);
        }
        for info in &self.log.segments {
            let (n, bytes) = per_seg.get(&info.seg.id).copied().unwrap_or_default();
            assert_eq!(
                (info.live_jobs, info.live_bytes),
                (n, bytes),
                "segment {} counts",
                info.seg.id
            );
        }
        let mut last = 0;
        for &(id, _) in &self.unconfirmed {
            assert!(id > last, "unconfirmed enqueues out of order");
            last = id;
        }
        // Each key entry's check is the check of the key bytes it points
        // at (a checkpoint stores it as it is).
        for (_, e) in self.keys.iter() {
            if let Some(key) = stored_key(&self.log, &self.dead, &e) {
                assert_eq!(e.check, key_check(&key), "key check of job {}", e.id);
            }
        }
    }

    /// Asserts each live job's state against the delivery order, groups,
    /// leases and dead letters (part of [`QueueState::check_invariants`]);
    /// returns the count of fresh jobs and the live jobs and bytes per
    /// segment.
    fn check_slots(&self) -> (u64, HashMap<u32, (u64, u64)>) {
        let mut fresh = 0u64;
        let mut per_seg: HashMap<u32, (u64, u64)> = HashMap::new();
        for (id, slot) in self.jobs.iter() {
            let e = per_seg.entry(slot.seg).or_default();
            e.0 += 1;
            e.1 += u64::from(slot.len);
            let waiting = self.order_ref(id).is_some_and(|o| o.is_waiting(id));
            let blocked = self.groups_ref(id).is_some_and(|g| g.is_blocked(id));
            match slot.state {
                SlotState::Fresh => {
                    assert!(!self.jobs.is_straggler(id), "fresh job {id} parked aside");
                    assert!(!waiting, "fresh job {id} also waiting");
                    assert!(!blocked, "fresh job {id} blocked");
                    assert_eq!(
                        self.named.queue_of(id),
                        0,
                        "fresh job {id} of a named queue"
                    );
                    fresh += 1;
                }
                SlotState::Waiting => assert!(
                    waiting != blocked,
                    "job {id} waits outside the order, or is both blocked and waiting"
                ),
                SlotState::InFlight => {
                    assert!(
                        self.leases.contains(id),
                        "job {id} in flight without a lease"
                    );
                    assert!(!waiting, "leased job {id} also waiting");
                }
                SlotState::Empty => unreachable!("iter skips empty slots"),
            }
            assert!(
                !self.dead.entries().contains_key(&id),
                "job {id} is both live and dead"
            );
            assert!(
                id < self.next_id,
                "job {id} is not below next id {}",
                self.next_id
            );
        }
        (fresh, per_seg)
    }

    /// Asserts that every lane's (the default queue's and each named
    /// queue's) blocked and waiting jobs are waiting jobs of that queue
    /// (part of [`QueueState::check_invariants`]).
    fn check_lanes(&self) {
        let lanes = std::iter::once((0, (&self.delivery, &self.groups)))
            .chain(self.named.lanes().map(|(q, l)| (q, (&l.order, &l.groups))));
        let mut waiting: HashSet<u64> = HashSet::new();
        for (q, (order, groups)) in lanes {
            if q != 0 {
                order.check(0);
            }
            groups.check();
            for (id, _) in groups.blocked() {
                assert_eq!(
                    self.jobs.get(id).map(|s| s.state),
                    Some(SlotState::Waiting),
                    "blocked job {id}"
                );
                assert_eq!(self.named.queue_of(id), q, "blocked job {id}'s queue");
            }
            for id in order.waiting_ids() {
                assert_eq!(self.named.queue_of(id), q, "waiting job {id}'s queue");
                waiting.insert(id);
            }
        }
        for id in &waiting {
            assert_eq!(
                self.jobs.get(*id).map(|s| s.state),
                Some(SlotState::Waiting)
            );
        }
    }

    /// Whether job `id` is a dead letter (and not live again).
    pub fn is_dead_letter(&self, id: u64) -> bool {
        // Whether a job is dead does not depend on the time.
        let any_time = Now { wall: 0, mono: 0 };
        self.live_status(id, any_time) == crate::status::LiveStatus::Dead
    }

    /// The id the next enqueue takes: no job at or above it was ever
    /// issued (as far as the log says, and past the id floor once
    /// [`QueueState::install_id_floor`] ran).
    pub fn next_job_id(&self) -> u64 {
        self.next_id
    }

    /// Issues ids from `start` on (at least), held below `floor`.
    pub(crate) fn install_id_floor(&mut self, floor: IdFloor, start: u64) {
        self.next_id = self.next_id.max(start);
        self.id_floor = Some(floor);
    }

    /// Makes sure ids below `end` may be issued ([`IdFloor::cover`]).
    #[inline]
    fn cover_ids(&mut self, end: u64) -> Result<()> {
        match &mut self.id_floor {
            Some(floor) => floor
                .cover(end)
                .inspect_err(|_| self.log.note_outside_failure()),
            None => Ok(()),
        }
    }

    /// Makes the floor's file if it is missing, covering the next id.
    pub(crate) fn prepare_id_floor(&mut self) -> Result<()> {
        match &mut self.id_floor {
            Some(floor) if !floor.exists() => floor.cover(self.next_id.saturating_add(1)),
            _ => Ok(()),
        }
    }

    /// At a clean close: the floor down to the next id ([`IdFloor::settle`]).
    pub(crate) fn settle_id_floor(&mut self) -> Result<()> {
        match &mut self.id_floor {
            Some(floor) => floor.settle(self.next_id),
            None => Ok(()),
        }
    }

    /// Whether job `id` is neither live nor dead: finished, or never issued.
    pub fn is_settled_or_unknown(&self, id: u64) -> bool {
        use crate::status::LiveStatus;
        let any_time = Now { wall: 0, mono: 0 };
        matches!(
            self.live_status(id, any_time),
            LiveStatus::Finished | LiveStatus::NeverIssued
        )
    }

    /// Job `id`'s last error, while it is live and has one.
    pub fn last_error(&self, id: u64) -> Option<&str> {
        self.errors.get(id)
    }

    /// What the live state says about job `id` at `now` (for
    /// `Queue::status`). Read-only and O(1).
    pub fn live_status(&self, id: u64, now: Now) -> crate::status::LiveStatus {
        use crate::status::LiveStatus;
        if let Some(slot) = self.jobs.get(id) {
            let attempts = u32::from(slot.attempts);
            // A job due now but behind its group's unfinished head is not
            // ready (one with a due time of its own still reads `Delayed`).
            let ready = || match self.groups_ref(id).is_some_and(|g| g.is_blocked(id)) {
                true => LiveStatus::Blocked { attempts },
                false => LiveStatus::Ready { attempts },
            };
            return match slot.state {
                SlotState::Fresh => ready(),
                // A job blocked behind its group's head is not in the
                // delivery order: its due time is kept with the group.
                SlotState::Waiting => match self
                    .order_ref(id)
                    .and_then(|o| o.due_of(id))
                    .or_else(|| self.groups_ref(id).and_then(|g| g.blocked_due(id)))
                {
                    Some(due_ms) if due_ms > now.wall => LiveStatus::Delayed { due_ms, attempts },
                    _ => ready(),
                },
                SlotState::InFlight => {
                    let lease = self.leases.get(id).unwrap_or(Lease {
                        token: u64::MAX,
                        deadline: now.mono,
                    });
                    // Deadlines are monotonic; report the wall-clock time.
                    let left = lease.deadline.saturating_sub(now.mono);
                    LiveStatus::InFlight {
                        attempt: attempts,
                        lease_expires_ms: now.wall.saturating_add(left),
                        token: lease.token,
                    }
                }
                SlotState::Empty => LiveStatus::Finished,
            };
        }
        if self.dead.entries().contains_key(&id) {
            LiveStatus::Dead
        } else if id == 0 || id >= self.next_id {
            LiveStatus::NeverIssued
        } else {
            LiveStatus::Finished
        }
    }
}
