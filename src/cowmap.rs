//! Hash maps that a checkpoint captures by pointer: copy-on-write shards.
//!
//! A periodic checkpoint captures the queue's index under the queue lock
//! and lays it out after the lock is released. The maps that grow with a
//! backlog (due times of waiting jobs, levels, groups, the queues of named
//! queues' jobs) are kept in [`SHARDS`] shards, each a `HashMap` behind an
//! `Arc`: a capture clones the shard pointers, O(1) in the number of
//! entries, and the first change to a shard that a capture still holds
//! copies that shard alone (`Arc::make_mut`), about 1/256 of the map.
//!
//! Invariants: `len` is the number of entries over all shards; an entry
//! lives in the shard its key's [`ShardKey::shard`] names; `shards` is
//! empty until the first insert (a map that is never used, as the level
//! map of a queue without priorities, allocates nothing).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash};
use std::sync::Arc;

use crate::idhash::IdHasher;

/// Number of shards of a map in use.
pub const SHARDS: usize = 256;

/// A key that names its shard.
pub trait ShardKey: Copy + Eq + Hash {
    /// The shard, below [`SHARDS`].
    fn shard(self) -> usize;
}

impl ShardKey for u64 {
    /// Job ids are sequential: their low bits spread them evenly.
    fn shard(self) -> usize {
        (self % SHARDS as u64) as usize
    }
}

impl ShardKey for u128 {
    /// Group hashes are uniform.
    fn shard(self) -> usize {
        (self % SHARDS as u128) as usize
    }
}

type Shard<K, V, S> = Arc<HashMap<K, V, S>>;

/// A hash map in copy-on-write shards (see the module docs).
#[derive(Debug)]
pub struct CowMap<K, V, S = BuildHasherDefault<IdHasher>> {
    shards: Vec<Shard<K, V, S>>,
    len: usize,
}

/// A map keyed by job id.
pub type CowIdMap<V> = CowMap<u64, V>;

impl<K, V, S> Default for CowMap<K, V, S> {
    fn default() -> Self {
        CowMap {
            shards: Vec::new(),
            len: 0,
        }
    }
}

/// A map at one moment (see [`CowMap::capture`]): later changes to the map
/// do not show here.
#[derive(Debug)]
pub struct Captured<K, V, S = BuildHasherDefault<IdHasher>> {
    shards: Vec<Shard<K, V, S>>,
}

impl<K, V, S> Captured<K, V, S> {
    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.shards.iter().flat_map(|m| m.iter())
    }
}

impl<K: ShardKey, V: Clone, S: BuildHasher + Default + Clone> CowMap<K, V, S> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.shards.get(key.shard())?.get(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// The shard of `key`, for a change: copied first if a capture still
    /// holds it. `None` before the first insert.
    fn shard_mut(&mut self, key: &K) -> Option<&mut HashMap<K, V, S>> {
        self.shards.get_mut(key.shard()).map(Arc::make_mut)
    }

    /// The value of `key`, to change in place.
    /// (A miss may copy a shard that a capture holds, as a hit would: at
    /// most once per shard and capture.)
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.shard_mut(key)?.get_mut(key)
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.shards.is_empty() {
            self.shards = (0..SHARDS).map(|_| Shard::default()).collect();
        }
        let old = self.shard_mut(&key)?.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Inserts `value` if `key` has none and returns `None`; otherwise
    /// leaves the map as it is and returns the value `key` has, to change
    /// in place. One lookup either way.
    pub fn insert_new(&mut self, key: K, value: V) -> Option<&mut V> {
        if self.shards.is_empty() {
            self.shards = (0..SHARDS).map(|_| Shard::default()).collect();
        }
        // The fields apart, so `len` can change while the entry is held.
        let shard = Arc::make_mut(&mut self.shards[key.shard()]);
        match shard.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => Some(o.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(value);
                self.len += 1;
                None
            }
        }
    }

    /// Removes `key`; returns the value it had.
    /// (A miss may copy a shard, as for [`CowMap::get_mut`].)
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let old = self.shard_mut(key)?.remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.shards.iter().flat_map(|m| m.iter())
    }

    /// The entries of shard `shard` (below [`SHARDS`]), in no particular
    /// order: for work split into steps of a few shards each.
    pub fn shard_iter(&self, shard: usize) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.shards.get(shard).into_iter().flat_map(|m| m.iter())
    }

    /// Number of entries in shard `shard`.
    pub fn shard_len(&self, shard: usize) -> usize {
        self.shards.get(shard).map_or(0, |m| m.len())
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Entries the shards have room for (for memory reports).
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|m| m.capacity()).sum()
    }

    /// Gives memory back: each shard shrinks to its share of `capacity`
    /// (or its own length, if more) when it holds over twice that; an
    /// empty map frees its shards.
    pub fn shrink_to(&mut self, capacity: usize) {
        if self.len == 0 {
            self.shards = Vec::new();
            return;
        }
        let share = capacity.div_ceil(SHARDS);
        for m in &mut self.shards {
            let keep = share.max(m.len());
            if m.capacity() > 2 * keep {
                Arc::make_mut(m).shrink_to(keep);
            }
        }
    }

    /// The map as it is now, sharing its shards: O([`SHARDS`]).
    pub fn capture(&self) -> Captured<K, V, S> {
        Captured {
            shards: self.shards.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map_and_a_capture_keeps_its_moment() {
        let mut m: CowIdMap<u64> = CowIdMap::default();
        let mut model = std::collections::HashMap::new();
        assert!(m.capture().iter().next().is_none());
        let mut captures = Vec::new();
        let mut x = 7u64;
        for step in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (x >> 33) % 3_000;
            match x % 4 {
                0 | 1 => assert_eq!(m.insert(key, step), model.insert(key, step)),
                2 => assert_eq!(m.remove(&key), model.remove(&key)),
                _ => {
                    if let Some(v) = m.get_mut(&key) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&key) {
                        *v += 1;
                    }
                }
            }
            assert_eq!(m.len(), model.len());
            if step % 2_500 == 0 {
                captures.push((m.capture(), model.clone()));
            }
        }
        let all: std::collections::HashMap<u64, u64> = m.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(all, model);
        for (captured, then) in &captures {
            let got: std::collections::HashMap<u64, u64> =
                captured.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(&got, then, "a capture changed after it was taken");
        }
    }

    #[test]
    fn insert_new_keeps_what_is_there_and_shards_list_their_own() {
        let mut m: CowMap<u128, u32, std::collections::hash_map::RandomState> = CowMap::default();
        assert_eq!(m.shard_iter(5).count(), 0, "before the first insert");
        assert!(m.insert_new(5, 1).is_none());
        let held = m.capture();
        *m.insert_new(5, 2).expect("present") += 10;
        assert!(m.insert_new(5 + SHARDS as u128, 3).is_none());
        assert_eq!(m.get(&5), Some(&11));
        assert_eq!(m.len(), 2);
        assert_eq!(m.shard_len(5), 2);
        let mut five: Vec<u128> = m.shard_iter(5).map(|(k, _)| *k).collect();
        five.sort_unstable();
        assert_eq!(five, [5, 5 + SHARDS as u128]);
        assert_eq!(m.shard_len(6), 0);
        assert_eq!(held.iter().collect::<Vec<_>>(), [(&5, &1)]);
    }

    #[test]
    fn an_unused_map_allocates_nothing_and_a_change_copies_one_shard() {
        let mut m: CowIdMap<u8> = CowIdMap::default();
        assert_eq!(m.capacity(), 0);
        assert_eq!(m.remove(&3), None);
        assert!(m.get_mut(&3).is_none());
        assert!(m.shards.is_empty());
        m.insert(3, 1);
        let held = m.capture();
        assert!(m.get(&259).is_none());
        assert!(Arc::ptr_eq(&m.shards[3], &held.shards[3]));
        m.insert(259, 2);
        assert!(!Arc::ptr_eq(&m.shards[3], &held.shards[3]));
        assert!(Arc::ptr_eq(&m.shards[4], &held.shards[4]));
        assert_eq!(held.iter().count(), 1);
        m.shrink_to(0);
        assert_eq!(m.remove(&3), Some(1));
        assert_eq!(m.remove(&259), Some(2));
        m.shrink_to(0);
        assert!(m.shards.is_empty(), "an emptied map frees its shards");
    }
}
