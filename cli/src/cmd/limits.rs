//! The limits `import` and `salvage` open their target with, and the
//! checks of every item they make before the first write.
//!
//! A queue opened with a larger `max_payload` (and `segment_size`) than
//! the defaults holds jobs that a queue opened with the defaults refuses
//! to take. So the target is opened with the defaults raised to what the
//! largest item of the input needs; what no option raises (the longest
//! key, group and queue name, the largest segment) is checked on every
//! item first, so that a refused input writes nothing.

use std::collections::HashSet;

use walq::{
    Options, DEFAULT_MAX_PAYLOAD, DEFAULT_QUEUE, DEFAULT_SEGMENT_SIZE, MAX_GROUP_LEN, MAX_KEY_LEN,
    MAX_QUEUES, MAX_SEGMENT_SIZE,
};
/// What a segment must hold besides the largest payload that
/// `Options::max_payload` may allow: the file header (64 bytes), a frame
/// header (24), the fixed part of an Enqueue record (32) and the longest
/// key (docs/format.md).
const PAYLOAD_ROOM_OVERHEAD: u64 = 64 + 24 + 32 + MAX_KEY_LEN as u64;
/// What a segment must hold besides one job's payload, key and group: the
/// file header, a frame header and the fixed part of an Enqueue2 record
/// (38 bytes; a job written as kind 1 needs 6 fewer).
const RECORD_OVERHEAD: u64 = 64 + 24 + 38;
/// Segment sizes chosen here are a whole number of MiB.
const SEGMENT_STEP: u64 = 1 << 20;
/// The largest payload any queue takes: the `max_payload` that fits in
/// the largest segment.
pub const MAX_PAYLOAD: u64 = MAX_SEGMENT_SIZE - PAYLOAD_ROOM_OVERHEAD;

/// The parts of one item that the target's limits must admit.
pub struct Sizes<'a> {
    /// Its queue's name (empty: the default queue).
    pub queue: &'a str,
    /// Payload length in bytes.
    pub payload: u64,
    /// Idempotency key length, if it has a key.
    pub key: Option<usize>,
    /// Group key length, if it has a group.
    pub group: Option<usize>,
}

/// What the items seen so far need of the target.
#[derive(Default)]
pub struct Limits {
    /// The largest payload.
    payload: u64,
    /// The smallest segment that holds every record and that payload limit.
    segment: u64,
    /// The named queues the items go to.
    names: HashSet<String>,
}

impl Limits {
    /// Checks `s` against the limits no option raises, and raises the
    /// target's limits to take it. `Err` says why no queue takes it.
    pub fn admit(&mut self, s: &Sizes<'_>) -> Result<(), String> {
        check_len("idempotency key", s.key, MAX_KEY_LEN)?;
        check_len("group key", s.group, MAX_GROUP_LEN)?;
        if s.payload > MAX_PAYLOAD {
            return Err(format!(
                "payload of {} bytes is over the limit of {MAX_PAYLOAD} bytes \
                 (the largest max_payload, with segments of {MAX_SEGMENT_SIZE} bytes)",
                s.payload
            ));
        }
        let parts = s.payload + (s.key.unwrap_or(0) + s.group.unwrap_or(0)) as u64;
        let record = RECORD_OVERHEAD + parts;
        if record > MAX_SEGMENT_SIZE {
            return Err(format!(
                "payload, key and group of {parts} bytes together are over the limit of {} \
                 bytes (what one record holds in a segment of {MAX_SEGMENT_SIZE} bytes)",
                MAX_SEGMENT_SIZE - RECORD_OVERHEAD
            ));
        }
        self.add_queue(s.queue)?;
        self.payload = self.payload.max(s.payload);
        self.segment = self
            .segment
            .max(record)
            .max(s.payload + PAYLOAD_ROOM_OVERHEAD);
        Ok(())
    }

    /// Checks a queue name as `Store::queue` does, and counts the named
    /// queues.
    fn add_queue(&mut self, name: &str) -> Result<(), String> {
        if name.is_empty() || name == DEFAULT_QUEUE || self.names.contains(name) {
            return Ok(());
        }
        walq::validate_queue_name(name).map_err(|e| e.to_string())?;
        if self.names.len() >= MAX_QUEUES {
            return Err(format!(
                "queue {name:?} would be named queue {} of a store that holds at most {MAX_QUEUES}",
                MAX_QUEUES + 1
            ));
        }
        self.names.insert(name.to_string());
        Ok(())
    }

    /// Whether the defaults are too small for some item.
    pub fn raised(&self) -> bool {
        self.payload > DEFAULT_MAX_PAYLOAD || self.segment > DEFAULT_SEGMENT_SIZE
    }

    /// The target's options: the defaults, or, when an item needs more, a
    /// payload limit of the largest payload and segments that hold it.
    pub fn options(&self) -> Options {
        if !self.raised() {
            return Options::default();
        }
        Options::default()
            .max_payload(u32::try_from(self.max_payload()).unwrap_or(u32::MAX))
            .segment_size(self.segment_size())
    }

    /// Whether segments of `size` bytes (an existing target's) take every
    /// item without raising the payload limit above its default.
    pub fn fits_in(&self, size: u64) -> bool {
        !self.raised() && self.segment <= size
    }

    /// The payload limit the target gets.
    pub fn max_payload(&self) -> u64 {
        self.payload.max(DEFAULT_MAX_PAYLOAD)
    }

    /// The segment size the target gets: what the items need, rounded up
    /// to a whole MiB, at least the default.
    pub fn segment_size(&self) -> u64 {
        let need = self.segment.div_ceil(SEGMENT_STEP) * SEGMENT_STEP;
        need.clamp(DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE)
    }
}

/// Checks an optional key's length: 1 to `max` bytes.
fn check_len(what: &str, len: Option<usize>, max: usize) -> Result<(), String> {
    match len {
        Some(0) => Err(format!("an empty {what}: a {what} is 1 to {max} bytes")),
        Some(n) if n > max => Err(format!(
            "{what} of {n} bytes is over the limit of {max} bytes"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(payload: u64, key: usize, group: usize) -> Sizes<'static> {
        Sizes {
            queue: "",
            payload,
            key: (key > 0).then_some(key),
            group: (group > 0).then_some(group),
        }
    }

    /// Small items keep the defaults; a larger payload raises the payload
    /// limit, and past what a default segment holds, the segment size.
    #[test]
    fn the_defaults_are_raised_only_as_far_as_an_item_needs() {
        let mut l = Limits::default();
        l.admit(&job(DEFAULT_MAX_PAYLOAD, MAX_KEY_LEN, MAX_GROUP_LEN))
            .unwrap();
        assert!(!l.raised());
        l.admit(&job(17 << 20, 0, 0)).unwrap();
        assert_eq!((l.max_payload(), l.segment_size()), (17 << 20, 64 << 20));
        l.admit(&job(64 << 20, 1, 0)).unwrap();
        assert_eq!((l.max_payload(), l.segment_size()), (64 << 20, 65 << 20));
    }

    /// The largest payload and record any queue takes are admitted, with
    /// the largest segments; one byte more is refused, naming the limit.
    #[test]
    fn what_no_option_raises_is_refused() {
        let mut l = Limits::default();
        l.admit(&job(MAX_PAYLOAD, 0, 0)).unwrap();
        assert_eq!(l.segment_size(), MAX_SEGMENT_SIZE);
        let most = MAX_SEGMENT_SIZE - RECORD_OVERHEAD - 1024 - 256;
        l.admit(&job(most, 1024, 256)).unwrap();
        let err = l.admit(&job(most + 1, 1024, 256)).unwrap_err();
        assert!(err.contains("over the limit"), "{err}");
        let err = l.admit(&job(MAX_PAYLOAD + 1, 0, 0)).unwrap_err();
        assert!(
            err.contains(&format!("limit of {MAX_PAYLOAD} bytes")),
            "{err}"
        );
        let err = l.admit(&job(1, MAX_KEY_LEN + 1, 0)).unwrap_err();
        assert!(err.contains("idempotency key of 1025 bytes"), "{err}");
        let err = l.admit(&job(1, 0, MAX_GROUP_LEN + 1)).unwrap_err();
        assert!(err.contains("group key of 257 bytes"), "{err}");
        let empty = Sizes {
            key: Some(0),
            ..job(1, 0, 0)
        };
        assert!(l
            .admit(&empty)
            .unwrap_err()
            .contains("empty idempotency key"));
    }

    /// Queue names follow `Store::queue`'s rules, and a store holds at
    /// most `MAX_QUEUES` named queues.
    #[test]
    fn queue_names_are_checked_and_counted() {
        let mut l = Limits::default();
        for name in ["", "default", "mail", "a.b-c_D9"] {
            l.admit(&Sizes {
                queue: name,
                ..job(1, 0, 0)
            })
            .unwrap();
        }
        for bad in ["no spaces", &"x".repeat(65), "é"] {
            let err = l
                .admit(&Sizes {
                    queue: bad,
                    ..job(1, 0, 0)
                })
                .unwrap_err();
            assert!(err.contains("is invalid"), "{err}");
        }
        let names: Vec<String> = (2..MAX_QUEUES).map(|i| format!("q{i}")).collect();
        for n in &names {
            l.admit(&Sizes {
                queue: n,
                ..job(1, 0, 0)
            })
            .unwrap();
        }
        let err = l.admit(&Sizes {
            queue: "one-more",
            ..job(1, 0, 0)
        });
        assert!(err.unwrap_err().contains("at most 1024"));
    }
}
