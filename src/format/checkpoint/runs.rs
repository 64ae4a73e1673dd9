//! Version 3's job-table slots, stored as runs (see `docs/format.md`,
//! "The checkpoint", and [`SlotRun`]).
//!
//! Fresh jobs are written one after another, so their records lie back to
//! back in their segment: a run of them is stored as its first record's
//! place and the lengths (one length for the whole run when they are all
//! alike), a few bytes or less per job instead of 16. Empty slots are a
//! count; any other slot is stored whole, as in version 2.
//!
//! Integers in runs are LEB128 varints (7 bits a byte, low bits first, at
//! most 10 bytes for a u64); the decoder refuses ones longer than 10 bytes
//! or over `u64::MAX` (a padded but shorter one, such as `80 00` for 0, is
//! read: the file's CRC, not the encoding, is what vouches for its bytes),
//! counts of 0, lengths of 0, and runs that end past 4 GiB.

use super::slots::{SlotPiece, SlotSource};
use super::{put_slot, slot_at, CheckpointError, CkSlot, NORMAL, SLOT_LEN};

/// Tag of a run of empty slots: count.
const EMPTY: u8 = 0;
/// Tag of a run of fresh jobs of one length: count, segment, offset,
/// length.
const SAME: u8 = 1;
/// Tag of a run of fresh jobs: count, segment, offset, then each length.
const EACH: u8 = 2;
/// Tag of one slot stored whole (16 bytes, as in version 2).
const ONE: u8 = 3;

/// The stored job-table slots of a checkpoint, not yet decoded
/// ([`Checkpoint::decode_lazy`](super::Checkpoint::decode_lazy)).
#[derive(Debug, Clone, Copy)]
pub struct Slots<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) count: usize,
    pub(super) runs: bool,
}

impl<'a> Slots<'a> {
    /// The number of slots the head claims (check it against the runs).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no slots.
    #[cfg(any(test, feature = "testing"))]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the slots are stored as runs (version 3), so that their
    /// number is not bounded by the file's length.
    pub fn is_runs(&self) -> bool {
        self.runs
    }

    /// The runs in id order (16-byte slots, versions 1 and 2, come as
    /// [`SlotRun::One`] each). An `Err` ends the iteration.
    pub fn runs(&self) -> RunIter<'a> {
        RunIter {
            bytes: self.bytes,
            at: 0,
            runs: self.runs,
            failed: false,
        }
    }

    /// The error of runs that do not add up to [`Slots::len`].
    pub fn overflow(&self) -> CheckpointError {
        CheckpointError::Damaged("the slot runs do not add up to the slot count".into())
    }
}

/// Consecutive job-table slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRun<'a> {
    /// This many empty slots.
    Empty(u64),
    /// Fresh jobs (attempts 0, priority Normal) whose records lie back to
    /// back in one segment.
    Fresh(FreshRun<'a>),
    /// One slot as stored in version 2.
    One(CkSlot),
}

/// A run of fresh jobs whose records lie back to back in one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshRun<'a> {
    /// Number of jobs (at least 1).
    pub n: u64,
    /// Segment of the records.
    pub seg: u32,
    /// Offset of the first record.
    pub off: u32,
    /// Offset just past the last record (at most `u32::MAX`).
    pub end: u32,
    /// Every record's length, if they are all alike.
    pub same_len: Option<u32>,
    /// Otherwise their varints, checked.
    lens: &'a [u8],
}

impl FreshRun<'_> {
    /// `(segment, offset, length)` of each job in id order.
    pub fn slots(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        let mut off = self.off;
        let mut at = 0;
        (0..self.n).map(move |_| {
            // Checked when the run was read: every length fits and the
            // sum of them ends at `end`.
            let len = self
                .same_len
                .unwrap_or_else(|| var(self.lens, &mut at).unwrap_or(0) as u32);
            let here = off;
            off = off.wrapping_add(len);
            (self.seg, here, len)
        })
    }
}

/// The runs of [`Slots::runs`].
#[derive(Debug)]
pub struct RunIter<'a> {
    bytes: &'a [u8],
    at: usize,
    runs: bool,
    failed: bool,
}

impl<'a> Iterator for RunIter<'a> {
    type Item = Result<SlotRun<'a>, CheckpointError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.bytes.len() {
            return None;
        }
        if !self.runs {
            let slot = slot_at(&self.bytes[self.at..]);
            self.at += SLOT_LEN;
            return Some(Ok(SlotRun::One(slot)));
        }
        let start = self.at;
        let run = read_run(self.bytes, &mut self.at);
        self.failed = run.is_none();
        Some(run.ok_or_else(|| {
            CheckpointError::Damaged(format!("slot run at byte {start} of the runs"))
        }))
    }
}

/// The run at `at` (moved past it); `None` if it is not a valid one.
fn read_run<'a>(b: &'a [u8], at: &mut usize) -> Option<SlotRun<'a>> {
    let tag = *b.get(*at)?;
    *at += 1;
    match tag {
        EMPTY => Some(SlotRun::Empty(var(b, at).filter(|&n| n > 0)?)),
        ONE => {
            let slot = slot_at(b.get(*at..*at + SLOT_LEN)?);
            *at += SLOT_LEN;
            Some(SlotRun::One(slot))
        }
        SAME | EACH => {
            let n = var(b, at).filter(|&n| n > 0)?;
            let seg = u32::try_from(var(b, at)?).ok()?;
            let off = u32::try_from(var(b, at)?).ok()?;
            let (same_len, lens, sum) = if tag == SAME {
                let len = u32::try_from(var(b, at)?).ok().filter(|&l| l > 0)?;
                (Some(len), &b[..0], u64::from(len).checked_mul(n)?)
            } else {
                let start = *at;
                let mut sum = 0u64;
                for _ in 0..n {
                    let len = u32::try_from(var(b, at)?).ok().filter(|&l| l > 0)?;
                    sum = sum.checked_add(u64::from(len))?;
                    if sum > u64::from(u32::MAX) {
                        return None;
                    }
                }
                (None, &b[start..*at], sum)
            };
            let end = u32::try_from(u64::from(off).checked_add(sum)?).ok()?;
            Some(SlotRun::Fresh(FreshRun {
                n,
                seg,
                off,
                end,
                same_len,
                lens,
            }))
        }
        _ => None,
    }
}

/// The varint at `at` (moved past it); `None` if cut short, longer than
/// 10 bytes or over `u64::MAX`.
fn var(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return None;
        }
        v |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `v` as a varint, `n` times.
fn put_var_times(out: &mut Vec<u8>, v: u64, n: u64) {
    if n == 0 {
        return;
    }
    let start = out.len();
    put_var(out, v);
    let one = out.len() - start;
    for _ in 1..n {
        out.extend_from_within(start..start + one);
    }
}

/// Whether a slot can be part of a run of fresh jobs.
fn plain(s: &CkSlot) -> bool {
    s.state == 1 && s.attempts == 0 && s.priority == NORMAL && s.len > 0
}

/// The slots as runs: empty slots (whatever their other fields) as
/// counts, fresh jobs back to back as runs, any other slot whole. A run
/// of fresh jobs a source hands out as a run is written as one, without
/// laying out its slots; the bytes are those of the same slots laid out.
pub(super) fn encode(slots: &dyn SlotSource) -> Vec<u8> {
    let mut w = RunWriter::default();
    slots.for_each_piece(&mut |piece| match piece {
        SlotPiece::Laid(laid) => laid.iter().for_each(|s| w.slot(s)),
        SlotPiece::Fresh { n, seg, off, len } => w.fresh(n as u64, seg, off, len),
    });
    w.finish()
}

/// Writes slots as runs, one slot or one run of fresh jobs at a time: a
/// run is kept open while what comes continues it.
#[derive(Default)]
struct RunWriter {
    out: Vec<u8>,
    /// Empty slots not written yet.
    empty: u64,
    /// The run of fresh jobs not written yet.
    run: Option<OpenRun>,
}

/// A run of fresh jobs being gathered.
struct OpenRun {
    n: u64,
    seg: u32,
    off: u32,
    /// Offset just past the last job.
    end: u64,
    len: u32,
    /// Every length as the varints to write, once they differ: the run's
    /// encoded size, not 4 bytes a job.
    each: Option<Vec<u8>>,
}

impl RunWriter {
    fn slot(&mut self, s: &CkSlot) {
        if s.state == 0 {
            self.close_run();
            self.empty += 1;
        } else if plain(s) {
            self.fresh(1, s.seg, s.off, s.len);
        } else {
            self.close_run();
            self.close_empty();
            self.out.push(ONE);
            put_slot(&mut self.out, s);
        }
    }

    /// `n` fresh jobs back to back in `seg` from `off`, `len` bytes each.
    fn fresh(&mut self, n: u64, seg: u32, off: u32, len: u32) {
        // A run of no job or of empty records would be refused by every
        // later open (which would then scan the whole log).
        debug_assert!(n > 0 && len > 0, "a fresh run of {n} jobs of {len} bytes");
        self.close_empty();
        let continues = self
            .run
            .as_ref()
            .is_some_and(|r| r.seg == seg && r.end == u64::from(off));
        if !continues {
            self.close_run();
            self.run = Some(OpenRun {
                n: 0,
                seg,
                off,
                end: u64::from(off),
                len,
                each: None,
            });
        }
        let r = self.run.as_mut().expect("a run is open");
        if r.each.is_none() && len != r.len {
            let mut each = Vec::new();
            put_var_times(&mut each, u64::from(r.len), r.n);
            r.each = Some(each);
        }
        if let Some(each) = r.each.as_mut() {
            put_var_times(each, u64::from(len), n);
        }
        r.n += n;
        r.end += n * u64::from(len);
    }

    fn close_empty(&mut self) {
        if self.empty > 0 {
            self.out.push(EMPTY);
            put_var(&mut self.out, self.empty);
            self.empty = 0;
        }
    }

    fn close_run(&mut self) {
        let Some(r) = self.run.take() else {
            return;
        };
        self.out.push(if r.each.is_some() { EACH } else { SAME });
        for v in [r.n, u64::from(r.seg), u64::from(r.off)] {
            put_var(&mut self.out, v);
        }
        match r.each {
            Some(each) => self.out.extend_from_slice(&each),
            None => put_var(&mut self.out, u64::from(r.len)),
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.close_run();
        self.close_empty();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::super::fresh_slot;
    use super::*;
    use proptest::prelude::*;

    /// The encoder as it was before runs were kept as runs: slot by slot,
    /// each run found by looking ahead (the model of [`encode`]).
    fn encode_slot_by_slot(slots: &[CkSlot]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < slots.len() {
            let s = &slots[i];
            if s.state == 0 {
                let n = slots[i..].iter().take_while(|s| s.state == 0).count();
                out.push(EMPTY);
                put_var(&mut out, n as u64);
                i += n;
            } else if plain(s) {
                let mut j = i + 1;
                while j < slots.len()
                    && plain(&slots[j])
                    && slots[j].seg == s.seg
                    && Some(slots[j].off) == slots[j - 1].off.checked_add(slots[j - 1].len)
                {
                    j += 1;
                }
                let run = &slots[i..j];
                let same = run.iter().all(|r| r.len == s.len);
                out.push(if same { SAME } else { EACH });
                for v in [run.len() as u64, u64::from(s.seg), u64::from(s.off)] {
                    put_var(&mut out, v);
                }
                let lens = if same { &run[..1] } else { run };
                lens.iter()
                    .for_each(|r| put_var(&mut out, u64::from(r.len)));
                i = j;
            } else {
                out.push(ONE);
                put_slot(&mut out, s);
                i += 1;
            }
        }
        out
    }

    /// What to add next: a kind (0 empty, 1 fresh slot, 2 run of fresh
    /// jobs, 3 a waiting slot, 4 a fresh slot of another level), a count,
    /// a length choice, and whether to jump to another place in the log.
    fn steps() -> impl Strategy<Value = Vec<(u8, usize, bool, u8)>> {
        proptest::collection::vec((0u8..5, 1usize..6, any::<bool>(), 0u8..8), 0..40)
    }

    /// Slots laid out and runs of fresh jobs, as a test puts them.
    #[derive(Default)]
    struct Pieces(Vec<Piece>);

    enum Piece {
        Laid(Vec<CkSlot>),
        /// `n` fresh jobs in `seg` from `off`, `len` bytes each.
        Fresh(usize, u32, u32, u32),
    }

    impl SlotSource for Pieces {
        fn count(&self) -> usize {
            self.flat().len()
        }

        fn for_each_piece(&self, f: &mut dyn FnMut(SlotPiece<'_>)) {
            for p in &self.0 {
                match *p {
                    Piece::Laid(ref laid) => f(SlotPiece::Laid(laid)),
                    Piece::Fresh(n, seg, off, len) => f(SlotPiece::Fresh { n, seg, off, len }),
                }
            }
        }
    }

    impl Pieces {
        fn push(&mut self, s: CkSlot) {
            match self.0.last_mut() {
                Some(Piece::Laid(laid)) => laid.push(s),
                _ => self.0.push(Piece::Laid(vec![s])),
            }
        }

        fn flat(&self) -> Vec<CkSlot> {
            let mut all = Vec::new();
            self.for_each_piece(&mut |p| match p {
                SlotPiece::Laid(laid) => all.extend_from_slice(laid),
                SlotPiece::Fresh { n, seg, off, len } => {
                    all.extend((0..n).map(|i| fresh_slot(seg, off, len, i)))
                }
            });
            all
        }
    }

    fn build(steps: &[(u8, usize, bool, u8)]) -> Pieces {
        let mut s = Pieces::default();
        let (mut seg, mut off) = (1u32, 64u32);
        for &(kind, n, long, jump) in steps {
            match jump {
                0 => seg += 1,
                1 => off += 7,
                _ => {}
            }
            // 300: a two-byte varint, 20: a one-byte one.
            let len = if long { 300 } else { 20 };
            let slot = CkSlot {
                seg,
                off,
                len,
                state: 1,
                ..CkSlot::default()
            };
            match kind {
                0 => s.push(CkSlot::default()),
                1 => s.push(slot),
                2 => s.0.push(Piece::Fresh(n, seg, off, len)),
                3 => s.push(CkSlot { state: 2, ..slot }),
                _ => s.push(CkSlot {
                    priority: 3,
                    ..slot
                }),
            }
            let added = if kind == 2 {
                n as u32
            } else {
                u32::from(kind != 0)
            };
            off += added * len;
        }
        s
    }

    proptest! {
        #[test]
        fn runs_kept_as_runs_encode_as_their_slots_do(steps in steps()) {
            let slots = build(&steps);
            let flat = slots.flat();
            let bytes = encode(&slots);
            prop_assert_eq!(&bytes, &encode_slot_by_slot(&flat));
            prop_assert_eq!(&bytes, &encode(&flat));
            let read = Slots { bytes: &bytes, count: flat.len(), runs: true };
            let mut back = Vec::new();
            for run in read.runs() {
                match run.expect("a valid run") {
                    SlotRun::Empty(n) => back.extend((0..n).map(|_| CkSlot::default())),
                    SlotRun::Fresh(f) => back.extend(f.slots().map(|(seg, off, len)| CkSlot {
                        seg, off, len, state: 1, ..CkSlot::default()
                    })),
                    SlotRun::One(s) => back.push(s),
                }
            }
            let empty_as_default = |s: &CkSlot| if s.state == 0 { CkSlot::default() } else { *s };
            prop_assert_eq!(back, flat.iter().map(empty_as_default).collect::<Vec<_>>());
        }
    }

    #[test]
    fn varints_round_trip_and_refuse_overflow() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            put_var(&mut b, v);
            let mut at = 0;
            assert_eq!(var(&b, &mut at), Some(v));
            assert_eq!(at, b.len());
            assert_eq!(var(&b[..b.len() - 1], &mut 0), None, "cut {v}");
        }
        // 2^64: a tenth byte above 1.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(var(&over, &mut 0), None);
        assert_eq!(var(&[0x80; 11], &mut 0), None);
    }

    #[test]
    fn back_to_back_jobs_take_a_few_bytes() {
        let fresh = |off: u32, len: u32| CkSlot {
            seg: 4,
            off,
            len,
            state: 1,
            ..CkSlot::default()
        };
        let same: Vec<CkSlot> = (0..10_000).map(|i| fresh(64 + 150 * i, 150)).collect();
        assert!(encode(&same).len() < 16);
        let mut off = 64;
        let each: Vec<CkSlot> = (0..10_000u32)
            .map(|i| {
                let s = fresh(off, 60 + i % 50);
                off += s.len;
                s
            })
            .collect();
        // Lengths below 128: one byte each.
        assert!(encode(&each).len() < 10_000 + 16);
    }
}
