//! pk-manager: the i*i lesson over TCP on loopback (port 0 only), keys,
//! workers that die or stop, a server that dies or stops. Hostile peers
//! are in `manager_hostile`, CPython's managers in `manager_python`, the
//! named queues in `manager_queues`.

use std::collections::BTreeMap;
use std::process::Output;

use crate::common::*;

pub const KEY: &str = "s3cret";

/// `pk-manager ARGS` with the key in PK_AUTHKEY.
pub fn mgr(args: &[&str]) -> std::process::Command {
    let mut cmd = pk_std("manager");
    cmd.args(args).env("PK_AUTHKEY", KEY);
    cmd
}

/// A server on 127.0.0.1:0 with `extra` flags, and the address it printed.
pub fn serve(extra: &[&str]) -> (Running, String) {
    let mut cmd = mgr(&["serve", "--bind", "127.0.0.1:0", "--timeout", "50s"]);
    cmd.args(extra);
    let mut run = Running::start(cmd, false);
    let seen = run.wait_for(|l| l.starts_with("listening on "));
    let addr = seen
        .last()
        .unwrap()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    (run, addr)
}

/// Run a worker to its end with the key in the environment.
pub fn worker(addr: &str, extra: &[&str]) -> Output {
    let mut cmd = assert_cmd::Command::from_std(mgr(&["work", "--connect", addr]));
    cmd.timeout(TIMEOUT).args(extra).output().unwrap()
}

/// A worker running in the background, its stdout read as it comes.
pub fn worker_bg(addr: &str, extra: &[&str]) -> Running {
    let mut cmd = mgr(&["work", "--connect", addr]);
    cmd.args(extra);
    Running::start(cmd, false)
}

/// Read the server's lines up to the last of its `tasks` result lines,
/// check that it exits 0, and return (every line, task id -> (value, by)).
pub fn finish(run: &mut Running, tasks: u32) -> (Vec<String>, BTreeMap<u32, (u64, String)>) {
    let last = format!("task {tasks}: ");
    let lines = run.wait_for(|l| l.starts_with(&last));
    assert_eq!(run.wait().code(), Some(0), "{lines:#?}");
    let head = format!("all {tasks} results:");
    let from = lines
        .iter()
        .position(|l| *l == head)
        .unwrap_or_else(|| panic!("no {head:?} in {lines:#?}"));
    let mut results = BTreeMap::new();
    for l in &lines[from + 1..] {
        // task <id>: <n> * <n> = <v> by pid <p> | by python <addr>
        let (id, rest) = l.strip_prefix("task ").unwrap().split_once(": ").unwrap();
        let words: Vec<&str> = rest.split(' ').collect();
        let id: u32 = id.parse().unwrap();
        let value: u64 = words[4].parse().unwrap();
        let by = words[6..].join(" ");
        assert!(
            results.insert(id, (value, by)).is_none(),
            "task {id} twice: {lines:#?}"
        );
    }
    (lines, results)
}

#[track_caller]
pub fn assert_all_results(results: &BTreeMap<u32, (u64, String)>, tasks: u32) {
    assert_eq!(
        results.keys().copied().collect::<Vec<_>>(),
        (1..=tasks).collect::<Vec<_>>()
    );
    for (id, (value, _)) in results {
        assert_eq!(*value, u64::from(*id) * u64::from(*id));
    }
}

/// The task ids in a worker's `task <id> done` lines.
pub fn done_ids(out: &Output) -> Vec<u32> {
    stdout(out).lines().filter_map(done_id).collect()
}

fn done_id(l: &str) -> Option<u32> {
    if !l.contains(" done: ") {
        return None;
    }
    l.split(": task ").nth(1)?.split(' ').next()?.parse().ok()
}

#[test]
fn two_workers_share_the_tasks() {
    let (mut server, addr) = serve(&["--tasks", "6", "--min-workers", "2"]);
    let a = {
        let addr = addr.clone();
        std::thread::spawn(move || worker(&addr, &["--task-delay", "10ms"]))
    };
    let b = worker(&addr, &["--task-delay", "10ms"]);
    let a = a.join().unwrap();
    for w in [&a, &b] {
        assert_success(w);
        assert!(
            w.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&w.stderr)
        );
        assert!(stdout(w).contains(": authenticated with 127.0.0.1:"));
        assert!(stdout(w).contains(": no more tasks, "));
    }
    // --min-workers 2: both were waiting when the first task went out,
    // so each got one, however the two were scheduled.
    let (ia, ib) = (done_ids(&a), done_ids(&b));
    assert!(!ia.is_empty() && !ib.is_empty(), "{ia:?} {ib:?}");
    let mut all: Vec<u32> = ia.iter().chain(&ib).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=6).collect::<Vec<_>>());
    let (lines, results) = finish(&mut server, 6);
    assert_all_results(&results, 6);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with(" authenticated"))
            .count(),
        2,
        "{lines:#?}"
    );
}

#[test]
fn a_wrong_key_is_refused_with_77_and_gets_no_task() {
    let (mut server, addr) = serve(&["--tasks", "2"]);
    let mut cmd = assert_cmd::Command::from_std(mgr(&["work", "--connect", &addr]));
    let bad = cmd
        .env("PK_AUTHKEY", "not-the-key")
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_one_line_error(&bad, "manager", 77);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("did not prove it knows our authkey"),
        "{bad:?}"
    );
    assert!(bad.stdout.is_empty(), "no task: {}", stdout(&bad));
    let refused = server.wait_for(|l| l.starts_with("refused "));
    assert!(
        refused.last().unwrap().ends_with(": wrong authkey"),
        "{refused:?}"
    );

    let good = worker(&addr, &[]);
    assert_success(&good);
    assert_eq!(done_ids(&good), [1, 2]);
    let (lines, results) = finish(&mut server, 2);
    assert_all_results(&results, 2);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("task ") && l.contains(" -> "))
            .count(),
        2,
        "{lines:#?}"
    );
}

#[test]
fn a_worker_killed_mid_task_has_its_task_reassigned() {
    let (mut server, addr) = serve(&["--tasks", "3"]);
    let mut doomed = worker_bg(&addr, &["--task-delay", "60s"]);
    let seen = doomed.wait_for(|l| l.contains(": task 1 received"));
    let doomed_pid = pid_after(seen.last().unwrap(), "worker ").unwrap();
    doomed.child.kill().unwrap(); // SIGKILL, mid-task
    assert_signal(&doomed.wait(), libc::SIGKILL);

    let good = worker(&addr, &[]);
    assert_success(&good);
    let mut ids = done_ids(&good);
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3], "the survivor did the lost task too");
    let (lines, results) = finish(&mut server, 3);
    assert_all_results(&results, 3);
    assert!(
        lines.iter().any(|l| l.starts_with("requeued task 1: ")
            && l.contains(&format!("(pid {doomed_pid}) left holding it"))),
        "{lines:#?}"
    );
    assert!(
        results
            .values()
            .all(|(_, by)| *by != format!("pid {doomed_pid}")),
        "{results:?}"
    );
}

/// A worker stopped with SIGSTOP while it holds a task keeps its TCP
/// connection open: only the lease gets the task back. Resumed later, its
/// late result is dropped, and every result is counted once.
#[test]
fn a_stopped_worker_loses_its_task_after_the_lease_and_its_late_result_counts_once() {
    let (mut server, addr) = serve(&["--tasks", "3", "--lease", "1s"]);
    let mut stopped = worker_bg(&addr, &["--task-delay", "300ms"]);
    let seen = stopped.wait_for(|l| l.contains(": task 1 received"));
    let pid = pid_after(seen.last().unwrap(), "worker ").unwrap();
    stopped.signal(nix::sys::signal::Signal::SIGSTOP);
    let good = worker(&addr, &[]);
    assert_success(&good);
    let mut ids = done_ids(&good);
    ids.sort_unstable();
    assert_eq!(
        ids,
        [1, 2, 3],
        "the lease ran out and task 1 went to the live worker"
    );
    // SIGKILL reaches a stopped process: its connection closes, so the
    // server need not wait for it to leave.
    stopped.child.kill().unwrap();
    stopped.wait();
    let (lines, results) = finish(&mut server, 3);
    assert_all_results(&results, 3);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("lease expired: task 1 held by ")
                && l.contains(&format!("(pid {pid}) silent for 1s"))),
        "{lines:#?}"
    );
}

#[test]
fn a_late_result_from_a_resumed_worker_is_dropped_while_the_server_runs() {
    // Two tasks; the stopped worker holds task 1 past the lease; a second
    // worker takes task 1 and 2 but is slow on each, so the first worker,
    // resumed, finishes task 1 first: one of the two results for task 1 is
    // counted, the other dropped, whichever comes second.
    let (mut server, addr) = serve(&["--tasks", "2", "--lease", "1s"]);
    let mut first = worker_bg(&addr, &["--task-delay", "500ms"]);
    first.wait_for(|l| l.contains(": task 1 received"));
    first.signal(nix::sys::signal::Signal::SIGSTOP);
    let mut second = worker_bg(&addr, &["--task-delay", "1500ms"]);
    server.wait_for(|l| l.starts_with("lease expired: task 1 "));
    second.wait_for(|l| l.contains(": task 1 received"));
    first.signal(nix::sys::signal::Signal::SIGCONT);
    let (lines, results) = finish(&mut server, 2);
    assert_all_results(&results, 2);
    let late: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("late result 1 from "))
        .collect();
    assert_eq!(late.len(), 1, "{lines:#?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("result 1 from "))
            .count(),
        1,
        "{lines:#?}"
    );
    for w in [&mut first, &mut second] {
        w.wait();
    }
}

#[test]
fn min_workers_counts_only_live_workers() {
    let (mut server, addr) = serve(&["--tasks", "2", "--min-workers", "2"]);
    let mut dead = worker_bg(&addr, &[]);
    dead.wait_for(|l| l.contains(": authenticated with "));
    // Let its get reach the server (the test is only stronger for it).
    std::thread::sleep(std::time::Duration::from_millis(300));
    dead.child.kill().unwrap();
    dead.wait();
    server.wait_for(|l| l.starts_with("closed ") && l.contains("connection closed by the peer"));
    let mut b = worker_bg(&addr, &[]);
    let c = {
        let mut seen = server.wait_for(|l| l.ends_with(" authenticated"));
        // b is the only live worker: no task may go out before c arrives.
        let c = worker_bg(&addr, &[]);
        seen.extend(server.wait_for(|l| l.starts_with("task ") && l.contains(" -> ")));
        let auths = seen
            .iter()
            .filter(|l| l.ends_with(" authenticated"))
            .count();
        assert_eq!(
            auths, 2,
            "the first task went out with one live worker: {seen:#?}"
        );
        c
    };
    let (_, results) = finish(&mut server, 2);
    assert_all_results(&results, 2);
    b.wait();
    drop(c);
}

#[test]
fn workers_exit_non_zero_when_the_server_is_killed_or_stops() {
    for (sig, lease) in [
        (nix::sys::signal::Signal::SIGKILL, "30s"),
        (nix::sys::signal::Signal::SIGSTOP, "1s"),
    ] {
        // A task that never comes: the one task is held by a slow worker.
        let (mut server, addr) = serve(&["--tasks", "1", "--lease", lease]);
        // Both workers' last words (the server gone) are read, not left
        // on the test's stderr.
        let bg = |extra: &[&str]| {
            let mut cmd = mgr(&["work", "--connect", &addr]);
            cmd.args(extra).stderr(std::process::Stdio::piped());
            Running::start(cmd, false)
        };
        let mut holder = bg(&["--task-delay", "60s"]);
        holder.wait_for(|l| l.contains(": task 1 received"));
        let mut waiting = bg(&[]);
        server.wait_for(|l| {
            l.ends_with(" authenticated") && !l.contains(&format!("pid {}", holder.child.id()))
        });
        server.signal(sig);
        let status = waiting.wait();
        assert_eq!(status.code(), Some(71), "{sig:?}: {status:?}");
        let mut err = String::new();
        std::io::Read::read_to_string(waiting.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(
            err.starts_with("pk-manager: ") && err.lines().count() == 1,
            "{sig:?}: {err}"
        );
        if sig == nix::sys::signal::Signal::SIGSTOP {
            server.signal(nix::sys::signal::Signal::SIGKILL);
        }
        server.wait();
    }
}

#[test]
fn keys_come_from_a_private_file_or_the_environment_and_argv_warns() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = file.to_str().unwrap();
    let (_server, addr) = serve(&["--queue", "tasks", "--queue", "results"]);
    // Readable by others: refused, nothing sent.
    let out = pk("manager")
        .args(["work", "--connect", &addr, "--authkey-file", f])
        .output()
        .unwrap();
    assert_one_line_error(&out, "manager", 77);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mode 0644"),
        "{out:?}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let missing = dir.path().join("none");
    let out = pk("manager")
        .args([
            "work",
            "--connect",
            &addr,
            "--authkey-file",
            missing.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_one_line_error(&out, "manager", 66);
    // No key anywhere: a usage error.
    let out = pk("manager")
        .args(["work", "--connect", &addr])
        .env_remove("PK_AUTHKEY")
        .output()
        .unwrap();
    assert_one_line_error(&out, "manager", 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--authkey-file FILE"),
        "{out:?}"
    );
    // The file (trailing newline dropped), the environment, argv (warned).
    let by_file = pk("manager")
        .args([
            "work",
            "--connect",
            &addr,
            "--authkey-file",
            f,
            "--idle",
            "1s",
        ])
        .env_remove("PK_AUTHKEY")
        .output()
        .unwrap();
    assert_success(&by_file);
    assert!(by_file.stderr.is_empty());
    let by_env = worker(&addr, &["--idle", "1s"]);
    assert_success(&by_env);
    let by_argv = pk("manager")
        .args(["work", "--connect", &addr, "--idle", "1s", "--authkey", KEY])
        .env_remove("PK_AUTHKEY")
        .output()
        .unwrap();
    assert_success(&by_argv);
    let err = String::from_utf8_lossy(&by_argv.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "pk-manager: warning: --authkey puts the key where other local users can read it"
        ),
        "{err}"
    );
}

#[test]
fn a_key_file_that_is_a_fifo_a_directory_or_a_link_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    // A FIFO that no one writes: reading it would wait for ever.
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&key, &link).unwrap();
    for (path, why) in [
        (&fifo, "a FIFO, not a regular file"),
        (&dir.path().to_path_buf(), "a directory, not a regular file"),
        (&link, "a symbolic link"),
    ] {
        for args in [
            &["serve", "--bind", "127.0.0.1:0", "--timeout", "1s"][..],
            &["work", "--connect", "127.0.0.1:1"],
        ] {
            let out = pk("manager")
                .args(args)
                .arg("--authkey-file")
                .arg(path)
                .env_remove("PK_AUTHKEY")
                .output()
                .unwrap();
            assert_one_line_error(&out, "manager", 2);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(why), "{args:?} {path:?}: {err}");
        }
    }
}

#[test]
fn authkey_file_dash_reads_the_key_from_stdin() {
    use std::os::unix::fs::PermissionsExt;
    let (_server, addr) = serve(&["--queue", "tasks"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = file.to_str().unwrap();
    // `put MSGS` with the key from stdin, given in `feed` (a shell's view).
    let put = |feed: &str, msgs: &str| {
        bash(&format!(
            "{feed} pk-manager put -c {addr} --queue tasks --authkey-file - {msgs}"
        ))
        .env_remove("PK_AUTHKEY")
        .output()
        .unwrap()
    };
    // From a pipe, its newline dropped, as from a file.
    let out = put(&format!("echo {KEY} |"), "a");
    assert_success(&out);
    assert!(out.stderr.is_empty(), "{out:?}");
    // A wrong key on stdin: the server refuses it (77).
    assert_one_line_error(&put("echo wrong |", "b"), "manager", 77);
    // A file behind stdin (`<key`) is as strict as a named one.
    let out = put(&format!("<{f}"), "c");
    assert_one_line_error(&out, "manager", 77);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("open(stdin): group or others may read it"),
        "{out:?}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_success(&put(&format!("<{f}"), "d"));
    // Nothing on stdin: no key, a usage error.
    assert_one_line_error(&put("</dev/null", "e"), "manager", 2);
    // put reads its messages from stdin with `-` or none: refused, not guessed.
    for msgs in ["", "-"] {
        let out = put(&format!("<{f}"), msgs);
        assert_one_line_error(&out, "manager", 2);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("where put reads its messages"),
            "{out:?}"
        );
    }
    // What got through: a and d, in order.
    let mut get = assert_cmd::Command::from_std(mgr(&[
        "get",
        "--connect",
        &addr,
        "--queue",
        "tasks",
        "-n",
        "2",
        "--timeout",
        "5s",
    ]));
    let got = get.timeout(TIMEOUT).output().unwrap();
    assert_success(&got);
    assert_eq!(stdout(&got), "a\nd\n");
}

#[test]
fn quiet_keeps_the_address_and_the_results() {
    let (mut server, addr) = serve(&["--tasks", "2", "--quiet"]);
    let good = worker(&addr, &["--quiet"]);
    assert_eq!(good.status.code(), Some(0));
    let text = stdout(&good);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.contains(" done: ")), "{text}");
    let (lines, results) = finish(&mut server, 2);
    assert_all_results(&results, 2);
    assert_eq!(lines.len(), 3, "all 2 results: + 2 lines: {lines:#?}");
}

#[test]
fn the_server_gives_up_after_its_timeout() {
    let mut cmd =
        assert_cmd::Command::from_std(mgr(&["serve", "--tasks", "1", "--timeout", "200ms"]));
    let out = cmd.timeout(TIMEOUT).output().unwrap();
    assert_one_line_error(&out, "manager", 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out with 0 of 1 results"),
        "{out:?}"
    );
}

#[test]
fn connection_and_bind_failures_are_one_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = worker(&format!("127.0.0.1:{port}"), &[]);
    assert_one_line_error(&out, "manager", 71);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Connection refused"),
        "{out:?}"
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let mut cmd = assert_cmd::Command::from_std(mgr(&["serve", "--bind", &addr]));
    let out = cmd.timeout(TIMEOUT).output().unwrap();
    assert_one_line_error(&out, "manager", 71);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Address already in use"),
        "{out:?}"
    );
    let out = worker("no-such-host.invalid:1", &[]);
    assert_one_line_error(&out, "manager", 66);
}

#[test]
fn help_documents_roles_flags_and_lines() {
    assert_help(
        "manager",
        &[],
        &[
            "serve",
            "work",
            "put",
            "get",
            "HMAC-SHA256",
            "PK_AUTHKEY",
            "--authkey-file",
        ],
    );
    for (role, needles) in [
        (
            "serve",
            &[
                "--bind",
                "--authkey-file",
                "--tasks",
                "--queue",
                "--capacity",
                "--min-workers",
                "--lease",
                "--handshake-timeout",
                "--max-unauthenticated",
                "--python",
                "--timeout",
                "--quiet",
                "listening on",
                "lease expired",
                "late result",
                "dropped",
                "backing off",
                "all <N> results:",
                "GLOBAL os.system",
                "Exit status",
            ][..],
        ),
        (
            "work",
            &[
                "--connect",
                "--authkey-file",
                "--python",
                "--idle",
                "--stdin",
                "--task-delay",
                "--connect-timeout",
                "received",
                "done:",
                "<status>",
                "77",
            ][..],
        ),
        (
            "put",
            &["--queue", "--close", "--timeout", "stdin", "Exit status"][..],
        ),
        (
            "get",
            &["--queue", "-n", "--timeout", "--null", "Exit status"][..],
        ),
    ] {
        assert_help("manager", &[role], needles);
    }
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let long = "k".repeat(1025);
    let table: &[&[&str]] = &[
        &["nonsense"],
        &["serve", "--authkey", ""],
        &["serve", "--authkey", &long],
        &["serve", "--tasks", "0"],
        &["serve", "--tasks", "100001"],
        &["serve", "--bind", "localhost"],
        &["serve", "--bind", "127.0.0.1:99999"],
        &["serve", "--min-workers", "0"],
        &["serve", "--timeout", "soon"],
        &["serve", "--lease", "0"],
        &["serve", "--handshake-timeout", "0"],
        &["serve", "--queue", "a/b"],
        &["serve", "--queue", "a", "--queue", "a"],
        &["serve", "--queue", "a", "--tasks", "3"],
        &["serve", "--queue", "a", "--capacity", "0"],
        &["serve", "--max-unauthenticated", "0"],
        &["serve", "--queue", "a", "--max-deliveries", "-1"],
        &["serve", "--queue", "a", "--max-deliveries", "1000001"],
        &["serve", "--queue", "a", "--dead-letters", "b"],
        &["serve", "--dead-letters", "results"],
        &["serve", "--authkey", "x", "--authkey-file", "y"],
        &["work"],
        &["work", "--connect", "127.0.0.1:1", "--task-delay", "x"],
        &["work", "--connect", "127.0.0.1:1", "--connect-timeout", "0"],
        &["work", "--connect", "127.0.0.1:1", "--idle", "0"],
        &["work", "--connect", "127.0.0.1:1", "--queue", ""],
        &["work", "--connect", "127.0.0.1:1", "--stdin"],
        &["put", "--connect", "127.0.0.1:1"],
        &["put", "--connect", "127.0.0.1:1", "--queue", "a b", "x"],
        &["get", "--connect", "127.0.0.1:1", "--queue", "q", "-n", "0"],
        &["get", "--queue", "q"],
    ];
    for args in table {
        let out = pk("manager")
            .args(*args)
            .env("PK_AUTHKEY", KEY)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // --authkey on argv warns first; the error is the last line.
        let last = err.lines().last().unwrap_or("").to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            last.starts_with("pk-manager: ") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert!(err.lines().count() <= 2, "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn the_demo_script_runs_a_server_and_two_workers() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/manager-demo.sh");
    let out = bash(&format!("bash {script} 4")).output().unwrap();
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.starts_with("listening on 127.0.0.1:"), "{text}");
    assert!(text.contains("all 4 results:\n"), "{text}");
    assert!(
        text.contains("a worker with a wrong key: exit 77\n"),
        "{text}"
    );
    for id in 1..=4 {
        assert_eq!(
            text.matches(&format!("\ntask {id}: {id} * {id} = {} by pid ", id * id))
                .count(),
            1,
            "{text}"
        );
    }
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
