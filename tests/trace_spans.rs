//! With the `tracing` feature, each job a pool runs (sync or async) is
//! inside a `walq.job` span carrying its id, attempt, max attempts and the
//! pool's name, and its outcome is an event in that span. A hand-written
//! subscriber captures spans and events; the tests fail if the span is
//! missing, lacks a field, or is not current inside the handler.
#![cfg(feature = "tracing")]

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use walq::worker::{JobContext, Outcome, WorkerPool};
use walq::{Options, Queue};

#[derive(Debug, Clone)]
struct SpanRec {
    name: &'static str,
    fields: HashMap<String, String>,
}

#[derive(Debug, Clone)]
struct EventRec {
    /// The explicit parent, or else the span current when it was emitted.
    span: Option<u64>,
    level: Level,
    fields: HashMap<String, String>,
}

#[derive(Default)]
struct Store {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, SpanRec>>,
    events: Mutex<Vec<EventRec>>,
}

thread_local! {
    static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

struct Capture(Arc<Store>);

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let rec = SpanRec {
            name: attrs.metadata().name(),
            fields,
        };
        self.0.spans.lock().unwrap().insert(id, rec);
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(rec) = self.0.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut rec.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let span = match event.parent() {
            Some(id) => Some(id.into_u64()),
            None if event.is_contextual() => STACK.with(|s| s.borrow().last().copied()),
            None => None,
        };
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.events.lock().unwrap().push(EventRec {
            span,
            level: *event.metadata().level(),
            fields,
        });
    }

    fn enter(&self, span: &Id) {
        STACK.with(|s| s.borrow_mut().push(span.into_u64()));
    }

    fn exit(&self, span: &Id) {
        STACK.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(at) = s.iter().rposition(|id| *id == span.into_u64()) {
                s.remove(at);
            }
        });
    }
}

/// The one global subscriber of this test binary (pools run on threads
/// and tasks of their own, so a thread-local default would not see them).
fn store() -> Arc<Store> {
    static STORE: OnceLock<Arc<Store>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let store = Arc::new(Store::default());
            tracing::subscriber::set_global_default(Capture(store.clone()))
                .expect("the only global subscriber");
            store
        })
        .clone()
}

/// The `walq.job` spans of pool `pool`, by job id and attempt.
fn job_spans(store: &Store, pool: &str) -> HashMap<(u64, u32), (u64, SpanRec)> {
    let spans = store.spans.lock().unwrap();
    spans
        .iter()
        .filter(|(_, s)| {
            s.name == "walq.job" && s.fields.get("pool").map(String::as_str) == Some(pool)
        })
        .map(|(id, s)| {
            let job: u64 = s.fields["job.id"].parse().unwrap();
            let attempt: u32 = s.fields["job.attempt"].parse().unwrap();
            ((job, attempt), (*id, s.clone()))
        })
        .collect()
}

/// The outcome event of a span.
fn outcome_of(store: &Store, span: u64) -> EventRec {
    let events = store.events.lock().unwrap();
    let found: Vec<&EventRec> = events
        .iter()
        .filter(|e| e.span == Some(span) && e.fields.contains_key("outcome"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one outcome event in span {span}: {found:?}"
    );
    found[0].clone()
}

/// The span the handler's own event of (job, attempt) was emitted in.
fn inside_span(store: &Store, pool: &str, job: u64, attempt: u32) -> Option<u64> {
    let events = store.events.lock().unwrap();
    let found: Vec<&EventRec> = events
        .iter()
        .filter(|e| {
            e.fields
                .get("message")
                .is_some_and(|m| m == "inside the handler")
                && e.fields.get("pool").is_some_and(|w| w.starts_with(pool))
                && e.fields.get("job") == Some(&job.to_string())
                && e.fields.get("attempt") == Some(&attempt.to_string())
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "the handler of job {job} attempt {attempt} logged once"
    );
    found[0].span
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn each_job_of_a_sync_pool_runs_in_a_span_with_its_outcome() {
    let store = store();
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(
        dir.path(),
        Options::default().max_attempts(2).backoff(walq::Backoff {
            initial: Duration::from_millis(1),
            multiplier: 1.0,
            max: Duration::from_millis(1),
            jitter: 0.0,
        }),
    )
    .unwrap();
    let ok = q.enqueue(b"ok").unwrap();
    let flaky = q.enqueue(b"flaky").unwrap();
    let poison = q.enqueue(b"poison").unwrap();
    let panics = q.enqueue(b"panic").unwrap();
    let pool = {
        WorkerPool::builder(q.clone())
            .name("traced-sync")
            .workers(2)
            .start(move |ctx: &JobContext, payload: &[u8]| {
                tracing::info!(
                    pool = ctx.worker(),
                    job = ctx.id(),
                    attempt = ctx.attempt(),
                    "inside the handler"
                );
                match payload {
                    b"flaky" if ctx.attempt() == 1 => {
                        Outcome::retry_after(Duration::ZERO, "service unavailable")
                    }
                    b"poison" => Outcome::fail("cannot parse"),
                    b"panic" => panic!("kaboom"),
                    _ => Outcome::done(),
                }
            })
            .unwrap()
    };
    // ok, flaky x2, poison, panic x2 (retried, then dead).
    wait_until("six attempts settled", || pool.stats().processed() == 6);
    pool.shutdown(Duration::from_secs(60));

    let spans = job_spans(&store, "traced-sync");
    let mut keys: Vec<_> = spans.keys().copied().collect();
    keys.sort_unstable();
    let mut expected = vec![
        (ok, 1),
        (flaky, 1),
        (flaky, 2),
        (poison, 1),
        (panics, 1),
        (panics, 2),
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected, "one span per attempt");
    for ((job, attempt), (span, rec)) in &spans {
        assert_eq!(rec.fields["job.max_attempts"], "2");
        assert!(rec.fields["worker"].starts_with("traced-sync-"));
        assert_eq!(
            inside_span(&store, "traced-sync-", *job, *attempt),
            Some(*span),
            "the handler's own event nests under the span of job {job}"
        );
    }
    let outcome = |job, attempt| outcome_of(&store, spans[&(job, attempt)].0);
    let e = outcome(ok, 1);
    assert_eq!(
        (e.level, e.fields["outcome"].as_str()),
        (Level::DEBUG, "done")
    );
    let e = outcome(flaky, 1);
    assert_eq!(
        (e.level, e.fields["outcome"].as_str()),
        (Level::WARN, "retried")
    );
    assert_eq!(e.fields["error"], "service unavailable");
    assert_eq!(outcome(flaky, 2).fields["outcome"], "done");
    let e = outcome(poison, 1);
    assert_eq!(
        (e.level, e.fields["outcome"].as_str()),
        (Level::WARN, "dead")
    );
    assert_eq!(e.fields["error"], "cannot parse");
    let e = outcome(panics, 1);
    assert_eq!(
        (e.fields["outcome"].as_str(), e.fields["panicked"].as_str()),
        ("retried", "true")
    );
    assert_eq!(e.fields["error"], "handler panicked: kaboom");
    let e = outcome(panics, 2);
    assert_eq!(
        (e.fields["outcome"].as_str(), e.fields["panicked"].as_str()),
        ("dead", "true")
    );
}

#[cfg(feature = "tokio")]
#[test]
fn each_job_of_an_async_pool_runs_in_a_span_across_its_awaits() {
    let store = store();
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path(), Options::default().max_attempts(1)).unwrap();
    let ok = q.enqueue(b"ok").unwrap();
    let panics = q.enqueue(b"panic").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = {
            WorkerPool::builder(q.clone())
                .name("traced-async")
                .workers(2)
                .start_async(move |ctx: JobContext, payload: Vec<u8>| {
                    async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        // After an await, perhaps on another thread.
                        tracing::info!(
                            pool = ctx.worker(),
                            job = ctx.id(),
                            attempt = ctx.attempt(),
                            "inside the handler"
                        );
                        if payload == b"panic" {
                            panic!("async kaboom");
                        }
                        Outcome::done()
                    }
                })
                .unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.stats().processed() < 2 {
            assert!(Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        pool.shutdown(Duration::from_secs(60)).await;
    });
    let spans = job_spans(&store, "traced-async");
    assert_eq!(spans.len(), 2, "one span per attempt: {spans:?}");
    for job in [ok, panics] {
        let (span, rec) = &spans[&(job, 1)];
        assert_eq!(rec.fields["job.max_attempts"], "1");
        assert_eq!(
            inside_span(&store, "traced-async-", job, 1),
            Some(*span),
            "in the span after an await"
        );
    }
    let e = outcome_of(&store, spans[&(ok, 1)].0);
    assert_eq!(
        (e.level, e.fields["outcome"].as_str()),
        (Level::DEBUG, "done")
    );
    let e = outcome_of(&store, spans[&(panics, 1)].0);
    assert_eq!(e.level, Level::WARN);
    assert_eq!(
        (e.fields["outcome"].as_str(), e.fields["panicked"].as_str()),
        ("dead", "true")
    );
    assert_eq!(e.fields["error"], "handler panicked: async kaboom");
}

/// A job that runs past the pool's job timeout is a `warn` event naming
/// the pool, the worker, the job and the timeout.
#[test]
fn a_job_past_its_timeout_is_a_warn_event() {
    let store = store();
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let id = q.enqueue(b"slow").unwrap();
    let pool = WorkerPool::builder(q.clone())
        .name("traced-timeout")
        .workers(1)
        .job_timeout(Duration::from_millis(20))
        .start(|ctx: &JobContext, _: &[u8]| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !ctx.lease_lost() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            Outcome::done()
        })
        .unwrap();
    wait_until("the late outcome is refused", || pool.stats().lost == 1);
    let s = pool.shutdown(Duration::from_secs(60)).stats;
    assert_eq!(s.timed_out, 1, "{s:?}");
    let events = store.events.lock().unwrap();
    let found: Vec<&EventRec> = events
        .iter()
        .filter(|e| e.fields.get("pool").map(String::as_str) == Some("traced-timeout"))
        .filter(|e| e.fields.contains_key("timeout_ms"))
        .collect();
    assert_eq!(found.len(), 1, "one timeout event: {found:?}");
    let event = found[0];
    assert_eq!(event.level, Level::WARN);
    assert_eq!(event.fields["job.id"], id.to_string());
    assert_eq!(event.fields["timeout_ms"], "20");
    assert_eq!(event.fields["worker"], "traced-timeout-0");
}
