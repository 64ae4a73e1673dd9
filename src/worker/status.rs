//! What became of a job, as a client polling by id sees it.

/// The state of one job, from [`crate::worker::Backend::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// Ready to be leased.
    Queued,
    /// Waiting for its due time (a delay or a retry's backoff).
    Delayed,
    /// Leased by a worker, on this attempt (1-based).
    InFlight {
        /// Which attempt is running.
        attempt: u32,
    },
    /// Finished, with the small result its handler returned, if any.
    Done {
        /// The handler's result, kept for the idempotency window.
        result: Option<Vec<u8>>,
    },
    /// In the dead letters.
    Dead,
    /// Never enqueued here, or finished so long ago it is forgotten.
    Unknown,
}
