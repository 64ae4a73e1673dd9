//! The id floor, file `ID_FLOOR` (see `docs/format.md`): two slots, each
//! a complete record, the newer (higher sequence) in force.
//!
//! ```text
//! slot at offset 0 and at offset 4096 (SLOT_STRIDE), 40 bytes each:
//! 0   [u8; 8]  magic "walqidf\0"
//! 8   u16      version (1)
//! 10  u16      reserved, 0
//! 12  u32      reserved, 0
//! 16  u64      sequence: the slot with the higher one is in force
//! 24  u64      floor: every job id issued so far is below it
//! 32  u32      CRC-32 of bytes 0..32
//! 36  u32      reserved, 0
//! ```
//!
//! Only one slot is written at a time, the one not in force, and the two
//! lie in different pages (and sectors): a write torn by a power cut
//! damages at most the slot it wrote, and the other one is still whole.

use super::{u16_at, u32_at, u64_at, MAX_ID};

/// Length of one slot.
pub const SLOT_LEN: usize = 40;
/// Offset of the second slot: the first one's page and sector are not its.
pub const SLOT_STRIDE: u64 = 4096;
/// Length of the whole file.
pub const FILE_LEN: u64 = SLOT_STRIDE + SLOT_LEN as u64;
/// The first eight bytes of a slot.
pub const MAGIC: [u8; 8] = *b"walqidf\0";
/// The version written and read.
pub const VERSION: u16 = 1;

/// One slot's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Which write this was: the slot with the higher one is in force.
    pub seq: u64,
    /// Every job id issued so far is below it.
    pub floor: u64,
}

impl Slot {
    /// Offset in the file of the slot this one is written to: sequence
    /// numbers alternate between the two.
    pub fn offset(self) -> u64 {
        (self.seq % 2) * SLOT_STRIDE
    }
}

/// Encodes `slot`.
pub fn encode(slot: Slot) -> [u8; SLOT_LEN] {
    let mut out = [0u8; SLOT_LEN];
    out[0..8].copy_from_slice(&MAGIC);
    out[8..10].copy_from_slice(&VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&slot.seq.to_le_bytes());
    out[24..32].copy_from_slice(&slot.floor.to_le_bytes());
    let crc = crc32fast::hash(&out[0..32]);
    out[32..36].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and verifies one slot; `None` if it is not one this build
/// reads (wrong length, magic, version, reserved bytes or checksum, or a
/// floor past the id bound).
pub fn decode(buf: &[u8]) -> Option<Slot> {
    if buf.len() != SLOT_LEN || buf[0..8] != MAGIC || u16_at(buf, 8)? != VERSION {
        return None;
    }
    if u16_at(buf, 10)? != 0 || u32_at(buf, 12)? != 0 || u32_at(buf, 36)? != 0 {
        return None;
    }
    if crc32fast::hash(&buf[0..32]) != u32_at(buf, 32)? {
        return None;
    }
    let slot = Slot {
        seq: u64_at(buf, 16)?,
        floor: u64_at(buf, 24)?,
    };
    (slot.floor <= MAX_ID).then_some(slot)
}

/// The slot in force among the two read (either may be damaged or
/// missing): the valid one with the higher sequence.
pub fn in_force(a: Option<Slot>, b: Option<Slot>) -> Option<Slot> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.seq > a.seq { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The slot in force in the bytes of a whole file (either slot may be
/// damaged, or missing from a short file).
pub fn read(file: &[u8]) -> Option<Slot> {
    let slot = |at: usize| file.get(at..at + SLOT_LEN).and_then(decode);
    in_force(slot(0), slot(SLOT_STRIDE as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_every_bit_flip_and_cut() {
        let slot = Slot {
            seq: 7,
            floor: 1 << 40,
        };
        let bytes = encode(slot);
        assert_eq!(decode(&bytes), Some(slot));
        for bit in 0..SLOT_LEN * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&b), None, "bit {bit}");
        }
        for cut in 0..SLOT_LEN {
            assert_eq!(decode(&bytes[..cut]), None);
        }
    }

    #[test]
    fn a_floor_past_the_id_bound_is_refused() {
        let slot = Slot {
            seq: 1,
            floor: MAX_ID + 1,
        };
        assert_eq!(decode(&encode(slot)), None);
    }

    #[test]
    fn the_newer_valid_slot_is_in_force() {
        let old = Slot { seq: 4, floor: 900 };
        let new = Slot { seq: 5, floor: 100 };
        assert_eq!(in_force(Some(old), Some(new)), Some(new));
        assert_eq!(in_force(Some(new), Some(old)), Some(new));
        assert_eq!(in_force(None, Some(old)), Some(old));
        assert_eq!(in_force(None, None), None);
        assert_ne!(old.offset(), new.offset(), "writes alternate slots");
        let mut file = vec![0u8; FILE_LEN as usize];
        for slot in [old, new] {
            let at = slot.offset() as usize;
            file[at..at + SLOT_LEN].copy_from_slice(&encode(slot));
        }
        assert_eq!(read(&file), Some(new));
        assert_eq!(read(&file[..SLOT_LEN]), Some(old), "a short file: one slot");
        assert_eq!(read(&file[..SLOT_LEN - 1]), None);
    }
}
