//! Crash harness, worker-pool mode: a child process runs a `WorkerPool`
//! on a `Durability::Sync` queue while a producer enqueues; the parent
//! SIGKILLs it at random moments, many times, and checks after each cycle
//! and at the end that
//!
//! * nothing whose ack returned is run again (no handler start is logged
//!   for a job after its ack was logged, and no job is acked twice);
//! * nothing enqueued is lost: every id whose enqueue returned Ok ran,
//!   and a last, unkilled child drains the queue to empty with no dead
//!   letters, so every job was eventually acked;
//! * no job reaches the dead letters, and the queue ends empty.
//!
//! The child logs to one side file, each line fsynced before the code
//! goes on: `E id` after `enqueue` returned, `D id attempt` in the handler
//! before it returns done, `A id` after the pool's ack returned (the
//! backend wrapper below logs it; the pool knows nothing of the log).
//!
//! Cycles: `WALQ_CRASH_WORKERS_CYCLES` (default 50), seed:
//! `WALQ_CRASH_WORKERS_SEED`.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Rng;
use walq::worker::{Backend, Delivery, JobContext, JobStatus, Outcome, WorkerPool};
use walq::{Durability, EnqueueOptions, Enqueued, Options, Queue, Receipt};

const CHILD_DIR_ENV: &str = "WALQ_CRASH_WORKERS_CHILD_DIR";
const CHILD_DRAIN_ENV: &str = "WALQ_CRASH_WORKERS_DRAIN";
const CHILD_SEED_ENV: &str = "WALQ_CRASH_WORKERS_CHILD_SEED";
const CYCLES_ENV: &str = "WALQ_CRASH_WORKERS_CYCLES";
const SEED_ENV: &str = "WALQ_CRASH_WORKERS_SEED";
const CHILD_TEST: &str = "crash_workers_child";
const DEFAULT_CYCLES: u64 = 50;
/// Jobs one child enqueues at most (it is usually killed sooner).
const PER_CHILD: u64 = 400;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn queue_options() -> Options {
    Options::default()
        .durability(Durability::Sync)
        .segment_size(256 * 1024)
        .max_attempts(walq::MAX_ATTEMPTS_LIMIT) // crashes count attempts too
        .visibility_timeout(Duration::from_secs(30))
}

// ---------------------------------------------------------------------------
// The child.

/// The side file: one line per event, fsynced before the caller goes on.
struct SideLog(Mutex<File>);

impl SideLog {
    fn open(path: &Path) -> SideLog {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the side log");
        SideLog(Mutex::new(f))
    }

    fn line(&self, line: String) {
        let mut f = self.0.lock().unwrap();
        f.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| f.sync_data())
            .expect("write the side log");
    }
}

/// The queue, logging `A id` once an ack has returned.
#[derive(Clone)]
struct Logged {
    q: Queue,
    log: Arc<SideLog>,
}

impl Backend for Logged {
    type Lease = Receipt;

    fn enqueue(&self, payload: &[u8], opts: EnqueueOptions) -> walq::Result<Enqueued> {
        Backend::enqueue(&self.q, payload, opts)
    }

    fn lease(
        &self,
        visibility: Duration,
        wait: Duration,
    ) -> walq::Result<Option<Delivery<Receipt>>> {
        self.q.lease(visibility, wait)
    }

    fn complete(&self, lease: &Receipt, result: Option<&[u8]>) -> walq::Result<()> {
        self.q.complete(lease, result)?;
        self.log.line(format!("A {}", lease.job_id()));
        Ok(())
    }

    fn retry(&self, lease: &Receipt, delay: Option<Duration>, error: &str) -> walq::Result<()> {
        self.q.retry(lease, delay, error)
    }

    fn release(&self, lease: &Receipt, error: &str) -> walq::Result<()> {
        Backend::release(&self.q, lease, error)
    }

    fn fail(&self, lease: &Receipt, error: &str) -> walq::Result<()> {
        Backend::fail(&self.q, lease, error)
    }

    fn extend(&self, lease: &Receipt, visibility: Duration) -> walq::Result<()> {
        Backend::extend(&self.q, lease, visibility)
    }

    fn status(&self, id: u64) -> walq::Result<JobStatus> {
        self.q.status(id)
    }

    fn cancel(&self, id: u64) -> walq::Result<()> {
        self.q.cancel(id)
    }
}

fn child_main(dir: &Path) -> ! {
    let drain = std::env::var_os(CHILD_DRAIN_ENV).is_some();
    let seed = env_u64(CHILD_SEED_ENV).unwrap_or(1);
    let q = Queue::open_with(dir.join("queue"), queue_options()).expect("open the queue");
    let log = Arc::new(SideLog::open(&dir.join("events.log")));
    let backend = Logged {
        q: q.clone(),
        log: log.clone(),
    };
    let pool = {
        let log = log.clone();
        WorkerPool::builder(backend)
            .name("crash")
            .workers(4)
            .poll_interval(Duration::from_millis(5))
            .start(move |ctx: &JobContext, payload: &[u8]| {
                log.line(format!("D {} {}", ctx.id(), ctx.attempt()));
                // Some jobs fail their first attempt: nacks are crashed too.
                if payload.ends_with(b"7") && ctx.attempt() == 1 {
                    return Outcome::retry_after(Duration::ZERO, "flaky on purpose");
                }
                let spin = ctx.id() % 3;
                std::thread::sleep(Duration::from_micros(spin * 300));
                Outcome::done()
            })
            .expect("start the pool")
    };
    println!("\nO");
    std::io::stdout().flush().ok();
    if drain {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = q.stats();
            if s.ready + s.delayed + s.in_flight == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the drain did not finish: {s:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        let report = pool.shutdown(Duration::from_secs(30));
        assert_eq!(report.stats.lost + report.stats.settle_errors, 0);
        std::process::exit(0);
    }
    for n in 0..PER_CHILD {
        let payload = format!("job {seed} {n}");
        let id = q.enqueue(payload.as_bytes()).expect("enqueue");
        log.line(format!("E {id}"));
        std::thread::sleep(Duration::from_micros(200));
    }
    // Not killed yet: wait to be (the parent always kills).
    std::thread::sleep(Duration::from_secs(120));
    std::process::exit(0);
}

/// The child's body; does nothing unless the parent started this process.
#[test]
fn crash_workers_child() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        child_main(&PathBuf::from(dir));
    }
}

// ---------------------------------------------------------------------------
// The parent.

fn spawn_child(exe: &Path, dir: &Path, seed: u64, drain: bool) -> std::process::Child {
    let mut cmd = Command::new(exe);
    cmd.args([
        CHILD_TEST,
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(CHILD_DIR_ENV, dir)
    .env(CHILD_SEED_ENV, seed.to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if drain {
        cmd.env(CHILD_DRAIN_ENV, "1");
    }
    cmd.spawn().expect("spawn the child")
}

/// Reads stdout until the child says its pool runs (or exits).
fn wait_started(child: &mut std::process::Child) -> bool {
    let out = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(out).lines();
    let started = lines.any(|l| l.map(|l| l.trim() == "O").unwrap_or(false));
    // Keep the pipe drained so the child never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    started
}

/// What the side log says so far.
#[derive(Default)]
struct Seen {
    enqueued: HashSet<u64>,
    acked: HashSet<u64>,
    ran: HashSet<u64>,
    runs: u64,
}

/// Reads the side log and checks it: no job acked twice, no handler run
/// of a job after its ack. A last line cut by the kill is ignored.
fn check_log(path: &Path) -> Seen {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = Seen::default();
    let mut acked_at: HashMap<u64, usize> = HashMap::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let Some(line) = line.strip_suffix('\n') else {
            continue; // cut by the kill
        };
        let mut words = line.split(' ');
        let tag = words.next().unwrap_or("");
        let id: u64 = words
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("line {n} of the side log is damaged: {line:?}"));
        match tag {
            "E" => {
                seen.enqueued.insert(id);
            }
            "D" => {
                seen.runs += 1;
                seen.ran.insert(id);
                if let Some(at) = acked_at.get(&id) {
                    panic!("job {id} ran again (line {n}) after its ack returned (line {at})");
                }
            }
            "A" => {
                if let Some(at) = acked_at.insert(id, n) {
                    panic!("job {id} acked twice: lines {at} and {n}");
                }
                seen.acked.insert(id);
            }
            _ => panic!("line {n} of the side log is damaged: {line:?}"),
        }
    }
    seen
}

#[test]
fn crash_workers_kill9_cycles() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return; // We are a child; only `crash_workers_child` runs there.
    }
    let cycles = env_u64(CYCLES_ENV).unwrap_or(DEFAULT_CYCLES);
    let seed = env_u64(SEED_ENV).unwrap_or(0x5eed_c0de);
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let exe = std::env::current_exe().expect("current exe");
    let log = dir.join("events.log");
    let started = Instant::now();
    let mut kills_while_running = 0;
    for cycle in 0..cycles {
        let mut child = spawn_child(&exe, dir, rng.next(), false);
        let ran = wait_started(&mut child);
        // Kill somewhere in the first ~150 ms of work: mid-enqueue,
        // mid-handler, mid-ack fsync.
        std::thread::sleep(Duration::from_micros(rng.below(150_000)));
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        assert!(
            ran,
            "cycle {cycle} (seed {seed}): the child died before its pool ran: {status}"
        );
        kills_while_running += 1;
        check_log(&log);
    }
    // A last child, not killed, drains the queue.
    let mut child = spawn_child(&exe, dir, rng.next(), true);
    assert!(wait_started(&mut child), "the draining child did not start");
    let status = child.wait().expect("reap the draining child");
    assert!(status.success(), "the draining child failed: {status}");

    let seen = check_log(&log);
    // A job leaves the queue only by an ack or to the dead letters. The
    // queue ends empty with no dead letters, so a job that ran is acked
    // (its `A` line may be missing: killed after the ack returned, before
    // the line). A job enqueued that never ran and is gone was lost.
    let never_ran: Vec<u64> = seen.enqueued.difference(&seen.ran).copied().collect();
    assert!(
        never_ran.is_empty(),
        "seed {seed}: {} enqueued jobs never ran, e.g. {:?}",
        never_ran.len(),
        &never_ran[..never_ran.len().min(10)]
    );
    let q = Queue::open_with(dir.join("queue"), queue_options()).expect("reopen");
    assert!(q.dead_letter_ids().is_empty(), "no job should be dead");
    let s = q.stats();
    assert_eq!(s.ready + s.delayed + s.in_flight, 0, "{s:?}");
    assert!(seen.acked.is_subset(&seen.ran));
    assert!(
        seen.enqueued.len() as u64 >= cycles,
        "the children enqueued too little to test anything: {}",
        seen.enqueued.len()
    );
    eprintln!(
        "crash_workers: {kills_while_running} kill -9 cycles + 1 drain in {:.1?} (seed {seed}): \
         {} jobs enqueued (Ok returned), {} acked, {} handler runs; none lost, none run after its ack",
        started.elapsed(),
        seen.enqueued.len(),
        seen.acked.len(),
        seen.runs,
    );
}
