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

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cowmap::{Captured, CowMap, SHARDS};

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
    /// [`key_check`] of the key: a checkpoint stores it, and reading every
    /// key back from the log to compute it made the capture, under the
    /// queue lock, cost about 0.5 µs a key (480 ms for a million).
    pub check: u64,
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

/// The first entry of each hash, in copy-on-write shards (see
/// [`crate::cowmap`]): a checkpoint captures the index by cloning the shard
/// pointers under the queue lock, and a map's growth rehashes one shard,
/// not every key at once. Key hashes are uniform, so their low bits pick
/// the shard; inside a shard the standard hasher (keyed per process) is
/// kept, as hashes of user keys.
type FirstEntries = CowMap<u128, KeyEntry, RandomState>;

/// The key index.
#[derive(Debug, Default)]
pub struct KeyIndex {
    /// The first entry of each hash.
    first: FirstEntries,
    /// Further entries of hashes shared by distinct keys.
    extra: HashMap<u128, Vec<KeyEntry>>,
    swept_at_len: usize,
    /// The shard a sweep under way goes on from (see
    /// [`KeyIndex::sweep_step`]).
    sweeping: Option<usize>,
}

/// The key index at one moment (see [`KeyIndex::capture`]): later changes
/// to the index do not show here.
#[derive(Debug)]
pub struct CapturedKeys {
    first: Captured<u128, KeyEntry, RandomState>,
    extra: Vec<(u128, KeyEntry)>,
}

impl CapturedKeys {
    /// Every entry with its hash.
    pub fn iter(&self) -> impl Iterator<Item = (u128, KeyEntry)> + '_ {
        let first = self.first.iter().map(|(h, e)| (*h, *e));
        first.chain(self.extra.iter().copied())
    }
}

impl KeyIndex {
    fn candidates(&self, hash: u128) -> impl Iterator<Item = &KeyEntry> + '_ {
        self.first
            .get(&hash)
            .into_iter()
            .chain(self.extra.get(&hash).into_iter().flatten())
    }

    /// The index as it is now, sharing its shards: O(shards) pointer
    /// copies plus the few colliding entries (what a checkpoint captures
    /// under the queue lock).
    pub fn capture(&self) -> CapturedKeys {
        CapturedKeys {
            first: self.first.capture(),
            extra: self
                .extra
                .iter()
                .flat_map(|(h, v)| v.iter().map(move |e| (*h, *e)))
                .collect(),
        }
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
        // One lookup in the common cases (a new key, or the key's own
        // entry replaced); a hash shared with another key goes aside.
        let Some(first) = self.first.insert_new(hash, entry) else {
            return;
        };
        if Some(first.id) == replaces {
            *first = entry;
            return;
        }
        let extra = self.extra.entry(hash).or_default();
        match extra.iter_mut().find(|e| Some(e.id) == replaces) {
            Some(e) => *e = entry,
            None => extra.push(entry),
        }
    }

    /// Forgets the key of job `id` under `hash`.
    pub fn remove(&mut self, hash: u128, id: u64) {
        let first_is_gone = self.first.get(&hash).is_some_and(|e| e.id == id);
        if let Some(extra) = self.extra.get_mut(&hash) {
            extra.retain(|e| e.id != id);
            let promoted = if first_is_gone { extra.pop() } else { None };
            if extra.is_empty() {
                self.extra.remove(&hash);
            }
            if let Some(p) = promoted {
                self.first.insert(hash, p);
                return;
            }
        }
        if first_is_gone {
            self.first.remove(&hash);
        }
    }

    /// Number of keys known (O(1) but for the rare hashes shared by
    /// several keys).
    pub fn len(&self) -> usize {
        self.first.len() + self.extra.values().map(Vec::len).sum::<usize>()
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Every entry with its hash.
    pub fn iter(&self) -> impl Iterator<Item = (u128, KeyEntry)> + '_ {
        let first = self.first.iter().map(|(h, e)| (*h, *e));
        first.chain(
            self.extra
                .iter()
                .flat_map(|(h, v)| v.iter().map(move |e| (*h, *e))),
        )
    }

    /// Calls `f` with every entry of the shards from `from` on, shard by
    /// shard until about `budget` entries were visited (one shard at the
    /// least; with the last shard, also the entries that share a hash with
    /// another key), and returns the shard to go on from, or `None` once
    /// all were visited: a scan of every key split into steps of bounded
    /// cost, which a small index finishes in one.
    pub fn scan(
        &self,
        from: usize,
        budget: usize,
        mut f: impl FnMut(u128, KeyEntry),
    ) -> Option<usize> {
        let mut at = from;
        let mut visited = 0usize;
        while at < SHARDS && (at == from || visited < budget) {
            visited += self.first.shard_len(at);
            self.first.shard_iter(at).for_each(|(h, e)| f(*h, *e));
            at += 1;
        }
        if at < SHARDS {
            return Some(at);
        }
        for (h, v) in &self.extra {
            v.iter().for_each(|e| f(*h, *e));
        }
        None
    }

    /// Keeps the entries for which `keep` says yes.
    pub fn retain(&mut self, mut keep: impl FnMut(&KeyEntry) -> bool) {
        self.sweeping = None;
        while !self.sweep_step(usize::MAX, &mut keep) {}
    }

    /// One step of a sweep: keeps the entries for which `keep` says yes,
    /// among about `budget` entries of the next shards (see
    /// [`KeyIndex::scan`]). Returns whether the sweep is done.
    pub fn sweep_step(&mut self, budget: usize, mut keep: impl FnMut(&KeyEntry) -> bool) -> bool {
        let mut gone = Vec::new();
        let next = self.scan(self.sweeping.unwrap_or(0), budget, |h, e| {
            if !keep(&e) {
                gone.push((h, e.id));
            }
        });
        for (hash, id) in gone {
            self.remove(hash, id);
        }
        self.sweeping = next;
        if next.is_none() {
            self.swept_at_len = self.first.len();
        }
        next.is_none()
    }

    /// Whether a sweep is under way, or due: the index has doubled since
    /// it was last swept.
    pub fn wants_sweep(&self) -> bool {
        let len = self.first.len();
        self.sweeping.is_some() || (len > 1024 && len > 2 * self.swept_at_len)
    }

    /// Heap bytes held (approximate), for the memory report.
    pub fn heap_bytes(&self) -> usize {
        self.first.capacity() * 57 + SHARDS * 64 + self.extra.len() * 72
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
                    check: i,
                },
            );
        }
        assert!(k.wants_sweep());
        // In steps of about 300 entries.
        let mut steps = 1;
        while !k.sweep_step(300, |e| e.expires_ms >= 1000) {
            assert!(k.wants_sweep(), "a sweep under way");
            steps += 1;
        }
        assert!((9..=11).contains(&steps), "{steps} steps");
        assert_eq!(k.len(), 2000);
        assert!(!k.wants_sweep());
        k.retain(|e| e.expires_ms >= 2000);
        assert_eq!(k.len(), 1000);
    }

    #[test]
    fn colliding_keys_keep_an_entry_each() {
        let mut k = KeyIndex::default();
        let e = |id| KeyEntry {
            id,
            expires_ms: 9,
            seg: 1,
            off: id as u32,
            check: id,
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

    /// An entry of job `id` (its check is its id).
    fn entry(id: u64) -> KeyEntry {
        KeyEntry {
            id,
            expires_ms: 1,
            seg: 2,
            off: 3,
            check: id,
        }
    }

    #[test]
    fn a_capture_keeps_its_moment() {
        let e = entry;
        let mut k = KeyIndex::default();
        for i in 0..5000u64 {
            k.set(u128::from(i) * 7919, None, e(i));
        }
        // Two keys under one hash: the second is kept aside.
        k.set(42, None, e(9000));
        k.set(42, None, e(9001));
        let sorted = |v: Vec<(u128, KeyEntry)>| {
            let mut v = v;
            v.sort_unstable_by_key(|(h, e)| (*h, e.id));
            v
        };
        let before = sorted(k.iter().collect());
        let c = k.capture();
        for i in 0..2500u64 {
            k.remove(u128::from(i) * 7919, i);
        }
        k.remove(42, 9000);
        k.set(1, None, e(7000));
        assert_eq!(sorted(c.iter().collect()), before);
        assert_eq!(k.len(), 5000 - 2500 + 1 + 1);
        assert!(
            k.of_job(42, 9001).is_some(),
            "the kept-aside entry moved up"
        );
        assert!(k.of_job(0, 0).is_none());
    }

    #[test]
    fn a_scan_in_steps_visits_every_entry_once() {
        let e = entry;
        let mut k = KeyIndex::default();
        for i in 0..3000u64 {
            k.set(
                u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                None,
                e(i),
            );
        }
        k.set(5, None, e(9000));
        k.set(5, None, e(9001));
        let mut seen = Vec::new();
        let (mut from, mut steps) = (Some(0), 0);
        while let Some(at) = from {
            from = k.scan(at, 500, |_, e| seen.push(e.id));
            steps += 1;
        }
        assert!((5..=7).contains(&steps), "{steps} steps");
        // A budget above the index's size: one step.
        assert_eq!(k.scan(0, 10_000, |_, _| ()), None);
        seen.sort_unstable();
        let mut want: Vec<u64> = (0..3000).chain([9000, 9001]).collect();
        want.sort_unstable();
        assert_eq!(seen, want);
    }
}
