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
use crate::worker::pool::Shared;
use crate::worker::trace::JobSpan;

/// The loop of worker `index`, until the pool stops leasing.
pub(crate) fn run<B: Backend>(shared: &Shared<B>, index: usize, name: &Arc<str>) {
    while !shared.stop.is_set() {
        if !take_token(shared) {
            break;
        }
        match shared.backend.lease(shared.cfg.visibility, shared.cfg.poll) {
            Ok(Some(delivery)) => run_one(shared, index, name, delivery),
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
    delivery: Delivery<B::Lease>,
) {
    let (ctx, payload) = match shared.start(index, name, delivery) {
        Ok(started) => started,
        Err(active) => {
            // The pool began stopping while this job was being leased.
            let why = "the worker pool shut down before the job started";
            settle_count(
                &shared.counters,
                shared.backend.release(&active.lease, why),
                Count::Released,
            );
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
            let counted = settle(&shared.backend, &shared.counters, &ctx, &lease, outcome);
            if matches!(counted, Count::Lost) {
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

/// Records the outcome with the backend and counts it; returns what was
/// counted. Shared with the async pool.
pub(crate) fn settle<B: Backend>(
    backend: &B,
    counters: &Counters,
    ctx: &JobContext,
    lease: &B::Lease,
    outcome: Outcome,
) -> Count {
    match outcome {
        Outcome::Done(result) => settle_count(
            counters,
            backend.complete(lease, result.as_deref()),
            Count::Done,
        ),
        Outcome::Retry { error, after } => {
            // On the last attempt a retry sends the job to the dead letters.
            let counted = if ctx.is_last_attempt() {
                Count::Dead
            } else {
                Count::Retried
            };
            settle_count(counters, backend.retry(lease, after, &error), counted)
        }
        Outcome::Fail(error) => settle_count(counters, backend.fail(lease, &error), Count::Dead),
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
