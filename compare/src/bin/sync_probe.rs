//! Does walq's `Durability::Sync` enqueue add anything on top of the disk's
//! fsync? Alternates, operation by operation, a walq Sync enqueue with a
//! bare `pwrite + fdatasync` of the same size on a zero-filled file and on
//! a `fallocate`d file, so all three see the same (drifting) disk, and
//! prints the latency percentiles of each.
//!
//! `cargo run --release --manifest-path compare/Cargo.toml --bin sync_probe -- [ops] [bytes]`

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use walq::{Durability, Options, Queue};

fn file(path: &std::path::Path, zeroed: bool, size: u64) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("open");
    if zeroed {
        let z = vec![0u8; 1 << 20];
        for i in 0..size >> 20 {
            f.write_all_at(&z, i << 20).expect("zero");
        }
    } else {
        // SAFETY: plain syscall on a descriptor we own.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, size as libc::off_t) };
        assert_eq!(rc, 0, "fallocate");
    }
    f.sync_all().expect("sync");
    f
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ops: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let dir = match std::env::var_os("COMPARE_DIR") {
        Some(b) => tempfile::tempdir_in(b).expect("tempdir"),
        None => tempfile::tempdir().expect("tempdir"),
    };
    let q = Queue::open_with(
        dir.path().join("q"),
        Options::default().durability(Durability::Sync),
    )
    .expect("open");
    let rec = size + 56;
    let bytes = ((ops * rec) as u64 + (2 << 20)).next_multiple_of(1 << 20);
    let zf = file(&dir.path().join("zeroed"), true, bytes);
    let ff = file(&dir.path().join("falloc"), false, bytes);
    let p = vec![0x42u8; size];
    let buf = vec![0x42u8; rec];
    let (mut w, mut z, mut fa) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ops {
        let off = (i * rec) as u64;
        let t = Instant::now();
        q.enqueue(&p).expect("enqueue");
        w.push(t.elapsed().as_nanos() as u64);
        let t = Instant::now();
        zf.write_all_at(&buf, off).expect("write");
        zf.sync_data().expect("fdatasync");
        z.push(t.elapsed().as_nanos() as u64);
        let t = Instant::now();
        ff.write_all_at(&buf, off).expect("write");
        ff.sync_data().expect("fdatasync");
        fa.push(t.elapsed().as_nanos() as u64);
    }
    println!("{ops} operations of {size} B each, interleaved op by op (latency in µs)");
    println!("| what | ops/s (1/mean) | mean | p50 | p90 | p99 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, v) in [
        ("walq enqueue, Durability::Sync", &mut w),
        ("pwrite + fdatasync, zero-filled file", &mut z),
        ("pwrite + fdatasync, fallocate'd file", &mut fa),
    ] {
        let mean = v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0;
        println!(
            "| {name} | {:.0} | {mean:.0} | {:.0} | {:.0} | {:.0} |",
            1e6 / mean,
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99)
        );
    }
}
