//! The code a worker pool runs for each job.

use crate::worker::context::JobContext;
use crate::worker::outcome::Outcome;

/// Runs one attempt of a job and says what became of it.
///
/// Closures `Fn(&JobContext, &[u8]) -> R` with `R: Into<Outcome>` are
/// handlers; so is a [`crate::typed::Typed`] handler, which decodes the
/// payload first. A handler is shared by all the pool's workers. It may
/// panic: the pool catches the panic and counts a failed attempt.
pub trait Handler: Send + Sync + 'static {
    /// Runs the job whose payload is `payload`.
    fn handle(&self, ctx: &JobContext, payload: &[u8]) -> Outcome;
}

impl<F, R> Handler for F
where
    F: Fn(&JobContext, &[u8]) -> R + Send + Sync + 'static,
    R: Into<Outcome>,
{
    fn handle(&self, ctx: &JobContext, payload: &[u8]) -> Outcome {
        self(ctx, payload).into()
    }
}
