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

use std::cmp::Reverse;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::format::frame::{FLAG_BATCH_MORE, FRAME_HEADER_LEN};
use crate::format::record::{EnqueueRec, Record};

/// Length of a lease frame.
const LEASE_FRAME_LEN: u64 = FRAME_HEADER_LEN as u64 + 12;
use crate::jobs::SlotState;
use crate::keys::key_hash;
use crate::state::QueueState;

impl QueueState {
    /// Deletes the oldest segments while they hold nothing live, carrying a
    /// few live jobs forward where that frees a segment.
    pub fn reclaim(&mut self, now: u64) -> Result<()> {
        // Never reclaim a segment created during this pass: carrying can
        // fill the active segment, and its successor must wait its turn.
        let stop = self.log.active().id;
        while self.log.segments.len() > 1 {
            let front = &self.log.segments[0];
            let id = front.seg.id;
            let (live_jobs, live_bytes) = (front.live_jobs, front.live_bytes);
            if id >= stop
                || self
                    .key_block
                    .is_some_and(|(seg, until)| seg == id && now < until)
            {
                break;
            }
            // Fresh jobs in the oldest segment are the next to be served:
            // let consumers drain them instead of copying.
            if live_bytes * 4 > self.log.seg_size || (live_jobs > 0 && self.oldest_fresh_in(id)) {
                break;
            }
            // Keys of finished jobs still in their window count as live
            // bytes too: a segment that is mostly remembered keys stays
            // until they expire instead of being copied forward again.
            let (key_bytes, first_expiry) = self.homed_key_bytes(id, now);
            if (live_bytes + key_bytes) * 4 > self.log.seg_size {
                self.key_block = Some((id, first_expiry));
                break;
            }
            self.key_block = None;
            if live_jobs > 0 {
                self.carry_jobs(id)?;
            }
            self.carry_keys(id, now)?;
            let front = &self.log.segments[0];
            assert_eq!(front.seg.id, id, "only reclaim deletes segments");
            assert_eq!(
                front.live_jobs, 0,
                "carried every live job out of segment {id}"
            );
            if self.log.segments.len() <= 1 {
                break;
            }
            self.log.sync_now()?;
            self.dead.sync()?;
            let info = self.log.segments.pop_front().expect("checked above");
            let vfs = self.log.vfs.clone();
            vfs.remove(&info.seg.path)
                .map_err(|e| Error::io("deleting finished segment", &info.seg.path, e))?;
            vfs.sync_dir(&self.log.dir)
                .map_err(|e| Error::io("syncing directory", &self.log.dir, e))?;
        }
        Ok(())
    }

    /// Bytes of the key records that carrying the keys of finished jobs
    /// homed in segment `id` would write, and the soonest of their expiries.
    /// Forgets expired keys.
    fn homed_key_bytes(&mut self, id: u32, now: u64) -> (u64, u64) {
        if self.keys.is_empty() {
            return (0, u64::MAX);
        }
        let Some(seg) = self.log.info(id).map(|i| i.seg.clone()) else {
            return (0, u64::MAX);
        };
        let (mut bytes, mut first_expiry) = (0u64, u64::MAX);
        let mut expired = Vec::new();
        for (hash, entry) in self.keys.iter_mut() {
            if entry.seg != id || self.jobs.get(entry.id).is_some() {
                continue;
            }
            if entry.expires_ms <= now {
                expired.push(*hash);
                continue;
            }
            first_expiry = first_expiry.min(entry.expires_ms);
            // What carrying it costs: a key record, not the job's record.
            let key_len =
                seg.frame_at(entry.off)
                    .ok()
                    .map_or(0, |f| match Record::decode(f.kind, f.body) {
                        Some(Record::Enqueue(e)) => e.key.len(),
                        Some(Record::Key { key, .. }) => key.len(),
                        _ => 0,
                    });
            bytes += (FRAME_HEADER_LEN + 16 + key_len) as u64;
        }
        for hash in expired {
            self.keys.remove(hash);
        }
        (bytes, first_expiry)
    }

    fn oldest_fresh_in(&mut self, id: u32) -> bool {
        if self.fresh == 0 {
            return false;
        }
        let Some(first) = self.jobs.next_fresh(self.fresh_cursor) else {
            return false;
        };
        self.fresh_cursor = first;
        self.jobs.get(first).is_some_and(|s| s.seg == id)
    }

    /// Rewrites the live jobs of segment `id` into the active segment.
    fn carry_jobs(&mut self, id: u32) -> Result<()> {
        let seg = self.log.info(id).expect("segment exists").seg.clone();
        // From the job table, not a walk of the segment's frames: a segment
        // opened in salvage mode may hold damage between live records.
        let mut carry: Vec<u32> = self
            .jobs
            .iter()
            .filter(|(_, s)| s.seg == id)
            .map(|(_, s)| s.off)
            .collect();
        carry.sort_unstable();
        let mut dues: HashMap<u64, u64> = HashMap::new();
        for Reverse((due, job)) in self.due.iter() {
            dues.insert(*job, *due);
        }
        for off in carry {
            let e = seg.enqueue_at(off)?;
            let slot = *self.jobs.get(e.id).expect("collected as live");
            let due_ms = match slot.state {
                SlotState::Waiting => dues.get(&e.id).copied().unwrap_or(e.due_ms),
                _ => e.due_ms,
            };
            let rec = Record::Enqueue(EnqueueRec {
                attempts: u32::from(slot.attempts),
                due_ms,
                ..e
            });
            let in_flight = slot.state == SlotState::InFlight;
            let a = if in_flight {
                // Keep the job leased in the log, as it is in memory: the
                // carried copy and its lease form one batch, so a crash
                // keeps both or neither.
                let len = QueueState::enqueue_frame_len(e.payload, e.key.len());
                self.log
                    .ensure_room_draining(len + LEASE_FRAME_LEN, self.next_id)?;
                self.log.append(&rec, FLAG_BATCH_MORE, self.next_id)?
            } else {
                self.log.append(&rec, 0, self.next_id)?
            };
            if in_flight {
                self.log.append(
                    &Record::Lease {
                        id: e.id,
                        attempts: u32::from(slot.attempts),
                    },
                    0,
                    self.next_id,
                )?;
            }
            let old = self.log.info_mut(id).expect("segment exists");
            old.live_jobs -= 1;
            old.live_bytes -= u64::from(slot.len);
            let new = self.log.info_mut(a.seg).expect("active segment exists");
            new.live_jobs += 1;
            new.live_bytes += u64::from(a.len);
            let s = self.jobs.get_mut(e.id).expect("live");
            s.seg = a.seg;
            s.off = a.off;
            s.len = a.len;
            if !e.key.is_empty() {
                let hash = key_hash(e.key);
                if let Some(mut entry) = self.keys.get(hash).copied() {
                    if entry.id == e.id {
                        entry.seg = a.seg;
                        entry.off = a.off;
                        self.keys.insert(hash, entry);
                    }
                }
            }
            self.counters.carried += 1;
        }
        Ok(())
    }

    /// Carries keys of finished jobs whose bytes live in segment `id` and
    /// whose window is still open; forgets the expired ones.
    fn carry_keys(&mut self, id: u32, now: u64) -> Result<()> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let seg = self.log.info(id).expect("segment exists").seg.clone();
        let mut homed = Vec::new();
        for (hash, entry) in self.keys.iter_mut() {
            if entry.seg == id {
                homed.push((*hash, *entry));
            }
        }
        for (hash, entry) in homed {
            // Normally only keys of finished jobs are left here (a live
            // job's key moves with it), but a damaged or crafted log can
            // point a live job's key at a key record: keep it known.
            let live = self.jobs.get(entry.id).is_some();
            if entry.expires_ms <= now && !live {
                self.keys.remove(hash);
                continue;
            }
            let frame = seg.frame_at(entry.off).map_err(|e| {
                Error::corrupt(
                    &seg.path,
                    u64::from(entry.off),
                    format!("carrying a key: {e}"),
                )
            })?;
            let key = match Record::decode(frame.kind, frame.body) {
                Some(Record::Enqueue(e)) => e.key,
                Some(Record::Key { key, .. }) => key,
                _ => {
                    return Err(Error::corrupt(
                        &seg.path,
                        u64::from(entry.off),
                        "key record does not decode",
                    ))
                }
            };
            let a = self.log.append(
                &Record::Key {
                    id: entry.id,
                    expires_ms: entry.expires_ms,
                    key,
                },
                0,
                self.next_id,
            )?;
            let mut moved = entry;
            moved.seg = a.seg;
            moved.off = a.off;
            self.keys.insert(hash, moved);
        }
        Ok(())
    }
}
