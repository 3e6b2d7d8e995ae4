//! Run a program: fork, dup2, exec, feed its stdin, collect its output.
//! Python's `subprocess.call` and `Popen.communicate`.
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
//! 1. Before fork, the parent prepares everything the child will need:
//!    argv and envp as C strings, and the list of paths execvp(3)'s PATH
//!    search would try. Pipes come from pipe2(`O_CLOEXEC`).
//! 2. fork(2). The child empties its signal mask, puts SIGPIPE back to its
//!    default (Rust programs ignore it, and an ignored signal stays ignored
//!    across exec), dup2(2)s the pipes onto 0, 1 and 2, and execve(2)s each
//!    candidate path in turn. Only async-signal-safe calls happen in between,
//!    so this is sound even when the caller has threads.
//! 3. If every exec fails, the child writes the errno to a pipe whose write
//!    end is `O_CLOEXEC`, and `_exit`s. A successful exec closes that pipe,
//!    so the parent's read sees end of file: nothing to report. A failure is
//!    an [`Error`] with exit code 127 (not found) or 126 (found, but not
//!    executable).
//! 4. The parent writes the input and reads stdout and stderr in one poll(2)
//!    loop, so a child that fills one pipe while we wait on another never
//!    deadlocks; then it reaps the child.
//!
//! Writing input to a child that exits without reading it gives EPIPE,
//! which is not an error here (the rest of the input is dropped, as
//! `communicate` does) — provided SIGPIPE is ignored in the calling process,
//! which Rust's runtime does for every binary.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, ErrorKind, Result};
use crate::pipe::{self, Reader, Writer};
use crate::process::Child;
use crate::status::Status;
use crate::sys::spawn::{ExecPlan, STAGE_DUP2, STAGE_EXEC, fork_exec, sh_path};

/// Where the child's stdin comes from.
#[derive(Debug, Default)]
pub enum Stdin {
    /// The parent's stdin (subprocess.call's default).
    #[default]
    Inherit,
    /// These bytes, written through a pipe; the child sees end of file after them.
    Bytes(Vec<u8>),
    /// This descriptor (an open file: the shell's `< file`).
    Fd(OwnedFd),
}

/// A program to run, with its arguments, input and capture choice.
#[derive(Debug)]
pub struct Spawn {
    argv: Vec<CString>,
    stdin: Stdin,
    capture: bool,
    death_signal: Option<nix::sys::signal::Signal>,
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
}

/// The kind of an exec that failed with `errno`, as a shell tells them
/// apart: [`ErrorKind::CommandNotFound`] when the program is not there (the
/// shell's 127), [`ErrorKind::CommandNotExecutable`] when it is but cannot
/// run (126).
pub fn exec_failure_kind(errno: Errno) -> ErrorKind {
    match errno {
        Errno::ENOENT | Errno::ENOTDIR => ErrorKind::CommandNotFound,
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

    /// Send `sig` to the program when the process that started it dies
    /// (PR_SET_PDEATHSIG, armed between fork and exec): a pool worker killed
    /// by its pool takes its command along. The signal follows the *thread*
    /// that called `run`.
    #[must_use]
    pub fn die_with_parent(mut self, sig: nix::sys::signal::Signal) -> Self {
        self.death_signal = Some(sig);
        self
    }

    /// The program name, for messages.
    pub fn program(&self) -> String {
        String::from_utf8_lossy(self.argv[0].as_bytes()).into_owned()
    }

    /// Run the program to completion: feed its input, collect its output,
    /// reap it. An exec failure is an `execvp` error of kind
    /// [`ErrorKind::CommandNotFound`] or [`ErrorKind::CommandNotExecutable`]
    /// (see [`exec_failure_kind`]); the child is reaped either way.
    pub fn run(self) -> Result<Output> {
        let name = self.program();
        let argv_ptrs = null_terminated(&self.argv);
        let env: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                CString::new(kv).ok()
            })
            .collect();
        let envp = null_terminated(&env);
        let candidates = search_path(self.argv[0].as_bytes(), std::env::var_os("PATH"));
        let mut sh_argv = vec![sh_path(), std::ptr::null()];
        sh_argv.extend(argv_ptrs[1..].iter().copied());

        // Every descriptor the child gets, with the parent's other end.
        let (err_r, err_w) = pipe::pipe()?;
        let (child_in, parent_in): (Option<OwnedFd>, Option<(Writer, Vec<u8>)>) = match self.stdin {
            Stdin::Inherit => (None, None),
            Stdin::Fd(fd) => (Some(fd), None),
            Stdin::Bytes(bytes) => {
                let (r, w) = pipe::pipe()?;
                (Some(r.into()), Some((w, bytes)))
            }
        };
        // With --capture, stdout and stderr each get a pipe: the child's
        // write end, and our read end.
        let capture = || -> Result<_> {
            if !self.capture {
                return Ok((None, None));
            }
            let (r, w) = pipe::pipe()?;
            Ok((Some(OwnedFd::from(w)), Some(r)))
        };
        let (child_out, parent_out) = capture()?;
        let (child_err, parent_err) = capture()?;
        // If our own 0/1/2 were closed, a pipe may have landed there; move
        // every source to 3 or above so no dup2 overwrites another source.
        let child_in = child_in.map(above_stdio).transpose()?;
        let child_out = child_out.map(above_stdio).transpose()?;
        let child_err = child_err.map(above_stdio).transpose()?;
        let err_w = above_stdio(err_w.into())?;

        let raw = |fd: &Option<OwnedFd>| fd.as_ref().map(|f| f.as_raw_fd());
        let mut plan = ExecPlan {
            redirect: [raw(&child_in), raw(&child_out), raw(&child_err)],
            err_fd: err_w.as_raw_fd(),
            argv: argv_ptrs,
            envp,
            candidates: candidates.iter().map(|c| c.as_ptr()).collect(),
            sh_argv,
            death_signal: self
                .death_signal
                .map(|sig| (sig as libc::c_int, nix::unistd::getpid().as_raw())),
        };
        let pid = fork_exec(&mut plan).map_err(|e| Error::sys("fork", &name, e))?;
        let mut child = Child::new(pid);
        // The child's ends are the child's now: closing ours is what lets
        // the parent see end of file on each pipe.
        drop((child_in, child_out, child_err, err_w));

        let mut report = [0u8; 8];
        let got = err_r
            .read_full(&mut report)
            .map_err(|e| Error::sys("read", "exec status pipe", e.errno().unwrap_or(Errno::EIO)))?;
        if got == report.len() {
            child.wait()?;
            let stage = i32::from_ne_bytes(report[..4].try_into().unwrap_or_default());
            let errno = Errno::from_raw(i32::from_ne_bytes(
                report[4..].try_into().unwrap_or_default(),
            ));
            return Err(match stage {
                STAGE_EXEC => {
                    Error::sys("execvp", &name, errno).with_kind(exec_failure_kind(errno))
                }
                STAGE_DUP2 => Error::sys("dup2", &name, errno),
                _ => Error::sys("sigprocmask", &name, errno),
            });
        }

        let (stdout, stderr) = communicate(parent_in, parent_out, parent_err)?;
        let status = child.wait()?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
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

fn null_terminated(strings: &[CString]) -> Vec<*const std::ffi::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
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

/// Feed `input` and drain `out` and `err` until all are done, in one poll(2)
/// loop. Returns what was read from `out` and `err`.
fn communicate(
    input: Option<(Writer, Vec<u8>)>,
    out: Option<Reader>,
    err: Option<Reader>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    const CHUNK: usize = 64 * 1024;
    let mut input = match input {
        Some((w, bytes)) if !bytes.is_empty() => {
            let flags =
                fcntl(&w, FcntlArg::F_GETFL).map_err(|e| Error::sys("fcntl", "stdin pipe", e))?;
            let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
            fcntl(&w, FcntlArg::F_SETFL(flags))
                .map_err(|e| Error::sys("fcntl", "stdin pipe", e))?;
            Some((w, bytes, 0usize))
        }
        // No bytes: dropping the writer gives the child end of file at once.
        _ => None,
    };
    let mut readers = [out, err];
    let mut collected = [Vec::new(), Vec::new()];
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let mut fds = Vec::with_capacity(3);
        let mut who = Vec::with_capacity(3);
        if let Some((w, _, _)) = &input {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLOUT));
            who.push(None);
        }
        for (i, r) in readers.iter().enumerate() {
            if let Some(r) = r {
                fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
                who.push(Some(i));
            }
        }
        if fds.is_empty() {
            break;
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("poll", "child pipes", e)),
        }
        let ready: Vec<Option<usize>> = fds
            .iter()
            .zip(&who)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, w)| *w)
            .collect();
        drop(fds);
        for w in ready {
            match w {
                None => {
                    let Some((writer, bytes, pos)) = &mut input else {
                        continue;
                    };
                    let end = (*pos + CHUNK).min(bytes.len());
                    match pipe::write(writer.as_fd(), &bytes[*pos..end]) {
                        Ok(n) => *pos += n,
                        Err(Errno::EAGAIN) => {}
                        // The child closed its stdin: the rest is not wanted.
                        Err(Errno::EPIPE) => *pos = bytes.len(),
                        Err(e) => return Err(Error::sys("write", "child stdin", e)),
                    }
                    if *pos == bytes.len() {
                        input = None;
                    }
                }
                Some(i) => {
                    let Some(r) = &readers[i] else { continue };
                    let n = r.read(&mut chunk)?;
                    if n == 0 {
                        readers[i] = None;
                    } else {
                        collected[i].extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
    }
    let [out, err] = collected;
    Ok((out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_search_follows_execvp() {
        let c = |v: Vec<CString>| {
            v.into_iter()
                .map(|s| s.into_string().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            c(search_path(b"ls", Some("/a::/b".into()))),
            ["/a/ls", "./ls", "/b/ls"]
        );
        assert_eq!(c(search_path(b"./x", Some("/a".into()))), ["./x"]);
        assert_eq!(c(search_path(b"ls", None)), ["/bin/ls", "/usr/bin/ls"]);
        assert!(search_path(b"", None).is_empty());
    }

    #[test]
    fn exec_failures_are_not_found_or_not_executable() {
        assert_eq!(exec_failure_kind(Errno::ENOENT), ErrorKind::CommandNotFound);
        assert_eq!(
            exec_failure_kind(Errno::ENOTDIR),
            ErrorKind::CommandNotFound
        );
        assert_eq!(
            exec_failure_kind(Errno::EACCES),
            ErrorKind::CommandNotExecutable
        );
        assert_eq!(
            exec_failure_kind(Errno::ENOEXEC),
            ErrorKind::CommandNotExecutable
        );
    }

    #[test]
    fn captures_both_streams_and_feeds_input() {
        let out = Spawn::new(["sh", "-c", "cat; echo err >&2; exit 3"])
            .unwrap()
            .input(b"in\n".to_vec())
            .capture(true)
            .run()
            .unwrap();
        assert_eq!(out.stdout, b"in\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status, Status::Exited(3));
    }

    #[test]
    fn a_missing_program_is_127() {
        let e = Spawn::new(["/nonexistent/prog"])
            .unwrap()
            .run()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::CommandNotFound);
        assert_eq!(
            e.to_string(),
            "execvp(/nonexistent/prog): No such file or directory"
        );
    }

    #[test]
    fn one_mib_of_input_comes_back_through_cat() {
        let data: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let out = Spawn::new(["cat"])
            .unwrap()
            .input(data.clone())
            .capture(true)
            .run()
            .unwrap();
        assert!(out.stdout == data);
        assert!(out.stderr.is_empty());
    }

    #[test]
    fn stdin_from_a_descriptor() {
        let (r, w) = pipe::pipe().unwrap();
        w.write_all(b"from a pipe fd").unwrap();
        drop(w);
        let out = Spawn::new(["cat"])
            .unwrap()
            .stdin(Stdin::Fd(r.into()))
            .capture(true)
            .run()
            .unwrap();
        assert_eq!(out.stdout, b"from a pipe fd");
    }

    #[test]
    fn the_child_starts_with_an_empty_signal_mask() {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
        // fork copies the calling thread's mask; the child must clear it.
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGUSR1);
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).unwrap();
        let out = Spawn::new(["grep", "^SigBlk:", "/proc/self/status"])
            .unwrap()
            .capture(true)
            .run();
        pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None).unwrap();
        assert_eq!(
            String::from_utf8(out.unwrap().stdout).unwrap(),
            "SigBlk:\t0000000000000000\n"
        );
    }
}
