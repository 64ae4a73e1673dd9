//! A simulated file system for power-loss and I/O-fault tests.
//!
//! [`SimFs`] keeps every file in memory and remembers, per file, what is
//! durable (the contents as of its last successful sync) and what is still
//! volatile (the writes and length changes made since). It also remembers
//! which directory entries are durable (as of the last `sync_dir` of their
//! directory). [`SimFs::power_loss`] builds the file system a machine would
//! find after losing power now; [`SimFs::set_fault`] makes chosen
//! operations fail; [`SimFs::freeze_after_syncs`] makes syncs silently stop
//! making anything durable, which with a later `power_loss` models a power
//! cut at that sync point.
//!
//! # Model
//!
//! * **Data.** A write is volatile until a `sync_data` or `sync_all` of its
//!   file succeeds. On power loss the volatile writes made before the
//!   freeze point (see below) are applied over the durable contents as a
//!   disk could have received them, chosen from the seed per file with one
//!   of four policies: all kept; all dropped; written back in order with
//!   the power cut during one write (a prefix of it kept, cut at a 512-byte
//!   sector boundary of the file); or each 512-byte sector independently
//!   as of some moment (the writes touching it up to some point applied,
//!   in order), so any write may be kept, dropped or torn anywhere at
//!   sector granularity, and a later write may survive where an earlier
//!   one in another sector did not. Two writes to the same sector never
//!   survive out of order (a sector is written whole, with the contents it
//!   had when written back). Writes after the freeze point are always lost.
//! * **Length.** `set_len` and `allocate` are metadata: `sync_all` makes
//!   the current length durable; `sync_data` makes a growth durable but
//!   not a shrink (the bytes past the shorter length come back after a
//!   power loss). A kept write past the durable length lengthens the file
//!   (with zeros in any gap), as if its size update had been written too.
//! * **Directories.** `create`, `rename` and `remove` change the directory
//!   at once, and become durable only with a later successful `sync_dir`
//!   of the directory that holds the name: otherwise a power loss undoes
//!   them (a created file vanishes, a renamed file goes back to its old
//!   name, a removed file comes back with its durable contents).
//!   Directories themselves (`create_dir_all`) are durable at once. Locks
//!   are not carried over.
//! * **Freeze.** After `freeze_after_syncs(Some(n))`, `n` more syncs work;
//!   from the next one on, syncs still return `Ok` (and count in
//!   [`SimFs::syncs`]) but make nothing durable, and every write, length
//!   change or directory change made from that call on is lost on power
//!   loss: the power went out when that sync was issued.
//! * **Faults.** Each fallible operation has a kind ([`FaultOp`]) and a
//!   running count per kind ([`SimFs::op_count`]; failed operations count
//!   too). A [`Fault`] fails the operation whose count before it equals
//!   `at` (0 = the first), and with `forever` every later one of that kind.
//!   A failed operation changes nothing, except a failed `write_at`: it
//!   leaves the first half of its bytes written (a torn write, as a short
//!   `pwrite` or a partly copied mapped page would), volatile like any
//!   write. (`set_len` counts as a write; a failed one changes nothing.)
//!   A failed sync makes nothing durable and keeps the volatile writes
//!   volatile (a later successful sync, or a power loss, decides their
//!   fate). `ENOSPC` is [`std::io::ErrorKind::StorageFull`]. Opening and
//!   reading never fail, nor does the implicit creation of a lock file.
//! * **Maps.** A mapped file is a [`Region::heap`] copy of the file's
//!   first `len` bytes, kept up to date by `write_at` (mapped files are
//!   never shrunk; `set_len` on a mapped handle is refused as in
//!   [`super::StdFs`]).
//!
//! * **Test hooks.** [`SimFs::pause_syncs`] holds every sync call (before
//!   fault injection and counting) until released, so a test can line up
//!   concurrent group-commit callers behind one fsync;
//!   [`SimFs::read_file`] shows a file's current bytes; [`SimFs::frozen`]
//!   says whether the freeze point was reached.
//!
//! Everything is deterministic: no clock, no thread-local randomness.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Condvar, Mutex};

use super::{Region, Vfs, VfsFile};

/// Sector size: torn writes are cut at multiples of this in the file.
const SECTOR: u64 = 512;

/// Kinds of operation a [`Fault`] can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOp {
    /// `write_at` and `set_len`.
    Write,
    /// `sync_data`, `sync_all` and `sync_dir`.
    Sync,
    /// `create` (not the implicit creation of a lock file).
    Create,
    /// `rename`.
    Rename,
    /// `remove`.
    Remove,
    /// `allocate`.
    Allocate,
}

impl FaultOp {
    /// Every kind, in declaration order.
    pub const ALL: [FaultOp; 6] = [
        FaultOp::Write,
        FaultOp::Sync,
        FaultOp::Create,
        FaultOp::Rename,
        FaultOp::Remove,
        FaultOp::Allocate,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// An injected I/O fault.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// Which kind of operation fails.
    pub op: FaultOp,
    /// Fail the operation whose count ([`SimFs::op_count`]) reaches this
    /// value, i.e. the `at`-th (0-based) operation of that kind.
    pub at: u64,
    /// Keep failing every later operation of that kind.
    pub forever: bool,
    /// The error kind returned.
    pub kind: io::ErrorKind,
}

/// A volatile change to a file.
#[derive(Debug)]
enum Change {
    /// Bytes written at an offset. `lost` when made after the freeze point.
    Write { off: u64, data: Vec<u8>, lost: bool },
    /// The length set by `set_len` or grown by `allocate`.
    Len(u64),
}

#[derive(Debug, Default)]
struct Inode {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a power loss for sure.
    durable: Vec<u8>,
    /// Length of `data` at the last successful sync.
    synced_len: u64,
    /// Changes since the last successful sync, in order.
    pending: Vec<Change>,
    /// Live maps of this file, kept in step with `data`.
    maps: Vec<Weak<Region>>,
    /// A failed sync dropped writes (`kernel_sync_errors`): `data` holds
    /// bytes that will never be durable.
    dropped_writes: bool,
}

fn len_u64(n: usize) -> u64 {
    n as u64
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

/// Makes `buf` at least `len` long, zeroing `[from, len)` (bytes past an
/// old, longer length that a shrink left behind).
fn grow(buf: &mut Vec<u8>, from: usize, len: usize) {
    if from < len {
        let end = len.min(buf.len());
        if from < end {
            buf[from..end].fill(0);
        }
        if buf.len() < len {
            buf.resize(len, 0);
        }
    }
}

fn put(buf: &mut Vec<u8>, off: usize, data: &[u8]) {
    let end = off + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[off..end].copy_from_slice(data);
}

impl Inode {
    fn write(&mut self, off: usize, data: &[u8], lost: bool) {
        put(&mut self.data, off, data);
        self.maps.retain(|m| m.strong_count() > 0);
        for map in self.maps.iter().filter_map(Weak::upgrade) {
            if off < map.len() {
                let n = (map.len() - off).min(data.len());
                // In bounds by construction; a region never fails otherwise.
                let _ = map.write(off, &data[..n]);
            }
        }
        self.pending.push(Change::Write {
            off: len_u64(off),
            data: data.to_vec(),
            lost,
        });
    }

    /// A failed writeback as Linux handles it: the pending writes are
    /// forgotten (still readable in `data`, never made durable).
    fn drop_pending_writes(&mut self) {
        self.dropped_writes = true;
        self.pending.retain(|c| matches!(c, Change::Len(_)));
    }

    fn set_len(&mut self, len: usize) {
        self.data.resize(len, 0);
        self.pending.push(Change::Len(len_u64(len)));
    }

    /// Makes the volatile changes durable (`all`: shrinks too).
    fn sync(&mut self, all: bool) {
        let mut cur = self.synced_len as usize;
        for change in self.pending.drain(..) {
            match change {
                Change::Write { off, data, .. } => {
                    let off = off as usize;
                    grow(&mut self.durable, cur, off);
                    put(&mut self.durable, off, &data);
                    cur = cur.max(off + data.len());
                }
                Change::Len(len) => {
                    let len = len as usize;
                    if len < cur {
                        if all {
                            self.durable.truncate(len);
                        }
                    } else {
                        grow(&mut self.durable, cur, len);
                    }
                    cur = len;
                }
            }
        }
        if all {
            self.durable.truncate(cur);
        }
        self.synced_len = len_u64(cur);
        debug_assert_eq!(cur, self.data.len(), "volatile changes were all recorded");
        debug_assert!(
            self.dropped_writes || self.durable[..cur] == self.data[..],
            "durable matches data"
        );
    }

    /// The contents after a power loss, the fate of each volatile write
    /// drawn from `rng`.
    fn survivor(&self, rng: &mut SplitMix) -> Vec<u8> {
        let mut out = self.durable.clone();
        let writes: Vec<(u64, &[u8])> = self
            .pending
            .iter()
            .filter_map(|c| match c {
                Change::Write { off, data, lost } if !lost => Some((*off, data.as_slice())),
                _ => None,
            })
            .collect();
        if writes.is_empty() {
            return out;
        }
        match rng.below(4) {
            0 => {
                for &(off, data) in &writes {
                    put(&mut out, off as usize, data);
                }
            }
            1 => {}
            2 => {
                // Written back in order, power cut during write `cut`.
                let cut = rng.below(len_u64(writes.len())) as usize;
                for &(off, data) in &writes[..cut] {
                    put(&mut out, off as usize, data);
                }
                let (off, data) = writes[cut];
                let end = off + len_u64(data.len());
                let first = (off / SECTOR + 1) * SECTOR;
                let keep_to = if first >= end {
                    off
                } else {
                    first + rng.below((end - 1 - first) / SECTOR + 1) * SECTOR
                };
                put(&mut out, off as usize, &data[..(keep_to - off) as usize]);
            }
            _ => {
                // Each sector independently as of some point in time: the
                // writes touching it up to some count applied, in order.
                let mut keep: BTreeMap<u64, u64> = BTreeMap::new();
                for &(off, data) in &writes {
                    for s in sectors(off, data.len()) {
                        *keep.entry(s).or_default() += 1;
                    }
                }
                for k in keep.values_mut() {
                    *k = rng.below(*k + 1);
                }
                for &(off, data) in &writes {
                    for s in sectors(off, data.len()) {
                        let keep = keep.get_mut(&s).expect("counted");
                        if *keep > 0 {
                            *keep -= 1;
                            let from = off.max(s * SECTOR);
                            let to = (off + len_u64(data.len())).min((s + 1) * SECTOR);
                            let part = &data[(from - off) as usize..(to - off) as usize];
                            put(&mut out, from as usize, part);
                        }
                    }
                }
            }
        }
        out
    }
}

/// The sectors that `len` bytes at `off` touch.
fn sectors(off: u64, len: usize) -> std::ops::Range<u64> {
    if len == 0 {
        return 0..0;
    }
    off / SECTOR..(off + len_u64(len) - 1) / SECTOR + 1
}

/// splitmix64: a small deterministic generator.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Default)]
struct State {
    dirs: BTreeSet<PathBuf>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    locks: BTreeSet<PathBuf>,
    syncs: u64,
    freeze_at: Option<u64>,
    frozen: bool,
    fault: Option<Fault>,
    counts: [u64; 6],
    /// Fail syncs as Linux does (see [`SimFs::kernel_sync_errors`]).
    kernel_sync_errors: bool,
    /// A sync or write fault hits only that operation on this inode (see
    /// [`SimFs::faults_only_on`]).
    fault_ino: Option<u64>,
    /// Syncs running now, per inode, and the most ever seen on one inode.
    syncs_in_flight: BTreeMap<u64, usize>,
    max_syncs_in_flight: usize,
    /// Ranges whose writeback was started ([`VfsFile::start_writeback`]).
    writebacks: Vec<(u64, u64)>,
    /// What files answer to [`VfsFile::writes_by_syscall`] (see
    /// [`SimFs::writes_by_syscall`]).
    writes_by_syscall: bool,
}

impl State {
    /// Counts an operation and fails it if a fault says so.
    fn check(&mut self, op: FaultOp) -> io::Result<()> {
        let count = self.counts[op.index()];
        self.counts[op.index()] += 1;
        match self.fault {
            Some(f) if f.op == op && (count == f.at || (f.forever && count > f.at)) => {
                Err(io::Error::new(
                    f.kind,
                    format!("simulated {op:?} fault (operation #{count})"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Counts an operation on inode `ino` and fails it if a fault says
    /// so: as [`State::check`], unless a fault of this kind is meant for
    /// one file ([`SimFs::faults_only_on`]); then the first operation of
    /// the kind on that file from count `at` on fails (and every later one
    /// there, if `forever`).
    fn check_on(&mut self, op: FaultOp, ino: u64) -> io::Result<()> {
        match (self.fault_ino, self.fault) {
            (Some(only), Some(f)) if f.op == op => {
                let count = self.counts[op.index()];
                self.counts[op.index()] += 1;
                if only == ino && count >= f.at {
                    if !f.forever {
                        self.fault = None;
                    }
                    return Err(io::Error::new(
                        f.kind,
                        format!("simulated {op:?} fault (operation #{count})"),
                    ));
                }
                Ok(())
            }
            _ => self.check(op),
        }
    }

    /// A sync of inode `ino` that passed fault injection: counts it and
    /// says whether it makes anything durable.
    fn sync_point(&mut self, ino: u64) -> io::Result<bool> {
        self.check_on(FaultOp::Sync, ino)?;
        if self.freeze_at.is_some_and(|at| self.syncs >= at) {
            self.frozen = true;
        }
        self.syncs += 1;
        Ok(!self.frozen)
    }

    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "inode is gone"))
    }

    fn new_inode(&mut self, data: Vec<u8>) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        let len = len_u64(data.len());
        self.inodes.insert(
            ino,
            Inode {
                durable: data.clone(),
                data,
                synced_len: len,
                ..Inode::default()
            },
        );
        ino
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if self.dirs.contains(p) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory for {}", path.display()),
            )),
        }
    }
}

#[derive(Debug, Default)]
struct Gate {
    paused: bool,
    waiting: usize,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    gate: Mutex<Gate>,
    gate_cv: Condvar,
}

impl Shared {
    /// Blocks while syncs are paused (a test hook, outside the state lock).
    fn gate(&self) {
        let mut g = self.gate.lock();
        if g.paused {
            g.waiting += 1;
            self.gate_cv.notify_all();
            while g.paused {
                self.gate_cv.wait(&mut g);
            }
            g.waiting -= 1;
        }
    }
}

/// An in-memory file system that simulates power loss and I/O faults.
/// Clones share the same files.
#[derive(Clone)]
pub struct SimFs {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.state.lock();
        f.debug_struct("SimFs")
            .field("files", &st.names.keys().collect::<Vec<_>>())
            .field("syncs", &st.syncs)
            .field("fault", &st.fault)
            .finish_non_exhaustive()
    }
}

impl Default for SimFs {
    fn default() -> SimFs {
        SimFs::new()
    }
}

impl SimFs {
    /// An empty file system (only `/` exists).
    pub fn new() -> SimFs {
        let fs = SimFs {
            shared: Arc::new(Shared::default()),
        };
        fs.shared.state.lock().dirs.insert(PathBuf::from("/"));
        fs
    }

    /// A new file system holding only what would survive a power loss now:
    /// per file the last synced contents, plus each write made since that
    /// file's last sync independently kept, dropped, or torn (a random
    /// prefix of it kept, at 512-byte sector granularity), chosen
    /// deterministically from `seed`. Directory operations (create, rename,
    /// remove) not followed by a sync_dir of their directory are lost (a
    /// created file vanishes, a rename is undone, a removed file comes
    /// back). set_len/allocate count as metadata made durable by the file's
    /// sync_all (and sync_data for growth). Locks are not carried over.
    ///
    /// "Independently" is at sector granularity: each sector holds the
    /// writes touching it up to some point, so writes to different sectors
    /// survive in any combination, writes to one sector only in order (see
    /// the module docs for the four policies a seed picks from).
    pub fn power_loss(&self, seed: u64) -> SimFs {
        let st = self.shared.state.lock();
        let mut rng = SplitMix(seed ^ 0x0005_1af5_0000_0000);
        let mut new = State {
            dirs: st.dirs.clone(),
            writes_by_syscall: st.writes_by_syscall,
            ..State::default()
        };
        let mut moved: BTreeMap<u64, u64> = BTreeMap::new();
        for (path, ino) in &st.durable_names {
            let new_ino = match moved.get(ino) {
                Some(&n) => n,
                None => {
                    let data = st
                        .inodes
                        .get(ino)
                        .map(|i| i.survivor(&mut rng))
                        .unwrap_or_default();
                    let n = new.new_inode(data);
                    moved.insert(*ino, n);
                    n
                }
            };
            new.names.insert(path.clone(), new_ino);
            new.durable_names.insert(path.clone(), new_ino);
        }
        SimFs {
            shared: Arc::new(Shared {
                state: Mutex::new(new),
                ..Shared::default()
            }),
        }
    }

    /// Number of successful sync_data + sync_all + sync_dir calls so far.
    pub fn syncs(&self) -> u64 {
        self.shared.state.lock().syncs
    }

    /// After `n` more successful syncs, syncs still return Ok but make
    /// nothing durable any more (the machine "lost power" at that sync
    /// point; everything after is volatile). `None` clears it.
    pub fn freeze_after_syncs(&self, n: Option<u64>) {
        let mut st = self.shared.state.lock();
        st.freeze_at = n.map(|n| st.syncs.saturating_add(n));
        st.frozen = false;
        for inode in st.inodes.values_mut() {
            for change in &mut inode.pending {
                if let Change::Write { lost, .. } = change {
                    *lost = false;
                }
            }
        }
    }

    /// Whether a frozen sync point has been reached (syncs no longer make
    /// anything durable).
    pub fn frozen(&self) -> bool {
        self.shared.state.lock().frozen
    }

    /// Inject an I/O fault (see [`Fault`]). `None` clears it.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared.state.lock().fault = fault;
    }

    /// Makes a [`FaultOp::Sync`] or [`FaultOp::Write`] fault hit only
    /// syncs or writes of the file at `path` (`None`: any file, the
    /// default): the first of them from operation `at` on fails (every
    /// one, if `forever`). For a test whose fault is meant for one file
    /// while other threads write and sync others (the queue's upkeep
    /// thread preparing spare segments).
    pub fn faults_only_on(&self, path: Option<&Path>) -> io::Result<()> {
        let mut st = self.shared.state.lock();
        st.fault_ino = match path {
            Some(p) => Some(*st.names.get(p).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no file {}", p.display()))
            })?),
            None => None,
        };
        Ok(())
    }

    /// How many operations of this kind ran so far (for sizing fault loops).
    pub fn op_count(&self, op: FaultOp) -> u64 {
        self.shared.state.lock().counts[op.index()]
    }

    /// Test hook: while paused, every sync call blocks before doing
    /// anything (before fault injection and counting), so a test can line
    /// up concurrent callers behind one sync. Unpausing releases them.
    pub fn pause_syncs(&self, paused: bool) {
        let mut g = self.shared.gate.lock();
        g.paused = paused;
        self.shared.gate_cv.notify_all();
    }

    /// Makes a failed sync behave as on Linux (fsyncgate): the file's
    /// unsynced writes are dropped (they stay readable but never become
    /// durable), the error is reported to that one call, and the next sync
    /// succeeds. Off by default (a failed sync keeps the writes volatile).
    pub fn kernel_sync_errors(&self, on: bool) {
        self.shared.state.lock().kernel_sync_errors = on;
    }

    /// Makes every file answer `on` to [`VfsFile::writes_by_syscall`], as
    /// the real file system's files do where stores into a map are not
    /// safe (btrfs, overlayfs): the log then takes the path it takes there
    /// (a batch staged for one write). Nothing else changes. Off by
    /// default.
    pub fn writes_by_syscall(&self, on: bool) {
        self.shared.state.lock().writes_by_syscall = on;
    }

    /// The most syncs ever running at once on one file.
    pub fn max_syncs_in_flight(&self) -> usize {
        self.shared.state.lock().max_syncs_in_flight
    }

    /// The `(offset, length)` of every writeback started so far (on any
    /// file; starting writeback changes nothing else here: a power loss
    /// still keeps only what was synced).
    pub fn writebacks(&self) -> Vec<(u64, u64)> {
        self.shared.state.lock().writebacks.clone()
    }

    /// How many sync calls are blocked by [`SimFs::pause_syncs`] now.
    pub fn paused_syncs(&self) -> usize {
        self.shared.gate.lock().waiting
    }

    /// Blocks until at least `n` sync calls are blocked by
    /// [`SimFs::pause_syncs`] (no timeout: use only when they will come).
    pub fn wait_paused_syncs(&self, n: usize) {
        let mut g = self.shared.gate.lock();
        while g.waiting < n {
            self.shared.gate_cv.wait(&mut g);
        }
    }

    /// The current contents of a file (what a reader sees now).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.shared.state.lock();
        let ino = st.names.get(path)?;
        st.inodes.get(ino).map(|i| i.data.clone())
    }
}

/// A file opened on a [`SimFs`].
struct SimFile {
    shared: Arc<Shared>,
    ino: u64,
    path: PathBuf,
    map: OnceLock<Arc<Region>>,
    mapped: AtomicBool,
}

impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimFile({}, inode {})", self.path.display(), self.ino)
    }
}

impl SimFile {
    fn sync(&self, all: bool) -> io::Result<()> {
        {
            let mut st = self.shared.state.lock();
            let n = st.syncs_in_flight.entry(self.ino).or_insert(0);
            *n += 1;
            let n = *n;
            st.max_syncs_in_flight = st.max_syncs_in_flight.max(n);
        }
        self.shared.gate();
        let mut st = self.shared.state.lock();
        if let Some(n) = st.syncs_in_flight.get_mut(&self.ino) {
            *n -= 1;
        }
        match st.sync_point(self.ino) {
            Ok(true) => st.inode(self.ino)?.sync(all),
            Ok(false) => {}
            Err(e) => {
                if st.kernel_sync_errors {
                    // Linux marks the dirty pages clean after a writeback
                    // error and reports it once: the writes stay readable
                    // but never reach the disk, and the next sync succeeds.
                    st.inode(self.ino)?.drop_pending_writes();
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

impl VfsFile for SimFile {
    fn writes_by_syscall(&self) -> bool {
        self.shared.state.lock().writes_by_syscall
    }

    fn start_writeback(&self, off: u64, len: u64) -> io::Result<()> {
        self.shared.state.lock().writebacks.push((off, len));
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = self.shared.state.lock();
        Ok(len_u64(st.inode(self.ino)?.data.len()))
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let mut st = self.shared.state.lock();
        let data = &st.inode(self.ino)?.data;
        let off = to_usize(off)?;
        let end = off
            .checked_add(buf.len())
            .filter(|&e| e <= data.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(&data[off..end]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut st = self.shared.state.lock();
        let start = to_usize(off)?;
        start
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past 2^64"))?;
        let lost = st.frozen;
        if let Err(e) = st.check_on(FaultOp::Write, self.ino) {
            let half = &buf[..buf.len() / 2];
            if !half.is_empty() {
                st.inode(self.ino)?.write(start, half, lost);
            }
            return Err(e);
        }
        st.inode(self.ino)?.write(start, buf, lost);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.mapped.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a mapped file is never resized",
            ));
        }
        let mut st = self.shared.state.lock();
        let len = to_usize(len)?;
        st.check(FaultOp::Write)?;
        st.inode(self.ino)?.set_len(len);
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut st = self.shared.state.lock();
        let len = to_usize(len)?;
        st.check(FaultOp::Allocate)?;
        let inode = st.inode(self.ino)?;
        if inode.data.len() < len {
            inode.set_len(len);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync(false)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync(true)
    }

    fn map(&self, len: u64) -> io::Result<super::Mapping> {
        self.map_region(len).map(super::Mapping)
    }
}

impl SimFile {
    fn map_region(&self, len: u64) -> io::Result<Arc<Region>> {
        if let Some(map) = self.map.get() {
            return Ok(map.clone());
        }
        let mut st = self.shared.state.lock();
        let inode = st.inode(self.ino)?;
        let len_usize = to_usize(len)?;
        if inode.data.len() < len_usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot map {len} bytes of a {}-byte file", inode.data.len()),
            ));
        }
        let region = Arc::new(Region::heap(len_usize));
        region.write(0, &inode.data[..len_usize])?;
        inode.maps.push(Arc::downgrade(&region));
        self.mapped.store(true, Ordering::Release);
        Ok(self.map.get_or_init(|| region).clone())
    }
}

/// The guard of a lock taken on a [`SimFs`].
struct SimLock {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.shared.state.lock().locks.remove(&self.path);
    }
}

impl SimFs {
    fn file(&self, ino: u64, path: &Path) -> Box<dyn VfsFile> {
        Box::new(SimFile {
            shared: self.shared.clone(),
            ino,
            path: path.to_path_buf(),
            map: OnceLock::new(),
            mapped: AtomicBool::new(false),
        })
    }
}

impl Vfs for SimFs {
    fn create_dir_all(&self, dir: &Path, _mode: u32) -> io::Result<()> {
        let mut st = self.shared.state.lock();
        for d in dir.ancestors() {
            if st.names.contains_key(d) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a file", d.display()),
                ));
            }
            if !d.as_os_str().is_empty() {
                st.dirs.insert(d.to_path_buf());
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.shared.state.lock();
        if !st.dirs.contains(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", dir.display()),
            ));
        }
        let files = st.names.keys();
        let dirs = st.dirs.iter().filter(|d| d.as_path() != dir);
        Ok(files
            .chain(dirs)
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect())
    }

    fn create(&self, path: &Path, _mode: u32) -> io::Result<Box<dyn VfsFile>> {
        let mut st = self.shared.state.lock();
        st.check(FaultOp::Create)?;
        st.parent_exists(path)?;
        if st.names.contains_key(path) || st.dirs.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let ino = st.new_inode(Vec::new());
        st.names.insert(path.to_path_buf(), ino);
        drop(st);
        Ok(self.file(ino, path))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let st = self.shared.state.lock();
        let ino = *st.names.get(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {}", path.display()),
            )
        })?;
        drop(st);
        Ok(self.file(ino, path))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.shared.state.lock();
        st.check(FaultOp::Remove)?;
        match st.names.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {}", path.display()),
            )),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.shared.state.lock();
        st.check(FaultOp::Rename)?;
        st.parent_exists(to)?;
        if st.dirs.contains(to) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", to.display()),
            ));
        }
        let ino = st.names.remove(from).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {}", from.display()),
            )
        })?;
        st.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.shared.gate();
        let mut st = self.shared.state.lock();
        if !st.dirs.contains(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", dir.display()),
            ));
        }
        if st.sync_point(u64::MAX)? {
            st.durable_names.retain(|p, _| p.parent() != Some(dir));
            let now: Vec<(PathBuf, u64)> = st
                .names
                .iter()
                .filter(|(p, _)| p.parent() == Some(dir))
                .map(|(p, i)| (p.clone(), *i))
                .collect();
            st.durable_names.extend(now);
        }
        Ok(())
    }

    fn lock(&self, path: &Path, _mode: u32) -> io::Result<Box<dyn Any + Send + Sync>> {
        let mut st = self.shared.state.lock();
        st.parent_exists(path)?;
        if st.locks.contains(path) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if !st.names.contains_key(path) {
            let ino = st.new_inode(Vec::new());
            st.names.insert(path.to_path_buf(), ino);
        }
        st.locks.insert(path.to_path_buf());
        Ok(Box::new(SimLock {
            shared: self.shared.clone(),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn fs_with_dir() -> SimFs {
        let fs = SimFs::new();
        fs.create_dir_all(&p("/d"), 0o700).unwrap();
        fs
    }

    /// Creates `/d/name` with `data`, synced and its name durable.
    fn durable_file(fs: &SimFs, name: &str, data: &[u8]) -> Box<dyn VfsFile> {
        let f = fs.create(&p(&format!("/d/{name}")), 0o600).unwrap();
        f.write_at(data, 0).unwrap();
        f.sync_all().unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        f
    }

    #[test]
    fn synced_data_always_survives() {
        let fs = fs_with_dir();
        let _f = durable_file(&fs, "a", b"hello world");
        for seed in 0..50 {
            let after = fs.power_loss(seed);
            assert_eq!(after.read_file(&p("/d/a")).unwrap(), b"hello world");
            assert_eq!(after.list(&p("/d")).unwrap(), vec!["a".to_string()]);
        }
    }

    #[test]
    fn unsynced_writes_are_kept_dropped_or_torn_at_sectors() {
        let fs = fs_with_dir();
        let f = durable_file(&fs, "a", &[1u8; 100]);
        // One unsynced write of 3 sectors and a bit, starting mid-sector.
        let data = vec![7u8; 1800];
        f.write_at(&data, 300).unwrap();
        assert_eq!(fs.read_file(&p("/d/a")).unwrap().len(), 2100);
        let (mut kept, mut dropped, mut prefix, mut holes) = (0, 0, 0, 0);
        for seed in 0..400 {
            let got = fs.power_loss(seed).read_file(&p("/d/a")).unwrap();
            assert_eq!(&got[..100], &[1u8; 100][..], "synced bytes survive");
            assert!(got[100..got.len().min(300)].iter().all(|&b| b == 0));
            // Every sector is all old or all new.
            let mut new_sectors = Vec::new();
            for s in 0..5 {
                let range = (s * 512).max(300)..((s + 1) * 512).min(2100);
                let bytes = got.get(range.clone()).unwrap_or_default();
                let new = !bytes.is_empty() && bytes.iter().all(|&b| b == 7);
                assert!(
                    new || bytes.iter().all(|&b| b == 0),
                    "sector {s}: {bytes:?}"
                );
                new_sectors.push(new);
            }
            let n = new_sectors.iter().filter(|&&b| b).count();
            let is_prefix = new_sectors.iter().skip_while(|&&b| b).all(|&b| !b);
            match n {
                0 => dropped += 1,
                5 => kept += 1,
                _ if is_prefix => prefix += 1,
                _ => holes += 1,
            }
            if n == 0 {
                assert_eq!(got.len(), 100);
            }
        }
        assert!(
            kept > 0 && dropped > 0 && prefix > 0 && holes > 0,
            "{kept} {dropped} {prefix} {holes}"
        );
    }

    #[test]
    fn one_sector_never_goes_back_in_time() {
        let fs = fs_with_dir();
        let f = durable_file(&fs, "a", &[0u8; 512]);
        f.write_at(b"first", 0).unwrap();
        f.write_at(b"second", 100).unwrap();
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            let got = fs.power_loss(seed).read_file(&p("/d/a")).unwrap();
            let one = &got[..5] == b"first";
            let two = &got[100..106] == b"second";
            assert!(one || !two, "the later write survived without the earlier");
            seen.insert((one, two));
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn writes_to_different_sectors_are_independent() {
        let fs = fs_with_dir();
        let f = durable_file(&fs, "a", &[0u8; 8 * 512]);
        for i in 0..8u8 {
            f.write_at(&[i + 1], u64::from(i) * 512).unwrap();
        }
        let mut patterns = BTreeSet::new();
        for seed in 0..300 {
            let got = fs.power_loss(seed).read_file(&p("/d/a")).unwrap();
            assert_eq!(got.len(), 8 * 512);
            let marks: Vec<u8> = (0..8).map(|i| got[i * 512]).collect();
            for (i, &m) in marks.iter().enumerate() {
                assert!(m == 0 || m == i as u8 + 1);
            }
            patterns.insert(marks);
        }
        // All kept, none kept, and plenty in between, in any combination.
        assert!(patterns.contains(&vec![0u8; 8]));
        let all: Vec<u8> = (1..=8).collect();
        assert!(patterns.contains(&all));
        assert!(patterns.iter().any(|m| m[0] == 0 && m[7] == 8));
        assert!(patterns.len() > 20, "{}", patterns.len());
        // Deterministic.
        assert_eq!(
            fs.power_loss(42).read_file(&p("/d/a")),
            fs.power_loss(42).read_file(&p("/d/a"))
        );
        // A later sync makes them all durable.
        f.sync_data().unwrap();
        for seed in 0..20 {
            let got = fs.power_loss(seed).read_file(&p("/d/a")).unwrap();
            let marks: Vec<u8> = (0..8).map(|i| got[i * 512]).collect();
            assert_eq!(marks, all);
        }
    }

    #[test]
    fn directory_changes_need_sync_dir() {
        let fs = fs_with_dir();
        let _a = durable_file(&fs, "a", b"A");
        let _b = durable_file(&fs, "b", b"B");
        // Not synced: created file vanishes, removal and rename are undone.
        let c = fs.create(&p("/d/c"), 0o600).unwrap();
        c.write_at(b"C", 0).unwrap();
        c.sync_all().unwrap();
        fs.remove(&p("/d/a")).unwrap();
        fs.rename(&p("/d/b"), &p("/d/b2")).unwrap();
        let mut now = fs.list(&p("/d")).unwrap();
        now.sort();
        assert_eq!(now, ["b2", "c"]);
        for seed in 0..10 {
            let after = fs.power_loss(seed);
            let mut names = after.list(&p("/d")).unwrap();
            names.sort();
            assert_eq!(names, ["a", "b"]);
            assert_eq!(after.read_file(&p("/d/a")).unwrap(), b"A");
            assert_eq!(after.read_file(&p("/d/b")).unwrap(), b"B");
        }
        fs.sync_dir(&p("/d")).unwrap();
        let after = fs.power_loss(1);
        let mut names = after.list(&p("/d")).unwrap();
        names.sort();
        assert_eq!(names, ["b2", "c"]);
        assert_eq!(after.read_file(&p("/d/b2")).unwrap(), b"B");
        assert_eq!(after.read_file(&p("/d/c")).unwrap(), b"C");
    }

    #[test]
    fn rename_over_keeps_old_target_until_sync_dir() {
        let fs = fs_with_dir();
        let _old = durable_file(&fs, "x", b"old");
        let t = fs.create(&p("/d/x.tmp"), 0o600).unwrap();
        t.write_at(b"new", 0).unwrap();
        t.sync_all().unwrap();
        fs.rename(&p("/d/x.tmp"), &p("/d/x")).unwrap();
        assert_eq!(fs.read_file(&p("/d/x")).unwrap(), b"new");
        assert_eq!(fs.power_loss(3).read_file(&p("/d/x")).unwrap(), b"old");
        fs.sync_dir(&p("/d")).unwrap();
        let after = fs.power_loss(3);
        assert_eq!(after.read_file(&p("/d/x")).unwrap(), b"new");
        assert_eq!(after.list(&p("/d")).unwrap(), ["x"]);
    }

    #[test]
    fn lengths_are_metadata() {
        let fs = fs_with_dir();
        let f = durable_file(&fs, "a", &[5u8; 1000]);
        // Allocation not synced: lost.
        f.allocate(4096).unwrap();
        assert_eq!(f.len().unwrap(), 4096);
        assert_eq!(fs.power_loss(0).read_file(&p("/d/a")).unwrap().len(), 1000);
        // Growth is made durable by sync_data.
        f.sync_data().unwrap();
        assert_eq!(fs.power_loss(0).read_file(&p("/d/a")).unwrap().len(), 4096);
        // A shrink needs sync_all: after sync_data the old bytes come back.
        f.set_len(10).unwrap();
        f.sync_data().unwrap();
        let got = fs.power_loss(0).read_file(&p("/d/a")).unwrap();
        assert_eq!(got.len(), 4096);
        assert_eq!(&got[..1000], &[5u8; 1000][..]);
        // Growing again reads zeros past the cut, and those are durable.
        f.set_len(20).unwrap();
        f.sync_data().unwrap();
        let got = fs.power_loss(0).read_file(&p("/d/a")).unwrap();
        assert_eq!(&got[..10], &[5u8; 10][..]);
        assert_eq!(&got[10..20], &[0u8; 10][..]);
        assert_eq!(&got[20..1000], &[5u8; 980][..]);
        f.sync_all().unwrap();
        let got = fs.power_loss(0).read_file(&p("/d/a")).unwrap();
        assert_eq!(got.len(), 20);
        // A write past the end extends the file with zeros between.
        f.write_at(b"z", 30).unwrap();
        f.sync_data().unwrap();
        let got = fs.power_loss(0).read_file(&p("/d/a")).unwrap();
        assert_eq!(got.len(), 31);
        assert_eq!(&got[20..30], &[0u8; 10][..]);
    }

    #[test]
    fn freeze_makes_later_syncs_and_writes_volatile() {
        let fs = fs_with_dir();
        let f = durable_file(&fs, "a", b"");
        let base = fs.syncs();
        fs.freeze_after_syncs(Some(1));
        f.write_at(b"one", 0).unwrap();
        f.sync_data().unwrap(); // real
        f.write_at(b"two", 3).unwrap(); // before the frozen sync: may survive
        f.sync_data().unwrap(); // frozen: returns Ok, counts
        assert!(fs.frozen());
        f.write_at(b"three", 6).unwrap(); // after: lost
        f.sync_data().unwrap();
        let g = fs.create(&p("/d/g"), 0o600).unwrap();
        g.sync_all().unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        assert_eq!(fs.syncs(), base + 5);
        let mut seen = BTreeSet::new();
        for seed in 0..100 {
            let after = fs.power_loss(seed);
            let got = after.read_file(&p("/d/a")).unwrap();
            assert!(got == b"one" || got == b"onetwo", "{got:?}");
            seen.insert(got);
            assert_eq!(after.list(&p("/d")).unwrap(), ["a"]);
        }
        assert_eq!(seen.len(), 2);
        fs.freeze_after_syncs(None);
        f.sync_data().unwrap();
        assert_eq!(
            fs.power_loss(0).read_file(&p("/d/a")).unwrap(),
            b"onetwothree"
        );
    }

    #[test]
    fn faults_fail_the_chosen_operations() {
        let fs = fs_with_dir();
        let f = durable_file(&fs, "a", b"");
        let w = fs.op_count(FaultOp::Write);
        fs.set_fault(Some(Fault {
            op: FaultOp::Write,
            at: w + 1,
            forever: false,
            kind: io::ErrorKind::StorageFull,
        }));
        f.write_at(b"ok", 0).unwrap();
        let e = f.write_at(b"abcd", 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        // A failed write leaves the first half of its bytes.
        assert_eq!(fs.read_file(&p("/d/a")).unwrap(), b"okab");
        f.write_at(b"!", 4).unwrap();
        assert_eq!(fs.op_count(FaultOp::Write), w + 3);

        // A failed sync makes nothing durable and does not count.
        let s = fs.syncs();
        fs.set_fault(Some(Fault {
            op: FaultOp::Sync,
            at: fs.op_count(FaultOp::Sync),
            forever: true,
            kind: io::ErrorKind::Other,
        }));
        assert!(f.sync_data().is_err());
        assert!(f.sync_all().is_err());
        assert!(fs.sync_dir(&p("/d")).is_err());
        assert_eq!(fs.syncs(), s);
        for seed in 0..20 {
            let got = fs.power_loss(seed).read_file(&p("/d/a")).unwrap();
            assert!(got.len() <= 5);
        }
        let kept_all =
            (0..50).any(|seed| fs.power_loss(seed).read_file(&p("/d/a")).unwrap() == b"okab!");
        assert!(
            kept_all,
            "volatile writes stay volatile after a failed sync"
        );
        fs.set_fault(None);
        f.sync_data().unwrap();
        assert_eq!(fs.power_loss(0).read_file(&p("/d/a")).unwrap(), b"okab!");

        for (op, run) in [
            (FaultOp::Create, 0),
            (FaultOp::Rename, 1),
            (FaultOp::Remove, 2),
            (FaultOp::Allocate, 3),
        ] {
            fs.set_fault(Some(Fault {
                op,
                at: fs.op_count(op),
                forever: false,
                kind: io::ErrorKind::Other,
            }));
            let r = match run {
                0 => fs.create(&p("/d/n"), 0o600).map(|_| ()),
                1 => fs.rename(&p("/d/a"), &p("/d/b")),
                2 => fs.remove(&p("/d/a")),
                _ => f.allocate(1 << 20),
            };
            assert!(r.is_err(), "{op:?}");
            let mut names = fs.list(&p("/d")).unwrap();
            names.sort();
            assert_eq!(names, ["a"], "{op:?} changed nothing");
            assert_eq!(f.len().unwrap(), 5);
        }
        // Not forever: the next one works.
        fs.create(&p("/d/n"), 0o600).unwrap();
        f.allocate(64).unwrap();
    }

    #[test]
    fn a_kernel_style_sync_error_drops_the_writes_once() {
        let fs = fs_with_dir();
        let f = durable_file(&fs, "a", b"old!");
        fs.kernel_sync_errors(true);
        f.write_at(b"new!", 0).unwrap();
        fs.set_fault(Some(Fault {
            op: FaultOp::Sync,
            at: fs.op_count(FaultOp::Sync),
            forever: false,
            kind: io::ErrorKind::Other,
        }));
        assert!(f.sync_data().is_err());
        // Reported once: the next sync succeeds, the write stays readable
        // but was dropped.
        f.sync_data().unwrap();
        assert_eq!(fs.read_file(&p("/d/a")).unwrap(), b"new!");
        let after = fs.power_loss(1);
        assert_eq!(after.read_file(&p("/d/a")).unwrap(), b"old!");
    }

    #[test]
    fn maps_follow_writes() {
        let fs = fs_with_dir();
        let f = fs.create(&p("/d/s"), 0o600).unwrap();
        f.allocate(4096).unwrap();
        f.write_at(b"head", 0).unwrap();
        assert!(f.map(8192).is_err());
        let r = f.map(4096).unwrap().0;
        assert_eq!(r.bytes(0, 4), None, "nothing published yet");
        r.publish(4);
        assert_eq!(r.bytes(0, 4), Some(&b"head"[..]));
        f.write_at(b"body", 100).unwrap();
        r.publish(104);
        assert_eq!(r.bytes(100, 4), Some(&b"body"[..]));
        assert!(Arc::ptr_eq(&r, &f.map(4096).unwrap().0));
        assert!(f.set_len(10).is_err(), "mapped files are not resized");
        // Another handle maps the same bytes.
        let g = fs.open(&p("/d/s")).unwrap();
        let r2 = g.map(4096).unwrap().0;
        r2.publish(104);
        assert_eq!(r2.bytes(100, 4), Some(&b"body"[..]));
        g.write_at(b"more", 200).unwrap();
        r.publish(204);
        assert_eq!(r.bytes(200, 4), Some(&b"more"[..]));
        let mut buf = [0u8; 4];
        f.read_at(&mut buf, 200).unwrap();
        assert_eq!(&buf, b"more");
        assert!(f.read_at(&mut buf, 4094).is_err());
    }

    #[test]
    fn locks_exclude_and_are_not_carried_over() {
        let fs = fs_with_dir();
        let l = fs.lock(&p("/d/LOCK"), 0o600).unwrap();
        let e = fs.lock(&p("/d/LOCK"), 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        fs.sync_dir(&p("/d")).unwrap();
        let after = fs.power_loss(0);
        drop(after.lock(&p("/d/LOCK"), 0o600).unwrap());
        drop(l);
        drop(fs.lock(&p("/d/LOCK"), 0o600).unwrap());
    }

    #[test]
    fn missing_things_are_not_found() {
        let fs = SimFs::new();
        assert!(fs.list(&p("/nope")).is_err());
        assert!(fs.create(&p("/nope/x"), 0o600).is_err());
        assert!(fs.open(&p("/x")).is_err());
        assert!(fs.remove(&p("/x")).is_err());
        fs.create(&p("/x"), 0o600).unwrap();
        assert_eq!(
            fs.create(&p("/x"), 0o600).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
    }

    #[test]
    fn paused_syncs_block_until_released() {
        let fs = fs_with_dir();
        let f: Arc<dyn VfsFile> = Arc::from(durable_file(&fs, "a", b"x"));
        fs.pause_syncs(true);
        let t = {
            let f = f.clone();
            std::thread::spawn(move || f.sync_data())
        };
        fs.wait_paused_syncs(1);
        assert_eq!(fs.paused_syncs(), 1);
        fs.pause_syncs(false);
        t.join().unwrap().unwrap();
        assert_eq!(fs.paused_syncs(), 0);
    }
}
