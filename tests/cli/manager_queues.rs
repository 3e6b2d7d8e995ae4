//! pk-manager's named queues from a shell: put, get, and workers that run
//! a command per task.

use std::process::Output;

use crate::common::*;
use crate::manager::{mgr, serve};

fn pkm(args: &[&str]) -> Output {
    let mut cmd = assert_cmd::Command::from_std(mgr(args));
    cmd.timeout(TIMEOUT).output().unwrap()
}

fn pkm_in(args: &[&str], input: &str) -> Output {
    let mut cmd = assert_cmd::Command::from_std(mgr(args));
    cmd.timeout(TIMEOUT).write_stdin(input).output().unwrap()
}

/// The messages of a `get` output, each a `<status> <task>` line and the
/// command's output.
fn messages(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let starts = line
            .split_once(' ')
            .is_some_and(|(s, _)| s.parse::<u8>().is_ok())
            && out.last().is_none_or(|m| m.lines().count() >= 2);
        if starts {
            out.push(line.to_string());
        } else if let Some(last) = out.last_mut() {
            last.push('\n');
            last.push_str(line);
        }
    }
    out.sort();
    out
}

#[test]
fn put_work_and_get_run_a_command_per_task() {
    let (mut server, addr) = serve(&["--queue", "tasks", "--queue", "results"]);
    assert_success(&pkm(&[
        "put",
        "--connect",
        &addr,
        "--queue",
        "tasks",
        "abc",
        "x y",
    ]));
    assert_success(&pkm_in(
        &[
            "put",
            "--connect",
            &addr,
            "--queue",
            "tasks",
            "--close",
            "-",
        ],
        "3\n",
    ));
    // Closed after 3: a further put is refused.
    let late = pkm(&["put", "--connect", &addr, "--queue", "tasks", "late"]);
    assert_one_line_error(&late, "manager", 2);
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("queue 'tasks' is closed"),
        "{late:?}"
    );
    let w = pkm(&[
        "work",
        "--connect",
        &addr,
        "--",
        "sh",
        "-c",
        "printf '%s\\n' \"{}\" | tr a-z A-Z; case \"{}\" in 3) exit 3;; esac",
    ]);
    assert_success(&w);
    assert_eq!(
        stdout(&w)
            .lines()
            .filter(|l| l.contains(" done: exit "))
            .count(),
        3,
        "{}",
        stdout(&w)
    );
    let got = pkm(&["get", "--connect", &addr, "--queue", "results", "-n", "3"]);
    assert_success(&got);
    assert_eq!(
        messages(&stdout(&got)),
        ["0 abc\nABC", "0 x y\nX Y", "3 3\n3"],
        "{}",
        stdout(&got)
    );
    // Nothing left: a get times out, exit 1.
    let empty = pkm(&[
        "get",
        "--connect",
        &addr,
        "--queue",
        "results",
        "--timeout",
        "200ms",
    ]);
    assert_one_line_error(&empty, "manager", 1);
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("timed out after 0 of 1"),
        "{empty:?}"
    );
    // A timeout of days, or one past what the clock holds, is a wait like
    // any other (no 24 h limit): the get waits for the put.
    for long in ["400d", "99999999999999999999999d"] {
        let mut cmd = mgr(&[]);
        cmd.args([
            "get",
            "--connect",
            &addr,
            "--queue",
            "results",
            "--timeout",
            long,
        ]);
        let mut getter = Running::start(cmd, false);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_success(&pkm(&[
            "put",
            "--connect",
            &addr,
            "--queue",
            "results",
            long,
        ]));
        assert_eq!(getter.wait_for(|l| l == long), [long]);
        assert_eq!(getter.wait().code(), Some(0), "--timeout {long}");
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait();
}

#[test]
fn stdin_tasks_and_nul_separated_results() {
    let (_server, addr) = serve(&["--queue", "in", "--queue", "out"]);
    assert_success(&pkm_in(
        &["put", "--connect", &addr, "--queue", "in", "--close"],
        "hello\n",
    ));
    let w = pkm(&[
        "work",
        "--connect",
        &addr,
        "--queue",
        "in",
        "--results",
        "out",
        "--stdin",
        "--quiet",
        "--",
        "rev",
    ]);
    assert_success(&w);
    assert_eq!(stdout(&w).lines().count(), 1, "{}", stdout(&w));
    let got = pkm(&["get", "--connect", &addr, "--queue", "out", "-0"]);
    assert_success(&got);
    assert_eq!(got.stdout, b"0 hello\nolleh\0");
}

#[test]
fn a_full_queue_makes_put_wait_and_then_decline() {
    let (_server, addr) = serve(&["--queue", "q", "--capacity", "2"]);
    let out = pkm(&[
        "put",
        "--connect",
        &addr,
        "--queue",
        "q",
        "--timeout",
        "300ms",
        "a",
        "b",
        "c",
    ]);
    assert_one_line_error(&out, "manager", 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the queue stayed full"),
        "{out:?}"
    );
    let got = pkm(&["get", "--connect", &addr, "--queue", "q", "-n", "2"]);
    assert_success(&got);
    assert_eq!(stdout(&got), "a\nb\n");
    // Room again: a put that waited gets in once a get makes room.
    let waiting = {
        let addr = addr.clone();
        std::thread::spawn(move || pkm(&["put", "--connect", &addr, "--queue", "q", "c", "d", "e"]))
    };
    let got = pkm(&["get", "--connect", &addr, "--queue", "q", "-n", "3"]);
    assert_success(&got);
    assert_eq!(stdout(&got), "c\nd\ne\n");
    assert_success(&waiting.join().unwrap());
    for (args, needle) in [
        (
            &["put", "--connect", &addr, "--queue", "nope", "x"][..],
            "no queue named 'nope'",
        ),
        (
            &["get", "--connect", &addr, "--queue", "nope"][..],
            "no queue named 'nope'",
        ),
    ] {
        let out = pkm(args);
        assert_one_line_error(&out, "manager", 2);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{out:?}"
        );
    }
}

#[test]
fn heartbeats_keep_a_long_task_and_a_killed_worker_loses_it() {
    let (mut server, addr) = serve(&["--queue", "tasks", "--queue", "results", "--lease", "1s"]);
    assert_success(&pkm(&[
        "put",
        "--connect",
        &addr,
        "--queue",
        "tasks",
        "slow",
        "lost",
    ]));
    // 2.5 s of work under a 1 s lease: heartbeats keep it.
    let slow = pkm(&[
        "work",
        "--connect",
        &addr,
        "--idle",
        "300ms",
        "--",
        "sh",
        "-c",
        "case {} in slow) sleep 2.5;; lost) exit 9;; esac; echo {}",
    ]);
    assert_success(&slow);
    // A worker SIGKILLed while its command runs: the task goes back.
    assert_success(&pkm(&[
        "put",
        "--connect",
        &addr,
        "--queue",
        "tasks",
        "again",
    ]));
    let mut doomed = Running::start(
        mgr(&[
            "work",
            "--connect",
            &addr,
            "--",
            "sh",
            "-c",
            "sleep 60 # {}",
        ]),
        false,
    );
    doomed.wait_for(|l| l.contains("received: again"));
    doomed.child.kill().unwrap();
    doomed.wait();
    let lines = server.wait_for(|l| l.starts_with("requeued task "));
    assert!(
        !lines.iter().any(|l| l.starts_with("lease expired")),
        "{lines:#?}"
    );
    let redo = pkm(&["work", "--connect", &addr, "--idle", "300ms", "--", "echo"]);
    assert_success(&redo);
    let got = pkm(&["get", "--connect", &addr, "--queue", "results", "-n", "3"]);
    assert_success(&got);
    let text = stdout(&got);
    assert!(
        text.contains("0 slow\nslow\n")
            && text.contains("9 lost\n")
            && text.contains("0 again\nagain\n"),
        "{text}"
    );
}

#[test]
fn a_task_that_cannot_run_fails_alone_and_the_workers_live() {
    let (_server, addr) = serve(&["--queue", "tasks", "--queue", "results"]);
    let put = |input: &str| {
        assert_success(&pkm_in(
            &["put", "--connect", &addr, "--queue", "tasks", "-"],
            input,
        ))
    };
    let get = |n: &str| {
        let out = pkm(&["get", "--connect", &addr, "--queue", "results", "-n", n]);
        assert_success(&out);
        stdout(&out)
    };
    // A NUL byte cannot be one of CMD's arguments: that task fails, the
    // one after it runs, on the same worker.
    put("a\0b\nok\n");
    let w = pkm(&["work", "--connect", &addr, "--idle", "1s", "--", "echo"]);
    assert_eq!(w.status.code(), Some(65), "{w:?}");
    let err = String::from_utf8_lossy(&w.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("pk-manager: task(a\\0b): a NUL byte"),
        "{err}"
    );
    let lines = stdout(&w);
    assert!(lines.contains(": task 1 failed: "), "{lines}");
    assert!(lines.contains(": task 2 done: exit 0"), "{lines}");
    // One worker: the results come in the tasks' order.
    assert_eq!(get("2"), "65 a\\0b\n0 ok\nok\n");
    // Not a number for the lesson's square: that task alone fails.
    // A square past 128 bits is refused too, not wrapped round (2^64
    // squared came out as 0).
    put("seven\n7\n18446744073709551616\n-13043817825332782213\n");
    let w = pkm(&["work", "--connect", &addr, "--idle", "1s"]);
    assert_eq!(w.status.code(), Some(65), "{w:?}");
    let err = String::from_utf8_lossy(&w.stderr);
    assert!(
        err.contains("task(seven): the lesson's task is not a number")
            && err.contains("task(18446744073709551616): its square does not fit in 128 bits")
            && err.contains("task(-13043817825332782213): its square does not fit"),
        "{w:?}"
    );
    let mut results: Vec<String> = get("4").lines().map(String::from).collect();
    results.sort();
    assert_eq!(
        results,
        [
            "-13043817825332782213: its square does not fit in 128 bits",
            "18446744073709551616: its square does not fit in 128 bits",
            "7 * 7 = 49",
            "seven: not a number"
        ]
    );
}

/// A worker whose server dies (SIGKILL) or stops (SIGSTOP) while its
/// command runs does not wait for the command: the heartbeats notice
/// (a closed connection, or a whole lease of silence), the command's
/// whole process group is ended — SIGTERM, then SIGKILL for one that
/// ignores it — and the worker exits 71 with one line saying why. Its
/// result would be a duplicate: the server has handed the task on.
#[test]
fn a_worker_ends_its_command_and_exits_71_when_the_server_dies_or_stops() {
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    for (sig, ignore_term) in [
        (nix::sys::signal::Signal::SIGKILL, false),
        (nix::sys::signal::Signal::SIGSTOP, true),
    ] {
        let (mut server, addr) =
            serve(&["--queue", "tasks", "--queue", "results", "--lease", "1s"]);
        assert_success(&pkm(&["put", "--connect", &addr, "--queue", "tasks", "x"]));
        // The command starts a grandchild in its group and waits far
        // longer than the test's own timeout.
        let bg = dir.path().join(format!("bg-{sig:?}"));
        let trap = if ignore_term { "trap '' TERM; " } else { "" };
        let script = format!(
            "{trap}sleep 300 & echo $! > {}; wait; echo {{}}",
            bg.display()
        );
        let err = dir.path().join(format!("err-{sig:?}"));
        let mut cmd = mgr(&["work", "--connect", &addr, "--", "sh", "-c", &script]);
        cmd.stderr(std::fs::File::create(&err).unwrap());
        let mut w = Running::start(cmd, false);
        w.wait_for(|l| l.contains("received: x"));
        let bg_pid = loop {
            if let Some(p) = std::fs::read_to_string(&bg)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                break p;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        server.signal(sig);
        let status = w.wait();
        assert_eq!(status.code(), Some(71), "{sig:?}: {status:?}");
        let text = std::fs::read_to_string(&err).unwrap();
        assert_eq!(text.lines().count(), 1, "{sig:?}: {text}");
        assert!(
            text.starts_with("pk-manager: heartbeat(")
                && text.contains("task 1: ")
                && text.contains("its command was ended"),
            "{sig:?}: {text}"
        );
        assert_gone(bg_pid);
        assert!(!w.rest().contains(" done: "), "{sig:?}");
        server.signal(nix::sys::signal::Signal::SIGKILL);
        server.wait();
    }
}

/// A task whose command kills its worker (as the OOM killer would) is
/// handed out --max-deliveries times, each time behind the tasks waiting,
/// then fails onto the results queue as `65 <task>`; the good tasks behind
/// it run, and workers stop dying.
#[test]
fn a_task_that_kills_every_worker_fails_after_max_deliveries() {
    let (mut server, addr) = serve(&[
        "--queue",
        "tasks",
        "--queue",
        "results",
        "--max-deliveries",
        "2",
    ]);
    assert_success(&pkm(&[
        "put",
        "--connect",
        &addr,
        "--queue",
        "tasks",
        "bad",
        "a",
        "b",
    ]));
    let script = "if [ {} = bad ]; then kill -9 $PPID; sleep 5; fi; echo {}";
    let mut died = 0;
    for _ in 0..5 {
        let w = pkm(&[
            "work",
            "--connect",
            &addr,
            "--idle",
            "500ms",
            "--",
            "sh",
            "-c",
            script,
        ]);
        if w.status.code() == Some(0) {
            break;
        }
        assert_signal(&w.status, libc::SIGKILL);
        died += 1;
    }
    assert_eq!(died, 2, "the limit is 2 deliveries");
    let got = pkm(&[
        "get",
        "--connect",
        &addr,
        "--queue",
        "results",
        "-n",
        "3",
        "--timeout",
        "5s",
    ]);
    assert_success(&got);
    assert_eq!(messages(&stdout(&got)), ["0 a\na", "0 b\nb", "65 bad"]);
    let lines = server.wait_for(|l| l.starts_with("task 1 failed: "));
    assert!(
        lines.last().unwrap().contains("lost 2 times")
            && lines
                .last()
                .unwrap()
                .ends_with("failure result put on results"),
        "{lines:#?}"
    );
}
