//! Exit codes, and the one error type of the command line.

use std::fmt;
use std::path::Path;

use walq::ErrorKind;

/// Success; for `verify`, the queue is healthy.
pub const OK: u8 = 0;
/// `verify` (or `salvage`) found damage.
pub const DAMAGED: u8 = 1;
/// Bad arguments (clap's own code for usage errors).
pub const USAGE: u8 = 2;
/// The path is missing, unreadable, or holds no walq queue.
pub const UNREADABLE: u8 = 3;
/// A running process holds the queue (commands that change it).
pub const LOCKED: u8 = 4;
/// No job or dead letter with that id.
pub const NOT_FOUND: u8 = 5;
/// The operation failed (an I/O error, a full disk, a refused write).
pub const FAILED: u8 = 6;
/// The reader of stdout went away before the output was written (what a
/// shell reports for a process killed by `SIGPIPE`: 128 + 13). Never 0:
/// `walq verify DIR | head -1` must not read as healthy.
pub const CLOSED_OUTPUT: u8 = 141;

/// The exit codes, for `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  ok (verify: the queue is healthy)
  1  damaged: verify or salvage found damage, schedules found schedules.bin
     damaged, or a command that opens the queue for writing found it
     damaged (run `walq verify DIR`)
  2  usage error (an unknown --queue name too)
  3  unreadable: no such path, not a directory, not a walq queue, no
     permission to read it, or a newer format than this build reads
  4  locked: a running process holds the queue (commands that change it)
  5  not found: no job or dead letter with that id
  6  failed: the operation failed (I/O error, full disk, refused write)
141  the reader of the output went away (`walq dump DIR | head`): stopped
     quietly, as a process killed by SIGPIPE";

/// A failure: a message for stderr and an exit code.
#[derive(Debug)]
pub struct Fail {
    /// Exit code.
    pub code: u8,
    /// What went wrong, naming the file.
    pub message: String,
}

impl Fail {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
        }
    }

    /// An error from inspecting `dir` read-only.
    pub fn reading(dir: &Path, e: &walq::Error) -> Fail {
        let code = match e.kind() {
            ErrorKind::Corrupt => DAMAGED,
            _ => UNREADABLE,
        };
        Fail::new(code, describe(dir, e))
    }

    /// This failure of a command that had `done` (say "enqueued 3 jobs")
    /// before it, and whose close, which syncs that, ended with `closed`:
    /// the message says what was done and whether it is durable.
    pub fn after_adding(self, done: &str, closed: Result<(), Fail>) -> Fail {
        let state = match closed {
            Ok(()) => "they are durable".to_string(),
            Err(e) => format!(
                "syncing them failed too, so they may be lost: {}",
                e.message
            ),
        };
        let message = format!("{}\n{done} before this ({state})", self.message);
        Fail::new(self.code, message)
    }

    /// An error from `Queue::open` on `dir`.
    pub fn opening(dir: &Path, e: &walq::Error) -> Fail {
        match e.kind() {
            ErrorKind::Locked => Fail::new(LOCKED, locked_message(dir)),
            ErrorKind::Corrupt => Fail::new(
                DAMAGED,
                format!(
                    "{}\nthe queue is damaged: `walq verify {}` lists the damage, \
                     `walq salvage {} --into NEW` copies what is intact",
                    describe(dir, e),
                    dir.display(),
                    dir.display()
                ),
            ),
            ErrorKind::Io if !cannot_reach(e) => Fail::new(FAILED, describe(dir, e)),
            ErrorKind::Io | ErrorKind::UnsupportedVersion | ErrorKind::NotFound => {
                Fail::new(UNREADABLE, describe(dir, e))
            }
            _ => Fail::new(FAILED, describe(dir, e)),
        }
    }

    /// An error from an operation on an open queue.
    pub fn operation(dir: &Path, e: &walq::Error) -> Fail {
        let code = match e.kind() {
            ErrorKind::NotFound => NOT_FOUND,
            _ => FAILED,
        };
        Fail::new(code, describe(dir, e))
    }
}

/// Whether an I/O error of an open says the queue cannot be reached (no
/// such file, not a directory: exit 3, "unreadable"), rather than that
/// the open failed on the way (a full disk creating a segment, EIO, a
/// queue that may be read but not written, by permission or a read-only
/// file system alike: exit 6, "failed"; a queue that cannot be read at all
/// fails the read-only look before the open, with exit 3, in the commands
/// that look first: `cancel`, `dead redrive`/`purge`).
fn cannot_reach(e: &walq::Error) -> bool {
    use std::io::ErrorKind as Io;
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.is_none_or(|io| {
        matches!(
            io.kind(),
            Io::NotFound | Io::NotADirectory | Io::IsADirectory
        )
    })
}

/// The error text, with the file when the error does not name one.
fn describe(dir: &Path, e: &walq::Error) -> String {
    if e.path().is_some() {
        e.to_string()
    } else {
        format!("{}: {e}", dir.display())
    }
}

/// Which process holds the queue, as precisely as the system tells.
pub fn locked_message(dir: &Path) -> String {
    let lock = dir.join(walq::LOCK_FILE);
    let who = match walq::inspect::lock_holder(dir) {
        Some(h) => match h.command {
            Some(cmd) => format!("process {} ({cmd})", h.pid),
            None => format!("process {}", h.pid),
        },
        None => "another process".to_string(),
    };
    format!(
        "{} is locked by {who}: a running program has the queue open, and only one \
         may change it. Stop it, or use the read-only commands (stats, peek, show, \
         dead list/show, verify, dump, export, schedules), which work while it runs.",
        lock.display()
    )
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        // The reader went away (`walq dump DIR | head`): stop quietly,
        // but not with 0 (that would say, for `verify`, "healthy").
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Fail::new(CLOSED_OUTPUT, "");
        }
        // Writing to stdout failed (a full disk, say).
        Fail::new(FAILED, format!("writing output: {e}"))
    }
}

/// The result of a command: an exit code, or a failure.
pub type CmdResult = Result<u8, Fail>;
