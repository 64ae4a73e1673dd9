//! The search for intact frames after damage, with a bound on its work.
//!
//! After a damaged frame, recovery (and `verify`) look for intact frames
//! further on: the first one says where the records resume, and one whose
//! sync lag reaches back past the damage proves the damaged bytes had been
//! synced (then the damage is not a torn write). The search goes byte by
//! byte, not frame by frame: a frame found inside damaged bytes may be
//! bogus, and its length would skip real ones.
//!
//! Each candidate is checked with its checksum over the length its header
//! claims, up to the file's record limit. On bytes made to look like frame
//! headers at every offset, that is quadratic: a crafted file of a few
//! megabytes would take hours to open. So every search of one file draws
//! on one [`Budget`] of work, a fixed multiple of the file's length. An
//! honest file stays far inside it (each intact frame is checksummed about
//! once, and each search stops at the first frame it needs). A search that
//! runs out ends in [`GaveUp`], and the caller refuses the file with an
//! error naming it and the offset: it never takes the unsearched rest for a
//! torn tail, which opening would zero.
//!
//! Invariant: the work done on one file's searches, in bytes walked plus
//! bytes checksummed, never exceeds its budget's limit (plus one frame).

use std::fmt;
use std::ops::Range;

use crate::format::frame::{self, Frame, FRAME_HEADER_LEN};
use crate::format::u32_at;

/// Work allowed per byte of a file, across all its searches. With the
/// filters ahead of the checksum (a plausible header; in the log, an LSN
/// the search wants) an honest file needs a step per byte and about one
/// checksum of each frame after the damage; 64 leaves room for payloads
/// that look like headers.
const WORK_PER_BYTE: u64 = 64;
/// Work allowed on top, so that small files never run out.
const WORK_BASE: u64 = 64 << 20;

/// How much work all searches of one file may still do: bytes walked plus
/// bytes checksummed.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    left: u64,
    limit: u64,
}

impl Budget {
    /// The budget for the searches of a file of `len` bytes.
    pub(crate) fn for_file(len: usize) -> Budget {
        let limit = (len as u64)
            .saturating_mul(WORK_PER_BYTE)
            .saturating_add(WORK_BASE);
        Budget { left: limit, limit }
    }

    /// Takes `work` from the budget; false (and nothing taken) if it does
    /// not hold that much.
    fn spend(&mut self, work: u64) -> bool {
        match self.left.checked_sub(work) {
            Some(left) => {
                self.left = left;
                true
            }
            None => false,
        }
    }
}

/// A search that ran out of its budget before it was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GaveUp {
    /// Where the search stood (an offset in the searched bytes).
    pub at: usize,
    /// The budget it ran out of.
    pub limit: u64,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the search for intact records after it gave up at byte {} after {} bytes of \
             work (the file's limit); the bytes look crafted, so the rest is neither \
             trusted nor treated as a torn tail",
            self.at, self.limit
        )
    }
}

/// What a search looks for after damage.
pub(crate) struct Goal<W, P> {
    /// Whether the candidate at this offset, whose header (at least
    /// [`FRAME_HEADER_LEN`] bytes) is given, is worth checking: a cheap
    /// filter ahead of the checksum (for example, the LSNs the search
    /// wants). It must let through every frame the search would take.
    /// Candidates whose kind, flags or reserved bytes no
    /// intact frame has are never checked.
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
/// `segment_id` and at most `max_len` long, as `goal` asks; draws on
/// `budget`.
pub(crate) fn search<'a, W, P>(
    bytes: &'a [u8],
    span: Range<usize>,
    segment_id: u32,
    max_len: u32,
    goal: Goal<W, P>,
    budget: &mut Budget,
) -> Result<Later<'a>, GaveUp>
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
        let check = frame::plausible_header(rest) && (goal.wanted)(off, rest);
        let work = 1 + if check { claimed(rest, max_len) } else { 0 };
        if !budget.spend(work) {
            return Err(GaveUp {
                at: off,
                limit: budget.limit,
            });
        }
        if check {
            if let Ok(f) = frame::decode(rest, segment_id, max_len) {
                later.first.get_or_insert((off, f));
                if goal.need_proof && (goal.proves)(off, &f) {
                    later.durable = true;
                    return Ok(later);
                }
                if !goal.need_proof {
                    return Ok(later);
                }
            }
        }
        off += 1;
    }
    Ok(later)
}

/// The bytes decoding the frame at the start of `rest` checksums: the
/// length its header claims, when it is one a frame can have.
fn claimed(rest: &[u8], max_len: u32) -> u64 {
    let len = u32_at(rest, 4).unwrap_or(0);
    if (len as usize) < FRAME_HEADER_LEN || len > max_len || len as usize > rest.len() {
        return 0;
    }
    u64::from(len)
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

    #[test]
    fn finds_the_first_frame_and_the_proof_after_damage() {
        let mut bytes = vec![0xAB; 37];
        let at_first = bytes.len();
        bytes.extend(frame_bytes(10, 9, b"not synced"));
        let at_proof = bytes.len();
        bytes.extend(frame_bytes(11, 0, b"synced"));
        let goal = Goal {
            wanted: any,
            proves: proves_from(5),
            need_proof: true,
        };
        let mut budget = Budget::for_file(bytes.len());
        let later = search(&bytes, 1..bytes.len(), SEG, 1024, goal, &mut budget).unwrap();
        assert_eq!(
            later.first.map(|(off, f)| (off, f.lsn)),
            Some((at_first, 10))
        );
        assert!(later.durable);
        assert!(at_proof > at_first);
    }

    #[test]
    fn without_a_proof_to_find_it_stops_at_the_first_frame() {
        let mut bytes = vec![0xAB; 5];
        bytes.extend(frame_bytes(10, 0, b"one"));
        let goal = Goal {
            wanted: any,
            proves: proves_from(0),
            need_proof: false,
        };
        let mut budget = Budget::for_file(bytes.len());
        let before = budget.left;
        let later = search(&bytes, 1..bytes.len(), SEG, 1024, goal, &mut budget).unwrap();
        assert_eq!(later.first.map(|(off, _)| off), Some(5));
        assert!(!later.durable);
        let frame_len = bytes.len() as u64 - 5;
        assert_eq!(
            before - budget.left,
            5 + frame_len,
            "walked 5 bytes, checked one frame"
        );
    }

    /// A plausible header every 32 bytes claiming the longest frame:
    /// without a budget each would be checksummed over its whole claimed
    /// length.
    fn crafted(len: usize, max_len: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        for at in (0..len - FRAME_HEADER_LEN).step_by(32) {
            bytes[at + 4..at + 8].copy_from_slice(&max_len.to_le_bytes());
            bytes[at + 16] = 1;
        }
        bytes
    }

    #[test]
    fn crafted_bytes_exhaust_the_budget_instead_of_taking_quadratic_time() {
        let max_len = 1 << 20;
        let bytes = crafted(4 << 20, max_len);
        let mut budget = Budget::for_file(bytes.len());
        let goal = Goal {
            wanted: any,
            proves: proves_from(0),
            need_proof: true,
        };
        let gave_up = search(&bytes, 0..bytes.len(), SEG, max_len, goal, &mut budget).unwrap_err();
        assert_eq!(gave_up.limit, (4 << 20) * WORK_PER_BYTE + WORK_BASE);
        // Each candidate costs 32 steps and 1 MiB of checksum.
        let fit = gave_up.limit / u64::from(max_len);
        assert!(
            gave_up.at as u64 <= (fit + 1) * 32,
            "gave up at {}",
            gave_up.at
        );
        assert!(
            budget.left < u64::from(max_len),
            "the budget was spent first"
        );
        let text = gave_up.to_string();
        assert!(text.contains(&format!("byte {}", gave_up.at)), "{text}");
    }

    #[test]
    fn one_budget_bounds_every_search_of_a_file() {
        // Many searches over the same bytes draw on one budget: the
        // walks add up, and the later searches give up.
        let bytes = vec![0xAB; 1 << 20];
        let mut budget = Budget::for_file(bytes.len());
        let mut searches = 0;
        let gave_up = loop {
            let goal = Goal {
                wanted: any,
                proves: proves_from(0),
                need_proof: true,
            };
            match search(&bytes, 0..bytes.len(), SEG, 1024, goal, &mut budget) {
                Ok(later) => assert!(later.first.is_none()),
                Err(g) => break g,
            }
            searches += 1;
            assert!(searches < 1000, "never ran out");
        };
        let per_search = bytes.len() as u64 - FRAME_HEADER_LEN as u64 + 1;
        assert_eq!(searches as u64, gave_up.limit / per_search);
    }

    #[test]
    fn unwanted_candidates_cost_one_step() {
        let max_len = 1 << 20;
        let bytes = crafted(1 << 20, max_len);
        let mut budget = Budget::for_file(bytes.len());
        let goal = Goal {
            wanted: |_: usize, _: &[u8]| false,
            proves: proves_from(0),
            need_proof: true,
        };
        let later = search(&bytes, 0..bytes.len(), SEG, max_len, goal, &mut budget).unwrap();
        assert!(later.first.is_none());
        let walked = (bytes.len() - FRAME_HEADER_LEN + 1) as u64;
        assert_eq!(budget.limit - budget.left, walked);
    }
}
