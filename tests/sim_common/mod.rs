//! Shared by `power_loss.rs` and `io_faults.rs`: a workload driver that
//! records what every call returned, and a checker that reopens a queue on
//! a [`SimFs`] and verifies the durability contract against that record.
//!
//! The record is per job: every operation that touched a job adds an
//! event with the state it leaves the job in. After a crash (or a failed
//! call and a reopen) each job must be in the state left by its last
//! *guaranteed* event or by one of the events after it (those may or may
//! not have reached the disk), never in an older state and never in a
//! state nobody produced. An operation is guaranteed when it returned `Ok`
//! while the file system's sync count was at most the frozen sync point:
//! then its own fsyncs were real. Every log-syncing operation (enqueue,
//! batch, ack, nack, fail, redrive, open) also makes all earlier log
//! records durable, so everything before the last guaranteed one of those
//! is guaranteed too.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use walq::vfs::{SimFs, Vfs};
use walq::{
    Durability, EnqueueOptions, ErrorKind, Job, ManualClock, Options, Priority, Queue, Retry,
};

/// The queue directory on the simulated file system.
pub const DIR: &str = "/q";
/// Where the manual clock starts.
pub const START_MS: u64 = 1_700_000_000_000;
/// `max_attempts` of every job.
pub const MAX_ATTEMPTS: u32 = 3;
/// The store's queues, by lane: the default queue, then a named one.
pub const QUEUES: [&str; 2] = [walq::DEFAULT_QUEUE, "named"];

/// The handle of lane `lane` (an index into [`QUEUES`]) of `q`'s store.
pub fn lane_handle(q: &Queue, lane: u8) -> walq::Result<Queue> {
    match lane {
        0 => Ok(q.clone()),
        _ => q.store().queue(QUEUES[usize::from(lane)]),
    }
}

pub fn dir() -> &'static Path {
    Path::new(DIR)
}

/// Options of every queue in these tests.
pub fn options(clock: &ManualClock, durability: Durability) -> Options {
    Options::default()
        .segment_size(64 * 1024)
        .durability(durability)
        .visibility_timeout(Duration::from_secs(3600))
        .max_attempts(MAX_ATTEMPTS)
        .dedup_window(Duration::from_secs(365 * 24 * 3600))
        .clock(clock.clone())
        .jitter_seed(7)
        // Checkpoints often, so every sweep also cuts and fails their
        // writing (a temporary file, its fsync, the rename, the
        // directory's fsync) and reopens from them.
        .checkpoint_every(16 * 1024)
}

pub fn open(fs: &SimFs, clock: &ManualClock) -> walq::Result<Queue> {
    open_with(fs, clock, Durability::Sync)
}

pub fn open_with(fs: &SimFs, clock: &ManualClock, durability: Durability) -> walq::Result<Queue> {
    Queue::open_on(Arc::new(fs.clone()), dir(), options(clock, durability))
}

/// splitmix64, for deterministic workloads.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }
}

/// A payload that names its enqueue (`tag`) and is checkable byte by byte.
pub fn payload(tag: u64, len: usize) -> Vec<u8> {
    let mut p = format!("job:{tag}:").into_bytes();
    let mut x = tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while p.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    p
}

/// The tag of a payload made by [`payload`].
pub fn tag_of(p: &[u8]) -> Option<u64> {
    let rest = p.strip_prefix(b"job:")?;
    let end = rest.iter().position(|&b| b == b':')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// The state an event leaves a job in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Queued (ready or delayed) with this many attempts made.
    Live(u32),
    /// Leased at this attempt: after a restart the lease is released, so
    /// the job is live with that attempt counted, or dead if it was the
    /// last one allowed.
    Leased(u32),
    /// In the dead letters with this many attempts.
    Dead(u32),
    /// Acked or purged: never seen again.
    Gone,
}

impl Outcome {
    /// What a reopened queue shows for a job left in this state.
    pub fn after_restart(self) -> Outcome {
        match self {
            Outcome::Leased(a) if a >= MAX_ATTEMPTS => Outcome::Dead(a),
            Outcome::Leased(a) => Outcome::Live(a),
            o => o,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Open,
    Enqueue,
    Batch,
    Dequeue,
    Ack,
    Nack,
    Fail,
    Redrive,
    Purge,
    /// `Queue::cancel` of a queued job.
    Cancel,
    /// `Queue::enqueue_dead_letter`.
    ImportDead,
    /// `Queue::sync`.
    Sync,
}

impl OpKind {
    /// Whether an `Ok` of this op means every earlier record (log and dead
    /// letters) is durable.
    fn syncs_all(self, durability: Durability) -> bool {
        match self {
            // A dead letter is written after the log is synced, and synced.
            OpKind::Sync | OpKind::Redrive | OpKind::ImportDead => true,
            OpKind::Open
            | OpKind::Enqueue
            | OpKind::Batch
            | OpKind::Ack
            | OpKind::Nack
            | OpKind::Fail
            | OpKind::Cancel => durability == Durability::Sync,
            OpKind::Dequeue | OpKind::Purge => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OpRecord {
    pub kind: OpKind,
    pub ok: bool,
    /// `fs.syncs()` when the call returned.
    pub syncs: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub op: usize,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct JobModel {
    pub payload: Vec<u8>,
    pub key: Option<String>,
    pub batch: Option<usize>,
    /// Its queue: an index into [`QUEUES`].
    pub queue: u8,
    pub events: Vec<Event>,
    /// Attempts made (as the running process sees it).
    pub attempts: u32,
    /// The level it was enqueued with.
    pub priority: Priority,
    /// The message group it was enqueued with.
    pub group: Option<String>,
    /// A redrive was issued for it (a redriven job keeps its level and
    /// leaves its group).
    pub redriven: bool,
}

/// Everything the workload did and saw.
#[derive(Debug, Clone)]
pub struct Model {
    pub durability: Durability,
    pub jobs: BTreeMap<u64, JobModel>,
    pub ops: Vec<OpRecord>,
    pub batches: Vec<Vec<u64>>,
    /// (Queue, idempotency key) -> the id its first successful enqueue
    /// returned and that enqueue's op: keys are scoped per queue.
    pub keys: BTreeMap<(u8, String), (u64, usize)>,
    /// Payloads of enqueue calls that failed: their jobs may exist. One
    /// entry per call (a batch is all or nothing).
    pub phantoms: Vec<Vec<Vec<u8>>>,
    /// Payloads of `enqueue_dead_letter` calls that failed: their jobs may
    /// exist, as dead letters only (never delivered).
    pub dead_phantoms: Vec<Vec<u8>>,
    /// Dequeue calls that failed: some job may have had an attempt counted.
    pub failed_dequeues: Vec<usize>,
}

/// Called after every operation of a [`Run`].
pub type Watcher = Box<dyn FnMut(&SimFs)>;

/// A running workload on a [`SimFs`].
pub struct Run {
    pub fs: SimFs,
    pub clock: ManualClock,
    pub q: Option<Queue>,
    /// The queue (an index into [`QUEUES`]) the next enqueue, batch or
    /// dequeue uses; settling goes through the default queue's handle
    /// (receipts are the store's).
    pub lane: u8,
    pub m: Model,
    pub held: Vec<Job>,
    pub rng: Rng,
    tag: u64,
    /// Stop (as if the process died) once `fs.syncs()` passes this.
    pub stop_after_syncs: Option<u64>,
    pub stopped: bool,
    /// The first failed call: its op index and error.
    pub failed: Option<(usize, walq::Error)>,
    /// Sums of stats over the queues this run opened.
    pub carried: u64,
    pub acked: u64,
    pub dead_lettered: u64,
    /// Called after every operation (to watch the files).
    pub on_op: Option<Watcher>,
    /// The run's failure was a failed `Queue::close`.
    pub close_failed: bool,
}

impl Run {
    /// Opens a queue on `fs` (recording the open as op 0).
    pub fn start(fs: SimFs, seed: u64, stop_after_syncs: Option<u64>) -> Run {
        Run::start_with(fs, seed, stop_after_syncs, Durability::Sync)
    }

    /// [`Run::start`] with another durability mode.
    pub fn start_with(
        fs: SimFs,
        seed: u64,
        stop_after_syncs: Option<u64>,
        durability: Durability,
    ) -> Run {
        if let Some(k) = stop_after_syncs {
            fs.freeze_after_syncs(Some(k.saturating_sub(fs.syncs())));
        }
        let mut run = Run {
            fs,
            clock: ManualClock::new(START_MS),
            q: None,
            lane: 0,
            m: Model {
                durability,
                jobs: BTreeMap::new(),
                ops: Vec::new(),
                batches: Vec::new(),
                keys: BTreeMap::new(),
                phantoms: Vec::new(),
                dead_phantoms: Vec::new(),
                failed_dequeues: Vec::new(),
            },
            held: Vec::new(),
            rng: Rng(seed),
            tag: 0,
            stop_after_syncs,
            stopped: false,
            failed: None,
            carried: 0,
            acked: 0,
            dead_lettered: 0,
            on_op: None,
            close_failed: false,
        };
        run.open_queue();
        run
    }

    /// The clock now.
    pub fn clock_ms(&self) -> u64 {
        use walq::Clock;
        self.clock.now_ms()
    }

    /// Waits for the upkeep the operations so far asked for (dead-letter
    /// compaction runs on the upkeep thread): a workload that depends on
    /// it happening between two operations stays the same run to run.
    pub fn wait_upkeep(&self) {
        if let Some(q) = &self.q {
            q.wait_upkeep();
        }
    }

    /// Whether the workload goes on.
    pub fn live(&self) -> bool {
        !self.stopped && self.failed.is_none() && self.q.is_some()
    }

    fn begin(&mut self, kind: OpKind) -> usize {
        self.m.ops.push(OpRecord {
            kind,
            ok: false,
            syncs: 0,
        });
        self.m.ops.len() - 1
    }

    fn end(&mut self, op: usize, result: Result<(), walq::Error>) {
        self.m.ops[op].syncs = self.fs.syncs();
        if let Some(f) = &mut self.on_op {
            f(&self.fs);
        }
        match result {
            Ok(()) => self.m.ops[op].ok = true,
            Err(e) => {
                self.failed = Some((op, e));
                return;
            }
        }
        if let Some(k) = self.stop_after_syncs {
            if self.fs.syncs() > k {
                self.stopped = true;
            }
        }
    }

    fn event(&mut self, id: u64, op: usize, outcome: Outcome) {
        let job = self.m.jobs.get_mut(&id).expect("event for a known job");
        job.events.push(Event { op, outcome });
        match outcome {
            Outcome::Live(a) | Outcome::Leased(a) | Outcome::Dead(a) => job.attempts = a,
            Outcome::Gone => {}
        }
    }

    fn q(&self) -> &Queue {
        self.q.as_ref().expect("queue is open")
    }

    /// The handle of the queue of [`Run::lane`].
    fn handle(&self) -> walq::Result<Queue> {
        lane_handle(self.q(), self.lane)
    }

    fn next_tag(&mut self) -> u64 {
        self.tag += 1;
        self.tag
    }

    fn open_queue(&mut self) {
        let op = self.begin(OpKind::Open);
        // Leases of the previous process are released now.
        let held: Vec<(u64, u32)> = self.held.drain(..).map(|j| (j.id(), j.attempt())).collect();
        for (id, a) in held {
            self.event(id, op, Outcome::Leased(a).after_restart());
        }
        match open_with(&self.fs, &self.clock, self.m.durability) {
            Ok(q) => {
                self.q = Some(q);
                self.end(op, Ok(()));
            }
            Err(e) => self.end(op, Err(e)),
        }
    }

    /// Closes the queue cleanly (`Queue::close`: the log synced, the
    /// clean checkpoint written) and reopens it (from that checkpoint).
    /// A close that fails is recorded as the run's failure
    /// ([`Run::close_failed`] then says so: later calls fail as `Closed`).
    pub fn close_reopen(&mut self) {
        if !self.live() {
            return;
        }
        let op = self.begin(OpKind::Sync);
        let q = self.q.take().expect("open");
        let s = q.stats();
        self.carried += s.carried_total;
        self.acked += s.acked_total;
        self.dead_lettered += s.dead_lettered_total;
        let closed = q.close();
        if closed.is_err() {
            self.close_failed = true;
            self.q = Some(q);
            self.end(op, closed);
            return;
        }
        drop(q);
        self.end(op, Ok(()));
        if !self.stopped && self.failed.is_none() {
            self.open_queue();
        }
    }

    /// Closes the queue (without syncing: a process exit) and reopens it.
    pub fn reopen(&mut self) {
        if !self.live() {
            return;
        }
        let q = self.q.take().expect("open");
        let s = q.stats();
        self.carried += s.carried_total;
        self.acked += s.acked_total;
        self.dead_lettered += s.dead_lettered_total;
        drop(q);
        self.open_queue();
    }

    /// Stats summed over this run's queues.
    pub fn totals(&self) -> (u64, u64, u64) {
        let s = self.q.as_ref().map(Queue::stats).unwrap_or_default();
        (
            self.carried + s.carried_total,
            self.acked + s.acked_total,
            self.dead_lettered + s.dead_lettered_total,
        )
    }

    pub fn enqueue(&mut self, len: usize, delay: Option<Duration>, key: Option<String>) {
        self.enqueue_at(len, delay, key, Priority::Normal, None);
    }

    /// [`Run::enqueue`] with a priority level and a message group.
    pub fn enqueue_at(
        &mut self,
        len: usize,
        delay: Option<Duration>,
        key: Option<String>,
        priority: Priority,
        group: Option<String>,
    ) {
        if !self.live() {
            return;
        }
        let tag = self.next_tag();
        let p = payload(tag, len);
        let mut opts = EnqueueOptions::new().priority(priority);
        if let Some(g) = &group {
            opts = opts.group(g);
        }
        if let Some(d) = delay {
            opts = opts.delay(d);
        }
        if let Some(k) = &key {
            opts = opts.idempotency_key(k.as_bytes());
        }
        let op = self.begin(OpKind::Enqueue);
        let lane = self.lane;
        match self.handle().and_then(|h| h.enqueue_with(&p, opts)) {
            Ok(e) if e.duplicate => {
                let k = key.expect("only keyed enqueues are duplicates");
                let known = self.m.keys.get(&(lane, k.clone())).map(|&(id, _)| id);
                assert_eq!(known, Some(e.id), "duplicate of key {k} names its job");
                self.end(op, Ok(()));
            }
            Ok(e) => {
                assert!(!self.m.jobs.contains_key(&e.id), "id {} reused", e.id);
                if let Some(k) = &key {
                    let scoped = (lane, k.clone());
                    assert!(
                        !self.m.keys.contains_key(&scoped),
                        "known key {k} not deduplicated"
                    );
                    self.m.keys.insert(scoped, (e.id, op));
                }
                self.m.jobs.insert(
                    e.id,
                    JobModel {
                        payload: p,
                        key,
                        batch: None,
                        queue: lane,
                        events: vec![Event {
                            op,
                            outcome: Outcome::Live(0),
                        }],
                        attempts: 0,
                        priority,
                        group,
                        redriven: false,
                    },
                );
                self.end(op, Ok(()));
            }
            Err(e) => {
                self.m.phantoms.push(vec![p]);
                self.end(op, Err(e));
            }
        }
    }

    pub fn batch(&mut self, lens: &[usize]) {
        if !self.live() {
            return;
        }
        let ps: Vec<Vec<u8>> = lens
            .iter()
            .map(|&len| {
                let tag = self.next_tag();
                payload(tag, len)
            })
            .collect();
        let op = self.begin(OpKind::Batch);
        let lane = self.lane;
        match self.handle().and_then(|h| h.enqueue_batch(&ps)) {
            Ok(ids) => {
                assert_eq!(ids.len(), ps.len());
                let b = self.m.batches.len();
                self.m.batches.push(ids.clone());
                for (id, p) in ids.into_iter().zip(ps) {
                    assert!(!self.m.jobs.contains_key(&id), "id {id} reused");
                    self.m.jobs.insert(
                        id,
                        JobModel {
                            payload: p,
                            key: None,
                            batch: Some(b),
                            queue: lane,
                            events: vec![Event {
                                op,
                                outcome: Outcome::Live(0),
                            }],
                            attempts: 0,
                            priority: Priority::Normal,
                            group: None,
                            redriven: false,
                        },
                    );
                }
                self.end(op, Ok(()));
            }
            Err(e) => {
                self.m.phantoms.push(ps);
                self.end(op, Err(e));
            }
        }
    }

    /// A job that operation `op` leased: checked against the model (it
    /// was enqueued, with this payload, and this is its next attempt),
    /// recorded and held.
    fn leased(&mut self, job: Job, op: usize) {
        let id = job.id();
        let model = self
            .m
            .jobs
            .get(&id)
            .unwrap_or_else(|| panic!("dequeued job {id} that was never enqueued"));
        assert_eq!(job.payload(), &model.payload[..], "payload of job {id}");
        assert_eq!(
            model.queue,
            self.lane,
            "job {id} of queue {} dequeued from queue {}",
            QUEUES[usize::from(model.queue)],
            QUEUES[usize::from(self.lane)]
        );
        assert_eq!(job.attempt(), model.attempts + 1, "attempt of job {id}");
        self.event(id, op, Outcome::Leased(job.attempt()));
        self.held.push(job);
    }

    pub fn dequeue(&mut self) {
        if !self.live() {
            return;
        }
        let op = self.begin(OpKind::Dequeue);
        match self.handle().and_then(|h| h.dequeue()) {
            Ok(Some(job)) => {
                self.leased(job, op);
                self.end(op, Ok(()));
            }
            Ok(None) => self.end(op, Ok(())),
            Err(e) => {
                self.m.failed_dequeues.push(op);
                self.end(op, Err(e));
            }
        }
    }

    /// `dequeue_batch(n)`: one LeaseMany record for the jobs it leases.
    pub fn dequeue_batch(&mut self, n: usize) {
        if !self.live() {
            return;
        }
        let op = self.begin(OpKind::Dequeue);
        match self.handle().and_then(|h| h.dequeue_batch(n)) {
            Ok(jobs) => {
                assert!(jobs.len() <= n);
                for job in jobs {
                    self.leased(job, op);
                }
                self.end(op, Ok(()));
            }
            Err(e) => {
                self.m.failed_dequeues.push(op);
                self.end(op, Err(e));
            }
        }
    }

    /// `ack_batch` of up to `n` held jobs: one AckMany record.
    pub fn ack_batch(&mut self, n: usize) {
        if !self.live() {
            return;
        }
        let jobs: Vec<Job> = (0..n).map_while(|_| self.take_held()).collect();
        if jobs.is_empty() {
            return;
        }
        let op = self.begin(OpKind::Ack);
        let receipts: Vec<_> = jobs.iter().map(|j| j.receipt()).collect();
        let result = self.q().ack_batch(&receipts);
        if let Ok(results) = &result {
            assert_eq!(results.len(), jobs.len());
            for r in results {
                // Leases never expire here: every receipt is good.
                r.as_ref().expect("ack_batch of held leases");
            }
        }
        for job in &jobs {
            self.event(job.id(), op, Outcome::Gone);
        }
        self.end(op, result.map(|_| ()));
    }

    fn take_held(&mut self) -> Option<Job> {
        if self.held.is_empty() {
            return None;
        }
        let i = self.rng.below(self.held.len() as u64) as usize;
        Some(self.held.swap_remove(i))
    }

    /// Runs a settle call on a held job; `outcome` is what it leaves.
    fn settle(
        &mut self,
        kind: OpKind,
        outcome: impl FnOnce(&Job) -> Outcome,
        call: impl FnOnce(&Queue, &Job) -> walq::Result<()>,
    ) {
        if !self.live() {
            return;
        }
        let Some(job) = self.take_held() else {
            return;
        };
        let op = self.begin(kind);
        let result = call(self.q(), &job);
        if let Err(e) = &result {
            assert_ne!(e.kind(), ErrorKind::LeaseLost, "leases never expire here");
        }
        self.event(job.id(), op, outcome(&job));
        self.end(op, result);
    }

    pub fn ack(&mut self) {
        self.settle(OpKind::Ack, |_| Outcome::Gone, |q, j| q.ack(j.receipt()));
    }

    pub fn nack(&mut self, retry: Retry) {
        self.settle(
            OpKind::Nack,
            |j| {
                if j.attempt() >= MAX_ATTEMPTS {
                    Outcome::Dead(j.attempt())
                } else {
                    Outcome::Live(j.attempt())
                }
            },
            |q, j| q.nack(j.receipt(), retry, "try again later"),
        );
    }

    pub fn fail(&mut self) {
        self.settle(
            OpKind::Fail,
            |j| Outcome::Dead(j.attempt()),
            |q, j| q.fail(j.receipt(), "failed for good"),
        );
    }

    fn pick_dead(&mut self) -> Option<u64> {
        let ids = self.q().dead_letter_ids();
        if ids.is_empty() {
            return None;
        }
        Some(ids[self.rng.below(ids.len() as u64) as usize])
    }

    pub fn redrive(&mut self) {
        if !self.live() {
            return;
        }
        let Some(id) = self.pick_dead() else { return };
        self.redrive_id(id);
    }

    pub fn redrive_id(&mut self, id: u64) {
        if !self.live() {
            return;
        }
        let op = self.begin(OpKind::Redrive);
        let result = self.q().redrive(id);
        self.event(id, op, Outcome::Live(0));
        self.redriven(id);
        self.end(op, result);
    }

    pub fn purge(&mut self) {
        if !self.live() {
            return;
        }
        let Some(id) = self.pick_dead() else { return };
        let op = self.begin(OpKind::Purge);
        let result = self.q().purge(id);
        self.event(id, op, Outcome::Gone);
        self.end(op, result);
    }

    /// Cancels a job the model says is queued (ready, delayed or waiting
    /// for a retry; of either queue), picked at random.
    /// Adds a dead letter straight away (`enqueue_dead_letter`), through
    /// the current lane's handle.
    pub fn import_dead(&mut self, len: usize) {
        if !self.live() {
            return;
        }
        let tag = self.next_tag();
        let p = payload(tag, len);
        let op = self.begin(OpKind::ImportDead);
        let lane = self.lane;
        let result = self
            .handle()
            .and_then(|h| h.enqueue_dead_letter(&p, EnqueueOptions::new(), "imported"));
        match result {
            Ok(e) => {
                assert!(!e.duplicate && !self.m.jobs.contains_key(&e.id));
                self.m.jobs.insert(
                    e.id,
                    JobModel {
                        payload: p,
                        key: None,
                        batch: None,
                        queue: lane,
                        events: vec![Event {
                            op,
                            outcome: Outcome::Dead(1),
                        }],
                        attempts: 1,
                        priority: Priority::Normal,
                        group: None,
                        redriven: false,
                    },
                );
                self.end(op, Ok(()));
            }
            Err(e) => {
                self.m.dead_phantoms.push(p);
                self.end(op, Err(e));
            }
        }
    }

    pub fn cancel(&mut self) {
        if !self.live() {
            return;
        }
        let queued: Vec<(u64, u8)> = (self.m.jobs.iter())
            .filter(|(_, j)| matches!(j.events.last().map(|e| e.outcome), Some(Outcome::Live(_))))
            .map(|(id, j)| (*id, j.queue))
            .collect();
        if queued.is_empty() {
            return;
        }
        let (id, queue) = queued[self.rng.below(queued.len() as u64) as usize];
        let op = self.begin(OpKind::Cancel);
        let result = lane_handle(self.q(), queue).and_then(|h| h.cancel(id));
        self.event(id, op, Outcome::Gone);
        self.end(op, result);
    }

    pub fn redrive_all(&mut self) {
        if !self.live() {
            return;
        }
        let ids = self.dead_ids();
        if ids.is_empty() {
            // Does nothing (and syncs nothing): not a guarantee.
            return;
        }
        let op = self.begin(OpKind::Redrive);
        let result = self.q().redrive_all();
        if let Ok(n) = &result {
            assert_eq!(*n, ids.len(), "redrive_all count");
        }
        for id in ids {
            self.event(id, op, Outcome::Live(0));
            self.redriven(id);
        }
        self.end(op, result.map(|_| ()));
    }

    fn redriven(&mut self, id: u64) {
        if let Some(j) = self.m.jobs.get_mut(&id) {
            j.redriven = true;
        }
    }

    pub fn purge_all(&mut self) {
        if !self.live() {
            return;
        }
        let ids = self.dead_ids();
        let op = self.begin(OpKind::Purge);
        let result = self.q().purge_all();
        for id in ids {
            self.event(id, op, Outcome::Gone);
        }
        self.end(op, result.map(|_| ()));
    }

    pub fn sync(&mut self) {
        if !self.live() {
            return;
        }
        let op = self.begin(OpKind::Sync);
        let result = self.q().sync();
        self.end(op, result);
    }

    pub fn advance(&mut self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }

    /// Ids of the dead letters now (no I/O).
    pub fn dead_ids(&self) -> Vec<u64> {
        self.q
            .as_ref()
            .map(Queue::dead_letter_ids)
            .unwrap_or_default()
    }
}

/// A mixed workload of `steps` random operations (plus a reopen half way).
/// `big` scales payloads up so that a short run still rotates segments.
pub fn mixed_workload(run: &mut Run, steps: usize, big: bool) {
    // A job delayed past the end of the run pins the first segment until
    // it is carried forward.
    run.enqueue(
        300,
        Some(Duration::from_secs(86_400)),
        Some("pinned".into()),
    );
    for step in 0..steps {
        if !run.live() {
            return;
        }
        if step == steps / 4 {
            run.close_reopen();
        }
        if step == steps / 2 {
            run.reopen();
        }
        // A third of the enqueues and dequeues use the named queue.
        run.lane = u8::from(run.rng.below(3) == 0);
        let r = run.rng.below(100);
        match r {
            0..=21 => {
                let len = if big || run.rng.below(3) == 0 {
                    run.rng.range(2000, 8000)
                } else {
                    run.rng.range(40, 800)
                } as usize;
                let delay = (run.rng.below(5) == 0)
                    .then(|| Duration::from_millis(run.rng.range(1000, 20_000)));
                let keyed = run.rng.below(6) == 0;
                let key = keyed.then(|| format!("key-{}", run.rng.below(30)));
                run.enqueue(len, delay, key);
            }
            22..=25 => {
                let n = run.rng.range(2, 7) as usize;
                let lens: Vec<usize> = (0..n)
                    .map(|_| run.rng.range(40, if big { 3000 } else { 900 }) as usize)
                    .collect();
                run.batch(&lens);
            }
            26..=49 => run.dequeue(),
            50..=55 => {
                let n = run.rng.range(2, 9) as usize;
                run.dequeue_batch(n);
            }
            56..=73 => run.ack(),
            74..=79 => {
                let n = run.rng.range(2, 9) as usize;
                run.ack_batch(n);
            }
            80..=86 => {
                let retry = if run.rng.below(2) == 0 {
                    Retry::Backoff
                } else {
                    Retry::After(Duration::from_millis(run.rng.below(10_000)))
                };
                run.nack(retry);
            }
            87..=89 => run.fail(),
            90..=91 => run.redrive(),
            92 => {
                if run.rng.below(3) == 0 {
                    run.redrive_all();
                } else {
                    run.purge();
                }
            }
            93 => {
                if run.rng.below(4) == 0 {
                    run.purge_all();
                } else {
                    run.sync();
                }
            }
            _ => {
                let ms = run.rng.range(500, 5000);
                run.advance(ms);
            }
        }
    }
}

/// Queued jobs cancelled in every waiting state (fresh, delayed, waiting
/// for a retry, in a group, in either queue) between leases, acks and
/// retries, with a clean reopen and a crash-reopen in the middle.
/// Dead letters imported (`enqueue_dead_letter`) between enqueues,
/// leases, acks and retries of the same queues, with reopens.
pub fn import_workload(run: &mut Run) {
    for round in 0..3 {
        for i in 0..8u64 {
            run.lane = u8::from(i % 3 == 0);
            let len = run.rng.range(40, 900) as usize;
            if i % 2 == 0 {
                run.import_dead(len);
            } else {
                run.enqueue_at(len, None, None, Priority::Normal, None);
            }
        }
        run.lane = 0;
        run.dequeue();
        run.ack();
        run.dequeue();
        run.nack(Retry::After(Duration::from_millis(100)));
        run.advance(200);
        run.import_dead(300);
        match round {
            0 => run.close_reopen(),
            1 => run.reopen(),
            _ => {}
        }
    }
}

pub fn cancel_workload(run: &mut Run) {
    for round in 0..4 {
        for i in 0..10u64 {
            run.lane = u8::from(i % 3 == 0);
            let delay = (i % 4 == 1).then(|| Duration::from_millis(run.rng.range(500, 3000)));
            let key = (i % 5 == 2).then(|| format!("key-{round}-{i}"));
            let group = (i % 3 == 2).then(|| format!("g{}", i % 2));
            let priority = if i % 4 == 3 {
                Priority::Urgent
            } else {
                Priority::Normal
            };
            let len = run.rng.range(40, 900) as usize;
            run.enqueue_at(len, delay, key, priority, group);
        }
        run.lane = 0;
        run.dequeue();
        run.dequeue();
        run.ack();
        run.nack(Retry::After(Duration::from_millis(1000)));
        for _ in 0..4 {
            run.cancel();
        }
        run.advance(1200);
        run.dequeue();
        run.cancel();
        match round {
            1 => run.close_reopen(),
            2 => run.reopen(),
            _ => {}
        }
    }
}

/// Jobs of two levels (Normal and Urgent), some in one message group,
/// leased, acked, retried, dead-lettered and redriven, with a clean
/// reopen and a crash-reopen in the middle: every job comes back at its
/// level and in its group.
pub fn levels_workload(run: &mut Run, steps: usize) {
    for step in 0..steps {
        if !run.live() {
            return;
        }
        if step == steps / 3 {
            run.close_reopen();
        }
        if step == 2 * steps / 3 {
            run.reopen();
        }
        match run.rng.below(100) {
            0..=29 => {
                let p = if run.rng.below(2) == 0 {
                    Priority::Urgent
                } else {
                    Priority::Normal
                };
                let len = run.rng.range(40, 600) as usize;
                let key = (run.rng.below(8) == 0).then(|| format!("lvl-{}", run.rng.below(20)));
                let group = (run.rng.below(3) == 0).then(|| "customer-42".to_string());
                run.enqueue_at(len, None, key, p, group);
            }
            30..=54 => run.dequeue(),
            55..=72 => run.ack(),
            73..=82 => {
                let ms = run.rng.below(3000);
                run.nack(Retry::After(Duration::from_millis(ms)));
            }
            83..=86 => run.fail(),
            87..=89 => run.redrive(),
            _ => {
                let ms = run.rng.range(200, 2000);
                run.advance(ms);
            }
        }
    }
}

/// Big dead letters, redriven until the dead-letter file is compacted
/// (it compacts past 1 MiB of removed records), with keys and purges.
pub fn dead_letter_workload(run: &mut Run) {
    const BIG: usize = 56 * 1024;
    for i in 0..24u64 {
        let key = (i % 4 == 0).then(|| format!("big-{i}"));
        run.enqueue(BIG, None, key);
        run.dequeue();
        run.fail();
        run.wait_upkeep();
    }
    let mut purged = 0;
    for i in 0..22usize {
        let ids = run.dead_ids();
        if ids.is_empty() || !run.live() {
            return;
        }
        if i % 7 == 3 && purged < 3 {
            run.purge();
            run.wait_upkeep();
            purged += 1;
            continue;
        }
        run.redrive_id(ids[0]);
        run.dequeue();
        run.ack();
        run.wait_upkeep();
    }
}

/// What a reopened queue holds.
#[derive(Debug, Default)]
pub struct Observed {
    /// Queued jobs: persisted attempts and payload.
    pub live: BTreeMap<u64, (u32, Vec<u8>)>,
    /// Dead letters: attempts and payload.
    pub dead: BTreeMap<u64, (u32, Vec<u8>)>,
}

impl Observed {
    pub fn outcome(&self, id: u64) -> Outcome {
        if let Some((a, _)) = self.live.get(&id) {
            Outcome::Live(*a)
        } else if let Some((a, _)) = self.dead.get(&id) {
            Outcome::Dead(*a)
        } else {
            Outcome::Gone
        }
    }
}

/// A drain of a reopened queue where every job is due, `(id, level,
/// group)` in delivery order (each grouped job acked when delivered):
/// each delivered job was free (no undelivered job of its group before
/// it), and its level is the one the documented cycle (Urgent 8, High 4,
/// Normal 2, Low 1, from its start) picks among the levels that had a
/// free job.
pub fn check_drain_order(drained: &[(u64, Priority, Option<Vec<u8>>)], label: &str) {
    use Priority::{High as H, Low as L, Normal as N, Urgent as U};
    const CYCLE: [Priority; 15] = [U, H, U, N, U, H, U, L, U, H, U, N, U, H, U];
    let mut left: BTreeMap<u64, (Priority, Option<&[u8]>)> = drained
        .iter()
        .map(|(id, p, g)| (*id, (*p, g.as_deref())))
        .collect();
    let free = |left: &BTreeMap<u64, (Priority, Option<&[u8]>)>, id: u64| {
        let group = left[&id].1;
        group.is_none() || !left.range(..id).any(|(_, (_, g))| *g == group)
    };
    let mut turn = 0;
    for (id, level, _) in drained {
        assert!(
            free(&left, *id),
            "{label}: job {id} delivered before its group's head"
        );
        let ready: BTreeSet<Priority> = left
            .keys()
            .filter(|&&j| free(&left, j))
            .map(|j| left[j].0)
            .collect();
        let want = if ready.len() > 1 {
            let slot = (0..15)
                .map(|k| (turn + k) % 15)
                .find(|&s| ready.contains(&CYCLE[s]))
                .expect("a ready level has a slot");
            turn = (slot + 1) % 15;
            CYCLE[slot]
        } else {
            *level
        };
        assert_eq!(
            *level, want,
            "{label}: job {id} delivered out of the cycle's order"
        );
        left.remove(id);
    }
}

/// Which ops are guaranteed durable when syncs up to `k` were real.
pub fn guaranteed_ops(m: &Model, k: u64) -> Vec<bool> {
    let good = |o: &OpRecord| o.ok && o.syncs <= k;
    let last_log_sync = m
        .ops
        .iter()
        .rposition(|o| good(o) && o.kind.syncs_all(m.durability));
    m.ops
        .iter()
        .enumerate()
        .map(|(i, o)| {
            last_log_sync.is_some_and(|g| i <= g && o.ok) || (good(o) && o.kind == OpKind::Purge)
        })
        .collect()
}

/// Ids are never issued twice: the next enqueue after the power cut gets
/// an id above every id an enqueue returned before the cut (the id floor;
/// one that returned after sync `k` froze the disk returned, as far as the
/// disk knows, after the cut), and above every job found, even when the
/// cut lost their records.
fn check_no_id_issued_again(m: &Model, q: &Queue, obs: &Observed, k: u64, label: &str) {
    let returned = m
        .jobs
        .iter()
        .filter(|(_, j)| m.ops[j.events[0].op].syncs <= k)
        .map(|(&id, _)| id)
        .max()
        .unwrap_or(0);
    let found = obs.live.keys().chain(obs.dead.keys()).copied().max();
    let new = q
        .enqueue(b"after the power cut")
        .unwrap_or_else(|e| panic!("{label}: enqueue after the cut: {e}"));
    assert!(
        new > returned.max(found.unwrap_or(0)),
        "{label}: id {new} issued again (enqueues had returned up to {returned})"
    );
}

/// Reopens the queue on `fs` and checks it against `m`, where syncs up to
/// `k` are known real (`u64::MAX`: all of them). Returns what it found.
pub fn check(m: &Model, fs: &SimFs, k: u64, now_ms: u64, label: &str) -> Observed {
    let clock = ManualClock::new(now_ms);
    let q = open(fs, &clock).unwrap_or_else(|e| panic!("{label}: reopen failed: {e}"));
    q.check_invariants();
    let names = fs.list(dir()).expect("list");
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp")),
        "{label}: temporary files left after open: {names:?}"
    );

    let mut obs = Observed::default();
    for d in q.dead_letters().unwrap_or_else(|e| panic!("{label}: {e}")) {
        if let Some(j) = m.jobs.get(&d.id) {
            let want = QUEUES[usize::from(j.queue)];
            assert_eq!(
                d.queue, want,
                "{label}: dead letter {} in another queue",
                d.id
            );
        }
        obs.dead.insert(d.id, (d.attempts, d.payload));
    }
    let stats = q.stats();
    assert_eq!(stats.dead, obs.dead.len() as u64, "{label}: stats.dead");
    clock.advance(Duration::from_secs(30 * 86_400));
    for lane in (0u8..).take(QUEUES.len()) {
        let h = lane_handle(&q, lane).unwrap_or_else(|e| panic!("{label}: {e}"));
        drain_lane(m, &h, lane, &mut obs, label);
    }
    q.check_invariants();
    check_no_id_issued_again(m, &q, &obs, k, label);

    let guaranteed = guaranteed_ops(m, k);
    let max_guaranteed = m
        .jobs
        .iter()
        .filter(|(_, j)| guaranteed[j.events[0].op])
        .map(|(id, _)| *id)
        .max()
        .unwrap_or(0);

    // Unknown ids must come from enqueue calls that failed.
    let phantom_tags: BTreeMap<u64, usize> = m
        .phantoms
        .iter()
        .enumerate()
        .flat_map(|(i, ps)| ps.iter().map(move |p| (tag_of(p).expect("tagged"), i)))
        .collect();
    let mut phantom_seen: BTreeMap<usize, usize> = BTreeMap::new();
    let all_seen: BTreeMap<u64, (Outcome, &Vec<u8>)> = obs
        .live
        .iter()
        .map(|(id, (a, p))| (*id, (Outcome::Live(*a), p)))
        .chain(
            obs.dead
                .iter()
                .map(|(id, (a, p))| (*id, (Outcome::Dead(*a), p))),
        )
        .collect();
    for (&id, &(outcome, p)) in &all_seen {
        match m.jobs.get(&id) {
            Some(job) => assert!(
                *p == job.payload,
                "{label}: job {id} payload damaged ({} bytes, want {})",
                p.len(),
                job.payload.len()
            ),
            None => {
                let tag = tag_of(p)
                    .unwrap_or_else(|| panic!("{label}: job {id} was never enqueued: {p:?}"));
                if let Some(want) = m.dead_phantoms.iter().find(|q| tag_of(q) == Some(tag)) {
                    // A failed import: a dead letter or nothing, never a
                    // job that runs.
                    assert_eq!(p, want, "{label}: imported dead letter {id} payload");
                    assert_eq!(outcome, Outcome::Dead(1), "{label}: failed import {id}");
                    continue;
                }
                let call = phantom_tags
                    .get(&tag)
                    .unwrap_or_else(|| panic!("{label}: job {id} (tag {tag}) was never enqueued"));
                let want = m.phantoms[*call].iter().find(|q| tag_of(q) == Some(tag));
                assert_eq!(Some(p), want, "{label}: phantom job {id} payload");
                assert_eq!(outcome, Outcome::Live(0), "{label}: phantom job {id}");
                *phantom_seen.entry(*call).or_default() += 1;
            }
        }
    }
    for (call, n) in phantom_seen {
        assert_eq!(
            n,
            m.phantoms[call].len(),
            "{label}: a failed batch is partly there"
        );
    }

    // Every known job is in a state its history allows.
    let first_uncertain = m.failed_dequeues.first().copied();
    for (&id, job) in &m.jobs {
        let seen = obs.outcome(id);
        let g = job.events.iter().rposition(|e| guaranteed[e.op]);
        let mut allowed: BTreeSet<Outcome> = BTreeSet::new();
        if g.is_none() {
            allowed.insert(Outcome::Gone);
        }
        for e in &job.events[g.unwrap_or(0)..] {
            let o = e.outcome.after_restart();
            allowed.insert(o);
            // A failed dequeue may have leased this job once more.
            if let (Some(f), Outcome::Live(a)) = (first_uncertain, o) {
                if e.op < f {
                    allowed.insert(Outcome::Leased(a + 1).after_restart());
                }
            }
        }
        assert!(
            allowed.contains(&seen),
            "{label}: job {id} is {seen:?}, but its history allows only {allowed:?} \
             (events {:?}, guaranteed from {g:?})",
            job.events
        );
    }

    // The log is recovered as a prefix: if a job is queued, every job
    // enqueued before it had its enqueue record recovered too, so such a
    // job may be missing only if something finished it (ack or purge).
    let newest_queued = obs
        .live
        .keys()
        .filter(|id| m.jobs.contains_key(id))
        .max()
        .copied()
        .unwrap_or(0);
    for (&id, job) in m.jobs.range(..newest_queued) {
        if obs.outcome(id) == Outcome::Gone {
            assert!(
                job.events.iter().any(|e| e.outcome == Outcome::Gone),
                "{label}: job {id} is gone, never acked or purged, though job \
                 {newest_queued}, enqueued after it, is there (events {:?})",
                job.events
            );
        }
    }

    // Batches are all or nothing.
    for ids in &m.batches {
        let there = ids.iter().any(|id| obs.outcome(*id) != Outcome::Gone);
        if there {
            for id in ids {
                let gone_later = m.jobs[id].events[1..]
                    .iter()
                    .any(|e| e.outcome == Outcome::Gone);
                assert!(
                    obs.outcome(*id) != Outcome::Gone || gone_later,
                    "{label}: batch {ids:?} is partly there (job {id} missing)"
                );
            }
        }
    }

    // Idempotency keys stay known across the restart, each on its queue.
    for ((lane, key), &(id, op)) in &m.keys {
        let again = lane_handle(&q, *lane)
            .and_then(|h| {
                h.enqueue_with(
                    b"again",
                    EnqueueOptions::new().idempotency_key(key.as_bytes()),
                )
            })
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        if again.duplicate {
            assert_eq!(again.id, id, "{label}: key {key} names another job");
        } else {
            assert!(
                !guaranteed[op],
                "{label}: key {key} of job {id} forgotten after a durable enqueue"
            );
            assert_eq!(
                obs.outcome(id),
                Outcome::Gone,
                "{label}: key {key} forgotten while its job {id} is there"
            );
        }
    }

    // Ids are never reused.
    let fresh = q
        .enqueue(b"fresh")
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let highest = all_seen.keys().copied().max().unwrap_or(0);
    assert!(
        fresh > highest.max(max_guaranteed),
        "{label}: new job got id {fresh}, not above {}",
        highest.max(max_guaranteed)
    );
    q.check_invariants();
    obs
}

/// Drains queue `lane` (handle `q`) of a reopened store where every job
/// is due, into `obs.live`: each job delivered is one of this queue's
/// (when the model knows it), at its level and in its group, in the
/// order of this queue's own cycle, and the queue's counts match.
fn drain_lane(m: &Model, q: &Queue, lane: u8, obs: &mut Observed, label: &str) {
    let name = QUEUES[usize::from(lane)];
    let label = &format!("{label}, queue {name}");
    let stats = q.stats();
    assert_eq!(stats.in_flight, 0, "{label}: leases survived a restart");
    // Only jobs blocked behind their group's head are still delayed.
    if !m.jobs.values().any(|j| j.group.is_some()) {
        assert_eq!(stats.delayed, 0, "{label}: {stats:?}");
    }
    let ready = stats.ready + stats.delayed;
    let mut drained = Vec::new();
    for _ in 0..1_000_000 {
        let Some(job) = q
            .dequeue()
            .unwrap_or_else(|e| panic!("{label}: drain: {e}"))
        else {
            break;
        };
        let id = job.id();
        assert!(
            !obs.dead.contains_key(&id),
            "{label}: job {id} both queued and dead"
        );
        drained.push((id, job.priority(), job.group().map(<[u8]>::to_vec)));
        if let Some(j) = m.jobs.get(&id) {
            assert_eq!(
                QUEUES[usize::from(j.queue)],
                name,
                "{label}: job {id} comes back in another queue"
            );
            let p = job.priority();
            assert!(
                p == j.priority,
                "{label}: job {id} comes back at {p:?}, enqueued at {:?}",
                j.priority
            );
            let g = job.group().map(|g| String::from_utf8_lossy(g).into_owned());
            assert!(
                g == j.group || (j.redriven && g.is_none()),
                "{label}: job {id} comes back in group {g:?}, enqueued in {:?}",
                j.group
            );
        }
        if job.group().is_some() {
            // Acked, so that the next job of its group is delivered.
            q.ack(job.receipt())
                .unwrap_or_else(|e| panic!("{label}: ack in drain: {e}"));
        }
        let prev = obs
            .live
            .insert(id, (job.attempt() - 1, job.payload().to_vec()));
        assert!(prev.is_none(), "{label}: job {id} delivered twice");
    }
    assert_eq!(ready, drained.len() as u64, "{label}: stats.ready");
    check_drain_order(&drained, label);
}

/// Segment ids present in the queue directory.
pub fn segment_ids(fs: &SimFs) -> Vec<u32> {
    let mut ids: Vec<u32> = fs
        .list(dir())
        .expect("list")
        .iter()
        .filter_map(|n| n.strip_suffix(".wal")?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}
