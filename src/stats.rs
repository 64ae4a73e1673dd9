//! What the queue reports about itself.

/// A snapshot of the queue, from [`crate::Queue::stats`].
///
/// Totals count since this `Queue` was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Jobs ready to be dequeued now.
    pub ready: u64,
    /// Jobs waiting for their due time (delayed or retried).
    pub delayed: u64,
    /// Jobs leased to a consumer.
    pub in_flight: u64,
    /// Jobs in the dead letters.
    pub dead: u64,
    /// Jobs enqueued since open (duplicates by idempotency key excluded).
    pub enqueued_total: u64,
    /// Jobs acked since open.
    pub acked_total: u64,
    /// Nacks that scheduled a retry, and expired leases, since open.
    pub retried_total: u64,
    /// Jobs moved to the dead letters since open.
    pub dead_lettered_total: u64,
    /// Jobs whose record failed its checksum after open and that were
    /// moved to the dead letters (with an empty payload and the damage as
    /// their error) so the queue could keep serving the rest, since open.
    #[serde(default)]
    pub damaged_total: u64,
    /// Live jobs rewritten into the active segment so that an old segment
    /// could be deleted, since open.
    pub carried_total: u64,
    /// fdatasyncs of the log since open. With `Durability::Sync` and
    /// concurrent producers, far fewer than the operations: group commit.
    pub syncs_total: u64,
    /// LSN of the last record written to the log.
    pub written_lsn: u64,
    /// Highest LSN known to be on stable storage; `written_lsn -
    /// durable_lsn` records would be lost by a power cut now.
    pub durable_lsn: u64,
    /// Log segment files.
    pub segments: u64,
    /// Bytes of the queue's files on disk: the log's segments, the spare
    /// segments prepared ahead (`.wal.spare`), the dead letters
    /// (`dead.wal`) and the completion file (`done.rec`). Sizes as the
    /// files are long, preallocated space included; the few KiB of
    /// `CHECKPOINT`, `CLOSED`, `ID_FLOOR`, `LOCK`, `PAUSED`, `STORE_ID` and
    /// `schedules.bin` are not counted, nor is a spare while the `walq-upkeep` thread makes it or writes
    /// its zeros (it is counted once ready).
    pub disk_bytes: u64,
    /// Heap bytes of the in-memory index (job slots, leases, keys).
    pub index_bytes: u64,
    /// The last failure of background maintenance (reclaiming disk,
    /// preparing a spare segment ahead), if any. It never failed an
    /// operation; a failed deletion or preparation is tried again.
    #[serde(default)]
    pub maintenance_error: Option<String>,
    /// Whether this queue is paused ([`crate::Queue::pause`]): `ready`
    /// counts jobs that are due but not delivered until it is resumed.
    /// (The store's totals of [`crate::Store::stats`] say `false`; each
    /// queue's [`QueueStats::paused`] says which are.)
    #[serde(default)]
    pub paused: bool,
}

/// What opening the queue found and did, from
/// [`crate::Queue::recovery_report`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments_scanned: u64,
    /// Bytes of log scanned.
    pub bytes_scanned: u64,
    /// Records replayed.
    pub records: u64,
    /// Bytes of torn tail (a write cut short by a crash) zeroed.
    pub torn_bytes: u64,
    /// Records of an unfinished batch dropped with the torn tail.
    pub incomplete_batch_records: u64,
    /// Leases held by the previous process, released (attempt counted).
    pub leases_released: u64,
    /// Of those, jobs that had used their last attempt and went to the
    /// dead letters.
    pub dead_lettered_on_open: u64,
    /// Salvage mode: records lost to damage (counted from LSN gaps). Each
    /// lost record may have been a job, or a state change of one.
    pub records_lost: u64,
    /// Salvage mode: bytes skipped as damaged.
    pub bytes_skipped: u64,
    /// Leftover temporary files deleted.
    pub temp_files_removed: u64,
    /// Whether the index was loaded from the checkpoint (file
    /// `CHECKPOINT`), so that only the log written after it was replayed.
    #[serde(default)]
    pub checkpoint_used: bool,
    /// The LSN the checkpoint covered (0 when none was used); records
    /// after it were replayed.
    #[serde(default)]
    pub checkpoint_lsn: u64,
    /// Why the whole log was scanned instead: `missing`, `damaged: …`,
    /// `stale: …` (the log does not match it), `version …`, `written with
    /// another key hash`, `unreadable: …`. `None` when it was used.
    #[serde(default)]
    pub checkpoint_fallback: Option<String>,
}

/// One queue's counts in [`StoreStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue's name (`"default"` for the default queue).
    pub name: String,
    /// Jobs of the queue ready to lease now.
    pub ready: u64,
    /// Jobs of the queue waiting for their due time (or their group).
    pub delayed: u64,
    /// Jobs of the queue leased and not yet settled.
    pub in_flight: u64,
    /// Whether the queue is paused ([`crate::Queue::pause`]): its ready
    /// jobs are not delivered until it is resumed.
    pub paused: bool,
}

/// A snapshot of a store: its totals and each queue's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// The store's counts, every queue summed (as [`Stats`]).
    pub total: Stats,
    /// Each queue the store knows, the default queue first, then by id.
    pub queues: Vec<QueueStats>,
}
