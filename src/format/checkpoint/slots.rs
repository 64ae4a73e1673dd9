//! A checkpoint's job-table slots in memory ([`CkSlots`]): slots laid out
//! one by one, and runs of fresh jobs kept as runs.
//!
//! A backlog of fresh jobs that an open took from a checkpoint's runs is
//! held by the job table as runs too (`jobs::Block::Fresh`); laying each
//! of its jobs out as a 16-byte slot only for the encoder to find the run
//! again made a close O(live jobs): 160 ms and 160 MB of new heap for 10
//! million. Kept as runs, such a backlog costs a few bytes per block.

use super::CkSlot;

/// The job-table slots of a [`Checkpoint`](super::Checkpoint), in id
/// order: stretches of slots laid out one by one and runs of fresh jobs
/// (attempts 0, priority Normal) back to back in one segment, each `len`
/// bytes. Two values are equal when their slots are, however stored.
#[derive(Debug, Clone, Default)]
pub struct CkSlots {
    /// The laid-out slots, in the order they were added (a slot a run
    /// gave up for [`CkSlots::get_mut`] comes last).
    laid: Vec<CkSlot>,
    pieces: Vec<Piece>,
    len: usize,
}

/// Consecutive slots of a [`CkSlots`], from slot `start` on.
#[derive(Debug, Clone, Copy)]
enum Piece {
    /// `n` slots laid out at `laid[at..at + n]`.
    Laid { start: usize, at: usize, n: usize },
    /// `n` fresh jobs back to back in `seg` from `off`, `len` bytes each.
    Fresh(FreshPiece),
}

/// A run of fresh jobs of one length (see [`CkSlots::push_fresh`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshPiece {
    start: usize,
    /// Number of jobs (at least 1).
    pub n: usize,
    /// Segment of the records.
    pub seg: u32,
    /// Offset of the first record.
    pub off: u32,
    /// Every record's length (at least 1).
    pub len: u32,
}

impl FreshPiece {
    /// The slot of the run's `i`-th job (below `n`).
    fn slot(&self, i: usize) -> CkSlot {
        CkSlot {
            seg: self.seg,
            // The run lies inside its segment: no offset wraps.
            off: self.off.wrapping_add((i as u32).wrapping_mul(self.len)),
            len: self.len,
            state: 1,
            ..CkSlot::default()
        }
    }

    /// The offset just past the run's last record.
    fn end(&self) -> u64 {
        u64::from(self.off) + self.n as u64 * u64::from(self.len)
    }
}

/// A stretch of slots as [`CkSlots::for_each_piece`] hands them out.
#[derive(Debug, Clone, Copy)]
pub enum SlotPiece<'a> {
    /// Slots one by one.
    Laid(&'a [CkSlot]),
    /// A run of fresh jobs of one length.
    Fresh(FreshPiece),
}

impl Piece {
    fn start(&self) -> usize {
        match self {
            Piece::Laid { start, .. } => *start,
            Piece::Fresh(f) => f.start,
        }
    }
}

impl From<Vec<CkSlot>> for CkSlots {
    fn from(laid: Vec<CkSlot>) -> CkSlots {
        let mut slots = CkSlots::with_buffer(Vec::new());
        laid.into_iter().for_each(|s| slots.push(s));
        slots
    }
}

impl PartialEq for CkSlots {
    fn eq(&self, other: &CkSlots) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for CkSlots {}

impl CkSlots {
    /// No slots; `buffer` (cleared) takes the laid-out ones (see
    /// [`CkSlots::into_buffer`]).
    pub fn with_buffer(mut buffer: Vec<CkSlot>) -> CkSlots {
        buffer.clear();
        CkSlots {
            laid: buffer,
            pieces: Vec::new(),
            len: 0,
        }
    }

    /// The buffer of the laid-out slots, for the next checkpoint's
    /// [`CkSlots::with_buffer`].
    pub fn into_buffer(self) -> Vec<CkSlot> {
        self.laid
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    #[cfg(any(test, feature = "testing"))]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds one slot.
    pub fn push(&mut self, s: CkSlot) {
        let at = self.laid.len();
        match self.pieces.last_mut() {
            Some(Piece::Laid { at: a, n, .. }) if *a + *n == at => *n += 1,
            _ => self.pieces.push(Piece::Laid {
                start: self.len,
                at,
                n: 1,
            }),
        }
        self.laid.push(s);
        self.len += 1;
    }

    /// Adds `n` fresh jobs back to back in segment `seg` from `off`, `len`
    /// bytes each (nothing if `n` or `len` is 0). The caller checked that
    /// they lie inside the segment, so that no offset passes 4 GiB.
    pub fn push_fresh(&mut self, n: usize, seg: u32, off: u32, len: u32) {
        if n == 0 || len == 0 {
            return;
        }
        debug_assert!(u64::from(off) + n as u64 * u64::from(len) <= u64::from(u32::MAX));
        if let Some(Piece::Fresh(last)) = self.pieces.last_mut() {
            if last.seg == seg && last.len == len && last.end() == u64::from(off) {
                last.n += n;
                self.len += n;
                return;
            }
        }
        self.pieces.push(Piece::Fresh(FreshPiece {
            start: self.len,
            n,
            seg,
            off,
            len,
        }));
        self.len += n;
    }

    /// Slot `i`, for a change. A slot inside a run of fresh jobs is laid
    /// out first (the run split around it).
    pub fn get_mut(&mut self, i: usize) -> Option<&mut CkSlot> {
        if i >= self.len {
            return None;
        }
        let p = self.pieces.partition_point(|p| p.start() <= i) - 1;
        let at = match self.pieces[p] {
            Piece::Laid { start, at, .. } => at + (i - start),
            Piece::Fresh(run) => self.split(p, run, i - run.start),
        };
        self.laid.get_mut(at)
    }

    /// Replaces run `p` by the jobs before its `j`-th, that job laid out,
    /// and the jobs after it; returns where the job was laid out.
    fn split(&mut self, p: usize, run: FreshPiece, j: usize) -> usize {
        let at = self.laid.len();
        self.laid.push(run.slot(j));
        let before = FreshPiece { n: j, ..run };
        let after = FreshPiece {
            start: run.start + j + 1,
            n: run.n - j - 1,
            off: run.slot(j).off.wrapping_add(run.len),
            ..run
        };
        let one = Piece::Laid {
            start: run.start + j,
            at,
            n: 1,
        };
        let parts = [before, after].map(|f| (f.n > 0).then_some(Piece::Fresh(f)));
        let [before, after] = parts;
        let new = before.into_iter().chain([one]).chain(after);
        self.pieces.splice(p..=p, new);
        at
    }

    /// Calls `f` with each stretch of slots, in id order.
    pub fn for_each_piece(&self, mut f: impl FnMut(SlotPiece<'_>)) {
        for p in &self.pieces {
            match *p {
                Piece::Laid { at, n, .. } => f(SlotPiece::Laid(&self.laid[at..at + n])),
                Piece::Fresh(run) => f(SlotPiece::Fresh(run)),
            }
        }
    }

    /// The slots in id order.
    pub fn iter(&self) -> impl Iterator<Item = CkSlot> + '_ {
        self.pieces.iter().flat_map(move |p| {
            let (laid, run) = match *p {
                Piece::Laid { at, n, .. } => (&self.laid[at..at + n], None),
                Piece::Fresh(run) => (&self.laid[..0], Some(run)),
            };
            let fresh = run
                .into_iter()
                .flat_map(|r| (0..r.n).map(move |i| r.slot(i)));
            laid.iter().copied().chain(fresh)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(seg: u32, attempts: u16) -> CkSlot {
        CkSlot {
            seg,
            off: 7,
            len: 3,
            attempts,
            state: 2,
            priority: 1,
        }
    }

    fn model(slots: &CkSlots) -> Vec<CkSlot> {
        slots.iter().collect()
    }

    #[test]
    fn runs_and_laid_slots_read_back_in_order() {
        let mut s = CkSlots::with_buffer(vec![one(9, 9); 5]);
        s.push(one(1, 1));
        s.push_fresh(3, 2, 100, 10);
        s.push_fresh(2, 2, 130, 10); // continues the run: merged
        s.push_fresh(1, 2, 500, 10); // a gap: a run of its own
        s.push_fresh(0, 2, 510, 10); // nothing
        s.push(one(1, 2));
        assert_eq!(s.len(), 8);
        assert_eq!(s.pieces.len(), 4);
        let offs: Vec<u32> = s.iter().map(|c| c.off).collect();
        assert_eq!(offs, [7, 100, 110, 120, 130, 140, 500, 7]);
        assert!(s
            .iter()
            .skip(1)
            .take(6)
            .all(|c| c.state == 1 && c.len == 10));
        let pieces = std::cell::Cell::new(0);
        s.for_each_piece(|_| pieces.set(pieces.get() + 1));
        assert_eq!(pieces.get(), 4);
    }

    #[test]
    fn a_change_inside_a_run_lays_out_that_slot_only() {
        let mut s = CkSlots::default();
        s.push_fresh(10, 4, 64, 20);
        let before = model(&s);
        for (i, level) in [(0usize, 3u8), (9, 0), (5, 2), (6, 2), (5, 0)] {
            let mut want = model(&s);
            want[i].priority = level;
            s.get_mut(i).expect("inside").priority = level;
            assert_eq!(model(&s), want, "slot {i}");
        }
        assert_eq!(s.len(), 10);
        assert_eq!(s.laid.len(), 4, "slot 5 laid out once");
        let untouched = [1, 2, 3, 4, 7, 8];
        assert!(untouched.iter().all(|&i| model(&s)[i] == before[i]));
        assert!(s.get_mut(10).is_none());
        assert_eq!(s, CkSlots::from(model(&s)), "equal however stored");
    }
}
