//! The live [`Process`](super::Process)es of this process, and
//! [`join_children`]: what Python does at a normal exit.
//!
//! Python registers an `atexit` function that terminates every daemonic
//! child still running and then joins every child. A Rust value has no
//! such hook (a `Drop` does not run at `exit`, and one that blocked could
//! hang an error path), so the library keeps a registry of every started,
//! not yet reaped `Process` — the handle the caller holds shares its entry
//! — and [`join_children`] is the hook: call it where the program ends
//! normally, at the end of `main`. A `Process`'s own closure does it for
//! you when it returns (see [`run_child`](super::run_child)), as
//! Python's `_bootstrap` does. An early return on an error path skips it,
//! so a child that waits for its parent never hangs that exit.
//!
//! A forked child inherits a copy of the registry; it is not its own. The
//! registry remembers which process it belongs to and ignores (and, at
//! the child's first start, drops without a signal or a wait) a copy it
//! inherited.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{Child, Pid, getpid};
use crate::error::Result;
use crate::status::Status;

/// One started `Process`: what [`join_children`] needs, shared with the
/// handle.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) pid: Pid,
    pub(super) daemon: bool,
    child: Mutex<Child>,
}

impl Entry {
    pub(super) fn new(name: String, pid: Pid, daemon: bool, child: Child) -> Self {
        Entry {
            name,
            pid,
            daemon,
            child: Mutex::new(child),
        }
    }

    /// The child, locked. Never held across a wait that blocks.
    pub(super) fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait for the child to end, at most `timeout`, and reap it.
    pub(super) fn join(&self, timeout: Option<Duration>) -> Result<Option<Status>> {
        super::object::wait_then_reap(self, timeout)
    }
}

/// The registry: the pid it belongs to, and the entries.
struct Live {
    owner: i32,
    entries: Vec<Arc<Entry>>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    owner: 0,
    entries: Vec::new(),
});

/// [`Live::owner`], readable without the lock: a forked child (perhaps of
/// a threaded process, where another thread held the lock at the fork)
/// sees at once that the registry is not its own, and never locks it.
static OWNER: AtomicI32 = AtomicI32::new(0);

fn live() -> MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether this process owns the registry (has started a `Process`).
fn owned() -> bool {
    OWNER.load(Ordering::Relaxed) == getpid().as_raw()
}

/// Add a just-started process; `me` is this process's pid. In a forked
/// child, the first call drops the entries inherited from the parent,
/// without a signal or a wait.
pub(super) fn register(entry: &Arc<Entry>, me: Pid) {
    let me = me.as_raw();
    let mut live = live();
    if live.owner != me {
        for inherited in live.entries.drain(..) {
            inherited.child().disown();
        }
        live.owner = me;
        OWNER.store(me, Ordering::Relaxed);
    }
    live.entries.push(Arc::clone(entry));
}

/// Forget a process that `owner` (this process: the caller knows) started
/// and has reaped.
pub(super) fn unregister(entry: &Arc<Entry>, owner: Pid) {
    if OWNER.load(Ordering::Relaxed) == owner.as_raw() {
        live().entries.retain(|e| !Arc::ptr_eq(e, entry));
    }
}

/// Reap the children whose `Process` was dropped and that have ended
/// (Python's `_cleanup`, run at each start); `me` is this process's pid.
pub(super) fn reap_dropped(me: Pid) {
    if OWNER.load(Ordering::Relaxed) != me.as_raw() {
        return;
    }
    live().entries.retain(|e| {
        // Held elsewhere: by its Process, or by a join_children walking it.
        if Arc::strong_count(e) > 1 {
            return true;
        }
        let mut child = e.child();
        !child.settled() && matches!(child.try_wait(), Ok(None))
    });
}

/// The registry's owner now: what a freshly forked child reads before its
/// closure runs, to tell afterwards whether the closure started a
/// `Process` ([`registry_changed_since`]).
pub(super) fn owner_mark() -> i32 {
    OWNER.load(Ordering::Relaxed)
}

/// Whether this process has registered a `Process` since `mark` was read
/// in it. In a freshly forked child the mark is an ancestor's pid (or 0),
/// never the child's own, and the first registration makes the owner the
/// child: so an unchanged owner means nothing to join, and no getpid(2).
pub(super) fn registry_changed_since(mark: i32) -> bool {
    OWNER.load(Ordering::Relaxed) != mark
}

/// A child that [`join_children`] waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Its name.
    pub name: String,
    /// Its pid.
    pub pid: Pid,
    /// Whether it was a daemon, and so was sent SIGTERM first.
    pub daemon: bool,
    /// How it ended.
    pub status: Status,
}

/// What Python does at a normal exit: send SIGTERM to every daemonic child
/// still running (see [`Builder::daemon`](super::Builder::daemon)), then
/// wait for every child this process started with
/// [`Builder::start`](super::Builder::start) and has not reaped yet —
/// whether its [`Process`](super::Process) is still held or was dropped —
/// and reap it. Returns them in the order they were started; a held
/// `Process` sees its status afterwards (`exitcode()`).
///
/// Call it where the program ends normally (the end of `main`); a
/// `Process` closure that returns calls it for you. It blocks for as long
/// as a non-daemon child runs, as Python's exit does: a child that waits
/// for its parent (a pipe, a semaphore) would wait for ever, so release
/// it first, or start it with [`Builder::kill_on_drop`](super::Builder::kill_on_drop) and drop it.
///
/// Every child is waited for even when one fails; the first error (a
/// status lost to an ignored SIGCHLD, see the [module documentation](super))
/// is returned after. In a process that started no `Process` (a forked
/// child included, whatever its parent started) it returns at once with
/// nothing.
pub fn join_children() -> Result<Vec<Joined>> {
    if !owned() {
        return Ok(Vec::new());
    }
    let entries: Vec<Arc<Entry>> = live().entries.clone();
    let mut first_error = None;
    for e in entries.iter().filter(|e| e.daemon) {
        if let Err(err) = e.child().signal(Signal::SIGTERM) {
            first_error.get_or_insert(err);
        }
    }
    let mut joined = Vec::with_capacity(entries.len());
    for e in &entries {
        match e.join(None) {
            Ok(Some(status)) => joined.push(Joined {
                name: e.name.clone(),
                pid: e.pid,
                daemon: e.daemon,
                status,
            }),
            Ok(None) => {}
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    live().entries.retain(|e| !e.child().settled());
    match first_error {
        Some(e) => Err(e),
        None => Ok(joined),
    }
}
