//! What one reading of each system clock costs here (`clock_gettime`
//! through the vDSO), no queue involved: the figure behind
//! `SystemClock::both_ms` reading one clock instead of two.
//!
//! `cargo run --release --manifest-path compare/Cargo.toml --bin clock_probe [reads]`

use std::time::Instant;

/// One reading of clock `id`, in nanoseconds.
fn read(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the one we pass.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    let reads: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let clocks = [
        ("CLOCK_REALTIME", libc::CLOCK_REALTIME),
        ("CLOCK_MONOTONIC", libc::CLOCK_MONOTONIC),
        ("CLOCK_REALTIME_COARSE", libc::CLOCK_REALTIME_COARSE),
        ("CLOCK_MONOTONIC_COARSE", libc::CLOCK_MONOTONIC_COARSE),
    ];
    for (name, id) in clocks {
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_getres writes one timespec into the one we pass.
        unsafe { libc::clock_getres(id, &mut res) };
        let start = Instant::now();
        let mut sum = 0u64;
        for _ in 0..reads {
            sum = sum.wrapping_add(read(std::hint::black_box(id)));
        }
        let per = start.elapsed().as_nanos() as f64 / reads as f64;
        std::hint::black_box(sum);
        println!(
            "{name:<24} {per:6.1} ns per read, resolution {} ns",
            res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64
        );
    }
}
