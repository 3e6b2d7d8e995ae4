//! `pk-fork`: the fork lesson. fork, getpid/getppid, `_exit`, waitpid with
//! WEXITSTATUS/WTERMSIG, and copy-on-write memory; a child that ends as
//! Python's `sys.exit("message")` does, next to `os._exit(3)`.

use std::hint::black_box;

use clap::Parser;

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::process::{self, Children, Fork};
use crate::status::{SignalArg, Status};
use crate::{note, outln};

/// The value of `x` before any fork.
const X: u64 = 100;

const AFTER_HELP: &str = "\
Output (one line per event; <pid> is a process id):
  parent <pid>: x=100 at <addr>, forking <N> child(ren)
  child <pid> (parent <ppid>): started, x=100
  child <pid>: set x=<100+i> at <addr>
  child <pid> exited, status=<K>                  (WIFEXITED, WEXITSTATUS)
  child <pid> killed by signal <N> (<NAME>)       (WIFSIGNALED, WTERMSIG)
  parent still sees x=100 at <addr>               (copy-on-write)
With --quiet only the `child <pid> exited|killed ...` lines are printed.

How a child ends, in Python's words:
  --exit-code K      os._exit(K): status K at once, nothing printed, no
                     clean-up (no atexit, no flush): what a forked child
                     should call
  --exit-message MSG sys.exit(\"MSG\"): MSG and a newline on stderr, then
                     status 1 (sys.exit(K) with a number is status K)
  --signal SIG       os.kill(os.getpid(), SIG): WIFSIGNALED, WTERMSIG
Children that outlive pk-fork are killed with it (PR_SET_PDEATHSIG), even
when pk-fork dies of SIGKILL.

Exit status: 0 when every child was forked and reaped; with --propagate the
first failing child's status in shell form (K, or 128+N for signal N);
2 for a bad flag; 71 when fork fails (EAGAIN: too many processes).

Examples:
  pk-fork --exit-code 3            # child 4242 exited, status=3
  pk-fork --exit-message 'no more tickets'   # on stderr; status=1
  pk-fork --signal KILL            # child 4242 killed by signal 9 (SIGKILL)
  pk-fork --children 3 --sleep 1s
  pk-fork --exit-code 3 --propagate; echo $?   # 3";

/// Fork child processes and wait for them, showing pids, exit statuses,
/// signals and copy-on-write memory.
#[derive(Debug, Parser)]
#[command(name = "pk-fork", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Fork N children (1-4096) before waiting for any of them.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub children: u32,

    /// Each child ends with _exit(K), K in 0-255 (Python's os._exit(K)).
    #[arg(short = 'x', long, value_name = "K", default_value_t = 0)]
    pub exit_code: u8,

    /// Each child ends as Python's sys.exit("MSG"): MSG on stderr, status 1.
    #[arg(short = 'm', long, value_name = "MSG", conflicts_with_all = ["exit_code", "signal"])]
    pub exit_message: Option<String>,

    /// Each child kills itself with SIG (a name like KILL or SIGTERM, or a number).
    /// Signals whose default action does not end a process (CHLD, STOP, ...) are refused.
    #[arg(short = 's', long, value_name = "SIG", conflicts_with = "exit_code")]
    pub signal: Option<SignalArg>,

    /// Each child sleeps this long before it ends (2, 1.5s, 250ms, 1m).
    #[arg(long, value_name = "DURATION")]
    pub sleep: Option<DurationArg>,

    /// Exit with the first failing child's status in shell form (K or 128+N).
    #[arg(short = 'p', long)]
    pub propagate: bool,

    /// Print only the `child <pid> exited|killed ...` result lines.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Run the fork lesson.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    if let Some(SignalArg(sig)) = args.signal {
        if !process::default_action_terminates(sig) {
            return Err(crate::error::Error::invalid(
                "--signal",
                format!(
                    "{} does not end a process by default; pick one that does (TERM, KILL, INT, SEGV ...)",
                    sig.as_str()
                ),
            )
            .into());
        }
    }
    out.set_quiet(args.quiet);

    // A heap value, so the parent and every child see it at the same virtual
    // address: after fork each has its own copy of the page.
    let mut x = Box::new(X);
    let addr = &raw const *x;
    let n = args.children;
    note!(
        out,
        "parent {}: x={} at {:p}, forking {} child{}",
        process::getpid(),
        *x,
        addr,
        n,
        if n == 1 { "" } else { "ren" }
    )?;

    let mut children = Children::new();
    let mut fork_error = None;
    for i in 1..=n {
        // The child never returns from child_main: it ends with _exit.
        match children.fork(format_args!("child {i} of {n}")) {
            Ok(Fork::Child) => child_main(&args, out, &mut x, u64::from(i)),
            Ok(Fork::Parent(_)) => {}
            Err(e) => {
                fork_error = Some(e);
                break;
            }
        }
    }

    // Reap every child that was forked, even when a later fork failed.
    let mut first_failure: Option<Status> = None;
    for child in &mut children {
        let status = child.wait()?;
        outln!(out, "child {} {}", child.pid(), status)?;
        if !status.success() && first_failure.is_none() {
            first_failure = Some(status);
        }
    }
    if let Some(e) = fork_error {
        return Err(e.into());
    }
    note!(out, "parent still sees x={} at {:p}", black_box(*x), addr)?;

    Ok(match first_failure {
        Some(status) if args.propagate => status.shell_code(),
        _ => exit::OK,
    })
}

/// The child's side: report, change its copy of `x`, sleep, then end as
/// asked. Never returns.
fn child_main(args: &Args, out: &mut Out, x: &mut u64, i: u64) -> ! {
    let me = process::getpid();
    // A child whose stdout is gone still ends the way it was asked to, so
    // write errors are ignored here.
    let _ = note!(
        out,
        "child {} (parent {}): started, x={}",
        me,
        process::getppid(),
        *x
    );
    *x = black_box(X + i);
    let _ = note!(
        out,
        "child {}: set x={} at {:p}",
        me,
        black_box(*x),
        x as *const u64
    );
    if let Some(d) = args.sleep {
        std::thread::sleep(d.0);
    }
    if let Some(SignalArg(sig)) = args.signal {
        // Keep any core dump out of the user's directory: the lesson is the
        // status word, not the core file.
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
        let _ = process::die_of(sig);
        // Only reached if the signal did not end us: say so through the status.
        process::_exit(i32::from(exit::OS_ERR));
    }
    if let Some(msg) = &args.exit_message {
        // sys.exit("MSG"): the message as it is, one line on stderr, in one
        // write; then status 1.
        use std::os::fd::AsFd;
        let line = format!("{msg}\n");
        let _ = crate::pipe::write_all(std::io::stderr().as_fd(), line.as_bytes());
        process::_exit(1);
    }
    process::_exit(i32::from(args.exit_code))
}
