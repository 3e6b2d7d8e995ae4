//! `pk-process`: Python's `multiprocessing.Process` — name, pid, daemon,
//! is_alive, join, terminate, kill, exitcode — and a daemon child dying with
//! its SIGKILLed parent.

use clap::Parser;
use nix::sys::signal::Signal;

use crate::cmd::Out;
use crate::cmd::exit;
use crate::cmd::{Failure, Result};
use crate::error::{Context, Error};
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
  Parent (pid <pid>) started daemon Daemon (pid <pid>)
  Parent: killed with SIGKILL -> exitcode=-9
  Daemon (pid <pid>) killed by signal 9 (SIGKILL) after its parent died
exitcode follows Python: N after exit(N), -N after death by signal N.
The daemon uses PR_SET_PDEATHSIG; pk-process makes itself the subreaper of
its descendants so it can reap the orphaned daemon and show how it died.
(pk-process itself, like every pk-* binary, arms the same signal in all
its children, daemon or not: none outlives a killed pk-process.)

Exit status: 0 when the demo ran; 2 for a bad flag; 71 when a system call
fails (fork, pipe).";

/// Process objects: name, pid, daemon, is_alive, join, terminate, kill,
/// exitcode, and a daemon child that dies with its parent.
#[derive(Debug, Parser)]
#[command(name = "pk-process", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Name of the first process (1-64 characters).
    #[arg(long, default_value = "Worker", value_parser = parse_name)]
    pub name: String,

    /// The code the `Exit<K>` process returns (0-255).
    #[arg(short = 'x', long, value_name = "K", default_value_t = 3)]
    pub exit_code: u8,
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
    basics(&args, out)?;
    terminate(out)?;
    kill(out)?;
    exit_code(&args, out)?;
    daemon(out)?;
    Ok(exit::OK)
}

fn basics(args: &Args, out: &mut Out) -> Result<()> {
    let name = &args.name;
    note!(
        out,
        "{name}: before start: daemon=false is_alive=false exitcode=None"
    )?;
    let go = Ready::new()?;
    let mut p = start(Builder::new().name(name.clone()), || {
        // Wait for the parent's word, so is_alive is true when it asks.
        let mut b = [0u8; 4];
        let _ = go.read.read_full(&mut b);
        let _ = note!(
            Out::stdout(),
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

fn daemon(out: &mut Out) -> Result<()> {
    // Orphans re-parent to us instead of init, so we can reap the daemon.
    nix::sys::prctl::set_child_subreaper(true).ctx("prctl", "PR_SET_CHILD_SUBREAPER")?;
    let mut ready = Ready::new()?;
    let mut parent = start(Builder::new().name("Parent"), || {
        // Inside Parent (single-threaded): start the daemon, report its pid, wait to be killed.
        match start(Builder::new().name("Daemon").daemon(true), || {
            pause_forever()
        }) {
            Ok(d) => {
                ready.signal(d.pid().as_raw());
                // Parent is killed while paused below; forgetting the handle
                // makes sure no drop path could kill the daemon for us.
                std::mem::forget(d);
                pause_forever()
            }
            Err(_) => 1,
        }
    })?;
    let daemon_pid = process::Pid::from_raw(ready.wait("Parent")?);
    note!(
        out,
        "Parent (pid {}) started daemon Daemon (pid {daemon_pid})",
        parent.pid()
    )?;
    parent.kill()?;
    parent.join(None)?;
    outln!(
        out,
        "Parent: killed with SIGKILL -> exitcode={}",
        exitcode(&parent)
    )?;
    let status = process::waitpid(daemon_pid)?;
    outln!(
        out,
        "Daemon (pid {daemon_pid}) {status} after its parent died"
    )
}
