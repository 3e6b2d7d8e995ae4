//! [`Process`], Python's `multiprocessing.Process`, and the [`Builder`]
//! that starts one: a name, `daemon` with Python's meaning, and
//! `die_with_parent`, the stronger guarantee of PR_SET_PDEATHSIG.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::owner::Owner;
use super::registry::{self, Entry};
use super::{
    Child, Pid, TakePidfd, children_die_with_parent, deadline_after, run_fresh_child, wait_alone,
};
use crate::error::{Error, ErrorKind, Result};
use crate::status::Status;
use crate::sys::proc::{Fork, Reaping};

static PROCESS_COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Whether this process is a daemonic [`Process`] (set in the child by
/// [`Builder::start`]).
static DAEMONIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process is a daemonic [`Process`], started with
/// `daemon(true)`: Python's `current_process().daemon`. Such a process may
/// not start children of its own ([`Builder::start`] refuses).
pub fn is_daemon() -> bool {
    DAEMONIC.load(std::sync::atomic::Ordering::Relaxed)
}

/// How to start a [`Process`]: its name, whether it is a daemon (Python's
/// meaning), whether it dies with its parent, and what a drop does.
///
/// | | `daemon(true)` | `die_with_parent(true)` | neither |
/// |---|---|---|---|
/// | the parent ends normally ([`join_children`](super::join_children); a `Process` closure that returns) | terminated (SIGTERM), then reaped | waited for | waited for |
/// | the parent is SIGKILLed or crashes | lives on (re-parented to init) | SIGKILL at once (PR_SET_PDEATHSIG) | lives on |
/// | may start children | no: [`ErrorKind::DaemonicParent`] | yes | yes |
///
/// The two flags combine. `die_with_parent` defaults to
/// [`set_children_die_with_parent`](super::set_children_die_with_parent)'s
/// process-wide setting; the `pk-*` binaries turn that on.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<Cow<'static, str>>,
    daemon: bool,
    die_with_parent: Option<bool>,
    kill_on_drop: bool,
}

impl Builder {
    /// A builder with the default name (`Process-N`), daemon off,
    /// die-with-parent as [`children_die_with_parent`] says, and a drop
    /// that leaves the child to [`join_children`](super::join_children).
    pub fn new() -> Self {
        Builder::default()
    }

    /// The process's name; also set as its kernel name (first 15 bytes,
    /// shown by `ps` and in /proc/PID/comm). A `&'static str` or a
    /// `String`: a literal name costs no allocation.
    #[must_use]
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Python's `daemon=True`: when the parent ends normally — it calls
    /// [`join_children`](super::join_children), or it is itself a
    /// `Process` whose closure returned — a daemon is terminated (SIGTERM)
    /// and reaped, where a non-daemon is waited for. A daemon may not
    /// start children of its own. It does *not* die when its parent is
    /// killed: a SIGKILLed parent runs no code, and its daemons live on,
    /// re-parented to init, as Python's do. For that, see
    /// [`Builder::die_with_parent`].
    #[must_use]
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// The stronger guarantee: the child is sent SIGKILL when its parent
    /// dies, however it dies, SIGKILL included (PR_SET_PDEATHSIG, armed in
    /// the child right after the fork; a child whose parent died before
    /// that dies at once). Overrides
    /// [`set_children_die_with_parent`](super::set_children_die_with_parent)
    /// for this child, either way.
    ///
    /// PR_SET_PDEATHSIG fires when the *thread* that forked ends, not the
    /// whole parent process: start such children from a thread that lives
    /// as long as they should.
    #[must_use]
    pub fn die_with_parent(mut self, on: bool) -> Self {
        self.die_with_parent = Some(on);
        self
    }

    /// Kill (SIGKILL) and reap the child when its [`Process`] is dropped
    /// before it was reaped, as the drop of a [`Child`] does. Off by
    /// default: a dropped `Process` is left running, and
    /// [`join_children`](super::join_children) waits for it (or terminates
    /// it, for a daemon). Turn it on for a child that waits for its
    /// parent (a pipe, a semaphore), so an early return on an error path
    /// cannot leave it waiting for ever.
    #[must_use]
    pub fn kill_on_drop(mut self, on: bool) -> Self {
        self.kill_on_drop = on;
        self
    }

    /// Fork a child that runs `f` and exits with the code `f` returns (a
    /// panic in `f` exits 101, see [`run_child`](super::run_child)). The fork is
    /// [`fork`](super::fork)'s: refused while other threads run. Refused,
    /// with an error of kind [`ErrorKind::DaemonicParent`], in a daemonic
    /// process (Python's `AssertionError: daemonic processes are not
    /// allowed to have children`).
    ///
    /// Before forking, children whose `Process` was dropped and that have
    /// ended are reaped (Python does the same at each start), so dropped
    /// processes do not pile up as zombies.
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
            Cow::Owned(format!(
                "Process-{}",
                PROCESS_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ))
        });
        if is_daemon() {
            return Err(Error::new(
                ErrorKind::DaemonicParent,
                "fork",
                name,
                "daemonic processes are not allowed to have children",
            ));
        }
        let owner = Owner::me();
        let parent = owner.pid();
        registry::reap_dropped(parent);
        let die_with_parent = self
            .die_with_parent
            .unwrap_or_else(children_die_with_parent);
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
                // Only a child that is to die with its parent checks its
                // parent after arming PDEATHSIG. Everything the child does
                // before `f` is in child_prologue: each function of the
                // program's code the child runs costs it a page fault.
                let watch = die_with_parent.then_some(parent.as_raw());
                if !crate::sys::proc::child_prologue(watch, &comm) {
                    let _ = super::die_of(Signal::SIGKILL);
                    super::_exit(1);
                }
                // It was false here (a daemonic parent starts no child):
                // written only to change it, since every page a child
                // writes is copied first.
                if self.daemon {
                    DAEMONIC.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                run_fresh_child(f)
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
                    Some(_) => Child::with_pidfd(pid, None),
                    None => Child::new(pid),
                };
                let entry = Entry::new(name, pid, self.daemon, pidfd, child);
                let entry = registry::register(entry, parent);
                Ok(Process {
                    entry: Some(entry),
                    die_with_parent,
                    kill_on_drop: self.kill_on_drop,
                    owner,
                    listed: true,
                })
            }
        }
    }
}

/// A child process running a closure: Python's `multiprocessing.Process`.
///
/// It holds a pidfd (where the kernel has them) and signals and waits
/// through it. Dropping one that was not reaped neither blocks nor kills
/// (unless [`Builder::kill_on_drop`]): the child runs on, and
/// [`join_children`](super::join_children) — the end of a normal exit —
/// waits for it, or terminates it if it is a daemon; the next
/// [`Builder::start`] reaps it if it has ended. A `Process` that a forked
/// child inherited is never signalled or waited for by that child: there
/// its signals do nothing, and `join` and `is_alive` fail with ECHILD.
///
/// ```no_run
/// use posixkit::process::Builder;
/// let mut p = Builder::new().name("Worker").start(|| 3).unwrap();
/// let status = p.join(None).unwrap().unwrap();
/// assert_eq!(p.exitcode(), Some(3));
/// ```
#[derive(Debug)]
pub struct Process {
    /// Name, pid, daemon flag and the [`Child`], shared with the registry
    /// that [`join_children`](super::join_children) walks. Always there:
    /// taken only by the drop, to keep for the next start.
    entry: Option<Arc<Entry>>,
    die_with_parent: bool,
    kill_on_drop: bool,
    /// The process that started it: only there is it a child.
    owner: Owner,
    /// Still in the registry (not yet reaped through this handle).
    listed: bool,
}

impl Process {
    fn entry(&self) -> &Arc<Entry> {
        self.entry
            .as_ref()
            .expect("a Process has its entry until dropped")
    }

    /// The name given at start (default `Process-N`).
    pub fn name(&self) -> &str {
        &self.entry().name
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.entry().pid
    }

    /// Whether it is a daemon in Python's sense (see [`Builder::daemon`]).
    pub fn daemon(&self) -> bool {
        self.entry().daemon
    }

    /// Whether it was started to die with its parent (see
    /// [`Builder::die_with_parent`]).
    pub fn die_with_parent(&self) -> bool {
        self.die_with_parent
    }

    /// Whether it still runs. Reaps it (exactly this pid, WNOHANG) if it has
    /// ended, as Python's `is_alive` does.
    pub fn is_alive(&mut self) -> Result<bool> {
        self.owned("is_alive")?;
        let alive = self.entry().try_wait()?.is_none();
        if !alive {
            self.unlist();
        }
        Ok(alive)
    }

    /// Wait for the child to end, at most `timeout` (forever with `None`),
    /// and reap it. `Ok(None)` when the timeout passed first. The wait is a
    /// poll(2) on a pidfd, so it never reaps any other child (without
    /// pidfds, before Linux 5.3, a waitid(2) on exactly this pid).
    pub fn join(&mut self, timeout: Option<Duration>) -> Result<Option<Status>> {
        self.owned("join")?;
        let r = self.entry().join(timeout);
        if let Ok(Some(_)) = r {
            self.unlist();
        }
        r
    }

    /// ECHILD for `call` in a process that inherited this handle through a
    /// fork: the child is its sibling (or itself), not its child, and a
    /// wait on it would wait for its end only to fail.
    fn owned(&self, call: &'static str) -> Result<()> {
        if self.owner.is_me() {
            Ok(())
        } else {
            Err(Error::sys(call, self.pid(), nix::errno::Errno::ECHILD))
        }
    }

    /// Take it out of the registry, once reaped.
    fn unlist(&mut self) {
        if std::mem::take(&mut self.listed) {
            registry::unregister(self.entry(), self.owner.pid());
        }
    }

    /// Python's `exitcode`: `None` while running (or not yet joined), N after
    /// `exit(N)`, -N after death by signal N.
    pub fn exitcode(&self) -> Option<i32> {
        self.status().map(|s| s.exitcode())
    }

    /// The decoded status once reaped.
    pub fn status(&self) -> Option<Status> {
        self.entry().child().status()
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
    /// once the child has been reaped, or in a process that inherited this
    /// handle through a fork.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        self.entry().signal(sig)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.owner.is_me() {
            // A copy in a forked child (dropped as a closure ends): not its
            // child to signal or to wait for.
            self.entry().child().disown();
            return;
        }
        let entry = self.entry();
        if self.kill_on_drop && !entry.child().settled() {
            let _ = entry.signal(Signal::SIGKILL);
            let _ = entry.wait();
        }
        if entry.child().settled() {
            self.unlist();
            // Reaped and out of the registry: its entry serves the next
            // start (see registry::recycle).
            if let Some(entry) = self.entry.take() {
                registry::recycle(entry, self.owner.pid());
            }
        }
        // Otherwise it stays registered: join_children, or the next start
        // once it has ended, reaps it.
    }
}

/// How [`Entry::join`] waits for the child to end before reaping it.
pub(super) fn wait_then_reap(entry: &Entry, timeout: Option<Duration>) -> Result<Option<Status>> {
    // A timeout too large for the clock waits for ever.
    let timeout = timeout.filter(|&t| deadline_after(t).is_some());
    let shared = {
        let child = entry.child();
        if let Some(s) = child.status() {
            return Ok(Some(s));
        }
        // Only a Child that took its own pidfd (Child::new) shares one;
        // the entry's is borrowed, the entry being held.
        match entry.pidfd() {
            Some(_) => None,
            None => child.pidfd_shared(),
        }
    };
    let pidfd = {
        use std::os::fd::AsFd;
        entry.pidfd().or(shared.as_deref().map(|fd| fd.as_fd()))
    };
    // The waits below hold no lock on the Child, so terminate() or
    // join_children() from another thread reach it meanwhile.
    match (pidfd, timeout) {
        (Some(fd), None) => {
            // A look first, before a sleep whose wake-up costs more than
            // the child's exit often takes (see `crate::spin`).
            crate::spin::readable(fd, None, crate::spin::JOIN);
            // Wait for its end without reaping it (WNOWAIT), as below but
            // through the pidfd: a blocking waitid costs less than a poll
            // and then the waitid (about 2 µs a join). A kernel without
            // P_PIDFD (Linux 5.3) says EINVAL: then the poll.
            loop {
                match crate::sys::proc::waitid_raw(entry.pid, Some(fd), false, true) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::EINVAL) => {
                        super::pidfd_wait(fd, Duration::MAX)?;
                    }
                    // An error is left for the reaping wait to report.
                    _ => {}
                }
                break;
            }
        }
        (Some(fd), Some(t)) => {
            if !super::pidfd_wait(fd, t)? {
                return Ok(None);
            }
        }
        (None, Some(t)) => {
            // No pidfd: poll WNOHANG with a short sleep until the deadline.
            let deadline = deadline_after(t).expect("filtered above");
            loop {
                if let Some(s) = entry.try_wait()? {
                    return Ok(Some(s));
                }
                if std::time::Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        (None, None) => {
            // Wait for its end without reaping it (WNOWAIT), then reap it
            // under the lock; an error is left for the reaping wait to report.
            while let Err(nix::errno::Errno::EINTR) =
                crate::sys::proc::waitid_raw(entry.pid, None, false, true)
            {}
        }
    }
    entry.wait().map(Some)
}
