//! A full disk (brief guarantee 13; issue 8, findings 7 and 9): fill the
//! file system a queue lives on until enqueue fails, then check that the
//! failure was an error and that the queue can be drained while the disk
//! is still full.
//!
//! # The scenario
//!
//! Three phases, run one after the other on the same directory:
//!
//! 1. **fill**: open the queue (1 MiB segments on a real disk, so it
//!    rotates often; `Durability::Os`, or `Sync` where the run says so)
//!    and enqueue self-checking payloads
//!    of 0.5–8 KiB until an enqueue fails. Then list the queue directory.
//! 2. **drain**: top the disk up with a filler file (written until it gets
//!    ENOSPC, in ever smaller pieces), so the disk is full for certain;
//!    reopen the queue; cancel a few jobs; dequeue and ack every job; then enqueue 100 new jobs
//!    and dequeue and ack them (the space the drain freed must be usable).
//! 3. **verify**: give space back and open the queue again, then lease and
//!    ack whatever is left. Removing the filler alone does not do it (the
//!    queue's own segments fill the disk), so on a real disk the queue's
//!    files are copied to the default temporary directory and opened there,
//!    and the simulated disk is made larger.
//!
//! Checks, each reported on its own line of the summary:
//!
//! - `enospc-is-error`: the fill ends with an `Err` of kind `Io` whose OS
//!   error is ENOSPC (`StorageFull`), not with another error and not with
//!   the process killed by a signal (on btrfs a store into the mapped
//!   segment can raise SIGBUS: the reason the phases run in a child
//!   process on a real disk);
//! - `no-tmp-left`: right after the failed enqueue, no `*.tmp` file (a
//!   rewrite that failed) and no spare segment short of its full size (a
//!   segment whose preparation failed) is left in the queue directory
//!   taking the last free bytes;
//! - `reopen-while-full`: the queue opens on the full disk;
//! - `cancel-while-full`: eight waiting jobs are cancelled on the full
//!   disk; each cancel returns `Ok` (on a copy-on-write disk through the
//!   reserve) or ENOSPC (elsewhere: `done.rec` has no room for the
//!   marker), and never poisons the queue (before, it did, and the drain
//!   failed); a cancelled job never comes out (`ok-jobs-survive`);
//! - `drain-while-full`: every job can be dequeued and acked on the full
//!   disk (leases and acks always have room), and no job comes out that was
//!   not enqueued, or comes out twice;
//! - `enqueue-after-drain`: after the drain, enqueue works again (and
//!   those jobs can be dequeued and acked), with the filler still there;
//! - `ok-jobs-survive`: every job whose enqueue returned `Ok` was delivered
//!   by the drain or is still there once space is back (phase 3), with its
//!   payload intact; no acked job comes back.
//!
//! Whether the queue keeps serving leases and acks in the same process right
//! after the failed enqueue (or refuses with `Poisoned` until reopened, as
//! `tests/io_faults.rs` expects today) is printed as information, not
//! checked: the brief asks for draining a full disk, and reopening is how
//! an operator recovers a poisoned queue.
//!
//! # Where it runs
//!
//! - With `WALQ_FULL_DISK_DEAD_DIR=<dir>` (an empty directory on a small
//!   btrfs), `dead_letters_on_a_full_real_disk` dead-letters jobs on that
//!   disk filled to the last byte (`dead_letters_on_a_full_cow_disk` does
//!   on the simulated copy-on-write one).
//! - With `WALQ_FULL_DISK_DIR=<dir>` set, `full_disk_scenario_real_fs` runs
//!   the scenario on the real file system holding `<dir>` (the directory
//!   must be on a small, otherwise empty file system: it is filled to the
//!   last byte). Each phase runs in a child process (the test binary
//!   re-executes itself, as `crash_kill9.rs` does), so a process killed by
//!   SIGBUS or any other signal is reported as a clear failure of the check
//!   that was under way, and the later phases still run and report.
//!   `.ci/fs-matrix.sh` sets the variable for ext4, xfs, btrfs and tmpfs
//!   file systems it makes on loop devices (and overlayfs over ext4), and runs the scenario twice on
//!   each (on fresh file systems): with `WALQ_FULL_DISK_DURABILITY=os` (the
//!   default) and `=sync` (`pwrite` appends and an `fdatasync` per call,
//!   the path `Durability::Sync` queues take).
//! - Without it, that test does nothing and says so, and
//!   `full_disk_scenario_sim` runs the same scenario on the simulated file
//!   system. `SimFs` itself has no notion of space (its ENOSPC is an
//!   injected fault on the k-th operation, which a drain cannot undo), so
//!   this file wraps it in `QuotaFs`: a fixed number of bytes, charged when
//!   a file grows (a write past its end, `set_len`, `allocate`) and given
//!   back when it shrinks or when a removed file's last handle is closed,
//!   as on a real disk. A preallocation that does not fit allocates what
//!   fits and then fails, as `fallocate` does on ext4, leaving a partly
//!   allocated file. Overwriting allocated bytes costs nothing, which is
//!   how ext4, xfs and tmpfs behave for preallocated files and not how a
//!   copy-on-write file system (btrfs) behaves; and a memory store can
//!   never fail there, because `SimFs` maps files onto heap memory. So the
//!   simulated run checks the queue's logic on a full disk (room kept for
//!   leases and acks, a failed `.tmp` removed, space coming back), and only
//!   the real-file-system run can catch a SIGBUS. `full_disk_scenario_sim_cow`
//!   runs the scenario again on a copy-on-write quota (`QuotaFs::new_cow`:
//!   an overwrite needs free space for a new copy of each 4 KiB block it
//!   touches), which refuses the drain's lease records on a full disk as
//!   btrfs does, so the `RESERVE` file walq keeps there is exercised in
//!   `cargo test` too; `full_disk_scenario_sim_quota` runs it on a quota
//!   that runs out (EDQUOT, treated as a full disk). Mounting a small tmpfs
//!   from inside `cargo test` would need root and would mount things behind
//!   the user's back, so that is left to `.ci/fs-matrix.sh`.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use walq::vfs::{Mapping, SimFs, StdFs, Vfs, VfsFile};
use walq::{Durability, EnqueueOptions, ErrorKind, Options, Queue};

const DIR_ENV: &str = "WALQ_FULL_DISK_DIR";
const DURABILITY_ENV: &str = "WALQ_FULL_DISK_DURABILITY";
const CHILD_PHASE_ENV: &str = "WALQ_FULL_DISK_CHILD";
const CHILD_ROOT_ENV: &str = "WALQ_FULL_DISK_CHILD_ROOT";
const CHILD_TEST: &str = "full_disk_scenario_child";
/// Marks the lines of the phase protocol in a child's stdout.
const PREFIX: &str = "@F ";
/// How long the parent waits for a child's next line before calling it hung.
const HANG_LIMIT: Duration = Duration::from_secs(300);
/// Tags of the jobs enqueued after the drain.
const AFTER_DRAIN_BASE: u64 = 1 << 40;
const AFTER_DRAIN_JOBS: u64 = 100;

/// Sizes (and the durability) of one run of the scenario.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// `Os`: appends are stores into the mapped segment; `Sync`: `pwrite`
    /// and an `fdatasync` per call, with zeros written ahead of the tail on
    /// ext4, xfs and tmpfs (`Log::zero_ahead`).
    durability: Durability,
    segment: u64,
    min_payload: u64,
    max_payload: u64,
    /// The fill gives up (and fails its check) past this many bytes.
    fill_cap: u64,
}

const REAL: Sizes = Sizes {
    durability: Durability::Os,
    segment: 1 << 20,
    min_payload: 512,
    max_payload: 8 << 10,
    fill_cap: 8 << 30,
};

const SIM: Sizes = Sizes {
    durability: Durability::Os,
    segment: 64 << 10,
    min_payload: 256,
    max_payload: 3 << 10,
    fill_cap: 256 << 20,
};
/// Capacity of the simulated disk.
const SIM_CAPACITY: u64 = 3 << 20;

/// The real-disk sizes, with the durability `WALQ_FULL_DISK_DURABILITY`
/// names (`os`, the default, or `sync`; a child inherits it).
fn real_sizes() -> Sizes {
    let durability = match std::env::var(DURABILITY_ENV).as_deref() {
        Err(_) | Ok("os") => Durability::Os,
        Ok("sync") => Durability::Sync,
        Ok(other) => panic!("{DURABILITY_ENV}={other}: expected os or sync"),
    };
    Sizes { durability, ..REAL }
}

fn options(sizes: &Sizes) -> Options {
    Options::default()
        .segment_size(sizes.segment)
        .durability(sizes.durability)
        .visibility_timeout(Duration::from_secs(6 * 3600))
        .max_attempts(1000)
}

/// A payload that names its tag and is checkable byte by byte.
fn payload(tag: u64, sizes: &Sizes) -> Vec<u8> {
    let span = sizes.max_payload - sizes.min_payload + 1;
    let len = (sizes.min_payload + tag.wrapping_mul(7919) % span) as usize;
    let mut p = format!("full:{tag}:").into_bytes();
    let mut x = tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while p.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    p
}

/// The tag of a payload, if it is exactly what [`payload`] makes for it.
fn check_payload(p: &[u8], sizes: &Sizes) -> Option<u64> {
    let rest = p.strip_prefix(b"full:")?;
    let end = rest.iter().position(|&b| b == b':')?;
    let tag: u64 = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    (payload(tag, sizes) == p).then_some(tag)
}

/// Whether `e` is a full disk: ENOSPC, or EDQUOT (a quota that ran out,
/// which walq treats the same; `full_disk_scenario_sim_quota`).
fn is_enospc(e: &walq::Error) -> bool {
    e.kind() == ErrorKind::Io
        && e.io_error().map(std::io::Error::kind).is_some_and(|k| {
            k == std::io::ErrorKind::StorageFull || k == std::io::ErrorKind::QuotaExceeded
        })
}

// ---------------------------------------------------------------------------
// The phases. They report through `out`, one line each (without the prefix):
//   E <id> <tag>          enqueue returned Ok
//   A <id> <tag>          dequeued, checked and acked (Ok)
//   R <id> <tag>          left over, seen in phase 3, acked there
//   X <id>                cancel returned Ok (never to be delivered)
//   C <check> ok <text>   a check passed
//   C <check> FAIL <text> a check failed
//   I <text>              information
//   S <step>              the step under way (shows where a signal hit)

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Fill,
    Drain,
    Verify,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Fill => "fill",
            Phase::Drain => "drain",
            Phase::Verify => "verify",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        [Phase::Fill, Phase::Drain, Phase::Verify]
            .into_iter()
            .find(|p| p.name() == s)
    }
}

struct Env<'a> {
    vfs: Arc<dyn Vfs>,
    root: PathBuf,
    sizes: Sizes,
    out: &'a mut dyn FnMut(String),
}

impl Env<'_> {
    fn dir(&self) -> PathBuf {
        self.root.join("queue")
    }

    fn filler(&self) -> PathBuf {
        self.root.join("filler")
    }

    fn say(&mut self, line: String) {
        (self.out)(line);
    }

    fn check(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(text) => self.say(format!("C {name} ok {text}")),
            Err(text) => self.say(format!("C {name} FAIL {text}")),
        }
    }

    fn open(&self) -> walq::Result<Queue> {
        Queue::open_on(self.vfs.clone(), &self.dir(), options(&self.sizes))
    }

    /// Files a failed creation or rewrite would have left behind: any
    /// `.tmp`, and any spare segment (`.wal.spare`) that is not a whole
    /// preallocated segment (a failed preparation removes its file).
    fn leftovers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .vfs
            .list(&self.dir())
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.ends_with(".tmp") || n.ends_with(".wal.spare"))
            .collect();
        names.sort();
        let sizes = names.into_iter().filter_map(|n| {
            let len = self.vfs.open(&self.dir().join(&n)).and_then(|f| f.len());
            match len {
                Ok(l) if n.ends_with(".wal.spare") && l == self.sizes.segment => None,
                Ok(l) => Some(format!("{n} ({l} bytes)")),
                Err(e) => Some(format!("{n} (size unknown: {e})")),
            }
        });
        sizes.collect()
    }

    fn run(&mut self, phase: Phase) {
        match phase {
            Phase::Fill => self.fill(),
            Phase::Drain => self.drain(),
            Phase::Verify => self.verify(),
        }
    }

    fn fill(&mut self) {
        self.say("S open".into());
        let q = match self.open() {
            Ok(q) => q,
            Err(e) => {
                self.check(
                    "enospc-is-error",
                    Err(format!("the first open failed: {e}")),
                );
                return;
            }
        };
        self.say("S fill".into());
        let (mut tag, mut bytes) = (0u64, 0u64);
        let err = loop {
            if bytes > self.sizes.fill_cap {
                break None;
            }
            let p = payload(tag, &self.sizes);
            match q.enqueue(&p) {
                Ok(id) => self.say(format!("E {id} {tag}")),
                Err(e) => break Some(e),
            }
            bytes += p.len() as u64;
            tag += 1;
        };
        let result = match &err {
            None => Err(format!(
                "{tag} enqueues ({bytes} bytes) and still no error: is the disk small?"
            )),
            Some(e) if is_enospc(e) => Ok(format!("after {tag} jobs ({bytes} bytes): {e}")),
            Some(e) => Err(format!("after {tag} jobs the error is not ENOSPC: {e}")),
        };
        self.check("enospc-is-error", result);
        // A file the upkeep or checkpoint thread is making right now (a
        // spare being prepared, a rewrite under way) is not left behind:
        // only one still there after a few looks counts.
        let mut tmp = self.leftovers();
        for _ in 0..20 {
            if tmp.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            tmp = self.leftovers();
        }
        let result = if tmp.is_empty() {
            Ok("no .tmp file and no partial spare in the queue directory".to_string())
        } else {
            Err(format!("left behind: {}", tmp.join(", ")))
        };
        self.check("no-tmp-left", result);
        // Information only: does the same queue still serve?
        self.say("S serve-after-enospc".into());
        let served = q.dequeue().and_then(|job| match job {
            Some(job) => {
                let (id, tag) = (job.id(), check_payload(job.payload(), &self.sizes));
                q.ack(job.receipt()).map(|()| Some((id, tag)))
            }
            None => Ok(None),
        });
        match served {
            Ok(Some((id, Some(tag)))) => {
                self.say(format!("A {id} {tag}"));
                self.say("I same process after the failed enqueue: dequeue + ack work".into());
            }
            Ok(other) => self.say(format!("I same process: dequeue + ack gave {other:?}")),
            Err(e) => self.say(format!(
                "I same process after the failed enqueue: dequeue + ack fail: {e}"
            )),
        }
        self.say("S close".into());
        if let Err(e) = q.close() {
            self.say(format!("I close after the fill: {e}"));
        }
    }

    /// Appends to the filler file until the disk refuses more; returns how
    /// many bytes it wrote.
    fn top_up(&mut self) -> Result<u64, String> {
        let path = self.filler();
        let f = match self.vfs.open(&path) {
            Ok(f) => f,
            Err(_) => self
                .vfs
                .create(&path, 0o600)
                .map_err(|e| format!("creating the filler: {e}"))?,
        };
        let start = f.len().map_err(|e| format!("filler length: {e}"))?;
        let mut off = start;
        let mut chunk = 1usize << 20;
        let bytes = vec![0x5au8; chunk];
        while chunk >= 512 {
            match f.write_at(&bytes[..chunk], off) {
                Ok(()) => off += chunk as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => chunk /= 2,
                Err(e) => return Err(format!("writing the filler at {off}: {e}")),
            }
        }
        // On a real disk delayed allocation may only fail at writeback.
        if let Err(e) = f.sync_all() {
            self.say(format!("I filler sync: {e}"));
        }
        Ok(off - start)
    }

    fn top_up_and_say(&mut self, when: &str) {
        match self.top_up() {
            Ok(n) => self.say(format!("I filler {when}: {n} bytes written until ENOSPC")),
            Err(e) => self.say(format!("I filler {when}: {e}")),
        }
    }

    fn drain(&mut self) {
        self.say("S top-up".into());
        self.top_up_and_say("before the reopen");
        self.say("S reopen".into());
        let q = match self.open() {
            Ok(q) => q,
            Err(e) => {
                self.check("reopen-while-full", Err(e.to_string()));
                return;
            }
        };
        let s = q.stats();
        self.check(
            "reopen-while-full",
            Ok(format!("{} ready, {} segments", s.ready, s.segments)),
        );
        // The open may have freed space (a leftover .tmp): fill that too.
        self.say("S top-up-again".into());
        self.top_up_and_say("after the reopen");
        self.say("S cancel-while-full".into());
        self.cancel_some(&q);
        self.say("S drain".into());
        let mut n = 0u64;
        loop {
            let job = match q.dequeue() {
                Ok(Some(job)) => job,
                Ok(None) => break,
                Err(e) => {
                    self.check(
                        "drain-while-full",
                        Err(format!("dequeue after {n} acks: {e}")),
                    );
                    return;
                }
            };
            let id = job.id();
            let Some(tag) = check_payload(job.payload(), &self.sizes) else {
                self.check(
                    "drain-while-full",
                    Err(format!("job {id}: damaged payload")),
                );
                return;
            };
            if let Err(e) = q.ack(job.receipt()) {
                self.check("drain-while-full", Err(format!("ack after {n} acks: {e}")));
                return;
            }
            self.say(format!("A {id} {tag}"));
            n += 1;
        }
        let s = q.stats();
        self.check(
            "drain-while-full",
            Ok(format!(
                "{n} jobs dequeued and acked; {} segments left",
                s.segments
            )),
        );
        self.say("S enqueue-after-drain".into());
        let result = (|| -> walq::Result<()> {
            for tag in AFTER_DRAIN_BASE..AFTER_DRAIN_BASE + AFTER_DRAIN_JOBS {
                let id = q.enqueue(&payload(tag, &self.sizes))?;
                self.say(format!("E {id} {tag}"));
            }
            while let Some(job) = q.dequeue()? {
                let (id, tag) = (job.id(), check_payload(job.payload(), &self.sizes));
                q.ack(job.receipt())?;
                self.say(format!("A {id} {}", tag.unwrap_or(u64::MAX)));
            }
            Ok(())
        })();
        self.check(
            "enqueue-after-drain",
            result
                .map(|()| format!("{AFTER_DRAIN_JOBS} jobs enqueued, dequeued and acked"))
                .map_err(|e| e.to_string()),
        );
        self.say("S close".into());
        if let Err(e) = q.close() {
            self.say(format!("I close after the drain: {e}"));
        }
    }

    /// Cancels eight waiting jobs on the full disk (every seventh id
    /// after the first job waiting). Each cancel must return `Ok` or
    /// ENOSPC, and leave the queue serving: the drain after it checks
    /// that, and the verdicts that a cancelled job never comes out.
    fn cancel_some(&mut self, q: &Queue) {
        // The fill's first job may be acked already (`serve-after-enospc`).
        let first = (0..64).find(|&id| matches!(q.status(id), Ok(walq::JobStatus::Queued { .. })));
        let Some(first) = first else {
            self.check(
                "cancel-while-full",
                Err("no waiting job found to cancel".into()),
            );
            return;
        };
        let (mut ok, mut full) = (0, 0);
        for id in (0..8).map(|k| first + 7 * k) {
            match q.cancel(id) {
                Ok(()) => {
                    ok += 1;
                    self.say(format!("X {id}"));
                }
                Err(e) if is_enospc(&e) => {
                    full += 1;
                    self.say(format!("I cancel of job {id} on the full disk: {e}"));
                }
                Err(e) => {
                    let text = format!("cancel of job {id}: {e}");
                    self.check("cancel-while-full", Err(text));
                    return;
                }
            }
        }
        let text = format!("{ok} jobs cancelled, {full} refused with ENOSPC");
        self.check("cancel-while-full", Ok(text));
    }

    fn verify(&mut self) {
        self.say("S remove-filler".into());
        match self.vfs.remove(&self.filler()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => self.say(format!("I removing the filler: {e}")),
        }
        self.say("S reopen-with-space".into());

        let q = match self.open() {
            Ok(q) => q,
            Err(e) => {
                self.check("ok-jobs-survive", Err(format!("open with space back: {e}")));
                return;
            }
        };
        loop {
            match q.dequeue() {
                Ok(Some(job)) => {
                    let id = job.id();
                    let tag = check_payload(job.payload(), &self.sizes).unwrap_or(u64::MAX);
                    self.say(format!("R {id} {tag}"));
                    if let Err(e) = q.ack(job.receipt()) {
                        self.say(format!("I ack in phase verify: {e}"));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.check(
                        "ok-jobs-survive",
                        Err(format!("dequeue with space back: {e}")),
                    );
                    return;
                }
            }
        }
        let _ = q.close();
    }
}

// ---------------------------------------------------------------------------
// The parent: runs the phases, gathers the lines, judges.

/// The checks in the order they are reported.
const CHECKS: [&str; 7] = [
    "enospc-is-error",
    "no-tmp-left",
    "reopen-while-full",
    "cancel-while-full",
    "drain-while-full",
    "enqueue-after-drain",
    "ok-jobs-survive",
];

/// What one phase produced: its lines, and how it ended if not normally.
struct PhaseRun {
    lines: Vec<String>,
    death: Option<String>,
}

#[derive(Default)]
struct Verdicts {
    /// Per check: None = not reached, Some(Ok/Err(text)).
    results: BTreeMap<&'static str, Result<String, String>>,
    info: Vec<String>,
    ok_jobs: BTreeMap<u64, u64>,
    acked: BTreeMap<u64, u64>,
    left: BTreeMap<u64, u64>,
    cancelled: Vec<u64>,
    problems: Vec<String>,
}

impl Verdicts {
    fn set(&mut self, check: &str, r: Result<String, String>) {
        let name = CHECKS.iter().find(|c| **c == check).copied();
        match name {
            Some(name) => {
                // A failure wins over a pass; failures add up.
                let merged = match (self.results.remove(name), r) {
                    (Some(Err(a)), Err(b)) => Err(format!("{a}; {b}")),
                    (Some(Err(a)), Ok(_)) | (_, Err(a)) => Err(a),
                    (Some(Ok(a)), Ok(_)) | (None, Ok(a)) => Ok(a),
                };
                self.results.insert(name, merged);
            }
            None => self.problems.push(format!("unknown check {check}")),
        }
    }

    fn absorb(&mut self, phase: Phase, run: &PhaseRun) {
        let mut step = "start".to_string();
        let mut counts = (0u64, 0u64);
        for line in &run.lines {
            let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
            let pair = || -> Option<(u64, u64)> {
                let (a, b) = rest.split_once(' ')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            };
            match kind {
                "E" | "A" | "R" => {
                    let Some((id, tag)) = pair() else {
                        self.problems.push(format!("bad line {line:?}"));
                        continue;
                    };
                    let map = match kind {
                        "E" => &mut self.ok_jobs,
                        "A" => &mut self.acked,
                        _ => &mut self.left,
                    };
                    if map.insert(id, tag).is_some() {
                        self.problems
                            .push(format!("job {id} reported twice ({kind})"));
                    }
                    if kind == "E" {
                        counts.0 += 1;
                    } else {
                        counts.1 += 1;
                    }
                }
                "C" => {
                    let (check, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                    let (verdict, text) = rest.split_once(' ').unwrap_or((rest, ""));
                    let r = if verdict == "ok" {
                        Ok(text.to_string())
                    } else {
                        Err(text.to_string())
                    };
                    self.set(check, r);
                }
                "X" => match rest.parse() {
                    Ok(id) => self.cancelled.push(id),
                    Err(_) => self.problems.push(format!("bad line {line:?}")),
                },
                "I" => self.info.push(format!("{}: {rest}", phase.name())),
                "S" => step = rest.to_string(),
                _ => self.problems.push(format!("bad line {line:?}")),
            }
        }
        if let Some(death) = &run.death {
            let check = match (phase, step.as_str()) {
                // A signal instead of an error, wherever it hit.
                (Phase::Fill, _) => "enospc-is-error",
                (Phase::Drain, "top-up" | "reopen") => "reopen-while-full",
                (Phase::Drain, "cancel-while-full") => "cancel-while-full",
                (Phase::Drain, "top-up-again" | "drain") => "drain-while-full",
                (Phase::Drain, _) => "enqueue-after-drain",
                (Phase::Verify, _) => "ok-jobs-survive",
            };
            self.set(
                check,
                Err(format!(
                    "{death} in phase {} during step {step:?} ({} jobs enqueued Ok, {} acked or seen in that phase)",
                    phase.name(),
                    counts.0,
                    counts.1
                )),
            );
        }
    }

    /// The cross-phase checks: what was delivered against what was Ok.
    fn judge(&mut self, last_fill_tag: Option<u64>) {
        let mut trouble = Vec::new();
        for (id, tag) in self.acked.iter().chain(&self.left) {
            match self.ok_jobs.get(id) {
                Some(t) if t == tag => {}
                Some(t) => {
                    trouble.push(format!("job {id} came out with tag {tag}, enqueued as {t}"))
                }
                // The one enqueue that failed may or may not have happened.
                None if Some(*tag) == last_fill_tag => {}
                None => trouble.push(format!("job {id} (tag {tag}) was never enqueued Ok")),
            }
        }
        for id in self.acked.keys() {
            if self.left.contains_key(id) {
                trouble.push(format!("job {id} came back after its ack"));
            }
        }
        for id in &self.cancelled {
            if self.acked.contains_key(id) || self.left.contains_key(id) {
                trouble.push(format!(
                    "job {id} was delivered after its cancel returned Ok"
                ));
            }
        }
        let missing: Vec<u64> = self
            .ok_jobs
            .keys()
            .filter(|id| !self.acked.contains_key(id) && !self.left.contains_key(id))
            .filter(|id| !self.cancelled.contains(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            trouble.push(format!(
                "{} job(s) enqueued Ok are gone: {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
        let summary = format!(
            "{} jobs enqueued Ok: {} delivered and acked, {} still there after the drain, {} cancelled",
            self.ok_jobs.len(),
            self.acked.len(),
            self.left.len(),
            self.cancelled.len()
        );
        if trouble.is_empty() {
            if !matches!(self.results.get("ok-jobs-survive"), Some(Err(_))) {
                self.set("ok-jobs-survive", Ok(summary));
            }
        } else {
            self.set(
                "ok-jobs-survive",
                Err(format!("{summary}; {}", trouble.join("; "))),
            );
        }
    }

    fn report(&self, label: &str, elapsed: Duration) -> bool {
        let mut text = format!("full-disk scenario on {label} ({elapsed:.1?}):\n");
        let mut failed = false;
        for check in CHECKS {
            let line = match self.results.get(check) {
                Some(Ok(t)) => format!("  ok    {check}: {t}\n"),
                Some(Err(t)) => {
                    failed = true;
                    format!("  FAIL  {check}: {t}\n")
                }
                None => {
                    failed = true;
                    format!("  FAIL  {check}: not reached\n")
                }
            };
            text.push_str(&line);
        }
        for i in &self.info {
            text.push_str(&format!("  info  {i}\n"));
        }
        for p in &self.problems {
            failed = true;
            text.push_str(&format!("  FAIL  harness: {p}\n"));
        }
        eprint!("{text}");
        failed
    }
}

fn run_scenario(label: &str, mut run_phase: impl FnMut(Phase) -> PhaseRun) {
    let started = Instant::now();
    let mut v = Verdicts::default();
    for phase in [Phase::Fill, Phase::Drain, Phase::Verify] {
        let run = run_phase(phase);
        v.absorb(phase, &run);
    }
    let last_fill_tag = v
        .ok_jobs
        .values()
        .filter(|t| **t < AFTER_DRAIN_BASE)
        .max()
        .map(|t| t + 1);
    v.judge(last_fill_tag.or(Some(0)));
    if v.report(label, started.elapsed()) {
        panic!("full-disk scenario on {label}: some checks failed (see the summary above)");
    }
}

// ---------------------------------------------------------------------------
// Real file system: each phase in a child process.

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGBUS => "SIGBUS",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        _ => return format!("signal {sig}"),
    };
    format!("{name} (signal {sig})")
}

fn run_child(root: &Path, phase: Phase) -> PhaseRun {
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            CHILD_TEST,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_PHASE_ENV, phase.name())
        .env(CHILD_ROOT_ENV, root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix(PREFIX) {
                if tx.send(rest.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let mut lines = Vec::new();
    let mut hung = false;
    loop {
        match rx.recv_timeout(HANG_LIMIT) {
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                hung = true;
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().expect("wait for the child");
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    let death = if hung {
        Some(format!("child hung (no line for {HANG_LIMIT:?}), killed"))
    } else if let Some(sig) = status.signal() {
        Some(format!("child killed by {}", signal_name(sig)))
    } else if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Some(format!("child exited with {status}: {}", tail.join(" | ")))
    } else {
        None
    };
    PhaseRun { lines, death }
}

/// Copies the files of `from` (no subdirectories) into a new `to`.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

#[test]
fn full_disk_scenario_child() {
    let (Some(phase), Some(root)) = (
        std::env::var(CHILD_PHASE_ENV).ok(),
        std::env::var_os(CHILD_ROOT_ENV),
    ) else {
        return; // Not a child.
    };
    let phase = Phase::parse(&phase).expect("a known phase");
    let stdout = std::io::stdout();
    {
        // End whatever the test harness printed, so our first line is whole.
        let mut lock = stdout.lock();
        let _ = lock.write_all(b"\n").and_then(|()| lock.flush());
    }
    let mut out = |line: String| {
        let mut lock = stdout.lock();
        let _ = lock
            .write_all(format!("{PREFIX}{line}\n").as_bytes())
            .and_then(|()| lock.flush());
    };
    Env {
        vfs: Arc::new(StdFs),
        root: PathBuf::from(root),
        sizes: real_sizes(),
        out: &mut out,
    }
    .run(phase);
}

#[test]
fn full_disk_scenario_real_fs() {
    if std::env::var_os(CHILD_PHASE_ENV).is_some() {
        return; // We are a child; only `full_disk_scenario_child` runs there.
    }
    let Some(root) = std::env::var_os(DIR_ENV) else {
        eprintln!(
            "full_disk_scenario_real_fs: {DIR_ENV} is not set, so no real file system is \
             filled here (full_disk_scenario_sim runs the scenario on the simulated one; \
             `sudo bash .ci/fs-matrix.sh` runs it on ext4, xfs, btrfs, tmpfs and overlayfs)"
        );
        return;
    };
    let root = PathBuf::from(root);
    std::fs::create_dir_all(&root).expect("create the full-disk directory");
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .expect("read the full-disk directory")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n != "lost+found")
        .collect();
    assert!(
        leftovers.is_empty(),
        "{DIR_ENV}={} must be an empty directory (found {leftovers:?})",
        root.display()
    );
    let spare = tempfile::tempdir().expect("tempdir for the copy");
    let label = format!("{} ({:?})", root.display(), real_sizes().durability);
    run_scenario(&label, |phase| {
        if phase != Phase::Verify {
            return run_child(&root, phase);
        }
        // Space comes back: the queue's files, copied to a disk with room
        // (the default temporary directory), are opened there.
        let _ = std::fs::remove_file(root.join("filler"));
        let copy = spare.path();
        if let Err(e) = copy_dir(&root.join("queue"), &copy.join("queue")) {
            return PhaseRun {
                lines: vec![format!(
                    "C ok-jobs-survive FAIL copying the queue directory: {e}"
                )],
                death: None,
            };
        }
        run_child(copy, phase)
    });
}

// ---------------------------------------------------------------------------
// Simulated file system with a space limit.

/// Space accounting shared by a [`QuotaFs`] and its files.
#[derive(Debug)]
struct Pool {
    capacity: Mutex<u64>,
    used: Mutex<u64>,
    /// What a write that does not fit fails with: ENOSPC, or EDQUOT for a
    /// quota (a user's, or an XFS project quota on a container's volume).
    full: std::io::ErrorKind,
}

impl Pool {
    /// Takes up to `want` bytes; returns how many it got.
    fn take(&self, want: u64, partial: bool) -> u64 {
        let mut used = self.used.lock();
        let free = self.capacity.lock().saturating_sub(*used);
        let got = if want <= free {
            want
        } else if partial {
            free
        } else {
            0
        };
        *used += got;
        got
    }

    fn give(&self, n: u64) {
        *self.used.lock() -= n;
    }

    /// The error of a write that does not fit.
    fn full_error(&self) -> std::io::Error {
        let what = match self.full {
            std::io::ErrorKind::QuotaExceeded => "Disk quota exceeded (simulated)",
            _ => "No space left on device (simulated)",
        };
        std::io::Error::new(self.full, what)
    }
}

/// The blocks of one file (inode): given back when the last name and the
/// last handle are gone.
#[derive(Debug)]
struct Blocks {
    pool: Arc<Pool>,
    size: Mutex<u64>,
}

impl Drop for Blocks {
    fn drop(&mut self) {
        self.pool.give(*self.size.get_mut());
    }
}

/// A [`SimFs`] with a fixed capacity (see the module docs for the model).
#[derive(Debug, Clone)]
struct QuotaFs {
    inner: SimFs,
    pool: Arc<Pool>,
    names: Arc<Mutex<HashMap<PathBuf, Arc<Blocks>>>>,
    /// Copy-on-write, like btrfs: an overwrite of allocated bytes needs
    /// free space for the new copy of every 4 KiB block it touches (given
    /// back at once: the old copy is freed), so a full disk refuses it.
    cow: bool,
}

impl QuotaFs {
    fn new(capacity: u64) -> QuotaFs {
        QuotaFs {
            inner: SimFs::new(),
            pool: Arc::new(Pool {
                capacity: Mutex::new(capacity),
                used: Mutex::new(0),
                full: std::io::ErrorKind::StorageFull,
            }),
            names: Arc::new(Mutex::new(HashMap::new())),
            cow: false,
        }
    }

    /// A [`QuotaFs`] whose writes that do not fit fail with EDQUOT: a
    /// quota ran out, not the disk.
    fn new_quota(capacity: u64) -> QuotaFs {
        let fs = QuotaFs::new(capacity);
        QuotaFs {
            pool: Arc::new(Pool {
                full: std::io::ErrorKind::QuotaExceeded,
                ..Arc::into_inner(fs.pool).expect("a new pool")
            }),
            ..fs
        }
    }

    /// A copy-on-write [`QuotaFs`] (see [`QuotaFs::cow`]).
    fn new_cow(capacity: u64) -> QuotaFs {
        QuotaFs {
            cow: true,
            ..QuotaFs::new(capacity)
        }
    }

    /// Adds `bytes` of capacity.
    fn grow(&self, bytes: u64) {
        *self.pool.capacity.lock() += bytes;
    }

    fn blocks(&self, path: &Path, len: u64) -> Arc<Blocks> {
        let mut names = self.names.lock();
        names
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                // A file the quota has not seen (none today): charge it.
                let got = self.pool.take(len, true);
                Arc::new(Blocks {
                    pool: self.pool.clone(),
                    size: Mutex::new(got),
                })
            })
            .clone()
    }
}

#[derive(Debug)]
struct QuotaFile {
    inner: Box<dyn VfsFile>,
    blocks: Arc<Blocks>,
    cow: bool,
}

impl QuotaFile {
    /// Grows the charged size to `end`, all or nothing.
    fn grow_to(&self, end: u64) -> std::io::Result<u64> {
        let size = *self.blocks.size.lock();
        let need = end.saturating_sub(size);
        if need > 0 && self.blocks.pool.take(need, false) < need {
            return Err(self.blocks.pool.full_error());
        }
        *self.blocks.size.lock() += need;
        Ok(need)
    }

    fn refund(&self, n: u64) {
        *self.blocks.size.lock() -= n;
        self.blocks.pool.give(n);
    }
}

impl VfsFile for QuotaFile {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, off)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        if self.cow {
            // The allocated blocks this write overwrites need new copies.
            const BLOCK: u64 = 4096;
            let size = *self.blocks.size.lock();
            let end = (off + buf.len() as u64).min(size);
            if end > off {
                let need = end.div_ceil(BLOCK) * BLOCK - off / BLOCK * BLOCK;
                if self.blocks.pool.take(need, false) < need {
                    return Err(self.blocks.pool.full_error());
                }
                self.blocks.pool.give(need);
            }
        }
        let charged = self.grow_to(off + buf.len() as u64)?;
        self.inner
            .write_at(buf, off)
            .inspect_err(|_| self.refund(charged))
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let size = *self.blocks.size.lock();
        if len >= size {
            let charged = self.grow_to(len)?;
            return self
                .inner
                .set_len(len)
                .inspect_err(|_| self.refund(charged));
        }
        self.inner.set_len(len)?;
        self.refund(size - len);
        Ok(())
    }

    fn reserve(&self, len: u64) -> std::io::Result<()> {
        // Blocks past the end, charged now, all or nothing (as ext4's
        // `fallocate`); the length stays.
        self.grow_to(len).map(drop)
    }

    fn allocate(&self, len: u64) -> std::io::Result<()> {
        let size = *self.blocks.size.lock();
        let need = len.saturating_sub(size);
        if need == 0 {
            return self.inner.allocate(len);
        }
        // Like ext4: allocate what fits, then fail, keeping what was taken.
        let got = self.blocks.pool.take(need, true);
        *self.blocks.size.lock() += got;
        if got > 0 {
            self.inner
                .allocate(size + got)
                .inspect_err(|_| self.refund(got))?;
        }
        if got < need {
            return Err(self.blocks.pool.full_error());
        }
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }

    fn sync_all(&self) -> std::io::Result<()> {
        self.inner.sync_all()
    }

    fn map(&self, len: u64) -> std::io::Result<Mapping> {
        self.inner.map(len)
    }
}

impl Vfs for QuotaFs {
    fn create_dir_all(&self, dir: &Path, mode: u32) -> std::io::Result<()> {
        self.inner.create_dir_all(dir, mode)
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn create(&self, path: &Path, mode: u32) -> std::io::Result<Box<dyn VfsFile>> {
        let inner = self.inner.create(path, mode)?;
        let blocks = Arc::new(Blocks {
            pool: self.pool.clone(),
            size: Mutex::new(0),
        });
        self.names.lock().insert(path.to_path_buf(), blocks.clone());
        Ok(Box::new(QuotaFile {
            inner,
            blocks,
            cow: self.cow,
        }))
    }

    fn open(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        let inner = self.inner.open(path)?;
        let blocks = self.blocks(path, inner.len()?);
        Ok(Box::new(QuotaFile {
            inner,
            blocks,
            cow: self.cow,
        }))
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)?;
        self.names.lock().remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)?;
        let mut names = self.names.lock();
        if let Some(b) = names.remove(from) {
            names.insert(to.to_path_buf(), b);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }

    fn lock(&self, path: &Path, mode: u32) -> std::io::Result<Box<dyn Any + Send + Sync>> {
        self.inner.lock(path, mode)
    }

    fn overwrites_need_space(&self, _dir: &Path) -> bool {
        self.cow
    }
}

#[test]
fn quota_fs_counts_space_like_a_disk() {
    let fs = QuotaFs::new(10_000);
    fs.create_dir_all(Path::new("/d"), 0o700).unwrap();
    let a = fs.create(Path::new("/d/a"), 0o600).unwrap();
    a.allocate(6_000).unwrap();
    a.write_at(&[1; 100], 0).unwrap(); // an overwrite costs nothing
    let b = fs.create(Path::new("/d/b"), 0o600).unwrap();
    let err = b.allocate(6_000).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
    assert_eq!(
        b.len().unwrap(),
        4_000,
        "a failed allocation keeps what fit"
    );
    assert!(a.write_at(&[1], 6_000).is_err(), "the disk is full");
    fs.remove(Path::new("/d/b")).unwrap();
    assert!(a.write_at(&[1], 6_000).is_err(), "b is still open");
    drop(b);
    a.write_at(&[1; 4_000], 6_000).unwrap();
    a.set_len(1_000).unwrap();
    assert_eq!(*fs.pool.used.lock(), 1_000);
}

#[test]
fn quota_fs_cow_overwrites_need_space() {
    let fs = QuotaFs::new_cow(12_000);
    fs.create_dir_all(Path::new("/d"), 0o700).unwrap();
    let a = fs.create(Path::new("/d/a"), 0o600).unwrap();
    a.allocate(6_000).unwrap();
    a.write_at(&[1; 100], 0).unwrap(); // 4 KiB of new copy fits
    let b = fs.create(Path::new("/d/b"), 0o600).unwrap();
    b.allocate(3_000).unwrap();
    let err = a.write_at(&[1; 100], 0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "3 000 free");
    fs.remove(Path::new("/d/b")).unwrap();
    drop(b);
    a.write_at(&[1; 100], 0).unwrap();
    assert_eq!(*fs.pool.used.lock(), 6_000, "an overwrite keeps nothing");
}

/// The scenario on a copy-on-write simulated disk (btrfs's behaviour: the
/// lease and ack records of the drain need new space even inside the
/// preallocated segment, so the drain lives on the reserve).
#[test]
fn full_disk_scenario_sim_cow() {
    sim_scenario(
        QuotaFs::new_cow(SIM_CAPACITY),
        "the simulated copy-on-write file system (QuotaFs over SimFs)",
        SIM,
    );
}

/// [`full_disk_scenario_sim_cow`] with `Durability::Sync`: each `pwrite`
/// append is an overwrite that needs new space, as on btrfs.
#[test]
fn full_disk_scenario_sim_cow_sync() {
    sim_scenario(
        QuotaFs::new_cow(SIM_CAPACITY),
        "the simulated copy-on-write file system (QuotaFs over SimFs), Sync",
        Sizes {
            durability: Durability::Sync,
            ..SIM
        },
    );
}

/// A torn tail met by an open on a full copy-on-write disk: zeroing it is
/// an overwrite that needs space, which the reserve gives, so the open
/// succeeds and the queue drains.
#[test]
fn torn_tail_on_a_full_cow_disk_opens() {
    let fs = QuotaFs::new_cow(SIM_CAPACITY);
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let root = PathBuf::from("/disk");
    let dir = root.join("queue");
    let q = Queue::open_on(vfs.clone(), &dir, options(&SIM)).expect("open");
    for tag in 0..20 {
        q.enqueue(&payload(tag, &SIM)).expect("enqueue");
    }
    q.close().expect("close");
    assert!(
        vfs.list(&dir).unwrap().iter().any(|n| n == "RESERVE"),
        "a copy-on-write disk gets a reserve"
    );
    // A torn write past the last record of the active segment.
    let seg = dir.join("0000000001.wal");
    let f = vfs.open(&seg).expect("segment");
    let mut image = vec![0u8; f.len().unwrap() as usize];
    f.read_at(&mut image, 0).unwrap();
    let end = image.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
    f.write_at(&[0xa5; 300], end + 8).unwrap();
    drop(f);
    // Fill the disk.
    let filler = vfs.create(&root.join("filler"), 0o600).unwrap();
    let mut off = 0u64;
    let mut chunk = 64usize << 10;
    while chunk >= 512 {
        match filler.write_at(&vec![0x5a; chunk], off) {
            Ok(()) => off += chunk as u64,
            Err(_) => chunk /= 2,
        }
    }
    let q = Queue::open_on(vfs.clone(), &dir, options(&SIM)).expect("open on a full disk");
    assert!(q.recovery_report().torn_bytes > 0, "the torn tail was cut");
    let mut n = 0;
    while let Some(job) = q.dequeue().expect("dequeue on a full disk") {
        assert!(check_payload(job.payload(), &SIM).is_some());
        q.ack(job.receipt()).expect("ack on a full disk");
        n += 1;
    }
    assert_eq!(n, 20);
}

#[test]
fn full_disk_scenario_sim() {
    sim_scenario(
        QuotaFs::new(SIM_CAPACITY),
        "the simulated file system (QuotaFs over SimFs)",
        SIM,
    );
}

/// The scenario on a quota that runs out (EDQUOT) rather than a full disk:
/// walq must treat it the same (refuse, roll back, keep serving), not as an
/// I/O failure that poisons the queue. The kernel of the reference VM is
/// built without quota support (`CONFIG_QUOTA`: neither ext4 nor xfs mount
/// with quotas), so this is checked on the simulated disk only.
#[test]
fn full_disk_scenario_sim_quota() {
    sim_scenario(
        QuotaFs::new_quota(SIM_CAPACITY),
        "the simulated file system with a quota (QuotaFs over SimFs, EDQUOT)",
        SIM,
    );
}

/// The scenario with `Durability::Sync`: appends are `pwrite`s into the
/// preallocated segment, so the queue's logic on a full disk is checked on
/// the write path that `Sync` queues take (the zeros written ahead of the
/// tail are a no-op on the simulated file system, whose preallocated bytes
/// read as zeros already).
#[test]
fn full_disk_scenario_sim_sync() {
    sim_scenario(
        QuotaFs::new(SIM_CAPACITY),
        "the simulated file system (QuotaFs over SimFs), Sync",
        Sizes {
            durability: Durability::Sync,
            ..SIM
        },
    );
}

/// The scenario in this process on the simulated disk `fs`, which grows
/// by its capacity again (space comes back) before the verify phase.
fn sim_scenario(fs: QuotaFs, label: &str, sizes: Sizes) {
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    run_scenario(label, |phase| {
        if phase == Phase::Verify {
            fs.grow(SIM_CAPACITY);
        }
        let mut lines = Vec::new();
        let mut out = |line: String| lines.push(line);
        Env {
            vfs: vfs.clone(),
            root: PathBuf::from("/disk"),
            sizes,
            out: &mut out,
        }
        .run(phase);
        PhaseRun { lines, death: None }
    });
}

/// Fills what is left of the simulated disk, to the last byte, with a file
/// of its own.
fn fill_disk(vfs: &dyn Vfs, root: &Path, name: &str) {
    let filler = vfs.create(&root.join(name), 0o600).unwrap();
    let mut off = 0u64;
    let mut chunk = 64usize << 10;
    while chunk >= 1 {
        match filler.write_at(&vec![0x5a; chunk], off) {
            Ok(()) => off += chunk as u64,
            Err(_) => chunk /= 2,
        }
    }
}

/// Dead-lettering on a full copy-on-write disk: the write into `dead.wal`
/// needs new space like any overwrite. It gives up the reserve and goes
/// through (before: ENOSPC, and the queue was poisoned until reopened),
/// and the queue keeps serving: the remaining jobs drain.
#[test]
fn dead_letters_on_a_full_cow_disk() {
    let fs = QuotaFs::new_cow(SIM_CAPACITY);
    dead_letters_on_a_full_disk(Arc::new(fs), &PathBuf::from("/disk"), &SIM);
}

/// [`dead_letters_on_a_full_cow_disk`] on a real file system: with
/// `WALQ_FULL_DISK_DEAD_DIR=<empty dir on a small btrfs>` (skipped without).
#[test]
fn dead_letters_on_a_full_real_disk() {
    let Some(root) = std::env::var_os("WALQ_FULL_DISK_DEAD_DIR") else {
        eprintln!("dead_letters_on_a_full_real_disk: WALQ_FULL_DISK_DEAD_DIR is not set");
        return;
    };
    dead_letters_on_a_full_disk(Arc::new(StdFs), &PathBuf::from(root), &REAL);
}

fn dead_letters_on_a_full_disk(vfs: Arc<dyn Vfs>, root: &Path, sizes: &Sizes) {
    let dir = root.join("queue");
    let q = Queue::open_on(vfs.clone(), &dir, options(sizes)).expect("open");
    for tag in 0..20 {
        q.enqueue(&payload(tag, sizes)).expect("enqueue");
    }
    assert!(
        vfs.list(&dir).unwrap().iter().any(|n| n == "RESERVE"),
        "a copy-on-write disk gets a reserve"
    );
    // Leased before the disk fills: the dead letter is the first write on
    // the full disk, with the reserve still held.
    let first = q.dequeue().expect("dequeue").expect("a job");
    let second = q.dequeue().expect("dequeue").expect("a job");
    fill_disk(&*vfs, root, "filler");
    q.fail(first.receipt(), "does not work")
        .unwrap_or_else(|e| panic!("dead-lettering on a full disk: {e}"));
    // The reserve is used up: a full disk now refuses the dead letter with
    // a clear error, and the queue keeps serving (not poisoned).
    fill_disk(&*vfs, root, "filler2");
    let err = q.fail(second.receipt(), "does not work").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(is_enospc(&err), "{err}");
    vfs.remove(&root.join("filler2")).unwrap();
    // A real file system may free the blocks only at its next commit.
    let _ = std::process::Command::new("sync").status();
    q.fail(second.receipt(), "does not work")
        .expect("dead-lettering once space is back");
    let mut failed = vec![first.id(), second.id()];
    let mut acked = 0;
    while let Some(job) = q.dequeue().expect("dequeue on a full disk") {
        let tag = check_payload(job.payload(), sizes).expect("payload intact");
        if tag.is_multiple_of(4) {
            q.fail(job.receipt(), "does not work")
                .unwrap_or_else(|e| panic!("dead-lettering job {tag} on a full disk: {e}"));
            failed.push(job.id());
        } else {
            q.ack(job.receipt()).expect("ack on a full disk");
            acked += 1;
        }
    }
    assert_eq!(acked + failed.len(), 20);
    assert_eq!(q.dead_letter_ids(), failed);
    // A purge on the full disk (the drain gave space back: filled again)
    // is done, or refused with ENOSPC; either way the queue still serves
    // (before, the refusal poisoned it).
    fill_disk(&*vfs, root, "filler3");
    match q.purge(failed[0]) {
        Ok(()) => {
            failed.remove(0);
        }
        Err(e) => assert!(is_enospc(&e), "purge on a full disk: {e}"),
    }
    let none = q.dequeue().expect("the queue still serves after the purge");
    assert!(none.is_none(), "the backlog was drained");
    vfs.remove(&root.join("filler3")).unwrap();
    let _ = std::process::Command::new("sync").status();
    assert_eq!(q.dead_letter_ids(), failed);
    assert_eq!(q.stats().dead, failed.len() as u64);
    q.close().expect("close");
    let q = Queue::open_on(vfs.clone(), &dir, options(sizes)).expect("reopen");
    assert_eq!(q.dead_letter_ids(), failed, "the dead letters are durable");
}

/// Purging many dead letters on a full allocate-once disk (ext4, xfs):
/// the purge writes a removal to `dead.wal` for each letter after their
/// completion markers, and a page of them needs new blocks. They are
/// allocated first (`fallocate` keeping the size), so a full disk refuses
/// the purge before anything is written, and the queue keeps serving.
/// Before, the markers fitted in the completion file's slack, the
/// removals hit ENOSPC halfway, and the queue was poisoned.
#[test]
fn purging_many_dead_letters_on_a_full_disk_never_poisons() {
    let fs = QuotaFs::new(SIM_CAPACITY);
    purging_many_dead_letters_on_a_full_disk(Arc::new(fs), &PathBuf::from("/disk"), &SIM);
}

/// [`purging_many_dead_letters_on_a_full_disk_never_poisons`] on a real
/// disk: `WALQ_FULL_DISK_PURGE_DIR=<empty dir on a small ext4 or xfs>`
/// (skipped without; `.ci/fs-matrix.sh` sets it).
#[test]
fn purging_many_dead_letters_on_a_full_real_disk() {
    let Some(root) = std::env::var_os("WALQ_FULL_DISK_PURGE_DIR") else {
        eprintln!(
            "purging_many_dead_letters_on_a_full_real_disk: WALQ_FULL_DISK_PURGE_DIR is not set"
        );
        return;
    };
    purging_many_dead_letters_on_a_full_disk(Arc::new(StdFs), &PathBuf::from(root), &REAL);
}

fn purging_many_dead_letters_on_a_full_disk(vfs: Arc<dyn Vfs>, root: &Path, sizes: &Sizes) {
    let dir = root.join("queue");
    let q = Queue::open_on(vfs.clone(), &dir, options(sizes)).expect("open");
    for tag in 0..300 {
        q.enqueue(format!("job {tag}").as_bytes()).expect("enqueue");
    }
    while let Some(job) = q.dequeue().expect("dequeue") {
        q.fail(job.receipt(), "does not work").expect("dead-letter");
    }
    let mut dead = q.dead_letter_ids();
    assert_eq!(dead.len(), 300);
    // Purged while there is room: the completion file grows a chunk, so
    // the markers of a whole page fit in it once the disk is full.
    for id in dead.drain(..3) {
        q.purge(id).expect("purge with room");
    }
    fill_disk(&*vfs, root, "filler");
    match q.purge_all() {
        Ok(n) => {
            assert_eq!(n, dead.len(), "purged all");
            dead.clear();
        }
        Err(e) => {
            assert!(is_enospc(&e), "purge_all on a full disk: {e}");
            assert_eq!(q.dead_letter_ids(), dead, "a refused purge changes nothing");
        }
    }
    let next = q.dequeue().expect("the queue still serves after the purge");
    assert!(next.is_none(), "no job waits");
    vfs.remove(&root.join("filler")).unwrap();
    // A real file system may free the blocks only at its next commit.
    let _ = std::process::Command::new("sync").status();
    assert_eq!(q.purge_all().expect("purge with room again"), dead.len());
    assert!(q.dead_letter_ids().is_empty());
    q.close().expect("close");
    let q = Queue::open_on(vfs.clone(), &dir, options(sizes)).expect("reopen");
    assert!(q.dead_letter_ids().is_empty(), "the purge is durable");
}

/// `redrive` of many dead letters, one at a time, on a full disk: each is
/// done or refused with ENOSPC, and the queue keeps serving (before, the
/// jobs' records went into the log's preallocated segment, the removals'
/// append to `dead.wal` got ENOSPC, and the queue was poisoned; a review
/// found it). A refused redrive leaves its letter dead; a done one leaves
/// a job to run.
#[test]
fn redriving_dead_letters_on_a_full_disk_never_poisons() {
    let fs = QuotaFs::new(SIM_CAPACITY);
    let (vfs, root): (Arc<dyn Vfs>, _) = (Arc::new(fs), PathBuf::from("/disk"));
    let dir = root.join("queue");
    let q = Queue::open_on(vfs.clone(), &dir, options(&SIM)).expect("open");
    for tag in 0..300 {
        q.enqueue(format!("job {tag}").as_bytes()).expect("enqueue");
    }
    while let Some(job) = q.dequeue().expect("dequeue") {
        q.fail(job.receipt(), "does not work").expect("dead-letter");
    }
    let dead = q.dead_letter_ids();
    fill_disk(&*vfs, &root, "filler");
    let (mut redriven, mut refused) = (Vec::new(), 0);
    for &id in &dead {
        match q.redrive(id) {
            Ok(()) => redriven.push(id),
            Err(e) => {
                assert!(
                    is_enospc(&e),
                    "a refused redrive says the disk is full: {e}"
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "300 redrives all fitted on a full disk");
    let left = q.dead_letter_ids();
    assert_eq!(
        left.len() + redriven.len(),
        dead.len(),
        "a refused redrive changes nothing"
    );
    let mut ran = Vec::new();
    while let Some(job) = q.dequeue().expect("the queue still serves") {
        ran.push(job.id());
        q.ack(job.receipt()).expect("ack");
    }
    ran.sort_unstable();
    assert_eq!(ran, redriven, "each redriven job runs once");
}

/// `enqueue_dead_letter` on a full disk: the room for the dead letter is
/// allocated before the job's record is written, so the call is refused
/// with ENOSPC and nothing changes (before the room came first: the job's
/// record went in, the dead letter's write failed, and the queue was
/// poisoned, to reopen with the job waiting to run).
#[test]
fn importing_dead_letters_on_a_full_disk_never_poisons() {
    let fs = QuotaFs::new(SIM_CAPACITY);
    importing_dead_letters_on_a_full_disk(Arc::new(fs), &PathBuf::from("/disk"), &SIM);
}

/// The same on a simulated full copy-on-write disk, where the `RESERVE`
/// kept for the leases and acks that drain a full disk must still be there
/// after the refused imports. (Imports that made their room through
/// `Log::write_draining` gave it up: first seen on a real 300 MiB btrfs,
/// run by `.ci/fs-matrix.sh` through
/// [`importing_dead_letters_on_a_full_real_disk`], where the next lease then
/// failed with ENOSPC.)
#[test]
fn importing_dead_letters_on_a_full_cow_disk_keeps_the_reserve() {
    let fs = QuotaFs::new_cow(SIM_CAPACITY);
    importing_dead_letters_on_a_full_disk(Arc::new(fs), &PathBuf::from("/disk"), &SIM);
}

/// [`importing_dead_letters_on_a_full_disk_never_poisons`] on a real disk:
/// `WALQ_FULL_DISK_IMPORT_DIR=<empty dir on a small ext4, xfs or btrfs>`
/// (skipped without; `.ci/fs-matrix.sh` sets it).
#[test]
fn importing_dead_letters_on_a_full_real_disk() {
    let Some(root) = std::env::var_os("WALQ_FULL_DISK_IMPORT_DIR") else {
        eprintln!(
            "importing_dead_letters_on_a_full_real_disk: WALQ_FULL_DISK_IMPORT_DIR is not set"
        );
        return;
    };
    importing_dead_letters_on_a_full_disk(Arc::new(StdFs), &PathBuf::from(root), &REAL);
}

fn importing_dead_letters_on_a_full_disk(vfs: Arc<dyn Vfs>, root: &Path, sizes: &Sizes) {
    let dir = root.join("queue");
    let q = Queue::open_on(vfs.clone(), &dir, options(sizes)).expect("open");
    let waiting = q.enqueue(b"waiting job").expect("enqueue");
    fill_disk(&*vfs, root, "filler");
    let has_reserve = || vfs.list(&dir).unwrap().iter().any(|n| n == "RESERVE");
    let reserved = has_reserve();
    let letter = vec![7u8; 32 << 10];
    let mut refused = 0;
    for _ in 0..64 {
        match q.enqueue_dead_letter(&letter, EnqueueOptions::new(), "moved here") {
            Ok(_) => {}
            Err(e) => {
                assert!(is_enospc(&e), "a refused import says the disk is full: {e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "64 dead letters of 32 KiB fit on a full disk");
    assert_eq!(
        has_reserve(),
        reserved,
        "an import never takes the reserve kept for the drain"
    );
    let stats = q.stats();
    assert_eq!(
        stats.dead as usize,
        64 - refused,
        "a refused import adds nothing"
    );
    assert_eq!(stats.ready, 1, "only the waiting job is ready");
    let job = q
        .dequeue()
        .expect("the queue still serves after a refused import")
        .expect("the waiting job");
    assert_eq!((job.id(), job.attempt()), (waiting, 1));
    q.ack(job.receipt()).expect("ack");
    drop(q);
    vfs.remove(&root.join("filler")).unwrap();
    let q = Queue::open_on(vfs.clone(), &dir, options(sizes)).expect("reopen");
    assert!(
        q.dequeue().expect("dequeue").is_none(),
        "no refused import waits to run"
    );
    assert_eq!(q.dead_letter_ids().len(), 64 - refused);
}
