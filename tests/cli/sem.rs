//! pk-sem: the worker demo, and a named semaphore around shell commands.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;

use crate::common::*;

fn status_value(name: &str) -> u32 {
    let out = pk("sem").args(["status", "--name", name]).output().unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let v = text
        .trim_end()
        .strip_prefix(&format!("name={name} value="))
        .unwrap_or_else(|| panic!("{text:?}"));
    v.parse().unwrap()
}

fn unlink(name: &str) {
    let out = pk("sem").args(["unlink", "--name", name]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), format!("unlinked {name}\n"));
}

/// The demo's worker lines, checked: every worker says wants, working,
/// done once each and in that order. Returns the result line.
/// `pk-sem run --name NAME --value 1 -- sh -c SCRIPT`, running.
fn hold(name: &str, script: &str) -> Running {
    let mut cmd = pk_std("sem");
    cmd.args([
        "run", "--name", name, "--value", "1", "--", "sh", "-c", script,
    ]);
    Running::start(cmd, false)
}

fn check_demo(text: &str, workers: usize) -> String {
    let mut seen: HashMap<i32, Vec<&str>> = HashMap::new();
    let mut result = None;
    for line in text.lines().skip(1) {
        if line.starts_with("max_inside=") {
            result = Some(line.to_string());
            break;
        }
        let (pid, what) = line.split_once(' ').unwrap();
        seen.entry(pid.parse().unwrap()).or_default().push(what);
    }
    assert_eq!(seen.len(), workers, "{text}");
    for (pid, words) in &seen {
        assert_eq!(words, &["wants", "working", "done"], "worker {pid}: {text}");
    }
    let pids: Vec<i32> = seen.keys().copied().collect();
    assert!(leftovers(&pids).is_empty());
    result.expect("result line")
}

fn max_inside(result: &str) -> u32 {
    result
        .strip_prefix("max_inside=")
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{result}"))
}

#[test]
fn demo_five_workers_value_three() {
    let check = ShmCheck::start();
    let out = pk("sem")
        .args(["demo", "--workers", "5", "--value", "3", "--hold", "300ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.starts_with("parent ")
            && text
                .lines()
                .next()
                .unwrap()
                .ends_with(": 5 workers, semaphore value 3, hold 300ms"),
        "{text}"
    );
    let result = check_demo(&text, 5);
    let m = max_inside(&result);
    assert!((1..=3).contains(&m), "{result}");
    assert!(result.ends_with(" final_value=3"), "{result}");
    assert!(text.ends_with(&format!("{result}\n")));
    check.finish();
}

#[test]
fn twenty_workers_never_exceed_three() {
    // Asserted from the counter the workers keep in shared memory (raised
    // after sem_wait returns, lowered before sem_post), not from timing.
    for _ in 0..3 {
        let out = pk("sem")
            .args(["demo", "-n", "20", "-v", "3", "--hold", "5ms"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let result = check_demo(&stdout(&out), 20);
        assert!(max_inside(&result) <= 3, "{result}");
        assert!(result.ends_with(" final_value=3"), "{result}");
    }
    // Value 1 is a lock: one at a time.
    let out = pk("sem")
        .args(["demo", "-n", "8", "-v", "1", "--hold", "1ms", "-q"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "max_inside=1 final_value=1\n");
}

#[test]
fn timeline_draws_one_row_per_worker() {
    let out = pk("sem")
        .args([
            "demo",
            "-n",
            "4",
            "-v",
            "2",
            "--hold",
            "20ms",
            "--timeline",
            "-q",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].starts_with("max_inside="), "{text}");
    assert!(lines[1].starts_with("timeline: 60 columns = "), "{text}");
    for row in &lines[2..] {
        let chart = row.split_once(" |").unwrap().1;
        assert_eq!(chart.len(), 61, "{row}");
        assert!(chart.ends_with('|') && chart.contains('#'), "{row}");
        assert!(chart.chars().all(|c| " .#|".contains(c)), "{row}");
    }
}

#[test]
fn run_passes_the_command_status_through_and_posts_back() {
    let mut check = ShmCheck::start();
    let name = check.name("run");
    let run = |cmd: &[&str]| {
        pk("sem")
            .args(["run", "--name", &name, "--value", "2", "--"])
            .args(cmd)
            .output()
            .unwrap()
    };
    let out = run(&["sh", "-c", "echo hello; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "hello\n");
    assert!(out.stderr.is_empty());
    assert_eq!(status_value(&name), 2, "the slot was posted back");
    let mode = std::fs::metadata(format!("/dev/shm/sem.{}", &name[1..]))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o600);

    let out = run(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(143), "128 + SIGTERM");

    let out = run(&["pk-no-such-command-here"]);
    assert_one_line_error(&out, "sem", 127);
    assert!(String::from_utf8_lossy(&out.stderr).contains("execvp(pk-no-such-command-here)"));

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let out = run(&[plain.to_str().unwrap()]);
    assert_one_line_error(&out, "sem", 126);

    assert_eq!(status_value(&name), 2);
    unlink(&name);
    check.finish();
}

#[test]
fn eight_background_runs_with_value_two_never_run_three_at_once() {
    let mut check = ShmCheck::start();
    let name = check.name("bg");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    // Each command appends `start` once it holds a slot and `end` before it
    // gives it back; O_APPEND writes land in the order they happen.
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8; do \
           pk-sem run --name {name} --value 2 -- \
             sh -c 'echo start >> {log}; sleep 0.05; echo end >> {log}' & \
         done; wait; pk-sem status --name {name}; pk-sem unlink --name {name}",
        log = log.display()
    );
    let out = bash(&script).output().unwrap();
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        format!("name={name} value=2\nunlinked {name}\n")
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let (mut running, mut max, mut starts) = (0i32, 0i32, 0);
    for line in text.lines() {
        match line {
            "start" => {
                running += 1;
                starts += 1;
            }
            "end" => running -= 1,
            other => panic!("{other:?}"),
        }
        max = max.max(running);
    }
    assert_eq!(starts, 8, "{text}");
    assert_eq!(running, 0);
    assert!(max <= 2, "{max} ran at once: {text}");
    check.finish();
}

#[test]
fn timeout_declines_with_exit_1_or_the_conflict_code() {
    let mut check = ShmCheck::start();
    let name = check.name("busy");
    let mut holder = hold(&name, "echo holding; exec sleep 60");
    holder.wait_for(|l| l == "holding");
    for (extra, code) in [
        (&["--timeout", "0"][..], 1),
        (&["--timeout", "50ms"][..], 1),
        (&["--timeout", "0", "-E", "75"][..], 75),
        (&["--timeout", "10ms", "--conflict-exit-code", "0"][..], 0),
    ] {
        let out = pk("sem")
            .args(["run", "--name", &name])
            .args(extra)
            .args(["--", "echo", "ran"])
            .output()
            .unwrap();
        assert_one_line_error(&out, "sem", code);
        assert!(out.stdout.is_empty(), "the command never ran");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no free slot"),
            "{extra:?}"
        );
    }
    // A waiter ended by SIGTERM takes no slot and runs nothing. (If the
    // signal lands before pk-sem has set up its handler, the default action
    // ends it instead: either way it ends by SIGTERM.)
    let mut cmd = pk_std("sem");
    cmd.args(["run", "--name", &name, "--", "echo", "ran"]);
    let mut waiter = Running::start(cmd, false);
    waiter.signal(nix::sys::signal::Signal::SIGTERM);
    let st = waiter.wait();
    assert!(
        st.code() == Some(143) || st.signal() == Some(libc::SIGTERM),
        "{st:?}"
    );
    assert_eq!(
        status_value(&name),
        0,
        "the holder still holds the only slot"
    );

    // SIGTERM to the holder is passed on to its command; the slot comes back.
    holder.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(holder.wait().code(), Some(143));
    assert_eq!(status_value(&name), 1);
    unlink(&name);
    check.finish();
}

#[test]
fn a_sigkilled_holder_loses_its_slot_until_reset() {
    let mut check = ShmCheck::start();
    let name = check.name("kill");
    let mut holder = hold(&name, "echo holding $$; exec sleep 60");
    let seen = holder.wait_for(|l| l.starts_with("holding "));
    let sleeper = pid_after(seen.last().unwrap(), "holding ").unwrap();
    holder.child.kill().unwrap(); // SIGKILL: no chance to post
    assert_signal(&holder.wait(), libc::SIGKILL);
    // The command itself was orphaned (re-parented to this test process).
    let _ = leftovers(&[sleeper]);

    assert_eq!(status_value(&name), 0, "the slot is lost");
    let out = pk("sem")
        .args(["run", "--name", &name, "--timeout", "0", "--", "true"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "sem", 1);

    // The documented recovery.
    let out = pk("sem")
        .args(["reset", "--name", &name, "--value", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), format!("reset {name}: value 0 -> 1\n"));
    assert_eq!(status_value(&name), 1);
    let out = pk("sem")
        .args(["run", "--name", &name, "--timeout", "0", "--", "echo", "ok"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "ok\n");

    // The other recovery: unlink, and the next run creates it afresh.
    unlink(&name);
    let out = pk("sem")
        .args(["run", "--name", &name, "--value", "2", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(status_value(&name), 2);
    unlink(&name);
    check.finish();
}

#[test]
fn missing_semaphores_are_exit_66() {
    let mut check = ShmCheck::start();
    let name = check.name("missing");
    for sub in ["status", "unlink"] {
        let out = pk("sem").args([sub, "--name", &name]).output().unwrap();
        assert_one_line_error(&out, "sem", 66);
    }
    check.finish();
}

#[test]
fn bad_names_and_values_are_usage_errors() {
    let check = ShmCheck::start();
    assert_eq!(pk("sem").output().unwrap().status.code(), Some(2));
    let long = format!("/{}", "x".repeat(299));
    let n = "/pk-never-created";
    let table: Vec<Vec<&str>> = vec![
        vec!["status", "--name", "jobs"],
        vec!["status", "--name", "/a/b"],
        vec!["status", "--name", &long],
        vec!["status", "--name", "/"],
        vec!["status", "--name", ""],
        vec!["status"],
        vec!["unlink", "--name", "jobs"],
        vec!["reset", "--name", n, "--value", "0"],
        vec!["reset", "--name", "/a/b", "--value", "1"],
        vec!["run", "--name", "jobs", "--", "true"],
        vec!["run", "--name", "/a/b", "--", "true"],
        vec!["run", "--name", &long, "--", "true"],
        vec!["run", "--name", n, "--value", "0", "--", "true"],
        vec!["run", "--name", n, "--value", "-1", "--", "true"],
        vec!["run", "--name", n, "--value", "2147483648", "--", "true"],
        vec![
            "run",
            "--name",
            n,
            "--value",
            "99999999999999999999",
            "--",
            "true",
        ],
        vec!["run", "--name", n, "--value", "x", "--", "true"],
        vec!["run", "--name", n, "--timeout", "soon", "--", "true"],
        vec!["run", "--name", n, "-E", "256", "--", "true"],
        vec!["run", "--name", n],
        vec!["demo", "--value", "0"],
        vec!["demo", "--value", "-1"],
        vec!["demo", "--value", "2147483648"],
        vec!["demo", "--workers", "0"],
        vec!["demo", "--workers", "1025"],
        vec!["demo", "--hold", "-1"],
        vec!["demo", "--hold", "2d"],
        vec!["nope"],
    ];
    for args in &table {
        let out = pk("sem").args(args).output().unwrap();
        assert_usage(&out, "sem");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(!std::path::Path::new("/dev/shm/sem.pk-never-created").exists());
    check.finish();
}

#[test]
fn help_documents_flags_output_and_the_killed_holder() {
    assert_help(
        "sem",
        &[],
        &[
            "<pid> wants",
            "<pid> working",
            "<pid> done",
            "max_inside=",
            "final_value=",
            "name=<name> value=",
            "SIGKILL",
            "pk-sem reset --name /jobs --value 3",
            "pk-sem unlink --name /jobs",
            "Exit status",
            "127",
            "126",
        ],
    );
    assert_help(
        "sem",
        &["run"],
        &[
            "--name",
            "--value",
            "--timeout",
            "--conflict-exit-code",
            "SIGKILL",
            "pk-sem reset --name /jobs --value 3",
            "Exit status",
        ],
    );
    assert_help(
        "sem",
        &["demo"],
        &["--workers", "--value", "--hold", "--timeline", "--quiet"],
    );
}

#[test]
fn run_keeps_signals_its_starter_ignored() {
    // `cmd &` in a script ignores SIGINT; the command must inherit that,
    // as it would without pk-sem in between.
    let mut check = ShmCheck::start();
    let name = check.name("ign");
    let out = bash(&format!(
        "trap '' INT; pk-sem run --name {name} -- sh -c 'grep SigIgn /proc/$$/status'; \
         pk-sem unlink --name {name} >/dev/null"
    ))
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let mask = u64::from_str_radix(text.trim().rsplit('\t').next().unwrap(), 16).unwrap();
    assert_ne!(mask & (1 << (libc::SIGINT - 1)), 0, "{text}");
    check.finish();
}
