//! CRC-framed records.
//!
//! ```text
//! 0   u32  CRC-32 of: segment id (u32 LE) ‖ bytes 4..len of this frame
//! 4   u32  len: the whole frame, header included (24 ..= limit)
//! 8   u64  LSN (log sequence number, +1 per record across all files)
//! 16  u8   record kind (see `record`), never 0
//! 17  u8   flags (bit 0: more records of the same batch follow)
//! 18  u16  reserved, 0
//! 20  u32  sync lag: LSN − (highest LSN known durable when written), saturated
//! 24  ...  body
//! ```
//!
//! The checksum covers every header field and the body, and is seeded with
//! the segment id, so zeroes (kind 0, CRC of zeros does not match), stale
//! bytes and records copied from another segment never decode.

use super::{u16_at, u32_at, u64_at};

/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 24;
/// Flag: more records of the same atomic batch follow this one.
pub const FLAG_BATCH_MORE: u8 = 0x01;
/// All flags this version knows.
pub const KNOWN_FLAGS: u8 = FLAG_BATCH_MORE;

/// A decoded, verified frame borrowing its body from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Total length of the frame in bytes.
    pub len: u32,
    /// Log sequence number.
    pub lsn: u64,
    /// Record kind.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// LSN distance to the durable point when the frame was written.
    pub sync_lag: u32,
    /// The record body.
    pub body: &'a [u8],
}

/// Why bytes did not decode as a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Only zero bytes here: the clean end of a preallocated file.
    Zero,
    /// The frame claims more bytes than are left.
    Truncated,
    /// The length is smaller than a header or above the limit.
    BadLength,
    /// The checksum does not match.
    BadChecksum,
    /// Checksum fine but a field is out of range (kind 0, unknown flags,
    /// reserved bits set).
    Invalid,
    /// The kernel could not read the bytes (an I/O error, or a mapped file
    /// cut short by someone else): never a decision about their content.
    Unreadable,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::Zero => "zero bytes (end of log)",
            FrameError::Truncated => "record truncated",
            FrameError::BadLength => "record length out of range",
            FrameError::BadChecksum => "record checksum mismatch",
            FrameError::Invalid => "record header field out of range",
            FrameError::Unreadable => "record unreadable (an I/O error, or the file was cut short)",
        })
    }
}

/// Computes the checksum of a frame whose bytes `4..` are split into parts.
/// An empty part changes nothing and is skipped (the payload after an
/// inlined record, on every small append).
pub fn checksum(segment_id: u32, parts: &[&[u8]]) -> u32 {
    checksum_seeded(seeded(segment_id), parts)
}

/// [`checksum`] with a hasher already fed with the segment id (from
/// [`seed`], or a clone of one).
fn checksum_seeded(mut h: crc32fast::Hasher, parts: &[&[u8]]) -> u32 {
    for p in parts.iter().filter(|p| !p.is_empty()) {
        h.update(p);
    }
    h.finalize()
}

/// A hasher fed with `segment_id`, the seed of every frame checksum of
/// that segment: a writer that keeps it and passes clones to
/// [`seal_seeded`] pays neither the seeding nor the per-thread cache.
pub fn seed(segment_id: u32) -> crc32fast::Hasher {
    let mut h = crc32fast::Hasher::new();
    h.update(&segment_id.to_le_bytes());
    h
}

std::thread_local! {
    /// A hasher already fed with the last segment id this thread
    /// checksummed: records of one segment follow each other, and a clone
    /// (a copy of 16 bytes) skips both the short update of the 4-byte
    /// seed and the CPU feature checks of `Hasher::new` (~70 instructions
    /// per record together).
    static SEEDED: std::cell::RefCell<(u32, Option<crc32fast::Hasher>)> =
        const { std::cell::RefCell::new((0, None)) };
}

/// A hasher fed with `segment_id`, the seed of every frame checksum.
fn seeded(segment_id: u32) -> crc32fast::Hasher {
    SEEDED.with(|cell| {
        if let Ok(cached) = cell.try_borrow() {
            if let (id, Some(h)) = &*cached {
                if *id == segment_id {
                    return h.clone();
                }
            }
        }
        let h = seed(segment_id);
        if let Ok(mut cached) = cell.try_borrow_mut() {
            *cached = (segment_id, Some(h.clone()));
        }
        h
    })
}

/// Whether the fields of what may be a frame header at the start of `buf`
/// that [`decode`] checks after the checksum (kind, flags, reserved) are
/// ones an intact frame has: a cheap filter ahead of the checksum for the
/// byte-by-byte search after damage. It rejects nothing [`decode`] accepts.
pub fn plausible_header(buf: &[u8]) -> bool {
    match buf.get(..FRAME_HEADER_LEN) {
        Some(head) => head[16] != 0 && head[17] & !KNOWN_FLAGS == 0 && head[18..20] == [0, 0],
        None => false,
    }
}

/// The LSN field of what may be a frame header at the start of `buf`,
/// unverified (for the byte-by-byte search for intact frames after damage).
pub fn peek_lsn(buf: &[u8]) -> Option<u64> {
    u64_at(buf, 8)
}

/// Encodes a frame: `out` is cleared and receives the header followed by
/// `head`; `tail` (the payload) belongs after it and is covered by the
/// checksum, so a frame is `out ‖ tail` on disk.
#[allow(clippy::too_many_arguments)]
#[cfg(any(test, feature = "testing"))]
pub fn encode(
    out: &mut Vec<u8>,
    segment_id: u32,
    lsn: u64,
    kind: u8,
    flags: u8,
    sync_lag: u32,
    head: &[u8],
    tail: &[u8],
) {
    out.clear();
    out.resize(FRAME_HEADER_LEN, 0);
    out.extend_from_slice(head);
    seal(out, segment_id, lsn, kind, flags, sync_lag, tail);
}

/// Fills in the header of a frame whose first [`FRAME_HEADER_LEN`] bytes
/// are reserved in `buf`, the body head follows, and `tail` comes after.
pub fn seal(
    buf: &mut [u8],
    segment_id: u32,
    lsn: u64,
    kind: u8,
    flags: u8,
    sync_lag: u32,
    tail: &[u8],
) {
    seal_seeded(buf, seeded(segment_id), lsn, kind, flags, sync_lag, tail);
}

/// [`seal`] with `seed`, a hasher fed with the frame's segment id (see
/// [`seed`]).
pub fn seal_seeded(
    buf: &mut [u8],
    seed: crc32fast::Hasher,
    lsn: u64,
    kind: u8,
    flags: u8,
    sync_lag: u32,
    tail: &[u8],
) {
    assert!(kind != 0, "record kind 0 is reserved for zeroed space");
    assert!(buf.len() >= FRAME_HEADER_LEN, "frame buffer holds a header");
    let len = buf.len() + tail.len();
    let len = u32::try_from(len).expect("frame length is bounded by the segment size");
    buf[4..8].copy_from_slice(&len.to_le_bytes());
    buf[8..16].copy_from_slice(&lsn.to_le_bytes());
    buf[16] = kind;
    buf[17] = flags;
    buf[18..20].copy_from_slice(&[0u8; 2]);
    buf[20..24].copy_from_slice(&sync_lag.to_le_bytes());
    let crc = checksum_seeded(seed, &[&buf[4..], tail]);
    buf[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Sets the sync lag of the whole sealed frame in `frame` to zero and
/// reseals its checksum: for a file that is rewritten and synced whole
/// (dead-letter and completion file compaction). A buffer shorter than a
/// frame header is left as it is.
pub fn clear_sync_lag(frame: &mut [u8], segment_id: u32) {
    if frame.len() < FRAME_HEADER_LEN {
        return;
    }
    frame[20..24].fill(0);
    let crc = checksum(segment_id, &[&frame[4..]]);
    frame[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes and verifies the frame at the start of `buf`, whose length must
/// not exceed `max_len`.
pub fn decode(buf: &[u8], segment_id: u32, max_len: u32) -> Result<Frame<'_>, FrameError> {
    decode_with(buf, max_len, || seeded(segment_id))
}

/// [`decode`] with `seed`, a hasher fed with the frame's segment id (see
/// [`seed`]): a reader that keeps it (a `Segment`) pays neither the
/// seeding nor the per-thread cache per record.
pub fn decode_seeded<'a>(
    buf: &'a [u8],
    seed: &crc32fast::Hasher,
    max_len: u32,
) -> Result<Frame<'a>, FrameError> {
    decode_with(buf, max_len, || seed.clone())
}

/// [`decode`], the checksum seeded by `seed()` (called only once the
/// length is known good).
#[inline]
fn decode_with(
    buf: &[u8],
    max_len: u32,
    seed: impl FnOnce() -> crc32fast::Hasher,
) -> Result<Frame<'_>, FrameError> {
    let Some(head) = buf.get(..FRAME_HEADER_LEN) else {
        return if buf.iter().all(|&b| b == 0) {
            Err(FrameError::Zero)
        } else {
            Err(FrameError::Truncated)
        };
    };
    let len = u32_at(head, 4).unwrap_or(0);
    if (len as usize) < FRAME_HEADER_LEN || len > max_len {
        // A header of zeros has length 0: only here can it be one (the
        // scan for zeros is left off the path of every valid frame).
        if head.iter().all(|&b| b == 0) {
            return Err(FrameError::Zero);
        }
        return Err(FrameError::BadLength);
    }
    let Some(frame) = buf.get(..len as usize) else {
        return Err(FrameError::Truncated);
    };
    let stored = u32_at(frame, 0).unwrap_or(0);
    if checksum_seeded(seed(), &[&frame[4..]]) != stored {
        return Err(FrameError::BadChecksum);
    }
    let kind = frame[16];
    let flags = frame[17];
    if kind == 0 || flags & !KNOWN_FLAGS != 0 || u16_at(frame, 18) != Some(0) {
        return Err(FrameError::Invalid);
    }
    Ok(Frame {
        len,
        lsn: u64_at(frame, 8).unwrap_or(0),
        kind,
        flags,
        sync_lag: u32_at(frame, 20).unwrap_or(0),
        body: &frame[FRAME_HEADER_LEN..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seg: u32, head: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, seg, 42, 3, FLAG_BATCH_MORE, 5, head, tail);
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn seeded_checksums_equal_fresh_hashers() {
        // Alternating segments give the same checksums as fresh hashers.
        for seg in [0u32, 7, 7, 0, 9] {
            let mut h = crc32fast::Hasher::new();
            h.update(&seg.to_le_bytes());
            h.update(b"body");
            assert_eq!(checksum(seg, &[b"bo", b"dy"]), h.finalize());
        }
    }

    #[test]
    fn clearing_the_sync_lag_keeps_the_frame_valid() {
        let mut bytes = frame(9, b"head", b"tail-bytes");
        assert_eq!(decode(&bytes, 9, 1 << 20).unwrap().sync_lag, 5);
        clear_sync_lag(&mut bytes, 9);
        let f = decode(&bytes, 9, 1 << 20).unwrap();
        assert_eq!((f.sync_lag, f.lsn, f.body), (0, 42, &b"headtail-bytes"[..]));
        let mut short = vec![7u8; FRAME_HEADER_LEN - 1];
        clear_sync_lag(&mut short, 9);
        assert_eq!(short, vec![7u8; FRAME_HEADER_LEN - 1]);
    }

    #[test]
    fn round_trips() {
        let bytes = frame(9, b"head", b"tail-bytes");
        let f = decode(&bytes, 9, 1 << 20).unwrap();
        assert_eq!(f.lsn, 42);
        assert_eq!(f.kind, 3);
        assert_eq!(f.flags, FLAG_BATCH_MORE);
        assert_eq!(f.sync_lag, 5);
        assert_eq!(f.body, b"headtail-bytes");
        assert_eq!(f.len as usize, bytes.len());
    }

    #[test]
    fn seeded_decode_is_decode() {
        let bytes = frame(9, b"head", b"tail");
        assert_eq!(
            decode_seeded(&bytes, &seed(9), 1 << 20),
            decode(&bytes, 9, 1 << 20)
        );
        assert!(decode_seeded(&bytes, &seed(9), 1 << 20).is_ok());
        assert_eq!(
            decode_seeded(&bytes, &seed(10), 1 << 20),
            Err(FrameError::BadChecksum)
        );
    }

    #[test]
    fn other_segment_does_not_decode() {
        let bytes = frame(9, b"x", b"");
        assert_eq!(decode(&bytes, 10, 1 << 20), Err(FrameError::BadChecksum));
    }

    #[test]
    fn zeros_are_end_of_log() {
        assert_eq!(decode(&[0u8; 100], 1, 1 << 20), Err(FrameError::Zero));
        assert_eq!(decode(&[0u8; 3], 1, 1 << 20), Err(FrameError::Zero));
    }

    #[test]
    fn every_bit_flip_and_every_cut_is_detected() {
        let bytes = frame(1, b"some head", b"and a payload");
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&b, 1, 1 << 20).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], 1, 1 << 20).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn length_limit_is_enforced() {
        let bytes = frame(1, &[7u8; 100], b"");
        assert_eq!(decode(&bytes, 1, 50), Err(FrameError::BadLength));
    }
}
