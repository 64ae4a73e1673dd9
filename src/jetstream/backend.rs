//! [`Backend`] for [`JetStream`]: enqueue, and the blocking wrappers.

use std::sync::Arc;
use std::time::Duration;

use crate::dead::DeadLetter;
use crate::error::{Error, ErrorKind, Result};
use crate::jetstream::headers::{id_of_key, random_id, JobHeaders};
use crate::jetstream::record::{ms_after, now_ms, LeaseClock, Record, State};
use crate::jetstream::setup::{Cas, Inner};
use crate::jetstream::{JetStream, JetStreamStats};
use crate::options::{EnqueueOptions, MAX_ATTEMPTS_LIMIT, MAX_ERROR_LEN, MAX_KEY_LEN};
use crate::priority::Priority;
use crate::queue::Enqueued;
use crate::status::JobStatus;
use crate::worker::{Backend, Delivery};

/// Proof of one lease on a job held through [`JetStream`]: the delivery's
/// ack subject and the job record's revision that the lease wrote. Cheap
/// to clone; clones are the same lease.
#[derive(Clone)]
pub struct JetStreamLease {
    pub(crate) state: Arc<LeaseState>,
}

pub(crate) struct LeaseState {
    pub(crate) headers: JobHeaders,
    pub(crate) reply: String,
    pub(crate) payload: Vec<u8>,
    /// What the lease knows of its job's record. Locked across a settle,
    /// so a heartbeat and a settle of one lease never race each other's
    /// compare-and-set.
    pub(crate) held: tokio::sync::Mutex<Held>,
}

/// What a lease knows of its job's record.
pub(crate) struct Held {
    /// The record as this lease last wrote it.
    pub(crate) rec: Record,
    /// Its revision: the next write of the lease is a CAS at it.
    pub(crate) rev: u64,
    /// A write of this lease whose reply never came (a request timeout, a
    /// connection lost), with the deadline it gave the lease (by
    /// `clock`): the server may have stored it. The next operation of
    /// the lease reads the record first and, if it is exactly this
    /// write, goes on from its revision and deadline.
    pub(crate) unsure: Option<(Record, u64)>,
    /// A settle of this lease that returned an error: its write may be
    /// stored (`unsure`), or stored with the steps after it (a publish,
    /// the ack) not done. A repeat of the same settle finishes it and
    /// succeeds; cleared when a settle returns `Ok`.
    pub(crate) unfinished: Option<Settle>,
    /// The clock the lease's deadline is checked by.
    pub(crate) clock: LeaseClock,
    /// When the lease ends, by `clock`. The record's `lease_expires_ms`
    /// is the same deadline by the wall clock, for `status`: a wall
    /// clock stepped since the lease was taken moves one, not the other.
    pub(crate) expires_ms: u64,
}

/// Which settle a lease began (see `Held::unfinished`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    Complete,
    Retry,
    /// A retry due now with the attempt given back: a settle of its own,
    /// so that a `retry` after a `release` whose reply was lost (or the
    /// reverse) is `LeaseLost`, not the other finished.
    Release,
    Fail,
}

impl JetStreamLease {
    pub(crate) fn new(
        h: JobHeaders,
        reply: String,
        payload: Vec<u8>,
        rec: Record,
        rev: u64,
        clock: LeaseClock,
        expires_ms: u64,
    ) -> Self {
        JetStreamLease {
            state: Arc::new(LeaseState {
                headers: h,
                reply,
                payload,
                held: tokio::sync::Mutex::new(Held {
                    rec,
                    rev,
                    unsure: None,
                    unfinished: None,
                    clock,
                    expires_ms,
                }),
            }),
        }
    }

    /// The job id.
    pub fn id(&self) -> u64 {
        self.state.headers.id
    }
}

impl std::fmt::Debug for JetStreamLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JetStreamLease(job {}, {})", self.id(), self.state.reply)
    }
}

/// Refuses what the JetStream backend cannot honour rather than ignore
/// it: a message group (its jobs would run at once and in any order) and
/// a level other than `Normal` (one stream delivers in publish order).
fn refuse_unsupported(opts: &EnqueueOptions) -> Result<()> {
    if opts.group.is_some() {
        return Err(Error::new(
            ErrorKind::InvalidOptions,
            "the JetStream backend has no message groups: a group's jobs would not run one at a time",
        ));
    }
    if opts.priority != Priority::Normal {
        return Err(Error::new(
            ErrorKind::InvalidOptions,
            format!(
                "the JetStream backend has no priority levels: {:?} would be delivered as Normal",
                opts.priority
            ),
        ));
    }
    Ok(())
}

/// Bytes of a message the headers walq adds may take: a dead letter's
/// error text (at most [`MAX_ERROR_LEN`]), its key, ids and counters.
const HEADER_ROOM: usize = MAX_ERROR_LEN + MAX_KEY_LEN + 1024;

impl Inner {
    /// Refuses a payload that the server would refuse in any copy of the
    /// job (its `max_payload`, 1 MiB by default, less [`HEADER_ROOM`]),
    /// before anything is written: the client would refuse the publish
    /// locally, and an enqueue that then said "may have been enqueued,
    /// enqueue it again" would fail the same way each time.
    fn check_fits(&self, len: usize) -> Result<()> {
        let max_payload = self.client.server_info().max_payload;
        let limit = max_payload.saturating_sub(HEADER_ROOM);
        // 0: no INFO seen (never after `connect`): the server decides.
        if max_payload > 0 && len > limit {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "a payload of {len} bytes is over {limit}: the server's max_payload of \
                     {max_payload} bytes less {HEADER_ROOM} for walq's headers"
                ),
            ));
        }
        Ok(())
    }

    /// Creates the job's record, then publishes its first copy. An error
    /// after the record was created means the job may have been enqueued
    /// (see `maybe_enqueued`).
    pub(crate) async fn enqueue(&self, payload: Vec<u8>, opts: EnqueueOptions) -> Result<Enqueued> {
        let max_attempts = opts.max_attempts.unwrap_or(self.cfg.max_attempts);
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                format!("max_attempts {max_attempts} is outside 1..={MAX_ATTEMPTS_LIMIT}"),
            ));
        }
        opts.validate()?;
        refuse_unsupported(&opts)?;
        self.check_fits(payload.len())?;
        let due_ms = if opts.delay.is_zero() {
            0
        } else {
            ms_after(now_ms(), opts.delay)
        };
        let rec = Record::new(max_attempts, due_ms, opts.key.clone());
        let (id, rev) = match &opts.key {
            Some(key) => {
                let id = id_of_key(key);
                match self.create_keyed(id, &rec, key, &payload).await? {
                    Ok(rev) => (id, rev),
                    Err(duplicate) => return Ok(duplicate),
                }
            }
            None => loop {
                let id = random_id();
                if let Cas::Written(rev) = self.create(id, &rec).await? {
                    break (id, rev);
                }
            },
        };
        let h = JobHeaders {
            id,
            copy: 0,
            max_attempts,
            key: opts.key,
            attempts: 0,
        };
        if let Err(e) = self.publish_copy(&h, &payload, due_ms).await {
            // Perhaps no message: drop the record, so the key is free
            // again. Perhaps one was stored (a lost PubAck): it is the
            // job, and a lease rebuilds its record. Only the record as
            // created goes: a worker that leased (or ran) the stored copy
            // meanwhile wrote a newer one, which must stay.
            let _ = self
                .kv
                .delete_expect_revision(id.to_string(), Some(rev))
                .await;
            return Err(maybe_enqueued(id, e));
        }
        Ok(Enqueued {
            id,
            duplicate: false,
        })
    }

    /// Creates the record of keyed job `id`: its revision, or the job
    /// that holds the key already. A record that vanishes between the
    /// create that found it and the read of it (the clean-up of an
    /// enqueue that failed, landing late) is created again, a few times.
    async fn create_keyed(
        &self,
        id: u64,
        rec: &Record,
        key: &[u8],
        payload: &[u8],
    ) -> Result<std::result::Result<u64, Enqueued>> {
        for _ in 0..3 {
            match self.create(id, rec).await? {
                Cas::Written(rev) => return Ok(Ok(rev)),
                Cas::Stale => {
                    if let Some(duplicate) = self.duplicate(id, key, payload).await? {
                        return Ok(Err(duplicate));
                    }
                }
            }
        }
        Err(Error::new(
            ErrorKind::NotFound,
            format!("job {id} vanished while its key was checked, three times; enqueue again"),
        ))
    }

    /// An enqueue whose key is taken: the existing job (`None` if its
    /// record is gone by now). If that job never ran, its first copy is
    /// published again (a no-op within the duplicate window), in case the
    /// first enqueue stopped between its record and its message.
    async fn duplicate(&self, id: u64, key: &[u8], payload: &[u8]) -> Result<Option<Enqueued>> {
        let Some((rec, _)) = self.record(id).await? else {
            return Ok(None);
        };
        if rec.key.as_deref() != Some(key) {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                format!("idempotency key collides with job {id}'s; use another key"),
            ));
        }
        if matches!(rec.state, State::Queued | State::Delayed) && rec.copy == 0 && rec.attempts == 0
        {
            let h = JobHeaders {
                id,
                copy: 0,
                max_attempts: rec.max_attempts,
                key: rec.key.clone(),
                attempts: 0,
            };
            self.publish_copy(&h, payload, rec.due_ms)
                .await
                .map_err(|e| maybe_enqueued(id, e))?;
        }
        Ok(Some(Enqueued {
            id,
            duplicate: true,
        }))
    }

    pub(crate) async fn status(&self, id: u64) -> Result<JobStatus> {
        Ok(match self.record(id).await? {
            Some((rec, _)) => rec.status(now_ms()),
            None => JobStatus::Unknown,
        })
    }
}

/// The error of an enqueue whose publish failed. The publish may have
/// been stored all the same (its PubAck lost to a timeout or a dropped
/// connection, or a failover), and then the job runs: the error says
/// "may have been enqueued", and how to have it once.
fn maybe_enqueued(id: u64, e: Error) -> Error {
    Error::new(
        e.kind(),
        format!(
            "job {id} may have been enqueued ({}); enqueue it again with the same \
             idempotency key to have it exactly once",
            e.message()
        ),
    )
}

impl Backend for JetStream {
    type Lease = JetStreamLease;

    /// Creates the job's record and publishes the job, and returns once
    /// the stream stored it (PubAck).
    ///
    /// An error means the job **may have been enqueued**: a publish whose
    /// PubAck was lost (a timeout, a dropped connection, a failover) was
    /// perhaps stored, and then the job runs. Enqueue again with the same
    /// idempotency key to have it exactly once (the second enqueue finds
    /// the job, or publishes the same copy, which the stream's duplicate
    /// window drops); without a key, a second enqueue may make a second
    /// job.
    fn enqueue(&self, payload: &[u8], opts: EnqueueOptions) -> Result<Enqueued> {
        let payload = payload.to_vec();
        self.block(|i| async move { i.enqueue(payload, opts).await })
    }

    fn lease(
        &self,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Option<Delivery<JetStreamLease>>> {
        self.block(|i| i.lease(visibility, wait))
    }

    /// Writes `done` (a compare-and-set at the lease's revision), then
    /// acks the delivery. `LeaseLost` if the lease expired, another
    /// delivery took the job, or a settle of this lease returned `Ok`
    /// already.
    ///
    /// **Repeating a settle that failed.** An error may mean the write
    /// was stored and only its reply lost (a timeout, a dropped
    /// connection, a failover). The same settle (`complete`, `retry` or
    /// `fail`) on the same lease may then be called again: it reads the
    /// record, and if the first call's write is there, finishes what that
    /// call left undone and returns `Ok` (the first call's result, delay
    /// or error text stands); if it is not, the settle is made as usual.
    /// A different settle after a stored one is `LeaseLost`.
    fn complete(&self, lease: &JetStreamLease, result: Option<&[u8]>) -> Result<()> {
        let (lease, result) = (lease.clone(), result.map(<[u8]>::to_vec));
        self.block(|i| async move { i.complete(&lease, result).await })
    }

    fn complete_batch(&self, items: &[(&JetStreamLease, Option<&[u8]>)]) -> Vec<Result<()>> {
        let items: Vec<_> = items
            .iter()
            .map(|(l, r)| ((*l).clone(), r.map(<[u8]>::to_vec)))
            .collect();
        let n = items.len();
        // All completions in flight at once: one round trip, not one each.
        self.block(|i| async move {
            let all = items.into_iter().map(|(lease, result)| {
                let i = i.clone();
                async move { i.complete(&lease, result).await }
            });
            Ok(futures_util::future::join_all(all).await)
        })
        .unwrap_or_else(|e| {
            (0..n)
                .map(|_| Err(Error::new(e.kind(), e.to_string())))
                .collect()
        })
    }

    /// Writes the retry's intent, publishes the job's next copy (due
    /// after `delay`), then acks the delivery; on the last attempt, as
    /// [`Backend::fail`]. A retry that returned an error may be repeated
    /// (see [`Backend::complete`]).
    fn retry(&self, lease: &JetStreamLease, delay: Option<Duration>, error: &str) -> Result<()> {
        let (lease, error) = (lease.clone(), error.to_string());
        self.block(|i| async move { i.retry(&lease, delay, &error).await })
    }

    /// As [`Backend::retry`] due now, with the attempt the lease counted
    /// taken back (the record's and the next copy's attempts), and never
    /// a dead letter. A release that returned an error may be repeated
    /// (see [`Backend::complete`]).
    fn release(&self, lease: &JetStreamLease, error: &str) -> Result<()> {
        let (lease, error) = (lease.clone(), error.to_string());
        self.block(|i| async move { i.release(&lease, &error).await })
    }

    /// Writes `dying`, publishes the dead letter, marks the job dead,
    /// then acks the delivery. A fail that returned an error may be
    /// repeated (see [`Backend::complete`]).
    fn fail(&self, lease: &JetStreamLease, error: &str) -> Result<()> {
        let (lease, error) = (lease.clone(), error.to_string());
        self.block(|i| async move { i.fail(&lease, &error).await })
    }

    fn extend(&self, lease: &JetStreamLease, visibility: Duration) -> Result<()> {
        let lease = lease.clone();
        self.block(|i| async move { i.extend(&lease, visibility).await })
    }

    fn status(&self, id: u64) -> Result<JobStatus> {
        self.block(|i| async move { i.status(id).await })
    }

    /// Sets the job's record to `Purged` (a compare-and-set at the
    /// revision read, so a lease taken meanwhile wins and the cancel is
    /// refused); a delivery of it is then acknowledged and skipped. A
    /// delayed copy's schedule is purged from the stream; a ready copy
    /// stays there (and in `stats`' waiting count) until a worker meets
    /// and drops it. Whether a lease ran out is judged by this host's
    /// wall clock, as [`Backend::status`] judges it.
    fn cancel(&self, id: u64) -> Result<()> {
        self.block(|i| async move { i.cancel(id).await })
    }
}

impl JetStream {
    /// Every dead letter (payload, attempts, last error), ascending by
    /// job id, as [`crate::Queue::dead_letters`]: all in memory, read 256
    /// at a time. Prefer [`JetStream::dead_letters_page`] when there may
    /// be many.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.block(|i| async move { i.dead_letters().await })
    }

    /// Up to `limit` dead letters with job ids after `after` (from the
    /// first with `None`), ascending by id, as
    /// [`crate::Queue::dead_letters_page`]: pass the last id of a page as
    /// the next page's `after`; the end is an empty page. A letter
    /// redriven or purged while the page is read is left out, so a page
    /// may be shorter than `limit` before the end.
    ///
    /// Cost: each page asks for the dead-letter stream's state (one
    /// request) and reads its letters at once. It lists the stream's
    /// subjects (one request per 100,000 letters, O(all letters)) only
    /// when letters came or went since the last listing this backend
    /// made; paging through a stream that is not changing lists it once.
    /// A stream that changes between every page is listed for every
    /// page: JetStream has no request for "the next n subjects after
    /// this one" (a subject listing returns every subject its filter
    /// matches; message reads go by stream sequence, and job ids are
    /// random, so id order is no sequence order).
    pub fn dead_letters_page(&self, after: Option<u64>, limit: usize) -> Result<Vec<DeadLetter>> {
        self.block(move |i| async move { i.dead_letters_page(after, limit).await })
    }

    /// The ids of every dead letter, ascending, without their payloads:
    /// a listing of the dead-letter stream's subjects, reused while no
    /// letter came or went (see [`JetStream::dead_letters_page`]).
    pub fn dead_letter_ids(&self) -> Result<Vec<u64>> {
        self.block(|i| async move { Ok(i.dead_letter_ids().await?.to_vec()) })
    }

    /// Job `id`'s dead letter, if it has one.
    pub fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>> {
        self.block(move |i| async move { i.dead_letter(id).await })
    }

    /// Sends dead job `id` back to the queue with its attempts reset.
    /// `NotFound` if it is not in the dead letters. When its publish
    /// fails, the job stays dead (its status and the dead letters say
    /// so) and the error says to redrive it again; only if the record
    /// could not be set back does the error say it may have been sent
    /// back.
    pub fn redrive(&self, id: u64) -> Result<()> {
        self.block(|i| async move { i.redrive(id).await })
    }

    /// Redrives every dead letter; how many.
    pub fn redrive_all(&self) -> Result<usize> {
        let ids = self.dead_letter_ids()?;
        ids.iter().try_for_each(|&id| self.redrive(id))?;
        Ok(ids.len())
    }

    /// Drops dead job `id`; its status becomes `Purged`.
    pub fn purge(&self, id: u64) -> Result<()> {
        self.block(|i| async move { i.purge(id).await })
    }

    /// Purges every dead letter; how many.
    pub fn purge_all(&self) -> Result<usize> {
        let ids = self.dead_letter_ids()?;
        ids.iter().try_for_each(|&id| self.purge(id))?;
        Ok(ids.len())
    }

    /// Counts from the stream and consumer info.
    pub fn stats(&self) -> Result<JetStreamStats> {
        self.block(|i| async move { i.stats().await })
    }
}
