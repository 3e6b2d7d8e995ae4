//! pk-spawn: fork + dup2 + exec, stdin bytes, poll-captured output, status.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;

/// 1 MiB of every byte value, ending in a newline.
fn mixed_bytes(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    *v.last_mut().unwrap() = b'\n';
    v
}

#[test]
fn call_passes_output_through_and_reports_the_status() {
    let out = pk("spawn")
        .args(["--", "echo", "hello", "world"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "hello world\nexit status 0\n");
    assert!(out.stderr.is_empty());
}

#[test]
fn the_commands_exit_status_is_passed_through() {
    let out = pk("spawn")
        .args(["--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out), "exit status 7\n");
    let out = pk("spawn").args(["-q", "false"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "--quiet adds nothing");
}

#[test]
fn a_signal_is_128_plus_n() {
    let out = pk("spawn")
        .args(["--", "sh", "-c", "kill -KILL $$"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(137));
    assert_eq!(
        stdout(&out),
        "exit status 137: killed by signal 9 (SIGKILL)\n"
    );
}

#[test]
fn the_child_gets_sigpipe_back_to_default() {
    // Rust ignores SIGPIPE and exec keeps ignored signals ignored: without
    // the reset, `kill -PIPE $$` would do nothing.
    let out = pk("spawn")
        .args(["--", "sh", "-c", "kill -PIPE $$; exit 9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", stdout(&out));
    // And /proc shows SIGPIPE (bit 13-1) neither ignored nor blocked.
    let out = pk("spawn")
        .args([
            "-q",
            "--",
            "grep",
            "-E",
            "^Sig(Ign|Blk):",
            "/proc/self/status",
        ])
        .output()
        .unwrap();
    let text = stdout(&out);
    let mask = |name: &str| {
        let l = text.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{text}");
    assert_eq!(mask("SigBlk:"), 0, "{text}");
}

#[test]
fn a_missing_command_is_127_with_one_line() {
    for cmd in ["no-such-command-here", "/nonexistent/dir/prog", ""] {
        let out = pk("spawn").args(["--", cmd]).output().unwrap();
        assert_one_line_error(&out, "spawn", 127);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err,
            format!("pk-spawn: execvp({cmd}): No such file or directory\n")
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_file_that_cannot_execute_is_126() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.txt");
    std::fs::write(&data, "not a program\n").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
    for target in [data.as_path(), dir.path()] {
        let out = pk("spawn").arg("--").arg(target).output().unwrap();
        assert_one_line_error(&out, "spawn", 126);
        assert!(String::from_utf8_lossy(&out.stderr).ends_with("): Permission denied\n"));
    }
}

#[test]
fn a_script_without_shebang_runs_with_sh_as_execvp_does() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("plain");
    std::fs::write(&script, "echo from a plain script \"$1\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = pk("spawn")
        .arg("-q")
        .arg(&script)
        .arg("arg1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "from a plain script arg1\n");
}

#[test]
fn path_lookup_finds_commands_in_path() {
    let out = bash("PATH=/nonexistent:$PATH pk-spawn -q -- sh -c 'echo found'")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "found\n");
}

#[test]
fn capture_labels_both_streams_and_feeds_input() {
    // Popen.communicate(input): stdin bytes in, stdout and stderr back.
    let out = pk("spawn")
        .args([
            "--input",
            "hello\nworld",
            "--capture",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo oops >&2; exit 4",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        stdout(&out),
        "stdout: HELLO\nstdout: WORLD\nstderr: oops\n\
         captured stdout=11 bytes, stderr=5 bytes\nexit status 4\n"
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn ten_mib_on_stdout_and_stderr_at_once_does_not_deadlock() {
    // Both streams are written at the same time; a parent reading only one
    // pipe at a time would leave the other full and the child stuck.
    let script = "head -c 10485760 /dev/zero | tr '\\0' o & \
                  head -c 10485760 /dev/zero | tr '\\0' e >&2; wait";
    let out = pk("spawn")
        .args(["--capture", "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.ends_with("captured stdout=10485760 bytes, stderr=10485760 bytes\nexit status 0\n"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    let mut lines = text.lines();
    let o = lines.next().unwrap();
    assert!(o.starts_with("stdout: ooo") && o.len() == 8 + 10485760);
    let e = lines.next().unwrap();
    assert!(e.starts_with("stderr: eee") && e.len() == 8 + 10485760);
}

#[test]
fn one_mib_of_input_into_cat_comes_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in");
    let data = mixed_bytes(1 << 20);
    std::fs::write(&file, &data).unwrap();
    // Inherited stdout: cat's bytes are pk-spawn's bytes, exactly.
    let out = pk("spawn")
        .arg("-q")
        .arg("--input-file")
        .arg(&file)
        .args(["--", "cat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == data, "stdout differs from the input");
    // Captured: input written while output is read in the same poll loop.
    let out = pk("spawn")
        .arg("--input-file")
        .arg(&file)
        .args(["--capture", "--", "cat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = &out.stdout;
    let tail = b"captured stdout=1048576 bytes, stderr=0 bytes\nexit status 0\n";
    assert!(text.ends_with(tail));
    let body = &text[..text.len() - tail.len()];
    let mut back = Vec::new();
    for line in body.strip_suffix(b"\n").unwrap().split(|&b| b == b'\n') {
        back.extend_from_slice(line.strip_prefix(b"stdout: ").expect("every line labelled"));
        back.push(b'\n');
    }
    assert!(back == data, "captured bytes differ from the input");
}

#[test]
fn a_child_that_ignores_its_input_is_fine() {
    // true exits without reading: the rest of the input meets EPIPE, which
    // is not an error.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in");
    std::fs::write(&file, vec![b'x'; 4 << 20]).unwrap();
    let out = pk("spawn")
        .arg("--input-file")
        .arg(&file)
        .args(["--capture", "true"])
        .output()
        .unwrap();
    assert_success(&out);
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &[],
        &["--"],
        &["--capture"],
        &["--input"],
        &["--input", "x", "--input-file", "/etc/hostname", "cat"],
        &["--bogus", "true"],
    ];
    assert_usage_table("spawn", table);
}

#[test]
fn a_missing_input_file_is_66() {
    let out = pk("spawn")
        .args(["--input-file", "/nonexistent/in", "cat"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "spawn", 66);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pk-spawn: read(/nonexistent/in): No such file or directory\n"
    );
}

#[test]
fn closed_stdout_exits_quietly() {
    let head = assert_quiet_on_closed_stdout("pk-spawn --capture -- seq 100000");
    assert_eq!(head, "stdout: 1\n");
}

#[test]
fn help_documents_flags_output_and_statuses() {
    assert_help(
        "spawn",
        &[],
        &[
            "--input",
            "--input-file",
            "--capture",
            "--quiet",
            "stdout: <line>",
            "stderr: <line>",
            "exit status <N>",
            "127",
            "126",
            "128+N",
            "SIGPIPE",
        ],
    );
}

/// Run pk-spawn with `args` under `strace -f`: the exit code, the trace,
/// pk-spawn's pid and its child's. `None` where strace is not installed.
fn strace_spawn(args: &[&str]) -> Option<(Option<i32>, String, i32, i32)> {
    if strace_missing() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace");
    let out = assert_cmd::Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&log)
        .arg(bin("pk-spawn"))
        .args(args)
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    let trace = std::fs::read_to_string(&log).unwrap();
    // pk-spawn is single-threaded: the first pid other than its own that
    // shows up in the trace is the forked child.
    let pid_of = |l: &str| l.split_whitespace().next()?.parse::<i32>().ok();
    let parent = trace.lines().next().and_then(pid_of).expect("a trace");
    let child = trace
        .lines()
        .filter_map(pid_of)
        .find(|&p| p != parent)
        .expect("a fork in the trace");
    Some((out.status.code(), trace, parent, child))
}

/// Whether the trace shows `parent` reaping exactly `child`.
fn reaps(trace: &str, parent: i32, child: i32) -> bool {
    trace
        .lines()
        .any(|l| l.starts_with(&format!("{parent} ")) && l.contains(&format!("wait4({child},")))
        && !trace.contains("wait4(-1")
}

#[test]
fn strace_a_failed_exec_is_still_reaped() {
    let Some((code, trace, parent, child)) = strace_spawn(&["no-such-command-here"]) else {
        return;
    };
    assert_eq!(code, Some(127));
    assert!(reaps(&trace, parent, child), "{trace}");
    assert!(
        trace
            .lines()
            .any(|l| l.starts_with(&format!("{child} ")) && l.contains("exit_group(127")),
        "{trace}"
    );
}

#[test]
fn strace_shows_only_safe_calls_between_fork_and_exec() {
    let Some((code, trace, parent, child)) =
        strace_spawn(&["-q", "--capture", "--input", "x", "--", "cat"])
    else {
        return;
    };
    assert_eq!(code, Some(0));
    let calls: Vec<&str> = trace
        .lines()
        .filter(|l| l.starts_with(&format!("{child} ")))
        .map(|l| l[child.to_string().len() + 1..].trim_start())
        // strace splits calls that overlap with the parent's.
        .filter(|l| !l.starts_with("<..."))
        .take_while(|l| !l.starts_with("execve("))
        .map(|l| l.split('(').next().unwrap())
        .collect();
    for call in &calls {
        assert!(
            [
                "rt_sigprocmask",
                "rt_sigaction",
                "dup2",
                "dup3",
                "set_robust_list",
                "gettid"
            ]
            .contains(call),
            "{call} between fork and exec: {calls:?}"
        );
    }
    assert!(
        reaps(&trace, parent, child),
        "the parent reaps exactly its child: {trace}"
    );
    assert!(
        calls.contains(&"rt_sigprocmask") && calls.contains(&"rt_sigaction"),
        "{calls:?}"
    );
}

#[test]
fn closed_stdin_and_stderr_do_not_confuse_the_redirections() {
    // With 0 and 2 closed, pipe2 hands out those numbers; the sources are
    // moved above 2 before any dup2.
    let out = bash("pk-spawn -c --input abc -- sh -c 'cat; echo err >&2' 0<&- 2>&-")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "stdout: abc\nstderr: err\ncaptured stdout=3 bytes, stderr=4 bytes\nexit status 0\n"
    );
}
