//! The last error of each job that failed and is not finished:
//! [`LastErrors`], a side map from job id to the error text its last
//! failed attempt gave ([`crate::Queue::last_error`]).
//!
//! Only jobs with an error have an entry, so a queue whose jobs never
//! fail (or fail without a text) keeps nothing here. An entry is set by a
//! nack with a non-empty error (written as a NackErr record, kind 18) and
//! removed when the job finishes: acked, dead-lettered (the dead letter
//! keeps its own copy), cancelled. A nack without an error, a lease that
//! expires and `Queue::release` leave it as it is (replay reads their
//! plain Nack records the same way). Texts are at most
//! [`crate::MAX_ERROR_LEN`] bytes, so the map holds at most that many
//! bytes (plus about 40 of overhead) per failing job.
//!
//! The map is kept in copy-on-write shards ([`crate::cowmap`]) so a
//! checkpoint captures it by pointer under the queue lock.

use std::sync::Arc;

use crate::cowmap::{Captured, CowIdMap};

/// Job id to the text of its last failed attempt (see the module docs).
#[derive(Debug, Default)]
pub struct LastErrors {
    map: CowIdMap<Arc<str>>,
}

/// The map at one moment (a checkpoint's capture).
pub type CapturedErrors = Captured<u64, Arc<str>>;

impl LastErrors {
    /// Job `id`'s last error is `text` (never empty: an empty error sets
    /// nothing).
    pub fn set(&mut self, id: u64, text: &str) {
        if !text.is_empty() {
            self.map.insert(id, Arc::from(text));
        }
    }

    /// Job `id` finished: its error is forgotten. Free when no job has an
    /// error (the ack path of a queue whose jobs do not fail).
    #[inline]
    pub fn forget(&mut self, id: u64) {
        if !self.map.is_empty() {
            self.map.remove(&id);
        }
    }

    /// Job `id`'s last error, if it has one.
    pub fn get(&self, id: u64) -> Option<&str> {
        if self.map.is_empty() {
            return None;
        }
        self.map.get(&id).map(|t| &**t)
    }

    /// Job `id`'s last error, shared (for a leased [`crate::Job`]).
    #[inline]
    pub fn shared(&self, id: u64) -> Option<Arc<str>> {
        if self.map.is_empty() {
            return None;
        }
        self.map.get(&id).cloned()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &str)> + '_ {
        self.map.iter().map(|(id, t)| (*id, &**t))
    }

    /// The map as it is now, sharing its shards.
    pub fn capture(&self) -> CapturedErrors {
        self.map.capture()
    }
}

/// A captured map's entries in job id order (what the checkpoint stores).
pub fn sorted(captured: &CapturedErrors) -> Vec<(u64, String)> {
    let mut all: Vec<(u64, String)> = captured
        .iter()
        .map(|(id, t)| (*id, t.to_string()))
        .collect();
    all.sort_unstable_by_key(|&(id, _)| id);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_non_empty_texts_until_forgotten() {
        let mut e = LastErrors::default();
        e.set(3, "");
        assert_eq!(e.get(3), None);
        e.set(3, "boom");
        e.set(9, "bang");
        e.set(3, "again");
        assert_eq!(e.get(3), Some("again"));
        let captured = e.capture();
        e.forget(3);
        assert_eq!(e.get(3), None);
        assert_eq!(
            sorted(&captured),
            vec![(3, "again".to_string()), (9, "bang".to_string())]
        );
        e.forget(9);
        assert_eq!(e.iter().count(), 0);
    }
}
