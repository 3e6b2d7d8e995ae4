//! The one loop that runs a `pk-pool exec`: it reads items as slots free
//! up, starts jobs on this machine and on ssh hosts, reaps them, moves
//! their output, applies timeouts, `--halt`, `--retries` and signals, and
//! decides the exit status.
//!
//! One thread, one poll(2): a signalfd (SIGCHLD, SIGTSTP, and the
//! INT/TERM/HUP that stop the run), the input while a job is waiting for
//! items, the pipes of the jobs (but with `-u`), and each ssh connection.
//! A SIGCHLD wakes it; `waitid(P_ALL, WNOWAIT)` names a child that ended
//! (or stopped) without reaping it, and the handle that owns that child
//! reaps it.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use super::input::{Input, Take};
use super::joblog::{Entry, Joblog};
use super::local::{self, Local, OutTo};
use super::output::{Capture, Mode, Output, WriteError};
use super::progress::{Counts, Progress};
use super::ssh::{Conn, HostSpec};
use super::template::{Template, shell_bytes};
use super::wire::{self, How, Msg};
use crate::cmd::exit;
use crate::cmd::{Failure, Result};
use crate::error::Error;
use crate::spawn::SignalRelay;
use crate::status::Status;

/// xargs' statuses, which `pk-pool exec` follows.
pub mod code {
    /// One or more commands failed.
    pub const FAILED: u8 = 123;
    /// Stopped early: `--halt`, or no host left.
    pub const HALTED: u8 = 124;
    /// A command was killed by a signal.
    pub const KILLED: u8 = 125;
    /// A command could not be run.
    pub const CANNOT_RUN: u8 = 126;
    /// A command was not found.
    pub const NOT_FOUND: u8 = 127;
}

/// When `--halt` stops the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltWhen {
    Never,
    /// No new jobs; the running ones finish.
    Soon,
    /// The running ones are stopped too.
    Now,
}

/// `--halt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halt {
    pub when: HaltWhen,
    /// On failures (true) or successes.
    pub on_fail: bool,
    pub count: u64,
    /// As given, for messages.
    pub text: &'static str,
}

impl Halt {
    pub const NEVER: Halt = Halt {
        when: HaltWhen::Never,
        on_fail: true,
        count: 0,
        text: "never",
    };
}

/// Everything the loop needs to know from the command line.
#[derive(Debug)]
pub struct Config {
    pub template: Template,
    pub mode: Mode,
    pub keep_order: bool,
    pub timeout: Option<Duration>,
    pub kill_after: Duration,
    pub halt: Halt,
    pub retries: u32,
    pub verbose: bool,
    /// `-q`: none of pk-pool's own notes that are not failures (the
    /// descriptor-limit warning, `--halt now,success` stopping jobs, a
    /// host not waited for once every job is done).
    pub quiet: bool,
    pub joblog: Option<Joblog>,
    pub progress: Progress,
    pub hosts: Vec<HostSpec>,
    /// `-j`: slots per host without `N/`.
    pub jobs: Option<usize>,
    pub ssh: Vec<String>,
    pub remote_cmd: String,
}

#[derive(Debug)]
struct Job {
    seq: u64,
    items: Vec<Vec<u8>>,
    tries: u32,
    failed_on: Vec<usize>,
    /// Its command line was printed (-t): a start held back for want of
    /// room does not print it again.
    shown: bool,
}

#[derive(Debug)]
struct Attempt {
    job: Job,
    host: usize,
    slot: usize,
    argv: Vec<Vec<u8>>,
    start: SystemTime,
    cap: Capture,
    received: u64,
    sent: u64,
    /// Ended by a stop of ours (a signal, `--halt now`), not failed.
    stopped: bool,
    /// Its stopping (SIGSTOP ...) has been reported.
    stop_said: bool,
}

#[derive(Debug)]
enum Kind {
    Local,
    Remote {
        conn: Option<Box<Conn>>,
        ready: bool,
        bye: bool,
        /// Its stream ended: no more polling it.
        eof: bool,
    },
}

#[derive(Debug)]
struct Host {
    name: String,
    spec_slots: Option<usize>,
    free: Vec<usize>,
    running: usize,
    kind: Kind,
    gone: bool,
}

impl Host {
    /// An attempt on this host is over: its slot is free again, unless
    /// the host is gone.
    fn give_back(&mut self, slot: usize) {
        self.running -= 1;
        if !self.gone {
            self.free.push(slot);
        }
    }

    fn usable(&self) -> bool {
        !self.gone
            && match &self.kind {
                Kind::Local => true,
                Kind::Remote { ready, bye, .. } => *ready && !*bye,
            }
    }
}

/// Who a poll(2) entry belongs to.
#[derive(Debug, Clone, Copy)]
enum Who {
    Signals,
    Spawned,
    Input,
    Pipe(u64, u8),
    Host(usize),
}

struct Sched {
    cfg: Config,
    input: Input,
    input_done: bool,
    input_error: Option<Error>,
    output: Output,
    local: Local,
    hosts: Vec<Host>,
    attempts: HashMap<u64, Attempt>,
    retry: VecDeque<Job>,
    next_key: u64,
    next_seq: u64,
    done: u64,
    failed: u64,
    succeeded: u64,
    stopped_jobs: u64,
    worst: u8,
    halted: Option<bool>,
    stop_signal: Option<Signal>,
    stopping: bool,
    stop_kill_at: Option<Instant>,
    /// After a stop: when ssh hosts that have not ended their jobs are
    /// given up (their ssh gets TERM), and when their ssh gets KILL.
    hosts_give_up_at: Option<Instant>,
    hosts_kill_at: Option<Instant>,
    stdout_closed: bool,
    no_host_left: bool,
    /// An error of our own ended the run (said when it happened): the
    /// jobs still running were stopped as on a signal, and this is the
    /// exit status.
    fatal: Option<Failure>,
    /// Writing our output failed (said once, through `fatal`): what
    /// follows is dropped.
    output_failed: bool,
    /// A job could not start for want of room (a process, memory,
    /// descriptors): no new one starts until a running job has ended.
    held_back: bool,
    said_no_room: bool,
    /// With no job of ours running to wait for: when the held-back job
    /// tries again, and how many times in a row it has (see
    /// [`ROOM_WAITS`]).
    room_retry_at: Option<Instant>,
    room_waits: u32,
    buf: Vec<u8>,
}

/// How many times a job that lacks room to start, with no job of ours
/// running, tries again (after 50 ms, 100 ms ... up to 1 s: about 15 s
/// in all) before it fails: the room may be held by another program.
const ROOM_WAITS: u32 = 20;

/// The most jobs at once on one host.
pub const MAX_SLOTS: usize = 1024;

/// With `-k`, how many jobs per slot may start after the oldest one whose
/// output is not out yet (their output waits for it).
pub const AHEAD_PER_SLOT: u64 = 1024;

/// The slots of each local host (`None` for ssh hosts): what `-j` or
/// `N/:` asks (0: as many as fit, up to [`MAX_SLOTS`]), or the CPU count,
/// and no more than the file descriptors allow. Each running job holds a
/// few (its pipes and files for big output, and while it starts, the descriptors
/// handed to it): past `ulimit -n` a run would fail half-way, so it runs
/// fewer at once and says so.
fn local_slots(cfg: &Config, cpus: usize) -> Vec<Option<usize>> {
    let want: Vec<Option<usize>> = cfg
        .hosts
        .iter()
        .map(|h| {
            h.is_local()
                .then(|| match h.slots.or(cfg.jobs).unwrap_or(cpus) {
                    0 => MAX_SLOTS,
                    n => n,
                })
        })
        .collect();
    let asked: usize = want.iter().flatten().sum();
    let (room, limit) = fd_room(cfg);
    if asked <= room {
        return want;
    }
    let as_many = cfg.jobs == Some(0) && cfg.hosts.iter().all(|h| h.slots.is_none());
    if !as_many && !cfg.quiet {
        say(&format_args!(
            "{asked} jobs at once here: only enough file descriptors for {} (ulimit -n {limit})",
            room.max(1)
        ));
    }
    let mut left = room.max(1);
    want.into_iter()
        .map(|w| {
            w.map(|n| {
                let n = n.min(left).max(1);
                left = left.saturating_sub(n);
                n
            })
        })
        .collect()
}

/// How many local jobs the file descriptors leave room for, and the
/// limit (`ulimit -n`).
fn fd_room(cfg: &Config) -> (usize, u64) {
    let (free, per_job, limit) = fd_free(cfg);
    (free / per_job, limit)
}

/// How many pipes of ended jobs, held open by what those jobs left
/// running in the background, may stay open beside `slots` running
/// local jobs: what the descriptors leave (at least a few).
fn linger_room(cfg: &Config, slots: usize) -> usize {
    let (free, per_job, _) = fd_free(cfg);
    free.saturating_sub(slots.saturating_mul(per_job)).max(4)
}

/// The descriptors free for local jobs, how many one takes, and the
/// limit (`ulimit -n`).
fn fd_free(cfg: &Config) -> (usize, usize, u64) {
    use nix::sys::resource::{Resource, getrlimit};
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let open = std::fs::read_dir("/proc/self/fd").map_or(16, |d| d.count());
    // Ours: two signalfds, /dev/null, the spawners' wake pipe and their
    // starts in progress (an exec-status pipe each), the spill file, a
    // pipe pair per ssh host and the output files of the jobs an ssh host
    // was given slots for.
    let remote = cfg.hosts.iter().filter(|h| !h.is_local());
    let reserve = 8
        + 2 * super::local::MAX_SPAWNERS
        + remote.map(|h| 2 + 4 * h.slots.unwrap_or(0)).sum::<usize>();
    // A job's: its two pipes, two files for output past what memory
    // keeps (or a long line), and the three descriptors a start hands
    // over.
    let per_job = match cfg.mode {
        Mode::Group | Mode::Line => 7,
        Mode::Ungroup => 3,
    };
    let free = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(open + reserve);
    (free, per_job, limit)
}

/// Make this process the reaper of its jobs' orphans (PR_SET_CHILD_SUBREAPER):
/// a job's children whose parent died come to us, and we reap them as
/// they end (the unknown-child arm of the reaping loop). Without it they
/// go to init, or to the nearest subreaper, which may take its time (a
/// container's init, a test harness): a zombie still belongs to its
/// process group, and the group of a timed-out job counts as alive until
/// its last member is reaped, so the run waited out --kill-after for a
/// group of zombies.
pub fn become_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::sys("prctl", "PR_SET_CHILD_SUBREAPER", e).into())
}

/// Run the jobs `input` yields under `cfg`; the exit status.
pub fn run(cfg: Config, input: Input) -> Result<u8> {
    // Blocked before any child exists, so no SIGCHLD and no stop signal
    // is lost between a start and the first poll.
    // SIGTSTP (^Z) too: the jobs, in sessions of their own, do not get
    // the terminal's, so pk-pool stops them before it stops itself.
    let mut relay = SignalRelay::new(&[
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGTSTP,
    ])?;
    become_subreaper()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slots = local_slots(&cfg, cpus);
    let local_total: usize = slots.iter().flatten().sum();
    let linger_max = linger_room(&cfg, local_total);
    let mut local = Local::new(cfg.timeout, cfg.kill_after, local_total)?;
    local.set_linger_max(linger_max);
    let mut output = Output::new(cfg.mode, cfg.keep_order);
    // A write that waits on our reader still sees these.
    output
        .sink
        .watch(&[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP])?;
    let mut hosts = Vec::new();
    for (spec, local_slots) in cfg.hosts.iter().zip(slots) {
        // -j 0 on an ssh host: its CPU count.
        let slots = local_slots.or(spec.slots.or(cfg.jobs).filter(|&n| n > 0));
        let kind = if spec.is_local() {
            Kind::Local
        } else {
            Kind::Remote {
                conn: None,
                ready: false,
                bye: false,
                eof: false,
            }
        };
        let mut host = Host {
            name: spec.name.clone(),
            spec_slots: slots,
            free: Vec::new(),
            running: 0,
            kind,
            gone: false,
        };
        if matches!(host.kind, Kind::Local) {
            host.free = (1..=slots.unwrap_or(cpus)).rev().collect();
        }
        hosts.push(host);
    }
    let mut s = Sched {
        cfg,
        input,
        input_done: false,
        input_error: None,
        output,
        local,
        hosts,
        attempts: HashMap::new(),
        retry: VecDeque::new(),
        next_key: 1,
        next_seq: 1,
        done: 0,
        failed: 0,
        succeeded: 0,
        stopped_jobs: 0,
        worst: 0,
        halted: None,
        stop_signal: None,
        stopping: false,
        stop_kill_at: None,
        hosts_give_up_at: None,
        hosts_kill_at: None,
        stdout_closed: false,
        no_host_left: false,
        fatal: None,
        output_failed: false,
        held_back: false,
        said_no_room: false,
        room_retry_at: None,
        room_waits: 0,
        buf: Vec::new(),
    };
    s.connect()?;
    let mut r = s.run_loop(&mut relay);
    if let Err(e) = r {
        // An error of our own (our output cannot be written, poll
        // failed ...): no new job, and the running ones end as on a stop
        // signal, TERM then KILL after --kill-after, each one recorded.
        say(&e);
        s.fatal = Some(e);
        // The error may have cut a reaping short: children that ended
        // then, their SIGCHLD taken, are reaped before the loop waits.
        r = s
            .stop(s.cfg.kill_after)
            .and_then(|()| s.reap())
            .and_then(|()| s.run_loop(&mut relay));
    }
    // A second error on the way: no more grace. Whatever happened, no
    // command outlives us.
    if r.is_err() {
        let _ = s.local.stop_all(Duration::ZERO);
    }
    r?;
    s.finish()
}

impl Sched {
    fn connect(&mut self) -> Result<()> {
        // Milliseconds on the wire, saturated: a duration past u64 of
        // them is as good as for ever at the other end too.
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let hello = super::ssh::hello(
            self.cfg.timeout.map_or(0, |t| ms(t).max(1)),
            ms(self.cfg.kill_after),
        );
        for h in 0..self.hosts.len() {
            if matches!(self.hosts[h].kind, Kind::Local) {
                continue;
            }
            let name = self.hosts[h].name.clone();
            match Conn::open(&self.cfg.ssh, &name, &self.cfg.remote_cmd) {
                Ok(mut conn) => {
                    if !conn.send(&hello)? {
                        // The ssh process ended at once: its exit is reaped
                        // and reported by the loop.
                    }
                    if let Kind::Remote { conn: c, .. } = &mut self.hosts[h].kind {
                        *c = Some(Box::new(conn));
                    }
                }
                Err(e) => {
                    say(&format_args!("ssh({name}): {e}"));
                    self.hosts[h].gone = true;
                }
            }
        }
        Ok(())
    }

    fn counts(&self) -> Counts {
        Counts {
            done: self.done,
            running: self.attempts.len() as u64,
            failed: self.failed,
            total: (self.input_done && self.retry.is_empty()).then_some(self.next_seq - 1),
        }
    }

    fn run_loop(&mut self, relay: &mut SignalRelay) -> Result<()> {
        let mut want_input;
        loop {
            want_input = self.start_jobs()?;
            self.close_idle_hosts()?;
            if self.finished() {
                break;
            }
            let c = self.counts();
            self.cfg.progress.update(c);

            let mut who = Vec::with_capacity(8);
            let mut raw = Vec::with_capacity(8);
            who.push(Who::Signals);
            raw.push(relay.as_fd());
            if let (true, Some(fd)) = (self.local.starting(), self.local.wake_fd()) {
                who.push(Who::Spawned);
                raw.push(fd);
            }
            if want_input {
                if let Some(fd) = self.input.fd() {
                    who.push(Who::Input);
                    raw.push(fd);
                }
            }
            for (key, stream, fd) in self.local.pipes() {
                who.push(Who::Pipe(key, stream));
                raw.push(fd);
            }
            for (h, host) in self.hosts.iter().enumerate() {
                if let Kind::Remote {
                    conn: Some(conn),
                    eof: false,
                    ..
                } = &host.kind
                {
                    who.push(Who::Host(h));
                    raw.push(conn.from.get_ref().as_fd());
                }
            }
            let deadline = [
                self.local.next_deadline(),
                self.stop_kill_at,
                self.hosts_give_up_at,
                self.hosts_kill_at,
                self.room_retry_at,
            ]
            .into_iter()
            .flatten()
            .min();
            let mut fds: Vec<PollFd<'_>> = raw
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, crate::process::poll_timeout(deadline)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::sys("poll", "jobs", e).into()),
            }
            let ready: Vec<Who> = fds
                .iter()
                .zip(&who)
                .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, w)| *w)
                .collect();
            drop(fds);
            drop(raw);
            for w in ready {
                match w {
                    Who::Signals => {
                        while let Some(got) = relay.take()? {
                            match got.signal {
                                Signal::SIGCHLD => self.reap()?,
                                Signal::SIGTSTP => self.suspend()?,
                                sig => self.on_stop_signal(sig)?,
                            }
                        }
                    }
                    Who::Spawned => {
                        for not in self.local.collect()? {
                            self.not_started(not)?;
                        }
                        // A child that ended before it was registered.
                        self.reap()?;
                    }
                    Who::Input => {
                        if let Err(e) = self.input.fill() {
                            self.input_failed(e);
                        }
                    }
                    Who::Pipe(key, stream) => self.on_pipe(key, stream)?,
                    Who::Host(h) => self.on_host(h)?,
                }
            }
            // SIGCHLD may have arrived while we handled other things: a job
            // that ended before its time was up is reaped first, so that
            // its --timeout does not catch it.
            let now = Instant::now();
            if self.local.timeout_due(now) {
                self.reap()?;
            }
            self.local.fire(now)?;
            if self.room_retry_at.is_some_and(|t| now >= t) {
                self.room_retry_at = None;
                self.held_back = false;
            }
            if self.stop_kill_at.is_some_and(|t| now >= t) {
                self.stop_kill_at = None;
                for &g in self.local.stopped_groups() {
                    local::signal_group(g, Signal::SIGKILL)?;
                }
            }
            self.give_up_hosts(now)?;
        }
        Ok(())
    }

    fn input_failed(&mut self, e: Error) {
        say(&e);
        self.input_error = Some(e);
        self.input_done = true;
    }

    /// Start jobs while slots are free and items come. True when it
    /// stopped because the input must be read first.
    fn start_jobs(&mut self) -> Result<bool> {
        loop {
            if self.held_back && self.attempts.is_empty() && self.room_retry_at.is_none() {
                // Whatever removed the last attempt (a host that dropped)
                // freed what the held-back job waited for.
                self.held_back = false;
            }
            if self.stopping || self.halted.is_some() || self.stdout_closed || self.held_back {
                return Ok(false);
            }
            if !self.hosts.iter().any(|h| h.usable() || self.connecting(h)) {
                if self.retry.is_empty() && !self.input_done && !self.no_host_left {
                    // Whether there is anything to run at all: with no
                    // input, nothing runs and all is well (as with xargs
                    // -r and parallel), host or no host.
                    match self.input.take() {
                        Ok(Take::NeedRead) => return Ok(true),
                        Ok(Take::End) => self.input_done = true,
                        Ok(Take::Items(_)) => {}
                        Err(e) => self.input_failed(e),
                    }
                }
                if !(self.input_done && self.retry.is_empty()) {
                    if !self.no_host_left {
                        say(&"no host left to run jobs on");
                    }
                    self.no_host_left = true;
                }
                return Ok(false);
            }
            let job = match self.retry.front() {
                Some(_) => {
                    // A retry waits for a slot (preferably on a host where it
                    // has not failed).
                    if self.free_host(&self.retry[0].failed_on).is_none() {
                        return Ok(false);
                    }
                    self.retry.pop_front().expect("checked")
                }
                None => {
                    if self.input_done || self.free_host(&[]).is_none() || self.too_far_ahead() {
                        return Ok(false);
                    }
                    match self.input.take() {
                        Ok(Take::Items(items)) => {
                            let seq = self.next_seq;
                            self.next_seq += 1;
                            Job {
                                seq,
                                items,
                                tries: 0,
                                failed_on: Vec::new(),
                                shown: false,
                            }
                        }
                        Ok(Take::NeedRead) => return Ok(true),
                        Ok(Take::End) => {
                            self.input_done = true;
                            return Ok(false);
                        }
                        Err(e) => {
                            self.input_failed(e);
                            return Ok(false);
                        }
                    }
                }
            };
            let h = self
                .free_host(&job.failed_on)
                .expect("a free slot was checked");
            self.launch(job, h)?;
        }
    }

    /// With `-k`, whether the next job would be too far ahead of the
    /// oldest one not yet printed: each job in between is held (a record,
    /// its output in the spill file), so behind a job that does not end
    /// they would grow without bound. [`AHEAD_PER_SLOT`] per slot.
    fn too_far_ahead(&self) -> bool {
        if !self.cfg.keep_order {
            return false;
        }
        let slots: usize = self
            .hosts
            .iter()
            .filter(|h| !h.gone)
            .map(|h| h.free.len() + h.running)
            .sum();
        let limit = AHEAD_PER_SLOT.saturating_mul(slots.max(1) as u64);
        self.next_seq.saturating_sub(self.output.next_seq()) >= limit
    }

    fn connecting(&self, h: &Host) -> bool {
        !h.gone && matches!(h.kind, Kind::Remote { ready: false, .. })
    }

    /// A usable host with a free slot, not in `avoid` if there is one.
    fn free_host(&self, avoid: &[usize]) -> Option<usize> {
        let free = |h: &Host| h.usable() && !h.free.is_empty();
        let mut best = None;
        for (i, h) in self.hosts.iter().enumerate() {
            if !free(h) {
                continue;
            }
            if !avoid.contains(&i) {
                // The host with the most free slots first: load spreads.
                if best.is_none_or(|b: usize| h.free.len() > self.hosts[b].free.len()) {
                    best = Some(i);
                }
            }
        }
        best.or_else(|| self.hosts.iter().position(free))
    }

    fn launch(&mut self, mut job: Job, h: usize) -> Result<()> {
        let slot = self.hosts[h].free.pop().expect("a free slot");
        self.hosts[h].running += 1;
        job.tries += 1;
        let argv = self.cfg.template.render(&job.items, job.seq, slot);
        if self.cfg.verbose && (!job.shown || job.tries > 1) {
            say_raw(&shell_bytes(&argv));
        }
        job.shown = true;
        let cap = self.output.capture(job.seq);
        let key = self.next_key;
        self.next_key += 1;
        let (out, err) = match &cap {
            Capture::Group(_) | Capture::Line { .. } => (OutTo::Pipe, OutTo::Pipe),
            Capture::Direct => (OutTo::Inherit, OutTo::Inherit),
        };
        let mut attempt = Attempt {
            job,
            host: h,
            slot,
            argv,
            start: SystemTime::now(),
            cap,
            received: 0,
            sent: 0,
            stopped: false,
            stop_said: false,
        };
        match &mut self.hosts[h].kind {
            Kind::Local => {
                let refused = self.local.start(key, &attempt.argv, out, err)?;
                self.attempts.insert(key, attempt);
                if let Some(not) = refused {
                    self.not_started(not)?;
                }
            }
            Kind::Remote { conn, .. } => {
                let msg = Msg::Job {
                    id: key,
                    argv: attempt.argv.clone(),
                };
                attempt.sent = (msg.encode().len() + crate::pipe::HEADER) as u64;
                let sent = match conn {
                    Some(c) => c.send(&msg)?,
                    None => false,
                };
                self.attempts.insert(key, attempt);
                if !sent {
                    self.host_dropped(h, "the connection is closed".into())?;
                }
            }
        }
        Ok(())
    }

    /// Reap every child that has ended; continue every job that stopped.
    fn reap(&mut self) -> Result<()> {
        loop {
            let Some(ws) = super::local::next_waitable()? else {
                return Ok(());
            };
            let Some(pid) = ws.pid() else { return Ok(()) };
            let raw = pid.as_raw();
            if let WaitStatus::Stopped(_, sig) = ws {
                if !self.local.owns(raw) && self.local.starting() {
                    // Maybe a job not registered yet: once it is.
                    return Ok(());
                }
                local::consume_stop(pid);
                if let Some(key) = self.local.key_of(raw) {
                    self.job_stopped(key, raw, sig)?;
                }
                continue;
            }
            if self.local.owns(raw) {
                match self.local.reaped(raw)? {
                    Some(e) => self.local_ended(e)?,
                    None => return Ok(()),
                }
                continue;
            }
            let host = self.hosts.iter().position(
                |h| matches!(&h.kind, Kind::Remote { conn: Some(c), .. } if c.ssh.pid() == pid),
            );
            match host {
                Some(h) => self.ssh_exited(h)?,
                // Started by a spawner, not registered yet: once it is.
                None if self.local.starting() => return Ok(()),
                None => {
                    // Not a child we know of: reap it so it is not seen again.
                    let _ = crate::process::waitpid(pid);
                }
            }
        }
    }

    /// Job `key` (pid `pid`) stopped, by `sig`. It runs without a terminal
    /// and with no shell to continue it, so nothing else ever would: it is
    /// continued at once, with a line the first time. (Pausing the run is
    /// stopping pk-pool, which stops the jobs and continues them with it.)
    fn job_stopped(&mut self, key: u64, pid: i32, sig: Signal) -> Result<()> {
        self.local.continue_job(pid)?;
        let Some(a) = self.attempts.get_mut(&key) else {
            return Ok(());
        };
        if !std::mem::replace(&mut a.stop_said, true) {
            let command = shell_bytes(&a.argv);
            say(&format_args!(
                "job {}{} ({}): stopped by signal {} ({}); continued",
                a.job.seq,
                on_host(&self.hosts[a.host].name),
                shortened(&String::from_utf8_lossy(&command)),
                sig as i32,
                sig.as_str()
            ));
        }
        Ok(())
    }

    /// SIGTSTP (^Z, or kill -TSTP): every job's group gets SIGSTOP, then
    /// pk-pool stops itself with SIGTSTP (its shell sees it stopped, as
    /// with xargs); once continued (fg, bg, SIGCONT), it continues the
    /// jobs, their deadlines moved by the time spent stopped. Jobs on ssh
    /// hosts run on meanwhile.
    fn suspend(&mut self) -> Result<()> {
        // Jobs being started are known first, so each is stopped.
        for not in self.local.settle()? {
            self.not_started(not)?;
        }
        self.local.signal_all(Signal::SIGSTOP)?;
        let at = Instant::now();
        let stopped = stop_self(Signal::SIGTSTP);
        let paused = at.elapsed();
        self.local.postpone(paused);
        self.stop_kill_at = self.stop_kill_at.and_then(|t| t.checked_add(paused));
        let continued = self.local.signal_all(Signal::SIGCONT);
        stopped?;
        Ok(continued?)
    }

    fn local_ended(&mut self, mut e: local::Ended) -> Result<()> {
        for (i, p) in e.pipes.iter_mut().enumerate() {
            if let Some(fd) = p.take() {
                let mut buf = std::mem::take(&mut self.buf);
                buf.clear();
                let eof = local::drain(&fd, &mut buf)?;
                self.data(e.key, i as u8 + 1, &buf)?;
                self.buf = buf;
                if !eof {
                    self.local.linger(fd);
                }
            }
        }
        let how = how_of(e.status);
        if e.stopped {
            if let Some(a) = self.attempts.get_mut(&e.key) {
                a.stopped = true;
            }
        }
        self.ended(e.key, how, e.timed_out, e.runtime, None)
    }

    fn on_pipe(&mut self, key: u64, stream: u8) -> Result<()> {
        if let Some(a) = self.attempts.get_mut(&key) {
            if let Some(to) = self.output.file_of(&a.cap, stream) {
                if let Some(n) = self.local.splice_pipe(key, stream, to)? {
                    if stream == 1 {
                        a.received += n as u64;
                    }
                    return Ok(());
                }
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.local.read_pipe(key, stream, &mut buf);
        if r.is_ok() {
            self.data(key, stream, &buf)?;
        }
        self.buf = buf;
        r.map_err(Failure::from)
    }

    /// Output of job `key` arrived.
    fn data(&mut self, key: u64, stream: u8, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let Some(a) = self.attempts.get_mut(&key) else {
            return Ok(());
        };
        if stream == 1 {
            a.received += bytes.len() as u64;
        }
        let (p, o) = (&self.cfg.progress, &mut self.output);
        let r = p.suspend(|| o.data(&mut a.cap, stream, bytes));
        self.written(r)
    }

    /// Act on the result of writing our output.
    fn written(&mut self, r: std::result::Result<(), WriteError>) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(WriteError::Closed) => {
                // Whoever read our output has gone: stop, quietly.
                if !self.stdout_closed {
                    self.stdout_closed = true;
                    self.stop(self.cfg.kill_after)?;
                }
                Ok(())
            }
            // Said once (it ends the run, see `run`); what follows has
            // nowhere to go.
            Err(WriteError::Other(_)) if self.output_failed => Ok(()),
            Err(WriteError::Other(e)) => {
                self.output_failed = true;
                Err(e.into())
            }
        }
    }

    /// A job whose command did not start: a job that failed, or, when it
    /// lacked room (see [`local::no_room`]), one that waits first in line
    /// until another job has ended; meanwhile no new job starts (fewer at
    /// once, as GNU parallel lowers its job count). With no other job of
    /// ours running, it tries again after a while, and fails after
    /// [`ROOM_WAITS`] tries.
    fn not_started(&mut self, not: local::NotStarted) -> Result<()> {
        let alone = self.attempts.len() < 2;
        if !not.no_room || (alone && self.room_waits >= ROOM_WAITS) {
            return self.ended(not.key, not.how, false, Duration::ZERO, Some(not.message));
        }
        if alone {
            self.room_waits += 1;
            let wait = Duration::from_millis(50).saturating_mul(self.room_waits);
            self.room_retry_at = Instant::now().checked_add(wait.min(Duration::from_secs(1)));
        }
        let Some(a) = self.attempts.remove(&not.key) else {
            return Ok(());
        };
        self.hosts[a.host].give_back(a.slot);
        self.output.discard(a.cap)?;
        if !self.said_no_room {
            self.said_no_room = true;
            say(&format_args!(
                "{}: fewer jobs at once, each waiting for one to end",
                not.message
            ));
        }
        let mut job = a.job;
        job.tries -= 1;
        self.retry.push_front(job);
        self.held_back = true;
        Ok(())
    }

    /// An attempt ended: retry it, or record it for good.
    fn ended(
        &mut self,
        key: u64,
        how: How,
        timed_out: bool,
        runtime: Duration,
        message: Option<String>,
    ) -> Result<()> {
        let Some(a) = self.attempts.remove(&key) else {
            return Ok(());
        };
        // A job held back for want of room may try again; one that ran
        // shows there was room.
        self.held_back = false;
        self.room_retry_at = None;
        if message.is_none() {
            self.room_waits = 0;
        }
        self.hosts[a.host].give_back(a.slot);
        let Attempt {
            mut job,
            host: h,
            argv,
            start,
            cap,
            received,
            sent,
            mut stopped,
            ..
        } = a;
        // A job its --timeout caught failed, however it ended: one that
        // survived the SIGTERM and exited 0 before the SIGKILL too, as
        // GNU parallel (and timeout(1), whose status is then 124) count it.
        let failed = how != How::Exited(0) || timed_out;
        // With -u a job writes to our stdout itself: one that failed
        // because the reader has gone (SIGPIPE, or EPIPE) ends the run as
        // our own failed write does, quietly.
        if failed
            && self.cfg.mode == Mode::Ungroup
            && !self.stdout_closed
            && super::output::stdout_broken()
        {
            self.written(Err(WriteError::Closed))?;
            stopped = true;
        }
        // Spelt out only where it is shown: a failure's line, the joblog.
        let command_bytes = if failed || self.cfg.joblog.is_some() {
            shell_bytes(&argv)
        } else {
            Vec::new()
        };
        let command = || shortened(&String::from_utf8_lossy(&command_bytes)).into_owned();
        let retry = failed
            && !stopped
            && !self.stopping
            && self.halted.is_none()
            && job.tries <= self.cfg.retries;
        // An error writing its output ends the run, once the job is
        // recorded (the joblog, the counts).
        let mut unwritten = Ok(());
        let receive = if retry {
            self.output.discard(cap)?;
            received
        } else {
            let (p, o) = (&self.cfg.progress, &mut self.output);
            match p.suspend(|| o.finish(job.seq, cap)) {
                Ok(n) => received.max(n),
                Err(e) => {
                    unwritten = self.written(Err(e));
                    received
                }
            }
        };
        // One line per job, for its last attempt, as GNU parallel writes
        // it: a retried attempt is not logged.
        if let (Some(log), false) = (&self.cfg.joblog, retry) {
            let r = log.record(&Entry {
                seq: job.seq,
                host: &self.hosts[h].name,
                start,
                runtime,
                send: sent,
                receive,
                how,
                timed_out,
                command: &command_bytes,
            });
            match r {
                // `--joblog -` whose reader went away: stdout is closed,
                // as when a job's output finds it so.
                Err(e) if log.is_stdout() && e.errno() == Some(nix::errno::Errno::EPIPE) => {
                    self.written(Err(WriteError::Closed))?
                }
                // Like our output's: it ends the run once the job is
                // counted, said once.
                Err(e) => {
                    let failed = self.written(Err(WriteError::Other(e)));
                    if unwritten.is_ok() {
                        unwritten = failed;
                    }
                }
                Ok(()) => {}
            }
        }
        if retry {
            if let Some(m) = describe(&how, timed_out, self.cfg.timeout, message.as_deref()) {
                say(&format_args!(
                    "job {}{} ({}): {m}; trying again ({} of {})",
                    job.seq,
                    on_host(&self.hosts[h].name),
                    command(),
                    job.tries + 1,
                    self.cfg.retries + 1
                ));
            }
            job.failed_on.push(h);
            self.retry.push_back(job);
            return Ok(());
        }
        self.done += 1;
        if stopped {
            // Ended by our stop, however it ended (one that exits 0 on
            // SIGTERM too).
            self.stopped_jobs += 1;
        }
        if stopped && failed {
            // Not a failure of its own.
        } else if failed {
            self.failed += 1;
            self.worst = self.worst.max(rank(how, timed_out));
            if let Some(m) = describe(&how, timed_out, self.cfg.timeout, message.as_deref()) {
                say(&format_args!(
                    "job {}{} ({}): {m}",
                    job.seq,
                    on_host(&self.hosts[h].name),
                    command()
                ));
            }
        } else {
            self.succeeded += 1;
        }
        if self.cfg.mode == Mode::Line && self.cfg.keep_order {
            let next = self.output.next_seq();
            if let Some(a) = self.attempts.values_mut().find(|a| a.job.seq == next) {
                let (p, o) = (&self.cfg.progress, &mut self.output);
                let r = p.suspend(|| o.promote(&mut a.cap));
                self.written(r)?;
            }
        }
        unwritten?;
        self.check_halt()
    }

    fn check_halt(&mut self) -> Result<()> {
        let halt = self.cfg.halt;
        if halt.when == HaltWhen::Never || self.halted.is_some() {
            return Ok(());
        }
        let n = if halt.on_fail {
            self.failed
        } else {
            self.succeeded
        };
        if n < halt.count {
            return Ok(());
        }
        self.halted = Some(halt.on_fail);
        let running = self.attempts.len();
        let what = if halt.on_fail { "failed" } else { "succeeded" };
        if halt.when == HaltWhen::Now {
            if halt.on_fail || !self.cfg.quiet {
                say(&format_args!(
                    "--halt {}: {n} job{} {what}; stopping {running} running job{}",
                    halt.text,
                    plural(n),
                    plural(running as u64)
                ));
            }
            self.stop(self.cfg.kill_after)?;
        } else if halt.on_fail {
            say(&format_args!(
                "--halt {}: {n} job{} {what}; no new jobs, waiting for {running} running",
                halt.text,
                plural(n)
            ));
        }
        Ok(())
    }

    fn on_stop_signal(&mut self, sig: Signal) -> Result<()> {
        if self.stop_signal.is_some() {
            // A second signal: no more grace.
            self.output.sink.give_up_at(Some(Instant::now()));
            self.hosts_give_up_at = Some(Instant::now());
            self.local.stop_all(Duration::ZERO)?;
            for &g in self.local.stopped_groups() {
                local::signal_group(g, Signal::SIGKILL)?;
            }
            self.stop_kill_at = None;
            return Ok(());
        }
        self.stop_signal = Some(sig);
        // Output our reader does not take by the end of the grace is dropped.
        self.output
            .sink
            .give_up_at(Instant::now().checked_add(self.cfg.kill_after));
        self.stop(self.cfg.kill_after)
    }

    /// No new jobs; TERM to every running one's group, KILL after `grace`.
    fn stop(&mut self, grace: Duration) -> Result<()> {
        self.stopping = true;
        self.local.stop_all(grace)?;
        for a in self.attempts.values_mut() {
            a.stopped = true;
        }
        self.stop_kill_at = Instant::now().checked_add(grace);
        // A worker ends its jobs within the grace of receiving `stop`, and
        // the last results still have to travel: a host gets that twice,
        // and a second more, before it is given up.
        if self.hosts_give_up_at.is_none() {
            self.hosts_give_up_at = grace
                .checked_mul(2)
                .and_then(|g| g.checked_add(Duration::from_secs(1)))
                .and_then(|g| Instant::now().checked_add(g));
        }
        for h in 0..self.hosts.len() {
            if let Kind::Remote {
                conn: Some(conn), ..
            } = &mut self.hosts[h].kind
            {
                conn.send(&Msg::Stop)?;
            }
        }
        Ok(())
    }

    /// After a stop, an ssh host that has not ended (a hung connection,
    /// a worker that does not answer) is given up when its time is up:
    /// its jobs are lost, its ssh gets SIGTERM (and SIGCONT), and SIGKILL
    /// a grace later if it is still there.
    fn give_up_hosts(&mut self, now: Instant) -> Result<()> {
        if self.hosts_give_up_at.is_some_and(|t| now >= t) {
            self.hosts_give_up_at = None;
            for h in 0..self.hosts.len() {
                let (running, gone) = (self.hosts[h].running, self.hosts[h].gone);
                let Kind::Remote { conn: Some(c), .. } = &mut self.hosts[h].kind else {
                    continue;
                };
                if running > 0 && !gone {
                    self.host_dropped(h, "no answer to the stop in time".into())?;
                } else {
                    c.close();
                    local::signal_group(c.ssh.pid(), Signal::SIGTERM)?;
                    local::signal_group(c.ssh.pid(), Signal::SIGCONT)?;
                }
            }
            self.hosts_kill_at = now.checked_add(self.cfg.kill_after);
        }
        if self.hosts_kill_at.is_some_and(|t| now >= t) {
            self.hosts_kill_at = None;
            for host in &self.hosts {
                if let Kind::Remote { conn: Some(c), .. } = &host.kind {
                    local::signal_group(c.ssh.pid(), Signal::SIGKILL)?;
                }
            }
        }
        Ok(())
    }

    /// Frames from host `h`.
    fn on_host(&mut self, h: usize) -> Result<()> {
        loop {
            let name = self.hosts[h].name.clone();
            let Kind::Remote {
                conn: Some(conn), ..
            } = &mut self.hosts[h].kind
            else {
                return Ok(());
            };
            let msg = match conn.recv(&name) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(super::ssh::Closed(e)) => {
                    let why =
                        e.map_or_else(|| "the connection ended".to_string(), |e| e.to_string());
                    if let Kind::Remote { conn, eof, .. } = &mut self.hosts[h].kind {
                        *eof = true;
                        if let Some(c) = conn {
                            c.close();
                        }
                    }
                    // The ssh process is reaped (and the host given up)
                    // when it exits; its output is all read by now.
                    self.host_lost_stream(h, why)?;
                    return Ok(());
                }
            };
            match msg {
                Msg::Ready { version, cpus } => {
                    if version != wire::VERSION {
                        self.host_dropped(
                            h,
                            format!(
                                "its pk-pool worker speaks protocol {version}, this pk-pool {}",
                                wire::VERSION
                            ),
                        )?;
                        return Ok(());
                    }
                    let host = &mut self.hosts[h];
                    let slots = host.spec_slots.unwrap_or(cpus.max(1) as usize);
                    host.free = (1..=slots).rev().collect();
                    if let Kind::Remote { ready, .. } = &mut host.kind {
                        *ready = true;
                    }
                }
                Msg::Output { id, stream, bytes } => self.data(id, stream, &bytes)?,
                Msg::Done(d) => {
                    let message = (!d.message.is_empty())
                        .then(|| String::from_utf8_lossy(&d.message).into_owned());
                    self.ended(
                        d.id,
                        d.how,
                        d.timed_out,
                        Duration::from_micros(d.runtime_us),
                        message,
                    )?;
                }
                other => {
                    self.host_dropped(h, format!("unexpected message from the worker: {other:?}"))?;
                    return Ok(());
                }
            }
        }
    }

    /// The worker's stream ended or broke; the jobs still on it are lost.
    /// Without running jobs it waits for ssh's exit, which tells more.
    fn host_lost_stream(&mut self, h: usize, why: String) -> Result<()> {
        if self.hosts[h].running == 0 || self.hosts[h].gone {
            return Ok(());
        }
        self.host_dropped(h, why)
    }

    /// ssh to host `h` exited: read what it left, reap it.
    fn ssh_exited(&mut self, h: usize) -> Result<()> {
        self.on_host(h)?;
        let name = self.hosts[h].name.clone();
        let Kind::Remote { conn, bye, .. } = &mut self.hosts[h].kind else {
            return Ok(());
        };
        let Some(mut c) = conn.take() else {
            return Ok(());
        };
        let status = c.ssh.try_wait()?.unwrap_or(Status::Exited(255));
        let bye = *bye;
        let host = &mut self.hosts[h];
        if host.gone {
            // Given up already, and said so.
            return Ok(());
        }
        host.gone = true;
        host.free.clear();
        if !(bye && status.success() && host.running == 0) {
            let ready = matches!(host.kind, Kind::Remote { ready: true, .. });
            let why = format!(
                "{} (ssh {status})",
                if ready {
                    "the connection ended"
                } else {
                    "no worker answered"
                }
            );
            if host.running > 0 {
                self.host_dropped(h, why)?;
            } else if !bye {
                say(&format_args!("ssh({name}): {why}"));
            }
        }
        Ok(())
    }

    /// Give host `h` up: its running jobs are retried elsewhere or lost.
    fn host_dropped(&mut self, h: usize, why: String) -> Result<()> {
        let name = self.hosts[h].name.clone();
        {
            let host = &mut self.hosts[h];
            host.gone = true;
            host.free.clear();
            if let Kind::Remote { conn: Some(c), .. } = &mut host.kind {
                c.close();
                // (SIGCONT: a stopped ssh would keep the TERM pending.)
                let _ = local::signal_group(c.ssh.pid(), Signal::SIGTERM);
                let _ = local::signal_group(c.ssh.pid(), Signal::SIGCONT);
            }
        }
        let keys: Vec<u64> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.host == h)
            .map(|(&k, _)| k)
            .collect();
        let others = self
            .hosts
            .iter()
            .enumerate()
            .any(|(i, x)| i != h && (x.usable() || self.connecting(x)));
        let mut retried = 0;
        let mut lost = Vec::new();
        for key in keys {
            let a = self.attempts.get(&key).expect("listed");
            if !self.stopping && others && a.job.tries <= self.cfg.retries {
                let a = self.attempts.remove(&key).expect("listed");
                self.hosts[h].running -= 1;
                self.output.discard(a.cap)?;
                let mut job = a.job;
                job.failed_on.push(h);
                self.retry.push_back(job);
                retried += 1;
            } else {
                lost.push(key);
            }
        }
        let mut line = format!("ssh({name}): {why}");
        if retried > 0 {
            line.push_str(&format!(
                "; {retried} running job{} to run again elsewhere",
                plural(retried)
            ));
        }
        say(&line);
        for key in lost {
            self.ended(
                key,
                How::Lost,
                false,
                Duration::ZERO,
                Some(format!("lost: host {name} dropped")),
            )?;
        }
        Ok(())
    }

    /// Say goodbye to remote hosts with nothing left to do.
    fn close_idle_hosts(&mut self) -> Result<()> {
        let no_more = self.stopping
            || self.halted.is_some()
            || self.stdout_closed
            || self.no_host_left
            || (self.input_done && self.retry.is_empty());
        // A job still running elsewhere may fail and be retried here.
        let no_retry = self.cfg.retries == 0
            || self.attempts.is_empty()
            || self.stopping
            || self.halted.is_some()
            || self.stdout_closed;
        if !no_more || !no_retry {
            return Ok(());
        }
        let all_done = !(self.stopping || self.halted.is_some() || self.stdout_closed);
        for host in &mut self.hosts {
            if host.running > 0 {
                continue;
            }
            if let Kind::Remote {
                conn: Some(c),
                bye,
                ready,
                ..
            } = &mut host.kind
            {
                if !*ready && !host.gone {
                    // Still connecting (a host that does not answer, with
                    // no ConnectTimeout, takes minutes) and nothing left
                    // for it: its ssh is ended, not waited for.
                    if all_done && !self.cfg.quiet {
                        say(&format_args!(
                            "ssh({}): no worker answered before the jobs were done; not waited for",
                            host.name
                        ));
                    }
                    host.gone = true;
                    *bye = true;
                    c.close();
                    local::signal_group(c.ssh.pid(), Signal::SIGTERM)?;
                    continue;
                }
                if !*bye {
                    *bye = true;
                    c.send(&Msg::Bye)?;
                    c.close();
                }
            }
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        let no_more = self.stopping
            || self.halted.is_some()
            || self.stdout_closed
            || self.no_host_left
            || (self.input_done && self.retry.is_empty());
        no_more
            && self.attempts.is_empty()
            && self.local.len() == 0
            && self
                .hosts
                .iter()
                .all(|h| !matches!(h.kind, Kind::Remote { conn: Some(_), .. }))
    }

    /// After the loop: held output, stragglers, the summary, the status.
    fn finish(mut self) -> Result<u8> {
        let (p, o) = (&self.cfg.progress, &mut self.output);
        let r = p.suspend(|| o.end());
        self.written(r)?;
        let c = self.counts();
        self.cfg.progress.finish(c);
        // Members of a stopped job's group that outlived its leader.
        if self.stopping {
            let kill_at = self.stop_kill_at.unwrap_or_else(Instant::now);
            let mut groups = self.local.stopped_groups().to_vec();
            loop {
                groups.retain(|&g| local::group_alive_after_reaping(g));
                if groups.is_empty() {
                    break;
                }
                if Instant::now() >= kill_at {
                    for &g in &groups {
                        local::signal_group(g, Signal::SIGKILL)?;
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if self.stdout_closed {
            return Ok(exit::signal_code(libc::SIGPIPE));
        }
        let total = self.done;
        if self.failed > 0 {
            say(&format_args!("{} of {total} jobs failed", self.failed));
        }
        if let Some(e) = self.fatal.take() {
            // Said when it happened.
            if self.stopped_jobs > 0 {
                say(&format_args!(
                    "stopped by the error above: {} running job{} ended, no new job started",
                    self.stopped_jobs,
                    plural(self.stopped_jobs)
                ));
            }
            return Ok(e.code());
        }
        if let Some(sig) = self.stop_signal {
            say(&format_args!(
                "stopped by {}: {} running job{} ended, no new job started",
                sig.as_str(),
                self.stopped_jobs,
                plural(self.stopped_jobs)
            ));
            return Ok(exit::signal_code(sig as i32));
        }
        if let Some(e) = self.input_error.take() {
            // Said when it happened.
            return Ok(crate::cmd::exit_code(e.kind()));
        }
        // --halt soon that skipped nothing (the failure that halted the
        // run was the last job) stopped nothing: the failures' status.
        let halted = self.halted == Some(true)
            && (!self.retry.is_empty() || self.stopped_jobs > 0 || self.input_left());
        if halted || self.no_host_left {
            return Ok(code::HALTED);
        }
        Ok(match self.worst {
            0 => exit::OK,
            r => from_rank(r),
        })
    }
}

impl Sched {
    /// Whether input is left that no job ran for, looked at without
    /// waiting: an input still open with nothing to read yet counts.
    fn input_left(&mut self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if self.input_done {
            return false;
        }
        loop {
            match self.input.take() {
                Ok(Take::Items(_)) | Err(_) => return true,
                Ok(Take::End) => return false,
                Ok(Take::NeedRead) => {
                    let Some(fd) = self.input.fd() else {
                        return true;
                    };
                    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
                    if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
                        || self.input.fill().is_err()
                    {
                        return true;
                    }
                }
            }
        }
    }
}

fn how_of(status: Status) -> How {
    match status {
        Status::Exited(c) => How::Exited(c),
        Status::Signaled { signal, .. } | Status::Stopped(signal) => How::Signaled(signal),
        Status::Continued => How::Exited(0),
    }
}

/// The severity of a failure, for the exit status: the worst one wins.
fn rank(how: How, timed_out: bool) -> u8 {
    match how {
        How::NotFound => 4,
        How::CannotRun => 3,
        How::Signaled(_) => 2,
        _ if timed_out => 2,
        _ => 1,
    }
}

fn from_rank(r: u8) -> u8 {
    match r {
        4 => code::NOT_FOUND,
        3 => code::CANNOT_RUN,
        2 => code::KILLED,
        _ => code::FAILED,
    }
}

/// What to say about a failed job; `None` for one that did not fail.
fn describe(
    how: &How,
    timed_out: bool,
    timeout: Option<Duration>,
    message: Option<&str>,
) -> Option<String> {
    let what = match how {
        How::Exited(0) if !timed_out => return None,
        How::Exited(c) => format!("exited, status={c}"),
        How::Signaled(s) => Status::Signaled {
            signal: *s,
            core_dumped: false,
        }
        .to_string(),
        How::CannotRun | How::NotFound | How::Lost => {
            message.unwrap_or("could not run").to_string()
        }
    };
    Some(match (timed_out, timeout) {
        (true, Some(t)) => format!(
            "timed out after {}: {what}",
            crate::cmd::duration::DurationArg(t)
        ),
        _ => what,
    })
}

/// The longest command a job's stderr line shows whole.
const SHOWN: usize = 200;

/// A command line for a message: up to [`SHOWN`] bytes, then `...` (the
/// joblog, -t and --dry-run show it whole).
fn shortened(command: &str) -> std::borrow::Cow<'_, str> {
    if command.len() <= SHOWN {
        return command.into();
    }
    let mut end = SHOWN;
    while !command.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &command[..end]).into()
}

fn on_host(name: &str) -> String {
    if name == ":" {
        String::new()
    } else {
        format!(" on {name}")
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Stop this process with `sig` (SIGTSTP), as its default action does,
/// though the loop blocks it to read it from a signalfd: unblocked in this
/// thread and raised, it stops every thread; raise returns once the
/// process is continued. (In an orphaned process group the kernel drops
/// it, and this returns at once.)
fn stop_self(sig: Signal) -> Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let mut set = SigSet::empty();
    set.add(sig);
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)
        .map_err(|e| Error::sys("pthread_sigmask", "SIG_UNBLOCK", e))?;
    let raised = nix::sys::signal::raise(sig).map_err(|e| Error::sys("raise", sig.as_str(), e));
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| Error::sys("pthread_sigmask", "SIG_BLOCK", e))?;
    Ok(raised?)
}

/// One `pk-pool: ...` line on stderr.
fn say(msg: &dyn std::fmt::Display) {
    super::progress::around(|| crate::cmd::eprintln_one("pk-pool", msg));
}

/// One line on stderr, as it is (`-t`).
fn say_raw(line: &[u8]) {
    let mut l = Vec::with_capacity(line.len() + 1);
    l.extend_from_slice(line);
    l.push(b'\n');
    let _ = super::progress::around(|| super::output::write_fd(std::io::stderr().as_fd(), &l));
}

/// `--dry-run`: print each job's command line in order; run nothing.
pub fn dry_run(template: &Template, mut input: Input, slots: usize) -> Result<u8> {
    let mut seq = 1u64;
    loop {
        match input.take()? {
            Take::Items(items) => {
                let slot = ((seq - 1) % slots.max(1) as u64) as usize + 1;
                let mut line = shell_bytes(&template.render(&items, seq, slot));
                line.push(b'\n');
                match super::output::write_out(1, &line) {
                    Ok(()) => {}
                    Err(WriteError::Closed) => return Ok(exit::signal_code(libc::SIGPIPE)),
                    Err(WriteError::Other(e)) => return Err(e.into()),
                }
                seq += 1;
            }
            Take::NeedRead => {
                if let Some(fd) = input.fd() {
                    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
                    match poll(&mut fds, nix::poll::PollTimeout::NONE) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(e) => return Err(Error::sys("poll", "input", e).into()),
                    }
                }
                input.fill()?;
            }
            Take::End => return Ok(exit::OK),
        }
    }
}
