//! The heartbeat never stands between a worker and its finished job: an
//! extension that waits on its backend (a remote one, over a slow network)
//! holds no lock the worker needs to settle.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use walq::worker::{JobContext, JobStatus, Outcome, WorkerPool};
use walq::Queue;

mod gate;
mod hooked_backend;
use gate::{Gate, OpenOnDrop};
use hooked_backend::{Hooked, Hooks};

/// An `extend` that waits at a gate, as an extension of a remote backend
/// waits on a slow network.
struct SlowExtend {
    extending: AtomicBool,
    gate: Arc<Gate>,
}

impl Hooks for SlowExtend {
    fn before_extend(&self) {
        self.extending.store(true, Ordering::SeqCst);
        self.gate.wait();
    }
}

/// A queue in a new temporary directory (removed with the `TempDir`).
fn temp_queue() -> (TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    (dir, q)
}

/// `q` as a backend with `hooks` before its calls, shared with the test.
fn hooked<H: Hooks>(q: &Queue, hooks: H) -> Arc<Hooked<H>> {
    Arc::new(Hooked {
        q: q.clone(),
        hooks,
    })
}

/// A pool named `name` of one worker (heartbeat and poll every 5 ms) on
/// `q`, whose extensions wait at `gate`; its handler finishes only once
/// the heartbeat is inside an extension of its job's lease.
fn done_inside_a_slow_extend(
    q: &Queue,
    gate: &Arc<Gate>,
    name: &str,
) -> WorkerPool<Arc<Hooked<SlowExtend>>> {
    let backend = hooked(
        q,
        SlowExtend {
            extending: AtomicBool::new(false),
            gate: gate.clone(),
        },
    );
    WorkerPool::builder(backend.clone())
        .name(name)
        .workers(1)
        .heartbeat(Duration::from_millis(5))
        .poll_interval(Duration::from_millis(5))
        .start(move |_: &JobContext, _: &[u8]| {
            while !backend.hooks.extending.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Outcome::done()
        })
        .unwrap()
}

#[test]
fn a_worker_settles_its_finished_job_while_an_extension_of_its_lease_waits() {
    let (_dir, q) = temp_queue();
    let id = q.enqueue(b"slow network").unwrap();
    let gate = Arc::new(Gate::default());
    // "walq-worker": the builder's default name.
    let pool = done_inside_a_slow_extend(&q, &gate, "walq-worker");
    // Dropped before the pool, whose shutdown needs the heartbeat back.
    let _open = OpenOnDrop(gate.clone());
    // The extension still waits at the gate; the job must settle anyway
    // (before, the heartbeat held the worker's slot through it).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(q.status(id), Ok(JobStatus::Done { .. })) {
        assert!(
            Instant::now() < deadline,
            "the finished job did not settle while its extension waited: {:?}",
            pool.stats()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    gate.open();
    let s = pool.shutdown(Duration::from_secs(10)).stats;
    assert_eq!((s.leased, s.done), (1, 1), "{s:?}");
}

/// Waits for `done`, up to a generous deadline (liveness only).
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The first `extend` waits at a gate (a stalled disk sync, a slow
/// network); the others go through, counted.
struct FirstExtendStalls {
    calls: AtomicU32,
    gate: Arc<Gate>,
}

impl Hooks for FirstExtendStalls {
    fn before_extend(&self) {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            self.gate.wait();
        }
    }
}

/// One extension that blocks does not hold up the other running jobs'
/// leases: while it waits, the other job's lease is still extended, beat
/// after beat, and its handler does not see its lease lost. Before, one
/// heartbeat thread extended every lease in turn, so the stalled call
/// held up every other lease until it expired and its job ran twice.
#[test]
fn one_stalled_extension_does_not_hold_up_the_other_leases() {
    let (_dir, q) = temp_queue();
    q.enqueue(b"one").unwrap();
    q.enqueue(b"two").unwrap();
    let gate = Arc::new(Gate::default());
    let finish = Arc::new(Gate::default());
    let lost = Arc::new(AtomicU32::new(0));
    let backend = hooked(
        &q,
        FirstExtendStalls {
            calls: AtomicU32::new(0),
            gate: gate.clone(),
        },
    );
    let pool = {
        let (finish, lost) = (finish.clone(), lost.clone());
        WorkerPool::builder(backend.clone())
            .workers(2)
            .visibility(Duration::from_secs(60))
            .heartbeat(Duration::from_millis(5))
            .poll_interval(Duration::from_millis(5))
            .start(move |ctx: &JobContext, _: &[u8]| {
                finish.wait();
                if ctx.lease_lost() {
                    lost.fetch_add(1, Ordering::SeqCst);
                }
                Outcome::done()
            })
            .unwrap()
    };
    // Dropped before the pool, whose shutdown needs the heartbeat back.
    let _open = (OpenOnDrop(gate.clone()), OpenOnDrop(finish.clone()));
    wait_for("both jobs running", || pool.stats().leased == 2);
    wait_for("an extension stalled", || {
        backend.hooks.calls.load(Ordering::SeqCst) >= 1
    });
    // Only the other job's lease is left to extend: it must be, again
    // and again, while the first extension still waits.
    let before = backend.hooks.calls.load(Ordering::SeqCst);
    wait_for(
        "the other lease was not extended while one extension stalled",
        || backend.hooks.calls.load(Ordering::SeqCst) >= before + 3,
    );
    finish.open();
    wait_for("both jobs done", || pool.stats().done == 2);
    gate.open();
    let s = pool.shutdown(Duration::from_secs(10)).stats;
    assert_eq!((s.leased, s.done), (2, 2), "{s:?}");
    assert_eq!(
        lost.load(Ordering::SeqCst),
        0,
        "no handler saw its lease lost"
    );
}

/// Waits, up to 20 s, for the handler of `ctx` to be told its lease may
/// be gone; says whether it was. (Shorter than `wait_for`'s deadline, so
/// that without the mark the test's assertion fails, not its wait.)
fn told_lease_lost(ctx: &JobContext) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ctx.lease_lost() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    ctx.lease_lost()
}

/// Every `extend` waits at a gate.
struct EveryExtendStalls {
    gate: Arc<Gate>,
}

impl Hooks for EveryExtendStalls {
    fn before_extend(&self) {
        self.gate.wait();
    }
}

/// A lease whose extension has been stalled for a whole visibility
/// timeout may have run out (another worker may run the job): its handler
/// is told, through `lease_lost`, while the extension still waits.
/// Before, the handler kept its lease as far as it could tell.
#[test]
fn a_lease_whose_extension_stalls_past_the_visibility_is_marked_lost() {
    let (_dir, q) = temp_queue();
    q.enqueue(b"stalled").unwrap();
    let gate = Arc::new(Gate::default());
    // 0 while the handler runs, then 1 if it saw its lease lost, else 2.
    let saw_lost = Arc::new(AtomicU32::new(0));
    let backend = hooked(&q, EveryExtendStalls { gate: gate.clone() });
    let pool = {
        let saw_lost = saw_lost.clone();
        WorkerPool::builder(backend)
            .workers(1)
            .visibility(Duration::from_millis(200))
            .heartbeat(Duration::from_millis(10))
            .poll_interval(Duration::from_millis(5))
            .start(move |ctx: &JobContext, _: &[u8]| {
                if ctx.attempt() > 1 {
                    // The first attempt's lease ran out: the job is back.
                    return Outcome::done();
                }
                let seen = if told_lease_lost(ctx) { 1 } else { 2 };
                saw_lost.store(seen, Ordering::SeqCst);
                Outcome::done()
            })
            .unwrap()
    };
    let _open = OpenOnDrop(gate.clone());
    wait_for("the handler returned", || {
        saw_lost.load(Ordering::SeqCst) != 0
    });
    assert_eq!(
        saw_lost.load(Ordering::SeqCst),
        1,
        "the handler was not told its lease may be gone"
    );
    gate.open();
    pool.shutdown(Duration::from_secs(10));
}

/// The first `n` calls of `extend` wait at a gate; the others go through.
struct FirstExtendsStall {
    n: u32,
    calls: AtomicU32,
    gate: Arc<Gate>,
}

impl Hooks for FirstExtendsStall {
    fn before_extend(&self) {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.n {
            self.gate.wait();
        }
    }
}

/// With every heartbeat thread (4) blocked in an extension, a fifth
/// running lease goes unextended and runs out: its handler is told, as
/// the four whose extensions stall are. Before, only a lease with an
/// extension in flight was ever seen stalled, so the fifth handler kept
/// its lease as far as it could tell while another worker could run its
/// job.
#[test]
fn every_handler_is_told_once_its_lease_runs_out_while_every_heartbeat_thread_is_blocked() {
    let (_dir, q) = temp_queue();
    for i in 0..5u8 {
        q.enqueue(&[i]).unwrap();
    }
    let gate = Arc::new(Gate::default());
    let (returned, told) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let backend = hooked(
        &q,
        FirstExtendsStall {
            n: 4,
            calls: AtomicU32::new(0),
            gate: gate.clone(),
        },
    );
    let pool = {
        let (returned, told) = (returned.clone(), told.clone());
        WorkerPool::builder(backend)
            .workers(5)
            .visibility(Duration::from_millis(300))
            .heartbeat(Duration::from_millis(10))
            .poll_interval(Duration::from_millis(5))
            .start(move |ctx: &JobContext, _: &[u8]| {
                if ctx.attempt() > 1 {
                    return Outcome::done();
                }
                if told_lease_lost(ctx) {
                    told.fetch_add(1, Ordering::SeqCst);
                }
                returned.fetch_add(1, Ordering::SeqCst);
                Outcome::done()
            })
            .unwrap()
    };
    let _open = OpenOnDrop(gate.clone());
    wait_for("every first attempt returned", || {
        returned.load(Ordering::SeqCst) == 5
    });
    assert_eq!(
        told.load(Ordering::SeqCst),
        5,
        "a handler whose lease ran out unextended was not told"
    );
    gate.open();
    pool.shutdown(Duration::from_secs(10));
}

/// Blocks the first heartbeat thread (`pending-heartbeat`) in an
/// extension of job `hold`'s lease, holds the settler's sync, and counts
/// the extensions of job `quick`'s lease while its ack waits in that sync.
struct PendingAck {
    hold: u64,
    quick: u64,
    blocked: AtomicBool,
    gate: Arc<Gate>,
    syncing: AtomicBool,
    sync_gate: Arc<Gate>,
    extended_while_syncing: AtomicU32,
}

impl Hooks for PendingAck {
    fn before_extend_of(&self, id: u64) {
        let first = std::thread::current().name() == Some("pending-heartbeat");
        if id == self.hold && first {
            self.blocked.store(true, Ordering::SeqCst);
            self.gate.wait();
        }
        if id == self.quick && self.syncing.load(Ordering::SeqCst) {
            self.extended_while_syncing.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn before_complete_batch(&self) {
        self.syncing.store(true, Ordering::SeqCst);
        self.sync_gate.wait();
    }
}

/// A finished job's ack waits in a slow sync while the first heartbeat
/// thread is blocked extending another lease: the other heartbeat thread
/// keeps the waiting ack's lease alive, so the job does not run again.
/// Before, only the first thread extended the leases of pending acks.
#[test]
fn a_pending_acks_lease_is_extended_while_the_first_heartbeat_thread_is_blocked() {
    let (_dir, q) = temp_queue();
    let hold = q.enqueue(b"hold").unwrap();
    let quick = q.enqueue(b"quick").unwrap();
    let (gate, sync_gate, finish) = (
        Arc::new(Gate::default()),
        Arc::new(Gate::default()),
        Arc::new(Gate::default()),
    );
    let reruns = Arc::new(AtomicU32::new(0));
    let backend = hooked(
        &q,
        PendingAck {
            hold,
            quick,
            blocked: AtomicBool::new(false),
            gate: gate.clone(),
            syncing: AtomicBool::new(false),
            sync_gate: sync_gate.clone(),
            extended_while_syncing: AtomicU32::new(0),
        },
    );
    let pool = {
        let (backend, finish, reruns) = (backend.clone(), finish.clone(), reruns.clone());
        WorkerPool::builder(backend.clone())
            .name("pending")
            .workers(2)
            .visibility(Duration::from_secs(1))
            .heartbeat(Duration::from_millis(20))
            .poll_interval(Duration::from_millis(5))
            .start(move |ctx: &JobContext, payload: &[u8]| {
                if ctx.attempt() > 1 {
                    if payload == b"quick" {
                        reruns.fetch_add(1, Ordering::SeqCst);
                    }
                } else if payload == b"hold" {
                    finish.wait();
                } else {
                    while !backend.hooks.blocked.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Outcome::done()
            })
            .unwrap()
    };
    let _open = (
        OpenOnDrop(gate.clone()),
        OpenOnDrop(sync_gate.clone()),
        OpenOnDrop(finish.clone()),
    );
    let extended = || backend.hooks.extended_while_syncing.load(Ordering::SeqCst);
    wait_for(
        "the pending ack's lease extended, or its job run again",
        || extended() >= 3 || reruns.load(Ordering::SeqCst) > 0,
    );
    assert_eq!(
        reruns.load(Ordering::SeqCst),
        0,
        "the finished job ran again: its pending ack's lease lapsed"
    );
    finish.open();
    sync_gate.open();
    gate.open();
    let s = pool.shutdown(Duration::from_secs(10)).stats;
    assert_eq!(s.lost, 0, "{s:?}");
}

/// A heartbeat thread blocked for good in `extend` does not hold up
/// `shutdown`: it returns once its deadline has passed, and its report
/// names the thread and the call it is stuck in. Before, shutdown joined
/// the heartbeat and waited as long as the backend did: for ever.
#[test]
fn shutdown_returns_and_names_a_heartbeat_thread_stuck_in_extend() {
    let (_dir, q) = temp_queue();
    q.enqueue(b"stuck").unwrap();
    let gate = Arc::new(Gate::default());
    let pool = done_inside_a_slow_extend(&q, &gate, "stuck");
    let _open = OpenOnDrop(gate.clone());
    wait_for("the job done", || pool.stats().done == 1);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(pool.shutdown(Duration::from_millis(50)));
    });
    let report = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("shutdown waited for a heartbeat thread stuck in extend");
    let stuck = report
        .stuck
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(
        stuck.contains("stuck-heartbeat") && stuck.contains("extend"),
        "the report does not name the stuck thread and call: {stuck:?}"
    );
    assert_eq!(report.stats.done, 1, "{report:?}");
    gate.open();
}

/// A heartbeat interval near the visibility (allowed: any interval below
/// it) still keeps a lease taken in the second half of an interval.
/// Before, a lease was extended at a beat only once half an interval old:
/// one taken 0.7 intervals after a beat was 0.3 intervals old at the next
/// and skipped, and 1.3 intervals (more than the visibility of 1.11
/// intervals) old at the one after, so it ran out, the handler was told
/// its lease was lost and the job was leased again by the other worker.
///
/// The times are long (an 8 s visibility, a 7.2 s interval, a test of
/// about 18 s) so that a loaded machine cannot make the fixed code lose
/// the lease: the beat that extends it comes 0.8 s before it runs out,
/// and the code before the fix let it run out 1.36 s before its beat.
#[test]
fn a_heartbeat_near_the_visibility_keeps_a_lease_taken_late_in_its_interval() {
    let (_dir, q) = temp_queue();
    let (visibility, every) = (Duration::from_millis(8000), Duration::from_millis(7200));
    let runs = Arc::new(AtomicU32::new(0));
    let lost = Arc::new(AtomicBool::new(false));
    let (r, l) = (runs.clone(), lost.clone());
    let pool = WorkerPool::builder(q.clone())
        .workers(2)
        .visibility(visibility)
        .heartbeat(every)
        .poll_interval(Duration::from_millis(5))
        .start(move |ctx: &JobContext, _: &[u8]| {
            r.fetch_add(1, Ordering::SeqCst);
            // Long enough for two more beats after the lease.
            std::thread::sleep(Duration::from_millis(12_000));
            l.fetch_or(ctx.lease_lost(), Ordering::SeqCst);
            Outcome::done()
        })
        .unwrap();
    // The heartbeat threads beat every 7.2 s from the pool's start: the
    // job is leased about 0.7 of an interval in.
    std::thread::sleep(Duration::from_millis(5040));
    let id = q.enqueue(b"late").unwrap();
    wait_for("the job settles", || {
        matches!(q.status(id), Ok(JobStatus::Done { .. }))
    });
    let s = pool.shutdown(Duration::from_secs(30)).stats;
    assert!(!lost.load(Ordering::SeqCst), "the lease was lost: {s:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{s:?}");
    assert_eq!((s.leased, s.done, s.lost), (1, 1, 0), "{s:?}");
}

/// The first `extend` of job `stall` waits at a gate; every `extend` made
/// once `stopped` is set is counted; `dropped` is set when the pool lets
/// go of its backend (its last thread exited).
struct StallThenCount {
    stall: AtomicU64,
    stalled: AtomicBool,
    gate: Arc<Gate>,
    stopped: Arc<AtomicBool>,
    late: Arc<AtomicU32>,
    dropped: Arc<AtomicBool>,
}

impl Hooks for StallThenCount {
    fn before_extend_of(&self, id: u64) {
        if self.stopped.load(Ordering::SeqCst) {
            self.late.fetch_add(1, Ordering::SeqCst);
        }
        if id == self.stall.load(Ordering::SeqCst) && !self.stalled.swap(true, Ordering::SeqCst) {
            self.gate.wait();
        }
    }
}

impl Drop for StallThenCount {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// A heartbeat thread left detached by shutdown exits when its stuck call
/// returns: it does not go on to extend the other leases it had listed
/// (each of which could block it again, keeping the backend and a queue's
/// directory lock). Before, it went through the rest of its list first.
#[test]
fn a_detached_heartbeat_thread_makes_no_call_after_its_stuck_one() {
    let (_dir, q) = temp_queue();
    let gate = Arc::new(Gate::default());
    let (stopped, late, dropped) = (Arc::default(), Arc::default(), Arc::default());
    let hooks = StallThenCount {
        stall: AtomicU64::new(u64::MAX),
        stalled: AtomicBool::new(false),
        gate: gate.clone(),
        stopped: Arc::clone(&stopped),
        late: Arc::clone(&late),
        dropped: Arc::clone(&dropped),
    };
    // The job whose extension stalls is leased first: it is the oldest,
    // first in every thread's list, before the other job's lease.
    let first = q.enqueue(b"first").unwrap();
    hooks.stall.store(first, Ordering::SeqCst);
    let backend = Hooked {
        q: q.clone(),
        hooks,
    };
    let pool = WorkerPool::builder(backend)
        .name("detached")
        .workers(2)
        .visibility(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(20))
        .poll_interval(Duration::from_millis(5))
        .start(|ctx: &JobContext, _: &[u8]| {
            while !ctx.is_shutting_down() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Outcome::done()
        })
        .unwrap();
    let _open = OpenOnDrop(gate.clone());
    wait_for("the first job running", || pool.stats().running == 1);
    q.enqueue(b"second").unwrap();
    wait_for("the second job extended", || pool.stats().extended >= 2);
    let report = pool.shutdown(Duration::from_millis(50));
    assert_eq!(report.stuck.len(), 1, "{report:?}");
    // Longer than half a heartbeat interval: the second job's copied
    // lease is due again when the stuck call returns.
    std::thread::sleep(Duration::from_millis(100));
    stopped.store(true, Ordering::SeqCst);
    gate.open();
    wait_for("the detached thread exited", || {
        dropped.load(Ordering::SeqCst)
    });
    assert_eq!(late.load(Ordering::SeqCst), 0, "extends after shutdown");
}

/// The first `extend` panics, as a buggy backend might; the later ones
/// are counted and go through.
#[derive(Default)]
struct FirstExtendPanics {
    calls: Arc<AtomicU32>,
}

impl Hooks for FirstExtendPanics {
    fn before_extend(&self) {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("the backend's extend panicked (on purpose)");
        }
    }
}

/// A backend that panics in one `extend` does not end the heartbeat:
/// the panic counts a lease error, and the lease is extended again at the
/// next beats, so its handler keeps it. Before, the panic killed the
/// heartbeat thread (the pool's only one here) and left the lease marked
/// as being extended, so no thread extended it again: it ran out, the
/// handler was told its lease was lost, and the job could run twice.
#[test]
fn an_extend_that_panics_does_not_end_the_heartbeat() {
    let (_dir, q) = temp_queue();
    let id = q.enqueue(b"slow").unwrap();
    let backend = hooked(&q, FirstExtendPanics::default());
    let calls = backend.hooks.calls.clone();
    let seen = Arc::new(AtomicU32::new(0));
    let lost = Arc::new(AtomicBool::new(false));
    let (c, s, l) = (calls.clone(), seen.clone(), lost.clone());
    let pool = WorkerPool::builder(backend)
        .workers(1)
        .visibility(Duration::from_secs(2))
        .heartbeat(Duration::from_millis(20))
        .poll_interval(Duration::from_millis(5))
        .start(move |ctx: &JobContext, _: &[u8]| {
            // Until three extensions after the one that panicked.
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            s.store(c.load(Ordering::SeqCst), Ordering::SeqCst);
            l.store(ctx.lease_lost(), Ordering::SeqCst);
            Outcome::done()
        })
        .unwrap();
    wait_for("the handler returns", || seen.load(Ordering::SeqCst) > 0);
    let st = pool.shutdown(Duration::from_secs(30)).stats;
    assert!(matches!(q.status(id), Ok(JobStatus::Done { .. })), "{st:?}");
    assert!(seen.load(Ordering::SeqCst) >= 4, "extend calls: {st:?}");
    assert!(!lost.load(Ordering::SeqCst), "the lease was lost: {st:?}");
    assert_eq!((st.leased, st.done, st.lease_errors), (1, 1, 1), "{st:?}");
}
