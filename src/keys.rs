//! Idempotency keys: which job a key belongs to, and until when.
//!
//! The index holds a 128-bit hash of each key, never the key: the key's
//! bytes stay on disk, in the job's enqueue record, in a carried-forward
//! key record, or in the job's dead letter. The hash is recomputed from
//! those bytes on open, so it needs no stability across builds. Two
//! distinct keys colliding in 128 bits is not a practical concern (about
//! 2^-64 even with 2^32 keys).
//!
//! A key is known while its job is live or dead, and otherwise until
//! `expires_ms` (enqueue time + dedup window).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Segment value of a key whose bytes live in the dead-letter file.
pub const IN_DEAD_LETTERS: u32 = u32::MAX;

/// Where a key points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEntry {
    /// The job that owns the key.
    pub id: u64,
    /// When the key may be forgotten (if its job is finished).
    pub expires_ms: u64,
    /// Segment of the record holding the key bytes, or [`IN_DEAD_LETTERS`].
    pub seg: u32,
    /// Offset of that record.
    pub off: u32,
}

/// The 128-bit hash a key is indexed by.
pub fn key_hash(key: &[u8]) -> u128 {
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0x5741_4c51)) << 64) | u128::from(half(0x4b45_5953))
}

/// The key index.
#[derive(Debug, Default)]
pub struct KeyIndex {
    map: HashMap<u128, KeyEntry>,
    swept_at_len: usize,
}

impl KeyIndex {
    /// The entry for `key`, if any (expired or not).
    pub fn get(&self, hash: u128) -> Option<&KeyEntry> {
        self.map.get(&hash)
    }

    /// Sets the entry for a key.
    pub fn insert(&mut self, hash: u128, entry: KeyEntry) {
        self.map.insert(hash, entry);
    }

    /// Forgets a key.
    pub fn remove(&mut self, hash: u128) {
        self.map.remove(&hash);
    }

    /// Number of keys known.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every entry, for carrying keys forward.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u128, &mut KeyEntry)> + '_ {
        self.map.iter_mut()
    }

    /// Drops entries for which `forget` says yes.
    pub fn retain(&mut self, mut keep: impl FnMut(&KeyEntry) -> bool) {
        self.map.retain(|_, e| keep(e));
        self.swept_at_len = self.map.len();
    }

    /// Whether the index has doubled since it was last swept.
    pub fn wants_sweep(&self) -> bool {
        self.map.len() > 1024 && self.map.len() > 2 * self.swept_at_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_differ_and_repeat() {
        assert_eq!(key_hash(b"a"), key_hash(b"a"));
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
        assert_ne!(key_hash(b""), key_hash(b"\0"));
    }

    #[test]
    fn retain_sweeps() {
        let mut k = KeyIndex::default();
        for i in 0..3000u64 {
            k.insert(
                u128::from(i),
                KeyEntry {
                    id: i,
                    expires_ms: i,
                    seg: 1,
                    off: 0,
                },
            );
        }
        assert!(k.wants_sweep());
        k.retain(|e| e.expires_ms >= 1000);
        assert_eq!(k.len(), 2000);
        assert!(!k.wants_sweep());
    }
}
