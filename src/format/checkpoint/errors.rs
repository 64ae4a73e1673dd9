//! Version 5's error section: the last error of each live job that failed
//! with one (see `docs/format.md`, "The checkpoint").
//!
//! ```text
//! E bytes (the head's u32 at offset 12), entries back to back, by id:
//! 0  8  job id (strictly increasing)
//! 8  2  error length e (1..=4096, MAX_NACK_ERROR)
//! 10 e  error text (UTF-8)
//! ```

use super::CheckpointError;
use crate::format::record::MAX_NACK_ERROR;
use crate::format::{u16_at, u64_at};

const ENTRY_FIXED: usize = 10;

/// Bytes the section takes for `errors`.
pub(super) fn len(errors: &[(u64, String)]) -> usize {
    errors.iter().map(|(_, t)| ENTRY_FIXED + t.len()).sum()
}

/// Appends the section.
pub(super) fn encode(out: &mut Vec<u8>, errors: &[(u64, String)]) {
    for (id, text) in errors {
        out.extend_from_slice(&id.to_le_bytes());
        // Texts are cut to MAX_NACK_ERROR (4096) bytes before they are kept.
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
}

/// The entries of section `b` (all of it); `Err` says what is wrong.
pub(super) fn decode(b: &[u8]) -> Result<Vec<(u64, String)>, CheckpointError> {
    let damaged = |why: &str| CheckpointError::Damaged(format!("error section: {why}"));
    let mut errors: Vec<(u64, String)> = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let (Some(id), Some(n)) = (u64_at(b, at), u16_at(b, at + 8)) else {
            return Err(damaged("an entry runs past the end"));
        };
        let n = usize::from(n);
        if n == 0 || n > MAX_NACK_ERROR {
            return Err(damaged("an error length is out of range"));
        }
        at += ENTRY_FIXED;
        let text = b
            .get(at..at + n)
            .ok_or_else(|| damaged("an error runs past the end"))?;
        let text = std::str::from_utf8(text).map_err(|_| damaged("an error is not UTF-8"))?;
        if errors.last().is_some_and(|(last, _)| *last >= id) {
            return Err(damaged("job ids not increasing"));
        }
        errors.push((id, text.to_owned()));
        at += n;
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_does_not_add_up() {
        let errors = vec![(3, "boom".to_string()), (70, "é".repeat(2048))];
        let mut b = Vec::new();
        encode(&mut b, &errors);
        assert_eq!(b.len(), len(&errors));
        assert_eq!(decode(&b), Ok(errors));
        assert_eq!(decode(&[]), Ok(Vec::new()));
        let entry = |id: u64, text: &[u8]| {
            [
                &id.to_le_bytes()[..],
                &(text.len() as u16).to_le_bytes(),
                text,
            ]
            .concat()
        };
        for bad in [
            entry(3, b""),
            entry(3, &[b'x'; MAX_NACK_ERROR + 1]),
            entry(3, &[0xff]),
            entry(3, b"ab")[..11].to_vec(),
            entry(3, b"a")[..9].to_vec(),
            [entry(3, b"a"), entry(3, b"b")].concat(),
        ] {
            assert!(decode(&bad).is_err(), "{bad:?}");
        }
    }
}
