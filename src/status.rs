//! Job status: what became of a job, for clients that hold its id.
//!
//! Derived, in this order of precedence, from the live state (queued,
//! delayed, blocked behind its group, in flight), the dead letters, and then, for an id below the
//! next id that is neither live nor dead, the completion file
//! (`done.rec`, see `done`): a result recorded inside the window, a purge
//! marker, "expired" at or below the horizon of dropped markers, or else
//! plain "done" (ids are never reused, so a finished job needs no record
//! of its own).

/// What became of a job, as told by [`crate::Queue::status`].
///
/// Serializes (with serde) as an object tagged by `"status"`, for example
/// `{"status":"in_flight","attempt":2,"lease_expires_ms":1700000030000}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobStatus {
    /// Waiting and ready: the next dequeue may deliver it.
    Queued {
        /// Attempts made so far (nonzero for a job waiting for a retry).
        attempts: u32,
    },
    /// Waiting until `due_ms` (a delay or a retry backoff).
    Delayed {
        /// When it becomes ready (ms since the epoch).
        due_ms: u64,
        /// Attempts made so far.
        attempts: u32,
    },
    /// Due, but waiting behind an older job of its message group
    /// ([`crate::EnqueueOptions::group`]) that has not finished: no
    /// dequeue delivers it before that job is acked, dead-lettered or
    /// cancelled. (One that also waits for a delay or backoff of its own
    /// reads `Delayed` until then.) [`crate::Stats`] counts it as delayed.
    Blocked {
        /// Attempts made so far.
        attempts: u32,
    },
    /// Leased to a worker.
    InFlight {
        /// The attempt under way (1 for the first delivery).
        attempt: u32,
        /// When the lease runs out unless extended.
        lease_expires_ms: u64,
    },
    /// Completed (acked). A result given to
    /// [`crate::Queue::ack_with_result`] is kept for the dedup window.
    Done {
        /// When it completed, if a completion record is still kept.
        finished_ms: Option<u64>,
        /// The handler's result, if one was recorded and is still kept.
        result: Option<Vec<u8>>,
    },
    /// In the dead letters.
    Dead {
        /// Attempts made.
        attempts: u32,
        /// When it was dead-lettered (ms since the epoch).
        dead_ms: u64,
        /// The last error text.
        error: String,
    },
    /// Removed without completing: a dead letter that was purged, or a
    /// job cancelled while it waited ([`crate::Queue::cancel`]).
    Purged {
        /// When it was purged or cancelled (ms since the epoch).
        purged_ms: u64,
    },
    /// Finished long ago, and whether it completed or was removed is no
    /// longer known: more than [`crate::MAX_PURGE_MARKERS`] jobs were
    /// cancelled or purged since, and the oldest of their markers were
    /// dropped to keep the completion file bounded. Only a job at or below
    /// the highest id whose marker was dropped, and without a result still
    /// kept, reads this way; a queue that never cancels or purges that
    /// many jobs never reports it.
    Expired,
    /// No job with this id was ever enqueued here.
    Unknown,
}

/// A job's state as the queue's live state sees it (`QueueState::live_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStatus {
    /// Fresh, or waiting with its due time passed.
    Ready {
        /// Attempts made so far.
        attempts: u32,
    },
    /// Waiting for `due_ms`.
    Delayed {
        /// When it becomes ready.
        due_ms: u64,
        /// Attempts made so far.
        attempts: u32,
    },
    /// Due, but waiting behind an older job of its message group.
    Blocked {
        /// Attempts made so far.
        attempts: u32,
    },
    /// Leased.
    InFlight {
        /// The attempt under way.
        attempt: u32,
        /// The lease deadline.
        lease_expires_ms: u64,
        /// The lease token (matches a current receipt).
        token: u64,
    },
    /// In the dead letters.
    Dead,
    /// Issued, and neither live nor dead: finished (acked or purged).
    Finished,
    /// Never issued.
    NeverIssued,
}
