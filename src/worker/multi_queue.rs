//! A [`Backend`] over several queues of one store, with weights: a worker
//! pool that serves them all (docs/design-queues.md, "Worker pools over
//! several queues").
//!
//! The queue a lease comes from is chosen by weighted round robin over a
//! fixed round of `W` turns (`W` the sum of the weights): a queue of
//! weight `w` has `w` turns in it, spread evenly (its `k`-th at
//! `(2k + 1) / 2w` of the round; on a tie, the queue added first goes
//! first). A pick takes the first turn after the last one taken whose
//! queue has a ready job; a queue with none is passed over, so an empty
//! queue costs nothing. Nothing but the last turn taken is kept: a queue
//! that was empty for a while comes back to its own turns, owing and
//! owed nothing. So while the same queues have ready jobs, any run of
//! consecutive leases as long as the sum of their weights gives each
//! exactly its weight (with every queue busy: any `W` consecutive leases,
//! from the first lease after an empty queue was refilled on), and a
//! queue that has a ready job at every pick gets at least its weight in
//! any `W` consecutive leases, however the others come and go. The picks
//! run under the store's lock, and a lease waits on the store's wakeups,
//! never polling.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Now;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{Job, Receipt};
use crate::options::EnqueueOptions;
use crate::queue::{Enqueued, Queue, Store};
use crate::state::QueueState;
use crate::status::JobStatus;
use crate::worker::backend::{Backend, Delivery};
use crate::worker::queue_backend::{delivery_named, name_of};

/// Most a queue's weight can be in a [`MultiQueue`].
pub const MAX_QUEUE_WEIGHT: u32 = 1000;

/// Several queues of one store as one [`Backend`], each with a weight.
///
/// ```
/// use std::time::Duration;
/// use walq::worker::MultiQueue;
/// use walq::{Outcome, Store, WorkerPool};
/// # fn main() -> walq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path())?;
/// store.queue("emails")?.enqueue(b"welcome ada")?;
/// store.queue("reports")?.enqueue(b"monthly totals")?;
/// let both = MultiQueue::new(&store).queue("emails", 3)?.queue("reports", 1)?;
/// let pool = WorkerPool::builder(both)
///     .workers(2)
///     .start(|_ctx, _payload: &[u8]| Outcome::done())?;
/// # let deadline = std::time::Instant::now() + Duration::from_secs(60);
/// # while pool.stats().processed() < 2 {
/// #     assert!(std::time::Instant::now() < deadline);
/// #     std::thread::sleep(Duration::from_millis(5));
/// # }
/// pool.shutdown(Duration::from_secs(5));
/// # Ok(()) }
/// ```
///
/// **Enqueues through a `MultiQueue` go to its first queue** (the first
/// given to [`MultiQueue::queue`]): [`Backend::enqueue`] on it, and a
/// [`crate::Jobs`] handle made on it, put every job there, whatever the
/// weights (they choose only where leases come from). To enqueue into a
/// given queue, use that queue's own handle:
///
/// ```
/// use walq::worker::{Backend, MultiQueue};
/// use walq::{EnqueueOptions, Jobs, Store};
/// # fn main() -> walq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path())?;
/// let both = MultiQueue::new(&store).queue("emails", 3)?.queue("reports", 1)?;
/// both.enqueue(b"welcome ada", EnqueueOptions::new())?; // into "emails", the first queue
/// store.queue("reports")?.enqueue(b"monthly totals")?; // into "reports"
/// Jobs::<String>::new(store.queue("reports")?).enqueue(&"yearly totals".into())?;
/// assert_eq!(store.queue("emails")?.stats().ready, 1);
/// assert_eq!(store.queue("reports")?.stats().ready, 2);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MultiQueue {
    store: Store,
    queues: Vec<(Queue, u32)>,
    /// Each queue's name, as its jobs' handlers see it (`JobContext::queue`).
    names: Vec<Option<Arc<str>>>,
    /// The last turn taken in the round (`None`: none yet).
    last: Mutex<Option<Turn>>,
}

impl MultiQueue {
    /// No queue yet: add them with [`MultiQueue::queue`].
    pub fn new(store: &Store) -> MultiQueue {
        MultiQueue {
            store: store.clone(),
            queues: Vec::new(),
            names: Vec::new(),
            last: Mutex::new(None),
        }
    }

    /// Adds queue `name` with `weight` (1..=1000). A queue named twice
    /// is an error.
    pub fn queue(mut self, name: &str, weight: u32) -> Result<MultiQueue> {
        if weight == 0 || weight > MAX_QUEUE_WEIGHT {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                format!("queue {name:?}: a weight is 1..={MAX_QUEUE_WEIGHT}, got {weight}"),
            ));
        }
        let q = self.store.queue(name)?;
        if self
            .queues
            .iter()
            .any(|(o, _)| o.queue_id() == q.queue_id())
        {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                format!("queue {name:?} is already in this pool"),
            ));
        }
        self.names.push(name_of(&q));
        self.queues.push((q, weight));
        Ok(self)
    }

    /// The first queue: enqueues through the backend go there, and the
    /// store's operations by id go through it.
    fn first(&self) -> Result<&Queue> {
        self.queues.first().map(|(q, _)| q).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOptions,
                "a MultiQueue needs at least one queue",
            )
        })
    }

    /// The store's ids of the queues served (what a wait watches).
    fn queue_ids(&self) -> Vec<u16> {
        self.queues.iter().map(|(q, _)| q.queue_id()).collect()
    }

    /// One weighted pick over the queues with a ready job, under the
    /// store's lock; the queue's index and its job.
    fn pick(&self, st: &mut QueueState, now: Now, vt: u64) -> Result<Option<(usize, Job)>> {
        let mut last = self.last.lock();
        let mut open = Vec::with_capacity(self.queues.len());
        for (i, (q, _)) in self.queues.iter().enumerate() {
            if st.has_ready(q.queue_id(), now)? {
                open.push(i);
            }
        }
        while let Some(turn) = self.next_turn(*last, &open) {
            let queue = self.queues[turn.queue].0.queue_id();
            match st.dequeue(queue, now, vt) {
                Ok(Some(job)) => {
                    *last = Some(turn);
                    return Ok(Some((turn.queue, job)));
                }
                other => {
                    // Found empty after all (its next job was damaged and
                    // dead-lettered), or failing: the pick is made again
                    // without it, from the same place in the round.
                    other?;
                    open.retain(|&i| i != turn.queue);
                }
            }
        }
        Ok(None)
    }

    /// The first turn after `last` of one of the queues `open`.
    fn next_turn(&self, last: Option<Turn>, open: &[usize]) -> Option<Turn> {
        let weight = |i: usize| self.queues[i].1;
        let candidates = open.iter().map(|&i| Turn::after(last, i, weight));
        candidates.reduce(|a, b| if b.before(a, weight) { b } else { a })
    }

    /// Leases the next job by the weighted rule, waiting up to `wait`;
    /// with the name of the queue it came from. A `visibility` over
    /// [`crate::MAX_DELAY`] is refused with
    /// [`crate::ErrorKind::InvalidOptions`].
    pub fn lease_from(
        &self,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Option<(String, Job)>> {
        Ok(self
            .lease_unless(visibility, wait, &|| false)?
            .map(|(i, job)| (self.queues[i].0.name(), job)))
    }

    /// What a worker sees of `job`, leased from queue `i`.
    fn delivery(&self, i: usize, job: Job) -> Delivery<Receipt> {
        delivery_named(&self.queues[i].0, job, self.names[i].clone())
    }

    /// Leases the next job by the weighted rule, with the index of the
    /// queue it came from; the wait ends early once `stop` is true (see
    /// `Queue::wake_stopping`).
    fn lease_unless(
        &self,
        visibility: Duration,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<(usize, Job)>> {
        crate::options::check_delay("a lease's visibility timeout", visibility)?;
        let vt = crate::clock::ms(visibility).max(1);
        let mut from = None;
        let mut pick = |st: &mut QueueState, now: Now| {
            Ok(self.pick(st, now, vt)?.map(|(i, job)| {
                from = Some(i);
                job
            }))
        };
        let ids = self.queue_ids();
        let job = self.first()?.dequeue_picking(&mut pick, wait, &ids, stop)?;
        Ok(job.zip(from).map(|(job, i)| (i, job)))
    }
}

impl Backend for MultiQueue {
    type Lease = Receipt;

    /// Enqueues into the first queue, whatever the weights; use a
    /// queue's own handle (`store.queue("reports")?.enqueue(..)`) to
    /// enqueue into another (see [`MultiQueue`]).
    fn enqueue(&self, payload: &[u8], opts: EnqueueOptions) -> Result<Enqueued> {
        self.first()?.enqueue_with(payload, opts)
    }

    fn lease(&self, visibility: Duration, wait: Duration) -> Result<Option<Delivery<Receipt>>> {
        Ok(self
            .lease_unless(visibility, wait, &|| false)?
            .map(|(i, job)| self.delivery(i, job)))
    }

    fn lease_until_stopped(
        &self,
        visibility: Duration,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Delivery<Receipt>>> {
        Ok(self
            .lease_unless(visibility, wait, stop)?
            .map(|(i, job)| self.delivery(i, job)))
    }

    fn wake_waiters(&self) {
        if let Ok(first) = self.first() {
            first.wake_stopping(&self.queue_ids());
        }
    }

    fn complete(&self, lease: &Receipt, result: Option<&[u8]>) -> Result<()> {
        self.first()?.complete(lease, result)
    }

    fn complete_batch(&self, items: &[(&Receipt, Option<&[u8]>)]) -> Vec<Result<()>> {
        match self.first() {
            Ok(q) => q.complete_batch(items),
            Err(e) => items
                .iter()
                .map(|_| Err(Error::new(e.kind(), e.to_string())))
                .collect(),
        }
    }

    fn retry(&self, lease: &Receipt, delay: Option<Duration>, error: &str) -> Result<()> {
        self.first()?.retry(lease, delay, error)
    }

    fn release(&self, lease: &Receipt, _error: &str) -> Result<()> {
        self.first()?.release(*lease)
    }

    fn fail(&self, lease: &Receipt, error: &str) -> Result<()> {
        Backend::fail(self.first()?, lease, error)
    }

    fn extend(&self, lease: &Receipt, visibility: Duration) -> Result<()> {
        Backend::extend(self.first()?, lease, visibility)
    }

    fn status(&self, id: u64) -> Result<JobStatus> {
        self.first()?.status(id)
    }

    /// Cancels job `id` in whichever of the queues it waits in: each
    /// refuses a job that is not its own with `NotFound`, so the first
    /// other answer (done, or `InFlight`) is the job's.
    fn cancel(&self, id: u64) -> Result<()> {
        let mut last = Err(Error::new(
            ErrorKind::InvalidOptions,
            "a MultiQueue needs at least one queue",
        ));
        for (q, _) in &self.queues {
            last = q.cancel(id);
            if !matches!(&last, Err(e) if e.kind() == ErrorKind::NotFound) {
                break;
            }
        }
        last
    }

    /// Fails as soon as one of the queues is closed (or poisoned): they
    /// are queues of one store, closed together.
    fn check_open(&self) -> Result<()> {
        self.queues.iter().try_for_each(|(q, _)| q.check_open())
    }
}

/// One turn in the weighted round: queue `queue`'s `k`-th of its `w`
/// turns, at `(2k + 1) / 2w` of the round, in round `round` (counted
/// from the last turn taken: 0 is its round, 1 the next).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Turn {
    queue: usize,
    k: u32,
    round: u8,
}

impl Turn {
    /// Queue `i`'s first turn after `last` (the round's first without
    /// one), its weight given by `weight`.
    fn after(last: Option<Turn>, i: usize, weight: impl Fn(usize) -> u32) -> Turn {
        let Some(last) = last else {
            return Turn {
                queue: i,
                k: 0,
                round: 0,
            };
        };
        let wi = u64::from(weight(i));
        // The smallest odd `m` with `m / 2wi` past the last turn's place
        // `(2k + 1) / 2w`: `m * w > (2k + 1) * wi`, or `==` for a queue
        // added after the last turn's (it goes after it on a tie).
        let (num, den) = (
            (2 * u64::from(last.k) + 1) * wi,
            u64::from(weight(last.queue)),
        );
        let q = num / den;
        let m = if i > last.queue && num % den == 0 && q % 2 == 1 {
            q
        } else {
            (q + 1) | 1
        };
        match u32::try_from((m - 1) / 2) {
            Ok(k) if u64::from(k) < wi => Turn {
                queue: i,
                k,
                round: 0,
            },
            _ => Turn {
                queue: i,
                k: 0,
                round: 1,
            },
        }
    }

    /// Whether this turn comes before `other` (both after the same last
    /// turn): by round, then place in the round, then the queue added
    /// first.
    fn before(self, other: Turn, weight: impl Fn(usize) -> u32) -> bool {
        let place = |t: Turn, w: usize| (2 * u64::from(t.k) + 1) * u64::from(weight(w));
        let (mine, theirs) = (place(self, other.queue), place(other, self.queue));
        (self.round, mine, self.queue) < (other.round, theirs, other.queue)
    }
}

/// Leases for the async pool: the weighted pick runs inline (it never
/// fsyncs); with nothing ready the task waits on the store's async
/// wakeups and the next due time, as `Queue::dequeue_async` does.
#[cfg(feature = "tokio")]
impl crate::worker::async_dequeue::AsyncBackend for MultiQueue {
    async fn lease_async(
        &self,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Option<Delivery<Receipt>>> {
        let first = self.first()?;
        let deadline = tokio::time::Instant::from_std(crate::clock::deadline(wait));
        let ids = self.queue_ids();
        let wakeups = first.async_wait_for(&ids);
        loop {
            // The epoch is taken before the look, so an enqueue between
            // the look and the wait wakes the wait.
            let since = wakeups.epoch();
            if let Some((i, job)) = self.lease_unless(visibility, Duration::ZERO, &|| false)? {
                return Ok(Some(self.delivery(i, job)));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let until = match first.next_due_in(&ids) {
                // A job due centuries ahead (a delay of `Duration::MAX`)
                // waits for the deadline.
                Some(due) => now
                    .checked_add(due.max(Duration::from_millis(1)))
                    .map_or(deadline, |at| deadline.min(at)),
                None => deadline,
            };
            tokio::select! {
                () = wakeups.changed(since) => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Turn;

    /// `n` turns taken one after another from `last`, every queue in
    /// `open` having a ready job at each (as `MultiQueue::pick` takes them).
    fn take(weights: &[u32], open: &[usize], mut last: Option<Turn>, n: usize) -> Vec<Turn> {
        let weight = |i: usize| weights[i];
        let mut out = Vec::new();
        for _ in 0..n {
            let next = open
                .iter()
                .map(|&i| Turn::after(last, i, weight))
                .reduce(|a, b| if b.before(a, weight) { b } else { a })
                .expect("a queue is open");
            out.push(next);
            last = Some(next);
        }
        out
    }

    /// Every window of `sum(weights of open)` turns gives each open queue
    /// exactly its weight, whatever turn (of any queue, open or not) was
    /// the last taken: what makes a `MultiQueue`'s windows exact again
    /// as soon as a queue comes back.
    #[test]
    fn every_window_of_a_round_gives_each_queue_its_weight() {
        let cases: &[&[u32]] = &[&[1], &[5, 1, 1], &[3, 1, 4], &[20, 1], &[2, 3, 7, 7]];
        for weights in cases {
            let all: Vec<usize> = (0..weights.len()).collect();
            let total: u32 = weights.iter().sum();
            let lasts = take(weights, &all, None, total as usize + 1);
            let half = all[..weights.len().div_ceil(2)].to_vec();
            for open in [all.clone(), half, vec![all.len() - 1]] {
                let w = open.iter().map(|&i| weights[i] as usize).sum::<usize>();
                for last in [None].into_iter().chain(lasts.iter().copied().map(Some)) {
                    let seq = take(weights, &open, last, 3 * w);
                    for window in seq.windows(w) {
                        for &i in &open {
                            let n = window.iter().filter(|t| t.queue == i).count();
                            assert_eq!(n, weights[i] as usize, "{weights:?} {open:?} {last:?}");
                        }
                    }
                }
            }
        }
    }
}
