//! Target `inspect_dir`: the read-only inspector (`walq::inspect`, what
//! `walq verify`, `export` and `salvage` run on) over a queue directory
//! made of arbitrary files.
//!
//! Input: the format of [`super::recover_segment`] (a flags byte, then one
//! section per file; the flags that fix checksums apply, so mutated fields
//! reach the record decoders). The files are written into a real
//! temporary directory, since the inspector reads files with `read`, not
//! through walq's file-system seam.
//!
//! Properties: nothing panics or hangs; a snapshot with payloads and one
//! without agree (both fail, or both succeed with the same jobs and dead
//! letters); and every payload read back one at a time
//! ([`walq::inspect::PayloadReader`], [`walq::inspect::DeadPayloadReader`])
//! is the payload the full snapshot holds, or an error (never other
//! bytes).

use std::path::Path;

use walq::inspect::{Inspector, Snapshot, Visitor};

use super::recover_segment::parse;

/// Runs the properties above on the directory `data` describes.
pub fn run(data: &[u8]) {
    let spec = parse(data);
    let dir = tempfile_dir();
    for f in &spec.files {
        std::fs::write(dir.path().join(&f.name), &f.bytes).expect("writing a file");
    }
    check(dir.path());
}

/// A fresh directory under the system's temporary directory (tmpfs where
/// `TMPDIR` points at one).
fn tempfile_dir() -> TempDir {
    let base = std::env::temp_dir();
    for n in 0..u32::MAX {
        let path = base.join(format!("walq-fuzz-inspect-{}-{n}", std::process::id()));
        if std::fs::create_dir(&path).is_ok() {
            return TempDir(path);
        }
    }
    panic!("no temporary directory could be made");
}

/// Removes its directory when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The properties, on the filled directory `dir`.
fn check(dir: &Path) {
    let Ok(inspector) = Inspector::open(dir) else {
        return;
    };
    struct Quiet;
    impl Visitor for Quiet {}
    let _ = inspector.verify(&mut Quiet);
    let full = inspector.snapshot();
    let lean = inspector.snapshot_without_payloads();
    let (full, lean) = match (full, lean) {
        (Ok(full), Ok(lean)) => (full, lean),
        (Err(_), Err(_)) => return,
        (full, lean) => panic!(
            "the snapshots disagree: with payloads {:?}, without {:?}",
            full.err(),
            lean.err()
        ),
    };
    same_jobs(&full, &lean);
    payloads_read_back(&inspector, &full, &lean);
}

/// The two snapshots list the same jobs and dead letters.
fn same_jobs(full: &Snapshot, lean: &Snapshot) {
    let ids = |s: &Snapshot| s.jobs.keys().copied().collect::<Vec<_>>();
    assert_eq!(ids(full), ids(lean), "pending jobs");
    let dead = |s: &Snapshot| s.dead.keys().copied().collect::<Vec<_>>();
    assert_eq!(dead(full), dead(lean), "dead letters");
    let places = lean.dead_places.keys().copied().collect::<Vec<_>>();
    assert_eq!(places, dead(lean), "a place for every dead letter");
    for (id, letter) in &lean.dead {
        assert!(
            letter.payload.is_empty(),
            "dead letter {id} kept its payload"
        );
        let place = &lean.dead_places[id];
        assert_eq!(place.payload_len, full.dead[id].payload.len() as u64);
    }
}

/// Every payload read back one at a time is the full snapshot's, or an
/// error.
fn payloads_read_back(inspector: &Inspector, full: &Snapshot, lean: &Snapshot) {
    let mut jobs = inspector.payload_reader();
    for (id, job) in &lean.jobs {
        if let Ok(payload) = jobs.read(job) {
            assert_eq!(payload, full.jobs[id].payload, "payload of job {id}");
        }
    }
    let mut dead = inspector.dead_payload_reader();
    for (id, place) in &lean.dead_places {
        if let Ok(payload) = dead.read(place) {
            assert_eq!(
                payload, full.dead[id].payload,
                "payload of dead letter {id}"
            );
        }
    }
}
