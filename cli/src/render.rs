//! How values are shown: times, sizes, payloads, colour.

use std::io::IsTerminal;

use base64::Engine as _;
use walq::Clock as _;

/// Whether to colour output on stdout: only on a terminal, never with
/// `NO_COLOR` set.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `text` in bold red when colouring, plain otherwise.
pub fn red(text: &str, on: bool) -> String {
    if on {
        format!("\x1b[1;31m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// `text` in green when colouring, plain otherwise.
pub fn green(text: &str, on: bool) -> String {
    if on {
        format!("\x1b[32m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// `text` in yellow when colouring, plain otherwise.
pub fn yellow(text: &str, on: bool) -> String {
    if on {
        format!("\x1b[33m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub use walq::inspect::utc_time as time;

/// A signed duration in ms, as `in 5.0s` / `3.2s ago`.
pub fn relative(ms: u64, now: u64) -> String {
    if ms > now {
        format!("in {}", duration(ms - now))
    } else {
        format!("{} ago", duration(now - ms))
    }
}

/// A duration in ms, short.
pub fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{:.1}m", ms as f64 / 60_000.0),
        _ => format!("{:.1}h", ms as f64 / 3_600_000.0),
    }
}

/// Bytes, short (`64.0 MiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A payload for people: compact JSON when it is JSON, text when it is
/// UTF-8 (control characters escaped), else `hex:` and the bytes.
pub fn payload(bytes: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if value.is_object() || value.is_array() {
            return format!("json:{value}");
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("hex:{}", hex(bytes)),
    }
}

/// `payload`, cut to about `max` characters.
pub fn payload_short(bytes: &[u8], max: usize) -> String {
    let full = payload(bytes);
    if full.chars().count() <= max {
        return full;
    }
    let cut: String = full.chars().take(max).collect();
    format!("{cut}… ({} bytes)", bytes.len())
}

/// Lower-case hex of the bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes for a JSON document: `(field, value)` where the field is `name`
/// with a UTF-8 string, or `name_base64` with standard base64 otherwise.
pub fn json_bytes(name: &str, bytes: &[u8]) -> (String, serde_json::Value) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (name.to_string(), text.into()),
        Err(_) => (
            format!("{name}_base64"),
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
        ),
    }
}

/// The bytes of `name` or `name_base64` in a JSON object, if present.
pub fn bytes_from_json(
    obj: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(v) = obj.get(name) {
        return match v {
            serde_json::Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
            serde_json::Value::Null => Ok(None),
            _ => Err(format!("\"{name}\" is not a string")),
        };
    }
    let b64 = format!("{name}_base64");
    match obj.get(&b64) {
        Some(serde_json::Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Some)
            .map_err(|e| format!("\"{b64}\" is not base64: {e}")),
        Some(_) => Err(format!("\"{b64}\" is not a string")),
        None => Ok(None),
    }
}

/// Puts bytes into a JSON object under `name` / `name_base64`.
pub fn put_bytes(obj: &mut serde_json::Map<String, serde_json::Value>, name: &str, bytes: &[u8]) {
    let (k, v) = json_bytes(name, bytes);
    obj.insert(k, v);
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> u64 {
    walq::SystemClock.now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_show_as_json_text_or_hex() {
        assert_eq!(payload(br#"{"a": 1}"#), r#"json:{"a":1}"#);
        assert_eq!(payload(b"hi\n"), "\"hi\\n\"");
        assert_eq!(payload(&[0xff, 0x00]), "hex:ff00");
    }

    #[test]
    fn bytes_round_trip_through_json() {
        for b in [&b"text"[..], &[0xff, 0xfe, 0x00][..]] {
            let mut obj = serde_json::Map::new();
            put_bytes(&mut obj, "payload", b);
            assert_eq!(bytes_from_json(&obj, "payload").unwrap().unwrap(), b);
        }
    }
}
