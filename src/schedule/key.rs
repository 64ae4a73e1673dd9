//! The idempotency key of a tick: `walq.schedule/<name>/<tick>`.
//!
//! Every job a schedule enqueues carries this key, so the queue's dedup
//! makes a second enqueue of the same tick (after a crash between the
//! enqueue and the schedule file's update) return the first job. A handler
//! reads it back with [`crate::JobContext::idempotency_key`] to learn
//! which schedule and tick its job stands for.

/// The prefix of every tick's idempotency key.
pub const KEY_PREFIX: &str = "walq.schedule/";

/// The idempotency key of schedule `name`'s tick at `tick` (seconds since
/// the Unix epoch).
///
/// ```
/// assert_eq!(
///     walq::schedule::tick_key("nightly", 1_700_006_400),
///     "walq.schedule/nightly/1700006400"
/// );
/// ```
pub fn tick_key(name: &str, tick: u64) -> String {
    format!("{KEY_PREFIX}{name}/{tick}")
}

/// The schedule name and tick of a key made by [`tick_key`]; `None` for
/// any other key.
///
/// ```
/// let key = walq::schedule::tick_key("nightly", 1_700_006_400);
/// assert_eq!(
///     walq::schedule::parse_tick_key(key.as_bytes()),
///     Some(("nightly", 1_700_006_400))
/// );
/// assert_eq!(walq::schedule::parse_tick_key(b"order-42"), None);
/// ```
pub fn parse_tick_key(key: &[u8]) -> Option<(&str, u64)> {
    let text = std::str::from_utf8(key).ok()?;
    let rest = text.strip_prefix(KEY_PREFIX)?;
    let (name, tick) = rest.rsplit_once('/')?;
    super::definition::validate_name(name).ok()?;
    if tick.is_empty() || !tick.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((name, tick.parse().ok()?))
}
