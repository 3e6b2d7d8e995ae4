//! pk-pool exec -S: jobs on a real sshd bound to 127.0.0.1 on a free
//! port, with a throwaway host key and user key, started and stopped by
//! the test. Skipped, with one line, where sshd is not installed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use crate::common::*;

/// One sshd test at a time: each finds "its" remote worker by scanning
/// /proc.
static SERIAL: Mutex<()> = Mutex::new(());

const SSHD: &str = "/usr/sbin/sshd";

/// A private sshd and the ssh command that reaches it.
struct Sshd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Sshd {
    /// Start one, or say why not (one line) and return None.
    fn start() -> Option<Sshd> {
        if !Path::new(SSHD).exists() {
            eprintln!(
                "skipped the ssh tests: {SSHD} is not installed (scripts/ci-deps.sh installs openssh-server)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for key in ["host", "user"] {
            let st = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(d.join(key))
                .stdin(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        }
        std::fs::copy(d.join("user.pub"), d.join("authorized_keys")).unwrap();
        // A free port: bind to 0, read it, let go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {0}/host\n\
                 AuthorizedKeysFile {0}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nUsePAM no\nPidFile none\nLogLevel ERROR\n\
                 SetEnv PATH=/usr/bin:/bin\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host *\n  Port {port}\n  IdentityFile {0}/user\n  IdentitiesOnly yes\n  \
                 StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  \
                 BatchMode yes\n",
                d.display()
            ),
        )
        .unwrap();
        if is_root() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let child = std::process::Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let sshd = Sshd { dir, child };
        // Ready when ssh gets through.
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let ok = std::process::Command::new("ssh")
                .args(sshd.ssh_words())
                .args(["127.0.0.1", "true"])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Some(sshd);
            }
            assert!(std::time::Instant::now() < deadline, "sshd did not come up");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn ssh_words(&self) -> Vec<String> {
        vec![
            "-F".into(),
            self.dir.path().join("ssh_config").display().to_string(),
        ]
    }

    /// `--ssh CMD --remote-cmd PATH` for pk-pool exec.
    fn args(&self) -> Vec<String> {
        vec![
            "--ssh".into(),
            format!("ssh {}", self.ssh_words().join(" ")),
            "--remote-cmd".into(),
            bin("pk-pool").display().to_string(),
        ]
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exec(sshd: &Sshd, args: &[&str], input: &str) -> std::process::Output {
    pk("pool")
        .arg("exec")
        .args(sshd.args())
        .args(args)
        .write_stdin(input)
        .output()
        .unwrap()
}

/// The pids of running `pk-pool worker` processes.
fn workers() -> Vec<i32> {
    let me = bin("pk-pool");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let words: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                words.len() >= 2
                    && Path::new(std::ffi::OsStr::new(
                        std::str::from_utf8(words[0]).unwrap_or(""),
                    )) == me
                    && words[1] == b"worker"
            })
        })
        .collect()
}

#[test]
fn jobs_run_on_the_ssh_host_and_the_joblog_names_it() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(sshd) = Sshd::start() else { return };
    let log = sshd.dir().join("joblog");
    let out = exec(
        &sshd,
        &[
            "-S",
            "2/127.0.0.1",
            "-k",
            "--joblog",
            log.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo item {} slot {%}; echo err {} >&2; [ {} != 3 ]",
        ],
        "1\n2\n3\n4\n",
    );
    assert_eq!(out.status.code(), Some(123), "{out:?}");
    let text = stdout(&out);
    let items: Vec<&str> = text.lines().map(|l| &l[..6]).collect();
    assert_eq!(items, ["item 1", "item 2", "item 3", "item 4"]);
    assert!(
        text.lines()
            .all(|l| l.ends_with("slot 1") || l.ends_with("slot 2"))
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("err 2\n"), "stderr comes back: {err}");
    assert!(err.contains("pk-pool: job 3 on 127.0.0.1 (sh -c "), "{err}");
    let joblog = std::fs::read_to_string(&log).unwrap();
    let rows: Vec<Vec<&str>> = joblog
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert_eq!(r[1], "127.0.0.1");
        assert!(
            r[4].parse::<u64>().unwrap() > 0,
            "Send counts the job frame"
        );
        assert_eq!(r[6], if r[0] == "3" { "1" } else { "0" });
    }
    assert!(workers().is_empty(), "the worker exits with its connection");
}

#[test]
fn ssh_and_local_slots_together_match_parallel() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(sshd) = Sshd::start() else { return };
    let out = exec(
        &sshd,
        &["-S", "1/127.0.0.1,1/:", "-k", "--", "echo", "x"],
        "a\nb\nc\nd\n",
    );
    assert_success(&out);
    assert_eq!(stdout(&out), "x a\nx b\nx c\nx d\n");
    if crate::pool_exec::have_parallel() {
        let ssh = format!("ssh {}", sshd.ssh_words().join(" "));
        let theirs = bash(&format!(
            "printf 'a\\nb\\nc\\nd\\n' | parallel --will-cite -S 1/127.0.0.1,1/: --ssh '{ssh}' -k echo x"
        ))
        .output()
        .unwrap();
        assert_eq!(stdout(&theirs), stdout(&out));
    }
}

/// Run 2 jobs, one on the ssh host and one here, kill the remote worker
/// while its job runs, then let the jobs finish.
fn drop_the_host(sshd: &Sshd, retries: &str) -> (std::process::ExitStatus, String, String) {
    let d = sshd.dir().display().to_string();
    let job = format!(
        "echo $$ > {d}/started.$0.$$; while [ ! -e {d}/go ]; do sleep 0.01; done; echo done $0"
    );
    let mut cmd = pk_std("pool");
    cmd.arg("exec")
        .args(sshd.args())
        .args([
            "-S",
            "1/127.0.0.1,1/:",
            "-k",
            "--retries",
            retries,
            "--",
            "sh",
            "-c",
            &job,
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = Running::start(cmd, true);
    {
        let mut stdin = run.child.stdin.take().unwrap();
        stdin.write_all(b"1\n2\n").unwrap();
    }
    // Both jobs started: one on each host.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let (worker, remote_job) = loop {
        let w = workers();
        let started: Vec<PathBuf> = std::fs::read_dir(sshd.dir())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("started.")
            })
            .collect();
        if w.len() == 1 && started.len() == 2 {
            // The remote job is the one whose parent is the worker.
            let remote = started
                .iter()
                .map(|p| {
                    wait_for_line_in(p, "a job pid")
                        .trim()
                        .parse::<i32>()
                        .unwrap()
                })
                .find(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                        let rest = &s[s.rfind(')').unwrap() + 2..];
                        rest.split_whitespace().nth(1) == Some(&w[0].to_string())
                    })
                })
                .expect("a job under the worker");
            break (w[0], remote);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs did not start: {w:?} {started:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The worker's job dies with it (its death signal).
    assert_gone(remote_job);
    std::fs::write(sshd.dir().join("go"), "").unwrap();
    let status = run.wait();
    let out = run.rest();
    let mut err = String::new();
    std::io::Read::read_to_string(run.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status, out, err)
}

#[test]
fn a_host_that_drops_has_its_job_run_elsewhere() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(sshd) = Sshd::start() else { return };
    let (status, out, err) = drop_the_host(&sshd, "1");
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(out, "done 1\ndone 2\n", "{err}");
    assert!(err.contains("pk-pool: ssh(127.0.0.1): "), "{err}");
    assert!(
        err.contains("1 running job to run again elsewhere"),
        "{err}"
    );
}

#[test]
fn with_no_retries_the_dropped_hosts_job_is_lost() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(sshd) = Sshd::start() else { return };
    let (status, out, err) = drop_the_host(&sshd, "0");
    assert_eq!(status.code(), Some(123), "{err}");
    assert_eq!(out.lines().count(), 1, "one job done here: {out}");
    assert!(err.contains("lost: host 127.0.0.1 dropped"), "{err}");
    assert!(err.contains("pk-pool: 1 of 2 jobs failed"), "{err}");
}

#[test]
fn a_signal_ends_the_remote_jobs_too() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(sshd) = Sshd::start() else { return };
    let d = sshd.dir().display().to_string();
    let job = format!("trap '' TERM; echo $$ > {d}/pid.$0; exec sleep 60");
    let mut cmd = pk_std("pool");
    cmd.arg("exec")
        .args(sshd.args())
        .args([
            "-S",
            "2/127.0.0.1",
            "--kill-after",
            "0.2",
            "--",
            "sh",
            "-c",
            &job,
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = Running::start(cmd, true);
    {
        let mut stdin = run.child.stdin.take().unwrap();
        stdin.write_all(b"1\n2\n").unwrap();
    }
    let pids: Vec<i32> = (1..=2)
        .map(|i| {
            wait_for_line_in(&sshd.dir().join(format!("pid.{i}")), "a job pid")
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    run.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(run.wait().code(), Some(143));
    for pid in pids {
        assert_gone(pid);
    }
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !workers().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the worker stayed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_host_that_never_answers_does_not_hold_up_the_end() {
    // An ssh that never connects (a black-holed host without
    // ConnectTimeout): the jobs all run here, and then pk-pool ends,
    // instead of waiting for that ssh to give up.
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("ssh");
    std::fs::write(&ssh, "#!/bin/sh\nexec sleep 3600\n").unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = pk("pool")
        .args([
            "exec",
            "--ssh",
            ssh.to_str().unwrap(),
            "-S",
            "blackhole,:",
            "-k",
        ])
        .args(["--", "echo"])
        .write_stdin("1\n2\n3\n")
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "1\n2\n3\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pk-pool: ssh(blackhole): no worker answered before the jobs were done; not waited for\n"
    );
}

#[test]
fn an_ssh_that_would_prompt_fails_instead_of_stopping_for_ever() {
    // An ssh that asks for a password reads /dev/tty: from a background
    // process group it was stopped (SIGTTIN) and pk-pool waited for ever
    // for that host. Without a controlling terminal the prompt fails, the
    // host is reported and given up. script(1) gives the run a terminal.
    if no_script() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("ssh");
    std::fs::write(&ssh, "#!/bin/sh\nread password < /dev/tty\nexit 255\n").unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let inner = format!(
        "echo x | pk-pool exec --no-progress --ssh {} -S asks -- echo; echo rc=$?",
        ssh.display()
    );
    // (timeout(1): a stopped ssh would hold script's output open.)
    let out = bash(&format!(
        "timeout -k 5 30 script -qec '{inner}' /dev/null < /dev/null | tr -d '\\r'"
    ))
    .output()
    .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("/dev/tty: No such device or address"),
        "{text}"
    );
    assert!(
        text.contains("pk-pool: ssh(asks): no worker answered (ssh exited, status=255)"),
        "{text}"
    );
    assert_eq!(text.lines().last(), Some("rc=124"), "{text}");
}

#[test]
fn a_signal_ends_the_run_even_when_a_host_stops_answering() {
    // The connection to a host hangs (its worker stopped, as a network
    // partition looks): after a SIGTERM pk-pool sends it `stop` and waits
    // for its jobs to end, but not for ever: past the grace the host is
    // given up, its ssh ended, and the run ends 143. The "ssh" here runs
    // the worker on this machine.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let ssh = dir.path().join("ssh");
    std::fs::write(
        &ssh,
        format!("#!/bin/sh\nexec {} worker\n", bin("pk-pool").display()),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut child = pk_std("pool")
        .args([
            "exec",
            "--ssh",
            ssh.to_str().unwrap(),
            "-S",
            "1/partitioned",
        ])
        .args(["--kill-after", "0.3", "--", "sh", "-c"])
        .arg(format!("echo $$ > {d}/pid; exec sleep 60"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"x\n").unwrap();
    let job: i32 = wait_for_line_in(&dir.path().join("pid"), "the job pid")
        .trim()
        .parse()
        .unwrap();
    let me = child.id() as i32;
    let worker = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat[stat.rfind(')').map_or(0, |i| i + 2)..]
                .split_whitespace()
                .nth(1)
                .map(String::from);
            ppid == Some(me.to_string())
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).any(|w| w == b"worker"))
        })
        .expect("the worker, child of pk-pool");
    let pid = |p: i32| nix::unistd::Pid::from_raw(p);
    nix::sys::signal::kill(pid(worker), nix::sys::signal::Signal::SIGSTOP).unwrap();
    nix::sys::signal::kill(pid(me), nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = nix::sys::signal::kill(pid(worker), nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            panic!("pk-pool waited for ever for a host that does not answer");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("pk-pool: ssh(partitioned): "), "{err}");
    // The worker, woken by the TERM and CONT its ssh group got, ends its job.
    assert_gone(worker);
    assert_gone(job);
}

#[test]
fn a_remote_job_that_ended_in_time_while_the_output_was_stuck_did_not_time_out() {
    // The ssh worker's side of pool_exec's
    // a_job_that_ended_in_time_while_the_output_was_stuck_did_not_time_out.
    // Job 1 writes more than ssh and the sockets hold, and pk-pool's reader
    // waits: the remote worker is stuck writing job 1's output while job 2
    // ends (exit 0) well inside its --timeout, and the time is up before
    // the worker's loop runs again. Job 2 ended in time: it runs once, in
    // spite of --retries, and succeeds.
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(sshd) = Sshd::start() else { return };
    let d = sshd.dir().display().to_string();
    let job = format!(
        "if [ \"$1\" = 1 ]; then yes xxxxxxxxxxxxxxx | head -c 40000000; \
         else echo run >> {d}/runs; sleep 0.3; touch {d}/ended; fi"
    );
    std::fs::write(sshd.dir().join("job"), job).unwrap();
    let ssh = sshd.args();
    // The reader starts only after job 2 has ended and its time is up.
    let out = bash(&format!(
        "printf '1\\n2\\n' | pk-pool exec --ssh '{}' --remote-cmd {} -S 2/127.0.0.1 \
         --line-buffer --timeout 2 --kill-after 0.1 --retries 1 -- sh {d}/job \
         | {{ until [ -e {d}/ended ]; do sleep 0.05; done; sleep 2.5; cat >/dev/null; }}; \
         echo \"status ${{PIPESTATUS[1]}}\"",
        ssh[1], ssh[3]
    ))
    .timeout(std::time::Duration::from_secs(60))
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Job 1 was still writing when the time was up: caught, and run again.
    assert!(
        err.starts_with("pk-pool: job 1 on 127.0.0.1 (sh ") && err.contains(" timed out after 2s"),
        "{err}"
    );
    assert!(!err.contains("job 2 "), "{err}");
    assert_eq!(stdout(&out), "status 0\n", "{err}");
    assert_eq!(
        std::fs::read_to_string(sshd.dir().join("runs")).unwrap(),
        "run\n",
        "{err}"
    );
}
