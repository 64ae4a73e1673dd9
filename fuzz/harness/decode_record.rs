//! Target `decode_record`: the pure decoders of `walq::format`.
//!
//! Input: `seg_id: u32 LE ‖ max_len: u32 LE ‖ buf`. Checks, none of which
//! may panic:
//! - `frame::decode(buf, seg_id, max_len)`: anything that decodes is within
//!   `buf` and `max_len` and re-encodes (`frame::encode`, with the body split
//!   into head and tail at every kind of point) to exactly the bytes it was
//!   decoded from; its body goes through `Record::decode` as below.
//! - `buf` resealed (`frame::seal` with the header fields it carries, so the
//!   checksum is right) decodes back to those fields unless a flag is
//!   unknown, never decodes under another segment id or a smaller limit.
//! - `Record::decode(kind, body)` for the input's kind byte and every known
//!   kind: a record that decodes has that kind and `encode_into` gives back
//!   `body` byte for byte.
//! - `DoneRecord::decode(kind, body)` for every completion-file kind (8–10,
//!   17 Horizon): one that decodes has that kind and re-encodes to `body`.
//! - `store_id::decode(buf)`: an id that decodes re-encodes to `buf`.
//! - `id_floor::decode(buf)`: a slot that decodes re-encodes to `buf`;
//!   `id_floor::read(buf)` (the slot in force of a whole file) is one of
//!   the two slots' decodes.
//! - `SegmentHeader::decode(buf)`: a header that decodes re-encodes to the
//!   first 64 bytes of `buf`; a header built from the input's fields
//!   round-trips through `encode`/`decode`.

use walq::format::done::DoneRecord;
use walq::format::frame::{self, FrameError, FRAME_HEADER_LEN, KNOWN_FLAGS};
use walq::format::header::{FileKind, HeaderError, SegmentHeader, SEGMENT_HEADER_LEN};
use walq::format::record::Record;
use walq::format::FORMAT_VERSION;
use walq::format::{id_floor, store_id};

use super::input::Input;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let seg_id = input.u32();
    let max_len = input.u32();
    let buf = input.rest();

    check_frame(buf, seg_id, max_len);
    check_sealed(buf, seg_id);
    if let Some((&kind, body)) = buf.split_first() {
        check_record(kind, body);
        // Every kind a log, dead-letter or completion file holds (11 is
        // QueueDef, 12 Enqueue2, 13 a dead letter naming its queue, 16 a
        // named queue's key, 18 a nack with its error).
        for kind in (1..=16).chain([18]) {
            check_record(kind, body);
        }
        for kind in [kind, 8, 9, 10, 17] {
            check_done_record(kind, body);
        }
    }
    if let Some(id) = store_id::decode(buf) {
        assert_eq!(
            store_id::encode(id)[..],
            *buf,
            "store id does not re-encode"
        );
    }
    check_id_floor(buf);
    check_header(buf);
    check_header(data);
    check_built_header(data);
}

/// Decodes `buf` as an id-floor slot and as a whole id-floor file.
fn check_id_floor(buf: &[u8]) {
    if let Some(slot) = id_floor::decode(buf) {
        assert_eq!(id_floor::encode(slot)[..], *buf, "slot does not re-encode");
    }
    if let Some(slot) = id_floor::read(buf) {
        let at = slot.offset() as usize;
        let from = |at: usize| {
            buf.get(at..at + id_floor::SLOT_LEN)
                .and_then(id_floor::decode)
        };
        assert!(
            from(0) == Some(slot) || from(id_floor::SLOT_STRIDE as usize) == Some(slot),
            "the slot in force is not one of the file's (sequence {}, written at {at})",
            slot.seq
        );
    }
}

/// Decodes `buf` as a frame; a frame that decodes must re-encode exactly.
fn check_frame(buf: &[u8], seg_id: u32, max_len: u32) {
    let f = match frame::decode(buf, seg_id, max_len) {
        Ok(f) => f,
        Err(FrameError::Zero) => {
            let n = buf.len().min(FRAME_HEADER_LEN);
            assert!(buf[..n].iter().all(|&b| b == 0), "Zero for nonzero bytes");
            return;
        }
        Err(_) => return,
    };
    let len = f.len as usize;
    assert!(
        f.len <= max_len,
        "frame of {} bytes over the limit {max_len}",
        f.len
    );
    assert!(
        len >= FRAME_HEADER_LEN && len <= buf.len(),
        "frame length {len} out of the buffer"
    );
    assert_eq!(f.body.len(), len - FRAME_HEADER_LEN, "body length");
    assert_ne!(f.kind, 0, "kind 0 decoded");
    assert_eq!(f.flags & !KNOWN_FLAGS, 0, "unknown flags decoded");
    let original = &buf[..len];
    // Re-encode with the body split into a head and a tail in a few ways.
    for split in [0, f.body.len() / 2, f.body.len()] {
        let (head, tail) = f.body.split_at(split);
        let mut out = Vec::new();
        frame::encode(
            &mut out, seg_id, f.lsn, f.kind, f.flags, f.sync_lag, head, tail,
        );
        out.extend_from_slice(tail);
        assert_eq!(out, original, "frame does not re-encode to its bytes");
    }
    // Trailing bytes do not change what decodes.
    let mut longer = original.to_vec();
    longer.extend_from_slice(&[0xA5; 7]);
    assert_eq!(frame::decode(&longer, seg_id, max_len), Ok(f));
    // Another segment's checksum seed never accepts it.
    assert_eq!(
        frame::decode(original, seg_id ^ 1, max_len),
        Err(FrameError::BadChecksum)
    );
    check_record(f.kind, f.body);
}

/// Seals `buf` with the header fields it carries and checks the decode.
fn check_sealed(buf: &[u8], seg_id: u32) {
    if buf.len() < FRAME_HEADER_LEN || buf.len() > u32::MAX as usize {
        return;
    }
    let mut v = buf.to_vec();
    let lsn = u64::from_le_bytes(v[8..16].try_into().expect("8 bytes"));
    let kind = v[16].max(1);
    let flags = v[17];
    let sync_lag = u32::from_le_bytes(v[20..24].try_into().expect("4 bytes"));
    // Seal with the body split between the buffer and a tail.
    let split = FRAME_HEADER_LEN + (v.len() - FRAME_HEADER_LEN) / 3;
    let tail = v.split_off(split);
    frame::seal(&mut v, seg_id, lsn, kind, flags, sync_lag, &tail);
    v.extend_from_slice(&tail);
    let len = v.len() as u32;
    let got = frame::decode(&v, seg_id, len);
    if flags & !KNOWN_FLAGS != 0 {
        assert_eq!(got, Err(FrameError::Invalid), "unknown flags {flags:#x}");
        return;
    }
    let f = got.expect("a sealed frame decodes");
    assert_eq!(
        (f.len, f.lsn, f.kind, f.flags, f.sync_lag, f.body),
        (len, lsn, kind, flags, sync_lag, &v[FRAME_HEADER_LEN..]),
        "sealed frame decodes to other fields"
    );
    assert_eq!(
        frame::decode(&v, seg_id, len - 1),
        Err(FrameError::BadLength)
    );
    assert_eq!(
        frame::decode(&v, seg_id.wrapping_add(1), len),
        Err(FrameError::BadChecksum)
    );
    // Cut anywhere, the frame never decodes.
    for cut in [0, 1, FRAME_HEADER_LEN - 1, FRAME_HEADER_LEN, v.len() - 1] {
        if cut < v.len() {
            assert!(
                frame::decode(&v[..cut], seg_id, len).is_err(),
                "cut at {cut} decodes"
            );
        }
    }
}

/// Decodes a record body; a record that decodes must re-encode exactly.
fn check_record(kind: u8, body: &[u8]) {
    let Some(rec) = Record::decode(kind, body) else {
        assert!(Record::malformed(kind, body).is_some(), "no reason given");
        return;
    };
    assert_eq!(Record::malformed(kind, body), None);
    assert_eq!(rec.kind(), kind, "record decoded as another kind");
    let mut head = Vec::new();
    let tail = rec.encode_into(&mut head);
    head.extend_from_slice(tail);
    assert_eq!(head, body, "record does not re-encode to its body");
    assert_eq!(Record::decode(kind, &head), Some(rec));
}

/// Decodes `body` as a completion-file record of `kind`; one that decodes
/// re-encodes exactly.
fn check_done_record(kind: u8, body: &[u8]) {
    let Some(rec) = DoneRecord::decode(kind, body) else {
        return;
    };
    assert_eq!(
        rec.kind(),
        kind,
        "completion record decoded as another kind"
    );
    let mut head = Vec::new();
    let tail = rec.encode_into(&mut head);
    head.extend_from_slice(tail);
    assert_eq!(
        head, body,
        "completion record does not re-encode to its body"
    );
}

/// Decodes `buf` as a file header; a header that decodes re-encodes exactly.
fn check_header(buf: &[u8]) {
    match SegmentHeader::decode(buf) {
        Ok(h) => {
            assert!(buf.len() >= SEGMENT_HEADER_LEN);
            assert!(
                h.version >= 1 && h.version <= FORMAT_VERSION,
                "version {}",
                h.version
            );
            assert_eq!(
                h.encode(),
                buf[..SEGMENT_HEADER_LEN],
                "header does not re-encode"
            );
        }
        Err(HeaderError::Short(n)) => assert!(n == buf.len() && n < SEGMENT_HEADER_LEN),
        Err(HeaderError::FutureVersion(v)) => assert!(v > FORMAT_VERSION),
        Err(e) => {
            // Every error prints (and names what is wrong).
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Builds a header from input bytes: encode then decode gives it back.
fn check_built_header(data: &[u8]) {
    let mut input = Input::new(data);
    let kind = if input.u8() & 1 == 0 {
        FileKind::Log
    } else {
        FileKind::Dead
    };
    let h = SegmentHeader {
        version: FORMAT_VERSION,
        kind,
        segment_id: input.u32(),
        base_lsn: input.u64(),
        next_job_id: input.u64(),
    };
    let bytes = h.encode();
    assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
    let mut future = h;
    future.version = FORMAT_VERSION + 1 + (input.u16() % 100);
    assert_eq!(
        SegmentHeader::decode(&future.encode()),
        Err(HeaderError::FutureVersion(future.version))
    );
}
