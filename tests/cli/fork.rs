//! pk-fork: fork, getpid/getppid, _exit, waitpid, copy-on-write.

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;

use crate::common::*;

/// The pids named in `child <pid> exited|killed ...` lines.
fn reaped_pids(text: &str) -> Vec<i32> {
    text.lines()
        .filter(|l| l.contains(" exited, status=") || l.contains(" killed by signal "))
        .filter_map(|l| pid_after(l, "child "))
        .collect()
}

#[test]
fn default_run_forks_one_child_and_reaps_it() {
    let out = pk("fork").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    let parent = pid_after(lines[0], "parent ").unwrap();
    assert!(
        lines[0].contains(": x=100 at 0x") && lines[0].ends_with("forking 1 child"),
        "{text}"
    );
    let child = pid_after(lines[1], "child ").unwrap();
    assert_ne!(child, parent);
    assert_eq!(
        lines[1],
        format!("child {child} (parent {parent}): started, x=100")
    );
    assert!(
        lines[2].starts_with(&format!("child {child}: set x=101 at 0x")),
        "{text}"
    );
    assert_eq!(lines[3], format!("child {child} exited, status=0"));
    assert!(
        lines[4].starts_with("parent still sees x=100 at 0x"),
        "{text}"
    );
    // Copy-on-write: the same virtual address in both, different values.
    let addr = |l: &str| l.rsplit(' ').next().unwrap().to_string();
    assert_eq!(addr(lines[2]), addr(lines[4]));
    assert!(out.stderr.is_empty());
    assert!(leftovers(&[child]).is_empty());
}

#[test]
fn exit_code_is_reported_as_wexitstatus() {
    // os._exit(3) in the child; os.WEXITSTATUS(status) == 3 in the parent.
    let out = pk("fork").args(["--exit-code", "3"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "without --propagate the demo itself succeeds"
    );
    let text = stdout(&out);
    let pid = reaped_pids(&text)[0];
    assert!(
        text.contains(&format!("child {pid} exited, status=3\n")),
        "{text}"
    );
}

#[test]
fn signal_kill_is_reported_with_its_name() {
    let out = pk("fork").args(["--signal", "KILL"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let pid = reaped_pids(&text)[0];
    assert!(
        text.contains(&format!("child {pid} killed by signal 9 (SIGKILL)\n")),
        "{text}"
    );
}

#[test]
fn signal_by_number_and_by_full_name() {
    for sig in ["15", "SIGTERM", "term"] {
        let out = pk("fork").args(["-q", "--signal", sig]).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(
            stdout(&out).ends_with("killed by signal 15 (SIGTERM)\n"),
            "{sig}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn signal_the_parent_ignores_still_kills_the_child() {
    // A parent that ignores SIGHUP (as under nohup) passes that to its
    // children; the child restores the default before raising it.
    let out = bash("trap '' HUP; pk-fork -q --signal HUP")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).ends_with("killed by signal 1 (SIGHUP)\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn fifty_children_are_forked_first_and_all_reaped() {
    let out = pk("fork")
        .args(["--children", "50", "--sleep", "100ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let started: HashSet<i32> = lines
        .iter()
        .filter(|l| l.contains("): started, x=100"))
        .filter_map(|l| pid_after(l, "child "))
        .collect();
    let reaped = reaped_pids(&text);
    assert_eq!(started.len(), 50, "{text}");
    assert_eq!(reaped.len(), 50);
    assert_eq!(
        reaped.iter().copied().collect::<HashSet<_>>(),
        started,
        "every started child is reaped once"
    );
    // Every child gets the next value of x in its own copy; the parent keeps 100.
    let sets: HashSet<String> = lines
        .iter()
        .filter_map(|l| {
            l.split("set x=")
                .nth(1)?
                .split(' ')
                .next()
                .map(String::from)
        })
        .collect();
    assert_eq!(sets, (101..=150).map(|v| v.to_string()).collect());
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("parent still sees x=100 ")
    );
    // Children still sleeping when a non-waiting parent exits would show up
    // here as orphans re-parented to this test process.
    assert!(
        leftovers(&reaped).is_empty(),
        "pk-fork left children behind"
    );
}

#[test]
fn a_thousand_children_leave_nothing_behind() {
    let out = pk("fork")
        .args(["--children", "1000", "--quiet", "--sleep", "20ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let reaped = reaped_pids(&stdout(&out));
    assert_eq!(reaped.len(), 1000);
    assert_eq!(reaped.iter().collect::<HashSet<_>>().len(), 1000);
    assert!(leftovers(&reaped).is_empty());
}

#[test]
fn quiet_keeps_only_result_lines() {
    let out = pk("fork")
        .args(["-q", "-n", "3", "-x", "4"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines()
            .all(|l| l.starts_with("child ") && l.ends_with(" exited, status=4")),
        "{text}"
    );
}

#[test]
fn sleep_runs_in_the_child_before_it_exits() {
    let out = pk("fork")
        .args(["-q", "--sleep", "50ms", "-x", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).ends_with("exited, status=5\n"));
}

#[test]
fn propagate_passes_the_child_status_through() {
    let out = pk("fork")
        .args(["--exit-code", "3", "--propagate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out = pk("fork")
        .args(["--signal", "KILL", "--propagate"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(137),
        "128 + SIGKILL, as the shell shows it"
    );
    assert!(
        out.status.signal().is_none(),
        "pk-fork itself exits; only its child was killed"
    );
    let out = pk("fork").args(["--propagate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &["--children", "0"],
        &["--children", "-1"],
        &["--children", "abc"],
        &["--children", "4097"],
        &["--children", "99999999999999999999"],
        &["--children"],
        &["--exit-code", "256"],
        &["--exit-code", "-1"],
        &["--signal", "NOPE"],
        &["--signal", "0"],
        &["--signal", "65"],
        &["--signal", "CHLD"],
        &["--signal", "STOP"],
        &["--signal", "KILL", "--exit-code", "3"],
        &["--exit-message", "bye", "--exit-code", "3"],
        &["-m", "bye", "--signal", "TERM"],
        &["--exit-message"],
        &["--sleep", "-1"],
        &["--sleep", "soon"],
        &["--sleep", "2d"],
        &["--bogus"],
        &["extra"],
    ];
    assert_usage_table("fork", table);
}

#[test]
fn fork_failure_is_exit_71_and_forked_children_are_reaped() {
    // RLIMIT_NPROC caps the processes of one user; root is exempt, so drop
    // to nobody first. With a limit of 3, some of the 10 forks fail.
    let mut words = as_nobody();
    words.extend([
        "prlimit".into(),
        "--nproc=3".into(),
        bin("pk-fork").display().to_string(),
        "-n".into(),
        "10".into(),
        "-q".into(),
    ]);
    let out = command(&words).output().unwrap();
    assert_one_line_error(&out, "fork", 71);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fork(child ") && err.ends_with("Resource temporarily unavailable\n"),
        "{err}"
    );
    let reaped = reaped_pids(&stdout(&out));
    assert!(reaped.len() < 10, "the limit must have stopped some forks");
    assert!(leftovers(&reaped).is_empty());
}

#[test]
fn closed_stdout_exits_quietly() {
    // 1000 children print about 135 KB, more than a pipe holds (64 KiB), so
    // pk-fork is still writing when head exits: the write must hit EPIPE.
    let head = assert_quiet_on_closed_stdout("pk-fork -n 1000");
    assert!(head.starts_with("parent "), "{head}");
}

#[test]
fn ctrl_c_on_the_process_group_ends_parent_and_children() {
    // Like Ctrl-C at a terminal: SIGINT goes to the whole foreground group.
    let mut cmd = pk_std_default_signals("fork");
    cmd.args(["--children", "3", "--sleep", "60"]);
    let mut run = Running::start(cmd, true);
    let mut pids = Vec::new();
    while pids.len() < 3 {
        let seen = run.wait_for(|l| l.contains("): started"));
        pids.push(pid_after(seen.last().unwrap(), "child ").unwrap());
    }
    let pgid = nix::unistd::Pid::from_raw(-(run.child.id() as i32));
    nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGINT).unwrap();
    assert_signal(&run.wait(), libc::SIGINT);
    // The children die of the same signal: each is soon gone or a zombie
    // (a zombie orphan is re-parented to this test process and reaped here).
    for pid in pids {
        assert_gone(pid);
    }
}

#[test]
fn help_documents_flags_and_output_lines() {
    assert_help(
        "fork",
        &[],
        &[
            "--children",
            "--exit-code",
            "--signal",
            "--sleep",
            "--propagate",
            "--quiet",
            "--exit-message",
            "sys.exit(\"MSG\")",
            "os._exit(K)",
            "exited, status=",
            "killed by signal",
            "parent still sees x=",
        ],
    );
}

#[test]
fn strace_shows_one_fork_and_one_wait4_per_child() {
    if strace_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace");
    let out = assert_cmd::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=fork,vfork,clone,clone3,wait4",
            "-o",
        ])
        .arg(&log)
        .arg(bin("pk-fork"))
        .args(["--children", "3", "--quiet"])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_success(&out);
    let trace = std::fs::read_to_string(&log).unwrap();
    let reaped = reaped_pids(&stdout(&out));
    // A clone interrupted by a signal is logged as `= ? ERESTARTNOINTR` and
    // restarted: count only the calls that returned a child pid.
    let forks: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("clone") || l.contains("fork("))
        .filter(|l| {
            l.rsplit("= ")
                .next()
                .is_some_and(|r| r.parse::<i32>().is_ok())
        })
        .collect();
    assert_eq!(forks.len(), 3, "{trace}");
    assert!(
        forks.iter().all(|l| !l.contains("CLONE_VM")),
        "a real fork, not a thread or vfork: {trace}"
    );
    for pid in reaped {
        assert!(
            trace
                .lines()
                .any(|l| l.ends_with(&format!("= {pid}")) && l.contains("wait4")),
            "child {pid} never reaped: {trace}"
        );
    }
    assert!(!trace.contains("wait4(-1"), "never waitpid(-1): {trace}");
}

#[test]
fn the_shell_script_reads_propagated_statuses() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fork-status.sh");
    let out = bash(&format!("bash {script}")).output().unwrap();
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        "pk-fork --exit-code 0 -> $?=0: ok\n\
         pk-fork --exit-code 3 -> $?=3: failed with 3\n\
         pk-fork --signal TERM -> $?=143: killed by signal 15 (SIGTERM)\n\
         pk-fork --signal KILL -> $?=137: killed by signal 9 (SIGKILL)\n"
    );
}

#[test]
fn sys_exit_with_a_message_prints_it_on_stderr_and_exits_1() {
    // Python: sys.exit("no more tickets") -> the message on stderr, status 1.
    let out = pk("fork")
        .args([
            "--children",
            "3",
            "--exit-message",
            "no more tickets",
            "--propagate",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the children's status, propagated"
    );
    let text = stdout(&out);
    let pids = reaped_pids(&text);
    assert_eq!(pids.len(), 3, "{text}");
    for pid in &pids {
        assert!(
            text.contains(&format!("child {pid} exited, status=1\n")),
            "{text}"
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "no more tickets\n".repeat(3),
        "the message as it is, one line per child"
    );
    assert!(leftovers(&pids).is_empty());
}

#[test]
fn exit_message_and_exit_code_end_a_child_as_python_s_do() {
    // The same endings in python3: stderr and status must match a child's.
    let python = |code: &str| {
        command(&["python3".into(), "-c".into(), code.into()])
            .output()
            .ok()
            .filter(|o| o.status.code().is_some())
    };
    let Some(py) = python("import sys; sys.exit('no more tickets')") else {
        eprintln!("skipped: python3 is not available");
        return;
    };
    let ours = pk("fork")
        .args(["-q", "-p", "--exit-message", "no more tickets"])
        .output()
        .unwrap();
    assert_eq!(py.status.code(), Some(1));
    assert_eq!(ours.status.code(), py.status.code());
    assert_eq!(ours.stderr, py.stderr);

    let py = python("import os; os._exit(3)").expect("python3 ran above");
    let ours = pk("fork")
        .args(["-q", "-p", "--exit-code", "3"])
        .output()
        .unwrap();
    assert_eq!(py.status.code(), Some(3));
    assert_eq!(ours.status.code(), py.status.code());
    assert!(
        py.stderr.is_empty() && ours.stderr.is_empty(),
        "os._exit prints nothing"
    );
}
