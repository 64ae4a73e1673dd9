//! Does walq's `Durability::Sync` enqueue add anything on top of the disk's
//! fsync? Alternates, operation by operation, a walq Sync enqueue with a
//! bare `pwrite + fdatasync` of the same size on a zero-filled file and on
//! a `fallocate`d file, so all three see the same (drifting) disk, and
//! prints the latency percentiles of each.
//!
//! `cargo run --release --manifest-path compare/Cargo.toml --bin sync_probe -- [ops] [bytes]`

use std::os::unix::fs::FileExt;
use std::time::Instant;

use walq::{Durability, Options, Queue};

#[path = "../probe_files.rs"]
mod probe_files;
use probe_files::{new_file, Space};

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ops: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let dir = probe_files::dir();
    let q = Queue::open_with(
        dir.path().join("q"),
        Options::default().durability(Durability::Sync),
    )
    .expect("open");
    let rec = size + 56;
    let bytes = ((ops * rec) as u64 + (2 << 20)).next_multiple_of(1 << 20);
    let zf = new_file(&dir.path().join("zeroed"), Space::Zeroed, bytes);
    let ff = new_file(&dir.path().join("falloc"), Space::Fallocated, bytes);
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
