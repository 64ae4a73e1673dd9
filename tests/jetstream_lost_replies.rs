//! One message lost on the wire between a client and a real 3-node
//! cluster (a protocol-aware proxy, `tests/nats_cluster/proxy.rs`, drops
//! it): a PubAck that never arrives although the server stored the write,
//! or a publish that never reaches the server. Each test checks the fault
//! happened (the proxy dropped the frame) before it checks the outcome.
//! Needs nats-server 2.12+ (see `tests/nats_cluster`).

mod nats_cluster;

use std::time::Duration;

use nats_cluster::proxy::{Dir, Proxy};
use nats_cluster::Cluster;
use walq::jetstream::{JetStream, JetStreamConfig};
use walq::worker::{Backend, JobStatus};
use walq::{EnqueueOptions, ErrorKind};

const LEASE: Duration = Duration::from_secs(30);

/// Queue `name` reached through a proxy in front of server n0. A request
/// whose reply is dropped fails after 2 s.
fn through_proxy(
    cluster: &Cluster,
    name: &str,
    cfg: impl Fn(JetStreamConfig) -> JetStreamConfig,
) -> (JetStream, Proxy) {
    let proxy = Proxy::start(&cluster.addr(0));
    let js = cluster.connect_via(
        &proxy.url(),
        |c| cfg(c.ack_wait(LEASE).timeout(Duration::from_secs(2))),
        name,
    );
    (js, proxy)
}

/// The PubAck of a write to stream `stream`, as the server words it.
fn puback_of(stream: &str) -> String {
    format!("\"stream\":\"{stream}\"")
}

#[test]
fn a_heartbeat_whose_reply_was_lost_does_not_lose_the_lease() {
    let cluster = Cluster::start();
    let (js, proxy) = through_proxy(&cluster, "hb", |c| c);
    let id = js.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
    let d = js.lease(LEASE, Duration::from_secs(10)).unwrap().unwrap();
    // The heartbeat's compare-and-set is stored; its PubAck is lost.
    proxy.drop_next(Dir::ToClient, &puback_of("KV_WALQ_hb_jobs"));
    let lost = js.extend(d.lease(), LEASE);
    assert_eq!(proxy.dropped(), 1, "no PubAck was dropped: {lost:?}");
    assert!(lost.is_err(), "an extend without its reply returned Ok");
    // Nobody else took the job: the record holds this lease's extension.
    assert!(
        matches!(
            js.status(id).unwrap(),
            JobStatus::InFlight { attempt: 1, .. }
        ),
        "{:?}",
        js.status(id)
    );
    // The next heartbeat, and the settle, still belong to this worker.
    js.extend(d.lease(), LEASE)
        .expect("the heartbeat after a lost reply");
    js.complete(d.lease(), None)
        .expect("the complete after a lost heartbeat reply");
    assert!(matches!(js.status(id).unwrap(), JobStatus::Done { .. }));
}

#[test]
fn a_redrive_whose_publish_failed_leaves_the_job_dead() {
    let cluster = Cluster::start();
    let (js, proxy) = through_proxy(&cluster, "rd", |c| c);
    // The redrive's publish never reaches the server; then, one that is
    // stored but whose PubAck is lost.
    let faults = [
        (Dir::ToServer, "HPUB walq.rd.jobs ".to_string()),
        (Dir::ToClient, puback_of("WALQ_rd")),
    ];
    for (n, (dir, frame)) in faults.into_iter().enumerate() {
        let id = js.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
        let d = js.lease(LEASE, Duration::from_secs(10)).unwrap().unwrap();
        js.fail(d.lease(), "bad").unwrap();
        proxy.drop_next(dir, &frame);
        let failed = js.redrive(id);
        assert_eq!(
            proxy.dropped(),
            n + 1,
            "{frame} was not dropped: {failed:?}"
        );
        let err = failed.expect_err("a redrive without its publish returned Ok");
        // The job is still dead, and says so.
        assert!(
            matches!(js.status(id).unwrap(), JobStatus::Dead { .. }),
            "after the failed redrive ({err}), status says {:?}",
            js.status(id)
        );
        assert_eq!(js.dead_letters().unwrap().len(), 1);
        // Redriven again, it runs once.
        js.redrive(id).unwrap();
        let again = js.lease(LEASE, Duration::from_secs(10)).unwrap();
        assert_eq!(again.as_ref().map(|d| d.id()), Some(id), "after {frame}");
        js.complete(again.unwrap().lease(), None).unwrap();
        assert!(js.dead_letters().unwrap().is_empty());
        let twice = js.lease(LEASE, Duration::from_secs(3)).unwrap();
        assert!(twice.is_none(), "after {frame}, ran twice: {twice:?}");
    }
}

#[test]
fn an_enqueue_whose_puback_was_lost_says_it_may_have_been_enqueued() {
    let cluster = Cluster::start();
    let (js, proxy) = through_proxy(&cluster, "enq", |c| c);
    let keyed = EnqueueOptions::new().idempotency_key("k");
    // The job is stored; its PubAck is lost.
    proxy.drop_next(Dir::ToClient, &puback_of("WALQ_enq"));
    let failed = js.enqueue(b"keyed", keyed.clone());
    assert_eq!(proxy.dropped(), 1, "no PubAck was dropped: {failed:?}");
    let err = failed.expect_err("an enqueue without its PubAck returned Ok");
    assert!(
        err.to_string().contains("may have been enqueued"),
        "the error does not say the job may be there: {err}"
    );
    // Enqueued again with its key, it is one job, run once.
    let again = js.enqueue(b"keyed", keyed).unwrap();
    let d = js.lease(LEASE, Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(d.id(), again.id);
    js.complete(d.lease(), None).unwrap();
    let twice = js.lease(LEASE, Duration::from_secs(3)).unwrap();
    assert!(twice.is_none(), "the keyed job ran twice: {twice:?}");
    // Without a key the job is there too: an error means "maybe".
    proxy.drop_next(Dir::ToClient, &puback_of("WALQ_enq"));
    assert!(js.enqueue(b"unkeyed", EnqueueOptions::new()).is_err());
    assert_eq!(proxy.dropped(), 2);
    let d = js.lease(LEASE, Duration::from_secs(10)).unwrap();
    assert_eq!(d.as_ref().map(|d| d.payload()), Some(&b"unkeyed"[..]));
}

#[test]
fn a_redrive_rolled_back_under_a_concurrent_redrive_does_not_lose_the_job() {
    let cluster = Cluster::start();
    let (a, proxy_a) = through_proxy(&cluster, "rr", |c| c);
    let proxy_b = Proxy::start(&cluster.addr(0));
    let b = cluster.connect_via(&proxy_b.url(), |c| c.ack_wait(LEASE), "rr");
    let id = a.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
    let d = a.lease(LEASE, Duration::from_secs(10)).unwrap().unwrap();
    a.fail(d.lease(), "bad").unwrap();
    // Redrive A's publish never reaches the server: after 2 s it fails
    // and sets the record back to dead.
    proxy_a.drop_next(Dir::ToServer, "HPUB walq.rr.jobs ");
    // Redrive B, started meanwhile, finds the record being redriven and
    // publishes the copy, which is stored; its PubAck comes 3 s late,
    // after A's rollback.
    proxy_b.delay_next(Dir::ToClient, &puback_of("WALQ_rr"), Duration::from_secs(3));
    let first = std::thread::spawn(move || {
        let r = a.redrive(id);
        (r, a)
    });
    std::thread::sleep(Duration::from_millis(700));
    let second = b.redrive(id);
    let (first, a) = first.join().unwrap();
    assert_eq!(
        proxy_a.dropped(),
        1,
        "A's publish was not dropped: {first:?}"
    );
    assert!(
        first.is_err(),
        "A's redrive without its publish returned Ok"
    );
    second.expect("B's redrive, its publish stored");
    // B said the job is back in the queue, and its letter is gone: the
    // job runs.
    assert!(a.dead_letters().unwrap().is_empty());
    let again = a.lease(LEASE, Duration::from_secs(10)).unwrap();
    assert_eq!(
        again.as_ref().map(|d| d.id()),
        Some(id),
        "the redriven job never ran; status {:?}",
        a.status(id)
    );
}

#[test]
fn a_page_whose_letters_went_while_it_was_read_is_not_the_end() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.addr(0));
    let pager = cluster.connect_via(&proxy.url(), |c| c.ack_wait(LEASE), "pg");
    let other = cluster.connect(|c| c.ack_wait(LEASE), "pg");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = other.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
        let d = other
            .lease(LEASE, Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(d.id(), id);
        other.fail(d.lease(), "bad").unwrap();
        ids.push(id);
    }
    ids.sort_unstable();
    // The first page (one letter) lists both ids, then reads the first
    // letter; the read is held 1.5 s, and meanwhile that letter is
    // purged.
    proxy.delay_next(
        Dir::ToServer,
        &format!("walq.pg.dead.{}", ids[0]),
        Duration::from_millis(1500),
    );
    let first = ids[0];
    let purger = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        other.purge(first)
    });
    let page = pager.dead_letters_page(None, 1).unwrap();
    purger.join().unwrap().unwrap();
    // An empty page is the end: it must not come while a letter is left.
    assert!(
        !page.is_empty(),
        "an empty page while letter {} is still there: {:?}",
        ids[1],
        pager.dead_letter_ids()
    );
    assert_eq!(page[0].id, ids[1]);
}

#[test]
fn an_enqueue_whose_puback_was_lost_keeps_the_record_a_worker_wrote() {
    let cluster = Cluster::start();
    let (producer, proxy) = through_proxy(&cluster, "eqw", |c| c);
    let worker = cluster.connect(|c| c.ack_wait(LEASE), "eqw");
    let keyed = EnqueueOptions::new().idempotency_key("k");
    // The job is stored; its PubAck is lost, and while the producer
    // waits for it (2 s) a worker runs the job to completion.
    proxy.drop_next(Dir::ToClient, &puback_of("WALQ_eqw"));
    let running = std::thread::spawn(move || {
        let d = worker.lease(LEASE, Duration::from_secs(10)).unwrap();
        let d = d.expect("the job, stored although its PubAck was lost");
        worker.complete(d.lease(), None).unwrap();
        d.id()
    });
    let failed = producer.enqueue(b"keyed", keyed.clone());
    let id = running.join().unwrap();
    assert_eq!(proxy.dropped(), 1, "no PubAck was dropped: {failed:?}");
    assert!(failed.is_err(), "an enqueue without its PubAck returned Ok");
    // The job ran and its record says so; enqueued again with its key,
    // it is that job.
    let status = producer.status(id).unwrap();
    assert!(
        matches!(status, JobStatus::Done { .. }),
        "the completed job's status is {status:?}"
    );
    let again = producer.enqueue(b"keyed", keyed).unwrap();
    assert!(again.duplicate, "the keyed job was enqueued anew");
}

#[test]
fn a_lease_whose_first_write_lost_its_reply_counts_its_attempt_once() {
    let cluster = Cluster::start();
    // A short AckWait, so a delivery whose lease failed comes back soon.
    let wait = Duration::from_secs(5);
    let (js, proxy) = through_proxy(&cluster, "lf", |c| c.ack_wait(wait));
    let opts = EnqueueOptions::new().max_attempts(2);
    let id = js.enqueue(b"x", opts).unwrap().id;
    // The lease's compare-and-set (attempt 1) is stored; its PubAck is
    // lost.
    proxy.drop_next(Dir::ToClient, &puback_of("KV_WALQ_lf_jobs"));
    // A worker that retries every run, until the job is dead.
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    let give_up = std::time::Instant::now() + Duration::from_secs(40);
    while !matches!(js.status(id).unwrap(), JobStatus::Dead { .. }) {
        assert!(
            std::time::Instant::now() < give_up,
            "the job never died: runs {runs:?}, lease errors {errors:?}"
        );
        match js.lease(wait, Duration::from_secs(1)) {
            Ok(Some(d)) => {
                runs.push(d.attempt());
                js.retry(d.lease(), Some(Duration::ZERO), "again").unwrap();
            }
            Ok(None) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    assert_eq!(proxy.dropped(), 1, "no PubAck was dropped: {errors:?}");
    // Two attempts allowed, two runs: the lost reply counted no attempt
    // of its own.
    assert_eq!(runs, vec![1, 2], "lease errors: {errors:?}");
    assert!(
        matches!(js.status(id).unwrap(), JobStatus::Dead { attempts: 2, .. }),
        "{:?}",
        js.status(id)
    );
}

/// A lease whose write is confirmed only after its visibility has passed
/// (its reply lost, read back after the 2 s timeout, for a 1 s lease) is
/// not handed out: it has run out, the delivery's AckWait has passed too,
/// and the job may be leased again meanwhile. Before, the read-back handed
/// it out: the caller ran the job on a lease its `complete` then found
/// expired, while a pool's `lease_lost` would have said it was fresh for a
/// whole visibility.
#[test]
fn a_lease_confirmed_after_its_visibility_is_not_handed_out() {
    let cluster = Cluster::start();
    let short = Duration::from_secs(1);
    let (js, proxy) = through_proxy(&cluster, "lx", |c| c.ack_wait(short));
    let id = js.enqueue(b"x", EnqueueOptions::new()).unwrap().id;
    // The lease's compare-and-set is stored; its PubAck is lost.
    proxy.drop_next(Dir::ToClient, &puback_of("KV_WALQ_lx_jobs"));
    let mut seen = Vec::new();
    let give_up = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        assert!(std::time::Instant::now() < give_up, "never done: {seen:?}");
        match js.lease(short, Duration::from_secs(1)) {
            Ok(Some(d)) => {
                let done = js.complete(d.lease(), None).map_err(|e| e.kind());
                seen.push(format!("attempt {}: complete {done:?}", d.attempt()));
                if done.is_ok() {
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => seen.push(format!("lease error: {e}")),
        }
    }
    assert_eq!(proxy.dropped(), 1, "no PubAck was dropped: {seen:?}");
    assert!(
        !seen.iter().any(|s| s.contains("LeaseLost")),
        "a lease was handed out expired: {seen:?}"
    );
    assert!(
        matches!(js.status(id).unwrap(), JobStatus::Done { .. }),
        "{:?}",
        js.status(id)
    );
}

#[test]
fn a_settle_whose_reply_was_lost_succeeds_when_repeated() {
    let cluster = Cluster::start();
    let (js, proxy) = through_proxy(&cluster, "st", |c| c);
    let record_write = puback_of("KV_WALQ_st_jobs");
    let lease_lost = |r: walq::Result<()>| r.map_err(|e| e.kind()).unwrap_err();
    // complete: stored, its reply lost.
    let id = js.enqueue(b"done", EnqueueOptions::new()).unwrap().id;
    let d = js.lease(LEASE, Duration::from_secs(10)).unwrap().unwrap();
    proxy.drop_next(Dir::ToClient, &record_write);
    let lost = js.complete(d.lease(), Some(b"r"));
    assert_eq!(proxy.dropped(), 1, "no PubAck was dropped: {lost:?}");
    assert!(lost.is_err(), "a complete without its reply returned Ok");
    // Another settle is refused: the job is done.
    assert_eq!(lease_lost(js.fail(d.lease(), "no")), ErrorKind::LeaseLost);
    js.complete(d.lease(), Some(b"r"))
        .expect("the repeat of a stored complete");
    match js.status(id).unwrap() {
        JobStatus::Done { result, .. } => assert_eq!(result.as_deref(), Some(&b"r"[..])),
        other => panic!("after the repeated complete: {other:?}"),
    }
    // Once a settle returned Ok, the lease is spent.
    assert_eq!(
        lease_lost(js.complete(d.lease(), None)),
        ErrorKind::LeaseLost
    );

    // retry: its intent is stored, its reply lost.
    let id = js.enqueue(b"retried", EnqueueOptions::new()).unwrap().id;
    let d = js.lease(LEASE, Duration::from_secs(10)).unwrap().unwrap();
    proxy.drop_next(Dir::ToClient, &record_write);
    let lost = js.retry(d.lease(), Some(Duration::ZERO), "again");
    assert_eq!(proxy.dropped(), 2, "no PubAck was dropped: {lost:?}");
    assert!(lost.is_err(), "a retry without its reply returned Ok");
    js.retry(d.lease(), Some(Duration::ZERO), "again")
        .expect("the repeat of a stored retry");
    // The job is back at once (not after AckWait), attempt 2, once.
    let again = js.lease(LEASE, Duration::from_secs(10)).unwrap();
    let again = again.expect("the retried job");
    assert_eq!((again.id(), again.attempt()), (id, 2));
    js.complete(again.lease(), None).unwrap();

    // fail: its intent is stored, its reply lost.
    let id = js.enqueue(b"failed", EnqueueOptions::new()).unwrap().id;
    let d = js.lease(LEASE, Duration::from_secs(10)).unwrap().unwrap();
    proxy.drop_next(Dir::ToClient, &record_write);
    let lost = js.fail(d.lease(), "bad");
    assert_eq!(proxy.dropped(), 3, "no PubAck was dropped: {lost:?}");
    assert!(lost.is_err(), "a fail without its reply returned Ok");
    js.fail(d.lease(), "bad")
        .expect("the repeat of a stored fail");
    assert!(
        matches!(js.status(id).unwrap(), JobStatus::Dead { .. }),
        "{:?}",
        js.status(id)
    );
    let letters = js.dead_letters().unwrap();
    assert_eq!(letters.iter().map(|l| l.id).collect::<Vec<_>>(), [id]);
    // Nothing ran twice, nothing is left.
    let left = js.lease(LEASE, Duration::from_secs(3)).unwrap();
    assert!(left.is_none(), "a settled job came back: {left:?}");
}

/// A cancel whose `Purged` record was stored but whose reply was lost
/// returned an error before it purged the delayed copy's schedule; the
/// schedule would then fire after the record aged out (a delay longer
/// than `retention`) and the copy run as a job. Called again, the cancel
/// finds the record `Purged`, purges the schedule, and says `NotFound`.
#[test]
fn a_cancel_whose_reply_was_lost_purges_the_schedule_when_repeated() {
    let cluster = Cluster::start();
    let (js, proxy) = through_proxy(&cluster, "cl", |c| c);
    let day = EnqueueOptions::new().delay(Duration::from_secs(24 * 3600));
    let id = js.enqueue(b"remind", day).unwrap().id;
    assert_eq!(delayed(&js), 1);
    proxy.drop_next(Dir::ToClient, &puback_of("KV_WALQ_cl_jobs"));
    cancel_lost_then_repeated(&js, &proxy, id);
}

/// The same for a reminder whose record aged out before the cancel (its
/// `Purged` record is made from the schedule's headers, with no due
/// time): the first cancel's purge of the schedule never reaches the
/// server, and the cancel fails; the repeated cancel purges it all the
/// same. Before, it skipped a `Purged` record without a due time.
#[test]
fn an_aged_out_reminder_whose_schedule_purge_was_lost_is_purged_when_repeated() {
    let cluster = Cluster::start();
    // The record ages out before the cancel; the Purged record it makes
    // must outlive the lost purge's 2 s timeout and the second cancel.
    // (A retention is at least twice the AckWait; nothing is leased here.)
    let short = |c: JetStreamConfig| {
        c.ack_wait(Duration::from_secs(4))
            .retention(Duration::from_secs(8))
    };
    let (js, proxy) = through_proxy(&cluster, "ca", short);
    let hour = EnqueueOptions::new().delay(Duration::from_secs(3600));
    let id = js.enqueue(b"remind", hour).unwrap().id;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while js.status(id).unwrap() != JobStatus::Unknown {
        assert!(
            std::time::Instant::now() < deadline,
            "the record never aged out"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(delayed(&js), 1);
    proxy.drop_next(Dir::ToServer, "STREAM.PURGE");
    cancel_lost_then_repeated(&js, &proxy, id);
}

/// Delayed copies waiting for their schedule.
fn delayed(js: &JetStream) -> u64 {
    js.stats().unwrap().delayed
}

/// Cancels job `id` with the proxy armed to drop one message: the cancel
/// fails after its `Purged` record is stored, with the schedule still in
/// the stream; called again it says `NotFound`, and the schedule goes.
fn cancel_lost_then_repeated(js: &JetStream, proxy: &Proxy, id: u64) {
    let lost = js.cancel(id);
    assert_eq!(proxy.dropped(), 1, "nothing was dropped: {lost:?}");
    assert!(lost.is_err(), "a cancel that lost a message returned Ok");
    assert!(matches!(js.status(id).unwrap(), JobStatus::Purged { .. }));
    assert_eq!(delayed(js), 1, "the schedule is still there");
    let again = js.cancel(id).expect_err("cancelled already");
    assert_eq!(again.kind(), ErrorKind::NotFound, "{again}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while delayed(js) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the repeated cancel left the schedule in the stream"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `release` whose intent was stored but whose reply was lost, then a
/// `retry` of the same lease: the retry is `LeaseLost` (a different
/// settle after a stored one), not the release finished under its name
/// (before: it returned `Ok` and the attempt was never counted, so a
/// last attempt stayed queued; a review found it). The release repeated
/// finishes what it began: the job is queued, its attempt given back.
#[test]
fn a_retry_after_a_release_whose_reply_was_lost_is_refused() {
    let cluster = Cluster::start();
    let (js, proxy) = through_proxy(&cluster, "relmix", |c| c);
    let once = EnqueueOptions::new().max_attempts(1);
    let id = js.enqueue(b"x", once).unwrap().id;
    let d = js.lease(LEASE, Duration::from_secs(10)).unwrap().unwrap();
    proxy.drop_next(Dir::ToClient, "\"stream\":\"KV_WALQ_relmix_jobs\"");
    let released = js.release(d.lease(), "stopping");
    assert_eq!(proxy.dropped(), 1, "{released:?}");
    assert!(released.is_err(), "the reply was lost");
    let retried = js.retry(d.lease(), None, "handler failed");
    assert_eq!(retried.map_err(|e| e.kind()), Err(ErrorKind::LeaseLost));
    js.release(d.lease(), "stopping")
        .expect("the release repeated");
    assert_eq!(js.status(id).unwrap(), JobStatus::Queued { attempts: 0 });
}
