//! Helpers shared by every binary's tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Output, Stdio};
use std::sync::Once;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use assert_cmd::Command;

/// The default limit on any command a test runs: a hang fails the test.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The path of a `pk-*` binary built by cargo for this test run.
pub fn bin(name: &str) -> PathBuf {
    assert_cmd::cargo::cargo_bin(name)
}

/// An assert_cmd Command for `pk-<name>` with the default timeout, run in
/// its own process group (see [`leftovers`]).
pub fn pk(name: &str) -> Command {
    let mut cmd = Command::from_std(pk_std(name));
    cmd.timeout(TIMEOUT);
    cmd
}

/// [`pk_std`], through `env --default-signal=INT,QUIT,HUP,TERM` (which
/// execs it: the pid is the binary's): for the tests of those signals,
/// which need them at their default action in pk-<name> even when the
/// suite was started with them ignored, as a background job of a script
/// ignores INT and QUIT.
pub fn pk_std_default_signals(name: &str) -> std::process::Command {
    become_subreaper();
    let mut cmd = std::process::Command::new("env");
    cmd.arg("--default-signal=INT,QUIT,HUP,TERM")
        .arg(bin(&format!("pk-{name}")))
        .stdin(Stdio::null())
        .process_group(0)
        .env(TAG, new_tag());
    cmd
}

/// A std Command for `pk-<name>` in its own process group with stdin from
/// /dev/null, for tests that read output as it comes.
pub fn pk_std(name: &str) -> std::process::Command {
    become_subreaper();
    let mut cmd = std::process::Command::new(bin(&format!("pk-{name}")));
    cmd.stdin(Stdio::null())
        .process_group(0)
        .env(TAG, new_tag());
    cmd
}

/// The environment variable that marks every process a test starts, and
/// everything those processes fork or exec, with a tag of that test.
pub const TAG: &str = "PK_TEST_TAG";

thread_local! {
    /// The tags of the commands started by the test running on this thread
    /// (the test harness runs each test on its own thread).
    static TAGS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A new tag, remembered as one of this test's.
pub fn new_tag() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let tag = format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    TAGS.with(|t| t.borrow_mut().push(tag.clone()));
    tag
}

/// Whether `pid` carries a tag of a command this test started.
fn started_by_this_test(pid: i32) -> bool {
    // A process in the middle of execve shows an empty environment for a
    // moment: read again before concluding it has none.
    let mut env = Vec::new();
    for _ in 0..50 {
        match std::fs::read(format!("/proc/{pid}/environ")) {
            Ok(e) if !e.is_empty() => {
                env = e;
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => return false,
        }
    }
    TAGS.with(|tags| {
        let tags = tags.borrow();
        env.split(|&b| b == 0).any(|kv| {
            kv.strip_prefix(format!("{TAG}=").as_bytes())
                .is_some_and(|v| tags.iter().any(|t| t.as_bytes() == v))
        })
    })
}

/// PATH with the directory of the built binaries first.
pub fn path_with_binaries() -> String {
    let dir = bin("pk-fork").parent().expect("binary dir").to_path_buf();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A bash command with the built binaries first on PATH, as a user's script
/// would run them.
pub fn bash(script: &str) -> Command {
    become_subreaper();
    let path = path_with_binaries();
    let mut std_cmd = std::process::Command::new("bash");
    std_cmd
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .env(TAG, new_tag())
        .process_group(0);
    let mut cmd = Command::from_std(std_cmd);
    cmd.timeout(TIMEOUT);
    cmd
}

/// Make this test process the subreaper of everything it starts: a
/// grandchild that a `pk-*` binary fails to reap is re-parented to us
/// instead of to init, so [`leftovers`] can see it.
pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER"));
}

/// The pids among `pids` that still exist as orphans re-parented to this
/// test process: processes a binary forked and left behind. They are killed
/// and reaped here so the test process stays clean.
///
/// Every command a test starts runs in its own process group and carries a
/// tag of its test in its environment, which everything it forks inherits.
/// An orphan is a process that is our child, not a group leader (so not a
/// command we started directly) and tagged by this test: another test's
/// process that happens to reuse one of the pids is never counted, or
/// touched.
pub fn leftovers(pids: &[i32]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut left = Vec::new();
    for &pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the last ')' : state ppid pgrp ...
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let mut f = rest.split_whitespace();
        let _state = f.next();
        let ppid: i32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let pgrp: i32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == me && pgrp != pid && started_by_this_test(pid) {
            left.push(pid);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
    }
    left
}

/// Assert that the process was ended by exactly `sig`.
#[track_caller]
pub fn assert_signal(status: &std::process::ExitStatus, sig: i32) {
    assert_eq!(
        status.signal(),
        Some(sig),
        "expected death by signal {sig}, got {status:?}"
    );
}

/// Assert a usage error: exit 2, exactly one line on stderr that names the
/// binary, nothing on stdout.
#[track_caller]
pub fn assert_usage(out: &Output, name: &str) {
    assert_one_line_error(out, name, 2);
}

/// Run `pk-<name>` with each argument list of `table` and assert for every
/// one a usage error ([`assert_usage`]) and nothing on stdout.
#[track_caller]
pub fn assert_usage_table(name: &str, table: &[&[&str]]) {
    for args in table {
        let out = pk(name).args(*args).output().unwrap();
        assert_usage(&out, name);
        assert!(
            out.stdout.is_empty(),
            "pk-{name} {args:?} printed on stdout"
        );
    }
}

/// Whether strace can be run here; tests that need it print why they skip.
pub fn strace_missing() -> bool {
    let missing = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err();
    if missing {
        eprintln!("skipped: strace is not installed");
    }
    missing
}

/// Assert exit status 0, showing the command's stderr when it is not.
#[track_caller]
pub fn assert_success(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Assert exit `code`, exactly one line on stderr that starts with
/// `pk-<name>: `, and no panic.
#[track_caller]
pub fn assert_one_line_error(out: &Output, name: &str, code: i32) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "status {:?}, stderr: {err}",
        out.status
    );
    assert_eq!(
        err.lines().count(),
        1,
        "want one line on stderr, got: {err:?}"
    );
    assert!(err.starts_with(&format!("pk-{name}: ")), "stderr: {err:?}");
    assert!(!err.contains("panicked"), "stderr: {err:?}");
}

/// Run `CMD | head -1` under `set -o pipefail`: CMD must end as a tool
/// does when its reader has gone, status 141 (SIGPIPE) with nothing on
/// stderr. Returns what head printed.
#[track_caller]
pub fn assert_quiet_on_closed_stdout(cmd: &str) -> String {
    let out = bash(&format!("set -o pipefail; {cmd} | head -1; echo status=$?"))
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{cmd}: no Broken pipe message: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    match text.strip_suffix("status=141\n") {
        Some(head) => head.to_string(),
        None => panic!("{cmd}: want a quiet SIGPIPE-style exit, got: {text}"),
    }
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// A running binary whose stdout is read line by line with a deadline. It is
/// killed and reaped on drop, so a failing test leaves nothing behind.
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
}

impl Running {
    /// Start `cmd` with stdout piped.
    pub fn start(mut cmd: std::process::Command, own_group: bool) -> Running {
        if own_group {
            cmd.process_group(0);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
        let stdout: ChildStdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// Read lines until one satisfies `pred`; panics after [`TIMEOUT`].
    /// Returns every line read, the matching one last.
    pub fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = pred(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!("no matching line ({e:?}); saw {seen:?}"),
            }
        }
    }

    /// The lines not read yet, up to the end of stdout (call it once the
    /// process has ended).
    pub fn rest(&mut self) -> String {
        let mut text = String::new();
        while let Ok(line) = self.lines.recv_timeout(TIMEOUT) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    /// Send it `sig`.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Wait for the process to end, with the default timeout.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process did not end within {TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pk-<name> ARGS --help` exits 0 and its text holds every needle; returns
/// the text.
pub fn assert_help(name: &str, args: &[&str], needles: &[&str]) -> String {
    let out = pk(name).args(args).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{name} {args:?} --help");
    let text = stdout(&out);
    for needle in needles {
        assert!(
            text.contains(needle),
            "{name} {args:?} --help lacks {needle}"
        );
    }
    text
}

/// The pid that follows `prefix` at the start of a line: `pid_after("child 42 exited", "child ")` is 42.
pub fn pid_after(line: &str, prefix: &str) -> Option<i32> {
    line.strip_prefix(prefix)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Whether this test process runs as root (CI does).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Command-line words that run the rest as the unprivileged user `nobody`
/// when we are root (setpriv), and as ourselves otherwise.
pub fn as_nobody() -> Vec<String> {
    if is_root() {
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
        .map(String::from)
        .to_vec()
    } else {
        Vec::new()
    }
}

/// A POSIX IPC name no other test (or test run) uses: `/pk-t<pid>-<tag>-<n>`.
pub fn unique_name(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "/pk-t{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// The posixkit-looking entries of /dev/shm (`pk-…`, `sem.pk-…`,
/// `posixkit…`): what a test checks before and after it runs. Other
/// programs' entries are ignored, since they come and go on their own.
pub fn dev_shm_pk() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.starts_with("pk-") || n.starts_with("sem.pk-") || n.contains("posixkit")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that a test leaves no /dev/shm object behind: every posixkit
/// entry present at the end must have been there at the start, and the
/// test's own `names` must all be gone (as `/dev/shm/<name>` and as
/// `/dev/shm/sem.<name>`).
pub struct ShmCheck {
    before: std::collections::BTreeSet<String>,
    names: Vec<String>,
}

impl ShmCheck {
    /// Snapshot /dev/shm now.
    pub fn start() -> ShmCheck {
        ShmCheck {
            before: dev_shm_pk(),
            names: Vec::new(),
        }
    }

    /// A fresh unique name that [`ShmCheck::finish`] will check for.
    pub fn name(&mut self, tag: &str) -> String {
        let n = unique_name(tag);
        self.names.push(n.clone());
        n
    }

    /// Assert nothing was left behind.
    #[track_caller]
    pub fn finish(self) {
        for n in &self.names {
            let base = n.trim_start_matches('/');
            for path in [
                format!("/dev/shm/{base}"),
                format!("/dev/shm/sem.{base}"),
                format!("/dev/shm/pk-sem.{base}"),
            ] {
                assert!(!std::path::Path::new(&path).exists(), "{path} left behind");
            }
        }
        // Only entries of this test process's own names can be blamed on
        // this test: other tests run in parallel.
        let mine = format!("pk-t{}-", std::process::id());
        let left: Vec<String> = dev_shm_pk()
            .difference(&self.before)
            .filter(|n| {
                self.names
                    .iter()
                    .any(|m| n.ends_with(m.trim_start_matches('/')))
                    || (!n.contains(&mine) && n.contains("posixkit"))
            })
            .cloned()
            .collect();
        assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    }
}

impl Drop for ShmCheck {
    /// A test that fails half-way still removes its own named objects, so
    /// one failure does not leave /dev/shm entries behind for good.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.names {
                let base = n.trim_start_matches('/');
                let _ = std::fs::remove_file(format!("/dev/shm/{base}"));
                let _ = std::fs::remove_file(format!("/dev/shm/sem.{base}"));
                // pk-sem's name file, and the System V set it names.
                let file = format!("/dev/shm/pk-sem.{base}");
                if let Ok(text) = std::fs::read_to_string(&file) {
                    if let Some(key) = text.split_whitespace().find_map(|w| w.strip_prefix("key="))
                    {
                        let _ = std::process::Command::new("ipcrm")
                            .args(["-S", key])
                            .output();
                    }
                }
                let _ = std::fs::remove_file(&file);
            }
        }
    }
}

/// An assert_cmd Command for any program (`words[0]`) with arguments, set up
/// like [`pk`]: own process group, this test's tag, the default timeout.
pub fn command(words: &[String]) -> Command {
    become_subreaper();
    let mut std_cmd = std::process::Command::new(&words[0]);
    std_cmd
        .args(&words[1..])
        .process_group(0)
        .env(TAG, new_tag());
    let mut cmd = Command::from_std(std_cmd);
    cmd.timeout(TIMEOUT);
    cmd
}

/// Wait (up to [`TIMEOUT`]) until `pid` is gone or a zombie; a zombie
/// re-parented to this test process is reaped.
#[track_caller]
pub fn assert_gone(pid: i32) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(stat) if stat[stat.rfind(')').map_or(0, |i| i + 2)..].starts_with('Z') => {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                return;
            }
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "process {pid} is still running"
            ),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn leftovers_finds_a_real_orphan() {
    // bash starts a sleep in the background and exits: the sleep is
    // re-parented to this test process, which must notice it.
    let out = bash("sleep 30 >/dev/null 2>&1 & echo $!").output().unwrap();
    let pid: i32 = stdout(&out).trim().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    let tagged = started_by_this_test(pid);
    assert_eq!(
        leftovers(&[pid]),
        vec![pid],
        "stat {stat:?}, tagged {tagged}, me {}",
        std::process::id()
    );
    assert!(
        leftovers(&[pid]).is_empty(),
        "killed and reaped by the first call"
    );
}

/// True (with a note) when script(1), which gives a test a terminal, is
/// not installed: the caller skips.
pub fn no_script() -> bool {
    let missing = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err();
    if missing {
        eprintln!("skipped: script(1) (util-linux) is not installed");
    }
    missing
}

/// Wait (up to [`TIMEOUT`]) until the strace output file `trace` names
/// system call `call` `n` times: with `delay_enter`/`delay_exit`, strace
/// writes a call's entry before it holds the tracee there, so the
/// tracee is then parked at (or just after) that call.
pub fn wait_for_traced(trace: &std::path::Path, call: &str, n: usize) {
    let needle = format!("{call}(");
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::fs::read_to_string(trace)
        .unwrap_or_default()
        .matches(&needle)
        .count()
        < n
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{call} was not called {n} times: {}",
            std::fs::read_to_string(trace).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait (at most [`TIMEOUT`]) until the file at `path` holds at least one
/// whole line; `what` names it in the failure.
pub fn wait_for_line_in(path: &std::path::Path, what: &str) -> String {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Ok(t) = std::fs::read_to_string(path) {
            if t.ends_with('\n') {
                return t;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: no line in {path:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Run `script` under bash in a session of its own, with `wrapper` in
/// place of `$W`, until the wrapped command has written `up` to `$M`;
/// then send SIGINT to bash's whole process group, as a terminal's ^C
/// does. Returns how bash ended and what it printed.
pub fn interrupt_a_script(wrapper: &str, script: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("up");
    let mut cmd = std::process::Command::new("env");
    cmd.args(["--default-signal=INT", "setsid", "bash", "-c", script])
        .env("W", wrapper)
        .env("M", &marker)
        .env("PATH", path_with_binaries())
        .env(TAG, new_tag())
        .stdin(Stdio::null());
    let mut r = Running::start(cmd, false);
    wait_until_exists(&marker);
    let group = nix::unistd::Pid::from_raw(r.child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = r.wait();
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    (status, r.rest())
}

/// Wait (up to [`TIMEOUT`]) until `path` exists: a file a process writes
/// to say it got somewhere.
#[track_caller]
pub fn wait_until_exists(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never came",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run `pk-<name> args` from a bash in its process group that does what
/// timeout(1) does: once `up` exists, SIGTERM to pk-<name>, then, once
/// `got` is not empty and `gap` later, SIGTERM to its own whole group,
/// which holds pk-<name>. Returns pk-<name>'s status; `None` when `gap`
/// is zero and the machine was too slow to send the second within 50 ms.
pub fn signal_twice_as_timeout_does(
    name: &str,
    args: &[&std::ffi::OsStr],
    up: &std::path::Path,
    got: &std::path::Path,
    gap: Duration,
) -> Option<std::process::ExitStatus> {
    // bash ignores TERM once pk-<name> runs (env gives it back its
    // default action), and waits for the files with a deadline of its own.
    let script = "env --default-signal=TERM \"$@\" & trap '' TERM; \
        w() { until [ -s \"$1\" ] || [ -e \"$1\" -a \"$2\" = e ]; do \
        [ $SECONDS -lt 50 ] || exit 9; sleep 0.001; done; }; \
        w \"$UP\" e; kill -TERM $!; t0=${EPOCHREALTIME/./}; w \"$GOT\"; \
        sleep \"$GAP\"; kill -TERM 0; t1=${EPOCHREALTIME/./}; \
        wait $!; s=$?; echo $(( (t1 - t0) / 1000 )); exit $s";
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-c", script, "bash"])
        .arg(bin(&format!("pk-{name}")))
        .args(args)
        .env("UP", up)
        .env("GOT", got)
        .env("GAP", format!("{:.3}", gap.as_secs_f64()))
        .env(TAG, new_tag())
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    become_subreaper();
    let mut r = Running::start(cmd, true);
    let status = r.wait();
    let took_ms: u64 = r.rest().trim().parse().expect("the time between the kills");
    (!gap.is_zero() || took_ms < 50).then_some(status)
}

/// [`signal_twice_as_timeout_does`] to wrapper `name` (`sem` for pk-sem)
/// with `flags`, around a python3 command that counts the SIGTERMs it
/// gets and then exits 0. Returns the wrapper's status and the count.
pub fn terms_passed_on(
    name: &str,
    flags: &[&str],
    gap: Duration,
) -> Option<(std::process::ExitStatus, usize)> {
    let dir = tempfile::tempdir().unwrap();
    let (up, got) = (dir.path().join("up"), dir.path().join("got"));
    let counter = "import signal, sys, time\n\
        got = open(sys.argv[2], 'a', buffering=1)\n\
        signal.signal(signal.SIGTERM, lambda *a: got.write('term\\n'))\n\
        open(sys.argv[1], 'w').close()\n\
        end = time.monotonic() + 60\n\
        while got.tell() == 0 and time.monotonic() < end: time.sleep(0.005)\n\
        time.sleep(0.5)\n";
    let mut args: Vec<&std::ffi::OsStr> = flags.iter().map(std::ffi::OsStr::new).collect();
    args.extend(["--", "python3", "-c", counter].map(std::ffi::OsStr::new));
    args.extend([up.as_os_str(), got.as_os_str()]);
    let status = signal_twice_as_timeout_does(name, &args, &up, &got, gap)?;
    let n = std::fs::read_to_string(&got).unwrap().lines().count();
    Some((status, n))
}

/// A wrapper passes a SIGTERM sent twice at once (timeout(1) signals its
/// child, then its group) on once, and one sent again 0.3 s later on
/// again; the command ends 0 both times.
pub fn assert_a_copy_is_passed_on_once(name: &str, flags: &[&str]) {
    for (gap, want) in [(Duration::ZERO, 1), (Duration::from_millis(300), 2)] {
        let got = (0..5).find_map(|_| terms_passed_on(name, flags, gap));
        let (status, n) = got.expect("the machine was too slow five times");
        assert_eq!(status.code(), Some(0), "pk-{name} {flags:?}, {gap:?}");
        assert_eq!(n, want, "pk-{name} {flags:?}: SIGTERMs {gap:?} apart");
    }
}

/// `pk-<name> ARGS` with its stdout the write end of a pipe whose read
/// end is already closed, as a `| head -1` leaves it once head has
/// exited (under timeout(1): a hang fails).
pub fn into_a_readerless_pipe(name: &str, args: &[&str]) -> Output {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    std::process::Command::new("timeout")
        .args(["-s", "KILL", "60"])
        .arg(bin(&format!("pk-{name}")))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .output()
        .unwrap()
}

/// Each of `calls` (pk-`tool` arguments naming the object `name`, which
/// holds a control character) is a usage error that names the control
/// character, and none of them made the object.
pub fn assert_control_name_refused(tool: &str, name: &str, calls: &[&[&str]]) {
    let outs: Vec<_> = calls
        .iter()
        .map(|args| (args, pk(tool).args(*args).output().unwrap()))
        .collect();
    // Whatever was made goes before anything is asserted.
    let path = format!("/dev/shm/{}", &name[1..]);
    let made = std::path::Path::new(&path).exists();
    let _ = std::fs::remove_file(&path);
    for (args, out) in &outs {
        assert_usage(out, tool);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("control character"),
            "{args:?}: {out:?}"
        );
    }
    assert!(!made, "{name:?} was made");
}
