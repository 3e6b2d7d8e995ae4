//! [`Child`], one forked child that is always reaped, and [`Children`], a
//! group of them: the parent's side of every fork the library makes.

use nix::errno::Errno;
use nix::sys::signal::Signal;

use super::{Pid, TakePidfd, checked_fork, kill};
use crate::error::{Error, ErrorKind, Result};
use crate::status::Status;
use crate::sys::proc::{Fork, Reaping};

/// A forked child that this process must reap.
///
/// [`Child::wait`] reaps it. If a `Child` is dropped unreaped (an early
/// return on an error path), the drop kills it with SIGKILL and reaps it, so
/// no error path leaves a zombie or a stray process behind. A forked child
/// holds copies of these handles but ends with `_exit`, which runs no
/// destructors, so it never kills its siblings.
///
/// It never signals a process that is not this child: where something
/// besides this `Child` may reap it (SIGCHLD ignored or handled, see
/// "When SIGCHLD is ignored" in the [module documentation](super)) it holds
/// a pidfd and signals and waits through it; otherwise the child stays a
/// zombie holding its pid until this `Child` reaps it. Either way a signal
/// is sent only after checking that the child is still an unreaped child
/// of this process. A child reaped by someone else (ECHILD) is never
/// signalled again.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    /// Shared (an `Arc`) so that a [`Process`](super::Process) can wait on
    /// it without holding the lock around its `Child`.
    pidfd: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    status: Option<Status>,
    /// Reaped by someone else: nothing left to wait for or to signal.
    lost: bool,
}

impl Child {
    /// Take charge of an already-forked child. Call it right after the
    /// fork: when SIGCHLD is ignored or handled, it opens a pidfd for `pid`
    /// and keeps it only if `pid` is still an unreaped child of this
    /// process (a child already reaped is taken as lost). [`Children`]
    /// does better: it takes the pidfd in the same instant as the fork.
    /// A pid of 0 or less names no child (kill(2) and waitpid(2) would take
    /// it for a process group, or for every process): such a `Child` never
    /// signals or reaps anything, and its signals and waits fail with
    /// EINVAL.
    pub fn new(pid: Pid) -> Self {
        let mut child = Child {
            pid,
            pidfd: None,
            status: None,
            lost: false,
        };
        if crate::sys::proc::sigchld_reaping().is_ok_and(|r| r == Reaping::Waited) {
            return child;
        }
        match crate::sys::proc::pidfd_open(pid) {
            Ok(fd) => {
                use std::os::fd::AsFd;
                match crate::sys::proc::waitid_raw(pid, Some(fd.as_fd()), true, true) {
                    Ok(_) => child.pidfd = Some(std::sync::Arc::new(fd)),
                    Err(Errno::ECHILD) => child.lost = true,
                    Err(_) => {}
                }
            }
            Err(Errno::ESRCH) => child.lost = true,
            Err(_) => {}
        }
        child
    }

    /// Take charge of a child forked with `pidfd` referring to it (taken
    /// before anything could reap it).
    pub(crate) fn with_pidfd(pid: Pid, pidfd: Option<std::os::fd::OwnedFd>) -> Self {
        Child {
            pid,
            pidfd: pidfd.map(std::sync::Arc::new),
            status: None,
            lost: false,
        }
    }

    /// The pidfd, shared, for a wait that must not hold a borrow of this
    /// `Child` (see [`Process::join`](super::Process::join)).
    pub(super) fn pidfd_shared(&self) -> Option<std::sync::Arc<std::os::fd::OwnedFd>> {
        self.pidfd.clone()
    }

    /// Whether nothing is left to wait for: reaped, by us or by someone else.
    pub(super) fn settled(&self) -> bool {
        self.status.is_some() || self.lost
    }

    /// Give this child up without a signal or a wait: for a copy that a
    /// forked process inherited from its parent, where the pid is not its
    /// child. Its pidfd is closed (unless shared) and its drop does nothing.
    pub(super) fn disown(&mut self) {
        self.pidfd = None;
        self.lost = true;
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The pidfd this `Child` signals and waits through, if it holds one
    /// (see [`Child`]).
    pub fn pidfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.pidfd.as_deref().map(|fd| fd.as_fd())
    }

    /// Wait for the child to end and reap it; later calls return the same
    /// status. EINTR is retried. A child reaped by someone else (ECHILD:
    /// SIGCHLD ignored, or a `waitpid(-1)` elsewhere) is an error of kind
    /// [`ErrorKind::Os`] saying its status is lost, returned once it has
    /// ended.
    pub fn wait(&mut self) -> Result<Status> {
        loop {
            match self.reap(false)? {
                Some(s) => return Ok(s),
                None => continue,
            }
        }
    }

    /// Reap the child if it has ended; `None` while it runs. An error as
    /// for [`Child::wait`].
    pub fn try_wait(&mut self) -> Result<Option<Status>> {
        self.reap(true)
    }

    fn reap(&mut self, nohang: bool) -> Result<Option<Status>> {
        self.reap_with(None, nohang)
    }

    /// [`Child::try_wait`] (`nohang`) or one wait, through `pidfd` when
    /// given (the child's pidfd, held by its owner instead of this
    /// `Child`), else through this `Child`'s own.
    pub(crate) fn reap_with(
        &mut self,
        pidfd: Option<std::os::fd::BorrowedFd<'_>>,
        nohang: bool,
    ) -> Result<Option<Status>> {
        use std::os::fd::AsFd;
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        if self.lost {
            return Err(self.lost_error());
        }
        if self.pid.as_raw() <= 0 {
            // waitpid(2) would take it for a process group (or any child)
            // and reap a child that is not this one.
            return Err(Error::sys("waitpid", self.pid, Errno::EINVAL));
        }
        let own = match pidfd {
            Some(_) => None,
            None => self.pidfd.clone(),
        };
        let pidfd = pidfd.or(own.as_deref().map(|fd| fd.as_fd()));
        loop {
            let r = match pidfd {
                Some(fd) => {
                    match crate::sys::proc::waitid_raw(self.pid, Some(fd), nohang, false) {
                        // No P_PIDFD (Linux before 5.4): wait by pid.
                        Err(Errno::EINVAL) => crate::sys::proc::waitpid_raw(self.pid, nohang),
                        r => r,
                    }
                }
                None => crate::sys::proc::waitpid_raw(self.pid, nohang),
            };
            match r {
                Ok(raw) => {
                    self.status = raw.map(Status::from_raw);
                    return Ok(self.status);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => {
                    self.lost = true;
                    return Err(self.lost_error());
                }
                Err(e) => return Err(Error::sys("waitpid", self.pid, e)),
            }
        }
    }

    fn lost_error(&self) -> Error {
        Error::new(
            ErrorKind::Os,
            "waitpid",
            self.pid,
            "No child processes: it was reaped before its status was read \
             (SIGCHLD ignored, or a wait for any child elsewhere); its exit status is lost",
        )
    }

    /// The status once reaped.
    pub fn status(&self) -> Option<Status> {
        self.status
    }

    /// Send `sig` to the child, and to no other process: once it is checked
    /// to be still an unreaped child of this process, through its pidfd if
    /// it holds one, else by pid. Does nothing once the child has been
    /// reaped, by this `Child` or by anyone else, or in a copy of this
    /// `Child` that a forked process inherited (the child is its sibling);
    /// an error for a pid of 0 or less, which names no child.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        self.signal_with(None, sig)
    }

    /// [`Child::signal`], through `pidfd` when given (see
    /// [`Child::reap_with`]), else through this `Child`'s own.
    pub(crate) fn signal_with(
        &self,
        pidfd: Option<std::os::fd::BorrowedFd<'_>>,
        sig: Signal,
    ) -> Result<()> {
        if self.status.is_some() || self.lost {
            return Ok(());
        }
        let pidfd = pidfd.or_else(|| self.pidfd());
        // Only an unreaped child of this process is signalled, pidfd or
        // not: a copy of this Child that a forked process inherited holds
        // its sibling's pidfd, and a pid of 0 or less names no child but
        // a process group, or every process kill(2) can reach.
        if self.pid.as_raw() <= 0 {
            return Err(Error::sys("kill", self.pid, Errno::EINVAL));
        }
        let check = match crate::sys::proc::waitid_raw(self.pid, pidfd, true, true) {
            // No P_PIDFD (Linux 5.3 has pidfds, not waitid on them): ask by
            // pid whether it is a child of ours; the signal still goes
            // through the pidfd, which names this process alone.
            Err(Errno::EINVAL) if pidfd.is_some() => {
                crate::sys::proc::waitid_raw(self.pid, None, true, true)
            }
            r => r,
        };
        match check {
            Ok(_) => {}
            // Not (or no longer) a child of ours: its pid may name a stranger.
            Err(Errno::ECHILD) => return Ok(()),
            Err(e) => return Err(Error::sys("waitid", self.pid, e)),
        }
        match pidfd {
            Some(fd) => match crate::sys::proc::pidfd_send_signal(fd, sig) {
                // Reaped already: nothing to signal.
                Ok(()) | Err(Errno::ESRCH) => Ok(()),
                Err(e) => Err(Error::sys("pidfd_send_signal", self.pid, e)),
            },
            None => kill(self.pid, sig),
        }
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
/// [`Children::fork`] forks one (checked, as [`fork`](super::fork)) and keeps its
/// [`Child`] in the parent; [`Children::start`] forks one that runs a
/// closure for its whole life ([`run_child`](super::run_child)). [`Children::wait_all`] reaps
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

    /// Fork one child (checked, see [`fork`](super::fork)), naming it `what` in an
    /// error. In the parent its [`Child`] joins the group; the child gets
    /// [`Fork::Child`] and must end with [`_exit`](super::_exit) or exec.
    ///
    /// When SIGCHLD is ignored or has a handler, the new [`Child`] holds a
    /// pidfd taken before anything could reap the child (see the [module
    /// documentation](super)); in the child, the copies of its siblings'
    /// pidfds are closed.
    pub fn fork(&mut self, what: impl std::fmt::Display) -> Result<Fork> {
        let (fork, pidfd) = checked_fork(&what, TakePidfd::IfOthersReap)?;
        match fork {
            Fork::Parent(pid) => self.children.push(Child::with_pidfd(pid, pidfd)),
            Fork::Child => {
                for sibling in &mut self.children {
                    sibling.pidfd = None;
                }
            }
        }
        Ok(fork)
    }

    /// Fork one child that runs `f` and exits with its code (101 if it
    /// panics, see [`run_child`](super::run_child)); its pid, in the parent. `f` runs only
    /// in the child: anything it owns is dropped unused in the parent, so
    /// give it references to what the parent keeps.
    pub fn start(&mut self, what: impl std::fmt::Display, f: impl FnOnce() -> i32) -> Result<Pid> {
        match self.fork(what)? {
            Fork::Child => super::run_fresh_child(f),
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
        if self.status.is_none() && !self.lost {
            let _ = self.signal(Signal::SIGKILL);
            let _ = self.wait();
        }
    }
}
