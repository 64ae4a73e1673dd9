//! The schedule file fixture `tests/fixtures/schedules/schedules.bin`
//! (see `docs/fixtures.md`): a build that can no longer read the schedule
//! file an earlier build wrote fails here.
//!
//! Regenerate (only after a deliberate format change):
//! `WALQ_REGEN_FIXTURES=1 cargo test --test schedule_fixture regenerate_schedule_fixture`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use walq::schedule::{tick_key, Missed, Schedule, Scheduler, SCHEDULE_FILE};
use walq::{EnqueueOptions, ErrorKind, ManualClock};

/// 2023-11-14T22:13:20Z, as for the other fixtures.
const T0_MS: u64 = 1_700_000_000_000;
const T0: u64 = T0_MS / 1000;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedules")
}

/// Writes the fixture's schedule file into `dir`: two schedules
/// registered at T0, then one tick of the heartbeat at T0 + 40 s.
fn write_fixture(dir: &Path) {
    let clock = ManualClock::new(T0_MS);
    let q = common::open(dir, &clock);
    let s = Scheduler::open_with_clock(&q, clock.clone()).unwrap();
    let nightly = Schedule::cron("nightly", "0 3 * * *")
        .unwrap()
        .payload(b"build the report".to_vec())
        .max_attempts(3)
        .unwrap();
    let heartbeat = Schedule::every("heartbeat", Duration::from_secs(60))
        .unwrap()
        .missed(Missed::Skip)
        .grace(Duration::from_secs(5))
        .unwrap();
    s.register(nightly).unwrap();
    s.register(heartbeat).unwrap();
    clock.advance(Duration::from_secs(40));
    assert_eq!(s.tick().unwrap().fired.len(), 1);
}

#[test]
fn regenerate_schedule_fixture() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let fresh = std::fs::read(dir.path().join(SCHEDULE_FILE)).unwrap();
    let path = fixture().join(SCHEDULE_FILE);
    if std::env::var_os("WALQ_REGEN_FIXTURES").is_some() {
        std::fs::create_dir_all(fixture()).unwrap();
        std::fs::write(&path, &fresh).unwrap();
    }
    // Generation is deterministic: an unchanged format writes the same bytes.
    assert_eq!(std::fs::read(&path).unwrap(), fresh, "the format changed");
}

/// A fresh queue directory holding a copy of the fixture's schedule file.
fn copy_fixture(bytes: Option<Vec<u8>>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(fixture().join(SCHEDULE_FILE)).unwrap();
    std::fs::write(dir.path().join(SCHEDULE_FILE), bytes.unwrap_or(original)).unwrap();
    dir
}

#[test]
fn the_fixture_opens_with_its_schedules_and_progress() {
    let dir = copy_fixture(None);
    let clock = ManualClock::new(T0_MS + 60_000);
    let q = common::open(dir.path(), &clock);
    let s = Scheduler::open_with_clock(&q, clock.clone()).unwrap();
    let list = s.schedules();
    let names: Vec<&str> = list.iter().map(|i| i.schedule.name()).collect();
    assert_eq!(names, ["heartbeat", "nightly"]);
    let (heartbeat, nightly) = (&list[0], &list[1]);
    assert_eq!(heartbeat.last_tick, T0 + 40);
    assert_eq!(heartbeat.next_tick, Some(T0 + 100));
    assert_eq!(
        heartbeat.schedule.spec().period(),
        Some(Duration::from_secs(60))
    );
    assert_eq!(heartbeat.schedule.missed_policy(), Missed::Skip);
    assert_eq!(nightly.last_tick, T0);
    assert_eq!(nightly.next_tick, Some(1_700_017_200)); // 2023-11-15T03:00Z
    assert_eq!(nightly.schedule.spec().cron_text(), Some("0 3 * * *"));
    assert_eq!(nightly.schedule.payload_bytes(), b"build the report");
    // Its recorded tick does not run again; the next one does.
    assert!(s.tick().unwrap().fired.is_empty());
    clock.set((T0 + 100) * 1000);
    let fired = s.tick().unwrap().fired;
    assert_eq!(fired.len(), 1);
    let job = q.dequeue().unwrap().unwrap();
    assert_eq!(
        job.idempotency_key(),
        Some(tick_key("heartbeat", T0 + 100).as_bytes())
    );
    q.ack(job.receipt()).unwrap();
    // The nightly job carries its payload and max_attempts (at 03:00 the
    // heartbeat ticks too).
    clock.set(1_700_017_200 * 1000);
    let fired = s.tick().unwrap().fired;
    let names: Vec<&str> = fired.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["heartbeat", "nightly"]);
    let jobs = common::lease_all(&q);
    let job = jobs.iter().find(|j| j.id() == fired[1].job_id).unwrap();
    assert_eq!(
        (job.payload(), job.max_attempts()),
        (&b"build the report"[..], 3)
    );
    let again = EnqueueOptions::new().idempotency_key(tick_key("nightly", 1_700_017_200));
    assert!(q.enqueue_with(b"", again).unwrap().duplicate);
}

#[test]
fn a_future_version_of_the_fixture_is_refused_as_such() {
    let mut bytes = std::fs::read(fixture().join(SCHEDULE_FILE)).unwrap();
    bytes[8] = 2; // version 2, CRC not updated: the version is checked first
    let dir = copy_fixture(Some(bytes.clone()));
    let clock = ManualClock::new(T0_MS);
    let q = common::open(dir.path(), &clock);
    let err = Scheduler::open_with_clock(&q, clock).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedVersion, "{err}");
    assert_eq!(err.path(), Some(dir.path().join(SCHEDULE_FILE).as_path()));
    assert_eq!(
        std::fs::read(dir.path().join(SCHEDULE_FILE)).unwrap(),
        bytes
    );
}
