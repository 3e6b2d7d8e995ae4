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

/// fork(2) without the library's check that the process is
/// single-threaded: the expert's way to fork where [`crate::process::fork`]
/// refuses.
///
/// Every fork of the library comes here, and its child does not keep the
/// pipes of a spawn in flight in the parent (see
/// [`crate::spawn`]).
///
/// # Safety
///
/// After a fork only the calling thread exists in the child. If the parent
/// has other threads, they may hold locks (the allocator's, stdout's) that
/// will never be released in the child. So either the caller is
/// single-threaded, or the child makes only async-signal-safe calls until it
/// calls `execve` or [`_exit`]. The child must never return into code that
/// believes it is the parent: it ends with [`_exit`] (or exec).
pub unsafe fn fork_unchecked() -> Result<Fork, Errno> {
    let gate = crate::sys::spawn::fds::ForkGate::enter();
    // SAFETY: the caller upholds this function's contract, which is exactly
    // the contract of nix's fork.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => {
            gate.parent();
            Ok(Fork::Parent(child))
        }
        Ok(ForkResult::Child) => {
            gate.child();
            Ok(Fork::Child)
        }
        Err(e) => {
            gate.parent();
            Err(e)
        }
    }
}

/// fork(2) for a caller that has just seen the process single-threaded
/// ([`alone_in_thread_group`] returned `Ok(true)`, on this thread, with no
/// thread started since).
pub(crate) fn fork_alone(_proof: Alone) -> Result<Fork, Errno> {
    // SAFETY: an `Alone` is only made by `alone_in_thread_group` when the
    // kernel said this thread group has one member, the calling thread; it
    // is not Send, so it is used on that thread, and a thread the caller
    // could start in between would have to be started by the caller
    // itself (the check and the fork are adjacent in every caller). No
    // other thread can then hold a lock the child would need.
    unsafe { fork_unchecked() }
}

/// Proof that [`alone_in_thread_group`] found the calling thread alone.
/// Neither `Send` nor `Sync`: it stays on the thread that checked.
#[derive(Debug)]
pub(crate) struct Alone(std::marker::PhantomData<*const ()>);

/// Whether the calling thread is the only thread of its process, asked of
/// the kernel itself: unshare(CLONE_THREAD) does nothing and succeeds in a
/// process of one thread and fails with EINVAL in any other (unshare(2)).
/// It needs no /proc and no privilege. `Err` carries the errno when the
/// call is refused outright (a seccomp filter's EPERM, ENOSYS), and the
/// caller must find out another way.
pub(crate) fn alone_in_thread_group() -> Result<Option<Alone>, Errno> {
    // SAFETY: unshare takes a flags word and touches no memory of ours;
    // with CLONE_THREAD alone it changes nothing in any case.
    let r = unsafe { libc::unshare(libc::CLONE_THREAD) };
    match r {
        0 => Ok(Some(Alone(std::marker::PhantomData))),
        _ => match Errno::last() {
            Errno::EINVAL => Ok(None),
            e => Err(e),
        },
    }
}

/// An [`Alone`] for a caller that counted one thread another way (/proc),
/// when [`alone_in_thread_group`] was refused.
pub(crate) fn alone_by_count(threads: usize) -> Option<Alone> {
    (threads == 1).then_some(Alone(std::marker::PhantomData))
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

/// pidfd_open(2): a file descriptor that refers to process `pid` itself, not
/// to whatever process later reuses the number. Readable once it has ended.
pub fn pidfd_open(pid: Pid) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and a flags word, touches no memory of
    // ours, and returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if r < 0 {
        return Err(Errno::last());
    }
    let fd = i32::try_from(r).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing
    // else owns; OwnedFd takes sole ownership and closes it once. pidfds are
    // always created close-on-exec.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// pidfd_send_signal(2): signal the process behind `pidfd`, with no risk of
/// hitting an unrelated process that reused its pid.
pub fn pidfd_send_signal(pidfd: std::os::fd::BorrowedFd<'_>, sig: Signal) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: a null siginfo pointer is allowed (the kernel then fills it as
    // kill(2) would); the fd is borrowed and valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Ask for `sig` when the parent dies (PR_SET_PDEATHSIG), then check that
/// `parent` is still the parent: it may have died between fork and prctl,
/// too early for the request to fire. True when the signal is armed and
/// the parent is alive. Two system calls and nothing else, so it is safe
/// in a forked child before exec.
pub fn arm_death_signal(sig: libc::c_int, parent: libc::pid_t) -> bool {
    // SAFETY: prctl and getppid take and return plain integers and touch no
    // memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) == 0
            && libc::getppid() == parent
    }
}

/// Set `sig` to SIG_IGN.
pub fn ignore(sig: Signal) -> Result<(), Errno> {
    // SAFETY: SIG_IGN installs no handler of ours; no code runs in signal
    // context as a result.
    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }.map(drop)
}
