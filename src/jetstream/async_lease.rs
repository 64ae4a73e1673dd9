//! [`AsyncBackend`] for [`JetStream`]: the lease runs on the backend's
//! runtime and is awaited from the caller's, so an async pool on any tokio
//! runtime can lease without blocking a thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::jetstream::backend::JetStreamLease;
use crate::jetstream::setup::Inner;
use crate::jetstream::JetStream;
use crate::worker::{AsyncBackend, Delivery};

type Leased = Result<Option<Delivery<JetStreamLease>>>;

/// A lease under way on the backend's runtime. Dropped before it
/// finished, it gives back whatever the lease took (ready again at once,
/// the attempt given back, as for a released job: it never ran).
struct PendingLease {
    handle: Option<tokio::task::JoinHandle<Leased>>,
    inner: Arc<Inner>,
}

impl Future for PendingLease {
    type Output = Leased;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Leased> {
        let Some(handle) = self.handle.as_mut() else {
            return Poll::Ready(Err(Error::new(
                ErrorKind::Closed,
                "lease polled after it finished",
            )));
        };
        match Pin::new(handle).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(joined) => {
                self.handle = None;
                Poll::Ready(joined.unwrap_or_else(|e| {
                    Err(Error::new(
                        ErrorKind::Closed,
                        format!("JetStream lease task: {e}"),
                    ))
                }))
            }
        }
    }
}

impl Drop for PendingLease {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let inner = self.inner.clone();
            self.inner.runtime.spawn(async move {
                // Given back, its attempt too: the job never ran (a
                // counted retry sent a last attempt to the dead letters).
                if let Ok(Ok(Some(d))) = handle.await {
                    let _ = inner.release(d.lease(), "lease abandoned").await;
                }
            });
        }
    }
}

impl AsyncBackend for JetStream {
    fn lease_async(
        &self,
        visibility: Duration,
        wait: Duration,
    ) -> impl Future<Output = Leased> + Send {
        let inner = self.inner.clone();
        let task = inner.clone();
        PendingLease {
            handle: Some(
                self.rt
                    .spawn(async move { task.lease(visibility, wait).await }),
            ),
            inner,
        }
    }
}
