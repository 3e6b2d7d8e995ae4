//! The binaries' layer: one module per `pk-*` binary, each with its clap
//! arguments and a `run` function, and [`main`], the one place that parses
//! arguments, prints errors and maps results to exit codes.
//!
//! Not part of the library's API: it exists so the `pk-*` binaries can be
//! small, and it is compiled only with the `cli` feature.
//!
//! Output goes through [`Out`], which writes each line with a single
//! write(2) and keeps no buffer: nothing is pending when a command forks, so
//! a child never prints its parent's lines twice, and lines from many
//! processes sharing one pipe never interleave mid-line.
//!
//! Output that cannot be written is an error, never a silent loss: stdout
//! on a full device (`>/dev/full`) fails with one line and exit 71, a
//! stdout left non-blocking by a parent is waited on until it is writable,
//! and a stdout closed at start (`pk-x >&-`), which Rust's runtime quietly
//! reopens on /dev/null before `main`, fails at the first write as a closed
//! descriptor would (`write(stdout): Bad file descriptor`). Commands that
//! print nothing succeed with a closed stdout, as `true >&-` does; a
//! command a binary runs inherits the runtime's /dev/null.
//!
//! Errors: the library reports *what happened* as an [`Error`] with a
//! typed [`ErrorKind`]; a binary turns it into a [`Failure`], which adds
//! the exit code. [`exit_code`] is the one mapping from kinds to the
//! table in [`exit`]; a binary that means another code for one failure
//! says so with [`Failure::with_code`].

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::process::ExitCode;

use clap::Parser;
use nix::errno::Errno;

use crate::error::{Error, ErrorKind};

pub mod bench;
pub mod coro;
pub mod duration;
pub mod event;
pub mod exit;
pub mod fork;
mod generate;
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

/// A binary's result: its error carries the exit code.
pub type Result<T, E = Failure> = std::result::Result<T, E>;

/// An error on its way out of a binary: the library's [`Error`] and the
/// exit code the binary gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    error: Error,
    code: u8,
    closed_stdout: bool,
}

impl Failure {
    /// The same failure with exit code `code` instead of its kind's.
    #[must_use]
    pub fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// The exit code.
    pub fn code(&self) -> u8 {
        self.code
    }

    /// The library's error.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// Whether this is a write to a stdout whose reader went away, which
    /// [`main`] ends quietly.
    pub fn is_closed_stdout(&self) -> bool {
        self.closed_stdout
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            code: exit_code(error.kind()),
            error,
            closed_stdout: false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

/// The one mapping from the library's error kinds to the exit-code table
/// (see [`exit`]).
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::NotFound => exit::NO_INPUT,
        ErrorKind::PermissionDenied => exit::NO_PERM,
        ErrorKind::WouldBlock | ErrorKind::TimedOut => exit::DECLINED,
        ErrorKind::BadData => exit::DATA,
        ErrorKind::InvalidInput => exit::USAGE,
        ErrorKind::CommandNotFound => exit::NOT_FOUND,
        ErrorKind::CommandNotExecutable => exit::NOT_EXECUTABLE,
        ErrorKind::Panicked => exit::PANIC,
        _ => exit::OS_ERR,
    }
}

/// `result.code(N)`: give a library error the exit code `N` instead of its
/// kind's.
pub trait WithCode<T> {
    /// Map the error to a [`Failure`] that exits `code`.
    fn code(self, code: u8) -> Result<T>;
}

impl<T> WithCode<T> for std::result::Result<T, Error> {
    fn code(self, code: u8) -> Result<T> {
        self.map_err(|e| Failure::from(e).with_code(code))
    }
}

/// Run a binary: parse `A` from the command line, call `run`, and turn the
/// result into an exit code.
///
/// - `--help`/`--version` print to stdout and exit 0; any other argument
///   error prints one line, `pk-NAME: <what is wrong> (see --help)`, exit 2.
/// - An `Err` prints one line, `pk-NAME: <call>(<what>): <reason>`, and
///   exits with the error's code from [`exit`].
/// - A closed stdout (`pk-NAME | head -1`) ends the command quietly with
///   141, the code a shell shows for a tool killed by SIGPIPE.
/// - A panic prints one line and exits 101; it is always a bug. A panic in
///   a forked child ends that child with `_exit(101)` at once.
/// - `--generate-man DIR` or `--generate-completions SHELL` as the first
///   argument writes the binary's manual pages or prints its completions
///   instead (see `generate.rs`; hidden from `--help`, used by `make install`).
///
/// Before anything else it puts SIGCHLD back to its default: a parent that
/// ignored it (an ignored signal stays ignored across exec) would have the
/// kernel reap our children and lose their statuses. And every child the
/// binary forks through the library dies with it
/// ([`set_children_die_with_parent`](crate::process::set_children_die_with_parent)):
/// a `pk-*` process SIGKILLed in the middle of a demo leaves no producer,
/// consumer or worker behind.
pub fn main<A: Parser>(run: fn(A, &mut Out) -> Result<u8>) -> ExitCode {
    let name = A::command().get_name().to_string();
    install_panic_hook(name.clone());
    let _ = crate::process::restore_default(nix::sys::signal::Signal::SIGCHLD);
    crate::process::set_children_die_with_parent(true);
    if generate::requested() {
        return finish(&name, generate::run(A::command(), &mut Out::stdout()));
    }
    let args = match A::try_parse() {
        Ok(args) => args,
        Err(e) => return ExitCode::from(report_clap(&name, &e)),
    };
    let mut out = Out::stdout();
    finish(&name, run(args, &mut out))
}

/// The exit code of a binary's result, its error printed as one line.
fn finish(name: &str, result: Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is_closed_stdout() => ExitCode::from(exit::signal_code(libc::SIGPIPE)),
        Err(e) => {
            eprintln_one(name, &e);
            ExitCode::from(e.code())
        }
    }
}

/// End this process by signal `n`, the signal that killed the command it
/// wrapped (pk-spawn, pk-sem run), as timeout(1) does: `$?` reads 128+N
/// either way, but a shell that got the same ^C while waiting stops its
/// loop or script only when its child died of SIGINT (an exit status of 130 reads as "the command handled
/// it", and the loop goes on). Core dumps are turned off first: the core
/// was the command's to dump. Returns when the signal cannot end the
/// process (a real-time signal, one whose default is to ignore).
pub(crate) fn end_as_signalled(n: i32) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok(sig) = nix::sys::signal::Signal::try_from(n) else {
        return;
    };
    if !crate::process::default_action_terminates(sig) {
        return;
    }
    let hard = getrlimit(Resource::RLIMIT_CORE).map_or(0, |(_, hard)| hard);
    if setrlimit(Resource::RLIMIT_CORE, 0, hard).is_err() {
        return;
    }
    let _ = crate::process::die_of(sig);
}

/// Stdin, to be read as input: EBADF when descriptor 0 was closed when
/// the program started (`pk-x <&-`), as `cat <&-` fails. The Rust runtime
/// puts /dev/null there, which would read as empty input instead.
pub(crate) fn stdin_for_input() -> std::result::Result<std::io::Stdin, Error> {
    if crate::sys::proc::stdin_closed_at_start() {
        return Err(Error::sys("read", "stdin", nix::errno::Errno::EBADF));
    }
    Ok(std::io::stdin())
}

/// Print `name: msg` as one line on stderr, in one write.
/// A newline or carriage return inside it (a name or a command given
/// with one) is shown as `\n` or `\r`: the line stays one line.
pub(crate) fn eprintln_one(name: &str, msg: &dyn fmt::Display) {
    let text = msg.to_string();
    let text = if text.contains(['\n', '\r']) {
        text.replace('\n', "\\n").replace('\r', "\\r")
    } else {
        text
    };
    let line = format!("{name}: {text}\n");
    let _ = write_all_fd(io::stderr().as_fd(), line.as_bytes());
}

fn report_clap(name: &str, e: &clap::Error) -> u8 {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return match write_all_stdout(e.render().to_string().as_bytes()) {
            Ok(()) => exit::OK,
            Err(e) if e.is_closed_stdout() => exit::signal_code(libc::SIGPIPE),
            Err(e) => {
                eprintln_one(name, &e);
                e.code()
            }
        };
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        eprintln_one(name, &"a subcommand is required (see --help)");
        return exit::USAGE;
    }
    // clap quotes a refused value as it is: one with a newline would be
    // cut at it below. Shown escaped, its line stays whole.
    if let (Some(ContextValue::String(value)), Some(ContextValue::String(arg))) = (
        e.get(ContextKind::InvalidValue),
        e.get(ContextKind::InvalidArg),
    ) {
        if value.contains(char::is_control) {
            let why = std::error::Error::source(e).map_or(String::new(), |s| format!(": {s}"));
            eprintln_one(
                name,
                &format_args!(
                    "invalid value '{}' for '{arg}'{why} (see --help)",
                    value.escape_debug()
                ),
            );
            return exit::USAGE;
        }
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
            Err(Failure::from(Error::data(what, pid, status.to_string())).with_code(exit::OS_ERR))
        }
        None => Ok(()),
    }
}

/// The library's checked fork ([`crate::process::fork_named`]) for the
/// `pk-*` binaries; `what` (the child to be) names it in the error,
/// `fork(<what>)`. Every caller's child branch ends with `_exit` or exec,
/// never returning into the parent's code; each call site says how.
pub fn fork(what: impl std::fmt::Display) -> Result<crate::process::Fork> {
    Ok(crate::process::fork_named(what)?)
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

    /// Whether [`Out::note`] lines are dropped (`--quiet`).
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Another `Out` on fd 1, quiet when this one is: for a thread or a
    /// forked child that prints lines of its own.
    pub fn like(&self) -> Self {
        Out {
            line: String::new(),
            quiet: self.quiet,
        }
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
}

/// Write all of `buf` to stdout (see [`write_all_fd`]). A stdout that was
/// closed when the program started fails as a write to a closed descriptor
/// does (EBADF), although the runtime has put /dev/null there.
fn write_all_stdout(buf: &[u8]) -> Result<()> {
    let result = if crate::sys::proc::stdout_closed_at_start() {
        Err(Errno::EBADF)
    } else {
        write_all_fd(io::stdout().as_fd(), buf)
    };
    result.map_err(stdout_failure)
}

/// The failure of a write to stdout that failed with `e`: EPIPE is a
/// reader gone, which [`main`] ends quietly.
fn stdout_failure(e: Errno) -> Failure {
    let mut failure = Failure::from(Error::sys("write", "stdout", e));
    failure.closed_stdout = e == Errno::EPIPE;
    failure
}

/// Fail as a write to stdout would, without writing: for a command about
/// to change something whose result it must then print (take a message,
/// change a cell), so that it changes nothing it cannot report. A stdout
/// closed at start (`>&-`) fails with EBADF; a pipe or socket whose
/// reader has gone (poll(2) says POLLERR or POLLHUP) with EPIPE, which
/// [`main`] ends quietly (141). A reader that goes after this look still
/// makes the write itself fail.
pub(crate) fn stdout_writable() -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::stat::{SFlag, fstat};
    use std::sync::OnceLock;
    if crate::sys::proc::stdout_closed_at_start() {
        return Err(stdout_failure(Errno::EBADF));
    }
    let stdout = io::stdout();
    let fd = stdout.as_fd();
    // Only a pipe or a socket tells of its reader; its type never changes.
    static STREAM: OnceLock<bool> = OnceLock::new();
    let stream = *STREAM.get_or_init(|| {
        fstat(fd).is_ok_and(|st| {
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            kind == SFlag::S_IFIFO || kind == SFlag::S_IFSOCK
        })
    });
    if !stream {
        return Ok(());
    }
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => {
            let gone = fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP));
            if gone {
                return Err(stdout_failure(Errno::EPIPE));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Write all of `buf` to `fd`: EINTR and short writes are retried, and a
/// descriptor left non-blocking by whoever shares it (EAGAIN on a full
/// pipe or terminal) is waited on with poll(2) until it is writable again,
/// so output is never cut short because a reader is slow.
pub(crate) fn write_all_fd(
    fd: std::os::fd::BorrowedFd<'_>,
    mut buf: &[u8],
) -> std::result::Result<(), Errno> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            // A write of more than nothing that writes nothing: give up
            // rather than spin.
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::NONE) {
                    // Writable, or an error or hang-up the next write reports.
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
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
        assert_eq!(e.error().kind(), ErrorKind::ThreadsRunning);
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
