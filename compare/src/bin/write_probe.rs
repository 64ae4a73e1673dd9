//! The page cache's write path, without any queue and without fsync: how
//! many records per second the kernel takes by each way of appending, and
//! what bringing one page of a file into a shared map costs. The bound
//! under the no-fsync enqueue rows (docs/benchmarks.md, "The 1 KiB enqueue
//! row: the kernel's page cost").
//!
//! `cargo run --release --manifest-path compare/Cargo.toml --bin write_probe [-- BYTES...]`
//!
//! Rows, each appending `PROBE_MB` (default 256) MiB of records of each
//! size (default 100 and 1024 bytes) to a fresh file:
//! - `pwrite, growing file`: every write extends the file (yaque's path: a
//!   `write(2)` per send);
//! - `pwrite, fallocated file`: into space `fallocate` reserved (walq's
//!   path for `Sync` appends);
//! - `map, faulting inline`: stores into a shared map of a fallocated file;
//!   each new page faults on the first store (walq's `Os` path when its
//!   prefault thread is behind);
//! - `map, populated first`: the same after `MADV_POPULATE_WRITE` of the
//!   map, in 2 MiB windows, timed apart and reported per page (walq's `Os`
//!   path: the prefault thread pays the populate, the appender only
//!   copies);
//! - `map, read in by a second map first`: each window is first read in
//!   through a second, transient map with the default advice
//!   (`MADV_POPULATE_READ`, then unmapped), then populated as above (a
//!   prefault tried for walq and not kept: docs/benchmarks.md).
//!
//! `PROBE_ADVICE=random` advises the storing map `MADV_RANDOM`, as walq
//! advises an active segment's map. Each row runs `PROBE_RUNS` times
//! (default 3); all rates are printed, sorted. `COMPARE_DIR` picks the file
//! system (default: the temp dir's).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

#[path = "../probe_files.rs"]
mod probe_files;
use probe_files::{new_file, Space};

/// The prefault window, as walq's (`PREFAULT_BYTES` in src/log.rs).
const WINDOW: usize = 2 << 20;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A shared map of `len` bytes of a file from `off`, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(f: &File, off: usize, len: usize, random: bool) -> Map {
        // SAFETY: a fresh mapping of a file this process owns, inside its
        // length; nothing else maps or truncates it while the `Map` lives.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                off as libc::off_t,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        if random {
            // SAFETY: advice on the range just mapped.
            unsafe { libc::madvise(ptr, len, libc::MADV_RANDOM) };
        }
        Map {
            ptr: ptr.cast(),
            len,
        }
    }

    fn advise(&self, off: usize, len: usize, advice: libc::c_int) {
        assert!(off + len <= self.len, "advice past the map");
        // SAFETY: advice on a range inside this map; populate advice
        // changes no byte.
        let rc = unsafe { libc::madvise(self.ptr.add(off).cast(), len, advice) };
        assert_eq!(rc, 0, "madvise: {}", std::io::Error::last_os_error());
    }

    fn store(&self, off: usize, rec: &[u8]) {
        assert!(off + rec.len() <= self.len, "store past the map");
        // SAFETY: in bounds (checked above); `rec` is not part of the map.
        unsafe { std::ptr::copy_nonoverlapping(rec.as_ptr(), self.ptr.add(off), rec.len()) };
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Populates `map` window by window; returns the time per page (ns).
fn populate(f: &File, map: &Map, total: usize, second_map: bool) -> f64 {
    let t = Instant::now();
    let mut at = 0;
    while at < total {
        let w = WINDOW.min(total - at);
        if second_map {
            let window = Map::new(f, at, w, false);
            window.advise(0, w, libc::MADV_POPULATE_READ);
        }
        map.advise(at, w, libc::MADV_POPULATE_WRITE);
        at += w;
    }
    t.elapsed().as_nanos() as f64 / (total / 4096) as f64
}

/// One row: records per second, and the populate's cost per page (ns)
/// where the row populates first.
fn row(kind: &str, dir: &Path, total: usize, size: usize) -> (f64, Option<f64>) {
    let path = dir.join(format!("probe-{kind}-{size}"));
    let n = total / size;
    let rec = vec![0x5au8; size];
    let random = std::env::var("PROBE_ADVICE").is_ok_and(|a| a == "random");
    let mut populate_ns = None;
    let started;
    match kind {
        "growing" | "fallocated" => {
            let space = if kind == "fallocated" {
                Space::Fallocated
            } else {
                Space::Growing
            };
            let f = new_file(&path, space, total as u64);
            started = Instant::now();
            for i in 0..n {
                f.write_all_at(&rec, (i * size) as u64).expect("pwrite");
            }
        }
        _ => {
            let f = new_file(&path, Space::Fallocated, total as u64);
            let map = Map::new(&f, 0, total, random);
            if kind != "faulting" {
                populate_ns = Some(populate(&f, &map, total, kind == "second"));
            }
            started = Instant::now();
            for i in 0..n {
                map.store(i * size, &rec);
            }
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    (rate, populate_ns)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1024]
    } else {
        sizes
    };
    let total = env_num("PROBE_MB", 256) << 20;
    let runs = env_num("PROBE_RUNS", 3).max(1);
    let dir = probe_files::dir();
    println!("| record | append by | records/s ({runs} runs, sorted) | populate per 4 KiB page |");
    println!("|---|---|---|---|");
    for &size in &sizes {
        for (kind, label) in [
            ("growing", "pwrite, growing file"),
            ("fallocated", "pwrite, fallocated file"),
            ("faulting", "map, faulting inline"),
            ("populated", "map, populated first"),
            ("second", "map, read in by a second map first"),
        ] {
            let mut rates = Vec::new();
            let mut pops = Vec::new();
            for _ in 0..runs {
                let (rate, pop) = row(kind, dir.path(), total, size);
                rates.push(rate);
                pops.extend(pop);
            }
            rates.sort_by(f64::total_cmp);
            pops.sort_by(f64::total_cmp);
            let rates: Vec<String> = rates.iter().map(|r| format!("{:.2} M", r / 1e6)).collect();
            let pops: Vec<String> = pops.iter().map(|p| format!("{:.2} µs", p / 1e3)).collect();
            println!(
                "| {size} B | {label} | {} | {} |",
                rates.join(", "),
                pops.join(", ")
            );
        }
    }
}
