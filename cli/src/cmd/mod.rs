//! One module per command.

mod bench;
mod cancel;
mod dead;
mod dump;
mod enqueue;
mod filter;
mod import;
mod limits;
mod lines;
mod look;
mod pause;
mod salvage;
mod schedules;
mod spill;
mod stats;
mod transfer;
mod verify;

use std::path::Path;

use walq::inspect::{Inspector, Snapshot};
use walq::{Durability, Options, Queue, Store};

use crate::args::Cmd;
use crate::fail::{CmdResult, Fail};

/// Runs a command; its exit code or failure.
pub fn run(cmd: Cmd) -> CmdResult {
    match cmd {
        Cmd::Stats(a) => stats::run(&a),
        Cmd::Peek(a) => look::peek(&a),
        Cmd::Show(a) => look::show(&a),
        Cmd::Verify(a) => verify::run(&a),
        Cmd::Dump(a) => dump::run(&a),
        Cmd::Dead(c) => dead::run(c),
        Cmd::Export(a) => transfer::export(&a),
        Cmd::Import(a) => import::import(&a),
        Cmd::Enqueue(a) => enqueue::run(&a),
        Cmd::Salvage(a) => salvage::run(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Cancel(a) => cancel::run(&a),
        Cmd::Schedules(a) => schedules::run(&a),
        Cmd::Pause(a) => pause::run(&a, true),
        Cmd::Resume(a) => pause::run(&a, false),
    }
}

/// Opens `dir` read-only and says on stderr when a running process holds
/// it (what is shown is then a snapshot that may already be stale).
pub fn inspect(dir: &Path) -> Result<Inspector, Fail> {
    let inspector = Inspector::open(dir).map_err(|e| Fail::reading(dir, &e))?;
    if inspector.live() {
        let who = match walq::inspect::lock_holder(dir) {
            Some(h) => format!(" (pid {})", h.pid),
            None => String::new(),
        };
        eprintln!(
            "walq: note: the queue is live: a running process{who} holds it. What follows \
             was read while it runs, without its lock: a snapshot that may already be stale."
        );
    }
    Ok(inspector)
}

/// A snapshot of `dir`, read-only.
pub fn snapshot(dir: &Path) -> Result<(Inspector, Snapshot), Fail> {
    let inspector = inspect(dir)?;
    let snap = inspector.snapshot().map_err(|e| Fail::reading(dir, &e))?;
    warn_damage(&snap);
    Ok((inspector, snap))
}

/// Warns on stderr when the scan found damage (what is shown skips it).
pub fn warn_damage(snap: &Snapshot) {
    if snap.summary.damage > 0 {
        eprintln!(
            "walq: warning: {} damaged place(s) found and skipped; `walq verify` lists them",
            snap.summary.damage
        );
    }
}

/// Opens the store in `dir` for writing, taking its lock. `existing`:
/// refuse a directory that holds no queue yet (instead of creating one).
/// `Durability::Os` for bulk writes, which sync once at the end. A queue
/// that exists is opened with the segment size its segments have (see
/// [`segment_size`]); a new one with the default.
pub fn open_store(dir: &Path, existing: bool, durability: Durability) -> Result<Store, Fail> {
    open_store_with(dir, existing, |segments| {
        let opts = Options::default().durability(durability);
        match segments {
            Some(size) => opts.segment_size(size),
            None => opts,
        }
    })
}

/// [`open_store`] with the options `opts` makes of the segment size of
/// the queue in `dir` (`None`: no segment yet, a new queue).
pub fn open_store_with(
    dir: &Path,
    existing: bool,
    opts: impl FnOnce(Option<u64>) -> Options,
) -> Result<Store, Fail> {
    // Ownership first: a queue of another user is refused alike by every
    // writing command (exit 6), whether or not its files can be read (its
    // read-only look failed first, with exit 3, when it was 0700).
    refuse_other_owner(dir)?;
    if existing {
        // Read-only look first: a typo must not create a queue, and a
        // damaged queue is not changed (the open alone, from a
        // checkpoint, does not read the records it covers).
        let summary = Inspector::open(dir)
            .and_then(|i| i.scan(&mut NoVisit))
            .map_err(|e| Fail::reading(dir, &e))?;
        if summary.damage > 0 {
            return Err(Fail::new(
                crate::fail::DAMAGED,
                format!(
                    "{}: {} damaged place(s) found, so nothing was changed: `walq verify {}` \
                     lists them, `walq salvage {} --into NEW` copies what is intact",
                    dir.display(),
                    summary.damage,
                    dir.display(),
                    dir.display()
                ),
            ));
        }
    }
    if !existing {
        refuse_foreign(dir)?;
    }
    let opts = opts(segment_size(dir)?);
    Store::open_with(dir, opts).map_err(|e| Fail::opening(dir, &e))
}

/// The segment size of the queue in `dir`: the length of its newest log
/// segment, `None` when it has none (no queue yet). Segments are
/// preallocated to the `Options::segment_size` the queue was opened with,
/// and no header records it: opened with the default instead, a queue of
/// 64 KiB segments would grow every new segment to 64 MiB. A newest
/// segment whose length is no segment size is refused, not guessed at.
pub fn segment_size(dir: &Path) -> Result<Option<u64>, Fail> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            let what = format!("{}: listing the directory: {e}", dir.display());
            return Err(Fail::new(crate::fail::UNREADABLE, what));
        }
    };
    let newest = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let digits = name.strip_suffix(".wal")?;
            let id: u32 = (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())??;
            Some((id, e.path()))
        })
        .max_by_key(|(id, _)| *id);
    let Some((_, path)) = newest else {
        return Ok(None);
    };
    let len = std::fs::metadata(&path).map(|m| m.len()).map_err(|e| {
        let what = format!("{}: reading its length: {e}", path.display());
        Fail::new(crate::fail::UNREADABLE, what)
    })?;
    if !(walq::MIN_SEGMENT_SIZE..=walq::MAX_SEGMENT_SIZE).contains(&len) {
        return Err(Fail::new(
            crate::fail::DAMAGED,
            format!(
                "{}: {len} bytes, which is no segment size ({}..={}): the queue's segment \
                 size cannot be told from it, so nothing was changed; `walq verify {}` \
                 checks the queue",
                path.display(),
                walq::MIN_SEGMENT_SIZE,
                walq::MAX_SEGMENT_SIZE,
                dir.display()
            ),
        ));
    }
    Ok(Some(len))
}

/// Refuses a queue directory that belongs to another user than the one
/// running walq: the files a writing command makes (a segment, a spare,
/// `CHECKPOINT`, `CLOSED`) would be the runner's, mode 0600, and the
/// queue's own process could no longer open them (an operator review:
/// `walq enqueue` run as root locked a service out of its queue). The
/// running user is the owner of `/proc/self` (proc(5)); without `/proc`
/// nothing is checked.
pub fn refuse_other_owner(dir: &Path) -> Result<(), Fail> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(queue), Ok(me)) = (std::fs::metadata(dir), std::fs::metadata("/proc/self")) else {
        return Ok(()); // missing (created by the open) or reported by it
    };
    if queue.uid() == me.uid() {
        return Ok(());
    }
    Err(Fail::new(
        crate::fail::FAILED,
        format!(
            "{}: belongs to user id {}, and walq runs as user id {}: the files this command \
             would write there would be unreadable to the queue's owner; run it as that user \
             (for example `sudo -u '#{}' walq ...`); nothing was changed",
            dir.display(),
            queue.uid(),
            me.uid(),
            queue.uid()
        ),
    ))
}

/// Refuses a directory that holds files but none of a queue (no `LOCK`,
/// which a queue's first open creates, and no `.wal` file, which a copy
/// of a queue without its `LOCK` still has): `walq enqueue ~ job` must not
/// scatter a queue's files among a home directory's. A new or empty
/// directory is made a queue.
fn refuse_foreign(dir: &Path) -> Result<(), Fail> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // missing (created by the open) or reported by it
    };
    let mut any = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == walq::LOCK_FILE || name.ends_with(".wal") {
            return Ok(());
        }
        any = true;
    }
    if !any {
        return Ok(());
    }
    Err(Fail::new(
        crate::fail::UNREADABLE,
        format!(
            "{}: holds files but no walq queue (no {} or .wal file); a queue is only \
             created in a new or empty directory",
            dir.display(),
            walq::LOCK_FILE
        ),
    ))
}

/// Syncs and closes a store opened by [`open_store`].
pub fn close_store(dir: &Path, store: Store) -> Result<(), Fail> {
    store
        .sync()
        .and_then(|()| store.close())
        .map_err(|e| Fail::operation(dir, &e))
}

/// The queue `name` of `store`: the default queue for an empty name (as a
/// dead letter names it) or "default".
pub fn queue_of(store: &Store, name: &str) -> walq::Result<Queue> {
    if name.is_empty() {
        Ok(store.default_queue())
    } else {
        store.queue(name)
    }
}

struct NoVisit;
impl walq::inspect::Visitor for NoVisit {}
