//! A [`Backend`] over several queues of one store, with weights: a worker
//! pool that serves them all (docs/design-queues.md, "Worker pools over
//! several queues").
//!
//! The queue a lease comes from is chosen by smooth weighted round robin
//! over the queues that have a ready job: each pick adds every such
//! queue's weight to its credit, takes the queue of the highest credit
//! (the first added on a tie) and takes the sum of their weights off it.
//! A queue with no ready job is left out of the pick (its credit does not
//! move), so an empty queue costs nothing and a busy one cannot
//! starve the others beyond its weight: while every queue has ready
//! jobs, any `W` consecutive leases (`W` the sum of the weights) give
//! each queue exactly its weight. The picks run under the store's lock,
//! and a lease waits on the store's wakeups, never polling.

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
use crate::worker::queue_backend::delivery_of;

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
#[derive(Debug)]
pub struct MultiQueue {
    store: Store,
    queues: Vec<(Queue, u32)>,
    /// Each queue's credit in the round robin.
    credit: Mutex<Vec<i64>>,
}

impl MultiQueue {
    /// No queue yet: add them with [`MultiQueue::queue`].
    pub fn new(store: &Store) -> MultiQueue {
        MultiQueue {
            store: store.clone(),
            queues: Vec::new(),
            credit: Mutex::new(Vec::new()),
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
        self.queues.push((q, weight));
        self.credit.lock().push(0);
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
        let mut credit = self.credit.lock();
        let weight = |i: usize| i64::from(self.queues[i].1);
        let mut open = Vec::with_capacity(self.queues.len());
        for (i, (q, _)) in self.queues.iter().enumerate() {
            if st.has_ready(q.queue_id(), now)? {
                open.push(i);
            }
        }
        while !open.is_empty() {
            let total: i64 = open.iter().map(|&i| weight(i)).sum();
            for &i in &open {
                credit[i] += weight(i);
            }
            let mut best = open[0];
            for &i in &open[1..] {
                if credit[i] > credit[best] {
                    best = i;
                }
            }
            let queue = self.queues[best].0.queue_id();
            let job = st.dequeue(queue, now, vt);
            match job {
                Ok(Some(job)) => {
                    credit[best] -= total;
                    return Ok(Some((best, job)));
                }
                other => {
                    // Found empty after all (its next job was damaged and
                    // dead-lettered), or failing: the pick is made again
                    // without it.
                    for &i in &open {
                        credit[i] -= weight(i);
                    }
                    other?;
                    open.retain(|&i| i != best);
                }
            }
        }
        Ok(None)
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
        self.lease_from_unless(visibility, wait, &|| false)
    }

    /// [`MultiQueue::lease_from`], whose wait ends early once `stop` is
    /// true (see `Queue::wake_stopping`).
    fn lease_from_unless(
        &self,
        visibility: Duration,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<(String, Job)>> {
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
        Ok(job.zip(from).map(|(job, i)| (self.queues[i].0.name(), job)))
    }
}

impl Backend for MultiQueue {
    type Lease = Receipt;

    fn enqueue(&self, payload: &[u8], opts: EnqueueOptions) -> Result<Enqueued> {
        self.first()?.enqueue_with(payload, opts)
    }

    fn lease(&self, visibility: Duration, wait: Duration) -> Result<Option<Delivery<Receipt>>> {
        let first = self.first()?;
        Ok(self
            .lease_from(visibility, wait)?
            .map(|(_, job)| delivery_of(first, job)))
    }

    fn lease_until_stopped(
        &self,
        visibility: Duration,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Delivery<Receipt>>> {
        let first = self.first()?;
        Ok(self
            .lease_from_unless(visibility, wait, stop)?
            .map(|(_, job)| delivery_of(first, job)))
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
            if let Some((_, job)) = self.lease_from(visibility, Duration::ZERO)? {
                return Ok(Some(delivery_of(first, job)));
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
