//! A leased job and its receipt.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Proof of one lease on one job, for [`crate::Queue::ack`],
/// [`crate::Queue::nack`], [`crate::Queue::fail`] and
/// [`crate::Queue::extend`].
///
/// A receipt is valid while its lease is: once the lease expires (and the
/// job may be leased again by another worker), the receipt is refused with
/// [`crate::ErrorKind::LeaseLost`] and never acts on the newer lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Receipt {
    pub(crate) id: u64,
    pub(crate) token: u64,
}

impl Receipt {
    /// The job this receipt is for.
    pub fn job_id(&self) -> u64 {
        self.id
    }
}

/// A job leased from the queue.
///
/// A `Job` owns a copy of its payload (and key), taken when it was leased:
/// it holds no reference to the log, so keeping a `Job` pins no segment
/// file, its disk space or its memory map, and reading the payload can
/// never fault, whatever happens to the queue's files meanwhile.
///
/// ```
/// # fn main() -> walq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let q = walq::Queue::open(dir.path())?;
/// q.enqueue(b"resize image 17")?;
/// let job = q.dequeue()?.expect("a job is ready");
/// assert_eq!(job.payload(), b"resize image 17");
/// assert_eq!(job.attempt(), 1);
/// q.ack(job.receipt())?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Job {
    pub(crate) id: u64,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) enqueued_ms: u64,
    pub(crate) receipt: Receipt,
    pub(crate) key: Vec<u8>,
    pub(crate) payload: crate::payload::Payload,
    pub(crate) priority: crate::Priority,
    pub(crate) group: Vec<u8>,
    /// The error its last failed attempt gave, if any.
    pub(crate) last_error: Option<std::sync::Arc<str>>,
}

impl Job {
    /// The job id: unique, stable across redeliveries, never reused, even
    /// after a power cut (see [`crate::worker::JobContext::provider_key`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Which attempt this is (1 for the first delivery).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Attempts allowed before the job goes to the dead letters.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// When the job was enqueued, in milliseconds since the Unix epoch.
    pub fn enqueued_ms(&self) -> u64 {
        self.enqueued_ms
    }

    /// When the job was enqueued.
    pub fn enqueued_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.enqueued_ms)
    }

    /// The payload (a copy: nothing of the queue's files). The small
    /// jobs of one [`Queue::dequeue_batch`](crate::Queue::dequeue_batch)
    /// share one buffer of at most 64 KiB, which stays allocated while any
    /// of them is.
    pub fn payload(&self) -> &[u8] {
        self.payload.as_slice()
    }

    /// Takes the payload out of the job: without another copy, except for
    /// a job that shares its batch's buffer (see [`Job::payload`]).
    pub fn into_payload(self) -> Vec<u8> {
        self.payload.into_vec()
    }

    /// The idempotency key the job was enqueued with, if any.
    pub fn idempotency_key(&self) -> Option<&[u8]> {
        (!self.key.is_empty()).then_some(&self.key[..])
    }

    /// The priority level the job was enqueued with.
    pub fn priority(&self) -> crate::Priority {
        self.priority
    }

    /// The message group the job was enqueued with, if any.
    pub fn group(&self) -> Option<&[u8]> {
        (!self.group.is_empty()).then_some(&self.group[..])
    }

    /// The receipt of this lease.
    pub fn receipt(&self) -> Receipt {
        self.receipt
    }

    /// The error text the job's last failed attempt gave to
    /// [`crate::Queue::nack`] (or `fail`), if any: `None` on a first
    /// attempt and after attempts that failed without a text (see
    /// [`crate::Queue::last_error`]).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("enqueued_ms", &self.enqueued_ms)
            .field("payload_len", &self.payload.as_slice().len())
            .finish_non_exhaustive()
    }
}

impl From<&Job> for Receipt {
    fn from(job: &Job) -> Receipt {
        job.receipt
    }
}
