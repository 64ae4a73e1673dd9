//! Recurring jobs (`walq::schedule`): one job per due tick, across
//! restarts, crashes between the enqueue and the schedule file's update,
//! missed ticks, and schedulers taking turns on one directory.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use walq::schedule::{
    parse_tick_key, tick_key, Missed, Registered, Schedule, Scheduler, SCHEDULE_FILE,
};
use walq::{ErrorKind, ManualClock, Queue};

/// 2023-11-14T22:13:20Z.
const T0_MS: u64 = 1_700_000_000_000;
const T0: u64 = T0_MS / 1000;

fn setup() -> (tempfile::TempDir, ManualClock) {
    (tempfile::tempdir().unwrap(), ManualClock::new(T0_MS))
}

fn open(dir: &Path, clock: &ManualClock) -> (Queue, Scheduler) {
    let q = common::open(dir, clock);
    let s = Scheduler::open_with_clock(&q, clock.clone()).unwrap();
    (q, s)
}

/// Every ready job's (schedule, tick), leased and acked.
fn take_ticks(q: &Queue) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while let Some(job) = q.dequeue().unwrap() {
        let key = job.idempotency_key().expect("a scheduled job has a key");
        let (name, tick) = parse_tick_key(key).expect("a tick key");
        out.push((name.to_string(), tick));
        q.ack(job.receipt()).unwrap();
    }
    out
}

/// Counts per (schedule, tick); every count must be one.
fn assert_no_duplicates(ticks: &[(String, u64)]) {
    let mut counts = BTreeMap::new();
    for t in ticks {
        *counts.entry(t.clone()).or_insert(0) += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dups.is_empty(), "ticks enqueued more than once: {dups:?}");
}

/// Makes the next save of the schedule file fail after the jobs were
/// enqueued: a directory where its temporary file must be created. This
/// is a crash between the enqueue and the file update, as far as the
/// files are concerned.
fn block_saves(dir: &Path) -> impl Drop {
    struct Unblock(std::path::PathBuf);
    impl Drop for Unblock {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let tmp = dir.join(format!("{SCHEDULE_FILE}.tmp"));
    std::fs::create_dir(&tmp).unwrap();
    Unblock(tmp)
}

#[test]
fn each_due_tick_yields_exactly_one_job() {
    let (dir, clock) = setup();
    let (q, s) = open(dir.path(), &clock);
    s.register(Schedule::every("minutely", Duration::from_secs(60)).unwrap())
        .unwrap();
    s.register(
        Schedule::cron("five", "*/5 * * * *")
            .unwrap()
            .payload(b"5".to_vec()),
    )
    .unwrap();
    let mut ticks = Vec::new();
    // An hour, in steps of 20 s, ticking twice each time.
    for _ in 0..180 {
        clock.advance(Duration::from_secs(20));
        s.tick().unwrap();
        assert!(
            s.tick().unwrap().fired.is_empty(),
            "a second call fires nothing"
        );
        ticks.extend(take_ticks(&q));
    }
    assert_no_duplicates(&ticks);
    let end = T0 + 3600;
    let minutely: Vec<u64> = ticks
        .iter()
        .filter(|t| t.0 == "minutely")
        .map(|t| t.1)
        .collect();
    let expected: Vec<u64> = (T0 / 60 + 1..=end / 60).map(|m| m * 60).collect();
    assert_eq!(minutely, expected);
    let five: Vec<u64> = ticks
        .iter()
        .filter(|t| t.0 == "five")
        .map(|t| t.1)
        .collect();
    let expected: Vec<u64> = (T0 / 300 + 1..=end / 300).map(|m| m * 300).collect();
    assert_eq!(five, expected);
}

#[test]
fn jobs_carry_the_payload_and_max_attempts() {
    let (dir, clock) = setup();
    let (q, s) = open(dir.path(), &clock);
    let sched = Schedule::every("report", Duration::from_secs(10))
        .unwrap()
        .payload(b"build it".to_vec())
        .max_attempts(2)
        .unwrap();
    s.register(sched).unwrap();
    clock.advance(Duration::from_secs(10));
    let fired = s.tick().unwrap().fired;
    assert_eq!(fired.len(), 1);
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(job.id(), fired[0].job_id);
    assert_eq!(job.payload(), b"build it");
    assert_eq!(job.max_attempts(), 2);
    assert_eq!(
        job.idempotency_key(),
        Some(tick_key("report", fired[0].tick).as_bytes())
    );
}

#[test]
fn crash_between_enqueue_and_file_update_does_not_duplicate() {
    let (dir, clock) = setup();
    let registered_at;
    {
        let (q, s) = open(dir.path(), &clock);
        s.register(Schedule::every("m", Duration::from_secs(60)).unwrap())
            .unwrap();
        registered_at = s.get("m").unwrap().last_tick;
        clock.advance(Duration::from_secs(60));
        let _blocked = block_saves(dir.path());
        let err = s.tick().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        // The job is in the queue, the file still says the tick is due.
        assert_eq!(q.stats().ready, 1);
        assert_eq!(s.get("m").unwrap().last_tick, registered_at);
    } // "crash": both dropped, the schedule file never recorded the tick
    let (q, s) = open(dir.path(), &clock);
    assert_eq!(s.get("m").unwrap().last_tick, registered_at);
    let fired = s.tick().unwrap().fired;
    assert_eq!(fired.len(), 1);
    assert!(fired[0].duplicate, "the queue dedups the re-enqueued tick");
    let ticks = take_ticks(&q);
    assert_eq!(ticks, vec![("m".to_string(), T0 - T0 % 60 + 60)]);
    assert!(s.get("m").unwrap().last_tick > registered_at);
}

/// The dedup window must exceed the time from a crash (between the enqueue
/// and the file update) to the next run; past it the re-enqueued tick is
/// a second job. Ticks the file recorded never run again, whatever the
/// window.
#[test]
fn the_dedup_window_condition() {
    let window = Duration::from_secs(600);
    let opts = |clock: &ManualClock| common::opts(clock).dedup_window(window);
    let yearly = || Schedule::cron("yearly", "0 0 1 1 *").unwrap();
    let new_year = 1_704_067_200; // 2024-01-01T00:00:00Z
    for (crash, restart_after, expected_jobs) in [
        (true, Duration::from_secs(300), 1), // inside the window: deduped
        (true, Duration::from_secs(3600), 2), // past it: a second job
        (false, Duration::from_secs(3600), 1), // recorded: never again
    ] {
        let (dir, clock) = setup();
        let mut jobs = 0;
        {
            let q = Queue::open_with(dir.path(), opts(&clock)).unwrap();
            let s = Scheduler::open_with_clock(&q, clock.clone()).unwrap();
            s.register(yearly()).unwrap();
            clock.set(new_year * 1000 + 5_000);
            let blocked = crash.then(|| block_saves(dir.path()));
            assert_eq!(s.tick().is_err(), crash);
            drop(blocked);
            jobs += take_ticks(&q).len(); // the job ran and was acked
        }
        clock.advance(restart_after);
        let q = Queue::open_with(dir.path(), opts(&clock)).unwrap();
        let s = Scheduler::open_with_clock(&q, clock.clone()).unwrap();
        s.tick().unwrap();
        jobs += take_ticks(&q).len();
        assert_eq!(
            jobs, expected_jobs,
            "crash {crash}, restart after {restart_after:?}"
        );
        assert_eq!(s.get("yearly").unwrap().last_tick, new_year);
    }
}

#[test]
fn missed_ticks_run_once() {
    let (dir, clock) = setup();
    {
        let (_q, s) = open(dir.path(), &clock);
        s.register(Schedule::every("m", Duration::from_secs(60)).unwrap())
            .unwrap();
    }
    clock.advance(Duration::from_secs(600)); // ten ticks pass while down
    let (q, s) = open(dir.path(), &clock);
    let report = s.tick().unwrap();
    assert_eq!(report.fired.len(), 1);
    let latest = (T0 + 600) / 60 * 60;
    assert_eq!(take_ticks(&q), vec![("m".to_string(), latest)]);
    clock.advance(Duration::from_secs(60));
    s.tick().unwrap();
    assert_eq!(take_ticks(&q), vec![("m".to_string(), latest + 60)]);
}

#[test]
fn missed_ticks_are_skipped() {
    let (dir, clock) = setup();
    let skip = || {
        Schedule::cron("hourly", "0 * * * *")
            .unwrap()
            .missed(Missed::Skip)
            .grace(Duration::from_secs(30))
            .unwrap()
    };
    {
        let (_q, s) = open(dir.path(), &clock);
        s.register(skip()).unwrap();
    }
    // Down from 22:13:20 until 01:10:00: the 23:00, 00:00 and 01:00 ticks pass.
    let one_am = 1_700_010_000; // 2023-11-15T01:00:00Z
    clock.set((one_am + 600) * 1000);
    let (q, s) = open(dir.path(), &clock);
    let report = s.tick().unwrap();
    assert!(report.fired.is_empty());
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].tick, one_am);
    assert!(take_ticks(&q).is_empty());
    assert_eq!(s.get("hourly").unwrap().next_tick, Some(one_am + 3600));
    // The next tick, reached within the grace period, runs.
    clock.set((one_am + 3600 + 20) * 1000);
    assert_eq!(s.tick().unwrap().fired.len(), 1);
    assert_eq!(take_ticks(&q), vec![("hourly".to_string(), one_am + 3600)]);
}

#[test]
fn schedulers_taking_turns_never_duplicate() {
    let (dir, clock) = setup();
    let mut rng = common_rng(42);
    let mut ticks = Vec::new();
    // Two programs, each registering its schedules at start, take turns
    // on the directory; some turns "crash" between enqueue and update.
    for turn in 0..60u32 {
        let (q, s) = open(dir.path(), &clock);
        let again = Scheduler::open_with_clock(&q, clock.clone()).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Locked);
        s.register(Schedule::every("a", Duration::from_secs(45)).unwrap())
            .unwrap();
        if turn.is_multiple_of(2) {
            s.register(Schedule::cron("b", "*/2 * * * *").unwrap())
                .unwrap();
        }
        for _ in 0..(rng() % 4) {
            clock.advance(Duration::from_secs(rng() % 100));
            let _blocked = rng().is_multiple_of(5).then(|| block_saves(dir.path()));
            let _ = s.tick();
        }
        ticks.extend(take_ticks(&q));
    }
    assert_no_duplicates(&ticks);
    assert!(ticks.len() > 40, "the schedules ran ({} jobs)", ticks.len());
    for (name, tick) in &ticks {
        let period = if name == "a" { 45 } else { 120 };
        assert_eq!(tick % period, 0, "{name} at {tick} is not one of its ticks");
    }
}

fn common_rng(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Registers schedule "m" (every minute) and enqueues an unrelated job in
/// `dir`, then closes both; the schedule file's path.
fn one_schedule_and_a_job(dir: &Path, clock: &ManualClock) -> std::path::PathBuf {
    let (q, s) = open(dir, clock);
    s.register(Schedule::every("m", Duration::from_secs(60)).unwrap())
        .unwrap();
    q.enqueue(b"unrelated job").unwrap();
    dir.join(SCHEDULE_FILE)
}

#[test]
fn a_damaged_schedule_file_is_a_clear_error_and_the_queue_is_unaffected() {
    let (dir, clock) = setup();
    let path = one_schedule_and_a_job(dir.path(), &clock);
    let good = std::fs::read(&path).unwrap();
    let mut damaged = good.clone();
    damaged[20] ^= 0x40;
    for (what, bytes) in [
        ("a flipped bit", damaged),
        ("a cut", good[..good.len() - 3].to_vec()),
        ("another file", b"%PDF-1.7 not a schedule".to_vec()),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let q = common::open(dir.path(), &clock);
        let err = Scheduler::open_with_clock(&q, clock.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}: {err}");
        assert_eq!(err.path(), Some(path.as_path()), "{what}");
        assert!(err.to_string().contains(SCHEDULE_FILE), "{what}: {err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{what}: file left as it was"
        );
        assert_eq!(q.stats().ready, 1, "{what}: the queue opens and serves");
    }
}

/// `Inspector::verify` checks the schedule file with the scheduler's own
/// decoder: whatever makes `Scheduler::open` refuse it is damage at the
/// offset the scheduler names (a review found a flipped byte at offset 40
/// reported healthy), and the check writes nothing.
#[test]
fn verify_reports_a_schedule_file_the_scheduler_refuses() {
    use walq::inspect::{Inspector, Severity, Visitor};
    #[derive(Default)]
    struct Problems(Vec<walq::inspect::Problem>);
    impl Visitor for Problems {
        fn problem(&mut self, p: &walq::inspect::Problem) {
            self.0.push(p.clone());
        }
    }
    let (dir, clock) = setup();
    let path = one_schedule_and_a_job(dir.path(), &clock);
    let good = std::fs::read(&path).unwrap();
    let inspector = Inspector::open(dir.path()).unwrap();
    let summary = inspector.verify(&mut Problems::default()).unwrap();
    assert_eq!(summary.damage, 0, "healthy before the damage");
    assert_eq!(inspector.schedules().unwrap(), Some(good.clone()));
    let mut flipped = good.clone();
    flipped[40] ^= 0x40;
    for (what, bytes) in [
        ("a flipped byte", flipped),
        ("a cut", good[..good.len() - 3].to_vec()),
        ("another file", b"%PDF-1.7 not a schedule".to_vec()),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let refused = {
            let q = common::open(dir.path(), &clock);
            Scheduler::open_with_clock(&q, clock.clone()).unwrap_err()
        };
        let mut seen = Problems::default();
        let summary = inspector.verify(&mut seen).unwrap();
        assert_eq!(summary.damage, 1, "{what}: {:?}", seen.0);
        let p = &seen.0[0];
        assert_eq!(p.severity, Severity::Damage, "{what}");
        assert_eq!(p.file, SCHEDULE_FILE, "{what}");
        assert_eq!(Some(p.offset), refused.offset(), "{what}: {p} vs {refused}");
        let err = inspector.schedules().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}");
        assert_eq!(err.path(), Some(path.as_path()), "{what}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: read only");
    }
}

/// A payload over the queue's limit is refused when the schedule is
/// registered, not at each of its ticks.
#[test]
fn a_payload_over_the_queues_limit_is_refused_at_register() {
    let (dir, clock) = setup();
    let q = Queue::open_with(dir.path(), common::opts(&clock).max_payload(64)).unwrap();
    let s = Scheduler::open_with_clock(&q, clock.clone()).unwrap();
    let big = Schedule::every("big", Duration::from_secs(60))
        .unwrap()
        .payload(vec![7u8; 65]);
    let err = s.register(big).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    assert!(
        err.to_string().contains("\"big\""),
        "names the schedule: {err}"
    );
    assert!(!dir.path().join(SCHEDULE_FILE).exists(), "nothing written");
    let fits = Schedule::every("fits", Duration::from_secs(60))
        .unwrap()
        .payload(vec![7u8; 64]);
    assert_eq!(s.register(fits).unwrap(), Registered::Added);
}

#[test]
fn invalid_cron_is_a_clear_error() {
    for bad in ["61 * * * *", "* * *", "every day", "0 0 31 2 *"] {
        let err = Schedule::cron("x", bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOptions, "{bad}");
        assert!(err.to_string().contains(bad), "{err}");
    }
    let (dir, clock) = setup();
    let (_q, s) = open(dir.path(), &clock);
    let past = Schedule::cron("past", "0 0 0 1 1 * 2020").unwrap();
    let err = s.register(past).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
    // The message names the expression, as docs/recurring.md says.
    assert!(err.to_string().contains("0 0 0 1 1 * 2020"), "{err}");
    assert!(!dir.path().join(SCHEDULE_FILE).exists(), "nothing written");
}

#[test]
fn update_and_remove_a_schedule() {
    let (dir, clock) = setup();
    let (q, s) = open(dir.path(), &clock);
    let v1 = || Schedule::every("m", Duration::from_secs(60)).unwrap();
    assert_eq!(s.register(v1()).unwrap(), Registered::Added);
    assert_eq!(s.register(v1()).unwrap(), Registered::Unchanged);
    clock.advance(Duration::from_secs(60));
    s.tick().unwrap();
    let done = s.get("m").unwrap().last_tick;
    // A new payload keeps the progress: the tick just run does not rerun.
    let v2 = v1().payload(b"v2".to_vec());
    assert_eq!(s.register(v2).unwrap(), Registered::Updated);
    assert_eq!(s.get("m").unwrap().last_tick, done);
    assert!(s.tick().unwrap().fired.is_empty());
    clock.advance(Duration::from_secs(60));
    s.tick().unwrap();
    let payloads: Vec<Vec<u8>> = common::drain(&q).into_iter().map(|j| j.1).collect();
    assert_eq!(payloads, vec![Vec::new(), b"v2".to_vec()]);
    // Removed: no more jobs, also after a restart.
    assert!(s.remove("m").unwrap());
    assert!(!s.remove("m").unwrap());
    drop((q, s));
    clock.advance(Duration::from_secs(600));
    let (q, s) = open(dir.path(), &clock);
    assert!(s.schedules().is_empty());
    assert!(s.tick().unwrap().fired.is_empty());
    assert_eq!(q.stats().ready, 0);
}

#[test]
fn schedule_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, clock) = setup();
    let (_q, s) = open(dir.path(), &clock);
    s.register(Schedule::every("m", Duration::from_secs(60)).unwrap())
        .unwrap();
    for name in [SCHEDULE_FILE, walq::schedule::SCHEDULE_LOCK_FILE] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

#[test]
fn the_thread_ticks_and_shuts_down() {
    let (dir, clock) = setup();
    let (q, s) = open(dir.path(), &clock);
    s.register(Schedule::every("m", Duration::from_secs(60)).unwrap())
        .unwrap();
    let thread = s.spawn(Duration::from_millis(2)).unwrap();
    clock.advance(Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while q.stats().ready == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the thread never ticked"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(thread.last_error(), None);
    thread.shutdown();
    drop(s);
    // The thread's handle is gone with it: the directory can be taken over.
    let again = Scheduler::open_with_clock(&q, clock.clone()).unwrap();
    assert_eq!(again.tick().unwrap(), Default::default());
    assert_eq!(take_ticks(&q).len(), 1);
}

/// A schedule registered while the thread waits out a long poll is run
/// when its ticks are due, not at the end of that wait: `register` wakes
/// the thread. Before, a minutely schedule registered next to a thread
/// polling hourly had its ticks collapsed into one job (or skipped).
#[test]
fn registering_wakes_the_thread() {
    let (dir, clock) = setup();
    let (q, s) = open(dir.path(), &clock);
    s.register(Schedule::cron("daily", "0 3 * * *").unwrap())
        .unwrap();
    let thread = s.spawn(Duration::from_secs(3600)).unwrap();
    clock.set(1_700_017_200_000); // 03:00: the daily tick
    let until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // The thread waits past a tick (no poll is due for an hour)...
    until("the thread ran the daily tick", &|| q.stats().ready == 1);
    // ...and now waits for the next one, a day away, or the hourly poll.
    std::thread::sleep(Duration::from_millis(50));
    s.register(Schedule::every("often", Duration::from_secs(1)).unwrap())
        .unwrap();
    clock.advance(Duration::from_secs(1));
    until("the new schedule ran without waiting for the poll", &|| {
        q.stats().ready == 2
    });
    assert_eq!(thread.last_error(), None);
    thread.shutdown();
}

/// A schedule whose enqueue keeps failing does not hold the others up:
/// after a tick that returned its error the thread still wakes for the
/// next due tick of the healthy ones, not only after the poll. Before,
/// every tick failed, the thread waited the whole poll each time, and an
/// every-second schedule ran (one collapsed job) once per poll.
#[test]
fn a_failing_schedule_does_not_hold_the_thread_to_the_poll() {
    let (dir, clock) = setup();
    let every_second = |name: &str| Schedule::every(name, Duration::from_secs(1)).unwrap();
    let (q, s) = open(dir.path(), &clock);
    s.register(every_second("bad").payload(vec![0u8; 4096]))
        .unwrap();
    s.register(every_second("good")).unwrap();
    drop((s, q));
    // Reopened with a smaller limit: the bad schedule's payload, checked
    // against the limit of its registration, fails at every tick.
    let q = Queue::open_with(dir.path(), common::opts(&clock).max_payload(1024)).unwrap();
    let s = Scheduler::open_with_clock(&q, clock.clone()).unwrap();
    let thread = s.spawn(Duration::from_secs(3600)).unwrap();
    let until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    for n in 1..=3 {
        clock.advance(Duration::from_secs(1));
        until("the healthy schedule ran its tick", &|| {
            q.stats().ready == n
        });
    }
    let err = thread.last_error().expect("the bad schedule's error");
    assert!(err.contains("\"bad\""), "{err}");
    thread.shutdown();
    let ticks = take_ticks(&q);
    assert!(ticks.iter().all(|t| t.0 == "good"), "{ticks:?}");
}

/// A schedule whose last tick is due but not yet run is still registered
/// (and run) by a program that registers its schedules at every start;
/// re-registering it unchanged is `Unchanged`, before and after that last
/// tick ran. Before, `register` refused it ("never fires after now"), so
/// a program that stops on that error never ran the tick.
#[test]
fn a_last_tick_still_due_is_run_after_a_restart() {
    let (dir, clock) = setup();
    let once = || Schedule::cron("new-year", "0 0 0 1 1 * 2024").unwrap();
    let new_year = 1_704_067_200; // 2024-01-01T00:00:00Z
    {
        let (_q, s) = open(dir.path(), &clock);
        assert_eq!(s.register(once()).unwrap(), Registered::Added);
    }
    clock.set((new_year + 30) * 1000); // down over the tick
    let (q, s) = open(dir.path(), &clock);
    assert_eq!(s.register(once()).unwrap(), Registered::Unchanged);
    assert_eq!(s.tick().unwrap().fired.len(), 1);
    assert_eq!(take_ticks(&q), vec![("new-year".to_string(), new_year)]);
    drop((q, s));
    clock.advance(Duration::from_secs(3600));
    let (q, s) = open(dir.path(), &clock);
    assert_eq!(s.register(once()).unwrap(), Registered::Unchanged);
    assert!(s.tick().unwrap().fired.is_empty());
    assert!(take_ticks(&q).is_empty());
    // A schedule added after its last tick is still refused.
    let past = Schedule::cron("past", "0 0 0 1 1 * 2024").unwrap();
    let err = s.register(past).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidOptions);
}

/// Every ready job as (schedule, tick) -> job id, leased and acked.
fn take_job_ids(q: &Queue) -> BTreeMap<(String, u64), u64> {
    let mut out = BTreeMap::new();
    while let Some(job) = q.dequeue().unwrap() {
        let key = job.idempotency_key().expect("a scheduled job has a key");
        let (name, tick) = parse_tick_key(key).expect("a tick key");
        assert!(out.insert((name.to_string(), tick), job.id()).is_none());
        q.ack(job.receipt()).unwrap();
    }
    out
}

/// Registers "a", "bad" (a 4 KiB payload) and "c", every minute, then
/// reopens the queue with a 1 KiB `max_payload`: "bad" fails at every
/// tick, the others enqueue.
fn one_bad_of_three(dir: &Path, clock: &ManualClock) -> (Queue, Scheduler) {
    let minutely = |name: &str| Schedule::every(name, Duration::from_secs(60)).unwrap();
    let (q, s) = open(dir, clock);
    s.register(minutely("a")).unwrap();
    s.register(minutely("bad").payload(vec![0u8; 4096]))
        .unwrap();
    s.register(minutely("c")).unwrap();
    drop((s, q));
    let q = Queue::open_with(dir, common::opts(clock).max_payload(1024)).unwrap();
    let s = Scheduler::open_with_clock(&q, clock.clone()).unwrap();
    (q, s)
}

/// A tick whose enqueue is refused for one schedule names, in its error,
/// the jobs the other schedules enqueued (with their ids) and that they
/// were recorded, besides the failed schedule and tick. The failed tick
/// stays due: a later tick does not enqueue the others again, and after
/// a restart that lets it through it gets its job (none skipped). Before,
/// the error named only the failed schedule: a user could not tell that
/// "a" and "c" had jobs.
#[test]
fn a_tick_refused_for_one_schedule_names_the_jobs_it_enqueued() {
    let (dir, clock) = setup();
    let (q, s) = one_bad_of_three(dir.path(), &clock);
    clock.advance(Duration::from_secs(60));
    let tick = T0 - T0 % 60 + 60;
    let err = s.tick().unwrap_err().to_string();
    let jobs = take_job_ids(&q);
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    for name in ["a", "c"] {
        let id = jobs[&(name.to_string(), tick)];
        let named = format!("\"{name}\" tick {tick} as job {id}");
        assert!(err.contains(&named), "{named:?} missing from: {err}");
        assert_eq!(s.get(name).unwrap().last_tick, tick, "{name} recorded");
    }
    assert!(err.contains("recorded in the schedule file"), "{err}");
    assert!(
        err.contains(&format!("tick {tick} of schedule \"bad\"")),
        "{err}"
    );
    // A retry in the same minute enqueues nothing new; "bad" fails again.
    let again = s.tick().unwrap_err().to_string();
    assert!(!again.contains("\"a\""), "{again}");
    assert!(take_job_ids(&q).is_empty());
    // Restarted with the default limit: the failed tick runs, once.
    drop((s, q));
    let (q, s) = open(dir.path(), &clock);
    let fired = s.tick().unwrap().fired;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!((fired[0].name.as_str(), fired[0].tick), ("bad", tick));
    assert_eq!(take_ticks(&q), vec![("bad".to_string(), tick)]);
}

/// A tick whose schedule file write fails after its enqueues names every
/// job it enqueued, with its id, and says that nothing was recorded. A
/// retry is idempotent: the same ticks come back as the same jobs
/// (`duplicate`), and each tick has one job. Before, the error was the
/// bare I/O error of the file write.
#[test]
fn a_tick_whose_file_write_fails_names_the_unrecorded_jobs_and_a_retry_is_idempotent() {
    let (dir, clock) = setup();
    let (q, s) = one_bad_of_three(dir.path(), &clock);
    clock.advance(Duration::from_secs(60));
    let tick = T0 - T0 % 60 + 60;
    let blocked = block_saves(dir.path());
    let err = s.tick().unwrap_err();
    drop(blocked);
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let text = err.to_string();
    assert!(text.contains("did not record"), "{text}");
    assert!(text.contains("writing the schedule file"), "{text}");
    assert!(
        text.contains(&format!("schedule \"bad\" tick {tick}")),
        "{text}"
    );
    let mut ids = BTreeMap::new();
    for name in ["a", "c"] {
        assert!(s.get(name).unwrap().last_tick < tick, "{name} not recorded");
        let (_, id) = text
            .split(&format!("\"{name}\" tick {tick} as job "))
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .map(|id| (name, id.parse::<u64>().unwrap()))
            .unwrap_or_else(|| panic!("{name}'s job missing from: {text}"));
        ids.insert(name.to_string(), id);
    }
    // The retry (a few seconds on, same ticks) gets the same jobs back.
    clock.advance(Duration::from_secs(5));
    let retry = s.tick().unwrap_err().to_string();
    assert!(retry.contains("recorded in the schedule file"), "{retry}");
    for name in ["a", "c"] {
        let again = format!(
            "\"{name}\" tick {tick} as job {}, already queued",
            ids[name]
        );
        assert!(retry.contains(&again), "{again:?} missing from: {retry}");
        assert_eq!(s.get(name).unwrap().last_tick, tick);
    }
    let jobs = take_job_ids(&q);
    let expected: BTreeMap<_, _> = ids.into_iter().map(|(n, id)| ((n, tick), id)).collect();
    assert_eq!(jobs, expected, "one job per tick, the first enqueue's");
}

/// A closed queue hands its schedules over with its directory: the next
/// owner (here in the same process, while the old scheduler is still
/// alive) opens them at once, and the old scheduler writes nothing more.
/// A review found the new owner refused (`Locked`) until the old
/// scheduler was dropped, and the old one's `register` and `remove`
/// returning `Ok` and rewriting `schedules.bin` after the close.
#[test]
fn a_closed_queue_hands_its_schedules_over() {
    let (dir, clock) = setup();
    let (q, old) = open(dir.path(), &clock);
    old.register(Schedule::every("m", Duration::from_secs(60)).unwrap())
        .unwrap();
    q.close().unwrap();
    let file = std::fs::read(dir.path().join(SCHEDULE_FILE)).unwrap();
    let (q2, new) = open(dir.path(), &clock);
    assert_eq!(new.schedules().len(), 1, "the new owner has the schedule");
    let every = || Schedule::every("h", Duration::from_secs(3600)).unwrap();
    for (what, err) in [
        ("register", old.register(every()).unwrap_err()),
        ("remove", old.remove("m").unwrap_err()),
        ("tick", old.tick().unwrap_err()),
    ] {
        assert_eq!(err.kind(), ErrorKind::Closed, "{what}: {err}");
    }
    assert_eq!(
        std::fs::read(dir.path().join(SCHEDULE_FILE)).unwrap(),
        file,
        "the old scheduler wrote nothing"
    );
    assert_eq!(new.register(every()).unwrap(), Registered::Added);
    let err = Scheduler::open(&q).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    drop((q2, new));
}
