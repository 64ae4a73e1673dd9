//! The dead-letter stream: copy a job there before its message goes,
//! list, redrive and purge.

use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::message::StreamMessage;
use std::sync::Arc;

use async_nats::jetstream::stream::{Info, InfoError, LastRawMessageErrorKind};
use async_nats::HeaderMap;
use futures_util::TryStreamExt;

use crate::dead::DeadLetter;
use crate::error::{Error, ErrorKind, Result};
use crate::jetstream::headers::{self, get, hex, one_line, unhex, JobHeaders};
use crate::jetstream::nats_err;
use crate::jetstream::record::{now_ms, Record, State};
use crate::jetstream::setup::{Cas, Inner};

/// Longest error text kept in a dead letter's header.
const MAX_HEADER_ERROR: usize = 2048;

/// Dead letters read at once (concurrent requests).
const DEAD_PAGE: usize = 256;

impl Inner {
    /// Copies a `Dying` job to the dead letters (waiting for the stream to
    /// store it), then marks its record dead. Only then may the caller
    /// acknowledge the delivery: nothing is lost in between.
    pub(crate) async fn finish_dead(
        &self,
        h: &JobHeaders,
        payload: &[u8],
        rec: &Record,
        rev: u64,
    ) -> Result<()> {
        let dead_ms = now_ms();
        let mut hm = HeaderMap::new();
        hm.insert(headers::ID, h.id.to_string().as_str());
        hm.insert(headers::ATTEMPTS, rec.attempts.to_string().as_str());
        hm.insert(headers::MAX_ATTEMPTS, rec.max_attempts.to_string().as_str());
        hm.insert(headers::DEAD_MS, dead_ms.to_string().as_str());
        hm.insert(headers::ENQUEUED_MS, rec.enqueued_ms.to_string().as_str());
        let error = rec.error.clone().unwrap_or_default();
        hm.insert(headers::ERROR, one_line(&error, MAX_HEADER_ERROR).as_str());
        if let Some(key) = &rec.key {
            hm.insert(headers::KEY, hex(key).as_str());
        }
        hm.insert(
            "Nats-Msg-Id",
            format!("walq-dead-{}-{}", h.id, rec.copy).as_str(),
        );
        let msg = Publish::build()
            .payload(payload.to_vec().into())
            .headers(hm);
        self.js
            .send_publish(self.cfg.dead_subject(Some(h.id)), msg)
            .await
            .map_err(|e| nats_err(&format!("publish dead letter of job {}", h.id), e))?
            .await
            .map_err(|e| nats_err(&format!("store dead letter of job {}", h.id), e))?;
        let mut dead = rec.clone();
        dead.state = State::Dead;
        dead.finished_ms = dead_ms;
        self.cas(h.id, &dead, rev).await?;
        Ok(())
    }

    /// The ids of every dead letter, ascending, without their payloads:
    /// the listing kept from the last call when the stream's letters are
    /// the same (one stream-info request, O(1)), else a new listing (see
    /// `list_dead_letters`).
    ///
    /// JetStream has no request for "the next n subjects after this one":
    /// a subject listing (`STREAM.INFO` with a subjects filter) returns
    /// every subject the filter matches, 100,000 a response by offset;
    /// message reads go by stream sequence, and ids are random. Before,
    /// every page listed all letters, so paging through n letters took
    /// O(n²) work; now it takes one listing while no letter comes or goes.
    pub(crate) async fn dead_letter_ids(&self) -> Result<Arc<Vec<u64>>> {
        let info = self
            .dead
            .get_info()
            .await
            .map_err(|e| self.list_failed(e))?;
        let now = LettersKey::of(&info);
        if let Some((key, ids)) = &*self.dead_listing.lock() {
            if *key == now {
                return Ok(ids.clone());
            }
        }
        let (key, ids) = self.list_dead_letters().await?;
        let ids = Arc::new(ids);
        *self.dead_listing.lock() = Some((key, ids.clone()));
        Ok(ids)
    }

    fn list_failed(&self, e: InfoError) -> Error {
        nats_err(
            &format!("list dead letters of stream {}", self.cfg.dead_stream()),
            e,
        )
    }

    /// Lists the subjects of the dead-letter stream (one per job), one
    /// stream-info request per 100,000 of them: the ids, ascending, and
    /// the stream's state the first response gave.
    async fn list_dead_letters(&self) -> Result<(LettersKey, Vec<u64>)> {
        let failed = |e| self.list_failed(e);
        let mut subjects = self
            .dead
            .info_with_subjects(self.cfg.dead_subject(None))
            .await
            .map_err(failed)?;
        let key = LettersKey::of(&subjects.info);
        let prefix = self
            .cfg
            .dead_subject(None)
            .trim_end_matches('*')
            .to_string();
        let mut ids = Vec::new();
        while let Some((subject, _)) = subjects.try_next().await.map_err(failed)? {
            // A subject that names no job is no letter of walq's.
            if let Some(id) = subject.strip_prefix(&prefix).and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok((key, ids))
    }

    /// Job `id`'s dead letter, if it has one.
    pub(crate) async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>> {
        let subject = self.cfg.dead_subject(Some(id));
        match self.dead.get_last_raw_message_by_subject(&subject).await {
            Ok(msg) => Ok(Some(letter_of(id, &msg))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(nats_err(
                &format!(
                    "read dead letter of job {id} from stream {}",
                    self.cfg.dead_stream()
                ),
                e,
            )),
        }
    }

    /// The letters of `ids`, read at once (one round trip), in order; a
    /// letter gone meanwhile (redriven, purged) is left out.
    async fn letters_of(&self, ids: &[u64]) -> Result<Vec<DeadLetter>> {
        let reads = ids.iter().map(|&id| self.dead_letter(id));
        let letters = futures_util::future::try_join_all(reads).await?;
        Ok(letters.into_iter().flatten().collect())
    }

    /// Up to `limit` dead letters with ids after `after` (from the first
    /// with `None`), ascending by id, as `Queue::dead_letters_page`.
    pub(crate) async fn dead_letters_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids = self.dead_letter_ids().await?;
        let from = after.map_or(0, |a| ids.partition_point(|&id| id <= a));
        // An empty page is the end: a page whose every letter went while
        // it was read (redriven, purged) goes on to the ids after it.
        for page in ids.get(from..).unwrap_or_default().chunks(limit) {
            let letters = self.letters_of(page).await?;
            if !letters.is_empty() {
                return Ok(letters);
            }
        }
        Ok(Vec::new())
    }

    /// Every dead letter, ascending by id, read `DEAD_PAGE` at a time.
    pub(crate) async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let mut out = Vec::new();
        for ids in self.dead_letter_ids().await?.chunks(DEAD_PAGE) {
            out.extend(self.letters_of(ids).await?);
        }
        Ok(out)
    }

    async fn dead_message(&self, id: u64) -> Result<StreamMessage> {
        self.dead
            .get_last_raw_message_by_subject(&self.cfg.dead_subject(Some(id)))
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("no dead letter of job {id}: {e}"),
                )
            })
    }

    /// Job `id`'s record, dead (or being redriven). A letter that outlived
    /// its record (untouched for longer than `retention`, the bucket's max
    /// age, while the letters stay) gets its record back from the letter's
    /// headers: the letter is the job.
    async fn dead_record(&self, id: u64, letter: &StreamMessage) -> Result<(Record, u64)> {
        let not_dead = || {
            Error::new(
                ErrorKind::NotFound,
                format!("job {id} is not in the dead letters"),
            )
        };
        match self.record(id).await? {
            Some((rec, rev)) if matches!(rec.state, State::Dead | State::Redriving) => {
                Ok((rec, rev))
            }
            Some(_) => Err(not_dead()),
            None => {
                let rec = record_of_letter(letter, self.cfg.max_attempts);
                match self.create(id, &rec).await? {
                    Cas::Written(rev) => Ok((rec, rev)),
                    Cas::Stale => Err(changed(id)),
                }
            }
        }
    }

    /// Sends job `id` back to the queue as a fresh job (attempts reset).
    pub(crate) async fn redrive(&self, id: u64) -> Result<()> {
        let msg = self.dead_message(id).await?;
        let (dead, rev) = self.dead_record(id, &msg).await?;
        let (rec, rev) = if dead.state == State::Redriving {
            (dead.clone(), rev)
        } else {
            let Some(copy) = dead.next_copy() else {
                let what = format!(
                    "job {id}: its copy number {} cannot grow, so it cannot be redriven",
                    u32::MAX
                );
                return Err(Error::new(ErrorKind::Corrupt, what));
            };
            let mut redriving = dead.clone();
            redriving.state = State::Redriving;
            redriving.copy = copy;
            redriving.attempts = 0;
            redriving.msg_seq = 0;
            redriving.due_ms = 0;
            match self.cas(id, &redriving, rev).await? {
                Cas::Written(rev) => (redriving, rev),
                Cas::Stale => return Err(changed(id)),
            }
        };
        let h = JobHeaders {
            id,
            copy: rec.copy,
            max_attempts: rec.max_attempts,
            key: rec.key.clone(),
            // A redriven job starts again from no attempts.
            attempts: 0,
        };
        if let Err(e) = self.publish_copy(&h, &msg.payload, 0).await {
            return Err(self.undo_redrive(id, &dead, &rec, rev, e).await);
        }
        let mut queued = rec.clone();
        queued.state = State::Queued;
        let mut at = rev;
        while let Cas::Stale = self.cas(id, &queued, at).await? {
            match self.record(id).await? {
                // A concurrent redrive of this copy whose publish failed
                // set the record back to dead (`undo_redrive`: the copy,
                // never leased) after this one's publish was stored: the
                // copy is queued, and the record must say so before the
                // letter goes, or the copy is skipped as dead and the job
                // is lost.
                Some((now, r))
                    if now.state == State::Dead && now.copy == rec.copy && now.msg_seq == 0 =>
                {
                    at = r
                }
                // The copy was leased already (its record is newer), or
                // taken on by another redrive.
                _ => break,
            }
        }
        self.delete_dead(msg.sequence).await
    }

    /// A redrive whose publish failed: the record goes back to dead, so
    /// its status says where the job is (the letter is still there).
    /// Before, it stayed `Redriving`, read as queued, with no message
    /// queued. It keeps the new copy's number: should the publish have
    /// been stored after all (a lost PubAck), that copy meets a dead
    /// record and is skipped, and the next redrive publishes a copy after
    /// it (the same copy again would be a duplicate the stream drops).
    async fn undo_redrive(
        &self,
        id: u64,
        before: &Record,
        redriving: &Record,
        rev: u64,
        e: Error,
    ) -> Error {
        let mut dead = redriving.clone();
        dead.state = State::Dead;
        dead.attempts = before.attempts;
        let what = match self.cas(id, &dead, rev).await {
            Ok(Cas::Written(_)) => "it is still in the dead letters; redrive it again",
            _ => "it may have been sent back to the queue; redrive it again to make sure",
        };
        Error::new(
            e.kind(),
            format!(
                "redrive of job {id} did not finish ({}); {what}",
                e.message()
            ),
        )
    }

    /// Drops job `id`'s dead letter; its status becomes `Purged`.
    pub(crate) async fn purge(&self, id: u64) -> Result<()> {
        let msg = self.dead_message(id).await?;
        let (rec, rev) = self.dead_record(id, &msg).await?;
        if let Cas::Stale = self.cas(id, &rec.purged(), rev).await? {
            return Err(changed(id));
        }
        self.delete_dead(msg.sequence).await
    }

    async fn delete_dead(&self, seq: u64) -> Result<()> {
        self.dead
            .delete_message(seq)
            .await
            .map(|_| ())
            .map_err(|e| {
                nats_err(
                    &format!(
                        "delete dead letter at sequence {seq} of stream {}",
                        self.cfg.dead_stream()
                    ),
                    e,
                )
            })
    }
}

/// What tells one set of letters in the dead-letter stream from another:
/// a letter added (a new letter, or one replacing a job's older letter)
/// raises the last sequence; one removed (redriven, purged, aged out)
/// lowers the count, and only an addition could raise it again; a stream
/// deleted and made anew has another creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LettersKey {
    created_ns: i128,
    first: u64,
    last: u64,
    messages: u64,
}

impl LettersKey {
    fn of(info: &Info) -> LettersKey {
        LettersKey {
            created_ns: info.created.unix_timestamp_nanos(),
            first: info.state.first_sequence,
            last: info.state.last_sequence,
            messages: info.state.messages,
        }
    }
}

/// The last listing of the dead letters and the key it was taken at.
pub(crate) type Listing = parking_lot::Mutex<Option<(LettersKey, Arc<Vec<u64>>)>>;

fn changed(id: u64) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("job {id} changed while it was being redriven or purged"),
    )
}

/// The record of a dead job, from its letter's headers (for a letter
/// whose record aged out of the bucket).
fn record_of_letter(msg: &StreamMessage, default_max_attempts: u32) -> Record {
    let h = &msg.headers;
    let mut rec = Record::new(
        get(h, headers::MAX_ATTEMPTS).unwrap_or(default_max_attempts),
        0,
        h.get(headers::KEY).and_then(|v| unhex(v.as_str())),
    );
    rec.state = State::Dead;
    rec.attempts = get(h, headers::ATTEMPTS).unwrap_or(0);
    // `walq-dead-<id>-<copy>`: the copy that died, so a redrive publishes
    // a copy after it.
    rec.copy = h
        .get("Nats-Msg-Id")
        .and_then(|v| v.as_str().rsplit('-').next()?.parse().ok())
        .unwrap_or(0);
    rec.enqueued_ms = get(h, headers::ENQUEUED_MS).unwrap_or(0);
    rec.finished_ms = get(h, headers::DEAD_MS).unwrap_or(0);
    rec.error = h.get(headers::ERROR).map(|v| v.as_str().to_string());
    rec
}

/// Job `id`'s dead-letter message as a [`DeadLetter`]. The id is the one
/// its subject names (as listed and paged by), not its `Walq-Id` header:
/// a letter without one read as job 0, and the next page, after 0,
/// started over.
fn letter_of(id: u64, msg: &StreamMessage) -> DeadLetter {
    let h = &msg.headers;
    DeadLetter {
        id,
        attempts: get(h, headers::ATTEMPTS).unwrap_or(0),
        enqueued_ms: get(h, headers::ENQUEUED_MS).unwrap_or(0),
        dead_ms: get(h, headers::DEAD_MS).unwrap_or(0),
        error: h
            .get(headers::ERROR)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default(),
        key: h.get(headers::KEY).and_then(|v| unhex(v.as_str())),
        payload: msg.payload.to_vec(),
        queue: crate::DEFAULT_QUEUE.to_string(),
        priority: crate::Priority::Normal,
        group: None,
    }
}
