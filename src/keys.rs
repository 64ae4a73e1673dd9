//! Idempotency keys: which job a key belongs to, and until when.
//!
//! The index holds a 128-bit hash of each key, never the key: the key's
//! bytes stay on disk, in the job's enqueue record, in a carried-forward
//! key record, or in the job's dead letter. A match of the hash alone does
//! not decide a duplicate: the caller compares the stored key bytes
//! ([`KeyIndex::find`]), and two distinct keys with one hash get an entry
//! each (the second in a small side map). The hash is recomputed from the
//! bytes on open, so it needs no stability across builds.
//!
//! A key is known while its job is live or dead, and otherwise until
//! `expires_ms` (enqueue time + dedup window).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};

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

static FORCE_COLLISIONS: AtomicBool = AtomicBool::new(false);

/// Test hook: while on, every key hashes to the same value, so tests can
/// check that distinct keys are still told apart by their bytes.
#[doc(hidden)]
pub fn force_key_hash_collisions(on: bool) {
    FORCE_COLLISIONS.store(on, Ordering::SeqCst);
}

fn half(key: &[u8], salt: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    salt.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// The 128-bit hash a key is indexed by.
pub fn key_hash(key: &[u8]) -> u128 {
    if FORCE_COLLISIONS.load(Ordering::Relaxed) {
        return 0;
    }
    (u128::from(half(key, 0x5741_4c51)) << 64) | u128::from(half(key, 0x4b45_5953))
}

/// A second, independent hash of a key: on open, where reading back the
/// bytes of an earlier record is not possible yet, replay tells keys with
/// one [`key_hash`] apart by this one.
pub fn key_check(key: &[u8]) -> u64 {
    half(key, 0x6368_6563_6b21)
}

/// The key index.
#[derive(Debug, Default)]
pub struct KeyIndex {
    map: HashMap<u128, KeyEntry>,
    /// Further entries of hashes shared by distinct keys.
    extra: HashMap<u128, Vec<KeyEntry>>,
    swept_at_len: usize,
}

impl KeyIndex {
    fn candidates(&self, hash: u128) -> impl Iterator<Item = &KeyEntry> + '_ {
        self.map
            .get(&hash)
            .into_iter()
            .chain(self.extra.get(&hash).into_iter().flatten())
    }

    /// The entry whose stored key bytes (read by `bytes_of`) equal `key`.
    /// An entry whose bytes cannot be read counts as a match: refusing a
    /// new job is safer than running one twice.
    pub fn find(
        &self,
        hash: u128,
        key: &[u8],
        bytes_of: impl Fn(&KeyEntry) -> Option<Vec<u8>>,
    ) -> Option<KeyEntry> {
        self.candidates(hash)
            .find(|e| bytes_of(e).is_none_or(|b| b == key))
            .copied()
    }

    /// The entry of job `id` under `hash`.
    pub fn of_job(&self, hash: u128, id: u64) -> Option<KeyEntry> {
        self.candidates(hash).find(|e| e.id == id).copied()
    }

    /// Sets the entry of a key: replaces `replaces` (the entry of the same
    /// key, found with [`KeyIndex::find`] or [`KeyIndex::of_job`]), or adds
    /// one beside the entries of other keys with the same hash.
    pub fn set(&mut self, hash: u128, replaces: Option<u64>, entry: KeyEntry) {
        match self.map.get_mut(&hash) {
            None => {
                self.map.insert(hash, entry);
            }
            Some(e) if Some(e.id) == replaces => *e = entry,
            Some(_) => {
                let extra = self.extra.entry(hash).or_default();
                match extra.iter_mut().find(|e| Some(e.id) == replaces) {
                    Some(e) => *e = entry,
                    None => extra.push(entry),
                }
            }
        }
    }

    /// Forgets the key of job `id` under `hash`.
    pub fn remove(&mut self, hash: u128, id: u64) {
        if let Some(extra) = self.extra.get_mut(&hash) {
            extra.retain(|e| e.id != id);
            let promoted = if self.map.get(&hash).is_some_and(|e| e.id == id) {
                extra.pop()
            } else {
                None
            };
            if extra.is_empty() {
                self.extra.remove(&hash);
            }
            if let Some(p) = promoted {
                self.map.insert(hash, p);
                return;
            }
        }
        if self.map.get(&hash).is_some_and(|e| e.id == id) {
            self.map.remove(&hash);
        }
    }

    /// Number of keys known.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len() + self.extra.values().map(Vec::len).sum::<usize>()
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every entry with its hash.
    pub fn iter(&self) -> impl Iterator<Item = (u128, KeyEntry)> + '_ {
        self.map.iter().map(|(h, e)| (*h, *e)).chain(
            self.extra
                .iter()
                .flat_map(|(h, v)| v.iter().map(move |e| (*h, *e))),
        )
    }

    /// Keeps the entries for which `keep` says yes.
    pub fn retain(&mut self, mut keep: impl FnMut(&KeyEntry) -> bool) {
        let gone: Vec<(u128, u64)> = self
            .iter()
            .filter(|(_, e)| !keep(e))
            .map(|(h, e)| (h, e.id))
            .collect();
        for (hash, id) in gone {
            self.remove(hash, id);
        }
        self.swept_at_len = self.map.len();
    }

    /// Whether the index has doubled since it was last swept.
    pub fn wants_sweep(&self) -> bool {
        self.map.len() > 1024 && self.map.len() > 2 * self.swept_at_len
    }

    /// Heap bytes held (approximate), for the memory report.
    pub fn heap_bytes(&self) -> usize {
        self.map.capacity() * 49 + self.extra.len() * 64
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
            k.set(
                u128::from(i),
                None,
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

    #[test]
    fn colliding_keys_keep_an_entry_each() {
        let mut k = KeyIndex::default();
        let e = |id| KeyEntry {
            id,
            expires_ms: 9,
            seg: 1,
            off: id as u32,
        };
        k.set(7, None, e(1));
        k.set(7, None, e(2));
        k.set(7, None, e(3));
        assert_eq!(k.len(), 3);
        let bytes = |x: &KeyEntry| Some(vec![x.id as u8]);
        assert_eq!(k.find(7, &[2], bytes).map(|x| x.id), Some(2));
        assert_eq!(k.find(7, &[4], bytes), None);
        k.remove(7, 1);
        assert_eq!(k.find(7, &[3], bytes).map(|x| x.id), Some(3));
        assert_eq!(k.find(7, &[1], bytes), None);
        assert_eq!(k.len(), 2);
    }
}
