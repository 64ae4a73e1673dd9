//! Version 4's queue section: the named queues (every one that has live
//! jobs, and the others the store knows) and each live job of a named
//! queue with its queue id (see `docs/format.md`,
//! "The checkpoint").
//!
//! ```text
//! 0   8  queue count Q (at most MAX_QUEUES)
//! 8   8  job count J
//! 16     Q queues, by id: id u16 (not 0), QueueDef segment u32, QueueDef
//!        LSN u64 (both 0: none written), name length u8 (1..=64), name
//! ...    J jobs, by id: id u64, queue id u16 (one of the Q)
//! ```
//!
//! The section runs to the file's CRC, so its counts must use its bytes
//! exactly; ids strictly increase, names are valid and distinct, and every
//! job's queue is listed.

use super::CheckpointError;
use crate::format::record::{valid_queue_name, MAX_QUEUE_NAME};
use crate::format::u64_at;
use crate::named::MAX_QUEUES;

/// A named queue as the checkpoint stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CkQueue {
    /// The queue id (1 and up).
    pub id: u16,
    /// `(segment, lsn)` of its latest QueueDef record, if one was written.
    pub def: Option<(u32, u64)>,
    /// Its name.
    pub name: String,
}

/// The queues and the jobs with their queue.
type Section = (Vec<CkQueue>, Vec<(u64, u16)>);

const QUEUE_FIXED: usize = 15;
const JOB_LEN: usize = 10;

/// The longest a valid section can be with `jobs` live jobs in all: its
/// counts, every queue the limit allows with the longest name, and an
/// entry for each job.
pub(super) fn max_len(jobs: u128) -> u128 {
    let queue = QUEUE_FIXED as u128 + MAX_QUEUE_NAME as u128;
    16 + MAX_QUEUES as u128 * queue + jobs * JOB_LEN as u128
}

/// Appends the section.
pub(super) fn encode(out: &mut Vec<u8>, queues: &[CkQueue], jobs: &[(u64, u16)]) {
    out.extend_from_slice(&(queues.len() as u64).to_le_bytes());
    out.extend_from_slice(&(jobs.len() as u64).to_le_bytes());
    for q in queues {
        let (seg, lsn) = q.def.unwrap_or((0, 0));
        out.extend_from_slice(&q.id.to_le_bytes());
        out.extend_from_slice(&seg.to_le_bytes());
        out.extend_from_slice(&lsn.to_le_bytes());
        out.push(q.name.len() as u8);
        out.extend_from_slice(q.name.as_bytes());
    }
    for (id, q) in jobs {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&q.to_le_bytes());
    }
}

/// The queues and jobs of section `b` (all of it); `Err` says what is wrong.
pub(super) fn decode(b: &[u8]) -> Result<Section, CheckpointError> {
    let damaged = |why: &str| CheckpointError::Damaged(format!("queue section: {why}"));
    let (Some(nq), Some(nj)) = (u64_at(b, 0), u64_at(b, 8)) else {
        return Err(damaged("shorter than its counts"));
    };
    if nq > MAX_QUEUES as u64 || nq.saturating_mul(QUEUE_FIXED as u64) > b.len() as u64 {
        return Err(damaged("more queues than the limit or the file holds"));
    }
    let mut at = 16;
    let mut queues: Vec<CkQueue> = Vec::with_capacity(nq as usize);
    for _ in 0..nq {
        let fixed = b
            .get(at..at + QUEUE_FIXED)
            .ok_or_else(|| damaged("a queue runs past the end"))?;
        let id = u16::from_le_bytes([fixed[0], fixed[1]]);
        let seg = u32::from_le_bytes([fixed[2], fixed[3], fixed[4], fixed[5]]);
        let lsn = u64_at(fixed, 6).unwrap_or(0);
        let len = usize::from(fixed[14]);
        at += QUEUE_FIXED;
        let name = b
            .get(at..at + len)
            .ok_or_else(|| damaged("a name runs past the end"))?;
        at += len;
        if id == 0 || queues.last().is_some_and(|q| q.id >= id) {
            return Err(damaged("queue ids not increasing from 1"));
        }
        if !valid_queue_name(name) || queues.iter().any(|q| q.name.as_bytes() == name) {
            return Err(damaged("a queue name is invalid or repeated"));
        }
        let def = match (seg, lsn) {
            (0, 0) => None,
            (0, _) => return Err(damaged("a QueueDef in segment 0")),
            place => Some(place),
        };
        queues.push(CkQueue {
            id,
            def,
            // Valid names are ASCII.
            name: String::from_utf8_lossy(name).into_owned(),
        });
    }
    let rest = &b[at..];
    if nj.checked_mul(JOB_LEN as u64) != Some(rest.len() as u64) {
        return Err(damaged("the job count does not match its bytes"));
    }
    let mut jobs: Vec<(u64, u16)> = Vec::with_capacity(rest.len() / JOB_LEN);
    for j in rest.chunks_exact(JOB_LEN) {
        let id = u64_at(j, 0).unwrap_or(0);
        let q = u16::from_le_bytes([j[8], j[9]]);
        if jobs.last().is_some_and(|(last, _)| *last >= id) {
            return Err(damaged("job ids not increasing"));
        }
        if queues.binary_search_by_key(&q, |x| x.id).is_err() {
            return Err(damaged("a job's queue is not listed"));
        }
        jobs.push((id, q));
    }
    Ok((queues, jobs))
}
