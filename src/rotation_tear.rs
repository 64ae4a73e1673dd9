//! A power cut across a rotation: the newest segment may hold records
//! written back before the end of the segment sealed before it.
//!
//! Rotation syncs nothing under the queue lock (see `commit`): the sealed
//! segment, the directory and the new segment are synced by the next
//! group-commit leader, in that order, before anything in the new segment
//! is published, and rotation leaves a segment only once a leader synced
//! it. So after a power cut:
//!
//! * every segment but the newest two is durable, and so are the name and
//!   header of the newest but one;
//! * the newest but one may end in a torn tail, while the kernel wrote back
//!   pages of the newest on its own;
//! * the newest may have a name but no header (all zeros): its header had
//!   not reached the disk, so nothing in it was published.
//!
//! Recovery therefore
//! * drops a newest segment whose header is all zeros ([`drop_unborn`]);
//! * treats the newest but one like the last segment: a damaged or missing
//!   tail is torn (cut, and the newest segment, none of whose records was
//!   published, is dropped) unless an intact later frame, in it or in the
//!   newest segment, proves through its sync lag that the first lost
//!   record had been durable ([`newest_proves`]); then it is corruption, as
//!   in any sealed segment.
//!
//! docs/format.md, "Torn across a rotation", states the rule.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::frame;
use crate::format::header::SEGMENT_HEADER_LEN;
use crate::format::resync;
use crate::segment::{self, Segment};
use crate::stats::RecoveryReport;
use crate::vfs::Vfs;

/// The newest segment, as seen while the one before it is scanned.
#[derive(Clone, Copy, Debug)]
pub struct Newest<'a> {
    pub id: u32,
    pub path: &'a Path,
}

/// Drops the newest of `ids` if there are two or more and its header is
/// all zeros (it never reached the disk): removed, directory synced, its
/// written bytes counted as torn.
pub fn drop_unborn(
    vfs: &dyn Vfs,
    dir: &Path,
    ids: &mut Vec<u32>,
    report: &mut RecoveryReport,
) -> Result<()> {
    let (Some(&id), true) = (ids.last(), ids.len() >= 2) else {
        return Ok(());
    };
    let path = dir.join(segment::file_name(id));
    let file = vfs
        .open(&path)
        .map_err(|e| Error::io("opening segment", &path, e))?;
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let len = file
        .len()
        .map_err(|e| Error::io("reading segment length", &path, e))?;
    if len < SEGMENT_HEADER_LEN as u64 || len > u64::from(u32::MAX) {
        // Short or oversized: `Segment::open` reports it.
        return Ok(());
    }
    file.read_at(&mut head, 0)
        .map_err(|e| Error::io("reading segment header", &path, e))?;
    if head.iter().any(|&b| b != 0) {
        return Ok(());
    }
    let mut image = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    let data_end = file
        .read_data(&mut image, 0)
        .map_err(|e| Error::io("reading segment", &path, e))?;
    drop(file);
    report.torn_bytes += nonzero_extent(&image[..data_end.min(image.len())]);
    remove(vfs, dir, &path)?;
    ids.pop();
    Ok(())
}

/// The LSN the newest segment starts with (its header is checked).
pub fn newest_base(vfs: &dyn Vfs, newest: Newest<'_>) -> Result<u64> {
    let seg = Segment::open(vfs, newest.path, newest.id)?;
    Ok(seg.header.base_lsn)
}

/// Whether an intact frame of the newest segment proves, through its sync
/// lag, that LSN `lsn` had been durable.
pub fn newest_proves(vfs: &dyn Vfs, newest: Newest<'_>, lsn: u64) -> Result<bool> {
    let seg = Segment::open(vfs, newest.path, newest.id)?;
    let (image, data_end) = seg.read_image(SEGMENT_HEADER_LEN as u32)?;
    let goal = resync::Goal {
        // A frame with an LSN below `lsn` cannot prove it.
        wanted: |_: usize, head: &[u8]| frame::peek_lsn(head).unwrap_or(0) >= lsn,
        proves: |_: usize, f: &frame::Frame<'_>| f.lsn.saturating_sub(u64::from(f.sync_lag)) >= lsn,
        need_proof: true,
    };
    // Frames whose header starts before the data's end.
    let end = data_end.min(image.len());
    let span = SEGMENT_HEADER_LEN..(end + 1).saturating_sub(frame::FRAME_HEADER_LEN);
    Ok(resync::search(&image, span, seg.id, seg.size(), goal).durable)
}

/// Removes the newest segment after the one before it was cut (none of its
/// records was published); counts its written bytes as torn.
pub fn drop_newest(
    vfs: &dyn Vfs,
    dir: &Path,
    newest: Newest<'_>,
    report: &mut RecoveryReport,
) -> Result<()> {
    let seg = Segment::open(vfs, newest.path, newest.id)?;
    let (image, data_end) = seg.read_image(0)?;
    report.torn_bytes += nonzero_extent(&image[..data_end.min(image.len())])
        .saturating_sub(SEGMENT_HEADER_LEN as u64);
    drop(seg);
    remove(vfs, dir, newest.path)
}

fn remove(vfs: &dyn Vfs, dir: &Path, path: &Path) -> Result<()> {
    vfs.remove(path)
        .map_err(|e| Error::io("removing a segment torn by a power cut", path, e))?;
    vfs.sync_dir(dir)
        .map_err(|e| Error::io("syncing directory", dir, e))
}

/// Bytes up to the last nonzero one.
fn nonzero_extent(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1)
}
