//! The bytes of the schedule file `schedules.bin` (pure: no I/O). The
//! layout is documented in `docs/format.md`, section "Schedules".

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::definition::{Missed, Schedule, MAX_GRACE_SECS, MAX_NAME_LEN, MAX_SCHEDULE_PAYLOAD};
use super::spec::{Spec, MAX_CRON_LEN};
use crate::error::{Error, ErrorKind, Result};

/// The file's magic bytes.
pub const MAGIC: &[u8; 8] = b"walqsch\0";
/// The version this build writes and reads.
pub const VERSION: u16 = 1;
/// Most schedules one queue directory holds.
pub const MAX_SCHEDULES: usize = 1024;
const HEADER_LEN: usize = 16;
const ENTRY_FIXED_LEN: usize = 32;
const CRC_LEN: usize = 4;
/// Longest valid file: every entry at its limits.
pub const MAX_FILE_LEN: usize = HEADER_LEN
    + MAX_SCHEDULES * (ENTRY_FIXED_LEN + MAX_NAME_LEN + MAX_CRON_LEN + MAX_SCHEDULE_PAYLOAD)
    + CRC_LEN;

const SPEC_CRON: u8 = 1;
const SPEC_EVERY: u8 = 2;
const MISSED_RUN_ONCE: u8 = 1;
const MISSED_SKIP: u8 = 2;

/// A registered schedule and how far it has run.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub schedule: Schedule,
    /// Ticks at or before this time (seconds since the epoch) have been
    /// dealt with: enqueued, or skipped as missed. Set to the registration
    /// time when the schedule is first registered.
    pub cursor: u64,
}

/// The whole file for `entries`.
pub(crate) fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * 64 + CRC_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        encode_entry(&mut out, e);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn encode_entry(out: &mut Vec<u8>, e: &Entry) {
    let s = &e.schedule;
    let cron = s.spec.cron_text().unwrap_or("");
    let (kind, period) = match s.spec.period() {
        Some(p) => (SPEC_EVERY, p.as_secs()),
        None => (SPEC_CRON, 0),
    };
    let missed = match s.missed {
        Missed::RunOnce => MISSED_RUN_ONCE,
        Missed::Skip => MISSED_SKIP,
    };
    // Lengths are bounded by validation (name 128, cron 256, payload 16 KiB).
    out.extend_from_slice(&(s.name.len() as u16).to_le_bytes());
    out.extend_from_slice(&(cron.len() as u16).to_le_bytes());
    out.extend_from_slice(&(s.payload.len() as u32).to_le_bytes());
    out.push(kind);
    out.push(missed);
    out.extend_from_slice(&(s.max_attempts.unwrap_or(0) as u16).to_le_bytes());
    out.extend_from_slice(&(s.grace_secs as u32).to_le_bytes());
    out.extend_from_slice(&period.to_le_bytes());
    out.extend_from_slice(&e.cursor.to_le_bytes());
    out.extend_from_slice(s.name.as_bytes());
    out.extend_from_slice(cron.as_bytes());
    out.extend_from_slice(&s.payload);
}

/// Reads a little-endian integer of `N` bytes at `at` (the caller has
/// checked the length).
fn le<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&bytes[at..at + N]);
    a
}

/// Decodes the file read from `path`; every failure is an error naming
/// `path` and the offset of what is wrong.
pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Vec<Entry>> {
    let corrupt = |off: usize, what: String| Error::corrupt(path, off as u64, what);
    if bytes.len() < HEADER_LEN + CRC_LEN || &bytes[..8] != MAGIC {
        return Err(corrupt(
            0,
            "not a walq schedule file (bad magic or too short)".into(),
        ));
    }
    let version = u16::from_le_bytes(le(bytes, 8));
    if version > VERSION {
        return Err(Error::new(
            ErrorKind::UnsupportedVersion,
            format!("schedule file version {version} is newer than this build reads ({VERSION})"),
        )
        .with_path(path));
    }
    if bytes.len() > MAX_FILE_LEN {
        return Err(corrupt(
            0,
            format!("{} bytes is over the limit of {MAX_FILE_LEN}", bytes.len()),
        ));
    }
    let body = bytes.len() - CRC_LEN;
    let stored = u32::from_le_bytes(le(bytes, body));
    if crc32fast::hash(&bytes[..body]) != stored {
        return Err(corrupt(
            body,
            "checksum mismatch: the schedule file is damaged".into(),
        ));
    }
    if version == 0 || u16::from_le_bytes(le(bytes, 10)) != 0 {
        return Err(corrupt(8, "version 0 or nonzero reserved bytes".into()));
    }
    let count = u32::from_le_bytes(le(bytes, 12)) as usize;
    if count > MAX_SCHEDULES {
        return Err(corrupt(
            12,
            format!("{count} schedules is over the limit of {MAX_SCHEDULES}"),
        ));
    }
    let mut entries = Vec::with_capacity(count);
    let mut names = HashSet::new();
    let mut at = HEADER_LEN;
    for _ in 0..count {
        let (entry, len) = decode_entry(&bytes[..body], at).map_err(|what| corrupt(at, what))?;
        if !names.insert(entry.schedule.name.clone()) {
            return Err(corrupt(
                at,
                format!("schedule {:?} appears twice", entry.schedule.name),
            ));
        }
        entries.push(entry);
        at += len;
    }
    if at != body {
        return Err(corrupt(
            at,
            format!("{} unexpected bytes after the last schedule", body - at),
        ));
    }
    Ok(entries)
}

/// One entry at `at`: the entry and its length, or what is wrong.
fn decode_entry(bytes: &[u8], at: usize) -> std::result::Result<(Entry, usize), String> {
    let fixed = bytes
        .get(at..at + ENTRY_FIXED_LEN)
        .ok_or("schedule entry cut short")?;
    let name_len = usize::from(u16::from_le_bytes(le(fixed, 0)));
    let cron_len = usize::from(u16::from_le_bytes(le(fixed, 2)));
    let payload_len = u32::from_le_bytes(le(fixed, 4)) as usize;
    if name_len > MAX_NAME_LEN || cron_len > MAX_CRON_LEN || payload_len > MAX_SCHEDULE_PAYLOAD {
        return Err(format!(
            "lengths out of range (name {name_len}, cron {cron_len}, payload {payload_len})"
        ));
    }
    let len = ENTRY_FIXED_LEN + name_len + cron_len + payload_len;
    let var = bytes
        .get(at + ENTRY_FIXED_LEN..at + len)
        .ok_or("schedule entry cut short")?;
    let name = std::str::from_utf8(&var[..name_len]).map_err(|_| "name is not UTF-8")?;
    let cron = std::str::from_utf8(&var[name_len..name_len + cron_len])
        .map_err(|_| "cron expression is not UTF-8")?;
    let period = u64::from_le_bytes(le(fixed, 16));
    let spec = match fixed[8] {
        SPEC_CRON if period == 0 => Spec::cron(cron),
        SPEC_EVERY if cron_len == 0 => Spec::every(Duration::from_secs(period)),
        k => {
            return Err(format!(
                "unknown schedule kind {k} (or a field it must not have)"
            ))
        }
    }
    .map_err(|e| e.to_string())?;
    let missed = match fixed[9] {
        MISSED_RUN_ONCE => Missed::RunOnce,
        MISSED_SKIP => Missed::Skip,
        m => return Err(format!("unknown missed-tick policy {m}")),
    };
    let mut schedule = Schedule::new(name, spec)
        .map_err(|e| e.to_string())?
        .payload(&var[name_len + cron_len..])
        .missed(missed);
    let attempts = u16::from_le_bytes(le(fixed, 10));
    if attempts != 0 {
        schedule = schedule
            .max_attempts(u32::from(attempts))
            .map_err(|e| e.to_string())?;
    }
    let grace = u64::from(u32::from_le_bytes(le(fixed, 12)));
    if grace > MAX_GRACE_SECS {
        return Err(format!(
            "grace of {grace} s is over the limit of {MAX_GRACE_SECS}"
        ));
    }
    schedule.grace_secs = grace;
    let cursor = u64::from_le_bytes(le(fixed, 24));
    Ok((Entry { schedule, cursor }, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        let a = Schedule::cron("nightly", "0 3 * * *")
            .unwrap()
            .payload(b"report".to_vec())
            .max_attempts(3)
            .unwrap();
        let b = Schedule::every("tick", Duration::from_secs(30))
            .unwrap()
            .missed(Missed::Skip)
            .grace(Duration::from_secs(5))
            .unwrap();
        vec![
            Entry {
                schedule: a,
                cursor: 1_700_000_000,
            },
            Entry {
                schedule: b,
                cursor: 7,
            },
        ]
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&sample());
        let back = decode(&bytes, Path::new("s")).unwrap();
        assert_eq!(encode(&back), bytes);
        assert_eq!(back[0].schedule.spec.cron_text(), Some("0 3 * * *"));
        assert_eq!(back[0].schedule.max_attempts, Some(3));
        assert_eq!(back[1].schedule.missed, Missed::Skip);
        assert_eq!(back[1].schedule.grace_secs, 5);
        assert_eq!(back[1].cursor, 7);
        assert!(decode(&encode(&[]), Path::new("s")).unwrap().is_empty());
    }

    #[test]
    fn every_flipped_bit_and_cut_is_an_error_naming_the_file() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let err = decode(&b, Path::new("dir/schedules.bin")).unwrap_err();
                assert_eq!(err.path(), Some(Path::new("dir/schedules.bin")));
            }
            let err = decode(&bytes[..i], Path::new("dir/schedules.bin")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "cut at {i}");
        }
    }

    /// Damage behind a valid checksum (what a bug or a hand edit could
    /// write) reaches every field check: never a panic, and either a
    /// clean decode or an error naming the file.
    #[test]
    fn any_byte_behind_a_valid_crc_decodes_or_is_an_error() {
        let bytes = encode(&sample());
        let body = bytes.len() - CRC_LEN;
        let path = Path::new("dir/schedules.bin");
        let (mut ok, mut errors) = (0, 0);
        for i in 0..body {
            for v in [0u8, 1, 2, 3, 0x7f, 0x80, 0xff, bytes[i] ^ 0x20] {
                let mut b = bytes.clone();
                b[i] = v;
                let crc = crc32fast::hash(&b[..body]);
                b[body..].copy_from_slice(&crc.to_le_bytes());
                match decode(&b, path) {
                    Ok(entries) => {
                        ok += 1;
                        assert_eq!(decode(&encode(&entries), path).unwrap().len(), 2);
                    }
                    Err(e) => {
                        errors += 1;
                        assert_eq!(e.path(), Some(path));
                    }
                }
            }
        }
        assert!(ok > 0 && errors > 0, "{ok} decoded, {errors} refused");
    }

    #[test]
    fn newer_version_is_refused_as_such() {
        let mut b = encode(&sample());
        b[8] = 2;
        let err = decode(&b, Path::new("s")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedVersion);
    }
}
