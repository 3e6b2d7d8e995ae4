//! Jobs on this machine: each command started with
//! [`Spawn`](crate::spawn::Spawn) (clone(`CLONE_VM|CLONE_VFORK`) + exec,
//! so starting one costs the same however large pk-pool grows) as the
//! leader of a session and process group of its own (no controlling
//! terminal), with /dev/null as stdin.
//!
//! Every signal goes to the whole group: a `sh -c` command's children end
//! with it. A timeout sends SIGTERM and SIGCONT, then SIGKILL after the
//! kill-after delay (to what is left of the group even when the leader
//! has ended by then); stopping everything does the same to every job. And
//! should the process that runs them be SIGKILLed, its
//! [guard](mod@super::guard) does the same to the groups of the jobs then
//! running.
//!
//! Nothing here waits: the caller learns from SIGCHLD (a signalfd) that
//! some child ended, finds which with `waitid(P_ALL, WNOWAIT)` and hands
//! the pid to [`Local::reaped`].
//!
//! Starting a program with `CLONE_VFORK` suspends the calling thread until
//! the child has exec'd, and on a busy machine the child may wait a while
//! for a CPU: measured, that window was most of a short job's cost when
//! one thread started every job. So the starts happen on a few spawner
//! threads (one per slot, at most [`MAX_SPAWNERS`]; none with one slot,
//! where the loop has nothing else to do meanwhile), started after the
//! caller blocked its signals (they inherit the mask), living as long as
//! the run: a child's death signal follows the thread that started it.
//! The loop hands them a ready `Spawn`, goes on polling, and collects
//! each started job from a channel when [`Local::wake_fd`] is readable.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use super::wire::How;
use crate::error::{Error, ErrorKind, Result};
use crate::process::Pid;
use crate::spawn::{Running, Spawn, Stdin};
use crate::status::Status;

/// Where a job's stdout or stderr goes.
#[derive(Debug)]
pub enum OutTo {
    /// Ours.
    Inherit,
    /// A new pipe, read by the caller ([`Local::pipes`]).
    Pipe,
}

/// The key [`Local::pipes`] gives the pipes of ended jobs that a process
/// they left behind still holds (see [`Local::linger`]).
pub const LINGERING: u64 = u64::MAX;

#[derive(Debug)]
struct Job {
    running: Running,
    pgid: Pid,
    pipes: [Option<OwnedFd>; 2],
    /// Per pipe: made larger for a job that prints much ([`Local::splice_pipe`]).
    grown: [bool; 2],
    started: Instant,
    deadline: Option<Instant>,
    kill_at: Option<Instant>,
    timed_out: bool,
    stopped: bool,
}

/// A job that ended.
#[derive(Debug)]
pub struct Ended {
    pub key: u64,
    pub status: Status,
    pub timed_out: bool,
    /// Ended by [`Local::stop_all`] (or a kill that followed it).
    pub stopped: bool,
    pub runtime: Duration,
    /// Its pipes, to be drained of what is left in them.
    pub pipes: [Option<OwnedFd>; 2],
}

/// The most spawner threads a run starts.
pub const MAX_SPAWNERS: usize = 8;

/// What a spawner thread hands back: the job's key, when the start began,
/// and the started program or why it did not start.
type Started = (u64, Instant, crate::error::Result<Running>);

/// The threads that start programs.
#[derive(Debug)]
struct Spawners {
    jobs: Option<mpsc::Sender<(u64, Spawn)>>,
    done: mpsc::Receiver<Started>,
    wake: OwnedFd,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Spawners {
    fn new(n: usize) -> Result<Spawners> {
        let (jobs, queue) = mpsc::channel::<(u64, Spawn)>();
        let queue = Arc::new(Mutex::new(queue));
        let (tell, done) = mpsc::channel::<Started>();
        let (wake, wake_w) = crate::pipe::pipe()?;
        let wake_w = Arc::new(OwnedFd::from(wake_w));
        let wake = OwnedFd::from(wake);
        set_nonblocking(&wake)?;
        set_nonblocking(&wake_w)?;
        let mut threads = Vec::new();
        for i in 0..n.clamp(1, MAX_SPAWNERS) {
            let queue = Arc::clone(&queue);
            let tell = tell.clone();
            let wake_w = Arc::clone(&wake_w);
            let t = std::thread::Builder::new()
                .name(format!("spawner-{i}"))
                .spawn(move || {
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((key, spawn)) = next else { return };
                        let at = Instant::now();
                        let started = spawn.start();
                        if tell.send((key, at, started)).is_err() {
                            return;
                        }
                        // A full pipe already says "look".
                        let _ = nix::unistd::write(&*wake_w, &[1]);
                    }
                })
                .map_err(|e| Error::io("pthread_create", "spawner", &e))?;
            threads.push(t);
        }
        Ok(Spawners {
            jobs: Some(jobs),
            done,
            wake,
            threads,
        })
    }
}

impl Drop for Spawners {
    fn drop(&mut self) {
        // Closing the queue ends each thread after its current start.
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A job handed to a spawner, not yet started.
#[derive(Debug)]
struct Pending {
    pipes: [Option<OwnedFd>; 2],
}

/// The local jobs of a run, by key.
#[derive(Debug)]
pub struct Local {
    jobs: HashMap<u64, Job>,
    by_pid: HashMap<i32, u64>,
    pending: HashMap<u64, Pending>,
    devnull: OwnedFd,
    timeout: Option<Duration>,
    kill_after: Duration,
    /// Set by [`Local::stop_all`]: jobs that start later are stopped at once.
    stop_grace: Option<Duration>,
    /// The groups of every job stopped so far.
    stopped_groups: Vec<Pid>,
    /// The groups of timed-out jobs whose leader ended before their
    /// SIGKILL was due, while others of the group live on: they still
    /// get it then (see [`Local::end_leftovers`]).
    leftovers: Vec<(Pid, Option<Instant>)>,
    /// Pipes of ended jobs still open at the other end (see
    /// [`Local::linger`]), oldest first.
    lingering: VecDeque<OwnedFd>,
    /// The most of them kept open ([`Local::set_linger_max`]).
    linger_max: usize,
    /// splice(2) did not take our output files (EINVAL): read and write.
    no_splice: bool,
    /// `None` with one slot: the loop starts programs itself (a handover
    /// to a thread would only add two wake-ups per job).
    spawners: Option<Spawners>,
    /// The `pk-pool guard` that ends the running jobs' groups if we are
    /// SIGKILLed; `None` where it could not start.
    guard: Option<Guard>,
}

/// A started `pk-pool guard` (see [`mod@super::guard`]).
#[derive(Debug)]
struct Guard {
    /// The write end of its stdin, shared with the spawner threads.
    to: Arc<OwnedFd>,
    process: Running,
}

impl Guard {
    /// `pk-pool guard <kill-after ms>` from our own executable, its stdout
    /// and stderr /dev/null (it must not hold our reader's pipe open: after
    /// a SIGKILL of ours, `2>&1 | cat` would see its end of file only when
    /// the guard is done, --kill-after later; it prints nothing), in a session
    /// of its own: a signal to our process group (`kill -9 -PGID`,
    /// `timeout -s KILL`, a shell's `kill -9 %1`) or from our terminal
    /// (^C, ^Z, a hang-up) does not reach it, so it outlives a SIGKILL of
    /// the whole group and ends the jobs then. The end of its stdin is
    /// all it waits for: it exits when we do.
    fn start(kill_after: Duration, devnull: &OwnedFd) -> Option<Guard> {
        let exe = std::env::current_exe().ok()?;
        let (r, w) = crate::pipe::pipe().ok()?;
        let ms = u64::try_from(kill_after.as_millis()).unwrap_or(u64::MAX);
        let process = Spawn::new([exe.into_os_string(), "guard".into(), ms.to_string().into()])
            .ok()?
            .stdin(Stdin::Fd(r.into()))
            .stdout_fd(devnull.try_clone().ok()?)
            .stderr_fd(devnull.try_clone().ok()?)
            .session(true)
            .start()
            .ok()?;
        Some(Guard {
            to: Arc::new(w.into()),
            process,
        })
    }
}

/// Tell the guard that group `pgid` runs (positive) or has ended
/// (negative). A guard that has gone is no error: it only makes a
/// SIGKILL of ours less tidy.
fn guard_note(to: &OwnedFd, pgid: i32) {
    let _ = crate::pipe::write_all(to.as_fd(), &pgid.to_le_bytes());
}

impl Drop for Local {
    fn drop(&mut self) {
        // Jobs queued for the spawner threads hold the guard's pipe too:
        // they go first.
        self.spawners = None;
        let _ = self.end_leftovers();
        if let Some(mut g) = self.guard.take() {
            let orderly = self.jobs.is_empty() && self.leftovers.is_empty();
            drop(g.to);
            // It exits at once when no group is left; otherwise it ends
            // them after the grace, on its own.
            if orderly {
                let _ = g.process.wait();
            }
        }
    }
}

/// A job whose command did not start.
#[derive(Debug)]
pub struct NotStarted {
    pub key: u64,
    pub how: How,
    pub message: String,
    /// It failed for want of a process, memory or descriptors (see
    /// [`no_room`]): it may start once another job has ended.
    pub no_room: bool,
}

/// Whether `e` says the system or a limit ran out of room for one more
/// job (EAGAIN from clone under `ulimit -u` or a cgroup's pids.max,
/// ENOMEM, EMFILE, ENFILE), rather than that this command cannot run.
pub fn no_room(e: &Error) -> bool {
    matches!(
        e.errno(),
        Some(Errno::EAGAIN | Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE)
    )
}

impl Local {
    /// `timeout`: the per-job limit; `kill_after`: the delay from SIGTERM
    /// to SIGKILL, for timeouts and for [`Local::stop_all`].
    /// `spawners`: the threads that start programs (about the slots).
    /// Call it after blocking the signals the caller reads (the threads
    /// inherit the mask).
    pub fn new(timeout: Option<Duration>, kill_after: Duration, spawners: usize) -> Result<Local> {
        let devnull = std::fs::File::open("/dev/null")
            .map_err(|e| Error::io("open", "/dev/null", &e))?
            .into();
        let guard = Guard::start(kill_after, &devnull);
        Ok(Local {
            jobs: HashMap::new(),
            by_pid: HashMap::new(),
            pending: HashMap::new(),
            devnull,
            timeout,
            kill_after,
            stop_grace: None,
            stopped_groups: Vec::new(),
            leftovers: Vec::new(),
            lingering: VecDeque::new(),
            linger_max: usize::MAX,
            no_splice: false,
            spawners: if spawners > 1 {
                Some(Spawners::new(spawners)?)
            } else {
                None
            },
            guard,
        })
    }

    /// Jobs running or being started.
    pub fn len(&self) -> usize {
        self.jobs.len() + self.pending.len()
    }

    /// Whether some job is being started (a child may exist that
    /// [`Local::collect`] has not registered yet).
    pub fn starting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Readable when a spawner has started a job: then [`Local::collect`].
    /// `None` when jobs start on the caller's thread.
    pub fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        self.spawners.as_ref().map(|s| s.wake.as_fd())
    }

    /// Have `argv` started as job `key` by a spawner thread. An argv that
    /// cannot be a command line (a NUL byte from a remote frame) is
    /// `Some`: a job outcome at once.
    pub fn start(
        &mut self,
        key: u64,
        argv: &[Vec<u8>],
        out: OutTo,
        err: OutTo,
    ) -> Result<Option<NotStarted>> {
        match self.prepare(key, argv, out, err) {
            Ok(Ok((spawn, pipes))) => self.launch(key, spawn, pipes),
            Ok(Err(not)) => Ok(Some(not)),
            Err(e) if no_room(&e) => Ok(Some(NotStarted {
                key,
                how: How::CannotRun,
                message: e.to_string(),
                no_room: true,
            })),
            Err(e) => Err(e),
        }
    }

    /// The job's Spawn and the read ends of its pipes; a command line
    /// that cannot be one (a NUL byte) is a job that did not start.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &mut self,
        key: u64,
        argv: &[Vec<u8>],
        out: OutTo,
        err: OutTo,
    ) -> Result<std::result::Result<(Spawn, [Option<OwnedFd>; 2]), NotStarted>> {
        use std::os::unix::ffi::OsStrExt;
        let stdin = self
            .devnull
            .try_clone()
            .map_err(|e| Error::io("dup", "/dev/null", &e))?;
        let spawn = match Spawn::new(argv.iter().map(|a| std::ffi::OsStr::from_bytes(a))) {
            Ok(s) => s,
            Err(e) => {
                return Ok(Err(NotStarted {
                    key,
                    how: How::CannotRun,
                    message: e.to_string(),
                    no_room: false,
                }));
            }
        };
        let mut spawn = spawn
            .stdin(Stdin::Fd(stdin))
            // A session of its own: its process group, and no controlling
            // terminal, so a command that reads the terminal (or writes to
            // it under `stty tostop`) fails instead of being stopped for
            // ever in a background group.
            .session(true)
            // pk-pool SIGKILLed takes its commands along (the rest of
            // each group is signalled on every orderly stop).
            .die_with_parent(Signal::SIGTERM);
        if let Some(g) = &self.guard {
            // The job tells the guard its group itself, before it runs
            // anything: a SIGKILL of ours right after it starts cannot
            // leave a group the guard never heard of.
            spawn = spawn.announce_pid_to(Arc::clone(&g.to));
        }
        let mut pipes = [None, None];
        for (i, to) in [out, err].into_iter().enumerate() {
            let fd: OwnedFd = match to {
                OutTo::Inherit => continue,
                OutTo::Pipe => {
                    let (r, w) = match crate::pipe::pipe() {
                        // Lingering pipes took the descriptors this job
                        // needs: the oldest few give way.
                        Err(e)
                            if e.errno() == Some(Errno::EMFILE) && !self.lingering.is_empty() =>
                        {
                            let keep = self.lingering.len().saturating_sub(LINGER_GIVE_UP);
                            self.lingering.drain(..self.lingering.len() - keep);
                            crate::pipe::pipe()?
                        }
                        r => r?,
                    };
                    let r = OwnedFd::from(r);
                    set_nonblocking(&r)?;
                    pipes[i] = Some(r);
                    w.into()
                }
            };
            spawn = if i == 0 {
                spawn.stdout_fd(fd)
            } else {
                spawn.stderr_fd(fd)
            };
        }
        Ok(Ok((spawn, pipes)))
    }

    /// Start `spawn` here or hand it to a spawner thread.
    fn launch(
        &mut self,
        key: u64,
        spawn: Spawn,
        pipes: [Option<OwnedFd>; 2],
    ) -> Result<Option<NotStarted>> {
        let Some(spawners) = &self.spawners else {
            let at = Instant::now();
            let started = spawn.start();
            return self.register(key, at, started, pipes);
        };
        let sent = spawners
            .jobs
            .as_ref()
            .is_some_and(|q| q.send((key, spawn)).is_ok());
        self.pending.insert(key, Pending { pipes });
        if !sent {
            self.pending.remove(&key);
            return Err(Error::new(
                ErrorKind::Os,
                "spawn",
                "spawner threads",
                "they have ended",
            ));
        }
        Ok(None)
    }

    /// Register the jobs the spawners have started; those that did not
    /// start (not found, not executable) are returned, as job outcomes.
    pub fn collect(&mut self) -> Result<Vec<NotStarted>> {
        let mut failed = Vec::new();
        let Some(spawners) = &self.spawners else {
            return Ok(failed);
        };
        let mut drained = [0u8; 64];
        while matches!(nix::unistd::read(spawners.wake.as_fd(), &mut drained), Ok(n) if n > 0) {}
        let done: Vec<Started> = spawners.done.try_iter().collect();
        for (key, at, started) in done {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            if let Some(not) = self.register(key, at, started, p.pipes)? {
                failed.push(not);
            }
        }
        Ok(failed)
    }

    /// Take charge of job `key`, started at `at`.
    fn register(
        &mut self,
        key: u64,
        at: Instant,
        started: crate::error::Result<Running>,
        pipes: [Option<OwnedFd>; 2],
    ) -> Result<Option<NotStarted>> {
        let running = match started {
            Ok(r) => r,
            Err(e) => {
                let how = match e.kind() {
                    ErrorKind::CommandNotFound => How::NotFound,
                    ErrorKind::CommandNotExecutable | ErrorKind::InvalidInput => How::CannotRun,
                    _ if no_room(&e) => How::CannotRun,
                    _ => return Err(e),
                };
                return Ok(Some(NotStarted {
                    key,
                    how,
                    no_room: no_room(&e),
                    message: e.to_string(),
                }));
            }
        };
        let pid = running.pid();
        self.by_pid.insert(pid.as_raw(), key);
        let mut job = Job {
            running,
            pgid: pid,
            pipes,
            grown: [false; 2],
            started: at,
            deadline: self.timeout.and_then(|t| at.checked_add(t)),
            kill_at: None,
            timed_out: false,
            stopped: false,
        };
        if let Some(grace) = self.stop_grace {
            self.stopped_groups.push(pid);
            job.stopped = true;
            job.deadline = None;
            terminate(&mut job, grace)?;
        }
        self.jobs.insert(key, job);
        Ok(None)
    }

    /// Whether `pid` is one of our jobs.
    pub fn owns(&self, pid: i32) -> bool {
        self.by_pid.contains_key(&pid)
    }

    /// The key of job `pid`.
    pub fn key_of(&self, pid: i32) -> Option<u64> {
        self.by_pid.get(&pid).copied()
    }

    /// Wait until every job handed to a spawner is started (or has failed
    /// to start: those are returned, as job outcomes), so that every
    /// running job is known. A start takes no longer than an exec.
    pub fn settle(&mut self) -> Result<Vec<NotStarted>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut failed = Vec::new();
        loop {
            failed.extend(self.collect()?);
            let Some(wake) = self.wake_fd().filter(|_| self.starting()) else {
                return Ok(failed);
            };
            let mut fds = [PollFd::new(wake, PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u8)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::sys("poll", "spawner threads", e)),
            }
        }
    }

    /// Send `sig` to every job's process group (SIGSTOP, SIGCONT).
    pub fn signal_all(&self, sig: Signal) -> Result<()> {
        for j in self.jobs.values() {
            signal_group(j.pgid, sig)?;
        }
        Ok(())
    }

    /// Every job's deadlines move `by` later: the time the run was stopped
    /// counts against no job's --timeout or kill-after delay.
    pub fn postpone(&mut self, by: Duration) {
        for j in self.jobs.values_mut() {
            for t in [&mut j.deadline, &mut j.kill_at] {
                *t = t.and_then(|t| t.checked_add(by));
            }
        }
        for (_, t) in &mut self.leftovers {
            *t = t.and_then(|t| t.checked_add(by));
        }
    }

    /// Continue job `pid`'s process group (SIGCONT), which has stopped.
    pub fn continue_job(&self, pid: i32) -> Result<()> {
        match self.by_pid.get(&pid).and_then(|k| self.jobs.get(k)) {
            Some(j) => signal_group(j.pgid, Signal::SIGCONT),
            None => Ok(()),
        }
    }

    /// Reap job `pid` (waitid said it ended); `None` if it is not ours or
    /// has not ended after all.
    pub fn reaped(&mut self, pid: i32) -> Result<Option<Ended>> {
        let Some(&key) = self.by_pid.get(&pid) else {
            return Ok(None);
        };
        let job = self.jobs.get_mut(&key).expect("indexed job");
        // Said while the leader is a zombie that still holds the number.
        if let Some(g) = &self.guard {
            guard_note(&g.to, -pid);
        }
        let Some(status) = job.running.try_wait()? else {
            return Ok(None);
        };
        self.by_pid.remove(&pid);
        let mut job = self.jobs.remove(&key).expect("indexed job");
        // Its orphans that ended already are ours to reap, and would keep
        // the group alive as zombies.
        if job.timed_out
            && !job.stopped
            && job.kill_at.is_some()
            && group_alive_after_reaping(job.pgid)
        {
            // Its group lives on without it (a child in the background
            // that ignores SIGTERM): the SIGKILL is still due. The group
            // holds the number now, and the guard hears of it again.
            self.leftovers.push((job.pgid, job.kill_at));
            if let Some(g) = &self.guard {
                guard_note(&g.to, job.pgid.as_raw());
            }
        }
        Ok(Some(Ended {
            key,
            status,
            timed_out: job.timed_out,
            stopped: job.stopped,
            runtime: job.started.elapsed(),
            pipes: std::mem::take(&mut job.pipes),
        }))
    }

    /// The open pipes of running jobs: (key, stream 1 or 2, descriptor);
    /// and the lingering ones, as ([`LINGERING`], 0, descriptor).
    pub fn pipes(&self) -> impl Iterator<Item = (u64, u8, BorrowedFd<'_>)> {
        self.jobs
            .iter()
            .flat_map(|(&key, j)| {
                j.pipes
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, p)| p.as_ref().map(|p| (key, i as u8 + 1, p.as_fd())))
            })
            .chain(self.lingering.iter().map(|p| (LINGERING, 0, p.as_fd())))
    }

    /// Keep reading, and dropping, an ended job's pipe that a process it
    /// left behind still holds open: that process writes on (its output
    /// goes nowhere, as an ended job's output file would take it) instead
    /// of getting EPIPE or blocking on a full pipe, until it closes the
    /// pipe or this run ends, or until the pipes kept so outnumber
    /// [`Local::set_linger_max`]: then the oldest is closed (its writer's
    /// next write gets SIGPIPE, as after the run), so that jobs left
    /// running in the background by many jobs cannot take every
    /// descriptor the run needs. (A pipe the next job cannot get for want
    /// of descriptors closes a few more, oldest first.)
    pub fn linger(&mut self, fd: OwnedFd) {
        self.lingering.push_back(fd);
        while self.lingering.len() > self.linger_max {
            self.lingering.pop_front();
        }
    }

    /// The most pipes [`Local::linger`] keeps open at once (by default,
    /// no limit but the descriptors).
    pub fn set_linger_max(&mut self, n: usize) {
        self.linger_max = n;
        while self.lingering.len() > n {
            self.lingering.pop_front();
        }
    }

    /// Read what job `key`'s pipe `stream` holds into `buf` (cleared
    /// first); at end of file the pipe is closed. For [`LINGERING`], every
    /// lingering pipe is read and what it holds dropped.
    pub fn read_pipe(&mut self, key: u64, stream: u8, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        if key == LINGERING {
            let mut open = VecDeque::with_capacity(self.lingering.len());
            for fd in std::mem::take(&mut self.lingering) {
                let eof = drain(&fd, buf);
                buf.clear();
                // A read error ends it too: there is nothing to keep.
                if matches!(eof, Ok(false)) {
                    open.push_back(fd);
                }
            }
            self.lingering = open;
            return Ok(());
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return Ok(());
        };
        let slot = &mut job.pipes[usize::from(stream == 2)];
        if let Some(fd) = slot {
            if !read_some(fd.as_fd(), buf)? {
                *slot = None;
            }
        }
        Ok(())
    }

    /// Move what job `key`'s pipe `stream` holds into `to` (a file of its
    /// own, written at its position) without copying it through our
    /// memory: splice(2), up to [`SPLICE_CHUNK`] bytes. The first time,
    /// the pipe is made that large, so a job that prints much wakes the
    /// loop once a MiB, not once a 64 KiB. `Some(bytes moved)`; at end of
    /// file the pipe is closed; `None` where splice cannot write to `to`
    /// (then [`Local::read_pipe`]).
    pub fn splice_pipe(
        &mut self,
        key: u64,
        stream: u8,
        to: BorrowedFd<'_>,
    ) -> Result<Option<usize>> {
        use nix::fcntl::{FcntlArg, SpliceFFlags, fcntl, splice};
        if self.no_splice {
            return Ok(None);
        }
        let i = usize::from(stream == 2);
        let Some(job) = self.jobs.get_mut(&key) else {
            return Ok(Some(0));
        };
        let Some(fd) = &job.pipes[i] else {
            return Ok(Some(0));
        };
        if !std::mem::replace(&mut job.grown[i], true) {
            // Past the pipe size limit (pipe-max-size, a user's pipe
            // pages) it stays as it is, which is no error.
            let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(SPLICE_CHUNK as libc::c_int));
        }
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        match splice(fd, None, to, None, SPLICE_CHUNK, flags) {
            Ok(0) => {
                job.pipes[i] = None;
                Ok(Some(0))
            }
            Ok(n) => Ok(Some(n)),
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(Some(0)),
            Err(Errno::EINVAL) => {
                self.no_splice = true;
                Ok(None)
            }
            Err(e) => Err(Error::sys("splice", "job pipe", e)),
        }
    }

    /// The soonest timeout or kill-after deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.jobs
            .values()
            .flat_map(|j| [j.deadline, j.kill_at])
            .chain(self.leftovers.iter().map(|&(_, t)| t))
            .flatten()
            .min()
    }

    /// SIGKILL to the groups of [`Local::leftovers`] whose time has come
    /// (by `now`); those gone already are forgotten. A group that is
    /// the group of a job of ours now (its number used again) is left
    /// alone.
    fn kill_leftovers(&mut self, now: Option<Instant>) -> Result<()> {
        let mut keep = Vec::with_capacity(self.leftovers.len());
        for (g, at) in std::mem::take(&mut self.leftovers) {
            let due = match now {
                Some(now) => at.is_some_and(|t| now >= t),
                None => true,
            };
            // Its members that are our children (orphans we reap as the
            // subreaper) and have ended: a zombie keeps a group alive.
            let alive = !self.by_pid.contains_key(&g.as_raw()) && group_alive_after_reaping(g);
            if alive && !due {
                keep.push((g, at));
                continue;
            }
            if alive {
                signal_group(g, Signal::SIGKILL)?;
            }
            if let Some(guard) = &self.guard {
                guard_note(&guard.to, -g.as_raw());
            }
        }
        self.leftovers = keep;
        Ok(())
    }

    /// Wait until the group of each timed-out job that outlived its
    /// leader has ended, or SIGKILL it when its kill-after delay is up:
    /// for the end of a run, which leaves nothing behind.
    pub fn end_leftovers(&mut self) -> Result<()> {
        while !self.leftovers.is_empty() {
            self.kill_leftovers(Some(Instant::now()))?;
            if !self.leftovers.is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Whether some job's --timeout has passed at `now`. The caller reaps
    /// its ended children before [`Local::fire`]: a job that ended while
    /// the loop was busy elsewhere (a write to a slow stdout) ended in
    /// time, as timeout(1) counts only a command still running when the
    /// time is up.
    pub fn timeout_due(&self, now: Instant) -> bool {
        self.jobs
            .values()
            .any(|j| j.deadline.is_some_and(|t| now >= t))
    }

    /// Act on the deadlines that have passed: SIGTERM (+ SIGCONT) to a
    /// job that ran out of time, SIGKILL to one still there after the
    /// kill-after delay. Returns the keys that just timed out.
    pub fn fire(&mut self, now: Instant) -> Result<Vec<u64>> {
        self.kill_leftovers(Some(now))?;
        let mut timed_out = Vec::new();
        for (&key, j) in &mut self.jobs {
            if j.kill_at.is_some_and(|t| now >= t) {
                j.kill_at = None;
                signal_group(j.pgid, Signal::SIGKILL)?;
            }
            if j.deadline.is_some_and(|t| now >= t) {
                j.deadline = None;
                j.timed_out = true;
                timed_out.push(key);
                terminate(j, self.kill_after)?;
            }
        }
        Ok(timed_out)
    }

    /// Stop every job: SIGTERM and SIGCONT to its group now, SIGKILL after
    /// `grace` (sooner if already due). With `grace` zero, SIGKILL at once.
    pub fn stop_all(&mut self, grace: Duration) -> Result<()> {
        self.stop_grace = Some(self.stop_grace.map_or(grace, |g| g.min(grace)));
        if grace.is_zero() {
            self.kill_leftovers(None)?;
        } else if let Some(at) = Instant::now().checked_add(grace) {
            for (_, t) in &mut self.leftovers {
                *t = Some(t.map_or(at, |t| t.min(at)));
            }
        }
        for j in self.jobs.values_mut() {
            if !j.stopped {
                self.stopped_groups.push(j.pgid);
            }
            j.stopped = true;
            j.deadline = None;
            if grace.is_zero() {
                signal_group(j.pgid, Signal::SIGKILL)?;
                j.kill_at = None;
            } else {
                terminate(j, grace)?;
            }
        }
        Ok(())
    }

    /// The process groups of every job stopped so far (their members may
    /// outlive the leader).
    pub fn stopped_groups(&self) -> &[Pid] {
        &self.stopped_groups
    }
}

fn terminate(j: &mut Job, grace: Duration) -> Result<()> {
    signal_group(j.pgid, Signal::SIGTERM)?;
    signal_group(j.pgid, Signal::SIGCONT)?;
    let at = Instant::now().checked_add(grace);
    j.kill_at = match (j.kill_at, at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(())
}

/// killpg, where a group that is gone already is no error.
pub fn signal_group(pgid: Pid, sig: Signal) -> Result<()> {
    match nix::sys::signal::killpg(pgid, sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::sys("killpg", pgid, e)),
    }
}

/// The next child that has ended or stopped, left waitable (WNOWAIT) so
/// the job it belongs to can be reaped through its own handle; `None`
/// when none has.
pub fn next_waitable() -> Result<Option<nix::sys::wait::WaitStatus>> {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus};
    loop {
        return match nix::sys::wait::waitid(
            Id::All,
            WaitPidFlag::WEXITED
                | WaitPidFlag::WSTOPPED
                | WaitPidFlag::WNOHANG
                | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => Ok(None),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => Err(Error::sys("waitid", "P_ALL", e)),
            Ok(ws) => Ok(Some(ws)),
        };
    }
}

/// Read child `pid`'s report that it stopped (waitid without WNOWAIT), so
/// that the next `waitid(P_ALL, WNOWAIT)` names another child. It stays
/// stopped; a child gone meanwhile is no error.
pub fn consume_stop(pid: Pid) {
    let _ = nix::sys::wait::waitid(
        nix::sys::wait::Id::Pid(pid),
        nix::sys::wait::WaitPidFlag::WSTOPPED | nix::sys::wait::WaitPidFlag::WNOHANG,
    );
}

/// Whether process group `pgid` still has a member.
pub fn group_alive(pgid: Pid) -> bool {
    nix::sys::signal::killpg(pgid, None).is_ok()
}

/// [`group_alive`] once the group's members that are our own ended
/// children are reaped: a job's orphans come to us (the subreaper), and
/// as zombies they still count for kill(2), so a group of the dead would
/// seem to live until its kill-after delay ran out.
pub fn group_alive_after_reaping(pgid: Pid) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    while let Ok(ws) = waitid(Id::PGid(pgid), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG) {
        if ws == WaitStatus::StillAlive {
            break;
        }
    }
    group_alive(pgid)
}

/// O_NONBLOCK on a fresh pipe end of ours, in one call: it has no other
/// status flag to keep (F_SETFL leaves the access mode alone).
fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| Error::sys("fcntl", "pipe", e))?;
    Ok(())
}

/// How many lingering pipes give way when a job's pipe cannot be made
/// for want of descriptors (EMFILE).
const LINGER_GIVE_UP: usize = 16;

/// The size of one read from a job's pipe (a whole pipe's worth).
const CHUNK: usize = 64 * 1024;

/// The most one splice moves from a job's pipe to its file, and the size
/// that pipe is given then.
pub const SPLICE_CHUNK: usize = 1 << 20;

thread_local! {
    /// Where a read lands before it is appended to the caller's buffer:
    /// zeroed once, not before every read (most reads, at the end of a
    /// quiet job, find nothing).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; CHUNK]);
}

/// One read(2) from a non-blocking `fd`, appended to `buf`; false at end
/// of file. EAGAIN and EINTR read nothing.
pub fn read_some(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> Result<bool> {
    SCRATCH.with_borrow_mut(|chunk| match nix::unistd::read(fd, chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(true),
        Err(e) => Err(Error::sys("read", "job pipe", e)),
    })
}

/// Everything still in an ended job's pipe, without waiting for a writer
/// that lingers (a background grandchild): appended to `buf`. True at end
/// of file; false while some writer holds the pipe open (then
/// [`Local::linger`]).
pub fn drain(fd: &OwnedFd, buf: &mut Vec<u8>) -> Result<bool> {
    loop {
        let before = buf.len();
        if !read_some(fd.as_fd(), buf)? {
            return Ok(true);
        }
        if buf.len() == before {
            return Ok(false);
        }
    }
}
