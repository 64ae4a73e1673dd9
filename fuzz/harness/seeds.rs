//! Seed inputs made by running small real workloads, so the fuzzers start
//! from valid segment files and records and get deep quickly. The smoke
//! test runs these on every `cargo test` (so they follow format changes),
//! and `WALQ_FUZZ_WRITE_SEEDS=1 cargo test --test fuzz_smoke` writes them to
//! `fuzz/corpus/<target>/seed-*`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use walq::format::frame;
use walq::format::header::SEGMENT_HEADER_LEN;
use walq::{EnqueueOptions, ManualClock, Priority, Queue, Retry};

use super::recover_segment::{
    self as rs, FIX_FRAMES, FIX_HEADERS, SALVAGE, TAG_DEAD, TAG_DEAD_TMP, TAG_SEG_TMP,
};
use walq::vfs::{SimFs, Vfs};

/// A workload: what it does to a freshly opened queue.
type Workload = fn(&Queue, &ManualClock);

fn empty(_: &Queue, _: &ManualClock) {}

/// Jobs in every state: fresh, delayed, keyed, batched, leased (the lease
/// is released on open), retried, acked, dead.
fn mixed(q: &Queue, clock: &ManualClock) {
    for i in 0..6u8 {
        q.enqueue(&[b'j', i]).expect("enqueue");
    }
    q.enqueue_with(
        b"delayed",
        EnqueueOptions::new().delay(Duration::from_secs(60)),
    )
    .expect("delayed");
    q.enqueue_with(b"keyed", EnqueueOptions::new().idempotency_key("order-7"))
        .expect("keyed");
    q.enqueue_with(b"once", EnqueueOptions::new().max_attempts(1))
        .expect("max attempts");
    q.enqueue_batch([&b"batch-1"[..], b"batch-2", b"batch-3"])
        .expect("batch");
    let a = q.dequeue().expect("dequeue").expect("a job");
    q.ack(a.receipt()).expect("ack");
    let b = q.dequeue().expect("dequeue").expect("a job");
    q.nack(
        b.receipt(),
        Retry::After(Duration::from_secs(5)),
        "try later",
    )
    .expect("nack");
    let c = q.dequeue().expect("dequeue").expect("a job");
    q.fail(c.receipt(), "bad payload").expect("fail");
    let d = q.dequeue().expect("dequeue").expect("a job");
    q.extend(d.receipt(), Duration::from_secs(120))
        .expect("extend");
    clock.advance(Duration::from_secs(1));
    let _still_leased = q.dequeue().expect("dequeue").expect("a job");
}

/// Jobs leased with `dequeue_batch` and settled with `ack_batch`: the
/// batch records (LeaseMany, AckMany), one of them flagged as part of a
/// framed batch.
fn batches(q: &Queue, _clock: &ManualClock) {
    q.enqueue_batch((0..6u8).map(|i| [b'b', i])).expect("batch");
    let jobs = q.dequeue_batch(4).expect("dequeue_batch");
    let receipts: Vec<_> = jobs[..3].iter().map(|j| j.receipt()).collect();
    let results = q.ack_batch(&receipts).expect("ack_batch");
    assert!(results.iter().all(|r| r.is_ok()));
}

/// Jobs of every priority level and two of one group (Enqueue2 records,
/// kind 12, with and without a key), one leased, one retried, one acked.
fn priorities(q: &Queue, _clock: &ManualClock) {
    for (i, p) in Priority::ALL.into_iter().enumerate() {
        q.enqueue_with(&[b'p', i as u8], EnqueueOptions::new().priority(p))
            .expect("enqueue");
    }
    q.enqueue_with(
        b"urgent-keyed",
        EnqueueOptions::new()
            .priority(Priority::Urgent)
            .idempotency_key("urgent-7"),
    )
    .expect("keyed");
    for i in 0..2u8 {
        q.enqueue_with(&[b'g', i], EnqueueOptions::new().group("customer-42"))
            .expect("grouped");
    }
    let a = q.dequeue().expect("dequeue").expect("a job");
    q.ack(a.receipt()).expect("ack");
    let b = q.dequeue().expect("dequeue").expect("a job");
    q.nack(
        b.receipt(),
        Retry::After(Duration::from_secs(5)),
        "try later",
    )
    .expect("nack");
    let _still_leased = q.dequeue().expect("dequeue").expect("a job");
}

/// Dead letters redriven and purged, keys of finished jobs.
/// Two named queues beside the default one (QueueDef records, kind 11;
/// Enqueue2 with a queue id), a keyed job on each, and a dead letter of a
/// named queue at Urgent (`dead.wal` kind 13).
fn named_queues(q: &Queue, _clock: &ManualClock) {
    let store = q.store();
    let emails = store.queue("emails").expect("queue");
    let reports = store.queue("reports").expect("queue");
    emails
        .enqueue_with(b"e-dead", EnqueueOptions::new().priority(Priority::Urgent))
        .expect("enqueue");
    let job = emails.dequeue().expect("dequeue").expect("a job");
    emails
        .fail(job.receipt(), "to the dead letters")
        .expect("fail");
    emails
        .enqueue_with(b"e-keyed", EnqueueOptions::new().idempotency_key("k"))
        .expect("enqueue");
    reports
        .enqueue_with(b"r-keyed", EnqueueOptions::new().idempotency_key("k"))
        .expect("enqueue");
    q.enqueue(b"d-1").expect("enqueue");
    let _leased = reports.dequeue().expect("dequeue").expect("a job");
}

fn dead_letters(q: &Queue, clock: &ManualClock) {
    for i in 0..5u8 {
        let key = format!("k{i}");
        q.enqueue_with(&[b'd', i], EnqueueOptions::new().idempotency_key(key))
            .expect("enqueue");
    }
    for _ in 0..5 {
        let job = q.dequeue().expect("dequeue").expect("a job");
        q.fail(job.receipt(), "to the dead letters").expect("fail");
    }
    let ids = q.dead_letter_ids();
    q.redrive(ids[0]).expect("redrive");
    q.purge(ids[1]).expect("purge");
    let job = q.dequeue().expect("dequeue").expect("redriven");
    q.ack(job.receipt()).expect("ack");
    clock.advance(Duration::from_secs(2));
    q.enqueue(b"after").expect("enqueue");
}

/// Enough records to rotate into a second segment and reclaim the first
/// (carrying a few live jobs forward).
fn rotation(q: &Queue, _clock: &ManualClock) {
    let payload = [b'r'; 300];
    for _ in 0..240 {
        q.enqueue(&payload).expect("enqueue");
    }
    for i in 0..236 {
        let job = q.dequeue().expect("dequeue").expect("a job");
        if i % 50 == 7 {
            q.nack(
                job.receipt(),
                Retry::After(Duration::from_secs(30)),
                "later",
            )
            .expect("nack");
        } else {
            q.ack(job.receipt()).expect("ack");
        }
    }
}

/// A backlog across a rotation: two segments, nothing reclaimed.
fn two_segments(q: &Queue, _clock: &ManualClock) {
    let payload = [b't'; 300];
    for _ in 0..240 {
        q.enqueue(&payload).expect("enqueue");
    }
}

/// Runs `work` on a new queue and returns its files as `(tag, bytes)`,
/// segments cut after their last record.
pub fn workload_files(work: Workload) -> Vec<(u8, Vec<u8>)> {
    let fs = SimFs::new();
    let dir = Path::new(rs::DIR);
    let clock = ManualClock::new(rs::START_MS);
    let q = Queue::open_on(Arc::new(fs.clone()), dir, rs::options(&clock, false)).expect("open");
    work(&q, &clock);
    drop(q);
    read_dir(&fs, dir)
}

/// The walq files of `dir` as `(tag, bytes)`, segments cut after their last
/// record (the zeros of preallocation left out).
pub fn read_dir(fs: &SimFs, dir: &Path) -> Vec<(u8, Vec<u8>)> {
    let mut names = fs.list(dir).expect("list");
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let bytes = fs.read_file(&dir.join(&name)).expect("read");
        if name == "dead.wal" {
            out.push((TAG_DEAD, bytes));
        } else if let Some(id) = name.strip_suffix(".wal").and_then(|d| d.parse::<u8>().ok()) {
            assert!(id < TAG_SEG_TMP, "segment {id} has no tag");
            let end = records_end(&bytes, u32::from(id));
            out.push((id, bytes[..end].to_vec()));
        }
    }
    out
}

/// The offset just past the last record of a segment.
pub fn records_end(bytes: &[u8], seed: u32) -> usize {
    let mut off = SEGMENT_HEADER_LEN.min(bytes.len());
    while let Ok(f) = frame::decode(&bytes[off..], seed, u32::MAX) {
        off += f.len as usize;
    }
    off
}

/// Offsets of the records of a segment.
pub fn record_offsets(bytes: &[u8], seed: u32) -> Vec<usize> {
    let mut offs = Vec::new();
    let mut off = SEGMENT_HEADER_LEN.min(bytes.len());
    while let Ok(f) = frame::decode(&bytes[off..], seed, u32::MAX) {
        offs.push(off);
        off += f.len as usize;
    }
    offs
}

fn refs(files: &[(u8, Vec<u8>)]) -> Vec<(u8, &[u8])> {
    files.iter().map(|(t, b)| (*t, b.as_slice())).collect()
}

/// Seeds of `recover_segment`: clean directories from the workloads and
/// damaged variants of them (torn tail, unfinished batch, flipped bit,
/// future version, leftover temporary files, a missing segment).
pub fn recover_segment() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let workloads: [(&str, Workload); 6] = [
        ("empty", empty),
        ("mixed", mixed),
        ("dead", dead_letters),
        ("rotation", rotation),
        ("priorities", priorities),
        ("named", named_queues),
    ];
    for (name, work) in workloads {
        let files = workload_files(work);
        out.push((name.to_string(), rs::encode(0, &refs(&files))));
        if name == "empty" || name == "rotation" {
            continue;
        }
        let last = files
            .iter()
            .rposition(|(t, _)| *t != TAG_DEAD)
            .expect("a segment");
        let (tag, seg) = &files[last];
        let offs = record_offsets(seg, u32::from(*tag));
        let variant = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut files = files.clone();
            edit(&mut files[last].1);
            files
        };
        // Torn tail: the last record cut in half.
        let torn = variant(&|s| {
            let at = offs[offs.len() - 1];
            s.truncate(at + (s.len() - at) / 2);
        });
        out.push((format!("{name}-torn"), rs::encode(0, &refs(&torn))));
        // A flipped bit in the first record: strict refuses, salvage skips.
        let flipped = variant(&|s| s[offs[0] + 30] ^= 0x10);
        out.push((format!("{name}-flip"), rs::encode(0, &refs(&flipped))));
        out.push((
            format!("{name}-flip-salvage"),
            rs::encode(SALVAGE, &refs(&flipped)),
        ));
        // The same with checksums fixed: the mutated field reaches replay.
        out.push((
            format!("{name}-flip-fixed"),
            rs::encode(FIX_FRAMES | FIX_HEADERS, &refs(&flipped)),
        ));
        // A format version from the future.
        let future = variant(&|s| s[8] = 9);
        out.push((
            format!("{name}-future"),
            rs::encode(FIX_HEADERS, &refs(&future)),
        ));
        // Leftover temporary files.
        let mut tmp = files.clone();
        tmp.push((TAG_SEG_TMP, files[last].1.clone()));
        tmp.push((TAG_DEAD_TMP, vec![0x55; 10]));
        out.push((format!("{name}-tmp"), rs::encode(0, &refs(&tmp))));
    }
    // Torn across a rotation (docs/format.md): the rotation workload's
    // last record of the segment before the newest zeroed, and the sync
    // lags of the newest rewritten (checksums fixed by the harness) to
    // prove nothing (cut, the newest dropped) or to prove it durable
    // (strict refuses); and the newest segment's header never written.
    let files = workload_files(two_segments);
    let segs: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].0 != TAG_DEAD)
        .collect();
    let [.., before, newest] = segs[..] else {
        panic!("the two-segment workload left {} segments", segs.len());
    };
    {
        for (name, proves) in [
            ("rotation-torn-across", false),
            ("rotation-proven-across", true),
        ] {
            let mut edit = files.clone();
            let tag = u32::from(edit[before].0);
            let last = *record_offsets(&edit[before].1, tag)
                .last()
                .expect("a record");
            edit[before].1[last..].fill(0);
            let tag = u32::from(edit[newest].0);
            for off in record_offsets(&edit[newest].1, tag) {
                let f = &mut edit[newest].1[off..];
                let lsn = u64::from_le_bytes(f[8..16].try_into().expect("8 bytes"));
                let lag = if proves {
                    0
                } else {
                    u32::try_from(lsn).unwrap_or(u32::MAX)
                };
                f[20..24].copy_from_slice(&lag.to_le_bytes());
            }
            out.push((name.into(), rs::encode(FIX_FRAMES, &refs(&edit))));
        }
        let mut unborn = files.clone();
        unborn[newest].1[..SEGMENT_HEADER_LEN].fill(0);
        out.push((
            "rotation-unborn-newest".into(),
            rs::encode(0, &refs(&unborn)),
        ));
    }
    // An unfinished batch at the tail (the mixed workload's batch of three,
    // cut after its second record).
    let files = workload_files(mixed);
    let last = files
        .iter()
        .rposition(|(t, _)| *t != TAG_DEAD)
        .expect("a segment");
    let mut cut = files.clone();
    let seg = &mut cut[last].1;
    let offs = record_offsets(seg, u32::from(files[last].0));
    let batch_more = offs
        .iter()
        .position(|&o| seg[o + 17] & frame::FLAG_BATCH_MORE != 0)
        .expect("a batch");
    seg.truncate(offs[batch_more + 2]);
    out.push(("mixed-unfinished-batch".into(), rs::encode(0, &refs(&cut))));
    // A gap in the segment ids.
    let files = workload_files(mixed);
    let mut gap = files.clone();
    let (tag, seg) = files
        .iter()
        .find(|(t, _)| *t != TAG_DEAD)
        .expect("a segment")
        .clone();
    gap.push((tag + 2, seg));
    out.push(("mixed-gap".into(), rs::encode(0, &refs(&gap))));
    out
}

/// Seeds of `decode_record`: every record and header of the workloads'
/// files, framed as the target reads them (`seg_id ‖ max_len ‖ bytes`).
pub fn decode_record() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut seen_kinds = std::collections::BTreeSet::new();
    for work in [
        mixed as Workload,
        dead_letters,
        batches,
        priorities,
        named_queues,
    ] {
        for (tag, bytes) in workload_files(work) {
            let seed = u32::from(tag);
            let mut input = |name: String, body: &[u8]| {
                let mut v = seed.to_le_bytes().to_vec();
                v.extend_from_slice(&(1u32 << 20).to_le_bytes());
                v.extend_from_slice(body);
                out.push((name, v));
            };
            input(format!("header-{tag}"), &bytes[..SEGMENT_HEADER_LEN]);
            let offs = record_offsets(&bytes, seed);
            for (i, &off) in offs.iter().enumerate() {
                let kind = bytes[off + 16];
                let flags = bytes[off + 17];
                // One record of each kind and flags is enough.
                if seen_kinds.insert((kind, flags)) {
                    let end = offs.get(i + 1).copied().unwrap_or(bytes.len());
                    input(format!("record-kind{kind}-flags{flags}"), &bytes[off..end]);
                }
            }
        }
    }
    out
}

/// Seeds of `ops_with_crash`: short scenarios that reach every operation,
/// lease expiry, dead-lettering, dedup windows, rotation, reopen and power
/// loss.
pub fn ops_with_crash() -> Vec<(String, Vec<u8>)> {
    use super::ops_with_crash::{encode, Op::*};
    let enq = |fill: u8, len: usize| Enqueue {
        fill,
        len,
        delay_ms: 0,
        key: None,
        max_attempts: None,
    };
    let keyed = |fill: u8, key: u8| Enqueue {
        fill,
        len: 5,
        delay_ms: 0,
        key: Some(key),
        max_attempts: None,
    };
    let mut out = Vec::new();
    out.push((
        "basic".to_string(),
        encode(
            false,
            &[
                enq(1, 10),
                enq(2, 0),
                Enqueue {
                    fill: 3,
                    len: 7,
                    delay_ms: 5_000,
                    key: None,
                    max_attempts: None,
                },
                Batch(vec![(4, 3), (5, 4)]),
                Dequeue(1),
                Dequeue(1),
                Dequeue(1),
                Ack(2),
                Nack(1, 0),
                Fail(0),
                Dequeue(1),
                Extend(0, 60_000),
                Advance(40_000),
                Dequeue(1),
                Ack(0),
                Redrive(None),
                Sync,
                Reopen,
                Dequeue(1),
                Dequeue(1),
                Crash(1),
                Dequeue(1),
                Ack(0),
            ],
        ),
    ));
    out.push((
        "keys".to_string(),
        encode(
            false,
            &[
                keyed(1, 0),
                keyed(2, 0),
                keyed(3, 1),
                Dequeue(1),
                Ack(0),
                keyed(4, 0),
                Advance(1_800_000),
                Reopen,
                keyed(5, 0),
                Advance(2_400_000),
                keyed(6, 0),
                Dequeue(1),
                Fail(0),
                keyed(7, 1),
                Crash(2),
                keyed(8, 1),
            ],
        ),
    ));
    out.push((
        "attempts".to_string(),
        encode(
            true,
            &[
                Enqueue {
                    fill: 9,
                    len: 4,
                    delay_ms: 0,
                    key: Some(2),
                    max_attempts: Some(1),
                },
                enq(10, 4),
                Dequeue(2),
                Advance(31_000),
                Dequeue(1),
                Advance(31_000),
                Dequeue(1),
                Crash(3),
                Dequeue(1),
                Nack(0, 0),
                Dequeue(1),
                Nack(0, 0),
                Purge(Some(0)),
                Redrive(Some(0)),
                Reopen,
                Dequeue(3),
                Ack(0),
            ],
        ),
    ));
    let mut rotation = Vec::new();
    for i in 0..40u8 {
        rotation.push(enq(i, 4000));
        rotation.push(Dequeue(1));
        if i % 3 != 0 {
            rotation.push(Ack(0));
        }
        if i % 10 == 9 {
            rotation.push(Crash(u64::from(i)));
        }
    }
    out.push(("rotation".to_string(), encode(false, &rotation)));
    out.push((
        "unsynced-lease".to_string(),
        encode(
            false,
            &[
                Enqueue {
                    fill: 1,
                    len: 3,
                    delay_ms: 0,
                    key: None,
                    max_attempts: Some(2),
                },
                Dequeue(1),
                Crash(7),
                Dequeue(1),
                Crash(8),
                Dequeue(1),
                Sync,
                Crash(9),
                Dequeue(1),
            ],
        ),
    ));
    out
}

/// Seeds of target `checkpoint`: the real checkpoint untouched (clean
/// close and crash, a few workloads), with one byte flipped at offsets
/// across the head, the segment list and the slots (CRC fixed or not), and
/// replaced by an empty file and by a bare magic.
pub fn checkpoint() -> Vec<(String, Vec<u8>)> {
    use super::checkpoint::{CLOSE, FIX_CRC, XOR};
    let mut out = Vec::new();
    for workload in [0u8, 3, 9] {
        for close in [0, CLOSE] {
            let flags = (workload << 3) | close | XOR;
            out.push((format!("intact-w{workload}-f{flags}"), vec![flags]));
        }
    }
    for at in [
        8usize, 10, 24, 33, 48, 52, 64, 72, 80, 128, 136, 145, 160, 170, 200,
    ] {
        for fix in [0, FIX_CRC] {
            let flags = (2 << 3) | CLOSE | XOR | fix;
            let mut input = vec![flags];
            input.resize(at + 1, 0);
            input.push(0x41);
            out.push((format!("flip-{at}-f{flags}"), input));
        }
    }
    out.push(("empty".to_string(), vec![CLOSE]));
    let mut magic = vec![CLOSE | FIX_CRC];
    magic.extend_from_slice(b"walqckp\0\x01\0\0\0");
    magic.resize(200, 0);
    out.push(("bare-magic".to_string(), magic));
    out
}

/// Seeds of target `schedules`: the real file untouched (a few
/// workloads), with one byte flipped across the header and the first
/// entries (CRC fixed or not), empty, and a bare magic.
pub fn schedules() -> Vec<(String, Vec<u8>)> {
    use super::schedules::{FIX_CRC, XOR};
    let mut out = Vec::new();
    for workload in [0u8, 1, 4, 9, 13] {
        let flags = (workload << 2) | XOR;
        out.push((format!("intact-w{workload}"), vec![flags]));
    }
    for at in [
        0usize, 8, 10, 12, 16, 18, 20, 24, 28, 32, 40, 48, 52, 60, 70,
    ] {
        for fix in [0, FIX_CRC] {
            let flags = (2 << 2) | XOR | fix;
            let mut input = vec![flags];
            input.resize(at + 1, 0);
            input.push(0x41);
            out.push((format!("flip-{at}-f{flags}"), input));
        }
    }
    out.push(("empty".to_string(), vec![0]));
    let mut magic = vec![FIX_CRC];
    magic.extend_from_slice(b"walqsch\0\x01\0\0\0\x01\0\0\0");
    magic.resize(80, 0);
    out.push(("bare-magic".to_string(), magic));
    out
}
