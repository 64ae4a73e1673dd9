//! Target `recover_segment`: a queue directory made of arbitrary files.
//!
//! Input (see [`parse`]): a flags byte, then sections `tag: u8 ‖ len: u32 LE
//! ‖ bytes` (the length is cut to what is left), each one file of the
//! queue directory: log segments `0000000001.wal`.., `dead.wal`, and
//! leftover `.tmp` files. Flags choose strict or salvage recovery, and
//! whether the harness fixes the frame and header checksums after the
//! fuzzer's mutations (so that mutated fields get past the CRC and reach
//! the replay logic), and seed the settle phase.
//!
//! A strict open must refuse damage in the last segment that a later
//! record proves was durable (see [`proven_damage`]).
//!
//! `Queue::open` must return `Ok` or a clean `Err`, never panic or hang.
//! When it opens: `check_invariants`; new enqueues (plain, keyed, batch)
//! work and their ids are new; every job can be leased and settled (acked,
//! retried, failed), dead letters redriven and purged, with the invariants
//! holding; and reopening what the queue left must succeed and deliver
//! nothing that was acked.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use walq::format::frame;
use walq::format::header::{SegmentHeader, SEGMENT_HEADER_LEN};
use walq::vfs::{SimFs, Vfs};
use walq::{
    Durability, EnqueueOptions, ErrorKind, ManualClock, Options, Queue, RecoveryMode, Retry,
};

use super::input::Input;

/// Flag: open with `RecoveryMode::Salvage`.
pub const SALVAGE: u8 = 0x01;
/// Flag: recompute the checksum of every frame the length fields chain.
pub const FIX_FRAMES: u8 = 0x02;
/// Flag: recompute the checksum of every file header.
pub const FIX_HEADERS: u8 = 0x04;

/// Section tag of `dead.wal`.
pub const TAG_DEAD: u8 = 0;
/// Section tag of a leftover `0000000001.wal.tmp`.
pub const TAG_SEG_TMP: u8 = 16;
/// Section tag of a leftover `dead.wal.tmp`.
pub const TAG_DEAD_TMP: u8 = 17;

/// Clock at the start of every run (ms since the epoch).
pub const START_MS: u64 = 1_700_000_000_000;
/// Clock while settling: ten years on, so every realistic delay is due.
pub const LATER_MS: u64 = START_MS + 10 * 365 * 24 * 3600 * 1000;

/// Upper bound on dequeues while settling, so no input can loop for long.
const MAX_DEQUEUES: usize = 4_000;

/// One file of the directory.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// File name in the queue directory.
    pub name: String,
    /// Checksum seed of its frames (segment id; 0 for dead letters).
    pub seed: u32,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// The directory an input describes.
#[derive(Debug, Clone)]
pub struct DirSpec {
    /// Flags byte.
    pub flags: u8,
    /// Files, in input order (a later file of the same name wins).
    pub files: Vec<FileSpec>,
}

/// The file name and checksum seed of a section tag.
pub fn tag_name(tag: u8) -> (String, u32) {
    match tag % 18 {
        TAG_DEAD => ("dead.wal".to_string(), 0),
        TAG_SEG_TMP => ("0000000001.wal.tmp".to_string(), 1),
        TAG_DEAD_TMP => ("dead.wal.tmp".to_string(), 0),
        id => (format!("{:010}.wal", id), u32::from(id)),
    }
}

/// Decodes an input.
pub fn parse(data: &[u8]) -> DirSpec {
    let mut input = Input::new(data);
    let flags = input.u8();
    let mut files = Vec::new();
    while !input.is_empty() {
        let tag = input.u8();
        let len = input.u32() as usize;
        let (name, seed) = tag_name(tag);
        let mut bytes = input.bytes(len).to_vec();
        if flags & FIX_HEADERS != 0 {
            fix_header(&mut bytes);
        }
        if flags & FIX_FRAMES != 0 {
            fix_frames(&mut bytes, seed);
        }
        files.push(FileSpec { name, seed, bytes });
    }
    DirSpec { flags, files }
}

/// Encodes a directory as an input (the inverse of [`parse`]).
pub fn encode(flags: u8, files: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = vec![flags];
    for (tag, bytes) in files {
        out.push(*tag);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// Recomputes a file header's checksum.
pub fn fix_header(bytes: &mut [u8]) {
    if bytes.len() >= SEGMENT_HEADER_LEN {
        let crc = crc32fast::hash(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Recomputes the checksum of every frame that the length fields chain
/// through, from the end of the header.
pub fn fix_frames(bytes: &mut [u8], seed: u32) {
    let mut off = SEGMENT_HEADER_LEN;
    while off + frame::FRAME_HEADER_LEN <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().expect("4 bytes")) as usize;
        if len < frame::FRAME_HEADER_LEN || len > bytes.len() - off {
            break;
        }
        let crc = frame::checksum(seed, &[&bytes[off + 4..off + len]]);
        bytes[off..off + 4].copy_from_slice(&crc.to_le_bytes());
        off += len;
    }
}

/// The options every run opens with.
pub fn options(clock: &ManualClock, salvage: bool) -> Options {
    Options::default()
        .clock(clock.clone())
        .segment_size(walq::MIN_SEGMENT_SIZE)
        .durability(Durability::Os)
        .max_attempts(3)
        .jitter_seed(7)
        .recovery(if salvage {
            RecoveryMode::Salvage
        } else {
            RecoveryMode::Strict
        })
}

/// A tiny deterministic generator for the settle phase's choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let spec = parse(data);
    let fs = SimFs::new();
    let dir = Path::new(DIR);
    write_dir(&fs, dir, &spec.files);
    let must_fail = if spec.flags & SALVAGE == 0 {
        proven_damage(&spec.files)
    } else {
        None
    };
    check_dir(&fs, dir, spec.flags, must_fail);
}

/// Damage in the last segment that a later record proves was durable: the
/// brief says "a bad record is a torn tail unless a later valid record
/// proves, through its sync lag, that the bad record had been durable", so
/// a strict open must report it. Judged from the files before the open
/// (which zeroes what it takes for a torn tail).
pub fn proven_damage(files: &[FileSpec]) -> Option<String> {
    let mut segments: std::collections::BTreeMap<u32, &FileSpec> = Default::default();
    for f in files {
        if let Some(id) = f
            .name
            .strip_suffix(".wal")
            .and_then(|d| d.parse::<u32>().ok())
        {
            segments.insert(id, f);
        }
    }
    let (&id, last) = segments.iter().next_back()?;
    proven_in_last(id, &last.bytes).or_else(|| proven_across_rotation(&segments))
}

/// Damage in the newest segment but one that a later record, in it or in
/// the newest segment, proves was durable (docs/format.md, "Torn across a
/// rotation"): a strict open must report it. Without such a proof the tail
/// is torn: cut, and the newest segment dropped.
fn proven_across_rotation(segments: &std::collections::BTreeMap<u32, &FileSpec>) -> Option<String> {
    let mut newest_two = segments.iter().rev();
    let (&n_id, newest) = newest_two.next()?;
    let (&p_id, before) = newest_two.next()?;
    let (n, p) = (&newest.bytes, &before.bytes);
    let n_header = SegmentHeader::decode(n).ok()?;
    let p_header = SegmentHeader::decode(p).ok()?;
    if n_id != p_id + 1 || n_header.segment_id != n_id || p_header.segment_id != p_id {
        return None;
    }
    let (off, expected, clean_end) = intact_prefix(p, p_id, p_header.base_lsn);
    if clean_end && n_header.base_lsn == expected {
        return None;
    }
    let proof = |bytes: &[u8], id: u32, from: usize| {
        let size = u32::try_from(bytes.len()).ok()?;
        (from..bytes.len().saturating_sub(frame::FRAME_HEADER_LEN - 1)).find_map(|at| {
            let f = frame::decode(&bytes[at..], id, size).ok()?;
            (f.lsn > expected && f.lsn.saturating_sub(u64::from(f.sync_lag)) >= expected)
                .then_some((at, f.lsn, f.sync_lag))
        })
    };
    let (at, lsn, lag, id) = proof(p, p_id, off + 1)
        .map(|(a, l, g)| (a, l, g, p_id))
        .or_else(|| proof(n, n_id, SEGMENT_HEADER_LEN).map(|(a, l, g)| (a, l, g, n_id)))?;
    Some(format!(
        "segment {p_id}: record LSN {expected} at offset {off} is damaged or missing, and the \
         record of segment {id} at offset {at} (LSN {lsn}, sync lag {lag}) proves it was durable"
    ))
}

/// Where the chain of intact frames of a segment ends: the offset, the LSN
/// expected there, and whether only zeros follow.
fn intact_prefix(bytes: &[u8], id: u32, base_lsn: u64) -> (usize, u64, bool) {
    let size = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let (mut off, mut expected) = (SEGMENT_HEADER_LEN.min(bytes.len()), base_lsn);
    loop {
        match frame::decode(&bytes[off..], id, size) {
            Ok(f) if f.lsn == expected => {
                off += f.len as usize;
                expected += 1;
            }
            _ => return (off, expected, bytes[off..].iter().all(|&b| b == 0)),
        }
    }
}

/// [`proven_damage`] in the last segment.
fn proven_in_last(id: u32, bytes: &[u8]) -> Option<String> {
    let header = SegmentHeader::decode(bytes).ok()?;
    if header.segment_id != id {
        return None;
    }
    let size = u32::try_from(bytes.len()).ok()?;
    let mut off = SEGMENT_HEADER_LEN;
    let mut expected = header.base_lsn;
    loop {
        match frame::decode(&bytes[off..], id, size) {
            Ok(f) if f.lsn == expected => {
                off += f.len as usize;
                expected += 1;
            }
            Err(frame::FrameError::Zero) if bytes[off..].iter().all(|&b| b == 0) => return None,
            _ => break,
        }
    }
    let mut at = off + 1;
    while at + frame::FRAME_HEADER_LEN <= bytes.len() {
        let lsn = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
        if lsn > expected && lsn - expected < 1 << 40 {
            if let Ok(f) = frame::decode(&bytes[at..], id, size) {
                if f.lsn.saturating_sub(u64::from(f.sync_lag)) >= expected {
                    return Some(format!(
                        "segment {id}: record LSN {expected} at offset {off} is damaged, and the \
                         record at offset {at} (LSN {}, sync lag {}) proves it was durable",
                        f.lsn, f.sync_lag
                    ));
                }
            }
        }
        at += 1;
    }
    None
}

/// Where the queue lives on the simulated file system.
pub const DIR: &str = "/q";

/// Creates `dir` on `fs` holding `files` (a later file of a name wins).
pub fn write_dir(fs: &SimFs, dir: &Path, files: &[FileSpec]) {
    fs.create_dir_all(dir, 0o700).expect("queue directory");
    for f in files {
        let path = dir.join(&f.name);
        let _ = fs.remove(&path);
        let file = fs.create(&path, 0o600).expect("creating a file");
        file.write_at(&f.bytes, 0).expect("writing a file");
        file.sync_all().expect("syncing a file");
    }
    fs.sync_dir(dir).expect("syncing the directory");
}

/// Opens the queue in `dir` (already filled) and checks it as described in
/// the module docs; `must_fail` says why the open must be refused, if it
/// must.
pub fn check_dir(
    fs: &(impl Vfs + Clone + 'static),
    dir: &Path,
    flags: u8,
    must_fail: Option<String>,
) {
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let clock = ManualClock::new(START_MS);
    let opts = options(&clock, flags & SALVAGE != 0);
    let q = match Queue::open_on(vfs.clone(), dir, opts.clone()) {
        Ok(q) => q,
        Err(e) => {
            check_open_error(&e);
            return;
        }
    };
    if let Some(why) = must_fail {
        panic!("strict open accepts a damaged record that was durable: {why}");
    }
    q.check_invariants();
    let before = q.stats();
    let report = format!("{:?}", q.recovery_report());
    let mut rng = Rng(u64::from(flags >> 3));

    // The recovered dead letters were verified on open: they read back.
    for id in q.dead_letter_ids() {
        let letter = q
            .dead_letter(id)
            .expect("a recovered dead letter reads back");
        assert_eq!(letter.map(|l| l.id), Some(id));
    }

    // New jobs get new ids, keys deduplicate.
    let a = q
        .enqueue(b"new after recovery")
        .expect("enqueue after recovery");
    let k1 = q
        .enqueue_with(b"keyed", EnqueueOptions::new().idempotency_key("fuzz-key"))
        .expect("keyed enqueue after recovery");
    let k2 = q
        .enqueue_with(
            b"keyed again",
            EnqueueOptions::new().idempotency_key("fuzz-key"),
        )
        .expect("second keyed enqueue after recovery");
    assert_eq!(k1.id, k2.id, "a key maps to one job");
    assert!(k2.duplicate, "the second enqueue with a key is a duplicate");
    let batch = q
        .enqueue_batch([&b"b1"[..], b"b2"])
        .expect("batch after recovery");
    assert!(
        a < batch[0] && batch[0] < batch[1],
        "ids grow: {a} {batch:?}"
    );
    if !k1.duplicate {
        assert!(
            a < k1.id && k1.id < batch[0],
            "ids grow: {a} {} {batch:?}",
            k1.id
        );
    }
    q.check_invariants();

    for id in q.dead_letter_ids() {
        assert!(id < a, "dead letter {id} is not older than the new job {a}");
    }
    let new_ids = [a, k1.id, batch[0], batch[1]];
    let mut done = settle(&q, &clock, &mut rng, a, &new_ids);
    q.redrive_all().expect("redrive after recovery");
    q.check_invariants();
    done &= settle(&q, &clock, &mut rng, a, &new_ids);
    q.purge_all().expect("purge after recovery");
    q.check_invariants();
    let after = q.stats();
    if done {
        assert_eq!(
            (after.ready, after.in_flight, after.dead),
            (0, 0, 0),
            "{after:?}"
        );
    }
    drop(q);

    // What the queue wrote itself must open, and nothing acked comes back.
    let q = Queue::open_on(vfs, dir, opts).unwrap_or_else(|e| {
        panic!("reopening after settling fails: {e}\nfirst open: {before:?}\n{report}")
    });
    q.check_invariants();
    if !done {
        return;
    }
    let again = q.stats();
    if let Ok(Some(job)) = q.dequeue() {
        panic!(
            "job {} (attempt {}, payload {:?}) is delivered after every job was settled \
             and the queue reopened; first open: {before:?}\n{report}",
            job.id(),
            job.attempt(),
            String::from_utf8_lossy(job.payload())
        );
    }
    assert_eq!(
        (again.ready, again.in_flight, again.dead, again.delayed),
        (0, 0, 0, after.delayed),
        "after settling everything and reopening: {again:?}, before: {after:?}"
    );
    assert!(q.dequeue().expect("dequeue after reopen").is_none());
}

/// Leases every ready job and settles it: mostly acks, some retries and
/// failures (which dead-letter), until nothing is ready (true) or the
/// bound on dequeues is reached (false). Jobs with an id from `first_new`
/// on must be the new ones.
fn settle(q: &Queue, clock: &ManualClock, rng: &mut Rng, first_new: u64, new_ids: &[u64]) -> bool {
    clock.set(LATER_MS);
    for _ in 0..MAX_DEQUEUES {
        let job = match q.dequeue() {
            Ok(Some(job)) => job,
            Ok(None) => return true,
            Err(e) => panic!("dequeue on a recovered queue: {e}"),
        };
        assert!(
            job.id() < first_new || new_ids.contains(&job.id()),
            "job {} was never enqueued (first new id {first_new})",
            job.id()
        );
        let _ = job.payload().len();
        let _ = job.idempotency_key();
        let r = job.receipt();
        let res = match rng.next() % 8 {
            0 => q.nack(r, Retry::After(Duration::ZERO), "fuzz retry"),
            1 => q.fail(r, "fuzz failure"),
            2 => q.extend(r, Duration::from_secs(1)).and_then(|()| q.ack(r)),
            _ => q.ack(r),
        };
        match res {
            Ok(()) => {}
            // A recovered record from the far future (`enqueued_ms` near
            // u64::MAX) moves the queue's clock there, where a lease's
            // deadline saturates and is over at once: not a finding here.
            Err(e) if e.kind() == ErrorKind::LeaseLost => {}
            Err(e) => panic!("settling job {} on a recovered queue: {e}", r.job_id()),
        }
        q.check_invariants();
    }
    false
}

/// A refused open is an error that says what is wrong, never a panic.
fn check_open_error(e: &walq::Error) {
    let text = e.to_string();
    assert!(!text.is_empty());
    assert!(
        !matches!(
            e.kind(),
            ErrorKind::LeaseLost | ErrorKind::Locked | ErrorKind::Closed | ErrorKind::Poisoned
        ),
        "open fails with an unexpected kind: {e}"
    );
}
