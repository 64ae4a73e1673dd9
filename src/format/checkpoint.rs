//! The checkpoint of the in-memory index, file `CHECKPOINT` (see
//! `docs/format.md`, "The checkpoint").
//!
//! Pure code: [`Checkpoint::encode`] and [`Checkpoint::decode`]. The file is
//! a fixed 128-byte head with its own CRC, then the segments it covers, the
//! job table's slots (16 bytes each in versions 1 and 2, runs in version
//! 3: see [`SlotRun`]), the jobs kept aside, the waiting jobs' due times
//! and the idempotency keys, then a CRC-32 of those (everything after the
//! head). The head has its own CRC so that the clean flag can be cleared
//! in place ([`head_without_clean`]) with one small write.
//! Whether the log on disk still matches it is decided by the loader
//! (`src/checkpoint.rs`), never here.

use super::{u16_at, u32_at, u64_at};

mod errors;
mod queues;
mod runs;
mod slots;
pub use queues::CkQueue;
pub use runs::{SlotRun, Slots};
pub use slots::{fresh_slot, SlotPiece, SlotSource};

/// The first eight bytes.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"walqckp\0";
/// The newest version read: version 4 with a section of the live jobs'
/// last errors (its length in bytes at offset 12 of the head). Written
/// whenever a live job has a last error ([`Checkpoint::encode_from`]).
pub const CHECKPOINT_VERSION: u16 = 5;
/// Version 3 with a section naming every named queue the store knows and
/// each live job's queue. Written whenever the store knows a named queue,
/// drained ones included, and no live job has a last error.
pub const CHECKPOINT_VERSION_4: u16 = 4;
/// Version 2 with the job table's slots stored as runs ([`SlotRun`]):
/// written when the store knows no named queue.
pub const CHECKPOINT_VERSION_3: u16 = 3;
/// Slots of 16 bytes carrying priorities, and the groups section.
pub const CHECKPOINT_VERSION_2: u16 = 2;
/// Slots of 16 bytes, every priority Normal, no groups section.
pub const CHECKPOINT_VERSION_1: u16 = 1;
/// Priority byte of level Normal (as in log records).
const NORMAL: u8 = crate::format::record::PRIORITY_NORMAL;
/// Flag: written by a clean close; nothing was appended after it then.
pub const FLAG_CLEAN: u16 = 1;
/// Length of the fixed head.
pub const HEAD_LEN: usize = 128;
const SEG_LEN: usize = 16;
const SLOT_LEN: usize = 16;
const ASIDE_LEN: usize = 24;
const WAIT_LEN: usize = 16;
const KEY_LEN: usize = 48;
const GROUP_LEN: usize = 24;

/// One covered segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CkSegment {
    /// The LSN in its header.
    pub base_lsn: u64,
    /// Its size in bytes.
    pub size: u32,
    /// Where its records end (the next append's offset, for the last).
    pub end: u32,
}

/// A job-table slot as stored: `(segment, offset, length, attempts,
/// state, priority)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CkSlot {
    /// Segment of the job's record.
    pub seg: u32,
    /// Offset of the record.
    pub off: u32,
    /// Frame length of the record.
    pub len: u32,
    /// Attempts made.
    pub attempts: u16,
    /// 0 empty, 1 fresh, 2 waiting, 3 in flight.
    pub state: u8,
    /// The job's priority byte as in log records (0 Low ..= 3 Urgent;
    /// stored with Low and Normal swapped, so that a version 1 slot,
    /// whose byte is 0, reads as Normal).
    pub priority: u8,
}

impl Default for CkSlot {
    fn default() -> CkSlot {
        CkSlot {
            seg: 0,
            off: 0,
            len: 0,
            attempts: 0,
            state: 0,
            priority: NORMAL,
        }
    }
}

/// The stored priority byte of a slot and back: Low (0) and Normal (1)
/// swap places, so Normal is stored as 0.
fn swap_low_normal(b: u8) -> u8 {
    match b {
        0 => 1,
        1 => 0,
        other => other,
    }
}

/// An idempotency key entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CkKey {
    /// The key's 128-bit hash.
    pub hash: u128,
    /// The key's check hash.
    pub check: u64,
    /// The job it belongs to.
    pub id: u64,
    /// When it may be forgotten.
    pub expires_ms: u64,
    /// Segment of the record holding the key bytes.
    pub seg: u32,
    /// Offset of that record.
    pub off: u32,
}

/// The whole checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// [`FLAG_CLEAN`] or 0.
    pub flags: u16,
    /// Counts checkpoints written in this directory.
    pub generation: u64,
    /// The first LSN not covered.
    pub next_lsn: u64,
    /// The next job id.
    pub next_id: u64,
    /// `key_hash` of a fixed probe: a build whose key hash differs
    /// cannot use the stored hashes.
    pub hash_probe: u64,
    /// Id of the first covered segment; the rest follow in order.
    pub first_seg: u32,
    /// Where the tail digest starts in the last covered segment: up to
    /// 4 KiB before its end (the segment header's end at the least).
    pub digest_from: u32,
    /// CRC-32 (seeded with the segment id) of the bytes from `digest_from`
    /// to the end of the last covered segment's records.
    pub digest: u32,
    /// Covered segments, oldest first; the last was the active one.
    pub segments: Vec<CkSegment>,
    /// Id of the first slot.
    pub slot_base: u64,
    /// The job table's slots, in id order from `slot_base`.
    pub slots: Vec<CkSlot>,
    /// Jobs kept aside (id, slot).
    pub aside: Vec<(u64, CkSlot)>,
    /// Waiting jobs' due times (id, due ms).
    pub waiting: Vec<(u64, u64)>,
    /// Idempotency keys.
    pub keys: Vec<CkKey>,
    /// Live jobs of a message group: (id, group hash). Version 2 and up.
    pub groups: Vec<(u64, u128)>,
    /// The named queues (every one with a live job, and the others the
    /// store knows), by id. Version 4 only.
    pub queues: Vec<CkQueue>,
    /// Each live job of a named queue with its queue id, by job id.
    /// Version 4 and up.
    pub queue_jobs: Vec<(u64, u16)>,
    /// The last error of each live job that has one, by job id. Version 5
    /// only.
    pub errors: Vec<(u64, String)>,
}

/// Why bytes are not a checkpoint this build can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointError {
    /// Too short, wrong magic, lengths that do not add up, bad checksum.
    Damaged(String),
    /// A version this build does not read.
    Version(u16),
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointError::Damaged(why) => write!(f, "damaged: {why}"),
            CheckpointError::Version(v) => write!(f, "version {v} is not one this build reads"),
        }
    }
}

fn put_slot(out: &mut Vec<u8>, s: &CkSlot) {
    out.extend_from_slice(&s.seg.to_le_bytes());
    out.extend_from_slice(&s.off.to_le_bytes());
    out.extend_from_slice(&s.len.to_le_bytes());
    out.extend_from_slice(&s.attempts.to_le_bytes());
    out.extend_from_slice(&[s.state, swap_low_normal(s.priority)]);
}

/// Decodes one stored slot (16 bytes; see [`Checkpoint::decode_lazy`]).
pub fn slot_at(b: &[u8]) -> CkSlot {
    let mut w = [0u8; SLOT_LEN];
    w.copy_from_slice(&b[..SLOT_LEN]);
    CkSlot {
        seg: u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
        off: u32::from_le_bytes([w[4], w[5], w[6], w[7]]),
        len: u32::from_le_bytes([w[8], w[9], w[10], w[11]]),
        attempts: u16::from_le_bytes([w[12], w[13]]),
        state: w[14],
        priority: swap_low_normal(w[15]),
    }
}

fn u128_at(b: &[u8]) -> u128 {
    let mut h = [0u8; 16];
    h.copy_from_slice(&b[..16]);
    u128::from_le_bytes(h)
}

/// CRC-32 of a head's bytes 0..60 and 64..128 (all but the CRC itself).
fn head_crc(head: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&head[..60]);
    h.update(&head[64..HEAD_LEN]);
    h.finalize()
}

/// Writes the head's CRC into it (bytes 60..64).
fn seal_head(head: &mut [u8]) {
    let crc = head_crc(head);
    head[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// The head of checkpoint file `file` with the clean flag cleared (and
/// its CRC recomputed): what open writes over the first 128 bytes before
/// the log grows past a clean checkpoint. `None` if `file` is shorter.
pub fn head_without_clean(file: &[u8]) -> Option<[u8; HEAD_LEN]> {
    let mut head = [0u8; HEAD_LEN];
    head.copy_from_slice(file.get(..HEAD_LEN)?);
    let flags = u16_at(&head, 10)? & !FLAG_CLEAN;
    head[10..12].copy_from_slice(&flags.to_le_bytes());
    seal_head(&mut head);
    Some(head)
}

impl Checkpoint {
    /// Length of the encoded file in versions 1 and 2 (version 3 stores
    /// the slots in fewer bytes).
    #[cfg(any(test, feature = "testing"))]
    pub fn encoded_len(&self) -> usize {
        self.encoded_len_with(SLOT_LEN * self.slots.len())
    }

    /// [`Checkpoint::encoded_len`] with a slot section of `slot_bytes`.
    fn encoded_len_with(&self, slot_bytes: usize) -> usize {
        HEAD_LEN
            + SEG_LEN * self.segments.len()
            + slot_bytes
            + ASIDE_LEN * self.aside.len()
            + WAIT_LEN * self.waiting.len()
            + KEY_LEN * self.keys.len()
            + GROUP_LEN * self.groups.len()
            + 4
    }

    /// [`Checkpoint::encode_from`] with the checkpoint's own
    /// [`Checkpoint::slots`] (tests and tools).
    #[cfg(any(test, feature = "testing"))]
    pub fn encode(&self) -> Vec<u8> {
        self.encode_from(&self.slots)
            .expect("an error section within the limit")
    }

    /// Encodes the file, its job-table slots read from `slots` (in place
    /// of [`Checkpoint::slots`]: a queue's own checkpoint reads its
    /// captured job table, with no copy of it), as [`CHECKPOINT_VERSION`]
    /// when a live job has a last error, else as version 4 when the store
    /// knows a named queue (even one without live jobs: its id and its
    /// keys must not pass to a queue created after the open), else as
    /// version 3 (which older builds read). `None` when the error section
    /// would pass [`MAX_ERROR_SECTION`] bytes (no checkpoint is written
    /// then: the next open scans from an older one, or the whole log).
    pub fn encode_from(&self, slots: &dyn SlotSource) -> Option<Vec<u8>> {
        if !self.errors.is_empty() {
            let fits = errors::len(&self.errors) <= MAX_ERROR_SECTION;
            fits.then(|| self.encode_as_from(CHECKPOINT_VERSION, slots))
        } else if self.queues.is_empty() && self.queue_jobs.is_empty() {
            Some(self.encode_as_from(CHECKPOINT_VERSION_3, slots))
        } else {
            Some(self.encode_as_from(CHECKPOINT_VERSION_4, slots))
        }
    }

    /// Encodes the file as version `version` (1 to 5; the older ones
    /// for tests and tools: version 1 stores every priority as Normal and
    /// no groups, so it suits only a checkpoint without either, versions
    /// 1 to 3 leave out the queue section, 1 to 4 the error section).
    #[cfg(any(test, feature = "testing"))]
    pub fn encode_as(&self, version: u16) -> Vec<u8> {
        self.encode_as_from(version, &self.slots)
    }

    fn encode_as_from(&self, version: u16, slots: &dyn SlotSource) -> Vec<u8> {
        let runs = (version >= CHECKPOINT_VERSION_3).then(|| runs::encode(slots));
        let groups = if version == CHECKPOINT_VERSION_1 {
            &[][..]
        } else {
            &self.groups[..]
        };
        // The slot section's real length: runs take a few bytes where the
        // slots they stand for would take 16 each (160 MB reserved for a
        // close of 10 million untouched jobs, before this).
        let slot_bytes = runs.as_ref().map_or(SLOT_LEN * slots.count(), Vec::len);
        let mut out = Vec::with_capacity(self.encoded_len_with(slot_bytes));
        out.extend_from_slice(&CHECKPOINT_MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        // Version 5: the error section's bytes (else reserved, 0).
        let error_bytes = if version >= CHECKPOINT_VERSION {
            errors::len(&self.errors)
        } else {
            0
        };
        out.extend_from_slice(&u32::try_from(error_bytes).unwrap_or(u32::MAX).to_le_bytes());
        for v in [
            self.generation,
            self.next_lsn,
            self.next_id,
            self.hash_probe,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.first_seg, self.digest_from, self.digest, 0] {
            // (The 0 at offset 60 is replaced by the head's CRC below.)
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.slot_base.to_le_bytes());
        for n in [
            self.segments.len(),
            slots.count(),
            self.aside.len(),
            self.waiting.len(),
            self.keys.len(),
            groups.len(),
            // Version 3: the slot runs' length in bytes (else reserved).
            runs.as_ref().map_or(0, Vec::len),
        ] {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        for s in &self.segments {
            out.extend_from_slice(&s.base_lsn.to_le_bytes());
            out.extend_from_slice(&s.size.to_le_bytes());
            out.extend_from_slice(&s.end.to_le_bytes());
        }
        match &runs {
            Some(runs) => out.extend_from_slice(runs),
            None => slots.for_each_piece(&mut |piece| match piece {
                SlotPiece::Laid(laid) => laid.iter().for_each(|s| put_slot(&mut out, s)),
                SlotPiece::Fresh { n, seg, off, len } => {
                    (0..n).for_each(|i| put_slot(&mut out, &fresh_slot(seg, off, len, i)))
                }
            }),
        }
        self.encode_rest(&mut out, groups);
        if version >= CHECKPOINT_VERSION {
            errors::encode(&mut out, &self.errors);
        }
        if version >= CHECKPOINT_VERSION_4 {
            queues::encode(&mut out, &self.queues, &self.queue_jobs);
        }
        let crc = crc32fast::hash(&out[HEAD_LEN..]);
        out.extend_from_slice(&crc.to_le_bytes());
        seal_head(&mut out[..HEAD_LEN]);
        out
    }

    /// The sections after the slots.
    fn encode_rest(&self, out: &mut Vec<u8>, groups: &[(u64, u128)]) {
        for (id, s) in &self.aside {
            out.extend_from_slice(&id.to_le_bytes());
            put_slot(out, s);
        }
        for (id, due) in &self.waiting {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&due.to_le_bytes());
        }
        for k in &self.keys {
            out.extend_from_slice(&k.hash.to_le_bytes());
            for v in [k.check, k.id, k.expires_ms] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&k.seg.to_le_bytes());
            out.extend_from_slice(&k.off.to_le_bytes());
        }
        for (id, group) in groups {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&group.to_le_bytes());
        }
    }

    /// Decodes and verifies a checkpoint file (for tests and tools; open
    /// uses [`Checkpoint::decode_lazy`]).
    #[cfg(any(test, feature = "testing"))]
    pub fn decode(buf: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let (mut ck, slots) = Checkpoint::decode_lazy(buf)?;
        for run in slots.runs() {
            match run? {
                SlotRun::Empty(n) => {
                    let n = usize::try_from(n).map_err(|_| slots.overflow())?;
                    if n > slots.len() - ck.slots.len() {
                        return Err(slots.overflow());
                    }
                    ck.slots.resize(ck.slots.len() + n, CkSlot::default());
                }
                SlotRun::Fresh(fresh) => {
                    if fresh.n > (slots.len() - ck.slots.len()) as u64 {
                        return Err(slots.overflow());
                    }
                    ck.slots.extend(fresh.slots().map(|(seg, off, len)| CkSlot {
                        seg,
                        off,
                        len,
                        state: 1,
                        ..CkSlot::default()
                    }))
                }
                SlotRun::One(s) => ck.slots.push(s),
            }
            if ck.slots.len() > slots.len() {
                return Err(slots.overflow());
            }
        }
        if ck.slots.len() != slots.len() {
            return Err(slots.overflow());
        }
        Ok(ck)
    }

    /// [`Checkpoint::decode`] without the slots: their bytes are returned
    /// instead ([`Slots`]), so that a reader can build its table from them
    /// in one pass.
    pub fn decode_lazy(buf: &[u8]) -> Result<(Checkpoint, Slots<'_>), CheckpointError> {
        let (version, flags) = check_head(buf)?;
        let layout = Layout::read(buf, version, buf.len() as u128)?;
        let counts = &layout.counts;
        let mut ck = decode_head(buf, flags);
        let mut body = Sections {
            body: &buf[..buf.len() - 4],
            at: HEAD_LEN,
        };
        ck.segments = body
            .take(counts[0] * SEG_LEN)
            .chunks_exact(SEG_LEN)
            .map(|b| CkSegment {
                base_lsn: u64_at(b, 0).unwrap_or(0),
                size: u32_at(b, 8).unwrap_or(0),
                end: u32_at(b, 12).unwrap_or(0),
            })
            .collect();
        let slots = Slots {
            bytes: body.take(layout.slot_bytes),
            count: counts[1],
            runs: layout.runs,
        };
        ck.decode_rest(&mut body, counts);
        ck.errors = errors::decode(body.take(layout.error_bytes))?;
        if layout.queues {
            (ck.queues, ck.queue_jobs) = queues::decode(body.rest())?;
        }
        Ok((ck, slots))
    }

    /// The sections after the slots (all but the queue section), as
    /// `encode_rest` writes them; `counts` are the head's.
    fn decode_rest(&mut self, body: &mut Sections<'_>, counts: &[usize]) {
        self.aside = body
            .take(counts[2] * ASIDE_LEN)
            .chunks_exact(ASIDE_LEN)
            .map(|b| (u64_at(b, 0).unwrap_or(0), slot_at(&b[8..])))
            .collect();
        self.waiting = body
            .take(counts[3] * WAIT_LEN)
            .chunks_exact(WAIT_LEN)
            .map(|b| (u64_at(b, 0).unwrap_or(0), u64_at(b, 8).unwrap_or(0)))
            .collect();
        self.keys = body
            .take(counts[4] * KEY_LEN)
            .chunks_exact(KEY_LEN)
            .map(|b| CkKey {
                hash: u128_at(b),
                check: u64_at(b, 16).unwrap_or(0),
                id: u64_at(b, 24).unwrap_or(0),
                expires_ms: u64_at(b, 32).unwrap_or(0),
                seg: u32_at(b, 40).unwrap_or(0),
                off: u32_at(b, 44).unwrap_or(0),
            })
            .collect();
        self.groups = body
            .take(counts[5] * GROUP_LEN)
            .chunks_exact(GROUP_LEN)
            .map(|b| (u64_at(b, 0).unwrap_or(0), u128_at(&b[8..])))
            .collect();
    }
}

/// Most bytes of the error section (its length is a u32 of the head): a
/// store with more (about a million failing jobs, each with an error of
/// 4 KiB) writes no checkpoint.
pub const MAX_ERROR_SECTION: usize = u32::MAX as usize;

/// A [`CheckpointError::Damaged`] saying `why`.
fn damaged(why: &str) -> CheckpointError {
    CheckpointError::Damaged(why.to_string())
}

/// Checks a checkpoint file's magic, version, head and body checksums,
/// flags and reserved bytes; returns its version and flags.
fn check_head(buf: &[u8]) -> Result<(u16, u16), CheckpointError> {
    let version = check_head_alone(buf)?;
    if buf.len() < HEAD_LEN + 4 {
        return Err(damaged("not a checkpoint (short, or wrong magic)"));
    }
    let (body, tail) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(&body[HEAD_LEN..]) != u32_at(tail, 0).unwrap_or(0) {
        return Err(damaged("checksum mismatch"));
    }
    let flags = u16_at(buf, 10).unwrap_or(u16::MAX);
    let reserved = version < CHECKPOINT_VERSION && u32_at(buf, 12) != Some(0);
    if flags & !FLAG_CLEAN != 0 || reserved {
        return Err(damaged("unknown flags or nonzero reserved bytes"));
    }
    Ok((version, flags))
}

/// Checks the magic, version and head checksum of `head` (a checkpoint
/// file's first [`HEAD_LEN`] bytes, or all of a shorter file); returns
/// the version.
fn check_head_alone(head: &[u8]) -> Result<u16, CheckpointError> {
    if head.len() < HEAD_LEN || head[0..8] != CHECKPOINT_MAGIC {
        return Err(damaged("not a checkpoint (short, or wrong magic)"));
    }
    let version = u16_at(head, 8).unwrap_or(0);
    if !(CHECKPOINT_VERSION_1..=CHECKPOINT_VERSION).contains(&version) {
        return Err(CheckpointError::Version(version));
    }
    if head_crc(&head[..HEAD_LEN]) != u32_at(head, 60).unwrap_or(0) {
        return Err(damaged("head checksum mismatch"));
    }
    Ok(version)
}

/// Checks, from a checkpoint file's head alone, that the file's length
/// `file_len` is the one its counts give (version 4: within the bounds
/// of its queue section), so that a reader allocates a checkpoint's
/// bytes only when its head vouches for them: a damaged head, or a file
/// grown past its end (a sparse file of many GiB), is refused before its
/// body is read.
pub fn check_file_len(head: &[u8], file_len: u64) -> Result<(), CheckpointError> {
    let version = check_head_alone(head)?;
    Layout::read(head, version, u128::from(file_len)).map(|_| ())
}

/// Where a checkpoint's sections lie, from the counts in its head.
struct Layout {
    /// The head's seven counts: segments, slots, jobs aside, waiting jobs,
    /// keys, groups, and (version 3 and up) the slot runs' bytes.
    counts: Vec<usize>,
    /// Bytes of the slots section.
    slot_bytes: usize,
    /// Version 3 and up: the slots are stored as runs.
    runs: bool,
    /// Version 4 and up: the queue section fills the rest of the body.
    queues: bool,
    /// Version 5: bytes of the error section (before the queue section).
    error_bytes: usize,
}

impl Layout {
    /// Reads the counts of a checkpoint (`buf`, whose head was checked)
    /// of version `version`: the ones its version reserves must be 0, and
    /// the sections' lengths must add up to the file's, `file_len`, with
    /// one covered segment at least.
    fn read(buf: &[u8], version: u16, file_len: u128) -> Result<Layout, CheckpointError> {
        let count = |at: usize| u64_at(buf, at).and_then(|n| usize::try_from(n).ok());
        let counts: Option<Vec<usize>> = (0..7).map(|i| count(72 + 8 * i)).collect();
        let counts = counts.ok_or_else(|| damaged("counts out of range"))?;
        let v3 = version > CHECKPOINT_VERSION_2;
        let v4 = version >= CHECKPOINT_VERSION_4;
        let error_bytes = match version >= CHECKPOINT_VERSION {
            true => u32_at(buf, 12).unwrap_or(0) as usize,
            false => 0,
        };
        if (version == CHECKPOINT_VERSION_1 && counts[5] != 0) || (!v3 && counts[6] != 0) {
            return Err(damaged("unknown flags or nonzero reserved bytes"));
        }
        // Version 3: the slots take the runs' length, not 16 bytes each.
        let slot_bytes = if v3 {
            counts[6] as u128
        } else {
            counts[1] as u128 * SLOT_LEN as u128
        };
        let sizes = [SEG_LEN, ASIDE_LEN, WAIT_LEN, KEY_LEN, GROUP_LEN];
        let fixed = [counts[0], counts[2], counts[3], counts[4], counts[5]];
        let mut want = HEAD_LEN as u128 + 4 + slot_bytes + error_bytes as u128;
        for (n, size) in fixed.iter().zip(sizes) {
            want += *n as u128 * size as u128;
        }
        // Version 4: the queue section fills the rest (checked when it is
        // decoded), at most every queue with the longest name and one
        // entry for each live job (a slot's or one kept aside).
        let fits = if v4 {
            let jobs = counts[1] as u128 + counts[2] as u128;
            let most = queues::max_len(jobs);
            want <= file_len && file_len - want <= most
        } else {
            want == file_len
        };
        if !fits || counts[0] == 0 {
            return Err(damaged("lengths do not add up to the file's"));
        }
        Ok(Layout {
            counts,
            // It fits: it is part of the file's length.
            slot_bytes: slot_bytes as usize,
            runs: v3,
            queues: v4,
            error_bytes,
        })
    }
}

/// The fields of a checkpoint's head (`buf`, checked), with `flags`.
fn decode_head(buf: &[u8], flags: u16) -> Checkpoint {
    Checkpoint {
        flags,
        generation: u64_at(buf, 16).unwrap_or(0),
        next_lsn: u64_at(buf, 24).unwrap_or(0),
        next_id: u64_at(buf, 32).unwrap_or(0),
        hash_probe: u64_at(buf, 40).unwrap_or(0),
        first_seg: u32_at(buf, 48).unwrap_or(0),
        digest_from: u32_at(buf, 52).unwrap_or(0),
        digest: u32_at(buf, 56).unwrap_or(0),
        slot_base: u64_at(buf, 64).unwrap_or(0),
        ..Checkpoint::default()
    }
}

/// A checkpoint's body (everything before its CRC), taken section by
/// section from the head on.
struct Sections<'a> {
    body: &'a [u8],
    /// Where the next section starts.
    at: usize,
}

impl<'a> Sections<'a> {
    /// The next section, `len` bytes long (the layout was checked: the
    /// body holds them).
    fn take(&mut self, len: usize) -> &'a [u8] {
        let part = &self.body[self.at..self.at + len];
        self.at += len;
        part
    }

    /// The rest of the body.
    fn rest(&self) -> &'a [u8] {
        &self.body[self.at..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let slot = CkSlot {
            seg: 2,
            off: 64,
            len: 90,
            attempts: 1,
            state: 2,
            priority: NORMAL,
        };
        Checkpoint {
            flags: FLAG_CLEAN,
            generation: 3,
            next_lsn: 40,
            next_id: 17,
            hash_probe: 99,
            first_seg: 2,
            digest_from: 500,
            digest: 0xdead_beef,
            segments: vec![CkSegment {
                base_lsn: 1,
                size: 65536,
                end: 530,
            }],
            slot_base: 10,
            slots: vec![slot, CkSlot::default()],
            aside: vec![(3, slot)],
            waiting: vec![(10, 1234), (3, 5)],
            keys: vec![CkKey {
                hash: 1 << 100,
                check: 5,
                id: 10,
                expires_ms: 77,
                seg: 2,
                off: 64,
            }],
            groups: Vec::new(),
            queues: Vec::new(),
            queue_jobs: Vec::new(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn round_trips_and_detects_every_bit_flip_and_cut() {
        let ck = sample();
        for version in 1..=CHECKPOINT_VERSION {
            let bytes = ck.encode_as(version);
            assert_eq!(u16_at(&bytes, 8), Some(version));
            if version < 3 {
                assert_eq!(bytes.len(), ck.encoded_len());
            }
            assert_eq!(Checkpoint::decode(&bytes), Ok(ck.clone()));
            for bit in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                assert!(Checkpoint::decode(&b).is_err(), "v{version} bit {bit}");
            }
            for cut in 0..bytes.len() {
                assert!(Checkpoint::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
        assert_eq!(ck.encode(), ck.encode_as(3));
    }

    /// A table as the queue holds it: runs of fresh jobs back to back
    /// (of one length and of many), gaps, and jobs that are not fresh.
    fn table() -> Vec<CkSlot> {
        let fresh = |seg: u32, off: u32, len: u32| CkSlot {
            seg,
            off,
            len,
            state: 1,
            ..CkSlot::default()
        };
        let mut slots: Vec<CkSlot> = (0..500).map(|i| fresh(2, 64 + 90 * i, 90)).collect();
        slots.push(CkSlot::default());
        slots.push(CkSlot::default());
        let mut off = 64 + 90 * 500;
        for i in 0..300 {
            let s = fresh(2, off, 80 + i % 7);
            off += s.len;
            slots.push(s);
        }
        // Back to back but in the next segment: a new run.
        slots.extend((0..3).map(|i| fresh(3, 64 + 100 * i, 100)));
        // Not back to back; attempts; a level; in flight; waiting.
        slots.push(fresh(3, 5000, 100));
        slots.push(CkSlot {
            attempts: 2,
            ..fresh(3, 5100, 100)
        });
        slots.push(CkSlot {
            priority: 3,
            ..fresh(3, 5200, 100)
        });
        slots.push(CkSlot {
            state: 3,
            ..fresh(3, 5300, 100)
        });
        slots.push(CkSlot {
            state: 2,
            ..fresh(3, 5400, 100)
        });
        slots.push(fresh(3, 5500, 100));
        slots
    }

    #[test]
    fn version_3_stores_runs_in_a_few_bytes_and_round_trips() {
        let ck = Checkpoint {
            slots: table(),
            groups: vec![(10, 7)],
            ..sample()
        };
        let v2 = ck.encode_as(2);
        let v3 = ck.encode();
        assert_eq!(Checkpoint::decode(&v2), Ok(ck.clone()));
        assert_eq!(Checkpoint::decode(&v3), Ok(ck.clone()));
        let slot_bytes = u64_at(&v3, 120).expect("runs length") as usize;
        assert_eq!(v3.len(), v2.len() - 16 * ck.slots.len() + slot_bytes);
        // 300 lengths of one or two bytes, 6 whole slots, a few runs.
        assert!(slot_bytes < 300 * 2 + 6 * 17 + 64, "{slot_bytes} bytes");
        for at in HEAD_LEN + SEG_LEN..HEAD_LEN + SEG_LEN + slot_bytes {
            let mut b = v3.clone();
            b[at] ^= 0x04;
            assert!(Checkpoint::decode(&b).is_err(), "byte {at}");
        }
    }

    /// A close of 10 million untouched jobs encodes a few hundred bytes,
    /// and reserves no more: not 16 bytes for each slot a run stands for.
    #[test]
    fn an_encoded_run_reserves_its_own_length() {
        struct Run;
        impl SlotSource for Run {
            fn count(&self) -> usize {
                10_000_000
            }
            fn for_each_piece(&self, f: &mut dyn FnMut(slots::SlotPiece<'_>)) {
                f(slots::SlotPiece::Fresh {
                    n: 10_000_000,
                    seg: 1,
                    off: 64,
                    len: 50,
                })
            }
        }
        let b = sample().encode_from(&Run).expect("encoded");
        assert!(b.len() < 4096, "{} bytes", b.len());
        assert!(b.capacity() < 4096, "{} bytes reserved", b.capacity());
    }

    #[test]
    fn runs_that_do_not_add_up_are_damage() {
        let ck = Checkpoint {
            slots: table(),
            ..sample()
        };
        // The slot count one more, and one less, than the runs hold (the
        // CRCs made right again, as a forger would).
        for count in [ck.slots.len() + 1, ck.slots.len() - 1] {
            let mut b = ck.encode();
            b[80..88].copy_from_slice(&(count as u64).to_le_bytes());
            let n = b.len() - 4;
            let crc = crc32fast::hash(&b[HEAD_LEN..n]);
            b[n..].copy_from_slice(&crc.to_le_bytes());
            seal_head(&mut b[..HEAD_LEN]);
            let e = Checkpoint::decode(&b).expect_err("count");
            assert!(e.to_string().contains("do not add up"), "{e}");
        }
    }

    #[test]
    fn the_clean_flag_is_cleared_in_place() {
        let ck = sample();
        let mut bytes = ck.encode();
        let head = head_without_clean(&bytes).expect("head");
        bytes[..HEAD_LEN].copy_from_slice(&head);
        let cleared = Checkpoint::decode(&bytes).expect("still valid");
        assert_eq!(cleared.flags, 0);
        assert_eq!(Checkpoint { flags: 0, ..ck }, cleared);
    }

    #[test]
    fn a_future_version_is_named() {
        let mut b = sample().encode();
        b[8] = 6;
        assert_eq!(Checkpoint::decode(&b), Err(CheckpointError::Version(6)));
    }

    /// [`sample`] with jobs 10 and 3 on two named queues, and a third.
    fn with_queues() -> Checkpoint {
        Checkpoint {
            queues: vec![
                CkQueue {
                    id: 1,
                    def: Some((2, 7)),
                    name: "emails".into(),
                },
                CkQueue {
                    id: 300,
                    def: None,
                    name: "a.b-C_9".into(),
                },
                // Known, without a live job.
                CkQueue {
                    id: 301,
                    def: Some((2, 9)),
                    name: "idle".into(),
                },
            ],
            queue_jobs: vec![(3, 300), (10, 1)],
            ..sample()
        }
    }

    /// Re-seals a forged file's CRCs, so that only the section's own
    /// checks can refuse it.
    fn reseal(b: &mut [u8]) {
        let n = b.len() - 4;
        let crc = crc32fast::hash(&b[HEAD_LEN..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        seal_head(&mut b[..HEAD_LEN]);
    }

    #[test]
    fn the_head_alone_bounds_the_files_length() {
        // Version 3: exactly the length the counts give.
        let v3 = sample().encode_as(CHECKPOINT_VERSION_3);
        let len = v3.len() as u64;
        assert_eq!(check_file_len(&v3[..HEAD_LEN], len), Ok(()));
        for wrong in [len - 1, len + 1, 64 << 30] {
            assert!(check_file_len(&v3[..HEAD_LEN], wrong).is_err(), "{wrong}");
        }
        // Version 4: the queue section may be as long as every queue with
        // the longest name and an entry for each slot and job kept aside.
        let ck = with_queues();
        let v4 = ck.encode();
        let len = v4.len() as u64;
        let mut encoded = Vec::new();
        queues::encode(&mut encoded, &ck.queues, &ck.queue_jobs);
        let section = encoded.len() as u64;
        let jobs = ck.slots.len() as u128 + ck.aside.len() as u128;
        let most = (len - section) as u128 + queues::max_len(jobs);
        assert_eq!(check_file_len(&v4[..HEAD_LEN], len), Ok(()));
        assert_eq!(check_file_len(&v4[..HEAD_LEN], most as u64), Ok(()));
        for wrong in [len - section - 1, most as u64 + 1, 64 << 30] {
            assert!(check_file_len(&v4[..HEAD_LEN], wrong).is_err(), "{wrong}");
        }
        // A damaged or short head vouches for nothing.
        let mut bad = v4[..HEAD_LEN].to_vec();
        bad[80] ^= 1;
        assert!(check_file_len(&bad, len).is_err());
        assert!(check_file_len(&v4[..HEAD_LEN - 1], len).is_err());
    }

    #[test]
    fn version_4_round_trips_and_detects_every_bit_flip_and_cut() {
        let ck = with_queues();
        let bytes = ck.encode();
        assert_eq!(u16_at(&bytes, 8), Some(4));
        assert_eq!(Checkpoint::decode(&bytes), Ok(ck.clone()));
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Checkpoint::decode(&b).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        // Older versions leave the section out.
        let v3 = Checkpoint::decode(&ck.encode_as(3)).expect("v3");
        assert!(v3.queues.is_empty() && v3.queue_jobs.is_empty());
    }

    #[test]
    fn a_forged_queue_section_is_damage() {
        let ck = with_queues();
        let len = ck.encode().len();
        // The section starts after the head, one segment, the runs, one
        // aside, two waiting and one key.
        let runs = u64_at(&ck.encode(), 120).expect("runs") as usize;
        let at = HEAD_LEN + SEG_LEN + runs + ASIDE_LEN + 2 * WAIT_LEN + KEY_LEN;
        let first_name = at + 16 + 15;
        let second_id = first_name + 6;
        let forge = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = ck.encode();
            edit(&mut b);
            reseal(&mut b);
            Checkpoint::decode(&b).expect_err("forged")
        };
        type Edit<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
        let cases: Vec<(&str, Edit<'_>)> = vec![
            ("ids not increasing", Box::new(|b| b[at] = 4)),
            ("more queues than", Box::new(|b| b[at + 1] = 0x10)),
            ("job count", Box::new(|b| b[at + 8] = 3)),
            ("name is invalid", Box::new(|b| b[first_name] = b'/')),
            ("from 1", Box::new(|b| b[second_id..second_id + 2].fill(0))),
            (
                "ids not",
                Box::new(|b| b[second_id..second_id + 2].copy_from_slice(&[1, 0])),
            ),
            ("not listed", Box::new(|b| b[len - 6] = 9)),
            ("job ids not", Box::new(|b| b[len - 24] = 11)),
            ("job count", Box::new(|b| b.truncate(len - 10 + 4))),
        ];
        for (why, edit) in cases {
            let e = forge(&*edit);
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
        // A version 3 file with the section appended.
        let mut b = ck.encode();
        b[8] = 3;
        reseal(&mut b);
        assert!(Checkpoint::decode(&b).is_err());
    }

    /// [`with_queues`] (or [`sample`]) with last errors for jobs 3 and 10.
    fn with_errors(ck: Checkpoint) -> Checkpoint {
        Checkpoint {
            errors: vec![(3, "boom".into()), (10, "é".repeat(2048))],
            ..ck
        }
    }

    #[test]
    fn version_5_round_trips_and_detects_every_bit_flip_and_cut() {
        for ck in [with_errors(sample()), with_errors(with_queues())] {
            let bytes = ck.encode();
            assert_eq!(u16_at(&bytes, 8), Some(5));
            let section = errors::len(&ck.errors) as u32;
            assert_eq!(u32_at(&bytes, 12), Some(section));
            assert_eq!(Checkpoint::decode(&bytes), Ok(ck.clone()));
            assert_eq!(
                check_file_len(&bytes[..HEAD_LEN], bytes.len() as u64),
                Ok(())
            );
            // Bit flips of the long text are slow to try one by one: every
            // byte of the head and the first entries, and a sample of it.
            let bits = (0..(HEAD_LEN + 600) * 8).chain((0..bytes.len() * 8).step_by(61));
            for bit in bits.filter(|b| *b < bytes.len() * 8) {
                let mut b = bytes.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                assert!(Checkpoint::decode(&b).is_err(), "bit {bit}");
            }
            for cut in (0..bytes.len()).step_by(7) {
                assert!(Checkpoint::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
            // Older versions leave the section out (and read as no errors).
            for version in [3, 4] {
                let old = Checkpoint::decode(&ck.encode_as(version)).expect("older");
                assert!(old.errors.is_empty());
                assert_eq!(u32_at(&ck.encode_as(version), 12), Some(0));
            }
        }
        // Without errors, what was written before: version 3 or 4.
        assert_eq!(u16_at(&with_queues().encode(), 8), Some(4));
        assert_eq!(u16_at(&sample().encode(), 8), Some(3));
    }

    #[test]
    fn a_forged_error_section_is_damage() {
        let ck = with_errors(sample());
        let runs = u64_at(&ck.encode(), 120).expect("runs") as usize;
        let at = HEAD_LEN + SEG_LEN + runs + ASIDE_LEN + 2 * WAIT_LEN + KEY_LEN;
        let forge = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = ck.encode();
            edit(&mut b);
            reseal(&mut b);
            Checkpoint::decode(&b).expect_err("forged")
        };
        type Edit<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
        let cases: Vec<(&str, Edit<'_>)> = vec![
            ("ids not increasing", Box::new(|b| b[at] = 10)),
            ("out of range", Box::new(|b| b[at + 8..at + 10].fill(0))),
            ("not UTF-8", Box::new(|b| b[at + 10] = 0xff)),
            // The last text 2 bytes shorter: they read as an entry.
            (
                "runs past",
                Box::new(|b| b[at + 22..at + 24].copy_from_slice(&4094u16.to_le_bytes())),
            ),
            ("do not add up", Box::new(|b| b[14] ^= 0x10)),
        ];
        for (why, edit) in cases {
            let e = forge(&*edit);
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
        // Version 4 with the section's length set: reserved bytes.
        let mut b = ck.encode();
        b[8] = 4;
        reseal(&mut b);
        assert!(Checkpoint::decode(&b).is_err());
    }

    #[test]
    fn versions_1_and_2_are_still_read() {
        let plain = sample();
        let bytes = plain.encode_as(1);
        // A version 1 slot's last byte is 0: Normal.
        assert_eq!(bytes[HEAD_LEN + SEG_LEN + 15], 0);
        assert_eq!(Checkpoint::decode(&bytes), Ok(plain));
        for level in [0u8, 2, 3] {
            let mut ck = sample();
            ck.slots[0].priority = level;
            ck.aside[0].1.priority = 3;
            ck.groups = vec![(10, 1 << 90), (3, 7)];
            for version in [2, 3] {
                let bytes = ck.encode_as(version);
                assert_eq!(u16_at(&bytes, 8), Some(version));
                assert_eq!(Checkpoint::decode(&bytes), Ok(ck.clone()));
            }
        }
    }
}
