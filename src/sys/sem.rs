//! The synchronisation calls nix does not wrap, as thin libc calls: POSIX
//! semaphores (sem_overview(7)), robust process-shared pthread mutexes and
//! futex(2) words, in shared memory (for [`crate::queue`]) or private to
//! one process (for [`crate::thread::Lock`]). (System V
//! semaphores are in [`crate::sys::sysv`].) Each function makes one call
//! (or one short fixed sequence) and returns its errno; retrying on EINTR
//! is the caller's decision.

use std::ffi::CStr;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;

use crate::sys::shm::Mapping;

/// The address of a live `sem_t`: one that `sem_init` initialised inside a
/// shared [`Mapping`] (in this process, or in another one that maps the
/// same named file).
///
/// Invariant (kept by every holder in this crate): the memory stays mapped
/// for as long as the `Sem` is used — [`crate::sem::Semaphore`],
/// [`crate::sem::NamedSemaphore`] and [`crate::queue::Queue`] hold the
/// `Mapping` next to it, declared after it so that it is unmapped last.
#[derive(Debug)]
pub struct Sem(NonNull<libc::sem_t>);

// SAFETY: a sem_t is designed for concurrent use by many threads and (when
// process-shared) many processes; the pointer is only passed to sem_* calls.
unsafe impl Send for Sem {}
// SAFETY: as for Send: every sem_* call is thread-safe.
unsafe impl Sync for Sem {}

impl Sem {
    /// sem_init(3) with pshared=1 at byte offset `off` of `map`: a
    /// semaphore shared by every process that maps the same memory. The
    /// `sem_t` is never moved afterwards (it lives in the mapping, not in
    /// any Rust value).
    pub fn init(map: &Mapping, off: usize, value: u32) -> Result<Sem, Errno> {
        let p = map.sem_addr(off);
        // SAFETY: `p` points at size_of::<sem_t>() writable, aligned bytes
        // inside a live MAP_SHARED mapping (checked by sem_addr); nobody
        // uses this sem_t yet, since the caller just laid it out.
        let r = unsafe { libc::sem_init(p.as_ptr(), 1, value) };
        if r == -1 {
            return Err(Errno::last());
        }
        Ok(Sem(p))
    }

    /// The semaphore that `sem_init` (with pshared=1) already made at byte
    /// offset `off` of `map`, in this process or in another one that maps
    /// the same file: a named semaphore's file made by
    /// [`crate::sem::NamedSemaphore::create`] or by the C library's
    /// `sem_open(O_CREAT)`, which lays out the same `sem_t`. The caller
    /// checks the bytes first, and again before each call (a garbage
    /// `sem_t` makes glibc's futex calls fail, and glibc abort); the
    /// `sem_t` is never moved (it lives in the mapping).
    pub fn attach(map: &Mapping, off: usize) -> Sem {
        Sem(map.sem_addr(off))
    }

    /// sem_wait(3), once (EINTR is returned, not retried).
    #[inline]
    pub fn wait(&self) -> Result<(), Errno> {
        // SAFETY: `self.0` is a live sem_t (the type's invariant).
        Errno::result(unsafe { libc::sem_wait(self.0.as_ptr()) }).map(drop)
    }

    /// sem_trywait(3): EAGAIN when the value is 0.
    pub fn try_wait(&self) -> Result<(), Errno> {
        // SAFETY: `self.0` is a live sem_t.
        Errno::result(unsafe { libc::sem_trywait(self.0.as_ptr()) }).map(drop)
    }

    /// Wait until the absolute CLOCK_MONOTONIC time `deadline`, once:
    /// ETIMEDOUT when it passes, EINTR on a signal. Uses sem_clockwait
    /// (glibc 2.30+), so setting the wall clock does not move the deadline.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn wait_until(&self, deadline: TimeSpec) -> Result<(), Errno> {
        unsafe extern "C" {
            // glibc 2.30+: int sem_clockwait(sem_t *, clockid_t, const struct timespec *);
            fn sem_clockwait(
                sem: *mut libc::sem_t,
                clock: libc::clockid_t,
                abstime: *const libc::timespec,
            ) -> libc::c_int;
        }
        let ts: libc::timespec = *deadline.as_ref();
        // SAFETY: `self.0` is a live sem_t; `ts` is a valid timespec on our
        // stack for the duration of the call; the declaration above matches
        // glibc's prototype.
        Errno::result(unsafe { sem_clockwait(self.0.as_ptr(), libc::CLOCK_MONOTONIC, &ts) })
            .map(drop)
    }

    /// Wait until the absolute CLOCK_MONOTONIC time `deadline`, once. Without
    /// sem_clockwait, the remaining time is converted to a CLOCK_REALTIME
    /// deadline for sem_timedwait (a wall-clock step during the wait moves it).
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn wait_until(&self, deadline: TimeSpec) -> Result<(), Errno> {
        use nix::time::{ClockId, clock_gettime};
        let now = clock_gettime(ClockId::CLOCK_MONOTONIC)?;
        let left = crate::sem::timespec_until(deadline, now);
        let Some(abs) = crate::sem::timespec_after(clock_gettime(ClockId::CLOCK_REALTIME)?, left)
        else {
            // Past what a timespec holds: wait without a deadline.
            // SAFETY: `self.0` is a live sem_t.
            return Errno::result(unsafe { libc::sem_wait(self.0.as_ptr()) }).map(drop);
        };
        let ts: libc::timespec = *abs.as_ref();
        // SAFETY: `self.0` is a live sem_t; `ts` is valid for the call.
        Errno::result(unsafe { libc::sem_timedwait(self.0.as_ptr(), &ts) }).map(drop)
    }

    /// sem_post(3): EOVERFLOW at SEM_VALUE_MAX.
    #[inline]
    pub fn post(&self) -> Result<(), Errno> {
        // SAFETY: `self.0` is a live sem_t.
        Errno::result(unsafe { libc::sem_post(self.0.as_ptr()) }).map(drop)
    }

    /// sem_getvalue(3): the current value (never negative on Linux).
    pub fn value(&self) -> Result<i32, Errno> {
        let mut v: libc::c_int = 0;
        // SAFETY: `self.0` is a live sem_t; `v` is a writable int.
        Errno::result(unsafe { libc::sem_getvalue(self.0.as_ptr(), &mut v) })?;
        Ok(v)
    }
}

/// sem_unlink(3): remove the name; processes that have it open keep using it.
pub fn unlink(name: &CStr) -> Result<(), Errno> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    Errno::result(unsafe { libc::sem_unlink(name.as_ptr()) }).map(drop)
}

/// SEM_VALUE_MAX on Linux.
pub const VALUE_MAX: u32 = i32::MAX as u32;

/// The last signal caught by [`interrupt_on`]'s handler (0: none yet).
static CAUGHT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn record_signal(sig: libc::c_int) {
    // An atomic store is async-signal-safe.
    CAUGHT.store(sig, std::sync::atomic::Ordering::SeqCst);
}

/// Catch each of `sigs` that is not ignored with a handler that only records it (see
/// [`take_caught`]) and that is installed *without* SA_RESTART, so a
/// blocking sem_wait, sem_clockwait or waitpid returns EINTR and the caller
/// can decide what the signal means. (signal-hook always sets SA_RESTART,
/// under which Linux restarts those waits and the signal goes unnoticed.)
pub fn interrupt_on(sigs: &[nix::sys::signal::Signal]) -> Result<(), Errno> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(record_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for &sig in sigs {
        // SAFETY: the handler only stores into a static atomic, which is
        // async-signal-safe and touches no lock, allocation or other state.
        let old = unsafe { sigaction(sig, &action) }?;
        if old.handler() == SigHandler::SigIgn {
            // Ignored by whoever started us (`cmd &` in a script ignores
            // SIGINT and SIGQUIT): keep it ignored, so the command inherits
            // that across exec as it would without us.
            // SAFETY: restoring SIG_IGN installs no handler at all.
            unsafe { sigaction(sig, &old) }?;
        }
    }
    Ok(())
}

/// The signal recorded by [`interrupt_on`]'s handler since the last call,
/// cleared; 0 when none.
pub fn take_caught() -> i32 {
    CAUGHT.swap(0, std::sync::atomic::Ordering::SeqCst)
}

/// The signal recorded so far, left in place; 0 when none.
pub fn peek_caught() -> i32 {
    CAUGHT.load(std::sync::atomic::Ordering::SeqCst)
}

/// The futex(2) calls on a 32-bit word: of shared memory (not
/// FUTEX_PRIVATE: the waiters and wakers are other processes), or, through
/// the `_private` pair, of one process's threads.
pub mod futex {
    use std::sync::atomic::{AtomicU32, AtomicU64};

    use nix::errno::Errno;
    use nix::sys::time::TimeSpec;

    /// Sleep while `*word == expected`, until woken or the absolute
    /// CLOCK_MONOTONIC `deadline` (FUTEX_WAIT_BITSET). Returns Ok when
    /// woken (or spuriously), EAGAIN when the word already differed,
    /// ETIMEDOUT, EINTR.
    pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<TimeSpec>) -> Result<(), Errno> {
        wait_op(word, expected, deadline, libc::FUTEX_WAIT_BITSET)
    }

    /// [`wait`] on a word only the threads of this process use
    /// (FUTEX_PRIVATE_FLAG: the kernel keys it by address alone). Its
    /// wakers must use [`wake_private`].
    pub fn wait_private(
        word: &AtomicU32,
        expected: u32,
        deadline: Option<TimeSpec>,
    ) -> Result<(), Errno> {
        wait_op(
            word,
            expected,
            deadline,
            libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
        )
    }

    /// Wake up to `n` threads of this process sleeping in
    /// [`wait_private`] on `word`. Returns how many were woken.
    pub fn wake_private(word: &AtomicU32, n: u32) -> Result<usize, Errno> {
        let n = n.min(i32::MAX as u32);
        // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE only uses its
        // address as the key of the waiters to wake; the other arguments
        // are unused by this operation.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                n,
            )
        };
        if r == -1 {
            Err(Errno::last())
        } else {
            Ok(r as usize)
        }
    }

    /// The 32-bit half of `word` that holds its low bits, as futex(2)
    /// compares and keys it.
    fn low_half(word: &AtomicU64) -> &AtomicU32 {
        let at = if cfg!(target_endian = "little") { 0 } else { 1 };
        // SAFETY: an AtomicU64 is 8 bytes aligned to 8, so each of its two
        // halves is an aligned u32 that lives as long as `word`. The half
        // is only handed to the kernel (futex compares and keys by it),
        // never loaded or stored through from Rust.
        unsafe { &*word.as_ptr().cast::<AtomicU32>().add(at) }
    }

    /// [`wait`] on the low 32 bits of a 64-bit word of shared memory:
    /// sleep while they equal `expected`.
    pub fn wait_low(
        word: &AtomicU64,
        expected: u32,
        deadline: Option<TimeSpec>,
    ) -> Result<(), Errno> {
        wait_op(low_half(word), expected, deadline, libc::FUTEX_WAIT_BITSET)
    }

    /// Wake up to `n` sleepers in [`wait_low`] on `word`, of any process.
    pub fn wake_low(word: &AtomicU64, n: u32) -> Result<usize, Errno> {
        let n = n.min(i32::MAX as u32);
        // SAFETY: as in wake_private, on a shared word (no private flag).
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                low_half(word).as_ptr(),
                libc::FUTEX_WAKE,
                n,
            )
        };
        if r == -1 {
            Err(Errno::last())
        } else {
            Ok(r as usize)
        }
    }

    fn wait_op(
        word: &AtomicU32,
        expected: u32,
        deadline: Option<TimeSpec>,
        op: libc::c_int,
    ) -> Result<(), Errno> {
        let ts: Option<libc::timespec> = deadline.map(|d| *d.as_ref());
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `word` is a live, aligned u32 for the call; the kernel
        // only reads it (compares with `expected`) and `tsp` is null or a
        // timespec on our stack; the unused uaddr2 is null.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                op,
                expected,
                tsp,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if r == -1 { Err(Errno::last()) } else { Ok(()) }
    }

    /// Add 1 to `*word` and wake every waiter on it, in one system call
    /// (FUTEX_WAKE_OP): a caller killed at any instant has done both or
    /// neither, so no sleeper misses the change. Returns how many were woken.
    pub fn add_one_and_wake_all(word: &AtomicU32) -> Result<usize, Errno> {
        // FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_EQ, 0): *uaddr2 += 1, then
        // wake uaddr1; the second wake (when the old value was 0) wakes 0.
        const OP: u32 = (1 << 28) | (1 << 12);
        // SAFETY: both addresses are the same live, aligned u32; the kernel
        // adds to it atomically and wakes its waiters; the "timeout"
        // argument of FUTEX_WAKE_OP is the second wake count (0).
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE_OP,
                i32::MAX,
                0usize,
                word.as_ptr(),
                OP,
            )
        };
        if r == -1 {
            Err(Errno::last())
        } else {
            Ok(r as usize)
        }
    }
}
