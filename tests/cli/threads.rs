//! pk-threads: named threads, join, is_alive, daemon vs joined threads.

use crate::common::*;

fn lines(out: &std::process::Output) -> Vec<String> {
    stdout(out).lines().map(String::from).collect()
}

#[test]
fn loop_counts_to_five_while_main_waits_in_join() {
    for args in [&["loop", "--interval", "0"][..], &[][..]] {
        let out = pk("threads").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stderr.is_empty());
        assert_eq!(
            lines(&out),
            [
                "thread MainThread is running...",
                "thread LoopThread is running...",
                "thread LoopThread >>> 1",
                "thread LoopThread >>> 2",
                "thread LoopThread >>> 3",
                "thread LoopThread >>> 4",
                "thread LoopThread >>> 5",
                "thread LoopThread ended.",
                "thread MainThread ended.",
            ],
            "{args:?}"
        );
    }
}

#[test]
fn loop_takes_a_name_and_a_count() {
    let out = pk("threads")
        .args(["loop", "--name", "Counter", "-n", "3", "--interval", "1ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        lines(&out),
        [
            "thread MainThread is running...",
            "thread Counter is running...",
            "thread Counter >>> 1",
            "thread Counter >>> 2",
            "thread Counter >>> 3",
            "thread Counter ended.",
            "thread MainThread ended.",
        ]
    );
}

const HEAD: [&str; 4] = [
    "thread MainThread is running...",
    "",
    "thread Worker is_alive=True",
    "thread MainThread ended.",
];

#[test]
fn a_daemon_is_cut_off_when_main_ends() {
    // The worker starts its 30s of work only after main's last line; the
    // process must end long before, and the worker's end never shows.
    for args in [
        &["daemon", "--work", "30s"][..],
        &["daemon", "--no-daemon", "--daemon", "--work", "30s"][..],
    ] {
        let out = pk("threads").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let mut want: Vec<&str> = HEAD.to_vec();
        want[1] = "thread Worker started, daemon=True";
        want.push("exit: daemon thread Worker is not waited for, is_alive=True");
        assert_eq!(lines(&out), want, "{args:?}");
        assert!(out.stderr.is_empty());
    }
}

#[test]
fn a_joined_thread_is_waited_for_before_exit() {
    let out = pk("threads")
        .args(["daemon", "--no-daemon", "--work", "50ms", "--name", "Slow"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        lines(&out),
        [
            "thread MainThread is running...",
            "thread Slow started, daemon=False",
            "thread Slow is_alive=True",
            "thread MainThread ended.",
            "exit: waiting for thread Slow (not a daemon)",
            "thread Slow ended after 50ms of work",
            "exit: thread Slow joined, is_alive=False",
        ]
    );
}

#[test]
fn strace_shows_threads_not_processes() {
    if strace_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace");
    let out = assert_cmd::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=clone,clone3,fork,vfork", "-o"])
        .arg(&log)
        .arg(bin("pk-threads"))
        .args(["loop", "--interval", "0"])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let trace = std::fs::read_to_string(&log).unwrap();
    let clones: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("clone") || l.contains("fork("))
        .collect();
    assert_eq!(clones.len(), 1, "{trace}");
    assert!(
        clones[0].contains("CLONE_VM") && clones[0].contains("CLONE_THREAD"),
        "{trace}"
    );
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &["loop", "--count", "0"],
        &["loop", "--count", "-1"],
        &["loop", "--count", "1000001"],
        &["loop", "--count", "x"],
        &["loop", "--interval", "soon"],
        &["loop", "--interval", "-1"],
        &["loop", "--name", ""],
        &["loop", "--name", "a\tb"],
        &["loop", "--name", &"x".repeat(65)],
        &["daemon", "--work", "2d"],
        &["daemon", "--work"],
        &["daemon", "--bogus"],
        &["nope"],
        &["--bogus"],
        &["loop", "extra"],
    ];
    assert_usage_table("threads", table);
}

#[test]
fn closed_stdout_exits_quietly() {
    let head = assert_quiet_on_closed_stdout("pk-threads loop -n 100000 --interval 0");
    assert_eq!(head, "thread MainThread is running...\n");
}

#[test]
fn help_documents_flags_and_output_lines() {
    assert_help(
        "threads",
        &[],
        &[
            "loop",
            "daemon",
            ">>> 1",
            "is_alive=",
            "exit: ",
            "Exit status",
        ],
    );
    assert_help("threads", &["loop"], &["--name", "--count", "--interval"]);
    assert_help(
        "threads",
        &["daemon"],
        &["--daemon", "--no-daemon", "--work", "--name"],
    );
}
