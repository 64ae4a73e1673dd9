//! The code an async worker pool runs for each job.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use serde::de::DeserializeOwned;

use crate::worker::context::JobContext;
use crate::worker::outcome::Outcome;

/// The boxed future of one attempt.
pub type JobFuture = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// Runs one attempt of a job as a future and says what became of it: the
/// async counterpart of [`crate::worker::Handler`].
///
/// Closures `Fn(JobContext, Vec<u8>) -> Fut` where `Fut` is a `Send`
/// future of an `R: Into<Outcome>` are async handlers (an `async move`
/// block in a closure, or an `async fn` taking those two arguments); so
/// is [`AsyncTyped`], which decodes the payload first. The context and
/// payload are owned, so the future is `'static` and can run as its own
/// task. A handler (or its future) may panic: the pool catches the panic
/// and counts a failed attempt.
pub trait AsyncHandler: Send + Sync + 'static {
    /// Starts the job whose payload is `payload`.
    fn handle(&self, ctx: JobContext, payload: Vec<u8>) -> JobFuture;
}

impl<F, Fut, R> AsyncHandler for F
where
    F: Fn(JobContext, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: Into<Outcome>,
{
    fn handle(&self, ctx: JobContext, payload: Vec<u8>) -> JobFuture {
        let fut = self(ctx, payload);
        Box::pin(async move { fut.await.into() })
    }
}

/// An [`AsyncHandler`] that decodes each payload as a `T` (JSON, as
/// [`crate::typed::Jobs`] wrote it) and calls `F` with it; a payload that
/// does not decode goes to the dead letters with the decode error. Made by
/// [`async_typed`] or `PoolBuilder::start_async_typed`.
pub struct AsyncTyped<T, F> {
    f: F,
    _type: PhantomData<fn(T)>,
}

/// Wraps an async function of a decoded `T` as an [`AsyncHandler`].
pub fn async_typed<T, F, Fut, R>(f: F) -> AsyncTyped<T, F>
where
    T: DeserializeOwned + 'static,
    F: Fn(JobContext, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: Into<Outcome>,
{
    AsyncTyped {
        f,
        _type: PhantomData,
    }
}

impl<T, F, Fut, R> AsyncHandler for AsyncTyped<T, F>
where
    T: DeserializeOwned + 'static,
    F: Fn(JobContext, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: Into<Outcome>,
{
    fn handle(&self, ctx: JobContext, payload: Vec<u8>) -> JobFuture {
        match crate::typed::decode_or_say_why::<T>(&payload) {
            Ok(job) => {
                let fut = (self.f)(ctx, job);
                Box::pin(async move { fut.await.into() })
            }
            Err(why) => Box::pin(async move { Outcome::Fail(why) }),
        }
    }
}
