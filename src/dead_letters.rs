//! Moving jobs to and from the dead letters: dead-lettering, redrive,
//! purge, listing. The fsync order each one follows is in
//! `docs/architecture.md`.
//!
//! Multi-item operations (redrive and purge of several letters) run in
//! three phases: validate and read everything (nothing written yet), then
//! write every record (log, sync, dead-letter file, sync), then change
//! memory. A failure in the first phase changes nothing; a failure in the
//! second is an I/O error that poisons the queue before memory changes, so
//! no job is ever both live and dead.

use std::sync::Arc;

use super::QueueState;
use crate::dead::{DeadEntry, DeadLetter};
use crate::error::{Error, ErrorKind, Result};
use crate::format::record::{DeadRec, EnqueueRec, Record, PRIORITY_NORMAL};
use crate::jobs::SlotState;
use crate::keys::{key_check, KeyEntry, IN_DEAD_LETTERS};
use crate::named::scoped_hash;
use crate::options::MAX_ERROR_LEN;
use crate::vfs::{AtomicWriteError, VfsFile};

/// An error text as kept (dead letters, NackErr records, the last-error
/// map): its first [`MAX_ERROR_LEN`] bytes at most, cut at a char
/// boundary.
pub(super) fn cut_text(text: &str) -> &str {
    if text.len() <= MAX_ERROR_LEN {
        return text;
    }
    let mut end = MAX_ERROR_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A page of dead letters to read without the queue lock: the file handle
/// as it was (a compaction replaces the file, not this handle's contents)
/// and where each letter lies in it.
pub struct DeadPage {
    file: Arc<dyn VfsFile>,
    path: std::path::PathBuf,
    entries: Vec<(u64, DeadEntry)>,
}

impl DeadPage {
    /// Reads and verifies the letters of the page.
    pub fn read(&self) -> Result<Vec<DeadLetter>> {
        self.entries
            .iter()
            .map(|&(id, e)| crate::dead::read_letter(&*self.file, &self.path, id, e))
            .collect()
    }
}

impl QueueState {
    /// Moves a live job, taken out of the delivery order, to the dead
    /// letters: log synced, dead letter written and synced, then an ack
    /// record in the log (see `docs/architecture.md`). A crash between the
    /// last two is resolved on open by LSN order. A job whose record cannot
    /// be read back (damaged after open) goes with an empty payload and
    /// the damage as its error, counted in `damaged_total`; any other
    /// failure to read it is returned, with nothing changed. Returns the
    /// LSN to wait for.
    pub(crate) fn dead_letter(&mut self, id: u64, error: &str, now: u64) -> Result<u64> {
        let Some(slot) = self.jobs.get(id) else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("job {id} is not live"),
            ));
        };
        let seg = self.segment_of(&slot);
        let read = match &seg {
            Ok(s) => s.enqueue_at(slot.off),
            Err(e) => Err(Error::new(ErrorKind::Corrupt, e.to_string())),
        };
        // Only damage drops the payload: a record that could not be read
        // for another reason (a sealed segment not mapped again: EMFILE,
        // address space) is intact, and the call fails with nothing done.
        let read = match read {
            Err(e) if e.kind() != ErrorKind::Corrupt => return Err(e),
            read => read,
        };
        // A final attempt that gave no text keeps the last one an earlier
        // attempt gave (`Queue::last_error`).
        let error = match error {
            "" => self.errors.get(id).unwrap_or(""),
            text => text,
        }
        .to_string();
        let error = error.as_str();
        let (enqueued_ms, key, payload, text) = match &read {
            Ok(e) => (e.enqueued_ms, e.key, e.payload, error.to_string()),
            Err(damage) if error.is_empty() => (
                0,
                &[][..],
                &[][..],
                format!("record damaged, payload lost: {damage}"),
            ),
            Err(damage) => (
                0,
                &[][..],
                &[][..],
                format!("record damaged, payload lost: {damage}; {error}"),
            ),
        };
        // The queue (by name: a dead letter outlives its queue's records
        // in the log), level and group go with it (kind 13 when needed).
        let queue = self.named.queue_of(id);
        let name = self.letter_queue_name(queue);
        let (priority, group) = match &read {
            Ok(e) => (e.priority, e.group),
            Err(_) => (PRIORITY_NORMAL, &[][..]),
        };
        let rec = DeadRec {
            id,
            enqueued_ms,
            dead_ms: now,
            attempts: u32::from(slot.attempts),
            key,
            error: cut_text(&text).as_bytes(),
            payload,
            queue: name.as_bytes(),
            priority,
            group,
        };
        let lsn = self.write_dead_letter(id, &rec)?;
        self.forget_dead_lettered(id, queue, key, read.is_err());
        Ok(lsn)
    }

    /// The queue name a dead letter of queue `queue` carries: empty for
    /// the default queue.
    pub(super) fn letter_queue_name(&self, queue: u16) -> String {
        if queue == 0 {
            String::new()
        } else {
            self.queue_name(queue)
        }
    }

    /// Writes dead letter `rec` of job `id` in dead-lettering's fsync
    /// order: the log synced, the dead letter written and synced, then an
    /// ack record in the log. Returns the ack record's LSN.
    fn write_dead_letter(&mut self, id: u64, rec: &DeadRec<'_>) -> Result<u64> {
        // Order, whatever the durability mode (dead-lettering is rare):
        // the job's log records (its enqueue, perhaps a batch still waiting
        // for its group commit) are durable before its dead letter, and the
        // dead letter before the ack record that finishes it in the log.
        self.log.sync_now()?;
        // On a full copy-on-write disk the dead letter's write may need
        // the reserve. If it still fails, nothing was written (the file's
        // end did not move): harmless if nothing else changed before. From
        // then on the dead letter exists: a failed append below is not
        // harmless (the queue is poisoned; reopening resolves it).
        let lsn = self.log.next_lsn;
        let dead = &mut self.dead;
        self.log.write_draining(|| dead.add(rec, lsn))?;
        self.dead.sync()?;
        // Mark the job finished in the log too, so that its records there
        // stay dead even after the dead letter is purged.
        let a = self.log.append(&Record::Ack { id }, 0, self.next_id)?;
        Ok(a.lsn)
    }

    /// Memory after job `id` of queue `queue` became a dead letter (see
    /// `dead_letter`): its key, if it has one (`key`), now lives in the
    /// dead letters, and the job is finished. `damaged`: its record could
    /// not be read (counted).
    fn forget_dead_lettered(&mut self, id: u64, queue: u16, key: &[u8], damaged: bool) {
        if !key.is_empty() {
            // The key stays in its queue's scope (the dead letter names
            // the queue, so the next open scopes it the same way).
            let hash = scoped_hash(queue, key);
            if let Some(entry) = self.keys.of_job(hash, id) {
                let moved = KeyEntry {
                    seg: IN_DEAD_LETTERS,
                    off: 0,
                    ..entry
                };
                self.keys.set(hash, Some(id), moved);
            }
        }
        if damaged {
            self.counters.damaged += 1;
        }
        if let Some(s) = self.jobs.get_mut(id) {
            s.state = SlotState::InFlight;
        }
        self.finish(id);
        self.counters.dead_lettered += 1;
    }

    /// Reads the dead letters among `ids` that exist and whose job is not
    /// live, in order; fails (having changed nothing) if one cannot be read.
    fn read_letters(&self, ids: &[u64]) -> Result<Vec<DeadLetter>> {
        let mut letters = Vec::new();
        for &id in ids {
            if self.jobs.get(id).is_some() {
                continue;
            }
            if let Some(letter) = self.dead.get(id)? {
                letters.push(letter);
            }
        }
        Ok(letters)
    }

    /// Puts dead letters back in the queue (attempts reset), in the order
    /// given: all of them or, on an error, none. Unknown ids are skipped;
    /// returns the ids redriven.
    pub fn redrive(&mut self, ids: &[u64], now: u64) -> Result<Vec<u64>> {
        let letters = self.read_letters(ids)?;
        let mut queues = Vec::with_capacity(letters.len());
        // Room made before, not between, the lookups: a definition made
        // for one letter is not freed for the next.
        if letters
            .iter()
            .any(|l| self.named.lookup(&l.queue).is_none())
        {
            self.named.reclaim();
        }
        for letter in &letters {
            queues.push(self.named.id_for(&letter.queue)?);
        }
        // The removals written to `dead.wal` after the jobs' records need
        // blocks: allocated first, so that a full disk refuses the redrive
        // here, with nothing written (before: the records went in, the
        // removals got ENOSPC, and the queue was poisoned). Never from the
        // reserve: a redrive adds jobs, as an enqueue does.
        self.make_room_for_removals(letters.len(), false)?;
        let mut written = Vec::with_capacity(letters.len());
        for (letter, &queue) in letters.iter().zip(&queues) {
            self.ensure_def(queue)?;
            let max_attempts = self
                .named
                .options(queue)
                .and_then(|o| o.max_attempts)
                .unwrap_or(self.cfg.max_attempts);
            // Back in its queue at its level; not in its group (a group's
            // order is by id, and the redriven job would jump ahead).
            let rec = Record::Enqueue(EnqueueRec {
                id: letter.id,
                enqueued_ms: letter.enqueued_ms,
                due_ms: now,
                attempts: 0,
                max_attempts: u16::try_from(max_attempts).unwrap_or(u16::MAX),
                key: letter.key.as_deref().unwrap_or_default(),
                payload: &letter.payload,
                queue,
                priority: letter.priority.byte(),
                group: &[],
            });
            written.push(self.log.append(&rec, 0, self.next_id)?);
        }
        let ids: Vec<u64> = letters.iter().map(|l| l.id).collect();
        self.remove_dead_letters(&ids)?;
        for ((letter, a), queue) in letters.iter().zip(written).zip(queues) {
            let id = letter.id;
            self.named.assign(id, queue);
            self.lane_parts(queue)
                .0
                .set_level(id, letter.priority.byte());
            self.add_job(id, a, 0, SlotState::Waiting, now);
            if let Some(key) = letter.key.as_deref() {
                let hash = scoped_hash(queue, key);
                let old = self.keys.of_job(hash, id);
                let entry = KeyEntry {
                    id,
                    expires_ms: old.map_or(now, |e| e.expires_ms),
                    seg: a.seg,
                    off: a.off,
                    check: key_check(key),
                };
                self.keys.set(hash, old.map(|e| e.id), entry);
            }
        }
        self.compact_dead()?;
        Ok(ids)
    }

    /// Deletes dead letters for good, all or (on an error) none. Their
    /// idempotency keys stay known until their window ends. Returns the
    /// ids purged.
    pub fn purge(&mut self, ids: &[u64], now: u64) -> Result<Vec<u64>> {
        let letters = self.read_letters(ids)?;
        let mut moves = Vec::new();
        let mut forget = Vec::new();
        for letter in &letters {
            let Some(key) = &letter.key else { continue };
            let queue = self.named.lookup(&letter.queue).unwrap_or(0);
            let hash = scoped_hash(queue, key);
            match self.keys.of_job(hash, letter.id) {
                Some(entry) if entry.expires_ms > now => {
                    let rec = Record::Key {
                        queue,
                        id: letter.id,
                        expires_ms: entry.expires_ms,
                        key,
                    };
                    let a = self.log.append(&rec, 0, self.next_id)?;
                    moves.push((
                        hash,
                        KeyEntry {
                            seg: a.seg,
                            off: a.off,
                            ..entry
                        },
                    ));
                }
                Some(entry) => forget.push((hash, entry.id)),
                None => {}
            }
        }
        let ids: Vec<u64> = letters.iter().map(|l| l.id).collect();
        self.remove_dead_letters(&ids)?;
        for (hash, entry) in moves {
            self.keys.set(hash, Some(entry.id), entry);
        }
        for (hash, id) in forget {
            self.keys.remove(hash, id);
        }
        self.compact_dead()?;
        Ok(ids)
    }

    /// Drops dead letters once what replaces them is durable in the log
    /// (a redriven job's enqueue record; a purged job's ack record and
    /// carried key).
    fn remove_dead_letters(&mut self, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.log.sync_now()?;
        for &id in ids {
            self.dead.remove(id, self.log.next_lsn)?;
        }
        self.dead.sync()
    }

    /// Asks for the dead-letter file to be rewritten if removals dominate
    /// it: the copy runs after the queue lock is released (see
    /// `dead::compact` and [`QueueState::compact_dead_letters`]).
    fn compact_dead(&mut self) -> Result<()> {
        if self.dead.wants_compaction() {
            self.log.upkeep().want_dead_compaction();
        }
        Ok(())
    }

    /// Runs a wanted compaction of the dead-letter file: started and
    /// finished under the queue lock `state`, the copy in between without
    /// it. A failure before the new file's rename leaves the file as it
    /// was; it is recorded for `Stats::maintenance_error` and the
    /// compaction tried again later. A failed directory sync after the
    /// rename is returned: the caller poisons the queue (see
    /// `dead::compact`).
    pub(crate) fn compact_dead_letters(state: &parking_lot::Mutex<QueueState>) -> Result<()> {
        let (mut c, vfs, dir, mode) = {
            let mut st = state.lock();
            if !st.log.upkeep().take_dead_compaction() {
                return Ok(());
            }
            let Some(c) = st.dead.start_compaction() else {
                return Ok(());
            };
            (c, st.log.vfs.clone(), st.log.dir.clone(), st.log.mode)
        };
        let written = c.write(&*vfs, mode).map_err(AtomicWriteError::Unchanged);
        let mut st = state.lock();
        let finished = st.dead.finish_compaction(c, &*vfs, &dir);
        match written.and(finished) {
            Ok(()) => Ok(()),
            Err(AtomicWriteError::Unchanged(e)) => {
                let text = format!("compacting dead letters: {e}");
                st.log.upkeep().note_error(text);
                Ok(())
            }
            Err(AtomicWriteError::Replaced(e)) => {
                // Latched before the lock is released: no operation after
                // this one gets a sync (and so an `Ok` under `Sync`)
                // before the caller has poisoned the queue.
                st.log.commit.fail(e.to_string());
                Err(e)
            }
        }
    }

    /// Allocates the blocks `n` Removed records will take in `dead.wal`
    /// before anything is written (`DeadFile::make_room_for_removals`), so
    /// that a full disk refuses the operation here. A `draining` one (a
    /// purge) may give up the copy-on-write reserve; one that adds jobs (a
    /// redrive) never does. Allocated blocks change nothing that replay or
    /// memory reads: an operation that changed nothing before stays
    /// harmless if it is refused next.
    pub(crate) fn make_room_for_removals(&mut self, n: usize, draining: bool) -> Result<()> {
        let unchanged = self.log.op_unchanged();
        let dead = &mut self.dead;
        if draining {
            self.log.write_draining(|| dead.make_room_for_removals(n))?;
        } else {
            self.log.write_adding(|| dead.make_room_for_removals(n))?;
        }
        if unchanged {
            self.log.changes_complete();
        }
        Ok(())
    }

    /// Reads one dead letter.
    pub fn dead_letter_get(&self, id: u64) -> Result<Option<DeadLetter>> {
        self.dead.get(id)
    }

    /// Up to `limit` dead-letter ids after `after` (from the first if
    /// `None`), in id order: only the index, no payload read.
    pub fn dead_ids_page(&self, after: Option<u64>, limit: usize) -> Vec<u64> {
        self.dead_entries_after(after, limit)
            .map(|(id, _)| id)
            .collect()
    }

    fn dead_entries_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> impl Iterator<Item = (u64, DeadEntry)> + '_ {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let skip_all = after == Some(u64::MAX);
        self.dead
            .entries()
            .range(from..)
            .filter(move |_| !skip_all)
            .take(limit)
            .map(|(id, e)| (*id, *e))
    }

    /// A page of dead letters to read after the lock is released.
    pub fn dead_page(&self, after: Option<u64>, limit: usize) -> DeadPage {
        DeadPage {
            file: self.dead.file_handle(),
            path: self.dead.path().to_path_buf(),
            entries: self.dead_entries_after(after, limit).collect(),
        }
    }
}
