//! Helpers of the command-line tests: real queue directories and the
//! built `walq` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use walq::{EnqueueOptions, Options, Queue};

/// Held while a child process is spawned, and while a test opens and
/// closes a queue it expects to be free afterwards: a child forked by a
/// test running in parallel holds copies of every descriptor until it
/// execs, the queue's lock among them, so a closed queue could still look
/// held to the next command.
static FORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` with no child process being spawned meanwhile.
pub fn quiet<T>(f: impl FnOnce() -> T) -> T {
    let _guard = FORK.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

/// The output of one run of `walq`.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the built binary with `args`, stdin closed.
pub fn walq(args: &[&str]) -> Run {
    walq_stdin(args, None)
}

/// Runs the built binary with `args`, feeding `stdin` when given.
pub fn walq_stdin(args: &[&str], stdin: Option<&str>) -> Run {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walq"));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = quiet(|| cmd.spawn().expect("spawn walq"));
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            // A command that refuses its queue exits before it reads its
            // input; the rest of the input is then not needed.
            if let Err(e) = input.write_all(text.as_bytes()) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
            }
        }
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait walq");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `sh -c script` with `args` as `$0`, `$1`, ... (a pipeline that
/// feeds `walq`, a run bounded by `ulimit -v`), stdin closed.
pub fn sh(script: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = quiet(|| cmd.spawn().expect("spawn sh"));
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait sh");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// `line` as JSON; a panic that shows the line when it is not.
pub fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Every line of `out` as JSON (the `--json` output of a command that
/// prints one object a line).
pub fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(json).collect()
}

/// Small segments, so tests stay quick and several segments appear.
pub fn opts() -> Options {
    Options::default().segment_size(64 << 10).max_attempts(3)
}

/// A queue in `dir` with known content, closed: jobs 1..=3 pending
/// ("alpha" with key "k-alpha", binary bytes, a JSON object delayed by an
/// hour), job 4 acked, job 5 dead ("boom", key "k-dead").
pub fn healthy(dir: &Path) {
    quiet(|| fill(dir));
}

fn fill(dir: &Path) {
    let q = Queue::open_with(dir, opts()).unwrap();
    q.enqueue_with(b"alpha", EnqueueOptions::new().idempotency_key("k-alpha"))
        .unwrap();
    q.enqueue(&[0xff, 0x00, 0x7f]).unwrap();
    q.enqueue_with(
        br#"{"to":"ada@example.com"}"#,
        EnqueueOptions::new().delay(Duration::from_secs(3600)),
    )
    .unwrap();
    let acked = q.enqueue(b"finished").unwrap();
    let dead = q
        .enqueue_with(
            b"doomed",
            EnqueueOptions::new()
                .idempotency_key("k-dead")
                .max_attempts(1),
        )
        .unwrap()
        .id;
    // Lease the two last jobs: the oldest ready ones go first, so drain.
    let mut held = Vec::new();
    while let Some(job) = q.dequeue_timeout(Duration::ZERO).unwrap() {
        held.push(job);
    }
    for job in held {
        if job.id() == acked {
            q.ack(job.receipt()).unwrap();
        } else if job.id() == dead {
            q.fail(job.receipt(), "boom").unwrap();
        } else {
            q.nack(job.receipt(), walq::Retry::After(Duration::ZERO), "again")
                .unwrap();
        }
    }
    q.close().unwrap();
}

/// [`healthy`], with a recurring schedule ("hourly", every hour)
/// registered in its `schedules.bin`, whose bytes are returned.
pub fn healthy_with_schedule(dir: &Path) -> Vec<u8> {
    healthy(dir);
    quiet(|| {
        let q = Queue::open_with(dir, opts()).unwrap();
        let s = walq::schedule::Scheduler::open(&q).unwrap();
        let every = walq::schedule::Schedule::every("hourly", Duration::from_secs(3600));
        s.register(every.unwrap().payload(b"tick".to_vec()))
            .unwrap();
        drop(s);
        q.close().unwrap();
    });
    std::fs::read(dir.join(walq::schedule::SCHEDULE_FILE)).unwrap()
}

/// The segment files of the queue in `dir`, sorted.
pub fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.len() == 14 && n.ends_with(".wal") && n != "dead.wal"
        })
        .collect();
    v.sort();
    v
}

/// Every file of `dir` with its bytes, sorted by name.
pub fn image(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A queue in `dir` opened with `max_payload(max)` and segments that hold
/// it, closed: a dead letter of `dead` bytes of `b'd'` (key "k-dead",
/// error "too big"), then a pending job of each size in `jobs`, the i-th
/// of bytes `b'a' + i`, the first with key "k-0". Sizes over 16 MiB are
/// what the default limits refuse.
pub fn large(dir: &Path, max: u32, dead: usize, jobs: &[usize]) {
    quiet(|| {
        let opts = Options::default()
            .segment_size(u64::from(max) + (1 << 20))
            .max_payload(max);
        let q = Queue::open_with(dir, opts).unwrap();
        let once = EnqueueOptions::new()
            .idempotency_key("k-dead")
            .max_attempts(1);
        q.enqueue_with(&vec![b'd'; dead], once).unwrap();
        let job = q.dequeue_timeout(Duration::ZERO).unwrap().unwrap();
        q.fail(job.receipt(), "too big").unwrap();
        for (i, &len) in jobs.iter().enumerate() {
            let mut eo = EnqueueOptions::new();
            if i == 0 {
                eo = eo.idempotency_key("k-0");
            }
            q.enqueue_with(&vec![b'a' + i as u8; len], eo).unwrap();
        }
        q.close().unwrap();
    });
}

/// A payload in a few words: its length and its byte when all its bytes
/// are the same (large payloads stay readable in a failed assertion).
fn summary(payload: &[u8]) -> String {
    match payload.first() {
        Some(&b) if payload.iter().all(|&x| x == b) => {
            format!("{} x {:?}", payload.len(), b as char)
        }
        _ => format!(
            "{} bytes {:?}",
            payload.len(),
            String::from_utf8_lossy(payload)
        ),
    }
}

/// What the queue in `dir` holds, read without its lock: each pending
/// job as "job queue key payload" and each dead letter as "dead queue key
/// payload error", ids and times left out, sorted.
pub fn contents(dir: &Path) -> Vec<String> {
    let snap = walq::inspect::Inspector::open(dir)
        .and_then(|i| i.snapshot())
        .unwrap();
    let key = |k: &Option<Vec<u8>>| k.as_ref().map(|k| String::from_utf8_lossy(k).into_owned());
    let mut v: Vec<String> = snap
        .jobs
        .values()
        .map(|j| {
            let (q, k, p) = (&j.queue, key(&j.key), summary(&j.payload));
            format!("job {q:?} {k:?} {p}")
        })
        .chain(snap.dead.values().map(|d| {
            let (q, k, p) = (&d.queue, key(&d.key), summary(&d.payload));
            format!("dead {q:?} {k:?} {p} {:?}", d.error)
        }))
        .collect();
    v.sort();
    v
}
