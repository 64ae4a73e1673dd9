//! Reading the lines of an export with bounded memory: no line longer than
//! the longest a `walq export` writes is held, and a byte no JSON line may
//! hold ends the read at once, so an endless input (`cat /dev/zero`, a
//! line that never ends) is an error naming the line, not a process that
//! grows until it dies.

use std::io::BufRead;

use walq::MAX_SEGMENT_SIZE;

/// How many characters of JSON one byte of a payload, key or error can
/// take: `\u0001` for a control character (6; base64, for bytes that are
/// not UTF-8, takes 4 for 3).
const JSON_PER_BYTE: u64 = 6;

/// Room for what a line holds besides its payload, key, group and error:
/// the field names, the numbers, the priority and the queue name (at most
/// 64 bytes), with plenty to spare for a line written by hand.
const FIXED_FIELDS: u64 = 64 << 10;

/// The longest line `walq import` reads: every byte of a job's payload,
/// key and group is in one record of a segment, and every byte of a dead
/// letter's payload, key and error in one record of `dead.wal`, each at
/// most 1 GiB (`MAX_SEGMENT_SIZE`); each byte takes at most
/// [`JSON_PER_BYTE`] characters of JSON. No line a `walq export` writes is
/// longer.
pub const MAX_LINE: u64 = JSON_PER_BYTE * MAX_SEGMENT_SIZE + FIXED_FIELDS;

/// Reads lines of at most `max` bytes (not counting the line end), each a
/// JSON object or blank.
pub struct Lines<R> {
    input: R,
    max: u64,
    /// The number of the line read last (from 1).
    pub number: u64,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `input`, each at most `max` bytes.
    pub fn new(input: R, max: u64) -> Lines<R> {
        Lines {
            input,
            max,
            number: 0,
        }
    }

    /// Reads the next line into `line` (without its `\n` or `\r\n`; blank
    /// when it holds only white space). `Ok(false)` at the end of the
    /// input. `Err` says why the line cannot be an export's, having read
    /// no more of it than it took to tell.
    pub fn next_line(&mut self, line: &mut Vec<u8>) -> Result<bool, String> {
        line.clear();
        self.number += 1;
        let mut seen = 0u64;
        loop {
            let chunk = self.input.fill_buf().map_err(|e| e.to_string())?;
            if chunk.is_empty() {
                return Ok(seen > 0);
            }
            let (part, ended) = match chunk.iter().position(|&b| b == b'\n') {
                Some(n) => (&chunk[..n], true),
                None => (chunk, false),
            };
            check(part, line.is_empty(), seen)?;
            let n = part.len();
            seen += n as u64;
            if seen > self.max {
                return Err(format!(
                    "longer than {} bytes, the longest line a walq export holds",
                    self.max
                ));
            }
            // Leading white space is counted, not kept.
            let start = match line.is_empty() {
                true => part.iter().position(|b| !is_space(*b)).unwrap_or(n),
                false => 0,
            };
            line.extend_from_slice(&part[start..]);
            self.input.consume(n + usize::from(ended));
            if ended {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(true);
            }
        }
    }
}

/// JSON white space (a line end is not part of a line).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

/// Checks the bytes `part` of a line, `seen` bytes into it: no control
/// character (JSON allows none, escaped or white space aside), and, when
/// nothing but white space came before (`fresh`), an object's `{` first.
fn check(part: &[u8], fresh: bool, seen: u64) -> Result<(), String> {
    if let Some(at) = part.iter().position(|&b| b < 0x20 && !is_space(b)) {
        return Err(format!(
            "byte {:#04x} at column {}: a control character, which JSON allows in no line",
            part[at],
            seen + at as u64 + 1
        ));
    }
    if fresh {
        if let Some(at) = part.iter().position(|b| !is_space(*b)) {
            if part[at] != b'{' {
                return Err(format!(
                    "column {}: not a JSON object (it starts with {:?})",
                    seen + at as u64 + 1,
                    char::from(part[at])
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Reads `input` with lines of at most `max` bytes: each line, or the
    /// error that ended the read.
    fn read_all(input: impl BufRead, max: u64) -> (Vec<String>, Option<(u64, String)>) {
        let mut lines = Lines::new(input, max);
        let mut got = Vec::new();
        let mut line = Vec::new();
        loop {
            match lines.next_line(&mut line) {
                Ok(true) => got.push(String::from_utf8(line.clone()).unwrap()),
                Ok(false) => return (got, None),
                Err(e) => return (got, Some((lines.number, e))),
            }
        }
    }

    #[test]
    fn lines_are_read_without_their_ends_and_blank_ones_are_empty() {
        let input = "{\"a\":1}\n  \r\n\t{\"b\":2}\r\n{\"c\":3}";
        let (got, err) = read_all(input.as_bytes(), 100);
        assert_eq!(got, ["{\"a\":1}", "", "{\"b\":2}", "{\"c\":3}"]);
        assert!(err.is_none());
        // A line of exactly the limit is read; one byte more is not.
        let (got, err) = read_all(&b"{  }\n{   }\n"[..], 4);
        assert_eq!(got, ["{  }"]);
        let (n, e) = err.unwrap();
        assert_eq!(n, 2);
        assert!(e.contains("longer than 4 bytes"), "{e}");
    }

    /// A line that never ends (of bytes that could be JSON) is refused at
    /// the limit, holding no more than it: a reader that yields `{"p":"`
    /// and then `a` forever.
    #[test]
    fn an_endless_line_ends_at_the_limit() {
        let endless = b"{\"p\":\"".chain(std::io::repeat(b'a'));
        let max = 1 << 20;
        let (got, err) = read_all(std::io::BufReader::new(endless), max);
        assert!(got.is_empty());
        let (n, e) = err.unwrap();
        assert_eq!(n, 1);
        assert!(e.contains(&format!("longer than {max} bytes")), "{e}");
    }

    /// Bytes no JSON line holds end the read at once: zeros forever, or a
    /// line that is not an object, however long.
    #[test]
    fn what_cannot_be_json_is_refused_where_it_starts() {
        let zeros = b"{\"walq_export\":1}\n".chain(std::io::repeat(0));
        let (got, err) = read_all(std::io::BufReader::new(zeros), MAX_LINE);
        assert_eq!(got.len(), 1);
        let (n, e) = err.unwrap();
        assert_eq!(n, 2);
        assert!(e.contains("byte 0x00 at column 1"), "{e}");
        let ys = std::io::BufReader::new(std::io::repeat(b'y'));
        let (_, err) = read_all(ys, MAX_LINE);
        let (n, e) = err.unwrap();
        assert_eq!(n, 1);
        assert!(e.contains("not a JSON object"), "{e}");
    }

    /// The bound takes the longest line an export writes: every byte a
    /// control character (6 characters of JSON each), or not UTF-8
    /// (base64, 4 for 3), fits in [`JSON_PER_BYTE`] per byte and
    /// [`FIXED_FIELDS`] besides.
    #[test]
    fn the_limit_takes_the_longest_line_an_export_writes() {
        for byte in [0x01, 0xff, b'"'] {
            let bytes = vec![byte; 3000];
            let mut m = serde_json::Map::new();
            crate::render::put_bytes(&mut m, "payload", &bytes[..2000]);
            crate::render::put_bytes(&mut m, "key", &bytes[..1000]);
            m.insert("type".into(), "job".into());
            m.insert("due_ms".into(), u64::MAX.into());
            let line = serde_json::Value::Object(m).to_string();
            let most = JSON_PER_BYTE * bytes.len() as u64 + FIXED_FIELDS;
            assert!(line.len() as u64 <= most, "{byte:#x}: {}", line.len());
        }
        assert_eq!(MAX_LINE, 6 * (1 << 30) + (64 << 10));
    }
}
