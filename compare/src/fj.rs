//! fjall as a queue, the way its own queue example uses it: one keyspace,
//! keys are a monotonically increasing `u64` in big-endian (so key order
//! is FIFO order), pop = `first_key_value` + `remove`. No leases: taking
//! the job is the ack. Each pop's `first_key_value` steps over the
//! tombstones of the pops before it (until compaction drops them), so
//! long runs of pops slow down; [`Fj::pop_from`] (a range scan from the
//! last popped key) avoids that and is measured beside it.
//!
//! Durability per row: without fsync, fjall's default (each write goes to
//! the OS, `PersistMode::Buffer`); with fsync, `Database::persist` with
//! `PersistMode::SyncData` (fdatasync, as walq's `Sync`) after every
//! operation, or a write batch committed with that durability.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::{parallel_lat, timed, Res, Timed};

/// An open fjall queue.
pub struct Fj {
    db: Database,
    ks: Keyspace,
    next: AtomicU64,
    /// Key of the first job not yet popped through [`Fj::pop_from`].
    head: AtomicU64,
}

/// Opens (or creates) the queue in `dir` and finds the next key.
pub fn open(dir: &Path) -> Res<Fj> {
    let db = Database::builder(dir.join("fjall")).open()?;
    let ks = db.keyspace("queue", KeyspaceCreateOptions::default)?;
    let next = match ks.last_key_value() {
        Some(g) => key_of(&g.key()?)? + 1,
        None => 0,
    };
    let head = match ks.first_key_value() {
        Some(g) => key_of(&g.key()?)?,
        None => next,
    };
    Ok(Fj {
        db,
        ks,
        next: AtomicU64::new(next),
        head: AtomicU64::new(head),
    })
}

fn key_of(k: &[u8]) -> Res<u64> {
    let b: [u8; 8] = k.try_into().map_err(|_| "fjall: key is not 8 bytes")?;
    Ok(u64::from_be_bytes(b))
}

impl Fj {
    fn persist(&self, sync: Option<PersistMode>) -> Res<()> {
        if let Some(m) = sync {
            self.db.persist(m)?;
        }
        Ok(())
    }

    /// Appends one job; with `sync`, persists the journal before returning.
    pub fn push(&self, p: &[u8], sync: Option<PersistMode>) -> Res<()> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        self.ks.insert(&k.to_be_bytes()[..], p)?;
        self.persist(sync)
    }

    /// Appends `items` in one write batch (atomic, one journal persist).
    pub fn push_batch(&self, items: &[&[u8]], sync: Option<PersistMode>) -> Res<()> {
        let mut b = self.db.batch().durability(sync);
        for p in items {
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            b.insert(&self.ks, &k.to_be_bytes()[..], *p);
        }
        b.commit()?;
        Ok(())
    }

    /// Reads the first job without removing it (a dequeue's read half).
    pub fn peek(&self) -> Res<Option<fjall::UserValue>> {
        match self.ks.first_key_value() {
            Some(g) => Ok(Some(g.value()?)),
            None => Ok(None),
        }
    }

    /// Takes the first job: `first_key_value` + `remove`.
    pub fn pop(&self, sync: Option<PersistMode>) -> Res<Option<fjall::UserValue>> {
        let Some(g) = self.ks.first_key_value() else {
            return Ok(None);
        };
        let (k, v) = g.into_inner()?;
        self.ks.remove(k)?;
        self.persist(sync)?;
        Ok(Some(v))
    }

    /// Takes the first job at or after the last popped key: a range scan
    /// from a cursor + `remove`. Unlike `first_key_value` it seeks past the
    /// tombstones of earlier pops instead of stepping over each of them.
    /// One consumer only (the cursor is not shared safely between two).
    pub fn pop_from(&self) -> Res<Option<fjall::UserValue>> {
        let from = self.head.load(Ordering::Relaxed).to_be_bytes();
        let Some(g) = self.ks.range(&from[..]..).next() else {
            return Ok(None);
        };
        let (k, v) = g.into_inner()?;
        self.head.store(key_of(&k)? + 1, Ordering::Relaxed);
        self.ks.remove(k)?;
        Ok(Some(v))
    }
}

pub fn enqueue(dir: &Path, sync: Option<PersistMode>, jobs: u64, p: &[u8]) -> Res<Timed> {
    let q = open(dir)?;
    timed(jobs, || {
        for _ in 0..jobs {
            q.push(p, sync)?;
        }
        Ok(())
    })
}

pub fn batches(dir: &Path, batches: u64, p: &[u8]) -> Res<Timed> {
    let q = open(dir)?;
    let items = vec![p; 100];
    timed(batches * 100, || {
        for _ in 0..batches {
            q.push_batch(&items, Some(PersistMode::SyncData))?;
        }
        Ok(())
    })
}

/// Fills `jobs` untimed (batches of 1,000, then one fsync), then times
/// pop after pop.
pub fn dequeue_ack(dir: &Path, sync: Option<PersistMode>, jobs: u64, p: &[u8]) -> Res<Timed> {
    let q = open(dir)?;
    fill(&q, jobs, p)?;
    timed(jobs, || {
        for _ in 0..jobs {
            let v = q.pop(sync)?.ok_or("fjall ran dry")?;
            std::hint::black_box(&v);
        }
        Ok(())
    })
}

/// As [`dequeue_ack`] without fsync, popping with [`Fj::pop_from`].
pub fn dequeue_ack_cursor(dir: &Path, jobs: u64, p: &[u8]) -> Res<Timed> {
    let q = open(dir)?;
    fill(&q, jobs, p)?;
    timed(jobs, || {
        for _ in 0..jobs {
            let v = q.pop_from()?.ok_or("fjall ran dry")?;
            std::hint::black_box(&v);
        }
        Ok(())
    })
}

/// Enqueues `jobs` untimed and makes them durable.
pub fn fill(q: &Fj, jobs: u64, p: &[u8]) -> Res<()> {
    let mut left = jobs;
    while left > 0 {
        let k = left.min(1000) as usize;
        q.push_batch(&vec![p; k], None)?;
        left -= k as u64;
    }
    q.persist(Some(PersistMode::SyncAll))
}

/// `threads` producers on one database, each persisting after its insert.
pub fn producers(dir: &Path, threads: usize, per: u64, p: &[u8]) -> Res<Timed> {
    let q = open(dir)?;
    parallel_lat(threads, per, |_| q.push(p, Some(PersistMode::SyncData)))
}
