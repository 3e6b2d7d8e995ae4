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

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
pub use nix::unistd::Pid;

use crate::error::{Error, ErrorKind, Result};
use crate::status::Status;
pub use crate::sys::proc::{_exit, Fork, fork_unchecked};

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
    let alone = wait_alone(&what)?;
    crate::sys::proc::fork_alone(alone).map_err(|e| Error::sys("fork", what, e))
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

/// Wait for every child in `children`, in order, and reap it; the first one
/// that did not exit 0, with its status, or `None` when all did. A failure
/// does not stop the waiting: every child is reaped.
///
/// ```
/// use posixkit::process::{self, Child, Fork};
/// use posixkit::status::Status;
/// let mut children = Vec::new();
/// for code in [0, 3, 5] {
///     match process::fork().unwrap() {
///         Fork::Child => process::_exit(code),
///         Fork::Parent(pid) => children.push(Child::new(pid)),
///     }
/// }
/// let failed = process::wait_all(&mut children).unwrap();
/// assert_eq!(failed, Some((children[1].pid(), Status::Exited(3))));
/// assert!(children.iter().all(|c| c.status().is_some()), "all reaped");
/// ```
pub fn wait_all(children: &mut [Child]) -> Result<Option<(Pid, Status)>> {
    let mut failed = None;
    for child in children {
        let status = child.wait()?;
        if !status.success() && failed.is_none() {
            failed = Some((child.pid(), status));
        }
    }
    Ok(failed)
}

/// A group of forked children that are reaped together: the "fork N
/// children, then wait for them all" of every multi-process lesson.
///
/// [`Children::fork`] forks one (checked, as [`fork`]) and keeps its
/// [`Child`] in the parent; [`Children::start`] forks one that runs a
/// closure for its whole life ([`run_child`]). [`Children::wait_all`] reaps
/// every one, in order, whatever failed. A group dropped unreaped (an error
/// path) kills and reaps its children, as each [`Child`] does.
///
/// ```
/// use posixkit::process::Children;
/// let mut group = Children::new();
/// for code in [0, 3, 0] {
///     group.start("child", move || code).unwrap();
/// }
/// let failed = group.wait_all().unwrap();
/// assert_eq!(failed.map(|(_, s)| s.shell_code()), Some(3));
/// ```
#[derive(Debug, Default)]
pub struct Children {
    children: Vec<Child>,
}

impl Children {
    /// An empty group.
    pub fn new() -> Self {
        Children::default()
    }

    /// Fork one child (checked, see [`fork`]), naming it `what` in an
    /// error. In the parent its [`Child`] joins the group; the child gets
    /// [`Fork::Child`] and must end with [`_exit`] or exec.
    pub fn fork(&mut self, what: impl std::fmt::Display) -> Result<Fork> {
        let fork = fork_named(what)?;
        if let Fork::Parent(pid) = fork {
            self.children.push(Child::new(pid));
        }
        Ok(fork)
    }

    /// Fork one child that runs `f` and exits with its code (101 if it
    /// panics, see [`run_child`]); its pid, in the parent. `f` runs only
    /// in the child: anything it owns is dropped unused in the parent, so
    /// give it references to what the parent keeps.
    pub fn start(&mut self, what: impl std::fmt::Display, f: impl FnOnce() -> i32) -> Result<Pid> {
        match self.fork(what)? {
            Fork::Child => run_child(f),
            Fork::Parent(pid) => Ok(pid),
        }
    }

    /// Wait for every child, in the order they were forked, and reap it:
    /// the first one that did not exit 0, with its status, or `None` when
    /// all did (see [`wait_all`]).
    pub fn wait_all(&mut self) -> Result<Option<(Pid, Status)>> {
        wait_all(&mut self.children)
    }

    /// The `i`th child forked.
    pub fn get(&self, i: usize) -> Option<&Child> {
        self.children.get(i)
    }

    /// The children, in the order they were forked.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Child> {
        self.children.iter_mut()
    }

    /// The children, in the order they were forked.
    pub fn iter(&self) -> std::slice::Iter<'_, Child> {
        self.children.iter()
    }

    /// How many were forked.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether none was forked.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }
}

impl<'a> IntoIterator for &'a mut Children {
    type Item = &'a mut Child;
    type IntoIter = std::slice::IterMut<'a, Child>;
    fn into_iter(self) -> Self::IntoIter {
        self.children.iter_mut()
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
        self.start_with(f, |name| {
            let alone = wait_alone(&name)?;
            crate::sys::proc::fork_alone(alone).map_err(|e| Error::sys("fork", name, e))
        })
    }

    /// [`Builder::start`] with `fork` as the way to fork (checked or not).
    pub(crate) fn start_with<F: FnOnce() -> i32>(
        self,
        f: F,
        fork: impl FnOnce(&str) -> Result<Fork>,
    ) -> Result<Process> {
        let name = self.name.unwrap_or_else(|| {
            format!(
                "Process-{}",
                PROCESS_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        });
        // Only a daemon checks its parent after arming PDEATHSIG.
        let parent = if self.daemon {
            getpid()
        } else {
            Pid::from_raw(0)
        };
        // Everything the child needs is built here, before fork: an
        // allocation in the child would copy the allocator's pages (a
        // copy-on-write fault each), which costs more than the fork itself.
        let comm = std::ffi::CString::new(
            name.bytes()
                .take(15)
                .filter(|&b| b != 0)
                .collect::<Vec<u8>>(),
        )
        .ok();
        match fork(&name)? {
            Fork::Child => {
                if self.daemon
                    && !crate::sys::proc::arm_death_signal(libc::SIGKILL, parent.as_raw())
                {
                    // The parent died before the death signal was armed: die
                    // the way the signal would have made us die.
                    let _ = die_of(Signal::SIGKILL);
                    _exit(1);
                }
                if let Some(comm) = &comm {
                    let _ = nix::sys::prctl::set_name(comm);
                }
                run_child(f)
            }
            Fork::Parent(pid) => {
                // A pidfd makes signals and timed joins immune to pid reuse.
                // Kernels before 5.3 lack it; then we fall back to the pid.
                let pidfd = crate::sys::proc::pidfd_open(pid).ok();
                Ok(Process {
                    name,
                    child: Child::new(pid),
                    daemon: self.daemon,
                    pidfd,
                })
            }
        }
    }
}

/// A child process running a closure: Python's `multiprocessing.Process`.
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
    pidfd: Option<std::os::fd::OwnedFd>,
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
        if let (Some(fd), Some(t)) = (&self.pidfd, timeout) {
            use std::os::fd::AsFd;
            if !pidfd_wait(fd.as_fd(), t)? {
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

    /// Send `sig` through the pidfd (immune to pid reuse), or kill(2) where
    /// pidfds are missing. Does nothing once the child has been reaped.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        if self.status().is_some() {
            return Ok(());
        }
        match &self.pidfd {
            Some(fd) => {
                use std::os::fd::AsFd;
                crate::sys::proc::pidfd_send_signal(fd.as_fd(), sig)
                    .map_err(|e| Error::sys("pidfd_send_signal", self.pid(), e))
            }
            None => kill(self.pid(), sig),
        }
    }
}

/// A child not joined is killed (SIGKILL) and reaped: dropping never blocks
/// and never leaves a zombie or a stray process behind. Its [`Child`] would
/// do the same by pid; this does it through the pidfd first, immune to pid
/// reuse, and the `Child` then has nothing left to do.
impl Drop for Process {
    fn drop(&mut self) {
        if self.status().is_none() {
            let _ = self.kill();
            let _ = self.join(None);
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
