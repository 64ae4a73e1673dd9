//! Bytes crafted to look like frame headers after damage: the search for
//! intact records past the damage has a bounded budget of work (see
//! `format::resync`), so such a file is refused at once with an error
//! naming it, instead of taking hours to open, and its bytes are never
//! taken for a torn tail and zeroed.
//!
//! Each crafted region below would cost gigabytes of checksums to search
//! byte by byte (every 64th byte starts a header claiming the rest of the
//! region), so without the budget the open takes seconds and then, finding
//! nothing intact, cuts the region as a torn tail: these tests fail.

use std::os::unix::fs::FileExt;
use std::path::Path;

use walq::inspect::{Inspector, Problem, Severity, Visitor};
use walq::{ErrorKind, Options, Queue, RecoveryMode};

/// Frame header fields, as docs/format.md lays them out.
const HEADER: usize = 24;
/// Bytes of crafted headers written after the damage.
const REGION: usize = 1 << 20;

/// A damaged byte, then every 64 bytes a frame header (with a wrong
/// checksum) whose length claims the rest of the region and whose LSN
/// (64) is one a real frame that far after the damage could have.
fn crafted() -> Vec<u8> {
    let mut bytes = vec![0x55u8; REGION];
    bytes[0] = 0xEE;
    for at in (1..REGION - HEADER).step_by(64) {
        let claim = (REGION - at) as u32;
        bytes[at..at + 4].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
        bytes[at + 4..at + 8].copy_from_slice(&claim.to_le_bytes());
        bytes[at + 8..at + 16].copy_from_slice(&64u64.to_le_bytes());
        bytes[at + 16..at + 24].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    }
    bytes
}

fn last_nonzero(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

/// Writes the crafted region into `file` at `at`; returns the file's bytes.
fn craft_into(file: &Path, at: usize) -> Vec<u8> {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(&crafted(), at as u64).unwrap();
    drop(f);
    std::fs::read(file).unwrap()
}

fn options() -> Options {
    Options::default().segment_size(4 << 20)
}

/// A queue with a few jobs whose last segment ends in the crafted region.
fn queue_with_crafted_tail(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let q = Queue::open_with(dir, options()).unwrap();
    for i in 0..10u32 {
        q.enqueue(&i.to_le_bytes()).unwrap();
    }
    drop(q);
    let seg = dir.join("0000000001.wal");
    let end = last_nonzero(&std::fs::read(&seg).unwrap());
    let bytes = craft_into(&seg, end);
    (seg, bytes)
}

fn assert_refused(err: walq::Error, file: &str) {
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let text = err.to_string();
    assert!(text.contains(file), "{text}");
    assert!(text.contains("gave up at byte"), "{text}");
}

#[test]
fn a_crafted_tail_in_the_log_is_refused_not_cut() {
    for mode in [RecoveryMode::Strict, RecoveryMode::Salvage] {
        let dir = tempfile::tempdir().unwrap();
        let (seg, before) = queue_with_crafted_tail(dir.path());
        let err = Queue::open_with(dir.path(), options().recovery(mode)).unwrap_err();
        assert_refused(err, "0000000001.wal");
        assert!(
            std::fs::read(&seg).unwrap() == before,
            "{mode:?}: the segment was changed"
        );
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Visitor for Problems {
    fn problem(&mut self, problem: &Problem) {
        self.0.push(problem.clone());
    }
}

#[test]
fn verify_reports_a_crafted_tail_as_damage_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = queue_with_crafted_tail(dir.path());
    let mut seen = Problems::default();
    let summary = Inspector::open(dir.path())
        .unwrap()
        .verify(&mut seen)
        .unwrap();
    let damage: Vec<_> = seen
        .0
        .iter()
        .filter(|p| p.severity == Severity::Damage)
        .collect();
    assert_eq!(damage.len(), 1, "{:?}", seen.0);
    assert_eq!(damage[0].file, "0000000001.wal");
    assert!(
        damage[0].what.contains("gave up at byte"),
        "{}",
        damage[0].what
    );
    assert_eq!(summary.records_lost, 0, "the ten jobs before it were read");
}

#[test]
fn a_crafted_tail_in_the_dead_letters_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path(), options()).unwrap();
    q.enqueue(b"doomed").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.fail(job.receipt(), "boom").unwrap();
    drop(q);
    let dead = dir.path().join("dead.wal");
    let end = std::fs::metadata(&dead).unwrap().len() as usize;
    let before = craft_into(&dead, end);
    let err = Queue::open_with(dir.path(), options()).unwrap_err();
    assert_refused(err, "dead.wal");
    assert!(
        std::fs::read(&dead).unwrap() == before,
        "dead.wal was changed"
    );
}

/// For `done.rec`, whose records are at most about 4 KiB: every 4 bytes a
/// plausible header (kind 0xF0, flags 1) claiming 496 bytes, over 8 MiB.
fn crafted_completions() -> Vec<u8> {
    let mut bytes = [0xF0u8, 1, 0, 0].repeat(2 << 20);
    bytes[0] = 0xEE;
    bytes
}

#[test]
fn a_crafted_tail_in_the_completions_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path(), options()).unwrap();
    q.enqueue(b"job").unwrap();
    let job = q.dequeue().unwrap().unwrap();
    q.ack_with_result(job.receipt(), b"result").unwrap();
    drop(q);
    let done = dir.path().join("done.rec");
    let end = std::fs::metadata(&done).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&done).unwrap();
    f.write_all_at(&crafted_completions(), end).unwrap();
    drop(f);
    let before = std::fs::read(&done).unwrap();
    let err = Queue::open_with(dir.path(), options()).unwrap_err();
    assert_refused(err, "done.rec");
    assert!(
        std::fs::read(&done).unwrap() == before,
        "done.rec was changed"
    );
}
