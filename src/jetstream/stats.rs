//! Counts from the streams' and the consumer's info.

use crate::error::Result;
use crate::jetstream::nats_err;
use crate::jetstream::setup::Inner;

/// What a [`crate::jetstream::JetStream`] queue holds, from the server's
/// stream and consumer info (one request each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JetStreamStats {
    /// Ready and not yet delivered (the consumer's `num_pending`).
    pub ready: u64,
    /// Delivered and not yet acknowledged (`num_ack_pending`).
    pub in_flight: u64,
    /// Messages waiting for their schedule (delays and retry backoffs).
    pub delayed: u64,
    /// Deliveries that were redeliveries (`num_redelivered`).
    pub redelivered: u64,
    /// Dead letters.
    pub dead: u64,
    /// Messages in the work-queue stream (ready, in flight and delayed).
    pub stream_messages: u64,
    /// Bytes of the work-queue stream.
    pub stream_bytes: u64,
    /// The server leading the work-queue stream's replicas, if known.
    pub leader: Option<String>,
}

impl Inner {
    pub(crate) async fn stats(&self) -> Result<JetStreamStats> {
        let work = self
            .work
            .get_info()
            .await
            .map_err(|e| nats_err(&format!("info of stream {}", self.cfg.stream()), e))?;
        let dead = self
            .dead
            .get_info()
            .await
            .map_err(|e| nats_err(&format!("info of stream {}", self.cfg.dead_stream()), e))?;
        let consumer = self
            .js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                self.cfg.consumer(),
                self.cfg.stream(),
            )
            .await
            .map_err(|e| {
                nats_err(
                    &format!(
                        "consumer {} of stream {}",
                        self.cfg.consumer(),
                        self.cfg.stream()
                    ),
                    e,
                )
            })?
            .info()
            .await
            .map_err(|e| nats_err(&format!("info of consumer {}", self.cfg.consumer()), e))?
            .clone();
        let in_flight = consumer.num_ack_pending as u64;
        Ok(JetStreamStats {
            ready: consumer.num_pending,
            in_flight,
            delayed: work
                .state
                .messages
                .saturating_sub(consumer.num_pending + in_flight),
            redelivered: consumer.num_redelivered as u64,
            dead: dead.state.messages,
            stream_messages: work.state.messages,
            stream_bytes: work.state.bytes,
            leader: work.cluster.and_then(|c| c.leader),
        })
    }
}
