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

/// The data limit of a run that imports more than it may hold (KiB, for
/// `ulimit -d`: heap and other private memory; not `ulimit -v`, which also
/// counts the queue's segment files, mapped into the address space however
/// little of them is in memory).
const DATA_KIB: u64 = 256 << 10;

/// Payloads of the large exports: 1 MiB each, starting with their number.
const PAYLOAD: usize = 1 << 20;

/// The payload of job `i`.
fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("{i:06}:").into_bytes();
    p.resize(PAYLOAD, b'a' + (i % 26) as u8);
    p
}

/// An export of `jobs` jobs with [`payload`]s, and then `last`, as lines
/// made while they are read (no file of their size on disk).
fn export_of(jobs: usize, last: &'static str) -> impl Iterator<Item = Vec<u8>> + Send + 'static {
    let header = b"{\"walq_export\":1}\n".to_vec();
    let items = (0..jobs).map(|i| {
        let mut line = br#"{"type":"job","payload":""#.to_vec();
        line.extend_from_slice(&payload(i));
        let rest = format!(r#"","key":"k{i}","due_ms":0,"attempts":0,"max_attempts":5}}"#);
        line.extend_from_slice(rest.as_bytes());
        line.push(b'\n');
        line
    });
    std::iter::once(header)
        .chain(items)
        .chain(std::iter::once(last.as_bytes().to_vec()))
}

/// Runs `walq import DIR` after the shell commands `limits` (`ulimit ...`),
/// with `TMPDIR` (where it spills) set to `tmp`, its stdin fed `lines`.
fn import_streamed(
    dir: &std::path::Path,
    tmp: &std::path::Path,
    limits: &str,
    lines: impl Iterator<Item = Vec<u8>> + Send + 'static,
) -> Run {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{limits} && exec \"$0\" import \"$1\""))
        .args([env!("CARGO_BIN_EXE_walq"), dir.to_str().unwrap()])
        .env("TMPDIR", tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = common::quiet(|| cmd.spawn().expect("spawn sh"));
    let mut input = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for line in lines {
            // A refused import stops reading: the rest is not needed.
            if input.write_all(&line).is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().expect("wait sh");
    feeder.join().expect("feeder");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The names in `dir`.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// An export whose payloads (1 GiB) are four times what the process may
/// hold imports completely: every job, in order, with its payload. Before,
/// import held every checked item in memory until it wrote, and died
/// (the allocator's abort) a quarter of the way in. The spill file it
/// uses instead is gone afterwards.
#[test]
fn an_export_larger_than_the_memory_limit_imports_completely() {
    const JOBS: usize = 1024;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let limit = format!("ulimit -d {DATA_KIB}");
    let run = import_streamed(&dir, tmp.path(), &limit, export_of(JOBS, ""));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout.trim(),
        format!("imported {JOBS} pending jobs and 0 dead letters")
    );
    assert_eq!(names(tmp.path()), ["q"], "a spill file was left");
    common::quiet(|| {
        let q = walq::Queue::open(&dir).unwrap();
        assert_eq!(q.stats().ready, JOBS as u64);
        for i in 0..JOBS {
            let job = q.dequeue_timeout(std::time::Duration::ZERO).unwrap();
            let job = job.unwrap_or_else(|| panic!("job {i} is missing"));
            assert!(job.payload() == payload(i), "job {i}: another payload");
        }
        assert!(q
            .dequeue_timeout(std::time::Duration::ZERO)
            .unwrap()
            .is_none());
    });
}

/// A bad last line after more payload than the process may hold: refused
/// naming the line, the existing target byte for byte as it was, no spill
/// file left.
#[test]
fn a_bad_last_line_of_a_large_export_writes_nothing() {
    const JOBS: usize = 300;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    common::healthy(&dir);
    let before = common::image(&dir);
    let limit = format!("ulimit -d {DATA_KIB}");
    let bad = "{\"type\":\"job\",\"due_ms\":0}\n";
    let run = import_streamed(&dir, tmp.path(), &limit, export_of(JOBS, bad));
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    let at = format!("stdin: line {}: \"payload\" is missing", JOBS + 2);
    assert!(run.stderr.contains(&at), "{}", run.stderr);
    assert!(common::image(&dir) == before, "the target changed");
    assert_eq!(names(tmp.path()), ["q"], "a spill file was left");
}

/// A spill file that cannot grow (here past the process's file size
/// limit, `EFBIG`; as root also a full tmpfs, `ENOSPC`) is an error naming
/// it, before the target is created.
#[test]
fn a_spill_file_that_cannot_grow_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    // 8 MiB in 512-byte blocks (POSIX sh); SIGXFSZ ignored so the write
    // fails instead.
    let limit = "trap '' XFSZ && ulimit -f 16384";
    let run = import_streamed(&dir, tmp.path(), limit, export_of(16, ""));
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    let spill = format!("spill file {}/walq-import-jobs-", tmp.path().display());
    assert!(run.stderr.contains(&spill), "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
    assert!(!dir.exists(), "the target was created");
    assert!(names(tmp.path()).is_empty(), "a spill file was left");
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4M,mode=0700", "walq-cli-test"])
        .arg(&small)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("no tmpfs mount here (not root?): the full disk is not tried");
        return;
    }
    let run = import_streamed(&dir, &small, "true", export_of(16, ""));
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    let spill = format!("spill file {}/walq-import-jobs-", small.display());
    assert!(run.stderr.contains(&spill), "{}", run.stderr);
    assert!(run.stderr.contains("No space left"), "{}", run.stderr);
    assert!(!dir.exists(), "the target was created");
}
