//! Faults on a real 3-node JetStream cluster: a server killed (SIGKILL)
//! and restarted mid-run, a worker process killed mid-job, and a worker
//! that wakes up after its lease passed to another. Needs nats-server
//! 2.12+ (see `tests/nats_cluster`).

mod nats_cluster;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nats_cluster::Cluster;
use walq::jetstream::{JetStream, JetStreamLease};
use walq::worker::{Backend, Delivery, JobStatus, Outcome, WorkerPool};
use walq::{EnqueueOptions, Enqueued, ErrorKind};

const URLS_ENV: &str = "WALQ_JS_CHILD_URLS";
const QUEUE_ENV: &str = "WALQ_JS_CHILD_QUEUE";
const ACK_WAIT: Duration = Duration::from_secs(2);

/// What the node-kill run saw.
#[derive(Default)]
struct Log {
    /// Job ids whose `complete` returned Ok.
    acked: HashSet<u64>,
    /// Handler runs per job id.
    runs: HashMap<u64, u32>,
    /// Runs of a job after its ack had returned (must stay empty).
    redone: Vec<u64>,
}

/// The backend, logging every completion that returned Ok.
#[derive(Clone)]
struct Logged(JetStream, Arc<Mutex<Log>>);

impl Backend for Logged {
    type Lease = JetStreamLease;
    fn enqueue(&self, p: &[u8], o: EnqueueOptions) -> walq::Result<Enqueued> {
        self.0.enqueue(p, o)
    }
    fn lease(&self, v: Duration, w: Duration) -> walq::Result<Option<Delivery<JetStreamLease>>> {
        self.0.lease(v, w)
    }
    fn complete(&self, l: &JetStreamLease, r: Option<&[u8]>) -> walq::Result<()> {
        self.0.complete(l, r)?;
        self.1.lock().unwrap().acked.insert(l.id());
        Ok(())
    }
    fn complete_batch(&self, items: &[(&JetStreamLease, Option<&[u8]>)]) -> Vec<walq::Result<()>> {
        let results = self.0.complete_batch(items);
        let mut log = self.1.lock().unwrap();
        for ((lease, _), r) in items.iter().zip(&results) {
            if r.is_ok() {
                log.acked.insert(lease.id());
            }
        }
        results
    }
    fn retry(&self, l: &JetStreamLease, d: Option<Duration>, e: &str) -> walq::Result<()> {
        self.0.retry(l, d, e)
    }
    fn release(&self, l: &JetStreamLease, e: &str) -> walq::Result<()> {
        self.0.release(l, e)
    }
    fn fail(&self, l: &JetStreamLease, e: &str) -> walq::Result<()> {
        self.0.fail(l, e)
    }
    fn extend(&self, l: &JetStreamLease, v: Duration) -> walq::Result<()> {
        self.0.extend(l, v)
    }
    fn status(&self, id: u64) -> walq::Result<JobStatus> {
        self.0.status(id)
    }

    fn cancel(&self, id: u64) -> walq::Result<()> {
        self.0.cancel(id)
    }
}

#[test]
fn a_killed_and_restarted_server_loses_no_enqueued_job_and_redoes_no_acked_one() {
    if std::env::var_os(URLS_ENV).is_some() {
        return; // A child process: only `worker_child` runs there.
    }
    let mut cluster = Cluster::start();
    let js = cluster.connect(|c| c.ack_wait(ACK_WAIT), "nodekill");
    let log = Arc::new(Mutex::new(Log::default()));
    let backend = Logged(js.clone(), log.clone());
    let l = log.clone();
    let pool = WorkerPool::builder(backend.clone())
        .workers(4)
        .visibility(ACK_WAIT)
        .poll_interval(Duration::from_millis(100))
        .start(move |ctx, _| {
            let mut log = l.lock().unwrap();
            *log.runs.entry(ctx.id()).or_default() += 1;
            if log.acked.contains(&ctx.id()) {
                log.redone.push(ctx.id());
            }
            drop(log);
            std::thread::sleep(Duration::from_millis(5));
            Outcome::done()
        })
        .unwrap();
    // A producer enqueues 400 keyed jobs; an enqueue that fails (the
    // server it talked to died) is retried with the same key.
    let producer_js = js.clone();
    let producer = std::thread::spawn(move || {
        let (mut ids, mut errors) = (Vec::new(), 0u32);
        for n in 0..400 {
            let opts = EnqueueOptions::new().idempotency_key(format!("job-{n}"));
            loop {
                match producer_js.enqueue(format!("{n}").as_bytes(), opts.clone()) {
                    Ok(e) => {
                        ids.push(e.id);
                        break;
                    }
                    Err(_) => {
                        errors += 1;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (ids, errors)
    });
    std::thread::sleep(Duration::from_millis(800));
    // The server leading the work-queue stream (servers are n0, n1, n2).
    let leader = js
        .stats()
        .unwrap()
        .leader
        .expect("an R3 stream has a leader");
    let victim: usize = leader.trim_start_matches('n').parse().unwrap();
    let killed_at = Instant::now();
    cluster.kill(victim);
    std::thread::sleep(Duration::from_secs(3));
    cluster.restart(victim);
    let outage = killed_at.elapsed();
    let (ids, enqueue_errors) = producer.join().unwrap();
    // Every enqueued job completes. A `complete` whose reply was lost in
    // the failover returns an error though the record says done; such a
    // job is not in `acked`, so its status is asked.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut open: Vec<u64> = ids.clone();
    while !open.is_empty() {
        open.retain(|id| {
            !log.lock().unwrap().acked.contains(id)
                && !matches!(js.status(*id), Ok(JobStatus::Done { .. }))
        });
        let states: Vec<_> = open.iter().take(5).map(|id| (id, js.status(*id))).collect();
        assert!(
            Instant::now() < deadline,
            "{} of {} jobs never completed, e.g. {states:?}; pool {:?}; queue {:?}",
            open.len(),
            ids.len(),
            pool.stats(),
            js.stats()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = pool.shutdown(Duration::from_secs(30)).stats;
    let log = log.lock().unwrap();
    let unique: HashSet<u64> = ids.iter().copied().collect();
    let reruns: u32 = log.runs.values().map(|r| r - 1).sum();
    eprintln!(
        "node kill: stream leader {leader} killed; {} jobs enqueued ({} enqueue errors retried), node down {:?}; \
         {} acked, {} handler re-runs before an ack, {} after an ack; pool {:?}",
        ids.len(),
        enqueue_errors,
        outage,
        log.acked.len(),
        reruns,
        log.redone.len(),
        stats
    );
    assert_eq!(unique.len(), 400, "each key is one job");
    assert!(
        log.redone.is_empty(),
        "jobs run after their ack: {:?}",
        log.redone
    );
    for id in &ids {
        let status = js.status(*id).unwrap();
        assert!(
            matches!(status, JobStatus::Done { .. }),
            "job {id}: {status:?}"
        );
    }
    // The work queue empties (acks reach the replicated stream a moment
    // after their replies).
    let deadline = Instant::now() + Duration::from_secs(30);
    while js.stats().unwrap().stream_messages != 0 {
        assert!(Instant::now() < deadline, "{:?}", js.stats());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The child's body: lease one job, say so, then wait for the parent's
/// word and try to complete it. Does nothing unless the parent started
/// this process.
#[test]
fn worker_child() {
    let (Ok(urls), Ok(queue)) = (std::env::var(URLS_ENV), std::env::var(QUEUE_ENV)) else {
        return;
    };
    let cfg = walq::jetstream::JetStreamConfig::new(urls, queue).ack_wait(ACK_WAIT);
    let js = JetStream::connect(cfg).unwrap();
    let d = js
        .lease(ACK_WAIT, Duration::from_secs(30))
        .unwrap()
        .unwrap();
    println!("LEASED {} {}", d.id(), d.attempt());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let kind = |r: walq::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("{:?}", e.kind()),
    };
    let extend = kind(js.extend(d.lease(), ACK_WAIT));
    let complete = kind(js.complete(d.lease(), None));
    println!("LATE extend={extend} complete={complete}");
    std::io::stdout().flush().unwrap();
}

fn spawn_worker(cluster: &Cluster, queue: &str) -> (std::process::Child, u64, u32) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "worker_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(URLS_ENV, cluster.urls())
        .env(QUEUE_ENV, queue)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("LEASED") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the worker exited before leasing"
        );
    }
    let f: Vec<&str> = line.split_whitespace().collect();
    let (id, attempt) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    child.stdout = Some(out.into_inner());
    (child, id, attempt)
}

#[test]
fn a_killed_worker_s_job_comes_back_after_the_ack_wait_and_its_late_ack_is_refused() {
    if std::env::var_os(URLS_ENV).is_some() {
        return;
    }
    let cluster = Cluster::start();
    let js = cluster.connect(|c| c.ack_wait(ACK_WAIT), "workerkill");
    let first = js.enqueue(b"a", EnqueueOptions::new()).unwrap().id;

    // A worker process leases the job and is SIGKILLed mid-job.
    let (mut killed, id, attempt) = spawn_worker(&cluster, "workerkill");
    assert_eq!((id, attempt), (first, 1));
    killed.kill().unwrap();
    killed.wait().unwrap();
    let d = js
        .lease(ACK_WAIT, Duration::from_secs(30))
        .unwrap()
        .expect("redelivered");
    assert_eq!((d.id(), d.attempt()), (first, 2));

    js.complete(d.lease(), None).unwrap();
    assert!(matches!(js.status(first).unwrap(), JobStatus::Done { .. }));

    // Another worker process holds a job past its lease (a pause, a
    // partition); the job goes to this process, which completes it; the
    // worker's late heartbeat and ack are refused.
    let second = js.enqueue(b"b", EnqueueOptions::new()).unwrap().id;
    let (mut paused, id, attempt) = spawn_worker(&cluster, "workerkill");
    assert_eq!((id, attempt), (second, 1));
    let again = js
        .lease(ACK_WAIT, Duration::from_secs(30))
        .unwrap()
        .expect("redelivered");
    assert_eq!((again.id(), again.attempt()), (second, 2));
    js.complete(again.lease(), None).unwrap();
    writeln!(paused.stdin.as_mut().unwrap(), "GO").unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(paused.stdout.as_mut().unwrap(), &mut out).unwrap();
    paused.wait().unwrap();
    assert!(
        out.contains("LATE extend=LeaseLost complete=LeaseLost"),
        "the late worker said: {out}"
    );
    assert!(matches!(js.status(second).unwrap(), JobStatus::Done { .. }));
    assert_eq!(
        js.complete(again.lease(), None).unwrap_err().kind(),
        ErrorKind::LeaseLost
    );
}
