//! The pipes of spawns in flight, and the gate the library's forks pass.
//!
//! A pipe's reader sees end of file only when every copy of the write end
//! is closed, and `O_CLOEXEC` closes a copy only at exec. A child that this
//! process forks *without* exec (a [`Process`](crate::process::Process), a
//! pool worker) would keep copies of the pipes of a spawn that happened to
//! be in flight at that moment, on another thread or in a
//! [`Running`](crate::spawn::Running) the forking thread holds: the spawned
//! command then never sees end of file on its stdin, and the spawn never
//! sees it on the command's stdout, until that unrelated child exits.
//!
//! So every pipe end a spawn holds is a [`SpawnFd`], recorded here from the
//! moment it exists to the moment it is closed, and every fork the library
//! makes goes through [`ForkGate`]: the gate is held across the fork (no
//! spawn creates or closes a pipe meanwhile, so the record is exact), and the
//! child closes every recorded descriptor before it does anything else.
//! Descriptors 65536 and above are not recorded (the record is a fixed
//! bitmap); a spawn's pipes land there only in a process that holds more
//! than 65 000 descriptors open.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use nix::errno::Errno;

/// Words in the bitmap: one bit per descriptor below 65536.
const WORDS: usize = 1024;

/// Bit `fd % 64` of word `fd / 64` is set while `fd` is a spawn's pipe end.
static OPEN: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
/// One past the highest word ever used, so the child scans no further.
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// The gate: held while a pipe end is created and recorded, or forgotten
/// and closed, and across a fork.
static LOCKED: AtomicBool = AtomicBool::new(false);
/// How many [`SpawnFd`] values of this process generation are alive
/// (changed under the gate). While it is 0 a forked child has nothing to
/// close and no copy to disown, and writes nothing: every page a child or
/// its parent writes after a fork is copied first (copy-on-write).
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Which process generation a [`SpawnFd`] belongs to: a forked child closes
/// the parent's pipe ends and counts one more, so the copies of the parent's
/// `SpawnFd` values it holds no longer close anything when dropped.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// The gate, held until dropped. The critical sections are a system call
/// or two, so waiting is a short spin that yields the CPU.
#[derive(Debug)]
struct Gate(());

impl Gate {
    fn lock() -> Gate {
        while LOCKED
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
        Gate(())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        LOCKED.store(false, Ordering::Release);
    }
}

fn record(fd: RawFd) {
    let Ok(fd) = usize::try_from(fd) else { return };
    let word = fd / 64;
    if let Some(w) = OPEN.get(word) {
        w.fetch_or(1 << (fd % 64), Ordering::Relaxed);
        HIGH.fetch_max(word + 1, Ordering::Relaxed);
    }
}

fn forget(fd: RawFd) {
    let Ok(fd) = usize::try_from(fd) else { return };
    if let Some(w) = OPEN.get(fd / 64) {
        w.fetch_and(!(1 << (fd % 64)), Ordering::Relaxed);
    }
}

/// Whether `fd` is recorded as a spawn's pipe end (for tests).
#[cfg(test)]
pub fn is_recorded(fd: RawFd) -> bool {
    usize::try_from(fd).is_ok_and(|fd| {
        OPEN.get(fd / 64)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (fd % 64)) != 0)
    })
}

/// A pipe end owned by a spawn: closed on drop, and closed in every child
/// the library forks while it is open.
#[derive(Debug)]
pub struct SpawnFd {
    fd: RawFd,
    epoch: u64,
}

impl SpawnFd {
    /// Whether this is the process that opened it (not a forked child,
    /// where the library has closed its copy of the descriptor and the
    /// number may name another file by now).
    pub fn current(&self) -> bool {
        EPOCH.load(Ordering::Relaxed) == self.epoch
    }
}

impl AsRawFd for SpawnFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl AsFd for SpawnFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `fd` is open for as long as `self` lives: only our Drop
        // closes it (a forked child's copy is closed by ForkGate in that
        // child, whose copy of `self` then has a stale epoch and is never
        // used for I/O by the library: `Running::wait_event`, its one
        // place of I/O, refuses to run on a copy that is not `current`).
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl Drop for SpawnFd {
    fn drop(&mut self) {
        let _gate = Gate::lock();
        if self.current() {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            forget(self.fd);
            // SAFETY: we own `fd` (see AsFd) and close it once; EINTR on
            // close still closes it on Linux, so it is not retried.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// A new pipe for a spawn, `[read end, write end]`, both close-on-exec and
/// numbered 3 or above (so a dup2 onto 0, 1 or 2 never overwrites another
/// source), both recorded. `nonblock` puts both ends in non-blocking mode.
pub fn pipe(nonblock: bool) -> Result<(SpawnFd, SpawnFd), Errno> {
    let gate = Gate::lock();
    let mut fds = [-1 as libc::c_int; 2];
    let flags = libc::O_CLOEXEC | if nonblock { libc::O_NONBLOCK } else { 0 };
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } == -1 {
        return Err(Errno::last());
    }
    let epoch = EPOCH.load(Ordering::Relaxed);
    let ends = match (above_stdio(fds[0]), above_stdio(fds[1])) {
        (Ok(r), Ok(w)) => [r, w],
        (r, w) => {
            let err = r.as_ref().err().or(w.as_ref().err()).copied();
            for fd in [r, w].into_iter().flatten() {
                // SAFETY: a descriptor made just above, owned by nobody else.
                unsafe { libc::close(fd) };
            }
            return Err(err.unwrap_or(Errno::EMFILE));
        }
    };
    for fd in ends {
        record(fd);
    }
    LIVE.fetch_add(2, Ordering::Relaxed);
    drop(gate);
    Ok((
        SpawnFd { fd: ends[0], epoch },
        SpawnFd { fd: ends[1], epoch },
    ))
}

/// `fd` itself when it is 3 or above; otherwise a close-on-exec duplicate
/// at 3 or above, and `fd` is closed.
fn above_stdio(fd: RawFd) -> Result<RawFd, Errno> {
    if fd > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl with an int argument on a descriptor we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    let e = Errno::last();
    // SAFETY: `fd` is ours (pipe2 just made it) and no longer needed.
    unsafe { libc::close(fd) };
    if new == -1 { Err(e) } else { Ok(new) }
}

/// Held across one of the library's forks. See the module docs.
#[derive(Debug)]
pub struct ForkGate(Option<Gate>);

impl ForkGate {
    /// Wait until no spawn is creating or closing a pipe, and keep them from
    /// starting until [`ForkGate::parent`] or [`ForkGate::child`].
    pub fn enter() -> ForkGate {
        ForkGate(Some(Gate::lock()))
    }

    /// The parent's side after the fork (or after a failed fork): open the gate.
    pub fn parent(self) {}

    /// The child's side after the fork: close every pipe end of a spawn in
    /// flight in the parent, forget them, and open the gate (the child's
    /// copy of it). Only close(2) and atomics: sound in a child forked from
    /// a threaded process.
    pub fn child(mut self) {
        child_alone();
        self.0 = None;
    }
}

/// The child's side of a fork made with no other thread in the parent
/// (so no gate was needed: no thread could create or close a pipe end
/// meanwhile): close every pipe end of a spawn in flight in the parent,
/// and disown the copies of its [`SpawnFd`] values. With none alive, the
/// usual case, this only reads: a write here would copy a page of this
/// process (copy-on-write) at every fork. Only close(2) and atomics.
#[inline(always)]
pub fn child_alone() {
    if LIVE.load(Ordering::Relaxed) == 0 {
        return;
    }
    let high = HIGH.load(Ordering::Relaxed).min(WORDS);
    for (word, w) in OPEN.iter().enumerate().take(high) {
        let mut bits = w.swap(0, Ordering::Relaxed);
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let fd = (word * 64 + bit) as RawFd;
            // SAFETY: `fd` is a spawn's pipe end the parent recorded; in
            // this child it is a copy that no code here uses (the
            // parent's SpawnFd copies are disowned by the epoch below).
            unsafe { libc::close(fd) };
        }
    }
    EPOCH.fetch_add(1, Ordering::Relaxed);
    // The copies are the parent's, not this generation's.
    LIVE.store(0, Ordering::Relaxed);
}
