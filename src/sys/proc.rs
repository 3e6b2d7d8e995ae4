//! fork, `_exit`, raw waitpid and signal dispositions.

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};

/// Which side of a fork this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// The parent, holding the new child's pid.
    Parent(Pid),
    /// The child.
    Child,
}

/// fork(2): duplicate the calling process.
///
/// # Safety
///
/// After a fork only the calling thread exists in the child. If the parent
/// has other threads, they may hold locks (the allocator's, stdout's) that
/// will never be released in the child. So either the caller is
/// single-threaded, or the child makes only async-signal-safe calls until it
/// calls `execve` or [`_exit`]. The child must never return into code that
/// believes it is the parent: it ends with [`_exit`] (or exec).
pub unsafe fn fork() -> Result<Fork, Errno> {
    // SAFETY: the caller upholds this function's contract, which is exactly
    // the contract of nix's fork.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Fork::Parent(child)),
        ForkResult::Child => Ok(Fork::Child),
    }
}

/// `_exit(2)`: end the process now, without running atexit handlers or
/// flushing stdio buffers (the parent's copies, in a forked child).
pub fn _exit(code: i32) -> ! {
    // SAFETY: _exit takes a plain int, touches no memory of ours and never
    // returns; it is async-signal-safe, so it is sound in a forked child.
    unsafe { libc::_exit(code) }
}

/// waitpid(2) for exactly `pid`, returning the raw status word, or `None`
/// when `nohang` is set and the child has not changed state. Not retried on
/// EINTR here: callers decide.
pub fn waitpid_raw(pid: Pid, nohang: bool) -> Result<Option<i32>, Errno> {
    let mut status: libc::c_int = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: `status` is a valid, writable c_int for the duration of the
    // call; waitpid writes at most one c_int there.
    let r = unsafe { libc::waitpid(pid.as_raw(), &mut status, flags) };
    match r {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        _ => Ok(Some(status)),
    }
}

/// Put `sig` back to its default action and unblock it, so that raising it
/// does what the signal's default says even if our parent ignored or blocked
/// it (a `nohup` parent ignores SIGHUP, for instance).
pub fn restore_default(sig: Signal) -> Result<(), Errno> {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, sigprocmask};
    if !matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
        // SAFETY: installing SIG_DFL installs no handler of ours, so no code
        // can run in signal context as a result of this call.
        unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) }?;
    }
    let mut set = SigSet::empty();
    set.add(sig);
    sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)
}
