//! `pk-sem`: POSIX counting semaphores. `demo` is `Semaphore(3)` letting at
//! most three of five workers in at once; `run` wraps a shell command in a
//! named semaphore, like GNU parallel's `sem`; `status`, `reset` and
//! `unlink` look after the named semaphore.

use std::ffi::CString;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, Parser, Subcommand};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};

use crate::cmd::Out;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::cmd::{Failure, Result};
use crate::error::Error;
use crate::process::{self, Child, Children, Fork, Pid};
use crate::sem::{Deadline, NamedSemaphore, Semaphore, VALUE_MAX, Waited};
use crate::shm::{SharedArray, check_name};
use crate::status::Status;
use crate::{note, outln};

const AFTER_HELP: &str = "\
Subcommands:
  demo     N workers share a semaphore of value K; at most K work at once
  run      take a slot of a named semaphore, run a command, give the slot back
  status   print a named semaphore's value
  reset    set a named semaphore's value (recovery after a killed holder)
  unlink   remove a named semaphore

Output of `demo` (<pid> is a worker's process id):
  parent <pid>: <N> workers, semaphore value <K>, hold <DUR>
  <pid> wants                      (about to sem_wait)
  <pid> working                    (inside: holds a count)
  <pid> done                       (left: posted the count back)
  max_inside=<M> final_value=<K>   (the result line; M <= K always)
  With --timeline, a chart follows: one row per worker, '.' waiting,
  '#' holding the semaphore, over the demo's whole run.

Output of `run`: only the command's own output. `status` prints
  name=<name> value=<V>
`reset` prints `reset <name>: value <old> -> <new>`, `unlink` prints
`unlinked <name>`.

Named semaphores live in /dev/shm/sem.<name>, mode 0600. A name is /name:
one leading slash, no other, 1-251 bytes after it.

A killed holder: the kernel does not track who holds a count. If a
`pk-sem run` is killed with SIGKILL (or the machine's OOM killer picks
it), its slot is never posted back: the value stays one lower for good,
and with --value 1 every later `run` waits forever. (Its command keeps
running, unaware.) Once no holder is running, recover with
  pk-sem reset --name /jobs --value 3
or remove the semaphore so that the next `run` creates it afresh:
  pk-sem unlink --name /jobs
Other signals (TERM, INT, HUP, QUIT) are passed on to the command; the
slot is posted back when it ends.

Exit status: `run` exits with the command's status (its exit code, or
128+N when signal N killed it; 127 when it is not found, 126 when it
cannot be executed); 1 (or -E N) when --timeout ran out with no free slot;
128+N when signal N ended the wait before a slot was taken. Everywhere:
0 when done, 2 for a bad flag or name, 66 when the named semaphore does
not exist (status, unlink), 71 when a system call fails, 77 when
permission is denied.

Examples:
  pk-sem demo --workers 5 --value 3 --hold 200ms --timeline
  for f in *.wav; do pk-sem run --name /enc --value 2 -- flac \"$f\" & done; wait
  pk-sem run --name /jobs --value 3 --timeout 0 -- make -s || echo busy
  pk-sem status --name /jobs";

const RUN_AFTER_HELP: &str = "\
Exit status: CMD's own (its code, or 128+N when signal N killed it; 127 not
found, 126 not executable); 1, or -E N, when --timeout ran out; 128+N when
signal N ended the wait before a slot was taken; 2 for a bad flag or name.

TERM, INT, HUP and QUIT are passed on to CMD; the slot is posted back when
CMD ends. A pk-sem killed with SIGKILL never posts its slot back: the value
stays one lower until, with no holder running, you run
  pk-sem reset --name /jobs --value 3
or `pk-sem unlink --name /jobs` (the next run creates it afresh).";

/// POSIX semaphores: a worker demo and a semaphore for shell commands.
#[derive(Debug, Parser)]
#[command(name = "pk-sem", version, after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// N forked workers share an unnamed process-shared semaphore of value K.
    Demo(Demo),
    /// Take a slot of the named semaphore (creating it with --value), run
    /// CMD, post the slot back, exit with CMD's status.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(Run),
    /// Print the named semaphore's value.
    Status {
        /// The semaphore: /name.
        #[arg(long, value_name = "NAME", value_parser = name)]
        name: String,
    },
    /// Bring the named semaphore's value to N (creating it if missing).
    /// Run it only while no holder is running.
    Reset {
        /// The semaphore: /name.
        #[arg(long, value_name = "NAME", value_parser = name)]
        name: String,
        /// The value to set (1-2147483647).
        #[arg(long, value_name = "N", value_parser = value)]
        value: u32,
    },
    /// Remove the named semaphore (sem_unlink). Holders keep theirs.
    Unlink {
        /// The semaphore: /name.
        #[arg(long, value_name = "NAME", value_parser = name)]
        name: String,
    },
}

/// `pk-sem demo` arguments.
#[derive(Debug, ClapArgs)]
pub struct Demo {
    /// Number of worker processes (1-1024).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,
    /// The semaphore's initial value: how many may work at once (1-2147483647).
    #[arg(short, long, value_name = "K", default_value = "3", value_parser = value)]
    pub value: u32,
    /// How long each worker works while holding the semaphore (2, 1.5s, 250ms).
    #[arg(long, value_name = "DUR", default_value = "100ms")]
    pub hold: DurationArg,
    /// Draw an ASCII chart of who waited and who held the semaphore when.
    #[arg(short, long)]
    pub timeline: bool,
    /// Print only the result line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `pk-sem run` arguments.
#[derive(Debug, ClapArgs)]
pub struct Run {
    /// The semaphore: /name (created with --value if it does not exist).
    #[arg(long, value_name = "NAME", value_parser = name)]
    pub name: String,
    /// The value a new semaphore starts with: how many commands may run at
    /// once (1-2147483647). An existing semaphore keeps its own value.
    #[arg(long, value_name = "N", default_value = "1", value_parser = value)]
    pub value: u32,
    /// Give up when no slot is free within DUR (0: do not wait at all).
    #[arg(long, value_name = "DUR")]
    pub timeout: Option<DurationArg>,
    /// Exit with N instead of 1 when --timeout runs out (0-255).
    #[arg(
        short = 'E',
        long = "conflict-exit-code",
        value_name = "N",
        default_value_t = 1
    )]
    pub conflict_exit_code: u8,
    /// The command and its arguments (after --).
    #[arg(required = true, trailing_var_arg = true, num_args = 1.., value_name = "CMD")]
    pub command: Vec<String>,
}

fn name(s: &str) -> std::result::Result<String, String> {
    check_name(s).map(|_| s.to_string())
}

fn value(s: &str) -> std::result::Result<u32, String> {
    let v: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if v < 1 || v > i64::from(VALUE_MAX) {
        return Err(format!("{v} is not in 1..={VALUE_MAX}"));
    }
    Ok(v as u32)
}

/// Run pk-sem.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    match args.cmd {
        Cmd::Demo(d) => demo(d, out),
        Cmd::Run(r) => run_cmd(r),
        Cmd::Status { name } => {
            let sem = NamedSemaphore::open(&name)?;
            outln!(out, "name={name} value={}", sem.value()?)?;
            Ok(exit::OK)
        }
        Cmd::Reset { name, value } => {
            let (sem, _) = NamedSemaphore::open_or_create(&name, value)?;
            let before = sem.reset(value)?;
            outln!(out, "reset {name}: value {before} -> {}", sem.value()?)?;
            Ok(exit::OK)
        }
        Cmd::Unlink { name } => {
            NamedSemaphore::unlink(&name)?;
            outln!(out, "unlinked {name}")?;
            Ok(exit::OK)
        }
    }
}

// Shared statistics slots in the demo.
const INSIDE: usize = 0;
const MAX_INSIDE: usize = 1;

fn demo(d: Demo, out: &mut Out) -> Result<u8> {
    out.set_quiet(d.quiet);
    let n = d.workers as usize;
    let sem = Semaphore::new(d.value)?;
    // Workers wait here until all are forked, so they all want the
    // semaphore at once.
    let gate = Semaphore::new(0)?;
    let stats = SharedArray::<u64>::new(2)?;
    // Per worker: nanoseconds since `start` when it wanted, entered, left.
    let times = SharedArray::<u64>::new(3 * n)?;
    note!(
        out,
        "parent {}: {} workers, semaphore value {}, hold {}",
        process::getpid(),
        d.workers,
        d.value,
        d.hold
    )?;
    let start = Instant::now();
    let mut children = Children::new();
    for i in 0..n {
        // The child never returns from worker: it ends with _exit.
        children.start(format_args!("worker {} of {n}", i + 1), || {
            worker(i, &sem, &gate, &stats, &times, start, d.hold.0, out)
        })?;
    }
    for _ in 0..n {
        gate.post()?;
    }
    let failed = children.wait_all()?;
    crate::cmd::fail_on_child(failed, "worker")?;
    outln!(
        out,
        "max_inside={} final_value={}",
        stats.get(MAX_INSIDE),
        sem.value()?
    )?;
    if d.timeline {
        let pids: Vec<Pid> = children.iter().map(Child::pid).collect();
        timeline(&pids, &times, out)?;
    }
    Ok(exit::OK)
}

fn since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One demo worker. Never returns.
#[allow(clippy::too_many_arguments)]
fn worker(
    i: usize,
    sem: &Semaphore,
    gate: &Semaphore,
    stats: &SharedArray<u64>,
    times: &SharedArray<u64>,
    start: Instant,
    hold: Duration,
    out: &mut Out,
) -> ! {
    let me = process::getpid();
    if gate.wait().is_err() {
        process::_exit(i32::from(exit::OS_ERR));
    }
    times.set(3 * i, since(start));
    let _ = note!(out, "{me} wants");
    let Ok(held) = sem.acquire() else {
        process::_exit(i32::from(exit::OS_ERR));
    };
    // Counted only while the count is held: incremented after the wait
    // returned, decremented before the post.
    let inside = stats.atomic(INSIDE).fetch_add(1, Ordering::SeqCst) + 1;
    stats.atomic(MAX_INSIDE).fetch_max(inside, Ordering::SeqCst);
    times.set(3 * i + 1, since(start));
    let _ = note!(out, "{me} working");
    std::thread::sleep(hold);
    times.set(3 * i + 2, since(start));
    stats.atomic(INSIDE).fetch_sub(1, Ordering::SeqCst);
    drop(held);
    let _ = note!(out, "{me} done");
    process::_exit(0)
}

/// The chart: one row per worker over the demo's whole run.
fn timeline(pids: &[Pid], times: &SharedArray<u64>, out: &mut Out) -> Result<()> {
    const COLS: u64 = 60;
    let end = (0..pids.len())
        .map(|i| times.get(3 * i + 2))
        .max()
        .unwrap_or(0)
        .max(1);
    let width = pids.iter().map(|p| p.to_string().len()).max().unwrap_or(1);
    outln!(
        out,
        "timeline: {COLS} columns = {:.1?}; '.' waiting, '#' holding",
        Duration::from_nanos(end)
    )?;
    for (i, pid) in pids.iter().enumerate() {
        let col = |t: u64| (t.saturating_mul(COLS) / end).min(COLS - 1);
        let (want, enter, leave) = (
            col(times.get(3 * i)),
            col(times.get(3 * i + 1)),
            col(times.get(3 * i + 2)),
        );
        let row: String = (0..COLS)
            .map(|c| match c {
                _ if c >= enter && c <= leave => '#',
                _ if c >= want && c < enter => '.',
                _ => ' ',
            })
            .collect();
        outln!(out, "{pid:>width$} |{row}|")?;
    }
    Ok(())
}

/// `pk-sem run`: take a slot, run the command, post the slot back.
fn run_cmd(r: Run) -> Result<u8> {
    let (sem, _created) = NamedSemaphore::open_or_create(&r.name, r.value)?;
    let argv: Vec<CString> = r
        .command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::invalid("CMD", "an argument contains a NUL byte"))?;

    // A terminating signal while we wait ends the wait (no slot taken).
    // The handler only records it and does not set SA_RESTART, so the wait
    // returns EINTR and sees it.
    let sigs = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ];
    crate::sem::interrupt_on(&sigs).map_err(|e| Error::sys("sigaction", "SIGTERM", e))?;
    let stop = || crate::sem::peek_caught() != 0;
    let deadline = Deadline::after(r.timeout.map(|t| t.0))?;
    match sem.wait_or_stop(deadline, &stop)? {
        Waited::Acquired => {}
        Waited::Stopped => return Ok(exit::signal_code(crate::sem::take_caught())),
        Waited::TimedOut => {
            let why = match r.timeout {
                Some(t) if !t.0.is_zero() => format!("no free slot within {t}"),
                _ => "no free slot".to_string(),
            };
            return Err(Failure::from(Error::data("sem_wait", &r.name, why))
                .with_code(r.conflict_exit_code));
        }
    }
    let _slot = sem.guard_taken();

    // From here on the signals (and SIGCHLD) are blocked and taken with
    // sigwait, so none is lost between checks: each is passed on to the
    // command, and the slot is posted back once the command ends.
    let mut mask = SigSet::empty();
    for s in sigs {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .map_err(|e| Error::sys("sigprocmask", "SIG_BLOCK", e))?;
    let early = crate::sem::take_caught();
    if early != 0 {
        // The signal landed while we took the slot: give it back, run nothing.
        return Ok(exit::signal_code(early));
    }

    // Fork: pk-sem is single-threaded, and the child only restores its
    // signal mask and execs, or calls _exit.
    let pid = match crate::cmd::fork(&r.command[0])? {
        Fork::Child => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            // Rust ignores SIGPIPE, and an ignored signal stays ignored
            // across exec: give the command the default back, so that
            // `pk-sem run ... -- yes | head -1` ends quietly.
            let _ = process::restore_default(nix::sys::signal::Signal::SIGPIPE);
            exec_child(&argv)
        }
        Fork::Parent(pid) => pid,
    };
    let mut child = Child::new(pid);
    let status = wait_forwarding(&mut child, &mask)?;
    Ok(status.shell_code())
}

/// The child's side of `run`: exec the command, or report why not and
/// exit 127 (not found) or 126 (not executable). Never returns.
fn exec_child(argv: &[CString]) -> ! {
    let e = match nix::unistd::execvp(&argv[0], argv) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let line = format!(
        "pk-sem: execvp({}): {}\n",
        argv[0].to_string_lossy(),
        crate::error::strerror(e)
    );
    let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
    process::_exit(i32::from(crate::cmd::exit_code(
        crate::spawn::exec_failure_kind(e),
    )))
}

/// Wait for the command, passing on each signal in `mask` (blocked by the
/// caller) that reaches pk-sem; SIGCHLD only wakes the loop.
fn wait_forwarding(child: &mut Child, mask: &SigSet) -> Result<Status> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        // A SIGCHLD sent after try_wait stays pending, so this returns.
        let sig = mask
            .wait()
            .map_err(|e| Error::sys("sigwait", "pk-sem", e))?;
        if sig != Signal::SIGCHLD {
            let _ = process::kill(child.pid(), sig);
        }
    }
}
