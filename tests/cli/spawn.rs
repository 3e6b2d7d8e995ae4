//! pk-spawn: clone(CLONE_VM|CLONE_VFORK) + dup2 + exec, stdin bytes or a
//! streamed file, poll-captured output, status; and the wrapper's flags,
//! each checked against what timeout(1) or env(1) do with the same command.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Stdio;

use nix::sys::signal::Signal;

use crate::common::*;

/// 1 MiB of every byte value, ending in a newline.
fn mixed_bytes(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    *v.last_mut().unwrap() = b'\n';
    v
}

/// The status a shell would put in `$?`: the code, or 128+N for signal N.
fn shell_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or(status.signal().map(|s| 128 + s))
        .expect("exited or killed")
}

/// Run `words` (a program and its arguments) as the tests run pk-* binaries
/// (own process group, stdin /dev/null, the default timeout).
fn run(words: &[&str]) -> std::process::Output {
    command(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
        .output()
        .unwrap()
}

/// `pk-spawn ARGS` as words for [`run`].
fn pk_spawn(args: &[&str]) -> Vec<String> {
    std::iter::once(bin("pk-spawn").display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}

#[test]
fn nothing_is_added_to_the_commands_output() {
    // Bytes, a NUL and both streams: pk-spawn's stdout and stderr are the
    // command's own, exactly.
    let script = "printf 'a\\0b\\n'; echo err >&2; printf 'no newline'";
    let direct = run(&["sh", "-c", script]);
    let wrapped = pk("spawn")
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(wrapped.stdout, direct.stdout);
    assert_eq!(wrapped.stderr, direct.stderr);
    assert_eq!(wrapped.status.code(), Some(0));
    // In a pipeline too.
    let out = bash("pk-spawn -- seq 3 | tr '\\n' ,").output().unwrap();
    assert_eq!(stdout(&out), "1,2,3,");
}

#[test]
fn verbose_reports_go_to_stderr() {
    let out = pk("spawn")
        .args(["-v", "--", "echo", "hello", "world"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "hello world\n");
    let err = String::from_utf8_lossy(&out.stderr);
    let pid = pid_after(&err, "pk-spawn: exit status 0: child ").expect("a pid");
    assert_eq!(
        err,
        format!("pk-spawn: exit status 0: child {pid} exited, status=0 (Python: returncode 0)\n")
    );
    // --quiet wins over --verbose.
    let out = pk("spawn").args(["-v", "-q", "false"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn the_commands_exit_status_is_passed_through() {
    let out = pk("spawn")
        .args(["--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn a_signal_is_128_plus_n() {
    let out = pk("spawn")
        .args(["-v", "--", "sh", "-c", "kill -KILL $$"])
        .output()
        .unwrap();
    // pk-spawn dies of the same signal, as timeout(1) does: `$?` is 137.
    assert_eq!(shell_code(out.status), 137);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .ends_with(" killed by signal 9 (SIGKILL) (Python: returncode -9)\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn signal_dispositions_are_what_env_gives_but_sigpipe() {
    // Rust ignores SIGPIPE and exec keeps ignored signals ignored: without
    // the reset, `kill -PIPE $$` would do nothing.
    let out = pk("spawn")
        .args(["--", "sh", "-c", "kill -PIPE $$; exit 9"])
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE));
    // Another ignored signal stays ignored (nohup), the mask is empty: the
    // same as env(1), which changes neither, started by the same shell.
    let out = bash(
        "trap '' USR2; grep=\"grep -E ^Sig(Ign|Blk): /proc/self/status\"; \
         env $grep; echo --; pk-spawn -- $grep",
    )
    .output()
    .unwrap();
    let text = stdout(&out);
    let (by_env, by_pk) = text.split_once("--\n").unwrap();
    assert_eq!(by_pk, by_env);
    let mask = |name: &str| {
        let l = by_pk.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_ne!(mask("SigIgn:") & (1 << (libc::SIGUSR2 - 1)), 0, "{text}");
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
    // A newline in the name is shown escaped: still one line.
    let out = pk("spawn").args(["--", "no\nsuch"]).output().unwrap();
    assert_one_line_error(&out, "spawn", 127);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pk-spawn: execvp(no\\nsuch): No such file or directory\n"
    );
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
    let out = pk("spawn").arg(&script).arg("arg1").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "from a plain script arg1\n");
}

#[test]
fn capture_labels_both_streams_and_feeds_input() {
    // Popen.communicate(input): stdin bytes in, stdout and stderr back.
    let out = pk("spawn")
        .args([
            "-v",
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
    assert_eq!(stdout(&out), "stdout: HELLO\nstdout: WORLD\nstderr: oops\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("pk-spawn: captured stdout=11 bytes, stderr=5 bytes\n"),
        "{err}"
    );
}

#[test]
fn ten_mib_on_stdout_and_stderr_at_once_does_not_deadlock() {
    // Both streams are written at the same time; a parent reading only one
    // pipe at a time would leave the other full and the child stuck.
    let script = "head -c 10485760 /dev/zero | tr '\\0' o & \
                  head -c 10485760 /dev/zero | tr '\\0' e >&2; wait";
    let out = pk("spawn")
        .args(["-v", "--capture", "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("pk-spawn: captured stdout=10485760 bytes, stderr=10485760 bytes\n")
    );
    let text = stdout(&out);
    let mut lines = text.lines();
    let o = lines.next().unwrap();
    assert!(o.starts_with("stdout: ooo") && o.len() == 8 + 10485760);
    let e = lines.next().unwrap();
    assert!(e.starts_with("stderr: eee") && e.len() == 8 + 10485760);
    assert!(lines.next().is_none());
}

#[test]
fn one_mib_of_input_into_cat_comes_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in");
    let data = mixed_bytes(1 << 20);
    std::fs::write(&file, &data).unwrap();
    // Inherited stdout: cat's bytes are pk-spawn's bytes, exactly.
    let out = pk("spawn")
        .arg("--input-file")
        .arg(&file)
        .args(["--", "cat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == data, "stdout differs from the input");
    // Captured: input read by cat while its output is drained.
    let out = pk("spawn")
        .arg("--input-file")
        .arg(&file)
        .args(["--capture", "--", "cat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let mut back = Vec::new();
    for line in out
        .stdout
        .strip_suffix(b"\n")
        .unwrap()
        .split(|&b| b == b'\n')
    {
        back.extend_from_slice(line.strip_prefix(b"stdout: ").expect("every line labelled"));
        back.push(b'\n');
    }
    assert!(back == data, "captured bytes differ from the input");
    // And the same through --input: a pipe fed by the poll loop.
    let text = "x".repeat(100_000);
    let out = pk("spawn")
        .args(["--input", &text, "--", "wc", "-c"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "100000");
}

#[test]
fn a_child_that_ignores_its_input_is_fine() {
    // true exits without reading: the rest of the input meets EPIPE, which
    // is not an error.
    let big = "x".repeat(120_000);
    let out = pk("spawn")
        .args(["--input", &big, "--capture", "true"])
        .output()
        .unwrap();
    assert_success(&out);
}

#[test]
fn input_file_dash_is_the_wrappers_stdin() {
    let out = bash("printf 'a\\nb\\nc\\n' | pk-spawn --input-file - -- wc -l")
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "3");
}

#[test]
fn endless_input_is_streamed_in_bounded_memory() {
    // /dev/zero has no end: pk-spawn must not read it itself. The command
    // reads 200 MB, then reports its parent's (pk-spawn's) peak memory.
    let out = pk("spawn")
        .args([
            "--input-file",
            "/dev/zero",
            "--",
            "sh",
            "-c",
            "head -c 200000000 | wc -c; grep VmHWM /proc/$PPID/status",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next().map(str::trim), Some("200000000"));
    let kb: u64 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(kb < 64 * 1024, "pk-spawn's peak resident set: {kb} kB");
}

#[test]
fn a_fifos_data_reaches_the_command_before_its_writer_closes() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut cmd = pk_std("spawn");
    cmd.arg("--input-file")
        .arg(&fifo)
        .args(["--", "head", "-n", "1"]);
    let mut spawn = Running::start(cmd, false);
    // Opening for writing waits for pk-spawn's open for reading.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::io::Write::write_all(&mut writer, b"first line\n").unwrap();
    // head prints the line and exits while we still hold the FIFO open.
    spawn.wait_for(|l| l == "first line");
    assert_eq!(spawn.wait().code(), Some(0));
    drop(writer);
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
        &["--timeout", "abc", "true"],
        &["--timeout", "-1", "true"],
        &["--timeout", "1dd", "true"],
        &["--timeout", "1e400", "true"],
        &["--kill-after", "1", "true"],
        &["--signal", "TERM", "true"],
        &["--timeout", "1", "--signal", "BOGUS", "true"],
        &["--timeout", "1", "--signal", "0", "true"],
        &["--timeout", "1", "--kill-after", "x", "true"],
        &["--env", "NOEQUALS", "true"],
        &["--env", "=value", "true"],
        &["--unset", "A=B", "true"],
        &["--unset", "", "true"],
        &["--cwd"],
    ];
    assert_usage_table("spawn", table);
}

#[test]
fn missing_or_unusable_input_files_and_directories() {
    let out = pk("spawn")
        .args(["--input-file", "/nonexistent/in", "cat"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "spawn", 66);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pk-spawn: open(/nonexistent/in): No such file or directory\n"
    );
    // A directory is no input file: 66, as the table says.
    let out = pk("spawn")
        .args(["--input-file", "/", "cat"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "spawn", 66);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pk-spawn: open(/): Is a directory\n"
    );
    let out = pk("spawn")
        .args(["--input-file", "/etc/hostname/x", "cat"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "spawn", 66);
    let out = pk("spawn")
        .args(["--cwd", "/nonexistent/dir", "true"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "spawn", 66);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pk-spawn: chdir(/nonexistent/dir): No such file or directory\n"
    );
    // Not a directory: no directory to run in, 66 as well.
    let out = pk("spawn")
        .args(["--cwd", "/etc/hostname", "true"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "spawn", 66);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pk-spawn: chdir(/etc/hostname): Not a directory\n"
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
            "--verbose",
            "--timeout",
            "--kill-after",
            "--signal",
            "--preserve-status",
            "--foreground",
            "--env",
            "--unset",
            "--clear-env",
            "--cwd",
            "stdout: <line>",
            "stderr: <line>",
            "exit status <CODE>",
            "(Python: returncode -<N>)",
            "FileNotFoundError",
            "TimeoutExpired",
            "124",
            "137",
            "127",
            "126",
            "128+N",
            "SIGPIPE",
            "TERM, INT, HUP, QUIT, ALRM and the --signal one",
        ],
    );
}

/// `timeout ARGS` and `pk-spawn ARGS`, at the same time; their `$?`.
fn both(timeout_args: &[&str], pk_args: &[&str]) -> (i32, i32) {
    let mut t = std::process::Command::new("timeout");
    t.args(timeout_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0);
    let mut p = pk_std("spawn");
    p.args(pk_args).stdout(Stdio::null());
    let mut t = Running::start(t, true);
    let mut p = Running::start(p, true);
    (shell_code(t.wait()), shell_code(p.wait()))
}

/// A command that inherited the timeout signal ignored (a background
/// job's SIGINT) still gets it at its default action and ends, as under
/// timeout(1); other ignored signals stay ignored (nohup's contract).
#[test]
fn an_inherited_ignored_timeout_signal_still_ends_the_command() {
    let run = |prog: std::path::PathBuf, args: &[&str]| {
        let mut c = std::process::Command::new("env");
        c.arg("--ignore-signal=INT")
            .arg("--ignore-signal=USR1")
            .arg(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        shell_code(Running::start(c, true).wait())
    };
    // The command checks that USR1 is still ignored, then sleeps: only
    // the INT sent at 0.2 s can end it before 30 s (130 with
    // --preserve-status); 138 would say USR1 was reset, and 7 that the
    // INT never came.
    let cmd = ["sh", "-c", "kill -USR1 $$ && sleep 30; exit 7"];
    let t: Vec<&str> = ["--preserve-status", "-s", "INT", "0.2"]
        .iter()
        .chain(&cmd)
        .copied()
        .collect();
    assert_eq!(run("timeout".into(), &t), 130, "timeout(1) itself");
    let p: Vec<&str> = ["--preserve-status", "--signal", "INT", "-t", "0.2", "--"]
        .iter()
        .chain(&cmd)
        .copied()
        .collect();
    assert_eq!(run(bin("pk-spawn"), &p), 130);
}

#[test]
fn timeout_flags_end_as_timeout_1_does() {
    const IGNORES_TERM: &[&str] = &["sh", "-c", "trap '' TERM; sleep 30"];
    const EXITS_3_LATE: &[&str] = &["sh", "-c", "trap '' TERM; sleep 2; exit 3"];
    const SLEEPS: &[&str] = &["sleep", "30"];
    // (timeout(1)'s options and duration, pk-spawn's, the command, and the
    // `$?` both must give)
    type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], i32);
    let cases: &[Case] = &[
        (&["0.2"], &["--timeout", "0.2"], SLEEPS, 124),
        (
            &["--preserve-status", "0.2"],
            &["--preserve-status", "--timeout", "0.2"],
            SLEEPS,
            143,
        ),
        (
            &["-k", "0.2", "0.2"],
            &["--kill-after", "0.2", "--timeout", "0.2"],
            IGNORES_TERM,
            137,
        ),
        (
            &["--preserve-status", "-k", "0.2", "0.2"],
            &["--preserve-status", "-k", "0.2", "-t", "0.2"],
            IGNORES_TERM,
            137,
        ),
        (
            &["-k", "10", "0.1"],
            &["-k", "10", "-t", "0.1"],
            EXITS_3_LATE,
            124,
        ),
        (
            &["--preserve-status", "-k", "10", "0.1"],
            &["--preserve-status", "-k", "10", "-t", "0.1"],
            EXITS_3_LATE,
            3,
        ),
        (
            &["-s", "INT", "0.2"],
            &["-s", "INT", "-t", "0.2"],
            SLEEPS,
            124,
        ),
        (
            &["--preserve-status", "-s", "INT", "0.2"],
            &["--preserve-status", "--signal", "INT", "-t", "0.2"],
            SLEEPS,
            130,
        ),
        (
            &["-s", "KILL", "0.2"],
            &["-s", "KILL", "-t", "0.2"],
            SLEEPS,
            137,
        ),
        (&["10"], &["-t", "10"], &["sh", "-c", "exit 7"], 7),
        (&["10"], &["-t", "10"], &["sh", "-c", "kill -TERM $$"], 143),
        (&["0"], &["-t", "0"], &["sleep", "0.1"], 0),
        // A positive duration under 1 ns is 1 ns, not 0 ("no timeout").
        (&["0.0000000001"], &["-t", "0.0000000001"], SLEEPS, 124),
        (
            &["-k", "0.0000000001", "0.1"],
            &["-k", "0.0000000001", "-t", "0.1"],
            IGNORES_TERM,
            137,
        ),
    ];
    for &(t_opts, pk_opts, cmd, want) in cases {
        let t_args: Vec<&str> = t_opts.iter().chain(cmd).copied().collect();
        let pk_args: Vec<&str> = pk_opts.iter().chain(&["--"]).chain(cmd).copied().collect();
        let got = both(&t_args, &pk_args);
        assert_eq!(
            got,
            (want, want),
            "timeout {t_args:?} / pk-spawn {pk_args:?}"
        );
    }
}

#[test]
fn a_timeout_ends_the_commands_children_too_unless_foreground() {
    // As timeout(1): the signal goes to the command's process group, so a
    // background child of the shell ends with it; with --foreground only
    // the command itself gets it.
    let script = "sleep 30 >/dev/null 2>&1 & echo $!; wait";
    for (t_args, pk_args, survives) in [
        (vec!["0.3"], vec!["--timeout", "0.3"], false),
        (
            vec!["--foreground", "0.3"],
            vec!["--foreground", "--timeout", "0.3"],
            true,
        ),
    ] {
        let mut t = vec!["timeout"];
        t.extend(&t_args);
        t.extend(["sh", "-c", script]);
        let mut p = pk_args.clone();
        p.extend(["--", "sh", "-c", script]);
        for words in [
            t.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            pk_spawn(&p),
        ] {
            let out = command(&words).output().unwrap();
            assert_eq!(shell_code(out.status), 124, "{words:?}");
            let pid: i32 = stdout(&out).trim().parse().unwrap();
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'));
            if survives {
                assert!(alive, "{words:?}: the background sleep was signalled");
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
            }
            assert_gone(pid);
        }
    }
}

/// Shell words that wait until the wrapper (the command's parent) sleeps:
/// it is then past its fork and waiting. timeout(1) 9.1 dies of a signal
/// that arrives before its fork has returned, leaving the command behind.
const PARENT_WAITS: &str = "until grep -q '^State:.S' /proc/$PPID/status; do sleep 0.01; done; ";

#[test]
fn signals_sent_to_pk_spawn_reach_the_command_as_with_timeout_1() {
    for (sig, name) in [
        (Signal::SIGTERM, "TERM"),
        (Signal::SIGINT, "INT"),
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGQUIT, "QUIT"),
    ] {
        let script = format!(
            "trap 'echo got {name}; exit 5' {name}; {PARENT_WAITS}echo ready; \
             while :; do sleep 0.05; done"
        );
        let mut results = Vec::new();
        for wrapper in ["timeout", "pk-spawn"] {
            let mut cmd = if wrapper == "timeout" {
                let mut c = std::process::Command::new("timeout");
                c.arg("60").stdin(Stdio::null());
                c
            } else {
                let mut c = pk_std_default_signals("spawn");
                c.arg("--");
                c
            };
            cmd.args(["sh", "-c", &script]).stderr(Stdio::piped());
            let mut r = Running::start(cmd, true);
            r.wait_for(|l| l == "ready");
            r.signal(sig);
            let lines = r.wait_for(|l| l.starts_with("got"));
            results.push((lines, shell_code(r.wait())));
            assert_only_shell_notes(&mut r, wrapper);
        }
        assert_eq!(results[1], results[0], "{name}");
        assert_eq!(results[1], (vec![format!("got {name}")], 5), "{name}");
    }
    // A command that does not handle it dies of it, and so does the
    // wrapper, with the same signal: `$?` is 128+N.
    let mut results = Vec::new();
    for wrapper in ["timeout", "pk-spawn"] {
        let mut cmd = if wrapper == "timeout" {
            let mut c = std::process::Command::new("timeout");
            c.arg("60").stdin(Stdio::null());
            c
        } else {
            pk_std("spawn")
        };
        cmd.args([
            "sh",
            "-c",
            &format!("{PARENT_WAITS}echo ready; exec sleep 30"),
        ])
        .stderr(Stdio::piped());
        let mut r = Running::start(cmd, true);
        r.wait_for(|l| l == "ready");
        r.signal(Signal::SIGHUP);
        results.push(r.wait().signal());
        assert_only_shell_notes(&mut r, wrapper);
    }
    assert_eq!(results, [Some(libc::SIGHUP); 2]);
}

#[test]
fn a_caught_interrupt_ends_the_calling_script_as_with_timeout_1() {
    // ^C reaches bash and the wrapper; the command dies of SIGINT. bash
    // ends its loop only if its child died of SIGINT too: pk-spawn used to
    // exit 130, which reads as "the command handled the ^C", and the loop
    // went on.
    // (The command waits for its parent to wait: timeout(1) dies of a
    // signal that comes before its fork has returned.)
    let script = "for i in 1 2 3; do $W sh -c 'until grep -q ^State:.S /proc/$PPID/status; \
                  do sleep 0.01; done; echo up > \"$M\"; exec sleep 10'; \
                  echo \"after $i: $?\"; done; echo done";
    for wrapper in ["timeout --foreground 60", "pk-spawn --"] {
        let (status, out) = interrupt_a_script(wrapper, script);
        assert_eq!(status.signal(), Some(libc::SIGINT), "{wrapper}: {out}");
        assert_eq!(out, "", "{wrapper}");
    }
}

#[test]
fn sigalrm_is_time_up_now_and_the_timeout_signal_is_passed_on() {
    // timeout(1): SIGALRM sent to it ends the time at once (124), and
    // the --signal one is passed on like TERM. pk-spawn died of both.
    let script = format!(
        "trap 'echo got USR1; exit 5' USR1; {PARENT_WAITS}echo ready; \
         while :; do sleep 0.05; done"
    );
    for (sig, want) in [(Signal::SIGALRM, 124), (Signal::SIGUSR1, 5)] {
        let mut results = Vec::new();
        for wrapper in ["timeout", "pk-spawn"] {
            let mut cmd = if wrapper == "timeout" {
                let mut c = std::process::Command::new("timeout");
                c.args(["-s", "USR1", "60"]).stdin(Stdio::null());
                c
            } else {
                let mut c = pk_std("spawn");
                c.args(["-s", "USR1", "-t", "60", "--"]);
                c
            };
            cmd.args(["sh", "-c", &script]).stderr(Stdio::null());
            let mut r = Running::start(cmd, true);
            r.wait_for(|l| l == "ready");
            r.signal(sig);
            let code = shell_code(r.wait());
            results.push((code, r.rest()));
        }
        assert_eq!(results[1], results[0], "{sig}");
        assert_eq!(results[1], (want, "got USR1\n".to_string()), "{sig}");
    }
}

#[test]
fn verbose_says_an_outside_sigalrm_is_no_timeout() {
    // A SIGALRM from outside, long before the timeout: still "the time
    // is up now" (124, or 137 once the kill-after clock runs), as for
    // timeout(1), but -v used to report "timed out after 1m", which
    // had not happened.
    for (flags, first, sent, want) in [
        (&["-t", "60"][..], None, "SIGTERM", 124),
        (
            &["-t", "60", "-k", "60"],
            Some(Signal::SIGTERM),
            "SIGKILL",
            137,
        ),
    ] {
        // The command ignores the SIGTERM passed on before the SIGALRM.
        let ignore = if first.is_some() {
            "trap '' TERM; "
        } else {
            ""
        };
        let mut cmd = pk_std("spawn");
        cmd.arg("-v")
            .args(flags)
            .args(["--", "sh", "-c"])
            .arg(format!("{ignore}{PARENT_WAITS}echo ready; exec sleep 30"))
            .stderr(Stdio::piped());
        let mut r = Running::start(cmd, true);
        let mut stderr = std::io::BufReader::new(r.child.stderr.take().unwrap());
        r.wait_for(|l| l == "ready");
        let mut err = String::new();
        let mut lines_before = 0;
        if let Some(sig) = first {
            // The kill-after clock starts with a signal passed on; its
            // report says it was (a signalfd gives the lower-numbered
            // SIGALRM first when both are pending).
            r.signal(sig);
            std::io::BufRead::read_line(&mut stderr, &mut err).unwrap();
            lines_before = 1;
        }
        r.signal(Signal::SIGALRM);
        assert_eq!(shell_code(r.wait()), want, "{flags:?}: {err}");
        std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
        assert!(!err.contains("timed out"), "{flags:?}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), lines_before + 2, "{flags:?}: {err}");
        let prefix = format!(
            "pk-spawn: got SIGALRM before the timeout of 60s ran out: \
             the time is up now, as for timeout(1): sent {sent} to process group "
        );
        if lines_before == 1 {
            assert!(
                lines[0].starts_with("pk-spawn: passed SIGTERM on to process group "),
                "{err}"
            );
        }
        assert!(lines[lines_before].starts_with(&prefix), "{flags:?}: {err}");
        assert!(
            lines[lines_before + 1].starts_with(&format!("pk-spawn: exit status {want}: child ")),
            "{flags:?}: {err}"
        );
    }
}

/// The wrapper said nothing on stderr: the only lines there are the
/// shell's notes that the signal, sent to the whole group, also killed
/// its `sleep` (`Hangup`, `Terminated`, `Quit`).
#[track_caller]
fn assert_only_shell_notes(r: &mut Running, wrapper: &str) {
    let mut err = String::new();
    std::io::Read::read_to_string(r.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.lines()
            .all(|l| ["Hangup", "Terminated", "Quit", "Interrupt"].contains(&l)),
        "{wrapper}: {err}"
    );
}

#[test]
fn a_relayed_signal_starts_the_kill_after_clock() {
    let mut cmd = pk_std("spawn");
    cmd.args(["-v", "-k", "0.2", "-t", "60", "--"])
        .args(["sh", "-c", "trap '' TERM; echo ready; exec sleep 30"])
        .stderr(Stdio::piped());
    let mut r = Running::start(cmd, true);
    r.wait_for(|l| l == "ready");
    r.signal(Signal::SIGTERM);
    assert_eq!(shell_code(r.wait()), 137);
    let mut err = String::new();
    std::io::Read::read_to_string(r.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].starts_with("pk-spawn: passed SIGTERM on to process group "));
    assert!(lines[1].starts_with("pk-spawn: still running 200ms after the signal: sent SIGKILL"));
    assert!(lines[2].starts_with("pk-spawn: exit status 137: child "));
}

#[test]
fn environment_flags_do_what_env_1_does() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().canonicalize().unwrap();
    let d = real.to_str().unwrap().to_string();
    std::fs::write(
        real.join("prog"),
        "#!/bin/sh\necho prog in \"$PWD\" with \"$A\"\n",
    )
    .unwrap();
    std::fs::set_permissions(real.join("prog"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let show = "echo \"A=${A-unset} B=${B-unset} HOME=${HOME-unset}\"";
    let path = format!("PATH={d}");
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // (env(1)'s arguments, pk-spawn's, the command after both)
    let cases: Vec<(Vec<String>, Vec<String>, Vec<String>)> = vec![
        (
            words(&["A=1"]),
            words(&["--env", "A=1"]),
            words(&["sh", "-c", show]),
        ),
        (
            words(&["A=1", "A=2=3"]),
            words(&["-e", "A=1", "-e", "A=2=3"]),
            words(&["sh", "-c", show]),
        ),
        (
            words(&["A="]),
            words(&["--env", "A="]),
            words(&["sh", "-c", show]),
        ),
        (
            words(&["-u", "HOME"]),
            words(&["--unset", "HOME"]),
            words(&["sh", "-c", show]),
        ),
        (
            words(&["-u", "A", "A=back"]),
            words(&["-u", "A", "-e", "A=back"]),
            words(&["sh", "-c", show]),
        ),
        (
            words(&["-i", "B=2"]),
            words(&["--clear-env", "--env", "B=2"]),
            words(&["/usr/bin/env"]),
        ),
        (
            words(&["-i"]),
            words(&["--clear-env"]),
            words(&["/usr/bin/env"]),
        ),
        // The command is looked up with the PATH it will have.
        (
            words(&[&path, "A=x"]),
            words(&["-e", &path, "-e", "A=x"]),
            words(&["prog"]),
        ),
        // A relative command is relative to the new directory.
        (
            words(&["-C", &d]),
            words(&["--cwd", &d]),
            words(&["./prog"]),
        ),
        (
            words(&["-C", &d, "A=y"]),
            words(&["-C", &d, "-e", "A=y"]),
            words(&["sh", "-c", "./prog; pwd"]),
        ),
    ];
    for (env_args, pk_opts, cmd) in &cases {
        let e: Vec<String> = std::iter::once("env".to_string())
            .chain(env_args.iter().cloned())
            .chain(cmd.iter().cloned())
            .collect();
        let p: Vec<&str> = pk_opts
            .iter()
            .map(String::as_str)
            .chain(["--"])
            .chain(cmd.iter().map(String::as_str))
            .collect();
        let by_env = command(&e).output().unwrap();
        let by_pk = command(&pk_spawn(&p)).output().unwrap();
        assert_success(&by_env);
        assert_success(&by_pk);
        assert!(!by_env.stdout.is_empty() || env_args == &["-i"], "{e:?}");
        assert_eq!(stdout(&by_pk), stdout(&by_env), "{e:?} / pk-spawn {p:?}");
    }
}

/// Run pk-spawn with `args` under `strace -f`: the exit code, the trace,
/// pk-spawn's pid and its child's. `None` where strace is not installed.
fn strace_spawn(extra: &[&str], args: &[&str]) -> Option<(Option<i32>, String, i32, i32)> {
    if strace_missing() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace");
    let out = assert_cmd::Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&log)
        .args(extra)
        .arg(bin("pk-spawn"))
        .args(args)
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    let trace = std::fs::read_to_string(&log).unwrap();
    // pk-spawn is single-threaded: the first pid other than its own that
    // shows up in the trace is the child it started.
    let pid_of = |l: &str| l.split_whitespace().next()?.parse::<i32>().ok();
    let parent = trace.lines().next().and_then(pid_of).expect("a trace");
    let child = trace
        .lines()
        .filter_map(pid_of)
        .find(|&p| p != parent)
        .expect("a child in the trace");
    Some((Some(shell_code(out.status)), trace, parent, child))
}

/// What `pid` did on this trace line (the line without its pid column,
/// which strace pads to five characters), or `None` for another pid's line.
fn by(pid: i32, line: &str) -> Option<&str> {
    let (first, rest) = line.split_once(' ')?;
    (first.parse() == Ok(pid)).then(|| rest.trim_start())
}

/// Whether the trace shows `parent` reaping exactly `child`: by its pid
/// (wait4), or through a pidfd opened for it (waitid P_PIDFD, not a
/// WNOWAIT look); and never any child at all.
fn reaps(trace: &str, parent: i32, child: i32) -> bool {
    // strace splits a call that the child's lines interrupt,
    // `pidfd_open(N, 0 <unfinished ...>` then `<... pidfd_open resumed>)
    // = 4`: put the halves back together.
    let mut calls: Vec<String> = Vec::new();
    let mut head: Option<&str> = None;
    for l in trace.lines().filter_map(|l| by(parent, l)) {
        if let Some(h) = l.strip_suffix(" <unfinished ...>") {
            head = Some(h);
        } else if let Some((_, rest)) = l
            .strip_prefix("<... ")
            .and_then(|r| r.split_once(" resumed>"))
        {
            calls.push(format!("{}{rest}", head.take().unwrap_or_default()));
        } else {
            calls.push(l.to_string());
        }
    }
    let pidfds: Vec<&str> = calls
        .iter()
        .filter(|l| l.starts_with(&format!("pidfd_open({child}, ")))
        .filter_map(|l| l.rsplit_once("= ").map(|(_, fd)| fd.trim()))
        .collect();
    let reaped = calls.iter().any(|l| {
        l.starts_with(&format!("wait4({child},"))
            || pidfds.iter().any(|fd| {
                l.starts_with(&format!("waitid(P_PIDFD, {fd}, ")) && !l.contains("WNOWAIT")
            })
    });
    reaped && !trace.contains("wait4(-1") && !trace.contains("waitid(P_ALL")
}

#[test]
fn strace_shows_a_vfork_style_clone_and_no_fork() {
    // The issue's proof: every process creation is clone(CLONE_VM|
    // CLONE_VFORK), never fork, vfork(2) or a clone without CLONE_VM (which
    // is what glibc's fork is), and the command is exec'd once.
    let Some((code, trace, parent, child)) = strace_spawn(
        &["-e", "trace=clone,clone3,vfork,fork,execve"],
        &["--", "/bin/sh", "-c", "exit 3"],
    ) else {
        return;
    };
    assert_eq!(code, Some(3));
    let creations: Vec<&str> = trace
        .lines()
        .filter(|l| {
            ["clone(", "clone3(", "vfork(", "fork("]
                .iter()
                .any(|c| l.contains(c))
        })
        .collect();
    assert_eq!(creations.len(), 1, "{trace}");
    assert!(
        by(parent, creations[0]).is_some_and(|c| c.starts_with("clone("))
            && creations[0].contains("flags=CLONE_VM|CLONE_VFORK|SIGCHLD"),
        "{trace}"
    );
    let execs: Vec<&str> = trace
        .lines()
        .filter_map(|l| by(child, l))
        .filter(|l| l.starts_with("execve("))
        .collect();
    assert_eq!(execs.len(), 1, "{trace}");
    assert!(
        execs[0].contains("(\"/bin/sh\", [\"/bin/sh\", \"-c\", \"exit 3\"]"),
        "{trace}"
    );
}

#[test]
fn strace_a_failed_exec_is_still_reaped() {
    let Some((code, trace, parent, child)) = strace_spawn(&[], &["no-such-command-here"]) else {
        return;
    };
    assert_eq!(code, Some(127));
    assert!(reaps(&trace, parent, child), "{trace}");
    assert!(
        trace
            .lines()
            .filter_map(|l| by(child, l))
            .any(|l| l.starts_with("exit_group(127")),
        "{trace}"
    );
}

#[test]
fn strace_shows_only_safe_calls_and_handlers_reset_before_the_mask() {
    let Some((code, trace, parent, child)) =
        strace_spawn(&[], &["--capture", "--input", "x", "-C", "/", "--", "cat"])
    else {
        return;
    };
    assert_eq!(code, Some(0));
    let calls: Vec<&str> = trace
        .lines()
        .filter_map(|l| by(child, l))
        // strace splits calls that overlap with the parent's.
        .filter(|l| !l.starts_with("<..."))
        .take_while(|l| !l.starts_with("execve("))
        .collect();
    let names: Vec<&str> = calls.iter().map(|l| l.split('(').next().unwrap()).collect();
    for call in &names {
        assert!(
            [
                "rt_sigprocmask",
                "rt_sigaction",
                "setpgid",
                "chdir",
                "dup2",
                "dup3",
                "set_robust_list",
                "gettid",
                // pk-spawn's command dies with it: PR_SET_PDEATHSIG, then
                // a check that the parent is still the one it was.
                "prctl",
                "getppid"
            ]
            .contains(call),
            "{call} between clone and exec: {names:?}"
        );
    }
    // Rust installs SIGSEGV and SIGBUS handlers: the child puts them back
    // to SIG_DFL, and only after that unblocks the signals.
    let unmask = calls
        .iter()
        .position(|c| c.starts_with("rt_sigprocmask(SIG_SETMASK, []"))
        .unwrap_or_else(|| panic!("no unmask: {calls:?}"));
    let resets: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with("rt_sigaction(SIG") && c.contains("{sa_handler=SIG_DFL"))
        .map(|(i, _)| i)
        .collect();
    for sig in ["SIGSEGV", "SIGBUS", "SIGPIPE"] {
        assert!(
            calls
                .iter()
                .take(unmask)
                .any(|c| c.starts_with(&format!("rt_sigaction({sig}, {{sa_handler=SIG_DFL"))),
            "{sig} reset before the unmask: {calls:?}"
        );
    }
    assert!(resets.iter().all(|&i| i < unmask), "{calls:?}");
    assert!(
        names.contains(&"chdir") && names.contains(&"setpgid"),
        "{names:?}"
    );
    assert!(
        reaps(&trace, parent, child),
        "the parent reaps exactly its child: {trace}"
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
    assert_eq!(stdout(&out), "stdout: abc\nstderr: err\n");
}

#[test]
fn a_child_killed_at_any_step_before_exec_is_reported_and_reaped() {
    // SIGKILL the child in the middle of each of its steps between clone
    // and exec (setpgid, chdir, dup2, the first execve: calls only the
    // child makes, or the parent's own execve comes first): pk-spawn neither
    // hangs nor mistakes it for an exec failure, and reaps exactly it.
    if strace_missing() {
        return;
    }
    for (call, when) in [
        ("setpgid", "1"),
        ("chdir", "1"),
        ("dup2", "1"),
        ("execve", "2"),
    ] {
        let inject = format!("inject={call}:signal=SIGKILL:when={when}");
        let Some((code, trace, parent, child)) = strace_spawn(
            &[
                "-e",
                &format!("trace=execve,{call},wait4,pidfd_open,waitid"),
                "-e",
                &inject,
            ],
            &["-C", "/", "--capture", "--input", "x", "--", "cat"],
        ) else {
            return;
        };
        assert_eq!(code, Some(137), "{call}: {trace}");
        assert!(
            trace
                .lines()
                .filter_map(|l| by(child, l))
                .any(|l| l == "+++ killed by SIGKILL +++"),
            "{call}: {trace}"
        );
        assert!(reaps(&trace, parent, child), "{call}: {trace}");
    }
}

/// What Python's subprocess gives for each command: `returncode N` or the
/// exception's class name (run with a 0.2 s timeout).
const PYTHON_STATUSES: &str = r#"
import subprocess, sys
for cmd in sys.argv[1:]:
    try:
        print("returncode %d" % subprocess.run(cmd.split("|"), timeout=0.2).returncode)
    except Exception as e:
        print(type(e).__name__)
"#;

#[test]
fn the_verbose_report_gives_the_shell_s_status_and_python_s_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.txt");
    std::fs::write(&data, "not a program\n").unwrap();
    let data = data.display().to_string();
    // (command, extra flags, pk-spawn's status, the report's tail)
    let cases: [(&[&str], &[&str], i32, &str); 6] = [
        (
            &["sh", "-c", "exit 3"],
            &[],
            3,
            "exited, status=3 (Python: returncode 3)",
        ),
        (
            &["sh", "-c", "kill -TERM $$"],
            &[],
            143,
            "killed by signal 15 (SIGTERM) (Python: returncode -15)",
        ),
        (
            &["sleep", "30"],
            &["--timeout", "0.2"],
            124,
            "killed by signal 15 (SIGTERM) (Python: TimeoutExpired; returncode -15)",
        ),
        (
            &["sleep", "30"],
            &["--timeout", "0.2", "--preserve-status"],
            143,
            "killed by signal 15 (SIGTERM) (Python: TimeoutExpired; returncode -15)",
        ),
        (
            &["no-such-command-here"],
            &[],
            127,
            "command not found (Python: FileNotFoundError)",
        ),
        (
            &[data.as_str()],
            &[],
            126,
            "command not executable (Python: PermissionError)",
        ),
    ];
    let mut reported = Vec::new();
    for (cmd, flags, code, tail) in cases {
        let out = pk("spawn")
            .arg("-v")
            .args(flags)
            .arg("--")
            .args(cmd)
            .output()
            .unwrap();
        assert_eq!(shell_code(out.status), code, "{cmd:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("pk-spawn: exit status {code}: ")) && last.ends_with(tail),
            "{cmd:?}: {err}"
        );
        if code == 126 || code == 127 {
            // The error line, as without -v, comes first.
            assert!(
                err.starts_with(&format!("pk-spawn: execvp({}): ", cmd[0])),
                "{err}"
            );
        }
        let python = last
            .rsplit("(Python: ")
            .next()
            .unwrap()
            .trim_end_matches(')');
        reported.push(python.split(';').next().unwrap().to_string());
    }
    // The Python forms are what python3 itself gives for the same commands.
    let mut py = vec!["python3".to_string(), "-c".into(), PYTHON_STATUSES.into()];
    py.extend(cases.iter().map(|(cmd, _, _, _)| cmd.join("|")));
    let out = command(&py).output().unwrap();
    if !out.status.success() {
        eprintln!(
            "skipped the python3 side: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let python: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(reported, python);
}

#[test]
fn the_status_script_names_both_conventions() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/spawn-status.sh");
    let out = bash(&format!("bash {script}")).output().unwrap();
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        "true -> $?=0: ok (Python: returncode 0)\n\
         sh -c 'exit 3' -> $?=3: failed with 3 (Python: returncode 3)\n\
         sh -c 'kill -TERM $$' -> $?=143: killed by signal 15 (SIGTERM) (Python: returncode -15)\n\
         no-such-command-here -> $?=127: command not found (Python: FileNotFoundError)\n\
         data.txt (no x bit) -> $?=126: found but not executable (Python: PermissionError)\n\
         sleep 30 -> $?=124: timed out (pk-spawn --timeout 2) (Python: TimeoutExpired)\n"
    );
}

#[test]
fn durations_take_days_and_have_no_upper_limit() {
    // timeout(1) takes any length and a `d` suffix; so does pk-spawn.
    for dur in ["25h", "2d", "0.5d", "400d", "99999999999999999999999d"] {
        let (t, p) = both(
            &["-k", dur, dur, "sh", "-c", "exit 4"],
            &["-k", dur, "-t", dur, "--", "sh", "-c", "exit 4"],
        );
        assert_eq!((t, p), (4, 4), "{dur}");
    }
    let out = pk("spawn")
        .args(["-v", "-t", "1d", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn closed_stdin_and_stderr_stay_closed_for_the_command() {
    // As timeout(1): a descriptor closed for the wrapper is closed for
    // the command, not /dev/null. The shell reports a failed write to
    // stderr with status 2; a closed stdin reads as such in /proc.
    let probe = "echo x >&2; echo write=$?; \
                 if [ -e /proc/$$/fd/0 ]; then echo stdin=open; else echo stdin=closed; fi";
    let run = |wrapper: &str| {
        let out = bash(&format!("{wrapper} sh -c '{probe}' <&- 2>&-"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{wrapper}");
        stdout(&out)
    };
    let direct = run("");
    assert_eq!(direct, "write=2\nstdin=closed\n", "the shell itself");
    assert_eq!(run("timeout 10"), direct, "timeout(1)");
    assert_eq!(run("pk-spawn --"), direct);
    assert_eq!(run("pk-spawn -t 10 --"), direct);
    // Open ones are passed on as they are.
    let out = bash(&format!(
        "pk-spawn -- sh -c '{probe}' </dev/null 2>/dev/null"
    ))
    .output()
    .unwrap();
    assert_eq!(stdout(&out), "write=0\nstdin=open\n");
}

#[test]
fn after_a_timeout_an_escaped_holder_of_the_pipes_is_not_waited_for() {
    // The command's background process leaves its group (setsid), so the
    // timeout does not reach it, and holds the capture pipes. Once the
    // command is killed and reaped, pk-spawn reads for a moment and ends:
    // the escaped sleep is still running when pk-spawn has exited.
    let out = pk("spawn")
        .args(["-c", "-t", "0.3", "--", "sh", "-c"])
        .arg("setsid sleep 30 & echo $!; echo err >&2; sleep 30")
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124));
    let text = stdout(&out);
    let pid: i32 = pid_after(text.lines().next().unwrap_or(""), "stdout: ")
        .unwrap_or_else(|| panic!("no pid in {text:?}"));
    assert!(text.ends_with("stderr: err\n"), "{text:?}");
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'));
    assert!(
        alive,
        "the escaped sleep ended first: pk-spawn waited for it"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert_gone(pid);
    // Without a signal from pk-spawn, output is read to its end, as
    // Popen.communicate does: the background writer is waited for.
    let out = pk("spawn")
        .args([
            "-c",
            "--",
            "sh",
            "-c",
            "(sleep 0.3; echo late) & echo early",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "stdout: early\nstdout: late\n");
}

#[test]
fn a_slash_path_through_a_file_says_not_a_directory() {
    // execvp gives execve's own error for a path with a slash; the search
    // loop took ENOTDIR for "try the next candidate" and reported ENOENT.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, "echo x\n").unwrap();
    let out = pk("spawn")
        .arg("-v")
        .arg("--")
        .arg(file.join("x"))
        .output()
        .unwrap();
    // 126, as timeout(1), env(1), xargs and bash give it: the path is
    // there, it is just not a directory.
    assert_eq!(out.status.code(), Some(126));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Not a directory"), "{err}");
    assert!(err.contains("NotADirectoryError"), "{err}");
}

#[test]
fn a_signal_after_the_command_ended_ends_the_reading_and_claims_no_relay() {
    // The command has ended; a background child of it holds the pipes.
    // A SIGTERM then has no one to go to: it used to print "passed
    // SIGTERM on to process group N" though nothing was sent. Now it ends
    // the reading at once, and pk-spawn exits with the command's status.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let out = bash(&format!(
        "pk-spawn -v -c -- sh -c 'sleep 30 & echo x; touch {d}/ended' 2>{d}/err & p=$!; \
         until [ -e {d}/ended ]; do sleep 0.05; done; sleep 0.3; \
         s=$(date +%s); kill -TERM $p; wait $p; echo \"rc=$? in $(( $(date +%s) - s ))s\""
    ))
    .timeout(std::time::Duration::from_secs(60))
    .output()
    .unwrap();
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap();
    let text = stdout(&out);
    // The captured line comes first on stdout, then the shell's.
    let rc = text
        .lines()
        .find(|l| l.starts_with("rc="))
        .unwrap_or_default();
    assert!(rc.starts_with("rc=0 in "), "{text}{err}");
    let secs: u64 = rc["rc=0 in ".len()..]
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(secs < 10, "{err}");
    assert!(!err.contains("passed SIGTERM"), "{err}");
    assert!(err.contains("exit status 0"), "{err}");
}

#[test]
fn a_sigkilled_pk_spawn_takes_its_command_along() {
    // The command runs in a group of its own: a SIGKILL of pk-spawn (or of
    // pk-spawn's group) used to leave it running, untimed, for ever.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let out = bash(&format!(
        "pk-spawn -t 600 -- sh -c 'echo $$ > {d}/pid; exec sleep 60' & p=$!; \
         until [ -s {d}/pid ]; do sleep 0.05; done; c=$(cat {d}/pid); kill -KILL $p; \
         for i in $(seq 200); do \
           s=$(cut -d' ' -f3 /proc/$c/stat 2>/dev/null || echo gone); \
           case $s in Z|X|gone) echo ended; exit 0;; esac; sleep 0.05; \
         done; echo \"still $s\"; kill -KILL $c"
    ))
    .timeout(std::time::Duration::from_secs(60))
    .output()
    .unwrap();
    assert_eq!(stdout(&out), "ended\n", "{out:?}");
}

/// In a new session on a new terminal (python3's pty.fork: the wrapper is
/// its session leader and in its foreground group), start `wrapper` with a
/// command that traps SIGHUP, then close the terminal. Returns the
/// wrapper's `$?` (or `hung`) and what the trap wrote.
fn hang_up_on(wrapper: &[String]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("mark");
    let script = r#"
import os, pty, sys, time
mark, argv = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
deadline = time.time() + 30
while not os.path.exists(mark + ".up") and time.time() < deadline:
    time.sleep(0.01)
os.close(fd)
deadline = time.time() + 10
while time.time() < deadline:
    p, st = os.waitpid(pid, os.WNOHANG)
    if p:
        print(os.waitstatus_to_exitcode(st) % 256)
        sys.exit(0)
    time.sleep(0.01)
os.kill(pid, 9)
os.waitpid(pid, 0)
print("hung")
"#;
    let command = format!(
        "trap 'echo got HUP >> \"$0\"; exit 3' HUP; {PARENT_WAITS}echo > \"$0.up\"; \
         while :; do sleep 0.05; done"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&mark)
        .args(wrapper)
        .args(["sh", "-c", &command])
        .arg(&mark)
        .env(TAG, new_tag())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let got = std::fs::read_to_string(&mark).unwrap_or_default();
    (stdout(&out), got)
}

#[test]
fn a_terminal_hang_up_reaches_the_command_of_a_session_leader() {
    // The kernel sends a terminal's hang-up to the session leader alone;
    // its foreground group hears only when the leader exits. pk-spawn
    // took the SIGHUP for one its group had had, and waited for ever.
    let python = std::process::Command::new("python3")
        .arg("-c")
        .arg("import pty")
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 with pty is not installed");
        return;
    }
    let timeout = hang_up_on(&["timeout".into(), "60".into()]);
    let pk = hang_up_on(&[bin("pk-spawn").display().to_string(), "--".into()]);
    assert_eq!(pk, timeout);
    assert_eq!(pk, ("3\n".to_string(), "got HUP\n".to_string()));
}

/// A copy of a tiny C program, setuid root, that takes back root for real
/// (setresuid(0, 0, 0)) and execs the rest of its arguments: a command
/// that runs as another user than the wrapper started by `nobody`, which
/// may then not signal it. `None` (with a note) unless root with gcc.
pub fn root_again() -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    if !is_root() {
        eprintln!("skipped: not root (a setuid-root helper is needed)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = dir.path().join("root_again.c");
    let exe = dir.path().join("root_again");
    std::fs::write(
        &src,
        "#define _GNU_SOURCE\n#include <unistd.h>\n\
         int main(int c, char **v) { (void)c; if (setresuid(0, 0, 0)) return 98; \
         execv(v[1], v + 1); return 99; }\n",
    )
    .unwrap();
    match std::process::Command::new("gcc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("gcc failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => {
            eprintln!("skipped: gcc is not installed");
            return None;
        }
    }
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    Some((dir, exe))
}

#[test]
fn a_signal_the_command_refuses_is_no_error_and_it_is_still_waited_for() {
    // Started by nobody, the command is root again: kill(2) gives EPERM.
    // pk-spawn used to end with 77 and try to SIGKILL it; timeout(1)
    // ignores the refusal and waits, exiting with the command's status.
    let Some((_dir, exe)) = root_again() else {
        return;
    };
    // (PARENT_WAITS: timeout(1) dies of a signal that comes before its
    // fork has returned.)
    let script = format!("{PARENT_WAITS}echo ready; sleep 0.5; exit 4");
    let mut results = Vec::new();
    for wrapper in [
        &["timeout", "60"][..],
        &[bin("pk-spawn").to_str().unwrap(), "-v", "--"],
    ] {
        let mut cmd = std::process::Command::new(&as_nobody()[0]);
        cmd.args(&as_nobody()[1..])
            .args(wrapper)
            .arg(&exe)
            .args(["/bin/sh", "-c", &script])
            .env(TAG, new_tag())
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        let mut r = Running::start(cmd, true);
        r.wait_for(|l| l == "ready");
        // The wrapper, not setpriv: setpriv execs it, so the pid is its.
        r.signal(Signal::SIGTERM);
        let code = shell_code(r.wait());
        let mut err = String::new();
        std::io::Read::read_to_string(r.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        results.push((code, err));
    }
    assert_eq!(results[0].0, 4, "{results:?}");
    assert_eq!(results[1].0, 4, "{results:?}");
    assert!(
        results[1]
            .1
            .contains("could not pass SIGTERM on to process group")
            && results[1].1.contains("exit status 4"),
        "{}",
        results[1].1
    );
}

#[test]
fn an_alarm_the_kernel_sends_is_time_up_in_the_foreground_too() {
    // alarm(2) left running across exec: its SIGALRM comes from the
    // kernel, to the process alone. With --foreground pk-spawn took it
    // for a signal its group (the command too) had had, and dropped it.
    let alarm = "import os, signal, sys; signal.alarm(1); os.execvp(sys.argv[1], sys.argv[1:])";
    let codes = statuses_under(
        &["python3", "-c", alarm],
        &["timeout", "--foreground", "30"],
        &["--foreground", "-t", "30"],
        &["sleep", "20"],
    );
    assert_eq!(codes, [124, 124]);
}

/// `$?` of `before... timeout_args... command...` and of
/// `before... pk-spawn pk_args... -- command...`.
fn statuses_under(
    before: &[&str],
    timeout_args: &[&str],
    pk_args: &[&str],
    command: &[&str],
) -> Vec<i32> {
    let pk_spawn = bin("pk-spawn").display().to_string();
    let mut pk = vec![pk_spawn.as_str()];
    pk.extend_from_slice(pk_args);
    pk.push("--");
    [timeout_args, &pk[..]]
        .iter()
        .map(|wrapper| {
            let out = std::process::Command::new(before[0])
                .args(&before[1..])
                .args(*wrapper)
                .args(command)
                .env(TAG, new_tag())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            shell_code(out.status)
        })
        .collect()
}

#[test]
fn a_timeout_the_command_refuses_is_124_not_a_kill() {
    // The timeout's SIGTERM and the kill-after SIGKILL both refused
    // (EPERM): the command was never killed, so not 137.
    let Some((_dir, exe)) = root_again() else {
        return;
    };
    let nobody = as_nobody();
    let before: Vec<&str> = nobody.iter().map(String::as_str).collect();
    let codes = statuses_under(
        &before,
        &["timeout", "--foreground", "-k", "0.2", "0.2"],
        &["--foreground", "-t", "0.2", "-k", "0.2"],
        &[exe.to_str().unwrap(), "/bin/sh", "-c", "sleep 1; exit 4"],
    );
    assert_eq!(codes, [124, 124]);
}

#[test]
fn a_signal_timeout_sends_twice_reaches_the_command_once() {
    // timeout(1) around pk-spawn sends its SIGTERM to pk-spawn, then to
    // its own group; the command, in a group of its own, got both copies
    // through pk-spawn. A signal sent again 0.3 s later is passed on.
    assert_a_copy_is_passed_on_once("spawn", &[]);
}

#[test]
fn a_command_is_searched_in_the_first_of_two_paths_as_execvp_does() {
    // A process may be started with PATH twice in its environment (an
    // execve with any array: python3's ctypes here). getenv(3), and so
    // execvp(3), sh and std's Command, take the first; pk-spawn searched
    // the last one, so it ran another program than the child's own PATH
    // names.
    let dir = tempfile::tempdir().unwrap();
    for which in ["first", "second"] {
        let d = dir.path().join(which);
        std::fs::create_dir(&d).unwrap();
        let prog = d.join("pk-probe-path");
        std::fs::write(&prog, format!("#!/bin/sh\necho {which}\n")).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = r#"
import ctypes, sys
exe, first, second = (a.encode() for a in sys.argv[1:4])
def array(items):
    a = (ctypes.c_char_p * (len(items) + 1))(*items)
    a[len(items)] = None
    return a
libc = ctypes.CDLL(None, use_errno=True)
libc.execve(exe, array([exe, b"pk-probe-path"]),
            array([b"PATH=" + first, b"PATH=" + second]))
sys.exit("execve: errno %d" % ctypes.get_errno())
"#;
    let out = std::process::Command::new("timeout")
        .args(["30", "python3", "-c", script])
        .arg(bin("pk-spawn"))
        .arg(dir.path().join("first"))
        .arg(dir.path().join("second"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "first\n", "{out:?}");
}
