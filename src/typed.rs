//! Typed jobs: enqueue a value, receive the value in a handler.
//!
//! A [`Jobs<T>`] handle encodes each job as JSON (with `serde_json`) and a
//! [`Typed`] handler decodes it before calling your code. JSON is chosen
//! because jobs outlive deploys: a job enqueued by one version of a
//! program is often run by the next. JSON names its fields, so a new
//! field marked `#[serde(default)]` decodes from an old job, and a field
//! the new version dropped is ignored. Positional formats (bincode,
//! postcard) would misread or refuse such a job. See `docs/workers.md`.
//!
//! A payload that does not decode (a job written by an incompatible
//! version, or by hand) goes to the dead letters with the decode error;
//! it never panics a worker.
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use walq::typed::Jobs;
//! use walq::worker::{JobContext, WorkerPool};
//! use walq::{EnqueueOptions, Queue};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Resize {
//!     photo: u64,
//!     width: u32,
//! }
//!
//! # fn main() -> walq::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let q = Queue::open(dir.path())?;
//! let resizes = Jobs::<Resize>::new(q.clone());
//! resizes.enqueue(&Resize { photo: 7, width: 640 })?;
//! let again = EnqueueOptions::new().idempotency_key("photo-7-640");
//! resizes.enqueue_with(&Resize { photo: 7, width: 640 }, again)?;
//!
//! let pool = WorkerPool::builder(q.clone())
//!     .workers(2)
//!     .start_typed(|ctx: &JobContext, job: Resize| {
//!         println!("job {} resizes photo {} to {} px", ctx.id(), job.photo, job.width);
//!         Ok::<(), String>(())
//!     })?;
//! # let deadline = std::time::Instant::now() + Duration::from_secs(30);
//! # while pool.stats().done < 2 && std::time::Instant::now() < deadline {
//! #     std::thread::sleep(Duration::from_millis(5));
//! # }
//! let report = pool.shutdown(Duration::from_secs(5));
//! assert_eq!(report.stats.done, 2);
//! # Ok(()) }
//! ```

use std::any::type_name;
use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::options::EnqueueOptions;
use crate::queue::{Enqueued, Queue};
use crate::worker::{Backend, Handler, JobContext, Outcome, PoolBuilder, WorkerPool};

/// A handle that enqueues jobs of type `T` on a [`Backend`] (a [`Queue`]
/// by default). Cheap to clone if the backend is. On a
/// [`crate::worker::MultiQueue`] the jobs all go to its first queue:
/// see [`Jobs::new`].
pub struct Jobs<T, B: Backend = Queue> {
    backend: B,
    _type: PhantomData<fn(T) -> T>,
}

impl<T, B: Backend + Clone> Clone for Jobs<T, B> {
    fn clone(&self) -> Self {
        Jobs {
            backend: self.backend.clone(),
            _type: PhantomData,
        }
    }
}

impl<T, B: Backend> fmt::Debug for Jobs<T, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jobs<{}>", type_name::<T>())
    }
}

impl<T: Serialize + DeserializeOwned, B: Backend> Jobs<T, B> {
    /// Typed jobs on `backend`.
    ///
    /// On a [`crate::worker::MultiQueue`], every job goes to its first
    /// queue (see there); for jobs of one named queue, make the handle on
    /// that queue instead:
    /// `Jobs::<Report>::new(store.queue("reports")?)`.
    pub fn new(backend: B) -> Jobs<T, B> {
        Jobs {
            backend,
            _type: PhantomData,
        }
    }

    /// The backend the jobs go to.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Enqueues `job` and returns its id.
    pub fn enqueue(&self, job: &T) -> Result<u64> {
        Ok(self.enqueue_with(job, EnqueueOptions::new())?.id)
    }

    /// Enqueues `job` with a delay, an idempotency key or its own
    /// `max_attempts`.
    ///
    /// A job whose JSON would not decode as a `T` is refused with
    /// [`ErrorKind::InvalidOptions`] and the decode error, rather than
    /// enqueued for a worker to dead-letter: serde_json writes a NaN or
    /// infinite float as `null`, which no `f64` field decodes.
    pub fn enqueue_with(&self, job: &T, opts: EnqueueOptions) -> Result<Enqueued> {
        self.backend.enqueue(&encode_decodable(job)?, opts)
    }
}

/// [`encode`], checked to decode as a `T` again, as a worker will.
fn encode_decodable<T: Serialize + DeserializeOwned>(job: &T) -> Result<Vec<u8>> {
    let bytes = encode(job)?;
    match serde_json::from_slice::<T>(&bytes) {
        Ok(_) => Ok(bytes),
        Err(e) => Err(Error::new(
            ErrorKind::InvalidOptions,
            format!(
                "a {} would not decode from its JSON, so no worker could run it \
                 (serde_json writes a NaN or infinite float as null): {e}",
                type_name::<T>()
            ),
        )),
    }
}

/// The bytes a typed job is stored as (JSON).
///
/// Fails with [`ErrorKind::InvalidOptions`] for a value JSON cannot hold
/// (e.g. a map whose keys are not strings).
pub fn encode<T: Serialize>(job: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(job).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOptions,
            format!("a {} does not encode as JSON: {e}", type_name::<T>()),
        )
    })
}

/// Decodes a typed job's bytes. Fails with [`ErrorKind::InvalidOptions`]
/// and the decode error if they are not a `T`.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    decode_or_say_why(payload).map_err(|why| Error::new(ErrorKind::InvalidOptions, why))
}

/// Decodes, or says why not in words fit for a dead letter.
pub(crate) fn decode_or_say_why<T: DeserializeOwned>(
    payload: &[u8],
) -> std::result::Result<T, String> {
    serde_json::from_slice(payload)
        .map_err(|e| format!("payload does not decode as {}: {e}", type_name::<T>()))
}

/// A [`Handler`] that decodes each payload as a `T` and calls `F` with it;
/// a payload that does not decode goes to the dead letters with the
/// decode error. Made by [`typed`] or [`PoolBuilder::start_typed`].
pub struct Typed<T, F> {
    f: F,
    _type: PhantomData<fn(T)>,
}

/// Wraps a function of a decoded `T` as a [`Handler`].
pub fn typed<T, F, R>(f: F) -> Typed<T, F>
where
    T: DeserializeOwned + 'static,
    F: Fn(&JobContext, T) -> R + Send + Sync + 'static,
    R: Into<Outcome>,
{
    Typed {
        f,
        _type: PhantomData,
    }
}

impl<T, F, R> Handler for Typed<T, F>
where
    T: DeserializeOwned + 'static,
    F: Fn(&JobContext, T) -> R + Send + Sync + 'static,
    R: Into<Outcome>,
{
    fn handle(&self, ctx: &JobContext, payload: &[u8]) -> Outcome {
        match decode_or_say_why::<T>(payload) {
            Ok(job) => (self.f)(ctx, job).into(),
            Err(why) => Outcome::Fail(why),
        }
    }
}

impl<B: Backend> PoolBuilder<B> {
    /// Starts the workers with a handler of decoded `T` jobs.
    pub fn start_typed<T, F, R>(self, f: F) -> Result<WorkerPool<B>>
    where
        T: DeserializeOwned + 'static,
        F: Fn(&JobContext, T) -> R + Send + Sync + 'static,
        R: Into<Outcome>,
    {
        self.start_handler(typed(f))
    }
}
