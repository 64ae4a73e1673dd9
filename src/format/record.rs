//! Record bodies: what each frame kind carries.
//!
//! Log segments hold kinds 1–5, 11, 12, 14–16 and 18; the dead-letter file
//! holds kinds 6, 7 and 13 (kinds 8–10 are `done.rec`'s). Decoding is
//! total: any byte string gives a record or a `None`.

use super::{u16_at, u32_at, u64_at};

/// Kind byte of an [`Record::Enqueue`].
pub const KIND_ENQUEUE: u8 = 1;
/// Kind byte of a [`Record::Lease`].
pub const KIND_LEASE: u8 = 2;
/// Kind byte of an [`Record::Ack`].
pub const KIND_ACK: u8 = 3;
/// Kind byte of a [`Record::Nack`].
pub const KIND_NACK: u8 = 4;
/// Kind byte of a [`Record::Key`].
pub const KIND_KEY: u8 = 5;
/// Kind byte of a [`Record::Dead`].
pub const KIND_DEAD: u8 = 6;
/// Kind byte of a [`Record::Removed`].
pub const KIND_REMOVED: u8 = 7;
/// Kind byte of a [`Record::Dead`] of a named queue, a priority level
/// other than Normal or a group (Dead2).
pub const KIND_DEAD2: u8 = 13;
/// Fixed part of a Dead2 body: the dead fixed part, then queue name
/// length, priority, flags and group length.
pub const DEAD2_FIXED_LEN: usize = DEAD_FIXED_LEN + 2 + 1 + 1 + 2;
/// Kind byte of a [`Record::QueueDef`].
pub const KIND_QUEUE_DEF: u8 = 11;
/// Record kind: the key of a finished job of a named queue (log only):
/// queue id u16 (never 0) followed by the body of a Key record (kind 5).
pub const KIND_KEY2: u8 = 16;
/// Kind byte of a [`Record::NackErr`]: a Nack with the attempt's error.
pub const KIND_NACK_ERR: u8 = 18;
/// Longest error text a [`Record::NackErr`] carries (bytes): the dead
/// letters' limit, [`crate::MAX_ERROR_LEN`].
pub const MAX_NACK_ERROR: usize = crate::options::MAX_ERROR_LEN;
/// Longest queue name (bytes).
pub const MAX_QUEUE_NAME: usize = 64;
/// Kind byte of an [`Record::Enqueue`] with a priority other than
/// Normal, a group or a queue id (Enqueue2).
pub const KIND_ENQUEUE2: u8 = 12;

/// Kind byte of a [`Record::AckMany`].
pub const KIND_ACK_MANY: u8 = 14;
/// Kind byte of a [`Record::LeaseMany`].
pub const KIND_LEASE_MANY: u8 = 15;

/// Most entries one [`Record::AckMany`] or [`Record::LeaseMany`] holds (a
/// lease record of this many entries, 49 180 bytes framed, fits in the
/// smallest segment); larger batches are split into several records.
pub const MAX_MANY: usize = 4096;
/// Bytes of one [`Record::AckMany`] entry: a job id.
pub const ACK_MANY_ENTRY: usize = 8;
/// Bytes of one [`Record::LeaseMany`] entry: a job id and its attempts.
pub const LEASE_MANY_ENTRY: usize = 12;

/// Fixed part of an enqueue body: id, enqueue time, due time, attempts,
/// max attempts, key length.
pub const ENQUEUE_FIXED_LEN: usize = 8 + 8 + 8 + 4 + 2 + 2;
/// Fixed part of an Enqueue2 body: the enqueue fixed part, then queue id,
/// priority, flags and group length.
pub const ENQUEUE2_FIXED_LEN: usize = ENQUEUE_FIXED_LEN + 2 + 1 + 1 + 2;
/// Longest group key (bytes).
pub const MAX_GROUP_LEN: usize = 256;
/// Priority byte of the default level (`Normal`); levels are 0 (`Low`)
/// to 3 (`Urgent`).
pub const PRIORITY_NORMAL: u8 = 1;
/// Highest priority byte (`Urgent`).
pub const PRIORITY_MAX: u8 = 3;

/// Fixed part of a dead-letter body: id, enqueue time, death time,
/// attempts, key length, error length.
pub const DEAD_FIXED_LEN: usize = 8 + 8 + 8 + 4 + 2 + 2;

/// A job as it is written when enqueued, carried forward or redriven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueueRec<'a> {
    /// Job id.
    pub id: u64,
    /// When the job was first enqueued (ms since the epoch).
    pub enqueued_ms: u64,
    /// When the job becomes ready.
    pub due_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts allowed before dead-lettering.
    pub max_attempts: u16,
    /// Idempotency key, empty when none.
    pub key: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
    /// Queue id (0, the only queue, for now).
    pub queue: u16,
    /// Priority level, 0 (`Low`) ..= 3 (`Urgent`); 1 (`Normal`) by
    /// default.
    pub priority: u8,
    /// Message group key, empty when none (at most 256 bytes).
    pub group: &'a [u8],
}

impl<'a> EnqueueRec<'a> {
    /// Appends the body before the payload (kind 1 or 12, whichever it
    /// needs) to `head` and returns the payload (see
    /// [`Record::encode_into`]).
    #[inline]
    fn encode_into(&self, head: &mut Vec<u8>) -> &'a [u8] {
        // The fixed part in one copy (one capacity check, not six).
        let mut fixed = [0u8; ENQUEUE_FIXED_LEN];
        fixed[0..8].copy_from_slice(&self.id.to_le_bytes());
        fixed[8..16].copy_from_slice(&self.enqueued_ms.to_le_bytes());
        fixed[16..24].copy_from_slice(&self.due_ms.to_le_bytes());
        fixed[24..28].copy_from_slice(&self.attempts.to_le_bytes());
        fixed[28..30].copy_from_slice(&self.max_attempts.to_le_bytes());
        fixed[30..32].copy_from_slice(&len16(self.key).to_le_bytes());
        head.extend_from_slice(&fixed);
        if self.is_extended() {
            head.extend_from_slice(&self.queue.to_le_bytes());
            head.extend_from_slice(&[self.priority, 0]);
            head.extend_from_slice(&len16(self.group).to_le_bytes());
            head.extend_from_slice(self.key);
            head.extend_from_slice(self.group);
        } else {
            head.extend_from_slice(self.key);
        }
        self.payload
    }

    /// Whether the record needs kind 12 (a priority other than Normal, a
    /// group or a queue id); otherwise it is written as kind 1, which
    /// every version reads.
    pub fn is_extended(&self) -> bool {
        self.queue != 0 || self.priority != PRIORITY_NORMAL || !self.group.is_empty()
    }

    /// Length of the encoded body (kind 1 or 12, whichever it needs).
    pub fn body_len(&self) -> usize {
        let fixed = if self.is_extended() {
            ENQUEUE2_FIXED_LEN + self.group.len()
        } else {
            ENQUEUE_FIXED_LEN
        };
        fixed + self.key.len() + self.payload.len()
    }
}

/// A job moved to the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadRec<'a> {
    /// Job id.
    pub id: u64,
    /// When the job was first enqueued.
    pub enqueued_ms: u64,
    /// When it was dead-lettered.
    pub dead_ms: u64,
    /// Attempts made.
    pub attempts: u32,
    /// Idempotency key, empty when none.
    pub key: &'a [u8],
    /// The last error text.
    pub error: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
    /// The name of the job's queue, empty for the default queue.
    pub queue: &'a [u8],
    /// The job's priority level (1, Normal, by default).
    pub priority: u8,
    /// The job's message group, empty when none.
    pub group: &'a [u8],
}

impl<'a> DeadRec<'a> {
    /// Appends the body before the payload (kind 6 or 13, whichever it
    /// needs) to `head` and returns the payload (see
    /// [`Record::encode_into`]).
    fn encode_into(&self, head: &mut Vec<u8>) -> &'a [u8] {
        head.extend_from_slice(&self.id.to_le_bytes());
        head.extend_from_slice(&self.enqueued_ms.to_le_bytes());
        head.extend_from_slice(&self.dead_ms.to_le_bytes());
        head.extend_from_slice(&self.attempts.to_le_bytes());
        head.extend_from_slice(&len16(self.key).to_le_bytes());
        head.extend_from_slice(&len16(self.error).to_le_bytes());
        if self.is_extended() {
            head.extend_from_slice(&len16(self.queue).to_le_bytes());
            head.extend_from_slice(&[self.priority, 0]);
            head.extend_from_slice(&len16(self.group).to_le_bytes());
        }
        head.extend_from_slice(self.key);
        head.extend_from_slice(self.error);
        if self.is_extended() {
            head.extend_from_slice(self.queue);
            head.extend_from_slice(self.group);
        }
        self.payload
    }

    /// Whether the record needs kind 13 (a named queue, a level other
    /// than Normal or a group); otherwise it is kind 6, as before.
    pub fn is_extended(&self) -> bool {
        !self.queue.is_empty() || self.priority != PRIORITY_NORMAL || !self.group.is_empty()
    }
}

/// The entries of a batch record (kind 14, AckMany: job ids; kind 15,
/// LeaseMany: job ids with attempts), borrowed as they are on disk:
/// between 1 and 4096 entries of a fixed width (the count is encoded
/// before them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entries<'a> {
    raw: &'a [u8],
    width: usize,
}

impl<'a> Entries<'a> {
    /// Entries of `width` bytes each in `raw`; `None` unless `raw` holds
    /// a whole number of them, at least one and at most 4096.
    pub fn new(raw: &'a [u8], width: usize) -> Option<Entries<'a>> {
        let n = raw.len().checked_div(width)?;
        let whole = width > 0 && raw.len().is_multiple_of(width);
        (whole && (1..=MAX_MANY).contains(&n)).then_some(Entries { raw, width })
    }

    /// The entry bytes, without the count.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.raw.len() / self.width
    }

    /// Never true: a batch record holds at least one entry.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The job ids of an AckMany body.
    pub fn ids(&self) -> impl Iterator<Item = u64> + 'a {
        self.raw
            .chunks_exact(ACK_MANY_ENTRY)
            .filter_map(|c| u64_at(c, 0))
    }

    /// The `(job id, attempts)` pairs of a LeaseMany body.
    pub fn leases(&self) -> impl Iterator<Item = (u64, u32)> + 'a {
        self.raw
            .chunks_exact(LEASE_MANY_ENTRY)
            .filter_map(|c| Some((u64_at(c, 0)?, u32_at(c, 8)?)))
    }
}

/// Appends the [`Record::AckMany`] entry of job `id` to `raw`.
pub fn push_ack_entry(raw: &mut Vec<u8>, id: u64) {
    raw.extend_from_slice(&id.to_le_bytes());
}

/// Appends the [`Record::LeaseMany`] entry of job `id` to `raw`.
pub fn push_lease_entry(raw: &mut Vec<u8>, id: u64, attempts: u32) {
    raw.extend_from_slice(&id.to_le_bytes());
    raw.extend_from_slice(&attempts.to_le_bytes());
}

/// A decoded record body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A job and its full state (new, carried forward or redriven).
    Enqueue(EnqueueRec<'a>),
    /// A job was leased; `attempts` counts this attempt.
    Lease {
        /// Job id.
        id: u64,
        /// Attempts including this one.
        attempts: u32,
    },
    /// A job finished.
    Ack {
        /// Job id.
        id: u64,
    },
    /// A job will be retried at `due_ms`.
    Nack {
        /// Job id.
        id: u64,
        /// When it becomes ready again.
        due_ms: u64,
    },
    /// A job will be retried at `due_ms`, and `error` is why its attempt
    /// failed (kind 18, log only; never empty, at most
    /// [`crate::MAX_ERROR_LEN`] bytes of UTF-8). Replayed as a Nack that also
    /// sets the job's last error.
    NackErr {
        /// Job id.
        id: u64,
        /// When it becomes ready again.
        due_ms: u64,
        /// The attempt's error text.
        error: &'a str,
    },
    /// An idempotency key of a finished job, remembered until `expires_ms`.
    Key {
        /// The queue whose key it is (0: the default queue, kind 5; a
        /// named queue: kind 16).
        queue: u16,
        /// The job the key maps to.
        id: u64,
        /// When the key is forgotten.
        expires_ms: u64,
        /// The key.
        key: &'a [u8],
    },
    /// A dead letter (dead-letter file only).
    Dead(DeadRec<'a>),
    /// Several jobs finished: each entry applies as an [`Record::Ack`].
    AckMany(Entries<'a>),
    /// Several jobs were leased: each entry applies as a
    /// [`Record::Lease`].
    LeaseMany(Entries<'a>),
    /// A dead letter was redriven or purged (dead-letter file only).
    Removed {
        /// Job id.
        id: u64,
    },
    /// A named queue's id (kind 11, log): `queue id u16, name len u16,
    /// name`.
    QueueDef {
        /// The queue id (1 and up; 0 is the default queue, never defined).
        queue: u16,
        /// The name: 1..=64 bytes of `[A-Za-z0-9_.-]`.
        name: &'a [u8],
    },
}

impl<'a> Record<'a> {
    /// The kind byte of this record.
    pub fn kind(&self) -> u8 {
        match self {
            Record::Enqueue(e) if e.is_extended() => KIND_ENQUEUE2,
            Record::Enqueue(_) => KIND_ENQUEUE,
            Record::Lease { .. } => KIND_LEASE,
            Record::Ack { .. } => KIND_ACK,
            Record::Nack { .. } => KIND_NACK,
            Record::NackErr { .. } => KIND_NACK_ERR,
            Record::Key { queue: 0, .. } => KIND_KEY,
            Record::Key { .. } => KIND_KEY2,
            Record::Dead(d) if d.is_extended() => KIND_DEAD2,
            Record::Dead(_) => KIND_DEAD,
            Record::Removed { .. } => KIND_REMOVED,
            Record::AckMany(_) => KIND_ACK_MANY,
            Record::LeaseMany(_) => KIND_LEASE_MANY,
            Record::QueueDef { .. } => KIND_QUEUE_DEF,
        }
    }

    /// Appends the body's head to `head` and returns the slice that
    /// follows it (the payload), so payloads are never copied twice.
    pub fn encode_into(&self, head: &mut Vec<u8>) -> &'a [u8] {
        match *self {
            Record::Enqueue(e) => e.encode_into(head),
            Record::Lease { id, attempts } => {
                let mut body = [0u8; 12];
                body[0..8].copy_from_slice(&id.to_le_bytes());
                body[8..12].copy_from_slice(&attempts.to_le_bytes());
                head.extend_from_slice(&body);
                &[]
            }
            Record::Ack { id } | Record::Removed { id } => {
                head.extend_from_slice(&id.to_le_bytes());
                &[]
            }
            Record::Nack { id, due_ms } => {
                head.extend_from_slice(&id.to_le_bytes());
                head.extend_from_slice(&due_ms.to_le_bytes());
                &[]
            }
            Record::NackErr { id, due_ms, error } => {
                head.extend_from_slice(&id.to_le_bytes());
                head.extend_from_slice(&due_ms.to_le_bytes());
                error.as_bytes()
            }
            Record::Key {
                queue,
                id,
                expires_ms,
                key,
            } => {
                if queue != 0 {
                    head.extend_from_slice(&queue.to_le_bytes());
                }
                head.extend_from_slice(&id.to_le_bytes());
                head.extend_from_slice(&expires_ms.to_le_bytes());
                key
            }
            Record::Dead(d) => d.encode_into(head),
            Record::AckMany(e) | Record::LeaseMany(e) => {
                head.extend_from_slice(&count32(e.len()).to_le_bytes());
                e.raw
            }
            Record::QueueDef { queue, name } => {
                head.extend_from_slice(&queue.to_le_bytes());
                head.extend_from_slice(&len16(name).to_le_bytes());
                name
            }
        }
    }

    /// Decodes a body of the given kind; `None` if it is malformed.
    pub fn decode(kind: u8, body: &'a [u8]) -> Option<Record<'a>> {
        match kind {
            KIND_ENQUEUE => {
                let key_len = usize::from(u16_at(body, 30)?);
                let key_end = ENQUEUE_FIXED_LEN.checked_add(key_len)?;
                Some(Record::Enqueue(EnqueueRec {
                    id: u64_at(body, 0)?,
                    enqueued_ms: u64_at(body, 8)?,
                    due_ms: u64_at(body, 16)?,
                    attempts: u32_at(body, 24)?,
                    max_attempts: u16_at(body, 28)?,
                    key: body.get(ENQUEUE_FIXED_LEN..key_end)?,
                    payload: body.get(key_end..)?,
                    queue: 0,
                    priority: PRIORITY_NORMAL,
                    group: &[],
                }))
            }
            KIND_ENQUEUE2 => decode_enqueue2(body).map(Record::Enqueue),
            KIND_LEASE if body.len() == 12 => Some(Record::Lease {
                id: u64_at(body, 0)?,
                attempts: u32_at(body, 8)?,
            }),
            KIND_ACK if body.len() == 8 => Some(Record::Ack {
                id: u64_at(body, 0)?,
            }),
            KIND_NACK if body.len() == 16 => Some(Record::Nack {
                id: u64_at(body, 0)?,
                due_ms: u64_at(body, 8)?,
            }),
            KIND_KEY if body.len() >= 16 => Some(Record::Key {
                queue: 0,
                id: u64_at(body, 0)?,
                expires_ms: u64_at(body, 8)?,
                key: body.get(16..)?,
            }),
            KIND_KEY2 if body.len() >= 18 && u16_at(body, 0)? != 0 => Some(Record::Key {
                queue: u16_at(body, 0)?,
                id: u64_at(body, 2)?,
                expires_ms: u64_at(body, 10)?,
                key: body.get(18..)?,
            }),
            KIND_DEAD => {
                let key_len = usize::from(u16_at(body, 28)?);
                let err_len = usize::from(u16_at(body, 30)?);
                let key_end = DEAD_FIXED_LEN.checked_add(key_len)?;
                let err_end = key_end.checked_add(err_len)?;
                Some(Record::Dead(DeadRec {
                    id: u64_at(body, 0)?,
                    enqueued_ms: u64_at(body, 8)?,
                    dead_ms: u64_at(body, 16)?,
                    attempts: u32_at(body, 24)?,
                    key: body.get(DEAD_FIXED_LEN..key_end)?,
                    error: body.get(key_end..err_end)?,
                    payload: body.get(err_end..)?,
                    queue: &[],
                    priority: PRIORITY_NORMAL,
                    group: &[],
                }))
            }
            KIND_DEAD2 => decode_dead2(body).map(Record::Dead),
            KIND_REMOVED if body.len() == 8 => Some(Record::Removed {
                id: u64_at(body, 0)?,
            }),
            KIND_ACK_MANY => many(body, ACK_MANY_ENTRY).map(Record::AckMany),
            KIND_LEASE_MANY => many(body, LEASE_MANY_ENTRY).map(Record::LeaseMany),
            KIND_QUEUE_DEF => decode_queue_def(body),
            KIND_NACK_ERR => decode_nack_err(body),
            _ => None,
        }
    }

    /// Why a body of `kind` does not decode, for error messages (`None`
    /// if it does).
    pub fn malformed(kind: u8, body: &[u8]) -> Option<String> {
        if Record::decode(kind, body).is_some() {
            return None;
        }
        let width = match kind {
            KIND_ACK_MANY => ACK_MANY_ENTRY,
            KIND_LEASE_MANY => LEASE_MANY_ENTRY,
            1..=7 | KIND_QUEUE_DEF | KIND_ENQUEUE2 | KIND_DEAD2 | KIND_KEY2 | KIND_NACK_ERR => {
                return Some(format!("record of kind {kind} does not decode"))
            }
            _ => return Some(format!("record of unknown kind {kind}")),
        };
        Some(match u32_at(body, 0) {
            None => format!("batch record of kind {kind} is {} bytes, too short for its count", body.len()),
            Some(n) => format!(
                "batch record of kind {kind} claims {n} entries of {width} bytes (1..={MAX_MANY} allowed) in a body of {} bytes",
                body.len()
            ),
        })
    }
}

/// An Enqueue2 body: the enqueue fixed part, queue id, priority, flags
/// (none known: must be 0), group length, key, group, payload. A record
/// that would be written as kind 1 (nothing extended) is not an Enqueue2.
fn decode_enqueue2(body: &[u8]) -> Option<EnqueueRec<'_>> {
    let key_len = usize::from(u16_at(body, 30)?);
    let priority = *body.get(34)?;
    let flags = *body.get(35)?;
    let group_len = usize::from(u16_at(body, 36)?);
    if priority > PRIORITY_MAX || flags != 0 || group_len > MAX_GROUP_LEN {
        return None;
    }
    let key_end = ENQUEUE2_FIXED_LEN.checked_add(key_len)?;
    let group_end = key_end.checked_add(group_len)?;
    let e = EnqueueRec {
        id: u64_at(body, 0)?,
        enqueued_ms: u64_at(body, 8)?,
        due_ms: u64_at(body, 16)?,
        attempts: u32_at(body, 24)?,
        max_attempts: u16_at(body, 28)?,
        key: body.get(ENQUEUE2_FIXED_LEN..key_end)?,
        payload: body.get(group_end..)?,
        queue: u16_at(body, 32)?,
        priority,
        group: body.get(key_end..group_end)?,
    };
    e.is_extended().then_some(e)
}

/// The entries of a batch body: a count, then exactly that many entries.
fn decode_dead2(body: &[u8]) -> Option<DeadRec<'_>> {
    let key_len = usize::from(u16_at(body, 28)?);
    let err_len = usize::from(u16_at(body, 30)?);
    let name_len = usize::from(u16_at(body, 32)?);
    let priority = *body.get(34)?;
    let flags = *body.get(35)?;
    let group_len = usize::from(u16_at(body, 36)?);
    if priority > PRIORITY_MAX || flags != 0 || group_len > MAX_GROUP_LEN {
        return None;
    }
    let key_end = DEAD2_FIXED_LEN.checked_add(key_len)?;
    let err_end = key_end.checked_add(err_len)?;
    let name_end = err_end.checked_add(name_len)?;
    let group_end = name_end.checked_add(group_len)?;
    let d = DeadRec {
        id: u64_at(body, 0)?,
        enqueued_ms: u64_at(body, 8)?,
        dead_ms: u64_at(body, 16)?,
        attempts: u32_at(body, 24)?,
        key: body.get(DEAD2_FIXED_LEN..key_end)?,
        error: body.get(key_end..err_end)?,
        queue: body.get(err_end..name_end)?,
        group: body.get(name_end..group_end)?,
        payload: body.get(group_end..)?,
        priority,
    };
    let name_ok = d.queue.is_empty() || valid_queue_name(d.queue);
    (name_ok && d.is_extended()).then_some(d)
}

/// A NackErr body: job id, due time, then the error text (the rest of
/// the frame): 1 to [`MAX_NACK_ERROR`] bytes of UTF-8 (an empty error is
/// written as a plain Nack, kind 4).
fn decode_nack_err(body: &[u8]) -> Option<Record<'_>> {
    let text = body.get(16..)?;
    if text.is_empty() || text.len() > MAX_NACK_ERROR {
        return None;
    }
    Some(Record::NackErr {
        id: u64_at(body, 0)?,
        due_ms: u64_at(body, 8)?,
        error: std::str::from_utf8(text).ok()?,
    })
}

fn decode_queue_def(body: &[u8]) -> Option<Record<'_>> {
    let queue = u16_at(body, 0)?;
    let len = usize::from(u16_at(body, 2)?);
    let name = body.get(4..)?;
    let valid = queue != 0 && name.len() == len && valid_queue_name(name);
    valid.then_some(Record::QueueDef { queue, name })
}

/// Whether `name` is a valid queue name: 1..=64 bytes of `[A-Za-z0-9_.-]`.
pub fn valid_queue_name(name: &[u8]) -> bool {
    (1..=MAX_QUEUE_NAME).contains(&name.len())
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn many(body: &[u8], width: usize) -> Option<Entries<'_>> {
    let count = usize::try_from(u32_at(body, 0)?).ok()?;
    let raw = body.get(4..)?;
    if count.checked_mul(width)? != raw.len() {
        return None;
    }
    Entries::new(raw, width)
}

fn count32(n: usize) -> u32 {
    u32::try_from(n).expect("batch records hold at most MAX_MANY entries")
}

fn len16(bytes: &[u8]) -> u16 {
    u16::try_from(bytes.len()).expect("keys and error texts are limited below 64 KiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(rec: Record<'_>) {
        let mut head = Vec::new();
        let tail = rec.encode_into(&mut head);
        let mut body = head.clone();
        body.extend_from_slice(tail);
        assert_eq!(Record::decode(rec.kind(), &body), Some(rec));
        if let Record::Enqueue(e) = rec {
            assert_eq!(e.body_len(), body.len());
        }
        // Every strict prefix of a fixed-size body is rejected.
        if !matches!(
            rec,
            Record::Enqueue(_) | Record::Dead(_) | Record::Key { .. } | Record::NackErr { .. }
        ) {
            for cut in 0..body.len() {
                assert_eq!(Record::decode(rec.kind(), &body[..cut]), None);
            }
        }
    }

    #[test]
    fn all_kinds_round_trip() {
        round_trip(Record::Enqueue(EnqueueRec {
            id: 1,
            enqueued_ms: 2,
            due_ms: 3,
            attempts: 4,
            max_attempts: 5,
            key: b"key",
            payload: b"payload",
            queue: 0,
            priority: PRIORITY_NORMAL,
            group: b"",
        }));
        for (priority, group) in [
            (0u8, &b""[..]),
            (3, b"customer-42"),
            (PRIORITY_NORMAL, b"g"),
        ] {
            let e = EnqueueRec {
                id: 7,
                enqueued_ms: 2,
                due_ms: 3,
                attempts: 0,
                max_attempts: 5,
                key: b"k",
                payload: b"payload",
                queue: 0,
                priority,
                group,
            };
            assert_eq!(Record::Enqueue(e).kind(), KIND_ENQUEUE2);
            round_trip(Record::Enqueue(e));
        }
        round_trip(Record::Lease { id: 9, attempts: 3 });
        round_trip(Record::Ack { id: 9 });
        round_trip(Record::Nack { id: 9, due_ms: 77 });
        round_trip(Record::NackErr {
            id: 9,
            due_ms: 77,
            error: "boom: é",
        });
        round_trip(Record::Key {
            queue: 0,
            id: 9,
            expires_ms: 100,
            key: b"k",
        });
        // A named queue's key: kind 16, the queue id before the kind 5 body.
        let named = Record::Key {
            queue: 7,
            id: 9,
            expires_ms: 100,
            key: b"k",
        };
        assert_eq!(named.kind(), KIND_KEY2);
        round_trip(named);
        let mut body = Vec::new();
        let tail = named.encode_into(&mut body);
        body.extend_from_slice(tail);
        assert_eq!(&body[..2], &7u16.to_le_bytes());
        body[..2].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(Record::decode(KIND_KEY2, &body), None, "queue 0 is kind 5");
        assert_eq!(Record::decode(KIND_KEY2, &body[..17]), None);
        let dead = DeadRec {
            id: 1,
            enqueued_ms: 2,
            dead_ms: 3,
            attempts: 4,
            key: b"",
            error: b"boom",
            payload: b"p",
            queue: b"",
            priority: PRIORITY_NORMAL,
            group: b"",
        };
        round_trip(Record::Dead(dead));
        for (queue, priority, group) in [
            (&b"emails"[..], PRIORITY_NORMAL, &b""[..]),
            (b"", 3, b""),
            (b"r.2", 0, b"customer-9"),
        ] {
            let d = DeadRec {
                key: b"k",
                queue,
                priority,
                group,
                ..dead
            };
            assert_eq!(Record::Dead(d).kind(), KIND_DEAD2);
            round_trip(Record::Dead(d));
            let mut head = Vec::new();
            let tail = Record::Dead(d).encode_into(&mut head);
            let body = [head.as_slice(), tail].concat();
            // Every strict cut of its fixed part is rejected.
            for cut in 0..DEAD2_FIXED_LEN {
                assert_eq!(Record::decode(KIND_DEAD2, &body[..cut]), None);
            }
        }
        // Nothing extended, a bad name, an unknown flag: not kind 13.
        let plain = {
            let mut body = vec![0u8; DEAD2_FIXED_LEN];
            body[34] = PRIORITY_NORMAL;
            body
        };
        assert_eq!(Record::decode(KIND_DEAD2, &plain), None);
        let mut bad_name = plain.clone();
        bad_name[32] = 1;
        bad_name.push(b'/');
        assert_eq!(Record::decode(KIND_DEAD2, &bad_name), None);
        let mut flagged = plain.clone();
        flagged[34] = 0;
        flagged[35] = 1;
        assert_eq!(Record::decode(KIND_DEAD2, &flagged), None);
        assert!(Record::malformed(KIND_DEAD2, &flagged)
            .unwrap()
            .contains("kind 13"));
        round_trip(Record::Removed { id: 5 });
        round_trip(Record::QueueDef {
            queue: 3,
            name: b"emails.v2-x_y",
        });
        // Queue 0 is never defined; names outside the alphabet or the
        // length limit, or a length that disagrees, do not decode.
        for bad in [
            [&0u16.to_le_bytes()[..], &1u16.to_le_bytes(), b"a"].concat(),
            [&1u16.to_le_bytes()[..], &1u16.to_le_bytes(), b"/"].concat(),
            [&1u16.to_le_bytes()[..], &0u16.to_le_bytes()].concat(),
            [&1u16.to_le_bytes()[..], &2u16.to_le_bytes(), b"a"].concat(),
            [&1u16.to_le_bytes()[..], &65u16.to_le_bytes(), &[b'a'; 65]].concat(),
        ] {
            assert_eq!(Record::decode(KIND_QUEUE_DEF, &bad), None, "{bad:?}");
            assert!(Record::malformed(KIND_QUEUE_DEF, &bad).is_some());
        }
        let mut acks = Vec::new();
        for id in [3u64, 1 << 40, 7] {
            push_ack_entry(&mut acks, id);
        }
        let e = Entries::new(&acks, ACK_MANY_ENTRY).unwrap();
        assert_eq!(e.ids().collect::<Vec<_>>(), vec![3, 1 << 40, 7]);
        round_trip(Record::AckMany(e));
        let mut leases = Vec::new();
        push_lease_entry(&mut leases, 9, 1);
        push_lease_entry(&mut leases, 10, u32::MAX);
        let e = Entries::new(&leases, LEASE_MANY_ENTRY).unwrap();
        assert_eq!(e.leases().collect::<Vec<_>>(), vec![(9, 1), (10, u32::MAX)]);
        round_trip(Record::LeaseMany(e));
    }

    fn many_body(count: u32, entries: usize, width: usize) -> Vec<u8> {
        let mut body = count.to_le_bytes().to_vec();
        body.resize(4 + entries * width, 0xab);
        body
    }

    #[test]
    fn batch_bodies_with_wrong_counts_or_lengths_are_none() {
        for (kind, w) in [
            (KIND_ACK_MANY, ACK_MANY_ENTRY),
            (KIND_LEASE_MANY, LEASE_MANY_ENTRY),
        ] {
            assert!(Record::decode(kind, &many_body(2, 2, w)).is_some());
            assert!(Record::decode(kind, &many_body(MAX_MANY as u32, MAX_MANY, w)).is_some());
            // No entries, a count that disagrees with the body, a count
            // above the maximum, a ragged entry, a huge count.
            for bad in [
                many_body(0, 0, w),
                many_body(3, 2, w),
                many_body(1, 2, w),
                many_body(MAX_MANY as u32 + 1, MAX_MANY + 1, w),
                many_body(u32::MAX, 2, w),
                [many_body(1, 1, w), vec![0]].concat(),
                vec![1, 0],
                Vec::new(),
            ] {
                assert_eq!(Record::decode(kind, &bad), None, "kind {kind} body {bad:?}");
                let why = Record::malformed(kind, &bad).expect("a reason");
                assert!(why.contains(&format!("kind {kind}")), "{why}");
            }
            assert_eq!(Record::malformed(kind, &many_body(1, 1, w)), None);
        }
        assert!(Record::malformed(99, &[])
            .unwrap()
            .contains("unknown kind 99"));
        assert_eq!(Entries::new(&[0; 8], LEASE_MANY_ENTRY), None);
        assert_eq!(Entries::new(&[], ACK_MANY_ENTRY), None);
    }

    #[test]
    fn unknown_kind_and_short_bodies_are_none() {
        assert_eq!(Record::decode(0, &[0; 64]), None);
        assert_eq!(Record::decode(99, &[0; 64]), None);
        assert_eq!(Record::decode(KIND_ENQUEUE, &[0; 10]), None);
        let mut body = vec![0u8; ENQUEUE_FIXED_LEN];
        body[30] = 200; // key length beyond the body
        assert_eq!(Record::decode(KIND_ENQUEUE, &body), None);
    }

    #[test]
    fn nack_err_bodies_empty_long_or_not_utf8_are_none() {
        let body = |text: &[u8]| [&9u64.to_le_bytes()[..], &77u64.to_le_bytes(), text].concat();
        let longest = vec![b'e'; MAX_NACK_ERROR];
        assert!(Record::decode(KIND_NACK_ERR, &body(&longest)).is_some());
        for bad in [
            body(b""),
            body(&[b'e'; MAX_NACK_ERROR + 1]),
            body(&[0xff, 0xfe]),
            body(b"x")[..16].to_vec(),
            body(b"x")[..9].to_vec(),
        ] {
            assert_eq!(Record::decode(KIND_NACK_ERR, &bad), None);
            let why = Record::malformed(KIND_NACK_ERR, &bad).expect("a reason");
            assert!(why.contains("kind 18"), "{why}");
        }
    }

    fn enqueue2_body(priority: u8, flags: u8, group_len: u16) -> Vec<u8> {
        let mut body = vec![0u8; ENQUEUE2_FIXED_LEN];
        body[34] = priority;
        body[35] = flags;
        body[36..38].copy_from_slice(&group_len.to_le_bytes());
        body.resize(ENQUEUE2_FIXED_LEN + usize::from(group_len), b'g');
        body
    }

    #[test]
    fn enqueue2_bodies_out_of_range_are_none() {
        assert!(Record::decode(KIND_ENQUEUE2, &enqueue2_body(3, 0, 4)).is_some());
        assert!(Record::decode(KIND_ENQUEUE2, &enqueue2_body(1, 0, 256)).is_some());
        for bad in [
            enqueue2_body(4, 0, 0),   // unknown priority
            enqueue2_body(2, 1, 0),   // unknown flag
            enqueue2_body(1, 0, 257), // group over the limit
            enqueue2_body(1, 0, 0),   // nothing extended: must be kind 1
            enqueue2_body(2, 0, 0)[..37].to_vec(),
        ] {
            assert_eq!(Record::decode(KIND_ENQUEUE2, &bad), None, "{bad:?}");
            let why = Record::malformed(KIND_ENQUEUE2, &bad).expect("a reason");
            assert!(why.contains("kind 12"), "{why}");
        }
        let mut long = enqueue2_body(0, 0, 3);
        long[36] = 9; // group length beyond the body
        assert_eq!(Record::decode(KIND_ENQUEUE2, &long), None);
    }
}
