//! The id floor (file `ID_FLOOR`): a durable bound below which every job
//! id issued so far lies, so an id is never issued twice.
//!
//! Under `Durability::Os` or `Periodic` an enqueue returns before its log
//! record is synced, and a power cut can lose the records of the newest
//! jobs after their ids were handed out, and even after they ran. Replaying
//! the log alone then issues those ids again, and with them the keys a job
//! gives outside services ([`crate::Queue::provider_key`]): a provider
//! answers the new job with the lost one's cached response.
//!
//! So ids are reserved ahead in steps of [`ID_FLOOR_STEP`]: before an
//! enqueue hands out an id at or past the floor, the floor is raised past
//! it and synced (one small write and one `fdatasync` per step, about one
//! per million jobs). An open starts issuing at the floor (or past the
//! log's last id, if higher), which leaves a gap of unused ids after a
//! crash. A clean close lowers the floor to the next id, so a reopen after
//! it leaves none.
//!
//! The file has two slots, written in turn (`format::id_floor`): a write a
//! power cut tears leaves the other one, in force before it, whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::id_floor::{self, Slot, SLOT_LEN};
use crate::format::MAX_ID;
use crate::options::RecoveryMode;
use crate::vfs::{Vfs, VfsFile};

/// File name of the id floor.
pub const ID_FLOOR_FILE: &str = "ID_FLOOR";

/// How far past the id being issued the floor is raised: one synced write
/// per this many enqueues, and at most this many ids skipped after a crash.
pub const ID_FLOOR_STEP: u64 = 1 << 20;

/// The floor of one store, held under the queue's state lock.
pub(crate) struct IdFloor {
    vfs: Arc<dyn Vfs>,
    path: PathBuf,
    dir: PathBuf,
    mode: u32,
    /// The file, once it exists.
    file: Option<Box<dyn VfsFile>>,
    /// The slot in force on disk (`seq` 0 and floor 0: none yet).
    durable: Slot,
}

impl std::fmt::Debug for IdFloor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdFloor")
            .field("path", &self.path)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

/// What an open found.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub floor: IdFloor,
    /// The first id this open may issue: no id below it is issued again.
    pub start: u64,
    /// Bytes of a damaged file `RecoveryMode::Salvage` went past.
    pub skipped: u64,
}

/// Reads the floor of the store in `dir`, whose log's next id is
/// `log_next`. A missing file (a new store, or one an older build made)
/// starts at `log_next`. A file with no valid slot is `Corrupt` naming it
/// under `RecoveryMode::Strict` (ids of jobs a power cut lost could be
/// issued again); `Salvage` starts one step past `log_next`.
pub(crate) fn load(
    vfs: Arc<dyn Vfs>,
    dir: &Path,
    mode: u32,
    recovery: RecoveryMode,
    log_next: u64,
) -> Result<Loaded> {
    let path = dir.join(ID_FLOOR_FILE);
    let mut floor = IdFloor {
        vfs,
        path,
        dir: dir.to_path_buf(),
        mode,
        file: None,
        durable: Slot { seq: 0, floor: 0 },
    };
    let file = match floor.vfs.open(&floor.path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded {
                floor,
                start: log_next,
                skipped: 0,
            })
        }
        Err(e) => return Err(Error::io("opening", &floor.path, e)),
    };
    let (found, len) = read_slots(&*file, &floor.path)?;
    floor.file = Some(file);
    let Some(slot) = found else {
        if recovery == RecoveryMode::Strict {
            return Err(Error::corrupt(
                &floor.path,
                0,
                "the id floor is damaged (no valid slot): ids of jobs a power cut lost \
                 could be issued again; open with RecoveryMode::Salvage to start one step \
                 past the log's last id",
            ));
        }
        let start = log_next.saturating_add(ID_FLOOR_STEP).min(MAX_ID);
        return Ok(Loaded {
            floor,
            start,
            skipped: len,
        });
    };
    floor.durable = slot;
    Ok(Loaded {
        floor,
        start: log_next.max(slot.floor),
        skipped: 0,
    })
}

/// The slot in force in `file`, and the file's length.
fn read_slots(file: &dyn VfsFile, path: &Path) -> Result<(Option<Slot>, u64)> {
    let len = file.len().map_err(|e| Error::io("reading", path, e))?;
    let mut buf = vec![0u8; len.min(id_floor::FILE_LEN) as usize];
    file.read_at(&mut buf, 0)
        .map_err(|e| Error::io("reading", path, e))?;
    Ok((id_floor::read(&buf), len))
}

impl IdFloor {
    /// Makes sure every id below `end` may be issued: the floor is raised
    /// (to `end` plus a step) and synced when `end` passes it. On an error
    /// nothing is issued past the floor in force, and a later call tries
    /// again (a failed `fdatasync` is never taken as success: the slot is
    /// written again).
    #[inline]
    pub(crate) fn cover(&mut self, end: u64) -> Result<()> {
        if end <= self.durable.floor {
            return Ok(());
        }
        self.write(end.saturating_add(ID_FLOOR_STEP).min(MAX_ID))
    }

    /// Whether the file exists (was found or made).
    pub(crate) fn exists(&self) -> bool {
        self.file.is_some()
    }

    /// At a clean close: lowers the floor to `next_id` (nothing more is
    /// issued in this session), so the next open leaves no gap.
    pub(crate) fn settle(&mut self, next_id: u64) -> Result<()> {
        if self.file.is_none() || self.durable.floor == next_id {
            return Ok(());
        }
        self.write(next_id)
    }

    /// Writes `floor` into the slot not in force and syncs it; the file is
    /// made (crash-atomically) the first time.
    fn write(&mut self, floor: u64) -> Result<()> {
        let slot = Slot {
            seq: self.durable.seq + 1,
            floor,
        };
        let bytes = id_floor::encode(slot);
        match &self.file {
            Some(file) => file
                .write_at(&bytes, slot.offset())
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io("writing the id floor", &self.path, e))?,
            None => self.file = Some(self.create(&bytes, slot)?),
        }
        self.durable = slot;
        Ok(())
    }

    /// The file, with `bytes` in `slot`'s place and zeros elsewhere.
    fn create(&self, bytes: &[u8], slot: Slot) -> Result<Box<dyn VfsFile>> {
        let mut whole = vec![0u8; id_floor::FILE_LEN as usize];
        let at = slot.offset() as usize;
        whole[at..at + SLOT_LEN].copy_from_slice(bytes);
        crate::vfs::write_atomically(&*self.vfs, &self.dir, ID_FLOOR_FILE, &[&whole], self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::{Fault, FaultOp, SimFs};

    fn load_sim(fs: &SimFs, log_next: u64) -> Result<Loaded> {
        let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
        vfs.create_dir_all(Path::new("/q"), 0o700).unwrap();
        load(vfs, Path::new("/q"), 0o600, RecoveryMode::Strict, log_next)
    }

    fn fail(fs: &SimFs, op: FaultOp, kind: std::io::ErrorKind) {
        fs.set_fault(Some(Fault {
            op,
            at: fs.op_count(op),
            forever: true,
            kind,
        }));
    }

    #[test]
    fn ids_are_covered_a_step_ahead_and_survive_a_power_cut() {
        let fs = SimFs::new();
        let mut l = load_sim(&fs, 5).unwrap();
        assert_eq!(l.start, 5, "no file: the log's next id");
        l.floor.cover(6).unwrap();
        assert_eq!(l.floor.durable.floor, 6 + ID_FLOOR_STEP);
        let syncs = fs.syncs();
        l.floor.cover(ID_FLOOR_STEP).unwrap();
        assert_eq!(fs.syncs(), syncs, "covered already: nothing written");
        l.floor.cover(7 + ID_FLOOR_STEP).unwrap();
        for seed in 0..8 {
            let after = load_sim(&fs.power_loss(seed), 5).unwrap();
            assert_eq!(after.start, 7 + 2 * ID_FLOOR_STEP, "seed {seed}");
        }
    }

    /// A failed `fdatasync` is not taken as success: the floor in force
    /// stays, and the next call writes the slot again.
    #[test]
    fn a_failed_sync_keeps_the_old_floor_and_the_next_call_writes_again() {
        let fs = SimFs::new();
        let mut floor = load_sim(&fs, 1).unwrap().floor;
        floor.cover(2).unwrap();
        let before = floor.durable;
        fs.faults_only_on(Some(Path::new("/q/ID_FLOOR"))).unwrap();
        fail(&fs, FaultOp::Sync, std::io::ErrorKind::Other);
        let end = before.floor + 1;
        let err = floor.cover(end).unwrap_err();
        assert!(err.to_string().contains("ID_FLOOR"), "{err}");
        assert_eq!(floor.durable, before);
        fs.set_fault(None);
        floor.cover(end).unwrap();
        assert_eq!(floor.durable.seq, before.seq + 1);
        let after = load_sim(&fs.power_loss(3), 1).unwrap();
        assert_eq!(after.start, end + ID_FLOOR_STEP);
    }

    /// On a full disk the file cannot be made: the call fails with the
    /// disk's error, and succeeds once there is room.
    #[test]
    fn a_full_disk_refuses_the_first_cover_until_there_is_room() {
        let fs = SimFs::new();
        let mut floor = load_sim(&fs, 1).unwrap().floor;
        fail(&fs, FaultOp::Create, std::io::ErrorKind::StorageFull);
        let err = floor.cover(2).unwrap_err();
        assert!(crate::reserve::is_enospc(&err), "{err}");
        assert!(fs.read_file(Path::new("/q/ID_FLOOR")).is_none());
        fs.set_fault(None);
        floor.cover(2).unwrap();
        assert_eq!(load_sim(&fs, 1).unwrap().start, 2 + ID_FLOOR_STEP);
    }

    /// A clean close's lower floor is in force over the higher one before
    /// it; a torn write of it leaves the higher one (a gap, never a reuse).
    #[test]
    fn settle_lowers_the_floor_and_a_torn_settle_keeps_the_higher_one() {
        let fs = SimFs::new();
        let mut floor = load_sim(&fs, 1).unwrap().floor;
        floor.cover(2).unwrap();
        floor.settle(40).unwrap();
        assert_eq!(load_sim(&fs, 1).unwrap().start, 40);
        let mut bytes = fs.read_file(Path::new("/q/ID_FLOOR")).unwrap();
        let newest = floor.durable.offset() as usize;
        bytes[newest + 30] ^= 1;
        let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
        vfs.open(Path::new("/q/ID_FLOOR"))
            .unwrap()
            .write_at(&bytes, 0)
            .unwrap();
        assert_eq!(load_sim(&fs, 1).unwrap().start, 2 + ID_FLOOR_STEP);
    }
}
