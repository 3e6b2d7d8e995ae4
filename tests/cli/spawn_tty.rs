//! pk-spawn in the foreground of a terminal: a pty from script(1), as a
//! user at a shell's prompt has. The command's process group takes the
//! terminal while it runs, so a timeout reaches everything the command
//! started, the command reads the terminal unstopped, ^C reaches it once,
//! ^Z stops the job, and the terminal is given back on every way out.

use std::io::Write;
use std::process::Stdio;

use crate::common::*;

/// `script -qec CMD /dev/null` with bash, the built binaries first on
/// PATH: CMD runs as the session leader of a new pty, in its foreground.
fn in_pty(cmd: &str) -> std::process::Command {
    let dir = bin("pk-spawn").parent().expect("binary dir").to_path_buf();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = std::process::Command::new("script");
    c.args(["-qec", cmd, "/dev/null"])
        .env("PATH", path)
        .env("SHELL", "/bin/bash")
        .stdin(Stdio::piped());
    c
}

/// Run CMD in a pty with `input` on the terminal; its output without the
/// pty's carriage returns.
fn pty_output(cmd: &str, input: &[u8]) -> String {
    let mut r = Running::start(in_pty(cmd), true);
    let mut stdin = r.child.stdin.take().expect("stdin");
    stdin.write_all(input).unwrap();
    let status = r.wait();
    drop(stdin);
    let text = r.rest().replace('\r', "");
    assert_eq!(status.code(), Some(0), "{cmd}: {text}");
    text
}

/// The `pgid tpgid` pairs ps printed (lines `pg=<pgid>,<tpgid>`).
fn groups(text: &str) -> Vec<(i32, i32)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("pg="))
        .map(|l| {
            let (a, b) = l.split_once(',').expect("pgid,tpgid");
            (a.trim().parse().unwrap(), b.trim().parse().unwrap())
        })
        .collect()
}

/// Shell words that print `pg=<pgid>,<tpgid>` of the shell running them.
const PG: &str = r#"echo "pg=$(ps -o pgid= -p $$),$(ps -o tpgid= -p $$)""#;

#[test]
fn a_timeout_in_a_terminal_ends_everything_the_command_started() {
    for capture in ["", "-c"] {
        let text = pty_output(
            &format!(
                "pk-spawn {capture} -t 0.5 -- sh -c 'sleep 300 & echo bg=$!; sleep 301'; echo rc=$?"
            ),
            b"",
        );
        assert!(text.contains("rc=124"), "{capture}: {text}");
        let pid = text
            .lines()
            .find_map(|l| pid_after(l.trim_start_matches("stdout: "), "bg="))
            .unwrap_or_else(|| panic!("no pid in {text:?}"));
        assert_gone(pid);
    }
}

#[test]
fn the_command_holds_the_terminal_and_pk_spawn_gets_it_back() {
    // While the command runs its group is the terminal's foreground
    // group; after pk-spawn, the shell's group is again, whichever way
    // pk-spawn ended: normally, at a timeout, passing on a signal, or when
    // the command could not start.
    let cmd = format!(
        "{PG}; pk-spawn -- sh -c '{PG}'; {PG}; \
         pk-spawn -t 0.2 -- sleep 10; {PG}; \
         pk-spawn -- sh -c 'kill -TERM $PPID; sleep 5'; {PG}; \
         pk-spawn -- /nonexistent/cmd; {PG}; \
         pk-spawn -C /nonexistent -- true; {PG}",
        PG = PG.replace('\'', r"'\''")
    );
    let text = pty_output(&cmd, b"");
    let g = groups(&text);
    assert_eq!(g.len(), 7, "{text}");
    let shell = g[0];
    assert_eq!(
        shell.0, shell.1,
        "the shell starts in the foreground: {text}"
    );
    let command = g[1];
    assert_eq!(
        command.0, command.1,
        "the command's group holds the terminal: {text}"
    );
    assert_ne!(
        command.0, shell.0,
        "the command has a group of its own: {text}"
    );
    for (i, &after) in g[2..].iter().enumerate() {
        assert_eq!(after, shell, "case {i}: the terminal is given back: {text}");
    }
}

#[test]
fn in_a_pipeline_the_terminal_stays_with_the_pipeline() {
    // `pk-spawn -- make | less`: less shares pk-spawn's group and reads
    // the terminal, so the terminal is not handed to make's group.
    let cmd = format!(
        "{PG}; pk-spawn -- sh -c '{PG}' | cat; {PG}; echo x | pk-spawn -- sh -c '{PG}'",
        PG = PG.replace('\'', r"'\''")
    );
    let text = pty_output(&cmd, b"");
    let g = groups(&text);
    assert_eq!(g.len(), 4, "{text}");
    let shell = g[0];
    for i in [1, 3] {
        assert_ne!(
            g[i].0, shell.0,
            "the command has a group of its own: {text}"
        );
        assert_eq!(g[i].1, shell.1, "the terminal stays with the shell: {text}");
    }
    assert_eq!(g[2], shell, "{text}");
}

#[test]
fn a_command_reading_the_terminal_is_not_stopped() {
    // head reads the line typed on the terminal; in a background group
    // it would stop (SIGTTIN) and the timeout would end it.
    let text = pty_output("pk-spawn -t 20 -- head -c2; echo rc=$?", b"xy\n");
    assert!(text.contains("xyrc=0"), "{text:?}");
}

#[test]
fn ctrl_c_reaches_the_command_once() {
    let cmd = "pk-spawn -- sh -c 'trap \"echo got INT\" INT; echo ready; sleep 1; sleep 1; echo done'; echo rc=$?";
    let mut r = Running::start(in_pty(cmd), true);
    let mut stdin = r.child.stdin.take().expect("stdin");
    r.wait_for(|l| l.trim_end() == "ready");
    stdin.write_all(b"\x03").unwrap();
    let status = r.wait();
    drop(stdin);
    let text = r.rest().replace('\r', "");
    assert_eq!(status.code(), Some(0), "{text}");
    assert_eq!(text.matches("got INT").count(), 1, "{text}");
    assert!(text.contains("done\nrc=0"), "{text}");
}

#[test]
fn ctrl_z_stops_the_job_and_fg_continues_it_with_the_terminal() {
    // The command stops itself as ^Z would; pk-spawn stops in turn, so
    // the job-control shell sees the job stopped (148) and gets the
    // terminal; `fg` continues pk-spawn, which gives the terminal to the
    // command's group again and continues it.
    let cmd = format!(
        "set -m; {PG}; pk-spawn -- sh -c 'kill -TSTP $$; {PG}; echo resumed'; echo stopped=$?; {PG}; fg; echo rc=$?; {PG}",
        PG = PG.replace('\'', r"'\''")
    );
    let text = pty_output(&cmd, b"");
    assert!(text.contains("stopped=148"), "{text}");
    assert!(text.contains("resumed"), "{text}");
    assert!(text.contains("rc=0"), "{text}");
    let g = groups(&text);
    assert_eq!(g.len(), 4, "{text}");
    let shell = g[0];
    assert_eq!(
        g[1], shell,
        "the shell holds the terminal while the job is stopped: {text}"
    );
    assert_eq!(g[2].0, g[2].1, "the command holds it after fg: {text}");
    assert_ne!(g[2].0, shell.0, "{text}");
    assert_eq!(g[3], shell, "and the shell after the job: {text}");
}

#[test]
fn a_sigkilled_pk_spawn_leaves_the_terminal_to_a_job_control_shell() {
    // pk-spawn cannot give the terminal back when SIGKILLed; bash with job
    // control takes it back itself when the job ends.
    let cmd = format!(
        "set -m; {PG}; pk-spawn -- sh -c 'kill -KILL $PPID; sleep 0.2'; echo rc=$?; {PG}",
        PG = PG.replace('\'', r"'\''")
    );
    let text = pty_output(&cmd, b"");
    assert!(text.contains("rc=137"), "{text}");
    let g = groups(&text);
    assert_eq!(g.len(), 2, "{text}");
    assert_eq!(g[1], g[0], "{text}");
}
