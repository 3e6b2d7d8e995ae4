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
//! | [`process`] | [`process::fork`] (checked: refused while other threads run), getpid/getppid, `_exit`, waitpid for exactly one pid, [`process::Child`] that is always reaped, [`process::Process`] (Python's Process: is_alive, join with timeout on a pidfd, terminate/kill, exitcode, daemons with Python's meaning, die-with-parent, [`process::join_children`] for a normal exit) |
//! | [`status`] | [`status::Status`]: a wait status decoded (exited / signaled with core flag / stopped), as shell code or Python exitcode |
//! | [`pool`] | pre-forked worker pool: typed task handles ([`pool::Registry::task`]); Python's calls over the task's own types: `apply`, `apply_async` (with callbacks), `get(timeout)`, chunked `map`, `map_async`, `imap`, `imap_unordered`, `starmap`; close/join/terminate; dead workers reported and replaced |
//! | [`thread`] | named threads (`MainThread`, `Thread-N`, renamed while running), `get_ident`, is_alive, join with timeout, daemon vs joined threads; Python's `threading` objects: [`thread::Lock`], [`thread::RLock`], [`thread::Condition`], [`thread::Semaphore`] (bounded too), [`thread::Barrier`], [`thread::Event`], [`thread::Timer`], [`thread::Queue`]; thread-locals |
//! | [`pipe`] | pipe2 (`O_CLOEXEC`) and socketpair as owned fds; length-prefixed frames, one atomic write(2) up to `PIPE_BUF`; [`pipe::FrameReader`] for a sole reader; EINTR-retrying read/write |
//! | [`spawn`] | start a program: clone(CLONE_VM\|CLONE_VFORK) + dup2 + exec, whose cost does not grow with the parent's memory (PATH searched before the child starts, only async-signal-safe calls in the child), stdin bytes or a streamed file, stdout/stderr captured in one poll(2) loop, env/cwd, timeouts and signal relays as timeout(1) has them; exec errno over a CLOEXEC pipe |
//! | [`error`] | [`Error`]: which call failed, on what, and why, with a typed [`ErrorKind`] |
//! | [`ticket`] | [`ticket::TicketFile`]: a plain-text count sold one ticket at a time under flock(2); crash-safe single-pwrite updates |
//! | `coro` | (feature `coro`) cooperative tasks on one thread: a tokio current-thread runtime, a lock-free ticket `coro::Stock`, the thread count; the generator protocol as a state machine (`coro::Consumer`: send, close), `coro::gather`, `coro::wait_for`, `coro::TaskQueue` (task_done, join) |
//! | `manager` | (feature `manager`) named queues over TCP with leases on work: the server proves the key first, a MAC on every frame, `manager::Server`, `manager::Client`; CPython's manager protocol with a pickle subset that runs no code (`manager::python`) |
//! | [`shm`] | [`shm::SharedArray`] / [`shm::SharedValue`]: memfd or `shm_open` memory mapped MAP_SHARED, every access atomic; [`shm::Segment`]: a named segment with checked byte and 64-bit cell access; named objects created whole (`posix_fallocate`, `O_TMPFILE`), opened only when ours, guarded against SIGBUS |
//! | [`sem`] | [`sem::Semaphore`] (unnamed, pshared, in shared memory) and [`sem::NamedSemaphore`] (the file `sem_open` names, mapped by posixkit): wait, try_wait, timed wait, post, RAII guard; [`sem::RobustSemaphore`]: a named semaphore whose slots the kernel gives back when their holder dies (System V, SEM_UNDO) |
//! | [`queue`] | [`queue::Queue`]: a bounded multi-producer multi-consumer queue of byte messages in shared memory, crash-safe under SIGKILL at any instant; shared across fork or named |
//! | [`nix`] | the nix crate this one was built with, re-exported: use `posixkit::nix::sys::signal::Signal` and the rest of nix's types in our API through it, whatever nix your own program depends on |
//! | `sys` | thin wrappers over the system calls nix lacks: the only module where `unsafe` is allowed (the compiler denies it everywhere else), each block with a `// SAFETY:` comment |
//!
//! ## Features
//!
//! | feature | default | what it adds | crates it pulls |
//! |---|---|---|---|
//! | `cli` | yes | the `pk-*` binaries' command layer (not part of the API) | clap, signal-hook, and the two below |
//! | `coro` | yes | `coro` | tokio, getrandom |
//! | `manager` | yes | `manager` | hmac, sha2, md-5, getrandom |
//!
//! A program that wants the library alone depends on it with
//! `default-features = false` and gets libc, nix and memmap2, nothing else.
//!
//! ## Safety without `unsafe`
//!
//! Every function a program calls is safe. The forks the library makes
//! ([`process::fork`], [`process::Builder::start`], [`pool::Pool::new`] and
//! the pool's replacement workers) check that the process has no other
//! thread and refuse with [`ErrorKind::ThreadsRunning`] if it does; the
//! `…_unchecked` variants ([`process::fork_unchecked`],
//! [`process::Builder::start_unchecked`], [`pool::Pool::new_unchecked`])
//! are `unsafe fn` for experts whose children make only async-signal-safe
//! calls. Memory shared with other threads and processes is only ever
//! reached through atomics ([`shm`]).
//!
//! ## Conventions
//!
//! - The library never prints and knows no exit codes: errors carry an
//!   [`ErrorKind`], and the binaries map kinds to their exit-code table.
//! - Errors are one line: `<call>(<what>): <reason>`.
//! - Every forked child is reaped; the library never calls `waitpid(-1)`.
//! - EINTR is retried inside the library wherever the call is restartable;
//!   each function's documentation says so.
//! - A forked child that does not exec ends with [`process::_exit`], never by
//!   returning into the parent's code.
#![deny(unsafe_code)]

#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cmd;
#[cfg(feature = "coro")]
pub mod coro;
pub mod error;
#[cfg(feature = "manager")]
pub mod manager;
pub mod pipe;
pub mod pool;
pub mod process;
pub mod queue;
pub mod sem;
pub mod shm;
pub mod spawn;
mod spin;
pub mod status;
mod sys;
#[cfg(test)]
mod testing;
pub mod thread;
pub mod ticket;

pub use error::{Error, ErrorKind, Result};
/// The nix crate posixkit was built with: its types ([`nix::sys::signal::Signal`],
/// [`nix::unistd::Pid`], [`nix::errno::Errno`]) appear in posixkit's API.
pub use nix;
