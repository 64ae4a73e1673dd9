//! One worker thread: lease, run the handler, settle, repeat.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::worker::backend::{Backend, Delivery};
use crate::worker::context::JobContext;
use crate::worker::counters::Count;
use crate::worker::outcome::Outcome;
use crate::worker::pool::{Active, Shared};

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
                let nap = wait.clamp(Duration::from_millis(1), shared.cfg.poll);
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
    shared.counters.add(Count::Leased);
    let (info, payload, lease) = delivery.into_parts();
    let lost = Arc::new(AtomicBool::new(false));
    let active = Active {
        id: info.id,
        lease,
        lost: lost.clone(),
    };
    if let Err(active) = shared.begin(index, active) {
        // The pool began stopping while this job was being leased.
        let why = "the worker pool shut down before the job started";
        settle_count(
            shared,
            shared.backend.release(&active.lease, why),
            Count::Released,
        );
        return;
    }
    let ctx = JobContext::in_pool(info, name.clone(), lost, shared.stop.flag());
    let (outcome, panicked) = {
        let _running = shared.counters.running();
        call_handler(shared, &ctx, &payload)
    };
    if panicked {
        shared.counters.add(Count::Panicked);
    }
    // `None`: shutdown released the job while the handler ran.
    if let Some(active) = shared.take(index) {
        settle(shared, index, &ctx, active.lease, outcome);
    }
    shared.end();
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

fn panic_text(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(the panic value is not text)".to_string()
    }
}

/// Records the outcome with the backend and counts it. A completion is
/// handed to the settler, which makes it durable in a batch with others
/// and counts it then; the worker goes on to its next job meanwhile.
fn settle<B: Backend>(
    shared: &Shared<B>,
    index: usize,
    ctx: &JobContext,
    lease: B::Lease,
    outcome: Outcome,
) {
    let backend = &shared.backend;
    match outcome {
        Outcome::Done(result) => {
            if let Err((lease, result)) = shared.settler.hand_over(index, lease, result) {
                // The settler is gone (shutting down): settle here.
                settle_count(
                    shared,
                    backend.complete(&lease, result.as_deref()),
                    Count::Done,
                );
            }
        }
        Outcome::Retry { error, after } => {
            // On the last attempt a retry sends the job to the dead letters.
            let counted = if ctx.is_last_attempt() {
                Count::Dead
            } else {
                Count::Retried
            };
            settle_count(shared, backend.retry(&lease, after, &error), counted);
        }
        Outcome::Fail(error) => {
            settle_count(shared, backend.fail(&lease, &error), Count::Dead);
        }
    }
}

fn settle_count<B: Backend>(shared: &Shared<B>, result: crate::Result<()>, counted: Count) {
    count_settled(shared, result.map_err(|e| e.kind()), counted);
}

/// Counts a settle: `counted` if it was recorded, `lost` if the lease was
/// gone, a settle error otherwise.
pub(crate) fn count_settled<B: Backend>(
    shared: &Shared<B>,
    result: std::result::Result<(), ErrorKind>,
    counted: Count,
) {
    match result {
        Ok(()) => shared.counters.add(counted),
        Err(ErrorKind::LeaseLost) => shared.counters.add(Count::Lost),
        Err(_) => shared.counters.add(Count::SettleErrors),
    }
}
