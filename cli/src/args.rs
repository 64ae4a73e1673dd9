//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::fail::EXIT_CODES;

/// Look inside, verify, repair, move and benchmark a walq queue.
///
/// Read-only commands (stats, peek, show, dead list/show, verify, dump,
/// export) work while a running program holds the queue: they never take
/// its lock and never write, and say when what they show is a snapshot of
/// a live queue. Commands that change the queue take its lock and say
/// which process holds it when they cannot.
#[derive(Parser, Debug)]
#[command(name = "walq", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Counts of ready, delayed, leased and dead jobs, files and disk use.
    #[command(after_help = "Examples:
  walq stats /var/lib/app/queue
  walq stats /var/lib/app/queue --json
  walq stats /var/lib/app/queue --watch            # refresh every second, with rates
  walq stats /var/lib/app/queue --watch --count 5  # five refreshes, then exit")]
    Stats(StatsArgs),
    /// The next jobs in delivery order (read-only: nothing is leased).
    #[command(after_help = "Examples:
  walq peek /var/lib/app/queue
  walq peek /var/lib/app/queue -n 50 --json")]
    Peek(PeekArgs),
    /// One job: status, attempts, key, times, payload.
    #[command(after_help = "Examples:
  walq show /var/lib/app/queue 42
  walq show /var/lib/app/queue 42 --json")]
    Show(ShowArgs),
    /// Check every record's checksum in every file and the invariants
    /// between files; damage is reported with file and byte offset.
    #[command(
        after_help = "Exit status: 0 healthy, 1 damaged, 3 unreadable or not a queue.

Examples:
  walq verify /var/lib/app/queue
  walq verify /var/lib/app/queue --json   # one JSON line per problem, then a summary"
    )]
    Verify(VerifyArgs),
    /// Every record in log order (dead.wal first, the segments, done.rec).
    #[command(after_help = "Examples:
  walq dump /var/lib/app/queue | less
  walq dump /var/lib/app/queue --json | jq 'select(.kind == \"nack\")'")]
    Dump(DumpArgs),
}

/// `walq verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The queue directory.
    pub dir: PathBuf,
    /// JSON lines: one per problem, then a summary object.
    #[arg(long)]
    pub json: bool,
}

/// `walq dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The queue directory.
    pub dir: PathBuf,
    /// JSON lines, one record (or problem) per line.
    #[arg(long)]
    pub json: bool,
}

/// `walq stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The queue directory.
    pub dir: PathBuf,
    /// One JSON object (with --watch, one per line).
    #[arg(long)]
    pub json: bool,
    /// Refresh until interrupted, with rates (enqueued/s, acked/s, backlog trend).
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub interval: f64,
    /// With --watch: stop after this many refreshes.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// `walq peek`.
#[derive(Args, Debug)]
pub struct PeekArgs {
    /// The queue directory.
    pub dir: PathBuf,
    /// How many jobs.
    #[arg(short = 'n', long = "count", default_value_t = 10)]
    pub n: usize,
    /// JSON lines, one job per line.
    #[arg(long)]
    pub json: bool,
}

/// `walq show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The queue directory.
    pub dir: PathBuf,
    /// The job id.
    pub id: u64,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}
