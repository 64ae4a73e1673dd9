//! `walq import` and `walq enqueue` fed input that never ends, or a line
//! that never does: an error naming the input and the line, with nothing
//! written, never a process that grows until it dies. Before, import read
//! each line whole (`BufRead::lines`), and `cat /dev/zero` after a header
//! took memory until the allocator gave up (an abort).
//!
//! Each run is bounded to 1 GiB of address space (`ulimit -v`), so a
//! regression fails at once instead of taking the machine's memory.

mod common;

use common::{sh, Run};

/// The address space a run may take (KiB, for `ulimit -v`).
const ADDRESS_SPACE_KIB: u64 = 1 << 20;

/// Runs `feed | walq ARGS... DIR` with walq's address space bounded.
fn fed(feed: &str, args: &str, dir: &std::path::Path) -> Run {
    let script = format!("({feed}) | (ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" {args} \"$1\")");
    sh(
        &script,
        &[env!("CARGO_BIN_EXE_walq"), dir.to_str().unwrap()],
    )
}

/// The failure of an import that wrote nothing: exit 6, the message
/// naming `input` and line `line`, the target not created.
fn refused(run: &Run, dir: &std::path::Path, input: &str, line: u64, why: &str) {
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    let at = format!("{input}: line {line}: ");
    assert!(run.stderr.contains(&at), "{}", run.stderr);
    assert!(run.stderr.contains(why), "{}", run.stderr);
    assert!(!dir.exists(), "a refused import created {}", dir.display());
}

#[test]
fn zeros_after_the_header_are_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let run = fed("echo '{\"walq_export\":1}'; cat /dev/zero", "import", &dir);
    refused(&run, &dir, "stdin", 2, "byte 0x00 at column 1");
}

#[test]
fn a_line_that_never_ends_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    // `yyyy...`, no newline, forever: no JSON object starts so.
    let run = fed(
        "echo '{\"walq_export\":1}'; yes | tr -d '\\n'",
        "import",
        &dir,
    );
    refused(&run, &dir, "stdin", 2, "not a JSON object");
    // A job whose payload never ends: its control characters are refused
    // where they start (the longest payload any queue takes is 1 GiB, so
    // a line of printable bytes is read up to the bound that allows,
    // which the unit tests of `lines` check with a smaller bound).
    let run = fed(
        "echo '{\"walq_export\":1}'; printf '{\"type\":\"job\",\"payload\":\"'; cat /dev/urandom",
        "import",
        &dir,
    );
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("stdin: line 2: "), "{}", run.stderr);
    assert!(!dir.exists());
}

/// A file given with `-i`: a header, then 64 GiB of zeros (a sparse
/// file), is refused naming the file, without reading it.
#[test]
fn a_sparse_export_file_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let input = tmp.path().join("export.jsonl");
    std::fs::write(&input, "{\"walq_export\":1}\n").unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .unwrap();
    file.set_len(64 << 30).unwrap();
    drop(file);
    let script = format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" import \"$1\" -i \"$2\"");
    let args = [
        env!("CARGO_BIN_EXE_walq"),
        dir.to_str().unwrap(),
        input.to_str().unwrap(),
    ];
    let run = sh(&script, &args);
    refused(&run, &dir, input.to_str().unwrap(), 2, "byte 0x00");
}

/// `enqueue` reads no stdin line past the payload limit (it never did:
/// this keeps it so).
#[test]
fn enqueue_refuses_a_line_over_the_payload_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let run = fed("cat /dev/zero", "enqueue", &dir);
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("stdin line 1: longer than the payload limit"),
        "{}",
        run.stderr
    );
    let stats = common::walq(&["stats", dir.to_str().unwrap(), "--json"]);
    assert!(stats.stdout.contains("\"ready\":0"), "{}", stats.stdout);
}
