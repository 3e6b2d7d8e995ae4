//! Threads the way Python's `threading` module teaches them: named
//! threads (`Thread-1`, `Thread-2` … when unnamed; renamed while they run),
//! the current thread's name (the main thread is `MainThread`) and ident,
//! `is_alive`, join with a timeout, daemon and joined threads, and the
//! module's synchronisation objects: [`Lock`] and [`RLock`] with timeouts,
//! a [`Mutex`] for data built on [`Lock`] (with `lock_timeout`),
//! [`Condition`], [`Semaphore`] (bounded or not), [`Barrier`], [`Event`],
//! [`Timer`], a [`Queue`] with `task_done`/`join`, and thread-local
//! values.
//!
//! Threads are started with pthread_create(3) itself
//! (in `src/sys/thread.rs`): std's spawn makes about ten more system calls
//! per thread. No `unsafe` here: threads share nothing but `Arc`s, atomics
//! and mutexes. A thread's name is its OS name too (prctl `PR_SET_NAME`,
//! cut to 15 bytes), so `ps -L` and `/proc/<pid>/task/*/comm` show it.
//!
//! ## Daemon and joined threads: Python's exit rule, made explicit
//!
//! Python waits for every non-daemon thread before the interpreter exits,
//! and kills daemon threads wherever they are. A Rust process ends as soon
//! as `main` returns, whatever its threads are doing. A [`Thread`] carries
//! the difference:
//!
//! - a joined (non-daemon) thread, from [`spawn`], is waited for: by
//!   [`Thread::join`], or at the latest when its handle is dropped (drop
//!   joins, as C++'s `std::jthread` does). Keep the handle in `main` and the
//!   process ends only after the thread has finished: Python's rule.
//! - a daemon thread, from [`spawn_daemon`], is never waited for: dropping
//!   its handle detaches it, and when `main` returns the process exits and
//!   the thread ends wherever it is, its later work never done.
//!
//! ## The synchronisation objects and Python's
//!
//! Each object but [`Lock`] and [`Mutex`] is one `std::sync::Mutex` and
//! one or more `Condvar`s, written the way CPython's `threading.py` builds
//! them on its one lock primitive; [`Lock`] is that primitive, one futex
//! word, and [`Mutex`] puts data behind it. Every
//! wait with a timeout measures it on the monotonic clock and absorbs
//! spurious wakeups; a timeout too large for the clock waits for ever.
//! Where Python raises, these return a typed [`Error`]: a [`Queue`]'s
//! `task_done` or a bounded [`Semaphore`]'s `release` called once too often
//! is [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) (Python's
//! `ValueError`); a [`Barrier`] wait that timed out is
//! [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut), and one cut short by
//! another's timeout or by `abort` is
//! [`ErrorKind::Interrupted`](crate::ErrorKind::Interrupted) (both Python's
//! `BrokenBarrierError`). A thread that panics while holding one of them
//! does not poison it: the state behind each is plain counters and flags,
//! valid at every instant, as in Python.

use std::sync::{Condvar, PoisonError};
use std::time::Instant;

use crate::error::{Error, Result};

mod barrier;
mod event;
mod group;
mod handle;
mod lock;
mod mutex;
mod queue;
mod semaphore;
mod timer;

pub use barrier::Barrier;
pub use event::{Event, StopFlag};
pub use group::{Gate, Group};
pub use handle::{Builder, Thread, next_name, spawn, spawn_daemon};
pub use lock::{Condition, ConditionGuard, Lock, LockGuard, RLock, RLockGuard};
pub use mutex::{Mutex, MutexGuard};
pub use queue::Queue;
pub use semaphore::{Permit, Semaphore};
pub use timer::Timer;

/// Wait on `cond` until `ready(&mut state)` holds or `deadline` passes
/// (`None`: for ever). Checked first, then after every wakeup, so spurious
/// wakeups are absorbed and a wait resumes for the time left. Returns the
/// guard and whether `ready` held. A poisoned lock is used as it is: every
/// state here is plain fields written whole.
pub(crate) fn wait_until<'a, T>(
    cond: &Condvar,
    mut guard: std::sync::MutexGuard<'a, T>,
    deadline: Option<Instant>,
    mut ready: impl FnMut(&mut T) -> bool,
) -> (std::sync::MutexGuard<'a, T>, bool) {
    loop {
        if ready(&mut guard) {
            return (guard, true);
        }
        guard = match deadline {
            None => cond.wait(guard).unwrap_or_else(PoisonError::into_inner),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (guard, false);
                }
                cond.wait_timeout(guard, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
    }
}

/// How many OS threads this process has now: `num_threads` in
/// `/proc/self/stat` (one read).
pub fn os_threads() -> Result<usize> {
    use crate::error::Context;
    let stat = std::fs::read_to_string("/proc/self/stat").ctx("read", "/proc/self/stat")?;
    // The fields after the command name's closing parenthesis start at
    // field 3 (state); num_threads is field 20.
    stat.rfind(')')
        .and_then(|end| stat.get(end + 2..))
        .and_then(|rest| rest.split(' ').nth(17))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::data("read", "/proc/self/stat", "no thread count in it"))
}

/// The name [`current_name`] gives the main thread, as Python does.
pub const MAIN_THREAD: &str = "MainThread";

/// Whether the calling thread is the process's main thread (its thread id
/// is the process id).
pub fn is_main_thread() -> bool {
    nix::unistd::gettid() == nix::unistd::getpid()
}

/// The calling thread's name, Python's `threading.current_thread().name`:
/// `MainThread` for the main thread, the name given to [`spawn`] (or set
/// since, by [`Thread::set_name`] or [`set_current_name`]) for ours, and
/// `Thread-<tid>` for a thread started some other way.
pub fn current_name() -> String {
    if let Some(cell) = handle::current_cell() {
        return cell.get();
    }
    if is_main_thread() {
        return MAIN_THREAD.to_string();
    }
    match std::thread::current().name() {
        Some(name) => name.to_string(),
        None => format!("Thread-{}", nix::unistd::gettid()),
    }
}

/// Rename the calling thread: Python's
/// `threading.current_thread().name = name`. Its OS name follows (15
/// bytes), except the main thread's, which is the process's command name
/// and stays. A name with a NUL byte is refused.
pub fn set_current_name(name: impl Into<String>) -> Result<()> {
    let name = name.into();
    handle::check_name(&name)?;
    match handle::current_cell() {
        Some(cell) => cell.set_own(name),
        None => {
            // A thread not started by spawn, or the main thread.
            let cell = handle::NameCell::new(String::new());
            cell.set_own(name);
            handle::set_other_cell(cell);
        }
    }
    Ok(())
}

/// Python's `threading.get_ident()`: the calling thread's pthread_t as a
/// number, equal to its [`Thread::ident`]. Unique among the threads alive
/// at one time; a new thread may get a finished one's.
pub fn get_ident() -> u64 {
    crate::sys::thread::current_id()
}

/// Python's `threading.get_native_id()`: the kernel's id of the calling
/// thread (gettid(2)), the `<tid>` of `/proc/<pid>/task/<tid>` and
/// `ps -L`'s LWP column. The main thread's is the process id.
pub fn get_native_id() -> i32 {
    nix::unistd::gettid().as_raw()
}

thread_local! {
    static LOCAL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Thread-local values, Python's `local = threading.local()` with one
/// attribute: each thread sees only what it stored itself.
pub mod local {
    use super::LOCAL;

    /// Store `value` in the calling thread's slot (`local.student = value`).
    pub fn set(value: impl Into<String>) {
        let value = value.into();
        LOCAL.with(|slot| *slot.borrow_mut() = Some(value));
    }

    /// The calling thread's value, `None` when this thread stored nothing.
    pub fn get() -> Option<String> {
        LOCAL.with(|slot| slot.borrow().clone())
    }

    /// Empty the calling thread's slot.
    pub fn clear() {
        LOCAL.with(|slot| *slot.borrow_mut() = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_not_started_by_spawn_can_name_itself() {
        let got = std::thread::spawn(|| {
            let before = current_name();
            set_current_name("Renamed").unwrap();
            let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
            (before, current_name(), comm)
        })
        .join()
        .unwrap();
        assert!(got.0.starts_with("Thread-"), "{}", got.0);
        assert_eq!(got.1, "Renamed");
        assert_eq!(got.2, "Renamed\n");
        assert!(set_current_name("a\0b").is_err());
    }

    #[test]
    fn idents_differ_between_live_threads() {
        let mine = get_ident();
        let (ident, native) = spawn("Other", || (get_ident(), get_native_id()))
            .unwrap()
            .join()
            .unwrap();
        assert_ne!(mine, ident);
        assert_ne!(get_native_id(), native);
    }

    #[test]
    fn locals_are_per_thread() {
        local::set("Alice");
        let other = spawn("Other", || {
            let before = local::get();
            local::set("Bob");
            (before, local::get())
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(other, (None, Some("Bob".to_string())));
        assert_eq!(local::get().as_deref(), Some("Alice"));
        local::clear();
        assert_eq!(local::get(), None);
    }
}
