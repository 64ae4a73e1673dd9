//! What the `*_herd` examples share: the timed producer loop, the process's CPU time and their
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

/// Enqueues `jobs` jobs one at a time (`enqueue(i)` for job `i`), each
/// only once a consumer acked the one before (a message on `acked`), after
/// letting every consumer reach its wait; prints `label` with the wall and
/// process CPU time per job.
pub fn drive(
    label: &str,
    jobs: u64,
    acked: &std::sync::mpsc::Receiver<()>,
    mut enqueue: impl FnMut(u64) -> walq::Result<u64>,
) -> walq::Result<()> {
    std::thread::sleep(Duration::from_millis(200));
    let (start, cpu) = (std::time::Instant::now(), cpu_time());
    for i in 0..jobs {
        enqueue(i)?;
        acked.recv().expect("a consumer acked the job");
    }
    let (wall, cpu) = (start.elapsed(), cpu_time() - cpu);
    println!(
        "{label}, jobs {jobs}: {:.1} us wall, {:.1} us CPU per job",
        wall.as_secs_f64() * 1e6 / jobs as f64,
        cpu.as_secs_f64() * 1e6 / jobs as f64,
    );
    Ok(())
}
