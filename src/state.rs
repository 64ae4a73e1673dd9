//! The queue's state and its operations, all run under the queue lock.
//!
//! Each operation validates first, then appends its record, then changes
//! memory, so a refused operation changes nothing. Each returns the LSN the
//! caller must see durable before acknowledging (group commit happens
//! outside the lock, in `queue`).
//!
//! Invariants (checked by `check_invariants` in tests):
//! - every live job is in exactly one of: fresh (served in id order),
//!   the due heap, the lease table;
//! - a segment's `live_jobs`/`live_bytes` count exactly the live jobs whose
//!   latest full record it holds;
//! - `fresh` counts the fresh jobs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::dead::DeadFile;
use crate::error::{Error, ErrorKind, Result};
use crate::format::frame::{FLAG_BATCH_MORE, FRAME_HEADER_LEN};
use crate::format::record::{EnqueueRec, Record, ENQUEUE_FIXED_LEN};
use crate::idhash::IdMap;
use crate::job::{Job, Receipt};
use crate::jobs::{JobTable, Slot, SlotState};
use crate::keys::{key_hash, KeyEntry, KeyIndex};
use crate::log::{Appended, Log};
use crate::options::{Backoff, EnqueueOptions, Retry, MAX_ATTEMPTS_LIMIT, MAX_KEY_LEN};
use crate::segment::Segment;
use crate::stats::Stats;

/// A lease held by a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Matches the receipt's token.
    pub token: u64,
    /// When the lease expires.
    pub deadline_ms: u64,
}

/// The options the state machine needs, in milliseconds.
#[derive(Debug, Clone)]
pub struct Config {
    /// Default max attempts.
    pub max_attempts: u32,
    /// Retry policy.
    pub backoff: Backoff,
    /// Dedup window.
    pub dedup_ms: u64,
    /// Largest payload.
    pub max_payload: u32,
}

/// Totals since open.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub enqueued: u64,
    pub acked: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub carried: u64,
}

/// The whole in-memory state of an open queue.
#[derive(Debug)]
pub struct QueueState {
    pub log: Log,
    pub jobs: JobTable,
    /// `(due_ms, id)` of waiting jobs.
    pub due: BinaryHeap<Reverse<(u64, u64)>>,
    pub leases: IdMap<Lease>,
    /// `(deadline_ms, id, token)`; stale entries are skipped.
    pub expiries: BinaryHeap<Reverse<(u64, u64, u64)>>,
    pub keys: KeyIndex,
    pub dead: DeadFile,
    pub next_id: u64,
    pub fresh_cursor: u64,
    pub fresh: u64,
    pub last_now: u64,
    pub next_token: u64,
    pub rng: u64,
    pub counters: Counters,
    pub cfg: Config,
    /// The oldest segment is kept for the remembered keys in it until
    /// this time: `(segment id, first expiry)`.
    pub key_block: Option<(u32, u64)>,
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

fn too_large(what: &str, len: usize, limit: usize) -> Error {
    Error::new(
        ErrorKind::PayloadTooLarge,
        format!("{what} of {len} bytes is over the limit of {limit} bytes"),
    )
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl QueueState {
    /// Monotonic "now": never behind a time already used.
    pub fn now(&mut self, clock_ms: u64) -> u64 {
        self.last_now = self.last_now.max(clock_ms);
        self.last_now
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

    /// Checks a payload and options against the limits.
    pub fn validate_enqueue(&self, payload: &[u8], opts: &EnqueueOptions) -> Result<()> {
        if payload.len() > self.cfg.max_payload as usize {
            return Err(too_large(
                "payload",
                payload.len(),
                self.cfg.max_payload as usize,
            ));
        }
        if let Some(key) = &opts.key {
            if key.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidOptions,
                    "an idempotency key must not be empty",
                ));
            }
            if key.len() > MAX_KEY_LEN {
                return Err(too_large("idempotency key", key.len(), MAX_KEY_LEN));
            }
        }
        if let Some(n) = opts.max_attempts {
            if n == 0 || n > MAX_ATTEMPTS_LIMIT {
                return Err(Error::new(
                    ErrorKind::InvalidOptions,
                    format!("max_attempts {n} is outside 1..={MAX_ATTEMPTS_LIMIT}"),
                ));
            }
        }
        Ok(())
    }

    /// Size of the frame an enqueue of this payload and key writes.
    pub fn enqueue_frame_len(payload: &[u8], key_len: usize) -> u64 {
        (FRAME_HEADER_LEN + ENQUEUE_FIXED_LEN + key_len + payload.len()) as u64
    }

    /// The job a known key points to, if the key is still known.
    fn known_key(&mut self, hash: u128, now: u64) -> Option<u64> {
        let entry = *self.keys.get(hash)?;
        let alive = self.jobs.get(entry.id).is_some()
            || self.dead.entries().contains_key(&entry.id)
            || entry.expires_ms > now;
        if alive {
            Some(entry.id)
        } else {
            self.keys.remove(hash);
            None
        }
    }

    /// Enqueues one job. `flags` marks batch members.
    pub fn enqueue(
        &mut self,
        payload: &[u8],
        opts: &EnqueueOptions,
        now: u64,
        flags: u8,
    ) -> Result<EnqueueOutcome> {
        let key = opts.key.as_deref().unwrap_or_default();
        let hash = (!key.is_empty()).then(|| key_hash(key));
        if let Some(hash) = hash {
            if let Some(id) = self.known_key(hash, now) {
                return Ok(EnqueueOutcome {
                    id,
                    duplicate: true,
                    lsn: self.log.next_lsn - 1,
                });
            }
        }
        let id = self.next_id;
        if id >= crate::format::MAX_ID {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                "job ids are exhausted (2^62 jobs enqueued)",
            ));
        }
        let due_ms = now.saturating_add(ms(opts.delay));
        let max_attempts = opts.max_attempts.unwrap_or(self.cfg.max_attempts);
        let rec = Record::Enqueue(EnqueueRec {
            id,
            enqueued_ms: now,
            due_ms,
            attempts: 0,
            max_attempts: u16::try_from(max_attempts).unwrap_or(u16::MAX),
            key,
            payload,
        });
        let a = self.log.append(&rec, flags, self.next_id + 1)?;
        self.next_id += 1;
        let state = if due_ms > now {
            self.due.push(Reverse((due_ms, id)));
            SlotState::Waiting
        } else {
            self.fresh += 1;
            SlotState::Fresh
        };
        self.add_job(id, a, 0, state);
        if let Some(hash) = hash {
            self.keys.insert(
                hash,
                KeyEntry {
                    id,
                    expires_ms: now.saturating_add(self.cfg.dedup_ms),
                    seg: a.seg,
                    off: a.off,
                },
            );
            if self.keys.wants_sweep() {
                self.sweep_keys(now);
            }
        }
        self.counters.enqueued += 1;
        Ok(EnqueueOutcome {
            id,
            duplicate: false,
            lsn: a.lsn,
        })
    }

    /// Enqueues a batch atomically: all records go in one segment, every
    /// record but the last flagged, so recovery keeps all or none.
    pub fn enqueue_batch(&mut self, payloads: &[&[u8]], now: u64) -> Result<(Vec<u64>, u64)> {
        let opts = EnqueueOptions::default();
        let mut total = 0u64;
        for p in payloads {
            self.validate_enqueue(p, &opts)?;
            total += Self::enqueue_frame_len(p, 0);
        }
        self.log.ensure_room(total, self.next_id)?;
        let mut ids = Vec::with_capacity(payloads.len());
        let mut lsn = self.log.next_lsn.saturating_sub(1);
        for (i, p) in payloads.iter().enumerate() {
            let flags = if i + 1 < payloads.len() {
                FLAG_BATCH_MORE
            } else {
                0
            };
            let out = self.enqueue(p, &opts, now, flags)?;
            ids.push(out.id);
            lsn = out.lsn;
        }
        Ok((ids, lsn))
    }

    pub(crate) fn add_job(&mut self, id: u64, a: Appended, attempts: u16, state: SlotState) {
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
        let info = self
            .log
            .info_mut(a.seg)
            .expect("appended to a live segment");
        info.live_jobs += 1;
        info.live_bytes += u64::from(a.len);
        self.unpark();
    }

    /// Fresh jobs the job table moved aside wait in the due heap instead,
    /// at their enqueue time, so they keep their place.
    fn unpark(&mut self) {
        for id in self.jobs.take_parked_fresh() {
            let enqueued_ms = self.enqueued_ms_of(id).min(self.last_now);
            self.fresh -= 1;
            self.due.push(Reverse((enqueued_ms, id)));
        }
    }

    /// Removes a finished job from memory and from its segment's count.
    pub(crate) fn finish(&mut self, id: u64) {
        let slot = self.jobs.remove(id).expect("finishing a live job");
        assert!(
            slot.state != SlotState::Fresh,
            "a fresh job is never finished"
        );
        let info = self
            .log
            .info_mut(slot.seg)
            .expect("a live job's segment exists");
        info.live_jobs -= 1;
        info.live_bytes -= u64::from(slot.len);
        self.unpark();
    }

    pub(crate) fn segment_of(&self, slot: &Slot) -> Result<Arc<Segment>> {
        self.log
            .info(slot.seg)
            .map(|i| i.seg.clone())
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("segment {} is gone", slot.seg)))
    }

    /// Reads and verifies the full record of a live job.
    pub fn read_job(
        &self,
        slot: &Slot,
    ) -> Result<(Arc<Segment>, usize, usize, usize, EnqueueRecMeta)> {
        let seg = self.segment_of(slot)?;
        let e = seg.enqueue_at(slot.off)?;
        let key_at = slot.off as usize + FRAME_HEADER_LEN + ENQUEUE_FIXED_LEN;
        let meta = EnqueueRecMeta {
            enqueued_ms: e.enqueued_ms,
            max_attempts: u32::from(e.max_attempts),
            key_len: e.key.len(),
        };
        let payload_at = key_at + e.key.len();
        let payload_len = e.payload.len();
        Ok((seg, key_at, payload_at, payload_len, meta))
    }

    fn enqueued_ms_of(&self, id: u64) -> u64 {
        let Some(slot) = self.jobs.get(id) else {
            return 0;
        };
        self.log
            .info(slot.seg)
            .and_then(|i| {
                i.seg
                    .region
                    .bytes(slot.off as usize + FRAME_HEADER_LEN + 8, 8)
            })
            .map_or(0, |b| crate::format::u64_at(b, 0).unwrap_or(0))
    }

    /// The next job to serve, without taking it: `(id, from_due_heap)`.
    fn peek_next(&mut self, now: u64) -> Option<(u64, bool)> {
        let waiting = self
            .due
            .peek()
            .map(|Reverse(k)| *k)
            .filter(|(due, _)| *due <= now);
        let fresh = if self.fresh > 0 {
            let f = self.jobs.next_fresh(self.fresh_cursor);
            if let Some(f) = f {
                self.fresh_cursor = f;
            }
            f
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

    /// Leases the next ready job, if any.
    pub fn dequeue(&mut self, now: u64, visibility_ms: u64) -> Result<Option<Job>> {
        self.expire_leases(now)?;
        let Some((id, from_heap)) = self.peek_next(now) else {
            return Ok(None);
        };
        let slot = *self.jobs.get(id).expect("a ready job is live");
        let (segment, key_at, payload_at, payload_len, meta) = self.read_job(&slot)?;
        let (key, payload) = (
            segment.copy(key_at, meta.key_len)?,
            segment.copy(payload_at, payload_len)?,
        );
        let attempts = slot.attempts.saturating_add(1);
        self.log.append(
            &Record::Lease {
                id,
                attempts: u32::from(attempts),
            },
            0,
            self.next_id,
        )?;
        if from_heap {
            self.due.pop();
        } else {
            self.fresh -= 1;
        }
        let slot = self.jobs.get_mut(id).expect("a ready job is live");
        slot.attempts = attempts;
        slot.state = SlotState::InFlight;
        let token = self.next_token;
        self.next_token += 1;
        let deadline_ms = now.saturating_add(visibility_ms);
        self.leases.insert(id, Lease { token, deadline_ms });
        self.expiries.push(Reverse((deadline_ms, id, token)));
        Ok(Some(Job {
            id,
            attempt: u32::from(attempts),
            max_attempts: meta.max_attempts,
            enqueued_ms: meta.enqueued_ms,
            receipt: Receipt { id, token },
            key,
            payload,
        }))
    }

    /// Ends leases whose deadline passed: the job is ready again, or dead
    /// if that was its last attempt.
    pub fn expire_leases(&mut self, now: u64) -> Result<()> {
        while let Some(&Reverse((deadline, id, token))) = self.expiries.peek() {
            if deadline > now {
                break;
            }
            let current = self.leases.get(&id).copied();
            if current
                != Some(Lease {
                    token,
                    deadline_ms: deadline,
                })
            {
                self.expiries.pop();
                continue;
            }
            let slot = *self.jobs.get(id).expect("a leased job is live");
            let (_, _, _, _, meta) = self.read_job(&slot)?;
            if u32::from(slot.attempts) >= meta.max_attempts {
                let text = format!("lease expired during attempt {}", slot.attempts);
                self.dead_letter(id, &text, now)?;
                self.expiries.pop();
                self.leases.remove(&id);
            } else {
                // Record the expiry, so that after a restart the job keeps
                // its place (due at the deadline) instead of counting as a
                // lease of the stopped process.
                self.log.append(
                    &Record::Nack {
                        id,
                        due_ms: deadline,
                    },
                    0,
                    self.next_id,
                )?;
                self.expiries.pop();
                self.leases.remove(&id);
                self.jobs.get_mut(id).expect("live").state = SlotState::Waiting;
                self.due.push(Reverse((deadline, id)));
                self.counters.retried += 1;
            }
        }
        Ok(())
    }

    /// Forgets a lease. Expiry entries of settled leases are dropped in
    /// bulk once they outnumber the live leases, so memory follows the
    /// leases held, not the dequeue rate.
    fn end_lease(&mut self, id: u64) {
        self.leases.remove(&id);
        if self.expiries.len() > 2 * self.leases.len() + 1024 {
            let leases = &self.leases;
            self.expiries.retain(|Reverse((deadline, id, token))| {
                leases.get(id)
                    == Some(&Lease {
                        token: *token,
                        deadline_ms: *deadline,
                    })
            });
            if self.leases.capacity() > 4 * self.leases.len() + 1024 {
                self.leases.shrink_to_fit();
            }
            if self.expiries.capacity() > 4 * self.expiries.len() + 1024 {
                self.expiries.shrink_to_fit();
            }
        }
    }

    /// The soonest time something becomes ready (a due job or an expiring
    /// lease), for blocking waits.
    pub fn next_wakeup(&self) -> Option<u64> {
        let due = self.due.peek().map(|Reverse((d, _))| *d);
        let exp = self.expiries.peek().map(|Reverse((d, _, _))| *d);
        match (due, exp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn check_receipt(&mut self, r: Receipt, now: u64) -> Result<()> {
        match self.leases.get(&r.id) {
            Some(l) if l.token == r.token && l.deadline_ms > now => Ok(()),
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
    pub fn ack(&mut self, r: Receipt, now: u64) -> Result<u64> {
        self.check_receipt(r, now)?;
        let a = self
            .log
            .append(&Record::Ack { id: r.id }, 0, self.next_id)?;
        self.end_lease(r.id);
        self.finish(r.id);
        self.counters.acked += 1;
        self.reclaim(now)?;
        Ok(a.lsn)
    }

    /// Nacks a job: retried after a delay, or dead if out of attempts.
    pub fn nack(&mut self, r: Receipt, retry: Retry, error: &str, now: u64) -> Result<u64> {
        self.check_receipt(r, now)?;
        let slot = *self.jobs.get(r.id).expect("a leased job is live");
        let (_, _, _, _, meta) = self.read_job(&slot)?;
        if u32::from(slot.attempts) >= meta.max_attempts {
            self.end_lease(r.id);
            return self.dead_letter(r.id, error, now);
        }
        let delay = match retry {
            Retry::Backoff => {
                let random = self.random();
                ms(self.cfg.backoff.delay(u32::from(slot.attempts), random))
            }
            Retry::After(d) => ms(d),
        };
        let due_ms = now.saturating_add(delay);
        let a = self
            .log
            .append(&Record::Nack { id: r.id, due_ms }, 0, self.next_id)?;
        self.end_lease(r.id);
        self.jobs.get_mut(r.id).expect("live").state = SlotState::Waiting;
        self.due.push(Reverse((due_ms, r.id)));
        self.counters.retried += 1;
        Ok(a.lsn)
    }

    /// Sends a leased job straight to the dead letters.
    pub fn fail(&mut self, r: Receipt, error: &str, now: u64) -> Result<u64> {
        self.check_receipt(r, now)?;
        self.end_lease(r.id);
        self.dead_letter(r.id, error, now)
    }

    /// Extends a lease to `now + by`.
    pub fn extend(&mut self, r: Receipt, by_ms: u64, now: u64) -> Result<()> {
        self.check_receipt(r, now)?;
        let lease = self.leases.get_mut(&r.id).expect("checked");
        lease.deadline_ms = now.saturating_add(by_ms);
        self.expiries
            .push(Reverse((lease.deadline_ms, r.id, r.token)));
        Ok(())
    }

    /// Forgets keys whose job is finished and whose window has passed.
    pub fn sweep_keys(&mut self, now: u64) {
        let (jobs, dead) = (&self.jobs, &self.dead);
        self.keys.retain(|e| {
            e.expires_ms > now || jobs.get(e.id).is_some() || dead.entries().contains_key(&e.id)
        });
    }

    /// A snapshot of the counts.
    pub fn stats(&self, now: u64) -> Stats {
        let due_now = self
            .due
            .iter()
            .filter(|Reverse((due, _))| *due <= now)
            .count() as u64;
        let index_bytes = self.jobs.heap_bytes()
            + self.due.capacity() * 16
            + self.leases.capacity() * 33
            + self.expiries.capacity() * 24
            + self.keys.len() * 49;
        Stats {
            ready: self.fresh + due_now,
            delayed: self.due.len() as u64 - due_now,
            in_flight: self.leases.len() as u64,
            dead: self.dead.entries().len() as u64,
            enqueued_total: self.counters.enqueued,
            acked_total: self.counters.acked,
            retried_total: self.counters.retried,
            dead_lettered_total: self.counters.dead_lettered,
            carried_total: self.counters.carried,
            syncs_total: self.log.commit.syncs(),
            written_lsn: self.log.next_lsn - 1,
            durable_lsn: self.log.commit.durable(),
            segments: self.log.segments.len() as u64,
            disk_bytes: self.log.disk_bytes() + self.dead.disk_bytes(),
            index_bytes: index_bytes as u64,
        }
    }

    /// Asserts the invariants listed in the module docs (tests only; O(n)).
    pub fn check_invariants(&self) {
        let mut fresh = 0u64;
        let mut per_seg: HashMap<u32, (u64, u64)> = HashMap::new();
        let waiting: std::collections::HashSet<u64> =
            self.due.iter().map(|Reverse((_, id))| *id).collect();
        assert_eq!(
            waiting.len(),
            self.due.len(),
            "a job is twice in the due heap"
        );
        for (id, slot) in self.jobs.iter() {
            let e = per_seg.entry(slot.seg).or_default();
            e.0 += 1;
            e.1 += u64::from(slot.len);
            match slot.state {
                SlotState::Fresh => {
                    assert!(!self.jobs.is_straggler(id), "fresh job {id} parked aside");
                    fresh += 1;
                }
                SlotState::Waiting => {
                    assert!(waiting.contains(&id), "job {id} waits outside the heap")
                }
                SlotState::InFlight => assert!(
                    self.leases.contains_key(&id),
                    "job {id} in flight without a lease"
                ),
                SlotState::Empty => unreachable!("iter skips empty slots"),
            }
            assert!(
                id < self.next_id,
                "job {id} is not below next id {}",
                self.next_id
            );
        }
        assert_eq!(fresh, self.fresh, "fresh count");
        for id in &waiting {
            assert_eq!(
                self.jobs.get(*id).map(|s| s.state),
                Some(SlotState::Waiting)
            );
        }
        for id in self.leases.keys() {
            assert_eq!(
                self.jobs.get(*id).map(|s| s.state),
                Some(SlotState::InFlight)
            );
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
    }

    /// What the live state says about job `id` at `now` (for
    /// `Queue::status`). Read-only; O(1) except for a waiting job, whose due
    /// time is found by a scan of the due heap (O(waiting jobs)).
    pub fn live_status(&self, id: u64, now: u64) -> crate::status::LiveStatus {
        use crate::status::LiveStatus;
        if let Some(slot) = self.jobs.get(id) {
            let attempts = u32::from(slot.attempts);
            return match slot.state {
                SlotState::Fresh => LiveStatus::Ready { attempts },
                SlotState::Waiting => {
                    let due_ms = self
                        .due
                        .iter()
                        .find(|Reverse((_, j))| *j == id)
                        .map_or(now, |Reverse((due, _))| *due);
                    if due_ms > now {
                        LiveStatus::Delayed { due_ms, attempts }
                    } else {
                        LiveStatus::Ready { attempts }
                    }
                }
                SlotState::InFlight => {
                    let lease = self.leases.get(&id).copied().unwrap_or(Lease {
                        token: u64::MAX,
                        deadline_ms: now,
                    });
                    LiveStatus::InFlight {
                        attempt: attempts,
                        lease_expires_ms: lease.deadline_ms,
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

/// Fields of a job's enqueue record.
#[derive(Debug, Clone, Copy)]
pub struct EnqueueRecMeta {
    pub enqueued_ms: u64,
    pub max_attempts: u32,
    pub key_len: usize,
}
