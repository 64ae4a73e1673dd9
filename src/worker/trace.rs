//! A tracing span around each job a pool runs (feature `tracing`); without
//! the feature every call here compiles to nothing.
//!
//! The span is `walq.job` with fields `job.id`, `job.attempt`,
//! `job.max_attempts`, `pool` and `worker`. The sync pool enters it around
//! the handler call; the async pool instruments the handler's future with
//! it, so whatever the handler logs nests under its job. The outcome is an
//! event with the span as parent: `debug` for done, `warn` for a retry, a
//! dead letter or a panic, with the error text. A worker that stops
//! because the backend was closed is a `warn` event of its own.

use crate::worker::context::JobContext;
use crate::worker::outcome::Outcome;

/// The span of one attempt of one job.
pub(crate) struct JobSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl JobSpan {
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn new(pool: &str, ctx: &JobContext) -> JobSpan {
        JobSpan {
            #[cfg(feature = "tracing")]
            span: tracing::info_span!(
                "walq.job",
                job.id = ctx.id(),
                job.attempt = ctx.attempt(),
                job.max_attempts = ctx.max_attempts(),
                pool = pool,
                worker = ctx.worker(),
            ),
        }
    }

    /// Runs `f` inside the span.
    pub(crate) fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "tracing")]
        let _entered = self.span.enter();
        f()
    }

    /// `fut`, polled inside the span.
    #[cfg(feature = "tokio")]
    pub(crate) fn instrument<F: std::future::Future>(
        &self,
        fut: F,
    ) -> impl std::future::Future<Output = F::Output> {
        #[cfg(feature = "tracing")]
        return tracing::Instrument::instrument(fut, self.span.clone());
        #[cfg(not(feature = "tracing"))]
        fut
    }

    /// Records what the handler decided (before the job is settled).
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn outcome(&self, ctx: &JobContext, outcome: &Outcome, panicked: bool) {
        #[cfg(feature = "tracing")]
        {
            let span = &self.span;
            match outcome {
                Outcome::Done(_) => {
                    tracing::debug!(parent: span, outcome = "done", "job done");
                }
                Outcome::Retry { error, .. } if ctx.is_last_attempt() => {
                    tracing::warn!(parent: span, outcome = "dead", panicked, error = %error,
                        "job failed on its last attempt; it goes to the dead letters");
                }
                Outcome::Retry { error, after } => {
                    let after_ms = after.map(|d| d.as_millis() as u64);
                    tracing::warn!(parent: span, outcome = "retried", panicked, error = %error,
                        after_ms, "job failed; it will be retried");
                }
                Outcome::Fail(error) => {
                    tracing::warn!(parent: span, outcome = "dead", panicked, error = %error,
                        "job failed for good; it goes to the dead letters");
                }
            }
        }
    }

    /// Records that the outcome was refused: the lease had been lost.
    pub(crate) fn lease_lost(&self) {
        #[cfg(feature = "tracing")]
        tracing::warn!(parent: &self.span, outcome = "lost",
            "the job's lease was lost; its outcome was not recorded");
    }
}

/// A worker (or task) of pool `pool` stopped because the backend was
/// closed (a `warn` event; counted in `PoolStats::closed_exits` too).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn worker_closed(pool: &str, worker: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        pool,
        worker,
        "the backend was closed: this worker stops and leases nothing more"
    );
}

/// Job `id`, run by worker `index` of pool `pool`, ran past its job
/// timeout (a `warn` event; counted in `PoolStats::timed_out` too).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn job_timed_out(pool: &str, index: usize, id: u64, timeout: std::time::Duration) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        pool,
        worker = %format_args!("{pool}-{index}"),
        job.id = id,
        timeout_ms = timeout.as_millis() as u64,
        "the job ran past its timeout: its attempt is given up"
    );
}
