//! The checkpoint of the in-memory index, file `CHECKPOINT` (see
//! `docs/format.md`, "The checkpoint").
//!
//! Pure code: [`Checkpoint::encode`] and [`Checkpoint::decode`]. The file is
//! a fixed 128-byte head with its own CRC, then the segments it covers, the
//! job table's slots, the jobs kept aside, the waiting jobs' due times and
//! the idempotency keys, then a CRC-32 of those (everything after the
//! head). The head has its own CRC so that the clean flag can be cleared
//! in place ([`head_without_clean`]) with one small write.
//! Whether the log on disk still matches it is decided by the loader
//! (`src/checkpoint.rs`), never here.

use super::{u16_at, u32_at, u64_at};

/// The first eight bytes.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"walqckp\0";
/// The version written when a live job has a priority other than Normal
/// (its slots carry priorities), and the newest read.
pub const CHECKPOINT_VERSION: u16 = 2;
/// The version written when every live job is of level Normal: what
/// builds before priorities read (version 2 with every priority Normal).
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
    /// Live jobs of a message group: (id, group hash). Version 2 only.
    pub groups: Vec<(u64, u128)>,
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
    /// Length of the encoded file.
    pub fn encoded_len(&self) -> usize {
        HEAD_LEN
            + SEG_LEN * self.segments.len()
            + SLOT_LEN * self.slots.len()
            + ASIDE_LEN * self.aside.len()
            + WAIT_LEN * self.waiting.len()
            + KEY_LEN * self.keys.len()
            + GROUP_LEN * self.groups.len()
            + 4
    }

    /// The version [`Checkpoint::encode`] writes: 1 unless a slot holds
    /// a priority other than Normal, so that a build that does not know
    /// priorities never takes such a checkpoint for one it reads.
    pub fn version(&self) -> u16 {
        let levels = self
            .slots
            .iter()
            .chain(self.aside.iter().map(|(_, s)| s))
            .any(|s| s.priority != NORMAL);
        if levels || !self.groups.is_empty() {
            CHECKPOINT_VERSION
        } else {
            CHECKPOINT_VERSION_1
        }
    }

    /// Encodes the file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&CHECKPOINT_MAGIC);
        out.extend_from_slice(&self.version().to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
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
            self.slots.len(),
            self.aside.len(),
            self.waiting.len(),
            self.keys.len(),
            self.groups.len(),
        ] {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        out.resize(HEAD_LEN, 0);
        for s in &self.segments {
            out.extend_from_slice(&s.base_lsn.to_le_bytes());
            out.extend_from_slice(&s.size.to_le_bytes());
            out.extend_from_slice(&s.end.to_le_bytes());
        }
        for s in &self.slots {
            put_slot(&mut out, s);
        }
        for (id, s) in &self.aside {
            out.extend_from_slice(&id.to_le_bytes());
            put_slot(&mut out, s);
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
        for (id, group) in &self.groups {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&group.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[HEAD_LEN..]);
        out.extend_from_slice(&crc.to_le_bytes());
        seal_head(&mut out[..HEAD_LEN]);
        out
    }

    /// Decodes and verifies a checkpoint file (for tests and tools; open
    /// uses [`Checkpoint::decode_lazy`]).
    #[cfg(any(test, feature = "testing"))]
    pub fn decode(buf: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let (mut ck, slots) = Checkpoint::decode_lazy(buf)?;
        ck.slots = slots.chunks_exact(SLOT_LEN).map(slot_at).collect();
        Ok(ck)
    }

    /// [`Checkpoint::decode`] without the slots: their bytes (16 per
    /// slot, read with [`slot_at`]) are returned instead, so that a
    /// reader can build its table from them in one pass.
    pub fn decode_lazy(buf: &[u8]) -> Result<(Checkpoint, &[u8]), CheckpointError> {
        let damaged = |why: &str| CheckpointError::Damaged(why.to_string());
        if buf.len() < HEAD_LEN + 4 || buf[0..8] != CHECKPOINT_MAGIC {
            return Err(damaged("not a checkpoint (short, or wrong magic)"));
        }
        let version = u16_at(buf, 8).unwrap_or(0);
        if version != CHECKPOINT_VERSION && version != CHECKPOINT_VERSION_1 {
            return Err(CheckpointError::Version(version));
        }
        if head_crc(&buf[..HEAD_LEN]) != u32_at(buf, 60).unwrap_or(0) {
            return Err(damaged("head checksum mismatch"));
        }
        let (body, tail) = buf.split_at(buf.len() - 4);
        if crc32fast::hash(&body[HEAD_LEN..]) != u32_at(tail, 0).unwrap_or(0) {
            return Err(damaged("checksum mismatch"));
        }
        let flags = u16_at(buf, 10).unwrap_or(u16::MAX);
        let reserved_zero =
            u32_at(buf, 12) == Some(0) && buf[120..HEAD_LEN].iter().all(|&b| b == 0);
        if flags & !FLAG_CLEAN != 0 || !reserved_zero {
            return Err(damaged("unknown flags or nonzero reserved bytes"));
        }
        let count = |at: usize| u64_at(buf, at).and_then(|n| usize::try_from(n).ok());
        let counts: Option<Vec<usize>> = (0..6).map(|i| count(72 + 8 * i)).collect();
        let counts = counts.ok_or_else(|| damaged("counts out of range"))?;
        if version == CHECKPOINT_VERSION_1 && counts[5] != 0 {
            return Err(damaged("unknown flags or nonzero reserved bytes"));
        }
        let sizes = [SEG_LEN, SLOT_LEN, ASIDE_LEN, WAIT_LEN, KEY_LEN, GROUP_LEN];
        let mut want = HEAD_LEN as u128 + 4;
        for (n, size) in counts.iter().zip(sizes) {
            want += *n as u128 * size as u128;
        }
        if want != buf.len() as u128 || counts[0] == 0 {
            return Err(damaged("lengths do not add up to the file's"));
        }
        let mut ck = Checkpoint {
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
        };
        let mut at = HEAD_LEN;
        let mut take = |n: usize, size: usize| {
            let part = &body[at..at + n * size];
            at += n * size;
            part
        };
        ck.segments = take(counts[0], SEG_LEN)
            .chunks_exact(SEG_LEN)
            .map(|b| CkSegment {
                base_lsn: u64_at(b, 0).unwrap_or(0),
                size: u32_at(b, 8).unwrap_or(0),
                end: u32_at(b, 12).unwrap_or(0),
            })
            .collect();
        let slots = take(counts[1], SLOT_LEN);
        ck.aside = take(counts[2], ASIDE_LEN)
            .chunks_exact(ASIDE_LEN)
            .map(|b| (u64_at(b, 0).unwrap_or(0), slot_at(&b[8..])))
            .collect();
        ck.waiting = take(counts[3], WAIT_LEN)
            .chunks_exact(WAIT_LEN)
            .map(|b| (u64_at(b, 0).unwrap_or(0), u64_at(b, 8).unwrap_or(0)))
            .collect();
        ck.keys = take(counts[4], KEY_LEN)
            .chunks_exact(KEY_LEN)
            .map(|b| {
                let mut h = [0u8; 16];
                h.copy_from_slice(&b[..16]);
                CkKey {
                    hash: u128::from_le_bytes(h),
                    check: u64_at(b, 16).unwrap_or(0),
                    id: u64_at(b, 24).unwrap_or(0),
                    expires_ms: u64_at(b, 32).unwrap_or(0),
                    seg: u32_at(b, 40).unwrap_or(0),
                    off: u32_at(b, 44).unwrap_or(0),
                }
            })
            .collect();
        ck.groups = take(counts[5], GROUP_LEN)
            .chunks_exact(GROUP_LEN)
            .map(|b| (u64_at(b, 0).unwrap_or(0), u128_at(&b[8..])))
            .collect();
        Ok((ck, slots))
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
        }
    }

    #[test]
    fn round_trips_and_detects_every_bit_flip_and_cut() {
        let ck = sample();
        let bytes = ck.encode();
        assert_eq!(bytes.len(), ck.encoded_len());
        assert_eq!(Checkpoint::decode(&bytes), Ok(ck));
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Checkpoint::decode(&b).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..cut]).is_err(), "cut {cut}");
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
        b[8] = 3;
        assert_eq!(Checkpoint::decode(&b), Err(CheckpointError::Version(3)));
    }

    #[test]
    fn priorities_and_groups_make_version_2_and_round_trip() {
        let plain = sample();
        assert_eq!(plain.version(), 1);
        let bytes = plain.encode();
        assert_eq!(u16_at(&bytes, 8), Some(1));
        // A version 1 slot's last byte is 0: Normal.
        assert_eq!(bytes[HEAD_LEN + SEG_LEN + 15], 0);
        for level in [0u8, 2, 3] {
            let mut ck = sample();
            ck.slots[0].priority = level;
            ck.aside[0].1.priority = 3;
            ck.groups = vec![(10, 1 << 90), (3, 7)];
            assert_eq!(ck.version(), 2);
            let bytes = ck.encode();
            assert_eq!(u16_at(&bytes, 8), Some(2));
            assert_eq!(Checkpoint::decode(&bytes), Ok(ck));
        }
    }
}
