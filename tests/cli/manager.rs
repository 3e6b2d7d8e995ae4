//! pk-manager: master/worker over TCP on loopback (port 0 only), with an
//! auth key.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::*;

const KEY: &str = "s3cret";

/// A server on 127.0.0.1:0 and the address it printed.
fn serve(extra: &[&str]) -> (Running, String) {
    let mut cmd = pk_std("manager");
    cmd.args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--authkey",
        KEY,
        "--timeout",
        "50s",
    ])
    .args(extra);
    let mut run = Running::start(cmd, false);
    let seen = run.wait_for(|l| l.starts_with("listening on "));
    let addr = seen
        .last()
        .unwrap()
        .strip_prefix("listening on 127.0.0.1:")
        .map(|port| format!("127.0.0.1:{port}"))
        .expect("a loopback address");
    (run, addr)
}

fn worker(addr: &str, key: &str, extra: &[&str]) -> Output {
    pk("manager")
        .args(["work", "--connect", addr, "--authkey", key])
        .args(extra)
        .output()
        .unwrap()
}

/// Read the server's lines up to the last of its `tasks` result lines,
/// check that it exits 0, and return (every line, task id -> (value, pid)).
fn finish(run: &mut Running, tasks: u32) -> (Vec<String>, BTreeMap<u32, (u64, i32)>) {
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
        // task <id>: <n> * <n> = <v> by pid <p>
        let (id, rest) = l.strip_prefix("task ").unwrap().split_once(": ").unwrap();
        let words: Vec<&str> = rest.split(' ').collect();
        let id: u32 = id.parse().unwrap();
        let value: u64 = words[4].parse().unwrap();
        let pid: i32 = words[7].parse().unwrap();
        assert!(
            results.insert(id, (value, pid)).is_none(),
            "task {id} twice: {lines:#?}"
        );
    }
    (lines, results)
}

#[track_caller]
fn assert_all_results(results: &BTreeMap<u32, (u64, i32)>, tasks: u32) {
    assert_eq!(
        results.keys().copied().collect::<Vec<_>>(),
        (1..=tasks).collect::<Vec<_>>()
    );
    for (id, (value, _)) in results {
        assert_eq!(*value, u64::from(*id) * u64::from(*id));
    }
}

/// The task ids in a worker's `task <id> done` lines.
fn done_ids(out: &Output) -> Vec<u32> {
    stdout(out)
        .lines()
        .filter(|l| l.contains(" done: "))
        .map(|l| {
            let after = l.split(": task ").nth(1).unwrap();
            after.split(' ').next().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
fn two_workers_share_the_tasks() {
    let (mut server, addr) = serve(&["--tasks", "6", "--min-workers", "2"]);
    let a = {
        let addr = addr.clone();
        std::thread::spawn(move || worker(&addr, KEY, &["--task-delay", "10ms"]))
    };
    let b = worker(&addr, KEY, &["--task-delay", "10ms"]);
    let a = a.join().unwrap();
    for w in [&a, &b] {
        assert_success(w);
        assert!(w.stderr.is_empty());
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
    let bad = worker(&addr, "not-the-key", &[]);
    assert_one_line_error(&bad, "manager", 77);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("refused the authkey"),
        "{bad:?}"
    );
    assert!(bad.stdout.is_empty(), "no task: {}", stdout(&bad));
    let refused = server.wait_for(|l| l.starts_with("refused "));
    let line = refused.last().unwrap();
    assert!(line.ends_with(": wrong authkey"), "{line}");
    let bad_addr = line.split(' ').nth(1).unwrap().to_string();

    let good = worker(&addr, KEY, &[]);
    assert_eq!(good.status.code(), Some(0));
    assert_eq!(done_ids(&good), [1, 2]);
    let (lines, results) = finish(&mut server, 2);
    assert_all_results(&results, 2);
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("task ") && l.contains(&format!("-> {bad_addr} "))),
        "{lines:#?}"
    );
}

/// Send `bytes` (ignoring a reset while sending) and wait, bounded, for the
/// server to close the connection.
fn send_and_expect_close(addr: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(bytes);
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 512];
    loop {
        assert!(Instant::now() < deadline, "server kept the connection open");
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // the challenge
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected a close after {} bytes, got {e}", bytes.len()),
        }
    }
}

#[test]
fn garbage_clients_are_closed_and_the_server_keeps_serving() {
    let (mut server, addr) = serve(&["--tasks", "3"]);
    // Random bytes (a fixed xorshift stream, so a failure reproduces).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let random: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    send_and_expect_close(&addr, &random);
    // An oversized frame: only its length is ever read.
    send_and_expect_close(&addr, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    send_and_expect_close(&addr, &[0, 0, 0x10, 0x01]);
    // A frame within the limit that is no message, and an empty frame.
    send_and_expect_close(&addr, &[0, 0, 0, 3, 99, 1, 2]);
    send_and_expect_close(&addr, &[0, 0, 0, 0]);
    // A response with a made-up tag is a refused key, not a crash.
    let mut forged = vec![0, 0, 0, 69, 2, 0, 0, 0, 1];
    forged.extend_from_slice(&[0xab; 64]);
    send_and_expect_close(&addr, &forged);
    // Connect and hang up at once.
    drop(TcpStream::connect(&addr).unwrap());

    let good = worker(&addr, KEY, &[]);
    assert_success(&good);
    let (lines, results) = finish(&mut server, 3);
    assert_all_results(&results, 3);
    let closed: Vec<&String> = lines.iter().filter(|l| l.starts_with("closed ")).collect();
    assert!(
        closed
            .iter()
            .any(|l| l.contains("a frame of 4294967295 bytes, the limit is 1..=4096")),
        "{lines:#?}"
    );
    assert!(
        closed
            .iter()
            .any(|l| l.contains("not a pk-manager message")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("refused ") && l.contains("(pid 1)")),
        "{lines:#?}"
    );
}

#[test]
fn a_worker_killed_mid_task_has_its_task_reassigned() {
    let (mut server, addr) = serve(&["--tasks", "3"]);
    let mut cmd = pk_std("manager");
    cmd.args([
        "work",
        "--connect",
        &addr,
        "--authkey",
        KEY,
        "--task-delay",
        "60s",
    ]);
    let mut doomed = Running::start(cmd, false);
    let seen = doomed.wait_for(|l| l.contains(": task 1 received"));
    let doomed_pid = pid_after(seen.last().unwrap(), "worker ").unwrap();
    doomed.child.kill().unwrap(); // SIGKILL, mid-task
    assert_signal(&doomed.wait(), libc::SIGKILL);

    let good = worker(&addr, KEY, &[]);
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
        results.values().all(|(_, pid)| *pid != doomed_pid),
        "{results:?}"
    );
}

#[test]
fn garbage_from_an_authenticated_worker_closes_it_and_requeues_its_task() {
    use posixkit::manager::{self, Msg, Side};
    let (mut server, addr) = serve(&["--tasks", "2"]);
    // A hand-made worker: authenticate, take a task, then send garbage.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let Msg::Challenge(challenge) = manager::read_frame(&mut s, "server").unwrap() else {
        panic!("no challenge")
    };
    let tag = manager::auth_tag(KEY.as_bytes(), Side::Worker, &challenge);
    let response = Msg::Response {
        pid: 7,
        tag,
        nonce: [1; 32],
    };
    manager::write_frame(&mut s, "server", &response).unwrap();
    assert!(matches!(
        manager::read_frame(&mut s, "server").unwrap(),
        Msg::Welcome { .. }
    ));
    manager::write_frame(&mut s, "server", &Msg::Get).unwrap();
    let Msg::Task(task) = manager::read_frame(&mut s, "server").unwrap() else {
        panic!("no task")
    };
    assert_eq!(task.id, 1);
    s.write_all(&[0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0])
        .unwrap();
    let seen = server.wait_for(|l| l.starts_with("closed "));
    assert!(
        seen.last().unwrap().contains("not a pk-manager message"),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("requeued task 1: ") && l.contains("(pid 7)")),
        "{seen:#?}"
    );

    let good = worker(&addr, KEY, &[]);
    assert_eq!(good.status.code(), Some(0));
    let mut ids = done_ids(&good);
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    let (_, results) = finish(&mut server, 2);
    assert_all_results(&results, 2);
}

#[test]
fn a_server_that_does_not_know_the_key_gets_no_work_done() {
    // A fake server: a challenge, then a welcome with a made-up proof.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut challenge = vec![0, 0, 0, 33, 1];
        challenge.extend_from_slice(&[7; 32]);
        s.write_all(&challenge).unwrap();
        let mut response = [0u8; 4 + 69];
        s.read_exact(&mut response).unwrap();
        assert_eq!(&response[..5], &[0, 0, 0, 69, 2]);
        let mut welcome = vec![0, 0, 0, 33, 3];
        welcome.extend_from_slice(&[0; 32]);
        s.write_all(&welcome).unwrap();
        // The worker must hang up without asking for a task.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        rest
    });
    let out = worker(&addr, KEY, &[]);
    assert_one_line_error(&out, "manager", 77);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not prove it knows the authkey"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty());
    assert!(fake.join().unwrap().is_empty(), "the worker asked for work");
}

#[test]
fn quiet_keeps_the_address_and_the_results() {
    let (mut server, addr) = serve(&["--tasks", "2", "--quiet"]);
    let good = worker(&addr, KEY, &["--quiet"]);
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
    let out = pk("manager")
        .args([
            "serve",
            "--authkey",
            KEY,
            "--tasks",
            "1",
            "--timeout",
            "200ms",
        ])
        .output()
        .unwrap();
    assert_one_line_error(&out, "manager", 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out with 0 of 1 results"),
        "{out:?}"
    );
}

#[test]
fn connection_and_bind_failures_are_one_line() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = worker(&format!("127.0.0.1:{port}"), KEY, &[]);
    assert_one_line_error(&out, "manager", 71);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Connection refused"),
        "{out:?}"
    );
    // A port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = pk("manager")
        .args(["serve", "--bind", &addr, "--authkey", KEY])
        .output()
        .unwrap();
    assert_one_line_error(&out, "manager", 71);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Address already in use"),
        "{out:?}"
    );
}

#[test]
fn help_documents_roles_flags_and_lines() {
    assert_help("manager", &[], &["serve", "work", "HMAC-SHA256", "4096"]);
    for (role, needles) in [
        (
            "serve",
            &[
                "--bind",
                "--authkey",
                "--tasks",
                "--min-workers",
                "--timeout",
                "--quiet",
                "listening on",
                "refused",
                "requeued task",
                "all <N> results:",
                "Exit status",
            ][..],
        ),
        (
            "work",
            &[
                "--connect",
                "--authkey",
                "--task-delay",
                "--connect-timeout",
                "received",
                "done:",
                "77",
            ][..],
        ),
    ] {
        assert_help("manager", &[role], needles);
    }
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    for args in [
        &["nonsense"][..],
        &["serve"],
        &["serve", "--authkey", ""],
        &["serve", "--authkey", KEY, "--tasks", "0"],
        &["serve", "--authkey", KEY, "--tasks", "100001"],
        &["serve", "--authkey", KEY, "--bind", "localhost"],
        &["serve", "--authkey", KEY, "--bind", "127.0.0.1:99999"],
        &["serve", "--authkey", KEY, "--min-workers", "0"],
        &["serve", "--authkey", KEY, "--timeout", "soon"],
        &["work", "--authkey", KEY],
        &["work", "--connect", "127.0.0.1:1"],
        &["work", "--connect", "127.0.0.1:1", "--authkey", ""],
        &[
            "work",
            "--connect",
            "127.0.0.1:1",
            "--authkey",
            KEY,
            "--task-delay",
            "x",
        ],
        &[
            "work",
            "--connect",
            "127.0.0.1:1",
            "--authkey",
            KEY,
            "--connect-timeout",
            "0",
        ],
    ] {
        let out = pk("manager").args(args).output().unwrap();
        assert_usage(&out, "manager");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let long = "k".repeat(1025);
    let out = pk("manager")
        .args(["serve", "--authkey", &long])
        .output()
        .unwrap();
    assert_usage(&out, "manager");
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
}
