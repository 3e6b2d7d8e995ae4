//! `pk-pool exec`: run a command for each input item, N at a time, on
//! this machine or on many over ssh: a replacement for `xargs -P` and GNU
//! parallel. A concern per file:
//!
//! - [`input`]: items read as they come (lines, `-0`, `-d`, `-a`, `-n`);
//! - [`template`]: the command with `{}` `{.}` `{/}` `{//}` `{/.}` `{#}` `{%}`;
//! - [`local`]: jobs started with `Spawn`, each in a process group;
//! - [`output`]: grouped, line-buffered or direct output, in order or not;
//! - [`scheduler`]: the loop, retries, `--halt`, signals, exit status;
//! - [`ssh`], [`wire`], [`worker`](mod@worker): hosts over ssh and `pk-pool worker`;
//! - [`joblog`], [`progress`]: GNU parallel's joblog, `--progress`/`--eta`;
//! - [`guard`](mod@guard): `pk-pool guard`, which ends the jobs of a
//!   SIGKILLed pk-pool.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args as ClapArgs;
use nix::sys::signal::Signal;

use crate::cmd::Result;
use crate::cmd::duration::{self, DurationArg};
use crate::error::Error;

mod guard;
mod input;
mod joblog;
mod local;
mod output;
mod progress;
mod scheduler;
mod ssh;
mod template;
mod wire;
mod worker;

pub use guard::{GuardArgs, run as guard};
pub use worker::{WorkerArgs, run as worker};

/// `pk-pool exec --help`'s text after the options: the contract.
pub const AFTER_HELP: &str = "\
Items: one per input line (the whole line, blanks and quotes included, as
GNU parallel reads them; xargs splits at blanks unless -d '\\n'), or
NUL-separated (-0), or separated by one byte (-d). Items come from stdin,
or from each -a FILE in turn (`-a -` is stdin in its turn). An empty
line is a job with an empty argument, as in GNU parallel (--skip-empty
drops it). No input: nothing runs, and the status is 0 even with no host
left, as with xargs -r and parallel (xargs without -r runs CMD once).
The first command starts as soon as the first item is read, and input is
read only as slots free up, so memory stays the same for ten million
lines.

Replacement strings (GNU parallel's): {} the item, {.} without extension,
{/} basename, {//} dirname, {/.} basename without extension, {#} the job
number, {%} the slot (1..N). Without any, the items are appended as
arguments (xargs). -n N puts up to N items in one job: a lone {} becomes
N arguments, a {} inside other text the items joined by spaces. A job
takes fewer when N would not fit in a command line: 128 KiB of
arguments (as xargs), and what execve(2) allows beside the environment
(a quarter of `ulimit -s`), each copy of the items (every {}) and each
argument's pointer counted, each argument under 128 KiB. An item that
does not fit even alone ends the run as bad input (65).

Output: by default each job's stdout and stderr are kept (in memory up
to 64 KiB each, past that in files of its own in $TMPDIR) and written
whole when it ends, so lines of two jobs never mix (parallel's --group).
What a process left behind by a job writes after the job has ended is
dropped (its writes succeed while pk-pool runs, as into GNU parallel's
spent output files; xargs captures nothing and passes it on). Should
such processes hold more pipes than `ulimit -n` leaves room for beside
the running jobs, the oldest pipes are closed: a later write of theirs
gets SIGPIPE (EPIPE), as after pk-pool's end, and every job still runs. --line-buffer writes
each complete line as soon as it comes, whole (one past 64 KiB is
gathered in a temp file, not in memory); -u writes straight through
(xargs). -k prints in input order: the output of a job that ends before
an older one waits (in memory while small, else in a spill file), and at
most 1024 jobs per slot start after the oldest one still running (behind
a job that never ends, the rest wait instead of piling up).

Commands get /dev/null as stdin and run in a session and process group
of their own, without a controlling terminal: one that would read the
terminal (a password prompt) fails instead of stopping for ever, and -u
output reaches a terminal even under `stty tostop`. A job that stops
(SIGSTOP: it has no terminal, nor a shell to continue it) is continued
at once, with one line on stderr. SIGTSTP (^Z, or kill -TSTP) stops
every job's group, then pk-pool itself; continued (fg, bg, SIGCONT),
pk-pool continues them, and the time stopped counts against no
--timeout (jobs on ssh hosts run on meanwhile).
--timeout DUR sends SIGTERM (and SIGCONT) to the job's group, then SIGKILL
--kill-after later (default 2s), to what is left of the group even when
the command itself has ended (pk-pool waits for that before it exits).
pk-pool is the subreaper of its jobs (PR_SET_CHILD_SUBREAPER): a process
a job leaves behind becomes pk-pool's child while pk-pool runs, and is
reaped by it as it ends, so a group whose members have all died counts
as ended at once, whatever init does with zombies.
While pk-pool's own stdout is a reader that stops reading (`| less` left
on a page), time limits wait with it: an overdue job is ended once that
reader takes the output pk-pool is writing. SIGINT, SIGTERM or SIGHUP stop pk-pool:
no new job starts, every running job's group gets SIGTERM, then SIGKILL
after --kill-after (at once on a second signal; the same signal sent
again within 0.1 s by a process of pk-pool's group, as timeout(1) sends
it to pk-pool and then to its group, is one), all are reaped, and
pk-pool exits 128+N with `pk-pool: stopped by SIG...: N running jobs
ended, no new job started`. This holds while pk-pool waits for a reader
that does not read (`| less`): output that reader does not take within
--kill-after of the signal is dropped. Even a SIGKILL of pk-pool (or of
its whole process group: `kill -9 %1`, `timeout -s KILL`) leaves no job
behind: a small `pk-pool guard` process it starts, in a session of its
own that such signals and the terminal's ^C and ^Z do not reach, then
sends the running jobs' groups SIGTERM, and SIGKILL --kill-after later,
and exits (xargs and parallel leave their jobs running).

--halt never|soon,fail=N|now,fail=N|soon,success=N|now,success=N (or 0,
1, 2 as in parallel): after N failed (or succeeded) jobs, start no more;
`now` also stops the running ones. --retries N runs a failed job again,
up to N more times (parallel's --retries N means N tries in all), on
another host where there is one; with --line-buffer or -u, the lines
of a failed try are out already.

-j 0 runs as many jobs at once as the file descriptors allow (up to
1024; on an ssh host, its CPU count). A -j that `ulimit -n` has no room
for runs fewer at once, with one line saying so: each running job holds
a few descriptors (its pipes, and files for big output). A job that
cannot start for want of a process, memory or descriptors (EAGAIN,
ENOMEM, EMFILE: `ulimit -u`, a container's pids.max) waits, first in
line, until a running job ends, and no new job starts meanwhile (one
line says so, once): fewer run at once. With none of ours running, it
tries again after 50 ms, 100 ms ... 1 s, and fails (126) after 20 tries
(so do later jobs that find no room, at once, until one has run).
An error of pk-pool's own (its stdout cannot be written: a full disk)
stops the run as a signal does: no new job, the running ones get
SIGTERM, then SIGKILL after --kill-after, each is recorded, and one
line says how many were ended; then status 71.

Many hosts: -S [N/]HOST[,...] (repeatable; `:` is this machine, N its
slots, else -j, else the host's CPU count) runs `ssh HOST exec pk-pool
worker` once per host (--ssh CMD, --remote-cmd PATH) with your ssh
config, keys, agent and ControlMaster settings, but no terminal to
prompt on (a password or host-key question fails at once); jobs and
their output travel as frames over that one connection. A host that
drops has its running jobs run again elsewhere while --retries allows,
else they fail as `lost`. A host still connecting when every job is
done is not waited for (its ssh gets SIGTERM, and one line says so),
nor, after a stop, one that has not ended its jobs within twice
--kill-after and a second (a hung connection): its jobs count as lost.

stderr, one line each:
  pk-pool: job <SEQ>[ on HOST] (<command>): exited, status=<N>
  pk-pool: job <SEQ> (<command>): killed by signal <N> (<NAME>)
  pk-pool: job <SEQ> (<command>): timed out after <DUR>: killed by signal 15 (SIGTERM)
  pk-pool: job <SEQ> (<command>): execvp(<CMD>): No such file or directory
  pk-pool: job <SEQ> (<command>): stopped by signal 19 (SIGSTOP); continued
  pk-pool: <F> of <M> jobs failed                     (at the end, when any did)
A <command> longer than 200 bytes is shown by its first 200 and `...`.
-q (before or after `exec`; after `--` it is the command's) keeps the
jobs' own output and every error and failure line (those above, --halt
on failures, a lost ssh host, `stopped by`), and drops pk-pool's notes
that are not failures: -t's command lines, --progress/--eta, the line
saying a -j does not fit `ulimit -n`, `--halt now,success=N` stopping
the running jobs, an ssh host not waited for once every job is done.
-t prints each command line on stderr before it runs; --dry-run prints
them on stdout and runs nothing (quoted for sh as parallel quotes them,
bytes as they are: sh runs the very same arguments; a command name that
a shell reserves, such as if, then or time, is quoted too: `'if' x`). --joblog FILE
writes GNU parallel's tab-separated joblog (Seq Host Starttime
JobRuntime Send Receive Exitval Signal Command; Exitval is -1 for a job
its --timeout caught; one line per job, for its last try, as parallel
writes it); - is stdout, +FILE appends (as parallel's); a
FILE that is also an
input (-a FILE, stdin) is refused (status 2) and left as it is.
--progress/--eta show counts on stderr (a redrawn line on a terminal,
where they are on by default; --no-progress turns that off).

Exit status (xargs'): 0 every job succeeded; 123 one or more failed;
124 stopped by --halt, leaving jobs not run or stopped (or no host
left); 125 a command was killed by a
signal (a timeout too); 126 a command could not be run; 127 a command was
not found (of several kinds of failure, the highest of 127, 126, 125,
123); 128+N stopped by signal N; 141 the reader of stdout went away
(quietly: no new job, the running ones stopped; with -u too, where the
jobs find it out); 2 a bad flag or value; 65 bad input (an item with a
NUL byte without -0, an item over 4 MiB or too long for a command
line); 66 an -a FILE does not exist;
71 a system call failed (a missing $TMPDIR or --joblog directory too).

Examples:
  printf '%s\\n' a.txt b.txt | pk-pool exec -j 2 -- wc -c {}
  find . -name '*.png' -print0 | pk-pool exec -0 -k -- convert {} {.}.jpg
  seq 100 | pk-pool exec -n 10 --joblog log -- echo
  pk-pool exec -a hosts.txt --timeout 5s --halt soon,fail=3 -- ping -c1 {}
  seq 1000 | pk-pool exec -S 4/a,4/b,: --retries 1 -- ./work.sh {}";

/// `pk-pool exec`'s arguments.
#[derive(Debug, ClapArgs)]
#[command(after_help = AFTER_HELP)]
pub struct ExecArgs {
    /// Jobs at once per host (1-1024; 0: as many as fit, as xargs -P 0;
    /// default: the CPU count).
    #[arg(short = 'j', long, visible_short_alias = 'P', visible_alias = "max-procs", value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub jobs: Option<u32>,
    /// Items are separated by NUL bytes (find -print0).
    #[arg(short = '0', long, conflicts_with = "delimiter")]
    pub null: bool,
    /// Items are separated by this byte (`,`, `\n`, `\0`, `\x1f`, `\037`).
    #[arg(short = 'd', long, value_name = "DELIM", value_parser = input::parse_delimiter)]
    pub delimiter: Option<u8>,
    /// Read items from FILE instead of stdin (repeatable: one after another;
    /// `-` is stdin).
    #[arg(short = 'a', long, value_name = "FILE")]
    pub arg_file: Vec<PathBuf>,
    /// Up to N items per command (1-100000).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_args: u32,
    /// The string that stands for the item (default `{}`).
    #[arg(short = 'I', value_name = "STR")]
    pub replace: Option<OsString>,
    /// Empty items (empty lines) run no job.
    #[arg(long)]
    pub skip_empty: bool,
    /// Write each complete line as soon as a job prints it.
    #[arg(long, conflicts_with = "ungroup")]
    pub line_buffer: bool,
    /// Jobs write to our stdout and stderr directly (lines may mix).
    #[arg(short = 'u', long)]
    pub ungroup: bool,
    /// Print the output in input order.
    #[arg(short = 'k', long)]
    pub keep_order: bool,
    /// End a job that runs longer than DUR (TERM, then KILL after
    /// --kill-after; 2, 1.5s, 250ms, 1m, 1h, 2d, any length).
    #[arg(long, value_name = "DUR", value_parser = duration::unbounded)]
    pub timeout: Option<DurationArg>,
    /// From SIGTERM to SIGKILL, for --timeout and when stopping (any
    /// length).
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = duration::unbounded)]
    pub kill_after: DurationArg,
    /// Stop early after failures or successes (see below).
    #[arg(long, value_name = "WHEN", value_parser = parse_halt, default_value = "never")]
    pub halt: scheduler::Halt,
    /// Run a failed job again up to N more times (0-1000).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub retries: u32,
    /// Print the commands on stdout instead of running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Print each command on stderr before running it.
    #[arg(short = 't', long)]
    pub verbose: bool,
    /// Write GNU parallel's joblog to FILE (- for stdout, +FILE to append).
    #[arg(long, value_name = "FILE")]
    pub joblog: Option<PathBuf>,
    /// Show progress on stderr.
    #[arg(long)]
    pub progress: bool,
    /// Show progress with an estimate of the time left.
    #[arg(long)]
    pub eta: bool,
    /// No progress, even on a terminal.
    #[arg(long, conflicts_with_all = ["progress", "eta"])]
    pub no_progress: bool,
    /// Run on these hosts: [N/]HOST[,...], `:` for this machine (repeatable).
    #[arg(short = 'S', long = "sshlogin", value_name = "LOGINS", value_parser = ssh::parse_sshlogin)]
    pub sshlogin: Vec<Vec<ssh::HostSpec>>,
    /// The ssh command (split at blanks), e.g. `ssh -p 2222`.
    #[arg(long, value_name = "CMD", default_value = "ssh")]
    pub ssh: String,
    /// pk-pool on the remote hosts.
    #[arg(long, value_name = "PATH", default_value = "pk-pool")]
    pub remote_cmd: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

fn parse_halt(s: &str) -> std::result::Result<scheduler::Halt, String> {
    use scheduler::{Halt, HaltWhen};
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let bad = || {
        format!(
            "'{s}' is not never, soon,fail=N, now,fail=N, soon,success=N, now,success=N, 0, 1 or 2"
        )
    };
    match s {
        "never" | "0" => return Ok(Halt::NEVER),
        "1" => {
            return Ok(Halt {
                when: HaltWhen::Soon,
                on_fail: true,
                count: 1,
                text: "soon,fail=1",
            });
        }
        "2" => {
            return Ok(Halt {
                when: HaltWhen::Now,
                on_fail: true,
                count: 1,
                text: "now,fail=1",
            });
        }
        _ => {}
    }
    let (when, cond) = s.split_once(',').ok_or_else(bad)?;
    let when = match when {
        "soon" => HaltWhen::Soon,
        "now" => HaltWhen::Now,
        _ => return Err(bad()),
    };
    let (on, n) = cond.split_once('=').ok_or_else(bad)?;
    let on_fail = match on {
        "fail" => true,
        "success" => false,
        _ => return Err(bad()),
    };
    if n.ends_with('%') {
        return Err(format!(
            "'{s}': a percentage needs every item read first; give a count"
        ));
    }
    let count: u64 = n.parse().ok().filter(|&n| n >= 1).ok_or_else(bad)?;
    Ok(Halt {
        when,
        on_fail,
        count,
        text: leak(s),
    })
}

/// The room the items of a job have on its command line: xargs' default
/// size (-s), 128 KiB of argument text, for a job of several items; and
/// for any job, what execve(2) takes: the text of the arguments and of
/// the environment (the jobs get ours) and a pointer to each, within a
/// quarter of the stack limit (at least 128 KiB, at most 6 MiB, as Linux
/// counts), less 2 KiB as xargs keeps and a path's length for the
/// program's file name, which the kernel copies too.
fn limits(shape: template::Shape) -> input::Limits {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    use std::os::unix::ffi::OsStrExt;
    let stack = getrlimit(Resource::RLIMIT_STACK).map_or(8 << 20, |(soft, _)| soft);
    let kernel = if stack == RLIM_INFINITY {
        6 << 20
    } else {
        usize::try_from(stack / 4)
            .unwrap_or(usize::MAX)
            .min(6 << 20)
    }
    .max(128 * 1024);
    let environment: usize = std::env::vars_os()
        .map(|(k, v)| k.as_bytes().len() + v.as_bytes().len() + 2 + input::POINTER)
        .sum();
    let fixed = shape.fixed_bytes + input::POINTER * shape.fixed_args;
    let slack = 2048 + libc::PATH_MAX as usize;
    input::Limits {
        group_text: (128 * 1024 - 2048usize).saturating_sub(shape.fixed_bytes),
        exec_room: kernel.saturating_sub(environment + fixed + slack),
        shape,
    }
}

/// Run `pk-pool exec`; `quiet` is pk-pool's -q.
pub fn run(a: ExecArgs, quiet: bool) -> Result<u8> {
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    if a.command.iter().any(|c| c.as_bytes().contains(&0)) {
        return Err(Error::invalid("CMD", "an argument contains a NUL byte").into());
    }
    let item = a.replace.as_ref().map_or(&b"{}"[..], |r| r.as_bytes());
    if item.is_empty() {
        return Err(Error::invalid("-I", "the replacement string is empty").into());
    }
    let template = template::Template::new(&a.command, item);
    let sep = if a.null {
        0
    } else {
        a.delimiter.unwrap_or(b'\n')
    };
    let sources = if a.arg_file.is_empty() {
        vec![input::Source::stdin()?]
    } else {
        a.arg_file
            .iter()
            .map(input::Source::file)
            .collect::<crate::error::Result<Vec<_>>>()?
    };
    // The regular files among them, which --joblog must not empty.
    let input_files: Vec<joblog::InputFile> = sources
        .iter()
        .filter_map(|s| joblog::InputFile::of(&s.name, s.fd.as_fd()))
        .collect();
    let mut input = input::Input::new(sources, sep, a.skip_empty, a.max_args as usize);
    input.limits = Some(limits(template.shape()));
    let jobs = a.jobs.map(|j| j as usize);
    if a.dry_run {
        let slots = match jobs {
            Some(0) => scheduler::MAX_SLOTS,
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        return scheduler::dry_run(&template, input, slots);
    }
    let ssh: Vec<String> = a.ssh.split_ascii_whitespace().map(String::from).collect();
    if ssh.is_empty() {
        return Err(Error::invalid("--ssh", "the ssh command is empty").into());
    }
    let mut hosts: Vec<ssh::HostSpec> = a.sshlogin.into_iter().flatten().collect();
    if hosts.is_empty() {
        hosts.push(ssh::HostSpec {
            name: ":".into(),
            slots: None,
        });
    }
    let mode = if a.line_buffer {
        output::Mode::Line
    } else if a.ungroup {
        output::Mode::Ungroup
    } else {
        output::Mode::Group
    };
    let show = if a.no_progress || quiet {
        false
    } else if a.progress || a.eta {
        true
    } else {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal()
    };
    let joblog = match a
        .joblog
        .as_deref()
        .map(|path| joblog::Joblog::create(path, &input_files))
        .transpose()
    {
        Ok(log) => log,
        // `--joblog -` and nobody reads stdout any more: the header found
        // it closed, as a job's first output would; end as then, quietly.
        Err(e)
            if a.joblog.as_deref() == Some(std::path::Path::new("-"))
                && e.errno() == Some(nix::errno::Errno::EPIPE) =>
        {
            return Ok(crate::cmd::exit::signal_code(libc::SIGPIPE));
        }
        Err(e) => return Err(e.into()),
    };
    let cfg = scheduler::Config {
        template,
        mode,
        keep_order: a.keep_order,
        timeout: a.timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        kill_after: a.kill_after.0,
        halt: a.halt,
        retries: a.retries,
        verbose: a.verbose && !quiet,
        quiet,
        joblog,
        progress: progress::Progress::new(show, a.eta),
        hosts,
        jobs,
        ssh,
        remote_cmd: a.remote_cmd,
    };
    scheduler::run(cfg, input)
}

/// The `exec` task of the pool's registry: run the NUL-separated argv
/// with /dev/null as stdin and the worker's stdout/stderr; the result is
/// one byte, the shell status. (`pk-pool exec` itself starts commands
/// from one supervising process, without pool workers.)
pub(super) fn exec_task(arg: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let argv = arg.split(|&b| b == 0).map(std::ffi::OsStr::from_bytes);
    let code = match run_one(argv) {
        Ok(status) => status.shell_code(),
        Err(e) => {
            crate::cmd::eprintln_one("pk-pool", &e);
            e.code()
        }
    };
    out.push(code);
    Ok(())
}

fn run_one<'a>(argv: impl Iterator<Item = &'a std::ffi::OsStr>) -> Result<crate::status::Status> {
    let spawn = crate::spawn::Spawn::new(argv)?
        .stdin(crate::spawn::Stdin::Null)
        .die_with_parent(Signal::SIGTERM);
    Ok(spawn.run()?.status)
}
