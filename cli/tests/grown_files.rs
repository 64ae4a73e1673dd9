//! `walq verify` of a queue whose files were grown far past their end
//! (`truncate -s 64G dead.wal`): the zeros past the records are holes,
//! read no more than the queue's open reads them, and judged as it judges
//! them (a torn tail of `dead.wal`, the clean end of `done.rec`). Before,
//! verify read every file whole into memory, and a 64 GiB `dead.wal` was
//! an error (exit 3) instead of a verdict.
//!
//! Each run is bounded to a few GiB of address space (`ulimit -v`), so a
//! verify that reads the zeros into memory fails at once instead of
//! taking the machine's memory. Holes are found with `lseek(SEEK_DATA)`,
//! which walq trusts on ext4, xfs and tmpfs; elsewhere the whole file is
//! data, and verify's error names the file and the size, as the open's
//! does (`tests/grown_files.rs` of the library).

mod common;

use common::{json_lines, quiet, Run};
use walq::{Options, Queue, Retry};

/// 64 GiB: more than the memory of the machines the tests run on.
const GROWN: u64 = 64 << 30;

/// The address space a verify run may take (KiB, for `ulimit -v`).
const ADDRESS_SPACE_KIB: u64 = 2 << 20;

/// A queue closed with one job done with a result (job 1) and one dead
/// letter (job 2).
fn queue_with_a_result_and_a_dead_letter(dir: &std::path::Path) {
    quiet(|| {
        let q = Queue::open_with(dir, Options::default().max_attempts(1)).unwrap();
        q.enqueue(b"first").unwrap();
        q.enqueue(b"second").unwrap();
        let job = q.dequeue().unwrap().expect("job 1");
        q.ack_with_result(job.receipt(), b"the result").unwrap();
        let job = q.dequeue().unwrap().expect("job 2");
        q.nack(job.receipt(), Retry::Backoff, "boom").unwrap();
        q.close().unwrap();
    });
}

/// Grows `name` in `dir` to `len` bytes (sparse); its length before.
fn grow(dir: &std::path::Path, name: &str, len: u64) -> u64 {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(name))
        .unwrap();
    let before = file.metadata().unwrap().len();
    file.set_len(len).unwrap();
    before
}

/// Whether walq trusts the holes of the file system `dir` is on.
fn holes_trusted(dir: &std::path::Path) -> bool {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .expect("stat -f");
    let fs = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ["ext2/ext3", "xfs", "tmpfs"].contains(&fs.as_str())
}

/// `walq verify --json DIR` with its address space bounded.
fn verify(dir: &std::path::Path) -> Run {
    let script = format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" verify --json \"$1\"");
    common::sh(
        &script,
        &[env!("CARGO_BIN_EXE_walq"), dir.to_str().unwrap()],
    )
}

/// Where holes are not trusted: the error names the file and the size.
fn refused_untrusted(run: &Run, name: &str) {
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(name), "{}", run.stderr);
    assert!(
        run.stderr.contains("more than this process can hold"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_dead_letter_file_grown_by_zeros_is_verified_with_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    queue_with_a_result_and_a_dead_letter(dir.path());
    let healthy = verify(dir.path());
    assert_eq!(healthy.code, 0, "{}{}", healthy.stdout, healthy.stderr);
    let before = grow(dir.path(), "dead.wal", GROWN);
    let run = verify(dir.path());
    if !holes_trusted(dir.path()) {
        return refused_untrusted(&run, "dead.wal");
    }
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let lines = json_lines(&run.stdout);
    // The zeros are a torn tail, as the open finds them (and cuts them:
    // the library's tests/grown_files.rs).
    let notes: Vec<_> = lines.iter().filter(|l| l["severity"] == "note").collect();
    assert_eq!(notes.len(), 1, "{}", run.stdout);
    assert_eq!(notes[0]["file"], "dead.wal");
    assert_eq!(notes[0]["offset"], before);
    let what = notes[0]["what"].as_str().unwrap();
    let torn = format!("torn tail of {} bytes", GROWN - before);
    assert!(what.contains(&torn), "{what}");
    // Every record is checked as before (and the bytes read are those of
    // the records' block, not the zeros after it).
    let (was, now) = (
        json_lines(&healthy.stdout).pop().unwrap(),
        lines.last().unwrap().clone(),
    );
    for field in ["healthy", "damage", "records", "segments", "last_lsn"] {
        assert_eq!(was[field], now[field], "{field}: {}", run.stdout);
    }
    let read = now["bytes"].as_u64().unwrap();
    assert!(
        read < was["bytes"].as_u64().unwrap() + 4096,
        "{}",
        run.stdout
    );
}

#[test]
fn a_completion_file_grown_by_zeros_verifies_as_before() {
    let dir = tempfile::tempdir().unwrap();
    queue_with_a_result_and_a_dead_letter(dir.path());
    let healthy = verify(dir.path());
    assert_eq!(healthy.code, 0, "{}{}", healthy.stdout, healthy.stderr);
    grow(dir.path(), "done.rec", GROWN);
    let run = verify(dir.path());
    if !holes_trusted(dir.path()) {
        return refused_untrusted(&run, "done.rec");
    }
    // Zeros past the records are the clean end of done.rec: nothing to
    // say, and the same verdict, word for word.
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, healthy.stdout);
}

#[test]
fn a_segment_grown_by_zeros_within_its_limit_verifies_as_before() {
    let dir = tempfile::tempdir().unwrap();
    queue_with_a_result_and_a_dead_letter(dir.path());
    let healthy = verify(dir.path());
    assert_eq!(healthy.code, 0, "{}{}", healthy.stdout, healthy.stderr);
    // Just under the 4 GiB a segment may have: more than the run's
    // address space.
    grow(dir.path(), "0000000001.wal", (4 << 30) - 4096);
    let run = verify(dir.path());
    if !holes_trusted(dir.path()) {
        return refused_untrusted(&run, "0000000001.wal");
    }
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, healthy.stdout);
}
