//! Named queues in one store: delivery is per queue, idempotency keys and
//! groups are scoped per queue, stats are per queue and for the store, a
//! reopen (from the checkpoint or by a full scan) keeps each job in its
//! queue, a single-queue directory opens as the default queue, names are
//! checked, one fdatasync covers records of several queues, and a power
//! loss at every sync point keeps every job in its own queue.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::scanned;
use walq::vfs::SimFs;
use walq::{
    Durability, EnqueueOptions, ErrorKind, ManualClock, Options, Priority, Queue, Retry, Store,
    DEFAULT_QUEUE, MAX_QUEUES,
};

fn open(dir: &Path, clock: &ManualClock) -> Store {
    Store::open_with(dir, common::opts(clock)).expect("open store")
}

/// A new store in a temporary directory, on a manual clock at 1,000 s.
fn fresh() -> (tempfile::TempDir, ManualClock, Store) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let store = open(dir.path(), &clock);
    (dir, clock, store)
}

fn payload(job: &walq::Job) -> String {
    String::from_utf8(job.payload().to_vec()).expect("utf-8")
}

/// Leases every ready job of `q`, acking each: their payloads in order.
fn drain(q: &Queue) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(job) = q.dequeue().expect("dequeue") {
        out.push(payload(&job));
        q.ack(job.receipt()).expect("ack");
    }
    out
}

/// The ready payloads of `q`, leased and not settled.
fn lease_all(q: &Queue) -> Vec<String> {
    common::lease_all(q).iter().map(payload).collect()
}

#[test]
fn a_dequeue_returns_only_its_own_queues_jobs() {
    let (_dir, _clock, store) = fresh();
    let (a, b) = (
        store.queue("emails").unwrap(),
        store.queue("reports").unwrap(),
    );
    let default = store.default_queue();
    for i in 0..3 {
        a.enqueue(format!("a{i}").as_bytes()).unwrap();
        b.enqueue(format!("b{i}").as_bytes()).unwrap();
        default.enqueue(format!("d{i}").as_bytes()).unwrap();
    }
    b.enqueue_batch([b"b3", b"b4"]).unwrap();
    assert_eq!(lease_all(&a), ["a0", "a1", "a2"]);
    assert!(a.dequeue().unwrap().is_none(), "queue a is empty");
    let bs: Vec<String> = b.dequeue_batch(10).unwrap().iter().map(payload).collect();
    assert_eq!(bs, ["b0", "b1", "b2", "b3", "b4"]);
    assert_eq!(drain(&default), ["d0", "d1", "d2"]);
    // Job ids are the store's: no two queues share one.
    let ids: std::collections::HashSet<u64> = (0..3)
        .map(|i| a.enqueue(format!("x{i}").as_bytes()).unwrap())
        .chain((0..3).map(|i| b.enqueue(format!("y{i}").as_bytes()).unwrap()))
        .collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(a.name(), "emails");
    assert_eq!(default.name(), DEFAULT_QUEUE);
    store.default_queue().check_invariants();
}

#[test]
fn priorities_delays_and_groups_work_within_each_queue() {
    let (_dir, clock, store) = fresh();
    let (a, b) = (store.queue("a").unwrap(), store.queue("b").unwrap());
    a.enqueue(b"a-normal").unwrap();
    a.enqueue_with(
        b"a-urgent",
        EnqueueOptions::new().priority(Priority::Urgent),
    )
    .unwrap();
    a.enqueue_with(
        b"a-later",
        EnqueueOptions::new().delay(Duration::from_secs(5)),
    )
    .unwrap();
    b.enqueue_with(b"b-g1", EnqueueOptions::new().group("g"))
        .unwrap();
    b.enqueue_with(b"b-g2", EnqueueOptions::new().group("g"))
        .unwrap();
    // The same group key on queue a is another group.
    a.enqueue_with(b"a-g1", EnqueueOptions::new().group("g"))
        .unwrap();
    let first = a.dequeue().unwrap().unwrap();
    assert_eq!(payload(&first), "a-urgent");
    let g1 = b.dequeue().unwrap().unwrap();
    assert_eq!(payload(&g1), "b-g1");
    assert!(b.dequeue().unwrap().is_none(), "b-g2 waits for b-g1");
    assert_eq!(lease_all(&a), ["a-normal", "a-g1"]);
    b.ack(g1.receipt()).unwrap();
    assert_eq!(lease_all(&b), ["b-g2"]);
    clock.advance(Duration::from_secs(6));
    assert_eq!(lease_all(&a), ["a-later"]);
    store.default_queue().check_invariants();
}

#[test]
fn idempotency_keys_are_scoped_per_queue() {
    let (dir, clock, store) = fresh();
    let (a, b) = (store.queue("a").unwrap(), store.queue("b").unwrap());
    let default = store.default_queue();
    let key = || EnqueueOptions::new().idempotency_key("signup/ada");
    let on_a = a.enqueue_with(b"a", key()).unwrap();
    let on_b = b.enqueue_with(b"b", key()).unwrap();
    let on_default = default.enqueue_with(b"d", key()).unwrap();
    assert!(!on_a.duplicate && !on_b.duplicate && !on_default.duplicate);
    assert_ne!(on_a.id, on_b.id);
    let again = a.enqueue_with(b"a again", key()).unwrap();
    assert_eq!((again.id, again.duplicate), (on_a.id, true));
    drop((a, b, default));
    drop(store);
    // After a full scan (no checkpoint: named queues have live jobs) the
    // keys are still scoped.
    let store = open(dir.path(), &clock);
    let b = store.queue("b").unwrap();
    let again = b.enqueue_with(b"b again", key()).unwrap();
    assert_eq!((again.id, again.duplicate), (on_b.id, true));
    let c = store.queue("c").unwrap();
    assert!(!c.enqueue_with(b"c", key()).unwrap().duplicate);
}

#[test]
fn stats_per_queue_and_for_the_store() {
    let (_dir, _clock, store) = fresh();
    let (a, b) = (store.queue("a").unwrap(), store.queue("b").unwrap());
    let default = store.default_queue();
    for _ in 0..3 {
        a.enqueue(b"a").unwrap();
    }
    b.enqueue(b"b").unwrap();
    b.enqueue_with(
        b"b later",
        EnqueueOptions::new().delay(Duration::from_secs(9)),
    )
    .unwrap();
    default.enqueue(b"d").unwrap();
    let _leased = a.dequeue().unwrap().unwrap();
    let sa = a.stats();
    assert_eq!((sa.ready, sa.delayed, sa.in_flight), (2, 0, 1));
    let sb = b.stats();
    assert_eq!((sb.ready, sb.delayed, sb.in_flight), (1, 1, 0));
    let sd = default.stats();
    assert_eq!((sd.ready, sd.delayed, sd.in_flight), (1, 0, 0));
    let all = store.stats();
    assert_eq!(
        (all.total.ready, all.total.delayed, all.total.in_flight),
        (4, 1, 1)
    );
    let names: Vec<&str> = all.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["default", "a", "b"]);
    assert_eq!(
        (all.queues[1].ready, all.queues[1].in_flight),
        (2, 1),
        "queue a in the store's list"
    );
    assert_eq!(all.total.enqueued_total, 6);
}

/// Every job of `store`'s queues, leased: `(queue, payload)`, sorted.
fn contents(store: &Store, names: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in names {
        let q = store.queue(name).unwrap();
        out.extend(lease_all(&q).into_iter().map(|p| (name.to_string(), p)));
    }
    out.sort();
    out
}

fn fill(store: &Store) -> Vec<(String, String)> {
    let mut expect = Vec::new();
    for name in ["a", "b", "default"] {
        let q = store.queue(name).unwrap();
        for i in 0..4 {
            let p = format!("{name}-{i}");
            let opts = EnqueueOptions::new().priority(if i % 2 == 0 {
                Priority::Normal
            } else {
                Priority::High
            });
            q.enqueue_with(p.as_bytes(), opts).unwrap();
            expect.push((name.to_string(), p));
        }
    }
    expect.sort();
    expect
}

#[test]
fn a_full_scan_keeps_each_job_in_its_queue() {
    let (dir, clock, store) = fresh();
    let expect = fill(&store);
    store.close().unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let store = open(dir.path(), &clock);
    let report = store.recovery_report().clone();
    assert!(!report.checkpoint_used);
    let why = report.checkpoint_fallback.unwrap_or_default();
    assert!(why.contains("missing"), "{why}");
    assert_eq!(contents(&store, &["a", "b", "default"]), expect);
    store.default_queue().check_invariants();
}

#[test]
fn a_reopen_from_the_checkpoint_keeps_each_job_in_its_queue() {
    let (dir, clock, store) = fresh();
    // Named queues used and drained: the close writes a checkpoint.
    for name in ["a", "b"] {
        let q = store.queue(name).unwrap();
        q.enqueue(b"old").unwrap();
        assert_eq!(drain(&q), ["old"]);
    }
    store.default_queue().enqueue(b"default-old").unwrap();
    store.close().unwrap();
    drop(store);
    let store = open(dir.path(), &clock);
    assert!(store.recovery_report().checkpoint_used);
    // The queues' definitions are before the checkpoint: they are written
    // again with the first job after it.
    let mut expect = fill(&store);
    expect.push(("default".into(), "default-old".into()));
    expect.sort();
    drop(store);
    let store = open(dir.path(), &clock);
    assert!(store.recovery_report().checkpoint_used);
    store.default_queue().check_invariants();
    assert_eq!(contents(&store, &["a", "b", "default"]), expect);
}

#[test]
fn a_single_queue_fixture_opens_as_the_default_queue() {
    for fixture in ["clean", "priorities", "batches"] {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture);
        let tmp = tempfile::tempdir().unwrap();
        let dir: PathBuf = tmp.path().join("q");
        std::fs::create_dir(&dir).unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        let clock = ManualClock::new(1_800_000_000_000);
        let via_queue = {
            let q = Queue::open_with(&dir, common::opts(&clock)).unwrap();
            let s = q.stats();
            drop(q);
            (s.ready, s.delayed)
        };
        let store = open(&dir, &clock);
        let all = store.stats();
        assert_eq!(all.queues.len(), 1, "{fixture}: only the default queue");
        assert_eq!(
            (all.queues[0].ready, all.queues[0].delayed),
            via_queue,
            "{fixture}"
        );
        assert!(via_queue.0 + via_queue.1 > 0, "{fixture} has jobs");
        let named = store.queue("emails").unwrap();
        assert!(named.dequeue().unwrap().is_none(), "{fixture}");
        // Acks free the next job of a group: at least the ready ones.
        let drained = drain(&store.default_queue());
        assert!(drained.len() as u64 >= via_queue.0, "{fixture}");
    }
}

#[test]
fn invalid_names_and_too_many_queues_are_clear_errors() {
    let (_dir, _clock, store) = fresh();
    let long = "x".repeat(65);
    for bad in ["", "a b", "emails/2", "ümlaut", long.as_str()] {
        let e = store.queue(bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidOptions, "{bad:?}");
        assert!(e.to_string().contains("1 to 64 bytes"), "{bad:?}: {e}");
    }
    // Held: a name only looked up counts while a handle refers to it.
    let mut held = vec![
        store.queue(&"y".repeat(64)).unwrap(),
        store.queue("v1.emails_high-prio").unwrap(),
    ];
    for i in 0..MAX_QUEUES - 2 {
        held.push(store.queue(&format!("q{i}")).unwrap());
    }
    let e = store.queue("one-too-many").unwrap_err();
    assert!(e.to_string().contains("at most 1024 named queues"), "{e}");
    // A known name is still handed out.
    assert!(store.queue("q0").is_ok());
}

/// The names of the queues `store.stats()` lists.
fn listed(store: &Store) -> Vec<String> {
    store.stats().queues.into_iter().map(|q| q.name).collect()
}

/// 1,024 names looked up and never enqueued to, their handles dropped,
/// leave room for new queues, and are not listed. Before, each kept a
/// definition until the store was reopened: every further new name was
/// refused with "at most 1024".
#[test]
fn names_only_looked_up_do_not_fill_the_queue_limit() {
    let (dir, clock, store) = fresh();
    for round in 0..3 {
        for i in 0..MAX_QUEUES {
            let q = store.queue(&format!("r{round}-looked-up-{i}")).unwrap();
            assert!(q.dequeue().unwrap().is_none());
        }
    }
    let jobs = store.queue("jobs").unwrap();
    jobs.enqueue(b"real work").unwrap();
    assert_eq!(listed(&store), ["default", "jobs"]);
    assert_eq!(jobs.name(), "jobs");
    store.default_queue().check_invariants();
    store.close().unwrap();
    drop((jobs, store));
    let store = open(dir.path(), &clock);
    assert_eq!(listed(&store), ["default", "jobs"]);
    assert_eq!(lease_all(&store.queue("jobs").unwrap()), ["real work"]);
}

/// A handle taken before the limit is reached and kept while thousands
/// of other names are looked up (and their definitions freed, their ids
/// given again) still enqueues to its own name: its job is in that queue,
/// live and after a reopen (from the checkpoint and by a full scan).
#[test]
fn a_handle_kept_across_the_limit_enqueues_to_its_own_name() {
    let (dir, clock, store) = fresh();
    let kept = store.queue("kept").unwrap();
    let also = kept.clone();
    drop(kept);
    let mut held = Vec::new();
    for i in 0..3 * MAX_QUEUES {
        let q = store.queue(&format!("other-{i}")).unwrap();
        if i % 512 == 0 {
            // A few held too, and not freed.
            held.push(q);
        }
    }
    // Listed while held, unlike the names whose handles are gone.
    let names = listed(&store);
    assert!(names.contains(&"kept".to_string()), "{names:?}");
    assert_eq!(names.len(), 2 + held.len(), "{names:?}");
    let id = also.enqueue(b"for kept").unwrap();
    assert_eq!(also.name(), "kept");
    assert_eq!(store.queue("kept").unwrap().stats().ready, 1);
    for q in &held {
        assert!(q.dequeue().unwrap().is_none(), "{}", q.name());
        assert_eq!(q.stats().ready, 0);
    }
    for i in [0, 1, 1000, 3000] {
        let other = store.queue(&format!("other-{i}")).unwrap();
        assert!(other.dequeue().unwrap().is_none(), "other-{i}");
    }
    assert!(matches!(
        also.status(id).unwrap(),
        walq::JobStatus::Queued { .. }
    ));
    store.default_queue().check_invariants();
    store.close().unwrap();
    drop((also, held, store));
    let copy = scanned(dir.path());
    for (dir, from_checkpoint) in [(copy.path(), false), (dir.path(), true)] {
        let store = open(dir, &clock);
        assert_eq!(store.recovery_report().checkpoint_used, from_checkpoint);
        assert_eq!(listed(&store), ["default", "kept"]);
        for i in [0, 512, 1024] {
            let other = store.queue(&format!("other-{i}")).unwrap();
            assert!(other.dequeue().unwrap().is_none(), "other-{i}");
        }
        assert_eq!(lease_all(&store.queue("kept").unwrap()), ["for kept"]);
    }
}

/// Names looked up while a checkpoint is written (their handles held)
/// are in it, not written: after the reopen nothing refers to them, so
/// they are neither listed nor counted.
#[test]
fn names_looked_up_at_a_checkpoint_are_not_kept_by_the_reopen() {
    let (dir, clock, store) = fresh();
    store.queue("used").unwrap().enqueue(b"x").unwrap();
    let held: Vec<Queue> = (0..MAX_QUEUES - 1)
        .map(|i| store.queue(&format!("held-{i}")).unwrap())
        .collect();
    assert_eq!(listed(&store).len(), MAX_QUEUES + 1);
    store.close().unwrap();
    drop((held, store));
    let store = open(dir.path(), &clock);
    assert!(store.recovery_report().checkpoint_used);
    assert_eq!(listed(&store), ["default", "used"]);
    let new = store.queue("new").unwrap();
    new.enqueue(b"y").unwrap();
    assert_eq!(lease_all(&new), ["y"]);
    assert_eq!(lease_all(&store.queue("used").unwrap()), ["x"]);
}

/// Queues in use count towards the limit whether or not a handle is
/// held: 1,024 that got a job (handles dropped, jobs finished or not)
/// refuse the 1,025th name with the clear error, live and after a reopen,
/// and so does a store whose queues were only given options.
#[test]
fn queues_in_use_still_refuse_the_1025th() {
    let (dir, clock, store) = fresh();
    for i in 0..MAX_QUEUES {
        let q = store.queue(&format!("used-{i}")).unwrap();
        q.enqueue(b"job").unwrap();
        if i % 2 == 0 {
            assert_eq!(drain(&q), ["job"]);
        }
    }
    let e = store.queue("one-more").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidOptions);
    assert!(e.to_string().contains("at most 1024 named queues"), "{e}");
    assert_eq!(listed(&store).len(), MAX_QUEUES + 1);
    store.close().unwrap();
    drop(store);
    let store = open(dir.path(), &clock);
    let e = store.queue("one-more").unwrap_err();
    assert!(e.to_string().contains("at most 1024 named queues"), "{e}");
    assert_eq!(lease_all(&store.queue("used-1").unwrap()), ["job"]);
    drop(store);

    let (_dir, _clock, store) = fresh();
    let opts = walq::QueueOptions::new().max_attempts(2);
    for i in 0..MAX_QUEUES {
        store
            .queue_with(&format!("opts-{i}"), opts.clone())
            .unwrap();
    }
    let e = store.queue("one-more").unwrap_err();
    assert!(e.to_string().contains("at most 1024 named queues"), "{e}");
}

/// A store at `/s` on a new simulated file system: a manual clock, every
/// record synced (`Durability::Sync`), no checkpoints.
fn sim_store() -> (SimFs, Store) {
    let fs = SimFs::new();
    let clock = ManualClock::new(1_700_000_000_000);
    let opts = Options::default()
        .clock(clock.clone())
        .durability(Durability::Sync)
        .checkpoint_every(0);
    let store = Store::open_on(Arc::new(fs.clone()), Path::new("/s"), opts).unwrap();
    (fs, store)
}

#[test]
fn an_enqueue_on_one_queue_and_an_ack_on_another_share_one_fsync() {
    let (fs, store) = sim_store();
    let (a, b) = (store.queue("a").unwrap(), store.queue("b").unwrap());
    let default = store.default_queue();
    b.enqueue(b"first").unwrap();
    let job = b.dequeue().unwrap().unwrap();
    a.enqueue(b"warm").unwrap();
    let written = || store.stats().total.written_lsn;
    fs.pause_syncs(true);
    let before = fs.syncs();
    let start = written();
    std::thread::scope(|s| {
        // A sync in flight (held): the records below queue up behind it.
        let blocker = s.spawn(|| default.enqueue(b"blocker").unwrap());
        fs.wait_paused_syncs(1);
        let t1 = s.spawn(|| a.enqueue(b"on a").unwrap());
        let t2 = s.spawn(|| b.ack(job.receipt()).unwrap());
        while written() < start + 3 {
            std::thread::yield_now();
        }
        fs.pause_syncs(false);
        for t in [blocker, t1] {
            t.join().unwrap();
        }
        t2.join().unwrap();
    });
    // The blocker's sync, then at most one more for the enqueue on a and
    // the ack on b together (a sync each would make three).
    let syncs = fs.syncs() - before;
    assert!(
        (1..=2).contains(&syncs),
        "{syncs} fdatasyncs for three records"
    );
    assert_eq!(a.stats().ready, 2);
    assert_eq!(b.stats().acked_total, 1);
}

/// The power-loss workload: enqueues on queues a and b and the default
/// queue, leases and acks across them. Returns the enqueues that returned
/// `Ok` with the number of syncs done by then: `(queue, payload, syncs)`.
fn two_queue_workload(store: &Store, fs: &SimFs) -> Vec<(String, String, u64, bool)> {
    let fs_syncs = || fs.syncs();
    let mut done = Vec::new();
    let names = ["a", "b", "default"];
    for i in 0..12u32 {
        let name = names[i as usize % 3];
        let Ok(q) = store.queue(name) else {
            return done;
        };
        let p = format!("{name}-{i}");
        let opts = EnqueueOptions::new().priority(if i % 4 == 1 {
            Priority::High
        } else {
            Priority::Normal
        });
        if q.enqueue_with(p.as_bytes(), opts).is_err() {
            return done;
        }
        done.push((name.to_string(), p, fs_syncs(), false));
        if i % 4 == 3 {
            // Ack one job of queue b: it may be gone after the cut.
            let Ok(b) = store.queue("b") else { return done };
            let Ok(Some(job)) = b.dequeue() else {
                return done;
            };
            let acked = payload(&job);
            if b.ack(job.receipt()).is_err() {
                return done;
            }
            if let Some(e) = done.iter_mut().find(|e| e.1 == acked) {
                e.3 = true;
            }
        }
    }
    done
}

#[test]
fn two_queues_survive_power_loss_at_every_sync_point() {
    let clock = ManualClock::new(1_700_000_000_000);
    let opts = || {
        Options::default()
            .clock(clock.clone())
            .durability(Durability::Sync)
            .segment_size(64 * 1024)
            .checkpoint_every(4 * 1024)
    };
    let base = SimFs::new();
    {
        let store = Store::open_on(Arc::new(base.clone()), Path::new("/s"), opts()).unwrap();
        two_queue_workload(&store, &base);
    }
    let total = base.syncs();
    assert!(total > 10, "{total} sync points");
    let mut checked = 0;
    for k in 0..=total {
        let fs = SimFs::new();
        fs.freeze_after_syncs(Some(k));
        let done = match Store::open_on(Arc::new(fs.clone()), Path::new("/s"), opts()) {
            Ok(store) => two_queue_workload(&store, &fs),
            Err(_) => Vec::new(),
        };
        for seed in 0..4 {
            let after = fs.power_loss(seed);
            let label = format!("frozen after sync {k}, power-loss seed {seed}");
            let store = Store::open_on(Arc::new(after), Path::new("/s"), opts())
                .unwrap_or_else(|e| panic!("{label}: open: {e}"));
            store.default_queue().check_invariants();
            let found = contents(&store, &["a", "b", "default"]);
            for (queue, p) in &found {
                assert!(
                    p.starts_with(&format!("{queue}-")),
                    "{label}: {p} in {queue}"
                );
            }
            for (queue, p, syncs, acked) in &done {
                if *syncs <= k && !acked {
                    assert!(
                        found.contains(&(queue.clone(), p.clone())),
                        "{label}: durable job {p} of {queue} is missing: {found:?}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked} crashes checked");
}

/// Default-queue traffic, drained, until the first segment of the store
/// in `dir` is reclaimed (at most 400 jobs of 2 KiB).
fn reclaim_first_segment(store: &Store, dir: &Path) {
    let first = common::segment_files(dir)[0].clone();
    let filler = vec![1u8; 2048];
    let default = store.default_queue();
    for _ in 0..400 {
        default.enqueue(&filler).unwrap();
        drain(&default);
        if !first.exists() {
            break;
        }
    }
    assert!(!first.exists(), "the first segment was reclaimed");
}

#[test]
fn a_named_queues_job_carried_forward_keeps_its_queue_after_a_full_scan() {
    let (dir, clock, store) = fresh();
    let a = store.queue("a").unwrap();
    a.enqueue_with(b"kept", EnqueueOptions::new().idempotency_key("k"))
        .unwrap();
    // Reclaims the segment holding the queue's definition and its job
    // (the job carried).
    reclaim_first_segment(&store, dir.path());
    assert!(store.stats().total.carried_total >= 1);
    drop(a);
    // Closed, not dropped: the checkpoint that reclaim made due may still
    // be waiting behind another one, and a drop leaves it out.
    store.close().unwrap();
    // By the full scan, and from the (version 4) checkpoint.
    let copy = scanned(dir.path());
    for (dir, from_checkpoint) in [(copy.path(), false), (dir.path(), true)] {
        let store = open(dir, &clock);
        let used = store.recovery_report().checkpoint_used;
        assert_eq!(used, from_checkpoint);
        let a = store.queue("a").unwrap();
        let dup = a
            .enqueue_with(b"again", EnqueueOptions::new().idempotency_key("k"))
            .unwrap();
        assert!(dup.duplicate, "the carried job's key is still scoped to a");
        assert_eq!(lease_all(&a), ["kept"]);
        assert!(store.default_queue().dequeue().unwrap().is_none());
    }
}

/// A drained queue's QueueDef is carried too when reclaim deletes its
/// segment: its remembered keys are scoped by its id, and a full scan that
/// met no QueueDef for the name gave it a new id, so the next enqueue with
/// a remembered key was taken for a new job (found by the kill -9 harness).
#[test]
fn a_drained_queues_definition_is_carried_with_its_keys() {
    let (dir, clock, store) = fresh();
    let a = store.queue("a").unwrap();
    a.enqueue_with(b"done", EnqueueOptions::new().idempotency_key("k"))
        .unwrap();
    assert_eq!(drain(&a), ["done"]);
    // A live job of another queue, so that "a" would get a new id.
    let b = store.queue("b").unwrap();
    b.enqueue(b"b-live").unwrap();
    reclaim_first_segment(&store, dir.path());
    drop((a, b));
    // Closed, not dropped (as above).
    store.close().unwrap();
    let copy = scanned(dir.path());
    for (dir, from_checkpoint) in [(copy.path(), false), (dir.path(), true)] {
        let store = open(dir, &clock);
        assert_eq!(store.recovery_report().checkpoint_used, from_checkpoint);
        let a = store.queue("a").unwrap();
        let dup = a
            .enqueue_with(b"again", EnqueueOptions::new().idempotency_key("k"))
            .unwrap();
        assert!(dup.duplicate, "the drained queue kept its id and its key");
        assert_eq!(lease_all(&store.queue("b").unwrap()), ["b-live"]);
    }
}

#[test]
fn each_queue_has_its_own_visibility_attempts_and_backoff() {
    use walq::{Backoff, JobStatus, QueueOptions};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    // The store: 30 s leases (common::opts), 5 attempts, 1 s backoff.
    let store = Store::open_with(
        dir.path(),
        common::opts(&clock).max_attempts(5).backoff(Backoff {
            initial: Duration::from_secs(1),
            multiplier: 1.0,
            max: Duration::from_secs(1),
            jitter: 0.0,
        }),
    )
    .unwrap();
    let slow = store
        .queue_with(
            "slow",
            QueueOptions::new()
                .visibility_timeout(Duration::from_secs(600))
                .max_attempts(2)
                .backoff(Backoff {
                    initial: Duration::from_secs(100),
                    multiplier: 1.0,
                    max: Duration::from_secs(100),
                    jitter: 0.0,
                }),
        )
        .unwrap();
    let plain = store.queue("plain").unwrap();
    slow.enqueue(b"s").unwrap();
    plain.enqueue(b"p").unwrap();
    let s = slow.dequeue().unwrap().unwrap();
    let p = plain.dequeue().unwrap().unwrap();
    assert_eq!((s.max_attempts(), p.max_attempts()), (2, 5));
    // After 60 s the store's 30 s lease has expired, the queue's 600 s not.
    clock.advance(Duration::from_secs(60));
    assert!(matches!(
        store.default_queue().status(s.id()).unwrap(),
        JobStatus::InFlight { .. }
    ));
    let p2 = plain.dequeue().unwrap().expect("p's lease expired");
    assert_eq!(p2.id(), p.id());
    // A Backoff nack waits the queue's backoff (100 s), not the store's.
    slow.nack(s.receipt(), Retry::Backoff, "again").unwrap();
    plain.nack(p2.receipt(), Retry::Backoff, "again").unwrap();
    let due = |id| match store.default_queue().status(id).unwrap() {
        JobStatus::Delayed { due_ms, .. } => due_ms,
        other => panic!("{other:?}"),
    };
    let now = 1_000_000 + 60_000;
    assert_eq!((due(s.id()), due(p.id())), (now + 100_000, now + 1_000));
    // Options are checked, with the limit named.
    let e = store
        .queue_with("bad", QueueOptions::new().max_attempts(0))
        .unwrap_err();
    assert!(e.to_string().contains("1..=65535"), "{e}");
    let e = store
        .queue_with(
            "bad",
            QueueOptions::new().visibility_timeout(Duration::ZERO),
        )
        .unwrap_err();
    assert!(e.to_string().contains("at least 1 ms"), "{e}");
}

#[test]
fn a_dead_letter_remembers_its_queue_and_level_and_a_redrive_returns_it_there() {
    let (dir, clock, store) = fresh();
    let a = store.queue("a").unwrap();
    let keyed = || {
        EnqueueOptions::new()
            .idempotency_key("once")
            .priority(Priority::High)
    };
    let id = a.enqueue_with(b"fragile", keyed()).unwrap().id;
    let job = a.dequeue().unwrap().unwrap();
    a.fail(job.receipt(), "boom").unwrap();
    let letter = a.dead_letter(id).unwrap().expect("dead");
    assert_eq!(
        (letter.queue.as_str(), letter.priority),
        ("a", Priority::High)
    );
    // Its key is still queue a's (a duplicate there, new elsewhere).
    assert!(a.enqueue_with(b"again", keyed()).unwrap().duplicate);
    let d = store.default_queue();
    assert!(!d.enqueue_with(b"elsewhere", keyed()).unwrap().duplicate);
    drain(&d);
    drop((a, d));
    store.close().unwrap();
    drop(store);
    // After a reopen the dead letter still names its queue, and a redrive
    // returns it there, at its level.
    let store = open(dir.path(), &clock);
    let a = store.queue("a").unwrap();
    assert!(a.enqueue_with(b"again", keyed()).unwrap().duplicate);
    a.redrive(id).unwrap();
    assert!(store.default_queue().dequeue().unwrap().is_none());
    let back = a.dequeue().unwrap().expect("redriven to a");
    assert_eq!((back.id(), back.priority()), (id, Priority::High));
    a.ack(back.receipt()).unwrap();
    store.default_queue().check_invariants();
    // A default-queue dead letter is still kind 6 and goes back there.
    let d = store.default_queue();
    let plain = d.enqueue(b"plain").unwrap();
    let job = d.dequeue().unwrap().unwrap();
    d.fail(job.receipt(), "boom").unwrap();
    assert_eq!(d.dead_letter(plain).unwrap().unwrap().queue, DEFAULT_QUEUE);
    d.redrive(plain).unwrap();
    assert_eq!(d.dequeue().unwrap().unwrap().id(), plain);
}

/// The queue names of `n` leases from `pool`, each acked.
fn lease_names(pool: &walq::worker::MultiQueue, store: &Store, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        let Some((name, job)) = pool
            .lease_from(Duration::from_secs(30), Duration::ZERO)
            .unwrap()
        else {
            break;
        };
        store.default_queue().ack(job.receipt()).unwrap();
        names.push(name);
    }
    names
}

#[test]
fn a_pool_over_several_queues_follows_the_weights_and_skips_empty_queues() {
    use walq::worker::MultiQueue;
    let (_dir, _clock, store) = fresh();
    for (name, n) in [("a", 40), ("b", 40), ("c", 0)] {
        let q = store.queue(name).unwrap();
        for i in 0..n {
            q.enqueue(format!("{name}{i}").as_bytes()).unwrap();
        }
    }
    let pool = MultiQueue::new(&store)
        .queue("a", 3)
        .unwrap()
        .queue("b", 1)
        .unwrap()
        .queue("c", 4)
        .unwrap();
    // While a and b are backlogged (c empty, costing nothing), every
    // window of 4 leases gives a three and b one.
    let names = lease_names(&pool, &store, 40);
    for w in names.windows(4) {
        let a = w.iter().filter(|n| *n == "a").count();
        assert_eq!(a, 3, "window {w:?} in {names:?}");
    }
    // Jobs on c: it gets 4 of every 8 while all three are busy.
    let c = store.queue("c").unwrap();
    for i in 0..40 {
        c.enqueue(format!("c{i}").as_bytes()).unwrap();
    }
    let names = lease_names(&pool, &store, 16);
    for w in names.windows(8) {
        let count = |q: &str| w.iter().filter(|n| *n == q).count();
        assert_eq!((count("a"), count("b"), count("c")), (3, 1, 4), "{w:?}");
    }
    // Drained to the last job, then nothing (at once: no wait).
    let rest = lease_names(&pool, &store, 1000);
    assert_eq!(names.len() + rest.len() + 40, 120);
    assert!(pool
        .lease_from(Duration::from_secs(1), Duration::ZERO)
        .unwrap()
        .is_none());
    // Weights and names are checked.
    let e = MultiQueue::new(&store).queue("a", 0).unwrap_err();
    assert!(e.to_string().contains("1..=1000"), "{e}");
    let e = MultiQueue::new(&store)
        .queue("a", 1)
        .unwrap()
        .queue("a", 2)
        .unwrap_err();
    assert!(e.to_string().contains("already"), "{e}");
}

/// A queue that was empty for a while and is refilled gets its weight in
/// every window of `W` leases at once. Before, it kept the negative
/// credit of its last lease while it was out of the pick: with weights
/// a=5, b=1, c=1, b drained, 3 leases, b refilled, the first window of
/// 7 was `aaacaaa` (a review found it).
#[test]
fn a_refilled_queue_gets_its_weight_in_every_window_at_once() {
    use walq::worker::MultiQueue;
    let (_dir, _clock, store) = fresh();
    for (name, n) in [("a", 200), ("b", 1), ("c", 200)] {
        let q = store.queue(name).unwrap();
        for i in 0..n {
            q.enqueue(format!("{name}{i}").as_bytes()).unwrap();
        }
    }
    let pool = MultiQueue::new(&store)
        .queue("a", 5)
        .unwrap()
        .queue("b", 1)
        .unwrap()
        .queue("c", 1)
        .unwrap();
    let mut names = Vec::new();
    while !names.contains(&"b".to_string()) {
        names.extend(lease_names(&pool, &store, 1));
    }
    // b is empty: a and c share 5:1, every window of 6.
    let without_b = lease_names(&pool, &store, 3 + 12);
    for w in without_b[3..].windows(6) {
        let c = w.iter().filter(|n| *n == "c").count();
        assert_eq!(c, 1, "window {w:?} in {without_b:?}");
    }
    let b = store.queue("b").unwrap();
    for i in 0..50 {
        b.enqueue(format!("b{i}").as_bytes()).unwrap();
    }
    let names = lease_names(&pool, &store, 35);
    for w in names.windows(7) {
        let count = |q: &str| w.iter().filter(|n| *n == q).count();
        assert_eq!(
            (count("a"), count("b"), count("c")),
            (5, 1, 1),
            "{w:?} in {names:?}"
        );
    }
}

#[test]
fn a_worker_pool_serves_several_queues_and_a_waiting_lease_wakes_on_any() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use walq::worker::MultiQueue;
    use walq::{Outcome, WorkerPool};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let pool_queues = MultiQueue::new(&store)
        .queue("emails", 2)
        .unwrap()
        .queue("reports", 1)
        .unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let counted = seen.clone();
    let pool = WorkerPool::builder(pool_queues)
        .workers(2)
        .start(move |_ctx, payload: &[u8]| {
            let bit = if payload.starts_with(b"e") {
                1
            } else {
                1 << 32
            };
            counted.fetch_add(bit, Ordering::SeqCst);
            Outcome::done()
        })
        .unwrap();
    // Enqueued after the workers wait: each wakes a waiting lease.
    for i in 0..5 {
        store
            .queue("emails")
            .unwrap()
            .enqueue(format!("e{i}").as_bytes())
            .unwrap();
        store
            .queue("reports")
            .unwrap()
            .enqueue(format!("r{i}").as_bytes())
            .unwrap();
    }
    // A guard against a hang, not a timing assertion.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while pool.stats().processed() < 10 {
        assert!(std::time::Instant::now() < deadline, "the pool stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.shutdown(Duration::from_secs(5));
    assert_eq!(seen.load(Ordering::SeqCst), 5 | (5 << 32));
    let all = store.stats();
    assert_eq!((all.total.ready, all.total.in_flight), (0, 0));
}

/// Writes the `named_queues` fixture's store into `dir`: two named queues
/// and the default one with pending jobs (levels, a delay), one job
/// leased when the store closed, and a dead letter of a named queue
/// (dead.wal kind 13). Named queues have live jobs, so no checkpoint.
fn gen_named_queues(dir: &Path) {
    let clock = ManualClock::new(1_750_000_000_000);
    let opts = Options::default()
        .clock(clock.clone())
        .segment_size(64 * 1024)
        .durability(Durability::Sync)
        .visibility_timeout(Duration::from_secs(30))
        .jitter_seed(7);
    let store = Store::open_with(dir, opts).unwrap();
    let (emails, reports) = (
        store.queue("emails").unwrap(),
        store.queue("reports").unwrap(),
    );
    emails.enqueue(b"e-dead").unwrap();
    let job = emails.dequeue().unwrap().unwrap();
    emails.fail(job.receipt(), "bounced").unwrap();
    emails.enqueue(b"e-1").unwrap();
    emails
        .enqueue_with(
            b"e-urgent",
            EnqueueOptions::new().priority(Priority::Urgent),
        )
        .unwrap();
    reports
        .enqueue_with(b"r-leased", EnqueueOptions::new().idempotency_key("r"))
        .unwrap();
    reports
        .enqueue_with(
            b"r-later",
            EnqueueOptions::new().delay(Duration::from_secs(60)),
        )
        .unwrap();
    store.default_queue().enqueue(b"d-1").unwrap();
    let leased = reports.dequeue().unwrap().unwrap();
    assert_eq!(leased.payload(), b"r-leased");
    store.close().unwrap();
    drop((emails, reports, store));
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name == walq::LOCK_FILE || name.ends_with(".spare") || name == "done.rec" {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
    }
}

/// `(queue, payload)` pairs.
type Pairs = Vec<(String, String)>;

/// What opening a copy of `src` finds: each queue's jobs (leased in
/// delivery order, after the delay), the dead letters with their queue.
fn named_fixture_contents(src: &Path) -> (Pairs, Pairs) {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let clock = ManualClock::new(1_750_000_000_000 + 3_600_000);
    let store = open(tmp.path(), &clock);
    store.default_queue().check_invariants();
    let dead = store
        .default_queue()
        .dead_letters()
        .unwrap()
        .into_iter()
        .map(|d| (d.queue, String::from_utf8(d.payload).unwrap()))
        .collect();
    let mut jobs = Vec::new();
    for name in ["emails", "reports", "default"] {
        let q = store.queue(name).unwrap();
        jobs.extend(lease_all(&q).into_iter().map(|p| (name.to_string(), p)));
    }
    (jobs, dead)
}

#[test]
fn the_named_queues_fixture_opens_with_each_job_in_its_queue() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/named_queues");
    let regen = std::env::var("WALQ_REGEN_FIXTURES");
    if matches!(regen.as_deref(), Ok("1") | Ok("named_queues")) {
        if fixture.exists() {
            std::fs::remove_dir_all(&fixture).unwrap();
        }
        std::fs::create_dir_all(&fixture).unwrap();
        gen_named_queues(&fixture);
    }
    let (jobs, dead) = named_fixture_contents(&fixture);
    let pairs = |v: &[(&str, &str)]| -> Pairs {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        jobs,
        pairs(&[
            ("emails", "e-urgent"),
            ("emails", "e-1"),
            // Due a minute after the enqueues; the leased one was released
            // at the open, an hour later.
            ("reports", "r-later"),
            ("reports", "r-leased"),
            ("default", "d-1"),
        ])
    );
    assert_eq!(dead, pairs(&[("emails", "e-dead")]));
    // This build writes the same store today.
    let fresh = tempfile::tempdir().unwrap();
    gen_named_queues(fresh.path());
    assert_eq!(named_fixture_contents(fresh.path()), (jobs, dead));
}

/// With the `tokio` feature: an async lease over several queues waits
/// without blocking its (only) runtime thread and wakes on an enqueue to
/// any of them.
#[cfg(feature = "tokio")]
#[tokio::test(flavor = "current_thread")]
async fn an_async_lease_over_several_queues_wakes_on_any_of_them() {
    use walq::worker::{AsyncBackend, MultiQueue};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let both = Arc::new(
        MultiQueue::new(&store)
            .queue("a", 1)
            .unwrap()
            .queue("b", 1)
            .unwrap(),
    );
    let waiter = {
        let both = both.clone();
        tokio::spawn(async move {
            both.lease_async(Duration::from_secs(30), Duration::from_secs(3600))
                .await
        })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished(), "nothing is ready: the lease waits");
    let id = store.queue("b").unwrap().enqueue(b"on b").unwrap();
    let got = tokio::time::timeout(Duration::from_secs(120), waiter)
        .await
        .expect("the enqueue on b woke the lease")
        .unwrap()
        .unwrap()
        .expect("a job");
    assert_eq!(got.id(), id);
}

#[test]
fn a_queue_definition_before_the_checkpoint_is_written_again_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let opts = || common::opts(&clock).checkpoint_every(4096);
    let store = Store::open_with(dir.path(), opts()).unwrap();
    let a = store.queue("a").unwrap();
    a.enqueue(b"first").unwrap();
    assert_eq!(drain(&a), ["first"]);
    // Default-queue traffic past the checkpoint interval: a checkpoint is
    // captured (no named-queue job is live), after queue a's definition.
    let default = store.default_queue();
    for _ in 0..8 {
        default.enqueue(&[7u8; 1024]).unwrap();
    }
    a.enqueue(b"second").unwrap();
    // No close: the next open starts from that checkpoint, and must find
    // queue a's definition in the log after it.
    drop((a, default));
    drop(store);
    let store = Store::open_with(dir.path(), opts()).unwrap();
    assert!(store.recovery_report().checkpoint_used);
    let names: Vec<String> = store.stats().queues.into_iter().map(|q| q.name).collect();
    assert_eq!(names, ["default", "a"]);
    assert_eq!(lease_all(&store.queue("a").unwrap()), ["second"]);
}

#[test]
fn a_full_disk_on_a_new_queues_first_job_does_not_poison_the_store() {
    use walq::vfs::{Fault, FaultOp};
    // One write per record (`pwrite` appends).
    let (fs, store) = sim_store();
    store.default_queue().enqueue(b"before").unwrap();
    let a = store.queue("a").unwrap();
    // The queue's definition is written, then the job's record hits ENOSPC.
    fs.set_fault(Some(Fault {
        op: FaultOp::Write,
        at: fs.op_count(FaultOp::Write) + 1,
        forever: false,
        kind: std::io::ErrorKind::StorageFull,
    }));
    let e = a.enqueue(b"refused").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    fs.set_fault(None);
    // Refused, but nothing is poisoned: both queues go on.
    a.enqueue(b"accepted").unwrap();
    store.default_queue().enqueue(b"after").unwrap();
    assert_eq!(lease_all(&a), ["accepted"]);
    store.default_queue().check_invariants();
}

/// Jobs on queues a, b and the default queue: levels, a delay, a group,
/// jobs acked and one left leased (released by the next open).
/// Returns the clock's time at the end.
fn mixed_workload(store: &Store, clock: &ManualClock) -> u64 {
    for round in 0..3 {
        for name in ["a", "b", "default"] {
            let q = store.queue(name).unwrap();
            for i in 0..6 {
                let p = format!("{name}-{round}-{i}");
                let opts = match i {
                    1 => EnqueueOptions::new().priority(Priority::High),
                    2 | 3 => EnqueueOptions::new().group(format!("g{round}")),
                    4 => EnqueueOptions::new().delay(Duration::from_secs(5)),
                    _ => EnqueueOptions::new(),
                };
                q.enqueue_with(&[p.as_bytes(), &[0u8; 200]].concat(), opts)
                    .unwrap();
            }
            let job = q.dequeue().unwrap().unwrap();
            q.ack(job.receipt()).unwrap();
        }
        clock.advance(Duration::from_secs(1));
    }
    // Left leased: released on the next open.
    let leased = store.queue("b").unwrap().dequeue().unwrap();
    assert!(leased.is_some());
    1_000_000 + 3_000
}

/// Every job of queues a, b and default in the order each queue serves
/// it (acking each, past every delay): `(queue, id, payload)`.
fn drain_order(dir: &Path, at_ms: u64) -> (walq::RecoveryReport, Vec<(String, u64, String)>) {
    let clock = ManualClock::new(at_ms);
    let store = open(dir, &clock);
    let report = store.recovery_report().clone();
    store.default_queue().check_invariants();
    let names: Vec<String> = store.stats().queues.into_iter().map(|q| q.name).collect();
    assert_eq!(names, ["default", "a", "b"]);
    clock.advance(Duration::from_secs(60));
    let mut out = Vec::new();
    for name in ["a", "b", "default"] {
        let q = store.queue(name).unwrap();
        while let Some(job) = q.dequeue().unwrap() {
            let p = String::from_utf8_lossy(job.payload())
                .trim_end_matches('\0')
                .to_string();
            out.push((name.to_string(), job.id(), p));
            q.ack(job.receipt()).unwrap();
        }
    }
    (report, out)
}

/// The checkpoint's version (bytes 8..10).
fn checkpoint_version(dir: &Path) -> u16 {
    let b = std::fs::read(dir.join("CHECKPOINT")).unwrap();
    u16::from_le_bytes([b[8], b[9]])
}

/// Checks that `dir` opens from its checkpoint to the same jobs, queues
/// and order as the full scan, with every job in its own queue.
fn same_as_the_scan(dir: &Path, at_ms: u64) {
    let copy = scanned(dir);
    let (scan_report, want) = drain_order(copy.path(), at_ms);
    assert!(!scan_report.checkpoint_used);
    let (report, got) = drain_order(dir, at_ms);
    assert!(report.checkpoint_used, "{report:?}");
    assert_eq!(got, want);
    assert_eq!(got.len(), 3 * 3 * 5, "every job not acked");
    for (queue, _, p) in &got {
        assert!(p.starts_with(&format!("{queue}-")), "{p} in {queue}");
    }
}

#[test]
fn a_clean_close_with_named_jobs_live_reopens_from_a_version_4_checkpoint() {
    let (dir, clock, store) = fresh();
    let now = mixed_workload(&store, &clock);
    store.close().unwrap();
    drop(store);
    assert_eq!(checkpoint_version(dir.path()), 4);
    let clock2 = ManualClock::new(now);
    let store = open(dir.path(), &clock2);
    let report = store.recovery_report().clone();
    assert!(report.checkpoint_used, "{report:?}");
    assert_eq!(report.records, 0, "nothing replayed after the checkpoint");
    drop(store);
    same_as_the_scan(dir.path(), now);
}

#[test]
fn a_crash_with_named_jobs_live_reopens_from_a_periodic_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let store = Store::open_with(dir.path(), common::opts(&clock).checkpoint_every(2048)).unwrap();
    let now = mixed_workload(&store, &clock);
    // No close.
    drop(store);
    assert_eq!(checkpoint_version(dir.path()), 4);
    same_as_the_scan(dir.path(), now);
}

#[test]
fn a_damaged_queue_section_falls_back_to_the_scan() {
    let (dir, clock, store) = fresh();
    let now = mixed_workload(&store, &clock);
    store.close().unwrap();
    drop(store);
    let good = std::fs::read(dir.path().join("CHECKPOINT")).unwrap();
    let n = good.len() - 4;
    let (_, want) = drain_order(scanned(dir.path()).path(), now);
    // The section ends with (job id u64, queue id u16) entries: the last
    // job's queue id, and its id moved past every live job (CRC made
    // right again, as a forger would), then one byte flipped as is.
    let forged = |edit: &dyn Fn(&mut Vec<u8>), reseal: bool| {
        let mut b = good.clone();
        edit(&mut b);
        if reseal {
            let crc = crc32fast::hash(&b[128..n]);
            b[n..].copy_from_slice(&crc.to_le_bytes());
        }
        b
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (forged(&|b| b[n - 2] ^= 0x40, true), "not listed"),
        (forged(&|b| b[n - 4] ^= 0x40, true), "not live"),
        (forged(&|b| b[n - 2] ^= 0x01, false), "checksum"),
    ];
    for (bytes, why) in cases {
        let copy = scanned(dir.path());
        std::fs::write(copy.path().join("CHECKPOINT"), &bytes).unwrap();
        let (report, got) = drain_order(copy.path(), now);
        assert!(!report.checkpoint_used, "{why}");
        let reason = report.checkpoint_fallback.unwrap_or_default();
        assert!(reason.contains(why), "{why}: {reason}");
        assert_eq!(got, want, "{why}");
    }
}

/// Queue b's keyed job is finished (its key is in the dedup window); with
/// `a_live`, queue a has a live job. The checkpoint is version 4 either
/// way (it names every queue the store knows), so after an open from it,
/// as after the scan, a new queue gets an id of its own and b keeps its
/// key.
fn keys_stay_with_their_queue_across_a_checkpoint(a_live: bool) {
    let (dir, clock, store) = fresh();
    let key = || EnqueueOptions::new().idempotency_key("once");
    let b = store.queue("b").unwrap();
    b.enqueue_with(b"b-done", key()).unwrap();
    assert_eq!(drain(&b), ["b-done"]);
    if a_live {
        store.queue("a").unwrap().enqueue(b"a-live").unwrap();
    }
    store.close().unwrap();
    drop((b, store));
    assert_eq!(checkpoint_version(dir.path()), 4);
    let copy = scanned(dir.path());
    for (dir, from_checkpoint) in [(copy.path(), false), (dir.path(), true)] {
        let store = open(dir, &clock);
        assert_eq!(store.recovery_report().checkpoint_used, from_checkpoint);
        let c = store.queue("c").unwrap();
        assert!(!c.enqueue_with(b"c", key()).unwrap().duplicate);
        let b = store.queue("b").unwrap();
        assert!(b.enqueue_with(b"b-again", key()).unwrap().duplicate);
        let live: &[&str] = if a_live { &["a-live"] } else { &[] };
        assert_eq!(lease_all(&store.queue("a").unwrap()), live);
    }
}

#[test]
fn a_queue_without_live_jobs_keeps_its_id_and_keys_across_a_checkpoint() {
    keys_stay_with_their_queue_across_a_checkpoint(true);
}

/// The same when no named queue has a live job at all (the checkpoint was
/// version 3 then, naming no queue, and a new job was taken for a
/// duplicate).
#[test]
fn a_store_whose_named_queues_are_all_drained_keeps_their_ids_across_a_checkpoint() {
    keys_stay_with_their_queue_across_a_checkpoint(false);
}

/// The key of a finished job of a named queue stays known for its dedup
/// window, as on the default queue: carried with its queue (record kind
/// 16) when reclaim deletes the segment of its enqueue, and kept when its
/// dead letter is purged; across a reopen (scan and checkpoint) too.
/// Before, a Key record named no queue, and both forgot it at once.
#[test]
fn a_named_queues_keys_outlive_reclaim_and_purge() {
    let (dir, clock, store) = fresh();
    let a = store.queue("a").unwrap();
    let key = |k: &str| EnqueueOptions::new().idempotency_key(k);
    a.enqueue_with(b"acked", key("acked")).unwrap();
    assert_eq!(drain(&a), ["acked"]);
    a.enqueue_with(b"dead", key("dead")).unwrap();
    let job = a.dequeue().unwrap().unwrap();
    a.fail(job.receipt(), "boom").unwrap();
    a.purge(job.id()).unwrap();
    // Fill and drain the default queue until the first segment is gone.
    let filler = vec![0u8; 20 * 1024];
    let first = dir.path().join("0000000001.wal");
    while first.exists() {
        store.default_queue().enqueue(&filler).unwrap();
        drain(&store.default_queue());
    }
    let duplicate = |a: &Queue, k: &str| a.enqueue_with(b"again", key(k)).unwrap().duplicate;
    assert!(duplicate(&a, "acked"), "forgotten after reclaim");
    assert!(duplicate(&a, "dead"), "forgotten after purge");
    store.close().unwrap();
    drop((a, store));
    let copy = scanned(dir.path());
    for dir in [copy.path(), dir.path()] {
        let store = open(dir, &clock);
        let a = store.queue("a").unwrap();
        assert!(duplicate(&a, "acked"), "forgotten after a reopen");
        assert!(duplicate(&a, "dead"), "forgotten after a reopen");
        // Scoped: the same keys on another queue are new jobs.
        let b = store.queue("b").unwrap();
        assert!(!duplicate(&b, "acked"));
    }
}

/// A nack makes its job ready at once: the consumer waiting on that job's
/// queue must wake, though a consumer of another queue of the store waits
/// on the same condition variable, and waited first. `nack` woke one
/// waiter, the first, so the job's own consumer slept its whole wait (a
/// review found it). Here both wait ten minutes; A's must have the job
/// within the liveness bound of a minute.
#[test]
fn a_nack_wakes_the_consumer_of_its_own_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = store.queue("a").unwrap();
    let b = store.queue("b").unwrap();
    a.enqueue(b"job").unwrap();
    let long = Duration::from_secs(600);
    // A lease as long as the waits: its expiry wakes no one meanwhile.
    let job = a.dequeue_for(long).unwrap().expect("the job");
    let b_waits = std::thread::spawn(move || b.dequeue_wait(long, long).unwrap().map(|j| j.id()));
    // B's consumer first in line (if it is not yet, the test is weaker,
    // not wrong).
    std::thread::sleep(Duration::from_millis(200));
    let (tx, rx) = std::sync::mpsc::channel();
    let a2 = a.clone();
    std::thread::spawn(move || tx.send(a2.dequeue_wait(long, long).unwrap().map(|j| j.id())));
    std::thread::sleep(Duration::from_millis(200));
    a.nack(job.receipt(), Retry::After(Duration::ZERO), "again")
        .unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("A's consumer woke for the job (liveness bound: a minute)");
    assert_eq!(got, Some(job.id()), "A's consumer got the job back");
    // Wake B's consumer with a job of its own, so that the test ends.
    store.queue("b").unwrap().enqueue(b"b's").unwrap();
    assert!(b_waits.join().unwrap().is_some());
}

/// A clock that counts its readings: a blocking wait reads it once per
/// round, so the count says how often a waiter woke.
#[derive(Clone)]
struct CountingClock(Arc<std::sync::atomic::AtomicU64>);

impl walq::Clock for CountingClock {
    fn now_ms(&self) -> u64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        1_000_000
    }
    fn monotonic_ms(&self) -> u64 {
        1_000_000
    }
}

/// A consumer of queue B waiting while queue A holds a ready job that no
/// one consumes sleeps until its wait ends: it woke every millisecond
/// (a review measured 70 ms of CPU in a 3 s wait), because its next
/// wakeup looked at every queue's due jobs. Counted, not timed: the clock
/// is read once per round of the wait.
#[test]
fn a_consumer_does_not_spin_on_another_queues_ready_job() {
    let dir = tempfile::tempdir().unwrap();
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clock = CountingClock(reads.clone());
    let store = Store::open_with(dir.path(), Options::default().clock(clock)).unwrap();
    let a = store.queue("a").unwrap();
    let b = store.queue("b").unwrap();
    a.enqueue(b"nobody takes me").unwrap();
    let before = reads.load(std::sync::atomic::Ordering::Relaxed);
    let got = b
        .dequeue_wait(Duration::from_secs(30), Duration::from_millis(300))
        .unwrap();
    assert!(got.is_none());
    let rounds = reads.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(rounds < 50, "B's consumer woke {rounds} times in 300 ms");
    assert_eq!(a.stats().ready, 1);
}

/// Starts `n` threads, each waiting up to ten minutes for a job of `q`
/// with `dequeue_wait`, and returns once all of them wait; each sends the
/// payload it got. Counted, not timed: a blocking wait reads `clock` once
/// per look, under the store's lock, and waits under the same hold, so
/// once `n` looks were counted the next operation finds them all waiting.
fn blocked_consumers(
    q: &Queue,
    reads: &std::sync::atomic::AtomicU64,
    n: u64,
) -> std::sync::mpsc::Receiver<Option<String>> {
    let long = Duration::from_secs(600);
    let before = reads.load(std::sync::atomic::Ordering::SeqCst);
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..n {
        let (q, tx) = (q.clone(), tx.clone());
        std::thread::spawn(move || {
            let got = q.dequeue_wait(long, long).unwrap();
            let _ = tx.send(got.as_ref().map(payload));
        });
    }
    while reads.load(std::sync::atomic::Ordering::SeqCst) < before + n {
        std::thread::yield_now();
    }
    rx
}

/// One `ack_batch` that frees the next job of two groups of one queue
/// makes two jobs ready at once: two blocked consumers of that queue must
/// both wake (one wake for the two left the second asleep for its whole
/// wait while a job was ready). Both wait ten minutes; each must have a
/// job within the liveness bound of a minute.
#[test]
fn two_group_jobs_freed_at_once_wake_two_consumers_of_their_queue() {
    let dir = tempfile::tempdir().unwrap();
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clock = CountingClock(reads.clone());
    let store = Store::open_with(dir.path(), Options::default().clock(clock)).unwrap();
    let b = store.queue("b").unwrap();
    for (group, job) in [("g1", "h1"), ("g2", "h2"), ("g1", "n1"), ("g2", "n2")] {
        b.enqueue_with(job.as_bytes(), EnqueueOptions::new().group(group))
            .unwrap();
    }
    let long = Duration::from_secs(600);
    let heads: Vec<_> = (0..2)
        .map(|_| b.dequeue_for(long).unwrap().expect("a head").receipt())
        .collect();
    let got = blocked_consumers(&b, &reads, 2);
    assert!(b.ack_batch(&heads).unwrap().iter().all(Result::is_ok));
    let mut payloads: Vec<_> = (0..2)
        .map(|_| {
            got.recv_timeout(Duration::from_secs(60))
                .expect("each consumer woke for a freed job (liveness bound: a minute)")
        })
        .collect();
    payloads.sort();
    assert_eq!(payloads, [Some("n1".to_string()), Some("n2".to_string())]);
}

#[test]
fn a_multi_queue_cancels_a_job_in_whichever_queue_holds_it() {
    use walq::worker::{Backend, JobStatus, MultiQueue};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, b) = (store.queue("a").unwrap(), store.queue("b").unwrap());
    let in_b = b.enqueue(b"b").unwrap();
    let in_a = a.enqueue(b"a").unwrap();
    let pool = MultiQueue::new(&store)
        .queue("a", 1)
        .unwrap()
        .queue("b", 1)
        .unwrap();
    // The second queue's job: the first queue's NotFound is passed over.
    pool.cancel(in_b).unwrap();
    assert!(matches!(
        pool.status(in_b).unwrap(),
        JobStatus::Purged { .. }
    ));
    let leased = pool.lease(Duration::from_secs(30), Duration::ZERO).unwrap();
    assert_eq!(leased.as_ref().map(|d| d.id()), Some(in_a));
    // A leased job is refused by the queue that holds it.
    assert_eq!(pool.cancel(in_a).unwrap_err().kind(), ErrorKind::InFlight);
    assert!(pool
        .lease(Duration::from_secs(30), Duration::ZERO)
        .unwrap()
        .is_none());
    assert_eq!(pool.cancel(in_b).unwrap_err().kind(), ErrorKind::NotFound);
    let empty = MultiQueue::new(&store).cancel(in_a).unwrap_err();
    assert_eq!(empty.kind(), ErrorKind::InvalidOptions);
}

/// What a pool's handler saw: (`ctx.queue()`, payload) of each job.
type Seen = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// Runs a thread pool on `backend` until it has processed `n` jobs; what
/// its handler saw, sorted.
fn seen_by_pool<B: walq::worker::Backend>(backend: B, n: u64) -> Vec<(String, String)> {
    use walq::{Outcome, WorkerPool};
    let seen = Seen::default();
    let record = seen.clone();
    let pool = WorkerPool::builder(backend)
        .workers(2)
        .start(move |ctx, payload: &[u8]| {
            let payload = String::from_utf8_lossy(payload).into_owned();
            record
                .lock()
                .unwrap()
                .push((ctx.queue().to_string(), payload));
            Outcome::done()
        })
        .unwrap();
    // A guard against a hang, not a timing assertion.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while pool.stats().processed() < n {
        assert!(std::time::Instant::now() < deadline, "the pool stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.shutdown(Duration::from_secs(5));
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    seen
}

/// One job in each of "emails", "reports" and the default queue.
fn one_job_each(store: &Store) {
    for name in ["emails", "reports", DEFAULT_QUEUE] {
        let q = store.queue(name).unwrap();
        q.enqueue(format!("{name}-job").as_bytes()).unwrap();
    }
}

fn pair(queue: &str, payload: &str) -> (String, String) {
    (queue.to_string(), payload.to_string())
}

/// `JobContext::queue` names the queue each job was leased from: in a
/// pool over several queues (a `MultiQueue`, the default queue among
/// them, named "default"), in a pool on one named queue and in a pool on
/// the default queue. Before, a handler serving "emails" and "reports"
/// had to look inside the payload to tell them apart.
#[test]
fn a_handler_knows_which_queue_its_job_came_from() {
    use walq::worker::MultiQueue;
    let (_dir, _clock, store) = fresh();
    one_job_each(&store);
    let all = MultiQueue::new(&store)
        .queue("emails", 2)
        .unwrap()
        .queue("reports", 1)
        .unwrap()
        .queue(DEFAULT_QUEUE, 1)
        .unwrap();
    assert_eq!(
        seen_by_pool(all, 3),
        vec![
            pair("default", "default-job"),
            pair("emails", "emails-job"),
            pair("reports", "reports-job"),
        ]
    );
    one_job_each(&store);
    let reports = store.queue("reports").unwrap();
    assert_eq!(
        seen_by_pool(reports, 1),
        vec![pair("reports", "reports-job")]
    );
    assert_eq!(
        seen_by_pool(store.default_queue(), 1),
        vec![pair("default", "default-job")]
    );
    // A context made outside a pool (a handler's unit test).
    let ctx = walq::worker::JobContext::new(7);
    assert_eq!(ctx.queue(), DEFAULT_QUEUE);
    assert_eq!(ctx.with_queue("emails").queue(), "emails");
}

/// The async pool's leases (`MultiQueue`'s and `Queue`'s own async
/// paths) name the queue as the thread pool's do.
#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_handler_knows_which_queue_its_job_came_from() {
    use walq::worker::{AsyncBackend, JobContext, MultiQueue};
    use walq::{Outcome, WorkerPool};
    async fn seen_by_async_pool<B: AsyncBackend>(backend: B, n: u64) -> Vec<(String, String)> {
        let seen = Seen::default();
        let record = seen.clone();
        let pool = WorkerPool::builder(backend)
            .workers(2)
            .start_async(move |ctx: JobContext, payload: Vec<u8>| {
                let payload = String::from_utf8_lossy(&payload).into_owned();
                record
                    .lock()
                    .unwrap()
                    .push((ctx.queue().to_string(), payload));
                async { Outcome::done() }
            })
            .unwrap();
        // A guard against a hang, not a timing assertion.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while pool.stats().processed() < n {
            assert!(std::time::Instant::now() < deadline, "the pool stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pool.shutdown(Duration::from_secs(5)).await;
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        seen
    }
    let (_dir, _clock, store) = fresh();
    one_job_each(&store);
    let all = MultiQueue::new(&store)
        .queue(DEFAULT_QUEUE, 1)
        .unwrap()
        .queue("emails", 1)
        .unwrap()
        .queue("reports", 1)
        .unwrap();
    assert_eq!(
        seen_by_async_pool(all, 3).await,
        vec![
            pair("default", "default-job"),
            pair("emails", "emails-job"),
            pair("reports", "reports-job"),
        ]
    );
    one_job_each(&store);
    assert_eq!(
        seen_by_async_pool(store.queue("emails").unwrap(), 1).await,
        vec![pair("emails", "emails-job")]
    );
    assert_eq!(
        seen_by_async_pool(store.default_queue(), 1).await,
        vec![pair("default", "default-job")]
    );
}
