//! A fast hasher for maps keyed by job ids.
//!
//! Job ids are sequential integers chosen by walq, not by users, so the
//! flooding resistance of SipHash buys nothing here; a multiply-shift mix
//! is enough to spread them over the table.

use std::hash::{BuildHasherDefault, Hasher};

/// Hashes one `u64` with a multiplicative mix (Fibonacci hashing).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        let x = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
}

/// A `HashMap` keyed by job id.
pub type IdMap<V> = std::collections::HashMap<u64, V, BuildHasherDefault<IdHasher>>;
/// A `HashSet` of job ids.
pub type IdSet = std::collections::HashSet<u64, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread() {
        let mut buckets = [0u32; 64];
        for id in 0..64_000u64 {
            let mut h = IdHasher::default();
            h.write_u64(id);
            buckets[(h.finish() >> 58) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 500 && n < 1500), "{buckets:?}");
    }
}
