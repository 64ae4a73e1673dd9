//! The bytes on disk: segment headers, frames and record bodies.
//!
//! Pure code: no files, no clock, no threads. Everything here is described
//! byte by byte in `docs/format.md`; the fuzz targets decode through it.
//! All integers are little-endian.

pub mod checkpoint;
pub mod close;
pub mod done;
pub mod frame;
pub mod header;
pub mod id_floor;
pub mod paused;
pub(crate) mod range_crc;
pub mod record;
pub(crate) mod resync;
pub mod store_id;

/// The format version written by this build, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Job ids and LSNs stay below this bound; a file claiming more is corrupt
/// (it leaves room to count up without overflow).
pub const MAX_ID: u64 = 1 << 62;

pub(crate) fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

pub(crate) fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(bytes);
    Some(u32::from_le_bytes(a))
}

pub(crate) fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(bytes);
    Some(u64::from_le_bytes(a))
}
