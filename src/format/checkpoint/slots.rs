//! A checkpoint's job-table slots as the encoder reads them: a
//! [`SlotSource`] hands them out a stretch at a time, laid out one by one
//! or as a run of fresh jobs ([`SlotPiece`]). A decoded checkpoint's slots
//! (a `Vec`) are one; a queue's own checkpoint reads its captured job
//! table directly (`checkpoint::TableSlots`), with no copy of it.
//!
//! A backlog of fresh jobs that an open took from a checkpoint's runs is
//! held by the job table as runs too (`jobs::Block::Fresh`); laying each
//! of its jobs out as a 16-byte slot only for the encoder to find the run
//! again made a close O(live jobs): 160 ms and 160 MB of new heap for 10
//! million. Passed as runs, such a backlog costs a few bytes per block.

use super::CkSlot;

/// Consecutive slots, as a [`SlotSource`] hands them out.
#[derive(Debug, Clone, Copy)]
pub enum SlotPiece<'a> {
    /// Slots one by one.
    Laid(&'a [CkSlot]),
    /// `n` fresh jobs (attempts 0, priority Normal) back to back in
    /// segment `seg` from offset `off`, `len` bytes each (`n` and `len` at
    /// least 1; the run lies inside its segment).
    Fresh {
        n: usize,
        seg: u32,
        off: u32,
        len: u32,
    },
}

/// The job-table slots of a checkpoint, for its encoder.
pub trait SlotSource {
    /// Number of slots.
    fn count(&self) -> usize;

    /// Calls `f` with every slot in id order, a stretch at a time.
    fn for_each_piece(&self, f: &mut dyn FnMut(SlotPiece<'_>));
}

impl SlotSource for Vec<CkSlot> {
    fn count(&self) -> usize {
        self.len()
    }

    fn for_each_piece(&self, f: &mut dyn FnMut(SlotPiece<'_>)) {
        f(SlotPiece::Laid(self));
    }
}

/// The slot of the `i`-th job of a run of fresh jobs in `seg` from `off`,
/// `len` bytes each (which lies inside its segment: no offset wraps).
pub fn fresh_slot(seg: u32, off: u32, len: u32, i: usize) -> CkSlot {
    CkSlot {
        seg,
        off: off.wrapping_add((i as u32).wrapping_mul(len)),
        len,
        state: 1,
        ..CkSlot::default()
    }
}
