//! `pk-spawn`: the subprocess lesson, and a wrapper a script can put in
//! front of any command, with timeout(1)'s contract (`--timeout`,
//! `--kill-after`, `--signal`, `--preserve-status`, 124/137) and env(1)'s
//! (`--env`, `--unset`, `--clear-env`, `--cwd`). The command is started
//! with clone(`CLONE_VM|CLONE_VFORK`) + dup2 + exec; signals sent to
//! pk-spawn are passed on to it, and pk-spawn exits with its status.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::Parser;
use nix::sys::signal::Signal;

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::{self, DurationArg};
use crate::cmd::exit;
use crate::error::Error;
use crate::spawn::{SignalRelay, Spawn, Stdin, Step, Supervisor, Timeout};
use crate::status::SignalArg;

const AFTER_HELP: &str = "\
By default pk-spawn adds nothing to the command's output: its stdout and
stderr are the command's own, so `pk-spawn -- CMD | next` carries exactly
what `CMD | next` carries. With --capture both go through pipes that one
poll(2) loop drains (Popen.communicate), and are printed afterwards on
stdout, stdout first:
  stdout: <line>                  (one per line the command wrote)
  stderr: <line>
A last line without a newline gets one. Without a signal from pk-spawn,
the pipes are read until end of file, as Popen.communicate does (a
background process of the command that holds them open is waited for).
Once pk-spawn has sent the command a signal (the timeout's, the
kill-after SIGKILL, one passed on) and the command has ended, the pipes
are read for at most 0.1 s more, then closed: a process that left the
command's process group (setsid) and holds them does not keep pk-spawn
waiting. (Python's subprocess.run(timeout=) reads nothing after the
timeout: it kills the child, waits for it and raises TimeoutExpired with
the output read so far.)

-v/--verbose reports on stderr, one line each:
  pk-spawn: timed out after <DUR>: sent <SIG> to <TARGET> <PID>
  pk-spawn: still running <DUR> after the signal: sent SIGKILL to <TARGET> <PID>
  pk-spawn: got SIGALRM before the timeout of <DUR> ran out: the time is up now, as for timeout(1): sent <SIG> to <TARGET> <PID>
  pk-spawn: passed <SIG> on to <TARGET> <PID>
  pk-spawn: captured stdout=<N> bytes, stderr=<M> bytes
  pk-spawn: exit status <CODE>: child <PID> exited, status=<N> (Python: returncode <N>)
  pk-spawn: exit status <CODE>: child <PID> killed by signal <N> (<NAME>) (Python: returncode -<N>)
  pk-spawn: exit status 124: child <PID> ... (Python: TimeoutExpired; returncode -<N>)
  pk-spawn: exit status 127: command not found (Python: FileNotFoundError)
  pk-spawn: exit status 126: command not executable (Python: PermissionError)
<TARGET> is `process group` (the command and everything it started) or
`child` (the command alone, with --foreground).
Two conventions for one status: pk-spawn's exit status is the shell's
(N, 128+N for signal N, 124 for a timeout, 127/126 when the command
cannot start), so `$?` reads as it does after the command itself; Python's
subprocess.call/run give returncode N, or -N for signal N (as
Process.exitcode and pk-process do), and raise TimeoutExpired,
FileNotFoundError or PermissionError instead of a status. The -v report
gives both.

Durations (--timeout, --kill-after): a decimal number with an optional
unit ns, us, ms, s (the default), m, h or d (days), of any length (one
too long for the clock never runs out); a positive one shorter than 1 ns
counts as 1 ns, never as 0.

Timeout, as timeout(1): after --timeout DUR (0: none) the signal goes to
the command's process group (the command runs in a group of its own),
followed by SIGCONT; with --kill-after K, SIGKILL follows K later if it
still runs. With --foreground, or when pk-spawn itself runs in the
foreground of a terminal, the command stays in pk-spawn's process group so
it can use the terminal, and signals go to the command alone: processes it
started are then not signalled (timeout(1) signals its group, and stops a
command that reads the terminal unless given --foreground).

Signals: TERM, INT, HUP, QUIT, ALRM and the --signal one sent to
pk-spawn are passed on the same way (and start the --kill-after clock);
pk-spawn waits for the command and exits with its status. With
--timeout, SIGALRM instead means \"the time is up now\", as for
timeout(1) (which uses SIGALRM for its own timer): the timeout's signal
goes out at once (or the SIGKILL, once the --kill-after clock runs), and
the exit status is 124 (or 137) as after the timeout. -v reports it as
`got SIGALRM`, never as `timed out` (\"before the timeout ... ran out\"
is left out when the timeout had already fired). A terminal's ^C that already reached the
command in its group is not sent twice; a terminal's hang-up that reached
pk-spawn as session leader went to it alone, and is passed on. A signal
that a process of pk-spawn's own group sends again within 0.1 s is one
signal, passed on once (timeout(1) around pk-spawn signals pk-spawn,
then its own group, which holds pk-spawn too). If pk-spawn itself dies (SIGKILL, the OOM
killer), the command is sent SIGKILL (PR_SET_PDEATHSIG): nothing is left
running untimed.

A stdin, stdout or stderr that was closed when pk-spawn started (`<&-`,
`>&-`, `2>&-`) is closed for the command too, as under timeout(1); it
is not replaced by /dev/null.

Environment, as env(1): --clear-env first, then each --unset, then each
--env in order. PATH lookup uses the command's PATH (after --env), and a
relative CMD is relative to --cwd.

The child empties its signal mask only after every caught signal,
SIGPIPE and the --timeout signal are back to their default action (Rust
programs ignore SIGPIPE, and exec keeps ignored signals ignored; a
command that inherited its timeout signal ignored, as a background job
inherits SIGINT, would outlive the timeout). Other ignored signals stay
ignored, as nohup wants, and are not passed on; timeout(1) also resets
INT, QUIT, HUP and TERM. Between clone and exec the child makes only
async-signal-safe calls.

Exit status: the command's own (N, or 128+N when signal N killed it);
124 when --timeout ran out and the command then ended (its own status
with --preserve-status); 137 when SIGKILL was sent (--kill-after or
--signal KILL); 127 when the command is not found, 126 when it is found
but cannot be executed (with one line: pk-spawn: execvp(CMD): <reason>);
2 for a bad flag or a missing CMD; 66 when --input-file or --cwd does
not exist or is not what it must be (--input-file a directory, --cwd not
a directory), 77 when it cannot be read or entered; 71 when a system
call (pipe2, clone, poll, read) failed. When the command was killed by
signal N and not by the timeout, pk-spawn then kills itself with signal N
(core dumps off), as timeout(1) does: `$?` is 128+N all the same, and a
shell that got the same ^C stops its loop or script, as it would after
the command itself (an exit status of 130 would read as \"the command
handled the ^C\").

Examples:
  pk-spawn -- ls -l /tmp                          # subprocess.call
  pk-spawn --input 'hello' --capture -- tr a-z A-Z   # communicate(input)
  pk-spawn --timeout 10s --kill-after 2s -- make test
  pk-spawn --clear-env --env PATH=/usr/bin --cwd /tmp -- env
  tail -f log | pk-spawn --input-file - -- grep ERROR
  pk-spawn -v -- false; echo $?                   # 1";

/// The signals pk-spawn passes on to the command.
pub(crate) const RELAYED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Run a command the POSIX way (clone, dup2, exec, poll), feed its stdin,
/// capture its output, time it out, and exit with its status.
#[derive(Debug, Parser)]
#[command(name = "pk-spawn", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Write STR to the command's stdin, then end of file.
    #[arg(short, long, value_name = "STR", conflicts_with = "input_file")]
    pub input: Option<OsString>,

    /// The command's stdin is file F, read by the command as the data comes
    /// (a FIFO too); `-` is pk-spawn's own stdin.
    #[arg(short = 'f', long, value_name = "F")]
    pub input_file: Option<PathBuf>,

    /// Capture stdout and stderr through pipes and print them labelled.
    #[arg(short, long)]
    pub capture: bool,

    /// Send --signal after DUR (2, 1.5s, 250ms, 1m, 1d; 0: no timeout); exit 124.
    #[arg(short, long, value_name = "DUR", value_parser = duration::unbounded)]
    pub timeout: Option<DurationArg>,

    /// Send SIGKILL if the command still runs DUR after the signal; exit 137.
    #[arg(short = 'k', long, value_name = "DUR", requires = "timeout", value_parser = duration::unbounded)]
    pub kill_after: Option<DurationArg>,

    /// The signal sent when the time is up (TERM, INT, KILL, 9 ...).
    #[arg(short, long, value_name = "SIG", requires = "timeout")]
    pub signal: Option<SignalArg>,

    /// Exit with the command's status even when the time ran out.
    #[arg(long)]
    pub preserve_status: bool,

    /// Keep the command in pk-spawn's process group (it can use the
    /// terminal); signals go to the command alone.
    #[arg(long)]
    pub foreground: bool,

    /// Set K=V in the command's environment (repeatable).
    #[arg(short, long = "env", value_name = "K=V", value_parser = os_parser(parse_assignment))]
    pub env: Vec<(OsString, OsString)>,

    /// Remove K from the command's environment (repeatable).
    #[arg(short, long, value_name = "K", value_parser = os_parser(parse_name))]
    pub unset: Vec<OsString>,

    /// Start the command with an empty environment (then --env).
    #[arg(long)]
    pub clear_env: bool,

    /// Run the command in directory DIR.
    #[arg(short = 'C', long, value_name = "DIR", visible_alias = "chdir")]
    pub cwd: Option<PathBuf>,

    /// Report signals sent and the exit status on stderr.
    #[arg(short, long)]
    pub verbose: bool,

    /// No reports at all (overrides --verbose).
    #[arg(short, long)]
    pub quiet: bool,

    /// The command and its arguments; CMD is looked up in PATH unless it contains a '/'.
    #[arg(value_name = "CMD", trailing_var_arg = true)]
    pub cmd: Vec<OsString>,
}

/// A clap parser that hands `f` the argument as an OsString (not UTF-8 only).
fn os_parser<T: Clone + Send + Sync + 'static>(
    f: fn(OsString) -> std::result::Result<T, String>,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().try_map(f)
}

/// `K=V` for --env: split at the first `=`; K must not be empty.
fn parse_assignment(s: OsString) -> std::result::Result<(OsString, OsString), String> {
    use std::os::unix::ffi::OsStringExt;
    let bytes = s.as_bytes();
    match bytes.iter().position(|&b| b == b'=') {
        Some(i) if i > 0 => Ok((
            OsString::from_vec(bytes[..i].to_vec()),
            OsString::from_vec(bytes[i + 1..].to_vec()),
        )),
        _ => Err(format!(
            "'{}' is not K=V with a non-empty name K",
            s.to_string_lossy()
        )),
    }
}

/// A variable name for --unset: not empty, no `=`.
fn parse_name(s: OsString) -> std::result::Result<OsString, String> {
    if s.is_empty() || s.as_bytes().contains(&b'=') {
        Err(format!("'{}' is not a variable name", s.to_string_lossy()))
    } else {
        Ok(s)
    }
}

/// Run the command and pass its status through.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    let verbose = args.verbose && !args.quiet;
    if args.cmd.is_empty() {
        return Err(Error::invalid(
            "CMD",
            "no command given: pk-spawn [OPTIONS] -- CMD [ARGS]... (see --help)",
        )
        .into());
    }
    let stdin = match (&args.input, &args.input_file) {
        (Some(s), _) => Stdin::Bytes(s.as_bytes().to_vec()),
        (None, Some(path)) if path.as_os_str() == "-" => Stdin::Inherit,
        (None, Some(path)) => Stdin::Fd(open_input(path)?),
        (None, None) => Stdin::Inherit,
    };
    let own_group = !(args.foreground || on_terminal_foreground());
    let mut spawn = Spawn::new(&args.cmd)?
        .stdin(stdin)
        .capture(args.capture)
        // A stdin, stdout or stderr closed when pk-spawn started (`<&-`,
        // `>&-`, `2>&-`) is closed for the command too: the runtime's
        // stand-in /dev/null is not passed on.
        .stdin_closed(crate::sys::proc::stdin_closed_at_start())
        .stdout_closed(crate::sys::proc::stdout_closed_at_start())
        .stderr_closed(crate::sys::proc::stderr_closed_at_start())
        .process_group(own_group)
        // A pk-spawn that dies (SIGKILL, the OOM killer) takes the
        // command along: nothing would time it out any more, and it runs
        // in a group of its own, which a kill of pk-spawn's group misses.
        .die_with_parent(nix::sys::signal::Signal::SIGKILL);
    if args.clear_env {
        spawn = spawn.env_clear();
    }
    for k in &args.unset {
        spawn = spawn.env_remove(k);
    }
    for (k, v) in &args.env {
        spawn = spawn.env(k, v);
    }
    if let Some(dir) = &args.cwd {
        spawn = spawn.cwd(dir);
    }
    let timeout = args.timeout.map(|d| {
        let t = if d.0.is_zero() {
            Timeout::never()
        } else {
            Timeout::new(d.0)
        };
        let t = t.signal(args.signal.map_or(Signal::SIGTERM, |s| s.0));
        match args.kill_after {
            Some(k) if !k.0.is_zero() => t.kill_after(k.0),
            _ => t,
        }
    });

    // The signal sent at the timeout reaches the command at its default
    // action even when pk-spawn was started with it ignored (a background
    // job's SIGINT), as with timeout(1): else the command outlives it.
    if let Some(t) = &timeout {
        spawn = spawn.default_signal(t.sent());
    }

    // Block the relayed signals before the command exists, so none is
    // lost (or kills us) between the start and the first wait. As for
    // timeout(1), SIGALRM means "the time is up now", and the --signal
    // one is passed on too.
    let mut relayed = RELAYED.to_vec();
    relayed.push(Signal::SIGALRM);
    if let Some(sig) = timeout.map(|t| t.sent()) {
        if crate::process::default_action_terminates(sig)
            && sig != Signal::SIGKILL
            && !relayed.contains(&sig)
        {
            relayed.push(sig);
        }
    }
    let mut relay = SignalRelay::new(&relayed)?;
    let mut supervisor = Supervisor::new(timeout);
    let say = |line: std::fmt::Arguments<'_>| {
        if verbose {
            crate::cmd::eprintln_one("pk-spawn", &line);
        }
    };
    let mut running = match spawn.start() {
        Ok(running) => running,
        Err(e) if verbose && python_exception(&e).is_some() => {
            // The error line, as without -v, then the report.
            let code = crate::cmd::exit_code(e.kind());
            crate::cmd::eprintln_one("pk-spawn", &e);
            let (what, python) = python_exception(&e).unwrap_or_default();
            say(format_args!(
                "exit status {code}: command {what} (Python: {python})"
            ));
            return Ok(code);
        }
        Err(e) => return Err(cwd_failure(e).into()),
    };
    let pid = running.pid();
    let target = if own_group { "process group" } else { "child" };
    let status = loop {
        let timed_out_before = supervisor.timed_out();
        match supervisor.step(&mut running, Some(&mut relay))? {
            Step::Exited(status) => break status,
            Step::TimedOut(sig) => say(format_args!(
                "timed out after {}: sent {} to {target} {pid}",
                show(args.timeout),
                sig.as_str()
            )),
            Step::Killed => say(format_args!(
                "still running {} after the signal: sent SIGKILL to {target} {pid}",
                show(args.kill_after)
            )),
            // Not "timed out": the timeout's own clock may not have run out.
            Step::Alarmed(sig) => say(format_args!(
                "got SIGALRM{}: the time is up now, as for timeout(1): sent {} to {target} {pid}",
                if timed_out_before {
                    String::new()
                } else {
                    format!(" before the timeout of {} ran out", show(args.timeout))
                },
                sig.as_str()
            )),
            Step::Relayed(sig) => say(format_args!("passed {} on to {target} {pid}", sig.as_str())),
            Step::Refused(sig) => say(format_args!(
                "could not pass {} on to {target} {pid}: it runs as another user (EPERM)",
                sig.as_str()
            )),
        }
    };
    drop(relay);

    if args.capture {
        let (stdout, stderr) = running.take_output();
        let mut text = Vec::with_capacity(stdout.len() + stderr.len() + 64);
        label(&mut text, "stdout: ", &stdout);
        label(&mut text, "stderr: ", &stderr);
        out.bytes(&text)?;
        say(format_args!(
            "captured stdout={} bytes, stderr={} bytes",
            stdout.len(),
            stderr.len()
        ));
    }
    let code = if supervisor.killed() {
        exit::signal_code(libc::SIGKILL)
    } else if supervisor.timed_out() && !args.preserve_status {
        TIMED_OUT
    } else {
        status.shell_code()
    };
    // Python raises TimeoutExpired when the time ran out, whatever the
    // status the child ended with afterwards.
    let python = if supervisor.timed_out() {
        format!("TimeoutExpired; returncode {}", status.exitcode())
    } else {
        format!("returncode {}", status.exitcode())
    };
    say(format_args!(
        "exit status {code}: child {pid} {status} (Python: {python})"
    ));
    if let Some(n) = status.signal() {
        if !supervisor.timed_out() && !supervisor.killed() {
            // Returns only for a signal that cannot end us: then 128+N.
            crate::cmd::end_as_signalled(n);
        }
    }
    Ok(code)
}

/// For a command that could not be started: what happened, and the
/// exception Python's subprocess.call raises for it.
fn python_exception(e: &Error) -> Option<(&'static str, &'static str)> {
    use crate::ErrorKind;
    use nix::errno::Errno;
    match (e.kind(), e.errno()) {
        (ErrorKind::CommandNotFound, _) => Some(("not found", "FileNotFoundError")),
        (ErrorKind::CommandNotExecutable, Some(Errno::ENOTDIR)) => {
            Some(("not executable", "NotADirectoryError"))
        }
        (ErrorKind::CommandNotExecutable, Some(Errno::EACCES | Errno::EPERM)) => {
            Some(("not executable", "PermissionError"))
        }
        (ErrorKind::CommandNotExecutable, _) => Some(("not executable", "OSError")),
        _ => None,
    }
}

/// timeout(1)'s status for "the time ran out".
const TIMED_OUT: u8 = 124;

fn show(d: Option<DurationArg>) -> String {
    d.map_or_else(String::new, |d| d.to_string())
}

/// Open --input-file for the command to read: 66 for a path that names
/// no file to read (see [`no_input`]), 77 when it cannot be read.
fn open_input(path: &std::path::Path) -> Result<std::os::fd::OwnedFd> {
    let file =
        std::fs::File::open(path).map_err(|e| no_input(Error::io("open", path.display(), &e)))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("fstat", path.display(), &e))?;
    if meta.is_dir() {
        let e = Error::sys("open", path.display(), nix::errno::Errno::EISDIR);
        return Err(no_input(e).into());
    }
    Ok(file.into())
}

/// A --cwd that cannot be entered: 66 for a path that names no directory
/// (see [`no_input`]), 77 for a permission. Other errors as they are.
fn cwd_failure(e: Error) -> Error {
    if e.call() == "chdir" { no_input(e) } else { e }
}

/// The exit-code table's 66 ("an input file does not exist") for a path
/// that names nothing usable: missing (ENOENT), a component or the
/// directory not a directory (ENOTDIR), a directory given as a file
/// (EISDIR), a symlink loop or a name too long. EACCES stays 77, and
/// other errors (EMFILE, EIO ...) keep their kind.
fn no_input(e: Error) -> Error {
    use nix::errno::Errno;
    match e.errno() {
        Some(
            Errno::ENOENT | Errno::ENOTDIR | Errno::EISDIR | Errno::ELOOP | Errno::ENAMETOOLONG,
        ) => e.with_kind(crate::ErrorKind::NotFound),
        _ => e,
    }
}

/// Whether this process runs in the foreground process group of its
/// controlling terminal (typed at an interactive shell's prompt): then the
/// command must stay in that group to read from or set up the terminal
/// (pk-spawn and pk-sem run both keep it there).
pub(crate) fn on_terminal_foreground() -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/tty")
    else {
        return false;
    };
    nix::unistd::tcgetpgrp(&tty).is_ok_and(|p| p == nix::unistd::getpgrp())
}

/// Append each line of `bytes` to `text` with `prefix` in front; a last line
/// without a newline gets one.
fn label(text: &mut Vec<u8>, prefix: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    for line in body.split(|&b| b == b'\n') {
        text.extend_from_slice(prefix.as_bytes());
        text.extend_from_slice(line);
        text.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_every_line() {
        let mut t = Vec::new();
        label(&mut t, "o: ", b"a\n\nb");
        assert_eq!(t, b"o: a\no: \no: b\n");
        let mut t = Vec::new();
        label(&mut t, "o: ", b"a\n");
        assert_eq!(t, b"o: a\n");
        let mut t = Vec::new();
        label(&mut t, "o: ", b"");
        assert!(t.is_empty());
    }

    #[test]
    fn assignments_split_at_the_first_equals_sign() {
        let a = |s: &str| parse_assignment(s.into());
        assert_eq!(a("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(a("A="), Ok(("A".into(), "".into())));
        assert!(a("=x").is_err());
        assert!(a("A").is_err());
        assert!(parse_name("A=b".into()).is_err());
        assert!(parse_name("".into()).is_err());
        assert_eq!(parse_name("HOME".into()), Ok("HOME".into()));
    }
}
