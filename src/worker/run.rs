//! One worker thread: lease, run the handler, settle, repeat.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::done::MAX_RESULT_LEN;
use crate::error::ErrorKind;
use crate::worker::backend::Backend;
use crate::worker::context::JobContext;
use crate::worker::counters::{Count, Counters};
use crate::worker::outcome::{Outcome, MAX_RETRY_DELAY};
use crate::worker::pool::Shared;
use crate::worker::shutdown::BackendCall;
use crate::worker::threads::ThreadState;
use crate::worker::trace::JobSpan;

/// The loop of worker `index`, until the pool stops leasing or shutdown
/// gives up on the worker (`state`).
pub(crate) fn run<B: Backend>(
    shared: &Shared<B>,
    index: usize,
    name: &Arc<str>,
    state: &ThreadState,
) {
    while !shared.stop.is_set() {
        if !take_token(shared) {
            break;
        }
        if !state.begin(BackendCall::Lease, None) {
            break;
        }
        // A backend that panics in the lease counts a lease error.
        // Its wait ends as soon as the pool stops (`begin_stop` wakes it).
        let stopped = || shared.stop.is_set();
        let leased = BackendCall::Lease.guarded(|| {
            (shared.backend).lease_until_stopped(shared.cfg.visibility, shared.cfg.poll, &stopped)
        });
        // A job leased is counted and put in this worker's slot as the
        // call ends: from then on, a shutdown that gives up on the worker
        // finds it there and counts it. A failed lease is counted then too.
        let started = state.end_with(|| match leased {
            Ok(delivery) => Ok(delivery.map(|d| shared.start(index, name, d))),
            Err(e) => {
                // A closed backend ends the worker: counted, so that a
                // pool whose queue was closed under it shows it.
                if e.kind() == ErrorKind::Closed {
                    shared.counters.add(Count::ClosedExits);
                    crate::worker::trace::worker_closed(&shared.cfg.name, name);
                } else {
                    shared.counters.add(Count::LeaseErrors);
                }
                Err(e)
            }
        });
        let Some(leased) = started else {
            // Given up by shutdown while leasing: a job leased now is not
            // counted, and its lease runs out (it is delivered again).
            break;
        };
        match leased {
            Ok(Some(started)) => run_one(shared, index, state, started),
            Ok(None) => give_back_token(shared),
            Err(e) if e.kind() == ErrorKind::Closed => break,
            Err(_) => {
                give_back_token(shared);
                shared.stop.sleep(shared.cfg.poll);
            }
        }
    }
}

/// Waits for the rate limiter, if any; false if the pool stopped first.
fn take_token<B: Backend>(shared: &Shared<B>) -> bool {
    let Some(bucket) = &shared.limiter else {
        return true;
    };
    loop {
        match bucket.try_take() {
            Ok(()) => return true,
            Err(wait) => {
                let _gauge = shared.counters.throttled();
                let nap = super::rate::nap(wait, shared.cfg.poll);
                if shared.stop.sleep(nap) {
                    return false;
                }
            }
        }
    }
}

fn give_back_token<B: Backend>(shared: &Shared<B>) {
    if let Some(bucket) = &shared.limiter {
        bucket.give_back();
    }
}

/// Runs one leased job (`None`: leased as the pool began stopping, to
/// release) and settles it.
fn run_one<B: Backend>(
    shared: &Shared<B>,
    index: usize,
    state: &ThreadState,
    started: Option<(JobContext, Vec<u8>)>,
) {
    let Some((ctx, payload)) = started else {
        release_unstarted(shared, state, index);
        return;
    };
    let span = JobSpan::new(&shared.cfg.name, &ctx);
    let (outcome, panicked) = span.in_scope(|| {
        let _running = shared.counters.running();
        call_handler(shared, &ctx, &payload)
    });
    if panicked {
        shared.counters.add(Count::Panicked);
    }
    // Past its job timeout (read as the job is marked finished, after
    // which the heartbeat no longer looks): the heartbeat stopped
    // extending the lease, which runs out and delivers the job again. This
    // late outcome is refused, as one whose lease was lost.
    if shared.finish_run(index, false, false) {
        refuse_late(shared, state, index, &span);
        return;
    }
    let outcome = within_limits(outcome);
    span.outcome(&ctx, &outcome, panicked);
    let outcome = match outcome {
        Outcome::Done(result) => {
            // Wait for room while the lease is in the slot, where the
            // heartbeat extends it.
            shared.settler.wait_room(index);
            hand_over(shared, state, index, result)
        }
        other => Some(other),
    };
    // `None`: handed over (or released or counted by shutdown).
    if let Some(outcome) = outcome {
        let counted = settle(shared, state, index, &ctx, outcome);
        if matches!(counted, Some(Count::Lost)) {
            span.lease_lost();
        }
    }
    shared.end();
}

/// Refuses the outcome of worker `index`'s job, which ran past its job
/// timeout: counted lost, no call made, its lease left to run out (the
/// attempt was counted when it was leased). Nothing if shutdown released
/// the job or gave up on the worker meanwhile (and counted it).
fn refuse_late<B: Backend>(shared: &Shared<B>, state: &ThreadState, index: usize, span: &JobSpan) {
    let counted = state.end_with(|| {
        let taken = shared.take(index).is_some();
        if taken {
            shared.counters.add(Count::Lost);
        }
        taken
    });
    if counted == Some(true) {
        span.lease_lost();
    }
    shared.end();
}

/// Hands worker `index`'s finished job to the settler, which makes it
/// durable in a batch with others and counts it then; this worker goes
/// on to its next job meanwhile. Returns the outcome to settle here if
/// the settler is gone (shutting down), `None` if handed over or if the
/// slot was empty (shutdown released the job while the handler ran, or
/// gave up on this worker and counted it).
fn hand_over<B: Backend>(
    shared: &Shared<B>,
    state: &ThreadState,
    index: usize,
    result: Option<Vec<u8>>,
) -> Option<Outcome> {
    // Taken from the slot and handed over in one step that shutdown
    // waits out: the job is always in one of the two places.
    state
        .end_with(|| {
            let active = shared.take(index)?;
            match shared.settler.hand_over(index, active, result) {
                Ok(()) => None,
                Err((active, result)) => {
                    shared.put_back(index, active);
                    Some(Outcome::Done(result))
                }
            }
        })
        .flatten()
}

/// An outcome over the limits of what a job keeps, made one the queue
/// takes. Shared with the async pool.
///
/// * A `Done` whose result is over [`MAX_RESULT_LEN`] becomes a `Fail`
///   that says so: the ack would be refused, the lease left to expire and
///   the job, which succeeded, run again on every attempt. Its side
///   effects happened once; the dead letter tells the developer to shrink
///   the result.
/// * A `Retry` whose delay is over [`MAX_RETRY_DELAY`] is retried after
///   the queue's backoff instead, its error saying so: such a delay
///   (`Duration::MAX`, a bad computation) parked the job as delayed until
///   the end of time, never run again nor dead-lettered (a review found
///   it). With the backoff the attempt counts as any failed one, and the
///   job reaches the dead letters after its last attempt.
pub(crate) fn within_limits(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Done(Some(result)) if result.len() > MAX_RESULT_LEN => Outcome::Fail(format!(
            "the handler returned Done with a result of {} bytes, over the {MAX_RESULT_LEN}-byte \
             limit of a job's result; the job is not run again",
            result.len()
        )),
        Outcome::Retry {
            error,
            after: Some(delay),
        } if delay > MAX_RETRY_DELAY => Outcome::Retry {
            error: format!(
                "{error} (the handler asked for a retry after {delay:?}, over the limit of \
                 {MAX_RETRY_DELAY:?}; retried after the queue's backoff instead)"
            ),
            after: None,
        },
        other => other,
    }
}

/// Runs the handler, turning a panic into a retry that carries the panic
/// message.
fn call_handler<B: Backend>(
    shared: &Shared<B>,
    ctx: &JobContext,
    payload: &[u8],
) -> (Outcome, bool) {
    match catch_unwind(AssertUnwindSafe(|| shared.handler.handle(ctx, payload))) {
        Ok(outcome) => (outcome, false),
        Err(panic) => (
            Outcome::retry(format!("handler panicked: {}", panic_text(&*panic))),
            true,
        ),
    }
}

pub(crate) fn panic_text(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(the panic value is not text)".to_string()
    }
}

/// Hands back worker `index`'s job, leased as the pool began stopping,
/// and counts it. Shared with the async pool.
pub(crate) fn release_unstarted<B: Backend>(shared: &Shared<B>, state: &ThreadState, index: usize) {
    let why = "the worker pool shut down before the job started";
    // `None`: shutdown gave up on this worker and counted the job.
    let Some((id, lease)) = shared.lease_of(index) else {
        return;
    };
    if !state.begin(BackendCall::Release, Some(id)) {
        // Given up by shutdown, which counted the job from the slot; the
        // lease runs out.
        return;
    }
    // A backend that panics here counts a settle error (see `settle`).
    let released = BackendCall::Release.guarded(|| shared.backend.release(&lease, why));
    state.end_with(|| {
        shared.take(index);
        settle_count(&shared.counters, released, Count::Released)
    });
}

/// Records worker `index`'s outcome with the backend and counts it;
/// returns what was counted, `None` if this worker counted nothing: the
/// slot was empty (shutdown released the job while the handler ran), or
/// shutdown gave up on the worker (before the call, or while it was
/// blocked) and counted the job itself, from the slot or the call. The
/// job stays in the slot until its outcome is counted, so the heartbeat
/// extends its lease during the call. Once given up, no call is made: the
/// lease runs out. A backend that panics in the call counts a settle
/// error (the job comes back when its lease runs out): the panic stops
/// here, so that the worker goes on (a sync pool's thread would die, its
/// job counted nowhere) and ends its call (an async task's next settles
/// would be refused). Shared with the async pool.
pub(crate) fn settle<B: Backend>(
    shared: &Shared<B>,
    state: &ThreadState,
    index: usize,
    ctx: &JobContext,
    outcome: Outcome,
) -> Option<Count> {
    let (call, counted) = match &outcome {
        Outcome::Done(_) => (BackendCall::Complete, Count::Done),
        // On the last attempt a retry sends the job to the dead letters.
        Outcome::Retry { .. } if ctx.is_last_attempt() => (BackendCall::Retry, Count::Dead),
        Outcome::Retry { .. } => (BackendCall::Retry, Count::Retried),
        Outcome::Fail(_) => (BackendCall::Fail, Count::Dead),
    };
    let (_, lease) = shared.lease_of(index)?;
    if !state.begin(call, Some(ctx.id())) {
        return None;
    }
    let backend = &shared.backend;
    let result = call.guarded(|| match outcome {
        Outcome::Done(result) => backend.complete(&lease, result.as_deref()),
        Outcome::Retry { error, after } => backend.retry(&lease, after, &error),
        Outcome::Fail(error) => backend.fail(&lease, &error),
    });
    state.end_with(|| {
        shared.take(index);
        settle_count(&shared.counters, result, counted)
    })
}

/// Counts a settle's result: `counted` if it was recorded; returns the
/// count it added.
pub(crate) fn settle_count(
    counters: &Counters,
    result: crate::Result<()>,
    counted: Count,
) -> Count {
    count_settled(counters, result.map_err(|e| e.kind()), counted)
}

/// Counts a settle: `counted` if it was recorded, `lost` if the lease was
/// gone, a settle error otherwise; returns the count it added.
pub(crate) fn count_settled(
    counters: &Counters,
    result: std::result::Result<(), ErrorKind>,
    counted: Count,
) -> Count {
    let which = match result {
        Ok(()) => counted,
        Err(ErrorKind::LeaseLost) => Count::Lost,
        Err(_) => Count::SettleErrors,
    };
    counters.add(which);
    which
}
