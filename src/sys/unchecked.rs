//! The `…_unchecked` variants of the library's forks, for experts: each is
//! an `unsafe fn` whose contract is fork's (see
//! [`fork_unchecked`]). They are written
//! here, as inherent methods of their types, so that no `unsafe` appears
//! outside `src/sys`.

use crate::error::{Error, Result};
use crate::process::{Builder, Process};
use crate::sys::proc::fork_unchecked;

impl Builder {
    /// [`Builder::start`] without the check that no other thread runs.
    ///
    /// # Safety
    ///
    /// As for [`fork_unchecked`]: the
    /// process is single-threaded, or `f` makes only async-signal-safe
    /// calls (no allocation, no lock, no stdout).
    pub unsafe fn start_unchecked<F: FnOnce() -> i32>(self, f: F) -> Result<Process> {
        self.start_with(f, |name| {
            // SAFETY: forwarded to our caller, see this function's contract.
            unsafe { fork_unchecked() }.map_err(|e| Error::sys("fork", name, e))
        })
    }
}

impl crate::pool::Pool {
    /// [`Pool::new`](crate::pool::Pool::new) without the check that no
    /// other thread runs, for this fork and every later one (replacement
    /// workers forked inside `get`, `map`, `join`).
    ///
    /// # Safety
    ///
    /// Every method of this pool that can fork (`new_unchecked`, `get`,
    /// `map`, `map_into`, `join`) is called while the process is
    /// single-threaded, as for
    /// [`fork_unchecked`]: the workers run
    /// ordinary Rust code (the registered tasks) after the fork.
    pub unsafe fn new_unchecked(
        workers: usize,
        registry: crate::pool::Registry,
    ) -> Result<crate::pool::Pool> {
        crate::pool::Pool::with_fork(workers, registry, fork_vouched)
    }
}

/// The pool's unchecked fork. Private to this module: the only way to reach
/// it is [`Pool::new_unchecked`](crate::pool::Pool::new_unchecked), whose
/// caller took on its contract for the pool's whole life.
fn fork_vouched(what: &str) -> Result<crate::process::Fork> {
    // SAFETY: see above: `new_unchecked`'s caller vouched that every call
    // of a forking pool method is made while the process is
    // single-threaded; the worker ends with _exit.
    unsafe { fork_unchecked() }.map_err(|e| Error::sys("fork", what, e))
}
