//! One worker thread: lease, run the handler, settle, repeat.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::done::MAX_RESULT_LEN;
use crate::error::ErrorKind;
use crate::worker::backend::{Backend, Delivery};
use crate::worker::context::JobContext;
use crate::worker::counters::{Count, Counters};
use crate::worker::outcome::Outcome;
use crate::worker::pool::{Active, Shared};
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
        // A backend that panics in the lease counts a lease error: the
        // panic stops here, or it would end this worker (the pool one
        // short for good).
        let leased = catch_unwind(AssertUnwindSafe(|| {
            shared.backend.lease(shared.cfg.visibility, shared.cfg.poll)
        }))
        .unwrap_or_else(|_| Err(lease_panicked()));
        if !state.end() {
            // Given up by shutdown while leasing: a job leased now is not
            // counted, and its lease runs out (it is delivered again).
            break;
        }
        match leased {
            Ok(Some(delivery)) => run_one(shared, index, name, state, delivery),
            Ok(None) => give_back_token(shared),
            Err(e) if e.kind() == ErrorKind::Closed => break,
            Err(_) => {
                give_back_token(shared);
                shared.counters.add(Count::LeaseErrors);
                shared.stop.sleep(shared.cfg.poll);
            }
        }
    }
}

/// The error a lease that panicked counts as (a lease error). Shared with
/// the async pool.
pub(crate) fn lease_panicked() -> crate::Error {
    crate::Error::new(ErrorKind::Io, "the backend panicked in lease")
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

/// Runs one leased job and settles it.
fn run_one<B: Backend>(
    shared: &Shared<B>,
    index: usize,
    name: &Arc<str>,
    state: &ThreadState,
    delivery: Delivery<B::Lease>,
) {
    let (ctx, payload) = match shared.start(index, name, delivery) {
        Ok(started) => started,
        Err(active) => {
            // The pool began stopping while this job was being leased.
            release_unstarted(&shared.backend, &shared.counters, state, &active);
            return;
        }
    };
    let span = JobSpan::new(&shared.cfg.name, &ctx);
    let (outcome, panicked) = span.in_scope(|| {
        let _running = shared.counters.running();
        call_handler(shared, &ctx, &payload)
    });
    if panicked {
        shared.counters.add(Count::Panicked);
    }
    shared.mark_finished(index);
    let outcome = result_within_limit(outcome);
    span.outcome(&ctx, &outcome, panicked);
    if matches!(outcome, Outcome::Done(_)) {
        // Wait for room while the lease is in the slot, where the
        // heartbeat extends it.
        shared.settler.wait_room(index);
    }
    // `None`: shutdown released the job while the handler ran.
    if let Some(active) = shared.take(index) {
        let outcome = match outcome {
            // A completion goes to the settler, which makes it durable in a
            // batch with others and counts it then; this worker goes on to
            // its next job meanwhile.
            Outcome::Done(result) => {
                match shared.settler.hand_over(index, active, result) {
                    Ok(()) => None,
                    // The settler is gone (shutting down): settle here.
                    Err((lease, result)) => Some((lease, Outcome::Done(result))),
                }
            }
            other => Some((active.lease, other)),
        };
        if let Some((lease, outcome)) = outcome {
            let counted = settle(
                &shared.backend,
                &shared.counters,
                state,
                &ctx,
                &lease,
                outcome,
            );
            if matches!(counted, Some(Count::Lost)) {
                span.lease_lost();
            }
        }
    }
    shared.end();
}

/// A `Done` whose result is over [`MAX_RESULT_LEN`] becomes a `Fail`
/// that says so: the ack would be refused, the lease left to expire and
/// the job, which succeeded, run again on every attempt. Its side effects
/// happened once; the dead letter tells the developer to shrink the
/// result. Shared with the async pool.
pub(crate) fn result_within_limit(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Done(Some(result)) if result.len() > MAX_RESULT_LEN => Outcome::Fail(format!(
            "the handler returned Done with a result of {} bytes, over the {MAX_RESULT_LEN}-byte \
             limit of a job's result; the job is not run again",
            result.len()
        )),
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

/// Hands back a job leased as the pool began stopping, and counts it.
/// Shared with the async pool.
pub(crate) fn release_unstarted<B: Backend>(
    backend: &B,
    counters: &Counters,
    state: &ThreadState,
    active: &Active<B::Lease>,
) {
    let why = "the worker pool shut down before the job started";
    if !state.begin(BackendCall::Release, Some(active.id)) {
        // Given up by shutdown: no more calls; the lease runs out.
        counters.add(Count::SettleErrors);
        return;
    }
    // A backend that panics here counts a settle error (see `settle`).
    let released = catch_unwind(AssertUnwindSafe(|| backend.release(&active.lease, why)));
    if state.end() {
        match released {
            Ok(released) => {
                settle_count(counters, released, Count::Released);
            }
            Err(_) => counters.add(Count::SettleErrors),
        }
    }
}

/// Records the outcome with the backend and counts it; returns what was
/// counted, `None` if shutdown gave up on the call (`state`) while it
/// was blocked, and counted it. Once given up, no call is made: the job
/// is counted as a settle error, and its lease runs out. A backend that
/// panics in the call counts a settle error too (the job comes back when
/// its lease runs out): the panic stops here, so that the worker goes on
/// (a sync pool's thread would die, its job counted nowhere) and ends its
/// call (an async task's next settles would be refused). Shared with the
/// async pool.
pub(crate) fn settle<B: Backend>(
    backend: &B,
    counters: &Counters,
    state: &ThreadState,
    ctx: &JobContext,
    lease: &B::Lease,
    outcome: Outcome,
) -> Option<Count> {
    let (call, counted) = match &outcome {
        Outcome::Done(_) => (BackendCall::Complete, Count::Done),
        // On the last attempt a retry sends the job to the dead letters.
        Outcome::Retry { .. } if ctx.is_last_attempt() => (BackendCall::Retry, Count::Dead),
        Outcome::Retry { .. } => (BackendCall::Retry, Count::Retried),
        Outcome::Fail(_) => (BackendCall::Fail, Count::Dead),
    };
    if !state.begin(call, Some(ctx.id())) {
        counters.add(Count::SettleErrors);
        return Some(Count::SettleErrors);
    }
    let result = catch_unwind(AssertUnwindSafe(|| match outcome {
        Outcome::Done(result) => backend.complete(lease, result.as_deref()),
        Outcome::Retry { error, after } => backend.retry(lease, after, &error),
        Outcome::Fail(error) => backend.fail(lease, &error),
    }));
    if !state.end() {
        return None;
    }
    match result {
        Ok(result) => Some(settle_count(counters, result, counted)),
        Err(_) => {
            counters.add(Count::SettleErrors);
            Some(Count::SettleErrors)
        }
    }
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
