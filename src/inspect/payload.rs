//! Reading a pending job's payload back from its record, for snapshots
//! taken without payloads ([`super::Inspector::snapshot_without_payloads`]):
//! the record a [`PendingJob`] names is read again and verified whole
//! before its payload is handed out.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::snapshot::PendingJob;
use crate::error::{Error, Result};
use crate::format::frame::{self, FRAME_HEADER_LEN};
use crate::format::record::Record;

/// Reads the payloads of pending jobs from their segments, one job at a
/// time, so that a caller holds one payload in memory, not all of them.
///
/// Each read verifies the whole record again (its checksum, seeded with
/// the segment's id, and that it is the enqueue record of that job): bytes
/// that no longer verify are never returned, but an error of kind
/// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) naming the file and
/// offset. The last segment read
/// stays open, so jobs read in id order open each segment about once.
#[derive(Debug)]
pub struct PayloadReader {
    dir: PathBuf,
    live: bool,
    /// The open segment: its name, file and length.
    open: Option<(String, File, u64)>,
    /// The snapshot last taken to find moved jobs: it serves every later
    /// moved job until one of its places is gone as well (one new look
    /// per reclaim, not one per job carried forward).
    moved: Option<super::snapshot::Snapshot>,
    /// Snapshots taken to find moved jobs.
    looks: u32,
}

impl PayloadReader {
    pub(crate) fn new(dir: &Path, live: bool) -> PayloadReader {
        PayloadReader {
            dir: dir.to_path_buf(),
            live,
            open: None,
            moved: None,
            looks: 0,
        }
    }

    /// The payload of `job`, read from its record ([`PendingJob::file`] at
    /// [`PendingJob::offset`]) and verified.
    ///
    /// While a process holds the queue, it may have removed the job's
    /// segment since the snapshot: then the queue is looked at again, and
    /// the payload read from where the job is now (a job carried into a
    /// newer segment); a job no longer pending (finished meanwhile) is an
    /// error of kind [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
    pub fn read(&mut self, job: &PendingJob) -> Result<Vec<u8>> {
        match self.read_at(job) {
            Err(e) if self.live && e.kind() == crate::ErrorKind::NotFound => self.relocated(job),
            other => other,
        }
    }

    /// The payload of `job` read where the queue holds it now: from the
    /// last snapshot taken for a moved job, if that still names a place
    /// that exists, or else from a new one.
    fn relocated(&mut self, job: &PendingJob) -> Result<Vec<u8>> {
        if let Some(snap) = &self.moved {
            let Some(now) = snap.jobs.get(&job.id).cloned() else {
                return Err(self.finished(job));
            };
            match self.read_at(&now) {
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                other => return other,
            }
        }
        let inspector = super::Inspector {
            dir: self.dir.clone(),
            live: self.live,
        };
        let snap = inspector.snapshot_without_payloads()?;
        self.looks += 1;
        let now = snap.jobs.get(&job.id).cloned();
        self.moved = Some(snap);
        match now {
            Some(now) => self.read_at(&now),
            None => Err(self.finished(job)),
        }
    }

    /// The error for `job`, no longer pending when the queue was looked at
    /// again.
    fn finished(&self, job: &PendingJob) -> Error {
        Error::new(
            crate::ErrorKind::NotFound,
            format!(
                "job {} finished after the snapshot (the running process removed its \
                 segment {})",
                job.id, job.file
            ),
        )
        .with_path(&self.dir)
    }

    /// The payload of `job` from its record.
    fn read_at(&mut self, job: &PendingJob) -> Result<Vec<u8>> {
        let path = self.dir.join(&job.file);
        let at = job.offset;
        let Some(segment_id) = crate::segment::parse_name(&job.file) else {
            return Err(Error::corrupt(&path, at, "not a log segment's name"));
        };
        let (file, len) = self.file(&job.file)?;
        let mut frame = read_frame(file, len, &path, at)?;
        let Ok(max_len) = u32::try_from(frame.len()) else {
            return Err(Error::corrupt(&path, at, "record longer than 4 GiB"));
        };
        let f = frame::decode(&frame, segment_id, max_len)
            .map_err(|e| Error::corrupt(&path, at, format!("{e}, re-read for its payload")))?;
        let payload_len = match Record::decode(f.kind, f.body) {
            Some(Record::Enqueue(e)) if e.id == job.id => e.payload.len(),
            _ => {
                let what = format!("no longer the enqueue record of job {}", job.id);
                return Err(Error::corrupt(&path, at, what));
            }
        };
        // The payload ends the record: keep it, without a copy.
        frame.drain(..frame.len() - payload_len);
        Ok(frame)
    }

    /// The open segment `name` and its length, opened if another is.
    fn file(&mut self, name: &str) -> Result<(&mut File, u64)> {
        if self.open.as_ref().is_none_or(|(n, _, _)| n != name) {
            self.open = None;
            let path = self.dir.join(name);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.live => {
                    let what = "removed by the running process since the snapshot";
                    return Err(Error::new(crate::ErrorKind::NotFound, what).with_path(&path));
                }
                Err(e) => return Err(Error::io("opening", &path, e)),
            };
            let len = file
                .metadata()
                .map_err(|e| Error::io("reading the length of", &path, e))?
                .len();
            self.open = Some((name.to_string(), file, len));
        }
        let (_, file, len) = self.open.as_mut().expect("opened above");
        Ok((file, *len))
    }
}

/// The bytes of the frame at `at` in `file` (`len` bytes long), as long
/// as its header says (checked against the file's end before reading).
fn read_frame(file: &mut File, len: u64, path: &Path, at: u64) -> Result<Vec<u8>> {
    let read_err = |e: io::Error| Error::io(&format!("reading at offset {at} of"), path, e);
    let mut head = [0u8; FRAME_HEADER_LEN];
    let fits = |n: u64| at.checked_add(n).is_some_and(|end| end <= len);
    if !fits(FRAME_HEADER_LEN as u64) {
        return Err(Error::corrupt(path, at, "record cut short: the file ends"));
    }
    file.seek(SeekFrom::Start(at)).map_err(read_err)?;
    file.read_exact(&mut head).map_err(read_err)?;
    let frame_len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    if (frame_len as usize) < FRAME_HEADER_LEN || !fits(u64::from(frame_len)) {
        let what = format!("record length {frame_len} out of range (the file is {len} bytes)");
        return Err(Error::corrupt(path, at, what));
    }
    let mut frame = vec![0u8; frame_len as usize];
    frame[..FRAME_HEADER_LEN].copy_from_slice(&head);
    file.read_exact(&mut frame[FRAME_HEADER_LEN..])
        .map_err(read_err)?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::super::Inspector;
    use crate::fixture::filled_store as filled;

    #[test]
    fn payloads_read_back_match_the_full_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        filled(tmp.path());
        let inspector = Inspector::open(tmp.path()).unwrap();
        let full = inspector.snapshot().unwrap();
        let lean = inspector.snapshot_without_payloads().unwrap();
        assert!(full.jobs.len() > 40 && !full.dead.is_empty());
        assert!(full.summary.segments > 1, "one segment only");
        // Dead letters are left without payloads too (`deadread` reads them).
        let stripped: std::collections::BTreeMap<u64, crate::DeadLetter> = (full.dead.iter())
            .map(|(&id, d)| {
                (
                    id,
                    crate::DeadLetter {
                        payload: Vec::new(),
                        ..d.clone()
                    },
                )
            })
            .collect();
        assert_eq!(lean.dead, stripped);
        assert_eq!(lean.dead_places, full.dead_places);
        assert_eq!(lean.jobs.len(), full.jobs.len());
        let mut reader = inspector.payload_reader();
        for (id, job) in &lean.jobs {
            assert!(job.payload.is_empty());
            let mut job = job.clone();
            job.payload = reader.read(&job).unwrap();
            assert_eq!(job.payload_len, job.payload.len() as u64);
            assert_eq!(&job, &full.jobs[id]);
        }
    }

    #[test]
    fn a_record_damaged_after_the_snapshot_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        filled(tmp.path());
        let inspector = Inspector::open(tmp.path()).unwrap();
        let lean = inspector.snapshot_without_payloads().unwrap();
        let job = lean.jobs.values().last().unwrap();
        let path = tmp.path().join(&job.file);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = (job.offset + 24 + job.payload_len) as usize;
        bytes[last] ^= 1; // in the payload (past its header, key and group)
        std::fs::write(&path, &bytes).unwrap();
        let err = inspector.payload_reader().read(job).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{err}");
        assert_eq!(err.path(), Some(path.as_path()));
        assert_eq!(err.offset(), Some(job.offset));
        // A record that names another job is not served either.
        let mut other = job.clone();
        other.id += 1000;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let full = inspector.snapshot().unwrap();
        assert_eq!(
            inspector.payload_reader().read(job).unwrap(),
            full.jobs[&job.id].payload
        );
        let err = inspector.payload_reader().read(&other).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{err}");
        // Past the end of the file.
        other.id = job.id;
        other.offset = bytes.len() as u64 - 8;
        let err = inspector.payload_reader().read(&other).unwrap_err();
        assert_eq!(err.offset(), Some(other.offset), "{err}");
    }
}

#[cfg(test)]
mod live_tests {
    use std::time::Duration;

    use super::super::Inspector;
    use crate::{ErrorKind, Options, Queue};

    /// While the queue runs, a segment of the snapshot is reclaimed: the
    /// job carried out of it is read where it is now, a job finished
    /// meanwhile is `NotFound`, never another job's bytes.
    #[test]
    fn a_segment_reclaimed_after_the_snapshot_is_looked_up_again() {
        let tmp = tempfile::tempdir().unwrap();
        let q = Queue::open_with(tmp.path(), Options::default().segment_size(64 << 10)).unwrap();
        let payload = |i: u64| vec![b'a' + (i % 26) as u8; 2000];
        let ids: Vec<u64> = (0..100).map(|i| q.enqueue(&payload(i)).unwrap()).collect();
        let inspector = Inspector::open(tmp.path()).unwrap();
        assert!(inspector.live());
        let snap = inspector.snapshot_without_payloads().unwrap();
        let first = snap.jobs[&ids[0]].file.clone();
        // Finish all but job 5 (and the last few): the first segment is
        // pinned by one job only, so it is carried forward and deleted.
        let mut held = Vec::new();
        while let Some(job) = q.dequeue_timeout(Duration::ZERO).unwrap() {
            held.push(job);
        }
        for job in held {
            if job.id() == ids[5] || job.id() > ids[90] {
                q.nack(job.receipt(), crate::Retry::After(Duration::ZERO), "x")
                    .unwrap();
            } else {
                q.ack(job.receipt()).unwrap();
            }
        }
        for i in 0..100 {
            q.enqueue(&payload(i)).unwrap();
            q.wait_upkeep();
            if !tmp.path().join(&first).exists() {
                break;
            }
        }
        assert!(
            !tmp.path().join(&first).exists(),
            "{first} was not reclaimed"
        );
        let mut reader = inspector.payload_reader();
        assert_eq!(reader.read(&snap.jobs[&ids[5]]).unwrap(), payload(5));
        let err = reader.read(&snap.jobs[&ids[0]]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert_eq!(reader.read(&snap.jobs[&ids[95]]).unwrap(), payload(95));
        // One new look at the queue served both jobs of the reclaimed
        // segment (before, each took a whole snapshot of its own).
        assert_eq!(reader.looks, 1);
    }
}
