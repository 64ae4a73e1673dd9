//! Reading a dead letter's payload back from its record in `dead.wal`, for
//! snapshots taken without payloads
//! ([`super::Inspector::snapshot_without_payloads`]): the record a
//! [`DeadPlace`] names is read again and verified whole before its payload
//! is handed out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::deadscan::{read_upto, scan_dead};
use super::entry::{Entry, Problem, RecordView, Severity, Visitor};
use super::files::{self, HeadedFile};
use crate::dead::{DEAD_FILE, DEAD_SEGMENT_ID};
use crate::error::{Error, ErrorKind, Result};
use crate::format::frame;
use crate::format::record::Record;

/// Largest dead-letter frame accepted (as the dead-letter file reads).
const MAX_DEAD_RECORD: u32 = 1 << 30;

/// Where a dead letter of a [`Snapshot`](super::Snapshot) is: its record
/// in `dead.wal` and the length of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadPlace {
    /// The job id.
    pub id: u64,
    /// The byte offset of its record in `dead.wal`.
    pub offset: u64,
    /// The record's length in bytes.
    pub len: u32,
    /// The payload's length in bytes.
    pub payload_len: u64,
}

/// Reads the payloads of dead letters from `dead.wal`, one letter at a
/// time, so that a caller holds one payload in memory, not all of them.
///
/// Each read verifies the whole record again (its checksum, and that it
/// is the dead-letter record of that job): bytes that no longer verify are
/// never returned, but an error of kind [`ErrorKind::Corrupt`] naming the
/// file and offset. `dead.wal` is opened at the first read and kept open.
///
/// While a process holds the queue, it may have rewritten `dead.wal`
/// (compacted it, moving every record) since the snapshot: a record that
/// is not found where the snapshot says makes the reader index the file
/// it holds open again (one look, kept for every later read), and read
/// the letter where it is now; a letter redriven or purged meanwhile is
/// an error of kind [`ErrorKind::NotFound`].
///
/// ```
/// # fn main() -> walq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let q = walq::Queue::open(dir.path())?;
/// let once = walq::EnqueueOptions::new().max_attempts(1);
/// q.enqueue_with(b"hello", once)?;
/// let job = q.dequeue_timeout(std::time::Duration::ZERO)?.unwrap();
/// q.fail(job.receipt(), "boom")?;
/// let inspector = walq::inspect::Inspector::open(dir.path())?;
/// let snap = inspector.snapshot_without_payloads()?;
/// let (id, letter) = snap.dead.iter().next().unwrap();
/// assert!(letter.payload.is_empty());
/// let place = &snap.dead_places[id];
/// assert_eq!(place.payload_len, 5);
/// let mut dead = inspector.dead_payload_reader();
/// assert_eq!(dead.read(place)?, b"hello");
/// assert_eq!(dead.read_letter(&snap, letter.id)?, b"hello");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DeadPayloadReader {
    dir: PathBuf,
    live: bool,
    /// `dead.wal` as opened at the first read.
    file: Option<HeadedFile>,
    /// The letters of that open file, indexed once a letter was not where
    /// the snapshot said.
    index: Option<Index>,
    /// Indexes taken.
    pub(crate) looks: u32,
}

/// The dead letters of an open `dead.wal`, and its first damage.
#[derive(Debug, Default)]
struct Index {
    places: BTreeMap<u64, DeadPlace>,
    damage: Option<Problem>,
}

impl Visitor for Index {
    fn record(&mut self, r: &RecordView<'_>) {
        match r.entry {
            Entry::Record(Record::Dead(d)) => {
                let place = DeadPlace {
                    id: d.id,
                    offset: r.offset,
                    len: r.len,
                    payload_len: d.payload.len() as u64,
                };
                self.places.insert(d.id, place);
            }
            Entry::Record(Record::Removed { id }) => {
                self.places.remove(&id);
            }
            _ => {}
        }
    }

    fn problem(&mut self, p: &Problem) {
        if p.severity == Severity::Damage && self.damage.is_none() {
            self.damage = Some(p.clone());
        }
    }
}

impl DeadPayloadReader {
    pub(crate) fn new(dir: &Path, live: bool) -> DeadPayloadReader {
        DeadPayloadReader {
            dir: dir.to_path_buf(),
            live,
            file: None,
            index: None,
            looks: 0,
        }
    }

    /// The payload of the dead letter at `place` (from
    /// [`Snapshot::dead_places`](super::Snapshot::dead_places)), read from
    /// its record and verified.
    pub fn read(&mut self, place: &DeadPlace) -> Result<Vec<u8>> {
        if self.index.is_none() {
            match self.read_at(place) {
                Err(e) if self.live && e.kind() == ErrorKind::Corrupt => self.index()?,
                other => return other,
            }
        }
        let Some(index) = &self.index else {
            return Err(Error::new(ErrorKind::NotFound, "dead.wal was not indexed"));
        };
        match index.places.get(&place.id).copied() {
            Some(now) => self.read_at(&now),
            None => Err(self.gone(place, index.damage.as_ref())),
        }
    }

    /// The payload of dead letter `id` of `snap`, read from the record
    /// [`Snapshot::dead_places`](super::Snapshot::dead_places) names (see
    /// [`DeadPayloadReader::read`]); `NotFound` if `snap` has no such letter.
    pub fn read_letter(&mut self, snap: &super::Snapshot, id: u64) -> Result<Vec<u8>> {
        match snap.dead_places.get(&id) {
            Some(place) => self.read(place),
            None => {
                let what = format!("dead letter {id} is not in the snapshot");
                Err(Error::new(ErrorKind::NotFound, what).with_path(&self.dir))
            }
        }
    }

    /// Indexes the open `dead.wal` (a compaction since the snapshot moved
    /// its records).
    fn index(&mut self) -> Result<()> {
        let (dir, live) = (self.dir.clone(), self.live);
        let file = self.open()?;
        let mut index = Index::default();
        scan_dead(&dir, live, file, &mut index)?;
        self.index = Some(index);
        self.looks += 1;
        Ok(())
    }

    /// The error for the letter at `place`, not in `dead.wal` when it was
    /// indexed again: damage the index met, or else removed meanwhile.
    fn gone(&self, place: &DeadPlace, damage: Option<&Problem>) -> Error {
        let path = self.dir.join(DEAD_FILE);
        if let Some(p) = damage {
            let what = format!(
                "dead letter {} is no longer found, and the file is damaged: {}",
                place.id, p.what
            );
            return Error::corrupt(&path, p.offset, what);
        }
        let what = format!(
            "dead letter {} was removed (redriven or purged) after the snapshot",
            place.id
        );
        Error::new(ErrorKind::NotFound, what).with_path(&path)
    }

    /// `dead.wal`, opened at the first call.
    fn open(&mut self) -> Result<&HeadedFile> {
        if self.file.is_none() {
            let path = self.dir.join(DEAD_FILE);
            let Some(f) = files::open_headed(&path)? else {
                let what = "dead.wal was removed after the snapshot";
                return Err(Error::new(ErrorKind::NotFound, what).with_path(&path));
            };
            self.file = Some(f);
        }
        self.file
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "dead.wal is not open"))
    }

    /// The payload of the letter at `place`, from its record.
    fn read_at(&mut self, place: &DeadPlace) -> Result<Vec<u8>> {
        let path = self.dir.join(DEAD_FILE);
        let at = place.offset;
        let file = self.open()?;
        let mut frame = read_upto(file, at, place.len as usize, &path)?;
        let f = frame::decode(&frame, DEAD_SEGMENT_ID, MAX_DEAD_RECORD)
            .map_err(|e| Error::corrupt(&path, at, format!("{e}, re-read for its payload")))?;
        let payload_len = match Record::decode(f.kind, f.body) {
            Some(Record::Dead(d)) if d.id == place.id && f.len == place.len => d.payload.len(),
            _ => {
                let what = format!("no longer the dead-letter record of job {}", place.id);
                return Err(Error::corrupt(&path, at, what));
            }
        };
        // The payload ends the record: keep it, without a copy.
        frame.drain(..frame.len() - payload_len);
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::time::Duration;

    use super::super::Inspector;
    use crate::{EnqueueOptions, ErrorKind, Queue};

    /// The payload of the `i`-th dead letter: 64 KiB, its bytes told apart.
    fn payload(i: u64) -> Vec<u8> {
        let mut p = vec![b'a' + (i % 26) as u8; 64 << 10];
        p[..8].copy_from_slice(&i.to_le_bytes());
        p
    }

    /// `n` dead letters in the queue `q`, their ids.
    fn dead_letters(q: &Queue, n: u64) -> Vec<u64> {
        (0..n)
            .map(|i| {
                let once = EnqueueOptions::new().max_attempts(1);
                let id = q.enqueue_with(&payload(i), once).unwrap().id;
                let job = q.dequeue_timeout(Duration::ZERO).unwrap().unwrap();
                q.fail(job.receipt(), &format!("failed {i}")).unwrap();
                id
            })
            .collect()
    }

    fn inode(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn payloads_read_back_match_the_full_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let q = Queue::open(tmp.path()).unwrap();
        dead_letters(&q, 20);
        q.purge(q.dead_letter_ids()[3]).unwrap();
        q.close().unwrap();
        let inspector = Inspector::open(tmp.path()).unwrap();
        let full = inspector.snapshot().unwrap();
        let lean = inspector.snapshot_without_payloads().unwrap();
        assert_eq!(lean.dead.len(), 19);
        assert_eq!(lean.dead_places, full.dead_places);
        let mut reader = inspector.dead_payload_reader();
        for (id, letter) in &lean.dead {
            assert!(letter.payload.is_empty());
            let place = &lean.dead_places[id];
            let mut letter = letter.clone();
            letter.payload = reader.read(place).unwrap();
            assert_eq!(place.payload_len, letter.payload.len() as u64);
            assert_eq!(&letter, &full.dead[id]);
        }
        assert_eq!(reader.looks, 0);
    }

    /// Bytes damaged after the snapshot are never handed out: an error
    /// naming `dead.wal` and the record's offset, of a stopped queue and
    /// of a live one (which indexes the file again first).
    #[test]
    fn a_record_damaged_after_the_snapshot_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let q = Queue::open(tmp.path()).unwrap();
        dead_letters(&q, 5);
        let mut q = Some(q);
        let path = tmp.path().join(crate::dead::DEAD_FILE);
        for live in [true, false] {
            if !live {
                q.take().unwrap().close().unwrap();
            }
            let inspector = Inspector::open(tmp.path()).unwrap();
            assert_eq!(inspector.live(), live);
            let lean = inspector.snapshot_without_payloads().unwrap();
            let place = *lean.dead_places.values().nth(2).unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            let last = (place.offset + u64::from(place.len) - 1) as usize;
            bytes[last] ^= 1; // the payload's last byte
            std::fs::write(&path, &bytes).unwrap();
            let err = inspector.dead_payload_reader().read(&place).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
            assert_eq!(err.path(), Some(path.as_path()), "{err}");
            assert_eq!(err.offset(), Some(place.offset), "{err}");
            bytes[last] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            // A record that is another letter's is not served either.
            // (Live, the file is indexed again first: no such letter.)
            let other = super::DeadPlace {
                id: place.id + 1000,
                ..place
            };
            let err = inspector.dead_payload_reader().read(&other).unwrap_err();
            if live {
                assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
            } else {
                assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
                assert_eq!(err.offset(), Some(place.offset), "{err}");
            }
        }
    }

    /// While the queue runs, `dead.wal` is compacted after the snapshot
    /// (every record moves): the letters are read where they are now, one
    /// new index serving them all, and a letter purged meanwhile is
    /// `NotFound`, never another letter's bytes.
    #[test]
    fn a_compaction_after_the_snapshot_is_looked_up_again() {
        let tmp = tempfile::tempdir().unwrap();
        let q = Queue::open(tmp.path()).unwrap();
        let ids = dead_letters(&q, 40);
        let inspector = Inspector::open(tmp.path()).unwrap();
        assert!(inspector.live());
        let snap = inspector.snapshot_without_payloads().unwrap();
        let path = tmp.path().join(crate::dead::DEAD_FILE);
        let before = inode(&path);
        for &id in &ids[..30] {
            q.purge(id).unwrap();
        }
        q.wait_upkeep();
        assert_ne!(inode(&path), before, "dead.wal was not compacted");
        let mut reader = inspector.dead_payload_reader();
        for (i, id) in ids.iter().enumerate().rev() {
            let got = reader.read(&snap.dead_places[id]);
            if i >= 30 {
                assert_eq!(got.unwrap(), payload(i as u64), "letter {i}");
            } else {
                let err = got.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::NotFound, "letter {i}: {err}");
            }
        }
        assert_eq!(reader.looks, 1);
    }
}
