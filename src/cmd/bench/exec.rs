//! `pk-pool exec` beside its peers, xargs and GNU parallel, on the same
//! input: per-job wall time for 10 000 × `true` on 2 slots, the
//! supervisor's own overhead per job, the peak memory for a million input
//! lines, and jobs per second over ssh to a private sshd on 127.0.0.1.
//! A peer that is not installed is skipped with a message. `make bench`
//! runs the group several times, alternating the tools.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::{Scale, check, us_per};
use crate::cmd::exit;
use crate::cmd::{Failure, Result};
use crate::error::{Error, ErrorKind};

/// `base` scaled, and cut ten times more in a quick run: the exec
/// figures start thousands of processes, and `--quick` is a smoke run.
fn count(s: Scale, base: u64) -> u64 {
    if super::QUICK.load(std::sync::atomic::Ordering::Relaxed) {
        s.n(base / 10)
    } else {
        s.n(base)
    }
}

/// `pk-pool`, beside `pk-bench`.
fn pk_pool() -> Result<PathBuf> {
    let me = std::env::current_exe().map_err(|e| Error::io("readlink", "/proc/self/exe", &e))?;
    Ok(me.with_file_name("pk-pool"))
}

/// Skip a figure: what it needs is not here.
fn missing(figure: &str, what: &str) -> Failure {
    Failure::from(Error::new(
        ErrorKind::WouldBlock,
        "bench",
        figure,
        format!("{what} is not installed"),
    ))
    .with_code(exit::DECLINED)
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A file of `n` lines, 1 to n, in the temporary directory.
fn lines(n: u64) -> Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!("pk-bench-exec-{}-{n}", std::process::id()));
    let mut f = std::fs::File::create(&path).map_err(|e| Error::io("open", path.display(), &e))?;
    let mut buf = Vec::with_capacity(1 << 16);
    for i in 1..=n {
        buf.extend_from_slice(i.to_string().as_bytes());
        buf.push(b'\n');
        if buf.len() > 60_000 {
            f.write_all(&buf)
                .map_err(|e| Error::io("write", path.display(), &e))?;
            buf.clear();
        }
    }
    f.write_all(&buf)
        .map_err(|e| Error::io("write", path.display(), &e))?;
    let f = std::fs::File::open(&path).map_err(|e| Error::io("open", path.display(), &e))?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

/// Run `argv` with `n` lines on stdin and its output thrown away; the
/// wall time in µs per line (per job with one item per job).
fn per_line(argv: &[&str], n: u64, figure: &str) -> Result<f64> {
    let input = lines(n)?;
    let t0 = Instant::now();
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::from(input))
        .stdout(Stdio::null())
        .status()
        .map_err(|e| Error::io("spawn", argv[0], &e))?;
    let us = us_per(t0, n);
    check(status.success(), figure, "the run failed")?;
    Ok(us)
}

pub(super) fn exec_true_j2(s: Scale) -> Result<f64> {
    let pk = pk_pool()?;
    let pk = pk.to_string_lossy();
    per_line(
        &[&pk, "exec", "-j", "2", "--", "true"],
        count(s, 10_000),
        "exec_true_j2_us",
    )
}

pub(super) fn xargs_true_j2(s: Scale) -> Result<f64> {
    if !installed("xargs") {
        return Err(missing("exec_xargs_true_j2_us", "xargs"));
    }
    per_line(
        &["xargs", "-P", "2", "-n", "1", "true"],
        count(s, 10_000),
        "exec_xargs_true_j2_us",
    )
}

pub(super) fn parallel_true_j2(s: Scale) -> Result<f64> {
    if !installed("parallel") {
        return Err(missing("exec_parallel_true_j2_us", "GNU parallel"));
    }
    // parallel costs milliseconds a job: a tenth of the jobs, per job.
    per_line(
        &["parallel", "--will-cite", "-j", "2", "true"],
        count(s, 1_000),
        "exec_parallel_true_j2_us",
    )
}

/// CPU time (user + system) of this process's reaped children so far, in µs.
fn children_cpu_us() -> Result<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN)
        .map_err(|e| Error::sys("getrusage", "RUSAGE_CHILDREN", e))?;
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    Ok(us(u.user_time()) + us(u.system_time()))
}

/// What pk-pool adds per job, in CPU time: the CPU of `pk-pool exec -j 1
/// -- /bin/true` (itself and its commands) minus the CPU of as many
/// `/bin/true ITEM` run by a bare `Spawn::run`, per job. CPU time rather
/// than wall time, so that other work on the machine does not count. The
/// bare runs get the same argument as the jobs: `true` with one argument
/// loads the locale (to answer `--help`), which costs more than pk-pool
/// itself and is no part of what pk-pool adds.
pub(super) fn exec_overhead_j1(s: Scale) -> Result<f64> {
    let figure = "exec_overhead_j1_us";
    let n = count(s, 2_000);
    let pk = pk_pool()?;
    let pk = pk.to_string_lossy();
    let c0 = children_cpu_us()?;
    per_line(&[&pk, "exec", "-j", "1", "--", "/bin/true"], n, figure)?;
    let c1 = children_cpu_us()?;
    for i in 1..=n {
        let out = crate::spawn::Spawn::new(["/bin/true", &i.to_string()])?
            .stdin(crate::spawn::Stdin::Null)
            .run()?;
        check(out.status.success(), figure, "/bin/true failed")?;
    }
    let c2 = children_cpu_us()?;
    Ok(((c1 - c0) - (c2 - c1)) / n as f64)
}

/// Peak resident memory (KiB, GNU time's %M) of `argv` reading `n` lines.
fn max_rss(argv: &[&str], n: u64, figure: &str) -> Result<f64> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        return Err(missing(figure, "/usr/bin/time"));
    }
    let input = lines(n)?;
    let out = Command::new(time)
        .args(["-f", "maxrss %M"])
        .args(argv)
        .stdin(Stdio::from(input))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::io("spawn", "/usr/bin/time", &e))?;
    check(out.status.success(), figure, "the run failed")?;
    let err = String::from_utf8_lossy(&out.stderr);
    let kib = err
        .lines()
        .filter_map(|l| l.strip_prefix("maxrss "))
        .next_back()
        .and_then(|k| k.trim().parse::<f64>().ok());
    kib.ok_or_else(|| {
        Failure::from(Error::data("parse", figure, "no maxrss from time")).with_code(exit::OS_ERR)
    })
}

pub(super) fn exec_1m_rss(s: Scale) -> Result<f64> {
    let pk = pk_pool()?;
    let pk = pk.to_string_lossy();
    max_rss(
        &[&pk, "exec", "-j", "2", "-n", "1000", "--", "true"],
        count(s, 1_000_000),
        "exec_1m_lines_maxrss_KiB",
    )
}

pub(super) fn xargs_1m_rss(s: Scale) -> Result<f64> {
    max_rss(
        &["xargs", "-P", "2", "-n", "1000", "true"],
        count(s, 1_000_000),
        "exec_xargs_1m_lines_maxrss_KiB",
    )
}

pub(super) fn parallel_1m_rss(s: Scale) -> Result<f64> {
    if !installed("parallel") {
        return Err(missing("exec_parallel_1m_lines_maxrss_KiB", "GNU parallel"));
    }
    max_rss(
        &["parallel", "--will-cite", "-j", "2", "-n", "1000", "true"],
        count(s, 1_000_000),
        "exec_parallel_1m_lines_maxrss_KiB",
    )
}

/// Ten million lines through the reader and the template (`--dry-run`):
/// the memory stays that of one buffer.
pub(super) fn exec_10m_rss(s: Scale) -> Result<f64> {
    let pk = pk_pool()?;
    let pk = pk.to_string_lossy();
    max_rss(
        &[&pk, "exec", "--dry-run", "--", "echo"],
        count(s, 10_000_000),
        "exec_10m_lines_dry_run_maxrss_KiB",
    )
}

/// A private sshd on 127.0.0.1 (throwaway keys, a free port) for the
/// ssh figures; stopped on drop.
struct Sshd {
    dir: PathBuf,
    child: crate::spawn::Running,
}

impl Sshd {
    fn start(figure: &str) -> Result<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() || !installed_ssh() {
            return Err(missing(figure, "openssh-server (sshd) or ssh"));
        }
        let dir = std::env::temp_dir().join(format!("pk-bench-sshd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| Error::io("mkdir", dir.display(), &e))?;
        let io = |e: std::io::Error| Failure::from(Error::io("setup", "sshd", &e));
        for key in ["host", "user"] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key))
                .stdin(Stdio::null())
                .status()
                .map_err(io)?
                .success();
            check(ok, figure, "ssh-keygen failed")?;
        }
        std::fs::copy(dir.join("user.pub"), dir.join("authorized_keys")).map_err(io)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io)?
            .port();
        let d = dir.display();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nUsePAM no\nPidFile none\nLogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n"
            ),
        )
        .map_err(io)?;
        std::fs::write(
            dir.join("ssh_config"),
            format!(
                "Host *\n  Port {port}\n  IdentityFile {d}/user\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  \
                 UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"
            ),
        )
        .map_err(io)?;
        if nix::unistd::geteuid().is_root() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        // Its own group, /dev/null for its output (it never holds our
        // pipes), and SIGTERM should pk-bench die first.
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(io)?;
        let config = dir.join("sshd_config");
        let child = crate::spawn::Spawn::new([
            sshd.as_os_str(),
            "-D".as_ref(),
            "-f".as_ref(),
            config.as_os_str(),
        ])?
        .stdin(crate::spawn::Stdin::Null)
        .stdout_fd(null.try_clone().map_err(io)?.into())
        .stderr_fd(null.into())
        .process_group(true)
        .die_with_parent(nix::sys::signal::Signal::SIGTERM)
        .start()?;
        let me = Sshd { dir, child };
        let t0 = Instant::now();
        loop {
            let ok = Command::new("ssh")
                .args(["-F", &me.config(), "127.0.0.1", "true"])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(me);
            }
            check(t0.elapsed().as_secs() < 20, figure, "sshd did not come up")?;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn config(&self) -> String {
        self.dir.join("ssh_config").display().to_string()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // The listener and any session it forked: the whole group.
        let _ = self.child.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn installed_ssh() -> bool {
    Command::new("ssh")
        .arg("-V")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Jobs per second of `true` on 2 slots of 127.0.0.1 over ssh.
pub(super) fn exec_ssh2(s: Scale) -> Result<f64> {
    let figure = "exec_ssh2_jobs_per_s";
    let sshd = Sshd::start(figure)?;
    let pk = pk_pool()?;
    let pk = pk.to_string_lossy();
    let ssh = format!("ssh -F {}", sshd.config());
    let n = count(s, 2_000);
    let us = per_line(
        &[
            &pk,
            "exec",
            "-S",
            "2/127.0.0.1",
            "--ssh",
            &ssh,
            "--remote-cmd",
            &pk,
            "--",
            "true",
        ],
        n,
        figure,
    )?;
    Ok(1e6 / us)
}

pub(super) fn parallel_ssh2(s: Scale) -> Result<f64> {
    let figure = "exec_parallel_ssh2_jobs_per_s";
    if !installed("parallel") {
        return Err(missing(figure, "GNU parallel"));
    }
    let sshd = Sshd::start(figure)?;
    let ssh = format!("ssh -F {}", sshd.config());
    // One ssh per job, about 4 a second: 40 jobs give a steady rate.
    let n = count(s, 40);
    let us = per_line(
        &[
            "parallel",
            "--will-cite",
            "-S",
            "2/127.0.0.1",
            "--ssh",
            &ssh,
            "true",
        ],
        n,
        figure,
    )?;
    Ok(1e6 / us)
}
