//! A started program: its pid, the parent's ends of its pipes, and the one
//! poll(2) loop that feeds its input, drains its output and watches it end.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::process::{Child, Pid};
use crate::status::Status;
use crate::sys::spawn::fds::SpawnFd;

/// Bytes moved per read or write.
const CHUNK: usize = 64 * 1024;

/// Without a pidfd (kernels before 5.3), how often the loop looks whether
/// the child has ended.
const CHILD_POLL: Duration = Duration::from_millis(10);

/// What ended a [`Running::wait_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The child has ended and been reaped, and its output pipes are at end
    /// of file.
    Exited(Status),
    /// The deadline passed first.
    Deadline,
    /// The wake descriptor became readable.
    Woken,
}

/// A started program ([`Spawn::start`](super::Spawn::start)). Dropped
/// before it has been reaped, it is killed (SIGKILL, to its whole process
/// group when it has one) and reaped, so no error path leaves a stray
/// process or a zombie. Only the process that started it signals or
/// reaps it: a copy that a forked process inherited, dropped there as
/// the forked process ends its scope, leaves the program alone.
#[derive(Debug)]
pub struct Running {
    child: Child,
    name: String,
    group: Option<Pid>,
    /// The child's pidfd, taken at the start (see [`take_pidfd`]): every
    /// signal and wait goes through it. `None` without one (pidfd_open
    /// failed: a kernel before 5.3, or no descriptor left), or once the
    /// child has been reaped.
    pidfd: Option<OwnedFd>,
    input: Option<(SpawnFd, Vec<u8>, usize)>,
    outputs: [Option<SpawnFd>; 2],
    collected: [Vec<u8>; 2],
    /// How long the pipes are still read once the child has been reaped
    /// (`None`: until end of file).
    linger: Option<Duration>,
    /// When the child was first seen reaped with a pipe still open.
    reaped_at: Option<Instant>,
}

/// One descriptor in the poll set.
#[derive(Clone, Copy)]
enum Slot {
    Input,
    Output(usize),
    Child,
    Wake,
}

impl Running {
    pub(super) fn new(
        child: Child,
        name: String,
        group: Option<Pid>,
        input: Option<(SpawnFd, Vec<u8>)>,
        outputs: [Option<SpawnFd>; 2],
    ) -> Running {
        Running {
            pidfd: take_pidfd(&child),
            child,
            name,
            group,
            input: input.map(|(w, bytes)| (w, bytes, 0)),
            outputs,
            collected: [Vec::new(), Vec::new()],
            linger: None,
            reaped_at: None,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.child.pid()
    }

    /// The program name.
    pub fn program(&self) -> &str {
        &self.name
    }

    /// The process group that [`Running::signal`] signals: the child's own
    /// ([`Spawn::process_group`](super::Spawn::process_group)), or `None`
    /// when signals go to the child alone.
    pub fn process_group(&self) -> Option<Pid> {
        self.group
    }

    /// How the child ended, once reaped.
    pub fn status(&self) -> Option<Status> {
        self.child.status()
    }

    /// Send `sig` to the child's process group (see
    /// [`Running::process_group`]), or to the child alone through its pidfd
    /// (immune to pid reuse) or by pid. Only the process that started it
    /// signals it: the child must still be an unreaped child of the
    /// caller, so a copy inherited through a fork (dropped there, say)
    /// signals nobody. Does nothing once it has been reaped, by this
    /// `Running` or by anyone else; a group whose members are all gone is
    /// not an error.
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if self.child.status().is_some() {
            return Ok(());
        }
        let Some(pgid) = self.group else {
            // The same check as for the group, made by the Child, through
            // the pidfd when there is one.
            return self
                .child
                .signal_with(self.pidfd.as_ref().map(AsFd::as_fd), sig);
        };
        // The group's id stays reserved while its leader is a child of ours
        // not yet reaped. Once something else reaped it (SIGCHLD ignored),
        // the id may name a stranger's group; and in a forked copy the
        // leader is no child of the caller's at all.
        if let Err(Errno::ECHILD) = crate::sys::proc::waitid_raw(self.pid(), None, true, true) {
            return Ok(());
        }
        match nix::sys::signal::killpg(pgid, sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(Error::sys("kill", self.pid(), e)),
        }
    }

    /// Reap the child if it has ended, without blocking (waitpid with
    /// `WNOHANG`); `None` while it runs. Its pipes are left as they are:
    /// for a caller that watches many children at once (SIGCHLD, pidfds)
    /// and started them without captured output.
    pub fn try_wait(&mut self) -> Result<Option<Status>> {
        self.reap(true)
    }

    /// Reap the child through its pidfd when there is one, else by pid
    /// (see [`Child::try_wait`] for the errors); with `nohang`, `None`
    /// while it runs.
    fn reap(&mut self, nohang: bool) -> Result<Option<Status>> {
        let pidfd = self.pidfd.as_ref().map(AsFd::as_fd);
        self.child.reap_with(pidfd, nohang)
    }

    /// Wait for the child to end and its output to reach end of file,
    /// feeding input and draining output meanwhile.
    pub fn wait(&mut self) -> Result<Status> {
        loop {
            if let Event::Exited(s) = self.wait_event(None, None)? {
                return Ok(s);
            }
        }
    }

    /// Feed the input and drain the output until the child has ended (and
    /// been reaped) and its output pipes are at end of file, `deadline`
    /// passes, or `wake` becomes readable (the caller reads it). A signal
    /// that interrupts poll(2) is retried.
    ///
    /// Output still flowing after the child ended (a background grandchild
    /// holding the pipe) is drained until end of file, as
    /// `Popen.communicate` does; [`Running::abandon_output`] stops that,
    /// and so does [`Running::linger_after_exit`] after its grace.
    pub fn wait_event(
        &mut self,
        deadline: Option<Instant>,
        wake: Option<BorrowedFd<'_>>,
    ) -> Result<Event> {
        // A copy inherited through a fork: the library closed its pipe
        // ends in that child, and their numbers may name other files now.
        let stale = self.input.as_ref().is_some_and(|(w, _, _)| !w.current())
            || self.outputs.iter().flatten().any(|r| !r.current());
        if stale {
            return Err(Error::new(
                crate::ErrorKind::Os,
                "wait",
                &self.name,
                "its pipes belong to the process that started it, not to this forked copy",
            ));
        }
        let mut chunk = Vec::new();
        loop {
            let pipes_open = self.pipes_open();
            if let Some(status) = self.child.status() {
                if !pipes_open {
                    return Ok(Event::Exited(status));
                }
                let reaped_at = *self.reaped_at.get_or_insert_with(Instant::now);
                if self
                    .linger
                    // A grace too long for the clock never runs out.
                    .and_then(|grace| reaped_at.checked_add(grace))
                    .is_some_and(|end| Instant::now() >= end)
                {
                    self.abandon_output();
                    return Ok(Event::Exited(status));
                }
            }
            let alive = self.child.status().is_none();
            // Nothing to watch but the child, and no reason to stop early:
            // a plain blocking wait.
            if alive && !pipes_open && deadline.is_none() && wake.is_none() {
                // Without WNOHANG a wait returns only with a status.
                if let Some(status) = self.reap(false)? {
                    return Ok(Event::Exited(status));
                }
                continue;
            }
            // While pipes are open and nothing else is watched, their end of
            // file says when to look at the child.
            let watch_child = alive
                && (!pipes_open || deadline.is_some() || wake.is_some() || self.linger.is_some());

            let mut fds = Vec::with_capacity(5);
            let mut who = Vec::with_capacity(5);
            if let Some((w, _, _)) = &self.input {
                fds.push(PollFd::new(w.as_fd(), PollFlags::POLLOUT));
                who.push(Slot::Input);
            }
            for (i, r) in self.outputs.iter().enumerate() {
                if let Some(r) = r {
                    fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
                    who.push(Slot::Output(i));
                }
            }
            if let (true, Some(p)) = (watch_child, &self.pidfd) {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                who.push(Slot::Child);
            }
            if let Some(w) = wake {
                fds.push(PollFd::new(w, PollFlags::POLLIN));
                who.push(Slot::Wake);
            }
            let no_pidfd = watch_child && self.pidfd.is_none();
            let wait_until = if no_pidfd {
                let look = Instant::now() + CHILD_POLL;
                Some(deadline.map_or(look, |d| d.min(look)))
            } else {
                deadline
            };
            // Once reaped, a lingering read ends at its grace.
            let give_up = self
                .reaped_at
                .zip(self.linger)
                .and_then(|(at, grace)| at.checked_add(grace));
            let wait_until = match (wait_until, give_up) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match poll(&mut fds, crate::process::poll_timeout(wait_until)) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("poll", &self.name, e)),
            };
            let ready: Vec<Slot> = fds
                .iter()
                .zip(&who)
                .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, w)| *w)
                .collect();
            drop(fds);
            if no_pidfd {
                self.reap(true)?;
            }
            let mut woken = false;
            for slot in ready {
                match slot {
                    Slot::Input => self.feed()?,
                    Slot::Output(i) => self.drain(i, &mut chunk)?,
                    Slot::Child => {
                        self.reap(true)?;
                    }
                    Slot::Wake => woken = true,
                }
            }
            if self.child.status().is_some() {
                self.pidfd = None;
            }
            if woken {
                return Ok(Event::Woken);
            }
            // Checked whatever poll returned: pipes that always have data
            // (a child writing faster than it is read) would otherwise keep
            // the deadline from ever being seen. A child that has ended
            // and closed its pipes meanwhile is reported as ended, above.
            let done = self.child.status().is_some() && !self.pipes_open();
            if !done && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Event::Deadline);
            }
        }
    }

    /// Whether a pipe to or from the child is still open here.
    fn pipes_open(&self) -> bool {
        self.input.is_some() || self.outputs.iter().any(Option::is_some)
    }

    /// Once the child has been reaped, read its pipes for at most `grace`
    /// more, then drop them as [`Running::abandon_output`] does: output
    /// already in the pipes is kept, and a grandchild that left the
    /// child's process group but holds a pipe open does not keep
    /// [`Running::wait_event`] waiting. Python's `subprocess.run(timeout=)`
    /// does not read at all after the timeout: it kills the child, waits
    /// for it, and raises with the output read so far. A `grace` too long
    /// for the clock ([`Duration::MAX`]) reads for as long as the pipes
    /// stay open.
    pub fn linger_after_exit(&mut self, grace: Duration) {
        self.linger = Some(grace);
    }

    /// Close the input and output pipes: whatever is still unwritten or
    /// unread is dropped.
    pub fn abandon_output(&mut self) {
        self.input = None;
        self.outputs = [None, None];
    }

    /// What the child wrote to stdout and stderr (when captured), taken out.
    pub fn take_output(&mut self) -> (Vec<u8>, Vec<u8>) {
        let [out, err] = std::mem::take(&mut self.collected);
        (out, err)
    }

    /// The parent's pipe ends, for tests of the fork gate.
    #[cfg(test)]
    pub(super) fn pipe_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.input
            .iter()
            .map(|(w, _, _)| w.as_raw_fd())
            .chain(self.outputs.iter().flatten().map(AsRawFd::as_raw_fd))
            .collect()
    }

    /// What was read from stdout so far, for tests.
    #[cfg(test)]
    pub(super) fn stdout_so_far(&self) -> &[u8] {
        &self.collected[0]
    }

    /// Write the next piece of input, without blocking.
    fn feed(&mut self) -> Result<()> {
        let Some((w, bytes, pos)) = &mut self.input else {
            return Ok(());
        };
        let end = (*pos + CHUNK).min(bytes.len());
        match nix::unistd::write(&*w, &bytes[*pos..end]) {
            Ok(n) => *pos += n,
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            // The child closed its stdin: the rest is not wanted.
            Err(Errno::EPIPE) => *pos = bytes.len(),
            Err(e) => return Err(Error::sys("write", format!("{} stdin", self.name), e)),
        }
        if *pos == bytes.len() {
            // Closing the pipe is the child's end of file.
            self.input = None;
        }
        Ok(())
    }

    /// Read what output `i` has; drop it at end of file.
    fn drain(&mut self, i: usize, chunk: &mut Vec<u8>) -> Result<()> {
        let Some(r) = &self.outputs[i] else {
            return Ok(());
        };
        chunk.resize(CHUNK, 0);
        match nix::unistd::read(r.as_fd(), chunk) {
            Ok(0) => self.outputs[i] = None,
            Ok(n) => self.collected[i].extend_from_slice(&chunk[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => {
                let what = if i == 0 { "stdout" } else { "stderr" };
                return Err(Error::sys("read", format!("{} {what}", self.name), e));
            }
        }
        Ok(())
    }
}

/// The pidfd of `child`, just started: the `Child`'s own when it holds one
/// (SIGCHLD ignored or handled: taken before anything could reap the
/// child), else one opened now, while SIGCHLD is at its default and the
/// child stays ours until we reap it. Kept only once the process behind
/// it is checked to be our unreaped child. Taken at the start, not when
/// a wait first needs it: by then something else may have reaped the
/// child (SIGCHLD ignored since), and its pid may name another process,
/// perhaps another child of ours, that a pidfd opened by pid would name.
fn take_pidfd(child: &Child) -> Option<OwnedFd> {
    if let Some(fd) = child.pidfd() {
        return fd.try_clone_to_owned().ok();
    }
    let pid = child.pid();
    let fd = crate::sys::proc::pidfd_open(pid).ok()?;
    let ours = match crate::sys::proc::waitid_raw(pid, Some(fd.as_fd()), true, true) {
        // No P_PIDFD (Linux 5.3): the pid is still our unreaped child after
        // the open, so the pidfd names that child.
        Err(Errno::EINVAL) => crate::sys::proc::waitid_raw(pid, None, true, true),
        r => r,
    };
    ours.is_ok().then_some(fd)
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.status().is_none() {
            // The group first, then the child reaped through its pidfd:
            // the Child's own drop would wait by pid, which may be
            // another process's by now. In a forked copy both do nothing.
            let _ = self.signal(Signal::SIGKILL);
            let _ = self.reap(false);
        }
    }
}
