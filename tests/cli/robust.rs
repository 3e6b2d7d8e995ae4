//! Every binary under a hostile start: stdout on a full device, stdout
//! closed, stdout non-blocking on a full pipe, SIGCHLD ignored by the
//! parent, no /proc, few descriptors, another thread in the process, and
//! the demo itself SIGKILLed.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

/// One quick run of each binary that prints on stdout, with the files it
/// needs made in `dir`. `forks` says whether the run forks children.
struct Run {
    name: &'static str,
    args: Vec<String>,
    forks: bool,
}

fn runs(dir: &Path) -> Vec<Run> {
    let product = dir.join("product");
    std::fs::write(&product, "5\n").unwrap();
    let product = product.display().to_string();
    let key = dir.join("key");
    std::fs::write(&key, "k\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let key = key.display().to_string();
    let points = dir.join("points.jsonl");
    std::fs::write(
        &points,
        "{\"curve\":\"fork_rss\",\"series\":\"C fork\",\"x\":1,\"y\":2}\n",
    )
    .unwrap();
    let points = points.display().to_string();
    let plots = dir.join("plots").display().to_string();
    let run = |name, args: &[&str], forks| Run {
        name,
        args: args.iter().map(|a| a.to_string()).collect(),
        forks,
    };
    vec![
        run("fork", &["--children", "2"], true),
        // pk-spawn writes nothing of its own on stdout: see
        // pk_spawn_passes_a_commands_write_error_through.
        run("pipe", &["fan-in", "--writers", "2"], true),
        run("pipe", &["duplex", "--rounds", "1"], true),
        run("queue", &["demo", "--items", "3"], true),
        run("shm", &["bytes"], true),
        run(
            "shm",
            &["counter", "--procs", "2", "--iters", "5", "--sync", "lock"],
            true,
        ),
        run(
            "sem",
            &["demo", "--workers", "2", "--value", "1", "--hold", "10ms"],
            true,
        ),
        run("ticket", &["rush", &product, "--buyers", "2"], true),
        run("ticket", &["show", &product], false),
        run("threads", &["daemon", "--work", "100ms"], false),
        run(
            "lock",
            &["tickets", "--threads", "3", "--stock", "2"],
            false,
        ),
        run("event", &["--delay", "10ms"], false),
        run("local", &[], false),
        run("process", &[], true),
        run("pool", &["map", "--workers", "2", "1", "2", "3"], true),
        run("coro", &["ask-answer", "--rounds", "1"], false),
        run(
            "manager",
            &["serve", "--authkey-file", &key, "--tasks", "1"],
            false,
        ),
        run("bench", &["--list"], false),
        run("bench-plot", &[&points, "--out", &plots], false),
    ]
}

/// Every binary's name, for the checks that only need `--help`.
const ALL: [&str; 17] = [
    "fork",
    "spawn",
    "pipe",
    "queue",
    "shm",
    "sem",
    "ticket",
    "threads",
    "lock",
    "event",
    "local",
    "process",
    "pool",
    "coro",
    "manager",
    "bench",
    "bench-plot",
];

/// Run `pk-<name> args` through `sh -c 'exec pk-<name> "$@" REDIRECT'`.
fn with_stdout(name: &str, args: &[String], redirect: &str) -> std::process::Output {
    let script = format!("exec \"$0\" \"$@\" {redirect}");
    let mut words = vec![
        "sh".to_string(),
        "-c".into(),
        script,
        bin(&format!("pk-{name}")).display().to_string(),
    ];
    words.extend(args.iter().cloned());
    command(&words).output().unwrap()
}

#[test]
fn stdout_on_dev_full_is_one_line_and_exit_71() {
    let dir = tempfile::tempdir().unwrap();
    for run in runs(dir.path()) {
        let out = with_stdout(run.name, &run.args, ">/dev/full");
        assert_one_line_error(&out, run.name, 71);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("write(stdout): No space left on device"),
            "pk-{} {:?}: {err}",
            run.name,
            run.args
        );
    }
    for name in ALL {
        for flag in ["--help", "--version"] {
            let out = with_stdout(name, &[flag.to_string()], ">/dev/full");
            assert_one_line_error(&out, name, 71);
        }
    }
}

#[test]
fn a_closed_stdout_is_one_line_and_exit_71() {
    // The runtime reopens a closed descriptor 1 on /dev/null before main;
    // the binaries notice and fail as a write to a closed descriptor does.
    let dir = tempfile::tempdir().unwrap();
    for run in runs(dir.path()) {
        let out = with_stdout(run.name, &run.args, ">&-");
        assert_one_line_error(&out, run.name, 71);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("write(stdout): Bad file descriptor"),
            "pk-{} {:?}: {err}",
            run.name,
            run.args
        );
    }
    for name in ALL {
        let out = with_stdout(name, &["--help".to_string()], ">&-");
        assert_one_line_error(&out, name, 71);
    }
    // A shell's /dev/null, write-only or read-write, is a real stdout:
    // output there is thrown away on purpose.
    for redirect in [">/dev/null", "1<>/dev/null"] {
        let out = with_stdout("fork", &[], redirect);
        assert_success(&out);
    }
    // A command that prints nothing has nothing to lose: `true >&-` works.
    let out = with_stdout(
        "spawn",
        &["--quiet".into(), "--".into(), "true".into()],
        ">&-",
    );
    assert_success(&out);
}

/// Run `argv` with stdout on a pipe of one page that is non-blocking
/// (O_NONBLOCK on the shared open file description, as a parent can leave
/// it) and nearly full before the command starts: python3 fills all but 64
/// bytes with filler and reads nothing for 300 ms, so the command's first
/// line that does not fit meets EAGAIN. Returns the command's exit code,
/// whether it was still waiting when the reading began (it met a full
/// pipe), its output and its stderr.
fn through_full_nonblocking_pipe(argv: &[String]) -> (i32, bool, String, String) {
    const DRIVER: &str = r##"
import fcntl, os, subprocess, sys, time
r, w = os.pipe()
size = fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
filler = size - 64
os.write(w, b"#" * filler)
os.set_blocking(w, False)
p = subprocess.Popen(sys.argv[1:], stdout=w, stderr=subprocess.PIPE)
os.close(w)
time.sleep(0.3)
waiting = p.poll() is None
data = b""
while True:
    chunk = os.read(r, 65536)
    if not chunk:
        break
    data += chunk
err = p.stderr.read()
p.wait()
sys.stderr.write(err.decode(errors="replace"))
sys.stdout.write("%d %s\n" % (p.returncode, "waiting" if waiting else "done"))
sys.stdout.write(data[filler:].decode(errors="replace"))
"##;
    let mut words = vec!["python3".to_string(), "-c".into(), DRIVER.into()];
    words.extend(argv.iter().cloned());
    let out = command(&words).output().unwrap();
    let text = stdout(&out);
    let (head, data) = text.split_once('\n').expect("a report line");
    let (code, state) = head.split_once(' ').unwrap();
    (
        code.parse().unwrap(),
        state == "waiting",
        data.to_string(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn a_non_blocking_stdout_on_a_full_pipe_is_waited_on() {
    let fork = bin("pk-fork").display().to_string();
    // Parent and children all write into the full pipe.
    let (code, waited, data, err) =
        through_full_nonblocking_pipe(&[fork.clone(), "--children".into(), "60".into()]);
    assert_eq!(code, 0, "{err}");
    assert!(waited, "the pipe was full before pk-fork was done");
    assert!(err.is_empty(), "{err}");
    let count = |needle: &str| data.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count(" exited, status=0"), 60, "{data}");
    assert_eq!(count("): started, x=100"), 60, "{data}");
    assert!(
        data.starts_with("parent ")
            && data
                .lines()
                .last()
                .unwrap()
                .starts_with("parent still sees")
    );

    // One line far longer than the pipe: written in parts, none lost.
    let mut argv = ["map", "-w", "2", "--range", "3000"]
        .map(String::from)
        .to_vec();
    argv.insert(0, bin("pk-pool").display().to_string());
    let (code, waited, data, err) = through_full_nonblocking_pipe(&argv);
    assert_eq!(code, 0, "{err}");
    assert!(waited);
    let want: Vec<String> = (0..3000u64).map(|i| (i * i).to_string()).collect();
    assert_eq!(data, format!("[{}]\n", want.join(", ")));

    // --help is written by the same code.
    let (code, waited, data, err) = through_full_nonblocking_pipe(&[fork, "--help".into()]);
    assert_eq!(code, 0, "{err}");
    assert!(waited);
    assert!(
        data.starts_with("Fork child processes") && data.contains("Exit status:"),
        "{data}"
    );
}

/// `python3 -c '<ignore SIGCHLD>; exec pk-<name> args'`: the binary starts
/// with SIGCHLD ignored, as a child of such a parent does.
fn with_sigchld_ignored(name: &str, args: &[String]) -> std::process::Output {
    let mut words = vec![
        "python3".to_string(),
        "-c".into(),
        "import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); \
         os.execv(sys.argv[1], sys.argv[1:])"
            .into(),
        bin(&format!("pk-{name}")).display().to_string(),
    ];
    words.extend(args.iter().cloned());
    command(&words).output().unwrap()
}

#[test]
fn an_ignored_sigchld_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for run in runs(dir.path()).into_iter().filter(|r| r.forks) {
        let out = with_sigchld_ignored(run.name, &run.args);
        assert_success(&out);
        assert!(
            out.stderr.is_empty(),
            "pk-{} {:?}: {}",
            run.name,
            run.args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The children's statuses are still known.
    let out = with_sigchld_ignored(
        "fork",
        &["--exit-code".into(), "3".into(), "--propagate".into()],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = with_sigchld_ignored(
        "spawn",
        &["--".into(), "sh".into(), "-c".into(), "exit 4".into()],
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
}

/// Whether this test may run commands in a mount namespace of their own
/// (root, and unshare(1) allowed); says why not when it may not.
fn can_unshare_mounts() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root to unmount /proc in a mount namespace");
        return false;
    }
    let ok = command(&["unshare".into(), "--mount".into(), "true".into()])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: unshare --mount is not permitted here");
    }
    ok
}

#[test]
fn forking_binaries_work_without_proc() {
    if !can_unshare_mounts() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut forked = 0;
    for run in runs(dir.path()).into_iter().filter(|r| r.forks) {
        let mut words: Vec<String> = [
            "unshare",
            "--mount",
            "--fork",
            "sh",
            "-c",
            "umount -l /proc && test ! -e /proc/self && exec \"$0\" \"$@\"",
        ]
        .map(String::from)
        .to_vec();
        words.push(bin(&format!("pk-{}", run.name)).display().to_string());
        words.extend(run.args.iter().cloned());
        let out = command(&words).output().unwrap();
        assert_success(&out);
        assert!(
            out.stderr.is_empty(),
            "pk-{} {:?}: {}",
            run.name,
            run.args,
            String::from_utf8_lossy(&out.stderr)
        );
        forked += 1;
    }
    assert!(forked >= 10);
}

#[test]
fn out_of_descriptors_is_named_as_such() {
    if which("prlimit").is_none() {
        eprintln!("skipped: prlimit is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The fork check itself needs no descriptor: with every descriptor
    // in use at the moment of the fork (8: stdio, the file, two pipes),
    // the rush still forks its buyers.
    let product = dir.path().join("product");
    std::fs::write(&product, "5\n").unwrap();
    let out = command(&[
        "prlimit".into(),
        "--nofile=8".into(),
        bin("pk-ticket").display().to_string(),
        "rush".into(),
        product.display().to_string(),
        "--buyers".into(),
        "3".into(),
        "--quiet".into(),
    ])
    .output()
    .unwrap();
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        "summary: stock 5, sold 3, left 2, oversold 0\n"
    );

    // Fewer descriptors: whatever fails says it is out of descriptors.
    let mut emfile = 0;
    for n in 4..=8 {
        for run in runs(dir.path()).into_iter().filter(|r| r.forks) {
            let mut words = vec![
                "prlimit".to_string(),
                format!("--nofile={n}"),
                bin(&format!("pk-{}", run.name)).display().to_string(),
            ];
            words.extend(run.args.iter().cloned());
            let out = command(&words).output().unwrap();
            if out.status.success() {
                continue;
            }
            assert_one_line_error(&out, run.name, 71);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("Too many open files"),
                "pk-{} {:?} with {n} descriptors: {err}",
                run.name,
                run.args
            );
            emfile += 1;
        }
    }
    assert!(emfile > 0, "some run ran out of descriptors");
}

/// The full path of `tool` on PATH.
fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// The pids of the processes in process group `pgid`, zombies apart.
fn group_alive(pgid: i32) -> Vec<i32> {
    let mut alive = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[2] == pgid.to_string() {
            if f[0] == "Z" {
                // A dead member re-parented to us: reap it (not the leader,
                // the demo itself, which its Child reaps).
                if pid != pgid {
                    let _ = nix::sys::wait::waitpid(
                        nix::unistd::Pid::from_raw(pid),
                        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                    );
                }
            } else {
                alive.push(pid);
            }
        }
    }
    alive
}

#[test]
fn a_demo_killed_with_sigkill_takes_its_children_along() {
    let dir = tempfile::tempdir().unwrap();
    let product = dir.path().join("product");
    std::fs::write(&product, "400\n").unwrap();
    let product = product.display().to_string();
    let demos: Vec<(&str, Vec<&str>, usize)> = vec![
        ("fork", vec!["--children", "3", "--sleep", "60s"], 3),
        (
            "queue",
            vec![
                "demo", "-p", "2", "-c", "1", "-n", "10000000", "-k", "1", "-q",
            ],
            3,
        ),
        (
            "sem",
            vec![
                "demo",
                "--workers",
                "3",
                "--value",
                "1",
                "--hold",
                "60s",
                "-q",
            ],
            3,
        ),
        (
            "shm",
            vec![
                "counter",
                "--procs",
                "3",
                "--iters",
                "100000000",
                "--sync",
                "lock",
            ],
            3,
        ),
        (
            "pipe",
            vec!["fan-in", "--writers", "3", "--messages", "1000000", "-q"],
            3,
        ),
        (
            "ticket",
            vec!["rush", &product, "--buyers", "400", "--yield", "-q"],
            50,
        ),
        (
            "pool",
            vec![
                "demo",
                "--workers",
                "3",
                "--tasks",
                "100",
                "--task-time",
                "60s",
            ],
            3,
        ),
    ];
    for (name, args, children) in demos {
        let mut cmd = pk_std(name);
        cmd.args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut demo = cmd.spawn().unwrap();
        let pgid = demo.id() as i32;
        // Wait until the demo has its children (it leads its own group).
        let deadline = Instant::now() + TIMEOUT;
        while group_alive(pgid).len() < 1 + children {
            assert!(
                demo.try_wait().unwrap().is_none(),
                "pk-{name} {args:?} ended before it had {children} children"
            );
            assert!(
                Instant::now() < deadline,
                "pk-{name} never had {children} children"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        demo.kill().unwrap();
        let status = demo.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "pk-{name}: {status:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = group_alive(pgid);
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("pk-{name} {args:?}: children left after the demo died: {left:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A shared object, built with cc in `dir`, that starts one idle thread
/// from a constructor, before `main`: LD_PRELOAD it and a binary runs with
/// a second thread it did not start. `None` (and why) without cc.
fn thread_shim(dir: &Path) -> Option<PathBuf> {
    let Some(cc) = which("cc") else {
        eprintln!("skipped: no C compiler (cc) to build the thread shim");
        return None;
    };
    let src = dir.join("shim.c");
    std::fs::write(
        &src,
        "#include <pthread.h>\n#include <unistd.h>\n\
         static void *idle(void *arg) { (void)arg; for (;;) pause(); return 0; }\n\
         __attribute__((constructor)) static void start(void) {\n\
         pthread_t t; if (pthread_create(&t, 0, idle, 0) == 0) pthread_detach(t); }\n",
    )
    .unwrap();
    let so = dir.join("shim.so");
    let out = std::process::Command::new(cc)
        .args(["-shared", "-fPIC", "-pthread", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(so)
}

#[test]
fn with_a_second_thread_every_forking_binary_refuses_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let Some(shim) = thread_shim(dir.path()) else {
        return;
    };
    let product = dir.path().join("product");
    std::fs::write(&product, "5\n").unwrap();
    let mut forking: Vec<(&str, Vec<String>)> = runs(dir.path())
        .into_iter()
        .filter(|r| r.forks)
        .map(|r| (r.name, r.args))
        .collect();
    let more: [(&str, &[&str]); 4] = [
        ("pipe", &["sigpipe"]),
        ("queue", &["basics"]),
        ("pool", &["demo", "--workers", "2", "--tasks", "2"]),
        ("bench", &["--quick", "--only", "fork_wait_us"]),
    ];
    forking.extend(more.map(|(n, a)| (n, a.iter().map(|s| s.to_string()).collect())));
    let mut shm = ShmCheck::start();
    let name = shm.name("shim");
    for (bin_name, args) in &forking {
        let out = pk(bin_name)
            .args(args)
            .env("LD_PRELOAD", &shim)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // pk-bench prints progress lines on stderr before its error.
        let last = err.lines().last().unwrap_or_default();
        assert_eq!(out.status.code(), Some(71), "pk-{bin_name} {args:?}: {err}");
        assert!(
            last.starts_with(&format!("pk-{bin_name}: fork("))
                && last.ends_with(
                    "other threads are running in this process; fork only from a single-threaded one"
                ),
            "pk-{bin_name} {args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // Starting a program is not a fork (clone with CLONE_VM|CLONE_VFORK):
    // it works with threads running, in pk-spawn and in pk-sem run.
    let out = pk("spawn")
        .args(["--quiet", "--", "echo", "spawned"])
        .env("LD_PRELOAD", &shim)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "spawned\n");
    let out = pk("sem")
        .args(["run", "--name", &name, "--", "echo", "ran"])
        .env("LD_PRELOAD", &shim)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "ran\n");
    assert_success(
        &pk("sem")
            .args(["unlink", "--name", &name])
            .output()
            .unwrap(),
    );
    shm.finish();
}

/// pk-spawn adds nothing to stdout, so a full or closed stdout is the
/// command's to report: its status passes through, as under timeout(1).
#[test]
fn pk_spawn_passes_a_commands_write_error_through() {
    for redirect in [">/dev/full", ">&-"] {
        let ours = with_stdout(
            "spawn",
            &["--".into(), "echo".into(), "hi".into()],
            redirect,
        );
        let script = format!("exec timeout 10 echo hi {redirect}");
        let theirs = command(&["sh".to_string(), "-c".into(), script])
            .output()
            .unwrap();
        assert_eq!(ours.status.code(), theirs.status.code(), "{redirect}");
        assert_ne!(
            ours.status.code(),
            Some(0),
            "{redirect}: echo's failure is kept"
        );
        let err = String::from_utf8_lossy(&ours.stderr);
        assert!(
            err.contains("echo"),
            "{redirect}: echo's own message: {err}"
        );
        assert!(
            !err.contains("pk-spawn"),
            "{redirect}: nothing of pk-spawn's: {err}"
        );
    }
}

#[test]
fn a_closed_stdin_is_an_error_where_stdin_is_input() {
    // The Rust runtime puts /dev/null on a descriptor 0 that was closed at
    // start, which read as empty input: `pk-queue put - <&-` put an empty
    // message (the demo's stop sentinel). Now EBADF, as `cat <&-`.
    let mut check = ShmCheck::start();
    let q = check.name("stdin");
    let s = check.name("stdin-seg");
    assert_success(&pk("queue").args(["create", &q]).output().unwrap());
    assert_success(
        &pk("shm")
            .args(["create", &s, "--size", "64"])
            .output()
            .unwrap(),
    );
    for (name, args) in [
        ("queue", vec!["put", q.as_str(), "-"]),
        ("queue", vec!["put", q.as_str(), "--lines"]),
        ("shm", vec!["write", s.as_str()]),
        ("pool", vec!["exec", "--", "echo"]),
        ("manager", vec!["serve", "--authkey-file", "-"]),
    ] {
        let words: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = with_stdout(name, &words, "<&-");
        assert_one_line_error(&out, name, 71);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("read(stdin): Bad file descriptor"),
            "{name} {args:?}: {out:?}"
        );
    }
    let stat = pk("queue").args(["stat", &q]).output().unwrap();
    assert!(stdout(&stat).ends_with("qsize=0\n"), "{stat:?}");
    let read = pk("shm").args(["read", &s, "--len", "4"]).output().unwrap();
    assert_success(&read);
    assert_success(&pk("queue").args(["unlink", &q]).output().unwrap());
    assert_success(&pk("shm").args(["unlink", &s]).output().unwrap());
    check.finish();
}
