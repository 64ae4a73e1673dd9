//! Giving disk back: deleting finished segments, carrying live jobs forward.
//!
//! Only the oldest segment is ever deleted, so a record in any remaining
//! segment can rely on every later segment still existing. A segment is
//! deleted when none of its jobs is live. If a few live jobs pin it (a
//! quarter of a segment or less), their records are first rewritten into
//! the active segment with their current state ("carried forward"), so
//! that disk use follows the live jobs (guarantee 9). Idempotency keys of
//! finished jobs whose window has not ended are carried the same way.
//!
//! Deletion protocol, each step durable before the next:
//! 1. append the carried records;
//! 2. fdatasync the active segment and the dead-letter file (every record
//!    that supersedes the old segment is durable);
//! 3. unlink the old segment; fsync the directory.
//!
//! A crash after 1 or 2 leaves both copies; replay keeps the later one,
//! which carries the same id and state, so nothing is lost or duplicated.

//! Maintenance never fails the operation that triggered it: `queue` runs
//! [`QueueState::maintain`] after an operation has happened. A failed
//! unlink or directory sync is recorded and retried later; damage met
//! while carrying (a record that no longer verifies) stops reclaim until
//! the queue is reopened, reported in `Stats::maintenance_error`; only a
//! failed append or log sync is returned, to poison the queue (after a
//! failed fsync nothing more may be published), except a carried record's
//! write rolled back on a full disk as the first change of its step
//! (`Log::take_harmless_failure`): recorded, and retried later.
//!
//! Carrying is incremental: the live jobs of the segment are listed a step
//! of the job table per call, then at most [`CARRY_BUDGET`] bytes are
//! copied per call, so no single operation pays for a scan of every live
//! job or for a whole segment's worth of copies. The scan of the key index
//! for the keys homed in that segment runs once per segment.

use crate::error::{Error, ErrorKind, Result};
use crate::format::frame::{FLAG_BATCH_MORE, FRAME_HEADER_LEN};
use crate::format::record::{EnqueueRec, Record};
use crate::jobs::SlotState;
use crate::keys::KeyEntry;
use crate::log::Appended;
use crate::segment::Segment;

use super::QueueState;

/// Length of a lease frame.
pub(super) const LEASE_FRAME_LEN: u64 = FRAME_HEADER_LEN as u64 + 12;
/// Bytes of job records carried per maintenance call.
const CARRY_BUDGET: u64 = 64 * 1024;
/// Maintenance calls skipped after a failed unlink before trying again.
const RETRY_AFTER: u32 = 256;

/// Job-table slots looked at per call while listing a segment's jobs.
const SCAN_STEP: usize = 32 * 1024;
/// Key index entries looked at per operation (whole shards, see
/// `KeyIndex::scan`) while listing the keys homed in the segment to
/// empty: an index of up to this many keys is listed in one operation, a
/// million keys in 16.
const KEY_SCAN_ENTRIES: usize = 64 * 1024;

/// The keys homed in a segment, being listed a few shards per operation.
#[derive(Debug)]
struct KeyScan {
    seg: u32,
    next: usize,
    found: Vec<(u128, KeyEntry)>,
}

/// The keys homed in the front segment, listed: what carrying the keys of
/// its finished jobs would write, the soonest of their expiries, and the
/// entries as they were listed.
#[derive(Debug)]
struct Homed {
    seg: u32,
    bytes: u64,
    /// How many Key records `bytes` is (keys of finished jobs in their
    /// window).
    count: u64,
    first_expiry: u64,
    keys: Vec<(u128, KeyEntry)>,
    /// How many of `keys` `carry_keys` went through already (it carries
    /// them a budget at a time).
    carried: usize,
}

/// The oldest segment, kept for the remembered keys in it until the first
/// expires, or until the log outgrows what is live
/// ([`QueueState::log_outgrew_live`], looked at again once the log has
/// `recheck_at` segments).
#[derive(Debug, Clone, Copy)]
struct KeyBlock {
    seg: u32,
    until: u64,
    recheck_at: usize,
}

impl Homed {
    /// No key listed yet for segment `seg`.
    fn empty(seg: u32) -> Homed {
        Homed {
            seg,
            bytes: 0,
            count: 0,
            first_expiry: u64::MAX,
            keys: Vec::new(),
            carried: 0,
        }
    }
}

/// When a key block next looks at the log's size: once it grew by a
/// quarter (at least 4 segments), so the sum over segments it takes is
/// amortised over the segments added.
fn recheck_at(segments: usize) -> usize {
    segments + (segments / 4).max(4)
}

/// The live jobs of a segment to carry.
#[derive(Debug)]
enum Plan {
    /// Listing: segment, next id to look at, `(offset, id)` found so far.
    Scanning(u32, u64, Vec<(u32, u64)>),
    /// Listed: segment, ids still to carry (last in record order first).
    Ready(u32, Vec<u64>),
}

/// The state of maintenance between calls.
#[derive(Debug, Default)]
pub(super) struct Maintenance {
    /// Set when damage stopped reclaim (until reopen).
    stuck: Option<String>,
    /// The last failure, for `Stats`.
    last_error: Option<String>,
    /// Calls to skip before retrying a failed deletion.
    backoff: u32,
    /// Live jobs of the segment being emptied: being listed, or listed.
    plan: Option<Plan>,
    /// The oldest segment is kept for the remembered keys in it.
    key_block: Option<KeyBlock>,
    /// The keys homed in the front segment, listed once per segment (the
    /// listing visits every key, a few shards per operation) until its
    /// first key expires. The byte count only steers the choice to carry or
    /// wait; `carry_keys` carries those of the listed keys that are still
    /// homed there when it runs (keys only ever leave the oldest segment).
    homed: Option<Homed>,
    /// The listing under way.
    key_scan: Option<KeyScan>,
}

impl Maintenance {
    /// The last maintenance failure, if any.
    pub(super) fn error(&self) -> Option<String> {
        self.stuck.clone().or_else(|| self.last_error.clone())
    }
}

impl QueueState {
    /// The last maintenance failure: reclaim's, or a deletion's (`upkeep`).
    pub(super) fn maintenance_error(&self) -> Option<String> {
        self.maintenance
            .error()
            .or_else(|| self.log.upkeep().error())
    }

    /// Runs reclaim as best-effort maintenance after an operation. Returns
    /// only an I/O error of an append or a log sync, which must poison the
    /// queue; every other failure is recorded and retried or reported.
    ///
    /// The check (one segment, nothing to reclaim: nearly every operation
    /// of a short queue) is inline; the rest is out of line.
    #[inline]
    pub fn maintain(&mut self, now: u64) -> Option<Error> {
        if self.maintenance.stuck.is_some() || self.log.segments.len() <= 1 {
            return None;
        }
        self.maintain_reclaim(now)
    }

    /// [`QueueState::maintain`] with segments to look at.
    #[inline(never)]
    fn maintain_reclaim(&mut self, now: u64) -> Option<Error> {
        if self.maintenance.backoff > 0 {
            self.maintenance.backoff -= 1;
            return None;
        }
        match self.reclaim(now) {
            Ok(()) => None,
            // A carried record's write rolled back on a full disk (each
            // carry is its own step, see `carry_job`): nothing changed, so
            // reclaim just tries again later.
            Err(e) if e.kind() == ErrorKind::Io && self.log.take_harmless_failure() => {
                self.maintenance.last_error = Some(format!("reclaim: {e}"));
                self.maintenance.backoff = RETRY_AFTER;
                None
            }
            Err(e) if e.kind() == ErrorKind::Io => Some(e),
            Err(e) => {
                self.maintenance.stuck = Some(format!("reclaim stopped: {e}"));
                None
            }
        }
    }

    /// Deletes the oldest segments while they hold nothing live, carrying a
    /// few live jobs forward where that frees a segment.
    fn reclaim(&mut self, now: u64) -> Result<()> {
        // Never reclaim a segment created during this pass: carrying can
        // fill the active segment, and its successor must wait its turn.
        let stop = self.log.active().id;
        let mut budget = CARRY_BUDGET;
        while self.log.segments.len() > 1 {
            let front = &self.log.segments[0];
            let id = front.seg.id;
            let (live_jobs, live_bytes) = (front.live_jobs, front.live_bytes);
            if id >= stop || self.key_blocked(id, now) {
                break;
            }
            // Fresh jobs in the oldest segment are the next to be served:
            // let consumers drain them instead of copying.
            if live_bytes * 4 > self.log.seg_size || (live_jobs > 0 && self.oldest_fresh_in(id)) {
                break;
            }
            // Keys of finished jobs still in their window count as live
            // bytes too: a segment that is mostly remembered keys stays
            // until they expire instead of being copied forward again,
            // unless the log behind it outgrew what is live.
            let Some((key_bytes, first_expiry)) = self.homed_keys_of(id, now) else {
                break; // still listing keys: continue on the next call
            };
            if (live_bytes + key_bytes) * 4 > self.log.seg_size && !self.log_outgrew_live() {
                self.maintenance.key_block = Some(KeyBlock {
                    seg: id,
                    until: first_expiry,
                    recheck_at: recheck_at(self.log.segments.len()),
                });
                break;
            }
            self.maintenance.key_block = None;
            if live_jobs > 0 && !self.carry_jobs(id, &mut budget)? {
                break; // budget spent: continue on the next call
            }
            if !self.carry_keys(id, now, &mut budget)? {
                break; // budget spent: continue on the next call
            }
            self.carry_defs(id)?;
            if self.log.segments.len() <= 1 || self.log.segments[0].live_jobs > 0 {
                break;
            }
            if !self.delete_front(id)? {
                break;
            }
        }
        Ok(())
    }

    /// Whether the log is larger than guarantee 9 allows for what is live
    /// in it: 4 × (the live jobs' bytes and the remembered keys' Key
    /// records) plus 2 segments. Then the front segment is carried forward
    /// even if it is mostly remembered keys: kept until its first key expires, it
    /// would hold back every segment behind it for up to a dedup window,
    /// as keyed jobs churned past it (57 GB in 27 minutes of the CLI's
    /// live test). Each such carry writes at most a segment and frees the
    /// segments behind it; a log made mostly of keys never outgrows this
    /// bound, so its keys are not copied over and over. The keys' bytes
    /// are estimated from the front segment's own (its Key records'
    /// average size) times the keys remembered.
    fn log_outgrew_live(&self) -> bool {
        let per_key = match &self.maintenance.homed {
            Some(h) if h.count > 0 => h.bytes / h.count,
            _ => (FRAME_HEADER_LEN + 16) as u64,
        };
        let keys = (self.keys.len() as u64).saturating_mul(per_key);
        let live: u64 = self.log.segments.iter().map(|s| s.live_bytes).sum();
        let seg = self.log.seg_size;
        let held = (self.log.segments.len() as u64).saturating_mul(seg);
        held > keys
            .saturating_add(live)
            .saturating_mul(4)
            .saturating_add(2 * seg)
    }

    /// Whether front segment `id` is kept for its remembered keys (see
    /// [`KeyBlock`]).
    fn key_blocked(&mut self, id: u32, now: u64) -> bool {
        let Some(b) = self.maintenance.key_block else {
            return false;
        };
        if b.seg != id || now >= b.until {
            return false;
        }
        let segments = self.log.segments.len();
        if segments < b.recheck_at {
            return true;
        }
        if self.log_outgrew_live() {
            return false;
        }
        self.maintenance.key_block = Some(KeyBlock {
            recheck_at: recheck_at(segments),
            ..b
        });
        true
    }

    /// Takes the emptied oldest segment out of the queue's view: the dead
    /// letters are made durable now (if anything is unsynced there), the
    /// log's carried records and the unlink are left to `upkeep`, after
    /// the queue lock is released. Returns whether it was taken.
    fn delete_front(&mut self, id: u32) -> Result<bool> {
        self.dead.sync_if_dirty()?;
        let seg = self.log.retire_front();
        debug_assert_eq!(seg.map(|s| s.id), Some(id));
        Ok(true)
    }

    /// What carrying the keys of finished jobs homed in segment `id` would
    /// write, and the soonest of their expiries (see [`Homed`]), or `None`
    /// while the keys are still being listed ([`KEY_SCAN_ENTRIES`] keys
    /// per call, so no operation pays for a scan of every key).
    fn homed_keys_of(&mut self, id: u32, now: u64) -> Option<(u64, u64)> {
        if let Some(h) = &self.maintenance.homed {
            if h.seg == id && now < h.first_expiry {
                return Some((h.bytes, h.first_expiry));
            }
        }
        if self.keys.is_empty() {
            self.maintenance.homed = None;
            return Some((0, u64::MAX));
        }
        let mut scan = match self.maintenance.key_scan.take() {
            Some(s) if s.seg == id => s,
            _ => KeyScan {
                seg: id,
                next: 0,
                found: Vec::new(),
            },
        };
        let next = self.keys.scan(scan.next, KEY_SCAN_ENTRIES, |hash, e| {
            if e.seg == id {
                scan.found.push((hash, e));
            }
        });
        if let Some(next) = next {
            scan.next = next;
            self.maintenance.key_scan = Some(scan);
            return None;
        }
        let homed = self.homed_key_bytes(id, scan.found, now);
        let out = (homed.bytes, homed.first_expiry);
        self.maintenance.homed = Some(homed);
        Some(out)
    }

    /// Bytes of the key records that carrying the keys of finished jobs
    /// among `found` (the keys homed in segment `id`) would write, and the
    /// soonest of their expiries. Forgets expired keys.
    fn homed_key_bytes(&mut self, id: u32, found: Vec<(u128, KeyEntry)>, now: u64) -> Homed {
        let mut homed = Homed::empty(id);
        let Some(seg) = self.log.info(id).map(|i| i.seg.clone()) else {
            return homed;
        };
        for (hash, entry) in found {
            if self.jobs.get(entry.id).is_some() {
                homed.keys.push((hash, entry));
                continue;
            }
            if entry.expires_ms <= now {
                self.keys.remove(hash, entry.id);
                continue;
            }
            homed.first_expiry = homed.first_expiry.min(entry.expires_ms);
            // What carrying it costs: a key record, not the job's record.
            let key_len =
                seg.frame_at(entry.off)
                    .ok()
                    .map_or(0, |f| match Record::decode(f.kind, f.body) {
                        Some(Record::Enqueue(e)) => e.key.len(),
                        Some(Record::Key { key, .. }) => key.len(),
                        _ => 0,
                    });
            homed.bytes += (FRAME_HEADER_LEN + 16 + key_len) as u64;
            homed.count += 1;
            homed.keys.push((hash, entry));
        }
        homed
    }

    fn oldest_fresh_in(&mut self, id: u32) -> bool {
        if self.delivery.fresh() == 0 {
            return false;
        }
        let Some(first) = self.jobs.next_fresh(self.fresh_cursor) else {
            return false;
        };
        self.fresh_cursor = first;
        self.jobs.get(first).is_some_and(|s| s.seg == id)
    }

    /// The live jobs of segment `id` still to carry, in record order, or
    /// `None` while they are still being listed. The job table is scanned
    /// in steps of [`SCAN_STEP`] slots per call, so no call pays for a scan
    /// of every live job (a job made live meanwhile is never in this old
    /// segment; one finished meanwhile is skipped when carried). From the
    /// job table, not a walk of the segment's frames: a segment opened in
    /// salvage mode may hold damage between live records.
    fn carry_plan(&mut self, id: u32) -> Option<Vec<u64>> {
        let (mut from, mut found) = match self.maintenance.plan.take() {
            Some(Plan::Ready(seg, ids)) if seg == id => return Some(ids),
            Some(Plan::Scanning(seg, from, found)) if seg == id => (from, found),
            _ => (0, Vec::new()),
        };
        let (chunk, next) = self.jobs.scan(from, SCAN_STEP);
        found.extend(
            chunk
                .iter()
                .filter(|(_, s)| s.seg == id)
                .map(|(j, s)| (s.off, *j)),
        );
        match next {
            Some(n) => {
                from = n;
                self.maintenance.plan = Some(Plan::Scanning(id, from, found));
                None
            }
            None => {
                let stragglers = self.jobs.stragglers().filter(|(_, s)| s.seg == id);
                found.extend(stragglers.map(|(j, s)| (s.off, j)).collect::<Vec<_>>());
                // Carried last first: the plan is popped from the back.
                found.sort_unstable_by(|a, b| b.cmp(a));
                Some(found.into_iter().map(|(_, job)| job).collect())
            }
        }
    }

    /// Rewrites live jobs of segment `id` into the active segment, up to
    /// `budget` bytes. Returns whether none is left.
    fn carry_jobs(&mut self, id: u32, budget: &mut u64) -> Result<bool> {
        let Some(mut plan) = self.carry_plan(id) else {
            return Ok(false);
        };
        while let Some(&job) = plan.last() {
            if *budget == 0 {
                self.maintenance.plan = Some(Plan::Ready(id, plan));
                return Ok(false);
            }
            if self.jobs.get(job).is_some_and(|s| s.seg == id) {
                *budget = budget.saturating_sub(self.carry_job(id, job)?);
            }
            plan.pop();
        }
        Ok(true)
    }

    /// Rewrites one live job with its current attempts and due time;
    /// returns the bytes written.
    fn carry_job(&mut self, id: u32, job: u64) -> Result<u64> {
        // One step: its records, then memory. A full disk on its first
        // record changes nothing (see `maintain`); on the error or the
        // lease that follow the copy (`append_carried`) it poisons the
        // queue.
        self.log.begin_op();
        let seg = self.log.info(id).map(|i| i.seg.clone());
        let slot = self
            .jobs
            .get(job)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "job"))?;
        let seg =
            seg.ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("segment {id} is gone")))?;
        let e = seg.enqueue_at(slot.off)?;
        let due_ms = match slot.state {
            SlotState::Waiting => self
                .order_ref(job)
                .and_then(|o| o.due_of(job))
                .or_else(|| self.groups_ref(job).and_then(|g| g.blocked_due(job)))
                .unwrap_or(e.due_ms),
            _ => e.due_ms,
        };
        let rec = Record::Enqueue(EnqueueRec {
            attempts: u32::from(slot.attempts),
            due_ms,
            ..e
        });
        let in_flight = slot.state == SlotState::InFlight;
        let a = self.append_carried(&rec, e.body_len(), due_ms, in_flight, slot.attempts)?;
        self.count_in_segment(id, slot.len, false);
        self.count_in_segment(a.seg, a.len, true);
        if let Some(s) = self.jobs.get_mut(job) {
            s.seg = a.seg;
            s.off = a.off;
            s.len = a.len;
        }
        if !e.key.is_empty() {
            let hash = crate::named::scoped_hash(e.queue, e.key);
            if let Some(mut entry) = self.keys.of_job(hash, job) {
                entry.seg = a.seg;
                entry.off = a.off;
                self.keys.set(hash, Some(job), entry);
            }
        }
        self.counters.carried += 1;
        Ok(u64::from(a.len))
    }

    /// Appends a carried job's copy `rec` (`body_len` bytes of body), then
    /// its last error as a NackErr (replay sets the due time `due_ms`
    /// again, and the error) and, for a job in flight, its Lease (after
    /// the NackErr, so it stays leased): one batch, so a crash keeps all
    /// or none. Returns where the copy went.
    fn append_carried(
        &mut self,
        rec: &Record<'_>,
        body_len: usize,
        due_ms: u64,
        in_flight: bool,
        attempts: u16,
    ) -> Result<Appended> {
        let job = match rec {
            Record::Enqueue(e) => e.id,
            _ => unreachable!("a carried job's copy is an Enqueue record"),
        };
        let error = self.errors.get(job).map(str::to_owned);
        if !in_flight && error.is_none() {
            return self.log.append(rec, 0, self.next_id);
        }
        let len = (FRAME_HEADER_LEN + body_len) as u64;
        let err_len = error
            .as_ref()
            .map_or(0, |t| (FRAME_HEADER_LEN + 16 + t.len()) as u64);
        let lease_len = if in_flight { LEASE_FRAME_LEN } else { 0 };
        self.log
            .ensure_room_draining(len + err_len + lease_len, self.next_id)?;
        let a = self.log.append(rec, FLAG_BATCH_MORE, self.next_id)?;
        if let Some(error) = &error {
            let nack = Record::NackErr {
                id: job,
                due_ms,
                error,
            };
            let more = if in_flight { FLAG_BATCH_MORE } else { 0 };
            self.log.append(&nack, more, self.next_id)?;
        }
        if in_flight {
            let lease = Record::Lease {
                id: job,
                attempts: u32::from(attempts),
            };
            self.log.append(&lease, 0, self.next_id)?;
        }
        Ok(a)
    }

    /// Carries keys of finished jobs whose bytes live in segment `id` and
    /// whose window is still open, within `budget` bytes (the rest on
    /// later calls, from where this one stopped); forgets the expired
    /// ones. Returns whether all are done.
    ///
    /// Before the budget, one operation carried every key of the segment:
    /// with keys carried forward segment after segment, that was every
    /// key remembered (11,218 Key records in one operation, 1 MiB
    /// segments, `tests/bounded_disk.rs`).
    fn carry_keys(&mut self, id: u32, now: u64, budget: &mut u64) -> Result<bool> {
        if self.keys.is_empty() {
            return Ok(true);
        }
        // Listed by `homed_keys_of` for this segment: no key moves into the
        // oldest segment, so what is homed there now is among them.
        // (Without a listing, which `reclaim` never lets happen, every key
        // is looked at: a key left behind would be deleted with its bytes.)
        let mut homed = match self.maintenance.homed.take() {
            Some(h) if h.seg == id => h,
            _ => Homed {
                keys: self.keys.iter().filter(|(_, e)| e.seg == id).collect(),
                ..Homed::empty(id)
            },
        };
        let out = self.carry_listed_keys(&mut homed, now, budget);
        self.maintenance.homed = Some(homed);
        out
    }

    /// [`QueueState::carry_keys`] of the keys of `homed` not gone through
    /// yet, while `budget` lasts. A key counts as gone through only once
    /// carried (or found moved, expired or not its own): one whose append
    /// failed is tried again on the next call, never left behind to be
    /// deleted with the segment.
    fn carry_listed_keys(&mut self, homed: &mut Homed, now: u64, budget: &mut u64) -> Result<bool> {
        let Some(seg) = self.log.info(homed.seg).map(|i| i.seg.clone()) else {
            return Ok(true);
        };
        while let Some(&(hash, listed)) = homed.keys.get(homed.carried) {
            if *budget == 0 {
                return Ok(false);
            }
            let written = self.carry_key(&seg, hash, listed, now)?;
            homed.carried += 1;
            *budget = budget.saturating_sub(written);
        }
        Ok(true)
    }

    /// Carries key `hash` of job `listed.id`, listed as homed in `seg`, if
    /// it still is and its window is open (else forgets it, or leaves it
    /// to where it moved); returns the bytes written.
    fn carry_key(&mut self, seg: &Segment, hash: u128, listed: KeyEntry, now: u64) -> Result<u64> {
        let Some(entry) = self
            .keys
            .of_job(hash, listed.id)
            .filter(|e| e.seg == seg.id && e.off == listed.off)
        else {
            return Ok(0); // moved or forgotten since it was listed
        };
        // Normally only keys of finished jobs are left here (a live job's
        // key moves with it), but a damaged or crafted log can point a
        // live job's key at a key record: keep it known.
        let live = self.jobs.get(entry.id).is_some();
        if entry.expires_ms <= now && !live {
            self.keys.remove(hash, entry.id);
            return Ok(0);
        }
        let at = u64::from(entry.off);
        let frame = seg
            .frame_at(entry.off)
            .map_err(|e| Error::corrupt(&seg.path, at, format!("carrying a key: {e}")))?;
        // The record holding the key names its queue (Enqueue2 and kind 16
        // carry it; kinds 1 and 5 are the default queue's).
        let (queue, key) = match Record::decode(frame.kind, frame.body) {
            Some(Record::Enqueue(e)) => (e.queue, e.key),
            Some(Record::Key { queue, key, .. }) => (queue, key),
            _ => return Err(Error::corrupt(&seg.path, at, "key record does not decode")),
        };
        if crate::named::scoped_hash(queue, key) != hash {
            // Not the key it is known by (a damaged log): forgotten.
            self.keys.remove(hash, entry.id);
            return Ok(0);
        }
        let rec = Record::Key {
            queue,
            id: entry.id,
            expires_ms: entry.expires_ms,
            key,
        };
        self.log.begin_op();
        let a = self.log.append(&rec, 0, self.next_id)?;
        let mut moved = entry;
        moved.seg = a.seg;
        moved.off = a.off;
        self.keys.set(hash, Some(entry.id), moved);
        Ok(u64::from(a.len))
    }
}
