//! Moving jobs to and from the dead letters: dead-lettering, redrive,
//! purge. The fsync order each one follows is in `docs/architecture.md`.

use std::cmp::Reverse;

use crate::dead::DeadLetter;
use crate::error::Result;
use crate::format::record::{DeadRec, EnqueueRec, Record};
use crate::jobs::SlotState;
use crate::keys::{key_hash, KeyEntry, IN_DEAD_LETTERS};
use crate::options::MAX_ERROR_LEN;
use crate::state::QueueState;

fn cut_text(text: &str) -> &[u8] {
    if text.len() <= MAX_ERROR_LEN {
        return text.as_bytes();
    }
    let mut end = MAX_ERROR_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text.as_bytes()[..end]
}

impl QueueState {
    /// Moves a live job (not in the due heap or fresh list) to the dead
    /// letters: log synced, dead letter written and synced, then an ack
    /// record in the log (see `docs/architecture.md`). A crash between the
    /// last two is resolved on open by LSN order. Returns the LSN to wait for.
    pub fn dead_letter(&mut self, id: u64, error: &str, now: u64) -> Result<u64> {
        let slot = *self.jobs.get(id).expect("dead-lettering a live job");
        let seg = self.segment_of(&slot)?;
        let e = seg.enqueue_at(slot.off)?;
        let rec = DeadRec {
            id,
            enqueued_ms: e.enqueued_ms,
            dead_ms: now,
            attempts: u32::from(slot.attempts),
            key: e.key,
            error: cut_text(error),
            payload: e.payload,
        };
        // Order, whatever the durability mode (dead-lettering is rare):
        // the job's log records (its enqueue, perhaps a batch still waiting
        // for its group commit) are durable before its dead letter, and the
        // dead letter before the ack record that finishes it in the log.
        self.log.sync_now()?;
        self.dead.add(&rec, self.log.next_lsn)?;
        self.dead.sync()?;
        if !e.key.is_empty() {
            let hash = key_hash(e.key);
            if let Some(entry) = self.keys.get(hash).copied() {
                if entry.id == id {
                    self.keys.insert(
                        hash,
                        KeyEntry {
                            seg: IN_DEAD_LETTERS,
                            off: 0,
                            ..entry
                        },
                    );
                }
            }
        }
        // Mark the job finished in the log too, so that its records there
        // stay dead even after the dead letter is purged.
        let a = self.log.append(&Record::Ack { id }, 0, self.next_id)?;
        self.finish(id);
        self.counters.dead_lettered += 1;
        self.reclaim(now)?;
        Ok(a.lsn)
    }

    /// Puts dead letters back in the queue (attempts reset), in the order
    /// given. Unknown ids are skipped; returns the ids redriven.
    pub fn redrive(&mut self, ids: &[u64], now: u64) -> Result<Vec<u64>> {
        let mut done = Vec::new();
        for &id in ids {
            let Some(letter) = self.dead.get(id)? else {
                continue;
            };
            let key = letter.key.clone().unwrap_or_default();
            let rec = Record::Enqueue(EnqueueRec {
                id,
                enqueued_ms: letter.enqueued_ms,
                due_ms: now,
                attempts: 0,
                max_attempts: u16::try_from(self.cfg.max_attempts).unwrap_or(u16::MAX),
                key: &key,
                payload: &letter.payload,
            });
            let a = self.log.append(&rec, 0, self.next_id)?;
            self.add_job(id, a, 0, SlotState::Waiting);
            self.due.push(Reverse((now, id)));
            if !key.is_empty() {
                let hash = key_hash(&key);
                let expires_ms = self.keys.get(hash).map_or(now, |e| e.expires_ms);
                self.keys.insert(
                    hash,
                    KeyEntry {
                        id,
                        expires_ms,
                        seg: a.seg,
                        off: a.off,
                    },
                );
            }
            done.push(id);
        }
        self.remove_dead_letters(&done)?;
        Ok(done)
    }

    /// Deletes dead letters for good. Their idempotency keys stay known
    /// until their window ends. Returns the ids purged.
    pub fn purge(&mut self, ids: &[u64], now: u64) -> Result<Vec<u64>> {
        let mut done = Vec::new();
        for &id in ids {
            let Some(letter) = self.dead.get(id)? else {
                continue;
            };
            if let Some(key) = &letter.key {
                let hash = key_hash(key);
                match self.keys.get(hash).copied() {
                    Some(entry) if entry.id == id && entry.expires_ms > now => {
                        let a = self.log.append(
                            &Record::Key {
                                id,
                                expires_ms: entry.expires_ms,
                                key,
                            },
                            0,
                            self.next_id,
                        )?;
                        self.keys.insert(
                            hash,
                            KeyEntry {
                                seg: a.seg,
                                off: a.off,
                                ..entry
                            },
                        );
                    }
                    Some(entry) if entry.id == id => self.keys.remove(hash),
                    _ => {}
                }
            }
            done.push(id);
        }
        self.remove_dead_letters(&done)?;
        Ok(done)
    }

    /// Drops dead letters once what replaces them is durable in the log
    /// (a redriven job's enqueue record; a purged job's ack record and
    /// carried key), then rewrites the file if removals dominate it.
    fn remove_dead_letters(&mut self, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.log.sync_now()?;
        for &id in ids {
            self.dead.remove(id, self.log.next_lsn)?;
        }
        self.dead.sync()?;
        self.compact_dead()
    }

    fn compact_dead(&mut self) -> Result<()> {
        if self.dead.wants_compaction() {
            let vfs = self.log.vfs.clone();
            self.dead.compact(&*vfs, &self.log.dir, self.log.mode)?;
        }
        Ok(())
    }

    /// Reads one dead letter.
    pub fn dead_letter_get(&self, id: u64) -> Result<Option<DeadLetter>> {
        self.dead.get(id)
    }
}
