//! `walq salvage DIR --into NEW`: the intact jobs of a damaged queue,
//! copied into a fresh one; the damaged directory is only read.

use std::io::Write;
use std::path::{Path, PathBuf};

use walq::inspect::{DeadPayloadReader, PayloadReader, Severity, Snapshot};
use walq::schedule::SCHEDULE_FILE;

use crate::args::SalvageArgs;
use crate::fail::{CmdResult, Fail, DAMAGED, FAILED, OK};
use crate::progress;

use super::limits::Limits;
use super::transfer::{add_dead, add_job, DeadSpec, JobSpec, Target};

/// NEW must be absent or an empty directory, and neither DIR itself nor
/// inside it (salvage only reads DIR).
fn check_target(dir: &Path, into: &Path) -> Result<(), Fail> {
    if let (Ok(a), Some(b)) = (dir.canonicalize(), resolved(into)) {
        if a == b {
            return Err(Fail::new(FAILED, "--into must be a new directory, not DIR"));
        }
        if b.starts_with(&a) {
            let what = format!(
                "--into {} is inside {}, which salvage only reads",
                into.display(),
                dir.display()
            );
            return Err(Fail::new(FAILED, what));
        }
    }
    match std::fs::read_dir(into).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(Fail::new(
            FAILED,
            format!(
                "{}: not empty; salvage writes only into a new queue",
                into.display()
            ),
        )),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Fail::new(FAILED, format!("{}: {e}", into.display()))),
    }
}

/// What `path` will be once created: its nearest existing ancestor,
/// canonical, with the missing rest appended. `None` if a missing part is
/// `..` or the path has no existing ancestor.
fn resolved(path: &Path) -> Option<PathBuf> {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = at.canonicalize() {
            return Some(missing.iter().rev().fold(real, |p, part| p.join(part)));
        }
        missing.push(at.file_name()?.to_owned());
        at = match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
}

/// The limits that take every job and dead letter of `snap`; a failure
/// names the first that no queue takes, before NEW is created.
fn limits_of(dir: &Path, snap: &Snapshot) -> Result<Limits, Fail> {
    let mut limits = Limits::default();
    let refuse = |kind: &str, id: u64, why: String| {
        Fail::new(
            FAILED,
            format!("{}: {kind} {id}: {why}; nothing was copied", dir.display()),
        )
    };
    for d in snap.dead.values() {
        // Nor dead letters: their lengths are known too.
        let mut sizes = DeadSpec::of(d).sizes();
        sizes.payload = snap.dead_places.get(&d.id).map_or(0, |p| p.payload_len);
        limits
            .admit(&sizes)
            .map_err(|why| refuse("dead letter", d.id, why))?;
    }
    for j in snap.jobs.values() {
        // The snapshot holds no payloads: their lengths are known.
        let mut sizes = JobSpec::of(j).sizes();
        sizes.payload = j.payload_len;
        limits
            .admit(&sizes)
            .map_err(|why| refuse("job", j.id, why))?;
    }
    Ok(limits)
}

/// The readers of the payloads of a snapshot's pending jobs and dead
/// letters.
struct Readers {
    jobs: PayloadReader,
    dead: DeadPayloadReader,
}

/// Copies the dead letters and jobs of `snap` into `target`, each payload
/// read back with `payloads`: (jobs, dead letters, duplicates).
fn copy_all(
    a: &SalvageArgs,
    target: &mut Target,
    snap: &Snapshot,
    payloads: &mut Readers,
) -> Result<(u64, u64, u64), Fail> {
    let bar = progress::bar(
        (snap.jobs.len() + snap.dead.len()) as u64,
        "copying",
        "items",
    );
    let (mut jobs, mut dead, mut dups) = (0u64, 0u64, 0u64);
    let copy = |e: walq::Error| Fail::operation(&a.into, &e);
    // Dead letters first: they are made by leasing a job, so no other may be ready.
    for d in snap.dead.values() {
        let payload = match payloads.dead.read_letter(snap, d.id) {
            Ok(p) => p,
            // A live DIR: the letter was redriven or purged after the snapshot.
            Err(e) if e.kind() == walq::ErrorKind::NotFound => {
                eprintln!(
                    "walq: note: dead letter {} was removed while salvage ran: left out",
                    d.id
                );
                continue;
            }
            Err(e) => return Err(Fail::reading(&a.dir, &e)),
        };
        let spec = DeadSpec {
            payload: &payload,
            ..DeadSpec::of(d)
        };
        match add_dead(target, &spec).map_err(copy)? {
            true => dead += 1,
            false => dups += 1,
        }
        bar.inc(1);
    }
    // In enqueue order, so that a group's jobs keep theirs.
    for j in snap.jobs.values() {
        let payload = match payloads.jobs.read(j) {
            Ok(p) => p,
            // A live DIR: the job finished after the snapshot.
            Err(e) if e.kind() == walq::ErrorKind::NotFound => {
                eprintln!(
                    "walq: note: job {} finished while salvage ran: left out",
                    j.id
                );
                continue;
            }
            Err(e) => return Err(Fail::reading(&a.dir, &e)),
        };
        let spec = JobSpec {
            payload: &payload,
            ..JobSpec::of(j)
        };
        match add_job(target, &spec).map_err(copy)? {
            true => jobs += 1,
            false => dups += 1,
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((jobs, dead, dups))
}

/// Writes `bytes`, a schedule file that verified, into the queue
/// directory `into` as `schedules.bin`, as the scheduler writes it
/// (crash-atomically: a temporary file synced, renamed, the directory
/// synced; mode 0600).
fn write_schedules(into: &Path, bytes: &[u8]) -> Result<(), Fail> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = into.join(SCHEDULE_FILE);
    let tmp = into.join(format!("{SCHEDULE_FILE}.tmp"));
    let fail = |e: std::io::Error| Fail::new(FAILED, format!("{}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(fail)?;
    std::fs::File::open(into)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

/// Runs `walq salvage`.
pub fn run(a: &SalvageArgs) -> CmdResult {
    check_target(&a.dir, &a.into)?;
    let inspector = super::inspect(&a.dir)?;
    let read = |e: walq::Error| Fail::reading(&a.dir, &e);
    // Without payloads: each is read back (and verified again) when its
    // job or dead letter is copied, so memory does not grow with them.
    let snap = inspector.snapshot_without_payloads().map_err(read)?;
    super::warn_damage(&snap);
    let mut payloads = Readers {
        jobs: inspector.payload_reader(),
        dead: inspector.dead_payload_reader(),
    };
    let limits = limits_of(&a.dir, &snap)?;
    let mut target = Target::open(&a.into, &limits)?;
    let (jobs, dead, dups) = copy_all(a, &mut target, &snap, &mut payloads)?;
    let pauses_lost = carry_pauses(a, &inspector, &mut target)?;
    target.close(&a.into)?;
    writeln!(
        std::io::stdout().lock(),
        "copied {jobs} pending jobs and {dead} dead letters into {}",
        a.into.display()
    )?;
    // `Some(why)`: DIR has a schedule file that was not copied.
    let schedules_lost = match inspector.schedules() {
        Ok(None) => None,
        Ok(Some(bytes)) => {
            write_schedules(&a.into, &bytes)?;
            writeln!(
                std::io::stdout().lock(),
                "copied {SCHEDULE_FILE} (the recurring schedules and how far each has run)"
            )?;
            None
        }
        Err(e) if e.kind() == walq::ErrorKind::Io => return Err(Fail::reading(&a.dir, &e)),
        Err(e) => Some(e.to_string()),
    };
    if dups > 0 {
        writeln!(
            std::io::stdout().lock(),
            "skipped {dups} that shared an idempotency key with one copied before"
        )?;
    }
    let damage: Vec<_> = snap
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Damage)
        .collect();
    if damage.is_empty() && schedules_lost.is_none() && pauses_lost.is_none() {
        writeln!(
            std::io::stdout().lock(),
            "nothing lost: {} was healthy",
            a.dir.display()
        )?;
        return Ok(OK);
    }
    writeln!(
        std::io::stdout().lock(),
        "lost: whatever the damaged bytes held:"
    )?;
    for p in &damage {
        writeln!(std::io::stdout().lock(), "  {p}")?;
    }
    if let Some(why) = &schedules_lost {
        writeln!(
            std::io::stdout().lock(),
            "  {SCHEDULE_FILE} was not copied ({why}): every recurring schedule and its \
             progress; register them again on {}",
            a.into.display()
        )?;
    }
    if let Some(why) = &pauses_lost {
        writeln!(
            std::io::stdout().lock(),
            "  which queues were paused ({why}): every queue of {} delivers; pause again \
             those that must wait",
            a.into.display()
        )?;
    }
    if snap.summary.records_lost > 0 {
        writeln!(
            std::io::stdout().lock(),
            "  at least {} log records are missing (each an enqueue or a state change of a job)",
            snap.summary.records_lost
        )?;
    }
    writeln!(
        std::io::stdout().lock(),
        "{} was not changed",
        a.dir.display()
    )?;
    Ok(DAMAGED)
}

/// Pauses in `target` the queues paused in DIR (file `PAUSED`), so that a
/// salvaged copy does not start delivering what its source held back.
/// `Some(why)` when DIR's list cannot be read (damaged): nothing paused.
fn carry_pauses(
    a: &SalvageArgs,
    inspector: &walq::inspect::Inspector,
    target: &mut Target,
) -> Result<Option<String>, Fail> {
    let names = match inspector.paused() {
        Ok(names) => names,
        Err(e) if e.kind() == walq::ErrorKind::Io => return Err(Fail::reading(&a.dir, &e)),
        Err(e) => return Ok(Some(e.to_string())),
    };
    for name in &names {
        let queue = target
            .queue(name)
            .map_err(|e| Fail::operation(&a.into, &e))?;
        queue.pause().map_err(|e| Fail::operation(&a.into, &e))?;
    }
    if !names.is_empty() {
        let names = names.join(", ");
        writeln!(
            std::io::stdout().lock(),
            "paused again: {names} (as in the source)"
        )?;
    }
    Ok(None)
}
