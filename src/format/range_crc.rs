//! Frame checksums over any range of a buffer in bounded time, for the
//! byte-by-byte search after damage ([`crate::format::resync`]).
//!
//! The search checks a candidate frame at every plausible offset, and a
//! candidate's header may claim a length up to the segment's size: checked
//! one by one, crafted bytes would cost the square of the damaged span.
//! CRC-32 is affine over GF(2), so the checksum of any range follows from
//! checksums of prefixes (zlib's `crc32_combine`):
//!
//! ```text
//! crc(A ‖ B) = crc(A) · x^(8·|B|) ⊕ crc(B)          (mod the CRC polynomial)
//! crc(S ‖ bytes[s..e]) = (crc(S) ⊕ P(s)) · x^(8·(e−s)) ⊕ P(e)
//! ```
//!
//! where `P(i)` is the checksum of the buffer's first `i` bytes (from
//! the search's start). [`RangeCrc`] keeps `P` at every [`BLOCK`]-th
//! byte, extended as far as a candidate needs and never recomputed, and
//! finds `P(i)` from the block before `i` (fewer than [`BLOCK`] bytes).
//! The power of `x` comes from three tables of 2,048, 2,048 and 1,024
//! entries. So a candidate costs two checksums of under [`BLOCK`] bytes
//! and at most three multiplications, whatever length it claims, and a whole search
//! hashes each byte of the buffer about once more.
//!
//! The result equals [`crate::format::frame::checksum`] of the same bytes;
//! the unit tests below compare the two over random ranges.

use std::sync::OnceLock;

/// The distance between stored prefix checksums, in bytes.
pub(crate) const BLOCK: usize = 256;

/// The CRC-32 polynomial, reflected (as crc32fast and zlib use it).
const POLY: u32 = 0xedb8_8320;
/// The polynomial `1` in the reflected representation.
const ONE: u32 = 1 << 31;

/// Prefix checksums of `bytes`, for [`RangeCrc::checksum`].
pub(crate) struct RangeCrc<'a> {
    bytes: &'a [u8],
    /// `prefix[k]` is the checksum of `bytes[..k * BLOCK]`.
    prefix: Vec<u32>,
    /// Bytes hashed so far (the prefixes and the partial blocks), for the
    /// tests that bound a search's work.
    hashed: usize,
}

impl<'a> RangeCrc<'a> {
    /// Prefix checksums of `bytes`, none computed yet.
    pub(crate) fn new(bytes: &'a [u8]) -> RangeCrc<'a> {
        RangeCrc {
            bytes,
            prefix: vec![0],
            hashed: 0,
        }
    }

    /// The checksum of `seed ‖ bytes[range]`, where `seed_crc` is the
    /// checksum of the bytes `seed` (for a frame: its segment id).
    /// `None` when the range is not inside the buffer.
    pub(crate) fn checksum(&mut self, seed_crc: u32, start: usize, end: usize) -> Option<u32> {
        if start > end || end > self.bytes.len() {
            return None;
        }
        let at_start = self.prefix_at(start);
        let at_end = self.prefix_at(end);
        Some(shift(seed_crc ^ at_start, end - start) ^ at_end)
    }

    /// Bytes hashed so far.
    pub(crate) fn hashed(&self) -> usize {
        self.hashed
    }

    /// The checksum of `bytes[..i]` (`i` at most the buffer's length).
    fn prefix_at(&mut self, i: usize) -> u32 {
        let block = i / BLOCK;
        while self.prefix.len() <= block {
            let k = self.prefix.len();
            let from = (k - 1) * BLOCK;
            let next = continue_crc(self.prefix[k - 1], &self.bytes[from..from + BLOCK]);
            self.hashed += BLOCK;
            self.prefix.push(next);
        }
        let from = block * BLOCK;
        self.hashed += i - from;
        continue_crc(self.prefix[block], &self.bytes[from..i])
    }
}

/// The checksum of `a ‖ b` from `crc_a`, the checksum of `a`.
fn continue_crc(crc_a: u32, b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc_a);
    h.update(b);
    h.finalize()
}

/// The checksum `crc` of some bytes, moved past `n` more bytes:
/// `crc · x^(8n)` modulo the polynomial.
fn shift(crc: u32, n: usize) -> u32 {
    let n = n as u64;
    let t = tables();
    let mut p = t.low[(n & 0x7ff) as usize];
    if n >> 11 != 0 {
        p = multiply(p, t.mid[((n >> 11) & 0x7ff) as usize]);
    }
    let mut high = n >> 22;
    while high != 0 {
        // Below 2^32 bytes this runs once; above, once per 2^32 bytes.
        let step = high.min(1023);
        p = multiply(p, t.high[step as usize]);
        high -= step;
    }
    multiply(p, crc)
}

/// `x^(8·j)`, `x^(8·2^11·j)` and `x^(8·2^22·j)` for each index `j`.
struct Tables {
    low: Vec<u32>,
    mid: Vec<u32>,
    high: Vec<u32>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let powers = |step: u32, count: usize| {
            let mut out = Vec::with_capacity(count);
            let mut p = ONE;
            for _ in 0..count {
                out.push(p);
                p = multiply(p, step);
            }
            out
        };
        let x8 = x_to_the_2_to_the(3);
        let low = powers(x8, 2048);
        let mid = powers(x_to_the_2_to_the(3 + 11), 2048);
        let high = powers(x_to_the_2_to_the(3 + 22), 1024);
        Tables { low, mid, high }
    })
}

/// `x^(2^k)` modulo the polynomial, by squaring `x`.
fn x_to_the_2_to_the(k: u32) -> u32 {
    let mut p = ONE >> 1; // x
    for _ in 0..k {
        p = multiply(p, p);
    }
    p
}

/// `a · b` modulo the polynomial (zlib's `multmodp`), both reflected.
fn multiply(a: u32, mut b: u32) -> u32 {
    let mut m = ONE;
    let mut p = 0;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        if a & (m - 1) == 0 {
            break;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(seed: &[u8], bytes: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(seed);
        h.update(bytes);
        h.finalize()
    }

    /// A deterministic byte stream (xorshift), so a failure repeats.
    fn noise(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn the_checksum_of_any_range_matches_hashing_it() {
        let bytes = noise(5 * BLOCK + 77, 0x9e37_79b9_7f4a_7c15);
        let seed = 42u32.to_le_bytes();
        let seed_crc = direct(&seed, &[]);
        let mut crc = RangeCrc::new(&bytes);
        let points = [0, 1, 3, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 5];
        let ends = points.iter().copied().chain([bytes.len() - 1, bytes.len()]);
        for end in ends {
            for &start in points.iter().filter(|&&s| s <= end) {
                let want = direct(&seed, &bytes[start..end]);
                assert_eq!(
                    crc.checksum(seed_crc, start, end),
                    Some(want),
                    "range {start}..{end}"
                );
            }
        }
    }

    #[test]
    fn long_ranges_match_across_every_table() {
        // 3 MiB + a bit: lengths that use the middle table and the high one.
        let bytes = noise((3 << 20) + 4099, 7);
        let seed_crc = direct(&9u32.to_le_bytes(), &[]);
        let mut crc = RangeCrc::new(&bytes);
        for (start, end) in [(0, bytes.len()), (5, (1 << 22) - 3), (4096, 4096 + 2048)] {
            let end = end.min(bytes.len());
            let want = direct(&9u32.to_le_bytes(), &bytes[start..end]);
            assert_eq!(crc.checksum(seed_crc, start, end), Some(want));
        }
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn shifting_by_the_high_table_matches_repeated_doubling() {
        // 2^32 + 5 bytes of zeros after a checksum, without the bytes.
        let n = (1usize << 32) + 5;
        let mut want = 0x1234_5678;
        let mut left = n as u64;
        let mut k = 3;
        while left != 0 {
            if left & 1 != 0 {
                want = multiply(x_to_the_2_to_the(k), want);
            }
            left >>= 1;
            k += 1;
        }
        assert_eq!(shift(0x1234_5678, n), want);
    }

    #[test]
    fn ranges_outside_the_buffer_have_no_checksum() {
        let bytes = [1u8; 10];
        let mut crc = RangeCrc::new(&bytes);
        assert_eq!(crc.checksum(0, 3, 11), None);
        assert_eq!(crc.checksum(0, 5, 4), None);
        assert!(crc.checksum(0, 10, 10).is_some());
    }
}
