//! The settings of a [`crate::jetstream::JetStream`] backend.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::options::Backoff;

/// How a [`crate::jetstream::JetStream`] backend connects and what it
/// creates on the cluster. The defaults match walq's `Durability::Sync`
/// promise as far as the client can set it: file storage, three replicas
/// (an enqueue returns once a majority stored it); the servers must also
/// run with `jetstream { sync_interval: always }` (see `docs/scale-out.md`).
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    pub(crate) urls: String,
    pub(crate) name: String,
    pub(crate) replicas: usize,
    pub(crate) ack_wait: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) retention: Duration,
    pub(crate) max_ack_pending: i64,
    pub(crate) timeout: Duration,
}

impl JetStreamConfig {
    /// A queue called `name` (letters, digits, `-` and `_`) on the servers
    /// at `urls` (comma-separated, e.g. `nats://a:4222,nats://b:4222`).
    pub fn new(urls: impl Into<String>, name: impl Into<String>) -> JetStreamConfig {
        JetStreamConfig {
            urls: urls.into(),
            name: name.into(),
            replicas: 3,
            ack_wait: Duration::from_secs(30),
            max_attempts: 5,
            backoff: Backoff::default(),
            retention: Duration::from_secs(24 * 3600),
            max_ack_pending: 1000,
            timeout: Duration::from_secs(10),
        }
    }

    /// Replicas of every stream and bucket (default 3; 1 for a single
    /// server, which loses acknowledged jobs with its disk).
    pub fn replicas(mut self, n: usize) -> JetStreamConfig {
        self.replicas = n;
        self
    }

    /// The consumer's AckWait: how long a delivery stays leased without a
    /// heartbeat before the server hands it out again (default 30 s). Keep
    /// it at least the worker pool's `visibility`. 100 ms to
    /// [`crate::MAX_DELAY`] (365 days), and at most half the
    /// [`retention`](JetStreamConfig::retention); `connect` refuses
    /// another with [`ErrorKind::InvalidOptions`].
    pub fn ack_wait(mut self, wait: Duration) -> JetStreamConfig {
        self.ack_wait = wait;
        self
    }

    /// Attempts of a job enqueued without its own (default 5).
    pub fn max_attempts(mut self, n: u32) -> JetStreamConfig {
        self.max_attempts = n;
        self
    }

    /// Delay between attempts of a job whose retry names none.
    pub fn backoff(mut self, backoff: Backoff) -> JetStreamConfig {
        self.backoff = backoff;
        self
    }

    /// How long idempotency keys, job records (status, results) and
    /// `Nats-Msg-Id` duplicates are kept (default 24 h, as the embedded
    /// queue's dedup window). It is the stream's duplicate window and the
    /// job bucket's `max_age`: a job record not written for that long (a
    /// job delayed, or backing off, longer) ages out, and until the job
    /// is leased again its status reads `Unknown` and its key is free. Its
    /// attempt count survives (a retry's copy carries it), so its max
    /// attempts still hold, and a job delayed past it can still be
    /// cancelled (a retry backing off past it cannot: `NotFound`). A
    /// cancelled job's record ages out too: its ready copy, if it waits in
    /// the backlog longer than this after the cancel, is delivered as a
    /// job whose record aged out, and runs. Keep it above the longest
    /// backoff and the longest time a job waits in the backlog. At least
    /// twice [`JetStreamConfig::ack_wait`] (refused otherwise): a
    /// delivery comes back one AckWait after its lease began, and a
    /// record that had aged out by then would make a finished job (whose
    /// ack was lost) run again, and a crashed last attempt start over. At
    /// most [`crate::MAX_DELAY`] (365 days; `connect` refuses a longer one
    /// with [`ErrorKind::InvalidOptions`]).
    pub fn retention(mut self, retention: Duration) -> JetStreamConfig {
        self.retention = retention;
        self
    }

    /// Most deliveries leased and not settled at once, over all workers
    /// (the consumer's MaxAckPending, default 1000). Retries waiting
    /// for their backoff do not count against it.
    pub fn max_ack_pending(mut self, n: i64) -> JetStreamConfig {
        self.max_ack_pending = n;
        self
    }

    /// How long one request to the cluster may take (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> JetStreamConfig {
        self.timeout = timeout;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidOptions, msg));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return bad(format!(
                "queue name {:?} must be 1-64 letters, digits, '-' or '_'",
                self.name
            ));
        }
        // Queue `x_DEAD`'s stream would be queue `x`'s dead letters.
        if self.name.ends_with("_DEAD") {
            return bad(format!(
                "queue name {:?} must not end in \"_DEAD\": that names another queue's \
                 dead-letter stream",
                self.name
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return bad(format!("replicas {} is outside 1..=5", self.replicas));
        }
        if self.ack_wait < Duration::from_millis(100) {
            return bad(format!("ack_wait {:?} is under 100 ms", self.ack_wait));
        }
        // The embedded queue's bound on a lease or a delay: a longer one
        // would saturate or wrap where it is converted (to milliseconds
        // in the job record, to the server's nanoseconds).
        crate::options::check_delay("JetStreamConfig::ack_wait", self.ack_wait)?;
        crate::options::check_delay(
            "JetStreamConfig::retention (the streams' duplicate window)",
            self.retention,
        )?;
        if !(1..=crate::options::MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return bad(format!(
                "max_attempts {} is out of range",
                self.max_attempts
            ));
        }
        if self.retention < Duration::from_secs(1) || self.max_ack_pending < 1 {
            return bad("retention must be at least 1 s and max_ack_pending at least 1".into());
        }
        if self.retention < self.ack_wait.saturating_mul(2) {
            return bad(format!(
                "retention {:?} is under twice the ack_wait {:?}: a job's record could age \
                 out before its delivery comes back, and a finished job run again",
                self.retention, self.ack_wait
            ));
        }
        Ok(())
    }

    /// Refuses a lease (or an extension) longer than the consumer's
    /// AckWait: the server hands a delivery out again once its AckWait
    /// passes without an in-progress ack, whatever the lease says, so a
    /// longer lease would let a second worker run the job while the first
    /// still does.
    pub(crate) fn check_visibility(&self, visibility: Duration) -> Result<()> {
        if visibility <= self.ack_wait {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::InvalidOptions,
            format!(
                "a lease of {visibility:?} is longer than the AckWait {:?} of consumer {}: \
                 the server would hand the job to another worker while it runs; set \
                 JetStreamConfig::ack_wait to at least the worker pool's visibility",
                self.ack_wait,
                self.consumer()
            ),
        ))
    }

    /// The work-queue stream.
    pub(crate) fn stream(&self) -> String {
        format!("WALQ_{}", self.name)
    }

    /// The dead-letter stream.
    pub(crate) fn dead_stream(&self) -> String {
        format!("WALQ_{}_DEAD", self.name)
    }

    /// The job-record bucket.
    pub(crate) fn bucket(&self) -> String {
        format!("WALQ_{}_jobs", self.name)
    }

    /// The durable consumer.
    pub(crate) fn consumer(&self) -> String {
        format!("walq-{}", self.name)
    }

    /// The subject ready jobs are published on.
    pub(crate) fn jobs_subject(&self) -> String {
        format!("walq.{}.jobs", self.name)
    }

    /// The subject holding the schedule of copy `copy` of job `id`.
    pub(crate) fn sched_subject(&self, id: u64, copy: u32) -> String {
        format!("walq.{}.sched.{id}-{copy}", self.name)
    }

    /// The subject of job `id`'s dead letter (`None`: all of them).
    pub(crate) fn dead_subject(&self, id: Option<u64>) -> String {
        match id {
            Some(id) => format!("walq.{}.dead.{id}", self.name),
            None => format!("walq.{}.dead.*", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(cfg: JetStreamConfig) -> String {
        let e = cfg.validate().expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::InvalidOptions);
        e.to_string()
    }

    #[test]
    fn a_name_that_is_another_queues_dead_letter_stream_is_refused() {
        let text = refused(JetStreamConfig::new("nats://x", "mail_DEAD"));
        assert!(text.contains("_DEAD"), "{text}");
        assert!(JetStreamConfig::new("nats://x", "mail_DEADLINE")
            .validate()
            .is_ok());
    }

    #[test]
    fn a_retention_under_twice_the_ack_wait_is_refused() {
        let cfg = JetStreamConfig::new("nats://x", "mail").ack_wait(Duration::from_secs(5));
        let text = refused(cfg.clone().retention(Duration::from_secs(9)));
        assert!(text.contains("twice the ack_wait"), "{text}");
        assert!(cfg.retention(Duration::from_secs(10)).validate().is_ok());
        assert!(JetStreamConfig::new("nats://x", "mail").validate().is_ok());
    }

    #[test]
    fn an_ack_wait_or_retention_over_max_delay_is_refused() {
        use crate::options::MAX_DELAY;
        let cfg = JetStreamConfig::new("nats://x", "mail");
        let over = MAX_DELAY + Duration::from_secs(1);
        for ack_wait in [over, Duration::MAX] {
            let text = refused(cfg.clone().ack_wait(ack_wait).retention(Duration::MAX));
            assert!(text.contains("ack_wait"), "{text}");
            assert!(text.contains("MAX_DELAY"), "{text}");
        }
        for retention in [over, Duration::MAX] {
            let text = refused(cfg.clone().retention(retention));
            assert!(text.contains("retention"), "{text}");
            assert!(text.contains("MAX_DELAY"), "{text}");
        }
        // The longest of each that go together are taken.
        let longest = cfg.ack_wait(MAX_DELAY / 2).retention(MAX_DELAY);
        assert!(longest.validate().is_ok());
    }
}
