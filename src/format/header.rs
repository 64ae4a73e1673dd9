//! The 64-byte header at the start of every walq file.
//!
//! ```text
//! 0   [u8; 8]  magic "walqseg\0"
//! 8   u16      format version
//! 10  u8       file kind (1 = log segment, 2 = dead-letter file,
//!              3 = completion file)
//! 11  u8       reserved, 0
//! 12  u32      segment id (the number in the file name; 0 for dead letters)
//! 16  u64      base LSN: every record in the file has a larger or equal LSN
//! 24  u64      next job id when the file was created
//! 32  [u8; 28] reserved, 0
//! 60  u32      CRC-32 of bytes 0..60
//! ```

use super::{u16_at, u32_at, u64_at, FORMAT_VERSION};

/// Length of the file header; records start right after it.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// The first eight bytes of every walq file.
pub const MAGIC: [u8; 8] = *b"walqseg\0";

/// What a walq file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A log segment: jobs and their state changes.
    Log = 1,
    /// The dead-letter file.
    Dead = 2,
    /// The completion file (`done.rec`): results and purge markers.
    Done = 3,
}

/// A decoded file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version the file was written with.
    pub version: u16,
    /// What the file holds.
    pub kind: FileKind,
    /// The segment id (also mixed into every record checksum).
    pub segment_id: u32,
    /// No record in the file has a smaller LSN.
    pub base_lsn: u64,
    /// The next job id when the file was created (ids are never reused).
    pub next_job_id: u64,
}

/// Why a header did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`SEGMENT_HEADER_LEN`] bytes.
    Short(usize),
    /// The magic is wrong: not a walq file.
    NotWalq,
    /// Written by a newer walq.
    FutureVersion(u16),
    /// Version 0, an unknown kind, or nonzero reserved bytes.
    Invalid(&'static str),
    /// The header checksum does not match.
    BadChecksum,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short(n) => write!(
                f,
                "file header truncated ({n} of {SEGMENT_HEADER_LEN} bytes)"
            ),
            HeaderError::NotWalq => f.write_str("not a walq file (bad magic)"),
            HeaderError::FutureVersion(v) => write!(
                f,
                "format version {v} is newer than this build reads (up to {FORMAT_VERSION})"
            ),
            HeaderError::Invalid(what) => write!(f, "invalid file header: {what}"),
            HeaderError::BadChecksum => f.write_str("file header checksum mismatch"),
        }
    }
}

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&self.version.to_le_bytes());
        out[10] = self.kind as u8;
        out[12..16].copy_from_slice(&self.segment_id.to_le_bytes());
        out[16..24].copy_from_slice(&self.base_lsn.to_le_bytes());
        out[24..32].copy_from_slice(&self.next_job_id.to_le_bytes());
        let crc = crc32fast::hash(&out[0..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and verifies a header from the first bytes of a file.
    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let Some(h) = buf.get(..SEGMENT_HEADER_LEN) else {
            if buf.len() >= 8 && buf[..8] != MAGIC {
                return Err(HeaderError::NotWalq);
            }
            return Err(HeaderError::Short(buf.len()));
        };
        if h[0..8] != MAGIC {
            return Err(HeaderError::NotWalq);
        }
        let stored = u32_at(h, 60).unwrap_or(0);
        let version = u16_at(h, 8).unwrap_or(0);
        // A future version may change the header layout, so report the
        // version before judging the checksum.
        if version > FORMAT_VERSION {
            return Err(HeaderError::FutureVersion(version));
        }
        if crc32fast::hash(&h[0..60]) != stored {
            return Err(HeaderError::BadChecksum);
        }
        if version == 0 {
            return Err(HeaderError::Invalid("version 0"));
        }
        let kind = match h[10] {
            1 => FileKind::Log,
            2 => FileKind::Dead,
            3 => FileKind::Done,
            _ => return Err(HeaderError::Invalid("unknown file kind")),
        };
        if h[11] != 0 || h[32..60].iter().any(|&b| b != 0) {
            return Err(HeaderError::Invalid("reserved bytes are not zero"));
        }
        Ok(SegmentHeader {
            version,
            kind,
            segment_id: u32_at(h, 12).unwrap_or(0),
            base_lsn: u64_at(h, 16).unwrap_or(0),
            next_job_id: u64_at(h, 24).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            kind: FileKind::Log,
            segment_id: 7,
            base_lsn: 1234,
            next_job_id: 99,
        }
    }

    #[test]
    fn round_trips() {
        let h = sample();
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let bytes = sample().encode();
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&b).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn classifies_failures() {
        assert_eq!(SegmentHeader::decode(&[0u8; 10]), Err(HeaderError::NotWalq));
        assert_eq!(SegmentHeader::decode(&MAGIC), Err(HeaderError::Short(8)));
        let mut future = sample();
        future.version = FORMAT_VERSION + 1;
        assert_eq!(
            SegmentHeader::decode(&future.encode()),
            Err(HeaderError::FutureVersion(FORMAT_VERSION + 1))
        );
    }
}
