//! Target `ops_with_crash`: a sequence of operations on a queue on the
//! simulated file system ([`walq::vfs::SimFs`]), with clean reopens and
//! power losses, checked against [`super::model::Model`].
//!
//! Input: a flags byte (bit 0: dequeue in batches), then operations, each
//! an opcode byte and its arguments (see [`Op::read`]). After every
//! operation the queue's counts must match the model; every delivered job
//! must be one the model has ready, in the brief's order (oldest due time,
//! then id), with its payload, key and attempt number; a receipt works
//! exactly while its lease is held; dead letters match. Under
//! `Durability::Sync` a power loss keeps every operation that returned
//! `Ok`; leases written since the last sync may or may not survive, and
//! so may the releases an open wrote (then the next open releases those
//! leases again, due at that open).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use walq::vfs::SimFs;
use walq::{Durability, EnqueueOptions, ErrorKind, ManualClock, Options, Queue, Receipt, Retry};

use super::input::Input;
use super::model::{KeyExpect, MState, Model};

/// Clock at the start (ms since the epoch).
const START_MS: u64 = 1_700_000_000_000;
/// Visibility timeout.
const VISIBILITY_MS: u64 = 30_000;
/// Dedup window.
const WINDOW_MS: u64 = 3_600_000;
/// Default max attempts.
const MAX_ATTEMPTS: u32 = 3;
/// Longest operation sequence run (longer inputs are cut).
const MAX_OPS: usize = 400;

/// One operation.
#[derive(Debug, Clone)]
pub enum Op {
    /// Enqueue `len` bytes of `fill`, with a delay, a key and max attempts.
    Enqueue {
        /// Payload byte.
        fill: u8,
        /// Payload length.
        len: usize,
        /// Delay in ms.
        delay_ms: u64,
        /// Key, one of a few.
        key: Option<u8>,
        /// Own max attempts.
        max_attempts: Option<u32>,
    },
    /// Enqueue a batch of payloads `(fill, len)`.
    Batch(Vec<(u8, usize)>),
    /// Dequeue one job (or a few with `dequeue_batch`).
    Dequeue(usize),
    /// Ack with the receipt picked by the index.
    Ack(usize),
    /// Nack for a retry after a delay.
    Nack(usize, u64),
    /// Fail to the dead letters.
    Fail(usize),
    /// Extend a lease.
    Extend(usize, u64),
    /// Move the clock forward.
    Advance(u64),
    /// Redrive a dead letter (`None`: all).
    Redrive(Option<usize>),
    /// Purge a dead letter (`None`: all).
    Purge(Option<usize>),
    /// `Queue::sync`.
    Sync,
    /// Close and open again.
    Reopen,
    /// Power loss, then open again.
    Crash(u64),
}

impl Op {
    /// Reads one operation.
    pub fn read(input: &mut Input<'_>) -> Op {
        match input.u8() % 20 {
            0..=3 => {
                let fill = input.u8();
                let size = input.u8();
                // Mostly small payloads, some of a few KiB to fill segments.
                let len = if size >= 240 {
                    usize::from(size - 240) * 400
                } else {
                    usize::from(size % 48)
                };
                let opts = input.u8();
                let delay_ms = if opts & 0x03 == 0x03 {
                    u64::from(input.u8()) * 1000
                } else {
                    0
                };
                let key = (opts & 0x04 != 0).then(|| input.u8() % 6);
                let max_attempts = (opts & 0x08 != 0).then(|| 1 + u32::from(input.u8() % 5));
                Op::Enqueue {
                    fill,
                    len,
                    delay_ms,
                    key,
                    max_attempts,
                }
            }
            4 => {
                let n = 1 + input.below(4);
                Op::Batch(
                    (0..n)
                        .map(|_| (input.u8(), usize::from(input.u8() % 40)))
                        .collect(),
                )
            }
            5..=8 => Op::Dequeue(1 + input.below(3)),
            9..=11 => Op::Ack(usize::from(input.u8())),
            12 => Op::Nack(usize::from(input.u8()), u64::from(input.u8() % 8) * 5_000),
            13 => Op::Fail(usize::from(input.u8())),
            14 => Op::Extend(usize::from(input.u8()), u64::from(input.u8()) * 1000),
            15 => {
                let step = input.u8();
                Op::Advance(match step >> 6 {
                    0 => u64::from(step & 0x3f),
                    1 => u64::from(step & 0x3f) * 1000,
                    2 => u64::from(step & 0x3f) * 10_000,
                    _ => u64::from(step & 0x3f) * 600_000,
                })
            }
            16 => {
                let which = input.u8();
                if which == 255 {
                    Op::Redrive(None)
                } else if which & 1 == 0 {
                    Op::Redrive(Some(usize::from(which >> 1)))
                } else {
                    Op::Purge(if which == 253 {
                        None
                    } else {
                        Some(usize::from(which >> 1))
                    })
                }
            }
            17 => Op::Sync,
            18 => Op::Reopen,
            _ => Op::Crash(u64::from(input.u16())),
        }
    }
}

/// Decodes an input: `(dequeue in batches, operations)`.
pub fn parse(data: &[u8]) -> (bool, Vec<Op>) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < MAX_OPS {
        ops.push(Op::read(&mut input));
    }
    (flags & 1 != 0, ops)
}

fn options(clock: &ManualClock) -> Options {
    Options::default()
        .clock(clock.clone())
        .segment_size(walq::MIN_SEGMENT_SIZE)
        .durability(Durability::Sync)
        .visibility_timeout(Duration::from_millis(VISIBILITY_MS))
        .max_attempts(MAX_ATTEMPTS)
        .dedup_window(Duration::from_millis(WINDOW_MS))
        .jitter_seed(7)
}

fn key_bytes(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// The harness state: queue, file system, clock, model, receipts seen.
struct World {
    fs: SimFs,
    clock: ManualClock,
    q: Option<Queue>,
    model: Model,
    receipts: Vec<Receipt>,
    batch_dequeue: bool,
    log: Vec<String>,
}

impl World {
    fn q(&self) -> &Queue {
        self.q.as_ref().expect("the queue is open")
    }

    fn now(&self) -> u64 {
        walq::Clock::now_ms(&self.clock)
    }

    fn open(&mut self) {
        let q = Queue::open_on(
            Arc::new(self.fs.clone()),
            Path::new("/q"),
            options(&self.clock),
        )
        .unwrap_or_else(|e| self.fail(&format!("open fails: {e}")));
        self.q = Some(q);
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\nops so far:\n{}\nmodel: {:#?}",
            self.log.join("\n"),
            self.model.jobs
        )
    }

    fn check(&self, cond: bool, what: impl FnOnce() -> String) {
        if !cond {
            self.fail(&what());
        }
    }

    fn pick(&self, i: usize) -> Option<Receipt> {
        let n = self.receipts.len();
        (n > 0).then(|| self.receipts[n - 1 - i % n])
    }

    fn expect_lease_lost<T: std::fmt::Debug>(&self, what: &str, res: walq::Result<T>) {
        match res {
            Err(e) if e.kind() == ErrorKind::LeaseLost => {}
            other => self.fail(&format!("{what}: expected LeaseLost, got {other:?}")),
        }
    }

    fn ok<T>(&self, what: &str, res: walq::Result<T>) -> T {
        res.unwrap_or_else(|e| self.fail(&format!("{what} fails: {e}")))
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now();
        match *op {
            Op::Enqueue {
                fill,
                len,
                delay_ms,
                key,
                max_attempts,
            } => {
                let payload = vec![fill; len];
                let mut opts = EnqueueOptions::new().delay(Duration::from_millis(delay_ms));
                let key = key.map(key_bytes);
                if let Some(k) = &key {
                    opts = opts.idempotency_key(k);
                }
                if let Some(n) = max_attempts {
                    opts = opts.max_attempts(n);
                }
                let expect = key
                    .as_ref()
                    .map_or(KeyExpect::New, |k| self.model.key_expect(k, now));
                let out = self.ok("enqueue", self.q().enqueue_with(&payload, opts));
                match expect {
                    KeyExpect::Duplicate(id) => self.check(out.duplicate && out.id == id, || {
                        format!(
                            "enqueue with a known key: expected a duplicate of {id}, got {out:?}"
                        )
                    }),
                    KeyExpect::New => {
                        self.check(!out.duplicate, || {
                            format!("enqueue: unexpected duplicate {out:?}")
                        });
                        let max = max_attempts.unwrap_or(MAX_ATTEMPTS);
                        self.model
                            .add(out.id, payload, key, max, now, now + delay_ms);
                    }
                }
                self.model.synced();
            }
            Op::Batch(ref items) => {
                let payloads: Vec<Vec<u8>> = items.iter().map(|&(f, n)| vec![f; n]).collect();
                let ids = self.ok("enqueue_batch", self.q().enqueue_batch(&payloads));
                self.check(ids.len() == payloads.len(), || format!("batch ids {ids:?}"));
                for (id, p) in ids.into_iter().zip(payloads) {
                    self.model.add(id, p, None, MAX_ATTEMPTS, now, now);
                }
                self.model.synced();
            }
            Op::Dequeue(n) => {
                self.model.expire(now);
                let jobs = if self.batch_dequeue {
                    self.ok("dequeue_batch", self.q().dequeue_batch(n))
                } else {
                    self.ok("dequeue", self.q().dequeue()).into_iter().collect()
                };
                for job in &jobs {
                    self.delivered(job, now);
                }
                // Fewer jobs than asked for: nothing else was ready.
                let asked = if self.batch_dequeue { n } else { 1 };
                if jobs.len() < asked {
                    let ready: Vec<u64> = self
                        .model
                        .jobs
                        .iter()
                        .filter(|(_, j)| j.surely_ready(now))
                        .map(|(&id, _)| id)
                        .collect();
                    self.check(ready.is_empty(), || {
                        format!("dequeue found nothing more but jobs {ready:?} are ready")
                    });
                }
                let dead = self.q().dead_letter_ids();
                self.check(dead == self.model.dead(), || {
                    format!("dead letters {dead:?}, model {:?}", self.model.dead())
                });
            }
            Op::Ack(i) | Op::Fail(i) | Op::Nack(i, _) | Op::Extend(i, _) => {
                let Some(r) = self.pick(i) else { return };
                let held = self.model.use_receipt(r, now);
                let q = self.q().clone();
                let res = match *op {
                    Op::Ack(_) => q.ack(r),
                    Op::Fail(_) => q.fail(r, "fuzz failure"),
                    Op::Nack(_, d) => {
                        q.nack(r, Retry::After(Duration::from_millis(d)), "fuzz retry")
                    }
                    Op::Extend(_, by) => q.extend(r, Duration::from_millis(by)),
                    _ => unreachable!(),
                };
                let Some(id) = held else {
                    self.expect_lease_lost(&format!("{op:?} with a stale receipt {r:?}"), res);
                    return;
                };
                self.ok(&format!("{op:?} on job {id}"), res);
                let job = self.model.jobs.get_mut(&id).expect("held");
                match *op {
                    Op::Ack(_) => {
                        self.model.finish(id);
                        self.model.synced();
                    }
                    Op::Fail(_) => {
                        job.state = MState::Dead;
                        self.model.synced();
                    }
                    Op::Nack(_, d) => {
                        job.state = if job.attempts.1 >= job.max_attempts {
                            MState::Dead
                        } else {
                            MState::Ready {
                                lo: now + d,
                                hi: now + d,
                            }
                        };
                        job.log_in_flight = false;
                        self.model.synced();
                    }
                    Op::Extend(_, by) => {
                        job.state = MState::Leased {
                            receipt: r,
                            deadline: now + by,
                        };
                    }
                    _ => unreachable!(),
                }
            }
            Op::Advance(ms) => self.clock.advance(Duration::from_millis(ms)),
            Op::Redrive(which) => {
                let dead = self.model.dead();
                let ids = match which {
                    None => {
                        let n = self.ok("redrive_all", self.q().redrive_all());
                        self.check(n == dead.len(), || {
                            format!("redrive_all: {n}, model {dead:?}")
                        });
                        dead
                    }
                    Some(_) if dead.is_empty() => return,
                    Some(i) => {
                        let id = dead[i % dead.len()];
                        self.ok(&format!("redrive {id}"), self.q().redrive(id));
                        vec![id]
                    }
                };
                if ids.is_empty() {
                    return; // nothing written, nothing synced
                }
                for id in ids {
                    let job = self.model.jobs.get_mut(&id).expect("dead");
                    job.state = MState::Ready { lo: now, hi: now };
                    job.attempts = (0, 0);
                    job.max_attempts = MAX_ATTEMPTS;
                    job.log_in_flight = false;
                }
                // The redriven jobs are synced into the log before their
                // dead letters go.
                self.model.synced();
            }
            Op::Purge(which) => {
                let dead = self.model.dead();
                let ids = match which {
                    None => {
                        let n = self.ok("purge_all", self.q().purge_all());
                        self.check(n == dead.len(), || {
                            format!("purge_all: {n}, model {dead:?}")
                        });
                        dead
                    }
                    Some(i) => {
                        // Sometimes a live job: not a dead letter.
                        let live: Vec<u64> = self
                            .model
                            .jobs
                            .keys()
                            .copied()
                            .filter(|id| !dead.contains(id))
                            .collect();
                        if i % 4 == 3 && !live.is_empty() {
                            let id = live[i % live.len()];
                            match self.q().purge(id) {
                                Err(e) if e.kind() == ErrorKind::NotFound => return,
                                other => self.fail(&format!("purge of live job {id}: {other:?}")),
                            }
                        }
                        if dead.is_empty() {
                            return;
                        }
                        let id = dead[i % dead.len()];
                        self.ok(&format!("purge {id}"), self.q().purge(id));
                        vec![id]
                    }
                };
                for id in ids {
                    self.model.finish(id);
                }
            }
            Op::Sync => {
                self.ok("sync", self.q().sync());
                self.model.synced();
            }
            Op::Reopen => {
                let q = self.q.take().expect("open");
                self.ok("close", q.close());
                drop(q);
                self.clock.advance(Duration::from_millis(1));
                self.open();
                self.model.reopen(self.now(), false);
                self.settle_reopen();
            }
            Op::Crash(seed) => {
                drop(self.q.take());
                self.fs = self.fs.power_loss(seed);
                self.clock.advance(Duration::from_millis(1));
                self.open();
                self.model.reopen(self.now(), true);
                self.settle_reopen();
            }
        }
    }

    /// After an open: the dead letters are the model's, give or take the
    /// jobs a crash may have dead-lettered; no lease is held; receipts of
    /// the last run are all stale.
    fn settle_reopen(&mut self) {
        let dead = self.q().dead_letter_ids();
        for (&id, job) in self.model.jobs.iter_mut() {
            let is_dead = dead.contains(&id);
            if self.model.maybe_dead.contains(&id) {
                if is_dead {
                    job.state = MState::Dead;
                }
            } else if is_dead != (job.state == MState::Dead) {
                let state = job.state;
                self.fail(&format!(
                    "after open, job {id} dead: {is_dead}, model: {state:?}"
                ));
            }
        }
        for id in &dead {
            self.check(self.model.jobs.contains_key(id), || {
                format!("unknown dead letter {id}")
            });
        }
    }

    /// A job was delivered at `now`: the model must have had it ready and
    /// no surely ready job before it.
    fn delivered(&mut self, job: &walq::Job, now: u64) {
        let id = job.id();
        let Some(m) = self.model.jobs.get(&id) else {
            self.fail(&format!("delivered job {id} is not in the queue"));
        };
        let MState::Ready { lo, .. } = m.state else {
            self.fail(&format!("delivered job {id} is {:?}", m.state));
        };
        self.check(lo <= now, || {
            format!("job {id} delivered at {now}, due at {lo} or later")
        });
        for (&other, o) in &self.model.jobs {
            if let MState::Ready { hi, .. } = o.state {
                self.check(!(hi <= now && (hi, other) < (lo, id)), || {
                    format!("job {id} (due >= {lo}) delivered before job {other} (due <= {hi})")
                });
            }
        }
        self.check(job.payload() == m.payload.as_slice(), || {
            format!("job {id}: wrong payload")
        });
        self.check(job.idempotency_key() == m.key.as_deref(), || {
            format!("job {id}: wrong key")
        });
        let (a, b) = m.attempts;
        self.check(job.attempt() > a && job.attempt() <= b + 1, || {
            format!(
                "job {id}: attempt {}, model {a}..={b} before",
                job.attempt()
            )
        });
        let m = self.model.jobs.get_mut(&id).expect("checked");
        m.attempts = (job.attempt(), job.attempt());
        m.state = MState::Leased {
            receipt: job.receipt(),
            deadline: now + VISIBILITY_MS,
        };
        m.log_in_flight = true;
        m.unsynced_lease = true;
        self.receipts.push(job.receipt());
    }

    /// The queue's counts match the model's.
    fn check_counts(&self) {
        let now = self.now();
        let s = self.q().stats();
        let (sure, maybe, waiting, leased, dead) = self.model.counts(now);
        let ok = s.ready >= sure
            && s.ready <= maybe
            && s.ready + s.delayed == waiting
            && s.in_flight == leased
            && s.dead == dead;
        self.check(ok, || {
            format!(
                "stats {s:?}, model: ready {sure}..={maybe}, waiting {waiting}, in flight {leased}, dead {dead}"
            )
        });
        self.q().check_invariants();
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let (batch_dequeue, ops) = parse(data);
    let mut w = World {
        fs: SimFs::new(),
        clock: ManualClock::new(START_MS),
        q: None,
        model: Model::new(MAX_ATTEMPTS, VISIBILITY_MS, WINDOW_MS),
        receipts: Vec::new(),
        batch_dequeue,
        log: Vec::new(),
    };
    w.open();
    for op in &ops {
        w.log.push(format!("{op:?} at {}", w.now() - START_MS));
        w.apply(op);
        w.check_counts();
    }
    // Finally, a power loss must keep everything acknowledged.
    w.log.push("final Crash(0)".into());
    w.apply(&Op::Crash(0));
    w.check_counts();
    if std::env::var_os("WALQ_FUZZ_TRACE").is_some() {
        eprintln!(
            "{}\nmodel: {:?}\nstats: {:?}",
            w.log.join("\n"),
            w.model.jobs.keys(),
            w.q().stats()
        );
    }
}

/// Encodes operations as an input (the inverse of [`parse`]).
pub fn encode(batch_dequeue: bool, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![u8::from(batch_dequeue)];
    for op in ops {
        match *op {
            Op::Enqueue {
                fill,
                len,
                delay_ms,
                key,
                max_attempts,
            } => {
                let size = if len < 48 {
                    len as u8
                } else {
                    assert!(len % 400 == 0 && len / 400 < 16, "payload length {len}");
                    240 + (len / 400) as u8
                };
                let mut opts = 0u8;
                if delay_ms > 0 {
                    assert!(delay_ms % 1000 == 0 && delay_ms / 1000 < 256);
                    opts |= 0x03;
                }
                opts |= if key.is_some() { 0x04 } else { 0 };
                opts |= if max_attempts.is_some() { 0x08 } else { 0 };
                out.extend_from_slice(&[0, fill, size, opts]);
                if delay_ms > 0 {
                    out.push((delay_ms / 1000) as u8);
                }
                if let Some(k) = key {
                    out.push(k);
                }
                if let Some(n) = max_attempts {
                    out.push((n - 1) as u8);
                }
            }
            Op::Batch(ref items) => {
                out.extend_from_slice(&[4, (items.len() - 1) as u8]);
                for &(fill, len) in items {
                    out.extend_from_slice(&[fill, len as u8]);
                }
            }
            Op::Dequeue(n) => out.extend_from_slice(&[5, (n - 1) as u8]),
            Op::Ack(i) => out.extend_from_slice(&[9, i as u8]),
            Op::Nack(i, d) => out.extend_from_slice(&[12, i as u8, (d / 5_000) as u8]),
            Op::Fail(i) => out.extend_from_slice(&[13, i as u8]),
            Op::Extend(i, by) => out.extend_from_slice(&[14, i as u8, (by / 1000) as u8]),
            Op::Advance(ms) => {
                let step = match ms {
                    0..=63 => ms as u8,
                    _ if ms % 600_000 == 0 && ms / 600_000 < 64 => 0xc0 | (ms / 600_000) as u8,
                    _ if ms % 10_000 == 0 && ms / 10_000 < 64 => 0x80 | (ms / 10_000) as u8,
                    _ if ms % 1000 == 0 && ms / 1000 < 64 => 0x40 | (ms / 1000) as u8,
                    _ => panic!("cannot encode an advance of {ms} ms"),
                };
                out.extend_from_slice(&[15, step]);
            }
            Op::Redrive(None) => out.extend_from_slice(&[16, 255]),
            Op::Redrive(Some(i)) => out.extend_from_slice(&[16, (i as u8 & 0x7f) << 1]),
            Op::Purge(None) => out.extend_from_slice(&[16, 253]),
            Op::Purge(Some(i)) => out.extend_from_slice(&[16, ((i as u8 & 0x7d) << 1) | 1]),
            Op::Sync => out.push(17),
            Op::Reopen => out.push(18),
            Op::Crash(seed) => {
                out.push(19);
                out.extend_from_slice(&(seed as u16).to_le_bytes());
            }
        }
    }
    out
}
