//! JetStream-only behaviour: a retry in backoff holds no MaxAckPending
//! slot; the stats read from stream and consumer info; records and
//! headers from the network that are not walq's; durations that would
//! wrap; a reconnect with changed settings; a duplicate delayed enqueue;
//! old dead letters; errors with the cluster gone; the last handle
//! dropped in an async task. Needs nats-server 2.12+ (see
//! `tests/nats_cluster`).

mod nats_cluster;

use std::time::Duration;

use std::time::Instant;

use walq::jetstream::{JetStream, JetStreamConfig, JetStreamStats};
use walq::worker::{Backend, JobStatus};
use walq::{EnqueueOptions, ErrorKind};

/// The AckWait and lease of the tests whose records age out within
/// seconds (a retention is at least twice the AckWait).
const SHORT: Duration = Duration::from_secs(1);

/// Waits until the stats match: in a replicated stream, counts follow an
/// enqueue or an ack through the stream's and consumer's own logs, a
/// moment after the call returned.
fn stats_become(js: &JetStream, want: impl Fn(&JetStreamStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = js.stats().unwrap();
        if want(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "stats stay {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_retry_in_backoff_holds_no_ack_pending_slot_and_stats_say_where_jobs_are() {
    let cluster = nats_cluster::Cluster::start();
    // One delivery may be pending at a time. A Nak with a delay would keep
    // the retried job in that slot and starve the second job.
    let js = cluster.connect(|c| c.max_ack_pending(1), "slots");
    let a = js.enqueue(b"a", EnqueueOptions::new()).unwrap().id;
    let b = js.enqueue(b"b", EnqueueOptions::new()).unwrap().id;
    stats_become(&js, |s| {
        (s.ready, s.in_flight, s.delayed, s.dead) == (2, 0, 0, 0)
    });

    let first = js
        .lease(Duration::from_secs(30), Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(first.id(), a);
    js.retry(first.lease(), Some(Duration::from_secs(30)), "later")
        .unwrap();
    assert!(matches!(
        js.status(a).unwrap(),
        JobStatus::Delayed { attempts: 1, .. }
    ));

    let second = js
        .lease(Duration::from_secs(30), Duration::from_secs(10))
        .unwrap();
    let second = second.expect("the retry in backoff must not hold the only slot");
    assert_eq!(second.id(), b);
    stats_become(&js, |s| (s.ready, s.in_flight, s.delayed) == (0, 1, 1));
    js.fail(second.lease(), "bad").unwrap();
    stats_become(&js, |s| {
        (s.in_flight, s.delayed, s.dead, s.stream_messages) == (0, 1, 1, 1)
    });
}

#[test]
fn an_async_pool_runs_on_jetstream_from_another_runtime() {
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "asyncpool");
    let ids: Vec<u64> = (0..10)
        .map(|n| {
            js.enqueue(format!("{n}").as_bytes(), EnqueueOptions::new())
                .unwrap()
                .id
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Each handler sees its job's queue: the name the config was made
    // with (not the stream `WALQ_asyncpool`).
    let queues = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = queues.clone();
    let stats = rt.block_on(async {
        let pool = walq::WorkerPool::builder(js.clone())
            .workers(4)
            .visibility(Duration::from_secs(10))
            .poll_interval(Duration::from_millis(50))
            .start_async(move |ctx: walq::JobContext, _payload: Vec<u8>| {
                seen.lock().unwrap().push(ctx.queue().to_string());
                async move {
                    if ctx.attempt() == 1 && ctx.id().is_multiple_of(2) {
                        walq::Outcome::retry_after(Duration::ZERO, "even ids fail once")
                    } else {
                        walq::Outcome::done()
                    }
                }
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.stats().done < 10 {
            assert!(Instant::now() < deadline, "{:?}", pool.stats());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pool.shutdown(Duration::from_secs(10)).await.stats
    });
    let even = ids.iter().filter(|id| id.is_multiple_of(2)).count() as u64;
    assert_eq!((stats.done, stats.retried, stats.lost), (10, even, 0));
    let queues = queues.lock().unwrap();
    assert_eq!(queues.len() as u64, 10 + even, "one per attempt");
    assert!(queues.iter().all(|q| q == "asyncpool"), "{queues:?}");
    for id in ids {
        assert!(matches!(js.status(id).unwrap(), JobStatus::Done { .. }));
    }
}

/// The key a pool's handler gets for the one job `js` holds.
fn provider_key_of_one_job(js: &JetStream) -> String {
    let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = keys.clone();
    let pool = walq::WorkerPool::builder(js.clone())
        .workers(1)
        .poll_interval(Duration::from_millis(50))
        .start(move |ctx: &walq::JobContext, _payload: &[u8]| {
            seen.lock().unwrap().push(ctx.provider_key());
            walq::Outcome::done()
        })
        .unwrap();
    // A guard against a hang, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.stats().done < 1 {
        assert!(Instant::now() < deadline, "{:?}", pool.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    pool.shutdown(Duration::from_secs(10));
    let keys = keys.lock().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0].clone()
}

/// The key a JetStream job gives outside services is scoped by its stream
/// (name and creation time), as an embedded job's is by its store: jobs of
/// two streams enqueued with one idempotency key have one id and hand out
/// two keys (before, both were `walq-job-<id>`, and a provider answered
/// the second with the first's response), and a backend connected again
/// keeps its scope.
#[test]
fn provider_keys_of_two_streams_differ_and_a_stream_keeps_its_own() {
    let cluster = nats_cluster::Cluster::start();
    let (a, b) = (
        cluster.connect(|c| c, "keysa"),
        cluster.connect(|c| c, "keysb"),
    );
    // A keyed job's id is its key's hash: one key, one id in both.
    let key = || EnqueueOptions::new().idempotency_key("order-42");
    let ida = a.enqueue(b"a", key()).unwrap().id;
    let idb = b.enqueue(b"b", key()).unwrap().id;
    assert_eq!(ida, idb, "one key, one id");
    let (ka, kb) = (provider_key_of_one_job(&a), provider_key_of_one_job(&b));
    assert_ne!(ka, kb);
    let scope = |k: &str| k.rsplit_once('-').unwrap().0.to_string();
    assert!(
        scope(&ka).starts_with("walq-js") && ka.ends_with(&format!("-{ida}")),
        "{ka}"
    );
    let again = cluster.connect(|c| c, "keysa");
    again.enqueue(b"a2", EnqueueOptions::new()).unwrap();
    assert_eq!(scope(&provider_key_of_one_job(&again)), scope(&ka));
}

/// Publishes `payload` on `subject` as a plain core-NATS client would
/// (a raw connection to the cluster's first server) and returns the
/// reply: for a subject a stream captures, its PubAck. For the tests that
/// put bytes walq did not write where walq reads.
fn raw_publish(urls: &str, subject: &str, payload: &[u8]) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let addr = urls
        .split(',')
        .next()
        .and_then(|u| u.strip_prefix("nats://"))
        .expect("a nats:// url");
    let stream = std::net::TcpStream::connect(addr).expect("connect to nats-server");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("the server's INFO");
    let mut out = Vec::new();
    out.extend_from_slice(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
    out.extend_from_slice(b"SUB _INBOX.walqtest 1\r\n");
    out.extend_from_slice(
        format!("PUB {subject} _INBOX.walqtest {}\r\n", payload.len()).as_bytes(),
    );
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    writer.write_all(&out).unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("the PubAck");
        if line.starts_with("PING") {
            writer.write_all(b"PONG\r\n").unwrap();
        } else if let Some(rest) = line.strip_prefix("MSG ") {
            let len: usize = rest.split_whitespace().last().unwrap().parse().unwrap();
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).unwrap();
            body.truncate(len);
            return String::from_utf8_lossy(&body).into_owned();
        } else if line.starts_with("-ERR") {
            panic!("nats-server refused the publish: {line}");
        }
    }
}

#[test]
fn a_job_record_that_does_not_decode_is_an_error_not_a_hang() {
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "badrecord");
    let id = js.enqueue(b"job", EnqueueOptions::new()).unwrap().id;
    // Bytes that are no job record, where the job's record is.
    let ack = raw_publish(
        &cluster.urls(),
        &format!("$KV.WALQ_badrecord_jobs.{id}"),
        b"not a record",
    );
    assert!(ack.contains("\"seq\""), "no PubAck: {ack}");

    // Leasing the job's message must say so, not retry for ever (it read
    // no record, tried to create one, found one and read again).
    let (tx, rx) = std::sync::mpsc::channel();
    let leaser = js.clone();
    std::thread::spawn(move || {
        let got = leaser.lease(Duration::from_secs(30), Duration::from_secs(10));
        let _ = tx.send(got.map(|d| d.map(|d| d.id())));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("lease never returned: it loops on a record it cannot decode");
    let err = got.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(&id.to_string()), "{err}");
    // And `status` says so, rather than `Unknown`.
    let err = js.status(id).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

/// An AckWait or a retention (the streams' duplicate window and the job
/// bucket's max age) over `MAX_DELAY` is refused by `connect` before it
/// connects, naming the setting and the limit. Before, both were taken
/// and sent to the server as durations that saturate on conversion
/// (with `Duration::MAX`). Needs no server: nothing listens at the URL.
#[test]
fn an_ack_wait_or_retention_over_max_delay_is_refused_before_connecting() {
    let over = walq::MAX_DELAY + Duration::from_secs(1);
    let cfg = JetStreamConfig::new("nats://127.0.0.1:1", "bounds").timeout(Duration::from_secs(2));
    for (cfg, what) in [
        (
            cfg.clone().ack_wait(over).retention(Duration::MAX),
            "ack_wait",
        ),
        (
            cfg.clone().ack_wait(Duration::MAX).retention(Duration::MAX),
            "ack_wait",
        ),
        (cfg.clone().retention(over), "retention"),
        (cfg.retention(Duration::MAX), "retention"),
    ] {
        let err = JetStream::connect(cfg).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
        let text = err.to_string();
        assert!(text.contains(what) && text.contains("MAX_DELAY"), "{text}");
    }
}

#[test]
fn durations_too_long_to_add_to_the_clock_do_not_wrap() {
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "farfuture");
    // A delay past `MAX_DELAY` is refused (it would park the job for
    // good); the longest one taken delays the job, not ready at once.
    let err = js
        .enqueue(b"never", EnqueueOptions::new().delay(Duration::MAX))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
    assert!(err.to_string().contains("MAX_DELAY"), "{err}");
    let later = js
        .enqueue(b"later", EnqueueOptions::new().delay(walq::MAX_DELAY))
        .unwrap()
        .id;
    assert!(
        matches!(js.status(later).unwrap(), JobStatus::Delayed { .. }),
        "{:?}",
        js.status(later).unwrap()
    );
    let now = js.enqueue(b"now", EnqueueOptions::new()).unwrap().id;
    // A lease longer than the consumer's AckWait (30 s here) is refused:
    // the server would hand the job out again while it runs.
    let err = js
        .lease(Duration::MAX, Duration::from_secs(10))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
    assert!(err.to_string().contains("AckWait"), "{err}");
    let d = js
        .lease(Duration::from_secs(30), Duration::from_secs(10))
        .unwrap()
        .expect("the ready job");
    assert_eq!(d.id(), now);
    let err = js.extend(d.lease(), Duration::MAX).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
    js.extend(d.lease(), Duration::from_secs(30)).unwrap();
    // A retry after more than the longest delay is refused, the lease
    // kept; one after the longest delay: delayed, not ready at once.
    let err = js
        .retry(d.lease(), Some(Duration::MAX), "for ever")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{err}");
    assert!(err.to_string().contains("MAX_DELAY"), "{err}");
    js.retry(d.lease(), Some(walq::MAX_DELAY), "much later")
        .unwrap();
    assert!(
        matches!(
            js.status(now).unwrap(),
            JobStatus::Delayed { attempts: 1, .. }
        ),
        "{:?}",
        js.status(now).unwrap()
    );
    let early = js
        .lease(Duration::from_secs(30), Duration::from_secs(2))
        .unwrap()
        .map(|d| (d.id(), d.attempt()));
    assert_eq!(early, None, "jobs {later} (delayed) and {now} (retried)");
}

#[test]
fn a_reconnect_applies_a_changed_ack_wait_and_retention() {
    let cluster = nats_cluster::Cluster::start();
    let first = cluster.connect(
        |c| {
            c.ack_wait(Duration::from_secs(1))
                .retention(Duration::from_secs(2))
        },
        "changed",
    );
    drop(first);
    let js = cluster.connect(
        |c| {
            c.ack_wait(Duration::from_secs(600))
                .retention(Duration::from_secs(1200))
        },
        "changed",
    );
    let key = EnqueueOptions::new().idempotency_key("once");
    let id = js.enqueue(b"slow", key.clone()).unwrap().id;
    let d = js
        .lease(Duration::from_secs(600), Duration::from_secs(10))
        .unwrap()
        .expect("the job");
    assert_eq!(d.id(), id);
    // An AckWait of 600 s: not handed to a second worker meanwhile (with
    // the first connect's 1 s it was, while the first still held it).
    let again = js
        .lease(Duration::from_secs(600), Duration::from_secs(4))
        .unwrap();
    assert!(again.is_none(), "job {id} delivered twice");
    // A retention of 600 s: the key is still the job's.
    let dup = js.enqueue(b"slow", key).unwrap();
    assert_eq!((dup.id, dup.duplicate), (id, true));
    js.complete(d.lease(), None).unwrap();
}

#[test]
fn errors_with_the_cluster_gone_say_what_failed() {
    let mut cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c.timeout(Duration::from_secs(2)), "gone");
    for i in 0..3 {
        cluster.kill(i);
    }
    let err = js.stats().unwrap_err();
    assert!(err.to_string().contains("WALQ_gone"), "{err}");
    let err = js.dead_letters().unwrap_err();
    assert!(err.to_string().contains("WALQ_gone_DEAD"), "{err}");
}

#[test]
fn a_duplicate_enqueue_of_a_delayed_job_leaves_its_payload_alone() {
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "dupdelay");
    let opts = EnqueueOptions::new()
        .idempotency_key("k")
        .delay(Duration::from_secs(2));
    let first = js.enqueue(b"first", opts.clone()).unwrap();
    let second = js.enqueue(b"second", opts).unwrap();
    assert_eq!((second.id, second.duplicate), (first.id, true));
    let d = js
        .lease(Duration::from_secs(30), Duration::from_secs(20))
        .unwrap()
        .expect("the delayed job");
    assert_eq!(
        (d.id(), String::from_utf8_lossy(d.payload()).into_owned()),
        (first.id, "first".to_string())
    );
    js.complete(d.lease(), None).unwrap();
    let again = js
        .lease(Duration::from_secs(30), Duration::from_secs(4))
        .unwrap()
        .map(|d| (d.id(), String::from_utf8_lossy(d.payload()).into_owned()));
    assert_eq!(again, None);
}

#[test]
fn a_dead_letter_that_outlived_its_record_can_be_redriven_and_purged() {
    let cluster = nats_cluster::Cluster::start();
    // Records untouched for 3 s age out of the bucket; letters stay.
    // (A retention is at least twice the AckWait.)
    let short = |c: JetStreamConfig| c.ack_wait(SHORT).retention(Duration::from_secs(3));
    let js = cluster.connect(short, "olddead");
    let a = js.enqueue(b"a", EnqueueOptions::new()).unwrap().id;
    let b = js.enqueue(b"b", EnqueueOptions::new()).unwrap().id;
    for _ in 0..2 {
        let d = js
            .lease(SHORT, Duration::from_secs(10))
            .unwrap()
            .expect("a job");
        js.fail(d.lease(), "bad").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while js.status(a).unwrap() != JobStatus::Unknown || js.status(b).unwrap() != JobStatus::Unknown
    {
        assert!(Instant::now() < deadline, "the records never aged out");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut letters: Vec<u64> = js.dead_letters().unwrap().iter().map(|l| l.id).collect();
    letters.sort_unstable();
    let mut both = vec![a, b];
    both.sort_unstable();
    assert_eq!(letters, both);

    js.redrive(a).unwrap();
    let d = js
        .lease(SHORT, Duration::from_secs(10))
        .unwrap()
        .expect("the redriven job");
    assert_eq!((d.id(), d.payload()), (a, &b"a"[..]));
    js.purge(b).unwrap();
    assert!(js.dead_letters().unwrap().is_empty());
}

#[test]
fn a_retry_whose_record_aged_out_in_its_backoff_keeps_its_attempts() {
    let cluster = nats_cluster::Cluster::start();
    // Records untouched for 3 s age out of the bucket; the backoff is
    // longer than that.
    let short = |c: JetStreamConfig| c.ack_wait(SHORT).retention(Duration::from_secs(3));
    let js = cluster.connect(short, "agedretry");
    let opts = EnqueueOptions::new().max_attempts(2);
    let id = js.enqueue(b"x", opts).unwrap().id;
    let d = js
        .lease(SHORT, Duration::from_secs(10))
        .unwrap()
        .expect("the job");
    js.retry(d.lease(), Some(Duration::from_secs(5)), "first")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while js.status(id).unwrap() != JobStatus::Unknown {
        assert!(Instant::now() < deadline, "the record never aged out");
        std::thread::sleep(Duration::from_millis(100));
    }
    let d = js
        .lease(SHORT, Duration::from_secs(30))
        .unwrap()
        .expect("the retried job");
    assert_eq!(
        (d.id(), d.attempt(), d.max_attempts()),
        (id, 2, 2),
        "the retried copy came back with its attempts reset"
    );
    // Its last attempt: a retry sends it to the dead letters.
    js.retry(d.lease(), None, "second").unwrap();
    let status = js.status(id).unwrap();
    assert!(
        matches!(status, JobStatus::Dead { attempts: 2, .. }),
        "{status:?}"
    );
}

/// Enqueues one job per payload and fails each on its first lease, so it
/// becomes a dead letter; returns their ids in order.
fn dead_letters(js: &JetStream, payloads: &[&str]) -> Vec<u64> {
    let mut ids: Vec<u64> = payloads
        .iter()
        .map(|p| {
            js.enqueue(p.as_bytes(), EnqueueOptions::new()).unwrap();
            let d = js
                .lease(Duration::from_secs(30), Duration::from_secs(10))
                .unwrap()
                .expect("a job");
            js.fail(d.lease(), "bad").unwrap();
            d.id()
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Reads the dead letters a page of `size` at a time, as an inspector
/// would, and fails if the pages go on past `at_most` letters.
fn page_through(js: &JetStream, size: usize, at_most: usize) -> Vec<u64> {
    let (mut seen, mut after) = (Vec::new(), None);
    loop {
        let page = js.dead_letters_page(after, size).unwrap();
        assert!(page.len() <= size, "a page of {} letters", page.len());
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.iter().map(|l| l.id));
        assert!(seen.len() <= at_most, "the pages never end: {seen:?}");
    }
    seen
}

#[test]
fn dead_letters_are_read_a_page_at_a_time_by_id() {
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "deadpages");
    let ids = dead_letters(&js, &["0", "1", "2", "3", "4"]);
    assert_eq!(page_through(&js, 2, ids.len()), ids);
    assert_eq!(js.dead_letter_ids().unwrap(), ids);
    // A page after a letter purged meanwhile goes on from its id.
    js.purge(ids[1]).unwrap();
    let next: Vec<u64> = js
        .dead_letters_page(Some(ids[1]), 10)
        .unwrap()
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(next, ids[2..]);
    assert_eq!(js.dead_letter(ids[0]).unwrap().map(|l| l.id), Some(ids[0]));
    assert_eq!(js.dead_letter(ids[1]).unwrap(), None);
    assert_eq!(js.dead_letters().unwrap().len(), 4);
    assert_eq!(js.purge_all().unwrap(), 4);
    assert!(js.dead_letters_page(None, 10).unwrap().is_empty());
}

#[test]
fn the_last_handle_dropped_inside_an_async_task_does_not_panic() {
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "asyncdrop");
    let id = js.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // An async application's last handle (a pool's, a task's) goes with
    // the task that held it.
    let joined = rt.block_on(async move { tokio::spawn(async move { drop(js) }).await });
    assert!(joined.is_ok(), "dropping the backend panicked: {joined:?}");
    // And a later handle works.
    let js = cluster.connect(|c| c, "asyncdrop");
    assert_eq!(js.status(id).unwrap(), JobStatus::Queued { attempts: 0 });
}

#[test]
fn a_dead_letter_without_walq_headers_is_paged_by_its_subject() {
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "foreignpages");
    let ours = dead_letters(&js, &["x"]);
    // A letter for job 1 that walq did not write: no Walq-Id header.
    let ack = raw_publish(&cluster.urls(), "walq.foreignpages.dead.1", b"foreign");
    assert!(ack.contains("WALQ_foreignpages_DEAD"), "not stored: {ack}");
    assert_eq!(page_through(&js, 1, 2), vec![1, ours[0]]);
}

#[test]
fn paging_through_the_dead_letters_lists_them_once() {
    let cluster = nats_cluster::Cluster::start();
    let proxy = nats_cluster::proxy::Proxy::start(&cluster.addr(0));
    let js = cluster.connect_via(&proxy.url(), |c| c, "listonce");
    let ids = dead_letters(&js, &["0", "1", "2", "3", "4", "5"]);
    // A subject listing of the dead-letter stream: a stream-info request
    // with a subjects filter.
    let listing = "subjects_filter";
    proxy.count_from_now(nats_cluster::proxy::Dir::ToServer, listing);
    // What one listing costs: a second handle lists the letters once.
    let other = cluster.connect_via(&proxy.url(), |c| c, "listonce");
    assert_eq!(other.dead_letter_ids().unwrap(), ids);
    let one = proxy.count(listing);
    assert!(one > 0, "no listing request seen");
    // Four pages (the last one empty), one listing.
    assert_eq!(page_through(&js, 2, 6), ids);
    assert_eq!(
        proxy.count(listing),
        2 * one,
        "four pages listed more than once"
    );
    // A letter gone, or a new one, is seen by the next page.
    js.purge(ids[0]).unwrap();
    assert_eq!(page_through(&js, 2, 6), ids[1..]);
    let mut now = ids[1..].to_vec();
    now.extend(dead_letters(&js, &["new"]));
    now.sort_unstable();
    assert_eq!(page_through(&js, 2, 6), now);
    assert_eq!(js.dead_letter_ids().unwrap(), now);
    assert_eq!(proxy.count(listing), 4 * one, "one listing per change");
}

#[test]
fn a_cancelled_job_leaves_no_schedule_and_its_ready_copy_is_dropped() {
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "cancel");
    let day = EnqueueOptions::new().delay(Duration::from_secs(24 * 3600));
    let reminder = js.enqueue(b"remind", day).unwrap().id;
    let ready = js.enqueue(b"now", EnqueueOptions::new()).unwrap().id;
    stats_become(&js, |s| (s.ready, s.delayed) == (1, 1));
    js.cancel(reminder).unwrap();
    // The day-long schedule is gone from the stream at once.
    stats_become(&js, |s| {
        (s.ready, s.delayed, s.stream_messages) == (1, 0, 1)
    });
    js.cancel(ready).unwrap();
    // A ready copy stays until a worker meets it, and drops it.
    let none = js
        .lease(Duration::from_secs(30), Duration::from_millis(500))
        .unwrap();
    assert!(none.is_none(), "a cancelled job was delivered");
    stats_become(&js, |s| {
        (s.ready, s.in_flight, s.stream_messages) == (0, 0, 0)
    });
    for id in [reminder, ready] {
        assert!(matches!(js.status(id).unwrap(), JobStatus::Purged { .. }));
    }
}

/// Waits until job `id`'s record has aged out of the bucket.
fn aged_out(js: &JetStream, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while js.status(id).unwrap() != JobStatus::Unknown {
        assert!(Instant::now() < deadline, "the record never aged out");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_reminder_delayed_past_the_retention_can_still_be_cancelled() {
    let cluster = nats_cluster::Cluster::start();
    // Records untouched for 2 s age out; the reminder waits an hour.
    let short = |c: JetStreamConfig| c.ack_wait(SHORT).retention(Duration::from_secs(2));
    let js = cluster.connect(short, "agedcancel");
    let hour = EnqueueOptions::new().delay(Duration::from_secs(3600));
    let reminder = js.enqueue(b"remind", hour).unwrap().id;
    // A job that ran and finished, its record aged out too.
    let soon = EnqueueOptions::new().delay(Duration::from_millis(200));
    let finished = js.enqueue(b"done", soon).unwrap().id;
    let d = js
        .lease(SHORT, Duration::from_secs(10))
        .unwrap()
        .expect("the short delay's job");
    assert_eq!(d.id(), finished);
    js.complete(d.lease(), None).unwrap();
    aged_out(&js, reminder);
    aged_out(&js, finished);
    // Without its record, the reminder's schedule is what shows it waits.
    js.cancel(reminder).unwrap();
    assert!(matches!(
        js.status(reminder).unwrap(),
        JobStatus::Purged { .. }
    ));
    stats_become(&js, |s| (s.delayed, s.stream_messages) == (0, 0));
    assert_eq!(js.cancel(reminder).unwrap_err().kind(), ErrorKind::NotFound);
    // A finished job leaves no schedule: not cancelled, not found.
    assert_eq!(js.cancel(finished).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(js.status(finished).unwrap(), JobStatus::Unknown);
}

/// What the JetStream backend cannot honour is refused, not ignored: a
/// message group (its jobs would run at once, in any order), a level
/// other than Normal, the options every enqueue checks (an empty key or
/// group), and a payload over the server's `max_payload` (before: `Io`,
/// "may have been enqueued, enqueue it again", which failed the same way
/// each time). Nothing is enqueued by a refused call.
#[test]
fn what_jetstream_cannot_honour_is_refused_before_anything_is_written() {
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "refused");
    let kind = |r: walq::Result<walq::Enqueued>| r.expect_err("refused").kind();
    let group = EnqueueOptions::new().group("customer-42");
    assert_eq!(
        kind(js.enqueue(b"charge", group)),
        ErrorKind::InvalidOptions
    );
    let high = EnqueueOptions::new().priority(walq::Priority::High);
    assert_eq!(
        kind(js.enqueue(b"invoice", high)),
        ErrorKind::InvalidOptions
    );
    let empty = EnqueueOptions::new().idempotency_key("");
    assert_eq!(kind(js.enqueue(b"x", empty)), ErrorKind::InvalidOptions);
    let big = vec![7u8; 2 << 20];
    let keyed = EnqueueOptions::new().idempotency_key("big");
    assert_eq!(kind(js.enqueue(&big, keyed)), ErrorKind::PayloadTooLarge);
    stats_become(&js, |s| s.stream_messages == 0);
    let normal = EnqueueOptions::new().priority(walq::Priority::Normal);
    assert!(!js.enqueue(b"fine", normal).unwrap().duplicate);
}

/// Redrives racing two workers on a 3-node cluster: a compare-and-set
/// that loses while the other write is still being applied gets error
/// 10164, which is a lost race like 10071, not an I/O error (before: 19
/// of 60 leases failed with "wrong last sequence", each delivery then
/// held for a whole AckWait).
#[test]
fn a_compare_and_set_lost_in_the_cluster_is_a_lost_race_not_an_error() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "race");
    let ids = dead_letters(&js, &["0"; 60]);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (js, stop) = (js.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                let mut done = 0;
                while !stop.load(Ordering::SeqCst) {
                    match js.lease(Duration::from_secs(30), Duration::from_millis(200)) {
                        Ok(Some(d)) => match js.complete(d.lease(), None) {
                            Ok(()) => done += 1,
                            Err(e) => errors.push(format!("complete: {e}")),
                        },
                        Ok(None) => {}
                        Err(e) => errors.push(format!("lease: {e}")),
                    }
                }
                (done, errors)
            })
        })
        .collect();
    let redrive_errors: Vec<String> = ids
        .iter()
        .filter_map(|&id| js.redrive(id).err().map(|e| format!("{id}: {e}")))
        .collect();
    stats_become(&js, |s| s.stream_messages == 0 && s.in_flight == 0);
    stop.store(true, Ordering::SeqCst);
    let (mut done, mut errors) = (0, redrive_errors);
    for w in workers {
        let (d, e) = w.join().unwrap();
        done += d;
        errors.extend(e);
    }
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(done, ids.len(), "every redriven job ran once");
}

/// A `lease_async` dropped after it took a job gives the job back with
/// its attempt: on its last attempt it is queued again, not dead-lettered
/// without having run.
#[test]
fn an_abandoned_async_lease_gives_the_attempt_back() {
    use walq::worker::AsyncBackend;
    let cluster = nats_cluster::Cluster::start();
    let js = cluster.connect(|c| c, "abandon");
    let once = EnqueueOptions::new().max_attempts(1);
    let id = js.enqueue(b"x", once).unwrap().id;
    let fut = js.lease_async(Duration::from_secs(30), Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(js.status(id).unwrap(), JobStatus::InFlight { .. }) {
        assert!(Instant::now() < deadline, "never leased");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(fut);
    let d = js
        .lease(Duration::from_secs(30), Duration::from_secs(30))
        .unwrap()
        .expect("the job, given back");
    assert_eq!((d.id(), d.attempt(), d.max_attempts()), (id, 1, 1));
    js.complete(d.lease(), None).unwrap();
}
