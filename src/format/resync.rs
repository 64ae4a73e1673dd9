//! The search for intact frames after damage.
//!
//! After a damaged frame, recovery (and `verify`) look for intact frames
//! further on: the first one says where the records resume, and one whose
//! sync lag reaches back past the damage proves the damaged bytes had been
//! synced (then the damage is not a torn write). The search goes byte by
//! byte, not frame by frame: a frame found inside damaged bytes may be
//! bogus, and its length would skip real ones.
//!
//! Each candidate is checked with its checksum over the length its header
//! claims. Two filters keep that cheap without changing any decision: a
//! candidate whose kind, flags or reserved bytes no intact frame has is
//! skipped ([`frame::plausible_header`]), and so is one the caller's
//! [`Goal::wanted`] rules out (in the log: an LSN the search cannot use).
//! A search stops at the first frame it needs.
//!
//! Known limit: bytes crafted to look like plausible headers at every
//! offset still make a search quadratic (each candidate is checksummed over
//! its claimed length). A work budget that refused such files was tried and
//! dropped: honest payloads (a table of 24-byte entries) and scattered
//! damage under `Durability::Os` exhausted any budget tight enough to
//! matter, and a refused open is worse than a slow one. The fix that keeps
//! every decision is a checksum of any range in O(log n) from prefix
//! checksums (CRC-32 is affine); see docs/format.md, "Sync lag".

use std::ops::Range;

use crate::format::frame::{self, Frame, FRAME_HEADER_LEN};

/// What a search looks for after damage.
pub(crate) struct Goal<W, P> {
    /// Whether the candidate at this offset, whose header (at least
    /// [`FRAME_HEADER_LEN`] bytes) is given, is worth checking: a cheap
    /// filter ahead of the checksum (for example, the LSNs the search
    /// wants). It must let through every frame the search would take.
    pub wanted: W,
    /// Whether the intact frame at this offset proves the damage was
    /// synced.
    pub proves: P,
    /// Whether the search must look for such a proof at all: without
    /// one it stops at the first wanted intact frame.
    pub need_proof: bool,
}

/// What a search found after damage.
#[derive(Debug)]
pub(crate) struct Later<'a> {
    /// The first wanted intact frame, and its offset.
    pub first: Option<(usize, Frame<'a>)>,
    /// Whether an intact frame proved the damage had been synced.
    pub durable: bool,
}

/// Searches `bytes` for intact frames starting in `span`, checksummed with
/// `segment_id` and at most `max_len` long, as `goal` asks.
pub(crate) fn search<'a, W, P>(
    bytes: &'a [u8],
    span: Range<usize>,
    segment_id: u32,
    max_len: u32,
    goal: Goal<W, P>,
) -> Later<'a>
where
    W: Fn(usize, &[u8]) -> bool,
    P: Fn(usize, &Frame<'a>) -> bool,
{
    let mut later = Later {
        first: None,
        durable: false,
    };
    let end = span.end.min(bytes.len());
    let mut off = span.start;
    while off < end && off + FRAME_HEADER_LEN <= bytes.len() {
        let rest = &bytes[off..];
        if frame::plausible_header(rest) && (goal.wanted)(off, rest) {
            if let Ok(f) = frame::decode(rest, segment_id, max_len) {
                later.first.get_or_insert((off, f));
                if !goal.need_proof {
                    return later;
                }
                if (goal.proves)(off, &f) {
                    later.durable = true;
                    return later;
                }
            }
        }
        off += 1;
    }
    later
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::frame::encode;

    const SEG: u32 = 3;

    fn frame_bytes(lsn: u64, sync_lag: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, SEG, lsn, 1, 0, sync_lag, &[], payload);
        out.extend_from_slice(payload);
        out
    }

    fn any(_: usize, _: &[u8]) -> bool {
        true
    }

    fn proves_from(lsn: u64) -> impl Fn(usize, &Frame<'_>) -> bool {
        move |_, f| f.lsn.saturating_sub(u64::from(f.sync_lag)) >= lsn
    }

    /// Damage, a frame that proves nothing, then one that proves LSN 5.
    fn damaged_then_two_frames() -> (Vec<u8>, usize, usize) {
        let mut bytes = vec![0xAB; 37];
        let at_first = bytes.len();
        bytes.extend(frame_bytes(10, 9, b"not synced"));
        let at_proof = bytes.len();
        bytes.extend(frame_bytes(11, 0, b"synced"));
        (bytes, at_first, at_proof)
    }

    #[test]
    fn finds_the_first_frame_and_the_proof_after_damage() {
        let (bytes, at_first, _) = damaged_then_two_frames();
        let goal = Goal {
            wanted: any,
            proves: proves_from(5),
            need_proof: true,
        };
        let later = search(&bytes, 1..bytes.len(), SEG, 1024, goal);
        assert_eq!(
            later.first.map(|(off, f)| (off, f.lsn)),
            Some((at_first, 10))
        );
        assert!(later.durable);
    }

    #[test]
    fn without_a_proof_to_find_it_stops_at_the_first_frame() {
        let (bytes, at_first, _) = damaged_then_two_frames();
        let goal = Goal {
            wanted: any,
            proves: |_: usize, _: &Frame<'_>| panic!("no proof is sought"),
            need_proof: false,
        };
        let later = search(&bytes, 1..bytes.len(), SEG, 1024, goal);
        assert_eq!(later.first.map(|(off, _)| off), Some(at_first));
        assert!(!later.durable);
    }

    #[test]
    fn unwanted_frames_are_neither_first_nor_proof() {
        let (bytes, _, at_proof) = damaged_then_two_frames();
        let goal = Goal {
            wanted: |_: usize, head: &[u8]| frame::peek_lsn(head) == Some(11),
            proves: proves_from(5),
            need_proof: true,
        };
        let later = search(&bytes, 1..bytes.len(), SEG, 1024, goal);
        assert_eq!(later.first.map(|(off, _)| off), Some(at_proof));
        assert!(later.durable);
    }

    #[test]
    fn a_search_ends_at_its_span() {
        let (bytes, _, at_proof) = damaged_then_two_frames();
        let goal = Goal {
            wanted: any,
            proves: proves_from(11),
            need_proof: true,
        };
        // The proving frame starts at `at_proof`: a span ending there
        // does not see it.
        let later = search(&bytes, 1..at_proof, SEG, 1024, goal);
        assert!(later.first.is_some());
        assert!(!later.durable);
    }
}
