//! The state's side of named queues: which delivery order a job's
//! operations use, the QueueDef records, and the counts per queue.

use super::QueueState;
use crate::clock::Now;
use crate::error::Result;
use crate::format::record::Record;
use crate::groups::Groups;
use crate::levels::Levels;
use crate::stats::{QueueStats, Stats};

impl QueueState {
    /// The delivery order and groups of queue `q`.
    pub(super) fn lane_parts(&mut self, q: u16) -> (&mut Levels, &mut Groups) {
        if q == 0 {
            (&mut self.delivery, &mut self.groups)
        } else {
            let lane = self.named.lane_mut(q);
            (&mut lane.order, &mut lane.groups)
        }
    }

    /// The delivery order of live job `id`'s queue.
    pub(super) fn order_mut(&mut self, id: u64) -> &mut Levels {
        let q = self.named.queue_of(id);
        self.lane_parts(q).0
    }

    /// The groups of live job `id`'s queue.
    pub(super) fn groups_mut(&mut self, id: u64) -> &mut Groups {
        let q = self.named.queue_of(id);
        self.lane_parts(q).1
    }

    /// The delivery order and groups of queue `q`, read only.
    pub(super) fn lane_ref(&self, q: u16) -> Option<(&Levels, &Groups)> {
        if q == 0 {
            return Some((&self.delivery, &self.groups));
        }
        self.named.lane(q).map(|l| (&l.order, &l.groups))
    }

    /// The delivery order of live job `id`'s queue, read only.
    pub(super) fn order_ref(&self, id: u64) -> Option<&Levels> {
        self.lane_ref(self.named.queue_of(id)).map(|l| l.0)
    }

    /// The groups of live job `id`'s queue, read only.
    pub(super) fn groups_ref(&self, id: u64) -> Option<&Groups> {
        self.lane_ref(self.named.queue_of(id)).map(|l| l.1)
    }

    /// The id of queue `name` for a handle, and the claim the handle
    /// holds (see [`crate::named::Named::handle_for`]).
    pub fn queue_handle(
        &mut self,
        name: &str,
    ) -> Result<(u16, Option<std::sync::Arc<crate::named::Claim>>)> {
        self.named.handle_for(name)
    }

    /// Sets queue `q`'s own options (see `Store::queue_with`).
    pub fn set_queue_options(&mut self, q: u16, opts: crate::QueueOptions) {
        self.named.set_options(q, opts);
    }

    /// The lease length of a dequeue on queue `q`: `explicit` if given,
    /// else the queue's visibility timeout, else the store's.
    pub fn lease_ms(&self, q: u16, explicit: Option<u64>) -> u64 {
        explicit
            .or_else(|| {
                let own = self.named.options(q)?.visibility_timeout?;
                Some(crate::clock::ms(own))
            })
            .unwrap_or(self.cfg.visibility_ms)
    }

    /// Whether queue `q` has a job to lease at `now` (expired leases
    /// released first, as a dequeue does).
    pub fn has_ready(&mut self, q: u16, now: Now) -> Result<bool> {
        self.expire_leases(now)?;
        Ok(self.peek_next(q, now.wall).is_some())
    }

    /// Whether queue `q` is paused ([`crate::Queue::pause`]).
    pub fn is_paused(&self, q: u16) -> bool {
        self.named.is_paused(q)
    }

    /// Pauses (`on`) or resumes queue `q` in memory, once `PAUSED` says so.
    pub fn set_paused(&mut self, q: u16, on: bool) {
        self.named.set_paused(q, on);
    }

    /// The names `PAUSED` must list for queue `q` to be paused (`on`) or
    /// resumed.
    pub fn paused_names_with(&self, q: u16, on: bool) -> Vec<String> {
        self.named.paused_names_with(q, on)
    }

    /// Pauses the queues `PAUSED` names, at open (each gets an id if the
    /// store did not know it: a queue is paused by name).
    pub fn install_paused(&mut self, names: &[String]) -> Result<()> {
        for name in names {
            let q = self.named.id_for(name)?;
            self.named.set_paused(q, true);
        }
        Ok(())
    }

    /// The name of queue `q`.
    pub fn queue_name(&self, q: u16) -> String {
        self.named
            .name(q)
            .map_or_else(|| format!("#{q}"), str::to_string)
    }

    /// Writes queue `q`'s QueueDef record if the log recovery reads does
    /// not hold one (see [`crate::named::Named::needs_def`]).
    #[inline]
    pub(super) fn ensure_def(&mut self, q: u16) -> Result<()> {
        if q == 0 {
            // The default queue has no QueueDef (every enqueue asks).
            return Ok(());
        }
        self.ensure_named_def(q)
    }

    /// [`QueueState::ensure_def`] for a named queue `q`.
    fn ensure_named_def(&mut self, q: u16) -> Result<()> {
        let first = self.log.segments.front().map_or(0, |i| i.seg.id);
        if !self.named.needs_def(q, self.def_floor, first) {
            return Ok(());
        }
        let name = self.queue_name(q);
        self.write_def(q, &name)
    }

    fn write_def(&mut self, q: u16, name: &str) -> Result<()> {
        let rec = Record::QueueDef {
            queue: q,
            name: name.as_bytes(),
        };
        let a = self.log.append(&rec, 0, self.next_id)?;
        self.named.define(q, name, Some((a.seg, a.lsn)));
        // The definition alone changes no job: if the record after it
        // fails on a full disk, the operation still changed nothing.
        self.log.uncount_last_change();
        Ok(())
    }

    /// Writes again, at the log's end, the QueueDefs in segment `seg` of
    /// queues that still have live jobs, before `seg` is deleted.
    pub(super) fn carry_defs(&mut self, seg: u32) -> Result<()> {
        for (q, name) in self.named.defs_in(seg) {
            self.log.begin_op();
            self.write_def(q, &name)?;
        }
        Ok(())
    }

    /// A checkpoint covering the log below `next_lsn` was captured: a
    /// QueueDef before it is not read by the next open.
    pub(crate) fn note_checkpoint(&mut self, next_lsn: u64) {
        self.def_floor = self.def_floor.max(next_lsn);
    }

    /// `(ready, delayed)` of queue `q` at `now`.
    fn lane_counts(&mut self, q: u16, now: u64) -> (u64, u64) {
        let (order, groups) = self.lane_parts(q);
        order.promote(now);
        let (due_now, delayed) = order.waiting_counts();
        (order.fresh() + due_now, delayed + groups.blocked_count())
    }

    /// The counts of every queue at `now`, default queue first.
    pub fn queue_counts(&mut self, now: Now) -> Vec<QueueStats> {
        // Names only looked up, whose handles are gone, are not listed.
        self.named.reclaim();
        let mut named: Vec<(u16, u64)> = self.named.lanes().map(|(q, l)| (q, l.live)).collect();
        named.sort_unstable();
        let mut out = Vec::with_capacity(named.len() + 1);
        let mut named_in_flight = 0u64;
        for (q, live) in named {
            let (ready, delayed) = self.lane_counts(q, now.wall);
            let in_flight = live.saturating_sub(ready + delayed);
            named_in_flight += in_flight;
            out.push(QueueStats {
                name: self.queue_name(q),
                ready,
                delayed,
                in_flight,
                paused: self.named.is_paused(q),
            });
        }
        let (ready, delayed) = self.lane_counts(0, now.wall);
        let in_flight = (self.leases.len() as u64).saturating_sub(named_in_flight);
        let default = QueueStats {
            name: self.queue_name(0),
            ready,
            delayed,
            in_flight,
            paused: self.named.is_paused(0),
        };
        out.insert(0, default);
        out
    }

    /// The store's stats with queue `q`'s counts (ready, delayed, in
    /// flight); every other field is the store's.
    pub fn queue_stats(&mut self, q: u16, now: Now) -> Stats {
        let mut stats = self.stats(now);
        stats.paused = self.named.is_paused(q);
        if !self.named.lanes().any(|_| true) {
            return stats;
        }
        let name = self.queue_name(q);
        let counts = self.queue_counts(now);
        let mine = counts.iter().find(|c| c.name == name);
        stats.ready = mine.map_or(0, |c| c.ready);
        stats.delayed = mine.map_or(0, |c| c.delayed);
        stats.in_flight = mine.map_or(0, |c| c.in_flight);
        stats
    }
}
