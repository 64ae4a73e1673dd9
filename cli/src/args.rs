//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::fail::EXIT_CODES;

/// Look inside, verify, repair, move and benchmark a walq queue.
///
/// Read-only commands (stats, peek, show, dead list/show, verify, dump,
/// export, schedules) work while a running program holds the queue: they
/// never take its lock and never write, and say when what they show is a
/// snapshot of a live queue. Commands that change the queue take its lock and say
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
  walq stats /var/lib/app/queue --queue emails     # one named queue only
  walq stats /var/lib/app/queue --watch            # refresh every second, with rates
  walq stats /var/lib/app/queue --watch --count 5  # five refreshes, then exit")]
    Stats(StatsArgs),
    /// The next jobs in delivery order (read-only: nothing is leased).
    #[command(after_help = "Examples:
  walq peek /var/lib/app/queue
  walq peek /var/lib/app/queue -n 50 --json
  walq peek /var/lib/app/queue --queue emails      # one named queue only")]
    Peek(PeekArgs),
    /// One job: status, attempts, key, times, payload.
    #[command(after_help = "Examples:
  walq show /var/lib/app/queue 42
  walq show /var/lib/app/queue 42 --json")]
    Show(ShowArgs),
    /// Check every record's checksum in every file (schedules.bin too, as
    /// the scheduler reads it) and the invariants between files; damage is
    /// reported with file and byte offset.
    #[command(
        after_help = "Exit status: 0 healthy, 1 damaged, 3 unreadable or not a queue.

Examples:
  walq verify /var/lib/app/queue
  walq verify /var/lib/app/queue --json   # one JSON line per problem, then a summary"
    )]
    Verify(VerifyArgs),
    /// The recurring schedules (schedules.bin): spec, payload, last and
    /// next tick (read-only).
    #[command(
        after_help = "The schedule file does not record which queue its schedules enqueue into
(the application opens its Scheduler on a queue). A queue without
schedules.bin has no schedules (exit 0); a damaged one is an error naming
the file and the offset (exit 1).

Examples:
  walq schedules /var/lib/app/queue
  walq schedules /var/lib/app/queue --json"
    )]
    Schedules(SchedulesArgs),
    /// Every record: the log segments in LSN order, then dead.wal, then done.rec.
    #[command(after_help = "Examples:
  walq dump /var/lib/app/queue | less
  walq dump /var/lib/app/queue --json | jq 'select(.kind == \"nack\")'")]
    Dump(DumpArgs),
    /// The dead letters: list, show, redrive (put back), purge (delete).
    #[command(subcommand)]
    Dead(DeadCmd),
    /// Cancel jobs that wait to run (queued, delayed, waiting for a retry):
    /// they are never delivered. Takes the lock.
    #[command(
        after_help = "A cancelled job's status reads purged (removed without completing); its
idempotency key stays known for its window. Jobs of named queues are found
in their queue. Taking the lock releases the leases of a process that is
gone, so a job it held waits again and can be cancelled. The ids are
cancelled in order; the first that is not waiting (finished, a dead letter,
unknown: exit 5) stops the command, and those before it stay cancelled.

Examples:
  walq cancel /var/lib/app/queue 42
  walq cancel /var/lib/app/queue 42 43 44"
    )]
    Cancel(CancelArgs),
    /// Pause a queue: no program delivers its jobs until it is resumed,
    /// across restarts. Takes the lock.
    #[command(
        after_help = "The pause is written to the queue directory (file PAUSED) and holds for
every program that opens the queue, until `walq resume` or Queue::resume.
Enqueues still go in; jobs already running finish. The queue is named as
the program names it (`default` for the default queue); pausing a queue
with no job yet is allowed. A program running on the queue holds its lock:
call Queue::pause from the program then (this command exits 4).

Examples:
  walq pause /var/lib/app/queue emails
  walq pause /var/lib/app/queue default"
    )]
    Pause(PauseArgs),
    /// Resume a paused queue: its jobs are delivered again. Takes the lock.
    #[command(after_help = "Examples:
  walq resume /var/lib/app/queue emails")]
    Resume(PauseArgs),
    /// Pending jobs and dead letters as JSON lines (read-only).
    #[command(
        after_help = "Each line is one JSON object: a header {\"walq_export\":1,...}, then one
{\"type\":\"job\",...} per pending job and one {\"type\":\"dead\",...} per dead
letter. Payloads, keys and errors are UTF-8 strings (\"payload\") when they
are valid UTF-8, else standard base64 (\"payload_base64\"). See docs/cli.md.

Examples:
  walq export /var/lib/app/queue > backup.jsonl
  walq export /var/lib/app/queue -o backup.jsonl
  walq export /var/lib/app/queue --queue emails > emails.jsonl
  walq export /var/lib/app/queue | jq -r 'select(.type == \"dead\") | .error'"
    )]
    Export(ExportArgs),
    /// Add the jobs and dead letters of an export to a queue (created if
    /// missing). Takes the queue's lock.
    #[command(
        after_help = "Delays are kept (what is left of them), and so is the number of attempts a
job has left; dead letters arrive as dead letters with their error text
(added straight to the dead letters: no job of the queue is touched).
The whole input is checked before the first write (a bad line writes
nothing); until then the checked items wait in a private spill file in
$TMPDIR (default /tmp), which needs room for about the size of the
payloads and is removed however import ends. Memory holds one line at a
time, whatever the input's size; no line is read past the longest an
export writes. See docs/cli.md.

Examples:
  walq import /var/lib/app/new-queue < backup.jsonl
  walq import /var/lib/app/new-queue -i backup.jsonl
  walq export old/ | ssh host walq import /srv/queue"
    )]
    Import(ImportArgs),
    /// Add jobs from arguments, or one per line of stdin. Takes the lock;
    /// creates the queue if missing.
    #[command(after_help = "Examples:
  walq enqueue /var/lib/app/queue 'resize photo 1'
  walq enqueue /var/lib/app/queue '{\"to\":\"ada@example.com\"}' --key signup/ada
  walq enqueue /var/lib/app/queue 'report' --delay 10m --max-attempts 3
  seq 1 1000 | walq enqueue /var/lib/app/queue      # one job per line")]
    Enqueue(EnqueueArgs),
    /// Copy every intact pending job and dead letter of a damaged queue,
    /// and its schedules.bin if that verifies, into a fresh one, and report
    /// what was lost. DIR is only read.
    #[command(
        after_help = "Exit status: 0 everything copied (DIR was healthy), 1 DIR was damaged (or its
schedules.bin was not copied) and what was intact was copied, 3 DIR unreadable, 6 NEW not empty or not writable.

Examples:
  walq salvage /var/lib/app/queue --into /var/lib/app/queue.salvaged
  walq verify /var/lib/app/queue.salvaged && mv ..."
    )]
    Salvage(SalvageArgs),
    /// A quick benchmark on your disk: jobs/s and latency of enqueue and of
    /// dequeue+ack, for each durability mode (sync, os, periodic).
    #[command(
        after_help = "The queue lives in a temporary directory inside DIR (default: the system's
temporary directory), removed afterwards. Run it on the disk your queue
will use: fsync cost is a property of the disk.

Examples:
  walq bench
  walq bench /var/lib/app --seconds 3 --threads 4
  walq bench /var/lib/app --json"
    )]
    Bench(BenchArgs),
}

/// `walq bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Where to create the temporary queue (default: the temp directory).
    pub dir: Option<PathBuf>,
    /// Seconds per measurement (six measurements in all).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Producer and consumer threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// JSON lines, one per measurement.
    #[arg(long)]
    pub json: bool,
}

/// `walq salvage`.
#[derive(Args, Debug)]
pub struct SalvageArgs {
    /// The damaged queue directory (never written).
    pub dir: PathBuf,
    /// A new queue directory: must not exist, or be empty.
    #[arg(long, value_name = "NEW")]
    pub into: PathBuf,
}

/// `walq dead …`.
#[derive(Subcommand, Debug)]
pub enum DeadCmd {
    /// The dead letters, oldest first (read-only).
    #[command(after_help = "Examples:
  walq dead list /var/lib/app/queue
  walq dead list /var/lib/app/queue --json")]
    List {
        /// The queue directory.
        dir: PathBuf,
        /// JSON lines, one dead letter per line.
        #[arg(long)]
        json: bool,
        /// Only the dead letters of this queue of the store (`default`:
        /// the default queue); an unknown name is an error.
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
    },
    /// One dead letter with its error and payload (read-only).
    #[command(after_help = "Examples:
  walq dead show /var/lib/app/queue 42")]
    Show {
        /// The queue directory.
        dir: PathBuf,
        /// The job id.
        id: u64,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on the queue (attempts start again). Takes the lock.
    #[command(after_help = "Examples:
  walq dead redrive /var/lib/app/queue 42
  walq dead redrive /var/lib/app/queue --all")]
    Redrive(DeadTarget),
    /// Delete dead letters for good. Takes the lock.
    #[command(after_help = "Examples:
  walq dead purge /var/lib/app/queue 42
  walq dead purge /var/lib/app/queue --all")]
    Purge(DeadTarget),
}

/// Which dead letters `redrive` or `purge` act on.
#[derive(Args, Debug)]
pub struct DeadTarget {
    /// The queue directory.
    pub dir: PathBuf,
    /// The job id.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<u64>,
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
}

/// `walq cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The queue directory.
    pub dir: PathBuf,
    /// The job ids.
    #[arg(required = true)]
    pub ids: Vec<u64>,
}

/// `walq pause` and `walq resume`.
#[derive(Args, Debug)]
pub struct PauseArgs {
    /// The queue directory.
    pub dir: PathBuf,
    /// The queue's name (`default` for the default queue).
    pub queue: String,
}

/// `walq export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The queue directory.
    pub dir: PathBuf,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only the jobs and dead letters of this queue of the store
    /// (`default`: the default queue); an unknown name is an error.
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
}

/// `walq import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The queue directory (created if missing).
    pub dir: PathBuf,
    /// Read this file instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Import an export that holds fewer items than its header counts (one
    /// filtered on purpose, say): refused otherwise, as a cut export.
    #[arg(long)]
    pub partial: bool,
}

/// `walq enqueue`.
#[derive(Args, Debug)]
pub struct EnqueueArgs {
    /// The queue directory (created if missing).
    pub dir: PathBuf,
    /// Payloads, one job each; none: one job per line of stdin.
    pub payloads: Vec<String>,
    /// Idempotency key (with exactly one payload).
    #[arg(long)]
    pub key: Option<String>,
    /// Delay before the jobs become ready: 500ms, 30s, 10m, 2h, or seconds.
    #[arg(long, value_name = "DURATION")]
    pub delay: Option<String>,
    /// Attempts before the dead letters (default 5: the queue's own
    /// setting is not stored on disk, so the CLI cannot use it).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Priority level: low, normal (default), high or urgent.
    #[arg(long, value_name = "LEVEL")]
    pub priority: Option<String>,
    /// Message group: jobs of one group run one at a time, in order.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Named queue of the store (default: the default queue).
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
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
    /// Count only this queue of the store
    /// (`default`: the default queue); an unknown name is an error.
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
}

/// `walq peek`.
#[derive(Args, Debug)]
pub struct PeekArgs {
    /// The queue directory.
    pub dir: PathBuf,
    /// How many jobs.
    #[arg(short = 'n', long = "count", default_value_t = 10)]
    pub n: usize,
    /// Only the jobs of this queue of the store
    /// (`default`: the default queue); an unknown name is an error.
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
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

/// `walq schedules`.
#[derive(Args, Debug)]
pub struct SchedulesArgs {
    /// The queue directory.
    pub dir: PathBuf,
    /// JSON lines, one schedule per line.
    #[arg(long)]
    pub json: bool,
}
