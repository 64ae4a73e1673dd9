//! The spill file of `walq import`: the checked items of an export, kept
//! on disk between the pass that checks every line and the pass that
//! writes them, so that an import holds one item at a time in memory
//! whatever the export's size.
//!
//! The file is made in the system's temporary directory (`$TMPDIR`,
//! `/tmp` by default), private to its owner (0600), and unlinked as soon
//! as it is open: it is gone when the process ends, however it ends
//! (success, failure, Ctrl-C, a kill), and no other process can reach it
//! by name meanwhile. Its path is kept for messages.
//!
//! Each record is `[body length: u64 LE][CRC-32 of the body: u32 LE]
//! [body]`, the body `[flags: u8][priority: u8][attempts left: u32]
//! [due ms: u64][queue length: u8][payload length: u64][key length: u16]
//! [group length: u16][error length: u64]` and then those bytes. What is
//! read back is checked: a length past the file's end or over
//! [`lines::MAX_LINE`], a checksum that does not match, a body whose parts
//! do not add up, or a file that holds more or fewer records than were
//! written is an error naming the spill file and the offset.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use walq::Priority;

use super::import::Item;
use super::lines;

/// Bytes before a record's body: its length and checksum.
const HEADER: u64 = 8 + 4;
/// Bytes of a body before its variable parts.
const FIXED: u64 = 1 + 1 + 4 + 8 + 1 + 8 + 2 + 2 + 8;
/// Flag bits of a body.
const DEAD: u8 = 1;
const HAS_KEY: u8 = 2;
const HAS_GROUP: u8 = 4;

/// A spill file being written: records are appended, then read back once.
pub struct Spill {
    out: BufWriter<File>,
    path: PathBuf,
    /// Records written.
    count: u64,
    /// Bytes written.
    len: u64,
}

/// Where spill files are made: `$TMPDIR`, or the system's default.
pub fn spill_dir() -> PathBuf {
    std::env::temp_dir()
}

impl Spill {
    /// A new, empty spill file in [`spill_dir`], already unlinked.
    /// `what` names its contents in the file name (`jobs`, `dead`).
    pub fn create(what: &str) -> Result<Spill, String> {
        let dir = spill_dir();
        let named = tempfile::Builder::new()
            .prefix(&format!("walq-import-{what}-"))
            .suffix(".spill")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(&dir)
            .map_err(|e| format!("creating a spill file in {} ($TMPDIR): {e}", dir.display()))?;
        let (file, temp_path) = named.into_parts();
        let path = temp_path.to_path_buf();
        // Unlinked now: the open file lives until the process ends.
        temp_path
            .close()
            .map_err(|e| format!("spill file {}: removing it: {e}", path.display()))?;
        Ok(Spill {
            out: BufWriter::with_capacity(1 << 16, file),
            path,
            count: 0,
            len: 0,
        })
    }

    /// Records written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends `it`.
    pub fn push(&mut self, it: &Item) -> Result<(), String> {
        let key = it.key.as_deref().unwrap_or_default();
        let group = it.group.as_deref().unwrap_or_default();
        let flags = [
            (it.dead, DEAD),
            (it.key.is_some(), HAS_KEY),
            (it.group.is_some(), HAS_GROUP),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |f, (_, bit)| f | bit);
        let mut fixed = Vec::with_capacity(FIXED as usize);
        fixed.push(flags);
        fixed.push(it.priority as u8);
        fixed.extend_from_slice(&it.attempts_left.to_le_bytes());
        fixed.extend_from_slice(&it.due_ms.to_le_bytes());
        fixed.push(len_of::<u8>(it.queue.len(), "queue name")?);
        fixed.extend_from_slice(&(it.payload.len() as u64).to_le_bytes());
        fixed.extend_from_slice(&len_of::<u16>(key.len(), "key")?.to_le_bytes());
        fixed.extend_from_slice(&len_of::<u16>(group.len(), "group")?.to_le_bytes());
        fixed.extend_from_slice(&(it.error.len() as u64).to_le_bytes());
        let parts = [
            &fixed[..],
            it.queue.as_bytes(),
            &it.payload,
            key,
            group,
            it.error.as_bytes(),
        ];
        let mut crc = crc32fast::Hasher::new();
        let mut body = 0u64;
        for p in parts {
            crc.update(p);
            body += p.len() as u64;
        }
        let mut header = body.to_le_bytes().to_vec();
        header.extend_from_slice(&crc.finalize().to_le_bytes());
        let written = self
            .out
            .write_all(&header)
            .and_then(|()| parts.iter().try_for_each(|p| self.out.write_all(p)));
        written.map_err(|e| write_error(&self.path, e))?;
        self.count += 1;
        self.len += HEADER + body;
        Ok(())
    }

    /// Ends the writing and reads the records back from the start.
    pub fn replay(self) -> Result<Replay, String> {
        let path = self.path.clone();
        let (count, len) = (self.count, self.len);
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| write_error(&path, e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| format!("spill file {}: {e}", path.display()))?;
        Ok(Replay {
            input: BufReader::with_capacity(1 << 16, file),
            path,
            left: count,
            len,
            at: 0,
        })
    }
}

/// The message of a failed write of the spill file at `path`.
fn write_error(path: &Path, e: std::io::Error) -> String {
    format!(
        "spill file {}: {e} (import keeps the checked export here, about the size of its \
         payloads, before it writes the first job; set TMPDIR to a directory with room); \
         nothing was imported",
        path.display()
    )
}

/// `n` as the length field `T`, or why it does not fit (the checks of an
/// item keep every length within its field: this never fails for them).
fn len_of<T: TryFrom<usize>>(n: usize, what: &str) -> Result<T, String> {
    T::try_from(n).map_err(|_| format!("a {what} of {n} bytes does not fit a spill record"))
}

/// The records of a spill file, read back in the order written.
pub struct Replay {
    input: BufReader<File>,
    path: PathBuf,
    /// Records not yet read.
    left: u64,
    /// Bytes written to the file.
    len: u64,
    /// Offset of the next record.
    at: u64,
}

impl Replay {
    /// The next item; `None` after the last one written.
    pub fn next_item(&mut self) -> Result<Option<Item>, String> {
        if self.left == 0 {
            return self.at_end().map(|()| None);
        }
        let at = self.at;
        let path = self.path.clone();
        let damaged = |what: String| {
            format!(
                "spill file {}: offset {at}: {what}: the spill file was damaged after it was \
                 written",
                path.display()
            )
        };
        let mut header = [0u8; HEADER as usize];
        self.read(&mut header).map_err(&damaged)?;
        let body = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(header[8..].try_into().unwrap_or_default());
        let room = self.len.saturating_sub(at + HEADER);
        if body > room || !(FIXED..=lines::MAX_LINE).contains(&body) {
            let why = format!(
                "a record of {body} bytes (at least {FIXED}, at most {}, {room} left in the file)",
                lines::MAX_LINE
            );
            return Err(damaged(why));
        }
        let mut hasher = crc32fast::Hasher::new();
        let item = self.read_body(body, &mut hasher).map_err(&damaged)?;
        if hasher.finalize() != crc {
            return Err(damaged("its checksum does not match".into()));
        }
        self.at += HEADER + body;
        self.left -= 1;
        Ok(Some(item))
    }

    /// Checks that the file ends where the last record written ends.
    fn at_end(&mut self) -> Result<(), String> {
        let mut byte = [0u8; 1];
        match self.input.read(&mut byte) {
            Ok(0) if self.at == self.len => Ok(()),
            Ok(_) => Err(format!(
                "spill file {}: offset {}: bytes after the last record written: the spill file \
                 was damaged after it was written",
                self.path.display(),
                self.at
            )),
            Err(e) => Err(format!("spill file {}: {e}", self.path.display())),
        }
    }

    /// Reads exactly `buf.len()` bytes.
    fn read(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the file ends inside a record".to_string(),
            _ => e.to_string(),
        })
    }

    /// Reads `n` bytes (checked against the body's length by the caller)
    /// into a vector, adding them to `crc`.
    fn take(&mut self, n: u64, crc: &mut crc32fast::Hasher) -> Result<Vec<u8>, String> {
        let n = usize::try_from(n).map_err(|_| format!("a part of {n} bytes"))?;
        let mut v = vec![0u8; n];
        self.read(&mut v)?;
        crc.update(&v);
        Ok(v)
    }

    /// Reads a body of `body` bytes.
    fn read_body(&mut self, body: u64, crc: &mut crc32fast::Hasher) -> Result<Item, String> {
        let fixed = self.take(FIXED, crc)?;
        let u64_at = |i: usize| u64::from_le_bytes(fixed[i..i + 8].try_into().unwrap_or_default());
        let u16_at = |i: usize| u64::from(u16::from_le_bytes([fixed[i], fixed[i + 1]]));
        let (flags, level) = (fixed[0], fixed[1]);
        let attempts_left = u32::from_le_bytes([fixed[2], fixed[3], fixed[4], fixed[5]]);
        let due_ms = u64_at(6);
        let (queue, payload) = (u64::from(fixed[14]), u64_at(15));
        let (key, group, error) = (u16_at(23), u16_at(25), u64_at(27));
        let total = [queue, payload, key, group, error]
            .iter()
            .try_fold(FIXED, |sum, n| sum.checked_add(*n));
        let stray = (flags & HAS_KEY == 0 && key > 0) || (flags & HAS_GROUP == 0 && group > 0);
        if total != Some(body) || stray || flags & !(DEAD | HAS_KEY | HAS_GROUP) != 0 {
            return Err(format!(
                "a body of {body} bytes whose parts do not add up to it"
            ));
        }
        let priority = *Priority::ALL
            .get(usize::from(level))
            .ok_or_else(|| format!("priority level {level}"))?;
        let text = |v: Vec<u8>, what: &str| {
            String::from_utf8(v).map_err(|_| format!("a {what} that is not UTF-8"))
        };
        let queue = text(self.take(queue, crc)?, "queue name")?;
        let payload = self.take(payload, crc)?;
        let key = self.take(key, crc)?;
        let group = self.take(group, crc)?;
        let error = text(self.take(error, crc)?, "error")?;
        Ok(Item {
            dead: flags & DEAD != 0,
            queue,
            payload,
            key: (flags & HAS_KEY != 0).then_some(key),
            error,
            due_ms,
            attempts_left,
            priority,
            group: (flags & HAS_GROUP != 0).then_some(group),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn job(i: u8) -> Item {
        Item {
            dead: i % 2 == 1,
            queue: format!("q{i}"),
            payload: vec![i; 1000 + usize::from(i)],
            key: i.is_multiple_of(3).then(|| vec![b'k', i]),
            error: if i % 2 == 1 {
                format!("err {i}")
            } else {
                String::new()
            },
            due_ms: u64::from(i) << 40,
            attempts_left: u32::from(i) + 1,
            priority: Priority::ALL[usize::from(i) % 4],
            group: i.is_multiple_of(4).then(|| vec![b'g'; usize::from(i) + 1]),
        }
    }

    fn spilled(n: u8) -> Replay {
        let mut s = Spill::create("test").unwrap();
        // Unlinked at once: no file of that name is left.
        assert!(!s.path.exists());
        for i in 0..n {
            s.push(&job(i)).unwrap();
        }
        assert_eq!(s.count(), u64::from(n));
        s.replay().unwrap()
    }

    /// Every field comes back as written, in order, then the end.
    #[test]
    fn items_come_back_as_written() {
        let mut r = spilled(9);
        for i in 0..9 {
            let it = r.next_item().unwrap().unwrap();
            assert_eq!(it, job(i), "item {i}");
        }
        assert!(r.next_item().unwrap().is_none());
        assert!(r.next_item().unwrap().is_none());
    }

    /// The file is private to its owner.
    #[test]
    fn the_spill_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let r = spilled(1);
        let mode = r.input.get_ref().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// A byte changed under the reader, a record cut short, a length past
    /// the file's end or extra bytes: an error naming the spill file and
    /// the offset, never an item that was not written.
    #[test]
    fn a_damaged_spill_file_is_an_error_naming_it() {
        // job(0): queue "q0", payload 1000, key 2, group 1 bytes.
        let first = HEADER + FIXED + 2 + 1000 + 2 + 1;
        type Damage = Box<dyn Fn(&File)>;
        let cases: [(&str, Damage, u64); 4] = [
            (
                "checksum does not match",
                Box::new(|f: &File| f.write_all_at(b"X", 500).unwrap()),
                0,
            ),
            (
                "the file ends inside a record",
                Box::new(move |f: &File| f.set_len(first + 30).unwrap()),
                first,
            ),
            (
                "a record of 1099511627776 bytes",
                Box::new(move |f: &File| {
                    f.write_all_at(&(1u64 << 40).to_le_bytes(), first).unwrap()
                }),
                first,
            ),
            (
                "whose parts do not add up",
                Box::new(|f: &File| f.write_all_at(&[9], HEADER + 14).unwrap()),
                0,
            ),
        ];
        for (says, damage, offset) in cases {
            let mut r = spilled(3);
            damage(r.input.get_ref());
            let err = loop {
                match r.next_item() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("{says}: no error"),
                    Err(e) => break e,
                }
            };
            assert!(err.contains(says), "{says}: {err}");
            assert!(
                err.contains(&format!(
                    "spill file {}: offset {offset}: ",
                    r.path.display()
                )),
                "{err}"
            );
        }
        let mut r = spilled(1);
        r.input.get_ref().write_all_at(b"more", r.len).unwrap();
        assert!(r.next_item().unwrap().is_some());
        let err = r.next_item().unwrap_err();
        assert!(err.contains("bytes after the last record"), "{err}");
    }
}
