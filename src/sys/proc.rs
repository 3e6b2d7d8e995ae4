//! fork, `_exit`, raw waitpid and signal dispositions.

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};

/// Which side of a fork this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// The parent, holding the new child's pid.
    Parent(Pid),
    /// The child.
    Child,
}

/// fork(2) without the library's check that the process is
/// single-threaded: the expert's way to fork where [`crate::process::fork`]
/// refuses.
///
/// Every fork of the library comes here, and its child does not keep the
/// pipes of a spawn in flight in the parent (see
/// [`crate::spawn`]).
///
/// # Safety
///
/// After a fork only the calling thread exists in the child. If the parent
/// has other threads, they may hold locks (the allocator's, stdout's) that
/// will never be released in the child. So either the caller is
/// single-threaded, or the child makes only async-signal-safe calls until it
/// calls `execve` or [`_exit`]. The child must never return into code that
/// believes it is the parent: it ends with [`_exit`] (or exec).
pub unsafe fn fork_unchecked() -> Result<Fork, Errno> {
    let gate = crate::sys::spawn::fds::ForkGate::enter();
    // SAFETY: the caller upholds this function's contract, which is exactly
    // the contract of nix's fork.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => {
            gate.parent();
            Ok(Fork::Parent(child))
        }
        Ok(ForkResult::Child) => {
            gate.child();
            Ok(Fork::Child)
        }
        Err(e) => {
            gate.parent();
            Err(e)
        }
    }
}

/// fork(2) for a caller that has just seen the process single-threaded
/// ([`alone_in_thread_group`] returned `Ok(true)`, on this thread, with no
/// thread started since).
///
/// With no other thread, no spawn can create or close a pipe end during
/// the fork, so [`fork_unchecked`]'s gate is not taken: the parent writes
/// nothing of ours after the fork, and the child writes only when a
/// spawn's pipes are open (see `spawn::fds::child_alone`). Every page
/// written on either side while both live is copied first; these writes
/// cost two such copies per fork.
#[inline(always)]
pub(crate) fn fork_alone(_proof: Alone) -> Result<Fork, Errno> {
    // SAFETY: an `Alone` is only made by `alone_in_thread_group` when the
    // kernel said this thread group has one member, the calling thread; it
    // is not Send, so it is used on that thread, and a thread the caller
    // could start in between would have to be started by the caller
    // itself (the check and the fork are adjacent in every caller). No
    // other thread can then hold a lock the child would need, nor change
    // the record of a spawn's pipe ends while the fork copies it.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Fork::Parent(child)),
        ForkResult::Child => {
            crate::sys::spawn::fds::child_alone();
            Ok(Fork::Child)
        }
    }
}

/// Proof that [`alone_in_thread_group`] found the calling thread alone.
/// Neither `Send` nor `Sync`: it stays on the thread that checked.
#[derive(Debug)]
pub(crate) struct Alone(std::marker::PhantomData<*const ()>);

/// Whether the calling thread is the only thread of its process, asked of
/// the kernel itself: unshare(CLONE_THREAD) does nothing and succeeds in a
/// process of one thread and fails with EINVAL in any other (unshare(2)).
/// It needs no /proc and no privilege. `Err` carries the errno when the
/// call is refused outright (a seccomp filter's EPERM, ENOSYS), and the
/// caller must find out another way.
pub(crate) fn alone_in_thread_group() -> Result<Option<Alone>, Errno> {
    // SAFETY: unshare takes a flags word and touches no memory of ours;
    // with CLONE_THREAD alone it changes nothing in any case.
    let r = unsafe { libc::unshare(libc::CLONE_THREAD) };
    match r {
        0 => Ok(Some(Alone(std::marker::PhantomData))),
        _ => match Errno::last() {
            Errno::EINVAL => Ok(None),
            e => Err(e),
        },
    }
}

/// An [`Alone`] for a caller that counted one thread another way (/proc),
/// when [`alone_in_thread_group`] was refused.
pub(crate) fn alone_by_count(threads: usize) -> Option<Alone> {
    (threads == 1).then_some(Alone(std::marker::PhantomData))
}

/// `_exit(2)`: end the process now, without running atexit handlers or
/// flushing stdio buffers (the parent's copies, in a forked child).
#[inline(always)]
pub fn _exit(code: i32) -> ! {
    // SAFETY: _exit takes a plain int, touches no memory of ours and never
    // returns; it is async-signal-safe, so it is sound in a forked child.
    unsafe { libc::_exit(code) }
}

/// waitpid(2) for exactly `pid`, returning the raw status word, or `None`
/// when `nohang` is set and the child has not changed state. Not retried on
/// EINTR here: callers decide.
pub fn waitpid_raw(pid: Pid, nohang: bool) -> Result<Option<i32>, Errno> {
    let mut status: libc::c_int = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: `status` is a valid, writable c_int for the duration of the
    // call; waitpid writes at most one c_int there.
    let r = unsafe { libc::waitpid(pid.as_raw(), &mut status, flags) };
    match r {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        _ => Ok(Some(status)),
    }
}

/// Put `sig` back to its default action and unblock it, so that raising it
/// does what the signal's default says even if our parent ignored or blocked
/// it (a `nohup` parent ignores SIGHUP, for instance).
pub fn restore_default(sig: Signal) -> Result<(), Errno> {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, sigprocmask};
    if !matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
        // SAFETY: installing SIG_DFL installs no handler of ours, so no code
        // can run in signal context as a result of this call.
        unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) }?;
    }
    let mut set = SigSet::empty();
    set.add(sig);
    sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)
}

/// pidfd_open(2): a file descriptor that refers to process `pid` itself, not
/// to whatever process later reuses the number. Readable once it has ended.
pub fn pidfd_open(pid: Pid) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and a flags word, touches no memory of
    // ours, and returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if r < 0 {
        return Err(Errno::last());
    }
    let fd = i32::try_from(r).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing
    // else owns; OwnedFd takes sole ownership and closes it once. pidfds are
    // always created close-on-exec.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// pidfd_send_signal(2): signal the process behind `pidfd`, with no risk of
/// hitting an unrelated process that reused its pid.
pub fn pidfd_send_signal(pidfd: std::os::fd::BorrowedFd<'_>, sig: Signal) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: a null siginfo pointer is allowed (the kernel then fills it as
    // kill(2) would); the fd is borrowed and valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Ask for `sig` when the parent dies (PR_SET_PDEATHSIG), then check that
/// `parent` is still the parent: it may have died between fork and prctl,
/// too early for the request to fire. True when the signal is armed and
/// the parent is alive. Two system calls and nothing else, so it is safe
/// in a forked child before exec.
#[inline(always)]
pub fn arm_death_signal(sig: libc::c_int, parent: libc::pid_t) -> bool {
    // SAFETY: prctl and getppid take and return plain integers and touch no
    // memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) == 0
            && libc::getppid() == parent
    }
}

/// The first steps of a child forked to run a `Process`, in one place:
/// arm SIGKILL for when `parent` dies (when given, as
/// [`arm_death_signal`]), then set the kernel name to `comm` (PR_SET_NAME;
/// NUL-terminated, at most 15 bytes before the NUL; an empty name is left
/// alone). False when `parent` is already gone: the caller dies.
///
/// A forked child does not share the parent's page-table entries for the
/// program's code: each 64 KiB of code it runs costs it a page fault
/// (a few microseconds on a virtual machine, as much as the calls
/// themselves), instead of the four helpers spread over the binary and
/// the C library that did this before. Only system calls and reads of
/// `comm`: safe in a child of a threaded parent before exec.
///
/// Inlined into its caller, with the fork before it, and every call made
/// through syscall(3): the child then runs its caller's code and one
/// function of the C library before `f`.
#[inline(always)]
pub(crate) fn child_prologue(parent: Option<libc::pid_t>, comm: &[u8; 16]) -> bool {
    if let Some(parent) = parent {
        // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid take and return
        // plain integers and touch no memory of ours.
        let armed = unsafe {
            libc::syscall(
                libc::SYS_prctl,
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL,
                0,
                0,
                0,
            ) == 0
                && libc::syscall(libc::SYS_getppid) == libc::c_long::from(parent)
        };
        if !armed {
            return false;
        }
    }
    if comm[0] != 0 && comm[15] == 0 {
        // SAFETY: `comm` is a NUL-terminated string (its last byte is 0)
        // that outlives the call; PR_SET_NAME reads at most 16 bytes.
        unsafe { libc::syscall(libc::SYS_prctl, libc::PR_SET_NAME, comm.as_ptr(), 0, 0, 0) };
    }
    true
}

/// Set `sig` to SIG_IGN.
pub fn ignore(sig: Signal) -> Result<(), Errno> {
    // SAFETY: SIG_IGN installs no handler of ours; no code runs in signal
    // context as a result.
    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }.map(drop)
}

/// Who may reap a child that ends, as SIGCHLD stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaping {
    /// Only an explicit wait: SIGCHLD at its default, without
    /// SA_NOCLDWAIT. An ended child stays a zombie, holding its pid, until
    /// it is waited for.
    Waited,
    /// A SIGCHLD handler runs, and may wait for any child.
    Handler,
    /// The kernel, as the child ends: SIGCHLD ignored (SIG_IGN) or
    /// SA_NOCLDWAIT set. Its status is lost and its pid free at once.
    Kernel,
}

/// SIGCHLD's current action (sigaction(2) with no new action).
fn sigchld_action() -> Result<libc::sigaction, Errno> {
    // SAFETY: an all-zero sigaction is a valid value of this plain C struct
    // (SIG_DFL, empty mask, no flags).
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`, a
    // valid, writable sigaction for the duration of the call.
    let r = unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) };
    if r == 0 { Ok(old) } else { Err(Errno::last()) }
}

fn reaping_of(action: &libc::sigaction) -> Reaping {
    if action.sa_sigaction == libc::SIG_IGN || action.sa_flags & libc::SA_NOCLDWAIT != 0 {
        Reaping::Kernel
    } else if action.sa_sigaction == libc::SIG_DFL {
        Reaping::Waited
    } else {
        Reaping::Handler
    }
}

/// Who would reap a child that ended now (see [`Reaping`]).
pub(crate) fn sigchld_reaping() -> Result<Reaping, Errno> {
    sigchld_action().map(|a| reaping_of(&a))
}

/// Whether a fork should also take a pidfd for the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakePidfd {
    /// Never: the caller only wants the pid.
    Never,
    /// Only when something besides our own wait may reap the child
    /// (SIGCHLD ignored, SA_NOCLDWAIT, or a handler): then a pid alone
    /// could name a stranger once the child has been reaped.
    IfOthersReap,
    /// Always (a best effort: none where pidfds are missing or no
    /// descriptor is left).
    Always,
}

/// [`fork_alone`], and a pidfd for the child taken before anything but
/// our own wait can reap it, so the pidfd names the child and no other
/// process, ever.
///
/// With SIGCHLD at its default the child stays a zombie until waited for,
/// so opening the pidfd right after the fork is enough. Otherwise, for the
/// instant between fork and pidfd_open, SIGCHLD is blocked (no handler can
/// run and reap) and its action is the default without SA_NOCLDWAIT (the
/// kernel cannot reap); both are put back on each side of the fork before
/// it returns. A child that ends in that instant stays a zombie until a
/// wait reaps it, with its status.
#[inline(always)]
pub(crate) fn fork_alone_pidfd(
    proof: Alone,
    take: TakePidfd,
) -> Result<(Fork, Option<std::os::fd::OwnedFd>), Errno> {
    use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
    if take == TakePidfd::Never {
        return fork_alone(proof).map(|f| (f, None));
    }
    let old = sigchld_action()?;
    let reaping = reaping_of(&old);
    if reaping == Reaping::Waited {
        let fork = fork_alone(proof)?;
        return Ok(match (fork, take) {
            (Fork::Parent(pid), TakePidfd::Always) => (fork, pidfd_open(pid).ok()),
            _ => (fork, None),
        });
    }
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), Some(&mut old_mask))?;
    let mut held = old;
    held.sa_flags &= !libc::SA_NOCLDWAIT;
    if held.sa_sigaction == libc::SIG_IGN {
        held.sa_sigaction = libc::SIG_DFL;
    }
    let restore = |old_mask: &SigSet| {
        // SAFETY: this puts back exactly the action that was in place a
        // moment ago (a handler the program installed itself, SIG_IGN or
        // SIG_DFL); sigaction and sigprocmask are async-signal-safe, so
        // this is sound in the forked child too.
        unsafe { libc::sigaction(libc::SIGCHLD, &old, std::ptr::null_mut()) };
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None);
    };
    // SAFETY: `held` is the current action with at most its handler
    // replaced by SIG_DFL (which runs no code of ours) and SA_NOCLDWAIT
    // cleared; SIGCHLD is blocked while it is in place.
    if unsafe { libc::sigaction(libc::SIGCHLD, &held, std::ptr::null_mut()) } != 0 {
        let e = Errno::last();
        restore(&old_mask);
        return Err(e);
    }
    let fork = fork_alone(proof);
    let pidfd = match fork {
        Ok(Fork::Parent(pid)) => pidfd_open(pid).ok(),
        _ => None,
    };
    restore(&old_mask);
    fork.map(|f| (f, pidfd))
}

/// waitid(2) for the process behind `pidfd` (P_PIDFD, Linux 5.4), or for
/// `pid` (P_PID) without one, as a raw waitpid-style status word; `None`
/// when `nohang` is set and it has not ended. With `peek` (WNOWAIT) the
/// child is left as it is, to be waited for again. EINTR is not retried
/// here; EINVAL means the kernel has no P_PIDFD.
pub(crate) fn waitid_raw(
    pid: Pid,
    pidfd: Option<std::os::fd::BorrowedFd<'_>>,
    nohang: bool,
    peek: bool,
) -> Result<Option<i32>, Errno> {
    use std::os::fd::AsRawFd;
    let (idtype, id) = match pidfd {
        Some(fd) => (libc::P_PIDFD, fd.as_raw_fd() as libc::id_t),
        None => (libc::P_PID, pid.as_raw() as libc::id_t),
    };
    let mut flags = libc::WEXITED;
    if nohang {
        flags |= libc::WNOHANG;
    }
    if peek {
        flags |= libc::WNOWAIT;
    }
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct;
    // it also makes si_pid 0, which is how WNOHANG says "nothing yet".
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t for the call; waitid
    // writes at most one there.
    if unsafe { libc::waitid(idtype, id, &mut info, flags) } != 0 {
        return Err(Errno::last());
    }
    // SAFETY: waitid filled `info` for a child state change (SIGCHLD
    // layout), or left it zeroed; both make si_pid and si_status readable.
    let (who, status) = unsafe { (info.si_pid(), info.si_status()) };
    if who == 0 {
        return Ok(None);
    }
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status & 0x7f,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        libc::CLD_STOPPED | libc::CLD_TRAPPED => ((status & 0xff) << 8) | 0x7f,
        _ => 0xffff,
    };
    Ok(Some(raw))
}

/// Which of descriptors 0, 1, 2 were closed when the program started: bit
/// `fd`.
#[cfg(feature = "cli")]
static STDIO_CLOSED_AT_START: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Runs before `main` (and so before the Rust runtime, which reopens a
/// closed descriptor 0, 1 or 2 on /dev/null before `main`): note which of
/// descriptors 0, 1 and 2 were closed. Three fcntl(2) calls and an atomic
/// store: nothing here needs the runtime.
#[cfg(feature = "cli")]
extern "C" fn note_closed_stdout() {
    let mut bits = 0u8;
    for fd in 0..3 {
        // SAFETY: fcntl(F_GETFD) takes a descriptor number and reads the
        // descriptor table only; it fails (EBADF) when `fd` is not open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            bits |= 1 << fd;
        }
    }
    STDIO_CLOSED_AT_START.store(bits, std::sync::atomic::Ordering::Relaxed);
}

/// The C library calls every function in `.init_array` before `main`.
#[cfg(feature = "cli")]
#[used]
#[unsafe(link_section = ".init_array")]
static NOTE_CLOSED_STDOUT: extern "C" fn() = note_closed_stdout;

/// Whether descriptor `fd` (0, 1 or 2) was closed when the program started
/// (`pk-x <&-`, `>&-`, `2>&-`): the one it has now is the runtime's
/// /dev/null. Any other `fd`: `false`.
#[cfg(feature = "cli")]
pub fn closed_at_start(fd: std::os::fd::RawFd) -> bool {
    // Naming the table entry keeps this object, and with it the entry, in
    // every binary that asks.
    let _ = std::hint::black_box(&NOTE_CLOSED_STDOUT);
    (0..3).contains(&fd)
        && STDIO_CLOSED_AT_START.load(std::sync::atomic::Ordering::Relaxed) & (1 << fd) != 0
}

/// Whether descriptor 1 was closed when the program started (`pk-x >&-`):
/// output written to the runtime's /dev/null there would be lost without
/// a word.
#[cfg(feature = "cli")]
pub fn stdout_closed_at_start() -> bool {
    closed_at_start(libc::STDOUT_FILENO)
}

/// Whether descriptor 0 was closed when the program started (`pk-x <&-`).
#[cfg(feature = "cli")]
pub fn stdin_closed_at_start() -> bool {
    closed_at_start(libc::STDIN_FILENO)
}

/// Whether descriptor 2 was closed when the program started (`pk-x 2>&-`).
#[cfg(feature = "cli")]
pub fn stderr_closed_at_start() -> bool {
    closed_at_start(libc::STDERR_FILENO)
}

/// A word of this process's private memory that every fork hands to the
/// child as zero (MADV_WIPEONFORK, Linux 4.14), whoever forks and however
/// (`fork`, `_Fork`, a raw clone): a per-process cache that tells a fresh
/// child without a getpid(2). `None` where the kernel lacks the advice.
pub(crate) fn fork_wiped_word() -> Option<&'static std::sync::atomic::AtomicU64> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // 0: not made yet; 1: the kernel refused it; else the page's address.
    // A plain word, not a OnceLock: a fork from another thread in the
    // middle of the set-up copies no "being set up" state for the child
    // to wait on for ever.
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let mut addr = PAGE.load(Ordering::Acquire);
    if addr == 0 {
        // SAFETY: a new private anonymous mapping of one page, at an
        // address the kernel picks: it overlaps nothing of ours.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        let made = if p == libc::MAP_FAILED {
            1
        // SAFETY: `p` is the page just mapped, which nothing else uses.
        } else if unsafe { libc::madvise(p, 4096, libc::MADV_WIPEONFORK) } != 0 {
            // SAFETY: as above; nothing refers to it yet.
            unsafe { libc::munmap(p, 4096) };
            1
        } else {
            p as usize
        };
        addr = match PAGE.compare_exchange(0, made, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => made,
            Err(other) => {
                if made > 1 {
                    // Another thread's page won; ours was never handed out.
                    // SAFETY: `made` is the page this call mapped, unused.
                    unsafe { libc::munmap(made as *mut libc::c_void, 4096) };
                }
                other
            }
        };
    }
    if addr == 1 {
        return None;
    }
    // SAFETY: `addr` is page-aligned, mapped read-write and never unmapped
    // (it lives as long as the process), zero-filled when mapped and in
    // each forked child; any bit pattern is a valid AtomicU64, and this
    // process's threads reach it only through this atomic.
    Some(unsafe { &*(addr as *const std::sync::atomic::AtomicU64) })
}

/// This process's fork generation: a random nonzero number kept in the
/// [`fork_wiped_word`] page, drawn by the first caller in each process.
/// A process forked by any means finds the page zeroed and draws its own,
/// so a number recorded in an ancestor (a handle's maker) is never this
/// process's, save by a 2^-64 chance. Random rather than counted: two
/// counters (or one copied into a child before an update reached it)
/// could hand a child the number its parent holds. The one source for
/// every user of the page. `None` where the kernel has no such page.
pub(crate) fn fork_generation() -> Option<u64> {
    use std::sync::atomic::Ordering;
    let page = fork_wiped_word()?;
    match page.load(Ordering::Acquire) {
        0 => {
            let mine = random_nonzero();
            // Threads racing here: the first to store wins, and all go by
            // what the page holds.
            Some(
                match page.compare_exchange(0, mine, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => mine,
                    Err(theirs) => theirs,
                },
            )
        }
        g => Some(g),
    }
}

/// 64 random bits, never zero: getrandom(2), or (where it fails) the pid
/// and the monotonic clock's nanoseconds mixed.
fn random_nonzero() -> u64 {
    for _ in 0..8 {
        let mut b = [0u8; 8];
        // SAFETY: getrandom writes at most 8 bytes into `b`, which is 8
        // bytes long and ours; flags 0 (the urandom source).
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n == 8 {
            let v = u64::from_ne_bytes(b);
            if v != 0 {
                return v;
            }
        } else if n < 0 && Errno::last() != Errno::EINTR {
            break;
        }
    }
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64).wrapping_mul(1_000_000_000) ^ t.tv_nsec() as u64
    });
    (u64::from(std::process::id()) << 32 ^ now.rotate_left(17)) | 1
}
