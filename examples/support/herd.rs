//! What the `*_herd` examples share: the process's CPU time and their
//! numeric arguments. Not an example itself (Cargo builds only the files
//! directly in `examples/`); each includes it with `#[path]`.

use std::time::Duration;

/// User plus system CPU time of this process so far, from
/// `/proc/self/stat` (fields 14 and 15, in clock ticks of 10 ms: Linux's
/// `USER_HZ` is 100 on every architecture it runs this on).
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let field = |i: usize| -> u64 {
        after
            .split(' ')
            .nth(i - 3)
            .and_then(|f| f.parse().ok())
            .expect("a tick count")
    };
    Duration::from_millis((field(14) + field(15)) * 10)
}

/// Command-line argument `n` as a number, or `default`.
pub fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}
