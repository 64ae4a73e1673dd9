//! The headers a job's messages carry, and job ids.

use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::HeaderMap;

/// The job id (stable over every copy of the job).
pub(crate) const ID: &str = "Walq-Id";
/// Which copy of the job this message is (0 for the enqueued one).
pub(crate) const COPY: &str = "Walq-Copy";
/// The job's own max attempts.
pub(crate) const MAX_ATTEMPTS: &str = "Walq-Max-Attempts";
/// The idempotency key, hex.
pub(crate) const KEY: &str = "Walq-Key";
/// Attempts made: on a dead letter, all of them; on a retry's copy, those
/// before it (absent: none).
pub(crate) const ATTEMPTS: &str = "Walq-Attempts";
/// The last error, on a dead letter.
pub(crate) const ERROR: &str = "Walq-Error";
/// When it was dead-lettered (ms), on a dead letter.
pub(crate) const DEAD_MS: &str = "Walq-Dead-Ms";
/// When it was enqueued (ms).
pub(crate) const ENQUEUED_MS: &str = "Walq-Enqueued-Ms";

/// What a job message says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobHeaders {
    pub(crate) id: u64,
    pub(crate) copy: u32,
    pub(crate) max_attempts: u32,
    pub(crate) key: Option<Vec<u8>>,
    /// Attempts the job made before this copy (0 for the enqueued one):
    /// a copy whose record aged out of the bucket while it waited (a
    /// backoff longer than `retention`) rebuilds its record with them, so
    /// the job's max attempts still hold.
    pub(crate) attempts: u32,
}

impl JobHeaders {
    /// The headers of a message carrying this copy.
    pub(crate) fn to_map(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ID, self.id.to_string().as_str());
        h.insert(COPY, self.copy.to_string().as_str());
        h.insert(MAX_ATTEMPTS, self.max_attempts.to_string().as_str());
        if let Some(key) = &self.key {
            h.insert(KEY, hex(key).as_str());
        }
        if self.attempts > 0 {
            h.insert(ATTEMPTS, self.attempts.to_string().as_str());
        }
        h
    }

    /// Reads them back; `None` if the message is not a walq job.
    pub(crate) fn parse(h: Option<&HeaderMap>) -> Option<JobHeaders> {
        let h = h?;
        Some(JobHeaders {
            id: get(h, ID)?,
            copy: get(h, COPY)?,
            max_attempts: get(h, MAX_ATTEMPTS)?,
            key: h.get(KEY).and_then(|v| unhex(v.as_str())),
            attempts: get(h, ATTEMPTS).unwrap_or(0),
        })
    }
}

/// A header parsed as a number.
pub(crate) fn get<T: std::str::FromStr>(h: &HeaderMap, name: &str) -> Option<T> {
    h.get(name)?.as_str().parse().ok()
}

/// Bytes as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex back to bytes; `None` unless every character is a hex digit.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone also takes a sign: "+f" would be 0x0f.
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An error text fit for a header value: one line, at most `max` bytes.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    while s.len() > max {
        s.pop();
    }
    s
}

/// The id of a job enqueued with idempotency key `key`: the same for
/// every enqueue with that key (FNV-1a, 63 bits, never 0).
pub(crate) fn id_of_key(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in b"walq-key\0".iter().chain(key) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 1).max(1)
}

/// A fresh random id (63 bits, never 0). The job bucket's create refuses
/// a taken id, and the caller draws again.
pub(crate) fn random_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let h = JobHeaders {
            id: 42,
            copy: 3,
            max_attempts: 5,
            key: Some(b"k\x00y".to_vec()),
            attempts: 2,
        };
        assert_eq!(JobHeaders::parse(Some(&h.to_map())), Some(h.clone()));
        let first = JobHeaders { attempts: 0, ..h };
        assert_eq!(first.to_map().get(ATTEMPTS), None);
        assert_eq!(JobHeaders::parse(Some(&first.to_map())), Some(first));
        assert_eq!(JobHeaders::parse(Some(&HeaderMap::new())), None);
        assert_eq!(unhex("0"), None);
    }

    #[test]
    fn unhex_takes_hex_digits_only() {
        assert_eq!(unhex("00fF"), Some(vec![0, 255]));
        assert_eq!(unhex("+f"), None);
        assert_eq!(unhex("+f+f"), None);
        assert_eq!(unhex("-1"), None);
        assert_eq!(unhex("é0"), None);
    }

    #[test]
    fn ids_of_keys_are_stable_and_ids_differ() {
        assert_eq!(id_of_key(b"a"), id_of_key(b"a"));
        assert_ne!(id_of_key(b"a"), id_of_key(b"b"));
        assert_ne!(random_id(), random_id());
        assert_eq!(one_line("a\nb", 2), "a ");
    }
}
