//! The clean-close record, file `CLOSED` (see `docs/format.md`).
//!
//! ```text
//! 0   [u8; 8]  magic "walqcls\0"
//! 8   u16      version (1)
//! 10  u16      reserved, 0
//! 12  u32      id of the active segment at close
//! 16  u64      size in bytes of that segment (as preallocated)
//! 24  u64      last LSN written (and synced) before the close
//! 32  u32      CRC-32 of bytes 0..32
//! ```

use super::{u16_at, u32_at, u64_at};

/// Length of the record (the whole file).
pub const CLOSE_LEN: usize = 36;
/// The first eight bytes.
pub const CLOSE_MAGIC: [u8; 8] = *b"walqcls\0";
/// The version written and read.
pub const CLOSE_VERSION: u16 = 1;

/// Where the log ended at the last clean close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanClose {
    /// The active segment's id.
    pub segment_id: u32,
    /// Its size in bytes.
    pub segment_size: u64,
    /// The last LSN in the log.
    pub last_lsn: u64,
}

impl CleanClose {
    /// Encodes the record.
    pub fn encode(&self) -> [u8; CLOSE_LEN] {
        let mut out = [0u8; CLOSE_LEN];
        out[0..8].copy_from_slice(&CLOSE_MAGIC);
        out[8..10].copy_from_slice(&CLOSE_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.segment_id.to_le_bytes());
        out[16..24].copy_from_slice(&self.segment_size.to_le_bytes());
        out[24..32].copy_from_slice(&self.last_lsn.to_le_bytes());
        let crc = crc32fast::hash(&out[0..32]);
        out[32..36].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and verifies a record; `None` if it is not one this build
    /// reads (wrong length, magic, version or checksum).
    pub fn decode(buf: &[u8]) -> Option<CleanClose> {
        if buf.len() != CLOSE_LEN || buf[0..8] != CLOSE_MAGIC {
            return None;
        }
        if u16_at(buf, 8)? != CLOSE_VERSION || u16_at(buf, 10)? != 0 {
            return None;
        }
        if crc32fast::hash(&buf[0..32]) != u32_at(buf, 32)? {
            return None;
        }
        let close = CleanClose {
            segment_id: u32_at(buf, 12)?,
            segment_size: u64_at(buf, 16)?,
            last_lsn: u64_at(buf, 24)?,
        };
        // Bounds a writer keeps: a segment is at most 1 GiB, LSNs stay
        // below `MAX_ID`. A record past them is damaged, not a measure of
        // what was lost.
        let sane = close.segment_size <= crate::options::MAX_SEGMENT_SIZE
            && close.last_lsn < crate::format::MAX_ID;
        sane.then_some(close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_every_bit_flip() {
        let c = CleanClose {
            segment_id: 7,
            segment_size: 1 << 16,
            last_lsn: 1234,
        };
        let bytes = c.encode();
        assert_eq!(CleanClose::decode(&bytes), Some(c));
        for (size, lsn) in [(u64::MAX, 1234), (1 << 16, u64::MAX), (1 << 16, 1 << 62)] {
            let far = CleanClose {
                segment_size: size,
                last_lsn: lsn,
                ..c
            };
            assert_eq!(CleanClose::decode(&far.encode()), None, "{far:?}");
        }
        for bit in 0..CLOSE_LEN * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(CleanClose::decode(&b), None, "bit {bit}");
        }
        assert_eq!(CleanClose::decode(&bytes[..10]), None);
    }
}
