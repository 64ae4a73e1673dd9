//! Read-only inspection of a queue directory, for tools such as the
//! `walq` command line: every record with its file and offset, damage
//! classified as recovery would, and the queue's state rebuilt from the
//! files, all without the writer's lock and without writing a byte.
//!
//! Files are read with `read`, never mapped, so a running process that
//! holds the queue may delete or grow them meanwhile: a file that vanishes
//! is a note, not damage, and what is read is a snapshot that may already
//! be stale ([`Inspector::live`] says whether a process held the queue).
//!
//! ```
//! # fn main() -> walq::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let q = walq::Queue::open(dir.path())?;
//! q.enqueue(b"hello")?;
//! let inspector = walq::inspect::Inspector::open(dir.path())?;
//! assert!(inspector.live()); // `q` holds the queue
//! let snap = inspector.snapshot()?;
//! assert_eq!(snap.jobs.len(), 1);
//! assert_eq!(snap.summary.damage, 0);
//! # Ok(()) }
//! ```

mod deadread;
mod deadscan;
mod entry;
mod files;
mod payload;
mod queues;
mod scan;
mod schedules;
mod segscan;
mod snapshot;
mod verify;

use std::path::{Path, PathBuf};

pub use crate::format::done::DoneRecord;
pub use crate::format::record::{DeadRec, EnqueueRec, Entries, Record};
pub use crate::schedule::utc::utc_time;
pub use deadread::{DeadPayloadReader, DeadPlace};
pub use entry::{Entry, FileRole, Problem, RecordView, Severity, Visitor};
pub use files::{is_live, lock_holder, LockHolder};
pub use payload::PayloadReader;
pub use queues::{dead_queue, job_queue, QueueCounts};
pub use scan::ScanSummary;
pub use schedules::ScheduleView;
pub use snapshot::{Completion, JobState, PendingJob, Snapshot};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};

/// A visitor that ignores everything.
struct Ignore;
impl Visitor for Ignore {}

/// Passes records on at once and keeps the problems back until the look
/// that reports them is known to be the last (see [`Inspector::verify`]).
/// Later looks pass their records to [`Ignore`].
struct HeldProblems<'a> {
    visitor: &'a mut dyn Visitor,
    problems: Vec<Problem>,
}

impl Visitor for HeldProblems<'_> {
    fn file_start(&mut self, name: &str, role: FileRole, len: u64) {
        self.visitor.file_start(name, role, len);
    }
    fn record(&mut self, rec: &RecordView<'_>) {
        self.visitor.record(rec);
    }
    fn problem(&mut self, problem: &Problem) {
        self.problems.push(problem.clone());
    }
    fn file_end(&mut self, name: &str, role: FileRole) {
        self.visitor.file_end(name, role);
    }
}

/// A read-only view of a queue directory.
#[derive(Debug, Clone)]
pub struct Inspector {
    dir: PathBuf,
    live: bool,
}

impl Inspector {
    /// Looks at `dir` (which must be a directory) and whether a running
    /// process holds its lock. Nothing is written or locked.
    pub fn open(dir: impl AsRef<Path>) -> Result<Inspector> {
        let dir = dir.as_ref();
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::new(ErrorKind::NotFound, "not a directory").with_path(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::new(ErrorKind::NotFound, "no such directory").with_path(dir))
            }
            Err(e) => return Err(Error::io("reading", dir, e)),
        }
        // A directory that may not be listed (another user's, mode 0700)
        // is named as such, not by the first file tried in it (`LOCK`).
        std::fs::read_dir(dir).map_err(|e| Error::io("listing the directory", dir, e))?;
        Ok(Inspector {
            dir: dir.to_path_buf(),
            live: files::is_live(dir)?,
        })
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a running process held the queue when this was opened.
    pub fn live(&self) -> bool {
        self.live
    }

    /// Scans every file, reporting each record and problem to `visitor`.
    /// Fails when the directory cannot be listed or holds no queue.
    pub fn scan(&self, visitor: &mut dyn Visitor) -> Result<ScanSummary> {
        scan::scan(&self.dir, self.live, visitor)
    }

    /// Checks every record of every file and the invariants between
    /// files, reporting each record and problem to `visitor`. The summary
    /// counts the damage (`damage == 0`: healthy). The schedule file
    /// (`schedules.bin`) is checked with the decoder
    /// [`Scheduler::open`](crate::schedule::Scheduler::open) uses: what it
    /// would refuse is damage at the offset it names (its entries are no
    /// records: the visitor sees none of them).
    ///
    /// While a process holds the queue, a check that finds damage is done
    /// again (up to [`LIVE_LOOKS`] times, as [`Inspector::snapshot`]): files
    /// read one after the other while the writer appends, rotates and
    /// compacts can disagree for a moment, while damage on disk is still
    /// there at the last look. `visitor` sees the records of the first look
    /// only (each once) and the problems of the last look only.
    pub fn verify(&self, visitor: &mut dyn Visitor) -> Result<ScanSummary> {
        if !self.live {
            return self.verify_once(visitor);
        }
        let mut held = HeldProblems {
            visitor: &mut *visitor,
            problems: Vec::new(),
        };
        let mut summary = self.verify_once(&mut held)?;
        let mut problems = held.problems;
        let mut tries = 1;
        while summary.damage > 0 && tries < LIVE_LOOKS {
            std::thread::sleep(std::time::Duration::from_millis(20));
            // Later looks only decide which problems are real: their
            // records were already passed on by the first.
            let mut again = HeldProblems {
                visitor: &mut Ignore,
                problems: Vec::new(),
            };
            summary = self.verify_once(&mut again)?;
            problems = again.problems;
            tries += 1;
        }
        for p in &problems {
            visitor.problem(p);
        }
        Ok(summary)
    }

    fn verify_once(&self, visitor: &mut dyn Visitor) -> Result<ScanSummary> {
        let mut checks = verify::Invariants::new(visitor);
        let mut summary = self.scan(&mut checks)?;
        let late = checks.finish(summary.next_job_id, summary.segments, self.live);
        for p in &late {
            match p.severity {
                Severity::Damage => summary.damage += 1,
                Severity::Note => summary.notes += 1,
            }
            visitor.problem(p);
        }
        Ok(summary)
    }

    /// The bytes of the schedule file (`schedules.bin`, see
    /// [`crate::schedule`]) as they are now, checked with the decoder
    /// [`Scheduler::open`](crate::schedule::Scheduler::open) uses: `None`
    /// when the queue has none. A file the scheduler would refuse is an
    /// error of kind [`ErrorKind::Corrupt`] that names the file and the
    /// offset ([`ErrorKind::UnsupportedVersion`] for one a newer walq
    /// wrote). Nothing is written or locked.
    pub fn schedules(&self) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(crate::schedule::SCHEDULE_FILE);
        files::read_schedules(&path)
    }

    /// The names of the paused queues (file `PAUSED`, see
    /// [`crate::Queue::pause`]), sorted; empty when none is paused. A file
    /// the queue would refuse is an error of kind [`ErrorKind::Corrupt`]
    /// naming it. Nothing is written or locked.
    pub fn paused(&self) -> Result<Vec<String>> {
        let path = self.dir.join(crate::pause::PAUSED_FILE);
        let Some(data) = files::read_small(&path)? else {
            return Ok(Vec::new());
        };
        files::paused_names(data)
            .ok_or_else(|| Error::corrupt(&path, 0, "the list of paused queues is damaged"))
    }

    /// The schedules of the schedule file (`schedules.bin`), decoded as
    /// [`Scheduler::open`](crate::schedule::Scheduler::open) decodes them,
    /// each with its next tick: `None` when the queue has none. Fails as
    /// [`Inspector::schedules`] does (a damaged file is
    /// [`ErrorKind::Corrupt`], naming it and the offset), and with
    /// [`ErrorKind::NotFound`] when the directory holds no queue. Nothing
    /// is written or locked (not `schedules.lock` either).
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// use walq::schedule::{Schedule, Scheduler};
    /// let q = walq::Queue::open(dir.path())?;
    /// let inspector = walq::inspect::Inspector::open(dir.path())?;
    /// assert!(inspector.schedule_list()?.is_none());
    /// let scheduler = Scheduler::open(&q)?;
    /// scheduler.register(Schedule::every("heartbeat", Duration::from_secs(60))?)?;
    /// let list = inspector.schedule_list()?.unwrap();
    /// assert_eq!(list[0].name, "heartbeat");
    /// assert_eq!(list[0].every_secs, Some(60));
    /// assert_eq!(list[0].next_tick, Some(list[0].last_tick / 60 * 60 + 60));
    /// # Ok(()) }
    /// ```
    pub fn schedule_list(&self) -> Result<Option<Vec<ScheduleView>>> {
        scan::require_queue(&self.dir)?;
        schedules::read(&self.dir)
    }

    /// The queue's state as the files hold it now.
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.snapshot_observed(&mut Ignore)
    }

    /// [`Inspector::snapshot`], reporting every record and problem to
    /// `observer` as well (for progress). While a process holds the queue,
    /// a scan during which the set of segments changed is done again (up
    /// to [`LIVE_LOOKS`] times), so jobs carried into a new segment are not
    /// missed; so is one that found damage, which a read racing the writer
    /// can show (damage on disk is still there at the last look).
    pub fn snapshot_observed(&self, observer: &mut dyn Visitor) -> Result<Snapshot> {
        self.take_snapshot(true, observer)
    }

    /// [`Inspector::snapshot`] without the payloads of pending jobs: each
    /// [`PendingJob::payload`] is empty ([`PendingJob::payload_len`] says
    /// how long it is), so the snapshot's memory does not grow with the
    /// payloads. [`Inspector::payload_reader`] reads them back one at a
    /// time from the records the snapshot names ([`PendingJob::file`] and
    /// [`PendingJob::offset`]). Dead letters are left without theirs
    /// as well: each [`DeadLetter::payload`](crate::DeadLetter::payload)
    /// is empty, [`Snapshot::dead_places`] says where its record is and
    /// how long its payload is, and [`Inspector::dead_payload_reader`]
    /// reads them back one at a time. (`dead.wal` is scanned a record at a
    /// time by every snapshot; only damage makes a scan read the rest of
    /// it at once, as opening the queue does.)
    ///
    /// ```
    /// # fn main() -> walq::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = walq::Queue::open(dir.path())?;
    /// q.enqueue(b"hello")?;
    /// let inspector = walq::inspect::Inspector::open(dir.path())?;
    /// let snap = inspector.snapshot_without_payloads()?;
    /// let job = snap.jobs.values().next().unwrap();
    /// assert!(job.payload.is_empty());
    /// assert_eq!(job.payload_len, 5);
    /// let mut payloads = inspector.payload_reader();
    /// assert_eq!(payloads.read(job)?, b"hello");
    /// # Ok(()) }
    /// ```
    pub fn snapshot_without_payloads(&self) -> Result<Snapshot> {
        self.take_snapshot(false, &mut Ignore)
    }

    /// Reads the payloads of the jobs of a snapshot of this directory,
    /// each verified again (see [`PayloadReader`]).
    pub fn payload_reader(&self) -> PayloadReader {
        PayloadReader::new(&self.dir, self.live)
    }

    /// Reads the payloads of the dead letters of a snapshot of this
    /// directory, each verified again (see [`DeadPayloadReader`]).
    pub fn dead_payload_reader(&self) -> DeadPayloadReader {
        DeadPayloadReader::new(&self.dir, self.live)
    }

    fn take_snapshot(&self, payloads: bool, observer: &mut dyn Visitor) -> Result<Snapshot> {
        let mut tries = 0;
        loop {
            let before = files::list(&self.dir)?;
            let now = SystemClock.now_ms();
            let mut replay = snapshot::Replay::new(now, payloads, observer);
            let summary = self.scan(&mut replay)?;
            let mut snap = replay.into_snapshot();
            snap.next_job_id = snap.next_job_id.max(summary.next_job_id);
            snap.summary = summary;
            snap.paused = self.paused().unwrap_or_default().into_iter().collect();
            tries += 1;
            let settled = segments(&files::list(&self.dir)?) == segments(&before);
            // A read racing the writer's stores can copy a later record
            // whole and an earlier one half written: damage that a second
            // look does not find was such a race, not damage on disk.
            if !self.live || tries >= LIVE_LOOKS || (settled && snap.summary.damage == 0) {
                return Ok(snap);
            }
            if snap.summary.damage > 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// How many times a scan of a live queue is taken when it found damage
/// (or, for a snapshot, when the set of segments changed under it).
pub const LIVE_LOOKS: u32 = 3;

fn segments(names: &[String]) -> Vec<&String> {
    names
        .iter()
        .filter(|n| crate::segment::parse_name(n).is_some())
        .collect()
}
