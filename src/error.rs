//! The one error type of walq.
//!
//! [`Error`] is opaque: match on [`Error::kind`], read the context with
//! [`Error::path`] and [`Error::offset`], and print it for a message that
//! names what was wrong and where.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A specialised `Result` for walq operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is. Match on this, not on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operating system reported an I/O error (the source is attached).
    Io,
    /// Bytes on disk failed verification: a bad checksum, a record or header
    /// that does not decode, or a gap in the log. [`Error::path`] and
    /// [`Error::offset`] say where.
    Corrupt,
    /// A file's format version is newer than this build understands.
    UnsupportedVersion,
    /// Another `Queue` (in this process or another) holds the directory.
    Locked,
    /// The receipt's lease expired or was replaced; the job may be held by
    /// another worker. Nothing was changed.
    LeaseLost,
    /// No job, receipt or dead letter with that id is known.
    NotFound,
    /// A payload, key, batch or error text is larger than the configured limit.
    PayloadTooLarge,
    /// An option or argument is out of range.
    InvalidOptions,
    /// An earlier write or fsync failed; the queue refuses writes until it is
    /// reopened (the state on disk is unknown past the failure).
    Poisoned,
    /// The queue was closed.
    Closed,
    /// The job is leased to a worker, so the operation (a
    /// [`crate::Queue::cancel`]) cannot take it now. Nothing was changed.
    InFlight,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "I/O error",
            ErrorKind::Corrupt => "corruption detected",
            ErrorKind::UnsupportedVersion => "unsupported format version",
            ErrorKind::Locked => "queue directory is locked",
            ErrorKind::LeaseLost => "lease lost",
            ErrorKind::NotFound => "not found",
            ErrorKind::PayloadTooLarge => "too large",
            ErrorKind::InvalidOptions => "invalid options",
            ErrorKind::Poisoned => "queue poisoned by an earlier I/O failure",
            ErrorKind::Closed => "queue closed",
            ErrorKind::InFlight => "job in flight",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a walq operation.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let q = walq::Queue::open(dir.path())?;
/// // A second open of the same directory is refused while `q` is alive.
/// let err = walq::Queue::open(dir.path()).unwrap_err();
/// assert_eq!(err.kind(), walq::ErrorKind::Locked);
/// assert!(err.to_string().contains("locked"));
/// # drop(q);
/// # Ok(()) }
/// ```
pub struct Error {
    kind: ErrorKind,
    message: String,
    path: Option<PathBuf>,
    offset: Option<u64>,
    source: Option<io::Error>,
}

impl Error {
    /// Builds an error of `kind` with a message: what a
    /// [`crate::worker::Backend`] written outside walq returns, so its
    /// callers (the worker pools) can match on the kind as they do on
    /// walq's own.
    ///
    /// ```
    /// use walq::{Error, ErrorKind};
    /// let err = Error::new(ErrorKind::NotFound, "no job 7 waits here");
    /// assert_eq!(err.kind(), ErrorKind::NotFound);
    /// assert!(err.to_string().contains("no job 7 waits here"));
    /// ```
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            path: None,
            offset: None,
            source: None,
        }
    }

    /// An I/O error with what was being done and on which file.
    pub(crate) fn io(what: &str, path: &Path, source: io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            message: what.to_string(),
            path: Some(path.to_path_buf()),
            offset: None,
            source: Some(source),
        }
    }

    /// Corruption at `offset` in `path`.
    pub(crate) fn corrupt(path: &Path, offset: u64, what: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Corrupt,
            message: what.into(),
            path: Some(path.to_path_buf()),
            offset: Some(offset),
            source: None,
        }
    }

    pub(crate) fn with_path(mut self, path: &Path) -> Error {
        self.path = Some(path.to_path_buf());
        self
    }

    /// The same error, its message preceded by `context` (what had
    /// happened before it, say); kind, file, offset and source are kept.
    pub(crate) fn prefixed(mut self, context: &str) -> Error {
        self.message = format!("{context}{}", self.message);
        self
    }

    /// The message alone, without the kind's prefix or the file (to
    /// build another error around it).
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file the error concerns, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The byte offset in [`Error::path`] the error concerns, when known.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The underlying I/O error, for [`ErrorKind::Io`].
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(path) = &self.path {
            write!(f, " (file {}", path.display())?;
            if let Some(offset) = self.offset {
                write!(f, ", offset {offset}")?;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?}, \"{}\")", self.kind, self)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err.kind {
            ErrorKind::Io => err
                .source
                .as_ref()
                .map_or(io::ErrorKind::Other, io::Error::kind),
            ErrorKind::Corrupt | ErrorKind::UnsupportedVersion => io::ErrorKind::InvalidData,
            ErrorKind::Locked | ErrorKind::InFlight => io::ErrorKind::WouldBlock,
            ErrorKind::NotFound | ErrorKind::LeaseLost => io::ErrorKind::NotFound,
            ErrorKind::PayloadTooLarge | ErrorKind::InvalidOptions => io::ErrorKind::InvalidInput,
            ErrorKind::Poisoned | ErrorKind::Closed => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_and_offset() {
        let e = Error::corrupt(Path::new("/q/seg"), 4096, "checksum mismatch");
        let s = e.to_string();
        assert!(s.contains("/q/seg"), "{s}");
        assert!(s.contains("offset 4096"), "{s}");
        assert!(s.contains("checksum mismatch"), "{s}");
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(e.offset(), Some(4096));
    }

    #[test]
    fn converts_to_io_error_keeping_kind() {
        let e = Error::io(
            "writing",
            Path::new("x"),
            io::Error::from(io::ErrorKind::StorageFull),
        );
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::StorageFull);
    }
}
