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
//! | [`process`] | `fork` (an `unsafe fn`), getpid/getppid, `_exit`, waitpid for exactly one pid, [`process::Child`] that is always reaped, [`process::Process`] (Python's Process: is_alive, join with timeout on a pidfd, terminate/kill, exitcode, daemons) |
//! | [`status`] | [`status::Status`]: a wait status decoded (exited / signaled with core flag / stopped), as shell code or Python exitcode |
//! | [`pool`] | pre-forked worker pool: registered tasks, `apply_async`/`get(timeout)`, chunked `map`, close/join/terminate; dead workers reported and replaced |
//! | [`thread`] | named threads (`MainThread`), is_alive, join with timeout, daemon vs joined threads, [`thread::Event`], [`thread::StopFlag`], thread-locals |
//! | [`pipe`] | pipe2 (`O_CLOEXEC`) and socketpair as owned fds; length-prefixed frames, one atomic write(2) up to `PIPE_BUF`; [`pipe::FrameReader`] for a sole reader; EINTR-retrying read/write |
//! | [`spawn`] | fork + dup2 + exec (PATH searched before fork, only async-signal-safe calls in the child), stdin bytes, stdout/stderr captured in one poll(2) loop; exec errno over a CLOEXEC pipe → 126/127 |
//! | [`error`] | [`Error`]: which call failed, on what, and why; its exit code |
//! | [`exit`] | the exit-code table every binary follows |
//! | [`ticket`] | [`ticket::TicketFile`]: a plain-text count sold one ticket at a time under flock(2); crash-safe single-pwrite updates |
//! | [`duration`] | `2`, `1.5s`, `250ms` on command lines |
//! | [`coro`] | cooperative tasks on one thread: a tokio current-thread runtime, a lock-free ticket [`coro::Stock`], the thread count |
//! | [`manager`] | master/worker task queue over TCP: length-prefixed frames, HMAC challenge-response, [`manager::Server`], [`manager::Worker`] |
//! | [`shm`] | [`shm::SharedArray`] / [`shm::SharedValue`]: memfd or `shm_open` memory mapped MAP_SHARED, atomic views; named create/open/unlink |
//! | [`sem`] | [`sem::Semaphore`] (unnamed, pshared, in shared memory) and [`sem::NamedSemaphore`] (sem_open): wait, try_wait, timed wait, post, RAII guard |
//! | [`queue`] | [`queue::Queue`]: a bounded multi-producer multi-consumer queue of byte messages in shared memory |
//! | [`cmd`] | one module per binary: arguments and scenario; [`cmd::main`] runs them |
//! | `sys` | thin wrappers over the system calls nix lacks; the only `unsafe` besides forwarding fork's contract (see the README), each block with a `// SAFETY:` comment |
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
pub mod coro;
pub mod duration;
pub mod error;
pub mod exit;
pub mod manager;
pub mod pipe;
pub mod pool;
pub mod process;
pub mod queue;
pub mod sem;
pub mod shm;
pub mod spawn;
pub mod status;
mod sys;
pub mod thread;
pub mod ticket;

pub use error::{Error, Result};
