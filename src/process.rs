//! Processes: fork, pids, `_exit`, and waiting for exactly one child.
//!
//! ```no_run
//! use posixkit::process::{self, Fork};
//! // SAFETY: this program has one thread, and the child ends with _exit.
//! match unsafe { process::fork() }.unwrap() {
//!     Fork::Child => process::_exit(3),
//!     Fork::Parent(pid) => {
//!         let status = process::waitpid(pid).unwrap();
//!         assert_eq!(status.shell_code(), 3);
//!     }
//! }
//! ```
//!
//! The library never calls `waitpid(-1)`: it waits for the pids it was given,
//! so it cannot steal another part of the program's children.

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
pub use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::status::Status;
pub use crate::sys::proc::{_exit, Fork, fork};

/// The calling process's pid (getpid(2)).
pub fn getpid() -> Pid {
    nix::unistd::getpid()
}

/// The parent's pid (getppid(2)); 1 or a subreaper's pid once the parent died.
pub fn getppid() -> Pid {
    nix::unistd::getppid()
}

/// Wait for `pid` to end and reap it. Retries on EINTR, so a signal handler
/// elsewhere in the program does not turn the wait into an error.
pub fn waitpid(pid: Pid) -> Result<Status> {
    loop {
        match crate::sys::proc::waitpid_raw(pid, false) {
            Ok(Some(raw)) => return Ok(Status::from_raw(raw)),
            Ok(None) => unreachable!("waitpid without WNOHANG returned 0"),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("waitpid", pid, e)),
        }
    }
}

/// Reap `pid` if it has ended (WNOHANG); `None` while it still runs.
/// Retries on EINTR.
pub fn try_waitpid(pid: Pid) -> Result<Option<Status>> {
    loop {
        match crate::sys::proc::waitpid_raw(pid, true) {
            Ok(r) => return Ok(r.map(Status::from_raw)),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("waitpid", pid, e)),
        }
    }
}

/// Send `sig` to `pid` (kill(2)).
pub fn kill(pid: Pid, sig: Signal) -> Result<()> {
    signal::kill(pid, sig).map_err(|e| Error::sys("kill", pid, e))
}

/// Make the calling process die of `sig`: restore the signal's default
/// action, unblock it, and raise it. Returns only if the signal's default
/// action does not end the process (SIGCHLD, SIGWINCH, a stop signal …).
pub fn die_of(sig: Signal) -> Result<()> {
    crate::sys::proc::restore_default(sig).map_err(|e| Error::sys("sigaction", sig.as_str(), e))?;
    signal::raise(sig).map_err(|e| Error::sys("raise", sig.as_str(), e))
}

/// Whether `sig`'s default action ends the process (as opposed to ignoring
/// it, stopping it or continuing it).
pub fn default_action_terminates(sig: Signal) -> bool {
    !matches!(
        sig,
        Signal::SIGCHLD
            | Signal::SIGCONT
            | Signal::SIGURG
            | Signal::SIGWINCH
            | Signal::SIGSTOP
            | Signal::SIGTSTP
            | Signal::SIGTTIN
            | Signal::SIGTTOU
    )
}

/// A forked child that this process must reap.
///
/// [`Child::wait`] reaps it. If a `Child` is dropped unreaped (an early
/// return on an error path), the drop kills it with SIGKILL and reaps it, so
/// no error path leaves a zombie or a stray process behind. A forked child
/// holds copies of these handles but ends with `_exit`, which runs no
/// destructors, so it never kills its siblings.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    status: Option<Status>,
}

impl Child {
    /// Take charge of an already-forked child.
    pub fn new(pid: Pid) -> Self {
        Child { pid, status: None }
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Wait for the child to end and reap it; later calls return the same status.
    pub fn wait(&mut self) -> Result<Status> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = waitpid(self.pid)?;
        self.status = Some(s);
        Ok(s)
    }

    /// Reap the child if it has ended; `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<Status>> {
        if self.status.is_none() {
            self.status = try_waitpid(self.pid)?;
        }
        Ok(self.status)
    }

    /// The status once reaped.
    pub fn status(&self) -> Option<Status> {
        self.status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = signal::kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid);
        }
    }
}
