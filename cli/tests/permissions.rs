//! A queue the user running `walq` may not read (`EACCES`): every command
//! exits with the code docs/cli.md gives (3, unreadable, for the commands
//! that only read; 6, failed, for the ones that write, which refuse
//! another user's queue) and names the path it could not read, without a
//! panic and without changing a byte. The tests run the binary as user
//! 65534 (`setpriv`), so they need root; as another user, or without
//! `setpriv` (util-linux), they say so and check nothing. CI runs them as
//! root.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{healthy, image, quiet, Run};

/// The unprivileged user the binary runs as ("nobody").
const NOBODY: u32 = 65534;

/// Whether these tests can run here: as root, with `setpriv`.
fn can_switch_user(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{test}: not checked: running as user {NOBODY} needs root");
        return false;
    }
    let setpriv = Command::new("setpriv").arg("--version").output();
    if !setpriv.is_ok_and(|o| o.status.success()) {
        eprintln!("{test}: not checked: no setpriv (util-linux) here");
        return false;
    }
    true
}

/// A temporary directory that user 65534 may enter, holding a copy of the
/// built binary it may run (the target directory may be under a path it
/// cannot enter, a home directory of mode 0700, say).
fn reachable_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = tmp.path().join("walq");
    // While no child is forked: one forked while the copy is open for
    // writing would make its exec fail (ETXTBSY).
    quiet(|| std::fs::copy(env!("CARGO_BIN_EXE_walq"), &bin)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (tmp, bin)
}

/// Runs `bin` with `args` as user and group 65534, with no supplementary
/// groups, stdin empty.
fn as_nobody(bin: &Path, args: &[&str]) -> Run {
    let ids = [
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_string(),
    ];
    let mut cmd = Command::new("setpriv");
    cmd.args(ids)
        .arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = quiet(|| cmd.spawn())
        .expect("spawn setpriv")
        .wait_with_output()
        .expect("wait setpriv");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `run` ended with `code`, printed nothing on stdout, and said on stderr
/// (as `walq: ...`, no panic) that `path` could not be read.
fn refused(args: &[&str], run: &Run, code: i32, path: &Path) {
    let said = format!("{args:?}: exit {}\n{}{}", run.code, run.stdout, run.stderr);
    assert_eq!(run.code, code, "{said}");
    assert!(run.stdout.is_empty(), "{said}");
    assert!(run.stderr.starts_with("walq: "), "{said}");
    assert!(!run.stderr.contains("panicked"), "{said}");
    let named = format!("(file {})", path.display());
    assert!(run.stderr.contains(&named), "{said}");
    assert!(run.stderr.contains("Permission denied"), "{said}");
}

/// A root-owned queue of mode 0700 (as walq makes it), run against as
/// user 65534: the read-only commands exit 3 naming the directory they
/// could not list (they named `LOCK` in it, the first file tried); the
/// writing commands exit 6 saying whose queue it is (`cancel`, `dead
/// purge` and `dead redrive` exited 3 when the queue could not be read,
/// as their read-only look came before that check). Nothing changes.
#[test]
fn a_queue_that_cannot_be_read_is_named_with_its_exit_code() {
    if !can_switch_user("a_queue_that_cannot_be_read_is_named_with_its_exit_code") {
        return;
    }
    let (tmp, bin) = reachable_dir();
    let q = tmp.path().join("q");
    healthy(&q);
    let mode = std::fs::metadata(&q).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "walq makes its directory 0700");
    let export = tmp.path().join("export.jsonl");
    let into = tmp.path().join("salvaged");
    let d = q.to_str().unwrap();
    let (e, n) = (export.to_str().unwrap(), into.to_str().unwrap());
    let exported = common::walq(&["export", d, "-o", e]);
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    std::fs::set_permissions(&export, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = image(&q);
    let readers: [&[&str]; 9] = [
        &["stats", d],
        &["peek", d],
        &["show", d, "1"],
        &["verify", d],
        &["dump", d],
        &["export", d],
        &["dead", "list", d],
        &["dead", "show", d, "5"],
        &["salvage", d, "--into", n],
    ];
    for args in readers {
        refused(args, &as_nobody(&bin, args), 3, &q);
    }
    assert!(!into.exists(), "salvage created its target");
    let writers: [&[&str]; 5] = [
        &["enqueue", d, "x"],
        &["import", d, "-i", e],
        &["cancel", d, "1"],
        &["dead", "purge", d, "--all"],
        &["dead", "redrive", d, "--all"],
    ];
    for args in writers {
        let run = as_nobody(&bin, args);
        let said = format!("{args:?}: exit {}\n{}{}", run.code, run.stdout, run.stderr);
        assert_eq!(run.code, 6, "{said}");
        let whose = format!("walq: {d}: belongs to user id 0, and walq runs as user id {NOBODY}");
        assert!(run.stderr.starts_with(&whose), "{said}");
        // One sentence: no run of spaces from a broken line continuation.
        assert!(run.stderr.contains("this command would write"), "{said}");
        assert!(run.stderr.contains("nothing was changed"), "{said}");
    }
    assert!(image(&q) == before, "the queue changed");
    // The control: the same copy of the binary reads the queue as 65534
    // once the queue is 65534's.
    chown_all(&q, NOBODY);
    let own = as_nobody(&bin, &["stats", d]);
    assert_eq!(own.code, 0, "{}{}", own.stdout, own.stderr);
}

/// Gives `dir` and every file in it to `uid` (and the group of that id).
fn chown_all(dir: &Path, uid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        std::os::unix::fs::chown(entry.unwrap().path(), Some(uid), Some(uid)).unwrap();
    }
}

/// A queue of user 65534 holding one file it may not read (`dead.wal`
/// left root-owned, mode 0600, by a command run as root): the read-only
/// commands exit 3 and name that file.
#[test]
fn a_file_of_the_queue_that_cannot_be_read_is_named() {
    if !can_switch_user("a_file_of_the_queue_that_cannot_be_read_is_named") {
        return;
    }
    let (tmp, bin) = reachable_dir();
    let q = tmp.path().join("q");
    healthy(&q);
    chown_all(&q, NOBODY);
    let dead = q.join("dead.wal");
    std::os::unix::fs::chown(&dead, Some(0), Some(0)).unwrap();
    let d = q.to_str().unwrap();
    let before = image(&q);
    let readers: [&[&str]; 5] = [
        &["stats", d],
        &["peek", d],
        &["verify", d],
        &["export", d],
        &["dead", "list", d],
    ];
    for args in readers {
        refused(args, &as_nobody(&bin, args), 3, &dead);
    }
    assert!(image(&q) == before, "the queue changed");
}
