//! pk-shm: a shared byte array and a shared counter across fork.

use crate::common::*;

fn counter(args: &[&str]) -> (u64, u64, u64) {
    let out = pk("shm")
        .arg("counter")
        .args(args)
        .arg("--quiet")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let line = text.lines().next().expect("a result line");
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
    };
    let (e, g, l) = (field("expected="), field("got="), field("lost="));
    assert_eq!(e, g + l, "{line}");
    (e, g, l)
}

#[test]
fn bytes_changed_by_the_child_are_seen_by_the_parent() {
    let check = ShmCheck::start();
    let out = pk("shm").arg("bytes").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    let parent = pid_after(lines[0], "parent ").unwrap();
    assert_eq!(
        lines[0],
        format!("parent {parent}: array=b'Hello' (5 bytes, memfd mapped MAP_SHARED)")
    );
    let child = pid_after(lines[1], "child ").unwrap();
    assert_ne!(child, parent);
    let bytes: Vec<String> = lines[1..6]
        .iter()
        .map(|l| l.split(": ").nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        bytes,
        [
            "arr[0]=72 'H'",
            "arr[1]=101 'e'",
            "arr[2]=108 'l'",
            "arr[3]=108 'l'",
            "arr[4]=111 'o'"
        ]
    );
    assert_eq!(lines[6], format!("child {child}: set arr[0]=104 'h'"));
    assert_eq!(lines[7], format!("child {child} exited, status=0"));
    assert_eq!(lines[8], format!("parent {parent}: array=b'hello'"));
    assert_eq!(lines[9], "value=hello");
    assert!(out.stderr.is_empty());
    assert!(leftovers(&[child]).is_empty());
    check.finish();
}

#[test]
fn bytes_with_other_text_and_quiet() {
    let out = pk("shm")
        .args(["bytes", "--text", "WORLD!", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "value=wORLD!\n");
    // Non-ASCII and control bytes are shown escaped, one byte at a time.
    let out = pk("shm").args(["bytes", "--text", "é\t"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("array=b'\\xc3\\xa9\\t'"), "{text}");
    assert!(text.ends_with("value=\\xc3\\xa9\\t\n"), "{text}");
}

#[test]
fn lock_and_atomic_never_lose_an_update() {
    let check = ShmCheck::start();
    for sync in ["lock", "atomic"] {
        for extra in [&[][..], &["--yield"][..]] {
            let mut args = vec!["--procs", "10", "--iters", "50", "--sync", sync];
            args.extend_from_slice(extra);
            assert_eq!(counter(&args), (500, 500, 0), "{args:?}");
        }
        let args = ["--procs", "4", "--iters", "20000", "--sync", sync];
        assert_eq!(counter(&args), (80_000, 80_000, 0), "{args:?}");
    }
    check.finish();
}

#[test]
fn no_sync_with_yield_loses_updates_every_time() {
    // Ten processes, released together, each load; yield; store. Another
    // process runs between the load and the store, and its update is lost.
    for _ in 0..5 {
        let (e, g, l) = counter(&[
            "--procs", "10", "--iters", "50", "--sync", "none", "--yield",
        ]);
        assert_eq!(e, 500);
        assert!(l > 0 && g < 500, "no update lost: got={g}");
    }
}

#[test]
fn the_full_output_names_the_setup() {
    let out = pk("shm")
        .args(["counter", "-n", "2", "-i", "5", "--sync", "atomic"])
        .output()
        .unwrap();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].ends_with(": 2 processes x 5 increments, sync=atomic"),
        "{text}"
    );
    assert_eq!(lines[1], "expected=10 got=10 lost=0");
    assert!(
        lines[2].starts_with("elapsed=") && lines[2].contains(" ns_per_op="),
        "{text}"
    );
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    // No subcommand: clap prints the help on stderr, exit 2.
    assert_eq!(pk("shm").output().unwrap().status.code(), Some(2));
    let table: &[&[&str]] = &[
        &["nope"],
        &["bytes", "--text", ""],
        &["bytes", "--text", &"x".repeat(4097)],
        &["bytes", "extra"],
        &["counter", "--procs", "0"],
        &["counter", "--procs", "-1"],
        &["counter", "--procs", "1025"],
        &["counter", "--procs", "abc"],
        &["counter", "--iters", "0"],
        &["counter", "--iters", "100000001"],
        &["counter", "--iters", "99999999999999999999999"],
        &["counter", "--sync", "maybe"],
        &["counter", "--sync"],
        &["counter", "--bogus"],
    ];
    assert_usage_table("shm", table);
}

#[test]
fn help_documents_flags_and_output_lines() {
    assert_help(
        "shm",
        &[],
        &[
            "bytes",
            "counter",
            "--quiet",
            "value=hello",
            "expected=<N*M> got=<count> lost=",
            "Exit status",
        ],
    );
    assert_help(
        "shm",
        &["counter"],
        &["--procs", "--iters", "--sync", "--yield"],
    );
}

#[test]
fn closed_stdout_exits_quietly() {
    let out = bash(
        "set -o pipefail; pk-shm bytes --text \"$(printf '%04000d' 0)\" | head -1; echo status=$?",
    )
    .output()
    .unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("parent "), "{text}");
    assert!(text.ends_with("status=141\n"), "{text}");
    assert!(out.stderr.is_empty());
}
