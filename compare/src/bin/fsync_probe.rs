//! The disk's physics, without any queue: how many `write + fdatasync`
//! rounds per second a file takes, and the sequential write bandwidth.
//!
//! `cargo run --release --manifest-path compare/Cargo.toml --bin fsync_probe`
//!
//! Rows:
//! - zero-filled file: 64 MiB written with zeros and synced first, then
//!   100 B records overwrite it in place (only data changes: the pure fsync
//!   rate of the device);
//! - fallocate'd file: the same over `fallocate` space (ext4 marks it
//!   unwritten, so the first write to each block also changes metadata and
//!   every fdatasync commits the journal);
//! - appending file: each write grows the file (size changes every time).
//!
//! `PROBE_SECS` (default 2) per row.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

#[path = "../probe_files.rs"]
mod probe_files;
use probe_files::{new_file, Space};

fn secs() -> Duration {
    Duration::from_secs_f64(
        std::env::var("PROBE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    )
}

const SIZE: u64 = 64 << 20;

/// `write(rec) + fdatasync` in a loop at increasing offsets; returns
/// (rounds/s, mean latency µs).
fn rounds(f: &File, rec: usize) -> (f64, f64) {
    let buf = vec![0x5au8; rec];
    let start = Instant::now();
    let mut off = 0u64;
    let mut n = 0u64;
    while start.elapsed() < secs() && off + rec as u64 <= SIZE {
        f.write_all_at(&buf, off).expect("write");
        f.sync_data().expect("fdatasync");
        off += rec as u64;
        n += 1;
    }
    let t = start.elapsed().as_secs_f64();
    (n as f64 / t, t * 1e6 / n as f64)
}

fn main() {
    let d = probe_files::dir();
    println!("| file | record | fdatasync rounds/s | mean µs |");
    println!("|---|---|---:|---:|");
    for rec in [100usize, 1024, 10_000, 64 * 1024] {
        // Zero-filled (initialised extents).
        let p = d.path().join("zeros");
        let f = new_file(&p, Space::Zeroed, SIZE);
        let (r, l) = rounds(&f, rec);
        println!("| zero-filled, overwritten | {rec} B | {r:.0} | {l:.0} |");
        drop(f);
        std::fs::remove_file(&p).ok();

        // fallocate'd (unwritten extents).
        let p = d.path().join("falloc");
        let f = new_file(&p, Space::Fallocated, SIZE);
        let (r, l) = rounds(&f, rec);
        println!("| fallocate'd | {rec} B | {r:.0} | {l:.0} |");
        drop(f);
        std::fs::remove_file(&p).ok();

        // Appending.
        let p = d.path().join("append");
        let f = new_file(&p, Space::Growing, 0);
        let (r, l) = rounds(&f, rec);
        println!("| appending (size grows) | {rec} B | {r:.0} | {l:.0} |");
        drop(f);
        std::fs::remove_file(&p).ok();
    }

    // Sequential bandwidth: 1 GiB... scaled down to 256 MiB, 1 MiB writes,
    // one fdatasync at the end.
    let p = d.path().join("seq");
    let f = new_file(&p, Space::Growing, 0);
    let chunk = vec![0x11u8; 1 << 20];
    let total = 256u64 << 20;
    let start = Instant::now();
    for i in 0..(total >> 20) {
        f.write_all_at(&chunk, i << 20).expect("write");
    }
    f.sync_data().expect("fdatasync");
    let t = start.elapsed().as_secs_f64();
    println!();
    println!(
        "sequential write + one fdatasync: {:.0} MiB/s ({} MiB in {t:.2} s)",
        (total >> 20) as f64 / t,
        total >> 20
    );
    std::fs::remove_file(&p).ok();
}
