//! `walq verify`: every record's checksum, every invariant between files.

use std::io::Write;

use serde_json::json;
use walq::inspect::{Problem, Severity, Visitor};

use crate::args::VerifyArgs;
use crate::fail::{CmdResult, Fail, DAMAGED, OK};
use crate::progress::Scanning;
use crate::render;

/// Prints problems as they are found.
struct Report {
    json: bool,
    colour: bool,
    /// A write to stdout failed.
    broken: Option<std::io::Error>,
}

impl Visitor for Report {
    fn problem(&mut self, p: &Problem) {
        let mut out = std::io::stdout().lock();
        let result = if self.json {
            let v = json!({
                "severity": severity(p.severity),
                "file": p.file,
                "offset": p.offset,
                "what": p.what,
            });
            writeln!(out, "{v}")
        } else {
            let tag = match p.severity {
                Severity::Damage => render::red("damage", self.colour),
                Severity::Note => render::yellow("note  ", self.colour),
            };
            writeln!(out, "{tag} {p}")
        };
        if let Err(e) = result {
            self.broken.get_or_insert(e);
        }
    }
}

/// The word for a severity in output.
pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Damage => "damage",
        Severity::Note => "note",
    }
}

/// Runs `walq verify`.
pub fn run(a: &VerifyArgs) -> CmdResult {
    let inspector = super::inspect(&a.dir)?;
    let colour = render::colour();
    let mut report = Report {
        json: a.json,
        colour,
        broken: None,
    };
    let mut scanning = Scanning::new(&a.dir, "verifying", &mut report);
    let result = inspector.verify(&mut scanning);
    scanning.bar.finish_and_clear();
    let summary = result.map_err(|e| Fail::reading(&a.dir, &e))?;
    if let Some(e) = report.broken {
        return Err(e.into());
    }
    let mut out = std::io::stdout().lock();
    let healthy = summary.damage == 0;
    if a.json {
        let v = json!({
            "dir": a.dir.display().to_string(),
            "live": summary.live,
            "healthy": healthy,
            "damage": summary.damage,
            "notes": summary.notes,
            "segments": summary.segments,
            "records": summary.records,
            "bytes": summary.bytes,
            "last_lsn": summary.last_lsn,
            "records_lost": summary.records_lost,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "checked {} records in {} segment(s) and the side files ({} read), last LSN {}",
            summary.records,
            summary.segments,
            render::bytes(summary.bytes),
            summary.last_lsn
        )?;
        if healthy {
            writeln!(out, "{}", render::green("healthy", colour))?;
        } else {
            let lost = if summary.records_lost > 0 {
                format!(", at least {} log records lost", summary.records_lost)
            } else {
                String::new()
            };
            let verdict = format!(
                "DAMAGED: {} place(s){lost}; `walq salvage {} --into NEW` copies what is intact",
                summary.damage,
                a.dir.display()
            );
            writeln!(out, "{}", render::red(&verdict, colour))?;
        }
    }
    Ok(if healthy { OK } else { DAMAGED })
}
