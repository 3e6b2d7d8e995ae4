//! Processes: fork, pids, `_exit`, and waiting for exactly one child.
//!
//! ```no_run
//! use posixkit::process::{self, Fork};
//! match process::fork().unwrap() {
//!     Fork::Child => process::_exit(3),
//!     Fork::Parent(pid) => {
//!         let status = process::waitpid(pid).unwrap();
//!         assert_eq!(status.shell_code(), 3);
//!     }
//! }
//! ```
//!
//! [`fork`] is safe to call: it asks the kernel whether the process has any
//! thread besides the caller, and refuses with
//! [`ErrorKind::ThreadsRunning`] if so (a
//! child forked from a threaded process can find a lock held for ever by a
//! thread that does not exist in it). Every fork the library makes —
//! [`Builder::start`], [`crate::pool::Pool::new`] and the pool's
//! replacement workers — goes through the same check. Experts who know the
//! child makes only async-signal-safe calls use [`fork_unchecked`] and the
//! other `…_unchecked` variants, which carry that contract as `unsafe fn`.
//!
//! The library never calls `waitpid(-1)`: it waits for the pids it was given,
//! so it cannot steal another part of the program's children.
//!
//! # Daemons, die-with-parent, and a normal exit
//!
//! A [`Process`] follows Python's `multiprocessing`: a daemon
//! ([`Builder::daemon`]) is terminated when its parent ends normally and
//! may not start children, but outlives a parent killed with SIGKILL;
//! [`Builder::die_with_parent`] is the stronger guarantee
//! (PR_SET_PDEATHSIG): killed with its parent however the parent dies.
//! A Rust program has no `atexit` for values, so "ends normally" is a call:
//! [`join_children`] at the end of `main` (a `Process` closure that
//! returns makes it for you). A `Process` dropped without a join is left
//! running, never killed or waited for on the spot, and that call waits
//! for it. The table is on [`Builder`].
//!
//! # When SIGCHLD is ignored
//!
//! A process whose SIGCHLD is set to SIG_IGN (often inherited: an ignored
//! signal stays ignored across exec) or has SA_NOCLDWAIT gets its children
//! reaped by the kernel as they end: their exit status is lost and their
//! pid is free for any new process at once. The library then:
//!
//! - never signals a pid that may have been reaped: a [`Child`] forked
//!   while SIGCHLD is ignored or has a handler holds a pidfd taken in the
//!   same instant as the fork (SIGCHLD is held back for that instant, see
//!   [`Children::fork`]), and signals and waits through it; a [`Process`]
//!   always holds one;
//! - reports a child reaped by someone else (ECHILD) as such: [`Child::wait`]
//!   waits until the child has ended, then fails with an error of kind
//!   [`ErrorKind::Os`] that says its status is lost; it never retries
//!   with a signal, and dropping the `Child` signals nothing.
//!
//! To get exit statuses, put SIGCHLD back to its default before forking
//! (`process::restore_default(Signal::SIGCHLD)`); the `pk-*` binaries do so
//! when they start. A SIGCHLD handler that waits for any child
//! (`waitpid(-1)`) steals statuses the same way. Change SIGCHLD only while
//! no [`Child`] is waiting to be reaped.

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
pub use nix::unistd::Pid;

use crate::error::{Error, ErrorKind, Result};
use crate::status::Status;
use crate::sys::proc::TakePidfd;
pub use crate::sys::proc::{_exit, Fork, fork_unchecked};

mod child;
mod object;
mod owner;
mod registry;
pub use child::{Child, Children, wait_all};
pub use object::{Builder, Process, is_daemon};
pub(crate) use owner::Owner;
pub use registry::{Joined, join_children};

/// fork(2), checked: the child gets `Fork::Child`, the parent the child's
/// pid. Refused, with an error of kind
/// [`ErrorKind::ThreadsRunning`], while the process has any thread besides
/// the caller: the child would find every lock another thread held (the
/// allocator's, stdout's) held for ever. The child must end with
/// [`_exit`] or exec, never by returning into code that believes it is the
/// parent ([`Builder::start`] does that for you).
///
/// How it knows: `unshare(CLONE_THREAD)`, which the kernel accepts only in
/// a process of one thread, needs no /proc and no privilege. Where a
/// seccomp filter refuses it, the thread count in `/proc/self/stat` is read
/// instead; with neither, the error says so. A thread that was just joined
/// may still be leaving the kernel for a moment, so a refusal is only
/// final after the other threads have stayed for about 100 ms.
pub fn fork() -> Result<Fork> {
    fork_named("child")
}

/// [`fork`], naming the child in the error (`fork(<what>): …`).
pub fn fork_named(what: impl std::fmt::Display) -> Result<Fork> {
    checked_fork(&what, TakePidfd::Never).map(|(fork, _)| fork)
}

/// The library's one checked fork: wait until alone (see [`fork`]), fork,
/// take a pidfd as `take` says, and in the child arm the death signal
/// when [`set_children_die_with_parent`] asked for it.
pub(crate) fn checked_fork(
    what: &dyn std::fmt::Display,
    take: TakePidfd,
) -> Result<(Fork, Option<std::os::fd::OwnedFd>)> {
    let alone = wait_alone(what)?;
    let parent = children_die_with_parent().then(getpid);
    let (fork, pidfd) = crate::sys::proc::fork_alone_pidfd(alone, take)
        .map_err(|e| Error::sys("fork", what.to_string(), e))?;
    if let (Fork::Child, Some(parent)) = (fork, parent) {
        die_with(parent);
    }
    Ok((fork, pidfd))
}

/// In a forked child: be sent SIGKILL when `parent` dies, or die now if it
/// already has (too early for the request to fire).
fn die_with(parent: Pid) {
    if !crate::sys::proc::arm_death_signal(libc::SIGKILL, parent.as_raw()) {
        let _ = die_of(Signal::SIGKILL);
        _exit(1);
    }
}

static CHILDREN_DIE_WITH_PARENT: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// From now on, every child this process forks through the library
/// ([`fork`], [`Children`], [`Builder::start`], [`crate::pool::Pool`]'s
/// workers, the `…_unchecked` variants) is sent SIGKILL when this process
/// dies, however it dies, SIGKILL included (PR_SET_PDEATHSIG, armed in the
/// child right after the fork; a child whose parent died before that dies
/// at once). Off by default. The `pk-*` binaries turn it on: their
/// children are parts of a lesson or a command, never meant to outlive it.
/// [`Builder::die_with_parent`] overrides it for one [`Process`], either
/// way.
///
/// Process-wide, like a signal disposition, and inherited by forked
/// children for their own children. PR_SET_PDEATHSIG fires when the
/// *thread* that forked ends; the library forks only from a process of one
/// thread, so that thread's end is the process's end unless the program
/// starts threads later and ends the forking one first.
pub fn set_children_die_with_parent(on: bool) {
    CHILDREN_DIE_WITH_PARENT.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`set_children_die_with_parent`] is on.
pub fn children_die_with_parent() -> bool {
    CHILDREN_DIE_WITH_PARENT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Wait until this thread is the process's only one (see [`fork`]).
fn wait_alone(what: &dyn std::fmt::Display) -> Result<crate::sys::proc::Alone> {
    use std::time::{Duration, Instant};
    let give_up = Instant::now() + Duration::from_millis(100);
    let mut pause = Duration::from_micros(20);
    loop {
        let alone = match crate::sys::proc::alone_in_thread_group() {
            Ok(alone) => alone,
            Err(refused) => match crate::thread::os_threads() {
                Ok(n) => crate::sys::proc::alone_by_count(n),
                Err(proc_err) => {
                    return Err(Error::new(
                        ErrorKind::Os,
                        "fork",
                        what,
                        format!(
                            "cannot tell whether other threads run: unshare(CLONE_THREAD): {}; {proc_err}",
                            crate::error::strerror(refused)
                        ),
                    ));
                }
            },
        };
        if let Some(alone) = alone {
            return Ok(alone);
        }
        if Instant::now() >= give_up {
            return Err(Error::new(
                ErrorKind::ThreadsRunning,
                "fork",
                what,
                "other threads are running in this process; fork only from a single-threaded one",
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Run `f` as a forked child's whole life and `_exit` with its code: 101
/// if it panics. The panic's payload is never dropped (its `drop` could
/// panic in turn and unwind into the caller's code), so whatever `f` does
/// the child never returns into code that believes it is the parent.
///
/// When `f` returns, the child ends normally, as Python's `_bootstrap`
/// does: [`join_children`] terminates the daemons among the [`Process`]es
/// `f` started and waits for the others, before `_exit`. A panic skips
/// that (an error path must not wait for a child that waits for it).
pub fn run_child<F: FnOnce() -> i32>(f: F) -> ! {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(code) => {
            // A failure here (a status lost to an ignored SIGCHLD) changes
            // nothing about this child's own exit code.
            let _ = join_children();
            _exit(code)
        }
        Err(payload) => {
            std::mem::forget(payload);
            _exit(CHILD_PANICKED)
        }
    }
}

/// [`run_child`] for a child forked a moment ago, whose registry is its
/// parent's copy: when `f` started no `Process`, there is nothing for
/// [`join_children`] to do, and it is not called (it would ask the kernel
/// for the pid, and run code the child has not touched yet, a page fault
/// per 64 KiB of it).
#[inline(always)]
pub(crate) fn run_fresh_child<F: FnOnce() -> i32>(f: F) -> ! {
    let mark = registry::owner_mark();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(code) => {
            if registry::registry_changed_since(mark) {
                let _ = join_children();
            }
            _exit(code)
        }
        Err(payload) => {
            std::mem::forget(payload);
            _exit(CHILD_PANICKED)
        }
    }
}

/// The exit code of a child whose closure panicked (Rust's own code for a
/// panic in `main`).
pub const CHILD_PANICKED: i32 = 101;

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
    restore_default(sig)?;
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

/// The instant `timeout` from now; `None` (wait for ever) when it lies
/// beyond what the clock can represent, so a timeout near
/// [`Duration::MAX`](std::time::Duration::MAX) means "no timeout", never
/// "already expired" and never a panic.
pub(crate) fn deadline_after(timeout: std::time::Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(timeout)
}

/// `at` plus `d`, or a century past `at` when the sum lies beyond what the
/// clock can represent: for code that needs an instant, where a duration
/// near [`Duration::MAX`](std::time::Duration::MAX) means "for ever",
/// never a panic.
#[cfg(feature = "manager")]
pub(crate) fn later(at: std::time::Instant, d: std::time::Duration) -> std::time::Instant {
    const CENTURY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
    at.checked_add(d)
        .or_else(|| at.checked_add(CENTURY))
        .unwrap_or(at)
}

/// The poll(2) timeout that ends at `deadline` (`None`: wait forever),
/// rounded up to whole milliseconds so a sub-millisecond remainder still
/// waits instead of spinning. poll takes at most `i32::MAX` ms (24.8
/// days): a longer wait is cut to that, so a poll that returns 0 means
/// the deadline passed only when [`deadline_passed`] says so.
pub(crate) fn poll_timeout(deadline: Option<std::time::Instant>) -> nix::poll::PollTimeout {
    use nix::poll::PollTimeout;
    match deadline {
        None => PollTimeout::NONE,
        Some(d) => {
            let left = d.saturating_duration_since(std::time::Instant::now());
            let ms = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// Whether `deadline` has come (`None`: never): what a poll(2) that
/// returned 0 must ask before it reads as a timeout (see [`poll_timeout`]).
pub(crate) fn deadline_passed(deadline: Option<std::time::Instant>) -> bool {
    deadline.is_some_and(|d| std::time::Instant::now() >= d)
}

/// Wait until `pidfd`'s process has ended or `timeout` has passed; true when
/// it has ended. EINTR is retried with the time that is left.
fn pidfd_wait(pidfd: std::os::fd::BorrowedFd<'_>, timeout: std::time::Duration) -> Result<bool> {
    use nix::poll::{PollFd, PollFlags, poll};
    let deadline = deadline_after(timeout);
    // A look first (see `crate::spin`).
    if crate::spin::readable(pidfd, deadline, crate::spin::JOIN) {
        return Ok(true);
    }
    loop {
        let wait = poll_timeout(deadline);
        let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
        match poll(&mut fds, wait) {
            Ok(0) if deadline_passed(deadline) => return Ok(false),
            // A wait past what one poll takes, cut short: the rest.
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(true),
            Err(e) => return Err(Error::sys("poll", "pidfd", e)),
        }
    }
}

/// Put `sig` back to its default action and unblock it.
pub fn restore_default(sig: Signal) -> Result<()> {
    crate::sys::proc::restore_default(sig).map_err(|e| Error::sys("sigaction", sig.as_str(), e))
}

/// Ignore `sig` (SIG_IGN) in this process.
pub fn ignore(sig: Signal) -> Result<()> {
    crate::sys::proc::ignore(sig).map_err(|e| Error::sys("sigaction", sig.as_str(), e))
}
