//! A leased job's payload: its own allocation, or a part of one that the
//! jobs of one `dequeue_batch` share.
//!
//! A batch of small jobs copied into one buffer costs one allocation, not
//! one per job (the allocator was a sixth of a batch's instructions, most
//! of it glibc moving a hundred freed chunks between its bins). The buffer
//! is bounded ([`ARENA_MAX`]), and a payload larger than [`PART_MAX`] gets
//! its own: a job kept after the rest of its batch is dropped holds at
//! most [`ARENA_MAX`] bytes alive.

use std::ops::Range;
use std::sync::Arc;

/// The most bytes the jobs of one batch share in one buffer.
pub(crate) const ARENA_MAX: usize = 64 * 1024;

/// The largest payload copied into a batch's shared buffer.
pub(crate) const PART_MAX: usize = 2 * 1024;

/// The bytes of a job's payload (a copy: nothing of the queue's files).
#[derive(Clone)]
pub(crate) enum Payload {
    /// The job's own allocation.
    Own(Vec<u8>),
    /// A part of a buffer the jobs of one batch share.
    Shared(Arc<Vec<u8>>, Range<usize>),
}

impl Payload {
    /// The payload's bytes.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Own(v) => v,
            Payload::Shared(buf, at) => &buf[at.clone()],
        }
    }

    /// The payload as a `Vec`: moved out if the job owns it, copied if it
    /// shares a batch's buffer.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Own(v) => v,
            Payload::Shared(buf, at) => buf[at].to_vec(),
        }
    }
}

/// Where a batch's payload went while the batch is read: into the shared
/// buffer (which bytes of it) or a `Vec` of its own.
pub(crate) enum Part {
    /// Copied into the arena at this range.
    InArena(Range<usize>),
    /// Too large for the arena, or the arena was full.
    Own(Vec<u8>),
}

/// The shared buffer of one batch while its jobs are read.
pub(crate) struct Arena {
    buf: Vec<u8>,
    /// How many jobs the batch may hold: room for that many payloads the
    /// size of the first is reserved at once (up to [`ARENA_MAX`]).
    jobs: usize,
}

impl Arena {
    /// The arena of a batch of at most `jobs` jobs.
    pub(crate) fn for_batch(jobs: usize) -> Arena {
        Arena {
            buf: Vec::new(),
            jobs,
        }
    }

    /// Keeps a copy of `payload`: in the arena while it has room and the
    /// payload is at most [`PART_MAX`] bytes, else in a `Vec` of its own.
    pub(crate) fn keep(&mut self, payload: &[u8]) -> Part {
        let at = self.buf.len();
        if payload.len() > PART_MAX || at + payload.len() > ARENA_MAX {
            return Part::Own(payload.to_vec());
        }
        if self.buf.capacity() == 0 {
            let room = payload.len().saturating_mul(self.jobs);
            self.buf.reserve_exact(room.clamp(payload.len(), ARENA_MAX));
        }
        self.buf.extend_from_slice(payload);
        Part::InArena(at..at + payload.len())
    }

    /// The payloads of `parts`, in order, once every part is kept: the
    /// arena's parts share one buffer from now on.
    pub(crate) fn finish(self, parts: impl Iterator<Item = Part>) -> impl Iterator<Item = Payload> {
        let shared = Arc::new(self.buf);
        parts.map(move |part| match part {
            Part::InArena(at) => Payload::Shared(Arc::clone(&shared), at),
            Part::Own(v) => Payload::Own(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_payloads_share_one_buffer_and_large_ones_have_their_own() {
        let mut arena = Arena::for_batch(3);
        let big = vec![7u8; PART_MAX + 1];
        let parts = vec![arena.keep(b"one"), arena.keep(&big), arena.keep(b"three")];
        let payloads: Vec<Payload> = arena.finish(parts.into_iter()).collect();
        assert_eq!(payloads[0].as_slice(), b"one");
        assert_eq!(payloads[1].as_slice(), &big[..]);
        assert_eq!(payloads[2].as_slice(), b"three");
        match (&payloads[0], &payloads[1], &payloads[2]) {
            (Payload::Shared(a, _), Payload::Own(_), Payload::Shared(c, _)) => {
                assert!(Arc::ptr_eq(a, c), "the small payloads share a buffer");
            }
            _ => panic!("small payloads in the arena, the large one its own"),
        }
        assert_eq!(payloads[2].clone().into_vec(), b"three".to_vec());
    }

    #[test]
    fn a_full_arena_gives_the_rest_their_own_buffers() {
        let mut arena = Arena::for_batch(ARENA_MAX);
        let part = vec![1u8; PART_MAX];
        let n = ARENA_MAX / PART_MAX;
        let mut parts: Vec<Part> = (0..n).map(|_| arena.keep(&part)).collect();
        parts.push(arena.keep(b"late"));
        assert!(matches!(parts[n - 1], Part::InArena(_)));
        assert!(
            matches!(parts[n], Part::Own(_)),
            "past ARENA_MAX: own buffer"
        );
        let payloads: Vec<Payload> = arena.finish(parts.into_iter()).collect();
        assert_eq!(payloads[n].as_slice(), b"late");
        assert!(payloads[..n].iter().all(|p| p.as_slice() == &part[..]));
    }
}
