//! The binaries' layer: one module per `pk-*` binary, each with its clap
//! arguments and a `run` function, and [`main`], the one place that parses
//! arguments, prints errors and maps results to exit codes.
//!
//! Output goes through [`Out`], which writes each line with a single
//! write(2) and keeps no buffer: nothing is pending when a command forks, so
//! a child never prints its parent's lines twice, and lines from many
//! processes sharing one pipe never interleave mid-line.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use clap::Parser;
use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::exit;

pub mod bench;
pub mod coro;
pub mod event;
pub mod fork;
pub mod local;
pub mod lock;
pub mod manager;
pub mod pipe;
pub mod pool;
pub mod process;
pub mod queue;
pub mod sem;
pub mod shm;
pub mod spawn;
pub mod threads;
pub mod ticket;

/// Run a binary: parse `A` from the command line, call `run`, and turn the
/// result into an exit code.
///
/// - `--help`/`--version` print to stdout and exit 0; any other argument
///   error prints one line, `pk-NAME: <what is wrong> (see --help)`, exit 2.
/// - An `Err` prints one line, `pk-NAME: <call>(<what>): <reason>`, and
///   exits with the error's code from [`crate::exit`].
/// - A closed stdout (`pk-NAME | head -1`) ends the command quietly with
///   141, the code a shell shows for a tool killed by SIGPIPE.
/// - A panic prints one line and exits 101; it is always a bug. A panic in
///   a forked child ends that child with `_exit(101)` at once.
pub fn main<A: Parser>(run: fn(A, &mut Out) -> Result<u8>) -> ExitCode {
    let name = A::command().get_name().to_string();
    install_panic_hook(name.clone());
    let args = match A::try_parse() {
        Ok(args) => args,
        Err(e) => return ExitCode::from(report_clap(&name, &e)),
    };
    let mut out = Out::stdout();
    match run(args, &mut out) {
        Ok(code) => ExitCode::from(code),
        Err(e) if Out::is_closed_stdout(&e) => ExitCode::from(exit::signal_code(libc::SIGPIPE)),
        Err(e) => {
            eprintln_one(&name, &e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Print `name: msg` as one line on stderr, in one write.
pub(crate) fn eprintln_one(name: &str, msg: &dyn fmt::Display) {
    let line = format!("{name}: {msg}\n");
    let _ = io::stderr().write_all(line.as_bytes());
}

fn report_clap(name: &str, e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = io::stdout().write_all(e.render().to_string().as_bytes());
        return exit::OK;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        eprintln_one(name, &"a subcommand is required (see --help)");
        return exit::USAGE;
    }
    eprintln_one(
        name,
        &format_args!("{} (see --help)", one_line(&e.render().to_string())),
    );
    exit::USAGE
}

/// A clap message as one line, without its `error: ` prefix. A first
/// line that ends in `:` ("the following required arguments were not
/// provided:") is joined with the indented lines that follow it.
fn one_line(msg: &str) -> String {
    let mut lines = msg.lines().skip_while(|l| l.trim().is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut line = first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .trim_end()
        .to_string();
    if line.ends_with(':') {
        let rest: Vec<&str> = lines
            .take_while(|l| l.starts_with(' ') && !l.trim().is_empty())
            .map(str::trim)
            .collect();
        line = format!("{} {}", line, rest.join(", "));
    }
    line
}

fn install_panic_hook(name: String) {
    let main_pid = crate::process::getpid();
    std::panic::set_hook(Box::new(move |info| {
        let msg = crate::error::panic_message(info.payload());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln_one(
            &name,
            &format_args!("internal error (a bug, please report it): {msg}{at}"),
        );
        // A forked child must never unwind back into its parent's code
        // (where it would, say, kill the parent's other children on drop).
        if crate::process::getpid() != main_pid {
            crate::process::_exit(i32::from(exit::PANIC));
        }
    }));
}

/// Fail, exit 71, naming the first child that did not exit 0 (as
/// [`process::wait_all`](crate::process::wait_all) reports it), as
/// `<what>(<pid>): <status>`.
pub fn fail_on_child(
    failed: Option<(crate::process::Pid, crate::status::Status)>,
    what: &'static str,
) -> Result<()> {
    match failed {
        Some((pid, status)) => {
            Err(Error::data(what, pid, status.to_string()).with_code(exit::OS_ERR))
        }
        None => Ok(()),
    }
}

/// The command layer's one fork(2), for the single-threaded `pk-*` binaries;
/// `what` (the child to be) names it in the error, `fork(<what>)`.
///
/// It refuses, with EDEADLK, while this process has more than one thread: a
/// child forked from a threaded process could find a lock (the allocator's,
/// stdout's) held for ever by a thread that does not exist in it. Every
/// caller's child branch ends with `_exit` or exec, never returning into
/// the parent's code; each call site says how.
pub fn fork(what: impl std::fmt::Display) -> Result<crate::process::Fork> {
    let errno = if crate::thread::os_threads().ok() != Some(1) {
        Errno::EDEADLK
    } else {
        // SAFETY: the process has exactly one thread (just checked: the
        // calling thread, which starts none before the fork), so no other
        // thread can hold a lock the child would need; the callers'
        // children end with _exit or exec.
        match unsafe { crate::process::fork() } {
            Ok(fork) => return Ok(fork),
            Err(e) => e,
        }
    };
    Err(Error::sys("fork", what, errno))
}

/// Unbuffered line output on stdout: each line is one write(2).
#[derive(Debug, Default)]
pub struct Out {
    line: String,
    quiet: bool,
}

impl Out {
    /// Output on fd 1.
    pub fn stdout() -> Self {
        Out::default()
    }

    /// Drop [`Out::note`] lines, keep [`Out::line`] lines (for `--quiet`).
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    /// Write one result line: formatted, a newline added, one write(2).
    /// EINTR and short writes are retried; a closed stdout is an error that
    /// [`main`] turns into a quiet exit.
    pub fn line(&mut self, args: fmt::Arguments<'_>) -> Result<()> {
        self.line.clear();
        fmt::write(&mut self.line, args).expect("formatting into a String cannot fail");
        self.line.push('\n');
        write_all_stdout(self.line.as_bytes())
    }

    /// Write one narrative line: like [`Out::line`], but dropped in quiet mode.
    pub fn note(&mut self, args: fmt::Arguments<'_>) -> Result<()> {
        if self.quiet { Ok(()) } else { self.line(args) }
    }

    /// Write raw bytes to stdout as they are.
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        write_all_stdout(bytes)
    }

    /// Whether `e` is the error a write to a closed stdout produces.
    pub fn is_closed_stdout(e: &Error) -> bool {
        e.errno() == Some(Errno::EPIPE) && e.call() == "write" && e.what() == "stdout"
    }
}

fn write_all_stdout(mut buf: &[u8]) -> Result<()> {
    let stdout = io::stdout();
    let fd = stdout.as_fd();
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("write", "stdout", e)),
        }
    }
    Ok(())
}

/// `outln!(out, "...", args)`: one result line through [`Out::line`].
#[macro_export]
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => { $out.line(format_args!($($arg)*)) };
}

/// `note!(out, "...", args)`: one narrative line through [`Out::note`].
#[macro_export]
macro_rules! note {
    ($out:expr, $($arg:tt)*) => { $out.note(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_threads() {
        // The test harness runs this on a thread of its own.
        let n = crate::thread::os_threads().expect("readable /proc/self/stat");
        assert!(n >= 1);
        let t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        assert!(crate::thread::os_threads().unwrap() >= 2);
        let e = fork("a child").expect_err("no fork while threads run");
        assert_eq!(e.errno(), Some(Errno::EDEADLK));
        assert!(e.to_string().starts_with("fork(a child): "), "{e}");
        t.join().unwrap();
    }

    #[test]
    fn missing_arguments_are_named() {
        let msg = "error: the following required arguments were not provided:\n  <FILE>\n  <N>\n\nUsage: pk-ticket init <FILE> <N>\n";
        assert_eq!(
            one_line(msg),
            "the following required arguments were not provided: <FILE>, <N>"
        );
    }

    #[test]
    fn clap_messages_become_one_line() {
        let msg = "error: invalid value 'abc' for '--children <N>': invalid digit\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(msg).as_str(),
            "invalid value 'abc' for '--children <N>': invalid digit"
        );
    }
}
