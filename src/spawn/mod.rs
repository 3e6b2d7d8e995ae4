//! Run a program: clone + dup2 + exec, feed its stdin, collect its output,
//! end it when a timeout runs out, pass signals on to it. Python's
//! `subprocess.call`, `Popen.communicate` and `run(timeout=...)`.
//!
//! ```no_run
//! use posixkit::spawn::Spawn;
//! let out = Spawn::new(["tr", "a-z", "A-Z"]).unwrap()
//!     .input(b"hello\n".to_vec())
//!     .capture(true)
//!     .run()
//!     .unwrap();
//! assert_eq!(out.stdout, b"HELLO\n");
//! assert!(out.status.success());
//! ```
//!
//! How it works, call by call:
//!
//! 1. Before the child exists, the parent prepares everything it will need:
//!    argv and envp as C strings (the environment with [`Spawn::env`]'s
//!    changes applied), the list of paths execvp(3)'s PATH search would try
//!    (with the PATH the *child* will have, as `env PATH=... CMD` does), and
//!    the directory to change to. Pipes come from pipe2(`O_CLOEXEC`).
//! 2. clone(`CLONE_VM | CLONE_VFORK`) on a stack of the child's own: the
//!    child shares the parent's memory instead of copying its page tables,
//!    so starting a program costs the same from a 4 GiB process as from a
//!    small one, and the calling thread waits until the child has exec'd.
//!    The child puts every caught signal and SIGPIPE back to the default
//!    action, and only then empties its signal mask; it arms the death
//!    signal, joins a process group of its own if asked, changes directory,
//!    dup2(2)s the pipes onto 0, 1 and 2, and execve(2)s each candidate path
//!    in turn. Only async-signal-safe calls happen in between, so this is
//!    sound even when the caller has threads. (Details: `src/sys/spawn`.)
//! 3. If every exec fails, the child writes the errno into an atomic of
//!    the plan it shares with the parent, and `_exit`s. When clone returns, the
//!    child has exec'd or exited, so the parent reads it at once: an error
//!    of kind [`ErrorKind::CommandNotFound`] (a shell's 127) or
//!    [`ErrorKind::CommandNotExecutable`] (126), or nothing.
//! 4. The parent writes the input and reads stdout and stderr in one poll(2)
//!    loop, so a child that fills one pipe while we wait on another never
//!    deadlocks; the same loop watches the child through a pidfd, a
//!    deadline ([`Timeout`]) and, for wrappers, a [`SignalRelay`]. Then it
//!    reaps the child.
//!
//! Streaming input: [`Stdin::Fd`] hands an open file, a FIFO or a socket to
//! the child as its stdin, as a shell's `< file` does: the child reads it
//! as the data comes, and the parent holds none of it in memory.
//! [`Stdin::Bytes`] is for input the caller already holds.
//!
//! Writing input to a child that exits without reading it gives EPIPE,
//! which is not an error here (the rest of the input is dropped, as
//! `communicate` does) — provided SIGPIPE is ignored in the calling process,
//! which Rust's runtime does for every binary.
//!
//! The pipes of a spawn are never inherited by a child that the library
//! forks without exec (a [`Process`](crate::process::Process), a pool
//! worker), even one forked from another thread while the spawn runs: so a
//! spawn never waits on an unrelated child that happens to hold a copy.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use crate::error::{Error, ErrorKind, Result};
use crate::process::Child;
use crate::status::Status;
use crate::sys::spawn::fds::{self, SpawnFd};
use crate::sys::spawn::{
    ExecPlan, STAGE_CHDIR, STAGE_DEATH_SIGNAL, STAGE_DUP2, STAGE_EXEC, STAGE_SETPGID, STAGE_SETSID,
};

mod running;
mod supervise;

pub use running::{Event, Running};
pub use supervise::{Relayed, SAME_SIGNAL_AGAIN, SignalRelay, Step, Supervisor, Timeout};

/// Where the child's stdin comes from.
#[derive(Debug, Default)]
pub enum Stdin {
    /// The parent's stdin (subprocess.call's default).
    #[default]
    Inherit,
    /// /dev/null: end of file at once.
    Null,
    /// These bytes, written through a pipe; the child sees end of file after them.
    Bytes(Vec<u8>),
    /// This descriptor (an open file, a FIFO: the shell's `< file`). The
    /// child reads it directly, as the data comes.
    Fd(OwnedFd),
}

/// A program to run, with its arguments, environment, directory, input,
/// capture choice and timeout.
#[derive(Debug)]
pub struct Spawn {
    argv: Vec<CString>,
    stdin: Stdin,
    capture: bool,
    death_signal: Option<Signal>,
    /// Signals the child gets at their default action even if ignored
    /// here (bit `n - 1` for signal `n`).
    default_signals: u64,
    env_clear: bool,
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<CString>,
    cwd_shown: String,
    new_group: bool,
    new_session: bool,
    stdout_closed: bool,
    stdin_closed: bool,
    stderr_closed: bool,
    share_sysv_undo: bool,
    announce_to: Option<std::sync::Arc<OwnedFd>>,
    stdout_to: Option<OwnedFd>,
    stderr_to: Option<OwnedFd>,
    timeout: Option<Timeout>,
    invalid: Option<Error>,
}

/// What a finished run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How the child ended.
    pub status: Status,
    /// Everything it wrote to stdout (empty unless captured).
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr (empty unless captured).
    pub stderr: Vec<u8>,
    /// The [`Timeout`] ran out and its signal was sent.
    pub timed_out: bool,
    /// SIGKILL was sent: the timeout's own signal, or the kill-after one.
    pub killed: bool,
}

/// The kind of an exec that failed with `errno`, as timeout(1), env(1)
/// and xargs tell them apart: [`ErrorKind::CommandNotFound`] when the
/// program is not there, ENOENT (their 127), and
/// [`ErrorKind::CommandNotExecutable`] for every other error (126),
/// ENOTDIR (`./file/x`) among them, as bash gives it too.
pub fn exec_failure_kind(errno: Errno) -> ErrorKind {
    match errno {
        Errno::ENOENT => ErrorKind::CommandNotFound,
        _ => ErrorKind::CommandNotExecutable,
    }
}

impl Spawn {
    /// A program and its arguments; `argv[0]` is the program, looked up in
    /// PATH unless it contains a `/` (as execvp does). A NUL byte inside an
    /// argument is a usage error.
    pub fn new<I, S>(argv: I) -> Result<Spawn>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv = argv
            .into_iter()
            .map(|a| {
                CString::new(a.as_ref().as_bytes())
                    .map_err(|_| Error::invalid("CMD", "an argument contains a NUL byte"))
            })
            .collect::<Result<Vec<_>>>()?;
        if argv.is_empty() {
            return Err(Error::invalid("CMD", "no command given"));
        }
        Ok(Spawn {
            argv,
            stdin: Stdin::Inherit,
            capture: false,
            death_signal: None,
            default_signals: 0,
            env_clear: false,
            env: Vec::new(),
            cwd: None,
            cwd_shown: String::new(),
            new_group: false,
            new_session: false,
            stdout_closed: false,
            stdin_closed: false,
            stderr_closed: false,
            share_sysv_undo: false,
            announce_to: None,
            stdout_to: None,
            stderr_to: None,
            timeout: None,
            invalid: None,
        })
    }

    /// Where stdin comes from (default: inherited).
    #[must_use]
    pub fn stdin(mut self, stdin: Stdin) -> Self {
        self.stdin = stdin;
        self
    }

    /// Feed these bytes to the child's stdin, then end of file.
    #[must_use]
    pub fn input(self, bytes: Vec<u8>) -> Self {
        self.stdin(Stdin::Bytes(bytes))
    }

    /// Capture stdout and stderr (true) or let the child inherit ours (false,
    /// the default).
    #[must_use]
    pub fn capture(mut self, capture: bool) -> Self {
        self.capture = capture;
        self
    }

    /// Set `key=value` in the child's environment (`env KEY=VALUE`). A key
    /// that is empty or holds `=` or NUL, or a value with NUL, makes
    /// [`Spawn::start`] fail with [`ErrorKind::InvalidInput`].
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let (key, value) = (key.as_ref(), value.as_ref());
        if value.as_bytes().contains(&0) {
            self.invalid
                .get_or_insert_with(|| Error::invalid("env", "a value contains a NUL byte"));
        }
        self.env_change(key, Some(value.to_os_string()))
    }

    /// Remove `key` from the child's environment (`env -u KEY`).
    #[must_use]
    pub fn env_remove(self, key: impl AsRef<OsStr>) -> Self {
        self.env_change(key.as_ref(), None)
    }

    /// Start the child with an empty environment, plus what [`Spawn::env`]
    /// adds after this call (`env -i`).
    #[must_use]
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    fn env_change(mut self, key: &OsStr, value: Option<OsString>) -> Self {
        let k = key.as_bytes();
        if k.is_empty() || k.contains(&b'=') || k.contains(&0) {
            self.invalid.get_or_insert_with(|| {
                Error::invalid(
                    "env",
                    format!(
                        "'{}' is not a variable name (empty, or holds '=' or NUL)",
                        key.to_string_lossy()
                    ),
                )
            });
        }
        self.env.push((key.to_os_string(), value));
        self
    }

    /// Run the child in directory `dir` (`env -C DIR`); a relative program
    /// path is then relative to `dir`. A directory that cannot be entered
    /// fails the start with the errno of chdir(2).
    #[must_use]
    pub fn cwd(mut self, dir: impl AsRef<OsStr>) -> Self {
        let dir = dir.as_ref();
        self.cwd_shown = dir.to_string_lossy().into_owned();
        match CString::new(dir.as_bytes()) {
            Ok(c) => self.cwd = Some(c),
            Err(_) => {
                self.invalid
                    .get_or_insert_with(|| Error::invalid("cwd", "the path contains a NUL byte"));
            }
        }
        self
    }

    /// Make the child the leader of a new process group (setpgid(0, 0) in
    /// the child): [`Running::signal`] and the [`Timeout`] then signal the
    /// whole group, so a shell script's own children end with it. The
    /// group is not the terminal's foreground group: a child that reads
    /// from the terminal stops (SIGTTIN). Default: the caller's group, and
    /// signals go to the child alone.
    #[must_use]
    pub fn process_group(mut self, new: bool) -> Self {
        self.new_group = new;
        self
    }

    /// Make the child the leader of a new session (setsid() in the child),
    /// and so of a new process group, as [`Spawn::process_group`], with no
    /// controlling terminal: opening /dev/tty fails (ENXIO) instead of
    /// stopping the child with SIGTTIN, and its writes to a terminal are
    /// never stopped by `stty tostop`. For commands run unattended.
    #[must_use]
    pub fn session(mut self, new: bool) -> Self {
        self.new_session = new;
        self.new_group |= new;
        self
    }

    /// Have the child write its pid (4 bytes, little-endian) to `pipe` as
    /// soon as it is the leader of its group or session and before it
    /// runs anything of the command's, and minus its pid if it then
    /// cannot exec: a supervisor that must end every group if this process
    /// dies (`pk-pool exec`'s guard) learns of each group before the group
    /// can start anything, with no window after [`Spawn::start`] returns.
    /// Meant with [`Spawn::process_group`] or [`Spawn::session`].
    #[must_use]
    pub fn announce_pid_to(mut self, pipe: std::sync::Arc<OwnedFd>) -> Self {
        self.announce_to = Some(pipe);
        self
    }

    /// Send the child's stdout to `fd` (a file, the write end of a pipe: the
    /// shell's `> file`) instead of ours. Ignored with [`Spawn::capture`].
    /// The child gets its own copy; dropping the `Spawn` or starting it
    /// closes this one.
    #[must_use]
    pub fn stdout_fd(mut self, fd: OwnedFd) -> Self {
        self.stdout_to = Some(fd);
        self
    }

    /// Send the child's stderr to `fd` instead of ours (the shell's
    /// `2> file`); as [`Spawn::stdout_fd`].
    #[must_use]
    pub fn stderr_fd(mut self, fd: OwnedFd) -> Self {
        self.stderr_to = Some(fd);
        self
    }

    /// Start the program with descriptor 1 closed, as a shell's `>&-`
    /// does (ignored with [`Spawn::capture`]). For a wrapper whose own
    /// stdout was closed when it started: the program then sees what it
    /// would have seen without the wrapper.
    #[must_use]
    pub fn stdout_closed(mut self, closed: bool) -> Self {
        self.stdout_closed = closed;
        self
    }

    /// Start the program with descriptor 0 closed, as a shell's `<&-`
    /// does, when its stdin is [`Stdin::Inherit`] (ignored otherwise); as
    /// [`Spawn::stdout_closed`], for a wrapper whose own stdin was closed.
    #[must_use]
    pub fn stdin_closed(mut self, closed: bool) -> Self {
        self.stdin_closed = closed;
        self
    }

    /// Start the program with descriptor 2 closed, as a shell's `2>&-`
    /// does (ignored with [`Spawn::capture`] or [`Spawn::stderr_fd`]); as
    /// [`Spawn::stdout_closed`], for a wrapper whose own stderr was closed.
    #[must_use]
    pub fn stderr_closed(mut self, closed: bool) -> Self {
        self.stderr_closed = closed;
        self
    }

    /// Let the child share this process's System V semaphore undo list
    /// (clone's CLONE_SYSVSEM): a count taken with SEM_UNDO, such as a
    /// [`RobustSemaphore`](crate::sem::robust::RobustSemaphore) slot, is
    /// given back by the kernel only when both processes have exited.
    #[must_use]
    pub fn share_sysv_undo(mut self, share: bool) -> Self {
        self.share_sysv_undo = share;
        self
    }

    /// End the child when `timeout` runs out (see [`Timeout`]); [`Spawn::run`]
    /// applies it and reports it in [`Output::timed_out`] / [`Output::killed`].
    #[must_use]
    pub fn timeout(mut self, timeout: Timeout) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Send `sig` to the program when the thread that started it dies
    /// (PR_SET_PDEATHSIG, armed in the child before exec): a pool worker
    /// killed by its pool takes its command along.
    #[must_use]
    pub fn die_with_parent(mut self, sig: Signal) -> Self {
        self.death_signal = Some(sig);
        self
    }

    /// Start the program with `sig` at its default action even if this
    /// process ignores it (env(1)'s `--default-signal`). Caught signals are
    /// always reset, as exec does; an ignored one otherwise stays ignored
    /// in the program, as `nohup` and a shell's background jobs intend.
    /// [`Spawn::run`] resets the signal of its [`Spawn::timeout`] this way
    /// without being asked: a program that inherited it ignored would
    /// outlive its timeout. Ask for it yourself when a [`Supervisor`] of
    /// your own applies the timeout.
    #[must_use]
    pub fn default_signal(mut self, sig: Signal) -> Self {
        self.default_signals |= 1u64 << (sig as u32 - 1);
        self
    }

    /// The program name, for messages.
    pub fn program(&self) -> String {
        String::from_utf8_lossy(self.argv[0].as_bytes()).into_owned()
    }

    /// Run the program to completion: feed its input, collect its output,
    /// apply the timeout, reap it. An exec failure is an `execvp` error of
    /// kind [`ErrorKind::CommandNotFound`] or
    /// [`ErrorKind::CommandNotExecutable`] (see [`exec_failure_kind`]); the
    /// child is reaped either way.
    pub fn run(mut self) -> Result<Output> {
        let timeout = self.timeout.take();
        if let Some(t) = &timeout {
            self = self.default_signal(t.sent());
        }
        let mut supervisor = Supervisor::new(timeout);
        let mut running = self.start()?;
        let status = loop {
            if let Step::Exited(status) = supervisor.step(&mut running, None)? {
                break status;
            }
        };
        let (stdout, stderr) = running.take_output();
        Ok(Output {
            status,
            stdout,
            stderr,
            timed_out: supervisor.timed_out(),
            killed: supervisor.killed(),
        })
    }

    /// Start the program and return at once, once it has exec'd: drive it
    /// with [`Running::wait_event`] or a [`Supervisor`]. The timeout set
    /// with [`Spawn::timeout`] is [`Spawn::run`]'s; give a `Supervisor`
    /// yours, and start the program with [`Spawn::default_signal`] of its
    /// signal.
    pub fn start(self) -> Result<Running> {
        if let Some(e) = self.invalid {
            return Err(e);
        }
        let name = self.program();
        let (env, path) = environment(self.env_clear, &self.env);
        let candidates = search_path(self.argv[0].as_bytes(), path);
        let mut plan = ExecPlan::new(self.argv, env, candidates, self.cwd);

        // Every descriptor the child gets, with the parent's other end.
        let pipe = |nonblock| fds::pipe(nonblock).map_err(|e| Error::sys("pipe2", &name, e));
        let (child_in, input) = match self.stdin {
            Stdin::Inherit => (None, None),
            Stdin::Null => {
                let null = std::fs::File::open("/dev/null")
                    .map_err(|e| Error::io("open", "/dev/null", &e))?;
                (Some(ChildEnd::Fd(above_stdio(null.into())?)), None)
            }
            Stdin::Fd(fd) => (Some(ChildEnd::Fd(above_stdio(fd)?)), None),
            Stdin::Bytes(bytes) => {
                let (r, w) = pipe(false)?;
                set_nonblocking(&w)?;
                // No bytes: the writer is dropped at once, and the child
                // reads end of file.
                let input = (!bytes.is_empty()).then_some((w, bytes));
                (Some(ChildEnd::Pipe(r)), input)
            }
        };
        // With capture, stdout and stderr each get a pipe: the child's
        // write end, and our read end.
        let capture = || -> Result<_> {
            if !self.capture {
                return Ok((None, None));
            }
            let (r, w) = pipe(false)?;
            Ok((Some(w), Some(r)))
        };
        let (child_out, out) = capture()?;
        let (child_err, err) = capture()?;
        // Without capture, the caller's own descriptors, if any.
        let given = |fd: Option<OwnedFd>| -> Result<Option<OwnedFd>> {
            match fd {
                Some(fd) if !self.capture => Ok(Some(above_stdio(fd)?)),
                _ => Ok(None),
            }
        };
        let out_to = given(self.stdout_to)?;
        let err_to = given(self.stderr_to)?;
        let raw = |pipe: &Option<SpawnFd>, fd: &Option<OwnedFd>| {
            pipe.as_ref()
                .map(AsRawFd::as_raw_fd)
                .or(fd.as_ref().map(AsRawFd::as_raw_fd))
        };

        plan.redirect = [
            child_in.as_ref().map(ChildEnd::raw),
            raw(&child_out, &out_to),
            raw(&child_err, &err_to),
        ];
        plan.close_stdout = self.stdout_closed && child_out.is_none() && out_to.is_none();
        plan.close_stdin = self.stdin_closed && child_in.is_none();
        plan.close_stderr = self.stderr_closed && child_err.is_none() && err_to.is_none();
        plan.death_signal = self
            .death_signal
            .map(|sig| (sig as libc::c_int, nix::unistd::getpid().as_raw()));
        plan.default_signals = self.default_signals;
        plan.new_group = self.new_group;
        plan.new_session = self.new_session;
        plan.share_sysv_undo = self.share_sysv_undo;
        plan.announce = self.announce_to.as_ref().map(|fd| fd.as_raw_fd());
        let pid = crate::sys::spawn::spawn(&mut plan).map_err(|e| Error::sys("clone", &name, e))?;
        let mut child = Child::new(pid);
        let report = plan.report();
        // The child's ends are the child's now: closing ours is what lets
        // each side see end of file.
        drop((child_in, child_out, child_err, out_to, err_to, plan));

        if let Some((stage, errno)) = report {
            child.wait()?;
            return Err(match stage {
                STAGE_EXEC => {
                    Error::sys("execvp", &name, errno).with_kind(exec_failure_kind(errno))
                }
                STAGE_DUP2 => Error::sys("dup2", &name, errno),
                STAGE_CHDIR => Error::sys("chdir", &self.cwd_shown, errno),
                STAGE_SETPGID => Error::sys("setpgid", &name, errno),
                STAGE_SETSID => Error::sys("setsid", &name, errno),
                STAGE_DEATH_SIGNAL => Error::sys("prctl", "PR_SET_PDEATHSIG", errno),
                _ => Error::sys("sigaction", &name, errno),
            });
        }
        let group = self.new_group.then_some(pid);
        Ok(Running::new(child, name, group, input, [out, err]))
    }
}

/// A descriptor that becomes the child's stdin: a pipe end of ours, or the
/// caller's file.
enum ChildEnd {
    Pipe(SpawnFd),
    Fd(OwnedFd),
}

impl ChildEnd {
    fn raw(&self) -> RawFd {
        match self {
            ChildEnd::Pipe(p) => p.as_raw_fd(),
            ChildEnd::Fd(f) => f.as_raw_fd(),
        }
    }
}

/// The child's environment, `NAME=value` strings, and its PATH: ours, or
/// none after `clear`, with `changes` applied in order (a set replaces the
/// variable where it stands, or appends it; `None` removes it). Always a
/// copy, read through std's environment lock: a `set_var` on another
/// thread (safe code in edition 2021) may reallocate `environ` itself.
/// So the child never gets an entry std cannot read as `NAME=value`
/// (none with no `=`, or with an empty name), which a program execve'd
/// with such entries would otherwise pass on. The PATH searched is the
/// first one, as getenv(3) and so execvp(3) take it, and the one the
/// child's own lookups find; a set replaces that first one.
fn environment(
    clear: bool,
    changes: &[(OsString, Option<OsString>)],
) -> (Vec<CString>, Option<OsString>) {
    let mut vars: Vec<(OsString, OsString)> = if clear {
        Vec::new()
    } else {
        std::env::vars_os().collect()
    };
    for (key, value) in changes {
        match value {
            Some(v) => match vars.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = v.clone(),
                None => vars.push((key.clone(), v.clone())),
            },
            None => vars.retain(|(k, _)| k != key),
        }
    }
    let path = vars
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let env = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).ok()
        })
        .collect();
    (env, path)
}

/// The paths execvp(3) would try for `prog`, in order: `prog` itself when it
/// contains a `/`, otherwise `dir/prog` for each PATH entry (an empty entry
/// is the current directory; an unset PATH is `/bin:/usr/bin`, glibc's
/// default). An empty name has no candidates (ENOENT).
fn search_path(prog: &[u8], path: Option<OsString>) -> Vec<CString> {
    if prog.is_empty() {
        return Vec::new();
    }
    if prog.contains(&b'/') {
        return CString::new(prog).into_iter().collect();
    }
    let path = path.map_or_else(|| b"/bin:/usr/bin".to_vec(), OsString::into_vec);
    path.split(|&b| b == b':')
        .filter_map(|dir| {
            let mut full = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            full.push(b'/');
            full.extend_from_slice(prog);
            CString::new(full).ok()
        })
        .collect()
}

/// `fd` itself when it is 3 or above, else a CLOEXEC duplicate at 3 or above.
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    crate::sys::spawn::dup_above_stdio(fd.as_fd())
        .map_err(|e| Error::sys("fcntl", "F_DUPFD_CLOEXEC", e))
}

fn set_nonblocking(fd: &SpawnFd) -> Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::sys("fcntl", "stdin pipe", e))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| Error::sys("fcntl", "stdin pipe", e))?;
    Ok(())
}

#[cfg(test)]
mod tests;
