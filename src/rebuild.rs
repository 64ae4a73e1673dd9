//! Rebuilding the queue state on open, from records that `recovery` has
//! already verified and classified (torn, damaged, clean).
//!
//! `apply` folds one record into a [`Replay`]; `finish` turns the replay
//! into a [`QueueState`] through its own methods (so the segment counts,
//! the delivery order and the counters stay consistent), then settles
//! what the previous process left open: superseded dead letters, missing
//! ack records, leases to release, jobs whose last attempt was cut short.

use std::collections::{HashMap, HashSet, VecDeque};

use super::checkpoint::live_state;
use super::{Config, Counters, QueueState};
use crate::clock::{ms, Now};
use crate::dead::DeadFile;
use crate::error::{Error, Result};
use crate::format::checkpoint::{Checkpoint, CkSlot, SlotRun, Slots};
use crate::format::frame::Frame;
use crate::format::frame::FRAME_HEADER_LEN;
use crate::format::header::SEGMENT_HEADER_LEN;
use crate::format::record::{EnqueueRec, Record, PRIORITY_MAX, PRIORITY_NORMAL};
use crate::idhash::{IdMap, IdSet};
use crate::jobs::{JobTable, Slot, SlotState, TableBuilder};
use crate::keys::{key_check, KeyEntry, KeyIndex, IN_DEAD_LETTERS};
use crate::log::Log;
use crate::named::{scoped_hash, Def, Named};
use crate::options::{Durability, Options};
use crate::segment::Segment;
use crate::stats::RecoveryReport;

/// Jobs as replay leaves them, before leases are released.
pub(crate) struct Replay {
    jobs: JobTable,
    due: IdMap<u64>,
    /// Live jobs whose level is not Normal: their priority byte.
    levels: IdMap<u8>,
    /// Live jobs of a group: the group's hash.
    groups: IdMap<u128>,
    /// Live jobs of a named queue: the queue id.
    queues: IdMap<u16>,
    /// Queue names known: the checkpoint's (with where their QueueDef
    /// was, if written), then the QueueDef records replayed, in log
    /// order, by queue id.
    defs: Vec<(u16, Def)>,
    in_flight: IdSet,
    /// Live jobs' last errors (NackErr records, or the checkpoint's).
    errors: IdMap<String>,
    /// Keys by their hash and an independent check hash: distinct keys
    /// that share a hash keep an entry each.
    keys: HashMap<(u128, u64), KeyEntry>,
    superseded_dead: Vec<u64>,
    /// Jobs whose log records predate their dead letter and that have no
    /// finishing record in the log yet.
    shadowed_by_dead: IdSet,
    /// One past the highest job id seen anywhere.
    pub(crate) next_id: u64,
    records: u64,
    /// Live jobs, and each covered segment's live jobs and bytes, as the
    /// checkpoint's runs gave them (`None` once a record is replayed):
    /// what spares `finish` a pass over the whole table.
    counts: Option<LiveCounts>,
}

/// Live jobs in the job table and per segment (see `Replay::counts`).
#[derive(Debug, Default)]
struct LiveCounts {
    live: u64,
    first_seg: u32,
    /// (jobs, bytes) of segments `first_seg`, `first_seg + 1`, …
    per_seg: Vec<(u64, u64)>,
}

impl LiveCounts {
    /// Counts `n` live jobs of `bytes` bytes in all in segment `seg`.
    fn add(&mut self, seg: u32, n: u64, bytes: u64) {
        if let Some(c) = self
            .per_seg
            .get_mut(seg.wrapping_sub(self.first_seg) as usize)
        {
            c.0 += n;
            c.1 += bytes;
            self.live += n;
        }
    }

    /// Uncounts one live job.
    fn remove(&mut self, slot: &Slot) {
        if let Some(c) = self
            .per_seg
            .get_mut(slot.seg.wrapping_sub(self.first_seg) as usize)
        {
            c.0 = c.0.saturating_sub(1);
            c.1 = c.1.saturating_sub(u64::from(slot.len));
            self.live = self.live.saturating_sub(1);
        }
    }
}

impl Replay {
    /// An empty replay; job ids start at 1.
    pub(crate) fn new() -> Replay {
        Replay {
            jobs: JobTable::default(),
            due: IdMap::default(),
            levels: IdMap::default(),
            groups: IdMap::default(),
            queues: IdMap::default(),
            defs: Vec::new(),
            in_flight: IdSet::default(),
            errors: IdMap::default(),
            keys: HashMap::new(),
            superseded_dead: Vec::new(),
            counts: None,
            shadowed_by_dead: IdSet::default(),
            next_id: 1,
            records: 0,
        }
    }

    fn enqueue(&mut self, seg: u32, off: u32, len: u32, e: &EnqueueRec<'_>, dedup_ms: u64) {
        let slot = Slot {
            seg,
            off,
            len,
            attempts: u16::try_from(e.attempts).unwrap_or(u16::MAX),
            state: SlotState::Fresh,
        };
        self.jobs.insert(e.id, slot);
        self.in_flight.remove(&e.id);
        // The record replaces the job whole: a carried job's error follows
        // it (a NackErr in the same batch), a redriven one starts afresh.
        self.errors.remove(&e.id);
        // A job of a level other than Normal is never fresh: it waits in
        // its level from its enqueue.
        let normal = e.priority == PRIORITY_NORMAL;
        if normal {
            self.levels.remove(&e.id);
        } else {
            self.levels.insert(e.id, e.priority);
        }
        if e.group.is_empty() {
            self.groups.remove(&e.id);
        } else {
            self.groups.insert(e.id, scoped_hash(e.queue, e.group));
        }
        if e.queue == 0 {
            self.queues.remove(&e.id);
        } else {
            self.queues.insert(e.id, e.queue);
        }
        let grouped = !e.group.is_empty();
        let waits = !normal || grouped || e.queue != 0;
        if e.due_ms > e.enqueued_ms || e.attempts > 0 || waits {
            self.due.insert(e.id, e.due_ms);
        } else {
            self.due.remove(&e.id);
        }
        if !e.key.is_empty() {
            let entry = KeyEntry {
                id: e.id,
                expires_ms: e.enqueued_ms.saturating_add(dedup_ms),
                seg,
                off,
                check: key_check(e.key),
            };
            let hash = scoped_hash(e.queue, e.key);
            self.keys.insert((hash, key_check(e.key)), entry);
        }
    }
}

impl Replay {
    /// The replay state a checkpoint stored, as if the log up to its LSN
    /// had been replayed: every job fresh unless it waits or is in flight.
    /// Dead letters settle against it as replay would: one newer than the
    /// checkpoint shadows its job (the ack record may be missing), an older
    /// one was superseded by a redrive. `Err` says what does not add up
    /// (the checkpoint is then not used). `slots` are the stored slots'
    /// bytes ([`Checkpoint::decode_lazy`]).
    pub(crate) fn from_checkpoint(
        ck: &Checkpoint,
        slots: Slots<'_>,
        dead_lsns: &HashMap<u64, u64>,
    ) -> std::result::Result<Replay, String> {
        let mut in_flight = IdSet::default();
        let mut levels = IdMap::default();
        let mut convert = |id: u64, s: &CkSlot| convert(ck, id, s, &mut in_flight, &mut levels);
        let (slots, mut counts) = slot_table(ck, slots, &mut convert)?;
        let aside = aside_table(ck, &mut convert, &mut counts)?;
        let mut replay = Replay::new();
        replay.jobs = slots.finish(ck.slot_base, aside);
        replay.in_flight = in_flight;
        replay.levels = levels;
        checkpoint_groups_and_waiting(ck, &mut replay)?;
        checkpoint_queues(ck, &mut replay)?;
        let fresh_of_a_level = replay
            .levels
            .keys()
            .any(|id| !replay.due.contains_key(id) && !replay.in_flight.contains(id));
        if fresh_of_a_level {
            return damaged("a job of a level other than Normal is not waiting");
        }
        checkpoint_keys(ck, &mut replay);
        checkpoint_errors(ck, &mut replay)?;
        replay.next_id = ck.next_id.max(1);
        replay.settle_dead_letters(ck, dead_lsns, &mut counts);
        replay.counts = Some(counts);
        Ok(replay)
    }

    /// Settles the dead letters (`dead_lsns`: each one's LSN) against the
    /// jobs the checkpoint `ck` left live, and moves the next job id past
    /// theirs. A dead letter written after the checkpoint shadows its job
    /// (taken out of the table and of `counts`; the ack record may be
    /// missing); one written before it was superseded by a redrive.
    fn settle_dead_letters(
        &mut self,
        ck: &Checkpoint,
        dead_lsns: &HashMap<u64, u64>,
        counts: &mut LiveCounts,
    ) {
        for (&id, &lsn) in dead_lsns {
            self.next_id = self.next_id.max(id.saturating_add(1));
            if self.jobs.get(id).is_none() {
                continue;
            }
            if lsn >= ck.next_lsn {
                if let Some(gone) = self.jobs.remove(id) {
                    counts.remove(&gone);
                }
                self.due.remove(&id);
                self.in_flight.remove(&id);
                self.shadowed_by_dead.insert(id);
            } else {
                self.superseded_dead.push(id);
            }
        }
    }
}

/// `Err` saying that the checkpoint is damaged: `what` does not add up.
fn damaged<T>(what: &str) -> std::result::Result<T, String> {
    Err(format!("damaged: {what}"))
}

/// The checkpoint's jobs kept aside (ids below its table's), converted by
/// `one` and counted in `counts`; `Err` if one is out of range or empty.
fn aside_table(
    ck: &Checkpoint,
    one: &mut dyn FnMut(u64, &CkSlot) -> Option<Slot>,
    counts: &mut LiveCounts,
) -> std::result::Result<IdMap<Slot>, String> {
    let mut aside = IdMap::default();
    for (id, s) in &ck.aside {
        match one(*id, s) {
            Some(slot) if *id < ck.slot_base && slot.state != SlotState::Empty => {
                counts.add(slot.seg, 1, u64::from(slot.len));
                // (An id stored twice is counted once.)
                if let Some(old) = aside.insert(*id, slot) {
                    counts.remove(&old);
                }
            }
            _ => return damaged("a job kept aside is out of range"),
        }
    }
    Ok(aside)
}

/// The checkpoint's groups and waiting jobs' due times into `replay`,
/// whose job table is the checkpoint's: every job listed must be live.
/// `Err` says which list does not add up.
fn checkpoint_groups_and_waiting(
    ck: &Checkpoint,
    replay: &mut Replay,
) -> std::result::Result<(), String> {
    for &(id, group) in &ck.groups {
        if replay.jobs.get(id).is_none() {
            return damaged("a job of a group is not live");
        }
        replay.groups.insert(id, group);
    }
    for &(id, due) in &ck.waiting {
        if replay.jobs.get(id).is_none() {
            return damaged("a waiting job is not live");
        }
        replay.due.insert(id, due);
    }
    Ok(())
}

/// The checkpoint's idempotency keys into `replay`.
fn checkpoint_keys(ck: &Checkpoint, replay: &mut Replay) {
    for k in &ck.keys {
        let entry = KeyEntry {
            id: k.id,
            expires_ms: k.expires_ms,
            seg: k.seg,
            off: k.off,
            check: k.check,
        };
        replay.keys.insert((k.hash, k.check), entry);
    }
}

/// The checkpoint's last errors into `replay` (version 5): every job
/// listed must be live. `Err` says what does not add up.
fn checkpoint_errors(ck: &Checkpoint, replay: &mut Replay) -> std::result::Result<(), String> {
    for (id, text) in &ck.errors {
        if replay.jobs.get(*id).is_none() {
            return damaged("a job with a last error is not live");
        }
        replay.errors.insert(*id, text.clone());
    }
    Ok(())
}

/// The checkpoint's named queues and their jobs into `replay` (version
/// 4): every job listed must be live and waiting or in flight (a job of a
/// named queue is never fresh), and a QueueDef's place inside the log the
/// checkpoint covers. `Err` says what does not add up.
fn checkpoint_queues(ck: &Checkpoint, replay: &mut Replay) -> std::result::Result<(), String> {
    let last_seg = ck.first_seg.saturating_add(ck.segments.len() as u32);
    for q in &ck.queues {
        if let Some((seg, lsn)) = q.def {
            if seg >= last_seg || lsn >= ck.next_lsn {
                return damaged("a QueueDef after the log the checkpoint covers");
            }
        }
        let (name, written) = (q.name.clone(), q.def);
        replay.defs.push((q.id, Def { name, written }));
    }
    for &(id, q) in &ck.queue_jobs {
        if replay.jobs.get(id).is_none() {
            return damaged("a job of a named queue is not live");
        }
        if !replay.due.contains_key(&id) && !replay.in_flight.contains(&id) {
            return damaged("a job of a named queue is not waiting");
        }
        replay.queues.insert(id, q);
    }
    Ok(())
}

/// A stored slot as a table slot (a job in flight is noted in
/// `in_flight`, one of a level other than Normal in `levels`); `None` if
/// it does not fit the log the checkpoint covers.
fn convert(
    ck: &Checkpoint,
    id: u64,
    s: &CkSlot,
    in_flight: &mut IdSet,
    levels: &mut IdMap<u8>,
) -> Option<Slot> {
    let state = match s.state {
        0 => return Some(Slot::EMPTY),
        3 => {
            in_flight.insert(id);
            SlotState::Fresh
        }
        _ => live_state(s.state).map(|_| SlotState::Fresh)?,
    };
    let fits = u64::from(s.off) + u64::from(s.len) <= u64::from(segment_end(ck, s.seg)?);
    if s.priority > PRIORITY_MAX {
        return None;
    }
    if s.priority != PRIORITY_NORMAL {
        levels.insert(id, s.priority);
    }
    (fits && id < ck.next_id).then_some(Slot {
        seg: s.seg,
        off: s.off,
        len: s.len,
        attempts: s.attempts,
        state,
    })
}

/// Where the records of covered segment `seg` end; `None` if the
/// checkpoint does not cover it.
fn segment_end(ck: &Checkpoint, seg: u32) -> Option<u32> {
    let i = usize::try_from(seg.checked_sub(ck.first_seg)?).ok()?;
    ck.segments.get(i).map(|s| s.end)
}

/// The job table's slots, straight from the stored bytes (one pass, no
/// second buffer of 16 bytes per job); `one` converts a slot stored
/// whole. Runs of fresh jobs (version 3) are checked as a whole: inside
/// a covered segment, below the next job id. Their number is not bounded
/// by the file's length, so it is bounded by the log's: the records of
/// live jobs never overlap, so their lengths add up to at most the
/// covered bytes, and empty slots are at most a few times the live ones.
fn slot_table(
    ck: &Checkpoint,
    slots: Slots<'_>,
    one: &mut dyn FnMut(u64, &CkSlot) -> Option<Slot>,
) -> std::result::Result<(TableBuilder, LiveCounts), String> {
    let out_of_range = || Err("damaged: a job slot is out of range".to_string());
    // Every slot is an id handed out before the checkpoint: a table past
    // the next id (a damaged base) would strand the jobs enqueued after it.
    let table_end = ck.slot_base.checked_add(slots.len() as u64);
    if table_end.is_none_or(|end| end > ck.next_id.max(1)) {
        return Err(format!(
            "damaged: job slots {}.. (+{}) reach past the next job id {}",
            ck.slot_base,
            slots.len(),
            ck.next_id
        ));
    }
    let covered: u64 = ck.segments.iter().map(|s| u64::from(s.end)).sum();
    let most = (1u64 << 22) + 8 * (covered / FRAME_HEADER_LEN as u64);
    if slots.is_runs() && slots.len() as u64 > most {
        return Err(format!(
            "damaged: {} slots, more than a log of {covered} bytes holds",
            slots.len()
        ));
    }
    let mut table = TableBuilder::default();
    let mut counts = LiveCounts {
        first_seg: ck.first_seg,
        per_seg: vec![(0, 0); ck.segments.len()],
        ..LiveCounts::default()
    };
    let mut live_bytes = 0u64;
    for run in slots.runs() {
        let run = run.map_err(|e| e.to_string())?;
        let id = ck.slot_base.saturating_add(table.len());
        let left = (slots.len() as u64).saturating_sub(table.len());
        match run {
            SlotRun::Empty(n) if n <= left => table.extend_empty(n),
            SlotRun::Fresh(r) if r.n <= left => {
                live_bytes += u64::from(r.end - r.off);
                counts.add(r.seg, r.n, u64::from(r.end - r.off));
                let fits = segment_end(ck, r.seg).is_some_and(|end| r.end <= end);
                let below = id.checked_add(r.n).is_some_and(|end| end <= ck.next_id);
                if !fits || !below || live_bytes > covered {
                    return out_of_range();
                }
                let fresh = |(seg, off, len)| Slot {
                    seg,
                    off,
                    len,
                    attempts: 0,
                    state: SlotState::Fresh,
                };
                match r.same_len {
                    // The common case: whole blocks stay runs.
                    Some(len) => table.extend_fresh_run(r.n, r.seg, r.off, len),
                    None => r.slots().for_each(|s| table.push(fresh(s))),
                }
            }
            SlotRun::One(s) if left > 0 => match one(id, &s) {
                Some(slot) => {
                    if slot.state != SlotState::Empty {
                        counts.add(slot.seg, 1, u64::from(slot.len));
                    }
                    table.push(slot);
                }
                None => return out_of_range(),
            },
            _ => return Err(slots.overflow().to_string()),
        }
    }
    if table.len() != slots.len() as u64 {
        return Err(slots.overflow().to_string());
    }
    Ok((table, counts))
}

impl Replay {
    /// A Lease record, or one entry of a LeaseMany record.
    fn lease(&mut self, id: u64, attempts: u32) {
        if let Some(slot) = self.jobs.get_mut(id) {
            slot.attempts = u16::try_from(attempts).unwrap_or(u16::MAX);
            self.in_flight.insert(id);
        }
    }

    /// An Ack record, or one entry of an AckMany record.
    fn ack(&mut self, id: u64) {
        self.shadowed_by_dead.remove(&id);
        self.levels.remove(&id);
        self.groups.remove(&id);
        self.queues.remove(&id);
        self.jobs.remove(id);
        self.due.remove(&id);
        self.in_flight.remove(&id);
        self.errors.remove(&id);
    }

    /// Whether job `id` of an Enqueue record at LSN `lsn` is live after
    /// it, given the dead letters (`dead_lsns`: each one's LSN). Not if
    /// its dead letter is newer: the job died after the record was
    /// written (noted as shadowed). An older dead letter was superseded
    /// by a redrive (noted as such).
    #[inline]
    fn outlives_dead_letter(&mut self, id: u64, lsn: u64, dead_lsns: &HashMap<u64, u64>) -> bool {
        if let Some(&dead_lsn) = dead_lsns.get(&id) {
            if dead_lsn > lsn {
                // Died after this record was written.
                self.shadowed_by_dead.insert(id);
                return false;
            }
            self.superseded_dead.push(id); // redriven
        }
        true
    }

    /// A Nack record: a live job waits again, due at `due_ms`.
    #[inline]
    fn nack(&mut self, id: u64, due_ms: u64) {
        if self.jobs.get(id).is_some() {
            self.due.insert(id, due_ms);
            self.in_flight.remove(&id);
        }
    }

    /// A NackErr record: a Nack that also sets the job's last error.
    #[inline]
    fn nack_err(&mut self, id: u64, due_ms: u64, error: &str) {
        if self.jobs.get(id).is_some() {
            self.nack(id, due_ms);
            self.errors.insert(id, error.to_owned());
        }
    }

    /// A QueueDef record at LSN `lsn` of segment `seg`: queue `queue` is
    /// named `name`.
    #[inline]
    fn queue_def(&mut self, queue: u16, name: &[u8], seg: u32, lsn: u64) {
        // Decoding checked the name: it is ASCII.
        let name = String::from_utf8_lossy(name).into_owned();
        let written = Some((seg, lsn));
        self.defs.push((queue, Def { name, written }));
    }
}

fn corrupt(seg: &Segment, off: u32, what: String) -> Error {
    Error::corrupt(&seg.path, u64::from(off), what)
}

/// Applies one verified record to the replay state.
pub(crate) fn apply(
    seg: &Segment,
    off: u32,
    f: &Frame<'_>,
    replay: &mut Replay,
    dead_lsns: &HashMap<u64, u64>,
    dedup_ms: u64,
) -> Result<()> {
    replay.records += 1;
    replay.counts = None;
    let Some(rec) = Record::decode(f.kind, f.body) else {
        let what = Record::malformed(f.kind, f.body).unwrap_or_default();
        return Err(corrupt(seg, off, what));
    };
    match rec {
        Record::Enqueue(e) => {
            if e.id >= crate::format::MAX_ID || f.lsn >= crate::format::MAX_ID {
                let what = format!("job id {} or LSN {} out of range", e.id, f.lsn);
                return Err(corrupt(seg, off, what));
            }
            replay.next_id = replay.next_id.max(e.id + 1);
            if replay.outlives_dead_letter(e.id, f.lsn, dead_lsns) {
                replay.enqueue(seg.id, off, f.len, &e, dedup_ms);
            }
        }
        Record::Lease { id, attempts } => replay.lease(id, attempts),
        Record::LeaseMany(entries) => {
            for (id, attempts) in entries.leases() {
                replay.lease(id, attempts);
            }
        }
        Record::Ack { id } => replay.ack(id),
        Record::AckMany(entries) => {
            for id in entries.ids() {
                replay.ack(id);
            }
        }
        Record::Nack { id, due_ms } => replay.nack(id, due_ms),
        Record::NackErr { id, due_ms, error } => replay.nack_err(id, due_ms, error),
        Record::Key {
            queue,
            id,
            expires_ms,
            key,
        } => {
            let entry = KeyEntry {
                id,
                expires_ms,
                seg: seg.id,
                off,
                check: key_check(key),
            };
            replay
                .keys
                .insert((scoped_hash(queue, key), key_check(key)), entry);
        }
        Record::QueueDef { queue, name } => replay.queue_def(queue, name, seg.id, f.lsn),
        Record::Dead(_) | Record::Removed { .. } => {
            let what = "a dead-letter record inside a log segment".to_string();
            return Err(corrupt(seg, off, what));
        }
    }
    Ok(())
}

/// A per-process random starting point for lease tokens, so a receipt kept
/// from an earlier process never matches a lease of this one.
fn random_token_base() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() >> 2
}

/// Keys of dead letters, in the scope of their queue (named by the dead
/// letter; a name the log no longer defines gets an id in memory): a key
/// belongs to its newest job. A dead letter that its redrive superseded (a
/// crash before its removal; it is dropped when the state is built) is
/// skipped: its job is live again, and its key stays homed at the
/// redrive's enqueue record. Homed in the dropped letter, the key could
/// not be read back, was left out of the next checkpoint, and forgotten.
fn add_dead_letter_keys(
    replay: &mut Replay,
    named: &mut Named,
    dead: &DeadFile,
    dedup_ms: u64,
) -> Result<()> {
    let superseded: HashSet<u64> = replay.superseded_dead.iter().copied().collect();
    let ids: Vec<u64> = dead.entries().keys().copied().collect();
    for id in ids.into_iter().filter(|id| !superseded.contains(id)) {
        let Some(letter) = dead.get(id)? else {
            continue;
        };
        let Some(key) = letter.key else { continue };
        // The name was checked when the record decoded; a store already
        // at its queue limit scopes the key to the default queue.
        let queue = named.id_for(&letter.queue).unwrap_or(0);
        // The key is scoped by the id: the name keeps it while this runs.
        named.keep(queue);
        let k = (scoped_hash(queue, &key), key_check(&key));
        if replay.keys.get(&k).is_none_or(|e| e.id <= id) {
            let entry = KeyEntry {
                id,
                expires_ms: letter.enqueued_ms.saturating_add(dedup_ms),
                seg: IN_DEAD_LETTERS,
                off: 0,
                check: k.1,
            };
            replay.keys.insert(k, entry);
        }
    }
    Ok(())
}

/// What the previous process left a job doing.
enum Restore {
    Waiting(u64),
    /// Leased when the process stopped: released, or dead if that was its
    /// last attempt.
    Released {
        last_attempt: bool,
    },
}

/// Jobs to settle after the state is built.
#[derive(Default)]
struct Leftovers {
    released: Vec<u64>,
    exhausted: Vec<u64>,
}

impl QueueState {
    fn empty(log: Log, dead: DeadFile, jobs: JobTable, opts: &Options, clock: Now) -> QueueState {
        let cfg = Config {
            max_attempts: opts.max_attempts,
            visibility_ms: ms(opts.visibility_timeout),
            backoff: opts.backoff,
            dedup_ms: ms(opts.dedup_window),
            max_payload: opts.effective_max_payload(),
            read_committed: opts.durability == Durability::Sync,
        };
        QueueState {
            log,
            dead,
            jobs,
            delivery: super::Levels::default(),
            groups: super::Groups::default(),
            named: Named::default(),
            def_floor: 0,
            ready_in: None,
            leases: super::Leases::default(),
            keys: KeyIndex::default(),
            errors: Default::default(),
            next_id: 1,
            id_floor: None,
            fresh_cursor: 0,
            // Time as the clock says: a record stamped in the future (a
            // clock that stepped back, or a crafted file) must not make
            // delayed jobs due early.
            last: clock,
            next_token: random_token_base(),
            rng: opts.jitter_seed.unwrap_or(clock.wall ^ 0x5eed),
            counters: Counters::default(),
            cfg,
            unconfirmed: VecDeque::new(),
            maintenance: super::reclaim::Maintenance::default(),
            scratch: super::batch::BatchScratch::default(),
        }
    }

    /// Puts a replayed job (its slot already in the table, fresh) in its
    /// place; fresh jobs and segment counts are counted afterwards.
    fn restore(&mut self, id: u64, class: Restore) -> bool {
        let Some(slot) = self.jobs.get_mut(id) else {
            return false;
        };
        match class {
            Restore::Waiting(due) => {
                slot.state = SlotState::Waiting;
                self.place_restored(id, due);
            }
            Restore::Released { last_attempt: true } => slot.state = SlotState::InFlight,
            Restore::Released {
                last_attempt: false,
            } => {
                slot.state = SlotState::Waiting;
                self.place_restored(id, self.last.wall);
            }
        }
        true
    }

    /// A restored waiting job in its queue's order, or blocked in its
    /// group, due at `due`.
    fn place_restored(&mut self, id: u64, due: u64) {
        let groups = self.groups_mut(id);
        if groups.is_blocked(id) {
            groups.set_due(id, due);
        } else {
            self.order_mut(id).push_waiting(id, due);
        }
    }

    /// Puts each live job of a named queue in its queue (named by the
    /// replay's QueueDefs, in `named` already). A queue id with a live job and no QueueDef (a
    /// damaged log) is named `queue-<id>`, so that its jobs can still be
    /// served.
    fn restore_queues(&mut self, replay: &Replay, report: &RecoveryReport) {
        for (&id, &q) in replay.queues.iter() {
            if self.jobs.get(id).is_some() {
                self.named.assign(id, q);
                if self.named.name(q).is_none() {
                    let name = format!("queue-{q}");
                    self.named.define(q, &name, None);
                }
            }
        }
        // Their keys are scoped by the ids, even once the jobs are done:
        // a queue with jobs and no QueueDef written is kept all the same.
        let with_jobs: Vec<u16> = self
            .named
            .lanes()
            .filter(|(_, l)| l.live > 0)
            .map(|(q, _)| q)
            .collect();
        for q in with_jobs {
            self.named.keep(q);
        }
        if report.checkpoint_used {
            self.def_floor = report.checkpoint_lsn.saturating_add(1);
        }
    }

    /// Puts the live jobs of groups in their groups, in id order: the
    /// first of each is its head, the others are blocked (a blocked job
    /// the replay did not give a due time waits from its enqueue time).
    fn restore_groups(&mut self, replay: &mut Replay) {
        let mut grouped: Vec<(u64, u128)> = replay
            .groups
            .iter()
            .filter(|(id, _)| self.jobs.get(**id).is_some())
            .map(|(id, g)| (*id, *g))
            .collect();
        grouped.sort_unstable();
        for (id, group) in grouped {
            let due = replay.due.get(&id).copied().unwrap_or(0);
            let head = self.groups_mut(id).add(id, group, due);
            if !head && !replay.due.contains_key(&id) && !replay.in_flight.contains(&id) {
                let enqueued_ms = self.enqueued_ms_of(id).min(self.last.wall);
                replay.due.insert(id, enqueued_ms);
            }
        }
    }

    /// Classifies every replayed job and puts it in place. Only jobs that
    /// are not fresh are looked at one by one (a job in flight has its
    /// record read for its max attempts); the fresh ones and the segment
    /// counts are counted in one pass over the table.
    fn restore_jobs(&mut self, replay: &Replay, report: &mut RecoveryReport) -> Result<Leftovers> {
        let mut left = Leftovers::default();
        // Live jobs made waiting or in flight (all were fresh before).
        let mut restored = 0u64;
        let mut in_flight: Vec<u64> = replay.in_flight.iter().copied().collect();
        in_flight.sort_unstable();
        for id in in_flight {
            let Some(slot) = self.jobs.get(id) else {
                continue;
            };
            // A record that no longer reads back is served (and found
            // damaged) by the next dequeue, never dropped here.
            let max_attempts = self.job_meta(&slot).map_or(u32::MAX, |m| m.1);
            report.leases_released += 1;
            let last_attempt = u32::from(slot.attempts) >= max_attempts;
            if last_attempt {
                left.exhausted.push(id);
            } else {
                left.released.push(id);
            }
            restored += u64::from(self.restore(id, Restore::Released { last_attempt }));
        }
        for (&id, &due) in replay.due.iter() {
            if !replay.in_flight.contains(&id) {
                restored += u64::from(self.restore(id, Restore::Waiting(due)));
            }
        }
        let stragglers: Vec<u64> = self
            .jobs
            .stragglers()
            .map(|(id, _)| id)
            .filter(|id| !replay.in_flight.contains(id) && !replay.due.contains_key(id))
            .collect();
        for id in stragglers {
            // Not delayed: ready now, in its enqueue-time place (a time
            // stamped in the future must not delay it).
            let enqueued_ms = self.enqueued_ms_of(id).min(self.last.wall);
            restored += u64::from(self.restore(id, Restore::Waiting(enqueued_ms)));
        }
        self.count_restored(replay.counts.as_ref(), restored);
        Ok(left)
    }

    /// Counts the fresh jobs and each segment's live jobs and bytes: from
    /// the checkpoint's counts when no record was replayed after it (every
    /// live job was fresh until `restored` of them were made waiting or in
    /// flight), else in one pass over the job table.
    fn count_restored(&mut self, counts: Option<&LiveCounts>, restored: u64) {
        let first = self.log.segments.front().map_or(0, |i| i.seg.id);
        let known = counts.filter(|c| {
            c.first_seg == first && c.per_seg.len() <= self.log.segments.len() && c.live >= restored
        });
        let (fresh, mut per_seg) = match known {
            Some(c) => (c.live - restored, c.per_seg.clone()),
            None => self.count_table(first),
        };
        // Segments after the covered ones hold no record (none replayed).
        per_seg.resize(self.log.segments.len(), (0, 0));
        #[cfg(debug_assertions)]
        if known.is_some() {
            assert_eq!((fresh, per_seg.clone()), self.count_table(first));
        }
        self.delivery.add_fresh_n(fresh);
        for (info, (jobs, bytes)) in self.log.segments.iter_mut().zip(per_seg) {
            info.live_jobs = jobs;
            info.live_bytes = bytes;
        }
    }

    /// Fresh jobs, and each segment's live jobs and bytes, counted over
    /// the table's slices (a plain loop, not `JobTable::iter`).
    fn count_table(&self, first: u32) -> (u64, Vec<(u64, u64)>) {
        let mut per_seg = vec![(0u64, 0u64); self.log.segments.len()];
        let mut fresh = 0u64;
        let mut count = |slot: &Slot| {
            fresh += u64::from(slot.state == SlotState::Fresh);
            let i = slot.seg.wrapping_sub(first) as usize;
            if let Some(c) = per_seg
                .get_mut(i)
                .filter(|_| slot.state != SlotState::Empty)
            {
                c.0 += 1;
                c.1 += u64::from(slot.len);
            }
        };
        self.jobs.for_each_ordered(&mut count);
        self.jobs.stragglers().for_each(|(_, s)| count(s));
        (fresh, per_seg)
    }

    /// Drops the dead letters of redriven jobs, writes the ack records a
    /// crash left out, records each released lease.
    fn settle_leftovers(&mut self, replay: &mut Replay, left: &mut Leftovers) -> Result<()> {
        if !replay.superseded_dead.is_empty() {
            for &id in &replay.superseded_dead {
                self.dead.remove(id, self.log.next_lsn)?;
            }
            self.dead.sync()?;
        }
        // A crash between writing a dead letter and its ack record: write
        // the ack record now, so the job stays finished if it is purged.
        if !replay.shadowed_by_dead.is_empty() {
            let mut ids: Vec<u64> = replay.shadowed_by_dead.iter().copied().collect();
            ids.sort_unstable();
            for id in ids {
                self.log.append(&Record::Ack { id }, 0, self.next_id)?;
            }
            self.log.sync_now()?;
        }
        // Record each release, so the job keeps its place if the queue is
        // reopened again before it is served. Not synced here: the records
        // become durable with the log's next sync, and one lost to a power
        // cut before it only lets the next open release the same lease
        // again (its attempt was counted by the lease record, which the
        // last open found durable). An open after a close that left leases
        // held spared one fdatasync.
        if !left.released.is_empty() {
            left.released.sort_unstable();
            let due_ms = self.last.wall;
            for &id in &left.released {
                self.log
                    .append(&Record::Nack { id, due_ms }, 0, self.next_id)?;
            }
        }
        Ok(())
    }
}

/// Builds the live state from the replay and releases old leases.
pub(crate) fn finish(
    mut log: Log,
    dead: DeadFile,
    mut replay: Replay,
    opts: &Options,
    clock_ms: u64,
    mut report: RecoveryReport,
) -> Result<(QueueState, RecoveryReport)> {
    let clock = Now {
        wall: clock_ms,
        mono: opts.clock.monotonic_ms(),
    };
    report.records = replay.records;
    let dedup_ms = ms(opts.dedup_window);
    let mut named = Named::default();
    for (q, def) in std::mem::take(&mut replay.defs) {
        named.define(q, &def.name, def.written);
    }
    add_dead_letter_keys(&mut replay, &mut named, &dead, dedup_ms)?;
    // Replay marks every job fresh; `restore_jobs` decides again.
    let _ = replay.jobs.take_parked_fresh();
    log.tail = log.tail.max(SEGMENT_HEADER_LEN as u32);
    let active_next_id = log.active().header.next_job_id;
    let jobs = std::mem::take(&mut replay.jobs);
    let mut state = QueueState::empty(log, dead, jobs, opts, clock);
    state.named = named;
    state.next_id = replay.next_id.max(active_next_id);
    for ((hash, _), entry) in std::mem::take(&mut replay.keys) {
        state.keys.set(hash, None, entry);
    }
    for (id, text) in std::mem::take(&mut replay.errors) {
        // Jobs a newer dead letter shadows are no longer in the table.
        if state.jobs.get(id).is_some() {
            state.errors.set(id, &text);
        }
    }
    state.restore_queues(&replay, &report);
    for (&id, &level) in replay.levels.iter() {
        if state.jobs.get(id).is_some() {
            state.order_mut(id).set_level(id, level);
        }
    }
    state.restore_groups(&mut replay);
    let mut left = state.restore_jobs(&replay, &mut report)?;
    state.settle_leftovers(&mut replay, &mut left)?;
    let now = state.now(clock);
    for id in left.exhausted {
        let attempts = state.jobs.get(id).map_or(0, |s| s.attempts);
        let text = format!("the process stopped during attempt {attempts}, the last one allowed");
        state.dead_letter(id, &text, now.wall)?;
        report.dead_lettered_on_open += 1;
    }
    state.sweep_keys(now.wall);
    state.maintain(now.wall);
    Ok((state, report))
}
