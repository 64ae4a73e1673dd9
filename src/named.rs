//! The named queues of a store: their ids and names, which queue each
//! live job belongs to, and each named queue's own delivery order.
//!
//! Queue 0 is the default queue ("default"): its jobs are not in
//! `queue_of` and its delivery order is the state's own (with the fresh
//! cursor), so a store that uses no named queue pays one empty map. A job
//! of a named queue is never fresh: it waits in its queue's [`Levels`]
//! from its enqueue (due at its enqueue time), so FIFO within a queue is
//! the `(due, id)` order, as for a job of a priority level.
//!
//! A name's QueueDef record (kind 11) is written before the first job of
//! the queue, and written again before a job of the queue when the last
//! one is no longer in the log that recovery reads (before the checkpoint
//! the next open starts from, or in a segment deleted since): see
//! [`Named::needs_def`] and docs/format.md, "Queue definitions".
//!
//! A name only looked up has a definition in memory, not written: it is
//! freed ([`Named::reclaim`]) once nothing refers to it, so names looked
//! up and never used do not fill the [`MAX_QUEUES`] (see
//! docs/architecture.md, "Named queues", and [`Claim`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::cowmap::{Captured, CowIdMap};
use crate::error::{Error, ErrorKind, Result};
use crate::format::record::{valid_queue_name, MAX_QUEUE_NAME};
use crate::groups::Groups;
use crate::levels::Levels;
use crate::queue_options::QueueOptions;

/// Most named queues a store knows at once (the default queue not
/// counted).
pub const MAX_QUEUES: usize = 1024;

/// Not a queue id: "in several queues" (see `QueueState::take_ready_in`).
pub(crate) const ANY_QUEUE: u16 = u16::MAX;

/// Name of queue 0, the queue `Queue::open` returns.
pub const DEFAULT_QUEUE: &str = "default";

/// A named queue's name and where its latest QueueDef record is.
#[derive(Debug, Clone)]
pub struct Def {
    /// The name.
    pub name: String,
    /// `(segment, lsn)` of its latest QueueDef record, if one was written.
    pub written: Option<(u32, u64)>,
}

/// The named queues' jobs and definitions at one moment (see
/// [`Named::capture`]).
#[derive(Debug)]
pub struct CapturedNamed {
    jobs: Captured<u64, u16>,
    defs: BTreeMap<u16, Def>,
}

impl CapturedNamed {
    /// Each live job of a named queue with its queue, by job id.
    pub fn jobs_by_id(&self) -> Vec<(u64, u16)> {
        let mut jobs: Vec<(u64, u16)> = self.jobs.iter().map(|(id, q)| (*id, *q)).collect();
        jobs.sort_unstable();
        jobs
    }

    /// Every named queue the store knows and every queue of `jobs`
    /// ([`CapturedNamed::jobs_by_id`]), by id, with its name and the place
    /// of its latest QueueDef (queues without live jobs keep their ids, so
    /// the keys scoped to them stay theirs).
    pub fn defs_of(&self, jobs: &[(u64, u16)]) -> Vec<(u16, Def)> {
        let mut ids: std::collections::BTreeSet<u16> = jobs.iter().map(|j| j.1).collect();
        ids.extend(self.defs.keys());
        let unnamed = |q| Def {
            name: format!("queue-{q}"),
            written: None,
        };
        ids.into_iter()
            .map(|q| (q, self.defs.get(&q).cloned().unwrap_or_else(|| unnamed(q))))
            .collect()
    }
}

/// A queue handle's hold on a named queue whose QueueDef is not written
/// yet: while a handle holds one (see [`Named::handle_for`]), the
/// definition is not freed, so the handle's id keeps its name. One per
/// such definition, kept in [`Named`] as well: a strong count of 1 is "no
/// handle". A definition once written needs none (it is kept for good).
#[derive(Debug, Default)]
pub struct Claim(());

/// The delivery order of one named queue.
#[derive(Debug, Default)]
pub struct Lane {
    /// Its waiting jobs by level.
    pub order: Levels,
    /// Its message groups.
    pub groups: Groups,
    /// Its live jobs.
    pub live: u64,
}

/// The named queues of a store (see the module docs).
#[derive(Debug, Default)]
pub struct Named {
    /// Copy-on-write: a checkpoint captures it by pointer.
    queue_of: CowIdMap<u16>,
    lanes: HashMap<u16, Lane>,
    defs: BTreeMap<u16, Def>,
    by_name: HashMap<String, u16>,
    /// Options given to `Store::queue_with`, by queue id.
    opts: HashMap<u16, QueueOptions>,
    /// The highest queue id seen (defined, or on a job).
    max_id: u16,
    /// The claims of definitions not written that handles were given, by
    /// queue id (at most one per definition).
    claims: HashMap<u16, Arc<Claim>>,
    /// Definitions not written that are never freed all the same: keys
    /// are scoped by their ids (the keys of dead letters given ids at
    /// open, jobs of a queue whose QueueDef the log lost).
    kept: HashSet<u16>,
    /// Ids freed by [`Named::reclaim`], given again first (lowest first),
    /// so that looking names up does not use up the ids: each is below
    /// `max_id`, so there are fewer than `u16::MAX`.
    free: BTreeSet<u16>,
    /// Queues paused ([`crate::Queue::pause`]): they deliver nothing. A
    /// paused queue's definition is never freed (the pause is by name).
    paused: BTreeSet<u16>,
}

/// Checks a queue name against the rules: 1..=64 bytes of
/// `[A-Za-z0-9_.-]` (`Store::queue` refuses any other with
/// [`ErrorKind::InvalidOptions`]).
///
/// ```
/// assert!(walq::validate_queue_name("emails.high-priority").is_ok());
/// assert!(walq::validate_queue_name("no spaces").is_err());
/// assert!(walq::validate_queue_name("").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<()> {
    if valid_queue_name(name.as_bytes()) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidOptions,
        format!(
            "queue name {name:?} is invalid: a name is 1 to {MAX_QUEUE_NAME} bytes of A-Z, a-z, 0-9, '_', '.' and '-'"
        ),
    ))
}

/// The hash of an idempotency or group key of queue `q`: the key's own
/// hash for the default queue (so a single-queue store's hashes are those
/// of earlier versions), a hash that covers the queue id for the others,
/// so that the same key on two queues is two keys.
pub fn scoped_hash(q: u16, key: &[u8]) -> u128 {
    if q == 0 {
        return crate::keys::key_hash(key);
    }
    let mut bytes = Vec::with_capacity(key.len() + 12);
    bytes.extend_from_slice(b"walq-q");
    bytes.extend_from_slice(&q.to_le_bytes());
    bytes.extend_from_slice(key);
    crate::keys::key_hash(&bytes)
}

impl Named {
    /// The queue of live job `id` (0 when it is the default queue's).
    pub fn queue_of(&self, id: u64) -> u16 {
        if self.queue_of.is_empty() {
            return 0;
        }
        self.queue_of.get(&id).copied().unwrap_or(0)
    }

    /// Makes live job `id` a job of queue `q`.
    #[inline]
    pub fn assign(&mut self, id: u64, q: u16) {
        if q == 0 {
            return;
        }
        self.assign_named(id, q);
    }

    /// [`Named::assign`] for a named queue `q`.
    fn assign_named(&mut self, id: u64, q: u16) {
        self.max_id = self.max_id.max(q);
        if self.queue_of.insert(id, q).is_none() {
            self.lanes.entry(q).or_default().live += 1;
        }
    }

    /// Forgets finished job `id`'s queue.
    pub fn forget(&mut self, id: u64) {
        if self.queue_of.is_empty() {
            return;
        }
        if let Some(q) = self.queue_of.remove(&id) {
            if let Some(lane) = self.lanes.get_mut(&q) {
                lane.live = lane.live.saturating_sub(1);
            }
        }
    }

    /// Queue `q`'s lane (created empty when new).
    pub fn lane_mut(&mut self, q: u16) -> &mut Lane {
        self.lanes.entry(q).or_default()
    }

    /// Queue `q`'s lane, if it has one.
    pub fn lane(&self, q: u16) -> Option<&Lane> {
        self.lanes.get(&q)
    }

    /// Every lane, with its queue id.
    pub fn lanes(&self) -> impl Iterator<Item = (u16, &Lane)> + '_ {
        self.lanes.iter().map(|(q, l)| (*q, l))
    }

    /// Every lane, mutably.
    pub fn lanes_mut(&mut self) -> impl Iterator<Item = &mut Lane> + '_ {
        self.lanes.values_mut()
    }

    /// The id of queue `name`, giving it the next free id if it is new
    /// (no record is written: the first enqueue writes its QueueDef). A
    /// new definition is not written and held by nothing: the caller
    /// writes it, or keeps it ([`Named::keep`]), or takes a claim
    /// ([`Named::handle_for`]) before the next [`Named::reclaim`].
    pub fn id_for(&mut self, name: &str) -> Result<u16> {
        validate_name(name)?;
        if name == DEFAULT_QUEUE {
            return Ok(0);
        }
        if let Some(&q) = self.by_name.get(name) {
            return Ok(q);
        }
        if self.defs.len() >= MAX_QUEUES {
            return Err(Error::new(
                ErrorKind::InvalidOptions,
                format!(
                    "a store holds at most {MAX_QUEUES} named queues; {name:?} would be one more"
                ),
            ));
        }
        let q = self.next_free_id()?;
        self.define(q, name, None);
        Ok(q)
    }

    /// The id a new queue gets: the lowest freed one, else one past the
    /// highest seen, else the lowest unused. Never [`ANY_QUEUE`] (not an
    /// id) nor 0 (the default queue).
    fn next_free_id(&mut self) -> Result<u16> {
        while let Some(q) = self.free.pop_first() {
            if !self.defs.contains_key(&q) && !self.lanes.contains_key(&q) {
                return Ok(q);
            }
        }
        match self.max_id.checked_add(1) {
            Some(q) if q != ANY_QUEUE => Ok(q),
            _ => (1..ANY_QUEUE)
                .find(|q| !self.defs.contains_key(q) && !self.lanes.contains_key(q))
                .ok_or_else(|| Error::new(ErrorKind::InvalidOptions, "queue ids exhausted")),
        }
    }

    /// The id of queue `name` for a queue handle ([`Named::id_for`]), and
    /// the claim the handle holds while the queue's definition is not
    /// written (none for the default queue or a written one). At the
    /// limit, definitions nothing refers to are freed first
    /// ([`Named::reclaim`]), so only queues in use count towards it.
    pub fn handle_for(&mut self, name: &str) -> Result<(u16, Option<Arc<Claim>>)> {
        validate_name(name)?;
        if self.lookup(name).is_none() && self.defs.len() >= MAX_QUEUES {
            self.reclaim();
        }
        let q = self.id_for(name)?;
        Ok((q, self.claim(q)))
    }

    /// A claim on queue `q`'s definition if it is not written.
    fn claim(&mut self, q: u16) -> Option<Arc<Claim>> {
        let written = self.defs.get(&q).is_none_or(|d| d.written.is_some());
        if q == 0 || written || self.kept.contains(&q) {
            return None;
        }
        Some(self.claims.entry(q).or_default().clone())
    }

    /// Keeps queue `q`'s definition for good even if it is not written
    /// (something scoped by its id refers to it).
    pub fn keep(&mut self, q: u16) {
        if q != 0 && self.defs.get(&q).is_some_and(|d| d.written.is_none()) {
            self.kept.insert(q);
            self.claims.remove(&q);
        }
    }

    /// Whether queue `q`'s definition is one nothing refers to: not
    /// written, not kept, no options, no live job, no handle's claim.
    fn unused(&self, q: u16, def: &Def) -> bool {
        def.written.is_none()
            && !self.kept.contains(&q)
            && !self.opts.contains_key(&q)
            && !self.paused.contains(&q)
            && self.lanes.get(&q).is_none_or(|l| l.live == 0)
            && self
                .claims
                .get(&q)
                .is_none_or(|c| Arc::strong_count(c) == 1)
    }

    /// Frees every definition nothing refers to (names looked up whose
    /// handles are gone, and never used): the name, the id and the empty
    /// lane; the id may then go to another name. Returns how many were
    /// freed. At most [`MAX_QUEUES`] definitions are checked.
    pub fn reclaim(&mut self) -> usize {
        let unused: Vec<u16> = self
            .defs
            .iter()
            .filter(|(q, d)| self.unused(**q, d))
            .map(|(q, _)| *q)
            .collect();
        for &q in &unused {
            if let Some(def) = self.defs.remove(&q) {
                if self.by_name.get(&def.name) == Some(&q) {
                    self.by_name.remove(&def.name);
                }
            }
            self.lanes.remove(&q);
            self.claims.remove(&q);
            self.free.insert(q);
        }
        unused.len()
    }

    /// Records that queue `q` is `name` (a replayed or written QueueDef:
    /// the latest for a name or an id wins).
    pub fn define(&mut self, q: u16, name: &str, written: Option<(u32, u64)>) {
        self.max_id = self.max_id.max(q);
        self.free.remove(&q);
        if let Some(old) = self.defs.get(&q) {
            if old.name != name {
                self.by_name.remove(&old.name);
                // A handle's claim was on the old name.
                self.claims.remove(&q);
                self.kept.remove(&q);
            }
        }
        if let Some(other) = self.by_name.insert(name.to_string(), q) {
            if other != q {
                self.defs.remove(&other);
                self.claims.remove(&other);
                self.kept.remove(&other);
            }
        }
        if written.is_some() {
            // Kept for good from now on: no claim needed.
            self.claims.remove(&q);
            self.kept.remove(&q);
        }
        self.defs.insert(
            q,
            Def {
                name: name.to_string(),
                written,
            },
        );
        self.lanes.entry(q).or_default();
    }

    /// Sets queue `q`'s options (replacing earlier ones).
    pub fn set_options(&mut self, q: u16, opts: QueueOptions) {
        if opts == QueueOptions::default() {
            self.opts.remove(&q);
        } else {
            self.opts.insert(q, opts);
        }
    }

    /// Queue `q`'s options, if it has any of its own.
    pub fn options(&self, q: u16) -> Option<&QueueOptions> {
        if self.opts.is_empty() {
            return None;
        }
        self.opts.get(&q)
    }

    /// Whether queue `q` is paused: one comparison when none is.
    #[inline]
    pub fn is_paused(&self, q: u16) -> bool {
        !self.paused.is_empty() && self.paused.contains(&q)
    }

    /// Pauses (`on`) or resumes queue `q` in memory.
    pub fn set_paused(&mut self, q: u16, on: bool) {
        if on {
            self.paused.insert(q);
        } else {
            self.paused.remove(&q);
        }
    }

    /// The names of the paused queues, sorted (as `PAUSED` lists them),
    /// with queue `q` paused (`on`) or resumed: what the file must say
    /// before the change is made in memory.
    pub fn paused_names_with(&self, q: u16, on: bool) -> Vec<String> {
        let mut ids = self.paused.clone();
        if on {
            ids.insert(q);
        } else {
            ids.remove(&q);
        }
        let mut names: Vec<String> = ids
            .into_iter()
            .filter_map(|q| self.name(q).map(str::to_string))
            .collect();
        names.sort_unstable();
        names
    }

    /// The id of queue `name` if the store knows it (nothing is given a
    /// new id).
    pub fn lookup(&self, name: &str) -> Option<u16> {
        if name == DEFAULT_QUEUE {
            return Some(0);
        }
        self.by_name.get(name).copied()
    }

    /// The name of queue `q`.
    pub fn name(&self, q: u16) -> Option<&str> {
        if q == 0 {
            return Some(DEFAULT_QUEUE);
        }
        self.defs.get(&q).map(|d| d.name.as_str())
    }

    /// Whether queue `q`'s QueueDef must be written (again) before a job
    /// of it: none was written, or the last one is before `floor` (the
    /// LSN the next open's checkpoint starts from) or in a segment below
    /// `first_seg` (deleted).
    pub fn needs_def(&self, q: u16, floor: u64, first_seg: u32) -> bool {
        match self.defs.get(&q).and_then(|d| d.written) {
            Some((seg, lsn)) => lsn < floor || seg < first_seg,
            None => q != 0,
        }
    }

    /// Queues whose QueueDef is in segment `seg` (to be written again
    /// before it is deleted). Every known queue is kept, not only those
    /// with live jobs: the remembered idempotency keys of a drained queue
    /// are scoped by its id, so an open that met no QueueDef for its name
    /// would give the name a new id and forget every one of its keys.
    pub fn defs_in(&self, seg: u32) -> Vec<(u16, String)> {
        self.defs
            .iter()
            .filter(|(_, d)| d.written.is_some_and(|(s, _)| s == seg))
            .map(|(q, d)| (*q, d.name.clone()))
            .collect()
    }

    /// The live jobs of named queues and the queue definitions as they are
    /// now (for a checkpoint: O(1) in the number of jobs; the definitions
    /// are at most [`crate::named::MAX_QUEUES`] small entries).
    pub fn capture(&self) -> CapturedNamed {
        CapturedNamed {
            jobs: self.queue_of.capture(),
            defs: self.defs.clone(),
        }
    }

    /// Heap bytes of the map of jobs to queues.
    pub fn heap_bytes(&self) -> usize {
        self.queue_of.capacity() * 11
    }

    /// Checks the per-queue live counts against `queue_of`, and that each
    /// claim and freed id is where it belongs.
    pub fn check(&self) {
        for q in self.claims.keys().chain(&self.kept) {
            let def = self.defs.get(q);
            assert!(
                def.is_some_and(|d| d.written.is_none()),
                "queue {q} claimed or kept"
            );
        }
        for q in &self.free {
            assert!(!self.defs.contains_key(q), "freed queue {q} defined");
        }
        for q in &self.paused {
            assert!(
                *q == 0 || self.defs.contains_key(q),
                "paused queue {q} undefined"
            );
        }
        let mut live: HashMap<u16, u64> = HashMap::new();
        for q in self.queue_of.values() {
            *live.entry(*q).or_default() += 1;
        }
        for (q, lane) in &self.lanes {
            assert_eq!(
                lane.live,
                live.get(q).copied().unwrap_or(0),
                "queue {q} live count"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_ids_given_once() {
        let mut n = Named::default();
        assert_eq!(n.id_for("default").unwrap(), 0);
        assert_eq!(n.id_for("emails").unwrap(), 1);
        assert_eq!(n.id_for("reports").unwrap(), 2);
        assert_eq!(n.id_for("emails").unwrap(), 1);
        for bad in ["", "a/b", "é", &"x".repeat(65)] {
            let e = n.id_for(bad).unwrap_err();
            assert!(e.to_string().contains("1 to 64 bytes"), "{e}");
        }
        assert!(n.needs_def(1, 0, 0));
        n.define(1, "emails", Some((3, 10)));
        assert!(!n.needs_def(1, 10, 3));
        assert!(n.needs_def(1, 11, 3));
        assert!(n.needs_def(1, 0, 4));
        assert!(!n.needs_def(0, 100, 100));
    }

    #[test]
    fn the_queue_limit_is_an_error() {
        let mut n = Named::default();
        for i in 0..MAX_QUEUES {
            n.id_for(&format!("q{i}")).unwrap();
        }
        let e = n.id_for("one-more").unwrap_err();
        assert!(e.to_string().contains("at most 1024"), "{e}");
    }

    /// Definitions only looked up, their claims dropped, are freed at the
    /// limit, and their ids given again; one written, kept, with options,
    /// with a live job or claimed is not.
    #[test]
    fn only_definitions_nothing_refers_to_are_freed() {
        let mut n = Named::default();
        let (written, _) = n.handle_for("written").unwrap();
        n.define(written, "written", Some((1, 1)));
        let (kept, _) = n.handle_for("kept").unwrap();
        n.keep(kept);
        let (opts, _) = n.handle_for("opts").unwrap();
        n.set_options(opts, QueueOptions::new().max_attempts(3));
        let (live, _) = n.handle_for("live").unwrap();
        n.assign(99, live);
        let (claimed, claim) = n.handle_for("claimed").unwrap();
        assert!(claim.is_some());
        assert!(n.handle_for("written").unwrap().1.is_none());
        assert!(n.handle_for("kept").unwrap().1.is_none());
        for i in 0..MAX_QUEUES - 5 {
            let (_, claim) = n.handle_for(&format!("q{i}")).unwrap();
            drop(claim);
        }
        assert_eq!(n.defs.len(), MAX_QUEUES);
        // At the limit: the 1019 unused ones are freed, the lowest id
        // given again.
        assert_eq!(n.handle_for("new").unwrap().0, 6);
        assert_eq!(n.defs.len(), 6);
        assert_eq!(n.lookup("q0"), None);
        assert_eq!(n.lanes.len(), 6);
        for (name, q) in [("written", written), ("kept", kept), ("opts", opts)] {
            assert_eq!(n.lookup(name), Some(q), "{name}");
        }
        assert_eq!(n.lookup("live"), Some(live));
        assert_eq!(n.lookup("claimed"), Some(claimed));
        n.check();
        // Unused once the claim is dropped, the job gone, the options
        // reset.
        drop(claim);
        n.forget(99);
        n.set_options(opts, QueueOptions::default());
        assert_eq!(n.reclaim(), 4, "new, claimed, live, opts");
        assert_eq!(n.defs.len(), 2);
        n.check();
    }

    /// Ids are never 0 nor `ANY_QUEUE`, even past the highest one.
    #[test]
    fn ids_skip_the_reserved_ones() {
        let mut n = Named::default();
        n.define(ANY_QUEUE - 1, "last", Some((1, 1)));
        let q = n.id_for("next").unwrap();
        assert_eq!(q, 1);
        n.define(ANY_QUEUE - 2, "x", None);
        n.reclaim();
        assert_eq!(n.id_for("again").unwrap(), 1, "the lowest freed id");
    }

    #[test]
    fn live_counts_follow_assign_and_forget() {
        let mut n = Named::default();
        n.assign(5, 2);
        n.assign(6, 2);
        n.assign(7, 0);
        assert_eq!(n.queue_of(5), 2);
        assert_eq!(n.queue_of(7), 0);
        n.forget(5);
        assert_eq!(n.lane(2).unwrap().live, 1);
        n.check();
    }
}
