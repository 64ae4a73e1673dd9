//! Target `schedules`: arbitrary bytes as the schedule file
//! `schedules.bin` of a queue directory.
//!
//! Input: a flags byte, then the bytes. The harness builds a queue on
//! `SimFs` with a scheduler whose workload is chosen by the flags' upper
//! bits (schedules of every kind registered, ticked, one removed), then
//! replaces its `schedules.bin` with the input bytes: as they are, or
//! XORed onto the real file (`XOR`, so that mutations start from a valid
//! file), with the trailing CRC recomputed (`FIX_CRC`, so that mutated
//! fields get past the checksum and reach the decoder's checks).
//!
//! `Scheduler::open_on` must return `Ok` or a clean `Err`, never panic. A
//! file whose checksum does not match is refused. When it opens, every
//! schedule it lists is valid (it can be registered again as it is), and a
//! `tick` a year later returns `Ok` or a clean `Err`: every job it fires
//! carries the key `walq.schedule/<name>/<tick>` of a listed schedule, for
//! a tick after that schedule's last tick and not in the future. The real
//! file, untouched, opens with the schedules it was saved with.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use walq::schedule::{parse_tick_key, tick_key, Missed, Schedule, Scheduler};
use walq::vfs::{SimFs, Vfs};
use walq::{Clock, Durability, ManualClock, Options, Queue};

/// Flag: recompute the file's trailing CRC.
pub const FIX_CRC: u8 = 0x01;
/// Flag: XOR the input onto the real file instead of replacing it.
pub const XOR: u8 = 0x02;

const START_MS: u64 = 1_700_000_000_000;
const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

fn dir() -> &'static Path {
    Path::new("/q")
}

fn options(clock: &ManualClock) -> Options {
    Options::default()
        .segment_size(64 * 1024)
        .durability(Durability::Os)
        .clock(clock.clone())
}

/// The schedules of workload `seed`: every spec kind and policy.
fn schedules(seed: u8) -> Vec<Schedule> {
    let n = 1 + usize::from(seed % 5);
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("s{i}.w{seed}");
        let s = match (i + usize::from(seed)) % 4 {
            0 => Schedule::every(&name, Duration::from_secs(60 * (i as u64 + 1))),
            1 => Schedule::cron(&name, "*/5 * * * *"),
            2 => Schedule::cron(&name, "0 30 3 * * MON-FRI"),
            _ => Schedule::every(&name, Duration::from_secs(7)),
        }
        .expect("a valid schedule");
        let s = s.payload(format!("payload {i}").repeat(i % 3));
        let s = if i % 2 == 1 {
            s.missed(Missed::Skip)
                .grace(Duration::from_secs(30))
                .expect("grace")
        } else {
            s.max_attempts(1 + i as u32).expect("attempts")
        };
        out.push(s);
    }
    out
}

/// Builds workload `seed` on `fs`; returns the schedules listed at the end.
fn build(fs: &SimFs, seed: u8) -> Vec<String> {
    let clock = ManualClock::new(START_MS);
    let q = Queue::open_on(Arc::new(fs.clone()), dir(), options(&clock)).expect("open");
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let sched = Scheduler::open_on(vfs, &q, clock.clone()).expect("scheduler");
    for s in schedules(seed) {
        sched.register(s).expect("register");
    }
    for step in 0..(seed % 7) {
        clock.advance(Duration::from_secs(97 * u64::from(step + 1)));
        sched.tick().expect("tick");
    }
    if seed.is_multiple_of(3) {
        sched.remove(&format!("s0.w{seed}")).expect("remove");
    }
    let names = sched
        .schedules()
        .into_iter()
        .map(|i| i.schedule.name().to_string());
    let names = names.collect();
    drop(sched);
    q.close().expect("close");
    names
}

/// The file to try: the input as it is, or XORed onto `real`, with its
/// CRC fixed if asked.
fn mutate(flags: u8, real: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut file = if flags & XOR != 0 {
        let mut b = real.to_vec();
        for (r, x) in b.iter_mut().zip(bytes) {
            *r ^= x;
        }
        b
    } else {
        bytes.to_vec()
    };
    if flags & FIX_CRC != 0 && file.len() >= 4 {
        let n = file.len() - 4;
        let crc = crc32fast::hash(&file[..n]);
        file[n..].copy_from_slice(&crc.to_le_bytes());
    }
    file
}

fn crc_matches(file: &[u8]) -> bool {
    file.len() >= 4 && {
        let n = file.len() - 4;
        crc32fast::hash(&file[..n]).to_le_bytes() == file[n..]
    }
}

/// Runs one input (see the module docs).
pub fn run(data: &[u8]) {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let fs = SimFs::new();
    let names = build(&fs, flags >> 2);
    let path = dir().join(walq::schedule::SCHEDULE_FILE);
    let real = fs.read_file(&path).unwrap_or_default();
    let file = mutate(flags, &real, bytes);
    let _ = fs.remove(&path);
    let f = fs.create(&path, 0o600).expect("create");
    f.write_at(&file, 0).expect("write");
    drop(f);

    let clock = ManualClock::new(START_MS + YEAR_MS);
    let q = Queue::open_on(Arc::new(fs.clone()), dir(), options(&clock)).expect("the queue opens");
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let opened = Scheduler::open_on(vfs, &q, clock.clone());
    if file == real {
        let sched = opened.as_ref().expect("the real schedule file opens");
        let listed: Vec<String> = sched
            .schedules()
            .into_iter()
            .map(|i| i.schedule.name().to_string())
            .collect();
        assert_eq!(listed, names, "the real file lists other schedules");
    }
    let Ok(sched) = opened else {
        return;
    };
    assert!(
        crc_matches(&file),
        "a file that fails its checksum was used"
    );
    check_opened(&sched, clock.now_ms());
}

/// Every schedule listed is valid, and a tick fires only listed schedules,
/// at ticks after their last tick and not after now.
fn check_opened(sched: &Scheduler, now_ms: u64) {
    let infos = sched.schedules();
    for info in &infos {
        Schedule::new(info.schedule.name(), info.schedule.spec().clone())
            .expect("a listed schedule is valid");
    }
    let Ok(report) = sched.tick() else {
        return;
    };
    for fired in &report.fired {
        let info = infos
            .iter()
            .find(|i| i.schedule.name() == fired.name)
            .expect("a fired schedule is listed");
        assert!(
            fired.tick > info.last_tick,
            "a tick at or before the last tick fired"
        );
        assert!(fired.tick * 1000 <= now_ms, "a tick in the future fired");
        let key = tick_key(&fired.name, fired.tick);
        assert_eq!(
            parse_tick_key(key.as_bytes()),
            Some((fired.name.as_str(), fired.tick))
        );
        let status = sched.queue().status(fired.job_id);
        assert!(status.is_ok(), "a fired job has no status: {status:?}");
    }
}
