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

use std::borrow::Cow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
    pub(super) name: Cow<'static, str>,
    pub(super) pid: Pid,
    pub(super) daemon: bool,
    /// The child's pidfd, taken with the fork. Here rather than in the
    /// [`Child`] (where it would be an `Arc` of its own, one allocation
    /// more per start) so that a join can poll it without the lock: it is
    /// closed only with the entry.
    pidfd: Option<OwnedFd>,
    child: Mutex<Child>,
}

impl Entry {
    /// `child` is the [`Child`] of `pid`; `pidfd`, when given, is its pidfd
    /// (then `child` holds none).
    pub(super) fn new(
        name: Cow<'static, str>,
        pid: Pid,
        daemon: bool,
        pidfd: Option<OwnedFd>,
        child: Child,
    ) -> Self {
        Entry {
            name,
            pid,
            daemon,
            pidfd,
            child: Mutex::new(child),
        }
    }

    /// The child, locked. Never held across a wait that blocks.
    pub(super) fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pidfd taken with the fork, if any (a [`Child`] made by
    /// [`Child::new`] may hold one of its own instead).
    pub(super) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// Reap the child if it has ended (WNOHANG); `None` while it runs.
    pub(super) fn try_wait(&self) -> Result<Option<Status>> {
        self.child().reap_with(self.pidfd(), true)
    }

    /// Wait for the child to end and reap it.
    pub(super) fn wait(&self) -> Result<Status> {
        let mut child = self.child();
        loop {
            if let Some(s) = child.reap_with(self.pidfd(), false)? {
                return Ok(s);
            }
        }
    }

    /// Send `sig` to the child, and to no other process (see
    /// [`Child::signal`]).
    pub(super) fn signal(&self, sig: Signal) -> Result<()> {
        self.child().signal_with(self.pidfd(), sig)
    }

    /// Wait for the child to end, at most `timeout`, and reap it.
    pub(super) fn join(&self, timeout: Option<Duration>) -> Result<Option<Status>> {
        super::object::wait_then_reap(self, timeout)
    }
}

/// The registry: the pid it belongs to, the entries, and one entry kept
/// for the next start.
struct Live {
    owner: i32,
    entries: Entries,
    /// The entry of the last `Process` reaped and dropped, for the next
    /// start to fill in: a start and join then allocate and free nothing.
    /// After each fork, every page the parent writes is a page fault
    /// (copy-on-write), and an allocation and a free write three (the
    /// allocator's cache, the chunk, and errno, which free() saves and
    /// restores).
    spare: Option<Arc<Entry>>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    owner: 0,
    entries: Entries::new(),
    spare: None,
});

/// Entries in the order they were started: the first few inside the
/// registry itself (a vector's buffer would be one page more written
/// after each fork, see [`Live::spare`]), the rest in a vector.
struct Entries {
    /// Filled from the front, without holes.
    inline: [Option<Arc<Entry>>; INLINE],
    /// Used only when `inline` is full, so the order holds.
    more: Vec<Arc<Entry>>,
}

/// Entries held inside the registry.
const INLINE: usize = 4;

impl Entries {
    const fn new() -> Self {
        Entries {
            inline: [const { None }; INLINE],
            more: Vec::new(),
        }
    }

    fn push(&mut self, entry: Arc<Entry>) {
        if self.more.is_empty() {
            if let Some(slot) = self.inline.iter_mut().find(|s| s.is_none()) {
                *slot = Some(entry);
                return;
            }
        }
        self.more.push(entry);
    }

    /// Keep the entries `keep` says yes to, in order.
    fn retain(&mut self, mut keep: impl FnMut(&Arc<Entry>) -> bool) {
        let mut kept = 0;
        for i in 0..INLINE {
            match self.inline[i].take() {
                Some(e) if keep(&e) => {
                    self.inline[kept] = Some(e);
                    kept += 1;
                }
                _ => {}
            }
        }
        self.more.retain(|e| keep(e));
        // The oldest of the rest move up into the registry's own slots.
        let room = (INLINE - kept).min(self.more.len());
        for (slot, e) in self.inline[kept..].iter_mut().zip(self.more.drain(..room)) {
            *slot = Some(e);
        }
    }

    /// Every entry, in order, leaving none.
    fn take_all(&mut self) -> Vec<Arc<Entry>> {
        let mut all: Vec<Arc<Entry>> = self.inline.iter_mut().filter_map(Option::take).collect();
        all.append(&mut self.more);
        all
    }

    /// Every entry, in order.
    fn to_vec(&self) -> Vec<Arc<Entry>> {
        self.inline
            .iter()
            .flatten()
            .chain(&self.more)
            .cloned()
            .collect()
    }
}

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

/// Add a just-started process, `entry`, and return its shared entry
/// (the spare one filled in, when there is one); `me` is this process's
/// pid. In a forked child, the first call drops the entries inherited
/// from the parent, without a signal or a wait.
pub(super) fn register(entry: Entry, me: Pid) -> Arc<Entry> {
    let me = me.as_raw();
    let mut live = live();
    let mut inherited = Vec::new();
    if live.owner != me {
        inherited = live.entries.take_all();
        // The spare, too, is the parent's.
        inherited.extend(live.spare.take());
        live.owner = me;
        OWNER.store(me, Ordering::Relaxed);
    }
    let mut old = None;
    let shared = match live.spare.take() {
        Some(mut spare) => match Arc::get_mut(&mut spare) {
            Some(slot) => {
                old = Some(std::mem::replace(slot, entry));
                spare
            }
            None => Arc::new(entry),
        },
        None => Arc::new(entry),
    };
    live.entries.push(Arc::clone(&shared));
    drop(live);
    // The old entry (its pidfd closed) and the inherited ones are dropped
    // outside the lock.
    drop(old);
    for e in inherited {
        e.child().disown();
    }
    shared
}

/// Keep `entry`, the last handle of a `Process` that `owner` (this
/// process) started, reaped and unregistered, for the next start to fill
/// in; else drop it.
pub(super) fn recycle(entry: Arc<Entry>, owner: Pid) {
    if OWNER.load(Ordering::Relaxed) == owner.as_raw() && entry.child().settled() {
        let mut live = live();
        if live.spare.is_none() && Arc::strong_count(&entry) == 1 {
            live.spare = Some(entry);
        }
    }
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
        !e.child().settled() && matches!(e.try_wait(), Ok(None))
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
    let entries: Vec<Arc<Entry>> = live().entries.to_vec();
    let mut first_error = None;
    for e in entries.iter().filter(|e| e.daemon) {
        if let Err(err) = e.signal(Signal::SIGTERM) {
            first_error.get_or_insert(err);
        }
    }
    let mut joined = Vec::with_capacity(entries.len());
    for e in &entries {
        match e.join(None) {
            Ok(Some(status)) => joined.push(Joined {
                name: e.name.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry for a made-up pid, disowned: nothing is ever signalled
    /// or waited for.
    fn entry(pid: i32) -> Arc<Entry> {
        let mut child = Child::with_pidfd(Pid::from_raw(pid), None);
        child.disown();
        Arc::new(Entry::new(
            Cow::Borrowed("t"),
            Pid::from_raw(pid),
            false,
            None,
            child,
        ))
    }

    fn pids(entries: &Entries) -> Vec<i32> {
        entries.to_vec().iter().map(|e| e.pid.as_raw()).collect()
    }

    #[test]
    fn entries_keep_the_order_of_starts_past_the_inline_slots() {
        let mut entries = Entries::new();
        for pid in 1..=7 {
            entries.push(entry(pid));
        }
        assert_eq!(pids(&entries), [1, 2, 3, 4, 5, 6, 7]);
        entries.retain(|e| ![2, 5].contains(&e.pid.as_raw()));
        assert_eq!(pids(&entries), [1, 3, 4, 6, 7]);
        assert!(
            entries.more.len() <= 1,
            "the oldest moved up into the slots"
        );
        // A later start comes after every earlier one, whichever slot is free.
        entries.push(entry(8));
        entries.push(entry(9));
        assert_eq!(pids(&entries), [1, 3, 4, 6, 7, 8, 9]);
        entries.retain(|e| e.pid.as_raw() > 6);
        assert_eq!(pids(&entries), [7, 8, 9]);
        assert!(entries.more.is_empty());
        entries.push(entry(10));
        let all: Vec<i32> = entries.take_all().iter().map(|e| e.pid.as_raw()).collect();
        assert_eq!(all, [7, 8, 9, 10]);
        assert!(pids(&entries).is_empty());
    }
}
