//! pk-process: Process objects — name, pid, is_alive, join, terminate, kill,
//! exitcode, and a daemon that dies with its parent.

use crate::common::*;

#[test]
fn the_lesson_runs_in_order_with_python_exitcodes() {
    let out = pk("process").output().unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    assert_eq!(
        lines[0],
        "Worker: before start: daemon=false is_alive=false exitcode=None"
    );
    let pid = pid_after(lines[1], "Worker: started: pid=").unwrap();
    assert_eq!(
        lines[1],
        format!("Worker: started: pid={pid} is_alive=true")
    );
    assert!(
        lines[2].starts_with(&format!(
            "Worker (pid {pid}): hello from the child, my parent is "
        )),
        "{text}"
    );
    assert_eq!(lines[3], "Worker: joined: is_alive=false exitcode=0");
    assert_eq!(lines[4], "Sleeper: terminate (SIGTERM) -> exitcode=-15");
    assert_eq!(
        lines[5],
        "Stubborn: ignores SIGTERM, still alive after terminate; kill (SIGKILL) -> exitcode=-9"
    );
    assert_eq!(lines[6], "Exit3: returned 3 -> exitcode=3");
    let parent = pid_after(lines[7], "Parent (pid ").unwrap();
    let daemon: i32 = lines[7]
        .rsplit("(pid ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    assert_eq!(lines[8], "Parent: killed with SIGKILL -> exitcode=-9");
    assert_eq!(
        lines[9],
        format!("Daemon (pid {daemon}) killed by signal 9 (SIGKILL) after its parent died")
    );
    assert!(leftovers(&[pid, parent, daemon]).is_empty());
}

#[test]
fn name_and_exit_code_flags() {
    let out = pk("process")
        .args(["--name", "Alpha", "--exit-code", "7"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("Alpha: before start:"), "{text}");
    assert!(
        text.contains("\nExit7: returned 7 -> exitcode=7\n"),
        "{text}"
    );
}

#[test]
fn an_inherited_ignored_sigterm_does_not_break_terminate() {
    let out = bash("trap '' TERM; pk-process").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Sleeper: terminate (SIGTERM) -> exitcode=-15\n"));
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let table: &[&[&str]] = &[
        &["--name", ""],
        &["--name", &"x".repeat(65)],
        &["--name", "a\nb"],
        &["--exit-code", "256"],
        &["--exit-code", "-1"],
        &["--exit-code", "x"],
        &["--bogus"],
        &["extra"],
    ];
    assert_usage_table("process", table);
}

#[test]
fn help_documents_the_output() {
    assert_help(
        "process",
        &[],
        &[
            "--name",
            "--exit-code",
            "exitcode=-15",
            "exitcode=-9",
            "PR_SET_PDEATHSIG",
            "Exit status",
        ],
    );
}
