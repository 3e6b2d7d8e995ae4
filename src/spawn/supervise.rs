//! Watching a running program as timeout(1) does: a deadline with a signal,
//! a SIGKILL some time after it, and signals that reach the wrapper passed
//! on to the program.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::running::{Event, Running};
use crate::error::{Error, Result};
use crate::process::deadline_after;
use crate::status::Status;

/// Once the program was signalled (the timeout, a kill-after, a signal
/// passed on) and has been reaped, how long its pipes are still read: a
/// grandchild that escaped its process group and holds them open does
/// not keep the wrapper waiting.
const AFTER_SIGNAL_GRACE: Duration = Duration::from_millis(100);

/// When and how to end a program that runs too long, timeout(1)'s way:
/// after `after`, send `signal` (default SIGTERM, then SIGCONT so a stopped
/// program can act on it); if it still runs `kill_after` later, SIGKILL.
///
/// ```
/// use std::time::Duration;
/// use posixkit::spawn::{Spawn, Timeout};
/// let out = Spawn::new(["sleep", "5"]).unwrap()
///     .timeout(Timeout::new(Duration::from_millis(50)))
///     .run()
///     .unwrap();
/// assert!(out.timed_out);
/// assert_eq!(out.status.signal(), Some(libc::SIGTERM));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout {
    after: Option<Duration>,
    signal: Signal,
    kill_after: Option<Duration>,
}

impl Timeout {
    /// Send SIGTERM once `after` has passed (a duration too large for the
    /// clock never passes).
    pub fn new(after: Duration) -> Timeout {
        Timeout {
            after: Some(after),
            signal: Signal::SIGTERM,
            kill_after: None,
        }
    }

    /// The signal sent when the time runs out.
    pub(crate) fn sent(&self) -> Signal {
        self.signal
    }

    /// No deadline; only the kill-after applies, to signals a
    /// [`SignalRelay`] passes on (timeout(1)'s `-k K 0`).
    pub fn never() -> Timeout {
        Timeout {
            after: None,
            ..Timeout::new(Duration::ZERO)
        }
    }

    /// The signal sent when the time is up (default SIGTERM).
    #[must_use]
    pub fn signal(mut self, sig: Signal) -> Self {
        self.signal = sig;
        self
    }

    /// Send SIGKILL if the program still runs this long after the signal
    /// (the timeout's, or one passed on by a [`SignalRelay`]).
    #[must_use]
    pub fn kill_after(mut self, after: Duration) -> Self {
        self.kill_after = Some(after);
        self
    }
}

/// What one [`Supervisor::step`] saw or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The program ended (and was reaped) with this status.
    Exited(Status),
    /// The time ran out and this signal was sent.
    TimedOut(Signal),
    /// The program still ran after the kill-after delay: SIGKILL was sent.
    Killed,
    /// A SIGALRM reached the relay (sent by another process, or an
    /// alarm(2) timer) while there was a timeout: taken as "the time is up
    /// now", as timeout(1) does, and this signal was sent: SIGKILL when the
    /// kill-after clock ran, else the timeout's signal. It is not
    /// [`Step::TimedOut`]: the timeout's own clock need not have run out.
    /// [`Supervisor::timed_out`] is true from then on (or
    /// [`Supervisor::killed`], for SIGKILL), as after a timeout.
    Alarmed(Signal),
    /// This signal reached us and was passed on to the program.
    Relayed(Signal),
    /// This signal reached us but could not be passed on: the program now
    /// runs as another user (kill(2) gave EPERM). It is still waited for,
    /// as timeout(1) does.
    Refused(Signal),
}

/// Drives a [`Running`] program to its end under a [`Timeout`], passing on
/// the signals of a [`SignalRelay`]. The clock starts at
/// [`Supervisor::new`].
///
/// ```no_run
/// use std::time::Duration;
/// use nix::sys::signal::Signal;
/// use posixkit::spawn::{SignalRelay, Spawn, Step, Supervisor, Timeout};
/// // A wrapper: TERM and INT sent to us go to the command.
/// let mut relay = SignalRelay::new(&[Signal::SIGTERM, Signal::SIGINT]).unwrap();
/// let mut sup = Supervisor::new(Some(Timeout::new(Duration::from_secs(10))));
/// // SIGTERM at its default action in make, even if we were started with
/// // it ignored: else make would outlive the timeout.
/// let mut child = Spawn::new(["make"])
///     .unwrap()
///     .process_group(true)
///     .default_signal(Signal::SIGTERM)
///     .start()
///     .unwrap();
/// let status = loop {
///     match sup.step(&mut child, Some(&mut relay)).unwrap() {
///         Step::Exited(status) => break status,
///         other => eprintln!("{other:?}"),
///     }
/// };
/// ```
#[derive(Debug)]
pub struct Supervisor {
    timeout: Option<Timeout>,
    signal_at: Option<Instant>,
    kill_at: Option<Instant>,
    timed_out: bool,
    killed: bool,
}

impl Supervisor {
    /// Start the clock for `timeout` (`None`: no timeout, no kill-after).
    /// Start the program with [`default_signal`] of the timeout's signal
    /// (see [`Spawn::start`]), or one that inherited it ignored outlives
    /// the timeout.
    ///
    /// [`default_signal`]: super::Spawn::default_signal
    /// [`Spawn::start`]: super::Spawn::start
    pub fn new(timeout: Option<Timeout>) -> Supervisor {
        Supervisor {
            signal_at: timeout.and_then(|t| t.after).and_then(deadline_after),
            timeout,
            kill_at: None,
            timed_out: false,
            killed: false,
        }
    }

    /// Whether the time ran out (the timeout's signal was sent).
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Whether SIGKILL was sent (the timeout's signal, or the kill-after).
    pub fn killed(&self) -> bool {
        self.killed
    }

    /// Wait for the next thing that happens: the program ends, a deadline
    /// passes (and its signal is sent), or a signal reaches `relay` (and is
    /// passed on). Call again until [`Step::Exited`].
    ///
    /// A signal the terminal sent to its whole foreground group is not
    /// passed on to a program that shares our process group: it has had it.
    /// A hang-up the kernel sent to us as session leader is passed on: it
    /// went to the leader alone. With a timeout, a SIGALRM that reaches
    /// the relay means "the time is up now", as for timeout(1): the
    /// kill-after SIGKILL if its clock runs, else the timeout's signal
    /// ([`Step::Alarmed`] with the signal sent); without one it is passed
    /// on like any other.
    /// When the program has ended but a pipe it shared is still open past a
    /// deadline, the output is abandoned and the step returns `Exited`;
    /// once a signal was sent to it (the timeout's, SIGKILL, one passed
    /// on), the pipes are read for at most 0.1 s after it was reaped (see
    /// [`Running::linger_after_exit`]).
    pub fn step(&mut self, r: &mut Running, mut relay: Option<&mut SignalRelay>) -> Result<Step> {
        loop {
            if let Some(relay) = relay.as_deref_mut() {
                while let Some(got) = relay.take()? {
                    if got.from_kernel && r.process_group().is_none() && !to_us_alone(got.signal) {
                        continue;
                    }
                    if r.status().is_some() {
                        // The program has ended; only its pipes, held by
                        // something it left behind, were being read. There
                        // is no one to pass the signal on to (its group id
                        // may be free by now): it ends the reading.
                        r.abandon_output();
                        continue;
                    }
                    if got.signal == Signal::SIGALRM && self.timeout.is_some() {
                        return self.time_is_up(r);
                    }
                    return Ok(if self.send(r, got.signal)? {
                        Step::Relayed(got.signal)
                    } else {
                        Step::Refused(got.signal)
                    });
                }
            }
            let next = match (self.signal_at, self.kill_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wake = relay.as_deref().map(|x| x.as_fd());
            match r.wait_event(next, wake)? {
                Event::Exited(status) => return Ok(Step::Exited(status)),
                Event::Woken => continue,
                Event::Deadline => {}
            }
            let now = Instant::now();
            if r.status().is_some() {
                r.abandon_output();
                continue;
            }
            if self.kill_at.is_some_and(|t| now >= t) {
                return self.kill_now(r);
            }
            if let (Some(t), Some(at)) = (self.timeout, self.signal_at) {
                if now >= at {
                    return self.time_out_now(r, t.signal);
                }
            }
        }
    }

    /// A SIGALRM that reached the relay, with a timeout: timeout(1)'s
    /// "the time is up now". The next step comes at once: SIGKILL when
    /// the kill-after clock runs, else the timeout's signal (again, if it
    /// was sent already).
    fn time_is_up(&mut self, r: &mut Running) -> Result<Step> {
        if self.kill_at.is_some() {
            self.kill_now(r)?;
            return Ok(Step::Alarmed(Signal::SIGKILL));
        }
        let sig = self.timeout.map_or(Signal::SIGTERM, |t| t.signal);
        self.time_out_now(r, sig)?;
        Ok(Step::Alarmed(sig))
    }

    /// The kill-after SIGKILL. Refused (EPERM), it killed nothing: the
    /// program's own status stands.
    fn kill_now(&mut self, r: &mut Running) -> Result<Step> {
        self.kill_at = None;
        self.killed = permitted(r.signal(Signal::SIGKILL))?;
        r.linger_after_exit(AFTER_SIGNAL_GRACE);
        Ok(Step::Killed)
    }

    /// The time ran out: send the timeout's signal `sig`.
    fn time_out_now(&mut self, r: &mut Running, sig: Signal) -> Result<Step> {
        self.signal_at = None;
        self.timed_out = true;
        self.send(r, sig)?;
        Ok(Step::TimedOut(sig))
    }

    /// Pass `sig` on to the program as a wrapper does (then SIGCONT, and the
    /// kill-after clock starts if the timeout has one and it is not running
    /// yet). For callers with a signal source of their own;
    /// [`Supervisor::step`] does it for a [`SignalRelay`].
    /// A program that now runs as another user (a setuid one, sudo) may
    /// refuse signals from us: that is no error (timeout(1) ignores it
    /// too), and it is still waited for. Returns whether `sig` was sent.
    pub fn relay(&mut self, r: &mut Running, sig: Signal) -> Result<bool> {
        self.send(r, sig)
    }

    fn send(&mut self, r: &mut Running, sig: Signal) -> Result<bool> {
        let sent = permitted(r.signal(sig))?;
        r.linger_after_exit(AFTER_SIGNAL_GRACE);
        if sig == Signal::SIGKILL {
            self.killed |= sent;
            self.kill_at = None;
            return Ok(sent);
        }
        if sig != Signal::SIGCONT {
            permitted(r.signal(Signal::SIGCONT))?;
        }
        if self.kill_at.is_none() && !self.killed {
            self.kill_at = self
                .timeout
                .and_then(|t| t.kill_after)
                .and_then(deadline_after);
        }
        Ok(sent)
    }
}

/// A signal sent (true), or refused with EPERM (false): the program runs
/// as another user now. Other errors stay errors.
fn permitted(sent: Result<()>) -> Result<bool> {
    match sent {
        Ok(()) => Ok(true),
        Err(e) if e.errno() == Some(Errno::EPERM) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the kernel sends `sig` to this process alone rather than to
/// its whole process group, so that a program that shares our group has
/// not had it: a terminal's hang-up goes to the session leader only (its
/// foreground group hears of it when the leader exits), and an alarm(2)
/// timer's SIGALRM to its process.
fn to_us_alone(sig: Signal) -> bool {
    sig == Signal::SIGALRM
        || (sig == Signal::SIGHUP
            && nix::unistd::getsid(None).is_ok_and(|s| s == nix::unistd::getpid()))
}

/// A signal that reached a [`SignalRelay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Which signal.
    pub signal: Signal,
    /// Sent by the kernel (a terminal's ^C or hang-up, `SI_KERNEL`) rather
    /// than by a process's kill(2).
    pub from_kernel: bool,
}

/// Signals for a wrapper to pass on, taken from a signalfd(2) instead of a
/// handler: the signals are blocked in the calling thread while the relay
/// lives, and arrive as readable data that [`Supervisor::step`] polls with
/// the program's pipes. Dropping the relay discards any that arrived and
/// were not taken, then unblocks the signals it blocked (those that were
/// not blocked already when it was made). The relay cannot leave the
/// thread that made it (it is not `Send`): the mask it changed is that
/// thread's.
///
/// The mask is the calling thread's: in a program with other threads,
/// block the same signals in all of them (before starting them), or the
/// kernel may deliver one to a thread that does not block it. A child
/// started meanwhile gets an empty mask and default dispositions, whatever
/// the relay blocks.
///
/// A signal that a process of our own process group sends again within
/// [`SAME_SIGNAL_AGAIN`] of the one taken is a copy and is not returned:
/// timeout(1) signals its child, then its whole process group, which
/// holds the child too, and a wrapper that passed both on would signal
/// its program twice (or take the copy for a second signal: "no more
/// grace"). A sender outside our group, the terminal's signals (sent by
/// the kernel) and the job-control ones (TSTP, CONT, ...) are always
/// returned.
#[derive(Debug)]
pub struct SignalRelay {
    fd: SignalFd,
    /// The signals this relay blocked that were not blocked before it:
    /// the ones its drop unblocks.
    ours: SigSet,
    /// The mask is the calling thread's: the relay stays on that thread.
    _thread: std::marker::PhantomData<*const ()>,
    /// The last signal a process sent: its number, the sender, when.
    last_sent: Option<(u32, u32, Instant)>,
}

/// Whether process `pid` is in our process group, so that a kill(2) of
/// its own group (timeout(1)'s `kill(0, sig)`) reached us.
fn in_our_group(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
        .is_ok_and(|g| g == nix::unistd::getpgrp())
}

/// Signals that stop, continue or tell of a change rather than end: each
/// one sent is one event (^Z, then `fg`, then ^Z again), never a copy.
fn is_job_control(sig: Signal) -> bool {
    use Signal::*;
    matches!(
        sig,
        SIGTSTP | SIGTTIN | SIGTTOU | SIGCONT | SIGSTOP | SIGCHLD | SIGWINCH | SIGURG
    )
}

/// How soon after a signal the same signal from the same process is taken
/// for a copy of it (see [`SignalRelay`]).
pub const SAME_SIGNAL_AGAIN: Duration = Duration::from_millis(100);

impl SignalRelay {
    /// Block `signals` in the calling thread and read them from a signalfd.
    /// A signal that is ignored (SIG_IGN) at this moment is left alone and
    /// never relayed: a program started now inherits the ignoring, as
    /// `nohup` and a shell's background jobs intend.
    pub fn new(signals: &[Signal]) -> Result<SignalRelay> {
        let mut set = SigSet::empty();
        for &s in signals {
            if !crate::sys::spawn::is_ignored(s as libc::c_int) {
                set.add(s);
            }
        }
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
            .map_err(|e| Error::sys("pthread_sigmask", "SIG_BLOCK", e))?;
        match SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(fd) => {
                let mut ours = SigSet::empty();
                for s in set.iter().filter(|&s| !old.contains(s)) {
                    ours.add(s);
                }
                Ok(SignalRelay {
                    fd,
                    ours,
                    _thread: std::marker::PhantomData,
                    last_sent: None,
                })
            }
            Err(e) => {
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                Err(Error::sys("signalfd", "relay", e))
            }
        }
    }

    /// The next signal that arrived, if any (never blocks); not a copy
    /// (see [`SignalRelay`]).
    pub fn take(&mut self) -> Result<Option<Relayed>> {
        loop {
            return match self.fd.read_signal() {
                Ok(Some(info)) => {
                    let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    if info.ssi_code == libc::SI_USER
                        && !is_job_control(signal)
                        && self.is_copy(info.ssi_signo, info.ssi_pid)
                    {
                        continue;
                    }
                    Ok(Some(Relayed {
                        signal,
                        from_kernel: info.ssi_code == libc::SI_KERNEL,
                    }))
                }
                Ok(None) => Ok(None),
                Err(Errno::EINTR) => continue,
                Err(e) => Err(Error::sys("read", "signalfd", e)),
            };
        }
    }
}

impl SignalRelay {
    /// Whether signal `signo` from process `pid` (kill(2)) copies the one
    /// it sent last, close before, by a kill of our whole process group
    /// (the sender is in it); remembers it otherwise.
    fn is_copy(&mut self, signo: u32, pid: u32) -> bool {
        let now = Instant::now();
        if let Some((s, p, at)) = self.last_sent {
            if s == signo
                && p == pid
                && now.duration_since(at) < SAME_SIGNAL_AGAIN
                && in_our_group(pid)
            {
                return true;
            }
        }
        self.last_sent = Some((signo, pid, now));
        false
    }
}

impl AsFd for SignalRelay {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SignalRelay {
    fn drop(&mut self) {
        while let Ok(Some(_)) = self.fd.read_signal() {}
        // Only what this relay blocked: another relay made since (and
        // still alive) keeps its signals blocked, whatever order the two
        // are dropped in.
        let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&self.ours), None);
    }
}
