//! The paused queues of a store, file `PAUSED` (see `docs/format.md`).
//!
//! ```text
//! 0   [u8; 8]  magic "walqpau\0"
//! 8   u16      version (1)
//! 10  u16      count n of names (at most MAX_PAUSED)
//! 12  u32      reserved, 0
//! 16  …        n names, each: u8 length (1..=64), then the name's bytes
//!              (a valid queue name), in ascending byte order, no repeats
//! end u32      CRC-32 of every byte before it
//! ```

use super::record::valid_queue_name;
use super::{u16_at, u32_at};

/// The first eight bytes.
pub const PAUSED_MAGIC: [u8; 8] = *b"walqpau\0";
/// The version written and read.
pub const PAUSED_VERSION: u16 = 1;
/// Most names the file holds: every named queue a store can know
/// ([`crate::named::MAX_QUEUES`]) and the default queue.
pub const MAX_PAUSED: usize = crate::named::MAX_QUEUES + 1;
/// Bytes before the first name.
const HEADER_LEN: usize = 16;
/// The longest file: every name of the longest length.
pub const MAX_PAUSED_LEN: usize = HEADER_LEN + MAX_PAUSED * (1 + super::record::MAX_QUEUE_NAME) + 4;

/// Encodes the file naming `names`, or `None` if they break the rules
/// (more than [`MAX_PAUSED`], an invalid name, out of order or repeated).
pub fn encode(names: &[&str]) -> Option<Vec<u8>> {
    if names.len() > MAX_PAUSED || !ordered(names.iter().map(|n| n.as_bytes())) {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + names.len() * 16 + 4);
    out.extend_from_slice(&PAUSED_MAGIC);
    out.extend_from_slice(&PAUSED_VERSION.to_le_bytes());
    out.extend_from_slice(&u16::try_from(names.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    for name in names {
        if !valid_queue_name(name.as_bytes()) {
            return None;
        }
        out.push(u8::try_from(name.len()).ok()?);
        out.extend_from_slice(name.as_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Some(out)
}

/// Decodes and verifies the file; `None` if it is not one this build reads
/// (wrong magic, version, count or checksum, a name that is not a valid
/// queue name, names out of order, bytes left over).
pub fn decode(buf: &[u8]) -> Option<Vec<String>> {
    if buf.len() < HEADER_LEN + 4 || buf.len() > MAX_PAUSED_LEN || buf[0..8] != PAUSED_MAGIC {
        return None;
    }
    let body_end = buf.len() - 4;
    if crc32fast::hash(&buf[..body_end]) != u32_at(buf, body_end)? {
        return None;
    }
    if u16_at(buf, 8)? != PAUSED_VERSION || u32_at(buf, 12)? != 0 {
        return None;
    }
    let count = usize::from(u16_at(buf, 10)?);
    if count > MAX_PAUSED {
        return None;
    }
    let mut names: Vec<&[u8]> = Vec::with_capacity(count);
    let mut at = HEADER_LEN;
    for _ in 0..count {
        let len = usize::from(*buf.get(at)?);
        let name = buf.get(at + 1..at + 1 + len)?;
        if at + 1 + len > body_end || !valid_queue_name(name) {
            return None;
        }
        names.push(name);
        at += 1 + len;
    }
    if at != body_end || !ordered(names.iter().copied()) {
        return None;
    }
    names
        .into_iter()
        .map(|n| String::from_utf8(n.to_vec()).ok())
        .collect()
}

/// Whether `names` are in strictly ascending byte order.
fn ordered<'a>(names: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut last: Option<&[u8]> = None;
    for name in names {
        if last.is_some_and(|l| l >= name) {
            return false;
        }
        last = Some(name);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_every_bit_flip_and_cut() {
        let bytes = encode(&["default", "emails", "reports.daily"]).unwrap();
        assert_eq!(
            decode(&bytes).unwrap(),
            vec!["default", "emails", "reports.daily"]
        );
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&b), None, "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }

    #[test]
    fn none_paused_is_a_valid_file() {
        let bytes = encode(&[]).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 4);
        assert_eq!(decode(&bytes).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn refuses_to_encode_what_it_would_not_decode() {
        assert_eq!(encode(&["b", "a"]), None, "out of order");
        assert_eq!(encode(&["a", "a"]), None, "repeated");
        assert_eq!(encode(&["no spaces"]), None, "invalid name");
        let many: Vec<String> = (0..=MAX_PAUSED).map(|i| format!("q{i:05}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(encode(&many), None, "too many");
        assert!(encode(&many[..MAX_PAUSED]).is_some());
    }

    #[test]
    fn the_longest_file_fits_the_bound() {
        let many: Vec<String> = (0..MAX_PAUSED).map(|i| format!("{i:064}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let bytes = encode(&many).unwrap();
        assert_eq!(bytes.len(), MAX_PAUSED_LEN);
        assert_eq!(decode(&bytes).unwrap().len(), MAX_PAUSED);
    }

    #[test]
    fn refuses_a_valid_checksum_over_bad_names() {
        // Out-of-order names with a checksum that matches them: only the
        // order check catches it.
        let mut bytes = encode(&["a", "b"]).unwrap();
        bytes[17] = b'b';
        bytes[19] = b'a';
        let end = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bytes), None);
    }
}
