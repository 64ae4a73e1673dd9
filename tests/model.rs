//! Model-based test: random sequences of every operation, reopen
//! included, on the default queue and two named queues of one store,
//! against a simple in-memory model. Any divergence in what is delivered,
//! from which queue, in which order, with which attempt, or in any
//! queue's counts fails.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use walq::{
    Durability, EnqueueOptions, ErrorKind, ManualClock, Options, Priority, Queue, Receipt, Retry,
    Store,
};

const MAX_ATTEMPTS: u32 = 3;
const VT_MS: u64 = 1_000;
const WINDOW_MS: u64 = 5_000;
/// The queues of the store, by index: the default queue, then two named.
const QUEUES: [&str; 3] = ["default", "a", "b"];

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        /// Index into [`QUEUES`].
        queue: u8,
        len: usize,
        delay_ms: u64,
        max_attempts: Option<u32>,
        /// Priority level, 0 (Low) ..= 3 (Urgent).
        level: u8,
        /// Message group, if any (of four).
        group: Option<u8>,
    },
    EnqueueKeyed {
        queue: u8,
        key: u8,
    },
    Batch {
        queue: u8,
        n: usize,
    },
    /// `dequeue` on a queue (index into [`QUEUES`]).
    Dequeue(u8),
    /// `dequeue_batch(n)` on a queue: one LeaseMany record.
    DequeueBatch(u8, usize),
    Ack(usize),
    /// `ack_batch` of these receipts (a receipt may repeat): one AckMany
    /// record for the valid ones.
    AckBatch(Vec<usize>),
    Nack(usize, u64),
    /// `release`: ready now, the lease's attempt given back.
    Release(usize),
    Fail(usize),
    Extend(usize, u64),
    Advance(u64),
    Redrive(usize),
    Purge(usize),
    /// `cancel` through queue `.0`'s handle of the `.1`-th known job id
    /// (of any state, or one never issued).
    Cancel(u8, usize),
    /// `enqueue_dead_letter` into a queue, with a key and a group maybe,
    /// at a level: a dead letter at once, nothing delivered.
    EnqueueDead {
        queue: u8,
        key: Option<u8>,
        level: u8,
        group: Option<u8>,
    },
    /// Reopen; with `scan`, the checkpoint is deleted first, so the whole
    /// log (batch records included) is replayed.
    Reopen {
        scan: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0usize..300, prop_oneof![Just(0u64), 0u64..3000], proptest::option::of(1u32..4), prop_oneof![2 => Just(1u8), 3 => 0u8..4], proptest::option::weighted(0.4, 0u8..4))
            .prop_map(|(queue, len, delay_ms, max_attempts, level, group)| Op::Enqueue { queue, len, delay_ms, max_attempts, level, group }),
        1 => (0u8..3, 0u8..4).prop_map(|(queue, key)| Op::EnqueueKeyed { queue, key }),
        1 => (0u8..3, 1usize..6).prop_map(|(queue, n)| Op::Batch { queue, n }),
        5 => (0u8..3).prop_map(Op::Dequeue),
        2 => (0u8..3, 0usize..6).prop_map(|(queue, n)| Op::DequeueBatch(queue, n)),
        3 => (0usize..8).prop_map(Op::Ack),
        2 => proptest::collection::vec(0usize..8, 0..6).prop_map(Op::AckBatch),
        2 => ((0usize..8), 0u64..2000).prop_map(|(i, d)| Op::Nack(i, d)),
        1 => (0usize..8).prop_map(Op::Release),
        1 => (0usize..8).prop_map(Op::Fail),
        1 => ((0usize..8), 1u64..3000).prop_map(|(i, d)| Op::Extend(i, d)),
        2 => (0u64..2500).prop_map(Op::Advance),
        1 => (0usize..4).prop_map(Op::Redrive),
        1 => (0usize..4).prop_map(Op::Purge),
        2 => (0u8..3, 0usize..16).prop_map(|(queue, i)| Op::Cancel(queue, i)),
        1 => (0u8..3, proptest::option::of(0u8..4), 0u8..4, proptest::option::of(0u8..4))
            .prop_map(|(queue, key, level, group)| Op::EnqueueDead { queue, key, level, group }),
        1 => any::<bool>().prop_map(|scan| Op::Reopen { scan }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum St {
    Ready { at: u64 },
    Leased { token: u64, deadline: u64 },
    Dead,
}

#[derive(Debug, Clone)]
struct MJob {
    /// Index into [`QUEUES`].
    queue: u8,
    payload: Vec<u8>,
    attempts: u32,
    max_attempts: u32,
    st: St,
    key: Option<u8>,
    enq: u64,
    level: u8,
    group: Option<u8>,
    /// The last error of a nack with one (`Queue::last_error`).
    error: Option<String>,
}

/// The documented cycle of levels (Urgent 8, High 4, Normal 2, Low 1).
const CYCLE: [u8; 15] = [3, 2, 3, 1, 3, 2, 3, 0, 3, 2, 3, 1, 3, 2, 3];
const NORMAL: u8 = 1;

const LEVELS: [Priority; 4] = [
    Priority::Low,
    Priority::Normal,
    Priority::High,
    Priority::Urgent,
];

#[derive(Default)]
struct Model {
    jobs: BTreeMap<u64, MJob>,
    /// (queue, key) -> (id, enqueued): keys are scoped per queue.
    finished_keys: BTreeMap<(u8, u8), (u64, u64)>,
    next_token: u64,
    /// Each queue's position in its own cycle (reset by a reopen).
    turn: [usize; 3],
}

impl Model {
    fn expire(&mut self, now: u64) {
        for job in self.jobs.values_mut() {
            if let St::Leased { deadline, .. } = job.st {
                if deadline <= now {
                    job.st = if job.attempts >= job.max_attempts {
                        St::Dead
                    } else {
                        St::Ready { at: deadline }
                    };
                }
            }
        }
    }

    /// The job of queue `q` delivered next: the first ready job, by
    /// `(at, id)`, of the level `q`'s cycle picks among the levels with a
    /// ready job (the only one, when one level has ready jobs; the cycle
    /// then stays put).
    fn pick(&self, q: u8, now: u64) -> Option<(u64, usize)> {
        let turn = self.turn[usize::from(q)];
        let mut heads: [Option<(u64, u64)>; 4] = [None; 4];
        for (id, j) in &self.jobs {
            if j.queue != q || self.blocked(*id) {
                continue;
            }
            if let St::Ready { at } = j.st {
                let head = &mut heads[usize::from(j.level)];
                if at <= now && head.is_none_or(|h| (at, *id) < h) {
                    *head = Some((at, *id));
                }
            }
        }
        let ready: Vec<usize> = (0..4).filter(|&l| heads[l].is_some()).collect();
        match ready.as_slice() {
            [] => None,
            [l] => Some((heads[*l]?.1, turn)),
            _ => (0..15).find_map(|k| {
                let slot = (turn + k) % 15;
                let head = heads[usize::from(CYCLE[slot])]?;
                Some((head.1, (slot + 1) % 15))
            }),
        }
    }

    /// A job of a group waits while a job of its group (in its queue)
    /// enqueued before it is neither finished nor dead.
    fn blocked(&self, id: u64) -> bool {
        let job = &self.jobs[&id];
        let Some(g) = job.group else {
            return false;
        };
        self.jobs
            .range(..id)
            .any(|(_, j)| j.queue == job.queue && j.group == Some(g) && j.st != St::Dead)
    }

    fn next_ready(&self, q: u8, now: u64) -> Option<u64> {
        self.pick(q, now).map(|(id, _)| id)
    }

    /// Delivers queue `q`'s next job: `q`'s cycle moves.
    fn take_next(&mut self, q: u8, now: u64) -> Option<u64> {
        let (id, turn) = self.pick(q, now)?;
        self.turn[usize::from(q)] = turn;
        Some(id)
    }

    /// Counts the delivery of `job` at `now` (its attempt and payload must
    /// be the model's) and gives it a new lease; returns the lease's token.
    fn leased(&mut self, job: &walq::Job, now: u64) -> Result<u64, TestCaseError> {
        let mj = self.jobs.get_mut(&job.id()).unwrap();
        mj.attempts += 1;
        prop_assert_eq!(job.attempt(), mj.attempts);
        prop_assert_eq!(job.payload(), &mj.payload[..]);
        self.next_token += 1;
        mj.st = St::Leased {
            token: self.next_token,
            deadline: now + VT_MS,
        };
        Ok(self.next_token)
    }

    fn lease_valid(&self, id: u64, token: u64, now: u64) -> bool {
        matches!(self.jobs.get(&id).map(|j| &j.st),
            Some(St::Leased { token: t, deadline }) if *t == token && *deadline > now)
    }

    fn key_owner(&self, q: u8, key: u8, now: u64) -> Option<u64> {
        let live = self
            .jobs
            .iter()
            .find(|(_, j)| j.queue == q && j.key == Some(key));
        if let Some((id, _)) = live {
            return Some(*id);
        }
        match self.finished_keys.get(&(q, key)) {
            Some(&(id, enq)) if enq + WINDOW_MS > now => Some(id),
            _ => None,
        }
    }

    fn finish(&mut self, id: u64) {
        let job = self.jobs.remove(&id).expect("finishing a known job");
        if let Some(k) = job.key {
            self.finished_keys.insert((job.queue, k), (id, job.enq));
        }
    }

    /// `(ready, delayed, in_flight)` of queue `q`.
    fn counts(&self, q: u8, now: u64) -> (u64, u64, u64) {
        let c = self.all_counts(Some(q), now);
        (c.0, c.1, c.2)
    }

    /// `(ready, delayed, in_flight, dead)` of queue `q`, or of the store.
    fn all_counts(&self, q: Option<u8>, now: u64) -> (u64, u64, u64, u64) {
        let mut c = (0, 0, 0, 0);
        for (id, j) in &self.jobs {
            if q.is_some_and(|q| q != j.queue) {
                continue;
            }
            match j.st {
                St::Ready { .. } if self.blocked(*id) => c.1 += 1,
                St::Ready { at } if at <= now => c.0 += 1,
                St::Ready { .. } => c.1 += 1,
                St::Leased { .. } => c.2 += 1,
                St::Dead => c.3 += 1,
            }
        }
        c
    }
}

fn options(clock: &ManualClock) -> Options {
    Options::default()
        .clock(clock.clone())
        .durability(Durability::Os)
        .segment_size(64 * 1024)
        .max_attempts(MAX_ATTEMPTS)
        .visibility_timeout(Duration::from_millis(VT_MS))
        .dedup_window(Duration::from_millis(WINDOW_MS))
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|k| (seq as usize * 7 + k) as u8).collect()
}

/// Opens the store: a handle per queue of [`QUEUES`], by index.
fn open(dir: &std::path::Path, clock: &ManualClock) -> Vec<Queue> {
    let store = Store::open_with(dir, options(clock)).unwrap();
    QUEUES.iter().map(|n| store.queue(n).unwrap()).collect()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let mut qs = open(dir.path(), &clock);
    let mut m = Model::default();
    let mut receipts: Vec<(Receipt, u64)> = Vec::new(); // receipt, model token
    let mut seq = 0u64;
    for op in ops {
        let now = clock.now_ms_for_test();
        // Settling, dead letters and invariants are the store's: through
        // the default queue's handle.
        let q = qs[0].clone();
        match op {
            Op::Enqueue {
                queue,
                len,
                delay_ms,
                max_attempts,
                level,
                group,
            } => {
                seq += 1;
                let p = payload(seq, len);
                let mut o = EnqueueOptions::new()
                    .delay(Duration::from_millis(delay_ms))
                    .priority(LEVELS[usize::from(level)]);
                if let Some(g) = group {
                    o = o.group(format!("group-{g}"));
                }
                if let Some(n) = max_attempts {
                    o = o.max_attempts(n);
                }
                let id = qs[usize::from(queue)].enqueue_with(&p, o).unwrap().id;
                prop_assert!(!m.jobs.contains_key(&id), "id {id} reused");
                m.jobs.insert(
                    id,
                    MJob {
                        queue,
                        payload: p,
                        attempts: 0,
                        max_attempts: max_attempts.unwrap_or(MAX_ATTEMPTS),
                        st: St::Ready { at: now + delay_ms },
                        key: None,
                        enq: now,
                        level,
                        group,
                        error: None,
                    },
                );
            }
            Op::EnqueueKeyed { queue, key } => {
                seq += 1;
                let p = payload(seq, 10);
                let out = qs[usize::from(queue)]
                    .enqueue_with(&p, EnqueueOptions::new().idempotency_key([key]))
                    .unwrap();
                match m.key_owner(queue, key, now) {
                    Some(id) => {
                        prop_assert!(out.duplicate, "key {key} should be known (job {id})");
                        prop_assert_eq!(out.id, id);
                    }
                    None => {
                        prop_assert!(!out.duplicate, "key {} should be free", key);
                        m.finished_keys.remove(&(queue, key));
                        m.jobs.insert(
                            out.id,
                            MJob {
                                queue,
                                payload: p,
                                attempts: 0,
                                max_attempts: MAX_ATTEMPTS,
                                st: St::Ready { at: now },
                                key: Some(key),
                                enq: now,
                                level: NORMAL,
                                group: None,
                                error: None,
                            },
                        );
                    }
                }
            }
            Op::Batch { queue, n } => {
                let ps: Vec<Vec<u8>> = (0..n)
                    .map(|_| {
                        seq += 1;
                        payload(seq, 20)
                    })
                    .collect();
                let ids = qs[usize::from(queue)].enqueue_batch(&ps).unwrap();
                prop_assert_eq!(ids.len(), n);
                for (id, p) in ids.into_iter().zip(ps) {
                    m.jobs.insert(
                        id,
                        MJob {
                            queue,
                            payload: p,
                            attempts: 0,
                            max_attempts: MAX_ATTEMPTS,
                            st: St::Ready { at: now },
                            key: None,
                            enq: now,
                            level: NORMAL,
                            group: None,
                            error: None,
                        },
                    );
                }
            }
            Op::Dequeue(queue) => {
                m.expire(now);
                let want = m.take_next(queue, now);
                let got = qs[usize::from(queue)].dequeue().unwrap();
                prop_assert_eq!(got.as_ref().map(|j| j.id()), want);
                if let Some(job) = got {
                    let mj = m.jobs.get(&job.id()).unwrap();
                    prop_assert_eq!(job.priority(), LEVELS[usize::from(mj.level)]);
                    let group = mj.group.map(|g| format!("group-{g}").into_bytes());
                    prop_assert_eq!(job.group(), group.as_deref());
                    let token = m.leased(&job, now)?;
                    receipts.push((job.receipt(), token));
                }
            }
            Op::DequeueBatch(queue, n) => {
                m.expire(now);
                let got = qs[usize::from(queue)].dequeue_batch(n).unwrap();
                prop_assert!(got.len() <= n);
                for job in &got {
                    let want = m.take_next(queue, now);
                    prop_assert_eq!(Some(job.id()), want);
                    let token = m.leased(job, now)?;
                    receipts.push((job.receipt(), token));
                }
                if got.len() < n {
                    let next = m.next_ready(queue, now);
                    prop_assert_eq!(next, None, "dequeue_batch stopped early");
                }
            }
            Op::AckBatch(ref picks) => {
                if receipts.is_empty() {
                    continue;
                }
                let chosen: Vec<(Receipt, u64)> =
                    picks.iter().map(|i| receipts[i % receipts.len()]).collect();
                let rs: Vec<Receipt> = chosen.iter().map(|c| c.0).collect();
                let results = q.ack_batch(&rs).unwrap();
                prop_assert_eq!(results.len(), rs.len());
                let mut acked = Vec::new();
                let mut expired = false;
                for ((r, token), result) in chosen.into_iter().zip(results) {
                    let id = r.job_id();
                    let twice = acked.contains(&id);
                    if twice || !m.lease_valid(id, token, now) {
                        let err = result.expect_err("a stale receipt was accepted");
                        prop_assert_eq!(err.kind(), ErrorKind::LeaseLost);
                        // A receipt refused because its lease ran out makes
                        // the queue reap expired leases; one refused for
                        // being in the batch twice does not.
                        expired |= !twice
                            && matches!(m.jobs.get(&id).map(|j| &j.st),
                            Some(St::Leased { token: t, .. }) if *t == token);
                        continue;
                    }
                    result.unwrap();
                    acked.push(id);
                }
                // Settled after the batch is validated, as the queue does.
                if expired {
                    m.expire(now);
                }
                for id in acked {
                    m.finish(id);
                }
            }
            Op::Ack(i) | Op::Fail(i) | Op::Nack(i, _) | Op::Release(i) | Op::Extend(i, _) => {
                if receipts.is_empty() {
                    continue;
                }
                let (r, token) = receipts[i % receipts.len()];
                let id = r.job_id();
                let valid = m.lease_valid(id, token, now);
                let result = match op {
                    Op::Ack(_) => q.ack(r),
                    Op::Fail(_) => q.fail(r, "failed"),
                    Op::Nack(_, d) => {
                        q.nack(r, Retry::After(Duration::from_millis(d)), &nack_error(d))
                    }
                    Op::Release(_) => q.release(r),
                    Op::Extend(_, d) => q.extend(r, Duration::from_millis(d)),
                    _ => unreachable!(),
                };
                if !valid {
                    let err = result.expect_err("a stale receipt was accepted");
                    prop_assert_eq!(err.kind(), ErrorKind::LeaseLost);
                    if matches!(m.jobs.get(&id).map(|j| &j.st), Some(St::Leased { token: t, .. }) if *t == token)
                    {
                        m.expire(now);
                    }
                    continue;
                }
                result.unwrap();
                match op {
                    Op::Ack(_) => m.finish(id),
                    Op::Fail(_) => m.jobs.get_mut(&id).unwrap().st = St::Dead,
                    Op::Nack(_, d) => {
                        let j = m.jobs.get_mut(&id).unwrap();
                        j.st = if j.attempts >= j.max_attempts {
                            St::Dead
                        } else {
                            St::Ready { at: now + d }
                        };
                        // A nack without an error keeps the last one.
                        let text = nack_error(d);
                        if !text.is_empty() {
                            j.error = Some(text);
                        }
                    }
                    Op::Release(_) => {
                        let j = m.jobs.get_mut(&id).unwrap();
                        j.attempts -= 1;
                        j.st = St::Ready { at: now };
                    }
                    Op::Extend(_, d) => {
                        let j = m.jobs.get_mut(&id).unwrap();
                        j.st = St::Leased {
                            token,
                            deadline: now + d,
                        };
                    }
                    _ => unreachable!(),
                }
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            Op::Redrive(i) | Op::Purge(i) => {
                let dead: Vec<u64> = m
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.st == St::Dead)
                    .map(|(id, _)| *id)
                    .collect();
                prop_assert_eq!(q.dead_letter_ids(), dead.clone());
                if dead.is_empty() {
                    continue;
                }
                let id = dead[i % dead.len()];
                if matches!(op, Op::Redrive(_)) {
                    q.redrive(id).unwrap();
                    let j = m.jobs.get_mut(&id).unwrap();
                    j.attempts = 0;
                    j.max_attempts = MAX_ATTEMPTS;
                    j.st = St::Ready { at: now };
                    // A dead letter keeps its level (record 13), not its
                    // group: redriven at its level, without its group.
                    j.group = None;
                    j.error = None;
                } else {
                    q.purge(id).unwrap();
                    m.finish(id);
                }
            }
            Op::Cancel(queue, i) => {
                m.expire(now);
                let mut ids: Vec<u64> = m.jobs.keys().copied().collect();
                ids.push(m.jobs.keys().last().map_or(1_000, |id| id + 1_000));
                let id = ids[i % ids.len()];
                let handle = &qs[usize::from(queue)];
                let result = handle.cancel(id);
                match m.jobs.get(&id).map(|j| (j.queue, &j.st)) {
                    Some((jq, St::Ready { .. })) if jq == queue => {
                        result.unwrap();
                        m.finish(id);
                        let status = handle.status(id).unwrap();
                        prop_assert!(
                            matches!(status, walq::JobStatus::Purged { .. }),
                            "cancelled job {} reads {:?}",
                            id,
                            status
                        );
                    }
                    Some((jq, St::Leased { .. })) if jq == queue => {
                        let err = result.expect_err("a leased job was cancelled");
                        prop_assert_eq!(err.kind(), ErrorKind::InFlight);
                    }
                    _ => {
                        let err = result.expect_err("a job that does not wait here was cancelled");
                        prop_assert_eq!(err.kind(), ErrorKind::NotFound);
                    }
                }
            }
            Op::EnqueueDead {
                queue,
                key,
                level,
                group,
            } => {
                seq += 1;
                let p = payload(seq, 30);
                let mut o = EnqueueOptions::new().priority(LEVELS[usize::from(level)]);
                if let Some(g) = group {
                    o = o.group(format!("group-{g}"));
                }
                if let Some(k) = key {
                    o = o.idempotency_key([k]);
                }
                let out = qs[usize::from(queue)]
                    .enqueue_dead_letter(&p, o, "imported")
                    .unwrap();
                if let Some(id) = key.and_then(|k| m.key_owner(queue, k, now)) {
                    prop_assert!(out.duplicate, "the key of job {} should be known", id);
                    prop_assert_eq!(out.id, id);
                    continue;
                }
                prop_assert!(!out.duplicate, "a dead letter's key should be free");
                if let Some(k) = key {
                    m.finished_keys.remove(&(queue, k));
                }
                m.jobs.insert(
                    out.id,
                    MJob {
                        queue,
                        payload: p,
                        attempts: 0,
                        max_attempts: MAX_ATTEMPTS,
                        st: St::Dead,
                        key,
                        enq: now,
                        level,
                        group,
                        error: None,
                    },
                );
            }
            Op::Reopen { scan } => {
                drop(q);
                qs.clear();
                if scan {
                    let _ = std::fs::remove_file(dir.path().join("CHECKPOINT"));
                }
                qs = open(dir.path(), &clock);
                receipts.clear();
                m.turn = [0; 3];
                for j in m.jobs.values_mut() {
                    if let St::Leased { .. } = j.st {
                        j.st = if j.attempts >= j.max_attempts {
                            St::Dead
                        } else {
                            St::Ready { at: now }
                        };
                    }
                }
            }
        }
        check_counts(&qs, &m, clock.now_ms_for_test())?;
    }
    Ok(())
}

/// The error text a nack of delay `d` gives: none for one in three.
fn nack_error(d: u64) -> String {
    match d % 3 {
        0 => String::new(),
        _ => format!("retry after {d} ms"),
    }
}

/// The invariants hold, each queue's counts (the dead letters are the
/// store's) and the store's totals are the model's, and so is the last
/// error of every job that waits or is leased (a dead job's reads none
/// once the queue has seen its lease run out; the model may know first).
fn check_counts(qs: &[Queue], m: &Model, now: u64) -> Result<(), TestCaseError> {
    qs[0].check_invariants();
    for (&id, j) in &m.jobs {
        if j.st != St::Dead {
            prop_assert_eq!(qs[0].last_error(id).unwrap(), j.error.clone(), "job {}", id);
        }
    }
    let dead = m.all_counts(None, now).3;
    for (i, q) in (0u8..).zip(qs) {
        let s = q.stats();
        let (ready, delayed, in_flight) = m.counts(i, now);
        prop_assert_eq!(
            (s.ready, s.delayed, s.in_flight, s.dead),
            (ready, delayed, in_flight, dead),
            "queue {}: {:?}",
            QUEUES[usize::from(i)],
            s
        );
    }
    Ok(())
}

trait NowForTest {
    fn now_ms_for_test(&self) -> u64;
}
impl NowForTest for ManualClock {
    fn now_ms_for_test(&self) -> u64 {
        walq::Clock::now_ms(self)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96), max_shrink_iters: 2000, ..ProptestConfig::default() })]
    #[test]
    fn queue_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
