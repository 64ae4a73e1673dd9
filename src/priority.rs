//! Priority levels and the weighted cycle that bounds starvation.
//!
//! Four levels, `Low < Normal < High < Urgent`. When jobs of several
//! levels are ready, the level served next is the first slot of a fixed
//! 15-slot cycle, from where the last choice stopped, whose level has a
//! ready job ([`choose`]). The cycle holds each level as often as its
//! weight (Urgent 8, High 4, Normal 2, Low 1: deficit round robin with
//! unit costs, spread out smoothly), so while every level has ready jobs,
//! any 15 consecutive deliveries give each level exactly its weight, and
//! a ready `Low` job at position *p* of its level is delivered within
//! 15·*p* deliveries. When only one level has ready jobs it is served and
//! the cycle does not move.

/// How urgent a job is: higher levels are delivered first, FIFO within a
/// level, and lower levels are never starved (see the module docs of the
/// delivery rule in `docs/architecture.md`).
///
/// ```
/// # fn main() -> walq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use walq::{EnqueueOptions, Priority};
/// let q = walq::Queue::open(dir.path())?;
/// q.enqueue(b"weekly report")?;
/// q.enqueue_with(b"password reset", EnqueueOptions::new().priority(Priority::Urgent))?;
/// let job = q.dequeue()?.expect("a job is ready");
/// assert_eq!(job.payload(), b"password reset");
/// assert_eq!(job.priority(), Priority::Urgent);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Served last; weight 1.
    Low = 0,
    /// The default; weight 2.
    #[default]
    Normal = 1,
    /// Weight 4.
    High = 2,
    /// Served first; weight 8.
    Urgent = 3,
}

impl Priority {
    /// All levels, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];

    /// The byte written in an Enqueue2 record (0 = Low ..= 3 = Urgent).
    pub(crate) fn byte(self) -> u8 {
        self as u8
    }

    /// The level of a record's priority byte (decoding checked the range).
    pub(crate) fn from_byte(b: u8) -> Priority {
        match b {
            0 => Priority::Low,
            2 => Priority::High,
            3 => Priority::Urgent,
            _ => Priority::Normal,
        }
    }

    /// The level's name in lower case: `"low"`, `"normal"`, `"high"`,
    /// `"urgent"` (what [`str::parse`] reads back).
    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    /// Deliveries this level gets in every cycle of 15 while all levels
    /// have ready jobs.
    pub fn weight(self) -> u32 {
        1 << (self as u32)
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Priority {
    type Err = crate::Error;

    /// Reads a level's name, in any case.
    ///
    /// ```
    /// use walq::Priority;
    /// assert_eq!("Urgent".parse::<Priority>().unwrap(), Priority::Urgent);
    /// assert!("soon".parse::<Priority>().is_err());
    /// ```
    fn from_str(s: &str) -> crate::Result<Priority> {
        Priority::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                crate::Error::new(
                    crate::ErrorKind::InvalidOptions,
                    format!("unknown priority {s:?}: use low, normal, high or urgent"),
                )
            })
    }
}

/// Length of the cycle: the sum of the weights.
pub const CYCLE_LEN: usize = 15;

/// The cycle of levels (priority bytes), Urgent 8 times, High 4, Normal 2,
/// Low 1, spread out (smooth weighted round robin order).
pub const CYCLE: [u8; CYCLE_LEN] = [3, 2, 3, 1, 3, 2, 3, 0, 3, 2, 3, 1, 3, 2, 3];

/// The level to serve when the levels in `ready` (indexed by priority
/// byte) have ready jobs, and the cycle position after it. With one level
/// ready, that level and `turn` unchanged; with none, `None`.
pub fn choose(turn: usize, ready: [bool; 4]) -> Option<(u8, usize)> {
    let n = ready.iter().filter(|&&r| r).count();
    if n <= 1 {
        let level = ready.iter().position(|&r| r)?;
        return Some((level as u8, turn));
    }
    (0..CYCLE_LEN).find_map(|k| {
        let slot = (turn + k) % CYCLE_LEN;
        let level = CYCLE[slot];
        ready[usize::from(level)].then_some((level, (slot + 1) % CYCLE_LEN))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cycle_holds_each_level_as_often_as_its_weight() {
        for p in Priority::ALL {
            let n = CYCLE.iter().filter(|&&l| l == p.byte()).count() as u32;
            assert_eq!(n, p.weight(), "{p:?}");
            assert_eq!(Priority::from_byte(p.byte()), p);
        }
        assert_eq!(Priority::ALL.iter().map(|p| p.weight()).sum::<u32>(), 15);
    }

    #[test]
    fn every_window_of_fifteen_gives_each_level_its_weight() {
        let mut turn = 0;
        let mut served = Vec::new();
        for _ in 0..100 {
            let (level, next) = choose(turn, [true; 4]).unwrap();
            served.push(level);
            turn = next;
        }
        for w in served.windows(CYCLE_LEN) {
            for p in Priority::ALL {
                let n = w.iter().filter(|&&l| l == p.byte()).count() as u32;
                assert_eq!(n, p.weight(), "{p:?} in {w:?}");
            }
        }
    }

    #[test]
    fn one_ready_level_does_not_move_the_cycle() {
        assert_eq!(choose(4, [false, false, true, false]), Some((2, 4)));
        assert_eq!(choose(4, [false; 4]), None);
        // Low's slot is 7: from slot 4, Urgent (4) comes first, then Low.
        assert_eq!(choose(4, [true, false, false, true]), Some((3, 5)));
        assert_eq!(choose(5, [true, false, false, false]), Some((0, 5)));
        assert_eq!(choose(5, [true, false, true, false]), Some((2, 6)));
        assert_eq!(choose(6, [true, false, false, true]), Some((3, 7)));
        assert_eq!(choose(7, [true, false, false, true]), Some((0, 8)));
    }
}
