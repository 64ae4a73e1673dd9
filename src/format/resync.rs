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
//! Each candidate costs a bounded amount of work, whatever length its
//! header claims: one up to [`DIRECT_MAX`] bytes long is checksummed
//! directly; a longer one through prefix checksums ([`RangeCrc`]: two
//! checksums of under 256 bytes and at most three multiplications), and only a
//! match is then decoded directly. So crafted bytes that look like headers
//! at every offset, claiming the whole segment each, cost a search linear
//! work, not the square of the damaged span (`tests` below count it).

use std::ops::Range;

use crate::format::frame::{self, Frame, FRAME_HEADER_LEN};
use crate::format::range_crc::RangeCrc;
use crate::format::u32_at;

/// Candidates claiming up to this many bytes are checksummed directly;
/// longer ones through prefix checksums first.
pub(crate) const DIRECT_MAX: u32 = 4096;

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
    /// Bytes checksummed by the search (a measure of its work).
    pub hashed: usize,
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
        hashed: 0,
    };
    let end = span.end.min(bytes.len());
    let mut check = Candidates::new(bytes, span.start, segment_id, max_len);
    let mut off = span.start;
    while off < end && off + FRAME_HEADER_LEN <= bytes.len() {
        let rest = &bytes[off..];
        if frame::plausible_header(rest) && (goal.wanted)(off, rest) {
            if let Some(f) = check.frame_at(off) {
                later.first.get_or_insert((off, f));
                if !goal.need_proof || (goal.proves)(off, &f) {
                    later.durable = goal.need_proof;
                    later.hashed = check.hashed();
                    return later;
                }
            }
        }
        off += 1;
    }
    later.hashed = check.hashed();
    later
}

/// An intact log frame, at `off` with LSN `lsn`, whose sync lag proves
/// every LSN up to `through` durable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Proof {
    off: usize,
    lsn: u64,
    through: u64,
}

/// Searches a log segment's `bytes` (frames checksummed with
/// `segment_id`, at most `max_len` long) in `span` after damage where LSN
/// `expected` was due: the first intact frame with a later LSN, and, if
/// `need_proof`, whether an intact frame proves LSN `expected` durable.
///
/// `proof` carries, from one damage to the next in the same `bytes`, the
/// frame an earlier search found proving: when it lies in `span` and
/// this search would take it, it is the proof, and the search stops at
/// the first frame. Without it each damage searched the rest of the
/// segment again for the same proof, work the square of its size.
pub(crate) fn search_log<'a>(
    bytes: &'a [u8],
    span: Range<usize>,
    segment_id: u32,
    max_len: u32,
    expected: u64,
    need_proof: bool,
    proof: &mut Option<Proof>,
) -> Later<'a> {
    let wanted = |lsn: u64| lsn > expected && lsn - expected < (1 << 40);
    let known =
        proof.is_some_and(|p| span.contains(&p.off) && wanted(p.lsn) && p.through >= expected);
    let found = std::cell::Cell::new(None);
    let goal = Goal {
        wanted: |_: usize, head: &[u8]| wanted(frame::peek_lsn(head).unwrap_or(0)),
        proves: |off: usize, f: &Frame<'_>| {
            let through = f.lsn.saturating_sub(u64::from(f.sync_lag));
            found.set(Some(Proof {
                off,
                lsn: f.lsn,
                through,
            }));
            through >= expected
        },
        need_proof: need_proof && !known,
    };
    let mut later = search(bytes, span, segment_id, max_len, goal);
    if later.durable {
        *proof = found.get();
    }
    later.durable |= need_proof && known;
    later
}

/// Decodes candidate frames of one buffer, each in bounded work.
struct Candidates<'a> {
    bytes: &'a [u8],
    segment_id: u32,
    max_len: u32,
    /// Where the prefix checksums start (the search's first offset).
    base: usize,
    /// The checksum of the segment id alone (each frame's seed).
    seed: u32,
    /// Prefix checksums from `base`, made for the first long candidate.
    ranges: Option<RangeCrc<'a>>,
    /// Bytes checksummed directly.
    hashed: usize,
}

impl<'a> Candidates<'a> {
    fn new(bytes: &'a [u8], base: usize, segment_id: u32, max_len: u32) -> Candidates<'a> {
        Candidates {
            bytes,
            segment_id,
            max_len,
            base: base.min(bytes.len()),
            seed: frame::checksum(segment_id, &[]),
            ranges: None,
            hashed: 0,
        }
    }

    /// The intact frame at `off` (at or after `base`), as
    /// [`frame::decode`] finds it.
    fn frame_at(&mut self, off: usize) -> Option<Frame<'a>> {
        let rest = self.bytes.get(off..)?;
        let len = u32_at(rest, 4)?;
        if (len as usize) < FRAME_HEADER_LEN || len > self.max_len || len as usize > rest.len() {
            return None; // what decode refuses before any checksum
        }
        if len > DIRECT_MAX && !self.long_candidate_matches(off, len as usize)? {
            return None;
        }
        self.hashed += len as usize - 4;
        frame::decode(rest, self.segment_id, self.max_len).ok()
    }

    /// Whether the checksum stored at `off` matches the `len` bytes it
    /// covers, by prefix checksums.
    fn long_candidate_matches(&mut self, off: usize, len: usize) -> Option<bool> {
        let stored = u32_at(self.bytes, off)?;
        let (base, bytes) = (self.base, self.bytes);
        let ranges = self
            .ranges
            .get_or_insert_with(|| RangeCrc::new(&bytes[base..]));
        let start = off.checked_sub(base)? + 4;
        Some(ranges.checksum(self.seed, start, start + len - 4)? == stored)
    }

    fn hashed(&self) -> usize {
        self.hashed + self.ranges.as_ref().map_or(0, RangeCrc::hashed)
    }
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

    /// Bytes that look like a header every 8 bytes, each claiming `len`.
    fn header_like(n: usize, len: u32) -> Vec<u8> {
        let mut unit = [0u8; 8];
        unit[0] = 1; // the kind, as byte 16 of a candidate 16 bytes before
        unit[4..8].copy_from_slice(&len.to_le_bytes());
        unit.iter().copied().cycle().take(n).collect()
    }

    #[test]
    fn crafted_headers_claiming_long_frames_cost_linear_work() {
        let n = 1 << 20;
        let mut bytes = header_like(n, (n / 2) as u32);
        let at_frame = bytes.len();
        bytes.extend(frame_bytes(7, 0, b"after the crafted bytes"));
        let goal = Goal {
            wanted: any,
            proves: proves_from(0),
            need_proof: true,
        };
        let later = search(&bytes, 1..bytes.len(), SEG, u32::MAX, goal);
        assert_eq!(later.first.map(|(off, _)| off), Some(at_frame));
        assert!(later.durable);
        // Checked one by one, the n / 16 candidates that fit would hash
        // n / 2 bytes each: n² / 32. The bound is linear.
        assert!(
            later.hashed < 64 * bytes.len(),
            "{} bytes hashed for {} bytes searched",
            later.hashed,
            bytes.len()
        );
    }

    /// The search as it was before prefix checksums: every candidate
    /// decoded directly.
    fn naive(bytes: &[u8], span: Range<usize>, proof_from: u64) -> (Option<usize>, bool) {
        let mut first = None;
        for off in span {
            if off + FRAME_HEADER_LEN > bytes.len() {
                break;
            }
            if let Ok(f) = frame::decode(&bytes[off..], SEG, u32::MAX) {
                first.get_or_insert(off);
                if f.lsn.saturating_sub(u64::from(f.sync_lag)) >= proof_from {
                    return (first, true);
                }
            }
        }
        (first, false)
    }

    #[test]
    fn long_and_short_frames_are_found_as_a_direct_search_finds_them() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..40 {
            let mut bytes = Vec::new();
            let frames = next() % 6;
            for lsn in 1..=frames {
                let len = match next() % 3 {
                    0 => (next() % 64) as usize,
                    1 => 4000 + (next() % 200) as usize,
                    _ => 5000 + (next() % 20_000) as usize,
                };
                let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let lag = (next() % 3) as u32;
                bytes.extend(frame_bytes(lsn, lag, &payload));
                let garbage = (next() % 40) as usize;
                bytes.extend((0..garbage).map(|_| next() as u8));
            }
            // Damage somewhere: flip a byte.
            if !bytes.is_empty() {
                let at = (next() as usize) % bytes.len();
                bytes[at] ^= 0x5a;
            }
            let from = (next() as usize) % (bytes.len() + 1);
            let proof_from = next() % 5;
            let goal = Goal {
                wanted: any,
                proves: proves_from(proof_from),
                need_proof: true,
            };
            let later = search(&bytes, from..bytes.len(), SEG, u32::MAX, goal);
            let got = (later.first.map(|(off, _)| off), later.durable);
            assert_eq!(
                got,
                naive(&bytes, from..bytes.len(), proof_from),
                "round {round}"
            );
        }
    }
}
