//! Real crashes (brief §4, test 4): a child process runs a heavy mixed
//! workload under `Durability::Sync` and is killed with SIGKILL at random
//! moments; after each kill the parent reopens the store and checks it
//! against a model built from what the child reported.
//!
//! How it works:
//! - The test binary re-executes itself (`kill9_child --exact`) with
//!   `WALQ_CRASH_CHILD=<dir>`. The child opens the store (Sync, 256 KiB
//!   segments so rotation, deletion and carry-forward happen) and runs two
//!   producer threads (enqueue, enqueue_with delay/key/max_attempts,
//!   enqueue_batch, re-enqueue of known idempotency keys) and three
//!   consumer threads (dequeue, dequeue_timeout, dequeue_batch, ack, nack,
//!   fail, extend, abandon, dead-letter redrive and purge) until killed.
//!   About a third of the single enqueues ask for a priority level (any
//!   of the four) and a third for a message group: each producer keeps
//!   three groups open and gives each five jobs.
//! - The queue is a store of three queues: the default one and the named
//!   queues `a` and `b`. Each job goes to a queue (a batch all to one, a
//!   group's jobs all to the group's, the others, keyed ones included
//!   (see `KEYS_ON_NAMED_QUEUES`), at random); each consumer leases from the three in
//!   turn and checks a job it gets was enqueued on that queue, and any
//!   handle lists, redrives and purges the dead letters (the store's).
//! - Before each operation that changes a job the child writes an intent
//!   line, and after the operation returned `Ok` a completion line, to
//!   stdout (a pipe; one flushed line each). A line cut by the kill is
//!   ignored. The parent kills the child (seeded plan, no sleeps): at once
//!   after spawn (the kill lands in exec, open or recovery), right after
//!   open, after a random number of reported operations, or at the next
//!   intent of a given kind after that (a batch, an ack, ... under way).
//! - Payloads are self-checking: they carry the producer's sequence number,
//!   their options (queue included) and a checksum over deterministic
//!   padding.
//! - The parent keeps, for every job id, the set of places the job may be
//!   in (live, dead letter, gone): a completion narrows it, an intent
//!   widens it (the operation may or may not have happened). After the
//!   kill it reopens the store with a manual clock an hour ahead (so every
//!   delayed job is due), reads the dead letters, leases every job of each
//!   queue in turn (each drained on its own), and checks: every job is on
//!   the queue its payload names (a dead letter names it too), each
//!   queue's ready count at the open is what was leased from it, no
//!   acknowledged job is missing, no acked or purged job comes back, no
//!   job is there twice, payloads and keys are intact, batches are all or
//!   nothing, idempotency keys survive restarts, ready jobs come out by
//!   (due time, id), attempts are never lost nor pass max_attempts, dead
//!   letters have a reason (a fail, or attempts used up), one lease has
//!   one holder, and the stats and files on disk add up. Levels and
//!   groups: every job found carries the level and group it was enqueued
//!   with (a redriven one keeps its level and leaves its group, and returns
//!   to its queue); the levels of the jobs leased from each queue follow
//!   that queue's own 15-slot cycle (each restarts at the open), the ready
//!   order above holds within each level of each queue, and at most one
//!   job per group is leased. The jobs behind their group's head are found
//!   by draining a copy of the directory queue by queue (acking, failing
//!   one, nacking for an immediate retry): no job of a group comes out
//!   while another of its group is unfinished, nor after a newer one
//!   finished or was delivered (in the child too: no job of a group is
//!   delivered while another of its group is leased, or after a newer one
//!   was), and a job behind its group's head was never leased. It then
//!   drops the store (its leases are released by the next open, counting
//!   an attempt) and the next cycle continues on the same directory.
//!
//! `WALQ_CRASH_CYCLES` (default 200) and `WALQ_CRASH_SEED` tune a run.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Rng;
use walq::{
    Backoff, Durability, EnqueueOptions, Job, ManualClock, Options, Priority, Queue, Retry, Store,
};

const CHILD_TEST: &str = "kill9_child";
const CHILD_DIR_ENV: &str = "WALQ_CRASH_CHILD";
const CHILD_SEED_ENV: &str = "WALQ_CRASH_CHILD_SEED";
const CHILD_BASE_ENV: &str = "WALQ_CRASH_CHILD_BASE";
const CHILD_KEYS_ENV: &str = "WALQ_CRASH_CHILD_KEYS";
const CYCLES_ENV: &str = "WALQ_CRASH_CYCLES";
const SEED_ENV: &str = "WALQ_CRASH_SEED";
const DEFAULT_CYCLES: u64 = 200;
const DEFAULT_SEED: u64 = 0x3a11_c0de_5eed_0001;

const SEGMENT_SIZE: u64 = 256 * 1024;
const MAX_ATTEMPTS: u32 = 6;
const LEASE: Duration = Duration::from_secs(6 * 3600);
/// Of the child's five worker threads, 1..=PRODUCERS produce, the others
/// consume.
const PRODUCERS: u32 = 2;
/// Producers wait while this many jobs are ready or delayed.
const BACKLOG: u64 = 120;
const PREFIX: &str = "@W ";
/// Message groups a producer fills at a time, and jobs per group.
const OPEN_GROUPS: usize = 3;
const GROUP_JOBS: u32 = 5;
/// The store's queues, by the number a payload names: the default queue
/// and two named ones.
const QUEUES: [&str; 3] = [walq::DEFAULT_QUEUE, "a", "b"];
/// Whether idempotency keys are used on the named queues too. On since a
/// named queue's keys of finished jobs are carried with their queue
/// (record kind 16); with keys on the default queue only, this harness
/// missed that a named queue forgot them once their segment was
/// reclaimed or their dead letter purged.
const KEYS_ON_NAMED_QUEUES: bool = true;
const FAIL_TEXT: &str = "crash-test fail";
const NACK_TEXT: &str = "crash-test nack";
/// How long the parent waits for a line before it calls the child hung.
const HANG_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Shared helpers: self-checking payloads (the seeded generator is
// `common::Rng`, started with `Rng::mixed`).

/// What a payload says about its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    /// The producer's sequence number: unique per enqueue attempt.
    seq: u64,
    /// Delay given at enqueue, in milliseconds.
    delay_ms: u64,
    /// 0: no idempotency key; otherwise the key is `key_for(key_seq)`.
    key_seq: u64,
    /// 0: the queue's max_attempts; otherwise the job's own.
    max_attempts: u32,
    /// Bytes of deterministic padding.
    pad_len: usize,
    /// The priority level asked for: 0 Low, 1 Normal (the default), 2
    /// High, 3 Urgent.
    level: u8,
    /// 0: no message group; otherwise the group is `group_for(group)`.
    group: u64,
    /// The queue it is enqueued on: an index into `QUEUES`. A group's jobs
    /// are all on one queue, and so are the re-enqueues of a key.
    queue: u8,
}

fn key_for(key_seq: u64) -> String {
    format!("crash-key-{key_seq}")
}

fn group_for(group: u64) -> String {
    format!("crash-group-{group}")
}

/// The queue all jobs of group `group` are enqueued on.
fn group_queue(group: u64) -> u8 {
    (group % QUEUES.len() as u64) as u8
}

/// Whether job `id`, found on queue `q`, is on the queue its payload names.
fn queue_error(id: u64, spec: &Spec, q: u8) -> Option<String> {
    (spec.queue != q).then(|| {
        format!(
            "job {id} (seq {}) is on queue {:?}, but was enqueued on queue {:?}",
            spec.seq,
            QUEUES[usize::from(q)],
            QUEUES[usize::from(spec.queue)]
        )
    })
}

/// The group number of a job's group key (0: no group).
fn group_num(key: Option<&[u8]>) -> Result<u64, String> {
    let Some(key) = key else { return Ok(0) };
    std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix("crash-group-"))
        .and_then(|n| n.parse().ok())
        .filter(|&n| n != 0)
        .ok_or_else(|| format!("unknown group key {:?}", String::from_utf8_lossy(key)))
}

/// Whether a job carries the level and group its payload asked for; a job
/// that may have been redriven may instead be without its group (a
/// redriven dead letter keeps its level and leaves its group).
fn placement_error(job: &Job, spec: &Spec, maybe_redriven: bool) -> Option<String> {
    let level = job.priority() as u8;
    let group = match group_num(job.group()) {
        Ok(g) => g,
        Err(e) => return Some(format!("job {}: {e}", job.id())),
    };
    let asked = (spec.level, spec.group);
    if (level, group) == asked || (maybe_redriven && (level, group) == (spec.level, 0)) {
        return None;
    }
    Some(format!(
        "job {} has level {level} and group {group}, but was enqueued with level {} and group {}",
        job.id(),
        spec.level,
        spec.group
    ))
}

fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `W|seq|delay|key_seq|max_attempts|pad_len|level|group|queue|<pad>|<fnv64 hex>`;
/// the pad is binary, generated from the seq.
fn encode(spec: &Spec) -> Vec<u8> {
    let mut out = format!(
        "W|{}|{}|{}|{}|{}|{}|{}|{}|",
        spec.seq,
        spec.delay_ms,
        spec.key_seq,
        spec.max_attempts,
        spec.pad_len,
        spec.level,
        spec.group,
        spec.queue
    )
    .into_bytes();
    let mut rng = Rng::mixed(spec.seq.wrapping_mul(0x2545_f491_4f6c_dd1d));
    out.extend((0..spec.pad_len).map(|_| rng.next() as u8));
    let sum = fnv64(&out);
    out.extend(format!("|{sum:016x}").bytes());
    out
}

/// Parses a payload and checks it byte for byte against its re-encoding.
fn decode(bytes: &[u8]) -> Result<Spec, String> {
    let show = || {
        let n = bytes.len().min(48);
        format!("{:?}", String::from_utf8_lossy(&bytes[..n]))
    };
    let mut fields = Vec::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'|' {
            fields.push(&bytes[start..i]);
            start = i + 1;
            if fields.len() == 9 {
                break;
            }
        }
    }
    if fields.len() != 9 || fields[0] != b"W" {
        return Err(format!("payload has no walq-crash header: {}", show()));
    }
    let num = |f: &[u8]| -> Result<u64, String> {
        std::str::from_utf8(f)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad number in payload header: {}", show()))
    };
    let spec = Spec {
        seq: num(fields[1])?,
        delay_ms: num(fields[2])?,
        key_seq: num(fields[3])?,
        max_attempts: u32::try_from(num(fields[4])?).map_err(|e| e.to_string())?,
        pad_len: usize::try_from(num(fields[5])?).map_err(|e| e.to_string())?,
        level: u8::try_from(num(fields[6])?)
            .ok()
            .filter(|&l| l <= 3)
            .ok_or_else(|| format!("bad level in payload header: {}", show()))?,
        group: num(fields[7])?,
        queue: u8::try_from(num(fields[8])?)
            .ok()
            .filter(|&q| usize::from(q) < QUEUES.len())
            .ok_or_else(|| format!("bad queue in payload header: {}", show()))?,
    };
    if spec.pad_len > 1 << 20 {
        return Err(format!("absurd pad length in payload: {}", show()));
    }
    if encode(&spec) != bytes {
        return Err(format!(
            "payload of seq {} ({} bytes) does not match its checksum/padding: {}",
            spec.seq,
            bytes.len(),
            show()
        ));
    }
    Ok(spec)
}

fn queue_options(seed: u64) -> Options {
    Options::default()
        .segment_size(SEGMENT_SIZE)
        .durability(Durability::Sync)
        .max_attempts(MAX_ATTEMPTS)
        // Leases never expire while a child runs, however slow the machine:
        // no check may depend on timing.
        .visibility_timeout(LEASE)
        .backoff(Backoff {
            initial: Duration::from_millis(2),
            multiplier: 2.0,
            max: Duration::from_millis(40),
            jitter: 0.5,
        })
        .jitter_seed(seed)
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------
// The child: runs the workload and reports, until killed.

struct Reporter {
    out: Mutex<std::io::Stdout>,
}

impl Reporter {
    /// Writes whole lines, flushed, under one lock.
    fn lines(&self, thread: u32, lines: &[String]) {
        let mut text = String::new();
        for l in lines {
            text.push_str(PREFIX);
            text.push_str(&thread.to_string());
            text.push(' ');
            text.push_str(l);
            text.push('\n');
        }
        let out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut lock = out.lock();
        if lock
            .write_all(text.as_bytes())
            .and_then(|()| lock.flush())
            .is_err()
        {
            // The parent is gone: nothing left to report to.
            std::process::exit(0);
        }
    }

    fn line(&self, thread: u32, line: String) {
        self.lines(thread, &[line]);
    }

    /// Reports a failure the child itself detected and stops.
    fn fatal(&self, thread: u32, what: String) -> ! {
        self.line(thread, format!("! {what}"));
        std::process::exit(3);
    }
}

/// A producer's message groups: a few open at a time, each closed after
/// `GROUP_JOBS` jobs and replaced by a new one (numbered by the seq of its
/// first job, so group numbers are unique across producers and children).
#[derive(Default)]
struct Groups {
    open: Vec<(u64, u32)>,
}

impl Groups {
    fn pick(&mut self, rng: &mut Rng, seq: u64) -> u64 {
        if self.open.len() < OPEN_GROUPS {
            self.open.push((seq, 0));
        }
        let i = rng.below(self.open.len() as u64) as usize;
        let (group, used) = &mut self.open[i];
        let group = *group;
        *used += 1;
        if *used >= GROUP_JOBS {
            self.open.swap_remove(i);
        }
        group
    }
}

struct Child {
    store: Store,
    /// A handle on each of `QUEUES`, by number.
    qs: Vec<Queue>,
    out: Reporter,
    /// Serialises dead-letter operations (list + redrive/purge + report).
    dead_ops: Mutex<()>,
    /// Producers wait here while the backlog is full.
    room: (Mutex<()>, Condvar),
    base: u64,
    seed: u64,
    /// Known idempotency keys: (key seq, queue number).
    keys: Vec<(u64, u8)>,
}

impl Child {
    fn ok<T>(&self, t: u32, what: &str, r: walq::Result<T>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.out.fatal(t, format!("{what} failed: {e}")),
        }
    }

    fn producer(&self, t: u32) {
        let mut rng = Rng::mixed(self.seed ^ u64::from(t).wrapping_mul(0x1000_0001));
        let mut keys = self.keys.clone();
        let mut groups = Groups::default();
        let mut n = 0u64;
        let mut next_seq = || {
            n += 1;
            self.base + u64::from(t) * 1_000_000 + n
        };
        loop {
            self.wait_for_room();
            let pad = |rng: &mut Rng| {
                if rng.chance(10) {
                    rng.range(2_000, 16_000) as usize
                } else {
                    rng.range(0, 400) as usize
                }
            };
            let choice = rng.below(100);
            if choice < 15 {
                let queue = rng.below(QUEUES.len() as u64) as u8;
                let specs: Vec<Spec> = (0..rng.range(2, 12))
                    .map(|_| Spec {
                        seq: next_seq(),
                        delay_ms: 0,
                        key_seq: 0,
                        max_attempts: 0,
                        pad_len: pad(&mut rng),
                        level: Priority::Normal as u8,
                        group: 0,
                        queue,
                    })
                    .collect();
                let seqs: Vec<String> = specs.iter().map(|s| s.seq.to_string()).collect();
                // Payloads are built before the intent line, so the
                // operation follows the line at once (kills aim at it).
                let payloads: Vec<Vec<u8>> = specs.iter().map(encode).collect();
                self.out.line(t, format!("b {}", seqs.join(" ")));
                let q = &self.qs[usize::from(queue)];
                let ids = self.ok(t, "enqueue_batch", q.enqueue_batch(&payloads));
                let pairs: Vec<String> = specs
                    .iter()
                    .zip(&ids)
                    .map(|(s, id)| format!("{}:{id}", s.seq))
                    .collect();
                self.out.line(t, format!("B {}", pairs.join(" ")));
            } else if choice < 25 && !keys.is_empty() {
                let (key_seq, queue) = keys[rng.below(keys.len() as u64) as usize];
                let spec = Spec {
                    seq: next_seq(),
                    delay_ms: 0,
                    key_seq,
                    max_attempts: 0,
                    pad_len: pad(&mut rng),
                    level: Priority::Normal as u8,
                    group: 0,
                    queue,
                };
                let payload = encode(&spec);
                self.out.line(t, format!("k {} {key_seq}", spec.seq));
                let r = self.qs[usize::from(queue)].enqueue_with(
                    &payload,
                    EnqueueOptions::new().idempotency_key(key_for(key_seq)),
                );
                let r = self.ok(t, "enqueue_with (known key)", r);
                self.out.line(
                    t,
                    format!("K {} {} {}", spec.seq, r.id, u8::from(r.duplicate)),
                );
            } else {
                let seq = next_seq();
                let mut spec = Spec {
                    seq,
                    delay_ms: if rng.chance(20) { rng.range(1, 30) } else { 0 },
                    key_seq: if rng.chance(15) { seq } else { 0 },
                    max_attempts: if rng.chance(20) {
                        rng.range(1, 6) as u32
                    } else {
                        0
                    },
                    pad_len: pad(&mut rng),
                    level: if rng.chance(30) {
                        rng.below(4) as u8
                    } else {
                        Priority::Normal as u8
                    },
                    group: if rng.chance(30) {
                        groups.pick(&mut rng, seq)
                    } else {
                        0
                    },
                    queue: 0,
                };
                spec.queue = if spec.group > 0 {
                    group_queue(spec.group)
                } else if spec.key_seq > 0 && !KEYS_ON_NAMED_QUEUES {
                    0
                } else {
                    rng.below(QUEUES.len() as u64) as u8
                };
                if spec.queue != 0 && !KEYS_ON_NAMED_QUEUES {
                    spec.key_seq = 0;
                }
                let q = &self.qs[usize::from(spec.queue)];
                let payload = encode(&spec);
                self.out.line(t, format!("e {seq}"));
                let plain = spec.delay_ms == 0
                    && spec.key_seq == 0
                    && spec.max_attempts == 0
                    && spec.level == Priority::Normal as u8
                    && spec.group == 0;
                let (id, dup) = if plain {
                    (self.ok(t, "enqueue", q.enqueue(&payload)), false)
                } else {
                    let mut o = EnqueueOptions::new();
                    if spec.delay_ms > 0 {
                        o = o.delay(Duration::from_millis(spec.delay_ms));
                    }
                    if spec.key_seq > 0 {
                        o = o.idempotency_key(key_for(spec.key_seq));
                    }
                    if spec.max_attempts > 0 {
                        o = o.max_attempts(spec.max_attempts);
                    }
                    if spec.level != Priority::Normal as u8 {
                        o = o.priority(Priority::ALL[usize::from(spec.level)]);
                    }
                    if spec.group > 0 {
                        o = o.group(group_for(spec.group));
                    }
                    let r = self.ok(t, "enqueue_with", q.enqueue_with(&payload, o));
                    (r.id, r.duplicate)
                };
                self.out.line(
                    t,
                    format!(
                        "E {seq} {id} {} {} {}",
                        u8::from(dup),
                        spec.key_seq,
                        spec.queue
                    ),
                );
                if spec.key_seq > 0 {
                    keys.push((spec.key_seq, spec.queue));
                }
            }
        }
    }

    fn wait_for_room(&self) {
        let (lock, cv) = &self.room;
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let s = self.store.stats().total;
            if s.ready + s.delayed < BACKLOG {
                return;
            }
            // The timeout only bounds a missed wakeup; nothing depends on it.
            guard = cv
                .wait_timeout(guard, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Checks a job leased from queue `q`.
    fn check_job(&self, t: u32, job: &Job, q: u8) -> Spec {
        let spec = match decode(job.payload()) {
            Ok(s) => s,
            Err(e) => self.out.fatal(t, format!("job {}: {e}", job.id())),
        };
        if let Some(e) = queue_error(job.id(), &spec, q) {
            self.out.fatal(t, e);
        }
        if job.attempt() == 0 || job.attempt() > job.max_attempts() {
            self.out.fatal(
                t,
                format!(
                    "job {} delivered for attempt {} of max {}",
                    job.id(),
                    job.attempt(),
                    job.max_attempts()
                ),
            );
        }
        let want_key = (spec.key_seq > 0).then(|| key_for(spec.key_seq));
        if job.idempotency_key() != want_key.as_deref().map(str::as_bytes) {
            self.out
                .fatal(t, format!("job {} has the wrong idempotency key", job.id()));
        }
        // The child does not know which jobs were redriven; the parent does.
        if let Some(e) = placement_error(job, &spec, true) {
            self.out.fatal(t, e);
        }
        spec
    }

    fn consumer(&self, t: u32) {
        let mut rng = Rng::mixed(self.seed ^ u64::from(t).wrapping_mul(0x2000_0003));
        // Each consumer leases from the queues in turn, starting with its own.
        let mut turn = t as usize;
        loop {
            let qn = (turn % QUEUES.len()) as u8;
            turn += 1;
            let q = &self.qs[usize::from(qn)];
            // Redrive or purge dead letters, more often when they pile up.
            let dead = self.store.stats().total.dead;
            let rounds = if dead > 30 {
                3
            } else {
                u64::from(rng.chance(8))
            };
            for _ in 0..rounds {
                self.dead_letter_op(t, &mut rng);
            }
            let jobs = match rng.below(100) {
                0..=69 => {
                    let r = q.dequeue_timeout(Duration::from_millis(20));
                    self.ok(t, "dequeue_timeout", r).into_iter().collect()
                }
                70..=84 => self.ok(t, "dequeue", q.dequeue()).into_iter().collect(),
                _ => {
                    let n = rng.range(1, 4) as usize;
                    self.ok(t, "dequeue_batch", q.dequeue_batch(n))
                }
            };
            let lines: Vec<String> = jobs
                .iter()
                .map(|j| {
                    let spec = self.check_job(t, j, qn);
                    format!(
                        "D {} {} {} {} {} {}",
                        j.id(),
                        j.attempt(),
                        spec.seq,
                        j.max_attempts(),
                        j.enqueued_ms(),
                        group_num(j.group()).unwrap_or(0)
                    )
                })
                .collect();
            if !lines.is_empty() {
                self.out.lines(t, &lines);
            }
            for job in jobs {
                let id = job.id();
                let r = job.receipt();
                match rng.below(100) {
                    0..=59 => {
                        self.out.line(t, format!("a {id}"));
                        self.ok(t, "ack", q.ack(r));
                        self.out.line(t, format!("A {id}"));
                    }
                    60..=76 => {
                        let dead = u8::from(job.attempt() >= job.max_attempts());
                        // The report gives the least delay: 0 for a backoff.
                        let (retry, least) = if rng.chance(25) {
                            (Retry::Backoff, 0)
                        } else {
                            let ms = rng.below(20);
                            (Retry::After(Duration::from_millis(ms)), ms)
                        };
                        self.out.line(t, format!("n {id} {dead} {least}"));
                        let text = format!("{NACK_TEXT} {id}");
                        self.ok(t, "nack", q.nack(r, retry, &text));
                        self.out.line(t, format!("N {id} {dead}"));
                    }
                    77..=81 => {
                        self.out.line(t, format!("f {id}"));
                        let text = format!("{FAIL_TEXT} {id}");
                        self.ok(t, "fail", q.fail(r, &text));
                        self.out.line(t, format!("F {id}"));
                    }
                    82..=93 => {
                        self.out.line(t, format!("x {id}"));
                        self.ok(t, "extend", q.extend(r, LEASE));
                        self.out.line(t, format!("T {id}"));
                        self.out.line(t, format!("a {id}"));
                        self.ok(t, "ack", q.ack(r));
                        self.out.line(t, format!("A {id}"));
                    }
                    _ => {
                        // Abandon: the lease stays held until the crash.
                        self.out.line(t, format!("H {id}"));
                    }
                }
            }
            self.room.1.notify_all();
        }
    }

    fn dead_letter_op(&self, t: u32, rng: &mut Rng) {
        let _serial = self.dead_ops.lock().unwrap_or_else(|e| e.into_inner());
        // Dead letters are the store's: any handle lists and redrives them,
        // and a redrive returns the job to its own queue.
        let q = &self.qs[rng.below(QUEUES.len() as u64) as usize];
        let ids = q.dead_letter_ids();
        if ids.is_empty() {
            return;
        }
        // Purge the oldest when they pile up, else pick any.
        let id = if ids.len() > 30 && rng.chance(70) {
            ids[0]
        } else {
            ids[rng.below(ids.len() as u64) as usize]
        };
        let letter = match q.dead_letter(id) {
            Ok(Some(l)) => l,
            Ok(None) => self
                .out
                .fatal(t, format!("listed dead letter {id} is not there")),
            Err(e) => self.out.fatal(t, format!("reading dead letter {id}: {e}")),
        };
        match decode(&letter.payload) {
            Err(e) => self.out.fatal(t, format!("dead letter {id}: {e}")),
            Ok(spec) if letter.queue != QUEUES[usize::from(spec.queue)] => self.out.fatal(
                t,
                format!(
                    "dead letter {id} is of queue {:?}, but was enqueued on {:?}",
                    letter.queue,
                    QUEUES[usize::from(spec.queue)]
                ),
            ),
            Ok(_) => {}
        }
        if rng.chance(30) {
            self.out.line(t, format!("r {id}"));
            self.ok(t, "redrive", q.redrive(id));
            self.out.line(t, format!("R {id}"));
        } else {
            self.out.line(t, format!("p {id}"));
            self.ok(t, "purge", q.purge(id));
            self.out.line(t, format!("P {id}"));
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn child_main(dir: PathBuf) -> ! {
    let seed = env_u64(CHILD_SEED_ENV).unwrap_or(1);
    let base = env_u64(CHILD_BASE_ENV).unwrap_or(1_000_000_000);
    let keys: Vec<(u64, u8)> = std::env::var(CHILD_KEYS_ENV)
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| {
            let (k, q) = s.split_once(':')?;
            Some((k.parse().ok()?, q.parse().ok()?))
        })
        .collect();
    let out = Reporter {
        out: Mutex::new(std::io::stdout()),
    };
    // End whatever the test harness printed, so our first line is whole.
    {
        let mut lock = std::io::stdout().lock();
        let _ = lock.write_all(b"\n").and_then(|()| lock.flush());
    }
    let store = match Store::open_with(&dir, queue_options(seed)) {
        Ok(s) => s,
        Err(e) => out.fatal(0, format!("open failed: {e}")),
    };
    let qs: Vec<Queue> = QUEUES
        .iter()
        .map(|name| match store.queue(name) {
            Ok(q) => q,
            Err(e) => out.fatal(0, format!("queue {name:?}: {e}")),
        })
        .collect();
    store.default_queue().check_invariants();
    out.line(0, "O".to_string());
    let child = Arc::new(Child {
        store,
        qs,
        out,
        dead_ops: Mutex::new(()),
        room: (Mutex::new(()), Condvar::new()),
        base,
        seed,
        keys,
    });
    let mut handles = Vec::new();
    for t in 1..=5u32 {
        let c = child.clone();
        handles.push(std::thread::spawn(move || {
            if t <= PRODUCERS {
                c.producer(t)
            } else {
                c.consumer(t)
            }
        }));
    }
    for h in handles {
        if h.join().is_err() {
            child.out.fatal(0, "a worker thread panicked".into());
        }
    }
    std::process::exit(0)
}

/// The child's body; does nothing unless the parent started this process.
#[test]
fn kill9_child() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        child_main(PathBuf::from(dir));
    }
}

// ---------------------------------------------------------------------------
// The parent: the model of what the child acknowledged.

/// Where a job can be.
const LIVE: u8 = 1;
const DEAD: u8 = 2;
const ABSENT: u8 = 4;

fn loc_name(set: u8) -> String {
    let mut v = Vec::new();
    if set & LIVE != 0 {
        v.push("live");
    }
    if set & DEAD != 0 {
        v.push("dead");
    }
    if set & ABSENT != 0 {
        v.push("absent");
    }
    format!("{{{}}}", v.join(","))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ack,
    Nack { dead: bool },
    Fail,
    Redrive,
    Purge,
}

impl Op {
    fn after(self) -> u8 {
        match self {
            Op::Ack | Op::Purge => ABSENT,
            Op::Nack { dead: false } | Op::Redrive => LIVE,
            Op::Nack { dead: true } | Op::Fail => DEAD,
        }
    }
}

struct JobModel {
    seq: u64,
    /// Places the job may be in now.
    may: u8,
    /// Attempts counted when last seen (an unreported lease may add one).
    attempts: u32,
    /// Set by a reported nack: the least due time it set.
    due_floor: Option<u64>,
    /// The last events, for failure messages.
    history: Vec<String>,
}

/// An operation whose intent was reported, waiting for its completion.
struct Pending {
    op: Op,
    /// For a nack: the least due time it can set.
    due_floor: u64,
    /// Another thread reported an event on the job since the intent: the
    /// operation took effect, and the later event supersedes it.
    overtaken: bool,
}

/// What the parent knows about every job the child touched.
///
/// Lines of one child thread arrive in program order, but lines of
/// different threads only in the order they were written, which may differ
/// from the order their operations took effect (a producer may report its
/// enqueue after a consumer already reported acking the job). Every
/// operation on a job is serialised by the queue, and another thread can
/// only act on a job after the operation that made it visible to it took
/// effect (a nack makes it ready, a fail makes it a dead letter, ...). So
/// when another thread reports an event on a job between an intent and
/// its completion, that operation has taken effect, the later event
/// carries the newer state, and the completion is ignored ("overtaken").
#[derive(Default)]
struct Model {
    /// Completed operations reported, by tag.
    done: BTreeMap<String, u64>,
    jobs: BTreeMap<u64, JobModel>,
    id_of_seq: HashMap<u64, u64>,
    /// Seqs the child tried to enqueue.
    intended: HashSet<u64>,
    /// Seqs of dup re-enqueues (their payload must never become a job).
    dup_seqs: HashSet<u64>,
    /// Confirmed keyed jobs: key seq -> (job id, queue number).
    keyed: BTreeMap<u64, (u64, u8)>,
    /// Ids a redrive was attempted on (their max_attempts and order change).
    maybe_redriven: HashSet<u64>,
    // Per cycle:
    pending: HashMap<(u64, u32), Pending>,
    /// Leases held: job id -> (thread, on its last attempt, group).
    holder: HashMap<u64, (u32, bool, u64)>,
    /// Per message group, the largest job id delivered so far (by the
    /// child or by a check's leasing): a group's jobs are delivered in id
    /// order, so no job of the group with a smaller id may come later.
    group_max: HashMap<u64, u64>,
    /// Ids with an event this cycle.
    touched: HashSet<u64>,
    /// The largest enqueue time of a job reported dequeued this cycle: the
    /// queue's clock (monotonic) is at least this for any later operation.
    time_floor: u64,
    /// Batches reported started but not finished, by thread.
    open_batches: HashMap<u32, Vec<u64>>,
    /// Of those, the ones the kill interrupted.
    torn_batches: Vec<Vec<u64>>,
    /// Dup re-enqueues started, by thread: (seq, key seq).
    open_dups: HashMap<u32, (u64, u64)>,
}

struct Ctx {
    seed: u64,
    cycle: u64,
    dir: PathBuf,
}

impl Ctx {
    fn fail(&self, model: &Model, ids: &[u64], msg: String) -> ! {
        let mut text = format!(
            "crash test failed in cycle {} (seed {:#x}, dir {}): {msg}",
            self.cycle,
            self.seed,
            self.dir.display()
        );
        for id in ids {
            if let Some(j) = model.jobs.get(id) {
                let from = j.history.len().saturating_sub(40);
                text.push_str(&format!(
                    "\n  job {id} (seq {}), may be {}; history:\n    {}",
                    j.seq,
                    loc_name(j.may),
                    j.history[from..].join("\n    ")
                ));
            }
        }
        panic!("{text}");
    }
}

impl Model {
    fn note(&mut self, id: u64, what: String) {
        if let Some(j) = self.jobs.get_mut(&id) {
            j.history.push(what);
        }
    }

    /// Checks the group rule for a delivery of job `id` of `group` (0:
    /// none): no other job of its group is leased, and none with a larger
    /// id was delivered before.
    fn group_delivered(&mut self, ctx: &Ctx, id: u64, group: u64, by: &str) {
        if group == 0 {
            return;
        }
        let other = self
            .holder
            .iter()
            .find(|(&o, &(_, _, g))| g == group && o != id)
            .map(|(&o, _)| o);
        if let Some(other) = other {
            ctx.fail(
                self,
                &[id, other],
                format!("job {id} of group {group} delivered {by} while job {other} of its group is leased"),
            );
        }
        let max = self.group_max.entry(group).or_insert(id);
        if *max > id {
            let newer = *max;
            ctx.fail(
                self,
                &[id, newer],
                format!(
                    "job {id} of group {group} delivered {by} after job {newer} of its group: \
                     a group is delivered in id order"
                ),
            );
        }
        *max = id;
    }

    /// Marks every other thread's pending operation on `id` as overtaken.
    fn overtake(&mut self, id: u64, thread: u32) {
        for ((pid, pt), p) in self.pending.iter_mut() {
            if *pid == id && *pt != thread {
                p.overtaken = true;
            }
        }
        self.touched.insert(id);
    }

    /// Records that job `id` carries `seq`; an id or seq seen before must
    /// keep its partner.
    fn link(&mut self, ctx: &Ctx, id: u64, seq: u64) {
        if let Some(&other) = self.id_of_seq.get(&seq) {
            if other != id {
                ctx.fail(
                    self,
                    &[id, other],
                    format!("seq {seq} is job {id} and also job {other}: a job was duplicated"),
                );
            }
        }
        if let Some(j) = self.jobs.get(&id) {
            if j.seq != seq {
                ctx.fail(
                    self,
                    &[id],
                    format!("job {id} carries seq {seq}, earlier seq {}", j.seq),
                );
            }
        }
        if !self.intended.contains(&seq) {
            ctx.fail(
                self,
                &[id],
                format!("job {id} carries seq {seq}, which no producer enqueued"),
            );
        }
        if self.dup_seqs.contains(&seq) {
            ctx.fail(
                self,
                &[id],
                format!(
                    "job {id} carries seq {seq}, an enqueue with a known idempotency key that must not have added a job"
                ),
            );
        }
        self.id_of_seq.insert(seq, id);
    }

    /// A job created this cycle (enqueue reported).
    fn created(&mut self, ctx: &Ctx, id: u64, seq: u64, line: &str) {
        if let Some(j) = self.jobs.get(&id) {
            if !self.touched.contains(&id) {
                ctx.fail(
                    self,
                    &[id],
                    format!(
                        "enqueue of seq {seq} returned id {id}, already used by seq {} before",
                        j.seq
                    ),
                );
            }
            self.link(ctx, id, seq);
            self.note(id, line.to_string());
            return; // Its consumer reported first; that is the later state.
        }
        self.link(ctx, id, seq);
        self.jobs.insert(
            id,
            JobModel {
                seq,
                may: LIVE,
                attempts: 0,
                due_floor: None,
                history: vec![format!("c{} {line}", ctx.cycle)],
            },
        );
        self.touched.insert(id);
    }

    fn apply_line(&mut self, ctx: &Ctx, raw: &str) -> bool {
        let Some(rest) = raw.strip_prefix(PREFIX) else {
            return false;
        };
        let line = format!("c{} {rest}", ctx.cycle);
        let mut words = rest.split_whitespace();
        let thread: u32 = words
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| ctx.fail(self, &[], format!("bad report line {raw:?}")));
        let tag = words.next().unwrap_or("");
        let args: Vec<&str> = words.collect();
        if tag.chars().all(|c| c.is_ascii_uppercase()) {
            *self.done.entry(tag.to_string()).or_default() += 1;
        }
        let num = |i: usize| -> u64 {
            args.get(i)
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("bad report line {raw:?}"))
        };
        match tag {
            "!" => ctx.fail(self, &[], format!("the child reported: {}", args.join(" "))),
            "O" => return false,
            "e" => {
                self.intended.insert(num(0));
                return false;
            }
            "E" => {
                let (seq, id, dup, key_seq) = (num(0), num(1), num(2), num(3));
                let queue = u8::try_from(num(4)).expect("queue number");
                if dup != 0 {
                    ctx.fail(
                        self,
                        &[id],
                        format!("first enqueue with key of seq {seq} reported a duplicate"),
                    );
                }
                self.created(ctx, id, seq, &line);
                if key_seq != 0 {
                    self.keyed.insert(key_seq, (id, queue));
                }
            }
            "b" => {
                let seqs: Vec<u64> = (0..args.len()).map(num).collect();
                self.intended.extend(seqs.iter().copied());
                self.open_batches.insert(thread, seqs);
                return false;
            }
            "B" => {
                self.open_batches.remove(&thread);
                let mut prev: Option<u64> = None;
                for a in &args {
                    let (s, i) = a.split_once(':').expect("seq:id");
                    let (seq, id): (u64, u64) = (s.parse().unwrap(), i.parse().unwrap());
                    if prev.is_some_and(|p| p + 1 != id) {
                        ctx.fail(
                            self,
                            &[id],
                            format!("batch ids are not consecutive: {rest}"),
                        );
                    }
                    prev = Some(id);
                    self.created(ctx, id, seq, &line);
                }
            }
            "k" => {
                let (seq, key_seq) = (num(0), num(1));
                self.intended.insert(seq);
                self.dup_seqs.insert(seq);
                self.open_dups.insert(thread, (seq, key_seq));
                return false;
            }
            "K" => {
                let (seq, id, dup) = (num(0), num(1), num(2));
                let (_, key_seq) = self.open_dups.remove(&thread).expect("k before K");
                let (want, queue) = match self.keyed.get(&key_seq) {
                    Some(&(id, q)) => (Some(id), QUEUES[usize::from(q)]),
                    None => (None, "?"),
                };
                if dup != 1 || Some(id) != want {
                    ctx.fail(
                        self,
                        &[id],
                        format!(
                            "enqueue of seq {seq} on queue {queue:?} with the key of seq {key_seq} (job {want:?}) returned id {id}, duplicate={dup}: the idempotency key was forgotten"
                        ),
                    );
                }
                self.note(id, line);
            }
            "D" => {
                let (id, attempt, seq, max) = (num(0), num(1), num(2), num(3));
                self.time_floor = self.time_floor.max(num(4));
                let group = num(5);
                if let Some((t, _, _)) = self.holder.get(&id) {
                    ctx.fail(
                        self,
                        &[id],
                        format!("job {id} delivered to thread {thread} while thread {t} holds its lease"),
                    );
                }
                let known = self.jobs.contains_key(&id);
                self.link(ctx, id, seq);
                if known {
                    let may = self.jobs[&id].may;
                    if may & LIVE == 0 {
                        self.note(id, line);
                        ctx.fail(
                            self,
                            &[id],
                            format!(
                                "job {id} delivered (attempt {attempt}) but it may only be {}",
                                loc_name(may)
                            ),
                        );
                    }
                } else {
                    self.jobs.insert(
                        id,
                        JobModel {
                            seq,
                            may: LIVE,
                            attempts: 0,
                            due_floor: None,
                            history: Vec::new(),
                        },
                    );
                }
                self.overtake(id, thread);
                let j = self.jobs.get_mut(&id).expect("inserted");
                j.may = LIVE;
                j.due_floor = None;
                j.attempts = u32::try_from(attempt).expect("attempt fits u32");
                j.history.push(line);
                self.holder.insert(id, (thread, attempt >= max, group));
                self.group_delivered(ctx, id, group, &format!("by thread {thread}"));
            }
            "a" | "n" | "f" | "r" | "p" => {
                let id = num(0);
                let op = match tag {
                    "a" => Op::Ack,
                    "n" => Op::Nack { dead: num(1) != 0 },
                    "f" => Op::Fail,
                    "r" => Op::Redrive,
                    _ => Op::Purge,
                };
                let Some(j) = self.jobs.get(&id) else {
                    ctx.fail(
                        self,
                        &[],
                        format!("{line}: job {id} is unknown to the model"),
                    );
                };
                // If the operation does not happen, the job stays as it was;
                // for a lease that is: released by the next open, and dead
                // if this was its last attempt.
                let mut before = j.may;
                match op {
                    Op::Ack | Op::Nack { .. } | Op::Fail => {
                        let Some((holder, last, _)) = self.holder.remove(&id) else {
                            panic!("test bug: {line} without holding the lease");
                        };
                        assert_eq!(holder, thread, "test bug: {line} by another thread");
                        if last {
                            before = DEAD;
                        }
                    }
                    Op::Redrive | Op::Purge => {
                        if j.may & DEAD == 0 {
                            let may = j.may;
                            self.note(id, line);
                            ctx.fail(
                                self,
                                &[id],
                                format!(
                                    "job {id} listed among the dead letters, but it may only be {}",
                                    loc_name(may)
                                ),
                            );
                        }
                        if op == Op::Redrive {
                            self.maybe_redriven.insert(id);
                        }
                    }
                }
                self.overtake(id, thread);
                let due_floor = match op {
                    Op::Nack { .. } => self.time_floor + num(2),
                    _ => 0,
                };
                self.pending.insert(
                    (id, thread),
                    Pending {
                        op,
                        due_floor,
                        overtaken: false,
                    },
                );
                let j = self.jobs.get_mut(&id).expect("checked");
                j.may = before | op.after();
                if op == Op::Redrive {
                    j.due_floor = None; // due at the redrive, if it happens
                }
                j.history.push(line);
                return false;
            }
            "A" | "N" | "F" | "R" | "P" => {
                let id = num(0);
                let p = self
                    .pending
                    .remove(&(id, thread))
                    .unwrap_or_else(|| panic!("test bug: {line} without its intent"));
                if !p.overtaken {
                    let j = self.jobs.get_mut(&id).expect("known");
                    j.may = p.op.after();
                    j.due_floor = match p.op {
                        Op::Nack { dead: false } => Some(p.due_floor),
                        _ => None,
                    };
                    if p.op == Op::Redrive {
                        j.attempts = 0;
                    }
                }
                self.overtake(id, thread);
                self.note(id, line);
            }
            "x" | "H" => {
                self.note(num(0), line);
                return false;
            }
            "T" => self.note(num(0), line),
            other => panic!("test bug: unknown report tag {other:?} in {raw:?}"),
        }
        true
    }

    /// The kill is done: whatever was started and not reported finished
    /// stays uncertain.
    fn end_of_child(&mut self) {
        self.torn_batches = self.open_batches.drain().map(|(_, v)| v).collect();
        self.open_dups.clear();
        self.pending.clear();
        // A lease still held at the kill is released by the next open,
        // which dead-letters the job if that was its last attempt.
        for (id, (_, last, _)) in self.holder.drain() {
            if last {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.may = DEAD;
                    j.history
                        .push("held at the kill on its last attempt".into());
                }
            }
        }
        self.touched.clear();
        self.time_floor = 0;
    }
}

// ---------------------------------------------------------------------------
// The parent: running a child, and checking the queue after the kill.

/// Whether a report tag is a completed operation (what kill plans count).
fn is_op(tag: &str) -> bool {
    matches!(
        tag,
        "E" | "B" | "K" | "D" | "A" | "N" | "F" | "R" | "P" | "T"
    )
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
struct ChildGuard(std::process::Child);

impl ChildGuard {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Right after spawn: lands during exec, open or recovery.
    AtSpawn,
    /// After `n` reported operations (0: as soon as open returned), and
    /// then, if `at` is given, at the next intent line with that tag: the
    /// operation is then most likely under way (a batch half written, an
    /// ack's record not yet synced, ...).
    AfterOps(u64, Option<&'static str>),
}

#[derive(Default)]
struct Totals {
    ops: u64,
    killed_at_spawn: u64,
    torn_tails: u64,
    incomplete_batches: u64,
    tmp_removed: u64,
    leases_released: u64,
    dead_on_open: u64,
    max_segments: u64,
    max_segment_id: u64,
    max_jobs: usize,
    dead_seen: u64,
    /// Jobs leased after the opens, by level (Low first).
    by_level: [u64; 4],
    /// Jobs leased after the opens, by queue (as `QUEUES`).
    by_queue: [u64; 3],
    /// The most jobs found waiting behind their group's head.
    blocked_seen: u64,
}

struct Run {
    exe: PathBuf,
    dir: PathBuf,
    logs: PathBuf,
    model: Model,
    totals: Totals,
    rng: Rng,
    /// Where the queue directory is copied for draining.
    scratch: tempfile::TempDir,
}

impl Run {
    fn run_child(&mut self, ctx: &Ctx, kill: Kill) {
        let cycle = ctx.cycle;
        let mut keys: Vec<(u64, u8)> = self
            .model
            .keyed
            .iter()
            .map(|(&k, &(_, q))| (k, q))
            .collect();
        let mut pass = Vec::new();
        for _ in 0..6 {
            if keys.is_empty() {
                break;
            }
            let i = self.rng.below(keys.len() as u64) as usize;
            let (key, queue) = keys.swap_remove(i);
            pass.push(format!("{key}:{queue}"));
        }
        let stderr_path = self.logs.join(format!("child-{cycle}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("child stderr file");
        let mut child = Command::new(&self.exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(CHILD_DIR_ENV, &self.dir)
            .env(CHILD_SEED_ENV, self.rng.next().to_string())
            .env(CHILD_BASE_ENV, ((cycle + 1) * 10_000_000).to_string())
            .env(CHILD_KEYS_ENV, pass.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("piped stdout");
        // Killed and reaped on every path, panics included.
        let child = Arc::new(Mutex::new(ChildGuard(child)));
        let pid = child.lock().expect("child lock").0.id();
        if matches!(kill, Kill::AtSpawn) {
            self.totals.killed_at_spawn += 1;
        }
        // The reader kills the child itself, as soon as it reads the line
        // the plan names, to land the kill as close to that moment as it
        // can; then it passes the lines on, in order.
        let (tx, rx) = mpsc::channel::<String>();
        let killer = child.clone();
        let reader = std::thread::spawn(move || -> bool {
            let signal = || {
                let _ = killer.lock().expect("child lock").0.kill();
                true
            };
            let mut killed = matches!(kill, Kill::AtSpawn) && signal();
            let mut r = BufReader::new(stdout);
            let (mut ops, mut opened) = (0u64, false);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    // A last line without its newline was cut by the kill.
                    Ok(0) | Err(_) => break,
                    Ok(_) if buf.last() != Some(&b'\n') => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf).into_owned();
                if let (false, Kill::AfterOps(n, at)) = (killed, kill) {
                    let mut words = line.strip_prefix(PREFIX).unwrap_or("").split_whitespace();
                    let tag = words.nth(1);
                    opened |= tag == Some("O");
                    ops += u64::from(tag.is_some_and(is_op));
                    if opened && ops >= n && (at.is_none() || tag == at) {
                        killed = signal();
                    }
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
            killed
        });
        loop {
            match rx.recv_timeout(HANG_LIMIT) {
                Ok(line) => {
                    if self.model.apply_line(ctx, line.trim_end()) {
                        self.totals.ops += 1;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let stacks = thread_stacks(pid);
                    ctx.fail(
                        &self.model,
                        &[],
                        format!(
                            "the child reported nothing for {HANG_LIMIT:?} (hung?); \
                             stderr in {}; its threads:\n{stacks}",
                            stderr_path.display()
                        ),
                    )
                }
            }
        }
        let killed = reader.join().expect("reader thread");
        let status = {
            let mut guard = child.lock().expect("child lock");
            guard.0.wait().expect("wait for the child")
        };
        if !killed {
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            ctx.fail(
                &self.model,
                &[],
                format!("the child exited by itself ({status}) before the kill; stderr:\n{err}"),
            );
        }
        self.model.end_of_child();
    }

    /// Drains a copy of the queue directory as the check left it (its
    /// leases released by the copy's open), acking most jobs, failing
    /// one and nacking some for an immediate retry, and checks the group
    /// rule on the way: a job of a group comes out only while no other
    /// job of its group is unfinished (leased or nacked), never after a
    /// newer job of its group finished, and never before a job of its
    /// group delivered earlier. Returns each job's first delivery, in
    /// order, and how many jobs the copy's open dead-lettered.
    fn drain_copy(&self, ctx: &Ctx, t_far: u64) -> (Vec<Job>, u64) {
        let m = &self.model;
        let copy = self.scratch.path().join("copy");
        let _ = std::fs::remove_dir_all(&copy);
        if let Err(e) = copy_dir(&self.dir, &copy) {
            ctx.fail(m, &[], format!("copying the queue directory failed: {e}"));
        }
        // The copy is thrown away: no fsync needed (and none paid for).
        let opts = queue_options(ctx.seed)
            .durability(Durability::Os)
            .clock(ManualClock::new(t_far));
        let store = Store::open_with(&copy, opts)
            .unwrap_or_else(|e| ctx.fail(m, &[], format!("opening the copy failed: {e}")));
        let qs = open_queues(ctx, m, &store);
        let dead_on_open = store.recovery_report().dead_lettered_on_open;
        let mut rng = Rng::mixed(ctx.seed ^ ctx.cycle.wrapping_mul(0x5851_f42d_4c95_7f2d));
        // Per group: the job delivered and not finished, the largest id
        // finished.
        let mut holding: HashMap<u64, u64> = HashMap::new();
        let mut finished: HashMap<u64, u64> = HashMap::new();
        let mut firsts = Vec::new();
        let mut ids = HashSet::new();
        let mut failed = false;
        // Each queue is drained in turn.
        let mut qn = 0;
        for deliveries in 0u64.. {
            let q = &qs[qn];
            let job = match q.dequeue() {
                Ok(Some(job)) => job,
                Ok(None) if qn + 1 < qs.len() => {
                    qn += 1;
                    continue;
                }
                Ok(None) => break,
                Err(e) => ctx.fail(m, &[], format!("dequeue from the copy failed: {e}")),
            };
            let id = job.id();
            let spec = decode(job.payload())
                .unwrap_or_else(|e| ctx.fail(m, &[id], format!("job {id} in the copy: {e}")));
            if let Some(e) = queue_error(id, &spec, qn as u8) {
                ctx.fail(m, &[id], format!("draining a copy: {e}"));
            }
            let group = group_num(job.group()).unwrap_or_else(|e| ctx.fail(m, &[id], e));
            if deliveries > 1_000_000 {
                ctx.fail(m, &[id], "draining the copy does not end".into());
            }
            if group != 0 {
                let problem = match (holding.get(&group), finished.get(&group)) {
                    (Some(&cur), _) if cur != id => {
                        Some(format!("job {cur} of its group is unfinished"))
                    }
                    (None, Some(&done)) if done > id => {
                        Some(format!("job {done} of its group finished before"))
                    }
                    (None, _) => m
                        .group_max
                        .get(&group)
                        .filter(|&&max| max > id)
                        .map(|max| format!("job {max} of its group was delivered before")),
                    _ => None,
                };
                if let Some(p) = problem {
                    ctx.fail(
                        m,
                        &[id],
                        format!("draining a copy delivered job {id} of group {group} while {p}"),
                    );
                }
                holding.insert(group, id);
            }
            let r = job.receipt();
            // A dead letter costs two fsyncs whatever the durability: one
            // fail per drain (on a grouped job, to release its group that
            // way too); nacks only where the job will be back.
            let kind = rng.below(100);
            let last = job.attempt() >= job.max_attempts();
            let done = if group != 0 && !failed && kind < 20 {
                failed = true;
                q.fail(r, FAIL_TEXT).map(|()| true)
            } else if kind < 85 || last {
                q.ack(r).map(|()| true)
            } else {
                q.nack(r, Retry::After(Duration::ZERO), NACK_TEXT)
                    .map(|()| false)
            };
            let done = done.unwrap_or_else(|e| {
                ctx.fail(
                    m,
                    &[id],
                    format!("settling job {id} in the copy failed: {e}"),
                )
            });
            if done && group != 0 {
                holding.remove(&group);
                let f = finished.entry(group).or_insert(id);
                *f = (*f).max(id);
            }
            if ids.insert(id) {
                firsts.push(job);
            }
        }
        let s = store.stats().total;
        if s.ready + s.delayed + s.in_flight != 0 {
            ctx.fail(
                m,
                &[],
                format!("draining a copy of the queue left jobs behind (groups held by {holding:?}): {s:?}"),
            );
        }
        store.default_queue().check_invariants();
        drop(qs);
        drop(store);
        let _ = std::fs::remove_dir_all(&copy);
        (firsts, dead_on_open)
    }

    /// Reopens the queue after the kill and checks everything.
    fn check(&mut self, ctx: &Ctx) {
        let t_far = wall_ms() + 3_600_000;
        let opts = queue_options(ctx.seed).clock(ManualClock::new(t_far));
        let store = match Store::open_with(&self.dir, opts) {
            Ok(s) => s,
            Err(e) => ctx.fail(
                &self.model,
                &[],
                format!("reopening after the kill failed: {e}"),
            ),
        };
        let qs = open_queues(ctx, &self.model, &store);
        store.default_queue().check_invariants();
        let report = store.recovery_report().clone();
        let at_open = store.stats();
        let s0 = at_open.total;
        // Each queue's ready count (a queue the store lists no counts for
        // has none).
        let ready_at_open: Vec<u64> = QUEUES
            .iter()
            .map(|name| {
                let mine = at_open.queues.iter().find(|c| c.name == *name);
                mine.map_or(0, |c| c.ready)
            })
            .collect();
        let dead = match qs[0].dead_letters() {
            Ok(d) => d,
            Err(e) => ctx.fail(
                &self.model,
                &[],
                format!("reading dead letters failed: {e}"),
            ),
        };
        // Each queue is drained on its own: `lanes[q]` is what queue `q`
        // delivered, in order; `drained` all of it.
        let mut lanes: Vec<Vec<Job>> = Vec::new();
        for q in &qs {
            let mut lane = Vec::new();
            loop {
                match q.dequeue() {
                    Ok(Some(job)) => lane.push(job),
                    Ok(None) => break,
                    Err(e) => ctx.fail(
                        &self.model,
                        &[],
                        format!("dequeue from {:?} after reopen failed: {e}", q.name()),
                    ),
                }
            }
            lanes.push(lane);
        }
        let drained: Vec<Job> = lanes.iter().flatten().cloned().collect();
        store.default_queue().wait_upkeep();
        let s1 = store.stats().total;
        store.default_queue().check_invariants();
        drop(qs);
        drop(store);
        let lane_lens: Vec<u64> = lanes.iter().map(|l| l.len() as u64).collect();
        if ready_at_open != lane_lens {
            ctx.fail(
                &self.model,
                &[],
                format!(
                    "the queues {QUEUES:?} had {ready_at_open:?} jobs ready at the open, \
                     but {lane_lens:?} were leased from them"
                ),
            );
        }
        // The group rule on the leased jobs: at most one per group, and
        // never one older than a job of its group delivered before.
        let mut heads: HashMap<u64, u64> = HashMap::new();
        for job in &drained {
            let group =
                group_num(job.group()).unwrap_or_else(|e| ctx.fail(&self.model, &[job.id()], e));
            if group == 0 {
                continue;
            }
            if let Some(other) = heads.insert(group, job.id()) {
                ctx.fail(
                    &self.model,
                    &[other, job.id()],
                    format!(
                        "jobs {other} and {} of group {group} both leased after the open",
                        job.id()
                    ),
                );
            }
            self.model
                .group_delivered(ctx, job.id(), group, "after the open");
        }
        // The jobs behind their group's head (not delivered above): found
        // by draining a copy of the directory.
        let (copy_firsts, copy_dead_on_open) = self.drain_copy(ctx, t_far);
        let leased: HashSet<u64> = drained.iter().map(Job::id).collect();
        let blocked: Vec<Job> = copy_firsts
            .iter()
            .filter(|j| !leased.contains(&j.id()))
            .cloned()
            .collect();
        let in_copy: HashSet<u64> = copy_firsts.iter().map(Job::id).collect();
        let mut last_leases = 0;
        for job in &drained {
            let last = job.attempt() >= job.max_attempts();
            last_leases += u64::from(last);
            if in_copy.contains(&job.id()) == last {
                ctx.fail(
                    &self.model,
                    &[job.id()],
                    format!(
                        "job {} (attempt {} of {}) was {}delivered when a copy of the queue was drained",
                        job.id(),
                        job.attempt(),
                        job.max_attempts(),
                        if last { "" } else { "not " }
                    ),
                );
            }
        }
        if copy_dead_on_open != last_leases {
            ctx.fail(
                &self.model,
                &[],
                format!(
                    "opening a copy dead-lettered {copy_dead_on_open} released leases, \
                     but {last_leases} were on their last attempt"
                ),
            );
        }
        self.totals.blocked_seen = self.totals.blocked_seen.max(blocked.len() as u64);
        for job in &drained {
            self.totals.by_level[job.priority() as usize] += 1;
        }
        for (q, lane) in lanes.iter().enumerate() {
            self.totals.by_queue[q] += lane.len() as u64;
        }
        let m = &mut self.model;

        // Stats add up.
        let n = drained.len() as u64;
        let stats_ok = s0.in_flight == 0
            && s0.ready == n
            && s0.delayed == blocked.len() as u64
            && s0.dead == dead.len() as u64
            && s0.enqueued_total == 0
            && s0.acked_total == 0
            && s0.dead_lettered_total == report.dead_lettered_on_open
            && s1.in_flight == n
            && s1.ready == 0
            && s1.delayed == blocked.len() as u64
            && s1.dead == s0.dead;
        if !stats_ok {
            ctx.fail(
                m,
                &[],
                format!(
                    "stats do not add up with {n} jobs leased, {} behind their group and {} dead letters read:\n  at open {s0:?}\n  after leasing {s1:?}\n  report {report:?}",
                    blocked.len(),
                    dead.len()
                ),
            );
        }
        // The files on disk match the stats; no temporary file is left.
        let mut segs = 0u64;
        let mut bytes = 0u64;
        for entry in std::fs::read_dir(&self.dir).expect("list queue dir") {
            let entry = entry.expect("dir entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                ctx.fail(m, &[], format!("temporary file {name} left after open"));
            }
            // What `Stats::disk_bytes` counts: segments, spares prepared
            // ahead, dead letters and the completion file.
            if name.ends_with(".wal.spare") || name == "done.rec" {
                bytes += entry.metadata().expect("metadata").len();
            }
            if name.ends_with(".wal") {
                bytes += entry.metadata().expect("metadata").len();
                if name != "dead.wal" {
                    segs += 1;
                    let id: u64 = name.trim_end_matches(".wal").parse().unwrap_or(0);
                    self.totals.max_segment_id = self.totals.max_segment_id.max(id);
                }
            }
        }
        if segs != s1.segments || bytes != s1.disk_bytes {
            ctx.fail(
                m,
                &[],
                format!(
                    "{segs} segment files holding {bytes} bytes on disk, stats say {} segments, {} bytes",
                    s1.segments, s1.disk_bytes
                ),
            );
        }
        self.totals.max_segments = self.totals.max_segments.max(segs);
        self.totals.torn_tails += u64::from(report.torn_bytes > 0);
        self.totals.incomplete_batches += u64::from(report.incomplete_batch_records > 0);
        self.totals.tmp_removed += report.temp_files_removed;
        self.totals.leases_released += report.leases_released;
        self.totals.dead_on_open += report.dead_lettered_on_open;
        self.totals.dead_seen = self.totals.dead_seen.max(dead.len() as u64);

        // Every job found: intact, known key, at most once.
        let mut seen: BTreeMap<u64, u8> = BTreeMap::new();
        let mut specs: HashMap<u64, Spec> = HashMap::new();
        let mut attempts_seen: HashMap<u64, u32> = HashMap::new();
        // Dead letters of jobs whose lease was released on its last attempt.
        let mut exhausted_on_open: HashMap<u64, u32> = HashMap::new();
        for letter in &dead {
            let spec = decode(&letter.payload).unwrap_or_else(|e| {
                ctx.fail(m, &[letter.id], format!("dead letter {}: {e}", letter.id))
            });
            if letter.queue != QUEUES[usize::from(spec.queue)] {
                ctx.fail(
                    m,
                    &[letter.id],
                    format!(
                        "dead letter {} is of queue {:?}, but was enqueued on {:?}",
                        letter.id,
                        letter.queue,
                        QUEUES[usize::from(spec.queue)]
                    ),
                );
            }
            let want_key = (spec.key_seq > 0).then(|| key_for(spec.key_seq).into_bytes());
            if letter.key != want_key {
                ctx.fail(
                    m,
                    &[letter.id],
                    format!("dead letter {} has the wrong key", letter.id),
                );
            }
            // A redrive resets the attempts and gives the queue's max.
            let max = spec_max(&spec);
            let redriven = m.maybe_redriven.contains(&letter.id);
            let allowed = if redriven { max.max(MAX_ATTEMPTS) } else { max };
            let exhausted = letter.attempts == max || (redriven && letter.attempts == MAX_ATTEMPTS);
            let failed = letter.error.starts_with(FAIL_TEXT);
            if letter.attempts == 0 || letter.attempts > allowed || !(failed || exhausted) {
                ctx.fail(
                    m,
                    &[letter.id],
                    format!(
                        "dead letter {} after {} attempts (max {max}) with error {:?}",
                        letter.id, letter.attempts, letter.error
                    ),
                );
            }
            if exhausted && !failed && !letter.error.starts_with(NACK_TEXT) {
                exhausted_on_open.insert(letter.id, letter.attempts);
            }
            attempts_seen.insert(letter.id, letter.attempts);
            if seen.insert(letter.id, DEAD).is_some() {
                ctx.fail(
                    m,
                    &[letter.id],
                    format!("dead letter {} listed twice", letter.id),
                );
            }
            specs.insert(letter.id, spec);
        }
        let by_queue = lanes
            .iter()
            .enumerate()
            .flat_map(|(q, lane)| lane.iter().map(move |job| (q as u8, job)));
        for (qn, job) in by_queue {
            let id = job.id();
            let spec = decode(job.payload())
                .unwrap_or_else(|e| ctx.fail(m, &[id], format!("job {id}: {e}")));
            if let Some(e) = queue_error(id, &spec, qn) {
                ctx.fail(m, &[id], e);
            }
            let want_key = (spec.key_seq > 0).then(|| key_for(spec.key_seq).into_bytes());
            if job.idempotency_key().map(<[u8]>::to_vec) != want_key {
                ctx.fail(m, &[id], format!("job {id} has the wrong idempotency key"));
            }
            let redriven = m.maybe_redriven.contains(&id);
            let max_ok = job.max_attempts() == spec_max(&spec)
                || (redriven && job.max_attempts() == MAX_ATTEMPTS);
            if !max_ok || job.attempt() == 0 || job.attempt() > job.max_attempts() {
                ctx.fail(
                    m,
                    &[id],
                    format!(
                        "job {id} delivered for attempt {} of max {} (its payload asked for max {})",
                        job.attempt(),
                        job.max_attempts(),
                        spec_max(&spec)
                    ),
                );
            }
            if let Some(e) = placement_error(job, &spec, redriven) {
                ctx.fail(m, &[id], e);
            }
            attempts_seen.insert(id, job.attempt());
            if let Some(prev) = seen.insert(id, LIVE) {
                ctx.fail(
                    m,
                    &[id],
                    format!("job {id} is both {} and ready", loc_name(prev)),
                );
            }
            specs.insert(id, spec);
        }
        // A job behind its group's head was never leased (a head holds its
        // group until it is finished), comes out of the copy on its first
        // attempt, and its group's head has a smaller id.
        for job in &blocked {
            let id = job.id();
            let spec = decode(job.payload())
                .unwrap_or_else(|e| ctx.fail(m, &[id], format!("job {id}: {e}")));
            let want_key = (spec.key_seq > 0).then(|| key_for(spec.key_seq).into_bytes());
            if job.idempotency_key().map(<[u8]>::to_vec) != want_key {
                ctx.fail(m, &[id], format!("job {id} has the wrong idempotency key"));
            }
            if let Some(e) = placement_error(job, &spec, m.maybe_redriven.contains(&id)) {
                ctx.fail(m, &[id], e);
            }
            let group = group_num(job.group()).unwrap_or(0);
            let head = heads.get(&group).copied();
            if group == 0 || head.is_none_or(|h| h > id) || job.attempt() != 1 {
                ctx.fail(
                    m,
                    &[id],
                    format!(
                        "job {id} of group {group} (attempt {} in the copy) was not leased after \
                         the open, but its group's head there was {head:?}",
                        job.attempt()
                    ),
                );
            }
            attempts_seen.insert(id, 0);
            if let Some(prev) = seen.insert(id, LIVE) {
                ctx.fail(
                    m,
                    &[id],
                    format!("job {id} is both {} and waiting", loc_name(prev)),
                );
            }
            specs.insert(id, spec);
        }
        for (&id, spec) in &specs {
            m.link(ctx, id, spec.seq);
            if spec.key_seq != 0 && spec.key_seq != spec.seq {
                ctx.fail(
                    m,
                    &[id],
                    format!("job {id} came from a re-enqueue of a known key"),
                );
            }
        }

        // Each job is where the model allows.
        for (&id, &loc) in &seen {
            match m.jobs.get_mut(&id) {
                Some(j) => {
                    // A lease taken just before the kill, never reported,
                    // counts an attempt: on the last one the open that
                    // follows dead-letters the job.
                    let unreported_last_lease = loc == DEAD
                        && j.may & LIVE != 0
                        && exhausted_on_open.get(&id) == Some(&(j.attempts + 1));
                    // Attempts are persisted: never fewer than last seen
                    // (a leased job here has one more: ours), unless a
                    // redrive reset them.
                    let now_attempts = attempts_seen[&id];
                    let ours = loc == LIVE && leased.contains(&id);
                    let floor = j.attempts + u32::from(ours);
                    if now_attempts < floor && !m.maybe_redriven.contains(&id) {
                        let was = j.attempts;
                        ctx.fail(
                            m,
                            &[id],
                            format!(
                                "job {id} is {} with {now_attempts} attempts counted, \
                                 but {was} were counted before",
                                loc_name(loc)
                            ),
                        );
                    }
                    if j.may & loc == 0 && !unreported_last_lease {
                        let may = j.may;
                        ctx.fail(
                            m,
                            &[id],
                            format!(
                                "job {id} is {} after the crash, but may only be {}",
                                loc_name(loc),
                                loc_name(may)
                            ),
                        );
                    }
                }
                None => {
                    m.jobs.insert(
                        id,
                        JobModel {
                            seq: specs[&id].seq,
                            may: loc,
                            attempts: attempts_seen[&id],
                            due_floor: None,
                            history: vec![format!(
                                "c{} found after the crash (enqueue not reported)",
                                ctx.cycle
                            )],
                        },
                    );
                }
            }
        }
        let missing: Vec<u64> = m
            .jobs
            .iter()
            .filter(|(id, j)| !seen.contains_key(id) && j.may & ABSENT == 0)
            .map(|(id, _)| *id)
            .collect();
        if !missing.is_empty() {
            let n = missing.len();
            ctx.fail(
                m,
                &missing[..n.min(5)],
                format!("{n} acknowledged job(s) missing after the crash: {missing:?}"),
            );
        }
        // A batch is all or nothing.
        for batch in std::mem::take(&mut m.torn_batches) {
            let there = batch.iter().filter(|s| m.id_of_seq.contains_key(s)).count();
            if there != 0 && there != batch.len() {
                ctx.fail(
                    m,
                    &[],
                    format!(
                        "only {there} of the {} jobs of an interrupted batch exist: seqs {batch:?}",
                        batch.len()
                    ),
                );
            }
        }

        // Levels: this open starts the cycle at its first slot and every
        // job found is due, so how many jobs each level has fixes the level
        // of every delivery.
        for lane in &lanes {
            check_level_cycle(ctx, m, lane);
        }
        // Ready order, within each level: jobs come out by (due, id). A job never leased nor
        // redriven is due exactly at enqueue time + delay; a lease released
        // by this open is due at the open's clock (after everything else);
        // any other job is due somewhere between its enqueue time (it was
        // delivered, then nacked, released or redriven later; our own
        // leases, with the clock an hour ahead, may even precede its delay)
        // and the open's clock, and a reported nack puts it no earlier than
        // the queue's clock when the nack started plus its delay. So no job may come out after one whose earliest
        // possible (due, id) is past its own latest possible one.
        let released = (report.leases_released - report.dead_lettered_on_open) as usize;
        if released > drained.len() {
            ctx.fail(
                m,
                &[],
                format!("report {report:?} releases more leases than there are jobs"),
            );
        }
        check_ready_order(ctx, m, &lanes, &specs, released, t_far);

        // The new state: what was found. Our own leases are released by the
        // next open; a job on its last attempt then goes to the dead letters.
        let last_attempt: HashSet<u64> = drained
            .iter()
            .filter(|j| j.attempt() >= j.max_attempts())
            .map(Job::id)
            .collect();
        for (&id, j) in m.jobs.iter_mut() {
            let loc = seen.get(&id).copied().unwrap_or(ABSENT);
            j.may = if last_attempt.contains(&id) {
                DEAD
            } else {
                loc
            };
            if let Some(&a) = attempts_seen.get(&id) {
                j.attempts = a;
            }
            j.due_floor = None;
            j.history
                .push(format!("c{} checked: {}", ctx.cycle, loc_name(loc)));
            if j.history.len() > 200 {
                j.history.drain(..100);
            }
        }
        for (&id, spec) in &specs {
            if spec.key_seq == spec.seq {
                m.keyed.insert(spec.seq, (id, spec.queue));
            }
        }
        self.totals.max_jobs = self.totals.max_jobs.max(drained.len());
    }
}

/// A handle on each of `QUEUES` in `store`, by number.
fn open_queues(ctx: &Ctx, m: &Model, store: &Store) -> Vec<Queue> {
    QUEUES
        .iter()
        .map(|name| {
            store
                .queue(name)
                .unwrap_or_else(|e| ctx.fail(m, &[], format!("queue {name:?}: {e}")))
        })
        .collect()
}

/// A directory for the copies the checks drain: in memory where there is
/// a tmpfs at /dev/shm (opening a copy syncs what was just copied, which
/// on a disk costs more than the rest of a cycle), else the temp dir.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("walq-crash-copy")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("scratch dir")
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().mode(0o700).create(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The level the delivery rule serves when the levels in `ready` have
/// candidates, and the cycle position after it (docs/architecture.md,
/// "The delivery rule": one level ready is served without moving the
/// cycle; several walk the 15-slot cycle from `turn`).
fn cycle_choice(turn: usize, ready: [bool; 4]) -> Option<(usize, usize)> {
    const CYCLE: [usize; 15] = [3, 2, 3, 1, 3, 2, 3, 0, 3, 2, 3, 1, 3, 2, 3];
    if ready.iter().filter(|&&r| r).count() <= 1 {
        return Some((ready.iter().position(|&r| r)?, turn));
    }
    (0..CYCLE.len()).find_map(|k| {
        let slot = (turn + k) % CYCLE.len();
        ready[CYCLE[slot]].then_some((CYCLE[slot], (slot + 1) % CYCLE.len()))
    })
}

/// The levels of the jobs leased after an open, in delivery order, are
/// the cycle's choices given how many jobs each level has.
fn check_level_cycle(ctx: &Ctx, m: &Model, drained: &[Job]) {
    let mut left = [0usize; 4];
    for job in drained {
        left[job.priority() as usize] += 1;
    }
    let mut turn = 0;
    for (k, job) in drained.iter().enumerate() {
        let Some((want, next)) = cycle_choice(turn, left.map(|n| n > 0)) else {
            unreachable!("a job is left to deliver");
        };
        let got = job.priority() as usize;
        if got != want {
            ctx.fail(
                m,
                &[job.id()],
                format!(
                    "delivery {k} after the open is job {} of level {got}, but the cycle \
                     serves level {want} there (jobs left by level, Low first: {left:?})",
                    job.id()
                ),
            );
        }
        left[want] -= 1;
        turn = next;
    }
}

/// The ready order within each level (see the comment at the call). The
/// leases released by the open come out last in their level, by id, each
/// on its second attempt or later; how many each level has is not known,
/// so the longest such tail of each level stands for them (treating a
/// job there as due at the open is right for a released lease and harmless
/// for any other: its ids rise and nothing before it is due that late),
/// and those tails must hold at least as many jobs as were released.
fn check_ready_order(
    ctx: &Ctx,
    m: &Model,
    lanes: &[Vec<Job>],
    specs: &HashMap<u64, Spec>,
    released: usize,
    t_far: u64,
) {
    let mut tails = 0;
    for (queue, level) in (0..lanes.len()).flat_map(|q| (0..4).map(move |l| (q, l))) {
        let lane: Vec<&Job> = lanes[queue]
            .iter()
            .filter(|j| j.priority() as usize == level)
            .collect();
        let mut tail = 0;
        while tail < lane.len() {
            let k = lane.len() - 1 - tail;
            if lane[k].attempt() < 2 || (tail > 0 && lane[k].id() >= lane[k + 1].id()) {
                break;
            }
            tail += 1;
        }
        tails += tail;
        let split = lane.len() - tail;
        let mut max_lo: Option<((u64, u64), u64)> = None;
        for (k, job) in lane.iter().enumerate() {
            let id = job.id();
            let due = (job.enqueued_ms() + specs[&id].delay_ms, id);
            let exact = job.attempt() == 1 && !m.maybe_redriven.contains(&id);
            let (lo, hi) = if k >= split {
                ((t_far, id), (t_far, id))
            } else if exact {
                (due, due)
            } else {
                let floor = m.jobs.get(&id).and_then(|j| j.due_floor).unwrap_or(0);
                ((job.enqueued_ms().max(floor), id), (t_far, id))
            };
            if let Some((before, other)) = max_lo {
                if hi < before {
                    ctx.fail(
                        m,
                        &[other, id],
                        format!(
                            "ready order broken in level {level} of queue {:?}: job {id} (due, id) at most \
                             {hi:?} came out after job {other}, due at least {before:?}",
                            QUEUES[queue]
                        ),
                    );
                }
            }
            if max_lo.is_none_or(|(before, _)| lo > before) {
                max_lo = Some((lo, id));
            }
        }
    }
    if tails < released {
        let order: Vec<Vec<(u64, u32, u8)>> = lanes
            .iter()
            .map(|lane| {
                lane.iter()
                    .map(|j| (j.id(), j.attempt(), j.priority() as u8))
                    .collect()
            })
            .collect();
        ctx.fail(
            m,
            &[],
            format!(
                "{released} leases were released by the open, but only {tails} jobs come out \
                 last in their level by id on a later attempt; (id, attempt, level) by queue: {order:?}"
            ),
        );
    }
}

/// The stacks of a hung child's threads, if gdb is installed.
fn thread_stacks(pid: u32) -> String {
    let out = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 30",
        ])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            let frames: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with('#') || l.starts_with("Thread"))
                .collect();
            frames.join("\n")
        }
        Err(e) => format!("(no stacks: gdb did not run: {e})"),
    }
}

fn spec_max(spec: &Spec) -> u32 {
    if spec.max_attempts == 0 {
        MAX_ATTEMPTS
    } else {
        spec.max_attempts
    }
}

#[test]
fn kill9_crash_cycles() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return; // We are a child; only `kill9_child` runs there.
    }
    let cycles = env_u64(CYCLES_ENV).unwrap_or(DEFAULT_CYCLES);
    let seed = env_u64(SEED_ENV).unwrap_or(DEFAULT_SEED);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("queue");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let mut run = Run {
        exe: std::env::current_exe().expect("current exe"),
        dir: dir.clone(),
        logs,
        model: Model::default(),
        totals: Totals::default(),
        rng: Rng::mixed(seed),
        scratch: scratch_dir(),
    };
    let started = Instant::now();
    let current = std::cell::Cell::new(0u64);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for cycle in 0..cycles {
            current.set(cycle);
            let ctx = Ctx {
                seed,
                cycle,
                dir: dir.clone(),
            };
            const INTENTS: [&str; 9] = ["b", "b", "b", "e", "a", "n", "f", "r", "p"];
            let kill = match run.rng.below(100) {
                0..=9 => Kill::AtSpawn,
                10..=16 => Kill::AfterOps(0, None),
                17..=59 => Kill::AfterOps(run.rng.range(1, 150), None),
                60..=91 => {
                    let tag = INTENTS[run.rng.below(INTENTS.len() as u64) as usize];
                    Kill::AfterOps(run.rng.range(1, 150), Some(tag))
                }
                _ => Kill::AfterOps(run.rng.range(200, 600), None),
            };
            run.run_child(&ctx, kill);
            run.check(&ctx);
        }
    }));
    if let Err(panic) = result {
        // Keep the directory for a post-mortem.
        let kept = tmp.keep();
        eprintln!(
            "crash test: cycle {} failed; queue directory and child logs kept in {}",
            current.get(),
            kept.display()
        );
        std::panic::resume_unwind(panic);
    }
    let t = &run.totals;
    eprintln!(
        "crash test: {cycles} kill -9 cycles in {:.1?} (seed {seed:#x}): {} jobs known, {} ops reported, \
         {} kills at spawn, {} torn tails cut, {} interrupted batches dropped, {} tmp files removed, \
         {} leases released, {} dead-lettered on open, up to {} dead letters, up to {} live jobs, \
         up to {} segments, last segment id {}; jobs leased after the opens by level (Low first) \
         {:?}, by queue ({QUEUES:?}) {:?}, up to {} jobs behind their group; operations reported by kind: {:?}",
        started.elapsed(),
        run.model.jobs.len(),
        t.ops,
        t.killed_at_spawn,
        t.torn_tails,
        t.incomplete_batches,
        t.tmp_removed,
        t.leases_released,
        t.dead_on_open,
        t.dead_seen,
        t.max_jobs,
        t.max_segments,
        t.max_segment_id,
        t.by_level,
        t.by_queue,
        t.blocked_seen,
        run.model.done,
    );
}

#[test]
fn payloads_check_themselves() {
    let spec = Spec {
        seq: 42,
        delay_ms: 7,
        key_seq: 42,
        max_attempts: 3,
        pad_len: 300,
        level: 2,
        group: 9,
        queue: 2,
    };
    let bytes = encode(&spec);
    assert_eq!(decode(&bytes), Ok(spec));
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        assert!(decode(&b).is_err(), "flip at {i} not detected");
    }
    assert!(decode(&bytes[..bytes.len() - 1]).is_err());
}
