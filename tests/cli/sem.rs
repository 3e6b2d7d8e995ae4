//! pk-sem: the worker demo, and a named semaphore around shell commands.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;

use crate::common::*;

/// `pk-sem ARGS`, run to its end (with the suite's timeout).
fn sem(args: &[&str]) -> std::process::Output {
    pk("sem").args(args).output().unwrap()
}

/// `pk-sem ARGS` under strace, killed (SIGKILL) at the entry of the
/// `when`th call of `call`; its output (strace ends as its tracee did).
fn sem_killed_at(call: &str, when: u32, args: &[String]) -> std::process::Output {
    let mut words: Vec<String> = vec![
        "strace".into(),
        "-qq".into(),
        "-o".into(),
        "/dev/null".into(),
        "-e".into(),
        format!("trace={call}"),
        "-e".into(),
        format!("inject={call}:signal=SIGKILL:when={when}"),
        bin("pk-sem").display().to_string(),
    ];
    words.extend(args.iter().cloned());
    command(&words).output().unwrap()
}

/// `pk-sem run --name NAME --timeout 0 -- echo ran`: exit 1 while the
/// only slot is taken.
fn run_if_free(name: &str) -> std::process::Output {
    sem(&["run", "--name", name, "--timeout", "0", "--", "echo", "ran"])
}

/// `pk-sem status`: (value, free, waiting).
fn status(name: &str) -> (u32, u32, u32) {
    let out = sem(&["status", "--name", name]);
    assert_success(&out);
    let text = stdout(&out);
    let rest = text
        .trim_end()
        .strip_prefix(&format!("name={name} "))
        .unwrap_or_else(|| panic!("{text:?}"));
    let field = |k: &str| -> u32 {
        rest.split(' ')
            .find_map(|f| f.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {text:?}"))
    };
    (field("value="), field("free="), field("waiting="))
}

/// The free slots of `name`.
fn free(name: &str) -> u32 {
    status(name).1
}

/// The System V key a name file holds.
fn sem_key(name: &str) -> i64 {
    let text = std::fs::read_to_string(format!("/dev/shm/pk-sem.{}", &name[1..])).unwrap();
    let key = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("key=0x"))
        .unwrap_or_else(|| panic!("{text:?}"));
    i64::from_str_radix(key, 16).unwrap()
}

/// The id of the System V set with `key`, if there is one.
fn sysv_id(key: i64) -> Option<i64> {
    std::fs::read_to_string("/proc/sysvipc/sem")
        .unwrap()
        .lines()
        .skip(1)
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let k: i64 = f.next()?.parse().ok()?;
            let id: i64 = f.next()?.parse().ok()?;
            (k == key).then_some(id)
        })
}

fn unlink(name: &str) {
    let key = std::path::Path::new(&format!("/dev/shm/pk-sem.{}", &name[1..]))
        .exists()
        .then(|| sem_key(name));
    let out = sem(&["unlink", "--name", name]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), format!("unlinked {name}\n"));
    if let Some(key) = key {
        assert_eq!(
            sysv_id(key),
            None,
            "the System V set of key {key:#x} left behind"
        );
    }
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
    let out = sem(&["demo", "--workers", "5", "--value", "3", "--hold", "300ms"]);
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
        let out = sem(&["demo", "-n", "20", "-v", "3", "--hold", "5ms"]);
        assert_eq!(out.status.code(), Some(0));
        let result = check_demo(&stdout(&out), 20);
        assert!(max_inside(&result) <= 3, "{result}");
        assert!(result.ends_with(" final_value=3"), "{result}");
    }
    // Value 1 is a lock: one at a time.
    let out = sem(&["demo", "-n", "8", "-v", "1", "--hold", "1ms", "-q"]);
    assert_eq!(stdout(&out), "max_inside=1 final_value=1\n");
}

#[test]
fn timeline_draws_one_row_per_worker() {
    let out = sem(&[
        "demo",
        "-n",
        "4",
        "-v",
        "2",
        "--hold",
        "20ms",
        "--timeline",
        "-q",
    ]);
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
    assert_eq!(status(&name), (2, 2, 0), "the slot was given back");
    let mode = std::fs::metadata(format!("/dev/shm/pk-sem.{}", &name[1..]))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o600);

    // Killed by a signal, the command takes pk-sem along (`$?` 128+N).
    let out = run(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "128 + SIGTERM");

    let out = run(&["pk-no-such-command-here"]);
    assert_one_line_error(&out, "sem", 127);
    assert!(String::from_utf8_lossy(&out.stderr).contains("execvp(pk-no-such-command-here)"));

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let out = run(&[plain.to_str().unwrap()]);
    assert_one_line_error(&out, "sem", 126);

    // A script with no #! line runs through /bin/sh with its arguments;
    // 20 000 of them once overran the command's starting stack.
    let script = dir.path().join("no-shebang");
    std::fs::write(&script, "echo ran with $# args\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let many: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    let mut argv = vec![script.to_str().unwrap()];
    argv.extend(many.iter().map(String::as_str));
    let out = run(&argv);
    assert_success(&out);
    assert_eq!(stdout(&out), "ran with 20000 args\n");

    assert_eq!(free(&name), 2);
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
        format!("name={name} value=2 free=2 waiting=0\nunlinked {name}\n")
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
fn timeout_declines_quietly_with_exit_1_or_the_conflict_code() {
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
        assert_eq!(out.status.code(), Some(code), "{extra:?}");
        // Silent, as flock -n: nothing on stdout (the command never ran),
        // nothing on stderr.
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    }
    // With -v, one line on stderr.
    let out = sem(&[
        "run",
        "--name",
        &name,
        "--timeout",
        "0",
        "-v",
        "--",
        "echo",
        "ran",
    ]);
    assert_one_line_error(&out, "sem", 1);
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no free slot"));
    // A waiter ended by SIGTERM takes no slot and runs nothing.
    let mut cmd = pk_std("sem");
    cmd.args(["run", "--name", &name, "--", "echo", "ran"]);
    let mut waiter = Running::start(cmd, false);
    waiter.signal(nix::sys::signal::Signal::SIGTERM);
    let st = waiter.wait();
    assert_eq!(st.signal(), Some(libc::SIGTERM), "{st:?}");
    assert_eq!(
        status(&name),
        (1, 0, 0),
        "the holder still holds the only slot"
    );

    // A waiter with a timeout of days, or one past what the clock holds,
    // waits like any other (no 24 h limit) and runs once the slot is free.
    let waiters: Vec<Running> = ["400d", "200000d", "99999999999999999999999d"]
        .iter()
        .map(|long| {
            let mut cmd = pk_std("sem");
            cmd.args([
                "run",
                "--name",
                &name,
                "--timeout",
                long,
                "--",
                "echo",
                "ran",
            ]);
            Running::start(cmd, false)
        })
        .collect();

    // SIGTERM to the holder is passed on to its command; the slot comes back.
    holder.signal(nix::sys::signal::Signal::SIGTERM);
    assert_signal(&holder.wait(), libc::SIGTERM);
    for mut w in waiters {
        assert_eq!(w.wait_for(|l| l == "ran"), ["ran"]);
        assert_eq!(w.wait().code(), Some(0));
    }
    assert_eq!(free(&name), 1);
    unlink(&name);
    check.finish();
}

#[test]
fn a_sigkilled_holder_keeps_its_slot_while_its_command_runs_then_gives_it_back() {
    let mut check = ShmCheck::start();
    let name = check.name("kill");
    let mut holder = hold(&name, "echo holding $$; exec sleep 60");
    let seen = holder.wait_for(|l| l.starts_with("holding "));
    let sleeper = pid_after(seen.last().unwrap(), "holding ").unwrap();
    // A waiter queues behind it.
    let mut cmd = pk_std("sem");
    cmd.args([
        "run",
        "--name",
        &name,
        "--timeout",
        "50",
        "--",
        "echo",
        "waited",
    ]);
    let mut waiter = Running::start(cmd, false);
    holder.child.kill().unwrap(); // SIGKILL: no chance to give anything back
    assert_signal(&holder.wait(), libc::SIGKILL);
    // The command still runs, so the slot is still taken: no second
    // command may start.
    assert_eq!(free(&name), 0);
    let out = run_if_free(&name);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    // The command ends (it was orphaned to this test process): the kernel
    // gives the slot back and the waiter, asleep in the kernel, runs.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sleeper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_gone(sleeper);
    assert_eq!(waiter.wait_for(|_| true), ["waited"]);
    assert_eq!(waiter.wait().code(), Some(0));
    assert_eq!(status(&name), (1, 1, 0), "no reset needed");
    unlink(&name);
    check.finish();
}

#[test]
fn a_holder_killed_with_its_command_gives_the_slot_back_at_once() {
    let mut check = ShmCheck::start();
    let name = check.name("killall");
    // Holder and command die together: pk-sem's group, then the command's
    // (off a terminal it leads a group of its own).
    let mut cmd = pk_std("sem");
    cmd.args([
        "run",
        "--name",
        &name,
        "--value",
        "2",
        "--",
        "sh",
        "-c",
        "echo in $$; exec sleep 60",
    ]);
    let mut a = Running::start(cmd, false);
    let seen = a.wait_for(|l| l.starts_with("in "));
    let sleeper = pid_after(seen.last().unwrap(), "in ").unwrap();
    let mut cmd = pk_std("sem");
    cmd.args([
        "run",
        "--name",
        &name,
        "--",
        "sh",
        "-c",
        "echo in; exec sleep 60",
    ]);
    let mut b = Running::start(cmd, false);
    b.wait_for(|l| l == "in");
    assert_eq!(free(&name), 0);
    let pgid = nix::unistd::Pid::from_raw(-(a.child.id() as i32));
    nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let group = nix::unistd::Pid::from_raw(-sleeper);
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_signal(&a.wait(), libc::SIGKILL);
    assert_gone(sleeper);
    // One slot back, with no command of the killed holder left running.
    let out = sem(&[
        "run",
        "--name",
        &name,
        "--timeout",
        "30",
        "--",
        "echo",
        "mine",
    ]);
    assert_success(&out);
    assert_eq!(stdout(&out), "mine\n");
    b.signal(nix::sys::signal::Signal::SIGTERM);
    assert_signal(&b.wait(), libc::SIGTERM);
    assert_eq!(status(&name), (2, 2, 0));
    unlink(&name);
    check.finish();
}

#[test]
fn never_more_than_value_commands_while_holders_are_sigkilled() {
    // 24 runs of value 3 start together; every third pk-sem is SIGKILLed
    // soon after it starts, while waiting or while its command runs. Each
    // command logs its start and end (O_APPEND: in the order they happen);
    // at no point may more than 3 be between start and end, and at the end
    // every slot is back.
    let mut check = ShmCheck::start();
    let name = check.name("kills");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = format!(
        "for i in $(seq 24); do \
           pk-sem run --name {name} --value 3 -- \
             sh -c 'echo $$ >> {pids}; echo start >> {log}; sleep 0.05; echo end >> {log}' & \
           if [ $((i % 3)) = 0 ]; then (sleep 0.0$i; kill -KILL $! 2>/dev/null) & fi; \
         done; wait; \
         while [ \"$(grep -c start {log})\" != \"$(grep -c end {log})\" ]; do sleep 0.05; done; \
         pk-sem status --name {name}",
        log = log.display(),
        pids = dir.path().join("pids").display()
    );
    let out = bash(&script).output().unwrap();
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        format!("name={name} value=3 free=3 waiting=0\n")
    );
    // The commands of killed holders were orphaned to this process: reap.
    let pids = std::fs::read_to_string(dir.path().join("pids")).unwrap_or_default();
    for pid in pids.lines().filter_map(|p| p.parse().ok()) {
        assert_gone(pid);
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
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
    assert!(starts >= 16, "{starts} commands ran: {text}");
    assert_eq!(running, 0, "every started command ended");
    assert!(max <= 3, "{max} ran at once: {text}");
    unlink(&name);
    check.finish();
}

#[test]
fn a_value_that_differs_is_an_error_and_runs_nothing() {
    let mut check = ShmCheck::start();
    let name = check.name("mismatch");
    assert_success(&sem(&[
        "run", "--name", &name, "--value", "2", "--", "true",
    ]));
    let out = sem(&["run", "--name", &name, "--value", "3", "--", "echo", "ran"]);
    assert_usage(&out, "sem");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--value") && err.contains("reset"), "{err}");
    // Without --value, the semaphore's own value; after reset, the new one.
    assert_success(&sem(&["run", "--name", &name, "--", "true"]));
    let out = sem(&["reset", "--name", &name, "--value", "3"]);
    assert_eq!(stdout(&out), format!("reset {name}: value 2 -> 3\n"));
    assert_success(&sem(&[
        "run", "--name", &name, "--value", "3", "--", "true",
    ]));
    assert_eq!(status(&name), (3, 3, 0));
    unlink(&name);
    check.finish();
}

#[test]
fn two_resets_at_once_end_at_one_of_their_values() {
    // Reset A reads the value, then strace parks it at the entry of the
    // semop that applies its change; reset B runs meanwhile. A change
    // computed from the value A read and added on top of B's: from 3, two
    // resets to 1 applied -2 twice and the second waited for ever for
    // slots that no longer existed; 3 to 2 and to 1 passed through 0 (a
    // set then refused as "not the semaphore", exit 65); 1 to 3 twice
    // gave 5 slots. A must see the value moved and start over.
    if strace_missing() {
        return;
    }
    let mut check = ShmCheck::start();
    let dir = tempfile::tempdir().unwrap();
    // (start, A's value, B's value)
    let cases = [(3, 1, 1), (3, 2, 1), (1, 3, 3)];
    let mut parked = Vec::new();
    for (i, &(start, a, _)) in cases.iter().enumerate() {
        let name = check.name(&format!("resets{i}"));
        assert_success(&sem(&[
            "reset",
            "--name",
            &name,
            "--value",
            &start.to_string(),
        ]));
        let trace = dir.path().join(format!("trace{i}"));
        let mut cmd = std::process::Command::new("timeout");
        cmd.args(["-s", "KILL", "20", "strace", "-qq", "-o"])
            .arg(&trace)
            .args(["-e", "trace=semtimedop", "-e"])
            // The first semtimedop is open's fill of a new set (it fails,
            // the set is there); the second applies the change.
            .arg("inject=semtimedop:delay_enter=1500000:when=2")
            .arg(bin("pk-sem"))
            .args(["reset", "--name", &name, "--value", &a.to_string()]);
        parked.push((name, trace, Running::start(cmd, false)));
    }
    for (i, (name, trace, _)) in parked.iter().enumerate() {
        // Parked: strace has written the second call's entry.
        wait_for_traced(trace, "semtimedop", 2);
        let b = cases[i].2;
        let out = sem(&["reset", "--name", name, "--value", &b.to_string()]);
        assert_success(&out);
    }
    for (i, (name, _, mut a)) in parked.into_iter().enumerate() {
        let (_, want_a, want_b) = cases[i];
        let lines = a.wait_for(|l| l.starts_with("reset "));
        assert_eq!(a.wait().code(), Some(0), "case {:?}: {lines:?}", cases[i]);
        assert!(
            lines.last().unwrap().ends_with(&format!("-> {want_a}")),
            "{lines:?}"
        );
        // A's value when it ended last, as it does unless B outlasted
        // the whole park; never a sum of the two changes.
        let (end, free, waiting) = status(&name);
        assert!(
            end == want_a || end == want_b,
            "case {:?}: value {end}",
            cases[i]
        );
        assert_eq!((free, waiting), (end, 0), "case {:?}", cases[i]);
        // Exactly `end` commands run at once, no more.
        let out = sem(&[
            "run",
            "--name",
            &name,
            "--value",
            &end.to_string(),
            "--",
            "true",
        ]);
        assert_success(&out);
        unlink(&name);
    }
    check.finish();
}

#[test]
fn missing_semaphores_are_exit_66() {
    let mut check = ShmCheck::start();
    let name = check.name("missing");
    for sub in ["status", "unlink"] {
        let out = sem(&[sub, "--name", &name]);
        assert_one_line_error(&out, "sem", 66);
    }
    check.finish();
}

#[test]
fn bad_names_and_values_are_usage_errors() {
    let check = ShmCheck::start();
    assert_eq!(pk("sem").output().unwrap().status.code(), Some(2));
    let long = format!("/{}", "x".repeat(249));
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
        vec!["status", "--name", "/a\tb"],
        vec!["run", "--name", &long, "--", "true"],
        vec!["run", "--name", n, "--value", "0", "--", "true"],
        vec!["run", "--name", n, "--value", "-1", "--", "true"],
        vec!["run", "--name", n, "--value", "32768", "--", "true"],
        vec!["reset", "--name", n, "--value", "32768"],
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
    assert!(!std::path::Path::new("/dev/shm/pk-sem.pk-never-created").exists());
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
            "name=<name> value=<V> free=<F> waiting=<W>",
            "SIGKILL",
            "CLONE_SYSVSEM",
            "/dev/shm/pk-sem.<name>",
            "/dev/shm/sem.<name>",
            "sem.XXXXXX",
            "flock -n",
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
            "--verbose",
            "SIGKILL",
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

#[test]
fn foreign_or_damaged_semaphores_are_refused_with_one_line() {
    let mut check = ShmCheck::start();
    let file = |n: &str| format!("/dev/shm/pk-sem.{}", &n[1..]);
    let mut cases: Vec<(String, i32)> = Vec::new();
    // Ours, damaged: empty, garbage, a name file of an unknown format.
    let empty = check.name("empty");
    std::fs::write(file(&empty), b"").unwrap();
    cases.push((empty, 65));
    let junk = check.name("junk");
    std::fs::write(file(&junk), [0x5au8; 32]).unwrap();
    cases.push((junk, 65));
    let old_format = check.name("old-format");
    std::fs::write(file(&old_format), "posixkit-sem 1 semid=12\n").unwrap();
    cases.push((old_format, 65));
    // Ours, but others may write the name file: 77.
    let open = check.name("open");
    assert_success(&sem(&["run", "--name", &open, "--", "true"]));
    std::fs::set_permissions(
        file(&open),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    cases.push((open.clone(), 77));
    let mut foreign_ids: Vec<i64> = Vec::new();
    if is_root() {
        for (tag, script) in [
            ("foreign-empty", ": > {p}"),
            ("foreign-rand", "head -c 32 /dev/urandom > {p}"),
        ] {
            let n = check.name(tag);
            let mut words = as_nobody();
            words.extend(["sh".into(), "-c".into(), script.replace("{p}", &file(&n))]);
            assert_success(&command(&words).output().unwrap());
            cases.push((n, 77));
        }
        // A valid semaphore made by another user, value 1, its name file
        // opened to everyone: whoever made it could lift our limit.
        let n = check.name("foreign-sem");
        let mut words = as_nobody();
        words.extend([
            bin("pk-sem").display().to_string(),
            "reset".into(),
            "--name".into(),
            n.clone(),
            "--value".into(),
            "1".into(),
        ]);
        assert_success(&command(&words).output().unwrap());
        foreign_ids.push(sem_key(&n));
        std::fs::set_permissions(
            file(&n),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        cases.push((n, 77));
        // Our own name file pointing at another user's semaphore.
        let n = check.name("points-away");
        std::fs::write(
            file(&n),
            format!("posixkit-sem 2 key={:#010x} value=1\n", foreign_ids[0]),
        )
        .unwrap();
        cases.push((n, 77));
    } else {
        eprintln!("not root: another user's objects are not tried");
    }
    for (n, code) in &cases {
        let before = std::fs::read(file(n)).unwrap();
        for args in [
            vec!["run", "--name", n.as_str(), "--", "echo", "ran"],
            vec![
                "run",
                "--name",
                n.as_str(),
                "--timeout",
                "0",
                "--",
                "echo",
                "ran",
            ],
            vec!["status", "--name", n.as_str()],
            vec!["reset", "--name", n.as_str(), "--value", "5"],
        ] {
            let out = pk("sem").args(&args).output().unwrap();
            assert_one_line_error(&out, "sem", *code);
            assert!(out.stdout.is_empty(), "{args:?}: the command never ran");
        }
        assert_eq!(std::fs::read(file(n)).unwrap(), before, "{n} changed");
    }
    // Another user's objects stay; ours (damaged or not) go with unlink.
    for (n, code) in &cases {
        let out = sem(&["unlink", "--name", n]);
        if *code == 77 && !n.contains("-open-") {
            assert_one_line_error(&out, "sem", 77);
            std::fs::remove_file(file(n)).unwrap();
        } else if n.contains("-open-") {
            assert_one_line_error(&out, "sem", 77);
            std::fs::set_permissions(file(n), std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            unlink(n);
        } else {
            assert_success(&out);
        }
    }
    for key in foreign_ids {
        let _ = std::process::Command::new("ipcrm")
            .args(["-S", &format!("{key:#x}")])
            .status();
    }
    check.finish();
}

#[test]
fn old_posix_semaphores_are_ignored_by_run_and_removed_by_unlink() {
    let mut check = ShmCheck::start();
    let name = check.name("oldform");
    let old = format!("/dev/shm/sem.{}", &name[1..]);
    // A hostile old-form file does not stop or crash run and status.
    std::fs::write(&old, b"").unwrap();
    let out = sem(&["run", "--name", &name, "--", "echo", "ran"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "ran\n");
    assert_eq!(status(&name), (1, 1, 0));
    // unlink removes both forms (the old one is ours).
    unlink(&name);
    assert!(!std::path::Path::new(&old).exists());
    check.finish();
}

#[test]
fn unlink_cleans_the_temporary_file_glibc_left_when_killed_while_creating() {
    // Python's SemLock is glibc's sem_open(O_CREAT): strace kills it at
    // the unlink of its temporary /dev/shm/sem.XXXXXX, after the link to
    // the name. The temporary name is left, a second link of the file.
    if strace_missing()
        || std::process::Command::new("python3")
            .arg("-V")
            .output()
            .is_err()
    {
        return;
    }
    let mut check = ShmCheck::start();
    let name = check.name("glibc");
    let before: std::collections::BTreeSet<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let py = format!("import _multiprocessing as m\nm.SemLock(1, 1, 1, {name:?}, False)\n");
    let words: Vec<String> = [
        "strace",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=unlink",
        "-e",
        "inject=unlink:signal=SIGKILL:when=1",
        "python3",
        "-c",
    ]
    .iter()
    .map(|w| w.to_string())
    .chain([py])
    .collect();
    let out = command(&words).output().unwrap();
    // strace ends as its tracee did.
    assert_signal(&out.status, libc::SIGKILL);
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !before.contains(n) && n.starts_with("sem.") && n.len() == 10)
        .collect();
    // Removed even if an assertion below fails.
    struct Remove(Vec<String>);
    impl Drop for Remove {
        fn drop(&mut self) {
            for f in &self.0 {
                let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
            }
        }
    }
    let _cleanup = Remove(left.clone());
    assert_eq!(left.len(), 1, "glibc's temporary file: {left:?}");
    let out = sem(&["unlink", "--name", &name]);
    assert_success(&out);
    assert!(!std::path::Path::new(&format!("/dev/shm/{}", left[0])).exists());
    assert!(!std::path::Path::new(&format!("/dev/shm/sem.{}", &name[1..])).exists());
    check.finish();
}

#[test]
fn a_user_without_privileges_runs_commands_under_the_semaphore() {
    if !is_root() {
        eprintln!("skipped: needs root to become nobody");
        return;
    }
    let mut check = ShmCheck::start();
    let name = check.name("nobody");
    let mut words = as_nobody();
    words.extend([
        "sh".into(),
        "-c".into(),
        format!(
            "{pk} run --name {name} --value 2 -- id -u && {pk} status --name {name} && {pk} unlink --name {name}",
            pk = bin("pk-sem").display()
        ),
    ]);
    let out = command(&words).output().unwrap();
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        format!("65534\nname={name} value=2 free=2 waiting=0\nunlinked {name}\n")
    );
    check.finish();
}

#[test]
fn a_holder_killed_at_every_step_of_run_never_strands_a_slot() {
    // strace kills pk-sem at the entry of each of its system calls that
    // matter: taking the slot, starting the command, waiting for it, giving
    // the slot back. The command (when it started) is not traced; it waits
    // for a file before it ends, so the test sees the slot held while it
    // runs. Afterwards every slot is free again, with no reset.
    if strace_missing() {
        return;
    }
    let mut check = ShmCheck::start();
    let dir = tempfile::tempdir().unwrap();
    for (step, call, when, command_ran) in [
        ("locking the name file to open it", "flock", 1, false),
        (
            "opening (the fill-in-if-empty step)",
            "semtimedop",
            1,
            false,
        ),
        ("taking the slot", "semtimedop", 2, false),
        ("starting the command", "clone", 1, false),
        // (poll 1 is the runtime's look at descriptors 0-2, at start.)
        ("waiting for the command", "poll", 2, true),
        ("giving the slot back", "semtimedop", 3, true),
    ] {
        let name = check.name("step");
        assert_success(&sem(&["reset", "--name", &name, "--value", "1"]));
        let go = dir.path().join(format!("go-{call}-{when}"));
        let started = dir.path().join(format!("started-{call}-{when}"));
        // The last step needs the command to end while pk-sem still runs.
        let wait = if when == 3 {
            String::new()
        } else {
            format!("while [ ! -e {} ]; do sleep 0.01; done", go.display())
        };
        // Its output goes nowhere: pk-sem's pipes must close when pk-sem
        // dies, whatever the command does.
        let script = format!(
            "exec >/dev/null 2>&1; echo $$ > {}; {wait}",
            started.display()
        );
        let args = ["run", "--name", &name, "--", "sh", "-c", &script].map(String::from);
        let out = sem_killed_at(call, when, &args);
        assert_signal(&out.status, libc::SIGKILL);
        if command_ran {
            // Started before pk-sem died; it may not have run its first
            // line yet.
            wait_for_line_in(&started, &format!("killed {step}: no command"));
        } else {
            assert!(!started.exists(), "killed {step}: a command ran");
        }
        if command_ran && when != 3 {
            // Still running, still holding the only slot.
            assert_eq!(free(&name), 0, "killed {step}: the command holds it");
            let out = run_if_free(&name);
            assert_eq!(out.status.code(), Some(1), "killed {step}");
            std::fs::write(&go, b"").unwrap();
        }
        if command_ran {
            let pid: i32 = std::fs::read_to_string(&started)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_gone(pid);
        }
        assert_eq!(
            status(&name),
            (1, 1, 0),
            "killed {step}: the slot came back"
        );
        unlink(&name);
    }
    check.finish();
}

#[test]
fn a_creator_killed_at_every_step_leaves_nothing_or_a_name_the_next_user_completes() {
    // strace kills the first `pk-sem run` of a new name at each step of
    // creating it: linking the name file, making the set, filling it in.
    // Killed before the link, nothing is left; after it, the name file is
    // there and the next user makes its set whole, with the value the
    // creator asked for. No set ever exists without a name.
    if strace_missing() {
        return;
    }
    let mut check = ShmCheck::start();
    for (step, call, when, linked) in [
        ("linking the name", "linkat", 1, false),
        ("making the set", "semget", 2, true),
        ("filling the set in", "semtimedop", 1, true),
    ] {
        let name = check.name("create");
        let args = ["run", "--name", &name, "--value", "3", "--", "echo", "ran"].map(String::from);
        let out = sem_killed_at(call, when, &args);
        assert_signal(&out.status, libc::SIGKILL);
        assert!(out.stdout.is_empty(), "killed {step}: nothing ran");
        let file = format!("/dev/shm/pk-sem.{}", &name[1..]);
        assert_eq!(
            std::path::Path::new(&file).exists(),
            linked,
            "killed {step}"
        );
        if !linked {
            continue;
        }
        let key = sem_key(&name);
        if call == "semget" {
            assert_eq!(sysv_id(key), None, "killed {step}: no set yet");
        }
        assert_eq!(status(&name), (3, 3, 0), "killed {step}: made whole");
        unlink(&name);
    }
    check.finish();
}

#[test]
fn a_directory_in_place_of_the_name_file_is_damaged_exit_65() {
    let mut check = ShmCheck::start();
    let name = check.name("dir");
    let dir = format!("/dev/shm/pk-sem.{}", &name[1..]);
    std::fs::create_dir(&dir).unwrap();
    for args in [
        vec!["run", "--name", name.as_str(), "--", "echo", "ran"],
        vec!["status", "--name", name.as_str()],
        vec!["reset", "--name", name.as_str(), "--value", "2"],
        vec!["unlink", "--name", name.as_str()],
    ] {
        let out = sem(&args);
        assert_one_line_error(&out, "sem", 65);
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a regular file (a directory)"),
            "{out:?}"
        );
    }
    assert!(std::path::Path::new(&dir).is_dir());
    std::fs::remove_dir(&dir).unwrap();
    check.finish();
}

#[test]
fn run_passes_arguments_that_are_not_utf8_as_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let mut check = ShmCheck::start();
    let name = check.name("bytes");
    let arg = std::ffi::OsStr::from_bytes(b"caf\xe9.wav");
    let out = pk("sem")
        .args(["run", "--name", &name, "--", "printf", "%s\\n"])
        .arg(arg)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(out.stdout, b"caf\xe9.wav\n");
    unlink(&name);
    check.finish();
}

#[test]
fn run_keeps_a_closed_stdin_stdout_or_stderr_closed_as_flock_does() {
    let mut check = ShmCheck::start();
    let name = check.name("closed");
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("lock");
    // The command says on descriptor 3 which of 0, 1, 2 it has open.
    let probe = "sh -c 's=; for fd in 0 1 2; do \
                   if [ -e /proc/$$/fd/$fd ]; then s=\"$s $fd:open\"; else s=\"$s $fd:closed\"; fi; \
                 done; echo $s >&3'";
    for (redir, want) in [
        ("", "0:open 1:open 2:open"),
        ("<&-", "0:closed 1:open 2:open"),
        (">&-", "0:open 1:closed 2:open"),
        ("2>&-", "0:open 1:open 2:closed"),
    ] {
        let run = |wrapper: &str| {
            let out = bash(&format!("{wrapper} {probe} </dev/null 3>&1 {redir}"))
                .output()
                .unwrap();
            assert_success(&out);
            stdout(&out)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        // `</dev/null` first, so that `<&-` closes what the test gave.
        let ours = run(&format!("pk-sem run --name {name} --"));
        assert_eq!(ours, want, "pk-sem with {redir:?}");
        assert_eq!(ours, run(""), "pk-sem and no wrapper with {redir:?}");
    }
    // flock(1) opens its lock file (read-only) on the lowest free
    // descriptor, so its command finds the lock file where the closed one
    // was: a write there fails as it does on a closed descriptor.
    for (redir, write) in [(">&-", "echo x"), ("2>&-", "echo x >&2")] {
        let run = |wrapper: &str| {
            let script =
                format!("{wrapper} sh -c '{write}; echo rc=$? >&3' </dev/null 3>&1 {redir}");
            let out = bash(&script).output().unwrap();
            assert_success(&out);
            stdout(&out)
        };
        // (The status of the failed write may differ: EBADF here, a
        // read-only file there.)
        let ours = run(&format!("pk-sem run --name {name} --"));
        assert_ne!(ours, "rc=0\n", "pk-sem with {redir:?}");
        let theirs = run(&format!("flock {}", lock.display()));
        assert_ne!(theirs, "rc=0\n", "flock(1) with {redir:?}");
    }
    unlink(&name);
    check.finish();
}

/// A command that counts the SIGINTs it gets, for the tests of how many
/// reach it: it appends to the file argv[1] `ready <its parent's pid>`,
/// `int` for each SIGINT, `ints=<N>` on SIGQUIT (and starts counting
/// again), `bye` on SIGTERM, when it exits 0. QUIT is the marker of the end
/// of a round because it is numbered after INT: pk-sem reads pending
/// signals lowest first, so an INT it would pass on reaches the command
/// before the QUIT that follows it.
const COUNT_INTS: &str = r#"
import os, signal, sys
log = open(sys.argv[1], "a", buffering=1)
n = 0
def on_int(s, f):
    global n
    n += 1
    log.write("int\n")
def on_quit(s, f):
    global n
    log.write(f"ints={n}\n")
    n = 0
def on_term(s, f):
    log.write("bye\n")
    sys.exit(0)
signal.signal(signal.SIGINT, on_int)
signal.signal(signal.SIGQUIT, on_quit)
signal.signal(signal.SIGTERM, on_term)
log.write(f"ready {os.getppid()}\n")
while True:
    signal.pause()
"#;

/// The lines of `log` once one satisfies `pred` (polled; the suite's
/// timeout).
fn log_until(log: &std::path::Path, pred: impl Fn(&[&str]) -> bool) -> Vec<String> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if pred(&lines) {
            return lines.iter().map(|l| l.to_string()).collect();
        }
        assert!(std::time::Instant::now() < deadline, "{text:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_sigint_sent_to_the_group_of_run_reaches_the_command_once() {
    // `kill -INT -PGID` of pk-sem's group (a script's job, timeout(1)):
    // the command gets one SIGINT, not that one and pk-sem's copy.
    let mut check = ShmCheck::start();
    let name = check.name("grpint");
    let dir = tempfile::tempdir().unwrap();
    let (prog, log) = (dir.path().join("count.py"), dir.path().join("log"));
    std::fs::write(&prog, COUNT_INTS).unwrap();
    let mut cmd = pk_std_default_signals("sem");
    cmd.args(["run", "--name", &name, "--", "python3"])
        .arg(&prog)
        .arg(&log);
    let mut run = Running::start(cmd, true);
    log_until(&log, |l| l.iter().any(|l| l.starts_with("ready ")));
    let group = nix::unistd::Pid::from_raw(-(run.child.id() as i32));
    for round in 1..=3 {
        nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGINT).unwrap();
        log_until(&log, |l| l.iter().filter(|l| **l == "int").count() >= round);
        run.signal(nix::sys::signal::Signal::SIGQUIT);
        let lines = log_until(&log, |l| {
            l.iter().filter(|l| l.starts_with("ints=")).count() >= round
        });
        let counts: Vec<&String> = lines.iter().filter(|l| l.starts_with("ints=")).collect();
        assert_eq!(counts.last().unwrap().as_str(), "ints=1", "{lines:?}");
    }
    run.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(run.wait().code(), Some(0));
    unlink(&name);
    check.finish();
}

#[test]
fn a_terminal_ctrl_c_reaches_the_command_once() {
    // ^C typed at a terminal (script(1) gives the run one): the kernel
    // sends SIGINT to pk-sem and to the command, in the same foreground
    // group; pk-sem must not send the command a second one.
    if no_script() {
        return;
    }
    let mut check = ShmCheck::start();
    let name = check.name("ctrlc");
    let dir = tempfile::tempdir().unwrap();
    let (prog, log) = (dir.path().join("count.py"), dir.path().join("log"));
    std::fs::write(&prog, COUNT_INTS).unwrap();
    let log = log.display().to_string();
    // The feeder types ^C into script's terminal, three rounds, then ends
    // the command; it waits on the log between steps. script(1) runs the
    // line with $SHELL, which sits in the same foreground group and gets
    // every ^C too: bash waits for its child and goes on when the child
    // survives, dash (/bin/sh where SHELL is unset) exits 130 at once, so
    // the line is run by this very bash whatever the caller's SHELL.
    let script = format!(
        "log={log}; pid() {{ sed -n 's/^ready //p' $log; }}; \
         w() {{ until eval \"$1\"; do [ $SECONDS -lt 40 ] || exit 9; sleep 0.02; done; }}; \
         ( w \"grep -q '^ready ' $log 2>/dev/null\"; \
           for r in 1 2 3; do \
             printf '\\003'; \
             w \"[ \\$(grep -c '^int$' $log) -ge $r ]\"; \
             kill -QUIT $(pid); \
             w \"[ \\$(grep -c '^ints=' $log) -ge $r ]\"; \
           done; \
           kill -TERM $(pid); \
           w \"grep -q '^bye' $log\" ) \
         | SHELL=$BASH timeout -k 5 30 script -qec 'pk-sem run --name {name} -- python3 {prog} {log}; echo rc=$?' /dev/null \
         | grep -o 'rc=[0-9]*'",
        prog = prog.display()
    );
    let out = bash(&script).output().unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "rc=0\n");
    let text = std::fs::read_to_string(&log).unwrap();
    let counts: Vec<&str> = text.lines().filter(|l| l.starts_with("ints=")).collect();
    assert_eq!(counts, ["ints=1"; 3], "{text}");
    unlink(&name);
    check.finish();
}

#[test]
fn a_waiter_runs_its_command_when_the_semaphore_is_unlinked_under_it() {
    // As a waiter of flock(1) on a removed lock file still gets its lock:
    // the waiter wakes, takes a slot of the name as it is now (made anew)
    // and runs its command; the holder keeps running.
    let mut check = ShmCheck::start();
    let name = check.name("unlinkwait");
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let mut holder = hold(
        &name,
        &format!(
            "echo holding; while [ ! -e {} ]; do sleep 0.02; done; echo held",
            go.display()
        ),
    );
    holder.wait_for(|l| l == "holding");
    let mut cmd = pk_std("sem");
    cmd.args(["run", "--name", &name, "--", "echo", "waited"]);
    let mut waiter = Running::start(cmd, false);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while status(&name).2 != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiter never waited"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = sem(&["unlink", "--name", &name]);
    assert_success(&out);
    assert_eq!(waiter.wait_for(|_| true), ["waited"]);
    assert_eq!(waiter.wait().code(), Some(0));
    std::fs::write(&go, b"").unwrap();
    assert_eq!(holder.wait_for(|_| true), ["held"]);
    assert_eq!(holder.wait().code(), Some(0));
    // The waiter made the name anew; its slot is back.
    assert_eq!(status(&name), (1, 1, 0));
    unlink(&name);
    check.finish();
}

/// The ids of the System V sets that carry `name`'s tag (the FNV-1a hash
/// of its bytes, 1-32767, in semaphore 2 of a pk-sem set), wherever their
/// name file is.
fn sets_tagged(name: &str) -> Vec<i64> {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let tag = (h % 32767 + 1).to_string();
    let table = std::fs::read_to_string("/proc/sysvipc/sem").unwrap();
    let mut found = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(3) != Some(&"3") {
            continue;
        }
        let id: i64 = f[1].parse().unwrap();
        // `ipcs -s -i ID`: a table `semnum value ncount zcount pid`.
        let Ok(out) = std::process::Command::new("ipcs")
            .args(["-s", "-i", &id.to_string()])
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let value_of_2 = text
            .lines()
            .skip_while(|l| !l.starts_with("semnum"))
            .skip(1)
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("2")).then(|| w.next().unwrap_or("").to_string())
            });
        if value_of_2.as_deref() == Some(tag.as_str()) {
            found.push(id);
        }
    }
    found
}

#[test]
fn runs_racing_unlinks_all_run_and_leave_no_set_behind() {
    // Two loops of runs beside a loop of unlinks, then a last unlink:
    // every run runs its command (exit 0), every unlink finds the name or
    // says it is gone (66), and no System V set is left without a name.
    if std::process::Command::new("ipcs")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: ipcs (util-linux) is not installed");
        return;
    }
    let mut check = ShmCheck::start();
    let name = check.name("race");
    assert_eq!(sets_tagged(&name), Vec::<i64>::new());
    let script = format!(
        "runs() {{ for i in $(seq 150); do pk-sem run --name {name} -- true 2>&1 || echo \"run: exit $?\"; done; }}; \
         unlinks() {{ for i in $(seq 150); do pk-sem unlink --name {name} >/dev/null 2>&1; c=$?; \
                      case $c in 0|66) ;; *) echo \"unlink: exit $c\";; esac; done; }}; \
         runs & runs & unlinks & wait; \
         pk-sem unlink --name {name} >/dev/null 2>&1; c=$?; \
         case $c in 0|66) ;; *) echo \"last unlink: exit $c\";; esac"
    );
    let out = bash(&script).output().unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "", "every run and unlink as expected");
    assert!(!std::path::Path::new(&format!("/dev/shm/pk-sem.{}", &name[1..])).exists());
    let left = sets_tagged(&name);
    for id in &left {
        let _ = std::process::Command::new("ipcrm")
            .args(["-s", &id.to_string()])
            .status();
    }
    assert_eq!(left, Vec::<i64>::new(), "System V sets left without a name");
    check.finish();
}

#[test]
fn an_unlink_killed_at_every_step_leaves_a_whole_semaphore_or_a_name_to_complete() {
    // strace kills `pk-sem unlink` at the entry of each step: taking the
    // lock, removing the set (semctl 4: IPC_STAT, two GETVALs, IPC_RMID),
    // removing the name. Whatever it left, a run then runs, and an unlink
    // removes the name and its set: never a set without a name.
    if strace_missing() {
        return;
    }
    let mut check = ShmCheck::start();
    for (step, call, when, set_left) in [
        ("locking the name file", "flock", 1, true),
        ("removing the set", "semctl", 4, true),
        ("removing the name", "unlink", 1, false),
    ] {
        let name = check.name("unlinkstep");
        assert_success(&sem(&["reset", "--name", &name, "--value", "1"]));
        let key = sem_key(&name);
        let out = sem_killed_at(
            call,
            when,
            &["unlink".into(), "--name".into(), name.clone()],
        );
        assert_signal(&out.status, libc::SIGKILL);
        assert_eq!(sem_key(&name), key, "killed {step}: the name stays");
        assert_eq!(sysv_id(key).is_some(), set_left, "killed {step}");
        let out = run_if_free(&name);
        assert_success(&out);
        assert_eq!(stdout(&out), "ran\n", "killed {step}");
        assert_eq!(status(&name), (1, 1, 0), "killed {step}");
        unlink(&name);
    }
    check.finish();
}

#[test]
fn a_name_lock_held_past_the_timeout_ends_the_run_with_one_line() {
    // flock(1) holds the name file's lock as a stopped pk-sem would (one
    // stopped in the middle of an unlink): a run with a timeout gives up
    // instead of waiting for it for ever, and runs once it is let go.
    let mut check = ShmCheck::start();
    let name = check.name("lockheld");
    assert_eq!(run_if_free(&name).status.code(), Some(0));
    let file = format!("/dev/shm/pk-sem.{}", &name[1..]);
    // One process holds it (flock(1) on the shell's descriptor 9), so
    // killing that process lets it go.
    let mut holder = std::process::Command::new("sh");
    holder.args([
        "-c",
        &format!("exec 9<{file}; flock -x 9; echo held; exec sleep 60"),
    ]);
    let mut holder = Running::start(holder, false);
    holder.wait_for(|l| l == "held");
    for timeout in ["0", "0.2"] {
        let out = sem(&[
            "run",
            "--name",
            &name,
            "--timeout",
            timeout,
            "--",
            "echo",
            "ran",
        ]);
        assert_one_line_error(&out, "sem", 1);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("stopped"),
            "{out:?}"
        );
        assert!(out.stdout.is_empty());
    }
    drop(holder);
    assert_eq!(stdout(&run_if_free(&name)), "ran\n");
    unlink(&name);
    check.finish();
}

#[test]
fn an_interrupted_command_ends_the_calling_script_as_under_flock() {
    // A ^C for the whole script: the command dies of SIGINT, and bash ends
    // its loop only if its own child (the wrapper) died of it too. flock(1)
    // does, at SIGINT's default action; pk-sem exited 130 and the loop
    // went on.
    let mut check = ShmCheck::start();
    let name = check.name("int");
    let dir = tempfile::tempdir().unwrap();
    let script = "for i in 1 2 3; do $W sh -c 'echo up > \"$M\"; exec sleep 10'; \
                  echo \"after $i: $?\"; done; echo done";
    for wrapper in [
        format!("flock {}", dir.path().join("lock").display()),
        format!("pk-sem run --name {name} --"),
    ] {
        let (status, out) = interrupt_a_script(&wrapper, script);
        assert_eq!(status.signal(), Some(libc::SIGINT), "{wrapper}: {out}");
        assert_eq!(out, "", "{wrapper}");
    }
    // The slot came back before pk-sem died.
    let out = sem(&["status", "--name", &name]);
    assert!(stdout(&out).contains(" free=1 "), "{out:?}");
    assert_success(&sem(&["unlink", "--name", &name]));
    check.finish();
}

#[test]
fn a_signal_timeout_sends_twice_reaches_the_command_once() {
    // timeout(1) sends its SIGTERM to pk-sem, then to its own group, which
    // holds pk-sem too; off a terminal the command leads a group of its
    // own, and got both copies through pk-sem (2 runs in 15 under
    // timeout). A signal sent again 0.3 s later is passed on.
    let mut check = ShmCheck::start();
    let name = check.name("twice");
    assert_a_copy_is_passed_on_once("sem", &["run", "--name", &name]);
    assert_success(&sem(&["unlink", "--name", &name]));
    check.finish();
}

#[test]
fn an_unlink_the_system_refuses_names_unlink_not_sem_unlink() {
    // Another user's symbolic link under the name, removed by a third
    // user: the sticky /dev/shm refuses (EPERM). The error named glibc's
    // sem_unlink, which a pk-sem name file is not removed with.
    if !is_root() {
        eprintln!("skipped: not root (two other users are needed)");
        return;
    }
    let mut check = ShmCheck::start();
    let name = check.name("link");
    let path = format!("/dev/shm/pk-sem.{}", &name[1..]);
    let mut words = as_nobody();
    words.extend([
        "ln".into(),
        "-s".into(),
        "/nonexistent".into(),
        path.clone(),
    ]);
    assert_success(&command(&words).output().unwrap());
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=54321", "--regid=54321", "--clear-groups"])
        .arg(bin("pk-sem"))
        .args(["unlink", "--name", &name])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_one_line_error(&out, "sem", 77);
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(&format!("pk-sem: unlink({name}): ")),
        "{out:?}"
    );
    check.finish();
}

#[test]
fn a_demo_worker_killed_while_it_holds_the_count_does_not_hang_the_rest() {
    // An unnamed semaphore does not heal: the count a SIGKILLed holder
    // took was never posted, and the other workers waited for ever.
    let mut cmd = pk_std("sem");
    cmd.args(["demo", "--workers", "3", "--value", "1", "--hold", "1s"]);
    let mut run = Running::start(cmd, true);
    let seen = run.wait_for(|l| l.ends_with(" working"));
    let holder = pid_after(seen.last().unwrap(), "").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = run.wait();
    let rest = run.rest();
    assert_eq!(status.code(), Some(71), "{rest}");
    assert!(
        rest.contains(&format!(
            "{holder} killed by signal 9 (SIGKILL) while holding a count: the parent posted it back"
        )),
        "{rest}"
    );
    assert_eq!(rest.matches(" done\n").count(), 2, "{rest}");
    assert!(rest.contains("max_inside=1 final_value=1"), "{rest}");
}

/// `pk-sem run --name NAME -- sh -c 'echo holding; exec sleep 60'`, once
/// it holds its slot.
fn holding(name: &str) -> Running {
    let mut cmd = pk_std("sem");
    cmd.args(["run", "--name", name, "--"])
        .args(["sh", "-c", "echo holding; exec sleep 60"]);
    let mut r = Running::start(cmd, false);
    r.wait_for(|l| l == "holding");
    r
}

/// End a [`holding`] run: SIGTERM, passed on to its command.
fn let_go(mut r: Running) {
    r.signal(nix::sys::signal::Signal::SIGTERM);
    assert_signal(&r.wait(), libc::SIGTERM);
}

/// Wait until `name` has `n` processes waiting for a slot.
fn until_waiting(name: &str, n: u32) {
    let t0 = std::time::Instant::now();
    while status(name).2 < n {
        assert!(t0.elapsed() < TIMEOUT, "never {n} waiting on {name}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn reset_timeout_gives_up_with_exit_1_and_the_value_unchanged() {
    // A shrink waits for holders to finish: for ever, before --timeout.
    let mut check = ShmCheck::start();
    let name = check.name("resettimeout");
    assert_success(&sem(&["reset", "--name", &name, "--value", "3"]));
    let mut holders: Vec<Running> = (0..3).map(|_| holding(&name)).collect();
    let_go(holders.pop().unwrap());
    assert_eq!(status(&name), (3, 1, 0));
    // 3 -> 1 needs two slots; one is free. Refused at once with 0, after
    // the wait with a duration: exit 1, one line, nothing changed, and
    // the slot the reset took meanwhile given back.
    for t in ["0", "200ms", "0.3"] {
        let out = sem(&["reset", "--name", &name, "--value", "1", "--timeout", t]);
        assert_one_line_error(&out, "sem", 1);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("the value stays 3"), "{t}: {err}");
        assert!(out.stdout.is_empty(), "{t}");
        assert_eq!(status(&name), (3, 1, 0), "{t}");
    }
    // Bad durations are usage errors.
    let out = sem(&[
        "reset",
        "--name",
        &name,
        "--value",
        "1",
        "--timeout",
        "soon",
    ]);
    assert_usage(&out, "sem");
    // Within the time: done once a holder finishes, and a growth never
    // waits.
    let mut cmd = pk_std("sem");
    cmd.args(["reset", "--name", &name, "--value", "1", "--timeout", "1m"]);
    let mut reset = Running::start(cmd, false);
    until_waiting(&name, 1);
    let_go(holders.pop().unwrap());
    assert_eq!(
        reset.wait_for(|l| l.starts_with("reset ")),
        [format!("reset {name}: value 3 -> 1")]
    );
    assert_eq!(reset.wait().code(), Some(0));
    assert_eq!(status(&name), (1, 0, 0));
    let out = sem(&["reset", "--name", &name, "--value", "2", "--timeout", "0"]);
    assert_eq!(stdout(&out), format!("reset {name}: value 1 -> 2\n"));
    let_go(holders.pop().unwrap());
    assert_eq!(status(&name), (2, 2, 0));
    unlink(&name);
    check.finish();
}
