//! `walq export`: pending jobs and dead letters as JSON lines, the format
//! described in docs/cli.md; and the writing of jobs and dead letters into
//! a target queue that `walq import` and `walq salvage` share.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use walq::inspect::{PendingJob, Snapshot};

use walq::{DeadLetter, Durability, EnqueueOptions, Priority, Queue, Store};

use super::limits::{Limits, Sizes};
use crate::args::ExportArgs;
use crate::fail::{CmdResult, Fail, FAILED, OK};
use crate::{progress, render};

/// The version of the export format this build writes and reads.
pub const EXPORT_VERSION: u64 = 1;

/// Refuses an output file in the queue's own directory: export only
/// reads the queue, and `-o DIR/0000000001.wal` would overwrite a segment.
fn refuse_inside(output: &Path, dir: &Path) -> Result<(), Fail> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let same = match (parent.canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        let what = format!(
            "{}: the output would be written into the queue directory {}, which export only reads",
            output.display(),
            dir.display()
        );
        return Err(Fail::new(FAILED, what));
    }
    Ok(())
}

/// Where `path` leads: its symbolic links followed (up to 40), whether or
/// not the file at the end exists.
fn link_target(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        let Ok(to) = std::fs::read_link(&p) else {
            break;
        };
        p = match p.parent() {
            Some(parent) if to.is_relative() => parent.join(to),
            _ => to,
        };
    }
    p
}

/// Opens export's output file: private to its owner (0600, it holds
/// every payload; an existing file is made so too), and never one of the
/// queue's own files by another name (a symbolic or hard link): checked
/// before anything is created or cut, so a refused output changes no
/// byte. A device (`/dev/null`, `/dev/stdout`) is written as it is.
fn create_output(path: &Path, dir: &Path) -> Result<std::fs::File, Fail> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    // A symbolic link, even one to a file not there yet (which opening
    // would create inside the queue), is refused like the path it leads
    // to; one to an existing file of the queue is caught by the inode
    // below as well.
    if link_target(path) != path {
        refuse_inside(&link_target(path), dir)?;
    }
    let fail = |e: std::io::Error| Fail::new(FAILED, format!("{}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        // Cut only once it is known not to be a file of the queue.
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| Fail::new(FAILED, format!("{}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        if let Ok(m) = entry.metadata() {
            if (m.dev(), m.ino()) == (meta.dev(), meta.ino()) {
                return Err(Fail::new(
                    FAILED,
                    format!(
                        "{}: the output is the queue's file {} by another name, which export only reads",
                        path.display(),
                        entry.path().display()
                    ),
                ));
            }
        }
    }
    if meta.is_file() {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
        file.set_len(0).map_err(fail)?;
    }
    Ok(file)
}

/// Runs `walq export`. The snapshot leaves the payloads of pending jobs
/// and dead letters out, and each is read back (and verified again) when
/// its line is written: memory does not grow with the payloads.
pub fn export(a: &ExportArgs) -> CmdResult {
    if let Some(path) = &a.output {
        refuse_inside(path, &a.dir)?;
    }
    let inspector = super::inspect(&a.dir)?;
    let mut snap = inspector
        .snapshot_without_payloads()
        .map_err(|e| Fail::reading(&a.dir, &e))?;
    super::warn_damage(&snap);
    super::filter::only(&a.dir, &mut snap, a.queue.as_deref())?;
    let file = match &a.output {
        Some(path) => Some(create_output(path, &a.dir)?),
        None => None,
    };
    let mut out: Box<dyn Write> = match &file {
        Some(f) => Box::new(std::io::BufWriter::new(f)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut payloads = inspector.payload_reader();
    let mut dead = inspector.dead_payload_reader();
    let source = Source {
        dir: &a.dir,
        live: inspector.live(),
        snap: &snap,
        queue: a.queue.as_deref(),
    };
    let written = write_export(
        &mut out,
        &source,
        &mut |job| payloads.read(job).map(Cow::Owned),
        &mut |d| dead.read_letter(&snap, d.id).map(Cow::Owned),
    )
    // The buffer's last bytes: a drop would swallow their failure.
    .and_then(|counts| Ok(out.flush().map(|()| counts)?));
    drop(out);
    let regular = |f: &std::fs::File| f.metadata().is_ok_and(|m| m.is_file());
    let output = file.as_ref().filter(|f| regular(f)).zip(a.output.as_ref());
    let (gone, gone_dead) = match (written, output) {
        (Ok(counts), _) => counts,
        // A file cut short by a failure is no export: it is removed, so
        // that no import takes it for one.
        (Err(f), Some((_, path))) => {
            let removed = match std::fs::remove_file(path) {
                Ok(()) => "the incomplete file was removed".to_string(),
                Err(e) => format!("the incomplete file could not be removed: {e}"),
            };
            let said = f.message.trim_start_matches("writing output: ");
            let what = format!("{}: {said}; {removed}", path.display());
            return Err(Fail::new(f.code, what));
        }
        // A device or a pipe given as `-o`: named, nothing to remove.
        (Err(f), None) => {
            return Err(match &a.output {
                Some(path) => Fail::new(
                    f.code,
                    format!(
                        "{}: {}",
                        path.display(),
                        f.message.trim_start_matches("writing output: ")
                    ),
                ),
                None => f,
            })
        }
    };
    // A file is durable before it is reported written (a device, such as
    // `/dev/null` or a pipe, has nothing to sync and refuses it).
    if let Some((f, path)) = output {
        f.sync_all()
            .map_err(|e| Fail::new(FAILED, format!("{}: {e}", path.display())))?;
    }
    if gone > 0 {
        eprintln!(
            "walq: note: {gone} job(s) finished while the export ran (the running process \
             removed their records) and were left out"
        );
    }
    if gone_dead > 0 {
        eprintln!(
            "walq: note: {gone_dead} dead letter(s) were redriven or purged while the export \
             ran (the running process rewrote dead.wal without them) and were left out"
        );
    }
    eprintln!(
        "walq: exported {} pending jobs and {} dead letters",
        snap.jobs.len() as u64 - gone,
        snap.dead.len() as u64 - gone_dead
    );
    Ok(OK)
}

/// What an export is made of: the queue's directory, whether it was
/// live, its snapshot, and the one queue it holds (`--queue`), if so.
struct Source<'a> {
    dir: &'a Path,
    live: bool,
    snap: &'a Snapshot,
    queue: Option<&'a str>,
}

/// How an export gets a pending job's payload.
type PayloadOf<'a> = dyn FnMut(&PendingJob) -> walq::Result<Cow<'_, [u8]>> + 'a;

/// How an export gets a dead letter's payload.
type DeadPayloadOf<'a> = dyn FnMut(&DeadLetter) -> walq::Result<Cow<'_, [u8]>> + 'a;

/// Writes the export of `src` to `out`: the header, the pending jobs in
/// enqueue order (so that a group's jobs keep theirs on import), each with
/// the payload `payload_of` gives, then the dead letters, each with the
/// payload `dead_of` gives; how many jobs and dead letters were left out
/// because they finished or were removed meanwhile (a live queue: their
/// payload is `NotFound`). A payload that cannot be read is an error
/// naming its file and offset (what was written before it is an
/// incomplete export).
fn write_export(
    out: &mut dyn Write,
    src: &Source<'_>,
    payload_of: &mut PayloadOf<'_>,
    dead_of: &mut DeadPayloadOf<'_>,
) -> Result<(u64, u64), Fail> {
    let snap = src.snap;
    let mut header = json!({
        "walq_export": EXPORT_VERSION,
        "source": src.dir.display().to_string(),
        "exported_ms": snap.taken_ms,
        "live": src.live,
        "jobs": snap.jobs.len(),
        "dead": snap.dead.len(),
    });
    if let Some(q) = src.queue {
        header["queue"] = json!(q);
    }
    writeln!(out, "{header}")?;
    let bar = progress::bar(
        (snap.jobs.len() + snap.dead.len()) as u64,
        "exporting",
        "items",
    );
    let mut gone = 0;
    for job in snap.jobs.values() {
        let payload = match payload_of(job) {
            Ok(p) => p,
            Err(e) if src.live && e.kind() == walq::ErrorKind::NotFound => {
                gone += 1;
                continue;
            }
            Err(e) => return Err(incomplete(src.dir, &e)),
        };
        let mut m = super::look::job_json_with(job, "pending", &payload);
        m.remove("status");
        m.insert("type".into(), json!("job"));
        writeln!(out, "{}", Value::Object(m))?;
        bar.inc(1);
    }
    let gone_dead = write_dead(out, src, dead_of, &bar)?;
    bar.finish_and_clear();
    out.flush()?;
    Ok((gone, gone_dead))
}

/// The failure of an export that could not read a payload.
fn incomplete(dir: &Path, e: &walq::Error) -> Fail {
    let fail = Fail::reading(dir, e);
    let what = format!("{fail} (the export is incomplete)");
    Fail::new(fail.code, what)
}

/// Writes the dead letters of `src` to `out`, each with the payload
/// `dead_of` gives; how many were left out because they were removed
/// meanwhile (a live queue: their payload is `NotFound`).
fn write_dead(
    out: &mut dyn Write,
    src: &Source<'_>,
    dead_of: &mut DeadPayloadOf<'_>,
    bar: &indicatif::ProgressBar,
) -> Result<u64, Fail> {
    let mut gone = 0;
    for d in src.snap.dead.values() {
        let payload = match dead_of(d) {
            Ok(p) => p,
            Err(e) if src.live && e.kind() == walq::ErrorKind::NotFound => {
                gone += 1;
                continue;
            }
            Err(e) => return Err(incomplete(src.dir, &e)),
        };
        let mut m = super::look::dead_json_with(d, &payload);
        m.remove("status");
        m.insert("type".into(), json!("dead"));
        writeln!(out, "{}", Value::Object(m))?;
        bar.inc(1);
    }
    Ok(gone)
}

/// The queues of a store written to, by name (empty: the default queue),
/// each opened once.
pub struct Target {
    store: Store,
    queues: HashMap<String, Queue>,
}

impl Target {
    /// Opens the store in `dir` for bulk writes, with `limits` (and says
    /// so on stderr when they are not the defaults).
    pub fn open(dir: &Path, limits: &Limits) -> Result<Target, Fail> {
        // An existing queue keeps its segment size while its segments
        // hold every item; a larger one is chosen only when they do not.
        let mut chosen = None;
        let store = super::open_store_with(dir, false, |existing| {
            let size = match existing {
                Some(size) if limits.fits_in(size) => size,
                Some(size) => limits.segment_size().max(size),
                None => limits.segment_size(),
            };
            chosen = Some((existing, size));
            limits
                .options()
                .segment_size(size)
                .durability(Durability::Os)
        })?;
        let grown = matches!(chosen, Some((Some(old), new)) if new > old);
        if limits.raised() || grown {
            let size = chosen.map_or(limits.segment_size(), |(_, size)| size);
            eprintln!(
                "walq: note: an item is over the default limits or the queue's segments: {} \
                 was opened with max_payload {} and segment_size {size}; open it with at \
                 least these (Options::max_payload, Options::segment_size)",
                dir.display(),
                limits.max_payload(),
            );
        }
        Ok(Target {
            store,
            queues: HashMap::new(),
        })
    }

    /// The queue `name`.
    pub fn queue(&mut self, name: &str) -> walq::Result<&Queue> {
        if !self.queues.contains_key(name) {
            let q = super::queue_of(&self.store, name)?;
            self.queues.insert(name.to_string(), q);
        }
        Ok(&self.queues[name])
    }

    /// Syncs and closes the store.
    pub fn close(self, dir: &Path) -> Result<(), Fail> {
        drop(self.queues);
        super::close_store(dir, self.store)
    }
}

/// A dead letter to add: its queue, level, payload, key and error.
pub struct DeadSpec<'a> {
    /// Its queue's name (empty: the default queue).
    pub queue: &'a str,
    /// Its priority level (a redrive returns it at this level).
    pub priority: Priority,
    /// The payload.
    pub payload: &'a [u8],
    /// The idempotency key, if any.
    pub key: Option<&'a [u8]>,
    /// The last error.
    pub error: &'a str,
}

impl<'a> DeadSpec<'a> {
    /// The spec of a dead letter found in a snapshot (its group is not
    /// kept: a dead letter is rebuilt without one).
    pub fn of(d: &'a DeadLetter) -> DeadSpec<'a> {
        DeadSpec {
            queue: &d.queue,
            priority: d.priority,
            payload: &d.payload,
            key: d.key.as_deref(),
            error: &d.error,
        }
    }

    /// What the target's limits must admit of it.
    pub fn sizes(&self) -> Sizes<'a> {
        Sizes {
            queue: self.queue,
            payload: self.payload.len() as u64,
            key: self.key.map(<[u8]>::len),
            group: None,
        }
    }
}

/// Adds a dead letter straight to its queue's dead letters
/// (`Queue::enqueue_dead_letter`: nothing is delivered, no other job is
/// touched). `false`: its key was already known, nothing was added.
pub fn add_dead(t: &mut Target, d: &DeadSpec<'_>) -> walq::Result<bool> {
    let q = t.queue(d.queue)?;
    let mut opts = EnqueueOptions::new().priority(d.priority);
    if let Some(k) = d.key {
        opts = opts.idempotency_key(k);
    }
    let added = q.enqueue_dead_letter(d.payload, opts, d.error)?;
    Ok(!added.duplicate)
}

/// A pending job to add: its queue, what is left of its delay and
/// attempts, and its key, level and group.
pub struct JobSpec<'a> {
    /// Its queue's name (empty: the default queue).
    pub queue: &'a str,
    /// The payload.
    pub payload: &'a [u8],
    /// The idempotency key, if any.
    pub key: Option<&'a [u8]>,
    /// When it is due (ms since the epoch).
    pub due_ms: u64,
    /// Attempts it has left.
    pub attempts_left: u32,
    /// Its priority level.
    pub priority: Priority,
    /// Its message group, if any.
    pub group: Option<&'a [u8]>,
}

impl<'a> JobSpec<'a> {
    /// The spec of a job found in a snapshot.
    pub fn of(j: &'a PendingJob) -> JobSpec<'a> {
        JobSpec {
            queue: &j.queue,
            payload: &j.payload,
            key: j.key.as_deref(),
            due_ms: j.due_ms,
            attempts_left: j.max_attempts.saturating_sub(j.attempts).max(1),
            priority: j.priority,
            group: j.group.as_deref(),
        }
    }

    /// What the target's limits must admit of it.
    pub fn sizes(&self) -> Sizes<'a> {
        Sizes {
            queue: self.queue,
            payload: self.payload.len() as u64,
            key: self.key.map(<[u8]>::len),
            group: self.group.map(<[u8]>::len),
        }
    }
}

/// Adds a pending job to its queue; false if its key was already known.
pub fn add_job(t: &mut Target, job: &JobSpec<'_>) -> walq::Result<bool> {
    let q = t.queue(job.queue)?;
    // A job due further ahead than an enqueue may delay one (written
    // before walq refused such delays: due at `u64::MAX` ms, parked for
    // good) is carried over due in `MAX_DELAY`, not refused.
    let delay =
        Duration::from_millis(job.due_ms.saturating_sub(render::now_ms())).min(walq::MAX_DELAY);
    let mut opts = EnqueueOptions::new()
        .delay(delay)
        .max_attempts(job.attempts_left.min(walq::MAX_ATTEMPTS_LIMIT))
        .priority(job.priority);
    if let Some(k) = job.key {
        opts = opts.idempotency_key(k);
    }
    if let Some(g) = job.group {
        opts = opts.group(g);
    }
    Ok(!q.enqueue_with(job.payload, opts)?.duplicate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use walq::fixture::filled_store as filled;
    use walq::inspect::Inspector;

    /// The export as `walq export` wrote it before it read payloads back:
    /// from a snapshot that holds them all (the code of that version).
    fn old_export(out: &mut Vec<u8>, dir: &Path, live: bool, snap: &Snapshot) {
        let header = json!({
            "walq_export": EXPORT_VERSION,
            "source": dir.display().to_string(),
            "exported_ms": snap.taken_ms,
            "live": live,
            "jobs": snap.jobs.len(),
            "dead": snap.dead.len(),
        });
        writeln!(out, "{header}").unwrap();
        for job in snap.jobs.values() {
            let mut m = super::super::look::job_json(job, "pending");
            m.remove("status");
            m.insert("type".into(), json!("job"));
            writeln!(out, "{}", Value::Object(m)).unwrap();
        }
        for d in snap.dead.values() {
            let mut m = super::super::look::dead_json(d);
            m.remove("status");
            m.insert("type".into(), json!("dead"));
            writeln!(out, "{}", Value::Object(m)).unwrap();
        }
    }

    #[test]
    fn the_export_is_byte_for_byte_the_one_of_the_full_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        filled(tmp.path());
        let inspector = Inspector::open(tmp.path()).unwrap();
        let full = inspector.snapshot().unwrap();
        let mut lean = inspector.snapshot_without_payloads().unwrap();
        assert!(full.summary.segments > 1 && full.dead.len() >= 100);
        assert!(
            full.jobs.values().any(|j| j.leased) && full.jobs.values().any(|j| j.queue == "mail")
        );
        // Taken a moment apart: the header's time is the one difference.
        lean.taken_ms = full.taken_ms;
        let mut before = Vec::new();
        old_export(&mut before, tmp.path(), false, &full);
        let mut after = Vec::new();
        let mut payloads = inspector.payload_reader();
        let mut dead = inspector.dead_payload_reader();
        let source = Source {
            dir: tmp.path(),
            live: false,
            snap: &lean,
            queue: None,
        };
        assert!(lean.dead.values().all(|d| d.payload.is_empty()));
        let gone = write_export(
            &mut after,
            &source,
            &mut |job| payloads.read(job).map(Cow::Owned),
            &mut |d| dead.read_letter(&lean, d.id).map(Cow::Owned),
        );
        assert_eq!(gone.unwrap(), (0, 0));
        assert_eq!(
            after.iter().filter(|&&b| b == b'\n').count(),
            1 + full.jobs.len() + full.dead.len()
        );
        assert!(after == before, "the export changed");
    }
}
