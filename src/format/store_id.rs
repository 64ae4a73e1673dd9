//! The store's identity, file `STORE_ID` (see `docs/format.md`).
//!
//! ```text
//! 0   [u8; 8]  magic "walqsid\0"
//! 8   u16      version (1)
//! 10  u16      reserved, 0
//! 12  [u8; 16] the store id: random bytes drawn when the file was made
//! 28  u32      CRC-32 of bytes 0..28
//! ```

use super::{u16_at, u32_at};

/// Length of the record (the whole file).
pub const STORE_ID_LEN: usize = 32;
/// The first eight bytes.
pub const STORE_ID_MAGIC: [u8; 8] = *b"walqsid\0";
/// The version written and read.
pub const STORE_ID_VERSION: u16 = 1;

/// Encodes the record of store id `id`.
pub fn encode(id: [u8; 16]) -> [u8; STORE_ID_LEN] {
    let mut out = [0u8; STORE_ID_LEN];
    out[0..8].copy_from_slice(&STORE_ID_MAGIC);
    out[8..10].copy_from_slice(&STORE_ID_VERSION.to_le_bytes());
    out[12..28].copy_from_slice(&id);
    let crc = crc32fast::hash(&out[0..28]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and verifies a record; `None` if it is not one this build
/// reads (wrong length, magic, version or checksum).
pub fn decode(buf: &[u8]) -> Option<[u8; 16]> {
    if buf.len() != STORE_ID_LEN || buf[0..8] != STORE_ID_MAGIC {
        return None;
    }
    if u16_at(buf, 8)? != STORE_ID_VERSION || u16_at(buf, 10)? != 0 {
        return None;
    }
    if crc32fast::hash(&buf[0..28]) != u32_at(buf, 28)? {
        return None;
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&buf[12..28]);
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_every_bit_flip_and_cut() {
        let id = *b"0123456789abcdef";
        let bytes = encode(id);
        assert_eq!(decode(&bytes), Some(id));
        for bit in 0..STORE_ID_LEN * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&b), None, "bit {bit}");
        }
        for cut in 0..STORE_ID_LEN {
            assert_eq!(decode(&bytes[..cut]), None);
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }
}
