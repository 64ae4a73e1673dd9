//! A simple in-memory model of the queue for `ops_with_crash`: jobs by id
//! with their state, keys, and what a crash may or may not have kept.
//!
//! The model follows the engine's rules as the brief states them, with the
//! engine's laziness where it is observable: an expired lease ends (the job
//! is ready again at its deadline, or dead on its last attempt) when the
//! engine next looks at leases, that is at the start of a dequeue, or when
//! a receipt of that very lease is used.
//!
//! Where a crash leaves a choice (a lease written since the last sync may
//! or may not have survived), the model keeps a range (`attempts`, due
//! time) or a "maybe dead", and settles it from what the reopened queue
//! shows, checking that what it shows is one of the allowed outcomes.

use std::collections::{BTreeMap, BTreeSet};

use walq::Receipt;

/// Where a live job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MState {
    /// Waiting for its due time (known to lie in `lo..=hi`); ready when due.
    Ready {
        /// Earliest possible due time.
        lo: u64,
        /// Latest possible due time.
        hi: u64,
    },
    /// Leased under `receipt` until `deadline` (exclusive).
    Leased {
        /// The lease's receipt.
        receipt: Receipt,
        /// When the lease ends.
        deadline: u64,
    },
    /// In the dead letters.
    Dead,
}

/// A job the queue holds (live or dead).
#[derive(Debug, Clone)]
pub struct MJob {
    /// Payload.
    pub payload: Vec<u8>,
    /// Idempotency key.
    pub key: Option<Vec<u8>>,
    /// When it was first enqueued.
    pub enqueued_ms: u64,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Attempts made: between `.0` and `.1` (equal unless a crash blurred it).
    pub attempts: (u32, u32),
    /// Attempts as of the last point where the whole log was durable.
    pub synced_attempts: (u32, u32),
    /// A lease was written since the last sync point.
    pub unsynced_lease: bool,
    /// The log's last word on this job is a lease (released on open).
    pub log_in_flight: bool,
    /// An open released its lease and nothing synced the release record
    /// since: a power loss may take it, and the next open releases the
    /// lease again, due at that open.
    pub unsynced_release: bool,
    /// State.
    pub state: MState,
}

impl MJob {
    /// Whether the job is surely ready at `now`.
    pub fn surely_ready(&self, now: u64) -> bool {
        matches!(self.state, MState::Ready { hi, .. } if hi <= now)
    }

    /// Whether the job may be ready at `now`.
    pub fn maybe_ready(&self, now: u64) -> bool {
        matches!(self.state, MState::Ready { lo, .. } if lo <= now)
    }
}

/// The model.
#[derive(Debug)]
pub struct Model {
    /// Live and dead jobs by id.
    pub jobs: BTreeMap<u64, MJob>,
    /// Finished jobs (acked or purged): when they were enqueued, for the
    /// dedup window of their key.
    pub finished: BTreeMap<u64, u64>,
    /// Idempotency keys and the job each one names.
    pub keys: BTreeMap<Vec<u8>, u64>,
    /// The largest id handed out.
    pub max_id: u64,
    /// Default max attempts (also given to redriven jobs).
    pub max_attempts: u32,
    /// Visibility timeout.
    pub visibility_ms: u64,
    /// Dedup window.
    pub window_ms: u64,
    /// Jobs a crash may have dead-lettered on open (settled on reopen).
    pub maybe_dead: BTreeSet<u64>,
}

/// What the model expects from a key lookup.
pub enum KeyExpect {
    /// The key names a known job: the enqueue is a duplicate of it.
    Duplicate(u64),
    /// A new job.
    New,
}

impl Model {
    /// An empty queue.
    pub fn new(max_attempts: u32, visibility_ms: u64, window_ms: u64) -> Model {
        Model {
            jobs: BTreeMap::new(),
            finished: BTreeMap::new(),
            keys: BTreeMap::new(),
            max_id: 0,
            max_attempts,
            visibility_ms,
            window_ms,
            maybe_dead: BTreeSet::new(),
        }
    }

    /// What an enqueue with `key` at `now` must do.
    pub fn key_expect(&self, key: &[u8], now: u64) -> KeyExpect {
        let Some(&id) = self.keys.get(key) else {
            return KeyExpect::New;
        };
        if self.jobs.contains_key(&id) {
            return KeyExpect::Duplicate(id);
        }
        match self.finished.get(&id) {
            Some(&enq) if enq.saturating_add(self.window_ms) > now => KeyExpect::Duplicate(id),
            _ => KeyExpect::New,
        }
    }

    /// Records a new job.
    pub fn add(
        &mut self,
        id: u64,
        payload: Vec<u8>,
        key: Option<Vec<u8>>,
        max: u32,
        now: u64,
        due: u64,
    ) {
        assert!(
            id > self.max_id,
            "job id {id} is not above every earlier id {}",
            self.max_id
        );
        self.max_id = id;
        if let Some(k) = &key {
            self.keys.insert(k.clone(), id);
        }
        self.jobs.insert(
            id,
            MJob {
                payload,
                key,
                enqueued_ms: now,
                max_attempts: max,
                attempts: (0, 0),
                synced_attempts: (0, 0),
                unsynced_lease: false,
                log_in_flight: false,
                unsynced_release: false,
                state: MState::Ready { lo: due, hi: due },
            },
        );
    }

    /// Ends every lease whose deadline is not after `now`, as the engine
    /// does at the start of a dequeue.
    pub fn expire(&mut self, now: u64) {
        for job in self.jobs.values_mut() {
            if let MState::Leased { deadline, .. } = job.state {
                if deadline <= now {
                    job.state = if job.attempts.1 >= job.max_attempts {
                        MState::Dead
                    } else {
                        MState::Ready {
                            lo: deadline,
                            hi: deadline,
                        }
                    };
                }
            }
        }
    }

    /// The job leased under `r`, if that lease is current (whatever its
    /// deadline).
    pub fn holder(&self, r: Receipt) -> Option<(u64, u64)> {
        let job = self.jobs.get(&r.job_id())?;
        match job.state {
            MState::Leased { receipt, deadline } if receipt == r => Some((r.job_id(), deadline)),
            _ => None,
        }
    }

    /// Checks a receipt as the engine does: `Some(id)` if its lease is
    /// held at `now`; an expired one ends every expired lease first.
    pub fn use_receipt(&mut self, r: Receipt, now: u64) -> Option<u64> {
        match self.holder(r) {
            Some((id, deadline)) if deadline > now => Some(id),
            Some(_) => {
                self.expire(now);
                None
            }
            None => None,
        }
    }

    /// A job finished (acked or purged).
    pub fn finish(&mut self, id: u64) {
        let job = self.jobs.remove(&id).expect("finishing a known job");
        self.finished.insert(id, job.enqueued_ms);
    }

    /// Everything written so far is durable.
    pub fn synced(&mut self) {
        for job in self.jobs.values_mut() {
            job.synced_attempts = job.attempts;
            job.unsynced_lease = false;
            job.unsynced_release = false;
        }
    }

    /// Dead job ids.
    pub fn dead(&self) -> Vec<u64> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.state == MState::Dead)
            .map(|(&id, _)| id)
            .collect()
    }

    /// The queue was closed cleanly (`lost_leases` false) or lost power
    /// (true) and is opened again at `now`: leases end; a job whose lease
    /// is the log's last word on it is ready now, or dead if that was its
    /// last attempt. After a power loss, leases written since the last sync
    /// may be gone, so their jobs' attempts and fate are open.
    pub fn reopen(&mut self, now: u64, lost_leases: bool) {
        self.maybe_dead.clear();
        for (&id, job) in self.jobs.iter_mut() {
            if job.state == MState::Dead {
                continue;
            }
            let uncertain = lost_leases && job.unsynced_lease;
            if uncertain {
                job.attempts = (job.synced_attempts.0, job.attempts.1);
            }
            let release_lost = lost_leases && job.unsynced_release;
            if let (true, MState::Ready { lo, hi }) = (release_lost, job.state) {
                // The last open's release may be gone: released again now.
                job.state = MState::Ready {
                    lo,
                    hi: hi.max(now),
                };
                job.unsynced_release = true;
            } else {
                job.unsynced_release = false;
            }
            if job.log_in_flight || uncertain {
                // Released (its due time is the open, or earlier if the
                // lease was carried forward or lost): ready now.
                job.state = MState::Ready { lo: 0, hi: now };
                job.unsynced_release = true;
                if job.attempts.0 >= job.max_attempts && job.log_in_flight && !uncertain {
                    job.state = MState::Dead;
                } else if job.attempts.1 >= job.max_attempts {
                    self.maybe_dead.insert(id);
                }
            } else if let MState::Leased { .. } = job.state {
                unreachable!("a leased job is in flight in the log");
            }
            job.log_in_flight = false;
            job.unsynced_lease = false;
            job.synced_attempts = job.attempts;
        }
    }

    /// Counts `(surely ready, maybe ready, delayed-or-ready, in flight,
    /// dead)` at `now`.
    pub fn counts(&self, now: u64) -> (u64, u64, u64, u64, u64) {
        let (mut sure, mut maybe, mut waiting, mut leased, mut dead) = (0, 0, 0, 0, 0);
        for job in self.jobs.values() {
            match job.state {
                MState::Ready { .. } => {
                    waiting += 1;
                    sure += u64::from(job.surely_ready(now));
                    maybe += u64::from(job.maybe_ready(now));
                }
                MState::Leased { .. } => leased += 1,
                MState::Dead => dead += 1,
            }
        }
        (sure, maybe, waiting, leased, dead)
    }
}
