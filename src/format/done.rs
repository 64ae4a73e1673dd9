//! Record bodies of the completion file (`done.rec`).
//!
//! Kinds 8–10 and 17 belong to this file only (log segments hold 1–5,
//! 11, 12 and 14–16, the dead-letter file 6, 7 and 13). All integers are
//! little-endian. Decoding is total: any byte string gives a record or a
//! `None`.
//!
//! ```text
//! kind 8  Done     id u64 ‖ finished_ms u64 ‖ result (the rest, ≤ 4096 bytes)
//! kind 9  Purged   id u64 ‖ purged_ms u64
//! kind 10 Cleared  id u64
//! kind 17 Horizon  id u64
//! ```

use super::u64_at;

/// Kind byte of a [`DoneRecord::Done`].
pub const KIND_DONE: u8 = 8;
/// Kind byte of a [`DoneRecord::Purged`].
pub const KIND_PURGED: u8 = 9;
/// Kind byte of a [`DoneRecord::Cleared`].
pub const KIND_CLEARED: u8 = 10;
/// Kind byte of a [`DoneRecord::Horizon`].
pub const KIND_HORIZON: u8 = 17;
/// Fixed part of a completion body: id, finish time.
pub const DONE_FIXED_LEN: usize = 8 + 8;

/// A decoded record of the completion file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneRecord<'a> {
    /// A job completed with a result.
    Done {
        /// Job id.
        id: u64,
        /// When it completed (ms since the epoch).
        finished_ms: u64,
        /// The handler's result.
        result: &'a [u8],
    },
    /// A dead letter was purged: the job did not complete.
    Purged {
        /// Job id.
        id: u64,
        /// When it was purged.
        purged_ms: u64,
    },
    /// Forget every earlier record of the job (a purge marker written
    /// before a purge that did not happen).
    Cleared {
        /// Job id.
        id: u64,
    },
    /// Purge markers of jobs up to `id` were dropped (over the cap on
    /// markers kept): a finished job at or below `id` without a record
    /// of its own may have been cancelled or purged. The last one in the
    /// file holds.
    Horizon {
        /// The highest job id whose marker was dropped.
        id: u64,
    },
}

impl<'a> DoneRecord<'a> {
    /// The kind byte of this record.
    pub fn kind(&self) -> u8 {
        match self {
            DoneRecord::Done { .. } => KIND_DONE,
            DoneRecord::Purged { .. } => KIND_PURGED,
            DoneRecord::Cleared { .. } => KIND_CLEARED,
            DoneRecord::Horizon { .. } => KIND_HORIZON,
        }
    }

    /// The job id.
    pub fn id(&self) -> u64 {
        match *self {
            DoneRecord::Done { id, .. }
            | DoneRecord::Purged { id, .. }
            | DoneRecord::Cleared { id }
            | DoneRecord::Horizon { id } => id,
        }
    }

    /// Appends the body's head to `head` and returns the tail (the result).
    pub fn encode_into(&self, head: &mut Vec<u8>) -> &'a [u8] {
        match *self {
            DoneRecord::Done {
                id,
                finished_ms,
                result,
            } => {
                head.extend_from_slice(&id.to_le_bytes());
                head.extend_from_slice(&finished_ms.to_le_bytes());
                result
            }
            DoneRecord::Purged { id, purged_ms } => {
                head.extend_from_slice(&id.to_le_bytes());
                head.extend_from_slice(&purged_ms.to_le_bytes());
                &[]
            }
            DoneRecord::Cleared { id } | DoneRecord::Horizon { id } => {
                head.extend_from_slice(&id.to_le_bytes());
                &[]
            }
        }
    }

    /// Decodes a body of the given kind; `None` if it is malformed.
    pub fn decode(kind: u8, body: &'a [u8]) -> Option<DoneRecord<'a>> {
        match kind {
            KIND_DONE => Some(DoneRecord::Done {
                id: u64_at(body, 0)?,
                finished_ms: u64_at(body, 8)?,
                result: body.get(DONE_FIXED_LEN..)?,
            }),
            KIND_PURGED if body.len() == 16 => Some(DoneRecord::Purged {
                id: u64_at(body, 0)?,
                purged_ms: u64_at(body, 8)?,
            }),
            KIND_CLEARED if body.len() == 8 => Some(DoneRecord::Cleared {
                id: u64_at(body, 0)?,
            }),
            KIND_HORIZON if body.len() == 8 => Some(DoneRecord::Horizon {
                id: u64_at(body, 0)?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_short_bodies() {
        for rec in [
            DoneRecord::Done {
                id: 7,
                finished_ms: 9,
                result: b"ok",
            },
            DoneRecord::Done {
                id: 7,
                finished_ms: 9,
                result: b"",
            },
            DoneRecord::Purged {
                id: 3,
                purged_ms: 4,
            },
            DoneRecord::Cleared { id: 5 },
            DoneRecord::Horizon { id: 6 },
        ] {
            let mut body = Vec::new();
            let tail = rec.encode_into(&mut body);
            body.extend_from_slice(tail);
            assert_eq!(DoneRecord::decode(rec.kind(), &body), Some(rec));
            let fixed = match rec {
                DoneRecord::Done { .. } => DONE_FIXED_LEN,
                _ => body.len(),
            };
            for cut in 0..fixed {
                assert_eq!(DoneRecord::decode(rec.kind(), &body[..cut]), None);
            }
        }
        assert_eq!(DoneRecord::decode(6, &[0; 32]), None);
        assert_eq!(DoneRecord::decode(KIND_PURGED, &[0; 17]), None);
        assert_eq!(DoneRecord::decode(KIND_HORIZON, &[0; 9]), None);
    }
}
