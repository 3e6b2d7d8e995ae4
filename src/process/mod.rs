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
pub use crate::sys::proc::{_exit, Fork, fork_unchecked};
use crate::sys::proc::{Reaping, TakePidfd};

mod child;
pub use child::{Child, Children, wait_all};

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
pub fn run_child<F: FnOnce() -> i32>(f: F) -> ! {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(code) => _exit(code),
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

/// The poll(2) timeout that ends at `deadline` (`None`: wait forever),
/// rounded up to whole milliseconds so a sub-millisecond remainder still
/// waits instead of spinning.
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

/// Wait until `pidfd`'s process has ended or `timeout` has passed; true when
/// it has ended. EINTR is retried with the time that is left.
fn pidfd_wait(pidfd: std::os::fd::BorrowedFd<'_>, timeout: std::time::Duration) -> Result<bool> {
    use nix::poll::{PollFd, PollFlags, poll};
    let deadline = deadline_after(timeout);
    loop {
        let wait = poll_timeout(deadline);
        let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
        match poll(&mut fds, wait) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("poll", "pidfd", e)),
        }
    }
}

static PROCESS_COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// How to start a [`Process`]: its name and whether it is a daemon.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
}

impl Builder {
    /// A builder with the default name (`Process-N`) and daemon off.
    pub fn new() -> Self {
        Builder::default()
    }

    /// The process's name; also set as its kernel name (first 15 bytes,
    /// shown by `ps` and in /proc/PID/comm).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemon dies when its parent dies, even by SIGKILL
    /// (PR_SET_PDEATHSIG). Either kind is killed and reaped if its
    /// [`Process`] is dropped without a [`Process::join`]: a drop never
    /// blocks, so an early return on an error path cannot hang on a child
    /// that waits for its parent. Join the children you want to finish.
    #[must_use]
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Fork a child that runs `f` and exits with the code `f` returns (a
    /// panic in `f` exits 101, see [`run_child`]). The fork is [`fork`]'s:
    /// refused while other threads run.
    ///
    /// For a daemon, the death signal is armed in the child and then the
    /// parent's pid is checked again: if the parent died between fork and
    /// prctl, the signal would never come, so the child exits at once.
    ///
    /// PR_SET_PDEATHSIG fires when the *thread* that forked ends, not the
    /// whole parent process: start daemons from a thread that lives as long
    /// as they should.
    pub fn start<F: FnOnce() -> i32>(self, f: F) -> Result<Process> {
        self.start_inner(f, |name| {
            let alone = wait_alone(&name)?;
            crate::sys::proc::fork_alone_pidfd(alone, TakePidfd::Always)
                .map_err(|e| Error::sys("fork", name, e))
        })
    }

    /// [`Builder::start`] with `fork` as the way to fork (checked or not).
    pub(crate) fn start_with<F: FnOnce() -> i32>(
        self,
        f: F,
        fork: impl FnOnce(&str) -> Result<Fork>,
    ) -> Result<Process> {
        self.start_inner(f, |name| fork(name).map(|f| (f, None)))
    }

    /// [`Builder::start`] with `fork` as the way to fork, returning the
    /// child's pidfd when it took one.
    fn start_inner<F: FnOnce() -> i32>(
        self,
        f: F,
        fork: impl FnOnce(&str) -> Result<(Fork, Option<std::os::fd::OwnedFd>)>,
    ) -> Result<Process> {
        let name = self.name.unwrap_or_else(|| {
            format!(
                "Process-{}",
                PROCESS_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        });
        // Only a child that is to die with its parent checks its parent
        // after arming PDEATHSIG.
        let die_with_parent = self.daemon || children_die_with_parent();
        let parent = if die_with_parent {
            getpid()
        } else {
            Pid::from_raw(0)
        };
        // Everything the child needs is built here, before fork: an
        // allocation in the child would copy the allocator's pages (a
        // copy-on-write fault each), which costs more than the fork itself.
        // The OS name is on the stack, not in a CString: dropping one
        // after the fork wrote to the heap three times (its first byte,
        // the chunk, the allocator's cache), three pages copied in the
        // parent at every start while the child lived.
        let mut comm = [0u8; 16];
        for (dst, b) in comm[..15].iter_mut().zip(name.bytes().filter(|&b| b != 0)) {
            *dst = b;
        }
        match fork(&name)? {
            (Fork::Child, _) => {
                if die_with_parent {
                    die_with(parent);
                }
                if let Ok(comm) = std::ffi::CStr::from_bytes_until_nul(&comm) {
                    let _ = nix::sys::prctl::set_name(comm);
                }
                run_child(f)
            }
            (Fork::Parent(pid), pidfd) => {
                // A pidfd makes signals and timed joins immune to pid reuse.
                // The checked fork took it before anything could reap the
                // child; an unchecked one opens it now, which is as safe
                // while SIGCHLD is at its default. Kernels before 5.3 lack
                // pidfds; then the pid is used, checked before each signal.
                let pidfd = pidfd.or_else(|| {
                    crate::sys::proc::sigchld_reaping()
                        .is_ok_and(|r| r == Reaping::Waited)
                        .then(|| crate::sys::proc::pidfd_open(pid).ok())
                        .flatten()
                });
                let child = match pidfd {
                    Some(fd) => Child::with_pidfd(pid, Some(fd)),
                    None => Child::new(pid),
                };
                Ok(Process {
                    name,
                    child,
                    daemon: self.daemon,
                })
            }
        }
    }
}

/// A child process running a closure: Python's `multiprocessing.Process`.
///
/// It holds a pidfd (where the kernel has them) and signals and waits
/// through it. One dropped without a [`Process::join`] is killed (SIGKILL)
/// and reaped by its [`Child`]: a drop never leaves a zombie or a stray
/// process behind.
///
/// ```no_run
/// use posixkit::process::Builder;
/// let mut p = Builder::new().name("Worker").start(|| 3).unwrap();
/// let status = p.join(None).unwrap().unwrap();
/// assert_eq!(p.exitcode(), Some(3));
/// ```
#[derive(Debug)]
pub struct Process {
    name: String,
    /// The pid and, once reaped, the status.
    child: Child,
    daemon: bool,
}

impl Process {
    /// The name given at start (default `Process-N`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.child.pid()
    }

    /// Whether it dies with its parent.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// Whether it still runs. Reaps it (exactly this pid, WNOHANG) if it has
    /// ended, as Python's `is_alive` does.
    pub fn is_alive(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// Wait for the child to end, at most `timeout` (forever with `None`),
    /// and reap it. `Ok(None)` when the timeout passed first. The wait is a
    /// poll(2) on a pidfd, so it never reaps any other child.
    pub fn join(&mut self, timeout: Option<std::time::Duration>) -> Result<Option<Status>> {
        if let Some(s) = self.child.status() {
            return Ok(Some(s));
        }
        // A timeout too large for the clock waits for ever.
        let timeout = timeout.filter(|&t| deadline_after(t).is_some());
        if let (Some(fd), Some(t)) = (self.child.pidfd(), timeout) {
            if !pidfd_wait(fd, t)? {
                return Ok(None);
            }
        } else if let Some(t) = timeout {
            // No pidfd: poll WNOHANG with a short sleep until the deadline.
            let deadline = deadline_after(t).expect("filtered above");
            while self.is_alive()? {
                if std::time::Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            return Ok(self.child.status());
        }
        self.child.wait().map(Some)
    }

    /// Python's `exitcode`: `None` while running (or not yet joined), N after
    /// `exit(N)`, -N after death by signal N.
    pub fn exitcode(&self) -> Option<i32> {
        self.status().map(|s| s.exitcode())
    }

    /// The decoded status once reaped.
    pub fn status(&self) -> Option<Status> {
        self.child.status()
    }

    /// Send SIGTERM (Python's `terminate`). Does nothing once reaped.
    pub fn terminate(&self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Send SIGKILL (Python's `kill`). Does nothing once reaped.
    pub fn kill(&self) -> Result<()> {
        self.signal(Signal::SIGKILL)
    }

    /// Send `sig` through the pidfd (immune to pid reuse), or by pid where
    /// pidfds are missing, checked as [`Child::signal`] does. Does nothing
    /// once the child has been reaped.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        self.child.signal(sig)
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
