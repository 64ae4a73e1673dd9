//! Progress bars on stderr, only when stderr is a terminal.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use walq::inspect::{FileRole, Problem, RecordView, Visitor};

/// A bar of `total` units with `message`; hidden (draws nothing) unless
/// stderr is a terminal, so redirected output stays clean.
pub fn bar(total: u64, message: &str, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = match unit {
        "bytes" => "{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})",
        _ => "{msg} [{bar:30}] {pos}/{len} ({eta})",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}

/// The bytes of the files a scan of `dir` reads (for the bar's length).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    // What a scan reads: segments, dead.wal, done.rec (not
                    // the spare segment prepared ahead of time).
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.ends_with(".wal") || name == "done.rec"
                })
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A visitor that advances a bar by each file's length when it is done,
/// and hands every event on to `inner`.
pub struct Scanning<'a> {
    /// The bar.
    pub bar: ProgressBar,
    /// The visitor doing the work.
    pub inner: &'a mut dyn Visitor,
    len: u64,
}

impl<'a> Scanning<'a> {
    /// A bar over the files of `dir`.
    pub fn new(dir: &Path, message: &str, inner: &'a mut dyn Visitor) -> Scanning<'a> {
        Scanning {
            bar: bar(dir_bytes(dir), message, "bytes"),
            inner,
            len: 0,
        }
    }
}

impl Visitor for Scanning<'_> {
    fn file_start(&mut self, name: &str, role: FileRole, len: u64) {
        self.len = len;
        self.inner.file_start(name, role, len);
    }

    fn record(&mut self, r: &RecordView<'_>) {
        self.inner.record(r);
    }

    fn problem(&mut self, p: &Problem) {
        self.bar.suspend(|| self.inner.problem(p));
    }

    fn file_end(&mut self, name: &str, role: FileRole) {
        self.bar.inc(self.len);
        self.inner.file_end(name, role);
    }
}
