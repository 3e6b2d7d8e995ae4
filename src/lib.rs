//! # posixkit
//!
//! POSIX process and thread primitives on raw system calls: the ideas that
//! Python's `os.fork`, `multiprocessing`, `subprocess`, `threading` and
//! `asyncio` teach, done the POSIX way in Rust, with one small `pk-*` binary
//! per primitive for shell scripts and demos.
//!
//! ## Guide
//!
//! | module | what it holds |
//! |---|---|
//! | [`process`] | `fork` (an `unsafe fn`), getpid/getppid, `_exit`, waitpid for exactly one pid, [`process::Child`] that is always reaped |
//! | [`status`] | [`status::Status`]: a wait status decoded (exited / signaled with core flag / stopped), as shell code or Python exitcode |
//! | [`pipe`] | pipe2 (`O_CLOEXEC`) and socketpair as owned fds; length-prefixed frames, one atomic write(2) up to `PIPE_BUF`; [`pipe::FrameReader`] for a sole reader; EINTR-retrying read/write |
//! | [`spawn`] | fork + dup2 + exec (PATH searched before fork, only async-signal-safe calls in the child), stdin bytes, stdout/stderr captured in one poll(2) loop; exec errno over a CLOEXEC pipe → 126/127 |
//! | [`error`] | [`Error`]: which call failed, on what, and why; its exit code |
//! | [`exit`] | the exit-code table every binary follows |
//! | [`duration`] | `2`, `1.5s`, `250ms` on command lines |
//! | [`cmd`] | one module per binary: arguments and scenario; [`cmd::main`] runs them |
//! | `sys` | the only `unsafe` code: thin syscall wrappers, each with a `// SAFETY:` comment |
//!
//! ## Conventions
//!
//! - The library never prints; the `cmd` modules do, one write(2) per line.
//! - Errors are one line: `pk-NAME: <call>(<what>): <reason>`.
//! - Every forked child is reaped; the library never calls `waitpid(-1)`.
//! - EINTR is retried inside the library wherever the call is restartable;
//!   each function's documentation says so.
//! - A forked child that does not exec ends with [`process::_exit`], never by
//!   returning into the parent's code.

pub mod cmd;
pub mod duration;
pub mod error;
pub mod exit;
pub mod pipe;
pub mod process;
pub mod spawn;
pub mod status;
mod sys;

pub use error::{Error, Result};
