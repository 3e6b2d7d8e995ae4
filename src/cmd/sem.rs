//! `pk-sem`: counting semaphores. `demo` is `Semaphore(3)` letting at
//! most three of five workers in at once (a POSIX semaphore shared across
//! fork); `run` wraps a shell command in a named semaphore that heals
//! itself when a holder is killed, like GNU parallel's `sem` without its
//! pid checks; `status`, `reset` and `unlink` look after the named one.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::{self, DurationArg};
use crate::cmd::exit;
use crate::error::{Error, ErrorKind};
use crate::process::{self, Child, Children, Pid};
use crate::sem::robust::{self, RobustSemaphore, Taken};
use crate::sem::{Deadline, NamedSemaphore, Semaphore, VALUE_MAX};
use crate::shm::SharedArray;
use crate::spawn::{Running, SignalRelay, Step, Supervisor};
use crate::status::Status;
use crate::{note, outln};

const AFTER_HELP: &str = "\
Output of `demo` (<pid> is a worker's process id):
  parent <pid>: <N> workers, semaphore value <K>, hold <DUR>
  <pid> wants                      (about to sem_wait)
  <pid> working                    (inside: holds a count)
  <pid> done                       (left: posted the count back)
  max_inside=<M> final_value=<K>   (the result line; M <= K always)
  With --timeline, a chart follows: one row per worker, '.' waiting,
  '#' holding the semaphore, over the demo's whole run.
  An unnamed semaphore does not heal: for a worker killed while it held
  a count (SIGKILL, the OOM killer) the parent posts it back, so the
  others do not wait for ever, and says so:
  <pid> killed by signal 9 (SIGKILL) while holding a count: the parent posted it back
  The result line follows, then one error line; the exit status is 71.

Output of `run`: only the command's own output. `status` prints
  name=<name> value=<V> free=<F> waiting=<W>
`reset` prints `reset <name>: value <old> -> <new>` (see `reset --help`
for how a shrink waits, and its --timeout), `unlink` prints
`unlinked <name>`.

A named semaphore heals itself: a slot is taken with a System V
semaphore operation the kernel undoes when its process exits, however it
exits. The command `run` starts shares that undo (clone CLONE_SYSVSEM):
the slot stays taken while pk-sem or its command runs, as a command run
by flock(1) keeps the lock, and comes back the moment both are gone, even
when pk-sem was killed with SIGKILL or by the OOM killer. (Processes the
command leaves running in the background do not hold it.) At no instant
do more than <value> commands hold one semaphore (an `unlink` starts a
new one under the name: see below). Waiters sleep in the kernel until a
slot comes back; no polling, no reset needed.
The value is fixed when the semaphore is created (--value, default 1); a
--value that differs from an existing semaphore's is an error (exit 2):
change it with `reset`. Names: /name, one leading slash, no other, 1-248
bytes after it, no control character. On disk: /dev/shm/pk-sem.<name>,
mode 0600, holding the random key of its System V semaphore (`ipcs -s`);
the name comes first and any user of it completes a set a killed creator
left unmade, so no set is ever left without a name. Only a name file and a semaphore that are yours
and mode 0600 are used: another user's is refused (exit 77), a damaged one
too (exit 65), as is anything but a regular file under that name.
`unlink` removes the set, then the name, while no one is opening it.
Holders keep running, outside the count of a semaphore made anew under
the name (as holders of a removed flock(1) lock file). Waiters wake
and start over on the name as it is then, as a `run` started at that
moment would: they make it anew (with their --value, default 1) if it is
gone, and run their command when a slot of it is free.
Earlier versions kept a named semaphore as a POSIX semaphore,
/dev/shm/sem.<name>; this one neither reads nor uses those. `pk-sem
unlink --name /NAME` removes one of yours, with the temporary file glibc's
sem_open leaves linked to it when it is killed while creating
(/dev/shm/sem.XXXXXX).

Signals: TERM, INT, HUP and QUIT sent to `run` are passed on to the
command (each followed by CONT), once: in the foreground of a terminal
the command shares the process group of pk-sem, so that it can use the
terminal, and a ^C or hang-up the terminal sent to the whole group is not
sent again; anywhere else the command leads a process group of its own,
and a signal sent to the group of pk-sem (kill -INT -PGID, timeout(1))
reaches it through pk-sem alone, passed on to its whole group; the same
signal sent again within 0.1 s by a process of pk-sem's own group
(timeout(1) signals pk-sem, then its own group, pk-sem in it) is passed
on once. Signals ignored
when pk-sem starts stay ignored and are not passed on, but for SIGPIPE,
which the command gets at its default action (as from pk-spawn: a Rust
program cannot tell an inherited ignored SIGPIPE from its own). Before a slot is
taken they end pk-sem at once. A stdin, stdout or stderr closed when
pk-sem starts (<&-, >&-, 2>&-) is closed for the command too, as it
would be without pk-sem (flock(1) does the same with stdout and stderr).

Exit status: `run` exits with the command's status (its exit code, or
128+N when signal N killed it, by dying of signal N itself once the slot
is given back, as timeout(1) does, so that a script interrupted by ^C
stops; 127 when it is not found, 126 when it cannot be executed); 1 (or -E N) when --timeout ran out with no free slot,
printing nothing (one line on stderr with -v), as `flock -n` does; 1 too,
with one line, when another process (a stopped one) held the name file's
lock past --timeout and at least 1s. `reset` exits 1, with one line, when
its --timeout ran out before a shrink could be made (the value unchanged).
Everywhere: 0 when done, 2 for a bad flag or name or a --value that
differs from the semaphore's, 65 when the name file or its semaphore is
damaged or not a pk-sem semaphore, 66 when the named semaphore does not
exist (status, unlink), or an unlink removed it while status or reset
used it, 71 when a system call fails, 77 when it belongs
to another user or others may change it.

Examples:
  pk-sem demo --workers 5 --value 3 --hold 200ms --timeline
  for f in *.wav; do pk-sem run --name /enc --value 2 -- flac \"$f\" & done; wait
  pk-sem run --name /backup --timeout 0 -- backup.sh   # in cron: silent when busy
  pk-sem status --name /enc";

const RUN_AFTER_HELP: &str = "\
Exit status: CMD's own (its code, or 128+N when signal N killed it: pk-sem
then dies of signal N, as timeout(1) does; 127 not found, 126 not
executable); 1, or -E N, when --timeout ran out (nothing is
printed but with -v); 2 for a bad flag or name, or a --value that differs
from the existing semaphore's.

The slot heals: if pk-sem is killed (even with SIGKILL), the slot stays
taken while CMD runs and comes back when CMD ends; if both are killed, at
once. TERM, INT, HUP and QUIT are passed on to CMD once (a copy a process
of pk-sem's group sends within 0.1 s is not passed on again; off the
foreground of a terminal CMD leads a process group of its own, so a
SIGKILL sent to the group of pk-sem does not reach it: it keeps the slot
until it ends). CMD and its arguments are passed on as bytes. If the
semaphore is unlinked while pk-sem waits, pk-sem waits on the name as it
is then (made anew if gone) within the same --timeout, and runs CMD.";

const RESET_AFTER_HELP: &str = "\
Output: `reset <name>: value <old> -> <new>`.

More slots are free at once. Fewer (a shrink by K) wait until K slots
are free at one instant, then the value and the free count drop
together (the slots held stay held). On a busy semaphore, where a run
always waits and takes each slot given back, that instant may never
come: use --timeout. (Taking the slots one at a time as they come back
would let two shrinks at once each hold part of what the other needs,
and wedge the semaphore.)

Exit status: 0 when the value is set; 1 when --timeout ran out first
(the value is unchanged; one line on stderr); 1 too, with one line, when
another process (a stopped one) held the name file's lock past --timeout
and at least 1s; 2 for a bad flag, name or value; the others as for
every command (pk-sem --help).";

/// Counting semaphores: a worker demo, and a self-healing named semaphore for shell commands.
#[derive(Debug, Parser)]
#[command(name = "pk-sem", version, after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,

    /// Print only the result line (`demo`'s; the other commands print only
    /// results anyway). Before or after the command's name.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// N forked workers share an unnamed process-shared semaphore of value K.
    Demo(Demo),
    /// Take a slot of the named semaphore (creating it with --value), run
    /// CMD, give the slot back, exit with CMD's status.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(Run),
    /// Print the named semaphore's value, free slots and waiters.
    Status {
        /// The semaphore: /name.
        #[arg(long, value_name = "NAME", value_parser = name)]
        name: String,
    },
    /// Set the named semaphore's value to N (creating it if missing). Fewer
    /// slots wait for enough holders to finish (see below). Of resets at
    /// the same time, the last to finish sets the value.
    #[command(after_help = RESET_AFTER_HELP)]
    Reset {
        /// The semaphore: /name.
        #[arg(long, value_name = "NAME", value_parser = name)]
        name: String,
        /// The value to set (1-32767).
        #[arg(long, value_name = "N", value_parser = robust_value)]
        value: u32,
        /// Give up when a shrink cannot be made within DUR (0: do not wait
        /// at all; 2, 1.5s, 250ms, 1m, 1h, 2d, any length): exit 1, the
        /// value unchanged.
        #[arg(long, value_name = "DUR", value_parser = duration::unbounded)]
        timeout: Option<DurationArg>,
    },
    /// Remove the named semaphore. Holders keep running; waiters start over
    /// on the name as it is then (see below).
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
}

/// `pk-sem run` arguments.
#[derive(Debug, ClapArgs)]
pub struct Run {
    /// The semaphore: /name (created with --value if it does not exist).
    #[arg(long, value_name = "NAME", value_parser = name)]
    pub name: String,
    /// How many commands may run at once (1-32767): the value a new
    /// semaphore is created with (default 1); an existing one must have it.
    #[arg(long, value_name = "N", value_parser = robust_value)]
    pub value: Option<u32>,
    /// Give up when no slot is free within DUR (0: do not wait at all; 2,
    /// 1.5s, 250ms, 1m, 1h, 2d, any length).
    #[arg(long, value_name = "DUR", value_parser = duration::unbounded)]
    pub timeout: Option<DurationArg>,
    /// Exit with N instead of 1 when --timeout runs out (0-255).
    #[arg(
        short = 'E',
        long = "conflict-exit-code",
        value_name = "N",
        default_value_t = 1
    )]
    pub conflict_exit_code: u8,
    /// Say on stderr that no slot was free (otherwise silent, as flock -n).
    #[arg(short, long)]
    pub verbose: bool,
    /// The command and its arguments (after --), passed on as bytes (any
    /// file name, UTF-8 or not).
    #[arg(required = true, trailing_var_arg = true, num_args = 1.., value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

fn name(s: &str) -> std::result::Result<String, String> {
    robust::check_name(s).map(|_| s.to_string())
}

fn number(s: &str, max: u32) -> std::result::Result<u32, String> {
    let v: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if v < 1 || v > i64::from(max) {
        return Err(format!("{v} is not in 1..={max}"));
    }
    Ok(v as u32)
}

fn value(s: &str) -> std::result::Result<u32, String> {
    number(s, VALUE_MAX)
}

fn robust_value(s: &str) -> std::result::Result<u32, String> {
    number(s, robust::VALUE_MAX)
}

/// Run pk-sem.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    match args.cmd {
        Cmd::Demo(d) => demo(d, out),
        Cmd::Run(r) => run_cmd(r),
        Cmd::Status { name } => {
            let sem = RobustSemaphore::open(&name)?;
            let (value, free) = sem.value_and_free()?;
            outln!(
                out,
                "name={name} value={value} free={free} waiting={}",
                sem.waiting()?
            )?;
            Ok(exit::OK)
        }
        Cmd::Reset {
            name,
            value,
            timeout,
        } => {
            let deadline = Deadline::after(timeout.map(|t| t.0))?;
            let (sem, created) = RobustSemaphore::open_or_create_until(&name, value, deadline)?;
            let old = if created {
                0
            } else {
                match sem.set_value(value, deadline)? {
                    Some(old) => old,
                    None => {
                        let within = match timeout {
                            Some(t) if !t.0.is_zero() => format!(" within {t}"),
                            _ => String::new(),
                        };
                        let why = format!(
                            "too few slots given back{within} to shrink to {value}: the value stays {}",
                            sem.value()?
                        );
                        crate::cmd::eprintln_one("pk-sem", &Error::data("semop", &name, why));
                        return Ok(exit::DECLINED);
                    }
                }
            };
            // What this call set: a reset made after it is its own.
            outln!(out, "reset {name}: value {old} -> {value}")?;
            Ok(exit::OK)
        }
        Cmd::Unlink { name } => {
            // The semaphore, and an old-form POSIX one of the same name.
            let old = unlink_old_form(&name)?;
            match RobustSemaphore::unlink(&name) {
                Err(e) if e.kind() == ErrorKind::NotFound && old => {}
                r => r?,
            }
            outln!(out, "unlinked {name}")?;
            Ok(exit::OK)
        }
    }
}

/// Remove `/dev/shm/sem.<name>`, the POSIX semaphore earlier versions of
/// pk-sem used, if it is ours, with the temporary names glibc's sem_open
/// left linked to it. `true` when there was one to remove.
fn unlink_old_form(name: &str) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let Ok(path) = crate::shm::object::path("sem.", name) else {
        return Ok(false);
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.uid() == nix::unistd::geteuid().as_raw() => {
            NamedSemaphore::unlink(name)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

// Shared statistics slots in the demo.
const INSIDE: usize = 0;
const MAX_INSIDE: usize = 1;

fn demo(d: Demo, out: &mut Out) -> Result<u8> {
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
    let failed = reap_workers(&mut children, &sem, &stats, &times, out)?;
    // The result stands even when a worker died: its count was posted back.
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
    crate::cmd::fail_on_child(failed, "worker")?;
    Ok(exit::OK)
}

/// Reap the workers as they end, in any order. An unnamed semaphore does
/// not heal: a worker killed while it held a count (SIGKILL, the OOM
/// killer) would leave the others waiting for ever, so the parent posts
/// the count back for it and says so. The first worker that failed, if
/// any, is returned.
fn reap_workers(
    children: &mut Children,
    sem: &Semaphore,
    stats: &SharedArray<u64>,
    times: &SharedArray<u64>,
    out: &mut Out,
) -> Result<Option<(Pid, Status)>> {
    let mut failed = None;
    let mut left: Vec<usize> = (0..children.len()).collect();
    while !left.is_empty() {
        let mut ended = Vec::new();
        for (i, child) in children.iter_mut().enumerate() {
            if left.contains(&i) {
                if let Some(status) = child.try_wait()? {
                    ended.push((i, child.pid(), status));
                }
            }
        }
        if ended.is_empty() {
            // Up to 10 ms late: a demo, of a few workers.
            let mut fds: Vec<_> = left
                .iter()
                .filter_map(|&i| children.get(i).and_then(Child::pidfd))
                .map(|fd| nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN))
                .collect();
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10u8));
            continue;
        }
        for (i, pid, status) in ended {
            left.retain(|&j| j != i);
            // Entered (the time is set just after the wait returns) and
            // not left: it held a count when it died.
            let held = times.get(3 * i + 1) != 0 && times.get(3 * i + 2) == 0;
            if held && status.signal().is_some() {
                stats.atomic(INSIDE).fetch_sub(1, Ordering::SeqCst);
                sem.post()?;
                note!(
                    out,
                    "{pid} {status} while holding a count: the parent posted it back"
                )?;
            }
            if !status.success() && failed.is_none() {
                failed = Some((pid, status));
            }
        }
    }
    Ok(failed)
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
    times.set(3 * i + 1, since(start).max(1));
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

/// `pk-sem run`: take a slot, run the command, give the slot back.
fn run_cmd(r: Run) -> Result<u8> {
    // A stdin, stdout or stderr closed when pk-sem started (`<&-`, `>&-`,
    // `2>&-`) is closed for the command too, as it would be without us:
    // not the runtime's stand-in /dev/null.
    let program = crate::spawn::Spawn::new(&r.command)?
        .stdin_closed(crate::sys::proc::stdin_closed_at_start())
        .stdout_closed(crate::sys::proc::stdout_closed_at_start())
        .stderr_closed(crate::sys::proc::stderr_closed_at_start())
        // In the foreground of a terminal the command shares our process
        // group, to use the terminal (pk-sem never signals it but to pass
        // a signal on); otherwise it leads a group of its own, so that a
        // signal sent to our group reaches it once, through us, and not a
        // second time directly.
        .process_group(!crate::cmd::spawn::on_terminal_foreground());
    // While we wait, TERM, INT, HUP and QUIT keep their default action: a
    // pk-sem killed before or just after taking the slot gets it undone by
    // the kernel, and has started nothing.
    let deadline = Deadline::after(r.timeout.map(|t| t.0))?;
    let sem = loop {
        let sem = open_for_run(&r, deadline)?;
        match sem.acquire_until(deadline)? {
            Taken::Yes => break sem,
            // Unlinked while we waited: wait on what the name is now (made
            // anew if it is gone), as a run started now would, within the
            // same --timeout. A waiter still runs its command, as a waiter
            // of flock(1) on a removed lock file still gets the lock.
            Taken::Removed => continue,
            Taken::TimedOut => {
                if r.verbose {
                    let why = match r.timeout {
                        Some(t) if !t.0.is_zero() => format!("no free slot within {t}"),
                        _ => "no free slot".to_string(),
                    };
                    crate::cmd::eprintln_one("pk-sem", &Error::data("semop", &r.name, why));
                }
                return Ok(r.conflict_exit_code);
            }
        }
    };

    // From here on the signals are blocked and read from a signalfd, so
    // none is lost between checks: each is passed on to the command as
    // pk-spawn does it (Supervisor::step; a terminal's ^C that already
    // reached a command in our group is not sent twice), and the slot is
    // given back once the command ends. The command starts with an empty
    // mask and default handlers (Spawn).
    let mut relay = match SignalRelay::new(&crate::cmd::spawn::RELAYED) {
        Ok(relay) => relay,
        Err(e) => {
            let _ = sem.release();
            return Err(e.into());
        }
    };
    // The command shares our undo: the slot stays taken while it runs,
    // even if we are killed.
    let mut child = match robust::spawn_holding(program) {
        Ok(child) => child,
        Err(e) => {
            let _ = sem.release();
            return Err(e.into());
        }
    };
    let status = wait_relaying(&mut child, &mut relay)?;
    drop(relay);
    // Only a command that has ended gives its slot back: should the wait
    // fail, the slot stays taken until the command ends (shared undo).
    sem.release()?;
    if let Some(n) = status.signal() {
        // Slot given back: die of the command's signal, as timeout(1)
        // does, so that a shell that got the same ^C stops its script.
        crate::cmd::end_as_signalled(n);
    }
    Ok(status.shell_code())
}

/// Open (or create) `run`'s semaphore, checking its --value.
fn open_for_run(r: &Run, deadline: Deadline) -> Result<RobustSemaphore> {
    let (sem, created) =
        RobustSemaphore::open_or_create_until(&r.name, r.value.unwrap_or(1), deadline)?;
    if let Some(want) = r.value {
        let has = sem.value()?;
        if !created && has != want {
            return Err(Error::invalid(
                "--value",
                format!(
                    "{want} differs from {}'s value {has} (change it with pk-sem reset --name {} --value {want})",
                    r.name, r.name
                ),
            )
            .into());
        }
    }
    Ok(sem)
}

/// Wait for the command, passing on each signal that reaches `relay`.
fn wait_relaying(child: &mut Running, relay: &mut SignalRelay) -> Result<Status> {
    let mut supervisor = Supervisor::new(None);
    loop {
        if let Step::Exited(status) = supervisor.step(child, Some(relay))? {
            return Ok(status);
        }
    }
}
