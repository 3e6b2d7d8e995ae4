//! `pk-process`: Python's `multiprocessing.Process` — name, pid, daemon,
//! is_alive, join, terminate, kill, exitcode — and the two ways a child can
//! be tied to its parent: `daemon=True` (Python's: terminated at the
//! parent's normal exit, alive after its SIGKILL, no children of its own)
//! and die-with-parent (PR_SET_PDEATHSIG: killed with its parent, however
//! the parent dies).

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use clap::Parser;
use nix::sys::signal::Signal;

use crate::cmd::Out;
use crate::cmd::exit;
use crate::cmd::{Failure, Result};
use crate::error::{Context, Error, ErrorKind};
use crate::pipe::{self, Reader, Writer};
use crate::process::{self, Builder, Process};
use crate::{note, outln};

const AFTER_HELP: &str = "\
Output, in this order (<pid> is a process id):
  <name>: before start: daemon=false is_alive=false exitcode=None
  <name>: started: pid=<pid> is_alive=true
  <name> (pid <pid>): hello from the child, my parent is <ppid>
  <name>: joined: is_alive=false exitcode=0
  Sleeper: terminate (SIGTERM) -> exitcode=-15
  Stubborn: ignores SIGTERM, still alive after terminate; kill (SIGKILL) -> exitcode=-9
  Exit<K>: returned <K> -> exitcode=<K>
A daemon (Python's daemon=True) outlives a parent killed with SIGKILL:
  Parent (pid <pid>) started Daemon (pid <pid>, daemon=True)
  Parent: killed with SIGKILL -> exitcode=-9
  Daemon (pid <pid>): lives on after its parent was killed, parent now <ppid>
  Daemon (pid <pid>): terminated by pk-process, which cleans up
die_with_parent, the stronger guarantee, does not:
  Parent (pid <pid>) started Doomed (pid <pid>, die_with_parent)
  Parent: killed with SIGKILL -> exitcode=-9
  Doomed (pid <pid>) killed by signal 9 (SIGKILL) with its parent
A daemon may not start children (Python: AssertionError, exitcode 1):
  Daemon (pid <pid>): start() refused: fork(Grandchild): daemonic processes are not allowed to have children
  Daemon: exitcode=1
At a normal exit (Python's atexit; here process::join_children()),
daemons are terminated and every other child, even one whose handle was
dropped without join, is waited for:
  Watcher (pid <pid>, daemon=True) and Dropper (pid <pid>) run; Dropper's handle is dropped without join
  Dropper (pid <pid>): finished its work
  join_children(): terminated daemon Watcher (pid <pid>) -> exitcode=-15
  join_children(): joined Dropper (pid <pid>) -> exitcode=0

|                           | daemon=True          | die_with_parent        | neither      |
| parent exits normally     | SIGTERM, then reaped | waited for             | waited for   |
| parent killed (SIGKILL)   | lives on (ppid 1)    | SIGKILL at once        | lives on     |
| may start children        | no (AssertionError)  | yes                    | yes          |
In the library: Builder::daemon, Builder::die_with_parent, and
process::join_children(), which a Process's closure runs when it returns.
A Process dropped without join is neither killed nor waited for on the
spot (a drop never blocks): join_children() waits for it later
(Builder::kill_on_drop kills it instead).

exitcode follows Python: N after exit(N), -N after death by signal N.
pk-process, like every pk-* binary, starts its children with
die_with_parent on (none outlives a killed pk-process); the lesson's
Daemon opts out, and pk-process ends it itself. It makes itself the
subreaper of its descendants while a die_with_parent child's parent is
killed, so it can reap that child and show how it died; the Daemon's new
parent is init (1), or the nearest subreaper.
--die-with-parent starts the SIGKILL lesson's Daemon with die_with_parent
as well: then it dies with its parent, daemon or not.

--quiet (-q) prints only the result lines, the ones with an exitcode
(`joined:`, `-> exitcode=`, `Daemon: exitcode=`) and what became of each
child of a killed Parent (`... with its parent`, `terminated by
pk-process`); the lines that narrate (`before start`, `started`, `hello
from the child`, `Parent (pid ...) started`, `lives on`, `start()
refused`, `Watcher ... and Dropper ... run`, `finished its work`) go.

Exit status: 0 when the demo ran; 2 for a bad flag; 71 when a system call
fails (fork, pipe).";

/// Process objects: name, pid, daemon, is_alive, join, terminate, kill,
/// exitcode; daemon=True against die-with-parent.
#[derive(Debug, Parser)]
#[command(name = "pk-process", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Name of the first process (1-64 characters).
    #[arg(long, default_value = "Worker", value_parser = parse_name)]
    pub name: String,

    /// The code the `Exit<K>` process returns (0-255).
    #[arg(short = 'x', long, value_name = "K", default_value_t = 3)]
    pub exit_code: u8,

    /// Start the Daemon whose parent is killed with die_with_parent as
    /// well (PR_SET_PDEATHSIG): it dies with its parent instead of living on.
    #[arg(long)]
    pub die_with_parent: bool,

    /// Print only the result lines (see below).
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_name(s: &str) -> std::result::Result<String, String> {
    if s.is_empty() || s.chars().count() > 64 || s.chars().any(char::is_control) {
        return Err("a name is 1-64 printable characters".into());
    }
    Ok(s.to_string())
}

/// A "ready" pipe: the child writes a word after its set-up, the parent
/// blocks until then, so no step of the demo depends on timing.
struct Ready {
    read: Reader,
    write: Option<Writer>,
}

impl Ready {
    fn new() -> Result<Self> {
        let (read, write) = pipe::pipe()?;
        Ok(Ready {
            read,
            write: Some(write),
        })
    }

    /// In the child: tell the parent that set-up is done, with a value.
    fn signal(&self, value: i32) {
        if let Some(w) = &self.write {
            let _ = w.write_all(&value.to_ne_bytes());
        }
    }

    /// In a child: wait at most `timeout` for the parent's word (a child
    /// that may outlive pk-process never waits for ever).
    fn heard(&self, timeout: Duration) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.read.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, ms), Ok(1)) {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(self.read.read_full(&mut buf), Ok(4))
    }

    /// In the parent, after the fork: close our own write end, so that a
    /// child that dies before its word gives end of file instead of a wait
    /// for ever, then read the word.
    fn wait(&mut self, who: &str) -> Result<i32> {
        self.write = None;
        let mut buf = [0u8; 4];
        if self.read.read_full(&mut buf)? < buf.len() {
            return Err(Failure::from(Error::data(
                "read",
                who,
                "the child ended before it was ready",
            ))
            .with_code(exit::OS_ERR));
        }
        Ok(i32::from_ne_bytes(buf))
    }
}

/// Block the calling child until a signal ends it.
fn pause_forever() -> ! {
    loop {
        nix::unistd::pause();
    }
}

fn exitcode(p: &Process) -> String {
    p.exitcode().map_or("None".into(), |c| c.to_string())
}

/// Start a child with the library's checked fork; every child body ends
/// by returning a code (Builder::start then calls _exit) or by a signal.
fn start<F: FnOnce() -> i32>(builder: Builder, f: F) -> Result<Process> {
    Ok(builder.start(f)?)
}

/// Run the Process lesson.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    // Children inherit dispositions: a parent started under `trap '' TERM`
    // would make terminate() a no-op. The lesson wants the default.
    crate::process::restore_default(Signal::SIGTERM)?;
    out.set_quiet(args.quiet);
    basics(&args, out)?;
    terminate(out)?;
    kill(out)?;
    exit_code(&args, out)?;
    parent_killed(out, "Daemon", true, args.die_with_parent)?;
    parent_killed(out, "Doomed", false, true)?;
    no_children_of_a_daemon(out)?;
    normal_exit(out)?;
    Ok(exit::OK)
}

fn basics(args: &Args, out: &mut Out) -> Result<()> {
    let name = &args.name;
    note!(
        out,
        "{name}: before start: daemon=false is_alive=false exitcode=None"
    )?;
    let go = Ready::new()?;
    let mut child_out = out.like();
    let mut p = start(Builder::new().name(name.clone()), || {
        // Wait for the parent's word, so is_alive is true when it asks.
        let mut b = [0u8; 4];
        let _ = go.read.read_full(&mut b);
        let _ = note!(
            child_out,
            "{} (pid {}): hello from the child, my parent is {}",
            name,
            process::getpid(),
            process::getppid()
        );
        0
    })?;
    note!(
        out,
        "{name}: started: pid={} is_alive={}",
        p.pid(),
        p.is_alive()?
    )?;
    go.signal(1);
    p.join(None)?;
    outln!(
        out,
        "{name}: joined: is_alive={} exitcode={}",
        p.is_alive()?,
        exitcode(&p)
    )
}

fn terminate(out: &mut Out) -> Result<()> {
    let mut ready = Ready::new()?;
    let mut p = start(Builder::new().name("Sleeper"), || {
        ready.signal(0);
        pause_forever()
    })?;
    ready.wait("Sleeper")?;
    p.terminate()?;
    p.join(None)?;
    outln!(
        out,
        "Sleeper: terminate (SIGTERM) -> exitcode={}",
        exitcode(&p)
    )
}

fn kill(out: &mut Out) -> Result<()> {
    let mut ready = Ready::new()?;
    let mut p = start(Builder::new().name("Stubborn"), || {
        if crate::process::ignore(Signal::SIGTERM).is_err() {
            return 1;
        }
        ready.signal(0);
        pause_forever()
    })?;
    ready.wait("Stubborn")?;
    p.terminate()?;
    // It ignores SIGTERM, so it is certainly alive after this short wait;
    // the wait only gives a wrong belief a chance to show.
    let alive = p
        .join(Some(std::time::Duration::from_millis(50)))?
        .is_none();
    p.kill()?;
    p.join(None)?;
    let word = if alive { "still alive" } else { "NOT alive" };
    outln!(
        out,
        "Stubborn: ignores SIGTERM, {word} after terminate; kill (SIGKILL) -> exitcode={}",
        exitcode(&p)
    )
}

fn exit_code(args: &Args, out: &mut Out) -> Result<()> {
    let k = args.exit_code;
    let name = format!("Exit{k}");
    let mut p = start(Builder::new().name(name.clone()), || i32::from(k))?;
    p.join(None)?;
    outln!(out, "{name}: returned {k} -> exitcode={}", exitcode(&p))
}

/// How long a child that pk-process does not reap waits for a word, or
/// lives: a bound, so that none is left behind for long if pk-process is
/// itself killed in the middle.
const SURVIVOR_LIFE: Duration = Duration::from_secs(60);

/// A process that is not our child (the Daemon, once its parent is
/// killed), held by a pidfd: killed (SIGKILL) on an error path, so no
/// error leaves it behind.
struct Survivor {
    pidfd: Option<OwnedFd>,
}

impl Survivor {
    /// Send SIGTERM, as Python's terminate(), and wait until it has ended.
    fn terminate(&mut self) -> Result<()> {
        if let Some(fd) = self.pidfd.take() {
            crate::sys::proc::pidfd_send_signal(fd.as_fd(), Signal::SIGTERM)
                .ctx("pidfd_send_signal", "Daemon")?;
            wait_ended(&fd)?;
        }
        Ok(())
    }
}

impl Drop for Survivor {
    fn drop(&mut self) {
        if let Some(fd) = &self.pidfd {
            let _ = crate::sys::proc::pidfd_send_signal(fd.as_fd(), Signal::SIGKILL);
        }
    }
}

/// Wait until the process behind `pidfd` has ended (not our child: its
/// new parent reaps it).
fn wait_ended(pidfd: &OwnedFd) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("poll", "pidfd", e).into()),
        }
    }
}

/// A Parent starts `name` (a daemon or not, dying with it or not), and is
/// killed with SIGKILL. A child that dies with its parent is reaped here
/// (pk-process is the subreaper meanwhile) and shown dead; one that does
/// not lives on, says who its parent is now, and is terminated by
/// pk-process (its new parent, init, reaps it).
fn parent_killed(out: &mut Out, name: &str, daemon: bool, die: bool) -> Result<()> {
    // Orphans re-parent to us instead of init only when we must reap one.
    nix::sys::prctl::set_child_subreaper(die).ctx("prctl", "PR_SET_CHILD_SUBREAPER")?;
    let mut ready = Ready::new()?;
    let go = Ready::new()?;
    let mut said = Ready::new()?;
    let child = Builder::new()
        .name(name.to_owned())
        .daemon(daemon)
        .die_with_parent(die);
    let mut child_out = out.like();
    let mut parent = start(Builder::new().name("Parent"), || {
        // Inside Parent (single-threaded): start the child, report its pid,
        // wait to be killed.
        let started = child.start(|| {
            if !go.heard(SURVIVOR_LIFE) {
                return 1;
            }
            let _ = note!(
                child_out,
                "{name} (pid {}): lives on after its parent was killed, parent now {}",
                process::getpid(),
                process::getppid()
            );
            said.signal(0);
            std::thread::sleep(SURVIVOR_LIFE);
            0
        });
        match started {
            Ok(c) => {
                ready.signal(c.pid().as_raw());
                pause_forever()
            }
            Err(_) => 1,
        }
    })?;
    let pid = process::Pid::from_raw(ready.wait("Parent")?);
    // Opened while Parent, alive, holds the child unreaped: the pidfd names
    // the child, whatever happens to its pid later.
    let mut survivor = Survivor {
        pidfd: (!die)
            .then(|| crate::sys::proc::pidfd_open(pid).ctx("pidfd_open", name))
            .transpose()?,
    };
    let flags = match (daemon, die) {
        (true, true) => "daemon=True, die_with_parent",
        (true, false) => "daemon=True",
        (false, true) => "die_with_parent",
        (false, false) => "daemon=False",
    };
    note!(
        out,
        "Parent (pid {}) started {name} (pid {pid}, {flags})",
        parent.pid()
    )?;
    parent.kill()?;
    parent.join(None)?;
    outln!(
        out,
        "Parent: killed with SIGKILL -> exitcode={}",
        exitcode(&parent)
    )?;
    if die {
        let status = process::waitpid(pid)?;
        nix::sys::prctl::set_child_subreaper(false).ctx("prctl", "PR_SET_CHILD_SUBREAPER")?;
        return outln!(out, "{name} (pid {pid}) {status} with its parent");
    }
    go.signal(0);
    said.wait(name)?;
    survivor.terminate()?;
    outln!(
        out,
        "{name} (pid {pid}): terminated by pk-process, which cleans up"
    )
}

/// A daemon tries to start a child: refused, as Python's AssertionError.
fn no_children_of_a_daemon(out: &mut Out) -> Result<()> {
    let mut child_out = out.like();
    let mut d = start(Builder::new().name("Daemon").daemon(true), || {
        let me = process::getpid();
        match Builder::new().name("Grandchild").start(|| 0) {
            Err(e) if e.kind() == ErrorKind::DaemonicParent => {
                let _ = note!(child_out, "Daemon (pid {me}): start() refused: {e}");
                1
            }
            Err(_) => 2,
            Ok(mut g) => {
                let _ = g.join(None);
                let _ = note!(child_out, "Daemon (pid {me}): started a child");
                0
            }
        }
    })?;
    d.join(None)?;
    outln!(out, "Daemon: exitcode={}", exitcode(&d))
}

/// Python's normal exit: terminate the daemons, join everyone else, a
/// child whose handle was dropped without join included.
fn normal_exit(out: &mut Out) -> Result<()> {
    let watcher = start(Builder::new().name("Watcher").daemon(true), || {
        pause_forever()
    })?;
    let go = Ready::new()?;
    let mut child_out = out.like();
    let dropper = start(Builder::new().name("Dropper"), || {
        if !go.heard(SURVIVOR_LIFE) {
            return 1;
        }
        // Work that is still going on when join_children() starts.
        std::thread::sleep(Duration::from_millis(100));
        let _ = note!(
            child_out,
            "Dropper (pid {}): finished its work",
            process::getpid()
        );
        0
    })?;
    note!(
        out,
        "Watcher (pid {}, daemon=True) and Dropper (pid {}) run; Dropper's handle is dropped without join",
        watcher.pid(),
        dropper.pid()
    )?;
    drop(dropper);
    go.signal(0);
    let joined = process::join_children()?;
    for j in &joined {
        let what = if j.daemon {
            "terminated daemon"
        } else {
            "joined"
        };
        outln!(
            out,
            "join_children(): {what} {} (pid {}) -> exitcode={}",
            j.name,
            j.pid,
            j.status.exitcode()
        )?;
    }
    if joined.len() != 2 || watcher.exitcode().is_none() {
        return Err(Failure::from(Error::data(
            "join_children",
            "Watcher and Dropper",
            "not both were joined",
        ))
        .with_code(exit::OS_ERR));
    }
    Ok(())
}
