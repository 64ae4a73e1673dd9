//! The connection, the streams, consumer and bucket, and the record and
//! publish helpers every operation uses.

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::ServerAddr;

use crate::error::{Error, ErrorKind, Result};
use crate::jetstream::config::JetStreamConfig;
use crate::jetstream::headers::JobHeaders;
use crate::jetstream::nats_err;
use crate::jetstream::record::{now_ms, rfc3339_ceil, Record};

/// What a connected backend holds.
pub(crate) struct Inner {
    pub(crate) cfg: JetStreamConfig,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) work: stream::Stream,
    pub(crate) dead: stream::Stream,
    pub(crate) consumer: consumer::PullConsumer,
    pub(crate) kv: kv::Store,
    /// The backend's own runtime (this struct's futures run on it).
    pub(crate) runtime: tokio::runtime::Handle,
    /// The last listing of the dead letters (see `dead_letter_ids`).
    pub(crate) dead_listing: crate::jetstream::dead_letters::Listing,
    /// The queue's name (`cfg.name`), shared by every delivery
    /// (`JobContext::queue`).
    pub(crate) queue_name: std::sync::Arc<str>,
    /// The scope of the keys deliveries give outside services
    /// (`JobContext::provider_key`): the work stream's name and creation
    /// time ([`provider_scope`]).
    pub(crate) provider_scope: std::sync::Arc<str>,
}

/// The outcome of a compare-and-set on a record.
pub(crate) enum Cas {
    /// Written; the new revision.
    Written(u64),
    /// The record changed since the revision named.
    Stale,
}

impl Inner {
    pub(crate) async fn connect(cfg: JetStreamConfig) -> Result<Inner> {
        let addrs = cfg
            .urls
            .split(',')
            .map(|u| u.trim().parse::<ServerAddr>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| nats_err(&format!("server list {:?}", cfg.urls), e))?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(cfg.timeout)
            .request_timeout(Some(cfg.timeout))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(addrs)
            .await
            .map_err(|e| nats_err(&format!("connect to {}", cfg.urls), e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.timeout)
            .build(client.clone());
        // Created, or, when it exists, brought to this configuration's
        // AckWait, MaxAckPending and retention (the streams' duplicate
        // window, the bucket's max age): kept as they were created, they
        // would silently break what this configuration promises (a lease
        // handed to a second worker while its handler runs, a key
        // forgotten early). Anything else an operator set stays.
        let work = js
            .get_or_create_stream(work_stream(&cfg))
            .await
            .map_err(|e| nats_err(&format!("create stream {}", cfg.stream()), e))?;
        keep_retention(&js, &work, cfg.retention, false).await?;
        let dead = js
            .get_or_create_stream(dead_stream(&cfg))
            .await
            .map_err(|e| nats_err(&format!("create stream {}", cfg.dead_stream()), e))?;
        keep_retention(&js, &dead, cfg.retention, false).await?;
        let mut consumer = work
            .get_or_create_consumer(&cfg.consumer(), consumer_config(&cfg))
            .await
            .map_err(|e| nats_err(&format!("create consumer {}", cfg.consumer()), e))?;
        let held = &consumer.cached_info().config;
        if held.ack_wait != cfg.ack_wait || held.max_ack_pending != cfg.max_ack_pending {
            consumer = work
                .update_consumer(consumer_config(&cfg))
                .await
                .map_err(|e| nats_err(&format!("update consumer {}", cfg.consumer()), e))?;
        }
        let kv = match js.get_key_value(cfg.bucket()).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(bucket_config(&cfg))
                .await
                .map_err(|e| nats_err(&format!("create bucket {}", cfg.bucket()), e))?,
        };
        keep_retention(&js, &kv.stream, cfg.retention, true).await?;
        let created = work.cached_info().created.unix_timestamp_nanos();
        let inner = Inner {
            queue_name: cfg.name.as_str().into(),
            provider_scope: provider_scope(&cfg.stream(), created).into(),
            cfg,
            client,
            js,
            work,
            dead,
            consumer,
            kv,
            runtime: tokio::runtime::Handle::current(),
            dead_listing: Default::default(),
        };
        inner.wait_ready().await?;
        Ok(inner)
    }

    /// Waits until the bucket and both streams answer: a stream just created has
    /// its replicas elect a leader first, and calls made before that fail.
    async fn wait_ready(&self) -> Result<()> {
        let deadline = tokio::time::Instant::from_std(crate::clock::deadline(self.cfg.timeout));
        loop {
            let probe = match self.kv.entry("0").await {
                Ok(_) => match self.work.get_info().await {
                    Ok(_) => self
                        .dead
                        .get_info()
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            match probe {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(nats_err(
                        &format!("bucket {} not ready", self.cfg.bucket()),
                        e,
                    ))
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    /// Job `id`'s record and its revision, read from the leader of the
    /// bucket's stream (`STREAM.MSG.GET`).
    ///
    /// Not `kv::Store::entry`: a KV bucket always allows direct gets,
    /// which any replica answers, with no read-after-write. A replica
    /// catching up after a restart answered with a record older than an
    /// acknowledged `complete`, and `status` said in flight for a job
    /// already done (CI, `jetstream_faults`; nats-server turns direct
    /// gets off in its own tests for the same reason, nats-server#6947).
    /// The reads a compare-and-set follows were safe either way (a stale
    /// revision fails the CAS, and the caller reads again).
    pub(crate) async fn record(&self, id: u64) -> Result<Option<(Record, u64)>> {
        let subject = format!("{}{id}", self.kv.prefix);
        let msg = match self
            .kv
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(msg) => msg,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(None)
            }
            Err(e) => return Err(nats_err(&format!("read record of job {id}"), e)),
        };
        // A delete, a purge or an expiry marker: no record.
        let op = msg.headers.get("KV-Operation").map(|v| v.as_str());
        let marker = msg.headers.get("Nats-Marker-Reason").is_some();
        if !matches!(op, None | Some("PUT")) || marker {
            return Ok(None);
        }
        // Bytes that are no record are an error, not an absent record: the
        // lease would try to create one, find it taken and read again, for
        // ever.
        match Record::decode(&msg.payload) {
            Some(rec) => Ok(Some((rec, msg.sequence))),
            None => Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "record of job {id} in bucket {} (revision {}, {} bytes) is not a walq job record",
                    self.cfg.bucket(),
                    msg.sequence,
                    msg.payload.len()
                ),
            )),
        }
    }

    /// Creates job `id`'s record; `Stale` if it exists.
    pub(crate) async fn create(&self, id: u64, rec: &Record) -> Result<Cas> {
        match self.kv.create(id.to_string(), rec.encode().into()).await {
            Ok(rev) => Ok(Cas::Written(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists || lost_race(&e) => {
                Ok(Cas::Stale)
            }
            Err(e) => Err(nats_err(&format!("create record of job {id}"), e)),
        }
    }

    /// Replaces job `id`'s record if it is still at `revision`.
    pub(crate) async fn cas(&self, id: u64, rec: &Record, revision: u64) -> Result<Cas> {
        match self
            .kv
            .update(id.to_string(), rec.encode().into(), revision)
            .await
        {
            Ok(rev) => Ok(Cas::Written(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision || lost_race(&e) => {
                Ok(Cas::Stale)
            }
            Err(e) => Err(nats_err(&format!("update record of job {id}"), e)),
        }
    }

    /// Publishes copy `h.copy` of a job, ready at `due_ms` (a message
    /// schedule when that is in the future), and waits for the stream to
    /// store it. The `Nats-Msg-Id` makes a second publish of the same copy
    /// (immediate or scheduled) a no-op inside the duplicate window.
    pub(crate) async fn publish_copy(
        &self,
        h: &JobHeaders,
        payload: &[u8],
        due_ms: u64,
    ) -> Result<()> {
        let mut headers = h.to_map();
        // On a schedule too: a second schedule on the copy's subject
        // replaces the first, so a duplicate enqueue of a delayed job (which
        // publishes its copy 0 again, see `duplicate`) would put its own
        // payload in place of the job's.
        headers.insert("Nats-Msg-Id", format!("walq-{}-{}", h.id, h.copy).as_str());
        let subject = if due_ms > now_ms() {
            headers.insert(
                "Nats-Schedule",
                format!("@at {}", rfc3339_ceil(due_ms)).as_str(),
            );
            headers.insert("Nats-Schedule-Target", self.cfg.jobs_subject().as_str());
            self.cfg.sched_subject(h.id, h.copy)
        } else {
            self.cfg.jobs_subject()
        };
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload.to_vec().into())
            .headers(headers);
        self.js
            .send_publish(subject, msg)
            .await
            .map_err(|e| nats_err(&format!("publish job {}", h.id), e))?
            .await
            .map_err(|e| nats_err(&format!("store job {}", h.id), e))?;
        Ok(())
    }

    /// Acknowledges a delivery (removes it from the work queue) and waits
    /// for the server's confirmation. A failure is not an error of the
    /// caller: the job's record already says what happened, and a
    /// redelivery of a settled job is acknowledged and skipped.
    pub(crate) async fn ack(&self, reply: &str) {
        let _ = self.client.request(reply.to_string(), "+ACK".into()).await;
    }
}

/// Sets an existing stream's duplicate window (and, for the job bucket's
/// stream, its max age) to `retention` where it differs; the rest of its
/// configuration stays.
async fn keep_retention(
    js: &jetstream::Context,
    stream: &stream::Stream,
    retention: std::time::Duration,
    bucket: bool,
) -> Result<()> {
    let mut config = stream.cached_info().config.clone();
    let name = config.name.clone();
    let before = (config.duplicate_window, config.max_age);
    if bucket {
        config.max_age = retention;
        // The window may not outlast the max age.
        config.duplicate_window = config.duplicate_window.min(retention);
    } else {
        config.duplicate_window = retention;
    }
    if (config.duplicate_window, config.max_age) != before {
        js.update_stream(config)
            .await
            .map_err(|e| nats_err(&format!("set the retention of stream {name}"), e))?;
    }
    Ok(())
}

/// The scope of a stream's provider keys: `js` and 16 hex digits, the
/// 64-bit FNV-1a hash of the stream's name, a zero byte and its creation
/// time (ns since the epoch, i128 little-endian), so two streams (of one
/// cluster or two), and a stream deleted and made again, hand an outside
/// service different keys for their job ids, as two stores do. The bytes
/// hashed are fixed here (not a type's `Debug`), so the scope of a stream
/// stays the same across walq versions.
pub(crate) fn provider_scope(stream: &str, created_ns: i128) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = stream.bytes().chain([0]).chain(created_ns.to_le_bytes());
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("js{hash:016x}")
}

fn work_stream(cfg: &JetStreamConfig) -> stream::Config {
    stream::Config {
        name: cfg.stream(),
        subjects: vec![cfg.jobs_subject(), format!("walq.{}.sched.*", cfg.name)],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        duplicate_window: cfg.retention,
        allow_message_schedules: true,
        ..Default::default()
    }
}

fn dead_stream(cfg: &JetStreamConfig) -> stream::Config {
    stream::Config {
        name: cfg.dead_stream(),
        subjects: vec![cfg.dead_subject(None)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        duplicate_window: cfg.retention,
        // A job dead again after a redrive replaces its old letter.
        max_messages_per_subject: 1,
        ..Default::default()
    }
}

fn consumer_config(cfg: &JetStreamConfig) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(cfg.consumer()),
        filter_subject: cfg.jobs_subject(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: cfg.ack_wait,
        max_deliver: -1,
        max_ack_pending: cfg.max_ack_pending,
        ..Default::default()
    }
}

fn bucket_config(cfg: &JetStreamConfig) -> kv::Config {
    kv::Config {
        bucket: cfg.bucket(),
        history: 1,
        max_age: cfg.retention,
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        ..Default::default()
    }
}

/// Whether a compare-and-set failed because another write to the key won:
/// on a clustered stream, one that loses while the other write is still
/// being applied gets error 10164 ("wrong last sequence", constant form),
/// which the client does not map to `WrongLastRevision` (10071). Read
/// from the error's sources; before, such a loss was an I/O error (a
/// review saw 19 of 60 leases racing a redrive fail so, each delivery
/// then held for a whole AckWait).
fn lost_race(e: &(dyn std::error::Error + 'static)) -> bool {
    const WRONG_LAST_SEQUENCE: [u64; 2] = [10071, 10164];
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(js) = err.downcast_ref::<jetstream::Error>() {
            if WRONG_LAST_SEQUENCE.contains(&js.error_code().0) {
                return true;
            }
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod scope_tests {
    use super::provider_scope;

    #[test]
    fn the_scope_is_fixed_and_tells_streams_and_lives_apart() {
        // Pinned: a change of these bytes changes every JetStream job's
        // provider key.
        assert_eq!(provider_scope("WALQ_mail", 0), "jsec1d730258b61db4");
        let a = provider_scope("WALQ_mail", 1_765_000_000_000_000_000);
        assert_ne!(a, provider_scope("WALQ_mails", 1_765_000_000_000_000_000));
        assert_ne!(a, provider_scope("WALQ_mail", 1_765_000_000_000_000_001));
        assert_eq!(a.len(), 18);
    }
}
