//! `pk-pool worker`: the remote side of `pk-pool exec -S HOST`, started by
//! ssh. It reads job frames on stdin and answers on stdout
//! ([`super::wire`]); it runs every job it is sent at once (the master
//! counts the slots), each in a process group of its own with /dev/null
//! as stdin and its stdout and stderr streamed back through pipes.
//!
//! It never outlives its master: when its stdin ends without a goodbye
//! (the connection dropped, the master was killed) or a TERM, INT or HUP
//! reaches it, every job's group gets SIGTERM, then SIGKILL after the
//! kill-after delay, and it exits once all are reaped.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use super::local::{self, Local, OutTo};
use super::wire::{self, Done, How, Msg};
use crate::cmd::Result;
use crate::cmd::exit;
use crate::error::Error;
use crate::pipe::FrameReader;
use crate::spawn::SignalRelay;
use crate::status::Status;

/// `pk-pool worker`'s arguments (none: it is started by `pk-pool exec`).
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {}

struct Worker {
    local: Local,
    to: Option<OwnedFd>,
    /// Stop: end the jobs, then leave.
    stopping: bool,
    bye: bool,
    buf: Vec<u8>,
}

/// Run the worker on fds 0 and 1.
pub fn run(_: WorkerArgs) -> Result<u8> {
    let relay = SignalRelay::new(&[
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
    ])?;
    super::scheduler::become_subreaper()?;
    let from = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("dup", "stdin", &e))?;
    let to = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("dup", "stdout", &e))?;
    // The first frame is the hello, read whole before anything else.
    let mut frames = FrameReader::new(from);
    let (timeout, kill_after) = match frames.recv()? {
        Some(f) => match Msg::decode(f, "master")? {
            Msg::Hello {
                version,
                timeout_ms,
                kill_after_ms,
            } => {
                if version != wire::VERSION {
                    return Err(Error::data(
                        "recv",
                        "master",
                        format!("protocol {version}, this worker speaks {}", wire::VERSION),
                    )
                    .into());
                }
                (
                    (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
                    Duration::from_millis(kill_after_ms),
                )
            }
            other => {
                return Err(Error::data(
                    "recv",
                    "master",
                    format!("expected hello, got {other:?}"),
                )
                .into());
            }
        },
        None => return Ok(exit::OK),
    };
    set_nonblocking(frames.get_ref())?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut w = Worker {
        local: Local::new(timeout, kill_after, cpus)?,
        to: Some(to),
        stopping: false,
        bye: false,
        buf: Vec::new(),
    };
    w.send(&Msg::Ready {
        version: wire::VERSION,
        cpus: cpus as u32,
    })?;
    let r = w.serve(relay, &mut frames, kill_after);
    if r.is_err() {
        let _ = w.local.stop_all(Duration::ZERO);
    }
    r?;
    Ok(exit::OK)
}

impl Worker {
    fn send(&mut self, msg: &Msg) -> Result<()> {
        let Some(to) = &self.to else { return Ok(()) };
        match crate::pipe::send(to.as_fd(), &msg.encode()) {
            Ok(()) => Ok(()),
            Err(Errno::EPIPE) => {
                // The master is gone: nobody to report to, end the jobs.
                self.to = None;
                self.stopping = true;
                Ok(())
            }
            Err(e) => Err(Error::sys("write", "stdout", e).into()),
        }
    }

    fn serve(
        &mut self,
        mut relay: SignalRelay,
        frames: &mut FrameReader<OwnedFd>,
        grace: Duration,
    ) -> Result<()> {
        let mut stdin_open = true;
        let mut stopped = false;
        loop {
            if self.stopping && !stopped {
                stopped = true;
                self.local.stop_all(grace)?;
            }
            if (self.bye || !stdin_open || self.stopping) && self.local.len() == 0 {
                return Ok(());
            }
            let mut who: Vec<Option<(u64, u8)>> = Vec::new();
            let mut raw: Vec<BorrowedFd<'_>> = vec![relay.as_fd()];
            who.push(None);
            if let (true, Some(fd)) = (self.local.starting(), self.local.wake_fd()) {
                raw.push(fd);
                who.push(Some((0, 1)));
            }
            if stdin_open {
                raw.push(frames.get_ref().as_fd());
                who.push(Some((0, 0)));
            }
            for (key, stream, fd) in self.local.pipes() {
                raw.push(fd);
                who.push(Some((key, stream)));
            }
            let mut fds: Vec<PollFd<'_>> = raw
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
                .collect();
            match poll(
                &mut fds,
                crate::process::poll_timeout(self.local.next_deadline()),
            ) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::sys("poll", "worker", e).into()),
            }
            let ready: Vec<Option<(u64, u8)>> = fds
                .iter()
                .zip(&who)
                .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, w)| *w)
                .collect();
            drop(fds);
            drop(raw);
            for w in ready {
                match w {
                    None => {
                        while let Some(got) = relay.take()? {
                            if got.signal == Signal::SIGCHLD {
                                self.reap()?;
                            } else {
                                self.stopping = true;
                            }
                        }
                    }
                    Some((0, 1)) => {
                        for not in self.local.collect()? {
                            self.not_started(not)?;
                        }
                        self.reap()?;
                    }
                    Some((0, 0)) => {
                        if !self.frames(frames)? {
                            stdin_open = false;
                            if !self.bye {
                                // The master went away without a goodbye.
                                self.stopping = true;
                            }
                        }
                    }
                    Some((key, stream)) => {
                        let mut buf = std::mem::take(&mut self.buf);
                        self.local.read_pipe(key, stream, &mut buf)?;
                        if !buf.is_empty() {
                            self.send(&Msg::Output {
                                id: key,
                                stream,
                                bytes: buf.clone(),
                            })?;
                        }
                        self.buf = buf;
                    }
                }
            }
            // Reaped first: a job that ended before its time was up is not
            // caught by its --timeout (the master's loop does the same).
            let now = std::time::Instant::now();
            if self.local.timeout_due(now) {
                self.reap()?;
            }
            self.local.fire(now)?;
        }
    }

    /// Handle the frames that have arrived; false at end of file.
    fn frames(&mut self, frames: &mut FrameReader<OwnedFd>) -> Result<bool> {
        loop {
            let msg = match frames.recv() {
                Ok(Some(f)) => Msg::decode(f, "master")?,
                Ok(None) => return Ok(false),
                Err(e) if e.errno() == Some(Errno::EAGAIN) => return Ok(true),
                Err(e) => return Err(e.into()),
            };
            match msg {
                Msg::Job { id, argv } => {
                    if self.stopping {
                        continue;
                    }
                    if let Some(not) = self.local.start(id, &argv, OutTo::Pipe, OutTo::Pipe)? {
                        self.not_started(not)?;
                    }
                }
                Msg::Stop => self.stopping = true,
                Msg::Bye => self.bye = true,
                other => {
                    return Err(
                        Error::data("recv", "master", format!("unexpected {other:?}")).into(),
                    );
                }
            }
        }
    }

    fn not_started(&mut self, not: local::NotStarted) -> Result<()> {
        self.send(&Msg::Done(Done {
            id: not.key,
            how: not.how,
            timed_out: false,
            runtime_us: 0,
            message: not.message.into_bytes(),
        }))
    }

    fn reap(&mut self) -> Result<()> {
        loop {
            let Some(ws) = super::local::next_waitable()? else {
                return Ok(());
            };
            let Some(pid) = ws.pid() else { return Ok(()) };
            if let WaitStatus::Stopped(..) = ws {
                // A job that stopped is continued, as pk-pool exec does
                // on its own machine (one not registered yet: once it is).
                if !self.local.owns(pid.as_raw()) && self.local.starting() {
                    return Ok(());
                }
                local::consume_stop(pid);
                self.local.continue_job(pid.as_raw())?;
                continue;
            }
            match self.local.reaped(pid.as_raw())? {
                Some(mut e) => {
                    for (i, p) in e.pipes.iter_mut().enumerate() {
                        if let Some(fd) = p.take() {
                            let mut buf = Vec::new();
                            if !local::drain(&fd, &mut buf)? {
                                self.local.linger(fd);
                            }
                            if !buf.is_empty() {
                                self.send(&Msg::Output {
                                    id: e.key,
                                    stream: i as u8 + 1,
                                    bytes: buf,
                                })?;
                            }
                        }
                    }
                    let how = match e.status {
                        Status::Exited(c) => How::Exited(c),
                        Status::Signaled { signal, .. } | Status::Stopped(signal) => {
                            How::Signaled(signal)
                        }
                        Status::Continued => How::Exited(0),
                    };
                    self.send(&Msg::Done(Done {
                        id: e.key,
                        how,
                        timed_out: e.timed_out,
                        runtime_us: e.runtime.as_micros() as u64,
                        message: Vec::new(),
                    }))?;
                }
                None if !self.local.owns(pid.as_raw()) => {
                    if self.local.starting() {
                        // Registered when its spawner reports it.
                        return Ok(());
                    }
                    let _ = crate::process::waitpid(pid);
                }
                None => return Ok(()),
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::sys("fcntl", "stdin", e))?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| Error::sys("fcntl", "stdin", e))?;
    Ok(())
}
